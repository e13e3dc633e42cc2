//! Our RTMP server core (`wire::rtmp::ServerCore`, what node and balancer run) fed whatever a
//! peer sends, in chunks, with the PROXY header path on or off, accepting every publish. It
//! must never panic (rml_rtmp's panics are caught inside), and must never hold more input
//! than its caps allow.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tokio::time::Instant;
use wire::rtmp::{Event, ServerCore, ServerOptions, NODE_TIMEOUTS};

fuzz_target!(
    // As `edge` does at start: a panic `wire::contain` catches ends that connection only.
    // Without it, libFuzzer's hook aborts on the caught panics too; it still sees every other.
    init: wire::contain::install_quiet_hook(),
    |data: &[u8]| {
        let Some((&flags, rest)) = data.split_first() else {
            return;
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
        let chunk = usize::from(flags >> 2).max(1);
        for piece in rest.chunks(chunk) {
            if core.handle_input(piece, now).is_err() {
                break;
            }
            let _ = core.poll_transmit();
            while let Some(ev) = core.poll_event() {
                if let Event::PublishRequested { .. } = ev {
                    if core.accept_publish().is_err() {
                        return;
                    }
                }
            }
            assert!(core.recorded().len() <= wire::rtmp::MAX_BYTES_BEFORE_PUBLISH);
        }
    }
);
