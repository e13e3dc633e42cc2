//! A reservation: capacity a node holds for one placement until the stream arrives, is
//! cancelled, or its TTL runs out. One name on both sides: the balancer
//! [`crate::server::Registry::reserve`]s and cancels, the node's [`crate::client::NodeControl`]
//! reserves and cancels, and [`crate::ToNode::Reserve`] / [`crate::ToNode::Cancel`] carry them.

use std::time::Duration;

use crate::proto::{Credentials, ToNode};

/// Longest reservation TTL a node is asked to honour: a relayed encoder arrives within
/// seconds, so a longer TTL from a buggy balancer would only strand capacity.
pub const MAX_RESERVE_TTL: Duration = Duration::from_secs(60);

/// A request to hold capacity for one placement.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// Chosen by the balancer; unique across balancers (each starts at a random point).
    pub id: u64,
    /// Capacity to hold.
    pub milli_units: u32,
    /// The stream it is for, when known ([`crate::stream_ref`] of its key).
    pub stream_ref: Option<String>,
    /// How long to hold it if no stream arrives.
    pub ttl: Duration,
    /// The stream's continuation from the node that had it (see `Report::continuations`).
    pub continuation: Option<serde_json::Value>,
    /// The publisher's key: the node checks it before it holds anything.
    pub credentials: Option<Credentials>,
}

impl Reservation {
    /// The message that asks a node for it.
    pub fn to_message(&self) -> ToNode {
        ToNode::Reserve {
            id: self.id,
            milli_units: self.milli_units,
            stream_ref: self.stream_ref.clone(),
            ttl_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
            continuation: self.continuation.clone(),
            credentials: self.credentials.clone(),
        }
    }

    /// What a node is asked to hold, from a balancer's message; the TTL is capped at
    /// [`MAX_RESERVE_TTL`]. `None` for any other message.
    pub fn from_message(msg: ToNode) -> Option<Self> {
        match msg {
            ToNode::Reserve {
                id,
                milli_units,
                stream_ref,
                ttl_ms,
                continuation,
                credentials,
            } => Some(Reservation {
                id,
                milli_units,
                stream_ref,
                ttl: Duration::from_millis(ttl_ms).min(MAX_RESERVE_TTL),
                continuation,
                credentials,
            }),
            ToNode::Cancel { .. } | ToNode::Operate(_) => None,
        }
    }
}
