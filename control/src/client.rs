//! Node side of the control plane: keep one QUIC connection to every balancer, push reports,
//! answer reservations.
//!
//! Entry points: [`spawn_client`] with a [`NodeControl`] implementation; the returned
//! [`ClientHandle`] triggers reports ([`ClientHandle::report_now`]), simulates control-plane
//! loss ([`ClientHandle::pause`]) and shows link status ([`ClientHandle::status`]).
//!
//! Protocol: the node opens one bidirectional stream per connection and sends a report at
//! once, then every `report_interval` and on every `report_now`; it answers every
//! [`ToNode::Reserve`] with [`ToBalancer::Reserved`] and applies [`ToNode::Cancel`]. After a
//! successful reserve or a cancel it reports at once, so every balancer learns of it.
//!
//! Layout: the report schedule, the pause drill and the answers to reservations are the pure
//! [`crate::client_session`]; this file is the quinn driver (connect, backoff, read, write).
//!
//! Caveats: [`NodeControl`] methods run on the connection task and must not block. Losing a
//! balancer affects nothing but the reports to it: the task reconnects with jittered
//! exponential backoff until shutdown.

use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::certs::BALANCER_NAME;
use crate::client_session::{answer, pause_until, Answering, BalancerSession, Handled};
use crate::proto::{encode_frame, Report, ToBalancer};
use crate::reservation::Reservation;
pub use crate::reservation::MAX_RESERVE_TTL;
use crate::tls::client_config;
use crate::ControlError;

/// First reconnect delay: quick enough that a balancer restart costs one report at most.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// Longest reconnect delay: a balancer back after an outage gets reports within seconds,
/// while a fleet of nodes retrying a dead balancer sends it little traffic.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A connection that lasted this long was healthy and resets the reconnect backoff. Shorter
/// ones (e.g. closed by the balancer right after the handshake, which is how TLS 1.3 reports a
/// refused client certificate) keep backing off, so a misconfigured node cannot hammer a
/// balancer.
pub const STABLE_CONNECTION: Duration = Duration::from_secs(5);

/// After a balancer closed cleanly (a restart or a hand-over to its successor), retry at
/// [`INITIAL_BACKOFF`] for this long instead of backing off: the successor serves within a
/// second (more on a loaded machine), its placements wait 3 s for known nodes, and the old
/// process refuses our first attempts while it closes.
pub const HANDOVER_RETRY_WINDOW: Duration = Duration::from_secs(5);

/// A handshake slower than this is abandoned and retried (QUIC retransmits its first packet
/// a few times within it, so a balancer that comes up meanwhile is still reached).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a write of one message to a balancer may take before the connection is dropped
/// and re-established (a balancer that stops reading must not stall the node's answers).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest report interval; a zero interval would spin (and tokio refuses it).
pub const MIN_REPORT_INTERVAL: Duration = Duration::from_millis(10);

/// On shutdown, how long to wait for the close to reach the balancer.
pub const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Reservations one balancer may have waiting for the node's key check at once. A balancer
/// asks one node at a time per publisher and gives up after its reserve timeout, so even a
/// busy balancer has a few dozen in flight; more means a broken or hostile peer.
pub const MAX_DECIDING: usize = 1024;

/// Configuration of the node's control-plane client.
#[derive(Clone)]
pub struct ClientConfig {
    /// Every balancer's control address.
    pub balancers: Vec<SocketAddr>,
    /// The cluster CA certificate (PEM) balancer certificates must chain to.
    pub ca_pem: String,
    /// This node's certificate (PEM), naming its node ID.
    pub cert_pem: String,
    /// This node's private key (PEM).
    pub key_pem: String,
    /// How often to report when nothing changes.
    pub report_interval: Duration,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("balancers", &self.balancers)
            .field("report_interval", &self.report_interval)
            .finish_non_exhaustive()
    }
}

/// The node's decision on a reservation, which may wait for an auth backend.
pub type ReserveFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<(), crate::proto::Refused>> + Send + 'static>,
>;

/// A decision already made (for nodes whose checks never wait).
pub fn decided(answer: Result<(), crate::proto::Refused>) -> ReserveFuture {
    Box::pin(std::future::ready(answer))
}

/// What the node does for the control plane.
pub trait NodeControl: Send + Sync + 'static {
    /// A snapshot of the node for a report (seq is filled in by the client).
    fn report(&self) -> Report;
    /// The node's final say on a placement: hold `reservation.milli_units` for
    /// `reservation.ttl` (at most [`MAX_RESERVE_TTL`]) or until the stream arrives, or refuse
    /// with a reason. When the reservation carries credentials, the key is checked first and
    /// a refused key holds nothing, not even for a moment.
    fn reserve(&self, reservation: Reservation) -> ReserveFuture;
    /// Release a reservation (unknown IDs are ignored).
    fn cancel(&self, id: u64);
    /// Carry out an operator's action sent through a balancer. Only called when the node's
    /// reports set [`Report::operations`]; the default does nothing, for nodes that do not.
    fn operate(&self, op: crate::proto::Operation) {
        tracing::warn!(
            ?op,
            "operator action ignored: this node does not carry them out"
        );
    }
}

/// The state of the link to one balancer (for the admin API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BalancerLink {
    /// The balancer's control address.
    pub addr: SocketAddr,
    /// Whether the connection is up.
    pub connected: bool,
    /// Reports sent to this balancer since start.
    pub reports_sent: u64,
    /// Why the last connection attempt or connection failed.
    pub last_error: Option<String>,
}

struct Shared {
    seq: AtomicU64,
    paused_until: Mutex<Option<Instant>>,
    /// Bumped by `report_now` and `pause`; every connection task watches it.
    wake: watch::Sender<u64>,
    links: Vec<Mutex<BalancerLink>>,
    /// The TLS identity and trust of every new connection; [`ClientHandle::reload_tls`]
    /// replaces it (connections already up keep theirs).
    quic: Mutex<quinn::ClientConfig>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn wake(&self) {
        self.wake.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The end of the current pause, if one is in force.
    fn pause_end(&self) -> Option<Instant> {
        let until = (*lock(&self.paused_until))?;
        (until > Instant::now()).then_some(until)
    }

    fn link(&self, i: usize) -> Option<MutexGuard<'_, BalancerLink>> {
        self.links.get(i).map(lock)
    }
}

/// Handle to the running client; cheap to clone.
#[derive(Clone)]
pub struct ClientHandle {
    shared: Arc<Shared>,
}

impl ClientHandle {
    /// Send a report to every balancer now (the node calls this on any change: stream
    /// start/end, state change).
    pub fn report_now(&self) {
        self.shared.wake();
    }

    /// For operators and tests: stop sending reports for `d` while keeping everything else
    /// (simulates control-plane loss). A later call replaces the pause; `Duration::ZERO` ends it.
    pub fn pause(&self, d: Duration) {
        *lock(&self.shared.paused_until) = Some(pause_until(Instant::now(), d));
        self.shared.wake();
    }

    /// New certificates (PEM): every connection made from now on presents `cert_pem`/`key_pem`
    /// and trusts `ca_pem`; those already up keep the identity they were made with (a
    /// connection's identity cannot change, and ending it would only cost a reconnect).
    /// Refused, keeping the current ones, if they do not load.
    pub fn reload_tls(
        &self,
        ca_pem: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> Result<(), ControlError> {
        let quic = client_config(ca_pem, cert_pem, key_pem)?;
        *lock(&self.shared.quic) = quic;
        Ok(())
    }

    /// Per balancer: address, connected or not, reports sent, last error.
    pub fn status(&self) -> Vec<BalancerLink> {
        self.shared.links.iter().map(|l| lock(l).clone()).collect()
    }
}

/// Spawn one task per balancer: connect over QUIC (server name "balancer.edge", verify the
/// balancer's cert against the CA; present the node cert), open one bidirectional stream, send
/// a Report every report_interval and at once on report_now(), answer every ToNode::Reserve
/// with ToBalancer::Reserved (calling NodeControl::reserve) and apply ToNode::Cancel
/// (calling NodeControl::cancel).
/// Reconnect with exponential backoff (start 100 ms, max 5 s, jitter) forever until
/// `shutdown`. Log connect/disconnect (info) with the balancer address.
///
/// Errors: bad certificates or keys, or no tokio runtime. Must be called within a runtime.
pub fn spawn_client(
    cfg: ClientConfig,
    node: Arc<dyn NodeControl>,
    shutdown: CancellationToken,
) -> Result<ClientHandle, ControlError> {
    let quic = client_config(&cfg.ca_pem, &cfg.cert_pem, &cfg.key_pem)?;
    let rt = tokio::runtime::Handle::try_current().map_err(|_| ControlError::NoRuntime)?;
    let (wake, _) = watch::channel(0);
    let shared = Arc::new(Shared {
        seq: AtomicU64::new(0),
        paused_until: Mutex::new(None),
        wake,
        links: cfg
            .balancers
            .iter()
            .map(|&addr| {
                Mutex::new(BalancerLink {
                    addr,
                    connected: false,
                    reports_sent: 0,
                    last_error: None,
                })
            })
            .collect(),
        quic: Mutex::new(quic),
    });
    let interval = cfg.report_interval.max(MIN_REPORT_INTERVAL);
    for (index, &addr) in cfg.balancers.iter().enumerate() {
        let task = LinkTask {
            index,
            addr,
            node: node.clone(),
            shared: shared.clone(),
            interval,
            shutdown: shutdown.clone(),
        };
        rt.spawn(task.run());
    }
    Ok(ClientHandle { shared })
}

/// Delay in `[d/2, d]`, so nodes that lost the same balancer do not retry in lockstep.
fn jitter(d: Duration) -> Duration {
    // RandomState is freshly keyed per call: enough randomness for spreading retries.
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = d / 2;
    let extra = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(if extra == 0 { 0 } else { r % (extra + 1) })
}

/// How one connection ended.
enum End {
    Shutdown,
    /// `connected`: the connection was established; `stable`: it lasted [`STABLE_CONNECTION`]
    /// (so the backoff starts over).
    Failed {
        connected: bool,
        stable: bool,
        /// The balancer closed it cleanly: it is restarting or handing over.
        clean: bool,
        error: String,
    },
}

struct LinkTask {
    index: usize,
    addr: SocketAddr,
    node: Arc<dyn NodeControl>,
    shared: Arc<Shared>,
    interval: Duration,
    shutdown: CancellationToken,
}

impl LinkTask {
    async fn run(self) {
        let mut endpoint: Option<quinn::Endpoint> = None;
        let mut backoff = INITIAL_BACKOFF;
        // Until then, retry quickly: the balancer we knew is handing over.
        let mut quick_until: Option<Instant> = None;
        loop {
            let end = self.connect_and_serve(&mut endpoint).await;
            let (connected, stable, clean, error) = match end {
                End::Shutdown => break,
                End::Failed {
                    connected,
                    stable,
                    clean,
                    error,
                } => (connected, stable, clean, error),
            };
            if clean {
                quick_until = Some(Instant::now() + HANDOVER_RETRY_WINDOW);
            }
            let repeated = {
                let Some(mut link) = self.shared.link(self.index) else {
                    break;
                };
                let repeated = link.last_error.as_deref() == Some(error.as_str());
                link.connected = false;
                link.last_error = Some(error.clone());
                repeated
            };
            if stable {
                backoff = INITIAL_BACKOFF;
            }
            if connected {
                info!(balancer = %self.addr, %error, "control disconnected");
            } else if repeated {
                debug!(balancer = %self.addr, %error, "control connect failed");
            } else {
                warn!(balancer = %self.addr, %error, "control connect failed");
            }
            let delay = if quick_until.is_some_and(|t| Instant::now() < t) {
                jitter(INITIAL_BACKOFF)
            } else {
                let d = jitter(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
                d
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
        if let Some(mut link) = self.shared.link(self.index) {
            link.connected = false;
        }
        if let Some(ep) = endpoint {
            let _ = tokio::time::timeout(CLOSE_GRACE, ep.wait_idle()).await;
        }
        debug!(balancer = %self.addr, "control link task stopped");
    }

    async fn connect_and_serve(&self, endpoint: &mut Option<quinn::Endpoint>) -> End {
        let failed = |error: String| End::Failed {
            connected: false,
            stable: false,
            clean: false,
            error,
        };
        let ep = match endpoint {
            Some(ep) => ep.clone(),
            None => {
                let bind: SocketAddr = if self.addr.is_ipv4() {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (Ipv6Addr::UNSPECIFIED, 0).into()
                };
                match quinn::Endpoint::client(bind) {
                    Ok(ep) => endpoint.insert(ep).clone(),
                    Err(e) => return failed(format!("bind {bind}: {e}")),
                }
            }
        };
        let quic = lock(&self.shared.quic).clone();
        let connecting = match ep.connect_with(quic, self.addr, BALANCER_NAME) {
            Ok(c) => c,
            Err(e) => return failed(e.to_string()),
        };
        let conn = tokio::select! {
            _ = self.shutdown.cancelled() => return End::Shutdown,
            r = tokio::time::timeout(CONNECT_TIMEOUT, connecting) => match r {
                Ok(Ok(conn)) => conn,
                Ok(Err(e)) => return failed(e.to_string()),
                Err(_) => return failed("handshake timed out".into()),
            },
        };
        let (send, recv) = match tokio::time::timeout(CONNECT_TIMEOUT, conn.open_bi()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return failed(e.to_string()),
            Err(_) => return failed("open stream timed out".into()),
        };
        if let Some(mut link) = self.shared.link(self.index) {
            link.connected = true;
            link.last_error = None;
        }
        info!(balancer = %self.addr, "control connected");
        let since = Instant::now();
        let result = self.serve(send, recv).await;
        match result {
            Ok(()) => {
                conn.close(quinn::VarInt::from_u32(0), b"node shutting down");
                End::Shutdown
            }
            Err(e) => {
                // The connection's close reason says more ("closed by peer: 2 (node id ...)")
                // than the stream error ("connection lost").
                let reason = conn.close_reason();
                // A balancer that closed cleanly is restarting or handing over to its
                // successor, which serves at once: reconnect without backing off (a second
                // hand-over a few seconds after the first must not find us waiting).
                let clean = matches!(&reason, Some(quinn::ConnectionError::ApplicationClosed(c))
                    if c.error_code == quinn::VarInt::from_u32(crate::server_session::CloseCode::Shutdown.as_u32()));
                let error = reason.map_or_else(|| e.to_string(), |r| r.to_string());
                conn.close(quinn::VarInt::from_u32(1), b"node closing connection");
                End::Failed {
                    connected: true,
                    stable: clean || since.elapsed() >= STABLE_CONNECTION,
                    clean,
                    error,
                }
            }
        }
    }

    /// Serve one connection until shutdown (`Ok`) or failure.
    async fn serve(
        &self,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) -> Result<(), ControlError> {
        let mut wake = self.shared.wake.subscribe();
        wake.mark_unchanged();
        let mut buf = vec![0u8; READ_CHUNK];
        let mut core = BalancerSession::new(self.interval, Instant::now(), self.shared.pause_end());
        // Reservations whose key check is still running (a webhook may take a while); their
        // answers go out as they are decided. Aborted with the connection.
        let mut deciding = tokio::task::JoinSet::new();
        if core.handle_timeout(Instant::now()) {
            self.send_report(&mut send).await?;
        }
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(core.poll_timeout()) => {
                    if core.handle_timeout(Instant::now()) {
                        self.send_report(&mut send).await?;
                    }
                }
                changed = wake.changed() => {
                    if changed.is_err() {
                        // The handle's sender lives as long as this task; cannot happen.
                        return Ok(());
                    }
                    // Re-read: a pause() may have just started or ended.
                    if core.handle_wake(Instant::now(), self.shared.pause_end()) {
                        self.send_report(&mut send).await?;
                    }
                }
                read = recv.read(&mut buf) => {
                    let n = match read {
                        Ok(Some(n)) => n,
                        Ok(None) => return Err(ControlError::Protocol("balancer finished the stream".into())),
                        Err(e) => return Err(ControlError::Connection(e.to_string())),
                    };
                    core.handle_bytes(buf.get(..n).unwrap_or_default());
                    while let Some(msg) = core.poll_message()? {
                        match answer(msg, &*self.node) {
                            Answering::Done(handled) => self.handled(&mut send, handled).await?,
                            Answering::Pending(f) => {
                                if deciding.len() >= MAX_DECIDING {
                                    return Err(ControlError::Protocol(format!(
                                        "balancer has more than {MAX_DECIDING} reservations in flight"
                                    )));
                                }
                                deciding.spawn(f);
                            }
                        }
                    }
                }
                Some(done) = deciding.join_next(), if !deciding.is_empty() => {
                    match done {
                        Ok(handled) => self.handled(&mut send, handled).await?,
                        Err(e) => warn!(balancer = %self.addr, error = %e, "reservation decision failed"),
                    }
                }
            }
        }
    }

    /// Reply to a decided message and wake the other sessions when something changed.
    async fn handled(
        &self,
        send: &mut quinn::SendStream,
        handled: Handled,
    ) -> Result<(), ControlError> {
        if let Some(reply) = handled.reply() {
            write(send, &encode_frame(&reply)?).await?;
        }
        match handled {
            Handled::Reserved { id, answer } => {
                debug!(balancer = %self.addr, id, ok = answer.is_ok(), "reserve answered");
                if answer.is_ok() {
                    self.shared.wake();
                }
            }
            Handled::Cancelled { id } => {
                debug!(balancer = %self.addr, id, "reservation cancelled");
                self.shared.wake();
            }
            Handled::Operated { op } => {
                info!(balancer = %self.addr, ?op, "operator action from a balancer");
                self.shared.wake();
            }
        }
        Ok(())
    }

    async fn send_report(&self, send: &mut quinn::SendStream) -> Result<(), ControlError> {
        let mut report = self.node.report();
        report.seq = self.shared.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let frame = match encode_frame(&ToBalancer::Report(report)) {
            Ok(f) => f,
            Err(e) => {
                // A local problem (e.g. an enormous stream list): keep the connection for
                // reservations; balancers see the reports stop.
                warn!(balancer = %self.addr, error = %e, "cannot encode report");
                return Ok(());
            }
        };
        write(send, &frame).await?;
        if let Some(mut link) = self.shared.link(self.index) {
            link.reports_sent += 1;
        }
        Ok(())
    }
}

async fn write(send: &mut quinn::SendStream, frame: &[u8]) -> Result<(), ControlError> {
    match tokio::time::timeout(WRITE_TIMEOUT, send.write_all(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ControlError::Connection(e.to_string())),
        Err(_) => Err(ControlError::Timeout("write to balancer")),
    }
}
