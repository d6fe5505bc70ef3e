//! A throwaway three-node RabbitMQ cluster for one test: `scripts/rabbitmq-cluster.sh`
//! starts the nodes (own names, ports, data directories and Erlang cookie, so the shared
//! broker on 5672 is never touched), joins them and waits until all three run; dropping
//! the [`Cluster`] stops them and deletes their data, also when the test panics.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

/// The script that runs the cluster.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/rabbitmq-cluster.sh")
}

/// The three nodes, by the script's short names.
pub const NODES: [&str; 3] = ["a", "b", "c"];

pub struct Cluster {
    dir: PathBuf,
    /// The AMQP URL of each node, in [`NODES`] order.
    pub urls: Vec<String>,
}

impl Cluster {
    /// Starts three nodes and joins them; returns once all three run.
    pub async fn start() -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "conveyor-cluster-{}",
            uuid::Uuid::new_v4().simple()
        ));
        // From here on, Drop cleans up whatever the script got to.
        let mut cluster = Cluster {
            dir,
            urls: Vec::new(),
        };
        let output = tokio::time::timeout(
            Duration::from_secs(300),
            tokio::process::Command::new(script())
                .arg("start")
                .arg(&cluster.dir)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the cluster starts within 5 minutes")
        .expect("the cluster script runs");
        assert!(
            output.status.success(),
            "the cluster did not start: {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            cluster.logs_hint()
        );
        cluster.urls = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(cluster.urls.len(), 3, "three URLs: {:?}", cluster.urls);
        cluster
    }

    fn logs_hint(&self) -> String {
        format!("(node logs under {})", self.dir.display())
    }

    /// The URL of `node`.
    pub fn url(&self, node: &str) -> &str {
        &self.urls[index(node)]
    }

    /// The URLs starting at `node`, then the others in order (for `node_order = listed`).
    pub fn urls_from(&self, node: &str) -> Vec<String> {
        let first = index(node);
        (0..3).map(|i| self.urls[(first + i) % 3].clone()).collect()
    }

    /// `urls_from(node)` as a `CONVEYOR_BROKER__URLS` value.
    pub fn urls_env(&self, node: &str) -> String {
        serde_json::to_string(&self.urls_from(node)).expect("strings serialize")
    }

    /// Runs the script's `COMMAND DIR ARGS…`; returns (success, stdout, stderr).
    async fn run(&self, command: &str, args: &[&str]) -> (bool, String, String) {
        let output = tokio::time::timeout(
            Duration::from_secs(180),
            tokio::process::Command::new(script())
                .arg(command)
                .arg(&self.dir)
                .args(args)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("`{command} {args:?}` finished within 3 minutes"))
        .expect("the cluster script runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `rabbitmqctl -n <node> ARGS`, asserting success; returns stdout.
    pub async fn ctl(&self, node: &str, args: &[&str]) -> String {
        let mut all = vec![node];
        all.extend_from_slice(args);
        let (ok, stdout, stderr) = self.run("ctl", &all).await;
        assert!(ok, "rabbitmqctl -n {node} {args:?} failed: {stderr}");
        stdout
    }

    /// Stops the RabbitMQ application on `node` (the Erlang VM keeps running).
    pub async fn stop_app(&self, node: &str) {
        self.ctl(node, &["stop_app"]).await;
    }

    /// Starts the RabbitMQ application on `node` again.
    pub async fn start_app(&self, node: &str) {
        self.ctl(node, &["start_app"]).await;
    }

    /// SIGKILLs the Erlang VM of `node`.
    pub async fn kill(&self, node: &str) {
        let (ok, _, stderr) = self.run("kill-node", &[node]).await;
        assert!(ok, "killing node {node} failed: {stderr}");
    }

    /// Starts `node` again after a kill (it rejoins the cluster from its data).
    pub async fn start_node(&self, node: &str) {
        let (ok, _, stderr) = self.run("start-node", &[node]).await;
        assert!(
            ok,
            "node {node} did not start again: {stderr} {}",
            self.logs_hint()
        );
    }

    /// Every client connection in the cluster as (node, connection name), asked of the
    /// first node that answers (`list_connections` covers the whole cluster; a
    /// connection's pid names the node holding it). Empty when no node answers.
    pub async fn connections(&self) -> Vec<(&'static str, String)> {
        for node in NODES {
            let (ok, stdout, _) = self
                .run(
                    "ctl",
                    &[node, "list_connections", "pid", "client_properties"],
                )
                .await;
            if ok {
                return stdout.lines().filter_map(parse_connection).collect();
            }
        }
        Vec::new()
    }

    /// The node holding a connection whose name starts with `prefix`, if any does.
    pub async fn node_of(&self, prefix: &str) -> Option<&'static str> {
        self.connections()
            .await
            .into_iter()
            .find(|(_, name)| name.starts_with(prefix))
            .map(|(node, _)| node)
    }

    /// How many nodes `node` sees running (0 when it does not answer).
    pub async fn running_seen_by(&self, node: &str) -> usize {
        let (ok, stdout, _) = self
            .run("ctl", &[node, "cluster_status", "--formatter", "json"])
            .await;
        if !ok {
            return 0;
        }
        let status: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
        status["running_nodes"].as_array().map_or(0, Vec::len)
    }

    /// Waits (bounded) until every node sees all three running.
    pub async fn wait_all_running(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
        loop {
            let mut all = true;
            for node in NODES {
                if self.running_seen_by(node).await != 3 {
                    all = false;
                    break;
                }
            }
            if all {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the cluster did not show three running nodes within 3 minutes {}",
                self.logs_hint()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// (node, name) from a `list_connections pid client_properties` line: the pid reads
/// `<conveyor-PORT-a@localhost.1.2.3>`, the properties hold `{"connection_name","NAME"}`.
fn parse_connection(line: &str) -> Option<(&'static str, String)> {
    let pid = line.split_whitespace().next()?;
    let short = pid.split('@').next()?.rsplit('-').next()?;
    let node = NODES.into_iter().find(|n| *n == short)?;
    let from = line.find("\"connection_name\",\"")? + "\"connection_name\",\"".len();
    let name = line[from..].split('"').next()?;
    Some((node, name.to_owned()))
}

fn index(node: &str) -> usize {
    NODES
        .iter()
        .position(|n| *n == node)
        .unwrap_or_else(|| panic!("no node {node:?}"))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Synchronous on purpose: it must finish before the test process exits.
        let stopped = std::process::Command::new(script())
            .arg("stop")
            .arg(&self.dir)
            .status();
        if !matches!(stopped, Ok(s) if s.success()) {
            eprintln!(
                "stopping the test cluster failed: {stopped:?} {}",
                self.logs_hint()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
