//! One pinned RTMP connection once the node has it: encoder → node bytes as they come, node →
//! encoder through [`rtmp_peek::Downstream`]. One task per connection and no buffer of its
//! own while idle: bytes are read into a per-thread scratch buffer and written on at once; only
//! what the destination cannot take yet is kept (HAProxy's way), so back-pressure still
//! reaches the sender through TCP and an idle connection holds only its [`RelayState`].
//!
//! A relay can be quiesced at a clean point (between two reads, nothing half-handled) and
//! resumed from its [`RelayState`] and its two sockets, in this process or in the balancer
//! that takes over from it ([`crate::handover`]): not one byte is lost, reordered or
//! duplicated, because every byte read is either written or in the state.
//!
//! Entry points: [`spawn`]; [`Relays`], the table of live relays a hand-over quiesces.

use std::{
    cell::RefCell,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use serde::{Deserialize, Serialize};
use tokio::{net::TcpStream, sync::mpsc};
use tokio_util::sync::CancellationToken;

use crate::{conns::Conns, metrics, rtmp_peek};

/// The scratch buffer each worker thread reads into: 64 KiB is ~25 ms at 20 Mbps, enough
/// for one read to keep the pipe full; it belongs to the thread, not to a connection.
pub const SCRATCH: usize = 64 * 1024;

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; SCRATCH]);
}

/// Everything a relay is besides its two sockets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayState {
    pub client_addr: SocketAddr,
    pub node_id: String,
    pub reservation: u64,
    pub started_unix_ms: u64,
    pub bytes_to_node: u64,
    pub bytes_to_encoder: u64,
    /// Read from the encoder, not yet written to the node.
    pub pending_up: Vec<u8>,
    /// Re-serialised for the encoder, not yet written to it.
    pub pending_down: Vec<u8>,
    /// The encoder closed its side; the node's write side is shut once `pending_up` is out.
    pub up_eof: bool,
    pub up_shut: bool,
    /// The node closed its side; the encoder's write side is shut once `pending_down` is out.
    pub down_eof: bool,
    pub down_shut: bool,
    pub downstream: rtmp_peek::Downstream,
}

/// How a relay stopped.
enum Stopped {
    /// Both sides are done (or one failed): the connection is over.
    Ended,
    /// Quiesced for a hand-over: the state and both sockets, untouched since the last step.
    Quiesced(Box<Quiesced>),
}

/// A relay at rest.
pub struct Quiesced {
    pub state: RelayState,
    pub client: TcpStream,
    pub node: TcpStream,
}

/// The live relays of this process, and the switch that quiesces them.
#[derive(Default)]
pub struct Relays {
    /// Cancelled to quiesce every relay started under it; replaced by a fresh one after.
    quiesce: Mutex<CancellationToken>,
    /// Connections between accept and relaying (peeking, placing, handing to a node).
    pub opening: AtomicUsize,
    /// Cancelled to end every connection still opening (a hand-over that cannot wait).
    abort_opening: Mutex<CancellationToken>,
    /// Relay and SRT session tasks running (a quiesce is complete when this reaches 0).
    live: AtomicUsize,
    /// Raised by each quiesce: an RTMP relay started in an earlier epoch stops at a clean
    /// point (it holds no cancellation future of its own, see `Relay`).
    epoch: std::sync::atomic::AtomicU64,
    /// Set while a hand-over waits for opening connections: the SRT front lets new callers'
    /// conclusions go unanswered (they retransmit every 250 ms, and the successor answers).
    pub srt_paused: std::sync::atomic::AtomicBool,
}

/// Counts one connection as opening in [`Relays`] until dropped.
pub struct OpeningGuard(Arc<Relays>);

impl Drop for OpeningGuard {
    fn drop(&mut self) {
        self.0.opening.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts one relay or session task in [`Relays`] while it lives.
pub struct LiveGuard(Arc<Relays>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relays {
    /// Count a relay or session task for as long as the guard lives.
    pub fn enter(self: &Arc<Self>) -> LiveGuard {
        self.live.fetch_add(1, Ordering::AcqRel);
        LiveGuard(Arc::clone(self))
    }

    /// Count a connection as opening (handshaking, placing) for as long as the guard lives.
    pub fn opening(self: &Arc<Self>) -> OpeningGuard {
        self.opening.fetch_add(1, Ordering::AcqRel);
        OpeningGuard(Arc::clone(self))
    }

    /// Relay and session tasks running now.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// The token the next SRT session watches.
    pub fn token(&self) -> CancellationToken {
        lock(&self.quiesce).clone()
    }
    /// The quiesce epoch the next RTMP relay starts in.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
    /// Quiesce every relay and session now running; those started from now on watch a fresh
    /// token and the next epoch. `conns` wakes the RTMP relays (each registered its waker in
    /// its entry there).
    pub fn quiesce_all(&self, conns: &Conns) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        conns.wake_all();
        let old = std::mem::take(&mut *lock(&self.quiesce));
        old.cancel();
    }
    /// The token an opening connection watches.
    pub fn opening_token(&self) -> CancellationToken {
        lock(&self.abort_opening).clone()
    }
    /// End every connection still opening.
    pub fn abort_opening(&self) {
        let old = std::mem::take(&mut *lock(&self.abort_opening));
        old.cancel();
    }
}

/// What `io` returned, as the relay sees it.
enum Io {
    Data(usize),
    Eof,
    WouldBlock,
    Failed,
}

fn read(s: &TcpStream, buf: &mut [u8]) -> Io {
    match s.try_read(buf) {
        Ok(0) => Io::Eof,
        Ok(n) => Io::Data(n),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Io::WouldBlock,
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Io::WouldBlock,
        Err(_) => Io::Eof,
    }
}

/// Write what `dst` takes now; returns how much, or `None` when it failed.
fn write_some(dst: &TcpStream, bytes: &[u8]) -> Option<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match dst.try_write(bytes.get(done..).unwrap_or_default()) {
            Ok(0) => return None,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    Some(done)
}

fn shut_write(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write);
}

/// How many reads and writes one poll does at most before it yields, so one busy relay
/// cannot hold its worker thread (tokio's budget also applies to each readiness poll).
const STEPS_PER_POLL: usize = 64;

/// A relay as a future of its own, not an `async fn`: an idle relay then holds its sockets,
/// its [`RelayState`] and a few pointers (about 400 bytes), where the `select!` of an async
/// relay kept a readiness future per direction and a cancellation future alive (about 1.7 KiB
/// per task). Readiness goes through `poll_read_ready`/`poll_write_ready`, which keep one waker
/// per direction in the socket's registration; a quiesce is an epoch in [`Relays`] plus a wake
/// through the connection's entry in [`Conns`].
struct Relay {
    /// Both sockets and the state; taken out when the relay quiesces.
    live: Option<(TcpStream, TcpStream, RelayState)>,
    guard: crate::conns::ConnGuard,
    /// Counts this relay in [`Relays`] (and reads its quiesce epoch there).
    counted: LiveGuard,
    /// The quiesce epoch this relay started in: a later one quiesces it.
    epoch: u64,
    /// The connection's slot under the listener's caps, if it came through ours.
    _permit: Option<server::ConnPermit>,
    /// Where the relay goes when quiesced (the hand-over collects it).
    quiesced: mpsc::UnboundedSender<Quiesced>,
}

/// The relayed-bytes counters of RTMP, looked up once for every relay.
static TO_NODE: std::sync::LazyLock<prometheus::IntCounter> =
    std::sync::LazyLock::new(|| metrics::relayed("rtmp", "to_node"));
static TO_ENCODER: std::sync::LazyLock<prometheus::IntCounter> =
    std::sync::LazyLock::new(|| metrics::relayed("rtmp", "to_encoder"));

impl Relay {
    /// Count `n` bytes written to the node (takes the guard alone, so the sockets can stay
    /// borrowed).
    fn count_up(guard: &crate::conns::ConnGuard, n: usize) {
        guard
            .conn
            .bytes_to_node
            .fetch_add(n as u64, Ordering::Relaxed);
        TO_NODE.inc_by(n as u64);
    }

    /// Count `n` bytes written to the encoder.
    fn count_down(guard: &crate::conns::ConnGuard, n: usize) {
        guard
            .conn
            .bytes_to_encoder
            .fetch_add(n as u64, Ordering::Relaxed);
        TO_ENCODER.inc_by(n as u64);
    }

    /// Read from the encoder and write on to the node at once; keep what the node cannot take.
    fn step_up(client: &TcpStream, node: &TcpStream, st: &mut RelayState) -> Io {
        BUF.with(|b| {
            let mut b = b.borrow_mut();
            match read(client, &mut b) {
                Io::Data(n) => {
                    let data = b.get(..n).unwrap_or_default();
                    match write_some(node, data) {
                        Some(w) => {
                            if w < n {
                                st.pending_up
                                    .extend_from_slice(data.get(w..).unwrap_or_default());
                            }
                            Io::Data(w)
                        }
                        None => Io::Failed,
                    }
                }
                other => other,
            }
        })
    }

    /// Read from the node, re-serialise for the encoder and write it on; keep the rest.
    fn step_down(client: &TcpStream, node: &TcpStream, st: &mut RelayState) -> Io {
        BUF.with(|b| {
            let mut b = b.borrow_mut();
            match read(node, &mut b) {
                Io::Data(n) => match st
                    .downstream
                    .on_node_bytes(b.get(..n).unwrap_or_default())
                {
                    Ok(out) => match write_some(client, &out) {
                        Some(w) => {
                            if w < out.len() {
                                st.pending_down
                                    .extend_from_slice(out.get(w..).unwrap_or_default());
                            }
                            Io::Data(w)
                        }
                        None => Io::Failed,
                    },
                    Err(e) => {
                        tracing::warn!(client.addr = %st.client_addr, node.id = %st.node_id, error = %e, "cannot follow the node's RTMP");
                        Io::Failed
                    }
                },
                other => other,
            }
        })
    }

    /// Write what is kept for `dst`: how much went, or `None` if the connection failed.
    fn flush(dst: &TcpStream, pending: &mut Vec<u8>) -> Option<usize> {
        let w = write_some(dst, pending)?;
        pending.drain(..w);
        if pending.is_empty() {
            *pending = Vec::new(); // give the memory back
        }
        Some(w)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        metrics::CONNECTIONS
            .with_label_values(&["rtmp", "relaying"])
            .dec();
    }
}

impl std::future::Future for Relay {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.get_mut();
        let stopped = std::task::ready!(this.step(cx));
        match stopped {
            Stopped::Ended => {
                let addr = this.guard.conn.client_addr;
                tracing::info!(client.addr = %addr, node.id = %this.guard.conn.node, "rtmp relay ended");
            }
            Stopped::Quiesced(q) => {
                if let Err(mpsc::error::SendError(q)) = this.quiesced.send(*q) {
                    // Nobody collects: the process is going away; the sockets close.
                    tracing::warn!(client.addr = %q.state.client_addr, "quiesced relay not collected");
                }
            }
        }
        std::task::Poll::Ready(())
    }
}

impl Relay {
    /// Relay until the connection ends or a quiesce (the epoch moved on).
    fn step(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Stopped> {
        use std::task::Poll;
        let guard = &self.guard;
        // Registered before the epoch is read: a quiesce after this wakes us.
        guard.conn.waker.register(cx.waker());
        for _ in 0..STEPS_PER_POLL {
            if self.counted.0.epoch() != self.epoch {
                let Some((client, node, mut state)) = self.live.take() else {
                    return Poll::Ready(Stopped::Ended);
                };
                state.bytes_to_node = guard.conn.bytes_to_node.load(Ordering::Relaxed);
                state.bytes_to_encoder = guard.conn.bytes_to_encoder.load(Ordering::Relaxed);
                return Poll::Ready(Stopped::Quiesced(Box::new(Quiesced {
                    state,
                    client,
                    node,
                })));
            }
            let Some((client, node, st)) = self.live.as_mut() else {
                return Poll::Ready(Stopped::Ended);
            };
            // Half-closes once everything before them is out.
            if st.up_eof && !st.up_shut && st.pending_up.is_empty() {
                shut_write(node);
                st.up_shut = true;
            }
            if st.down_eof && !st.down_shut && st.pending_down.is_empty() {
                shut_write(client);
                st.down_shut = true;
            }
            if st.up_shut && st.down_shut {
                return Poll::Ready(Stopped::Ended);
            }
            let mut progressed = false;
            // Encoder → node: write what is kept first, read only when nothing is.
            if !st.pending_up.is_empty() {
                match node.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => match Self::flush(node, &mut st.pending_up) {
                        Some(w) => {
                            // Also when nothing went: the readiness is cleared, and the next
                            // poll registers for it.
                            progressed = true;
                            Self::count_up(guard, w);
                        }
                        None => return Poll::Ready(Stopped::Ended),
                    },
                    Poll::Ready(Err(_)) => return Poll::Ready(Stopped::Ended),
                    Poll::Pending => {}
                }
            } else if !st.up_eof {
                match client.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => match Self::step_up(client, node, st) {
                        Io::Data(w) => {
                            progressed = true;
                            Self::count_up(guard, w);
                        }
                        Io::Eof => {
                            progressed = true;
                            st.up_eof = true;
                        }
                        Io::WouldBlock => progressed = true, // readiness cleared: poll again
                        Io::Failed => return Poll::Ready(Stopped::Ended),
                    },
                    Poll::Ready(Err(_)) => return Poll::Ready(Stopped::Ended),
                    Poll::Pending => {}
                }
            }
            // Node → encoder, the same way.
            if !st.pending_down.is_empty() {
                match client.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => match Self::flush(client, &mut st.pending_down) {
                        Some(w) => {
                            progressed = true;
                            Self::count_down(guard, w);
                        }
                        None => return Poll::Ready(Stopped::Ended),
                    },
                    Poll::Ready(Err(_)) => return Poll::Ready(Stopped::Ended),
                    Poll::Pending => {}
                }
            } else if !st.down_eof {
                match node.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => match Self::step_down(client, node, st) {
                        Io::Data(w) => {
                            progressed = true;
                            Self::count_down(guard, w);
                        }
                        Io::Eof => {
                            progressed = true;
                            st.down_eof = true;
                        }
                        Io::WouldBlock => progressed = true,
                        Io::Failed => return Poll::Ready(Stopped::Ended),
                    },
                    Poll::Ready(Err(_)) => return Poll::Ready(Stopped::Ended),
                    Poll::Pending => {}
                }
            }
            if !progressed {
                // Every direction waits on its socket's readiness (wakers registered).
                return Poll::Pending;
            }
        }
        // Busy: let the other tasks on this thread run, and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Run a relay as its own task until its connection ends, or until the relays are quiesced
/// ([`Relays::quiesce_all`]): then the relay goes to `quiesced` (the hand-over collects it).
/// The connection is in `conns` for as long as the relay runs.
pub fn spawn(
    client: TcpStream,
    node: TcpStream,
    state: RelayState,
    conns: Arc<Conns>,
    relays: &Arc<Relays>,
    quiesced: mpsc::UnboundedSender<Quiesced>,
    permit: Option<server::ConnPermit>,
) {
    let epoch = relays.epoch();
    // Counted before the task exists, so a quiesce right now waits for it.
    let counted = relays.enter();
    let guard = conns.adopt(
        "rtmp",
        state.client_addr,
        &state.node_id,
        state.started_unix_ms,
        state.bytes_to_node,
        state.bytes_to_encoder,
    );
    metrics::CONNECTIONS
        .with_label_values(&["rtmp", "relaying"])
        .inc();
    // No span: a span lives in the subscriber's registry (with its formatted fields) for as
    // long as the task, hundreds of bytes per idle relay; the few events name the connection.
    // (A spawned task is in no span, so the caller's closes when its opening is done.)
    tokio::spawn(Relay {
        live: Some((client, node, state)),
        guard,
        counted,
        epoch,
        _permit: permit,
        quiesced,
    });
}
