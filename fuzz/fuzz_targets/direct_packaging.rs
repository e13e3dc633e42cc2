//! What an RTMP publish with nothing to encode goes through without GStreamer
//! (`ingest::direct`): the reading of the publisher's H.264 and AAC configurations
//! (`ingest::bitstream::{parse_avcc, parse_asc}`), the IDR search in its access units
//! (`has_idr`), the decision which way the stream goes and the direct stream itself, fed
//! arbitrary FLV bodies. None may panic; a configuration that reads gives a picture of 1 to
//! 16,384 pixels a side and a sample rate above 0.
#![no_main]
use bytes::Bytes;
use ingest::bitstream::{has_idr, parse_asc, parse_avcc};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = parse_avcc(data) {
        assert!((1..=16_384).contains(&a.width) && (1..=16_384).contains(&a.height));
        assert!(matches!(a.nal_length_size, 1 | 2 | 4));
        let _ = a.describe();
    }
    if let Ok(a) = parse_asc(data) {
        assert!(a.sample_rate > 0 && (1..=8).contains(&a.channels));
    }
    for n in [1, 2, 4] {
        let _ = has_idr(data, n);
    }
    // The same bytes as a publish: messages of (audio?, timestamp, body).
    let mut u = Unstructured::new(data);
    let mut messages = Vec::new();
    // (An exhausted `Unstructured` yields zeros forever: stop when the bytes are used up.)
    while let (false, Ok(audio), Ok(ts), Ok(len)) = (
        u.is_empty(),
        u.arbitrary::<bool>(),
        u.arbitrary::<u16>(),
        u.int_in_range::<usize>(0..=256),
    ) {
        let Ok(body) = u.bytes(len) else { break };
        messages.push((audio, u32::from(ts), Bytes::copy_from_slice(body)));
    }
    ingest::direct::fuzzing::feed(&messages);
});
