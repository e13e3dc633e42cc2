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
use crate::proto::{encode_frame, FrameDecoder, Report, ToBalancer, ToNode};
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

/// A handshake slower than this is abandoned and retried (QUIC retransmits its first packet
/// a few times within it, so a balancer that comes up meanwhile is still reached).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a write of one message to a balancer may take before the connection is dropped
/// and re-established (a balancer that stops reading must not stall the node's answers).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest report interval; a zero interval would spin (and tokio refuses it).
pub const MIN_REPORT_INTERVAL: Duration = Duration::from_millis(10);

/// Longest reservation TTL the node is asked to honour: a relayed encoder arrives within
/// seconds, so a longer TTL from a buggy balancer would only strand capacity.
pub const MAX_RESERVE_TTL: Duration = Duration::from_secs(60);

/// On shutdown, how long to wait for the close to reach the balancer.
pub const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 16 * 1024;

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

/// What the node does for the control plane.
pub trait NodeControl: Send + Sync + 'static {
    /// A snapshot of the node for a report (seq is filled in by the client).
    fn report(&self) -> Report;
    /// The node's final say on a placement: hold `milli_units` for `ttl` (or until the stream
    /// arrives) or refuse with a reason.
    fn reserve(
        &self,
        id: u64,
        milli_units: u32,
        stream_ref: Option<&str>,
        ttl: Duration,
    ) -> Result<(), String>;
    /// Release a reservation (unknown IDs are ignored).
    /// Like [`NodeControl::reserve`], with the stream's continuation from the node that had it
    /// (when the balancer places a returning stream on another node). Default: ignore it.
    fn reserve_with(
        &self,
        id: u64,
        milli_units: u32,
        stream_ref: Option<&str>,
        ttl: Duration,
        continuation: Option<serde_json::Value>,
    ) -> Result<(), String> {
        let _ = continuation;
        self.reserve(id, milli_units, stream_ref, ttl)
    }
    fn cancel(&self, id: u64);
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
        let now = Instant::now();
        // Far enough to mean "until further notice" without overflowing.
        let until = now
            .checked_add(d)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        *lock(&self.shared.paused_until) = Some(until);
        self.shared.wake();
    }

    /// Per balancer: address, connected or not, reports sent, last error.
    pub fn status(&self) -> Vec<BalancerLink> {
        self.shared.links.iter().map(|l| lock(l).clone()).collect()
    }
}

/// Spawn one task per balancer: connect over QUIC (server name "balancer.edge", verify the
/// balancer's cert against the CA; present the node cert), open one bidirectional stream, send
/// a Report every report_interval and at once on report_now(), answer every ToNode::Reserve
/// with ToBalancer::Reserved (calling NodeControl::reserve) and apply ToNode::Cancel.
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
    });
    let interval = cfg.report_interval.max(MIN_REPORT_INTERVAL);
    for (index, &addr) in cfg.balancers.iter().enumerate() {
        let task = LinkTask {
            index,
            addr,
            quic: quic.clone(),
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
        error: String,
    },
}

struct LinkTask {
    index: usize,
    addr: SocketAddr,
    quic: quinn::ClientConfig,
    node: Arc<dyn NodeControl>,
    shared: Arc<Shared>,
    interval: Duration,
    shutdown: CancellationToken,
}

impl LinkTask {
    async fn run(self) {
        let mut endpoint: Option<quinn::Endpoint> = None;
        let mut backoff = INITIAL_BACKOFF;
        loop {
            let end = self.connect_and_serve(&mut endpoint).await;
            let (connected, stable, error) = match end {
                End::Shutdown => break,
                End::Failed {
                    connected,
                    stable,
                    error,
                } => (connected, stable, error),
            };
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
            let delay = jitter(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
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
        let connecting = match ep.connect_with(self.quic.clone(), self.addr, BALANCER_NAME) {
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
                let error = conn
                    .close_reason()
                    .map_or_else(|| e.to_string(), |r| r.to_string());
                conn.close(quinn::VarInt::from_u32(1), b"node closing connection");
                End::Failed {
                    connected: true,
                    stable: since.elapsed() >= STABLE_CONNECTION,
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
        let mut decoder = FrameDecoder::new();
        let mut buf = vec![0u8; READ_CHUNK];
        let mut tick = tokio::time::interval_at(Instant::now() + self.interval, self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if self.shared.pause_end().is_none() {
            self.send_report(&mut send).await?;
        }
        loop {
            let pause_end = self.shared.pause_end();
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    if pause_end.is_none() {
                        self.send_report(&mut send).await?;
                    }
                }
                changed = wake.changed() => {
                    if changed.is_err() {
                        // The handle's sender lives as long as this task; cannot happen.
                        return Ok(());
                    }
                    // Re-read: a pause() may have just started or ended.
                    if self.shared.pause_end().is_none() {
                        self.send_report(&mut send).await?;
                        tick.reset();
                    }
                }
                _ = tokio::time::sleep_until(pause_end.unwrap_or_else(Instant::now)), if pause_end.is_some() => {
                    self.send_report(&mut send).await?;
                    tick.reset();
                }
                read = recv.read(&mut buf) => {
                    let n = match read {
                        Ok(Some(n)) => n,
                        Ok(None) => return Err(ControlError::Protocol("balancer finished the stream".into())),
                        Err(e) => return Err(ControlError::Connection(e.to_string())),
                    };
                    decoder.push(buf.get(..n).unwrap_or_default());
                    while let Some(msg) = decoder.next::<ToNode>()? {
                        self.handle(msg, &mut send).await?;
                    }
                }
            }
        }
    }

    async fn handle(&self, msg: ToNode, send: &mut quinn::SendStream) -> Result<(), ControlError> {
        match msg {
            ToNode::Reserve {
                id,
                milli_units,
                stream_ref,
                ttl_ms,
                continuation,
            } => {
                let ttl = Duration::from_millis(ttl_ms).min(MAX_RESERVE_TTL);
                let answer = self.node.reserve_with(
                    id,
                    milli_units,
                    stream_ref.as_deref(),
                    ttl,
                    continuation,
                );
                debug!(balancer = %self.addr, id, milli_units, ok = answer.is_ok(), "reserve answered");
                let ok = answer.is_ok();
                let reply = match answer {
                    Ok(()) => ToBalancer::Reserved {
                        id,
                        ok: true,
                        reason: String::new(),
                    },
                    Err(reason) => ToBalancer::Reserved {
                        id,
                        ok: false,
                        reason,
                    },
                };
                write(send, &encode_frame(&reply)?).await?;
                if ok {
                    self.shared.wake();
                }
            }
            ToNode::Cancel { id } => {
                debug!(balancer = %self.addr, id, "reservation cancelled");
                self.node.cancel(id);
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
