//! What the node tells others about itself: the capacity report its balancers receive over
//! the control plane, and the stream list of the admin API.

use std::{net::SocketAddr, sync::atomic::Ordering, time::SystemTime};

use serde::Serialize;

use crate::node::{Node, Protocol};

/// A stream being published, as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    /// Identifies this publish session (changes when the encoder reconnects).
    pub session_id: u64,
    pub playback_id: String,
    pub protocol: Protocol,
    pub client_addr: String,
    pub state: &'static str,
    pub started_unix_ms: u64,
    pub milli_units: u32,
    pub source: Option<String>,
    pub renditions: Vec<String>,
    /// See [`crate::health`].
    pub health: crate::health::Status,
    /// Why the stream is not healthy; absent when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// Configuration issues the broadcaster can fix, with advice (see [`crate::health`]).
    pub issues: Vec<crate::health::Issue>,
    /// The source video's figures (see [`crate::health::Health::stats`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<control::StreamStats>,
    /// Per rendition, how long frames took from their arrival here to the players that were
    /// waiting for their part (preload hint or blocked part request), from the last raw
    /// samples (`packager::delivery`); empty until a player waited.
    pub part_delivery: Vec<packager::DeliverySummary>,
}

/// The addresses a node tells balancers to reach it at (`control.advertise_*`).
#[derive(Debug, Clone, Copy)]
pub struct Advertise {
    pub rtmp: SocketAddr,
    pub srt: SocketAddr,
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
}

impl Node {
    /// What this node tells its balancers.
    pub fn report(&self, advertise: Advertise) -> control::Report {
        let now = tokio::time::Instant::now();
        let streams = self
            .active
            .iter()
            .map(|e| {
                let j = e.health.judge(now, self.config.node.overload_lag);
                let (source, renditions) = shape(&e);
                control::StreamReport {
                    stream_ref: e.stream_ref.clone(),
                    playback_id: e.key().clone(),
                    protocol: e.protocol.as_str().to_string(),
                    milli_units: e.milli_units.load(Ordering::Relaxed),
                    started_unix_ms: e
                        .started
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                    reservation: e.reservation,
                    health: Some(j.status.as_str().to_string()),
                    health_reason: j.reason,
                    detail: Some(control::StreamDetail {
                        client_addr: e.client.to_string(),
                        source,
                        renditions,
                        stats: e.health.stats(),
                        issues: j.issues.into_iter().map(|i| i.message).collect(),
                    }),
                }
            })
            .collect();
        let served = self.origin.streams();
        let reservations = self.capacity.reservation_ids();
        control::Report {
            node_id: self.config.node.id.clone(),
            seq: 0,
            rtmp_addr: advertise.rtmp,
            srt_addr: advertise.srt,
            http_addr: advertise.http,
            https_addr: advertise.https,
            state: if self.is_draining() {
                control::NodeState::Draining
            } else if self.is_cordoned() {
                control::NodeState::Cordoned
            } else {
                control::NodeState::Ready
            },
            overloaded: self.overloaded(),
            capacity_milli_units: self.capacity.total(),
            used_milli_units: self.capacity.used(),
            stream_milli_units: self.config.stream_milli_units(),
            cpu: self.cpu(),
            streams,
            reservations,
            // Served = a viewer routed here gets media: every rendition has a segment. A stream
            // that just arrived from another node is not served here until then, so balancers
            // keep routing viewers to the node that still has its last segments.
            served: served
                .iter()
                .filter(|s| !s.renditions.is_empty() && s.renditions.iter().all(|r| r.segments > 0))
                .map(|s| s.playback_id.clone())
                .collect(),
            continuations: served
                .into_iter()
                .filter_map(|s| {
                    let c = self.origin.continuation(&s.playback_id)?;
                    Some((s.playback_id, serde_json::to_value(c).ok()?))
                })
                .collect(),
            operations: true,
            blocked: self.blocked_keys(),
        }
    }

    pub fn streams(&self) -> Vec<StreamInfo> {
        let now = tokio::time::Instant::now();
        let mut v: Vec<StreamInfo> = self
            .active
            .iter()
            .map(|e| {
                let j = e.health.judge(now, self.config.node.overload_lag);
                let (source, renditions) = shape(&e);
                StreamInfo {
                    session_id: e.session_id,
                    playback_id: e.key().clone(),
                    protocol: e.protocol,
                    client_addr: e.client.to_string(),
                    state: if source.is_some() { "live" } else { "starting" },
                    started_unix_ms: e
                        .started
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                    milli_units: e.milli_units.load(Ordering::Relaxed),
                    source,
                    renditions,
                    health: j.status,
                    health_reason: j.reason,
                    issues: j.issues,
                    stats: e.health.stats(),
                    part_delivery: self.origin.deliveries(e.key()),
                }
            })
            .collect();
        v.sort_by(|a, b| a.playback_id.cmp(&b.playback_id));
        v
    }
}

/// A stream's source size (`1280x720`) and video renditions, once its ladder is planned.
fn shape(e: &crate::node::Active) -> (Option<String>, Vec<String>) {
    let plan = e.plan.lock().ok();
    match plan.as_ref().and_then(|p| p.as_ref()) {
        Some(p) => (
            Some(format!("{}x{}", p.source.width, p.source.height)),
            p.video.iter().map(|v| v.0.clone()).collect(),
        ),
        None => (None, Vec::new()),
    }
}
