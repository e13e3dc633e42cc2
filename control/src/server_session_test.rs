//! Unit tests of `server_session`: whole node sessions, hostile ones included, on a virtual
//! clock (kept beside it; compiled only for tests).

use super::*;
use crate::proto::{encode_frame, MAX_FRAME};

fn report(id: &str, seq: u64) -> Report {
    Report {
        seq,
        capacity_milli_units: 1,
        stream_milli_units: 1,
        ..Report::empty(id)
    }
}

fn frame(m: &ToBalancer) -> Vec<u8> {
    encode_frame(m).unwrap()
}

fn all(s: &mut NodeSession) -> Result<Vec<Inbound>, Kick> {
    let mut out = Vec::new();
    while let Some(m) = s.poll_inbound()? {
        out.push(m);
    }
    Ok(out)
}

#[test]
fn a_whole_session_reports_and_answers_in_order() {
    let t0 = Instant::now();
    let mut s = NodeSession::new("n1", t0);
    assert_eq!(s.poll_timeout(), Some(t0 + HELLO_TIMEOUT));
    // Frames split anywhere: nothing until a whole one is there.
    let mut wire = frame(&ToBalancer::Report(report("n1", 1)));
    wire.extend(frame(&ToBalancer::Reserved {
        id: 7,
        ok: false,
        reason: "full".into(),
        kind: Default::default(),
    }));
    wire.extend(frame(&ToBalancer::Report(report("n1", 2))));
    wire.extend(frame(&ToBalancer::Reserved {
        id: 8,
        ok: true,
        reason: String::new(),
        kind: Default::default(),
    }));
    let mut got = Vec::new();
    for chunk in wire.chunks(7) {
        s.handle_bytes(chunk);
        got.extend(all(&mut s).unwrap());
    }
    assert_eq!(
        got,
        vec![
            Inbound::Report {
                report: report("n1", 1),
                first: true
            },
            Inbound::Answer {
                id: 7,
                answer: Err(crate::proto::Refused::capacity("full"))
            },
            Inbound::Report {
                report: report("n1", 2),
                first: false
            },
            Inbound::Answer {
                id: 8,
                answer: Ok(())
            },
        ]
    );
    assert!(s.identified());
    // Identified: no deadline any more, however long the session lasts.
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(s.handle_timeout(t0 + HELLO_TIMEOUT * 100), Ok(()));
}

#[test]
fn a_node_that_never_reports_is_dropped_at_the_hello_deadline() {
    let t0 = Instant::now();
    let mut s = NodeSession::new("n1", t0);
    assert_eq!(
        s.handle_timeout(t0 + HELLO_TIMEOUT - Duration::from_millis(1)),
        Ok(())
    );
    // Half a frame does not count.
    let f = frame(&ToBalancer::Report(report("n1", 1)));
    s.handle_bytes(&f[..f.len() / 2]);
    assert_eq!(all(&mut s), Ok(vec![]));
    assert_eq!(
        s.handle_timeout(t0 + HELLO_TIMEOUT),
        Err(Kick {
            code: CloseCode::Timeout,
            reason: "no report in time"
        })
    );
}

#[test]
fn a_report_naming_another_node_is_an_identity_kick() {
    let mut s = NodeSession::new("n1", Instant::now());
    s.handle_bytes(&frame(&ToBalancer::Report(report("n1", 1))));
    s.handle_bytes(&frame(&ToBalancer::Report(report("n2", 2))));
    // The good report before it still counts; then the session ends.
    assert!(matches!(
        s.poll_inbound(),
        Ok(Some(Inbound::Report { first: true, .. }))
    ));
    assert_eq!(
        s.poll_inbound(),
        Err(Kick {
            code: CloseCode::Identity,
            reason: "node id does not match certificate"
        })
    );
}

#[test]
fn an_answer_before_the_first_report_is_a_protocol_kick() {
    let mut s = NodeSession::new("n1", Instant::now());
    s.handle_bytes(&frame(&ToBalancer::Reserved {
        id: 1,
        ok: true,
        reason: String::new(),
        kind: Default::default(),
    }));
    assert_eq!(
        s.poll_inbound(),
        Err(Kick {
            code: CloseCode::Protocol,
            reason: "first message must be a report"
        })
    );
}

#[test]
fn bad_frames_are_protocol_kicks() {
    for bad in [
        ((MAX_FRAME as u32) + 1).to_be_bytes().to_vec(),
        vec![0, 0, 0, 3, b'{', b'{', b'{'],
        [&[0, 0, 0, 2][..], &b"{}"[..]].concat(),
    ] {
        let mut s = NodeSession::new("n1", Instant::now());
        s.handle_bytes(&frame(&ToBalancer::Report(report("n1", 1))));
        s.handle_bytes(&bad);
        assert!(matches!(s.poll_inbound(), Ok(Some(Inbound::Report { .. }))));
        assert_eq!(
            s.poll_inbound(),
            Err(Kick {
                code: CloseCode::Protocol,
                reason: "bad frame"
            }),
            "{bad:?}"
        );
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let valid = frame(&ToBalancer::Report(report("n1", 1)));
    for _ in 0..3000 {
        let mut s = NodeSession::new("n1", Instant::now());
        let mut bytes = valid.clone();
        for _ in 0..(rnd() % 3 + 1) {
            let at = (rnd() as usize) % bytes.len();
            bytes[at] = rnd() as u8;
        }
        s.handle_bytes(&bytes);
        for _ in 0..4 {
            match s.poll_inbound() {
                Ok(Some(Inbound::Report { report, .. })) => assert_eq!(report.node_id, "n1"),
                Ok(Some(Inbound::Answer { .. })) => panic!("no answer before a report"),
                Ok(None) | Err(_) => break,
            }
        }
    }
}

#[test]
fn close_codes_on_the_wire() {
    let codes = [
        (CloseCode::Shutdown, 0),
        (CloseCode::Protocol, 1),
        (CloseCode::Identity, 2),
        (CloseCode::Replaced, 3),
        (CloseCode::Timeout, 4),
    ];
    for (c, n) in codes {
        assert_eq!(c.as_u32(), n);
    }
}
