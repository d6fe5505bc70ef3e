//! `conveyor keys create|list|revoke`: API keys in the database, the same way as
//! `POST/GET/DELETE /v1/keys`. A created key is printed once; only its hash is kept.

use access::Principal;
use access::manage::{self, CreateKey, CreatedKey, KeyRequestError};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::Serialize;
use store::{ApiKeyRecord, RevokeOutcome, Store};
use uuid::Uuid;

use crate::cli::KeysCommand;
use crate::ops::default_actor;
use crate::ops::render::{Format, Text, View, print, table};

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
            let request = CreateKey {
                name,
                role,
                kinds,
                queues,
                expires,
            };
            print(&create(store, request, by).await?, Format::json_if(json))
        }
        KeysCommand::List { json } => {
            let keys = store.keys().await.context("cannot read the keys")?;
            print(
                &KeyList {
                    keys,
                    now: Utc::now(),
                },
                Format::json_if(json),
            )
        }
        KeysCommand::Revoke { id, by } => print(&revoke(store, &id, by).await?, Format::Table),
    }
}

/// `keys create`: the key is in the value, shown once.
async fn create(
    store: &Store,
    request: CreateKey,
    by: Option<String>,
) -> anyhow::Result<CreatedKey> {
    let creator = Principal::cli(by.unwrap_or_else(default_actor));
    manage::create_key(store, &creator, &creator.audit(None), request, Utc::now())
        .await
        .map_err(|e| match e {
            // Each field's error under the flag that set it.
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
        })
}

impl View for CreatedKey {
    fn text(&self) -> Text {
        let r = &self.record;
        let mut text = Text::default();
        text.line(format!("key:  {}", self.key.expose()));
        text.line(format!("id:   {}", r.id));
        text.line(format!(
            "name: {}  role: {}  kinds: {}  queues: {}  expires: {}",
            r.name,
            r.role,
            list(&r.kinds),
            list(&r.queues),
            r.expires_at
                .map_or_else(|| "never".into(), |t| t.to_rfc3339())
        ));
        text.note("");
        text.note(
            "Give the key to its holder (Authorization: Bearer <key>); it is shown only now.",
        );
        text.note(format!(
            "Running intakes accept it within a second; revoke it with `conveyor keys revoke {}`.",
            r.id
        ));
        text
    }
}

/// `keys list`: every key, with its state at `now` (JSON: the array of keys).
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct KeyList {
    /// The keys, newest first.
    pub keys: Vec<ApiKeyRecord>,
    /// The moment the states are read at.
    #[serde(skip)]
    pub now: DateTime<Utc>,
}

impl View for KeyList {
    fn text(&self) -> Text {
        let mut text = Text {
            out: render_keys(&self.keys, self.now),
            notes: String::new(),
        };
        if self.keys.is_empty() {
            text.note("no keys; create one with `conveyor keys create --name NAME --role ROLE`");
        }
        text
    }
}

/// `keys revoke`: the key that was revoked.
#[derive(Debug, Serialize)]
pub struct Revoked {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
}

impl View for Revoked {
    fn text(&self) -> Text {
        let mut text = Text::default();
        text.line(format!(
            "{}: revoked ({}); running intakes refuse it within a second",
            self.id, self.name
        ));
        text
    }
}

async fn revoke(store: &Store, id: &str, by: Option<String>) -> anyhow::Result<Revoked> {
    let id: Uuid = id
        .parse()
        .with_context(|| format!("{id:?} is not a key id (a UUID)"))?;
    let context = Principal::cli(by.unwrap_or_else(default_actor)).audit(None);
    match store.revoke_key(id, &context).await? {
        RevokeOutcome::Revoked(r) => Ok(Revoked { id, name: r.name }),
        RevokeOutcome::AlreadyRevoked(r) => bail!("key {id} ({}) was already revoked", r.name),
        RevokeOutcome::NotFound => bail!("no key with id {id}"),
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
pub fn render_keys(keys: &[ApiKeyRecord], now: DateTime<Utc>) -> String {
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
