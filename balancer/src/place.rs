//! The placement service: turns the nodes' reports into a choice, and gets the chosen node's
//! final say before a single byte of the encoder is relayed.
//!
//! [`Placer::place`] asks the pure placement [`Policy`] for candidates (free units minus pending
//! placements, affinity for a returning stream), then asks each candidate in turn to hold
//! capacity (a reservation over the control plane). The first node that says yes gets the
//! stream; a node that says no, or does not answer in [`RESERVE_TIMEOUT`], is skipped. When
//! none can, the stream is refused; a relay that cannot use its placement gives it back with
//! [`Placer::cancel`]. Nothing here ever touches a relayed connection.
//!
//! The placer also keeps what viewers and operators need from the reports: which node serves a
//! playback ID ([`Placer::nodes_serving`]) and every node's status ([`Placer::nodes`]).

use std::{
    sync::{atomic::AtomicU64, atomic::Ordering, Arc, Mutex, MutexGuard},
    time::Duration,
};

use control::server::{NodeSnapshot, Registry, ReserveError};
use control::Reservation;
use edge_config::BalancerConfig;
use tokio::time::Instant;

use crate::{
    metrics,
    placement::{AdminState, NodeStatus, NodeView, Pending, Policy, PolicyConfig},
};

/// How long a node may take to answer a reservation before we try the next one. A node on
/// the same network answers in a millisecond; this bounds what a sick node costs a publisher.
pub const RESERVE_TIMEOUT: Duration = Duration::from_secs(3);

/// After taking over from a previous balancer, how long a placement waits for a node that
/// has not reconnected its control plane yet (nodes reconnect within ~100 ms; their reports
/// carried over, so they are known, just not reachable for a moment).
pub const TAKEOVER_RECONNECT_WAIT: Duration = Duration::from_secs(3);

/// What a [`Placer`] knows, for the balancer that takes over (times as ages).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PlacerState {
    pub policy: crate::placement::PolicyState,
    /// (stream_ref, playback ID, ms since last seen)
    pub refs: Vec<(String, String, u64)>,
    pub next_id: u64,
    pub nodes: Vec<control::server::ExportedNode>,
}

/// How long past the reconnect window a stream_ref → playback ID memory is kept.
const REF_MEMORY_MARGIN: Duration = Duration::from_secs(60);

/// A node's HLS origin for one playback ID, as the playback router reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Its plain HTTP origin.
    pub http: std::net::SocketAddr,
    /// Its HTTPS origin, if it has one.
    pub https: Option<std::net::SocketAddr>,
    /// Its packager serves the ID (every rendition has a segment).
    pub serves: bool,
}

/// One node that has a playback ID, as the playback router needs it.
#[derive(Debug, Clone, Copy)]
struct Route {
    http_addr: std::net::SocketAddr,
    https_addr: Option<std::net::SocketAddr>,
    /// Its packager serves the ID (every rendition has a segment).
    serves: bool,
    /// An encoder of the stream is connected to it.
    live: bool,
    received: tokio::time::Instant,
    connected: bool,
}

/// A placement the chosen node accepted.
#[derive(Debug, Clone)]
pub struct Placed {
    pub node_id: String,
    pub reservation: u64,
    pub rtmp_addr: std::net::SocketAddr,
    pub srt_addr: std::net::SocketAddr,
}

/// Why a stream could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// No node is ready with free units (or every candidate refused).
    #[error("no node can take a stream: {0}")]
    NoCapacity(String),
    /// A node checked the key and refused it: no node was asked to hold anything for it.
    #[error("stream key refused")]
    KeyRefused,
    /// The node's auth backend failed; not the publisher's fault, worth a retry.
    #[error("auth backend unavailable, try again: {0}")]
    AuthUnavailable(String),
    /// This address had too many keys refused lately.
    #[error(transparent)]
    Limited(#[from] server::Limited),
    /// An operator kicked this stream and refuses its key for a while (`edge ctl kick --block`).
    #[error("stream key blocked by an operator for {} more s", .0.as_secs().max(1))]
    Blocked(Duration),
}

/// A node as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeInfo {
    pub id: String,
    pub status: NodeStatus,
    pub connected: bool,
    pub report_age_ms: u64,
    pub capacity_milli_units: u32,
    pub used_milli_units: u32,
    pub free_milli_units: u32,
    pub stream_milli_units: u32,
    pub cpu: f32,
    pub streams: usize,
    pub rtmp_addr: std::net::SocketAddr,
    pub srt_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    /// Playback IDs this node serves to viewers.
    pub served: Vec<String>,
}

/// The placement service of a balancer (one per process, shared by the RTMP and SRT fronts,
/// the playback router and the admin API).
pub struct Placer {
    registry: Arc<Registry>,
    /// Which playback ID each stream_ref had, from the reports, so a returning stream placed
    /// on another node can take its numbering along.
    refs: Mutex<std::collections::HashMap<String, (String, Instant)>>,
    /// Playback ID → the nodes that serve or carry it, rebuilt on every report, so a viewer
    /// request looks up a few entries instead of copying every node's report.
    routes: Mutex<std::collections::HashMap<String, Vec<Route>>>,
    policy: Mutex<Policy>,
    settings: Mutex<Settings>,
    next_id: AtomicU64,
    seed: AtomicU64,
    /// Refused keys per source address (`balancer.refused_publishes_per_minute`).
    refusals: server::RefusalLimiter,
    /// Until when a placement waits for a known node's control connection (set on takeover).
    reconnect_grace: Mutex<Option<Instant>>,
}

/// What [`Placer::reconfigure`] changes besides the policy's own settings.
#[derive(Debug, Clone)]
struct Settings {
    reservation_ttl: Duration,
    policy: PolicyConfig,
}

impl Settings {
    fn new(cfg: &BalancerConfig) -> Self {
        Settings {
            reservation_ttl: cfg.reservation_ttl,
            policy: PolicyConfig::from(cfg),
        }
    }
}

/// A panic elsewhere while holding a lock must not take placement down: the data is plain
/// values, still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A random-ish u64 from the process's hasher keys (seeded from the OS once per thread), the
/// PID and a counter.
pub fn random_u64() -> u64 {
    random_start() << 1 ^ random_start()
}

/// Reservation IDs must not collide between balancers placing on the same node: start each
/// balancer at a random point of the 64-bit space.
fn random_start() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish() >> 1
}

impl Placer {
    pub fn new(cfg: &BalancerConfig, registry: Arc<Registry>) -> Arc<Self> {
        let settings = Settings::new(cfg);
        Arc::new(Self {
            registry,
            refs: Mutex::new(std::collections::HashMap::new()),
            routes: Mutex::new(std::collections::HashMap::new()),
            policy: Mutex::new(Policy::new(settings.policy.clone())),
            settings: Mutex::new(settings),
            next_id: AtomicU64::new(random_start()),
            seed: AtomicU64::new(random_start()),
            refusals: server::RefusalLimiter::new(cfg.refused_publishes_per_minute),
            reconnect_grace: Mutex::new(None),
        })
    }

    /// The control plane's view of the nodes (for `operate.rs`).
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything the next balancer needs to place as this one would.
    pub fn export(&self) -> PlacerState {
        let now = Instant::now();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        PlacerState {
            policy: lock(&self.policy).export(now),
            refs: lock(&self.refs)
                .iter()
                .map(|(r, (pid, seen))| {
                    (
                        r.clone(),
                        pid.clone(),
                        ms(now.saturating_duration_since(*seen)),
                    )
                })
                .collect(),
            next_id: self.next_id.load(Ordering::Relaxed),
            nodes: self.registry.export(now),
        }
    }

    /// Continue from a predecessor's [`Placer::export`]; nodes not yet reconnected are
    /// waited for during [`TAKEOVER_RECONNECT_WAIT`].
    pub fn import(&self, st: PlacerState) {
        let now = Instant::now();
        lock(&self.policy).import(st.policy, now);
        {
            let mut refs = lock(&self.refs);
            for (r, pid, age) in st.refs {
                let seen = now.checked_sub(Duration::from_millis(age)).unwrap_or(now);
                refs.insert(r, (pid, seen));
            }
        }
        // Reservation IDs go on from where the predecessor was, never reused.
        self.next_id.fetch_max(st.next_id, Ordering::Relaxed);
        self.registry.import(st.nodes, now);
        *lock(&self.reconnect_grace) = Some(now + TAKEOVER_RECONNECT_WAIT);
        // Route viewers from the imported reports at once: otherwise the routing table stays
        // empty until each node's first report on its new connection, and a viewer's request
        // in that moment gets 404 "unknown stream".
        self.learn(&self.registry.snapshot(), now);
    }

    /// Wait (within the takeover grace) for `node_id` to reconnect; `true` if it did.
    async fn await_reconnect(&self, node_id: &str) -> bool {
        let Some(until) = *lock(&self.reconnect_grace) else {
            return false;
        };
        let mut updates = self.registry.updates();
        loop {
            if self.registry.connected(node_id) {
                return true;
            }
            if tokio::time::timeout_at(until, updates.changed())
                .await
                .is_err()
            {
                return self.registry.connected(node_id);
            }
        }
    }

    /// Apply a reloaded config (placement settings only; pending placements are kept).
    pub fn reconfigure(&self, cfg: &BalancerConfig) {
        let settings = Settings::new(cfg);
        lock(&self.policy).reconfigure(settings.policy.clone());
        self.refusals.set_limit(cfg.refused_publishes_per_minute);
        *lock(&self.settings) = settings;
    }

    fn views(snapshot: &[NodeSnapshot]) -> Vec<NodeView> {
        snapshot
            .iter()
            .map(|n| NodeView {
                id: n.report.node_id.clone(),
                state: match n.report.state {
                    control::NodeState::Ready => AdminState::Ready,
                    control::NodeState::Draining => AdminState::Draining,
                    control::NodeState::Cordoned => AdminState::Cordoned,
                },
                overloaded: n.report.overloaded,
                last_report: n.received,
                capacity: n.report.capacity_milli_units,
                used: n.report.used_milli_units,
                stream_cost: n.report.stream_milli_units,
                streams: n
                    .report
                    .streams
                    .iter()
                    .map(|s| s.stream_ref.clone())
                    .collect(),
                reservations: n.report.reservations.clone(),
                stream_reservations: n
                    .report
                    .streams
                    .iter()
                    .filter_map(|s| s.reservation)
                    .collect(),
            })
            .collect()
    }

    /// Learn from every report as it arrives (not only when placing), so the stream_ref →
    /// playback ID memory covers streams that started and ended between two placements.
    pub async fn learn_forever(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let mut updates = self.registry.updates();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                r = updates.changed() => if r.is_err() { break },
            }
            let snapshot = self.registry.snapshot();
            self.learn(&snapshot, Instant::now());
        }
    }

    /// Remember stream_ref → playback ID from the reports; forget after the reconnect window.
    fn learn(&self, snapshot: &[NodeSnapshot], now: Instant) {
        let window = lock(&self.settings).policy.reconnect_window;
        {
            let mut refs = lock(&self.refs);
            for n in snapshot {
                for st in &n.report.streams {
                    refs.insert(st.stream_ref.clone(), (st.playback_id.clone(), now));
                }
            }
            refs.retain(|_, (_, seen)| {
                now.saturating_duration_since(*seen) <= window + REF_MEMORY_MARGIN
            });
        }
        let mut routes: std::collections::HashMap<String, Vec<Route>> =
            std::collections::HashMap::new();
        for n in snapshot {
            let ids = n
                .report
                .served
                .iter()
                .chain(n.report.streams.iter().map(|s| &s.playback_id));
            for id in ids {
                let entry = routes.entry(id.clone()).or_default();
                if entry.iter().any(|r| r.http_addr == n.report.http_addr) {
                    continue;
                }
                entry.push(Route {
                    http_addr: n.report.http_addr,
                    https_addr: n.report.https_addr,
                    serves: n.report.served.contains(id),
                    live: n.report.streams.iter().any(|s| &s.playback_id == id),
                    received: n.received,
                    connected: n.connected,
                });
            }
        }
        *lock(&self.routes) = routes;
    }

    /// The freshest continuation any node reports for the stream behind `stream_ref`.
    fn continuation(
        &self,
        snapshot: &[NodeSnapshot],
        stream_ref: &str,
    ) -> Option<serde_json::Value> {
        let pid = lock(&self.refs).get(stream_ref)?.0.clone();
        snapshot
            .iter()
            .filter_map(|n| n.report.continuations.get(&pid).map(|c| (n.received, c)))
            .max_by_key(|(t, _)| *t)
            .map(|(_, c)| c.clone())
    }

    /// Choose a node for a new stream and get its promise. `stream_ref` (the key's one-way
    /// fingerprint) sends a returning stream back to its node when that node can take it.
    /// `credentials` go with the reservation, so the node checks the key before it holds
    /// anything; a refused key is not tried on another node, and counts against its
    /// address's refusal limit.
    pub async fn place(
        &self,
        stream_ref: Option<&str>,
        exclude: &[String],
        credentials: Option<control::Credentials>,
    ) -> Result<Placed, PlaceError> {
        let (placed, ()) = self
            .place_with(stream_ref, exclude, credentials, |_| async {})
            .await?;
        Ok(placed)
    }

    /// [`Self::place`], running `prepare` for each node asked while its reservation is in
    /// flight, with the node and reservation ID it would get: the RTMP front connects to the
    /// node and does the RTMP handshake meanwhile, so a publish waits for the longer of the
    /// two round trips instead of both. What `prepare` made for a node that refused is
    /// dropped. It must not let the node act on the reservation before it is granted (the
    /// node checks it at `publish`, which goes only after this returns).
    pub async fn place_with<T, F, Fut>(
        &self,
        stream_ref: Option<&str>,
        exclude: &[String],
        credentials: Option<control::Credentials>,
        prepare: F,
    ) -> Result<(Placed, T), PlaceError>
    where
        F: Fn(&Placed) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        if let Some(c) = &credentials {
            if let Err(limited) = self.refusals.check(c.client_addr.ip(), Instant::now()) {
                metrics::PLACEMENTS
                    .with_label_values(&["rate_limited"])
                    .inc();
                return Err(limited.into());
            }
        }
        let client_ip = credentials.as_ref().map(|c| c.client_addr.ip());
        let snapshot = self.registry.snapshot();
        let now = Instant::now();
        if let Some(left) = stream_ref.and_then(|r| crate::operate::blocked_in(&snapshot, r, now)) {
            metrics::PLACEMENTS.with_label_values(&["blocked"]).inc();
            return Err(PlaceError::Blocked(left));
        }
        let views = Self::views(&snapshot);
        let continuation = stream_ref.and_then(|r| self.continuation(&snapshot, r));
        let seed = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let candidates = {
            let mut p = lock(&self.policy);
            p.observe(&views, now);
            p.candidates(&views, stream_ref, None, seed, now)
        };
        let ttl = lock(&self.settings).reservation_ttl;
        let mut why = String::from("no ready node has free units");
        for node_id in candidates.iter().filter(|c| !exclude.contains(c)) {
            let Some(snap) = snapshot.iter().find(|s| &s.report.node_id == node_id) else {
                continue;
            };
            let units = snap.report.stream_milli_units;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let candidate = Placed {
                node_id: node_id.clone(),
                reservation: id,
                rtmp_addr: snap.report.rtmp_addr,
                srt_addr: snap.report.srt_addr,
            };
            let reserve = async {
                if !self.registry.connected(node_id) {
                    // Just after a takeover the nodes are reconnecting: a moment's wait.
                    self.await_reconnect(node_id).await;
                }
                self.registry
                    .reserve(
                        node_id,
                        Reservation {
                            id,
                            milli_units: units,
                            stream_ref: stream_ref.map(str::to_string),
                            ttl,
                            continuation: continuation.clone(),
                            credentials: credentials.clone(),
                        },
                        RESERVE_TIMEOUT,
                    )
                    .await
            };
            // Both at once; a refusal does not wait for `prepare` (it may be a connect that
            // times out).
            let prep = prepare(&candidate);
            tokio::pin!(prep, reserve);
            let mut prepared = None;
            let reserved = loop {
                tokio::select! {
                    r = &mut reserve => break r,
                    p = &mut prep, if prepared.is_none() => prepared = Some(p),
                }
            };
            match reserved {
                Ok(()) => {
                    let prepared = match prepared {
                        Some(p) => p,
                        None => prep.await,
                    };
                    metrics::PLACEMENTS.with_label_values(&["accepted"]).inc();
                    lock(&self.policy).add_pending(Pending {
                        id,
                        node: node_id.clone(),
                        milli_units: units,
                        expires: Instant::now() + ttl,
                    });
                    tracing::info!(node.id = %node_id, reservation = id, "stream placed");
                    return Ok((candidate, prepared));
                }
                Err(ReserveError::Refused(refused)) => match refused.kind {
                    control::RefusalKind::Credentials => {
                        metrics::PLACEMENTS
                            .with_label_values(&["refused_key"])
                            .inc();
                        if let Some(ip) = client_ip {
                            if self.refusals.record(ip, Instant::now()) {
                                tracing::warn!(client.ip = %ip, "address over its refused-publish limit: refused at once for a while");
                            }
                        }
                        return Err(PlaceError::KeyRefused);
                    }
                    control::RefusalKind::AuthUnavailable => {
                        metrics::PLACEMENTS
                            .with_label_values(&["auth_unavailable"])
                            .inc();
                        tracing::warn!(node.id = %node_id, reason = %refused.reason, "node's auth backend unavailable");
                        return Err(PlaceError::AuthUnavailable(refused.reason));
                    }
                    control::RefusalKind::Capacity => {
                        metrics::PLACEMENTS
                            .with_label_values(&["refused_by_node"])
                            .inc();
                        tracing::info!(node.id = %node_id, reason = %refused.reason, "node refused the placement");
                        why = format!("nodes refused (last: {})", refused.reason);
                    }
                },
                Err(e) => {
                    metrics::PLACEMENTS
                        .with_label_values(&["node_unreachable"])
                        .inc();
                    tracing::warn!(node.id = %node_id, error = %e, "node did not answer the placement");
                    why = "nodes did not answer".into();
                }
            }
        }
        metrics::PLACEMENTS
            .with_label_values(&["no_capacity"])
            .inc();
        Err(PlaceError::NoCapacity(why))
    }

    /// The relay could not use a placement (the node was unreachable, the encoder left before
    /// the relay started): cancel the reservation.
    pub async fn cancel(&self, placed: &Placed) {
        lock(&self.policy).remove_pending(placed.reservation);
        self.registry
            .cancel(&placed.node_id, placed.reservation)
            .await;
    }

    /// Every node that serves or carries `playback_id`, best first: where it is live first,
    /// else where it is retained (waiting for a reconnect, or ended); among those, the most
    /// recently heard from. Nodes that stopped reporting are used only if no other has it.
    pub fn nodes_serving(&self, playback_id: &str) -> Vec<Origin> {
        let lost_after = lock(&self.settings).policy.lost_after;
        let now = Instant::now();
        let mut v: Vec<Route> = lock(&self.routes)
            .get(playback_id)
            .cloned()
            .unwrap_or_default();
        // A node whose packager already serves the ID (every rendition has a segment) beats
        // one where the encoder has just arrived; live beats retained; fresher beats older.
        v.sort_by_key(|r| {
            let fresh = r.connected && now.saturating_duration_since(r.received) < lost_after;
            std::cmp::Reverse((fresh && r.serves, r.serves, r.live, r.received))
        });
        v.into_iter()
            .map(|r| Origin {
                http: r.http_addr,
                https: r.https_addr,
                serves: r.serves,
            })
            .collect()
    }

    /// Every node this balancer has heard of, with its status; also refreshes node metrics.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let snapshot = self.registry.snapshot();
        let views = Self::views(&snapshot);
        let now = Instant::now();
        let mut p = lock(&self.policy);
        p.observe(&views, now);
        let mut out: Vec<NodeInfo> = snapshot
            .iter()
            .zip(views.iter())
            .map(|(s, v)| {
                let status = p.status(v, now);
                let free = p.free_units(v, now);
                let age = now.saturating_duration_since(v.last_report);
                metrics::NODE_FREE
                    .with_label_values(&[&v.id])
                    .set(i64::from(free));
                metrics::REPORT_AGE
                    .with_label_values(&[&v.id])
                    .set(age.as_secs_f64());
                for st in ["ready", "full", "draining", "cordoned", "lost"] {
                    let on = serde_json::to_value(status)
                        .ok()
                        .and_then(|x| x.as_str().map(|x| x == st))
                        .unwrap_or(false);
                    metrics::NODE_STATE
                        .with_label_values(&[&v.id, st])
                        .set(i64::from(on));
                }
                NodeInfo {
                    id: v.id.clone(),
                    status,
                    connected: s.connected,
                    report_age_ms: age.as_millis() as u64,
                    capacity_milli_units: v.capacity,
                    used_milli_units: v.used,
                    free_milli_units: free,
                    stream_milli_units: v.stream_cost,
                    cpu: s.report.cpu,
                    streams: s.report.streams.len(),
                    rtmp_addr: s.report.rtmp_addr,
                    srt_addr: s.report.srt_addr,
                    http_addr: s.report.http_addr,
                    served: s.report.served.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        crate::capacity_metrics::record(&out);
        out
    }
}

#[cfg(test)]
#[path = "place_test.rs"]
pub(crate) mod tests;
