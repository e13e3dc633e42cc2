//! Whole RTMP sessions driven through the core without sockets: a real rml_rtmp client on
//! one side, [`ServerCore`] on the other, bytes passed by hand, time passed in.

use super::*;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;

const OPTS: ServerOptions = ServerOptions {
    expect_proxy: false,
    record: false,
    timeouts: NODE_TIMEOUTS,
};

/// A publisher: rml_rtmp's client session behind a client handshake.
struct Client {
    session: ClientSession,
    events: Vec<ClientSessionEvent>,
    to_server: Vec<u8>,
}

impl Client {
    fn results(&mut self, rs: Vec<ClientSessionResult>) {
        for r in rs {
            match r {
                ClientSessionResult::OutboundResponse(p) => self.to_server.extend(p.bytes),
                ClientSessionResult::RaisedEvent(e) => self.events.push(e),
                _ => {}
            }
        }
    }
    fn result(&mut self, r: ClientSessionResult) {
        self.results(vec![r]);
    }
}

/// Shake hands: client handshake against the core, returns the client session.
fn handshake(core: &mut ServerCore, now: Instant) -> Client {
    let (mut hs, c0c1) = ClientHandshake::start().expect("start");
    core.handle_input(&c0c1, now).expect("c0c1");
    let leftover;
    loop {
        let from_server = core.poll_transmit().expect("server answers the handshake");
        match hs.handle_input(&from_server).expect("client handshake") {
            ClientStep::Continue(b) => core.handle_input(&b, now).expect("hs"),
            ClientStep::Done { send, remaining } => {
                leftover = remaining;
                core.handle_input(&send, now).expect("c2");
                break;
            }
        }
    }
    let (session, initial) = ClientSession::new(ClientSessionConfig::new()).expect("client");
    let mut c = Client {
        session,
        events: Vec::new(),
        to_server: Vec::new(),
    };
    c.results(initial);
    if !leftover.is_empty() {
        let rs = c.session.handle_input(&leftover).expect("leftover");
        c.results(rs);
    }
    c
}

/// Pass bytes both ways until neither side has anything to say; returns the core's events.
fn exchange(
    core: &mut ServerCore,
    c: &mut Client,
    now: Instant,
) -> Result<Vec<Event>, SessionError> {
    let mut events = Vec::new();
    for _ in 0..100 {
        let mut moved = false;
        if !c.to_server.is_empty() {
            let b = std::mem::take(&mut c.to_server);
            core.handle_input(&b, now)?;
            moved = true;
        }
        while let Some(e) = core.poll_event() {
            events.push(e);
        }
        if let Some(b) = core.poll_transmit() {
            let rs = c.session.handle_input(&b).expect("client input");
            c.results(rs);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    Ok(events)
}

fn connect(core: &mut ServerCore, app: &str, now: Instant) -> Client {
    let mut c = handshake(core, now);
    let r = c
        .session
        .request_connection(app.to_string())
        .expect("connect");
    c.result(r);
    exchange(core, &mut c, now).expect("connect exchange");
    c
}

fn publish(core: &mut ServerCore, c: &mut Client, key: &str, now: Instant) -> Vec<Event> {
    let r = c
        .session
        .request_publishing(key.to_string(), PublishRequestType::Live)
        .expect("publish");
    c.result(r);
    exchange(core, c, now).expect("publish exchange")
}

#[test]
fn a_whole_publish() {
    let t0 = Instant::now();
    let mut core = ServerCore::new(OPTS, t0);
    let mut c = connect(&mut core, "live", t0);
    assert!(c
        .events
        .iter()
        .any(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted)));
    let ev = publish(&mut core, &mut c, "secret-key", t0);
    assert_eq!(
        ev,
        vec![Event::PublishRequested {
            key: "secret-key".into()
        }]
    );
    assert!(!core.is_publishing());
    core.accept_publish().expect("accept");
    exchange(&mut core, &mut c, t0).expect("accept exchange");
    assert!(core.is_publishing());
    assert!(c
        .events
        .iter()
        .any(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted)));
    // onMetaData with a frame rate of 29.97 (what the pipeline gives elementary inputs).
    let mut meta = rml_rtmp::sessions::StreamMetadata::new();
    meta.video_frame_rate = Some(29.97);
    let r = c.session.publish_metadata(&meta).expect("metadata");
    c.result(r);
    let r = c
        .session
        .publish_video_data(
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2]),
            RtmpTimestamp::new(40),
            false,
        )
        .expect("video");
    c.result(r);
    let r = c
        .session
        .publish_audio_data(
            Bytes::from_static(&[0xaf, 1, 9]),
            RtmpTimestamp::new(41),
            false,
        )
        .expect("audio");
    c.result(r);
    let ev = exchange(&mut core, &mut c, t0).expect("media");
    assert_eq!(
        ev,
        vec![
            Event::Metadata {
                fps_milli: Some(29_970)
            },
            Event::Media {
                kind: MediaKind::Video,
                timestamp: 40,
                data: Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2])
            },
            Event::Media {
                kind: MediaKind::Audio,
                timestamp: 41,
                data: Bytes::from_static(&[0xaf, 1, 9])
            },
        ]
    );
}

#[test]
fn a_recorded_opening_replayed_at_once_publishes() {
    // What the balancer does: record the encoder's opening, replay it to the node in one go.
    let t0 = Instant::now();
    let mut peek = ServerCore::new(
        ServerOptions {
            record: true,
            ..OPTS
        },
        t0,
    );
    let mut c = connect(&mut peek, "live", t0);
    let ev = publish(&mut peek, &mut c, "k", t0);
    assert_eq!(ev, vec![Event::PublishRequested { key: "k".into() }]);
    let recorded = peek.recorded().to_vec();
    assert!(!recorded.is_empty());

    let mut node = ServerCore::new(OPTS, t0);
    let (mut hs, c0c1) = ClientHandshake::start().expect("start");
    node.handle_input(&c0c1, t0).expect("c0c1");
    loop {
        let b = node.poll_transmit().expect("s0s1s2");
        match hs.handle_input(&b).expect("hs") {
            ClientStep::Continue(x) => node.handle_input(&x, t0).expect("c"),
            ClientStep::Done { send, .. } => {
                let mut all = send;
                all.extend_from_slice(&recorded);
                node.handle_input(&all, t0).expect("c2 + replay");
                break;
            }
        }
    }
    assert_eq!(
        node.poll_event(),
        Some(Event::PublishRequested { key: "k".into() })
    );
}

#[test]
fn wrong_application_is_refused_with_a_status() {
    let t0 = Instant::now();
    let mut core = ServerCore::new(OPTS, t0);
    let mut c = handshake(&mut core, t0);
    let r = c.session.request_connection("vod".into()).expect("connect");
    c.result(r);
    let b = std::mem::take(&mut c.to_server);
    assert_eq!(
        core.handle_input(&b, t0),
        Err(SessionError::Refused("unknown application"))
    );
    let answer = core.poll_transmit().expect("a rejection is sent");
    let rs = c.session.handle_input(&answer).expect("client reads it");
    c.results(rs);
    assert!(c
        .events
        .iter()
        .any(|e| matches!(e, ClientSessionEvent::ConnectionRequestRejected { .. })));
}

#[test]
fn obs_key_in_the_server_url() {
    let t0 = Instant::now();
    let mut core = ServerCore::new(OPTS, t0);
    let mut c = connect(&mut core, "live/obs-key", t0);
    let ev = publish(&mut core, &mut c, "", t0);
    assert_eq!(
        ev,
        vec![Event::PublishRequested {
            key: "obs-key".into()
        }]
    );
    assert_eq!(parse_app("live/"), Some(None));
    assert_eq!(parse_app("lives/x"), None);
    assert_eq!(parse_app("/live/"), Some(None));
}

#[test]
fn rejected_publish_tells_the_encoder_and_closes() {
    let t0 = Instant::now();
    let mut core = ServerCore::new(OPTS, t0);
    let mut c = connect(&mut core, "live", t0);
    publish(&mut core, &mut c, "bad", t0);
    core.reject_publish(
        "NetStream.Publish.Denied",
        "publish denied: invalid stream key",
    )
    .expect("reject");
    let b = core.poll_transmit().expect("status sent");
    let rs = c.session.handle_input(&b).expect("client");
    c.results(rs);
    let told = format!("{:?}", c.events);
    assert!(told.contains("NetStream.Publish.Denied"), "{told}");
    assert_eq!(core.poll_timeout(), None, "closed");
    core.handle_input(&[1, 2, 3], t0)
        .expect("input after close is ignored");
    assert!(core.poll_event().is_none());
}

#[test]
fn the_publish_deadline_is_for_the_whole_phase() {
    let t0 = Instant::now();
    let mut core = ServerCore::new(OPTS, t0);
    let _c = handshake(&mut core, t0);
    // A peer trickling a byte every few seconds does not push the deadline.
    for s in [3u64, 6, 9, 12] {
        core.handle_input(&[0x03], t0 + Duration::from_secs(s))
            .expect("trickle");
    }
    assert_eq!(core.poll_timeout(), Some(t0 + NODE_TIMEOUTS.publish));
    core.handle_timeout(t0 + Duration::from_secs(14))
        .expect("not yet");
    assert_eq!(
        core.handle_timeout(t0 + NODE_TIMEOUTS.publish),
        Err(SessionError::Timeout("publish"))
    );
}

#[test]
fn handshake_deadline_and_media_silence() {
    let t0 = Instant::now();
    let mut core = ServerCore::new(OPTS, t0);
    assert_eq!(
        core.handle_timeout(t0 + NODE_TIMEOUTS.handshake),
        Err(SessionError::Timeout("handshake"))
    );

    let mut core = ServerCore::new(OPTS, t0);
    let mut c = connect(&mut core, "live", t0);
    publish(&mut core, &mut c, "k", t0);
    core.accept_publish().expect("accept");
    let t1 = t0 + Duration::from_secs(100);
    core.handle_input(&[], t1).expect("input");
    assert_eq!(core.poll_timeout(), Some(t1 + NODE_TIMEOUTS.media));
    assert_eq!(
        core.handle_timeout(t1 + NODE_TIMEOUTS.media),
        Err(SessionError::Timeout("media"))
    );
}

#[test]
fn garbage_instead_of_a_handshake() {
    let t0 = Instant::now();
    let mut core = ServerCore::new(OPTS, t0);
    let r = core.handle_input(&[0xff; 1537], t0);
    assert!(matches!(r, Err(SessionError::Handshake(_))), "{r:?}");
}

#[test]
fn too_much_before_publish() {
    let t0 = Instant::now();
    let mut core = ServerCore::new(OPTS, t0);
    let _c = connect(&mut core, "live", t0);
    // One valid chunk stream that never publishes: an AMF0 data message declared 1 MB long
    // (chunk stream 3, fmt 0), sent as 128-byte chunks with type-3 continuation headers.
    let mut bytes = vec![0x03, 0, 0, 0, 0x0f, 0x42, 0x40, 0x12, 0, 0, 0, 0];
    while bytes.len() < MAX_BYTES_BEFORE_PUBLISH + 4096 {
        bytes.extend_from_slice(&[0x05; 128]);
        bytes.push(0xc3);
    }
    let r = core.handle_input(&bytes, t0);
    assert_eq!(
        r,
        Err(SessionError::Malformed(
            "too much data before publish".into()
        ))
    );
}

#[test]
fn the_known_rml_rtmp_panic_is_contained() {
    let t0 = Instant::now();
    let mut core = ServerCore::new(OPTS, t0);
    let _c = handshake(&mut core, t0);
    let input = include_bytes!("../../fuzz/regressions/rtmp_session_amf3_truncated.bin");
    let mut r = Ok(());
    for chunk in input.chunks(97) {
        r = core.handle_input(chunk, t0);
        if r.is_err() {
            break;
        }
    }
    assert!(matches!(r, Err(SessionError::Malformed(_))), "{r:?}");
}

#[test]
fn proxy_header_from_a_trusted_balancer() {
    let t0 = Instant::now();
    let mut core = ServerCore::new(
        ServerOptions {
            expect_proxy: true,
            ..OPTS
        },
        t0,
    );
    let src: std::net::SocketAddr = "203.0.113.7:5000".parse().expect("addr");
    let dst: std::net::SocketAddr = "10.0.0.1:1935".parse().expect("addr");
    let header = proxy::encode(src, dst, Some(42));
    core.handle_input(&header[..5], t0).expect("part");
    assert_eq!(core.poll_event(), None);
    core.handle_input(&header[5..], t0).expect("rest");
    match core.poll_event() {
        Some(Event::Proxy(Some(h))) => {
            assert_eq!(h.source, Some(src));
            assert_eq!(h.reservation, Some(42));
        }
        other => panic!("no PROXY event: {other:?}"),
    }
    // Without a header, the handshake starts directly.
    let mut core = ServerCore::new(
        ServerOptions {
            expect_proxy: true,
            ..OPTS
        },
        t0,
    );
    let (_hs, c0c1) = ClientHandshake::start().expect("start");
    core.handle_input(&c0c1, t0).expect("c0c1");
    assert_eq!(core.poll_event(), Some(Event::Proxy(None)));
    assert!(core.poll_transmit().is_some(), "handshake answered");
}

/// Feeds an input the way the `rtmp_core` fuzz target does: a flags byte (PROXY path,
/// recording, chunk length), then the rest in chunks, accepting every publish.
fn replay_fuzz_input(data: &[u8]) -> Result<(), SessionError> {
    let Some((&flags, rest)) = data.split_first() else {
        return Ok(());
    };
    let now = Instant::now();
    let mut core = ServerCore::new(
        ServerOptions {
            expect_proxy: flags & 1 != 0,
            record: flags & 2 != 0,
            timeouts: NODE_TIMEOUTS,
        },
        now,
    );
    for piece in rest.chunks(usize::from(flags >> 2).max(1)) {
        core.handle_input(piece, now)?;
        let _ = core.poll_transmit();
        while let Some(ev) = core.poll_event() {
            if let Event::PublishRequested { .. } = ev {
                core.accept_publish()?;
            }
        }
    }
    Ok(())
}

#[test]
fn the_chunk_length_overflow_the_fuzzer_found_is_contained() {
    let input = include_bytes!("../../fuzz/regressions/rtmp_core_chunk_sub_overflow.bin");
    // Tests build with overflow checks, so rml_rtmp panics inside; the core must turn it
    // into an error for this connection.
    let r = replay_fuzz_input(input);
    assert!(matches!(r, Err(SessionError::Malformed(_))), "{r:?}");
}

#[test]
fn a_publish_failed_mid_stream_tells_the_encoder_why() {
    let t0 = Instant::now();
    let mut core = ServerCore::new(OPTS, t0);
    let mut c = connect(&mut core, "live", t0);
    publish(&mut core, &mut c, "key", t0);
    core.accept_publish().expect("accept");
    exchange(&mut core, &mut c, t0).expect("accept exchange");
    assert!(core.is_publishing());
    core.fail_publish(
        "NetStream.Publish.Rejected",
        "video codec HEVC (Enhanced RTMP hvc1) is not supported yet",
    )
    .expect("fail");
    let b = core.poll_transmit().expect("status sent");
    // The client's own chunk reader takes it as an onStatus with our code; the text and the
    // level travel in it as AMF0 strings.
    let text = b"video codec HEVC (Enhanced RTMP hvc1) is not supported yet";
    assert!(b.windows(text.len()).any(|w| w == text));
    assert!(b.windows(5).any(|w| w == b"error"));
    let rs = c.session.handle_input(&b).expect("client reads the status");
    c.results(rs);
    let told = format!("{:?}", c.events);
    assert!(
        told.contains("UnhandleableOnStatusCode { code: \"NetStream.Publish.Rejected\" }"),
        "{told}"
    );
    assert!(!core.is_publishing());
    assert_eq!(core.poll_timeout(), None, "closed");
}
