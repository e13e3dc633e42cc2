//! Unit tests of `srt_route`: whole SRT sessions through the router and the session core, on
//! a virtual clock, without sockets (kept beside it; compiled only for tests).

use super::*;
use crate::srt_relay::test_packets::{be32_at, encode_sid, hs, put16, put32};
use crate::srt_relay::{REJECT_BAD_GATEWAY, REJECT_BAD_REQUEST};

const CALLER: u32 = 0x0123_4567;
const NODE: u32 = 0x0765_4321;
const MS: Duration = Duration::from_millis(1);
const SID: &str = "#!::r=live/KEY,m=publish";

const HS_INDUCTION: u32 = 1;
const HS_CONCLUSION: u32 = 0xFFFF_FFFF;

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// As libsrt and srt-tokio send it: HSv4, UDT_DGRAM, cookie 0.
fn induction(socket: u32) -> Vec<u8> {
    hs(4, 2, HS_INDUCTION, socket, 0, 0, &[])
}

fn conclusion(socket: u32, cookie: u32) -> Vec<u8> {
    // HSREQ: SRT 1.3.0, TSBPD/TLPKTDROP/NAKREPORT/REXMITFLG, 120 ms both ways.
    let hsreq = vec![0, 1, 3, 0, 0, 0, 0, 0xBF, 0, 120, 0, 120];
    hs(
        5,
        1 | 4,
        HS_CONCLUSION,
        socket,
        cookie,
        0,
        &[(1, hsreq), (5, encode_sid(SID))],
    )
}

fn node_induction_answer(cookie: u32) -> Vec<u8> {
    hs(5, 0x4A17, HS_INDUCTION, NODE, cookie, CALLER, &[])
}

fn node_conclusion_answer() -> Vec<u8> {
    let hsrsp = vec![0, 1, 3, 0, 0, 0, 0, 0xBF, 0, 120, 0, 120];
    hs(5, 1, HS_CONCLUSION, NODE, 0, CALLER, &[(2, hsrsp)])
}

/// An SRT data packet to socket `dest`.
fn data(dest: u32, seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; 16 + 188];
    put32(&mut p, 0, seq & 0x7FFF_FFFF);
    put32(&mut p, 12, dest);
    p
}

fn router(t0: Instant) -> Router {
    Router::new([7; 32], 100, t0)
}

/// The cookie of an induction answer.
fn cookie_of(r: &Routed) -> u32 {
    match r {
        Routed::Reply(a) => be32_at(a, 44),
        other => panic!("not an induction answer: {other:?}"),
    }
}

/// Induction then conclusion from `from` with caller socket `socket`: the new session.
fn handshake(r: &mut Router, from: SocketAddr, socket: u32, now: Instant) -> NewSession {
    let cookie = cookie_of(&r.handle_datagram(now, from, &induction(socket)));
    match r.handle_datagram(now + MS, from, &conclusion(socket, cookie)) {
        Routed::Place(n) => n,
        other => panic!("conclusion not placed: {other:?}"),
    }
}

/// Drive a session's handshake with a well-behaved node; returns the session and the node's
/// conclusion answer the caller got.
fn establish(new: &NewSession, now: Instant) -> (Session, Vec<u8>) {
    let (mut s, first) = Session::start(
        new.conclusion.clone(),
        Some(format!("{SID},edge-res=7")),
        now,
    );
    assert_eq!(
        be32_at(&first, 36),
        HS_INDUCTION,
        "the node gets an induction first"
    );
    let steps = s.handle_node(&node_induction_answer(0xC00C1E), now + MS);
    let [Step::ToNode(c)] = steps.as_slice() else {
        panic!("{steps:?}")
    };
    assert_eq!(be32_at(c, 36), HS_CONCLUSION);
    assert_eq!(be32_at(c, 44), 0xC00C1E, "the node's cookie");
    let answer = node_conclusion_answer();
    assert_eq!(
        s.handle_node(&answer, now + 2 * MS),
        vec![Step::ToCaller(answer.clone()), Step::Established]
    );
    assert!(s.established());
    (s, answer)
}

#[test]
fn a_whole_publish_induction_conclusion_placement_relay() {
    let t0 = Instant::now();
    let mut r = router(t0);
    let caller = peer(40000);

    // Induction: the stateless answer, HSv5 with our cookie; no state kept.
    let answer = r.handle_datagram(t0, caller, &induction(CALLER));
    let cookie = cookie_of(&answer);
    let Routed::Reply(a) = &answer else {
        unreachable!()
    };
    assert_eq!((be32_at(a, 12), be32_at(a, 16)), (CALLER, 5));
    assert_eq!(r.sessions(), 0);

    // Conclusion with the cookie: a session to place, with the caller's stream ID.
    let Routed::Place(new) = r.handle_datagram(t0 + MS, caller, &conclusion(CALLER, cookie)) else {
        panic!("not placed")
    };
    assert_eq!(new.stream_id, SID);
    assert_eq!(new.replaces, None);
    assert_eq!(r.sessions(), 1);
    // While it places, the caller's retransmitted conclusion goes to its session, and a
    // retransmitted induction gets the same stateless answer.
    let again = conclusion(CALLER, cookie);
    assert_eq!(
        r.handle_datagram(t0 + 250 * MS, caller, &again),
        Routed::ToSession(new.id)
    );
    assert_eq!(
        cookie_of(&r.handle_datagram(t0 + 250 * MS, caller, &induction(CALLER))),
        cookie
    );

    // Placed: the session redoes the handshake with the node and relays.
    let (mut s, node_answer) = establish(&new, t0 + 300 * MS);
    r.handle_established(new.id);
    let to_node = data(NODE, 1);
    assert_eq!(
        r.handle_datagram(t0 + 400 * MS, caller, &to_node),
        Routed::ToSession(new.id)
    );
    assert_eq!(
        s.handle_caller(&to_node, t0 + 400 * MS),
        vec![Step::ToNode(to_node.clone())]
    );
    let to_caller = data(CALLER, 9);
    assert_eq!(
        s.handle_node(&to_caller, t0 + 401 * MS),
        vec![Step::ToCaller(to_caller.clone())]
    );
    // Our answer to the caller was lost: its retransmitted conclusion (same socket ID) is a
    // retransmission, answered from the session's cache.
    assert_eq!(
        r.handle_datagram(t0 + 500 * MS, caller, &again),
        Routed::ToSession(new.id)
    );
    assert_eq!(
        s.handle_caller(&again, t0 + 500 * MS),
        vec![Step::ToCaller(node_answer)]
    );
    // Other callers are untouched by all of this.
    assert!(matches!(
        r.handle_datagram(t0 + 500 * MS, peer(40001), &to_node),
        Routed::Drop("no_session")
    ));
}

#[test]
fn a_caller_restarting_from_the_same_address_gets_a_new_session() {
    let t0 = Instant::now();
    let mut r = router(t0);
    let caller = peer(40000);
    let first = handshake(&mut r, caller, CALLER, t0);

    // Not established yet: a conclusion with another socket ID is only a retransmission.
    let cookie = cookie_of(&r.handle_datagram(t0, caller, &induction(CALLER + 1)));
    assert_eq!(
        r.handle_datagram(t0, caller, &conclusion(CALLER + 1, cookie)),
        Routed::ToSession(first.id)
    );

    r.handle_established(first.id);
    // Same ID: still a retransmission.
    assert_eq!(
        r.handle_datagram(t0, caller, &conclusion(CALLER, cookie)),
        Routed::ToSession(first.id)
    );
    // New ID to an established session: the caller restarted; the new session replaces it.
    let Routed::Place(second) = r.handle_datagram(t0, caller, &conclusion(CALLER + 1, cookie))
    else {
        panic!("restart not placed")
    };
    assert_eq!(second.replaces, Some(first.id));
    assert_ne!(second.id, first.id);
    assert_eq!(r.sessions(), 1);
    // The old session's end, reported late, does not touch the new one.
    r.handle_closed(first.id);
    assert_eq!(
        r.handle_datagram(t0, caller, &data(NODE, 1)),
        Routed::ToSession(second.id)
    );
    // A restart with a bad cookie is dropped and leaves the session alone.
    r.handle_established(second.id);
    assert_eq!(
        r.handle_datagram(t0, caller, &conclusion(CALLER + 2, cookie ^ 1)),
        Routed::Drop("bad_cookie")
    );
    assert_eq!(
        r.handle_datagram(t0, caller, &data(NODE, 2)),
        Routed::ToSession(second.id)
    );
}

#[test]
fn wrong_cookies_and_spoofed_conclusions_are_dropped() {
    let t0 = Instant::now();
    let mut r = router(t0);
    let caller = peer(40000);
    let cookie = cookie_of(&r.handle_datagram(t0, caller, &induction(CALLER)));

    assert_eq!(
        r.handle_datagram(t0, caller, &conclusion(CALLER, cookie.wrapping_add(1))),
        Routed::Drop("bad_cookie")
    );
    // A cookie is bound to the address and port it was given to.
    assert_eq!(
        r.handle_datagram(t0, peer(40001), &conclusion(CALLER, cookie)),
        Routed::Drop("bad_cookie")
    );
    assert_eq!(
        r.handle_datagram(
            t0,
            SocketAddr::from(([10, 0, 0, 1], 40000)),
            &conclusion(CALLER, cookie)
        ),
        Routed::Drop("bad_cookie")
    );
    // Cookies age: valid in their 60 s bucket and the next, not after.
    let later = t0 + Duration::from_secs(2 * srt_relay::COOKIE_BUCKET_SECS);
    assert_eq!(
        r.handle_datagram(later, caller, &conclusion(CALLER, cookie)),
        Routed::Drop("bad_cookie")
    );
    assert!(matches!(
        r.handle_datagram(
            t0 + Duration::from_secs(59),
            caller,
            &conclusion(CALLER, cookie)
        ),
        Routed::Place(_)
    ));
    assert_eq!(r.sessions(), 1);
}

#[test]
fn datagrams_without_a_session_never_reach_a_node() {
    let t0 = Instant::now();
    let mut r = router(t0);
    let caller = peer(40000);
    assert_eq!(
        r.handle_datagram(t0, caller, &data(NODE, 1)),
        Routed::Drop("no_session")
    );
    // A keepalive, an HSv4 conclusion, a truncated handshake, nothing at all.
    let mut keepalive = vec![0u8; 16];
    put16(&mut keepalive, 0, 0x8001);
    let cookie = cookie_of(&r.handle_datagram(t0, caller, &induction(CALLER)));
    let mut v4 = conclusion(CALLER, cookie);
    put32(&mut v4, 16, 4);
    for pkt in [
        keepalive,
        v4,
        conclusion(CALLER, cookie)[..40].to_vec(),
        vec![],
    ] {
        assert!(
            matches!(r.handle_datagram(t0, caller, &pkt), Routed::Drop(_)),
            "{pkt:?}"
        );
    }
    assert_eq!(r.sessions(), 0);
}

#[test]
fn random_bytes_never_panic_and_never_place() {
    let t0 = Instant::now();
    let mut r = router(t0);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let valid = conclusion(CALLER, 0);
    for i in 0..20_000u64 {
        let mut pkt: Vec<u8> = if i % 3 == 0 {
            // Mutations of a conclusion reach deeper than noise.
            let mut p = valid.clone();
            for _ in 0..(rnd() % 4 + 1) {
                let at = (rnd() as usize) % p.len();
                p[at] = rnd() as u8;
            }
            p.truncate((rnd() as usize) % (p.len() + 1));
            p
        } else {
            (0..rnd() % 120).map(|_| rnd() as u8).collect()
        };
        if i % 5 == 0 && pkt.len() >= 2 {
            pkt[0] = 0x80;
            pkt[1] = 0;
        }
        let from = peer(40000 + (rnd() % 8) as u16);
        match r.handle_datagram(t0 + MS * (i as u32), from, &pkt) {
            Routed::Place(n) => panic!("placed from noise: {n:?}"),
            Routed::ToSession(_) => panic!("no session exists"),
            Routed::Reply(_) | Routed::Drop(_) | Routed::Refuse { .. } => {}
        }
    }
    assert_eq!(r.sessions(), 0);
}

#[test]
fn draining_refuses_new_callers_with_the_overload_code_and_keeps_live_ones() {
    let t0 = Instant::now();
    let mut r = router(t0);
    let live = handshake(&mut r, peer(40000), CALLER, t0);
    r.handle_established(live.id);
    r.stop_accepting();

    let cookie = cookie_of(&r.handle_datagram(t0, peer(40001), &induction(CALLER)));
    let Routed::Refuse {
        reply: Some(rej),
        why: Refusal::Draining,
    } = r.handle_datagram(t0, peer(40001), &conclusion(CALLER, cookie))
    else {
        panic!("not refused")
    };
    // libsrt's SRT_REJX_OVERLOAD (1402), 1000 + reason on the wire, to the caller's socket.
    assert_eq!(be32_at(&rej, 36), 2402);
    assert_eq!(be32_at(&rej, 12), CALLER);
    assert_eq!(
        r.handle_datagram(t0, peer(40000), &data(NODE, 1)),
        Routed::ToSession(live.id)
    );
}

#[test]
fn the_session_cap_refuses_silently_until_a_session_ends() {
    let t0 = Instant::now();
    let mut r = Router::new([7; 32], 2, t0);
    let a = handshake(&mut r, peer(1), CALLER, t0);
    let b = handshake(&mut r, peer(2), CALLER, t0);
    let cookie = cookie_of(&r.handle_datagram(t0, peer(3), &induction(CALLER)));
    assert_eq!(
        r.handle_datagram(t0, peer(3), &conclusion(CALLER, cookie)),
        Routed::Refuse {
            reply: None,
            why: Refusal::TooManySessions
        }
    );
    // A restart of a live caller still works at the cap (it replaces its own session).
    r.handle_established(a.id);
    let c1 = cookie_of(&r.handle_datagram(t0, peer(1), &induction(CALLER + 1)));
    assert!(matches!(
        r.handle_datagram(t0, peer(1), &conclusion(CALLER + 1, c1)),
        Routed::Place(NewSession { replaces: Some(id), .. }) if id == a.id
    ));
    r.handle_closed(b.id);
    assert!(matches!(
        r.handle_datagram(t0, peer(3), &conclusion(CALLER, cookie)),
        Routed::Place(_)
    ));
}

#[test]
fn an_idle_session_ends_after_the_idle_timeout_and_traffic_keeps_it_alive() {
    let t0 = Instant::now();
    let mut r = router(t0);
    let new = handshake(&mut r, peer(40000), CALLER, t0);
    let (mut s, _) = establish(&new, t0);
    // Established: nothing to do until the idle deadline, counted from the last datagram.
    let last = t0 + 2 * MS;
    assert_eq!(s.poll_timeout(), last + SESSION_IDLE_TIMEOUT);
    assert_eq!(
        s.handle_timeout(last + SESSION_IDLE_TIMEOUT - MS),
        Tick::Steps(vec![])
    );
    // A datagram either way moves the deadline.
    let t1 = last + Duration::from_secs(9);
    s.handle_caller(&data(NODE, 1), t1);
    assert_eq!(s.poll_timeout(), t1 + SESSION_IDLE_TIMEOUT);
    let t2 = t1 + Duration::from_secs(9);
    s.handle_node(&data(CALLER, 1), t2);
    assert_eq!(
        s.handle_timeout(t2 + Duration::from_secs(9)),
        Tick::Steps(vec![])
    );
    // Even a datagram the guard drops shows the caller is there.
    let t3 = t2 + Duration::from_secs(9);
    assert!(s.handle_caller(&[0x80, 0], t3).is_empty());
    assert_eq!(s.poll_timeout(), t3 + SESSION_IDLE_TIMEOUT);
    // Then silence.
    assert_eq!(s.handle_timeout(s.poll_timeout()), Tick::Idle);
}

/// Drive `s` by its own timeouts until it asks for nothing before `until`; collects steps.
fn run_timers(s: &mut Session, mut now: Instant, until: Instant) -> (Vec<(Instant, Step)>, bool) {
    let mut out = Vec::new();
    while s.poll_timeout() <= until {
        now = now.max(s.poll_timeout());
        match s.handle_timeout(now) {
            Tick::Steps(steps) => {
                let done = steps.iter().any(|x| matches!(x, Step::Rejected(_)));
                out.extend(steps.into_iter().map(|x| (now, x)));
                if done {
                    return (out, false);
                }
            }
            Tick::Idle => return (out, true),
        }
    }
    (out, false)
}

#[test]
fn a_silent_node_gets_retransmissions_then_the_caller_a_bad_gateway_code() {
    let t0 = Instant::now();
    let mut r = router(t0);
    let new = handshake(&mut r, peer(40000), CALLER, t0);
    let (mut s, first) = Session::start(new.conclusion.clone(), None, t0);
    let (steps, idle) = run_timers(&mut s, t0, t0 + Duration::from_secs(60));
    assert!(!idle, "the handshake gives up before the idle timeout");
    let resent: Vec<Instant> = steps
        .iter()
        .filter(|(_, x)| *x == Step::ToNode(first.clone()))
        .map(|(t, _)| *t)
        .collect();
    // Every 250 ms (libsrt's pace) until the 3 s handshake timeout.
    assert_eq!(resent.len(), 11, "{resent:?}");
    assert!(resent
        .windows(2)
        .all(|w| w[1] - w[0] == srt_relay::HANDSHAKE_RETRY));
    let (at, last) = steps.last().unwrap();
    assert_eq!(*last, Step::Rejected(REJECT_BAD_GATEWAY));
    assert_eq!(*at, t0 + srt_relay::HANDSHAKE_TIMEOUT);
    // The router answers the caller from the session's conclusion.
    let rej = srt_relay::rejection(s.conclusion(), REJECT_BAD_GATEWAY).unwrap();
    assert_eq!(be32_at(&rej, 36), REJECT_BAD_GATEWAY);
}

#[test]
fn a_stream_id_too_long_for_the_node_is_refused_at_once() {
    let t0 = Instant::now();
    let mut r = router(t0);
    let new = handshake(&mut r, peer(40000), CALLER, t0);
    let (mut s, _) = Session::start(new.conclusion, Some("x".repeat(513)), t0);
    assert_eq!(s.poll_timeout(), t0);
    assert_eq!(
        s.handle_timeout(t0),
        Tick::Steps(vec![Step::Rejected(REJECT_BAD_REQUEST)])
    );
}

/// The whole path on a lossy virtual network: caller ⇄ router/session ⇄ node, each link
/// dropping datagrams by a fixed pattern; the handshake still completes by retransmission.
#[test]
fn a_lossy_handshake_completes_by_retransmission() {
    let t0 = Instant::now();
    let mut r = router(t0);
    let caller = peer(40000);
    // The caller's own retransmissions are what libsrt does; here one induction is lost first.
    let mut now = t0;
    let cookie = loop {
        now += 250 * MS;
        if now == t0 + 250 * MS {
            continue; // lost on the way
        }
        break cookie_of(&r.handle_datagram(now, caller, &induction(CALLER)));
    };
    let Routed::Place(new) = r.handle_datagram(now, caller, &conclusion(CALLER, cookie)) else {
        panic!("not placed")
    };
    let (mut s, mut to_node) = Session::start(new.conclusion.clone(), None, now);
    // The node loses every other datagram we send it, and answers the rest.
    let mut sent = 0;
    let mut established = false;
    let mut to_caller = Vec::new();
    let deadline = now + srt_relay::HANDSHAKE_TIMEOUT;
    while !established && now < deadline {
        sent += 1;
        let answer = if sent % 2 == 1 {
            None
        } else if be32_at(&to_node, 36) == HS_INDUCTION {
            Some(node_induction_answer(0xC00C1E))
        } else {
            Some(node_conclusion_answer())
        };
        let steps = match answer {
            Some(a) => s.handle_node(&a, now + 5 * MS),
            None => {
                now = s.poll_timeout();
                match s.handle_timeout(now) {
                    Tick::Steps(steps) => steps,
                    Tick::Idle => panic!("idle during the handshake"),
                }
            }
        };
        for step in steps {
            match step {
                Step::ToNode(p) => to_node = p,
                Step::ToCaller(p) => to_caller.push(p),
                Step::Established => established = true,
                Step::Rejected(code) => panic!("rejected {code}"),
                Step::Nothing => {}
            }
        }
    }
    assert!(
        established,
        "no handshake within {:?}",
        srt_relay::HANDSHAKE_TIMEOUT
    );
    assert_eq!(to_caller, vec![node_conclusion_answer()]);
    r.handle_established(new.id);
    assert_eq!(
        r.handle_datagram(now, caller, &data(NODE, 1)),
        Routed::ToSession(new.id)
    );
}

/// The driver's clock is tokio's: on paused time a session's deadlines are reached by
/// advancing the clock, not by waiting.
#[tokio::test(start_paused = true)]
async fn session_deadlines_follow_tokios_clock() {
    let t0 = Instant::now();
    let mut r = router(t0);
    let new = handshake(&mut r, peer(40000), CALLER, t0);
    let (mut s, _) = establish(&new, Instant::now());
    tokio::time::sleep_until(s.poll_timeout()).await;
    assert_eq!(s.handle_timeout(Instant::now()), Tick::Idle);
    assert!(Instant::now() - t0 >= SESSION_IDLE_TIMEOUT);
}

#[test]
fn spoofed_handshakes_from_a_live_callers_address_leave_its_session_alone() {
    let t0 = Instant::now();
    let mut r = router(t0);
    let caller = peer(40000);
    let new = handshake(&mut r, caller, CALLER, t0);
    let (_s, _) = establish(&new, t0);
    r.handle_established(new.id);
    // A blind spoofer sends the caller's address a new induction: answered statelessly, the
    // session untouched; its conclusion with a new socket ID and a guessed cookie: dropped.
    for socket in [CALLER + 1, 0x5000_0000] {
        assert!(matches!(
            r.handle_datagram(t0 + MS, caller, &induction(socket)),
            Routed::Reply(_)
        ));
        for cookie in [0, 1, 0xDEAD_BEEF] {
            assert_eq!(
                r.handle_datagram(t0 + MS, caller, &conclusion(socket, cookie)),
                Routed::Drop("bad_cookie")
            );
        }
    }
    assert_eq!(r.sessions(), 1);
    assert_eq!(
        r.handle_datagram(t0 + 2 * MS, caller, &data(NODE, 1)),
        Routed::ToSession(new.id),
        "the live session still gets the caller's data"
    );
    // Inductions from thousands of addresses open nothing.
    for port in 0..5000u16 {
        let _ = r.handle_datagram(t0, peer(port), &induction(u32::from(port) + 1));
    }
    assert_eq!(r.sessions(), 1);
}

#[test]
fn route_hands_datagrams_to_live_sessions_and_reroutes_from_ended_ones() {
    let t0 = Instant::now();
    let mut r = router(t0);
    let caller = peer(40000);
    let new = handshake(&mut r, caller, CALLER, t0);
    // The session takes it: nothing left to do.
    let mut got = Vec::new();
    assert_eq!(
        r.route(t0, caller, &data(NODE, 1), |id| {
            got.push(id);
            true
        }),
        None
    );
    assert_eq!(got, vec![new.id]);
    // Its task ended before the driver heard: the session is forgotten and a fresh
    // induction from the address is answered, not lost.
    let routed = r.route(t0, caller, &induction(CALLER + 1), |_| false);
    assert!(matches!(routed, Some(Routed::Reply(_))), "{routed:?}");
    let routed = r.route(t0, caller, &data(NODE, 2), |_| false);
    assert_eq!(routed, Some(Routed::Drop("no_session")));
    assert_eq!(r.sessions(), 0);
}
