//! Prometheus metrics of the ingest node, in the default registry (served on the admin
//! listener). Names follow `edge_<component>_<noun>_<unit>`; labels are low-cardinality
//! (protocol, result, reason): never a stream key, never a playback ID.

use std::sync::LazyLock;

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

pub static CONNECTIONS_TOTAL: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec(
        "edge_ingest_connections_total",
        "Publisher connections by protocol and result",
        &["protocol", "result"],
    )
});

pub static STREAMS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    server::metrics::gauge_vec(
        "edge_ingest_streams",
        "Streams being published, by protocol",
        &["protocol"],
    )
});

pub static STREAMS_BY_HEALTH: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    server::metrics::gauge_vec(
        "edge_ingest_streams_by_health",
        "Streams being published, by health (healthy, degraded, unhealthy, starving; see ingest/src/health.rs), refreshed every housekeeping interval",
        &["health"],
    )
});

pub static STREAMS_BY_PACKAGING: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    server::metrics::gauge_vec(
        "edge_ingest_streams_by_packaging",
        "Streams being packaged, by the way they reach the packager: direct (RTMP H.264 and AAC with nothing to encode, without GStreamer; ingest/src/direct.rs) or gstreamer",
        &["packaging"],
    )
});

pub static EVENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec(
        "edge_events_total",
        "Events to the events.url webhook by result (delivered, refused, failed, dropped, retried)",
        &["result"],
    )
});

pub static STREAM_ISSUES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    server::metrics::gauge_vec(
        "edge_ingest_stream_issues",
        "Streams with a configuration issue the broadcaster can fix, by issue type (keyframe_interval, frozen_video, silent_audio, b_frames; see ingest/src/health.rs)",
        &["issue"],
    )
});

pub static BYTES_RECEIVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec(
        "edge_ingest_received_bytes_total",
        "Media bytes received from publishers",
        &["protocol"],
    )
});

pub static CAPACITY: LazyLock<IntGauge> = LazyLock::new(|| {
    server::metrics::gauge(
        "edge_ingest_capacity_milliunits",
        "Transcode capacity of this node",
    )
});

pub static USED: LazyLock<IntGauge> = LazyLock::new(|| {
    server::metrics::gauge(
        "edge_ingest_used_milliunits",
        "Transcode units charged to running streams",
    )
});

pub static OVERLOADED: LazyLock<IntGauge> = LazyLock::new(|| {
    server::metrics::gauge(
        "edge_ingest_overloaded",
        "1 while a pipeline lags behind real time",
    )
});

pub static RESERVATIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec(
        "edge_ingest_reservations_total",
        "Balancer reservations by result: granted, refused_key, auth_unavailable, refused_full; \
         granted_then_refused_key counts capacity held for a key refused when its stream \
         arrived (0 when balancers send credentials with each reservation)",
        &["result"],
    )
});

pub static PIPELINE_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    server::metrics::counter(
        "edge_ingest_pipeline_errors_total",
        "Streams ended by a pipeline error",
    )
});

pub static LAG: LazyLock<Histogram> = LazyLock::new(|| {
    server::metrics::histogram(
        "edge_ingest_encode_lag_seconds",
        "Time from a source frame reaching the node to its encoded rendition frame",
        vec![0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0],
    )
});

pub static SRT_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec(
        "edge_ingest_srt_dropped_packets_total",
        "SRT datagrams dropped by the front (guard, cookie check, session table), by reason",
        &["reason"],
    )
});

/// Results of `edge_ingest_connections_total` both protocols count: accepted, and the
/// admission refusals (`node::AdmitError::label`), and a source above
/// `transcode.max_source_*` ended at its first keyframe.
const RESULTS: [&str; 6] = [
    "accepted",
    "refused_key",
    "auth_unavailable",
    "refused_full",
    "refused_busy",
    REFUSED_SOURCE,
];
/// The result of a publish whose source is larger than the config allows.
pub const REFUSED_SOURCE: &str = "refused_source";
/// Results only one protocol has.
const RTMP_RESULTS: [&str; 4] = [
    "too_many_connections",
    "too_many_from_address",
    "bad_app",
    "play_refused",
];
const SRT_RESULTS: [&str; 4] = [
    "handshake_failed",
    "bad_stream_id",
    "bad_passphrase",
    "error",
];

/// Reasons of `edge_ingest_srt_dropped_packets_total`: the guard's (`wire::srt_guard`) and the
/// session table's (`srt.rs`).
const SRT_DROP_REASONS: [&str; 11] = [
    "too_short",
    "too_long",
    "unsupported_control",
    "bad_handshake",
    "session_queue_full",
    "no_session",
    "too_many_sessions",
    // A conclusion without our SYN cookie (spoofed, or older than two cookie buckets).
    "bad_cookie",
    "not_conclusion",
    "hsv4_conclusion",
    "bad_stream_id",
];

/// Touch every metric so it appears in /metrics from the start (at zero), with every label set
/// that dashboards and alert rules select on (deploy/grafana, deploy/prometheus).
pub fn init() {
    for p in ["rtmp", "srt"] {
        STREAMS.with_label_values(&[p]).set(0);
        BYTES_RECEIVED.with_label_values(&[p]);
        for r in RESULTS {
            CONNECTIONS_TOTAL.with_label_values(&[p, r]);
        }
    }
    for r in RTMP_RESULTS {
        CONNECTIONS_TOTAL.with_label_values(&["rtmp", r]);
    }
    for r in SRT_RESULTS {
        CONNECTIONS_TOTAL.with_label_values(&["srt", r]);
    }
    for r in SRT_DROP_REASONS {
        SRT_DROPPED.with_label_values(&[r]);
    }
    for h in crate::health::Status::ALL {
        STREAMS_BY_HEALTH.with_label_values(&[h.as_str()]).set(0);
    }
    for i in crate::health::ISSUE_KINDS {
        STREAM_ISSUES.with_label_values(&[i]).set(0);
    }
    for r in ["delivered", "refused", "failed", "dropped", "retried"] {
        EVENTS.with_label_values(&[r]).inc_by(0);
    }
    LazyLock::force(&CAPACITY);
    LazyLock::force(&USED);
    LazyLock::force(&OVERLOADED);
    LazyLock::force(&PIPELINE_ERRORS);
    for way in ["direct", "gstreamer"] {
        STREAMS_BY_PACKAGING.with_label_values(&[way]);
    }
    LazyLock::force(&LAG);
    LazyLock::force(&CONNECTIONS_TOTAL);
    LazyLock::force(&SRT_DROPPED);
}

/// The text exposition of every registered metric.
pub use server::metrics::render;
