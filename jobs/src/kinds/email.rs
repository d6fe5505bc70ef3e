//! `email.send` (queue `emails`): sends one email, rendered from a template
//! (`order_confirmation`, `order_rejected`) or given as subject with text and/or html.
//!
//! Sending is at least once, with a stable dedupe key: the Message-ID is derived from
//! the job id (`<{job_id}@conveyor>`), and the [`SentLog`] records each sent message by
//! job id, so a redelivered or retried job whose message is on record completes without
//! sending again. The one window left: a crash after the server accepted the message and
//! before the record commits sends it again on the next attempt, with the same
//! Message-ID, so the duplicate is recognisable downstream.
//!
//! SMTP 4xx or a connection failure ([`MailError::Transient`]) is a retry; 5xx
//! ([`MailError::Permanent`]) is a permanent failure, with the server's reply as the
//! error. Rendering ([`render`]) is a pure function; templates are embedded in the
//! binary from `jobs/templates/`.

use std::future::Future;
use std::time::Duration;

use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::{EmailAddress, format_money};
use crate::error::{JobError, LedgerError, ValidationErrors};
use crate::handler::{Handler, Job, JobArgs, JobOptions};
use crate::model::JobId;
use crate::registry::decode_value;

/// Longest subject, in characters (RFC 5322's line limit).
pub const MAX_SUBJECT_CHARS: usize = 998;
/// Longest text or html body, in bytes.
pub const MAX_BODY_BYTES: usize = 512 * 1024;

/// A template Conveyor ships. Its data is checked at intake against the template's
/// data type ([`OrderConfirmationData`], [`OrderRejectedData`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// "Your order is confirmed", with every line and the total.
    OrderConfirmation,
    /// "We could not accept your order", with the reason.
    OrderRejected,
}

impl Template {
    /// The template's name, as in the request and in `jobs/templates/`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Template::OrderConfirmation => "order_confirmation",
            Template::OrderRejected => "order_rejected",
        }
    }
}

/// Arguments of `email.send`: `to`, and either `template` with `data`, or `subject`
/// with `text` and/or `html`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendEmail {
    /// Recipient address.
    pub to: String,
    /// A shipped template to render (instead of `subject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
    /// The template's data (only with `template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Subject line (instead of `template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Plain-text body (with `subject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// HTML body (with `subject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
}

impl JobArgs for SendEmail {
    const KIND: &'static str = "email.send";

    fn options() -> JobOptions {
        JobOptions {
            queue: "emails",
            max_attempts: 8,
            timeout: Duration::from_secs(60),
            retry: crate::RetryPolicy {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(600),
            },
        }
    }

    fn validate(&self) -> Result<(), ValidationErrors> {
        Email::try_from(self).map(drop)
    }
}

/// Data of the `order_confirmation` template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderConfirmationData {
    /// The caller's order id.
    pub order_id: String,
    /// Whom to greet.
    pub customer_name: String,
    /// ISO 4217 code of every amount.
    pub currency: String,
    /// The order's lines, in order.
    pub lines: Vec<ConfirmationLine>,
    /// Sum of the line totals, in minor units.
    pub total_minor: i64,
}

/// One line of an order confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmationLine {
    /// Product SKU.
    pub sku: String,
    /// Product name.
    pub name: String,
    /// Units ordered.
    pub quantity: u32,
    /// Price of one unit, in minor units.
    pub unit_price_minor: i64,
    /// `quantity × unit_price_minor`.
    pub line_total_minor: i64,
}

/// Data of the `order_rejected` template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRejectedData {
    /// The caller's order id.
    pub order_id: String,
    /// Whom to address.
    pub customer_name: String,
    /// Why the order was not accepted, for a person.
    pub reason: String,
}

/// A template with its checked data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateData {
    /// `order_confirmation`.
    OrderConfirmation(OrderConfirmationData),
    /// `order_rejected`.
    OrderRejected(OrderRejectedData),
}

/// What an email says: a template to render, or literal parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Render a shipped template.
    Template(TemplateData),
    /// Given as is.
    Literal(Rendered),
}

/// A validated `email.send`: whom to send to and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// Recipient.
    pub to: EmailAddress,
    /// What it says.
    pub content: Content,
}

impl TryFrom<&SendEmail> for Email {
    type Error = ValidationErrors;

    /// Checks every rule and reports every broken one.
    fn try_from(args: &SendEmail) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::new();
        let to = EmailAddress::parse(&args.to)
            .map_err(|e| errors.add("to", e))
            .ok();
        let content = match (&args.template, &args.subject) {
            (Some(_), Some(_)) => {
                errors.add(
                    "subject",
                    "give either template (with data) or subject (with text and/or html), not both",
                );
                None
            }
            (None, None) => {
                errors.add(
                    "template",
                    "give either template (with data) or subject (with text and/or html)",
                );
                None
            }
            (Some(template), None) => {
                for (field, given) in [("text", &args.text), ("html", &args.html)] {
                    if given.is_some() {
                        errors.add(field, "only with subject: a template renders its own body");
                    }
                }
                let data = args
                    .data
                    .clone()
                    .unwrap_or_else(|| Value::Object(Default::default()));
                match template_data(*template, &data) {
                    Ok(data) => Some(Content::Template(data)),
                    Err(e) => {
                        errors.extend(e.prefixed("data"));
                        None
                    }
                }
            }
            (None, Some(subject)) => {
                if args.data.is_some() {
                    errors.add("data", "only with template");
                }
                if let Err(e) = check_subject(subject) {
                    errors.add("subject", e);
                }
                if args.text.is_none() && args.html.is_none() {
                    errors.add("text", "give text, html or both with subject");
                }
                for (field, given) in [("text", &args.text), ("html", &args.html)] {
                    if given.as_ref().is_some_and(|b| b.len() > MAX_BODY_BYTES) {
                        errors.add(field, format!("must be at most {MAX_BODY_BYTES} bytes"));
                    }
                }
                Some(Content::Literal(Rendered {
                    subject: subject.clone(),
                    text: args.text.clone(),
                    html: args.html.clone(),
                }))
            }
        };
        errors.into_result()?;
        match (to, content) {
            (Some(to), Some(content)) => Ok(Email { to, content }),
            // Unreachable: each `None` above recorded an error.
            _ => Err(ValidationErrors::one("to", "is invalid")),
        }
    }
}

fn template_data(template: Template, data: &Value) -> Result<TemplateData, ValidationErrors> {
    Ok(match template {
        Template::OrderConfirmation => TemplateData::OrderConfirmation(decode_value(data)?),
        Template::OrderRejected => TemplateData::OrderRejected(decode_value(data)?),
    })
}

fn check_subject(subject: &str) -> Result<(), String> {
    if subject.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(format!("must be at most {MAX_SUBJECT_CHARS} characters"));
    }
    if subject.chars().any(char::is_control) {
        return Err("must be one line, without control characters".into());
    }
    Ok(())
}

/// An email's parts, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
}

/// A template failed to render (a bug in a shipped template, never bad input: data is
/// checked at intake).
#[derive(Debug, thiserror::Error)]
#[error("rendering template {template}: {source}")]
pub struct RenderError {
    /// The template file.
    pub template: String,
    /// What minijinja reported.
    #[source]
    pub source: minijinja::Error,
}

/// The templates, embedded: `(name, source)`. Names ending in `.html.j2` are
/// HTML-escaped; the others are not.
const TEMPLATES: [(&str, &str); 6] = [
    (
        "order_confirmation.subject.j2",
        include_str!("../../templates/order_confirmation.subject.j2"),
    ),
    (
        "order_confirmation.txt.j2",
        include_str!("../../templates/order_confirmation.txt.j2"),
    ),
    (
        "order_confirmation.html.j2",
        include_str!("../../templates/order_confirmation.html.j2"),
    ),
    (
        "order_rejected.subject.j2",
        include_str!("../../templates/order_rejected.subject.j2"),
    ),
    (
        "order_rejected.txt.j2",
        include_str!("../../templates/order_rejected.txt.j2"),
    ),
    (
        "order_rejected.html.j2",
        include_str!("../../templates/order_rejected.html.j2"),
    ),
];

fn environment() -> Result<Environment<'static>, RenderError> {
    let mut env = Environment::new();
    // A variable a template names but the data lacks is an error, not an empty string.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_filter("money", |minor: i64, currency: &str| {
        format_money(minor, currency)
    });
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .map_err(|source| RenderError {
                template: name.to_owned(),
                source,
            })?;
    }
    Ok(env)
}

/// Renders `content` into its parts. Pure: the same content always renders the same.
///
/// # Errors
/// When a shipped template fails to render (a bug).
pub fn render(content: &Content) -> Result<Rendered, RenderError> {
    let (template, context) = match content {
        Content::Literal(rendered) => return Ok(rendered.clone()),
        Content::Template(TemplateData::OrderConfirmation(data)) => (
            Template::OrderConfirmation,
            minijinja::Value::from(Serde(data)),
        ),
        Content::Template(TemplateData::OrderRejected(data)) => {
            (Template::OrderRejected, minijinja::Value::from(Serde(data)))
        }
    };
    let env = environment()?;
    let part = |suffix: &str| {
        let name = format!("{}.{suffix}.j2", template.as_str());
        env.get_template(&name)
            .and_then(|t| t.render(context.clone()))
            .map_err(|source| RenderError {
                template: name,
                source,
            })
    };
    // A subject is one line: fold whatever whitespace the template left.
    let subject = part("subject")?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Rendered {
        subject,
        text: Some(part("txt")?),
        html: Some(part("html")?),
    })
}

/// The Message-ID of job `job`'s email: stable across attempts, so a duplicate sent
/// in the crash window is recognisable downstream.
pub fn message_id(job: JobId) -> String {
    format!("<{job}@conveyor>")
}

/// One message, ready for a [`Mailer`]. The sender is the mailer's to choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    /// `Message-ID` header, angle brackets included (see [`message_id`]).
    pub message_id: String,
    /// Recipient.
    pub to: EmailAddress,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub text: Option<String>,
    /// HTML body.
    pub html: Option<String>,
}

/// Why a message was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// Worth retrying: an SMTP 4xx reply, a connection failure, a timeout.
    #[error("temporary mail failure: {0}")]
    Transient(String),
    /// Will fail again: an SMTP 5xx reply (the server's reply is the message), or a
    /// message the transport cannot build.
    #[error("mail server refused the message: {0}")]
    Permanent(String),
}

/// Sends email. The worker's adapter speaks SMTP; tests may fake it.
pub trait Mailer: Send + Sync + 'static {
    /// Sends `email` once.
    ///
    /// # Errors
    /// [`MailError::Transient`] or [`MailError::Permanent`].
    fn send(&self, email: &OutgoingEmail) -> impl Future<Output = Result<(), MailError>> + Send;
}

/// Where sent messages are recorded, by job id (the `emails` table).
pub trait SentLog: Send + Sync + 'static {
    /// Whether job `job`'s message is on record as sent.
    ///
    /// # Errors
    /// When the database fails.
    fn was_sent(&self, job: JobId) -> impl Future<Output = Result<bool, LedgerError>> + Send;

    /// Records that job `job` sent `email` (a second record for one job is ignored).
    ///
    /// # Errors
    /// When the database fails.
    fn record_sent(
        &self,
        job: JobId,
        email: &OutgoingEmail,
    ) -> impl Future<Output = Result<(), LedgerError>> + Send;
}

/// Runs [`SendEmail`]: skips a message already on record, otherwise renders, sends and
/// records it. Completes with `{message_id, to, subject}`.
#[derive(Debug, Clone)]
pub struct SendEmailHandler<M, L> {
    mailer: M,
    log: L,
}

impl<M: Mailer, L: SentLog> SendEmailHandler<M, L> {
    /// A handler sending through `mailer` and recording in `log`.
    pub fn new(mailer: M, log: L) -> Self {
        Self { mailer, log }
    }
}

impl<M: Mailer, L: SentLog> Handler for SendEmailHandler<M, L> {
    type Args = SendEmail;

    async fn handle(&self, job: Job<SendEmail>) -> Result<Value, JobError> {
        let email = Email::try_from(&job.args).map_err(JobError::fail)?;
        let rendered = render(&email.content).map_err(JobError::fail)?;
        let outgoing = OutgoingEmail {
            message_id: message_id(job.meta.id),
            to: email.to,
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
        };
        let result = json!({
            "message_id": outgoing.message_id,
            "to": outgoing.to.as_str(),
            "subject": outgoing.subject,
        });
        if self
            .log
            .was_sent(job.meta.id)
            .await
            .map_err(JobError::retry)?
        {
            tracing::info!(message_id = %outgoing.message_id, "email already sent by an earlier attempt; not sending again");
            return Ok(result);
        }
        match self.mailer.send(&outgoing).await {
            Ok(()) => {}
            Err(e @ MailError::Transient(_)) => return Err(JobError::retry(e)),
            Err(e @ MailError::Permanent(_)) => return Err(JobError::fail(e)),
        }
        // The double-send window: sent, not yet recorded. A failure here retries the
        // job, which sends again with the same Message-ID.
        self.log
            .record_sent(job.meta.id, &outgoing)
            .await
            .map_err(JobError::retry)?;
        tracing::info!(message_id = %outgoing.message_id, "email sent");
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::JobMeta;
    use crate::registry::KindSpec;
    use std::sync::{Arc, Mutex};

    fn fields(spec_args: Value) -> Vec<String> {
        KindSpec::of::<SendEmail>()
            .validate(&spec_args)
            .err()
            .map(|e| e.0.into_iter().map(|f| f.field).collect())
            .unwrap_or_default()
    }

    fn confirmation() -> OrderConfirmationData {
        OrderConfirmationData {
            order_id: "A-1".into(),
            customer_name: "Ada <Lovelace>".into(),
            currency: "USD".into(),
            lines: vec![
                ConfirmationLine {
                    sku: "MUG".into(),
                    name: "Mug".into(),
                    quantity: 2,
                    unit_price_minor: 1250,
                    line_total_minor: 2500,
                },
                ConfirmationLine {
                    sku: "TEE".into(),
                    name: "T-shirt".into(),
                    quantity: 1,
                    unit_price_minor: 600,
                    line_total_minor: 600,
                },
            ],
            total_minor: 3100,
        }
    }

    #[test]
    fn a_literal_email_or_a_template_with_its_data_is_valid() {
        assert!(fields(json!({"to": "a@example.com", "subject": "Hi", "text": "x"})).is_empty());
        assert!(
            fields(json!({"to": "a@example.com", "subject": "Hi", "html": "<p>x</p>"})).is_empty()
        );
        let data = serde_json::to_value(confirmation()).unwrap();
        assert!(
            fields(json!({"to": "a@example.com", "template": "order_confirmation", "data": data}))
                .is_empty()
        );
    }

    #[test]
    fn every_broken_rule_is_reported_with_its_field() {
        assert_eq!(
            fields(json!({"to": "nope", "subject": "Hi", "template": "order_rejected"})),
            ["to", "subject"]
        );
        assert_eq!(fields(json!({"to": "a@example.com"})), ["template"]);
        assert_eq!(
            fields(json!({"to": "a@example.com", "subject": "Hi"})),
            ["text"]
        );
        assert_eq!(
            fields(
                json!({"to": "a@example.com", "subject": "a\r\nBcc: x@example.com", "text": "x"})
            ),
            ["subject"]
        );
        assert_eq!(
            fields(json!({"to": "a@example.com", "subject": "x".repeat(999), "text": "x"})),
            ["subject"]
        );
        assert_eq!(
            fields(json!({"to": "a@example.com", "subject": "Hi", "text": "x", "data": {}})),
            ["data"]
        );
        assert_eq!(
            fields(
                json!({"to": "a@example.com", "template": "order_rejected", "text": "x",
                "data": {"order_id": "A", "customer_name": "B", "reason": "C"}})
            ),
            ["text"]
        );
    }

    #[test]
    fn template_data_is_checked_against_the_template() {
        assert_eq!(
            fields(
                json!({"to": "a@example.com", "template": "order_rejected", "data": {"order_id": "A"}})
            ),
            ["data.customer_name"]
        );
        assert_eq!(
            fields(
                json!({"to": "a@example.com", "template": "order_confirmation",
                "data": {"order_id": "A", "customer_name": "B", "currency": "USD", "total_minor": 1,
                         "lines": [{"sku": "S", "name": "N", "quantity": "two", "unit_price_minor": 1, "line_total_minor": 2}]}})
            ),
            ["data.lines[0].quantity"]
        );
        assert_eq!(
            fields(json!({"to": "a@example.com", "template": "no_such_template"})),
            ["template"]
        );
    }

    #[test]
    fn the_confirmation_shows_every_line_and_the_total() {
        let rendered = render(&Content::Template(TemplateData::OrderConfirmation(
            confirmation(),
        )))
        .unwrap();

        assert_eq!(rendered.subject, "Your order A-1 is confirmed");
        let text = rendered.text.unwrap();
        for expected in [
            "A-1",
            "MUG",
            "Mug",
            "2 x 12.50 USD",
            "25.00 USD",
            "TEE",
            "6.00 USD",
            "Total: 31.00 USD",
        ] {
            assert!(text.contains(expected), "text lacks {expected:?}:\n{text}");
        }
        assert!(text.contains("Ada <Lovelace>"), "plain text is not escaped");
        let html = rendered.html.unwrap();
        assert!(
            html.contains("Ada &lt;Lovelace&gt;"),
            "html is escaped:\n{html}"
        );
        assert!(html.contains("31.00 USD"));
        assert!(html.contains("<td>MUG</td>"), "{html}");
    }

    #[test]
    fn the_rejection_shows_the_reason() {
        let rendered = render(&Content::Template(TemplateData::OrderRejected(
            OrderRejectedData {
                order_id: "A-2".into(),
                customer_name: "Ada".into(),
                reason: "SKU \"MUG\": 3 requested, 1 in stock".into(),
            },
        )))
        .unwrap();

        assert_eq!(rendered.subject, "Your order A-2 could not be accepted");
        assert!(
            rendered
                .text
                .unwrap()
                .contains("SKU \"MUG\": 3 requested, 1 in stock")
        );
        assert!(rendered.html.unwrap().contains("3 requested, 1 in stock"));
    }

    #[test]
    fn every_shipped_template_compiles() {
        let env = environment().unwrap();
        for (name, _) in TEMPLATES {
            assert!(env.get_template(name).is_ok(), "{name}");
        }
    }

    #[derive(Clone, Default)]
    struct Fake {
        sent: Arc<Mutex<Vec<OutgoingEmail>>>,
        recorded: Arc<Mutex<Vec<JobId>>>,
        answer: Option<MailError>,
    }

    impl Mailer for Fake {
        async fn send(&self, email: &OutgoingEmail) -> Result<(), MailError> {
            if let Some(e) = &self.answer {
                return Err(e.clone());
            }
            self.sent.lock().unwrap().push(email.clone());
            Ok(())
        }
    }

    impl SentLog for Fake {
        async fn was_sent(&self, job: JobId) -> Result<bool, LedgerError> {
            Ok(self.recorded.lock().unwrap().contains(&job))
        }

        async fn record_sent(&self, job: JobId, _email: &OutgoingEmail) -> Result<(), LedgerError> {
            self.recorded.lock().unwrap().push(job);
            Ok(())
        }
    }

    fn job(args: Value) -> Job<SendEmail> {
        Job {
            meta: JobMeta {
                id: JobId::new(),
                kind: SendEmail::KIND.into(),
                queue: "emails".into(),
                attempt: 1,
                max_attempts: 3,
                created_at: chrono::Utc::now(),
                worker: crate::WorkerId::new(),
            },
            args: serde_json::from_value(args).unwrap(),
        }
    }

    #[tokio::test]
    async fn a_message_is_sent_once_with_a_message_id_from_the_job() {
        let fake = Fake::default();
        let handler = SendEmailHandler::new(fake.clone(), fake.clone());
        let job = job(json!({"to": "a@example.com", "subject": "Hi", "text": "Hello"}));

        let first = handler.handle(job.clone()).await.unwrap();
        let again = handler.handle(job.clone()).await.unwrap();

        assert_eq!(first, again);
        assert_eq!(first["message_id"], format!("<{}@conveyor>", job.meta.id));
        let sent = fake.sent.lock().unwrap();
        assert_eq!(sent.len(), 1, "a recorded message is not sent again");
        assert_eq!(sent[0].message_id, message_id(job.meta.id));
    }

    #[tokio::test]
    async fn a_temporary_failure_retries_and_a_permanent_one_fails_with_the_reply() {
        let args = json!({"to": "a@example.com", "subject": "Hi", "text": "Hello"});
        let transient = Fake {
            answer: Some(MailError::Transient("451 try later".into())),
            ..Fake::default()
        };
        let permanent = Fake {
            answer: Some(MailError::Permanent("550 no such mailbox".into())),
            ..Fake::default()
        };

        let retry = SendEmailHandler::new(transient.clone(), transient.clone())
            .handle(job(args.clone()))
            .await
            .unwrap_err();
        let fail = SendEmailHandler::new(permanent.clone(), permanent.clone())
            .handle(job(args))
            .await
            .unwrap_err();

        assert!(matches!(retry, JobError::Retry(_)), "{retry:?}");
        assert!(
            matches!(&fail, JobError::Fail(e) if e.to_string().contains("550 no such mailbox")),
            "{fail:?}"
        );
        assert!(transient.recorded.lock().unwrap().is_empty());
        assert!(permanent.recorded.lock().unwrap().is_empty());
    }
}
