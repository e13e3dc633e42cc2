//! End to end: Enhanced RTMP (issue 13) from a current ffmpeg (7.x, the static build of the
//! imageio-ffmpeg wheel), and HEVC over SRT. HEVC over either is served as `hvc1`, AV1 over
//! Enhanced RTMP as `av01`, next to H.264 rungs made from them; a codec the node cannot take
//! (VP9) is refused with an RTMP status that names it, the moment the codec is known, and no
//! other stream on the node notices. hls.js in Chromium plays what it can decode of each.
// End-to-end tests drive real processes on real time; the ban on the std clock (clippy.toml)
// is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;

/// One test of this file at a time: each runs a current encoder (x265, libaom) and a ladder
/// from its decoded source, two with Chromium beside them; two at once (the suite runs two
/// tests per binary) on a 2-core machine starved the ladder and the player once.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// ffmpeg 7 publishing a test pattern encoded with `codec` (and its options) to `url`; waits
/// for it to end (the node refuses it) and returns its log.
fn publish_until_refused(url: &str, codec: &[&str]) -> String {
    let mut cmd = std::process::Command::new(modern_ffmpeg());
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "info", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "20"])
        .args(codec)
        .args(["-g", "50", "-c:a", "aac", "-f", "flv", url]);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30)).expect("ffmpeg 7");
    assert!(
        !out.status.success(),
        "ffmpeg was not stopped: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a rendition's last segment decodes to.
fn decode(node: &Node, pid: &str, rendition: &str) -> ProbeResult {
    let url = node.media_playlist_url(pid, rendition);
    let pl = node.wait_media_playlist(pid, rendition, 2, Duration::from_secs(10));
    let init = get_ok(&resolve_url(
        &url,
        pl.map_uri.as_deref().expect("EXT-X-MAP"),
    ))
    .body;
    let seg = pl.segments.last().expect("a segment");
    let media = get_ok(&resolve_url(&url, &seg.uri)).body;
    ffprobe_decode(&init, &[&media]).unwrap_or_else(|e| panic!("{rendition}: {e}"))
}

/// The decode time (s) of the first fragment of segment `msn` of a rendition (its init
/// segment's mdhd timescale, its first tfdt).
fn segment_start(node: &Node, pid: &str, rendition: &str, msn: u64) -> f64 {
    let url = node.media_playlist_url(pid, rendition);
    let init = get_ok(&resolve_url(&url, "init.mp4")).body;
    let seg = get_ok(&resolve_url(&url, &format!("seg{msn}.m4s"))).body;
    let find = |b: &[u8], tag: &[u8]| b.windows(4).position(|w| w == tag).expect("a box");
    let be = |b: &[u8]| b.iter().fold(0u64, |v, x| (v << 8) | u64::from(*x));
    let m = find(&init, b"mdhd") + 4;
    let timescale = if init[m] == 1 {
        be(&init[m + 20..m + 24])
    } else {
        be(&init[m + 12..m + 16])
    };
    let t = find(&seg, b"tfdt") + 4;
    let decode = if seg[t] == 1 {
        be(&seg[t + 4..t + 12])
    } else {
        be(&seg[t + 4..t + 8])
    };
    decode as f64 / timescale as f64
}

/// Every rendition's segment N starts at the same media time: a player switching variants, or
/// playing a rung with the audio rendition, stays on one timeline (x264 once put its rungs
/// 1,000 hours after the source and the audio, and hls.js never started a rung).
fn renditions_share_a_timeline(node: &Node, pid: &str) {
    let pl = node.wait_media_playlist(pid, "source", 3, Duration::from_secs(20));
    let msn = pl.media_sequence_tag.unwrap_or(0) + pl.segments.len() as u64 - 2;
    let source = segment_start(node, pid, "source", msn);
    for r in ["360p", "audio"] {
        let t = segment_start(node, pid, r, msn);
        assert!(
            (t - source).abs() < 0.5,
            "segment {msn}: {r} starts at {t} s, the source at {source} s"
        );
    }
}

/// hls.js in headless Chromium plays the stream's multivariant playlist: it takes a variant
/// its MediaSource can decode (the H.264 rungs where the source codec is not).
fn plays_in_a_browser(node: &Node, pid: &str) {
    let report = play_in_chromium(&node.playlist_url(pid), 12);
    assert!(report.fatal_errors.is_empty(), "{report:?}");
    assert!(report.advanced >= 4.0, "{report:?}");
}

/// ffmpeg 7 publishing a 854x480 30 fps test pattern encoded with `codec` (and its options)
/// to `key` on `node` for a minute, until the source, 360p and audio renditions have two
/// segments each; killed when the handle drops.
fn publish_modern(node: &Node, key: &str, codec: &[&str]) -> KillOnDrop {
    let mut cmd = std::process::Command::new(modern_ffmpeg());
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=854x480:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-t", "60"])
        .args(codec)
        .args(["-c:a", "aac", "-f", "flv"])
        .arg(node.rtmp_url(key))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = KillOnDrop(cmd.spawn().expect("ffmpeg 7"));
    for r in ["source", "360p", "audio"] {
        node.wait_media_playlist("one", r, 2, Duration::from_secs(40));
    }
    child
}

#[test]
fn hevc_over_enhanced_rtmp_is_served_and_vp9_refused_by_name() {
    let _one = one_at_a_time();
    let node = Node::start(|_| {});
    let mut h264 = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-2"), EncOpts::default());
    node.wait_media_playlist("two", "source", 1, Duration::from_secs(30));
    let session = node.stream("two").expect("listed")["session_id"].clone();

    // HEVC from ffmpeg 7 over Enhanced RTMP (what OBS 30+ sends when HEVC is chosen).
    let mut hevc = publish_modern(
        &node,
        "test-stream-key-1",
        &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error:keyint=60:min-keyint=60:scenecut=0:bframes=0",
        ],
    );
    let mv = get_ok(&node.playlist_url("one")).text();
    assert!(mv.contains("CODECS=\"hvc1.1.6.L"), "{mv}");
    let source = decode(&node, "one", "source");
    assert_eq!(source.codec, "hevc", "{source:?}");
    assert_eq!((source.width, source.height), (Some(854), Some(480)));
    assert!(source.frames_decoded >= 50, "{source:?}");
    for r in ["360p", "240p"] {
        let rung = decode(&node, "one", r);
        assert_eq!(rung.codec, "h264", "{rung:?}");
        assert!(rung.frames_decoded >= 50, "{rung:?}");
    }
    let audio = decode(&node, "one", "audio");
    assert_eq!(audio.codec, "aac", "{audio:?}");
    renditions_share_a_timeline(&node, "one");
    plays_in_a_browser(&node, "one");
    assert!(
        hevc.0.try_wait().expect("ffmpeg state").is_none(),
        "the HEVC encoder stopped"
    );
    drop(hevc);

    // VP9 is refused by name, as soon as its codec is known.
    let log = publish_until_refused(
        &node.rtmp_url("test-stream-key-1"),
        &[
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
        ],
    );
    assert!(
        log.contains(
            "video codec VP9 (Enhanced RTMP vp09) is not supported yet; set the encoder to H.264, HEVC or AV1"
        ),
        "ffmpeg did not show the reason:\n{log}"
    );
    assert!(node.log_text().contains("video codec VP9"));
    assert_eq!(
        metric_value(
            &node.metrics(),
            "edge_ingest_connections_total{protocol=\"rtmp\",result=\"refused_codec\"}"
        ),
        1.0
    );
    // The H.264 stream beside them never noticed.
    assert_eq!(node.stream("two").expect("listed")["session_id"], session);
    assert!(h264.is_running(), "ffmpeg stopped:\n{}", h264.log_text());
}

#[test]
fn av1_over_enhanced_rtmp_is_served_as_av01_with_h264_rungs() {
    let _one = one_at_a_time();
    let node = Node::start(|_| {});
    // AV1 from ffmpeg 7 over Enhanced RTMP (OBS 30+ sends the same with its AV1 encoders):
    // libaom in real-time mode, a keyframe every 2 s.
    let mut av1 = publish_modern(
        &node,
        "test-stream-key-1",
        &[
            "-c:v",
            "libaom-av1",
            "-usage",
            "realtime",
            "-cpu-used",
            "8",
            "-row-mt",
            "1",
            "-g",
            "60",
            "-b:v",
            "1M",
        ],
    );
    // Main profile, level 3.0 for 854x480 at 30 fps, main tier, 8 bits; the rungs are H.264.
    let mv = get_ok(&node.playlist_url("one")).text();
    assert!(mv.contains("CODECS=\"av01.0.04M.08,mp4a.40.2\""), "{mv}");
    assert!(mv.contains("CODECS=\"avc1."), "{mv}");
    let source = decode(&node, "one", "source");
    assert_eq!(source.codec, "av1", "{source:?}");
    assert_eq!((source.width, source.height), (Some(854), Some(480)));
    assert!(source.frames_decoded >= 50, "{source:?}");
    // Samples carry no temporal delimiter (OBU type 2 with size 0: 0x12 0x00).
    let pl = node.wait_media_playlist("one", "source", 2, Duration::from_secs(10));
    let seg = get_ok(&resolve_url(
        &node.media_playlist_url("one", "source"),
        &pl.segments.last().expect("a segment").uri,
    ))
    .body;
    let mdat = seg.windows(4).position(|w| w == b"mdat").expect("an mdat");
    assert_ne!(
        &seg[mdat + 4..mdat + 6],
        &[0x12, 0x00],
        "a temporal delimiter"
    );
    for (r, size) in [("360p", (640, 360)), ("240p", (426, 240))] {
        let rung = decode(&node, "one", r);
        assert_eq!(rung.codec, "h264", "{rung:?}");
        assert_eq!((rung.width, rung.height), (Some(size.0), Some(size.1)));
        assert!(rung.frames_decoded >= 50, "{rung:?}");
    }
    let audio = decode(&node, "one", "audio");
    assert_eq!(audio.codec, "aac", "{audio:?}");
    let s = node.stream("one").expect("listed");
    assert!(
        s["stats"]["codec"]
            .as_str()
            .is_some_and(|c| c.starts_with("AV1")),
        "{s}"
    );
    // Every rung keeps the source's 30 fps (libaom states no frame rate in the bitstream:
    // the rate comes from the publisher's metadata).
    for rung in s["stats"]["rungs"].as_array().expect("rungs") {
        let fps = rung["fps"].as_f64().unwrap_or(0.0);
        assert!((28.0..=32.0).contains(&fps), "{rung}");
    }
    renditions_share_a_timeline(&node, "one");
    plays_in_a_browser(&node, "one");
    assert!(
        av1.0.try_wait().expect("ffmpeg state").is_none(),
        "the AV1 encoder stopped"
    );
}

/// Kills a process the harness did not start when the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn hevc_over_srt_is_served_as_hvc1_with_h264_rungs() {
    let _one = one_at_a_time();
    let node = Node::start(|_| {});
    let mut hevc = Encoder::ffmpeg_srt(
        &node.srt_url("test-stream-key-1"),
        EncOpts {
            extra: vec![
                "-c:v".into(),
                "libx265".into(),
                "-x265-params".into(),
                "log-level=error:keyint=60:min-keyint=60:scenecut=0:bframes=0".into(),
            ],
            ..EncOpts::default()
        },
    );
    for r in ["source", "360p", "audio"] {
        node.wait_media_playlist("one", r, 2, Duration::from_secs(40));
    }
    // The multivariant says which variant needs HEVC, so a player without it takes H.264.
    let mv = get_ok(&node.playlist_url("one")).text();
    assert!(mv.contains("CODECS=\"hvc1.1.6.L"), "{mv}");
    assert!(mv.contains("CODECS=\"avc1."), "{mv}");
    // Each rendition decodes: the source as HEVC at its size, a rung as H.264.
    let source = decode(&node, "one", "source");
    assert_eq!(source.codec, "hevc", "{source:?}");
    assert_eq!((source.width, source.height), (Some(854), Some(480)));
    assert!(source.frames_decoded >= 50, "{source:?}");
    for (r, size) in [("360p", (640, 360)), ("240p", (426, 240))] {
        let rung = decode(&node, "one", r);
        assert_eq!(rung.codec, "h264", "{rung:?}");
        assert_eq!((rung.width, rung.height), (Some(size.0), Some(size.1)));
    }
    let s = node.stream("one").expect("listed");
    assert!(
        s["stats"]["codec"]
            .as_str()
            .is_some_and(|c| c.starts_with("H.265")),
        "{s}"
    );
    assert!(hevc.is_running(), "ffmpeg stopped:\n{}", hevc.log_text());
}
