//! Faults injected into real processes: Conveyor runs as child processes against the
//! real servers, and the tests take the broker or the database away (through a proxy
//! the test controls, `rabbitmqctl`, or the test database's own ALLOW_CONNECTIONS),
//! kill and stop processes, then check that nothing was lost or doubled. Each test
//! prints what it injected and what it counted.

mod common;

use std::time::Duration;

use common::proxy::{Mode, Proxy};
use common::{free_port, spawn_app_with, terminate};
use conveyor::app::Roles;
use serde_json::{Value, json};

const RABBITMQ: &str = "127.0.0.1:5672";

async fn post(client: &reqwest::Client, base: &str, body: &Value) -> (u16, Value) {
    let response = client
        .post(format!("{base}/v1/jobs"))
        .json(body)
        .send()
        .await
        .expect("intake answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn intake_accepts_while_the_broker_is_down_and_all_complete_when_it_returns() {
    let app = spawn_app_with(|_| {}, Roles::NONE).await;
    let proxy = Proxy::start(RABBITMQ.parse().unwrap()).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let broker = proxy.url_for(&common::amqp_url(), RABBITMQ);
    let mut child = app.spawn_child(
        &["run", "--listen", &format!("127.0.0.1:{port}")],
        &[("CONVEYOR_BROKER__URL", broker)],
    );
    app.wait_ready(&base).await;

    proxy.set(Mode::Refuse);
    let mut accepted = Vec::new();
    for i in 0..40 {
        let (status, body) = post(
            &app.client,
            &base,
            &json!({"kind": "noop", "args": {"i": i}}),
        )
        .await;
        assert_eq!(
            status, 202,
            "intake must accept while the broker is down: {body}"
        );
        accepted.push(body["id"].as_str().unwrap().to_owned());
    }
    let unpublished = app
        .count("SELECT count(*) FROM jobs WHERE published_at IS NULL AND state = 'enqueued'")
        .await;
    proxy.set(Mode::Pass);
    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE state = 'completed'",
        40,
        Duration::from_secs(90),
    )
    .await;

    println!(
        "injected: broker refused during intake; accepted {}, unpublished while down {unpublished}, completed 40, lost 0",
        accepted.len()
    );
    assert_eq!(
        unpublished, 40,
        "nothing could have been published while the broker was down"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM job_attempts WHERE outcome = 'completed'")
            .await,
        40,
        "none ran twice"
    );
    terminate(&child);
    assert!(child.wait().await.unwrap().success());
    app.teardown().await;
}

#[tokio::test]
async fn intake_answers_503_and_stores_nothing_while_postgres_refuses() {
    let app = spawn_app_with(|s| s.database.acquire_timeout_ms = 2_000, Roles::INTAKE).await;

    app.refuse_database().await;
    let refused = app.post_job(&common::noop()).await;
    let status = refused.status();
    let retry_after = refused.headers().get("retry-after").cloned();
    let body: Value = refused.json().await.unwrap();
    app.allow_database().await;

    println!("injected: database refusing connections; intake answered {status}");
    assert_eq!(status, 503, "{body}");
    assert!(retry_after.is_some(), "503 carries Retry-After");
    assert_eq!(body["type"], "/problems/unavailable");
    assert_eq!(
        app.count("SELECT count(*) FROM jobs").await,
        0,
        "a refused request stored nothing"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if app.post_job(&common::noop()).await.status() == 202 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "intake never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 1);
    app.teardown().await;
}

#[tokio::test]
async fn concurrent_duplicate_idempotency_keys_yield_one_job() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let body = json!({"kind": "noop", "args": {"order": 7}, "idempotency_key": "order-7"});

    let responses = futures_util::future::join_all((0..20).map(|_| app.post_job(&body))).await;
    let mut statuses = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for response in responses {
        statuses.push(response.status().as_u16());
        let body: Value = response.json().await.unwrap();
        ids.insert(body["id"].as_str().unwrap().to_owned());
    }
    let via_header = app
        .client
        .post(format!("{}/v1/jobs", app.address))
        .header("idempotency-key", "order-7")
        .json(&json!({"kind": "noop", "args": {"order": 7}}))
        .send()
        .await
        .unwrap();
    let different = app
        .post_job(&json!({"kind": "noop", "args": {"order": 8}, "idempotency_key": "order-7"}))
        .await;

    println!("injected: 20 concurrent posts with one key; statuses {statuses:?}");
    assert_eq!(ids.len(), 1, "one job for one key");
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 19);
    assert_eq!(via_header.status(), 200);
    assert_eq!(different.status(), 409);
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 1);
    app.teardown().await;
}

#[tokio::test]
async fn sigterm_mid_load_loses_nothing_runs_nothing_twice_and_exits_0() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let bodies = (0..200)
        .map(|_| json!({"kind": "test.sleep", "args": {"ms": 40}}))
        .collect();
    let ids = app.enqueue_many(bodies, 16).await;
    let mut first = app.spawn_child(&["worker", "--concurrency", "8", "--grace", "20"], &[]);
    app.wait_for_count(
        "SELECT least(count(*), 20) FROM jobs WHERE state = 'completed'",
        20,
        Duration::from_secs(60),
    )
    .await;

    terminate(&first);
    let status = tokio::time::timeout(Duration::from_secs(60), first.wait())
        .await
        .unwrap()
        .unwrap();
    let done_by_first = app
        .count("SELECT count(*) FROM jobs WHERE state = 'completed'")
        .await;
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE state = 'running'")
            .await,
        0,
        "in-flight jobs were finished, not abandoned"
    );
    let mut second = app.spawn_child(&["worker", "--concurrency", "8"], &[]);
    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE state = 'completed'",
        200,
        Duration::from_secs(90),
    )
    .await;

    let attempts = app.count("SELECT count(*) FROM job_attempts").await;
    println!(
        "injected: SIGTERM after {done_by_first} of 200; accepted 200, completed 200, attempts {attempts}, lost 0"
    );
    assert_eq!(ids.len(), 200);
    assert_eq!(attempts, 200, "no job ran twice");
    terminate(&second);
    assert!(second.wait().await.unwrap().success());
    app.teardown().await;
}

#[tokio::test]
async fn a_worker_whose_connection_the_server_closes_reconnects_and_carries_on() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let name = format!("{}-faulty", app.settings.namespace);
    let mut worker = app.spawn_child(&["worker"], &[("CONVEYOR_WORKER__NAME", name.clone())]);
    let first = app.enqueue(common::noop()).await;
    app.wait_for_state(&first, "completed").await;

    let mut closed = 0;
    for _ in 0..3 {
        closed += app.close_broker_connections(&name).await;
        let id = app.enqueue(common::noop()).await;
        app.wait_for_state_within(&id, "completed", Duration::from_secs(60))
            .await;
    }

    println!("injected: {closed} server-side connection closes; every job after each completed");
    assert!(
        closed >= 3,
        "the worker's connection was found and closed each time ({closed})"
    );
    terminate(&worker);
    assert!(worker.wait().await.unwrap().success());
    app.teardown().await;
}

#[tokio::test]
async fn when_confirms_stall_intake_answers_503_instead_of_queueing_without_bound() {
    let proxy = Proxy::start(RABBITMQ.parse().unwrap()).await;
    let broker = proxy.url_for(&common::amqp_url(), RABBITMQ);
    let app = spawn_app_with(
        move |s| {
            s.broker.url = secrecy::SecretString::from(broker);
            s.broker.max_in_flight = 2;
            s.broker.publish_timeout_ms = 2_000;
        },
        Roles::INTAKE,
    )
    .await;
    app.enqueue(common::noop()).await; // connects the publisher

    proxy.set(Mode::Stall);
    let responses = futures_util::future::join_all((0..8).map(|_| async {
        // Stagger slightly so the first two occupy the confirm slots.
        app.post_job(&common::noop()).await.status().as_u16()
    }))
    .await;
    proxy.set(Mode::Pass);

    let accepted = responses.iter().filter(|s| **s == 202).count() as i64;
    let rejected = responses.iter().filter(|s| **s == 503).count();
    println!("injected: broker stalled, 2 confirm slots; statuses {responses:?}");
    assert!(rejected >= 1, "overload must answer 503: {responses:?}");
    assert_eq!(accepted as usize + rejected, 8, "{responses:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM jobs").await,
        accepted + 1,
        "a 503 stored nothing"
    );
    app.teardown().await;
}

/// Posts until accepted, as a client should: the idempotency key (the order id) makes
/// retries safe, and a 503 says when to come back.
async fn post_until_accepted(
    client: &reqwest::Client,
    base: &str,
    body: &Value,
    key: &str,
) -> (String, u32) {
    let mut refusals = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let response = client
            .post(format!("{base}/v1/jobs"))
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await;
        match response {
            Ok(r) if r.status() == 202 || r.status() == 200 => {
                let body: Value = r.json().await.expect("json body");
                return (body["id"].as_str().expect("an id").to_owned(), refusals);
            }
            Ok(r) => assert!(
                r.status() == 503,
                "only 503 may refuse a valid order, got {}",
                r.status()
            ),
            Err(_) => {}
        }
        refusals += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "order {key} never accepted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one fault scenario read top to bottom: load, faults, then the books"
)]
async fn thousands_of_orders_survive_worker_kills_connection_closes_and_a_database_outage() {
    const ORDERS: usize = 3_000;
    let app = spawn_app_with(|_| {}, Roles::NONE).await;
    // PLENTY never runs out; SCARCE does, so some orders are rejected under contention.
    app.seed_products("sku,name,unit_price_minor,currency,stock\nPLENTY,Plenty,250,USD,1000000\nSCARCE,Scarce,990,USD,1200\n").await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut intake = app.spawn_child(&["producer", "--listen", &format!("127.0.0.1:{port}")], &[]);
    let worker_name = |n: usize| format!("{}-wk{n}", app.settings.namespace);
    let spawn_worker = |n: usize| {
        app.spawn_child(
            &["worker", "--queues", "orders=16,emails=8"],
            &[("CONVEYOR_WORKER__NAME", worker_name(n))],
        )
    };
    let mut workers = vec![spawn_worker(0), spawn_worker(1)];
    app.wait_ready(&base).await;
    app.wait_until_consuming("orders").await;

    let started = tokio::time::Instant::now();
    let load = async {
        use futures_util::StreamExt;
        futures_util::stream::iter(0..ORDERS)
            .map(|i| {
                // Paced at ~250 orders a second, so every fault lands mid-load.
                let at = started + Duration::from_millis(4 * i as u64);
                let order_id = format!("ORD-{i:05}");
                let body = json!({"kind": "order.process", "args": {
                    "order_id": order_id,
                    "customer": {"email": format!("buyer{i}@example.com"), "name": "Buyer"},
                    "items": [{"sku": "PLENTY", "quantity": 1 + i % 3}, {"sku": "SCARCE", "quantity": 1}],
                }});
                let client = app.client.clone();
                let base = base.clone();
                async move {
                    tokio::time::sleep_until(at).await;
                    post_until_accepted(&client, &base, &body, &order_id).await
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
    };
    let chaos = async {
        let mut injected = Vec::new();
        for (round, victim) in [0usize, 1, 0].into_iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(1_200)).await;
            // SIGKILL a worker mid-load, then start a fresh one in its place.
            workers[victim].start_kill().expect("kill");
            let _ = workers[victim].wait().await;
            workers[victim] = spawn_worker(round + 2);
            injected.push(format!("SIGKILL worker {victim}"));
            tokio::time::sleep(Duration::from_millis(700)).await;
            let closed = app
                .close_broker_connections(&format!("{}-wk", app.settings.namespace))
                .await;
            injected.push(format!(
                "closed {closed} worker connections from the server"
            ));
            if round == 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                app.refuse_database().await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                app.allow_database().await;
                injected.push("Postgres refused connections for 2 s".to_owned());
            }
        }
        injected
    };
    let (accepted, injected) = tokio::join!(load, chaos);

    let unfinished =
        "SELECT count(*) FROM jobs WHERE state NOT IN ('completed', 'dead', 'cancelled')";
    app.wait_for_count(unfinished, 0, Duration::from_secs(300))
        .await;
    let refusals: u32 = accepted.iter().map(|(_, r)| r).sum();
    let books = app.order_books(1_200, 1_000_000).await;
    println!("injected: {}", injected.join("; "));
    println!(
        "counted: accepted {} (after {refusals} refusals/retries), {books}, lost {}",
        accepted.len(),
        ORDERS as i64 - books.completed,
    );

    assert_eq!(accepted.len(), ORDERS);
    assert_eq!(
        books.order_jobs, ORDERS as i64,
        "one job per order id (idempotency keys held under retries)"
    );
    assert_eq!(
        books.completed, ORDERS as i64,
        "every accepted order job completed"
    );
    assert_eq!(
        books.placed, ORDERS as i64,
        "each order recorded exactly once"
    );
    assert_eq!(books.doubled, 0, "no job completed twice");
    assert_eq!(
        books.scarce.taken, books.scarce.sold,
        "SCARCE stock moved exactly by what was sold"
    );
    assert_eq!(
        books.plenty.taken, books.plenty.sold,
        "PLENTY stock moved exactly by what was sold"
    );
    assert!(app.stock_of("SCARCE").await >= 0);
    assert_eq!(
        books.confirmed, 1_200,
        "SCARCE sold out exactly: one unit per confirmed order"
    );
    assert_eq!(
        books.emails_completed, ORDERS as i64,
        "one email job per order, all sent"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE state = 'running'")
            .await,
        0,
        "no job stuck running"
    );
    assert!(
        app.smtp.received().len() >= ORDERS,
        "every customer was mailed (at least once)"
    );

    terminate(&intake);
    assert!(intake.wait().await.unwrap().success());
    for mut worker in workers {
        terminate(&worker);
        assert!(worker.wait().await.unwrap().success());
    }
    app.teardown().await;
}

#[tokio::test]
async fn a_server_side_close_of_the_workers_connection_is_logged_as_an_error() {
    let app = spawn_app_with(|_| {}, Roles::INTAKE).await;
    let name = format!("{}-closed", app.settings.namespace);
    let (mut worker, output) =
        app.spawn_child_with_output(&["worker"], &[("CONVEYOR_WORKER__NAME", name.clone())]);
    let first = app.enqueue(common::noop()).await;
    app.wait_for_state(&first, "completed").await;
    assert!(
        output.errors().is_empty(),
        "nothing failed yet: {:?}",
        output.errors()
    );

    let closed = app.close_broker_connections(&name).await;
    let errors = output.wait_for_error(Duration::from_secs(30)).await;
    let id = app.enqueue(common::noop()).await;
    app.wait_for_state_within(&id, "completed", Duration::from_secs(60))
        .await;

    println!("injected: {closed} server-side close; logged: {errors:?}");
    assert_eq!(closed, 1, "the worker's connection was found and closed");
    assert!(
        errors
            .iter()
            .any(|l| l.contains("CONNECTION_FORCED") || l.contains("Connection")),
        "the error names the connection's loss: {errors:?}"
    );
    terminate(&worker);
    assert!(worker.wait().await.unwrap().success());
    app.teardown().await;
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one fault scenario read top to bottom: load, failover, then the books"
)]
async fn a_postgres_failover_behind_a_proxy_costs_503s_and_delay_but_loses_and_doubles_nothing() {
    const ORDERS: u64 = 600;
    const POSTGRES: &str = "127.0.0.1:5432";
    let app = spawn_app_with(|_| {}, Roles::NONE).await;
    app.seed_products(
        "sku,name,unit_price_minor,currency,stock\nPLENTY,Plenty,250,USD,1000000\nSCARCE,Scarce,990,USD,400\n",
    )
    .await;
    // What a managed failover looks like to a client: the primary's address stops
    // answering (every connection cut, new ones refused), then answers again.
    let proxy = Proxy::start(POSTGRES.parse().unwrap()).await;
    let database = proxy.url_for(
        secrecy::ExposeSecret::expose_secret(&app.settings.database.url),
        POSTGRES,
    );
    assert_ne!(
        database,
        secrecy::ExposeSecret::expose_secret(&app.settings.database.url),
        "the test database is reached through the proxy"
    );
    let through_proxy = [
        ("CONVEYOR_DATABASE__URL", database),
        ("CONVEYOR_DATABASE__ACQUIRE_TIMEOUT_MS", "2000".to_owned()),
    ];
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut intake = app.spawn_child(
        &["producer", "--listen", &format!("127.0.0.1:{port}")],
        &through_proxy,
    );
    let mut worker = app.spawn_child(&["worker", "--queues", "orders=8,emails=4"], &through_proxy);
    app.wait_ready(&base).await;
    app.wait_until_consuming("orders").await;

    let refused = std::sync::atomic::AtomicU32::new(0);
    let started = tokio::time::Instant::now();
    let load = async {
        use futures_util::StreamExt;
        futures_util::stream::iter(0..ORDERS)
            .map(|i| {
                // ~100 orders a second, so the outage lands mid-load.
                let at = started + Duration::from_millis(10 * i);
                let order_id = format!("PG-{i:04}");
                let body = json!({"kind": "order.process", "args": {
                    "order_id": order_id,
                    "customer": {"email": format!("buyer{i}@example.com"), "name": "Buyer"},
                    "items": [{"sku": "PLENTY", "quantity": 1 + i % 3}, {"sku": "SCARCE", "quantity": 1}],
                }});
                let client = app.client.clone();
                let base = base.clone();
                let refused = &refused;
                async move {
                    tokio::time::sleep_until(at).await;
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                    loop {
                        let response = client
                            .post(format!("{base}/v1/jobs"))
                            .header("idempotency-key", &order_id)
                            .json(&body)
                            .send()
                            .await
                            .expect("the intake answers while the database is away");
                        match response.status().as_u16() {
                            200 | 202 => return,
                            503 => {
                                assert!(
                                    response.headers().contains_key("retry-after"),
                                    "a 503 carries Retry-After"
                                );
                                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            other => panic!("only 503 may refuse a valid order, got {other}"),
                        }
                        assert!(tokio::time::Instant::now() < deadline, "order {order_id} never accepted");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
            .await
    };
    let outage = async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let before = app
            .count(
                "SELECT count(*) FROM jobs WHERE kind = 'order.process' AND state <> 'completed'",
            )
            .await;
        proxy.set(Mode::Refuse);
        tokio::time::sleep(Duration::from_secs(4)).await;
        proxy.set(Mode::Pass);
        before
    };
    let (_, waiting_at_outage) = tokio::join!(load, outage);

    app.wait_for_count(
        "SELECT count(*) FROM jobs WHERE state NOT IN ('completed', 'dead', 'cancelled')",
        0,
        Duration::from_secs(180),
    )
    .await;
    let refused = refused.into_inner();
    let order_jobs = app
        .count("SELECT count(*) FROM jobs WHERE kind = 'order.process'")
        .await;
    let completed = app
        .count("SELECT count(*) FROM jobs WHERE kind = 'order.process' AND state = 'completed'")
        .await;
    let placed = app.count("SELECT count(*) FROM orders").await;
    let doubled = app
        .count(
            "SELECT count(*) FROM (SELECT job_id FROM job_attempts WHERE outcome = 'completed' \
             GROUP BY job_id HAVING count(*) > 1) d",
        )
        .await;
    let scarce_taken = 400 - i64::from(app.stock_of("SCARCE").await);
    let scarce_sold = app.count("SELECT COALESCE(sum(quantity), 0)::bigint FROM order_items i JOIN orders o USING (order_id) WHERE o.status = 'confirmed' AND i.sku = 'SCARCE'").await;
    let plenty_taken = 1_000_000 - i64::from(app.stock_of("PLENTY").await);
    let plenty_sold = app.count("SELECT COALESCE(sum(quantity), 0)::bigint FROM order_items i JOIN orders o USING (order_id) WHERE o.status = 'confirmed' AND i.sku = 'PLENTY'").await;
    println!(
        "injected: the database's address refused every connection for 4 s mid-load ({waiting_at_outage} orders unfinished then); \
         counted: {ORDERS} accepted after {refused} retryable 503s, order jobs {order_jobs}, completed {completed}, placed {placed}, \
         doubled {doubled}, lost {}, SCARCE taken {scarce_taken} / sold {scarce_sold}",
        ORDERS as i64 - completed
    );
    assert!(
        refused >= 1,
        "the outage was answered with 503s at the intake"
    );
    assert_eq!(order_jobs, ORDERS as i64, "one job per order id");
    assert_eq!(completed, ORDERS as i64, "every accepted order completed");
    assert_eq!(placed, ORDERS as i64, "each order recorded once");
    assert_eq!(doubled, 0, "no job completed twice");
    assert_eq!(
        scarce_taken, scarce_sold,
        "SCARCE stock moved exactly as sold"
    );
    assert_eq!(
        plenty_taken, plenty_sold,
        "PLENTY stock moved exactly as sold"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind = 'email.send' AND state = 'completed'")
            .await,
        ORDERS as i64,
        "one email job per order, each completed"
    );

    terminate(&intake);
    assert!(intake.wait().await.unwrap().success());
    terminate(&worker);
    assert!(worker.wait().await.unwrap().success());
    app.teardown().await;
}

#[tokio::test]
async fn with_target_session_attrs_read_write_a_read_only_server_costs_503s_until_a_primary_answers()
 {
    let app = spawn_app_with(
        |s| {
            let url = format!(
                "{}?target_session_attrs=read-write",
                secrecy::ExposeSecret::expose_secret(&s.database.url)
            );
            s.database.url = secrecy::SecretString::from(url);
            s.database.acquire_timeout_ms = 2_000;
        },
        Roles::INTAKE,
    )
    .await;
    app.enqueue(common::noop()).await;
    let name = app.database_name();

    // What the old primary looks like right after a failover: it answers, read-only.
    common::admin(&format!(
        "ALTER DATABASE \"{name}\" SET default_transaction_read_only = on"
    ))
    .await;
    common::admin(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ))
    .await;
    let refused = app.post_job(&common::noop()).await;
    let status = refused.status();
    let retry_after = refused.headers().contains_key("retry-after");
    common::admin(&format!(
        "ALTER DATABASE \"{name}\" RESET default_transaction_read_only"
    ))
    .await;

    println!("injected: the database accepts only read-only sessions; intake answered {status}");
    assert_eq!(status, 503, "a read-only server is not a primary");
    assert!(retry_after, "503 carries Retry-After");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if app.post_job(&common::noop()).await.status() == 202 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "intake never recovered once the primary answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.count("SELECT count(*) FROM jobs").await,
        2,
        "the refused request stored nothing"
    );
    app.teardown().await;
}
