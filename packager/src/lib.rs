//! `packager`: encoded access units in, LL-HLS (CMAF fMP4) out, served from memory.
//!
//! What it is for: the ingest side hands every rendition's encoded samples (H.264 in AVC
//! length-prefixed form, raw AAC frames) to a [`StreamHandle`]; this crate cuts them into
//! CMAF parts and segments, keeps a sliding window of them in memory, and serves the
//! multivariant playlist, the LL-HLS media playlists (blocking reload, delta updates,
//! preload hints, rendition reports), init segments, parts and segments over HTTP.
//!
//! Entry points:
//! - [`Origin::new`], [`Origin::publish`] (returns a [`StreamHandle`]), [`StreamHandle::configure`],
//!   [`StreamHandle::push`], [`StreamHandle::end`], [`Origin::finish`], [`Origin::remove`];
//! - [`Origin::handle`] for one HTTP request, [`Origin::serve`] to run an HTTP/1.1 + h2c server
//!   (on the server kit, under [`ORIGIN_LIMITS`] and the caps of [`origin_acceptor`]).
//!
//! Layout, protocol logic kept free of IO (in the style of quinn-proto and gst-plugins-rs'
//! hlssink3/fmp4mux):
//! - `cutter`: where parts and segments end (pure); `grid`: where a stream's video segments
//!   start when its source's keyframes are too far apart ([`KeyGrid`], pure);
//! - `fmp4`: init segments and `moof`+`mdat` fragments with `mp4-atom` (pure);
//! - `track`: one rendition's window of parts/segments (pure, takes `now`);
//! - `timeline`: a stream's wall clock, one PDT per MSN for every rendition (pure);
//! - `playlist`: renders media and multivariant playlists from plain views (pure);
//! - `request`: URL routing and LL-HLS query rules (pure);
//! - [`rules`]: the playlist rules checker every test that reads a playlist uses (pure);
//! - `origin` and `server`: the thin locking / tokio / hyper glue; `metrics`: Prometheus.
//!
//! Caveats: everything lives in memory (a window of `window_segments` segments per
//! rendition); there is no persistence and no DRM. See each module for its own limits.

mod codec;
mod cutter;
mod delivery;
mod error;
mod fmp4;
mod grid;
mod metrics;
mod origin;
mod playlist;
mod request;
pub mod rules;
mod server;
mod timeline;
mod track;

#[cfg(test)]
mod prop_test;

use std::time::Duration;

use bytes::Bytes;

pub use crate::delivery::DeliverySummary;
pub use crate::error::PackagerError;
pub use crate::grid::{GridStep, KeyGrid};
pub use crate::origin::{
    Continuation, Origin, RenditionContinuation, RenditionSummary, StreamHandle, StreamSummary,
};
pub use crate::server::{
    acceptor as origin_acceptor, LIMITS as ORIGIN_LIMITS,
    MAX_CONNECTIONS as ORIGIN_MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_IP as ORIGIN_MAX_CONNECTIONS_PER_IP,
};

/// The longest a node holds a blocking playlist reload (`_HLS_msn`) or a preload-hint part
/// request before answering 503. The spec's limit is three target durations; this caps it for
/// long targets so that whoever forwards requests to a node (the balancer's playback proxy)
/// waits a bounded, known time: it derives its own timeout from this constant.
pub const MAX_BLOCKING_HOLD: Duration = Duration::from_secs(12);

/// Packaging and serving parameters shared by every stream of an [`Origin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagerConfig {
    /// Target (upper bound) duration of an LL-HLS part (EXT-X-PART-INF:PART-TARGET); 200-333 ms.
    pub part_target: Duration,
    /// Nominal segment duration; segments end at the first keyframe past it.
    pub segment_target: Duration,
    /// Sliding window length, in complete segments kept (and listed) per rendition.
    pub window_segments: usize,
    /// How long a finished stream (EXT-X-ENDLIST) stays playable before it is removed (404).
    pub ended_retention: Duration,
    /// How long a multivariant playlist request waits for every rendition's first part.
    pub ready_timeout: Duration,
    /// A plain request for a video rendition's playlist (a player's first load) is answered
    /// when a player that starts PART-HOLD-BACK behind the playlist's last part starts within a
    /// part target of an independent part (a keyframe), waiting up to a segment for it
    /// (`server::KEYFRAME_JOIN_MAX_WAIT_SEGMENTS`); at once when the last part published made
    /// it so (a player loading several playlists in turn does not wait a GOP for each). A plain
    /// audio playlist request waits for the first video rendition to get there
    /// (`server::join_tracks`). hls.js starts there, loads parts from the keyframe before it
    /// and decodes from that keyframe: from mid-GOP that was about a second of parts to load
    /// and decode while the live edge moved on, and hls.js never catches up by default.
    pub keyframe_join: bool,
    /// PART-HOLD-BACK in part targets (of the PART-TARGET served): at least 2 (RFC 8216bis);
    /// the spec recommends 3. hls.js starts this far behind the newest part and then plays
    /// a further 0.2-0.35 s back, the time its start takes (README, "Latency").
    pub part_hold_back_parts: u32,
}

impl Default for PackagerConfig {
    fn default() -> Self {
        Self {
            part_target: Duration::from_millis(200),
            segment_target: Duration::from_secs(2),
            window_segments: 6,
            ended_retention: Duration::from_secs(60),
            ready_timeout: Duration::from_secs(10),
            keyframe_join: true,
            part_hold_back_parts: 3,
        }
    }
}

/// What a rendition is, known before any sample arrives (from the ingest's ladder plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionPlan {
    /// URL-safe name (`[A-Za-z0-9._~-]`, other names are not routable), used as the path
    /// segment: "source", "720p", "480p", "360p", "audio".
    pub name: String,
    /// Video or audio.
    pub kind: RenditionKind,
    /// Nominal bit rate in bits/s (BANDWIDTH in the multivariant playlist is at least this).
    pub bandwidth: u64,
}

/// Whether a rendition carries video or audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenditionKind {
    /// H.264 video.
    Video,
    /// AAC audio.
    Audio,
}

impl RenditionKind {
    /// Lower-case name, as used in metric labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RenditionKind::Video => "video",
            RenditionKind::Audio => "audio",
        }
    }
}

/// Codec parameters, known when the first encoded buffer of a rendition appears (GStreamer caps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecConfig {
    /// H.264 in AVC (length-prefixed) form.
    H264 {
        /// The AVCDecoderConfigurationRecord (avcC), as in GStreamer's `codec_data`.
        avcc: Bytes,
        /// Coded picture width in pixels.
        width: u32,
        /// Coded picture height in pixels.
        height: u32,
        /// Frame rate as (numerator, denominator), when known.
        framerate: Option<(u32, u32)>,
    },
    /// H.265 (HEVC) in length-prefixed form, served as `hvc1` (parameter sets in the sample
    /// entry only).
    H265 {
        /// The HEVCDecoderConfigurationRecord (hvcC), as in GStreamer's `codec_data`.
        hvcc: Bytes,
        /// Coded picture width in pixels.
        width: u32,
        /// Coded picture height in pixels.
        height: u32,
        /// Frame rate as (numerator, denominator), when known.
        framerate: Option<(u32, u32)>,
    },
    /// AV1 in the low-overhead bitstream format (OBUs with sizes), one temporal unit per
    /// sample, served as `av01`. Temporal delimiters are removed from samples (AV1 ISOBMFF
    /// binding, section 2.4).
    Av1 {
        /// The AV1CodecConfigurationRecord (av1C): the marker/version byte 0x81, profile,
        /// level, tier, bit depth and chroma, then the sequence header OBU.
        av1c: Bytes,
        /// Coded picture width in pixels.
        width: u32,
        /// Coded picture height in pixels.
        height: u32,
        /// Frame rate as (numerator, denominator), when known.
        framerate: Option<(u32, u32)>,
    },
    /// AAC, raw frames (no ADTS).
    Aac {
        /// The AudioSpecificConfig, as in GStreamer's `codec_data`.
        asc: Bytes,
        /// Sample rate in Hz (also the track timescale).
        sample_rate: u32,
        /// Channel count.
        channels: u32,
    },
}

/// A video configuration's picture: what RESOLUTION, FRAME-RATE and the sample entry need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    /// (numerator, denominator), when known.
    pub framerate: Option<(u32, u32)>,
}

impl CodecConfig {
    /// A video configuration's width, height and frame rate; `None` for audio.
    pub fn picture(&self) -> Option<Picture> {
        match self {
            CodecConfig::H264 {
                width,
                height,
                framerate,
                ..
            }
            | CodecConfig::H265 {
                width,
                height,
                framerate,
                ..
            }
            | CodecConfig::Av1 {
                width,
                height,
                framerate,
                ..
            } => Some(Picture {
                width: *width,
                height: *height,
                framerate: *framerate,
            }),
            CodecConfig::Aac { .. } => None,
        }
    }
}

/// The RFC 6381 codec string a configuration gets in CODECS (`avc1.64001f`, `hvc1.1.6.L120.90`,
/// `av01.0.04M.08`, `mp4a.40.2`), or why the configuration is refused.
pub fn codec_string(config: &CodecConfig) -> Result<String, PackagerError> {
    let kind = match config {
        CodecConfig::Aac { .. } => RenditionKind::Audio,
        _ => RenditionKind::Video,
    };
    codec::CodecInfo::new("-", kind, config.clone()).map(|c| c.codec_string)
}

/// One encoded access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Presentation time, nanoseconds, monotonic within a publish session.
    pub pts_ns: u64,
    /// Decode time, nanoseconds (== pts for audio); pts >= dts.
    pub dts_ns: u64,
    /// Sync sample (IDR for H.264; always true for AAC).
    pub keyframe: bool,
    /// One access unit: AVC/HEVC length-prefixed NALUs (4-byte lengths), one AV1 temporal
    /// unit, or one raw AAC frame.
    pub data: Bytes,
    /// When the source frame reached the node (feeds the part latency histogram).
    pub arrival: Option<tokio::time::Instant>,
}

/// What `fuzz/` (a crate outside this one) calls: the viewer-request parsers, which stay
/// crate-private, through the same functions the HTTP handler calls. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use crate::request::{self, Readiness, Route};

    /// A routed viewer path as plain fields.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RouteParts<'a> {
        /// The metric label of the route (`playlist`, `init`, `segment`, `part`).
        pub kind: &'static str,
        pub pid: &'a str,
        /// `None` for the multivariant playlist.
        pub rendition: Option<&'a str>,
        /// The init version, segment MSN or part MSN.
        pub number: Option<u64>,
        /// The part index.
        pub part: Option<u32>,
    }

    /// `request::route` on a request path.
    pub fn route(path: &str) -> Option<RouteParts<'_>> {
        let r = request::route(path)?;
        // `Route::pid` borrows the route; the fields borrow the path.
        let (pid, rendition, number, part) = match r {
            Route::Multivariant { pid } => (pid, None, None, None),
            Route::Media { pid, rendition } => (pid, Some(rendition), None, None),
            Route::Init { pid, rendition, id } => (pid, Some(rendition), Some(u64::from(id)), None),
            Route::Segment {
                pid,
                rendition,
                msn,
            } => (pid, Some(rendition), Some(msn), None),
            Route::Part {
                pid,
                rendition,
                msn,
                part,
            } => (pid, Some(rendition), Some(msn), Some(part)),
        };
        Some(RouteParts {
            kind: r.kind(),
            pid,
            rendition,
            number,
            part,
        })
    }

    /// `request::parse_query`: (`_HLS_msn`, `_HLS_part`, `_HLS_skip`) or the 400's reason.
    pub fn parse_query(query: Option<&str>) -> Result<(Option<u64>, Option<u32>, bool), String> {
        request::parse_query(query).map(|q| (q.msn, q.part, q.skip))
    }

    /// `request::playlist_readiness` for the directives of `query` at a rendition position;
    /// `Err` is the 400 of `parse_query`. The answer is `ready`, `wait`, `bad_request` or
    /// `not_found`.
    pub fn playlist_readiness(
        query: Option<&str>,
        last_part: Option<(u64, u32)>,
        last_complete: Option<u64>,
        next_msn: u64,
        ended: bool,
    ) -> Result<&'static str, String> {
        let q = request::parse_query(query)?;
        let pos = request::Position {
            last_part,
            last_complete,
            next_msn,
            ended,
        };
        Ok(match request::playlist_readiness(&q, &pos) {
            Readiness::Ready => "ready",
            Readiness::Wait => "wait",
            Readiness::BadRequest(_) => "bad_request",
            Readiness::NotFound => "not_found",
        })
    }
}
