//! Unit tests of `playback`: the relayed body's limits, on paused time.

use super::*;
use futures::StreamExt;
use http_body_util::StreamBody;

type Chunk = Result<Frame<Bytes>, std::io::Error>;
type Chunks = futures::channel::mpsc::UnboundedSender<Chunk>;
type TestBody = Relayed<StreamBody<futures::stream::BoxStream<'static, Chunk>>>;

/// A relayed body fed by hand: send chunks on the returned sender, drop it to end the body.
fn body() -> (Chunks, TestBody) {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    (tx, Relayed::new(StreamBody::new(rx.boxed())))
}

#[tokio::test(start_paused = true)]
async fn chunks_flow_through_as_they_come() {
    let (tx, mut b) = body();
    tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"part-a"))))
        .expect("send");
    let f = b.frame().await.expect("a frame").expect("ok");
    assert_eq!(f.into_data().expect("data"), Bytes::from_static(b"part-a"));
    // Just short of the idle limit a new chunk still arrives, and restarts the clock.
    tokio::time::advance(BODY_IDLE_TIMEOUT - Duration::from_millis(1)).await;
    tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"part-b"))))
        .expect("send");
    assert!(b.frame().await.expect("a frame").is_ok());
    drop(tx);
    assert!(
        b.frame().await.is_none(),
        "the body ends when the node's ends"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_is_cut() {
    let (tx, mut b) = body();
    tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"x"))))
        .expect("send");
    assert!(b.frame().await.expect("frame").is_ok());
    let started = tokio::time::Instant::now();
    let r = b.frame().await.expect("an error, not the end");
    assert!(matches!(r, Err(BodyError::Stalled)), "{r:?}");
    assert_eq!(tokio::time::Instant::now() - started, BODY_IDLE_TIMEOUT);
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn a_body_past_the_limit_is_cut() {
    let (tx, mut b) = body();
    let chunk = Bytes::from(vec![0u8; 1024 * 1024]);
    for _ in 0..(MAX_RESPONSE / chunk.len()) {
        tx.unbounded_send(Ok(Frame::data(chunk.clone())))
            .expect("send");
        assert!(b.frame().await.expect("frame").is_ok());
    }
    tx.unbounded_send(Ok(Frame::data(Bytes::from_static(b"!"))))
        .expect("send");
    let r = b.frame().await.expect("an error");
    assert!(matches!(r, Err(BodyError::TooLarge)), "{r:?}");
}

#[test]
fn the_proxy_waits_longer_than_the_node_holds() {
    assert!(REQUEST_TIMEOUT > packager::MAX_BLOCKING_HOLD);
}
