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

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::place::Placer;

/// Connecting to a node on our network takes a millisecond; longer means it is gone.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A whole forwarded request, including a blocking playlist reload (the node holds those for
/// up to 3 target durations, ~6 s) and the body. Past this the viewer gets 504 and retries.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response we buffer from a node: a segment of a high-bitrate rendition.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// Idle pooled connections to a node are kept this long.
const POOL_IDLE: Duration = Duration::from_secs(30);
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

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
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
    client: Client<HttpConnector, Full<Bytes>>,
    suspects:
        std::sync::Mutex<std::collections::HashMap<std::net::SocketAddr, tokio::time::Instant>>,
}

/// What one attempt at a node gave.
enum Attempt {
    Done(Response<Full<Bytes>>),
    /// The node could not be reached (or does not have the stream yet): try another / later.
    Retry(&'static str),
}

impl Router {
    pub fn new(placement: Arc<Placer>) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(connector);
        Arc::new(Self {
            placement,
            client,
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
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
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
            let any_serving = nodes.iter().any(|(_, serves)| *serves);
            for (node, serves) in nodes {
                if self.suspect(node) || (playlist && any_serving && !serves) {
                    continue;
                }
                match self.forward(&req, node, playlist).await {
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

    async fn forward<B>(
        &self,
        req: &Request<B>,
        node: std::net::SocketAddr,
        playlist: bool,
    ) -> Attempt {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let Ok(uri) = format!("http://{node}{pq}").parse::<http::Uri>() else {
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
        let resp = match tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(fwd)).await {
            Err(_) => {
                return Attempt::Done(text(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the node did not answer in time\n",
                ))
            }
            Ok(Err(e)) => {
                tracing::info!(node = %node, error = %e, "playback request failed; node marked unreachable");
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
        let body = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            http_body_util::Limited::new(body, MAX_RESPONSE).collect(),
        )
        .await
        {
            Ok(Ok(b)) => b.to_bytes(),
            _ => {
                return Attempt::Done(text(
                    StatusCode::BAD_GATEWAY,
                    "the node's answer broke off\n",
                ))
            }
        };
        let mut out = Response::from_parts(parts, Full::new(body));
        out.headers_mut().remove(header::CONNECTION);
        out.headers_mut().remove(header::TRANSFER_ENCODING);
        Attempt::Done(out)
    }
}

/// Serve viewers until `shutdown`.
pub async fn serve(router: Arc<Router>, listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let (sock, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let _ = sock.set_nodelay(true);
        let router = Arc::clone(&router);
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let router = Arc::clone(&router);
                async move { Ok::<_, Infallible>(router.handle(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(sock), svc)
                .await;
        });
    }
}
