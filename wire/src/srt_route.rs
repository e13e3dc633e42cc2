//! SRT routing on the front socket, without IO: which session a caller's datagram belongs to,
//! and each session's life from placement to its idle end.
//!
//! Two plain types, fed datagrams and `now` (quinn-proto style: `handle_*` feeds input,
//! `poll_*` says when to come back). The balancer's `srt` module and the node's `srt` module
//! are the thin tokio drivers around them.
//!
//! - [`Router`]: one per front socket. [`Router::handle_datagram`] takes a caller's address and
//!   bytes and returns a [`Routed`]: answer an induction (stateless cookie), hand the datagram
//!   to a live session, place a new session (a conclusion with our cookie), refuse, or drop.
//!   The driver tells it when a session is established ([`Router::handle_established`]) and
//!   when it ended ([`Router::handle_closed`]).
//! - [`Session`]: one per caller, once placed. Wraps the handshake relay
//!   ([`srt_relay::Upstream`]) with the session's idle timeout: [`Session::handle_caller`],
//!   [`Session::handle_node`], [`Session::handle_timeout`] return [`Step`]s to perform, and
//!   [`Session::poll_timeout`] says when to call `handle_timeout` next.
//!
//! Routing rules (per caller address): an induction always gets the stateless answer (a
//! retransmission while its session places, or a caller restarting from the same address and
//! port); a conclusion carrying a new caller socket ID to an established session means the
//! caller restarted: a new session replaces the old one; the same ID is a retransmission,
//! which the session answers from its cache. Everything else goes to the caller's session if
//! it has one, else through [`srt_relay::on_fresh`] (cookie check, guard).
//!
//! Caveat: the cookie clock is this router's own (seconds since [`Router::new`]'s `now`), not
//! the wall clock: cookies only need to age, and only this process checks them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::srt_relay::{self, Cookies, Fresh, Step, Upstream, REJECT_OVERLOAD};

/// A session with no datagram either way for this long is over. libsrt declares its peer dead
/// after 5 s without packets (keepalives flow every second even when idle).
pub const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Identifies one session for its whole life (a restarted caller gets a new one).
pub type SessionId = u64;

/// What a session task tells its front loop, which feeds it to [`Router::handle_notice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The session completed its handshake ([`Router::handle_established`]).
    Established(SessionId),
    /// The session's task ended ([`Router::handle_closed`]).
    Closed(SessionId),
}

/// A session task's link back to its front loop: says "established" when told to, and
/// "closed" when dropped, however the task ends (a panic included), so the router never keeps
/// routing to a session nobody runs.
#[derive(Debug)]
pub struct SessionLink {
    id: SessionId,
    notices: tokio::sync::mpsc::UnboundedSender<Notice>,
}

impl SessionLink {
    pub fn new(id: SessionId, notices: tokio::sync::mpsc::UnboundedSender<Notice>) -> Self {
        SessionLink { id, notices }
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The session completed its handshake.
    pub fn established(&self) {
        let _ = self.notices.send(Notice::Established(self.id));
    }
}

impl Drop for SessionLink {
    fn drop(&mut self) {
        let _ = self.notices.send(Notice::Closed(self.id));
    }
}

/// What to do with one datagram from a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// Send this back to the caller from the front socket (an induction answer).
    Reply(Vec<u8>),
    /// The datagram belongs to this live session: hand it over unchanged (the session's core
    /// guards it).
    ToSession(SessionId),
    /// A conclusion with our cookie: a new session to place.
    Place(NewSession),
    /// A conclusion we will not place.
    Refuse {
        /// The rejection to send the caller, if any.
        reply: Option<Vec<u8>>,
        why: Refusal,
    },
    /// Ignore it; the reason is a low-cardinality label.
    Drop(&'static str),
}

/// A caller to place, from [`Routed::Place`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub id: SessionId,
    /// Empty when the caller sent none.
    pub stream_id: String,
    /// The caller's (guard-cleaned) conclusion, for [`Session::start`] and
    /// [`srt_relay::rejection`].
    pub conclusion: Vec<u8>,
    /// The caller's previous session from the same address (it restarted): the driver ends
    /// it. The router has already forgotten it.
    pub replaces: Option<SessionId>,
}

/// Why a conclusion is not placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The balancer stopped accepting new streams (draining): libsrt's overload code.
    Draining,
    /// [`Router`]'s session cap is reached: dropped without an answer (a flood gets nothing).
    TooManySessions,
}

/// One caller address with a session.
#[derive(Debug, Clone)]
struct Entry {
    id: SessionId,
    /// The caller's SRT socket ID (a restarted caller has a new one).
    caller_socket_id: u32,
    established: bool,
}

/// The routing state of one front socket. Pure: datagrams, notices and `now` come in.
#[derive(Debug)]
pub struct Router {
    cookies: Cookies,
    /// Origin of the cookie clock.
    epoch: Instant,
    sessions: HashMap<SocketAddr, Entry>,
    next_id: SessionId,
    accepting: bool,
    max_sessions: usize,
}

impl Router {
    /// A router answering inductions with cookies from `secret`, holding at most
    /// `max_sessions` sessions (placing or relaying) at once.
    pub fn new(secret: [u8; 32], max_sessions: usize, now: Instant) -> Self {
        Router {
            cookies: Cookies::new(secret),
            epoch: now,
            sessions: HashMap::new(),
            next_id: 1,
            accepting: true,
            max_sessions,
        }
    }

    /// A router continuing another one's cookies: same secret, and a cookie clock that reads
    /// `cookie_secs` at `now` (what [`Router::cookie_clock`] read there), so a cookie the
    /// other issued a moment ago still checks.
    pub fn resume(secret: [u8; 32], max_sessions: usize, now: Instant, cookie_secs: u64) -> Self {
        let mut r = Router::new(secret, max_sessions, now);
        r.epoch = now
            .checked_sub(std::time::Duration::from_secs(cookie_secs))
            .unwrap_or(now);
        r
    }

    /// The cookie clock now, in seconds (see [`Router::resume`]).
    pub fn cookie_clock(&self, now: Instant) -> u64 {
        self.cookie_secs(now)
    }

    /// From now on, conclusions are refused with [`Refusal::Draining`]; live sessions go on.
    pub fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// Sessions the router routes to (placing or relaying).
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    fn cookie_secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// A datagram from `peer` arrived on the front socket.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, pkt: &[u8]) -> Routed {
        let mut replaces = None;
        if let Some(e) = self.sessions.get(&peer) {
            let restart = e.established
                && is_conclusion(pkt)
                && caller_socket_id(pkt) != Some(e.caller_socket_id);
            if !is_induction(pkt) && !restart {
                return Routed::ToSession(e.id);
            }
            if restart {
                replaces = Some(e.id);
            }
        }
        match srt_relay::on_fresh(pkt, peer, &self.cookies, self.cookie_secs(now)) {
            Fresh::Reply(r) => Routed::Reply(r),
            Fresh::Drop(reason) => Routed::Drop(reason),
            Fresh::Place {
                stream_id,
                conclusion,
                caller_socket_id,
            } => {
                if !self.accepting {
                    return Routed::Refuse {
                        reply: srt_relay::rejection(&conclusion, REJECT_OVERLOAD),
                        why: Refusal::Draining,
                    };
                }
                // A restart replaces its own entry, so it never needs a free slot.
                if replaces.is_none()
                    && !self.sessions.contains_key(&peer)
                    && self.sessions.len() >= self.max_sessions
                {
                    return Routed::Refuse {
                        reply: None,
                        why: Refusal::TooManySessions,
                    };
                }
                let id = self.next_id;
                self.next_id += 1;
                // Replacing an entry forgets the old session (the driver ends it).
                let old = self.sessions.insert(
                    peer,
                    Entry {
                        id,
                        caller_socket_id,
                        established: false,
                    },
                );
                Routed::Place(NewSession {
                    id,
                    stream_id,
                    conclusion,
                    replaces: replaces.or(old.map(|e| e.id)),
                })
            }
        }
    }

    /// [`Router::handle_datagram`] for a driver that queues datagrams to session tasks:
    /// `deliver(id)` hands the datagram to session `id` and says whether that session still
    /// runs. A session that has ended (its end notice still on its way to the driver) is
    /// forgotten and the datagram routed afresh (a new caller from the same address). `None`
    /// when a session took the datagram.
    pub fn route(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        pkt: &[u8],
        mut deliver: impl FnMut(SessionId) -> bool,
    ) -> Option<Routed> {
        match self.handle_datagram(now, peer, pkt) {
            Routed::ToSession(id) if deliver(id) => None,
            Routed::ToSession(id) => {
                self.handle_closed(id);
                match self.handle_datagram(now, peer, pkt) {
                    // Not possible (the session was just forgotten), but never loop on it.
                    Routed::ToSession(_) => Some(Routed::Drop("no_session")),
                    r => Some(r),
                }
            }
            r => Some(r),
        }
    }

    /// An established session handed over from the previous balancer (or resumed after a
    /// quiesce): route `peer`'s datagrams to a new session ID, returned.
    pub fn adopt(&mut self, peer: SocketAddr, caller_socket_id: u32) -> SessionId {
        let id = self.next_id;
        self.next_id += 1;
        self.sessions.insert(
            peer,
            Entry {
                id,
                caller_socket_id,
                established: true,
            },
        );
        id
    }

    /// The cookie secret (a successor must answer inductions this balancer issued cookies
    /// for).
    pub fn secret(&self) -> [u8; 32] {
        self.cookies.secret()
    }

    /// A notice from a session task; returns the session that ended, if it is one, so the
    /// driver drops its queue.
    pub fn handle_notice(&mut self, notice: Notice) -> Option<SessionId> {
        match notice {
            Notice::Established(id) => {
                self.handle_established(id);
                None
            }
            Notice::Closed(id) => {
                self.handle_closed(id);
                Some(id)
            }
        }
    }

    /// Session `id` completed its handshake with the node: from now on a conclusion with
    /// another caller socket ID from its address is a restart.
    pub fn handle_established(&mut self, id: SessionId) {
        if let Some(e) = self.sessions.values_mut().find(|e| e.id == id) {
            e.established = true;
        }
    }

    /// Session `id` ended (refused, timed out, replaced): forget it. Unknown IDs are ignored
    /// (a replaced session is already forgotten).
    pub fn handle_closed(&mut self, id: SessionId) {
        self.sessions.retain(|_, e| e.id != id);
    }
}

/// The caller's SRT socket ID in a handshake (CIF offset 24).
fn caller_socket_id(pkt: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(pkt.get(40..44)?.try_into().ok()?))
}

/// Whether a datagram is a handshake with this handshake type (control type 0).
fn is_handshake_type(pkt: &[u8], hs_type: [u8; 4]) -> bool {
    pkt.get(..2) == Some(&[0x80, 0][..]) && pkt.get(36..40) == Some(&hs_type[..])
}

/// Whether a datagram is a handshake conclusion (handshake type -1).
fn is_conclusion(pkt: &[u8]) -> bool {
    is_handshake_type(pkt, [0xFF; 4])
}

/// Whether a datagram is a handshake induction (handshake type 1).
fn is_induction(pkt: &[u8]) -> bool {
    is_handshake_type(pkt, [0, 0, 0, 1])
}

/// What [`Session::handle_timeout`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// Perform these (handshake retransmission, or the node's timeout as a rejection).
    Steps(Vec<Step>),
    /// Nothing either way for [`SESSION_IDLE_TIMEOUT`]: the session is over.
    Idle,
}

/// One caller's session once placed: the handshake relay towards its node and the idle clock.
#[derive(Debug)]
pub struct Session {
    up: Upstream,
    last_activity: Instant,
}

impl Session {
    /// Start the handshake with the node for a caller's `conclusion` (see
    /// [`Upstream::start`]); returns the first datagram to send the node.
    pub fn start(
        conclusion: Vec<u8>,
        stream_id_for_node: Option<String>,
        now: Instant,
    ) -> (Self, Vec<u8>) {
        let (up, first) = Upstream::start(conclusion, stream_id_for_node, now);
        (
            Session {
                up,
                last_activity: now,
            },
            first,
        )
    }

    /// The caller's conclusion this session started from (for [`srt_relay::rejection`]).
    pub fn conclusion(&self) -> &[u8] {
        self.up.conclusion()
    }

    /// An established session, resumed from what [`Session::export`] gave.
    pub fn resume(e: srt_relay::Exported, now: Instant) -> Self {
        Session {
            up: Upstream::resume(e, now),
            last_activity: now,
        }
    }

    /// What an established session is, to resume it elsewhere (`None` while handshaking).
    pub fn export(&self) -> Option<srt_relay::Exported> {
        self.up.export()
    }

    pub fn established(&self) -> bool {
        self.up.established()
    }

    /// A datagram from the caller (routed here by [`Routed::ToSession`]).
    pub fn handle_caller(&mut self, pkt: &[u8], now: Instant) -> Vec<Step> {
        self.last_activity = now;
        self.up.on_caller(pkt, now)
    }

    /// A datagram from the node, on the session's upstream socket.
    pub fn handle_node(&mut self, pkt: &[u8], now: Instant) -> Vec<Step> {
        self.last_activity = now;
        self.up.on_node(pkt, now)
    }

    /// When [`Session::handle_timeout`] has something to do: the handshake's next
    /// retransmission or deadline, else the idle end.
    pub fn poll_timeout(&self) -> Instant {
        let idle = self.last_activity + SESSION_IDLE_TIMEOUT;
        self.up.next_timer().map_or(idle, |t| t.min(idle))
    }

    /// Time passed: end an idle session, else let the handshake retransmit or give up.
    pub fn handle_timeout(&mut self, now: Instant) -> Tick {
        if now.saturating_duration_since(self.last_activity) >= SESSION_IDLE_TIMEOUT {
            return Tick::Idle;
        }
        Tick::Steps(self.up.on_timer(now))
    }
}

#[cfg(test)]
#[path = "srt_route_test.rs"]
mod tests;
