//! Waiting out an unavailable database. A delivery whose claim or outcome cannot be
//! written is held (not acked, not requeued) while the operation is retried with
//! exponential backoff and jitter; on shutdown it is released unacked, and RabbitMQ
//! redelivers it.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `operation` until it succeeds, fails permanently, or `stop` fires (then `None`).
/// Transient failures (see [`store::Error::is_transient`]) are retried from 100 ms,
/// doubling to 5 s, with jitter.
pub async fn until_ok<T, F, Fut>(
    what: &str,
    stop: &CancellationToken,
    mut operation: F,
) -> Option<Result<T, store::Error>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, store::Error>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match operation().await {
            Err(e) if e.is_transient() => {
                let jittered = delay.mul_f64(0.5 + fastrand::f64() / 2.0);
                tracing::warn!(error = %e, retry_in = ?jittered, "{what} failed; retrying");
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep(jittered) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return Some(other),
        }
    }
}
