//! `conveyor webhooks add|list|show|remove`: webhook subscriptions in the database, the
//! same way as `POST/GET/DELETE /v1/webhooks`. A new subscription's signing secret is
//! printed once.

use access::Principal;
use access::webhooks::{self, CreateWebhook, CreatedWebhook, WebhookRequestError};
use anyhow::{Context, bail};
use serde::Serialize;
use store::{Store, SubscriptionRecord};
use uuid::Uuid;

use crate::cli::WebhooksCommand;
use crate::config::Settings;
use crate::ops::default_actor;
use crate::ops::render::{Format, Lines, Text, View, print, table};

/// Runs a `webhooks` subcommand.
///
/// # Errors
/// An invalid request (each field named), an unknown id, or an unreachable database.
pub async fn webhooks(
    store: &Store,
    settings: &Settings,
    command: WebhooksCommand,
) -> anyhow::Result<()> {
    match command {
        WebhooksCommand::Add {
            url,
            kind,
            states,
            description,
            max_attempts,
            by,
            json,
        } => {
            let request = CreateWebhook {
                url,
                kind,
                states,
                description,
                max_attempts,
            };
            let created = add(store, settings, request, by).await?;
            print(&created, Format::json_if(json))
        }
        WebhooksCommand::List { json } => {
            let webhooks = store
                .subscriptions()
                .await
                .context("cannot read the webhooks")?;
            print(&WebhookList { webhooks }, Format::json_if(json))
        }
        WebhooksCommand::Show { id, json } => {
            let id = parse_id(&id)?;
            let Some(sub) = store.subscription(id).await? else {
                bail!("no webhook with id {id}");
            };
            print(
                &WebhookList {
                    webhooks: vec![sub],
                },
                Format::json_if(json),
            )
        }
        WebhooksCommand::Remove { id, by } => {
            let id = parse_id(&id)?;
            let context = Principal::cli(by.unwrap_or_else(default_actor)).audit(None);
            match store.delete_subscription(id, &context).await? {
                Some(r) => print(
                    &Lines::one(format!(
                        "{id}: removed ({}); no more deliveries are made to it",
                        r.url
                    )),
                    Format::Table,
                ),
                None => bail!("no webhook with id {id}"),
            }
        }
    }
}

/// `webhooks add`: the secret is in the value, shown once.
async fn add(
    store: &Store,
    settings: &Settings,
    request: CreateWebhook,
    by: Option<String>,
) -> anyhow::Result<CreatedWebhook> {
    let creator = Principal::cli(by.unwrap_or_else(default_actor));
    webhooks::create_webhook(
        store,
        &creator,
        &creator.audit(None),
        &settings.webhooks.policy(),
        request,
    )
    .await
    .map_err(|e| match e {
        // Each field's error under the flag that set it.
        WebhookRequestError::Invalid(errors) => anyhow::anyhow!(
            "{}",
            errors
                .0
                .iter()
                .map(|e| format!(
                    "--{} {}",
                    e.field
                        .split('[')
                        .next()
                        .unwrap_or(&e.field)
                        .replace('_', "-"),
                    e.message
                ))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        other => anyhow::Error::new(other),
    })
}

impl View for CreatedWebhook {
    fn text(&self) -> Text {
        let r = &self.record;
        let mut text = Text::default();
        text.line(format!("secret: {}", self.secret));
        text.line(format!("id:     {}", r.id));
        text.line(format!(
            "url: {}  kind: {}  states: {}  max attempts: {}",
            r.url,
            r.kind,
            r.states.join(","),
            r.max_attempts
        ));
        text.note("");
        text.note(
            "Give the secret to the receiver: it verifies each delivery's webhook-signature with it. It is shown only now.",
        );
        text.note(format!(
            "Stop deliveries with `conveyor webhooks remove {}`.",
            r.id
        ));
        text
    }
}

/// `webhooks list` / `show`: subscriptions, never their secrets (JSON: the array).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct WebhookList {
    /// The subscriptions, newest first.
    pub webhooks: Vec<SubscriptionRecord>,
}

impl View for WebhookList {
    fn text(&self) -> Text {
        let mut text = Text {
            out: render_webhooks(&self.webhooks),
            notes: String::new(),
        };
        if self.webhooks.is_empty() {
            text.note("no webhooks; add one with `conveyor webhooks add --url URL`");
        }
        text
    }
}

fn parse_id(id: &str) -> anyhow::Result<Uuid> {
    id.parse()
        .with_context(|| format!("{id:?} is not a webhook id (a UUID)"))
}

/// The `webhooks list` table: one subscription a line, never its secret.
pub fn render_webhooks(subs: &[SubscriptionRecord]) -> String {
    let rows: Vec<Vec<String>> = subs
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.url.clone(),
                s.kind.clone(),
                s.states.join(","),
                s.max_attempts.to_string(),
                s.created_by.clone(),
                s.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "URL",
            "KIND",
            "STATES",
            "ATTEMPTS",
            "CREATED BY",
            "DESCRIPTION",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_table_shows_the_filter_but_no_secret() {
        let sub = SubscriptionRecord {
            id: Uuid::nil(),
            url: "https://example.com/hook".into(),
            kind: "order.*".into(),
            states: vec!["completed".into(), "dead".into()],
            description: None,
            max_attempts: 8,
            created_at: chrono::Utc::now(),
            created_by: "ana".into(),
        };
        let text = WebhookList {
            webhooks: vec![sub],
        }
        .text();
        assert!(
            text.out.contains("order.*") && text.out.contains("completed,dead"),
            "{}",
            text.out
        );
        assert!(!text.out.contains("whsec_"));
        assert!(text.out.lines().next().unwrap().starts_with("ID"));
    }
}
