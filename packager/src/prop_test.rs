//! Property test: hours of virtual media through an [`Origin`], with random GOPs, timestamp
//! jumps both ways, gaps, reconnects (continuations, on this node and on another one) and rung
//! changes; after every step every playlist (full and delta update) of every rendition passes
//! [`crate::rules`]: on its own, over time ([`rules::History`]) and across renditions.
//!
//! Virtual time: samples carry their arrival (`Sample::arrival`, an `Instant` offset from the
//! start by the virtual clock), so PDTs follow the virtual clock; nothing sleeps.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use proptest::prelude::*;

use crate::fmp4::tests::{aac_info, h264_info};
use crate::rules::{self, Expect, History};
use crate::{
    GridStep, KeyGrid, Origin, PackagerConfig, RenditionKind, RenditionPlan, Sample, StreamHandle,
};

const PID: &str = "prop";
/// GStreamer's video encoders shift their timestamps by 1000 hours (the PDT bug of issue 10).
const ENCODER_SHIFT_NS: u64 = 1000 * 3600 * 1_000_000_000;
/// How often (virtual) the playlists are checked.
const CHECK_EVERY_NS: u64 = 700_000_000;

#[derive(Debug, Clone)]
enum Step {
    /// `secs` of media at `fps`, a keyframe every `gop` frames.
    Run { secs: u64, fps: u64, gop: u64 },
    /// Every rendition's timestamps jump back (`back`) or forward by `secs`; arrivals go on.
    Jump { back: bool, secs: u64 },
    /// Nothing arrives for `secs`, then media goes on with timestamps that skipped as much.
    Gap { secs: u64 },
    /// The encoder reconnects (`other_node`: to another node, with a continuation) with a
    /// plan of the source, optionally the 720p rung, and audio.
    Reconnect { other_node: bool, rung: bool },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (1u64..240, prop_oneof![Just(25u64), Just(30), Just(60)], 10u64..80)
            .prop_map(|(secs, fps, gop)| Step::Run { secs, fps, gop }),
        1 => (any::<bool>(), 2u64..600).prop_map(|(back, secs)| Step::Jump { back, secs }),
        1 => (2u64..30).prop_map(|secs| Step::Gap { secs }),
        1 => (any::<bool>(), any::<bool>())
            .prop_map(|(other_node, rung)| Step::Reconnect { other_node, rung }),
    ]
}

fn config() -> impl Strategy<Value = PackagerConfig> {
    (
        prop_oneof![Just(200u64), Just(250), Just(333)],
        prop_oneof![Just(1000u64), Just(2000), Just(2000), Just(4000)],
        2u32..=3,
    )
        .prop_map(|(part, seg, hold_back)| PackagerConfig {
            part_target: Duration::from_millis(part),
            segment_target: Duration::from_millis(seg),
            window_segments: 6,
            ended_retention: Duration::from_secs(60),
            ready_timeout: Duration::from_millis(10),
            keyframe_join: false,
            part_hold_back_parts: hold_back,
        })
}

fn plan(rung: bool) -> Vec<RenditionPlan> {
    let mut p = vec![RenditionPlan {
        name: "source".into(),
        kind: RenditionKind::Video,
        bandwidth: 4_000_000,
    }];
    if rung {
        p.push(RenditionPlan {
            name: "720p".into(),
            kind: RenditionKind::Video,
            bandwidth: 3_000_000,
        });
    }
    p.push(RenditionPlan {
        name: "audio".into(),
        kind: RenditionKind::Audio,
        bandwidth: 128_000,
    });
    p
}

/// The simulated encoder, node(s) and viewer.
struct Sim {
    start: Instant,
    /// Virtual wall clock, ns since `start`.
    now_ns: u64,
    /// Source timestamp at `now_ns` (moves with the clock, jumps with `Jump`).
    media_ns: u64,
    audio_media_ns: u64,
    frame: u64,
    origin: Origin,
    handle: Option<StreamHandle>,
    rung: bool,
    /// The ingest's grid for sources whose keyframes are too far apart ([`KeyGrid`]), as the
    /// ingest keeps it: the transcoded rung gets keyframes where it says and every video
    /// rendition is ordered to cut there. `None`: the rung repeats the source's keyframes
    /// only, as the ingest did before the grid.
    grid: Option<KeyGrid>,
    expect: Expect,
    histories: HashMap<String, History>,
    next_check_ns: u64,
    cfg: PackagerConfig,
    /// When media last resumed after a pause (gap, reconnect).
    resumed_ns: u64,
    /// How far (media ns) the audio is pushed ahead of the video (negative: behind), as when
    /// the demuxer hands audio straight on while video waits in a queue (or the other way).
    audio_lead_ns: i64,
    /// Whether the lead varies, from nothing to `audio_lead_ns` every 0.45 s, as when RTMP or
    /// SRT deliver media in bursts of varying size.
    audio_bursts: bool,
    /// Audio that would arrive within this long of the start arrives at its end, in one burst
    /// (the first audio reaches the packager late while the ingest's pipeline starts).
    audio_start_burst_ns: u64,
}

impl Sim {
    fn new(cfg: PackagerConfig, keyframe_segments: bool, grid: bool) -> Self {
        let origin = Origin::new(cfg.clone());
        let mut sim = Self {
            start: Instant::now(),
            now_ns: 0,
            media_ns: 0,
            audio_media_ns: 0,
            frame: 0,
            origin,
            handle: None,
            rung: true,
            grid: None,
            expect: Expect {
                keyframe_segments,
                align_tolerance: 0.001,
            },
            histories: HashMap::new(),
            next_check_ns: 0,
            cfg,
            resumed_ns: 0,
            audio_lead_ns: 0,
            audio_bursts: false,
            audio_start_burst_ns: 0,
        };
        if grid {
            sim.grid = Some(KeyGrid::new(sim.cfg.segment_target));
        }
        sim.connect(None);
        sim
    }

    fn connect(&mut self, continuation: Option<crate::Continuation>) {
        let h = self.origin.publish_with(PID, plan(self.rung), continuation);
        h.configure("source", h264_info().config).unwrap();
        if self.rung {
            h.configure("720p", h264_info().config).unwrap();
        }
        h.configure("audio", aac_info().config).unwrap();
        self.handle = Some(h);
    }

    fn at(&self, ns: u64) -> Instant {
        self.start + Duration::from_nanos(ns)
    }

    fn run(&mut self, secs: u64, fps: u64, gop: u64) -> Result<(), TestCaseError> {
        let frame_ns = 1_000_000_000 / fps;
        let end = self.now_ns + secs * 1_000_000_000;
        let mut first = true;
        while self.now_ns < end {
            let Some(h) = self.handle.as_ref() else {
                return Ok(());
            };
            // Frames jitter by up to 7 ms on the way in (network), never earlier than sent.
            let jitter = (self.frame * 7_919) % 7_000_000;
            let arrival = Some(self.at(self.now_ns + jitter));
            let keyframe = first || self.frame.is_multiple_of(gop);
            first = false;
            // With the grid, the rung is keyframed where it says (and on the source's time
            // base, as the ingest's running time puts every rendition); otherwise it repeats
            // the source's keyframes, 1000 hours ahead (the encoders' shift).
            let (rung_key, rung_shift) = match self.grid.as_mut() {
                Some(g) => match g.frame(self.media_ns, self.media_ns, keyframe) {
                    GridStep::None => (false, 0),
                    GridStep::Keyframe => (true, 0),
                    GridStep::Cut { at, .. } => {
                        h.cut_video_at(at);
                        (true, 0)
                    }
                },
                None => (keyframe, ENCODER_SHIFT_NS),
            };
            let video = |shift: u64, keyframe: bool| Sample {
                pts_ns: self.media_ns + shift,
                dts_ns: self.media_ns + shift,
                keyframe,
                data: bytes::Bytes::from(vec![7u8; if keyframe { 3000 } else { 300 }]),
                arrival,
            };
            h.push("source", video(0, keyframe)).unwrap();
            if self.rung {
                h.push("720p", video(rung_shift, rung_key)).unwrap();
            }
            // Audio: 1024-sample frames at 48 kHz, up to the video's time (plus the lead). Each
            // arrived when its media did, whenever it is pushed.
            let lead = if self.audio_bursts {
                // A pseudo-random fraction (0, 1/4, ..., 4/4) of the lead per 0.45 s.
                let burst = (self.now_ns / 450_000_000).wrapping_mul(7_919) % 5;
                self.audio_lead_ns * burst as i64 / 4
            } else {
                self.audio_lead_ns
            };
            let audio_until = self.media_ns.saturating_add_signed(lead);
            while self.audio_media_ns <= audio_until {
                let ahead = self.audio_media_ns as i64 - self.media_ns as i64;
                let sample = Sample {
                    pts_ns: self.audio_media_ns,
                    dts_ns: self.audio_media_ns,
                    keyframe: true,
                    data: bytes::Bytes::from_static(&[1u8; 40]),
                    arrival: Some(
                        self.at((self.now_ns + 2_000_000)
                            .saturating_add_signed(ahead)
                            .max(self.audio_start_burst_ns)),
                    ),
                };
                h.push("audio", sample).unwrap();
                self.audio_media_ns += 1024 * 1_000_000_000 / 48_000;
            }
            self.frame += 1;
            self.now_ns += frame_ns;
            self.media_ns += frame_ns;
            if self.now_ns >= self.next_check_ns {
                self.next_check_ns = self.now_ns + CHECK_EVERY_NS;
                self.check()?;
            }
        }
        Ok(())
    }

    fn apply(&mut self, s: &Step) -> Result<(), TestCaseError> {
        match *s {
            Step::Run { secs, fps, gop } => self.run(secs, fps, gop)?,
            Step::Jump { back, secs } => {
                let d = secs * 1_000_000_000;
                self.media_ns = if back {
                    self.media_ns.saturating_sub(d)
                } else {
                    self.media_ns + d
                };
                self.audio_media_ns = self.media_ns;
                self.run(1, 30, 30)?;
            }
            Step::Gap { secs } => {
                let d = secs * 1_000_000_000;
                self.now_ns += d;
                self.resumed_ns = self.now_ns;
                self.media_ns += d;
                self.audio_media_ns = self.media_ns;
                self.run(1, 30, 30)?;
            }
            Step::Reconnect { other_node, rung } => {
                self.handle = None;
                self.rung = rung;
                // A new publisher gets a new pipeline: its grid starts over.
                if self.grid.is_some() {
                    self.grid = Some(KeyGrid::new(self.cfg.segment_target));
                }
                // A new encoder session: timestamps restart near zero.
                self.media_ns = 0;
                self.audio_media_ns = 0;
                self.now_ns += 1_500_000_000;
                self.resumed_ns = self.now_ns;
                if other_node {
                    let cont = self.origin.continuation(PID);
                    self.origin = Origin::new(self.cfg.clone());
                    // The new node's `Instant`s are the same clock; its wall clock may differ,
                    // which the continuation's PDT floor absorbs.
                    self.connect(cont);
                } else {
                    self.connect(None);
                }
                self.run(2, 30, 30)?;
            }
        }
        self.check()
    }

    /// Every playlist of every rendition of the current plan, full and delta, against the rules.
    fn check(&mut self) -> Result<(), TestCaseError> {
        let Some(stream) = self.origin.stream(PID) else {
            return Ok(());
        };
        let st = stream.state.lock();
        let mut latest: Vec<(String, rules::Playlist, String)> = Vec::new();
        for t in st.plan_tracks() {
            if t.last_part().is_none() {
                continue;
            }
            for skip in [false, true] {
                let text = crate::playlist::render_media(
                    &t.playlist(crate::server::reports(&st, t.name())),
                    skip,
                );
                // Keyframe-led segments are promised as without the grid: where every keyframe
                // interval fits (then the grid never starts). A source whose keyframes are too
                // far apart starts it, and its rung's segments are then keyframe-led too (the
                // end-to-end test shows it); before it starts, a keyframe interval that fits
                // but falls badly against the segment target still makes a cut without one.
                let expect = Expect {
                    keyframe_segments: self.expect.keyframe_segments
                        && t.kind() == RenditionKind::Video,
                    ..self.expect
                };
                let pl = rules::check(&text, &expect).map_err(|e| {
                    TestCaseError::fail(format!("{} (skip={skip}): {e:?}\n{text}", t.name()))
                })?;
                if !skip {
                    let errs = self
                        .histories
                        .entry(t.name().to_string())
                        .or_default()
                        .observe(&pl);
                    prop_assert!(errs.is_empty(), "{}: {errs:?}\n{text}", t.name());
                    // The newest segment's PDT is its first frame's arrival, and the media
                    // it lists ends about now: not in the future (the 1000-hour bug), and,
                    // while media flows, behind the clock by at most the part being built,
                    // the sample held back for its duration, and the arrival jitter.
                    if let Some(s) = pl.segments.last() {
                        let now = st.timeline.wall_ns(self.at(self.now_ns)) as f64 / 1e9;
                        let pdt = s.pdt.unwrap_or(0.0);
                        prop_assert!(
                            pdt <= now + 0.01,
                            "{}: newest PDT {pdt:.3} is after the clock {now:.3}\n{text}",
                            t.name()
                        );
                        let flowing = self.now_ns.saturating_sub(self.resumed_ns) > 8_000_000_000;
                        // Audio pushed late (`audio_lead_ns` < 0) is that much further behind.
                        let lag = (-self.audio_lead_ns).max(0) as f64 / 1e9;
                        let behind = self.cfg.part_target.as_secs_f64() + 0.2 + lag;
                        prop_assert!(
                            !flowing || pdt + s.duration >= now - behind,
                            "{}: newest media ends at {:.3} but the clock reads {now:.3}\n{text}",
                            t.name(),
                            pdt + s.duration
                        );
                    }
                    latest.push((t.name().to_string(), pl, text));
                }
            }
        }
        let named: Vec<(&str, &rules::Playlist)> =
            latest.iter().map(|(n, p, _)| (n.as_str(), p)).collect();
        let errs = rules::check_aligned(&named, &self.expect);
        let texts: Vec<&str> = latest.iter().map(|(_, _, t)| t.as_str()).collect();
        prop_assert!(
            errs.is_empty(),
            "renditions disagree: {errs:?}\n{}",
            texts.join("\n")
        );
        Ok(())
    }
}

/// Cases per run: 12 in CI (about a minute in a debug build); `EDGE_PROP_CASES=N` for a longer
/// hunt (an opt-in long variant, as the soak tests are).
const DEFAULT_CASES: u32 = 12;

fn cases() -> u32 {
    std::env::var("EDGE_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 50, ..ProptestConfig::default() })]

    #[test]
    fn playlists_follow_the_rules_through_hours_of_media(
        cfg in config(),
        steps in prop::collection::vec(step(), 5..30),
        grid in prop::bool::weighted(0.3),
    ) {
        // The cutter cannot see the next keyframe: it promises keyframe-first segments only when
        // any keyframe interval fits between the segment target and the limit the fixed target
        // duration allows (regular GOPs do better: see the cutter's unit tests).
        let td = cfg.segment_target.as_secs_f64().ceil();
        let slack = td + 0.45 - cfg.segment_target.as_secs_f64();
        let keyframe_segments = steps.iter().all(|s| match s {
            Step::Run { fps, gop, .. } => (*gop as f64) / (*fps as f64) <= slack,
            Step::Jump { .. } | Step::Gap { .. } | Step::Reconnect { .. } => 1.0 <= slack,
        });
        let mut sim = Sim::new(cfg, keyframe_segments, grid);
        for s in &steps {
            sim.apply(s)?;
        }
    }
}

/// Audio pushed ahead of (or behind) the video of the same media time, by a varying amount, as
/// the ingest does when RTMP or SRT deliver a burst and the demuxer hands its audio straight to
/// the packager while the video waits in a queue: the audio must still end segment N where the
/// video does, so that its EXTINF agrees with the PDT step it shares with the video (rules:
/// PDT(n+1) - PDT(n) = EXTINF(n) within 0.1 s) and its PDT is that of its first sample.
#[test]
fn audio_pushed_ahead_of_video_keeps_pdt_steps() {
    let cases = [
        (-300i64, false, 0u64),
        (300, false, 0),
        (300, true, 0),
        (700, true, 0),
        (0, false, 200),
        (300, true, 200),
    ];
    for (lead_ms, bursts, start_burst_ms) in cases {
        for (part, seg, gop) in [(333u64, 2000u64, 60u64), (200, 1000, 30), (250, 2000, 45)] {
            let cfg = PackagerConfig {
                part_target: Duration::from_millis(part),
                segment_target: Duration::from_millis(seg),
                window_segments: 6,
                ended_retention: Duration::from_secs(60),
                ready_timeout: Duration::from_millis(10),
                keyframe_join: false,
                part_hold_back_parts: 2,
            };
            let mut sim = Sim::new(cfg, true, false);
            sim.audio_lead_ns = lead_ms * 1_000_000;
            sim.audio_bursts = bursts;
            sim.audio_start_burst_ns = start_burst_ms * 1_000_000;
            let mut steps = vec![Step::Run {
                secs: 40,
                fps: 30,
                gop,
            }];
            if lead_ms > 0 {
                // Late audio would lose its last `-lead_ms` before a jump in this simulation.
                steps.push(Step::Jump {
                    back: false,
                    secs: 5,
                });
                steps.push(Step::Run {
                    secs: 20,
                    fps: 30,
                    gop,
                });
            }
            for s in &steps {
                if let Err(e) = sim.apply(s) {
                    panic!("audio lead {lead_ms} ms (bursts: {bursts}, start burst {start_burst_ms} ms), part {part} ms, segment {seg} ms: {e}");
                }
                let lead = pdt_lead_error(&sim);
                assert!(
                    lead < 0.001,
                    "audio lead {lead_ms} ms (bursts: {bursts}, start burst {start_burst_ms} ms), part {part} ms, segment {seg} ms: \
                     an audio segment's PDT is {lead:.3} s away from its first sample's"
                );
                let skew = start_skew(&sim);
                assert!(
                    skew < 0.05,
                    "audio lead {lead_ms} ms (bursts: {bursts}, start burst {start_burst_ms} ms), part {part} ms, segment {seg} ms: \
                     audio segments start up to {skew:.3} s away from the video's"
                );
            }
        }
    }
}

/// The largest difference between how far an audio segment's PDT is from the source's of the
/// same MSN and how far its media starts from the source's (same timestamp base in [`Sim`]):
/// each PDT is its own first sample's. Leaves out segments next to a discontinuity. With the
/// video's PDT on the audio segments it was 11 to 15 ms; with the distance taken on the audio's
/// clock (its arrivals), up to 5 ms; taken in media time, none.
fn pdt_lead_error(sim: &Sim) -> f64 {
    let Some(stream) = sim.origin.stream(PID) else {
        return 0.0;
    };
    let st = stream.state.lock();
    let (Some(video), Some(audio)) = (st.track("source"), st.track("audio")) else {
        return 0.0;
    };
    let (vp, ap) = (video.playlist(Vec::new()), audio.playlist(Vec::new()));
    let pdt = |pl: &crate::playlist::MediaPlaylist, msn: u64| -> Option<f64> {
        let s = pl.segments.iter().find(|s| s.msn == msn && !s.gap)?;
        Some(
            s.pdt?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs_f64(),
        )
    };
    let first = ap.segments.first().map_or(0, |s| s.msn);
    let last = video.last_complete_msn().unwrap_or(0);
    (first..=last)
        .filter(|m| !near_discontinuity(video, audio, *m))
        .filter_map(|m| {
            let media = segment_start(audio, m)? - segment_start(video, m)?;
            Some((pdt(&ap, m)? - pdt(&vp, m)? - media).abs())
        })
        .fold(0.0, f64::max)
}

/// Where (seconds of media, from its tfdt) a track's complete segment `msn` starts.
fn segment_start(t: &crate::track::Track, msn: u64) -> Option<f64> {
    use mp4_atom::{Decode, Moof};
    let parts = t.segment(msn)?;
    let moof = Moof::decode(&mut parts.first()?.as_ref()).ok()?;
    let tfdt = moof.traf.first()?.tfdt.as_ref()?.base_media_decode_time;
    Some(tfdt as f64 / f64::from(t.codec()?.timescale))
}

/// Whether either track has a discontinuity at `msn` or next to it.
fn near_discontinuity(video: &crate::track::Track, audio: &crate::track::Track, msn: u64) -> bool {
    [video, audio].iter().any(|t| {
        let pl = t.playlist(Vec::new());
        pl.segments
            .iter()
            .any(|s| s.discontinuity && s.msn.abs_diff(msn) <= 1)
    })
}

/// The largest distance, in seconds of media, between where the source's and the audio's
/// complete segments of the same MSN start (same timestamp base in [`Sim`]); segments next to a
/// discontinuity are left out (a jump may leave a sliver in one rendition only).
fn start_skew(sim: &Sim) -> f64 {
    let Some(stream) = sim.origin.stream(PID) else {
        return 0.0;
    };
    let st = stream.state.lock();
    let (Some(video), Some(audio)) = (st.track("source"), st.track("audio")) else {
        return 0.0;
    };
    let last = video.last_complete_msn().unwrap_or(0);
    (last.saturating_sub(8)..=last)
        .filter(|m| !near_discontinuity(video, audio, *m))
        .filter_map(|m| Some((segment_start(video, m)? - segment_start(audio, m)?).abs()))
        .fold(0.0, f64::max)
}
