//! Control plane over real QUIC on 127.0.0.1: reports, reservations, mutual TLS identity,
//! pause, reconnects.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control::certs::{issue, new_ca, Pem, Role};
use control::client::{spawn_client, ClientConfig, ClientHandle, NodeControl};
use control::server::{spawn_server, NodeSnapshot, Registry, ReserveError, ServerConfig};
use control::Reservation;

/// A reservation request as the tests write it.
fn res(id: u64, milli_units: u32, stream_ref: Option<String>, ttl: Duration) -> Reservation {
    Reservation {
        id,
        milli_units,
        stream_ref,
        ttl,
        continuation: None,
        credentials: None,
    }
}
use control::{NodeState, Report};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

struct Cluster {
    ca: Pem,
    balancer: Pem,
}

impl Cluster {
    fn new() -> Self {
        let ca = new_ca("test").unwrap();
        let balancer = issue(&ca, &Role::Balancer("b1".into()), 30).unwrap();
        Self { ca, balancer }
    }
    fn node_cert(&self, id: &str) -> Pem {
        issue(&self.ca, &Role::Node(id.into()), 30).unwrap()
    }
    fn server_config(&self, listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            listen,
            ca_pem: self.ca.cert_pem.clone(),
            cert_pem: self.balancer.cert_pem.clone(),
            key_pem: self.balancer.key_pem.clone(),
        }
    }
    fn client_config(
        &self,
        cert: &Pem,
        balancers: Vec<SocketAddr>,
        interval: Duration,
    ) -> ClientConfig {
        ClientConfig {
            balancers,
            ca_pem: self.ca.cert_pem.clone(),
            cert_pem: cert.cert_pem.clone(),
            key_pem: cert.key_pem.clone(),
            report_interval: interval,
        }
    }
}

#[derive(Default)]
struct NodeLog {
    reserves: Vec<(u64, u32, Option<String>, Duration)>,
    cancels: Vec<u64>,
    held: Vec<u64>,
}

/// A node whose reports claim `report_id` and which refuses reservations of more than 1000 mu.
struct TestNode {
    report_id: String,
    log: Mutex<NodeLog>,
}

impl TestNode {
    fn new(report_id: &str) -> Arc<Self> {
        Arc::new(Self {
            report_id: report_id.into(),
            log: Mutex::new(NodeLog::default()),
        })
    }
}

impl NodeControl for TestNode {
    fn report(&self) -> Report {
        let log = self.log.lock().unwrap();
        Report {
            node_id: self.report_id.clone(),
            seq: 0,
            rtmp_addr: "127.0.0.1:1935".parse().unwrap(),
            srt_addr: "127.0.0.1:9000".parse().unwrap(),
            http_addr: "127.0.0.1:8080".parse().unwrap(),
            https_addr: None,
            state: NodeState::Ready,
            overloaded: false,
            capacity_milli_units: 4000,
            used_milli_units: 1000 * log.held.len() as u32,
            stream_milli_units: 1000,
            cpu: 0.5,
            streams: vec![],
            reservations: log.held.clone(),
            served: vec![],
            continuations: Default::default(),
            operations: false,
            blocked: Default::default(),
        }
    }
    fn reserve(&self, r: Reservation) -> control::client::ReserveFuture {
        control::client::decided(self.decide(r))
    }
    fn cancel(&self, id: u64) {
        let mut log = self.log.lock().unwrap();
        log.cancels.push(id);
        log.held.retain(|h| *h != id);
    }
}

impl TestNode {
    fn decide(&self, r: Reservation) -> Result<(), control::Refused> {
        let Reservation {
            id,
            milli_units,
            stream_ref,
            ttl,
            ..
        } = r;
        let mut log = self.log.lock().unwrap();
        log.reserves.push((id, milli_units, stream_ref, ttl));
        if milli_units > 1000 {
            return Err(control::Refused::capacity(format!(
                "no room for {milli_units}"
            )));
        }
        log.held.push(id);
        Ok(())
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn node(registry: &Registry, id: &str) -> Option<NodeSnapshot> {
    registry
        .snapshot()
        .into_iter()
        .find(|s| s.report.node_id == id)
}

/// Wait until `pred` holds for the registry, or panic after `limit`.
async fn wait_for(
    registry: &Registry,
    limit: Duration,
    what: &str,
    pred: impl Fn(&Registry) -> bool,
) {
    let mut updates = registry.updates();
    let deadline = Instant::now() + limit;
    loop {
        if pred(registry) {
            return;
        }
        // Also poll, for conditions that do not come with an update.
        let step = tokio::time::sleep(Duration::from_millis(20));
        tokio::select! {
            _ = updates.changed() => {}
            _ = step => {}
            _ = tokio::time::sleep_until(deadline) => panic!("timed out waiting for {what}"),
        }
    }
}

struct Setup {
    cluster: Cluster,
    registry: Arc<Registry>,
    addr: SocketAddr,
    server_stop: CancellationToken,
}

async fn setup() -> Setup {
    init_tracing();
    let cluster = Cluster::new();
    let registry = Registry::new();
    let server_stop = CancellationToken::new();
    let addr = spawn_server(
        cluster.server_config(localhost()),
        registry.clone(),
        server_stop.clone(),
    )
    .await
    .unwrap();
    Setup {
        cluster,
        registry,
        addr,
        server_stop,
    }
}

fn start_node(
    s: &Setup,
    id: &str,
    interval: Duration,
) -> (Arc<TestNode>, ClientHandle, CancellationToken) {
    let node = TestNode::new(id);
    let stop = CancellationToken::new();
    let cert = s.cluster.node_cert(id);
    let handle = spawn_client(
        s.cluster.client_config(&cert, vec![s.addr], interval),
        node.clone(),
        stop.clone(),
    )
    .unwrap();
    (node, handle, stop)
}

#[tokio::test]
async fn report_reaches_registry() {
    let s = setup().await;
    let start = Instant::now();
    let (_node, handle, stop) = start_node(&s, "n1", Duration::from_secs(30));
    wait_for(&s.registry, Duration::from_secs(2), "first report", |r| {
        node(r, "n1").is_some()
    })
    .await;
    assert!(start.elapsed() < Duration::from_secs(2));
    let snap = node(&s.registry, "n1").unwrap();
    assert!(snap.connected);
    assert_eq!(snap.report.capacity_milli_units, 4000);
    assert!(snap.report.seq >= 1);
    assert_eq!(snap.remote.ip(), s.addr.ip());
    let status = handle.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].addr, s.addr);
    assert!(status[0].connected);
    assert!(status[0].reports_sent >= 1);
    assert_eq!(status[0].last_error, None);

    // The node going away shows as disconnected; the snapshot stays.
    stop.cancel();
    wait_for(&s.registry, Duration::from_secs(3), "disconnect", |r| {
        node(r, "n1").is_some_and(|n| !n.connected)
    })
    .await;
    s.registry.forget("n1");
    assert!(node(&s.registry, "n1").is_none());
    s.server_stop.cancel();
}

#[tokio::test]
async fn reserve_ok_refused_and_cancel() {
    let s = setup().await;
    let (node_ctl, _handle, stop) = start_node(&s, "n1", Duration::from_secs(30));
    wait_for(&s.registry, Duration::from_secs(2), "first report", |r| {
        node(r, "n1").is_some()
    })
    .await;
    let timeout = Duration::from_secs(2);

    s.registry
        .reserve(
            "n1",
            res(7, 1000, Some("ref7".into()), Duration::from_millis(3000)),
            timeout,
        )
        .await
        .unwrap();
    {
        let log = node_ctl.log.lock().unwrap();
        assert_eq!(
            log.reserves,
            vec![(
                7,
                1000,
                Some("ref7".to_string()),
                Duration::from_millis(3000)
            )]
        );
    }
    // A successful reserve is reported at once (the interval is 30 s).
    wait_for(
        &s.registry,
        Duration::from_secs(1),
        "report with reservation",
        |r| node(r, "n1").is_some_and(|n| n.report.reservations == vec![7]),
    )
    .await;

    let refused = s
        .registry
        .reserve("n1", res(8, 2500, None, Duration::from_secs(3)), timeout)
        .await;
    assert_eq!(
        refused,
        Err(ReserveError::Refused(control_refused("no room for 2500")))
    );

    // TTLs are capped on the node side.
    s.registry
        .reserve("n1", res(9, 500, None, Duration::from_secs(3600)), timeout)
        .await
        .unwrap();
    assert_eq!(
        node_ctl.log.lock().unwrap().reserves.last().unwrap().3,
        control::client::MAX_RESERVE_TTL
    );

    s.registry.cancel("n1", 7).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while !node_ctl.log.lock().unwrap().cancels.contains(&7) {
        assert!(Instant::now() < deadline, "cancel did not reach the node");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_for(
        &s.registry,
        Duration::from_secs(1),
        "report without reservation 7",
        |r| node(r, "n1").is_some_and(|n| n.report.reservations == vec![9]),
    )
    .await;
    stop.cancel();
    s.server_stop.cancel();
}

#[tokio::test]
async fn reserve_on_unknown_or_disconnected_node_fails_fast() {
    let s = setup().await;
    let long = Duration::from_secs(10);
    let t = Instant::now();
    let r = s
        .registry
        .reserve("ghost", res(1, 100, None, long), long)
        .await;
    assert_eq!(r, Err(ReserveError::NotConnected));
    assert!(t.elapsed() < Duration::from_millis(100));

    let (_node, _handle, stop) = start_node(&s, "n1", Duration::from_secs(30));
    wait_for(&s.registry, Duration::from_secs(2), "first report", |r| {
        node(r, "n1").is_some()
    })
    .await;
    stop.cancel();
    wait_for(&s.registry, Duration::from_secs(3), "disconnect", |r| {
        node(r, "n1").is_some_and(|n| !n.connected)
    })
    .await;
    let t = Instant::now();
    let r = s
        .registry
        .reserve("n1", res(2, 100, None, long), long)
        .await;
    assert_eq!(r, Err(ReserveError::NotConnected));
    assert!(t.elapsed() < Duration::from_millis(100));
    s.server_stop.cancel();
}

#[tokio::test]
async fn node_from_another_ca_is_refused() {
    let s = setup().await;
    let rogue_ca = new_ca("rogue").unwrap();
    let rogue_cert = issue(&rogue_ca, &Role::Node("n1".into()), 30).unwrap();
    let node_ctl = TestNode::new("n1");
    let stop = CancellationToken::new();
    // The rogue node trusts the real CA (so only the server's check can stop it).
    let handle = spawn_client(
        s.cluster
            .client_config(&rogue_cert, vec![s.addr], Duration::from_millis(100)),
        node_ctl,
        stop.clone(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(s.registry.snapshot().is_empty());
    let status = handle.status();
    assert!(!status[0].connected);
    assert!(status[0].last_error.is_some());
    stop.cancel();
    s.server_stop.cancel();
}

#[tokio::test]
async fn balancer_from_another_ca_is_refused() {
    init_tracing();
    let real = Cluster::new();
    let rogue = Cluster::new();
    let registry = Registry::new();
    let server_stop = CancellationToken::new();
    // A balancer with a rogue certificate that would accept any node of the real CA.
    let cfg = ServerConfig {
        ca_pem: real.ca.cert_pem.clone(),
        ..rogue.server_config(localhost())
    };
    let addr = spawn_server(cfg, registry.clone(), server_stop.clone())
        .await
        .unwrap();
    let cert = real.node_cert("n1");
    let stop = CancellationToken::new();
    let handle = spawn_client(
        real.client_config(&cert, vec![addr], Duration::from_millis(100)),
        TestNode::new("n1"),
        stop.clone(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(registry.snapshot().is_empty());
    assert!(!handle.status()[0].connected);
    assert_eq!(handle.status()[0].reports_sent, 0);
    stop.cancel();
    server_stop.cancel();
}

#[tokio::test]
async fn node_cannot_impersonate_another() {
    let s = setup().await;
    // Certificate for "b", reports claiming "a".
    let cert = s.cluster.node_cert("b");
    let stop = CancellationToken::new();
    let _handle = spawn_client(
        s.cluster
            .client_config(&cert, vec![s.addr], Duration::from_millis(100)),
        TestNode::new("a"),
        stop.clone(),
    )
    .unwrap();
    // An honest node next to it still works.
    let (_n, _h, stop2) = start_node(&s, "c", Duration::from_millis(100));
    wait_for(&s.registry, Duration::from_secs(2), "honest node", |r| {
        node(r, "c").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let ids: Vec<String> = s
        .registry
        .snapshot()
        .into_iter()
        .map(|n| n.report.node_id)
        .collect();
    assert_eq!(ids, vec!["c".to_string()]);
    let r = s
        .registry
        .reserve(
            "a",
            res(1, 1, None, Duration::from_secs(1)),
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(r, Err(ReserveError::NotConnected));
    stop.cancel();
    stop2.cancel();
    s.server_stop.cancel();
}

#[tokio::test]
async fn report_now_sends_immediately() {
    let s = setup().await;
    let (_node, handle, stop) = start_node(&s, "n1", Duration::from_secs(60));
    wait_for(&s.registry, Duration::from_secs(2), "first report", |r| {
        node(r, "n1").is_some()
    })
    .await;
    let seq1 = node(&s.registry, "n1").unwrap().report.seq;
    let t = Instant::now();
    handle.report_now();
    wait_for(&s.registry, Duration::from_secs(1), "second report", |r| {
        node(r, "n1").is_some_and(|n| n.report.seq > seq1)
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(1));
    let seq2 = node(&s.registry, "n1").unwrap().report.seq;
    handle.report_now();
    wait_for(&s.registry, Duration::from_secs(1), "third report", |r| {
        node(r, "n1").is_some_and(|n| n.report.seq > seq2)
    })
    .await;
    stop.cancel();
    s.server_stop.cancel();
}

#[tokio::test]
async fn pause_stops_reports_then_they_resume() {
    let s = setup().await;
    let (_node, handle, stop) = start_node(&s, "n1", Duration::from_millis(100));
    wait_for(&s.registry, Duration::from_secs(2), "reports", |r| {
        node(r, "n1").is_some_and(|n| n.report.seq >= 3)
    })
    .await;
    let pause = Duration::from_millis(1500);
    let paused_at = Instant::now();
    handle.pause(pause);
    // Let a report already in flight land.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = node(&s.registry, "n1").unwrap();
    handle.report_now(); // ignored while paused
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = node(&s.registry, "n1").unwrap();
    assert_eq!(
        during.received, before.received,
        "reports arrived during the pause"
    );
    assert_eq!(during.report.seq, before.report.seq);
    assert!(during.connected, "pause must keep the connection");
    // Reservations still work while paused.
    s.registry
        .reserve(
            "n1",
            res(5, 10, None, Duration::from_secs(1)),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    wait_for(
        &s.registry,
        Duration::from_secs(2),
        "reports after the pause",
        |r| node(r, "n1").is_some_and(|n| n.received > before.received),
    )
    .await;
    assert!(paused_at.elapsed() >= pause - Duration::from_millis(50));
    stop.cancel();
    s.server_stop.cancel();
}

#[tokio::test]
async fn reloaded_certificates_are_used_by_the_next_connection() {
    let s = setup().await;
    // A certificate from another CA: the balancer refuses every connection.
    let rogue = issue(&new_ca("rogue").unwrap(), &Role::Node("n1".into()), 30).unwrap();
    let stop = CancellationToken::new();
    let handle = spawn_client(
        s.cluster
            .client_config(&rogue, vec![s.addr], Duration::from_millis(100)),
        TestNode::new("n1"),
        stop.clone(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        node(&s.registry, "n1").is_none(),
        "a rogue certificate got in"
    );
    // Files that do not load are refused; the client keeps what it has.
    assert!(handle.reload_tls("junk", "junk", "junk").is_err());
    // The cluster's certificate: the next attempt (backoff at most 5 s) gets in.
    let good = s.cluster.node_cert("n1");
    handle
        .reload_tls(&s.cluster.ca.cert_pem, &good.cert_pem, &good.key_pem)
        .unwrap();
    wait_for(
        &s.registry,
        Duration::from_secs(10),
        "a report over a connection with the reloaded certificate",
        |r| node(r, "n1").is_some(),
    )
    .await;
    stop.cancel();
    s.server_stop.cancel();
}

#[tokio::test]
async fn client_reconnects_after_server_restart() {
    let s = setup().await;
    let (_node, handle, stop) = start_node(&s, "n1", Duration::from_millis(100));
    wait_for(&s.registry, Duration::from_secs(2), "first report", |r| {
        node(r, "n1").is_some()
    })
    .await;

    s.server_stop.cancel();
    let deadline = Instant::now() + Duration::from_secs(3);
    while handle.status()[0].connected {
        assert!(
            Instant::now() < deadline,
            "client did not notice the server going away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A new balancer process on the same address, with an empty registry.
    let registry = Registry::new();
    let stop2 = CancellationToken::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match spawn_server(
            s.cluster.server_config(s.addr),
            registry.clone(),
            stop2.clone(),
        )
        .await
        {
            Ok(addr) => {
                assert_eq!(addr, s.addr);
                break;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot rebind: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    wait_for(
        &registry,
        Duration::from_secs(8),
        "report after restart",
        |r| node(r, "n1").is_some(),
    )
    .await;
    assert!(handle.status()[0].connected);
    stop.cancel();
    stop2.cancel();
}

#[tokio::test]
async fn bind_error_is_returned() {
    let s = setup().await;
    let r = spawn_server(
        s.cluster.server_config(s.addr),
        Registry::new(),
        CancellationToken::new(),
    )
    .await;
    assert!(
        matches!(r, Err(control::ControlError::Bind { .. })),
        "{r:?}"
    );
    s.server_stop.cancel();
}

fn control_refused(reason: &str) -> control::Refused {
    control::Refused::capacity(reason)
}
