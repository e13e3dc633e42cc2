//! Stream lifecycle and health events, sent by the node that carries the stream (never by a
//! balancer, so each event is sent once) to the webhook `events.url`.
//!
//! Entry points: [`Events::emit`] (non-blocking: a bounded queue, so ingest never waits on the
//! webhook), [`Events::run`] (the sender task), [`Events::recent`] (`GET /api/v1/events`).
//!
//! Events: `stream.connected` (a publisher is admitted), `stream.active` (its media reaches
//! the packager), `stream.disconnected` (the publisher left; the reconnect window runs),
//! `stream.ended` (the window passed: the playlists end), `stream.health_changed` (status or
//! issues changed), `node.state_changed` (ready, full, overloaded, draining, cordoned).
//!
//! Each is a JSON object `{"id","type","created_unix_ms","node_id","data"}` POSTed with
//! `X-Edge-Event: TYPE`, `X-Edge-Timestamp: <unix seconds>` and
//! `X-Edge-Signature: v1=<hex HMAC-SHA256(auth.secret, "<timestamp>.<body>")>` (the auth
//! webhook's scheme), one at a time and in order. A 2xx takes it; a 5xx, 408, 429, a timeout
//! or no connection is retried with a doubling delay ([`RETRY_FIRST`] to [`RETRY_MAX`]) up to
//! [`MAX_ATTEMPTS`]; any other 4xx drops it (the receiver refused it). Past [`MAX_QUEUED`]
//! waiting events the oldest is dropped (`edge_events_total{result="dropped"}`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde::Serialize;

use crate::auth::{hmac_hex, https_connector, Connector};
use crate::metrics;

/// Events waiting to be sent at most: a receiver that is down for a long time costs this
/// much memory (a few hundred bytes each), then the oldest go.
pub const MAX_QUEUED: usize = 1_000;

/// Events kept for `GET /api/v1/events`.
pub const RECENT_EVENTS: usize = 100;

/// One attempt may take this long (connect, send, answer).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// First delay before a retry; it doubles each time up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);

/// Longest delay between two attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Attempts per event before it is given up (about five minutes with the delays above).
pub const MAX_ATTEMPTS: u32 = 10;

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `NODE-SEQ`: unique per node run, increasing (a receiver can drop duplicates).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub created_unix_ms: u64,
    pub node_id: String,
    pub data: serde_json::Value,
}

/// An event and what became of it, for the API.
#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    #[serde(flatten)]
    pub event: Event,
    /// `pending`, `delivered`, `refused`, `failed` (attempts used up), `dropped` (queue full)
    /// or `unsent` (no webhook configured).
    pub delivery: &'static str,
    pub attempts: u32,
}

struct Target {
    url: http::Uri,
    secret: Vec<u8>,
    client: Client<Connector, Full<Bytes>>,
}

/// The node's event queue and sender.
pub struct Events {
    node_id: String,
    target: Option<Target>,
    seq: AtomicU64,
    queue: Mutex<VecDeque<Event>>,
    wake: tokio::sync::Notify,
    recent: Mutex<VecDeque<Sent>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why an attempt failed.
enum Failure {
    /// Try again later.
    Retry(String),
    /// The receiver refused it: do not.
    Refused(String),
}

impl Events {
    pub fn new(cfg: &edge_config::Config) -> Self {
        let target = cfg.events.as_ref().and_then(|e| {
            let url = e.url.parse().ok()?;
            let client = https_connector("events.ca", e.ca.as_deref())
                .map(|c| Client::builder(TokioExecutor::new()).build(c))?;
            let secret = cfg
                .auth
                .secret
                .as_ref()
                .map(|s| s.expose().as_bytes().to_vec())
                .unwrap_or_default();
            Some(Target {
                url,
                secret,
                client,
            })
        });
        Self {
            node_id: cfg.node.id.clone(),
            target,
            seq: AtomicU64::new(1),
            queue: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            recent: Mutex::new(VecDeque::new()),
        }
    }

    /// Queue an event of `kind` with `data`; never blocks.
    pub fn emit(&self, kind: &'static str, data: serde_json::Value) {
        let event = Event {
            id: format!(
                "{}-{}",
                self.node_id,
                self.seq.fetch_add(1, Ordering::Relaxed)
            ),
            kind,
            created_unix_ms: crate::node::wall_clock()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            node_id: self.node_id.clone(),
            data,
        };
        tracing::debug!(event.id = %event.id, event.kind = kind, "event");
        let delivery = if self.target.is_some() {
            "pending"
        } else {
            "unsent"
        };
        self.remember(Sent {
            event: event.clone(),
            delivery,
            attempts: 0,
        });
        if self.target.is_none() {
            return;
        }
        let dropped = {
            let mut q = lock(&self.queue);
            q.push_back(event);
            (q.len() > MAX_QUEUED).then(|| q.pop_front()).flatten()
        };
        if let Some(d) = dropped {
            metrics::EVENTS.with_label_values(&["dropped"]).inc();
            self.settle(&d.id, "dropped", 0);
        }
        self.wake.notify_one();
    }

    /// The last [`RECENT_EVENTS`] events, oldest first, with what became of each.
    pub fn recent(&self) -> Vec<Sent> {
        lock(&self.recent).iter().cloned().collect()
    }

    fn remember(&self, s: Sent) {
        let mut r = lock(&self.recent);
        if r.len() == RECENT_EVENTS {
            r.pop_front();
        }
        r.push_back(s);
    }

    fn settle(&self, id: &str, delivery: &'static str, attempts: u32) {
        if let Some(s) = lock(&self.recent).iter_mut().find(|s| s.event.id == id) {
            s.delivery = delivery;
            s.attempts = attempts;
        }
    }

    /// Send queued events, one at a time and in order, until the process ends.
    pub async fn run(self: std::sync::Arc<Self>) {
        let Some(target) = self.target.as_ref() else {
            return;
        };
        loop {
            let next = lock(&self.queue).pop_front();
            let Some(event) = next else {
                self.wake.notified().await;
                continue;
            };
            let body = match serde_json::to_string(&event) {
                Ok(b) => b,
                Err(_) => continue, // a JSON value always encodes; nothing to send otherwise
            };
            let mut delay = RETRY_FIRST;
            let mut attempts = 0;
            let outcome = loop {
                attempts += 1;
                match send(target, event.kind, &body).await {
                    Ok(()) => break "delivered",
                    Err(Failure::Refused(why)) => {
                        tracing::warn!(event.id = %event.id, why, "event refused by the webhook; dropped");
                        break "refused";
                    }
                    Err(Failure::Retry(why)) if attempts >= MAX_ATTEMPTS => {
                        tracing::warn!(event.id = %event.id, why, attempts, "event webhook unreachable; event given up");
                        break "failed";
                    }
                    Err(Failure::Retry(why)) => {
                        tracing::info!(event.id = %event.id, why, retry_in_s = delay.as_secs(), "event webhook failed; retrying");
                        metrics::EVENTS.with_label_values(&["retried"]).inc();
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(RETRY_MAX);
                    }
                }
            };
            metrics::EVENTS.with_label_values(&[outcome]).inc();
            self.settle(&event.id, outcome, attempts);
        }
    }
}

async fn send(target: &Target, kind: &str, body: &str) -> Result<(), Failure> {
    let ts = crate::node::wall_clock()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string();
    let signature = hmac_hex(&target.secret, &[ts.as_bytes(), b".", body.as_bytes()]);
    let req = http::Request::post(target.url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("x-edge-event", kind)
        .header("x-edge-timestamp", &ts)
        .header("x-edge-signature", format!("v1={signature}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| Failure::Refused(e.to_string()))?;
    let resp = tokio::time::timeout(ATTEMPT_TIMEOUT, target.client.request(req))
        .await
        .map_err(|_| Failure::Retry("timed out".into()))?
        .map_err(|e| Failure::Retry(e.to_string()))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else if status.is_server_error()
        || status == http::StatusCode::REQUEST_TIMEOUT
        || status == http::StatusCode::TOO_MANY_REQUESTS
    {
        Err(Failure::Retry(format!("answered {status}")))
    } else {
        Err(Failure::Refused(format!("answered {status}")))
    }
}

#[cfg(test)]
#[path = "events_test.rs"]
mod tests;
