//! The node's side of one balancer's control session, without IO: when to report, what the
//! balancer's messages ask and what to answer.
//!
//! [`BalancerSession`] takes the time and the node's wake-ups ([`BalancerSession::handle_wake`]:
//! a change to report, or the pause drill starting or ending) and says when a report is due
//! ([`BalancerSession::poll_timeout`], [`BalancerSession::handle_timeout`]); it decodes the
//! balancer's bytes ([`BalancerSession::handle_bytes`], [`BalancerSession::poll_message`]).
//! [`answer`] turns one message into the node's decision and the reply. [`crate::client`] is
//! the quinn driver around them.
//!
//! The schedule: a report at once when the session starts, then every `interval`, and at once
//! on every wake-up (which restarts the interval); none while a pause is in force, and one at
//! once when it ends. After a granted reservation or a cancel the node wakes every session, so
//! every balancer learns of it.

use std::time::Duration;

use tokio::time::Instant;

use crate::client::NodeControl;
use crate::proto::{FrameDecoder, Operation, Refused, ToBalancer, ToNode};
use crate::reservation::Reservation;
use crate::ControlError;

/// Far enough to mean "until further notice" for a pause too long for `Instant`.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// The end of a pause of `d` starting at `now` (the pause drill; `Duration::ZERO` ends one).
pub fn pause_until(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now + FOREVER)
}

/// One session with one balancer, as the node sees it.
#[derive(Debug)]
pub struct BalancerSession {
    interval: Duration,
    next_report: Instant,
    /// The end of the pause in force, if any.
    paused_until: Option<Instant>,
    decoder: FrameDecoder,
}

impl BalancerSession {
    /// A session that started at `now`, reporting every `interval`; `paused_until` is the end
    /// of a pause already in force. Its first report is due at once.
    pub fn new(interval: Duration, now: Instant, paused_until: Option<Instant>) -> Self {
        BalancerSession {
            interval,
            next_report: now,
            paused_until: paused_until.filter(|u| *u > now),
            decoder: FrameDecoder::new(),
        }
    }

    /// Whether a pause is in force at `now`.
    pub fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|u| u > now)
    }

    /// The node woke every session (something to report, or the pause changed, to
    /// `paused_until`). `true`: send a report now.
    pub fn handle_wake(&mut self, now: Instant, paused_until: Option<Instant>) -> bool {
        self.paused_until = paused_until.filter(|u| *u > now);
        if self.paused_until.is_some() {
            return false;
        }
        self.next_report = now + self.interval;
        true
    }

    /// When [`BalancerSession::handle_timeout`] has something to do: the end of the pause, or
    /// the next report.
    pub fn poll_timeout(&self) -> Instant {
        self.paused_until.unwrap_or(self.next_report)
    }

    /// Time passed. `true`: send a report now (it was due, or a pause just ended).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        match self.paused_until {
            Some(until) if until > now => false,
            Some(_) => {
                self.paused_until = None;
                self.next_report = now + self.interval;
                true
            }
            None if now >= self.next_report => {
                self.next_report = now + self.interval;
                true
            }
            None => false,
        }
    }

    /// Bytes from the balancer; take the messages with [`BalancerSession::poll_message`].
    pub fn handle_bytes(&mut self, bytes: &[u8]) {
        self.decoder.push(bytes);
    }

    /// The next complete message: `Ok(None)` when more bytes are needed, `Err` when the stream
    /// can no longer be trusted (the connection must go).
    pub fn poll_message(&mut self) -> Result<Option<ToNode>, ControlError> {
        self.decoder.next::<ToNode>()
    }
}

/// What the node did with one balancer message.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// A reservation was asked for: the node's final say, `Err` when it refused. Send
    /// [`Handled::reply`]; when granted, the node reports at once to every balancer.
    Reserved {
        id: u64,
        answer: Result<(), Refused>,
    },
    /// A reservation was cancelled: the node reports at once to every balancer.
    Cancelled { id: u64 },
    /// An operator's action was carried out: the node reports at once to every balancer.
    Operated { op: Operation },
}

impl Handled {
    /// The message to send the balancer, if any.
    pub fn reply(&self) -> Option<ToBalancer> {
        match self {
            Handled::Reserved { id, answer } => Some(ToBalancer::Reserved {
                id: *id,
                ok: answer.is_ok(),
                reason: answer
                    .as_ref()
                    .err()
                    .map(|r| r.reason.clone())
                    .unwrap_or_default(),
                kind: answer.as_ref().err().map(|r| r.kind).unwrap_or_default(),
            }),
            Handled::Cancelled { .. } | Handled::Operated { .. } => None,
        }
    }
}

/// The node's decision on one balancer message (the TTL asked for is capped at
/// [`crate::MAX_RESERVE_TTL`]). A cancel is applied at once; a reservation may have to wait
/// for the node's auth backend, so it is a future the driver runs beside the session (other
/// messages are not held up behind a slow key check).
pub fn answer(msg: ToNode, node: &dyn NodeControl) -> Answering {
    let msg = match msg {
        ToNode::Cancel { id } => {
            node.cancel(id);
            return Answering::Done(Handled::Cancelled { id });
        }
        ToNode::Operate(op) => {
            node.operate(op.clone());
            return Answering::Done(Handled::Operated { op });
        }
        reserve => reserve,
    };
    match Reservation::from_message(msg) {
        Some(r) => {
            let id = r.id;
            let decided = node.reserve(r);
            Answering::Pending(Box::pin(async move {
                Handled::Reserved {
                    id,
                    answer: decided.await,
                }
            }))
        }
        // Unreachable: what is left is a reservation.
        None => Answering::Done(Handled::Cancelled { id: 0 }),
    }
}

/// What [`answer`] returns: done now, or a decision still being made.
pub enum Answering {
    Done(Handled),
    Pending(std::pin::Pin<Box<dyn std::future::Future<Output = Handled> + Send>>),
}

impl Answering {
    /// Wait for the decision (for callers that have nothing else to do meanwhile).
    pub async fn decided(self) -> Handled {
        match self {
            Answering::Done(h) => h,
            Answering::Pending(f) => f.await,
        }
    }
}

#[cfg(test)]
#[path = "client_session_test.rs"]
mod tests;
