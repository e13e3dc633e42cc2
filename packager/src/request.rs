//! HTTP request interpretation without IO: URL routing and the LL-HLS query rules.
//!
//! Entry points: [`route`] maps a path to a [`Route`]; [`parse_query`] reads `_HLS_msn`,
//! `_HLS_part` and `_HLS_skip`; [`playlist_readiness`] and [`part_readiness`] decide whether a
//! request can be answered now, must wait (blocking playlist reload / preload hint), or is
//! invalid, following draft-pantos-hls-rfc8216bis section 6.2.5.2:
//! - `_HLS_part` without `_HLS_msn` is a 400;
//! - an `_HLS_msn` more than two past the last segment's MSN is a 400;
//! - `_HLS_msn=M` waits for segment M to be complete; with `_HLS_part=P` it waits for part P of
//!   segment M or any later part (a P past the end of M is satisfied by M+1's first part);
//! - nothing blocks once the playlist has EXT-X-ENDLIST.
//!
//! Caveat: numbers with leading zeros or signs are rejected, so each resource has one URL
//! (no cache aliasing).

/// A request target under `/live/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `/live/{pid}/index.m3u8`
    Multivariant {
        /// Playback ID.
        pid: &'a str,
    },
    /// `/live/{pid}/{rendition}/index.m3u8`
    Media {
        /// Playback ID.
        pid: &'a str,
        /// Rendition name.
        rendition: &'a str,
    },
    /// `/live/{pid}/{rendition}/init.mp4` (id 0) or `init{N}.mp4`
    Init {
        /// Playback ID.
        pid: &'a str,
        /// Rendition name.
        rendition: &'a str,
        /// Init version.
        id: u32,
    },
    /// `/live/{pid}/{rendition}/seg{msn}.m4s`
    Segment {
        /// Playback ID.
        pid: &'a str,
        /// Rendition name.
        rendition: &'a str,
        /// Media sequence number.
        msn: u64,
    },
    /// `/live/{pid}/{rendition}/part{msn}.{idx}.m4s`
    Part {
        /// Playback ID.
        pid: &'a str,
        /// Rendition name.
        rendition: &'a str,
        /// Media sequence number.
        msn: u64,
        /// Part index within the segment.
        part: u32,
    },
}

impl Route<'_> {
    /// The playback ID.
    pub fn pid(&self) -> &str {
        match self {
            Route::Multivariant { pid }
            | Route::Media { pid, .. }
            | Route::Init { pid, .. }
            | Route::Segment { pid, .. }
            | Route::Part { pid, .. } => pid,
        }
    }

    /// Metric label for the request kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Route::Multivariant { .. } | Route::Media { .. } => "playlist",
            Route::Init { .. } => "init",
            Route::Segment { .. } => "segment",
            Route::Part { .. } => "part",
        }
    }
}

/// A decimal number without sign or leading zeros.
fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical {
        s.parse().ok()
    } else {
        None
    }
}

/// A path component usable as a name.
fn name(s: &str) -> Option<&str> {
    let ok = !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    ok.then_some(s)
}

/// Map a request path to a route; `None` is a 404.
pub(crate) fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/live/")?;
    let mut it = rest.split('/');
    let pid = name(it.next()?)?;
    let second = it.next()?;
    let Some(file) = it.next() else {
        return (second == "index.m3u8").then_some(Route::Multivariant { pid });
    };
    if it.next().is_some() {
        return None;
    }
    let rendition = name(second)?;
    if file == "index.m3u8" {
        return Some(Route::Media { pid, rendition });
    }
    if file == "init.mp4" {
        return Some(Route::Init {
            pid,
            rendition,
            id: 0,
        });
    }
    if let Some(n) = file
        .strip_prefix("init")
        .and_then(|f| f.strip_suffix(".mp4"))
    {
        let id = number::<u32>(n).filter(|id| *id > 0)?;
        return Some(Route::Init { pid, rendition, id });
    }
    if let Some(n) = file
        .strip_prefix("seg")
        .and_then(|f| f.strip_suffix(".m4s"))
    {
        let msn = number(n)?;
        return Some(Route::Segment {
            pid,
            rendition,
            msn,
        });
    }
    if let Some(n) = file
        .strip_prefix("part")
        .and_then(|f| f.strip_suffix(".m4s"))
    {
        let (m, p) = n.split_once('.')?;
        return Some(Route::Part {
            pid,
            rendition,
            msn: number(m)?,
            part: number(p)?,
        });
    }
    None
}

/// The LL-HLS delivery directives of a playlist request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct HlsQuery {
    /// `_HLS_msn`
    pub msn: Option<u64>,
    /// `_HLS_part`
    pub part: Option<u32>,
    /// `_HLS_skip=YES` or `v2`
    pub skip: bool,
}

/// Parse the query string; `Err` is a 400 with the reason.
pub(crate) fn parse_query(query: Option<&str>) -> Result<HlsQuery, String> {
    let mut q = HlsQuery::default();
    let mut seen = (false, false, false);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "_HLS_msn" => {
                if std::mem::replace(&mut seen.0, true) {
                    return Err("_HLS_msn given twice".into());
                }
                q.msn = Some(number(v).ok_or_else(|| format!("invalid _HLS_msn {v:?}"))?);
            }
            "_HLS_part" => {
                if std::mem::replace(&mut seen.1, true) {
                    return Err("_HLS_part given twice".into());
                }
                q.part = Some(number(v).ok_or_else(|| format!("invalid _HLS_part {v:?}"))?);
            }
            "_HLS_skip" => {
                if std::mem::replace(&mut seen.2, true) {
                    return Err("_HLS_skip given twice".into());
                }
                q.skip = match v {
                    // v2 also asks to skip date ranges; there are none, so it is the same.
                    "YES" | "v2" => true,
                    _ => return Err(format!("invalid _HLS_skip {v:?}")),
                };
            }
            // Other parameters (cache busters, tokens) are ignored.
            _ => {}
        }
    }
    if q.part.is_some() && q.msn.is_none() {
        return Err("_HLS_part requires _HLS_msn".into());
    }
    Ok(q)
}

/// Where a rendition stands, as far as request blocking cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    /// (msn, index) of the last published part.
    pub last_part: Option<(u64, u32)>,
    /// MSN of the last complete segment.
    pub last_complete: Option<u64>,
    /// MSN the next segment will get (when no part exists yet).
    pub next_msn: u64,
    /// EXT-X-ENDLIST.
    pub ended: bool,
}

/// What to do with a request now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Answer now.
    Ready,
    /// Hold the request until something changes (or the timeout).
    Wait,
    /// 400 with this reason.
    BadRequest(String),
    /// 404.
    NotFound,
}

/// Blocking playlist reload: can a playlist request with `q` be answered at `pos`?
pub(crate) fn playlist_readiness(q: &HlsQuery, pos: &Position) -> Readiness {
    let Some(msn) = q.msn else {
        return Readiness::Ready;
    };
    let last = pos.last_part.map_or(pos.next_msn, |(m, _)| m);
    if msn > last.saturating_add(2) {
        return Readiness::BadRequest(format!(
            "_HLS_msn {msn} is more than two past the last media sequence number {last}"
        ));
    }
    if pos.ended {
        return Readiness::Ready;
    }
    let met = match q.part {
        Some(part) => pos.last_part.is_some_and(|lp| lp >= (msn, part)),
        None => pos.last_complete.is_some_and(|lc| lc >= msn),
    };
    if met {
        Readiness::Ready
    } else {
        Readiness::Wait
    }
}

/// A part request: available, the hinted next part (wait), or unknown.
pub(crate) fn part_readiness(
    requested: (u64, u32),
    exists: bool,
    next: Option<(u64, u32)>,
) -> Readiness {
    if exists {
        Readiness::Ready
    } else if next == Some(requested) {
        Readiness::Wait
    } else {
        Readiness::NotFound
    }
}

#[cfg(test)]
#[path = "request_test.rs"]
mod tests;
