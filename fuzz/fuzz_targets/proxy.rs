//! The node reads PROXY v2 headers from its balancers' connections.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::proxy::{decode, Decoded};

fuzz_target!(|data: &[u8]| {
    if let Ok(Decoded::Header(_, used)) = decode(data) {
        assert!(used <= data.len());
    }
});
