//! [`Downstream`] without sockets: a real encoder (rml_rtmp's client session), our server core
//! as the balancer's peek and as the node, bytes passed by hand.

use super::*;
use bytes::Bytes;
use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use wire::rtmp::NODE_TIMEOUTS;

/// A publisher: rml_rtmp's client session behind a client handshake.
struct Encoder {
    session: ClientSession,
    events: Vec<ClientSessionEvent>,
    to_server: Vec<u8>,
}

impl Encoder {
    fn results(&mut self, rs: Vec<ClientSessionResult>) {
        for r in rs {
            match r {
                ClientSessionResult::OutboundResponse(p) => self.to_server.extend(p.bytes),
                ClientSessionResult::RaisedEvent(e) => self.events.push(e),
                _ => {}
            }
        }
    }

    fn accepted(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))
    }
}

/// Shake hands as a client with `core`; returns what `core` sent after its handshake.
fn client_handshake(core: &mut ServerCore, now: Instant) -> Vec<u8> {
    let (mut hs, c0c1) = ClientHandshake::start().expect("start");
    core.handle_input(&c0c1, now).expect("c0c1");
    loop {
        let from_server = core.poll_transmit().expect("server answers the handshake");
        match hs.handle_input(&from_server).expect("client handshake") {
            ClientStep::Continue(b) => core.handle_input(&b, now).expect("handshake"),
            ClientStep::Done { send, remaining } => {
                core.handle_input(&send, now).expect("c2");
                let mut rest = remaining;
                rest.extend(core.poll_transmit().unwrap_or_default());
                return rest;
            }
        }
    }
}

/// Pass bytes between the encoder and the balancer's core until neither has anything to say.
fn exchange(core: &mut ServerCore, enc: &mut Encoder, now: Instant) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..100 {
        let mut moved = false;
        if !enc.to_server.is_empty() {
            let b = std::mem::take(&mut enc.to_server);
            core.handle_input(&b, now).expect("core input");
            moved = true;
        }
        while let Some(e) = core.poll_event() {
            events.push(e);
        }
        if let Some(b) = core.poll_transmit() {
            let rs = enc.session.handle_input(&b).expect("encoder input");
            enc.results(rs);
            moved = true;
        }
        if !moved {
            break;
        }
    }
    events
}

/// The peek: an encoder publishes `key` to the balancer's core, which records its opening.
fn peeked_encoder(now: Instant) -> (Encoder, ServerCore) {
    let mut balancer = ServerCore::new(
        ServerOptions {
            expect_proxy: false,
            record: true,
            timeouts: PEEK_TIMEOUTS,
        },
        now,
    );
    let after_handshake = client_handshake(&mut balancer, now);
    let (session, initial) = ClientSession::new(ClientSessionConfig::new()).expect("client");
    let mut enc = Encoder {
        session,
        events: Vec::new(),
        to_server: Vec::new(),
    };
    enc.results(initial);
    let rs = enc
        .session
        .handle_input(&after_handshake)
        .expect("session start");
    enc.results(rs);
    let r = enc
        .session
        .request_connection("live".into())
        .expect("connect");
    enc.results(vec![r]);
    exchange(&mut balancer, &mut enc, now);
    assert!(enc
        .events
        .iter()
        .any(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted)));
    let r = enc
        .session
        .request_publishing("the-key".into(), PublishRequestType::Live)
        .expect("publish");
    enc.results(vec![r]);
    let events = exchange(&mut balancer, &mut enc, now);
    assert_eq!(
        events,
        vec![Event::PublishRequested {
            key: "the-key".into()
        }]
    );
    assert!(!enc.accepted());
    (enc, balancer)
}

/// The node's side of the hand-over: handshake, the replayed opening, then the accepted
/// publish. Returns what the node sent before accepting and what it sent on accepting.
fn node_replies(recorded: &[u8], now: Instant) -> (Vec<u8>, Vec<u8>) {
    let mut node = ServerCore::new(
        ServerOptions {
            expect_proxy: false,
            record: false,
            timeouts: NODE_TIMEOUTS,
        },
        now,
    );
    let mut opening = client_handshake(&mut node, now);
    node.handle_input(recorded, now).expect("replayed opening");
    opening.extend(node.poll_transmit().unwrap_or_default());
    assert_eq!(
        node.poll_event(),
        Some(Event::PublishRequested {
            key: "the-key".into()
        })
    );
    node.accept_publish().expect("accept");
    let accepted = node.poll_transmit().expect("the publish status");
    (opening, accepted)
}

#[test]
fn the_nodes_publish_status_reaches_the_encoder() {
    let now = Instant::now();
    let (mut enc, balancer) = peeked_encoder(now);
    let (opening, accepted) = node_replies(balancer.recorded(), now);
    assert!(!opening.is_empty());

    let mut down = Downstream::new(balancer.chunk_size()).expect("downstream");
    let first = down.on_node_bytes(&opening).expect("node opening");
    assert!(
        first.is_empty(),
        "the node's answers to connect and createStream are not forwarded"
    );
    let to_encoder = down.on_node_bytes(&accepted).expect("node status");
    assert!(!to_encoder.is_empty());
    let rs = enc
        .session
        .handle_input(&to_encoder)
        .expect("the encoder reads it");
    enc.results(rs);
    assert!(enc.accepted(), "events: {:?}", enc.events);

    // The same bytes one at a time, and with the state handed over through serde at every
    // point, give the encoder the same bytes.
    let all: Vec<u8> = [opening, accepted].concat();
    let mut one = Downstream::new(balancer.chunk_size()).expect("downstream");
    let mut bytewise = Vec::new();
    for b in &all {
        bytewise.extend(one.on_node_bytes(std::slice::from_ref(b)).expect("byte"));
    }
    assert_eq!(bytewise, to_encoder);
    for k in 0..=all.len() {
        let (a, b) = all.split_at(k);
        let mut d = Downstream::new(balancer.chunk_size()).expect("downstream");
        let mut out = d.on_node_bytes(a).expect("before");
        let json = serde_json::to_string(&d).expect("serialise");
        let mut d2: Downstream = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(d2, d);
        out.extend(d2.on_node_bytes(b).expect("after"));
        assert_eq!(out, to_encoder, "hand-over at {k}");
    }
}

/// An AMF0 command (type 20) payload starting with `name`: the rest is not looked at.
fn command(name: &str) -> Bytes {
    let mut b = vec![0x02, 0, name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(&[0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x05]);
    b.into()
}

fn payload(type_id: u8, t: u32, data: Bytes) -> MessagePayload {
    MessagePayload {
        timestamp: RtmpTimestamp::new(t),
        type_id,
        message_stream_id: 1,
        data,
    }
}

#[test]
fn the_nodes_chunk_size_applies_to_the_node_side_only() {
    let mut node = ChunkSerializer::new();
    let mut bytes = Vec::new();
    bytes.extend(
        node.set_max_chunk_size(4096, RtmpTimestamp::new(0))
            .expect("size")
            .bytes,
    );
    let dropped = [
        payload(20, 0, command("_result")),
        // An AMF0 data message named onStatus is not the publish status.
        payload(18, 0, command("onStatus")),
    ];
    let status = payload(20, 5, command("onStatus"));
    let big = payload(18, 0x100_0000, vec![7u8; 10_000].into());
    let after = payload(9, 0x100_0040, vec![9u8; 500].into());
    for m in &dropped {
        bytes.extend(node.serialize(m, false, false).expect("ser").bytes);
    }
    bytes.extend(node.serialize(&status, false, false).expect("ser").bytes);
    bytes.extend(node.serialize(&big, false, false).expect("ser").bytes);
    bytes.extend(
        node.set_max_chunk_size(64, RtmpTimestamp::new(0))
            .expect("size")
            .bytes,
    );
    bytes.extend(node.serialize(&after, false, false).expect("ser").bytes);

    let mut down = Downstream::new(128).expect("downstream");
    let out = down.on_node_bytes(&bytes).expect("node bytes");

    let mut encoder = ChunkDeserializer::new();
    let mut got = Vec::new();
    let mut input = &out[..];
    while let Some(m) = encoder.get_next_message(input).expect("encoder reads it") {
        input = &[];
        got.push(m);
    }
    assert_eq!(got, vec![status, big, after]);
}

#[test]
fn bad_chunk_sizes_and_bytes_from_the_node_are_errors() {
    assert!(matches!(
        Downstream::new(0),
        Err(PeekError::Chunk(ChunkError::InvalidChunkSize { size: 0 }))
    ));
    // SetChunkSize 0 (the high bit is ignored) from the node.
    let set_zero = [0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0x80, 0, 0, 0];
    let mut down = Downstream::new(4096).expect("downstream");
    assert!(matches!(
        down.on_node_bytes(&set_zero),
        Err(PeekError::Chunk(ChunkError::InvalidChunkSize { size: 0 }))
    ));
    // A continuation header on a chunk stream never opened.
    let mut down = Downstream::new(4096).expect("downstream");
    assert!(matches!(
        down.on_node_bytes(&[0xC3, 1, 2, 3]),
        Err(PeekError::Chunk(ChunkError::NoPreviousHeader {
            csid: 3,
            fmt: 3
        }))
    ));
}

#[test]
fn a_large_read_from_the_node_is_taken_in_pieces() {
    // More than the chunk reader's input buffer in one call: forwarded whole.
    let mut node = ChunkSerializer::new();
    let mut bytes = Vec::new();
    let status = payload(20, 0, command("onStatus"));
    bytes.extend(node.serialize(&status, false, false).expect("ser").bytes);
    let mut sent = vec![status];
    for i in 0..3 * wire::chunk::MAX_BUFFERED_BYTES / 1000 {
        let m = payload(9, i as u32 * 40, vec![i as u8; 1000].into());
        bytes.extend(node.serialize(&m, false, false).expect("ser").bytes);
        sent.push(m);
    }
    let mut down = Downstream::new(4096).expect("downstream");
    let out = down.on_node_bytes(&bytes).expect("node bytes");
    let mut encoder = ChunkDeserializer::new();
    encoder.set_max_chunk_size(4096).expect("size");
    let mut got = Vec::new();
    let mut input = &out[..];
    while let Some(m) = encoder.get_next_message(input).expect("encoder reads it") {
        input = &[];
        got.push(m);
    }
    assert_eq!(got, sent);
}
