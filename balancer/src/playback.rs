//! Playback routing (tcp/8080): any balancer serves `/live/PLAYBACK_ID/...` for every stream
//! in the cluster by forwarding the request to the node that serves it, known from the
//! nodes' reports, over pooled HTTP/1.1 connections. Blocking playlist requests (LL-HLS
//! `_HLS_msn`) are forwarded as they are and may wait on the node.
//!
//! Unknown playback IDs get 404 at once. A node that just died costs one failed connect
//! (within [`CONNECT_TIMEOUT`]); it is then skipped for [`SUSPECT_FOR`] and the next node that
//! has the stream is tried. While a stream moves between nodes, playlist requests are held up
//! to [`SWITCH_WAIT`] for a node to serve it (players give up on playlist errors quickly);
//! part and segment requests fail fast.
//!
//! Responses stream: each chunk the node writes goes on to the viewer as it arrives, so a
//! part being produced reaches the player while it is written, and no response is held in
//! memory whole. A node body that stalls for [`BODY_IDLE_TIMEOUT`] or grows past
//! [`MAX_RESPONSE`] is cut (the viewer's request fails and its player retries).

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{
    body::{Body, Frame, Incoming},
    service::service_fn,
};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::{net::TcpListener, time::Sleep};

use crate::place::{Origin, Placer};

/// Connecting to a node on our network takes a millisecond; longer means it is gone.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How much longer than the node's longest hold of a blocking request we wait for the head of
/// its answer: the node answers 503 at its own limit, and that answer must still reach us.
const HOLD_MARGIN: Duration = Duration::from_secs(3);
/// Until the head of a forwarded answer: the node holds a blocking playlist reload or a
/// preload-hint part request up to `packager::MAX_BLOCKING_HOLD`, then answers. Past this the
/// viewer gets 504 and retries.
pub const REQUEST_TIMEOUT: Duration =
    Duration::from_secs(packager::MAX_BLOCKING_HOLD.as_secs() + HOLD_MARGIN.as_secs());
/// Longest pause between two chunks of a node's body: a part being written arrives a frame at
/// a time (tens of ms apart); a body that stops for this long is cut.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response we relay from a node: a segment of a high-bitrate rendition.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// Viewer connections at once: each holds a few KiB (and a pooled node connection while a
/// request is in flight).
pub const MAX_CONNECTIONS: usize = 20_000;
/// Viewer connections from one address: a player opens a few; a CDN or a big NAT more.
pub const MAX_CONNECTIONS_PER_IP: usize = 256;
/// HTTP limits of the playback listener: players send small requests; hls.js keeps a few
/// requests in flight (playlist, part, preload hint) per rendition.
const LIMITS: server::serve::HttpLimits = server::serve::HttpLimits {
    header_timeout: Duration::from_secs(10),
    max_concurrent_streams: 64,
    max_header_list_size: 16 * 1024,
    keepalive_interval: Duration::from_secs(30),
    max_pending_resets: 64,
    // A player polls its playlists every part target (well under a second) and fetches parts
    // between polls; a connection quiet for this long belongs to a viewer who left.
    idle_timeout: Duration::from_secs(30),
    // A blocking playlist reload may be held this long; a retired listener lets it finish.
    retire_grace: Duration::from_secs(packager::MAX_BLOCKING_HOLD.as_secs() + 3),
};

/// What viewers receive: a reply of ours or a node's body as it streams.
pub type ViewerBody = BoxBody<Bytes, BodyError>;

/// Why a relayed body was cut.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The node's connection failed mid-body.
    #[error("node body: {0}")]
    Node(Box<dyn std::error::Error + Send + Sync>),
    /// The body grew past [`MAX_RESPONSE`].
    #[error("node body larger than {MAX_RESPONSE} bytes")]
    TooLarge,
    /// No chunk for [`BODY_IDLE_TIMEOUT`].
    #[error("node body stalled")]
    Stalled,
}

/// A node's body on its way to the viewer: counted against [`MAX_RESPONSE`], cut after
/// [`BODY_IDLE_TIMEOUT`] without a chunk.
struct Relayed<B> {
    inner: B,
    sent: usize,
    idle: Pin<Box<Sleep>>,
}

impl<B> Relayed<B> {
    fn new(inner: B) -> Self {
        Self {
            inner,
            sent: 0,
            idle: Box::pin(tokio::time::sleep(BODY_IDLE_TIMEOUT)),
        }
    }
}

impl<B> Body for Relayed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.sent = self.sent.saturating_add(d.len());
                    if self.sent > MAX_RESPONSE {
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                }
                let at = tokio::time::Instant::now() + BODY_IDLE_TIMEOUT;
                self.idle.as_mut().reset(at);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Node(e.into())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Stalled))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
/// Idle pooled connections to a node are kept this long: half the node's own idle timeout,
/// so we always close an idle connection before the node does (a request sent on a connection
/// the node is closing at that moment would fail).
const POOL_IDLE: Duration = Duration::from_secs(packager::ORIGIN_LIMITS.idle_timeout.as_secs() / 2);
/// A node we could not connect to is skipped for this long (it died; its last reports still
/// say it serves streams until it is declared lost).
const SUSPECT_FOR: Duration = Duration::from_secs(10);
/// While a stream moves between nodes (its node died, its encoder is reconnecting elsewhere)
/// no node may serve it for a few seconds. Playlist requests are held and retried this long
/// instead of failing: players treat playlist errors as fatal after a couple of retries, and
/// they already wait this long on LL-HLS blocking reloads.
const SWITCH_WAIT: Duration = Duration::from_secs(10);
/// Retry interval while holding a playlist request.
const SWITCH_POLL: Duration = Duration::from_millis(250);

fn text(status: StatusCode, body: &'static str) -> Response<ViewerBody> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::HeaderValue::from_static("*"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// The router: which node serves a playback ID, and the client to reach it.
pub struct Router {
    placement: Arc<Placer>,
    /// `None` only if TLS to nodes was asked for and could not be set up (logged).
    client: Option<Client<server::tls::HttpsConnector, Full<Bytes>>>,
    /// Reach nodes over HTTPS (`[node_https]`).
    tls: bool,
    suspects:
        std::sync::Mutex<std::collections::HashMap<std::net::SocketAddr, tokio::time::Instant>>,
}

/// What one attempt at a node gave.
enum Attempt {
    Done(Response<ViewerBody>),
    /// The node could not be reached (or does not have the stream yet): try another / later.
    Retry(&'static str),
}

impl Router {
    /// A router to nodes over plain HTTP, or over HTTPS checked as `node_https` says.
    pub fn new(placement: Arc<Placer>, node_https: Option<&edge_config::NodeHttps>) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        connector.enforce_http(false);
        let (ca, server_name) = match node_https {
            Some(n) => (
                Some(n.ca.as_path()),
                n.server_name.as_deref().and_then(|name| {
                    rustls_pki_types::ServerName::try_from(name.to_string())
                        .map_err(|e| tracing::error!(name, error = %e, "node_https.server_name is not a name"))
                        .ok()
                }),
            ),
            None => (None, None),
        };
        let client =
            server::tls::https_connector("node_https.ca", ca, server_name, connector).map(|c| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE)
                    .build(c)
            });
        Arc::new(Self {
            placement,
            client,
            tls: node_https.is_some(),
            suspects: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    fn suspect(&self, node: std::net::SocketAddr) -> bool {
        self.suspects
            .lock()
            .map(|m| m.get(&node).is_some_and(|t| t.elapsed() < SUSPECT_FOR))
            .unwrap_or(false)
    }

    fn mark_suspect(&self, node: std::net::SocketAddr) {
        if let Ok(mut m) = self.suspects.lock() {
            m.retain(|_, t| t.elapsed() < SUSPECT_FOR);
            m.insert(node, tokio::time::Instant::now());
        }
    }

    /// Forward one viewer request to the node serving its stream; see the module docs.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<ViewerBody> {
        if req.method() != Method::GET
            && req.method() != Method::HEAD
            && req.method() != Method::OPTIONS
        {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        let path = req.uri().path();
        let Some(pid) = path
            .strip_prefix("/live/")
            .and_then(|r| r.split('/').next())
            .filter(|p| !p.is_empty())
        else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        if self.placement.nodes_serving(pid).is_empty() {
            return text(StatusCode::NOT_FOUND, "unknown stream\n");
        }
        let playlist = path.ends_with(".m3u8");
        let deadline = tokio::time::Instant::now()
            + if playlist {
                SWITCH_WAIT
            } else {
                Duration::ZERO
            };
        let mut why = "the node serving this stream is unreachable";
        loop {
            let nodes = self.placement.nodes_serving(pid);
            // Once any node has served the stream, playlists come only from a node that serves
            // it: one where the encoder has just arrived has empty playlists, which players
            // treat as fatal. A brand-new stream has no such node yet and is asked where it is.
            let any_serving = nodes.iter().any(|o| o.serves);
            for origin in nodes {
                if self.suspect(origin.http) || (playlist && any_serving && !origin.serves) {
                    continue;
                }
                match self.forward(&req, origin, playlist).await {
                    Attempt::Done(r) => return r,
                    Attempt::Retry(w) => why = w,
                }
            }
            if tokio::time::Instant::now() + SWITCH_POLL > deadline {
                return text(
                    StatusCode::BAD_GATEWAY,
                    "the stream is moving between nodes or its node is unreachable\n",
                );
            }
            tracing::debug!(stream.id = %pid, reason = why, "holding a playlist request while the stream has no reachable node");
            tokio::time::sleep(SWITCH_POLL).await;
        }
    }

    async fn forward<B>(&self, req: &Request<B>, origin: Origin, playlist: bool) -> Attempt {
        let node = origin.http;
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let target = match (self.tls, origin.https) {
            (false, _) => format!("http://{node}{pq}"),
            (true, Some(https)) => format!("https://{https}{pq}"),
            (true, None) => {
                // Said once per suspect period, not once per viewer request.
                if !self.suspect(node) {
                    tracing::warn!(node = %node, "the node serving this stream has no HTTPS origin (listen.https) and this balancer reaches nodes only over HTTPS (node_https)");
                    self.mark_suspect(node);
                }
                return Attempt::Retry("the node serving this stream has no HTTPS origin");
            }
        };
        let Some(client) = &self.client else {
            return Attempt::Done(text(
                StatusCode::BAD_GATEWAY,
                "this balancer cannot set up TLS to its nodes\n",
            ));
        };
        let Ok(uri) = target.parse::<http::Uri>() else {
            return Attempt::Done(text(StatusCode::BAD_REQUEST, "bad path\n"));
        };
        let mut fwd = Request::builder().method(req.method().clone()).uri(uri);
        for (k, v) in req.headers() {
            // Hop-by-hop headers stay here; the rest (Range, If-None-Match...) goes on.
            if k != header::CONNECTION
                && k != header::HOST
                && k.as_str() != "keep-alive"
                && k != header::TRANSFER_ENCODING
            {
                fwd = fwd.header(k, v);
            }
        }
        let Ok(fwd) = fwd.body(Full::new(Bytes::new())) else {
            return Attempt::Done(text(StatusCode::BAD_REQUEST, "bad request\n"));
        };
        let resp = match tokio::time::timeout(REQUEST_TIMEOUT, client.request(fwd)).await {
            Err(_) => {
                return Attempt::Done(text(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the node did not answer in time\n",
                ))
            }
            Ok(Err(e)) => {
                // hyper's error says "client error (Connect)"; the cause (refused, a
                // certificate not trusted) is further down the chain.
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why.push_str(": ");
                    why.push_str(&s.to_string());
                    source = s.source();
                }
                tracing::info!(node = %node, error = %why, "playback request failed; node marked unreachable");
                self.mark_suspect(node);
                return Attempt::Retry("the node serving this stream is unreachable");
            }
            Ok(Ok(r)) => r,
        };
        // A node the encoder just reached has no playlist yet: another node (or a moment) will.
        if playlist && resp.status() == StatusCode::NOT_FOUND {
            return Attempt::Retry("the stream's new node has no playlist yet");
        }
        let (parts, body) = resp.into_parts();
        let body = Relayed::new(body).boxed();
        let mut out = Response::from_parts(parts, body);
        out.headers_mut().remove(header::CONNECTION);
        out.headers_mut().remove(header::TRANSFER_ENCODING);
        Attempt::Done(out)
    }
}

/// The playback listener's connection caps (its count of open connections tells a retired
/// balancer when its viewers' last requests are done).
pub fn acceptor() -> Arc<server::Acceptor> {
    server::Acceptor::new(
        "playback",
        server::ConnLimits {
            max_total: MAX_CONNECTIONS,
            max_per_ip: MAX_CONNECTIONS_PER_IP,
            exempt: Vec::new(),
        },
        |why| {
            crate::metrics::CONNECTIONS_TOTAL
                .with_label_values(&["http", why.as_str()])
                .inc();
        },
    )
}

/// How long a retired listener's connections may take to finish (see `LIMITS.retire_grace`).
pub fn retire_grace() -> Duration {
    LIMITS.retire_grace
}

/// Serve viewers (over TLS with `tls`: HTTPS, HTTP/2 or HTTP/1.1 by ALPN) while `gate` lets them in, under [`MAX_CONNECTIONS`],
/// [`MAX_CONNECTIONS_PER_IP`] and the listener's HTTP limits. Retired (a hand-over or a
/// drain), each connection finishes its request, blocking reloads included, and closes.
pub async fn serve(
    router: Arc<Router>,
    listener: TcpListener,
    gate: server::Gate,
    acceptor: Arc<server::Acceptor>,
    tls: Option<server::tls::TlsAcceptor>,
) {
    server::serve::serve_gated_tls(
        listener,
        acceptor,
        LIMITS,
        move |_peer| {
            let router = Arc::clone(&router);
            service_fn(move |req: Request<Incoming>| {
                let router = Arc::clone(&router);
                async move { Ok::<_, Infallible>(router.handle(req).await) }
            })
        },
        gate,
        tls,
    )
    .await;
}

#[cfg(test)]
#[path = "playback_test.rs"]
mod tests;
