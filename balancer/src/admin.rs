//! The balancer's admin listener: `/healthz` (liveness), `/readyz` (takes new encoders: 503
//! while draining) and `/metrics` open, and a token-protected JSON view of the nodes (status,
//! free units, report age) and of the pinned connections.
//!
//! - `GET /api/v1/nodes`: every node this balancer has heard of.
//! - `GET /api/v1/connections`: every connection it relays, with its node.
//! - `GET /api/v1/streams`: every live stream the nodes report, with its node.
//! - `POST /api/v1/nodes/{id}/cordon`, `/uncordon`, `/drain`: sent to the node over the
//!   control plane; its next report (at once) shows the new state. Live streams continue.
//! - `DELETE /api/v1/nodes/{id}`: forget a node that is gone (409 while it is connected).
//! - `DELETE /api/v1/streams/{playback_id}[?block_seconds=N]`: kick a live stream on the node
//!   that carries it; with a block, its key is refused on every node for N seconds.
//!
//! Actions answer once they are sent to the node; `edge ctl` waits for the effect.
//!
//! The web dashboard (`server::dashboard`) is served here too, at `/`: it logs in with the
//! token (a session cookie) and uses the routes above; `GET /api/v1/balancer` tells it the
//! playback port for its preview player.

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
    /// The dashboard's login sessions.
    pub sessions: server::dashboard::Sessions,
    /// Port of the playback listener (the dashboard's preview plays from it).
    pub playback_port: Option<u16>,
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
    let token = st.token.read().map(|t| t.clone()).unwrap_or_default();
    let now = tokio::time::Instant::now();
    if let Some(reply) = server::dashboard::route(req, &token, &st.sessions, now) {
        return reply;
    }
    if !path.starts_with("/api/") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if let Err(reply) = server::dashboard::authorize(req, &token, &st.sessions, now) {
        return *reply;
    }
    match (req.method(), path) {
        (&Method::GET, "/api/v1/nodes") => json(&st.placement.nodes()),
        (&Method::GET, "/api/v1/connections") => json(&st.conns.list()),
        (&Method::GET, "/api/v1/streams") => json(&st.placement.streams()),
        (&Method::POST, p) if p.starts_with("/api/v1/nodes/") => node_action(st, p),
        (&Method::DELETE, p) if p.starts_with("/api/v1/nodes/") => {
            let id = &p["/api/v1/nodes/".len()..];
            match st.placement.forget(id) {
                Ok(true) => json(&serde_json::json!({ "node_id": id, "forgotten": true })),
                Ok(false) => text(StatusCode::NOT_FOUND, format!("no node {id}\n")),
                Err(e) => text(StatusCode::CONFLICT, format!("{e}\n")),
            }
        }
        (&Method::DELETE, p) if p.starts_with("/api/v1/streams/") => {
            let id = &p["/api/v1/streams/".len()..];
            let block = match server::http::block_param(req, crate::operate::MAX_BLOCK) {
                Ok(b) => b,
                Err(reply) => return *reply,
            };
            match st.placement.kick(id, block) {
                Ok(node) => json(&serde_json::json!({
                    "playback_id": id,
                    "node_id": node,
                    "kicked": true,
                    "block_seconds": block.as_secs(),
                })),
                Err(e @ crate::operate::KickError::NotLive(_)) => {
                    text(StatusCode::NOT_FOUND, format!("{e}\n"))
                }
                Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            }
        }
        (&Method::GET, "/api/v1/balancer") => json(&serde_json::json!({
            "id": st.id,
            "pid": std::process::id(),
            "ready": st.ready.load(std::sync::atomic::Ordering::Acquire),
            "playback_port": st.playback_port,
            "rtmp_connections": st.conns.count("rtmp"),
            "srt_connections": st.conns.count("srt"),
        })),
        (_, "/api/v1/nodes" | "/api/v1/connections" | "/api/v1/streams") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "unknown API path\n"),
    }
}

/// `POST /api/v1/nodes/{id}/{cordon|uncordon|drain}`.
fn node_action(st: &AdminState, path: &str) -> Reply {
    let rest = &path["/api/v1/nodes/".len()..];
    let Some((id, action)) = rest.split_once('/') else {
        return text(
            StatusCode::NOT_FOUND,
            "POST /api/v1/nodes/{id}/cordon, /uncordon or /drain\n",
        );
    };
    let op = match action {
        "cordon" => control::Operation::Cordon,
        "uncordon" => control::Operation::Uncordon,
        "drain" => control::Operation::Drain,
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                format!("unknown node action {action:?}: cordon, uncordon or drain\n"),
            )
        }
    };
    if !st.placement.nodes().iter().any(|n| n.id == id) {
        return text(StatusCode::NOT_FOUND, format!("no node {id}\n"));
    }
    match st.placement.operate_node(id, op) {
        Ok(()) => json(&serde_json::json!({ "node_id": id, "action": action, "sent": true })),
        Err(e @ control::server::OperateError::Unsupported(_)) => {
            text(StatusCode::CONFLICT, format!("{e}\n"))
        }
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
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
