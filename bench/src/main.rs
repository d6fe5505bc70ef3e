//! `conveyor-bench`, run as `conveyor bench`: drives Conveyor over real HTTP and
//! measures intake and end-to-end throughput, latency percentiles and peak memory,
//! checks that every job completed exactly once, and (with `--baseline`) measures the
//! raw pipeline Conveyor is built on, on the same broker and database in the same run.
//!
//! A program of its own, so the `conveyor` service binary carries no HTTP client, SMTP
//! sink or process control for it.
//!
//! # Layout
//! - [`run`] — starting the target, driving it, reading the ledger, the baseline.
//! - [`smtp_sink`] — the loopback SMTP server the started Conveyor mails to.

mod run;
mod smtp_sink;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser};
use conveyor::cli::GlobalArgs;
use conveyor::config::{Settings, Sources};
use conveyor::telemetry;

/// Measure throughput and latency over real HTTP (starting Conveyor on a throwaway
/// database unless --url), and with --baseline the raw pipeline it is built on.
#[derive(Debug, Parser)]
#[command(name = "conveyor-bench", bin_name = "conveyor bench", version)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(flatten)]
    bench: BenchArgs,
}

/// What to measure.
#[derive(Debug, Args)]
struct BenchArgs {
    /// Jobs to enqueue.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    jobs: u64,
    /// Kind to run: noop or order.process.
    #[arg(long, default_value = "noop", value_parser = ["noop", "order.process"])]
    kind: String,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// Use the batch endpoint with this many jobs per request.
    #[arg(long, value_name = "B", value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch: Option<u64>,
    /// Open loop: requests started per second (latency at a fixed load).
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Worker processes to start (0: workers in this process). They run the `conveyor`
    /// executable beside this one.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=64))]
    workers: u64,
    /// Worker concurrency per queue.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=10_000))]
    worker_concurrency: u16,
    /// Jobs run first, the same way, and left out of every figure: the measured run
    /// starts with open connections and prepared statements (steady state).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    warmup: u64,
    /// Also measure the raw pipeline and print Conveyor's throughput as a ratio of it.
    #[arg(long)]
    baseline: bool,
    /// Drive a running intake instead of starting one (database.url must be its ledger).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// API key for --url.
    #[arg(long, value_name = "KEY", env = "CONVEYOR_BENCH_API_KEY")]
    api_key: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Live events' cost, in one run: the same benchmark with `events.enabled = false`,
    /// then on with no subscriber, then on with `--firehose-streams` open
    /// `GET /v1/events` streams, each on a fresh target; prints the three throughputs
    /// and their ratios to the first.
    #[arg(long, conflicts_with = "url")]
    compare_events: bool,
    /// Firehose streams held open in the third run of `--compare-events`.
    #[arg(
        long,
        default_value_t = 100,
        value_name = "N",
        requires = "compare_events"
    )]
    firehose_streams: u64,
}

impl From<BenchArgs> for run::BenchOptions {
    fn from(args: BenchArgs) -> Self {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Self {
            jobs: size(args.jobs),
            kind: args.kind,
            concurrency: size(args.concurrency),
            batch: args.batch.map(size),
            rate: args.rate,
            workers: size(args.workers),
            worker_concurrency: args.worker_concurrency,
            warmup: size(args.warmup),
            baseline: args.baseline,
            url: args.url,
            api_key: args.api_key,
            json: args.json,
            firehose_streams: 0,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.global.log_format);
    let code = match bench(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    telemetry::shutdown();
    code
}

async fn bench(cli: Cli) -> anyhow::Result<()> {
    let sources = Sources {
        file: cli.global.config.as_deref(),
        overrides: cli.global.overrides(),
    };
    let settings = Settings::load(&sources)?;
    if cli.bench.compare_events {
        let streams = usize::try_from(cli.bench.firehose_streams).unwrap_or(usize::MAX);
        return run::compare_events(settings, cli.bench.into(), streams).await;
    }
    let report = run::run(settings, cli.bench.into()).await?;
    print!("{}", run::summary(&report));
    if report.missing != 0 || report.completed_twice != 0 {
        anyhow::bail!(
            "{} job(s) missing, {} completed twice",
            report.missing,
            report.completed_twice
        );
    }
    Ok(())
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
    fn options_parse_with_global_flags_anywhere() {
        let cli = Cli::try_parse_from([
            "conveyor-bench",
            "--jobs",
            "300",
            "--kind",
            "order.process",
            "--database-url",
            "postgres://db/x",
            "--batch",
            "50",
        ])
        .unwrap();
        assert_eq!(cli.global.database_url.as_deref(), Some("postgres://db/x"));
        let options = run::BenchOptions::from(cli.bench);
        assert_eq!(options.jobs, 300);
        assert_eq!(options.kind, "order.process");
        assert_eq!(options.batch, Some(50));
        assert_eq!(options.concurrency, 32);
        assert_eq!(options.warmup, 1000);
    }

    #[test]
    fn a_kind_outside_the_two_is_refused() {
        let err = Cli::try_parse_from(["conveyor-bench", "--kind", "email.send"]).unwrap_err();
        assert!(err.to_string().contains("--kind"), "{err}");
    }
}
