//! `conveyor mail list|show`: the development mailbox, where `conveyor run` delivers
//! email when no SMTP server is configured.

use anyhow::Context;
use serde::Serialize;
use store::{DevMail, Store};

use crate::cli::MailCommand;
use crate::ops::render::{Format, Text, View, or_dash, print, short_time, table, truncate};

/// Runs a `mail` subcommand.
///
/// # Errors
/// An unreachable database, or no message with the id.
pub async fn mail(store: &Store, command: MailCommand) -> anyhow::Result<()> {
    match command {
        MailCommand::List { limit, json } => {
            let mails = store
                .dev_mails(limit)
                .await
                .context("cannot read the development mailbox")?;
            print(&MailList(mails), Format::json_if(json))
        }
        MailCommand::Show { id, json } => {
            let mail = store
                .dev_mail(id)
                .await
                .context("cannot read the development mailbox")?
                .with_context(|| format!("no message {id} in the development mailbox"))?;
            print(&MailShow(mail), Format::json_if(json))
        }
    }
}

/// `mail list`: the messages, newest first (JSON: the array, without their text).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct MailList(pub Vec<DevMail>);

impl View for MailList {
    fn text(&self) -> Text {
        let rows: Vec<Vec<String>> = self
            .0
            .iter()
            .map(|m| {
                vec![
                    m.id.to_string(),
                    short_time(m.received_at),
                    truncate(&m.to.join(", "), 40),
                    truncate(&or_dash(m.subject.as_deref()), 60),
                ]
            })
            .collect();
        let mut text = Text {
            out: table(&["ID", "RECEIVED", "TO", "SUBJECT"], &rows),
            notes: String::new(),
        };
        if self.0.is_empty() {
            text.note(
                "the development mailbox is empty (`conveyor run` without smtp.host delivers here)",
            );
        } else {
            text.note("`conveyor mail show ID` prints a message");
        }
        text
    }
}

/// `mail show`: one message with its envelope and its whole text.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct MailShow(pub DevMail);

impl View for MailShow {
    fn text(&self) -> Text {
        let m = &self.0;
        let mut text = Text::default();
        text.line(format!("id:        {}", m.id));
        text.line(format!("received:  {}", short_time(m.received_at)));
        text.line(format!("from:      {}", m.from));
        text.line(format!("to:        {}", m.to.join(", ")));
        text.line(format!("subject:   {}", or_dash(m.subject.as_deref())));
        text.line("");
        text.out.push_str(&m.raw.replace("\r\n", "\n"));
        text
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn mail() -> DevMail {
        DevMail {
            id: 7,
            received_at: chrono::Utc
                .with_ymd_and_hms(2026, 11, 25, 10, 0, 0)
                .unwrap(),
            from: "conveyor@localhost".into(),
            to: vec!["ada@example.com".into()],
            subject: Some("Order A-1001 confirmed".into()),
            message_id: Some("<x@conveyor>".into()),
            raw: "Subject: Order A-1001 confirmed\r\n\r\nThank you.\r\n".into(),
        }
    }

    #[test]
    fn the_list_is_a_table_of_recipients_and_subjects() {
        let text = MailList(vec![mail()]).text();

        assert_eq!(
            text.out,
            "ID  RECEIVED             TO               SUBJECT\n\
             7   2026-11-25 10:00:00  ada@example.com  Order A-1001 confirmed\n"
        );
    }

    #[test]
    fn show_prints_the_envelope_then_the_message_with_plain_newlines() {
        let text = MailShow(mail()).text();

        assert!(text.out.starts_with("id:        7\n"), "{}", text.out);
        assert!(
            text.out
                .ends_with("\nSubject: Order A-1001 confirmed\n\nThank you.\n"),
            "{}",
            text.out
        );
    }
}
