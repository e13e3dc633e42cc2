//! One rendition's media timeline: samples in, a sliding window of parts and segments out.
//!
//! Entry points: [`Track::configure`] (codec parameters → init segment version),
//! [`Track::push`] (one sample; returns what got published), [`Track::flush`] (the publisher
//! went away or the codec changed: the pending sample, part and segment become final),
//! [`Track::begin_session`] (a new publisher continues the same playlist after a
//! discontinuity), [`Track::finish`] (EXT-X-ENDLIST), and the read side used by the HTTP
//! layer ([`Track::playlist`], [`Track::part`], [`Track::segment`], [`Track::init`], positions).
//!
//! Pure: no IO, no clocks; callers pass `now` (for latency accounting and as the arrival of
//! samples that carry none) and the stream's [`Timeline`] (for EXT-X-PROGRAM-DATE-TIME and the
//! boundaries the audio follows).
//!
//! Timing: timestamps are converted to ticks of the track timescale; a sample's duration is
//! the next sample's DTS minus its own, so one sample per track is buffered (on flush the last
//! sample reuses the previous duration).
//!
//! Timestamp jumps: a DTS that goes backwards, or forward by more than [`MAX_SAMPLE_DURATION`],
//! is a discontinuity: the buffered sample, part and segment are closed, the next segment is
//! preceded by EXT-X-DISCONTINUITY (video: at the next keyframe) and its PDT is the wall clock
//! of its first sample's arrival again. It is logged and counted (`Published::jumps`). A sample
//! with the same DTS as the one before is dropped (counted): a zero-length sample cannot be cut.
//!
//! PDT: each segment's EXT-X-PROGRAM-DATE-TIME is its first sample's arrival on the wall clock.
//! The track maps its own PTS to the wall clock with an offset taken, at each segment start, as
//! the smallest `arrival - pts` over the previous segment's samples (the least-delayed sample is
//! the closest to the true capture pace; network bursts only delay), moved by at most
//! `MAX_PDT_SLEW_NS` per segment, so PDT and EXTINF agree and PDT converges to arrival. The
//! shared [`Timeline`] then makes PDT(N) the same in every rendition.
//!
//! Audio next to video (follow mode) cuts where the video cuts: the video's boundary, a PDT,
//! is mapped to the audio's PTS through the audio's own clock; the audio segment's PDT is the
//! boundary's moved by the media time from the video's first sample to its own (renditions
//! share a media time base), so PDT and media agree between the tracks, while that distance
//! and the one on the audio's clock agree within [`FOLLOW_MEDIA_AGREEMENT_NS`]. So that the
//! boundary is known when the audio reaches it, the audio holds each sample back until the
//! video's frontier has passed it ([`Track::release`]; the ingest hands audio on before the
//! video, by a varying amount when media comes in bursts), for at most [`MAX_FOLLOW_HOLD`] of
//! media. Its parts end where the video's do, too: the video reports where each of its parts
//! starts within the segment ([`Timeline::video_part`]), the audio maps those starts onto its
//! media from its own segment start and cuts at the first frame at or after each, so part N.k
//! covers the same media in every rendition (`crate::cutter`). Its part target, served as its
//! PART-TARGET, is therefore the whole AAC frames that can start within one video part
//! ([`audio_part_target`]: 0.215 s for 200 ms parts at 48 kHz).
//!
//! EXT-X-TARGETDURATION is fixed for the life of the track: ceil(segment_target). Video
//! segments end on keyframes; a segment that reaches the longest duration this target allows
//! (EXTINF rounds to at most TARGETDURATION) without one is cut at a non-keyframe and counted
//! (`Published::forced_cuts`): the source's keyframe interval is too long for the segment
//! target. That is why the multivariant playlist does not claim EXT-X-INDEPENDENT-SEGMENTS;
//! video parts still say INDEPENDENT=YES exactly where they start with a keyframe, audio parts
//! only where they start a segment (see `Track::feed`).
//!
//! Window: the playlist lists the last `window_segments` complete segments (more while they
//! are under three target durations); a segment that leaves it is still served for a while
//! ([`RETIRED_EXTRA`], RFC 8216bis 6.2.2), so a client that read the playlist just before does
//! not get a 404.
//!
//! Gaps: a media sequence number a track skips is listed as an EXT-X-GAP segment, never left
//! out, so every rendition's numbering stays contiguous and a player that saw the MSN before
//! maps the new media to the right time. Two causes: renditions realigned after a reconnect
//! ([`Track::align_msn`]: one was a segment behind), and a stream continued from another node
//! ([`TrackStart::gaps`]: the numbers the old node may have used after its last report). A gap
//! segment has no parts and no media; its URI answers 404, as players that honour the tag
//! never ask for it.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use bytes::Bytes;

use crate::codec::{self, CodecInfo};
use crate::cutter::{
    CutSample, Cutter, CutterConfig, End, Lookahead, Placement, SegmentMode, Start,
};
use crate::fmp4::{self, FragSample};
use crate::playlist::{MediaPlaylist, PartEntry, RenditionReport, SegmentEntry};
use crate::timeline::{self, Timeline, MIN_PDT_STEP_NS};
use crate::{CodecConfig, PackagerError, RenditionKind, RenditionPlan, Sample};

/// A keyframe up to this long before the segment target still ends the segment: absorbs
/// timestamp rounding and jitter, small enough never to merge two real keyframes.
pub(crate) const SEGMENT_CUT_TOLERANCE: Duration = Duration::from_millis(10);

/// How far below the longest duration EXT-X-TARGETDURATION allows (TARGETDURATION + 0.5 s,
/// which still rounds to it) a segment is cut without a keyframe: room for the last sample's
/// duration estimate to be off (a frame at 24 fps is 42 ms).
pub(crate) const SEGMENT_LIMIT_MARGIN: Duration = Duration::from_millis(50);

/// The same margin for audio that follows the video's boundaries: smaller, so the audio
/// (whose frames never line up with the video's) still waits for a video boundary cut close to
/// the video's own limit; one AAC frame (23 ms at 44.1 kHz) still fits under the hard limit.
pub(crate) const FOLLOW_LIMIT_MARGIN: Duration = Duration::from_millis(25);

/// A DTS step longer than this is a gap in the source, not a sample duration (no live video
/// or audio frame lasts a second): a discontinuity.
pub(crate) const MAX_SAMPLE_DURATION: Duration = Duration::from_secs(1);

/// Audio next to video waits this long (media time) for the video's first segment before it
/// starts on its own (a video rendition that never produces a keyframe must not silence audio).
pub(crate) const FOLLOW_WAIT: Duration = Duration::from_secs(4);

pub(crate) use crate::playlist::PART_LIST_TARGET_DURATIONS;

/// Fallback duration of a lone video sample when neither a previous duration nor the frame
/// rate is known: one frame at this rate (the most common live frame rate).
const FALLBACK_FRAME_RATE: u32 = 30;

/// Samples per AAC-LC frame: the fallback duration of a lone audio sample.
const AAC_FRAME_SAMPLES: u64 = 1024;

/// An audio DTS step longer than this many frames and a half is a hole (frames lost upstream),
/// filled with silence (see [`Track::audio_gap_fill`]); AAC frames are evenly spaced, and
/// millisecond timestamps (RTMP) move a step by under 5%.
const AUDIO_GAP_FRAMES: u64 = 1;

/// Added to an audio rendition's part target after rounding it up to whole milliseconds (see
/// [`Track::configure`]): RTMP's and FLV's millisecond timestamps move the length of ten AAC
/// frames by up to a millisecond.
const AUDIO_PART_TARGET_SLACK: Duration = Duration::from_millis(1);

/// The MPEG-4 audio object type of AAC-LC.
const AAC_LC: u8 = 2;

/// A silent AAC-LC frame, one channel (a single channel element with zero spectral data: what
/// hls.js and nginx-vod insert for missing audio; decodes to 1024 zero samples).
const AAC_LC_SILENT_MONO: [u8; 6] = [0x00, 0xc8, 0x00, 0x80, 0x23, 0x80];

/// A silent AAC-LC frame, two channels (a channel pair element, as above).
const AAC_LC_SILENT_STEREO: [u8; 9] = [0x21, 0x00, 0x49, 0x90, 0x02, 0x19, 0x00, 0x23, 0x80];

/// How far a track's PTS-to-wall-clock offset may move from one segment to the next: half the
/// PDT step the playlist rules tolerate (`rules::PDT_STEP_TOLERANCE`, 100 ms), so an encoder's
/// start-up burst or a delayed segment never shows as a PDT step that disagrees with EXTINF.
const MAX_PDT_SLEW_NS: i128 = 50_000_000;

/// The most an audio segment's PDT is moved from the video's boundary towards its own first
/// sample: two AAC frames at the lowest sample rate ingested (2 × 1024 / 22,050 Hz = 93 ms);
/// past it the cut is not where the video's boundary says (a clock jumped) and the boundary's
/// PDT is kept as it is.
const MAX_FOLLOW_LEAD_NS: i128 = 93_000_000;

/// How far apart an audio segment's distance from the video's boundary may be in media time
/// and on the audio's own clock for the media time to set its PDT (`Track::feed`). The two
/// differ by the difference between the audio's and the video's least transport delay: a few
/// ms over RTMP. When they differ by much more, the audio's cut, made on its clock, is far from
/// the video's boundary in media time too (seen over SRT with losses: one segment cut 105 ms
/// off), and a PDT in media time would move that segment's PDT step as far from its EXTINF;
/// the clock's distance is kept then. Going from one to the other moves a PDT step by at most
/// this, well inside the 100 ms a PDT step may differ from EXTINF.
const FOLLOW_MEDIA_AGREEMENT_NS: i128 = 20_000_000;

/// Audio that follows the video holds a sample back until the video's frontier (the earliest
/// wall-clock time a segment boundary the video has not opened yet can have, see
/// [`Track::video_frontier_ns`]) is this far past the sample after it, so that the boundary
/// that may start either is known when the cutter decides: the cutter starts a segment up to
/// [`SEGMENT_CUT_TOLERANCE`] before its boundary, and 5 ms cover the rounding in between.
const FOLLOW_HOLD_MARGIN_NS: u64 = 15_000_000;

/// The most media (from the first held sample to the last one's successor) audio that follows
/// the video holds back: as much as the video may lag in the ingest (the queue in front of each
/// of its branches holds 3 s). Past it (the video stalled) the oldest samples are placed without
/// waiting, and a boundary learned after its audio was placed ends the segment late.
pub(crate) const MAX_FOLLOW_HOLD: Duration = Duration::from_secs(3);

/// A segment that leaves the playlist is still served while this many more than the playlist
/// holds have left after it: RFC 8216bis 6.2.2 wants it available for its own duration plus the
/// longest playlist that listed it, so that a client that has just read the playlist (a player
/// far behind the live edge, or one reading the oldest segment as the window slides) does not
/// get a 404. Segments are about one target long, so the playlist's count plus one covers it.
pub(crate) const RETIRED_EXTRA: usize = 1;

/// The most EXT-X-GAP segments listed for one run of skipped numbers: two minutes of 2 s
/// segments, longer than any reconnect a player waits through; a longer run lists only its
/// last ones (they hold no media, so the memory is a few hundred bytes).
pub(crate) const MAX_GAP_SEGMENTS: u64 = 64;

/// A track's map from its PTS to the wall clock (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TrackClock {
    /// wall_ns - pts_ns for the open segment.
    offset: i128,
    /// Smallest wall_ns - pts_ns seen since the open segment started.
    window_min: i128,
}

impl TrackClock {
    /// The offset of a segment opened by a sample whose `wall_ns - pts_ns` is `delta`: the
    /// least delay seen in the segment before it and its own, moved by at most
    /// [`MAX_PDT_SLEW_NS`]. Also what the video's frontier is computed from
    /// ([`Track::video_frontier_ns`]), so the two cannot disagree. The least delay moves by a
    /// few ms from one segment to the next, and so do PDT steps against EXTINF; keeping the
    /// offset still within a 10 ms dead band made them equal, but Shaka Player (5.1.12) then
    /// found its segments by exact start time more often and fell into a fault of its own more
    /// often (BENCHMARKS.md, glass to glass, stop 30), so PDT keeps following the least delay.
    fn next_offset(&self, delta: i128) -> i128 {
        self.window_min
            .min(delta)
            .clamp(self.offset - MAX_PDT_SLEW_NS, self.offset + MAX_PDT_SLEW_NS)
    }
}

/// Which way a timestamp jumped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Jump {
    /// DTS went backwards.
    Backward,
    /// DTS went forward by more than [`MAX_SAMPLE_DURATION`].
    Forward,
}

impl Jump {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Jump::Backward => "backward",
            Jump::Forward => "forward",
        }
    }
}

/// Whether the track is being fed, waiting for a publisher, or over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TrackState {
    /// A publisher feeds it.
    Live,
    /// The publisher left; the playlist stays live (no ENDLIST) for a reconnect.
    Idle,
    /// EXT-X-ENDLIST.
    Ended,
}

/// Packaging parameters of a track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrackConfig {
    /// Upper bound of a part.
    pub part_target: Duration,
    /// Nominal segment duration.
    pub segment_target: Duration,
    /// Complete segments kept.
    pub window_segments: usize,
    /// PART-HOLD-BACK in part targets.
    pub part_hold_back_parts: u32,
}

/// Numbering carried over from an earlier instance of the same rendition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TrackStart {
    /// First media sequence number.
    pub msn: u64,
    /// Discontinuity sequence number of the first segment.
    pub discontinuity_sequence: u64,
    /// First init version number.
    pub init_id: u32,
    /// Whether the first segment follows a discontinuity.
    pub discontinuity: bool,
    /// EXT-X-GAP segments to list first, from `msn` on; media resumes after them.
    pub gaps: Option<GapRun>,
}

/// A run of EXT-X-GAP segments a track starts with (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GapRun {
    /// How many.
    pub count: u64,
    /// PDT of the first, ns since the UNIX epoch.
    pub start_ns: u64,
    /// EXTINF (and PDT step) of each, ns.
    pub step_ns: u64,
}

/// A published part.
#[derive(Debug, Clone)]
pub(crate) struct Part {
    /// Duration, ticks.
    pub duration: u64,
    /// Starts with a sync sample (audio: and starts its segment; see `Track::feed`).
    pub independent: bool,
    /// When its frames arrived at the node (those that carry an arrival), while its segment is
    /// one of the two newest: what `crate::delivery` measures a waiting request against.
    pub arrivals: Box<[Instant]>,
    /// moof + mdat.
    pub data: Bytes,
}

/// A segment, complete or in progress.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    /// Media sequence number.
    pub msn: u64,
    /// Its parts so far.
    pub parts: Vec<Part>,
    /// Sum of the parts' durations, ticks.
    pub duration: u64,
    /// Preceded by EXT-X-DISCONTINUITY.
    pub discontinuity: bool,
    /// Init version it needs.
    pub init_id: u32,
    /// Wall-clock time of its first sample.
    pub pdt: Option<SystemTime>,
    /// An EXT-X-GAP segment of this many ns (no parts, no media).
    pub gap_ns: Option<u64>,
}

impl Segment {
    /// Bytes of its parts so far.
    fn len(&self) -> u64 {
        self.parts.iter().map(|p| p.data.len() as u64).sum()
    }
}

/// What a push or flush published.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Published {
    /// Parts completed.
    pub parts: u32,
    /// Segments completed.
    pub segments: u32,
    /// For each completed sample with an arrival time: publish time minus arrival.
    pub latencies: Vec<Duration>,
    /// Timestamp jumps turned into discontinuities.
    pub jumps: Vec<Jump>,
    /// Segments that had to start at a non-keyframe.
    pub forced_cuts: u32,
    /// Samples dropped for repeating the previous DTS.
    pub dropped: u32,
    /// Silent audio frames inserted into holes.
    pub filled: u32,
    /// Parts closed earlier that the playlist now lists (see `Track::unlisted`).
    pub listed: u32,
}

impl Published {
    fn merge(&mut self, other: Published) {
        self.parts += other.parts;
        self.segments += other.segments;
        self.latencies.extend(other.latencies);
        self.jumps.extend(other.jumps);
        self.forced_cuts += other.forced_cuts;
        self.dropped += other.dropped;
        self.filled += other.filled;
        self.listed += other.listed;
    }

    /// Whether anything became visible.
    pub fn any(&self) -> bool {
        self.parts > 0 || self.segments > 0 || self.listed > 0
    }
}

/// The buffered sample, waiting for its successor's DTS.
#[derive(Debug, Clone)]
struct Pending {
    dts: u64,
    pts: u64,
    pts_ns: u64,
    dts_ns: u64,
    keyframe: bool,
    gap_before: bool,
    data: Bytes,
    arrival: Option<Instant>,
    /// When it was pushed (its arrival if it carries none).
    received: Instant,
}

/// Where audio that follows the video opened its segment `msn`, relative to the video's:
/// the video's part starts of that segment, ns after the video's first sample, lie at
/// `first_pts + (offset - lead_ns)` in this track's ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FollowOrigin {
    msn: u64,
    /// PTS (ticks) of the segment's first sample.
    first_pts: u64,
    /// How far (ns of media) that sample lies past the video's boundary.
    lead_ns: i128,
}

/// A sample of audio that follows the video, complete (duration and successor known) but held
/// back until the video's boundaries around it are known (see [`Track::release`]).
#[derive(Debug, Clone)]
struct Held {
    sample: Pending,
    duration: u64,
    next: Lookahead,
    /// The successor's PTS, ns.
    next_pts_ns: u64,
}

/// The part being assembled.
#[derive(Debug)]
struct PartBuilder {
    base_dts: u64,
    duration: u64,
    independent: bool,
    samples: Vec<FragSample>,
    /// The samples' data as they came (shared, not copied): `fmp4::fragment` copies them once.
    payload: Vec<Bytes>,
    arrivals: Vec<Instant>,
}

/// One rendition; see the module documentation.
#[derive(Debug)]
pub(crate) struct Track {
    plan: RenditionPlan,
    cfg: TrackConfig,
    codec: Option<CodecInfo>,
    inits: Vec<(u32, Bytes)>,
    current_init: Option<u32>,
    next_init_id: u32,
    cutter: Option<Cutter>,
    pending: Option<Pending>,
    /// Follow mode: samples waiting for the video (oldest first), all before `pending`.
    held: VecDeque<Held>,
    last_duration: u64,
    building: Option<PartBuilder>,
    open: Option<Segment>,
    segments: VecDeque<Segment>,
    /// Segments that left the playlist, oldest first, still served (see [`RETIRED_EXTRA`]).
    retired: VecDeque<Segment>,
    next_msn: u64,
    discontinuity_sequence: u64,
    pending_discontinuity: bool,
    fragment_sequence: u32,
    state: TrackState,
    parts_total: u64,
    clock: Option<TrackClock>,
    last_pdt_ns: Option<u64>,
    /// Audio that cuts where the stream's video cuts.
    follow: bool,
    /// Audio: the part target (and PART-TARGET) for parts that end where the video's do, set
    /// at the first codec and kept for the life of the track (see [`Track::configure`]).
    audio_part_target: Option<Duration>,
    /// Follow mode: how the open segment's media maps to the video's, for its part starts.
    follow_origin: Option<FollowOrigin>,
    /// The next segment starts at once, off the video's boundaries (see `feed`).
    stale_boundary: bool,
    /// The open segment's last part is complete and served, but not listed yet: the cutter
    /// left undecided whether the segment ends with it ([`End::PartUndecided`]), and the
    /// playlist's preload hint keeps naming it until the next sample decides, so the hint
    /// names the part published next whichever way it goes.
    unlisted: bool,
    /// Highest bit rate of a segment of at least half the target (shorter ones, cut by a
    /// flush or a jump, would overstate it), bits/s.
    peak_bps: u64,
}

impl Track {
    /// A new track for `plan`, numbered from `start`.
    pub fn new(plan: RenditionPlan, cfg: TrackConfig, start: TrackStart) -> Self {
        let mut track = Self {
            plan,
            cfg,
            codec: None,
            inits: Vec::new(),
            current_init: None,
            next_init_id: start.init_id,
            cutter: None,
            pending: None,
            held: VecDeque::new(),
            last_duration: 0,
            building: None,
            open: None,
            segments: VecDeque::new(),
            retired: VecDeque::new(),
            next_msn: start.msn,
            discontinuity_sequence: start.discontinuity_sequence,
            pending_discontinuity: start.discontinuity,
            fragment_sequence: 0,
            state: TrackState::Live,
            parts_total: 0,
            clock: None,
            last_pdt_ns: None,
            follow: false,
            audio_part_target: None,
            follow_origin: None,
            stale_boundary: false,
            unlisted: false,
            peak_bps: 0,
        };
        if let Some(run) = start.gaps.filter(|r| r.count > 0) {
            let step = run.step_ns.max(MIN_PDT_STEP_NS);
            let count = run.count.min(MAX_GAP_SEGMENTS);
            // Only the last `count` numbers of a longer run are listed.
            track.next_msn += run.count - count;
            let first = run.start_ns + (run.count - count) * step;
            for i in 0..count {
                track.push_gap(first + i * step, step);
            }
        }
        track
    }

    /// List the next number as an EXT-X-GAP segment with this PDT and EXTINF (ns).
    fn push_gap(&mut self, pdt_ns: u64, duration_ns: u64) {
        let pdt_ns = match self.last_pdt_ns {
            Some(last) => pdt_ns.max(last.saturating_add(MIN_PDT_STEP_NS)),
            None => pdt_ns,
        };
        self.last_pdt_ns = Some(pdt_ns);
        self.segments.push_back(Segment {
            msn: self.next_msn,
            parts: Vec::new(),
            duration: 0,
            discontinuity: false,
            init_id: self.current_init.unwrap_or(self.next_init_id),
            pdt: Some(timeline::system_time(pdt_ns)),
            gap_ns: Some(duration_ns),
        });
        self.next_msn += 1;
        self.slide_window();
    }

    /// The rendition's name.
    pub fn name(&self) -> &str {
        &self.plan.name
    }

    /// The rendition's kind.
    pub fn kind(&self) -> RenditionKind {
        self.plan.kind
    }

    /// The plan it was created with.
    pub fn plan(&self) -> &RenditionPlan {
        &self.plan
    }

    /// Live, idle or ended.
    pub fn state(&self) -> TrackState {
        self.state
    }

    /// Codec information, once configured.
    pub fn codec(&self) -> Option<&CodecInfo> {
        self.codec.as_ref()
    }

    /// Parts published since creation.
    pub fn parts_total(&self) -> u64 {
        self.parts_total
    }

    /// Complete segments in the window.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Next media sequence number to be assigned.
    pub fn next_msn(&self) -> u64 {
        self.next_msn
    }

    /// Next init version number to be assigned.
    pub fn next_init_id(&self) -> u32 {
        self.next_init_id
    }

    /// Discontinuity sequence number of the last segment (for continuation elsewhere).
    pub fn last_discontinuity_sequence(&self) -> u64 {
        let tags = self
            .segments
            .iter()
            .chain(self.open.iter())
            .filter(|s| s.discontinuity)
            .count();
        self.discontinuity_sequence + tags as u64
    }

    /// Discontinuity number the next segment will have.
    pub fn next_discontinuity_number(&self) -> u64 {
        self.last_discontinuity_sequence() + u64::from(self.pending_discontinuity)
    }

    /// Set the plan (a new session may change the bandwidth).
    pub fn set_plan(&mut self, plan: RenditionPlan) {
        self.plan = plan;
    }

    /// Set (or change) the codec; a change makes a new init version and a discontinuity.
    pub fn configure(
        &mut self,
        config: CodecConfig,
        tl: &mut Timeline,
        now: Instant,
    ) -> Result<Published, PackagerError> {
        if self.state == TrackState::Ended {
            return Err(PackagerError::SessionEnded);
        }
        let info = CodecInfo::new(&self.plan.name, self.plan.kind, config)?;
        if self.codec.as_ref() == Some(&info) {
            return Ok(Published::default());
        }
        let init = fmp4::init_segment(&info, self.plan.bandwidth)?;
        let same_init = self
            .current_init
            .and_then(|id| self.init(id))
            .is_some_and(|cur| cur == init);
        if same_init && self.codec.as_ref().map(|c| c.timescale) == Some(info.timescale) {
            // Only metadata outside the init changed (e.g. the frame rate): nothing to cut.
            self.codec = Some(info);
            return Ok(Published::default());
        }
        let mut published = Published::default();
        if self.codec.is_some() {
            published = self.flush(tl, now)?;
            self.pending_discontinuity = true;
        }
        let id = self.next_init_id;
        self.next_init_id = self.next_init_id.wrapping_add(1);
        self.inits.push((id, init));
        self.current_init = Some(id);
        if self.plan.kind == RenditionKind::Audio && self.audio_part_target.is_none() {
            self.audio_part_target = Some(audio_part_target(self.cfg.part_target, &info));
        }
        self.cutter = Some(Cutter::new(self.cutter_config(info.timescale)));
        self.codec = Some(info);
        self.prune_inits();
        Ok(published)
    }

    fn cutter_config(&self, timescale: u32) -> CutterConfig {
        let limit = Duration::from_secs(self.target_duration()) + Duration::from_millis(500);
        let margin = if self.follow {
            FOLLOW_LIMIT_MARGIN
        } else {
            SEGMENT_LIMIT_MARGIN
        };
        let max_segment = limit.saturating_sub(margin);
        CutterConfig {
            part_target: codec::duration_to_ticks_floor(self.part_target(), timescale),
            segment_target: codec::ns_to_ticks(
                u64::try_from(self.cfg.segment_target.as_nanos()).unwrap_or(u64::MAX),
                timescale,
            ),
            tolerance: codec::duration_to_ticks_floor(SEGMENT_CUT_TOLERANCE, timescale),
            max_segment: codec::duration_to_ticks_floor(max_segment, timescale),
            mode: match self.plan.kind {
                RenditionKind::Video => SegmentMode::Keyframe,
                RenditionKind::Audio if self.follow => SegmentMode::Follow,
                RenditionKind::Audio => SegmentMode::Grid,
            },
            follow_wait: codec::duration_to_ticks_floor(FOLLOW_WAIT, timescale),
        }
    }

    /// Video: the first sample at or after `pts_ns` starts a segment, keyframe or not (the
    /// ingest's grid for a source whose keyframes are too far apart; see `crate::cutter`).
    /// Ignored before the track is configured.
    pub fn cut_at_ns(&mut self, pts_ns: u64) {
        if self.plan.kind != RenditionKind::Video {
            return;
        }
        if let (Some(c), Some(cutter)) = (&self.codec, self.cutter.as_mut()) {
            cutter.cut_at(codec::ns_to_ticks(pts_ns, c.timescale));
        }
    }

    /// Audio: follow the stream's video boundaries (or not, when the plan has no video). Takes
    /// effect at the next segment start after a flush.
    pub fn set_follow(&mut self, follow: bool) {
        let follow = follow && self.plan.kind == RenditionKind::Audio;
        if follow != self.follow {
            self.follow = follow;
            if let Some(c) = &self.codec {
                if self.open.is_none() && self.pending.is_none() && self.held.is_empty() {
                    self.cutter = Some(Cutter::new(self.cutter_config(c.timescale)));
                }
            }
        }
    }

    /// Add one sample. Non-keyframes before the first keyframe are dropped silently.
    pub fn push(
        &mut self,
        sample: Sample,
        tl: &mut Timeline,
        now: Instant,
    ) -> Result<Published, PackagerError> {
        if self.state == TrackState::Ended {
            return Err(PackagerError::SessionEnded);
        }
        let timescale = match &self.codec {
            Some(c) => c.timescale,
            None => return Err(PackagerError::NotConfigured(self.plan.name.clone())),
        };
        self.state = TrackState::Live;
        let dts = codec::ns_to_ticks(sample.dts_ns, timescale);
        let pts = codec::ns_to_ticks(sample.pts_ns, timescale);
        let mut published = Published::default();
        if let Some(prev) = &self.pending {
            let max_step = codec::duration_to_ticks_floor(MAX_SAMPLE_DURATION, timescale);
            let jump = if dts < prev.dts {
                Some(Jump::Backward)
            } else if dts - prev.dts > max_step {
                Some(Jump::Forward)
            } else {
                None
            };
            if dts == prev.dts {
                published.dropped = 1;
                return Ok(published);
            }
            if let Some(jump) = jump {
                tracing::warn!(
                    rendition = %self.plan.name,
                    direction = jump.as_str(),
                    dts_ns = sample.dts_ns,
                    previous_ns = prev.dts_ns,
                    "timestamp jump: the next segment follows a discontinuity"
                );
                published.merge(self.flush(tl, now)?);
                published.jumps.push(jump);
                if self.parts_total > 0 || !self.segments.is_empty() {
                    self.pending_discontinuity = true;
                }
                self.clock = None;
            } else if let Some(prev) = self.pending.take() {
                let step = dts - prev.dts;
                let (duration, fill) =
                    self.audio_gap_fill(&prev, step, sample.arrival.unwrap_or(now));
                published.filled += u32::try_from(fill.len()).unwrap_or(u32::MAX);
                let mut chain = std::iter::once((prev, duration)).chain(fill).peekable();
                while let Some((s, duration)) = chain.next() {
                    let (next_pts, next_pts_ns, keyframe) = match chain.peek() {
                        Some((n, _)) => (n.pts, n.pts_ns, n.keyframe),
                        None => (pts, sample.pts_ns, sample.keyframe),
                    };
                    let next = Lookahead {
                        pts: next_pts,
                        keyframe,
                        gap: false,
                        // Follow mode: set when the sample is released.
                        settled: true,
                    };
                    if self.follow {
                        self.held.push_back(Held {
                            sample: s,
                            duration,
                            next,
                            next_pts_ns,
                        });
                    } else {
                        published.merge(self.feed(s, duration, Some(next), tl, now)?);
                    }
                }
                if self.follow {
                    published.merge(self.release(tl, now)?);
                }
            }
        }
        self.pending = Some(Pending {
            dts,
            pts,
            pts_ns: sample.pts_ns,
            dts_ns: sample.dts_ns,
            keyframe: sample.keyframe,
            gap_before: false,
            data: match self.codec.as_ref().map(|c| &c.config) {
                Some(CodecConfig::Av1 { .. }) => codec::av1_sample(sample.data),
                _ => sample.data,
            },
            arrival: sample.arrival,
            received: now,
        });
        // The video has got this far (not only as far as the samples it placed, one frame
        // less): audio that follows it may place what lies well before (see `release`).
        if self.plan.kind == RenditionKind::Video {
            let arrival = tl.wall_ns(sample.arrival.unwrap_or(now));
            if let Some(f) = self.video_frontier_ns(sample.pts_ns, arrival) {
                tl.advance_video(f);
            }
        }
        Ok(published)
    }

    /// Video: the earliest wall-clock time (this track's clock) a segment boundary it has not
    /// opened yet can have, now that its newest sample (`pts_ns`, arrived at `arrival_ns`) is
    /// pending: `pts + offset_now`, where `offset_now` is the offset the clock would take if
    /// this sample opened a segment ([`TrackClock::next_offset`]). `None` before the clock is
    /// set (the first segment, or after a jump).
    ///
    /// Why no later boundary is earlier: it is opened by a keyframe K, this sample or a later
    /// one, whose PTS is not below this sample's nor below that of any frame decoded before it
    /// (a keyframe is presented after every frame decoded before it), at `K.pts + offset'`.
    /// If no frame up to K lowers the smallest `arrival - pts`, `offset' = offset_now`. If a
    /// frame X does, `offset'` is X's `arrival - pts`, or the lowest the slew allows, which
    /// is `offset_now`'s lowest too. In the first case `K.pts + offset' >= X.arrival`, which is
    /// not before this sample's arrival (frames arrive in decode order), and this sample's
    /// `pts + offset_now` is not after its arrival unless the slew's floor raised
    /// `offset_now`, when the second case holds. A unit test checks it over wandering delays
    /// (`no_boundary_opens_before_a_frontier_the_video_reported`). The audio used to wait for
    /// this sample's PTS on the clock's current offset less the whole slew: while the delays
    /// are steady, this is about 50 ms sooner.
    fn video_frontier_ns(&self, pts_ns: u64, arrival_ns: u64) -> Option<u64> {
        let c = self.clock?;
        let delta = i128::from(arrival_ns) - i128::from(pts_ns);
        let frontier = i128::from(pts_ns) + c.next_offset(delta);
        u64::try_from(frontier.clamp(0, i128::from(u64::MAX))).ok()
    }

    /// Whether samples are held back for the video (see [`Track::release`]).
    pub fn holds_samples(&self) -> bool {
        !self.held.is_empty()
    }

    /// Audio that follows the video: place the held samples whose successor the video has
    /// passed (so the boundary starting or ending their segment is known: the audio cuts at the
    /// first frame at or after the video's cut, on the same clock), and the oldest ones past
    /// [`MAX_FOLLOW_HOLD`]. Called after each push of this track and whenever a video rendition
    /// of the stream advanced.
    ///
    /// Why: the ingest hands audio on as it is demuxed while the video waits in a queue (more
    /// so when RTMP or SRT deliver a burst), so the audio used to run past the video's next
    /// boundary before the video opened it, and ended its segment where it was then: its
    /// segment N started and ended later than the video's by a varying amount, and its EXTINF
    /// disagreed with the PDT step it shares with the video.
    pub fn release(&mut self, tl: &mut Timeline, now: Instant) -> Result<Published, PackagerError> {
        let mut published = Published::default();
        let ts = self.codec.as_ref().map_or(1, |c| c.timescale);
        let max_hold = codec::duration_to_ticks_floor(MAX_FOLLOW_HOLD, ts);
        while let Some(h) = self.held.front() {
            let span = self
                .held
                .back()
                .map_or(0, |b| b.next.pts.saturating_sub(h.sample.pts));
            // Whether the video is past `pts_ns` (ns of our media), on our own wall clock,
            // mapped as `feed` will map the boundary.
            let offset = self.clock.map_or_else(
                || {
                    let arrival = tl.wall_ns(h.sample.arrival.unwrap_or(h.sample.received));
                    i128::from(arrival) - i128::from(h.sample.pts_ns)
                },
                |c| c.offset,
            );
            let past = |pts_ns: u64| {
                tl.video_frontier().is_some_and(|frontier| {
                    i128::from(pts_ns) + offset + i128::from(FOLLOW_HOLD_MARGIN_NS)
                        < i128::from(frontier)
                })
            };
            // Past the successor: the cutter decides where this sample's part and segment end.
            // Past this sample only: it decides where the sample goes and may close a full
            // part, leaving to the successor whether the segment ends (`End::PartUndecided`).
            let settled = span >= max_hold || past(h.next_pts_ns);
            if !settled && !past(h.sample.pts_ns) {
                break;
            }
            if let Some(h) = self.held.pop_front() {
                let next = Lookahead { settled, ..h.next };
                published.merge(self.feed(h.sample, h.duration, Some(next), tl, now)?);
            }
        }
        Ok(published)
    }

    /// Silence for a hole in AAC audio. A DTS step of more than [`AUDIO_GAP_FRAMES`] frames
    /// means frames went missing upstream (SRT drops a packet that comes too late, and the
    /// demuxer drops the PES it belonged to whole); placed as it is, the sample before the
    /// hole would carry the hole as its own duration, which decoders refuse (Chrome fails the
    /// whole playback on a 192 ms AAC frame) and which makes a short part in the middle of a
    /// segment. So the sample before the hole keeps one frame's duration and the hole is
    /// filled with silent frames (or, for a layout without a known silent frame, copies of the
    /// last frame) of one frame each, the last one taking the remainder. Returns the duration
    /// of `prev` and the fillers with theirs; no fillers for a step that is no hole.
    fn audio_gap_fill(
        &self,
        prev: &Pending,
        step: u64,
        arrival: Instant,
    ) -> (u64, Vec<(Pending, u64)>) {
        let (ts, channels, aot) = match self.codec.as_ref().map(|c| (c.timescale, &c.config)) {
            Some((ts, CodecConfig::Aac { asc, channels, .. })) => {
                (ts, *channels, codec::aac_object_type(asc))
            }
            _ => return (step, Vec::new()),
        };
        let frame = self.fallback_duration();
        if step * 2 <= frame * (2 * AUDIO_GAP_FRAMES + 1) {
            return (step, Vec::new());
        }
        let silent: Bytes = match (aot, channels) {
            (Some(AAC_LC), 1) => Bytes::from_static(&AAC_LC_SILENT_MONO),
            (Some(AAC_LC), 2) => Bytes::from_static(&AAC_LC_SILENT_STEREO),
            _ => prev.data.clone(),
        };
        // Rounded: a step of n frames and a little jitter is n - 1 fillers.
        let count = (step + frame / 2) / frame - 1;
        let mut fill = Vec::new();
        for i in 1..=count {
            let at = prev.dts + i * frame;
            let offset_ns = |ticks: u64| codec::ticks_to_ns(ticks, ts);
            let duration = if i == count {
                step - count * frame
            } else {
                frame
            };
            fill.push((
                Pending {
                    dts: at,
                    pts: prev.pts + i * frame,
                    pts_ns: prev.pts_ns.saturating_add(offset_ns(i * frame)),
                    dts_ns: prev.dts_ns.saturating_add(offset_ns(i * frame)),
                    keyframe: true,
                    gap_before: false,
                    data: silent.clone(),
                    // The arrival of the frame after the hole: later than any of the missing
                    // frames would have arrived, so the track's clock (the least delay seen)
                    // is not pulled early by frames that never arrived.
                    arrival: Some(arrival),
                    received: arrival,
                },
                duration,
            ));
        }
        (frame, fill)
    }

    fn fallback_duration(&self) -> u64 {
        if self.last_duration > 0 {
            return self.last_duration;
        }
        match &self.codec {
            Some(c) if self.plan.kind == RenditionKind::Audio => {
                AAC_FRAME_SAMPLES.min(u64::from(c.timescale))
            }
            Some(c) => match c.config.picture().and_then(|p| p.framerate) {
                Some((num, den)) if num > 0 => {
                    u64::from(c.timescale) * u64::from(den) / u64::from(num)
                }
                _ => u64::from(c.timescale / FALLBACK_FRAME_RATE),
            },
            None => 1,
        }
        .max(1)
    }

    /// Place one sample with a known duration.
    fn feed(
        &mut self,
        s: Pending,
        duration: u64,
        next: Option<Lookahead>,
        tl: &mut Timeline,
        now: Instant,
    ) -> Result<Published, PackagerError> {
        let mut published = Published::default();
        let ts = self.codec.as_ref().map_or(1, |c| c.timescale);
        let arrival_ns = tl.wall_ns(s.arrival.unwrap_or(s.received));
        let delta = i128::from(arrival_ns) - i128::from(s.pts_ns);
        // The offset the video's boundary is mapped through to this track's PTS.
        let cut_offset = self.clock.map_or(delta, |c| c.offset);
        if self.follow {
            let offset = cut_offset;
            // After a timestamp jump, a boundary the video set before its own jump (it opened
            // segment N just before the jump reached it) holds no media of ours: start N at
            // once; the video's discontinuity comes at N+1, which we follow.
            let b = tl.boundary(self.next_msn);
            self.stale_boundary = self.pending_discontinuity && b.is_some_and(|b| !b.discontinuity);
            let correction = i128::from(tl.correction_ns());
            let boundary = b.filter(|_| !self.stale_boundary).map(|b| {
                // On our own clock: without what `Timeline::open` added for a floor.
                let own = i128::from(b.wall_ns) - correction;
                let clock = own - offset;
                // Never before the boundary in media time either, where the two agree (see
                // FOLLOW_MEDIA_AGREEMENT_NS): the segment's PDT is placed by the media time
                // (`open_segment`), and a cut made on the clock alone could land up to the cut
                // tolerance plus their difference before the video's first frame (13 ms was
                // seen). Later than the clock's boundary only, so the video's frontier, a
                // bound on the clock's boundaries, still bounds this one.
                let media = i128::from(b.media_ns);
                let ns = if (media - clock).abs() <= FOLLOW_MEDIA_AGREEMENT_NS {
                    clock.max(media)
                } else {
                    clock
                };
                let ns = ns.clamp(0, i128::from(u64::MAX));
                codec::ns_to_ticks(u64::try_from(ns).unwrap_or(u64::MAX), ts)
            });
            let boundary = if self.stale_boundary {
                Some(0)
            } else {
                boundary
            };
            // Where the video's parts of our open segment start, on our PTS.
            let origin = self
                .follow_origin
                .filter(|o| self.open.as_ref().is_some_and(|s| s.msn == o.msn));
            let parts = origin.into_iter().flat_map(|o| {
                tl.video_parts(o.msn).iter().map(move |off| {
                    let ns = (i128::from(*off) - o.lead_ns).clamp(0, i128::from(u64::MAX));
                    let ns = u64::try_from(ns).unwrap_or(u64::MAX);
                    o.first_pts.saturating_add(codec::ns_to_ticks(ns, ts))
                })
            });
            if let Some(c) = self.cutter.as_mut() {
                c.set_boundary(boundary);
                c.set_part_boundaries(parts);
            }
        }
        let cut = CutSample {
            pts: s.pts,
            duration,
            keyframe: s.keyframe,
            gap_before: s.gap_before,
        };
        let placement = match self.cutter.as_mut() {
            Some(c) => c.push(&cut, next),
            None => return Err(PackagerError::NotConfigured(self.plan.name.clone())),
        };
        let (start, end) = match placement {
            Placement::Drop => return Ok(published),
            Placement::Add { start, end } => (start, end),
        };
        // The cutter has decided where the last closed part's segment ends: list it (a new
        // part or segment starts here, so nothing is added to it).
        if std::mem::take(&mut self.unlisted) {
            published.listed += 1;
        }
        self.last_duration = duration;
        match start {
            Start::Segment => {
                published.merge(self.close_part(now)?);
                published.merge(self.close_segment());
                // Follow the least-delayed arrival, but move by at most MAX_PDT_SLEW_NS per
                // segment, so PDT(n+1) - PDT(n) stays within the slew of EXTINF(n) (a burst at
                // start or a late segment would otherwise show as a PDT step players distrust)
                // while PDT converges to arrival within a few segments.
                // Audio that starts following the video (first segment, or after a jump) at a
                // video boundary: its first sample is at that boundary's PDT, which is what the
                // playlist will say. Its own arrival only bounds the offset from above (delays
                // only add), and a first arrival delayed in a burst would otherwise put the next
                // boundary a burst early in its media, so segment N's EXTINF would disagree with
                // the PDT step.
                let followed = tl
                    .boundary(self.next_msn)
                    .filter(|_| self.follow && !self.stale_boundary);
                let anchor = followed.map(|b| {
                    i128::from(b.wall_ns) - i128::from(tl.correction_ns()) - i128::from(s.pts_ns)
                });
                // Audio that follows the video starts segment N at its first sample at or after
                // the video's boundary: up to a frame or two after it (a late boundary ends N
                // with one more frame), or up to the cut tolerance before it. Its PDT is the
                // boundary's moved by that distance, so it is its own first sample's (RFC
                // 8216bis 4.4.4.6): a player that places the audio playlist by PDT (hls.js)
                // then expects exactly the media it gets. Carrying the video's PDT instead put
                // the audio's parts up to 20 ms away from their media, and hls.js, finding its
                // buffer end short of the part it had just loaded, sometimes loaded no more
                // audio until the window slid (a stall 1.5 s after joining).
                // The distance is taken in media time, from the video's first sample of N to
                // ours: the renditions of a stream share their media time base, and a player
                // places both tracks' media by it, so PDT(audio N) - PDT(video N) is then what
                // the player finds between the two tracks' media. On this track's clock (the
                // way the boundary was mapped to our PTS) the distance also carries the
                // difference between the audio's and the video's least transport delay: a few
                // ms that made the audio playlist's times disagree with its media by as much.
                // Only while the two distances agree ([`FOLLOW_MEDIA_AGREEMENT_NS`]); else the
                // clock's, which in the first segment is 0 (its first sample anchors this
                // track's clock at the boundary).
                let clock_lead = anchor
                    .map(|a| {
                        if self.clock.is_some() {
                            cut_offset - a
                        } else {
                            0
                        }
                    })
                    .filter(|l| l.abs() <= MAX_FOLLOW_LEAD_NS);
                let media_lead = followed
                    .map(|b| i128::from(s.pts_ns) - i128::from(b.media_ns))
                    .filter(|l| l.abs() <= MAX_FOLLOW_LEAD_NS);
                let lead_ns = match (media_lead, clock_lead) {
                    (Some(m), Some(c)) if (m - c).abs() <= FOLLOW_MEDIA_AGREEMENT_NS => Some(m),
                    (_, c) => c,
                };
                let offset = match self.clock {
                    None => anchor.map_or(delta, |a| a.min(delta)),
                    Some(c) => c.next_offset(delta),
                };
                self.clock = Some(TrackClock {
                    offset,
                    window_min: delta,
                });
                // The video's part starts are placed in media time, where a player places both
                // tracks' media, whenever the two share a base (even where the PDT keeps the
                // clock's distance).
                self.follow_origin =
                    followed
                        .zip(media_lead.or(lead_ns))
                        .map(|(_, lead_ns)| FollowOrigin {
                            msn: self.next_msn,
                            first_pts: s.pts,
                            lead_ns,
                        });
                let own = (i128::from(s.pts_ns) + offset).clamp(0, i128::from(u64::MAX));
                self.open_segment(
                    u64::try_from(own).unwrap_or(u64::MAX),
                    s.pts_ns,
                    lead_ns,
                    tl,
                );
                if !s.keyframe && self.plan.kind == RenditionKind::Video {
                    published.forced_cuts += 1;
                }
            }
            Start::Part | Start::Continue => {
                if let Some(c) = self.clock.as_mut() {
                    c.window_min = c.window_min.min(delta);
                }
                if start == Start::Part {
                    published.merge(self.close_part(now)?);
                    self.report_part_start(tl);
                }
            }
        }
        // Where a player may start. Every audio frame is a sync sample, but an audio part is
        // marked INDEPENDENT only where its segment starts, as the video's is: a player then
        // loads both tracks of a segment from its first part. hls.js 1.7 joins the audio at
        // whichever independent part holds its start position, and when part N.0 was never
        // loaded it does not move on to segment N+1 unless the audio it buffered reaches the
        // end it computes for N, so a millisecond short of it stalled the audio (1 join in 20).
        let first_of_segment = self.open.as_ref().is_some_and(|o| o.parts.is_empty());
        let independent =
            s.keyframe && (self.plan.kind == RenditionKind::Video || first_of_segment);
        let b = self.building.get_or_insert_with(|| PartBuilder {
            base_dts: s.dts,
            duration: 0,
            independent,
            samples: Vec::new(),
            payload: Vec::new(),
            arrivals: Vec::new(),
        });
        let cts =
            i64::try_from(s.pts).unwrap_or(i64::MAX) - i64::try_from(s.dts).unwrap_or(i64::MAX);
        b.samples.push(FragSample {
            duration: u32::try_from(duration).unwrap_or(u32::MAX),
            size: u32::try_from(s.data.len()).unwrap_or(u32::MAX),
            keyframe: s.keyframe,
            cts: i32::try_from(cts).unwrap_or(if cts < 0 { i32::MIN } else { i32::MAX }),
        });
        b.payload.push(s.data);
        b.duration += duration;
        b.arrivals.extend(s.arrival);
        match end {
            End::Segment => {
                published.merge(self.close_part(now)?);
                published.merge(self.close_segment());
            }
            End::Part => {
                published.merge(self.close_part(now)?);
                self.report_part_start(tl);
            }
            End::PartUndecided => {
                published.merge(self.close_part(now)?);
                self.unlisted = true;
                self.report_part_start(tl);
            }
            End::Open => {}
        }
        Ok(published)
    }

    /// Video: the open segment's next part starts where its parts so far end; audio that
    /// follows the video ends its part there too (`crate::cutter`).
    fn report_part_start(&self, tl: &mut Timeline) {
        if self.plan.kind != RenditionKind::Video {
            return;
        }
        let (Some(open), Some(c)) = (self.open.as_ref(), self.codec.as_ref()) else {
            return;
        };
        // Another rendition's report of the same part lies within a frame; half a part target
        // tells them apart from the next part's.
        let min_step = u64::try_from(self.cfg.part_target.as_nanos() / 2).unwrap_or(u64::MAX);
        tl.video_part(
            open.msn,
            codec::ticks_to_ns(open.duration, c.timescale),
            min_step,
        );
    }

    /// Opens the next segment, whose first sample maps to `own_ns` on this track's clock.
    /// `follow_lead_ns`: audio following the video, how far (ns of its media) that sample lies
    /// past the video's boundary, added to the boundary's PDT.
    fn open_segment(
        &mut self,
        own_ns: u64,
        media_ns: u64,
        follow_lead_ns: Option<i128>,
        tl: &mut Timeline,
    ) {
        let msn = self.next_msn;
        self.next_msn += 1;
        let mut pdt = tl.open(
            msn,
            own_ns,
            media_ns,
            self.plan.kind == RenditionKind::Video,
            self.pending_discontinuity,
        );
        if let Some(lead) = follow_lead_ns {
            let moved = (i128::from(pdt) + lead).clamp(0, i128::from(u64::MAX));
            pdt = u64::try_from(moved).unwrap_or(pdt);
        }
        // A stale boundary's PDT is kept when our first post-jump sample came within a part of
        // it (PDT(N) stays the same in every rendition), not after a pause in arrivals.
        let part_ns = u64::try_from(self.cfg.part_target.as_nanos()).unwrap_or(u64::MAX);
        if std::mem::take(&mut self.stale_boundary) && own_ns.abs_diff(pdt) > part_ns {
            // Not past the video's next (post-jump) segment, which we follow next.
            let next = tl
                .boundary(msn + 1)
                .map(|b| b.wall_ns.saturating_sub(MIN_PDT_STEP_NS));
            pdt = next.map_or(own_ns, |n| own_ns.min(n));
        }
        if let Some(last) = self.last_pdt_ns {
            pdt = pdt.max(last.saturating_add(MIN_PDT_STEP_NS));
        }
        self.last_pdt_ns = Some(pdt);
        self.open = Some(Segment {
            msn,
            parts: Vec::new(),
            duration: 0,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
            init_id: self.current_init.unwrap_or(0),
            pdt: Some(timeline::system_time(pdt)),
            gap_ns: None,
        });
    }

    fn close_part(&mut self, now: Instant) -> Result<Published, PackagerError> {
        let mut published = Published::default();
        let Some(b) = self.building.take() else {
            return Ok(published);
        };
        let Some(open) = self.open.as_mut() else {
            return Ok(published);
        };
        self.fragment_sequence = self.fragment_sequence.wrapping_add(1);
        let data = fmp4::fragment(
            self.fragment_sequence,
            b.base_dts,
            &b.samples,
            &b.payload,
            self.plan.kind == RenditionKind::Video,
        )?;
        published.latencies = b
            .arrivals
            .iter()
            .map(|a| now.saturating_duration_since(*a))
            .collect();
        open.parts.push(Part {
            duration: b.duration,
            independent: b.independent,
            arrivals: b.arrivals.into_boxed_slice(),
            data,
        });
        open.duration += b.duration;
        self.parts_total += 1;
        published.parts = 1;
        Ok(published)
    }

    fn close_segment(&mut self) -> Published {
        let mut published = Published::default();
        if std::mem::take(&mut self.unlisted) {
            published.listed += 1;
        }
        let Some(seg) = self.open.take() else {
            return published;
        };
        if seg.parts.is_empty() {
            // Nothing was published under this number; reuse it.
            self.next_msn = seg.msn;
            self.pending_discontinuity |= seg.discontinuity;
            return published;
        }
        // A segment is not copied into a buffer of its own: it is served as its parts back to
        // back (`Track::segment`), which saves a copy and a large allocation per segment.
        let len = seg.len();
        let ts = self.timescale();
        if seg.duration.saturating_mul(2) >= self.cfg.segment_target.as_secs() * ts {
            if let Some(rate) = (len * 8 * ts).checked_div(seg.duration) {
                self.peak_bps = self.peak_bps.max(rate);
            }
        }
        // Requests wait for the newest parts only: the arrivals of older segments go.
        if let Some(older) = self.segments.back_mut() {
            for p in &mut older.parts {
                p.arrivals = Box::default();
            }
        }
        self.segments.push_back(seg);
        published.segments = 1;
        self.slide_window();
        published
    }

    fn slide_window(&mut self) {
        let keep = self.cfg.window_segments.max(1);
        let min_ticks = self.target_duration() * PART_LIST_TARGET_DURATIONS * self.timescale();
        while self.segments.len() > keep {
            let total: u64 = self.segments.iter().map(|s| s.duration).sum();
            let front = self.segments.front().map_or(0, |s| s.duration);
            // The spec wants at least three target durations of segments in a live playlist.
            if total.saturating_sub(front) < min_ticks {
                break;
            }
            if let Some(old) = self.segments.pop_front() {
                if old.discontinuity {
                    self.discontinuity_sequence += 1;
                }
                self.retired.push_back(old);
            }
        }
        while self.retired.len() > self.segments.len() + RETIRED_EXTRA {
            self.retired.pop_front();
        }
        self.prune_inits();
    }

    fn prune_inits(&mut self) {
        let oldest = self
            .segments
            .iter()
            .chain(self.retired.iter())
            .chain(self.open.iter())
            .map(|s| s.init_id)
            .chain(self.current_init)
            .min();
        if let Some(oldest) = oldest {
            self.inits.retain(|(id, _)| *id >= oldest);
        }
    }

    fn timescale(&self) -> u64 {
        self.codec.as_ref().map_or(1, |c| u64::from(c.timescale))
    }

    /// The pending sample, part and segment become final (the publisher left or the codec changed).
    pub fn flush(&mut self, tl: &mut Timeline, now: Instant) -> Result<Published, PackagerError> {
        let mut published = Published::default();
        while let Some(h) = self.held.pop_front() {
            published.merge(self.feed(h.sample, h.duration, Some(h.next), tl, now)?);
        }
        if let Some(p) = self.pending.take() {
            let duration = self.fallback_duration();
            published.merge(self.feed(p, duration, None, tl, now)?);
        }
        published.merge(self.close_part(now)?);
        published.merge(self.close_segment());
        if let Some(c) = self.cutter.as_mut() {
            c.reset();
        }
        Ok(published)
    }

    /// The publisher left: flush; the playlist stays live for a reconnect.
    pub fn end_session(
        &mut self,
        tl: &mut Timeline,
        now: Instant,
    ) -> Result<Published, PackagerError> {
        let published = self.flush(tl, now);
        if self.state == TrackState::Live {
            self.state = TrackState::Idle;
        }
        // The grid was the publisher's (its pipeline's): the next one decides its own.
        if let Some(c) = self.cutter.as_mut() {
            c.clear_orders();
        }
        published
    }

    /// A new publisher continues this track: the next segment follows a discontinuity.
    pub fn begin_session(
        &mut self,
        tl: &mut Timeline,
        now: Instant,
    ) -> Result<Published, PackagerError> {
        let published = self.flush(tl, now);
        if self.state != TrackState::Ended {
            self.state = TrackState::Live;
        }
        if self.parts_total > 0 || !self.segments.is_empty() {
            self.pending_discontinuity = true;
        }
        self.clock = None;
        published
    }

    /// Number the next segment at least `msn` (renditions of a stream restart aligned after a
    /// reconnect). Only between segments, so no published hint is contradicted mid-segment.
    /// The numbers skipped are listed as EXT-X-GAP segments, each with the PDT the stream's
    /// other renditions gave that number (or following this track's last segment) and lasting
    /// until the next, at most a target duration.
    pub fn align_msn(&mut self, msn: u64, tl: &Timeline) {
        if self.open.is_some() || self.pending.is_some() || !self.held.is_empty() {
            return;
        }
        if self.segments.is_empty() {
            // Nothing listed yet that a gap would follow: just start there.
            self.next_msn = self.next_msn.max(msn);
            return;
        }
        let target_ns = u64::try_from(self.cfg.segment_target.as_nanos()).unwrap_or(u64::MAX);
        let first = msn.saturating_sub(MAX_GAP_SEGMENTS).max(self.next_msn);
        self.next_msn = first;
        let mut pdt = self.pdt_end_ns().unwrap_or(0);
        for m in first..msn {
            if let Some(b) = tl.boundary(m) {
                pdt = b.wall_ns;
            }
            let next = tl
                .boundary(m + 1)
                .map(|b| b.wall_ns)
                .filter(|n| *n > pdt && n - pdt <= target_ns);
            let duration = next.map_or(target_ns, |n| n - pdt);
            self.push_gap(pdt, duration);
            pdt = pdt.saturating_add(duration);
        }
    }

    /// End of the last segment on the wall clock (ns since the UNIX epoch), if any.
    pub fn pdt_end_ns(&self) -> Option<u64> {
        let seg = self.open.as_ref().or(self.segments.back())?;
        self.end_ns(seg, seg.parts.len())
    }

    /// Where the last part the playlist lists ends on the wall clock (ns since the UNIX epoch):
    /// the open segment while it lists a part, else the last complete one.
    pub fn listed_end_ns(&self) -> Option<u64> {
        match self.open.as_ref() {
            Some(o) if self.listed_parts(o) > 0 => self.end_ns(o, self.listed_parts(o)),
            _ => self
                .segments
                .back()
                .and_then(|s| self.end_ns(s, s.parts.len())),
        }
    }

    /// Where the first `parts` parts of `seg` end on the wall clock: its PDT plus their
    /// durations (a gap segment: its length).
    fn end_ns(&self, seg: &Segment, parts: usize) -> Option<u64> {
        let start = seg.pdt?.duration_since(std::time::UNIX_EPOCH).ok()?;
        let len = match seg.gap_ns {
            Some(ns) => ns,
            None => {
                let ticks: u64 = seg.parts.iter().take(parts).map(|p| p.duration).sum();
                codec::ticks_to_ns(ticks, self.codec.as_ref().map_or(1, |c| c.timescale))
            }
        };
        u64::try_from(start.as_nanos()).ok()?.checked_add(len)
    }

    /// EXT-X-ENDLIST: flush and stop accepting samples.
    pub fn finish(&mut self, tl: &mut Timeline, now: Instant) -> Result<Published, PackagerError> {
        let published = self.flush(tl, now);
        self.state = TrackState::Ended;
        published
    }

    /// EXT-X-TARGETDURATION: ceil(segment target), fixed for the life of the track.
    pub fn target_duration(&self) -> u64 {
        let base = self.cfg.segment_target.as_secs()
            + u64::from(self.cfg.segment_target.subsec_nanos() > 0);
        base.max(1)
    }

    /// (msn, part index) of the last part the playlist lists (gap segments have none).
    pub fn last_part(&self) -> Option<(u64, u32)> {
        let (msn, listed) = self
            .open
            .iter()
            .map(|o| (o.msn, self.listed_parts(o)))
            .chain(self.segments.iter().rev().map(|s| (s.msn, s.parts.len())))
            .find(|(_, n)| *n > 0)?;
        Some((msn, u32::try_from(listed - 1).unwrap_or(u32::MAX)))
    }

    /// How many of the open segment's parts the playlist lists (all but an unlisted one).
    fn listed_parts(&self, open: &Segment) -> usize {
        open.parts.len() - usize::from(self.unlisted && !open.parts.is_empty())
    }

    /// Where a player that starts PART-HOLD-BACK behind the newest listed part (hls.js's start
    /// position) starts: how far that position lies past the start of the independent part a
    /// player must load from to reach it. `None` when no listed independent part lies at or
    /// before it.
    pub fn join_distance(&self) -> Option<Duration> {
        let ts = self.timescale();
        let hold_back = (self.part_hold_back() * ts as f64).ceil() as u64;
        let open = self
            .open
            .iter()
            .flat_map(|o| o.parts[..self.listed_parts(o)].iter().rev());
        let closed = self
            .segments
            .iter()
            .rev()
            .flat_map(|s| s.parts.iter().rev());
        // Newest first: `back` is how far the part at hand starts before the edge. The first
        // independent one starting at or before the position is where a player loads from.
        let mut back = 0u64;
        for p in open.chain(closed) {
            back += p.duration;
            if back >= hold_back && p.independent {
                return Some(Duration::from_secs_f64(
                    (back - hold_back) as f64 / ts.max(1) as f64,
                ));
            }
        }
        None
    }

    /// PART-HOLD-BACK as served, in seconds: `part_hold_back_parts` of the stream's part
    /// target, the same in every rendition (a player that reads it from whichever playlist it
    /// parsed last, as Shaka Player does, then holds back the same in every case), but never
    /// below twice this rendition's own PART-TARGET (RFC 8216bis; an audio rendition's is a
    /// little longer, see [`Track::configure`]).
    pub fn part_hold_back(&self) -> f64 {
        let stream = crate::playlist::part_hold_back(
            self.cfg.part_target.as_secs_f64(),
            self.cfg.part_hold_back_parts,
        );
        stream.max(crate::playlist::part_hold_back(
            self.part_target().as_secs_f64(),
            2,
        ))
    }

    /// The longest a part may take, served as PART-TARGET: the configured part target, or for
    /// audio the whole frames that may fall in one (see [`Track::configure`]).
    pub fn part_target(&self) -> Duration {
        self.audio_part_target.unwrap_or(self.cfg.part_target)
    }

    /// Whether this audio track's parts can end where the video's do: a part one AAC frame
    /// short of the whole frames in its PART-TARGET still lasts `cutter::MIN_PART_PERCENT` of
    /// it (seven frames or more: 200 ms parts and up at 48 kHz). Below that its parts mostly end
    /// by length (README, "Latency") and need not end near the video's. False for video.
    pub fn parts_follow_video(&self) -> bool {
        let Some(c) = self
            .codec
            .as_ref()
            .filter(|_| self.audio_part_target.is_some())
        else {
            return false;
        };
        let frame_ns = u128::from(aac_frame_ns(c));
        let target_ns = self.part_target().as_nanos();
        let frames = target_ns / frame_ns;
        frames.saturating_sub(1) * frame_ns * 100
            >= u128::from(crate::cutter::MIN_PART_PERCENT) * target_ns
    }

    /// Media sequence number of the last complete segment.
    pub fn last_complete_msn(&self) -> Option<u64> {
        self.segments.back().map(|s| s.msn)
    }

    /// Where the next part will be, if it will continue this playlist without a discontinuity.
    pub fn next_part_position(&self) -> Option<(u64, u32)> {
        if self.state == TrackState::Ended || self.codec.is_none() {
            return None;
        }
        match &self.open {
            Some(o) => Some((
                o.msn,
                u32::try_from(self.listed_parts(o)).unwrap_or(u32::MAX),
            )),
            None => Some((self.next_msn, 0)),
        }
    }

    fn find_segment(&self, msn: u64) -> Option<&Segment> {
        let in_window = self.segments.front().and_then(|f| {
            let idx = usize::try_from(msn.checked_sub(f.msn)?).ok()?;
            self.segments.get(idx).filter(|s| s.msn == msn)
        });
        in_window.or_else(|| self.retired.iter().rev().find(|s| s.msn == msn))
    }

    /// Bytes of a published part.
    pub fn part(&self, msn: u64, index: u32) -> Option<Bytes> {
        Some(self.find_part(msn, index)?.data.clone())
    }

    /// Part `index` of segment `msn`, open or complete.
    fn find_part(&self, msn: u64, index: u32) -> Option<&Part> {
        let seg = match &self.open {
            Some(o) if o.msn == msn => o,
            _ => self.find_segment(msn)?,
        };
        seg.parts.get(usize::try_from(index).ok()?)
    }

    /// When the frames of part `index` of segment `msn` arrived (see [`Part::arrivals`]).
    pub fn part_arrivals(&self, msn: u64, index: u32) -> Option<&[Instant]> {
        Some(&self.find_part(msn, index)?.arrivals)
    }

    /// A complete segment (not an EXT-X-GAP one): its parts, which served back to back are its
    /// bytes.
    pub fn segment(&self, msn: u64) -> Option<Vec<Bytes>> {
        let seg = self.find_segment(msn)?;
        seg.gap_ns
            .is_none()
            .then(|| seg.parts.iter().map(|p| p.data.clone()).collect())
    }

    /// Bytes of an init version.
    pub fn init(&self, id: u32) -> Option<Bytes> {
        self.inits
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, b)| b.clone())
    }

    /// Peak bit rate since the track began (segments of at least half the target; the window's
    /// peak until there is one) and average bit rate over the complete segments in the window.
    pub fn measured_bitrate(&self) -> Option<(u64, u64)> {
        let ts = self.timescale();
        let mut peak = 0u64;
        let (mut bytes, mut ticks) = (0u64, 0u64);
        for s in self.segments.iter().filter(|s| s.gap_ns.is_none()) {
            let len = s.len();
            if let Some(rate) = (len * 8 * ts).checked_div(s.duration) {
                peak = peak.max(rate);
            }
            bytes += len;
            ticks += s.duration;
        }
        let peak = if self.peak_bps > 0 {
            self.peak_bps
        } else {
            peak
        };
        (ticks > 0).then(|| (peak, bytes * 8 * ts / ticks))
    }

    /// A plain view of the playlist for the renderer.
    pub fn playlist(&self, reports: Vec<RenditionReport>) -> MediaPlaylist {
        let ts = self.codec.as_ref().map_or(1, |c| c.timescale);
        let entry = |s: &Segment, complete: bool, listed: usize| SegmentEntry {
            msn: s.msn,
            uri: format!("seg{}.m4s", s.msn),
            duration: s.gap_ns.map_or_else(
                || {
                    let unlisted: u64 = s.parts.iter().skip(listed).map(|p| p.duration).sum();
                    codec::ticks_to_secs(s.duration - unlisted, ts)
                },
                |ns| ns as f64 / 1e9,
            ),
            gap: s.gap_ns.is_some(),
            complete,
            parts: s
                .parts
                .iter()
                .take(listed)
                .enumerate()
                .map(|(i, p)| PartEntry {
                    uri: format!("part{}.{}.m4s", s.msn, i),
                    duration: codec::ticks_to_secs(p.duration, ts),
                    independent: p.independent,
                })
                .collect(),
            discontinuity: s.discontinuity,
            map_uri: init_uri(s.init_id),
            pdt: s.pdt,
        };
        let mut segments: Vec<SegmentEntry> = self
            .segments
            .iter()
            .map(|s| entry(s, true, s.parts.len()))
            .collect();
        if let Some(o) = self.open.as_ref() {
            let listed = self.listed_parts(o);
            if listed > 0 {
                segments.push(entry(o, false, listed));
            }
        }
        MediaPlaylist {
            target_duration: self.target_duration(),
            part_target: self.part_target().as_secs_f64(),
            part_hold_back: self.part_hold_back(),
            media_sequence: segments.first().map_or(self.next_msn, |s| s.msn),
            discontinuity_sequence: self.discontinuity_sequence,
            segments,
            preload_hint: self
                .next_part_position()
                .map(|(m, p)| format!("part{m}.{p}.m4s")),
            rendition_reports: reports,
            ended: self.state == TrackState::Ended,
        }
    }
}

/// The part target of an audio rendition whose parts end where the video's do (see
/// `crate::cutter`): the whole AAC frames that can start within one video part of up to
/// `part_target` (nine or ten at 48 kHz for 205 ms), rounded up to whole milliseconds, plus
/// [`AUDIO_PART_TARGET_SLACK`]. Never below `part_target`.
pub(crate) fn audio_part_target(part_target: Duration, codec: &CodecInfo) -> Duration {
    if !matches!(codec.config, CodecConfig::Aac { .. }) || codec.timescale == 0 {
        return part_target;
    }
    let frame_ns = aac_frame_ns(codec);
    let target_ns = u64::try_from(part_target.as_nanos()).unwrap_or(u64::MAX);
    let samples = target_ns
        .div_ceil(frame_ns)
        .saturating_mul(AAC_FRAME_SAMPLES);
    let ms = samples
        .saturating_mul(1000)
        .div_ceil(u64::from(codec.timescale));
    (Duration::from_millis(ms) + AUDIO_PART_TARGET_SLACK).max(part_target)
}

/// How long one AAC frame of `codec` lasts, ns (at least 1).
fn aac_frame_ns(codec: &CodecInfo) -> u64 {
    codec::ticks_to_ns(AAC_FRAME_SAMPLES, codec.timescale).max(1)
}

/// URI of an init version: "init.mp4" for the first, "init{N}.mp4" after.
pub(crate) fn init_uri(id: u32) -> String {
    if id == 0 {
        "init.mp4".to_string()
    } else {
        format!("init{id}.mp4")
    }
}

#[cfg(test)]
#[path = "track_test.rs"]
pub(crate) mod tests;
