//! The wall clock of a stream: one EXT-X-PROGRAM-DATE-TIME per media sequence number, shared by
//! every rendition, and the segment boundaries the audio follows.
//!
//! Entry points: [`Timeline::new`] (per stream, with the `(Instant, SystemTime)` pair that maps
//! the monotonic clock to the wall clock), [`Timeline::wall_ns`], [`Timeline::open`] (a rendition
//! opens segment N: the PDT to print), [`Timeline::boundary`] (where the video opened N),
//! [`Timeline::raise_floor`] (a continuation from a node whose clock may differ),
//! [`Timeline::advance_video`] / [`Timeline::video_frontier`] (how far the video has got: the
//! audio holds back its samples until the video's boundaries among them are known),
//! [`Timeline::video_part`] / [`Timeline::video_parts`] (where the video's parts start: the
//! audio's parts end there too).
//!
//! Why a shared table: renditions have unrelated timestamp bases (GStreamer's video encoders
//! shift their output by 1000 hours so that DTS never goes negative; the passthrough source and
//! the audio keep the demuxer's), so a PDT derived from one rendition's PTS and applied to
//! another's is off by that shift. Each rendition instead maps its own PTS to the wall clock
//! from its samples' arrival (`crate::track`), and the first *video* rendition to open MSN N
//! fixes PDT(N) for all: equal across renditions by construction, and the audio cuts its
//! segment N where the video's starts.
//!
//! Pure: no clock is read here; callers pass instants.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Boundaries remembered per stream: far more than a window of segments (renditions never lag
/// each other by more than a few segments), small enough to stay a few KiB.
pub(crate) const MAX_BOUNDARIES: usize = 64;

/// Smallest step between two consecutive PDTs of a rendition: keeps PDT strictly increasing
/// even when an encoder bursts ahead of real time; one millisecond is the PDT's resolution.
pub(crate) const MIN_PDT_STEP_NS: u64 = 1_000_000;

/// Where and when a video rendition opened a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Boundary {
    /// PDT of the segment, ns since the UNIX epoch.
    pub wall_ns: u64,
    /// Set by a video rendition (audio entries are placeholders video overrides).
    pub video: bool,
    /// The media time (PTS, ns) of the first sample of the rendition that opened the segment.
    /// The ingest gives every rendition of a stream one media time base (the source's
    /// timestamps, or one GStreamer pipeline's running time), so an audio segment's PDT can sit
    /// exactly as far from the video's as its media does (`Track::feed`); where the distance
    /// says the bases differ, the audio falls back to its wall clock.
    pub media_ns: u64,
    /// The segment follows a discontinuity.
    pub discontinuity: bool,
}

/// One stream's wall clock; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    epoch: Instant,
    epoch_wall_ns: u64,
    boundaries: BTreeMap<u64, Boundary>,
    /// No PDT below this (ns), e.g. the end of the last segment served by another node.
    floor_ns: u64,
    /// Added to every PDT once a floor had to be applied (a clock behind the previous node's).
    correction_ns: u64,
    /// Where the video's parts start in each segment: ns after the segment's first sample, in
    /// increasing order, from whichever video rendition reported each first (renditions of a
    /// stream cut the same frames; see [`Timeline::video_part`]). The audio ends its parts there.
    part_starts: BTreeMap<u64, Vec<u64>>,
    /// The current plan has video: audio renditions follow its boundaries.
    pub has_video: bool,
    /// How far the video renditions have got, on the wall clock (ns since the UNIX epoch,
    /// before `correction_ns`): the furthest frontier any of them has reported. See
    /// [`Timeline::video_frontier`].
    video_frontier_ns: Option<u64>,
}

impl Timeline {
    /// A timeline whose wall clock reads `wall` at `epoch`.
    pub fn new(epoch: Instant, wall: SystemTime) -> Self {
        let epoch_wall_ns = wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Self {
            epoch,
            epoch_wall_ns,
            boundaries: BTreeMap::new(),
            part_starts: BTreeMap::new(),
            floor_ns: 0,
            correction_ns: 0,
            has_video: false,
            video_frontier_ns: None,
        }
    }

    /// Wall clock (ns since the UNIX epoch) at `at`, on the monotonic clock.
    pub fn wall_ns(&self, at: Instant) -> u64 {
        if at >= self.epoch {
            let d = u64::try_from(at.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
            self.epoch_wall_ns.saturating_add(d)
        } else {
            let d = u64::try_from(self.epoch.duration_since(at).as_nanos()).unwrap_or(u64::MAX);
            self.epoch_wall_ns.saturating_sub(d)
        }
    }

    /// The video's boundary of segment `msn`, if a video rendition opened it.
    pub fn boundary(&self, msn: u64) -> Option<Boundary> {
        self.boundaries.get(&msn).copied().filter(|b| b.video)
    }

    /// A rendition opens segment `msn`, whose first sample (media time `media_ns`) it maps to
    /// `own_ns`: the PDT to print.
    pub fn open(
        &mut self,
        msn: u64,
        own_ns: u64,
        media_ns: u64,
        video: bool,
        discontinuity: bool,
    ) -> u64 {
        if let Some(b) = self.boundaries.get(&msn) {
            if b.video || !video {
                return b.wall_ns;
            }
        }
        let mut wall = own_ns.saturating_add(self.correction_ns);
        if wall < self.floor_ns {
            self.correction_ns += self.floor_ns - wall;
            wall = self.floor_ns;
        }
        self.boundaries.insert(
            msn,
            Boundary {
                wall_ns: wall,
                video,
                media_ns,
                discontinuity,
            },
        );
        while self.boundaries.len() > MAX_BOUNDARIES {
            self.boundaries.pop_first();
        }
        wall
    }

    /// A video rendition starts a part of segment `msn` `offset_ns` after the segment's first
    /// sample. Kept when it lies more than `min_step_ns` past the last start known for the
    /// segment: another rendition's report of the same part (its frames' timestamps may be
    /// rounded a millisecond apart) adds nothing.
    pub fn video_part(&mut self, msn: u64, offset_ns: u64, min_step_ns: u64) {
        let starts = self.part_starts.entry(msn).or_default();
        if starts
            .last()
            .is_none_or(|last| offset_ns > last.saturating_add(min_step_ns))
        {
            starts.push(offset_ns);
        }
        while self.part_starts.len() > MAX_BOUNDARIES {
            self.part_starts.pop_first();
        }
    }

    /// Where the video's parts of segment `msn` start (ns after its first sample), as far as
    /// the video has got.
    pub fn video_parts(&self, msn: u64) -> &[u64] {
        self.part_starts.get(&msn).map_or(&[], Vec::as_slice)
    }

    /// No PDT of a later segment may be earlier than `ns`.
    pub fn raise_floor(&mut self, ns: u64) {
        self.floor_ns = self.floor_ns.max(ns);
    }

    /// What [`Timeline::open`] adds to a rendition's own wall clock once a floor was applied:
    /// subtracted from a boundary's PDT, it gives the boundary on the renditions' own clocks.
    pub fn correction_ns(&self) -> u64 {
        self.correction_ns
    }

    /// A video rendition's frontier moved to `own_ns` on its own wall clock: no segment boundary
    /// it has not opened yet can be earlier (`Track::video_frontier_ns`).
    pub fn advance_video(&mut self, own_ns: u64) {
        self.video_frontier_ns = Some(self.video_frontier_ns.map_or(own_ns, |f| f.max(own_ns)));
    }

    /// How far (own wall clock, ns) the video has got: a segment boundary the video has not
    /// opened yet starts at or after it. `None` before any video sample.
    pub fn video_frontier(&self) -> Option<u64> {
        self.video_frontier_ns
    }
}

/// ns since the UNIX epoch as a `SystemTime`.
pub(crate) fn system_time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}
