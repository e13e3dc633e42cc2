//! End to end: hls.js in headless Chromium plays a stream published with ffmpeg over RTMP.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use common::*;

#[test]
fn hls_js_plays_the_stream_in_chromium() {
    let node =
        Node::start(|c| *c = c.replace("part_target = \"333ms\"", "part_target = \"200ms\""));
    let mut enc = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    node.wait_media_playlist("one", "360p", 2, FIRST_SEGMENT_TIMEOUT);
    let report = play_in_chromium(&node.playlist_url("one"), 10);
    println!("hls.js report: {report:?}");
    println!(
        "hls.js live latency: {:?} s (target {:?})",
        report.latency, report.target_latency
    );
    assert!(
        report.fatal_errors.is_empty(),
        "fatal errors: {:?}",
        report.fatal_errors
    );
    assert!(
        report.advanced >= 6.0,
        "currentTime advanced only {} s in 10 s",
        report.advanced
    );
    assert!(enc.is_running());
}
