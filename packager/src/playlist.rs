//! Playlist text: LL-HLS media playlists and the multivariant playlist (pure renderers).
//!
//! Entry points: [`render_media`] renders a [`MediaPlaylist`] view (full or, with
//! `skip = true`, a Playlist Delta Update), [`render_multivariant`] renders the variants.
//! Both follow draft-pantos-hls-rfc8216bis:
//! - EXT-X-TARGETDURATION is an integer >= every EXTINF rounded to the nearest integer
//!   (the track guarantees it);
//! - EXT-X-SERVER-CONTROL advertises CAN-BLOCK-RELOAD=YES, PART-HOLD-BACK = 3 × PART-TARGET
//!   and CAN-SKIP-UNTIL = 6 × target duration;
//! - EXT-X-PART lines are listed for segments that end within the last
//!   [`PART_LIST_TARGET_DURATIONS`] target durations, INDEPENDENT=YES on parts starting with a
//!   sync sample;
//! - EXT-X-MAP before the first segment and wherever the init version changes,
//!   EXT-X-PROGRAM-DATE-TIME on the first listed segment and after each discontinuity;
//! - a delta update replaces the leading complete segments that end at least CAN-SKIP-UNTIL
//!   before the end of the playlist with EXT-X-SKIP (only when there is at least one);
//! - EXT-X-PRELOAD-HINT for the next part, EXT-X-RENDITION-REPORT per other rendition, and
//!   EXT-X-ENDLIST when the stream is over.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::track::PART_LIST_TARGET_DURATIONS;

/// Protocol version: EXT-X-SKIP (delta updates) needs version 9; everything else we use
/// (fMP4 EXT-X-MAP, parts, preload hints) is covered by it.
pub(crate) const PLAYLIST_VERSION: u32 = 9;

/// CAN-SKIP-UNTIL in target durations (the spec's minimum is six).
pub(crate) const SKIP_UNTIL_TARGET_DURATIONS: u64 = 6;

/// PART-HOLD-BACK in part targets (the spec requires at least two and recommends three).
pub(crate) const PART_HOLD_BACK_PARTS: f64 = 3.0;

/// A part line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PartEntry {
    /// Relative URI.
    pub uri: String,
    /// Seconds.
    pub duration: f64,
    /// Starts with a sync sample.
    pub independent: bool,
}

/// A segment with its parts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SegmentEntry {
    /// Media sequence number.
    pub msn: u64,
    /// Relative URI of the whole segment.
    pub uri: String,
    /// Seconds (sum of the parts).
    pub duration: f64,
    /// Complete (has an EXTINF line) or still in progress (parts only).
    pub complete: bool,
    /// Its parts.
    pub parts: Vec<PartEntry>,
    /// Preceded by EXT-X-DISCONTINUITY.
    pub discontinuity: bool,
    /// URI of its init segment.
    pub map_uri: String,
    /// Wall-clock time of its first sample.
    pub pdt: Option<SystemTime>,
}

/// EXT-X-RENDITION-REPORT content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RenditionReport {
    /// Relative URI of the other rendition's playlist.
    pub uri: String,
    /// MSN of its last part.
    pub last_msn: u64,
    /// Index of its last part.
    pub last_part: u32,
}

/// Everything a media playlist shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MediaPlaylist {
    /// EXT-X-TARGETDURATION.
    pub target_duration: u64,
    /// PART-TARGET, seconds.
    pub part_target: f64,
    /// EXT-X-MEDIA-SEQUENCE (MSN of the first segment).
    pub media_sequence: u64,
    /// EXT-X-DISCONTINUITY-SEQUENCE.
    pub discontinuity_sequence: u64,
    /// Segments, the last possibly in progress.
    pub segments: Vec<SegmentEntry>,
    /// URI of the next part, if any.
    pub preload_hint: Option<String>,
    /// Other renditions' positions.
    pub rendition_reports: Vec<RenditionReport>,
    /// EXT-X-ENDLIST.
    pub ended: bool,
}

impl MediaPlaylist {
    /// CAN-SKIP-UNTIL in seconds.
    pub fn skip_until(&self) -> f64 {
        (self.target_duration * SKIP_UNTIL_TARGET_DURATIONS) as f64
    }

    /// How many leading segments a delta update would skip.
    pub fn skippable(&self) -> usize {
        let total: f64 = self.segments.iter().map(|s| s.duration).sum();
        let mut end = 0.0;
        let mut n = 0;
        for s in &self.segments {
            end += s.duration;
            // Small epsilon: durations are sums of exact tick counts printed as decimals.
            if !s.complete || total - end + 1e-9 < self.skip_until() {
                break;
            }
            n += 1;
        }
        n
    }
}

/// Round up to 5 decimals (so derived minimums are never printed below their bound).
fn ceil5(v: f64) -> f64 {
    ((v * 1e5) - 1e-6).ceil() / 1e5
}

/// Render a media playlist; `skip` asks for a delta update (EXT-X-SKIP) when possible.
pub(crate) fn render_media(pl: &MediaPlaylist, skip: bool) -> String {
    let mut o = String::with_capacity(2048);
    let part_target = (pl.part_target * 1e5).round() / 1e5;
    let _ = writeln!(o, "#EXTM3U");
    let _ = writeln!(o, "#EXT-X-VERSION:{PLAYLIST_VERSION}");
    let _ = writeln!(o, "#EXT-X-TARGETDURATION:{}", pl.target_duration);
    let _ = writeln!(
        o,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={:.1},PART-HOLD-BACK={:.5}",
        pl.skip_until(),
        ceil5(part_target * PART_HOLD_BACK_PARTS)
    );
    let _ = writeln!(o, "#EXT-X-PART-INF:PART-TARGET={part_target:.5}");
    let _ = writeln!(o, "#EXT-X-MEDIA-SEQUENCE:{}", pl.media_sequence);
    let _ = writeln!(
        o,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        pl.discontinuity_sequence
    );

    let skipped = if skip { pl.skippable() } else { 0 };
    if skipped > 0 {
        let _ = writeln!(o, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    }

    // Parts are listed for segments ending within the last few target durations.
    let part_window = (pl.target_duration * PART_LIST_TARGET_DURATIONS) as f64;
    let total: f64 = pl.segments.iter().map(|s| s.duration).sum();
    let mut end = 0.0;
    let mut map: Option<&str> = None;
    for (i, s) in pl.segments.iter().enumerate() {
        end += s.duration;
        if i < skipped {
            map = Some(&s.map_uri);
            continue;
        }
        let first = i == skipped;
        if s.discontinuity {
            let _ = writeln!(o, "#EXT-X-DISCONTINUITY");
        }
        if first || map != Some(s.map_uri.as_str()) || s.discontinuity {
            let _ = writeln!(o, "#EXT-X-MAP:URI=\"{}\"", s.map_uri);
        }
        map = Some(&s.map_uri);
        if first || s.discontinuity {
            if let Some(pdt) = s.pdt {
                let _ = writeln!(o, "#EXT-X-PROGRAM-DATE-TIME:{}", format_pdt(pdt));
            }
        }
        if !s.complete || total - end < part_window {
            for p in &s.parts {
                let _ = write!(
                    o,
                    "#EXT-X-PART:DURATION={:.5},URI=\"{}\"",
                    p.duration, p.uri
                );
                if p.independent {
                    let _ = write!(o, ",INDEPENDENT=YES");
                }
                o.push('\n');
            }
        }
        if s.complete {
            let _ = writeln!(o, "#EXTINF:{:.5},", s.duration);
            let _ = writeln!(o, "{}", s.uri);
        }
    }
    if !pl.ended {
        if let Some(hint) = &pl.preload_hint {
            let _ = writeln!(o, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"");
        }
    }
    for r in &pl.rendition_reports {
        let _ = writeln!(
            o,
            "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={},LAST-PART={}",
            r.uri, r.last_msn, r.last_part
        );
    }
    if pl.ended {
        let _ = writeln!(o, "#EXT-X-ENDLIST");
    }
    o
}

/// A video variant (EXT-X-STREAM-INF), or an audio-only one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Variant {
    /// Relative URI of its media playlist.
    pub uri: String,
    /// BANDWIDTH (peak, including audio).
    pub bandwidth: u64,
    /// AVERAGE-BANDWIDTH, when measured.
    pub average_bandwidth: Option<u64>,
    /// CODECS, comma-separated.
    pub codecs: String,
    /// RESOLUTION.
    pub resolution: Option<(u32, u32)>,
    /// FRAME-RATE.
    pub frame_rate: Option<f64>,
    /// AUDIO group to reference.
    pub audio_group: Option<String>,
}

/// An audio rendition (EXT-X-MEDIA:TYPE=AUDIO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AudioMedia {
    /// GROUP-ID.
    pub group: String,
    /// NAME.
    pub name: String,
    /// Relative URI of its media playlist.
    pub uri: String,
    /// DEFAULT=YES.
    pub default: bool,
    /// CHANNELS.
    pub channels: Option<u32>,
}

/// Render the multivariant playlist.
pub(crate) fn render_multivariant(variants: &[Variant], audio: &[AudioMedia]) -> String {
    let mut o = String::with_capacity(1024);
    let _ = writeln!(o, "#EXTM3U");
    let _ = writeln!(o, "#EXT-X-INDEPENDENT-SEGMENTS");
    for a in audio {
        let _ = write!(
            o,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{}\",NAME=\"{}\",DEFAULT={},AUTOSELECT=YES",
            a.group,
            a.name,
            if a.default { "YES" } else { "NO" }
        );
        if let Some(ch) = a.channels {
            let _ = write!(o, ",CHANNELS=\"{ch}\"");
        }
        let _ = writeln!(o, ",URI=\"{}\"", a.uri);
    }
    for v in variants {
        let _ = write!(o, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth);
        if let Some(avg) = v.average_bandwidth {
            let _ = write!(o, ",AVERAGE-BANDWIDTH={avg}");
        }
        let _ = write!(o, ",CODECS=\"{}\"", v.codecs);
        if let Some((w, h)) = v.resolution {
            let _ = write!(o, ",RESOLUTION={w}x{h}");
        }
        if let Some(fr) = v.frame_rate {
            let _ = write!(o, ",FRAME-RATE={fr:.3}");
        }
        if let Some(g) = &v.audio_group {
            let _ = write!(o, ",AUDIO=\"{g}\"");
        }
        o.push('\n');
        let _ = writeln!(o, "{}", v.uri);
    }
    o
}

/// ISO 8601 / RFC 3339 UTC with milliseconds, e.g. "2023-11-14T22:13:20.000Z".
pub(crate) fn format_pdt(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
pub(crate) mod tests {
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
            parts: (0..parts)
                .map(|i| PartEntry {
                    uri: format!("part{msn}.{i}.m4s"),
                    duration: 0.3,
                    independent: i == 0,
                })
                .collect(),
            discontinuity: false,
            map_uri: "init.mp4".into(),
            pdt: Some(
                UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_secs(2 * msn),
            ),
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
        let skip: f64 = attr(sc, "CAN-SKIP-UNTIL").unwrap().parse().unwrap();
        assert_eq!(skip, 12.0);
        assert_eq!(lines[5], "#EXT-X-MEDIA-SEQUENCE:100");
        assert_eq!(lines[6], "#EXT-X-DISCONTINUITY-SEQUENCE:3");
        assert_eq!(lines[7], "#EXT-X-MAP:URI=\"init.mp4\"");
        assert_eq!(
            lines[8],
            "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:16:40.000Z"
        );
        // Only one MAP and one PDT (no discontinuity).
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("#EXT-X-MAP")).count(),
            1
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("#EXT-X-PROGRAM-DATE-TIME"))
                .count(),
            1
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
            2
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
        assert_eq!(lines[1], "#EXT-X-INDEPENDENT-SEGMENTS");
        assert_eq!(
            lines[2],
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/index.m3u8\""
        );
        let inf = lines[3];
        assert_eq!(attr(inf, "BANDWIDTH"), Some("3128000"));
        assert_eq!(attr(inf, "AVERAGE-BANDWIDTH"), Some("2500000"));
        assert_eq!(attr(inf, "CODECS"), Some("avc1.64001f,mp4a.40.2"));
        assert_eq!(attr(inf, "RESOLUTION"), Some("1280x720"));
        assert_eq!(attr(inf, "FRAME-RATE"), Some("29.970"));
        assert_eq!(attr(inf, "AUDIO"), Some("audio"));
        assert_eq!(lines[4], "720p/index.m3u8");
    }

    #[test]
    fn pdt_format() {
        assert_eq!(format_pdt(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_pdt(UNIX_EPOCH + Duration::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
    }
}
