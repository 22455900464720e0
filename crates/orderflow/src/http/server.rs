//! The accept loop: HTTP/1.1 connections under a connection limit and timeouts, so that
//! no crowd of clients, idle or slow, can take the server from the others.
//!
//! - At most `max_connections` are open (kept below the process's open-file limit, which
//!   is raised to its hard limit at start). At the limit, a new connection closes the
//!   oldest connection with no request in flight: a flood of idle connections cannot lock
//!   out `/healthz` or a real client. When every connection is busy, the new one is
//!   closed at once instead of waiting unseen in the kernel's backlog.
//! - A request head must be complete within `header_read_timeout` of its first byte: slow
//!   or partial headers are cut off.
//! - A connection on which nothing arrives and no request is in flight is closed after
//!   `keep_alive_timeout` (also a new connection that never sends anything).
//! - Body and whole-request deadlines are middleware (see [`super::limits`]).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::config::ServerConfig;

/// Open files kept free for the database, the log and the listener itself.
const RESERVED_FILES: u64 = 128;

/// How long in-flight requests may run after shutdown is requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// One open connection, as the accept loop sees it.
struct Conn {
    /// Requests being answered on it now.
    in_flight: AtomicUsize,
    /// When it last had no request in flight (or was opened).
    idle_since: Mutex<Instant>,
    /// When the first byte of the next request head arrived, while it is being read.
    head_started: Mutex<Option<Instant>>,
    /// Cancelled to close it (evicted as the oldest idle connection).
    evict: CancellationToken,
    /// Signalled when its deadline may have changed: its last request in flight ended, or a
    /// request head started to arrive.
    went_idle: Notify,
}

impl Conn {
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn idle_since(&self) -> Instant {
        *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn head_started(&self) -> Option<Instant> {
        *self
            .head_started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// When the connection is to be closed, as things stand: none while a request is in
    /// flight; else the head's deadline while one is arriving; else the idle deadline.
    fn deadline(&self, limits: &ServerConfig) -> Option<Instant> {
        if !self.is_idle() {
            return None;
        }
        Some(match self.head_started() {
            Some(t) => t + limits.header_read_timeout,
            None => self.idle_since() + limits.keep_alive_timeout,
        })
    }
}

/// The socket, noting when the first bytes of a request head arrive.
struct Watched {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before && self.conn.is_idle() {
            let mut started = self
                .conn
                .head_started
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if started.is_none() {
                *started = Some(Instant::now());
                self.conn.went_idle.notify_one();
            }
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Counts a request in flight on its connection while it lives.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn enter(conn: &Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        *conn
            .head_started
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        Self(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self
                .0
                .idle_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Instant::now();
            self.0.went_idle.notify_one();
        }
    }
}

/// The router as hyper's service for one connection, counting its requests in flight.
#[derive(Clone)]
struct ConnService {
    router: Router,
    conn: Arc<Conn>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        let guard = InFlight::enter(&self.conn);
        let router = self.router.clone();
        Box::pin(async move {
            let response = router.oneshot(req.map(Body::new)).await;
            drop(guard);
            response
        })
    }
}

/// The open connections, oldest first.
#[derive(Default)]
struct Registry {
    next_id: u64,
    open: BTreeMap<u64, Arc<Conn>>,
}

impl Registry {
    /// Closes the oldest connection with nothing in flight; false when all are busy.
    fn evict_oldest_idle(&mut self) -> bool {
        let Some(id) = self
            .open
            .iter()
            .find(|(_, c)| c.is_idle())
            .map(|(id, _)| *id)
        else {
            return false;
        };
        if let Some(conn) = self.open.remove(&id) {
            conn.evict.cancel();
        }
        true
    }
}

/// The connection limit in force: the configured one, below the open-file limit.
fn effective_max_connections(configured: usize) -> usize {
    let files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit");
            return configured;
        }
    };
    let room = usize::try_from(files.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    if room < configured {
        tracing::warn!(
            configured,
            open_file_limit = files,
            "server.max_connections is above what the open-file limit allows; using {room}"
        );
    }
    configured.min(room).max(1)
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets requests in flight
/// finish (up to a grace period) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ServerConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let max = effective_max_connections(limits.max_connections.max(1));
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper's own header timer would also run while a connection idles between requests;
    // `serve_connection` keeps both deadlines instead.
    http.timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true);
    let http = Arc::new(http);
    let registry = Arc::new(Mutex::new(Registry::default()));
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: wait a
                    // little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let conn = {
            let mut reg = registry.lock().unwrap_or_else(PoisonError::into_inner);
            if reg.open.len() >= max {
                if reg.evict_oldest_idle() {
                    metrics::counter!("orderflow_http_connections_evicted_total").increment(1);
                } else {
                    metrics::counter!("orderflow_http_connections_refused_total").increment(1);
                    drop(stream);
                    continue;
                }
            }
            let conn = Arc::new(Conn {
                in_flight: AtomicUsize::new(0),
                idle_since: Mutex::new(Instant::now()),
                head_started: Mutex::new(None),
                evict: CancellationToken::new(),
                went_idle: Notify::new(),
            });
            reg.next_id += 1;
            let id = reg.next_id;
            reg.open.insert(id, conn.clone());
            metrics::gauge!("orderflow_http_connections").set(reg.open.len() as f64);
            (id, conn)
        };
        let (http, registry, router) = (http.clone(), registry.clone(), router.clone());
        let (shutdown, limits) = (shutdown.clone(), limits.clone());
        tasks.spawn(async move {
            let (id, conn) = conn;
            serve_connection(stream, &http, router, conn, &limits, shutdown).await;
            let mut reg = registry.lock().unwrap_or_else(PoisonError::into_inner);
            reg.open.remove(&id);
            metrics::gauge!("orderflow_http_connections").set(reg.open.len() as f64);
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            "requests still running after the shutdown grace period; closing them"
        );
        tasks.abort_all();
    }
    Ok(())
}

/// Drives one connection until the client closes it, a deadline passes (see
/// [`Conn::deadline`]), it is evicted, or the server shuts down (then its request in flight,
/// if any, finishes first).
async fn serve_connection(
    stream: TcpStream,
    http: &hyper::server::conn::http1::Builder,
    router: Router,
    conn: Arc<Conn>,
    limits: &ServerConfig,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let service = ConnService {
        router,
        conn: conn.clone(),
    };
    let io = Watched {
        stream,
        conn: conn.clone(),
    };
    // With upgrades: GraphQL subscriptions run over WebSocket.
    let connection = http
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut closing = false;
    loop {
        let deadline = conn.deadline(limits);
        tokio::select! {
            _ = connection.as_mut() => return,
            () = conn.evict.cancelled(), if !closing => {
                if conn.is_idle() {
                    return;
                }
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = shutdown.cancelled(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = conn.went_idle.notified() => {}
            () = sleep_until(deadline), if deadline.is_some() && !closing => {
                if conn.deadline(limits).is_some_and(|d| d <= Instant::now()) {
                    return;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
