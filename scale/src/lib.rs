//! Scaling 8-bit planes of video pictures for the ladder: the pure part of edge's scaler (the
//! GStreamer element around it is `ingest::scale`, `edgescale`).
//!
//! The filter is the one GStreamer's `videoscale` applies by default (`method=bilinear`, its
//! linear resampler): a tent, widened by the shrink factor when shrinking so that every
//! source pixel counts (1.5 times smaller: 3 taps; twice: 4), a plain 2-tap interpolation when
//! growing. It is separable: a vertical pass blends the source rows each output row needs into
//! one row of the source's width, a horizontal pass blends that row's pixels. The horizontal
//! pass runs on 16 such rows at once, transposed, so that it too works on whole vectors (a
//! column of 16) rather than on one pixel and its neighbours. Weights are 8-bit fixed point
//! summing to 256 and never negative, so the arithmetic is `u16` (no overflow: 128 + 256 × 255
//! < 65,536) and vectorises: with SSE2 everywhere on x86-64, with AVX2 where the CPU has it
//! (chosen at run time; about half the time again).
//!
//! A crate of its own so that it is compiled optimised in every profile (the workspace's
//! `[profile.dev.package.edge-scale]`): unoptimised, it is too slow for the real-time ladder
//! the debug-built end-to-end tests run.
//!
//! Entry point: [`PlaneScaler`] (one plane's filters and buffers, reused frame after frame).
//! Pure: no IO, no allocation after [`PlaneScaler::new`], no panic on any input (a buffer too
//! small for the picture is a [`ScaleError`]).

/// Output rows scaled together: the horizontal pass works on a block of this many rows,
/// transposed, so that each of its multiply-adds covers a whole column of the block (16 lanes
/// of `u16`) instead of one sample.
const BLOCK: usize = 16;

/// Fixed-point precision of the filter weights: 8 bits keep every sum of a pass within `u16`
/// (see the module documentation) and are finer than the 8-bit samples they weigh.
pub const WEIGHT_BITS: u32 = 8;
/// The sum of one output sample's weights.
const WEIGHT_ONE: i32 = 1 << WEIGHT_BITS;
/// Added before the final shift, to round to nearest.
const ROUND: u16 = 1 << (WEIGHT_BITS - 1);

/// [`Filter::with_phase`] for samples at the centre of their cell (luma, and chroma that is
/// not subsampled or sits between its luma samples).
pub const CENTRED: f64 = 0.5;
/// [`Filter::with_phase`] for chroma subsampled by 2 and sited with the first of its two luma
/// samples: at the centre of that luma sample, a quarter of the chroma sample's width in.
pub const COSITED_HALF: f64 = 0.25;

/// One dimension's filter: output sample `i` is the weighted sum of `taps` source samples
/// from `starts[i]` on, with weights `weights[i * taps..][..taps]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    taps: usize,
    starts: Vec<usize>,
    weights: Vec<u16>,
}

impl Filter {
    /// The tent filter from `src` samples to `dst` (both at least 1; `None` otherwise). Sample
    /// centres are aligned as GStreamer and swscale align them: output `i` sits at source
    /// position `(i + 0.5) × src / dst - 0.5`; samples past an edge repeat the edge.
    pub fn new(src: usize, dst: usize) -> Option<Filter> {
        Filter::with_phase(src, dst, CENTRED)
    }

    /// The same for samples that sit `phase` of a sample's width into their cell rather than
    /// at its centre ([`CENTRED`]): output `i` sits at source position `i × src / dst + phase
    /// × (src / dst - 1)`, so that an output sample keeps its place in its cell. Chroma
    /// subsampled by 2 and sited with the first of its two luma samples (H.264's default,
    /// GStreamer's `chroma-site=mpeg2` horizontally) has phase [`COSITED_HALF`]. A phase
    /// outside 0..=1 is taken as the nearest end.
    pub fn with_phase(src: usize, dst: usize, phase: f64) -> Option<Filter> {
        if src == 0 || dst == 0 {
            return None;
        }
        let phase = if phase.is_finite() {
            phase.clamp(0.0, 1.0)
        } else {
            CENTRED
        };
        let scale = src as f64 / dst as f64;
        let support = scale.max(1.0);
        let last = src as i64 - 1;
        // Each output's weights over its window of (clamped) source indices.
        let mut windows: Vec<(usize, Vec<f64>)> = Vec::with_capacity(dst);
        for i in 0..dst {
            let center = i as f64 * scale + phase * (scale - 1.0);
            let lo = (center - support).floor() as i64 + 1;
            let hi = (center + support).ceil() as i64 - 1;
            let first = lo.clamp(0, last);
            let mut w = vec![0.0; (hi.clamp(0, last) - first + 1).max(1) as usize];
            for j in lo..=hi {
                let weight = 1.0 - ((j as f64 - center).abs() / support);
                if weight > 0.0 {
                    let k = (j.clamp(0, last) - first) as usize;
                    if let Some(slot) = w.get_mut(k) {
                        *slot += weight;
                    }
                }
            }
            windows.push((first as usize, w));
        }
        let taps = windows
            .iter()
            .map(|(_, w)| w.len())
            .max()
            .unwrap_or(1)
            .min(src);
        let mut starts = Vec::with_capacity(dst);
        let mut weights = Vec::with_capacity(dst * taps);
        for (first, w) in windows {
            let start = first.min(src - taps);
            let shift = first - start;
            let total: f64 = w.iter().sum();
            let mut q = vec![0i32; taps];
            if total > 0.0 {
                for (k, x) in w.iter().enumerate() {
                    if let Some(slot) = q.get_mut(k + shift) {
                        *slot = (x / total * f64::from(WEIGHT_ONE)).round() as i32;
                    }
                }
            }
            // Rounding may miss the sum by a little: the largest weight takes the difference.
            let sum: i32 = q.iter().sum();
            if let Some(max) = q
                .iter_mut()
                .enumerate()
                .max_by_key(|(k, x)| (**x, std::cmp::Reverse(*k)))
                .map(|(_, x)| x)
            {
                *max += WEIGHT_ONE - sum;
            }
            if q.iter().any(|&x| x < 0) {
                // Cannot happen for a tent (each weight's rounding error is under half a
                // step, the largest weight is at least 256 / taps); kept so that the sums of
                // `PlaneScaler::scale` stay within `u16` whatever the arithmetic above does.
                q.fill(0);
                if let Some(slot) = q.get_mut(shift) {
                    *slot = WEIGHT_ONE;
                }
            }
            // Non-negative and summing to WEIGHT_ONE: each fits in u16.
            starts.push(start);
            weights.extend(q.iter().map(|&x| x as u16));
        }
        Some(Filter {
            taps,
            starts,
            weights,
        })
    }

    /// Source samples per output sample.
    pub fn taps(&self) -> usize {
        self.taps
    }

    /// Output sample `i`'s first source index and weights.
    #[inline(always)]
    fn at(&self, i: usize) -> Option<(usize, &[u16])> {
        let start = *self.starts.get(i)?;
        let w = self.weights.get(i * self.taps..(i + 1) * self.taps)?;
        Some((start, w))
    }
}

/// Why a plane could not be scaled: its buffer does not hold the picture the scaler was made
/// for (a caller's bug or a lying upstream element; the frame is refused, nothing panics).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScaleError {
    /// The source plane is smaller than `stride × (height - 1) + width` or its stride is
    /// narrower than a row.
    #[error("source plane too small for {width}x{height} with stride {stride}")]
    Source {
        width: usize,
        height: usize,
        stride: usize,
    },
    /// The same for the output plane.
    #[error("output plane too small for {width}x{height} with stride {stride}")]
    Output {
        width: usize,
        height: usize,
        stride: usize,
    },
}

/// One plane's scaler from `src_w`x`src_h` to `dst_w`x`dst_h`: both filters and the
/// buffers of the passes, reused frame after frame.
#[derive(Debug, Clone)]
pub struct PlaneScaler {
    src: (usize, usize),
    dst: (usize, usize),
    horizontal: Filter,
    vertical: Filter,
    /// One output row of the vertical pass, before rounding (source width).
    acc: Vec<u16>,
    /// `BLOCK` rows of the vertical pass, transposed: source column `x` is
    /// `block[x * BLOCK..][..BLOCK]`.
    block: Vec<u8>,
    /// The horizontal pass's results for the block, in the same transposed order.
    columns: Vec<u8>,
}

impl PlaneScaler {
    /// `None` if a dimension is 0. Samples at the centres of their cells.
    pub fn new(src_w: usize, src_h: usize, dst_w: usize, dst_h: usize) -> Option<PlaneScaler> {
        PlaneScaler::sited(src_w, src_h, dst_w, dst_h, (CENTRED, CENTRED))
    }

    /// The same with the samples' place in their cells, horizontally and vertically
    /// ([`Filter::with_phase`]).
    pub fn sited(
        src_w: usize,
        src_h: usize,
        dst_w: usize,
        dst_h: usize,
        (h_phase, v_phase): (f64, f64),
    ) -> Option<PlaneScaler> {
        Some(PlaneScaler {
            src: (src_w, src_h),
            dst: (dst_w, dst_h),
            horizontal: Filter::with_phase(src_w, dst_w, h_phase)?,
            vertical: Filter::with_phase(src_h, dst_h, v_phase)?,
            acc: vec![0; src_w],
            block: vec![0; src_w * BLOCK],
            columns: vec![0; dst_w * BLOCK],
        })
    }

    /// The sizes it was made for: ((source width, height), (output width, height)).
    pub fn sizes(&self) -> ((usize, usize), (usize, usize)) {
        (self.src, self.dst)
    }

    /// Scale `src` (rows `src_stride` bytes apart) into `dst` (rows `dst_stride` apart).
    pub fn scale(
        &mut self,
        src: &[u8],
        src_stride: usize,
        dst: &mut [u8],
        dst_stride: usize,
    ) -> Result<(), ScaleError> {
        let ((sw, sh), (dw, dh)) = (self.src, self.dst);
        if !fits(src.len(), sw, sh, src_stride) {
            return Err(ScaleError::Source {
                width: sw,
                height: sh,
                stride: src_stride,
            });
        }
        if !fits(dst.len(), dw, dh, dst_stride) {
            return Err(ScaleError::Output {
                width: dw,
                height: dh,
                stride: dst_stride,
            });
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: `passes_avx2` needs nothing but AVX2, which this CPU has (checked just
            // above); the slices were checked against the sizes by `fits`.
            unsafe { self.passes_avx2(src, src_stride, dst, dst_stride) };
            return Ok(());
        }
        self.passes(src, src_stride, dst, dst_stride);
        Ok(())
    }

    /// [`PlaneScaler::passes`] compiled for AVX2 (16 lanes of `u16` per instruction instead of
    /// SSE2's 8: about half the time, measured on the ladder's pictures).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn passes_avx2(
        &mut self,
        src: &[u8],
        src_stride: usize,
        dst: &mut [u8],
        dst_stride: usize,
    ) {
        self.passes(src, src_stride, dst, dst_stride);
    }

    /// Both passes over the whole plane, for sizes [`PlaneScaler::scale`] has checked.
    #[inline(always)]
    fn passes(&mut self, src: &[u8], src_stride: usize, dst: &mut [u8], dst_stride: usize) {
        let ((sw, _), (dw, dh)) = (self.src, self.dst);
        let mut y0 = 0;
        while y0 < dh {
            let rows = (dh - y0).min(BLOCK);
            for r in 0..rows {
                let Some((start, weights)) = self.vertical.at(y0 + r) else {
                    continue;
                };
                // Vertical pass: the source rows this output row needs, blended, stored as
                // column `r` of the transposed block.
                self.acc.fill(ROUND);
                for (k, &w) in weights.iter().enumerate() {
                    if w == 0 {
                        continue;
                    }
                    let at = (start + k) * src_stride;
                    let Some(line) = src.get(at..at + sw) else {
                        continue;
                    };
                    for (a, &p) in self.acc.iter_mut().zip(line) {
                        *a += w * u16::from(p);
                    }
                }
                for (cell, &a) in self.block.iter_mut().skip(r).step_by(BLOCK).zip(&self.acc) {
                    *cell = (a >> WEIGHT_BITS) as u8;
                }
            }
            let h = &self.horizontal;
            let out = Block {
                dst: &mut *dst,
                stride: dst_stride,
                y0,
                rows,
                width: dw,
                columns: &mut self.columns,
            };
            match h.taps {
                1 => horizontal::<1>(&self.block, out, &h.starts, &h.weights),
                2 => horizontal::<2>(&self.block, out, &h.starts, &h.weights),
                3 => horizontal::<3>(&self.block, out, &h.starts, &h.weights),
                4 => horizontal::<4>(&self.block, out, &h.starts, &h.weights),
                5 => horizontal::<5>(&self.block, out, &h.starts, &h.weights),
                6 => horizontal::<6>(&self.block, out, &h.starts, &h.weights),
                _ => horizontal_any(&self.block, out, h),
            }
            y0 += rows;
        }
    }
}

/// Output rows `y0..y0 + rows` of the plane being written, and the block's results, column
/// after column (`BLOCK` bytes each), before they are written there.
struct Block<'a> {
    dst: &'a mut [u8],
    stride: usize,
    y0: usize,
    rows: usize,
    width: usize,
    columns: &'a mut [u8],
}

impl Block<'_> {
    /// Column `x` of the block's results.
    #[inline(always)]
    fn put(&mut self, x: usize, column: &[u16; BLOCK]) {
        if let Some(c) = self.columns.get_mut(x * BLOCK..(x + 1) * BLOCK) {
            for (o, &v) in c.iter_mut().zip(column) {
                *o = (v >> WEIGHT_BITS) as u8;
            }
        }
    }

    /// Write the results into the plane, row by row.
    #[inline(always)]
    fn write(self) {
        for r in 0..self.rows {
            let at = (self.y0 + r) * self.stride;
            let Some(row) = self.dst.get_mut(at..at + self.width) else {
                continue;
            };
            for (o, c) in row.iter_mut().zip(self.columns.chunks_exact(BLOCK)) {
                if let Some(&v) = c.get(r) {
                    *o = v;
                }
            }
        }
    }
}

/// The horizontal pass over a transposed block for a filter of `T` taps (the loop over them
/// unrolled): for each output column, [`column`].
#[inline(always)]
fn horizontal<const T: usize>(block: &[u8], mut out: Block<'_>, starts: &[usize], weights: &[u16]) {
    for (x, (&start, w)) in starts
        .iter()
        .zip(weights.chunks_exact(T))
        .enumerate()
        .take(out.width)
    {
        if let Ok(w) = <&[u16; T]>::try_from(w) {
            out.put(x, &column(block, start, w));
        }
    }
    out.write();
}

/// The same for any number of taps (more than a 6:1 shrink).
#[inline(always)]
fn horizontal_any(block: &[u8], mut out: Block<'_>, f: &Filter) {
    for x in 0..out.width {
        if let Some((start, weights)) = f.at(x) {
            out.put(x, &column(block, start, weights));
        }
    }
    out.write();
}

/// One output column of a block: one multiply-add per tap of a whole column of the block
/// (`BLOCK` rows at once), from source column `start` on.
#[inline(always)]
fn column(block: &[u8], start: usize, weights: &[u16]) -> [u16; BLOCK] {
    let mut acc = [ROUND; BLOCK];
    for (k, &wk) in weights.iter().enumerate() {
        let at = (start + k) * BLOCK;
        let Some(col) = block
            .get(at..at + BLOCK)
            .and_then(|c| <&[u8; BLOCK]>::try_from(c).ok())
        else {
            continue;
        };
        for (a, &p) in acc.iter_mut().zip(col) {
            *a += wk * u16::from(p);
        }
    }
    acc
}

/// Whether a plane buffer of `len` bytes holds `height` rows of `width` bytes `stride` apart.
fn fits(len: usize, width: usize, height: usize, stride: usize) -> bool {
    stride >= width
        && height
            .checked_sub(1)
            .and_then(|h| h.checked_mul(stride))
            .and_then(|b| b.checked_add(width))
            .is_some_and(|need| need <= len)
}

#[cfg(test)]
mod tests;
