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
//! - `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of this API (`balancer/openapi.json`;
//!   no token needed).
//!
//! Actions answer once they are sent to the node; `edge ctl` waits for the effect. Every error
//! is an RFC 9457 problem (`application/problem+json`).
//!
//! The web dashboard (`server::dashboard`) is served here too, at `/`: it logs in with the
//! token (a session cookie) and uses the routes above; `GET /api/v1/balancer` tells it the
//! playback port for its preview player.

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use server::http::{json, problem, text, Reply};
use server::openapi::{segment, segments2};
use tokio::net::TcpListener;

use crate::{conns::Conns, place::Placer};

/// The OpenAPI 3.1 document of the API (kept beside the crate; a test checks it against
/// [`ROUTES`], the end-to-end tests against the server).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every API route, as (method, path) with the document's path templates.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/balancer"),
    ("GET", "/api/v1/nodes"),
    ("GET", "/api/v1/connections"),
    ("GET", "/api/v1/streams"),
    ("DELETE", "/api/v1/streams/{playback_id}"),
    ("DELETE", "/api/v1/nodes/{id}"),
    ("POST", "/api/v1/nodes/{id}/cordon"),
    ("POST", "/api/v1/nodes/{id}/uncordon"),
    ("POST", "/api/v1/nodes/{id}/drain"),
    ("GET", "/api/v1/openapi.json"),
];

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
    if (req.method(), path) == (&Method::GET, "/api/v1/openapi.json") {
        return server::http::json_text(OPENAPI);
    }
    if let Err(reply) = server::dashboard::authorize(req, &token, &st.sessions, now) {
        return *reply;
    }
    match (req.method(), path) {
        (&Method::GET, "/api/v1/nodes") => json(&st.placement.nodes()),
        (&Method::GET, "/api/v1/connections") => json(&st.conns.list()),
        (&Method::GET, "/api/v1/streams") => json(&st.placement.streams()),
        (&Method::POST, p)
            if segments2(p, "/api/v1/nodes/").is_some_and(|(_, a)| NODE_ACTIONS.contains(&a)) =>
        {
            node_action(st, p)
        }
        (&Method::DELETE, p) if segment(p, "/api/v1/nodes/").is_some() => {
            let id = &p["/api/v1/nodes/".len()..];
            match st.placement.forget(id) {
                Ok(true) => json(&serde_json::json!({ "node_id": id, "forgotten": true })),
                Ok(false) => problem(StatusCode::NOT_FOUND, format!("no node {id}")),
                Err(e) => problem(StatusCode::CONFLICT, e),
            }
        }
        (&Method::DELETE, p) if segment(p, "/api/v1/streams/").is_some() => {
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
                Err(e @ crate::operate::KickError::NotLive(_)) => problem(StatusCode::NOT_FOUND, e),
                Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, e),
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
        _ => server::openapi::no_route(ROUTES, path),
    }
}

/// The node actions of `POST /api/v1/nodes/{id}/{action}`.
const NODE_ACTIONS: [&str; 3] = ["cordon", "uncordon", "drain"];

/// `POST /api/v1/nodes/{id}/{cordon|uncordon|drain}`.
fn node_action(st: &AdminState, path: &str) -> Reply {
    let rest = &path["/api/v1/nodes/".len()..];
    let Some((id, action)) = rest.split_once('/') else {
        return problem(
            StatusCode::NOT_FOUND,
            "POST /api/v1/nodes/{id}/cordon, /uncordon or /drain",
        );
    };
    let op = match action {
        "cordon" => control::Operation::Cordon,
        "uncordon" => control::Operation::Uncordon,
        "drain" => control::Operation::Drain,
        _ => {
            return problem(
                StatusCode::NOT_FOUND,
                format!("unknown node action {action:?}: cordon, uncordon or drain"),
            )
        }
    };
    if !st.placement.nodes().iter().any(|n| n.id == id) {
        return problem(StatusCode::NOT_FOUND, format!("no node {id}"));
    }
    match st.placement.operate_node(id, op) {
        Ok(()) => json(&serde_json::json!({ "node_id": id, "action": action, "sent": true })),
        Err(e @ control::server::OperateError::Unsupported(_)) => problem(StatusCode::CONFLICT, e),
        Err(e) => problem(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[cfg(test)]
#[path = "admin_test.rs"]
mod tests;

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
