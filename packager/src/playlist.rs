//! Playlist text: LL-HLS media playlists and the multivariant playlist (pure renderers).
//!
//! Entry points: [`render_media`] renders a [`MediaPlaylist`] snapshot (full or, with
//! `skip = true`, a Playlist Delta Update), [`render_multivariant`] renders the variants.
//! Rendering is a pure function of the snapshot: this module depends on no other module of
//! the crate (the track builds snapshots; the renderer never sees a track).
//! Both follow draft-pantos-hls-rfc8216bis:
//! - EXT-X-TARGETDURATION is an integer >= every EXTINF rounded to the nearest integer
//!   (the track guarantees it);
//! - EXT-X-SERVER-CONTROL advertises CAN-BLOCK-RELOAD=YES, PART-HOLD-BACK = 3 × PART-TARGET
//!   and CAN-SKIP-UNTIL = 6 × target duration;
//! - EXT-X-PART lines are listed for segments that end within the last
//!   [`PART_LIST_TARGET_DURATIONS`] target durations, INDEPENDENT=YES on parts starting with a
//!   sync sample;
//! - EXT-X-MAP before the first segment and wherever the init version changes;
//!   EXT-X-PROGRAM-DATE-TIME on every segment (each is its first frame's arrival on the wall
//!   clock and the same in every rendition, so a player that aligns renditions by PDT, or
//!   joins at a later window, never derives a different date from durations);
//! - a delta update replaces the leading complete segments that end at least CAN-SKIP-UNTIL
//!   before the end of the playlist with EXT-X-SKIP (only when there is at least one);
//! - EXT-X-GAP before a segment a rendition has no media for (a number it skipped: see
//!   `track`), listed with its EXTINF and PDT like any other and without parts;
//! - EXT-X-PRELOAD-HINT for the next part, EXT-X-RENDITION-REPORT per other rendition, and
//!   EXT-X-ENDLIST when the stream is over.
//! - The multivariant playlist does not claim EXT-X-INDEPENDENT-SEGMENTS: a source whose
//!   keyframe interval exceeds the segment limit gets segments cut at non-keyframes (see
//!   `track`), and a claim made once to a player cannot be withdrawn.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Parts stay listed (EXT-X-PART) for segments ending within this many target durations of
/// the playlist end (the spec's minimum is three).
pub(crate) const PART_LIST_TARGET_DURATIONS: u64 = 3;

/// Protocol version: EXT-X-SKIP (delta updates) needs version 9; everything else we use
/// (fMP4 EXT-X-MAP, parts, preload hints) is covered by it.
pub(crate) const PLAYLIST_VERSION: u32 = 9;

/// CAN-SKIP-UNTIL in target durations (the spec's minimum is six).
pub(crate) const SKIP_UNTIL_TARGET_DURATIONS: u64 = 6;

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
    /// EXT-X-GAP: no media (and no parts).
    pub gap: bool,
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
    /// PART-HOLD-BACK, seconds ([`part_hold_back`]).
    pub part_hold_back: f64,
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

/// PART-HOLD-BACK for a part target (seconds) and a hold-back in part targets
/// (`PackagerConfig::part_hold_back_parts`), as served: the part target rounded as PART-TARGET
/// is printed, times the parts, rounded up, so it is never printed below its bound.
pub(crate) fn part_hold_back(part_target: f64, parts: u32) -> f64 {
    ceil5((part_target * 1e5).round() / 1e5 * f64::from(parts))
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
        pl.part_hold_back
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
        if let Some(pdt) = s.pdt {
            let _ = writeln!(o, "#EXT-X-PROGRAM-DATE-TIME:{}", format_pdt(pdt));
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
            if s.gap {
                let _ = writeln!(o, "#EXT-X-GAP");
            }
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
    /// BANDWIDTH (measured peak segment bit rate, including audio; nominal until measured).
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
#[path = "playlist_test.rs"]
pub(crate) mod tests;
