//! End to end: players we did not write play a live stream segment by segment: GStreamer's
//! `playbin3` (which picks `hlsdemux2`) and ffmpeg's HLS demuxer. Neither speaks LL-HLS parts;
//! both must decode the segments without an error while the stream is live.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::{process::Command, time::Duration};

use common::*;

/// Media each player must decode: several segments (2 s each), so it reloads the live
/// playlist a few times.
const PLAY_SECS: u64 = 10;
/// Real time the players may take: they start three segments behind the live edge and then
/// wait for new segments in real time.
const PLAYER_TIMEOUT: Duration = Duration::from_secs(60);
/// At 30 fps, the share of the expected frames a player must show (start-up may skip a few).
const MIN_FRAME_SHARE: f64 = 0.8;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn gstreamer_and_ffmpeg_play_the_live_stream() {
    // The stream hls.js plays in `player_chromium`: the ladder at the product's 200 ms parts.
    let node =
        Node::start(|c| *c = c.replace("part_target = \"333ms\"", "part_target = \"200ms\""));
    let _enc = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    node.wait_media_playlist("one", "360p", 3, FIRST_SEGMENT_TIMEOUT);
    let min_frames = (PLAY_SECS as f64 * 30.0 * MIN_FRAME_SHARE) as usize;

    // GStreamer: playbin3 on the multivariant playlist, video and audio into clocked fakesinks;
    // -v prints one line per video buffer rendered.
    let gst = run_with_timeout(
        Command::new("timeout")
            .arg(format!("{PLAY_SECS}"))
            .args(["gst-launch-1.0", "-v", "playbin3"])
            .arg(format!("uri={}", node.playlist_url("one")))
            .arg("video-sink=fakesink name=vsink sync=true silent=false")
            .arg("audio-sink=fakesink sync=true"),
        PLAYER_TIMEOUT,
    )
    .expect("gst-launch ran");
    let out = text(&gst);
    // `timeout` ends the live playback (124); anything else is GStreamer giving up.
    assert_eq!(
        gst.status.code(),
        Some(124),
        "gst-launch stopped early:\n{out}"
    );
    assert!(
        !out.contains("ERROR"),
        "GStreamer reported an error:\n{out}"
    );
    assert!(
        out.contains("hlsdemux2"),
        "playbin3 did not use hlsdemux2:\n{out}"
    );
    let frames = out
        .lines()
        .filter(|l| l.contains("vsink") && l.contains("chain"))
        .count();
    eprintln!("[players] GStreamer playbin3/hlsdemux2: {frames} video frames in {PLAY_SECS} s");
    // playbin3 prerolls and starts behind the live edge: ask for half the wall time.
    assert!(
        frames >= min_frames / 2,
        "GStreamer rendered {frames} video frames in {PLAY_SECS} s"
    );

    // ffmpeg: its HLS demuxer on a rendition's playlist, decoding PLAY_SECS of video.
    let ff = run_with_timeout(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-stats",
                "-i",
            ])
            .arg(node.media_playlist_url("one", "360p"))
            .args(["-t", &PLAY_SECS.to_string(), "-f", "null", "-"]),
        PLAYER_TIMEOUT,
    )
    .expect("ffmpeg ran");
    let out = text(&ff);
    assert!(ff.status.success(), "ffmpeg failed:\n{out}");
    let frames = out
        .rsplit("frame=")
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    eprintln!("[players] ffmpeg HLS demuxer: {frames} frames decoded for {PLAY_SECS} s of media");
    assert!(
        frames >= min_frames,
        "ffmpeg decoded {frames} frames of {PLAY_SECS} s:\n{out}"
    );
}
