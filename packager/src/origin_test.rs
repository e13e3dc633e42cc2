//! Unit tests of `origin` (kept beside it; compiled only for tests).

use super::*;
use crate::fmp4::tests::{aac_info, h264_info};
use crate::track::tests::{audio_plan, video_plan, video_sample};

fn origin() -> Origin {
    Origin::new(PackagerConfig::default())
}

#[test]
fn handles_are_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Origin>();
    assert_send_sync::<StreamHandle>();
}

#[test]
fn push_checks_plan_and_session() {
    let o = origin();
    let h = o.publish("s1", vec![video_plan("720p")]);
    assert!(matches!(
        h.configure("nope", h264_info().config),
        Err(PackagerError::UnknownRendition(_))
    ));
    assert!(matches!(
        h.push("720p", video_sample(0, None)),
        Err(PackagerError::NotConfigured(_))
    ));
    h.configure("720p", h264_info().config).unwrap();
    h.push("720p", video_sample(0, None)).unwrap();
    // A second publish takes over; the old handle is stale.
    let h2 = o.publish("s1", vec![video_plan("720p")]);
    assert!(matches!(
        h.push("720p", video_sample(1, None)),
        Err(PackagerError::SessionEnded)
    ));
    drop(h); // must not disturb h2's session
    assert!(o.streams()[0].publishing);
    h2.end();
    assert!(!o.streams()[0].publishing);
}

#[test]
fn continue_keeps_numbering_and_retires_renditions() {
    let o = origin();
    let h = o.publish("s", vec![video_plan("720p"), audio_plan()]);
    h.configure("720p", h264_info().config).unwrap();
    h.configure("audio", aac_info().config).unwrap();
    for i in 0..130 {
        h.push("720p", video_sample(i, None)).unwrap();
    }
    h.end();
    let before = o.streams();
    assert_eq!(before[0].renditions[0].msn, Some(2));
    let h = o.publish("s", vec![video_plan("720p")]);
    h.configure("720p", h264_info().config).unwrap();
    // 65 frames: segment 3 complete (frames 0..59), segment 4 still building its first part.
    for i in 0..65 {
        h.push("720p", video_sample(i, None)).unwrap();
    }
    let s = &o.streams()[0];
    assert_eq!(s.renditions.len(), 1);
    assert_eq!(s.renditions[0].msn, Some(3));
    let st = o.stream("s").unwrap();
    let st = st.state.lock();
    assert_eq!(st.track("audio").unwrap().state(), TrackState::Ended);
    let pl = st.track("720p").unwrap().playlist(vec![]);
    let seg3 = pl.segments.iter().find(|s| s.msn == 3).unwrap();
    assert!(seg3.discontinuity);
    assert_eq!(seg3.map_uri, "init.mp4");
}

#[test]
fn finish_then_expire_and_republish_continues_numbering() {
    let o = Origin::new(PackagerConfig {
        ended_retention: std::time::Duration::ZERO,
        ..PackagerConfig::default()
    });
    let h = o.publish("s", vec![video_plan("720p")]);
    h.configure("720p", h264_info().config).unwrap();
    for i in 0..70 {
        h.push("720p", video_sample(i, None)).unwrap();
    }
    o.finish("s");
    assert!(matches!(
        h.push("720p", video_sample(70, None)),
        Err(PackagerError::SessionEnded)
    ));
    // Retention zero: gone at once.
    assert!(o.streams().is_empty());
    assert!(o.continuation("s").is_none());
    drop(h);
    let o2 = origin();
    let h = o2.publish("s", vec![video_plan("720p")]);
    h.configure("720p", h264_info().config).unwrap();
    h.push("720p", video_sample(0, None)).unwrap();
    o2.finish("s");
    let h = o2.publish("s", vec![video_plan("720p")]);
    let c = o2.continuation("s").unwrap();
    assert_eq!(c.renditions[0].next_msn, 1);
    assert_eq!(c.renditions[0].next_init_id, 1);
    drop(h);
}

fn continuation(next_msn: u64, last_complete: Option<u64>, pdt_end_ms: u64) -> Continuation {
    Continuation {
        renditions: vec![RenditionContinuation {
            name: "720p".into(),
            next_msn,
            discontinuity_sequence: 4,
            next_init_id: 2,
            pdt_end_ms: Some(pdt_end_ms),
            last_complete_msn: last_complete,
        }],
    }
}

#[test]
fn a_continuation_from_elsewhere_skips_every_number_the_old_node_could_have_used() {
    let target = std::time::Duration::from_secs(2);
    let end_ms = 1_700_000_000_000;
    let end_ns = end_ms * 1_000_000;
    // 7.5 s after the old media ended: the old node had 10 open (9 in progress) at its report
    // and may have opened three more since (at most one per 2 s), and one in progress.
    let c = continuation(10, Some(8), end_ms);
    let wall = end_ns + 7_500_000_000;
    let (first, gaps) = continuation_start(&c, target, wall, true).unwrap();
    assert_eq!(first, 9, "gaps start after what a player may have seen");
    let gaps = gaps.unwrap();
    assert_eq!(gaps.count, 14 - 9);
    assert_eq!(gaps.start_ns, end_ns, "right after the old media");
    assert_eq!(gaps.step_ns, 1_000_000, "no hole for a player to skip");
    // From a finished stream here, numbering is exact: only the one the report was missing.
    let (first, gaps) = continuation_start(&c, target, wall, false).unwrap();
    assert_eq!(first, 9);
    let gaps = gaps.unwrap();
    assert_eq!(gaps.count, 1);
    // Nothing complete on the old node: media starts at the resume number without gaps.
    let c = continuation(1, None, end_ms);
    assert_eq!(
        continuation_start(&c, target, end_ns, true),
        Some((2, None))
    );
    assert_eq!(
        continuation_start(&Continuation::default(), target, end_ns, true),
        None
    );
}

#[test]
fn a_stream_continued_on_another_node_lists_gaps_then_its_media() {
    let o = origin();
    let h = o.publish("s", vec![video_plan("720p"), audio_plan()]);
    h.configure("720p", h264_info().config).unwrap();
    // Segments 0 and 1 complete, 2 in progress.
    for i in 0..130 {
        h.push("720p", video_sample(i, None)).unwrap();
    }
    let c = o.continuation("s").unwrap();
    let r = c.renditions.iter().find(|r| r.name == "720p").unwrap();
    assert_eq!((r.next_msn, r.last_complete_msn), (3, Some(1)));
    let o2 = origin();
    let h2 = o2.publish_with("s", vec![video_plan("720p"), audio_plan()], Some(c));
    h2.configure("720p", h264_info().config).unwrap();
    for i in 0..70 {
        h2.push("720p", video_sample(i, None)).unwrap();
    }
    let st = o2.stream("s").unwrap();
    let st = st.state.lock();
    for name in ["720p", "audio"] {
        let pl = st.track(name).unwrap().playlist(vec![]);
        let listed: Vec<_> = pl.segments.iter().map(|s| (s.msn, s.gap)).collect();
        // 2 was in progress on the old node and 3 may have begun before it stopped.
        assert_eq!(&listed[..2], [(2, true), (3, true)], "{name}: {listed:?}");
    }
    let pl = st.track("720p").unwrap().playlist(vec![]);
    assert!(pl.segments[2].msn == 4 && pl.segments[2].discontinuity && !pl.segments[2].gap);
}
