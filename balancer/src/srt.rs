//! SRT relay on udp/9000: the IO around [`crate::srt_relay`].
//!
//! The front socket answers inductions itself (stateless cookie), reads the stream ID from a
//! caller's conclusion, places the stream (affinity by the key's fingerprint), and gives the
//! session its own upstream UDP socket towards the node (libsrt drops packets whose source
//! changes), over which [`Upstream`] redoes the handshake and then relays. Every datagram from
//! callers passes `wire::srt_guard`; malformed and unknown control packets are dropped, never
//! passed to a node. Sessions end when both sides are silent for [`SESSION_IDLE_TIMEOUT`]; no
//! node state ever ends one.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::{net::UdpSocket, sync::mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    conns::Conns,
    metrics,
    place::Placer,
    srt_relay::{self, Cookies, Fresh, Step, Upstream, REJECT_BAD_REQUEST, REJECT_OVERLOAD},
};

/// Sessions at once (placing or relaying): bounds the sockets and tasks callers can cost us.
pub const MAX_SESSIONS: usize = 10_000;
/// Datagrams queued from the front to one session before we drop (as the network would).
const SESSION_QUEUE: usize = 4096;
/// A session with no datagram either way for this long is over. libsrt declares its peer dead
/// after 5 s without packets (keepalives flow every second even when idle).
const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshake retransmission clock for [`Upstream::on_timer`] (libsrt retries every 250 ms).
const TIMER_TICK: Duration = Duration::from_millis(50);
/// Receive buffer of the front socket: it carries every SRT stream the balancer relays.
const RECV_BUFFER: usize = 4 * 1024 * 1024;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serve SRT on `socket` until `stop_accepting` (new sessions) / the process ends (live ones).
pub async fn serve(
    socket: UdpSocket,
    placement: Arc<Placer>,
    conns: Arc<Conns>,
    stop_accepting: CancellationToken,
) {
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(RECV_BUFFER);
    let front = Arc::new(socket);
    let mut secret = [0u8; 32];
    for (i, b) in secret.iter_mut().enumerate() {
        // Not cryptographic randomness, but unpredictable enough per process for SYN cookies
        // (they only stop blind spoofing of handshakes).
        *b = (crate::place::random_u64() >> (i % 8 * 8)) as u8 ^ (i as u8).wrapping_mul(31);
    }
    let cookies = Cookies::new(secret);
    // Per caller: the queue to its session task, whether its relay is established, and the
    // caller's SRT socket ID (a restarted caller has a new one).
    let mut sessions: HashMap<SocketAddr, (mpsc::Sender<Bytes>, Arc<AtomicBool>, u32)> =
        HashMap::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = match front.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "srt recv error");
                continue;
            }
        };
        let pkt = &buf[..n];
        // Inductions always get the stateless answer: a retransmission while a session is
        // placing, or a caller restarting from the same address and port.
        let induction = is_induction(pkt);
        // A conclusion with a new caller socket ID to an established session means the caller
        // restarted: new session. The same ID is a retransmission (libsrt repeats its
        // conclusion until answered), which the session answers from its cache.
        let restart = |est: &AtomicBool, sid: u32| {
            est.load(Ordering::Acquire) && is_conclusion(pkt) && caller_socket_id(pkt) != Some(sid)
        };
        if let Some((tx, _, _)) = sessions
            .get(&peer)
            .filter(|(_, est, sid)| !induction && !restart(est, *sid))
        {
            if !tx.is_closed() {
                if tx.try_send(Bytes::copy_from_slice(pkt)).is_err() {
                    tracing::trace!(client.addr = %peer, "srt session queue full");
                }
                continue;
            }
            sessions.remove(&peer);
        }
        match srt_relay::on_fresh(pkt, peer, &cookies, now_secs()) {
            Fresh::Reply(r) => {
                let _ = front.send_to(&r, peer).await;
            }
            Fresh::Drop(reason) => {
                tracing::trace!(client.addr = %peer, reason, "srt datagram dropped");
            }
            Fresh::Place {
                stream_id,
                conclusion,
                caller_socket_id: caller,
            } => {
                if stop_accepting.is_cancelled() {
                    if let Some(r) = srt_relay::rejection(&conclusion, REJECT_OVERLOAD) {
                        let _ = front.send_to(&r, peer).await;
                    }
                    continue;
                }
                if sessions.len() >= MAX_SESSIONS {
                    sessions.retain(|_, (tx, _, _)| !tx.is_closed());
                    if sessions.len() >= MAX_SESSIONS {
                        metrics::CONNECTIONS_TOTAL
                            .with_label_values(&["srt", "too_many_sessions"])
                            .inc();
                        continue;
                    }
                }
                let (tx, rx) = mpsc::channel(SESSION_QUEUE);
                let established = Arc::new(AtomicBool::new(false));
                // Replacing an entry drops the old sender, which ends the old session.
                sessions.insert(peer, (tx, Arc::clone(&established), caller));
                let span = tracing::info_span!("srt", client.addr = %peer, node.id = tracing::field::Empty);
                tokio::spawn(
                    session(
                        Arc::clone(&front),
                        peer,
                        stream_id,
                        conclusion,
                        rx,
                        established,
                        Arc::clone(&placement),
                        Arc::clone(&conns),
                    )
                    .instrument(span),
                );
            }
        }
    }
}

/// The caller's SRT socket ID in a handshake (CIF offset 24).
fn caller_socket_id(pkt: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(pkt.get(40..44)?.try_into().ok()?))
}

/// Whether a datagram is a handshake conclusion (control type 0, handshake type -1).
fn is_conclusion(pkt: &[u8]) -> bool {
    pkt.len() >= 40 && pkt[0] == 0x80 && pkt[1] == 0 && pkt[36..40] == [0xFF; 4]
}

/// Whether a datagram is a handshake induction (control type 0, handshake type 1).
fn is_induction(pkt: &[u8]) -> bool {
    pkt.len() >= 40 && pkt[0] == 0x80 && pkt[1] == 0 && pkt[36..40] == [0, 0, 0, 1]
}

async fn reject(front: &UdpSocket, peer: SocketAddr, conclusion: &[u8], code: u32) {
    if let Some(r) = srt_relay::rejection(conclusion, code) {
        let _ = front.send_to(&r, peer).await;
    }
}

/// One caller: place it, handshake with the node from our own socket, relay.
#[allow(clippy::too_many_arguments)]
async fn session(
    front: Arc<UdpSocket>,
    peer: SocketAddr,
    stream_id: String,
    conclusion: Vec<u8>,
    mut rx: mpsc::Receiver<Bytes>,
    established: Arc<AtomicBool>,
    placement: Arc<Placer>,
    conns: Arc<Conns>,
) {
    metrics::CONNECTIONS
        .with_label_values(&["srt", "placing"])
        .inc();
    let placed = match wire::streamid::parse(&stream_id) {
        Ok(req) => {
            let sref = control::stream_ref(&req.key);
            placement
                .place(Some(&sref), &[])
                .await
                .map(|p| (p, req.key))
                .map_err(|e| (REJECT_OVERLOAD, e.to_string()))
        }
        Err(e) => Err((REJECT_BAD_REQUEST, e.to_string())),
    };
    metrics::CONNECTIONS
        .with_label_values(&["srt", "placing"])
        .dec();
    let (placed, key) = match placed {
        Ok(x) => x,
        Err((code, why)) => {
            tracing::info!(reason = %why, code, "srt caller refused");
            metrics::CONNECTIONS_TOTAL
                .with_label_values(&["srt", "refused"])
                .inc();
            reject(&front, peer, &conclusion, code).await;
            return;
        }
    };
    tracing::Span::current().record("node.id", placed.node_id.as_str());
    let bind: SocketAddr = if placed.srt_addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let upstream_sock = match UdpSocket::bind(bind).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot open an upstream socket");
            placement.cancel(&placed).await;
            reject(&front, peer, &conclusion, REJECT_OVERLOAD).await;
            return;
        }
    };
    if upstream_sock.connect(placed.srt_addr).await.is_err() {
        placement.cancel(&placed).await;
        reject(&front, peer, &conclusion, REJECT_OVERLOAD).await;
        return;
    }
    let node_sid = wire::streamid::for_node(&key, placed.reservation, peer);
    let (mut up, first) = Upstream::start(conclusion.clone(), Some(node_sid), Instant::now());
    let _ = upstream_sock.send(&first).await;
    let mut guard = None;
    let mut buf = vec![0u8; 65536];
    let mut last = Instant::now();
    let mut tick = tokio::time::interval(TIMER_TICK);
    loop {
        let steps = tokio::select! {
            p = rx.recv() => match p {
                Some(p) => {
                    last = Instant::now();
                    up.on_caller(&p, Instant::now())
                }
                None => break,
            },
            r = upstream_sock.recv(&mut buf) => match r {
                Ok(n) => {
                    last = Instant::now();
                    up.on_node(&buf[..n], Instant::now())
                }
                Err(_) => Vec::new(),
            },
            _ = tick.tick() => {
                if last.elapsed() > SESSION_IDLE_TIMEOUT {
                    break;
                }
                up.on_timer(Instant::now())
            }
        };
        let mut done = false;
        for step in steps {
            match step {
                Step::ToNode(b) => {
                    if guard.is_some() {
                        metrics::RELAYED_BYTES
                            .with_label_values(&["srt", "to_node"])
                            .inc_by(b.len() as u64);
                    }
                    let _ = upstream_sock.send(&b).await;
                }
                Step::ToCaller(b) => {
                    if guard.is_some() {
                        metrics::RELAYED_BYTES
                            .with_label_values(&["srt", "to_encoder"])
                            .inc_by(b.len() as u64);
                    }
                    let _ = front.send_to(&b, peer).await;
                }
                Step::Established => {
                    tracing::info!("srt relay started");
                    metrics::CONNECTIONS_TOTAL
                        .with_label_values(&["srt", "relayed"])
                        .inc();
                    metrics::CONNECTIONS
                        .with_label_values(&["srt", "relaying"])
                        .inc();
                    guard = Some(conns.open("srt", peer, &placed.node_id));
                    established.store(true, Ordering::Release);
                }
                Step::Rejected(code) => {
                    tracing::info!(code, "node rejected the srt caller");
                    metrics::CONNECTIONS_TOTAL
                        .with_label_values(&["srt", "refused_by_node"])
                        .inc();
                    reject(&front, peer, &conclusion, code).await;
                    done = true;
                }
                Step::Nothing => {}
            }
        }
        if done {
            break;
        }
    }
    if guard.is_some() {
        metrics::CONNECTIONS
            .with_label_values(&["srt", "relaying"])
            .dec();
        tracing::info!("srt relay ended");
    } else {
        placement.cancel(&placed).await;
    }
}
