//! Transactional enqueue (feature `sqlx`): record a job inside the app's own
//! transaction on the ledger's database, so the job exists exactly when the app's other
//! writes do. Committed → the dispatcher publishes it; rolled back → there never was a
//! job.
//!
//! The job is recorded through `conveyor_enqueue(…)`, a function the ledger's migrations
//! define: the app's crate knows its signature, not the ledger's columns. It starts
//! `scheduled` and due (the state the dispatcher publishes, as a handler's follow-up job
//! does), and its `NOTIFY` wakes the dispatchers when the transaction commits.

use chrono::{DateTime, Utc};
use jobs::{JobArgs, JobId, ValidationErrors};
use serde_json::Value;
use sqlx::PgConnection;

use crate::request::When;
use crate::{EnqueueOptions, Error};

/// Largest `max_attempts` accepted: the intake's default `producer.max_attempts_limit`.
pub const MAX_ATTEMPTS: u32 = 100;

/// Records a job of `A`'s kind in the transaction `conn` belongs to, with the kind's
/// defaults, and returns its id. Validated like intake; nothing is written when invalid.
///
/// ```no_run
/// # async fn example(pool: sqlx::PgPool) -> Result<(), conveyor_client::Error> {
/// use conveyor_client::enqueue_in;
/// use jobs::kinds::order::{CustomerArgs, LineArgs, ProcessOrder};
///
/// let mut tx = pool.begin().await?;
/// sqlx::query("INSERT INTO shop_orders (id, email) VALUES ($1, $2)")
///     .bind("A-1001")
///     .bind("ada@example.com")
///     .execute(&mut *tx)
///     .await?;
/// let job_id = enqueue_in(
///     &mut tx,
///     ProcessOrder {
///         order_id: "A-1001".into(),
///         customer: CustomerArgs { email: "ada@example.com".into(), name: "Ada".into() },
///         items: vec![LineArgs { sku: "MUG-BLUE".into(), quantity: 2 }],
///         currency: None,
///     },
/// )
/// .await?;
/// tx.commit().await?; // now, and only now, the job exists and will run
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::Invalid`] with every broken rule; [`Error::Database`] when the insert
/// fails (the transaction is then aborted, as for any failed statement).
pub async fn enqueue_in<A: JobArgs>(conn: &mut PgConnection, args: A) -> Result<JobId, Error> {
    enqueue_in_with(conn, args, EnqueueOptions::new()).await
}

/// [`enqueue_in`] with options: queue, attempts, delay or `run_at`, timeout. An
/// idempotency key or a callback URL is refused: the transaction itself is what makes
/// the enqueue happen once, and callbacks are checked by the intake.
///
/// # Errors
/// As [`enqueue_in`].
pub async fn enqueue_in_with<A: JobArgs>(
    conn: &mut PgConnection,
    args: A,
    options: EnqueueOptions,
) -> Result<JobId, Error> {
    let job = Prepared::new(&args, &options, Utc::now())?;
    let id = JobId::new();
    sqlx::query("SELECT conveyor_enqueue($1, $2, $3, $4, $5, $6, $7)")
        .bind(id.as_uuid())
        .bind(A::KIND)
        .bind(&job.queue)
        .bind(sqlx::types::Json(&job.args))
        .bind(i32::try_from(job.max_attempts).unwrap_or(i32::MAX))
        .bind(job.run_at)
        .bind(job.timeout_ms)
        .execute(conn)
        .await?;
    Ok(id)
}

/// A job checked as the intake checks it, with the kind's defaults filled in.
#[derive(Debug, PartialEq)]
struct Prepared {
    args: Value,
    queue: String,
    max_attempts: u32,
    run_at: Option<DateTime<Utc>>,
    timeout_ms: Option<i32>,
}

impl Prepared {
    fn new<A: JobArgs>(
        args: &A,
        options: &EnqueueOptions,
        now: DateTime<Utc>,
    ) -> Result<Self, Error> {
        let mut errors = ValidationErrors::new();
        if let Err(e) = args.validate() {
            errors.extend(e.prefixed("args"));
        }
        let value = serde_json::to_value(args).unwrap_or(Value::Null);
        if !value.is_object() {
            errors.add("args", "must serialize to a JSON object");
        }
        if let Some(path) = nul_in(&value, "args") {
            errors.add(
                &path,
                "must not contain the NUL character (\\u0000): the ledger cannot store it",
            );
        }
        options.check(&mut errors);
        if let Some(n) = options.max_attempts
            && n > MAX_ATTEMPTS
        {
            errors.add(
                "max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS}"),
            );
        }
        if options.idempotency_key.is_some() {
            errors.add(
                "idempotency_key",
                "is not taken in a transaction: the transaction makes the enqueue happen once",
            );
        }
        if options.callback_url.is_some() {
            errors.add(
                "callback_url",
                "is not taken in a transaction: enqueue over HTTP for a callback",
            );
        }
        errors.into_result().map_err(Error::Invalid)?;
        let defaults = A::options();
        let run_at = match options.when {
            Some(When::At(at)) => Some(at),
            Some(When::After(delay)) => chrono::Duration::from_std(delay)
                .ok()
                .map(|delay| now + delay),
            None => None,
        };
        Ok(Self {
            args: value,
            queue: options
                .queue
                .clone()
                .unwrap_or_else(|| defaults.queue.to_owned()),
            max_attempts: options.max_attempts.unwrap_or(defaults.max_attempts),
            run_at,
            timeout_ms: options
                .timeout
                .map(|t| i32::try_from(t.as_millis()).unwrap_or(i32::MAX)),
        })
    }
}

/// The path of the first string (value or key) in `value` holding a NUL character,
/// which Postgres refuses in `jsonb`.
fn nul_in(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::String(s) => s.contains('\0').then(|| path.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_in(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let path = format!("{path}.{k}");
            if k.contains('\0') {
                Some(path)
            } else {
                nul_in(v, &path)
            }
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jobs::kinds::noop::Noop;
    use jobs::kinds::order::{CustomerArgs, LineArgs, ProcessOrder};
    use serde_json::json;

    use super::*;

    fn order() -> ProcessOrder {
        ProcessOrder {
            order_id: "A-1".into(),
            customer: CustomerArgs {
                email: "ada@example.com".into(),
                name: "Ada".into(),
            },
            items: vec![LineArgs {
                sku: "MUG".into(),
                quantity: 1,
            }],
            currency: None,
        }
    }

    #[test]
    fn a_job_takes_its_kinds_queue_and_attempts_unless_told_otherwise() {
        let now = Utc::now();

        let plain = Prepared::new(&order(), &EnqueueOptions::new(), now).unwrap();
        let told = Prepared::new(
            &order(),
            &EnqueueOptions::new()
                .queue("vip")
                .max_attempts(9)
                .delay(Duration::from_secs(60))
                .timeout(Duration::from_secs(5)),
            now,
        )
        .unwrap();

        assert_eq!(
            (plain.queue.as_str(), plain.max_attempts, plain.run_at),
            ("orders", 5, None)
        );
        assert_eq!(
            (told.queue.as_str(), told.max_attempts, told.timeout_ms),
            ("vip", 9, Some(5000))
        );
        assert_eq!(told.run_at, Some(now + chrono::Duration::seconds(60)));
    }

    #[test]
    fn what_intake_refuses_is_refused_before_the_database_sees_it() {
        let mut bad = order();
        bad.items[0].quantity = 0;
        let mut nul = serde_json::Map::new();
        nul.insert("note".into(), json!("a\u{0}b"));

        let Err(Error::Invalid(order_errors)) = Prepared::new(
            &bad,
            &EnqueueOptions::new()
                .max_attempts(101)
                .idempotency_key("k")
                .callback_url("https://example.com/"),
            Utc::now(),
        ) else {
            panic!("refused");
        };
        let Err(Error::Invalid(nul_errors)) =
            Prepared::new(&Noop(nul), &EnqueueOptions::new(), Utc::now())
        else {
            panic!("refused");
        };

        let fields: Vec<&str> = order_errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "args.items[0].quantity",
                "max_attempts",
                "idempotency_key",
                "callback_url"
            ]
        );
        assert_eq!(nul_errors.0[0].field, "args.note");
    }
}
