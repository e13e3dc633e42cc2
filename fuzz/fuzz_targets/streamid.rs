//! SRT stream IDs come from the caller's handshake.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(r) = wire::streamid::parse(s) {
            assert!(!r.key.is_empty());
        }
    }
});
