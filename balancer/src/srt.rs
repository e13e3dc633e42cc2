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
use tracing::Instrument;

use serde::{Deserialize, Serialize};

use crate::{
    conns::Conns,
    metrics,
    place::{PlaceError, Placer},
    srt_relay::{
        self, Step, REJECT_BAD_REQUEST, REJECT_DOWN, REJECT_FORBIDDEN, REJECT_OVERLOAD,
        REJECT_UNAUTHORIZED,
    },
    srt_route::{
        NewSession, Notice, Refusal, Routed, Router, Session, SessionId, SessionLink, Tick,
    },
};

/// Sessions at once (placing or relaying): bounds the sockets and tasks callers can cost us.
pub const MAX_SESSIONS: usize = 10_000;
/// Datagrams queued from the front to one session before we drop (as the network would).
const SESSION_QUEUE: usize = 4096;
/// Receive buffer of the front socket: it carries every SRT stream the balancer relays.
const RECV_BUFFER: usize = 4 * 1024 * 1024;

/// What the SRT front shares with the rest of the balancer.
pub struct Front {
    pub placement: Arc<Placer>,
    pub conns: Arc<Conns>,
    /// Quiesces the front loop and its sessions (see [`crate::rtmp_relay::Relays`]).
    pub relays: Arc<crate::rtmp_relay::Relays>,
    /// Where quiesced sessions go (the hand-over collects them).
    pub quiesced: mpsc::UnboundedSender<Quiesced>,
}

/// An established SRT session, as it moves to another process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionState {
    pub peer: SocketAddr,
    pub node_id: String,
    pub reservation: u64,
    pub started_unix_ms: u64,
    pub bytes_to_node: u64,
    pub bytes_to_encoder: u64,
    pub relay: srt_relay::Exported,
}

/// A session at rest: its state and its upstream socket towards the node.
pub struct Quiesced {
    pub state: SessionState,
    pub upstream: UdpSocket,
}

/// The front's own state, to continue it elsewhere: the cookie secret and clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrontState {
    pub secret: [u8; 32],
    pub cookie_secs: u64,
}

/// A fresh cookie secret, from the kernel's random source.
pub fn new_secret() -> [u8; 32] {
    server::random_secret().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no kernel randomness for the srt cookie secret");
        server::fallback_secret()
    })
}

/// Prepare the front socket (a large receive buffer: it carries every SRT stream).
pub fn tune(socket: &UdpSocket) {
    let _ = socket2::SockRef::from(socket).set_recv_buffer_size(RECV_BUFFER);
}

/// Serve SRT on `front_sock`: answer inductions, route datagrams, place new sessions, run the
/// `adopt`ed ones (resumed or handed over). Retired `gate`: new conclusions are refused, live
/// sessions go on. Returns the front's state when quiesced (its sessions go to
/// `front.quiesced`); otherwise runs as long as the process.
pub async fn serve(
    front_sock: Arc<UdpSocket>,
    state: FrontState,
    adopt: Vec<Quiesced>,
    front: Arc<Front>,
    mut gate: server::Gate,
) -> FrontState {
    let quiesce = front.relays.token();
    let mut router = Router::resume(
        state.secret,
        MAX_SESSIONS,
        Instant::now(),
        state.cookie_secs,
    );
    // The queue to each live session's task.
    let mut sessions: HashMap<SessionId, mpsc::Sender<Bytes>> = HashMap::new();
    let (notices_tx, mut notices) = mpsc::unbounded_channel();
    for q in adopt {
        let id = router.adopt(q.state.peer, q.state.relay.caller_socket_id);
        let span =
            tracing::info_span!("srt", client.addr = %q.state.peer, node.id = %q.state.node_id);
        let task = new_task(id, &mut sessions, &notices_tx, &quiesce, &front);
        tokio::spawn(
            resumed(Arc::clone(&front_sock), q, Arc::clone(&front), task).instrument(span),
        );
    }
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = tokio::select! {
            // Notices first: a session's "established" must be known before its caller's
            // next conclusion is routed.
            biased;
            _ = quiesce.cancelled() => {
                // Datagrams not read stay in the socket for whoever reads it next.
                return FrontState {
                    secret: router.secret(),
                    cookie_secs: router.cookie_clock(Instant::now()),
                };
            }
            Some(notice) = notices.recv() => {
                if let Some(id) = router.handle_notice(notice) {
                    sessions.remove(&id);
                }
                continue;
            }
            _ = gate.retired(), if !gate.is_retired() => {
                router.stop_accepting();
                continue;
            }
            r = front_sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "srt recv error");
                    continue;
                }
            },
        };
        if gate.is_retired() {
            router.stop_accepting();
        }
        let pkt = buf.get(..n).unwrap_or_default();
        let routed = router.route(Instant::now(), peer, pkt, |id| {
            let Some(tx) = sessions.get(&id).filter(|tx| !tx.is_closed()) else {
                sessions.remove(&id);
                return false;
            };
            if tx.try_send(Bytes::copy_from_slice(pkt)).is_err() {
                tracing::trace!(client.addr = %peer, "srt session queue full");
            }
            true
        });
        let Some(routed) = routed else { continue };
        match routed {
            Routed::Reply(r) => {
                let _ = front_sock.send_to(&r, peer).await;
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
                    let _ = front_sock.send_to(&r, peer).await;
                }
            }
            Routed::Place(new) => {
                if new.replaces.is_none()
                    && front
                        .relays
                        .srt_paused
                        .load(std::sync::atomic::Ordering::Acquire)
                {
                    // A hand-over is under way: no new session here; the caller retransmits
                    // its conclusion and the successor places it.
                    router.handle_closed(new.id);
                    continue;
                }
                if let Some(old) = new.replaces {
                    // Dropping its queue ends the old session.
                    sessions.remove(&old);
                }
                let span = tracing::info_span!("srt", client.addr = %peer, node.id = tracing::field::Empty);
                let mut task = new_task(new.id, &mut sessions, &notices_tx, &quiesce, &front);
                task.opening = Some(front.relays.opening());
                tokio::spawn(
                    session(Arc::clone(&front_sock), peer, new, Arc::clone(&front), task)
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
/// What every session task holds besides its session: the queue from the front loop, the
/// notice of its end, the quiesce switch, and its count in the live tasks.
struct Task {
    rx: mpsc::Receiver<Bytes>,
    closed: SessionLink,
    quiesce: tokio_util::sync::CancellationToken,
    _live: crate::rtmp_relay::LiveGuard,
    /// A new caller counts as opening until its session is established (a hand-over waits).
    opening: Option<crate::rtmp_relay::OpeningGuard>,
}

/// The queue, end notice and live count of a new session task `id`, its queue registered in
/// `sessions`.
fn new_task(
    id: SessionId,
    sessions: &mut HashMap<SessionId, mpsc::Sender<Bytes>>,
    notices: &mpsc::UnboundedSender<Notice>,
    quiesce: &tokio_util::sync::CancellationToken,
    front: &Front,
) -> Task {
    let (tx, rx) = mpsc::channel(SESSION_QUEUE);
    sessions.insert(id, tx);
    Task {
        rx,
        closed: SessionLink::new(id, notices.clone()),
        quiesce: quiesce.clone(),
        _live: front.relays.enter(),
        opening: None,
    }
}

async fn session(
    front_sock: Arc<UdpSocket>,
    peer: SocketAddr,
    new: NewSession,
    front: Arc<Front>,
    task: Task,
) {
    let Task {
        rx,
        closed,
        quiesce,
        _live,
        opening,
    } = task;
    let placement = &front.placement;
    let NewSession {
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
                        PlaceError::Limited(_) | PlaceError::Blocked(_) => REJECT_FORBIDDEN,
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
            reject(&front_sock, peer, &conclusion, code).await;
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
            reject(&front_sock, peer, &conclusion, REJECT_OVERLOAD).await;
            return;
        }
    };
    if upstream_sock.connect(placed.srt_addr).await.is_err() {
        placement.cancel(&placed).await;
        reject(&front_sock, peer, &conclusion, REJECT_OVERLOAD).await;
        return;
    }
    let node_sid = wire::streamid::for_node(&key, placed.reservation, peer);
    let (core, first) = Session::start(conclusion, Some(node_sid), Instant::now());
    let _ = upstream_sock.send(&first).await;
    let live = Live {
        peer,
        node_id: placed.node_id.clone(),
        reservation: placed.reservation,
        core,
        upstream: upstream_sock,
        conns: Arc::clone(&front.conns),
        guard: None,
        opening,
        to_node: metrics::relayed("srt", "to_node"),
        to_encoder: metrics::relayed("srt", "to_encoder"),
    };
    if !drive(&front_sock, live, rx, &closed, &front, quiesce).await {
        placement.cancel(&placed).await;
    }
}

/// A session handed over (or resumed after a quiesce): relay on from its state.
async fn resumed(front_sock: Arc<UdpSocket>, q: Quiesced, front: Arc<Front>, task: Task) {
    let Task {
        rx,
        closed,
        quiesce,
        _live,
        ..
    } = task;
    let st = q.state;
    metrics::CONNECTIONS
        .with_label_values(&["srt", "relaying"])
        .inc();
    let guard = front.conns.adopt(
        "srt",
        st.peer,
        &st.node_id,
        st.started_unix_ms,
        st.bytes_to_node,
        st.bytes_to_encoder,
    );
    let live = Live {
        peer: st.peer,
        node_id: st.node_id,
        reservation: st.reservation,
        core: Session::resume(st.relay, Instant::now()),
        upstream: q.upstream,
        conns: Arc::clone(&front.conns),
        guard: Some(guard),
        opening: None,
        to_node: metrics::relayed("srt", "to_node"),
        to_encoder: metrics::relayed("srt", "to_encoder"),
    };
    closed.established();
    drive(&front_sock, live, rx, &closed, &front, quiesce).await;
}

/// A session being relayed (or still handshaking with its node).
struct Live {
    peer: SocketAddr,
    node_id: String,
    reservation: u64,
    core: Session,
    upstream: UdpSocket,
    conns: Arc<Conns>,
    /// Set once established: the connection table's entry.
    guard: Option<crate::conns::ConnGuard>,
    /// Held while handshaking with the node (a hand-over waits for it).
    opening: Option<crate::rtmp_relay::OpeningGuard>,
    /// The relayed-bytes counters, fetched once (counted per datagram).
    to_node: prometheus::IntCounter,
    to_encoder: prometheus::IntCounter,
}

/// Relay until the session ends or is quiesced. `true` when it got established (its
/// placement was used, or it moved on quiesced).
async fn drive(
    front_sock: &UdpSocket,
    mut live: Live,
    mut rx: mpsc::Receiver<Bytes>,
    closed: &SessionLink,
    front: &Front,
    quiesce: tokio_util::sync::CancellationToken,
) -> bool {
    let mut buf = vec![0u8; 65536];
    loop {
        let steps = tokio::select! {
            biased;
            _ = quiesce.cancelled() => {
                // The front loop stopped reading; what it queued for us goes to the node
                // first, so nothing read from the caller is lost.
                while let Ok(p) = rx.try_recv() {
                    let steps = live.core.handle_caller(&p, Instant::now());
                    perform(front_sock, &mut live, steps, closed).await;
                }
                return quiesced(live, front);
            }
            p = rx.recv() => match p {
                Some(p) => live.core.handle_caller(&p, Instant::now()),
                None => break,
            },
            r = live.upstream.recv(&mut buf) => match r {
                Ok(n) => live.core.handle_node(buf.get(..n).unwrap_or_default(), Instant::now()),
                Err(_) => Vec::new(),
            },
            _ = tokio::time::sleep_until(live.core.poll_timeout()) => match live.core.handle_timeout(Instant::now()) {
                Tick::Steps(steps) => steps,
                Tick::Idle => break,
            },
        };
        if perform(front_sock, &mut live, steps, closed).await {
            break;
        }
    }
    let established = live.guard.is_some();
    if established {
        metrics::CONNECTIONS
            .with_label_values(&["srt", "relaying"])
            .dec();
        tracing::info!("srt relay ended");
    }
    established
}

/// Do what the core asked; `true` when the session is over.
async fn perform(
    front_sock: &UdpSocket,
    live: &mut Live,
    steps: Vec<Step>,
    closed: &SessionLink,
) -> bool {
    let mut done = false;
    for step in steps {
        match step {
            Step::ToNode(b) => {
                if let Some(g) = &live.guard {
                    g.conn
                        .bytes_to_node
                        .fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    live.to_node.inc_by(b.len() as u64);
                }
                let _ = live.upstream.send(&b).await;
            }
            Step::ToCaller(b) => {
                if let Some(g) = &live.guard {
                    g.conn
                        .bytes_to_encoder
                        .fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    live.to_encoder.inc_by(b.len() as u64);
                }
                let _ = front_sock.send_to(&b, live.peer).await;
            }
            Step::Established => {
                tracing::info!("srt relay started");
                metrics::CONNECTIONS_TOTAL
                    .with_label_values(&["srt", "relayed"])
                    .inc();
                metrics::CONNECTIONS
                    .with_label_values(&["srt", "relaying"])
                    .inc();
                live.guard = Some(live.conns.open("srt", live.peer, &live.node_id));
                live.opening = None;
                closed.established();
            }
            Step::Rejected(code) => {
                tracing::info!(code, "node rejected the srt caller");
                metrics::CONNECTIONS_TOTAL
                    .with_label_values(&["srt", "refused_by_node"])
                    .inc();
                reject(front_sock, live.peer, live.core.conclusion(), code).await;
                done = true;
            }
            Step::Nothing => {}
        }
    }
    done
}

/// Hand a quiesced session to the collector; `true` when it was established (it moves on),
/// `false` when it was still handshaking (its caller retransmits and is placed afresh).
fn quiesced(live: Live, front: &Front) -> bool {
    let (Some(relay), Some(guard)) = (live.core.export(), live.guard.as_ref()) else {
        return false;
    };
    metrics::CONNECTIONS
        .with_label_values(&["srt", "relaying"])
        .dec();
    let c = &guard.conn;
    let state = SessionState {
        peer: live.peer,
        node_id: live.node_id.clone(),
        reservation: live.reservation,
        started_unix_ms: c.started_unix_ms,
        bytes_to_node: c.bytes_to_node.load(std::sync::atomic::Ordering::Relaxed),
        bytes_to_encoder: c
            .bytes_to_encoder
            .load(std::sync::atomic::Ordering::Relaxed),
        relay,
    };
    if front
        .quiesced
        .send(Quiesced {
            state,
            upstream: live.upstream,
        })
        .is_err()
    {
        tracing::warn!("quiesced srt session not collected");
    }
    true
}
