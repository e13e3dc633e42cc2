//! The balancer's SRT front, as its driver (`balancer::srt`) runs it: a `wire::srt_route::Router`
//! fed datagrams from a few callers (`Router::route`, delivering to session "tasks" that may
//! have ended while their notice is still queued), a `srt_route::Session` (with its
//! `srt_relay::Upstream`) per placed caller fed datagrams from "its node", session notices
//! read when the driver gets to them (`Router::handle_notice`), time moving forward, and now
//! and then a hand-over (sessions exported, serialised, resumed in a fresh router with the
//! same cookies).
//!
//! The input is a list of operations. A caller may echo the cookie of the induction answer
//! it was given (a real caller does; the fuzzer cannot forge SHA-256), and a node datagram may
//! carry the caller's socket ID as destination, so the fuzzer gets past both checks.
//! Nothing may panic; the router never holds more sessions than its cap; what reaches the node
//! from an established session is what the guard forwards unchanged.
#![no_main]
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use tokio::time::Instant;
use wire::srt_guard::{inspect, Verdict};
use wire::srt_relay::{self, Step, REJECT_BAD_REQUEST};
use wire::srt_route::{Notice, Routed, Router, Session, Tick};

const SECRET: [u8; 32] = [7; 32];
const MAX_SESSIONS: usize = 3;
/// Where the SYN cookie sits in a handshake (16-byte header + CIF offset 28).
const COOKIE_AT: usize = 44;
const DEST_AT: usize = 12;
const CALLER_SOCKET_AT: usize = 40;

struct Live {
    peer: SocketAddr,
    caller_socket_id: u32,
    session: Session,
}

struct Front {
    router: Router,
    /// Session "tasks" still running.
    sessions: BTreeMap<u64, Live>,
    /// What session tasks told the front loop, not read yet.
    notices: Vec<Notice>,
    cookies: BTreeMap<SocketAddr, [u8; 4]>,
    now: Instant,
}

impl Front {
    /// A session task ends: its link tells the front loop when it gets there.
    fn close(&mut self, id: u64) {
        if self.sessions.remove(&id).is_some() {
            self.notices.push(Notice::Closed(id));
        }
    }

    fn read_notices(&mut self) {
        for n in std::mem::take(&mut self.notices) {
            if let Some(id) = self.router.handle_notice(n) {
                self.sessions.remove(&id);
            }
        }
    }

    fn steps(&mut self, id: u64, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::ToNode(pkt) => {
                    let established = self
                        .sessions
                        .get(&id)
                        .is_some_and(|l| l.session.established());
                    if established {
                        assert!(matches!(inspect(&pkt), Verdict::Forward(_)));
                    }
                }
                // Node datagrams go to the caller as they are (the node is ours).
                Step::ToCaller(_) => {}
                Step::Established => self.notices.push(Notice::Established(id)),
                Step::Rejected(code) => {
                    if let Some(l) = self.sessions.get(&id) {
                        let _ = srt_relay::rejection(l.session.conclusion(), code);
                    }
                    self.close(id);
                }
                Step::Nothing => {}
            }
        }
    }

    fn from_caller(&mut self, peer: SocketAddr, pkt: &[u8]) {
        let now = self.now;
        let Front {
            router, sessions, ..
        } = self;
        let mut delivered = None;
        let routed = router.route(now, peer, pkt, |id| match sessions.get_mut(&id) {
            Some(l) => {
                delivered = Some((id, l.session.handle_caller(pkt, now)));
                true
            }
            None => false,
        });
        if let Some((id, steps)) = delivered {
            assert!(routed.is_none());
            self.steps(id, steps);
        }
        let Some(routed) = routed else {
            return;
        };
        match routed {
            Routed::Reply(r) => {
                if let Some(c) = r.get(COOKIE_AT..COOKIE_AT + 4) {
                    let mut cookie = [0; 4];
                    cookie.copy_from_slice(c);
                    self.cookies.insert(peer, cookie);
                }
            }
            Routed::ToSession(id) => panic!("route returned ToSession({id})"),
            Routed::Place(new) => {
                if let Some(old) = new.replaces {
                    self.close(old);
                }
                let caller_socket_id = new
                    .conclusion
                    .get(CALLER_SOCKET_AT..CALLER_SOCKET_AT + 4)
                    .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                // As the driver: a stream ID that does not parse is refused before placing.
                let Ok(req) = wire::streamid::parse(&new.stream_id) else {
                    let _ = srt_relay::rejection(&new.conclusion, REJECT_BAD_REQUEST);
                    self.router.handle_closed(new.id);
                    return;
                };
                let sid = wire::streamid::for_node(&req.key, new.id, peer);
                let (session, first) = Session::start(new.conclusion, Some(sid), self.now);
                assert!(!first.is_empty());
                self.sessions.insert(
                    new.id,
                    Live {
                        peer,
                        caller_socket_id,
                        session,
                    },
                );
            }
            Routed::Refuse { .. } | Routed::Drop(_) => {}
        }
        assert!(self.router.sessions() <= MAX_SESSIONS);
    }

    fn from_node(&mut self, id: u64, pkt: &[u8]) {
        let now = self.now;
        if let Some(l) = self.sessions.get_mut(&id) {
            let steps = l.session.handle_node(pkt, now);
            self.steps(id, steps);
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        let due: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, l)| l.session.poll_timeout() <= self.now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let now = self.now;
            let Some(l) = self.sessions.get_mut(&id) else {
                continue;
            };
            match l.session.handle_timeout(now) {
                Tick::Idle => self.close(id),
                Tick::Steps(s) => self.steps(id, s),
            }
        }
    }

    /// What a balancer hand-over does: established sessions and the cookie clock go to a
    /// successor (through JSON), sessions still handshaking are dropped.
    fn hand_over(&mut self) {
        let clock = self.router.cookie_clock(self.now);
        let mut router = Router::resume(self.router.secret(), MAX_SESSIONS, self.now, clock);
        let mut sessions = BTreeMap::new();
        for l in std::mem::take(&mut self.sessions).into_values() {
            let Some(e) = l.session.export() else {
                continue;
            };
            let json = serde_json::to_vec(&e).expect("Exported serialises");
            let e: srt_relay::Exported = serde_json::from_slice(&json).expect("and reads back");
            let id = router.adopt(l.peer, e.caller_socket_id);
            sessions.insert(
                id,
                Live {
                    peer: l.peer,
                    caller_socket_id: e.caller_socket_id,
                    session: Session::resume(e, self.now),
                },
            );
        }
        self.router = router;
        self.sessions = sessions;
        self.notices.clear();
    }
}

fn peers() -> [SocketAddr; 3] {
    [
        SocketAddr::from(([192, 0, 2, 1], 5000)),
        SocketAddr::from(([192, 0, 2, 1], 5001)),
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 5000)),
    ]
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let now = Instant::now();
    let mut f = Front {
        router: Router::new(SECRET, MAX_SESSIONS, now),
        sessions: BTreeMap::new(),
        notices: Vec::new(),
        cookies: BTreeMap::new(),
        now,
    };
    let peers = peers();
    // An exhausted `Unstructured` keeps giving defaults: stop at its end.
    while let (false, Ok(op)) = (u.is_empty(), u.arbitrary::<u8>()) {
        match op & 7 {
            0..=2 => {
                let peer = peers[usize::from(op & 7) % peers.len()];
                let Ok(len) = u.int_in_range(0..=1500usize) else {
                    return;
                };
                let Ok(bytes) = u.bytes(len) else {
                    return;
                };
                let mut pkt = bytes.to_vec();
                if op & 0x80 != 0 {
                    if let (Some(c), Some(dst)) =
                        (f.cookies.get(&peer), pkt.get_mut(COOKIE_AT..COOKIE_AT + 4))
                    {
                        dst.copy_from_slice(c);
                    }
                }
                f.from_caller(peer, &pkt);
            }
            3 | 4 => {
                let Ok(len) = u.int_in_range(0..=1500usize) else {
                    return;
                };
                let Ok(bytes) = u.bytes(len) else {
                    return;
                };
                let Some((&id, l)) = f.sessions.iter().nth(usize::from(op >> 4) % 4) else {
                    continue;
                };
                let mut pkt = bytes.to_vec();
                if op & 8 != 0 {
                    if let Some(dst) = pkt.get_mut(DEST_AT..DEST_AT + 4) {
                        dst.copy_from_slice(&l.caller_socket_id.to_be_bytes());
                    }
                }
                f.from_node(id, &pkt);
            }
            5 => {
                let Ok(ms) = u.arbitrary::<u16>() else {
                    return;
                };
                f.advance(Duration::from_millis(u64::from(ms)));
            }
            6 if op & 0x80 != 0 => f.router.stop_accepting(),
            6 => f.read_notices(),
            _ => f.hand_over(),
        }
    }
});
