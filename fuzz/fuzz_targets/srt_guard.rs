//! Every datagram a peer can send to udp/9000 goes through `srt_guard::inspect` first.
//! Also checks that what the guard forwards is itself accepted unchanged on a second pass
//! (a cleaned packet must be clean).
#![no_main]
use wire::srt_guard::{inspect, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Verdict::Rewrite(kind, cleaned) = inspect(data) {
        assert_eq!(inspect(&cleaned), Verdict::Forward(kind));
    }
});
