//! Logging: `tracing` to stderr, human-readable or JSON lines, filtered by `RUST_LOG`
//! (default `info`, with the AMQP and SQL clients' chatter at `warn`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people.
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {
    /// The name `--log-format` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        }
    }
}

/// Installs the global subscriber once. Later calls do nothing (tests call it often).
/// With the `otlp` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also
/// exported over OTLP/HTTP (call [`shutdown`] before exiting to flush them).
pub fn init(format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,sqlx=warn,lapin=warn,amq_protocol=warn,tower_http=info")
    });
    let (pretty, json) = match format {
        LogFormat::Pretty => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_span_events(FmtSpan::NONE),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(pretty)
        .with(json);
    #[cfg(feature = "otlp")]
    let registry = registry.with(otlp::layer());
    let _ = registry.try_init();
}

/// Flushes exported spans (a no-op without the `otlp` feature or an endpoint).
pub fn shutdown() {
    #[cfg(feature = "otlp")]
    otlp::shutdown();
}

#[cfg(feature = "otlp")]
mod otlp {
    use std::sync::OnceLock;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

    /// The export layer, when `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector.
    pub(super) fn layer<S>()
    -> Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT")?;
        let exporter = match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => exporter,
            Err(e) => {
                eprintln!("OTLP export disabled: {e}");
                return None;
            }
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("conveyor")
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("conveyor");
        let _ = PROVIDER.set(provider);
        Some(tracing_opentelemetry::layer().with_tracer(tracer))
    }

    pub(super) fn shutdown() {
        if let Some(provider) = PROVIDER.get() {
            let _ = provider.shutdown();
        }
    }
}

/// The process's Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let seconds = [
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ];
        let builder = metrics_exporter_prometheus::PrometheusBuilder::new();
        // The bucket list is a non-empty literal, so setting it cannot fail.
        let builder = builder
            .set_buckets(&seconds)
            .unwrap_or_else(|_| metrics_exporter_prometheus::PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows only the ledger gauges"
            );
        }
        handle
    })
}

/// Renders `/metrics`: this process's counters and histograms, then per-queue gauges
/// read from the ledger at scrape time (so every process reports the same queue view).
pub fn metrics_renderer(store: store::Store) -> producer::MetricsRender {
    let handle = prometheus();
    std::sync::Arc::new(move || {
        let store = store.clone();
        Box::pin(async move {
            let mut text = handle.render();
            match tokio::time::timeout(std::time::Duration::from_secs(5), store.queue_stats()).await
            {
                Ok(Ok(stats)) => text.push_str(&queue_gauges(&stats)),
                Ok(Err(e)) => tracing::warn!(error = %e, "queue gauges unavailable"),
                Err(_) => tracing::warn!("queue gauges timed out"),
            }
            text
        })
    })
}

/// The `# HELP` and `# TYPE` lines that open a gauge family.
fn gauge_header(out: &mut String, name: &str, help: &str) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// Per-queue ledger gauges in Prometheus text format.
pub fn queue_gauges(stats: &[store::QueueStats]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    gauge_header(
        &mut out,
        "conveyor_queue_jobs",
        "Jobs per queue and state, from the ledger.",
    );
    for q in stats {
        for (state, n) in [
            ("ready", q.ready),
            ("running", q.running),
            ("scheduled", q.scheduled),
            ("retrying", q.retrying),
            ("dead", q.dead),
        ] {
            let _ = writeln!(
                out,
                "conveyor_queue_jobs{{queue=\"{}\",state=\"{state}\"}} {n}",
                q.queue
            );
        }
    }
    gauge_header(
        &mut out,
        "conveyor_queue_oldest_ready_age_seconds",
        "Age of the oldest job waiting for a worker (scale workers on this).",
    );
    for q in stats {
        let _ = writeln!(
            out,
            "conveyor_queue_oldest_ready_age_seconds{{queue=\"{}\"}} {}",
            q.queue, q.oldest_ready_age_seconds
        );
    }
    gauge_header(
        &mut out,
        "conveyor_queue_attempts_last_minute",
        "Attempts finished in the last minute, by result.",
    );
    for q in stats {
        let _ = writeln!(
            out,
            "conveyor_queue_attempts_last_minute{{queue=\"{}\",result=\"completed\"}} {}",
            q.queue, q.completed_last_minute
        );
        let _ = writeln!(
            out,
            "conveyor_queue_attempts_last_minute{{queue=\"{}\",result=\"failed\"}} {}",
            q.queue, q.failed_last_minute
        );
    }
    out
}
