//! Where parts and segments end: a pure state machine, one per rendition.
//!
//! Entry point: [`Cutter::push`], called once per sample whose duration is known (the caller
//! buffers one sample, so it also passes a [`Lookahead`] of the sample after it). It answers
//! with a [`Placement`]: whether the sample starts a new segment, a new part or continues the
//! open part, and whether the part (or segment) containing it can be closed right away.
//!
//! Rules (all in ticks of the track timescale):
//! - A part never exceeds `part_target`: a sample that would overflow the open part starts a
//!   new one. The part is closed as soon as the *next* sample, assumed as long as this one,
//!   would not fit; so a part that is not the last of its segment is longer than
//!   `part_target - sample_duration`, i.e. at least 85 % of the target whenever a sample lasts
//!   at most 15 % of it (30 fps video and AAC frames at 48/44.1 kHz with a 333 ms target do).
//!   A sample that carries a hole (frames lost after it) is not taken as the next one's
//!   length: the next is assumed as long as the sample before. Parts end early only at a
//!   segment boundary (or a timestamp gap).
//! - A segment starts only at a keyframe: the first keyframe whose PTS is at least
//!   `segment_target - tolerance` after the segment's anchor, or an earlier one (at least a
//!   quarter of the target in) when the next keyframe, expected one GOP later (the longest of
//!   the last [`GOP_HISTORY`] keyframe intervals, so one scene-cut keyframe does not shrink the
//!   estimate), would make the segment longer than `max_segment`: a 1.5 s GOP with a 2 s target
//!   makes 1.5 s segments rather than 3 s ones that the fixed target duration cannot hold. In [`SegmentMode::Keyframe`]
//!   (video) the anchor is the PTS of the keyframe that started the segment, so renditions
//!   whose keyframes have the same PTS and that start on the same keyframe get identical
//!   boundaries (same media sequence number ⇔ same time range). In [`SegmentMode::Grid`]
//!   (audio, where every frame is a sync sample) the anchor advances by whole targets, so
//!   segments average exactly `segment_target` and do not drift.
//! - In [`SegmentMode::Follow`] (audio next to video) the segment boundaries are those of the
//!   stream's video, handed in with [`Cutter::set_boundary`] as the PTS (in this track's ticks)
//!   where the next segment starts: a segment starts at the first sample at or after it, so
//!   every rendition's segment N covers the same media time. Until the first boundary is known
//!   samples are dropped (the audio waits for the video's first keyframe), for at most
//!   `follow_wait`; then the track starts on its own. Its parts end where the video's do
//!   ([`Cutter::set_part_boundaries`]): a part starts at the first sample at or after the next
//!   of the video's part starts (within the tolerance), so part N.k of every rendition covers
//!   the same media time, to within an audio frame. AAC frames (21.3 ms at 48 kHz) never line
//!   up with 200 ms parts, so such a part is nine or ten frames and the caller's `part_target`
//!   for the audio is ten frames; cut by duration only, audio parts were the nine frames that
//!   fit under the video's target and ended up to 80 ms before the video's of the same index
//!   by a segment's end, and a player that fetches both tracks' parts in step (Shaka Player)
//!   ran out of audio there. Until the video's next part start is known, parts are cut by
//!   duration as in the other modes.
//! - Segments are cut at a non-keyframe only when they would exceed `max_segment` (the
//!   longest segment the fixed EXT-X-TARGETDURATION allows). The test is made on PTS and the
//!   previous sample's duration, so the decision taken when the part before is closed (with
//!   the lookahead) and the one taken when the sample itself arrives are the same.
//! - A segment start decided only when the sample arrives (a Follow boundary learned after the
//!   part before was closed) would contradict the preload hint already published (part N.k);
//!   where every sample is a sync sample the sample then fills part N.k alone and ends the
//!   segment instead, so the hint holds; video starts its segment anyway (a keyframe must lead).
//! - In Follow mode the caller may push a sample before it knows whether a boundary lies at
//!   the next one (the lookahead is not `settled`: the video has got past this sample but not
//!   yet past the next). With no boundary set, the cutter then closes a full part without
//!   deciding whether its segment ends ([`End::PartUndecided`]: the caller serves it but lists
//!   it only after the next push), and the next push decides: a sample at or past the boundary
//!   starts the next segment. So a part is closed as soon as its last sample is known to
//!   belong to it, one audio frame sooner than the lookahead alone allows.
//! - Cuts the caller orders ([`Cutter::cut_at`]): the first sample at or after such a PTS
//!   starts a segment, keyframe or not, and from the first order on only ordered cuts (and
//!   `max_segment`) start segments, keyframes no longer do. The ingest orders them for every
//!   video rendition of a stream whose source keyframes are too far apart, on a grid of segment
//!   targets where it also forces the transcoded renditions' keyframes (and no others), so that
//!   every rendition's segment N still covers the same media: the source's own keyframes, which
//!   the transcoded renditions do not have, must not start a segment in the source's.
//!
//! Caveats: if a single sample is longer than `part_target`, its part is too (a part holds at
//! least one sample); if a keyframe interval exceeds the segment limit, segments are cut at
//! non-keyframes (the caller counts those: the stream's keyframe interval is too long).

/// How segment anchors advance; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentMode {
    /// Anchor = PTS of the keyframe that started the segment (video).
    Keyframe,
    /// Anchor advances by whole `segment_target`s (audio, every frame is sync).
    Grid,
    /// Boundaries come from elsewhere ([`Cutter::set_boundary`]); every frame is sync.
    Follow,
}

/// Cutting parameters, in ticks of the track timescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CutterConfig {
    /// Upper bound of a part's duration.
    pub part_target: u64,
    /// Nominal segment duration.
    pub segment_target: u64,
    /// A keyframe this much before the segment target still ends the segment (timestamp jitter).
    pub tolerance: u64,
    /// A segment longer than this is cut even without a keyframe (bounds memory per segment).
    pub max_segment: u64,
    /// How the segment anchor advances.
    pub mode: SegmentMode,
    /// Follow mode: how long (ticks of media) to drop samples waiting for the first boundary.
    pub follow_wait: u64,
}

/// A sample as the cutter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CutSample {
    /// Presentation time, ticks.
    pub pts: u64,
    /// Duration, ticks (from the next sample's DTS).
    pub duration: u64,
    /// Sync sample.
    pub keyframe: bool,
    /// A timestamp gap precedes this sample: it must start a new part.
    pub gap_before: bool,
}

/// What is known of the sample after the one pushed (its duration is not known yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lookahead {
    /// Presentation time, ticks.
    pub pts: u64,
    /// Sync sample.
    pub keyframe: bool,
    /// A timestamp gap separates it from the pushed sample.
    pub gap: bool,
    /// Follow mode: whether every boundary that could start a segment at this sample is known.
    /// When not (the video has not got that far) and no boundary is set, the cutter leaves the
    /// segment's end to the next push: see [`End::PartUndecided`].
    pub settled: bool,
}

/// What the pushed sample starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// It goes into the open part.
    Continue,
    /// Close the open part (if any); the sample starts a new part of the same segment.
    Part,
    /// Close the open part and segment (if any); the sample starts a new segment.
    Segment,
}

/// What can be closed right after the pushed sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Nothing yet.
    Open,
    /// The part containing the sample is complete.
    Part,
    /// The part containing the sample is complete, but whether its segment ends with it is
    /// decided when the next sample is pushed (follow mode, the boundary not known yet): the
    /// part may be served to a client that asked for it, and is listed once the next push
    /// decides (the preload hint keeps naming it until then, so the hint holds either way).
    PartUndecided,
    /// The part and the segment containing the sample are complete.
    Segment,
}

/// The cutter's answer for one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Drop the sample (video before the first keyframe).
    Drop,
    /// Add the sample.
    Add {
        /// What it starts.
        start: Start,
        /// What is complete after it.
        end: End,
    },
}

/// State of the open segment.
#[derive(Debug, Clone, Copy)]
struct Open {
    anchor: u64,
    start_pts: u64,
    /// PTS of the open (or last) part's first sample.
    part_start: u64,
    /// Duration of the last sample added (the estimate for the next one).
    last_duration: u64,
    /// PTS of the last keyframe seen, and the longest of the last few intervals (the GOP
    /// estimate) with the intervals themselves.
    last_key: Option<u64>,
    last_gop: u64,
    gops: [u64; GOP_HISTORY],
    segment_duration: u64,
    part_duration: u64,
    part_open: bool,
    segment_open: bool,
    /// The last push left undecided whether its segment ends after it (follow mode): a sample
    /// at or past the boundary then starts the next segment, as if the lookahead had said so.
    end_undecided: bool,
}

/// The per-rendition cutting state machine; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Cutter {
    cfg: CutterConfig,
    open: Option<Open>,
    /// Follow mode: PTS where the next segment starts, once known.
    boundary: Option<u64>,
    /// Follow mode: where the video's parts of the open segment start (PTS, increasing), as
    /// far as the video has got; see [`Cutter::set_part_boundaries`].
    part_boundaries: Vec<u64>,
    /// Follow mode: PTS of the first sample dropped while waiting for a boundary.
    waiting_since: Option<u64>,
    /// PTS where the caller ordered a segment to start ([`Cutter::cut_at`]), increasing.
    cuts: Vec<u64>,
    /// A cut was ever ordered: segments start at ordered cuts only (and at `max_segment`).
    ordered: bool,
}

impl Cutter {
    /// A cutter waiting for its first (key)frame.
    pub fn new(cfg: CutterConfig) -> Self {
        Self {
            cfg,
            open: None,
            boundary: None,
            part_boundaries: Vec::new(),
            waiting_since: None,
            cuts: Vec::new(),
            ordered: false,
        }
    }

    /// Forget the open segment (after a flush or discontinuity): the next sample must be a keyframe.
    pub fn reset(&mut self) {
        self.open = None;
        self.boundary = None;
        self.part_boundaries.clear();
        self.waiting_since = None;
    }

    /// Forget the ordered cuts and go back to cutting at keyframes: a new publisher (a new
    /// ingest pipeline, a new grid) continues the track. Not on a timestamp jump: the grid
    /// goes on across one.
    pub fn clear_orders(&mut self) {
        self.cuts.clear();
        self.ordered = false;
    }

    /// The first sample at or after `pts` (ticks) starts a segment, whether it is a keyframe or
    /// not (see the module documentation). An order at or before the open segment's start is
    /// ignored (it is done with, or on another time base).
    pub fn cut_at(&mut self, pts: u64) {
        if self.open.is_some_and(|o| pts <= o.start_pts) {
            return;
        }
        self.ordered = true;
        // Cuts are ordered in PTS order; a stray earlier one is kept in order all the same.
        let at = self.cuts.partition_point(|c| *c < pts);
        if self.cuts.get(at) != Some(&pts) {
            self.cuts.insert(at, pts);
        }
    }

    /// Follow mode: where the next segment starts (PTS in ticks), if known yet.
    pub fn set_boundary(&mut self, pts: Option<u64>) {
        self.boundary = pts;
    }

    /// Follow mode: where the video's parts of the open segment start (PTS in ticks,
    /// increasing), as far as the video has got. A part then ends where the next of them
    /// falls (see the module documentation). Forgotten when a segment starts: the caller hands
    /// in the new segment's.
    pub fn set_part_boundaries(&mut self, pts: impl IntoIterator<Item = u64>) {
        self.part_boundaries.clear();
        self.part_boundaries.extend(pts);
    }

    /// Follow mode: does a sample at `pts` start the part after the open one (the next of the
    /// video's part starts past the open part's start is at or before it)? Not before the open
    /// part has [`MIN_PART_PERCENT`] of the part target: where the audio's segment started late
    /// on its clock (transport delays that differ by more than the media agreement, as over
    /// SRT) the video's first part start came 13 AAC frames into a 16-frame target.
    fn reaches_part_boundary(&self, o: &Open, pts: u64) -> bool {
        if o.part_duration.saturating_mul(100)
            < self.cfg.part_target.saturating_mul(MIN_PART_PERCENT)
        {
            return false;
        }
        let tol = self.cfg.tolerance;
        self.part_boundaries
            .iter()
            .find(|b| **b > o.part_start.saturating_add(tol))
            .is_some_and(|b| pts.saturating_add(tol) >= *b)
    }

    /// Every sample is a sync sample in this mode.
    fn all_sync(&self) -> bool {
        matches!(self.cfg.mode, SegmentMode::Grid | SegmentMode::Follow)
    }

    /// Follow mode before the first segment: may `pts` start it?
    fn may_start(&mut self, pts: u64) -> bool {
        if self.cfg.mode != SegmentMode::Follow {
            return true;
        }
        if self
            .boundary
            .is_some_and(|b| pts.saturating_add(self.cfg.tolerance) >= b)
        {
            return true;
        }
        let since = *self.waiting_since.get_or_insert(pts);
        pts.saturating_sub(since) >= self.cfg.follow_wait
    }

    /// Place one sample; see [`Placement`].
    pub fn push(&mut self, s: &CutSample, next: Option<Lookahead>) -> Placement {
        let cfg = self.cfg;
        let mut late_boundary = false;
        if self.open.is_none() && (!s.keyframe || !self.may_start(s.pts)) {
            return Placement::Drop;
        }
        let start = match self.open {
            None => Start::Segment,
            Some(o) if !o.segment_open => Start::Segment,
            Some(o) if self.starts_segment(&o, s.pts, s.keyframe) => {
                // With no next sample (a flush) nothing follows in this segment anyway; after a
                // push that left the end undecided nothing was announced past the open part.
                if self.all_sync() && next.is_some() && !o.end_undecided {
                    // Announced as part N.k (or inside the open part): finish segment N with it.
                    late_boundary = true;
                    if o.part_open && o.part_duration + s.duration <= cfg.part_target {
                        Start::Continue
                    } else {
                        Start::Part
                    }
                } else {
                    Start::Segment
                }
            }
            Some(o) if !o.part_open => Start::Part,
            Some(o) if s.gap_before || o.part_duration + s.duration > cfg.part_target => {
                Start::Part
            }
            Some(o) if self.reaches_part_boundary(&o, s.pts) => Start::Part,
            Some(_) => Start::Continue,
        };
        let mut o = match (start, self.open) {
            (Start::Segment, prev) => {
                self.waiting_since = None;
                self.cuts.retain(|c| *c > s.pts);
                // The part starts handed in were the last segment's.
                self.part_boundaries.clear();
                Open {
                    anchor: next_anchor(&cfg, prev.map(|p| p.anchor), s.pts),
                    start_pts: s.pts,
                    part_start: s.pts,
                    last_duration: s.duration,
                    last_key: prev.and_then(|p| p.last_key),
                    last_gop: prev.map_or(0, |p| p.last_gop),
                    gops: prev.map_or([0; GOP_HISTORY], |p| p.gops),
                    segment_duration: 0,
                    part_duration: 0,
                    part_open: true,
                    segment_open: true,
                    end_undecided: false,
                }
            }
            (Start::Part, Some(o)) => Open {
                part_duration: 0,
                part_start: s.pts,
                part_open: true,
                ..o
            },
            (_, Some(o)) => o,
            // Unreachable: `None` always yields `Start::Segment` or `Drop` above.
            (_, None) => return Placement::Drop,
        };
        o.part_duration += s.duration;
        o.segment_duration += s.duration;
        // The next sample is assumed as long as this one, unless this one carries a hole
        // (frames lost upstream: it lasts until the sample that came next), then as long as
        // the one before. Closing the part on the hole's length ended it short mid-segment.
        let expected_next = if o.last_duration > 0
            && s.duration.saturating_mul(2) > o.last_duration.saturating_mul(HOLE_RATIO_HALVES)
        {
            o.last_duration
        } else {
            s.duration
        };
        o.last_duration = s.duration;
        if s.keyframe {
            if let Some(k) = o.last_key.filter(|k| *k < s.pts) {
                o.gops.rotate_right(1);
                o.gops[0] = s.pts - k;
                o.last_gop = o.gops.iter().copied().max().unwrap_or(0);
            }
            o.last_key = Some(s.pts);
        }
        if start == Start::Segment && cfg.mode == SegmentMode::Follow {
            // This boundary is used up; the caller hands in the next one.
            self.boundary = None;
        }
        // Follow mode with no boundary known and the video not past the next sample: a
        // boundary may still come before it.
        let undecided = cfg.mode == SegmentMode::Follow
            && self.boundary.is_none()
            && next.is_some_and(|n| !n.settled);
        let full = next.is_some_and(|n| {
            n.gap
                || o.part_duration + expected_next > cfg.part_target
                || self.reaches_part_boundary(&o, n.pts)
        });
        let end = match next {
            _ if late_boundary => End::Segment,
            Some(n) if self.starts_segment(&o, n.pts, n.keyframe) => End::Segment,
            Some(_) if undecided && full => End::PartUndecided,
            Some(_) if full => End::Part,
            _ => End::Open,
        };
        o.end_undecided = undecided && end != End::Segment;
        match end {
            End::Segment => {
                o.part_open = false;
                o.segment_open = false;
            }
            End::Part | End::PartUndecided => o.part_open = false,
            End::Open => {}
        }
        self.open = Some(o);
        Placement::Add { start, end }
    }

    /// Would a sample at `pts` start a new segment? Uses only `pts`, `keyframe` and the open
    /// segment (whose `last_duration` estimates the sample's), so the lookahead's answer and the
    /// answer when the sample arrives agree.
    fn starts_segment(&self, o: &Open, pts: u64, keyframe: bool) -> bool {
        let cfg = &self.cfg;
        if self.cuts.iter().any(|c| *c > o.start_pts && pts >= *c) {
            return true;
        }
        let length = pts.saturating_sub(o.start_pts).max(o.segment_duration);
        if length.saturating_add(o.last_duration) > cfg.max_segment {
            return true;
        }
        if !keyframe || self.ordered {
            return false;
        }
        match cfg.mode {
            SegmentMode::Follow => self
                .boundary
                .is_some_and(|b| pts.saturating_add(cfg.tolerance) >= b),
            SegmentMode::Grid => {
                pts.saturating_add(cfg.tolerance) >= o.anchor.saturating_add(cfg.segment_target)
            }
            SegmentMode::Keyframe => {
                let into = pts.saturating_sub(o.start_pts);
                // This keyframe's own interval counts too (the first GOP has no history).
                let gop = o
                    .last_gop
                    .max(pts.saturating_sub(o.last_key.unwrap_or(o.start_pts)));
                pts.saturating_add(cfg.tolerance) >= o.anchor.saturating_add(cfg.segment_target)
                    || (into * 4 >= cfg.segment_target
                        && gop > 0
                        && into.saturating_add(gop) > cfg.max_segment)
            }
        }
    }
}

/// A sample longer than this many halves of the one before (1.5 times) carries a hole:
/// frames went missing after it (lost packets on SRT), and the sample after it is expected as
/// long as the one before it, not as long as the hole. Millisecond timestamps (RTMP) move a
/// frame's duration by a few percent, far below.
const HOLE_RATIO_HALVES: u64 = 3;

/// RFC 8216bis: every part but the last of its segment lasts at least this share (percent) of
/// PART-TARGET. The duration rule keeps to it by itself (a part is closed only when the next
/// sample would not fit); a part end taken from the video's part starts is held to it.
pub(crate) const MIN_PART_PERCENT: u64 = 85;

/// Keyframe intervals remembered for the GOP estimate.
pub(crate) const GOP_HISTORY: usize = 4;

/// In grid mode, a sample more than this many segment targets past the previous anchor (a
/// timestamp gap) restarts the grid at itself instead of advancing by whole targets.
const GRID_RESYNC_SEGMENTS: u64 = 2;

/// The anchor of a segment starting at `pts`.
fn next_anchor(cfg: &CutterConfig, prev: Option<u64>, pts: u64) -> u64 {
    match (cfg.mode, prev) {
        (SegmentMode::Grid, Some(prev)) if cfg.segment_target > 0 => {
            let crossed =
                pts.saturating_add(cfg.tolerance).saturating_sub(prev) / cfg.segment_target;
            // After a long gap the grid restarts at the sample itself.
            if crossed > GRID_RESYNC_SEGMENTS {
                pts
            } else {
                prev + crossed * cfg.segment_target
            }
        }
        _ => pts,
    }
}

#[cfg(test)]
#[path = "cutter_test.rs"]
pub(crate) mod tests;
