//! The playlist rules, as one checker that every test reading a playlist uses: unit tests, the
//! property test that drives the packager through hours of virtual media, and the end-to-end
//! tests (`tests/common/hls.rs` calls it from `check_ll_hls`).
//!
//! Entry points: [`parse`] (a media playlist's text to a [`Playlist`]), [`check`] (the rules one
//! playlist must satisfy on its own), [`History`] (the rules over time, per rendition: feed it
//! every playlist fetched), [`check_aligned`] (the rules across the renditions of a stream).
//!
//! The rules, from draft-pantos-hls-rfc8216bis and Apple's HLS authoring specification for
//! LL-HLS, plus ours where marked:
//! - `#EXTM3U` first; EXT-X-VERSION >= 6 (>= 9 with EXT-X-SKIP); EXT-X-TARGETDURATION, EXT-X-PART-INF
//!   and EXT-X-SERVER-CONTROL with CAN-BLOCK-RELOAD=YES; PART-HOLD-BACK >= 2 x PART-TARGET
//!   (the spec's MUST; it recommends 3, `hls.part_hold_back_parts` chooses); CAN-SKIP-UNTIL >= 6 x TARGETDURATION when present.
//! - Every EXTINF rounded to the nearest integer <= TARGETDURATION; every part <= PART-TARGET;
//!   a segment's listed parts add up to its EXTINF.
//! - Ours: every segment has an EXT-X-PROGRAM-DATE-TIME; PDTs strictly increase, and without a
//!   discontinuity between them, PDT(n+1) - PDT(n) = EXTINF(n) within [`PDT_STEP_TOLERANCE`].
//! - After EXT-X-DISCONTINUITY comes an EXT-X-MAP (ours: every session restates its init).
//! - An EXT-X-GAP segment lists no parts (ours: a number without media has none to offer).
//! - [`Expect::keyframe_segments`]: the first part of every segment is INDEPENDENT=YES.
//! - EXT-X-PRELOAD-HINT TYPE=PART unless EXT-X-ENDLIST, naming the part right after the last
//!   listed one (ours: URIs are `part{MSN}.{INDEX}.m4s`).
//! - A delta update (EXT-X-SKIP) skips only segments that end at least CAN-SKIP-UNTIL before
//!   the end of the playlist.
//! - Rendition reports name each rendition once.
//! - Over time ([`History`]): TARGETDURATION and PART-TARGET never change; MEDIA-SEQUENCE and
//!   the last MSN never decrease; a segment keeps its EXTINF, PDT and discontinuity number
//!   once published; a hinted part is published unless a discontinuity or the end intervenes.
//! - Across renditions ([`check_aligned`]): the same MSN has the same PDT (within
//!   [`Expect::align_tolerance`]; the audio rendition, whose segments start on whole audio
//!   frames at or after the video's boundary and whose PDT is its own first sample's, within
//!   [`AUDIO_ALIGN_TOLERANCE`] after the video's) and the same discontinuity number (but for the sliver a
//!   timestamp jump can leave: see the function), and no rendition's last MSN is more than one
//!   ahead of another's.
//!
//! Caveat: the parser reads what the packager writes (and what any sane server writes), not
//! every legal spelling of every tag.

use std::collections::{HashMap, HashSet};

/// Durations in playlists are decimals rounded to 5 places; sums of them may be off by this.
pub const DURATION_TOLERANCE: f64 = 0.001;

/// Two consecutive PDTs of a rendition may differ from the EXTINF between them by this much:
/// each PDT is its segment's first frame's arrival, which jitters by a few ms on a real network.
pub const PDT_STEP_TOLERANCE: f64 = 0.1;

/// One EXT-X-PART line.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// DURATION, seconds.
    pub duration: f64,
    /// URI.
    pub uri: String,
    /// INDEPENDENT=YES.
    pub independent: bool,
}

/// A segment: complete (EXTINF + URI) or the trailing one in progress (parts only).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// EXTINF, seconds (sum of the parts while in progress).
    pub duration: f64,
    /// URI (`None` while in progress).
    pub uri: Option<String>,
    /// Its listed parts.
    pub parts: Vec<Part>,
    /// Preceded by EXT-X-DISCONTINUITY.
    pub discontinuity: bool,
    /// Discontinuity number: EXT-X-DISCONTINUITY-SEQUENCE plus the discontinuities before it.
    pub discontinuity_number: u64,
    /// EXT-X-PROGRAM-DATE-TIME, seconds since the UNIX epoch.
    pub pdt: Option<f64>,
    /// An EXT-X-MAP precedes it.
    pub map: bool,
    /// EXT-X-GAP: no media.
    pub gap: bool,
}

/// One EXT-X-RENDITION-REPORT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// URI.
    pub uri: String,
    /// LAST-MSN.
    pub last_msn: Option<u64>,
    /// LAST-PART.
    pub last_part: Option<u64>,
}

/// A parsed media playlist.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Playlist {
    /// First line is `#EXTM3U`.
    pub extm3u: bool,
    /// EXT-X-VERSION.
    pub version: Option<u64>,
    /// EXT-X-TARGETDURATION.
    pub target_duration: Option<u64>,
    /// PART-TARGET.
    pub part_target: Option<f64>,
    /// EXT-X-SERVER-CONTROL is present.
    pub server_control: bool,
    /// CAN-BLOCK-RELOAD=YES.
    pub can_block_reload: bool,
    /// PART-HOLD-BACK.
    pub part_hold_back: Option<f64>,
    /// CAN-SKIP-UNTIL.
    pub can_skip_until: Option<f64>,
    /// EXT-X-MEDIA-SEQUENCE.
    pub media_sequence: u64,
    /// EXT-X-DISCONTINUITY-SEQUENCE.
    pub discontinuity_sequence: u64,
    /// SKIPPED-SEGMENTS of EXT-X-SKIP.
    pub skipped: u64,
    /// Listed segments (after the skipped ones), the last possibly in progress.
    pub segments: Vec<Segment>,
    /// (TYPE, URI) of EXT-X-PRELOAD-HINT.
    pub preload_hint: Option<(String, String)>,
    /// EXT-X-RENDITION-REPORTs.
    pub reports: Vec<Report>,
    /// EXT-X-ENDLIST.
    pub ended: bool,
}

impl Playlist {
    /// (msn, index) of the last listed part.
    pub fn last_part(&self) -> Option<(u64, u64)> {
        let s = self.segments.iter().rev().find(|s| !s.parts.is_empty())?;
        Some((s.msn, s.parts.len() as u64 - 1))
    }

    /// MSN of the last segment listed (complete or not).
    pub fn last_msn(&self) -> Option<u64> {
        self.segments.last().map(|s| s.msn)
    }

    /// The segment `msn`, if listed.
    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.msn == msn)
    }
}

/// How far after the video's PDT (or how little before it) the audio rendition's PDT of the
/// same MSN may be: its segment starts at its first frame at or after the video's boundary,
/// a frame later when the boundary was learned late, two AAC frames at 22.05 kHz at most
/// (93 ms; `track::MAX_FOLLOW_LEAD_NS`); before it by the cutter's tolerance at most (10 ms,
/// `track::SEGMENT_CUT_TOLERANCE`).
pub const AUDIO_ALIGN_TOLERANCE: (f64, f64) = (-0.011, 0.094);

/// The rendition name of the audio (`RenditionKind::Audio`).
const AUDIO: &str = "audio";

/// What a checker may assume about the stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expect {
    /// Every segment starts with a keyframe (video whose source has a short enough GOP).
    pub keyframe_segments: bool,
    /// How far the PDTs of the same MSN in two renditions may differ, seconds.
    pub align_tolerance: f64,
}

impl Default for Expect {
    fn default() -> Self {
        Self {
            keyframe_segments: false,
            align_tolerance: 0.001,
        }
    }
}

fn attrs(v: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = v;
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            match q.split_once('"') {
                Some((val, n)) => (val, n.strip_prefix(',').unwrap_or(n)),
                None => (q, ""),
            }
        } else {
            match after.split_once(',') {
                Some((val, n)) => (val, n),
                None => (after, ""),
            }
        };
        out.insert(k.trim().to_string(), val.to_string());
        rest = next;
    }
    out
}

/// `part{MSN}.{INDEX}.m4s` to (msn, index).
pub fn part_position(uri: &str) -> Option<(u64, u64)> {
    let name = uri.rsplit('/').next()?;
    let (m, i) = name
        .strip_prefix("part")?
        .strip_suffix(".m4s")?
        .split_once('.')?;
    Some((m.parse().ok()?, i.parse().ok()?))
}

/// Civil date and time (UTC, `YYYY-MM-DDTHH:MM:SS.sssZ`) to seconds since the UNIX epoch.
fn parse_date(v: &str) -> Option<f64> {
    let (date, time) = v.split_once('T')?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let time = time.strip_suffix('Z')?;
    let mut t = time.split(':');
    let (h, mi, s): (f64, f64, f64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + s)
}

/// Parse a media playlist.
pub fn parse(text: &str) -> Result<Playlist, String> {
    let mut pl = Playlist {
        extm3u: text.lines().next() == Some("#EXTM3U"),
        ..Playlist::default()
    };
    let mut cur = Segment {
        msn: 0,
        duration: 0.0,
        uri: None,
        parts: Vec::new(),
        discontinuity: false,
        discontinuity_number: 0,
        pdt: None,
        map: false,
        gap: false,
    };
    let mut extinf: Option<f64> = None;
    let mut discontinuities = 0u64;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (tag, v) = line.split_once(':').unwrap_or((line, ""));
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("bad number in {line:?}"))
        };
        match tag {
            "#EXT-X-VERSION" => pl.version = Some(num(v)?),
            "#EXT-X-TARGETDURATION" => pl.target_duration = Some(num(v)?),
            "#EXT-X-MEDIA-SEQUENCE" => pl.media_sequence = num(v)?,
            "#EXT-X-DISCONTINUITY-SEQUENCE" => pl.discontinuity_sequence = num(v)?,
            "#EXT-X-PART-INF" => {
                pl.part_target = attrs(v).get("PART-TARGET").and_then(|x| x.parse().ok())
            }
            "#EXT-X-SERVER-CONTROL" => {
                let a = attrs(v);
                pl.server_control = true;
                pl.can_block_reload = a.get("CAN-BLOCK-RELOAD").map(String::as_str) == Some("YES");
                pl.part_hold_back = a.get("PART-HOLD-BACK").and_then(|x| x.parse().ok());
                pl.can_skip_until = a.get("CAN-SKIP-UNTIL").and_then(|x| x.parse().ok());
            }
            "#EXT-X-SKIP" => {
                pl.skipped = attrs(v)
                    .get("SKIPPED-SEGMENTS")
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(|| format!("EXT-X-SKIP without SKIPPED-SEGMENTS: {line:?}"))?;
            }
            "#EXT-X-DISCONTINUITY" => {
                cur.discontinuity = true;
            }
            "#EXT-X-MAP" => cur.map = true,
            "#EXT-X-GAP" => cur.gap = true,
            "#EXT-X-PROGRAM-DATE-TIME" => {
                cur.pdt = Some(parse_date(v).ok_or_else(|| format!("bad date in {line:?}"))?)
            }
            "#EXT-X-PART" => {
                let a = attrs(v);
                cur.parts.push(Part {
                    duration: a
                        .get("DURATION")
                        .and_then(|x| x.parse().ok())
                        .ok_or_else(|| format!("EXT-X-PART without DURATION: {line:?}"))?,
                    uri: a
                        .get("URI")
                        .cloned()
                        .ok_or_else(|| format!("EXT-X-PART without URI: {line:?}"))?,
                    independent: a.get("INDEPENDENT").map(String::as_str) == Some("YES"),
                });
            }
            "#EXTINF" => {
                let d = v.split(',').next().unwrap_or("");
                extinf = Some(d.parse().map_err(|_| format!("bad EXTINF {line:?}"))?);
            }
            "#EXT-X-PRELOAD-HINT" => {
                let a = attrs(v);
                pl.preload_hint = Some((
                    a.get("TYPE").cloned().unwrap_or_default(),
                    a.get("URI").cloned().unwrap_or_default(),
                ));
            }
            "#EXT-X-RENDITION-REPORT" => {
                let a = attrs(v);
                pl.reports.push(Report {
                    uri: a.get("URI").cloned().unwrap_or_default(),
                    last_msn: a.get("LAST-MSN").and_then(|x| x.parse().ok()),
                    last_part: a.get("LAST-PART").and_then(|x| x.parse().ok()),
                });
            }
            "#EXT-X-ENDLIST" => pl.ended = true,
            t if t.starts_with('#') => {}
            _ => {
                // A segment URI.
                let d = extinf
                    .take()
                    .ok_or_else(|| format!("segment URI {line:?} without EXTINF"))?;
                let msn = pl.media_sequence + pl.skipped + pl.segments.len() as u64;
                if cur.discontinuity {
                    discontinuities += 1;
                }
                let seg = Segment {
                    msn,
                    duration: d,
                    uri: Some(line.to_string()),
                    discontinuity_number: pl.discontinuity_sequence + discontinuities,
                    ..std::mem::replace(
                        &mut cur,
                        Segment {
                            msn: 0,
                            duration: 0.0,
                            uri: None,
                            parts: Vec::new(),
                            discontinuity: false,
                            discontinuity_number: 0,
                            pdt: None,
                            map: false,
                            gap: false,
                        },
                    )
                };
                pl.segments.push(seg);
            }
        }
    }
    if extinf.is_some() {
        return Err("EXTINF without a segment URI".into());
    }
    if !cur.parts.is_empty() {
        if cur.discontinuity {
            discontinuities += 1;
        }
        cur.msn = pl.media_sequence + pl.skipped + pl.segments.len() as u64;
        cur.duration = cur.parts.iter().map(|p| p.duration).sum();
        cur.discontinuity_number = pl.discontinuity_sequence + discontinuities;
        pl.segments.push(cur);
    }
    Ok(pl)
}

/// Parse `text` and check the rules one playlist must satisfy on its own; every violation is
/// returned (or the parse error).
pub fn check(text: &str, expect: &Expect) -> Result<Playlist, Vec<String>> {
    let pl = parse(text).map_err(|e| vec![format!("unparseable playlist: {e}")])?;
    let errs = check_parsed(&pl, expect);
    if errs.is_empty() {
        Ok(pl)
    } else {
        Err(errs)
    }
}

/// [`check`] on a parsed playlist.
pub fn check_parsed(pl: &Playlist, expect: &Expect) -> Vec<String> {
    let mut errs = Vec::new();
    if !pl.extm3u {
        errs.push("first line is not #EXTM3U".to_string());
    }
    let min_version = if pl.skipped > 0 { 9 } else { 6 };
    if pl.version.is_none_or(|v| v < min_version) {
        errs.push(format!("EXT-X-VERSION {:?} < {min_version}", pl.version));
    }
    let td = pl.target_duration.unwrap_or_else(|| {
        errs.push("no EXT-X-TARGETDURATION".into());
        0
    });
    let pt = pl.part_target.unwrap_or_else(|| {
        errs.push("no EXT-X-PART-INF PART-TARGET".into());
        0.0
    });
    if !pl.server_control || !pl.can_block_reload {
        errs.push("no EXT-X-SERVER-CONTROL with CAN-BLOCK-RELOAD=YES".into());
    }
    match pl.part_hold_back {
        Some(phb) if phb + DURATION_TOLERANCE >= 2.0 * pt => {}
        other => errs.push(format!("PART-HOLD-BACK {other:?} < 2 x PART-TARGET {pt}")),
    }
    if let Some(csu) = pl.can_skip_until {
        if csu + DURATION_TOLERANCE < 6.0 * td as f64 {
            errs.push(format!("CAN-SKIP-UNTIL {csu} < 6 x TARGETDURATION {td}"));
        }
    }
    if pl.segments.is_empty() && !pl.ended {
        errs.push("no segment and no part listed".into());
    }
    let mut uris = HashSet::new();
    for (i, s) in pl.segments.iter().enumerate() {
        let complete = s.uri.is_some();
        if complete && (s.duration.round() as u64 > td || s.duration <= 0.0) {
            errs.push(format!(
                "segment {} EXTINF {} not in (0, TARGETDURATION {td} + 0.5)",
                s.msn, s.duration
            ));
        }
        for (pi, p) in s.parts.iter().enumerate() {
            if p.duration > pt + DURATION_TOLERANCE || p.duration <= 0.0 {
                errs.push(format!(
                    "part {}.{pi} DURATION {} not in (0, PART-TARGET {pt}]",
                    s.msn, p.duration
                ));
            }
            if !uris.insert(p.uri.as_str()) {
                errs.push(format!("part URI {} listed twice", p.uri));
            }
            if part_position(&p.uri).is_some_and(|pos| pos != (s.msn, pi as u64)) {
                errs.push(format!("part {} listed as {}.{pi}", p.uri, s.msn));
            }
        }
        if complete && !s.parts.is_empty() {
            let sum: f64 = s.parts.iter().map(|p| p.duration).sum();
            if (sum - s.duration).abs() > DURATION_TOLERANCE * s.parts.len() as f64 {
                errs.push(format!(
                    "segment {} EXTINF {} but its parts add up to {sum:.5}",
                    s.msn, s.duration
                ));
            }
        }
        if s.gap && !s.parts.is_empty() {
            errs.push(format!("gap segment {} lists parts", s.msn));
        }
        if expect.keyframe_segments && s.parts.first().is_some_and(|p| !p.independent) {
            errs.push(format!(
                "segment {} does not start with an independent part",
                s.msn
            ));
        }
        if s.discontinuity && !s.map {
            errs.push(format!(
                "segment {} follows a discontinuity without EXT-X-MAP",
                s.msn
            ));
        }
        if i == 0 && !s.map {
            errs.push(format!("first listed segment {} has no EXT-X-MAP", s.msn));
        }
        match s.pdt {
            None => errs.push(format!("segment {} has no EXT-X-PROGRAM-DATE-TIME", s.msn)),
            Some(pdt) if i > 0 => {
                let prev = &pl.segments[i - 1];
                if let Some(prev_pdt) = prev.pdt {
                    if pdt <= prev_pdt {
                        errs.push(format!(
                            "PDT of segment {} does not follow segment {}'s",
                            s.msn, prev.msn
                        ));
                    } else if !s.discontinuity
                        && (pdt - prev_pdt - prev.duration).abs() > PDT_STEP_TOLERANCE
                    {
                        errs.push(format!(
                            "PDT of segment {} is {:.3} s after segment {}'s, whose EXTINF is {}",
                            s.msn,
                            pdt - prev_pdt,
                            prev.msn,
                            prev.duration
                        ));
                    }
                }
            }
            Some(_) => {}
        }
    }
    if pl.skipped > 0 {
        let csu = pl.can_skip_until.unwrap_or(f64::INFINITY);
        let remaining: f64 = pl.segments.iter().map(|s| s.duration).sum();
        if remaining + DURATION_TOLERANCE < csu {
            errs.push(format!(
                "EXT-X-SKIP skipped segments within CAN-SKIP-UNTIL {csu} of the end ({remaining:.3} s left)"
            ));
        }
    }
    match (&pl.preload_hint, pl.ended) {
        (None, false) => errs.push("no EXT-X-PRELOAD-HINT (and no EXT-X-ENDLIST)".into()),
        (Some((t, _)), false) if t != "PART" => errs.push(format!("preload hint TYPE={t}")),
        (Some((_, uri)), false) => {
            let expected = match pl.segments.last() {
                Some(s) if s.uri.is_none() => Some((s.msn, s.parts.len() as u64)),
                Some(s) => Some((s.msn + 1, 0)),
                None => None,
            };
            let at = part_position(uri);
            if expected.is_some() && at != expected {
                errs.push(format!(
                    "preload hint {uri} is not the part after the last listed one {expected:?}"
                ));
            }
        }
        _ => {}
    }
    let mut seen = HashSet::new();
    for r in &pl.reports {
        if !seen.insert(r.uri.as_str()) || r.last_msn.is_none() {
            errs.push(format!(
                "rendition report {r:?} repeated or without LAST-MSN"
            ));
        }
    }
    errs
}

/// What a rendition's playlists showed so far (see [`History::observe`]).
#[derive(Debug, Clone, Default)]
pub struct History {
    target_duration: Option<u64>,
    part_target: Option<f64>,
    media_sequence: u64,
    last_msn: Option<u64>,
    /// MSN -> (EXTINF if complete, PDT, discontinuity number).
    segments: HashMap<u64, (Option<f64>, Option<f64>, u64)>,
    hint: Option<(u64, u64)>,
}

impl History {
    /// Check `pl` (already through [`check`]) against what earlier playlists of the same
    /// rendition showed; returns the violations.
    pub fn observe(&mut self, pl: &Playlist) -> Vec<String> {
        let mut errs = Vec::new();
        if let (Some(a), Some(b)) = (self.target_duration, pl.target_duration) {
            if a != b {
                errs.push(format!("TARGETDURATION changed from {a} to {b}"));
            }
        }
        if let (Some(a), Some(b)) = (self.part_target, pl.part_target) {
            if (a - b).abs() > 1e-9 {
                errs.push(format!("PART-TARGET changed from {a} to {b}"));
            }
        }
        self.target_duration = self.target_duration.or(pl.target_duration);
        self.part_target = self.part_target.or(pl.part_target);
        if pl.media_sequence < self.media_sequence {
            errs.push(format!(
                "MEDIA-SEQUENCE went back from {} to {}",
                self.media_sequence, pl.media_sequence
            ));
        }
        self.media_sequence = pl.media_sequence;
        if let (Some(a), Some(b)) = (self.last_msn, pl.last_msn()) {
            if b < a {
                errs.push(format!("last MSN went back from {a} to {b}"));
            }
        }
        self.last_msn = pl.last_msn().or(self.last_msn);
        for s in &pl.segments {
            let complete = s.uri.as_ref().map(|_| s.duration);
            let now = (complete, s.pdt, s.discontinuity_number);
            if let Some(&(d, pdt, dn)) = self.segments.get(&s.msn) {
                {
                    if dn != now.2 {
                        errs.push(format!(
                            "segment {} moved from discontinuity {dn} to {}",
                            s.msn, now.2
                        ));
                    }
                    if pdt.zip(now.1).is_some_and(|(a, b)| (a - b).abs() > 0.0005) {
                        errs.push(format!("segment {} changed its PDT", s.msn));
                    }
                    if d.zip(now.0).is_some_and(|(a, b)| (a - b).abs() > 1e-9) {
                        errs.push(format!("segment {} changed its EXTINF", s.msn));
                    }
                }
            }
            let entry = self.segments.entry(s.msn).or_insert(now);
            entry.0 = entry.0.or(now.0);
        }
        let oldest = pl.media_sequence.saturating_sub(64);
        self.segments.retain(|m, _| *m >= oldest);
        // The hinted part exists once anything later does, unless a discontinuity or the end
        // came first (then it may never exist: its request answers 404).
        if let Some((hm, hi)) = self.hint {
            if let Some(last) = pl.last_part() {
                let listed = pl.segment(hm).is_some_and(|s| s.parts.len() as u64 > hi);
                let parts_listed = pl.segment(hm).is_some_and(|s| !s.parts.is_empty());
                let excused = pl.ended || pl.segments.iter().any(|s| s.msn > hm && s.discontinuity);
                if last > (hm, hi) && parts_listed && !listed && !excused {
                    errs.push(format!(
                        "hinted part {hm}.{hi} was never published (last part now {}.{})",
                        last.0, last.1
                    ));
                }
            }
        }
        self.hint = pl.preload_hint.as_ref().and_then(|(_, u)| part_position(u));
        errs
    }
}

/// Check the latest playlists of a stream's renditions (name, playlist) against each other.
pub fn check_aligned(renditions: &[(&str, &Playlist)], expect: &Expect) -> Vec<String> {
    let mut errs = Vec::new();
    for (i, (na, a)) in renditions.iter().enumerate() {
        for (nb, b) in &renditions[i + 1..] {
            for sa in &a.segments {
                let Some(sb) = b.segment(sa.msn) else {
                    continue;
                };
                // Known race: a timestamp jump that lands right after one rendition opened
                // segment N (with a sliver of pre-jump media) but before another did puts the
                // discontinuity at N in one and N+1 in the other. Tolerated only for a sliver
                // shorter than a part.
                let pt = a.part_target.unwrap_or(0.0);
                let sliver = |x: &Segment, y: &Segment| {
                    x.discontinuity_number + 1 == y.discontinuity_number && x.duration < pt
                };
                if sa.discontinuity_number != sb.discontinuity_number
                    && !sliver(sa, sb)
                    && !sliver(sb, sa)
                {
                    errs.push(format!(
                        "segment {} is in discontinuity {} in {na} but {} in {nb}",
                        sa.msn, sa.discontinuity_number, sb.discontinuity_number
                    ));
                }
                let sliver_pair = sliver(sa, sb) || sliver(sb, sa);
                if let (false, Some(pa), Some(pb)) = (sliver_pair, sa.pdt, sb.pdt) {
                    let slack = expect.align_tolerance + 0.0005;
                    // How far a's PDT may be after b's (lo..hi).
                    let (lo, hi) = match (*na == AUDIO, *nb == AUDIO) {
                        (true, false) => (AUDIO_ALIGN_TOLERANCE.0, AUDIO_ALIGN_TOLERANCE.1),
                        (false, true) => (-AUDIO_ALIGN_TOLERANCE.1, -AUDIO_ALIGN_TOLERANCE.0),
                        _ => (0.0, 0.0),
                    };
                    if pa - pb < lo - slack || pa - pb > hi + slack {
                        errs.push(format!(
                            "segment {} has PDT {pa:.3} in {na} but {pb:.3} in {nb}",
                            sa.msn
                        ));
                    }
                }
            }
            if let (Some(la), Some(lb)) = (a.last_msn(), b.last_msn()) {
                if la.abs_diff(lb) > 1 && !a.ended && !b.ended {
                    errs.push(format!("{na} is at MSN {la} but {nb} at {lb}"));
                }
            }
        }
    }
    errs
}

#[cfg(test)]
#[path = "rules_test.rs"]
mod tests;
