//! The ingest node: configuration, capacity, the registry of live streams, and the publish
//! path that RTMP and SRT share.
//!
//! Entry points: [`Node::new`], then [`Node::admit`] when a publisher names its key. An
//! [`Admission`] holds the stream's capacity reservation and registry entry; both are released
//! when it is dropped. [`StreamOutput`] is the [`pipeline::Output`] that feeds the packager and
//! watches that encoding keeps up with real time.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use dashmap::DashMap;
use edge_config::Config;
use packager::{CodecConfig, Origin, RenditionKind, RenditionPlan, Sample, StreamHandle};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{AuthError, Authenticator, Grant},
    metrics,
    pipeline::{self, ArrivalLog, InputFormat, Output, Pipeline, PipelineSpec, Plan},
};

/// How long a new publisher waits for the one it replaces (same key) to release its stream.
const REPLACE_WAIT: Duration = Duration::from_secs(5);
/// After the last lagging frame, how long the node stays marked overloaded (refusing new
/// streams) so one late frame does not flap admission.
const OVERLOAD_HOLD: Duration = Duration::from_secs(30);
/// How long a pipeline may take to drain after its input ended before it is stopped.
const PIPELINE_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often expired reservations are released and the CPU is sampled.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Capacity a balancer asked this node to hold for a stream it is about to relay.
struct Held {
    milli_units: u32,
    expires: Instant,
    /// Numbering to continue, when the stream was live on another node.
    continuation: Option<packager::Continuation>,
}

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

/// Why a publisher was not admitted. Each maps to a protocol-level refusal.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// The stream key is wrong (or the webhook said no).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Not enough free transcode units, or the node is overloaded or draining.
    #[error("node is full: {0}")]
    Full(&'static str),
    /// The publisher this one replaces did not let go in time.
    #[error("previous publisher of this stream did not release it")]
    Busy,
}

impl AdmitError {
    /// A low-cardinality metric label.
    pub fn label(&self) -> &'static str {
        match self {
            AdmitError::Auth(AuthError::Refused) => "refused_key",
            AdmitError::Auth(_) => "auth_unavailable",
            AdmitError::Full(_) => "refused_full",
            AdmitError::Busy => "refused_busy",
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

/// A stream being published, as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    /// Identifies this publish session (changes when the encoder reconnects).
    pub session_id: u64,
    pub playback_id: String,
    pub protocol: Protocol,
    pub client_addr: String,
    pub state: &'static str,
    pub started_unix_ms: u64,
    pub milli_units: u32,
    pub source: Option<String>,
    pub renditions: Vec<String>,
}

struct Active {
    session_id: u64,
    stream_ref: String,
    reservation: Option<u64>,
    protocol: Protocol,
    client: SocketAddr,
    started: SystemTime,
    cancel: CancellationToken,
    milli_units: Arc<AtomicU32>,
    plan: Arc<Mutex<Option<Plan>>>,
}

/// The node: shared by every connection.
pub struct Node {
    pub config: Config,
    pub origin: Origin,
    auth: Authenticator,
    capacity: u32,
    used: AtomicU32,
    overloaded_until: Mutex<Option<Instant>>,
    draining: AtomicBool,
    cordoned: AtomicBool,
    reservations: Mutex<HashMap<u64, Held>>,
    /// Machine CPU use, 0..=1, as f32 bits (sampled by [`Node::housekeeping`]).
    cpu: AtomicU32,
    /// Called on every change a balancer should hear about at once (set by the control link).
    on_change: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// The control-plane link, when the node has balancers.
    control: std::sync::OnceLock<control::client::ClientHandle>,
    next_session: AtomicU64,
    active: DashMap<String, Active>,
    /// Last session that published each playback ID, for the reconnect window.
    last_session: DashMap<String, u64>,
}

impl Node {
    pub fn new(config: Config, capacity_milli_units: u32, origin: Origin) -> Arc<Self> {
        metrics::CAPACITY.set(i64::from(capacity_milli_units));
        Arc::new(Self {
            auth: Authenticator::new(&config),
            config,
            origin,
            capacity: capacity_milli_units,
            used: AtomicU32::new(0),
            overloaded_until: Mutex::new(None),
            draining: AtomicBool::new(false),
            cordoned: AtomicBool::new(false),
            reservations: Mutex::new(HashMap::new()),
            cpu: AtomicU32::new(0),
            on_change: std::sync::OnceLock::new(),
            control: std::sync::OnceLock::new(),
            next_session: AtomicU64::new(1),
            active: DashMap::new(),
            last_session: DashMap::new(),
        })
    }

    /// Whether `ip` is one of our balancers (may send PROXY headers and reservation IDs).
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.config
            .control
            .as_ref()
            .is_some_and(|c| c.trusted_proxies.contains(&ip))
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Acquire)
    }
    pub fn overloaded(&self) -> bool {
        let Ok(mut until) = self.overloaded_until.lock() else {
            return false;
        };
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                metrics::OVERLOADED.set(0);
                false
            }
            None => false,
        }
    }
    fn mark_overloaded(&self) {
        if let Ok(mut until) = self.overloaded_until.lock() {
            if until.is_none() {
                tracing::warn!(node.id = %self.config.node.id, "pipeline behind real time: node overloaded, refusing new streams");
            }
            *until = Some(Instant::now() + OVERLOAD_HOLD);
            metrics::OVERLOADED.set(1);
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
    fn changed(&self) {
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
        } else if self.capacity.saturating_sub(self.used()) < self.config.stream_milli_units(None) {
            NodeState::Full
        } else {
            NodeState::Ready
        }
    }
    pub fn stream_count(&self) -> usize {
        self.active.len()
    }

    /// Reserve `want` units, or refuse. Never exceeds capacity, even under concurrent admits.
    fn reserve(&self, want: u32) -> Result<(), AdmitError> {
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
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(want).filter(|n| *n <= self.capacity)
            })
            .map(|_| metrics::USED.set(i64::from(self.used())))
            .map_err(|_| AdmitError::Full("no free transcode units"))
    }
    fn release(&self, units: u32) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(units))
            });
        metrics::USED.set(i64::from(self.used()));
    }

    /// A balancer's placement: hold `milli_units` for `ttl` until the relayed stream arrives.
    /// This is the node's final say: it refuses when that would exceed its capacity.
    pub fn hold(
        &self,
        id: u64,
        milli_units: u32,
        ttl: Duration,
        continuation: Option<packager::Continuation>,
    ) -> Result<(), String> {
        if self
            .reservations
            .lock()
            .map(|r| r.contains_key(&id))
            .unwrap_or(false)
        {
            return Ok(()); // a retried request
        }
        self.reserve(milli_units).map_err(|e| e.to_string())?;
        if let Ok(mut r) = self.reservations.lock() {
            r.insert(
                id,
                Held {
                    milli_units,
                    expires: Instant::now() + ttl,
                    continuation,
                },
            );
        }
        tracing::debug!(
            reservation = id,
            milli_units,
            "capacity held for a balancer"
        );
        self.changed();
        Ok(())
    }

    /// Release a held reservation (the balancer gave up on it).
    pub fn unhold(&self, id: u64) {
        let held = self
            .reservations
            .lock()
            .ok()
            .and_then(|mut r| r.remove(&id));
        if let Some(h) = held {
            self.release(h.milli_units);
            self.changed();
        }
    }

    /// Release expired reservations and sample the CPU; run every [`HOUSEKEEPING_INTERVAL`].
    pub fn housekeeping(&self, cpu: &mut CpuSampler) {
        let now = Instant::now();
        let expired: Vec<u32> = match self.reservations.lock() {
            Ok(mut r) => {
                let ids: Vec<u64> = r
                    .iter()
                    .filter(|(_, h)| h.expires <= now)
                    .map(|(id, _)| *id)
                    .collect();
                ids.iter()
                    .filter_map(|id| r.remove(id))
                    .map(|h| h.milli_units)
                    .collect()
            }
            Err(_) => Vec::new(),
        };
        for u in &expired {
            self.release(*u);
        }
        if !expired.is_empty() {
            tracing::info!(count = expired.len(), "reservations expired unused");
            self.changed();
        }
        if let Some(c) = cpu.sample() {
            self.cpu.store(c.to_bits(), Ordering::Relaxed);
        }
    }

    /// Check the key, replace a stale publisher of the same stream, reserve capacity, register.
    pub async fn admit(
        self: &Arc<Self>,
        key: &str,
        client: SocketAddr,
        protocol: Protocol,
        reservation: Option<u64>,
    ) -> Result<Admission, AdmitError> {
        let grant = self.auth.check(key, client, protocol.as_str()).await?;
        self.admit_grant(grant, key, client, protocol, reservation)
            .await
    }

    /// Only the key check, for protocols that must answer before admitting (SRT passphrase).
    pub async fn authenticate(
        &self,
        key: &str,
        client: SocketAddr,
        protocol: Protocol,
    ) -> Result<Grant, AuthError> {
        self.auth.check(key, client, protocol.as_str()).await
    }

    /// Admit a publisher whose key is already checked. `reservation`: capacity a balancer had
    /// the node hold for this stream (only passed for connections from trusted balancers).
    pub async fn admit_grant(
        self: &Arc<Self>,
        grant: Grant,
        key: &str,
        client: SocketAddr,
        protocol: Protocol,
        reservation: Option<u64>,
    ) -> Result<Admission, AdmitError> {
        let pid = grant.playback_id.clone();
        // A second publisher with the same key replaces the first (a reconnecting encoder
        // whose old TCP connection has not timed out yet).
        if let Some(old) = self.active.get(&pid).map(|a| a.cancel.clone()) {
            tracing::info!(stream.id = %pid, "new publisher replaces the current one");
            old.cancel();
            let deadline = Instant::now() + REPLACE_WAIT;
            while self.active.contains_key(&pid) {
                if Instant::now() > deadline {
                    return Err(AdmitError::Busy);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // A balancer's reservation already counts in `used`: take it over. Without one (a direct
        // publisher, or a reservation that expired) reserve now.
        let held = reservation.and_then(|id| {
            self.reservations
                .lock()
                .ok()
                .and_then(|mut r| r.remove(&id))
        });
        let (units, continuation) = match held {
            Some(h) => (h.milli_units, h.continuation),
            None => {
                let units = self.config.stream_milli_units(None);
                self.reserve(units)?;
                (units, None)
            }
        };
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let milli_units = Arc::new(AtomicU32::new(units));
        let plan = Arc::new(Mutex::new(None));
        let entry = Active {
            session_id,
            stream_ref: control::stream_ref(key),
            reservation,
            protocol,
            client,
            started: SystemTime::now(),
            cancel: cancel.clone(),
            milli_units: Arc::clone(&milli_units),
            plan: Arc::clone(&plan),
        };
        if let dashmap::Entry::Vacant(v) = self.active.entry(pid.clone()) {
            v.insert(entry);
        } else {
            // Lost a race with another publisher of the same key that got in first.
            self.release(units);
            return Err(AdmitError::Busy);
        }
        self.last_session.insert(pid.clone(), session_id);
        metrics::STREAMS
            .with_label_values(&[protocol.as_str()])
            .inc();
        self.changed();
        Ok(Admission {
            continuation,
            node: Arc::clone(self),
            playback_id: pid,
            session_id,
            protocol,
            cancel,
            milli_units,
            plan,
        })
    }

    /// Ask a stream's publisher to stop (admin kick). True if it was live.
    pub fn kick(&self, playback_id: &str) -> bool {
        self.active
            .get(playback_id)
            .map(|a| a.cancel.cancel())
            .is_some()
    }

    /// What this node tells its balancers.
    pub fn report(&self, advertise: (SocketAddr, SocketAddr, SocketAddr)) -> control::Report {
        let streams = self
            .active
            .iter()
            .map(|e| control::StreamReport {
                stream_ref: e.stream_ref.clone(),
                playback_id: e.key().clone(),
                protocol: e.protocol.as_str().to_string(),
                milli_units: e.milli_units.load(Ordering::Relaxed),
                started_unix_ms: e
                    .started
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                reservation: e.reservation,
            })
            .collect();
        let served = self.origin.streams();
        let reservations = self
            .reservations
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default();
        control::Report {
            node_id: self.config.node.id.clone(),
            seq: 0,
            rtmp_addr: advertise.0,
            srt_addr: advertise.1,
            http_addr: advertise.2,
            state: if self.draining.load(Ordering::Acquire) {
                control::NodeState::Draining
            } else if self.cordoned.load(Ordering::Acquire) {
                control::NodeState::Cordoned
            } else {
                control::NodeState::Ready
            },
            overloaded: self.overloaded(),
            capacity_milli_units: self.capacity,
            used_milli_units: self.used(),
            stream_milli_units: self.config.stream_milli_units(None),
            cpu: self.cpu(),
            streams,
            reservations,
            // Served = a viewer routed here gets media: every rendition has a segment. A stream
            // that just arrived from another node is not served here until then, so balancers
            // keep routing viewers to the node that still has its last segments.
            served: served
                .iter()
                .filter(|s| !s.renditions.is_empty() && s.renditions.iter().all(|r| r.segments > 0))
                .map(|s| s.playback_id.clone())
                .collect(),
            continuations: served
                .into_iter()
                .filter_map(|s| {
                    let c = self.origin.continuation(&s.playback_id)?;
                    Some((s.playback_id, serde_json::to_value(c).ok()?))
                })
                .collect(),
        }
    }

    pub fn streams(&self) -> Vec<StreamInfo> {
        let mut v: Vec<StreamInfo> = self
            .active
            .iter()
            .map(|e| {
                let plan = e.plan.lock().ok().and_then(|p| p.clone());
                StreamInfo {
                    session_id: e.session_id,
                    playback_id: e.key().clone(),
                    protocol: e.protocol,
                    client_addr: e.client.to_string(),
                    state: if plan.is_some() { "live" } else { "starting" },
                    started_unix_ms: e
                        .started
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0),
                    milli_units: e.milli_units.load(Ordering::Relaxed),
                    source: plan
                        .as_ref()
                        .map(|p| format!("{}x{}", p.source_width, p.source_height)),
                    renditions: plan
                        .map(|p| p.video.into_iter().map(|v| v.0).collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        v.sort_by(|a, b| a.playback_id.cmp(&b.playback_id));
        v
    }
}

/// An admitted publisher. Dropping it releases its units and registry entry and starts the
/// reconnect window, after which the stream's playlists end.
pub struct Admission {
    node: Arc<Node>,
    pub playback_id: String,
    pub session_id: u64,
    pub protocol: Protocol,
    /// Cancelled when an operator kicks the stream or a new publisher replaces it.
    pub cancel: CancellationToken,
    milli_units: Arc<AtomicU32>,
    plan: Arc<Mutex<Option<Plan>>>,
    /// Numbering handed over from another node, used when this node has no state of its own.
    continuation: Option<packager::Continuation>,
}

impl Admission {
    /// Build the stream's pipeline feeding the packager.
    pub fn start_pipeline(
        &self,
        format: InputFormat,
        has_audio: Option<bool>,
    ) -> Result<(Pipeline, Arc<StreamOutput>), pipeline::PipelineError> {
        let cfg = &self.node.config;
        let output = Arc::new(StreamOutput {
            node: Arc::clone(&self.node),
            playback_id: self.playback_id.clone(),
            handle: Mutex::new(None),
            milli_units: Arc::clone(&self.milli_units),
            plan: Arc::clone(&self.plan),
            arrivals: Arc::new(ArrivalLog::default()),
            codecs: Mutex::new(Vec::new()),
            continuation: Mutex::new(self.continuation.clone()),
        });
        let spec = PipelineSpec {
            label: self.playback_id.clone(),
            format,
            ladder: cfg.ladder.clone(),
            passthrough: cfg.transcode.passthrough,
            x264_preset: cfg.transcode.x264_preset.to_string(),
            has_audio,
        };
        let out: Arc<dyn Output> = output.clone();
        let p = Pipeline::start(spec, out, Arc::clone(&output.arrivals))?;
        Ok((p, output))
    }

    /// Feed `pipeline` from `input` until the input ends, the stream is kicked, or the pipeline
    /// fails; then drain and stop it. Returns why it ended, for the log.
    pub async fn finish_pipeline(
        &self,
        pipeline: Pipeline,
        output: Arc<StreamOutput>,
        result: Result<(), String>,
    ) -> Result<(), String> {
        pipeline.end_of_input();
        let drained = tokio::time::timeout(PIPELINE_DRAIN_TIMEOUT, pipeline.wait()).await;
        let _ = tokio::task::spawn_blocking(move || pipeline.stop()).await;
        output.end();
        match (result, drained) {
            (Err(e), _) => Err(e),
            (Ok(()), Ok(Err(e))) => {
                metrics::PIPELINE_ERRORS.inc();
                Err(e.to_string())
            }
            _ => Ok(()),
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let node = &self.node;
        node.release(self.milli_units.swap(0, Ordering::AcqRel));
        node.active
            .remove_if(&self.playback_id, |_, a| a.session_id == self.session_id);
        metrics::STREAMS
            .with_label_values(&[self.protocol.as_str()])
            .dec();
        node.changed();
        // The reconnect window: if nobody publishes this stream again in time, end it.
        let (node, pid, sid) = (Arc::clone(node), self.playback_id.clone(), self.session_id);
        let window = node.config.hls.reconnect_window;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                tokio::time::sleep(window).await;
                let still_last = node
                    .last_session
                    .get(&pid)
                    .map(|s| *s == sid)
                    .unwrap_or(false);
                if still_last && !node.active.contains_key(&pid) {
                    tracing::info!(stream.id = %pid, "reconnect window passed: stream ended");
                    node.origin.finish(&pid);
                    node.last_session.remove_if(&pid, |_, s| *s == sid);
                }
            });
        }
    }
}

/// Receives the pipeline's output: publishes to the packager, keeps the units charged to the
/// stream in line with its real ladder, and flags the node overloaded when encoding lags.
pub struct StreamOutput {
    node: Arc<Node>,
    playback_id: String,
    handle: Mutex<Option<StreamHandle>>,
    milli_units: Arc<AtomicU32>,
    plan: Arc<Mutex<Option<Plan>>>,
    arrivals: Arc<ArrivalLog>,
    /// Codec configs seen so far: a rendition (audio, typically) may start before the video
    /// caps decide the plan and create the packager stream; they are replayed then.
    codecs: Mutex<Vec<(String, CodecConfig)>>,
    /// Numbering from another node, for the first publish of this stream here.
    continuation: Mutex<Option<packager::Continuation>>,
}

impl StreamOutput {
    fn end(&self) {
        if let Some(h) = self.handle.lock().ok().and_then(|mut h| h.take()) {
            h.end();
        }
    }
}

impl Output for StreamOutput {
    fn plan(&self, plan: Plan) {
        let mut renditions: Vec<RenditionPlan> = plan
            .video
            .iter()
            .map(|(name, _, _, bw)| RenditionPlan {
                name: name.clone(),
                kind: RenditionKind::Video,
                bandwidth: *bw,
            })
            .collect();
        if plan.audio {
            renditions.push(RenditionPlan {
                name: "audio".into(),
                kind: RenditionKind::Audio,
                bandwidth: pipeline::AUDIO_BITRATE,
            });
        }
        // Hold the handle slot while publishing and replaying, so a concurrent `configure`
        // either is in the replayed list or finds the handle in place.
        let Ok(mut slot) = self.handle.lock() else {
            return;
        };
        // Our own packager state wins (a reconnect to this node); otherwise continue the
        // numbering the stream had on its previous node.
        let handed = self.continuation.lock().ok().and_then(|mut c| c.take());
        let handle = match handed {
            Some(c) if self.node.origin.continuation(&self.playback_id).is_none() => {
                tracing::info!(stream.id = %self.playback_id, "continuing numbering from the previous node");
                self.node
                    .origin
                    .publish_with(&self.playback_id, renditions, Some(c))
            }
            _ => self.node.origin.publish(&self.playback_id, renditions),
        };
        if let Ok(codecs) = self.codecs.lock() {
            for (name, codec) in codecs.iter() {
                if let Err(e) = handle.configure(name, codec.clone()) {
                    tracing::warn!(stream.id = %self.playback_id, rendition = %name, error = %e, "packager refused codec");
                }
            }
        }
        *slot = Some(handle);
        drop(slot);
        // Charge what the stream really costs now that its source size is known.
        let actual = self
            .node
            .config
            .stream_milli_units(Some(plan.source_height));
        let before = self.milli_units.swap(actual, Ordering::AcqRel);
        self.node.release(before.saturating_sub(actual));
        tracing::info!(
            stream.id = %self.playback_id,
            source = %format!("{}x{}", plan.source_width, plan.source_height),
            rungs = plan.rungs.len(),
            milli_units = actual,
            "ladder planned"
        );
        if let Ok(mut p) = self.plan.lock() {
            *p = Some(plan);
        }
    }

    fn configure(&self, rendition: &str, codec: CodecConfig) {
        if let Ok(mut codecs) = self.codecs.lock() {
            codecs.retain(|(n, _)| n != rendition);
            codecs.push((rendition.to_string(), codec.clone()));
        }
        if let Ok(h) = self.handle.lock() {
            if let Some(h) = h.as_ref() {
                if let Err(e) = h.configure(rendition, codec) {
                    tracing::warn!(stream.id = %self.playback_id, rendition, error = %e, "packager refused codec");
                }
            }
        }
    }

    fn sample(&self, rendition: &str, sample: Sample) {
        if rendition != "source" && rendition != "audio" {
            if let Some(arrived) = sample.arrival {
                let lag = arrived.elapsed();
                metrics::LAG.observe(lag.as_secs_f64());
                if lag > self.node.config.node.overload_lag {
                    self.node.mark_overloaded();
                }
            }
        }
        if let Ok(h) = self.handle.lock() {
            if let Some(h) = h.as_ref() {
                if let Err(e) = h.push(rendition, sample) {
                    tracing::debug!(stream.id = %self.playback_id, rendition, error = %e, "packager refused sample");
                }
            }
        }
    }
}

/// Machine CPU use from /proc/stat deltas (Linux). `None` where /proc is unreadable.
#[derive(Default)]
pub struct CpuSampler {
    last: Option<(u64, u64)>,
}

impl CpuSampler {
    /// Use since the previous call, 0..=1.
    pub fn sample(&mut self) -> Option<f32> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let line = text.lines().next()?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let total: u64 = v.iter().sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        let prev = self.last.replace((total, idle));
        let (pt, pi) = prev?;
        let dt = total.saturating_sub(pt);
        if dt == 0 {
            return None;
        }
        Some(1.0 - idle.saturating_sub(pi) as f32 / dt as f32)
    }
}
