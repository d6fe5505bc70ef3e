//! `conveyor bench` runs the `conveyor-bench` executable beside `conveyor` (the bench's
//! own smoke test is `bench/tests/smoke.rs`). Each test copies `conveyor` into a
//! directory of its own, so it controls what lies beside it.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Held while writing an executable and while starting a process. A process forked
/// while another test's executable is open for writing inherits that descriptor until
/// it execs, and running that executable then fails with "text file busy" (ETXTBSY).
static WRITE_OR_SPAWN: Mutex<()> = Mutex::new(());

fn exclusive() -> MutexGuard<'static, ()> {
    WRITE_OR_SPAWN
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A directory holding a copy of `conveyor`.
fn install_conveyor(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    install(env!("CARGO_BIN_EXE_conveyor"), &dir.join("conveyor"));
    dir
}

/// Copies the executable `from` to `to`.
fn install(from: impl AsRef<Path>, to: &Path) {
    let _exclusive = exclusive();
    std::fs::copy(from, to).unwrap();
}

/// Runs the copied `conveyor` with `args`, outside cargo (so nothing is built for it).
fn conveyor(dir: &Path, args: &[&str]) -> Output {
    let child = {
        let _exclusive = exclusive();
        std::process::Command::new(dir.join("conveyor"))
            .args(args)
            .env_remove("CARGO")
            .env_remove("CARGO_MANIFEST_PATH")
            .env_remove("CONVEYOR_CONFIG")
            .env_remove("CONVEYOR_LOG_FORMAT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    child.wait_with_output().unwrap()
}

#[cfg(unix)]
#[test]
fn bench_runs_conveyor_bench_with_the_global_flags_and_every_argument() {
    use std::os::unix::fs::PermissionsExt;
    let dir = install_conveyor("bench-runs");
    let fake = dir.join("conveyor-bench");
    {
        let _exclusive = exclusive();
        std::fs::write(
            &fake,
            "#!/bin/sh\nfor arg in \"$@\"; do echo \"arg:$arg\"; done\nexit 3\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    let output = conveyor(
        &dir,
        &[
            "--namespace",
            "ns1",
            "bench",
            "--jobs",
            "5",
            "--kind",
            "noop",
            "--help",
        ],
    );

    let stdout = String::from_utf8_lossy(&output.stdout);
    let args: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("arg:"))
        .collect();
    assert_eq!(
        args,
        [
            "--log-format",
            "pretty",
            "--namespace",
            "ns1",
            "--jobs",
            "5",
            "--kind",
            "noop",
            "--help"
        ]
    );
    assert_eq!(
        output.status.code(),
        Some(3),
        "its exit status is the bench's"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bench_without_conveyor_bench_beside_it_says_how_to_build_it() {
    let dir = install_conveyor("bench-missing");

    let output = conveyor(&dir, &["bench", "--jobs", "5"]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("conveyor-bench"), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(stderr.contains("cargo build --release"), "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_real_conveyor_bench_answers_help_through_conveyor() {
    // Beside the test's own `conveyor` when the workspace was built (`cargo build` and
    // `cargo test --workspace` build both); otherwise there is nothing to run.
    let beside = Path::new(env!("CARGO_BIN_EXE_conveyor")).with_file_name("conveyor-bench");
    if !beside.is_file() {
        eprintln!("skipped: {} is not built", beside.display());
        return;
    }
    let dir = install_conveyor("bench-help");
    install(&beside, &dir.join("conveyor-bench"));

    let output = conveyor(&dir, &["bench", "--help"]);

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("Usage: conveyor bench"), "{stdout}");
    assert!(stdout.contains("--baseline"), "{stdout}");
    assert!(stdout.contains("--database-url"), "{stdout}");
    std::fs::remove_dir_all(dir).ok();
}
