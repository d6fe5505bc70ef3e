//! Conveyor on a three-node RabbitMQ cluster (`common::cluster`, started by
//! `scripts/rabbitmq-cluster.sh` beside the shared broker, never touching it): queue
//! declarations agree across nodes and group sizes, and under a steady load of orders
//! the node that the intake and a worker are connected to is stopped, brought back,
//! then killed (SIGKILL of its Erlang VM) and brought back. Every accepted order
//! completes once, none is doubled, stock moves exactly as sold, and the intake answers
//! 2xx or a retryable 503 throughout. The test prints what it injected and what it
//! counted (the README quotes these figures).

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use broker::{BrokerSettings, Session, Topology};
use common::cluster::Cluster;
use common::{TestApp, free_port, spawn_app_with, terminate};
use conveyor::app::Roles;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ConnectionProperties};
use secrecy::SecretString;
use serde_json::{Value, json};

/// What the intake answered over the whole run.
#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    /// 503 with `Retry-After`: the client is told to come back.
    retryable: AtomicU64,
    /// Anything else that was not a 2xx (a 5xx without `Retry-After`, a 4xx, no answer).
    violations: Mutex<Vec<String>>,
}

/// Posts an order until accepted, as a client should: the order id is the idempotency
/// key, so retries are safe; every answer is tallied.
async fn post_until_accepted(
    client: &reqwest::Client,
    base: &str,
    body: &Value,
    key: &str,
    tally: &Tally,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let response = client
            .post(format!("{base}/v1/jobs"))
            .header("idempotency-key", key)
            .timeout(Duration::from_secs(60))
            .json(body)
            .send()
            .await;
        match response {
            Ok(r) if r.status() == 202 || r.status() == 200 => {
                tally.accepted.fetch_add(1, Ordering::Relaxed);
                let body: Value = r.json().await.expect("json body");
                return body["id"].as_str().expect("an id").to_owned();
            }
            Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => {
                tally.retryable.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                tally
                    .violations
                    .lock()
                    .expect("tally lock")
                    .push(format!("{status}: {text}"));
            }
            Err(e) => tally
                .violations
                .lock()
                .expect("tally lock")
                .push(format!("no answer: {e}")),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {key} never accepted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sum of a Prometheus counter's series on the `/metrics` page at `url`.
async fn counter(client: &reqwest::Client, url: &str, name: &str) -> f64 {
    let text = client
        .get(url)
        .send()
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The database's clock, to compare with `created_at`.
async fn db_now(app: &TestApp) -> String {
    sqlx::query_scalar("SELECT now()::text")
        .fetch_one(app.store.pool())
        .await
        .expect("the database answers")
}

/// Waits (bounded) until each named connection is held by a node other than `victim`
/// and an order accepted after `since` is on its way (its publish confirmed, or already
/// claimed by a worker); returns how long that took.
async fn wait_recovered(
    app: &TestApp,
    cluster: &Cluster,
    victim: &str,
    connections: &[String],
    since: &str,
) -> Duration {
    let started = tokio::time::Instant::now();
    let flowing_since = format!(
        "SELECT count(*) FROM jobs WHERE kind = 'order.process' AND created_at > '{since}'::timestamptz \
         AND (published_at IS NOT NULL OR state <> 'enqueued')"
    );
    loop {
        let held = cluster.connections().await;
        let moved = connections.iter().all(|prefix| {
            held.iter()
                .any(|(node, name)| name.starts_with(prefix.as_str()) && *node != victim)
        });
        if moved && app.count(&flowing_since).await > 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "no recovery from the loss of node {victim} within 3 minutes (connections {connections:?} moved: {moved})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Quorum queue members listed by `rabbitmqctl list_queues name members`.
async fn members(cluster: &Cluster, queue: &str) -> usize {
    let listed = cluster.ctl("a", &["list_queues", "name", "members"]).await;
    listed
        .lines()
        .find(|l| l.split_whitespace().next() == Some(queue))
        .map_or(0, |l| l.matches('@').count())
}

/// Declarations from every node agree, whatever group size each process is configured
/// with; RabbitMQ itself would refuse them. Returns a line for the report.
#[expect(
    clippy::too_many_lines,
    reason = "the same declarations checked from each node in turn, in one place"
)]
async fn declarations_agree_across_nodes(cluster: &Cluster, namespace: &str) -> String {
    let on = |node: &str| BrokerSettings {
        url: SecretString::from(cluster.url(node).to_owned()),
        ..BrokerSettings::default()
    };
    let a = Session::open(&on("a"), "conveyor-test-declare")
        .await
        .expect("node a answers");
    let b = Session::open(&on("b"), "conveyor-test-declare")
        .await
        .expect("node b answers");
    let c = Session::open(&on("c"), "conveyor-test-declare")
        .await
        .expect("node c answers");
    let sized = |size: Option<u16>| Topology::new(namespace, 5).with_quorum_group_size(size);

    a.declare(&sized(Some(3)), &["replicated"])
        .await
        .expect("declared on a with 3");
    // RabbitMQ refuses a plain re-declaration with another group size (the raw client:
    // Conveyor's own declarations never send one the queue does not have)...
    let raw_client = |node: &str| {
        let url = cluster.url(node).to_owned();
        async move {
            Connection::connect(
                &url,
                ConnectionProperties::default().with_connection_name("conveyor-test-raw".into()),
            )
            .await
            .expect("the node answers the raw client")
        }
    };
    let raw_a = raw_client("a").await;
    let raw_b = raw_client("b").await;
    let plain = format!("{namespace}.plain");
    let raw = |size: i32| {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from(b"quorum".to_vec())),
        );
        args.insert(
            "x-quorum-initial-group-size".into(),
            AMQPValue::LongInt(size),
        );
        args
    };
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let channel = raw_a.create_channel().await.expect("channel");
    channel
        .queue_declare(plain.as_str().into(), durable, raw(3))
        .await
        .expect("plain queue");
    let _ = channel.close(200, "declared".into()).await;
    let channel = raw_b.create_channel().await.expect("channel");
    let refused = channel
        .queue_declare(plain.as_str().into(), durable, raw(2))
        .await
        .expect_err("RabbitMQ refuses another group size")
        .to_string();
    assert!(refused.contains("x-quorum-initial-group-size"), "{refused}");
    // ...while Conveyor's declarations from other nodes, with another size or none, agree.
    b.declare(&sized(Some(2)), &["replicated"])
        .await
        .expect("re-declared on b with 2");
    c.declare(&sized(None), &["replicated"])
        .await
        .expect("re-declared on c with none");
    // A real difference is still reported.
    let other_limit = Topology::new(namespace, 7).with_quorum_group_size(Some(2));
    let mismatch = b
        .declare(&other_limit, &["replicated"])
        .await
        .expect_err("another delivery limit is refused")
        .to_string();
    assert!(mismatch.contains("x-delivery-limit"), "{mismatch}");
    // The size decides how many nodes hold a new queue.
    b.declare(&sized(Some(2)), &["pair"])
        .await
        .expect("declared on b with 2");
    let replicated = members(cluster, &format!("{namespace}.q.replicated")).await;
    let pair = members(cluster, &format!("{namespace}.q.pair")).await;
    assert_eq!(
        replicated, 3,
        "a queue declared with size 3 has three members"
    );
    assert_eq!(pair, 2, "a queue declared with size 2 has two members");

    a.delete_namespace(&sized(None), &["replicated", "pair"])
        .await;
    a.delete_queue(&plain).await;
    for session in [a, b, c] {
        session.close().await;
    }
    for connection in [raw_a, raw_b] {
        let _ = connection.close(200, "done".into()).await;
    }
    format!(
        "declarations: size 3 on a, 2 on b, none on c agree (RabbitMQ alone refuses: {}); members 3 and 2",
        refused
            .split(" - ")
            .nth(1)
            .and_then(|r| r.split(" for queue").next())
            .unwrap_or(&refused)
    )
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one fault scenario read top to bottom: load, node stops and kills, then the books"
)]
async fn a_cluster_node_stopped_then_killed_under_load_loses_and_doubles_no_order() {
    const RATE_PER_SECOND: u64 = 200;
    const MAX_BACKLOG: u64 = 400;
    const SLEEPERS: usize = 8;
    let cluster = Cluster::start().await;
    let app = spawn_app_with(|_| {}, Roles::NONE).await;
    let ns = app.settings.namespace.clone();
    let declared = declarations_agree_across_nodes(&cluster, &ns).await;

    // PLENTY never runs out; SCARCE does, so orders contend and some are rejected.
    app.seed_products("sku,name,unit_price_minor,currency,stock\nPLENTY,Plenty,250,USD,10000000\nSCARCE,Scarce,990,USD,1500\n").await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listed = |first: &str| {
        vec![
            ("CONVEYOR_BROKER__URLS", cluster.urls_env(first)),
            ("CONVEYOR_BROKER__NODE_ORDER", "listed".to_owned()),
        ]
    };
    // The intake and worker 1 start on node a, worker 2 on node b.
    let mut intake = app.spawn_child(
        &["producer", "--listen", &format!("127.0.0.1:{port}")],
        &listed("a"),
    );
    let worker_ports = [free_port(), free_port()];
    let worker_names = [format!("{ns}-wk1"), format!("{ns}-wk2")];
    let mut workers = Vec::new();
    for (i, first) in ["a", "b"].into_iter().enumerate() {
        let mut env = listed(first);
        env.push(("CONVEYOR_WORKER__NAME", worker_names[i].clone()));
        workers.push(app.spawn_child(
            &[
                "worker",
                "--queues",
                "orders=16,emails=8,default=2",
                "--listen",
                &format!("127.0.0.1:{}", worker_ports[i]),
            ],
            &env,
        ));
    }
    app.wait_ready(&base).await;
    let intake_name = format!("{ns}-producer-");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let held = cluster.connections().await;
        let connected = |prefix: &str| held.iter().any(|(_, name)| name.starts_with(prefix));
        if worker_names.iter().all(|w| connected(w)) && connected(&intake_name) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("the intake and both workers did not all connect; connections: {held:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let tally = Tally::default();
    let stop = AtomicBool::new(false);
    // Orders completed so far, refreshed while the load runs: the load offers up to
    // RATE_PER_SECOND but keeps at most MAX_BACKLOG orders unfinished, so a slow
    // machine gets a steady load it can carry instead of a backlog to drain.
    let completed_so_far = AtomicU64::new(0);
    let watch = async {
        while !stop.load(Ordering::Relaxed) {
            let n = app
                .count("SELECT count(*) FROM jobs WHERE kind = 'order.process' AND state = 'completed'")
                .await;
            completed_so_far.store(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let started = tokio::time::Instant::now();
    let load = async {
        use futures_util::StreamExt;
        futures_util::stream::iter(0u64..)
            .take_while(|_| std::future::ready(!stop.load(Ordering::Relaxed)))
            .map(|i| {
                let at = started + Duration::from_micros(i * 1_000_000 / RATE_PER_SECOND);
                let order_id = format!("ORD-{i:06}");
                let body = json!({"kind": "order.process", "args": {
                    "order_id": order_id,
                    "customer": {"email": format!("buyer{i}@example.com"), "name": "Buyer"},
                    "items": [{"sku": "PLENTY", "quantity": 1 + i % 3}, {"sku": "SCARCE", "quantity": 1}],
                }});
                let client = app.client.clone();
                let base = base.clone();
                let tally = &tally;
                let completed_so_far = &completed_so_far;
                let stop = &stop;
                async move {
                    tokio::time::sleep_until(at).await;
                    // (Once the faults are over the watcher stops; so does the bound.)
                    while !stop.load(Ordering::Relaxed)
                        && i > completed_so_far.load(Ordering::Relaxed) + MAX_BACKLOG
                    {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    post_until_accepted(&client, &base, &body, &order_id, tally).await
                }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await
    };
    let chaos = async {
        let mut report = Vec::new();
        tokio::time::sleep(Duration::from_secs(3)).await;

        // 1. stop_app on the node the intake and worker 1 use, with jobs running there.
        let victim = cluster
            .node_of(&intake_name)
            .await
            .expect("the intake is connected");
        assert_eq!(
            cluster.node_of(&worker_names[0]).await,
            Some(victim),
            "worker 1 shares the intake's node"
        );
        let sleepers: Vec<Value> = (0..SLEEPERS)
            .map(|_| json!({"kind": "test.sleep", "args": {"ms": 4_000}}))
            .collect();
        for (i, body) in sleepers.iter().enumerate() {
            post_until_accepted(&app.client, &base, body, &format!("sleep-{i}"), &tally).await;
        }
        let running_on_victim = format!(
            "SELECT count(*) FROM jobs j JOIN workers w ON w.id = j.worker_id \
             WHERE j.kind = 'test.sleep' AND j.state = 'running' AND w.name = '{}'",
            worker_names[0]
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut caught = 0;
        while caught == 0 {
            caught = app.count(&running_on_victim).await;
            assert!(
                tokio::time::Instant::now() < deadline,
                "no test.sleep job ever ran on worker 1"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let since = db_now(&app).await;
        cluster.stop_app(victim).await;
        let recovered = wait_recovered(
            &app,
            &cluster,
            victim,
            &[intake_name.clone(), worker_names[0].clone()],
            &since,
        )
        .await;
        report.push(format!(
            "stop_app {victim} ({caught} jobs running there): intake and worker moved, orders flowing again after {:.1} s",
            recovered.as_secs_f64()
        ));
        cluster.start_app(victim).await;
        cluster.wait_all_running().await;
        tokio::time::sleep(Duration::from_secs(3)).await;

        // 2. SIGKILL the VM of the node the intake uses now, with a worker on it too.
        let victim = cluster
            .node_of(&intake_name)
            .await
            .expect("the intake is connected");
        let mut sharing = Vec::new();
        for name in &worker_names {
            if cluster.node_of(name).await == Some(victim) {
                sharing.push(name.clone());
            }
        }
        assert!(
            !sharing.is_empty(),
            "a worker shares the intake's node {victim}"
        );
        let since = db_now(&app).await;
        cluster.kill(victim).await;
        let mut watched = vec![intake_name.clone()];
        watched.extend(sharing.iter().cloned());
        let recovered = wait_recovered(&app, &cluster, victim, &watched, &since).await;
        report.push(format!(
            "SIGKILL {victim} ({} workers on it): orders flowing again after {:.1} s",
            sharing.len(),
            recovered.as_secs_f64()
        ));
        cluster.start_node(victim).await;
        cluster.wait_all_running().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        report
    };
    let (accepted, injected, ()) = tokio::join!(load, chaos, watch);
    let load_secs = started.elapsed().as_secs_f64();

    let unfinished =
        "SELECT count(*) FROM jobs WHERE state NOT IN ('completed', 'dead', 'cancelled')";
    app.wait_for_count(unfinished, 0, Duration::from_secs(300))
        .await;
    let total = accepted.len() as i64;
    let books = app.order_books(1_500, 10_000_000).await;
    let sleepers_done = app
        .count("SELECT count(*) FROM jobs WHERE kind = 'test.sleep' AND state = 'completed' AND attempt = 1")
        .await;
    let mut duplicates = 0.0;
    for port in worker_ports {
        duplicates += counter(
            &app.client,
            &format!("http://127.0.0.1:{port}/metrics"),
            "conveyor_duplicate_deliveries_total",
        )
        .await;
    }
    let unconfirmed = counter(
        &app.client,
        &format!("{base}/metrics"),
        "conveyor_publish_unconfirmed_total",
    )
    .await;
    let violations = tally.violations.lock().expect("tally lock").clone();
    println!("{declared}");
    println!("injected: {}", injected.join("; "));
    println!(
        "counted: {total} orders accepted over {load_secs:.0} s (up to {RATE_PER_SECOND}/s offered, at most {MAX_BACKLOG} unfinished; 2 workers, 1 intake, 3 nodes), \
         retryable 503s {}, other answers {}, {books}, lost {}, unconfirmed publishes republished by the dispatcher {unconfirmed}, \
         redeliveries recognised as settled {duplicates}",
        tally.retryable.load(Ordering::Relaxed),
        violations.len(),
        total - books.completed,
    );

    assert!(
        violations.is_empty(),
        "the intake answered only 2xx or 503 with Retry-After: {violations:?}"
    );
    assert_eq!(books.order_jobs, total, "one job per accepted order id");
    assert_eq!(books.completed, total, "every accepted order completed");
    assert_eq!(books.placed, total, "each order recorded once");
    assert_eq!(books.doubled, 0, "no job completed twice");
    assert_eq!(
        books.scarce.taken, books.scarce.sold,
        "SCARCE stock moved exactly as sold"
    );
    assert_eq!(
        books.plenty.taken, books.plenty.sold,
        "PLENTY stock moved exactly as sold"
    );
    assert_eq!(
        books.confirmed, books.scarce.sold,
        "one SCARCE unit per confirmed order"
    );
    assert_eq!(
        books.emails_completed, total,
        "one email job per order, each completed"
    );
    assert_eq!(
        sleepers_done, SLEEPERS as i64,
        "the jobs running on the stopped node completed at their first attempt"
    );
    assert!(
        duplicates >= 1.0,
        "the redelivery of a job whose ack died with its node was recognised as settled"
    );

    terminate(&intake);
    assert!(intake.wait().await.expect("intake exits").success());
    for mut worker in workers {
        terminate(&worker);
        assert!(worker.wait().await.expect("worker exits").success());
    }
    app.teardown().await;
    drop(cluster);
}
