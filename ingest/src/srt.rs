//! SRT ingest on udp/9000, with srt-tokio kept behind our own front so no peer can crash the
//! node or take another peer's session.
//!
//! ```text
//! peer ⇄ front socket :9000 ── srt_route::Router (cookies, routing) ── per-session socket ⇄ private srt-tokio listener (127.0.0.1:0)
//! ```
//! The front socket is ours and runs the same routing core as the balancer
//! ([`wire::srt_route`]): an induction is answered from the front with a stateless SYN cookie
//! and opens nothing; only a conclusion carrying a valid cookie (so its sender really receives
//! at its address) opens a session, and a live session ends only by its own peer, its idle
//! timeout, or a cookie-checked conclusion with a new socket ID from the same address (the
//! caller restarted). A spoofed induction or conclusion from a live encoder's address changes
//! nothing, and spoofed inductions cannot fill the session table.
//!
//! Each session then redoes the handshake as a caller with its own private srt-tokio listener
//! on loopback ([`wire::srt_route::Session`]), from its own socket, and relays datagrams both
//! ways unchanged. Every datagram from a peer passes [`wire::srt_guard::inspect`] (packets that
//! reach srt-tokio's `todo!`/`unimplemented!` paths are dropped or cleaned), and a panic we did
//! not foresee inside srt-tokio ends that peer's session only.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use srt_protocol::{
    access::{RejectReason, ServerRejectReason},
    options::KeySize,
    packet::CoreRejectReason,
    settings::KeySettings,
};
use srt_tokio::{ConnectionRequest, SrtListener};
use tokio::{net::UdpSocket, sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use wire::{
    srt_relay::{self, Step},
    srt_route::{NewSession, Refusal, Routed, Router, Session, SessionId, SessionLink, Tick},
    streamid,
};

use crate::{
    metrics,
    node::{AdmitError, Node, Protocol},
    pipeline::{InputFormat, PipelineError},
};

/// Sessions at once, established or handshaking. Only a caller that proved it receives at
/// its address (a valid cookie) gets one, so this bounds real callers: two loopback sockets,
/// an srt-tokio listener and a task each.
pub const MAX_SESSIONS: usize = 1024;
/// Datagrams queued from the front socket to one session; beyond this we drop, as the
/// network would (SRT retransmits).
const SESSION_QUEUE: usize = 4096;
/// How long srt-tokio may take to flush its shutdown to the peer once the stream ended.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(100);

/// A fresh cookie secret from the kernel's random source (a weaker per-process value if that
/// cannot be read: cookies only stop blind spoofing).
fn cookie_secret() -> [u8; 32] {
    server::random_secret().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "no kernel randomness for the srt cookie secret");
        server::fallback_secret()
    })
}

/// Run the SRT front on `socket` until `shutdown`.
pub async fn serve(node: Arc<Node>, socket: UdpSocket, shutdown: CancellationToken) {
    let front = Arc::new(socket);
    let mut router = Router::new(cookie_secret(), MAX_SESSIONS, Instant::now());
    let mut sessions: HashMap<SessionId, mpsc::Sender<Bytes>> = HashMap::new();
    let (notices_tx, mut notices) = mpsc::unbounded_channel();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = tokio::select! {
            // Notices first: a session's "established" must be known before its caller's next
            // conclusion is routed.
            biased;
            _ = shutdown.cancelled() => break,
            Some(notice) = notices.recv() => {
                if let Some(id) = router.handle_notice(notice) {
                    sessions.remove(&id);
                }
                continue;
            }
            r = front.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP port unreachable and friends surface here on some systems.
                    tracing::debug!(error = %e, "srt front recv error");
                    continue;
                }
            },
        };
        let pkt = buf.get(..n).unwrap_or_default();
        let routed = router.route(Instant::now(), peer, pkt, |id| {
            let Some(tx) = sessions.get(&id).filter(|tx| !tx.is_closed()) else {
                sessions.remove(&id);
                return false;
            };
            if tx.try_send(Bytes::copy_from_slice(pkt)).is_err() {
                metrics::SRT_DROPPED
                    .with_label_values(&["session_queue_full"])
                    .inc();
            }
            true
        });
        let Some(routed) = routed else { continue };
        match routed {
            Routed::Reply(r) => {
                let _ = front.send_to(&r, peer).await;
            }
            Routed::ToSession(_) => {}
            Routed::Drop(reason) => {
                metrics::SRT_DROPPED.with_label_values(&[reason]).inc();
                tracing::trace!(client.addr = %peer, reason, "srt datagram dropped");
            }
            Routed::Refuse { reply, why } => {
                if why == Refusal::TooManySessions {
                    metrics::SRT_DROPPED
                        .with_label_values(&["too_many_sessions"])
                        .inc();
                }
                if let Some(r) = reply {
                    let _ = front.send_to(&r, peer).await;
                }
            }
            Routed::Place(new) => {
                if let Some(old) = new.replaces {
                    // The caller restarted (a cookie-checked conclusion with a new socket ID):
                    // dropping its queue ends the old session.
                    sessions.remove(&old);
                }
                let (tx, rx) = mpsc::channel(SESSION_QUEUE);
                sessions.insert(new.id, tx);
                let closed = SessionLink::new(new.id, notices_tx.clone());
                let span = tracing::info_span!("srt", client.addr = %peer);
                tracing::debug!(client.addr = %peer, sessions = router.sessions(), "srt session opened");
                tokio::spawn(
                    run_session(Arc::clone(&node), Arc::clone(&front), peer, new, rx, closed)
                        .instrument(span),
                );
            }
        }
    }
}

/// One caller with a cookie-checked conclusion: its private srt-tokio listener, the handshake
/// with it from our own socket, the relay, and its stream.
async fn run_session(
    node: Arc<Node>,
    front: Arc<UdpSocket>,
    peer: SocketAddr,
    new: NewSession,
    mut rx: mpsc::Receiver<Bytes>,
    closed: SessionLink,
) {
    let setup = async {
        let inner = UdpSocket::bind("127.0.0.1:0").await?;
        let inner_addr = inner.local_addr()?;
        let (listener, incoming) = SrtListener::builder()
            .latency(node.config.srt.latency)
            .socket(inner)
            .bind(inner_addr)
            .await?;
        let relay = UdpSocket::bind("127.0.0.1:0").await?;
        relay.connect(inner_addr).await?;
        Ok::<_, std::io::Error>((listener, incoming, relay))
    };
    let (_listener, mut incoming, relay) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "cannot open srt session");
            if let Some(r) = srt_relay::rejection(&new.conclusion, srt_relay::REJECT_OVERLOAD) {
                let _ = front.send_to(&r, peer).await;
            }
            return;
        }
    };
    // The caller's own stream ID goes to srt-tokio unchanged; it decides on it (key,
    // admission) in `handle_request`.
    let (mut core, first) = Session::start(new.conclusion, None, Instant::now());
    let _ = relay.send(&first).await;
    let mut buf = vec![0u8; 65536];
    let mut stream: Option<tokio::task::JoinHandle<()>> = None;
    let mut pending: Option<tokio::task::JoinHandle<Option<tokio::task::JoinHandle<()>>>> = None;
    loop {
        let steps = tokio::select! {
            pkt = rx.recv() => match pkt {
                Some(p) => core.handle_caller(&p, Instant::now()),
                // Replaced by a restarted caller, or the front stopped.
                None => break,
            },
            r = relay.recv(&mut buf) => match r {
                Ok(n) => core.handle_node(buf.get(..n).unwrap_or_default(), Instant::now()),
                Err(e) => {
                    tracing::debug!(error = %e, "srt relay recv error");
                    continue;
                }
            },
            _ = tokio::time::sleep_until(core.poll_timeout()) => match core.handle_timeout(Instant::now()) {
                Tick::Steps(steps) => steps,
                Tick::Idle => {
                    tracing::debug!("srt session idle: closed");
                    break;
                }
            },
            req = incoming.incoming().next(), if pending.is_none() && stream.is_none() => match req {
                Some(req) => {
                    let node = Arc::clone(&node);
                    pending = Some(tokio::spawn(handle_request(node, req, peer).in_current_span()));
                    continue;
                }
                // srt-tokio's listener task ended (it panicked or closed): this session is over.
                None => break,
            },
            done = join_opt(&mut pending), if pending.is_some() => {
                pending = None;
                // None: rejected. The rejection reaches the peer through the relay; the
                // session then ends with the handshake (`Step::Rejected`) or goes idle.
                if let Some(Some(task)) = done {
                    stream = Some(task);
                }
                continue;
            },
            _ = join_opt(&mut stream), if stream.is_some() => {
                // The stream ended; flush srt-tokio's shutdown to the peer and close.
                if let Ok(Ok(n)) = tokio::time::timeout(SHUTDOWN_FLUSH, relay.recv(&mut buf)).await {
                    let _ = front.send_to(buf.get(..n).unwrap_or_default(), peer).await;
                }
                break;
            },
        };
        let mut over = false;
        for step in steps {
            match step {
                Step::ToNode(b) => {
                    let _ = relay.send(&b).await;
                }
                Step::ToCaller(b) => {
                    let _ = front.send_to(&b, peer).await;
                }
                Step::Established => {
                    closed.established();
                }
                Step::Rejected(code) => {
                    // srt-tokio refused with `code` (see `handle_request`), never answered, or
                    // the conclusion was unusable: tell the caller, with the code libsrt shows.
                    if let Some(r) = srt_relay::rejection(core.conclusion(), code) {
                        let _ = front.send_to(&r, peer).await;
                    }
                    over = true;
                }
                Step::Nothing => {}
            }
        }
        if over {
            break;
        }
    }
    // A decision still under way (a slow webhook) finishes on its own: it holds nothing once
    // refused, and a stream it would start has no peer left and ends at srt-tokio's timeout.
    drop(pending);
    drop(closed);
}

/// Refuse a caller with a rejection code libsrt shows to its user.
async fn reject(
    req: ConnectionRequest,
    reason: RejectReason,
    label: &'static str,
    why: String,
) -> Option<tokio::task::JoinHandle<()>> {
    metrics::CONNECTIONS_TOTAL
        .with_label_values(&["srt", label])
        .inc();
    tracing::info!(reason = %why, code = ?reason, "srt publisher rejected");
    let _ = req.reject(reason).await;
    None
}

/// A refused caller holds no capacity: give its balancer's reservation back at once.
fn release(node: &Node, reservation: Option<u64>) {
    if let Some(id) = reservation {
        node.cancel_reservation(id);
    }
}

/// Await an optional task; pending forever when there is none (for `select!`).
async fn join_opt<T>(task: &mut Option<tokio::task::JoinHandle<T>>) -> Option<T> {
    match task {
        Some(t) => t.await.ok(),
        None => std::future::pending().await,
    }
}

/// Decide on a caller: parse its stream ID, check the key, admit, accept; then run the stream
/// in its own task and return it. `None` when the caller was rejected.
async fn handle_request(
    node: Arc<Node>,
    req: ConnectionRequest,
    peer: SocketAddr,
) -> Option<tokio::task::JoinHandle<()>> {
    let sid = req.stream_id().map(|s| s.to_string()).unwrap_or_default();
    let key = match streamid::parse(&sid) {
        Ok(r) => r,
        Err(e) => {
            let reason = match e {
                streamid::StreamIdError::NotPublish(_) => ServerRejectReason::BadMode,
                streamid::StreamIdError::UnknownApp(_) => ServerRejectReason::Notfound,
                _ => ServerRejectReason::BadRequest,
            };
            return reject(
                req,
                RejectReason::Server(reason),
                "bad_stream_id",
                e.to_string(),
            )
            .await;
        }
    };
    // Only our balancers may say which reservation this is and who the encoder really is.
    let (reservation, client) = if node.trusts(peer.ip()) {
        (key.reservation, key.client.unwrap_or(peer))
    } else {
        (None, peer)
    };
    let key = key.key;
    let grant = match node
        .authenticate_for(&key, client, Protocol::Srt, reservation)
        .await
    {
        Ok(g) => g,
        Err(e) => {
            let label = AdmitError::Auth(e.clone()).label();
            // A wrong key, the auth backend down, and a limited address are three different
            // answers for the caller (libsrt shows the code).
            let code = match e {
                crate::auth::AuthError::Refused => ServerRejectReason::Unauthorized,
                crate::auth::AuthError::WebhookUnavailable(_) => ServerRejectReason::Down,
                crate::auth::AuthError::Limited(_) | crate::auth::AuthError::Blocked(_) => {
                    ServerRejectReason::Forbidden
                }
            };
            return reject(req, RejectReason::Server(code), label, e.to_string()).await;
        }
    };
    // srt-tokio panics when the caller's encryption does not match ours; decide it here.
    let caller_encrypts = req.key_size() != KeySize::Unspecified;
    let key_settings = match (&grant.srt_passphrase, caller_encrypts) {
        (None, true) => {
            release(&node, reservation);
            return reject(
                req,
                RejectReason::Core(CoreRejectReason::Unsecure),
                "bad_passphrase",
                "caller encrypts but this stream has no passphrase".into(),
            )
            .await;
        }
        (None, false) => None,
        (Some(p), _) => match srt_protocol::options::Passphrase::try_from(p.clone()) {
            Ok(passphrase) => Some(KeySettings {
                key_size: if caller_encrypts {
                    req.key_size()
                } else {
                    KeySize::AES128
                },
                passphrase,
            }),
            Err(_) => {
                release(&node, reservation);
                return reject(
                    req,
                    RejectReason::Server(ServerRejectReason::InternalServerError),
                    "error",
                    "configured passphrase invalid".into(),
                )
                .await;
            }
        },
    };
    let playback_id = grant.playback_id.clone();
    let admission = match node
        .admit_grant(grant, &key, client, Protocol::Srt, reservation)
        .await
    {
        Ok(a) => a,
        Err(e) => {
            let reason = match e {
                AdmitError::Full(_) => ServerRejectReason::Overload,
                AdmitError::Busy => ServerRejectReason::Conflict,
                AdmitError::Auth(_) => ServerRejectReason::Unauthorized,
            };
            return reject(req, RejectReason::Server(reason), e.label(), e.to_string()).await;
        }
    };
    let mut socket = match req.accept(key_settings).await {
        Ok(s) => s,
        Err(e) => {
            metrics::CONNECTIONS_TOTAL
                .with_label_values(&["srt", "handshake_failed"])
                .inc();
            tracing::info!(stream.id = %playback_id, error = %e, "srt handshake failed");
            return None;
        }
    };
    metrics::CONNECTIONS_TOTAL
        .with_label_values(&["srt", "accepted"])
        .inc();
    tracing::info!(stream.id = %playback_id, "srt publisher accepted");
    let span = tracing::info_span!("stream", stream.id = %playback_id);
    Some(tokio::spawn(
        async move {
            let (pipeline, output) = match admission.start_pipeline(InputFormat::MpegTs, None) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start pipeline");
                    return;
                }
            };
            let result = loop {
                tokio::select! {
                    _ = admission.cancel.cancelled() => break Err("kicked or replaced".to_string()),
                    r = pipeline.wait() => break r.map_err(|e| {
                        if matches!(e, PipelineError::SourceRefused(_)) {
                            metrics::CONNECTIONS_TOTAL.with_label_values(&["srt", metrics::REFUSED_SOURCE]).inc();
                        } else {
                            metrics::PIPELINE_ERRORS.inc();
                        }
                        e.to_string()
                    }),
                    item = socket.next() => match item {
                        Some(Ok((_, data))) => {
                            metrics::BYTES_RECEIVED.with_label_values(&["srt"]).inc_by(data.len() as u64);
                            if let Err(e) = pipeline.push(data) {
                                break Err(e.to_string());
                            }
                        }
                        Some(Err(e)) => break Err(e.to_string()),
                        None => break Ok(()),
                    },
                }
            };
            match admission.finish_pipeline(pipeline, output, result).await {
                Ok(()) => tracing::info!("srt publisher ended"),
                Err(e) => tracing::warn!(reason = %e, "srt stream ended with error"),
            }
        }
        .instrument(span),
    ))
}
