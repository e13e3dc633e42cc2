//! Balancer side of the control plane: accept node connections, keep what each node last
//! reported, and ask nodes to reserve capacity.
//!
//! Entry points: [`run_server`] (serve until shutdown), [`spawn_server`] (bind, then serve in
//! a task; for tests and for `edge dev`), and [`Registry`], shared with placement and the
//! admin API.
//!
//! Layout: the rules of one node's session (hello, identity, frames) are the pure
//! [`crate::server_session::NodeSession`]; what the balancer knows of every node, and the
//! reservations waiting for an answer, are the [`Registry`] (no sockets: a connection is a
//! [`NodeLink`] to it, which tests can open without QUIC); the rest of this file is the quinn
//! driver that moves bytes between the two.
//!
//! Security: a node must present a certificate chaining to the cluster CA, and every report
//! it sends must carry the node ID its certificate names (SAN `<id>.node.edge`, else CN);
//! otherwise the connection is closed with a logged reason, so a node cannot impersonate
//! another.
//!
//! Caveats: every per-connection failure is logged and contained; it never stops the server.
//! Losing a node's connection only stops its reports: the node stays in [`Registry::snapshot`]
//! (with `connected: false`) and the balancer decides from `received` that it is lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::proto::{encode_frame, Operation, Report, ToNode};
use crate::reservation::Reservation;
pub use crate::server_session::HELLO_TIMEOUT;
use crate::server_session::{CloseCode, Inbound, Kick, NodeSession};
use crate::tls::{connection_node_id, server_config};
use crate::ControlError;

/// Most node connections (including ones still in their handshake) served at once. A fleet
/// has tens to hundreds of nodes; the cap only stops a flood of bogus handshakes from
/// exhausting memory.
pub const MAX_CONNECTIONS: usize = 4096;

/// A QUIC + TLS handshake that takes longer than this is abandoned (a healthy one takes a
/// few round trips); stops half-open handshakes from holding connection slots.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a write of one message to a node may take; a node that stops reading (flow
/// control stuck) is disconnected instead of stalling its connection forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages queued to one node before [`Registry::reserve`] waits and [`Registry::cancel`]
/// drops: placements are a few per second, so this is only reached by a node that stopped
/// reading.
pub const OUTBOX_CAPACITY: usize = 256;

/// On shutdown, how long to wait for connection tasks and for close frames to reach nodes
/// before returning anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Bytes read from a stream at a time.
const READ_CHUNK: usize = 16 * 1024;

fn close_code(code: CloseCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(code.as_u32())
}

/// Why an operator's action did not reach a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperateError {
    #[error("node {0} is not connected to this balancer")]
    NotConnected(String),
    #[error("node {0} runs a version that does not take actions through a balancer; use its own admin API")]
    Unsupported(String),
    #[error("node {0} is not reading its control connection")]
    Busy(String),
    #[error("node {0} is connected; it would be back with its next report")]
    Connected(String),
}

/// Configuration of the balancer's control-plane listener.
#[derive(Clone)]
pub struct ServerConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// The cluster CA certificate (PEM) node certificates must chain to.
    pub ca_pem: String,
    /// This balancer's certificate (PEM), with the SAN `balancer.edge`.
    pub cert_pem: String,
    /// This balancer's private key (PEM).
    pub key_pem: String,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// What the balancer knows of one node.
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    /// The node's last report.
    pub report: Report,
    /// When the last report arrived.
    pub received: Instant,
    /// Whether the node's control connection is up now.
    pub connected: bool,
    /// The address the node connects from (of the last connection).
    pub remote: SocketAddr,
}

/// A node as a registry hands it to its successor (see [`Registry::export`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExportedNode {
    pub report: Report,
    pub age_ms: u64,
    pub remote: SocketAddr,
}

/// Why a reservation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// The node has no control connection to this balancer.
    #[error("node not connected")]
    NotConnected,
    /// The node said no: what kind of no, and why.
    #[error("node refused: {0}")]
    Refused(crate::proto::Refused),
    /// The node did not answer in time (a cancel was sent in case it did reserve).
    #[error("node did not answer in time")]
    Timeout,
    /// The connection ended before the node answered.
    #[error("connection closed before the node answered")]
    Closed,
}

type Answer = Result<(), crate::proto::Refused>;

/// One live connection to a node.
struct Link {
    conn_id: u64,
    /// The node its certificate names.
    node_id: String,
    remote: SocketAddr,
    tx: mpsc::Sender<ToNode>,
    /// Cancelled when a newer connection of the same node takes over.
    replaced: CancellationToken,
    /// Reservation ID → (request token, who waits for the answer).
    pending: Mutex<HashMap<u64, (u64, oneshot::Sender<Answer>)>>,
}

impl Link {
    fn pending(&self) -> MutexGuard<'_, HashMap<u64, (u64, oneshot::Sender<Answer>)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct NodeEntry {
    report: Report,
    received: Instant,
    remote: SocketAddr,
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<String, NodeEntry>,
    links: HashMap<String, Arc<Link>>,
}

/// What the balancer knows of every node, and the way to reach the connected ones.
/// `Send + Sync`; share it as `Arc<Registry>`.
pub struct Registry {
    inner: Mutex<Inner>,
    updates: watch::Sender<u64>,
    next_id: AtomicU64,
}

/// One node connection attached to the [`Registry`]: how its driver (or a test) hands the
/// registry what the node said. Dropping it disconnects the node (reservations waiting on
/// this connection end with [`ReserveError::Closed`]).
pub struct NodeLink {
    registry: Arc<Registry>,
    link: Arc<Link>,
}

impl NodeLink {
    /// The node sent a report (already checked to name the node its certificate names).
    /// `Err` when a newer connection of the same node took over: this one must close.
    pub fn report(&self, report: Report, now: Instant) -> Result<(), Kick> {
        self.registry.record_report(&self.link, report, now)
    }

    /// The node's final answer to reservation `id`.
    pub fn answer(&self, id: u64, answer: Answer) {
        self.registry.answer(&self.link, id, answer);
    }

    /// The address the node connects from.
    pub fn remote(&self) -> SocketAddr {
        self.link.remote
    }

    /// Resolves when a newer connection of the same node took over (close this one).
    pub async fn replaced(&self) {
        self.link.replaced.cancelled().await
    }
}

impl Drop for NodeLink {
    fn drop(&mut self) {
        self.registry.disconnect(&self.link);
    }
}

/// Removes a pending reservation entry when [`Registry::reserve`] returns or is dropped.
struct PendingGuard<'a> {
    link: &'a Link,
    id: u64,
    token: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut pending = self.link.pending();
        if pending.get(&self.id).is_some_and(|(t, _)| *t == self.token) {
            pending.remove(&self.id);
        }
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        let (updates, _) = watch::channel(0);
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            updates,
            next_id: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock must not take the control plane down.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.updates.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// What this registry knows, for the balancer that takes over from this one: every
    /// node's last report, how old it is, and where the node connects from.
    pub fn export(&self, now: Instant) -> Vec<ExportedNode> {
        self.lock()
            .nodes
            .values()
            .map(|e| ExportedNode {
                report: e.report.clone(),
                age_ms: u64::try_from(now.saturating_duration_since(e.received).as_millis())
                    .unwrap_or(u64::MAX),
                remote: e.remote,
            })
            .collect()
    }

    /// Start from a predecessor's [`Registry::export`]: the reports keep their age, so no node
    /// looks fresher (or more lost) than it is; links come as the nodes reconnect.
    pub fn import(&self, nodes: Vec<ExportedNode>, now: Instant) {
        {
            let mut inner = self.lock();
            for n in nodes {
                let received = now
                    .checked_sub(Duration::from_millis(n.age_ms))
                    .unwrap_or(now);
                inner.nodes.insert(
                    n.report.node_id.clone(),
                    NodeEntry {
                        report: n.report,
                        received,
                        remote: n.remote,
                    },
                );
            }
        }
        self.bump();
    }

    /// Whether `node_id` has a control connection now.
    pub fn connected(&self, node_id: &str) -> bool {
        self.lock().links.contains_key(node_id)
    }

    /// Every node ever seen (the balancer decides "lost" from `received`).
    pub fn snapshot(&self) -> Vec<NodeSnapshot> {
        let inner = self.lock();
        inner
            .nodes
            .iter()
            .map(|(id, e)| NodeSnapshot {
                report: e.report.clone(),
                received: e.received,
                connected: inner.links.contains_key(id),
                remote: e.remote,
            })
            .collect()
    }

    /// Ask a node to hold capacity for a placement; the node's answer is final. Fails fast if
    /// the node is not connected. Gives up after `timeout`, sending a cancel in case the node
    /// did reserve.
    pub async fn reserve(
        &self,
        node_id: &str,
        reservation: Reservation,
        timeout: Duration,
    ) -> Result<(), ReserveError> {
        let deadline = Instant::now() + timeout;
        let id = reservation.id;
        let link = self
            .lock()
            .links
            .get(node_id)
            .cloned()
            .ok_or(ReserveError::NotConnected)?;
        let token = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer_tx, answer_rx) = oneshot::channel();
        // A request reusing a pending ID supersedes it: the older caller sees `Closed`.
        link.pending().insert(id, (token, answer_tx));
        let _guard = PendingGuard {
            link: &link,
            id,
            token,
        };
        match tokio::time::timeout_at(deadline, link.tx.send(reservation.to_message())).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(ReserveError::Closed),
            Err(_) => return Err(ReserveError::Timeout),
        }
        match tokio::time::timeout_at(deadline, answer_rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(reason))) => Err(ReserveError::Refused(reason)),
            Ok(Err(_)) => Err(ReserveError::Closed),
            Err(_) => {
                if link.tx.try_send(ToNode::Cancel { id }).is_err() {
                    debug!(
                        node = node_id,
                        id, "cancel after reserve timeout not queued"
                    );
                }
                warn!(node = node_id, id, "reserve timed out");
                Err(ReserveError::Timeout)
            }
        }
    }

    /// Release a reservation on a node. Best effort: if the node is not connected or not
    /// reading, nothing is sent and the node's reservation expires by its TTL.
    pub async fn cancel(&self, node_id: &str, id: u64) {
        let link = self.lock().links.get(node_id).cloned();
        match link {
            Some(link) => {
                if link.tx.try_send(ToNode::Cancel { id }).is_err() {
                    warn!(
                        node = node_id,
                        id, "cancel not queued: node outbox full or closed"
                    );
                }
            }
            None => debug!(
                node = node_id,
                id, "cancel for a node that is not connected"
            ),
        }
    }

    /// Changes whenever a report arrives (for tests and for waking waiters); also when a node
    /// connects or disconnects.
    pub fn updates(&self) -> watch::Receiver<u64> {
        self.updates.subscribe()
    }

    /// Forget a node (operator removes it). If it is still connected it reappears with its
    /// next report. Whether the node was known.
    pub fn forget(&self, node_id: &str) -> bool {
        let removed = self.lock().nodes.remove(node_id).is_some();
        if removed {
            info!(node = node_id, "node forgotten");
            self.bump();
        }
        removed
    }

    /// Send an operator's action to a node. The node carries it out and reports at once, so
    /// its effect shows in the next report; nothing waits for it here.
    pub fn operate(&self, node_id: &str, op: Operation) -> Result<(), OperateError> {
        let (link, supported) = {
            let inner = self.lock();
            (
                inner.links.get(node_id).cloned(),
                inner
                    .nodes
                    .get(node_id)
                    .is_some_and(|e| e.report.operations),
            )
        };
        let link = link.ok_or_else(|| OperateError::NotConnected(node_id.to_string()))?;
        if !supported {
            return Err(OperateError::Unsupported(node_id.to_string()));
        }
        info!(node = node_id, ?op, "operator action sent to the node");
        link.tx
            .try_send(ToNode::Operate(op))
            .map_err(|_| OperateError::Busy(node_id.to_string()))
    }

    /// A connection from `remote` for the node its certificate names: attach it. Messages for
    /// the node come out of the receiver (the driver writes them to the node's stream).
    pub fn attach(
        self: &Arc<Self>,
        node_id: &str,
        remote: SocketAddr,
    ) -> (NodeLink, mpsc::Receiver<ToNode>) {
        let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
        let link = Arc::new(Link {
            conn_id: self.next_id.fetch_add(1, Ordering::Relaxed),
            node_id: node_id.to_string(),
            remote,
            tx,
            replaced: CancellationToken::new(),
            pending: Mutex::new(HashMap::new()),
        });
        (
            NodeLink {
                registry: Arc::clone(self),
                link,
            },
            rx,
        )
    }

    /// Record a report; the newest connection of a node wins (an older one is told to go).
    fn record_report(&self, link: &Arc<Link>, report: Report, now: Instant) -> Result<(), Kick> {
        let node_id = link.node_id.as_str();
        let replaced = {
            let mut inner = self.lock();
            let replaced = match inner.links.get(node_id) {
                Some(cur) if cur.conn_id > link.conn_id => {
                    return Err(Kick {
                        code: CloseCode::Replaced,
                        reason: "replaced by a newer connection",
                    })
                }
                Some(cur) if cur.conn_id == link.conn_id => None,
                _ => inner.links.insert(node_id.to_string(), link.clone()),
            };
            inner.nodes.insert(
                node_id.to_string(),
                NodeEntry {
                    report,
                    received: now,
                    remote: link.remote,
                },
            );
            replaced
        };
        if let Some(old) = replaced {
            info!(node = node_id, old = %old.remote, new = %link.remote, "node reconnected; closing its old connection");
            old.replaced.cancel();
        }
        self.bump();
        Ok(())
    }

    fn disconnect(&self, link: &Arc<Link>) {
        let node_id = link.node_id.as_str();
        let was_current = {
            let mut inner = self.lock();
            let current = inner
                .links
                .get(node_id)
                .is_some_and(|cur| cur.conn_id == link.conn_id);
            if current {
                inner.links.remove(node_id);
            }
            current
        };
        // Waiting reservations learn the connection is gone.
        link.pending().clear();
        if was_current {
            self.bump();
        }
    }

    fn answer(&self, link: &Link, id: u64, answer: Answer) {
        match link.pending().remove(&id) {
            Some((_, tx)) => {
                // The caller may have given up; nothing to do then.
                let _ = tx.send(answer);
            }
            None => debug!(id, "answer for a reservation nobody waits for"),
        }
    }
}

/// Accept node connections until shutdown. The client certificate must chain to the CA
/// (rustls WebPkiClientVerifier); the node ID in every report must equal the CN /
/// `<id>.node.edge` name of the node's certificate, else the connection is closed with a
/// logged reason (a node cannot impersonate another). A node reconnecting replaces its old
/// connection. Bind errors are returned; everything per-connection is logged and contained
/// (never panics, never stops the server).
pub async fn run_server(
    cfg: ServerConfig,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> Result<(), ControlError> {
    let endpoint = bind(&cfg)?;
    serve(endpoint, registry, shutdown).await;
    Ok(())
}

/// Like [`run_server`] but binds first and returns the bound address, then serves in a
/// spawned task (for tests: listen on :0).
pub async fn spawn_server(
    cfg: ServerConfig,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, ControlError> {
    let endpoint = bind(&cfg)?;
    let addr = endpoint.local_addr().map_err(|source| ControlError::Bind {
        addr: cfg.listen,
        source,
    })?;
    tokio::spawn(serve(endpoint, registry, shutdown));
    Ok(addr)
}

/// [`spawn_server`] on a socket already bound (inherited from the balancer this one took
/// over from, or kept across a hand-over that failed). The server runs until `shutdown`,
/// then closes every node's connection explicitly (so nodes reconnect at once) and returns;
/// the socket itself stays open wherever else it is held.
pub fn spawn_server_on(
    cfg: ServerConfig,
    socket: std::net::UdpSocket,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> Result<(tokio::task::JoinHandle<()>, ServerTls), ControlError> {
    let server = server_config(&cfg.ca_pem, &cfg.cert_pem, &cfg.key_pem)?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ControlError::NoRuntime);
    }
    let bind_err = |source| ControlError::Bind {
        addr: cfg.listen,
        source,
    };
    socket.set_nonblocking(true).map_err(bind_err)?;
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind_err)?;
    let tls = ServerTls(endpoint.clone());
    Ok((tokio::spawn(serve(endpoint, registry, shutdown)), tls))
}

/// Swaps the certificates a running control server presents and trusts. It holds the QUIC
/// endpoint: drop it when the server stops, or the endpoint keeps reading its socket.
#[derive(Clone)]
pub struct ServerTls(quinn::Endpoint);

impl ServerTls {
    /// New certificates (PEM): every connection accepted from now on presents `cert_pem`/
    /// `key_pem` and trusts node certificates of `ca_pem`; connections already up keep what
    /// they were made with (their nodes never notice). Refused, keeping the current ones, if
    /// they do not load.
    pub fn reload(&self, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<(), ControlError> {
        self.0
            .set_server_config(Some(server_config(ca_pem, cert_pem, key_pem)?));
        Ok(())
    }
}

fn bind(cfg: &ServerConfig) -> Result<quinn::Endpoint, ControlError> {
    let server = server_config(&cfg.ca_pem, &cfg.cert_pem, &cfg.key_pem)?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(ControlError::NoRuntime);
    }
    quinn::Endpoint::server(server, cfg.listen).map_err(|source| ControlError::Bind {
        addr: cfg.listen,
        source,
    })
}

async fn serve(endpoint: quinn::Endpoint, registry: Arc<Registry>, shutdown: CancellationToken) {
    let local = endpoint.local_addr().ok();
    info!(listen = ?local, "control server listening");
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                if tasks.len() >= MAX_CONNECTIONS {
                    warn!(remote = %incoming.remote_address(), max = MAX_CONNECTIONS, "too many control connections; refusing");
                    incoming.refuse();
                    continue;
                }
                tasks.spawn(handle_connection(incoming, registry.clone(), shutdown.child_token()));
            }
        }
    }
    endpoint.close(close_code(CloseCode::Shutdown), b"balancer shutting down");
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
        endpoint.wait_idle().await;
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    info!(listen = ?local, "control server stopped");
}

/// Why a node session ended.
enum End {
    Shutdown,
    Closed(String),
    Kicked(Kick),
}

async fn handle_connection(
    incoming: quinn::Incoming,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let remote = incoming.remote_address();
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            // Includes certificates from another CA.
            warn!(%remote, error = %e, "control handshake failed");
            return;
        }
        Err(_) => {
            warn!(%remote, "control handshake timed out");
            return;
        }
    };
    let Some(node_id) = connection_node_id(&conn) else {
        warn!(%remote, "client certificate names no node; closing");
        conn.close(
            close_code(CloseCode::Identity),
            b"certificate names no node",
        );
        return;
    };
    let mut core = NodeSession::new(node_id.as_str(), Instant::now());
    let hello_deadline = core.poll_timeout().unwrap_or_else(Instant::now);
    let (send, recv) = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout_at(hello_deadline, conn.accept_bi()) => match r {
            Ok(Ok(streams)) => streams,
            Ok(Err(e)) => {
                info!(node = %node_id, %remote, error = %e, "node closed before opening its stream");
                return;
            }
            Err(_) => {
                warn!(node = %node_id, %remote, "node opened no stream in time; closing");
                conn.close(close_code(CloseCode::Timeout), b"no stream");
                return;
            }
        },
    };
    let (link, rx) = registry.attach(&node_id, remote);
    let end = session(&link, &mut core, send, recv, rx, &shutdown).await;
    // Disconnect before closing, so waiting reservations learn at once.
    drop(link);
    match end {
        End::Shutdown => conn.close(close_code(CloseCode::Shutdown), b"balancer shutting down"),
        End::Closed(reason) => info!(node = %node_id, %remote, %reason, "node disconnected"),
        End::Kicked(Kick { code, reason }) => {
            warn!(node = %node_id, %remote, %reason, "closing node connection");
            conn.close(close_code(code), reason.as_bytes());
        }
    }
}

/// Move bytes between the node's stream and its [`NodeSession`], and the session's messages
/// to the registry, until the session ends.
async fn session(
    link: &NodeLink,
    core: &mut NodeSession,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut rx: mpsc::Receiver<ToNode>,
    shutdown: &CancellationToken,
) -> End {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let hello = core.poll_timeout();
        tokio::select! {
            _ = shutdown.cancelled() => return End::Shutdown,
            _ = link.replaced() => {
                return End::Kicked(Kick { code: CloseCode::Replaced, reason: "replaced by a newer connection" });
            }
            _ = tokio::time::sleep_until(hello.unwrap_or_else(Instant::now)), if hello.is_some() => {
                if let Err(kick) = core.handle_timeout(Instant::now()) {
                    return End::Kicked(kick);
                }
            }
            read = recv.read(&mut buf) => {
                let n = match read {
                    Ok(Some(n)) => n,
                    Ok(None) => return End::Closed("stream finished".into()),
                    Err(e) => return End::Closed(e.to_string()),
                };
                core.handle_bytes(buf.get(..n).unwrap_or_default());
                loop {
                    match core.poll_inbound() {
                        Ok(None) => break,
                        Err(kick) => return End::Kicked(kick),
                        Ok(Some(Inbound::Report { report, first })) => {
                            if first {
                                info!(node = %core.node_id(), remote = %link.remote(), "node connected");
                            }
                            if let Err(kick) = link.report(report, Instant::now()) {
                                return End::Kicked(kick);
                            }
                        }
                        Ok(Some(Inbound::Answer { id, answer })) => link.answer(id, answer),
                    }
                }
            }
            Some(msg) = rx.recv() => {
                let frame = match encode_frame(&msg) {
                    Ok(f) => f,
                    Err(e) => {
                        warn!(node = %core.node_id(), error = %e, "cannot encode message to node");
                        continue;
                    }
                };
                match tokio::time::timeout(WRITE_TIMEOUT, send.write_all(&frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return End::Closed(e.to_string()),
                    Err(_) => return End::Kicked(Kick { code: CloseCode::Timeout, reason: "write timed out" }),
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "server_test.rs"]
mod tests;
