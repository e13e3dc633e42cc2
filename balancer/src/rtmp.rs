//! RTMP relay on tcp/1935: accept, read the encoder's `publish` to learn its key
//! ([`crate::rtmp_peek`]), place the stream by the key's fingerprint (a returning encoder goes
//! back to its node) and, while the node answers the reservation, connect to it, send a PROXY
//! v2 header (the encoder's address and our reservation) and do the RTMP handshake; once the
//! reservation is granted, replay the encoder's opening to the node, then relay both ways
//! until either side ends.
//!
//! Admission is not liveness: once relaying, nothing but the two sockets ends a connection.
//! There is no idle timeout (an encoder may pause; TCP keepalive finds dead peers) and no
//! node state closes it. The relay itself is [`crate::rtmp_relay`]: bounded, so a slow node
//! slows its encoder (TCP back-pressure) instead of growing memory, and able to move to the
//! balancer that takes over from this one.

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
};
use tracing::Instrument;

use crate::{conns::Conns, metrics, place::Placer, rtmp_peek, rtmp_relay};

/// Connections at once: bounds what a flood of idle sockets can hold.
pub const MAX_CONNECTIONS: usize = 20_000;
/// Connections at once from one address: an encoder needs one, a studio or a mobile
/// carrier's NAT a few dozen.
pub const MAX_CONNECTIONS_PER_IP: usize = 64;
/// Connecting to the chosen node: it is on our network and answered a reservation just now.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Nodes tried when connecting fails after a placement (each is a fresh placement).
const MAX_ATTEMPTS: usize = 3;
/// TCP keepalive on both sockets: the only way a silently dead peer is noticed, since we
/// have no idle timeout.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// The RTMP handshake with the node, which is on our network.
const NODE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the RTMP front shares with the rest of the balancer.
pub struct Front {
    /// Connection caps: opening connections and relays alike hold a slot.
    pub acceptor: Arc<server::Acceptor>,
    pub placement: Arc<Placer>,
    pub conns: Arc<Conns>,
    pub relays: Arc<rtmp_relay::Relays>,
    /// Where quiesced relays go (the hand-over collects them).
    pub quiesced: tokio::sync::mpsc::UnboundedSender<rtmp_relay::Quiesced>,
    /// Set by a drain: new publishers are refused with a status saying why (the listener
    /// stays open, so encoders hear it instead of hanging in a backlog).
    pub draining: std::sync::atomic::AtomicBool,
    /// Our RTMPS front's loopback connections: only these may open with a PROXY header.
    pub hops: Arc<crate::rtmps::Hops>,
}

/// Accept while `gate` lets us; live relays are not touched by it.
pub async fn serve(listener: TcpListener, front: Arc<Front>, mut gate: server::Gate) {
    while gate.open().await {
        let (sock, peer, permit) = tokio::select! {
            _ = gate.closing() => continue,
            c = front.acceptor.accept(&listener) => c,
        };
        let front = Arc::clone(&front);
        // Counted before the task runs, so a hand-over pausing us now waits for it.
        front.relays.opening.fetch_add(1, Ordering::AcqRel);
        let span =
            tracing::info_span!("rtmp", client.addr = %peer, node.id = tracing::field::Empty);
        tokio::spawn(async move { relay(sock, peer, permit, &front).await }.instrument(span));
    }
}

/// The RTMP listener's connection caps.
pub fn acceptor() -> Arc<server::Acceptor> {
    server::Acceptor::new(
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
    )
}

fn keepalive(s: &TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE)
        .with_interval(KEEPALIVE / 3);
    let _ = socket2::SockRef::from(s).set_tcp_keepalive(&ka);
    let _ = s.set_nodelay(true);
}

/// Open the connection (peek, place, hand to the node), then start its relay task.
async fn relay(mut client: TcpStream, peer: SocketAddr, permit: server::ConnPermit, front: &Front) {
    keepalive(&client);
    metrics::CONNECTIONS
        .with_label_values(&["rtmp", "placing"])
        .inc();
    let abort = front.relays.opening_token();
    // Our RTMPS front's hop names the encoder in a PROXY header; nobody else may send one.
    let hop = front.hops.contains(peer);
    let accepted = tokio::time::Instant::now();
    let result = tokio::select! {
        r = async {
            // The first 1,537 bytes (C0+C1, or our RTMPS front's PROXY header and most of
            // them) into a buffer the size of what arrives; the peek's session state exists
            // once they are in, and reads the rest itself.
            let opening = rtmp_peek::read_opening(&mut client, accepted).await;
            match opening {
                Ok(opening) => {
                    Box::pin(open(
                        &mut client,
                        peer,
                        hop,
                        (accepted, opening),
                        &front.placement,
                        &front.draining,
                    ))
                    .await
                }
                Err(e) => Err(e.to_string()),
            }
        } => Some(r),
        _ = abort.cancelled() => None,
    };
    front.relays.opening.fetch_sub(1, Ordering::AcqRel);
    metrics::CONNECTIONS
        .with_label_values(&["rtmp", "placing"])
        .dec();
    let (node, placed, downstream, first, peer) = match result {
        Some(Ok(x)) => x,
        Some(Err(reason)) => {
            tracing::info!(reason = %reason, "rtmp publisher refused");
            metrics::CONNECTIONS_TOTAL
                .with_label_values(&["rtmp", "refused"])
                .inc();
            return;
        }
        None => {
            tracing::info!("rtmp publisher still opening when the balancer handed over: closed");
            metrics::CONNECTIONS_TOTAL
                .with_label_values(&["rtmp", "aborted_by_handover"])
                .inc();
            return;
        }
    };
    if hop {
        tracing::info!(encoder.addr = %peer, "rtmps: TLS terminated by this balancer");
    }
    tracing::Span::current().record("node.id", placed.node_id.as_str());
    metrics::CONNECTIONS_TOTAL
        .with_label_values(&["rtmp", "relayed"])
        .inc();
    tracing::info!("rtmp relay started");
    let state = rtmp_relay::RelayState {
        client_addr: peer,
        node_id: placed.node_id.clone(),
        reservation: placed.reservation,
        started_unix_ms: server::wall_clock()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        bytes_to_node: 0,
        bytes_to_encoder: 0,
        pending_up: Vec::new(),
        // The node's first answers, re-serialised, go to the encoder first.
        pending_down: first,
        up_eof: false,
        up_shut: false,
        down_eof: false,
        down_shut: false,
        downstream,
    };
    rtmp_relay::spawn(
        client,
        node,
        state,
        Arc::clone(&front.conns),
        &front.relays,
        front.quiesced.clone(),
        Some(permit),
    );
}

/// Peek the encoder's publish, place it, connect and hand it over to the node. On success:
/// the node socket, the placement, the downstream re-serialiser, its first bytes for the
/// encoder, and the encoder's address (from the PROXY header of our RTMPS front's `hop`).
async fn open(
    client: &mut TcpStream,
    peer: SocketAddr,
    hop: bool,
    (accepted, opening): (tokio::time::Instant, Vec<u8>),
    placement: &Placer,
    draining: &std::sync::atomic::AtomicBool,
) -> Result<
    (
        TcpStream,
        crate::place::Placed,
        rtmp_peek::Downstream,
        Vec<u8>,
        SocketAddr,
    ),
    String,
> {
    let peeked = rtmp_peek::peek(client, hop, accepted, opening)
        .await
        .map_err(|e| e.to_string())?;
    let peer = match (hop, peeked.proxied) {
        (false, _) => peer,
        (true, Some(encoder)) => encoder,
        (true, None) => return Err("our RTMPS front's connection named no encoder".into()),
    };
    if draining.load(Ordering::Acquire) {
        let why = "this balancer is shutting down; reconnect to be placed by another";
        let _ = peeked
            .refuse(client, &format!("publish rejected: {why}"))
            .await;
        return Err(why.into());
    }
    let sref = control::stream_ref(&peeked.key);
    let credentials = control::Credentials {
        key: peeked.key.clone(),
        client_addr: peer,
        protocol: "rtmp".into(),
    };
    let local = client.local_addr().unwrap_or(peer);
    let mut tried: Vec<String> = Vec::new();
    let mut why = String::new();
    for _ in 0..MAX_ATTEMPTS {
        // The node is connected to and greeted while its reservation is in flight.
        let (placed, prepared) = match placement
            .place_with(Some(&sref), &tried, Some(credentials.clone()), |c| {
                prepare_node(c.rtmp_addr, c.reservation, peer, local)
            })
            .await
        {
            Ok(p) => p,
            Err(e) => {
                why = e.to_string();
                break;
            }
        };
        match hand_over(prepared, &peeked).await {
            Ok((node, downstream, first)) => return Ok((node, placed, downstream, first, peer)),
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

/// Connect to the node, send the PROXY header (the encoder's address and the reservation)
/// and do the RTMP handshake. Runs while the reservation is in flight: the node holds the
/// connection until `publish`, which is sent only once the reservation is granted. Returns
/// the socket and what the node sent after its handshake.
async fn prepare_node(
    rtmp_addr: SocketAddr,
    reservation: u64,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<(TcpStream, Vec<u8>), String> {
    let mut node = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(rtmp_addr)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("cannot connect to node: {e}")),
        Err(_) => return Err("connecting to node timed out".into()),
    };
    keepalive(&node);
    node.write_all(&wire::proxy::encode(peer, local, Some(reservation)))
        .await
        .map_err(|e| format!("cannot write PROXY header: {e}"))?;
    let rest = tokio::time::timeout(
        NODE_HANDSHAKE_TIMEOUT,
        rtmp_peek::handshake_with_node(&mut node),
    )
    .await
    .map_err(|_| "RTMP handshake with the node timed out".to_string())?
    .map_err(|e| format!("RTMP handshake with the node: {e}"))?;
    Ok((node, rest))
}

/// Replay the encoder's opening to the prepared node (the reservation is granted now).
async fn hand_over(
    prepared: Result<(TcpStream, Vec<u8>), String>,
    peeked: &rtmp_peek::Peeked,
) -> Result<(TcpStream, rtmp_peek::Downstream, Vec<u8>), String> {
    let (mut node, rest) = prepared?;
    node.write_all(&peeked.recorded)
        .await
        .map_err(|e| format!("cannot replay to node: {e}"))?;
    let mut downstream =
        rtmp_peek::Downstream::new(peeked.chunk_size).map_err(|e| e.to_string())?;
    let first = downstream.on_node_bytes(&rest).map_err(|e| e.to_string())?;
    Ok((node, downstream, first))
}
