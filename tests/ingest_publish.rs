//! End to end: real encoders publish to a real `edge ingest` process; the LL-HLS it serves is
//! checked against the rules and every rendition is decoded by ffprobe.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::*;

/// Ladder of the test config: 360p and 240p; an 854x480 source (the encoders' default) keeps
/// both, since both are smaller than the source.
const EXPECTED: [(&str, u32, u32); 3] =
    [("source", 854, 480), ("360p", 640, 360), ("240p", 426, 240)];

/// Fetch a rendition's playlist, init, the parts of its last complete segment and that segment,
/// and decode them with ffprobe.
fn check_rendition(
    node: &Node,
    pid: &str,
    rendition: &str,
    size: Option<(u32, u32)>,
) -> MediaPlaylist {
    let pl = node.wait_media_playlist(pid, rendition, 2, FIRST_SEGMENT_TIMEOUT);
    let url = node.media_playlist_url(pid, rendition);
    let init = get_ok(&resolve_url(
        &url,
        pl.map_uri.as_deref().expect("EXT-X-MAP"),
    ))
    .body;
    let seg = pl.segments.last().expect("a complete segment");
    assert!(
        !seg.parts.is_empty(),
        "{rendition}: the last segment lists its parts"
    );
    assert!(
        seg.parts[0].independent || rendition == "audio",
        "{rendition}: first part INDEPENDENT"
    );
    let parts: Vec<Vec<u8>> = seg
        .parts
        .iter()
        .map(|p| get_ok(&resolve_url(&url, &p.uri)).body)
        .collect();
    let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
    let from_parts = ffprobe_decode(&init, &refs)
        .unwrap_or_else(|e| panic!("{rendition}: parts do not decode: {e}"));
    let segment = get_ok(&resolve_url(&url, &seg.uri)).body;
    assert_eq!(
        segment,
        parts.concat(),
        "{rendition}: a segment is the concatenation of its parts"
    );
    let from_segment = ffprobe_decode(&init, &[&segment])
        .unwrap_or_else(|e| panic!("{rendition}: segment does not decode: {e}"));
    match size {
        Some((w, h)) => {
            assert_eq!(from_parts.codec, "h264", "{rendition}");
            assert_eq!(
                (from_parts.width, from_parts.height),
                (Some(w), Some(h)),
                "{rendition} size"
            );
            // ~2 s at 30 fps; allow for a segment cut a frame early or late.
            assert!(
                from_segment.frames_decoded >= 50,
                "{rendition}: only {} frames",
                from_segment.frames_decoded
            );
        }
        None => {
            assert_eq!(from_parts.codec, "aac", "{rendition}");
            assert!(
                from_segment.frames_decoded >= 80,
                "audio: only {} frames",
                from_segment.frames_decoded
            );
        }
    }
    pl
}

/// The multivariant playlist lists every rendition with its attributes.
fn check_multivariant(node: &Node, pid: &str, expected: &[(&str, u32, u32)]) -> Multivariant {
    // The multivariant playlist exists once the stream has started.
    node.wait_media_playlist(pid, "source", 1, FIRST_SEGMENT_TIMEOUT);
    let r = get_ok(&node.playlist_url(pid));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.contains("mpegurl")));
    let mv = parse_multivariant(&r.text()).expect("multivariant parses");
    assert_eq!(
        mv.variants.len(),
        expected.len(),
        "variants: {:#?}",
        mv.variants
    );
    for (name, w, h) in expected {
        let v = mv
            .variant(&format!("{name}/"))
            .unwrap_or_else(|| panic!("no variant {name}"));
        assert_eq!(v.resolution, Some((*w, *h)), "{name} RESOLUTION");
        assert!(v.bandwidth > 100_000, "{name} BANDWIDTH");
        let codecs = v.codecs.as_deref().unwrap_or("");
        assert!(
            codecs.contains("avc1.") && codecs.contains("mp4a.40.2"),
            "{name} CODECS={codecs}"
        );
        assert!(
            v.frame_rate.is_some_and(|f| (f - 30.0).abs() < 0.5),
            "{name} FRAME-RATE"
        );
        assert_eq!(v.audio.as_deref(), Some("audio"));
    }
    assert_eq!(mv.audio_uri(), Some("audio/index.m3u8"));
    mv
}

fn check_all(node: &Node, pid: &str) {
    check_multivariant(node, pid, &EXPECTED);
    for (name, w, h) in EXPECTED {
        check_rendition(node, pid, name, Some((w, h)));
    }
    check_rendition(node, pid, "audio", None);
}

#[test]
fn rtmp_from_ffmpeg_serves_every_rendition_as_ll_hls() {
    let node = Node::start(|_| {});
    let mut enc = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    check_all(&node, "one");

    // Blocking playlist reload: ask for the part after the last one; it must come back with it.
    let url = node.media_playlist_url("one", "360p");
    let pl = check_ll_hls(&get_ok(&url).text(), Track::Video).expect("valid");
    let (msn, part) = pl.next_part_position();
    let r = http_get(
        &blocking_reload_url(&url, msn, part),
        Duration::from_secs(5),
    )
    .expect("blocking reload");
    assert_eq!(r.status, 200, "{}", r.text());
    let after = check_ll_hls(&r.text(), Track::Video).expect("valid after block");
    assert!(
        after.last_part().is_some_and(|lp| lp >= (msn, part)),
        "reload returned before {msn}.{part}: {:?}",
        after.last_part()
    );
    // A CDN may share it for a while; the player's own cache may not (a player that asks the
    // same URL again wants a newer playlist).
    let cache = r.header("cache-control").unwrap_or_default();
    assert!(
        cache.contains("s-maxage=") && cache.contains("max-age=0"),
        "blocking reload Cache-Control: {cache}"
    );
    // The spec's 400s.
    assert_eq!(
        http_get(&format!("{url}?_HLS_part=1"), HTTP_TIMEOUT)
            .unwrap()
            .status,
        400
    );
    assert_eq!(
        http_get(&format!("{url}?_HLS_msn={}", msn + 3), HTTP_TIMEOUT)
            .unwrap()
            .status,
        400
    );
    assert_eq!(
        http_get(&format!("{url}?_HLS_msn=abc"), HTTP_TIMEOUT)
            .unwrap()
            .status,
        400
    );
    // The preload-hinted part blocks until it exists, then is served.
    let hint = after.preload_hint.expect("preload hint");
    let p = http_get(&resolve_url(&url, &hint.uri), Duration::from_secs(5)).expect("hinted part");
    assert_eq!(p.status, 200);
    assert!(p
        .header("cache-control")
        .is_some_and(|c| c.contains("max-age")));
    // Unknown things are 404; the key never works as a playback ID.
    assert_eq!(
        http_get(&node.playlist_url("nope"), HTTP_TIMEOUT)
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        http_get(&node.playlist_url("test-stream-key-1"), HTTP_TIMEOUT)
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        http_get(&node.media_playlist_url("one", "1080p"), HTTP_TIMEOUT)
            .unwrap()
            .status,
        404
    );
    assert!(
        enc.is_running(),
        "encoder saw an error:\n{}",
        enc.log_text()
    );
    assert!(
        !node.log_text().contains("test-stream-key-1"),
        "the stream key leaked into the log"
    );
}

#[test]
fn rtmp_from_gstreamer_rtmp2sink() {
    let node = Node::start(|_| {});
    let mut enc = Encoder::gst_rtmp2sink(&node.rtmp_url("test-stream-key-2"), EncOpts::default());
    check_all(&node, "two");
    assert!(enc.is_running(), "rtmp2sink stopped:\n{}", enc.log_text());
}

#[test]
fn srt_from_ffmpeg() {
    let node = Node::start(|_| {});
    let mut enc = Encoder::ffmpeg_srt(&node.srt_url("test-stream-key-1"), EncOpts::default());
    check_all(&node, "one");
    assert!(enc.is_running(), "ffmpeg stopped:\n{}", enc.log_text());
    let s = node.stream("one").expect("listed");
    assert_eq!(s["protocol"], "srt");
    assert_srt_health(&s);
}

/// An SRT stream from ffmpeg's MPEG-TS muxer is judged healthy: it sends audio up to 0.7 s
/// ahead of video of the same time, well within what the A/V drift allows (about 0.1 s was
/// measured).
fn assert_srt_health(s: &serde_json::Value) {
    assert_eq!(s["issues"], serde_json::json!([]), "{s}");
    assert_eq!(s["stats"]["audio_codec"], "AAC", "{s}");
    assert!(
        s["stats"]["av_drift_ms"]
            .as_i64()
            .is_some_and(|d| d.abs() < 700),
        "{s}"
    );
}

#[test]
fn srt_from_srt_live_transmit() {
    let node = Node::start(|_| {});
    let mut enc =
        Encoder::srt_live_transmit(&node.srt_url("test-stream-key-2"), EncOpts::default());
    check_all(&node, "two");
    assert_srt_health(&node.stream("two").expect("listed"));
    assert!(
        enc.is_running(),
        "srt-live-transmit stopped:\n{}",
        enc.log_text()
    );
}

#[test]
fn source_above_the_ladder_is_scaled_keeping_aspect_and_delta_updates_work() {
    // A 1280x720 source: 360p and 240p rungs at 16:9, plus the source itself. A 10-segment
    // window is long enough for CAN-SKIP-UNTIL (6 target durations) to allow delta updates.
    let node = Node::start(|c| *c = c.replace("window_segments = 6", "window_segments = 10"));
    let _enc = Encoder::ffmpeg_rtmp(
        &node.rtmp_url("test-stream-key-1"),
        EncOpts {
            width: 1280,
            height: 720,
            ..EncOpts::default()
        },
    );
    check_multivariant(
        &node,
        "one",
        &[
            ("source", 1280, 720),
            ("360p", 640, 360),
            ("240p", 426, 240),
        ],
    );
    check_rendition(&node, "one", "source", Some((1280, 720)));
    check_rendition(&node, "one", "240p", Some((426, 240)));
    let url = node.media_playlist_url("one", "360p");
    let full = node.wait_media_playlist("one", "360p", 9, Duration::from_secs(60));
    let delta = get_ok(&format!("{url}?_HLS_skip=YES")).text();
    let d = parse_media_playlist(&delta).expect("delta parses");
    assert!(
        d.skipped_segments > 0,
        "no EXT-X-SKIP in a delta update:\n{delta}"
    );
    assert!(d.segments.len() < full.segments.len() + 2);
}

#[test]
fn stream_health_tells_a_flowing_stream_from_a_silent_publisher() {
    let node = Node::start(|_| {});
    let _enc = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    node.wait_media_playlist("one", "360p", 1, FIRST_SEGMENT_TIMEOUT);
    // A publisher that is accepted and then sends nothing, its connection open.
    let rtmp = format!("127.0.0.1:{}", node.ports.rtmp).parse().unwrap();
    let silent = match rtmp_raw::publish_from(
        "127.0.0.1".parse().unwrap(),
        rtmp,
        "test-stream-key-2",
        Duration::from_secs(10),
    ) {
        Ok(rtmp_raw::Outcome::Accepted(s)) => s,
        other => panic!("the silent publisher was not accepted: {other:?}"),
    };
    let health = |pid: &str| {
        node.stream(pid).map(|s| {
            (
                s["health"].as_str().unwrap_or("").to_string(),
                s["health_reason"].as_str().map(String::from),
            )
        })
    };
    let (_, why) = wait_for(
        "the silent publisher to be reported starving",
        Duration::from_secs(15),
        || health("two").filter(|(h, _)| h == "starving"),
    );
    let why = why.expect("a starving stream says why");
    assert!(
        why.contains("no video from the encoder since it connected"),
        "{why}"
    );
    assert_eq!(health("one"), Some(("healthy".to_string(), None)));
    let one = node.stream("one").expect("listed");
    assert_eq!(one["issues"], serde_json::json!([]), "2 s GOPs: no issue");
    wait_for(
        "the health counts in the metrics",
        Duration::from_secs(10),
        || {
            let m = node.metrics();
            let count = |h: &str| {
                metric_value(
                    &m,
                    &format!("edge_ingest_streams_by_health{{health=\"{h}\"}}"),
                )
            };
            (count("healthy") == 1.0 && count("starving") == 1.0 && count("unhealthy") == 0.0)
                .then_some(())
        },
    );
    drop(silent);
}

#[test]
fn a_long_keyframe_interval_is_reported_with_advice() {
    let node = Node::start(|_| {});
    // 6 s between keyframes (an encoder left on its default), next to 2 s segments.
    let mut enc = Encoder::ffmpeg_rtmp(
        &node.rtmp_url("test-stream-key-1"),
        EncOpts {
            width: 320,
            height: 180,
            gop: 180,
            ..EncOpts::default()
        },
    );
    let started = std::time::Instant::now();
    let s = wait_for("the keyframe issue", Duration::from_secs(15), || {
        node.stream("one")
            .filter(|s| s["issues"].as_array().is_some_and(|a| !a.is_empty()))
    });
    eprintln!("after {:?}: {s}", started.elapsed());
    assert_eq!(s["health"], "degraded", "{s}");
    let issue = &s["issues"][0];
    assert_eq!(issue["kind"], "keyframe_interval", "{s}");
    let msg = issue["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("keyframe interval is") && msg.contains("set it to 2 s"),
        "{msg}"
    );
    assert!(
        s["health_reason"]
            .as_str()
            .is_some_and(|r| r.contains("set it to 2 s")),
        "{s}"
    );
    wait_for(
        "the issue count in the metrics",
        Duration::from_secs(10),
        || {
            let m = node.metrics();
            (metric_value(&m, "edge_ingest_stream_issues{issue=\"keyframe_interval\"}") == 1.0
                && metric_value(&m, "edge_ingest_streams_by_health{health=\"degraded\"}") == 1.0)
                .then_some(())
        },
    );
    assert!(enc.is_running(), "ffmpeg stopped:\n{}", enc.log_text());
}

#[test]
fn a_still_picture_with_silent_audio_and_b_frames_is_reported_with_each_issue() {
    let node = Node::start(|_| {});
    // A still image with digital silence, encoded with x264's B-frames: what a slide, a muted
    // microphone and an encoder on its defaults send. Made once, then published in a loop.
    let dir = TempDir::new("still");
    let png = dir.path().join("still.png");
    let flv = dir.path().join("still.flv");
    let ff = |args: &[&str]| {
        let out = run_with_timeout(
            std::process::Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-y"])
                .args(args),
            Duration::from_secs(120),
        )
        .expect("ffmpeg");
        assert!(
            out.status.success(),
            "ffmpeg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ff(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-frames:v",
        "1",
        png.to_str().unwrap(),
    ]);
    ff(&[
        "-loop",
        "1",
        "-framerate",
        "30",
        "-i",
        png.to_str().unwrap(),
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=48000:cl=stereo",
        "-t",
        "12",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "60",
        "-bf",
        "2",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        flv.to_str().unwrap(),
    ]);
    let mut enc = Encoder::ffmpeg_rtmp(
        &node.rtmp_url("test-stream-key-1"),
        EncOpts {
            source_file: Some(flv),
            ..EncOpts::default()
        },
    );
    let s = wait_issues(
        &node,
        "one",
        &["frozen_video", "silent_audio", "b_frames"],
        Duration::from_secs(20),
    );
    eprintln!("{s}");
    assert_eq!(s["health"], "degraded", "{s}");
    let reason = s["health_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("video is frozen") && reason.contains("audio is silent"),
        "{reason}"
    );
    assert!(reason.contains("set B-frames to 0"), "{reason}");
    wait_for(
        "the issue counts in the metrics",
        Duration::from_secs(10),
        || {
            let m = node.metrics();
            (metric_value(&m, "edge_ingest_stream_issues{issue=\"frozen_video\"}") == 1.0
                && metric_value(&m, "edge_ingest_stream_issues{issue=\"silent_audio\"}") == 1.0
                && metric_value(&m, "edge_ingest_stream_issues{issue=\"b_frames\"}") == 1.0)
                .then_some(())
        },
    );
    // The change is an event too (kept for the API even with no webhook configured).
    let changed = wait_for(
        "a stream.health_changed event",
        Duration::from_secs(10),
        || {
            let r = node.admin_get("/api/v1/events").ok()?;
            let v: serde_json::Value = r.json().ok()?;
            v.as_array()?
                .iter()
                .rfind(|e| {
                    e["type"] == "stream.health_changed" && e["data"]["health"] == "degraded"
                })
                .cloned()
        },
    );
    assert_eq!(changed["data"]["playback_id"], "one", "{changed}");
    assert_eq!(changed["delivery"], "unsent", "{changed}");
    assert!(
        changed["data"]["issues"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{changed}"
    );
    assert!(enc.is_running(), "ffmpeg stopped:\n{}", enc.log_text());
}

#[test]
fn a_moving_picture_with_sound_has_no_issue() {
    let node = Node::start(|_| {});
    let _enc = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    // Long enough for every judgement (frozen and silent need 4 s of media).
    let s = wait_for("7 s of the stream", Duration::from_secs(30), || {
        node.stream("one").filter(|s| {
            s["stats"]["keyframe_interval_ms"].is_u64()
                && s["started_unix_ms"].as_u64().is_some_and(|t| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    now.saturating_sub(t) > 7_000
                })
        })
    });
    assert_eq!(s["issues"], serde_json::json!([]), "{s}");
    assert_eq!(s["health"], "healthy", "{s}");
    let st = &s["stats"];
    assert_h264_with_aac(&s);
    assert!(st["video_kbps"].as_u64() > Some(100), "{s}");
    // ffmpeg interleaves its tracks by timestamp: they reach the node together.
    assert!(
        st["av_drift_ms"].as_i64().is_some_and(|d| d.abs() < 300),
        "{s}"
    );
    for k in [
        "late_frames",
        "timestamp_jumps",
        "timestamp_gaps",
        "dropped_frames",
    ] {
        assert_eq!(st[k], 0, "{k}: {s}");
    }
    // Both transcoded rungs keep up with the source: 30 fps at real time.
    let rungs = st["rungs"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = rungs.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names.len(), 2, "{s}");
    assert!(names.contains(&"360p") && names.contains(&"240p"), "{s}");
    for r in &rungs {
        let speed = r["speed"].as_f64().unwrap_or(0.0);
        let fps = r["fps"].as_f64().unwrap_or(0.0);
        assert!((0.8..1.2).contains(&speed), "real-time factor {speed}: {s}");
        assert!((25.0..35.0).contains(&fps), "{s}");
        assert!(r["kbps"].as_u64() > Some(50), "{s}");
    }
}

/// The kinds of a stream's issues.
/// The stream's health names an H.264 source (with its profile and level) and AAC audio.
fn assert_h264_with_aac(s: &serde_json::Value) {
    let st = &s["stats"];
    assert!(
        st["codec"]
            .as_str()
            .is_some_and(|c| c.starts_with("H.264 ")),
        "{s}"
    );
    assert_eq!(st["audio_codec"], "AAC", "{s}");
}

fn issue_kinds(s: &serde_json::Value) -> Vec<String> {
    s["issues"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["kind"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The message of a stream's issue of `kind`.
fn issue_message(s: &serde_json::Value, kind: &str) -> String {
    s["issues"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["kind"] == kind))
        .and_then(|i| i["message"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Wait until the stream `pid` on `node` has every issue of `kinds`.
fn wait_issues(node: &Node, pid: &str, kinds: &[&str], timeout: Duration) -> serde_json::Value {
    wait_for(format_args!("the issues {kinds:?}"), timeout, || {
        node.stream(pid).filter(|s| {
            let k = issue_kinds(s);
            kinds.iter().all(|w| k.iter().any(|x| x == w))
        })
    })
}

#[test]
fn mp3_audio_and_a_bit_rate_far_above_the_ladder_are_reported_with_advice() {
    let node = Node::start(|_| {});
    // 854x480 at 4 Mbit/s (x264 in CBR) with MP3 audio, what an old encoder preset sends;
    // the ladder's best rung (360p at 600 kbit/s) needs about 1,070 kbit/s at this size.
    let dir = TempDir::new("mp3");
    let flv = dir.path().join("mp3.flv");
    let out = run_with_timeout(
        std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=854x480:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-t", "12", "-c:v", "libx264", "-preset", "ultrafast"])
            .args(["-tune", "zerolatency", "-g", "60", "-keyint_min", "60"])
            .args(["-sc_threshold", "0", "-pix_fmt", "yuv420p"])
            .args(["-b:v", "4000k", "-minrate", "4000k", "-maxrate", "4000k"])
            .args(["-bufsize", "1000k", "-x264-params", "nal-hrd=cbr"])
            .args(["-c:a", "libmp3lame", "-b:a", "128k", "-ar", "44100"])
            .arg(&flv),
        Duration::from_secs(120),
    )
    .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut enc = Encoder::ffmpeg_rtmp(
        &node.rtmp_url("test-stream-key-1"),
        EncOpts {
            source_file: Some(flv),
            ..EncOpts::default()
        },
    );
    let s = wait_issues(
        &node,
        "one",
        &["non_aac_audio", "high_bitrate"],
        Duration::from_secs(40),
    );
    eprintln!("{s}");
    let mp3 = issue_message(&s, "non_aac_audio");
    assert!(
        mp3.starts_with("audio is MP3;") && mp3.contains("set the encoder's audio codec to AAC"),
        "{mp3}"
    );
    // 600 kbit/s for 640x360, scaled to 854x480 (1,067 to 1,068 as the rung's size rounds).
    let high = issue_message(&s, "high_bitrate");
    assert!(
        ["1067", "1068"].iter().any(|k| high
            .contains(&format!("the {k} kbit/s the ladder needs for its size"))
            && high.contains(&format!("set the encoder's bit rate to about {k} kbit/s"))),
        "{high}"
    );
    assert_eq!(s["stats"]["audio_codec"], "MP3", "{s}");
    assert!(s["stats"]["video_kbps_60s"].as_u64() > Some(3000), "{s}");
    // The audio is converted and served.
    node.wait_media_playlist("one", "audio", 1, Duration::from_secs(10));
    assert!(enc.is_running(), "ffmpeg stopped:\n{}", enc.log_text());
}

/// A TCP proxy in front of `target` that stops forwarding what the client sends for `stall`
/// at the end of every `every` (from its start): an encoder's upload that stalls and then
/// catches up, as a congested link does. Runs until the test process ends.
fn stalling_proxy(target: std::net::SocketAddr, every: Duration, stall: Duration) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = std::net::TcpStream::connect(target) else {
                return;
            };
            let (Ok(mut client_w), Ok(mut server_r)) = (client.try_clone(), server.try_clone())
            else {
                return;
            };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_r, &mut client_w);
            });
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let phase = start.elapsed().as_nanos() % every.as_nanos();
                    let open = every.as_nanos() - stall.as_nanos();
                    if phase >= open {
                        std::thread::sleep(Duration::from_nanos((every.as_nanos() - phase) as u64));
                    }
                    if server.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_stalling_upload_and_a_timestamp_jump_are_reported() {
    let node = Node::start(|_| {});
    let target = format!("127.0.0.1:{}", node.ports.rtmp).parse().unwrap();
    // The upload stalls for 2 s in every 6 s.
    let port = stalling_proxy(target, Duration::from_secs(6), Duration::from_secs(2));
    // ffmpeg's timestamps jump 10 s ahead 8 s in (both tracks), while it goes on sending in
    // real time.
    let jump = "PTS+gte(T\\,8)*10/TB";
    let mut enc = Encoder::ffmpeg_rtmp(
        &format!("rtmp://127.0.0.1:{port}/live/test-stream-key-1"),
        EncOpts {
            extra: vec![
                "-vf".into(),
                format!("setpts={jump}"),
                "-af".into(),
                format!("asetpts={jump}"),
            ],
            ..EncOpts::default()
        },
    );
    let s = wait_issues(
        &node,
        "one",
        &["late_frames", "timestamp_jumps"],
        Duration::from_secs(30),
    );
    eprintln!("{s}");
    let late = issue_message(&s, "late_frames");
    assert!(
        late.contains("reached the node over 1.0 s late")
            && late.contains("lower the encoder's bit rate"),
        "{late}"
    );
    let jumped = issue_message(&s, "timestamp_jumps");
    assert!(
        jumped.contains("timestamps jumped 10.0 s forward"),
        "{jumped}"
    );
    assert!(s["stats"]["late_frames"].as_u64() > Some(10), "{s}");
    assert!(s["stats"]["timestamp_jumps"].as_u64() >= Some(1), "{s}");
    assert_eq!(s["health"], "degraded", "{s}");
    assert!(enc.is_running(), "ffmpeg stopped:\n{}", enc.log_text());
}

#[test]
fn audio_timestamps_apart_from_video_are_an_av_drift() {
    let node = Node::start(|_| {});
    // ffmpeg makes 20 s in sync; it is sent as an encoder whose audio timestamps run 2 s
    // ahead of its video would send it (ffmpeg itself, like OBS, holds the track that is
    // ahead back until the other catches up, so it never puts such a drift on the wire).
    let dir = TempDir::new("drift");
    let flv = dir.path().join("sync.flv");
    let enc = EncOpts {
        duration: Duration::from_secs(20),
        realtime: false,
        ..EncOpts::default()
    };
    let mut args = vec!["-y".to_string()];
    args.extend(enc.ffmpeg_args());
    args.push(flv.display().to_string());
    let out = run_with_timeout(
        std::process::Command::new("ffmpeg").args(&args),
        Duration::from_secs(120),
    )
    .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let media = std::fs::read(&flv).expect("read the clip");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = format!("127.0.0.1:{}", node.ports.rtmp).parse().unwrap();
    let sender = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            rtmp_raw::replay_flv(addr, "test-stream-key-1", &media, 2_000, &stop)
        })
    };
    let s = wait_issues(&node, "one", &["av_drift"], Duration::from_secs(15));
    eprintln!("{s}");
    let msg = issue_message(&s, "av_drift");
    assert!(
        msg.starts_with("audio timestamps are 2.0 s ahead of video's")
            && msg.contains("audio sync offset"),
        "{msg}"
    );
    assert!(
        s["stats"]["av_drift_ms"]
            .as_i64()
            .is_some_and(|d| (1_800..2_200).contains(&d)),
        "{s}"
    );
    // The ladder is made as ever.
    let s = wait_for("both rungs' figures", Duration::from_secs(10), || {
        node.stream("one")
            .filter(|s| s["stats"]["rungs"].as_array().is_some_and(|r| r.len() == 2))
    });
    eprintln!("{s}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().expect("sender").expect("the replay");
}

#[test]
fn a_source_below_the_ladder_bit_rate_is_reported_with_advice() {
    let node = Node::start(|_| {});
    // 480p at 200 kbit/s, feeding a ladder whose best rendition (360p) is 600 kbit/s.
    let _enc = Encoder::ffmpeg_rtmp(
        &node.rtmp_url("test-stream-key-1"),
        EncOpts {
            video_kbps: 200,
            ..EncOpts::default()
        },
    );
    let s = wait_for("the low bit rate issue", Duration::from_secs(40), || {
        node.stream("one").filter(|s| {
            s["issues"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["kind"] == "low_bitrate"))
        })
    });
    let issue = s["issues"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["kind"] == "low_bitrate"))
        .cloned()
        .unwrap_or_default();
    let msg = issue["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("below the 600 kbit/s") && msg.contains("raise the encoder's bit rate"),
        "{msg}"
    );
    assert!(s["stats"]["video_kbps_60s"].as_u64() < Some(600), "{s}");
    assert!(s["stats"]["audio_kbps"].as_u64() > Some(50), "{s}");
}

#[test]
fn health_is_measured_without_passthrough_too() {
    // No source rendition: only transcoded rungs (360p and 240p from a 480p source).
    let node = Node::start(|c| *c = c.replace("[transcode]", "[transcode]\npassthrough = false"));
    let _enc = Encoder::ffmpeg_rtmp(
        &node.rtmp_url("test-stream-key-1"),
        EncOpts {
            gop: 180,
            ..EncOpts::default()
        },
    );
    let s = wait_for(
        "the keyframe issue without passthrough",
        Duration::from_secs(20),
        || {
            node.stream("one").filter(|s| {
                s["issues"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|i| i["kind"] == "keyframe_interval"))
            })
        },
    );
    assert!(
        !s["renditions"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == "source")),
        "{s}"
    );
    assert!(s["stats"]["fps"].as_f64().unwrap_or(0.0) > 20.0, "{s}");
    assert!(s["stats"]["video_kbps"].as_u64() > Some(300), "{s}");
}

/// A stream with nothing to encode (its source no larger than any rung) is packaged without
/// GStreamer: from ffmpeg and from GStreamer's rtmp2sink, served as LL-HLS that ffprobe
/// decodes, with the health view GStreamer's reading gives, counted as direct in the metrics.
#[test]
fn a_stream_with_nothing_to_encode_is_packaged_without_gstreamer() {
    let node = Node::start(|_| {});
    let small = || EncOpts {
        width: 320,
        height: 240,
        video_kbps: 500,
        ..EncOpts::default()
    };
    let mut a = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), small());
    let mut b = Encoder::gst_rtmp2sink(&node.rtmp_url("test-stream-key-2"), small());
    for pid in ["one", "two"] {
        check_multivariant(&node, pid, &[("source", 320, 240)]);
        check_rendition(&node, pid, "source", Some((320, 240)));
        check_rendition(&node, pid, "audio", None);
    }
    let m = node.metrics();
    let packaged = |way: &str| {
        metric_value(
            &m,
            &format!("edge_ingest_streams_by_packaging{{packaging=\"{way}\"}}"),
        )
    };
    assert_eq!(
        (packaged("direct"), packaged("gstreamer")),
        (2.0, 0.0),
        "{m}"
    );
    for pid in ["one", "two"] {
        let s = node.stream(pid).expect("the stream is listed");
        assert_h264_with_aac(&s);
        assert!(s["stats"]["fps"].as_f64().unwrap_or(0.0) > 20.0, "{s}");
    }
    assert!(a.is_running(), "ffmpeg stopped:\n{}", a.log_text());
    assert!(b.is_running(), "rtmp2sink stopped:\n{}", b.log_text());
}

/// A source in 4:4:4 (OBS's I444 colour format: x264's High 4:4:4 Predictive profile) passes
/// through as it came, and its rungs are 8-bit 4:2:0 High, which every player decodes: the
/// CODECS of each transcoded variant names profile 100 (`avc1.64…`), not 244 (`avc1.f4…`).
/// The rungs are scaled by edge's own scaler and decode with ffprobe.
#[test]
fn a_4_4_4_source_gets_rungs_every_player_decodes() {
    let node = Node::start(|_| {});
    let opts = EncOpts {
        extra: vec!["-pix_fmt".into(), "yuv444p".into()],
        ..EncOpts::default()
    };
    let mut enc = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), opts);
    for (name, w, h) in EXPECTED {
        check_rendition(&node, "one", name, Some((w, h)));
    }
    let mv = check_multivariant(&node, "one", &EXPECTED);
    let codecs = |name: &str| {
        mv.variant(&format!("{name}/"))
            .and_then(|v| v.codecs.clone())
            .unwrap_or_default()
    };
    assert!(codecs("source").contains("avc1.f4"), "{}", codecs("source"));
    for name in ["360p", "240p"] {
        assert!(codecs(name).contains("avc1.64"), "{name}: {}", codecs(name));
    }
    let log = node.log_text();
    assert!(log.contains("scaler=\"edgescale\""), "{log}");
    assert!(enc.is_running(), "ffmpeg stopped:\n{}", enc.log_text());
}
