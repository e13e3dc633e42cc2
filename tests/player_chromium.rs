//! End to end: hls.js, Shaka Player and Chromium's own HLS player in headless Chromium play a
//! stream published with ffmpeg over RTMP.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;

/// One test of this file at a time: each runs Chromium next to a node, and the first also
/// transcodes a ladder; two at once (the suite runs two tests per binary) on a 2-core machine
/// with a build beside them starved the transcode, and hls.js stalled on missing audio.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long hls.js plays the stream: a minute, as issue 10 asks, so that a stall that comes
/// only at some segment boundaries or after the first window slid is seen.
const PLAY_SECS: u64 = 60;

/// hls.js joins the stream just after its first segments (the moment a player that was waiting
/// for the stream joins) and plays it for [`PLAY_SECS`] without a stall or a fatal error, at
/// 200 ms parts, with the ladder transcoding beside it.
/// A node at 200 ms parts with the test ladder and ffmpeg publishing to it, once the 360p rung
/// has two segments (the moment a player that was waiting for the stream joins).
fn live_stream() -> (Node, Encoder) {
    let node =
        Node::start(|c| *c = c.replace("part_target = \"333ms\"", "part_target = \"200ms\""));
    let enc = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    node.wait_media_playlist("one", "360p", 2, FIRST_SEGMENT_TIMEOUT);
    (node, enc)
}

/// What every player must do for [`PLAY_SECS`]: no fatal error, no stall once playing, and
/// the playhead moving with the clock.
fn assert_played_through(player: &str, report: &PlayerReport) {
    assert!(
        report.fatal_errors.is_empty(),
        "{player}: fatal errors: {:?}",
        report.fatal_errors
    );
    assert_eq!(
        report.stalls, 0,
        "{player} stalled after it started playing: {:?}",
        report.non_fatal_log
    );
    assert!(
        report.advanced >= PLAY_SECS as f64 - 4.0,
        "{player}: currentTime advanced only {} s in {PLAY_SECS} s",
        report.advanced
    );
}

#[test]
fn hls_js_plays_the_stream_in_chromium() {
    let _one = one_at_a_time();
    let (node, mut enc) = live_stream();
    let report = play_in_chromium(&node.playlist_url("one"), PLAY_SECS);
    println!("hls.js report: {report:?}");
    println!(
        "hls.js live latency: {:?} s (target {:?})",
        report.latency, report.target_latency
    );
    assert_played_through("hls.js", &report);
    // The node answered hls.js's first playlist load when its start position (PART-HOLD-BACK
    // behind the edge) lay within a part past a keyframe (`hls.keyframe_join`): it started
    // there, not up to a GOP (2 s) past the keyframe it had to load and decode from. Room for
    // the time hls.js took to pick the position.
    let (start, from) = (
        report.start_time.unwrap_or(0.0),
        report.buffer_start_at_start,
    );
    let into = start - from.expect("hls.js reported the buffered range it started in");
    assert!(
        (0.0..=KEYFRAME_JOIN_SLACK_S).contains(&into),
        "hls.js started {into:.3} s past the keyframe it loaded from (buffered from {from:?})"
    );
    assert!(enc.is_running());
}

/// How far past its keyframe hls.js may start: a part target (0.205 s as served) and 0.15 s for
/// the playlist's age when hls.js computed the position.
const KEYFRAME_JOIN_SLACK_S: f64 = 0.355;

/// A second LL-HLS player we did not write, Shaka Player, plays the same kind of stream for
/// [`PLAY_SECS`] with its low-latency mode on: no stall, no fatal error, and close to the edge.
/// Pinned at 5.1.12: Shaka 5.2.12 stalls every few seconds on this stream (and jumps 1-2 s
/// gaps) while 5.0.9 and 5.1.12 play it without a stall; its 5.2 live playlist update rebuilds
/// the references of the segment whose parts are growing ("full playlist rebuild selected for
/// overlap recovery" in its debug log), the code path of its LL-HLS regression #10149.
#[test]
fn shaka_player_plays_the_stream_in_chromium() {
    let _one = one_at_a_time();
    let (node, mut enc) = live_stream();
    let report = play_shaka_in_chromium(&node.playlist_url("one"), PLAY_SECS);
    println!("Shaka report: {report:?}");
    assert_eq!(report.player.as_deref(), Some("shaka"));
    assert_played_through("Shaka", &report);
    // Frames shown, not skipped over: 30 fps for nearly all of the time played.
    let frames = report.decoded_frames.unwrap_or(0) as f64;
    assert!(
        frames >= 0.9 * 30.0 * report.advanced,
        "{frames} frames decoded in {} s",
        report.advanced
    );
    // Live, not behind a window: a frame is on screen within a few seconds of its arrival.
    let pdt = report
        .pdt_latency
        .expect("Shaka knows the PDT of the frame playing");
    assert!((0.0..3.0).contains(&pdt), "{pdt} s behind the wall clock");
    assert!(enc.is_running());
}

/// The glass-to-glass measurement of `cargo bench --bench glass`, short, so that CI keeps it
/// working: ffmpeg burns the wall clock into the picture ([`glass::publish`]), hls.js plays
/// the stream in Chromium and glass.mjs reads the clock back off every frame on display. It
/// checks the measurement (frames read, none refused, a latency a live player can have and a
/// join it can time), not the latency goal, which the bench measures and BENCHMARKS.md reports.
#[test]
fn glass_to_glass_reads_the_capture_time_off_the_displayed_frames() {
    let _one = one_at_a_time();
    common::player::ensure_node_modules();
    // Passthrough only (the bench's standalone configuration) at 200 ms parts.
    let node = Node::start(|c| {
        let base = c
            .split("\n[[ladder]]")
            .next()
            .unwrap_or(c)
            .replace("part_target = \"333ms\"", "part_target = \"200ms\"");
        *c = format!(
            "ladder = []\n\n{base}\n[[streams]]\nkey = \"test-stream-key-1\"\nplayback_id = \"one\"\n"
        );
    });
    let mut enc = glass::publish(&node.rtmp_url("test-stream-key-1"), 2, GLASS_PUBLISH);
    node.wait_media_playlist("one", "source", 2, FIRST_SEGMENT_TIMEOUT);
    let (r, stderr) = run_glass(&node.playlist_url("one"), GLASS_SECS, GLASS_WARMUP, "hlsjs");
    assert_frames_read(&r, GLASS_SECS, &stderr);
    // Capture to display on one clock: positive and live (the bench sees about 1 s).
    let p50 = r["p50"].as_f64().unwrap_or(-1.0);
    assert!(
        (100.0..5000.0).contains(&p50),
        "glass-to-glass p50 {p50} ms"
    );
    // The join was timed: playing after the first media playlist, both tracks buffered first.
    let join = &r["join"];
    let at = |k: &str| join[k].as_f64().unwrap_or(-1.0);
    assert!(
        at("playing") >= at("videoBuffered") && at("videoBuffered") > 0.0,
        "join {join}"
    );
    assert!(enc.is_running(), "ffmpeg stopped: {}", enc.log_text());
}

/// Chromium's own HLS player (Chrome has one since 2025: a page that sets an HLS URL as a
/// `<video>`'s source gets it, no script needed) plays the default kind of deployment, a ladder at
/// 200 ms parts, from the multivariant playlist, choosing and switching variants by itself. It
/// plays whole segments (no LL-HLS) and reloads plain playlists, which the keyframe join holds
/// up to a segment: it must play without a stall or an error and read as a live player, a few
/// target durations behind the camera (the bench measured about 7 s; BENCHMARKS.md, stop 33).
#[test]
fn chromium_s_own_hls_player_plays_the_ladder_segment_by_segment() {
    let _one = one_at_a_time();
    common::player::ensure_node_modules();
    let node =
        Node::start(|c| *c = c.replace("part_target = \"333ms\"", "part_target = \"200ms\""));
    let mut enc = glass::publish(&node.rtmp_url("test-stream-key-1"), 2, GLASS_PUBLISH);
    node.wait_media_playlist("one", "360p", 2, FIRST_SEGMENT_TIMEOUT);
    let (r, stderr) = run_glass(
        &node.playlist_url("one"),
        NATIVE_SECS,
        NATIVE_WARMUP,
        "native",
    );
    assert_eq!(r["player"], "chromium", "{r}");
    assert_frames_read(&r, NATIVE_SECS, &stderr);
    assert_eq!(
        r["stallsMeasured"], 0,
        "Chromium's player stalled: {}",
        r["stallLog"]
    );
    // Segments only: more than a target duration (2 s) behind, and not a window (12 s) behind.
    let p50 = r["p50"].as_f64().unwrap_or(-1.0);
    assert!(
        (2000.0..12000.0).contains(&p50),
        "glass-to-glass p50 {p50} ms"
    );
    assert!(enc.is_running(), "ffmpeg stopped: {}", enc.log_text());
}

/// Seconds Chromium's own player is measured, after a warm-up that covers its first variant
/// switch (it starts on the first variant listed and moves up after a segment or two).
const NATIVE_SECS: u64 = 8;
const NATIVE_WARMUP: u64 = 4;

/// Runs glass.mjs on `url` with `player`; its report and its stderr.
fn run_glass(url: &str, secs: u64, warmup: u64, player: &str) -> (serde_json::Value, String) {
    let mut cmd = glass::glass_mjs(url, secs, warmup, player);
    let out = run_with_timeout(&mut cmd, GLASS_TIMEOUT).expect("glass.mjs ran");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "glass.mjs failed: {stderr}");
    let r = glass::report_of(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|e| panic!("{e}; stderr: {stderr}"));
    println!("glass report: {r}");
    (r, stderr)
}

/// The player played without a fatal error, and nearly every frame of the `secs` measured (30
/// fps) was read, hardly any refused.
fn assert_frames_read(r: &serde_json::Value, secs: u64, stderr: &str) {
    assert_eq!(r["started"], true, "{} never played: {stderr}", r["player"]);
    assert_eq!(
        r["fatalErrors"],
        serde_json::json!([]),
        "{} failed",
        r["player"]
    );
    let samples = r["samples"].as_u64().unwrap_or(0);
    assert!(
        samples >= secs * 30 * 8 / 10,
        "{samples} frames read in {secs} s"
    );
    let rejected: u64 = r["rejected"]
        .as_object()
        .map_or(0, |o| o.values().filter_map(|v| v.as_u64()).sum());
    assert!(
        rejected * 20 <= samples,
        "{rejected} frames refused: {}",
        r["rejectedLog"]
    );
}

/// How long the glass test's publisher runs: the node's start, two segments, the player's
/// join and its play, with room.
const GLASS_PUBLISH: Duration = Duration::from_secs(120);
/// Seconds of playback measured, after a warm-up of seconds from the first `playing`.
const GLASS_SECS: u64 = 4;
const GLASS_WARMUP: u64 = 1;
/// How long glass.mjs may take: Chromium's start, the join (up to a GOP for the keyframe join,
/// and glass.mjs waits up to 60 s for `playing`) and the play.
const GLASS_TIMEOUT: Duration = Duration::from_secs(120);

/// TS packet size.
const TS_PACKET: usize = 188;

/// `ts` without the TS packets of the audio PES packets numbered in `lost` (counted from 0 in
/// the order they start): what reaches a demuxer when SRT drops packets that come too late,
/// since a demuxer drops a damaged PES whole. Returns the bytes and how many audio PES there
/// were.
fn drop_audio_pes(ts: &[u8], lost: &[usize]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(ts.len());
    let mut audio_pid = None;
    let mut pes = 0usize;
    let mut dropping = false;
    for p in ts.chunks_exact(TS_PACKET) {
        let pid = (usize::from(p[1] & 0x1f) << 8) | usize::from(p[2]);
        let start = p[1] & 0x40 != 0;
        let payload_at = match (p[3] >> 4) & 0x3 {
            1 => 4,
            3 => 5 + usize::from(p[4]),
            _ => TS_PACKET,
        };
        let payload = p.get(payload_at..).unwrap_or(&[]);
        if start && payload.len() >= 4 && payload[..3] == [0, 0, 1] && payload[3] == 0xc0 {
            audio_pid = Some(pid);
        }
        if Some(pid) == audio_pid {
            if start {
                dropping = lost.contains(&pes);
                pes += 1;
            }
            if dropping {
                continue;
            }
        }
        out.extend_from_slice(p);
    }
    (out, pes)
}

#[test]
fn audio_lost_upstream_is_filled_with_silence_and_plays_without_a_decode_error() {
    let _one = one_at_a_time();
    // A 60 s source, H.264 + AAC at 128 kbit/s in MPEG-TS as an SRT encoder sends it (ffmpeg
    // puts about 8 AAC frames, 170 ms, in each audio PES).
    let dir = TempDir::new("audio-holes");
    let clean = dir.path().join("clean.ts");
    let st = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=15"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "60", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-g", "30", "-keyint_min", "30", "-sc_threshold", "0"])
        .args(["-pix_fmt", "yuv420p", "-b:v", "300k"])
        .args(["-c:a", "aac", "-ar", "48000", "-ac", "2", "-b:a", "128k"])
        .args(["-f", "mpegts"])
        .arg(&clean)
        .status()
        .expect("run ffmpeg");
    assert!(st.success(), "ffmpeg made no clip");
    // Lose one PES every 3 s or so from 6 s on, and two in a row once.
    let ts = std::fs::read(&clean).expect("read the clip");
    let lost: Vec<usize> = (1..=15).map(|i| 20 + i * 17).chain([140]).collect();
    let (holed, pes) = drop_audio_pes(&ts, &lost);
    assert!(pes > 300, "the clip has {pes} audio PES");
    let source = dir.path().join("holes.ts");
    std::fs::write(&source, holed).expect("write the clip");

    let node = Node::start(|_| {});
    let mut enc = Encoder::ffmpeg_srt(
        &node.srt_url("test-stream-key-1"),
        EncOpts {
            source_file: Some(source),
            duration: Duration::from_secs(50),
            ..EncOpts::default()
        },
    );
    node.wait_media_playlist("one", "audio", 2, FIRST_SEGMENT_TIMEOUT);
    let report = play_in_chromium(&node.playlist_url("one"), 16);
    println!("hls.js report: {report:?}");
    // Chrome refuses an AAC frame that claims the hole as its duration, and fails the playback.
    assert!(report.fatal_errors.is_empty(), "{report:?}");
    assert!(report.advanced >= 10.0, "{report:?}");
    // Every part and segment of the audio is as long as the rules want (a hole used to make
    // a short part in the middle of a segment), and the audio decodes with evenly spaced
    // frames, the silence included.
    let url = node.media_playlist_url("one", "audio");
    let pl = check_ll_hls(&get_ok(&url).text(), Track::Audio)
        .unwrap_or_else(|e| panic!("audio playlist: {e:?}"));
    let init = get_ok(&resolve_url(
        &url,
        pl.map_uri.as_deref().expect("EXT-X-MAP"),
    ))
    .body;
    let segments: Vec<Vec<u8>> = pl
        .segments
        .iter()
        .map(|s| get_ok(&resolve_url(&url, &s.uri)).body)
        .collect();
    let steps = packet_steps(&init, &segments);
    assert!(steps.len() > 200, "{} audio packets", steps.len());
    assert!(
        steps.iter().all(|s| *s == 1024),
        "audio packets not one AAC frame apart: {steps:?}"
    );
    let filled = metric_value(&node.metrics(), "edge_packager_audio_frames_filled_total");
    assert!(
        filled >= 8.0,
        "a lost PES is about 8 AAC frames of silence; {filled} filled"
    );
    assert!(enc.is_running(), "ffmpeg stopped:\n{}", enc.log_text());
}

/// The DTS steps (in the track's timescale) between the audio packets of `init` + `media`,
/// from ffprobe.
fn packet_steps(init: &[u8], media: &[Vec<u8>]) -> Vec<i64> {
    let dir = TempDir::new("steps");
    let path = dir.path().join("audio.mp4");
    let mut data = init.to_vec();
    for m in media {
        data.extend_from_slice(m);
    }
    std::fs::write(&path, &data).expect("write audio");
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "a:0", "-show_entries"])
        .args(["packet=dts", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dts: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect();
    dts.windows(2).map(|w| w[1] - w[0]).collect()
}
