//! Settings, layered lowest precedence first: built-in defaults → `conveyor.toml` (or
//! `--config FILE`) → `CONVEYOR_*` environment (`__` nests: `CONVEYOR_DATABASE__URL`;
//! `DATABASE_URL` and `AMQP_URL` are honoured below those) → command-line flags.
//! Unknown keys and bad values stop start-up with a message naming the key.

use std::path::Path;

use broker::BrokerSettings;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use producer::ProducerSettings;
use serde::{Deserialize, Serialize};
use store::DatabaseSettings;
use worker::{DispatcherSettings, SmtpSettings, WebhookSettings, WorkerSettings};

/// Everything Conveyor can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Prefix of every exchange and queue, so tenants and tests share a broker.
    pub namespace: String,
    /// Postgres.
    pub database: DatabaseSettings,
    /// RabbitMQ.
    pub broker: BrokerSettings,
    /// The HTTP intake.
    pub producer: ProducerSettings,
    /// The worker pool.
    pub worker: WorkerSettings,
    /// Publishing due work.
    pub dispatcher: DispatcherSettings,
    /// The SMTP server `email.send` sends through.
    pub smtp: SmtpSettings,
    /// Periodic jobs (`[[schedules]]`), written to the ledger at start-up.
    pub schedules: Vec<jobs::schedule::ScheduleSpec>,
    /// Webhooks: which targets may be called, time bounds, the callback secret.
    pub webhooks: WebhookSettings,
    /// Live events: publishing transitions, event streams, `wait`, status links.
    pub events: producer::events::EventsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: "conveyor".to_owned(),
            database: DatabaseSettings::default(),
            broker: BrokerSettings::default(),
            producer: ProducerSettings::default(),
            worker: WorkerSettings::default(),
            dispatcher: DispatcherSettings::default(),
            smtp: SmtpSettings::default(),
            schedules: Vec::new(),
            webhooks: WebhookSettings::default(),
            events: producer::events::EventsSettings::default(),
        }
    }
}

/// A configuration problem, with the key it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where settings come from besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct Sources<'a> {
    /// An explicit config file (must exist). Without it, `conveyor.toml` is read if
    /// present.
    pub file: Option<&'a Path>,
    /// Command-line overrides as (dotted key, value) pairs, applied last.
    pub overrides: Vec<(&'static str, serde_json::Value)>,
}

impl Settings {
    /// The layered figment (exposed for tests).
    pub fn figment(sources: &Sources<'_>) -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        match sources.file {
            Some(file) => {
                if !file.is_file() {
                    return Err(ConfigError(format!(
                        "config file {} does not exist or is not a file",
                        file.display()
                    )));
                }
                figment = figment.merge(Toml::file_exact(file));
            }
            None if Path::new("conveyor.toml").is_file() => {
                figment = figment.merge(Toml::file_exact("conveyor.toml"));
            }
            None => {}
        }
        figment = figment
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            )
            .merge(Env::raw().only(&["AMQP_URL"]).map(|_| "broker.url".into()));
        if std::env::var_os("AMQP_URL").is_some() {
            // AMQP_URL names one node and outranks the file: a cluster the file lists
            // gives way to it (CONVEYOR_BROKER__URLS, merged next, still outranks both).
            figment = figment.merge(Serialized::default("broker.urls", Vec::<String>::new()));
        }
        figment = figment.merge(
            Env::prefixed("CONVEYOR_")
                .split("__")
                .ignore(&["config", "log_format"])
                // `CONVEYOR_TEST_*` belongs to the test harness (its servers), not to
                // the configuration: a developer's shell that sets it still starts.
                .filter(|key| !key.as_str().to_ascii_lowercase().starts_with("test_")),
        );
        for (key, value) in &sources.overrides {
            figment = figment.merge(Serialized::default(key, value));
        }
        Ok(figment)
    }

    /// Loads and checks the settings.
    ///
    /// # Errors
    /// A message naming each bad key and why.
    pub fn load(sources: &Sources<'_>) -> Result<Settings, ConfigError> {
        let settings: Settings = Self::figment(sources)?.extract().map_err(|e| {
            let messages: Vec<String> = e
                .into_iter()
                .map(|e| {
                    let key = e.path.join(".");
                    let origin = e
                        .metadata
                        .as_ref()
                        .map(|m| {
                            format!(
                                " (from {})",
                                m.source
                                    .as_ref()
                                    .map_or_else(|| m.name.to_string(), |s| s.to_string())
                            )
                        })
                        .unwrap_or_default();
                    if key.is_empty() {
                        format!("configuration: {}{origin}", e.kind)
                    } else {
                        format!("configuration key `{key}`: {}{origin}", e.kind)
                    }
                })
                .collect();
            ConfigError(messages.join("\n"))
        })?;
        settings.check()?;
        Ok(settings)
    }

    /// The configured schedules, checked against the kinds this configuration runs.
    ///
    /// # Errors
    /// Each bad schedule field, naming the schedule.
    pub fn schedule_defs(&self) -> Result<Vec<jobs::schedule::ScheduleDef>, ConfigError> {
        let catalog = worker::startup::catalog(self.worker.test_kinds)
            .map_err(|e| ConfigError(format!("the kinds' catalog: {e}")))?;
        crate::schedules::validate_config(
            &self.schedules,
            &catalog,
            self.producer.max_attempts_limit,
        )
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one flat list of independent configuration checks, each naming its key"
    )]
    fn check(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if !broker::topology::valid_queue_name(&self.namespace) {
            problems.push("configuration key `namespace`: must be 1 to 64 characters of a-z, 0-9, '_' and '-'".to_owned());
        }
        for queue in self.worker.queues.keys() {
            if !broker::topology::valid_queue_name(queue) {
                problems.push(format!("configuration key `worker.queues.{queue}`: a queue name must be 1 to 64 characters of a-z, 0-9, '_' and '-'"));
            }
        }
        if self.database.connect_options().is_err() {
            problems
                .push("configuration key `database.url`: not a valid postgres:// URL".to_owned());
        } else if let Err(e) = self.database.requires_read_write() {
            problems.push(format!("configuration key `database.url`: {e}"));
        }
        problems.extend(self.broker.problems());
        problems.extend(self.events.problems());
        for (i, hash) in self.producer.api_keys.iter().enumerate() {
            if !producer::auth::valid_hash(hash) {
                problems.push(format!(
                    "configuration key `producer.api_keys[{i}]`: expected sha256:<64 hex digits>, the hash of a key \
                     (make one with `conveyor keys new`; never configure the key itself)"
                ));
            }
        }
        if !(50..=1000).contains(&self.producer.key_refresh_ms) {
            problems.push(
                "configuration key `producer.key_refresh_ms`: must be between 50 and 1000 (a revoked key must stop working within a second)".to_owned(),
            );
        }
        if self.producer.auth_failures.per_second == 0 || self.producer.auth_failures.burst == 0 {
            problems.push(
                "configuration key `producer.auth_failures`: per_second and burst must be at least 1".to_owned(),
            );
        }
        if self.producer.max_batch == 0 {
            problems.push("configuration key `producer.max_batch`: must be at least 1".to_owned());
        }
        if self.producer.mark_published_after_ms >= self.dispatcher.unconfirmed_after_ms {
            problems.push(format!(
                "configuration key `producer.mark_published_after_ms`: must be below \
                 `dispatcher.unconfirmed_after_ms` ({} ms), or every job would be published twice",
                self.dispatcher.unconfirmed_after_ms
            ));
        }
        if self.worker.prefetch_multiplier == 0 {
            problems.push(
                "configuration key `worker.prefetch_multiplier`: must be at least 1".to_owned(),
            );
        }
        if self.database.max_connections == 0 {
            problems.push(
                "configuration key `database.max_connections`: must be at least 1".to_owned(),
            );
        }
        if self.producer.max_body_bytes < 1024 {
            problems.push(
                "configuration key `producer.max_body_bytes`: must be at least 1024".to_owned(),
            );
        }
        for (key, value) in [
            (
                "header_read_timeout_ms",
                self.producer.header_read_timeout_ms,
            ),
            ("body_read_timeout_ms", self.producer.body_read_timeout_ms),
            (
                "body_min_bytes_per_sec",
                self.producer.body_min_bytes_per_sec,
            ),
            (
                "keep_alive_idle_timeout_ms",
                self.producer.keep_alive_idle_timeout_ms,
            ),
        ] {
            if value == 0 {
                problems.push(format!(
                    "configuration key `producer.{key}`: must be at least 1 (a connection is never left unbounded)"
                ));
            }
        }
        if self.producer.max_connections == Some(0) {
            problems.push(
                "configuration key `producer.max_connections`: must be at least 1".to_owned(),
            );
        }
        match (
            self.producer.max_connections_per_client,
            self.producer.max_connections,
        ) {
            (Some(0), _) => problems.push(
                "configuration key `producer.max_connections_per_client`: must be at least 1"
                    .to_owned(),
            ),
            (Some(per_client), Some(max)) if per_client > max => problems.push(format!(
                "configuration key `producer.max_connections_per_client`: {per_client} is more than \
                 `producer.max_connections` ({max})"
            )),
            _ => {}
        }
        if self.broker.delivery_limit == 0 {
            problems
                .push("configuration key `broker.delivery_limit`: must be at least 1".to_owned());
        }
        if let Err(e) = self.smtp.validate() {
            problems.push(format!("configuration key `{}`: {e}", e.key()));
        }
        if let Err(e) = self.schedule_defs() {
            problems.push(e.0);
        }
        if let Err((key, e)) = self.webhooks.validate() {
            problems.push(format!("configuration key `{key}`: {e}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems.join("\n")))
        }
    }
}

#[cfg(test)]
// figment's Jail closures return its (large) error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn defaults_point_at_localhost() {
        figment::Jail::expect_with(|_jail| {
            let settings = Settings::load(&Sources::default()).unwrap();
            assert_eq!(settings.producer.listen.to_string(), "127.0.0.1:8080");
            assert_eq!(settings.namespace, "conveyor");
            Ok(())
        });
    }

    #[test]
    fn layers_apply_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "conveyor.toml",
                "namespace = \"fromfile\"\n[producer]\nlisten = \"127.0.0.1:9000\"\n",
            )?;
            jail.set_env("DATABASE_URL", "postgres://a@localhost/plain");
            let settings = Settings::load(&Sources::default()).unwrap();
            assert_eq!(settings.namespace, "fromfile");
            assert_eq!(settings.producer.listen.port(), 9000);
            assert!(settings.database.connect_options().is_ok());

            jail.set_env("CONVEYOR_NAMESPACE", "fromenv");
            jail.set_env("CONVEYOR_DATABASE__URL", "postgres://b@localhost/prefixed");
            let settings = Settings::load(&Sources::default()).unwrap();
            assert_eq!(settings.namespace, "fromenv");
            assert!(settings.database.url.expose_secret().ends_with("/prefixed"));

            let cli = Sources {
                file: None,
                overrides: vec![("namespace", serde_json::json!("fromcli"))],
            };
            assert_eq!(Settings::load(&cli).unwrap().namespace, "fromcli");
            Ok(())
        });
    }

    #[test]
    fn the_test_harness_variables_are_not_configuration() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CONVEYOR_TEST_POSTGRES", "postgres://elsewhere:5432");
            jail.set_env("CONVEYOR_TEST_AMQP", "amqp://elsewhere:5672");
            let settings = Settings::load(&Sources::default());
            assert!(settings.is_ok(), "{:?}", settings.err());
            // Any other unknown key under the prefix is still refused, by name.
            jail.set_env("CONVEYOR_NAMESAPCE", "typo");
            let err = Settings::load(&Sources::default()).unwrap_err().to_string();
            assert!(err.contains("namesapce"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_its_key() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("conveyor.toml", "[producer]\nlisten = \"not an address\"\n")?;
            let err = Settings::load(&Sources::default()).unwrap_err().to_string();
            assert!(err.contains("producer.listen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("conveyor.toml", "[worker]\nconcurency = 4\n")?;
            let err = Settings::load(&Sources::default()).unwrap_err().to_string();
            assert!(err.contains("concurency"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_bad_namespace_or_url_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CONVEYOR_NAMESPACE", "Bad Name");
            jail.set_env("AMQP_URL", "http://nope");
            let err = Settings::load(&Sources::default()).unwrap_err().to_string();
            assert!(err.contains("`namespace`"), "{err}");
            assert!(err.contains("`broker.url`"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_cluster_is_configured_by_urls_and_a_bad_entry_is_named_by_index() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "conveyor.toml",
                "[broker]\nurls = [\"amqp://u:p@rmq-a:5672/%2f\", \"amqp://u:p@rmq-b:5672/%2f\", \"amqp://u:p@rmq-c:5672/%2f\"]\n",
            )?;
            let settings = Settings::load(&Sources::default()).unwrap();
            assert_eq!(settings.broker.node_urls().len(), 3);
            assert_eq!(settings.broker.quorum_group_size(), Some(3));
            assert_eq!(settings.broker.node_order, broker::NodeOrder::Random);

            jail.set_env(
                "CONVEYOR_BROKER__URLS",
                "[\"amqp://u:p@rmq-a:5672/%2f\", \"rmq-b:5672\"]",
            );
            jail.set_env("CONVEYOR_BROKER__QUORUM_GROUP_SIZE", "0");
            let err = Settings::load(&Sources::default()).unwrap_err().to_string();
            assert!(err.contains("`broker.urls[1]`: not an amqp://"), "{err}");
            assert!(!err.contains("`broker.urls[0]`"), "{err}");
            assert!(
                err.contains("`broker.quorum_group_size`: must be at least 1"),
                "{err}"
            );

            jail.set_env("CONVEYOR_BROKER__URLS", "[\"amqp://u:p@rmq-a:5672/%2f\"]");
            jail.set_env("CONVEYOR_BROKER__QUORUM_GROUP_SIZE", "3");
            jail.set_env("CONVEYOR_BROKER__NODE_ORDER", "sideways");
            let err = Settings::load(&Sources::default()).unwrap_err().to_string();
            assert!(err.contains("`broker.node_order`"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn an_unsupported_target_session_attrs_names_the_database_url() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "DATABASE_URL",
                "postgres://u@db/conveyor?target_session_attrs=standby",
            );
            let err = Settings::load(&Sources::default()).unwrap_err().to_string();
            assert!(err.contains("`database.url`: "), "{err}");
            assert!(err.contains("target_session_attrs=standby"), "{err}");
            jail.set_env(
                "DATABASE_URL",
                "postgres://u@db/conveyor?target_session_attrs=read-write",
            );
            assert!(Settings::load(&Sources::default()).is_ok());
            Ok(())
        });
    }

    #[test]
    fn amqp_url_in_the_environment_outranks_a_cluster_in_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "conveyor.toml",
                "[broker]\nurls = [\"amqp://rmq-a\", \"amqp://rmq-b\"]\n",
            )?;
            jail.set_env("AMQP_URL", "amqp://from-env:5672");
            let settings = Settings::load(&Sources::default()).unwrap();
            let nodes = settings.broker.node_urls();
            assert_eq!(nodes.len(), 1);
            assert_eq!(nodes[0].1.expose_secret(), "amqp://from-env:5672");
            Ok(())
        });
    }

    #[test]
    fn the_amqp_url_flag_replaces_configured_cluster_urls() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "conveyor.toml",
                "[broker]\nurls = [\"amqp://rmq-a\", \"amqp://rmq-b\"]\n",
            )?;
            let sources = Sources {
                file: None,
                overrides: vec![
                    ("broker.url", serde_json::json!("amqp://only:5672")),
                    ("broker.urls", serde_json::json!([])),
                ],
            };
            let settings = Settings::load(&sources).unwrap();
            let nodes = settings.broker.node_urls();
            assert_eq!(nodes.len(), 1);
            assert_eq!(nodes[0].1.expose_secret(), "amqp://only:5672");
            Ok(())
        });
    }

    #[test]
    fn smtp_settings_layer_and_a_bad_sender_is_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "conveyor.toml",
                "[smtp]\nhost = \"mail.example.com\"\nport = 587\ntls = \"starttls\"\n",
            )?;
            jail.set_env("CONVEYOR_SMTP__USERNAME", "ada");
            jail.set_env("CONVEYOR_SMTP__PASSWORD", "hunter2");
            let settings = Settings::load(&Sources::default()).unwrap();
            assert_eq!(settings.smtp.host, "mail.example.com");
            assert_eq!(settings.smtp.port, 587);
            assert_eq!(settings.smtp.tls, worker::SmtpTls::Starttls);
            assert_eq!(settings.smtp.from, "Conveyor <conveyor@localhost>");
            assert!(!format!("{:?}", settings.smtp).contains("hunter2"));

            jail.set_env("CONVEYOR_SMTP__FROM", "nobody at all");
            let err = Settings::load(&Sources::default()).unwrap_err().to_string();
            assert!(err.contains("`smtp.from`"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn connection_bounds_layer_and_a_bad_one_is_named() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "conveyor.toml",
                "[producer]\nheader_read_timeout_ms = 2000\nmax_connections = 500\n",
            )?;
            let settings = Settings::load(&Sources::default()).unwrap();
            assert_eq!(settings.producer.header_read_timeout_ms, 2_000);
            assert_eq!(settings.producer.max_connections, Some(500));
            assert_eq!(settings.producer.max_connections_per_client, None);

            jail.set_env("CONVEYOR_PRODUCER__MAX_CONNECTIONS_PER_CLIENT", "501");
            jail.set_env("CONVEYOR_PRODUCER__KEEP_ALIVE_IDLE_TIMEOUT_MS", "0");
            jail.set_env("CONVEYOR_PRODUCER__BODY_MIN_BYTES_PER_SEC", "0");
            let err = Settings::load(&Sources::default()).unwrap_err().to_string();
            assert!(
                err.contains("`producer.max_connections_per_client`"),
                "{err}"
            );
            assert!(
                err.contains("`producer.keep_alive_idle_timeout_ms`"),
                "{err}"
            );
            assert!(err.contains("`producer.body_min_bytes_per_sec`"), "{err}");

            jail.set_env("CONVEYOR_PRODUCER__MAX_CONNECTIONS_PER_CLIENT", "0");
            jail.set_env("CONVEYOR_PRODUCER__MAX_CONNECTIONS", "0");
            let err = Settings::load(&Sources::default()).unwrap_err().to_string();
            assert!(err.contains("`producer.max_connections`: must be"), "{err}");
            assert!(
                err.contains("`producer.max_connections_per_client`: must be"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_example_file_loads_and_matches_the_connection_defaults() {
        // In a jail: other tests set CONVEYOR_* variables while they run.
        figment::Jail::expect_with(|_jail| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conveyor.example.toml");
            let sources = Sources {
                file: Some(&path),
                overrides: vec![],
            };
            let settings = Settings::load(&sources).unwrap();
            let (loaded, defaults) = (settings.producer, ProducerSettings::default());
            assert_eq!(
                loaded.header_read_timeout_ms,
                defaults.header_read_timeout_ms
            );
            assert_eq!(loaded.body_read_timeout_ms, defaults.body_read_timeout_ms);
            assert_eq!(
                loaded.body_min_bytes_per_sec,
                defaults.body_min_bytes_per_sec
            );
            assert_eq!(
                loaded.keep_alive_idle_timeout_ms,
                defaults.keep_alive_idle_timeout_ms
            );
            assert_eq!(loaded.max_connections, None);
            Ok(())
        });
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let sources = Sources {
            file: Some(Path::new("/nonexistent/conveyor.toml")),
            overrides: vec![],
        };
        assert!(
            Settings::load(&sources)
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }
}
