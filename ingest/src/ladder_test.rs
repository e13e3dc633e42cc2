//! Unit tests of `ladder`.

use super::*;

#[test]
fn rung_sizes_keep_aspect_and_are_even() {
    assert_eq!(rung_size(720, 1920, 1080), (1280, 720));
    assert_eq!(rung_size(360, 1920, 1080), (640, 360));
    assert_eq!(rung_size(480, 1920, 1080), (852, 480)); // 853.3 rounded down to even
    let (w, _) = rung_size(240, 640, 360);
    assert_eq!(w % 2, 0);
}

#[test]
fn a_rung_height_is_the_short_side() {
    // A vertical phone stream keeps its aspect ratio: 720-wide, not 720-high.
    assert_eq!(rung_size(720, 1080, 1920), (720, 1280));
    assert_eq!(rung_size(480, 720, 1280), (480, 852));
    assert_eq!(rung_size(360, 720, 1280), (360, 640));
}

fn names(ladder: &[Rung], w: u32, h: u32, passthrough: bool) -> Vec<String> {
    rungs_for_source(ladder, w, h, passthrough)
        .into_iter()
        .map(|r| r.name)
        .collect()
}

#[test]
fn rungs_not_smaller_than_the_source_are_skipped_with_passthrough() {
    let cfg = edge_config::load_str(edge_config::DEV_CONFIG, "dev").expect("dev config");
    assert_eq!(
        names(&cfg.ladder, 1920, 1080, true),
        ["720p", "480p", "360p"]
    );
    // A 720p source: its own size comes from passthrough, so no 720p re-encode.
    assert_eq!(names(&cfg.ladder, 1280, 720, true), ["480p", "360p"]);
    assert_eq!(names(&cfg.ladder, 720, 1280, true), ["480p", "360p"]);
    assert_eq!(names(&cfg.ladder, 854, 480, true), ["360p"]);
    assert_eq!(names(&cfg.ladder, 426, 240, true), Vec::<String>::new());
    // Without passthrough the same-size rung is the only full-size rendition.
    assert_eq!(
        names(&cfg.ladder, 1280, 720, false),
        ["720p", "480p", "360p"]
    );
}

#[test]
fn rungs_scale_in_cascade_from_the_smallest_larger_rung() {
    let shape = |width, height, fps| RungShape { width, height, fps };
    // Given smallest first, built largest first; each from the rung above it.
    let shapes = [
        shape(640, 360, 30),
        shape(1280, 720, 30),
        shape(852, 480, 30),
    ];
    assert_eq!(
        cascade(&shapes),
        vec![(1, None), (2, Some(1)), (0, Some(2))]
    );
    // A faster rung cannot come from a slower one; a wider one not from a narrower one.
    let shapes = [
        shape(1280, 720, 30),
        shape(852, 480, 60),
        shape(640, 360, 30),
    ];
    assert_eq!(cascade(&shapes), vec![(0, None), (1, None), (2, Some(1))]);
    let shapes = [
        shape(480, 852, 30),
        shape(852, 480, 30),
        shape(360, 640, 30),
    ];
    let plan = cascade(&shapes);
    assert_eq!(plan.len(), 3);
    assert!(plan.contains(&(2, Some(0))), "{plan:?}");
    assert!(
        plan.iter().any(|&(i, from)| i == 1 && from.is_none()),
        "{plan:?}"
    );
    assert!(cascade(&[]).is_empty());
}
