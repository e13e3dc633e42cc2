//! The balancer's admin listener: `/healthz` and `/metrics` open, and a token-protected JSON
//! view of the nodes (status, free units, report age) and of the pinned connections.
//!
//! - `GET /api/v1/nodes`: every node this balancer has heard of.
//! - `GET /api/v1/connections`: every connection it relays, with its node.

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{conns::Conns, place::Placer};

/// What the admin API needs; the token can change on reload.
pub struct AdminState {
    pub token: std::sync::RwLock<String>,
    pub placement: Arc<Placer>,
    pub conns: Arc<Conns>,
    pub id: String,
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(v: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(v) {
        Ok(b) => {
            let mut r = Response::new(Full::new(Bytes::from(b)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode: {e}\n"),
        ),
    }
}

fn authorized<B>(st: &AdminState, req: &Request<B>) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let Ok(want) = st.token.read() else {
        return false;
    };
    given.len() == want.len() && bool::from(given.as_bytes().ct_eq(want.as_bytes()))
}

pub fn handle<B>(st: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics") => {
            let _ = st.placement.nodes(); // refresh per-node gauges
            let mut r = text(StatusCode::OK, crate::metrics::render());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return r;
        }
        _ => {}
    }
    if !path.starts_with("/api/") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !authorized(st, req) {
        let mut r = text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    match (req.method(), path) {
        (&Method::GET, "/api/v1/nodes") => json(&st.placement.nodes()),
        (&Method::GET, "/api/v1/connections") => json(&st.conns.list()),
        (&Method::GET, "/api/v1/balancer") => json(&serde_json::json!({
            "id": st.id,
            "rtmp_connections": st.conns.count("rtmp"),
            "srt_connections": st.conns.count("srt"),
        })),
        (_, "/api/v1/nodes" | "/api/v1/connections") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "unknown API path\n"),
    }
}

pub async fn serve(st: Arc<AdminState>, listener: TcpListener, shutdown: CancellationToken) {
    loop {
        let (sock, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let st = Arc::clone(&st);
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let r = handle(&st, &req);
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(sock), svc)
                .await;
        });
    }
}
