//! Server behaviour against a hand-driven QUIC client (what a broken or hostile node does),
//! and the registry driven without QUIC on paused time (kept beside `server.rs`).

use super::*;
use crate::certs::{issue, new_ca, Pem, Role};
use crate::proto::{FrameDecoder, ToBalancer, MAX_FRAME};
use crate::tls::client_config;

fn res(id: u64, milli_units: u32, ttl: Duration) -> Reservation {
    Reservation {
        id,
        milli_units,
        stream_ref: None,
        ttl,
        continuation: None,
        credentials: None,
    }
}

struct Raw {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _ep: quinn::Endpoint,
}

async fn raw_connect(ca: &Pem, node: &Pem, addr: SocketAddr) -> Raw {
    let cfg = client_config(&ca.cert_pem, &node.cert_pem, &node.key_pem).unwrap();
    let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = ep
        .connect_with(cfg, addr, crate::certs::BALANCER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (send, recv) = conn.open_bi().await.unwrap();
    Raw {
        conn,
        send,
        recv,
        _ep: ep,
    }
}

fn report(id: &str) -> Report {
    Report {
        seq: 1,
        capacity_milli_units: 1,
        stream_milli_units: 1,
        ..Report::empty(id)
    }
}

async fn start() -> (Pem, Arc<Registry>, SocketAddr, CancellationToken) {
    let ca = new_ca("t").unwrap();
    let bal = issue(&ca, &Role::Balancer("b".into()), 30).unwrap();
    let registry = Registry::new();
    let stop = CancellationToken::new();
    let cfg = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ca_pem: ca.cert_pem.clone(),
        cert_pem: bal.cert_pem,
        key_pem: bal.key_pem,
    };
    let addr = spawn_server(cfg, registry.clone(), stop.clone())
        .await
        .unwrap();
    (ca, registry, addr, stop)
}

async fn wait_node(registry: &Registry, id: &str) {
    tokio::time::timeout(Duration::from_secs(2), async {
        while !registry.snapshot().iter().any(|n| n.report.node_id == id) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn bad_frames_close_only_that_connection() {
    let (ca, registry, addr, stop) = start().await;
    let good = issue(&ca, &Role::Node("good".into()), 30).unwrap();
    let mut g = raw_connect(&ca, &good, addr).await;
    g.send
        .write_all(&encode_frame(&ToBalancer::Report(report("good"))).unwrap())
        .await
        .unwrap();
    wait_node(&registry, "good").await;

    // Oversize length prefix after a valid report.
    let bad = issue(&ca, &Role::Node("bad".into()), 30).unwrap();
    let mut b = raw_connect(&ca, &bad, addr).await;
    b.send
        .write_all(&encode_frame(&ToBalancer::Report(report("bad"))).unwrap())
        .await
        .unwrap();
    b.send
        .write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(2), b.conn.closed())
        .await
        .unwrap();
    assert!(
        matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == close_code(CloseCode::Protocol)),
        "{reason:?}"
    );
    // Garbage JSON before any report.
    let mut b2 = raw_connect(&ca, &bad, addr).await;
    b2.send
        .write_all(&[0, 0, 0, 3, b'{', b'{', b'{'])
        .await
        .unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(2), b2.conn.closed())
        .await
        .unwrap();
    assert!(
        matches!(reason, quinn::ConnectionError::ApplicationClosed(_)),
        "{reason:?}"
    );

    // The good node is untouched and the server still accepts.
    assert!(g.conn.close_reason().is_none());
    let mut r2 = report("good");
    r2.seq = 2;
    g.send
        .write_all(&encode_frame(&ToBalancer::Report(r2)).unwrap())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), async {
        while !registry
            .snapshot()
            .iter()
            .any(|n| n.report.node_id == "good" && n.report.seq == 2)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let other = issue(&ca, &Role::Node("other".into()), 30).unwrap();
    let mut o = raw_connect(&ca, &other, addr).await;
    o.send
        .write_all(&encode_frame(&ToBalancer::Report(report("other"))).unwrap())
        .await
        .unwrap();
    wait_node(&registry, "other").await;
    stop.cancel();
}

#[tokio::test]
async fn reserve_timeout_sends_cancel_and_reconnect_replaces() {
    let (ca, registry, addr, stop) = start().await;
    let cert = issue(&ca, &Role::Node("n".into()), 30).unwrap();
    let mut a = raw_connect(&ca, &cert, addr).await;
    a.send
        .write_all(&encode_frame(&ToBalancer::Report(report("n"))).unwrap())
        .await
        .unwrap();
    wait_node(&registry, "n").await;

    // The node never answers.
    let t = Instant::now();
    let r = registry
        .reserve(
            "n",
            res(42, 5, Duration::from_secs(3)),
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(r, Err(ReserveError::Timeout));
    assert!(t.elapsed() < Duration::from_secs(1));
    let mut dec = FrameDecoder::new();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 2 {
        let n = tokio::time::timeout(Duration::from_secs(2), a.recv.read(&mut buf))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        dec.push(&buf[..n]);
        while let Some(m) = dec.next::<ToNode>().unwrap() {
            got.push(m);
        }
    }
    assert_eq!(
        got[0],
        ToNode::Reserve {
            id: 42,
            milli_units: 5,
            stream_ref: None,
            ttl_ms: 3000,
            continuation: None,
            credentials: None,
        }
    );
    assert_eq!(got[1], ToNode::Cancel { id: 42 });

    // A reserve waiting on a connection that gets replaced ends with Closed, and the new
    // connection is the one used afterwards.
    let reg2 = registry.clone();
    let waiting = tokio::spawn(async move {
        reg2.reserve(
            "n",
            res(43, 5, Duration::from_secs(3)),
            Duration::from_secs(5),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut b = raw_connect(&ca, &cert, addr).await;
    b.send
        .write_all(&encode_frame(&ToBalancer::Report(report("n"))).unwrap())
        .await
        .unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .unwrap()
            .unwrap(),
        Err(ReserveError::Closed)
    );
    let reason = tokio::time::timeout(Duration::from_secs(2), a.conn.closed())
        .await
        .unwrap();
    assert!(
        matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == close_code(CloseCode::Replaced)),
        "{reason:?}"
    );
    let snap = registry.snapshot();
    assert_eq!(snap.len(), 1);
    assert!(snap[0].connected);
    assert_eq!(snap[0].remote.port(), b._ep.local_addr().unwrap().port());

    // Answer through the new connection.
    let reg3 = registry.clone();
    let waiting = tokio::spawn(async move {
        reg3.reserve(
            "n",
            res(44, 5, Duration::from_secs(3)),
            Duration::from_secs(2),
        )
        .await
    });
    let mut dec = FrameDecoder::new();
    let n = tokio::time::timeout(Duration::from_secs(2), b.recv.read(&mut buf))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    dec.push(&buf[..n]);
    assert!(matches!(
        dec.next::<ToNode>().unwrap(),
        Some(ToNode::Reserve { id: 44, .. })
    ));
    let no = ToBalancer::Reserved {
        id: 44,
        ok: false,
        reason: "draining".into(),
        kind: Default::default(),
    };
    b.send.write_all(&encode_frame(&no).unwrap()).await.unwrap();
    assert_eq!(
        waiting.await.unwrap(),
        Err(ReserveError::Refused(control_refused("draining")))
    );
    stop.cancel();
}

// ---- the registry without QUIC, on paused time ----

fn attached(registry: &Arc<Registry>, id: &str) -> (NodeLink, mpsc::Receiver<ToNode>) {
    let (link, rx) = registry.attach(id, "127.0.0.1:4000".parse().unwrap());
    link.report(report(id), Instant::now()).unwrap();
    (link, rx)
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_reservation_times_out_on_time_and_is_cancelled() {
    let registry = Registry::new();
    let (_link, mut rx) = attached(&registry, "n");
    let t0 = Instant::now();
    let timeout = Duration::from_millis(1500);
    let r = registry
        .reserve("n", res(7, 1000, Duration::from_secs(10)), timeout)
        .await;
    assert_eq!(r, Err(ReserveError::Timeout));
    assert_eq!(
        Instant::now() - t0,
        timeout,
        "gave up exactly at the deadline"
    );
    assert_eq!(
        rx.try_recv().ok(),
        Some(res(7, 1000, Duration::from_secs(10)).to_message())
    );
    assert_eq!(rx.try_recv().ok(), Some(ToNode::Cancel { id: 7 }));
}

#[tokio::test(start_paused = true)]
async fn answers_reach_the_reservation_that_asked() {
    let registry = Registry::new();
    let (link, mut rx) = attached(&registry, "n");
    let reg = registry.clone();
    let ok = tokio::spawn(async move {
        reg.reserve(
            "n",
            res(1, 10, Duration::from_secs(5)),
            Duration::from_secs(1),
        )
        .await
    });
    let reg = registry.clone();
    let no = tokio::spawn(async move {
        reg.reserve(
            "n",
            res(2, 10, Duration::from_secs(5)),
            Duration::from_secs(1),
        )
        .await
    });
    let mut asked = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
    asked.sort_by_key(|m| format!("{m:?}"));
    assert!(
        matches!(asked[0], ToNode::Reserve { id: 1, .. }),
        "{asked:?}"
    );
    // An answer nobody waits for is ignored; the others go to their callers.
    link.answer(99, Ok(()));
    link.answer(2, Err(control_refused("full")));
    link.answer(1, Ok(()));
    assert_eq!(ok.await.unwrap(), Ok(()));
    assert_eq!(
        no.await.unwrap(),
        Err(ReserveError::Refused(control_refused("full")))
    );
    assert!(rx.try_recv().is_err(), "no cancel after an answer");
    assert_eq!(
        registry
            .reserve(
                "ghost",
                res(3, 1, Duration::from_secs(1)),
                Duration::from_secs(1)
            )
            .await,
        Err(ReserveError::NotConnected)
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_connection_ends_its_waiting_reservations_and_keeps_the_last_report() {
    let registry = Registry::new();
    let (link, mut rx) = attached(&registry, "n");
    let received = registry.snapshot()[0].received;
    let reg = registry.clone();
    let waiting = tokio::spawn(async move {
        reg.reserve(
            "n",
            res(1, 10, Duration::from_secs(5)),
            Duration::from_secs(60),
        )
        .await
    });
    assert!(matches!(
        rx.recv().await,
        Some(ToNode::Reserve { id: 1, .. })
    ));
    tokio::time::advance(Duration::from_secs(3)).await;
    drop(link);
    assert_eq!(waiting.await.unwrap(), Err(ReserveError::Closed));
    let snap = registry.snapshot();
    assert_eq!(snap.len(), 1);
    assert!(!snap[0].connected);
    assert_eq!(
        snap[0].received, received,
        "the report's age goes on from when it came"
    );
    assert_eq!(
        registry
            .reserve(
                "n",
                res(2, 1, Duration::from_secs(1)),
                Duration::from_secs(1)
            )
            .await,
        Err(ReserveError::NotConnected)
    );
}

#[tokio::test(start_paused = true)]
async fn the_newest_connection_of_a_node_wins() {
    let registry = Registry::new();
    let (old, _old_rx) = attached(&registry, "n");
    let (new, mut new_rx) = registry.attach("n", "127.0.0.1:4001".parse().unwrap());
    // Attached but silent: the old connection still serves the node.
    assert_eq!(registry.snapshot()[0].remote.port(), 4000);
    let mut r2 = report("n");
    r2.seq = 2;
    let at = Instant::now() + Duration::from_secs(1);
    new.report(r2, at).unwrap();
    tokio::time::timeout(Duration::from_secs(1), old.replaced())
        .await
        .expect("the old connection is told to go");
    assert_eq!(
        old.report(report("n"), at),
        Err(Kick {
            code: CloseCode::Replaced,
            reason: "replaced by a newer connection"
        })
    );
    let snap = registry.snapshot();
    assert_eq!(
        (snap[0].report.seq, snap[0].remote.port(), snap[0].received),
        (2, 4001, at)
    );
    // The old connection going away does not disconnect the node.
    drop(old);
    assert!(registry.snapshot()[0].connected);
    let reg = registry.clone();
    let w = tokio::spawn(async move {
        reg.reserve(
            "n",
            res(5, 1, Duration::from_secs(1)),
            Duration::from_secs(1),
        )
        .await
    });
    assert!(matches!(
        new_rx.recv().await,
        Some(ToNode::Reserve { id: 5, .. })
    ));
    new.answer(5, Ok(()));
    assert_eq!(w.await.unwrap(), Ok(()));
}

fn control_refused(reason: &str) -> crate::Refused {
    crate::Refused::capacity(reason)
}
