//! `conveyor webhooks add|list|show|remove`: webhook subscriptions in the database, the
//! same way as `POST/GET/DELETE /v1/webhooks`. A new subscription's signing secret is
//! printed once.

use access::Principal;
use access::webhooks::{self, CreateWebhook, WebhookRequestError};
use anyhow::{Context, bail};
use store::{Store, SubscriptionRecord};
use uuid::Uuid;

use crate::cli::WebhooksCommand;
use crate::config::Settings;
use crate::ops::render::table;
use crate::ops::{default_actor, print_json};

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
            let creator = Principal::cli(by.unwrap_or_else(default_actor));
            let created = webhooks::create_webhook(
                store,
                &creator,
                &creator.audit(None),
                &settings.webhooks.policy(),
                CreateWebhook {
                    url,
                    kind,
                    states,
                    description,
                    max_attempts,
                },
            )
            .await
            .map_err(|e| match e {
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
            })?;
            if json {
                return print_json(&created);
            }
            let r = &created.record;
            println!("secret: {}", created.secret);
            println!("id:     {}", r.id);
            println!(
                "url: {}  kind: {}  states: {}  max attempts: {}",
                r.url,
                r.kind,
                r.states.join(","),
                r.max_attempts
            );
            eprintln!();
            eprintln!(
                "Give the secret to the receiver: it verifies each delivery's webhook-signature with it. It is shown only now."
            );
            eprintln!("Stop deliveries with `conveyor webhooks remove {}`.", r.id);
            Ok(())
        }
        WebhooksCommand::List { json } => {
            let subs = store
                .subscriptions()
                .await
                .context("cannot read the webhooks")?;
            if json {
                return print_json(&subs);
            }
            print!("{}", render_webhooks(&subs));
            if subs.is_empty() {
                eprintln!("no webhooks; add one with `conveyor webhooks add --url URL`");
            }
            Ok(())
        }
        WebhooksCommand::Show { id, json } => {
            let id = parse_id(&id)?;
            let Some(sub) = store.subscription(id).await? else {
                bail!("no webhook with id {id}");
            };
            if json {
                return print_json(&sub);
            }
            print!("{}", render_webhooks(std::slice::from_ref(&sub)));
            Ok(())
        }
        WebhooksCommand::Remove { id, by } => {
            let id = parse_id(&id)?;
            let context = Principal::cli(by.unwrap_or_else(default_actor)).audit(None);
            match store.delete_subscription(id, &context).await? {
                Some(r) => {
                    println!(
                        "{id}: removed ({}); no more deliveries are made to it",
                        r.url
                    );
                    Ok(())
                }
                None => bail!("no webhook with id {id}"),
            }
        }
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
        let text = render_webhooks(&[sub]);
        assert!(
            text.contains("order.*") && text.contains("completed,dead"),
            "{text}"
        );
        assert!(!text.contains("whsec_"));
        assert!(text.lines().next().unwrap().starts_with("ID"));
    }
}
