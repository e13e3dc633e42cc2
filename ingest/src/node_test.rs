//! Unit tests of the node's reservation decision (`Node::decide_reservation`): a balancer's
//! placement with the publisher's credentials, decided without sockets or a pipeline.

use super::*;

/// A node with the dev config (key `dev-stream-key`) and room for `capacity` milli-units.
fn node(capacity: u32) -> Arc<Node> {
    let cfg = edge_config::load_str(edge_config::DEV_CONFIG, "dev").expect("dev config");
    Node::new(
        cfg,
        capacity,
        packager::Origin::new(packager::PackagerConfig::default()),
    )
}

fn reservation(id: u64, milli_units: u32, key: Option<&str>) -> control::Reservation {
    control::Reservation {
        id,
        milli_units,
        stream_ref: key.map(control::stream_ref),
        ttl: Duration::from_secs(10),
        continuation: None,
        credentials: key.map(|k| control::Credentials {
            key: k.to_string(),
            client_addr: "192.0.2.10:50000".parse().unwrap(),
            protocol: "rtmp".into(),
        }),
    }
}

#[tokio::test]
async fn a_wrong_key_is_refused_as_credentials_and_holds_nothing() {
    let n = node(4000);
    let r = n
        .decide_reservation(reservation(1, 1000, Some("not-a-key")))
        .await;
    let e = r.expect_err("a wrong key must be refused");
    assert_eq!(e.kind, control::RefusalKind::Credentials, "{e:?}");
    assert_eq!(n.used(), 0, "a refused key held capacity");
    assert!(!n.capacity.has_reservation(1));
}

#[tokio::test]
async fn a_right_key_holds_the_units_once_even_when_the_request_is_retried() {
    let n = node(4000);
    n.decide_reservation(reservation(2, 1000, Some("dev-stream-key")))
        .await
        .expect("granted");
    assert_eq!(n.used(), 1000);
    // The balancer retries the same request (its answer was lost): still one hold.
    n.decide_reservation(reservation(2, 1000, Some("dev-stream-key")))
        .await
        .expect("granted again");
    assert_eq!(n.used(), 1000);
    n.cancel_from_balancer(2);
    assert_eq!(n.used(), 0, "the cancel released it");
}

#[tokio::test]
async fn a_full_node_refuses_capacity_after_the_key_is_good() {
    let n = node(1000);
    n.decide_reservation(reservation(3, 1000, Some("dev-stream-key")))
        .await
        .expect("the first fits");
    let e = n
        .decide_reservation(reservation(4, 1000, Some("dev-stream-key")))
        .await
        .expect_err("no room for a second");
    assert_eq!(e.kind, control::RefusalKind::Capacity, "{e:?}");
    assert_eq!(n.used(), 1000);
}

#[tokio::test]
async fn a_cancel_that_overtakes_the_decision_leaves_nothing_held() {
    let n = node(4000);
    // The decision is made (its future exists) but not yet run, as while a webhook answers;
    // the balancer gives up and cancels first.
    let pending = n.decide_reservation(reservation(5, 1000, Some("dev-stream-key")));
    n.cancel_from_balancer(5);
    let e = pending.await.expect_err("cancelled before it was decided");
    assert_eq!(e.kind, control::RefusalKind::Capacity, "{e:?}");
    assert_eq!(n.used(), 0, "a cancelled reservation held capacity");
    // The remembered cancel is spent: a new placement with the same ID (a balancer restart
    // reusing it) is decided normally.
    n.decide_reservation(reservation(5, 1000, Some("dev-stream-key")))
        .await
        .expect("decided afresh");
    assert_eq!(n.used(), 1000);
}

#[tokio::test]
async fn without_credentials_only_capacity_is_decided() {
    let n = node(1500);
    n.decide_reservation(reservation(6, 1000, None))
        .await
        .expect("no key to check: capacity only");
    assert_eq!(n.used(), 1000);
}
