//! Passthrough without GStreamer: an RTMP stream that needs no encoding goes from its messages
//! straight into the packager.
//!
//! An RTMP publish's H.264 access units are already what fMP4 carries (length-prefixed NAL
//! units, the avcC record the encoder sent), and so are its raw AAC frames (with their
//! AudioSpecificConfig). When a stream has no rung to encode (`transcode.passthrough` on and
//! every rung at least as large as the source, or no ladder), building FLV tags, demuxing them
//! in `flvdemux`, parsing them in `h264parse`/`aacparse` and handing them across a GStreamer
//! thread cost about twice what packaging and serving them does (benches/passthrough.rs).
//! [`Input`] decides, per publish, which way the stream goes:
//!
//! - [`Input::Deciding`]: the first messages are held (the encoder sends its configurations
//!   first) until the video configuration is known and the audio's too, or the stream has
//!   shown [`AUDIO_DECISION_WAIT_MS`] of video without audio. H.264 (read by
//!   [`crate::bitstream`]) whose size needs no rung, with AAC or no audio, goes [`Input::Direct`];
//!   anything else (HEVC or AV1 over Enhanced RTMP, MP3 audio, a ladder to encode, a record we
//!   cannot read) goes to a GStreamer [`Pipeline`] with the held messages replayed, as before.
//! - [`Direct`]: each message becomes a [`Sample`] on the calling (RTMP) task, timed by its
//!   RTMP timestamp as `flvdemux` times it, with the same calls into the [`Output`] (plan,
//!   codec configuration, source frames for health) that the pipeline makes.
//!
//! `transcode.direct_passthrough = false` sends every stream through GStreamer.

use std::sync::Arc;

use bytes::Bytes;
use edge_config::SourceSize;
use packager::{CodecConfig, Sample};
use tokio::time::Instant;

use crate::bitstream::{self, Asc, Avc};
use crate::flv::{self, Elementary, TagType, VideoCodec};
use crate::ladder;
use crate::metrics;
use crate::pipeline::{
    ArrivalLog, Output, Pipeline, PipelineError, PipelineSpec, Plan, AUDIO_BITRATE,
    MAX_ANNOUNCED_FPS, SOURCE_BITS_PER_PIXEL, UNKNOWN_SOURCE_FPS,
};

/// How much video (by its timestamps) a publish may send after its video configuration before
/// it is set up without audio. Encoders send both configurations before any frame, so a stream
/// with audio never waits; one without waits this long for its first picture to be packaged.
pub const AUDIO_DECISION_WAIT_MS: u32 = 1_000;
/// Most input held while deciding. Configurations come first, so a stream that reaches this
/// without deciding is odd (audio only, or frames without a configuration): it goes through
/// GStreamer, which takes whatever comes.
pub const MAX_HELD_BYTES: usize = 8 * 1024 * 1024;
/// FLV sound format of AAC.
const SOUND_AAC: u8 = 10;
/// FLV AVC and AAC packet types.
const PACKET_CONFIG: u8 = 0;
const PACKET_FRAME: u8 = 1;
/// AAC object types packaged as they come (Main, LC, SSR, LTP): their sample rate is the one
/// the AudioSpecificConfig states first. HE-AAC's (SBR, PS) output rate is not, so it goes
/// through GStreamer's reading of it.
const DIRECT_AAC_OBJECT_TYPES: std::ops::RangeInclusive<u8> = 1..=4;
/// NAL unit length size the packager's samples use (`packager::Sample`).
const NAL_LENGTH_SIZE: u8 = 4;

/// A publish's way into the packager.
pub enum Input {
    /// Holding the first messages until it is known which way the stream goes.
    Deciding(Box<Deciding>),
    /// Packaged from the RTMP messages themselves.
    Direct(Direct),
    /// Through GStreamer (SRT always; RTMP that needs it).
    Pipeline(Pipeline),
    /// A start that failed, or after [`Input::stop`].
    Gone,
}

impl Input {
    /// How this stream reaches the packager, as `edge_ingest_streams_by_packaging` labels it
    /// (`None` while deciding).
    pub fn packaging(&self) -> Option<&'static str> {
        match self {
            Input::Direct(_) => Some("direct"),
            Input::Pipeline(_) => Some("gstreamer"),
            Input::Deciding(_) | Input::Gone => None,
        }
    }

    /// Count this stream in `edge_ingest_streams_by_packaging` (+1 as it starts a way, -1 as
    /// it ends).
    pub fn count(&self, delta: i64) {
        if let Some(way) = self.packaging() {
            metrics::STREAMS_BY_PACKAGING
                .with_label_values(&[way])
                .add(delta);
        }
    }
}

impl From<Pipeline> for Input {
    fn from(p: Pipeline) -> Self {
        Input::Pipeline(p)
    }
}

/// One held RTMP message (its FLV tag body, as `crate::flv` forwards it).
struct Held {
    kind: TagType,
    ts: u32,
    body: Bytes,
    at: Instant,
}

/// The first messages of an RTMP publish, and what they tell so far.
pub struct Deciding {
    spec: PipelineSpec,
    output: Arc<dyn Output>,
    arrivals: Arc<ArrivalLog>,
    held: Vec<Held>,
    held_bytes: usize,
    video: Option<(Bytes, Avc)>,
    audio: Option<(Bytes, Asc)>,
    /// Timestamp of the first video frame after the video configuration.
    first_frame_ms: Option<u32>,
    announced_fps: Option<f64>,
}

/// Which way a deciding stream goes.
enum Route {
    Direct,
    /// Through GStreamer, and why (for the log).
    Pipeline(String),
}

impl Input {
    /// The input of a new RTMP publish: deciding if `direct` allows it and the stream may pass
    /// through, a GStreamer pipeline (fed the FLV header) otherwise.
    pub fn rtmp(
        spec: PipelineSpec,
        output: Arc<dyn Output>,
        arrivals: Arc<ArrivalLog>,
        direct: bool,
    ) -> Result<Self, PipelineError> {
        if direct && spec.passthrough {
            return Ok(Input::Deciding(Box::new(Deciding::new(
                spec, output, arrivals,
            ))));
        }
        let p = Pipeline::start(spec, output, arrivals)?;
        p.push(flv::header())?;
        let input = Input::Pipeline(p);
        input.count(1);
        Ok(input)
    }

    /// Whether the stream is packaged without GStreamer.
    pub fn is_direct(&self) -> bool {
        matches!(self, Input::Direct(_))
    }

    /// One RTMP audio or video message body as `crate::flv` forwards it (legacy FLV; Enhanced
    /// RTMP H.264 already rewritten), timestamped `ts` (ms), read off the socket `at`.
    pub fn push(
        &mut self,
        kind: TagType,
        ts: u32,
        body: Bytes,
        at: Instant,
    ) -> Result<(), PipelineError> {
        match self {
            Input::Pipeline(p) => push_tag(p, kind, ts, &body),
            Input::Direct(d) => d.push(kind, ts, body, at),
            Input::Gone => Err(PipelineError::Closed),
            Input::Deciding(dec) => {
                let route = dec.consider(kind, ts, &body);
                dec.held_bytes += body.len();
                dec.held.push(Held { kind, ts, body, at });
                let over = dec.held_bytes > MAX_HELD_BYTES;
                match route {
                    Some(route) => self.settle(route),
                    None if over => self.settle(Route::Pipeline(format!(
                        "{MAX_HELD_BYTES} bytes came before the stream could be set up"
                    ))),
                    None => Ok(()),
                }
            }
        }
    }

    /// An Enhanced RTMP HEVC or AV1 message: only GStreamer reads those.
    pub fn push_elementary(
        &mut self,
        codec: VideoCodec,
        ts: u32,
        packet: Elementary,
    ) -> Result<(), PipelineError> {
        if let Input::Deciding(_) = self {
            self.settle(Route::Pipeline(format!("{codec:?} video")))?;
        }
        match self {
            Input::Pipeline(p) => p.push_elementary(codec, ts, packet),
            Input::Direct(_) => Err(PipelineError::SourceRefused(
                "the video codec changed during the publish; publish again to change it".into(),
            )),
            _ => Err(PipelineError::Closed),
        }
    }

    /// The frame rate the publisher's metadata announces (see
    /// [`Pipeline::announce_frame_rate`]); a direct stream uses it when its SPS states none.
    pub fn announce_frame_rate(&mut self, fps: f64) {
        match self {
            Input::Pipeline(p) => p.announce_frame_rate(fps),
            Input::Deciding(d) if (1.0..=MAX_ANNOUNCED_FPS).contains(&fps) => {
                d.announced_fps = Some(fps)
            }
            _ => {}
        }
    }

    /// Until a pipeline ends or fails (never, for a stream without one: its errors come back
    /// from [`Input::push`]). Cancel-safe.
    pub async fn wait(&self) -> Result<(), PipelineError> {
        match self {
            Input::Pipeline(p) => p.wait().await,
            _ => std::future::pending().await,
        }
    }

    /// The publisher is gone: let a pipeline drain.
    pub fn end_of_input(&self) {
        if let Input::Pipeline(p) = self {
            p.end_of_input();
        }
    }

    /// Whether everything pushed has been handed to the packager, once input has ended.
    pub async fn drained(&self) -> Result<(), PipelineError> {
        match self {
            Input::Pipeline(p) => p.wait().await,
            _ => Ok(()),
        }
    }

    /// Free a pipeline (blocks briefly while GStreamer joins its threads).
    pub fn stop(self) {
        if let Input::Pipeline(p) = self {
            p.stop();
        }
    }

    /// Leave [`Input::Deciding`] for `route`, replaying what was held.
    fn settle(&mut self, route: Route) -> Result<(), PipelineError> {
        let Input::Deciding(dec) = std::mem::replace(self, Input::Gone) else {
            return Ok(());
        };
        let dec = *dec;
        match route {
            Route::Direct => {
                let Some((avcc, avc)) = dec.video else {
                    return Err(PipelineError::Closed);
                };
                let mut d = Direct::start(
                    &dec.spec,
                    dec.output,
                    dec.arrivals,
                    (avcc, avc),
                    dec.audio,
                    dec.announced_fps,
                )?;
                tracing::info!(stream = %dec.spec.label, "passthrough without GStreamer");
                for h in dec.held {
                    d.push(h.kind, h.ts, h.body, h.at)?;
                }
                *self = Input::Direct(d);
                self.count(1);
            }
            Route::Pipeline(why) => {
                tracing::info!(stream = %dec.spec.label, reason = %why, "stream goes through GStreamer");
                let p = Pipeline::start(dec.spec, dec.output, dec.arrivals)?;
                if let Some(fps) = dec.announced_fps {
                    p.announce_frame_rate(fps);
                }
                p.push(flv::header())?;
                // Counted before the replay: a failed replay still ends through
                // `finish_pipeline`, which counts it out.
                *self = Input::Pipeline(p);
                self.count(1);
                if let Input::Pipeline(p) = self {
                    for h in &dec.held {
                        push_tag(p, h.kind, h.ts, &h.body)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One message into a pipeline, as an FLV tag.
fn push_tag(p: &Pipeline, kind: TagType, ts: u32, body: &[u8]) -> Result<(), PipelineError> {
    let tag = flv::tag(kind, ts, body).ok_or_else(|| {
        PipelineError::SourceRefused("a media message larger than FLV allows".into())
    })?;
    p.push(tag)
}

/// A configuration message of a direct stream: an empty record, or the one in use, is nothing
/// (`None`); a new one that reads and `fits` is returned, to be configured; any other ends the
/// publish with the reason.
fn new_config<T>(
    record: &Bytes,
    current: Option<&Bytes>,
    codec: &str,
    parse: impl Fn(&[u8]) -> Result<T, String>,
    fits: impl Fn(&T) -> Result<(), String>,
) -> Result<Option<T>, PipelineError> {
    if record.is_empty() || current == Some(record) {
        return Ok(None);
    }
    let info = parse(record).map_err(|e| {
        PipelineError::SourceRefused(format!(
            "an {codec} configuration this server cannot read: {e}"
        ))
    })?;
    fits(&info).map_err(|why| {
        PipelineError::SourceRefused(format!(
            "a new {codec} configuration with {why}; publish again to change it"
        ))
    })?;
    Ok(Some(info))
}

/// Whether an H.264 configuration can be packaged as it comes: its NAL units' length prefix
/// is the size the packager's samples use.
fn avc_fits(a: &Avc) -> Result<(), String> {
    (a.nal_length_size == NAL_LENGTH_SIZE)
        .then_some(())
        .ok_or_else(|| format!("{}-byte NAL lengths", a.nal_length_size))
}

/// Whether an AAC configuration can be packaged as it comes ([`DIRECT_AAC_OBJECT_TYPES`]).
fn asc_fits(a: &Asc) -> Result<(), String> {
    DIRECT_AAC_OBJECT_TYPES
        .contains(&a.object_type)
        .then_some(())
        .ok_or_else(|| format!("object type {}", a.object_type))
}

impl Deciding {
    /// Nothing held, nothing known yet.
    fn new(spec: PipelineSpec, output: Arc<dyn Output>, arrivals: Arc<ArrivalLog>) -> Self {
        Self {
            spec,
            output,
            arrivals,
            held: Vec::new(),
            held_bytes: 0,
            video: None,
            audio: None,
            first_frame_ms: None,
            announced_fps: None,
        }
    }

    /// What one more message tells; `Some` once the way is known.
    fn consider(&mut self, kind: TagType, ts: u32, body: &Bytes) -> Option<Route> {
        let (Some(&head), Some(&packet)) = (body.first(), body.get(1)) else {
            return None;
        };
        match kind {
            TagType::Video => {
                if head & 0x0f != flv::CODEC_AVC {
                    return Some(Route::Pipeline(format!("FLV video codec {}", head & 0x0f)));
                }
                match packet {
                    // An empty record says nothing yet (encoders that announce one before
                    // their first frame).
                    PACKET_CONFIG if body.len() <= 5 => {}
                    PACKET_CONFIG => {
                        match bitstream::parse_avcc(&body[5..])
                            .and_then(|a| avc_fits(&a).map(|()| a))
                        {
                            Ok(avc) => self.video = Some((body.slice(5..), avc)),
                            Err(e) => return Some(Route::Pipeline(e)),
                        }
                    }
                    PACKET_FRAME if self.video.is_some() => {
                        self.first_frame_ms.get_or_insert(ts);
                    }
                    _ => {}
                }
            }
            TagType::Audio => {
                if head >> 4 != SOUND_AAC {
                    return Some(Route::Pipeline(format!("FLV sound format {}", head >> 4)));
                }
                // An empty record says nothing yet, as for the video.
                if packet == PACKET_CONFIG && body.len() > 2 {
                    match bitstream::parse_asc(&body[2..]).and_then(|a| asc_fits(&a).map(|()| a)) {
                        Ok(asc) => self.audio = Some((body.slice(2..), asc)),
                        Err(e) => return Some(Route::Pipeline(e)),
                    }
                }
            }
        }
        let (_, avc) = self.video.as_ref()?;
        if !ladder::rungs_for_source(&self.spec.ladder, avc.width, avc.height, true).is_empty() {
            return Some(Route::Pipeline("rungs to encode".into()));
        }
        let waited = self.first_frame_ms.is_some_and(|first| {
            kind == TagType::Video && ts.wrapping_sub(first) >= AUDIO_DECISION_WAIT_MS
        });
        (self.audio.is_some() || self.spec.has_audio == Some(false) || waited)
            .then_some(Route::Direct)
    }
}

/// A stream packaged from its RTMP messages.
pub struct Direct {
    label: String,
    output: Arc<dyn Output>,
    arrivals: Arc<ArrivalLog>,
    /// The avcC record in use, and the frame rate to state with it.
    avcc: Bytes,
    framerate: Option<(u32, u32)>,
    /// The AudioSpecificConfig in use.
    asc: Option<Bytes>,
}

impl Direct {
    /// Plan the stream (source only), configure its renditions, as the pipeline does when its
    /// first caps arrive. A source larger than the node takes is refused here.
    fn start(
        spec: &PipelineSpec,
        output: Arc<dyn Output>,
        arrivals: Arc<ArrivalLog>,
        (avcc, avc): (Bytes, Avc),
        audio: Option<(Bytes, Asc)>,
        announced_fps: Option<f64>,
    ) -> Result<Self, PipelineError> {
        let framerate = avc
            .framerate
            .or_else(|| announced_fps.map(|f| ((f * 1000.0).round() as u32, 1000)));
        let fps = framerate
            .map(|(n, d)| f64::from(n) / f64::from(d))
            .unwrap_or(UNKNOWN_SOURCE_FPS);
        let source = SourceSize {
            width: avc.width,
            height: avc.height,
            fps,
        };
        if let Some(reason) = spec.max_source.refuses(&source) {
            return Err(PipelineError::SourceRefused(reason));
        }
        let bits =
            (f64::from(avc.width) * f64::from(avc.height) * fps * SOURCE_BITS_PER_PIXEL) as u64;
        output.plan(Plan {
            source,
            video: vec![(
                "source".to_string(),
                avc.width,
                avc.height,
                bits + AUDIO_BITRATE,
            )],
            audio: spec.has_audio.unwrap_or(true),
            rungs: Vec::new(),
        });
        let mut d = Self {
            label: spec.label.clone(),
            output,
            arrivals,
            avcc: Bytes::new(),
            framerate,
            asc: None,
        };
        d.configure_video(avcc, &avc);
        if let Some((asc, info)) = audio {
            d.configure_audio(asc, info);
        }
        Ok(d)
    }

    fn configure_video(&mut self, avcc: Bytes, avc: &Avc) {
        self.output.source_codec(avc.describe());
        self.output.configure(
            "source",
            CodecConfig::H264 {
                avcc: avcc.clone(),
                width: avc.width,
                height: avc.height,
                framerate: avc.framerate.or(self.framerate),
            },
        );
        self.avcc = avcc;
    }

    fn configure_audio(&mut self, asc: Bytes, info: Asc) {
        self.output.source_audio_codec("AAC".into());
        self.output.configure(
            "audio",
            CodecConfig::Aac {
                asc: asc.clone(),
                sample_rate: info.sample_rate,
                channels: info.channels,
            },
        );
        self.asc = Some(asc);
    }

    /// One message: a configuration (a new one reconfigures the rendition), or a frame.
    fn push(
        &mut self,
        kind: TagType,
        ts: u32,
        body: Bytes,
        at: Instant,
    ) -> Result<(), PipelineError> {
        let (Some(&head), Some(&packet)) = (body.first(), body.get(1)) else {
            return Ok(());
        };
        let refused = |why: String| Err(PipelineError::SourceRefused(why));
        match kind {
            TagType::Video => {
                if head & 0x0f != flv::CODEC_AVC {
                    return refused(
                        "the video codec changed during the publish; publish again to change it"
                            .into(),
                    );
                }
                let Some(rest) = body.get(5..).map(|_| body.slice(5..)) else {
                    return Ok(());
                };
                match packet {
                    PACKET_CONFIG => {
                        let current = Some(&self.avcc);
                        if let Some(avc) =
                            new_config(&rest, current, "H.264", bitstream::parse_avcc, avc_fits)?
                        {
                            self.configure_video(rest, &avc);
                        }
                        Ok(())
                    }
                    PACKET_FRAME if !rest.is_empty() => {
                        let cto = flv::si24(&body[2..5]);
                        let dts_ns = u64::from(ts) * 1_000_000;
                        let pts_ns = (i64::from(ts) + i64::from(cto)).max(0) as u64 * 1_000_000;
                        let keyframe = bitstream::has_idr(&rest, NAL_LENGTH_SIZE);
                        self.arrivals.record(pts_ns, at);
                        if let Some(reason) =
                            self.output
                                .source_frame(dts_ns, pts_ns, keyframe, rest.len())
                        {
                            return refused(reason);
                        }
                        self.output.sample(
                            "source",
                            Sample {
                                pts_ns,
                                dts_ns,
                                keyframe,
                                data: rest,
                                arrival: Some(at),
                            },
                        );
                        Ok(())
                    }
                    // An empty frame, the end of sequence: nothing to package.
                    _ => Ok(()),
                }
            }
            TagType::Audio => {
                if head >> 4 != SOUND_AAC {
                    return refused(format!(
                        "audio other than AAC (FLV sound format {}) started after the stream was set up without it; send AAC, or start the audio with the video",
                        head >> 4
                    ));
                }
                let rest = body.slice(2..);
                match packet {
                    PACKET_CONFIG => {
                        let current = self.asc.as_ref();
                        if let Some(info) =
                            new_config(&rest, current, "AAC", bitstream::parse_asc, asc_fits)?
                        {
                            self.configure_audio(rest, info);
                        }
                        Ok(())
                    }
                    PACKET_FRAME if !rest.is_empty() && self.asc.is_some() => {
                        let ts_ns = u64::from(ts) * 1_000_000;
                        self.output.source_audio(ts_ns);
                        self.output.sample(
                            "audio",
                            Sample {
                                pts_ns: ts_ns,
                                dts_ns: ts_ns,
                                keyframe: true,
                                data: rest,
                                arrival: Some(at),
                            },
                        );
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        }
    }
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct")
            .field("stream", &self.label)
            .finish()
    }
}

#[cfg(test)]
#[path = "direct_test.rs"]
mod tests;

/// What `fuzz/` (a crate outside this one) calls: a direct stream fed arbitrary messages
/// through the same code an RTMP publish goes through. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// An RTMP publish's spec with no ladder (passthrough only), sources up to 1080p60.
    pub(crate) fn spec(label: &str) -> PipelineSpec {
        PipelineSpec {
            label: label.into(),
            format: crate::pipeline::InputFormat::Flv,
            ladder: Vec::new(),
            passthrough: true,
            x264_preset: "ultrafast".into(),
            own_scaler: true,
            has_audio: None,
            max_source: SourceSize {
                width: 1920,
                height: 1080,
                fps: 60.0,
            },
            segment_target: std::time::Duration::from_secs(2),
        }
    }

    /// Takes everything and keeps nothing.
    struct Discard;
    impl Output for Discard {
        fn plan(&self, _: Plan) {}
        fn configure(&self, _: &str, _: CodecConfig) {}
        fn sample(&self, _: &str, _: Sample) {}
    }

    /// Decide on `messages` (audio when `.0` is true, its timestamp, its FLV body), as an
    /// RTMP publish with no ladder does; if the stream goes direct, feed it the rest. Stops
    /// at the first refusal, as the connection would. Returns whether it went direct.
    pub fn feed(messages: &[(bool, u32, Bytes)]) -> bool {
        let mut dec = Deciding::new(spec("fuzz"), Arc::new(Discard), Arc::default());
        let kind = |audio: bool| {
            if audio {
                TagType::Audio
            } else {
                TagType::Video
            }
        };
        let mut rest = messages.iter();
        let route = rest
            .by_ref()
            .find_map(|(audio, ts, body)| dec.consider(kind(*audio), *ts, body));
        let (Some(Route::Direct), Some(video)) = (route, dec.video) else {
            return false;
        };
        let Ok(mut d) = Direct::start(
            &dec.spec,
            dec.output,
            dec.arrivals,
            video,
            dec.audio,
            dec.announced_fps,
        ) else {
            return false;
        };
        let now = Instant::now();
        for (audio, ts, body) in rest {
            if d.push(kind(*audio), *ts, body.clone(), now).is_err() {
                break;
            }
        }
        true
    }
}
