use super::*;

#[test]
fn percentiles_come_from_the_raw_samples_and_the_ring_keeps_the_newest() {
    let mut d = Deliveries::default();
    let t0 = Instant::now();
    // 100 frames that waited 1..=100 ms.
    for i in 1..=100u64 {
        let sent = t0 + Duration::from_millis(1000);
        d.record("360p", sent, &[sent - Duration::from_millis(i)]);
    }
    let s = &d.summary()[0];
    assert_eq!((s.rendition.as_str(), s.frames), ("360p", 100));
    assert_eq!(
        (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
        (50.0, 90.0, 99.0, 100.0)
    );
    // The ring forgets the oldest: MAX_SAMPLES frames of 5 ms push the 1..=100 out.
    let sent = t0 + Duration::from_secs(2);
    let five = vec![sent - Duration::from_millis(5); MAX_SAMPLES];
    d.record("360p", sent, &five);
    let s = &d.summary()[0];
    assert_eq!((s.frames, s.max_ms), (MAX_SAMPLES, 5.0));
    // A part without arrivals (gap filler) records nothing; renditions are sorted.
    d.record("240p", sent, &[]);
    d.record("audio", sent, &[sent]);
    let names: Vec<String> = d.summary().into_iter().map(|s| s.rendition).collect();
    assert_eq!(names, ["360p", "audio"]);
}

#[test]
fn only_the_first_waiters_of_a_part_are_claimed() {
    let mut d = Deliveries::default();
    let sent = Instant::now() + Duration::from_secs(1);
    let frames = [sent - Duration::from_millis(100); 3];
    let mut claimed = 0;
    for _ in 0..1000 {
        if d.claim("360p", (7, 2)) {
            claimed += 1;
            d.record("360p", sent, &frames);
        }
    }
    assert_eq!(claimed, MAX_WAITERS_PER_PART);
    assert_eq!(d.summary()[0].frames, 3 * MAX_WAITERS_PER_PART as usize);
    // The next part is claimed again; another rendition's parts count apart.
    assert!(d.claim("360p", (7, 3)));
    assert!(d.claim("audio", (7, 2)));
}
