//! Unit tests of `cutter` (kept beside it; compiled only for tests).

use super::*;

/// A part as produced by the driver below.
#[derive(Debug, Clone)]
pub struct SimPart {
    pub duration: u64,
    pub first_is_key: bool,
    pub samples: usize,
}

/// A segment as produced by the driver below.
#[derive(Debug, Clone)]
pub struct SimSegment {
    pub start_pts: u64,
    pub duration: u64,
    pub parts: Vec<SimPart>,
    /// Keyframe PTS inside the segment (after its first sample).
    pub inner_keyframes: Vec<u64>,
}

/// Run (pts, keyframe) samples (PTS == DTS, increasing) through a cutter like the track does.
pub fn simulate(cfg: CutterConfig, samples: &[(u64, bool)]) -> Vec<SimSegment> {
    simulate_with_cuts(cfg, samples, &[])
}

/// [`simulate`], with cuts ordered (`Cutter::cut_at`) at `cuts` (PTS), each just before the
/// first sample at or after it is pushed (and so before it is the lookahead of the one before),
/// as the ingest orders them from the source's frames ahead of the packager.
pub fn simulate_with_cuts(
    cfg: CutterConfig,
    samples: &[(u64, bool)],
    cuts: &[u64],
) -> Vec<SimSegment> {
    let mut cutter = Cutter::new(cfg);
    let mut ordered = 0;
    let mut segments: Vec<SimSegment> = Vec::new();
    let mut seg: Option<SimSegment> = None;
    let mut part: Option<SimPart> = None;
    let close_part = |seg: &mut Option<SimSegment>, part: &mut Option<SimPart>| {
        if let (Some(s), Some(p)) = (seg.as_mut(), part.take()) {
            s.duration += p.duration;
            s.parts.push(p);
        }
    };
    for (i, &(pts, key)) in samples.iter().enumerate() {
        // Ordered before the sample after this one is seen as the lookahead.
        let horizon = samples.get(i + 1).map_or(u64::MAX, |n| n.0);
        while cuts.get(ordered).is_some_and(|c| *c <= horizon) {
            cutter.cut_at(cuts[ordered]);
            ordered += 1;
        }
        let (duration, next) = match samples.get(i + 1) {
            Some(&(npts, nkey)) => (
                npts - pts,
                Some(Lookahead {
                    pts: npts,
                    keyframe: nkey,
                    gap: false,
                    settled: true,
                }),
            ),
            None => (pts - samples[i - 1].0, None),
        };
        let s = CutSample {
            pts,
            duration,
            keyframe: key,
            gap_before: false,
        };
        let (start, end) = match cutter.push(&s, next) {
            Placement::Drop => continue,
            Placement::Add { start, end } => (start, end),
        };
        match start {
            Start::Segment => {
                close_part(&mut seg, &mut part);
                segments.extend(seg.take());
                seg = Some(SimSegment {
                    start_pts: pts,
                    duration: 0,
                    parts: vec![],
                    inner_keyframes: vec![],
                });
            }
            Start::Part => close_part(&mut seg, &mut part),
            Start::Continue => {}
        }
        if key && start != Start::Segment {
            if let Some(s) = seg.as_mut() {
                s.inner_keyframes.push(pts);
            }
        }
        let p = part.get_or_insert(SimPart {
            duration: 0,
            first_is_key: key,
            samples: 0,
        });
        p.duration += duration;
        p.samples += 1;
        match end {
            End::Segment => {
                close_part(&mut seg, &mut part);
                segments.extend(seg.take());
            }
            End::Part | End::PartUndecided => close_part(&mut seg, &mut part),
            End::Open => {}
        }
    }
    close_part(&mut seg, &mut part);
    segments.extend(seg.take());
    segments
}

const TS: u64 = 90_000;
const PART: u64 = 29_970; // 333 ms
const SEG: u64 = 180_000; // 2 s
const TOL: u64 = 900; // 10 ms

fn video_cfg() -> CutterConfig {
    CutterConfig {
        part_target: PART,
        segment_target: SEG,
        tolerance: TOL,
        max_segment: 30 * TS,
        mode: SegmentMode::Keyframe,
        follow_wait: 0,
    }
}

/// Deterministic pseudo-random numbers (xorshift), so the test is reproducible.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// An hour of video at `num/den` fps; keyframe when `is_key(frame index, pts)`.
fn video(
    num: u64,
    den: u64,
    secs: u64,
    mut is_key: impl FnMut(u64, u64) -> bool,
) -> Vec<(u64, bool)> {
    let frames = secs * num / den;
    (0..frames)
        .map(|i| {
            let pts = 1_000_000 + i * TS * den / num;
            (pts, is_key(i, pts))
        })
        .collect()
}

fn check_rules(cfg: &CutterConfig, segs: &[SimSegment]) {
    assert!(segs.len() > 10);
    let last = segs.len() - 1;
    for (si, s) in segs.iter().enumerate() {
        assert!(
            s.parts[0].first_is_key,
            "segment {si} starts without keyframe"
        );
        for (pi, p) in s.parts.iter().enumerate() {
            assert!(
                p.duration <= cfg.part_target,
                "part {si}.{pi} too long: {}",
                p.duration
            );
            if pi + 1 < s.parts.len() {
                assert!(
                    p.duration * 100 >= cfg.part_target * 85,
                    "non-final part {si}.{pi} too short: {} ({} samples)",
                    p.duration,
                    p.samples
                );
            }
        }
        if si < last && cfg.mode == SegmentMode::Keyframe {
            // Cut at the first qualifying keyframe, never before.
            assert!(
                s.duration + cfg.tolerance >= cfg.segment_target,
                "segment {si} short"
            );
            for k in &s.inner_keyframes {
                assert!(
                    k + cfg.tolerance < s.start_pts + cfg.segment_target,
                    "segment {si} passed a qualifying keyframe"
                );
            }
        }
    }
}

#[test]
fn hour_of_30fps_regular_gop() {
    let cfg = video_cfg();
    let samples = video(30, 1, 3600, |i, _| i % 60 == 0);
    let segs = simulate(cfg, &samples);
    check_rules(&cfg, &segs);
    assert_eq!(segs.len(), 1800);
    // Every segment exactly 2 s, 6 parts of 9 frames and one of 6 frames.
    assert!(segs[..segs.len() - 1].iter().all(|s| s.duration == SEG));
    assert_eq!(
        segs[0].parts.iter().map(|p| p.samples).collect::<Vec<_>>(),
        vec![9, 9, 9, 9, 9, 9, 6]
    );
}

#[test]
fn hour_of_2997fps_irregular_gops() {
    let cfg = video_cfg();
    let mut seed = 0x2545_f491_4f6c_dd1d;
    let mut next_key = 0;
    let samples = video(30_000, 1001, 3600, |i, _| {
        if i == next_key {
            // Next GOP between 0.5 s and 4 s (15..120 frames).
            next_key = i + 15 + rng(&mut seed) % 106;
            true
        } else {
            false
        }
    });
    let segs = simulate(cfg, &samples);
    check_rules(&cfg, &segs);
    // Some GOPs are longer than the target: segments longer than 2 s exist.
    assert!(segs.iter().any(|s| s.duration > SEG + 3 * 3003));
    // Mid-segment keyframes that did not qualify exist too.
    assert!(segs.iter().any(|s| !s.inner_keyframes.is_empty()));
}

#[test]
fn hour_of_aac_48k_grid() {
    let cfg = CutterConfig {
        part_target: 15_984,
        segment_target: 96_000,
        tolerance: 480,
        max_segment: 30 * 48_000,
        mode: SegmentMode::Grid,
        follow_wait: 0,
    };
    let frames = 3600 * 48_000 / 1024;
    let samples: Vec<(u64, bool)> = (0..frames).map(|i| (5_000 + i * 1024, true)).collect();
    let segs = simulate(cfg, &samples);
    check_rules(&cfg, &segs);
    // Parts of 15 frames (320 ms), every part independent.
    assert!(segs.iter().all(|s| s.parts.iter().all(|p| p.first_is_key)));
    assert_eq!(segs[0].parts[0].samples, 15);
    // No drift: segment k starts within one frame of the k-th 2 s boundary.
    for (k, s) in segs.iter().enumerate() {
        let ideal = 5_000 + k as u64 * 96_000;
        assert!(
            s.start_pts + 480 >= ideal && s.start_pts < ideal + 1024,
            "segment {k} drifted"
        );
    }
    assert_eq!(segs.len(), 1800);
}

#[test]
fn renditions_with_same_keyframe_pts_align() {
    let cfg = video_cfg();
    // Keyframes at the same instants (irregular GOPs of 1..3 s), 30 fps vs 15 fps vs 60 fps.
    let mut seed = 7u64;
    let mut keys = vec![0u64];
    while *keys.last().unwrap_or(&0) < 3600 * TS {
        let gap = (1 + rng(&mut seed) % 3) * TS / 2 * 2; // 1, 2 or 3 s
        keys.push(keys.last().unwrap_or(&0) + gap);
    }
    let key_at = |pts: u64| keys.binary_search(&(pts - 1_000_000)).is_ok();
    let a = simulate(cfg, &video(30, 1, 3600, |_, pts| key_at(pts)));
    let b = simulate(cfg, &video(15, 1, 3600, |_, pts| key_at(pts)));
    let c = simulate(cfg, &video(60, 1, 3600, |_, pts| key_at(pts)));
    let starts = |s: &[SimSegment]| s.iter().map(|x| x.start_pts).collect::<Vec<_>>();
    assert_eq!(starts(&a), starts(&b));
    assert_eq!(starts(&a), starts(&c));
    check_rules(&cfg, &a);
    check_rules(&cfg, &c);
}

#[test]
fn drops_until_first_keyframe_and_forces_long_segments() {
    let mut cfg = video_cfg();
    cfg.max_segment = 4 * TS;
    // Keyframe only at frame 10; none after.
    let samples = video(30, 1, 20, |i, _| i == 10);
    let segs = simulate(cfg, &samples);
    assert_eq!(segs[0].start_pts, samples[10].0);
    // Forced cuts every <= 4 s.
    assert!(segs.len() >= 4);
    assert!(segs.iter().all(|s| s.duration <= 4 * TS));
    assert!(!segs[1].parts[0].first_is_key);
}

#[test]
fn gap_forces_part_boundary() {
    let mut c = Cutter::new(video_cfg());
    let s = |pts, gap| CutSample {
        pts,
        duration: 3000,
        keyframe: pts == 0,
        gap_before: gap,
    };
    assert_eq!(
        c.push(&s(0, false), None),
        Placement::Add {
            start: Start::Segment,
            end: End::Open
        }
    );
    let next = Lookahead {
        pts: 900_000,
        keyframe: false,
        gap: true,
        settled: true,
    };
    assert_eq!(
        c.push(&s(3000, false), Some(next)),
        Placement::Add {
            start: Start::Continue,
            end: End::Part
        }
    );
    assert!(matches!(
        c.push(&s(900_000, true), None),
        Placement::Add {
            start: Start::Part,
            ..
        }
    ));
}

#[test]
fn gop_shorter_than_target_but_not_dividing_it_still_cuts_on_keyframes() {
    // 1.5 s GOP, 2 s target, limit 2.45 s (TARGETDURATION 2): 1.5 s segments, never forced.
    let mut cfg = video_cfg();
    cfg.max_segment = 2 * TS + TS * 45 / 100;
    let segs = simulate(cfg, &video(30, 1, 600, |i, _| i % 45 == 0));
    let durations: Vec<u64> = segs.iter().map(|s| s.duration).collect();
    assert!(
        segs.iter()
            .all(|s| s.parts[0].first_is_key && s.duration <= cfg.max_segment),
        "{durations:?}"
    );
    assert!(segs[..segs.len() - 1]
        .iter()
        .all(|s| s.duration == TS * 3 / 2));
    // A scene-cut keyframe in a 2 s GOP: a short segment, then back to 2 s, never forced.
    let segs = simulate(cfg, &video(30, 1, 600, |i, _| i % 60 == 0 || i == 45 + 600));
    assert!(segs
        .iter()
        .all(|s| s.parts[0].first_is_key && s.duration <= cfg.max_segment));
}

#[test]
fn a_sample_that_carries_a_hole_does_not_end_its_part_short() {
    // 30 fps, a keyframe every 2 s; frames 15 and 16 lost, so frame 14 lasts three frames.
    // Part 0 holds frames 0-8; part 1 starts at frame 9 and, with frame 14, reaches 24,000
    // ticks: the next frame assumed as long as the hole (9,000) would not fit, one frame
    // (3,000) does. Part 1 goes on to 27,000 ticks (90 % of the target) instead of ending at
    // 24,000 (80 %).
    let cfg = video_cfg();
    let samples: Vec<(u64, bool)> = (0..240u64)
        .filter(|i| *i != 15 && *i != 16)
        .map(|i| (i * 3000, i % 60 == 0))
        .collect();
    let segs = simulate(cfg, &samples);
    let parts: Vec<u64> = segs[0].parts.iter().map(|p| p.duration).collect();
    assert_eq!(&parts[..2], &[27_000, 27_000], "{parts:?}");
    for (si, s) in segs.iter().enumerate() {
        for (pi, p) in s.parts.iter().enumerate().take(s.parts.len() - 1) {
            assert!(
                p.duration * 100 >= cfg.part_target * 85,
                "part {si}.{pi}: {}",
                p.duration
            );
        }
    }
}

#[test]
fn an_undecided_end_closes_a_full_part_and_the_next_push_decides_the_segment() {
    // AAC at 48 kHz in follow mode, 200 ms parts: a part holds 9 frames (9,216 ticks).
    let frame = 1024;
    let cfg = CutterConfig {
        part_target: 9_600,
        segment_target: 96_000,
        tolerance: 480,
        max_segment: 3 * 96_000,
        mode: SegmentMode::Follow,
        follow_wait: 4 * 48_000,
    };
    let s = |i: u64| CutSample {
        pts: i * frame,
        duration: frame,
        keyframe: true,
        gap_before: false,
    };
    let next = |i: u64, settled| {
        Some(Lookahead {
            pts: i * frame,
            keyframe: true,
            gap: false,
            settled,
        })
    };
    for (boundary, expect_next) in [(9 * frame, Start::Segment), (20 * frame, Start::Part)] {
        let mut c = Cutter::new(cfg);
        c.set_boundary(Some(0));
        assert_eq!(
            c.push(&s(0), next(1, true)),
            Placement::Add {
                start: Start::Segment,
                end: End::Open
            }
        );
        for i in 1..8 {
            assert_eq!(
                c.push(&s(i), next(i + 1, false)),
                Placement::Add {
                    start: Start::Continue,
                    end: End::Open
                },
                "frame {i}"
            );
        }
        // Frame 8 fills the part; the video has not got past frame 9 yet.
        assert_eq!(
            c.push(&s(8), next(9, false)),
            Placement::Add {
                start: Start::Continue,
                end: End::PartUndecided
            }
        );
        // Now it has: the boundary is at frame 9 (next segment) or far away (next part).
        c.set_boundary(Some(boundary));
        assert_eq!(
            c.push(&s(9), next(10, true)),
            Placement::Add {
                start: expect_next,
                end: End::Open
            },
            "boundary {boundary}"
        );
    }
    // Undecided in the middle of a part: a boundary at the next frame still starts a segment
    // there (not the late-boundary path, which would end the segment one frame late).
    let mut c = Cutter::new(cfg);
    c.set_boundary(Some(0));
    c.push(&s(0), next(1, true));
    assert_eq!(
        c.push(&s(1), next(2, false)),
        Placement::Add {
            start: Start::Continue,
            end: End::Open
        }
    );
    c.set_boundary(Some(2 * frame));
    assert_eq!(
        c.push(&s(2), next(3, true)),
        Placement::Add {
            start: Start::Segment,
            end: End::Open
        }
    );
    // A known boundary settles the end whatever the lookahead says.
    c.set_boundary(Some(4 * frame));
    assert_eq!(
        c.push(&s(3), next(4, false)),
        Placement::Add {
            start: Start::Continue,
            end: End::Segment
        }
    );
}

/// Follow mode, AAC at 48 kHz (1,024-tick frames) from PTS 0 with its segment started: pushes
/// `frames` frames, handing in before each the video's part starts `known(i)` says are known,
/// and returns where parts start and, per frame, whether the part was closed after it.
fn follow_parts(
    part_target: u64,
    frames: u64,
    known: impl Fn(u64) -> Vec<u64>,
) -> (Vec<u64>, Vec<bool>) {
    let frame = 1024;
    let mut c = Cutter::new(CutterConfig {
        part_target,
        segment_target: 96_000,
        tolerance: 480,
        max_segment: 3 * 96_000,
        mode: SegmentMode::Follow,
        follow_wait: 4 * 48_000,
    });
    c.set_boundary(Some(0));
    let (mut starts, mut closed) = (vec![0u64], Vec::new());
    for i in 0..frames {
        c.set_part_boundaries(known(i));
        let s = CutSample {
            pts: i * frame,
            duration: frame,
            keyframe: true,
            gap_before: false,
        };
        let next = Lookahead {
            pts: (i + 1) * frame,
            keyframe: true,
            gap: false,
            settled: true,
        };
        let Placement::Add { start, end } = c.push(&s, Some(next)) else {
            panic!("frame {i} dropped");
        };
        if start == Start::Part {
            starts.push(s.pts);
        }
        closed.push(end == End::Part);
    }
    (starts, closed)
}

#[test]
fn follow_mode_parts_end_where_the_video_parts_start() {
    // Video parts start every 200 ms (9,600 ticks); the audio's part limit is ten frames
    // (10,320 ticks), and its parts end at the first frame at or after each of the video's part
    // starts (within the 10 ms tolerance), so they hold nine or ten frames and never drift.
    // The video's part starts are known as far as it has got: 15 ms past the next frame
    // (`Track::release` holds a frame until then).
    let frame = 1024;
    let (starts, closed) = follow_parts(10_320, 90, |i| {
        (1..10)
            .map(|k| k * 9_600)
            .filter(|b| *b <= (i + 1) * frame + 720)
            .collect()
    });
    for (i, closed) in (0u64..).zip(closed) {
        // A part is closed with the frame before the one that starts the next: the
        // lookahead's answer and the next push's agree.
        let (pts, next) = (i * frame, (i + 1) * frame);
        let closes = (1..10).any(|k| next + 480 >= k * 9_600 && pts + 480 < k * 9_600);
        assert_eq!(closed, closes, "frame {i}");
    }
    assert_eq!(starts.len(), 10);
    for (k, start) in (0u64..).zip(&starts) {
        let video = k * 9_600;
        assert!(
            *start + 480 >= video && *start + 480 < video + frame,
            "part {k} starts at {start}, the video's at {video}"
        );
    }
}

#[test]
fn follow_mode_part_boundaries_never_make_a_part_below_85_percent() {
    // The audio's segment started 60 ms after the video's (cut on its clock): the video's
    // first part start comes 273 ms in, under 85 % of the 16-frame target (0.343 s). The part
    // goes on to 14 frames (85 % of 16,464 ticks is 13,994; 13 frames are 13,312) instead, and
    // the next parts end on the video's part starts again: the first frame at or after
    // 29,120 - 480 and 45,120 - 480.
    let frame = 1024;
    let (starts, _) = follow_parts(16_464, 46, |_| vec![13_120, 29_120, 45_120]);
    assert_eq!(starts, vec![0, 14 * frame, 28 * frame, 44 * frame]);
}

/// A source whose keyframes are 8 s apart (OBS's automatic interval) and whose segments the
/// ingest orders on a 2 s grid from the first moment its keyframe came too late: every segment
/// starts at the first frame at or after its ordered cut, none is longer than the grid (but the
/// one the order ended), and the source's own keyframes start none once cuts are ordered, so a
/// transcoded rendition keyframed at the cuts alone cuts the same frames.
#[test]
fn ordered_cuts_start_segments_and_keyframes_no_longer_do() {
    let cfg = CutterConfig {
        max_segment: 2 * SEG + SEG / 4,
        ..video_cfg()
    };
    let frame = TS / 30;
    let source = video(30, 1, 60, |i, _| i % 240 == 0);
    let first = source[0].0;
    // Ordered 2.25 s after the first keyframe (no keyframe had come), then every 2 s.
    let trigger = first + SEG + SEG / 8;
    let cuts: Vec<u64> = (0..28).map(|k| trigger + k * SEG).collect();
    let segs = simulate_with_cuts(cfg, &source, &cuts);
    assert_eq!(segs[0].start_pts, first);
    for (seg, cut) in segs[1..].iter().zip(&cuts) {
        assert!(
            seg.start_pts >= *cut && seg.start_pts < cut + frame,
            "segment at {} for the cut at {cut}",
            seg.start_pts
        );
    }
    assert_eq!(segs.len(), cuts.len() + 1);
    // The source's keyframes at 8, 16 ... s fell inside segments.
    assert!(
        segs.iter()
            .filter(|s| !s.inner_keyframes.is_empty())
            .count()
            >= 6
    );
    // A rendition keyframed only at the cuts (a transcoded rung) cuts the same frames.
    let rung: Vec<(u64, bool)> = source
        .iter()
        .map(|(pts, _)| {
            (
                *pts,
                *pts == first || cuts.iter().any(|c| *pts >= *c && *pts < c + frame),
            )
        })
        .collect();
    let rung_segs = simulate_with_cuts(cfg, &rung, &cuts);
    let starts = |v: &[SimSegment]| v.iter().map(|s| s.start_pts).collect::<Vec<_>>();
    assert_eq!(starts(&rung_segs), starts(&segs));
    assert!(rung_segs.iter().all(|s| s.parts[0].first_is_key));
    // Without the orders the rung would cut at its keyframes too: the same starts.
    assert_eq!(starts(&simulate(cfg, &rung)[..10]), starts(&segs[..10]));
}
