//! The per-stream GStreamer pipeline: demux once, pass the source through, decode once, encode
//! each rung of the ladder with x264, and hand every encoded access unit to an [`Output`].
//!
//! ```text
//! appsrc(flv|ts) → flvdemux|tsdemux ─video→ h264parse → capsfilter(avc,au) → tee ─→ queue → appsink "source"
//!                                  │                                          └→ queue → avdec_h264 → tee ─→ (per rung)
//!                                  │   (per rung) queue → edgescale → videorate → capsfilter → tee ─→ queue → videoconvert → capsfilter(I420) → x264enc → h264parse → appsink "480p"
//!                                  │                                                              └→ (the next smaller rung's queue → edgescale ...)
//!                                  └audio→ aacparse → capsfilter(raw) → appsink "audio"   (non-AAC: decodebin → avenc_aac)
//! ```
//!
//! HEVC (MPEG-TS, Enhanced RTMP) and AV1 (Enhanced RTMP) take the H.264 chain's place in front
//! of the source tee: `h265parse → capsfilter(hvc1,au)` decoded by `avdec_h265`, `av1parse →
//! capsfilter(obu-stream,tu)` decoded by `av1dec`. Enhanced RTMP input reaches them through
//! their own `appsrc` ([`Pipeline::push_elementary`]), since flvdemux reads neither.
//!
//! The ladder branch is built when the source's caps (resolution, frame rate) are known
//! (`on_demux_pad` → `build_ladder`): [`crate::ladder`] picks the rungs, and the [`Output`]
//! receives the final [`Plan`] first; that call is where the stream's packager stream is
//! created (`crate::output::StreamOutput::plan`). Capacity calibration is in
//! [`crate::calibrate`]. Rungs scale in cascade ([`crate::ladder::cascade`]): the largest
//! from the decoded source, each smaller one from the smallest larger rung's scaled pictures.
//! The scaler is our own `edgescale` ([`crate::scale`]) for 8-bit video, GStreamer's
//! `videoscale` for the rest (`scaler_for`).
//! Keyframes are aligned across rungs: every source keyframe forces a keyframe in every
//! encoder at the same timestamp (x264 scene-cut keyframes are off), so the packager cuts all
//! renditions at the same points. A source whose keyframes are too far apart for the segment
//! target puts the stream's segments on a grid instead ([`KeyGrid`]). A pipeline error ends
//! this stream only.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

// GStreamer's streaming threads stamp arrivals on the same clock the packager reads; outside a
// paused test runtime this is the monotonic clock.
use tokio::time::Instant;

use bytes::Bytes;
use edge_config::{Rung, SourceSize};
use futures::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use packager::{CodecConfig, GridStep, KeyGrid, Sample};

use crate::flv::{Elementary, VideoCodec};
use crate::{ladder, scale};

/// The pixel format of every encoded rung: 8-bit 4:2:0, the one every HLS player decodes
/// (H.264 High and below).
const RUNG_PIXEL_FORMAT: &str = "I420";
/// How much input may wait in front of the demuxer. Past this the pipeline is not keeping up
/// with the encoder; the stream is ended with a clear error instead of eating the node's memory.
pub const MAX_INPUT_BACKLOG_BYTES: u64 = 64 * 1024 * 1024;
/// Queue in front of each branch: enough to absorb a burst (a keyframe at high bitrate, a
/// scheduling hiccup) without blocking the demuxer.
const BRANCH_QUEUE_TIME_NS: u64 = 3_000_000_000;
/// Frames kept in the arrival log (about 10 s at 60 fps) to time each output sample.
const ARRIVAL_LOG_LEN: usize = 600;
/// Longest interval between forced keyframes when the source sends few (x264 `key-int-max`),
/// in seconds of frames: keeps renditions seekable even with a very long source GOP.
const MAX_KEYFRAME_INTERVAL_S: u32 = 10;
/// Bits per pixel per frame used to guess a source's bitrate for BANDWIDTH before measuring.
pub(crate) const SOURCE_BITS_PER_PIXEL: f64 = 0.1;
/// Highest announced frame rate taken from a publisher's metadata (a higher one is a mistake or
/// a lie, and the stream is then timed by its timestamps alone).
pub(crate) const MAX_ANNOUNCED_FPS: f64 = 240.0;
/// Frame rate assumed for a source that states none (for capacity and the first frame's
/// duration) until its timestamps say otherwise.
pub(crate) const UNKNOWN_SOURCE_FPS: f64 = 30.0;
/// Longest interval between two frames taken as the source's frame interval when a decoded
/// frame has no duration (a longer one is a gap, not a frame rate).
const MAX_FRAME_INTERVAL_NS: u64 = 1_000_000_000;
/// Name of the bus message that carries a source refusal from the caps probe to the driver.
const REFUSAL_MESSAGE: &str = "edge-source-refused";
/// Nominal AAC bitrate counted into every variant's BANDWIDTH.
pub const AUDIO_BITRATE: u64 = 128_000;

/// Input container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// FLV tags built from RTMP messages.
    Flv,
    /// MPEG-TS from SRT.
    MpegTs,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// Names the pipeline in GStreamer debug logs (the playback ID; never the key).
    pub label: String,
    pub format: InputFormat,
    pub ladder: Vec<Rung>,
    pub passthrough: bool,
    pub x264_preset: String,
    /// Scale with [`crate::scale`] where it can (`transcode.own_scaler`).
    pub own_scaler: bool,
    /// Whether the source carries audio, if the protocol says so up front (RTMP metadata).
    pub has_audio: Option<bool>,
    /// A larger source is refused when its caps arrive ([`PipelineError::SourceRefused`]).
    pub max_source: SourceSize,
    /// `hls.segment_target`: the grid of [`KeyGrid`] when the source's keyframes are too far
    /// apart.
    pub segment_target: Duration,
}

/// The renditions this stream will produce, decided once the source resolution is known.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The source as its first keyframe's caps describe it (30 fps when they do not say).
    pub source: SourceSize,
    /// (name, width, height, bits/s) for every video rendition, source first.
    pub video: Vec<(String, u32, u32, u64)>,
    pub audio: bool,
    /// Ladder rungs actually encoded.
    pub rungs: Vec<Rung>,
}

/// Where encoded output goes. Called from GStreamer streaming threads.
pub trait Output: Send + Sync + 'static {
    fn plan(&self, plan: Plan);
    fn configure(&self, rendition: &str, codec: CodecConfig);
    fn sample(&self, rendition: &str, sample: Sample);
    /// A source video frame as demuxed and parsed (before any transcoding, with or without
    /// passthrough): DTS and PTS (ns), keyframe, size. For health measures; a reason to end
    /// the publish if the source is beyond what this server takes (its bit rate).
    fn source_frame(
        &self,
        _dts_ns: u64,
        _pts_ns: u64,
        _keyframe: bool,
        _bytes: usize,
    ) -> Option<String> {
        None
    }
    /// The source video's codec as its caps describe it (`H.264 high 3.1`).
    fn source_codec(&self, _codec: String) {}
    /// Every video rendition starts a segment at its first sample at or after `pts_ns`
    /// (running time, as the samples'), keyframe or not: [`KeyGrid`]'s grid, on which the
    /// transcoded renditions get their keyframes. `first` on the grid's first cut.
    fn cut_video_at(&self, _pts_ns: u64, _first: bool) {}
    /// A source audio buffer as demuxed (before any conversion): its DTS (ns).
    fn source_audio(&self, _dts_ns: u64) {}
    /// The source audio's codec as its caps describe it (`AAC`, `MP3`).
    fn source_audio_codec(&self, _codec: String) {}
}

/// The audio codec's common name from the demuxer's caps (`AAC`, `MP3`, `Opus`).
fn describe_audio_codec(s: &gst::StructureRef) -> String {
    match s.name().as_str() {
        "audio/mpeg" => match s.get::<i32>("mpegversion").ok() {
            Some(2 | 4) => "AAC".into(),
            _ => match s.get::<i32>("layer").ok() {
                Some(l @ 1..=3) => format!("MP{l}"),
                _ => "MPEG audio".into(),
            },
        },
        "audio/x-opus" => "Opus".into(),
        "audio/x-ac3" => "AC-3".into(),
        "audio/x-eac3" => "E-AC-3".into(),
        "audio/x-speex" => "Speex".into(),
        "audio/x-nellymoser" => "Nellymoser".into(),
        "audio/x-alaw" => "G.711 A-law".into(),
        "audio/x-mulaw" => "G.711 mu-law".into(),
        "audio/x-raw" => "PCM".into(),
        other => other.trim_start_matches("audio/").to_string(),
    }
}

/// `H.264 PROFILE LEVEL` from the source's caps (what is known of it).
fn describe_codec(caps: &gst::CapsRef) -> Option<String> {
    let s = caps.structure(0)?;
    let name = match s.name().as_str() {
        "video/x-h264" => "H.264",
        "video/x-h265" => "H.265",
        "video/x-av1" => "AV1",
        other => other,
    };
    let mut out = name.to_string();
    for field in ["profile", "level"] {
        if let Ok(v) = s.get::<&str>(field) {
            out.push(' ');
            out.push_str(v);
        }
    }
    Some(out)
}

/// Why a pipeline failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PipelineError {
    /// An element is missing from the system's GStreamer (a plugin package not installed).
    #[error("cannot create GStreamer element {0}: is its plugin installed?")]
    MissingElement(&'static str),
    /// Linking or state change failed while building.
    #[error("cannot build pipeline: {0}")]
    Build(String),
    /// GStreamer reported an error while running.
    #[error("pipeline error from {element}: {message}")]
    Runtime { element: String, message: String },
    /// The input backlog exceeded [`MAX_INPUT_BACKLOG_BYTES`]: the node cannot keep up.
    #[error("input backlog above {MAX_INPUT_BACKLOG_BYTES} bytes: the pipeline is not keeping up")]
    Backlog,
    /// The source is larger than `transcode.max_source_*` allows; the reason says by how much.
    #[error("{0}")]
    SourceRefused(String),
    /// The pipeline no longer accepts input (it has ended or failed).
    #[error("pipeline is not accepting input")]
    Closed,
}

/// A capsfilter for H.264 as the packager takes it: AVC (length-prefixed) access units. Both
/// the passthrough branch and every x264 rung end in one.
/// Put `PARSER → caps` for an elementary video codec (`h265parse → hvc1`, `av1parse → av1
/// temporal units`) in front of the source tee, in place of the H.264 chain (which has carried
/// nothing: the demuxer's or the input's first video decides); returns the parser, for its
/// input to be linked, and the caps filter. `config` is AV1's av1C: av1parse does not put one
/// in its caps (h265parse writes the hvcC itself), and the packager needs it.
fn elementary_chain(
    pipeline: &gst::Pipeline,
    vcaps: &gst::Element,
    vtee: &gst::Element,
    codec: VideoCodec,
    config: Option<&Bytes>,
) -> Result<(gst::Element, gst::Element), PipelineError> {
    let parse = make(match codec {
        VideoCodec::Hevc => "h265parse",
        VideoCodec::Av1 => "av1parse",
    })?;
    let caps = gst::ElementFactory::make("capsfilter")
        .property("caps", parsed_caps(codec, config))
        .build()
        .map_err(|_| PipelineError::MissingElement("capsfilter"))?;
    vcaps.unlink(vtee);
    pipeline.add_many([&parse, &caps]).map_err(build_err)?;
    gst::Element::link_many([&parse, &caps, vtee]).map_err(build_err)?;
    for e in [&parse, &caps] {
        e.sync_state_with_parent().map_err(build_err)?;
    }
    Ok((parse, caps))
}

/// An elementary codec as the packager and decoder take it: HEVC as `hvc1` (parameter sets in
/// the caps), one access unit per buffer; AV1 as OBUs with sizes, one temporal unit per buffer,
/// with its av1C when known.
fn parsed_caps(codec: VideoCodec, config: Option<&Bytes>) -> gst::Caps {
    match codec {
        VideoCodec::Hevc => gst::Caps::builder("video/x-h265")
            .field("stream-format", "hvc1")
            .field("alignment", "au")
            .build(),
        VideoCodec::Av1 => {
            let b = gst::Caps::builder("video/x-av1")
                .field("stream-format", "obu-stream")
                .field("alignment", "tu");
            match config {
                Some(c) => b
                    .field("codec_data", gst::Buffer::from_slice(c.clone()))
                    .build(),
                None => b.build(),
            }
        }
    }
}

fn avc_au_capsfilter() -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("video/x-h264")
                .field("stream-format", "avc")
                .field("alignment", "au")
                .build(),
        )
        .build()
        .map_err(|_| PipelineError::MissingElement("capsfilter"))
}

fn make(factory: &'static str) -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| PipelineError::MissingElement(factory))
}

fn build_err(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Build(e.to_string())
}

/// When each source frame reached the node, by PTS, to time output samples.
#[derive(Default)]
pub struct ArrivalLog {
    inner: Mutex<Arrivals>,
}

#[derive(Default)]
struct Arrivals {
    by_pts: BTreeMap<u64, Instant>,
    /// The latest arrival, whatever its PTS (B-frames arrive out of PTS order).
    latest: Option<Instant>,
}

impl ArrivalLog {
    pub(crate) fn record(&self, pts: u64, at: Instant) {
        if let Ok(mut a) = self.inner.lock() {
            a.by_pts.insert(pts, at);
            while a.by_pts.len() > ARRIVAL_LOG_LEN {
                a.by_pts.pop_first();
            }
            a.latest = Some(at);
        }
    }
    /// When the latest source frame arrived.
    pub fn latest(&self) -> Option<Instant> {
        self.inner.lock().ok().and_then(|a| a.latest)
    }
    /// Arrival of the latest source frame at or before `pts`.
    pub fn lookup(&self, pts: u64) -> Option<Instant> {
        let a = self.inner.lock().ok()?;
        a.by_pts.range(..=pts).next_back().map(|(_, t)| *t)
    }
}

/// A running pipeline. Feed it with [`Pipeline::push`], end it with [`Pipeline::end_of_input`].
pub struct Pipeline {
    pipeline: gst::Pipeline,
    appsrc: gst_app::AppSrc,
    /// The H.264 chain's end and the tee the source video goes through: an elementary video
    /// input ([`Pipeline::push_elementary`]) takes the H.264 chain's place in front of the tee.
    vcaps: gst::Element,
    vtee: gst::Element,
    /// Enhanced RTMP HEVC or AV1, fed as elementary frames (flvdemux cannot read them), once
    /// its configuration arrived: the input and the caps filter behind its parser.
    elementary: Mutex<Option<(VideoCodec, gst_app::AppSrc, gst::Element)>>,
    /// The frame rate the publisher announced ([`Pipeline::announce_frame_rate`]).
    announced_rate: Mutex<Option<gst::Fraction>>,
    /// Set once by the bus watcher: how the pipeline ended.
    done: tokio::sync::watch::Receiver<Option<Result<(), PipelineError>>>,
}

struct Shared {
    spec: PipelineSpec,
    output: Arc<dyn Output>,
    arrivals: Arc<ArrivalLog>,
    /// When each source audio frame left the demuxer, by running time: the audio's samples
    /// are timed against it as the video's are against `arrivals`.
    audio_arrivals: ArrivalLog,
    /// Pending PTS to make keyframes at (the source's, or [`KeyGrid`]'s), one queue per encoder.
    keyframes: Mutex<Vec<Arc<Mutex<VecDeque<u64>>>>>,
    /// Where segments start: at the source's keyframes, or on a grid.
    grid: Mutex<KeyGrid>,
    built: Mutex<bool>,
    audio_seen: Mutex<bool>,
}

impl Pipeline {
    /// Build and start a pipeline. `arrivals` is filled as frames reach the demuxer output.
    pub fn start(
        spec: PipelineSpec,
        output: Arc<dyn Output>,
        arrivals: Arc<ArrivalLog>,
    ) -> Result<Self, PipelineError> {
        gst::init().map_err(build_err)?;
        let pipeline = gst::Pipeline::with_name(&format!("stream-{}", spec.label));
        let caps = match spec.format {
            InputFormat::Flv => gst::Caps::builder("video/x-flv").build(),
            InputFormat::MpegTs => gst::Caps::builder("video/mpegts")
                .field("systemstream", true)
                .field("packetsize", 188i32)
                .build(),
        };
        let appsrc = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Bytes)
            .is_live(true)
            .max_bytes(MAX_INPUT_BACKLOG_BYTES)
            .block(false)
            .build();
        let demux = match spec.format {
            InputFormat::Flv => make("flvdemux")?,
            InputFormat::MpegTs => make("tsdemux")?,
        };
        let vparse = make("h264parse")?;
        let vcaps = avc_au_capsfilter()?;
        let vtee = gst::ElementFactory::make("tee")
            .property("allow-not-linked", true)
            .build()
            .map_err(|_| PipelineError::MissingElement("tee"))?;
        pipeline
            .add_many([appsrc.upcast_ref(), &demux, &vparse, &vcaps, &vtee])
            .map_err(build_err)?;
        gst::Element::link_many([appsrc.upcast_ref(), &demux]).map_err(build_err)?;
        gst::Element::link_many([&vparse, &vcaps, &vtee]).map_err(build_err)?;

        let segment_target = spec.segment_target;
        let shared = Arc::new(Shared {
            spec,
            output,
            arrivals,
            audio_arrivals: ArrivalLog::default(),
            keyframes: Mutex::new(Vec::new()),
            grid: Mutex::new(KeyGrid::new(segment_target)),
            built: Mutex::new(false),
            audio_seen: Mutex::new(false),
        });

        if shared.spec.passthrough {
            let sink = appsink(&shared, "source", true);
            // No queue (no thread of its own): the appsink hands each frame to the packager,
            // which takes microseconds and never blocks on a viewer, so the demuxer's thread
            // does it. A queue cost a thread hand-off per frame, about a tenth of what a
            // passthrough stream costs (benches/passthrough.rs).
            add_branch(&pipeline, &vtee, &[sink.upcast_ref()])?;
        }

        // Source frames: note their arrival and queue keyframes for every encoder.
        if let Some(pad) = vtee.static_pad("sink") {
            let sh = Arc::clone(&shared);
            let pl = pipeline.downgrade();
            let tee = vtee.downgrade();
            pad.add_probe(
                gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
                move |pad, info| {
                    if let Some(buf) = info.buffer() {
                        if let Some(pts) = buf.pts() {
                            // Keyed by running time, as the appsinks time their samples.
                            let at = pad_running_time(pad, pts);
                            sh.arrivals.record(at.nseconds(), Instant::now());
                            let keyframe = !buf.flags().contains(gst::BufferFlags::DELTA_UNIT);
                            let dts = buf.dts().unwrap_or(pts).nseconds();
                            if let Some(reason) =
                                sh.output.source_frame(dts, pts.nseconds(), keyframe, buf.size())
                            {
                                if let Some(pl) = pl.upgrade() {
                                    refuse(&pl, reason);
                                }
                            }
                            let decision = sh.grid.lock().map_or(GridStep::None, |mut g| {
                                g.frame(dts, at.nseconds(), keyframe)
                            });
                            // The encoders' queues take raw PTS, the packager running time.
                            let mut force_at = pts.nseconds();
                            if let GridStep::Cut { at: cut, first } = decision {
                                force_at = force_at.saturating_sub(at.nseconds().saturating_sub(cut));
                                sh.output.cut_video_at(cut, first);
                            }
                            if decision != GridStep::None {
                                if let Ok(queues) = sh.keyframes.lock() {
                                    for q in queues.iter() {
                                        if let Ok(mut q) = q.lock() {
                                            q.push_back(force_at);
                                        }
                                    }
                                }
                            }
                        }
                    } else if let Some(ev) = info.event() {
                        if let gst::EventView::Caps(c) = ev.view() {
                            if let Some(codec) = describe_codec(c.caps()) {
                                sh.output.source_codec(codec);
                            }
                            if let (Some(pl), Some(tee)) = (pl.upgrade(), tee.upgrade()) {
                                if let Err(e) = build_ladder(&sh, &pl, &tee, c.caps()) {
                                    tracing::error!(stream = %sh.spec.label, error = %e, "cannot build ladder");
                                }
                            }
                        }
                    }
                    gst::PadProbeReturn::Ok
                },
            );
        }

        let sh = Arc::clone(&shared);
        let pl = pipeline.downgrade();
        let vparse_weak = vparse.downgrade();
        let vcaps_weak = vcaps.downgrade();
        let vtee_weak = vtee.downgrade();
        demux.connect_pad_added(move |_, pad| {
            let (Some(pl), Some(vparse), Some(vcaps), Some(vtee)) = (
                pl.upgrade(),
                vparse_weak.upgrade(),
                vcaps_weak.upgrade(),
                vtee_weak.upgrade(),
            ) else {
                return;
            };
            if let Err(e) = on_demux_pad(&sh, &pl, [&vparse, &vcaps, &vtee], pad) {
                tracing::error!(stream = %sh.spec.label, error = %e, "cannot link demuxed stream");
            }
        });

        let bus = pipeline
            .bus()
            .ok_or_else(|| build_err("pipeline has no bus"))?;
        let (tx, done) = tokio::sync::watch::channel(None);
        let name = pipeline.name().to_string();
        tokio::spawn(async move {
            let r = watch_bus(bus, &name).await;
            let _ = tx.send(Some(r));
        });
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| PipelineError::Build(format!("cannot start: {e}")))?;
        Ok(Self {
            pipeline,
            appsrc,
            vcaps,
            vtee,
            elementary: Mutex::new(None),
            announced_rate: Mutex::new(None),
            done,
        })
    }

    /// The frame rate the publisher's metadata announces, for an AV1 input's caps (flvdemux
    /// reads it for H.264 itself; HEVC states its own); it must come before the sequence start,
    /// as encoders send it. A bitstream that states no rate (AV1 from libaom,
    /// for one) otherwise reaches the ladder as variable frame rate, and `videorate` then
    /// drops every frame that arrives a millisecond early. Outside 1..=MAX_ANNOUNCED_FPS it is
    /// ignored.
    pub fn announce_frame_rate(&self, fps: f64) {
        if !(1.0..=MAX_ANNOUNCED_FPS).contains(&fps) {
            return;
        }
        if let (Ok(mut slot), Some(rate)) = (
            self.announced_rate.lock(),
            gst::Fraction::approximate_f64(fps),
        ) {
            *slot = Some(rate);
        }
    }

    /// Enhanced RTMP HEVC or AV1 (which flvdemux cannot read): its configuration builds (or
    /// re-announces) an elementary input `appsrc → PARSER → caps` in front of the source tee,
    /// in place of the H.264 chain; its frames go there with their RTMP timestamps (ms,
    /// flvdemux's time base for the audio beside them). Frames before any configuration are
    /// dropped; a second codec in one publish is refused. Never blocks.
    pub fn push_elementary(
        &self,
        codec: VideoCodec,
        dts_ms: u32,
        packet: Elementary,
    ) -> Result<(), PipelineError> {
        let Ok(mut slot) = self.elementary.lock() else {
            return Err(PipelineError::Closed);
        };
        if let Some((known, ..)) = slot.as_ref() {
            if *known != codec {
                return Err(PipelineError::SourceRefused(
                    "the video codec changed during the publish; publish again to change it".into(),
                ));
            }
        }
        match packet {
            Elementary::Config(record) => {
                let mut caps = match codec {
                    VideoCodec::Hevc => gst::Caps::builder("video/x-h265")
                        .field("stream-format", "hvc1")
                        .field("alignment", "au")
                        .field("codec_data", gst::Buffer::from_slice(record.clone()))
                        .build(),
                    VideoCodec::Av1 => parsed_caps(codec, Some(&record)),
                };
                // AV1 from libaom states no frame rate; HEVC's VUI does, and wins over what
                // a publisher's metadata claims.
                if let (VideoCodec::Av1, Some(rate), Some(c)) = (
                    codec,
                    self.announced_rate.lock().ok().and_then(|r| *r),
                    caps.get_mut(),
                ) {
                    c.set("framerate", rate);
                }
                let av1c = (codec == VideoCodec::Av1).then_some(&record);
                if let Some((_, src, filter)) = slot.as_ref() {
                    src.set_caps(Some(&caps));
                    if av1c.is_some() {
                        filter.set_property("caps", parsed_caps(codec, av1c));
                    }
                    return Ok(());
                }
                let src = gst_app::AppSrc::builder()
                    .caps(&caps)
                    .format(gst::Format::Time)
                    .is_live(true)
                    .max_bytes(MAX_INPUT_BACKLOG_BYTES)
                    .block(false)
                    .build();
                let (parse, filter) =
                    elementary_chain(&self.pipeline, &self.vcaps, &self.vtee, codec, av1c)?;
                self.pipeline.add(&src).map_err(build_err)?;
                src.link(&parse).map_err(build_err)?;
                src.sync_state_with_parent().map_err(build_err)?;
                *slot = Some((codec, src, filter));
                Ok(())
            }
            Elementary::Frame {
                keyframe,
                cto_ms,
                data,
            } => {
                let Some((_, src, _)) = slot.as_ref() else {
                    return Ok(());
                };
                if src.current_level_bytes() >= MAX_INPUT_BACKLOG_BYTES {
                    return Err(PipelineError::Backlog);
                }
                let dts = u64::from(dts_ms) * 1_000_000;
                let pts = (i64::from(dts_ms) + i64::from(cto_ms)).max(0) as u64 * 1_000_000;
                let mut buf = gst::Buffer::from_slice(data);
                if let Some(b) = buf.get_mut() {
                    b.set_dts(gst::ClockTime::from_nseconds(dts));
                    b.set_pts(gst::ClockTime::from_nseconds(pts));
                    if !keyframe {
                        b.set_flags(gst::BufferFlags::DELTA_UNIT);
                    }
                }
                src.push_buffer(buf)
                    .map(|_| ())
                    .map_err(|_| PipelineError::Closed)
            }
        }
    }

    /// Feed input bytes. Never blocks.
    pub fn push(&self, data: Bytes) -> Result<(), PipelineError> {
        if self.appsrc.current_level_bytes() >= MAX_INPUT_BACKLOG_BYTES {
            return Err(PipelineError::Backlog);
        }
        self.appsrc
            .push_buffer(gst::Buffer::from_slice(data))
            .map(|_| ())
            .map_err(|_| PipelineError::Closed)
    }

    /// Input has ended: let the pipeline drain.
    pub fn end_of_input(&self) {
        let _ = self.appsrc.end_of_stream();
    }

    /// Wait until the pipeline ends (EOS after [`Pipeline::end_of_input`]) or fails.
    /// Cancel-safe: may be polled in a `select!` loop.
    pub async fn wait(&self) -> Result<(), PipelineError> {
        let mut rx = self.done.clone();
        loop {
            if let Some(r) = rx.borrow_and_update().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// Stop and free the pipeline (blocks briefly while GStreamer joins its threads).
    pub fn stop(self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Read the bus until end of stream or the first error; log warnings.
async fn watch_bus(bus: gst::Bus, name: &str) -> Result<(), PipelineError> {
    let mut messages = bus.stream();
    while let Some(msg) = messages.next().await {
        match msg.view() {
            gst::MessageView::Eos(_) => return Ok(()),
            gst::MessageView::Application(a) => {
                if let Some(reason) = a
                    .structure()
                    .filter(|s| s.name() == REFUSAL_MESSAGE)
                    .and_then(|s| s.get::<String>("reason").ok())
                {
                    return Err(PipelineError::SourceRefused(reason));
                }
            }
            gst::MessageView::Error(e) => {
                return Err(PipelineError::Runtime {
                    element: e
                        .src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default(),
                    message: e.error().to_string(),
                })
            }
            gst::MessageView::Warning(w) => {
                tracing::warn!(
                    pipeline = %name,
                    element = %w.src().map(|s| s.path_string().to_string()).unwrap_or_default(),
                    warning = %w.error(),
                    "pipeline warning"
                );
            }
            _ => {}
        }
    }
    Ok(())
}

fn make_queue() -> Result<gst::Element, PipelineError> {
    gst::ElementFactory::make("queue")
        .property("max-size-time", BRANCH_QUEUE_TIME_NS)
        .property("max-size-buffers", 0u32)
        .property("max-size-bytes", 0u32)
        .build()
        .map_err(|_| PipelineError::MissingElement("queue"))
}

/// Add `chain` to the pipeline, link it in order, hang it off a new `tee` pad and start it.
fn add_branch(
    pipeline: &gst::Pipeline,
    tee: &gst::Element,
    chain: &[&gst::Element],
) -> Result<(), PipelineError> {
    pipeline
        .add_many(chain.iter().copied())
        .map_err(build_err)?;
    gst::Element::link_many(chain.iter().copied()).map_err(build_err)?;
    let first = chain.first().ok_or_else(|| build_err("empty branch"))?;
    let sink = first
        .static_pad("sink")
        .ok_or_else(|| build_err("branch without sink pad"))?;
    let src = tee
        .request_pad_simple("src_%u")
        .ok_or_else(|| build_err("tee refused a pad"))?;
    src.link(&sink).map_err(build_err)?;
    for e in chain {
        e.sync_state_with_parent().map_err(build_err)?;
    }
    Ok(())
}

fn on_demux_pad(
    sh: &Arc<Shared>,
    pipeline: &gst::Pipeline,
    [vparse, vcaps, vtee]: [&gst::Element; 3],
    pad: &gst::Pad,
) -> Result<(), PipelineError> {
    let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
    let Some(s) = caps.structure(0) else {
        return Ok(());
    };
    let name = s.name().as_str();
    if name == "video/x-h264" {
        let sink = vparse
            .static_pad("sink")
            .ok_or_else(|| build_err("h264parse without sink"))?;
        if sink.is_linked() {
            return Ok(()); // a second video stream: ignore it
        }
        return pad.link(&sink).map(|_| ()).map_err(build_err);
    }
    if name == "video/x-h265" {
        // HEVC (in MPEG-TS over SRT): its own parser, in place of the H.264 one, to the tee.
        let sink = vparse
            .static_pad("sink")
            .ok_or_else(|| build_err("h264parse without sink"))?;
        if sink.is_linked() {
            return link_fakesink(pipeline, pad); // a second video stream: ignore it
        }
        let (parse, _) = elementary_chain(pipeline, vcaps, vtee, VideoCodec::Hevc, None)?;
        let psink = parse
            .static_pad("sink")
            .ok_or_else(|| build_err("h265parse without sink"))?;
        return pad.link(&psink).map(|_| ()).map_err(build_err);
    }
    if name.starts_with("video/") {
        // A video codec we cannot take yet (AV1 or MPEG-2 in MPEG-TS over SRT): end the
        // publish with the reason, instead of a stream that never shows a picture.
        let codec = match name {
            "video/x-av1" => "AV1".to_string(),
            "video/x-vp9" => "VP9".to_string(),
            "video/mpeg" => "MPEG-2 video".to_string(),
            other => other.trim_start_matches("video/").to_string(),
        };
        refuse(
            pipeline,
            format!("video codec {codec} is not supported yet; set the encoder to H.264 or HEVC"),
        );
        return link_fakesink(pipeline, pad);
    }
    if name.starts_with("audio/") {
        {
            let Ok(mut seen) = sh.audio_seen.lock() else {
                return Ok(());
            };
            if *seen {
                return link_fakesink(pipeline, pad);
            }
            *seen = true;
        }
        let is_aac = name == "audio/mpeg" && s.get::<i32>("mpegversion").ok() == Some(4);
        sh.output.source_audio_codec(describe_audio_codec(s));
        // Time the source audio as it leaves the demuxer, next to the video (A/V drift), and
        // note its arrival by running time, as the appsink times its samples.
        let out = Arc::clone(&sh.output);
        let shared = Arc::clone(sh);
        pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
            let Some(buf) = info.buffer() else {
                return gst::PadProbeReturn::Ok;
            };
            if let Some(t) = buf.dts().or(buf.pts()) {
                out.source_audio(t.nseconds());
            }
            if let Some(pts) = buf.pts() {
                let at = pad_running_time(pad, pts);
                shared.audio_arrivals.record(at.nseconds(), Instant::now());
            }
            gst::PadProbeReturn::Ok
        });
        let raw_aac = gst::Caps::builder("audio/mpeg")
            .field("mpegversion", 4i32)
            .field("stream-format", "raw")
            .build();
        let capsf = gst::ElementFactory::make("capsfilter")
            .property("caps", raw_aac)
            .build()
            .map_err(|_| PipelineError::MissingElement("capsfilter"))?;
        let sink = appsink(sh, "audio", false);
        // AAC is only parsed and packaged, as quick as the passthrough video (which has no
        // queue either, see above); an audio transcode gets a thread of its own.
        let mut chain = Vec::new();
        if is_aac {
            chain.push(make("aacparse")?);
        } else {
            chain.push(make_queue()?);
            // Not AAC (MP3 in FLV, MPEG audio in TS): transcode it.
            chain.push(make("decodebin")?);
        }
        let tail = if is_aac {
            vec![capsf, sink.upcast()]
        } else {
            vec![
                make("audioconvert")?,
                make("audioresample")?,
                make("avenc_aac")?,
                make("aacparse")?,
                capsf,
                sink.upcast(),
            ]
        };
        if is_aac {
            chain.extend(tail);
            let refs: Vec<&gst::Element> = chain.iter().collect();
            pipeline.add_many(refs.iter().copied()).map_err(build_err)?;
            gst::Element::link_many(refs.iter().copied()).map_err(build_err)?;
        } else {
            let all: Vec<&gst::Element> = chain.iter().chain(tail.iter()).collect();
            pipeline.add_many(all.iter().copied()).map_err(build_err)?;
            chain[0].link(&chain[1]).map_err(build_err)?;
            let t: Vec<&gst::Element> = tail.iter().collect();
            gst::Element::link_many(t.iter().copied()).map_err(build_err)?;
            let convert = tail[0].downgrade();
            chain[1].connect_pad_added(move |_, p| {
                if let Some(c) = convert.upgrade() {
                    if let Some(s) = c.static_pad("sink") {
                        if !s.is_linked() {
                            let _ = p.link(&s);
                        }
                    }
                }
            });
            for e in &tail {
                e.sync_state_with_parent().map_err(build_err)?;
            }
        }
        for e in &chain {
            e.sync_state_with_parent().map_err(build_err)?;
        }
        let qsink = chain[0]
            .static_pad("sink")
            .ok_or_else(|| build_err("audio branch without a sink pad"))?;
        return pad.link(&qsink).map(|_| ()).map_err(build_err);
    }
    link_fakesink(pipeline, pad)
}

/// End the publish with `reason` for the broadcaster: the bus watcher turns this message into
/// [`PipelineError::SourceRefused`], and the protocol driver says why.
fn refuse(pipeline: &gst::Pipeline, reason: String) {
    let msg = gst::message::Application::builder(
        gst::Structure::builder(REFUSAL_MESSAGE)
            .field("reason", reason)
            .build(),
    )
    .build();
    let _ = pipeline.post_message(msg);
}

/// Streams we do not use (data, subtitles, a second audio track) go to a fakesink so the
/// demuxer never sees not-linked.
fn link_fakesink(pipeline: &gst::Pipeline, pad: &gst::Pad) -> Result<(), PipelineError> {
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
        .map_err(|_| PipelineError::MissingElement("fakesink"))?;
    pipeline.add(&sink).map_err(build_err)?;
    sink.sync_state_with_parent().map_err(build_err)?;
    let s = sink
        .static_pad("sink")
        .ok_or_else(|| build_err("fakesink without sink"))?;
    pad.link(&s).map(|_| ()).map_err(build_err)
}

/// The scaler for a source's decoded pictures: ours (`scale::ELEMENT_NAME`) when its caps
/// say 8-bit 4:2:0, 4:2:2, 4:4:4 or 4:0:0 (what the decoders then put out is one of the formats
/// it takes) and do not say interlaced; GStreamer's `videoscale` otherwise (10-bit or
/// interlaced video, or caps that do not say), so that a source ours cannot scale still
/// negotiates, and always when `own` is off (`transcode.own_scaler`).
fn scaler_for(s: &gst::StructureRef, own: bool) -> &'static str {
    let eight_bit = s.get::<u32>("bit-depth-luma").ok() == Some(8)
        && s.get::<u32>("bit-depth-chroma").map_or(true, |d| d == 8);
    let planar = matches!(
        s.get::<&str>("chroma-format").ok(),
        Some("4:2:0" | "4:2:2" | "4:4:4" | "4:0:0")
    );
    // Interlaced pictures are scaled field by field by `videoscale`; ours scales frames.
    let progressive = s
        .get::<&str>("interlace-mode")
        .map_or(true, |m| m == "progressive");
    if own && eight_bit && planar && progressive && scale::register().is_ok() {
        scale::ELEMENT_NAME
    } else {
        "videoscale"
    }
}

fn build_ladder(
    sh: &Arc<Shared>,
    pipeline: &gst::Pipeline,
    vtee: &gst::Element,
    caps: &gst::CapsRef,
) -> Result<(), PipelineError> {
    let Some(s) = caps.structure(0) else {
        return Ok(());
    };
    let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height")) else {
        return Ok(()); // caps without a size yet; h264parse sends full caps later
    };
    {
        let Ok(mut built) = sh.built.lock() else {
            return Ok(());
        };
        if *built {
            return Ok(()); // resolution changes mid-stream keep the first ladder
        }
        *built = true;
    }
    let (w, h) = (w.max(0) as u32, h.max(0) as u32);
    let known_fps = s
        .get::<gst::Fraction>("framerate")
        .ok()
        .filter(|f| f.numer() > 0 && f.denom() > 0)
        .map(|f| f.numer() as f64 / f.denom() as f64);
    let fps = known_fps.unwrap_or(UNKNOWN_SOURCE_FPS);
    // Without a known rate videorate times frames by their timestamps alone, and RTMP's are
    // whole milliseconds: at 30 fps, a frame 33 ms after the one before is "faster than 30"
    // and dropped. One frame per second of slack keeps such a source whole, and still halves
    // a 60 fps one for a 30 fps rung.
    let rate_slack = if known_fps.is_some() { 0 } else { 1 };
    let source = SourceSize {
        width: w,
        height: h,
        fps,
    };
    if let Some(reason) = sh.spec.max_source.refuses(&source) {
        // No plan, no packager stream, no ladder: the driver ends the publish with the reason.
        refuse(pipeline, reason);
        return Ok(());
    }
    let rungs = ladder::rungs_for_source(&sh.spec.ladder, w, h, sh.spec.passthrough);
    let mut video = Vec::new();
    if sh.spec.passthrough {
        let bits = (f64::from(w) * f64::from(h) * fps * SOURCE_BITS_PER_PIXEL) as u64;
        video.push(("source".to_string(), w, h, bits + AUDIO_BITRATE));
    }
    for r in &rungs {
        let (rw, rh) = ladder::rung_size(r.height, w, h);
        video.push((
            r.name.clone(),
            rw,
            rh,
            u64::from(r.video_kbps) * 1000 + AUDIO_BITRATE,
        ));
    }
    let audio = sh.spec.has_audio.unwrap_or(true);
    sh.output.plan(Plan {
        source,
        video,
        audio,
        rungs: rungs.clone(),
    });
    if rungs.is_empty() {
        return Ok(());
    }
    let dtee = gst::ElementFactory::make("tee")
        .property("allow-not-linked", true)
        .build()
        .map_err(|_| PipelineError::MissingElement("tee"))?;
    let decoder = match s.name().as_str() {
        "video/x-h265" => "avdec_h265",
        // libaom's decoder: the one AV1 decoder GStreamer 1.22 on Debian has.
        "video/x-av1" => "av1dec",
        _ => "avdec_h264",
    };
    let decode = make(decoder)?;
    let scaler = scaler_for(s, sh.spec.own_scaler);
    tracing::info!(
        stream = %sh.spec.label,
        decoder,
        scaler,
        rungs = rungs.len(),
        "building the ladder"
    );
    if let Some(pad) = decode.static_pad("src") {
        pad.add_probe(gst::PadProbeType::BUFFER, frame_durations(fps));
    }
    add_branch(pipeline, vtee, &[&make_queue()?, &decode, &dtee])?;
    let shapes: Vec<ladder::RungShape> = rungs
        .iter()
        .map(|r| {
            let (width, height) = ladder::rung_size(r.height, w, h);
            ladder::RungShape {
                width,
                height,
                fps: r.fps,
            }
        })
        .collect();
    // Each rung's scaled pictures, for the smaller rungs that scale from them.
    let mut scaled: Vec<Option<gst::Element>> = vec![None; rungs.len()];
    for (i, from) in ladder::cascade(&shapes) {
        let (Some(r), Some(shape)) = (rungs.get(i), shapes.get(i)) else {
            continue;
        };
        let (rw, rh) = (shape.width, shape.height);
        let upstream = from
            .and_then(|j| scaled.get(j).cloned().flatten())
            .unwrap_or_else(|| dtee.clone());
        let scale = make(scaler)?;
        let rate = gst::ElementFactory::make("videorate")
            .property("max-rate", (r.fps + rate_slack) as i32)
            .property("drop-only", true)
            .build()
            .map_err(|_| PipelineError::MissingElement("videorate"))?;
        let capsf = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("width", rw as i32)
                    .field("height", rh as i32)
                    .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                    .build(),
            )
            .build()
            .map_err(|_| PipelineError::MissingElement("capsfilter"))?;
        let enc = gst::ElementFactory::make("x264enc")
            .property("bitrate", r.video_kbps)
            .property("key-int-max", r.fps * MAX_KEYFRAME_INTERVAL_S)
            .property("b-adapt", false)
            .property("bframes", 0u32)
            .property("option-string", "scenecut=0")
            .property_from_str("speed-preset", &sh.spec.x264_preset)
            .property_from_str("tune", "zerolatency")
            .build()
            .map_err(|_| PipelineError::MissingElement("x264enc"))?;
        let parse = make("h264parse")?;
        let outcaps = avc_au_capsfilter()?;
        let sink = appsink(sh, &r.name, true);
        // Force a keyframe wherever the source has one, before the frame reaches x264.
        let pending: Arc<Mutex<VecDeque<u64>>> = Arc::default();
        if let Ok(mut k) = sh.keyframes.lock() {
            k.push(Arc::clone(&pending));
        }
        if let Some(pad) = enc.static_pad("sink") {
            pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
                let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
                    return gst::PadProbeReturn::Ok;
                };
                let mut force = false;
                if let Ok(mut q) = pending.lock() {
                    while q.front().is_some_and(|k| *k <= pts.nseconds()) {
                        q.pop_front();
                        force = true;
                    }
                }
                if force {
                    let ev = gst_video::DownstreamForceKeyUnitEvent::builder()
                        .all_headers(true)
                        .build();
                    pad.send_event(ev);
                }
                gst::PadProbeReturn::Ok
            });
        }
        let rtee = gst::ElementFactory::make("tee")
            .property("allow-not-linked", true)
            .build()
            .map_err(|_| PipelineError::MissingElement("tee"))?;
        add_branch(
            pipeline,
            &upstream,
            &[&make_queue()?, &scale, &rate, &capsf, &rtee],
        )?;
        // Every rung 8-bit 4:2:0, whatever the source: a 4:4:4 (OBS's I444), 4:2:2 or 10-bit
        // source would otherwise make x264 encode High 4:4:4, 4:2:2 or 10 profiles, which
        // browsers and Apple's players do not decode. In passthrough (an I420 source) the
        // converter copies nothing.
        let convert = make("videoconvert")?;
        let i420 = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst::Caps::builder("video/x-raw")
                    .field("format", RUNG_PIXEL_FORMAT)
                    .build(),
            )
            .build()
            .map_err(|_| PipelineError::MissingElement("capsfilter"))?;
        add_branch(
            pipeline,
            &rtee,
            &[
                &make_queue()?,
                &convert,
                &i420,
                &enc,
                &parse,
                &outcaps,
                sink.upcast_ref(),
            ],
        )?;
        if let Some(slot) = scaled.get_mut(i) {
            *slot = Some(rtee);
        }
    }
    Ok(())
}

/// A probe that gives every decoded frame a duration when it has none: the interval from the
/// frame before (or one frame at `fps` for the first). A source whose bitstream states no
/// frame rate (AV1 without timing info, H.264 without VUI timing) is decoded into frames
/// without durations, and `videorate` in front of each rung aborts the process on those.
fn frame_durations(
    fps: f64,
) -> impl Fn(&gst::Pad, &mut gst::PadProbeInfo) -> gst::PadProbeReturn + Send + Sync + 'static {
    let nominal = (1e9 / fps.max(1.0)) as u64;
    // (PTS of the frame before, the interval before it)
    let last: Mutex<(Option<u64>, u64)> = Mutex::new((None, nominal));
    move |_, info| {
        let Some(buf) = info.buffer_mut() else {
            return gst::PadProbeReturn::Ok;
        };
        let Some(pts) = buf.pts().map(|t| t.nseconds()) else {
            return gst::PadProbeReturn::Ok;
        };
        let Ok(mut last) = last.lock() else {
            return gst::PadProbeReturn::Ok;
        };
        let (prev, interval) = *last;
        let interval = match prev {
            Some(p) if pts > p && pts - p <= MAX_FRAME_INTERVAL_NS => pts - p,
            _ => interval,
        };
        *last = (Some(pts), interval);
        if buf.duration().is_none() {
            buf.make_mut()
                .set_duration(gst::ClockTime::from_nseconds(interval));
        }
        gst::PadProbeReturn::Ok
    }
}

/// An appsink that forwards caps and samples of one rendition to the output.
fn appsink(sh: &Arc<Shared>, rendition: &str, video: bool) -> gst_app::AppSink {
    let out = Arc::clone(&sh.output);
    let arrivals = Arc::clone(&sh.arrivals);
    let shared = Arc::clone(sh);
    let name = rendition.to_string();
    let last_caps: Mutex<Option<gst::Caps>> = Mutex::new(None);
    gst_app::AppSink::builder()
        .name(format!("out-{rendition}"))
        .sync(false)
        // Sinks of a rung or an elementary input are added to a playing pipeline: an async
        // state change would take the whole pipeline back to PAUSED until each prerolls, and
        // a sink waiting for preroll holds a queue that the parser's allocation query must
        // cross (a deadlock seen with AV1).
        .async_(false)
        .callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let (Some(caps), Ok(mut last)) = (sample.caps(), last_caps.lock()) {
                        if last.as_ref().map(|c| c.as_ref()) != Some(caps) {
                            if let Some(codec) = codec_from_caps(caps) {
                                out.configure(&name, codec);
                            }
                            *last = Some(caps.to_owned());
                        }
                    }
                    let Some(buf) = sample.buffer() else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    // Running time, not the buffer's own timestamps: x264enc offsets its
                    // output by 1,000 hours (and its segment by as much), so a rung's raw
                    // PTS lie 1,000 hours after the source's and the audio's.
                    let segment = sample.segment();
                    let Some(raw_pts) = buf.pts().or(buf.dts()) else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let pts = running_time(segment, raw_pts);
                    // The DTS keeps its distance below the PTS (a DTS may lie before the
                    // segment's start, where running time has no value).
                    let dts = match buf.dts() {
                        Some(d) if d <= raw_pts => pts.saturating_sub(raw_pts - d),
                        _ => pts,
                    };
                    let keyframe = !video || !buf.flags().contains(gst::BufferFlags::DELTA_UNIT);
                    // The buffer itself, mapped, becomes the sample's bytes (no copy): the
                    // packager holds it until its part is written (a part target; audio that
                    // waits for the video's boundary, up to `packager`'s MAX_FOLLOW_HOLD).
                    let Some(Ok(mapped)) = sample
                        .buffer_owned()
                        .map(gst::Buffer::into_mapped_buffer_readable)
                    else {
                        return Ok(gst::FlowSuccess::Ok);
                    };
                    let sample = Sample {
                        pts_ns: pts.nseconds(),
                        dts_ns: dts.nseconds(),
                        keyframe,
                        data: Bytes::from_owner(mapped),
                        arrival: if video {
                            arrivals.lookup(pts.nseconds())
                        } else {
                            shared.audio_arrivals.lookup(pts.nseconds())
                        },
                    };
                    out.sample(&name, sample);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        )
        .build()
}

/// `t` of a buffer crossing `pad`, as running time in the segment sticky on the pad.
fn pad_running_time(pad: &gst::Pad, t: gst::ClockTime) -> gst::ClockTime {
    let segment = pad
        .sticky_event::<gst::event::Segment>(0)
        .map(|e| e.segment().clone());
    running_time(segment.as_ref(), t)
}

/// `t` as running time in `segment` (a time segment); a time before the segment's start is
/// running time 0 (never the raw time: an x264 rung's is 1,000 hours ahead). Without a time
/// segment, `t` itself.
fn running_time(segment: Option<&gst::Segment>, t: gst::ClockTime) -> gst::ClockTime {
    match segment.and_then(|s| s.downcast_ref::<gst::format::Time>()) {
        None => t,
        Some(s) => match s.to_running_time_full(t) {
            Some(gst::Signed::Positive(rt)) => rt,
            Some(gst::Signed::Negative(_)) => gst::ClockTime::ZERO,
            None => t,
        },
    }
}

/// Codec parameters from the caps of an appsink (H.264 avc, H.265 hvc1, AV1 with its av1C, or
/// raw AAC with codec_data).
pub fn codec_from_caps(caps: &gst::CapsRef) -> Option<CodecConfig> {
    let s = caps.structure(0)?;
    let data = s.get::<gst::Buffer>("codec_data").ok()?;
    let bytes = Bytes::copy_from_slice(data.map_readable().ok()?.as_slice());
    let picture = || -> Option<packager::Picture> {
        Some(packager::Picture {
            width: s.get::<i32>("width").ok()?.max(0) as u32,
            height: s.get::<i32>("height").ok()?.max(0) as u32,
            framerate: s
                .get::<gst::Fraction>("framerate")
                .ok()
                .filter(|f| f.numer() > 0 && f.denom() > 0)
                .map(|f| (f.numer() as u32, f.denom() as u32)),
        })
    };
    match s.name().as_str() {
        "video/x-h264" => {
            let p = picture()?;
            Some(CodecConfig::H264 {
                avcc: bytes,
                width: p.width,
                height: p.height,
                framerate: p.framerate,
            })
        }
        "video/x-h265" => {
            let p = picture()?;
            Some(CodecConfig::H265 {
                hvcc: bytes,
                width: p.width,
                height: p.height,
                framerate: p.framerate,
            })
        }
        "video/x-av1" => {
            let p = picture()?;
            Some(CodecConfig::Av1 {
                av1c: bytes,
                width: p.width,
                height: p.height,
                framerate: p.framerate,
            })
        }
        "audio/mpeg" => Some(CodecConfig::Aac {
            asc: bytes,
            sample_rate: s.get::<i32>("rate").ok()?.max(0) as u32,
            channels: s.get::<i32>("channels").ok()?.max(0) as u32,
        }),
        _ => None,
    }
}

#[cfg(test)]
#[path = "pipeline_test.rs"]
mod tests;
