//! [`Client`]: Conveyor's HTTP API from a Rust app — enqueue (typed, raw, batches), get,
//! wait, cancel.

use std::fmt;
use std::time::{Duration, Instant};

use jobs::{JobArgs, JobId, ValidationErrors};
use reqwest::{RequestBuilder, Response, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::job::{BatchAccepted, WaitBody};
use crate::{Accepted, Cancelled, EnqueueOptions, Error, Job, JobRequest, Problem, Waited};

/// How long one request may take unless [`Client::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest one `wait` request asks the server to hold; longer waits are several
/// requests.
const WAIT_STEP: Duration = Duration::from_secs(30);
/// Beyond a wait request's own bound, how long its answer may take to arrive.
const WAIT_SLACK: Duration = Duration::from_secs(10);

/// A connection to one Conveyor intake, authenticated by one API key. Cheap to clone:
/// clones share the connection pool.
///
/// ```no_run
/// use conveyor_client::Client;
/// use jobs::kinds::order::{CustomerArgs, LineArgs, ProcessOrder};
///
/// # async fn example() -> Result<(), conveyor_client::Error> {
/// let client = Client::new("http://127.0.0.1:8080", "cvk_…")?;
/// let accepted = client
///     .enqueue(ProcessOrder {
///         order_id: "A-1001".into(),
///         customer: CustomerArgs { email: "ada@example.com".into(), name: "Ada".into() },
///         items: vec![LineArgs { sku: "MUG-BLUE".into(), quantity: 2 }],
///         currency: None,
///     })
///     .await?;
/// let job = client.get(accepted.id).await?;
/// println!("{} is {}", job.id, job.state);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The base URL without a trailing `/`.
    base: String,
    /// `None` for an intake in unprotected mode.
    key: Option<String>,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("key", &self.key.as_ref().map(|_| "…"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the intake at `url` (e.g. `http://127.0.0.1:8080`) sending `key` as
    /// `Authorization: Bearer`. An empty key sends none (an intake in unprotected mode).
    ///
    /// # Errors
    /// [`Error::BaseUrl`] when `url` is not `http(s)://…`; [`Error::Http`] when the TLS
    /// stack cannot start.
    pub fn new(url: &str, key: impl Into<String>) -> Result<Self, Error> {
        let base = url.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://"))
            || base.len() <= "https://".len()
        {
            return Err(Error::BaseUrl(url.to_owned()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let key = key.into();
        Ok(Self {
            http,
            base: base.to_owned(),
            key: (!key.is_empty()).then_some(key),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same client with every request bounded by `timeout` (default 30 s; a
    /// [`wait`](Client::wait) is bounded by its own duration plus ten seconds).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Enqueues a job of `A`'s kind, with the kind's defaults. The arguments are
    /// checked by [`JobArgs::validate`] first: a broken rule never leaves the process.
    ///
    /// # Errors
    /// [`Error::Invalid`] before sending; [`Error::Api`] with the server's problem
    /// (`401`, `403`, `409`, `422`, `429`, `503`, …); [`Error::Http`].
    pub async fn enqueue<A: JobArgs>(&self, args: A) -> Result<Accepted, Error> {
        self.enqueue_request(&JobRequest::new(&args)?).await
    }

    /// Enqueues a job of `A`'s kind with `options` (delay, `run_at`, idempotency key,
    /// queue, attempts, timeout, callback URL).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use conveyor_client::{Client, EnqueueOptions};
    /// # use jobs::kinds::noop::Noop;
    /// # async fn example(client: Client) -> Result<(), conveyor_client::Error> {
    /// let accepted = client
    ///     .enqueue_with(
    ///         Noop::default(),
    ///         EnqueueOptions::new().delay(Duration::from_secs(30)).idempotency_key("nightly-1"),
    ///     )
    ///     .await?;
    /// if accepted.existing {
    ///     println!("nightly-1 was enqueued before, as {}", accepted.id);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Client::enqueue`].
    pub async fn enqueue_with<A: JobArgs>(
        &self,
        args: A,
        options: EnqueueOptions,
    ) -> Result<Accepted, Error> {
        self.enqueue_request(&JobRequest::new(&args)?.with(options))
            .await
    }

    /// Enqueues a job of a kind this crate does not know, with JSON arguments. Only the
    /// server checks them.
    ///
    /// ```no_run
    /// # async fn example(client: conveyor_client::Client) -> Result<(), conveyor_client::Error> {
    /// let accepted = client
    ///     .enqueue_raw("product.reprice", serde_json::json!({"sku": "MUG", "unit_price_minor": 990}))
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Client::enqueue`].
    pub async fn enqueue_raw(&self, kind: &str, args: Value) -> Result<Accepted, Error> {
        self.enqueue_request(&JobRequest::raw(kind, args)).await
    }

    /// Enqueues one [`JobRequest`] (typed or raw, with its options).
    ///
    /// # Errors
    /// As [`Client::enqueue`].
    pub async fn enqueue_request(&self, request: &JobRequest) -> Result<Accepted, Error> {
        request.check()?;
        let response = self
            .send(self.http.post(self.url("/v1/jobs")).json(&request.body()))
            .await?;
        let existing = response.status() == StatusCode::OK;
        let mut accepted: Accepted = decode(response).await?;
        accepted.existing = existing;
        Ok(accepted)
    }

    /// Enqueues many jobs in one request, all or none: the ids in request order. Each
    /// job's idempotency key comes from its own options.
    ///
    /// ```no_run
    /// # use conveyor_client::{Client, JobRequest};
    /// # async fn example(client: Client) -> Result<(), conveyor_client::Error> {
    /// let ids = client
    ///     .enqueue_batch((0..100).map(|i| JobRequest::raw("noop", serde_json::json!({"i": i}))))
    ///     .await?;
    /// assert_eq!(ids.len(), 100);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Invalid`] naming `jobs[i].…` before sending (or for an empty batch);
    /// [`Error::Api`] (a `422` names `jobs[i].field`; more jobs than the server's
    /// `producer.max_batch`, 1,000 by default, is a `422` on `jobs`); [`Error::Http`].
    pub async fn enqueue_batch(
        &self,
        requests: impl IntoIterator<Item = JobRequest>,
    ) -> Result<Vec<JobId>, Error> {
        let requests: Vec<JobRequest> = requests.into_iter().collect();
        let mut errors = ValidationErrors::new();
        if requests.is_empty() {
            errors.add("jobs", "must hold at least one job");
        }
        for (i, request) in requests.iter().enumerate() {
            if let Err(Error::Invalid(e)) = request.check() {
                errors.extend(e.prefixed(&format!("jobs[{i}]")));
            }
        }
        errors.into_result().map_err(Error::Invalid)?;
        let body = serde_json::json!({
            "jobs": requests.iter().map(JobRequest::body).collect::<Vec<_>>(),
        });
        let response = self
            .send(self.http.post(self.url("/v1/jobs/batch")).json(&body))
            .await?;
        let accepted: BatchAccepted = decode(response).await?;
        Ok(accepted.ids)
    }

    /// The job as it is now.
    ///
    /// # Errors
    /// [`Error::Api`] `404` when there is no such job (or `403` outside the key's
    /// reach); [`Error::Http`].
    pub async fn get(&self, id: JobId) -> Result<Job, Error> {
        let response = self
            .send(self.http.get(self.url(&format!("/v1/jobs/{id}"))))
            .await?;
        decode(response).await
    }

    /// Cancels a job: a waiting one never runs; a running one finishes its attempt and
    /// is not retried.
    ///
    /// # Errors
    /// [`Error::Api`] `409` when it is already completed, dead or cancelled; `404`;
    /// [`Error::Http`].
    pub async fn cancel(&self, id: JobId) -> Result<Cancelled, Error> {
        let response = self
            .send(self.http.post(self.url(&format!("/v1/jobs/{id}/cancel"))))
            .await?;
        let running = response.status() == StatusCode::ACCEPTED;
        let job: Job = decode(response).await?;
        Ok(if running {
            Cancelled::Requested(job)
        } else {
            Cancelled::Cancelled(job)
        })
    }

    /// Waits up to `bound` for the job to be final (completed, dead or cancelled) and
    /// answers it as it is then, with [`Waited::is_final`] false if the bound came first.
    ///
    /// The server holds each request until the job is final or the request's bound
    /// (`GET /v1/jobs/{id}?wait=30s`, at most 30 s each, rounded up to whole seconds),
    /// so waiting costs one request per 30 s and the answer comes as the job ends. An
    /// intake without long polling answers at once without `final`; the client then
    /// polls, backing off from 100 ms to 2 s.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(client: conveyor_client::Client, id: jobs::JobId) -> Result<(), conveyor_client::Error> {
    /// let waited = client.wait(id, Duration::from_secs(60)).await?;
    /// if waited.is_final {
    ///     println!("{} ended {}: {:?}", waited.job.id, waited.job.state, waited.job.result);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn wait(&self, id: JobId, bound: Duration) -> Result<Waited, Error> {
        let deadline = Instant::now() + bound;
        let mut pause = Duration::from_millis(100);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let step = remaining.min(WAIT_STEP);
            let secs = step.as_secs() + u64::from(step.subsec_nanos() > 0);
            let request = self
                .http
                .get(self.url(&format!("/v1/jobs/{id}")))
                .query(&[("wait", format!("{secs}s"))])
                .timeout(Duration::from_secs(secs) + WAIT_SLACK);
            let body: WaitBody = decode(self.send_bounded(request).await?).await?;
            let is_final = body.is_final.unwrap_or_else(|| body.job.is_final());
            let now = Instant::now();
            if is_final || now >= deadline {
                return Ok(Waited {
                    job: body.job,
                    is_final,
                });
            }
            if body.is_final.is_none() {
                // No long polling on this server: poll.
                tokio::time::sleep(pause.min(deadline - now)).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends with the key and the client's timeout.
    async fn send(&self, request: RequestBuilder) -> Result<Response, Error> {
        self.send_bounded(request.timeout(self.timeout)).await
    }

    /// Sends with the key; the request carries its own timeout.
    async fn send_bounded(&self, request: RequestBuilder) -> Result<Response, Error> {
        let request = match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await?;
        Err(Error::Api(Problem::from_answer(
            status.as_u16(),
            retry_after,
            &body,
        )))
    }
}

/// A success's body as `T`.
async fn decode<T: DeserializeOwned>(response: Response) -> Result<T, Error> {
    let status = response.status().as_u16();
    let body = response.bytes().await?;
    serde_json::from_slice(&body).map_err(|source| Error::Decode { status, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_must_be_http_or_https() {
        assert!(matches!(
            Client::new("localhost:8080", "k"),
            Err(Error::BaseUrl(_))
        ));
        assert!(matches!(
            Client::new("http://", "k"),
            Err(Error::BaseUrl(_))
        ));
        let client = Client::new("http://127.0.0.1:8080/", "").unwrap();
        assert_eq!(client.url("/v1/jobs"), "http://127.0.0.1:8080/v1/jobs");
        assert!(client.key.is_none());
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let client = Client::new("http://127.0.0.1:8080", "cvk_secret").unwrap();

        assert!(!format!("{client:?}").contains("cvk_secret"));
    }
}
