//! SRT relay on udp/9000: the tokio driver around [`crate::srt_route`] and
//! [`crate::srt_relay`].
//!
//! The front socket's datagrams go through a [`Router`] (induction answers with a stateless
//! cookie, routing to live sessions, new sessions from a caller's conclusion). A new session is
//! placed (affinity by the key's fingerprint) and gets its own upstream UDP socket towards the
//! node (libsrt drops packets whose source changes), over which its [`Session`] redoes the
//! handshake and then relays. Every datagram from callers passes `wire::srt_guard`; malformed
//! and unknown control packets are dropped, never passed to a node. Sessions end when both
//! sides are silent for [`crate::srt_route::SESSION_IDLE_TIMEOUT`]; no node state ever ends one.
//!
//! Entry point: [`serve`]. Everything decided here is in the two cores; this file moves bytes
//! between sockets, tasks and them, and counts.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use tokio::{net::UdpSocket, sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    conns::Conns,
    metrics,
    place::{PlaceError, Placer},
    srt_relay::{
        self, Step, REJECT_BAD_REQUEST, REJECT_DOWN, REJECT_FORBIDDEN, REJECT_OVERLOAD,
        REJECT_UNAUTHORIZED,
    },
    srt_route::{NewSession, Refusal, Routed, Router, Session, SessionId, Tick},
};

/// Sessions at once (placing or relaying): bounds the sockets and tasks callers can cost us.
pub const MAX_SESSIONS: usize = 10_000;
/// Datagrams queued from the front to one session before we drop (as the network would).
const SESSION_QUEUE: usize = 4096;
/// Receive buffer of the front socket: it carries every SRT stream the balancer relays.
const RECV_BUFFER: usize = 4 * 1024 * 1024;

/// What a session task tells the front loop.
#[derive(Debug, Clone, Copy)]
enum Notice {
    Established(SessionId),
    Closed(SessionId),
}

/// Sends [`Notice::Closed`] when a session task ends, however it ends.
struct ClosedOnDrop {
    id: SessionId,
    notices: mpsc::UnboundedSender<Notice>,
}

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        let _ = self.notices.send(Notice::Closed(self.id));
    }
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
    let mut router = Router::new(secret, MAX_SESSIONS, Instant::now());
    // The queue to each live session's task.
    let mut sessions: HashMap<SessionId, mpsc::Sender<Bytes>> = HashMap::new();
    let (notices_tx, mut notices) = mpsc::unbounded_channel();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = tokio::select! {
            // Notices first: a session's "established" must be known before its caller's
            // next conclusion is routed.
            biased;
            Some(notice) = notices.recv() => {
                match notice {
                    Notice::Established(id) => router.handle_established(id),
                    Notice::Closed(id) => {
                        router.handle_closed(id);
                        sessions.remove(&id);
                    }
                }
                continue;
            }
            r = front.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "srt recv error");
                    continue;
                }
            },
        };
        if stop_accepting.is_cancelled() {
            router.stop_accepting();
        }
        let pkt = buf.get(..n).unwrap_or_default();
        let mut routed = router.handle_datagram(Instant::now(), peer, pkt);
        if let Routed::ToSession(id) = routed {
            match sessions.get(&id) {
                Some(tx) if !tx.is_closed() => {
                    if tx.try_send(Bytes::copy_from_slice(pkt)).is_err() {
                        tracing::trace!(client.addr = %peer, "srt session queue full");
                    }
                    continue;
                }
                // Its task ended and the notice is still on its way: route afresh.
                _ => {
                    sessions.remove(&id);
                    router.handle_closed(id);
                    routed = router.handle_datagram(Instant::now(), peer, pkt);
                }
            }
        }
        match routed {
            Routed::Reply(r) => {
                let _ = front.send_to(&r, peer).await;
            }
            Routed::ToSession(_) => {}
            Routed::Drop(reason) => {
                tracing::trace!(client.addr = %peer, reason, "srt datagram dropped");
            }
            Routed::Refuse { reply, why } => {
                if why == Refusal::TooManySessions {
                    metrics::CONNECTIONS_TOTAL
                        .with_label_values(&["srt", "too_many_sessions"])
                        .inc();
                }
                if let Some(r) = reply {
                    let _ = front.send_to(&r, peer).await;
                }
            }
            Routed::Place(new) => {
                if let Some(old) = new.replaces {
                    // Dropping its queue ends the old session.
                    sessions.remove(&old);
                }
                let (tx, rx) = mpsc::channel(SESSION_QUEUE);
                sessions.insert(new.id, tx);
                let span = tracing::info_span!("srt", client.addr = %peer, node.id = tracing::field::Empty);
                let closed = ClosedOnDrop {
                    id: new.id,
                    notices: notices_tx.clone(),
                };
                tokio::spawn(
                    session(
                        Arc::clone(&front),
                        peer,
                        new,
                        rx,
                        closed,
                        Arc::clone(&placement),
                        Arc::clone(&conns),
                    )
                    .instrument(span),
                );
            }
        }
    }
}

async fn reject(front: &UdpSocket, peer: SocketAddr, conclusion: &[u8], code: u32) {
    if let Some(r) = srt_relay::rejection(conclusion, code) {
        let _ = front.send_to(&r, peer).await;
    }
}

/// One caller: place it, handshake with the node from our own socket, relay.
async fn session(
    front: Arc<UdpSocket>,
    peer: SocketAddr,
    new: NewSession,
    mut rx: mpsc::Receiver<Bytes>,
    closed: ClosedOnDrop,
    placement: Arc<Placer>,
    conns: Arc<Conns>,
) {
    let NewSession {
        id,
        stream_id,
        conclusion,
        ..
    } = new;
    metrics::CONNECTIONS
        .with_label_values(&["srt", "placing"])
        .inc();
    let placed = match wire::streamid::parse(&stream_id) {
        Ok(req) => {
            let sref = control::stream_ref(&req.key);
            let credentials = control::Credentials {
                key: req.key.clone(),
                client_addr: peer,
                protocol: "srt".into(),
            };
            placement
                .place(Some(&sref), &[], Some(credentials))
                .await
                .map(|p| (p, req.key))
                .map_err(|e| {
                    let code = match e {
                        PlaceError::KeyRefused => REJECT_UNAUTHORIZED,
                        PlaceError::AuthUnavailable(_) => REJECT_DOWN,
                        PlaceError::Limited(_) => REJECT_FORBIDDEN,
                        PlaceError::NoCapacity(_) => REJECT_OVERLOAD,
                    };
                    (code, e.to_string())
                })
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
    let (mut core, first) = Session::start(conclusion, Some(node_sid), Instant::now());
    let _ = upstream_sock.send(&first).await;
    let mut guard = None;
    let mut buf = vec![0u8; 65536];
    loop {
        let steps = tokio::select! {
            p = rx.recv() => match p {
                Some(p) => core.handle_caller(&p, Instant::now()),
                None => break,
            },
            r = upstream_sock.recv(&mut buf) => match r {
                Ok(n) => core.handle_node(buf.get(..n).unwrap_or_default(), Instant::now()),
                Err(_) => Vec::new(),
            },
            _ = tokio::time::sleep_until(core.poll_timeout()) => match core.handle_timeout(Instant::now()) {
                Tick::Steps(steps) => steps,
                Tick::Idle => break,
            },
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
                    let _ = closed.notices.send(Notice::Established(id));
                }
                Step::Rejected(code) => {
                    tracing::info!(code, "node rejected the srt caller");
                    metrics::CONNECTIONS_TOTAL
                        .with_label_values(&["srt", "refused_by_node"])
                        .inc();
                    reject(&front, peer, core.conclusion(), code).await;
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
