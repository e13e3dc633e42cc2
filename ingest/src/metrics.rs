//! Prometheus metrics of the ingest node, in the default registry (served on the admin
//! listener). Names follow `edge_<component>_<noun>_<unit>`; labels are low-cardinality
//! (protocol, result, reason): never a stream key, never a playback ID.

use std::sync::LazyLock;

use prometheus::{
    register_histogram, register_int_counter, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

pub static CONNECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edge_ingest_connections_total",
        "Publisher connections by protocol and result",
        &["protocol", "result"]
    )
    .expect("metric") // infallible: constant valid name, registered once
});

pub static STREAMS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    register_int_gauge_vec!(
        "edge_ingest_streams",
        "Streams being published, by protocol",
        &["protocol"]
    )
    .expect("metric") // infallible: constant valid name, registered once
});

pub static BYTES_RECEIVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edge_ingest_received_bytes_total",
        "Media bytes received from publishers",
        &["protocol"]
    )
    .expect("metric") // infallible: constant valid name, registered once
});

pub static CAPACITY: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "edge_ingest_capacity_milliunits",
        "Transcode capacity of this node"
    )
    .expect("metric") // infallible: constant valid name, registered once
});

pub static USED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "edge_ingest_used_milliunits",
        "Transcode units charged to running streams"
    )
    .expect("metric") // infallible: constant valid name, registered once
});

pub static OVERLOADED: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "edge_ingest_overloaded",
        "1 while a pipeline lags behind real time"
    )
    .expect("metric") // infallible: constant valid name, registered once
});

pub static PIPELINE_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "edge_ingest_pipeline_errors_total",
        "Streams ended by a pipeline error"
    )
    .expect("metric") // infallible: constant valid name, registered once
});

pub static LAG: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "edge_ingest_encode_lag_seconds",
        "Time from a source frame reaching the node to its encoded rendition frame",
        vec![0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]
    )
    .expect("metric") // infallible: constant valid name and buckets, registered once
});

pub static SRT_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "edge_ingest_srt_dropped_packets_total",
        "SRT datagrams dropped by the guard, by reason",
        &["reason"]
    )
    .expect("metric") // infallible: constant valid name, registered once
});

/// Results of `edge_ingest_connections_total` both protocols count: accepted, and the
/// admission refusals (`node::AdmitError::label`).
const RESULTS: [&str; 5] = [
    "accepted",
    "refused_key",
    "auth_unavailable",
    "refused_full",
    "refused_busy",
];
/// Results only one protocol has.
const RTMP_RESULTS: [&str; 2] = ["too_many_connections", "bad_app"];
const SRT_RESULTS: [&str; 4] = [
    "handshake_failed",
    "bad_stream_id",
    "bad_passphrase",
    "error",
];

/// Reasons of `edge_ingest_srt_dropped_packets_total`: the guard's (`wire::srt_guard`) and the
/// session table's (`srt.rs`).
const SRT_DROP_REASONS: [&str; 7] = [
    "too_short",
    "too_long",
    "unsupported_control",
    "bad_handshake",
    "session_queue_full",
    "no_session",
    "too_many_sessions",
];

/// Touch every metric so it appears in /metrics from the start (at zero), with every label set
/// that dashboards and alert rules select on (deploy/grafana, deploy/prometheus).
pub fn init() {
    for p in ["rtmp", "srt"] {
        STREAMS.with_label_values(&[p]).set(0);
        BYTES_RECEIVED.with_label_values(&[p]);
        for r in RESULTS {
            CONNECTIONS.with_label_values(&[p, r]);
        }
    }
    for r in RTMP_RESULTS {
        CONNECTIONS.with_label_values(&["rtmp", r]);
    }
    for r in SRT_RESULTS {
        CONNECTIONS.with_label_values(&["srt", r]);
    }
    for r in SRT_DROP_REASONS {
        SRT_DROPPED.with_label_values(&[r]);
    }
    LazyLock::force(&CAPACITY);
    LazyLock::force(&USED);
    LazyLock::force(&OVERLOADED);
    LazyLock::force(&PIPELINE_ERRORS);
    LazyLock::force(&LAG);
    LazyLock::force(&CONNECTIONS);
    LazyLock::force(&SRT_DROPPED);
}

/// The text exposition of every registered metric.
pub fn render() -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&prometheus::gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
