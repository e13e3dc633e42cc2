//! Prometheus metrics of the packager, registered in the default registry on first use.
//!
//! Entry points: [`part_published`], [`part_latency`], [`http_request`], [`blocking_reload`],
//! [`set_streams`], [`timestamp_jump`], [`forced_cut`], [`sample_dropped`], [`audio_filled`].
//! Labels are low-cardinality only (rendition kind, request kind, status code): never stream
//! keys or playback IDs. Built and registered by `server::metrics` (a duplicate name is logged
//! and the metric still records).

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge};

/// Histogram buckets of the part latency, seconds: from one frame-ish to "badly late".
const LATENCY_BUCKETS: &[f64] = &[0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0];

static PARTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec(
        "edge_packager_parts_total",
        "LL-HLS parts published, by rendition kind",
        &["kind"],
    )
});

static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    server::metrics::histogram_vec(
        "edge_packager_part_latency_seconds",
        "Time from a frame's arrival at the node to the publication of the part holding it",
        &["kind"],
        LATENCY_BUCKETS.to_vec(),
    )
});

static HTTP: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec(
        "edge_packager_http_requests_total",
        "HTTP requests served by the packager, by kind and status code",
        &["kind", "code"],
    )
});

static STREAMS: LazyLock<IntGauge> = LazyLock::new(|| {
    server::metrics::gauge(
        "edge_packager_streams",
        "Streams currently served by the packager",
    )
});

static JUMPS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec(
        "edge_packager_timestamp_jumps_total",
        "Timestamp jumps (DTS backwards, or forward past a gap) turned into discontinuities",
        &["kind", "direction"],
    )
});

static FORCED_CUTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec(
        "edge_packager_forced_cuts_total",
        "Segments started without a keyframe (the source's keyframe interval is too long)",
        &["kind"],
    )
});

static DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec(
        "edge_packager_samples_dropped_total",
        "Samples dropped for repeating the previous sample's decode time",
        &["kind"],
    )
});

static FILLED: LazyLock<IntCounter> = LazyLock::new(|| {
    server::metrics::counter(
        "edge_packager_audio_frames_filled_total",
        "Silent audio frames inserted where source audio frames went missing (lost upstream)",
    )
});

/// Count `n` silent audio frames inserted into holes.
pub(crate) fn audio_filled(n: u32) {
    FILLED.inc_by(u64::from(n));
}

/// Count one timestamp jump of a rendition kind, "backward" or "forward".
pub(crate) fn timestamp_jump(kind: &str, direction: &str) {
    JUMPS.with_label_values(&[kind, direction]).inc();
}

/// Count `n` segments cut at a non-keyframe.
pub(crate) fn forced_cut(kind: &str, n: u32) {
    FORCED_CUTS.with_label_values(&[kind]).inc_by(u64::from(n));
}

/// Count `n` dropped samples.
pub(crate) fn sample_dropped(kind: &str, n: u32) {
    DROPPED.with_label_values(&[kind]).inc_by(u64::from(n));
}

/// Count `n` published parts of a rendition kind ("video" / "audio").
pub(crate) fn part_published(kind: &str, n: u32) {
    PARTS.with_label_values(&[kind]).inc_by(u64::from(n));
}

/// Observe publish-minus-arrival latencies.
pub(crate) fn part_latency(kind: &str, latencies: &[Duration]) {
    let h = LATENCY.with_label_values(&[kind]);
    for l in latencies {
        h.observe(l.as_secs_f64());
    }
}

/// Count one HTTP request.
pub(crate) fn http_request(kind: &str, code: u16) {
    HTTP.with_label_values(&[kind, &code.to_string()]).inc();
}

/// Set the number of streams served.
pub(crate) fn set_streams(n: usize) {
    STREAMS.set(i64::try_from(n).unwrap_or(i64::MAX));
}

/// Buckets of a blocking playlist reload's wait, seconds: an answer is due within about one part
/// target (0.2-0.33 s) of the request; the packager gives up after a few target durations.
const BLOCKING_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 3.0, 6.0];

static BLOCKING: LazyLock<Histogram> = LazyLock::new(|| {
    server::metrics::histogram(
        "edge_packager_blocking_reload_seconds",
        "How long blocking playlist reloads (_HLS_msn) waited before their answer",
        BLOCKING_BUCKETS.to_vec(),
    )
});

/// Observe how long one blocking playlist reload waited.
pub(crate) fn blocking_reload(waited: Duration) {
    BLOCKING.observe(waited.as_secs_f64());
}
