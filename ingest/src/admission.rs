//! The publish path RTMP and SRT share: check the key, replace a stale publisher of the same
//! stream, take over the balancer's reservation or charge units, register the stream; and the
//! [`Admission`] that holds all of it until the publisher leaves (dropping it releases the
//! units and starts the reconnect window).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::{
    auth::{AuthError, Grant},
    direct::Input,
    metrics,
    node::{Active, Node, Protocol},
    output::StreamOutput,
    pipeline::{self, InputFormat, Output, Pipeline, PipelineSpec, Plan},
};

/// How long a new publisher waits for the one it replaces (same key) to release its stream.
const REPLACE_WAIT: Duration = Duration::from_secs(5);
/// How often a replacing publisher checks whether the old one let go.
const REPLACE_POLL: Duration = Duration::from_millis(20);
/// How long a pipeline may take to drain after its input ended before it is stopped.
const PIPELINE_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

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
            AdmitError::Auth(AuthError::Limited(_)) => "rate_limited",
            AdmitError::Auth(AuthError::Blocked(_)) => "refused_blocked",
            AdmitError::Auth(_) => "auth_unavailable",
            AdmitError::Full(_) => "refused_full",
            AdmitError::Busy => "refused_busy",
        }
    }
}

impl Node {
    /// Check the key, replace a stale publisher of the same stream, reserve capacity, register.
    pub async fn admit(
        self: &Arc<Self>,
        key: &str,
        client: SocketAddr,
        protocol: Protocol,
        reservation: Option<u64>,
    ) -> Result<Admission, AdmitError> {
        let grant = self
            .authenticate_for(key, client, protocol, reservation)
            .await?;
        self.admit_grant(grant, key, client, protocol, reservation)
            .await
    }

    /// Admit a publisher whose key is already checked. `reservation`: capacity a balancer had
    /// the node hold for this stream (only passed for connections from trusted balancers).
    /// A refusal releases the reservation at once.
    pub async fn admit_grant(
        self: &Arc<Self>,
        grant: Grant,
        key: &str,
        client: SocketAddr,
        protocol: Protocol,
        reservation: Option<u64>,
    ) -> Result<Admission, AdmitError> {
        let admitted = self
            .admit_checked(grant, key, client, protocol, reservation)
            .await;
        if admitted.is_err() {
            if let Some(id) = reservation {
                self.cancel_reservation(id);
            }
        }
        admitted
    }

    async fn admit_checked(
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
            let deadline = tokio::time::Instant::now() + REPLACE_WAIT;
            while self.active.contains_key(&pid) {
                if tokio::time::Instant::now() > deadline {
                    return Err(AdmitError::Busy);
                }
                tokio::time::sleep(REPLACE_POLL).await;
            }
        }
        // A balancer's reservation already counts in `used`: take it over. Without one (a direct
        // publisher, or a reservation that expired) reserve now.
        let held = reservation.and_then(|id| self.capacity.take_reservation(id));
        let (units, continuation) = match held {
            Some(h) => (h.milli_units, h.continuation),
            None => {
                let units = self.config.stream_milli_units();
                self.admissible()?;
                self.capacity
                    .charge(units)
                    .map_err(|_| AdmitError::Full("no free transcode units"))?;
                (units, None)
            }
        };
        let session_id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let cancel = CancellationToken::new();
        let milli_units = Arc::new(AtomicU32::new(units));
        let plan = Arc::new(Mutex::new(None));
        let health = Arc::new(crate::health::Health::new(
            tokio::time::Instant::now(),
            self.config.hls.segment_target,
        ));
        let entry = Active {
            session_id,
            stream_ref: control::stream_ref(key),
            reservation,
            protocol,
            client,
            started: crate::node::wall_clock(),
            cancel: cancel.clone(),
            milli_units: Arc::clone(&milli_units),
            plan: Arc::clone(&plan),
            health: Arc::clone(&health),
        };
        if let dashmap::Entry::Vacant(v) = self.active.entry(pid.clone()) {
            v.insert(entry);
        } else {
            // Lost a race with another publisher of the same key that got in first.
            self.capacity.release(units);
            return Err(AdmitError::Busy);
        }
        self.last_session.insert(pid.clone(), session_id);
        metrics::STREAMS
            .with_label_values(&[protocol.as_str()])
            .inc();
        self.events.emit(
            "stream.connected",
            serde_json::json!({
                "playback_id": pid,
                "session_id": session_id,
                "protocol": protocol,
                "client_addr": client.to_string(),
            }),
        );
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
            health,
            ended_because: Mutex::new(None),
        })
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
    health: Arc<crate::health::Health>,
    /// Numbering handed over from another node, used when this node has no state of its own.
    continuation: Option<packager::Continuation>,
    /// Why the publish ended badly (a refused codec or source, a pipeline error, a kick), for
    /// the `stream.disconnected` event.
    ended_because: Mutex<Option<String>>,
}

impl Admission {
    /// The stream's output (its packager stream, health and capacity feeds) and what its
    /// pipeline would build.
    fn stream_output(
        &self,
        format: InputFormat,
        has_audio: Option<bool>,
    ) -> (PipelineSpec, Arc<StreamOutput>) {
        let cfg = &self.node.config;
        let output = Arc::new(StreamOutput {
            node: Arc::clone(&self.node),
            playback_id: self.playback_id.clone(),
            handle: Mutex::new(None),
            milli_units: Arc::clone(&self.milli_units),
            plan: Arc::clone(&self.plan),
            arrivals: Arc::clone(&self.health.arrivals),
            health: Arc::clone(&self.health),
            codecs: Mutex::new(Vec::new()),
            continuation: Mutex::new(self.continuation.clone()),
            // RTMP times each message as it is read off the socket (`rtmp::push_tag`): the
            // demuxer's output would add this node's own delays to the encoder's.
            timed_at_receipt: format == InputFormat::Flv,
        });
        let spec = PipelineSpec {
            label: self.playback_id.clone(),
            format,
            ladder: cfg.ladder.clone(),
            passthrough: cfg.transcode.passthrough,
            x264_preset: cfg.transcode.x264_preset.to_string(),
            own_scaler: cfg.transcode.own_scaler,
            has_audio,
            max_source: cfg.transcode.max_source,
            segment_target: cfg.hls.segment_target,
        };
        (spec, output)
    }

    /// Build the stream's pipeline feeding the packager.
    pub fn start_pipeline(
        &self,
        format: InputFormat,
        has_audio: Option<bool>,
    ) -> Result<(Pipeline, Arc<StreamOutput>), pipeline::PipelineError> {
        let (spec, output) = self.stream_output(format, has_audio);
        let out: Arc<dyn Output> = output.clone();
        let p = Pipeline::start(spec, out, Arc::clone(&output.arrivals))?;
        metrics::STREAMS_BY_PACKAGING
            .with_label_values(&["gstreamer"])
            .inc();
        Ok((p, output))
    }

    /// The way an RTMP publish reaches the packager: without GStreamer when it needs no
    /// encoding and `transcode.direct_passthrough` allows it ([`crate::direct`]).
    pub fn start_rtmp_input(&self) -> Result<(Input, Arc<StreamOutput>), pipeline::PipelineError> {
        let (spec, output) = self.stream_output(InputFormat::Flv, None);
        let out: Arc<dyn Output> = output.clone();
        let input = Input::rtmp(
            spec,
            out,
            Arc::clone(&output.arrivals),
            self.node.config.transcode.direct_passthrough,
        )?;
        Ok((input, output))
    }

    /// After the input ended, the stream was kicked, or the pipeline failed: drain and stop
    /// the pipeline, if there is one. Returns why it ended, for the log.
    pub async fn finish_pipeline(
        &self,
        input: impl Into<Input>,
        output: Arc<StreamOutput>,
        result: Result<(), String>,
    ) -> Result<(), String> {
        let input = input.into();
        input.count(-1);
        input.end_of_input();
        let drained = tokio::time::timeout(PIPELINE_DRAIN_TIMEOUT, input.drained()).await;
        let _ = tokio::task::spawn_blocking(move || input.stop()).await;
        output.end();
        let ended = match (result, drained) {
            (Err(e), _) => Err(e),
            (Ok(()), Ok(Err(e))) => {
                metrics::PIPELINE_ERRORS.inc();
                Err(e.to_string())
            }
            _ => Ok(()),
        };
        if let (Err(e), Ok(mut why)) = (&ended, self.ended_because.lock()) {
            *why = Some(e.clone());
        }
        ended
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let node = &self.node;
        node.capacity
            .release(self.milli_units.swap(0, Ordering::AcqRel));
        node.active
            .remove_if(&self.playback_id, |_, a| a.session_id == self.session_id);
        metrics::STREAMS
            .with_label_values(&[self.protocol.as_str()])
            .dec();
        node.changed();
        // The reconnect window: if nobody publishes this stream again in time, end it.
        let (node, pid, sid) = (Arc::clone(node), self.playback_id.clone(), self.session_id);
        let window = node.config.hls.reconnect_window;
        let reason = self.ended_because.lock().ok().and_then(|mut r| r.take());
        node.events.emit(
            "stream.disconnected",
            serde_json::json!({
                "playback_id": pid,
                "session_id": sid,
                "reconnect_window_s": window.as_secs(),
                "reason": reason,
            }),
        );
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
                    node.events.emit(
                        "stream.ended",
                        serde_json::json!({ "playback_id": pid, "session_id": sid }),
                    );
                    node.last_session.remove_if(&pid, |_, s| *s == sid);
                }
            });
        }
    }
}
