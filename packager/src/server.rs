//! HTTP glue: [`Origin::handle`] answers one request from memory, [`Origin::serve`] runs
//! HTTP/1.1 and HTTP/2 cleartext (h2c) on the server kit (`server::serve`: connection caps,
//! header and idle deadlines, HTTP/2 limits) until its gate is retired.
//!
//! URLs: `/live/{pid}/index.m3u8` (multivariant), `/live/{pid}/{rendition}/index.m3u8` (media,
//! with `_HLS_msn`, `_HLS_part`, `_HLS_skip`), `init.mp4` / `init{N}.mp4`, `seg{msn}.m4s`,
//! `part{msn}.{idx}.m4s`. What is answered is decided by the pure `request` module; this module
//! only waits (on the stream's watch channel, with the timeouts below), renders and adds headers.
//!
//! Caching (comments on the constants say why): playlists without directives are `no-cache`;
//! blocking responses (with `_HLS_msn`) may be cached briefly by shared caches (CDNs) since
//! their URL names a point in the stream, but not by the player's own cache; init segments,
//! parts and segments never change once published and are cacheable for long. Errors are
//! `no-store`. Every response carries `Access-Control-Allow-Origin: *`.
//!
//! Caveat: a stream removed and published again under the same ID restarts its numbering; with
//! long-lived caches in front, URLs of the old stream may then be served stale for
//! [`MEDIA_MAX_AGE`] (streams that are merely finished and re-published continue numbering).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};

use crate::metrics;
use crate::origin::{Origin, Stream, StreamState};
use crate::playlist::{self, AudioMedia, RenditionReport, Variant};
use crate::request::{self, HlsQuery, Position, Readiness, Route};
use crate::track::{Track, TrackState};
use crate::RenditionKind;

/// Blocking playlist reloads and preload-hint part requests give up after this many target
/// durations with a 503 (the spec suggests three), and never later than
/// [`crate::MAX_BLOCKING_HOLD`] (which the balancer's proxy waits for).
pub(crate) const BLOCKING_TIMEOUT_TARGET_DURATIONS: u32 = 3;

/// A plain media playlist request (no `_HLS_msn`) to a live rendition is answered when its next
/// part is published, at most a part target and this much later: a player computes its start
/// position from the playlist's last part and the moment the response's first byte arrives, so
/// a playlist sent the moment a part is published places the player where it meant to be,
/// while one sent up to a part later lets it start up to a part further behind the live edge,
/// for the whole play (hls.js never speeds up to catch up by default). The slack covers a part
/// that takes a frame longer than the target.
pub(crate) const FRESH_EDGE_SLACK: Duration = Duration::from_millis(50);

/// How long a plain video playlist request may wait for a keyframe join
/// (`PackagerConfig::keyframe_join`), in segment limits (EXT-X-TARGETDURATION), plus a part
/// target: a segment starts with a keyframe, so one comes within that unless the source's
/// keyframe interval is longer than the limit (segments are then cut on other frames and no
/// wait would help); the request is then answered with what there is.
pub(crate) const KEYFRAME_JOIN_MAX_WAIT_SEGMENTS: u64 = 1;

/// A video rendition whose playlist, answered now, starts a player PART-HOLD-BACK behind its
/// edge within a part target past a keyframe (`PackagerConfig::keyframe_join`).
fn at_keyframe_join(t: &Track) -> bool {
    t.kind() == RenditionKind::Video && t.join_distance().is_some_and(|d| d <= t.part_target())
}

/// The live video renditions whose keyframe join a plain request for `rendition`'s playlist
/// waits for (the first of them to reach one): the rendition itself when it is video; for an
/// audio rendition, every live video rendition of the stream, so that a player loading its
/// audio and video playlists together gets both at about the same moment, whichever rung it
/// plays (a transcoded rung reaches its join a transcode later than the source; had the audio
/// waited for the source's alone, a request that came just after it would wait a GOP while the
/// rung's was answered, and the player with it). Shaka Player places its start by the older
/// playlist: with the audio answered at once and the video up to a GOP later, it played a
/// segment further behind. None: no wait (no live video; an audio-only stream).
fn join_tracks<'a>(st: &'a StreamState, rendition: &'a str) -> impl Iterator<Item = &'a Track> {
    let audio = st
        .track(rendition)
        .is_some_and(|t| t.kind() != RenditionKind::Video);
    st.plan_tracks().filter(move |t| {
        t.kind() == RenditionKind::Video
            && t.state() == TrackState::Live
            && (audio || t.name() == rendition)
    })
}

/// A plain request for `rendition`'s playlist answered now would be at a keyframe join (see
/// [`join_tracks`]); `None` when it does not wait for one. Checked on every part published
/// while a request waits, so it allocates nothing.
///
/// An audio playlist also waits until the audio has published the media the joining video
/// rendition has (its parts end where the video's do, a few ms later; see `crate::cutter`):
/// answered a part short, it made hls.js reload it at once, and that reload kept its audio
/// controller from loading at the video's first timestamp, so it started up to two of its
/// 100 ms ticks later (about 0.15 s further behind the camera, for the whole play).
fn at_join(st: &StreamState, rendition: &str) -> Option<bool> {
    let mut tracks = join_tracks(st, rendition).peekable();
    tracks.peek()?;
    let audio = st
        .track(rendition)
        .filter(|t| t.kind() != RenditionKind::Video)
        .map(Track::listed_end_ns);
    Some(
        tracks.any(|t| {
            at_keyframe_join(t) && audio.is_none_or(|a| audio_reaches(a, t.listed_end_ns()))
        }),
    )
}

/// Whether the audio's listed media (`audio`, where its newest listed part ends) reaches the
/// video's (`video`) to within [`JOIN_AUDIO_SLACK_NS`]; false when either lists nothing.
fn audio_reaches(audio: Option<u64>, video: Option<u64>) -> bool {
    audio
        .zip(video)
        .is_some_and(|(a, v)| a.saturating_add(JOIN_AUDIO_SLACK_NS) >= v)
}

/// How far before the joining video's newest part the audio's newest part may end for a plain
/// audio playlist request to be answered at the join (see [`at_join`]): under an AAC frame (21
/// ms at 48 kHz), since the audio's parts end where the video's do, at or after them, and where
/// they cannot (parts too short for whole frames to follow the video's 85 % apart, as at 100
/// ms) they still end within a frame or so.
const JOIN_AUDIO_SLACK_NS: u64 = 25_000_000;

/// The most an audio playlist response waits, once it could be answered, for the audio to list
/// the media the stream's most advanced video rendition lists ([`audio_behind`]). An audio part
/// is listed when the video has passed the frame after it, some 20 ms after the video lists its
/// own part of the same index; answered in between, the audio playlist was a part short of the
/// video's, and Shaka Player, which reloads both playlists together and asks each for the part
/// after the last it knows, kept asking the audio for a part earlier than the video: its audio
/// buffer stayed a part (0.2 s) behind its video's, and with a two-part hold-back it ran out of
/// audio (stalls of 0.1-0.2 s on a young stream). 100 ms is five times that lag; an audio
/// later than that is late for another reason and is answered as it is.
pub(crate) const AUDIO_CATCH_UP_WAIT: Duration = Duration::from_millis(100);

/// Whether `rendition` is audio whose parts end where the video's do
/// ([`Track::parts_follow_video`]) and whose listed media ends more than
/// [`JOIN_AUDIO_SLACK_NS`] before the newest part listed by any live video rendition of the
/// stream. Audio whose parts end by length (parts under 200 ms) may lag the video's listing by
/// up to a part, however long it waits, and is never held.
fn audio_behind(st: &StreamState, rendition: &str) -> bool {
    let Some(audio) = st.track(rendition).filter(|t| {
        t.kind() != RenditionKind::Video && t.state() == TrackState::Live && t.parts_follow_video()
    }) else {
        return false;
    };
    let video = st
        .plan_tracks()
        .filter(|t| t.kind() == RenditionKind::Video && t.state() == TrackState::Live)
        .filter_map(Track::listed_end_ns)
        .max();
    video.is_some() && !audio_reaches(audio.listed_end_ns(), video)
}

/// Cache lifetime of a blocking playlist response in shared caches (`s-maxage`): its URL
/// (`_HLS_msn`/`_HLS_part`) names a point in the stream that any later playlist also
/// satisfies, so a CDN may answer identical requests from many clients with it for a short
/// while; short, so late joiners of that URL still get a reasonably fresh window. Private
/// caches get `max-age=0`: a player that asks for the same URL again wants a newer playlist,
/// and its browser's cache would hand it the old one for the whole lifetime (VHS 3.17,
/// video.js 8's HLS engine, asks again for the part that ends a segment, and with
/// `max-age=6` saw no new part for 5.5 s and started 5.5 s behind).
pub(crate) const BLOCKING_RESPONSE_MAX_AGE: Duration = Duration::from_secs(6);

/// Cache lifetime of init segments, parts and segments: immutable once published; one hour
/// covers any DVR-less live use while bounding the republish-after-remove caveat above.
pub(crate) const MEDIA_MAX_AGE: Duration = Duration::from_secs(3600);

/// Retry-After of a 503: a client should try again about one segment later.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long browsers may cache a CORS preflight answer.
pub(crate) const CORS_MAX_AGE: Duration = Duration::from_secs(86_400);

/// How often `serve` removes streams whose retention after `finish` has passed.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// HTTP limits of the origin ([`::server::serve::HttpLimits`] says what each bounds). Viewers
/// reach it through a balancer (a few pooled connections carrying many viewers) or directly.
pub const LIMITS: ::server::serve::HttpLimits = ::server::serve::HttpLimits {
    // A request header arrives in one packet; ten seconds is for a viewer on a bad link.
    header_timeout: Duration::from_secs(10),
    // hls.js keeps a few requests per rendition in flight (playlist, part, preload hint); a
    // balancer multiplexes many viewers on one HTTP/2 connection.
    max_concurrent_streams: 256,
    max_header_list_size: 16 * 1024,
    keepalive_interval: Duration::from_secs(30),
    max_pending_resets: 64,
    // A player polls every part target; a quiet connection belongs to a viewer who left. The
    // balancer keeps pooled connections idle for half this (it must close first).
    idle_timeout: Duration::from_secs(60),
    // At shutdown, in-flight requests (blocking reloads too) get this long to finish.
    retire_grace: Duration::from_secs(5),
};

/// Origin connections at once: each idle one costs a few KiB; the cap bounds a flood.
pub const MAX_CONNECTIONS: usize = 8192;
/// Origin connections from one address that is not a trusted balancer: a player opens a
/// few, a NAT or a small CDN more.
pub const MAX_CONNECTIONS_PER_IP: usize = 256;

/// How often `serve` looks whether its last connections have finished after retiring.
const WIND_DOWN_POLL: Duration = Duration::from_millis(50);

const PLAYLIST_TYPE: &str = "application/vnd.apple.mpegurl";
const INIT_TYPE: &str = "video/mp4";
const SEGMENT_TYPE: &str = "video/iso.segment";
const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS";

/// A response body: its bytes, in one or more chunks (a segment is its parts back to back,
/// never copied into one buffer), and what to do once the connection has taken the last of
/// them to write (see `crate::delivery`; hyper writes a body's frame to the socket as soon as
/// it polls it).
pub struct Body {
    chunks: VecDeque<Bytes>,
    on_sent: Option<Box<dyn FnOnce() + Send>>,
}

impl Body {
    fn new(bytes: Bytes) -> Self {
        Self::from(vec![bytes])
    }

    /// Runs `f` when the bytes are handed to the connection (not if it closed first).
    fn on_sent(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.on_sent = Some(Box::new(f));
        self
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let Some(chunk) = self.chunks.pop_front() else {
            return std::task::Poll::Ready(None);
        };
        if self.chunks.is_empty() {
            if let Some(f) = self.on_sent.take() {
                f();
            }
        }
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Self::new(bytes)
    }
}

impl From<Vec<Bytes>> for Body {
    fn from(chunks: Vec<Bytes>) -> Self {
        Self {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            on_sent: None,
        }
    }
}

/// A response with a body, content type and cache policy.
fn reply(
    status: StatusCode,
    content_type: &'static str,
    cache: HeaderValue,
    body: impl Into<Body>,
) -> Response<Body> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, cache);
    r
}

/// Cacheable for `d` in shared caches (CDNs, proxies) only: private caches revalidate.
fn shared_max_age(d: Duration) -> HeaderValue {
    let v = format!("public, max-age=0, s-maxage={}", d.as_secs());
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("no-cache"))
}

/// Cacheable for `d` everywhere, and never to change while fresh.
fn immutable_max_age(d: Duration) -> HeaderValue {
    let v = format!("public, max-age={}, immutable", d.as_secs());
    HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("no-cache"))
}

fn error(status: StatusCode, reason: impl Into<String>) -> Response<Body> {
    let mut text: String = reason.into();
    text.push('\n');
    let mut r = reply(
        status,
        "text/plain; charset=utf-8",
        HeaderValue::from_static("no-store"),
        Bytes::from(text),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(RETRY_AFTER.as_secs()),
        );
    }
    r
}

fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "not found")
}

fn media(content_type: &'static str, body: impl Into<Body>) -> Response<Body> {
    reply(
        StatusCode::OK,
        content_type,
        immutable_max_age(MEDIA_MAX_AGE),
        body,
    )
}

/// Wait until `check` returns `Some`, the stream changes being signalled on its watch channel,
/// or `deadline` passes (then `check` runs once more). `check` also gets the change generation
/// read before the state was locked (the state is at least that new).
async fn wait_for<T>(
    stream: &Stream,
    deadline: tokio::time::Instant,
    mut check: impl FnMut(&StreamState, u64) -> Option<T>,
) -> Option<T> {
    wait_for_or_recheck(stream, deadline, |st, generation| {
        match check(st, generation) {
            Some(v) => Check::Done(v),
            None => Check::Wait,
        }
    })
    .await
}

/// What a [`wait_for_or_recheck`] check found.
enum Check<T> {
    /// The wait is over.
    Done(T),
    /// Wait for the next change (or the deadline).
    Wait,
    /// Wait for the next change, but run again at this moment at the latest.
    RecheckAt(tokio::time::Instant),
}

/// [`wait_for`], whose `check` may also ask to run again at an earlier moment than the deadline
/// (a wait of its own that nothing on the stream signals the end of).
async fn wait_for_or_recheck<T>(
    stream: &Stream,
    deadline: tokio::time::Instant,
    mut check: impl FnMut(&StreamState, u64) -> Check<T>,
) -> Option<T> {
    let mut rx = stream.changed.subscribe();
    loop {
        let generation = *rx.borrow_and_update();
        let until = match check(&stream.state.lock(), generation) {
            Check::Done(v) => return Some(v),
            Check::Wait => deadline,
            Check::RecheckAt(at) => at.min(deadline),
        };
        match tokio::time::timeout_at(until, rx.changed()).await {
            Ok(Ok(())) => continue,
            Err(_) if until < deadline => continue,
            Ok(Err(_)) | Err(_) => {
                let generation = *rx.borrow();
                return match check(&stream.state.lock(), generation) {
                    Check::Done(v) => Some(v),
                    Check::Wait | Check::RecheckAt(_) => None,
                };
            }
        }
    }
}

/// The rendered playlist of `rendition` for `generation`, from the stream's cache if there.
fn cached_playlist(
    stream: &Stream,
    st: &StreamState,
    t: &Track,
    skip: bool,
    generation: u64,
) -> Bytes {
    let key = (t.name().to_string(), skip);
    let mut cache = stream.playlists.lock();
    if let Some((g, text)) = cache.get(&key) {
        if *g == generation {
            return text.clone();
        }
    }
    let text = Bytes::from(playlist::render_media(
        &t.playlist(reports(st, t.name())),
        skip,
    ));
    cache.insert(key, (generation, text.clone()));
    text
}

/// How long a blocking request on a playlist of target duration `td` (seconds) is held.
pub(crate) fn blocking_hold(td: u64) -> Duration {
    let secs = td.saturating_mul(u64::from(BLOCKING_TIMEOUT_TARGET_DURATIONS));
    Duration::from_secs(secs).min(crate::MAX_BLOCKING_HOLD)
}

/// Time limit of a blocking request on a track.
fn blocking_deadline(track: Option<&Track>) -> tokio::time::Instant {
    tokio::time::Instant::now() + blocking_hold(track.map_or(1, Track::target_duration))
}

fn position(t: &Track) -> Position {
    Position {
        last_part: t.last_part(),
        last_complete: t.last_complete_msn(),
        next_msn: t.next_msn(),
        ended: t.state() == TrackState::Ended,
    }
}

/// Rendition reports for every rendition of the plan but `except`.
pub(crate) fn reports(st: &StreamState, except: &str) -> Vec<RenditionReport> {
    st.plan_tracks()
        .filter(|t| t.name() != except)
        .filter_map(|t| {
            let (last_msn, last_part) = t.last_part()?;
            Some(RenditionReport {
                uri: format!("../{}/index.m3u8", t.name()),
                last_msn,
                last_part,
            })
        })
        .collect()
}

fn ready(t: &Track) -> bool {
    t.codec().is_some() && t.last_part().is_some()
}

/// BANDWIDTH (the measured peak segment bit rate) and AVERAGE-BANDWIDTH (the measured
/// average) of a track; the nominal bit rate and no average until a segment is complete.
fn bandwidth(t: &Track) -> (u64, Option<u64>) {
    match t.measured_bitrate() {
        Some((peak, avg)) => (peak.max(1), Some(avg)),
        None => (t.plan().bandwidth, None),
    }
}

/// The multivariant playlist of the ready renditions, or `None` if none is ready.
fn multivariant(st: &StreamState) -> Option<String> {
    let ready: Vec<&Track> = st.plan_tracks().filter(|t| ready(t)).collect();
    let audio: Vec<&Track> = ready
        .iter()
        .copied()
        .filter(|t| t.kind() == RenditionKind::Audio)
        .collect();
    let video: Vec<&Track> = ready
        .iter()
        .copied()
        .filter(|t| t.kind() == RenditionKind::Video)
        .collect();
    let group = "audio";
    let audio_media: Vec<AudioMedia> = audio
        .iter()
        .enumerate()
        .map(|(i, t)| AudioMedia {
            group: group.to_string(),
            name: t.name().to_string(),
            uri: format!("{}/index.m3u8", t.name()),
            default: i == 0,
            channels: t.codec().and_then(|c| c.channels()),
        })
        .collect();
    let main_audio = audio.first().copied();
    let (audio_bw, audio_avg) = main_audio.map_or((0, Some(0)), bandwidth);
    let audio_codec = main_audio
        .and_then(|t| t.codec())
        .map(|c| c.codec_string.clone());
    let mut variants: Vec<Variant> = video
        .iter()
        .filter_map(|t| {
            let c = t.codec()?;
            let (bw, avg) = bandwidth(t);
            let codecs = match &audio_codec {
                Some(a) => format!("{},{a}", c.codec_string),
                None => c.codec_string.clone(),
            };
            Some(Variant {
                uri: format!("{}/index.m3u8", t.name()),
                bandwidth: bw + audio_bw,
                average_bandwidth: avg.zip(audio_avg).map(|(v, a)| v + a),
                codecs,
                resolution: c.resolution(),
                frame_rate: c.frame_rate(),
                audio_group: main_audio.map(|_| group.to_string()),
            })
        })
        .collect();
    let audio_media = if variants.is_empty() {
        // Audio-only stream: the audio renditions are the variants.
        variants = audio
            .iter()
            .filter_map(|t| {
                let c = t.codec()?;
                let (bw, avg) = bandwidth(t);
                Some(Variant {
                    uri: format!("{}/index.m3u8", t.name()),
                    bandwidth: bw,
                    average_bandwidth: avg,
                    codecs: c.codec_string.clone(),
                    resolution: None,
                    frame_rate: None,
                    audio_group: None,
                })
            })
            .collect();
        Vec::new()
    } else {
        audio_media
    };
    (!variants.is_empty()).then(|| playlist::render_multivariant(&variants, &audio_media))
}

impl Origin {
    /// Handle one HTTP request (routing in the module docs). The returned future does not
    /// borrow `self` or the request and is `Send`, so it can be spawned; it may wait (blocking
    /// playlist reload, preload-hint parts, first parts of a new stream) up to its timeouts.
    pub fn handle<B>(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Response<Body>> + Send + 'static {
        let origin = self.clone();
        let method = req.method().clone();
        let uri = req.uri().clone();
        drop(req);
        async move { origin.respond(method, uri).await }
    }

    async fn respond(self, method: Method, uri: Uri) -> Response<Body> {
        let head = method == Method::HEAD;
        let route = request::route(uri.path());
        let kind = route.as_ref().map_or("other", Route::kind);
        let started = tokio::time::Instant::now();
        let blocking = matches!(route, Some(Route::Media { .. }))
            && uri.query().is_some_and(|q| q.contains("_HLS_msn="));
        let mut resp = if method == Method::OPTIONS {
            let mut r = Response::new(Body::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOWED_METHODS),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("*"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from(CORS_MAX_AGE.as_secs()),
            );
            r
        } else if method != Method::GET && !head {
            let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
            r
        } else {
            match route {
                None => not_found(),
                Some(route) => self.route(route, uri.query()).await,
            }
        };
        metrics::http_request(kind, resp.status().as_u16());
        if blocking {
            metrics::blocking_reload(started.elapsed());
        }
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        if head {
            // Same headers as GET, including the length of the body that is not sent.
            let n = hyper::body::Body::size_hint(resp.body())
                .exact()
                .unwrap_or(0);
            let (mut parts, _) = resp.into_parts();
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            resp = Response::from_parts(parts, Body::new(Bytes::new()));
        }
        resp
    }

    async fn route(&self, route: Route<'_>, query: Option<&str>) -> Response<Body> {
        let Some(stream) = self.stream(route.pid()) else {
            return not_found();
        };
        match route {
            Route::Multivariant { .. } => self.multivariant(&stream).await,
            Route::Media { rendition, .. } => match request::parse_query(query) {
                Ok(q) => self.media_playlist(&stream, rendition, q).await,
                Err(reason) => error(StatusCode::BAD_REQUEST, reason),
            },
            Route::Init { rendition, id, .. } => {
                let st = stream.state.lock();
                match st.track(rendition).and_then(|t| t.init(id)) {
                    Some(b) => media(INIT_TYPE, b),
                    None => not_found(),
                }
            }
            Route::Segment { rendition, msn, .. } => {
                let st = stream.state.lock();
                match st.track(rendition).and_then(|t| t.segment(msn)) {
                    Some(parts) => media(SEGMENT_TYPE, parts),
                    None => not_found(),
                }
            }
            Route::Part {
                rendition,
                msn,
                part,
                ..
            } => self.part(&stream, rendition, msn, part).await,
        }
    }

    async fn multivariant(&self, stream: &Stream) -> Response<Body> {
        let deadline = tokio::time::Instant::now() + self.inner.cfg.ready_timeout;
        let removed = wait_for(stream, deadline, |st, _| {
            if st.removed {
                Some(true)
            } else if st.finished_at.is_some() || st.plan_tracks().all(ready) {
                Some(false)
            } else {
                None
            }
        })
        .await;
        let st = stream.state.lock();
        if removed == Some(true) || st.removed {
            return not_found();
        }
        match multivariant(&st) {
            Some(text) => reply(
                StatusCode::OK,
                PLAYLIST_TYPE,
                HeaderValue::from_static("no-cache"),
                Bytes::from(text),
            ),
            None => error(StatusCode::SERVICE_UNAVAILABLE, "no rendition is ready yet"),
        }
    }

    async fn media_playlist(
        &self,
        stream: &Stream,
        rendition: &str,
        q: HlsQuery,
    ) -> Response<Body> {
        enum Outcome {
            Render(Bytes),
            BadRequest(String),
            NotFound,
        }
        let deadline = {
            let st = stream.state.lock();
            match st.track(rendition) {
                None => return not_found(),
                // Blocking reload: a few target durations.
                Some(t) if q.msn.is_some() => blocking_deadline(Some(t)),
                // A plain request before the first part waits like the multivariant playlist.
                Some(_) => tokio::time::Instant::now() + self.inner.cfg.ready_timeout,
            }
        };
        if q.msn.is_none() {
            // See FRESH_EDGE_SLACK; a request that waits anyway (no part yet) goes on below.
            let (last, wait) = {
                let st = stream.state.lock();
                let t = st.track(rendition);
                let live = t.filter(|t| t.state() != TrackState::Ended);
                // A keyframe join is there already (the part that made it was the last one
                // published): answered at once, so that a player loading several playlists
                // one after the other (Shaka) does not wait a GOP for each.
                let at_join = self.inner.cfg.keyframe_join
                    && live.is_some()
                    && at_join(&st, rendition) == Some(true);
                (
                    live.and_then(Track::last_part).filter(|_| !at_join),
                    live.map(Track::part_target),
                )
            };
            if let (Some(last), Some(wait)) = (last, wait) {
                let fresh = tokio::time::Instant::now() + wait + FRESH_EDGE_SLACK;
                let _ = wait_for(stream, fresh, |st, _| {
                    let moved = st.track(rendition).is_none_or(|t| {
                        t.state() == TrackState::Ended || t.last_part() != Some(last)
                    });
                    (st.removed || moved).then_some(())
                })
                .await;
                if self.inner.cfg.keyframe_join {
                    self.keyframe_join(stream, rendition).await;
                }
            }
        }
        // Once it could be answered, an audio playlist waits a little for the audio to list
        // what the video lists (AUDIO_CATCH_UP_WAIT); until when, from the first time it could.
        let mut catch_up_until: Option<tokio::time::Instant> = None;
        let outcome = wait_for_or_recheck(stream, deadline, |st, generation| {
            if st.removed {
                return Check::Done(Outcome::NotFound);
            }
            let Some(t) = st.track(rendition) else {
                return Check::Done(Outcome::NotFound);
            };
            let ended = t.state() == TrackState::Ended;
            match request::playlist_readiness(&q, &position(t)) {
                Readiness::BadRequest(r) => Check::Done(Outcome::BadRequest(r)),
                Readiness::NotFound => Check::Done(Outcome::NotFound),
                Readiness::Wait => Check::Wait,
                Readiness::Ready if t.last_part().is_none() && !ended => Check::Wait,
                Readiness::Ready => {
                    let until = *catch_up_until.get_or_insert_with(|| {
                        (tokio::time::Instant::now() + AUDIO_CATCH_UP_WAIT).min(deadline)
                    });
                    if tokio::time::Instant::now() < until && audio_behind(st, rendition) {
                        return Check::RecheckAt(until);
                    }
                    Check::Done(Outcome::Render(cached_playlist(
                        stream, st, t, q.skip, generation,
                    )))
                }
            }
        })
        .await;
        match outcome {
            Some(Outcome::Render(text)) => {
                let cache = if q.msn.is_some() {
                    shared_max_age(BLOCKING_RESPONSE_MAX_AGE)
                } else {
                    HeaderValue::from_static("no-cache")
                };
                reply(StatusCode::OK, PLAYLIST_TYPE, cache, text)
            }
            Some(Outcome::BadRequest(r)) => error(StatusCode::BAD_REQUEST, r),
            Some(Outcome::NotFound) => not_found(),
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "timed out waiting for the requested media",
            ),
        }
    }

    /// A plain request for a playlist waits until a player that starts PART-HOLD-BACK
    /// behind the last part of its video rendition ([`join_tracks`]) starts within a part
    /// target of a keyframe (see `PackagerConfig::keyframe_join`), at most
    /// [`KEYFRAME_JOIN_MAX_WAIT_SEGMENTS`] segment limits and a part target. It is checked each
    /// time a part is published, so the answer still goes out the moment its last part is
    /// (FRESH_EDGE_SLACK).
    async fn keyframe_join(&self, stream: &Stream, rendition: &str) {
        let wait = {
            let st = stream.state.lock();
            let wait = join_tracks(&st, rendition).next().map(|t| {
                Duration::from_secs(t.target_duration() * KEYFRAME_JOIN_MAX_WAIT_SEGMENTS)
                    + t.part_target()
            });
            wait
        };
        let Some(wait) = wait else { return };
        let until = tokio::time::Instant::now() + wait;
        let _ = wait_for(stream, until, |st, _| {
            let ready = at_join(st, rendition) != Some(false);
            (st.removed || ready).then_some(())
        })
        .await;
    }

    async fn part(
        &self,
        stream: &Arc<Stream>,
        rendition: &str,
        msn: u64,
        part: u32,
    ) -> Response<Body> {
        let deadline = blocking_deadline(stream.state.lock().track(rendition));
        // Asked for before it existed (a preload hint, or a part request that blocks): how
        // long its frames took to reach this client is measured once it is written.
        let mut waited = false;
        let found = wait_for(stream, deadline, |st, _| {
            if st.removed {
                return Some(None);
            }
            let t = match st.track(rendition) {
                Some(t) => t,
                None => return Some(None),
            };
            let bytes = t.part(msn, part);
            match request::part_readiness((msn, part), bytes.is_some(), t.next_part_position()) {
                Readiness::Ready => Some(bytes.map(|b| {
                    // Only the waiters `Deliveries::claim` admits copy anything.
                    let arrivals = t
                        .part_arrivals(msn, part)
                        .filter(|a| waited && !a.is_empty())
                        .filter(|_| stream.deliveries.lock().claim(rendition, (msn, part)))
                        .map(<[Instant]>::to_vec);
                    (b, arrivals)
                })),
                Readiness::Wait => {
                    waited = true;
                    None
                }
                Readiness::BadRequest(_) | Readiness::NotFound => Some(None),
            }
        })
        .await;
        match found {
            Some(Some((b, None))) => media(SEGMENT_TYPE, b),
            Some(Some((b, Some(arrivals)))) => {
                let stream = Arc::clone(stream);
                let rendition = rendition.to_string();
                media(SEGMENT_TYPE, b).map(|body| {
                    body.on_sent(move || {
                        let sent = Instant::now();
                        stream.deliveries.lock().record(&rendition, sent, &arrivals);
                    })
                })
            }
            Some(None) => not_found(),
            None => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "timed out waiting for the part",
            ),
        }
    }

    /// Serve HTTP/1.1 and HTTP/2 (h2c) on `listener` while `gate` lets it, each connection
    /// admitted by `acceptor` (see [`acceptor`]) and held to [`LIMITS`]; removes streams whose
    /// retention has passed meanwhile. Retired, it accepts no more and returns once the live
    /// connections have finished their requests, at most [`LIMITS`]`.retire_grace` later.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        acceptor: Arc<::server::Acceptor>,
        gate: ::server::Gate,
    ) {
        self.serve_tls(listener, acceptor, gate, None).await
    }

    /// [`Origin::serve`], over TLS when `tls` is given (HTTPS for viewers: HTTP/2 or
    /// HTTP/1.1 by ALPN, the same LL-HLS with blocking reloads and preload hints).
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        acceptor: Arc<::server::Acceptor>,
        gate: ::server::Gate,
        tls: Option<::server::tls::TlsAcceptor>,
    ) {
        let sweeper = self.clone();
        let mut sweep_gate = gate.clone();
        let sweep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = sweep_gate.retired() => return,
                    _ = tick.tick() => sweeper.sweep(Instant::now()),
                }
            }
        });
        let origin = self;
        ::server::serve::serve_gated_tls(
            listener,
            Arc::clone(&acceptor),
            LIMITS,
            move |_peer| {
                let origin = origin.clone();
                hyper::service::service_fn(move |req| {
                    let fut = origin.handle(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                })
            },
            gate,
            tls,
        )
        .await;
        let _ = sweep.await;
        let deadline = Instant::now() + LIMITS.retire_grace + WIND_DOWN_POLL;
        while acceptor.open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(WIND_DOWN_POLL).await;
        }
        if acceptor.open() > 0 {
            tracing::warn!(
                connections = acceptor.open(),
                "shutdown grace elapsed with connections still open"
            );
        }
    }
}

/// The origin listener's connection caps: [`MAX_CONNECTIONS`] in all and
/// [`MAX_CONNECTIONS_PER_IP`] from any address but the trusted balancers in `exempt`;
/// `on_refused` counts each refusal.
pub fn acceptor(
    exempt: Vec<std::net::IpAddr>,
    on_refused: impl Fn(::server::accept::Refusal) + Send + Sync + 'static,
) -> Arc<::server::Acceptor> {
    ::server::Acceptor::new(
        "http",
        ::server::ConnLimits {
            max_total: MAX_CONNECTIONS,
            max_per_ip: MAX_CONNECTIONS_PER_IP,
            exempt,
        },
        on_refused,
    )
}

#[cfg(test)]
#[path = "server_test.rs"]
mod tests;
