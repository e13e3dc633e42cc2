//! Unit tests of `pipeline` (kept beside it; compiled only for tests).

use super::*;

#[test]
fn rung_sizes_keep_aspect_and_are_even() {
    assert_eq!(rung_size(720, 1920, 1080), (1280, 720));
    assert_eq!(rung_size(360, 1920, 1080), (640, 360));
    assert_eq!(rung_size(480, 1920, 1080), (852, 480)); // 853.3 rounded down to even
    assert_eq!(rung_size(360, 1080, 1920), (202, 360)); // portrait
    let (w, _) = rung_size(240, 640, 360);
    assert_eq!(w % 2, 0);
}

#[test]
fn rungs_above_source_are_skipped() {
    let cfg = edge_config::load_str(edge_config::DEV_CONFIG, "dev").unwrap();
    let names = |h| {
        rungs_for_source(&cfg.ladder, h)
            .into_iter()
            .map(|r| r.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(1080), ["720p", "480p", "360p"]);
    assert_eq!(names(480), ["480p", "360p"]);
    assert_eq!(names(240), Vec::<String>::new());
}
