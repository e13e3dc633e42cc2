//! The node's SRT front as a plain type: which session a datagram belongs to, when a new
//! session opens, and when the table is full. No sockets: [`crate::srt`] feeds it the guard's
//! verdict for each datagram and acts on the [`Route`] it returns.
//!
//! The rules: a caller retransmits its induction until answered, so an induction goes to the
//! existing session of its address while that session is still handshaking; an induction after
//! the session streamed or was refused is a new connection from the same address, and replaces
//! the old session. Only an induction opens a session. At [`MAX_SESSIONS`] new sessions are
//! refused after ended ones are swept.

use std::{collections::HashMap, hash::Hash};

use wire::srt_guard::Kind;

/// Sessions (peers) at once, established or handshaking: bounds what spoofed inductions can
/// cost (two loopback sockets and a task each).
pub const MAX_SESSIONS: usize = 1024;

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Induction and conclusion in progress (the caller may retransmit its induction).
    Handshake,
    /// Accepted: media flows.
    Streaming,
    /// Refused or ended: a new induction from the address is a new connection.
    Done,
}

impl Phase {
    /// As stored in an atomic shared with the session task.
    pub fn to_u8(self) -> u8 {
        match self {
            Phase::Handshake => 0,
            Phase::Streaming => 1,
            Phase::Done => 2,
        }
    }
    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => Phase::Handshake,
            1 => Phase::Streaming,
            _ => Phase::Done,
        }
    }
}

/// What the front keeps of a session: whether its task still runs, and its phase.
pub trait SessionLink {
    fn is_open(&self) -> bool;
    fn phase(&self) -> Phase;
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Hand it to the peer's existing session.
    ToSession,
    /// Open a new session for the peer (replacing any old one) and hand it the datagram.
    Open,
    /// Drop it, for this reason (a metric label).
    Drop(&'static str),
}

/// The session table of the front, keyed by peer address.
pub struct Front<A, L> {
    sessions: HashMap<A, L>,
    max: usize,
}

impl<A: Eq + Hash + Copy, L: SessionLink> Front<A, L> {
    pub fn new(max: usize) -> Self {
        Self {
            sessions: HashMap::new(),
            max,
        }
    }

    /// Decide for a datagram of `kind` from `peer`. On [`Route::Open`] the caller must
    /// [`Front::insert`] the new session.
    pub fn route(&mut self, peer: A, kind: Kind) -> Route {
        if let Some(e) = self.sessions.get(&peer) {
            let mine = if kind == Kind::Induction {
                e.is_open() && e.phase() == Phase::Handshake
            } else {
                e.is_open()
            };
            if mine {
                return Route::ToSession;
            }
            // Dropping the link ends the old session.
            self.sessions.remove(&peer);
        }
        if kind != Kind::Induction {
            return Route::Drop("no_session");
        }
        if self.sessions.len() >= self.max {
            self.sweep();
            if self.sessions.len() >= self.max {
                return Route::Drop("too_many_sessions");
            }
        }
        Route::Open
    }

    /// Record the session opened for `peer` after [`Route::Open`].
    pub fn insert(&mut self, peer: A, link: L) {
        self.sessions.insert(peer, link);
    }

    /// The session of `peer`, if any.
    pub fn get(&self, peer: &A) -> Option<&L> {
        self.sessions.get(peer)
    }

    /// Forget sessions whose task ended.
    pub fn sweep(&mut self) {
        self.sessions.retain(|_, e| e.is_open());
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
#[path = "srt_front_test.rs"]
mod tests;
