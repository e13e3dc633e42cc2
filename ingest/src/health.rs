//! A stream's health as its node sees it: is the encoder sending video, and is the pipeline
//! turning it into renditions in real time?
//!
//! Entry points: [`Health`] (one per publish, shared by the registry entry and the pipeline's
//! output: source frames are stamped as they reach the demuxer's output, video samples as
//! they leave for the packager) and [`assess`], a pure function of those stamps and `now`.
//! The node counts its streams by status in `edge_ingest_streams_by_health` (the labels are
//! the statuses, never a stream) and shows each stream's status and reason in
//! `GET /api/v1/streams`.
//!
//! - `starving`: no source video frame for [`STARVING_AFTER`] while the connection is open
//!   (an encoder that froze, a network that stalled; RTMP ends such a connection only after
//!   `wire::rtmp::NODE_TIMEOUTS.media`).
//! - `unhealthy`: source video arrives but no video sample has left for the packager for
//!   [`STALLED_AFTER`] (a stuck pipeline, or no keyframe yet), or a transcoded rung's latest
//!   sample (the rung furthest behind, as the node judges its overload) was later than
//!   `node.overload_lag` behind its source frame.
//! - `degraded`: flowing, but with a configuration issue the broadcaster can fix (below).
//! - `healthy`: otherwise.
//!
//! Configuration issues ([`Issue`], with advice in the broadcaster's terms), measured on the
//! source video as the demuxer and parser hand it on (before any transcoding, so with or
//! without passthrough) and on the audio as it leaves for the packager: a keyframe interval longer than the segment
//! target plus [`KEYFRAME_SLACK`] (segments can only start at a keyframe, so they grow to the
//! interval: latency and start-up time grow with them); frozen video (over the last
//! [`STATS_WINDOW`], the source's frames between keyframes average at most
//! [`FROZEN_FRAME_BYTES`]: an encoder only sends that little when nothing in the picture
//! changes: a still image, a stuck capture card); silent audio (its AAC frames average at most
//! [`SILENT_FRAME_BYTES`]: digital silence, a muted microphone or a wrong input); B-frames
//! (a frame whose presentation time is after its decode time: each waits for a later frame,
//! which adds latency); uneven frames (over [`UNEVEN_SHARE`] of the frame intervals far from
//! their median: a variable frame rate or frames the encoder dropped); a low bit rate (the
//! source over the last [`LONG_WINDOW`] below the highest transcoded rendition's: that rendition
//! has nothing to spend its bits on); a high bit rate (over [`HIGH_BITRATE_FACTOR`] times what
//! the ladder needs for the source's size, [`expected_source_kbps`]); audio in another codec
//! than AAC (the node converts it). Frozen and silent are judged without decoding, from the
//! compressed sizes.
//!
//! Timing ([`Health::arrival`]): each track's frames are stamped when they reach the node,
//! against their DTS: RTMP messages as they are read off the socket, SRT's MPEG-TS as it
//! leaves the demuxer. The earliest a frame arrived relative to its timestamp over the last
//! [`LONG_WINDOW`] is the track's best schedule; a video frame over [`LATE_AFTER`] behind it is
//! late (a congested upload; more than [`LATE_SHARE`] of a window is an issue); a timestamp
//! that goes back, or forward further than time passed, by over [`JUMP_MIN`] is a jump (an
//! issue for a minute); a step over [`GAP_MIN`] that time also took is a gap (media never
//! sent); the difference of the two tracks' best schedules is the A/V drift (over
//! [`AV_DRIFT_MAX`]: an issue). Each transcoded rendition's output gives its bit rate, frame
//! rate, lag and real-time factor ([`Health::rendition_out`]). They come with the status in
//! `GET /api/v1/streams`, in balancer reports, and as counts per issue type in
//! `edge_ingest_stream_issues{issue}`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::pipeline::ArrivalLog;

/// No source video frame for this long: starving. An encoder sends a frame every 17-100 ms
/// (60 to 10 fps); a second of network jitter on top still leaves a wide margin.
pub const STARVING_AFTER: Duration = Duration::from_secs(3);
/// Source video arrives but no video sample left for this long: unhealthy. The first sample
/// waits for the first keyframe (2 s GOPs are what we recommend; 6 s is already a long wait
/// for a viewer), later ones only for the pipeline.
pub const STALLED_AFTER: Duration = Duration::from_secs(6);

/// A keyframe interval this much longer than the segment target is an issue: absorbs encoders
/// that place the keyframe a frame or two late, and 2.5 s GOPs next to 2 s segments are common
/// enough not to nag about.
pub const KEYFRAME_SLACK: Duration = Duration::from_millis(500);

/// How many of the latest keyframe intervals an issue is judged on (the longest counts): an
/// encoder that changed its settings is cleared after a few good ones.
const KEYFRAME_INTERVALS_KEPT: usize = 3;

/// The source video's bit rate and frame rate are measured over this much of its latest media
/// (by DTS): long enough to smooth a GOP's large keyframe, short enough to show a change
/// within seconds.
pub const STATS_WINDOW: Duration = Duration::from_secs(5);

/// At most this many frames are kept for the figures (five seconds at 120 fps): bounds the
/// memory when timestamps misbehave.
const STATS_FRAMES_MAX: usize = 600;

/// A configuration issue the broadcaster can fix, with the advice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    /// The issue type (`keyframe_interval`), also the metric label.
    pub kind: &'static str,
    /// What is wrong and what to set, for the broadcaster.
    pub message: String,
}

/// Every issue type, for metrics.
pub const ISSUE_KINDS: [&str; 11] = [
    "keyframe_interval",
    "frozen_video",
    "silent_audio",
    "b_frames",
    "uneven_frames",
    "low_bitrate",
    "high_bitrate",
    "non_aac_audio",
    "av_drift",
    "late_frames",
    "timestamp_jumps",
];

/// A source frame that reaches the node this much later than the stream's best schedule
/// (the earliest any frame of the last minute arrived, relative to its timestamp) is late: a
/// viewer a second behind live stalls on it.
pub const LATE_AFTER: Duration = Duration::from_secs(1);

/// More than this share of the source video's frames late over the last [`STATS_WINDOW`] is
/// an issue (a single late keyframe on a busy uplink is not).
pub const LATE_SHARE: f64 = 0.05;

/// A track's timestamps that move this much more, or less, than the time between its
/// arrivals have jumped (an encoder that restarted its clock, a splice of two sources).
/// Network jitter moves arrivals by tens of milliseconds; a frame later than this is late,
/// not a jump, unless its timestamp went back.
pub const JUMP_MIN: Duration = Duration::from_secs(1);

/// A track whose consecutive timestamps are this far apart has a gap: media the encoder never
/// sent (video below 2 fps counts every frame as a gap; no live encoder sends so few).
pub const GAP_MIN: Duration = Duration::from_millis(500);

/// Audio and video timestamps this far apart, for media that reaches the node together, is
/// an issue: the two are out of sync for viewers (lip sync is lost at a tenth of this, but
/// muxers interleave audio and video differently: MPEG-TS muxers send audio up to 0.7 s
/// ahead of video of the same timestamp).
pub const AV_DRIFT_MAX: Duration = Duration::from_secs(1);

/// A source bit rate over this many times what the ladder needs for its size is an issue: the
/// encoder spends upload headroom (and source-rendition viewers' bandwidth) on nothing.
pub const HIGH_BITRATE_FACTOR: f64 = 2.5;

/// Bits per pixel per frame a source is expected to need when there is no transcoded
/// rendition to compare with (H.264 at broadcast quality: 720p30 at 2.8 Mbit/s).
pub const EXPECTED_BITS_PER_PIXEL: f64 = 0.1;

/// A source above `transcode.max_source_kbps` is refused once it has sent this many complete
/// seconds: enough to smooth a keyframe burst, short enough that a runaway sender costs
/// little.
pub const MAX_KBPS_JUDGED_AFTER_SECS: u64 = 5;

/// A media track, for the timing figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Video = 0,
    Audio = 1,
}

/// A frame interval this far from the window's median (as a fraction of it) is uneven: RTMP's
/// millisecond timestamps move a 30 fps interval by 3%, a dropped or doubled frame by 100%.
const UNEVEN_DEVIATION: f64 = 0.25;

/// More than this share of uneven intervals in the window is an issue (an occasional dropped
/// frame is not).
pub const UNEVEN_SHARE: f64 = 0.10;

/// How long the long-window bit rates average over.
pub const LONG_WINDOW: Duration = Duration::from_secs(60);

/// A source whose bit rate is below this share of the highest transcoded rendition's gives
/// that rendition nothing to spend its bits on (judged over [`LONG_WINDOW`], once it is full
/// enough: a keyframe-heavy first seconds would mislead).
const LOW_BITRATE_SHARE: f64 = 1.0;

/// Frames between keyframes that average at most this many bytes carry no change: an x264
/// still image sends 50-70 byte P-frames, the least moving camera or test pattern kilobytes.
pub const FROZEN_FRAME_BYTES: usize = 200;

/// AAC frames that average at most this many bytes are digital silence (an encoder sends 6 to
/// 23 bytes for a silent frame; a quiet room, hundreds).
pub const SILENT_FRAME_BYTES: usize = 24;

/// Frozen video and silent audio are judged on at least this much media (less would call a
/// pause between two scenes frozen).
const STILL_MIN_SPAN: Duration = Duration::from_secs(4);

/// A presentation time this far after the decode time is a B-frame's reordering (RTMP carries
/// milliseconds, so equal times stay equal).
const REORDER_MIN_NS: u64 = 1_000_000;

/// The source video as demuxed: its keyframes and its latest frames.
#[derive(Debug, Default)]
struct Keyframes {
    /// DTS (ns) of the last keyframe, and of the last frame.
    last_key_ns: Option<u64>,
    last_ns: u64,
    /// The latest intervals between keyframes, ns (oldest first).
    intervals: std::collections::VecDeque<u64>,
    /// The frames within [`STATS_WINDOW`] of the last one (oldest first).
    recent: std::collections::VecDeque<Frame>,
    /// The last bit rate (kbit/s) and frame rate measured over `recent`.
    rates: Option<(u32, f32)>,
}

/// A source video frame, as the figures and issues need it.
#[derive(Debug, Clone, Copy)]
struct Frame {
    dts_ns: u64,
    bytes: usize,
    keyframe: bool,
    /// Presented after it is decoded (a B-frame stream).
    reordered: bool,
}

/// A stream's status (`GET /api/v1/streams` `health`, label of
/// `edge_ingest_streams_by_health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Healthy,
    Degraded,
    Unhealthy,
    Starving,
}

impl Status {
    /// Every status, in the order metrics list them.
    pub const ALL: [Status; 4] = [
        Status::Healthy,
        Status::Degraded,
        Status::Unhealthy,
        Status::Starving,
    ];

    /// The label value and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
            Status::Starving => "starving",
        }
    }
}

/// The stamps one stream's health is judged from.
pub struct Health {
    /// When the publish was admitted: stands in for stamps not made yet.
    started: Instant,
    /// When each source video frame reached the demuxer's output (also times the output).
    pub(crate) arrivals: Arc<ArrivalLog>,
    /// When the last video sample (any rendition) was handed to the packager. How far the
    /// transcoded rungs are behind is in `rungs` (each rung's latest lag).
    last_out: Mutex<Option<Instant>>,
    /// The source's keyframe intervals.
    keyframes: Mutex<Keyframes>,
    /// The node's segment target, which the keyframe interval is judged against.
    segment_target: Duration,
    /// (DTS ns, bytes) of the audio frames within [`STATS_WINDOW`] of the last one.
    audio: Mutex<std::collections::VecDeque<(u64, usize)>>,
    /// The status and issue kinds the last `stream.health_changed` event told (`None`:
    /// healthy, no issue, as a stream starts).
    reported: Mutex<Option<(Status, Vec<&'static str>)>>,
    /// Bytes per second of media (by DTS second) over [`LONG_WINDOW`]: video, audio.
    long: Mutex<[Seconds; 2]>,
    /// The highest transcoded rendition's video bit rate (kbit/s), once the ladder is planned.
    top_rung_kbps: std::sync::atomic::AtomicU32,
    /// The source video's codec, profile and level, once its caps are known.
    codec: Mutex<Option<String>>,
    /// The source audio's codec (`AAC`, `MP3`), once its caps are known.
    audio_codec: Mutex<Option<String>>,
    /// When each track's media reaches the node against its timestamps: video, audio.
    clocks: Mutex<[Clock; 2]>,
    /// The video bit rate (kbit/s) the ladder needs for this source's size, once planned.
    expected_kbps: std::sync::atomic::AtomicU32,
    /// Each transcoded rendition's output over the last [`STATS_WINDOW`] of wall time.
    rungs: Mutex<Vec<(String, RungWindow)>>,
    /// The source was refused for its bit rate (said once).
    over_max: std::sync::atomic::AtomicBool,
    /// The stream's segments are on a grid, its source's keyframes being too far apart
    /// (`packager::KeyGrid`); said in the keyframe interval issue.
    segment_grid: std::sync::atomic::AtomicBool,
}

/// One track's timestamps against the moments its frames reach the node.
#[derive(Debug, Default)]
struct Clock {
    /// Per wall-clock second since the publish, over [`LONG_WINDOW`]: the earliest schedule
    /// seen, min(arrival − DTS) in ns. The minimum over the window is the stream's best
    /// schedule, what a frame's lateness is measured from.
    best: std::collections::VecDeque<(u64, i64)>,
    /// The last frame's DTS and arrival (ns since the publish).
    last: Option<(u64, u64)>,
    /// Per wall-clock second over [`LONG_WINDOW`]: what happened to this track's frames.
    counts: std::collections::VecDeque<(u64, Counts)>,
    /// The latest jump: its wall second and size (ns; negative: back).
    last_jump: Option<(u64, i64)>,
}

/// Frames of one track in one wall-clock second.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    frames: u32,
    late: u32,
    jumps: u32,
    gaps: u32,
}

/// One transcoded rendition's output: (wall ns since the publish, DTS ns, bytes) per frame,
/// and the lag of the last one behind its source frame.
#[derive(Debug, Default)]
struct RungWindow {
    frames: std::collections::VecDeque<(u64, u64, usize)>,
    lag: Duration,
}

impl Clock {
    /// A frame with `dts_ns` reached the node `wall_ns` after the publish began.
    fn arrive(&mut self, dts_ns: u64, wall_ns: u64) {
        let sec = wall_ns / 1_000_000_000;
        let o = i64::try_from(wall_ns)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(dts_ns).unwrap_or(i64::MAX));
        let jump_min = i64::try_from(JUMP_MIN.as_nanos()).unwrap_or(i64::MAX);
        let gap_min = i64::try_from(GAP_MIN.as_nanos()).unwrap_or(i64::MAX);
        let late_after = i64::try_from(LATE_AFTER.as_nanos()).unwrap_or(i64::MAX);
        let best = self.best.iter().map(|(_, m)| *m).min();
        let step = self.last.map(|(dts, wall)| {
            let ns = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            (ns(dts_ns) - ns(dts), ns(wall_ns) - ns(wall))
        });
        self.last = Some((dts_ns, wall_ns));
        let mut c = Counts {
            frames: 1,
            ..Counts::default()
        };
        // A jump back is a DTS going back; a jump forward, a DTS that moved further than the
        // time since the last frame (a burst after a stalled network moves less, a pause of
        // the encoder as much).
        let jump = match step {
            Some((s, _)) if s < -jump_min => Some(s),
            Some((s, w)) if s.saturating_sub(w.max(0)) > jump_min => Some(s - w.max(0)),
            _ => None,
        };
        if let Some(j) = jump {
            c.jumps = 1;
            self.last_jump = Some((sec, j));
            self.best.clear(); // the old schedule says nothing about the new timestamps
        } else {
            if step.is_some_and(|(s, _)| s > gap_min) {
                c.gaps = 1;
            }
            if best.is_some_and(|b| o.saturating_sub(b) > late_after) {
                c.late = 1;
            }
        }
        match self.best.back_mut() {
            Some((s, m)) if *s == sec => *m = (*m).min(o),
            _ => self.best.push_back((sec, o)),
        }
        match self.counts.back_mut() {
            Some((s, n)) if *s == sec => {
                n.frames += c.frames;
                n.late += c.late;
                n.jumps += c.jumps;
                n.gaps += c.gaps;
            }
            _ => self.counts.push_back((sec, c)),
        }
        // Wall seconds only grow: the old ones are at the front.
        let keep = LONG_WINDOW.as_secs();
        while self
            .best
            .front()
            .is_some_and(|(s, _)| sec.saturating_sub(*s) >= keep)
        {
            self.best.pop_front();
        }
        while self
            .counts
            .front()
            .is_some_and(|(s, _)| sec.saturating_sub(*s) >= keep)
        {
            self.counts.pop_front();
        }
    }

    /// The counts over the seconds within `window` of the newest one (`now_sec`).
    fn total(&self, now_sec: u64, window: Duration) -> Counts {
        self.counts
            .iter()
            .filter(|(s, _)| now_sec.saturating_sub(*s) < window.as_secs())
            .fold(Counts::default(), |a, (_, c)| Counts {
                frames: a.frames + c.frames,
                late: a.late + c.late,
                jumps: a.jumps + c.jumps,
                gaps: a.gaps + c.gaps,
            })
    }

    /// The best schedule (min arrival − DTS, ns), once this track has a few seconds of it.
    fn schedule(&self) -> Option<i64> {
        if self.best.len() < 3 {
            return None;
        }
        self.best.iter().map(|(_, m)| *m).min()
    }
}

/// A stream's status, why, and its issues (see [`Health::judge`]).
#[derive(Debug, Clone)]
pub struct Judgement {
    pub status: Status,
    pub reason: Option<String>,
    pub issues: Vec<Issue>,
}

/// Make room in a window of frames ordered by DTS (`dts` of each) for one at `dts_ns`: a DTS
/// going backwards (an encoder restart) starts the window again; frames older than
/// [`STATS_WINDOW`] before it, and any past [`STATS_FRAMES_MAX`], go.
fn make_room<T>(q: &mut std::collections::VecDeque<T>, dts_ns: u64, dts: impl Fn(&T) -> u64) {
    if q.back().is_some_and(|f| dts_ns < dts(f)) {
        q.clear();
    }
    let window = u64::try_from(STATS_WINDOW.as_nanos()).unwrap_or(u64::MAX);
    while q.len() >= STATS_FRAMES_MAX
        || q.front()
            .is_some_and(|f| dts_ns.saturating_sub(dts(f)) > window)
    {
        q.pop_front();
    }
}

/// Bytes per media second, the last [`LONG_WINDOW`] of them.
#[derive(Debug, Default)]
struct Seconds(std::collections::VecDeque<(u64, u64)>);

impl Seconds {
    fn add(&mut self, dts_ns: u64, bytes: usize) {
        let sec = dts_ns / 1_000_000_000;
        if self.0.back().is_some_and(|(s, _)| sec < *s) {
            self.0.clear(); // timestamps went back: start over
        }
        match self.0.back_mut() {
            Some((s, b)) if *s == sec => *b += bytes as u64,
            _ => self.0.push_back((sec, bytes as u64)),
        }
        let keep = LONG_WINDOW.as_secs();
        while self
            .0
            .front()
            .is_some_and(|(s, _)| sec.saturating_sub(*s) >= keep)
        {
            self.0.pop_front();
        }
    }

    /// kbit/s over the complete seconds held (the current one is still filling), and how many.
    fn kbps(&self) -> Option<(u32, u64)> {
        let full = self.0.len().checked_sub(1).filter(|n| *n > 0)?;
        let bytes: u64 = self.0.iter().take(full).map(|(_, b)| b).sum();
        let secs = full as u64;
        Some((
            u32::try_from(bytes * 8 / 1000 / secs).unwrap_or(u32::MAX),
            secs,
        ))
    }
}

impl Health {
    pub fn new(started: Instant, segment_target: Duration) -> Self {
        Health {
            started,
            arrivals: Arc::new(ArrivalLog::default()),
            last_out: Mutex::new(None),
            keyframes: Mutex::new(Keyframes::default()),
            segment_target,
            audio: Mutex::new(std::collections::VecDeque::new()),
            reported: Mutex::new(None),
            long: Mutex::new([Seconds::default(), Seconds::default()]),
            top_rung_kbps: std::sync::atomic::AtomicU32::new(0),
            codec: Mutex::new(None),
            audio_codec: Mutex::new(None),
            clocks: Mutex::new([Clock::default(), Clock::default()]),
            expected_kbps: std::sync::atomic::AtomicU32::new(0),
            rungs: Mutex::new(Vec::new()),
            over_max: std::sync::atomic::AtomicBool::new(false),
            segment_grid: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The stream's segments went on a grid for good (`packager::KeyGrid`): its keyframe
    /// interval issue says so from now on.
    pub fn set_segment_grid(&self) {
        self.segment_grid
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Why the source must be refused for its bit rate: above `max_kbps` (0: no limit) over
    /// its last [`MAX_KBPS_JUDGED_AFTER_SECS`] or more complete seconds. Said once.
    pub fn above_max_kbps(&self, max_kbps: u32) -> Option<String> {
        if max_kbps == 0 {
            return None;
        }
        let (kbps, secs) = self.long.lock().ok()?[0].kbps()?;
        if secs < MAX_KBPS_JUDGED_AFTER_SECS || kbps <= max_kbps {
            return None;
        }
        if self
            .over_max
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return None;
        }
        Some(format!(
            "source video is {kbps} kbit/s, above this server's maximum {max_kbps} kbit/s; lower the encoder's bit rate"
        ))
    }

    /// Wall time since the publish began, ns.
    fn wall_ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A frame of `track` with `dts_ns` reached the demuxer's output at `at`: for lateness,
    /// timestamp jumps and gaps, and the A/V drift.
    pub fn arrival(&self, track: Track, dts_ns: u64, at: Instant) {
        let wall = self.wall_ns(at);
        if let Ok(mut c) = self.clocks.lock() {
            c[track as usize].arrive(dts_ns, wall);
        }
    }

    /// The source audio's codec (`AAC`, `MP3`).
    pub fn set_audio_codec(&self, codec: String) {
        if let Ok(mut c) = self.audio_codec.lock() {
            *c = Some(codec);
        }
    }

    /// A transcoded rendition's video sample (`dts_ns`, `bytes`) left for the packager at
    /// `at`, `lag` behind its source frame.
    pub fn rendition_out(&self, name: &str, dts_ns: u64, bytes: usize, at: Instant, lag: Duration) {
        let wall = self.wall_ns(at);
        let Ok(mut rungs) = self.rungs.lock() else {
            return;
        };
        let i = match rungs.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                rungs.push((name.to_string(), RungWindow::default()));
                rungs.len() - 1
            }
        };
        let Some((_, w)) = rungs.get_mut(i) else {
            return;
        };
        // Timestamps that went back, or forward further than time passed: start over.
        let jump = u64::try_from(JUMP_MIN.as_nanos()).unwrap_or(u64::MAX);
        if w.frames.back().is_some_and(|(t, d, _)| {
            dts_ns < *d || dts_ns - *d > wall.saturating_sub(*t).saturating_add(jump)
        }) {
            w.frames.clear();
        }
        let window = u64::try_from(STATS_WINDOW.as_nanos()).unwrap_or(u64::MAX);
        while w.frames.len() >= STATS_FRAMES_MAX
            || w.frames
                .front()
                .is_some_and(|(t, _, _)| wall.saturating_sub(*t) > window)
        {
            w.frames.pop_front();
        }
        w.frames.push_back((wall, dts_ns, bytes));
        w.lag = lag;
    }

    /// A source video frame (DTS and PTS in ns, `bytes` long) as demuxed and parsed.
    pub fn source_frame(&self, dts_ns: u64, pts_ns: u64, keyframe: bool, bytes: usize) {
        let Ok(mut k) = self.keyframes.lock() else {
            return;
        };
        // Past a jump or a pause in the timestamps, the time since the last keyframe says
        // nothing about the encoder's keyframe interval: count from the next one.
        let jump = u64::try_from(JUMP_MIN.as_nanos()).unwrap_or(u64::MAX);
        if k.last_key_ns.is_some() && dts_ns > k.last_ns.saturating_add(jump) {
            k.last_key_ns = None;
        }
        make_room(&mut k.recent, dts_ns, |f| f.dts_ns);
        k.recent.push_back(Frame {
            dts_ns,
            bytes,
            keyframe,
            reordered: pts_ns > dts_ns.saturating_add(REORDER_MIN_NS),
        });
        if let Ok(mut l) = self.long.lock() {
            l[0].add(dts_ns, bytes);
        }
        k.last_ns = k.last_ns.max(dts_ns);
        if !keyframe {
            return;
        }
        // A DTS going backwards (an encoder restart) starts the count again.
        if let Some(interval) = k.last_key_ns.and_then(|last| dts_ns.checked_sub(last)) {
            if k.intervals.len() == KEYFRAME_INTERVALS_KEPT {
                k.intervals.pop_front();
            }
            k.intervals.push_back(interval);
        }
        k.last_key_ns = Some(dts_ns);
    }

    /// The source video's figures over its last [`STATS_WINDOW`] (`None` before two frames).
    pub fn stats(&self) -> Option<control::StreamStats> {
        let mut k = self.keyframes.lock().ok()?;
        let (first, last) = (k.recent.front()?.dts_ns, k.recent.back()?.dts_ns);
        // Frames after the first cover the span (the first one's duration is before it).
        let measured = last.checked_sub(first).filter(|s| *s > 0).map(|span| {
            let bytes: usize = k.recent.iter().skip(1).map(|f| f.bytes).sum();
            let secs = span as f64 / 1e9;
            (
                u32::try_from((bytes as f64 * 8.0 / secs / 1000.0).round() as u64)
                    .unwrap_or(u32::MAX),
                ((k.recent.len() - 1) as f64 / secs) as f32,
            )
        });
        // Right after a jump the window starts again with one frame: keep the last figures.
        if measured.is_some() {
            k.rates = measured;
        }
        let (video_kbps, fps) = k.rates?;
        let audio_kbps = self.audio.lock().ok().and_then(|a| {
            let span = a.back()?.0.checked_sub(a.front()?.0).filter(|s| *s > 0)?;
            let bytes: usize = a.iter().skip(1).map(|(_, b)| *b).sum();
            u32::try_from((bytes as f64 * 8.0 / (span as f64 / 1e9) / 1000.0).round() as u64).ok()
        });
        let long = self.long.lock().ok();
        let long_kbps = |i: usize| long.as_ref().and_then(|l| l[i].kbps()).map(|(k, _)| k);
        let clocks = self.clocks.lock().ok();
        // Jumps and gaps: the more of the two tracks (one encoder restart jumps both).
        let minute = |f: fn(&Counts) -> u32| {
            clocks.as_ref().map_or(0, |c| {
                c.iter()
                    .map(|t| f(&t.total(t.counts.back().map_or(0, |(s, _)| *s), LONG_WINDOW)))
                    .max()
                    .unwrap_or(0)
            })
        };
        Some(control::StreamStats {
            audio_codec: self.audio_codec.lock().ok().and_then(|c| c.clone()),
            av_drift_ms: clocks
                .as_ref()
                .and_then(|c| av_drift_ns(c))
                .map(|ns| i32::try_from(ns / 1_000_000).unwrap_or(i32::MAX)),
            late_frames: clocks.as_ref().map_or(0, |c| {
                let v = &c[Track::Video as usize];
                v.total(v.counts.back().map_or(0, |(s, _)| *s), LONG_WINDOW)
                    .late
            }),
            timestamp_jumps: minute(|c| c.jumps),
            timestamp_gaps: minute(|c| c.gaps),
            dropped_frames: dropped_frames(&k.recent),
            rungs: self.rung_stats(),
            video_kbps,
            fps,
            keyframe_interval_ms: k
                .intervals
                .back()
                .map(|ns| u32::try_from(ns / 1_000_000).unwrap_or(u32::MAX)),
            codec: self.codec.lock().ok().and_then(|c| c.clone()),
            audio_kbps,
            video_kbps_60s: long_kbps(0),
            audio_kbps_60s: long_kbps(1),
        })
    }

    /// Each transcoded rendition's figures over its last [`STATS_WINDOW`] of output.
    fn rung_stats(&self) -> Vec<control::RungStats> {
        let Ok(rungs) = self.rungs.lock() else {
            return Vec::new();
        };
        rungs
            .iter()
            .filter_map(|(name, w)| {
                let (t0, d0, _) = *w.frames.front()?;
                let (t1, d1, _) = *w.frames.back()?;
                let media = d1.checked_sub(d0).filter(|s| *s > 0)? as f64;
                let wall = t1.saturating_sub(t0) as f64;
                let bytes: usize = w.frames.iter().skip(1).map(|f| f.2).sum();
                Some(control::RungStats {
                    name: name.clone(),
                    kbps: u32::try_from(
                        (bytes as f64 * 8.0 / (media / 1e9) / 1000.0).round() as u64
                    )
                    .unwrap_or(u32::MAX),
                    fps: ((w.frames.len() - 1) as f64 / (media / 1e9)) as f32,
                    speed: if wall > 0.0 {
                        (media / wall) as f32
                    } else {
                        1.0
                    },
                    lag_ms: u32::try_from(w.lag.as_millis()).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    /// Whether `status` with `issues` differs from what was last reported (and remember it):
    /// a `stream.health_changed` event is due.
    pub fn report_change(&self, status: Status, issues: &[Issue]) -> bool {
        let Ok(mut r) = self.reported.lock() else {
            return false;
        };
        let now = (status, issues.iter().map(|i| i.kind).collect::<Vec<_>>());
        let before = r.clone().unwrap_or((Status::Healthy, Vec::new()));
        *r = Some(now.clone());
        before != now
    }

    /// An audio frame (DTS in ns, `bytes` long) left for the packager.
    pub fn audio_frame(&self, dts_ns: u64, bytes: usize) {
        let Ok(mut a) = self.audio.lock() else {
            return;
        };
        make_room(&mut a, dts_ns, |(dts, _)| *dts);
        a.push_back((dts_ns, bytes));
        drop(a);
        if let Ok(mut l) = self.long.lock() {
            l[1].add(dts_ns, bytes);
        }
    }

    /// The source video's codec, profile and level (`H.264 high 3.1`).
    pub fn set_codec(&self, codec: String) {
        if let Ok(mut c) = self.codec.lock() {
            *c = Some(codec);
        }
    }

    /// The ladder is planned: its highest transcoded rendition encodes at `top_kbps` (0:
    /// none), and a source of this size needs about `expected_kbps` (see
    /// [`expected_source_kbps`]).
    pub fn set_ladder(&self, top_kbps: u32, expected_kbps: u32) {
        self.top_rung_kbps
            .store(top_kbps, std::sync::atomic::Ordering::Relaxed);
        self.expected_kbps
            .store(expected_kbps, std::sync::atomic::Ordering::Relaxed);
    }

    /// The issues seen lately: configuration the broadcaster can fix, a frozen picture,
    /// silent audio.
    pub fn issues(&self) -> Vec<Issue> {
        let mut v = Vec::new();
        if let Ok(k) = self.keyframes.lock() {
            let grid = self.segment_grid.load(std::sync::atomic::Ordering::Relaxed);
            v.extend(keyframe_issue(&k, self.segment_target, grid));
            v.extend(frozen_issue(&k.recent));
            v.extend(b_frames_issue(&k.recent));
            v.extend(uneven_issue(&k.recent));
        }
        let top = self
            .top_rung_kbps
            .load(std::sync::atomic::Ordering::Relaxed);
        let expected = self
            .expected_kbps
            .load(std::sync::atomic::Ordering::Relaxed);
        if let Ok(l) = self.long.lock() {
            v.extend(low_bitrate_issue(l[0].kbps(), top));
            v.extend(high_bitrate_issue(l[0].kbps(), expected));
        }
        if let Ok(a) = self.audio.lock() {
            v.extend(silent_issue(&a));
        }
        if let Some(codec) = self.audio_codec.lock().ok().and_then(|c| c.clone()) {
            v.extend(audio_codec_issue(&codec));
        }
        if let Ok(c) = self.clocks.lock() {
            v.extend(drift_issue(&c));
            v.extend(late_issue(&c[Track::Video as usize]));
            v.extend(jump_issue(&c));
        }
        v
    }

    /// A video sample (a rung's, after [`Health::rendition_out`], or the source passed
    /// through) left for the packager at `at`.
    pub fn video_out(&self, at: Instant) {
        if let Ok(mut l) = self.last_out.lock() {
            *l = Some(at);
        }
    }

    /// The status now, with the reason when it is not healthy: [`assess`], then `degraded`
    /// (the issues' messages as the reason) when that says healthy but there are issues.
    pub fn assess(&self, now: Instant, overload_lag: Duration) -> (Status, Option<String>) {
        let j = self.judge(now, overload_lag);
        (j.status, j.reason)
    }

    /// [`Health::assess`] and [`Health::issues`] at once (the issues are judged once).
    pub fn judge(&self, now: Instant, overload_lag: Duration) -> Judgement {
        // Judged by the rung furthest behind (each at its latest frame), as the node judges
        // its overload: neither the rung that sent the last frame (it may be the quickest) nor
        // the source passed through (it would hide every rung) decides.
        let worst_lag = self
            .rungs
            .lock()
            .ok()
            .and_then(|r| r.iter().map(|(_, w)| w.lag).max())
            .unwrap_or_default();
        let last_out = self
            .last_out
            .lock()
            .ok()
            .and_then(|l| *l)
            .map(|at| (at, worst_lag));
        let (status, reason) = assess(
            self.started,
            self.arrivals.latest(),
            last_out,
            now,
            overload_lag,
        );
        let issues = self.issues();
        if status != Status::Healthy || issues.is_empty() {
            return Judgement {
                status,
                reason,
                issues,
            };
        }
        let why: Vec<&str> = issues.iter().map(|i| i.message.as_str()).collect();
        Judgement {
            status: Status::Degraded,
            reason: Some(why.join("; ")),
            issues,
        }
    }
}

/// The keyframe-interval issue: the longest of the latest intervals, or the time since the
/// last keyframe when that is already longer (a 6 s GOP shows 2.5 s after a keyframe).
/// With `grid`, it also says what the stream does about it (`packager::KeyGrid`).
fn keyframe_issue(k: &Keyframes, segment_target: Duration, grid: bool) -> Option<Issue> {
    let closed = k.intervals.iter().copied().max();
    let open = k.last_key_ns.map(|last| k.last_ns.saturating_sub(last));
    let (ns, at_least) = match (closed, open) {
        (Some(c), Some(o)) if o > c => (o, true),
        (Some(c), _) => (c, false),
        (None, Some(o)) => (o, true),
        (None, None) => return None,
    };
    let interval = Duration::from_nanos(ns);
    if interval <= segment_target + KEYFRAME_SLACK {
        return None;
    }
    let target = segment_target.as_secs_f64();
    Some(Issue {
        kind: "keyframe_interval",
        message: format!(
            "keyframe interval is {}{:.1} s; set it to {target} s (keyframe interval or GOP in the encoder's settings) so segments and start-up stay short{}",
            if at_least { "at least " } else { "" },
            interval.as_secs_f64(),
            if grid {
                format!(". Until then every rendition's segments start every {target} s: the transcoded renditions get a keyframe there, the source's own rendition starts without one (players start and switch on the transcoded ones)")
            } else {
                String::new()
            }
        ),
    })
}

/// Frozen video: the frames between keyframes over at least [`STILL_MIN_SPAN`] average at
/// most [`FROZEN_FRAME_BYTES`].
fn frozen_issue(recent: &std::collections::VecDeque<Frame>) -> Option<Issue> {
    let span = recent.back()?.dts_ns.saturating_sub(recent.front()?.dts_ns);
    if Duration::from_nanos(span) < STILL_MIN_SPAN {
        return None;
    }
    let (n, bytes) = recent
        .iter()
        .filter(|f| !f.keyframe)
        .fold((0usize, 0usize), |(n, b), f| (n + 1, b + f.bytes));
    (n > 0 && bytes / n <= FROZEN_FRAME_BYTES).then(|| Issue {
        kind: "frozen_video",
        message: format!(
            "video is frozen: the picture has not changed in the last {:.1} s (a still image or a stuck capture?)",
            span as f64 / 1e9
        ),
    })
}

/// Silent audio: its frames over at least [`STILL_MIN_SPAN`] average at most
/// [`SILENT_FRAME_BYTES`].
fn silent_issue(audio: &std::collections::VecDeque<(u64, usize)>) -> Option<Issue> {
    let span = audio.back()?.0.saturating_sub(audio.front()?.0);
    if Duration::from_nanos(span) < STILL_MIN_SPAN {
        return None;
    }
    let bytes: usize = audio.iter().map(|(_, b)| *b).sum();
    (bytes / audio.len() <= SILENT_FRAME_BYTES).then(|| Issue {
        kind: "silent_audio",
        message: format!(
            "audio is silent: digital silence for the last {:.1} s (a muted microphone or the wrong audio input?)",
            span as f64 / 1e9
        ),
    })
}

/// Uneven frame timing: more than [`UNEVEN_SHARE`] of the window's frame intervals are more
/// than [`UNEVEN_DEVIATION`] off the median (a variable frame rate, or frames dropped before
/// they were sent), judged on at least [`STILL_MIN_SPAN`].
fn uneven_issue(recent: &std::collections::VecDeque<Frame>) -> Option<Issue> {
    let span = recent.back()?.dts_ns.saturating_sub(recent.front()?.dts_ns);
    if Duration::from_nanos(span) < STILL_MIN_SPAN {
        return None;
    }
    let mut steps: Vec<u64> = recent
        .iter()
        .zip(recent.iter().skip(1))
        .map(|(a, b)| b.dts_ns.saturating_sub(a.dts_ns))
        .collect();
    steps.sort_unstable();
    let median = *steps.get(steps.len() / 2)? as f64;
    if median <= 0.0 {
        return None;
    }
    let off = steps
        .iter()
        .filter(|s| (**s as f64 - median).abs() > UNEVEN_DEVIATION * median)
        .count();
    (off as f64 > UNEVEN_SHARE * steps.len() as f64).then(|| Issue {
        kind: "uneven_frames",
        message: format!(
            "frames arrive unevenly: intervals from {} to {} ms around {:.0} ms (a variable frame rate, or frames the encoder dropped); set a constant frame rate and check the encoder keeps up",
            steps.first().copied().unwrap_or(0) / 1_000_000,
            steps.last().copied().unwrap_or(0) / 1_000_000,
            median / 1e6
        ),
    })
}

/// A source bit rate (over [`LONG_WINDOW`], at least 10 s of it) below the highest transcoded
/// rendition's (`top_kbps`, 0: no ladder).
fn low_bitrate_issue(source: Option<(u32, u64)>, top_kbps: u32) -> Option<Issue> {
    let (kbps, secs) = source?;
    if top_kbps == 0 || secs < 10 || f64::from(kbps) >= LOW_BITRATE_SHARE * f64::from(top_kbps) {
        return None;
    }
    Some(Issue {
        kind: "low_bitrate",
        message: format!(
            "source video is {kbps} kbit/s, below the {top_kbps} kbit/s of the best rendition made from it; raise the encoder's bit rate to at least {top_kbps} kbit/s (or the picture will not be better than the source)"
        ),
    })
}

/// A source bit rate (over [`LONG_WINDOW`], at least 10 s of it) over
/// [`HIGH_BITRATE_FACTOR`] times what the ladder needs for its size (`expected_kbps`, 0:
/// not planned yet).
fn high_bitrate_issue(source: Option<(u32, u64)>, expected_kbps: u32) -> Option<Issue> {
    let (kbps, secs) = source?;
    if expected_kbps == 0
        || secs < 10
        || f64::from(kbps) <= HIGH_BITRATE_FACTOR * f64::from(expected_kbps)
    {
        return None;
    }
    Some(Issue {
        kind: "high_bitrate",
        message: format!(
            "source video is {kbps} kbit/s, over {HIGH_BITRATE_FACTOR} times the {expected_kbps} kbit/s the ladder needs for its size: the extra bits cost upload headroom (and viewers of the source rendition bandwidth); set the encoder's bit rate to about {expected_kbps} kbit/s"
        ),
    })
}

/// The video bit rate (kbit/s) a source needs, judged by the ladder: the best transcoded
/// rendition's bits per pixel per frame (`rungs`: width, height, frame rate, kbit/s), applied
/// to the source's size and frame rate; [`EXPECTED_BITS_PER_PIXEL`] without a ladder.
pub fn expected_source_kbps(
    source: &edge_config::SourceSize,
    rungs: &[(u32, u32, f64, u32)],
) -> u32 {
    let rate = |w: u32, h: u32, fps: f64| f64::from(w) * f64::from(h) * fps.max(1.0);
    let src = rate(source.width, source.height, source.fps);
    let kbps = match rungs.iter().max_by_key(|r| r.3) {
        Some(&(w, h, fps, kbps)) if w > 0 && h > 0 => {
            f64::from(kbps) * src / rate(w, h, fps.min(source.fps))
        }
        _ => src * EXPECTED_BITS_PER_PIXEL / 1000.0,
    };
    kbps.round().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// Audio in another codec than AAC: the node converts it.
fn audio_codec_issue(codec: &str) -> Option<Issue> {
    (codec != "AAC").then(|| Issue {
        kind: "non_aac_audio",
        message: format!(
            "audio is {codec}; the node converts it to AAC for HLS, which costs CPU and a generation of quality: set the encoder's audio codec to AAC"
        ),
    })
}

/// How far audio timestamps run ahead of video's (ns; negative: behind) for media that
/// reaches the node at the same moment: the difference of the two tracks' best schedules.
fn av_drift_ns(clocks: &[Clock; 2]) -> Option<i64> {
    let v = clocks[Track::Video as usize].schedule()?;
    let a = clocks[Track::Audio as usize].schedule()?;
    Some(v.saturating_sub(a))
}

/// Audio and video timestamps more than [`AV_DRIFT_MAX`] apart.
fn drift_issue(clocks: &[Clock; 2]) -> Option<Issue> {
    let d = av_drift_ns(clocks)?;
    if d.unsigned_abs() <= u64::try_from(AV_DRIFT_MAX.as_nanos()).unwrap_or(u64::MAX) {
        return None;
    }
    Some(Issue {
        kind: "av_drift",
        message: format!(
            "audio timestamps are {:.1} s {} video's for media that arrives together, so players play them out of sync: check the encoder's audio sync offset, and that its audio and video come from one clock",
            d.unsigned_abs() as f64 / 1e9,
            if d > 0 { "ahead of" } else { "behind" }
        ),
    })
}

/// Over [`LATE_SHARE`] of the video frames of the last [`STATS_WINDOW`] late (at least a
/// second's worth of frames).
fn late_issue(video: &Clock) -> Option<Issue> {
    let now = video.counts.back()?.0;
    let c = video.total(now, STATS_WINDOW);
    if c.frames < 10 || f64::from(c.late) <= LATE_SHARE * f64::from(c.frames) {
        return None;
    }
    Some(Issue {
        kind: "late_frames",
        message: format!(
            "{} of {} video frames in the last {} s reached the node over {:.1} s late: the upload cannot carry the stream steadily; lower the encoder's bit rate or check its network",
            c.late,
            c.frames,
            STATS_WINDOW.as_secs(),
            LATE_AFTER.as_secs_f64()
        ),
    })
}

/// A timestamp jump in either track within the last [`LONG_WINDOW`]: the latest, with the
/// count of its track.
fn jump_issue(clocks: &[Clock; 2]) -> Option<Issue> {
    let mut latest: Option<(u64, i64, &str, u32)> = None;
    for (clock, name) in clocks.iter().zip(["video", "audio"]) {
        let Some(now) = clock.counts.back().map(|(s, _)| *s) else {
            continue;
        };
        let jumps = clock.total(now, LONG_WINDOW).jumps;
        if let Some((at, size)) = clock.last_jump.filter(|_| jumps > 0) {
            if latest.is_none_or(|(t, ..)| at > t) {
                latest = Some((at, size, name, jumps));
            }
        }
    }
    let (_, size, track, n) = latest?;
    Some(Issue {
        kind: "timestamp_jumps",
        message: format!(
            "{track} timestamps jumped {:.1} s {} ({n} jump{} in the last minute): players stall or skip there; check that the encoder's clock runs steadily and that one encoder sends this stream",
            size.unsigned_abs() as f64 / 1e9,
            if size > 0 { "forward" } else { "back" },
            if n == 1 { "" } else { "s" }
        ),
    })
}

/// Frames the encoder skipped in the window: intervals of about k times the median count
/// k − 1 each (over 1.5 times it).
fn dropped_frames(recent: &std::collections::VecDeque<Frame>) -> u32 {
    let mut steps: Vec<u64> = recent
        .iter()
        .zip(recent.iter().skip(1))
        .map(|(a, b)| b.dts_ns.saturating_sub(a.dts_ns))
        .collect();
    if steps.len() < 10 {
        return 0;
    }
    let mut sorted = steps.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    if median == 0 {
        return 0;
    }
    steps.retain(|s| *s * 2 > median * 3);
    steps
        .iter()
        .map(|s| u32::try_from((*s + median / 2) / median - 1).unwrap_or(u32::MAX))
        .fold(0u32, u32::saturating_add)
}

/// B-frames in the source: any frame of the window presented after it is decoded.
fn b_frames_issue(recent: &std::collections::VecDeque<Frame>) -> Option<Issue> {
    recent.iter().any(|f| f.reordered).then(|| Issue {
        kind: "b_frames",
        message: "the encoder sends B-frames, which add latency (each waits for a later frame); set B-frames to 0 (OBS: x264 options bframes=0; ffmpeg: -bf 0)".into(),
    })
}

/// The status of a stream admitted at `started`, whose last source video frame arrived at
/// `last_in` and whose last video sample left at `last_out` (with its lag).
pub fn assess(
    started: Instant,
    last_in: Option<Instant>,
    last_out: Option<(Instant, Duration)>,
    now: Instant,
    overload_lag: Duration,
) -> (Status, Option<String>) {
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let since_in = now.saturating_duration_since(last_in.unwrap_or(started));
    if since_in >= STARVING_AFTER {
        let why = match last_in {
            Some(_) => format!("no video from the encoder for {}", secs(since_in)),
            None => format!(
                "no video from the encoder since it connected {} ago",
                secs(since_in)
            ),
        };
        return (Status::Starving, Some(why));
    }
    let (out_at, lag) = match last_out {
        Some((at, lag)) => (at, lag),
        None => (started, Duration::ZERO),
    };
    let since_out = now.saturating_duration_since(out_at);
    if since_out >= STALLED_AFTER {
        let why = match last_out {
            Some(_) => format!(
                "video arrives but none has come out for {}",
                secs(since_out)
            ),
            None => format!(
                "no video has come out {} after the publish began (no keyframe yet?)",
                secs(since_out)
            ),
        };
        return (Status::Unhealthy, Some(why));
    }
    if lag > overload_lag {
        return (
            Status::Unhealthy,
            Some(format!(
                "transcoding is {} behind real time (node.overload_lag {})",
                secs(lag),
                secs(overload_lag)
            )),
        );
    }
    (Status::Healthy, None)
}

#[cfg(test)]
#[path = "health_test.rs"]
mod tests;
