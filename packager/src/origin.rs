//! The stream registry and the publisher side: [`Origin`], [`StreamHandle`], lifecycle.
//!
//! Entry points: [`Origin::new`], [`Origin::publish`] / [`Origin::publish_with`] (start or
//! continue a stream, returns a [`StreamHandle`]), [`StreamHandle::configure`],
//! [`StreamHandle::push`], [`StreamHandle::end`] (or drop), [`Origin::finish`],
//! [`Origin::remove`], [`Origin::streams`], [`Origin::continuation`]. The HTTP side lives in
//! `server`.
//!
//! Lifecycle of a playback ID:
//! - `publish` creates the stream, or continues a live one: renditions with the same name keep
//!   their numbering and the next segment follows an EXT-X-DISCONTINUITY (a new EXT-X-MAP if
//!   the init changed); renditions missing from the new plan get EXT-X-ENDLIST. A finished
//!   stream published again is replaced by a new one whose numbering continues (so cached
//!   URLs never name different bytes).
//! - `end` (or dropping the handle) flushes; the playlists stay live for a reconnect.
//! - `finish` adds EXT-X-ENDLIST; `ended_retention` later the stream is removed (404).
//!   Expired streams are swept lazily (on publish, on `streams`, on requests) and by the
//!   server's periodic sweep.
//!
//! Concurrency: `push`/`configure` run on GStreamer streaming threads (no tokio context).
//! State is behind `parking_lot` mutexes (no poisoning); HTTP waiters are woken through a
//! `tokio::sync::watch` channel per stream, which works from any thread. Lock order: the
//! registry map, then a stream's state; never the other way round.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::delivery::{Deliveries, DeliverySummary};
use crate::metrics;
use crate::timeline::Timeline;
use crate::timeline::MIN_PDT_STEP_NS;
use crate::track::{GapRun, Published, Track, TrackConfig, TrackStart, TrackState};
use crate::{CodecConfig, PackagerConfig, PackagerError, RenditionKind, RenditionPlan, Sample};

/// Serves every stream of this node; cheap to clone (an `Arc` inside).
/// Added to the configured part target before it is used as the hard limit and advertised as
/// PART-TARGET. Encoder timestamps are rounded (RTMP and FLV carry whole milliseconds), so a
/// part of exactly N frames at 30 fps lasts 200 or 201 ms: without slack a 200 ms target would
/// force 5-frame parts below 85 % of the target. 5 ms covers the rounding of a few frames.
pub const PART_TARGET_SLACK: std::time::Duration = std::time::Duration::from_millis(5);

#[derive(Clone)]
pub struct Origin {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("cfg", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub cfg: PackagerConfig,
    pub streams: Mutex<HashMap<String, Arc<Stream>>>,
    sessions: AtomicU64,
}

/// One playback ID.
pub(crate) struct Stream {
    pub state: Mutex<StreamState>,
    /// Bumped (after the state lock is released) on every visible change; HTTP waiters watch it.
    pub changed: watch::Sender<u64>,
    /// Rendered media playlists by (rendition, delta update), tagged with the `changed`
    /// generation read before rendering: every waiter woken by one change shares one render.
    /// Locked only while the state lock is held (a leaf lock).
    pub playlists: Mutex<HashMap<(String, bool), (u64, bytes::Bytes)>>,
    /// How long frames took to reach requests that waited for their part (a leaf lock).
    pub deliveries: Mutex<Deliveries>,
}

impl Stream {
    fn new(state: StreamState) -> Self {
        Self {
            state: Mutex::new(state),
            changed: watch::Sender::new(0),
            playlists: Mutex::new(HashMap::new()),
            deliveries: Mutex::new(Deliveries::default()),
        }
    }

    /// Wake every waiter.
    pub fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Mutable state of a stream.
pub(crate) struct StreamState {
    /// The current publish session.
    pub session: u64,
    /// A handle of the current session is alive.
    pub publishing: bool,
    /// Every rendition ever published under this ID in this stream (retired ones are ended).
    pub tracks: Vec<Track>,
    /// Names of the current plan, in plan order.
    pub plan: Vec<String>,
    /// The stream's wall clock: PDT per MSN, shared by the renditions.
    pub timeline: Timeline,
    /// When `finish` was called.
    pub finished_at: Option<Instant>,
    /// Removed from the registry; waiters answer 404.
    pub removed: bool,
}

impl StreamState {
    /// The track of a rendition (current plan or retired).
    pub fn track(&self, name: &str) -> Option<&Track> {
        self.tracks.iter().find(|t| t.name() == name)
    }

    /// Tracks of the current plan, in plan order.
    pub fn plan_tracks(&self) -> impl Iterator<Item = &Track> {
        self.plan.iter().filter_map(|n| self.track(n))
    }

    /// Has the stream expired at `now` (finished longer than `retention` ago)?
    fn expired(&self, now: Instant, retention: std::time::Duration) -> bool {
        self.finished_at
            .is_some_and(|t| now.saturating_duration_since(t) >= retention)
    }
}

/// Numbering to continue a stream elsewhere (e.g. on another node).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Continuation {
    /// Per rendition.
    pub renditions: Vec<RenditionContinuation>,
}

/// Numbering of one rendition to continue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RenditionContinuation {
    /// Rendition name.
    pub name: String,
    /// Media sequence number of the next segment.
    pub next_msn: u64,
    /// Discontinuity sequence number of the last segment.
    pub discontinuity_sequence: u64,
    /// Number of the next init version (`init{N}.mp4`).
    pub next_init_id: u32,
    /// End of its last segment on the old node's wall clock (ms since the UNIX epoch): PDTs
    /// here never go below it, even if this node's clock is behind.
    #[serde(default)]
    pub pdt_end_ms: Option<u64>,
    /// Media sequence number of its last complete segment: a player may have seen up to it
    /// (and the hint after it), so numbering here lists gaps from the next one on.
    #[serde(default)]
    pub last_complete_msn: Option<u64>,
}

/// Where a stream continued from `c` starts numbering here: the first number and the run of
/// EXT-X-GAP segments before its media (`None` without a continuation). `wall_ns` is now on
/// this node's wall clock.
///
/// The gaps start right after the last complete segment of the continuation, where a player
/// that watched the old node stands. From another node (`elsewhere`) the continuation is its
/// last report, and the old node may have gone on publishing until it stopped: media resumes
/// past every number it could have opened since (one per segment target, segments being no
/// shorter, and the one in progress), so no number ever names two different media. Each gap
/// lasts a millisecond from the end of the old media: a player that waited through the outage
/// finds the new media right after the old on its timeline, with no hole to skip (hls.js stalls
/// on a hole at the start of a playlist, and busy-loops over a long run of gaps); the pause
/// shows in the PDT across the discontinuity before the new media.
pub(crate) fn continuation_start(
    c: &Continuation,
    segment_target: std::time::Duration,
    wall_ns: u64,
    elsewhere: bool,
) -> Option<(u64, Option<GapRun>)> {
    let next = c.renditions.iter().map(|r| r.next_msn).max()?;
    let target_ns = u64::try_from(segment_target.as_nanos())
        .unwrap_or(u64::MAX)
        .max(MIN_PDT_STEP_NS);
    let end_ns = c
        .renditions
        .iter()
        .filter_map(|r| r.pdt_end_ms)
        .max()
        .map(|ms| ms.saturating_mul(1_000_000));
    let resume = if elsewhere {
        let since = end_ns.map_or(0, |e| wall_ns.saturating_sub(e));
        next.saturating_add(since / target_ns + 1)
    } else {
        next
    };
    let first = c
        .renditions
        .iter()
        .filter_map(|r| r.last_complete_msn)
        .max()
        .map_or(resume, |m| m.saturating_add(1))
        .min(resume);
    let count = resume - first;
    if count == 0 {
        return Some((resume, None));
    }
    let step_ns = MIN_PDT_STEP_NS;
    let start_ns = end_ns.unwrap_or_else(|| wall_ns.saturating_sub(count.saturating_mul(step_ns)));
    Some((
        first,
        Some(GapRun {
            count,
            start_ns,
            step_ns,
        }),
    ))
}

/// Admin summary of a stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StreamSummary {
    /// The playback ID (URL path component).
    pub playback_id: String,
    /// A publisher is attached.
    pub publishing: bool,
    /// Finished (EXT-X-ENDLIST); removed after the retention.
    pub ended: bool,
    /// Renditions of the current plan.
    pub renditions: Vec<RenditionSummary>,
}

/// Admin summary of a rendition.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RenditionSummary {
    /// Name.
    pub name: String,
    /// Video or audio.
    pub kind: RenditionKind,
    /// Nominal bit rate.
    pub bandwidth: u64,
    /// CODECS string once configured.
    pub codec: Option<String>,
    /// MSN of the last published part.
    pub msn: Option<u64>,
    /// Index of the last published part.
    pub part: Option<u32>,
    /// Parts published so far.
    pub parts: u64,
    /// Complete segments in the window.
    pub segments: usize,
    /// EXT-X-ENDLIST.
    pub ended: bool,
}

impl Origin {
    /// An origin with no streams.
    pub fn new(cfg: PackagerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                cfg,
                streams: Mutex::new(HashMap::new()),
                sessions: AtomicU64::new(1),
            }),
        }
    }

    /// The configuration. Note that the PART-TARGET served is `part_target` plus
    /// [`PART_TARGET_SLACK`].
    pub fn config(&self) -> &PackagerConfig {
        &self.inner.cfg
    }

    fn track_config(&self) -> TrackConfig {
        let c = &self.inner.cfg;
        TrackConfig {
            part_target: c.part_target + PART_TARGET_SLACK,
            segment_target: c.segment_target,
            window_segments: c.window_segments,
            part_hold_back_parts: c.part_hold_back_parts,
        }
    }

    /// Start (or continue) the stream served at `/live/{playback_id}/`; see the module docs.
    /// The playback ID must be URL-safe (`[A-Za-z0-9._~-]`), or its URLs answer 404. A stream
    /// that is never finished stays in memory: call [`Origin::finish`] once the reconnect window
    /// has passed.
    pub fn publish(&self, playback_id: &str, plan: Vec<RenditionPlan>) -> StreamHandle {
        self.publish_with(playback_id, plan, None)
    }

    /// [`Origin::publish`] with numbering to continue when the stream is new on this node
    /// (ignored when it exists here).
    pub fn publish_with(
        &self,
        playback_id: &str,
        plan: Vec<RenditionPlan>,
        continuation: Option<Continuation>,
    ) -> StreamHandle {
        let now = Instant::now();
        self.sweep(now);
        let session = self.inner.sessions.fetch_add(1, Ordering::Relaxed);
        let cfg = self.track_config();
        let mut plan = plan;
        let mut seen = std::collections::HashSet::new();
        plan.retain(|p| seen.insert(p.name.clone()));
        let names: Vec<String> = plan.iter().map(|p| p.name.clone()).collect();
        let has_video = plan.iter().any(|p| p.kind == RenditionKind::Video);

        let mut map = self.inner.streams.lock();
        let existing = map.get(playback_id).cloned();
        let live = existing.filter(|s| {
            let st = s.state.lock();
            st.finished_at.is_none() && !st.removed
        });
        let stream = if let Some(stream) = live {
            {
                let mut guard = stream.state.lock();
                let st = &mut *guard;
                st.session = session;
                st.publishing = true;
                st.timeline.has_video = has_video;
                for t in st.tracks.iter_mut() {
                    let tl = &mut st.timeline;
                    let result = if let Some(p) = plan.iter().find(|p| p.name == t.name()) {
                        if p.kind == t.kind() {
                            t.set_plan(p.clone());
                            let r = t.begin_session(tl, now);
                            t.set_follow(has_video);
                            r
                        } else {
                            t.finish(tl, now)
                        }
                    } else if t.state() != TrackState::Ended {
                        t.finish(tl, now)
                    } else {
                        Ok(Published::default())
                    };
                    record(t.kind(), result);
                }
                // Renditions whose name now has another kind start over under a fresh track.
                st.tracks.retain(|t| {
                    t.state() != TrackState::Ended || !plan.iter().any(|p| p.name == t.name())
                });
                // Every rendition restarts at the same number: MSN N covers the same media time
                // in all of them after the discontinuity too.
                let msn = st.tracks.iter().map(Track::next_msn).max().unwrap_or(0);
                for t in st.tracks.iter_mut() {
                    t.align_msn(msn, &st.timeline);
                }
                // A rendition new to the plan starts in the discontinuity the others resume in.
                let discontinuity_sequence = st
                    .tracks
                    .iter()
                    .map(Track::next_discontinuity_number)
                    .max()
                    .unwrap_or(0);
                for p in &plan {
                    if st.track(&p.name).is_none() {
                        let start = TrackStart {
                            msn,
                            discontinuity_sequence,
                            ..TrackStart::default()
                        };
                        let mut t = Track::new(p.clone(), cfg, start);
                        t.set_follow(has_video);
                        st.tracks.push(t);
                    }
                }
                st.plan = names;
            }
            stream.notify();
            stream
        } else {
            // A new stream; numbering continues from a finished predecessor or a continuation.
            let old = map
                .get(playback_id)
                .map(|old| Origin::continuation_of(&old.state.lock()));
            // Numbers another node may have used after the report we continue from are skipped
            // (a finished predecessor here is exact).
            let from_elsewhere = old.is_none() && continuation.is_some();
            let continuation = old.or(continuation).unwrap_or_default();
            let wall = ::server::wall_clock();
            let mut timeline = Timeline::new(now, wall);
            timeline.has_video = has_video;
            if let Some(ms) = continuation
                .renditions
                .iter()
                .filter_map(|r| r.pdt_end_ms)
                .max()
            {
                timeline.raise_floor(ms.saturating_mul(1_000_000));
            }
            // Every rendition continues at the same number (the highest), so MSN N covers the
            // same media time in all of them; a rendition new to the plan starts there too.
            let wall_ns = wall
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            let plan_start =
                continuation_start(&continuation, cfg.segment_target, wall_ns, from_elsewhere);
            let msn = plan_start.map(|(m, _)| m);
            let gaps = plan_start.and_then(|(_, g)| g);
            // Every rendition, and one new to the plan, resumes in the same discontinuity.
            let discontinuity_sequence = continuation
                .renditions
                .iter()
                .map(|r| r.discontinuity_sequence)
                .max();
            let starts: HashMap<String, TrackStart> = continuation
                .renditions
                .into_iter()
                .map(|r| {
                    (
                        r.name,
                        TrackStart {
                            msn: msn.unwrap_or(r.next_msn),
                            // The same for all (one that left the plan earlier lags behind).
                            discontinuity_sequence: discontinuity_sequence
                                .unwrap_or(r.discontinuity_sequence),
                            init_id: r.next_init_id,
                            discontinuity: true,
                            gaps,
                        },
                    )
                })
                .collect();
            let tracks = plan
                .iter()
                .map(|p| {
                    let start = starts.get(&p.name).copied().unwrap_or(TrackStart {
                        msn: msn.unwrap_or(0),
                        discontinuity_sequence: discontinuity_sequence.unwrap_or(0),
                        init_id: 0,
                        discontinuity: discontinuity_sequence.is_some(),
                        gaps,
                    });
                    let mut t = Track::new(p.clone(), cfg, start);
                    t.set_follow(has_video);
                    t
                })
                .collect();
            let stream = Arc::new(Stream::new(StreamState {
                session,
                publishing: true,
                tracks,
                plan: names,
                timeline,
                finished_at: None,
                removed: false,
            }));
            if let Some(old) = map.insert(playback_id.to_string(), stream.clone()) {
                old.state.lock().removed = true;
                old.notify();
            }
            stream
        };
        metrics::set_streams(map.len());
        drop(map);
        tracing::info!(playback_id, session, "publish");
        StreamHandle {
            stream,
            session,
            playback_id: playback_id.to_string(),
        }
    }

    /// The publisher is not coming back: EXT-X-ENDLIST on every rendition; the stream is removed
    /// `ended_retention` later. Any handle of it stops accepting samples.
    pub fn finish(&self, playback_id: &str) {
        let Some(stream) = self.stream(playback_id) else {
            return;
        };
        let now = Instant::now();
        {
            let mut guard = stream.state.lock();
            let st = &mut *guard;
            if st.finished_at.is_some() {
                return;
            }
            for t in st.tracks.iter_mut() {
                let r = t.finish(&mut st.timeline, now);
                record(t.kind(), r);
            }
            st.finished_at = Some(now);
            st.publishing = false;
        }
        stream.notify();
        tracing::info!(playback_id, "finish");
    }

    /// Remove a stream now (its URLs answer 404).
    pub fn remove(&self, playback_id: &str) {
        let removed = {
            let mut map = self.inner.streams.lock();
            let removed = map.remove(playback_id);
            metrics::set_streams(map.len());
            removed
        };
        if let Some(stream) = removed {
            stream.state.lock().removed = true;
            stream.notify();
            tracing::info!(playback_id, "remove");
        }
    }

    /// Summaries of the streams served, sorted by playback ID.
    pub fn streams(&self) -> Vec<StreamSummary> {
        self.sweep(Instant::now());
        let streams: Vec<(String, Arc<Stream>)> = self
            .inner
            .streams
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out: Vec<StreamSummary> = streams
            .into_iter()
            .map(|(id, s)| {
                let st = s.state.lock();
                StreamSummary {
                    playback_id: id,
                    publishing: st.publishing,
                    ended: st.finished_at.is_some(),
                    renditions: st
                        .plan_tracks()
                        .map(|t| RenditionSummary {
                            name: t.name().to_string(),
                            kind: t.kind(),
                            bandwidth: t.plan().bandwidth,
                            codec: t.codec().map(|c| c.codec_string.clone()),
                            msn: t.last_part().map(|(m, _)| m),
                            part: t.last_part().map(|(_, p)| p),
                            parts: t.parts_total(),
                            segments: t.segment_count(),
                            ended: t.state() == TrackState::Ended,
                        })
                        .collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.playback_id.cmp(&b.playback_id));
        out
    }

    /// How long frames of `playback_id` took from their arrival to players that waited for
    /// their part, per rendition (see `crate::delivery`); empty when none waited.
    pub fn deliveries(&self, playback_id: &str) -> Vec<DeliverySummary> {
        let stream = self.inner.streams.lock().get(playback_id).cloned();
        stream.map_or_else(Vec::new, |s| s.deliveries.lock().summary())
    }

    /// Numbering for continuing `playback_id` elsewhere (see [`Origin::publish_with`]).
    pub fn continuation(&self, playback_id: &str) -> Option<Continuation> {
        let stream = self.stream(playback_id)?;
        let st = stream.state.lock();
        Some(Origin::continuation_of(&st))
    }

    fn continuation_of(st: &StreamState) -> Continuation {
        Continuation {
            renditions: st
                .tracks
                .iter()
                .map(|t| RenditionContinuation {
                    name: t.name().to_string(),
                    next_msn: t.next_msn(),
                    discontinuity_sequence: t.last_discontinuity_sequence(),
                    next_init_id: t.next_init_id(),
                    pdt_end_ms: t.pdt_end_ns().map(|ns| ns.div_ceil(1_000_000)),
                    last_complete_msn: t.last_complete_msn(),
                })
                .collect(),
        }
    }

    /// The stream of a playback ID, unless it has expired (then it is removed).
    pub(crate) fn stream(&self, playback_id: &str) -> Option<Arc<Stream>> {
        let stream = self.inner.streams.lock().get(playback_id).cloned()?;
        let expired = stream
            .state
            .lock()
            .expired(Instant::now(), self.inner.cfg.ended_retention);
        if expired {
            self.sweep(Instant::now());
            return None;
        }
        Some(stream)
    }

    /// Remove streams finished longer than `ended_retention` ago.
    pub(crate) fn sweep(&self, now: Instant) {
        let retention = self.inner.cfg.ended_retention;
        let removed: Vec<Arc<Stream>> = {
            let mut map = self.inner.streams.lock();
            let expired: Vec<String> = map
                .iter()
                .filter(|(_, s)| s.state.lock().expired(now, retention))
                .map(|(k, _)| k.clone())
                .collect();
            let removed = expired.iter().filter_map(|k| map.remove(k)).collect();
            metrics::set_streams(map.len());
            removed
        };
        for s in removed {
            s.state.lock().removed = true;
            s.notify();
        }
    }
}

/// Record what a track operation published (metrics), logging failures.
fn record(kind: RenditionKind, result: Result<Published, PackagerError>) {
    match result {
        Ok(p) => {
            if p.parts > 0 {
                metrics::part_published(kind.as_str(), p.parts);
            }
            if !p.latencies.is_empty() {
                metrics::part_latency(kind.as_str(), &p.latencies);
            }
            for j in &p.jumps {
                metrics::timestamp_jump(kind.as_str(), j.as_str());
            }
            if p.forced_cuts > 0 {
                tracing::warn!(kind = kind.as_str(), "segment cut without a keyframe: the source's keyframe interval is longer than the segment limit");
                metrics::forced_cut(kind.as_str(), p.forced_cuts);
            }
            if p.dropped > 0 {
                metrics::sample_dropped(kind.as_str(), p.dropped);
            }
            if p.filled > 0 {
                tracing::debug!(frames = p.filled, "audio hole filled with silence");
                metrics::audio_filled(p.filled);
            }
        }
        Err(e) => tracing::warn!(error = %e, "flushing a rendition failed"),
    }
}

/// One publish session of a stream. Dropping it without [`StreamHandle::end`] behaves like `end`.
pub struct StreamHandle {
    stream: Arc<Stream>,
    session: u64,
    playback_id: String,
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandle")
            .field("playback_id", &self.playback_id)
            .field("session", &self.session)
            .finish()
    }
}

impl StreamHandle {
    /// The playback ID this handle publishes.
    pub fn playback_id(&self) -> &str {
        &self.playback_id
    }

    /// Run `f` on the rendition's track if this session is still current.
    fn with_track<T>(
        &self,
        rendition: &str,
        f: impl FnOnce(&mut Track, &mut Timeline) -> Result<T, PackagerError>,
    ) -> Result<(T, RenditionKind), PackagerError> {
        let mut guard = self.stream.state.lock();
        let st = &mut *guard;
        if st.session != self.session || st.finished_at.is_some() || st.removed {
            return Err(PackagerError::SessionEnded);
        }
        if !st.plan.iter().any(|n| n == rendition) {
            return Err(PackagerError::UnknownRendition(rendition.to_string()));
        }
        let track = st
            .tracks
            .iter_mut()
            .find(|t| t.name() == rendition)
            .ok_or_else(|| PackagerError::UnknownRendition(rendition.to_string()))?;
        let kind = track.kind();
        let out = f(track, &mut st.timeline)?;
        Ok((out, kind))
    }

    /// Set codec parameters of a rendition (by name); must be called before its first push.
    /// May be called again on a caps change (new init segment, discontinuity).
    pub fn configure(&self, rendition: &str, codec: CodecConfig) -> Result<(), PackagerError> {
        let (published, kind) =
            self.with_track(rendition, |t, tl| t.configure(codec, tl, Instant::now()))?;
        record(kind, Ok(published));
        // Readiness (multivariant) depends on configuration: always wake waiters.
        self.stream.notify();
        Ok(())
    }

    /// Add one encoded sample to a rendition.
    pub fn push(&self, rendition: &str, sample: Sample) -> Result<(), PackagerError> {
        let now = Instant::now();
        let (published, kind) = self.with_track(rendition, |t, tl| t.push(sample, tl, now))?;
        let mut visible = published.any();
        record(kind, Ok(published));
        if kind == RenditionKind::Video {
            visible |= self.release_held(now);
        }
        if visible {
            self.stream.notify();
        }
        Ok(())
    }

    /// Every video rendition of the stream starts a segment at its first sample at or after
    /// `pts_ns` (the timestamps of [`StreamHandle::push`]), keyframe or not: the ingest orders
    /// these on a grid of segment targets when the source's keyframes are too far apart, and
    /// forces the transcoded renditions' keyframes there (see `crate::cutter`).
    pub fn cut_video_at(&self, pts_ns: u64) {
        let mut guard = self.stream.state.lock();
        let st = &mut *guard;
        if st.session != self.session || st.finished_at.is_some() || st.removed {
            return;
        }
        for t in st.tracks.iter_mut() {
            if st.plan.iter().any(|n| n == t.name()) {
                t.cut_at_ns(pts_ns);
            }
        }
    }

    /// The video advanced: audio that holds samples back for it may place them (see
    /// `Track::release`). Whether anything became visible.
    fn release_held(&self, now: Instant) -> bool {
        let mut guard = self.stream.state.lock();
        let st = &mut *guard;
        if st.session != self.session || st.finished_at.is_some() || st.removed {
            return false;
        }
        let mut visible = false;
        for t in st.tracks.iter_mut() {
            if t.holds_samples() && st.plan.iter().any(|n| n == t.name()) {
                let r = t.release(&mut st.timeline, now);
                visible |= r.as_ref().is_ok_and(Published::any);
                record(t.kind(), r);
            }
        }
        visible
    }

    /// The publisher has gone: flush the pending part/segment (it becomes final). Playlists stay
    /// live (no ENDLIST) so a reconnect can continue; [`Origin::finish`] ends them.
    pub fn end(self) {
        // The work happens in Drop.
    }
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        let now = Instant::now();
        {
            let mut guard = self.stream.state.lock();
            let st = &mut *guard;
            if st.session != self.session || st.removed {
                return;
            }
            st.publishing = false;
            for t in st.tracks.iter_mut() {
                if t.state() == TrackState::Live {
                    let r = t.end_session(&mut st.timeline, now);
                    record(t.kind(), r);
                }
            }
        }
        self.stream.notify();
        tracing::info!(playback_id = %self.playback_id, session = self.session, "publisher ended");
    }
}

#[cfg(test)]
#[path = "origin_test.rs"]
mod tests;
