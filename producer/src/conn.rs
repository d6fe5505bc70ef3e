//! Serving connections: the intake's own accept loop over hyper, so that every
//! connection is bounded in time and the process in how many it holds. A client on the
//! network (or an attacker on the same host) cannot exhaust the process's descriptors
//! or hold connections open for free.
//!
//! - **Headers** must arrive within `producer.header_read_timeout_ms`, counted from
//!   the connection's start or from the first byte of a later request on it. Past it
//!   the connection is closed without an answer.
//! - **Bodies** must keep arriving: a body that has delivered `n` bytes has
//!   `body_read_timeout_ms + n / body_min_bytes_per_sec` from its headers. Past it
//!   the request is answered `408` and the connection closed.
//! - **Idle** kept-alive connections are closed after
//!   `producer.keep_alive_idle_timeout_ms`.
//! - **Answers** must be read: a connection whose writes stay blocked (the client
//!   stopped reading) for `producer.request_timeout_ms` is closed.
//! - **Open connections** are capped in total (`producer.max_connections`, sized
//!   against the file-descriptor limit with descriptors kept for the database pool and
//!   the process) and per client address (`producer.max_connections_per_client`). Past
//!   a cap a new connection is answered at once, without reading its request (`503` or
//!   `429`, with `Retry-After`), and closed: never left waiting.
//! - **Accept errors** (out of descriptors, ...) back off from 5 ms to 1 s instead of
//!   spinning.
//!
//! Shutdown stops accepting, lets each connection finish its request (idle ones close
//! at once), and closes what is still open after `request_timeout_ms +
//! header_read_timeout_ms`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::AppState;
use crate::problem::Problem;
use crate::settings::ProducerSettings;

/// Descriptors kept for the process itself besides its database pool: its RabbitMQ
/// and SMTP connections, listeners, the runtime, standard streams and logs.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// The connection cap when `producer.max_connections` is unset and the
/// file-descriptor limit allows more.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The first pause after an accept error; it doubles up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// The longest pause between accepts while they fail.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The bounds the intake serves under, resolved from [`ProducerSettings`] and the
/// process's file-descriptor limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open client connections at most.
    pub max_connections: usize,
    /// Open connections one client address may hold.
    pub max_connections_per_client: usize,
    /// Time to send a request's headers.
    pub header_read_timeout: Duration,
    /// Time a body gets before the minimum rate applies.
    pub body_read_timeout: Duration,
    /// Slowest average body rate, in bytes a second.
    pub body_min_bytes_per_sec: u64,
    /// Time a kept-alive connection may sit idle.
    pub keep_alive_idle_timeout: Duration,
    /// Time a write may stay blocked by a client that does not read its answers.
    pub write_timeout: Duration,
    /// How long shutdown waits for open connections before closing them.
    pub drain_timeout: Duration,
    /// The process's soft `RLIMIT_NOFILE` at start-up (`None`: unlimited or unknown).
    pub descriptor_limit: Option<u64>,
    /// Descriptors kept out of the cap for the database pool and the process.
    pub reserved_descriptors: u64,
}

impl ConnectionLimits {
    /// The limits for `settings` in this process, keeping `pool_size` descriptors (the
    /// database pool) and [`RESERVED_DESCRIPTORS`] out of the connection cap.
    ///
    /// # Errors
    /// A cap the file-descriptor limit cannot hold, or a per-client cap above the
    /// total, each naming its configuration key.
    pub fn resolve(settings: &ProducerSettings, pool_size: u64) -> Result<Self, String> {
        Self::resolve_with(settings, pool_size, descriptor_limit())
    }

    fn resolve_with(
        settings: &ProducerSettings,
        pool_size: u64,
        limit: Option<u64>,
    ) -> Result<Self, String> {
        let reserved = pool_size + RESERVED_DESCRIPTORS;
        let room = limit.map(|l| usize::try_from(l.saturating_sub(reserved)).unwrap_or(usize::MAX));
        let max_connections = match (settings.max_connections, room, limit) {
            (Some(n), Some(room), Some(limit)) if n > room => {
                return Err(format!(
                    "configuration key `producer.max_connections`: {n} connections and the {reserved} \
                     descriptors kept for the database pool and the process exceed this process's \
                     file-descriptor limit of {limit}; raise it (`ulimit -n`, or LimitNOFILE= under \
                     systemd) or lower the cap"
                ));
            }
            (Some(n), _, _) => n,
            (None, Some(room), Some(limit)) => {
                let n = (room / 4 * 3).min(DEFAULT_MAX_CONNECTIONS);
                if n == 0 {
                    return Err(format!(
                        "the file-descriptor limit of {limit} leaves no room for client connections \
                         beside the {reserved} descriptors kept for the database pool and the process; \
                         raise it (`ulimit -n`) or set `producer.max_connections`"
                    ));
                }
                n
            }
            (None, _, _) => DEFAULT_MAX_CONNECTIONS,
        };
        let max_connections_per_client = match settings.max_connections_per_client {
            Some(n) if n > max_connections => {
                return Err(format!(
                    "configuration key `producer.max_connections_per_client`: {n} is more than the \
                     {max_connections} connections the intake holds in all (producer.max_connections)"
                ));
            }
            Some(n) => n,
            None => (max_connections / 2).max(1),
        };
        let header_read_timeout = Duration::from_millis(settings.header_read_timeout_ms);
        Ok(Self {
            max_connections,
            max_connections_per_client,
            header_read_timeout,
            body_read_timeout: Duration::from_millis(settings.body_read_timeout_ms),
            body_min_bytes_per_sec: settings.body_min_bytes_per_sec.max(1),
            keep_alive_idle_timeout: Duration::from_millis(settings.keep_alive_idle_timeout_ms),
            write_timeout: Duration::from_millis(settings.request_timeout_ms),
            drain_timeout: Duration::from_millis(settings.request_timeout_ms) + header_read_timeout,
            descriptor_limit: limit,
            reserved_descriptors: reserved,
        })
    }

    /// When a body that has delivered `received` bytes since `started` must have
    /// delivered more.
    fn body_deadline(&self, started: Instant, received: u64) -> Instant {
        let earned =
            Duration::from_micros(received.saturating_mul(1_000_000) / self.body_min_bytes_per_sec);
        started + self.body_read_timeout + earned
    }
}

/// The process's soft limit on open file descriptors (`None`: unlimited, or not a
/// Unix system).
#[cfg(unix)]
pub fn descriptor_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The process's soft limit on open file descriptors (`None`: unlimited, or not a
/// Unix system).
#[cfg(not(unix))]
pub fn descriptor_limit() -> Option<u64> {
    None
}

/// Serves the intake on `listener` under `limits` until `shutdown` fires; in-flight
/// requests finish (bounded by [`ConnectionLimits::drain_timeout`]), then the
/// publishes confirmed so far are noted in the ledger.
///
/// # Errors
/// None today: accept errors are retried with a backoff. The signature leaves room
/// for a listener that can fail for good.
pub async fn serve(
    mut listener: TcpListener,
    state: AppState,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let marks = state.published.clone();
    let events = state.events.clone();
    // The key ring reloads stored keys and notes their use until the intake stops.
    let ring = Arc::clone(&state.keys);
    let stop_ring = shutdown.child_token();
    let keeper = tokio::spawn(ring.run(
        Duration::from_millis(state.settings.key_refresh_ms),
        Duration::from_secs(10),
        stop_ring.clone(),
    ));
    let router = crate::app(state);
    let limits = Arc::new(limits);
    let registry = Arc::new(Registry::new(&limits));
    let tracker = TaskTracker::new();
    let force = CancellationToken::new();
    while let Some((stream, peer)) = next_connection(&mut listener, &shutdown).await {
        match registry.admit(peer.ip()) {
            Ok(admission) => {
                tracker.spawn(serve_connection(
                    stream,
                    peer,
                    admission,
                    router.clone(),
                    Arc::clone(&limits),
                    shutdown.clone(),
                    force.clone(),
                ));
            }
            Err(refusal) => refuse(&stream, peer, refusal),
        }
    }
    // New connections are refused by the kernel from here on.
    drop(listener);
    // Open event streams and waits end now (reconnectable), so the drain does not wait
    // for them; the subscription closes with them.
    events.closing.cancel();
    if let Some(subscriptions) = &events.subscriptions {
        subscriptions.close();
    }
    tracker.close();
    if tokio::time::timeout(limits.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tracker.len(),
            "connections still open after the drain timeout; closing them"
        );
        force.cancel();
        tracker.wait().await;
    }
    // Note the publishes confirmed so far now, so a restart does not make the
    // dispatcher publish them all again.
    marks.flush().await;
    // The key ring notes last use once more and stops.
    stop_ring.cancel();
    if let Err(e) = keeper.await {
        tracing::warn!(error = %e, "the key ring task failed");
    }
    Ok(())
}

/// Where connections come from (a trait so the backoff can be tested without
/// exhausting the test process's descriptors).
trait Acceptor {
    type Stream;
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send;
}

impl Acceptor for TcpListener {
    type Stream = TcpStream;
    fn accept(&mut self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
}

/// The next connection, or `None` once `shutdown` fires. An accept error that is not
/// about one connection (out of descriptors, out of memory, ...) pauses the loop,
/// doubling from [`ACCEPT_BACKOFF_MIN`] to [`ACCEPT_BACKOFF_MAX`], instead of spinning.
async fn next_connection<A: Acceptor>(
    acceptor: &mut A,
    shutdown: &CancellationToken,
) -> Option<(A::Stream, SocketAddr)> {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => return None,
            accepted = acceptor.accept() => accepted,
        };
        match accepted {
            Ok(connection) => return Some(connection),
            // The client left before it was accepted: nothing to back off from.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => {
                metrics::counter!("conveyor_http_accept_errors_total").increment(1);
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis(), "cannot accept connections; backing off");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The intake holds `max_connections`.
    Capacity,
    /// The client's address holds `max_connections_per_client`.
    PerClient,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Capacity => "capacity",
            Refusal::PerClient => "per_client",
        }
    }

    /// The whole HTTP answer, written without reading the request.
    fn response(self) -> &'static [u8] {
        static CAPACITY: LazyLock<Vec<u8>> = LazyLock::new(|| {
            refusal_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "/problems/too-many-connections",
                "Too many connections",
                "the intake holds as many connections as it allows; retry later",
            )
        });
        static PER_CLIENT: LazyLock<Vec<u8>> = LazyLock::new(|| {
            refusal_response(
                StatusCode::TOO_MANY_REQUESTS,
                "/problems/too-many-connections-from-client",
                "Too many connections from this client",
                "this client address holds as many connections as one client may; \
                 reuse a kept-alive connection or retry later",
            )
        });
        match self {
            Refusal::Capacity => &CAPACITY,
            Refusal::PerClient => &PER_CLIENT,
        }
    }
}

fn refusal_response(status: StatusCode, kind: &str, title: &str, detail: &str) -> Vec<u8> {
    let problem = Problem {
        kind: kind.to_owned(),
        title: title.to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        errors: None,
    };
    let body = serde_json::to_string(&problem).unwrap_or_default();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// Answers a refused connection and closes it, without waiting on the client: what
/// it already sent is read (so closing sends a FIN rather than a reset, and the answer
/// can be read), the answer fits an empty send buffer, and nothing is awaited.
fn refuse(stream: &TcpStream, peer: SocketAddr, refusal: Refusal) {
    metrics::counter!("conveyor_http_connections_refused_total", "reason" => refusal.label())
        .increment(1);
    tracing::debug!(%peer, reason = refusal.label(), "connection refused");
    let mut scratch = [0u8; 2048];
    for _ in 0..4 {
        match stream.try_read(&mut scratch) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let _ = stream.try_write(refusal.response());
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Open connections, in all and per client address.
struct Registry {
    max: usize,
    per_client: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

impl Registry {
    fn new(limits: &ConnectionLimits) -> Self {
        metrics::gauge!("conveyor_http_connections_max").set(limits.max_connections as f64);
        metrics::gauge!("conveyor_http_connections_open").set(0.0);
        Self {
            max: limits.max_connections,
            per_client: limits.max_connections_per_client,
            open: Mutex::new(Open::default()),
        }
    }

    /// Counts a connection from `client` in, or says why not.
    fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admission, Refusal> {
        let client = client_of(client);
        let mut open = lock(&self.open);
        let held = open.by_client.get(&client).copied().unwrap_or(0);
        if held >= self.per_client {
            return Err(Refusal::PerClient);
        }
        if open.total >= self.max {
            return Err(Refusal::Capacity);
        }
        open.total += 1;
        open.by_client.insert(client, held + 1);
        metrics::gauge!("conveyor_http_connections_open").set(open.total as f64);
        Ok(Admission {
            registry: Arc::clone(self),
            client,
        })
    }
}

/// The client an address belongs to: an IPv4 address (IPv4-mapped IPv6 included), or
/// an IPv6 /64, since one host is routinely given a whole /64 and could otherwise open
/// its share from each of its addresses.
fn client_of(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & !((1u128 << 64) - 1),
        )),
        v4 => v4,
    }
}

/// One admitted connection; dropping it counts the connection out.
struct Admission {
    registry: Arc<Registry>,
    client: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut open = lock(&self.registry.open);
        open.total = open.total.saturating_sub(1);
        if let Some(held) = open.by_client.get_mut(&self.client) {
            *held -= 1;
            if *held == 0 {
                open.by_client.remove(&self.client);
            }
        }
        metrics::gauge!("conveyor_http_connections_open").set(open.total as f64);
    }
}

/// Which bound closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timeout {
    Header,
    Body,
    Idle,
    Write,
}

impl Timeout {
    /// Counts and logs a connection closed by this bound.
    fn record(self, peer: SocketAddr) {
        let (label, what) = match self {
            Timeout::Header => ("header", "request headers did not arrive in time"),
            Timeout::Body => ("body", "request body arrived too slowly"),
            Timeout::Idle => ("idle", "kept-alive connection idle too long"),
            Timeout::Write => ("write", "the client did not read its answer in time"),
        };
        metrics::counter!("conveyor_http_connections_timed_out_total", "timeout" => label)
            .increment(1);
        tracing::debug!(%peer, timeout = label, "closing connection: {what}");
    }
}

/// Where a connection is in its life, for the time bounds.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request's headers, since the instant (connect, or the first byte
    /// after an idle spell).
    Head(Instant),
    /// Serving this many requests (reading the body, handling, writing the answer).
    Busy(usize),
    /// Between requests since the instant.
    Idle(Instant),
}

/// What the accept loop, the socket and the service share about one connection.
struct ConnState {
    phase: Mutex<Phase>,
    /// Since when writes have been blocked (the client's window is full).
    write_blocked: Mutex<Option<Instant>>,
    /// Fires when the next deadline may have moved earlier.
    changed: Notify,
    body_timed_out: AtomicBool,
}

impl ConnState {
    fn new() -> Self {
        Self {
            phase: Mutex::new(Phase::Head(Instant::now())),
            write_blocked: Mutex::new(None),
            changed: Notify::new(),
            body_timed_out: AtomicBool::new(false),
        }
    }

    /// Bytes arrived: after an idle spell they start a request's headers.
    fn bytes_read(&self) {
        let mut phase = lock(&self.phase);
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    fn request_started(&self) {
        let mut phase = lock(&self.phase);
        *phase = match *phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
        };
    }

    fn request_finished(&self) {
        let mut phase = lock(&self.phase);
        match *phase {
            Phase::Busy(n) if n > 1 => *phase = Phase::Busy(n - 1),
            _ => {
                *phase = Phase::Idle(Instant::now());
                drop(phase);
                self.changed.notify_one();
            }
        }
    }

    /// A write could not go out: the client is not reading.
    fn write_blocked(&self) {
        let mut blocked = lock(&self.write_blocked);
        if blocked.is_none() {
            *blocked = Some(Instant::now());
            drop(blocked);
            self.changed.notify_one();
        }
    }

    fn write_went_out(&self) {
        let mut blocked = lock(&self.write_blocked);
        if blocked.is_some() {
            *blocked = None;
        }
    }

    /// The instant the connection is closed at unless it makes progress, and why.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Timeout)> {
        let phase = match *lock(&self.phase) {
            Phase::Head(since) => Some((since + limits.header_read_timeout, Timeout::Header)),
            Phase::Idle(since) => Some((since + limits.keep_alive_idle_timeout, Timeout::Idle)),
            // The body has its own clock; the handler is bounded by request_timeout_ms.
            Phase::Busy(_) => None,
        };
        let write =
            lock(&self.write_blocked).map(|since| (since + limits.write_timeout, Timeout::Write));
        match (phase, write) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// Serves one admitted connection until it ends, a bound closes it, or shutdown.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    admission: Admission,
    router: Router,
    limits: Arc<ConnectionLimits>,
    shutdown: CancellationToken,
    force: CancellationToken,
) {
    let conn = Arc::new(ConnState::new());
    let io = TokioIo::new(TrackedStream {
        inner: stream,
        conn: Arc::clone(&conn),
    });
    let service = {
        let conn = Arc::clone(&conn);
        let limits = Arc::clone(&limits);
        hyper::service::service_fn(move |request: Request<Incoming>| {
            respond(
                request,
                peer,
                router.clone(),
                Arc::clone(&conn),
                Arc::clone(&limits),
            )
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        // Our own clock bounds headers and idle spells apart (hyper's bounds both).
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    let mut draining = false;
    loop {
        let deadline = conn.deadline(&limits).map(|(at, _)| at);
        let changed = conn.changed.notified();
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                break;
            }
            () = changed => {}
            () = sleep_until(deadline) => {
                if let Some((at, timeout)) = conn.deadline(&limits)
                    && at <= Instant::now()
                {
                    timeout.record(peer);
                    break;
                }
            }
            () = shutdown.cancelled(), if !draining => {
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
            () = force.cancelled() => break,
        }
    }
    drop(admission);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Runs one request through the router, with its body on the clock and the caller's
/// address for the rate limit; keeps the connection busy until the answer is written.
async fn respond(
    request: Request<Incoming>,
    peer: SocketAddr,
    router: Router,
    conn: Arc<ConnState>,
    limits: Arc<ConnectionLimits>,
) -> Result<Response<TrackedBody>, Infallible> {
    let guard = RequestGuard::start(Arc::clone(&conn));
    let mut request = request.map(|body| {
        if http_body::Body::is_end_stream(&body) {
            Body::new(body)
        } else {
            Body::new(TimedBody::new(body, peer, Arc::clone(&conn), limits))
        }
    });
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let response = if conn.body_timed_out.load(Ordering::Relaxed) {
        body_timeout_response(&response)
    } else {
        response
    };
    Ok(response.map(|body| TrackedBody {
        inner: body,
        _guard: guard,
    }))
}

/// `408` for a request whose body stopped arriving; the connection closes after it.
fn body_timeout_response(handled: &Response<Body>) -> Response<Body> {
    let problem = Problem {
        kind: "/problems/body-timeout".to_owned(),
        title: "Request body too slow".to_owned(),
        status: StatusCode::REQUEST_TIMEOUT.as_u16(),
        detail: "the request body did not arrive in time (producer.body_read_timeout_ms, \
                 producer.body_min_bytes_per_sec)"
            .to_owned(),
        errors: None,
    };
    let mut response = (StatusCode::REQUEST_TIMEOUT, axum::Json(problem)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Some(id) = handled.headers().get(crate::REQUEST_ID) {
        headers.insert(crate::REQUEST_ID, id.clone());
    }
    response
}

/// Marks the connection busy from a request's headers until its answer is written
/// (or abandoned).
struct RequestGuard {
    conn: Arc<ConnState>,
}

impl RequestGuard {
    fn start(conn: Arc<ConnState>) -> Self {
        conn.request_started();
        Self { conn }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.conn.request_finished();
    }
}

/// An answer's body; hyper drops it once written, which ends the request.
struct TrackedBody {
    inner: Body,
    _guard: RequestGuard,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body failed to arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

/// A request body on the clock: it must keep arriving at the minimum rate.
struct TimedBody {
    inner: Incoming,
    started: Instant,
    received: u64,
    timer: Pin<Box<Sleep>>,
    peer: SocketAddr,
    conn: Arc<ConnState>,
    limits: Arc<ConnectionLimits>,
}

impl TimedBody {
    fn new(
        inner: Incoming,
        peer: SocketAddr,
        conn: Arc<ConnState>,
        limits: Arc<ConnectionLimits>,
    ) -> Self {
        let started = Instant::now();
        Self {
            inner,
            started,
            received: 0,
            timer: Box::pin(tokio::time::sleep_until(limits.body_deadline(started, 0))),
            peer,
            conn,
            limits,
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = &mut *self;
        if this.conn.body_timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(BodyTimedOut.into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    let deadline = this.limits.body_deadline(this.started, this.received);
                    this.timer.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.timer.as_mut().poll(cx).is_ready() {
                    this.conn.body_timed_out.store(true, Ordering::Relaxed);
                    Timeout::Body.record(this.peer);
                    return Poll::Ready(Some(Err(BodyTimedOut.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        http_body::Body::is_end_stream(&self.inner)
    }

    fn size_hint(&self) -> SizeHint {
        http_body::Body::size_hint(&self.inner)
    }
}

/// The socket, noting when bytes arrive after an idle spell and when writes block.
struct TrackedStream {
    inner: TcpStream,
    conn: Arc<ConnState>,
}

impl TrackedStream {
    fn note_write<T>(&self, written: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if written.is_pending() {
            self.conn.write_blocked();
        } else {
            self.conn.write_went_out();
        }
        written
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.bytes_read();
        }
        read
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ProducerSettings {
        ProducerSettings::default()
    }

    #[test]
    fn the_default_cap_stays_well_below_the_descriptor_limit() {
        let limits = ConnectionLimits::resolve_with(&settings(), 16, Some(1024)).unwrap();
        // 1024 - 16 - 64 = 944 left; three quarters of it.
        assert_eq!(limits.max_connections, 708);
        assert_eq!(limits.max_connections_per_client, 354);
        assert_eq!(limits.reserved_descriptors, 80);
        let roomy = ConnectionLimits::resolve_with(&settings(), 16, Some(1 << 20)).unwrap();
        assert_eq!(roomy.max_connections, DEFAULT_MAX_CONNECTIONS);
        let unlimited = ConnectionLimits::resolve_with(&settings(), 16, None).unwrap();
        assert_eq!(unlimited.max_connections, DEFAULT_MAX_CONNECTIONS);
    }

    #[test]
    fn a_cap_the_descriptor_limit_cannot_hold_names_its_key() {
        let mut settings = settings();
        settings.max_connections = Some(1000);
        let err = ConnectionLimits::resolve_with(&settings, 16, Some(1024)).unwrap_err();
        assert!(err.contains("`producer.max_connections`"), "{err}");
        assert!(err.contains("1024"), "{err}");
        assert!(ConnectionLimits::resolve_with(&settings, 16, Some(1080)).is_ok());

        let tiny = ConnectionLimits::resolve_with(&ProducerSettings::default(), 16, Some(70));
        assert!(tiny.unwrap_err().contains("ulimit"));
    }

    #[test]
    fn a_per_client_cap_above_the_total_names_its_key() {
        let mut settings = settings();
        settings.max_connections = Some(10);
        settings.max_connections_per_client = Some(11);
        let err = ConnectionLimits::resolve_with(&settings, 16, None).unwrap_err();
        assert!(
            err.contains("`producer.max_connections_per_client`"),
            "{err}"
        );
    }

    #[test]
    fn a_body_earns_time_as_it_arrives() {
        let mut settings = settings();
        settings.body_read_timeout_ms = 1_000;
        settings.body_min_bytes_per_sec = 1_000;
        let limits = ConnectionLimits::resolve_with(&settings, 16, None).unwrap();
        let start = Instant::now();
        assert_eq!(
            limits.body_deadline(start, 0),
            start + Duration::from_secs(1)
        );
        assert_eq!(
            limits.body_deadline(start, 2_500),
            start + Duration::from_millis(3_500)
        );
    }

    #[test]
    fn connections_are_capped_in_all_and_per_client() {
        let limits = ConnectionLimits {
            max_connections: 3,
            max_connections_per_client: 2,
            ..ConnectionLimits::resolve_with(&settings(), 0, None).unwrap()
        };
        let registry = Arc::new(Registry::new(&limits));
        let a = IpAddr::from([10, 0, 0, 1]);
        let b = IpAddr::from([10, 0, 0, 2]);
        let c = IpAddr::from([10, 0, 0, 3]);
        let first = registry.admit(a).unwrap();
        let _second = registry.admit(a).unwrap();
        assert_eq!(registry.admit(a).err(), Some(Refusal::PerClient));
        // The same client over IPv6 (mapped) is the same client.
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(registry.admit(mapped).err(), Some(Refusal::PerClient));
        let _third = registry.admit(b).unwrap();
        assert_eq!(registry.admit(c).err(), Some(Refusal::Capacity));
        drop(first);
        let _fourth = registry.admit(c).unwrap();
        assert_eq!(lock(&registry.open).by_client.len(), 3);
    }

    #[test]
    fn an_ipv6_host_is_one_client_per_64() {
        let limits = ConnectionLimits {
            max_connections: 10,
            max_connections_per_client: 1,
            ..ConnectionLimits::resolve_with(&settings(), 0, None).unwrap()
        };
        let registry = Arc::new(Registry::new(&limits));
        let address = |s: &str| s.parse::<IpAddr>().unwrap();
        let _held = registry.admit(address("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            registry.admit(address("2001:db8:1:2:ffff::9")).err(),
            Some(Refusal::PerClient),
            "another address in the same /64"
        );
        assert!(registry.admit(address("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn refusals_are_complete_http_answers_with_retry_after() {
        for (refusal, status) in [(Refusal::Capacity, "503"), (Refusal::PerClient, "429")] {
            let text = String::from_utf8(refusal.response().to_vec()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            assert!(head.contains("\r\nretry-after: 1"), "{head}");
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{head}"
            );
            let problem: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(problem["status"].to_string(), status);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_phase_has_its_deadline_and_a_blocked_write_bounds_a_busy_one() {
        let limits = ConnectionLimits::resolve_with(&settings(), 0, None).unwrap();
        let start = Instant::now();
        let conn = ConnState::new();
        let after = |ms| start + Duration::from_millis(ms);
        assert_eq!(
            conn.deadline(&limits),
            Some((after(5_000), Timeout::Header))
        );
        conn.request_started();
        assert_eq!(
            conn.deadline(&limits),
            None,
            "a request in service has none"
        );
        conn.write_blocked();
        assert_eq!(
            conn.deadline(&limits),
            Some((after(30_000), Timeout::Write))
        );
        conn.write_went_out();
        conn.request_finished();
        assert_eq!(conn.deadline(&limits), Some((after(60_000), Timeout::Idle)));
        conn.write_blocked();
        assert_eq!(
            conn.deadline(&limits),
            Some((after(30_000), Timeout::Write))
        );
        conn.write_went_out();
        conn.bytes_read();
        assert_eq!(
            conn.deadline(&limits),
            Some((after(5_000), Timeout::Header))
        );
    }

    /// Fails every accept with `error`, counting calls; after `limit` calls it
    /// never answers again (so a spinning loop ends and the test can count).
    struct Failing {
        error: io::ErrorKind,
        calls: Arc<std::sync::atomic::AtomicUsize>,
        then_accept_after: Option<usize>,
        limit: usize,
    }

    impl Acceptor for Failing {
        type Stream = ();
        fn accept(&mut self) -> impl Future<Output = io::Result<((), SocketAddr)>> + Send {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let error = self.error;
            let accept = self.then_accept_after.is_some_and(|after| n > after);
            let limit = self.limit;
            async move {
                tokio::task::yield_now().await;
                if accept {
                    return Ok(((), SocketAddr::from(([127, 0, 0, 1], 1))));
                }
                if n > limit {
                    std::future::pending::<()>().await;
                }
                Err(io::Error::from(error))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn accept_errors_back_off_instead_of_spinning() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut acceptor = Failing {
            // EMFILE: out of descriptors.
            error: io::Error::from_raw_os_error(24).kind(),
            calls: Arc::clone(&calls),
            then_accept_after: None,
            limit: 10_000,
        };
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let looping =
            tokio::spawn(async move { next_connection(&mut acceptor, &stop).await.is_none() });
        // Ten seconds of (virtual) time: 5, 10, ... 640 ms, then once a second.
        tokio::time::sleep(Duration::from_secs(10)).await;
        shutdown.cancel();
        assert!(looping.await.unwrap(), "shutdown ends the loop");
        let calls = calls.load(Ordering::SeqCst);
        assert!(
            (8..=20).contains(&calls),
            "{calls} accepts in 10 s: the loop must back off, not spin"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_gone_before_accept_is_skipped_without_backing_off() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut acceptor = Failing {
            error: io::ErrorKind::ConnectionAborted,
            calls: Arc::clone(&calls),
            then_accept_after: Some(3),
            limit: 10_000,
        };
        let started = Instant::now();
        let accepted = next_connection(&mut acceptor, &CancellationToken::new()).await;
        assert!(accepted.is_some());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(Instant::now(), started, "no pause for a client that left");
    }
}
