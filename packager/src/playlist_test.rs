//! Unit tests of `playlist` (kept beside it; compiled only for tests).

use super::*;
use std::time::Duration;

/// Attribute value of `name` in an attribute-list line.
pub fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let list = line.split_once(':')?.1;
    // Split on commas outside quotes.
    let mut start = 0;
    let mut quoted = false;
    let bytes = list.as_bytes();
    let mut parts = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                parts.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&list[start..]);
    parts.into_iter().find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.trim_matches('"'))
    })
}

fn seg(msn: u64, parts: usize, complete: bool) -> SegmentEntry {
    SegmentEntry {
        msn,
        uri: format!("seg{msn}.m4s"),
        duration: 0.3 * parts as f64 + if complete { 0.2 } else { 0.0 },
        complete,
        gap: false,
        parts: (0..parts)
            .map(|i| PartEntry {
                uri: format!("part{msn}.{i}.m4s"),
                duration: 0.3,
                independent: i == 0,
            })
            .collect(),
        discontinuity: false,
        map_uri: "init.mp4".into(),
        pdt: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_secs(2 * msn)),
    }
}

/// 20 complete segments of 2 s (6 parts + 0.2 s) and one in progress with 2 parts.
fn playlist() -> MediaPlaylist {
    let mut segments: Vec<_> = (100..120).map(|m| seg(m, 6, true)).collect();
    for s in &mut segments {
        // Make the parts sum to the duration: six 0.3 s parts and a 0.2 s one.
        s.parts.push(PartEntry {
            uri: format!("part{}.6.m4s", s.msn),
            duration: 0.2,
            independent: false,
        });
    }
    segments.push(seg(120, 2, false));
    MediaPlaylist {
        target_duration: 2,
        part_target: 0.333,
        part_hold_back: part_hold_back(0.333, 3),
        media_sequence: 100,
        discontinuity_sequence: 3,
        segments,
        preload_hint: Some("part120.2.m4s".into()),
        rendition_reports: vec![RenditionReport {
            uri: "../480p/index.m3u8".into(),
            last_msn: 120,
            last_part: 1,
        }],
        ended: false,
    }
}

#[test]
fn media_playlist_lines() {
    let text = render_media(&playlist(), false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "#EXTM3U");
    assert_eq!(lines[1], "#EXT-X-VERSION:9");
    assert_eq!(lines[2], "#EXT-X-TARGETDURATION:2");
    let sc = lines[3];
    assert!(sc.starts_with("#EXT-X-SERVER-CONTROL:"));
    assert_eq!(attr(sc, "CAN-BLOCK-RELOAD"), Some("YES"));
    let phb: f64 = attr(sc, "PART-HOLD-BACK").unwrap().parse().unwrap();
    let pt: f64 = attr(lines[4], "PART-TARGET").unwrap().parse().unwrap();
    assert!(lines[4].starts_with("#EXT-X-PART-INF:"));
    // Decimal comparison (3 x 0.333 is 0.9990000000000001 in binary floating point).
    assert!(phb + 1e-9 >= 3.0 * pt, "PART-HOLD-BACK {phb} < 3 x {pt}");
    assert!(phb <= 3.0 * pt + 1e-5, "PART-HOLD-BACK {phb} > 3 x {pt}");
    let skip: f64 = attr(sc, "CAN-SKIP-UNTIL").unwrap().parse().unwrap();
    assert_eq!(skip, 12.0);
    assert_eq!(lines[5], "#EXT-X-MEDIA-SEQUENCE:100");
    assert_eq!(lines[6], "#EXT-X-DISCONTINUITY-SEQUENCE:3");
    assert_eq!(lines[7], "#EXT-X-MAP:URI=\"init.mp4\"");
    assert_eq!(
        lines[8],
        "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:16:40.000Z"
    );
    // Only one MAP (no discontinuity); a PDT on every segment, the complete ones and the
    // trailing one in progress.
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("#EXT-X-MAP")).count(),
        1
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("#EXT-X-PROGRAM-DATE-TIME"))
            .count(),
        playlist().segments.len()
    );
    // 20 EXTINF, each followed by its URI.
    let extinf: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("#EXTINF:"))
        .collect();
    assert_eq!(extinf.len(), 20);
    assert_eq!(lines[extinf[0] + 1], "seg100.m4s");
    assert_eq!(lines[extinf[0]], "#EXTINF:2.00000,");
    // Parts: only for segments ending within 3 target durations (6 s) of the end:
    // segments 117..119 end 4.6, 2.6 and 0.6 s before the end; 116 ends 6.6 s before.
    let parts: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .collect();
    assert_eq!(parts.len(), 3 * 7 + 2);
    assert!(parts[0].contains("URI=\"part117.0.m4s\""));
    for p in &parts {
        let d: f64 = attr(p, "DURATION").unwrap().parse().unwrap();
        assert!(d <= pt);
        let independent = attr(p, "INDEPENDENT") == Some("YES");
        assert_eq!(
            independent,
            attr(p, "URI").unwrap().ends_with(".0.m4s"),
            "{p}"
        );
    }
    // Parts of a segment precede its EXTINF.
    let p117 = lines
        .iter()
        .position(|l| l.contains("part117.6.m4s"))
        .unwrap();
    assert_eq!(lines[p117 + 1], "#EXTINF:2.00000,");
    assert_eq!(lines[p117 + 2], "seg117.m4s");
    // Tail: in-progress parts, hint, report; no ENDLIST.
    let n = lines.len();
    assert!(lines[n - 4].contains("part120.0.m4s"));
    assert!(lines[n - 3].contains("part120.1.m4s"));
    assert_eq!(
        lines[n - 2],
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part120.2.m4s\""
    );
    let rr = lines[n - 1];
    assert!(rr.starts_with("#EXT-X-RENDITION-REPORT:"));
    assert_eq!(attr(rr, "URI"), Some("../480p/index.m3u8"));
    assert_eq!(attr(rr, "LAST-MSN"), Some("120"));
    assert_eq!(attr(rr, "LAST-PART"), Some("1"));
    assert!(!text.contains("#EXT-X-ENDLIST"));
    assert!(!text.contains("#EXT-X-SKIP"));
}

#[test]
fn delta_update_skips_old_segments() {
    let pl = playlist();
    // Total 40.6 s; CAN-SKIP-UNTIL 12 s: segments ending at least 12 s before the end are
    // skipped: segment k (0-based) ends at 2(k+1); 40.6 - 2(k+1) >= 12 → k <= 13.
    assert_eq!(pl.skippable(), 14);
    let text = render_media(&pl, true);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[5], "#EXT-X-MEDIA-SEQUENCE:100");
    assert_eq!(lines[7], "#EXT-X-SKIP:SKIPPED-SEGMENTS=14");
    // The first listed segment is 114 and carries MAP and PDT.
    assert_eq!(lines[8], "#EXT-X-MAP:URI=\"init.mp4\"");
    assert!(lines[9].starts_with("#EXT-X-PROGRAM-DATE-TIME:"));
    assert_eq!(lines.iter().filter(|l| l.starts_with("#EXTINF")).count(), 6);
    assert!(!text.contains("seg113.m4s"));
    assert!(text.contains("seg114.m4s"));
    // Remaining content still covers CAN-SKIP-UNTIL.
    let kept: f64 = pl.segments[14..].iter().map(|s| s.duration).sum();
    assert!(kept >= pl.skip_until());
}

#[test]
fn short_playlist_is_never_skipped() {
    let mut pl = playlist();
    pl.segments.drain(..14);
    pl.media_sequence = 114;
    assert_eq!(pl.skippable(), 0);
    assert!(!render_media(&pl, true).contains("#EXT-X-SKIP"));
}

#[test]
fn discontinuity_map_pdt_and_endlist() {
    let mut pl = playlist();
    pl.segments.truncate(4);
    pl.segments[2].discontinuity = true;
    pl.segments[2].map_uri = "init1.mp4".into();
    pl.segments[3].map_uri = "init1.mp4".into();
    pl.ended = true;
    let text = render_media(&pl, false);
    let lines: Vec<&str> = text.lines().collect();
    let d = lines
        .iter()
        .position(|l| *l == "#EXT-X-DISCONTINUITY")
        .unwrap();
    assert_eq!(lines[d + 1], "#EXT-X-MAP:URI=\"init1.mp4\"");
    assert!(lines[d + 2].starts_with("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:16:44.000Z"));
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("#EXT-X-MAP")).count(),
        2
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("#EXT-X-PROGRAM-DATE-TIME"))
            .count(),
        4
    );
    assert_eq!(*lines.last().unwrap(), "#EXT-X-ENDLIST");
    assert!(!text.contains("PRELOAD-HINT"));
}

#[test]
fn multivariant_lines() {
    let text = render_multivariant(
        &[Variant {
            uri: "720p/index.m3u8".into(),
            bandwidth: 3_128_000,
            average_bandwidth: Some(2_500_000),
            codecs: "avc1.64001f,mp4a.40.2".into(),
            resolution: Some((1280, 720)),
            frame_rate: Some(30000.0 / 1001.0),
            audio_group: Some("audio".into()),
        }],
        &[AudioMedia {
            group: "audio".into(),
            name: "audio".into(),
            uri: "audio/index.m3u8".into(),
            default: true,
            channels: Some(2),
        }],
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "#EXTM3U");
    // Not claimed: see the module documentation.
    assert!(!text.contains("#EXT-X-INDEPENDENT-SEGMENTS"));
    assert_eq!(
        lines[1],
        "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/index.m3u8\""
    );
    let inf = lines[2];
    assert_eq!(attr(inf, "BANDWIDTH"), Some("3128000"));
    assert_eq!(attr(inf, "AVERAGE-BANDWIDTH"), Some("2500000"));
    assert_eq!(attr(inf, "CODECS"), Some("avc1.64001f,mp4a.40.2"));
    assert_eq!(attr(inf, "RESOLUTION"), Some("1280x720"));
    assert_eq!(attr(inf, "FRAME-RATE"), Some("29.970"));
    assert_eq!(attr(inf, "AUDIO"), Some("audio"));
    assert_eq!(lines[3], "720p/index.m3u8");
}

#[test]
fn pdt_format() {
    assert_eq!(format_pdt(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        format_pdt(UNIX_EPOCH + Duration::from_millis(951_782_400_123)),
        "2000-02-29T00:00:00.123Z"
    );
}

#[test]
fn part_hold_back_is_the_served_part_target_times_the_parts_never_below() {
    assert_eq!(part_hold_back(0.205, 2), 0.41);
    assert_eq!(part_hold_back(0.205, 3), 0.615);
    // 3 x 0.333 is 0.9990000000000001 in binary floating point: printed 0.99900, not above.
    assert_eq!(format!("{:.5}", part_hold_back(0.333, 3)), "0.99900");
    // A part target that PART-TARGET prints rounded: the hold-back follows what is printed.
    assert!(part_hold_back(0.2000049, 2) >= 0.4);
}
