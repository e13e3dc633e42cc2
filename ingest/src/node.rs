//! The ingest node: its configuration, its state (ready, full, overloaded, draining,
//! cordoned), and the registry of live streams, shared by every connection.
//!
//! Entry points: [`Node::new`]; then the publish path in [`crate::admission`]
//! ([`Node::admit`]); capacity in [`crate::capacity`](mod@crate::capacity); what the node reports in
//! [`crate::report`]; the packager bridge in [`crate::output`].

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use dashmap::DashMap;
use edge_config::Config;
use packager::Origin;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{AuthError, Authenticator, Grant},
    capacity::{Capacity, Reservation},
    cpu::CpuSampler,
    metrics,
    pipeline::Plan,
};

pub use crate::admission::{Admission, AdmitError};
pub use crate::output::StreamOutput;
pub use crate::report::StreamInfo;

/// How often expired reservations are released and the CPU is sampled.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

pub use server::wall_clock;

/// Protocols publishers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Rtmp,
    Srt,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::Srt => "srt",
        }
    }
}

/// Node states as the admin API reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Ready,
    Full,
    Overloaded,
    Draining,
    Cordoned,
}

/// One live stream in the registry.
pub(crate) struct Active {
    pub(crate) session_id: u64,
    pub(crate) stream_ref: String,
    pub(crate) reservation: Option<u64>,
    pub(crate) protocol: Protocol,
    pub(crate) client: SocketAddr,
    pub(crate) started: SystemTime,
    pub(crate) cancel: CancellationToken,
    pub(crate) milli_units: Arc<AtomicU32>,
    pub(crate) plan: Arc<Mutex<Option<Plan>>>,
    pub(crate) health: Arc<crate::health::Health>,
}

/// The node: shared by every connection.
pub struct Node {
    pub config: Config,
    pub origin: Origin,
    /// Stream keys and webhook; replaced whole by [`Node::reload`] (a check in flight keeps
    /// the one it started with).
    auth: std::sync::RwLock<Arc<Authenticator>>,
    /// The admin API's token; replaced by [`Node::reload`].
    admin_token: std::sync::RwLock<String>,
    /// `control.trusted_proxies` (canonical addresses), replaced by [`Node::reload`].
    trusted: std::sync::RwLock<Vec<std::net::IpAddr>>,
    /// The accept loops whose per-address caps exempt the trusted proxies (their exemptions
    /// follow a reload).
    acceptors: Mutex<Vec<Arc<server::Acceptor>>>,
    pub(crate) capacity: Capacity,
    draining: AtomicBool,
    cordoned: AtomicBool,
    /// Machine CPU use, 0..=1, as f32 bits (sampled by [`Node::housekeeping`]).
    cpu: AtomicU32,
    /// Called on every change a balancer should hear about at once (set by the control link).
    on_change: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// The control-plane link, when the node has balancers.
    control: std::sync::OnceLock<control::client::ClientHandle>,
    pub(crate) next_session: AtomicU64,
    pub(crate) active: DashMap<String, Active>,
    /// Last session that published each playback ID, for the reconnect window.
    pub(crate) last_session: DashMap<String, u64>,
    /// Reservations a balancer cancelled before the node decided them (see
    /// [`Node::cancel_from_balancer`]), with when; forgotten after `MAX_RESERVE_TTL`.
    early_cancels: Mutex<std::collections::HashMap<u64, Instant>>,
    /// Stream keys (as stream refs) an operator blocked with a kick, until when.
    blocked: Mutex<std::collections::HashMap<String, Instant>>,
    /// Refused keys per source address (`auth.refused_publishes_per_minute`).
    refusals: server::RefusalLimiter,
    /// Lifecycle and health events to `events.url` (see [`crate::events`]).
    pub events: Arc<crate::events::Events>,
    /// The state the last `node.state_changed` event (or the start) saw.
    last_state: Mutex<Option<NodeState>>,
}

/// Early cancels remembered at once: a balancer cancels only what timed out, a few at a time;
/// the cap bounds what a broken balancer can make us hold.
const MAX_EARLY_CANCELS: usize = 4096;

/// The longest an operator's kick may refuse a stream's key (the balancer refuses longer
/// asks; this bounds what a node keeps): a permanent ban belongs in the auth backend.
pub const MAX_KEY_BLOCK: Duration = Duration::from_secs(24 * 3600);

/// `control.trusted_proxies` as the node compares them: canonical (an IPv4-mapped IPv6 address
/// is the IPv4 address it carries).
fn trusted_of(config: &Config) -> Vec<std::net::IpAddr> {
    config
        .control
        .as_ref()
        .map(|c| {
            c.trusted_proxies
                .iter()
                .map(|ip| ip.to_canonical())
                .collect()
        })
        .unwrap_or_default()
}

/// A poisoned lock still holds plain values: keep using them.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    pub fn new(config: Config, capacity_milli_units: u32, origin: Origin) -> Arc<Self> {
        Arc::new(Self {
            auth: std::sync::RwLock::new(Arc::new(Authenticator::new(&config))),
            admin_token: std::sync::RwLock::new(config.admin.token.clone()),
            trusted: std::sync::RwLock::new(trusted_of(&config)),
            acceptors: Mutex::new(Vec::new()),
            refusals: server::RefusalLimiter::new(config.auth.refused_publishes_per_minute),
            events: Arc::new(crate::events::Events::new(&config)),
            last_state: Mutex::new(None),
            config,
            origin,
            capacity: Capacity::new(capacity_milli_units),
            draining: AtomicBool::new(false),
            cordoned: AtomicBool::new(false),
            cpu: AtomicU32::new(0),
            on_change: std::sync::OnceLock::new(),
            control: std::sync::OnceLock::new(),
            next_session: AtomicU64::new(1),
            active: DashMap::new(),
            last_session: DashMap::new(),
            early_cancels: Mutex::new(std::collections::HashMap::new()),
            blocked: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// The key checker in force now.
    pub(crate) fn authenticator(&self) -> Arc<Authenticator> {
        match self.auth.read() {
            Ok(a) => Arc::clone(&a),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Whether `given` is the admin token in force now.
    /// The admin token in force (it changes on reload).
    pub fn admin_token(&self) -> String {
        self.admin_token
            .read()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Apply a reloaded config (SIGHUP): stream keys, playback IDs and SRT passphrases of new
    /// publishers, the webhook, the admin token. Live streams are untouched: a stream whose
    /// key was removed keeps publishing until it ends, and its next publish is refused. What
    /// needs a restart (listen addresses, ladder, packaging, control plane) is logged.
    pub fn reload(&self, new: &Config) {
        if let Ok(mut a) = self.auth.write() {
            *a = Arc::new(Authenticator::new(new));
        }
        if let Ok(mut t) = self.admin_token.write() {
            *t = new.admin.token.clone();
        }
        self.refusals
            .set_limit(new.auth.refused_publishes_per_minute);
        let trusted = trusted_of(new);
        for a in lock(&self.acceptors).iter() {
            a.set_exempt(trusted.clone());
        }
        if let Ok(mut t) = self.trusted.write() {
            *t = trusted;
        }
        self.reload_certificates(new);
        let old = &self.config;
        // Compared through Debug: these settings are read once at start, so any difference
        // means the running node does not follow the file there (the types hold no secrets
        // Debug would print; keys and tokens are redacted). Trusted proxies do follow it.
        let differs =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let without_trusted = |c: &Option<edge_config::ControlConfig>| {
            c.clone().map(|mut c| {
                c.trusted_proxies.clear();
                c
            })
        };
        if differs(&old.listen, &new.listen)
            || differs(&old.ladder, &new.ladder)
            || differs(&old.hls, &new.hls)
            || differs(
                &without_trusted(&old.control),
                &without_trusted(&new.control),
            )
            || differs(&old.transcode, &new.transcode)
        {
            tracing::warn!("listen addresses, ladder, HLS, transcode or control-plane settings changed: they apply at the next restart");
        }
        tracing::info!(node.id = %self.config.node.id, streams = new.streams.len(), "config reloaded: keys, webhook, admin token, trusted proxies and control-plane certificates");
    }

    /// Load the control plane's certificate files again (renewed in place, or at new paths):
    /// every connection to a balancer made from now on presents them; connections already up
    /// keep theirs, so no report or stream notices. Files that do not load are refused with
    /// the reason, and the node keeps the certificates it has.
    fn reload_certificates(&self, new: &Config) {
        let (Some(c), Some(handle)) = (new.control.as_ref(), self.control.get()) else {
            return;
        };
        let t = &c.tls;
        let loaded = control::certs::TlsFiles::at(&t.ca, &t.cert, &t.key)
            .load()
            .and_then(|(ca, own)| handle.reload_tls(&ca.cert_pem, &own.cert_pem, &own.key_pem));
        match loaded {
            Ok(()) => {
                control::process_metrics::refresh_certificates(&t.ca, &t.cert);
                tracing::info!(cert = %t.cert.display(), "control-plane certificates reloaded; new connections to balancers use them");
            }
            Err(e) => {
                tracing::error!(error = %e, "control-plane certificates not reloaded; keeping the current ones")
            }
        }
    }

    /// Exempt `control.trusted_proxies` from `acceptor`'s per-address cap, now and after every
    /// reload.
    pub fn exempt_trusted(&self, acceptor: &Arc<server::Acceptor>) {
        acceptor.set_exempt(self.trusted_proxies());
        lock(&self.acceptors).push(Arc::clone(acceptor));
    }

    /// Whether `ip` is one of our balancers (may send PROXY headers and reservation IDs).
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self.trusted.read() {
            Ok(t) => t.contains(&ip),
            Err(p) => p.into_inner().contains(&ip),
        }
    }

    /// The balancers' addresses (exempt from per-IP connection caps).
    pub fn trusted_proxies(&self) -> Vec<std::net::IpAddr> {
        match self.trusted.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity.total()
    }
    pub fn used(&self) -> u32 {
        self.capacity.used()
    }
    pub fn overloaded(&self) -> bool {
        self.capacity.overloaded(Instant::now())
    }
    pub(crate) fn mark_overloaded(&self) {
        if self.capacity.mark_overloaded(Instant::now()) {
            tracing::warn!(node.id = %self.config.node.id, "pipeline behind real time: node overloaded, refusing new streams");
        }
    }
    pub fn start_draining(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            tracing::info!(node.id = %self.config.node.id, streams = self.active.len(), "node draining: no new streams");
            self.changed();
        }
    }
    /// Cordon (no new streams, keep the live ones) or lift it.
    pub fn set_cordoned(&self, on: bool) {
        if self.cordoned.swap(on, Ordering::AcqRel) != on {
            tracing::info!(node.id = %self.config.node.id, cordoned = on, "node cordon changed");
            self.changed();
        }
    }
    pub fn set_control(&self, handle: control::client::ClientHandle) {
        let _ = self.control.set(handle);
    }
    pub fn control(&self) -> Option<&control::client::ClientHandle> {
        self.control.get()
    }
    /// Register the callback that pushes a report to the balancers.
    pub fn set_on_change(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_change.set(f);
    }
    pub(crate) fn changed(&self) {
        if let Some(f) = self.on_change.get() {
            f();
        }
    }
    pub fn cpu(&self) -> f32 {
        f32::from_bits(self.cpu.load(Ordering::Relaxed))
    }
    pub fn state(&self) -> NodeState {
        if self.draining.load(Ordering::Acquire) {
            NodeState::Draining
        } else if self.cordoned.load(Ordering::Acquire) {
            NodeState::Cordoned
        } else if self.overloaded() {
            NodeState::Overloaded
        } else if self.capacity.free() < self.config.stream_milli_units() {
            NodeState::Full
        } else {
            NodeState::Ready
        }
    }
    pub fn stream_count(&self) -> usize {
        self.active.len()
    }

    /// Whether the node takes new streams at all (not draining, cordoned or overloaded).
    pub(crate) fn admissible(&self) -> Result<(), AdmitError> {
        if self.draining.load(Ordering::Acquire) {
            return Err(AdmitError::Full("draining"));
        }
        if self.cordoned.load(Ordering::Acquire) {
            return Err(AdmitError::Full("cordoned"));
        }
        if self.overloaded() {
            return Err(AdmitError::Full(
                "overloaded: a pipeline is behind real time",
            ));
        }
        Ok(())
    }

    /// A balancer's placement, decided in one step: when the balancer sent the publisher's
    /// credentials, check the key first (config, then webhook) and refuse without holding
    /// anything; then hold the capacity. This is the node's final say.
    pub fn decide_reservation(
        self: &Arc<Self>,
        r: control::Reservation,
    ) -> control::client::ReserveFuture {
        let node = Arc::clone(self);
        Box::pin(async move {
            let grant = match &r.credentials {
                None => None,
                Some(c) => {
                    let checked = match node.blocked_for(&control::stream_ref(&c.key)) {
                        Some(left) => Err(AuthError::Blocked(left)),
                        None => {
                            node.authenticator()
                                .check(&c.key, c.client_addr, &c.protocol)
                                .await
                        }
                    };
                    match checked {
                        Ok(g) => Some((g, control::stream_ref(&c.key))),
                        Err(e) => {
                            let kind = match e {
                                AuthError::Refused => control::RefusalKind::Credentials,
                                AuthError::WebhookUnavailable(_) => {
                                    control::RefusalKind::AuthUnavailable
                                }
                                // Not produced here: the balancer limits its own addresses.
                                AuthError::Limited(_) | AuthError::Blocked(_) => {
                                    control::RefusalKind::Credentials
                                }
                            };
                            metrics::RESERVATIONS
                                .with_label_values(&[AdmitError::Auth(e.clone()).label()])
                                .inc();
                            return Err(control::Refused {
                                kind,
                                reason: e.to_string(),
                            });
                        }
                    }
                }
            };
            let c = r
                .continuation
                .and_then(|v| serde_json::from_value::<packager::Continuation>(v).ok());
            node.reserve(r.id, r.milli_units, r.ttl, c, grant)
                .map_err(control::Refused::capacity)
        })
    }

    /// Reserve `milli_units` for `ttl` until the relayed stream arrives; refuses when that
    /// would exceed the capacity, or when the balancer already cancelled this reservation
    /// (its cancel overtook a slow key check).
    pub fn reserve(
        &self,
        id: u64,
        milli_units: u32,
        ttl: Duration,
        continuation: Option<packager::Continuation>,
        grant: Option<(Grant, String)>,
    ) -> Result<(), String> {
        if self.capacity.has_reservation(id) {
            return Ok(()); // a retried request
        }
        if lock(&self.early_cancels).remove(&id).is_some() {
            return Err("reservation cancelled by the balancer".into());
        }
        let refused = |e: String| {
            metrics::RESERVATIONS
                .with_label_values(&["refused_full"])
                .inc();
            e
        };
        self.admissible().map_err(|e| refused(e.to_string()))?;
        self.capacity
            .charge(milli_units)
            .map_err(|_| refused(AdmitError::Full("no free transcode units").to_string()))?;
        self.capacity.insert_reservation(
            id,
            Reservation {
                milli_units,
                expires: Instant::now() + ttl,
                continuation,
                grant,
            },
        );
        metrics::RESERVATIONS.with_label_values(&["granted"]).inc();
        tracing::debug!(
            reservation = id,
            milli_units,
            "capacity reserved for a balancer"
        );
        self.changed();
        Ok(())
    }

    /// Release a reservation (its stream was refused, or nothing came of it).
    pub fn cancel_reservation(&self, id: u64) {
        if let Some(r) = self.capacity.take_reservation(id) {
            self.capacity.release(r.milli_units);
            self.changed();
        }
    }

    /// A balancer cancelled a reservation. If the node has not decided it yet (its key check
    /// is still running), remember the cancel so the decision holds nothing.
    pub fn cancel_from_balancer(&self, id: u64) {
        if self.capacity.has_reservation(id) {
            self.cancel_reservation(id);
            return;
        }
        let mut early = lock(&self.early_cancels);
        if early.len() < MAX_EARLY_CANCELS {
            early.insert(id, Instant::now());
        }
    }

    /// The key check for a publisher: the one its reservation was granted on when the
    /// balancer sent credentials for this key, else a fresh one. A refusal releases the
    /// reservation at once.
    pub async fn authenticate_for(
        &self,
        key: &str,
        client: SocketAddr,
        protocol: Protocol,
        reservation: Option<u64>,
    ) -> Result<Grant, AuthError> {
        let sref = control::stream_ref(key);
        if let Some(left) = self.blocked_for(&sref) {
            if let Some(id) = reservation.filter(|id| self.capacity.has_reservation(*id)) {
                self.cancel_reservation(id);
            }
            return Err(AuthError::Blocked(left));
        }
        if let Some(g) = reservation.and_then(|id| self.capacity.reservation_grant(id, &sref)) {
            return Ok(g);
        }
        let now = Instant::now();
        self.refusals.check(client.ip(), now)?;
        let checked = self.authenticate(key, client, protocol).await;
        if matches!(checked, Err(AuthError::Refused)) && self.refusals.record(client.ip(), now) {
            tracing::warn!(client.ip = %client.ip(), "address over its refused-publish limit: refused at once for a while");
        }
        if checked.is_err() {
            if let Some(id) = reservation.filter(|id| self.capacity.has_reservation(*id)) {
                // Capacity was held for a key that is now refused: the balancer did not send
                // credentials (an older balancer), or the key was removed meanwhile.
                metrics::RESERVATIONS
                    .with_label_values(&["granted_then_refused_key"])
                    .inc();
                self.cancel_reservation(id);
            }
        }
        checked
    }

    /// Release expired reservations and sample the CPU; run every [`HOUSEKEEPING_INTERVAL`].
    pub fn housekeeping(&self, cpu: &mut CpuSampler) {
        let now = Instant::now();
        lock(&self.early_cancels)
            .retain(|_, at| now.saturating_duration_since(*at) <= control::MAX_RESERVE_TTL);
        let expired = self.capacity.expire(now);
        if expired > 0 {
            tracing::info!(count = expired, "reservations expired unused");
            self.changed();
        }
        if let Some(c) = cpu.sample() {
            self.cpu.store(c.to_bits(), Ordering::Relaxed);
        }
        let mut by_health = [0i64; crate::health::Status::ALL.len()];
        let mut by_issue = [0i64; crate::health::ISSUE_KINDS.len()];
        for a in self.active.iter() {
            let j = a.health.judge(now, self.config.node.overload_lag);
            if let Some(i) = crate::health::Status::ALL
                .iter()
                .position(|s| *s == j.status)
            {
                by_health[i] += 1;
            }
            for (n, kind) in by_issue.iter_mut().zip(crate::health::ISSUE_KINDS) {
                *n += i64::from(j.issues.iter().any(|i| i.kind == kind));
            }
            if a.health.report_change(j.status, &j.issues) {
                self.events.emit(
                    "stream.health_changed",
                    serde_json::json!({
                        "playback_id": a.key(),
                        "session_id": a.session_id,
                        "health": j.status.as_str(),
                        "reason": j.reason,
                        "issues": j.issues,
                    }),
                );
            }
        }
        let state = self.state();
        let previous = lock(&self.last_state).replace(state);
        if previous.is_some_and(|p| p != state) {
            self.events.emit(
                "node.state_changed",
                serde_json::json!({ "state": state, "previous": previous }),
            );
        }
        for (status, n) in crate::health::Status::ALL.iter().zip(by_health) {
            metrics::STREAMS_BY_HEALTH
                .with_label_values(&[status.as_str()])
                .set(n);
        }
        for (kind, n) in crate::health::ISSUE_KINDS.iter().zip(by_issue) {
            metrics::STREAM_ISSUES.with_label_values(&[kind]).set(n);
        }
    }

    /// Whether the node is draining (for its report).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether an operator cordoned the node (for its report).
    pub fn is_cordoned(&self) -> bool {
        self.cordoned.load(Ordering::Acquire)
    }

    /// Only the key check, for protocols that must answer before admitting (SRT passphrase).
    pub async fn authenticate(
        &self,
        key: &str,
        client: SocketAddr,
        protocol: Protocol,
    ) -> Result<Grant, AuthError> {
        self.authenticator()
            .check(key, client, protocol.as_str())
            .await
    }

    /// Ask a stream's publisher to stop (admin kick). True if it was live.
    /// End the live publish of `playback_id`; with a non-zero `block`, refuse its key that
    /// long (here, and on every node through the balancers, which read it from the reports).
    /// Whether the stream was live.
    pub fn kick(&self, playback_id: &str, block: Duration) -> bool {
        let Some(sref) = self.active.get(playback_id).map(|a| {
            a.cancel.cancel();
            a.stream_ref.clone()
        }) else {
            return false;
        };
        if !block.is_zero() {
            let until = Instant::now() + block.min(MAX_KEY_BLOCK);
            let mut blocked = lock(&self.blocked);
            let now = Instant::now();
            blocked.retain(|_, t| *t > now);
            blocked.insert(sref, until);
        }
        tracing::info!(stream.id = %playback_id, block_s = block.as_secs(), "stream kicked by an operator");
        self.changed();
        true
    }

    /// How much longer an operator's block on `stream_ref` runs, if any.
    pub fn blocked_for(&self, stream_ref: &str) -> Option<Duration> {
        let now = Instant::now();
        lock(&self.blocked)
            .get(stream_ref)
            .map(|t| t.saturating_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// The blocks still running, as the control plane reports them (ms left).
    pub fn blocked_keys(&self) -> std::collections::BTreeMap<String, u64> {
        let now = Instant::now();
        lock(&self.blocked)
            .iter()
            .filter(|(_, t)| **t > now)
            .map(|(r, t)| {
                let left = t.saturating_duration_since(now).as_millis();
                (r.clone(), u64::try_from(left).unwrap_or(u64::MAX))
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "node_test.rs"]
mod tests;
