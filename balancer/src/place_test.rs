//! Unit tests of `place`: the placer against a registry fed without QUIC, on tokio's paused
//! clock, so lost-after and reservation TTLs are tested to the millisecond in no time (kept
//! beside it; compiled only for tests).

use std::sync::Arc;

use control::server::NodeLink;
use control::{Report, ToNode};
use tokio::sync::mpsc;

use super::*;

const LOST_AFTER: Duration = Duration::from_secs(5);
const TTL: Duration = Duration::from_secs(10);

pub(crate) fn config() -> BalancerConfig {
    BalancerConfig {
        id: "b".into(),
        lost_after: LOST_AFTER,
        reservation_ttl: TTL,
        reconnect_window: Duration::from_secs(30),
        policy: edge_config::Ranking::LeastLoaded,
        refused_publishes_per_minute: 10,
        handover_socket: "/tmp/none.sock".into(),
        drain_deadline: Duration::from_secs(60),
        listen: edge_config::BalancerListen {
            rtmp: edge_config::DEFAULT_LISTEN_RTMP,
            rtmps: None,
            https: None,
            srt: edge_config::DEFAULT_LISTEN_SRT,
            http: edge_config::DEFAULT_LISTEN_HTTP,
            admin: edge_config::DEFAULT_LISTEN_ADMIN,
            control: edge_config::DEFAULT_LISTEN_CONTROL,
        },
        admin: edge_config::AdminConfig {
            token: String::new(),
        },
        public_tls: None,
        node_https: None,
        tls: edge_config::TlsPaths {
            ca: "ca".into(),
            cert: "c".into(),
            key: "k".into(),
        },
    }
}

/// A ready node with room for two streams of 1000, holding `reservations`.
fn report(id: &str, reservations: Vec<u64>) -> Report {
    Report {
        seq: 1,
        rtmp_addr: "127.0.0.1:1935".parse().unwrap(),
        srt_addr: "127.0.0.1:9000".parse().unwrap(),
        http_addr: "127.0.0.1:8080".parse().unwrap(),
        capacity_milli_units: 2000,
        used_milli_units: 1000 * reservations.len() as u32,
        stream_milli_units: 1000,
        reservations,
        ..Report::empty(id)
    }
}

/// A node that grants every reservation and logs the cancels it gets.
fn node(registry: &Arc<Registry>, id: &str) -> (Arc<NodeLink>, mpsc::UnboundedReceiver<ToNode>) {
    node_answering_after(registry, id, Duration::ZERO)
}

/// [`node`], answering each reservation `delay` after it arrives.
fn node_answering_after(
    registry: &Arc<Registry>,
    id: &str,
    delay: Duration,
) -> (Arc<NodeLink>, mpsc::UnboundedReceiver<ToNode>) {
    let (link, mut rx) = registry.attach(id, "127.0.0.1:4000".parse().unwrap());
    link.report(report(id, vec![]), Instant::now()).unwrap();
    let link = Arc::new(link);
    let (log_tx, log) = mpsc::unbounded_channel();
    let answering = Arc::clone(&link);
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if let ToNode::Reserve { id, .. } = m {
                tokio::time::sleep(delay).await;
                answering.answer(id, Ok(()));
            }
            let _ = log_tx.send(m);
        }
    });
    (link, log)
}

fn status(p: &Placer, id: &str) -> (NodeStatus, u32) {
    let n = p.nodes().into_iter().find(|n| n.id == id).unwrap();
    (n.status, n.free_milli_units)
}

#[tokio::test(start_paused = true)]
async fn a_node_is_lost_exactly_lost_after_its_last_report() {
    let registry = Registry::new();
    let placer = Placer::new(&config(), Arc::clone(&registry));
    let (link, _log) = node(&registry, "a");
    assert_eq!(status(&placer, "a"), (NodeStatus::Ready, 2000));

    tokio::time::advance(LOST_AFTER - Duration::from_millis(1)).await;
    assert_eq!(status(&placer, "a").0, NodeStatus::Ready);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(status(&placer, "a").0, NodeStatus::Lost);
    // Lost: no new stream, though its connection is up (admission is not liveness).
    assert!(registry.snapshot()[0].connected);
    assert!(placer.place(Some("s1"), &[], None).await.is_err());
    // A report brings it back.
    link.report(report("a", vec![]), Instant::now()).unwrap();
    assert_eq!(status(&placer, "a").0, NodeStatus::Ready);
    assert!(placer.place(Some("s1"), &[], None).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_granted_reservation_counts_until_reported_or_its_ttl_ends() {
    let registry = Registry::new();
    let placer = Placer::new(&config(), Arc::clone(&registry));
    let (link, mut log) = node(&registry, "a");

    let first = placer.place(Some("s1"), &[], None).await.unwrap();
    let second = placer.place(Some("s2"), &[], None).await.unwrap();
    assert!(matches!(
        log.recv().await,
        Some(ToNode::Reserve { ttl_ms: 10_000, .. })
    ));
    assert_ne!(first.reservation, second.reservation);
    // Reports that do not include them yet: both still count, so the node is full and a
    // third stream is refused without asking it.
    link.report(report("a", vec![]), Instant::now()).unwrap();
    assert_eq!(status(&placer, "a"), (NodeStatus::Full, 0));
    assert!(placer.place(Some("s3"), &[], None).await.is_err());

    // The node reports the first: it counts as used there, not twice.
    tokio::time::advance(Duration::from_secs(4)).await;
    link.report(report("a", vec![first.reservation]), Instant::now())
        .unwrap();
    assert_eq!(status(&placer, "a"), (NodeStatus::Full, 0));
    // The second never shows up: it stops counting when its TTL ends, to the millisecond.
    tokio::time::advance(TTL - Duration::from_secs(4) - Duration::from_millis(1)).await;
    link.report(report("a", vec![first.reservation]), Instant::now())
        .unwrap();
    assert_eq!(status(&placer, "a"), (NodeStatus::Full, 0));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(status(&placer, "a"), (NodeStatus::Ready, 1000));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_placement_is_given_back_at_once() {
    let registry = Registry::new();
    let placer = Placer::new(&config(), Arc::clone(&registry));
    let (_link, mut log) = node(&registry, "a");
    let placed = placer.place(None, &[], None).await.unwrap();
    assert_eq!(status(&placer, "a"), (NodeStatus::Ready, 1000));
    placer.cancel(&placed).await;
    assert_eq!(status(&placer, "a"), (NodeStatus::Ready, 2000));
    assert!(matches!(log.recv().await, Some(ToNode::Reserve { .. })));
    assert_eq!(
        log.recv().await,
        Some(ToNode::Cancel {
            id: placed.reservation
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_that_does_not_answer_is_skipped_after_the_reserve_timeout() {
    let registry = Registry::new();
    let placer = Placer::new(&config(), Arc::clone(&registry));
    // "slow" has more room, so it is asked first, and never answers.
    let (slow, _slow_rx) = registry.attach("slow", "127.0.0.1:4001".parse().unwrap());
    let mut big = report("slow", vec![]);
    big.capacity_milli_units = 8000;
    slow.report(big, Instant::now()).unwrap();
    let (_fast, _log) = node(&registry, "fast");
    let t0 = Instant::now();
    let placed = placer.place(None, &[], None).await.unwrap();
    assert_eq!(placed.node_id, "fast");
    assert_eq!(Instant::now() - t0, RESERVE_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_successor_routes_viewers_from_the_imported_reports_at_once() {
    let registry = Registry::new();
    let placer = Placer::new(&config(), Arc::clone(&registry));
    let (link, _log) = node(&registry, "a");
    let serving = Report {
        served: vec!["s01".into()],
        ..report("a", vec![])
    };
    link.report(serving, Instant::now()).unwrap();
    let snapshot = registry.snapshot();
    placer.learn(&snapshot, Instant::now());
    assert_eq!(placer.nodes_serving("s01").len(), 1);
    // A hand-over: the successor imports, and its nodes have not reconnected yet.
    let state = placer.export();
    let next = Placer::new(&config(), Registry::new());
    next.import(state);
    assert_eq!(
        next.nodes_serving("s01"),
        vec![Origin {
            http: "127.0.0.1:8080".parse().unwrap(),
            https: None,
            serves: true
        }],
        "a viewer's request right after the takeover would get 404"
    );
}

/// What `place_with` prepares for a candidate: its node and reservation, `took` later.
fn preparing(
    seen: &Arc<std::sync::Mutex<Vec<(String, u64)>>>,
    took: Duration,
) -> impl Fn(&Placed) -> std::pin::Pin<Box<dyn std::future::Future<Output = (String, u64)>>> {
    let seen = Arc::clone(seen);
    move |c: &Placed| {
        let got = (c.node_id.clone(), c.reservation);
        seen.lock().unwrap().push(got.clone());
        Box::pin(async move {
            tokio::time::sleep(took).await;
            got
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_is_prepared_while_its_reservation_is_in_flight() {
    let registry = Registry::new();
    let placer = Placer::new(&config(), Arc::clone(&registry));
    // The node takes as long to answer as the preparation takes: together, not one after
    // the other.
    let (_link, _log) = node_answering_after(&registry, "a", Duration::from_millis(300));
    let seen = Arc::default();
    let t0 = Instant::now();
    let (placed, prepared) = placer
        .place_with(
            None,
            &[],
            None,
            preparing(&seen, Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert_eq!(Instant::now() - t0, Duration::from_millis(300));
    // Prepared for the node and the reservation it granted.
    assert_eq!(prepared, (placed.node_id.clone(), placed.reservation));
    assert_eq!(*seen.lock().unwrap(), vec![prepared]);
}

#[tokio::test(start_paused = true)]
async fn a_node_that_fails_the_reservation_is_not_waited_for_by_its_preparation() {
    let registry = Registry::new();
    let placer = Placer::new(&config(), Arc::clone(&registry));
    // "slow" has more room, so it is asked (and prepared) first, and never answers.
    let (slow, _slow_rx) = registry.attach("slow", "127.0.0.1:4001".parse().unwrap());
    let mut big = report("slow", vec![]);
    big.capacity_milli_units = 8000;
    slow.report(big, Instant::now()).unwrap();
    let (_fast, _log) = node(&registry, "fast");
    // Preparing (a connect that hangs) takes longer than the reserve timeout.
    let took = RESERVE_TIMEOUT + Duration::from_secs(2);
    let seen = Arc::default();
    let t0 = Instant::now();
    let (placed, prepared) = placer
        .place_with(None, &[], None, preparing(&seen, took))
        .await
        .unwrap();
    assert_eq!(placed.node_id, "fast");
    assert_eq!(prepared, ("fast".to_string(), placed.reservation));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, "slow");
    // The reserve timeout on "slow", then the preparation of "fast" (whose reservation was
    // granted at once): "slow"'s own preparation was dropped when its reservation failed, not
    // waited for (that would be `took + took`).
    assert_eq!(Instant::now() - t0, RESERVE_TIMEOUT + took);
}
