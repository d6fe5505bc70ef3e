//! The development mailbox: messages `conveyor run` accepted on its loopback SMTP
//! listener when no SMTP server is configured, kept in `dev_mailbox` and read by
//! `conveyor mail list|show`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Store;
use crate::error::Error;

/// A message as the listener received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevMail {
    /// The envelope's sender (`MAIL FROM`).
    pub from: String,
    /// The envelope's recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The whole message: headers and body.
    pub raw: String,
}

/// A message in the development mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DevMail {
    /// Its number, in order of arrival.
    pub id: i64,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
    /// The envelope's sender.
    #[sqlx(rename = "mail_from")]
    pub from: String,
    /// The envelope's recipients.
    #[sqlx(rename = "rcpt_to")]
    pub to: Vec<String>,
    /// Its `Subject` header, as sent (possibly RFC 2047 encoded).
    pub subject: Option<String>,
    /// Its `Message-ID` header.
    pub message_id: Option<String>,
    /// The whole message (empty in listings).
    pub raw: String,
}

impl Store {
    /// Keeps a received message; its number.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn deliver_dev_mail(&self, mail: &NewDevMail) -> Result<i64, Error> {
        // Postgres text cannot hold NUL.
        let raw = mail.raw.replace('\0', "");
        let id = sqlx::query_scalar(
            "INSERT INTO dev_mailbox (mail_from, rcpt_to, subject, message_id, raw) \
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(mail.from.replace('\0', ""))
        .bind(&mail.to)
        .bind(header(&raw, "subject"))
        .bind(header(&raw, "message-id"))
        .bind(&raw)
        .fetch_one(self.pool())
        .await?;
        Ok(id)
    }

    /// The newest `limit` messages, newest first, without their text.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn dev_mails(&self, limit: u32) -> Result<Vec<DevMail>, Error> {
        let mails = sqlx::query_as(
            "SELECT id, received_at, mail_from, rcpt_to, subject, message_id, '' AS raw \
             FROM dev_mailbox ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        Ok(mails)
    }

    /// One message with its text.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn dev_mail(&self, id: i64) -> Result<Option<DevMail>, Error> {
        let mail = sqlx::query_as(
            "SELECT id, received_at, mail_from, rcpt_to, subject, message_id, raw \
             FROM dev_mailbox WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(mail)
    }
}

/// The value of the first header `name` (case-insensitive) in the message's header
/// section, unfolded.
fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .split("\n\n")
        .next()
        .unwrap_or_default();
    let mut value: Option<String> = None;
    for line in head.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(found) = &mut value {
            if line.starts_with([' ', '\t']) {
                found.push(' ');
                found.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((key, rest)) = line.split_once(':')
            && key.eq_ignore_ascii_case(name)
        {
            value = Some(rest.trim().to_owned());
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::header;

    #[test]
    fn headers_are_found_case_insensitively_and_unfolded_in_the_header_section_only() {
        let raw = "From: a@example.com\r\nSUBJECT: Your order\r\n A-1001\r\nMessage-ID: <x@y>\r\n\r\nSubject: not a header\r\n";

        assert_eq!(header(raw, "subject").as_deref(), Some("Your order A-1001"));
        assert_eq!(header(raw, "message-id").as_deref(), Some("<x@y>"));
        assert_eq!(header(raw, "to"), None);
    }
}
