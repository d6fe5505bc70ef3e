//! The HTTP side of `webhook.deliver`: [`HttpWebhookSender`] implements the
//! [`WebhookSender`] port with hyper over a TCP (and, for `https`, rustls) connection it
//! opens itself, to an address it has just checked — so a host that resolves to a public
//! address when checked and a private one a moment later (DNS rebinding) is never
//! reached. Built from [`WebhookSettings`]; signs per the Standard Webhooks
//! specification ([`signature`]).
//!
//! Every step is bounded: resolving and connecting by `connect_timeout_ms`, the TLS
//! handshake and the whole answer (status and the kept part of the body) by
//! `response_timeout_ms`. At most [`MAX_KEPT_BODY`] bytes of the body are read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jobs::kinds::webhook::{
    MAX_KEPT_BODY, OutgoingWebhook, SECRET_PREFIX, SendError, TargetError, TargetPolicy,
    WebhookResponse, WebhookSender, parse_url,
};
use ring::hmac;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

/// How webhooks are checked and sent (`[webhooks]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Also call targets resolving to loopback, private or link-local addresses (tests,
    /// closed networks). Off: such URLs are refused at intake, at subscription and at
    /// delivery.
    pub allow_private_targets: bool,
    /// Bound on resolving the host and connecting.
    pub connect_timeout_ms: u64,
    /// Bound on the TLS handshake and the answer (status line, headers, kept body).
    pub response_timeout_ms: u64,
    /// The `whsec_…` secret that signs deliveries to jobs' `callback_url`s. Unset:
    /// callbacks carry `webhook-id` and `webhook-timestamp` but no signature. A secret:
    /// never logged.
    #[serde(serialize_with = "expose")]
    pub callback_secret: Option<SecretString>,
}

fn expose<S: serde::Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => s.serialize_some(secret.expose_secret()),
        None => s.serialize_none(),
    }
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            connect_timeout_ms: 5_000,
            response_timeout_ms: 15_000,
            callback_secret: None,
        }
    }
}

impl WebhookSettings {
    /// The target policy these settings give (intake and subscriptions check with it).
    pub fn policy(&self) -> TargetPolicy {
        TargetPolicy {
            allow_private: self.allow_private_targets,
            resolve_timeout: self.connect_timeout(),
        }
    }

    /// The connect bound.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }

    /// The answer bound.
    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms.max(1))
    }

    /// Checks the callback secret's form.
    ///
    /// # Errors
    /// The key at fault and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(secret) = &self.callback_secret {
            secret_bytes(secret.expose_secret())
                .map_err(|e| ("webhooks.callback_secret", e.to_owned()))?;
        }
        if self.connect_timeout_ms == 0 {
            return Err(("webhooks.connect_timeout_ms", "must be at least 1".into()));
        }
        if self.response_timeout_ms == 0 {
            return Err(("webhooks.response_timeout_ms", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// The key bytes of a `whsec_…` secret.
///
/// # Errors
/// When it lacks the prefix or is not base64.
pub fn secret_bytes(secret: &str) -> Result<Vec<u8>, &'static str> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or("must start with whsec_ (a Standard Webhooks secret)")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "must be whsec_ followed by base64")?;
    if bytes.is_empty() {
        return Err("must not be empty after whsec_");
    }
    Ok(bytes)
}

/// The `webhook-signature` header's value: `v1,` and the base64 of
/// HMAC-SHA256(`key`, `"{id}.{timestamp}.{body}"`).
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut context = hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

/// Sends webhooks over HTTP/1.1, with TLS for `https` (the webpki roots).
#[derive(Clone)]
pub struct HttpWebhookSender {
    policy: TargetPolicy,
    connect_timeout: Duration,
    response_timeout: Duration,
    tls: TlsConnector,
}

impl std::fmt::Debug for HttpWebhookSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpWebhookSender")
            .field("policy", &self.policy)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl HttpWebhookSender {
    /// A sender for `settings`. Touches no network.
    ///
    /// # Errors
    /// When TLS cannot be set up (the crypto provider refuses its defaults).
    pub fn new(settings: &WebhookSettings) -> Result<Self, rustls::Error> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Self {
            policy: settings.policy(),
            connect_timeout: settings.connect_timeout(),
            response_timeout: settings.response_timeout(),
            tls: TlsConnector::from(Arc::new(config)),
        })
    }

    /// Resolves, checks and connects to the first address that answers.
    async fn connect(&self, url: &url::Url) -> Result<(TcpStream, SocketAddr), SendError> {
        let addrs = self.policy.check(url).await.map_err(|e| match e {
            TargetError::Unresolved { .. } => SendError::Transient(e.to_string()),
            other => SendError::Refused(other.to_string()),
        })?;
        let mut last = String::new();
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => return Ok((stream, addr)),
                Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
                Err(_) => {
                    last = format!(
                        "cannot connect to {addr}: no answer within {:?}",
                        self.connect_timeout
                    );
                }
            }
        }
        Err(SendError::Transient(last))
    }

    async fn exchange<S>(
        &self,
        io: S,
        url: &url::Url,
        webhook: &OutgoingWebhook,
    ) -> Result<WebhookResponse, SendError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let failed = |e: hyper::Error| SendError::Transient(format!("HTTP exchange failed: {e}"));
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(failed)?;
        let driver = tokio::spawn(async move {
            // Ends when the exchange is done or the sender is dropped.
            let _ = connection.await;
        });
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => String::new(),
        };
        let target = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let mut request = hyper::Request::post(if target.is_empty() { "/" } else { target })
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "Conveyor-Webhooks/1")
            .header("webhook-id", &webhook.id)
            .header("webhook-timestamp", webhook.timestamp.to_string());
        if let Some(secret) = &webhook.secret {
            let key = secret_bytes(secret)
                .map_err(|e| SendError::Refused(format!("the signing secret {e}")))?;
            request = request.header(
                "webhook-signature",
                signature(&key, &webhook.id, webhook.timestamp, &webhook.body),
            );
        }
        let request = request
            .body(Full::new(Bytes::from(webhook.body.clone())))
            .map_err(|e| SendError::Refused(format!("cannot build the request: {e}")))?;
        let response = sender.send_request(request).await.map_err(failed)?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut kept: Vec<u8> = Vec::new();
        while kept.len() < MAX_KEPT_BODY {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        let room = MAX_KEPT_BODY - kept.len();
                        kept.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                // A body cut short still leaves the status to judge by.
                Some(Err(_)) | None => break,
            }
        }
        driver.abort();
        Ok(WebhookResponse {
            status,
            body: String::from_utf8_lossy(&kept).trim().to_owned(),
        })
    }
}

impl WebhookSender for HttpWebhookSender {
    async fn send(&self, webhook: &OutgoingWebhook) -> Result<WebhookResponse, SendError> {
        let url = parse_url(&webhook.url).map_err(SendError::Refused)?;
        let (stream, addr) = self.connect(&url).await?;
        let timeout = self.response_timeout;
        let late = || SendError::Transient(format!("{addr} did not answer within {timeout:?}"));
        if url.scheme() == "https" {
            let host = url.host_str().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| SendError::Refused(format!("{host} is not a TLS server name: {e}")))?;
            tokio::time::timeout(timeout, async {
                let tls =
                    self.tls.connect(name, stream).await.map_err(|e| {
                        SendError::Transient(format!("TLS with {addr} failed: {e}"))
                    })?;
                self.exchange(tls, &url, webhook).await
            })
            .await
            .map_err(|_| late())?
        } else {
            tokio::time::timeout(timeout, self.exchange(stream, &url, webhook))
                .await
                .map_err(|_| late())?
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification's reference libraries.
        let key = secret_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_need_the_prefix_and_base64() {
        assert!(secret_bytes("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(secret_bytes("whsec_!!!").is_err());
        assert!(secret_bytes("whsec_").is_err());
        let settings = WebhookSettings {
            callback_secret: Some(SecretString::from("nope")),
            ..WebhookSettings::default()
        };
        assert_eq!(
            settings.validate().unwrap_err().0,
            "webhooks.callback_secret"
        );
    }

    #[tokio::test]
    async fn a_refused_target_is_refused_before_connecting() {
        let sender = HttpWebhookSender::new(&WebhookSettings::default()).unwrap();
        let outgoing = OutgoingWebhook {
            url: "http://127.0.0.1:9/hook".into(),
            id: "msg_1".into(),
            timestamp: 0,
            body: b"{}".to_vec(),
            secret: None,
        };
        assert!(matches!(
            sender.send(&outgoing).await,
            Err(SendError::Refused(_))
        ));
    }
}
