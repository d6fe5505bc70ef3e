//! `conveyor keys create|list|revoke`: API keys in the database, the same way as
//! `POST/GET/DELETE /v1/keys`. A created key is printed once; only its hash is kept.

use access::Principal;
use access::manage::{self, CreateKey, KeyRequestError};
use anyhow::{Context, bail};
use chrono::Utc;
use store::{ApiKeyRecord, RevokeOutcome, Store};
use uuid::Uuid;

use crate::cli::KeysCommand;
use crate::ops::render::table;
use crate::ops::{default_actor, print_json};

/// Runs a `keys` subcommand other than `new`.
///
/// # Errors
/// An invalid request (each field named), an unknown id, or an unreachable database.
pub async fn keys(store: &Store, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::New => bail!("`keys new` needs no database; it is handled by main"),
        KeysCommand::Create {
            name,
            role,
            kinds,
            queues,
            expires,
            by,
            json,
        } => {
            let creator = Principal::cli(by.unwrap_or_else(default_actor));
            let created = manage::create_key(
                store,
                &creator,
                &creator.audit(None),
                CreateKey {
                    name,
                    role,
                    kinds,
                    queues,
                    expires,
                },
                Utc::now(),
            )
            .await
            .map_err(|e| match e {
                KeyRequestError::Invalid(errors) => anyhow::anyhow!(
                    "{}",
                    errors
                        .0
                        .iter()
                        .map(|e| format!(
                            "--{} {}",
                            e.field.split('[').next().unwrap_or(&e.field),
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
            println!("key:  {}", created.key.expose());
            println!("id:   {}", r.id);
            println!(
                "name: {}  role: {}  kinds: {}  queues: {}  expires: {}",
                r.name,
                r.role,
                list(&r.kinds),
                list(&r.queues),
                r.expires_at
                    .map_or_else(|| "never".into(), |t| t.to_rfc3339())
            );
            eprintln!();
            eprintln!(
                "Give the key to its holder (Authorization: Bearer <key>); it is shown only now."
            );
            eprintln!(
                "Running intakes accept it within a second; revoke it with `conveyor keys revoke {}`.",
                r.id
            );
            Ok(())
        }
        KeysCommand::List { json } => {
            let keys = store.keys().await.context("cannot read the keys")?;
            if json {
                return print_json(&keys);
            }
            print!("{}", render_keys(&keys, Utc::now()));
            if keys.is_empty() {
                eprintln!(
                    "no keys; create one with `conveyor keys create --name NAME --role ROLE`"
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { id, by } => {
            let id: Uuid = id
                .parse()
                .with_context(|| format!("{id:?} is not a key id (a UUID)"))?;
            let context = Principal::cli(by.unwrap_or_else(default_actor)).audit(None);
            match store.revoke_key(id, &context).await? {
                RevokeOutcome::Revoked(r) => {
                    println!(
                        "{id}: revoked ({}); running intakes refuse it within a second",
                        r.name
                    );
                    Ok(())
                }
                RevokeOutcome::AlreadyRevoked(r) => {
                    bail!("key {id} ({}) was already revoked", r.name)
                }
                RevokeOutcome::NotFound => bail!("no key with id {id}"),
            }
        }
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "*".into()
    } else {
        items.join(",")
    }
}

/// The `keys list` table: one key a line, with its state at `now`.
pub fn render_keys(keys: &[ApiKeyRecord], now: chrono::DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            let state = if k.revoked_at.is_some() {
                "revoked"
            } else if k.expires_at.is_some_and(|t| t <= now) {
                "expired"
            } else {
                "active"
            };
            vec![
                k.id.to_string(),
                k.name.clone(),
                k.role.clone(),
                list(&k.kinds),
                list(&k.queues),
                state.to_owned(),
                k.expires_at.map_or_else(
                    || "never".into(),
                    |t| t.format("%Y-%m-%d %H:%M").to_string(),
                ),
                k.last_used_at
                    .map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "NAME",
            "ROLE",
            "KINDS",
            "QUEUES",
            "STATE",
            "EXPIRES",
            "LAST USED",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_table_shows_state_and_limits_but_no_secret() {
        let now = Utc::now();
        let key = ApiKeyRecord {
            id: Uuid::nil(),
            name: "web".into(),
            role: "producer".into(),
            kinds: vec!["order.*".into()],
            queues: vec![],
            created_at: now,
            created_by: "ana".into(),
            expires_at: Some(now - chrono::Duration::hours(1)),
            last_used_at: None,
            revoked_at: None,
            revoked_by: None,
        };
        let text = render_keys(&[key], now);
        assert!(text.contains("order.*"), "{text}");
        assert!(text.contains("expired"), "{text}");
        assert!(text.lines().next().unwrap().starts_with("ID"));
    }
}
