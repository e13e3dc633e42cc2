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
//! Entry points: [`run`]; [`Relays`], the table of live relays a hand-over quiesces.

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
pub enum Stopped {
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

    /// The token the next relay watches.
    pub fn token(&self) -> CancellationToken {
        lock(&self.quiesce).clone()
    }
    /// Quiesce every relay now running; relays started from now on watch a fresh token.
    pub fn quiesce_all(&self) {
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

/// Relay until the connection ends or `quiesce` fires. The caller registers the connection in
/// `conns` (and counts it) around this.
pub async fn run(
    client: TcpStream,
    node: TcpStream,
    mut st: RelayState,
    conns: &Arc<Conns>,
    quiesce: CancellationToken,
) -> Stopped {
    let guard = conns.adopt(
        "rtmp",
        st.client_addr,
        &st.node_id,
        st.started_unix_ms,
        st.bytes_to_node,
        st.bytes_to_encoder,
    );
    // The byte counts live in the connection table's entry; the state takes them only when
    // it leaves this task (a quiesce).
    let to_node = metrics::relayed("rtmp", "to_node");
    let to_encoder = metrics::relayed("rtmp", "to_encoder");
    let count_up = |_: &mut RelayState, n: usize| {
        guard
            .conn
            .bytes_to_node
            .fetch_add(n as u64, Ordering::Relaxed);
        to_node.inc_by(n as u64);
    };
    let count_down = |_: &mut RelayState, n: usize| {
        guard
            .conn
            .bytes_to_encoder
            .fetch_add(n as u64, Ordering::Relaxed);
        to_encoder.inc_by(n as u64);
    };
    loop {
        // Half-closes once everything before them is out.
        if st.up_eof && !st.up_shut && st.pending_up.is_empty() {
            shut_write(&node);
            st.up_shut = true;
        }
        if st.down_eof && !st.down_shut && st.pending_down.is_empty() {
            shut_write(&client);
            st.down_shut = true;
        }
        if st.up_shut && st.down_shut {
            return Stopped::Ended;
        }
        let read_up = !st.up_eof && st.pending_up.is_empty();
        let write_up = !st.pending_up.is_empty();
        let read_down = !st.down_eof && st.pending_down.is_empty();
        let write_down = !st.pending_down.is_empty();
        tokio::select! {
            biased;
            _ = quiesce.cancelled() => {
                st.bytes_to_node = guard.conn.bytes_to_node.load(Ordering::Relaxed);
                st.bytes_to_encoder = guard.conn.bytes_to_encoder.load(Ordering::Relaxed);
                return Stopped::Quiesced(Box::new(Quiesced { state: st, client, node }));
            }
            r = client.readable(), if read_up => {
                if r.is_err() { return Stopped::Ended; }
                let got = BUF.with(|b| {
                    let mut b = b.borrow_mut();
                    match read(&client, &mut b) {
                        Io::Data(n) => {
                            let data = b.get(..n).unwrap_or_default();
                            match write_some(&node, data) {
                                Some(w) => {
                                    if w < n {
                                        st.pending_up.extend_from_slice(data.get(w..).unwrap_or_default());
                                    }
                                    Io::Data(w)
                                }
                                None => Io::Failed,
                            }
                        }
                        other => other,
                    }
                });
                match got {
                    Io::Data(w) => count_up(&mut st, w),
                    Io::Eof => st.up_eof = true,
                    Io::WouldBlock => {}
                    Io::Failed => return Stopped::Ended,
                }
            }
            r = node.writable(), if write_up => {
                if r.is_err() { return Stopped::Ended; }
                match write_some(&node, &st.pending_up) {
                    Some(w) => {
                        st.pending_up.drain(..w);
                        if st.pending_up.is_empty() {
                            st.pending_up = Vec::new(); // give the memory back
                        }
                        count_up(&mut st, w);
                    }
                    None => return Stopped::Ended,
                }
            }
            r = node.readable(), if read_down => {
                if r.is_err() { return Stopped::Ended; }
                let got = BUF.with(|b| {
                    let mut b = b.borrow_mut();
                    match read(&node, &mut b) {
                        Io::Data(n) => match st.downstream.on_node_bytes(b.get(..n).unwrap_or_default()) {
                            Ok(out) => match write_some(&client, &out) {
                                Some(w) => {
                                    if w < out.len() {
                                        st.pending_down.extend_from_slice(out.get(w..).unwrap_or_default());
                                    }
                                    Io::Data(w)
                                }
                                None => Io::Failed,
                            },
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot follow the node's RTMP");
                                Io::Failed
                            }
                        },
                        other => other,
                    }
                });
                match got {
                    Io::Data(w) => count_down(&mut st, w),
                    Io::Eof => st.down_eof = true,
                    Io::WouldBlock => {}
                    Io::Failed => return Stopped::Ended,
                }
            }
            r = client.writable(), if write_down => {
                if r.is_err() { return Stopped::Ended; }
                match write_some(&client, &st.pending_down) {
                    Some(w) => {
                        st.pending_down.drain(..w);
                        if st.pending_down.is_empty() {
                            st.pending_down = Vec::new();
                        }
                        count_down(&mut st, w);
                    }
                    None => return Stopped::Ended,
                }
            }
        }
    }
}

/// Run a relay as its own task: on a quiesce the relay goes to `quiesced` (the hand-over
/// collects it); otherwise it ends with its connection.
pub fn spawn(
    client: TcpStream,
    node: TcpStream,
    state: RelayState,
    conns: Arc<Conns>,
    relays: &Arc<Relays>,
    quiesced: mpsc::UnboundedSender<Quiesced>,
    permit: Option<server::ConnPermit>,
) {
    let token = relays.token();
    // Counted before the task exists, so a quiesce right now waits for it.
    let live = relays.enter();
    let span =
        tracing::info_span!("rtmp", client.addr = %state.client_addr, node.id = %state.node_id);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            let _live = live;
            metrics::CONNECTIONS
                .with_label_values(&["rtmp", "relaying"])
                .inc();
            let stopped = run(client, node, state, &conns, token).await;
            drop(permit);
            metrics::CONNECTIONS
                .with_label_values(&["rtmp", "relaying"])
                .dec();
            match stopped {
                Stopped::Ended => tracing::info!("rtmp relay ended"),
                Stopped::Quiesced(q) => {
                    if let Err(mpsc::error::SendError(q)) = quiesced.send(*q) {
                        // Nobody collects: the process is going away; the sockets close.
                        tracing::warn!(client.addr = %q.state.client_addr, "quiesced relay not collected");
                    }
                }
            }
        },
        span,
    ));
}
