//! Ladder planning: which rungs a source feeds, and at what size.
//!
//! A rung's `height` is the short side of its picture, so a vertical 720x1280 phone stream
//! gets 720-, 480- and 360-wide rungs in its own aspect ratio. A rung is encoded only when it
//! is smaller than the source: with passthrough on, the source rendition is already there at
//! full size, and re-encoding a rung of the same size adds nothing but CPU; without
//! passthrough, a rung the size of the source is the source's only rendition and stays.

use edge_config::Rung;

/// The short side of a picture.
fn short_side(w: u32, h: u32) -> u32 {
    if w == 0 {
        h
    } else {
        w.min(h)
    }
}

/// Output size of a rung for a source: the rung's short side, the source's aspect ratio,
/// even sizes (x264 needs them). A source of unknown size gets a 16:9 landscape rung.
pub fn rung_size(rung_short: u32, src_w: u32, src_h: u32) -> (u32, u32) {
    if src_h == 0 || src_w == 0 {
        return ((rung_short * 16 / 9) & !1, rung_short & !1);
    }
    let scale = |long: u32, short: u32| -> u32 {
        let v = (u64::from(rung_short) * u64::from(long) + u64::from(short) / 2) / u64::from(short);
        (v as u32).max(2) & !1
    };
    if src_h > src_w {
        (rung_short.max(2) & !1, scale(src_h, src_w))
    } else {
        (scale(src_w, src_h), rung_short.max(2) & !1)
    }
}

/// The rungs a source of `src_w` x `src_h` feeds: smaller than the source (with
/// `passthrough`), or not larger (without it).
pub fn rungs_for_source(ladder: &[Rung], src_w: u32, src_h: u32, passthrough: bool) -> Vec<Rung> {
    let short = short_side(src_w, src_h);
    ladder
        .iter()
        .filter(|r| {
            if passthrough {
                r.height < short
            } else {
                r.height <= short
            }
        })
        .cloned()
        .collect()
}

/// A rung to build: its picture size and frame rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RungShape {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// The order to build rungs in (largest picture first) and what each one scales from: `None`,
/// the decoded source, or the index of a larger rung already built, at least as large in both
/// dimensions and at least as fast (the smallest such). Scaling in cascade (720p from the
/// source, 480p from 720p, 360p from 480p) reads a smaller picture for every rung after the
/// first: GStreamer's `videoscale` spent most of its time on the input (1280x720 to 640x360
/// cost almost as much as to 854x480, measured in `benches/ladder.rs`), and our scaler's
/// vertical pass and the taps of both passes shrink with the input too (`crate::scale`).
pub fn cascade(shapes: &[RungShape]) -> Vec<(usize, Option<usize>)> {
    let area = |i: usize| {
        shapes
            .get(i)
            .map_or(0, |s| u64::from(s.width) * u64::from(s.height))
    };
    let mut order: Vec<usize> = (0..shapes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(area(i)));
    let mut built: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    for i in order {
        let Some(me) = shapes.get(i) else { continue };
        let from = built.iter().rev().copied().find(|&j| {
            shapes
                .get(j)
                .is_some_and(|b| b.width >= me.width && b.height >= me.height && b.fps >= me.fps)
        });
        out.push((i, from));
        built.push(i);
    }
    out
}

#[cfg(test)]
#[path = "ladder_test.rs"]
mod tests;
