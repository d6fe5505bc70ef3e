//! The benchmark itself: drives Conveyor over real HTTP and measures intake and end-to-end
//! throughput, latency percentiles and peak memory, checks that every job completed
//! exactly once, and (with `--baseline`) measures the raw pipeline Conveyor is built on
//! — confirmed publishes to a quorum queue, manual-ack consumption, batched INSERTs into
//! Postgres — on the same broker and database in the same run, so results compare across
//! noisy machines as a ratio.
//!
//! Without `--url`, it starts Conveyor itself on a throwaway database and namespace
//! (dropped afterwards): in-process, or with `--workers N` as N `conveyor worker` child
//! processes (the `conveyor` executable beside this one).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use conveyor::app::{self, Roles};
use conveyor::config::Settings;

use crate::smtp_sink;

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct BenchOptions {
    /// Jobs to enqueue.
    pub(crate) jobs: usize,
    /// `noop` or `order.process`.
    pub(crate) kind: String,
    /// Concurrent HTTP clients.
    pub(crate) concurrency: usize,
    /// Jobs per `POST /v1/jobs/batch` (`None`: one job per request).
    pub(crate) batch: Option<usize>,
    /// Open loop: requests started per second (`None`: as fast as answered).
    pub(crate) rate: Option<f64>,
    /// Worker child processes (0: workers run in this process).
    pub(crate) workers: usize,
    /// Worker concurrency per queue.
    pub(crate) worker_concurrency: u16,
    /// Jobs run first and left out of every figure.
    pub(crate) warmup: usize,
    /// Also measure the raw pipeline.
    pub(crate) baseline: bool,
    /// A running intake to drive instead of starting one (its database must be
    /// `database.url`).
    pub(crate) url: Option<String>,
    /// API key for `url`.
    pub(crate) api_key: Option<String>,
    /// Write the report as JSON here.
    pub(crate) json: Option<PathBuf>,
    /// `GET /v1/events` streams held open while measuring (`--compare-events`).
    pub(crate) firehose_streams: usize,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Percentiles {
    /// Median.
    pub(crate) p50: f64,
    /// 90th.
    pub(crate) p90: f64,
    /// 99th.
    pub(crate) p99: f64,
    /// Worst.
    pub(crate) max: f64,
}

/// What a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Report {
    /// The kind benchmarked.
    pub(crate) kind: String,
    /// Jobs enqueued.
    pub(crate) jobs: usize,
    /// HTTP clients.
    pub(crate) concurrency: usize,
    /// Batch size, if batching.
    pub(crate) batch: Option<usize>,
    /// Open-loop rate, if any.
    pub(crate) rate: Option<f64>,
    /// Worker processes (0: in-process).
    pub(crate) workers: usize,
    /// Jobs run before the measured ones and left out.
    pub(crate) warmup: usize,
    /// Jobs accepted per second at the intake.
    pub(crate) intake_jobs_per_sec: f64,
    /// Jobs completed per second, first accepted to last completed.
    pub(crate) end_to_end_jobs_per_sec: f64,
    /// Request latency at the intake (per request: one job, or one batch).
    pub(crate) accept_ms: Percentiles,
    /// Accepted → a worker started it.
    pub(crate) enqueue_to_start_ms: Percentiles,
    /// Accepted → completed in the ledger.
    pub(crate) enqueue_to_completed_ms: Percentiles,
    /// Requests the intake refused with 503/429 (backpressure) and the client retried.
    pub(crate) refused_and_retried: u64,
    /// Jobs completed.
    pub(crate) completed: i64,
    /// Jobs with more than one completed attempt (must be 0).
    pub(crate) completed_twice: i64,
    /// Jobs not completed (must be 0).
    pub(crate) missing: i64,
    /// Peak resident memory of this process in MiB (intake, and in-process workers).
    pub(crate) process_peak_rss_mib: Option<f64>,
    /// Peak resident memory of each worker child process in MiB.
    pub(crate) worker_peak_rss_mib: Vec<f64>,
    /// Raw pipeline messages per second, with `--baseline`.
    pub(crate) baseline_msgs_per_sec: Option<f64>,
    /// End-to-end throughput as a fraction of the raw pipeline.
    pub(crate) ratio_to_baseline: Option<f64>,
}

/// Runs the benchmark.
///
/// # Errors
/// Setup failures, a failed request, or jobs that never complete.
pub(crate) async fn run(settings: Settings, options: BenchOptions) -> anyhow::Result<Report> {
    if options.jobs == 0 || options.concurrency == 0 {
        bail!("--jobs and --concurrency must be at least 1");
    }
    if !matches!(options.kind.as_str(), "noop" | "order.process") {
        bail!(
            "--kind must be noop or order.process, got {:?}",
            options.kind
        );
    }
    let mut target = Target::start(settings, &options).await?;
    let firehoses = open_firehoses(&target, options.firehose_streams).await;
    let warmed = if options.warmup > 0 {
        let warmup = BenchOptions {
            jobs: options.warmup,
            ..options.clone()
        };
        measure(&mut target, &warmup)
            .await
            .context("the warm-up failed")
            .and_then(|report| {
                if report.missing == 0 && report.completed_twice == 0 {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!(
                        "the warm-up lost or repeated jobs: {} missing, {} twice",
                        report.missing,
                        report.completed_twice
                    ))
                }
            })
    } else {
        Ok(())
    };
    let result = match warmed {
        Ok(()) => measure(&mut target, &options).await,
        Err(e) => Err(e),
    };
    for firehose in firehoses {
        firehose.abort();
    }
    target.stop().await;
    let mut report = result?;
    report.warmup = options.warmup;
    if options.baseline {
        eprintln!("measuring the raw pipeline (publish+confirm → consume → batched INSERT → ack)…");
        let rate = baseline(&target.settings, options.jobs.max(20_000)).await?;
        report.baseline_msgs_per_sec = Some(rate);
        report.ratio_to_baseline = Some(report.end_to_end_jobs_per_sec / rate);
    }
    target.cleanup().await;
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report)
}

/// Opens `n` firehose streams on the target and reads them (discarding) until aborted.
async fn open_firehoses(target: &Target, n: usize) -> Vec<tokio::task::JoinHandle<()>> {
    let mut readers = Vec::with_capacity(n);
    if n == 0 {
        return readers;
    }
    // No overall timeout: a stream lives as long as the run.
    let client = reqwest::Client::new();
    for _ in 0..n {
        let request = client.get(format!("{}/v1/events", target.base));
        match request.send().await {
            Ok(mut response) if response.status().is_success() => {
                readers.push(tokio::spawn(async move {
                    while let Ok(Some(_)) = response.chunk().await {}
                }));
            }
            Ok(response) => eprintln!("a firehose stream was refused: {}", response.status()),
            Err(e) => eprintln!("a firehose stream could not open: {e}"),
        }
    }
    eprintln!("{} firehose stream(s) open", readers.len());
    readers
}

/// `--compare-events`: the benchmark with events off, on without subscribers, and on
/// with `streams` firehose streams, each on a fresh target; prints the ratios.
///
/// # Errors
/// As [`run`], or a run that lost or repeated jobs.
pub(crate) async fn compare_events(
    settings: Settings,
    options: BenchOptions,
    streams: usize,
) -> anyhow::Result<()> {
    let mut rates = Vec::new();
    for (label, enabled, firehoses) in [
        ("events off", false, 0),
        ("events on, no subscriber", true, 0),
        ("events on, firehose streams", true, streams),
    ] {
        let mut settings = settings.clone();
        settings.events.enabled = enabled;
        settings.events.max_streams_per_key = settings.events.max_streams_per_key.max(streams);
        let options = BenchOptions {
            firehose_streams: firehoses,
            json: None,
            ..options.clone()
        };
        eprintln!("── {label} ──");
        let report = run(settings, options).await?;
        print!("{}", summary(&report));
        if report.missing != 0 || report.completed_twice != 0 {
            bail!(
                "{label}: {} job(s) missing, {} completed twice",
                report.missing,
                report.completed_twice
            );
        }
        rates.push((label, firehoses, report.end_to_end_jobs_per_sec));
    }
    let off = rates[0].2;
    println!("\nlive events' cost (end-to-end throughput, one run):");
    for (label, firehoses, rate) in &rates {
        let streams = if *firehoses > 0 {
            format!(" ({firehoses})")
        } else {
            String::new()
        };
        println!(
            "  {:<34} {rate:>10.0} jobs/s  {:.3} ×",
            format!("{label}{streams}"),
            rate / off
        );
    }
    Ok(())
}

/// The human summary.
pub(crate) fn summary(report: &Report) -> String {
    let p = |p: &Percentiles| {
        format!(
            "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1} ms",
            p.p50, p.p90, p.p99, p.max
        )
    };
    let mut out = format!(
        "conveyor bench: {} × {} ({} clients{}{}, {} worker process(es), after {} warm-up jobs)\n\
         intake            {:>10.0} jobs/s\n\
         end to end        {:>10.0} jobs/s\n\
         accept            {}\n\
         enqueue→start     {}\n\
         enqueue→completed {}\n\
         exactly once      {} completed, {} twice, {} missing\n\
         backpressure      {} request(s) refused (503/429) and retried\n",
        report.jobs,
        report.kind,
        report.concurrency,
        report
            .batch
            .map_or(String::new(), |b| format!(", batches of {b}")),
        report
            .rate
            .map_or(String::new(), |r| format!(", open loop at {r}/s")),
        report.workers,
        report.warmup,
        report.intake_jobs_per_sec,
        report.end_to_end_jobs_per_sec,
        p(&report.accept_ms),
        p(&report.enqueue_to_start_ms),
        p(&report.enqueue_to_completed_ms),
        report.completed,
        report.completed_twice,
        report.missing,
        report.refused_and_retried,
    );
    if let Some(rss) = report.process_peak_rss_mib {
        out.push_str(&format!("peak RSS          {rss:.1} MiB (this process)\n"));
    }
    for (i, rss) in report.worker_peak_rss_mib.iter().enumerate() {
        out.push_str(&format!("peak RSS          {rss:.1} MiB (worker {i})\n"));
    }
    if let (Some(base), Some(ratio)) = (report.baseline_msgs_per_sec, report.ratio_to_baseline) {
        out.push_str(&format!("raw pipeline      {base:>10.0} msgs/s\nratio             {ratio:>10.3} × the raw pipeline\n"));
    }
    out
}

struct Target {
    settings: Settings,
    base: String,
    running: Option<app::Running>,
    shutdown: CancellationToken,
    children: Vec<tokio::process::Child>,
    owned_database: Option<String>,
    client: reqwest::Client,
    /// The mail relay of a Conveyor the bench started.
    _smtp: Option<smtp_sink::SmtpSink>,
}

impl Target {
    #[expect(
        clippy::too_many_lines,
        reason = "the bench's whole target (database, broker, SMTP sink, conveyor processes) set up in start order"
    )]
    async fn start(mut settings: Settings, options: &BenchOptions) -> anyhow::Result<Target> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(options.concurrency.max(1))
            .build()?;
        if let Some(url) = &options.url {
            let target = Target {
                settings,
                base: url.trim_end_matches('/').to_owned(),
                running: None,
                shutdown: CancellationToken::new(),
                children: Vec::new(),
                owned_database: None,
                client,
                _smtp: None,
            };
            target.wait_until_ready().await?;
            return Ok(target);
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let database = format!("conveyor_bench_{}", &id[..12]);
        let url = settings.database.url.expose_secret().to_owned();
        let server = url
            .rsplit_once('/')
            .map_or(url.as_str(), |(server, _)| server)
            .to_owned();
        settings.database.url = SecretString::from(format!("{server}/{database}"));
        settings.database.max_connections = settings
            .database
            .max_connections
            .max(u32::from(options.worker_concurrency) + 8);
        settings.namespace = format!("bench{}", &id[..10]);
        settings.producer.listen = "127.0.0.1:0".parse().context("a literal address")?;
        settings.producer.api_keys.clear();
        settings.producer.rate_limit = None;
        settings.producer.max_batch = settings.producer.max_batch.max(options.batch.unwrap_or(1));
        settings.worker.queues = [
            ("default".to_owned(), options.worker_concurrency),
            ("orders".to_owned(), options.worker_concurrency),
            ("emails".to_owned(), options.worker_concurrency),
        ]
        .into_iter()
        .collect();
        settings.dispatcher.poll_interval_ms = 200;
        let smtp = smtp_sink::SmtpSink::start()
            .await
            .context("cannot start the bench's SMTP sink")?;
        settings.smtp.host = "127.0.0.1".to_owned();
        settings.smtp.port = smtp.port();
        settings.smtp.tls = worker::mailer::SmtpTls::None;
        settings.smtp.username = None;
        settings.smtp.password = None;
        app::migrate(&settings).await?;
        if options.kind == "order.process" {
            let store = store::Store::connect(&settings.database)?;
            let products = store::parse_catalog(&bench_catalog())?;
            store.upsert_products(&products).await?;
        }
        let in_process_workers = options.workers == 0;
        let roles = Roles {
            producer: true,
            worker: in_process_workers,
            dispatcher: true,
        };
        let shutdown = CancellationToken::new();
        let mut own = settings.clone();
        if options.workers > 0 {
            own.database.max_connections = 16;
        }
        let running = app::start(own, roles, shutdown.clone()).await?;
        let addr = running.producer_addr.context("the intake did not start")?;
        let mut children = Vec::new();
        let exe = if options.workers > 0 {
            Some(conveyor_exe()?)
        } else {
            None
        };
        for n in 0..options.workers {
            let exe = exe.as_deref().context("the conveyor executable")?;
            let queues = format!(
                "default={c},orders={c},emails={c}",
                c = options.worker_concurrency
            );
            let child = tokio::process::Command::new(exe)
                .args(["worker", "--no-dispatcher", "--queues", &queues])
                .env_remove("DATABASE_URL")
                .env_remove("AMQP_URL")
                .env(
                    "CONVEYOR_DATABASE__URL",
                    settings.database.url.expose_secret(),
                )
                .env(
                    "CONVEYOR_DATABASE__MAX_CONNECTIONS",
                    settings.database.max_connections.to_string(),
                )
                .env("CONVEYOR_BROKER__URL", settings.broker.url.expose_secret())
                .env("CONVEYOR_SMTP__HOST", &settings.smtp.host)
                .env("CONVEYOR_SMTP__PORT", settings.smtp.port.to_string())
                .env("CONVEYOR_SMTP__TLS", "none")
                .env("CONVEYOR_NAMESPACE", &settings.namespace)
                .env(
                    "CONVEYOR_EVENTS__ENABLED",
                    settings.events.enabled.to_string(),
                )
                .env(
                    "CONVEYOR_WORKER__NAME",
                    format!("{}-worker-{n}", settings.namespace),
                )
                .env("RUST_LOG", "warn")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a worker process")?;
            children.push(child);
        }
        let target = Target {
            base: format!("http://{addr}"),
            settings,
            running: Some(running),
            shutdown,
            children,
            owned_database: Some(database),
            client,
            _smtp: Some(smtp),
        };
        target.wait_for_consumers(options).await?;
        target.wait_until_ready().await?;
        Ok(target)
    }

    /// Waits (bounded) until the intake reports ready: its database and broker answer,
    /// so the first requests measure the intake and not its first connections.
    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the intake at {} did not become ready within 60 s",
                    self.base
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_for_consumers(&self, options: &BenchOptions) -> anyhow::Result<()> {
        let queue = if options.kind == "order.process" {
            "orders"
        } else {
            "default"
        };
        let expected = options.workers.max(1) as u32;
        let session = broker::Session::open(
            &self.settings.broker,
            &format!("{}-bench-probe", self.settings.namespace),
        )
        .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let topology = app::topology(&self.settings);
        let name = topology.queue(queue);
        // Declared (idempotently, with the workers' arguments) so the passive checks
        // below never fail on a queue that does not exist yet.
        let declared = session.declare(&topology, &[queue]).await;
        let consuming = async {
            declared?;
            loop {
                let declared = session.inspect(&name).await;
                if declared.is_ok_and(|q| q.consumer_count() >= expected) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("workers did not start consuming {name} within 60 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        .await;
        session.close().await;
        consuming
    }

    async fn stop(&mut self) {
        for child in &self.children {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        for child in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            let _ = running.wait().await;
        }
    }

    async fn cleanup(&self) {
        let Some(database) = &self.owned_database else {
            return;
        };
        if let Ok(session) =
            broker::Session::open(&self.settings.broker, "conveyor-bench-cleanup").await
        {
            session
                .delete_namespace(
                    &app::topology(&self.settings),
                    &["default", "orders", "emails"],
                )
                .await;
            session
                .delete_queue(&format!("{}.baseline", self.settings.namespace))
                .await;
            session.close().await;
        }
        let url = self.settings.database.url.expose_secret().to_owned();
        let server = url
            .rsplit_once('/')
            .map_or(url.as_str(), |(server, _)| server)
            .to_owned();
        if let Ok(admin) = sqlx::PgPool::connect(&format!("{server}/postgres")).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
            )))
            .execute(&admin)
            .await;
        }
    }
}

/// The `conveyor` executable beside this one, which `--workers` starts as worker
/// processes.
fn conveyor_exe() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find the conveyor-bench executable")?;
    let exe = me.with_file_name(format!("conveyor{}", std::env::consts::EXE_SUFFIX));
    if !exe.is_file() {
        bail!(
            "--workers starts `conveyor worker` processes, but there is no {}: build it with `cargo build --release` (which builds conveyor and conveyor-bench side by side)",
            exe.display()
        );
    }
    Ok(exe)
}

/// Products the `order.process` bench orders from: [`BENCH_PRODUCTS`] of them, so that
/// concurrent orders do not all wait for one product's row lock.
fn bench_catalog() -> String {
    let mut csv = String::from("sku,name,unit_price_minor,currency,stock\n");
    for i in 0..BENCH_PRODUCTS {
        csv.push_str(&format!("BENCH-{i},Bench item {i},100,USD,2000000000\n"));
    }
    csv
}

const BENCH_PRODUCTS: usize = 100;

fn job_body(kind: &str, i: usize, run: &str) -> Value {
    match kind {
        "order.process" => json!({"kind": "order.process", "args": {
            "order_id": format!("bench-{run}-{i}"),
            "customer": {"email": format!("buyer{i}@example.com"), "name": "Bench Buyer"},
            "items": [{"sku": format!("BENCH-{}", i % BENCH_PRODUCTS), "quantity": 1}],
        }}),
        _ => json!({"kind": "noop", "args": {}}),
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one measurement in its phases (enqueue, drain, read the ledger) with their timings"
)]
async fn measure(target: &mut Target, options: &BenchOptions) -> anyhow::Result<Report> {
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let store = store::Store::connect(&target.settings.database)?;
    let since = chrono::Utc::now();
    let per_request = options.batch.unwrap_or(1).max(1);
    let requests: Vec<Vec<Value>> = (0..options.jobs)
        .map(|i| job_body(&options.kind, i, &run))
        .collect::<Vec<_>>()
        .chunks(per_request)
        .map(<[Value]>::to_vec)
        .collect();
    let started = Instant::now();
    let client = target.client.clone();
    let base = Arc::new(target.base.clone());
    let key = options.api_key.clone();
    let latencies: Vec<anyhow::Result<(Duration, u64)>> =
        futures_util::stream::iter(requests.into_iter().enumerate())
            .map(|(i, jobs)| {
                let client = client.clone();
                let base = Arc::clone(&base);
                let key = key.clone();
                let at = options
                    .rate
                    .map(|r| started + Duration::from_secs_f64(i as f64 / r.max(0.001)));
                async move {
                    if let Some(at) = at {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    let (url, body) = if jobs.len() == 1 && options.batch.is_none() {
                        (
                            format!("{base}/v1/jobs"),
                            jobs.into_iter().next().unwrap_or(Value::Null),
                        )
                    } else {
                        (format!("{base}/v1/jobs/batch"), json!({ "jobs": jobs }))
                    };
                    let sent = Instant::now();
                    let mut refused = 0u64;
                    loop {
                        let mut request = client.post(&url).json(&body);
                        if let Some(key) = &key {
                            request = request.bearer_auth(key);
                        }
                        let response = request.send().await.context("the intake did not answer")?;
                        let status = response.status();
                        if status.is_success() {
                            return Ok((sent.elapsed(), refused));
                        }
                        // Backpressure (503) and rate limits (429) say "come back later";
                        // a well-behaved client waits and retries.
                        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE
                            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        {
                            refused += 1;
                            if refused > 10_000 {
                                bail!("the intake kept refusing ({status})");
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        bail!(
                            "the intake answered {status}: {}",
                            response.text().await.unwrap_or_default()
                        );
                    }
                }
            })
            .buffer_unordered(options.concurrency)
            .collect()
            .await;
    let intake_elapsed = started.elapsed();
    let mut accept: Vec<f64> = Vec::with_capacity(latencies.len());
    let mut refused = 0;
    for latency in latencies {
        let (latency, refusals) = latency?;
        accept.push(latency.as_secs_f64() * 1000.0);
        refused += refusals;
    }

    // Wait (bounded) until every job of this run is completed.
    let total = options.jobs as i64;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = $1 AND created_at >= $2 AND state = 'completed'")
            .bind(&options.kind)
            .bind(since)
            .fetch_one(store.pool())
            .await?;
        if done >= total || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE state = 'completed') AS completed, \
             EXTRACT(EPOCH FROM max(finished_at) - min(created_at))::float8 AS span, \
             percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM started_at - created_at)) AS start_p, \
             max(EXTRACT(EPOCH FROM started_at - created_at))::float8 AS start_max, \
             percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at - created_at)) AS done_p, \
             max(EXTRACT(EPOCH FROM finished_at - created_at))::float8 AS done_max \
         FROM jobs WHERE kind = $1 AND created_at >= $2",
    )
    .bind(&options.kind)
    .bind(since)
    .fetch_one(store.pool())
    .await?;
    let completed: i64 = row.try_get("completed")?;
    let span: Option<f64> = row.try_get("span")?;
    let ms = |p: Option<Vec<f64>>, max: Option<f64>| {
        let p = p.unwrap_or_default();
        Percentiles {
            p50: p.first().copied().unwrap_or(0.0) * 1000.0,
            p90: p.get(1).copied().unwrap_or(0.0) * 1000.0,
            p99: p.get(2).copied().unwrap_or(0.0) * 1000.0,
            max: max.unwrap_or(0.0) * 1000.0,
        }
    };
    let completed_twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT a.job_id FROM job_attempts a JOIN jobs j ON j.id = a.job_id \
         WHERE j.kind = $1 AND j.created_at >= $2 AND a.outcome = 'completed' GROUP BY a.job_id HAVING count(*) > 1) t",
    )
    .bind(&options.kind)
    .bind(since)
    .fetch_one(store.pool())
    .await?;
    let worker_peak_rss_mib = target
        .children
        .iter()
        .filter_map(|c| c.id())
        .filter_map(peak_rss_mib)
        .collect();
    store.pool().close().await;
    Ok(Report {
        kind: options.kind.clone(),
        jobs: options.jobs,
        concurrency: options.concurrency,
        batch: options.batch,
        rate: options.rate,
        workers: options.workers,
        warmup: 0,
        intake_jobs_per_sec: options.jobs as f64 / intake_elapsed.as_secs_f64(),
        end_to_end_jobs_per_sec: span.map_or(0.0, |s| completed as f64 / s.max(1e-6)),
        accept_ms: percentiles(&mut accept),
        enqueue_to_start_ms: ms(row.try_get("start_p")?, row.try_get("start_max")?),
        enqueue_to_completed_ms: ms(row.try_get("done_p")?, row.try_get("done_max")?),
        refused_and_retried: refused,
        completed,
        completed_twice,
        missing: total - completed,
        process_peak_rss_mib: peak_rss_mib(std::process::id()),
        worker_peak_rss_mib,
        baseline_msgs_per_sec: None,
        ratio_to_baseline: None,
    })
}

fn percentiles(values: &mut [f64]) -> Percentiles {
    if values.is_empty() {
        return Percentiles::default();
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: values[values.len() - 1],
    }
}

/// A process's peak resident set (VmHWM) in MiB, from /proc (Linux only).
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The raw pipeline with no Conveyor logic: publish `n` messages with confirms (1,000 in
/// flight) to a quorum queue; consume with manual acks (prefetch 1,000); INSERT them into
/// Postgres in batches of up to 500 rows; ack each batch with `multiple`. Returns
/// messages per second, first publish to last ack.
#[expect(
    clippy::too_many_lines,
    reason = "the raw pipeline's publisher, consumer and inserter written out in one place, as a reader compares it with Conveyor's"
)]
async fn baseline(settings: &Settings, n: usize) -> anyhow::Result<f64> {
    let queue = format!("{}.baseline", settings.namespace);
    // The raw client on purpose: this is what Conveyor is measured against.
    let properties = ConnectionProperties::default()
        .with_connection_name(format!("{}-baseline", settings.namespace).as_str().into());
    // The first configured node (`broker.url`, or the first of `broker.urls`).
    let nodes = settings.broker.node_urls();
    let (_, url) = nodes.first().context("no broker URL configured")?;
    let connection = tokio::time::timeout(
        settings.broker.connect_timeout(),
        Connection::connect(url.expose_secret(), properties),
    )
    .await
    .context("connecting to the broker timed out")??;
    let setup = connection.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from(b"quorum".to_vec())),
    );
    setup
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(settings.database.connect_options()?)
        .await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_baseline (id bigint PRIMARY KEY, body jsonb NOT NULL)",
    )
    .execute(&pool)
    .await?;
    sqlx::query("TRUNCATE bench_baseline")
        .execute(&pool)
        .await?;

    let consume = connection.create_channel().await?;
    consume.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = consume
        .basic_consume(
            queue.as_str().into(),
            "baseline".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let publish = connection.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let body = |i: usize| {
        serde_json::to_vec(&json!({"id": uuid::Uuid::now_v7(), "kind": "noop", "queue": "default", "args": {}, "seq": i})).unwrap_or_default()
    };

    let started = Instant::now();
    let publisher = async {
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        for i in 0..n {
            if in_flight.len() >= 1000 {
                in_flight.next().await.transpose()?;
            }
            let confirm = publish
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body(i),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            in_flight.push(confirm);
        }
        while let Some(confirmed) = in_flight.next().await {
            confirmed?;
        }
        Ok::<_, anyhow::Error>(())
    };
    let consumer_side = async {
        let mut done = 0usize;
        let mut batch: Vec<lapin::message::Delivery> = Vec::with_capacity(500);
        while done < n {
            // Wait for one delivery, then take whatever else arrives within 2 ms, up to
            // 500: one INSERT and one multiple-ack per batch.
            match consumer.next().await {
                Some(delivery) => batch.push(delivery?),
                None => bail!("the baseline consumer stopped"),
            }
            while batch.len() < 500 {
                match tokio::time::timeout(Duration::from_millis(2), consumer.next()).await {
                    Ok(Some(delivery)) => batch.push(delivery?),
                    Ok(None) => bail!("the baseline consumer stopped"),
                    Err(_idle) => break,
                }
            }
            let bodies: Vec<Value> = batch
                .iter()
                .map(|d| serde_json::from_slice(&d.data).unwrap_or(Value::Null))
                .collect();
            let ids: Vec<i64> = bodies
                .iter()
                .map(|b| b["seq"].as_i64().unwrap_or(-1))
                .collect();
            sqlx::query("INSERT INTO bench_baseline (id, body) SELECT * FROM UNNEST($1::bigint[], $2::jsonb[])")
                .bind(&ids)
                .bind(&bodies)
                .execute(&pool)
                .await?;
            if let Some(last) = batch.last() {
                last.acker.ack(BasicAckOptions { multiple: true }).await?;
            }
            done += batch.len();
            batch.clear();
        }
        Ok::<_, anyhow::Error>(())
    };
    let (published, consumed) = tokio::join!(publisher, consumer_side);
    published?;
    consumed?;
    let elapsed = started.elapsed();
    let _ = setup
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = connection.close(200, "baseline done".into()).await;
    sqlx::query("DROP TABLE IF EXISTS bench_baseline")
        .execute(&pool)
        .await?;
    Ok(n as f64 / elapsed.as_secs_f64())
}
