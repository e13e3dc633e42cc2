//! RTMP relay on tcp/1935: accept, read the encoder's `publish` to learn its key
//! ([`crate::rtmp_peek`]), place the stream by the key's fingerprint (a returning encoder goes
//! back to its node), connect to the node, send a PROXY v2 header (the encoder's address and
//! our reservation), replay the encoder's opening to the node, then relay both ways until
//! either side ends.
//!
//! Admission is not liveness: once relaying, nothing but the two sockets ends a connection.
//! There is no idle timeout (an encoder may pause; TCP keepalive finds dead peers) and no
//! node state closes it. Buffers are bounded ([`RELAY_BUF`] per direction), so a slow node
//! slows its encoder (TCP back-pressure) instead of growing memory.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{conns::Conns, metrics, place::Placer, rtmp_peek};

/// Connections at once: bounds what a flood of idle sockets can hold.
pub const MAX_CONNECTIONS: usize = 20_000;
/// Connections at once from one address: an encoder needs one, a studio or a mobile
/// carrier's NAT a few dozen.
pub const MAX_CONNECTIONS_PER_IP: usize = 64;
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
/// The RTMP handshake with the node, which is on our network.
const NODE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Accept until `stop_accepting`; live relays are not touched by it.
pub async fn serve(
    listener: TcpListener,
    placement: Arc<Placer>,
    conns: Arc<Conns>,
    stop_accepting: CancellationToken,
) {
    let acceptor = server::Acceptor::new(
        "rtmp",
        server::ConnLimits {
            max_total: MAX_CONNECTIONS,
            max_per_ip: MAX_CONNECTIONS_PER_IP,
            exempt: Vec::new(),
        },
        |why| {
            metrics::CONNECTIONS_TOTAL
                .with_label_values(&["rtmp", why.as_str()])
                .inc();
        },
    );
    loop {
        let (sock, peer, permit) = tokio::select! {
            _ = stop_accepting.cancelled() => break,
            c = acceptor.accept(&listener) => c,
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

async fn relay(mut client: TcpStream, peer: SocketAddr, placement: Arc<Placer>, conns: Arc<Conns>) {
    keepalive(&client);
    metrics::CONNECTIONS
        .with_label_values(&["rtmp", "placing"])
        .inc();
    let result = open(&mut client, peer, &placement).await;
    metrics::CONNECTIONS
        .with_label_values(&["rtmp", "placing"])
        .dec();
    let (node, placed, downstream, first) = match result {
        Ok(x) => x,
        Err(reason) => {
            tracing::info!(reason = %reason, "rtmp publisher refused");
            metrics::CONNECTIONS_TOTAL
                .with_label_values(&["rtmp", "refused"])
                .inc();
            return;
        }
    };
    tracing::Span::current().record("node.id", placed.node_id.as_str());
    metrics::CONNECTIONS_TOTAL
        .with_label_values(&["rtmp", "relayed"])
        .inc();
    metrics::CONNECTIONS
        .with_label_values(&["rtmp", "relaying"])
        .inc();
    let guard = conns.open("rtmp", peer, &placed.node_id);
    tracing::info!("rtmp relay started");
    let (cr, mut cw) = client.into_split();
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
    let down = async move {
        if cw.write_all(&first).await.is_err() {
            return 0;
        }
        pump_downstream(nr, cw, downstream, move |n| {
            c.bytes_to_encoder
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            metrics::RELAYED_BYTES
                .with_label_values(&["rtmp", "to_encoder"])
                .inc_by(n);
        })
        .await
    };
    // Each direction runs until its reader ends; then its writer is shut down (half-close), so
    // the other side learns of it, and the relay ends when both are done.
    let (a, b) = tokio::join!(up, down);
    metrics::CONNECTIONS
        .with_label_values(&["rtmp", "relaying"])
        .dec();
    tracing::info!(to_node = a, to_encoder = b, "rtmp relay ended");
    drop(guard);
}

/// Peek the encoder's publish, place it, connect and hand it over to the node. On success:
/// the node socket, the placement, the downstream re-serialiser and its first bytes for the
/// encoder.
async fn open(
    client: &mut TcpStream,
    peer: SocketAddr,
    placement: &Placer,
) -> Result<
    (
        TcpStream,
        crate::place::Placed,
        rtmp_peek::Downstream,
        Vec<u8>,
    ),
    String,
> {
    let peeked = rtmp_peek::peek(client).await.map_err(|e| e.to_string())?;
    let sref = control::stream_ref(&peeked.key);
    let credentials = control::Credentials {
        key: peeked.key.clone(),
        client_addr: peer,
        protocol: "rtmp".into(),
    };
    let mut tried: Vec<String> = Vec::new();
    let mut why = String::new();
    for _ in 0..MAX_ATTEMPTS {
        let placed = match placement
            .place(Some(&sref), &tried, Some(credentials.clone()))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                why = e.to_string();
                break;
            }
        };
        match hand_over(&placed, peer, client, &peeked).await {
            Ok((node, downstream, first)) => return Ok((node, placed, downstream, first)),
            Err(e) => {
                tracing::warn!(node.id = %placed.node_id, error = %e, "cannot hand the stream to the node");
                why = e;
            }
        }
        placement.cancel(&placed).await;
        tried.push(placed.node_id);
    }
    // Tell the encoder, in the status it shows its user, then close.
    let _ = peeked
        .refuse(client, &format!("publish rejected: {why}"))
        .await;
    Err(why)
}

async fn hand_over(
    placed: &crate::place::Placed,
    peer: SocketAddr,
    client: &TcpStream,
    peeked: &rtmp_peek::Peeked,
) -> Result<(TcpStream, rtmp_peek::Downstream, Vec<u8>), String> {
    let mut node =
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(placed.rtmp_addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(format!("cannot connect to node: {e}")),
            Err(_) => return Err("connecting to node timed out".into()),
        };
    keepalive(&node);
    let local = client.local_addr().unwrap_or(peer);
    node.write_all(&wire::proxy::encode(peer, local, Some(placed.reservation)))
        .await
        .map_err(|e| format!("cannot write PROXY header: {e}"))?;
    let rest = tokio::time::timeout(
        NODE_HANDSHAKE_TIMEOUT,
        rtmp_peek::handshake_with_node(&mut node),
    )
    .await
    .map_err(|_| "RTMP handshake with the node timed out".to_string())?
    .map_err(|e| format!("RTMP handshake with the node: {e}"))?;
    node.write_all(&peeked.recorded)
        .await
        .map_err(|e| format!("cannot replay to node: {e}"))?;
    let mut downstream =
        rtmp_peek::Downstream::new(peeked.chunk_size).map_err(|e| e.to_string())?;
    let first = downstream.on_node_bytes(&rest).map_err(|e| e.to_string())?;
    Ok((node, downstream, first))
}

/// Node → encoder through the re-serialiser, until either side ends.
async fn pump_downstream<R, W>(
    mut r: R,
    mut w: W,
    mut down: rtmp_peek::Downstream,
    on_bytes: impl Fn(u64),
) -> u64
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
        let out = match down.on_node_bytes(&buf[..n]) {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "cannot follow the node's RTMP");
                break;
            }
        };
        if w.write_all(&out).await.is_err() {
            break;
        }
        total += out.len() as u64;
        on_bytes(out.len() as u64);
    }
    let _ = w.shutdown().await;
    total
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
