//! Unit tests of `client_session`: the report schedule, the pause drill and reservation
//! answers, on a virtual clock (kept beside it; compiled only for tests).

use std::sync::Mutex;

use super::*;
use crate::proto::{encode_frame, Report};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// The report instants of a session driven by its own timeouts from `from` to `to`.
fn reports(s: &mut BalancerSession, from: Instant, to: Instant) -> Vec<Duration> {
    let mut out = Vec::new();
    let mut now = from;
    loop {
        now = now.max(s.poll_timeout());
        if now > to {
            return out;
        }
        if s.handle_timeout(now) {
            out.push(now - from);
        }
    }
}

#[test]
fn reports_at_once_then_every_interval() {
    let t0 = Instant::now();
    let mut s = BalancerSession::new(S, t0, None);
    assert_eq!(s.poll_timeout(), t0);
    assert_eq!(
        reports(&mut s, t0, t0 + 3 * S + 500 * MS),
        vec![Duration::ZERO, S, 2 * S, 3 * S]
    );
    // Early timer wake-ups do nothing.
    assert!(!s.handle_timeout(t0 + 3 * S + 600 * MS));
}

#[test]
fn a_wake_reports_at_once_and_restarts_the_interval() {
    let t0 = Instant::now();
    let mut s = BalancerSession::new(S, t0, None);
    assert!(s.handle_timeout(t0));
    assert!(s.handle_wake(t0 + 300 * MS, None));
    assert_eq!(s.poll_timeout(), t0 + 1300 * MS);
    assert!(!s.handle_timeout(t0 + S));
    assert!(s.handle_timeout(t0 + 1300 * MS));
}

#[test]
fn the_pause_drill_stops_reports_until_it_ends() {
    let t0 = Instant::now();
    let mut s = BalancerSession::new(S, t0, None);
    assert!(s.handle_timeout(t0));
    // Pause for 3.5 s: no report on wake, on timer or on report_now.
    let until = pause_until(t0 + 200 * MS, 3500 * MS);
    assert!(!s.handle_wake(t0 + 200 * MS, Some(until)));
    assert!(s.paused(t0 + S));
    assert_eq!(s.poll_timeout(), until);
    assert!(!s.handle_timeout(t0 + 2 * S));
    assert!(
        !s.handle_wake(t0 + 2 * S, Some(until)),
        "report_now while paused"
    );
    // It ends: a report at once, then the interval again.
    assert_eq!(
        reports(&mut s, t0 + 2 * S, t0 + 6 * S),
        vec![1700 * MS, 2700 * MS, 3700 * MS]
    );
    assert!(!s.paused(until));
}

#[test]
fn a_pause_can_be_ended_early_or_start_before_the_session() {
    let t0 = Instant::now();
    let until = pause_until(t0, 10 * S);
    let mut s = BalancerSession::new(S, t0, Some(until));
    assert!(!s.handle_timeout(t0), "no first report while paused");
    assert_eq!(s.poll_timeout(), until);
    // pause(ZERO) ends it: the wake reports at once.
    assert!(s.handle_wake(t0 + 2 * S, Some(pause_until(t0 + 2 * S, Duration::ZERO))));
    assert_eq!(s.poll_timeout(), t0 + 3 * S);
    // A pause already over when the session starts is no pause.
    let s = BalancerSession::new(S, t0 + S, Some(t0));
    assert!(!s.paused(t0 + S));
    // A pause too long for Instant lasts "forever", without overflow.
    assert!(pause_until(t0, Duration::MAX) > t0 + 300 * 24 * 3600 * S);
}

#[derive(Default)]
struct Node {
    asked: Mutex<Vec<Reservation>>,
    cancelled: Mutex<Vec<u64>>,
}

impl NodeControl for Node {
    fn report(&self) -> Report {
        unreachable!("not used by answer")
    }
    fn reserve(&self, r: Reservation) -> crate::client::ReserveFuture {
        let units = r.milli_units;
        let wrong_key = r.credentials.as_ref().is_some_and(|c| c.key != "good");
        self.asked.lock().unwrap().push(r);
        crate::client::decided(if wrong_key {
            Err(Refused {
                kind: crate::proto::RefusalKind::Credentials,
                reason: "stream key refused".into(),
            })
        } else if units > 1000 {
            Err(Refused::capacity(format!("no room for {units}")))
        } else {
            Ok(())
        })
    }
    fn cancel(&self, id: u64) {
        self.cancelled.lock().unwrap().push(id);
    }
}

fn reserve(id: u64, milli_units: u32, ttl_ms: u64) -> ToNode {
    ToNode::Reserve {
        id,
        milli_units,
        stream_ref: Some("ref".into()),
        ttl_ms,
        continuation: Some(serde_json::json!({"n": 1})),
        credentials: None,
    }
}

fn answer_now(msg: ToNode, node: &Node) -> Handled {
    futures_lite(answer(msg, node).decided())
}

/// The fake node decides at once, so one poll finishes the future.
fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn reservations_are_granted_refused_and_cancelled() {
    let node = Node::default();
    let granted = answer_now(reserve(1, 500, 3000), &node);
    assert_eq!(
        granted,
        Handled::Reserved {
            id: 1,
            answer: Ok(())
        }
    );
    assert_eq!(
        granted.reply(),
        Some(ToBalancer::Reserved {
            id: 1,
            ok: true,
            reason: String::new(),
            kind: Default::default(),
        })
    );
    let refused = answer_now(reserve(2, 2500, 3000), &node);
    assert_eq!(
        refused.reply(),
        Some(ToBalancer::Reserved {
            id: 2,
            ok: false,
            reason: "no room for 2500".into(),
            kind: crate::proto::RefusalKind::Capacity,
        })
    );
    let mut wrong = reserve(3, 10, 3000);
    if let ToNode::Reserve { credentials, .. } = &mut wrong {
        *credentials = Some(crate::proto::Credentials {
            key: "bad".into(),
            client_addr: "192.0.2.7:1".parse().unwrap(),
            protocol: "rtmp".into(),
        });
    }
    assert_eq!(
        answer_now(wrong, &node).reply(),
        Some(ToBalancer::Reserved {
            id: 3,
            ok: false,
            reason: "stream key refused".into(),
            kind: crate::proto::RefusalKind::Credentials,
        })
    );
    let cancelled = answer_now(ToNode::Cancel { id: 1 }, &node);
    assert_eq!(cancelled, Handled::Cancelled { id: 1 });
    assert_eq!(cancelled.reply(), None);
    let asked = node.asked.lock().unwrap();
    assert_eq!(
        asked[0],
        Reservation {
            id: 1,
            milli_units: 500,
            stream_ref: Some("ref".into()),
            ttl: 3000 * MS,
            continuation: Some(serde_json::json!({"n": 1})),
            credentials: None,
        }
    );
    assert_eq!(*node.cancelled.lock().unwrap(), vec![1]);
}

#[test]
fn reservation_ttls_are_capped() {
    let node = Node::default();
    answer_now(reserve(1, 1, 3_600_000), &node);
    answer_now(reserve(2, 1, u64::MAX), &node);
    let asked = node.asked.lock().unwrap();
    assert_eq!(asked[0].ttl, crate::MAX_RESERVE_TTL);
    assert_eq!(asked[1].ttl, crate::MAX_RESERVE_TTL);
    // And the request carries the TTL it was given, in milliseconds.
    let r = Reservation {
        id: 3,
        milli_units: 1,
        stream_ref: None,
        ttl: 2500 * MS,
        continuation: None,
        credentials: None,
    };
    assert!(matches!(
        r.to_message(),
        ToNode::Reserve { ttl_ms: 2500, .. }
    ));
    assert_eq!(Reservation::from_message(r.to_message()), Some(r));
    assert_eq!(Reservation::from_message(ToNode::Cancel { id: 1 }), None);
}

#[test]
fn messages_decode_across_reads_and_bad_bytes_end_the_session() {
    let t0 = Instant::now();
    let mut s = BalancerSession::new(S, t0, None);
    let mut wire = encode_frame(&reserve(1, 1, 1)).unwrap();
    wire.extend(encode_frame(&ToNode::Cancel { id: 1 }).unwrap());
    let mut got = Vec::new();
    for b in &wire {
        s.handle_bytes(std::slice::from_ref(b));
        while let Some(m) = s.poll_message().unwrap() {
            got.push(m);
        }
    }
    assert_eq!(got, vec![reserve(1, 1, 1), ToNode::Cancel { id: 1 }]);
    s.handle_bytes(&[0, 0, 0, 2, b'{', b'x']);
    assert!(s.poll_message().is_err());
}

/// On tokio's paused clock, the driver's way of waiting (sleep until `poll_timeout`) reports
/// on schedule without real time passing.
#[tokio::test(start_paused = true)]
async fn the_schedule_follows_tokios_clock() {
    let t0 = Instant::now();
    let mut s = BalancerSession::new(5 * S, t0, None);
    let mut at = Vec::new();
    while at.len() < 4 {
        tokio::time::sleep_until(s.poll_timeout()).await;
        if s.handle_timeout(Instant::now()) {
            at.push(Instant::now() - t0);
        }
    }
    assert_eq!(at, vec![Duration::ZERO, 5 * S, 10 * S, 15 * S]);
}
