//! Unit tests of `opening` (kept beside it; compiled only for tests).

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Duration, Instant};

#[tokio::test]
async fn an_opening_is_read_to_its_end_and_put_back_whole() {
    let (mut client, mut server) = tokio::io::duplex(64);
    let head = b"GET /live/x/index.m3u8 HTTP/1.1\r\nHost: e\r\n\r\nGET /next";
    client.write_all(head).await.unwrap();
    let opening = read_opening(
        &mut server,
        Instant::now() + Duration::from_secs(5),
        16 * 1024,
        http_head_complete,
    )
    .await
    .unwrap();
    assert!(http_head_complete(&opening));
    // Whatever came with the header (a pipelined request) is in the opening, and the stream
    // goes on after it.
    client.write_all(b" HTTP/1.1\r\n").await.unwrap();
    drop(client);
    let mut all = Vec::new();
    Rewind::new(opening, server)
        .read_to_end(&mut all)
        .await
        .unwrap();
    assert_eq!(
        all,
        b"GET /live/x/index.m3u8 HTTP/1.1\r\nHost: e\r\n\r\nGET /next HTTP/1.1\r\n"
    );
}

#[tokio::test(start_paused = true)]
async fn a_trickle_is_cut_at_the_deadline_and_holds_only_what_it_sent() {
    let (mut client, mut server) = tokio::io::duplex(64);
    let until = Instant::now() + Duration::from_secs(10);
    let reader = tokio::spawn(async move {
        let r = read_opening(&mut server, until, 1537, |b| b.len() >= 1537).await;
        (r.map_err(|e| e.kind()), server)
    });
    for _ in 0..3 {
        client.write_all(b"x").await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    let (r, _server) = reader.await.unwrap();
    assert_eq!(r, Err(io::ErrorKind::TimedOut));
}

#[tokio::test]
async fn an_opening_stops_at_its_bound_and_at_the_end() {
    let (mut client, mut server) = tokio::io::duplex(4096);
    client.write_all(&[7u8; 3000]).await.unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    let opening = read_opening(&mut server, until, 1537, |b| b.len() >= 1537)
        .await
        .unwrap();
    assert_eq!(opening.len(), 1537, "never more than the bound");
    drop(client);
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest.len(), 3000 - 1537);
    let (client, mut server) = tokio::io::duplex(64);
    drop(client);
    let r = read_opening(&mut server, until, 100, http_head_complete).await;
    assert_eq!(r.map_err(|e| e.kind()), Err(io::ErrorKind::UnexpectedEof));
}

#[test]
fn a_header_ends_at_its_blank_line_with_crlf_or_bare_lf() {
    assert!(http_head_complete(b"GET / HTTP/1.1\r\nHost: e\r\n\r\n"));
    assert!(http_head_complete(b"GET / HTTP/1.1\nHost: e\n\n"));
    assert!(http_head_complete(b"GET / HTTP/1.1\nHost: e\n\r\n"));
    assert!(http_head_complete(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    assert!(!http_head_complete(b"GET / HTTP/1.1\r\nHost: e\r\n"));
    assert!(!http_head_complete(b"GET / HTTP/1.1\r\nUser-Agent: half"));
}
