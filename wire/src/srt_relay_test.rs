//! Unit tests of `srt_relay` (kept beside it; compiled only for tests).

use super::test_packets::hs;
use super::*;
use srt_protocol::packet::{ControlTypes, Packet, RejectReason, ServerRejectReason, ShakeType};

const CALLER: u32 = 0x0123_4567;
const NODE: u32 = 0x0765_4321;

fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

fn hsreq() -> (u16, Vec<u8>) {
    // SRT version 1.3.0, flags (TSBPD snd/rcv, TLPKTDROP, NAKREPORT, REXMITFLG), 120 ms both ways.
    let mut b = vec![0, 1, 3, 0, 0, 0, 0, 0xBF, 0, 120, 0, 120];
    b.truncate(12);
    (1, b)
}

fn conclusion(cookie: u32, sid: Option<&str>) -> Vec<u8> {
    let mut exts = vec![hsreq()];
    let mut flags = 1;
    if let Some(s) = sid {
        exts.push((EXT_SID, encode_sid(s)));
        flags |= EXT_FLAG_CONFIG;
    }
    hs(5, flags, HS_CONCLUSION, CALLER, cookie, 0, &exts)
}

fn parse(pkt: &[u8]) -> Packet {
    Packet::parse(&mut std::io::Cursor::new(pkt), false).expect("srt-protocol parses it")
}

fn shake(pkt: &[u8]) -> srt_protocol::packet::HandshakeControlInfo {
    match parse(pkt) {
        Packet::Control(c) => match c.control_type {
            ControlTypes::Handshake(h) => h,
            other => panic!("not a handshake: {other:?}"),
        },
        other => panic!("not control: {other:?}"),
    }
}

#[test]
fn cookies_are_valid_for_this_and_the_previous_bucket_only() {
    let c = Cookies::new([9; 32]);
    let t = 1_000_000 * COOKIE_BUCKET_SECS + 5;
    let k = c.make(peer(), t);
    assert!(c.check(peer(), k, t));
    assert!(
        c.check(peer(), k, t + COOKIE_BUCKET_SECS - 6),
        "same bucket"
    );
    assert!(c.check(peer(), k, t + COOKIE_BUCKET_SECS), "next bucket");
    assert!(
        !c.check(peer(), k, t + 2 * COOKIE_BUCKET_SECS),
        "two buckets later"
    );
    assert!(
        !c.check(peer(), k, t - COOKIE_BUCKET_SECS),
        "from the future"
    );
    assert!(
        !c.check("127.0.0.1:40001".parse().unwrap(), k, t),
        "other port"
    );
    assert!(
        !c.check("127.0.0.2:40000".parse().unwrap(), k, t),
        "other ip"
    );
    assert!(
        !c.check("[::1]:40000".parse().unwrap(), k, t),
        "other family"
    );
    assert!(!Cookies::new([8; 32]).check(peer(), k, t), "other secret");
    assert!(!c.check(peer(), k ^ 1, t));
    // The first buckets do not underflow.
    assert!(c.check(peer(), c.make(peer(), 0), 0));
    assert_ne!(c.make(peer(), t), c.make(peer(), t + COOKIE_BUCKET_SECS));
}

#[test]
fn induction_answer_layout() {
    let c = Cookies::new([1; 32]);
    // As libsrt and srt-tokio send it: HSv4, UDT_DGRAM, cookie 0.
    let ind = hs(4, UDT_DGRAM, HS_INDUCTION, CALLER, 0, 0, &[]);
    let Fresh::Reply(r) = on_fresh(&ind, peer(), &c, 100) else {
        panic!("no reply")
    };
    assert_eq!(r.len(), 64);
    assert_eq!(be16(&r, 0), Some(0x8000));
    assert_eq!(be32(&r, OFF_TIMESTAMP), Some(1234));
    assert_eq!(be32(&r, OFF_DEST), Some(CALLER));
    assert_eq!(be32(&r, OFF_VERSION), Some(5));
    assert_eq!(be16(&r, OFF_ENC), Some(0));
    assert_eq!(be16(&r, OFF_EXT), Some(0x4A17));
    assert_eq!(
        (be32(&r, OFF_ISN), be32(&r, OFF_MTU), be32(&r, OFF_FLOW)),
        (Some(777), Some(1500), Some(8192))
    );
    assert_eq!(be32(&r, OFF_TYPE), Some(1));
    assert_eq!(be32(&r, OFF_COOKIE), Some(c.make(peer(), 100)));
    assert_ne!(be32(&r, OFF_SOCKET), Some(0));
    assert_eq!(
        &r[OFF_PEER_IP..HS_LEN],
        &[1, 0, 0, 127, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    // srt-tokio reads it as an HSv5 induction with our cookie and the caller's address.
    let h = shake(&r);
    assert_eq!(h.shake_type, ShakeType::Induction);
    assert_eq!(h.info.version(), 5);
    assert_eq!(h.syn_cookie as u32, c.make(peer(), 100));
    assert_eq!(h.peer_addr, IpAddr::from([127, 0, 0, 1]));
    // An induction with extensions is answered from its cleaned copy.
    let dirty = hs(
        5,
        0,
        HS_INDUCTION,
        CALLER,
        0,
        0,
        &[(EXT_SID, b"abcd".to_vec())],
    );
    assert_eq!(on_fresh(&dirty, peer(), &c, 100), Fresh::Reply(r));
}

#[test]
fn conclusions_need_our_cookie_and_carry_the_stream_id() {
    let c = Cookies::new([1; 32]);
    let k = c.make(peer(), 100);
    let sid = "#!::r=live/KEY,m=publish";
    let good = conclusion(k, Some(sid));
    assert_eq!(
        on_fresh(&good, peer(), &c, 130),
        Fresh::Place {
            stream_id: sid.into(),
            conclusion: good.clone(),
            caller_socket_id: CALLER
        }
    );
    assert_eq!(
        on_fresh(&conclusion(k ^ 0x10, Some(sid)), peer(), &c, 130),
        Fresh::Drop("bad_cookie")
    );
    assert_eq!(
        on_fresh(&good, "10.0.0.1:40000".parse().unwrap(), &c, 130),
        Fresh::Drop("bad_cookie")
    );
    assert_eq!(
        on_fresh(&good, peer(), &c, 100 + 3 * COOKIE_BUCKET_SECS),
        Fresh::Drop("bad_cookie")
    );
    // No stream ID: placed with an empty one (the driver refuses it with a readable code).
    assert!(
        matches!(on_fresh(&conclusion(k, None), peer(), &c, 100), Fresh::Place { stream_id, .. } if stream_id.is_empty())
    );
    // Not UTF-8.
    let bad = hs(
        5,
        5,
        HS_CONCLUSION,
        CALLER,
        k,
        0,
        &[hsreq(), (EXT_SID, vec![0xff, 0xfe, 0x41, 0x41])],
    );
    assert_eq!(
        on_fresh(&bad, peer(), &c, 100),
        Fresh::Drop("bad_stream_id")
    );
    // HSv4 conclusion, agreement, data and control without a session, guard drops.
    assert_eq!(
        on_fresh(&hs(4, 2, HS_CONCLUSION, CALLER, k, 0, &[]), peer(), &c, 100),
        Fresh::Drop("hsv4_conclusion")
    );
    assert_eq!(
        on_fresh(
            &hs(5, 0, HS_CONCLUSION - 1, CALLER, k, 0, &[]),
            peer(),
            &c,
            100
        ),
        Fresh::Drop("not_conclusion")
    );
    assert_eq!(
        on_fresh(&[0u8; 100], peer(), &c, 100),
        Fresh::Drop("no_session")
    );
    let mut keepalive = vec![0u8; 16];
    keepalive[0..2].copy_from_slice(&0x8001u16.to_be_bytes());
    assert_eq!(
        on_fresh(&keepalive, peer(), &c, 100),
        Fresh::Drop("no_session")
    );
    let mut cgwarn = vec![0u8; 16];
    cgwarn[0..2].copy_from_slice(&0x8004u16.to_be_bytes());
    assert_eq!(
        on_fresh(&cgwarn, peer(), &c, 100),
        Fresh::Drop("unsupported_control")
    );
    assert_eq!(
        on_fresh(&good[..70], peer(), &c, 100),
        Fresh::Drop("bad_handshake")
    );
    // An unknown extension (congestion control) is stripped before we keep the conclusion.
    let dirty = hs(
        5,
        5,
        HS_CONCLUSION,
        CALLER,
        k,
        0,
        &[hsreq(), (6, b"evil".to_vec()), (EXT_SID, encode_sid(sid))],
    );
    let clean = hs(
        5,
        5,
        HS_CONCLUSION,
        CALLER,
        k,
        0,
        &[hsreq(), (EXT_SID, encode_sid(sid))],
    );
    assert!(
        matches!(on_fresh(&dirty, peer(), &c, 100), Fresh::Place { conclusion, .. } if conclusion == clean)
    );
}

#[test]
fn stream_id_is_stored_as_little_endian_words() {
    // From srt-protocol's own test vector: "abcdefghij" in three words.
    let body = [
        0x64, 0x63, 0x62, 0x61, 0x68, 0x67, 0x66, 0x65, 0x00, 0x00, 0x6a, 0x69,
    ];
    assert_eq!(decode_sid(&body).as_deref(), Some("abcdefghij"));
    assert_eq!(encode_sid("abcdefghij"), body);
    for s in [
        "",
        "a",
        "ab",
        "abc",
        "abcd",
        "abcde",
        "#!::r=live/KEY,m=publish",
        "ключ",
    ] {
        let e = encode_sid(s);
        assert_eq!(e.len() % 4, 0);
        assert_eq!(e.len(), s.len().div_ceil(4) * 4);
        assert_eq!(decode_sid(&e).as_deref(), Some(s));
    }
    assert_eq!(decode_sid(&[0xC3, 0x28, 0, 0]), None);
}

#[test]
fn rejection_layout_and_code() {
    let c = conclusion(55, Some("x"));
    let r = rejection(&c, REJECT_OVERLOAD).expect("a rejection");
    assert_eq!(r.len(), 64, "no extensions");
    assert_eq!(be16(&r, 0), Some(0x8000));
    assert_eq!(be32(&r, OFF_DEST), Some(CALLER));
    assert_eq!(be32(&r, OFF_VERSION), Some(5));
    assert_eq!(be32(&r, OFF_TYPE), Some(2402));
    assert_eq!(be32(&r, OFF_ISN), Some(777));
    let h = shake(&r);
    assert_eq!(
        h.shake_type,
        ShakeType::Rejection(RejectReason::Server(ServerRejectReason::Overload))
    );
    assert_eq!(rejection(&c, 999), None);
    assert_eq!(rejection(&c[..40], 2402), None);
    assert_eq!(
        rejection(&[0u8; 64], 2402),
        None,
        "a data packet is not a conclusion"
    );
}

/// What a node (srt-tokio or libsrt listener) answers.
fn node_induction_answer(cookie: u32) -> Vec<u8> {
    hs(5, SRT_MAGIC, HS_INDUCTION, NODE, cookie, CALLER, &[])
}
fn node_conclusion_answer() -> Vec<u8> {
    let (_, mut hsrsp) = hsreq();
    hsrsp.truncate(12);
    hs(5, 1, HS_CONCLUSION, NODE, 0, CALLER, &[(2, hsrsp)])
}

#[test]
fn upstream_handshake_and_relay() {
    let t0 = Instant::now();
    let sid = "#!::r=live/KEY,m=publish";
    let caller_conclusion = conclusion(42, Some(sid));
    let (mut up, ind) = Upstream::start(
        caller_conclusion.clone(),
        Some(format!("{sid},edge-res=7")),
        t0,
    );
    // The induction: HSv4 request for the caller's socket, cookie 0.
    assert_eq!(be32(&ind, OFF_VERSION), Some(4));
    assert_eq!(be16(&ind, OFF_EXT), Some(UDT_DGRAM));
    assert_eq!(be32(&ind, OFF_TYPE), Some(HS_INDUCTION));
    assert_eq!(be32(&ind, OFF_SOCKET), Some(CALLER));
    assert_eq!(be32(&ind, OFF_COOKIE), Some(0));
    assert_eq!(be32(&ind, OFF_ISN), Some(777));
    assert_eq!(srt_guard::inspect(&ind), Verdict::Forward(Kind::Induction));
    assert!(!up.established());

    // Nothing for the node's answer addressed to another socket.
    let mut stray = node_induction_answer(0xC00C1E);
    put32(&mut stray, OFF_DEST, 1);
    assert!(up.on_node(&stray, t0).is_empty());
    // Caller retransmits before we have an answer: ignored.
    assert!(up.on_caller(&caller_conclusion, t0).is_empty());

    let steps = up.on_node(
        &node_induction_answer(0xC00C1E),
        t0 + Duration::from_millis(5),
    );
    let [Step::ToNode(c)] = steps.as_slice() else {
        panic!("{steps:?}")
    };
    assert_eq!(be32(c, OFF_COOKIE), Some(0xC00C1E));
    assert_eq!(be32(c, OFF_DEST), Some(0));
    assert_eq!(be32(c, OFF_SOCKET), Some(CALLER));
    assert_eq!(be32(c, OFF_TYPE), Some(HS_CONCLUSION));
    assert_eq!(stream_id(c), Ok(Some(format!("{sid},edge-res=7"))));
    assert_eq!(be16(c, OFF_EXT), Some(1 | EXT_FLAG_CONFIG));
    // The caller's HSREQ goes through unchanged; the node's guard and srt-tokio accept it.
    assert_eq!(
        &c[HS_LEN..HS_LEN + 16],
        &caller_conclusion[HS_LEN..HS_LEN + 16]
    );
    assert_eq!(srt_guard::inspect(c), Verdict::Forward(Kind::Handshake));
    let h = shake(c);
    assert_eq!(h.shake_type, ShakeType::Conclusion);

    // Retransmits every 250 ms until the answer.
    assert!(up.on_timer(t0 + Duration::from_millis(200)).is_empty());
    assert_eq!(
        up.on_timer(t0 + Duration::from_millis(260)),
        vec![Step::ToNode(c.clone())]
    );
    assert_eq!(up.next_timer(), Some(t0 + Duration::from_millis(510)));

    let answer = node_conclusion_answer();
    assert_eq!(
        up.on_node(&answer, t0 + Duration::from_millis(300)),
        vec![Step::ToCaller(answer.clone()), Step::Established]
    );
    assert!(up.established());
    assert_eq!(up.next_timer(), None);
    assert!(
        up.on_timer(t0 + Duration::from_secs(10)).is_empty(),
        "established never times out here"
    );

    // Relaying, unchanged both ways; the guard drops what would crash the node.
    let data = [
        0x00, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 9, 0x07, 0x65, 0x43, 0x21, 0xAA, 0xBB,
    ];
    assert_eq!(up.on_caller(&data, t0), vec![Step::ToNode(data.to_vec())]);
    assert_eq!(up.on_node(&data, t0), vec![Step::ToCaller(data.to_vec())]);
    let mut peer_error = vec![0u8; 20];
    peer_error[0..2].copy_from_slice(&0x8008u16.to_be_bytes());
    assert!(up.on_caller(&peer_error, t0).is_empty());
    assert!(up.on_caller(&[0x80, 0], t0).is_empty());
    // A retransmitted conclusion (our answer was lost) is answered from the cache.
    assert_eq!(
        up.on_caller(&caller_conclusion, t0),
        vec![Step::ToCaller(answer)]
    );
    // A stray induction from the caller's address is not passed on.
    assert!(up
        .on_caller(&hs(4, 2, HS_INDUCTION, CALLER, 0, 0, &[]), t0)
        .is_empty());
}

#[test]
fn upstream_keeps_the_callers_stream_id_when_not_replaced() {
    let t0 = Instant::now();
    let (mut up, _) = Upstream::start(conclusion(1, Some("abcde")), None, t0);
    let steps = up.on_node(&node_induction_answer(3), t0);
    let [Step::ToNode(c)] = steps.as_slice() else {
        panic!("{steps:?}")
    };
    assert_eq!(stream_id(c), Ok(Some("abcde".into())));
    // A caller without one and no replacement: none, and no CONFIG flag.
    let (mut up, _) = Upstream::start(conclusion(1, None), None, t0);
    let steps = up.on_node(&node_induction_answer(3), t0);
    let [Step::ToNode(c)] = steps.as_slice() else {
        panic!("{steps:?}")
    };
    assert_eq!(stream_id(c), Ok(None));
    assert_eq!(be16(c, OFF_EXT), Some(1));
    // A caller without one and a replacement: added.
    let (mut up, _) = Upstream::start(conclusion(1, None), Some("n".into()), t0);
    let steps = up.on_node(&node_induction_answer(3), t0);
    let [Step::ToNode(c)] = steps.as_slice() else {
        panic!("{steps:?}")
    };
    assert_eq!(stream_id(c), Ok(Some("n".into())));
    assert_eq!(be16(c, OFF_EXT), Some(1 | EXT_FLAG_CONFIG));
}

#[test]
fn upstream_rejection_timeout_and_bad_input() {
    let t0 = Instant::now();
    // The node rejects our conclusion.
    let (mut up, _) = Upstream::start(conclusion(1, Some("s")), None, t0);
    up.on_node(&node_induction_answer(3), t0);
    let rej = hs(5, 0, 2403, NODE, 0, CALLER, &[]);
    assert_eq!(up.on_node(&rej, t0), vec![Step::Rejected(2403)]);
    assert!(up.on_node(&node_conclusion_answer(), t0).is_empty(), "over");
    assert!(up.on_timer(t0 + Duration::from_secs(1)).is_empty());
    // ...or already the induction.
    let (mut up, _) = Upstream::start(conclusion(1, Some("s")), None, t0);
    assert_eq!(
        up.on_node(&hs(5, 0, 1005, NODE, 0, CALLER, &[]), t0),
        vec![Step::Rejected(1005)]
    );
    // A node that never answers.
    let (mut up, ind) = Upstream::start(conclusion(1, Some("s")), None, t0);
    let mut sent = 0;
    let mut end = None;
    for ms in (0..4000).step_by(10) {
        for s in up.on_timer(t0 + Duration::from_millis(ms)) {
            match s {
                Step::ToNode(p) => {
                    assert_eq!(p, ind);
                    sent += 1;
                }
                Step::Rejected(code) => end = Some((ms, code)),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(end, Some((3000, REJECT_BAD_GATEWAY)));
    assert_eq!(sent, 11, "every 250 ms for 3 s");
    // A stream ID too long for SRT, or a start from something that is not a conclusion.
    let (mut up, _) = Upstream::start(conclusion(1, Some("s")), Some("x".repeat(513)), t0);
    assert_eq!(up.on_timer(t0), vec![Step::Rejected(REJECT_BAD_REQUEST)]);
    assert!(up.on_timer(t0).is_empty());
    let (mut up, _) = Upstream::start(vec![1, 2, 3], None, t0);
    assert_eq!(
        up.on_node(&node_induction_answer(3), t0),
        vec![Step::Rejected(REJECT_BAD_REQUEST)]
    );
}

#[test]
fn random_bytes_never_panic() {
    let c = Cookies::new([3; 32]);
    let t0 = Instant::now();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let seeds = [
        conclusion(c.make(peer(), 0), Some("abc")),
        node_induction_answer(9),
        node_conclusion_answer(),
    ];
    for i in 0..30_000 {
        let r = next();
        // Mutate real handshakes so the parsers get past their first checks.
        let mut buf = seeds[(r % 3) as usize].clone();
        let len = (next() % 200) as usize;
        buf.resize(len.max(1), 0);
        for _ in 0..(r % 6) {
            let at = (next() as usize) % buf.len();
            buf[at] = next() as u8;
        }
        let _ = on_fresh(&buf, peer(), &c, 0);
        let _ = rejection(&buf, 2402);
        let (mut up, _) = Upstream::start(buf.clone(), (i % 2 == 0).then(|| "s".to_string()), t0);
        let _ = up.on_node(&node_induction_answer(1), t0);
        let _ = up.on_node(&buf, t0);
        let _ = up.on_caller(&buf, t0);
        let _ = up.on_timer(t0 + Duration::from_millis(i % 5000));
        let _ = up.on_node(&node_conclusion_answer(), t0);
        let _ = up.on_caller(&buf, t0);
    }
}

// ---- against real srt-tokio endpoints, through a small test relay on the pure API ----

mod live {
    use super::super::*;
    use bytes::Bytes;
    use futures::{SinkExt, StreamExt};
    use srt_protocol::packet::{RejectReason, ServerRejectReason};
    use srt_protocol::protocol::pending_connection::ConnectionReject;
    use srt_tokio::{SrtListener, SrtSocket};
    use tokio::net::UdpSocket;
    use tokio::sync::mpsc;

    /// What the test relay saw.
    #[derive(Debug, PartialEq)]
    enum Event {
        Placed(String),
        Established,
        Rejected(u32),
    }

    /// One-session relay: the front socket answers inductions, a per-session upstream
    /// socket talks to the node. Only the pure API decides what goes where.
    async fn relay(
        front: UdpSocket,
        node: SocketAddr,
        suffix: Option<&'static str>,
        events: mpsc::UnboundedSender<Event>,
    ) {
        let cookies = Cookies::new([5; 32]);
        let mut session: Option<(SocketAddr, Upstream, UdpSocket)> = None;
        let mut fbuf = vec![0u8; 2048];
        let mut ubuf = vec![0u8; 2048];
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let now_secs = 1_000_000;
        loop {
            let (steps, peer) = tokio::select! {
                r = front.recv_from(&mut fbuf) => {
                    let Ok((n, from)) = r else { continue };
                    match session.as_mut() {
                        Some((p, up, _)) if *p == from => (up.on_caller(&fbuf[..n], Instant::now()), from),
                        _ => match on_fresh(&fbuf[..n], from, &cookies, now_secs) {
                            Fresh::Reply(r) => {
                                front.send_to(&r, from).await.unwrap();
                                continue;
                            }
                            Fresh::Drop(_) => continue,
                            Fresh::Place { stream_id, conclusion, .. } => {
                                events.send(Event::Placed(stream_id.clone())).unwrap();
                                let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                                sock.connect(node).await.unwrap();
                                let sid = suffix.map(|s| format!("{stream_id}{s}"));
                                let (up, ind) = Upstream::start(conclusion, sid, Instant::now());
                                sock.send(&ind).await.unwrap();
                                session = Some((from, up, sock));
                                continue;
                            }
                        },
                    }
                }
                r = async { session.as_ref().unwrap().2.recv(&mut ubuf).await }, if session.is_some() => {
                    let Ok(n) = r else { continue };
                    let (p, up, _) = session.as_mut().unwrap();
                    (up.on_node(&ubuf[..n], Instant::now()), *p)
                }
                _ = tick.tick(), if session.is_some() => {
                    let (p, up, _) = session.as_mut().unwrap();
                    (up.on_timer(Instant::now()), *p)
                }
            };
            for step in steps {
                match step {
                    Step::ToNode(b) => {
                        session.as_ref().unwrap().2.send(&b).await.unwrap();
                    }
                    Step::ToCaller(b) => {
                        front.send_to(&b, peer).await.unwrap();
                    }
                    Step::Established => events.send(Event::Established).unwrap(),
                    Step::Rejected(code) => {
                        events.send(Event::Rejected(code)).unwrap();
                        let (_, up, _) = session.take().unwrap();
                        let r = rejection(up.conclusion(), code).unwrap();
                        front.send_to(&r, peer).await.unwrap();
                    }
                    Step::Nothing => {}
                }
            }
        }
    }

    /// A node (srt-tokio listener) and the relay in front of it; returns the relay's address.
    async fn setup(
        accept: bool,
        suffix: Option<&'static str>,
    ) -> (
        SocketAddr,
        mpsc::UnboundedReceiver<Event>,
        mpsc::UnboundedReceiver<(Option<String>, Vec<Bytes>)>,
    ) {
        let inner = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let node_addr = inner.local_addr().unwrap();
        let (listener, mut incoming) = SrtListener::builder()
            .latency(Duration::from_millis(50))
            .socket(inner)
            .bind(node_addr)
            .await
            .unwrap();
        let (got_tx, got_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _listener = listener;
            while let Some(req) = incoming.incoming().next().await {
                let sid = req.stream_id().map(|s| s.to_string());
                if !accept {
                    req.reject(RejectReason::Server(ServerRejectReason::Forbidden))
                        .await
                        .unwrap();
                    got_tx.send((sid, vec![])).unwrap();
                    continue;
                }
                let mut sock = req.accept(None).await.unwrap();
                let mut msgs = Vec::new();
                while let Some(Ok((_, data))) = sock.next().await {
                    msgs.push(data);
                    if msgs.len() == 100 {
                        break;
                    }
                }
                got_tx.send((sid, msgs)).unwrap();
            }
        });
        let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let front_addr = front.local_addr().unwrap();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        tokio::spawn(relay(front, node_addr, suffix, ev_tx));
        (front_addr, ev_rx, got_rx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_reaches_the_node_through_the_relay() {
        tokio::time::timeout(Duration::from_secs(15), async {
            let (front, mut events, mut got) = setup(true, Some(",edge-res=42")).await;
            let sid = "#!::r=live/KEY,m=publish";
            let mut caller = SrtSocket::builder()
                .latency(Duration::from_millis(50))
                .call(front, Some(sid))
                .await
                .expect("the caller connects through the relay");
            assert_eq!(events.recv().await, Some(Event::Placed(sid.into())));
            assert_eq!(events.recv().await, Some(Event::Established));
            let sent: Vec<Bytes> = (0..100)
                .map(|i| Bytes::from(format!("message {i:03} {}", "x".repeat(i * 10))))
                .collect();
            for m in &sent {
                // srt-tokio's send API takes the std clock's Instant (it runs on real time).
                #[allow(clippy::disallowed_methods, clippy::disallowed_types)]
                let at = std::time::Instant::now();
                caller.send((at, m.clone())).await.unwrap();
                // srt-tokio's live sender estimates the input rate and stalls on a burst.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let (node_sid, msgs) = got.recv().await.unwrap();
            assert_eq!(
                node_sid.as_deref(),
                Some("#!::r=live/KEY,m=publish,edge-res=42")
            );
            assert_eq!(msgs, sent, "100 messages, intact and in order");
            caller.close().await.unwrap();
        })
        .await
        .expect("within 15 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_rejection_reaches_the_caller() {
        tokio::time::timeout(Duration::from_secs(15), async {
            let (front, mut events, mut got) = setup(false, None).await;
            let sid = "#!::r=live/NOPE,m=publish";
            let Err(err) = SrtSocket::builder().call(front, Some(sid)).await else {
                panic!("the caller is refused");
            };
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
            let reason = err
                .get_ref()
                .and_then(|e| e.downcast_ref::<ConnectionReject>());
            assert_eq!(
                reason,
                Some(&ConnectionReject::Rejected(RejectReason::Server(
                    ServerRejectReason::Forbidden
                )))
            );
            assert_eq!(
                got.recv().await.unwrap().0.as_deref(),
                Some(sid),
                "the node saw the caller's own stream ID"
            );
            assert_eq!(events.recv().await, Some(Event::Placed(sid.into())));
            assert_eq!(events.recv().await, Some(Event::Rejected(2403)));
        })
        .await
        .expect("within 15 s");
    }
}
