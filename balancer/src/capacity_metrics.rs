//! The balancer's view of the cluster's capacity as metrics: what the autoscaler, the capacity
//! dashboard and the "no free capacity" alerts read. Refreshed from [`crate::place::Placement::nodes`]
//! (every `/metrics` scrape calls it), so the numbers are the ones placement itself uses: reports
//! minus the placements no report includes yet.
//!
//! Entry points: [`init`] at start (every label set exists from the first scrape, at zero) and
//! [`record`] with the node list.
//!
//! Cluster totals count only nodes that take streams or would if they had room (`ready`,
//! `full`): capacity of a draining, cordoned or lost node is not capacity a new stream can use,
//! so `used / capacity` is the utilisation the autoscaler should act on.

use std::sync::LazyLock;

use prometheus::{IntGauge, IntGaugeVec};

use crate::place::NodeInfo;
use crate::placement::NodeStatus;

/// Every node status, as its label value (the admin API's spelling).
pub const STATES: [(&str, NodeStatus); 5] = [
    ("ready", NodeStatus::Ready),
    ("full", NodeStatus::Full),
    ("draining", NodeStatus::Draining),
    ("cordoned", NodeStatus::Cordoned),
    ("lost", NodeStatus::Lost),
];

pub static CLUSTER_CAPACITY: LazyLock<IntGauge> = LazyLock::new(|| {
    server::metrics::gauge(
        "edge_balancer_cluster_capacity_milliunits",
        "Transcode capacity of the nodes that are ready or full, as this balancer sees them",
    )
});

pub static CLUSTER_USED: LazyLock<IntGauge> = LazyLock::new(|| {
    server::metrics::gauge(
        "edge_balancer_cluster_used_milliunits",
        "Transcode units used on the nodes that are ready or full (reports plus pending placements)",
    )
});

pub static CLUSTER_FREE: LazyLock<IntGauge> = LazyLock::new(|| {
    server::metrics::gauge(
        "edge_balancer_cluster_free_milliunits",
        "Transcode units free for new streams on the nodes that are ready",
    )
});

pub static CLUSTER_STREAM: LazyLock<IntGauge> = LazyLock::new(|| {
    server::metrics::gauge(
        "edge_balancer_cluster_stream_milliunits",
        "What one new stream is charged on the nodes that are ready or full (the largest their reports name: decoding the largest allowed source plus the ladder)",
    )
});

pub static NODES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    server::metrics::gauge_vec(
        "edge_balancer_nodes",
        "Nodes this balancer knows, by state (ready, full, draining, cordoned, lost)",
        &["state"],
    )
});

pub static NODE_CAPACITY: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    server::metrics::gauge_vec(
        "edge_balancer_node_capacity_milliunits",
        "Transcode capacity per node, from its latest report",
        &["node"],
    )
});

pub static NODE_USED: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    server::metrics::gauge_vec(
        "edge_balancer_node_used_milliunits",
        "Transcode units used per node (its report plus placements not yet reported)",
        &["node"],
    )
});

pub static NODE_STREAMS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    server::metrics::gauge_vec(
        "edge_balancer_node_streams",
        "Streams each node carries, from its latest report",
        &["node"],
    )
});

/// Make every series appear from the first scrape.
pub fn init() {
    for (s, _) in STATES {
        NODES.with_label_values(&[s]).set(0);
    }
    LazyLock::force(&CLUSTER_CAPACITY);
    LazyLock::force(&CLUSTER_USED);
    LazyLock::force(&CLUSTER_FREE);
    LazyLock::force(&CLUSTER_STREAM);
    LazyLock::force(&NODE_CAPACITY);
    LazyLock::force(&NODE_USED);
    LazyLock::force(&NODE_STREAMS);
}

/// Totals of one node list, in milli-units: (capacity, used, free) as documented above.
pub fn totals(nodes: &[NodeInfo]) -> (u64, u64, u64) {
    let mut t = (0u64, 0u64, 0u64);
    for n in nodes {
        if matches!(n.status, NodeStatus::Ready | NodeStatus::Full) {
            t.0 += u64::from(n.capacity_milli_units);
            t.1 += u64::from(n.capacity_milli_units.saturating_sub(n.free_milli_units));
        }
        if n.status == NodeStatus::Ready {
            t.2 += u64::from(n.free_milli_units);
        }
    }
    t
}

/// What one new stream is charged on the nodes that take streams (0 with none): the alert on
/// free capacity compares with this rather than with a number written for one ladder.
pub fn stream_charge(nodes: &[NodeInfo]) -> u32 {
    nodes
        .iter()
        .filter(|n| matches!(n.status, NodeStatus::Ready | NodeStatus::Full))
        .map(|n| n.stream_milli_units)
        .max()
        .unwrap_or(0)
}

/// Set every capacity gauge from the current node list.
pub fn record(nodes: &[NodeInfo]) {
    let (capacity, used, free) = totals(nodes);
    let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    CLUSTER_CAPACITY.set(g(capacity));
    CLUSTER_USED.set(g(used));
    CLUSTER_FREE.set(g(free));
    CLUSTER_STREAM.set(i64::from(stream_charge(nodes)));
    for (label, status) in STATES {
        let n = nodes.iter().filter(|n| n.status == status).count();
        NODES.with_label_values(&[label]).set(g(n as u64));
    }
    for n in nodes {
        let id = [n.id.as_str()];
        NODE_CAPACITY
            .with_label_values(&id)
            .set(i64::from(n.capacity_milli_units));
        NODE_USED.with_label_values(&id).set(i64::from(
            n.capacity_milli_units.saturating_sub(n.free_milli_units),
        ));
        NODE_STREAMS.with_label_values(&id).set(g(n.streams as u64));
    }
}

#[cfg(test)]
#[path = "capacity_metrics_test.rs"]
mod tests;
