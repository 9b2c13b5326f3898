//! Accepts the collector's connections so that no peer can use them up: anyone on the network
//! can open a TCP connection to the collector, long before any credential is checked.
//!
//! Invariants:
//! 1. No connection lives long without work: the TLS handshake must finish within
//!    [`Limits::handshake_timeout`], a request's headers within [`Limits::header_timeout`], a
//!    connection with no request in flight is closed after [`Limits::idle_timeout`], and one
//!    whose response has not moved for [`Limits::stall_timeout`] (a peer that stopped reading)
//!    is closed too. The live feed's stream moves at least every [`FEED_KEEP_ALIVE`].
//! 2. At most [`Limits::max_per_source`] connections from one source (an IPv4 address, an IPv6
//!    /64: one host holds a whole /64); one more is closed at once, before any TLS, and counted
//!    (`requests_refused_total{reason="connections_per_source"}`).
//! 3. At most [`Limits::max_connections`] in all (never more than the process's descriptor
//!    limit allows, less a reserve for the store and exporters). A new connection past the cap
//!    closes the oldest connection with no request in flight of the source holding the most,
//!    so idle connections, however many sources open them, cannot lock a client out, and a
//!    flooding source loses its own first; only when every connection is busy is the new one
//!    refused (`reason="connections_total"`). A connection told to close finishes the request
//!    it may have just begun (HTTP graceful shutdown) and takes no more.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

mod certificate;

pub use certificate::ServedCertificate;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::config::Connections;
use crate::metrics::Metrics;
use crate::server::FEED_KEEP_ALIVE;

/// Descriptors kept back from connections for the store, the exporters and the process itself.
pub const DESCRIPTOR_RESERVE: u64 = 64;

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections at once.
    pub max_connections: usize,
    /// Most connections at once from one address.
    pub max_per_source: usize,
    /// Longest TLS handshake.
    pub handshake_timeout: Duration,
    /// Longest wait for a request's headers.
    pub header_timeout: Duration,
    /// Longest a connection stays open with no request in flight.
    pub idle_timeout: Duration,
    /// Longest a response may go without moving before its connection is closed: the idle
    /// timeout, and never less than twice the live feed's keep-alive.
    pub stall_timeout: Duration,
}

impl Limits {
    /// The configured limits, the total cut to what `descriptors` (the process's limit on
    /// open files) leaves after [`DESCRIPTOR_RESERVE`].
    pub fn new(config: &Connections, descriptors: u64) -> Self {
        let room = usize::try_from(descriptors.saturating_sub(DESCRIPTOR_RESERVE))
            .unwrap_or(usize::MAX)
            .max(1);
        // A zero timeout would fail every handshake or spin the idle watchdog.
        let at_least = |d: Duration| d.max(Duration::from_millis(100));
        Self {
            max_connections: config.max.min(room).max(1),
            max_per_source: config.max_per_source.max(1),
            handshake_timeout: at_least(config.handshake_timeout),
            header_timeout: at_least(config.header_timeout),
            idle_timeout: at_least(config.idle_timeout),
            stall_timeout: config.idle_timeout.max(2 * FEED_KEEP_ALIVE),
        }
    }
}

/// Raises the process's soft limit on open files to its hard limit and returns it: the most
/// descriptors connections may use.
pub fn raise_descriptor_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// The TLS side of the listener, presenting whatever `certificate` serves at each handshake.
pub fn tls_acceptor(certificate: Arc<ServedCertificate>) -> Result<TlsAcceptor, TlsError> {
    let provider = certificate_provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The cryptography the listener uses (ring).
pub fn certificate_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why the TLS side could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{0}: {1}")]
    Pem(String, rustls::pki_types::pem::Error),
    /// rustls refused the certificate or key.
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// The certificate could not be read for its validity.
    #[error("{0}")]
    Certificate(String),
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` completes, then
/// closes idle connections and gives busy ones up to five seconds to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let table = Arc::new(Table::new(limits, metrics.clone()));
    tokio::pin!(shutdown);
    let mut last_warned = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // At most a line a second: out of descriptors, this comes every 20 ms.
                if last_warned.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!("accepting a connection: {e}");
                    last_warned = Some(Instant::now());
                }
                // Out of descriptors (or another passing failure): free one if an idle
                // connection holds it, and do not spin.
                if matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::MFILE.raw_os_error() || code == rustix::io::Errno::NFILE.raw_os_error())
                {
                    table.evict_oldest_idle();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let conn = match table.admit(source_of(peer)) {
            Ok(conn) => conn,
            Err(reason) => {
                metrics.refused.with_label_values(&[reason]).inc();
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            peer,
            conn,
            tls.clone(),
            app.clone(),
            limits,
        ));
    }
    drop(listener);
    table.close_all();
    let deadline = Instant::now() + Duration::from_secs(5);
    while table.open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The source a connection counts against: an IPv4 address (also when mapped into IPv6), or an
/// IPv6 address's /64, which one host or LAN gets whole.
pub fn source_of(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                v6.to_bits() & !u128::from(u64::MAX),
            )),
        },
        v4 => v4,
    }
}

/// One open connection.
#[derive(Debug)]
struct Conn {
    id: u64,
    source: IpAddr,
    /// Requests whose response is not yet fully written.
    in_flight: AtomicUsize,
    /// When the connection last did work: opened, a request came or ended, a response frame
    /// went out.
    last_work: Mutex<Instant>,
    /// Told to close (evicted to make room, or shutting down).
    close: Notify,
}

impl Conn {
    fn worked(&self) {
        *self
            .last_work
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Whether it has been quiet too long: idle with no request in flight, or stalled with one.
    fn overdue(&self, limits: &Limits) -> bool {
        let quiet = self
            .last_work
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed();
        let limit = if self.busy() {
            limits.stall_timeout
        } else {
            limits.idle_timeout
        };
        quiet >= limit
    }
}

/// Every open connection, oldest first, and the count per source.
struct Table {
    limits: Limits,
    metrics: Arc<Metrics>,
    state: Mutex<TableState>,
}

#[derive(Default)]
struct TableState {
    next_id: u64,
    conns: BTreeMap<u64, Arc<Conn>>,
    per_source: HashMap<IpAddr, usize>,
}

impl TableState {
    fn remove(&mut self, id: u64) -> Option<Arc<Conn>> {
        let conn = self.conns.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&conn.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&conn.source);
            }
        }
        Some(conn)
    }
}

impl Table {
    fn new(limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            limits,
            metrics,
            state: Mutex::new(TableState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TableState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self) -> usize {
        self.lock().conns.len()
    }

    /// Admits a connection from `source`, closing the oldest idle one if the table is full; or
    /// says why not.
    fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Admitted, &'static str> {
        let mut state = self.lock();
        if state.per_source.get(&source).copied().unwrap_or(0) >= self.limits.max_per_source {
            return Err("connections_per_source");
        }
        if state.conns.len() >= self.limits.max_connections && !self.evict(&mut state) {
            return Err("connections_total");
        }
        state.next_id += 1;
        let conn = Arc::new(Conn {
            id: state.next_id,
            source,
            in_flight: AtomicUsize::new(0),
            last_work: Mutex::new(Instant::now()),
            close: Notify::new(),
        });
        state.conns.insert(conn.id, conn.clone());
        *state.per_source.entry(source).or_default() += 1;
        self.metrics.connections_open.set(state.conns.len() as i64);
        Ok(Admitted {
            table: self.clone(),
            conn,
        })
    }

    /// Closes the oldest connection with no request in flight, if any.
    fn evict_oldest_idle(&self) {
        self.evict(&mut self.lock());
    }

    /// Closes the oldest connection with no request in flight of the source that holds the
    /// most such connections; false when every connection is busy.
    fn evict(&self, state: &mut TableState) -> bool {
        let mut idle_per_source: HashMap<IpAddr, usize> = HashMap::new();
        for conn in state.conns.values().filter(|c| !c.busy()) {
            *idle_per_source.entry(conn.source).or_default() += 1;
        }
        let Some(most) = idle_per_source.values().max().copied() else {
            return false;
        };
        let victim = state
            .conns
            .values()
            .find(|c| !c.busy() && idle_per_source.get(&c.source) == Some(&most))
            .map(|c| c.id);
        let Some(conn) = victim.and_then(|id| state.remove(id)) else {
            return false;
        };
        conn.close.notify_one();
        self.metrics.connections_evicted.inc();
        true
    }

    /// Tells every connection to close (shutting down): idle ones at once, busy ones once
    /// their request is answered.
    fn close_all(&self) {
        for conn in self.lock().conns.values() {
            conn.close.notify_one();
        }
    }
}

/// A connection's place in the table, given up when dropped.
struct Admitted {
    table: Arc<Table>,
    conn: Arc<Conn>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut state = self.table.lock();
        state.remove(self.conn.id);
        self.table
            .metrics
            .connections_open
            .set(state.conns.len() as i64);
    }
}

/// Runs one connection to its end: the handshake, then HTTP/1.1, until the peer leaves, a
/// timeout passes or the table closes it.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    admitted: Admitted,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
) {
    let conn = admitted.conn.clone();
    match tls {
        Some(acceptor) => {
            let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream));
            let stream = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    _ => return,
                },
                () = conn.close.notified() => return,
            };
            http(stream, peer, &conn, app, limits).await;
        }
        None => http(stream, peer, &conn, app, limits).await,
    }
    drop(admitted);
}

/// HTTP/1.1 on an established stream, closed once idle for `limits.idle_timeout`.
async fn http<S>(stream: S, peer: SocketAddr, conn: &Arc<Conn>, app: Router, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tracked = conn.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let busy = Busy::start(tracked.clone());
        let app = app.clone();
        request.extensions_mut().insert(ConnectInfo(peer));
        async move {
            let response = match app.oneshot(request.map(Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(response.map(|body| Body::new(Tracked { body, busy })))
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    let tick = limits.idle_timeout.min(Duration::from_secs(1));
    let mut closing = false;
    loop {
        tokio::select! {
            _ = &mut served => return,
            // Told to close: a request that has just begun is answered, then the connection
            // ends (hyper's graceful shutdown closes an idle one at once).
            () = conn.close.notified(), if !closing => {
                closing = true;
                served.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep(tick) => {
                if conn.overdue(&limits) {
                    return;
                }
            }
        }
    }
}

/// A request in flight on its connection, from its headers to the end of its response.
struct Busy(Arc<Conn>);

impl Busy {
    fn start(conn: Arc<Conn>) -> Self {
        conn.worked();
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.worked();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight until it is written or dropped,
/// and marks its connection as working whenever a frame goes out.
struct Tracked {
    body: Body,
    busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            // The response moved: the peer is reading.
            this.busy.0.worked();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests;
