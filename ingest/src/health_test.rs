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
    h.video_out(at(t0, 1_100));
    assert_eq!(h.assess(at(t0, 2_000), LAG).0, Status::Healthy);
    assert_eq!(h.assess(at(t0, 4_500), LAG).0, Status::Starving);
}

#[test]
fn the_source_passed_through_does_not_hide_a_rung_behind_real_time() {
    let t0 = Instant::now();
    let h = Health::new(t0, Duration::from_secs(2));
    h.arrivals.record(0, at(t0, 9_900));
    // A rung 3.5 s behind, then the source (passthrough) right after it.
    h.rendition_out(
        "480p",
        0,
        1_000,
        at(t0, 9_940),
        Duration::from_millis(3_500),
    );
    h.video_out(at(t0, 9_940));
    h.video_out(at(t0, 9_950));
    assert_eq!(h.assess(at(t0, 10_000), LAG).0, Status::Unhealthy);
    // The rung caught up.
    h.rendition_out(
        "480p",
        33_000_000,
        1_000,
        at(t0, 9_960),
        Duration::from_millis(100),
    );
    h.video_out(at(t0, 9_960));
    h.video_out(at(t0, 9_970));
    assert_eq!(h.assess(at(t0, 10_000), LAG).0, Status::Healthy);
}

#[test]
fn the_rung_furthest_behind_decides_not_the_last_one_out() {
    let t0 = Instant::now();
    let h = Health::new(t0, Duration::from_secs(2));
    h.arrivals.record(0, at(t0, 9_900));
    // Two rungs: the slow one 3.5 s behind, then the quick one (0.5 s) sends the last frame.
    for (name, lag, ms) in [("480p", 3_500, 9_930), ("360p", 500, 9_940)] {
        let lag = Duration::from_millis(lag);
        h.rendition_out(name, 0, 1_000, at(t0, ms), lag);
        h.video_out(at(t0, ms));
    }
    let (s, why) = h.assess(at(t0, 10_000), LAG);
    assert_eq!(s, Status::Unhealthy);
    assert!(why.is_some_and(|w| w.starts_with("transcoding is 3.5 s behind")));
    // The slow rung caught up.
    h.rendition_out(
        "480p",
        33_000_000,
        1_000,
        at(t0, 9_960),
        Duration::from_millis(200),
    );
    h.video_out(at(t0, 9_960));
    assert_eq!(h.assess(at(t0, 10_000), LAG).0, Status::Healthy);
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
    h.video_out(now);
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
    // An encoder restart (DTS back to zero) starts the window over; until it holds two
    // frames the last figures stand (the API does not flicker).
    h.source_frame(0, 0, true, 1_000);
    assert_eq!(h.stats().unwrap().video_kbps, 960);
    h.source_frame(33_333_333, 33_333_333, false, 1_000);
    assert_eq!(h.stats().unwrap().video_kbps, 240);
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
    h.set_ladder(600, 0);
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
    h.set_ladder(0, 0);
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

/// Feed both tracks as a real-time encoder sends them: video at 30 fps and AAC at 48 kHz,
/// from media second `from` to `to`, each frame reaching the node `delay(media ms)` after its
/// timestamp (plus `audio_ahead_ms` on the audio's timestamps).
fn live(
    h: &Health,
    t0: Instant,
    from: u64,
    to: u64,
    audio_ahead_ms: u64,
    delay: impl Fn(u64) -> u64,
) {
    for f in (from * 30)..(to * 30) {
        let ms = f * 1000 / 30;
        h.arrival(Track::Video, ms * 1_000_000, at(t0, ms + delay(ms)));
    }
    for i in (from * 48_000 / 1024)..(to * 48_000 / 1024) {
        let ms = i * 1024 * 1000 / 48_000;
        h.arrival(
            Track::Audio,
            (ms + audio_ahead_ms) * 1_000_000,
            at(t0, ms + delay(ms)),
        );
    }
}

/// Both tracks from media second `from` to `to`, stamped `shift_ms` ahead of the clock, each
/// frame 20 ms after its media time.
fn shifted(h: &Health, t0: Instant, from: u64, to: u64, shift_ms: u64) {
    for f in (from * 30)..(to * 30) {
        let ms = f * 1000 / 30;
        h.arrival(Track::Video, (ms + shift_ms) * 1_000_000, at(t0, ms + 20));
    }
    for i in (from * 48_000 / 1024)..(to * 48_000 / 1024) {
        let ms = i * 1024 * 1000 / 48_000;
        h.arrival(Track::Audio, (ms + shift_ms) * 1_000_000, at(t0, ms + 20));
    }
}

#[test]
fn a_steady_live_source_has_no_timing_issue() {
    let t0 = Instant::now();
    let h = Health::new(t0, Duration::from_secs(2));
    // Up to 80 ms of network jitter, and a first second held up by pipeline start-up.
    live(&h, t0, 0, 20, 0, |ms| {
        if ms < 1000 {
            900 - ms / 2
        } else {
            (ms * 7) % 80
        }
    });
    feed(&h, 0..600, 0, 60);
    assert!(kinds(&h).is_empty(), "{:?}", h.issues());
    let s = h.stats().unwrap();
    assert!(s.av_drift_ms.is_some_and(|d| d.abs() < 40), "{s:?}");
    assert_eq!(
        (s.late_frames, s.timestamp_jumps, s.timestamp_gaps),
        (0, 0, 0),
        "{s:?}"
    );
}

#[test]
fn audio_timestamps_ahead_of_video_are_an_av_drift() {
    let t0 = Instant::now();
    let h = Health::new(t0, Duration::from_secs(2));
    live(&h, t0, 0, 10, 2_000, |_| 50);
    let s = h.stats();
    assert_eq!(kinds(&h), ["av_drift"]);
    let i = h.issues();
    assert!(
        i[0].message
            .starts_with("audio timestamps are 2.0 s ahead of video's"),
        "{i:?}"
    );
    let h = Health::new(t0, Duration::from_secs(2));
    live(&h, t0, 0, 10, 0, |_| 50);
    // Behind: audio stamped 1.5 s late from here on (a jump back, then a steady offset).
    for i in (10 * 48_000 / 1024)..(40 * 48_000 / 1024) {
        let ms = i * 1024 * 1000 / 48_000;
        h.arrival(Track::Audio, (ms - 1_500) * 1_000_000, at(t0, ms + 50));
    }
    for f in (10 * 30)..(40 * 30) {
        let ms = f * 1000 / 30;
        h.arrival(Track::Video, ms * 1_000_000, at(t0, ms + 50));
    }
    let i = h.issues();
    assert!(
        i.iter()
            .any(|i| i.kind == "av_drift" && i.message.contains("1.5 s behind video's")),
        "{i:?} {s:?}"
    );
}

#[test]
fn frames_held_up_by_a_stalled_upload_are_late() {
    let t0 = Instant::now();
    let h = Health::new(t0, Duration::from_secs(2));
    feed(&h, 0..90, 0, 60); // the figures need source frames
    live(&h, t0, 0, 10, 0, |_| 30);
    assert!(kinds(&h).is_empty(), "{:?}", h.issues());
    // Two seconds of media held back, then sent at once (TCP after a stall).
    live(&h, t0, 10, 12, 0, |ms| 30 + (12_000 - ms));
    live(&h, t0, 12, 13, 0, |_| 30);
    let s = h.stats().unwrap();
    // Over 1 s late: the frames of the first second of the stall.
    assert!((25..=31).contains(&s.late_frames), "{s:?}");
    assert_eq!((s.timestamp_jumps, s.timestamp_gaps), (0, 0), "{s:?}");
    assert_eq!(kinds(&h), ["late_frames"]);
    assert!(
        h.issues()[0]
            .message
            .contains("reached the node over 1.0 s late"),
        "{:?}",
        h.issues()
    );
    // Steady again: after a window, no issue (the count stays for the minute).
    live(&h, t0, 13, 20, 0, |_| 30);
    assert!(kinds(&h).is_empty(), "{:?}", h.issues());
    assert!(h.stats().unwrap().late_frames > 0);
}

#[test]
fn timestamp_jumps_and_gaps_are_told_apart() {
    let t0 = Instant::now();
    let h = Health::new(t0, Duration::from_secs(2));
    feed(&h, 0..90, 0, 60); // the figures need source frames
    live(&h, t0, 0, 5, 0, |_| 20);
    // The encoder paused 3 s and went on where the clock is: a gap in both tracks, no jump.
    live(&h, t0, 8, 12, 0, |_| 20);
    let s = h.stats().unwrap();
    assert_eq!(
        (s.timestamp_gaps, s.timestamp_jumps, s.late_frames),
        (1, 0, 0),
        "{s:?}"
    );
    assert!(kinds(&h).is_empty(), "{:?}", h.issues());
    // Timestamps 10 s ahead of the clock from media second 12 on: a jump forward in each.
    shifted(&h, t0, 12, 15, 10_000);
    // The source frames jump too: no keyframe interval spans the jump.
    feed(&h, 90..120, 0, 60);
    feed(&h, 420..450, 0, 60);
    assert_eq!(kinds(&h), ["timestamp_jumps"]);
    let i = h.issues();
    assert!(
        i[0].message
            .starts_with("video timestamps jumped 10.0 s forward (1 jump in the last minute)"),
        "{i:?}"
    );
    // Then back to where they were: a jump back, and no frame is called late.
    shifted(&h, t0, 15, 17, 0);
    let i = h.issues();
    assert!(
        i[0].message
            .starts_with("video timestamps jumped 10.0 s back (2 jumps in the last minute)"),
        "{i:?}"
    );
    assert_eq!(h.stats().unwrap().late_frames, 0);
}

#[test]
fn a_source_far_above_what_the_ladder_needs_is_a_high_bitrate() {
    let src = edge_config::SourceSize {
        width: 1920,
        height: 1080,
        fps: 30.0,
    };
    // 720p30 at 3000 kbit/s: 1080p30 needs 2.25 times the pixels.
    assert_eq!(
        expected_source_kbps(&src, &[(1280, 720, 30.0, 3000), (640, 360, 30.0, 800)]),
        6750
    );
    // A 60 fps rung next to a 30 fps source counts at 30 fps.
    assert_eq!(expected_source_kbps(&src, &[(1280, 720, 60.0, 3000)]), 6750);
    // No ladder: 0.1 bit per pixel per frame.
    assert_eq!(expected_source_kbps(&src, &[]), 6221);
    let frames = |h: &Health, bytes: usize| {
        for f in 0..(30 * 12) {
            let ns = f * 1_000_000_000 / 30;
            h.source_frame(ns, ns, f % 60 == 0, bytes);
        }
    };
    // No transcoded rung (nothing to fall short of), 1,000 kbit/s expected.
    let h = Health::new(Instant::now(), Duration::from_secs(2));
    h.set_ladder(0, 1000);
    // 30 fps of 10,000-byte frames: 2,400 kbit/s, under 2.5 times 1,000.
    frames(&h, 10_000);
    assert!(kinds(&h).is_empty(), "{:?}", h.issues());
    // 12,000-byte frames: 2,880 kbit/s.
    let h = Health::new(Instant::now(), Duration::from_secs(2));
    h.set_ladder(0, 1000);
    frames(&h, 12_000);
    let i = h.issues();
    assert_eq!(kinds(&h), ["high_bitrate"]);
    assert!(
        i[0].message
            .starts_with("source video is 2880 kbit/s, over 2.5 times the 1000 kbit/s"),
        "{i:?}"
    );
}

#[test]
fn audio_in_another_codec_than_aac_is_an_issue() {
    let h = Health::new(Instant::now(), Duration::from_secs(2));
    h.set_audio_codec("AAC".into());
    assert!(kinds(&h).is_empty());
    h.set_audio_codec("MP3".into());
    assert_eq!(kinds(&h), ["non_aac_audio"]);
    assert!(h.issues()[0]
        .message
        .starts_with("audio is MP3; the node converts it to AAC"));
}

#[test]
fn each_rung_reports_its_output_and_real_time_factor() {
    let t0 = Instant::now();
    let h = Health::new(t0, Duration::from_secs(2));
    feed(&h, 0..30, 0, 60);
    for f in 0..150u64 {
        let ms = f * 1000 / 30;
        // 720p keeps up; 1080p makes 2 s of media in 3 s of wall time.
        h.rendition_out(
            "720p",
            ms * 1_000_000,
            10_000,
            at(t0, ms + 200),
            Duration::from_millis(200),
        );
        h.rendition_out(
            "1080p",
            ms * 1_000_000,
            20_000,
            at(t0, ms * 3 / 2),
            Duration::from_millis(900),
        );
    }
    let rungs = h.stats().unwrap().rungs;
    assert_eq!(rungs.len(), 2, "{rungs:?}");
    let r720 = &rungs[0];
    assert_eq!(
        (r720.name.as_str(), r720.kbps, r720.lag_ms),
        ("720p", 2400, 200)
    );
    assert!(
        (r720.fps - 30.0).abs() < 0.2 && (r720.speed - 1.0).abs() < 0.01,
        "{r720:?}"
    );
    let r1080 = &rungs[1];
    assert!((r1080.speed - 0.667).abs() < 0.01, "{r1080:?}");
    // Timestamps 10 s ahead from here (the source jumped): 720p's window starts over, so
    // its real-time factor stays a real-time factor.
    for f in 150..200u64 {
        let ms = f * 1000 / 30;
        h.rendition_out(
            "720p",
            (ms + 10_000) * 1_000_000,
            10_000,
            at(t0, ms + 200),
            Duration::ZERO,
        );
    }
    let r720 = h.stats().unwrap().rungs[0].clone();
    assert!((r720.speed - 1.0).abs() < 0.05, "{r720:?}");
}

#[test]
fn frames_the_encoder_skipped_are_counted() {
    let h = Health::new(Instant::now(), Duration::from_secs(2));
    // Every tenth frame missing, one interval of three frames (two missing).
    let mut n = 0;
    for f in 0..150u64 {
        if f % 10 == 9 || f == 100 || f == 101 {
            continue;
        }
        n += 1;
        let ns = f * 1_000_000_000 / 30;
        h.source_frame(ns, ns, f % 60 == 0, 5_000);
    }
    assert!(n > 100);
    // Thirteen single frames missing in the middle, and one run of three (99 to 101); the
    // last frame (149) is missing at the end, where nothing follows it.
    assert_eq!(h.stats().unwrap().dropped_frames, 16);
}

#[test]
fn a_source_above_the_maximum_bit_rate_is_refused_once() {
    let h = Health::new(Instant::now(), Duration::from_secs(2));
    // 30 fps of 10,000-byte frames: 2,400 kbit/s.
    let frames = |h: &Health, range: std::ops::Range<u64>| {
        for f in range {
            let ns = f * 1_000_000_000 / 30;
            h.source_frame(ns, ns, f % 60 == 0, 10_000);
        }
    };
    frames(&h, 0..(30 * 4));
    assert_eq!(
        h.above_max_kbps(1_000),
        None,
        "not judged on 3 complete seconds"
    );
    frames(&h, (30 * 4)..(30 * 7));
    assert_eq!(h.above_max_kbps(0), None, "0: no limit");
    assert_eq!(h.above_max_kbps(5_000), None);
    let why = h.above_max_kbps(1_000).expect("refused");
    assert!(
        why.starts_with("source video is 2400 kbit/s, above this server's maximum 1000 kbit/s"),
        "{why}"
    );
    assert_eq!(h.above_max_kbps(1_000), None, "said once");
}
