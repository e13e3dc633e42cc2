//! Unit tests of `rules` (kept beside it; compiled only for tests).

use super::*;

const GOOD: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.01400
#EXT-X-PART-INF:PART-TARGET=0.33800
#EXT-X-MEDIA-SEQUENCE:4
#EXT-X-DISCONTINUITY-SEQUENCE:1
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-12-01T22:23:00.000Z
#EXTINF:2.00000,
seg4.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI=\"init1.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-12-01T22:23:05.000Z
#EXT-X-PART:DURATION=0.30000,URI=\"part5.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.30000,URI=\"part5.1.m4s\"
#EXTINF:0.60000,
seg5.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-12-01T22:23:05.600Z
#EXT-X-PART:DURATION=0.30000,URI=\"part6.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part6.1.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=6,LAST-PART=0
";

#[test]
fn a_good_playlist_passes_and_parses() {
    let pl = check(
        GOOD,
        &Expect {
            keyframe_segments: true,
            ..Expect::default()
        },
    )
    .unwrap();
    assert_eq!(pl.segments.len(), 3);
    assert_eq!(pl.segments[1].discontinuity_number, 2);
    assert_eq!(pl.segments[2].discontinuity_number, 2);
    assert_eq!(pl.last_part(), Some((6, 0)));
    assert_eq!(pl.segments[0].pdt, Some(1_796_163_780.0));
}

fn violations(text: &str) -> Vec<String> {
    check(
        text,
        &Expect {
            keyframe_segments: true,
            ..Expect::default()
        },
    )
    .unwrap_err()
}

#[test]
fn each_rule_is_enforced() {
    let cases = [
        ("EXTINF:2.00000", "EXTINF:2.60000", "TARGETDURATION"),
        ("part6.1.m4s\"", "part6.2.m4s\"", "preload hint"),
        ("22:23:05.600Z", "22:23:05.900Z", "PDT of segment 6"),
        ("22:23:05.000Z", "22:22:59.000Z", "does not follow"),
        (
            "URI=\"part6.0.m4s\",INDEPENDENT=YES",
            "URI=\"part6.0.m4s\"",
            "independent",
        ),
        (
            "PART-HOLD-BACK=1.01400",
            "PART-HOLD-BACK=0.5",
            "PART-HOLD-BACK",
        ),
        ("#EXT-X-MAP:URI=\"init1.mp4\"\n", "", "without EXT-X-MAP"),
        (
            "DURATION=0.30000,URI=\"part5.1",
            "DURATION=0.40000,URI=\"part5.1",
            "PART-TARGET",
        ),
    ];
    for (from, to, what) in cases {
        let text = GOOD.replace(from, to);
        assert_ne!(text, GOOD, "case {what} did not change the playlist");
        let errs = violations(&text);
        assert!(
            errs.iter().any(|e| e.contains(what)),
            "changing {from:?} to {to:?} should violate {what:?}; got {errs:?}"
        );
    }
}

#[test]
fn history_catches_changes_over_time() {
    let mut h = History::default();
    let pl = parse(GOOD).unwrap();
    assert!(h.observe(&pl).is_empty());
    let changed = parse(&GOOD.replace("TARGETDURATION:2", "TARGETDURATION:3")).unwrap();
    assert!(h
        .observe(&changed)
        .iter()
        .any(|e| e.contains("TARGETDURATION changed")));
    // The hinted part 6.1 must exist once 7.0 does.
    let mut h = History::default();
    h.observe(&pl);
    let skipped = parse(&GOOD.replace(
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part6.1.m4s\"",
        "#EXTINF:0.30000,\nseg6.m4s\n#EXT-X-PART:DURATION=0.30000,URI=\"part7.0.m4s\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part7.1.m4s\"",
    ))
    .unwrap();
    assert!(
        h.observe(&skipped)
            .iter()
            .any(|e| e.contains("hinted part 6.1")),
        "a hint that was never published went unnoticed"
    );
}

#[test]
fn alignment_compares_pdt_and_discontinuities() {
    let a = parse(GOOD).unwrap();
    let b = parse(&GOOD.replace("22:23:05.600Z", "22:23:05.700Z")).unwrap();
    let errs = check_aligned(&[("video", &a), ("audio", &b)], &Expect::default());
    assert!(
        errs.iter().any(|e| e.contains("segment 6 has PDT")),
        "{errs:?}"
    );
    assert!(check_aligned(&[("video", &a), ("audio", &a)], &Expect::default()).is_empty());
}

#[test]
fn audio_pdt_may_lead_by_its_first_frame_and_video_pdt_may_not() {
    let a = parse(GOOD).unwrap();
    let at = |t: &str| parse(&GOOD.replace("22:23:05.600Z", t)).unwrap();
    let later = at("22:23:05.650Z");
    // The audio's segment starts on its first frame after the video's boundary.
    assert!(check_aligned(&[("360p", &a), ("audio", &later)], &Expect::default()).is_empty());
    assert!(check_aligned(&[("audio", &later), ("360p", &a)], &Expect::default()).is_empty());
    // But not a tenth of a second after it, nor 20 ms before it, and two video renditions
    // agree to the millisecond.
    for (name, b) in [
        ("audio", at("22:23:05.720Z")),
        ("audio", at("22:23:05.580Z")),
        ("240p", at("22:23:05.605Z")),
    ] {
        let errs = check_aligned(&[("360p", &a), (name, &b)], &Expect::default());
        assert!(
            errs.iter().any(|e| e.contains("segment 6 has PDT")),
            "{name}: {errs:?}"
        );
    }
}
