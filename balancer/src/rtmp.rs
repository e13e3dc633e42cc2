//! RTMP relay on tcp/1935: accept, place, connect to the node, send a PROXY v2 header (the
//! encoder's address and our reservation), then relay both ways until either side ends.
//!
//! Admission is not liveness: once relaying, nothing but the two sockets ends a connection.
//! There is no idle timeout (an encoder may pause; TCP keepalive finds dead peers) and no
//! node state closes it. Buffers are bounded ([`RELAY_BUF`] per direction), so a slow node
//! slows its encoder (TCP back-pressure) instead of growing memory.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{conns::Conns, metrics, place::Placement};

/// Connections at once: bounds what a flood of idle sockets can hold.
pub const MAX_CONNECTIONS: usize = 20_000;
/// Connecting to the chosen node: it is on our network and answered a reservation just now.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Relay buffer per direction. Encoders send 1-20 Mbps; 64 KiB is ~25 ms at 20 Mbps, enough
/// to keep the pipe full without holding much per connection.
pub const RELAY_BUF: usize = 64 * 1024;
/// Nodes tried when connecting fails after a placement (each is a fresh placement).
const MAX_ATTEMPTS: usize = 3;
/// TCP keepalive on both sockets: the only way a silently dead peer is noticed, since we
/// have no idle timeout.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Accept until `stop_accepting`; live relays are not touched by it.
pub async fn serve(
    listener: TcpListener,
    placement: Arc<Placement>,
    conns: Arc<Conns>,
    stop_accepting: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (sock, peer) = tokio::select! {
            _ = stop_accepting.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "rtmp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            metrics::CONNECTIONS_TOTAL
                .with_label_values(&["rtmp", "too_many_connections"])
                .inc();
            continue;
        };
        let (placement, conns) = (Arc::clone(&placement), Arc::clone(&conns));
        let span =
            tracing::info_span!("rtmp", client.addr = %peer, node.id = tracing::field::Empty);
        tokio::spawn(
            async move {
                relay(sock, peer, placement, conns).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

fn keepalive(s: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE)
        .with_interval(KEEPALIVE / 3);
    let _ = socket2::SockRef::from(s).set_tcp_keepalive(&ka);
    let _ = s.set_nodelay(true);
}

async fn relay(client: TcpStream, peer: SocketAddr, placement: Arc<Placement>, conns: Arc<Conns>) {
    keepalive(&client);
    metrics::CONNECTIONS
        .with_label_values(&["rtmp", "placing"])
        .inc();
    let mut tried: Vec<String> = Vec::new();
    let mut upstream = None;
    for _ in 0..MAX_ATTEMPTS {
        let placed = match placement.place(None, &tried).await {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(reason = %e, "rtmp publisher refused");
                break;
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(placed.rtmp_addr)).await {
            Ok(Ok(s)) => {
                upstream = Some((s, placed));
                break;
            }
            Ok(Err(e)) => {
                tracing::warn!(node.id = %placed.node_id, error = %e, "cannot connect to node")
            }
            Err(_) => tracing::warn!(node.id = %placed.node_id, "connecting to node timed out"),
        }
        placement.abandon(&placed).await;
        tried.push(placed.node_id);
    }
    metrics::CONNECTIONS
        .with_label_values(&["rtmp", "placing"])
        .dec();
    let Some((mut node, placed)) = upstream else {
        // Closing is the refusal RTMP allows before the handshake; the reason is logged.
        metrics::CONNECTIONS_TOTAL
            .with_label_values(&["rtmp", "refused"])
            .inc();
        return;
    };
    tracing::Span::current().record("node.id", placed.node_id.as_str());
    keepalive(&node);
    let local = client.local_addr().unwrap_or(peer);
    let header = wire::proxy::encode(peer, local, Some(placed.reservation));
    if let Err(e) = node.write_all(&header).await {
        tracing::warn!(error = %e, "cannot write PROXY header");
        placement.abandon(&placed).await;
        metrics::CONNECTIONS_TOTAL
            .with_label_values(&["rtmp", "failed"])
            .inc();
        return;
    }
    metrics::CONNECTIONS_TOTAL
        .with_label_values(&["rtmp", "relayed"])
        .inc();
    metrics::CONNECTIONS
        .with_label_values(&["rtmp", "relaying"])
        .inc();
    let guard = conns.open("rtmp", peer, &placed.node_id);
    tracing::info!("rtmp relay started");
    let (cr, cw) = client.into_split();
    let (nr, nw) = node.into_split();
    let c = Arc::clone(&guard.conn);
    let up = pump(cr, nw, move |n| {
        c.bytes_to_node
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        metrics::RELAYED_BYTES
            .with_label_values(&["rtmp", "to_node"])
            .inc_by(n);
    });
    let c = Arc::clone(&guard.conn);
    let down = pump(nr, cw, move |n| {
        c.bytes_to_encoder
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        metrics::RELAYED_BYTES
            .with_label_values(&["rtmp", "to_encoder"])
            .inc_by(n);
    });
    // Each direction runs until its reader ends; then its writer is shut down (half-close), so
    // the other side learns of it, and the relay ends when both are done.
    let (a, b) = tokio::join!(up, down);
    metrics::CONNECTIONS
        .with_label_values(&["rtmp", "relaying"])
        .dec();
    tracing::info!(to_node = a, to_encoder = b, "rtmp relay ended");
    drop(guard);
}

/// Copy until EOF or error with one bounded buffer; returns bytes copied.
async fn pump<R, W>(mut r: R, mut w: W, on_bytes: impl Fn(u64)) -> u64
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; RELAY_BUF];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() {
            break;
        }
        total += n as u64;
        on_bytes(n as u64);
    }
    let _ = w.shutdown().await;
    total
}
