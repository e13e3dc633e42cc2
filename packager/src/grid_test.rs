//! Unit tests of `grid` (kept beside it; compiled only for tests).

use super::*;

/// 30 fps frames for `secs` s as [`KeyGrid::frame`] sees them (decode order; running time, ns),
/// keyframes where `key(frame index)`, with two B-frames between references when `b_frames`
/// (each P-frame shown after the two B-frames decoded after it): each frame's PTS and step.
fn grid_steps_with(secs: u64, b_frames: bool, key: impl Fn(u64) -> bool) -> Vec<(u64, GridStep)> {
    let frame = 1_000_000_000 / 30;
    let mut g = KeyGrid::new(std::time::Duration::from_secs(2));
    (0..secs * 30)
        .map(|i| {
            let dts = 5_000_000 + i * frame;
            // Decode order I P B B P B B ...: a P-frame is shown two frames later, its B-frames
            // one frame earlier than decoded (the decoder delay is one frame).
            let pts = if !b_frames || i == 0 || key(i) {
                dts + frame
            } else if i % 3 == 1 {
                dts + 3 * frame
            } else {
                dts
            };
            (pts, g.frame(dts, pts, key(i)))
        })
        .collect()
}

fn cuts_of(steps: &[(u64, GridStep)]) -> Vec<(u64, bool)> {
    steps
        .iter()
        .filter_map(|(pts, s)| match s {
            GridStep::Cut { at, first } => {
                assert!(at <= pts, "a cut at {at} after its frame at {pts}");
                Some((*at, *first))
            }
            _ => None,
        })
        .collect()
}

/// Every cut but the first is 2 s (to a frame) after the one before.
fn assert_every_2_s(cuts: &[(u64, bool)]) {
    let frame = 1_000_000_000 / 30;
    assert!(cuts[0].1);
    assert!(cuts[1..].iter().all(|(_, f)| !f));
    for w in cuts.windows(2) {
        let step = w[1].0 - w[0].0;
        assert!(
            (2_000_000_000 - 10_000_000..2_000_000_000 + frame).contains(&step),
            "cuts {step} ns apart: {cuts:?}"
        );
    }
}

#[test]
fn keyframes_within_the_segment_target_keep_segments_on_the_source_s_keyframes() {
    // Every 2 s, and every 2.2 s (late, but within KEYFRAME_GRACE), with and without B-frames:
    // never a grid.
    for gop in [60, 66] {
        for b_frames in [false, true] {
            let steps = grid_steps_with(60, b_frames, |i| i % gop == 0);
            assert!(cuts_of(&steps).is_empty(), "gop {gop}");
            let keys = steps
                .iter()
                .filter(|(_, s)| *s == GridStep::Keyframe)
                .count();
            assert_eq!(keys as u64, (60_u64 * 30).div_ceil(gop), "gop {gop}");
        }
    }
}

#[test]
fn keyframes_too_far_apart_put_the_segments_on_a_grid_for_good() {
    let grace = u64::try_from(KEYFRAME_GRACE.as_nanos()).unwrap();
    // Every 8 s (OBS's automatic keyframe interval at 30 fps is about that), with and without
    // B-frames (whose PTS lie before the frame decoded before them: no cut for that).
    for b_frames in [false, true] {
        let steps = grid_steps_with(60, b_frames, |i| i % 240 == 0);
        let first = steps[0].0;
        assert_eq!(steps[0].1, GridStep::Keyframe);
        let cuts = cuts_of(&steps);
        // The grid starts 2.25 s (target + KEYFRAME_GRACE) after the keyframe (its first cut
        // at the first frame shown then or after).
        assert_eq!(cuts[0].0, first + 2_000_000_000 + grace, "{cuts:?}");
        // Then one cut every 2 s, the source's later keyframes ignored.
        assert_every_2_s(&cuts);
        assert_eq!(cuts.len(), 29, "{cuts:?}");
        let keys = steps
            .iter()
            .filter(|(_, s)| *s == GridStep::Keyframe)
            .count();
        assert_eq!(keys, 1);
    }
    // A first GOP of 3 s, then keyframes every 2 s that would have been in time: decided once.
    let steps = grid_steps_with(20, false, |i| i == 0 || (i >= 90 && (i - 90) % 60 == 0));
    let cuts = cuts_of(&steps);
    assert_every_2_s(&cuts);
    assert_eq!(cuts.len(), 9, "{cuts:?}");
    assert_eq!(
        steps
            .iter()
            .filter(|(_, s)| *s == GridStep::Keyframe)
            .count(),
        1
    );
}

#[test]
fn a_timestamp_jump_restarts_the_grid_where_it_went() {
    let frame = 1_000_000_000 / 30;
    let mut g = KeyGrid::new(std::time::Duration::from_secs(2));
    let mut run = |from: u64, n: u64, first_key: bool| -> Vec<(u64, GridStep)> {
        (0..n)
            .map(|i| {
                let t = from + i * frame;
                (t, g.frame(t, t, first_key && i == 0))
            })
            .collect()
    };
    let before = run(20_000_000_000, 150, true);
    assert_eq!(cuts_of(&before).len(), 2);
    // Back 10 s: a cut at the first frame there, then every 2 s from it.
    let back = run(10_000_000_000, 100, false);
    assert_eq!(
        back[0].1,
        GridStep::Cut {
            at: back[0].0,
            first: false
        }
    );
    assert_eq!(cuts_of(&back).len(), 2);
    assert!(cuts_of(&back)[1].0 - back[0].0 >= 2_000_000_000 - 10_000_000);
    // Forward by 1.5 s (over a frame's longest duration): a cut there too.
    let ahead = run(back.last().unwrap().0 + 1_500_000_000, 10, false);
    assert!(matches!(ahead[0].1, GridStep::Cut { first: false, .. }));
}
