//! The balancer's admin listener: `/healthz` (liveness), `/readyz` (takes new encoders: 503
//! while draining) and `/metrics` open, and a token-protected JSON view of the nodes (status,
//! free units, report age) and of the pinned connections.
//!
//! - `GET /api/v1/nodes`: every node this balancer has heard of.
//! - `GET /api/v1/connections`: every connection it relays, with its node.

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use server::http::{json, text, Reply};
use tokio::net::TcpListener;

use crate::{conns::Conns, place::Placer};

/// What the admin API needs; the token can change on reload.
pub struct AdminState {
    pub token: std::sync::RwLock<String>,
    pub placement: Arc<Placer>,
    pub conns: Arc<Conns>,
    pub id: String,
    /// Cleared when the balancer drains: `/readyz` answers 503 so load balancers in front
    /// send new encoders elsewhere (established flows stay).
    pub ready: std::sync::atomic::AtomicBool,
}

pub fn handle<B>(st: &AdminState, req: &Request<B>) -> Reply {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            return if st.ready.load(std::sync::atomic::Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "draining: no new encoders\n",
                )
            };
        }
        (&Method::GET, "/metrics") => {
            let _ = st.placement.nodes(); // refresh per-node gauges
            return server::http::metrics();
        }
        _ => {}
    }
    if !path.starts_with("/api/") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let token_ok = st
        .token
        .read()
        .map(|t| server::http::bearer_ok(req, &t))
        .unwrap_or(false);
    if !token_ok {
        return server::http::unauthorized();
    }
    match (req.method(), path) {
        (&Method::GET, "/api/v1/nodes") => json(&st.placement.nodes()),
        (&Method::GET, "/api/v1/connections") => json(&st.conns.list()),
        (&Method::GET, "/api/v1/balancer") => json(&serde_json::json!({
            "id": st.id,
            "pid": std::process::id(),
            "ready": st.ready.load(std::sync::atomic::Ordering::Acquire),
            "rtmp_connections": st.conns.count("rtmp"),
            "srt_connections": st.conns.count("srt"),
        })),
        (_, "/api/v1/nodes" | "/api/v1/connections") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "unknown API path\n"),
    }
}

/// Serve the admin API while `gate` lets it (limits: `server::serve::serve_admin`).
pub async fn serve(st: Arc<AdminState>, listener: TcpListener, gate: server::Gate) {
    server::serve::serve_admin_gated(
        listener,
        move |req, _peer| handle(&st, &req),
        |why| {
            crate::metrics::CONNECTIONS_TOTAL
                .with_label_values(&["admin", why.as_str()])
                .inc();
        },
        gate,
    )
    .await;
}
