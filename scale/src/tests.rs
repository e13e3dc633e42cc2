use super::*;

/// A plane of `w`x`h` with rows `stride` apart, sample (x, y) from `f`, padding 0xAA.
fn plane(w: usize, h: usize, stride: usize, f: impl Fn(usize, usize) -> u8) -> Vec<u8> {
    let mut v = vec![0xAA; stride * h];
    for y in 0..h {
        for x in 0..w {
            v[y * stride + x] = f(x, y);
        }
    }
    v
}

fn scaled(src: &[u8], sw: usize, sh: usize, stride: usize, dw: usize, dh: usize) -> Vec<u8> {
    let mut s = PlaneScaler::new(sw, sh, dw, dh).expect("sizes");
    let mut out = vec![0; dw * dh];
    s.scale(src, stride, &mut out, dw).expect("scale");
    out
}

#[test]
fn weights_sum_to_one_and_taps_follow_the_shrink_factor() {
    for (src, dst, taps) in [
        (1280, 854, 3),
        (854, 640, 3),
        (1280, 640, 4),
        (720, 720, 1),
        (640, 1280, 2),
        (1920, 640, 5),
        (3, 1, 3),
        (1, 5, 1),
    ] {
        let f = Filter::new(src, dst).expect("filter");
        assert_eq!(f.taps(), taps, "{src} -> {dst}");
        for i in 0..dst {
            let (start, w) = f.at(i).expect("output sample");
            assert!(
                start + f.taps() <= src,
                "{src} -> {dst}: window of {i} past the edge"
            );
            assert_eq!(
                w.iter().map(|&x| u32::from(x)).sum::<u32>(),
                256,
                "{src} -> {dst}: weights of {i}"
            );
        }
    }
    assert!(Filter::new(0, 4).is_none());
    assert!(Filter::new(4, 0).is_none());
    assert!(PlaneScaler::new(640, 0, 320, 180).is_none());
}

#[test]
fn a_flat_picture_stays_flat_and_the_same_size_is_a_copy() {
    for (sw, sh, dw, dh) in [
        (1280, 720, 854, 480),
        (427, 240, 320, 180),
        (64, 36, 100, 50),
    ] {
        let src = plane(sw, sh, sw, |_, _| 77);
        assert!(scaled(&src, sw, sh, sw, dw, dh).iter().all(|&p| p == 77));
    }
    let src = plane(64, 48, 64, |x, y| (x * 3 + y * 5) as u8);
    assert_eq!(scaled(&src, 64, 48, 64, 64, 48), src);
}

/// The scaler written the plain way, one output sample at a time with the same filters and
/// the same rounding: what the blocked, transposed passes must equal.
fn reference(src: &[u8], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<u8> {
    let (h, v) = (
        Filter::new(sw, dw).expect("h"),
        Filter::new(sh, dh).expect("v"),
    );
    let mut out = vec![0; dw * dh];
    for y in 0..dh {
        let (vs, vw) = v.at(y).expect("row");
        let row: Vec<u8> = (0..sw)
            .map(|x| {
                let s: u32 = vw
                    .iter()
                    .enumerate()
                    .map(|(k, &w)| u32::from(w) * u32::from(src[(vs + k) * sw + x]))
                    .sum();
                ((s + 128) >> 8) as u8
            })
            .collect();
        for x in 0..dw {
            let (hs, hw) = h.at(x).expect("column");
            let s: u32 = hw
                .iter()
                .enumerate()
                .map(|(k, &w)| u32::from(w) * u32::from(row[hs + k]))
                .sum();
            out[y * dw + x] = ((s + 128) >> 8) as u8;
        }
    }
    out
}

#[test]
fn blocks_of_rows_give_what_one_sample_at_a_time_gives() {
    for (sw, sh, dw, dh) in [
        (1280, 720, 854, 480),
        (854, 480, 640, 360),
        (37, 23, 17, 11),
        (100, 50, 150, 75),
        (1920, 1080, 427, 240),
        (5, 40, 5, 3),
    ] {
        let src = plane(sw, sh, sw, |x, y| ((x * 31 + y * 17 + x * y) % 256) as u8);
        assert_eq!(
            scaled(&src, sw, sh, sw, dw, dh),
            reference(&src, sw, sh, dw, dh),
            "{sw}x{sh} -> {dw}x{dh}"
        );
    }
}

#[test]
fn a_ramp_is_resampled_where_the_centres_fall() {
    // 2:1 on a ramp 0, 2, 4, ...: output x covers source 2x and 2x + 1, centre 2x + 0.5,
    // value 2 × (2x + 0.5) = 4x + 1 away from the edges (the edges repeat).
    let src = plane(200, 4, 200, |x, _| (2 * x).min(255) as u8);
    let out = scaled(&src, 200, 4, 200, 100, 2);
    for x in 1..60 {
        let want = 4 * x as i32 + 1;
        for y in 0..2 {
            let got = i32::from(out[y * 100 + x]);
            assert!((got - want).abs() <= 1, "x {x}: {got} against {want}");
        }
    }
}

#[test]
fn cosited_chroma_keeps_its_place_in_its_cell() {
    // 2:1 on a ramp 0, 4, 8, ...: a centred output x sits at source 2x + 0.5 (value 8x + 2);
    // one sited a quarter into its cell (chroma with the first of its two luma samples) sits
    // at 2x + 0.25 (value 8x + 1): the first sample's centre, scaled, stays the first's.
    let src = plane(64, 4, 64, |x, _| (4 * x).min(255) as u8);
    for (phase, offset) in [(CENTRED, 2), (COSITED_HALF, 1)] {
        let mut s = PlaneScaler::sited(64, 4, 32, 2, (phase, CENTRED)).expect("sizes");
        let mut out = vec![0; 32 * 2];
        s.scale(&src, 64, &mut out, 32).expect("scale");
        for x in 1..28 {
            let want = 8 * x as i32 + offset;
            for y in 0..2 {
                let got = i32::from(out[y * 32 + x]);
                assert_eq!(got, want, "phase {phase}, x {x}");
            }
        }
    }
    // Vertically the same, and the same size is a copy whatever the phase.
    let src = plane(4, 64, 4, |_, y| (4 * y).min(255) as u8);
    let mut s = PlaneScaler::sited(4, 64, 2, 32, (CENTRED, COSITED_HALF)).expect("sizes");
    let mut out = vec![0; 2 * 32];
    s.scale(&src, 4, &mut out, 2).expect("scale");
    assert_eq!(out[10 * 2], 8 * 10 + 1);
    let src = plane(40, 30, 40, |x, y| (x * 3 + y * 5) as u8);
    let mut s = PlaneScaler::sited(40, 30, 40, 30, (COSITED_HALF, COSITED_HALF)).expect("sizes");
    let mut out = vec![0; 40 * 30];
    s.scale(&src, 40, &mut out, 40).expect("scale");
    assert_eq!(out, src);
    // A phase that is not a number is the centre; one past an end is that end.
    assert_eq!(Filter::with_phase(64, 32, f64::NAN), Filter::new(64, 32));
    assert_eq!(
        Filter::with_phase(64, 32, 7.0),
        Filter::with_phase(64, 32, 1.0)
    );
}

#[test]
fn fine_detail_is_averaged_when_shrinking_not_skipped() {
    // One-pixel stripes, halved: a 2-tap interpolation would keep picking one colour; the
    // widened tent sees both.
    let src = plane(128, 8, 128, |x, _| if x % 2 == 0 { 0 } else { 255 });
    let out = scaled(&src, 128, 8, 128, 64, 4);
    for row in out.chunks(64) {
        // Away from the edges, which repeat.
        for &p in &row[1..63] {
            assert!((120..=135).contains(&p), "{p}");
        }
    }
}

#[test]
fn row_padding_is_never_read_as_picture() {
    let (sw, sh) = (427, 240);
    let a = plane(sw, sh, sw, |x, y| ((x * 7 + y * 13) % 251) as u8);
    let b = plane(sw, sh, 448, |x, y| ((x * 7 + y * 13) % 251) as u8);
    assert_eq!(
        scaled(&a, sw, sh, sw, 320, 180),
        scaled(&b, sw, sh, 448, 320, 180)
    );
    // Output rows with padding: the padding stays as it was.
    let mut s = PlaneScaler::new(sw, sh, 320, 180).expect("sizes");
    let mut out = vec![0x55; 336 * 180];
    s.scale(&a, sw, &mut out, 336).expect("scale");
    assert!(out
        .chunks(336)
        .all(|row| row[320..].iter().all(|&p| p == 0x55)));
}

#[test]
fn a_buffer_too_small_for_the_picture_is_an_error_not_a_panic() {
    let mut s = PlaneScaler::new(64, 36, 32, 18).expect("sizes");
    let mut out = vec![0; 32 * 18];
    let short = vec![0; 64 * 36 - 1];
    assert_eq!(
        s.scale(&short, 64, &mut out, 32),
        Err(ScaleError::Source {
            width: 64,
            height: 36,
            stride: 64
        })
    );
    let src = vec![0; 64 * 36];
    assert!(matches!(
        s.scale(&src, 63, &mut out, 32),
        Err(ScaleError::Source { .. })
    ));
    let mut small = vec![0; 32 * 17];
    assert!(matches!(
        s.scale(&src, 64, &mut small, 32),
        Err(ScaleError::Output { .. })
    ));
    assert!(matches!(
        s.scale(&src, usize::MAX, &mut out, 32),
        Err(ScaleError::Source { .. })
    ));
}

#[test]
fn every_small_size_either_way_matches_the_plain_scaler() {
    // Every source and output size up to 9 x 9 (growing, shrinking, one row, one column,
    // filters wider than the source), 33 rows for blocks that end part-way: no panic, and the
    // same samples as the plain scaler.
    for sw in 1..=9 {
        for dw in 1..=9 {
            for (sh, dh) in [(1, 1), (1, 7), (7, 1), (9, 4), (4, 9), (33, 17), (17, 33)] {
                let src = plane(sw, sh, sw, |x, y| ((x * 97 + y * 61 + 13) % 256) as u8);
                assert_eq!(
                    scaled(&src, sw, sh, sw, dw, dh),
                    reference(&src, sw, sh, dw, dh),
                    "{sw}x{sh} -> {dw}x{dh}"
                );
            }
        }
    }
}

#[test]
fn the_plain_passes_give_what_the_avx2_ones_give() {
    // `scale` takes the AVX2 passes on a CPU that has them (as the CI machine does); the
    // plain ones are what any other x86-64 and other architectures run.
    for (sw, sh, dw, dh) in [
        (1280, 720, 854, 480),
        (427, 240, 320, 180),
        (37, 23, 61, 40),
    ] {
        let src = plane(sw, sh, sw, |x, y| ((x * 31 + y * 17 + x * y) % 256) as u8);
        let mut s = PlaneScaler::new(sw, sh, dw, dh).expect("sizes");
        let mut plain = vec![0; dw * dh];
        s.passes(&src, sw, &mut plain, dw);
        assert_eq!(
            scaled(&src, sw, sh, sw, dw, dh),
            plain,
            "{sw}x{sh} -> {dw}x{dh}"
        );
    }
}
