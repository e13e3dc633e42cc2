//! An HTTP/1.1 + h2c server for the admin listeners, over an [`Acceptor`].
//!
//! Limits, each a field of [`HttpLimits`] with its reason: a deadline for a request's header
//! (a peer that trickles a header holds a connection slot and memory), HTTP/2 concurrent
//! streams and header list size, keep-alive pings that find dead HTTP/2 peers, and a bound on
//! streams reset before they are answered (the HTTP/2 rapid-reset flood).

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use http::Request;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{accept::Acceptor, http::Reply};

/// Limits of one HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// From the first byte of a request to its complete header (HTTP/1).
    pub header_timeout: Duration,
    /// HTTP/2 streams open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Largest header block accepted, bytes.
    pub max_header_list_size: u32,
    /// HTTP/2 ping interval; a peer that does not answer within the same time is dropped.
    pub keepalive_interval: Duration,
    /// HTTP/2 streams a peer may reset before we answered them, pending at once.
    pub max_pending_resets: usize,
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
    let acceptor = Acceptor::new(
        "admin",
        crate::accept::ConnLimits {
            max_total: ADMIN_MAX_CONNECTIONS,
            max_per_ip: ADMIN_MAX_CONNECTIONS_PER_IP,
            exempt: Vec::new(),
        },
        on_refused,
    );
    serve_http(listener, acceptor, ADMIN_LIMITS, handler, stop).await;
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

/// Serve `handler` on `listener` until `stop`. Each connection holds an [`Acceptor`] slot
/// for its life.
pub async fn serve_http<H>(
    listener: TcpListener,
    acceptor: Arc<Acceptor>,
    limits: HttpLimits,
    handler: H,
    stop: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> Reply + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let builder = Arc::new(builder(&limits));
    loop {
        let (sock, peer, permit) = tokio::select! {
            _ = stop.cancelled() => break,
            c = acceptor.accept(&listener) => c,
        };
        let handler = Arc::clone(&handler);
        let builder = Arc::clone(&builder);
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let r = handler(req, peer);
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = builder.serve_connection(TokioIo::new(sock), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
            drop(permit);
        });
    }
}
