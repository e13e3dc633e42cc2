//! Prometheus metrics of the balancer (default registry, served on its admin listener).
//! Labels are low-cardinality: protocol, state, result, direction, and node ID (a fleet has
//! tens of nodes, not thousands). Never a stream key.

use std::sync::LazyLock;

use prometheus::{GaugeVec, Histogram, IntCounterVec, IntGaugeVec};

pub static CONNECTIONS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    server::metrics::gauge_vec(
        "edge_balancer_connections",
        "Encoder connections by protocol and state (placing, relaying)",
        &["protocol", "state"],
    )
});

pub static CONNECTIONS_TOTAL: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec(
        "edge_balancer_connections_total",
        "Encoder connections by protocol and how they ended up (relayed, refused, failed)",
        &["protocol", "result"],
    )
});

pub static PLACEMENTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec("edge_balancer_placements_total",
        "Placement attempts by result (accepted, refused_by_node, node_unreachable, no_capacity, blocked)",
        &["result"])
});

pub static RELAYED_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec(
        "edge_balancer_relayed_bytes_total",
        "Bytes relayed, by protocol and direction (to_node, to_encoder)",
        &["protocol", "direction"],
    )
});

pub static HANDOVERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec(
        "edge_balancer_handovers_total",
        "Hand-overs between balancer processes, by result: handed_over (this process gave \
         everything to a successor), taken_over (this process took over), failed (a successor \
         failed before the commit point; everything resumed here), refused (incompatible \
         versions)",
        &["result"],
    )
});

pub static HANDOVER_CONNECTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    server::metrics::counter_vec(
        "edge_balancer_handover_connections_total",
        "Live connections handed to a successor, by protocol",
        &["protocol"],
    )
});

pub static HANDOVER_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    server::metrics::histogram(
        "edge_balancer_handover_seconds",
        "From a successor's hello to the commit point",
        vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
    )
});

/// The relayed-bytes counter of one protocol and direction: relays fetch it once and count
/// on it per read, instead of looking the labels up per read.
pub fn relayed(protocol: &str, direction: &str) -> prometheus::IntCounter {
    RELAYED_BYTES.with_label_values(&[protocol, direction])
}

pub static NODE_FREE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    server::metrics::gauge_vec("edge_balancer_node_free_milliunits",
        "Free transcode units per node as this balancer counts them (reports minus pending placements)",
        &["node"])
});

pub static NODE_STATE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    server::metrics::gauge_vec(
        "edge_balancer_node_state",
        "1 for the state each node is in (ready, full, draining, cordoned, lost)",
        &["node", "state"],
    )
});

pub static REPORT_AGE: LazyLock<GaugeVec> = LazyLock::new(|| {
    server::metrics::float_gauge_vec(
        "edge_balancer_report_age_seconds",
        "Age of the last report from each node",
        &["node"],
    )
});

/// Make the metrics appear from the start.
pub fn init() {
    for p in ["rtmp", "srt"] {
        for s in ["placing", "relaying"] {
            CONNECTIONS.with_label_values(&[p, s]).set(0);
        }
        for d in ["to_node", "to_encoder"] {
            RELAYED_BYTES.with_label_values(&[p, d]);
        }
    }
    // Every result the dashboards and alert rules select on exists from the start, at zero.
    for (p, results) in [
        ("rtmp", &["relayed", "refused", "too_many_connections"][..]),
        (
            "srt",
            &["relayed", "refused", "refused_by_node", "too_many_sessions"][..],
        ),
    ] {
        for r in results {
            CONNECTIONS_TOTAL.with_label_values(&[p, r]);
        }
    }
    for r in [
        "accepted",
        "refused_by_node",
        "node_unreachable",
        "no_capacity",
        "blocked",
    ] {
        PLACEMENTS.with_label_values(&[r]);
    }
    for r in ["handed_over", "taken_over", "failed", "refused"] {
        HANDOVERS.with_label_values(&[r]);
    }
    for p in ["rtmp", "srt"] {
        HANDOVER_CONNECTIONS.with_label_values(&[p]);
    }
    LazyLock::force(&HANDOVER_SECONDS);
    LazyLock::force(&NODE_FREE);
    LazyLock::force(&NODE_STATE);
    LazyLock::force(&REPORT_AGE);
}

/// Text exposition of every registered metric.
pub fn render() -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&prometheus::gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
