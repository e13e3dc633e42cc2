//! Operators steer the cluster through any balancer: the streams every node carries, actions
//! on a node (cordon, uncordon, drain) and on a stream (kick, optionally refusing its key for
//! a while) sent over the control plane to the node that must carry them out, and forgetting
//! a node that is gone. Keys an operator blocked are refused here before any node is asked.
//!
//! Entry points: [`Placer::streams`], [`Placer::operate_node`], [`Placer::kick`],
//! [`Placer::forget`], [`Placer::blocked_for`]; the admin API (`admin.rs`) maps them to HTTP.

use std::time::Duration;

use control::server::OperateError;
use control::Operation;
use serde::Serialize;
use tokio::time::Instant;

use crate::place::Placer;

/// The longest an operator may refuse a kicked stream's key: long enough to stop an encoder
/// that keeps reconnecting until someone fixes it; a permanent ban belongs in the auth backend.
pub const MAX_BLOCK: Duration = Duration::from_secs(24 * 3600);

/// A live stream as a balancer's admin API lists it (from the nodes' reports).
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStream {
    pub playback_id: String,
    pub node_id: String,
    /// `rtmp` or `srt`.
    pub protocol: String,
    pub milli_units: u32,
    pub started_unix_ms: u64,
    /// As the node measures it (absent from nodes that do not report it).
    pub health: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// The encoder's address, the source, renditions, figures and issues, as the node reports
    /// them (absent from nodes before it).
    #[serde(flatten)]
    pub detail: Option<control::StreamDetail>,
}

/// Why a kick went nowhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KickError {
    #[error("no node reports a live stream {0}")]
    NotLive(String),
    #[error("the block asked for is longer than the most allowed ({} s)", MAX_BLOCK.as_secs())]
    BlockTooLong,
    #[error(transparent)]
    Node(#[from] OperateError),
}

impl Placer {
    /// Every live stream of every node this balancer hears from, by playback ID.
    pub fn streams(&self) -> Vec<ClusterStream> {
        let mut v: Vec<ClusterStream> = self
            .registry()
            .snapshot()
            .into_iter()
            .flat_map(|s| {
                let node = s.report.node_id;
                s.report.streams.into_iter().map(move |st| ClusterStream {
                    playback_id: st.playback_id,
                    node_id: node.clone(),
                    protocol: st.protocol,
                    milli_units: st.milli_units,
                    started_unix_ms: st.started_unix_ms,
                    health: st.health,
                    health_reason: st.health_reason,
                    detail: st.detail,
                })
            })
            .collect();
        v.sort_by(|a, b| a.playback_id.cmp(&b.playback_id));
        v
    }

    /// Send `op` (cordon, uncordon, drain) to `node_id`.
    pub fn operate_node(&self, node_id: &str, op: Operation) -> Result<(), OperateError> {
        self.registry().operate(node_id, op)
    }

    /// End the live stream `playback_id` on the node that carries it, and with a `block`,
    /// refuse its key that long on every node. Returns the node's ID.
    pub fn kick(&self, playback_id: &str, block: Duration) -> Result<String, KickError> {
        if block > MAX_BLOCK {
            return Err(KickError::BlockTooLong);
        }
        let node = self
            .streams()
            .into_iter()
            .find(|s| s.playback_id == playback_id)
            .map(|s| s.node_id)
            .ok_or_else(|| KickError::NotLive(playback_id.to_string()))?;
        self.registry().operate(
            &node,
            Operation::Kick {
                playback_id: playback_id.to_string(),
                block_ms: u64::try_from(block.as_millis()).unwrap_or(u64::MAX),
            },
        )?;
        Ok(node)
    }

    /// Forget a node that is gone: `Ok(false)` when it was unknown, `Err` while it is
    /// connected (it would be back with its next report).
    pub fn forget(&self, node_id: &str) -> Result<bool, OperateError> {
        if self.registry().connected(node_id) {
            return Err(OperateError::Connected(node_id.to_string()));
        }
        Ok(self.registry().forget(node_id))
    }

    /// How much longer an operator's block on `stream_ref` runs, as the nodes last reported
    /// it (the age of each report taken off), if any.
    pub fn blocked_for(&self, stream_ref: &str) -> Option<Duration> {
        blocked_in(&self.registry().snapshot(), stream_ref, Instant::now())
    }
}

/// How much longer a block on `stream_ref` runs by the reports in `snapshot`, at `now` (for
/// placement, which has a snapshot already).
pub(crate) fn blocked_in(
    snapshot: &[control::server::NodeSnapshot],
    stream_ref: &str,
    now: Instant,
) -> Option<Duration> {
    snapshot
        .iter()
        .filter_map(|s| {
            let left = Duration::from_millis(*s.report.blocked.get(stream_ref)?);
            left.checked_sub(now.saturating_duration_since(s.received))
                .filter(|d| !d.is_zero())
        })
        .max()
}

#[cfg(test)]
#[path = "operate_test.rs"]
mod tests;
