//! Balancer side of the control plane: accept node connections, keep what each node last
//! reported, and ask nodes to reserve capacity.
//!
//! Entry points: [`run_server`] (serve until shutdown), [`spawn_server`] (bind, then serve in
//! a task; for tests and for `edge dev`), and [`Registry`], shared with placement and the
//! admin API.
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

use crate::proto::{encode_frame, FrameDecoder, Report, ToBalancer, ToNode};
use crate::tls::{connection_node_id, server_config};
use crate::ControlError;

/// Most node connections (including ones still in their handshake) served at once. A fleet
/// has tens to hundreds of nodes; the cap only stops a flood of bogus handshakes from
/// exhausting memory.
pub const MAX_CONNECTIONS: usize = 4096;

/// A QUIC + TLS handshake that takes longer than this is abandoned (a healthy one takes a
/// few round trips); stops half-open handshakes from holding connection slots.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// After the handshake, a node must open its stream and send its first report within this
/// time (it does so at once), or it is dropped: connections that never identify themselves
/// hold no slot for long.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

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

/// QUIC application close codes sent to nodes (the reason text says more).
mod close {
    use quinn::VarInt;
    /// Server shutting down.
    pub const SHUTDOWN: VarInt = VarInt::from_u32(0);
    /// Malformed frame or unexpected message.
    pub const PROTOCOL: VarInt = VarInt::from_u32(1);
    /// Certificate names no node, or a report names another node.
    pub const IDENTITY: VarInt = VarInt::from_u32(2);
    /// The same node connected again; this connection is obsolete.
    pub const REPLACED: VarInt = VarInt::from_u32(3);
    /// The node took too long to identify itself or to read.
    pub const TIMEOUT: VarInt = VarInt::from_u32(4);
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

/// Why a reservation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// The node has no control connection to this balancer.
    #[error("node not connected")]
    NotConnected,
    /// The node said no, for this reason.
    #[error("node refused: {0}")]
    Refused(String),
    /// The node did not answer in time (a cancel was sent in case it did reserve).
    #[error("node did not answer in time")]
    Timeout,
    /// The connection ended before the node answered.
    #[error("connection closed before the node answered")]
    Closed,
}

type Answer = Result<(), String>;

/// One live connection to a node.
struct Link {
    conn_id: u64,
    remote: SocketAddr,
    conn: quinn::Connection,
    tx: mpsc::Sender<ToNode>,
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

/// Result of recording a report.
enum Recorded {
    Ok,
    /// A newer connection of the same node exists; this one must go.
    Stale,
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
    /// the node is not connected. On timeout a cancel is sent, in case the node did reserve.
    pub async fn reserve(
        &self,
        node_id: &str,
        id: u64,
        milli_units: u32,
        stream_ref: Option<String>,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<(), ReserveError> {
        self.reserve_with(node_id, id, milli_units, stream_ref, ttl, timeout, None)
            .await
    }

    /// Like [`Registry::reserve`], handing the node the stream's continuation (the packager
    /// numbering from the node that had it), so a returning stream keeps its URL's numbering.
    #[allow(clippy::too_many_arguments)]
    pub async fn reserve_with(
        &self,
        node_id: &str,
        id: u64,
        milli_units: u32,
        stream_ref: Option<String>,
        ttl: Duration,
        timeout: Duration,
        continuation: Option<serde_json::Value>,
    ) -> Result<(), ReserveError> {
        let deadline = Instant::now() + timeout;
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
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let msg = ToNode::Reserve {
            id,
            milli_units,
            stream_ref,
            ttl_ms,
            continuation,
        };
        match tokio::time::timeout_at(deadline, link.tx.send(msg)).await {
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
    /// next report.
    pub fn forget(&self, node_id: &str) {
        let removed = self.lock().nodes.remove(node_id).is_some();
        if removed {
            info!(node = node_id, "node forgotten");
            self.bump();
        }
    }

    fn record_report(&self, link: &Arc<Link>, node_id: &str, report: Report) -> Recorded {
        let replaced = {
            let mut inner = self.lock();
            let replaced = match inner.links.get(node_id) {
                Some(cur) if cur.conn_id > link.conn_id => return Recorded::Stale,
                Some(cur) if cur.conn_id == link.conn_id => None,
                _ => inner.links.insert(node_id.to_string(), link.clone()),
            };
            inner.nodes.insert(
                node_id.to_string(),
                NodeEntry {
                    report,
                    received: Instant::now(),
                    remote: link.remote,
                },
            );
            replaced
        };
        if let Some(old) = replaced {
            info!(node = node_id, old = %old.remote, new = %link.remote, "node reconnected; closing its old connection");
            old.conn
                .close(close::REPLACED, b"replaced by a newer connection");
        }
        self.bump();
        Recorded::Ok
    }

    fn disconnect(&self, link: &Arc<Link>, node_id: &str) {
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
                let conn_id = registry.next_id.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(handle_connection(incoming, registry.clone(), shutdown.child_token(), conn_id));
            }
        }
    }
    endpoint.close(close::SHUTDOWN, b"balancer shutting down");
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
    Kicked {
        code: quinn::VarInt,
        reason: &'static str,
    },
}

async fn handle_connection(
    incoming: quinn::Incoming,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    conn_id: u64,
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
        conn.close(close::IDENTITY, b"certificate names no node");
        return;
    };
    let hello_deadline = Instant::now() + HELLO_TIMEOUT;
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
                conn.close(close::TIMEOUT, b"no stream");
                return;
            }
        },
    };
    let (tx, rx) = mpsc::channel(OUTBOX_CAPACITY);
    let link = Arc::new(Link {
        conn_id,
        remote,
        conn: conn.clone(),
        tx,
        pending: Mutex::new(HashMap::new()),
    });
    let end = session(
        &registry,
        &link,
        &node_id,
        send,
        recv,
        rx,
        hello_deadline,
        &shutdown,
    )
    .await;
    registry.disconnect(&link, &node_id);
    match end {
        End::Shutdown => conn.close(close::SHUTDOWN, b"balancer shutting down"),
        End::Closed(reason) => info!(node = %node_id, %remote, %reason, "node disconnected"),
        End::Kicked { code, reason } => {
            warn!(node = %node_id, %remote, %reason, "closing node connection");
            conn.close(code, reason.as_bytes());
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn session(
    registry: &Registry,
    link: &Arc<Link>,
    node_id: &str,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    mut rx: mpsc::Receiver<ToNode>,
    hello_deadline: Instant,
    shutdown: &CancellationToken,
) -> End {
    let mut decoder = FrameDecoder::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut identified = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return End::Shutdown,
            _ = tokio::time::sleep_until(hello_deadline), if !identified => {
                return End::Kicked { code: close::TIMEOUT, reason: "no report in time" };
            }
            read = recv.read(&mut buf) => {
                let n = match read {
                    Ok(Some(n)) => n,
                    Ok(None) => return End::Closed("stream finished".into()),
                    Err(e) => return End::Closed(e.to_string()),
                };
                decoder.push(buf.get(..n).unwrap_or_default());
                loop {
                    let msg = match decoder.next::<ToBalancer>() {
                        Ok(Some(msg)) => msg,
                        Ok(None) => break,
                        Err(e) => {
                            warn!(node = %node_id, error = %e, "bad frame from node");
                            return End::Kicked { code: close::PROTOCOL, reason: "bad frame" };
                        }
                    };
                    match msg {
                        ToBalancer::Report(report) => {
                            if report.node_id != node_id {
                                warn!(cert_node = %node_id, report_node = %report.node_id, remote = %link.remote,
                                    "report names another node than the certificate");
                                return End::Kicked { code: close::IDENTITY, reason: "node id does not match certificate" };
                            }
                            if !identified {
                                info!(node = %node_id, remote = %link.remote, "node connected");
                                identified = true;
                            }
                            if let Recorded::Stale = registry.record_report(link, node_id, report) {
                                return End::Kicked { code: close::REPLACED, reason: "replaced by a newer connection" };
                            }
                        }
                        ToBalancer::Reserved { id, ok, reason } => {
                            if !identified {
                                return End::Kicked { code: close::PROTOCOL, reason: "first message must be a report" };
                            }
                            registry.answer(link, id, if ok { Ok(()) } else { Err(reason) });
                        }
                    }
                }
            }
            Some(msg) = rx.recv() => {
                let frame = match encode_frame(&msg) {
                    Ok(f) => f,
                    Err(e) => {
                        warn!(node = %node_id, error = %e, "cannot encode message to node");
                        continue;
                    }
                };
                match tokio::time::timeout(WRITE_TIMEOUT, send.write_all(&frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return End::Closed(e.to_string()),
                    Err(_) => return End::Kicked { code: close::TIMEOUT, reason: "write timed out" },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Server behaviour against a hand-driven QUIC client (what a broken or hostile node does).
    use super::*;
    use crate::certs::{issue, new_ca, Pem, Role};
    use crate::proto::{NodeState, MAX_FRAME};
    use crate::tls::client_config;

    struct Raw {
        conn: quinn::Connection,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        _ep: quinn::Endpoint,
    }

    async fn raw_connect(ca: &Pem, node: &Pem, addr: SocketAddr) -> Raw {
        let cfg = client_config(&ca.cert_pem, &node.cert_pem, &node.key_pem).unwrap();
        let ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let conn = ep
            .connect_with(cfg, addr, crate::certs::BALANCER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (send, recv) = conn.open_bi().await.unwrap();
        Raw {
            conn,
            send,
            recv,
            _ep: ep,
        }
    }

    fn report(id: &str) -> Report {
        Report {
            node_id: id.into(),
            seq: 1,
            rtmp_addr: "127.0.0.1:1".parse().unwrap(),
            srt_addr: "127.0.0.1:2".parse().unwrap(),
            http_addr: "127.0.0.1:3".parse().unwrap(),
            state: NodeState::Ready,
            overloaded: false,
            capacity_milli_units: 1,
            used_milli_units: 0,
            stream_milli_units: 1,
            cpu: 0.0,
            streams: vec![],
            reservations: vec![],
            served: vec![],
            continuations: Default::default(),
        }
    }

    async fn start() -> (Pem, Arc<Registry>, SocketAddr, CancellationToken) {
        let ca = new_ca("t").unwrap();
        let bal = issue(&ca, &Role::Balancer("b".into())).unwrap();
        let registry = Registry::new();
        let stop = CancellationToken::new();
        let cfg = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ca_pem: ca.cert_pem.clone(),
            cert_pem: bal.cert_pem,
            key_pem: bal.key_pem,
        };
        let addr = spawn_server(cfg, registry.clone(), stop.clone())
            .await
            .unwrap();
        (ca, registry, addr, stop)
    }

    async fn wait_node(registry: &Registry, id: &str) {
        tokio::time::timeout(Duration::from_secs(2), async {
            while !registry.snapshot().iter().any(|n| n.report.node_id == id) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn bad_frames_close_only_that_connection() {
        let (ca, registry, addr, stop) = start().await;
        let good = issue(&ca, &Role::Node("good".into())).unwrap();
        let mut g = raw_connect(&ca, &good, addr).await;
        g.send
            .write_all(&encode_frame(&ToBalancer::Report(report("good"))).unwrap())
            .await
            .unwrap();
        wait_node(&registry, "good").await;

        // Oversize length prefix after a valid report.
        let bad = issue(&ca, &Role::Node("bad".into())).unwrap();
        let mut b = raw_connect(&ca, &bad, addr).await;
        b.send
            .write_all(&encode_frame(&ToBalancer::Report(report("bad"))).unwrap())
            .await
            .unwrap();
        b.send
            .write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
            .await
            .unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(2), b.conn.closed())
            .await
            .unwrap();
        assert!(
            matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == close::PROTOCOL),
            "{reason:?}"
        );
        // Garbage JSON before any report.
        let mut b2 = raw_connect(&ca, &bad, addr).await;
        b2.send
            .write_all(&[0, 0, 0, 3, b'{', b'{', b'{'])
            .await
            .unwrap();
        let reason = tokio::time::timeout(Duration::from_secs(2), b2.conn.closed())
            .await
            .unwrap();
        assert!(
            matches!(reason, quinn::ConnectionError::ApplicationClosed(_)),
            "{reason:?}"
        );

        // The good node is untouched and the server still accepts.
        assert!(g.conn.close_reason().is_none());
        let mut r2 = report("good");
        r2.seq = 2;
        g.send
            .write_all(&encode_frame(&ToBalancer::Report(r2)).unwrap())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(2), async {
            while !registry
                .snapshot()
                .iter()
                .any(|n| n.report.node_id == "good" && n.report.seq == 2)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        let other = issue(&ca, &Role::Node("other".into())).unwrap();
        let mut o = raw_connect(&ca, &other, addr).await;
        o.send
            .write_all(&encode_frame(&ToBalancer::Report(report("other"))).unwrap())
            .await
            .unwrap();
        wait_node(&registry, "other").await;
        stop.cancel();
    }

    #[tokio::test]
    async fn reserve_timeout_sends_cancel_and_reconnect_replaces() {
        let (ca, registry, addr, stop) = start().await;
        let cert = issue(&ca, &Role::Node("n".into())).unwrap();
        let mut a = raw_connect(&ca, &cert, addr).await;
        a.send
            .write_all(&encode_frame(&ToBalancer::Report(report("n"))).unwrap())
            .await
            .unwrap();
        wait_node(&registry, "n").await;

        // The node never answers.
        let t = Instant::now();
        let r = registry
            .reserve(
                "n",
                42,
                5,
                None,
                Duration::from_secs(3),
                Duration::from_millis(300),
            )
            .await;
        assert_eq!(r, Err(ReserveError::Timeout));
        assert!(t.elapsed() < Duration::from_secs(1));
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < 2 {
            let n = tokio::time::timeout(Duration::from_secs(2), a.recv.read(&mut buf))
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            dec.push(&buf[..n]);
            while let Some(m) = dec.next::<ToNode>().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(
            got[0],
            ToNode::Reserve {
                id: 42,
                milli_units: 5,
                stream_ref: None,
                ttl_ms: 3000,
                continuation: None
            }
        );
        assert_eq!(got[1], ToNode::Cancel { id: 42 });

        // A reserve waiting on a connection that gets replaced ends with Closed, and the new
        // connection is the one used afterwards.
        let reg2 = registry.clone();
        let waiting = tokio::spawn(async move {
            reg2.reserve(
                "n",
                43,
                5,
                None,
                Duration::from_secs(3),
                Duration::from_secs(5),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut b = raw_connect(&ca, &cert, addr).await;
        b.send
            .write_all(&encode_frame(&ToBalancer::Report(report("n"))).unwrap())
            .await
            .unwrap();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(2), waiting)
                .await
                .unwrap()
                .unwrap(),
            Err(ReserveError::Closed)
        );
        let reason = tokio::time::timeout(Duration::from_secs(2), a.conn.closed())
            .await
            .unwrap();
        assert!(
            matches!(&reason, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == close::REPLACED),
            "{reason:?}"
        );
        let snap = registry.snapshot();
        assert_eq!(snap.len(), 1);
        assert!(snap[0].connected);
        assert_eq!(snap[0].remote.port(), b._ep.local_addr().unwrap().port());

        // Answer through the new connection.
        let reg3 = registry.clone();
        let waiting = tokio::spawn(async move {
            reg3.reserve(
                "n",
                44,
                5,
                None,
                Duration::from_secs(3),
                Duration::from_secs(2),
            )
            .await
        });
        let mut dec = FrameDecoder::new();
        let n = tokio::time::timeout(Duration::from_secs(2), b.recv.read(&mut buf))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        dec.push(&buf[..n]);
        assert!(matches!(
            dec.next::<ToNode>().unwrap(),
            Some(ToNode::Reserve { id: 44, .. })
        ));
        let no = ToBalancer::Reserved {
            id: 44,
            ok: false,
            reason: "draining".into(),
        };
        b.send.write_all(&encode_frame(&no).unwrap()).await.unwrap();
        assert_eq!(
            waiting.await.unwrap(),
            Err(ReserveError::Refused("draining".into()))
        );
        stop.cancel();
    }
}
