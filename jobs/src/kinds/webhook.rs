//! `webhook.deliver`: one signed HTTP POST of one job transition to one URL — a job's own
//! `callback_url`, or a subscription's. Deliveries are jobs like any other: retried with
//! backoff, dead when their attempts run out, replayable.
//!
//! This module holds what a delivery *is*: its arguments, the target rules (which URLs
//! and addresses may be called, [`TargetPolicy`]), the verdict of each response
//! ([`verdict`]), and the two ports the handler calls: [`WebhookSender`] (the worker's
//! HTTP client, which signs per the Standard Webhooks specification) and
//! [`SubscriptionSecrets`] (the store, which keeps each subscription's secret).
//!
//! Response policy: a `2xx` is delivered; `410 Gone` means the receiver is gone for good
//! (dead at once, no more attempts); every other answer — `3xx` (redirects are not
//! followed), `4xx`, `5xx` — and a connect error or timeout is retried with backoff
//! until the attempts run out. A target that resolves to a refused address is dead at
//! once (a replay checks it again).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::backoff::RetryPolicy;
use crate::error::{JobError, LedgerError, ValidationErrors};
use crate::handler::{Handler, Job, JobArgs, JobOptions};
use crate::model::{JobId, JobState};

/// The kind's wire name.
pub const KIND: &str = "webhook.deliver";
/// The queue deliveries go to.
pub const QUEUE: &str = "webhooks";
/// Longest accepted target URL.
pub const MAX_URL_LEN: usize = 2048;
/// Attempts of a delivery to a job's `callback_url` (a subscription sets its own).
pub const CALLBACK_MAX_ATTEMPTS: u32 = 8;
/// Most bytes of a response body kept in an attempt's error.
pub const MAX_KEPT_BODY: usize = 1024;
/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// The states a subscription may be told of (the state a job moved into). `running` is
/// not among them: the claim is the hot path and writes nothing more.
pub const SUBSCRIBABLE_STATES: [JobState; 6] = [
    JobState::Scheduled,
    JobState::Enqueued,
    JobState::Retrying,
    JobState::Completed,
    JobState::Dead,
    JobState::Cancelled,
];

/// The states a job's `callback_url` is told of: its final ones.
pub const CALLBACK_STATES: [JobState; 3] =
    [JobState::Completed, JobState::Dead, JobState::Cancelled];

/// Arguments of `webhook.deliver`, written by the transition's own statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverWebhook {
    /// The subscription delivered to (its secret signs); `None`: the job's
    /// `callback_url` (signed with `webhooks.callback_secret`, when set).
    #[serde(default)]
    pub subscription_id: Option<Uuid>,
    /// Where to POST.
    pub url: String,
    /// The body: `{type, timestamp, data}`.
    pub event: Value,
}

impl JobArgs for DeliverWebhook {
    const KIND: &'static str = KIND;

    fn options() -> JobOptions {
        JobOptions {
            queue: QUEUE,
            max_attempts: CALLBACK_MAX_ATTEMPTS,
            // Bounded by connect + response timeouts (config) well below this.
            timeout: Duration::from_secs(120),
            retry: RetryPolicy {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(3600),
            },
        }
    }

    fn validate(&self) -> Result<(), ValidationErrors> {
        parse_url(&self.url).map_err(|e| ValidationErrors::one("url", e))?;
        Ok(())
    }
}

/// Checks a target URL's text: `http` or `https`, a host, at most [`MAX_URL_LEN`]
/// characters, no user name or password, no fragment.
///
/// # Errors
/// What is wrong with it.
pub fn parse_url(text: &str) -> Result<url::Url, String> {
    if text.is_empty() || text.len() > MAX_URL_LEN {
        return Err(format!("must be 1 to {MAX_URL_LEN} characters"));
    }
    let url = url::Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "must be an http or https URL, not {}:",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    if url.fragment().is_some() {
        return Err("must not have a #fragment".into());
    }
    Ok(url)
}

/// Why an address may not be called, or `None` when it may: loopback, private
/// (RFC 1918, CGNAT `100.64.0.0/10`, IPv6 unique-local `fc00::/7`), link-local
/// (`169.254.0.0/16`, `fe80::/10`), unspecified, multicast, broadcast, and the IPv4
/// forms of those inside IPv6 (mapped `::ffff:a.b.c.d`, compatible, NAT64 `64:ff9b::/96`).
pub fn refused_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4);
            }
            let segments = v6.segments();
            // NAT64 (64:ff9b::/96) and the deprecated IPv4-compatible form (::a.b.c.d).
            if (segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || segments[..6] == [0; 6])
                && !v6.is_loopback()
                && !v6.is_unspecified()
            {
                let octets = v6.octets();
                return refused_v4(Ipv4Addr::new(
                    octets[12], octets[13], octets[14], octets[15],
                ));
            }
            refused_v6(v6)
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if ip.is_unspecified() || a == 0 {
        Some("an unspecified address")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("a multicast, broadcast or reserved address")
    } else {
        None
    }
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private (unique-local) address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    }
}

/// Which targets may be called, and how long resolving may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetPolicy {
    /// `webhooks.allow_private_targets`: also loopback, private and link-local
    /// addresses (for tests and closed networks).
    pub allow_private: bool,
    /// Bound on resolving the host.
    pub resolve_timeout: Duration,
}

impl Default for TargetPolicy {
    fn default() -> Self {
        Self {
            allow_private: false,
            resolve_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The URL itself is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The host did not resolve (or not in time).
    #[error("the host {host} does not resolve: {reason}")]
    Unresolved {
        /// The host.
        host: String,
        /// Why.
        reason: String,
    },
    /// The host resolves to an address that may not be called.
    #[error(
        "{host} resolves to {ip}, {what}; such targets are refused unless webhooks.allow_private_targets = true"
    )]
    Refused {
        /// The host.
        host: String,
        /// The address.
        ip: IpAddr,
        /// What kind of address.
        what: &'static str,
    },
}

impl TargetError {
    /// True when trying again later may succeed (a resolver failure).
    pub fn is_transient(&self) -> bool {
        matches!(self, TargetError::Unresolved { .. })
    }
}

impl TargetPolicy {
    /// Resolves `url`'s host and checks every address it resolves to: all must be
    /// allowed. Returns them, so the caller connects to an address it checked (a second
    /// lookup could answer differently: DNS rebinding).
    ///
    /// # Errors
    /// A malformed URL, a host that does not resolve, or a refused address.
    pub async fn check(&self, url: &url::Url) -> Result<Vec<SocketAddr>, TargetError> {
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(TargetError::Invalid("must name a host".into())),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| TargetError::Invalid("has no port".into()))?;
        let unresolved = |reason: String| TargetError::Unresolved {
            host: host.clone(),
            reason,
        };
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            self.resolve_timeout,
            tokio::net::lookup_host((host.as_str(), port)),
        )
        .await
        .map_err(|_| unresolved(format!("no answer within {:?}", self.resolve_timeout)))?
        .map_err(|e| unresolved(e.to_string()))?
        .collect();
        if addrs.is_empty() {
            return Err(unresolved("no addresses".into()));
        }
        if !self.allow_private
            && let Some((ip, what)) = addrs
                .iter()
                .find_map(|a| refused_address(a.ip()).map(|what| (a.ip(), what)))
        {
            return Err(TargetError::Refused { host, ip, what });
        }
        Ok(addrs)
    }
}

/// One signed POST to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingWebhook {
    /// Where.
    pub url: String,
    /// `webhook-id`: the same for every attempt of one delivery (`msg_` + the delivery
    /// job's id), so a receiver can drop duplicates.
    pub id: String,
    /// `webhook-timestamp`: this attempt's time, unix seconds.
    pub timestamp: i64,
    /// The JSON body, exactly as signed.
    pub body: Vec<u8>,
    /// The `whsec_…` secret that signs it; `None`: sent without `webhook-signature`.
    pub secret: Option<String>,
}

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookResponse {
    /// HTTP status.
    pub status: u16,
    /// The start of the body, at most [`MAX_KEPT_BODY`] bytes, lossily decoded.
    pub body: String,
}

/// Why nothing was answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The target is refused (checked again at delivery): dead, no retry.
    #[error("target refused: {0}")]
    Refused(String),
    /// Resolving, connecting, TLS, or the answer did not come in time: retried.
    #[error("{0}")]
    Transient(String),
}

/// Sends one webhook. The worker's adapter speaks HTTP and signs; tests may fake it.
pub trait WebhookSender: Send + Sync + 'static {
    /// POSTs `webhook` once, connecting only to an address the target policy allows.
    ///
    /// # Errors
    /// [`SendError::Refused`] or [`SendError::Transient`].
    fn send(
        &self,
        webhook: &OutgoingWebhook,
    ) -> impl Future<Output = Result<WebhookResponse, SendError>> + Send;
}

/// Where subscriptions' secrets are kept (the store).
pub trait SubscriptionSecrets: Send + Sync + 'static {
    /// The secret of subscription `id`, or `None` when it was deleted.
    ///
    /// # Errors
    /// When the database fails.
    fn secret(&self, id: Uuid) -> impl Future<Output = Result<Option<String>, LedgerError>> + Send;
}

/// The delivery's `webhook-id`: `msg_` and the delivery job's id.
pub fn message_id(job: JobId) -> String {
    format!("msg_{}", job.as_uuid().simple())
}

/// The verdict on a receiver's answer (the policy in the module docs).
///
/// # Errors
/// A retry for anything but `2xx` and `410`; a failure for `410`.
pub fn verdict(response: &WebhookResponse) -> Result<Value, JobError> {
    let status = response.status;
    let said = if response.body.is_empty() {
        String::new()
    } else {
        format!(": {}", response.body)
    };
    match status {
        200..=299 => Ok(json!({ "status": status })),
        410 => Err(JobError::fail(format!(
            "HTTP 410 Gone: the receiver is gone; not retried{said}"
        ))),
        300..=399 => Err(JobError::retry(format!(
            "HTTP {status}: redirects are not followed{said}"
        ))),
        _ => Err(JobError::retry(format!("HTTP {status}{said}"))),
    }
}

/// Runs [`DeliverWebhook`]: finds the secret, signs, POSTs, and judges the answer
/// ([`verdict`]). A delivery for a deleted subscription completes without sending.
#[derive(Debug, Clone)]
pub struct DeliverWebhookHandler<S, K> {
    sender: S,
    secrets: K,
    callback_secret: Option<String>,
}

impl<S: WebhookSender, K: SubscriptionSecrets> DeliverWebhookHandler<S, K> {
    /// A handler sending through `sender`, reading subscriptions' secrets from
    /// `secrets`, and signing callbacks with `callback_secret` when given.
    pub fn new(sender: S, secrets: K, callback_secret: Option<String>) -> Self {
        Self {
            sender,
            secrets,
            callback_secret,
        }
    }
}

impl<S: WebhookSender, K: SubscriptionSecrets> Handler for DeliverWebhookHandler<S, K> {
    type Args = DeliverWebhook;

    async fn handle(&self, job: Job<DeliverWebhook>) -> Result<Value, JobError> {
        let secret = match job.args.subscription_id {
            Some(id) => match self.secrets.secret(id).await.map_err(JobError::retry)? {
                Some(secret) => Some(secret),
                None => {
                    tracing::info!(subscription = %id, "subscription deleted; delivery dropped");
                    return Ok(json!({ "skipped": "the subscription was deleted" }));
                }
            },
            None => self.callback_secret.clone(),
        };
        let body = serde_json::to_vec(&job.args.event).map_err(JobError::fail)?;
        let outgoing = OutgoingWebhook {
            url: job.args.url,
            id: message_id(job.meta.id),
            timestamp: chrono::Utc::now().timestamp(),
            body,
            secret,
        };
        match self.sender.send(&outgoing).await {
            Ok(response) => verdict(&response),
            Err(SendError::Refused(e)) => Err(JobError::fail(format!("target refused: {e}"))),
            Err(SendError::Transient(e)) => Err(JobError::retry(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls_are_http_with_a_host_and_no_credentials() {
        assert!(parse_url("https://example.com/hook").is_ok());
        assert!(parse_url("http://203.0.113.7:8080/x?y=1").is_ok());
        assert!(
            parse_url("ftp://example.com/")
                .unwrap_err()
                .contains("http")
        );
        assert!(parse_url("not a url").unwrap_err().contains("not a URL"));
        assert!(
            parse_url("https://u:p@example.com/")
                .unwrap_err()
                .contains("password")
        );
        assert!(parse_url("https://example.com/#x").is_err());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert!(parse_url(&long).unwrap_err().contains("2048"));
    }

    #[test]
    fn private_loopback_and_link_local_addresses_are_refused_in_every_form() {
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
        ] {
            let ip: IpAddr = refused.parse().unwrap();
            assert!(refused_address(ip).is_some(), "{refused} must be refused");
        }
        for allowed in [
            "203.0.113.7",
            "8.8.8.8",
            "100.128.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = allowed.parse().unwrap();
            assert_eq!(refused_address(ip), None, "{allowed} must be allowed");
        }
    }

    #[tokio::test]
    async fn the_policy_refuses_a_loopback_target_unless_private_targets_are_allowed() {
        let url = parse_url("http://127.0.0.1:9/hook").unwrap();
        let refused = TargetPolicy::default().check(&url).await.unwrap_err();
        assert!(matches!(refused, TargetError::Refused { .. }), "{refused}");
        assert!(refused.to_string().contains("allow_private_targets"));
        let allowed = TargetPolicy {
            allow_private: true,
            ..TargetPolicy::default()
        };
        assert_eq!(allowed.check(&url).await.unwrap().len(), 1);
    }

    #[test]
    fn answers_map_to_verdicts() {
        let answer = |status| WebhookResponse {
            status,
            body: "nope".into(),
        };
        assert!(verdict(&answer(204)).is_ok());
        assert!(matches!(verdict(&answer(410)), Err(JobError::Fail(_))));
        for status in [301, 400, 404, 429, 500, 503] {
            assert!(
                matches!(verdict(&answer(status)), Err(JobError::Retry(_))),
                "{status}"
            );
        }
        let Err(JobError::Retry(e)) = verdict(&answer(500)) else {
            unreachable!()
        };
        assert_eq!(e.to_string(), "HTTP 500: nope");
    }
}
