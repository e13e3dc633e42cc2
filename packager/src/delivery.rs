//! How long frames take from their arrival at the node to a player that was waiting for them:
//! for every part answered to a request that arrived before the part existed (a preload-hint
//! request, or a part request that blocked), the time from each of its frames' arrival to the
//! moment the response body was handed to the connection to be written, kept per rendition as
//! raw samples (the last [`MAX_SAMPLES`]) rather than histogram buckets, so that the p99 the
//! LL-HLS budget is about (one part target plus a little) is exact.
//!
//! Entry points: [`Deliveries::record`] (from the HTTP layer, once the body is written) and
//! [`Deliveries::summary`] (admin API, benchmarks).
//!
//! What it includes: the wait for the part to fill (up to a part target for its first frame),
//! the wait for the frame after the part (its duration is the next frame's timestamp minus its
//! own), the audio's hold for the video's boundaries, and for a transcoded rung the decode,
//! scale and encode. What it leaves out: the network after the node's socket buffer.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Raw samples kept per rendition: about a minute of 30 fps video for one waiting client, or
/// ten seconds for six; enough for a p99 of a benchmark run, a few KiB per rendition.
pub const MAX_SAMPLES: usize = 2048;

/// Waiting clients measured per part: with thousands of viewers holding the same preload
/// hint, the first few say how fast a part reaches them (the rest are written by the same
/// wake-up, microseconds apart), and the cost of measuring stays bounded.
pub const MAX_WAITERS_PER_PART: u32 = 4;

/// Delivery figures of one rendition, milliseconds, from the raw samples kept.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeliverySummary {
    /// Rendition name.
    pub rendition: String,
    /// Frames measured (at most [`MAX_SAMPLES`], the most recent).
    pub frames: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The samples of one stream, by rendition.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    by_rendition: HashMap<String, Ring>,
}

/// One rendition's samples, and how many waiters of its newest part were measured.
#[derive(Debug, Default)]
struct Ring {
    samples: VecDeque<Duration>,
    part: Option<(u64, u32)>,
    waiters: u32,
}

impl Deliveries {
    /// A client that waited for part `part` (MSN, index) of `rendition` is about to be
    /// answered: whether it is one of the first [`MAX_WAITERS_PER_PART`] of that part, to be
    /// measured ([`Deliveries::record`]). Asked before anything is copied for the measurement,
    /// so that the other waiters cost nothing.
    pub fn claim(&mut self, rendition: &str, part: (u64, u32)) -> bool {
        let Some(r) = self.ring(rendition) else {
            return false;
        };
        if r.part == Some(part) {
            if r.waiters >= MAX_WAITERS_PER_PART {
                return false;
            }
            r.waiters += 1;
        } else {
            r.part = Some(part);
            r.waiters = 1;
        }
        true
    }

    /// A part of `rendition` holding frames that arrived at `arrivals` was written at `sent` to
    /// a client that waited for it (and was claimed).
    pub fn record(&mut self, rendition: &str, sent: Instant, arrivals: &[Instant]) {
        let Some(r) = self.ring(rendition) else {
            return;
        };
        let ring = &mut r.samples;
        for a in arrivals {
            if ring.len() == MAX_SAMPLES {
                ring.pop_front();
            }
            ring.push_back(sent.saturating_duration_since(*a));
        }
    }

    /// The ring of `rendition`, made on first use (no allocation once it exists).
    fn ring(&mut self, rendition: &str) -> Option<&mut Ring> {
        if !self.by_rendition.contains_key(rendition) {
            self.by_rendition
                .insert(rendition.to_string(), Ring::default());
        }
        self.by_rendition.get_mut(rendition)
    }

    /// Percentiles of each rendition measured, sorted by rendition name.
    pub fn summary(&self) -> Vec<DeliverySummary> {
        let mut out: Vec<DeliverySummary> = self
            .by_rendition
            .iter()
            .filter(|(_, r)| !r.samples.is_empty())
            .map(|(name, r)| {
                let mut ms: Vec<f64> = r.samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
                ms.sort_by(f64::total_cmp);
                DeliverySummary {
                    rendition: name.clone(),
                    frames: ms.len(),
                    p50_ms: percentile(&ms, 0.50),
                    p90_ms: percentile(&ms, 0.90),
                    p99_ms: percentile(&ms, 0.99),
                    max_ms: ms.last().copied().unwrap_or(0.0),
                }
            })
            .collect();
        out.sort_by(|a, b| a.rendition.cmp(&b.rendition));
        out
    }
}

/// The `q` quantile of sorted values (nearest rank), 0 for none.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
#[path = "delivery_test.rs"]
mod tests;
