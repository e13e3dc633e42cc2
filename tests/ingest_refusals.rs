//! End to end: everything a node must refuse or survive, while other streams keep flowing;
//! capacity, replacement of a stale publisher, the admin API, the end of a stream.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::{
    io::{Read, Write},
    net::{TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use common::{srt_raw, *};

/// How long a flowing stream may take to complete its next segment (2 s of media), with the
/// node, its encoders and other tests sharing 2 cores.
const FLOW_TIMEOUT: Duration = Duration::from_secs(20);

fn third_stream(c: &mut String) {
    c.push_str("\n[[streams]]\nkey = \"test-stream-key-3\"\nplayback_id = \"three\"\n");
}

/// Last part position of a rendition, read now.
fn position(node: &Node, pid: &str) -> (u64, usize) {
    let text = get_ok(&node.media_playlist_url(pid, "source")).text();
    check_ll_hls(&text, Track::Video)
        .expect("valid")
        .last_part()
        .expect("parts")
}

/// Wait until `pid`'s playlist on `node` completes a segment after `since`; the new position.
fn advanced(node: &Node, pid: &str, since: (u64, usize)) -> (u64, usize) {
    wait_for(
        format_args!("{pid} to complete a segment after {since:?}"),
        FLOW_TIMEOUT,
        || Some(position(node, pid)).filter(|p| p.0 > since.0),
    )
}

/// Perform a real RTMP handshake by hand (C0/C1, read S0/S1/S2, C2), then send `garbage`.
/// Returns true if the server closed the connection.
fn rtmp_garbage_after_handshake(addr: &str, garbage: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).expect("connect rtmp");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut c1 = vec![0u8; 1537];
    c1[0] = 3;
    for (i, b) in c1[9..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    s.write_all(&c1).unwrap();
    let mut s012 = vec![0u8; 3073];
    s.read_exact(&mut s012).expect("S0 S1 S2");
    assert_eq!(s012[0], 3, "RTMP version");
    s.write_all(&s012[1..1537]).unwrap(); // C2 echoes S1
    let _ = s.write_all(garbage);
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true, // reset
            Ok(_) => {}            // the server's window-ack / chunk-size messages
        }
    }
    false
}

#[test]
fn refusals_and_hostile_peers_leave_other_streams_flowing() {
    let mut node = Node::start(third_stream);
    let srt_addr = format!("127.0.0.1:{}", node.ports.srt);
    let rtmp_addr = format!("127.0.0.1:{}", node.ports.rtmp);
    // Stream "one" over SRT (the listener a hostile peer aims at), "two" over RTMP.
    let mut a = Encoder::srt_live_transmit(&node.srt_url("test-stream-key-1"), EncOpts::default());
    let mut b = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-2"), EncOpts::default());
    node.wait_media_playlist("one", "source", 1, FIRST_SEGMENT_TIMEOUT);
    node.wait_media_playlist("two", "source", 1, FIRST_SEGMENT_TIMEOUT);
    let before = (position(&node, "one"), position(&node, "two"));

    // RTMP: wrong key, from a real encoder: refused with the status ffmpeg shows its user.
    let mut bad = Encoder::ffmpeg_rtmp(
        &node.rtmp_url("wrong-key-123"),
        EncOpts {
            duration: Duration::from_secs(5),
            ..EncOpts::default()
        },
    );
    let st = bad
        .wait_exit(Duration::from_secs(20))
        .expect("ffmpeg with a wrong key exits");
    assert!(!st.success(), "ffmpeg with a wrong key succeeded");
    assert!(
        bad.log_text().to_lowercase().contains("invalid stream key"),
        "ffmpeg did not show the refusal:\n{}",
        bad.log_text()
    );
    // RTMP: wrong application name.
    let _app = Encoder::ffmpeg_rtmp(
        &format!("rtmp://{rtmp_addr}/vod/test-stream-key-3"),
        EncOpts::short(),
    )
    .expect_refused(Duration::from_secs(20));
    // RTMP: garbage after a valid handshake is refused by closing that connection.
    assert!(
        rtmp_garbage_after_handshake(&rtmp_addr, &[0xFF; 64]),
        "server kept a connection sending garbage"
    );
    assert!(
        rtmp_garbage_after_handshake(
            &rtmp_addr,
            b"\x03\x00\x00\x00\x00\x00\x10\x14\x00\x00\x00\x00garbage-amf-0123"
        ),
        "server kept a connection sending a broken command"
    );
    // RTMP: an AMF3 command with a truncated payload, which panics inside rml_rtmp (found by
    // the rtmp_session fuzz target, fuzz/regressions/): contained to its connection.
    assert!(
        rtmp_garbage_after_handshake(
            &rtmp_addr,
            include_bytes!("../fuzz/regressions/rtmp_session_amf3_truncated.bin")
        ),
        "server kept a connection whose input panicked the RTMP parser"
    );
    // Again and again: each is counted, and the log says so once, not once per input with a
    // backtrace (a hostile peer must not be able to flood the log).
    for _ in 0..3 {
        rtmp_garbage_after_handshake(
            &rtmp_addr,
            include_bytes!("../fuzz/regressions/rtmp_session_amf3_truncated.bin"),
        );
    }
    let panics = metric_value(&node.metrics(), "edge_parser_panics_total");
    assert!(panics >= 4.0, "contained panics counted: {panics}");
    let log = node.log_text();
    assert!(
        !log.contains("panicked at"),
        "a contained panic printed the default message"
    );
    assert_eq!(
        log.matches("contained a parser panic").count(),
        1,
        "one line per interval"
    );
    // RTMP: garbage instead of a handshake.
    let mut s = TcpStream::connect(&rtmp_addr).unwrap();
    let _ = s.write_all(&[0x42; 2000]);

    // SRT: wrong key, bad mode, bad stream ID: the exact rejection codes on the wire
    // (libsrt numbers: 1401 unauthorized, 1405 bad mode, 1404 not found; wire = 1000 + code).
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        srt_raw::connect(&sock, &srt_addr, "#!::r=live/wrong-key-123,m=publish"),
        Ok(2401)
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        srt_raw::connect(&sock, &srt_addr, "#!::r=live/test-stream-key-3,m=request"),
        Ok(2405)
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        srt_raw::connect(&sock, &srt_addr, "vod/test-stream-key-3"),
        Ok(2404)
    );
    // SRT: wrong key from a real encoder fails.
    let _bad_srt = Encoder::ffmpeg_srt(&node.srt_url("wrong-key-123"), EncOpts::short())
        .expect_refused(Duration::from_secs(30));

    // SRT: malformed and hostile packets, including the ones that reach todo!()/unimplemented!()
    // inside srt-tokio (Peer Error, Congestion Warning, unknown extension subtypes, an
    // induction with extensions, a conclusion with an unsupported extension).
    let hostile = UdpSocket::bind("127.0.0.1:0").unwrap();
    let packets: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        vec![0xFF; 15],
        vec![0x80; 2000],
        vec![0x00; 64],
        srt_raw::control(8, 0, 0x0bad_cafe, &[0, 0, 0, 1]),
        srt_raw::control(4, 0, 0x0bad_cafe, &[]),
        srt_raw::control(0x7FFF, 9, 0x0bad_cafe, &[1, 2, 3, 4]),
        srt_raw::control(0x7FFF, 1, 0, &[1, 2, 3]),
        srt_raw::control(0x1234, 0, 0, &[]),
        srt_raw::handshake(
            5,
            0x4A17,
            srt_raw::HS_INDUCTION,
            7,
            0,
            &[(5, srt_raw::sid("abcd"))],
        ),
        srt_raw::handshake(5, 5, srt_raw::HS_CONCLUSION, 7, 0, &[(6, b"live".to_vec())]),
        srt_raw::handshake(5, 5, srt_raw::HS_CONCLUSION, 7, 0, &[(1, vec![0; 8])]),
        // An empty stream ID: srt-tokio reads past its end.
        srt_raw::handshake(
            5,
            5,
            srt_raw::HS_CONCLUSION,
            7,
            0,
            &[(1, srt_raw::hsreq()), (5, vec![])],
        ),
        srt_raw::control(0x7FFF, 3, 0x0bad_cafe, &[0; 4]),
        srt_raw::handshake(9, 0, srt_raw::HS_INDUCTION, 7, 0, &[]),
        srt_raw::handshake(4, 2, 77, 7, 0, &[]),
        srt_raw::handshake(4, 2, srt_raw::HS_INDUCTION, 7, 0, &[])[..40].to_vec(),
    ];
    for _ in 0..20 {
        for p in &packets {
            let _ = hostile.send_to(p, &srt_addr);
        }
    }
    // The same packets from a peer that has a session open (after its induction).
    let with_session = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = with_session.send_to(
        &srt_raw::handshake(4, 2, srt_raw::HS_INDUCTION, 9, 0, &[]),
        &srt_addr,
    );
    for p in &packets {
        let _ = with_session.send_to(p, &srt_addr);
    }
    // A conclusion carrying an extension srt-tokio cannot parse (congestion control, type 6)
    // is cleaned, not fatal: the handshake completes to a normal answer.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = [0u8; 1500];
    let n = srt_raw::induction(&sock, &srt_addr, 11, &mut buf)
        .expect("induction reply despite the noise");
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let cookie = u32::from_be_bytes(buf[44..48].try_into().unwrap());
    let exts = [
        (1u16, srt_raw::hsreq()),
        (6u16, b"live".to_vec()),
        (5u16, srt_raw::sid("#!::r=live/wrong-key-123,m=publish")),
    ];
    sock.send_to(
        &srt_raw::handshake(5, 5, srt_raw::HS_CONCLUSION, 11, cookie, &exts),
        &srt_addr,
    )
    .unwrap();
    let mut answer = None;
    while let Ok(n2) = sock.recv(&mut buf) {
        if let Some(t) = srt_raw::reply_type(&buf[..n2]) {
            answer = Some(t);
            break;
        }
    }
    assert_eq!(
        answer,
        Some(2401),
        "conclusion with a type-6 extension (first reply {n} bytes)"
    );

    // Through all of it, the established streams kept flowing and their encoders saw nothing.
    advanced(&node, "one", before.0);
    advanced(&node, "two", before.1);
    assert!(
        a.is_running(),
        "srt-live-transmit saw an error:\n{}",
        a.log_text()
    );
    assert!(b.is_running(), "ffmpeg saw an error:\n{}", b.log_text());
    // And the SRT listener still takes new publishers.
    let mut c = Encoder::ffmpeg_srt(&node.srt_url("test-stream-key-3"), EncOpts::default());
    node.wait_media_playlist("three", "source", 1, FIRST_SEGMENT_TIMEOUT);
    assert!(c.is_running());
    let m = node.metrics();
    let dropped: f64 = m
        .lines()
        .filter(|l| l.starts_with("edge_ingest_srt_dropped_packets_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(dropped >= 20.0, "the guard counted {dropped} drops:\n{m}");
    assert!(
        m.contains("edge_ingest_connections_total{protocol=\"rtmp\",result=\"refused_key\"}"),
        "{m}"
    );
    assert!(
        m.contains("edge_ingest_connections_total{protocol=\"srt\",result=\"refused_key\"}"),
        "{m}"
    );
    assert!(
        !m.contains("test-stream-key"),
        "a stream key is in the metrics"
    );
    assert!(node.is_running(), "the node died");
}

#[test]
fn a_full_node_refuses_the_next_stream_and_keeps_the_first() {
    // One stream of this ladder costs 0.5 (decode) + 0.25 (360p) + 0.11 (240p) units.
    let node = Node::start(|c| *c = c.replace("capacity_units = 8.0", "capacity_units = 1.0"));
    let mut first = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    node.wait_media_playlist("one", "source", 1, FIRST_SEGMENT_TIMEOUT);
    let v = node
        .admin_get("/api/v1/node")
        .expect("node view")
        .json()
        .expect("json");
    assert_eq!(v["state"], "full", "{v}");
    let second = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-2"), EncOpts::short())
        .expect_refused(Duration::from_secs(20));
    assert!(
        second.log_text().contains("no free transcode units"),
        "{}",
        second.log_text()
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        srt_raw::connect(
            &sock,
            &format!("127.0.0.1:{}", node.ports.srt),
            "test-stream-key-2"
        ),
        Ok(2402),
        "SRT overload code"
    );
    let before = position(&node, "one");
    advanced(&node, "one", before);
    assert!(first.is_running());
}

#[test]
fn a_source_above_the_maximum_is_refused_and_a_stream_is_charged_for_its_real_source() {
    // At most 1280x720 at 60 fps: until its first keyframe a stream is charged for decoding
    // 720p60 (twice the 0.5 units of 720p30) plus both rungs; a 480p30 source then costs
    // 0.5 units of decoding plus the same rungs.
    let node = Node::start(|c| *c = c.replace("max_source_fps = 30", "max_source_fps = 60"));
    let view = || -> serde_json::Value {
        node.admin_get("/api/v1/node")
            .expect("node view")
            .json()
            .expect("json")
    };
    let charge = view()["stream_milli_units"].as_u64().expect("stream units");
    let _first = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    node.wait_media_playlist("one", "360p", 1, FIRST_SEGMENT_TIMEOUT);
    let used = || view()["used_milli_units"].as_u64().expect("used units");
    assert_eq!(
        used(),
        charge - 500,
        "a 480p30 stream is charged 500 milli-units of decoding less than a 720p60 one"
    );

    // Too large a picture over RTMP, too high a frame rate over SRT: each is ended at its
    // first keyframe with the reason, and the first stream never notices.
    let before = position(&node, "one");
    let mut big = Encoder::ffmpeg_rtmp(
        &node.rtmp_url("test-stream-key-2"),
        EncOpts {
            width: 1920,
            height: 1080,
            duration: Duration::from_secs(20),
            ..EncOpts::default()
        },
    );
    assert!(!big
        .wait_exit(Duration::from_secs(30))
        .expect("the refused encoder exits")
        .success());
    // RTMP accepted the publish before the size was known: the encoder hears why in a status.
    let said = big.log_text();
    assert!(
        said.contains("Server error: source 1920x1080 is larger than this server's maximum"),
        "{said}"
    );
    let mut fast = Encoder::ffmpeg_srt(
        &node.srt_url("test-stream-key-2"),
        EncOpts {
            width: 640,
            height: 360,
            fps: 120,
            duration: Duration::from_secs(20),
            ..EncOpts::default()
        },
    );
    assert!(!fast
        .wait_exit(Duration::from_secs(30))
        .expect("the refused encoder exits")
        .success());
    let log = node.log_text();
    for why in [
        "source 1920x1080 is larger than this server's maximum 1280x720",
        "source frame rate 120.00 is above this server's maximum 60",
    ] {
        assert!(
            log.contains(why),
            "{why} not in the node log:\n{}",
            node.log_tail(40)
        );
    }
    // The reasons are in the stream.disconnected events too (RTMP and SRT alike).
    let events: serde_json::Value = node
        .admin_get("/api/v1/events")
        .expect("events")
        .json()
        .expect("json");
    for why in [
        "is larger than this server's maximum",
        "source frame rate 120.00",
    ] {
        assert!(
            events
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["type"] == "stream.disconnected"
                    && e["data"]["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains(why)))),
            "no stream.disconnected with {why}: {events}"
        );
    }
    let m = node.metrics();
    for proto in ["rtmp", "srt"] {
        let series = format!(
            "edge_ingest_connections_total{{protocol=\"{proto}\",result=\"refused_source\"}}"
        );
        assert_eq!(metric_value(&m, &series), 1.0, "{series}");
    }
    wait_for(
        "the refused streams' charges to be released",
        Duration::from_secs(10),
        || (used() == charge - 500).then_some(()),
    );
    advanced(&node, "one", before);
}

#[test]
fn a_second_publisher_with_the_same_key_replaces_the_first_and_the_playlist_continues() {
    let node = Node::start(|_| {});
    let mut old = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    let first = node.wait_media_playlist("one", "360p", 2, FIRST_SEGMENT_TIMEOUT);
    let mut new = Encoder::ffmpeg_srt(&node.srt_url("test-stream-key-1"), EncOpts::default());
    assert!(
        old.wait_exit(Duration::from_secs(20)).is_some(),
        "the replaced publisher was not disconnected"
    );
    let url = node.media_playlist_url("one", "360p");
    let joined = wait_until(Duration::from_secs(45), || {
        let pl = check_ll_hls(&get_ok(&url).text(), Track::Video).ok()?;
        let d = pl.discontinuities();
        (!d.is_empty() && pl.segments.iter().any(|s| s.msn > d[0])).then_some(pl)
    })
    .expect("no discontinuity followed by a segment after the replacement");
    assert!(
        joined.media_sequence() >= first.media_sequence(),
        "media sequence went backwards"
    );
    assert!(joined.last_msn() > first.last_msn());
    assert!(!joined.endlist);
    assert!(new.is_running());
    assert_eq!(node.stream("one").expect("listed")["protocol"], "srt");
}

#[test]
fn admin_api_needs_its_token_and_can_kick_a_stream() {
    let node = Node::start(|_| {});
    let mut enc = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    node.wait_media_playlist("one", "source", 1, FIRST_SEGMENT_TIMEOUT);
    let noauth = http_get(&node.admin_url("/api/v1/streams"), HTTP_TIMEOUT).unwrap();
    assert_eq!(noauth.status, 401);
    let wrong = http_get_with_headers(
        &node.admin_url("/api/v1/streams"),
        &[("Authorization", "Bearer nope-nope-nope-nope-nope-no")],
        HTTP_TIMEOUT,
    )
    .unwrap();
    assert_eq!(wrong.status, 401);
    assert_eq!(
        http_get(&node.admin_url("/healthz"), HTTP_TIMEOUT)
            .unwrap()
            .status,
        200
    );
    let s = node.stream("one").expect("stream listed");
    assert_eq!(s["protocol"], "rtmp");
    assert_eq!(s["state"], "live");
    assert!(
        !s.to_string().contains("test-stream-key"),
        "key in the admin API: {s}"
    );
    let m = node.metrics();
    for name in [
        "edge_ingest_streams{protocol=\"rtmp\"} 1",
        "edge_ingest_capacity_milliunits 8000",
        "edge_packager_parts_total",
        "edge_ingest_encode_lag_seconds_bucket",
    ] {
        assert!(m.contains(name), "metrics lack {name}");
    }
    let kick = http_request(
        "DELETE",
        &node.admin_url("/api/v1/streams/one"),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        &[],
        HTTP_TIMEOUT,
    )
    .unwrap();
    assert_eq!(kick.status, 200, "{}", kick.text());
    assert!(
        enc.wait_exit(Duration::from_secs(20)).is_some(),
        "kicked encoder still connected"
    );
    assert!(wait_until(Duration::from_secs(10), || node
        .stream("one")
        .is_none()
        .then_some(()))
    .is_some());
}

#[test]
fn a_stream_ends_with_endlist_after_the_reconnect_window() {
    let node = Node::start(|_| {});
    let mut enc = Encoder::ffmpeg_rtmp(
        &node.rtmp_url("test-stream-key-1"),
        EncOpts {
            duration: Duration::from_secs(8),
            ..EncOpts::default()
        },
    );
    node.wait_media_playlist("one", "360p", 1, FIRST_SEGMENT_TIMEOUT);
    assert!(enc
        .wait_exit(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    // Within the 5 s reconnect window: still live, no ENDLIST.
    let pl = check_ll_hls(
        &get_ok(&node.media_playlist_url("one", "360p")).text(),
        Track::Video,
    )
    .unwrap();
    assert!(!pl.endlist, "ENDLIST before the reconnect window passed");
    let ended = wait_until(Duration::from_secs(20), || {
        let text = get_ok(&node.media_playlist_url("one", "360p")).text();
        text.contains("#EXT-X-ENDLIST").then_some(text)
    })
    .expect("no ENDLIST after the reconnect window");
    let pl = parse_media_playlist(&ended).unwrap();
    assert!(
        pl.preload_hint.is_none(),
        "an ended playlist hints no next part"
    );
    // Still playable from the start of its window.
    let url = node.media_playlist_url("one", "360p");
    get_ok(&resolve_url(&url, &pl.segments[0].uri));
}

#[test]
fn config_check_prints_every_problem_with_its_key_path() {
    let dir = TempDir::new("edge-config-check");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[node]\nid = \"x y\"\n[admin]\ntoken = \"short\"\n[hls]\nwindow_segments = 1\n",
    )
    .unwrap();
    let out = run_edge(&["config", "check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["node.id", "admin.token", "hls.window_segments", "streams"] {
        assert!(
            err.contains(&format!("bad.toml: {key}")),
            "missing {key} in:\n{err}"
        );
    }
    let unknown = dir.path().join("unknown.toml");
    std::fs::write(
        &unknown,
        "[node]\nid = \"x\"\ncolour = 1\n[admin]\ntoken = \"0123456789abcdef\"\n",
    )
    .unwrap();
    let out = run_edge(&["config", "check", unknown.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
    let good = dir.path().join("dev.toml");
    std::fs::write(
        &good,
        String::from_utf8(run_edge(&["config", "dev"]).stdout).unwrap(),
    )
    .unwrap();
    assert!(run_edge(&["config", "check", good.to_str().unwrap()])
        .status
        .success());
}

#[test]
fn a_source_above_the_maximum_bit_rate_is_ended_with_the_reason() {
    let node = Node::start(|c| {
        *c = c.replace(
            "max_source_fps = 30",
            "max_source_fps = 30\nmax_source_kbps = 500",
        )
    });
    let mut fast = Encoder::ffmpeg_rtmp(
        &node.rtmp_url("test-stream-key-1"),
        EncOpts {
            duration: Duration::from_secs(30),
            ..EncOpts::default()
        },
    );
    assert!(!fast
        .wait_exit(Duration::from_secs(30))
        .expect("the refused encoder exits")
        .success());
    let said = fast.log_text();
    assert!(
        said.contains("Server error: source video is")
            && said.contains("above this server's maximum 500 kbit/s"),
        "{said}"
    );
    assert!(node
        .log_text()
        .contains("above this server's maximum 500 kbit/s"));
    assert_eq!(
        metric_value(
            &node.metrics(),
            "edge_ingest_connections_total{protocol=\"rtmp\",result=\"refused_source\"}"
        ),
        1.0
    );
}
