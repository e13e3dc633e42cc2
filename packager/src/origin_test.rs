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
