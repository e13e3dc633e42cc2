//! What a publisher sends after the RTMP handshake goes into rml_rtmp's server session, the
//! way `ingest::rtmp` feeds it. Any panic here is one a hostile peer could trigger (ingest
//! wraps the call in catch_unwind, but we want to know).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rml_rtmp::sessions::{ServerSession, ServerSessionConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok((mut session, _)) = ServerSession::new(ServerSessionConfig::new()) {
        for chunk in data.chunks(97) {
            if session.handle_input(chunk).is_err() {
                break;
            }
        }
    }
});
