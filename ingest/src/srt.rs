//! SRT ingest on udp/9000, with srt-tokio kept behind a guard so no peer can crash the node.
//!
//! ```text
//! peer ⇄ front socket :9000 ── srt_guard::inspect ──▶ per-peer relay socket ⇄ private srt-tokio listener (127.0.0.1:0)
//! ```
//! The front socket is ours: every datagram passes [`srt_guard::inspect`] (packets that reach
//! srt-tokio's `todo!`/`unimplemented!` paths are dropped or cleaned). Each peer then gets its
//! own srt-tokio listener on loopback, so a panic we did not foresee inside srt-tokio ends that
//! peer's session only: the front socket, the other sessions and their streams never notice.
//! Only a handshake induction opens a session; sessions end when their stream ends or the peer
//! goes silent.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    time::Duration,
};

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
    srt_guard::{self, Verdict},
    streamid,
};

use crate::{
    metrics,
    node::{AdmitError, Node, Protocol},
    pipeline::InputFormat,
    srt_front::{Front, Phase, Route, SessionLink, MAX_SESSIONS},
};

/// Datagrams queued from the front socket to one session; beyond this we drop, as the
/// network would (SRT retransmits).
const SESSION_QUEUE: usize = 4096;
/// A session with no datagram either way for this long is over. libsrt declares a peer dead
/// after 5 s of silence (keepalives flow every 1 s), so 10 s is past any live caller.
const SESSION_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// A caller that opened a session must finish its handshake within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the front sweeps ended sessions out of its table.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

struct SessionEntry {
    tx: mpsc::Sender<Bytes>,
    phase: Arc<AtomicU8>,
}

impl SessionLink for SessionEntry {
    fn is_open(&self) -> bool {
        !self.tx.is_closed()
    }
    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }
}

/// Run the SRT front on `socket` until `shutdown`.
pub async fn serve(node: Arc<Node>, socket: UdpSocket, shutdown: CancellationToken) {
    let front = Arc::new(socket);
    let mut sessions: Front<SocketAddr, SessionEntry> = Front::new(MAX_SESSIONS);
    let mut buf = vec![0u8; 65536];
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        let (n, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                sessions.sweep();
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
        let pkt = &buf[..n];
        let (kind, bytes) = match srt_guard::inspect(pkt) {
            Verdict::Forward(k) => (k, Bytes::copy_from_slice(pkt)),
            Verdict::Rewrite(k, v) => (k, Bytes::from(v)),
            Verdict::Drop(reason) => {
                metrics::SRT_DROPPED
                    .with_label_values(&[reason.as_str()])
                    .inc();
                tracing::trace!(client.addr = %peer, reason = reason.as_str(), "srt datagram dropped");
                continue;
            }
        };
        match sessions.route(peer, kind) {
            Route::ToSession => {
                if let Some(e) = sessions.get(&peer) {
                    if e.tx.try_send(bytes).is_err() {
                        metrics::SRT_DROPPED
                            .with_label_values(&["session_queue_full"])
                            .inc();
                    }
                }
                continue;
            }
            Route::Drop(reason) => {
                metrics::SRT_DROPPED.with_label_values(&[reason]).inc();
                continue;
            }
            Route::Open => {}
        }
        let (tx, rx) = mpsc::channel(SESSION_QUEUE);
        let _ = tx.try_send(bytes);
        let phase = Arc::new(AtomicU8::new(Phase::Handshake.to_u8()));
        sessions.insert(
            peer,
            SessionEntry {
                tx,
                phase: Arc::clone(&phase),
            },
        );
        let span = tracing::info_span!("srt", client.addr = %peer);
        tracing::debug!(client.addr = %peer, sessions = sessions.len(), "srt session opened");
        tokio::spawn(
            run_session(Arc::clone(&node), Arc::clone(&front), peer, rx, phase).instrument(span),
        );
    }
}

/// One peer: its private srt-tokio listener, the relay to it, and its stream.
async fn run_session(
    node: Arc<Node>,
    front: Arc<UdpSocket>,
    peer: SocketAddr,
    mut rx: mpsc::Receiver<Bytes>,
    phase: Arc<AtomicU8>,
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
        Ok::<_, std::io::Error>((listener, incoming, relay, inner_addr))
    };
    let (_listener, mut incoming, relay, _listener_addr) = match setup.await {
        Ok(x) => x,
        Err(e) => {
            tracing::error!(error = %e, "cannot open srt session");
            return;
        }
    };
    tracing::debug!(listener = %_listener_addr, "srt session listening");
    let mut buf = vec![0u8; 65536];
    let mut last_activity = Instant::now();
    let handshake_deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let mut stream: Option<tokio::task::JoinHandle<()>> = None;
    let mut pending: Option<tokio::task::JoinHandle<Option<tokio::task::JoinHandle<()>>>> = None;
    loop {
        let idle_at = last_activity + SESSION_IDLE_TIMEOUT;
        tokio::select! {
            pkt = rx.recv() => match pkt {
                Some(p) => {
                    last_activity = Instant::now();
                    let _ = relay.send(&p).await;
                }
                None => break,
            },
            r = relay.recv(&mut buf) => match r {
                Ok(n) => {
                    last_activity = Instant::now();
                    let _ = front.send_to(&buf[..n], peer).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "srt relay recv error");
                }
            },
            req = incoming.incoming().next(), if pending.is_none() && stream.is_none() => match req {
                Some(req) => {
                    let node = Arc::clone(&node);
                    pending = Some(tokio::spawn(handle_request(node, req, peer).in_current_span()));
                }
                // srt-tokio's listener task ended (it panicked or closed): this session is over.
                None => break,
            },
            done = join_opt(&mut pending), if pending.is_some() => {
                pending = None;
                // None: rejected. Keep relaying briefly so the rejection reaches the peer;
                // the idle timer then ends the session.
                match done {
                    Some(Some(task)) => {
                        phase.store(Phase::Streaming.to_u8(), Ordering::Release);
                        stream = Some(task);
                    }
                    _ => phase.store(Phase::Done.to_u8(), Ordering::Release),
                }
            },
            _ = join_opt(&mut stream), if stream.is_some() => {
                // The stream ended; flush srt-tokio's shutdown to the peer and close.
                if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), relay.recv(&mut buf)).await {
                    let _ = front.send_to(&buf[..n], peer).await;
                }
                break;
            },
            _ = tokio::time::sleep_until(idle_at) => {
                tracing::debug!("srt session idle: closed");
                break;
            },
            _ = tokio::time::sleep_until(handshake_deadline), if stream.is_none() && pending.is_none() => {
                break;
            },
        }
    }
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
                crate::auth::AuthError::Limited(_) => ServerRejectReason::Forbidden,
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
                    r = pipeline.wait() => break r.map_err(|e| { metrics::PIPELINE_ERRORS.inc(); e.to_string() }),
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
