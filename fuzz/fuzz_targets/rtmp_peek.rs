//! The balancer's side of an RTMP hand-over that reads the node's bytes (the `rtmp_core`
//! target covers the encoder's side, `ServerCore` with recording): the client handshake
//! with the node (`wire::rtmp::ClientHandshake`), then everything the node sends goes through
//! `balancer::rtmp_peek::Downstream`, which drops the answers the balancer already gave and
//! re-serialises the rest for the encoder, and which a balancer hand-over serialises (JSON)
//! mid-stream. It must never panic; what it sends the encoder must read back as whole messages
//! at the encoder's chunk size, with no SetChunkSize; a state serialised and read back must
//! go on exactly as the original.
#![no_main]
use balancer::rtmp_peek::Downstream;
use libfuzzer_sys::fuzz_target;
use wire::chunk::{ChunkReader, MAX_BUFFERED_BYTES, TYPE_SET_CHUNK_SIZE};
use wire::rtmp::{ClientHandshake, ClientStep};

const ENCODER_CHUNK_SIZES: [u32; 4] = [128, 4096, 1, 60_000];

fuzz_target!(
    // As `edge` does at start: a panic `wire::contain` catches ends that connection only.
    // Without it, libFuzzer's hook aborts on the caught panics too; it still sees every other.
    init: wire::contain::install_quiet_hook(),
    |data: &[u8]| {
        let Some((&flags, rest)) = data.split_first() else {
            return;
        };
        let encoder_chunk_size = ENCODER_CHUNK_SIZES[usize::from(flags & 3)];
        let piece = usize::from(flags >> 3).max(1) * 7;
        let mut pieces = rest.chunks(piece);
        // Bit 2: start with the client handshake, as `handshake_with_node` does; its leftover is
        // the node's first chunk-stream bytes.
        let mut first = Vec::new();
        if flags & 4 != 0 {
            let Ok((mut hs, _c0c1)) = ClientHandshake::start() else {
                return;
            };
            loop {
                let Some(p) = pieces.next() else {
                    return;
                };
                match hs.handle_input(p) {
                    Ok(ClientStep::Continue(_)) => {}
                    Ok(ClientStep::Done { remaining, .. }) => {
                        first = remaining;
                        break;
                    }
                    Err(_) => return,
                }
            }
        }
        let Ok(mut down) = Downstream::new(encoder_chunk_size) else {
            return;
        };
        let mut encoder = ChunkReader::new();
        assert!(encoder.set_chunk_size(encoder_chunk_size).is_ok());
        let mut handed_over = false;
        for p in std::iter::once(first.as_slice()).chain(pieces) {
            // Once, part way: what a hand-over does with a live relay.
            if !handed_over && p.first().is_some_and(|b| b & 1 != 0) {
                handed_over = true;
                let json = serde_json::to_vec(&down).expect("Downstream serialises");
                let again: Downstream = serde_json::from_slice(&json).expect("and reads back");
                assert_eq!(again, down);
                down = again;
            }
            let out = match down.on_node_bytes(p) {
                Ok(out) => out,
                Err(_) => return,
            };
            for q in out.chunks(MAX_BUFFERED_BYTES / 2) {
                assert!(encoder.push(q).is_ok());
                loop {
                    match encoder.next_message() {
                        Ok(Some(m)) => assert_ne!(m.type_id, TYPE_SET_CHUNK_SIZE),
                        Ok(None) => break,
                        Err(e) => panic!("the encoder cannot read what we sent it: {e}"),
                    }
                }
            }
            // Every message is written whole, so nothing is left half read.
            assert_eq!(encoder.buffered_len(), 0);
        }
    }
);
