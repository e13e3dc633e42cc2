//! Unit tests of `operate`: actions reach the node's control connection, kicks find the node
//! carrying the stream, blocks reported by any node refuse placement until they run out
//! (on tokio's paused clock; a registry fed without QUIC; kept beside it, compiled only for
//! tests).

use std::sync::Arc;
use std::time::Duration;

use control::server::{OperateError, Registry};
use control::{Operation, Report, StreamReport, ToNode};
use tokio::time::Instant;

use super::*;
use crate::place::PlaceError;

fn config() -> edge_config::BalancerConfig {
    crate::place::tests::config()
}

fn report(id: &str, operations: bool, streams: &[&str]) -> Report {
    Report {
        seq: 1,
        capacity_milli_units: 4000,
        stream_milli_units: 1000,
        operations,
        streams: streams
            .iter()
            .map(|p| StreamReport {
                stream_ref: control::stream_ref(&format!("key-{p}")),
                playback_id: (*p).into(),
                protocol: "rtmp".into(),
                milli_units: 1000,
                started_unix_ms: 1_700_000_000_000,
                reservation: None,
                health: Some("healthy".into()),
                health_reason: None,
                detail: None,
            })
            .collect(),
        ..Report::empty(id)
    }
}

#[tokio::test(start_paused = true)]
async fn actions_reach_the_node_that_must_carry_them_out() {
    let registry = Registry::new();
    let placer = Placer::new(&config(), Arc::clone(&registry));
    let (n1, mut rx1) = registry.attach("n1", "127.0.0.1:4001".parse().unwrap());
    n1.report(report("n1", true, &["a", "b"]), Instant::now())
        .unwrap();
    let (n2, _rx2) = registry.attach("n2", "127.0.0.1:4002".parse().unwrap());
    n2.report(report("n2", false, &["c"]), Instant::now())
        .unwrap();

    let streams = placer.streams();
    let ids: Vec<(&str, &str)> = streams
        .iter()
        .map(|s| (s.playback_id.as_str(), s.node_id.as_str()))
        .collect();
    assert_eq!(ids, [("a", "n1"), ("b", "n1"), ("c", "n2")]);
    assert_eq!(streams[0].health.as_deref(), Some("healthy"));

    placer.operate_node("n1", Operation::Cordon).unwrap();
    assert_eq!(rx1.try_recv().unwrap(), ToNode::Operate(Operation::Cordon));
    assert_eq!(
        placer.kick("b", Duration::from_secs(60)).unwrap(),
        "n1".to_string()
    );
    assert_eq!(
        rx1.try_recv().unwrap(),
        ToNode::Operate(Operation::Kick {
            playback_id: "b".into(),
            block_ms: 60_000
        })
    );
    // A node from before operator actions would drop its control link on the message.
    assert_eq!(
        placer.operate_node("n2", Operation::Drain),
        Err(OperateError::Unsupported("n2".into()))
    );
    assert!(matches!(
        placer.kick("c", Duration::ZERO),
        Err(KickError::Node(OperateError::Unsupported(_)))
    ));
    assert_eq!(
        placer.kick("zzz", Duration::ZERO),
        Err(KickError::NotLive("zzz".into()))
    );
    assert_eq!(
        placer.kick("a", MAX_BLOCK + Duration::from_secs(1)),
        Err(KickError::BlockTooLong)
    );
    // Forgetting: refused while connected, done once the node is gone.
    assert_eq!(
        placer.forget("n1"),
        Err(OperateError::Connected("n1".into()))
    );
    drop(n1);
    assert_eq!(
        placer.operate_node("n1", Operation::Uncordon),
        Err(OperateError::NotConnected("n1".into()))
    );
    assert_eq!(placer.forget("n1"), Ok(true));
    assert_eq!(placer.forget("n1"), Ok(false));
    assert!(placer.streams().iter().all(|s| s.node_id != "n1"));
}

#[tokio::test(start_paused = true)]
async fn a_blocked_key_is_refused_until_its_block_runs_out() {
    let registry = Registry::new();
    let placer = Placer::new(&config(), Arc::clone(&registry));
    let (n1, _rx1) = registry.attach("n1", "127.0.0.1:4001".parse().unwrap());
    let sref = control::stream_ref("key-a");
    let mut r = report("n1", true, &[]);
    r.blocked.insert(sref.clone(), 10_000);
    n1.report(r, Instant::now()).unwrap();
    // The report is 4 s old: 6 s of the block are left.
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(placer.blocked_for(&sref), Some(Duration::from_secs(6)));
    assert_eq!(placer.blocked_for("other"), None);
    let err = placer.place(Some(&sref), &[], None).await.unwrap_err();
    assert!(matches!(err, PlaceError::Blocked(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "stream key blocked by an operator for 6 more s"
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(placer.blocked_for(&sref), None);
}
