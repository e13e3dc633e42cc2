//! The admin listener (tcp/8081): `/healthz` and `/metrics` for probes and Prometheus, and a
//! token-protected JSON API for operators.
//!
//! - `GET /healthz`: 200 while the process serves (liveness only: admission is reported
//!   separately, so a full node is never mistaken for a dead one).
//! - `GET /metrics`: Prometheus text.
//! - `GET /api/v1/node`: id, state, capacity, used and free units, stream count.
//! - `GET /api/v1/streams`: the streams being published.
//! - `DELETE /api/v1/streams/{playback_id}[?block_seconds=N]`: kick a publisher; with a block,
//!   refuse its key for N seconds (on every node, through the balancers).
//! - `POST /api/v1/node/cordon`, `/uncordon`, `/drain`: stop (or resume) taking new streams;
//!   live streams always continue.
//! - `GET /api/v1/events`: the last events (`crate::events`) and what became of each.
//! - `GET /api/v1/control`: the link to each balancer; `POST /api/v1/control/pause?seconds=N`
//!   stops reports for N seconds (a drill for control-plane loss).
//!
//! - `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of this API (`ingest/openapi.json`;
//!   no token needed).
//!
//! Every error is an RFC 9457 problem (`application/problem+json`).
//!
//! The API needs `Authorization: Bearer TOKEN`, compared in constant time (`server::http`), or
//! a session of the web dashboard (`server::dashboard`, served at `/`: this node's page).

use std::sync::Arc;

use http::{Method, Request, StatusCode};
use serde::Serialize;
use server::http::{json, problem, text, Reply};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::node::{Node, NodeState};

/// The OpenAPI 3.1 document of the API (kept beside the crate; a test checks it against
/// [`ROUTES`], the end-to-end tests against the server).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every API route, as (method, path) with the document's path templates.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/node"),
    ("GET", "/api/v1/streams"),
    ("DELETE", "/api/v1/streams/{playback_id}"),
    ("POST", "/api/v1/node/cordon"),
    ("POST", "/api/v1/node/uncordon"),
    ("POST", "/api/v1/node/drain"),
    ("GET", "/api/v1/control"),
    ("POST", "/api/v1/control/pause"),
    ("GET", "/api/v1/events"),
    ("GET", "/api/v1/openapi.json"),
];

/// Longest report pause an operator may ask for (a drill, not a way to hide a node).
const MAX_PAUSE_SECONDS: u64 = 600;

#[derive(Serialize)]
struct NodeView<'a> {
    id: &'a str,
    state: NodeState,
    capacity_milli_units: u32,
    used_milli_units: u32,
    free_milli_units: u32,
    stream_milli_units: u32,
    streams: usize,
    /// Port of the HLS origin (the dashboard's preview plays from it).
    playback_port: u16,
    /// Share of the machine's CPU in use (0 to 1), as reported to balancers.
    cpu: f32,
    /// Transcoding is behind real time (see `node.overload_lag`).
    overloaded: bool,
}

/// Answer one admin request (`sessions`: the dashboard's logins).
pub fn handle<B>(node: &Node, sessions: &server::dashboard::Sessions, req: &Request<B>) -> Reply {
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/metrics") => return server::http::metrics(),
        _ => {}
    }
    let token = node.admin_token();
    let now = tokio::time::Instant::now();
    if let Some(reply) = server::dashboard::route(req, &token, sessions, now) {
        return reply;
    }
    if !path.starts_with("/api/") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if (req.method(), path) == (&Method::GET, "/api/v1/openapi.json") {
        return server::http::json_text(OPENAPI);
    }
    if let Err(reply) = server::dashboard::authorize(req, &token, sessions, now) {
        return *reply;
    }
    match (req.method(), path) {
        (&Method::GET, "/api/v1/node") => {
            let used = node.used();
            json(&NodeView {
                id: &node.config.node.id,
                state: node.state(),
                capacity_milli_units: node.capacity(),
                used_milli_units: used,
                free_milli_units: node.capacity().saturating_sub(used),
                stream_milli_units: node.config.stream_milli_units(),
                streams: node.stream_count(),
                playback_port: node.config.listen.http.port(),
                cpu: node.cpu(),
                overloaded: node.overloaded(),
            })
        }
        (&Method::GET, "/api/v1/streams") => json(&node.streams()),
        (&Method::GET, "/api/v1/events") => json(&node.events.recent()),
        (&Method::POST, "/api/v1/node/cordon") => {
            node.set_cordoned(true);
            json(&node.state())
        }
        (&Method::POST, "/api/v1/node/uncordon") => {
            node.set_cordoned(false);
            json(&node.state())
        }
        (&Method::POST, "/api/v1/node/drain") => {
            node.start_draining();
            json(&node.state())
        }
        (&Method::GET, "/api/v1/control") => match node.control() {
            Some(c) => json(&c.status()),
            None => problem(
                StatusCode::NOT_FOUND,
                "this node has no control plane configured\n",
            ),
        },
        (&Method::POST, "/api/v1/control/pause") => {
            let secs = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("seconds=")))
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|s| *s > 0 && *s <= MAX_PAUSE_SECONDS);
            match (node.control(), secs) {
                (Some(c), Some(s)) => {
                    c.pause(std::time::Duration::from_secs(s));
                    json(&serde_json::json!({ "paused_seconds": s }))
                }
                (None, _) => problem(
                    StatusCode::NOT_FOUND,
                    "this node has no control plane configured\n",
                ),
                (_, None) => problem(
                    StatusCode::BAD_REQUEST,
                    format!("give ?seconds=N with 1 <= N <= {MAX_PAUSE_SECONDS}"),
                ),
            }
        }
        (&Method::DELETE, p) if server::openapi::segment(p, "/api/v1/streams/").is_some() => {
            let id = &p["/api/v1/streams/".len()..];
            let block = match server::http::block_param(req, crate::node::MAX_KEY_BLOCK) {
                Ok(b) => b,
                Err(reply) => return *reply,
            };
            if node.kick(id, block) {
                json(&serde_json::json!({
                    "playback_id": id,
                    "node_id": node.config.node.id,
                    "kicked": true,
                    "block_seconds": block.as_secs(),
                }))
            } else {
                problem(StatusCode::NOT_FOUND, "no such live stream")
            }
        }
        _ => server::openapi::no_route(ROUTES, path),
    }
}

#[cfg(test)]
#[path = "admin_test.rs"]
mod tests;

/// Serve the admin API until `shutdown` (limits: `server::serve::serve_admin`).
pub async fn serve(node: Arc<Node>, listener: TcpListener, shutdown: CancellationToken) {
    server::serve::serve_admin(
        listener,
        {
            let sessions = server::dashboard::Sessions::new();
            move |req, _peer| handle(&node, &sessions, &req)
        },
        |why| {
            crate::metrics::CONNECTIONS_TOTAL
                .with_label_values(&["admin", why.as_str()])
                .inc();
        },
        shutdown,
    )
    .await;
}
