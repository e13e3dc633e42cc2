//! The RTMP chunk reader (`wire::chunk::ChunkReader`, what the balancer follows the node's
//! chunk stream with) fed whatever a peer sends, in pieces, with a chunk size set at the start
//! and SetChunkSize messages applied as they come. It must never panic, never hold more than
//! its input buffer allows, and every message it returns must come back the same through
//! `write_message` and a fresh reader.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::chunk::{
    parse_set_chunk_size, write_message, ChunkReader, MAX_BUFFERED_BYTES, TYPE_SET_CHUNK_SIZE,
};

/// The chunk size messages are re-written with.
const REWRITE_CHUNK_SIZE: u32 = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut r = ChunkReader::new();
    // Bit 7: start from a small chunk size (1 to 8) instead of the default 128.
    if flags & 0x80 != 0 && r.set_chunk_size(u32::from(flags & 0x07) + 1).is_err() {
        return;
    }
    let piece = usize::from(flags & 0x7F).max(1);
    for p in rest.chunks(piece) {
        if r.push(p).is_err() {
            return;
        }
        loop {
            let m = match r.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => return,
            };
            if m.type_id == TYPE_SET_CHUNK_SIZE {
                match parse_set_chunk_size(&m.payload) {
                    Ok(size) => assert!(r.set_chunk_size(size).is_ok()),
                    Err(_) => return,
                }
            }
            let mut out = Vec::new();
            assert!(write_message(&mut out, &m, REWRITE_CHUNK_SIZE).is_ok());
            let mut again = ChunkReader::new();
            assert!(again.set_chunk_size(REWRITE_CHUNK_SIZE).is_ok());
            for q in out.chunks(MAX_BUFFERED_BYTES / 2) {
                assert!(again.push(q).is_ok());
            }
            assert_eq!(again.next_message(), Ok(Some(m)));
        }
        assert!(r.buffered_len() <= MAX_BUFFERED_BYTES);
    }
    let _ = r.finish();
});
