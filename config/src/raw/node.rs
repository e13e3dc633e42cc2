//! An ingest node's config file: [`RawConfig`] and its validation into [`Config`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{milli_units, uri, valid_id, Choice, RawAdmin, ID_RULE};
use crate::{defaults::*, error::Problems, resolved::*, Problem};

/// LL-HLS parts must be short enough for sub-second latency and long enough to carry a few
/// frames; DESIGN.md asks for 200-333 ms, we accept a wider band for experiments.
const PART_TARGET_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_millis(1000));
/// Segments longer than 10 s make the sliding window and rejoin after a reconnect sluggish.
const SEGMENT_TARGET_MAX: Duration = Duration::from_secs(10);
/// At least 3 segments in the window (RFC 8216 asks players to start 3 target durations from
/// the end); more than 60 wastes memory on a live edge that is not a DVR.
const WINDOW_SEGMENTS_RANGE: (usize, usize) = (3, 60);
/// PART-HOLD-BACK in part targets: RFC 8216bis requires at least two; more than six (1.2-2 s
/// at 200-333 ms parts) puts a low-latency player about a whole 2 s segment behind, where
/// plain segment playback would do as well.
const PART_HOLD_BACK_PARTS_RANGE: (u32, u32) = (2, 6);
/// libsrt accepts passphrases of 10 to 79 characters.
const SRT_PASSPHRASE_LEN: (usize, usize) = (10, 79);
/// Largest `transcode.max_source_width`/`height`: H.264 level 6.2 tops out at 8192 pixels a
/// side; a larger figure is a typo.
const MAX_SOURCE_SIDE: u32 = 8192;
/// Largest `transcode.max_source_fps`: nothing live is streamed faster.
const MAX_SOURCE_FPS: u32 = 240;
/// A stream key shorter than this is guessable.
const MIN_STREAM_KEY_LEN: usize = 8;
/// Below this, encoder jitter alone would mark a node overloaded.
const MIN_OVERLOAD_LAG: Duration = Duration::from_millis(500);
/// Report intervals balancers can work with: a few per `lost_after`.
const REPORT_INTERVAL_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(30));

/// An ingest node's config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub node: RawNode,
    #[serde(default)]
    pub listen: RawListen,
    pub admin: RawAdmin,
    #[serde(default)]
    pub hls: RawHls,
    #[serde(default)]
    pub srt: RawSrt,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub transcode: RawTranscode,
    /// Absent: the default ladder (720p30, 480p30, 360p30).
    pub ladder: Option<Vec<RawRung>>,
    #[serde(default)]
    pub streams: Vec<RawStream>,
    /// Absent: a standalone node that no balancer fronts.
    pub control: Option<RawControl>,
    /// Absent: no event webhook.
    #[serde(default)]
    pub events: RawEvents,
}

/// The stream lifecycle and health webhook (`ingest/src/events.rs`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvents {
    /// `https://host/path` (or `http://` on a private network): each event POSTed as JSON,
    /// signed like the auth webhook (with `auth.secret`), in order, retried until it is taken.
    pub url: Option<String>,
    /// PEM file of the CA(s) that sign an `https` URL's certificate (a private PKI).
    pub ca: Option<PathBuf>,
}

/// The node's link to its balancers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawControl {
    /// QUIC address of every balancer (the node connects to all of them).
    pub balancers: Vec<SocketAddr>,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default = "d_report_interval", with = "humantime_serde")]
    pub report_interval: Duration,
    /// Addresses balancers relay to; default: the listen addresses (which must then be
    /// specific IPs, not 0.0.0.0).
    pub advertise_rtmp: Option<SocketAddr>,
    pub advertise_srt: Option<SocketAddr>,
    pub advertise_http: Option<SocketAddr>,
    /// Where balancers reach this node's HTTPS origin (`listen.https`), for a balancer with
    /// `[node_https]`; default: `listen.https` when it is on (with the IP address of
    /// `advertise_http` if `listen.https` is 0.0.0.0).
    #[serde(default)]
    pub advertise_https: Option<SocketAddr>,
    /// Source IPs allowed to send a PROXY v2 header and reservation IDs: the balancers.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}
fn d_report_interval() -> Duration {
    DEFAULT_REPORT_INTERVAL
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub id: String,
    /// Transcode units this node can carry; absent: calibrate at start.
    pub capacity_units: Option<f64>,
    /// A pipeline whose output lags real time by more than this marks the node overloaded.
    #[serde(default = "default_overload_lag", with = "humantime_serde")]
    pub overload_lag: Duration,
}

fn default_overload_lag() -> Duration {
    DEFAULT_OVERLOAD_LAG
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    #[serde(default = "default_rtmp")]
    pub rtmp: SocketAddr,
    /// RTMPS (RTMP over TLS): off unless set; needs `tls`.
    #[serde(default)]
    pub rtmps: Option<SocketAddr>,
    /// HTTPS for viewers (HTTP/2 and HTTP/1.1 by ALPN): off unless set; needs `tls`.
    #[serde(default)]
    pub https: Option<SocketAddr>,
    /// The certificate of the TLS listeners.
    #[serde(default)]
    pub tls: Option<super::RawPublicTls>,
    #[serde(default = "default_srt")]
    pub srt: SocketAddr,
    #[serde(default = "default_http")]
    pub http: SocketAddr,
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
}
pub(super) fn default_rtmp() -> SocketAddr {
    DEFAULT_LISTEN_RTMP
}
pub(super) fn default_srt() -> SocketAddr {
    DEFAULT_LISTEN_SRT
}
pub(super) fn default_http() -> SocketAddr {
    DEFAULT_LISTEN_HTTP
}
pub(super) fn default_admin() -> SocketAddr {
    DEFAULT_LISTEN_ADMIN
}
impl Default for RawListen {
    fn default() -> Self {
        Self {
            rtmp: default_rtmp(),
            rtmps: None,
            https: None,
            tls: None,
            srt: default_srt(),
            http: default_http(),
            admin: default_admin(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHls {
    #[serde(default = "d_part", with = "humantime_serde")]
    pub part_target: Duration,
    #[serde(default = "d_segment", with = "humantime_serde")]
    pub segment_target: Duration,
    #[serde(default = "d_window")]
    pub window_segments: usize,
    /// How long a stream waits for its encoder to come back before it ends.
    #[serde(default = "d_reconnect", with = "humantime_serde")]
    pub reconnect_window: Duration,
    /// How long an ended stream stays playable before it is removed.
    #[serde(default = "d_retention", with = "humantime_serde")]
    pub ended_retention: Duration,
    /// Answer a plain request for a video playlist when a player starting PART-HOLD-BACK
    /// behind its edge lands in the first part after a keyframe (README, "Latency").
    #[serde(default = "d_keyframe_join")]
    pub keyframe_join: bool,
    /// PART-HOLD-BACK, in part targets.
    #[serde(default = "d_part_hold_back_parts")]
    pub part_hold_back_parts: u32,
}
fn d_part() -> Duration {
    DEFAULT_PART_TARGET
}
fn d_segment() -> Duration {
    DEFAULT_SEGMENT_TARGET
}
fn d_window() -> usize {
    DEFAULT_WINDOW_SEGMENTS
}
pub(super) fn d_reconnect() -> Duration {
    DEFAULT_RECONNECT_WINDOW
}
fn d_retention() -> Duration {
    DEFAULT_ENDED_RETENTION
}
fn d_keyframe_join() -> bool {
    DEFAULT_KEYFRAME_JOIN
}
fn d_part_hold_back_parts() -> u32 {
    DEFAULT_PART_HOLD_BACK_PARTS
}
impl Default for RawHls {
    fn default() -> Self {
        Self {
            part_target: d_part(),
            segment_target: d_segment(),
            window_segments: d_window(),
            reconnect_window: d_reconnect(),
            ended_retention: d_retention(),
            keyframe_join: d_keyframe_join(),
            part_hold_back_parts: d_part_hold_back_parts(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSrt {
    /// Receiver latency (buffer for retransmission), as in libsrt's `latency`.
    #[serde(default = "d_srt_latency", with = "humantime_serde")]
    pub latency: Duration,
    /// Passphrase required of every SRT publisher unless its stream sets its own.
    pub passphrase: Option<String>,
}
fn d_srt_latency() -> Duration {
    DEFAULT_SRT_LATENCY
}
impl Default for RawSrt {
    fn default() -> Self {
        Self {
            latency: d_srt_latency(),
            passphrase: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `https://host/path` (or `http://` on a private network): POSTed
    /// `{"key","client_addr","protocol"}`, signed; 2xx accepts.
    pub webhook: Option<String>,
    /// PEM file of the CA(s) that sign an `https` webhook's certificate, for a private PKI;
    /// without it the webhook must present a certificate from a public CA (Mozilla's roots,
    /// built in, so the node needs no system certificate store).
    pub webhook_ca: Option<PathBuf>,
    #[serde(default = "d_webhook_timeout", with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Refused publishes one source address may make per minute before it is refused at
    /// once, with no key check (0: no limit).
    #[serde(default = "d_refused_per_minute")]
    pub refused_publishes_per_minute: u32,
    /// The node's auth secret (at least 32 characters; the same on every node): signs each
    /// webhook request and keys the playback IDs derived from stream keys. Required with a
    /// webhook. Prefer `secret_file`.
    pub secret: Option<String>,
    /// File holding the auth secret (trailing whitespace ignored).
    pub secret_file: Option<PathBuf>,
}
/// `value` (of config key `key`) when it is an `https://` or `http://` URL with a host.
fn http_url(p: &mut Problems, key: &str, value: Option<&str>) -> Option<String> {
    let u = value?;
    match u.parse::<uri::Uri>() {
        Ok(uri) if (uri.scheme == "http" || uri.scheme == "https") && !uri.authority.is_empty() => {
            Some(u.to_string())
        }
        _ => {
            p.add(key, "must be an https:// (or http://) URL with a host");
            None
        }
    }
}

/// Whether the file at `path` (config key `key`) is readable and holds a PEM certificate.
pub(crate) fn pem_certificate_file(p: &mut Problems, key: &str, path: &std::path::Path) -> bool {
    match std::fs::read_to_string(path) {
        Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => true,
        Ok(_) => {
            p.add(key, format!("{} holds no PEM certificate", path.display()));
            false
        }
        Err(e) => {
            p.add(key, format!("cannot read {}: {e}", path.display()));
            false
        }
    }
}

/// The CA file `path` (config key `keys.0`) for the URL `url` (key `keys.1`): readable PEM,
/// and only for an `https://` URL.
fn ca_file(
    p: &mut Problems,
    keys: (&str, &str),
    path: Option<&std::path::Path>,
    url: Option<&str>,
) -> Option<PathBuf> {
    let path = path?;
    let Some(url) = url else {
        p.add(keys.0, format!("set without {}", keys.1));
        return None;
    };
    if !url.starts_with("https://") {
        p.add(keys.0, "only an https:// URL has a certificate to check");
    }
    pem_certificate_file(p, keys.0, path).then(|| path.to_path_buf())
}

/// An auth secret shorter than this is guessable offline from a signature or derived ID.
const MIN_AUTH_SECRET_LEN: usize = 32;
pub(crate) fn d_refused_per_minute() -> u32 {
    DEFAULT_REFUSED_PUBLISHES_PER_MINUTE
}
fn d_webhook_timeout() -> Duration {
    DEFAULT_WEBHOOK_TIMEOUT
}
impl Default for RawAuth {
    fn default() -> Self {
        Self {
            webhook: None,
            webhook_ca: None,
            webhook_timeout: d_webhook_timeout(),
            refused_publishes_per_minute: d_refused_per_minute(),
            secret: None,
            secret_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTranscode {
    /// Serve the source as a rung without re-encoding it.
    #[serde(default = "d_passthrough")]
    pub passthrough: bool,
    /// Package RTMP streams that need no encoding (H.264 and AAC, no rung smaller than the
    /// source) from the RTMP messages themselves, without GStreamer.
    #[serde(default = "d_direct_passthrough")]
    pub direct_passthrough: bool,
    /// Scale the rungs with edge's own scaler (8-bit video); false: GStreamer's `videoscale`.
    #[serde(default = "d_own_scaler")]
    pub own_scaler: bool,
    /// x264 `speed-preset` for every rung.
    #[serde(default = "d_preset")]
    pub x264_preset: Choice<X264Preset>,
    /// Units a stream costs for decoding its source once, on top of its rungs.
    #[serde(default = "d_decode_units")]
    pub decode_units: f64,
    /// The largest source a publisher may send (long side, short side, frame rate); a larger
    /// one is refused with the reason, and a stream is charged as this large until its first
    /// keyframe shows its real size.
    #[serde(default = "d_max_source_width")]
    pub max_source_width: u32,
    #[serde(default = "d_max_source_height")]
    pub max_source_height: u32,
    #[serde(default = "d_max_source_fps")]
    pub max_source_fps: u32,
    /// The highest source video bit rate (kbit/s, over its last seconds) a publisher may
    /// send; above it the stream is ended with the reason. 0: no limit.
    #[serde(default = "d_max_source_kbps")]
    pub max_source_kbps: u32,
}
fn d_max_source_kbps() -> u32 {
    DEFAULT_MAX_SOURCE_KBPS
}
fn d_max_source_width() -> u32 {
    DEFAULT_MAX_SOURCE_WIDTH
}
fn d_max_source_height() -> u32 {
    DEFAULT_MAX_SOURCE_HEIGHT
}
fn d_max_source_fps() -> u32 {
    DEFAULT_MAX_SOURCE_FPS
}
fn d_passthrough() -> bool {
    DEFAULT_PASSTHROUGH
}
fn d_direct_passthrough() -> bool {
    DEFAULT_DIRECT_PASSTHROUGH
}
fn d_own_scaler() -> bool {
    DEFAULT_OWN_SCALER
}
fn d_preset() -> Choice<X264Preset> {
    Choice::of(DEFAULT_X264_PRESET)
}
fn d_decode_units() -> f64 {
    DEFAULT_DECODE_UNITS
}
impl Default for RawTranscode {
    fn default() -> Self {
        Self {
            passthrough: d_passthrough(),
            direct_passthrough: d_direct_passthrough(),
            own_scaler: d_own_scaler(),
            x264_preset: d_preset(),
            decode_units: d_decode_units(),
            max_source_width: d_max_source_width(),
            max_source_height: d_max_source_height(),
            max_source_fps: d_max_source_fps(),
            max_source_kbps: d_max_source_kbps(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRung {
    pub name: String,
    pub height: u32,
    #[serde(default = "d_fps")]
    pub fps: u32,
    pub video_kbps: u32,
    /// Units this rung costs; absent: its pixel rate relative to 720p30.
    pub units: Option<f64>,
}
fn d_fps() -> u32 {
    DEFAULT_RUNG_FPS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    pub key: String,
    pub playback_id: String,
    /// SRT passphrase for this stream (overrides `srt.passphrase`).
    pub srt_passphrase: Option<String>,
}

/// The default ladder of DESIGN.md: 720p30 ~3 Mbps, 480p30 ~1.2 Mbps, 360p30 ~0.6 Mbps.
pub fn default_ladder() -> Vec<RawRung> {
    [("720p", 720, 3000), ("480p", 480, 1200), ("360p", 360, 600)]
        .into_iter()
        .map(|(name, height, kbps)| RawRung {
            name: name.into(),
            height,
            fps: DEFAULT_RUNG_FPS,
            video_kbps: kbps,
            units: None,
        })
        .collect()
}

impl RawConfig {
    /// Check every value; return the resolved config or every problem found.
    pub fn validate(self) -> Result<Config, Vec<Problem>> {
        let mut p = Problems::default();

        if !valid_id(&self.node.id) {
            p.add("node.id", ID_RULE);
        }
        let capacity = match self.node.capacity_units {
            None => Capacity::Calibrate,
            Some(v) => match milli_units(v) {
                Some(m) => Capacity::Units(m),
                None => {
                    p.add("node.capacity_units", "must be a positive number");
                    Capacity::Calibrate
                }
            },
        };
        if self.node.overload_lag < MIN_OVERLOAD_LAG {
            p.add(
                "node.overload_lag",
                "must be at least 500ms (encoders jitter)",
            );
        }

        let l = &self.listen;
        let mut ports = vec![
            ("listen.rtmp", l.rtmp, "tcp"),
            ("listen.http", l.http, "tcp"),
            ("listen.admin", l.admin, "tcp"),
        ];
        ports.extend(l.rtmps.map(|a| ("listen.rtmps", a, "tcp")));
        ports.extend(l.https.map(|a| ("listen.https", a, "tcp")));
        let public_tls = super::public_tls(
            &mut p,
            &[("listen.rtmps", l.rtmps), ("listen.https", l.https)],
            &l.tls,
        );
        for (i, (a, x, _)) in ports.iter().enumerate() {
            for (b, y, _) in &ports[i + 1..] {
                if x.port() != 0 && x == y {
                    p.add(*b, format!("same address as {a} ({x})"));
                }
            }
        }

        let token = self.admin.resolve(&mut p);

        let h = &self.hls;
        if h.part_target < PART_TARGET_RANGE.0 || h.part_target > PART_TARGET_RANGE.1 {
            p.add(
                "hls.part_target",
                format!(
                    "must be between {:?} and {:?}",
                    PART_TARGET_RANGE.0, PART_TARGET_RANGE.1
                ),
            );
        }
        if h.segment_target < h.part_target * 3 || h.segment_target > SEGMENT_TARGET_MAX {
            p.add(
                "hls.segment_target",
                format!("must be at least 3 x hls.part_target and at most {SEGMENT_TARGET_MAX:?}"),
            );
        }
        if h.part_hold_back_parts < PART_HOLD_BACK_PARTS_RANGE.0
            || h.part_hold_back_parts > PART_HOLD_BACK_PARTS_RANGE.1
        {
            p.add(
                "hls.part_hold_back_parts",
                format!(
                    "must be between {} and {} (PART-HOLD-BACK in part targets; RFC 8216bis \
                     requires at least 2)",
                    PART_HOLD_BACK_PARTS_RANGE.0, PART_HOLD_BACK_PARTS_RANGE.1
                ),
            );
        }
        if h.window_segments < WINDOW_SEGMENTS_RANGE.0
            || h.window_segments > WINDOW_SEGMENTS_RANGE.1
        {
            p.add(
                "hls.window_segments",
                format!(
                    "must be between {} and {}",
                    WINDOW_SEGMENTS_RANGE.0, WINDOW_SEGMENTS_RANGE.1
                ),
            );
        }

        let check_pass = |p: &mut Problems, path: &str, pass: &Option<String>| {
            if let Some(s) = pass {
                let n = s.chars().count();
                if n < SRT_PASSPHRASE_LEN.0 || n > SRT_PASSPHRASE_LEN.1 {
                    p.add(path, "SRT passphrases are 10 to 79 characters");
                }
            }
        };
        check_pass(&mut p, "srt.passphrase", &self.srt.passphrase);

        let webhook = http_url(&mut p, "auth.webhook", self.auth.webhook.as_deref());
        let webhook_ca = ca_file(
            &mut p,
            ("auth.webhook_ca", "auth.webhook"),
            self.auth.webhook_ca.as_deref(),
            webhook.as_deref(),
        );
        let events_url = http_url(&mut p, "events.url", self.events.url.as_deref());
        let events_ca = ca_file(
            &mut p,
            ("events.ca", "events.url"),
            self.events.ca.as_deref(),
            events_url.as_deref(),
        );

        let auth_secret = match (&self.auth.secret, &self.auth.secret_file) {
            (Some(_), Some(_)) => {
                p.add("auth", "set either secret or secret_file, not both");
                None
            }
            (None, None) => None,
            (Some(s), None) => Some(("auth.secret", s.clone())),
            (None, Some(f)) => match std::fs::read_to_string(f) {
                Ok(s) => Some(("auth.secret_file", s.trim_end().to_string())),
                Err(e) => {
                    p.add(
                        "auth.secret_file",
                        format!("cannot read {}: {e}", f.display()),
                    );
                    None
                }
            },
        };
        let auth_secret = match auth_secret {
            Some((k, s)) if s.len() < MIN_AUTH_SECRET_LEN => {
                p.add(
                    k,
                    format!("must be at least {MIN_AUTH_SECRET_LEN} characters"),
                );
                None
            }
            Some((_, s)) => Some(s),
            None => None,
        };
        if webhook.is_some()
            && auth_secret.is_none()
            && self.auth.secret.is_none()
            && self.auth.secret_file.is_none()
        {
            p.add(
                "auth.secret",
                "required with auth.webhook: it signs each webhook request and keys the playback IDs derived from stream keys (set secret_file, the same on every node)",
            );
        }

        if events_url.is_some() && self.auth.secret.is_none() && self.auth.secret_file.is_none() {
            p.add(
                "events.url",
                "needs auth.secret (or auth.secret_file): every event is signed with it",
            );
        }

        let x264_preset = self.transcode.x264_preset.resolve(
            "transcode.x264_preset",
            DEFAULT_X264_PRESET,
            &mut p,
        );
        let decode_units = milli_units(self.transcode.decode_units).unwrap_or_else(|| {
            p.add("transcode.decode_units", "must be a positive number");
            0
        });
        let (max_w, max_h, max_fps) = (
            self.transcode.max_source_width,
            self.transcode.max_source_height,
            self.transcode.max_source_fps,
        );
        for (key, v, max) in [
            ("transcode.max_source_width", max_w, MAX_SOURCE_SIDE),
            ("transcode.max_source_height", max_h, MAX_SOURCE_SIDE),
            ("transcode.max_source_fps", max_fps, MAX_SOURCE_FPS),
        ] {
            if v == 0 || v > max {
                p.add(key, format!("must be between 1 and {max}"));
            }
        }
        if max_h > max_w {
            p.add(
                "transcode.max_source_height",
                "is the short side: must not exceed transcode.max_source_width (a vertical source is compared long side to width)",
            );
        }

        let raw_ladder = self.ladder.unwrap_or_else(default_ladder);
        let mut ladder = Vec::new();
        for (i, r) in raw_ladder.iter().enumerate() {
            let at = |k: &str| format!("ladder[{i}].{k}");
            if !valid_id(&r.name) || r.name == "source" || r.name == "audio" {
                p.add(
                    at("name"),
                    "must be an ID (A-Z a-z 0-9 - _) other than 'source' and 'audio'",
                );
            }
            if raw_ladder[..i].iter().any(|o| o.name == r.name) {
                p.add(at("name"), format!("duplicate rung name '{}'", r.name));
            }
            if r.height < 64 || r.height > 4320 || r.height % 2 != 0 {
                p.add(
                    at("height"),
                    "must be an even number of lines between 64 and 4320",
                );
            }
            if r.fps == 0 || r.fps > 120 {
                p.add(at("fps"), "must be between 1 and 120");
            }
            if r.video_kbps < 64 || r.video_kbps > 100_000 {
                p.add(at("video_kbps"), "must be between 64 and 100000");
            }
            let width = (r.height * 16 / 9 + 1) & !1;
            let units = match r.units {
                Some(u) => milli_units(u).unwrap_or_else(|| {
                    p.add(at("units"), "must be a positive number");
                    0
                }),
                None => {
                    let rate = u64::from(width) * u64::from(r.height) * u64::from(r.fps);
                    ((rate * 1000) / (1280 * 720 * 30)).max(50) as u32
                }
            };
            ladder.push(Rung {
                name: r.name.clone(),
                width,
                height: r.height,
                fps: r.fps,
                video_kbps: r.video_kbps,
                milli_units: units,
            });
        }

        let mut streams = Vec::new();
        for (i, s) in self.streams.iter().enumerate() {
            let at = |k: &str| format!("streams[{i}].{k}");
            if s.key.len() < MIN_STREAM_KEY_LEN
                || s.key.chars().any(|c| c.is_whitespace() || c == '/')
            {
                p.add(
                    at("key"),
                    format!(
                        "must be at least {MIN_STREAM_KEY_LEN} characters without spaces or '/'"
                    ),
                );
            }
            if !valid_id(&s.playback_id) {
                p.add(at("playback_id"), ID_RULE);
            }
            if s.playback_id == s.key {
                p.add(
                    at("playback_id"),
                    "must differ from the stream key (the key is a secret)",
                );
            }
            if self.streams[..i].iter().any(|o| o.key == s.key) {
                p.add(at("key"), "duplicate stream key");
            }
            if self.streams[..i]
                .iter()
                .any(|o| o.playback_id == s.playback_id)
            {
                p.add(
                    at("playback_id"),
                    format!("duplicate playback_id '{}'", s.playback_id),
                );
            }
            check_pass(&mut p, &at("srt_passphrase"), &s.srt_passphrase);
            streams.push(StreamConfig {
                key: s.key.clone(),
                playback_id: s.playback_id.clone(),
                srt_passphrase: s
                    .srt_passphrase
                    .clone()
                    .or_else(|| self.srt.passphrase.clone()),
            });
        }
        let control = self.control.map(|c| {
            if c.balancers.is_empty() {
                p.add("control.balancers", "list at least one balancer");
            }
            if c.report_interval < REPORT_INTERVAL_RANGE.0 || c.report_interval > REPORT_INTERVAL_RANGE.1 {
                p.add("control.report_interval", "must be between 100ms and 30s");
            }
            let adv = |p: &mut Problems, key: &str, given: Option<SocketAddr>, listen: SocketAddr| {
                let a = given.unwrap_or(listen);
                if a.ip().is_unspecified() {
                    p.add(format!("control.{key}"), format!("listen address {listen} is unspecified: set the address balancers should relay to"));
                }
                a
            };
            ControlConfig {
                advertise_rtmp: adv(&mut p, "advertise_rtmp", c.advertise_rtmp, l.rtmp),
                advertise_srt: adv(&mut p, "advertise_srt", c.advertise_srt, l.srt),
                advertise_http: adv(&mut p, "advertise_http", c.advertise_http, l.http),
                advertise_https: match (c.advertise_https, l.https) {
                    (None, None) => None,
                    (Some(given), None) => {
                        p.add("control.advertise_https", "needs listen.https (the node's HTTPS origin)");
                        Some(given)
                    }
                    (Some(given), Some(listen)) => {
                        Some(adv(&mut p, "advertise_https", Some(given), listen))
                    }
                    // Same host as the HTTP origin balancers already reach, the HTTPS port.
                    (None, Some(listen)) if listen.ip().is_unspecified() => Some(SocketAddr::new(
                        c.advertise_http.unwrap_or(l.http).ip(),
                        listen.port(),
                    )),
                    (None, Some(listen)) => Some(listen),
                },
                balancers: c.balancers,
                tls: TlsPaths { ca: c.ca, cert: c.cert, key: c.key },
                report_interval: c.report_interval,
                trusted_proxies: c.trusted_proxies,
            }
        });
        if streams.is_empty() && webhook.is_none() {
            p.add(
                "streams",
                "no stream keys and no auth.webhook: nothing could ever publish",
            );
        }

        let config = p.finish(|| Config {
            node: NodeConfig {
                id: self.node.id,
                capacity,
                overload_lag: self.node.overload_lag,
            },
            listen: Listen {
                rtmp: l.rtmp,
                rtmps: l.rtmps,
                https: l.https,
                srt: l.srt,
                http: l.http,
                admin: l.admin,
            },
            admin: AdminConfig { token },
            hls: HlsConfig {
                part_target: h.part_target,
                segment_target: h.segment_target,
                window_segments: h.window_segments,
                reconnect_window: h.reconnect_window,
                ended_retention: h.ended_retention,
                keyframe_join: h.keyframe_join,
                part_hold_back_parts: h.part_hold_back_parts,
            },
            srt: SrtConfig {
                latency: self.srt.latency,
            },
            auth: AuthConfig {
                webhook,
                webhook_ca,
                webhook_timeout: self.auth.webhook_timeout,
                refused_publishes_per_minute: self.auth.refused_publishes_per_minute,
                secret: auth_secret.map(Secret::new),
            },
            events: events_url.map(|url| EventsConfig { url, ca: events_ca }),
            public_tls,
            transcode: TranscodeConfig {
                passthrough: self.transcode.passthrough,
                direct_passthrough: self.transcode.direct_passthrough,
                own_scaler: self.transcode.own_scaler,
                x264_preset,
                decode_milli_units: decode_units,
                max_source: SourceSize {
                    width: max_w,
                    height: max_h,
                    fps: f64::from(max_fps),
                },
                max_source_kbps: self.transcode.max_source_kbps,
            },
            ladder,
            streams,
            control,
        })?;
        // A node that cannot take one stream of the largest allowed source would be full
        // forever: every publish would be refused while the node looks healthy.
        if let Capacity::Units(total) = config.node.capacity {
            let one = config.stream_milli_units();
            if total < one {
                return Err(vec![Problem {
                    path: "node.capacity_units".into(),
                    message: format!(
                        "{} cannot take a single stream: until its first keyframe a stream is charged {} units (decoding a {} source, transcode.max_source_*, plus every rung); raise capacity_units or lower the maximum source",
                        f64::from(total) / 1000.0,
                        f64::from(one) / 1000.0,
                        config.transcode.max_source
                    ),
                }]);
            }
        }
        Ok(config)
    }
}
