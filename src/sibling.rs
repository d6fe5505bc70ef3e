//! Companion executables installed beside `conveyor`, run as its subcommands (as cargo
//! runs `cargo-<name>` for `cargo <name>`). `conveyor bench` runs `conveyor-bench`: the
//! benchmark (an HTTP client, an SMTP sink, child processes) is a program of its own,
//! so the service binary does not carry it.
//!
//! Under `cargo run` a missing or stale companion is built first with the same profile
//! (a no-op when fresh), so `cargo run --release -- bench` works from a fresh clone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

/// Why a companion could not be run.
#[derive(Debug, thiserror::Error)]
pub enum SiblingError {
    /// This executable's own path is unknown.
    #[error("cannot find the conveyor executable's directory")]
    OwnPath(#[source] std::io::Error),
    /// The companion is not installed beside `conveyor`.
    #[error(
        "`conveyor {command}` runs {path}, which does not exist: build it with `cargo build --release` (it builds conveyor and {name} side by side) or `cargo build --release -p {name}`, and keep it next to conveyor",
        path = path.display()
    )]
    Missing {
        /// The subcommand.
        command: &'static str,
        /// The companion's package and executable name.
        name: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Building it with cargo could not start.
    #[error("cannot run cargo to build {name}")]
    BuildStart {
        /// The companion.
        name: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Building it with cargo failed.
    #[error("building {name} failed ({status}); see cargo's output above")]
    BuildFailed {
        /// The companion.
        name: &'static str,
        /// cargo's exit status.
        status: ExitStatus,
    },
    /// It exists but could not be started.
    #[error("cannot run {path}", path = path.display())]
    Run {
        /// The companion.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Runs `name` (found beside this executable) with `args` in place of this process, as
/// `conveyor <command>`. On Unix the process is replaced, so signals and the exit status
/// are the companion's own; elsewhere this waits and exits with its status.
///
/// # Errors
/// The companion is missing (the message says how to build it), cannot be built under
/// `cargo run`, or cannot be started.
pub fn exec(
    command: &'static str,
    name: &'static str,
    args: Vec<OsString>,
) -> Result<std::convert::Infallible, SiblingError> {
    let me = std::env::current_exe().map_err(SiblingError::OwnPath)?;
    let path = me.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if let Some(cargo) = CargoRun::detect(&me) {
        cargo.build(name)?;
    }
    if !path.is_file() {
        return Err(SiblingError::Missing {
            command,
            name,
            path,
        });
    }
    let mut child = Command::new(&path);
    child.args(args);
    run(child, path)
}

#[cfg(unix)]
fn run(mut child: Command, path: PathBuf) -> Result<std::convert::Infallible, SiblingError> {
    use std::os::unix::process::CommandExt;
    // `exec` returns only when it failed.
    let source = child.exec();
    Err(SiblingError::Run { path, source })
}

#[cfg(not(unix))]
fn run(mut child: Command, path: PathBuf) -> Result<std::convert::Infallible, SiblingError> {
    let status = child
        .status()
        .map_err(|source| SiblingError::Run { path, source })?;
    std::process::exit(status.code().unwrap_or(1));
}

/// This process was started by `cargo run` in Conveyor's workspace: cargo and the
/// manifest are known, and the executable sits in a profile directory of the target.
#[derive(Debug)]
struct CargoRun {
    cargo: PathBuf,
    manifest: PathBuf,
    profile: String,
}

impl CargoRun {
    fn detect(exe: &Path) -> Option<Self> {
        let cargo = std::env::var_os("CARGO")?;
        let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_PATH")?);
        let root = manifest.parent()?;
        if !root.join("bench").join("Cargo.toml").is_file() {
            return None;
        }
        let profile_dir = exe.parent()?;
        // Cargo marks its target directory with CACHEDIR.TAG; a copy elsewhere is not
        // cargo's to rebuild.
        if !profile_dir.parent()?.join("CACHEDIR.TAG").is_file() {
            return None;
        }
        let profile = profile_dir.file_name()?.to_str()?.to_owned();
        Some(Self {
            cargo: cargo.into(),
            manifest,
            profile,
        })
    }

    fn build(&self, name: &'static str) -> Result<(), SiblingError> {
        let profile = match self.profile.as_str() {
            "debug" => "dev",
            other => other,
        };
        eprintln!("conveyor: building {name} (cargo build --profile {profile} -p {name})");
        let mut cargo = Command::new(&self.cargo);
        // What `cargo run` set for this package's run, not configuration: inherited, it
        // would change build scripts' inputs and rebuild dependencies for nothing.
        for (key, _) in std::env::vars_os() {
            let Some(key) = key.to_str() else { continue };
            if key.starts_with("CARGO_PKG_")
                || matches!(
                    key,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "OUT_DIR"
                )
            {
                cargo.env_remove(key);
            }
        }
        let status = cargo
            .arg("build")
            .arg("--manifest-path")
            .arg(&self.manifest)
            .args(["--profile", profile, "-p", name, "--bin", name])
            .status()
            .map_err(|source| SiblingError::BuildStart { name, source })?;
        if status.success() {
            Ok(())
        } else {
            Err(SiblingError::BuildFailed { name, status })
        }
    }
}
