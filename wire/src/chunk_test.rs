//! The chunk reader and writer against rml_rtmp's serializer and deserializer (both ways), fed
//! whole, one byte at a time and split at every point, handed over through serde mid-stream,
//! and fed hostile input.

use super::*;
use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
use rml_rtmp::messages::{MessagePayload, RtmpMessage};
use rml_rtmp::time::RtmpTimestamp;

/// Deterministic bytes.
fn bytes_of(len: usize, seed: u32) -> Bytes {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x.to_be_bytes()[0]
        })
        .collect::<Vec<u8>>()
        .into()
}

/// rml_rtmp's choice of chunk stream by message type (its serializer cannot be told one).
fn rml_csid(type_id: u8) -> u32 {
    match type_id {
        1..=6 => 2,
        18 | 19 => 3,
        9 => 4,
        8 => 5,
        _ => 6,
    }
}

/// Take every message out of the reader, applying SetChunkSize as a peer must.
fn drain(r: &mut ChunkReader, out: &mut Vec<Message>) {
    while let Some(m) = r.next_message().expect("valid stream") {
        if m.type_id == TYPE_SET_CHUNK_SIZE {
            let size = parse_set_chunk_size(&m.payload).expect("chunk size");
            r.set_chunk_size(size).expect("set");
        }
        out.push(m);
    }
}

/// Decode `bytes` pushed in the given pieces.
fn decode_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<Message> {
    let mut r = ChunkReader::new();
    let mut out = Vec::new();
    for p in pieces {
        r.push(p).expect("push");
        drain(&mut r, &mut out);
    }
    r.finish().expect("ends between messages");
    out
}

fn decode(bytes: &[u8]) -> Vec<Message> {
    decode_pieces(bytes.chunks(MAX_BUFFERED_BYTES / 2))
}

fn assert_same(ours: &[Message], theirs: &[MessagePayload]) {
    assert_eq!(ours.len(), theirs.len(), "message count");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert_eq!(a.type_id, b.type_id, "type of message {i}");
        assert_eq!(a.stream_id, b.message_stream_id, "stream of message {i}");
        assert_eq!(a.timestamp, b.timestamp.value, "timestamp of message {i}");
        assert_eq!(a.payload, b.data, "payload of message {i}");
    }
}

/// A stream as rml_rtmp serialises it, and the messages in it: audio, video, data, command
/// and control messages (chunk streams 2 to 6 interleaved), timestamps from `start` (across
/// 0xFFFFFF so extended timestamps appear, with a delta of 2^24 once), lengths around the
/// chunk size, and a SetChunkSize to `new_chunk_size` after message `change_at`.
fn rml_stream(
    force_uncompressed: bool,
    chunk_size: u32,
    new_chunk_size: u32,
    rounds: u32,
    change_at: u32,
    video_lens: &[usize],
) -> (Vec<u8>, Vec<MessagePayload>) {
    let mut ser = ChunkSerializer::new();
    let mut bytes = Vec::new();
    let mut sent = Vec::new();
    if chunk_size != DEFAULT_CHUNK_SIZE {
        change_chunk_size(&mut ser, chunk_size, 0, &mut bytes, &mut sent);
    }
    let mut list = Vec::new();
    let mut t: u32 = EXTENDED_TIMESTAMP - 40 * (rounds / 2);
    for i in 0..rounds {
        let vlen = video_lens[i as usize % video_lens.len()];
        list.push((9u8, 1u32, t, vlen));
        list.push((8, 1, t, 200));
        list.push((4, 0, t, 6));
        if i % 3 == 0 {
            list.push((18, 1, t, 50));
        }
        if i % 4 == 0 {
            list.push((20, 0, t, 140));
            list.push((20, 1, t, 140));
        }
        t = if i == rounds * 3 / 4 {
            t.wrapping_add(0x100_0000)
        } else {
            t.wrapping_add(40)
        };
    }
    for (n, (type_id, sid, t, len)) in list.into_iter().enumerate() {
        let m = MessagePayload {
            timestamp: RtmpTimestamp::new(t),
            type_id,
            message_stream_id: sid,
            data: bytes_of(len, n as u32),
        };
        bytes.extend(
            ser.serialize(&m, force_uncompressed, false)
                .expect("serialize")
                .bytes,
        );
        sent.push(m);
        if n as u32 == change_at {
            change_chunk_size(&mut ser, new_chunk_size, t, &mut bytes, &mut sent);
        }
    }
    (bytes, sent)
}

fn change_chunk_size(
    ser: &mut ChunkSerializer,
    size: u32,
    t: u32,
    bytes: &mut Vec<u8>,
    sent: &mut Vec<MessagePayload>,
) {
    let p = ser
        .set_max_chunk_size(size, RtmpTimestamp::new(t))
        .expect("chunk size");
    bytes.extend(p.bytes);
    sent.push(
        RtmpMessage::SetChunkSize { size }
            .into_message_payload(RtmpTimestamp::new(t), 0)
            .expect("payload"),
    );
}

/// Video frame lengths around the chunk sizes, up to a few chunks of 4096.
const VIDEO: &[usize] = &[5000, 300, 300, 129, 128, 127, 1, 4097, 9000];
/// Shorter ones, for the tests that go through every byte position.
const SHORT_VIDEO: &[usize] = &[300, 129, 1];

const MODES: [(bool, u32, u32); 4] = [
    (false, 128, 4096),
    (true, 128, 4096),
    (false, 4096, 128),
    (true, 4096, 128),
];

#[test]
fn rml_serialized_streams_decode_identically() {
    for (force, size, new_size) in MODES {
        let (bytes, sent) = rml_stream(force, size, new_size, 24, 40, VIDEO);
        let ours = decode(&bytes);
        assert_same(&ours, &sent);
        for m in &ours {
            assert_eq!(m.csid, rml_csid(m.type_id), "csid of type {}", m.type_id);
        }
        assert!(
            ours.iter().any(|m| m.timestamp > EXTENDED_TIMESTAMP)
                && ours.iter().any(|m| m.timestamp < EXTENDED_TIMESTAMP),
            "timestamps on both sides of the extended form"
        );
    }
}

#[test]
fn rml_streams_one_byte_at_a_time_and_split_anywhere() {
    for (force, size, new_size) in MODES {
        let (bytes, sent) = rml_stream(force, size, new_size, 24, 40, VIDEO);
        let whole = decode(&bytes);
        assert_same(&whole, &sent);
        assert_eq!(decode_pieces(bytes.chunks(1)), whole, "byte by byte");
        for k in (0..=bytes.len()).step_by(997) {
            let (a, b) = bytes.split_at(k);
            assert_eq!(decode_pieces([a, b]), whole, "split at {k}");
        }
    }
}

#[test]
fn a_short_stream_split_at_every_point() {
    for (force, size, new_size) in [(false, 128, 64), (true, 128, 64)] {
        let (bytes, sent) = rml_stream(force, size, new_size, 3, 4, SHORT_VIDEO);
        let whole = decode(&bytes);
        assert_same(&whole, &sent);
        for k in 0..=bytes.len() {
            let (a, b) = bytes.split_at(k);
            assert_eq!(decode_pieces([a, b]), whole, "split at {k}");
        }
    }
}

/// What a hand-over does: the state goes through serde_json at `k`, the new owner continues.
fn decode_handed_over(bytes: &[u8], k: usize) -> Vec<Message> {
    let (a, b) = bytes.split_at(k);
    let mut r = ChunkReader::new();
    let mut out = Vec::new();
    r.push(a).expect("push");
    drain(&mut r, &mut out);
    let json = serde_json::to_string(&r).expect("serialise");
    let mut r2: ChunkReader = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(r2, r, "state after the round trip at {k}");
    drop(r);
    r2.push(b).expect("push");
    drain(&mut r2, &mut out);
    r2.finish().expect("ends between messages");
    out
}

#[test]
fn state_handed_over_through_serde_mid_stream_continues() {
    let (bytes, _) = rml_stream(false, 128, 64, 3, 4, SHORT_VIDEO);
    let whole = decode(&bytes);
    for k in 0..=bytes.len() {
        assert_eq!(decode_handed_over(&bytes, k), whole, "hand-over at {k}");
    }
    for (force, size, new_size) in MODES {
        let (bytes, _) = rml_stream(force, size, new_size, 24, 40, VIDEO);
        let whole = decode(&bytes);
        for k in (0..=bytes.len()).step_by(4999) {
            assert_eq!(decode_handed_over(&bytes, k), whole, "hand-over at {k}");
        }
    }
}

#[test]
fn state_holds_unparsed_bytes_and_partial_messages() {
    let m = Message {
        csid: 4,
        timestamp: 0x100_0000,
        type_id: 9,
        stream_id: 1,
        payload: bytes_of(1000, 7),
    };
    let mut bytes = Vec::new();
    write_message(&mut bytes, &m, 128).expect("write");
    let mut r = ChunkReader::new();
    // Into the third chunk's header: two partial chunks parsed, a few header bytes pending.
    r.push(&bytes[..12 + 4 + 128 + 1 + 4 + 128 + 2])
        .expect("push");
    assert_eq!(r.next_message(), Ok(None));
    assert_eq!(r.buffered_len(), 2);
    assert!(matches!(
        r.finish(),
        Err(ChunkError::Truncated {
            buffered: 2,
            incomplete: 1
        })
    ));
    let json = serde_json::to_value(&r).expect("serialise");
    assert_eq!(json["buffered"].as_array().map(Vec::len), Some(2));
    let mut r2: ChunkReader = serde_json::from_value(json).expect("deserialise");
    r2.push(&bytes[12 + 4 + 128 + 1 + 4 + 128 + 2..])
        .expect("push");
    assert_eq!(r2.next_message(), Ok(Some(m)));
    assert_eq!(r2.finish(), Ok(()));
}

#[test]
fn deserialised_state_is_checked() {
    let mut r = ChunkReader::new();
    let (bytes, _) = rml_stream(false, 128, 64, 1, 100, SHORT_VIDEO);
    r.push(&bytes[..200]).expect("push");
    while r.next_message().expect("valid").is_some() {}
    let good = serde_json::to_value(&r).expect("serialise");
    let tamper = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        serde_json::from_value::<ChunkReader>(v)
    };
    assert!(tamper(&|_| {}).is_ok());
    let e = tamper(&|v| v["chunk_size"] = 0.into()).expect_err("chunk size 0");
    assert!(e.to_string().contains("chunk size 0"), "{e}");
    let e = tamper(&|v| v["reading"]["left"] = 100_000.into()).expect_err("chunk too long");
    assert!(e.to_string().contains("chunk longer"), "{e}");
    let e = tamper(&|v| v["streams"]["4"]["last"]["length"] = (MAX_MESSAGE_LEN + 1).into())
        .expect_err("message too long");
    assert!(e.to_string().contains("longer than the limit"), "{e}");
}

fn rml_decode(bytes: &[u8], chunk_size: u32) -> Vec<MessagePayload> {
    let mut d = ChunkDeserializer::new();
    d.set_max_chunk_size(chunk_size as usize).expect("size");
    let mut out = Vec::new();
    let mut input = bytes;
    while let Some(m) = d.get_next_message(input).expect("rml_rtmp reads it") {
        input = &[];
        out.push(m);
    }
    out
}

/// Messages on short and long chunk stream IDs, with timestamps around the extended form
/// and payloads around the chunk size.
fn written_messages() -> Vec<Message> {
    let csids = [2, 3, 6, 63, 64, 200, 319, 320, 1000, MAX_CSID];
    let timestamps = [
        0,
        1,
        0xFF_FFFE,
        0xFF_FFFF,
        0x100_0000,
        0x7FFF_FFFF,
        u32::MAX,
    ];
    let lens = [0, 1, 127, 128, 129, 4096, 4097, 10_000];
    (0..csids.len() * lens.len())
        .map(|i| Message {
            csid: csids[i % csids.len()],
            timestamp: timestamps[i % timestamps.len()],
            type_id: [8, 9, 18, 20, 4][i % 5],
            stream_id: (i % 3) as u32,
            payload: bytes_of(lens[i % lens.len()], i as u32),
        })
        .collect()
}

#[test]
fn written_messages_decode_with_rml_and_with_ours() {
    let msgs = written_messages();
    for chunk_size in [1, 128, 4096, MAX_CHUNK_SIZE] {
        let mut bytes = Vec::new();
        for m in &msgs {
            write_message(&mut bytes, m, chunk_size).expect("write");
        }
        let theirs = rml_decode(&bytes, chunk_size);
        assert_same(&msgs, &theirs);
        let mut r = ChunkReader::new();
        r.set_chunk_size(chunk_size).expect("size");
        let mut ours = Vec::new();
        for p in bytes.chunks(MAX_BUFFERED_BYTES / 2) {
            r.push(p).expect("push");
            drain(&mut r, &mut ours);
        }
        assert_eq!(ours, msgs, "chunk size {chunk_size}");
    }
}

#[test]
fn write_message_layout() {
    let m = Message {
        csid: 320,
        timestamp: 0x0102_0304,
        type_id: 20,
        stream_id: 1,
        payload: Bytes::from_static(&[1, 2, 3, 4, 5]),
    };
    let mut out = Vec::new();
    write_message(&mut out, &m, 3).expect("write");
    #[rustfmt::skip]
    let expected = [
        0x01, 0x00, 0x01, // format 0, csid 320 in the 3-byte form
        0xFF, 0xFF, 0xFF, 0, 0, 5, 20, 1, 0, 0, 0, // timestamp field, length, type, stream (LE)
        0x01, 0x02, 0x03, 0x04, // extended timestamp
        1, 2, 3,
        0xC1, 0x00, 0x01, // format 3
        0x01, 0x02, 0x03, 0x04, // extended timestamp again
        4, 5,
    ];
    assert_eq!(out, expected);

    let m = Message {
        csid: 70,
        timestamp: 40,
        type_id: 8,
        stream_id: 0,
        payload: Bytes::new(),
    };
    let mut out = Vec::new();
    write_message(&mut out, &m, 128).expect("write");
    assert_eq!(out, [0x00, 6, 0, 0, 40, 0, 0, 0, 8, 0, 0, 0, 0]);
}

#[test]
fn write_message_refuses_what_it_cannot_write() {
    let m = Message {
        csid: 3,
        timestamp: 0,
        type_id: 9,
        stream_id: 1,
        payload: Bytes::from_static(b"x"),
    };
    let mut out = Vec::new();
    assert_eq!(
        write_message(&mut out, &m, 0),
        Err(ChunkError::InvalidChunkSize { size: 0 })
    );
    assert!(write_message(&mut out, &m, MAX_CHUNK_SIZE + 1).is_err());
    for csid in [0, 1, MAX_CSID + 1] {
        let m = Message { csid, ..m.clone() };
        assert_eq!(
            write_message(&mut out, &m, 128),
            Err(ChunkError::InvalidCsid { csid })
        );
    }
    let big = Message {
        payload: vec![0; 0x100_0000].into(),
        ..m
    };
    assert_eq!(
        write_message(&mut out, &big, 128),
        Err(ChunkError::TooLongToWrite { len: 0x100_0000 })
    );
    assert!(out.is_empty(), "nothing written on errors");
}

/// A format 0 header, hand-made.
fn fmt0(csid: u8, timestamp: u32, length: u32, type_id: u8, stream_id: u32) -> Vec<u8> {
    let mut b = vec![csid];
    b.extend_from_slice(&timestamp.min(EXTENDED_TIMESTAMP).to_be_bytes()[1..]);
    b.extend_from_slice(&length.to_be_bytes()[1..]);
    b.push(type_id);
    b.extend_from_slice(&stream_id.to_le_bytes());
    if timestamp >= EXTENDED_TIMESTAMP {
        b.extend_from_slice(&timestamp.to_be_bytes());
    }
    b
}

#[test]
fn formats_1_2_and_3_apply_deltas() {
    let mut b = fmt0(4, 1000, 2, 8, 1);
    b.extend_from_slice(&[1, 2]);
    // Format 3 starting a message after format 0: the format 0 timestamp is the delta.
    b.extend_from_slice(&[0xC4, 3, 4]);
    // Format 2, delta 20.
    b.extend_from_slice(&[0x84, 0, 0, 20, 5, 6]);
    // Format 3: the same delta again.
    b.extend_from_slice(&[0xC4, 7, 8]);
    // Format 1, delta 5, length 3, type 9.
    b.extend_from_slice(&[0x44, 0, 0, 5, 0, 0, 3, 9, 9, 9, 9]);
    // Format 2 with an extended delta of 2^24.
    b.extend_from_slice(&[0x84, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0, 1, 1, 1]);
    // Format 3 after it: an extended timestamp, read as this message's delta.
    b.extend_from_slice(&[0xC4, 0, 0, 0, 7, 2, 2, 2]);
    let got: Vec<(u32, u8, u32, Vec<u8>)> = decode(&b)
        .into_iter()
        .map(|m| (m.timestamp, m.type_id, m.stream_id, m.payload.to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1000, 8, 1, vec![1, 2]),
            (2000, 8, 1, vec![3, 4]),
            (2020, 8, 1, vec![5, 6]),
            (2040, 8, 1, vec![7, 8]),
            (2045, 9, 1, vec![9, 9, 9]),
            (2045 + 0x100_0000, 9, 1, vec![1, 1, 1]),
            (2052 + 0x100_0000, 9, 1, vec![2, 2, 2]),
        ]
    );
}

#[test]
fn zero_length_messages() {
    let mut b = fmt0(3, 5, 0, 18, 1);
    b.push(0xC3);
    let got = decode(&b);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|m| m.payload.is_empty()));
    assert_eq!(got[1].timestamp, 10);
}

#[test]
fn huge_message_length_is_refused() {
    let mut r = ChunkReader::new();
    r.push(&fmt0(3, 0, 0xFF_FFFF, 9, 1)).expect("push");
    let e = ChunkError::MessageTooLong {
        csid: 3,
        length: 0xFF_FFFF,
    };
    assert_eq!(r.next_message(), Err(e.clone()));
    assert_eq!(r.next_message(), Err(e), "errors stay");
    // Up to the limit is fine.
    let mut r = ChunkReader::new();
    r.push(&fmt0(3, 0, MAX_MESSAGE_LEN, 9, 1)).expect("push");
    assert_eq!(r.next_message(), Ok(None));
}

#[test]
fn chunk_stream_flood_is_refused() {
    let mut r = ChunkReader::new();
    let mut got = 0;
    let result = (0..=MAX_CHUNK_STREAMS as u32).try_for_each(|i| {
        // The 2-byte basic header form: csid 64 + i.
        let mut b = fmt0(0, 0, 1, 8, 1);
        b.insert(1, i as u8);
        b.push(0xAA);
        r.push(&b)?;
        while r.next_message()?.is_some() {
            got += 1;
        }
        Ok::<_, ChunkError>(())
    });
    assert_eq!(got, MAX_CHUNK_STREAMS);
    assert_eq!(
        result,
        Err(ChunkError::TooManyChunkStreams {
            csid: 64 + MAX_CHUNK_STREAMS as u32
        })
    );
}

#[test]
fn incomplete_messages_are_bounded() {
    let mut r = ChunkReader::new();
    let mut result = Ok(None);
    for csid in 3..6u8 {
        let mut b = fmt0(csid, 0, MAX_MESSAGE_LEN, 9, 1);
        b.extend_from_slice(&[0; 128]);
        r.push(&b).expect("push");
        result = r.next_message();
        if result.is_err() {
            break;
        }
    }
    assert_eq!(
        result,
        Err(ChunkError::TooMuchIncomplete {
            csid: 5,
            length: MAX_MESSAGE_LEN,
            incomplete: MAX_INCOMPLETE_BYTES,
        })
    );
}

#[test]
fn chunk_size_zero_is_refused() {
    let mut r = ChunkReader::new();
    assert_eq!(
        r.set_chunk_size(0),
        Err(ChunkError::InvalidChunkSize { size: 0 })
    );
    assert!(r.set_chunk_size(MAX_CHUNK_SIZE + 1).is_err());
    assert_eq!(r.chunk_size(), DEFAULT_CHUNK_SIZE);
    assert_eq!(
        parse_set_chunk_size(&[0, 0, 0, 0]),
        Err(ChunkError::InvalidChunkSize { size: 0 })
    );
    // The high bit is ignored: this is 0 too.
    assert!(parse_set_chunk_size(&[0x80, 0, 0, 0]).is_err());
    assert_eq!(parse_set_chunk_size(&[0x80, 0, 0x10, 0]), Ok(4096));
    assert_eq!(
        parse_set_chunk_size(&[0, 0, 1]),
        Err(ChunkError::BadSetChunkSize { len: 3 })
    );
    assert_eq!(
        parse_set_chunk_size(&[0, 0, 0, 1, 0]),
        Err(ChunkError::BadSetChunkSize { len: 5 })
    );
}

#[test]
fn truncated_input_waits_and_finish_says_so() {
    let mut bytes = Vec::new();
    let m = Message {
        csid: 5,
        timestamp: 0x100_0000,
        type_id: 8,
        stream_id: 1,
        payload: bytes_of(300, 1),
    };
    write_message(&mut bytes, &m, 128).expect("write");
    for cut in 1..bytes.len() {
        let mut r = ChunkReader::new();
        r.push(&bytes[..cut]).expect("push");
        assert_eq!(r.next_message(), Ok(None), "cut at {cut}");
        assert!(
            matches!(r.finish(), Err(ChunkError::Truncated { .. })),
            "cut at {cut}"
        );
    }
}

#[test]
fn headers_without_an_earlier_message_are_refused() {
    for (b, fmt) in [(0x43u8, 1u8), (0x83, 2), (0xC3, 3)] {
        let mut r = ChunkReader::new();
        r.push(&[b]).expect("push");
        assert_eq!(
            r.next_message(),
            Err(ChunkError::NoPreviousHeader { csid: 3, fmt })
        );
    }
}

#[test]
fn a_header_that_changes_a_message_in_progress_is_refused() {
    let mut b = fmt0(3, 10, 300, 9, 1);
    b.extend_from_slice(&[0; 128]);
    // A restatement continues the message.
    b.extend(fmt0(3, 10, 300, 9, 1));
    b.extend_from_slice(&[0; 128]);
    b.extend(fmt0(3, 10, 200, 9, 1));
    let mut r = ChunkReader::new();
    r.push(&b).expect("push");
    assert_eq!(
        r.next_message(),
        Err(ChunkError::InterruptedMessage {
            csid: 3,
            fmt: 0,
            field: "length",
            received: 256,
            length: 300,
        })
    );
}

#[test]
fn the_input_buffer_is_bounded() {
    let mut b = fmt0(3, 0, 1, 8, 1);
    b.push(0);
    while b.len() < MAX_BUFFERED_BYTES {
        b.extend_from_slice(&[0xC3, 1]);
    }
    b.truncate(MAX_BUFFERED_BYTES);
    let mut r = ChunkReader::new();
    r.push(&b).expect("up to the limit");
    assert_eq!(
        r.push(&[0xC3]),
        Err(ChunkError::BufferFull {
            buffered: MAX_BUFFERED_BYTES,
            pushed: 1
        })
    );
    assert_eq!(r.buffered_len(), MAX_BUFFERED_BYTES);
    let mut n = 0;
    while r.next_message().expect("valid").is_some() {
        n += 1;
    }
    assert_eq!(n, 1 + (MAX_BUFFERED_BYTES - 13) / 2);
    assert!(r.buffered_len() < MAX_HEADER_LEN);
    r.push(&[0xC3]).expect("room again");
}

/// Bytes as a hostile peer might send: random, or a valid stream with bytes flipped. Never a
/// panic, and never more buffered than the limit.
#[test]
fn hostile_bytes_never_panic() {
    let (valid, _) = rml_stream(false, 128, 64, 6, 9, VIDEO);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..3000 {
        let input: Vec<u8> = if round % 2 == 0 {
            let len = (rand() % 600) as usize;
            (0..len).map(|_| rand() as u8).collect()
        } else {
            let mut v = valid.clone();
            for _ in 0..(1 + rand() % 4) {
                let i = (rand() as usize) % v.len();
                v[i] = rand() as u8;
            }
            v
        };
        let piece = 1 + (rand() % 300) as usize;
        let mut r = ChunkReader::new();
        'feed: for p in input.chunks(piece) {
            if r.push(p).is_err() {
                break;
            }
            loop {
                match r.next_message() {
                    Ok(Some(m)) => {
                        if m.type_id == TYPE_SET_CHUNK_SIZE {
                            if let Ok(size) = parse_set_chunk_size(&m.payload) {
                                r.set_chunk_size(size).expect("checked size");
                            }
                        }
                        let mut out = Vec::new();
                        write_message(&mut out, &m, 4096).expect("a read message can be written");
                        let mut again = ChunkReader::new();
                        again.set_chunk_size(4096).expect("size");
                        again.push(&out).expect("push");
                        assert_eq!(again.next_message(), Ok(Some(m)));
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
            assert!(r.buffered_len() <= MAX_BUFFERED_BYTES);
        }
        if round % 50 == 0 {
            let json = serde_json::to_string(&r).expect("serialise");
            let back: ChunkReader = serde_json::from_str(&json).expect("a reader's own state");
            assert_eq!(back, r);
        }
    }
}
