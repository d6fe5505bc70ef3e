//! The command line. Flags override the configuration file and the environment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::telemetry::LogFormat;

/// Durable background jobs for web applications: RabbitMQ carries the work, Postgres
/// remembers it.
#[derive(Debug, Parser)]
#[command(name = "conveyor", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    /// Options every command takes.
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes (and `conveyor-bench` too).
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Configuration file (default: ./conveyor.toml when present).
    #[arg(long, global = true, env = "CONVEYOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log line format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "pretty",
        env = "CONVEYOR_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Postgres URL (overrides database.url).
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    /// RabbitMQ URL of one node (overrides broker.url and any broker.urls).
    #[arg(long, global = true, value_name = "URL")]
    pub amqp_url: Option<String>,
    /// Prefix of every exchange and queue (overrides namespace).
    #[arg(long, global = true, value_name = "NAME")]
    pub namespace: Option<String>,
}

impl GlobalArgs {
    /// The flags that override configuration, as (dotted key, value).
    pub fn overrides(&self) -> Vec<(&'static str, Value)> {
        let mut out = Vec::new();
        if let Some(url) = &self.database_url {
            out.push(("database.url", json!(url)));
        }
        if let Some(url) = &self.amqp_url {
            out.push(("broker.url", json!(url)));
            // One URL on the command line means that node, whatever cluster the file names.
            out.push(("broker.urls", json!([])));
        }
        if let Some(ns) = &self.namespace {
            out.push(("namespace", json!(ns)));
        }
        out
    }

    /// The same options as command-line flags, for a companion executable.
    pub fn to_flags(&self) -> Vec<OsString> {
        let mut flags = Vec::new();
        let mut flag = |name: &str, value: OsString| {
            flags.push(OsString::from(name));
            flags.push(value);
        };
        if let Some(file) = &self.config {
            flag("--config", file.clone().into_os_string());
        }
        flag("--log-format", self.log_format.as_str().into());
        if let Some(url) = &self.database_url {
            flag("--database-url", url.into());
        }
        if let Some(url) = &self.amqp_url {
            flag("--amqp-url", url.into());
        }
        if let Some(ns) = &self.namespace {
            flag("--namespace", ns.into());
        }
        flags
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every role in one process: intake, workers and dispatcher (the quick start).
    /// Migrates the database first unless --no-migrate. With no SMTP server configured
    /// (smtp.host), email goes to a development mailbox: `conveyor mail list`.
    Run(RunArgs),
    /// Run the HTTP intake only (jobs, live event streams, `wait`, status links).
    Producer(ProducerArgs),
    /// Run a worker (and, unless --no-dispatcher, a dispatcher). A worker that runs
    /// email.send needs an SMTP server (smtp.host) and refuses to start without one.
    Worker(WorkerArgs),
    /// Create the database if missing and apply migrations.
    Migrate,
    /// List, inspect, replay and purge dead letters.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Inspect, cancel and retry single jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// List, inspect, pause, resume, trigger and preview schedules (periodic jobs).
    #[command(subcommand)]
    Schedules(SchedulesCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Read the audit log: every change made through the API or the CLI.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Subscribe URLs to job transitions: signed webhook deliveries, each a
    /// `webhook.deliver` job (retried, dead-lettered, replayable like any job).
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Read the development mailbox: the email `conveyor run` delivered to itself
    /// because no SMTP server is configured (smtp.host).
    #[command(subcommand)]
    Mail(MailCommand),
    /// Per queue: ready, running, scheduled, retrying, dead, oldest ready age, completed
    /// and failed in the last minute, consumers.
    Stats {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Refresh every N seconds until interrupted.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<u64>,
    },
    /// Demo data for trying the shipped kinds.
    #[command(subcommand)]
    Demo(DemoCommand),
    /// Measure throughput and latency over real HTTP (starting Conveyor on a throwaway
    /// database unless --url), and with --baseline the raw pipeline it is built on.
    /// Runs the `conveyor-bench` executable built beside `conveyor` (`cargo build
    /// --release` builds both); `conveyor bench --help` lists its options.
    #[command(disable_help_flag = true)]
    Bench(BenchCommand),
}

/// `conveyor bench`: everything after `bench` goes to `conveyor-bench`.
#[derive(Debug, Args)]
pub struct BenchCommand {
    /// Options for conveyor-bench (`conveyor bench --help` lists them).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        num_args = 0..,
        value_name = "OPTIONS"
    )]
    pub args: Vec<OsString>,
}

/// `conveyor demo`.
#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Load a product catalog (CSV: sku,name,unit_price_minor,currency,stock) into
    /// `products`, inserting new SKUs and resetting existing ones to the file's values.
    /// Migrates the database first.
    Seed {
        /// The catalog file.
        #[arg(long, value_name = "PATH", default_value = "examples/catalog.csv")]
        file: PathBuf,
    },
}

/// `conveyor keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random API key and the hash to put in producer.api_keys (an admin
    /// key kept in configuration, not in the database).
    New,
    /// Create a key in the database with a role, optionally limited to kinds and
    /// queues and expiring; prints the key once. Running intakes accept it within a
    /// second.
    Create {
        /// A name for people (`web-shop`).
        #[arg(long)]
        name: String,
        /// producer (enqueue, read its kinds), viewer (read without args), operator
        /// (read with args, cancel, retry, replay, manage queues) or admin (everything).
        #[arg(long)]
        role: String,
        /// Kind globs the key is limited to, comma-separated (`order.*,billing.*`).
        #[arg(long, value_name = "GLOBS", value_delimiter = ',')]
        kinds: Vec<String>,
        /// Queue globs the key is limited to, comma-separated.
        #[arg(long, value_name = "NAMES", value_delimiter = ',')]
        queues: Vec<String>,
        /// When it stops working: an age (90d, 12h, 30m) or an RFC 3339 time.
        #[arg(long, value_name = "AGE|TIME")]
        expires: Option<String>,
        /// Who is creating it (recorded in the audit log; default: $USER).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        /// JSON for scripts (the key included).
        #[arg(long)]
        json: bool,
    },
    /// List keys (never the keys themselves), revoked ones included.
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: every running intake refuses it within a second.
    Revoke {
        /// Key id.
        id: String,
        /// Who is revoking (recorded in the audit log; default: $USER).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
}

/// `conveyor webhooks`.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Subscribe a URL to the transitions of matching jobs; prints the signing secret
    /// (Standard Webhooks `whsec_…`) once. The URL's host must not resolve to a
    /// loopback, private or link-local address unless webhooks.allow_private_targets.
    Add {
        /// Where deliveries are POSTed (http or https).
        #[arg(long)]
        url: String,
        /// Kind glob (`order.*`); default: every kind.
        #[arg(long, value_name = "GLOB")]
        kind: Option<String>,
        /// States delivered, comma-separated, from scheduled, enqueued, retrying,
        /// completed, dead, cancelled (default: completed,dead,cancelled).
        #[arg(long, value_name = "STATES", value_delimiter = ',')]
        states: Vec<String>,
        /// A note for people.
        #[arg(long)]
        description: Option<String>,
        /// Attempts of each delivery before it is dead, 1 to 25 (default 8).
        #[arg(long, value_name = "N")]
        max_attempts: Option<u32>,
        /// Who is adding it (recorded in the audit log; default: $USER).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        /// JSON for scripts (the secret included).
        #[arg(long)]
        json: bool,
    },
    /// List subscriptions (never their secrets).
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show one subscription (never its secret).
    Show {
        /// Subscription id.
        id: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Remove a subscription: no more deliveries are made to it (those already owed
    /// complete without sending).
    Remove {
        /// Subscription id.
        id: String,
        /// Who is removing it (recorded in the audit log; default: $USER).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
}

/// `conveyor mail`.
#[derive(Debug, Subcommand)]
pub enum MailCommand {
    /// The messages, newest first: id, when, recipients, subject.
    List {
        /// At most this many.
        #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// One message: its envelope and its whole text (headers and body).
    Show {
        /// The message's id (from `mail list`).
        id: i64,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// `conveyor audit`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Who changed what, newest first.
    List {
        /// Only this action (job.cancel, job.retry, dead.replay, dead.purge, key.create,
        /// key.revoke, queue.pause, queue.resume, webhook.create, webhook.delete).
        #[arg(long)]
        action: Option<String>,
        /// Only this actor (a key's name, a CLI user).
        #[arg(long)]
        actor: Option<String>,
        /// Only entries at or after: RFC 3339, or an age like 15m, 2h, 7d.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// At most this many.
        #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// Which dead letters: the filters shared by `list`, `replay` and `purge`.
#[derive(Debug, Args, Default)]
pub struct DeadFilterArgs {
    /// Only this queue.
    #[arg(long)]
    pub queue: Option<String>,
    /// Only this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only errors containing this text (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub error: Option<String>,
    /// Died at or after: RFC 3339, or an age like 90s, 15m, 2h, 7d.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Died before: RFC 3339, or an age like 90s, 15m, 2h, 7d.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At most this many, newest first.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

/// What to group dead letters by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// The error with ids and numbers masked.
    Error,
}

/// `conveyor dead`.
#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// List open dead letters, newest first.
    List {
        #[command(flatten)]
        /// Filters.
        filter: DeadFilterArgs,
        /// Count per error fingerprint instead of listing.
        #[arg(long, value_enum)]
        group_by: Option<GroupBy>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: args, every attempt with its error and worker.
    Show {
        /// Dead-letter id or job id.
        id: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Run dead jobs again: same id and history, a fresh attempt budget.
    Replay {
        /// Dead-letter or job ids (or use filters, or --all).
        ids: Vec<String>,
        #[command(flatten)]
        /// Filters.
        filter: DeadFilterArgs,
        /// Every open dead letter.
        #[arg(long)]
        all: bool,
        /// List what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay one job with these corrected args (a JSON file), validated like intake.
        #[arg(long, value_name = "FILE")]
        args: Option<PathBuf>,
        /// Replays per second, at most.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        rate: Option<u32>,
        /// Who is replaying (recorded on the job and in the audit log; default: $USER).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Delete dead letters and their dead jobs (asks first unless --yes).
    Purge {
        /// Dead-letter or job ids (or use filters, or --all).
        ids: Vec<String>,
        #[command(flatten)]
        /// Filters.
        filter: DeadFilterArgs,
        /// Every open dead letter.
        #[arg(long)]
        all: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Who is purging (recorded in the audit log; default: $USER).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// `conveyor jobs`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Show a job and its attempts.
    Show {
        /// Job id.
        id: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: a waiting one never runs; a running one is not retried.
    Cancel {
        /// Job id.
        id: String,
        /// Who is cancelling (recorded in the audit log; default: $USER).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Run a retrying, scheduled, dead or cancelled job now.
    Retry {
        /// Job id.
        id: String,
        /// Who is retrying (recorded on the job and in the audit log; default: $USER).
        #[arg(long, value_name = "NAME")]
        by: Option<String>,
    },
}

/// `conveyor schedules`.
#[derive(Debug, Subcommand)]
pub enum SchedulesCommand {
    /// List every schedule: expression, zone, kind, state, next slot, slot counts.
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show one schedule: definition, state, slots fired, missed and skipped, and its
    /// recent jobs.
    Show {
        /// Schedule name.
        name: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Stop firing: slots pass (and are not caught up) until resumed.
    Pause {
        /// Schedule name.
        name: String,
    },
    /// Fire again from the next slot after now.
    Resume {
        /// Schedule name.
        name: String,
    },
    /// Fire one job now, outside the schedule's slots.
    Trigger {
        /// Schedule name.
        name: String,
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Print the next fire times in the schedule's time zone.
    Preview {
        /// Schedule name (stored, or declared in the configuration).
        name: String,
        /// How many.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        count: u32,
    },
}

/// `conveyor run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Do not create or migrate the database at start-up.
    #[arg(long)]
    pub no_migrate: bool,
    #[command(flatten)]
    /// Intake options.
    pub producer: ProducerArgs,
    #[command(flatten)]
    /// Worker options.
    pub worker: WorkerOptions,
}

/// Intake options.
#[derive(Debug, Args)]
pub struct ProducerArgs {
    /// Address to serve the API on (overrides producer.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
}

/// `conveyor worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    /// Worker options.
    pub worker: WorkerOptions,
    /// Serve /metrics, /healthz and /readyz on this address (overrides worker.listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Do not run a dispatcher in this process.
    #[arg(long)]
    pub no_dispatcher: bool,
}

/// Worker options.
#[derive(Debug, Args)]
pub struct WorkerOptions {
    /// Jobs run at once per queue (and the prefetch), for queues given without a number.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub concurrency: Option<u16>,
    /// Queues to consume, with their concurrency: `orders=32,emails=8` (a queue without
    /// `=N` uses --concurrency).
    #[arg(long, value_name = "QUEUE[=N],…", value_delimiter = ',', value_parser = parse_queue)]
    pub queues: Option<Vec<(String, u16)>>,
    /// Seconds in-flight jobs may take to finish on shutdown before they are left for
    /// redelivery.
    #[arg(long, value_name = "SECONDS")]
    pub grace: Option<u64>,
}

fn parse_queue(text: &str) -> Result<(String, u16), String> {
    let (name, concurrency) = match text.split_once('=') {
        Some((name, n)) => {
            let n: u16 = n.parse().map_err(|_| {
                format!("concurrency of queue {name:?} must be a number from 1 to 10000, got {n:?}")
            })?;
            if !(1..=10_000).contains(&n) {
                return Err(format!(
                    "concurrency of queue {name:?} must be from 1 to 10000"
                ));
            }
            (name, n)
        }
        None => (text, 0),
    };
    if !broker::topology::valid_queue_name(name) {
        return Err(format!(
            "queue name {name:?} must be 1 to 64 characters of a-z, 0-9, '_' and '-'"
        ));
    }
    Ok((name.to_owned(), concurrency))
}

impl Cli {
    /// The flags that override configuration, as (dotted key, value).
    pub fn overrides(&self) -> Vec<(&'static str, Value)> {
        let mut out = self.global.overrides();
        let (producer, worker) = match &self.command {
            Command::Run(args) => (Some(&args.producer), Some(&args.worker)),
            Command::Producer(args) => (Some(args), None),
            Command::Worker(args) => (None, Some(&args.worker)),
            Command::Migrate
            | Command::Dead(_)
            | Command::Jobs(_)
            | Command::Schedules(_)
            | Command::Keys(_)
            | Command::Audit(_)
            | Command::Webhooks(_)
            | Command::Mail(_)
            | Command::Stats { .. }
            | Command::Demo(_)
            | Command::Bench(_) => (None, None),
        };
        if let Some(listen) = producer.and_then(|p| p.listen) {
            out.push(("producer.listen", json!(listen.to_string())));
        }
        if let Some(worker) = worker {
            if let Some(n) = worker.concurrency {
                out.push(("worker.concurrency", json!(n)));
            }
            if let Some(queues) = &worker.queues {
                let map: BTreeMap<&str, u16> =
                    queues.iter().map(|(q, n)| (q.as_str(), *n)).collect();
                out.push(("worker.queues", json!(map)));
            }
            if let Some(grace) = worker.grace {
                out.push(("worker.grace_ms", json!(grace.saturating_mul(1000))));
            }
        }
        if let Command::Worker(args) = &self.command {
            if args.no_dispatcher {
                out.push(("dispatcher.enabled", json!(false)));
            }
            if let Some(listen) = args.listen {
                out.push(("worker.listen", json!(listen.to_string())));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn queues_parse_with_and_without_concurrency() {
        let cli =
            Cli::try_parse_from(["conveyor", "worker", "--queues", "orders=32,emails"]).unwrap();
        let overrides = cli.overrides();
        let queues = overrides
            .iter()
            .find(|(k, _)| *k == "worker.queues")
            .unwrap();
        assert_eq!(queues.1, json!({"orders": 32, "emails": 0}));
    }

    #[test]
    fn dead_replay_parses_ids_filters_and_rate() {
        let cli = Cli::try_parse_from([
            "conveyor",
            "dead",
            "replay",
            "--kind",
            "noop",
            "--rate",
            "50",
            "--dry-run",
        ])
        .unwrap();
        let Command::Dead(DeadCommand::Replay {
            filter,
            rate,
            dry_run,
            ..
        }) = cli.command
        else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(filter.kind.as_deref(), Some("noop"));
        assert_eq!(rate, Some(50));
        assert!(dry_run);
        assert!(Cli::try_parse_from(["conveyor", "dead", "replay", "--rate", "0"]).is_err());
    }

    #[test]
    fn demo_seed_defaults_to_the_example_catalog() {
        let cli = Cli::try_parse_from(["conveyor", "demo", "seed"]).unwrap();
        let Command::Demo(DemoCommand::Seed { file }) = cli.command else {
            panic!("expected demo seed, got {:?}", cli.command);
        };
        assert_eq!(file, PathBuf::from("examples/catalog.csv"));
        let cli = Cli::try_parse_from(["conveyor", "demo", "seed", "--file", "shop.csv"]).unwrap();
        assert!(
            matches!(cli.command, Command::Demo(DemoCommand::Seed { file }) if file.as_os_str() == "shop.csv")
        );
    }

    #[test]
    fn keys_create_takes_comma_separated_globs() {
        let cli = Cli::try_parse_from([
            "conveyor",
            "keys",
            "create",
            "--name",
            "web",
            "--role",
            "producer",
            "--kinds",
            "order.*,billing.*",
            "--expires",
            "90d",
        ])
        .unwrap();
        let Command::Keys(KeysCommand::Create { kinds, expires, .. }) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(kinds, ["order.*", "billing.*"]);
        assert_eq!(expires.as_deref(), Some("90d"));
        assert!(Cli::try_parse_from(["conveyor", "keys", "create", "--role", "admin"]).is_err());
    }

    #[test]
    fn bench_passes_every_argument_on_and_global_flags_stay_global() {
        let cli = Cli::try_parse_from([
            "conveyor",
            "--namespace",
            "ns1",
            "bench",
            "--jobs",
            "5",
            "--help",
        ])
        .unwrap();
        let Command::Bench(bench) = &cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(bench.args, ["--jobs", "5", "--help"]);
        let flags = cli.global.to_flags();
        assert_eq!(
            flags,
            ["--log-format", "pretty", "--namespace", "ns1"].map(OsString::from)
        );
        let bare = Cli::try_parse_from(["conveyor", "bench"]).unwrap();
        assert!(matches!(bare.command, Command::Bench(BenchCommand { args }) if args.is_empty()));
    }

    #[test]
    fn a_bad_queue_spec_names_the_problem() {
        let err =
            Cli::try_parse_from(["conveyor", "worker", "--queues", "orders=lots"]).unwrap_err();
        assert!(
            err.to_string().contains("concurrency of queue \"orders\""),
            "{err}"
        );
        let err =
            Cli::try_parse_from(["conveyor", "worker", "--queues", "Bad.Name=2"]).unwrap_err();
        assert!(err.to_string().contains("queue name"), "{err}");
    }
}
