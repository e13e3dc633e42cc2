//! HLS playlist parsing and the LL-HLS conformance checker ([`check_ll_hls`]), following
//! draft-pantos-hls-rfc8216bis (the Low-Latency HLS parts) plus a few rules of our own.

use std::collections::HashSet;

/// Slack for comparing decimal durations printed by the server (a 30 fps part of 10 frames is
/// 0.33333 s against a PART-TARGET of 0.333).
pub const DURATION_TOLERANCE: f64 = 0.001;

/// Our own rule: a part that is not the last of its segment lasts at least this fraction of
/// PART-TARGET (only the part before a keyframe/segment boundary may be short).
pub const MIN_PART_FRACTION: f64 = 0.85;

/// Allowed gap between a segment's EXTINF and the sum of its parts' durations (decimal
/// rounding of each printed duration, plus one audio frame).
pub const PART_SUM_TOLERANCE: f64 = 0.025;

/// Which kind of media a playlist carries (only video parts must start with a keyframe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Video,
    Audio,
}

/// An attribute list (`KEY=VALUE,KEY="quoted, value"`), quotes removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attrs(pub Vec<(String, String)>);

impl Attrs {
    pub fn parse(s: &str) -> Result<Attrs, String> {
        let mut out = Vec::new();
        let mut rest = s.trim();
        while !rest.is_empty() {
            let eq = rest
                .find('=')
                .ok_or_else(|| format!("attribute without '=' in {s:?}"))?;
            let key = rest[..eq].trim().to_string();
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(format!("bad attribute name {key:?} in {s:?}"));
            }
            rest = &rest[eq + 1..];
            let value;
            if let Some(q) = rest.strip_prefix('"') {
                let end = q
                    .find('"')
                    .ok_or_else(|| format!("unterminated quoted string in {s:?}"))?;
                value = q[..end].to_string();
                rest = &q[end + 1..];
            } else {
                let end = rest.find(',').unwrap_or(rest.len());
                value = rest[..end].trim().to_string();
                rest = &rest[end..];
            }
            out.push((key, value));
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r.trim_start();
            } else if !rest.is_empty() {
                return Err(format!("expected ',' after attribute in {s:?}"));
            }
        }
        Ok(Attrs(out))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn float(&self, key: &str) -> Result<Option<f64>, String> {
        self.get(key)
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| format!("{key}={v:?} is not a decimal number"))
            })
            .transpose()
    }

    pub fn int(&self, key: &str) -> Result<Option<u64>, String> {
        self.get(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("{key}={v:?} is not a decimal integer"))
            })
            .transpose()
    }
}

/// An EXT-X-PART.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub uri: String,
    pub duration: f64,
    pub independent: bool,
    pub gap: bool,
    pub byterange: Option<String>,
}

/// A complete media segment (EXTINF + URI) with the parts listed before it.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub uri: String,
    pub duration: f64,
    pub msn: u64,
    pub parts: Vec<Part>,
    /// Preceded by EXT-X-DISCONTINUITY.
    pub discontinuity: bool,
    pub program_date_time: Option<String>,
    /// EXT-X-GAP: a number without media (its URI is not to be fetched).
    pub gap: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PreloadHint {
    pub hint_type: String,
    pub uri: String,
    pub byterange_start: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RenditionReport {
    pub uri: String,
    pub last_msn: Option<u64>,
    pub last_part: Option<u64>,
}

/// A parsed media playlist. Parsing only enforces syntax; [`check_ll_hls`] enforces the rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaPlaylist {
    pub starts_with_extm3u: bool,
    pub version: Option<u64>,
    pub target_duration: Option<u64>,
    /// EXT-X-MEDIA-SEQUENCE as written (`None` if absent; the first MSN is then 0).
    pub media_sequence_tag: Option<u64>,
    pub discontinuity_sequence: Option<u64>,
    pub part_target: Option<f64>,
    pub can_block_reload: bool,
    pub part_hold_back: Option<f64>,
    pub hold_back: Option<f64>,
    pub can_skip_until: Option<f64>,
    pub server_control_present: bool,
    pub map_uri: Option<String>,
    pub playlist_type: Option<String>,
    /// EXT-X-SKIP SKIPPED-SEGMENTS (delta update).
    pub skipped_segments: u64,
    pub segments: Vec<Segment>,
    /// Parts of the segment still being produced (after the last EXTINF/URI).
    pub trailing_parts: Vec<Part>,
    /// An EXT-X-DISCONTINUITY after the last segment (applies to the trailing parts).
    pub trailing_discontinuity: bool,
    pub preload_hint: Option<PreloadHint>,
    pub rendition_reports: Vec<RenditionReport>,
    pub endlist: bool,
    /// Tags not interpreted above, as written (without `#`).
    pub other_tags: Vec<String>,
}

impl MediaPlaylist {
    /// EXT-X-MEDIA-SEQUENCE (0 if absent).
    pub fn media_sequence(&self) -> u64 {
        self.media_sequence_tag.unwrap_or(0)
    }

    /// MSN of the first listed segment (after any skipped ones).
    pub fn first_msn(&self) -> u64 {
        self.media_sequence() + self.skipped_segments
    }

    /// MSN of the segment the trailing parts belong to (one past the last complete segment).
    pub fn next_msn(&self) -> u64 {
        self.first_msn() + self.segments.len() as u64
    }

    /// MSN of the last complete segment.
    pub fn last_msn(&self) -> Option<u64> {
        self.segments.last().map(|s| s.msn)
    }

    /// MSNs of segments (and of the trailing segment) preceded by EXT-X-DISCONTINUITY.
    pub fn discontinuities(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .segments
            .iter()
            .filter(|s| s.discontinuity)
            .map(|s| s.msn)
            .collect();
        if self.trailing_discontinuity {
            v.push(self.next_msn());
        }
        v
    }

    /// Every listed part as (msn, index within its segment, part), oldest first.
    pub fn all_parts(&self) -> Vec<(u64, usize, &Part)> {
        let mut v = Vec::new();
        for s in &self.segments {
            v.extend(s.parts.iter().enumerate().map(|(i, p)| (s.msn, i, p)));
        }
        let next = self.next_msn();
        v.extend(
            self.trailing_parts
                .iter()
                .enumerate()
                .map(|(i, p)| (next, i, p)),
        );
        v
    }

    /// The newest published part as (msn, index).
    pub fn last_part(&self) -> Option<(u64, usize)> {
        self.all_parts().last().map(|(m, i, _)| (*m, *i))
    }

    /// The `(_HLS_msn, _HLS_part)` of the part that comes next (what a blocking reload waits for).
    pub fn next_part_position(&self) -> (u64, usize) {
        (self.next_msn(), self.trailing_parts.len())
    }

    /// Sum of the complete segments' durations.
    pub fn total_duration(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum()
    }
}

fn split_tag(line: &str) -> (&str, &str) {
    match line.split_once(':') {
        Some((t, v)) => (t, v),
        None => (line, ""),
    }
}

fn parse_part(v: &str) -> Result<Part, String> {
    let a = Attrs::parse(v)?;
    Ok(Part {
        uri: a.get("URI").ok_or("EXT-X-PART without URI")?.to_string(),
        duration: a.float("DURATION")?.ok_or("EXT-X-PART without DURATION")?,
        independent: a.get("INDEPENDENT") == Some("YES"),
        gap: a.get("GAP") == Some("YES"),
        byterange: a.get("BYTERANGE").map(String::from),
    })
}

/// Parses a media playlist. Fails only on syntax it cannot read (bad attribute lists, numbers,
/// a URI without EXTINF, EXTINF without URI); missing tags are left to [`check_ll_hls`].
pub fn parse_media_playlist(text: &str) -> Result<MediaPlaylist, String> {
    let mut pl = MediaPlaylist::default();
    let mut pending_parts: Vec<Part> = Vec::new();
    let mut pending_extinf: Option<f64> = None;
    let mut pending_disc = false;
    let mut pending_gap = false;
    let mut pending_pdt: Option<String> = None;
    let mut first = true;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let ln = i + 1;
        let err = |e: String| format!("line {ln} {line:?}: {e}");
        if first {
            pl.starts_with_extm3u = line == "#EXTM3U";
            first = false;
            if pl.starts_with_extm3u {
                continue;
            }
        }
        if !line.starts_with('#') {
            let d = pending_extinf
                .take()
                .ok_or_else(|| err("URI line without a preceding EXTINF".into()))?;
            pl.segments.push(Segment {
                uri: line.to_string(),
                duration: d,
                msn: 0, // numbered below, once MEDIA-SEQUENCE / SKIP are known
                parts: std::mem::take(&mut pending_parts),
                discontinuity: std::mem::take(&mut pending_disc),
                program_date_time: pending_pdt.take(),
                gap: std::mem::take(&mut pending_gap),
            });
            continue;
        }
        if !line.starts_with("#EXT") {
            continue; // comment
        }
        let (tag, v) = split_tag(&line[1..]);
        let int = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| err(format!("{v:?} is not a decimal integer")))
        };
        match tag {
            "EXTM3U" => return Err(err("EXTM3U not on the first line".into())),
            "EXT-X-VERSION" => pl.version = Some(int(v)?),
            "EXT-X-TARGETDURATION" => pl.target_duration = Some(int(v)?),
            "EXT-X-MEDIA-SEQUENCE" => pl.media_sequence_tag = Some(int(v)?),
            "EXT-X-DISCONTINUITY-SEQUENCE" => pl.discontinuity_sequence = Some(int(v)?),
            "EXT-X-PLAYLIST-TYPE" => pl.playlist_type = Some(v.to_string()),
            "EXT-X-ENDLIST" => pl.endlist = true,
            "EXT-X-DISCONTINUITY" => pending_disc = true,
            "EXT-X-GAP" => pending_gap = true,
            "EXT-X-PROGRAM-DATE-TIME" => pending_pdt = Some(v.to_string()),
            "EXTINF" => {
                let d = v.split(',').next().unwrap_or_default().trim();
                let d = d
                    .parse::<f64>()
                    .map_err(|_| err(format!("EXTINF duration {d:?} is not a number")))?;
                if pending_extinf.replace(d).is_some() {
                    return Err(err("two EXTINF without a URI between them".into()));
                }
            }
            "EXT-X-PART-INF" => {
                let a = Attrs::parse(v).map_err(err)?;
                pl.part_target = Some(
                    a.float("PART-TARGET")
                        .map_err(err)?
                        .ok_or_else(|| err("no PART-TARGET".into()))?,
                );
            }
            "EXT-X-SERVER-CONTROL" => {
                let a = Attrs::parse(v).map_err(err)?;
                pl.server_control_present = true;
                pl.can_block_reload = a.get("CAN-BLOCK-RELOAD") == Some("YES");
                pl.part_hold_back = a.float("PART-HOLD-BACK").map_err(err)?;
                pl.hold_back = a.float("HOLD-BACK").map_err(err)?;
                pl.can_skip_until = a.float("CAN-SKIP-UNTIL").map_err(err)?;
            }
            "EXT-X-MAP" => {
                let a = Attrs::parse(v).map_err(err)?;
                pl.map_uri = Some(
                    a.get("URI")
                        .ok_or_else(|| err("EXT-X-MAP without URI".into()))?
                        .to_string(),
                );
            }
            "EXT-X-PART" => pending_parts.push(parse_part(v).map_err(err)?),
            "EXT-X-PRELOAD-HINT" => {
                let a = Attrs::parse(v).map_err(err)?;
                pl.preload_hint = Some(PreloadHint {
                    hint_type: a
                        .get("TYPE")
                        .ok_or_else(|| err("no TYPE".into()))?
                        .to_string(),
                    uri: a
                        .get("URI")
                        .ok_or_else(|| err("no URI".into()))?
                        .to_string(),
                    byterange_start: a.int("BYTERANGE-START").map_err(err)?,
                });
            }
            "EXT-X-RENDITION-REPORT" => {
                let a = Attrs::parse(v).map_err(err)?;
                pl.rendition_reports.push(RenditionReport {
                    uri: a
                        .get("URI")
                        .ok_or_else(|| err("no URI".into()))?
                        .to_string(),
                    last_msn: a.int("LAST-MSN").map_err(err)?,
                    last_part: a.int("LAST-PART").map_err(err)?,
                });
            }
            "EXT-X-SKIP" => {
                let a = Attrs::parse(v).map_err(err)?;
                pl.skipped_segments = a
                    .int("SKIPPED-SEGMENTS")
                    .map_err(err)?
                    .ok_or_else(|| err("no SKIPPED-SEGMENTS".into()))?;
            }
            _ => pl.other_tags.push(line[1..].to_string()),
        }
    }
    if pending_extinf.is_some() {
        return Err("EXTINF at the end without a URI".into());
    }
    pl.trailing_parts = pending_parts;
    pl.trailing_discontinuity = pending_disc;
    let first_msn = pl.first_msn();
    for (i, s) in pl.segments.iter_mut().enumerate() {
        s.msn = first_msn + i as u64;
    }
    Ok(pl)
}

/// Parses `text` and checks it against `packager::rules::check` (see that module for its
/// rules) and the LL-HLS rules below; on failure returns every violation found (or the parse
/// error).
///
/// - `#EXTM3U` first; EXT-X-VERSION present (>= 6, needed for EXT-X-MAP in a media playlist);
///   EXT-X-MEDIA-SEQUENCE present; EXT-X-MAP present.
/// - EXT-X-TARGETDURATION present and >= every EXTINF rounded to the nearest integer.
/// - EXT-X-PART-INF present; every EXT-X-PART DURATION <= PART-TARGET (+[`DURATION_TOLERANCE`]).
/// - Our rule: every part but the last of its segment lasts >= [`MIN_PART_FRACTION`] x
///   PART-TARGET (the newest trailing part is exempt: it may turn out to be its segment's last).
/// - A segment's parts add up to its EXTINF (+-[`PART_SUM_TOLERANCE`]).
/// - EXT-X-SERVER-CONTROL with CAN-BLOCK-RELOAD=YES and PART-HOLD-BACK >= 2 x PART-TARGET
///   (RFC 8216bis's MUST; `hls.part_hold_back_parts` is 2 or more);
///   HOLD-BACK, if present, >= 3 x TARGETDURATION; CAN-SKIP-UNTIL, if present,
///   >= 6 x TARGETDURATION.
/// - EXT-X-PRELOAD-HINT TYPE=PART present unless EXT-X-ENDLIST, naming no listed part.
/// - Video: the first part of every segment (and of the trailing one) has INDEPENDENT=YES.
/// - Part URIs are unique; no rendition is reported twice.
pub fn check_ll_hls(text: &str, track: Track) -> Result<MediaPlaylist, Vec<String>> {
    let pl = parse_media_playlist(text).map_err(|e| vec![format!("unparseable playlist: {e}")])?;
    // The packager's own rules checker (the one its unit and property tests use) first.
    let expect = packager::rules::Expect {
        keyframe_segments: track == Track::Video,
        ..packager::rules::Expect::default()
    };
    let mut errs = packager::rules::check(text, &expect)
        .err()
        .unwrap_or_default();
    if !pl.starts_with_extm3u {
        errs.push("first line is not #EXTM3U".to_string());
    }
    match pl.version {
        None => errs.push("no EXT-X-VERSION".into()),
        Some(v) if v < 6 => errs.push(format!(
            "EXT-X-VERSION {v} < 6 (EXT-X-MAP in a media playlist needs 6)"
        )),
        _ => {}
    }
    if pl.media_sequence_tag.is_none() {
        errs.push("no EXT-X-MEDIA-SEQUENCE".into());
    }
    if pl.map_uri.is_none() {
        errs.push("no EXT-X-MAP".into());
    }
    match pl.target_duration {
        None => errs.push("no EXT-X-TARGETDURATION".into()),
        Some(td) => {
            for s in &pl.segments {
                if s.duration.round() as u64 > td {
                    errs.push(format!(
                        "segment {} EXTINF {} rounds to more than EXT-X-TARGETDURATION {td}",
                        s.msn, s.duration
                    ));
                }
            }
        }
    }
    for s in &pl.segments {
        if s.duration.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            errs.push(format!("segment {} has EXTINF {} <= 0", s.msn, s.duration));
        }
        if !s.parts.is_empty() {
            let sum: f64 = s.parts.iter().map(|p| p.duration).sum();
            if (sum - s.duration).abs() > PART_SUM_TOLERANCE {
                errs.push(format!(
                    "segment {} EXTINF {} but its parts add up to {sum:.5}",
                    s.msn, s.duration
                ));
            }
        }
    }
    match pl.part_target {
        None => errs.push("no EXT-X-PART-INF".into()),
        Some(pt) => {
            for (msn, i, p) in pl.all_parts() {
                if p.duration > pt + DURATION_TOLERANCE {
                    errs.push(format!(
                        "part {msn}.{i} ({}) DURATION {} > PART-TARGET {pt}",
                        p.uri, p.duration
                    ));
                }
            }
            let min = MIN_PART_FRACTION * pt;
            let short = |msn: u64, parts: &[Part], errs: &mut Vec<String>| {
                for (i, p) in parts.iter().enumerate().take(parts.len().saturating_sub(1)) {
                    if p.duration + DURATION_TOLERANCE < min {
                        errs.push(format!(
                            "part {msn}.{i} ({}) DURATION {} < {MIN_PART_FRACTION} x PART-TARGET {pt} but is not the last part of its segment",
                            p.uri, p.duration
                        ));
                    }
                }
            };
            for s in &pl.segments {
                short(s.msn, &s.parts, &mut errs);
            }
            short(pl.next_msn(), &pl.trailing_parts, &mut errs);
            match pl.part_hold_back {
                None => errs.push("EXT-X-SERVER-CONTROL has no PART-HOLD-BACK".into()),
                Some(phb) if phb + DURATION_TOLERANCE < 2.0 * pt => {
                    errs.push(format!("PART-HOLD-BACK {phb} < 2 x PART-TARGET {pt}"))
                }
                _ => {}
            }
        }
    }
    if !pl.server_control_present {
        errs.push("no EXT-X-SERVER-CONTROL".into());
    } else if !pl.can_block_reload {
        errs.push("EXT-X-SERVER-CONTROL lacks CAN-BLOCK-RELOAD=YES".into());
    }
    if let Some(td) = pl.target_duration {
        if let Some(hb) = pl.hold_back {
            if hb + DURATION_TOLERANCE < 3.0 * td as f64 {
                errs.push(format!("HOLD-BACK {hb} < 3 x TARGETDURATION {td}"));
            }
        }
        if let Some(csu) = pl.can_skip_until {
            if csu + DURATION_TOLERANCE < 6.0 * td as f64 {
                errs.push(format!("CAN-SKIP-UNTIL {csu} < 6 x TARGETDURATION {td}"));
            }
        }
    }
    let part_uris: Vec<&str> = pl
        .all_parts()
        .iter()
        .map(|(_, _, p)| p.uri.as_str())
        .collect();
    let mut seen = HashSet::new();
    for u in &part_uris {
        if !seen.insert(*u) {
            errs.push(format!("part URI {u} listed twice"));
        }
    }
    match &pl.preload_hint {
        None if !pl.endlist => errs.push("no EXT-X-PRELOAD-HINT (and no EXT-X-ENDLIST)".into()),
        Some(h) if h.hint_type != "PART" && !pl.endlist => errs.push(format!(
            "EXT-X-PRELOAD-HINT TYPE={} (expected PART)",
            h.hint_type
        )),
        Some(h) if part_uris.contains(&h.uri.as_str()) => errs.push(format!(
            "EXT-X-PRELOAD-HINT names {} which is already a listed part",
            h.uri
        )),
        _ => {}
    }
    if track == Track::Video {
        for s in &pl.segments {
            if let Some(p) = s.parts.first() {
                if !p.independent {
                    errs.push(format!(
                        "first part of segment {} ({}) lacks INDEPENDENT=YES",
                        s.msn, p.uri
                    ));
                }
            }
        }
        // The trailing parts start a new segment only if the previous one is complete (always,
        // by construction): its first part must be independent too.
        if let Some(p) = pl.trailing_parts.first() {
            if !p.independent {
                errs.push(format!(
                    "first part of segment {} ({}) lacks INDEPENDENT=YES",
                    pl.next_msn(),
                    p.uri
                ));
            }
        }
    }
    let mut seen = HashSet::new();
    for r in &pl.rendition_reports {
        if !seen.insert(r.uri.as_str()) {
            errs.push(format!("EXT-X-RENDITION-REPORT for {} listed twice", r.uri));
        }
    }
    if errs.is_empty() {
        Ok(pl)
    } else {
        Err(errs)
    }
}

/// An EXT-X-STREAM-INF variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub bandwidth: u64,
    pub average_bandwidth: Option<u64>,
    pub codecs: Option<String>,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
    /// AUDIO group id.
    pub audio: Option<String>,
    pub uri: String,
}

/// An EXT-X-MEDIA rendition.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRendition {
    pub media_type: String,
    pub group_id: String,
    pub name: String,
    pub uri: Option<String>,
    pub default: bool,
    pub autoselect: bool,
}

/// A parsed multivariant playlist.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Multivariant {
    pub version: Option<u64>,
    pub independent_segments: bool,
    pub variants: Vec<Variant>,
    pub media: Vec<MediaRendition>,
}

impl Multivariant {
    /// URI of the first EXT-X-MEDIA TYPE=AUDIO rendition that has one.
    pub fn audio_uri(&self) -> Option<&str> {
        self.media
            .iter()
            .find(|m| m.media_type == "AUDIO")
            .and_then(|m| m.uri.as_deref())
    }

    /// The variant whose URI contains `needle` (e.g. "360p/").
    pub fn variant(&self, needle: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.uri.contains(needle))
    }
}

/// Parses a multivariant playlist: EXTM3U first, every EXT-X-STREAM-INF has BANDWIDTH and is
/// followed by a URI line.
pub fn parse_multivariant(text: &str) -> Result<Multivariant, String> {
    let mut mv = Multivariant::default();
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate();
    match lines.next() {
        Some((_, "#EXTM3U")) => {}
        other => return Err(format!("first line is not #EXTM3U: {other:?}")),
    }
    while let Some((i, line)) = lines.next() {
        let err = |e: String| format!("line {} {line:?}: {e}", i + 1);
        if !line.starts_with("#EXT") {
            if line.starts_with('#') {
                continue;
            }
            return Err(err("URI line without EXT-X-STREAM-INF".into()));
        }
        let (tag, v) = split_tag(&line[1..]);
        match tag {
            "EXT-X-VERSION" => mv.version = Some(v.parse().map_err(|_| err("bad version".into()))?),
            "EXT-X-INDEPENDENT-SEGMENTS" => mv.independent_segments = true,
            "EXT-X-MEDIA" => {
                let a = Attrs::parse(v).map_err(err)?;
                mv.media.push(MediaRendition {
                    media_type: a
                        .get("TYPE")
                        .ok_or_else(|| err("no TYPE".into()))?
                        .to_string(),
                    group_id: a
                        .get("GROUP-ID")
                        .ok_or_else(|| err("no GROUP-ID".into()))?
                        .to_string(),
                    name: a
                        .get("NAME")
                        .ok_or_else(|| err("no NAME".into()))?
                        .to_string(),
                    uri: a.get("URI").map(String::from),
                    default: a.get("DEFAULT") == Some("YES"),
                    autoselect: a.get("AUTOSELECT") == Some("YES"),
                });
            }
            "EXT-X-STREAM-INF" => {
                let a = Attrs::parse(v).map_err(err)?;
                let resolution = match a.get("RESOLUTION") {
                    None => None,
                    Some(r) => {
                        let (w, h) = r
                            .split_once('x')
                            .ok_or_else(|| err(format!("bad RESOLUTION {r:?}")))?;
                        Some((
                            w.parse()
                                .map_err(|_| err(format!("bad RESOLUTION {r:?}")))?,
                            h.parse()
                                .map_err(|_| err(format!("bad RESOLUTION {r:?}")))?,
                        ))
                    }
                };
                let uri = match lines.next() {
                    Some((_, u)) if !u.starts_with('#') => u.to_string(),
                    other => {
                        return Err(err(format!(
                            "EXT-X-STREAM-INF not followed by a URI but {other:?}"
                        )))
                    }
                };
                mv.variants.push(Variant {
                    bandwidth: a
                        .int("BANDWIDTH")
                        .map_err(err)?
                        .ok_or_else(|| err("no BANDWIDTH".into()))?,
                    average_bandwidth: a.int("AVERAGE-BANDWIDTH").map_err(err)?,
                    codecs: a.get("CODECS").map(String::from),
                    resolution,
                    frame_rate: a.float("FRAME-RATE").map_err(err)?,
                    audio: a.get("AUDIO").map(String::from),
                    uri,
                });
            }
            _ => {}
        }
    }
    Ok(mv)
}

/// `url` with the blocking-reload query `_HLS_msn=MSN&_HLS_part=PART` appended.
pub fn blocking_reload_url(url: &str, msn: u64, part: usize) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}_HLS_msn={msn}&_HLS_part={part}")
}

/// Resolves a (relative) URI against the URL of the playlist that contains it.
pub fn resolve_url(base: &str, reference: &str) -> String {
    if reference.contains("://") {
        return reference.to_string();
    }
    let base = base.split(['?', '#']).next().unwrap_or(base);
    if reference.starts_with('/') {
        let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
        let host_end = base[scheme_end..]
            .find('/')
            .map(|i| i + scheme_end)
            .unwrap_or(base.len());
        return format!("{}{reference}", &base[..host_end]);
    }
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = if base[scheme_end..].contains('/') {
        base.to_string()
    } else {
        format!("{base}/")
    };
    let dir_end = base.rfind('/').map(|i| i + 1).unwrap_or(base.len());
    let mut out: Vec<&str> = base[..dir_end].trim_end_matches('/').split('/').collect();
    let (path, query) = match reference.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (reference, None),
    };
    for seg in path.split('/') {
        match seg {
            "." => {}
            ".." => {
                if out.len() > 3 {
                    out.pop();
                }
            }
            s => out.push(s),
        }
    }
    let mut s = out.join("/");
    if let Some(q) = query {
        s.push('?');
        s.push_str(q);
    }
    s
}
