//! The HTTP/1.1 + h2c server of every HTTP listener (node admin and origin, balancer admin and
//! playback), over an [`Acceptor`]: [`serve_gated`] for any hyper service, [`serve_admin`]
//! for the admin APIs' plain handlers.
//!
//! Limits, each a field of [`HttpLimits`] with its reason: a deadline for a request's header
//! (a peer that trickles a header holds a connection slot and memory), an idle timeout (a
//! connection with no request in progress, including one that never completes its first, or
//! that stalls before hyper even knows whether it speaks HTTP/1 or HTTP/2), HTTP/2 concurrent
//! streams and header list size, keep-alive pings that find dead HTTP/2 peers, and a bound on
//! streams reset before they are answered (the HTTP/2 rapid-reset flood).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use http::Request;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{accept::Acceptor, gate::Gate, http::Reply};

/// Limits of one HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// From the first byte of a request to its complete header (HTTP/1), and from accept to
    /// the first complete request (any version).
    pub header_timeout: Duration,
    /// HTTP/2 streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Largest header block accepted, bytes.
    pub max_header_list_size: u32,
    /// HTTP/2 ping interval; a peer that does not answer within the same time is dropped.
    pub keepalive_interval: Duration,
    /// HTTP/2 streams a peer may reset before we answered them, pending at once.
    pub max_pending_resets: usize,
    /// A connection with no request in progress (no response being written) for this long is
    /// closed (idle keep-alive connections). Checked once per period, so such a connection
    /// lives between one and two periods. A new connection that brings no complete request
    /// within `header_timeout` is closed then.
    pub idle_timeout: Duration,
    /// When the listener is retired (a hand-over or a drain), how long a connection may
    /// take to finish the request it is answering before it is cut.
    pub retire_grace: Duration,
}

/// An admin API answers small requests from operators and Prometheus: a few seconds for a
/// header is generous, a few streams per connection is plenty, 16 KiB of header is more than
/// any browser sends.
pub const ADMIN_LIMITS: HttpLimits = HttpLimits {
    header_timeout: Duration::from_secs(10),
    max_concurrent_streams: 16,
    max_header_list_size: 16 * 1024,
    keepalive_interval: Duration::from_secs(30),
    max_pending_resets: 16,
    // Prometheus scrapes every 15-60 s and reconnects at no cost; a dashboard polls faster.
    idle_timeout: Duration::from_secs(60),
    retire_grace: Duration::from_secs(10),
};

/// Connections at once on an admin listener: operators, dashboards and Prometheus need a
/// handful; the cap bounds what a flood can hold.
pub const ADMIN_MAX_CONNECTIONS: usize = 256;
/// Admin connections at once from one address: a dashboard opens a few, Prometheus one.
pub const ADMIN_MAX_CONNECTIONS_PER_IP: usize = 32;

/// Serve an admin API (node or balancer) on `listener` until `stop`: [`ADMIN_LIMITS`], the
/// admin connection caps, and `on_refused` for each connection a cap refused.
pub async fn serve_admin<H>(
    listener: TcpListener,
    handler: H,
    on_refused: impl Fn(crate::accept::Refusal) + Send + Sync + 'static,
    stop: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Reply + Send + Sync + 'static,
{
    serve_admin_gated(listener, handler, on_refused, retired_on(stop)).await;
}

/// [`serve_admin`] steered by a [`Gate`] (pause, retire) instead of a stop token.
pub async fn serve_admin_gated<H>(
    listener: TcpListener,
    handler: H,
    on_refused: impl Fn(crate::accept::Refusal) + Send + Sync + 'static,
    gate: Gate,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Reply + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    serve_gated(
        listener,
        admin_acceptor(on_refused),
        ADMIN_LIMITS,
        move |peer| {
            let handler = Arc::clone(&handler);
            service_fn(move |req: Request<Incoming>| {
                let r = handler(req, peer);
                async move { Ok::<_, Infallible>(r) }
            })
        },
        gate,
    )
    .await;
}

fn admin_acceptor(
    on_refused: impl Fn(crate::accept::Refusal) + Send + Sync + 'static,
) -> Arc<Acceptor> {
    Acceptor::new(
        "admin",
        crate::accept::ConnLimits {
            max_total: ADMIN_MAX_CONNECTIONS,
            max_per_ip: ADMIN_MAX_CONNECTIONS_PER_IP,
            exempt: Vec::new(),
        },
        on_refused,
    )
}

/// Build hyper's auto (HTTP/1.1 + h2c) connection builder with `limits`.
pub fn builder(limits: &HttpLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_list_size.max(8192) as usize);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_size)
        .keep_alive_interval(Some(limits.keepalive_interval))
        .keep_alive_timeout(limits.keepalive_interval)
        .max_pending_accept_reset_streams(Some(limits.max_pending_resets));
    b
}

/// A gate that retires when `stop` is cancelled (for servers that only ever stop).
pub fn retired_on(stop: CancellationToken) -> Gate {
    let (handle, gate) = crate::gate::gate();
    tokio::spawn(async move {
        stop.cancelled().await;
        handle.retire();
    });
    gate
}

/// Serve on `listener` while `gate` lets it, each connection with the service
/// `make_service(peer)` under `limits`, holding an [`Acceptor`] slot for its life. Paused,
/// new connections wait in the backlog; retired, no more are accepted and each live one
/// finishes its request (HTTP/1 with `Connection: close`, HTTP/2 with a GOAWAY) within
/// `limits.retire_grace`.
pub async fn serve_gated<M, S, B>(
    listener: TcpListener,
    acceptor: Arc<Acceptor>,
    limits: HttpLimits,
    make_service: M,
    gate: Gate,
) where
    M: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_gated_tls(listener, acceptor, limits, make_service, gate, None).await
}

/// [`serve_gated`] over TLS when `tls` is given (HTTPS: ALPN picks HTTP/2 or HTTP/1.1, see
/// [`crate::tls::HTTP_ALPN`]); each connection's handshake must finish within
/// [`crate::tls::HANDSHAKE_TIMEOUT`], then the same limits apply.
pub async fn serve_gated_tls<M, S, B>(
    listener: TcpListener,
    acceptor: Arc<Acceptor>,
    limits: HttpLimits,
    make_service: M,
    mut gate: Gate,
    tls: Option<crate::tls::TlsAcceptor>,
) where
    M: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Arc::new(builder(&limits));
    let limits = Arc::new(limits);
    while gate.open().await {
        let (sock, peer, permit) = tokio::select! {
            _ = gate.closing() => continue,
            c = acceptor.accept(&listener) => c,
        };
        let _ = sock.set_nodelay(true);
        let svc = make_service(peer);
        let builder = Arc::clone(&builder);
        let limits = Arc::clone(&limits);
        let gate = gate.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    // The first request's header is read here, into a buffer the size of what
                    // arrives; hyper's state (an 8 KiB buffer from the first byte, timers, the
                    // connection future) exists only once the header is complete.
                    let mut sock = sock;
                    let until = tokio::time::Instant::now() + limits.header_timeout;
                    let max = limits.max_header_list_size as usize;
                    // Not cut short by a retired gate: a request on its way is answered
                    // (with `Connection: close`) as it would have been.
                    let opening = crate::opening::read_opening(
                        &mut sock,
                        until,
                        max,
                        crate::opening::http_head_complete,
                    )
                    .await;
                    if let Ok(opening) = opening {
                        let sock = crate::opening::Rewind::new(opening, sock);
                        Box::pin(serve_connection(&builder, sock, svc, gate, &limits, until)).await;
                    }
                }
                Some(tls) => {
                    // The ClientHello first, into a buffer the size of what arrives; rustls's
                    // state and hyper's exist once it is in.
                    let accepted = tokio::time::Instant::now();
                    let mut sock = sock;
                    if let Ok(hello) = crate::tls::read_hello(&mut sock, accepted, "https").await {
                        Box::pin(async move {
                            if let Ok(s) =
                                crate::tls::accept(&tls, sock, hello, accepted, "https").await
                            {
                                // The request's deadline starts once TLS is up.
                                let until = tokio::time::Instant::now() + limits.header_timeout;
                                serve_connection(&builder, s, svc, gate, &limits, until).await;
                            }
                        })
                        .await
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Serve one connection, whose first complete request is due by `first_request`, until it
/// ends, it stays idle for `limits.idle_timeout`, or `gate` is
/// retired: then let it wind down without a client ever seeing a request fail. HTTP/1: every
/// response from now on carries `Connection: close` (the client opens a new connection, to
/// whoever holds the listener now, for its next request; closing an idle keep-alive
/// connection instead races with a request already on its way). HTTP/2: a GOAWAY, which tells
/// the client which requests were taken. Whatever is still open after `limits.retire_grace`
/// is shut down.
pub async fn serve_connection<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    sock: I,
    svc: S,
    mut gate: Gate,
    limits: &HttpLimits,
    first_request: tokio::time::Instant,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let state = Arc::new(Winding::default());
    let svc = WindDown {
        inner: svc,
        state: Arc::clone(&state),
    };
    let conn = builder.serve_connection(TokioIo::new(sock), svc);
    tokio::pin!(conn);
    // A new connection must bring its first request by `first_request` (counted from accept:
    // the header pre-read is part of it, and an HTTP/2 preface completes that with no request
    // yet); after that, the idle timeout.
    let idle = tokio::time::sleep_until(first_request);
    tokio::pin!(idle);
    let mut requests_seen = 0;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = gate.retired() => break,
            _ = idle.as_mut() => {
                let requests = state.requests.load(Ordering::Acquire);
                if state.active.load(Ordering::Acquire) == 0 && requests == requests_seen {
                    // Nothing in progress and nothing new for a whole period: idle. Nothing is
                    // in flight, so this cannot fail a request.
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(SHUTDOWN_AFTER_GRACE, conn).await;
                    return;
                }
                requests_seen = requests;
                idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
            }
        }
    }
    state.closing.store(true, Ordering::Release);
    if state.saw_h2.load(Ordering::Acquire) {
        conn.as_mut().graceful_shutdown();
    }
    if tokio::time::timeout(limits.retire_grace, conn.as_mut())
        .await
        .is_err()
    {
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(SHUTDOWN_AFTER_GRACE, conn).await;
    }
}

/// After the grace, how long a connection gets to close once told to.
const SHUTDOWN_AFTER_GRACE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Winding {
    /// The listener was retired: HTTP/1 responses close their connection.
    closing: AtomicBool,
    /// The connection spoke HTTP/2 (a GOAWAY winds it down).
    saw_h2: AtomicBool,
    /// Requests received so far (the idle check compares it between two periods).
    requests: AtomicUsize,
    /// Requests whose response (head or body) is not finished.
    active: AtomicUsize,
}

/// One request in progress on a connection: from the call of the service until its response
/// body is done or dropped.
struct Active(Arc<Winding>);

impl Active {
    fn new(state: &Arc<Winding>) -> Self {
        state.requests.fetch_add(1, Ordering::AcqRel);
        state.active.fetch_add(1, Ordering::AcqRel);
        Active(Arc::clone(state))
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in progress until it is finished.
pub struct Tracked<B> {
    inner: B,
    _active: Active,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The service wrapper of [`serve_connection`].
struct WindDown<S> {
    inner: S,
    state: Arc<Winding>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for WindDown<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Tracked<B>>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let active = Active::new(&self.state);
        let h1 = req.version() < http::Version::HTTP_2;
        if !h1 {
            self.state.saw_h2.store(true, Ordering::Release);
        }
        let fut = self.inner.call(req);
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let mut r = fut.await?;
            if h1 && state.closing.load(Ordering::Acquire) {
                r.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok(r.map(|inner| Tracked {
                inner,
                _active: active,
            }))
        })
    }
}

#[cfg(test)]
#[path = "serve_test.rs"]
mod tests;
