use super::*;

fn node(id: &str, status: NodeStatus, capacity: u32, free: u32, streams: usize) -> NodeInfo {
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], 1).into();
    NodeInfo {
        id: id.into(),
        status,
        connected: true,
        report_age_ms: 0,
        capacity_milli_units: capacity,
        used_milli_units: capacity - free,
        free_milli_units: free,
        stream_milli_units: 1000,
        cpu: 0.0,
        streams,
        rtmp_addr: addr,
        srt_addr: addr,
        http_addr: addr,
        served: Vec::new(),
    }
}

#[test]
fn totals_count_only_nodes_that_take_streams() {
    let nodes = [
        node("a", NodeStatus::Ready, 8000, 3000, 2),
        node("b", NodeStatus::Full, 4000, 500, 3),
        node("c", NodeStatus::Draining, 8000, 8000, 0),
        node("d", NodeStatus::Lost, 8000, 6000, 1),
    ];
    // Capacity and used: ready + full; free: ready only (a full node's crumbs fit no stream).
    assert_eq!(totals(&nodes), (12_000, 8_500, 3_000));
    assert_eq!(totals(&[]), (0, 0, 0));
    // The charge of a new stream: the largest named by a node that takes streams.
    let mut costly = node("e", NodeStatus::Draining, 8000, 8000, 0);
    costly.stream_milli_units = 5000;
    let mut full = node("f", NodeStatus::Full, 8000, 0, 4);
    full.stream_milli_units = 2500;
    assert_eq!(stream_charge(&[nodes[0].clone(), costly, full]), 2500);
    assert_eq!(stream_charge(&nodes[2..]), 0);
}

#[test]
fn record_sets_cluster_node_and_state_gauges() {
    init();
    record(&[
        node("cm-a", NodeStatus::Ready, 8000, 3000, 2),
        node("cm-b", NodeStatus::Cordoned, 4000, 4000, 0),
    ]);
    assert_eq!(CLUSTER_CAPACITY.get(), 8000);
    assert_eq!(CLUSTER_USED.get(), 5000);
    assert_eq!(CLUSTER_FREE.get(), 3000);
    assert_eq!(CLUSTER_STREAM.get(), 1000);
    assert_eq!(NODES.with_label_values(&["ready"]).get(), 1);
    assert_eq!(NODES.with_label_values(&["cordoned"]).get(), 1);
    assert_eq!(NODES.with_label_values(&["lost"]).get(), 0);
    assert_eq!(NODE_USED.with_label_values(&["cm-a"]).get(), 5000);
    assert_eq!(NODE_CAPACITY.with_label_values(&["cm-b"]).get(), 4000);
    assert_eq!(NODE_STREAMS.with_label_values(&["cm-a"]).get(), 2);
}
