//! Unit tests of `track` (kept beside it; compiled only for tests).

use super::*;
use crate::fmp4::tests::{aac_info, h264_info};
use mp4_atom::{Decode, Mdat, Moof};

pub fn cfg() -> TrackConfig {
    TrackConfig {
        part_target: Duration::from_millis(333),
        segment_target: Duration::from_secs(2),
        window_segments: 6,
        part_hold_back_parts: 3,
    }
}

pub fn video_plan(name: &str) -> RenditionPlan {
    RenditionPlan {
        name: name.into(),
        kind: RenditionKind::Video,
        bandwidth: 2_000_000,
    }
}

pub fn audio_plan() -> RenditionPlan {
    RenditionPlan {
        name: "audio".into(),
        kind: RenditionKind::Audio,
        bandwidth: 128_000,
    }
}

/// Frame `i` of 30 fps video (keyframe every 60), with 2-frame B reordering offsets.
pub fn video_sample(i: u64, arrival: Option<Instant>) -> Sample {
    let dts_ns = 1_000_000_000 + i * 1_000_000_000 / 30;
    Sample {
        pts_ns: dts_ns + if i.is_multiple_of(60) { 0 } else { 66_666_667 },
        dts_ns,
        keyframe: i.is_multiple_of(60),
        data: Bytes::from(vec![(i % 251) as u8; 100 + (i % 7) as usize]),
        arrival,
    }
}

pub fn audio_sample(i: u64) -> Sample {
    let ns = 1_000_000_000 + i * 1024 * 1_000_000_000 / 48_000;
    Sample {
        pts_ns: ns,
        dts_ns: ns,
        keyframe: true,
        data: Bytes::from(vec![1u8; 10]),
        arrival: None,
    }
}

/// A stream timeline whose wall clock reads 2023-11-14T22:13:20Z now (one per call: the tests
/// here drive one track, so nothing needs sharing).
pub fn anchor() -> Timeline {
    Timeline::new(
        Instant::now(),
        std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    )
}

fn video_track() -> Track {
    let mut t = Track::new(video_plan("720p"), cfg(), TrackStart::default());
    t.configure(h264_info().config, &mut anchor(), Instant::now())
        .unwrap();
    t
}

#[test]
fn push_before_configure_fails() {
    let mut t = Track::new(video_plan("720p"), cfg(), TrackStart::default());
    let err = t
        .push(video_sample(0, None), &mut anchor(), Instant::now())
        .unwrap_err();
    assert!(matches!(err, PackagerError::NotConfigured(_)));
}

#[test]
fn parts_parse_back_with_pushed_samples() {
    let mut t = video_track();
    let start = Instant::now();
    let mut pushed_total = 0u32;
    for i in 0..130 {
        t.push(
            video_sample(i, Some(start)),
            &mut anchor(),
            start + Duration::from_millis(400),
        )
        .unwrap();
        pushed_total += 1;
    }
    t.flush(&mut anchor(), start).unwrap();
    // 130 frames: segments of 60, 60 and 10 frames.
    assert_eq!(t.segment_count(), 3);
    let mut samples_seen = 0u32;
    for msn in 0..3u64 {
        let seg = t.segment(msn).unwrap().concat();
        let mut buf = seg.as_slice();
        let mut idx = 0u32;
        while !buf.is_empty() {
            let moof = Moof::decode(&mut buf).unwrap();
            let mdat = Mdat::decode(&mut buf).unwrap();
            let traf = &moof.traf[0];
            let trun = &traf.trun[0];
            let n = trun.samples.len() as u32;
            // tfdt equals the DTS (90 kHz) of the part's first sample.
            let first_frame = u64::from(samples_seen);
            let dts = codec::ns_to_ticks(video_sample(first_frame, None).dts_ns, 90_000);
            assert_eq!(traf.tfdt.as_ref().unwrap().base_media_decode_time, dts);
            let sizes: u32 = trun.samples.iter().map(|e| e.size.unwrap()).sum();
            assert_eq!(sizes as usize, mdat.data.len());
            // The part's own URL serves the same bytes.
            let part = t.part(msn, idx).unwrap();
            assert!(seg.windows(part.len()).any(|w| w == part.as_ref()));
            samples_seen += n;
            idx += 1;
        }
    }
    assert_eq!(samples_seen, pushed_total);
}

#[test]
fn independent_exactly_on_keyframe_parts() {
    let mut t = video_track();
    let now = Instant::now();
    for i in 0..600 {
        t.push(video_sample(i, None), &mut anchor(), now).unwrap();
    }
    let pl = t.playlist(vec![]);
    let mut checked = 0;
    for s in &pl.segments {
        for (i, p) in s.parts.iter().enumerate() {
            let data = t.part(s.msn, i as u32).unwrap();
            let moof = Moof::decode(&mut data.as_ref()).unwrap();
            let first = moof.traf[0].trun[0].samples.get(0).unwrap();
            let is_key = first.flags == Some(0x0200_0000);
            assert_eq!(p.independent, is_key, "part {}.{}", s.msn, i);
            assert_eq!(p.independent, i == 0);
            checked += 1;
        }
    }
    assert!(checked > 30);
}

#[test]
fn window_slides_and_old_media_is_gone() {
    let mut t = video_track();
    let now = Instant::now();
    for i in 0..(60 * 10 + 1) {
        t.push(video_sample(i, None), &mut anchor(), now).unwrap();
    }
    assert_eq!(t.segment_count(), 6);
    assert_eq!(t.last_complete_msn(), Some(9));
    // Segments 0-3 left the playlist; RFC 8216bis 6.2.2 keeps them available for their
    // duration plus a playlist's (the playlist's six segments and one more).
    assert!(t.segment(3).is_some());
    assert!(t.part(3, 0).is_some());
    assert!(t.segment(0).is_some());
    assert!(t.segment(4).is_some());
    let pl = t.playlist(vec![]);
    assert_eq!(pl.media_sequence, 4);
    assert!(pl.segments.iter().all(|s| s.msn >= 4));
    assert_eq!(pl.target_duration, 2);
    for i in (60 * 10 + 1)..(60 * 14 + 1) {
        t.push(video_sample(i, None), &mut anchor(), now).unwrap();
    }
    // Four more segments: 0 left the playlist seven segments ago (its own duration and a
    // playlist's), 1-7 less long ago and are still served.
    assert_eq!(t.playlist(vec![]).media_sequence, 8);
    assert!(t.segment(0).is_none());
    assert!(t.part(0, 0).is_none());
    for msn in 1..=13 {
        assert!(t.segment(msn).is_some(), "{msn}");
    }
}

#[test]
fn latency_is_publish_time_minus_arrival() {
    let mut t = video_track();
    let arrival = Instant::now();
    let publish = arrival + Duration::from_millis(250);
    let mut latencies = Vec::new();
    for i in 0..20 {
        latencies.extend(
            t.push(video_sample(i, Some(arrival)), &mut anchor(), publish)
                .unwrap()
                .latencies,
        );
    }
    // 9-frame parts; 20 pushes make two parts (18 frames) complete.
    assert_eq!(latencies.len(), 18);
    assert!(latencies.iter().all(|l| *l == Duration::from_millis(250)));
}

#[test]
fn codec_change_makes_new_init_and_discontinuity() {
    let mut t = video_track();
    let now = Instant::now();
    for i in 0..70 {
        t.push(video_sample(i, None), &mut anchor(), now).unwrap();
    }
    // Same config again: nothing changes.
    t.configure(h264_info().config, &mut anchor(), now).unwrap();
    assert!(t.init(1).is_none());
    let mut changed = h264_info().config;
    if let CodecConfig::H264 { width, .. } = &mut changed {
        *width = 640;
    }
    t.configure(changed, &mut anchor(), now).unwrap();
    assert!(t.init(1).is_some());
    for i in 70..200 {
        t.push(video_sample(i + 50, None), &mut anchor(), now)
            .unwrap();
    }
    let pl = t.playlist(vec![]);
    let after = pl.segments.iter().find(|s| s.discontinuity).unwrap();
    assert_eq!(after.map_uri, "init1.mp4");
    assert_eq!(pl.segments[0].map_uri, "init.mp4");
}

#[test]
fn timestamp_jumps_become_discontinuities() {
    let mut t = video_track();
    let mut tl = anchor();
    let now = Instant::now();
    let mut jumps = Vec::new();
    // Frames arrive in real time whatever their timestamps say.
    let mut arrived = 0u64;
    let mut push = |t: &mut Track, i: u64, tl: &mut Timeline| {
        let at = now + Duration::from_nanos(arrived * 1_000_000_000 / 30);
        arrived += 1;
        t.push(video_sample(i, Some(at)), tl, at).unwrap().jumps
    };
    for i in 0..130 {
        jumps.extend(push(&mut t, i, &mut tl));
    }
    // Backwards by 100 frames (the encoder restarted its clock), then forward by 10 s.
    for i in 30..130 {
        jumps.extend(push(&mut t, i, &mut tl));
    }
    for i in 430..560 {
        jumps.extend(push(&mut t, i, &mut tl));
    }
    assert_eq!(jumps, vec![Jump::Backward, Jump::Forward]);
    let pl = t.playlist(vec![]);
    let disc: Vec<u64> = pl
        .segments
        .iter()
        .filter(|s| s.discontinuity)
        .map(|s| s.msn)
        .collect();
    assert_eq!(
        disc.len(),
        2,
        "two discontinuities expected in {:?}",
        pl.segments
    );
    // Nothing was frozen: samples after each jump were published (from the next keyframe).
    assert!(t.last_part().is_some_and(|(m, _)| m > disc[1]));
    let text = crate::playlist::render_media(&pl, false);
    crate::rules::check(
        &text,
        &crate::rules::Expect {
            keyframe_segments: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e:?} in\n{text}"));
    // A repeated DTS is dropped, not a jump.
    let p = t.push(video_sample(559, None), &mut tl, now).unwrap();
    assert_eq!((p.dropped, p.jumps.len()), (1, 0));
}

#[test]
fn audio_track_parts() {
    let mut t = Track::new(audio_plan(), cfg(), TrackStart::default());
    let now = Instant::now();
    t.configure(aac_info().config, &mut anchor(), now).unwrap();
    for i in 0..500 {
        t.push(audio_sample(i), &mut anchor(), now).unwrap();
    }
    let pl = t.playlist(vec![]);
    // Independent where a segment starts, as the video: a player joins at a segment's start.
    assert!(pl.segments.iter().all(|s| s
        .parts
        .iter()
        .enumerate()
        .all(|(i, p)| p.independent == (i == 0))));
    // Within the audio's own part target: the whole AAC frames that may start within one
    // 333 ms part of the video (16 at 48 kHz: 341.3 ms, served as 0.343).
    assert_eq!(pl.part_target, 0.343);
    assert!(pl
        .segments
        .iter()
        .all(|s| s.parts.iter().all(|p| p.duration <= 0.343)));
    assert!(t.segment_count() >= 4);
}

#[test]
fn positions_and_hint() {
    let mut t = video_track();
    let now = Instant::now();
    assert_eq!(t.next_part_position(), Some((0, 0)));
    for i in 0..11 {
        t.push(video_sample(i, None), &mut anchor(), now).unwrap();
    }
    // Frames 0..8 form part 0.0 (closed eagerly once frame 9 arrived... and 10).
    assert_eq!(t.last_part(), Some((0, 0)));
    assert_eq!(t.next_part_position(), Some((0, 1)));
    t.end_session(&mut anchor(), now).unwrap();
    assert_eq!(t.state(), TrackState::Idle);
    assert_eq!(t.last_part(), Some((0, 1)));
    assert_eq!(t.next_part_position(), Some((1, 0)));
    t.begin_session(&mut anchor(), now).unwrap();
    // The next part follows a discontinuity; it is still part 1.0.
    assert_eq!(t.next_part_position(), Some((1, 0)));
}

/// Every sample of every part of `t`'s playlist: (DTS, duration, size), in order.
fn audio_samples(t: &Track) -> Vec<(u64, u32, u32)> {
    let pl = t.playlist(vec![]);
    let mut out = Vec::new();
    for s in &pl.segments {
        for i in 0..s.parts.len() {
            let data = t.part(s.msn, i as u32).unwrap();
            let moof = Moof::decode(&mut data.as_ref()).unwrap();
            let traf = &moof.traf[0];
            let mut dts = traf.tfdt.as_ref().unwrap().base_media_decode_time;
            for e in &traf.trun[0].samples {
                let d = e.duration.unwrap();
                out.push((dts, d, e.size.unwrap()));
                dts += u64::from(d);
            }
        }
    }
    out
}

#[test]
fn a_hole_in_the_audio_is_filled_with_silent_frames() {
    let mut t = Track::new(audio_plan(), cfg(), TrackStart::default());
    let now = Instant::now();
    t.configure(aac_info().config, &mut anchor(), now).unwrap();
    let mut filled = 0;
    // Frames 100..108 never arrive (8 frames, 171 ms: an SRT packet dropped as too late took
    // their PES with it), then frame 300..306 minus 303 (one frame).
    for i in (0..400).filter(|i| !(100..108).contains(i) && *i != 303) {
        filled += t.push(audio_sample(i), &mut anchor(), now).unwrap().filled;
    }
    assert_eq!(filled, 9);
    let samples = audio_samples(&t);
    // Every frame is there, one AAC frame long, each starting where the last one ended.
    let first = samples[0].0;
    for (n, (dts, duration, _)) in samples.iter().enumerate() {
        assert_eq!(*duration, 1024, "sample {n} of {samples:?}");
        assert_eq!(*dts, first + 1024 * n as u64, "sample {n}");
    }
    assert!(samples.len() >= 390);
    // The fillers are silent stereo AAC-LC frames (9 bytes); the frames around them are ours.
    let at = |i: usize| samples[i].2;
    assert_eq!((at(99), at(100), at(107), at(108)), (10, 9, 9, 10));
    assert_eq!((at(302), at(303), at(304)), (10, 9, 10));
    // No part in the middle of a segment is short.
    let pl = t.playlist(vec![]);
    for s in &pl.segments {
        for p in &s.parts[..s.parts.len().saturating_sub(1)] {
            assert!(p.duration > 0.3, "a short part in {:?}", s.parts);
        }
    }
}

#[test]
fn jitter_is_not_a_hole() {
    // Millisecond timestamps (RTMP) move each 21.3 ms step by up to 1 ms: nothing is filled.
    let mut t = Track::new(audio_plan(), cfg(), TrackStart::default());
    let now = Instant::now();
    t.configure(aac_info().config, &mut anchor(), now).unwrap();
    let mut filled = 0;
    for i in 0..300u64 {
        let mut s = audio_sample(i);
        s.dts_ns = s.dts_ns / 1_000_000 * 1_000_000;
        s.pts_ns = s.dts_ns;
        filled += t.push(s, &mut anchor(), now).unwrap().filled;
    }
    assert_eq!(filled, 0);
}

#[test]
fn numbers_skipped_by_alignment_are_listed_as_gaps() {
    let mut t = video_track();
    let mut tl = anchor();
    let now = Instant::now();
    // Segments 0 and 1 complete, then the publisher leaves and another comes back.
    for i in 0..121 {
        t.push(video_sample(i, None), &mut tl, now).unwrap();
    }
    t.end_session(&mut tl, now).unwrap();
    t.begin_session(&mut tl, now).unwrap();
    assert_eq!(t.next_msn(), 3);
    // Another rendition is at 5: this one lists 3 and 4 as gaps, following its own last segment
    // (no other rendition gave them a PDT here).
    t.align_msn(5, &tl);
    assert_eq!(t.next_msn(), 5);
    assert_eq!(t.next_part_position(), Some((5, 0)));
    assert_eq!(t.last_part().map(|(m, _)| m), Some(2));
    assert!(t.segment(3).is_none() && t.part(3, 0).is_none());
    let end_of_2 = t.find_segment(2).and_then(|s| s.pdt).unwrap();
    let pl = t.playlist(vec![]);
    let gaps: Vec<_> = pl.segments.iter().filter(|s| s.gap).collect();
    assert_eq!(gaps.iter().map(|s| s.msn).collect::<Vec<_>>(), [3, 4]);
    for g in &gaps {
        assert!(g.complete && g.parts.is_empty() && !g.discontinuity);
        assert!((g.duration - 2.0).abs() < 1e-9, "{}", g.duration);
    }
    // Segment 2 was the short one the flush closed (a frame): gap 3 starts where it ends.
    assert!(gaps[0].pdt.unwrap() > end_of_2);
    let text = crate::playlist::render_media(&pl, false);
    assert_eq!(
        text.matches("#EXT-X-GAP\n#EXTINF:2.00000,\nseg").count(),
        2,
        "{text}"
    );
    let parsed = crate::rules::check(&text, &crate::rules::Expect::default())
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    assert!(parsed.segment(3).unwrap().gap);
    // Media resumes at 5, after the discontinuity, arriving later.
    let later = now + Duration::from_secs(10);
    for i in 0..70 {
        t.push(video_sample(i, None), &mut tl, later).unwrap();
    }
    let pl = t.playlist(vec![]);
    let five = pl.segments.iter().find(|s| s.msn == 5).unwrap();
    assert!(five.discontinuity && !five.gap && !five.parts.is_empty());
    let text = crate::playlist::render_media(&pl, false);
    crate::rules::check(&text, &crate::rules::Expect::default())
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
}

#[test]
fn a_track_can_start_with_a_run_of_gaps() {
    let start = TrackStart {
        msn: 7,
        discontinuity_sequence: 2,
        init_id: 3,
        discontinuity: true,
        gaps: Some(GapRun {
            count: 3,
            start_ns: 1_700_000_000_000_000_000,
            step_ns: 1_500_000_000,
        }),
    };
    let mut t = Track::new(video_plan("720p"), cfg(), start);
    // Nothing to play yet: no part, and the hint names where media will start.
    assert_eq!(t.last_part(), None);
    assert_eq!(t.next_msn(), 10);
    assert_eq!(t.last_complete_msn(), Some(9));
    t.configure(h264_info().config, &mut anchor(), Instant::now())
        .unwrap();
    assert_eq!(t.next_part_position(), Some((10, 0)));
    let mut tl = anchor();
    tl.raise_floor(1_700_000_004_500_000_000);
    for i in 0..20 {
        t.push(video_sample(i, None), &mut tl, Instant::now())
            .unwrap();
    }
    let pl = t.playlist(vec![]);
    assert_eq!(pl.media_sequence, 7);
    assert_eq!(pl.discontinuity_sequence, 2);
    let text = crate::playlist::render_media(&pl, false);
    let parsed = crate::rules::check(&text, &crate::rules::Expect::default())
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let numbers: Vec<_> = parsed
        .segments
        .iter()
        .map(|s| (s.msn, s.gap, s.discontinuity_number))
        .collect();
    assert_eq!(
        numbers,
        [(7, true, 2), (8, true, 2), (9, true, 2), (10, false, 3)]
    );
    assert!((parsed.segments[0].duration - 1.5).abs() < 1e-9);
    assert!(text.starts_with("#EXTM3U") && text.contains("#EXT-X-MAP:URI=\"init3.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n#EXT-X-GAP"), "{text}");
}

/// The video's frontier is a promise to the audio that follows it: no segment boundary the
/// video opens later is earlier. Checked over 40 s of 30 fps video with B-frame delays, whose
/// network delay wanders (a random walk from 20 to 400 ms, with stalls and the bursts after
/// them) and whose keyframes come at irregular intervals (0.5 to 3.5 s).
#[test]
fn no_boundary_opens_before_a_frontier_the_video_reported() {
    let start = Instant::now();
    let mut tl = anchor();
    let mut t = Track::new(video_plan("720p"), cfg(), TrackStart::default());
    t.configure(h264_info().config, &mut tl, start).unwrap();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut delay_ms, mut last_arrival, mut next_key) = (100u64, Duration::ZERO, 0u64);
    // (frontier after push i, boundaries opened by then)
    let mut promises: Vec<(u64, u64)> = Vec::new();
    let opened = |tl: &Timeline| (0..).take_while(|&n| tl.boundary(n).is_some()).count() as u64;
    for i in 0..1200u64 {
        let dts_ns = 1_000_000_000 + i * 1_000_000_000 / 30;
        delay_ms = (delay_ms + next() % 41).saturating_sub(20).clamp(20, 400);
        if next() % 150 == 0 {
            delay_ms = 400;
        }
        let arrival =
            (Duration::from_nanos(dts_ns) + Duration::from_millis(delay_ms)).max(last_arrival);
        last_arrival = arrival;
        let keyframe = i == next_key;
        if keyframe {
            next_key = i + 15 + next() % 91;
        }
        let sample = Sample {
            pts_ns: dts_ns + 66_666_667,
            dts_ns,
            keyframe,
            data: Bytes::from(vec![(i % 251) as u8; 100]),
            arrival: Some(start + arrival),
        };
        t.push(sample, &mut tl, start + arrival).unwrap();
        if let Some(f) = tl.video_frontier() {
            promises.push((f, opened(&tl)));
        }
    }
    let total = opened(&tl);
    assert!(total > 10, "{total} segments");
    for (i, &(frontier, known)) in promises.iter().enumerate() {
        for n in known..total {
            let b = tl.boundary(n).expect("opened").wall_ns;
            assert!(
                b >= frontier,
                "segment {n} opened at {b}, {} ns before the frontier of push {i}",
                frontier - b
            );
        }
    }
}

/// Audio that follows the video closes a full part as soon as the video has got past the
/// part's last frame: the part is served at once, the playlist lists it (and the hint moves
/// on) when the frame after it decides whether the segment ends with it, and the bytes served
/// early are the part's. Over 12 s of 30 fps video arriving 100 ms after its DTS and AAC
/// arriving 20 ms after its own, so the audio waits for the video.
#[test]
fn a_full_audio_part_is_served_before_its_segment_end_is_decided() {
    let start = Instant::now();
    let mut tl = anchor();
    tl.has_video = true;
    let mut v = Track::new(video_plan("720p"), cfg(), TrackStart::default());
    v.configure(h264_info().config, &mut tl, start).unwrap();
    let mut a = Track::new(audio_plan(), cfg(), TrackStart::default());
    a.configure(aac_info().config, &mut tl, start).unwrap();
    a.set_follow(true);
    let mut events: Vec<(Duration, Sample)> = Vec::new();
    for i in 0..360 {
        let mut s = video_sample(i, None);
        // Every frame, the keyframes too, presented two frames after it is decoded.
        s.pts_ns = s.dts_ns + 66_666_667;
        let at = Duration::from_nanos(s.dts_ns) + Duration::from_millis(100);
        s.arrival = Some(start + at);
        events.push((at, s));
    }
    for j in 0..560 {
        let mut s = audio_sample(j);
        let at = Duration::from_nanos(s.dts_ns) + Duration::from_millis(20);
        s.arrival = Some(start + at);
        events.push((at, s));
    }
    events.sort_by_key(|(at, s)| (*at, s.data.len()));
    let mut early: Vec<((u64, u32), Bytes)> = Vec::new();
    for (at, s) in events {
        let video = s.data.len() >= 100;
        if video {
            v.push(s, &mut tl, start + at).unwrap();
            a.release(&mut tl, start + at).unwrap();
        } else {
            a.push(s, &mut tl, start + at).unwrap();
        }
        if a.unlisted {
            let (m, k) = a.next_part_position().unwrap();
            let bytes = a.part(m, k).expect("the unlisted part is served");
            let pl = a.playlist(vec![]);
            assert_eq!(
                pl.preload_hint.as_deref(),
                Some(&*format!("part{m}.{k}.m4s"))
            );
            assert_ne!(a.last_part(), Some((m, k)));
            // (A playlist with nothing listed yet is not served.)
            if a.last_part().is_some() {
                let text = crate::playlist::render_media(&pl, false);
                crate::rules::check(&text, &crate::rules::Expect::default())
                    .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
            }
            if early.last().is_none_or(|(p, _)| *p != (m, k)) {
                early.push(((m, k), bytes));
            }
        }
    }
    for ((m, k), bytes) in &early {
        assert!(a.last_part().unwrap() >= (*m, *k));
        assert_eq!(a.part(*m, *k).as_ref(), Some(bytes), "part {m}.{k}");
    }
    // The audio's segments still last what the video's do (within a frame).
    for m in 1..5 {
        let secs = |t: &Track| {
            let ts = u32::try_from(t.timescale()).unwrap();
            codec::ticks_to_secs(t.find_segment(m).unwrap().duration, ts)
        };
        let (vs, aus) = (secs(&v), secs(&a));
        assert!(
            (vs - aus).abs() < 0.022,
            "segment {m}: video {vs} s, audio {aus} s"
        );
    }
    // Most parts end where the video's do (`audio_parts_end_where_the_video_parts_do`), which
    // is known once the video has got past the frame after them; the rest still go out early.
    assert!(early.len() > 15, "{} parts served early", early.len());
}

/// Audio that follows the video ends its parts where the video's parts end, to within an AAC
/// frame, so part N.k covers the same media in both: over 12 s of 30 fps video and 48 kHz AAC
/// with RTMP's millisecond timestamps, 200 ms parts (plus the origin's 5 ms slack), the video
/// arriving 40 ms after its DTS and the audio 30 ms after its own (interleaved, as over RTMP).
#[test]
fn audio_parts_end_where_the_video_parts_do() {
    let start = Instant::now();
    let mut tl = anchor();
    tl.has_video = true;
    let cfg = TrackConfig {
        part_target: Duration::from_millis(205),
        ..cfg()
    };
    let mut v = Track::new(video_plan("720p"), cfg, TrackStart::default());
    v.configure(h264_info().config, &mut tl, start).unwrap();
    let mut a = Track::new(audio_plan(), cfg, TrackStart::default());
    a.configure(aac_info().config, &mut tl, start).unwrap();
    a.set_follow(true);
    // Ten 48 kHz AAC frames (213.3 ms) can start within one 205 ms video part.
    assert_eq!(a.part_target(), Duration::from_millis(215));
    assert_eq!(v.part_target(), Duration::from_millis(205));
    // PART-HOLD-BACK is the stream's three part targets in both, and never below twice the
    // audio's own PART-TARGET.
    assert_eq!((a.part_hold_back(), v.part_hold_back()), (0.615, 0.615));
    let two = TrackConfig {
        part_hold_back_parts: 2,
        ..cfg
    };
    let mut a2 = Track::new(audio_plan(), two, TrackStart::default());
    a2.configure(aac_info().config, &mut anchor(), start)
        .unwrap();
    assert_eq!(a2.part_hold_back(), 0.43);
    let ms = |ns: u64| ns / 1_000_000 * 1_000_000;
    let mut events: Vec<(Duration, Sample)> = Vec::new();
    for i in 0..360 {
        let mut s = video_sample(i, None);
        // No reordering: with B-frames the video's clock (the least arrival - PTS) would sit
        // a reorder delay from the audio's, and the segment boundaries go by the clocks then.
        s.dts_ns = ms(s.dts_ns);
        s.pts_ns = s.dts_ns;
        let at = Duration::from_nanos(s.dts_ns) + Duration::from_millis(40);
        s.arrival = Some(start + at);
        events.push((at, s));
    }
    for j in 0..560 {
        let mut s = audio_sample(j);
        s.dts_ns = ms(s.dts_ns);
        s.pts_ns = s.dts_ns;
        let at = Duration::from_nanos(s.dts_ns) + Duration::from_millis(30);
        s.arrival = Some(start + at);
        events.push((at, s));
    }
    events.sort_by_key(|(at, s)| (*at, s.data.len()));
    for (at, s) in events {
        if s.data.len() >= 100 {
            v.push(s, &mut tl, start + at).unwrap();
            a.release(&mut tl, start + at).unwrap();
        } else {
            a.push(s, &mut tl, start + at).unwrap();
        }
    }
    let (vp, ap) = (v.playlist(vec![]), a.playlist(vec![]));
    let text = crate::playlist::render_media(&ap, false);
    assert!(text.contains("PART-TARGET=0.21500"), "{text}");
    crate::rules::check(&text, &crate::rules::Expect::default())
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    // Where a part starts in media time: its tfdt (DTS; the audio's is its PTS, and the
    // video's parts are placed by their DTS as the playlist's durations add up).
    let start_ns = |t: &Track, m: u64, k: u32| {
        let data = t.part(m, k).unwrap();
        let moof = Moof::decode(&mut data.as_ref()).unwrap();
        let tfdt = moof.traf[0].tfdt.as_ref().unwrap().base_media_decode_time;
        codec::ticks_to_ns(tfdt, u32::try_from(t.timescale()).unwrap())
    };
    let mut compared = 0;
    for vs in vp.segments.iter().filter(|s| s.complete) {
        let Some(aus) = ap.segments.iter().find(|s| s.msn == vs.msn && s.complete) else {
            continue;
        };
        assert_eq!(aus.parts.len(), vs.parts.len(), "segment {}", vs.msn);
        for (k, pa) in (0u32..).zip(&aus.parts) {
            // The first audio frame at or after the video's part start, within the cut
            // tolerance (10 ms) and a millisecond of timestamp rounding.
            let d = start_ns(&a, vs.msn, k) as f64 - start_ns(&v, vs.msn, k) as f64;
            assert!(
                d > -11e6 && d < 22.4e6,
                "part {}.{k} starts {:.1} ms after the video's",
                vs.msn,
                d / 1e6
            );
            assert!(pa.duration <= 0.215, "part {}.{k}: {}", vs.msn, pa.duration);
            compared += 1;
        }
    }
    assert!(compared >= 40, "{compared} parts compared");
}

/// Where a player that starts PART-HOLD-BACK behind the edge lands, measured from the keyframe
/// it must load from: checked against the arithmetic after every frame of 10 s of 30 fps video
/// with a keyframe every 2 s (333 ms parts: PART-HOLD-BACK 0.999 s).
#[test]
fn join_distance_is_the_start_position_past_its_keyframe() {
    for parts in [2, 3] {
        join_distance_with_hold_back(parts);
    }
}

fn join_distance_with_hold_back(parts: u32) {
    let cfg = TrackConfig {
        part_hold_back_parts: parts,
        ..cfg()
    };
    let mut t = Track::new(video_plan("720p"), cfg, TrackStart::default());
    t.configure(h264_info().config, &mut anchor(), Instant::now())
        .unwrap();
    let mut tl = anchor();
    let now = Instant::now();
    // 2 or 3 x 0.333 s, as served.
    let hold_back = 0.333 * f64::from(parts);
    assert!((t.part_hold_back() - hold_back).abs() < 1e-9);
    let mut seen_small = 0;
    for i in 0..300 {
        t.push(video_sample(i, None), &mut tl, now).unwrap();
        let pl = t.playlist(vec![]);
        let edge: f64 = pl
            .segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .map(|p| p.duration)
            .sum();
        let pos = edge - hold_back;
        let expected = (pos >= 0.0).then(|| pos - 2.0 * (pos / 2.0).floor());
        let got = t.join_distance().map(|d| d.as_secs_f64());
        match (expected, got) {
            (None, None) => {}
            (Some(e), Some(g)) => {
                assert!(
                    (e - g).abs() < 0.002,
                    "{parts} parts, frame {i}: {g} s, expected {e} s"
                )
            }
            other => panic!("{parts} parts, frame {i}: {other:?}"),
        }
        seen_small += usize::from(got.is_some_and(|g| g <= 0.333));
    }
    assert!(seen_small > 0);
}

/// Audio parts can end where the video's do from 200 ms parts (ten AAC frames at 48 kHz, a
/// nine-frame part being 89 % of PART-TARGET), not at 100 ms (five frames: four are 79 %).
#[test]
fn audio_parts_follow_the_video_from_200_ms_parts() {
    let follows = |ms: u64| {
        let cfg = TrackConfig {
            part_target: Duration::from_millis(ms),
            ..cfg()
        };
        let mut a = Track::new(audio_plan(), cfg, TrackStart::default());
        a.configure(aac_info().config, &mut anchor(), Instant::now())
            .unwrap();
        a.parts_follow_video()
    };
    assert!(follows(200) && follows(333));
    assert!(!follows(100));
    assert!(!video_track().parts_follow_video());
}

/// BANDWIDTH is the measured peak: the highest bit rate of any complete segment of at least half
/// the target since the track began, kept after that segment left the window; AVERAGE-BANDWIDTH
/// is the measured average over the window's complete segments. Both are what a player fetching
/// those segments downloads (their served bytes, boxes included), not the nominal rate.
#[test]
fn bandwidth_is_the_measured_peak_and_average_of_the_served_segments() {
    let mut t = video_track();
    let now = Instant::now();
    // Segment 4 (frames 240..300) carries 50 times the bytes of the others.
    let push = |t: &mut Track, i: u64| {
        let mut s = video_sample(i, None);
        if (240..300).contains(&i) {
            s.data = Bytes::from(vec![7u8; 5000]);
        }
        t.push(s, &mut anchor(), now).unwrap();
    };
    assert_eq!(t.measured_bitrate(), None, "nothing measured yet");
    // Bits per second of each complete segment in the playlist, and the window's average.
    let served = |t: &Track| {
        let pl = t.playlist(vec![]);
        let mut rates = Vec::new();
        let (mut bits, mut secs) = (0.0, 0.0);
        for s in pl.segments.iter().filter(|s| s.complete) {
            let bytes: usize = t.segment(s.msn).unwrap().iter().map(|b| b.len()).sum();
            rates.push((s.msn, bytes as f64 * 8.0 / s.duration));
            bits += bytes as f64 * 8.0;
            secs += s.duration;
        }
        (rates, bits / secs)
    };
    let near = |got: u64, want: f64| (got as f64 - want).abs() <= want * 0.01;

    for i in 0..=(60 * 6) {
        push(&mut t, i);
    }
    let (rates, avg) = served(&t);
    assert_eq!(rates.len(), 6, "{rates:?}");
    let big = rates.iter().find(|(m, _)| *m == 4).unwrap().1;
    let small = rates.iter().find(|(m, _)| *m == 3).unwrap().1;
    assert!(big > 20.0 * small, "{rates:?}");
    let (peak, average) = t.measured_bitrate().unwrap();
    assert!(near(peak, big), "peak {peak}, segment 4 served at {big}");
    assert!(near(average, avg), "average {average}, served {avg}");
    assert!(average < peak / 3, "{average} {peak}");

    // Segment 4 leaves the window: the average falls back, the peak stays.
    for i in (60 * 6 + 1)..=(60 * 12) {
        push(&mut t, i);
    }
    let (rates, avg) = served(&t);
    assert!(rates.iter().all(|(m, _)| *m > 4), "{rates:?}");
    let (peak, average) = t.measured_bitrate().unwrap();
    assert!(
        near(peak, big),
        "peak {peak} after segment 4 left, was {big}"
    );
    assert!(near(average, avg), "average {average}, served {avg}");
    assert!(
        near(average, small),
        "average {average}, a plain segment {small}"
    );
}
