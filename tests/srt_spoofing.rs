//! End to end: spoofed SRT handshakes cannot take a live SRT stream off the air. Raw UDP with a
//! live encoder's own source address (a raw socket; the tests run as root, as CI does): its
//! induction, a conclusion with a guessed cookie and a new socket ID, a shutdown. Then a flood
//! of spoofed inductions from thousands of addresses. On a node reached directly and through a
//! balancer: the stream keeps its session (no reconnect), keeps advancing, and a new caller
//! still gets in after the flood (spoofed inductions opened nothing).
// End-to-end tests drive real processes on real time; the ban on the std clock (clippy.toml)
// is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use common::{cluster::*, srt_raw, *};

/// How long a flowing stream may take to complete its next segment (2 s of media).
const FLOW_TIMEOUT: Duration = Duration::from_secs(20);
/// Spoofed inductions in the flood, each from its own address: more than either front's
/// session cap (the node's 1,024), so the old per-induction sessions would have filled it.
const FLOOD: u32 = 3000;

fn position(node: &Node, pid: &str) -> Option<(u64, usize)> {
    let r = http_get(&node.media_playlist_url(pid, "source"), HTTP_TIMEOUT).ok()?;
    (r.status == 200).then_some(())?;
    check_ll_hls(&r.text(), Track::Video).ok()?.last_part()
}

/// The node's session ID and the encoder's address (as the node sees it) of `pid`.
fn session_of(node: &Node, pid: &str) -> (u64, SocketAddrV4) {
    let s = wait_for(format_args!("{pid} on its node"), FLOW_TIMEOUT, || {
        node.stream(pid)
    });
    let addr = s["client_addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("client_addr of {s}"));
    (s["session_id"].as_u64().expect("session_id"), addr)
}

/// Everything a blind attacker can send as `victim` to `front`.
fn attack(spoofer: &srt_raw::Spoofer, victim: SocketAddrV4, front: SocketAddrV4, key: &str) {
    let exts = [
        (1u16, srt_raw::hsreq()),
        (5u16, srt_raw::sid(&format!("#!::r=live/{key},m=publish"))),
    ];
    for round in 0..20u32 {
        let socket_id = 0x5000_0000 + round;
        // A new connection from the encoder's address and port.
        spoofer.send(
            victim,
            front,
            &srt_raw::handshake(4, 2, srt_raw::HS_INDUCTION, socket_id, 0, &[]),
        );
        // Its conclusion, with a cookie the attacker never saw.
        for cookie in [0u32, round.wrapping_mul(0x9E37_79B9), u32::MAX] {
            spoofer.send(
                victim,
                front,
                &srt_raw::handshake(5, 5, srt_raw::HS_CONCLUSION, socket_id, cookie, &exts),
            );
        }
        // A shutdown (control type 5) to guessed socket IDs.
        for dest in [0u32, 1, socket_id] {
            spoofer.send(victim, front, &srt_raw::control(5, 0, dest, &[0; 4]));
        }
    }
}

/// Spoofed inductions from [`FLOOD`] addresses 127.1.x.y.
fn induction_flood(spoofer: &srt_raw::Spoofer, front: SocketAddrV4) {
    for i in 0..FLOOD {
        let from = SocketAddrV4::new(
            Ipv4Addr::new(127, 1, (i >> 8) as u8, (i & 0xff) as u8 | 1),
            40_000 + (i % 1000) as u16,
        );
        spoofer.send(
            from,
            front,
            &srt_raw::handshake(4, 2, srt_raw::HS_INDUCTION, 0x6000_0000 + i, 0, &[]),
        );
    }
}

/// The stream on `node` kept its session, advanced, and its encoder runs.
fn unharmed(node: &Node, pid: &str, session: u64, since: (u64, usize), enc: &mut Encoder) {
    wait_for(
        format_args!("{pid} to complete a segment after the attack"),
        FLOW_TIMEOUT,
        || position(node, pid).filter(|p| p.0 > since.0),
    );
    let (now, _) = session_of(node, pid);
    assert_eq!(
        now, session,
        "{pid}: its session was replaced (the encoder reconnected)"
    );
    assert!(
        enc.is_running(),
        "the encoder saw an error:\n{}",
        enc.log_text()
    );
}

#[test]
fn spoofed_handshakes_do_not_end_a_live_srt_stream_on_a_node() {
    let node = Node::start(|_| {});
    let mut enc = Encoder::ffmpeg_srt(&node.srt_url("test-stream-key-1"), EncOpts::default());
    node.wait_media_playlist("one", "source", 1, FIRST_SEGMENT_TIMEOUT);
    let (session, victim) = session_of(&node, "one");
    let before = wait_for("a playlist position", FLOW_TIMEOUT, || {
        position(&node, "one")
    });
    let front = SocketAddrV4::new(Ipv4Addr::LOCALHOST, node.ports.srt);
    let spoofer = srt_raw::Spoofer::new();
    attack(&spoofer, victim, front, "test-stream-key-1");
    induction_flood(&spoofer, front);
    unharmed(&node, "one", session, before, &mut enc);
    // The flood opened nothing: a new caller gets in at once.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        srt_raw::connect(
            &sock,
            &front.to_string(),
            "#!::r=live/test-stream-key-2,m=publish"
        ),
        Ok(srt_raw::HS_CONCLUSION),
        "a new caller after the flood"
    );
    let m = node.metrics();
    // The forged datagrams did arrive (raw sockets deliver on loopback) and were refused.
    let bad_cookies = metric_value(
        &m,
        r#"edge_ingest_srt_dropped_packets_total{reason="bad_cookie"}"#,
    );
    assert!(
        bad_cookies >= 60.0,
        "{bad_cookies} spoofed conclusions seen"
    );
    assert_eq!(
        metric_value(
            &m,
            r#"edge_ingest_srt_dropped_packets_total{reason="too_many_sessions"}"#
        ),
        0.0,
        "spoofed inductions took session slots"
    );
}

#[test]
fn spoofed_handshakes_do_not_end_a_live_srt_stream_through_a_balancer() {
    let c = Cluster::new(1, 1);
    let b = c.balancer(1, "5s");
    let n1 = c.node(1, 10, &[&b]);
    wait_nodes(&b, &["n1"]);
    let mut enc = Encoder::ffmpeg_srt(&b.srt_url(&key(0)), EncOpts::default());
    n1.wait_media_playlist(&pid(0), "source", 1, FIRST_SEGMENT_TIMEOUT);
    let (session, _) = session_of(&n1, &pid(0));
    // The node sees the balancer's address; the encoder's is in the balancer's table.
    let victim = wait_for(
        "the encoder in the balancer's connections",
        FLOW_TIMEOUT,
        || {
            b.api("/api/v1/connections")
                .as_array()?
                .iter()
                .find(|c| c["protocol"] == "srt")?["client_addr"]
                .as_str()?
                .parse::<SocketAddrV4>()
                .ok()
        },
    );
    let before = wait_for("a playlist position", FLOW_TIMEOUT, || {
        position(&n1, &pid(0))
    });
    let front = SocketAddrV4::new(Ipv4Addr::LOCALHOST, b.ports.srt);
    let spoofer = srt_raw::Spoofer::new();
    attack(&spoofer, victim, front, &key(0));
    induction_flood(&spoofer, front);
    unharmed(&n1, &pid(0), session, before, &mut enc);
    let mut second = Encoder::ffmpeg_srt(&b.srt_url(&key(1)), EncOpts::default());
    n1.wait_media_playlist(&pid(1), "source", 1, FIRST_SEGMENT_TIMEOUT);
    assert!(second.is_running(), "{}", second.log_text());
}
