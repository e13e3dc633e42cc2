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
//!   Parts end early only at a segment boundary (or a timestamp gap).
//! - A segment starts only at a keyframe: the first keyframe whose PTS is at least
//!   `segment_target - tolerance` after the segment's anchor. In [`SegmentMode::Keyframe`]
//!   (video) the anchor is the PTS of the keyframe that started the segment, so renditions
//!   whose keyframes have the same PTS and that start on the same keyframe get identical
//!   boundaries (same media sequence number ⇔ same time range). In [`SegmentMode::Grid`]
//!   (audio, where every frame is a sync sample) the anchor advances by whole targets, so
//!   segments average exactly `segment_target` and do not drift.
//! - Segments are cut at a non-keyframe only when they would exceed `max_segment`.
//!
//! Caveats: if a single sample is longer than `part_target`, its part is too (a part holds at
//! least one sample); if a keyframe interval exceeds `segment_target`, segments are longer
//! (the playlist's EXT-X-TARGETDURATION grows to cover them).

/// How segment anchors advance; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentMode {
    /// Anchor = PTS of the keyframe that started the segment (video).
    Keyframe,
    /// Anchor advances by whole `segment_target`s (audio, every frame is sync).
    Grid,
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
    segment_duration: u64,
    part_duration: u64,
    part_open: bool,
    segment_open: bool,
}

/// The per-rendition cutting state machine; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Cutter {
    cfg: CutterConfig,
    open: Option<Open>,
}

impl Cutter {
    /// A cutter waiting for its first (key)frame.
    pub fn new(cfg: CutterConfig) -> Self {
        Self { cfg, open: None }
    }

    /// Forget the open segment (after a flush or discontinuity): the next sample must be a keyframe.
    pub fn reset(&mut self) {
        self.open = None;
    }

    /// Place one sample; see [`Placement`].
    pub fn push(&mut self, s: &CutSample, next: Option<Lookahead>) -> Placement {
        let cfg = self.cfg;
        let start = match self.open {
            None if !s.keyframe => return Placement::Drop,
            None => Start::Segment,
            Some(o) if !o.segment_open => Start::Segment,
            Some(o) if self.starts_segment(&o, s.pts, s.keyframe, s.duration) => Start::Segment,
            Some(o) if !o.part_open => Start::Part,
            Some(o) if s.gap_before || o.part_duration + s.duration > cfg.part_target => {
                Start::Part
            }
            Some(_) => Start::Continue,
        };
        let mut o = match (start, self.open) {
            (Start::Segment, prev) => Open {
                anchor: next_anchor(&cfg, prev.map(|p| p.anchor), s.pts),
                segment_duration: 0,
                part_duration: 0,
                part_open: true,
                segment_open: true,
            },
            (Start::Part, Some(o)) => Open {
                part_duration: 0,
                part_open: true,
                ..o
            },
            (_, Some(o)) => o,
            // Unreachable: `None` always yields `Start::Segment` or `Drop` above.
            (_, None) => return Placement::Drop,
        };
        o.part_duration += s.duration;
        o.segment_duration += s.duration;
        let end = match next {
            Some(n) if self.starts_segment(&o, n.pts, n.keyframe, s.duration) => End::Segment,
            Some(n) if n.gap || o.part_duration + s.duration > cfg.part_target => End::Part,
            _ => End::Open,
        };
        match end {
            End::Segment => {
                o.part_open = false;
                o.segment_open = false;
            }
            End::Part => o.part_open = false,
            End::Open => {}
        }
        self.open = Some(o);
        Placement::Add { start, end }
    }

    /// Would a sample at `pts` (lasting about `duration`) start a new segment?
    fn starts_segment(&self, o: &Open, pts: u64, keyframe: bool, duration: u64) -> bool {
        let cfg = &self.cfg;
        if o.segment_duration + duration > cfg.max_segment {
            return true;
        }
        keyframe && pts.saturating_add(cfg.tolerance) >= o.anchor.saturating_add(cfg.segment_target)
    }
}

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
