//! Tests of the test harness itself (tests/common), independent of the `edge` binary: the LL-HLS
//! checker on hand-written good and bad playlists, the HTTP client, ffprobe decoding, the
//! encoders (against local ffmpeg / srt-live-transmit listeners) and the Chromium player.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use common::http::decode_chunked;
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A local listener (ffmpeg -listen, srt-live-transmit) needs well under this to bind.
const LISTENER_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Media time each encoder self-test publishes: enough for a keyframe and some audio.
const ENCODE_SECS: u64 = 3;

/// Real-time encoding of [`ENCODE_SECS`] plus start-up on a loaded 2-core machine.
const ENCODER_FINISH_TIMEOUT: Duration = Duration::from_secs(40);

/// How long a listener may take to flush its output after the publisher has gone.
const LISTENER_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// LL-HLS checker

/// A correct LL-HLS video playlist as our packager writes it (a PDT on every segment, the map
/// restated after a discontinuity): two complete segments without parts (the oldest, with a
/// discontinuity before the second), one with parts ending in a short part, and a trailing
/// segment with two parts plus the preload hint.
const GOOD_VIDEO: &str = r#"#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-PART-INF:PART-TARGET=0.334
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002,CAN-SKIP-UNTIL=12.0
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-DISCONTINUITY-SEQUENCE:1
#EXT-X-MAP:URI="init.mp4"
#EXT-X-PROGRAM-DATE-TIME:2025-01-01T00:00:00.000Z
#EXTINF:2.000,
seg10.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI="init1.mp4"
#EXT-X-PROGRAM-DATE-TIME:2025-01-01T00:00:10.000Z
#EXTINF:2.000,
seg11.m4s
#EXT-X-PROGRAM-DATE-TIME:2025-01-01T00:00:12.000Z
#EXT-X-PART:DURATION=0.33333,URI="part12.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33333,URI="part12.1.m4s"
#EXT-X-PART:DURATION=0.33333,URI="part12.2.m4s"
#EXT-X-PART:DURATION=0.33333,URI="part12.3.m4s"
#EXT-X-PART:DURATION=0.33333,URI="part12.4.m4s"
#EXT-X-PART:DURATION=0.23335,URI="part12.5.m4s"
#EXTINF:1.90000,
seg12.m4s
#EXT-X-PROGRAM-DATE-TIME:2025-01-01T00:00:13.900Z
#EXT-X-PART:DURATION=0.33333,URI="part13.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33333,URI="part13.1.m4s"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part13.2.m4s"
#EXT-X-RENDITION-REPORT:URI="../240p/index.m3u8",LAST-MSN=13,LAST-PART=1
#EXT-X-RENDITION-REPORT:URI="../audio/index.m3u8",LAST-MSN=13,LAST-PART=1
"#;

/// A correct audio playlist: AAC parts of 15 frames (0.32 s), no INDEPENDENT flags.
const GOOD_AUDIO: &str = r#"#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-PART-INF:PART-TARGET=0.334
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-MAP:URI="init.mp4"
#EXT-X-PROGRAM-DATE-TIME:2025-01-01T00:00:00.000Z
#EXT-X-PART:DURATION=0.32,URI="part0.0.m4s"
#EXT-X-PART:DURATION=0.32,URI="part0.1.m4s"
#EXT-X-PART:DURATION=0.32,URI="part0.2.m4s"
#EXT-X-PART:DURATION=0.32,URI="part0.3.m4s"
#EXT-X-PART:DURATION=0.32,URI="part0.4.m4s"
#EXT-X-PART:DURATION=0.32,URI="part0.5.m4s"
#EXT-X-PART:DURATION=0.08,URI="part0.6.m4s"
#EXTINF:2.0,
seg0.m4s
#EXT-X-PROGRAM-DATE-TIME:2025-01-01T00:00:02.000Z
#EXT-X-PART:DURATION=0.32,URI="part1.0.m4s"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part1.1.m4s"
"#;

/// A finished stream: ENDLIST, no preload hint, no trailing parts.
const GOOD_ENDED: &str = r#"#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-PART-INF:PART-TARGET=0.334
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002
#EXT-X-MEDIA-SEQUENCE:3
#EXT-X-MAP:URI="init.mp4"
#EXT-X-PROGRAM-DATE-TIME:2025-01-01T00:00:06.000Z
#EXTINF:2.000,
seg3.m4s
#EXT-X-PROGRAM-DATE-TIME:2025-01-01T00:00:08.000Z
#EXT-X-PART:DURATION=0.33333,URI="part4.0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.1,URI="part4.1.m4s"
#EXTINF:0.43333,
seg4.m4s
#EXT-X-ENDLIST
"#;

fn checked(text: &str, track: Track) -> MediaPlaylist {
    check_ll_hls(text, track)
        .unwrap_or_else(|errs| panic!("good playlist rejected: {errs:#?}\n{text}"))
}

#[test]
fn good_video_playlist_passes_and_parses() {
    let pl = checked(GOOD_VIDEO, Track::Video);
    assert_eq!(pl.media_sequence(), 10);
    assert_eq!(pl.version, Some(9));
    assert_eq!(pl.target_duration, Some(2));
    assert_eq!(pl.part_target, Some(0.334));
    assert_eq!(pl.part_hold_back, Some(1.002));
    assert_eq!(pl.can_skip_until, Some(12.0));
    assert!(pl.can_block_reload);
    // The map in force at the end of the playlist (restated after the discontinuity).
    assert_eq!(pl.map_uri.as_deref(), Some("init1.mp4"));
    let segs: Vec<(u64, &str, usize)> = pl
        .segments
        .iter()
        .map(|s| (s.msn, s.uri.as_str(), s.parts.len()))
        .collect();
    assert_eq!(
        segs,
        vec![
            (10, "seg10.m4s", 0),
            (11, "seg11.m4s", 0),
            (12, "seg12.m4s", 6)
        ]
    );
    assert_eq!(pl.segments[2].duration, 1.9);
    assert!(pl.segments[2].parts[0].independent && !pl.segments[2].parts[1].independent);
    assert_eq!(
        pl.segments[0].program_date_time.as_deref(),
        Some("2025-01-01T00:00:00.000Z")
    );
    assert_eq!(pl.discontinuities(), vec![11]);
    assert_eq!(pl.trailing_parts.len(), 2);
    assert_eq!(pl.trailing_parts[1].uri, "part13.1.m4s");
    assert_eq!(pl.next_msn(), 13);
    assert_eq!(pl.last_msn(), Some(12));
    assert_eq!(pl.last_part(), Some((13, 1)));
    assert_eq!(pl.next_part_position(), (13, 2));
    assert_eq!(pl.all_parts().len(), 8);
    let hint = pl.preload_hint.as_ref().expect("preload hint parsed");
    assert_eq!(
        (hint.hint_type.as_str(), hint.uri.as_str()),
        ("PART", "part13.2.m4s")
    );
    assert_eq!(pl.rendition_reports.len(), 2);
    assert_eq!(pl.rendition_reports[0].uri, "../240p/index.m3u8");
    assert_eq!(
        (
            pl.rendition_reports[0].last_msn,
            pl.rendition_reports[0].last_part
        ),
        (Some(13), Some(1))
    );
    assert!(!pl.endlist);
}

#[test]
fn good_audio_and_ended_playlists_pass() {
    let a = checked(GOOD_AUDIO, Track::Audio);
    assert_eq!((a.segments.len(), a.trailing_parts.len()), (1, 1));
    let e = checked(GOOD_ENDED, Track::Video);
    assert!(e.endlist && e.preload_hint.is_none());
    assert_eq!(e.last_msn(), Some(4));
    // Audio parts carry no INDEPENDENT flag: as video that is an error.
    let errs = check_ll_hls(GOOD_AUDIO, Track::Video)
        .expect_err("audio playlist checked as video must fail");
    assert!(errs.iter().any(|e| e.contains("INDEPENDENT")), "{errs:?}");
}

/// Replaces the only occurrence of `from` (asserting there is exactly one).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "mutation pattern {from:?} must occur exactly once"
    );
    text.replacen(from, to, 1)
}

fn without_line(text: &str, prefix: &str) -> String {
    let n = text.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(n, 1, "line prefix {prefix:?} must occur exactly once");
    text.lines()
        .filter(|l| !l.starts_with(prefix))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn every_bad_video_playlist_is_caught() {
    let g = GOOD_VIDEO;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "no EXTM3U",
            without_line(g, "#EXTM3U"),
            "first line is not #EXTM3U",
        ),
        (
            "EXTM3U not first",
            replace_once(
                &without_line(g, "#EXTM3U"),
                "#EXT-X-TARGETDURATION",
                "#EXTM3U\n#EXT-X-TARGETDURATION",
            ),
            "EXTM3U not on the first line",
        ),
        (
            "no VERSION",
            without_line(g, "#EXT-X-VERSION"),
            "no EXT-X-VERSION",
        ),
        (
            "old VERSION",
            replace_once(g, "VERSION:9", "VERSION:3"),
            "EXT-X-VERSION 3 < 6",
        ),
        (
            "no TARGETDURATION",
            without_line(g, "#EXT-X-TARGETDURATION"),
            "no EXT-X-TARGETDURATION",
        ),
        (
            "EXTINF over target",
            replace_once(g, "#EXTINF:2.000,\nseg11", "#EXTINF:2.500,\nseg11"),
            "rounds to more than EXT-X-TARGETDURATION",
        ),
        (
            "EXTINF zero",
            replace_once(g, "#EXTINF:2.000,\nseg11", "#EXTINF:0,\nseg11"),
            "EXTINF 0 <= 0",
        ),
        (
            "no PART-INF",
            without_line(g, "#EXT-X-PART-INF"),
            "no EXT-X-PART-INF",
        ),
        (
            "part longer than PART-TARGET",
            replace_once(g, "0.33333,URI=\"part12.1", "0.4,URI=\"part12.1"),
            "DURATION 0.4 > PART-TARGET",
        ),
        (
            "trailing part longer than PART-TARGET",
            replace_once(g, "0.33333,URI=\"part13.1", "0.35,URI=\"part13.1"),
            "DURATION 0.35 > PART-TARGET",
        ),
        (
            "short part mid-segment",
            replace_once(g, "0.33333,URI=\"part12.2", "0.2,URI=\"part12.2"),
            "part 12.2 (part12.2.m4s) DURATION 0.2 < 0.85",
        ),
        (
            "short trailing part",
            replace_once(g, "0.33333,URI=\"part13.0", "0.2,URI=\"part13.0"),
            "part 13.0 (part13.0.m4s) DURATION 0.2 < 0.85",
        ),
        (
            "parts do not add up",
            replace_once(g, "#EXTINF:1.90000,", "#EXTINF:2.000,"),
            "its parts add up to",
        ),
        (
            "no SERVER-CONTROL",
            without_line(g, "#EXT-X-SERVER-CONTROL"),
            "no EXT-X-SERVER-CONTROL",
        ),
        (
            "no CAN-BLOCK-RELOAD",
            replace_once(g, "CAN-BLOCK-RELOAD=YES,", ""),
            "lacks CAN-BLOCK-RELOAD=YES",
        ),
        (
            "CAN-BLOCK-RELOAD=NO",
            replace_once(g, "CAN-BLOCK-RELOAD=YES", "CAN-BLOCK-RELOAD=NO"),
            "lacks CAN-BLOCK-RELOAD=YES",
        ),
        (
            "no PART-HOLD-BACK",
            replace_once(g, "PART-HOLD-BACK=1.002,", ""),
            "no PART-HOLD-BACK",
        ),
        (
            "PART-HOLD-BACK below 2 parts",
            replace_once(g, "PART-HOLD-BACK=1.002", "PART-HOLD-BACK=0.6"),
            "PART-HOLD-BACK 0.6 < 2 x PART-TARGET",
        ),
        (
            "HOLD-BACK below 3 targets",
            replace_once(g, "CAN-SKIP-UNTIL=12.0", "CAN-SKIP-UNTIL=12.0,HOLD-BACK=5"),
            "HOLD-BACK 5 < 3 x TARGETDURATION",
        ),
        (
            "CAN-SKIP-UNTIL below 6 targets",
            replace_once(g, "CAN-SKIP-UNTIL=12.0", "CAN-SKIP-UNTIL=6.0"),
            "CAN-SKIP-UNTIL 6 < 6 x TARGETDURATION",
        ),
        (
            "no PRELOAD-HINT",
            without_line(g, "#EXT-X-PRELOAD-HINT"),
            "no EXT-X-PRELOAD-HINT",
        ),
        (
            "PRELOAD-HINT not a part",
            replace_once(g, "TYPE=PART", "TYPE=MAP"),
            "TYPE=MAP (expected PART)",
        ),
        (
            "PRELOAD-HINT names a listed part",
            replace_once(g, "URI=\"part13.2.m4s\"", "URI=\"part13.1.m4s\""),
            "already a listed part",
        ),
        (
            "no MEDIA-SEQUENCE",
            without_line(g, "#EXT-X-MEDIA-SEQUENCE"),
            "no EXT-X-MEDIA-SEQUENCE",
        ),
        (
            "no MAP",
            replace_once(g, "#EXT-X-MAP:URI=\"init.mp4\"\n", ""),
            "no EXT-X-MAP",
        ),
        (
            "segment's first part not independent",
            replace_once(g, "part12.0.m4s\",INDEPENDENT=YES", "part12.0.m4s\""),
            "first part of segment 12 (part12.0.m4s) lacks INDEPENDENT=YES",
        ),
        (
            "trailing first part not independent",
            replace_once(g, "part13.0.m4s\",INDEPENDENT=YES", "part13.0.m4s\""),
            "first part of segment 13 (part13.0.m4s) lacks INDEPENDENT=YES",
        ),
        (
            "duplicate part URI",
            replace_once(g, "URI=\"part12.1.m4s\"", "URI=\"part12.0.m4s\""),
            "part URI part12.0.m4s listed twice",
        ),
        (
            "duplicate rendition report",
            replace_once(g, "../audio/index.m3u8", "../240p/index.m3u8"),
            "EXT-X-RENDITION-REPORT for ../240p/index.m3u8 listed twice",
        ),
        (
            "URI without EXTINF",
            replace_once(g, "#EXTINF:2.000,\nseg10", "seg10"),
            "URI line without a preceding EXTINF",
        ),
        (
            "EXTINF without URI",
            format!("{g}#EXTINF:2.0,\n"),
            "EXTINF at the end without a URI",
        ),
        (
            "unterminated quote",
            replace_once(g, "URI=\"part12.1.m4s\"", "URI=\"part12.1.m4s"),
            "unparseable",
        ),
        (
            "part without DURATION",
            replace_once(
                g,
                "DURATION=0.33333,URI=\"part12.1.m4s\"",
                "URI=\"part12.1.m4s\"",
            ),
            "EXT-X-PART without DURATION",
        ),
        (
            "bad number",
            replace_once(g, "TARGETDURATION:2", "TARGETDURATION:two"),
            "is not a decimal integer",
        ),
    ];
    let mut missed = Vec::new();
    for (name, text, expect) in &cases {
        match check_ll_hls(text, Track::Video) {
            Ok(_) => missed.push(format!("{name}: accepted")),
            Err(errs) if !errs.iter().any(|e| e.contains(expect)) => {
                missed.push(format!("{name}: errors {errs:?} lack {expect:?}"))
            }
            Err(_) => {}
        }
    }
    assert!(
        missed.is_empty(),
        "checker missed {} of {} bad playlists:\n{}",
        missed.len(),
        cases.len(),
        missed.join("\n")
    );
}

#[test]
fn extinf_rounding_and_tolerances() {
    // 2.49 rounds to 2 (allowed with TARGETDURATION 2); 2.5 rounds to 3 (not allowed).
    // (The next segment's PDT moves with it: PDT steps follow EXTINF.)
    let ok = replace_once(
        &replace_once(
            &replace_once(GOOD_VIDEO, "#EXTINF:2.000,\nseg11", "#EXTINF:2.49,\nseg11"),
            "T00:00:12.000Z",
            "T00:00:12.490Z",
        ),
        "T00:00:13.900Z",
        "T00:00:14.390Z",
    );
    checked(&ok, Track::Video);
    // 0.3345 is within DURATION_TOLERANCE of PART-TARGET 0.334; 0.336 is not.
    let ok = replace_once(
        GOOD_VIDEO,
        "0.33333,URI=\"part13.1",
        "0.3345,URI=\"part13.1",
    );
    checked(&ok, Track::Video);
    let bad = replace_once(GOOD_VIDEO, "0.33333,URI=\"part13.1", "0.336,URI=\"part13.1");
    assert!(check_ll_hls(&bad, Track::Video).is_err());
    // The newest trailing part may be short (it may end its segment); 0.85 x 0.334 = 0.2839.
    let ok = replace_once(GOOD_VIDEO, "0.33333,URI=\"part13.1", "0.1,URI=\"part13.1");
    checked(&ok, Track::Video);
    let ok = replace_once(GOOD_VIDEO, "0.33333,URI=\"part13.0", "0.284,URI=\"part13.0");
    checked(&ok, Track::Video);
    // EXT-X-SKIP shifts the MSN of the first listed segment.
    // (MEDIA-SEQUENCE goes down by as many, so part URIs keep naming their own MSN.)
    let skip = replace_once(
        &replace_once(GOOD_VIDEO, "MEDIA-SEQUENCE:10", "MEDIA-SEQUENCE:5"),
        "#EXT-X-MAP:URI=\"init.mp4\"",
        "#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n#EXT-X-MAP:URI=\"init.mp4\"",
    );
    // Parsed as such; the checker refuses it, since the segments it skips are newer than
    // CAN-SKIP-UNTIL (12 s) from the end of this short playlist.
    let pl = parse_media_playlist(&skip).expect("delta playlist parses");
    assert!(check_ll_hls(&skip, Track::Video)
        .is_err_and(|e| e.iter().any(|m| m.contains("CAN-SKIP-UNTIL"))));
    assert_eq!(pl.media_sequence(), 5);
    assert_eq!((pl.first_msn(), pl.next_msn()), (10, 13));
}

#[test]
fn attribute_lists() {
    let a = common::hls::Attrs::parse(
        r#"TYPE=AUDIO,GROUP-ID="aud",NAME="a, b",CODECS="avc1.64001f,mp4a.40.2",X=1.5"#,
    )
    .expect("valid attribute list");
    assert_eq!(a.get("NAME"), Some("a, b"));
    assert_eq!(a.get("CODECS"), Some("avc1.64001f,mp4a.40.2"));
    assert_eq!(a.float("X"), Ok(Some(1.5)));
    assert_eq!(a.get("TYPE"), Some("AUDIO"));
    assert!(common::hls::Attrs::parse("A=1,b=2").is_err());
    assert!(common::hls::Attrs::parse("A=\"x").is_err());
}

const MULTIVARIANT: &str = r#"#EXTM3U
#EXT-X-VERSION:6
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,URI="audio/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=1700000,CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=640x360,FRAME-RATE=30.000,AUDIO="aud"
source/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=800000,AVERAGE-BANDWIDTH=700000,CODECS="avc1.4d401e,mp4a.40.2",RESOLUTION=640x360,FRAME-RATE=30,AUDIO="aud"
360p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=450000,CODECS="avc1.4d4015,mp4a.40.2",RESOLUTION=426x240,FRAME-RATE=30,AUDIO="aud"
240p/index.m3u8
"#;

#[test]
fn multivariant_parsing() {
    let mv = parse_multivariant(MULTIVARIANT).expect("valid multivariant playlist");
    assert_eq!(mv.version, Some(6));
    assert!(mv.independent_segments);
    assert_eq!(mv.variants.len(), 3);
    let v = mv.variant("240p/").expect("240p variant");
    assert_eq!(v.bandwidth, 450_000);
    assert_eq!(v.resolution, Some((426, 240)));
    assert_eq!(v.frame_rate, Some(30.0));
    assert_eq!(v.codecs.as_deref(), Some("avc1.4d4015,mp4a.40.2"));
    assert_eq!(v.audio.as_deref(), Some("aud"));
    assert_eq!(mv.variants[1].average_bandwidth, Some(700_000));
    assert_eq!(mv.audio_uri(), Some("audio/index.m3u8"));
    assert!(mv.media[0].default && mv.media[0].autoselect);

    let no_uri = MULTIVARIANT.replace("240p/index.m3u8\n", "");
    assert!(
        parse_multivariant(&no_uri).is_err(),
        "STREAM-INF without URI must fail"
    );
    let no_bw = MULTIVARIANT.replace("BANDWIDTH=450000,", "");
    assert!(
        parse_multivariant(&no_bw).is_err(),
        "STREAM-INF without BANDWIDTH must fail"
    );
    assert!(
        parse_multivariant(&MULTIVARIANT[8..]).is_err(),
        "missing EXTM3U must fail"
    );
    assert!(parse_multivariant(&MULTIVARIANT.replace("640x360", "640-360")).is_err());
}

#[test]
fn url_resolution() {
    let base = "http://127.0.0.1:8080/live/one/index.m3u8";
    assert_eq!(
        resolve_url(base, "360p/index.m3u8"),
        "http://127.0.0.1:8080/live/one/360p/index.m3u8"
    );
    let media = "http://127.0.0.1:8080/live/one/360p/index.m3u8?_HLS_msn=3&_HLS_part=1";
    assert_eq!(
        resolve_url(media, "part3.1.m4s"),
        "http://127.0.0.1:8080/live/one/360p/part3.1.m4s"
    );
    assert_eq!(
        resolve_url(media, "../audio/index.m3u8"),
        "http://127.0.0.1:8080/live/one/audio/index.m3u8"
    );
    assert_eq!(
        resolve_url(media, "/x/y.m4s"),
        "http://127.0.0.1:8080/x/y.m4s"
    );
    assert_eq!(resolve_url(base, "http://other:1/a"), "http://other:1/a");
    assert_eq!(resolve_url("http://h:1", "a.m3u8"), "http://h:1/a.m3u8");
    assert_eq!(
        blocking_reload_url("http://h:1/a/index.m3u8", 7, 2),
        "http://h:1/a/index.m3u8?_HLS_msn=7&_HLS_part=2"
    );
    assert_eq!(
        blocking_reload_url("http://h:1/a/index.m3u8?x=1", 7, 0),
        "http://h:1/a/index.m3u8?x=1&_HLS_msn=7&_HLS_part=0"
    );
}

#[test]
fn wait_until_polls_and_times_out() {
    let start = Instant::now();
    let mut n = 0;
    assert_eq!(
        wait_until(Duration::from_secs(5), || {
            n += 1;
            (n == 3).then_some(n)
        }),
        Some(3)
    );
    assert!(wait_until(Duration::from_millis(300), || None::<()>).is_none());
    assert!(start.elapsed() < Duration::from_secs(5));
    let (a, b) = (free_tcp_port(), free_tcp_port());
    assert_ne!(a, b);
    assert_ne!(free_udp_port(), 0);
}

// ---------------------------------------------------------------------------------------------
// HTTP client

/// Serves each canned response to one connection, in order, on a background thread.
fn canned_server(responses: Vec<Vec<u8>>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind canned server");
    let port = l.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for resp in responses {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&b[..n]),
                }
            }
            if resp.is_empty() {
                // Never answer: hold the connection until the client gives up and closes it.
                while matches!(s.read(&mut b), Ok(n) if n > 0) {}
                continue;
            }
            // Send in two writes to exercise reassembly.
            let mid = resp.len() / 2;
            let _ = s.write_all(&resp[..mid]);
            let _ = s.flush();
            // Not a wait: a pause between the halves, so the client reads them separately.
            std::thread::sleep(Duration::from_millis(20));
            let _ = s.write_all(&resp[mid..]);
        }
    });
    port
}

#[test]
fn http_client_reads_all_body_framings() {
    let port = canned_server(vec![
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Thing: a b\r\n\r\nhello".to_vec(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\nTrailer: x\r\n\r\n".to_vec(),
        b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\nuntil eof".to_vec(),
        Vec::new(),
    ]);
    let url = format!("http://127.0.0.1:{port}/x?y=1");
    let r = http_get(&url, HTTP_TIMEOUT).expect("content-length response");
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("X-THING"), Some("a b"));
    let r = http_get(&url, HTTP_TIMEOUT).expect("chunked response");
    assert_eq!(r.text(), "Wikipedia ");
    let r = http_get(&url, HTTP_TIMEOUT).expect("EOF-delimited response");
    assert_eq!((r.status, r.text().as_str()), (404, "until eof"));
    let start = Instant::now();
    let e = http_get(&url, Duration::from_millis(500)).expect_err("silent server must time out");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "timeout not honoured: {e}"
    );
    let port_closed = free_tcp_port();
    assert!(http_get(&format!("http://127.0.0.1:{port_closed}/"), HTTP_TIMEOUT).is_err());
}

#[test]
fn chunked_decoding() {
    assert_eq!(
        decode_chunked(b"3\r\nabc\r\n0\r\n\r\n"),
        Ok(Some(b"abc".to_vec()))
    );
    assert_eq!(decode_chunked(b"3\r\nabc\r\n"), Ok(None));
    assert_eq!(decode_chunked(b"3\r\nab"), Ok(None));
    assert!(decode_chunked(b"zz\r\n").is_err());
}

// ---------------------------------------------------------------------------------------------
// Media: ffprobe, encoders, player

/// Makes a VOD fMP4 HLS (init.mp4 + index*.m4s, 2 s segments) of `secs` seconds in `dir`.
fn make_hls(dir: &Path, secs: u32, size: &str) {
    let out = common::run_with_timeout(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-nostdin",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg(format!("testsrc2=size={size}:rate=30"))
            .args([
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=48000",
                "-t",
            ])
            .arg(secs.to_string())
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-g",
                "60",
                "-keyint_min",
                "60",
                "-sc_threshold",
                "0",
            ])
            .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "48000"])
            .args([
                "-f",
                "hls",
                "-hls_time",
                "2",
                "-hls_playlist_type",
                "vod",
                "-hls_segment_type",
                "fmp4",
            ])
            .arg(dir.join("index.m3u8")),
        Duration::from_secs(60),
    )
    .expect("run ffmpeg to make HLS");
    assert!(
        out.status.success(),
        "ffmpeg HLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ffprobe_decodes_fmp4() {
    let dir = TempDir::new("probe-selftest");
    make_hls(dir.path(), 4, "320x180");
    let read = |name: &str| {
        std::fs::read(dir.path().join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
    };
    let init = read("init.mp4");
    let (s0, s1) = (read("index0.m4s"), read("index1.m4s"));
    let p = ffprobe_decode(&init, &[&s0, &s1]).expect("decode init + 2 segments");
    assert_eq!((p.codec.as_str(), p.codec_type.as_str()), ("h264", "video"));
    assert_eq!((p.width, p.height), (Some(320), Some(180)));
    assert_eq!(p.frames_decoded, 120, "{p:?}");
    let d = p.duration.expect("duration");
    assert!((d - 4.0).abs() < 0.1, "{p:?}");
    assert_eq!(p.stream_count, 2);
    assert!(
        ffprobe_decode(b"not an mp4 at all", &[]).is_err(),
        "garbage must fail"
    );
}

/// True once something listens on this TCP port (read from /proc, without connecting, so a
/// single-connection listener is not consumed).
fn tcp_listening(port: u16) -> bool {
    proc_net_has(&["/proc/net/tcp", "/proc/net/tcp6"], port, Some("0A"))
}

/// True once a UDP socket is bound to this port.
fn udp_bound(port: u16) -> bool {
    proc_net_has(&["/proc/net/udp", "/proc/net/udp6"], port, None)
}

fn proc_net_has(files: &[&str], port: u16, state: Option<&str>) -> bool {
    let hex = format!(":{port:04X}");
    files.iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.len() > 3 && cols[1].ends_with(&hex) && state.is_none_or(|s| cols[3] == s)
            })
    })
}

struct Listener {
    child: Child,
    out: PathBuf,
    _dir: TempDir,
}

impl Drop for Listener {
    fn drop(&mut self) {
        common::kill_and_reap(&mut self.child);
    }
}

/// `ffmpeg -listen 1` RTMP server copying what it receives to an FLV file.
fn rtmp_listener() -> (Listener, String) {
    let dir = TempDir::new("rtmp-listener");
    let port = free_tcp_port();
    let url = format!("rtmp://127.0.0.1:{port}/live/selftest-key");
    let out = dir.path().join("received.flv");
    let child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-listen",
            "1",
            "-i",
            &url,
            "-c",
            "copy",
            "-f",
            "flv",
        ])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ffmpeg RTMP listener");
    wait_until(LISTENER_START_TIMEOUT, || tcp_listening(port).then_some(()))
        .expect("ffmpeg RTMP listener up");
    (
        Listener {
            child,
            out,
            _dir: dir,
        },
        url,
    )
}

/// `srt-live-transmit` SRT listener (one caller) writing the MPEG-TS it receives to a file.
fn srt_listener() -> (Listener, String) {
    let dir = TempDir::new("srt-listener");
    let port = free_udp_port();
    let out = dir.path().join("received.ts");
    let f = std::fs::File::create(&out).expect("create SRT output file");
    let child = Command::new("srt-live-transmit")
        .arg("-a:no") // exit when the caller disconnects
        .arg(format!("srt://:{port}?mode=listener"))
        .arg("file://con")
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn srt-live-transmit listener");
    wait_until(LISTENER_START_TIMEOUT, || udp_bound(port).then_some(())).expect("SRT listener up");
    let url = format!("srt://127.0.0.1:{port}?streamid=#!::r=live/selftest-key,m=publish");
    (
        Listener {
            child,
            out,
            _dir: dir,
        },
        url,
    )
}

fn short_opts() -> EncOpts {
    EncOpts {
        width: 320,
        height: 180,
        duration: Duration::from_secs(ENCODE_SECS),
        ..EncOpts::default()
    }
}

/// Runs the encoder to its end and checks the listener received decodable 320x180 H.264 + AAC.
fn assert_received(mut enc: Encoder, mut listener: Listener) {
    let st = enc
        .wait_exit(ENCODER_FINISH_TIMEOUT)
        .expect("encoder ends after its duration");
    assert!(st.success(), "encoder exit {st}:\n{}", enc.log_text());
    // Both listeners exit once their single publisher has gone (flushing their output).
    common::wait_child(&mut listener.child, LISTENER_FLUSH_TIMEOUT)
        .expect("listener exits after the publisher left");
    let data = std::fs::read(&listener.out).expect("read what the listener received");
    let p = ffprobe_decode(&data, &[])
        .unwrap_or_else(|e| panic!("decode received stream: {e}\n{}", enc.log_text()));
    assert_eq!(
        (p.codec.as_str(), p.width, p.height),
        ("h264", Some(320), Some(180)),
        "{p:?}"
    );
    assert_eq!(p.stream_count, 2, "video + audio expected: {p:?}");
    let expected = ENCODE_SECS * 30;
    assert!(
        p.frames_decoded + 15 >= expected,
        "decoded {} of ~{expected} frames: {p:?}",
        p.frames_decoded
    );
}

#[test]
fn encoder_ffmpeg_rtmp() {
    let (l, url) = rtmp_listener();
    assert_received(Encoder::ffmpeg_rtmp(&url, short_opts()), l);
}

#[test]
fn encoder_gst_rtmp2sink() {
    let (l, url) = rtmp_listener();
    assert_received(Encoder::gst_rtmp2sink(&url, short_opts()), l);
}

#[test]
fn encoder_ffmpeg_srt() {
    let (l, url) = srt_listener();
    assert_received(Encoder::ffmpeg_srt(&url, short_opts()), l);
}

#[test]
fn encoder_srt_live_transmit() {
    let (mut listener, url) = srt_listener();
    let mut enc = Encoder::srt_live_transmit(&url, short_opts());
    assert!(
        enc.is_running(),
        "relay and feeder start:\n{}",
        enc.log_text()
    );
    // The relay never exits by itself (UDP input has no end); is_running() turns false once
    // the ffmpeg feeder has sent its ENCODE_SECS.
    wait_until(ENCODER_FINISH_TIMEOUT, || (!enc.is_running()).then_some(()))
        .unwrap_or_else(|| panic!("ffmpeg feeder should have finished:\n{}", enc.log_text()));
    assert!(
        enc.exit_status().is_none(),
        "the relay itself keeps running"
    );
    // Let the relay drain SRT's latency buffer (the listener has every frame the feeder
    // sent), then hang up: the listener (-a:no) exits.
    wait_for(
        "the SRT listener to receive every frame the feeder sent",
        Duration::from_secs(15),
        || {
            let data = std::fs::read(&listener.out).ok()?;
            let p = ffprobe_decode(&data, &[]).ok()?;
            (p.frames_decoded + 15 >= ENCODE_SECS * 30).then_some(())
        },
    );
    enc.kill();
    assert!(!enc.is_running());
    common::wait_child(&mut listener.child, LISTENER_FLUSH_TIMEOUT)
        .expect("SRT listener exits after the caller left");
    let data = std::fs::read(&listener.out).expect("read what the listener received");
    let p = ffprobe_decode(&data, &[])
        .unwrap_or_else(|e| panic!("decode received stream: {e}\n{}", enc.log_text()));
    assert_eq!(
        (p.codec.as_str(), p.width, p.height),
        ("h264", Some(320), Some(180)),
        "{p:?}"
    );
    assert_eq!(p.stream_count, 2, "video + audio expected: {p:?}");
    assert!(p.frames_decoded + 15 >= ENCODE_SECS * 30, "{p:?}");
}

#[test]
fn encoder_is_killed_on_drop() {
    // A TCP port that accepts connections (kernel backlog) but never answers the RTMP
    // handshake: ffmpeg hangs there until killed.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind silent listener");
    let port = silent.local_addr().expect("local addr").port();
    let mut enc = Encoder::ffmpeg_rtmp(
        &format!("rtmp://127.0.0.1:{port}/live/k"),
        EncOpts::default(),
    );
    let pid = enc.pid();
    // ffmpeg connected: the kernel completed the TCP handshake into the backlog.
    silent.set_nonblocking(true).expect("nonblocking");
    let _conn = wait_for(
        "ffmpeg to connect to the silent listener",
        Duration::from_secs(30),
        || silent.accept().ok(),
    );
    assert!(
        enc.is_running(),
        "ffmpeg should be stuck in the handshake:\n{}",
        enc.log_text()
    );
    assert!(enc.exit_status().is_none());
    drop(enc);
    // Killed and reaped: the pid is gone.
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "encoder pid {pid} survived its drop"
    );
}

/// Serves files from `dir` over HTTP/1.1 on a background thread (one thread per connection),
/// with `Access-Control-Allow-Origin: *` if `cors`. Lives until the test binary exits.
fn static_server(dir: PathBuf, cors: bool) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind static server");
    let port = l.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut req = Vec::new();
                let mut b = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req);
                let path = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("/")
                    .split('?')
                    .next()
                    .unwrap_or("/")
                    .to_string();
                let file = dir.join(path.trim_start_matches('/'));
                let cors_hdr = if cors {
                    "Access-Control-Allow-Origin: *\r\n"
                } else {
                    ""
                };
                let resp = match (path.contains(".."), std::fs::read(&file)) {
                    (false, Ok(body)) => {
                        let ct = if path.ends_with(".m3u8") { "application/vnd.apple.mpegurl" } else { "video/mp4" };
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n{cors_hdr}Connection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&body);
                        r
                    }
                    _ => format!("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n{cors_hdr}Connection: close\r\n\r\n").into_bytes(),
                };
                let _ = s.write_all(&resp);
            });
        }
    });
    port
}

#[test]
fn player_plays_local_hls_in_chromium() {
    let dir = TempDir::new("player-selftest");
    make_hls(dir.path(), 12, "640x360");
    let port = static_server(dir.path().to_path_buf(), true);
    let url = format!("http://127.0.0.1:{port}/index.m3u8");
    let r = http_get(&url, HTTP_TIMEOUT).expect("static server serves the playlist");
    assert_eq!(r.status, 200);
    let report = play_in_chromium(&url, 6);
    eprintln!("{report:?}");
    assert!(
        report.fatal_errors.is_empty(),
        "fatal player errors: {:?}",
        report.fatal_errors
    );
    assert!(
        report.start_time.is_some(),
        "playback never started: {report:?}"
    );
    assert!(
        report.advanced >= 3.0,
        "played only {} s: {report:?}",
        report.advanced
    );
    assert_eq!(report.levels, 1);
    assert!(report.decoded_frames.unwrap_or(0) > 60, "{report:?}");
}

#[test]
fn player_reports_fatal_errors() {
    // Without CORS the browser refuses the playlist: the report must say so (and not panic).
    let dir = TempDir::new("player-selftest-nocors");
    std::fs::write(dir.path().join("index.m3u8"), "#EXTM3U\n").expect("write playlist");
    let port = static_server(dir.path().to_path_buf(), false);
    let report = play_in_chromium(&format!("http://127.0.0.1:{port}/index.m3u8"), 2);
    assert!(
        !report.fatal_errors.is_empty(),
        "expected a fatal error: {report:?}"
    );
    assert!(
        report.start_time.is_none() && report.advanced == 0.0,
        "{report:?}"
    );
}
