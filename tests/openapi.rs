//! `/openapi.json` against the intake that serves it, with keys configured: schemathesis
//! (every check) must find nothing, and a Python client generated from the document by
//! openapi-python-client must enqueue an order and read it back.
//!
//! The tools come from PyPI, pinned in `tests/openapi/requirements.txt`; `.ci/run`
//! installs them into `target/openapi-venv`. Outside CI (`CI` unset) a missing tool skips
//! the test with a message; in CI (`CI=true`) it is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{TestApp, spawn_app_with};
use conveyor::app::Roles;
use producer::settings::RateLimit;

/// Where `.ci/run` installs the tools, or `CONVEYOR_TEST_OPENAPI_VENV`.
fn venv() -> PathBuf {
    std::env::var_os("CONVEYOR_TEST_OPENAPI_VENV").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/openapi-venv"),
        PathBuf::from,
    )
}

/// The venv's executable `name`, or `name` on `PATH`.
fn tool(name: &str) -> Option<PathBuf> {
    let in_venv = venv().join("bin").join(name);
    if in_venv.is_file() {
        return Some(in_venv);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// The tool, or `None` after saying why the test is skipped; in CI, a failure.
fn require(name: &str) -> Option<PathBuf> {
    let found = tool(name);
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is missing in CI: .ci/run installs tests/openapi/requirements.txt into target/openapi-venv"
        );
        eprintln!(
            "SKIPPED: {name} is not installed (python3 -m venv target/openapi-venv && \
             target/openapi-venv/bin/pip install -r tests/openapi/requirements.txt)"
        );
    }
    found
}

/// An intake (with a worker when `roles` says so) and one configured key, with limits
/// high enough that a generated test run is not throttled.
async fn app_with_key(roles: Roles) -> (TestApp, String) {
    let (key, hash) = producer::auth::new_key().expect("a key");
    let app = spawn_app_with(
        move |s| {
            s.producer.api_keys = vec![hash];
            s.producer.rate_limit = Some(RateLimit {
                per_second: 100_000,
                burst: 100_000,
            });
            s.producer.auth_failures = RateLimit {
                per_second: 100_000,
                burst: 100_000,
            };
        },
        roles,
    )
    .await;
    (app, key)
}

async fn run(command: &mut tokio::process::Command, what: &str) -> (bool, String) {
    let output = tokio::time::timeout(Duration::from_secs(900), command.output())
        .await
        .unwrap_or_else(|_| panic!("{what} finishes within 15 minutes"))
        .unwrap_or_else(|e| panic!("{what} runs: {e}"));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
#[ignore = "7 open findings (issue #21), all schema-valid requests refused: POST /v1/jobs, \
            /v1/jobs/batch and /v1/webhooks (a URL whose host resolves to a refused or \
            no address: a policy the document cannot state), POST /v1/schedules (args \
            not described per kind), PATCH /v1/schedules/{name} (timezone not described), \
            POST /v1/dead/purge (args, which only a replay takes) and /v1/dead/replay \
            (corrected args need exactly one matching job); run with --ignored"]
async fn schemathesis_finds_nothing_against_an_intake_with_keys() {
    let Some(st) = require("schemathesis") else {
        return;
    };
    // No worker: the generated jobs include the test kinds that panic and abort.
    let (app, key) = app_with_key(Roles::INTAKE).await;

    let (ok, report) = run(
        tokio::process::Command::new(st)
            .arg("run")
            .arg(format!("{}/openapi.json", app.address))
            .args(["--checks", "all", "--max-examples", "25", "--workers", "1"])
            .arg("--header")
            .arg(format!("Authorization: Bearer {key}"))
            // Its cache (`.schemathesis/`) stays out of the repository.
            .current_dir(std::env::temp_dir())
            .kill_on_drop(true),
        "schemathesis",
    )
    .await;

    // Teardown first: a failed run must not leave its queues behind.
    app.teardown().await;
    assert!(ok, "schemathesis reported findings:\n{report}");
}

#[tokio::test]
async fn a_python_client_generated_from_the_document_enqueues_an_order_and_reads_it_back() {
    let Some(generator) = require("openapi-python-client") else {
        return;
    };
    let python = tool("python3").or_else(|| tool("python")).expect("python");
    let (app, key) = app_with_key(Roles::ALL).await;
    app.seed_products("sku,name,unit_price_minor,currency,stock\nMUG,Blue mug,1250,USD,10\n")
        .await;
    let dir = std::env::temp_dir().join(format!("conveyor-openapi-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = app
        .client
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(dir.join("openapi.json"), spec).unwrap();

    let (generated, report) = run(
        tokio::process::Command::new(generator)
            .args(["generate", "--path"])
            .arg(dir.join("openapi.json"))
            .arg("--output-path")
            .arg(dir.join("client"))
            .kill_on_drop(true),
        "openapi-python-client",
    )
    .await;
    assert!(generated, "generation failed:\n{report}");
    let (ran, output) = run(
        tokio::process::Command::new(&python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/roundtrip.py"))
            .arg(&app.address)
            .arg(&key)
            .arg(dir.join("client"))
            .kill_on_drop(true),
        "the generated client",
    )
    .await;

    assert!(ran, "the generated client failed:\n{output}");
    let id = output.lines().next().unwrap_or_default().trim().to_owned();
    app.wait_for_state_at(
        &app.address,
        Some(&key),
        &id,
        "completed",
        Duration::from_secs(60),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    app.teardown().await;
}
