use super::*;

const LAG: Duration = Duration::from_secs(3);

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

#[test]
fn a_stream_flowing_in_and_out_is_healthy() {
    let t0 = Instant::now();
    let s = assess(
        t0,
        Some(at(t0, 9_900)),
        Some((at(t0, 9_950), Duration::from_millis(400))),
        at(t0, 10_000),
        LAG,
    );
    assert_eq!(s, (Status::Healthy, None));
    // Just connected: nothing in or out yet, within both grace periods.
    assert_eq!(
        assess(t0, None, None, at(t0, 2_000), LAG).0,
        Status::Healthy
    );
}

#[test]
fn no_video_from_the_encoder_is_starving() {
    let t0 = Instant::now();
    let (s, why) = assess(
        t0,
        Some(at(t0, 5_000)),
        Some((at(t0, 5_000), Duration::ZERO)),
        at(t0, 8_500),
        LAG,
    );
    assert_eq!(s, Status::Starving);
    assert_eq!(why.as_deref(), Some("no video from the encoder for 3.5 s"));
    let (s, why) = assess(t0, None, None, at(t0, 4_000), LAG);
    assert_eq!(s, Status::Starving);
    assert!(why.unwrap().contains("since it connected 4.0 s ago"));
}

#[test]
fn video_in_without_video_out_is_unhealthy() {
    let t0 = Instant::now();
    // No keyframe in the first 6 s.
    let (s, why) = assess(t0, Some(at(t0, 6_400)), None, at(t0, 6_500), LAG);
    assert_eq!(s, Status::Unhealthy);
    assert!(why.unwrap().contains("no keyframe yet"));
    // A pipeline that stopped producing.
    let (s, why) = assess(
        t0,
        Some(at(t0, 19_900)),
        Some((at(t0, 12_000), Duration::ZERO)),
        at(t0, 20_000),
        LAG,
    );
    assert_eq!(s, Status::Unhealthy);
    assert_eq!(
        why.as_deref(),
        Some("video arrives but none has come out for 8.0 s")
    );
}

#[test]
fn transcoding_behind_real_time_is_unhealthy() {
    let t0 = Instant::now();
    let (s, why) = assess(
        t0,
        Some(at(t0, 9_900)),
        Some((at(t0, 9_950), Duration::from_millis(3_500))),
        at(t0, 10_000),
        LAG,
    );
    assert_eq!(s, Status::Unhealthy);
    assert_eq!(
        why.as_deref(),
        Some("transcoding is 3.5 s behind real time (node.overload_lag 3.0 s)")
    );
}

#[test]
fn health_reads_the_stamps_of_its_stream() {
    let t0 = Instant::now();
    let h = Health::new(t0, Duration::from_secs(2));
    h.arrivals.record(0, at(t0, 1_000));
    h.video_out(at(t0, 1_100), Duration::ZERO);
    assert_eq!(h.assess(at(t0, 2_000), LAG).0, Status::Healthy);
    assert_eq!(h.assess(at(t0, 4_500), LAG).0, Status::Starving);
}

/// Source frames `frames` at 30 fps, a keyframe every `gop` frames counted from frame `base`.
fn feed(h: &Health, frames: std::ops::Range<u64>, base: u64, gop: u64) {
    for f in frames {
        let ns = f * 1_000_000_000 / 30;
        h.source_frame(ns, ns, (f - base).is_multiple_of(gop), 1_000);
    }
}

#[test]
fn a_long_keyframe_interval_is_an_issue_with_advice_and_clears() {
    let t0 = Instant::now();
    let h = Health::new(t0, Duration::from_secs(2));
    // 2 s GOPs next to 2 s segments: fine.
    feed(&h, 0..300, 0, 60);
    assert!(h.issues().is_empty());
    // The encoder switches to 6 s GOPs at 10 s: known 2.5 s after that keyframe, as "at least".
    feed(&h, 300..390, 300, 180);
    let i = h.issues();
    assert_eq!(i.len(), 1);
    assert_eq!(i[0].kind, "keyframe_interval");
    assert!(
        i[0].message
            .starts_with("keyframe interval is at least 3.0 s; set it to 2 s"),
        "{i:?}"
    );
    feed(&h, 390..630, 300, 180);
    let i = h.issues();
    assert!(
        i[0].message
            .starts_with("keyframe interval is 6.0 s; set it to 2 s"),
        "{i:?}"
    );
    // Flowing, so the status says degraded, with the advice as the reason.
    let now = Instant::now();
    h.arrivals.record(0, now);
    h.video_out(now, Duration::ZERO);
    let (s, why) = h.assess(now, LAG);
    assert_eq!(s, Status::Degraded);
    assert!(why.unwrap_or_default().contains("set it to 2 s"));
    // Back to 2 s GOPs: three good intervals later the issue is gone.
    feed(&h, 630..870, 630, 60);
    assert!(h.issues().is_empty(), "{:?}", h.issues());
    assert_eq!(h.assess(now, LAG).0, Status::Healthy);
}

#[test]
fn the_source_video_figures_cover_its_last_seconds() {
    let h = Health::new(Instant::now(), Duration::from_secs(2));
    assert_eq!(h.stats(), None);
    // 30 fps of 1,000-byte frames, 2 s GOPs: 240 kbit/s.
    feed(&h, 0..300, 0, 60);
    let s = h.stats().unwrap();
    assert_eq!(s.video_kbps, 240);
    assert!((s.fps - 30.0).abs() < 0.01, "{s:?}");
    assert_eq!(s.keyframe_interval_ms, Some(2_000));
    // Only the window counts: a rate change shows within it.
    for f in 300..600u64 {
        h.source_frame(f * 1_000_000_000 / 30, f * 1_000_000_000 / 30, false, 4_000);
    }
    assert_eq!(h.stats().unwrap().video_kbps, 960);
    // An encoder restart (DTS back to zero) starts the figures over.
    h.source_frame(0, 0, true, 1_000);
    assert_eq!(h.stats(), None);
}

fn kinds(h: &Health) -> Vec<&'static str> {
    h.issues().iter().map(|i| i.kind).collect()
}

#[test]
fn a_still_picture_is_frozen_and_motion_clears_it() {
    let h = Health::new(Instant::now(), Duration::from_secs(2));
    // A still image: 30 kB keyframes every 2 s, 60-byte frames between.
    let frame = |h: &Health, f: u64, other: usize| {
        let ns = f * 1_000_000_000 / 30;
        let key = f.is_multiple_of(60);
        h.source_frame(ns, ns, key, if key { 30_000 } else { other });
    };
    for f in 0..90 {
        frame(&h, f, 60);
    }
    assert!(kinds(&h).is_empty(), "3 s is too short to judge");
    for f in 90..160 {
        frame(&h, f, 60);
    }
    let i = h.issues();
    assert_eq!(kinds(&h), ["frozen_video"]);
    assert!(
        i[0].message
            .starts_with("video is frozen: the picture has not changed in the last 5.0 s"),
        "{i:?}"
    );
    // Motion: once the window holds moving frames, it clears.
    for f in 160..330 {
        frame(&h, f, 4_000);
    }
    assert!(kinds(&h).is_empty(), "{:?}", h.issues());
}

#[test]
fn digital_silence_is_silent_audio_and_sound_clears_it() {
    let h = Health::new(Instant::now(), Duration::from_secs(2));
    let aac = |i: u64| i * 1024 * 1_000_000_000 / 48_000;
    for i in 0..250 {
        h.audio_frame(aac(i), 6);
    }
    let i = h.issues();
    assert_eq!(kinds(&h), ["silent_audio"]);
    assert!(
        i[0].message
            .starts_with("audio is silent: digital silence for the last 5.0 s"),
        "{i:?}"
    );
    for i in 250..500 {
        h.audio_frame(aac(i), 300);
    }
    assert!(kinds(&h).is_empty());
}

#[test]
fn b_frames_are_an_issue_until_a_window_without_them() {
    let h = Health::new(Instant::now(), Duration::from_secs(2));
    for f in 0..60u64 {
        let dts = f * 1_000_000_000 / 30;
        // Presented two frames late: what x264's default B-frames do.
        h.source_frame(dts, dts + 66_666_667, f == 0, 5_000);
    }
    assert_eq!(kinds(&h), ["b_frames"]);
    assert!(h.issues()[0].message.contains("set B-frames to 0"));
    feed(&h, 60..260, 60, 60);
    assert!(kinds(&h).is_empty(), "{:?}", h.issues());
}

#[test]
fn uneven_frame_intervals_are_an_issue_and_millisecond_rounding_is_not() {
    let h = Health::new(Instant::now(), Duration::from_secs(2));
    // RTMP's millisecond timestamps at 30 fps: 33 and 34 ms.
    let mut dts = 0u64;
    for f in 0..180u64 {
        dts += if f.is_multiple_of(3) {
            34_000_000
        } else {
            33_000_000
        };
        h.source_frame(dts, dts, f.is_multiple_of(60), 5_000);
    }
    assert!(kinds(&h).is_empty(), "{:?}", h.issues());
    // A phone's variable frame rate: 16 to 66 ms.
    for f in 0..180u64 {
        dts += [16_000_000, 33_000_000, 66_000_000][(f % 3) as usize];
        h.source_frame(dts, dts, f.is_multiple_of(60), 5_000);
    }
    let i = h.issues();
    assert_eq!(kinds(&h), ["uneven_frames"]);
    assert!(i[0].message.contains("intervals from 16 to 66 ms"), "{i:?}");
}

#[test]
fn a_source_below_the_best_rendition_is_a_low_bitrate_after_ten_seconds() {
    let h = Health::new(Instant::now(), Duration::from_secs(2));
    h.set_top_rung_kbps(600);
    // 30 fps of 1,000-byte frames: 240 kbit/s.
    feed(&h, 0..(30 * 8), 0, 60);
    assert!(kinds(&h).is_empty(), "not judged on 8 s");
    feed(&h, (30 * 8)..(30 * 12), 0, 60);
    let i = h.issues();
    assert_eq!(kinds(&h), ["low_bitrate"]);
    assert!(
        i[0].message
            .starts_with("source video is 240 kbit/s, below the 600 kbit/s"),
        "{i:?}"
    );
    let s = h.stats().unwrap();
    assert_eq!(s.video_kbps_60s, Some(240));
    assert_eq!(s.audio_kbps, None);
    // No ladder: nothing to compare with.
    h.set_top_rung_kbps(0);
    assert!(kinds(&h).is_empty());
}

#[test]
fn audio_bit_rates_cover_the_short_and_the_long_window() {
    let h = Health::new(Instant::now(), Duration::from_secs(2));
    feed(&h, 0..90, 0, 60);
    let aac = |i: u64| i * 1024 * 1_000_000_000 / 48_000;
    // 46.875 frames/s of 341 bytes: 128 kbit/s.
    for i in 0..150 {
        h.audio_frame(aac(i), 341);
    }
    let s = h.stats().unwrap();
    assert_eq!(s.audio_kbps, Some(128));
    assert!(
        s.audio_kbps_60s.is_some_and(|k| (126..=130).contains(&k)),
        "{s:?}"
    );
}
