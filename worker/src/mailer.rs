//! The SMTP side of `email.send`: [`SmtpMailer`] implements the [`Mailer`] port with
//! lettre's async transport (pooled; plain, STARTTLS or implicit TLS), built from
//! [`SmtpSettings`]. The pool connects lazily, so building a mailer touches no network.
//!
//! Replies map to verdicts: a 5xx is [`MailError::Permanent`] carrying the server's
//! reply; a 4xx, a refused or dropped connection, a TLS failure or a timeout is
//! [`MailError::Transient`].

use std::time::Duration;

use jobs::kinds::email::{MailError, Mailer, OutgoingEmail};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (a local relay or a test sink).
    #[default]
    None,
    /// Upgrade with STARTTLS, and refuse to send when the server cannot.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

/// Where and how `email.send` sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    /// Server host name (also the name its TLS certificate must carry). Empty (the
    /// default) means no SMTP server is configured: `conveyor run` then delivers to its
    /// development mailbox, and a worker that sends email refuses to start.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: SmtpTls,
    /// Login, when the server wants one (with `password`).
    pub username: Option<String>,
    /// Password for `username`. A secret: never logged.
    #[serde(serialize_with = "expose")]
    pub password: Option<SecretString>,
    /// The sender, as a mailbox: `Name <address>` or a bare address.
    pub from: String,
    /// Bound on each network step (connecting, each SMTP command); a whole send is
    /// bounded by three times this.
    pub timeout_ms: u64,
}

fn expose<S: serde::Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => s.serialize_some(secret.expose_secret()),
        None => s.serialize_none(),
    }
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 1025,
            tls: SmtpTls::None,
            username: None,
            password: None,
            from: "Conveyor <conveyor@localhost>".to_owned(),
            timeout_ms: 10_000,
        }
    }
}

/// A problem with [`SmtpSettings`], naming its key.
#[derive(Debug, thiserror::Error)]
pub enum SmtpSettingsError {
    /// `from` is not a mailbox.
    #[error("not a mailbox like \"Name <user@example.com>\": {0}")]
    From(String),
    /// Only one of `username` and `password` is set.
    #[error("give username and password together")]
    Credentials,
    /// TLS cannot be set up for `host`.
    #[error("cannot set up TLS for this host: {0}")]
    Tls(#[source] lettre::transport::smtp::Error),
}

impl SmtpSettingsError {
    /// The configuration key at fault.
    pub fn key(&self) -> &'static str {
        match self {
            SmtpSettingsError::From(_) => "smtp.from",
            SmtpSettingsError::Credentials => "smtp.password",
            SmtpSettingsError::Tls(_) => "smtp.host",
        }
    }
}

impl SmtpSettings {
    /// True when an SMTP server is configured (`smtp.host` is set).
    pub fn is_configured(&self) -> bool {
        !self.host.trim().is_empty()
    }

    /// These settings pointed at a plain SMTP server on loopback `port` (the
    /// development mailbox): no TLS, no login; the sender and timeout kept.
    #[must_use]
    pub fn loopback(&self, port: u16) -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port,
            tls: SmtpTls::None,
            username: None,
            password: None,
            ..self.clone()
        }
    }

    /// The bound on each network step.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// The sender mailbox.
    ///
    /// # Errors
    /// When `from` does not parse.
    pub fn sender(&self) -> Result<Mailbox, SmtpSettingsError> {
        self.from
            .parse()
            .map_err(|e: lettre::address::AddressError| SmtpSettingsError::From(e.to_string()))
    }

    /// Checks what can be checked without building a transport.
    ///
    /// # Errors
    /// The first problem.
    pub fn validate(&self) -> Result<(), SmtpSettingsError> {
        self.sender()?;
        if self.username.is_some() != self.password.is_some() {
            return Err(SmtpSettingsError::Credentials);
        }
        Ok(())
    }

    /// A pooled transport that connects on first use. Must be called within a Tokio
    /// runtime (the pool's idle reaper is a task).
    ///
    /// # Errors
    /// When TLS cannot be set up for `host`.
    pub fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, SmtpSettingsError> {
        let builder = match self.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&self.host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&self.host)
                .map_err(SmtpSettingsError::Tls)?,
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&self.host)
                .map_err(SmtpSettingsError::Tls)?,
        };
        let mut builder = builder
            .port(self.port)
            .timeout(Some(self.timeout()))
            .pool_config(PoolConfig::new());
        if let (Some(username), Some(password)) = (&self.username, &self.password) {
            builder = builder.credentials(Credentials::new(
                username.clone(),
                password.expose_secret().to_owned(),
            ));
        }
        Ok(builder.build())
    }
}

/// Sends email over SMTP.
#[derive(Clone)]
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Bound on a whole send.
    send_timeout: Duration,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// A mailer for `settings`. Connects on first send. Must be called within a Tokio
    /// runtime.
    ///
    /// # Errors
    /// When the settings are unusable.
    pub fn new(settings: &SmtpSettings) -> Result<Self, SmtpSettingsError> {
        settings.validate()?;
        Ok(Self {
            transport: settings.transport()?,
            from: settings.sender()?,
            send_timeout: settings.timeout().saturating_mul(3),
        })
    }

    /// The message lettre sends for `email`: plain, HTML, or both as alternatives.
    ///
    /// # Errors
    /// [`MailError::Permanent`] when it cannot be built (retrying never fixes that).
    pub fn message(&self, email: &OutgoingEmail) -> Result<Message, MailError> {
        let to: Address =
            email.to.as_str().parse().map_err(|e| {
                MailError::Permanent(format!("recipient {:?}: {e}", email.to.as_str()))
            })?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(email.subject.clone())
            .message_id(Some(email.message_id.clone()));
        let built = match (&email.text, &email.html) {
            (Some(text), Some(html)) => builder.multipart(MultiPart::alternative_plain_html(
                text.clone(),
                html.clone(),
            )),
            (None, Some(html)) => builder.singlepart(SinglePart::html(html.clone())),
            (Some(text), None) => builder.singlepart(SinglePart::plain(text.clone())),
            (None, None) => builder.singlepart(SinglePart::plain(String::new())),
        };
        built.map_err(|e| MailError::Permanent(format!("cannot build the message: {e}")))
    }
}

/// Maps lettre's error to a verdict: 5xx is permanent (the reply is kept), everything
/// else — 4xx, connection, network, TLS, timeout — may work next time.
fn classify(error: &lettre::transport::smtp::Error) -> MailError {
    if error.is_permanent() {
        MailError::Permanent(error.to_string())
    } else if error.is_transient() {
        MailError::Transient(error.to_string())
    } else {
        MailError::Transient(format!("cannot talk to the SMTP server: {error}"))
    }
}

impl Mailer for SmtpMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError> {
        let message = self.message(email)?;
        match tokio::time::timeout(self.send_timeout, self.transport.send(message)).await {
            Ok(Ok(_response)) => Ok(()),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_elapsed) => Err(MailError::Transient(format!(
                "SMTP send timed out after {:?}",
                self.send_timeout
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobs::{EmailAddress, JobId};

    fn email(text: Option<&str>, html: Option<&str>) -> OutgoingEmail {
        OutgoingEmail {
            message_id: jobs::kinds::email::message_id(JobId::new()),
            to: EmailAddress::parse("ada@example.com").unwrap(),
            subject: "Your order".into(),
            text: text.map(Into::into),
            html: html.map(Into::into),
        }
    }

    #[test]
    fn settings_name_the_bad_key() {
        let bad_from = SmtpSettings {
            from: "not a mailbox".into(),
            ..SmtpSettings::default()
        };
        assert_eq!(bad_from.validate().unwrap_err().key(), "smtp.from");
        let half_login = SmtpSettings {
            username: Some("ada".into()),
            ..SmtpSettings::default()
        };
        assert_eq!(half_login.validate().unwrap_err().key(), "smtp.password");
        assert!(SmtpSettings::default().validate().is_ok());
    }

    #[tokio::test]
    async fn a_message_carries_the_message_id_and_its_parts() {
        let mailer = SmtpMailer::new(&SmtpSettings::default()).unwrap();
        let sent = email(Some("Hello"), Some("<p>Hello</p>"));

        let both = String::from_utf8(mailer.message(&sent).unwrap().formatted()).unwrap();
        let html_only = String::from_utf8(
            mailer
                .message(&email(None, Some("<p>Hi</p>")))
                .unwrap()
                .formatted(),
        )
        .unwrap();

        assert!(
            both.contains(&format!("Message-ID: {}", sent.message_id)),
            "{both}"
        );
        assert!(
            both.contains("From: Conveyor <conveyor@localhost>"),
            "{both}"
        );
        assert!(both.contains("multipart/alternative"), "{both}");
        assert!(html_only.contains("text/html"), "{html_only}");
        assert!(!html_only.contains("multipart"), "{html_only}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        // A port nobody listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mailer = SmtpMailer::new(&SmtpSettings {
            port,
            timeout_ms: 2_000,
            ..SmtpSettings::default()
        })
        .unwrap();

        let err = mailer.send(&email(Some("Hello"), None)).await.unwrap_err();

        assert!(matches!(err, MailError::Transient(_)), "{err:?}");
    }
}
