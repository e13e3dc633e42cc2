//! Where a stream's video segments start when its source's keyframes are too far apart: the
//! grid the ingest keeps from the source's frames ([`KeyGrid`]), orders every video rendition
//! to cut on ([`crate::StreamHandle::cut_video_at`]) and forces the transcoded renditions'
//! keyframes on. Pure: the caller passes each frame's timestamps.

use std::time::Duration;

/// How late a source keyframe may come, past a segment target after the last one, before the
/// stream's segments go on a grid ([`KeyGrid`]). A keyframe this late still ends a segment the
/// fixed TARGETDURATION holds (the packager cuts without one past TARGETDURATION + 0.45 s,
/// `crate::track`'s limit), with room for a frame at 15 fps.
const KEYFRAME_GRACE: Duration = Duration::from_millis(250);
/// A frame this close before a grid point is on it (RTMP's timestamps are whole milliseconds).
const GRID_TOLERANCE: Duration = Duration::from_millis(10);
/// A DTS step longer than this is a timestamp jump, where the packager starts a segment after
/// a discontinuity (`crate::track::MAX_SAMPLE_DURATION`); the grid restarts there too.
const GRID_JUMP: Duration = crate::track::MAX_SAMPLE_DURATION;

/// Where a stream's video segments start, decided from the source's frames as they reach the
/// ladder (decode order; running time, ns):
/// - at the source's keyframes, which every encoder is made to repeat, while each comes within
///   a segment target and [`KEYFRAME_GRACE`] of the one before;
/// - from the first frame past that without one (the encoder's keyframe interval is longer than
///   the segment target; normally the stream's first GOP shows it), on a grid: that frame, then
///   the first frame at or after each segment target since the last cut. Decided once, for the
///   rest of the stream: the encoders get keyframes on the grid and at no other frame (the
///   source's would start segments in the source's rendition that the transcoded ones do not
///   have), every video rendition is told to cut there (`StreamHandle::cut_video_at`), and the
///   source's own rendition, which cannot get keyframes, starts its segments there without one.
///   So every rendition's segment N covers the same media, and the transcoded renditions'
///   segments all start with a keyframe (players start and switch on those).
#[derive(Debug)]
pub struct KeyGrid {
    target_ns: u64,
    /// The last segment start (PTS): a source keyframe, or a cut on the grid.
    last_ns: Option<u64>,
    /// The DTS of the frame before (jumps are told by the DTS: the PTS of a B-frame lies
    /// before that of the frame decoded before it).
    prev_dts_ns: Option<u64>,
    grid: bool,
}

/// What [`KeyGrid::frame`] makes of a source frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridStep {
    /// Nothing: the frame is inside a segment.
    None,
    /// A source keyframe that starts a segment: the encoders make one there too.
    Keyframe,
    /// A cut on the grid at PTS `at` (this frame's, or the grid point when this frame is shown
    /// after it: a P-frame whose B-frames, decoded after it, are shown before it): the encoders
    /// make a keyframe at the first frame shown at or after `at` and every video rendition
    /// starts a segment at its first sample at or after it; `first` when it starts the grid.
    Cut { at: u64, first: bool },
}

impl KeyGrid {
    pub fn new(segment_target: Duration) -> Self {
        Self {
            target_ns: u64::try_from(segment_target.as_nanos()).unwrap_or(u64::MAX),
            last_ns: None,
            prev_dts_ns: None,
            grid: false,
        }
    }

    /// The source frame decoded at `dts_ns` and shown at `pts_ns`, a keyframe or not.
    pub fn frame(&mut self, dts_ns: u64, pts_ns: u64, keyframe: bool) -> GridStep {
        let grace = u64::try_from(KEYFRAME_GRACE.as_nanos()).unwrap_or(u64::MAX);
        let tolerance = u64::try_from(GRID_TOLERANCE.as_nanos()).unwrap_or(u64::MAX);
        let max_step = u64::try_from(GRID_JUMP.as_nanos()).unwrap_or(u64::MAX);
        let jumped = self
            .prev_dts_ns
            .is_some_and(|p| dts_ns < p || dts_ns - p > max_step);
        self.prev_dts_ns = Some(dts_ns);
        let Some(last) = self.last_ns else {
            if keyframe {
                self.last_ns = Some(pts_ns);
                return GridStep::Keyframe;
            }
            return GridStep::None;
        };
        if !self.grid {
            if keyframe {
                self.last_ns = Some(pts_ns);
                return GridStep::Keyframe;
            }
            let due = last.saturating_add(self.target_ns).saturating_add(grace);
            if pts_ns >= due {
                self.grid = true;
                self.last_ns = Some(due);
                return GridStep::Cut {
                    at: due,
                    first: true,
                };
            }
            return GridStep::None;
        }
        // A timestamp jump restarts the grid where it went: the packager starts a segment
        // there after a discontinuity.
        if jumped {
            self.last_ns = Some(pts_ns);
            return GridStep::Cut {
                at: pts_ns,
                first: false,
            };
        }
        let due = last.saturating_add(self.target_ns);
        if pts_ns.saturating_add(tolerance) >= due {
            let at = pts_ns.min(due);
            self.last_ns = Some(at);
            return GridStep::Cut { at, first: false };
        }
        GridStep::None
    }
}

#[cfg(test)]
#[path = "grid_test.rs"]
mod tests;
