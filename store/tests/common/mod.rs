//! The store-level harness: each test gets a fresh, migrated, uuid-named database on the
//! test Postgres server (`CONVEYOR_TEST_POSTGRES`, no database name) and talks to
//! [`Store`] directly: no broker, no roles.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::time::Duration;

use jobs::{JobId, JobState, NewJob, WorkerId};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};
use store::{Claim, ClaimedJob, Ending, Settlement, Store};

/// Postgres server to create test databases on (no database name).
pub fn postgres_base() -> String {
    std::env::var("CONVEYOR_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A migrated database of its own, dropped by [`TestDb::drop`].
pub struct TestDb {
    pub store: Store,
    name: String,
}

async fn admin() -> PgConnection {
    let options: PgConnectOptions = format!("{}/postgres", postgres_base())
        .parse()
        .expect("CONVEYOR_TEST_POSTGRES is a Postgres URL");
    options.connect().await.expect("the test Postgres answers")
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!(
            "conveyor_store_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        );
        let mut admin = admin().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&format!("{}/{name}", postgres_base()))
            .await
            .expect("connect to the test database");
        let store = Store::from_pool(pool);
        store.migrate().await.expect("migrations apply");
        Self { store, name }
    }

    pub async fn drop(self) {
        self.store.pool().close().await;
        let mut admin = admin().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .expect("drop the test database");
    }

    /// Records one job that runs now (or waits until `run_at`), and returns its id.
    pub async fn insert(&self, job: NewJob) -> JobId {
        let id = job.id;
        self.store.insert_jobs(&[job]).await.expect("insert");
        id
    }

    /// Records and claims a job for `worker`.
    pub async fn running(&self, worker: WorkerId, max_attempts: u32) -> ClaimedJob {
        let id = self
            .insert(NewJob {
                max_attempts,
                ..new_job()
            })
            .await;
        match self
            .store
            .claim_many(&[id], worker)
            .await
            .unwrap()
            .remove(0)
        {
            Claim::Claimed(job) => job,
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    /// Settles, and answers for each.
    pub async fn settle(&self, settlements: &[Settlement]) -> Vec<store::Settled> {
        self.store
            .settle(settlements)
            .await
            .expect("settle")
            .answers
    }

    /// The ids the dispatcher takes now, republishing what is unconfirmed for `window`.
    pub async fn take_due(&self, window: Duration) -> Vec<JobId> {
        let due = self.store.take_due(10, window).await.expect("take_due");
        due.into_iter().map(|job| job.id).collect()
    }

    pub async fn state(&self, id: JobId) -> JobState {
        self.store
            .get_job(id)
            .await
            .unwrap()
            .expect("the job")
            .state
    }

    /// `(attempt, outcome, error)` of each attempt, oldest first.
    pub async fn attempts(&self, id: JobId) -> Vec<(i32, String, Option<String>)> {
        self.store
            .attempts(id)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.attempt, a.outcome.to_string(), a.error))
            .collect()
    }

    /// `(reason, job_id)` of each dead letter, oldest first.
    pub async fn letters(&self) -> Vec<(String, Option<uuid::Uuid>)> {
        sqlx::query_as("SELECT reason, job_id FROM dead_letters ORDER BY created_at, id")
            .fetch_all(self.store.pool())
            .await
            .unwrap()
    }

    pub async fn count(&self, query: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }
}

/// A `noop` job that runs now.
pub fn new_job() -> NewJob {
    NewJob {
        id: JobId::new(),
        kind: "noop".into(),
        queue: "default".into(),
        args: json!({}),
        max_attempts: 3,
        run_at: None,
        timeout: None,
        idempotency_key: None,
        idempotency_ttl: Duration::from_secs(3600),
        traceparent: None,
        fired_by: None,
        callback_url: None,
    }
}

/// The settlement of `job`'s attempt by `worker` with `outcome`.
pub fn attempt(job: &ClaimedJob, worker: WorkerId, outcome: jobs::Outcome) -> Settlement {
    Settlement {
        id: job.id,
        ending: Ending::Attempt {
            attempt: job.attempt,
            worker,
            started_at: Some(job.started_at),
            outcome,
        },
    }
}

pub fn completed(result: Value) -> jobs::Outcome {
    jobs::Outcome::Completed { result }
}

pub fn retry(error: &str, delay: Duration) -> jobs::Outcome {
    jobs::Outcome::Retry {
        error: error.into(),
        delay,
    }
}

pub fn snooze(delay: Duration) -> jobs::Outcome {
    jobs::Outcome::Snooze { delay }
}
