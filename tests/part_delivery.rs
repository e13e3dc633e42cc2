//! End to end: LL-HLS clients that hold the preload-hint request of each rendition (as an
//! LL-HLS player does: blocking playlist reload, then the hinted part) get every part as it is
//! published, and the node measures, from raw samples, how long each frame took from its arrival
//! to the waiting client (`part_delivery` in `GET /api/v1/streams`).
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// How long each client follows its rendition: a few segments, a few hundred frames.
const FOLLOW: Duration = Duration::from_secs(12);

/// A hinted part, or a blocking reload, is answered within this: a part target and the
/// transcode of a frame, with room for a loaded 2-core machine.
const WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the test holds each rendition's p99 to: twice the part target plus the audio's hold
/// for the video (its next frame and 15 ms) and room for a loaded machine. A part that came a
/// part late, or a measurement that counted something else, lands above it. Whether p99 meets
/// issue 10's budget (one part target + 50 ms) is measured, not asserted: `-- --nocapture`
/// prints it, BENCHMARKS.md records it (speed is measured in benchmarks, not in timed tests).
const P99_BOUND_MS: f64 = 600.0;

/// `part{msn}.{index}.m4s` → (msn, index).
fn part_position(uri: &str) -> Option<(u64, usize)> {
    let name = uri.rsplit('/').next()?;
    let (msn, index) = name
        .strip_prefix("part")?
        .strip_suffix(".m4s")?
        .split_once('.')?;
    Some((msn.parse().ok()?, index.parse().ok()?))
}

/// Follows `rendition` for [`FOLLOW`] the way an LL-HLS client does: GET the hinted part (it
/// blocks until the part exists), then reload the playlist blocking on that part to learn the
/// next hint. Returns how many hinted parts it received.
fn follow(node_url: String) -> usize {
    let deadline = Instant::now() + FOLLOW;
    let mut pl = parse_media_playlist(&get_ok(&node_url).text()).expect("playlist parses");
    let mut got = 0;
    while Instant::now() < deadline {
        let hint = pl
            .preload_hint
            .as_ref()
            .expect("a live playlist has a preload hint");
        let (msn, part) = part_position(&hint.uri).expect("hint names a part");
        let r = http_get(&resolve_url(&node_url, &hint.uri), WAIT_TIMEOUT).expect("hinted part");
        assert_eq!(r.status, 200, "hinted part {}: {}", hint.uri, r.text());
        got += 1;
        let r = http_get(&blocking_reload_url(&node_url, msn, part), WAIT_TIMEOUT)
            .expect("blocking reload");
        assert_eq!(r.status, 200, "blocking reload: {}", r.text());
        pl = parse_media_playlist(&r.text()).expect("playlist parses");
    }
    got
}

#[test]
fn frames_reach_clients_waiting_on_the_preload_hint_as_their_part_is_published() {
    let node =
        Node::start(|c| *c = c.replace("part_target = \"333ms\"", "part_target = \"200ms\""));
    let mut enc = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    node.wait_media_playlist("one", "360p", 2, FIRST_SEGMENT_TIMEOUT);
    // Nobody waited yet: nothing measured.
    let before = node.streams();
    assert_eq!(before[0]["part_delivery"], serde_json::json!([]));

    let renditions = ["source", "360p", "audio"];
    let clients: Vec<_> = renditions
        .iter()
        .map(|r| {
            let url = node.media_playlist_url("one", r);
            std::thread::spawn(move || follow(url))
        })
        .collect();
    for (r, c) in renditions.iter().zip(clients) {
        let got = c.join().expect("client thread");
        // 12 s of 200 ms parts; a loaded machine may miss a few.
        assert!(got >= 40, "{r}: only {got} hinted parts in {FOLLOW:?}");
    }

    let streams = node.streams();
    let delivery = streams[0]["part_delivery"]
        .as_array()
        .expect("part_delivery is an array")
        .clone();
    println!("part delivery: {delivery:#?}");
    for r in ["source", "360p", "audio"] {
        let d = delivery
            .iter()
            .find(|d| d["rendition"] == r)
            .unwrap_or_else(|| panic!("no delivery figures for {r}: {delivery:?}"));
        let frames = d["frames"].as_u64().unwrap_or(0);
        let (p50, p99) = (
            d["p50_ms"].as_f64().unwrap_or(f64::NAN),
            d["p99_ms"].as_f64().unwrap_or(f64::NAN),
        );
        // Video at 30 fps and AAC at 47 frames/s for 12 s, less what a hiccup costs.
        assert!(frames >= 200, "{r}: only {frames} frames measured");
        // Half a part is the average wait for a part to fill: a p50 well under it means the
        // measurement left out the wait; two part targets, that parts come late (the audio's
        // hold for the video adds about 30 ms to its own).
        assert!(
            (50.0..=400.0).contains(&p50),
            "{r}: p50 {p50} ms is not the wait for a 200 ms part"
        );
        assert!(
            p99 <= P99_BOUND_MS,
            "{r}: p99 {p99} ms: frames reach waiting clients a part late"
        );
    }
    assert!(
        enc.is_running(),
        "encoder saw an error:\n{}",
        enc.log_text()
    );
}
