//! The packager bridge: the pipeline's [`Output`] for one stream.
//!
//! This is where a stream's packager stream is created: the pipeline calls
//! [`Output::plan`] once the source's caps fix the ladder (`pipeline::Pipeline::start` →
//! the caps probe → `plan`), and [`StreamOutput::plan`] publishes the stream in the
//! [`packager::Origin`] (continuing the numbering from another node when the balancer handed it over),
//! replays the codec configurations seen so far, and charges the units the real ladder costs.
//! Then every encoded access unit arrives in [`Output::sample`] and goes to the packager; the
//! lag of each transcoded frame behind its source frame is measured there, and a pipeline
//! behind real time marks the node overloaded.

use std::sync::{
    atomic::{AtomicU32, Ordering},
    Arc, Mutex,
};

use packager::{CodecConfig, RenditionKind, RenditionPlan, Sample, StreamHandle};

use crate::{
    metrics,
    node::Node,
    pipeline::{self, ArrivalLog, Output, Plan},
};

/// Receives the pipeline's output: publishes to the packager, keeps the units charged to the
/// stream in line with its real ladder, and flags the node overloaded when encoding lags.
pub struct StreamOutput {
    pub(crate) node: Arc<Node>,
    pub(crate) playback_id: String,
    pub(crate) handle: Mutex<Option<StreamHandle>>,
    pub(crate) milli_units: Arc<AtomicU32>,
    pub(crate) plan: Arc<Mutex<Option<Plan>>>,
    pub(crate) arrivals: Arc<ArrivalLog>,
    /// Stamped with every video sample that leaves for the packager.
    pub(crate) health: Arc<crate::health::Health>,
    /// Codec configs seen so far: a rendition (audio, typically) may start before the video
    /// caps decide the plan and create the packager stream; they are replayed then.
    pub(crate) codecs: Mutex<Vec<(String, CodecConfig)>>,
    /// Numbering from another node, for the first publish of this stream here.
    pub(crate) continuation: Mutex<Option<packager::Continuation>>,
    /// The protocol driver stamps each frame's arrival (RTMP, as it is read); otherwise it is
    /// stamped as it leaves the demuxer (SRT's MPEG-TS).
    pub(crate) timed_at_receipt: bool,
}

impl StreamOutput {
    pub(crate) fn end(&self) {
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
        let actual = self.node.config.milli_units_for(&plan.source, &plan.rungs);
        let before = self.milli_units.swap(actual, Ordering::AcqRel);
        self.node.capacity.release(before.saturating_sub(actual));
        tracing::info!(
            stream.id = %self.playback_id,
            source = %plan.source,
            rungs = plan.rungs.len(),
            milli_units = actual,
            "ladder planned"
        );
        let rungs: Vec<(u32, u32, f64, u32)> = plan
            .rungs
            .iter()
            .map(|r| {
                let (w, h) =
                    crate::ladder::rung_size(r.height, plan.source.width, plan.source.height);
                (w, h, f64::from(r.fps), r.video_kbps)
            })
            .collect();
        self.health.set_ladder(
            plan.rungs.iter().map(|r| r.video_kbps).max().unwrap_or(0),
            crate::health::expected_source_kbps(&plan.source, &rungs),
        );
        self.node.events.emit(
            "stream.active",
            serde_json::json!({
                "playback_id": self.playback_id,
                "source": format!("{}x{}", plan.source.width, plan.source.height),
                "renditions": plan.video.iter().map(|v| v.0.clone()).collect::<Vec<_>>(),
            }),
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

    fn source_frame(
        &self,
        dts_ns: u64,
        pts_ns: u64,
        keyframe: bool,
        bytes: usize,
    ) -> Option<String> {
        self.health.source_frame(dts_ns, pts_ns, keyframe, bytes);
        if !self.timed_at_receipt {
            self.health.arrival(
                crate::health::Track::Video,
                dts_ns,
                tokio::time::Instant::now(),
            );
        }
        self.health
            .above_max_kbps(self.node.config.transcode.max_source_kbps)
    }

    fn cut_video_at(&self, pts_ns: u64, first: bool) {
        if first {
            self.health.set_segment_grid();
            tracing::info!(stream.id = %self.playback_id, "the source's keyframes are too far apart: segments on a grid from here, the transcoded renditions keyframed on it");
        }
        if let Ok(h) = self.handle.lock() {
            if let Some(h) = h.as_ref() {
                h.cut_video_at(pts_ns);
            }
        }
    }

    fn source_audio(&self, dts_ns: u64) {
        if !self.timed_at_receipt {
            self.health.arrival(
                crate::health::Track::Audio,
                dts_ns,
                tokio::time::Instant::now(),
            );
        }
    }

    fn source_audio_codec(&self, codec: String) {
        self.health.set_audio_codec(codec);
    }

    fn source_codec(&self, codec: String) {
        self.health.set_codec(codec);
    }

    fn sample(&self, rendition: &str, sample: Sample) {
        if rendition == "audio" {
            self.health.audio_frame(sample.dts_ns, sample.data.len());
        } else {
            let now = tokio::time::Instant::now();
            if rendition != "source" {
                let mut lag = std::time::Duration::ZERO;
                if let Some(arrived) = sample.arrival {
                    lag = now.saturating_duration_since(arrived);
                    metrics::LAG.observe(lag.as_secs_f64());
                    if lag > self.node.config.node.overload_lag {
                        self.node.mark_overloaded();
                    }
                }
                self.health
                    .rendition_out(rendition, sample.dts_ns, sample.data.len(), now, lag);
            }
            self.health.video_out(now);
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
