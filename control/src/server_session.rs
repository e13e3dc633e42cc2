//! The balancer's side of one node's control session, without IO: what the node's bytes mean
//! and when the node must be disconnected.
//!
//! [`NodeSession`] is fed the bytes the node sent on its stream ([`NodeSession::handle_bytes`])
//! and the time ([`NodeSession::handle_timeout`], due at [`NodeSession::poll_timeout`]);
//! [`NodeSession::poll_inbound`] yields [`Inbound`] messages for the registry (reports,
//! reservation answers) one at a time, or a [`Kick`]: the close code and reason the driver
//! closes the connection with. [`crate::server`] is the
//! quinn driver around it.
//!
//! The rules: the node's certificate names it (the driver reads the name); its first message
//! must be a report, within [`HELLO_TIMEOUT`] of the handshake; every report must name the
//! node the certificate names (a node cannot impersonate another); a frame that does not
//! decode ends the session (the stream is out of sync).

use std::time::Duration;

use tokio::time::Instant;

use crate::proto::{FrameDecoder, Report, ToBalancer};

/// After the handshake, a node must open its stream and send its first report within this
/// time (it does so at once), or it is dropped: connections that never identify themselves
/// hold no slot for long.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// QUIC application close codes sent to nodes (the reason text says more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// Server shutting down.
    Shutdown = 0,
    /// Malformed frame or unexpected message.
    Protocol = 1,
    /// Certificate names no node, or a report names another node.
    Identity = 2,
    /// The same node connected again; this connection is obsolete.
    Replaced = 3,
    /// The node took too long to identify itself or to read.
    Timeout = 4,
}

impl CloseCode {
    /// The code on the wire.
    pub fn as_u32(self) -> u32 {
        self as u32
    }
}

/// Close the connection with this code and reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kick {
    pub code: CloseCode,
    pub reason: &'static str,
}

/// A checked message from the node.
#[derive(Debug, Clone, PartialEq)]
// A report is large next to an answer, but these live only between a read and a dispatch
// (as `ToBalancer` does); boxing would add an allocation per report for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Inbound {
    /// A report naming this node; `first` for the one that identified the session.
    Report { report: Report, first: bool },
    /// The node's final answer to a reservation: `Err(reason)` when it refused.
    Answer {
        id: u64,
        answer: Result<(), crate::proto::Refused>,
    },
}

/// One node's control session as the balancer sees it.
#[derive(Debug)]
pub struct NodeSession {
    /// The node ID its certificate names.
    node_id: String,
    identified: bool,
    hello_deadline: Instant,
    decoder: FrameDecoder,
}

impl NodeSession {
    /// A session for the node its certificate names, whose handshake completed at `now`.
    pub fn new(node_id: impl Into<String>, now: Instant) -> Self {
        NodeSession {
            node_id: node_id.into(),
            identified: false,
            hello_deadline: now + HELLO_TIMEOUT,
            decoder: FrameDecoder::new(),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Whether the node sent its first report.
    pub fn identified(&self) -> bool {
        self.identified
    }

    /// When [`NodeSession::handle_timeout`] must run: the hello deadline until the first
    /// report, then never.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.identified).then_some(self.hello_deadline)
    }

    /// Time passed: a node that has not identified itself by its deadline is dropped.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Kick> {
        if !self.identified && now >= self.hello_deadline {
            return Err(Kick {
                code: CloseCode::Timeout,
                reason: "no report in time",
            });
        }
        Ok(())
    }

    /// Bytes from the node's stream; take the messages with [`NodeSession::poll_inbound`].
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        self.decoder.push(bytes);
    }

    /// The next complete message, checked: `Ok(None)` when more bytes are needed, `Err` when
    /// the session must end (the stream can no longer be trusted, or the node broke a rule).
    pub fn poll_inbound(&mut self) -> Result<Option<Inbound>, Kick> {
        match self.decoder.next::<ToBalancer>() {
            Ok(Some(msg)) => self.check(msg).map(Some),
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(node = %self.node_id, error = %e, "bad frame from node");
                Err(Kick {
                    code: CloseCode::Protocol,
                    reason: "bad frame",
                })
            }
        }
    }

    fn check(&mut self, msg: ToBalancer) -> Result<Inbound, Kick> {
        match msg {
            ToBalancer::Report(report) => {
                if report.node_id != self.node_id {
                    tracing::warn!(cert_node = %self.node_id, report_node = %report.node_id,
                        "report names another node than the certificate");
                    return Err(Kick {
                        code: CloseCode::Identity,
                        reason: "node id does not match certificate",
                    });
                }
                let first = !self.identified;
                self.identified = true;
                Ok(Inbound::Report { report, first })
            }
            ToBalancer::Reserved {
                id,
                ok,
                reason,
                kind,
            } => {
                if !self.identified {
                    return Err(Kick {
                        code: CloseCode::Protocol,
                        reason: "first message must be a report",
                    });
                }
                Ok(Inbound::Answer {
                    id,
                    answer: if ok {
                        Ok(())
                    } else {
                        Err(crate::proto::Refused { kind, reason })
                    },
                })
            }
        }
    }
}

#[cfg(test)]
#[path = "server_session_test.rs"]
mod tests;
