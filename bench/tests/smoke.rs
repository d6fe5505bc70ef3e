//! `conveyor bench` smoke test: a few hundred jobs, checking the accounting (all
//! completed, none twice) — never the speed.

/// Postgres server URL, without a database (as the workspace's end-to-end tests read it).
fn postgres_base() -> String {
    std::env::var("CONVEYOR_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// RabbitMQ URL.
fn amqp_url() -> String {
    std::env::var("CONVEYOR_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

use serde_json::Value;

#[tokio::test]
async fn bench_accounts_for_every_job_exactly_once() {
    let dir = std::env::temp_dir().join(format!("conveyor-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let report_path = dir.join("report.json");

    for (kind, extra) in [("noop", vec!["--batch", "50"]), ("order.process", vec![])] {
        let mut args = vec![
            "--jobs",
            "300",
            "--kind",
            kind,
            "--concurrency",
            "8",
            "--warmup",
            "20",
            "--json",
        ];
        let path = report_path.to_str().unwrap().to_owned();
        args.push(&path);
        args.extend(extra);
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor-bench"))
            .args(&args)
            .env_remove("DATABASE_URL")
            .env_remove("AMQP_URL")
            .env(
                "CONVEYOR_DATABASE__URL",
                format!("{}/postgres", postgres_base()),
            )
            .env("CONVEYOR_BROKER__URL", amqp_url())
            .env("RUST_LOG", "warn")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "bench {kind} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("exactly once      300 completed, 0 twice, 0 missing"),
            "{stdout}"
        );
        let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
        assert_eq!(report["kind"], kind);
        assert_eq!(report["completed"], 300);
        assert_eq!(report["completed_twice"], 0);
        assert_eq!(report["missing"], 0);
        assert!(report["accept_ms"]["p50"].as_f64().unwrap() > 0.0);
    }
    std::fs::remove_dir_all(dir).ok();
}
