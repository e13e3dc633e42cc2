//! The QUIC control plane between ingest nodes and balancers, with mutual TLS.
//!
//! Nodes push capacity reports (free units, CPU, state, streams, reservations) to every
//! balancer over one long-lived QUIC connection each; balancers ask nodes to reserve capacity
//! for a placement over the same connection, and the node's answer is final.
//!
//! Entry points:
//! - [`certs`]: the cluster CA and the node/balancer certificates (`edge certs`, `edge dev`).
//! - [`proto`]: the messages and their framing (pure, no sockets; re-exported at the root).
//! - [`client::spawn_client`]: the node side (quinn driver); its session logic is the pure
//!   [`client_session`] (report schedule, pause drill, answering reservations).
//! - [`server::run_server`] / [`server::spawn_server`] and [`server::Registry`]: the balancer side
//!   (quinn driver); its session logic is the pure [`server_session`] (hello, identity, frames).
//! - [`reservation`]: the one name for capacity held for a placement (reserve, cancel, TTL).
//! - [`process_metrics`]: `edge_build_info`, `process_*` and certificate expiry, for every process.
//!
//! Caveat: losing the control connection never affects anything else. A node keeps its
//! streams; a balancer just stops receiving that node's reports and decides from the age of
//! the last one (admission is not liveness).

pub mod certs;
pub mod client;
pub mod client_session;
pub mod process_metrics;
pub mod proto;
pub mod reservation;
pub mod server;
pub mod server_session;
mod tls;

pub use proto::*;
pub use reservation::{Reservation, MAX_RESERVE_TTL};
pub use tls::{IDLE_TIMEOUT, KEEP_ALIVE_INTERVAL};

use std::net::SocketAddr;
use std::path::PathBuf;

/// Everything that can go wrong in the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Reading or writing a certificate/key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// PEM text is missing, malformed, or holds the wrong kind of object.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// Generating or signing a certificate failed.
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    /// A node or balancer ID cannot be used in a certificate name.
    #[error("invalid id {0:?}: use 1-63 ASCII letters, digits, '-' or '_'")]
    InvalidId(String),
    /// Building the TLS/QUIC configuration failed (bad certificate or key, no usable cipher suite).
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// No tokio runtime is running on the calling thread.
    #[error("must be called from within a tokio runtime")]
    NoRuntime,
    /// Binding the UDP socket of the QUIC endpoint failed.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address we tried to bind.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A frame's declared or encoded length exceeds [`proto::MAX_FRAME`].
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// The declared or encoded length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame's payload is not valid JSON for the expected message (or a message failed to encode).
    #[error("bad message: {0}")]
    Json(#[from] serde_json::Error),
    /// A QUIC connection or stream failed.
    #[error("connection: {0}")]
    Connection(String),
    /// A named step did not finish within its timeout.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The peer broke the protocol (wrong identity, unexpected end of stream).
    #[error("protocol: {0}")]
    Protocol(String),
}
