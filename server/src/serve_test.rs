//! The connection limits of `serve_gated`, on real loopback sockets with short limits.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::Instant,
};

use super::*;
use crate::accept::{Acceptor, ConnLimits};

const IDLE: Duration = Duration::from_millis(300);

fn limits() -> HttpLimits {
    HttpLimits {
        header_timeout: IDLE,
        idle_timeout: IDLE,
        retire_grace: Duration::from_secs(5),
        ..ADMIN_LIMITS
    }
}

fn acceptor() -> Arc<Acceptor> {
    Acceptor::new(
        "test",
        ConnLimits {
            max_total: 100,
            max_per_ip: 100,
            exempt: Vec::new(),
        },
        |_| {},
    )
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// `/slow` streams one chunk every IDLE/3 for 4 IDLE; anything else answers "ok" at once.
async fn start() -> (std::net::SocketAddr, Arc<Acceptor>, crate::GateHandle) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acc = acceptor();
    let (handle, gate) = crate::gate();
    tokio::spawn(serve_gated(
        listener,
        Arc::clone(&acc),
        limits(),
        |_peer| {
            service_fn(|req: Request<Incoming>| async move {
                let body: TestBody = if req.uri().path() == "/slow" {
                    let chunks = futures_stream(12, IDLE / 3);
                    http_body_util::BodyExt::boxed(StreamBody::new(chunks))
                } else {
                    http_body_util::BodyExt::boxed(Full::new(Bytes::from_static(b"ok")))
                };
                Ok::<_, Infallible>(Response::new(body))
            })
        },
        gate,
    ));
    (addr, acc, handle)
}

/// `n` chunks of one byte, `every` apart, as a body stream.
fn futures_stream(
    n: usize,
    every: Duration,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Unpin {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for _ in 0..n {
            tokio::time::sleep(every).await;
            if tx
                .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Unpin {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Read until the peer closes; the time it took.
async fn closed_after(s: &mut TcpStream, limit: Duration) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server did not close the connection within {limit:?}"),
        }
    }
}

#[tokio::test]
async fn a_connection_that_never_sends_is_closed_at_the_header_deadline() {
    let (addr, acc, _h) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let took = closed_after(&mut s, IDLE * 4).await;
    assert!(
        took >= IDLE,
        "closed after {took:?}, before the idle timeout"
    );
    tokio::time::timeout(Duration::from_secs(2), async {
        while acc.open() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the slot is released");
}

#[tokio::test]
async fn a_trickled_request_never_completed_is_closed() {
    let (addr, _acc, _h) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // "PRI" could be the start of an HTTP/2 preface, so hyper cannot even pick a protocol.
    let trickle = async {
        for b in b"PRI * HTTP/2.0\r\n" {
            if s.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(IDLE / 4).await;
        }
        std::future::pending::<()>().await;
    };
    let _ = tokio::time::timeout(IDLE * 4, trickle).await;
    let took = closed_after(&mut s, IDLE * 2).await;
    assert!(took < IDLE * 2, "still open after trickling");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let (addr, _acc, _h) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Busy: a request every IDLE/2 for 3 IDLE keeps the connection.
    for i in 0..6 {
        if i > 0 {
            tokio::time::sleep(IDLE / 2).await;
        }
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the connection was closed while in use");
        assert!(
            buf[..n].ends_with(b"ok"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    // Idle from the last answer on: closed after about IDLE (and within closed_after's
    // bound); never in the first half of it.
    let took = closed_after(&mut s, IDLE * 3).await;
    assert!(took >= IDLE / 2, "closed after {took:?}");
}

#[tokio::test]
async fn a_response_streaming_longer_than_the_idle_timeout_is_not_cut() {
    let (addr, _acc, _h) = start().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(IDLE * 10, s.read_to_end(&mut all))
        .await
        .expect("response finished")
        .unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Twelve one-byte chunks in chunked encoding: "1\r\nx\r\n" each, then the last chunk.
    assert_eq!(text.matches("1\r\nx\r\n").count(), 12, "{text}");
    assert!(text.ends_with("0\r\n\r\n"), "{text}");
}
