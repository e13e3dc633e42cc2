//! The validated configuration the rest of edge uses. Every value here has been checked.

use std::{net::SocketAddr, time::Duration};

/// A whole validated config.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: NodeConfig,
    pub listen: Listen,
    pub admin: AdminConfig,
    pub hls: HlsConfig,
    pub srt: SrtConfig,
    pub auth: AuthConfig,
    pub transcode: TranscodeConfig,
    /// Transcoded rungs, highest first as configured; the passthrough rung is not listed.
    pub ladder: Vec<Rung>,
    pub streams: Vec<StreamConfig>,
    /// The link to the balancers; `None` for a standalone node.
    pub control: Option<ControlConfig>,
    /// The event webhook; `None` without one.
    pub events: Option<EventsConfig>,
    /// The certificate of the public TLS listeners (`[listen.tls]`); `None` without.
    pub public_tls: Option<CertPair>,
}

/// Where the node sends stream lifecycle and health events.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// `https://` or `http://` URL.
    pub url: String,
    /// CA file for an `https` URL's certificate (`None`: the public roots).
    pub ca: Option<std::path::PathBuf>,
}

/// Where a node reports and what it tells balancers.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub balancers: Vec<SocketAddr>,
    pub tls: TlsPaths,
    pub report_interval: Duration,
    pub advertise_rtmp: SocketAddr,
    pub advertise_srt: SocketAddr,
    pub advertise_http: SocketAddr,
    /// The HTTPS origin balancers with `[node_https]` use; `None` without `listen.https`.
    pub advertise_https: Option<SocketAddr>,
    /// Only these source IPs may send PROXY v2 headers and reservation IDs.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// PEM files of the cluster CA and this process's certificate and key.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// The certificate and key (PEM files) of the public TLS listeners (`[listen.tls]`).
#[derive(Debug, Clone)]
pub struct CertPair {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// A closed set of values written as names in the config file (`policy = "least-loaded"`).
/// The raw types parse the name at load; an unknown one is a [`crate::Problem`] listing
/// [`Named::ALL`].
pub trait Named: Copy + PartialEq + 'static {
    /// Every value with its name in the file, in the order messages list them.
    const ALL: &'static [(&'static str, Self)];

    /// The value a name stands for.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// The name of this value in the file.
    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("", |(n, _)| n)
    }
}

/// `balancer.policy`: how placement ranks the nodes that can take a stream (after affinity).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ranking {
    /// `least-loaded`: most free units first, ties by id.
    #[default]
    LeastLoaded,
    /// `power-of-two`: two nodes picked at random; the one with more free units first.
    PowerOfTwo,
}

impl Named for Ranking {
    const ALL: &'static [(&'static str, Self)] = &[
        ("least-loaded", Ranking::LeastLoaded),
        ("power-of-two", Ranking::PowerOfTwo),
    ];
}

/// `transcode.x264_preset`: the x264 `speed-preset` of every rung (the fast end only: a live
/// ladder must encode in real time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum X264Preset {
    Ultrafast,
    Superfast,
    Veryfast,
    Faster,
    Fast,
    Medium,
}

impl Named for X264Preset {
    const ALL: &'static [(&'static str, Self)] = &[
        ("ultrafast", X264Preset::Ultrafast),
        ("superfast", X264Preset::Superfast),
        ("veryfast", X264Preset::Veryfast),
        ("faster", X264Preset::Faster),
        ("fast", X264Preset::Fast),
        ("medium", X264Preset::Medium),
    ];
}

impl X264Preset {
    /// The name x264enc's `speed-preset` property takes.
    pub fn as_str(self) -> &'static str {
        self.name()
    }
}

impl std::fmt::Display for X264Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated balancer config.
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    pub id: String,
    pub lost_after: Duration,
    pub reservation_ttl: Duration,
    pub reconnect_window: Duration,
    /// `balancer.policy` in the file.
    pub policy: Ranking,
    /// Refused publishes per source address per minute before it is refused outright.
    pub refused_publishes_per_minute: u32,
    /// Where a successor finds this balancer (`balancer.handover_socket`).
    pub handover_socket: std::path::PathBuf,
    /// SIGTERM with no successor: the longest a drain keeps live connections.
    pub drain_deadline: Duration,
    pub listen: BalancerListen,
    pub admin: AdminConfig,
    pub tls: TlsPaths,
    /// The certificate of RTMPS (`[listen.tls]`); `None` without.
    pub public_tls: Option<CertPair>,
    /// Viewers' requests reach nodes over HTTPS (`[node_https]`); `None`: plain HTTP.
    pub node_https: Option<NodeHttps>,
}

/// How a balancer checks the nodes' HTTPS origins (`[node_https]`).
#[derive(Debug, Clone)]
pub struct NodeHttps {
    /// PEM file of what signed the nodes' `[listen.tls]` certificates (a CA, or the
    /// certificates themselves).
    pub ca: std::path::PathBuf,
    /// The name the nodes' certificates carry; `None`: each node's advertised IP address.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct BalancerListen {
    pub rtmp: SocketAddr,
    /// RTMPS (TLS terminated here), off unless set.
    pub rtmps: Option<SocketAddr>,
    /// HTTPS for viewers, off unless set.
    pub https: Option<SocketAddr>,
    pub srt: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub control: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: String,
    pub capacity: Capacity,
    pub overload_lag: Duration,
}

/// How the node knows its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// Configured, in milli-units (1000 = one 720p30 x264 rung in real time on one core).
    Units(u32),
    /// Measure at start with a short encode.
    Calibrate,
}

#[derive(Debug, Clone, Copy)]
pub struct Listen {
    pub rtmp: SocketAddr,
    /// RTMPS (RTMP over TLS), off unless set.
    pub rtmps: Option<SocketAddr>,
    /// HTTPS for viewers, off unless set.
    pub https: Option<SocketAddr>,
    pub srt: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
}

#[derive(Clone)]
pub struct AdminConfig {
    /// Bearer token; compared in constant time, never logged.
    pub token: String,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminConfig { token: <redacted> }")
    }
}

#[derive(Debug, Clone)]
pub struct HlsConfig {
    pub part_target: Duration,
    pub segment_target: Duration,
    pub window_segments: usize,
    pub reconnect_window: Duration,
    pub ended_retention: Duration,
    /// See `packager::PackagerConfig::keyframe_join`.
    pub keyframe_join: bool,
    /// See `packager::PackagerConfig::part_hold_back_parts`.
    pub part_hold_back_parts: u32,
}

#[derive(Debug, Clone)]
pub struct SrtConfig {
    pub latency: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub webhook: Option<String>,
    /// The CA certificates (PEM) an `https` webhook is checked against instead of the public
    /// roots.
    pub webhook_ca: Option<std::path::PathBuf>,
    pub webhook_timeout: Duration,
    /// Refused publishes per source address per minute before it is refused outright.
    pub refused_publishes_per_minute: u32,
    /// Signs webhook requests and keys derived playback IDs (`auth.secret[_file]`).
    pub secret: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct TranscodeConfig {
    pub passthrough: bool,
    /// RTMP streams with nothing to encode are packaged without GStreamer (`ingest::direct`).
    pub direct_passthrough: bool,
    /// Rungs of 8-bit video are scaled by `ingest::scale` (else by GStreamer's `videoscale`).
    pub own_scaler: bool,
    pub x264_preset: X264Preset,
    /// Units decoding a source costs, for a source of up to [`DECODE_REFERENCE`]; a larger
    /// source costs proportionally more (see [`Config::decode_milli_units_for`]).
    pub decode_milli_units: u32,
    /// The largest source a publisher may send; a larger one is refused when its first
    /// keyframe shows its size. Until then a stream is charged as if it were this large.
    pub max_source: SourceSize,
    /// The highest source video bit rate (kbit/s) a publisher may send; 0: no limit.
    pub max_source_kbps: u32,
}

/// A source picture: size (long side and short side, so a vertical phone stream compares
/// like a landscape one) and frame rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SourceSize {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
}

/// The source `transcode.decode_units` is the cost of: 720p30, the picture a unit is defined
/// by. Decoding H.264 costs about in proportion to pixels per second, so a 1080p60 source
/// costs 4.5 times as much; a smaller one costs no less (demuxing, parsing, packaging and
/// the pipeline's fixed costs do not shrink with the picture).
pub const DECODE_REFERENCE: SourceSize = SourceSize {
    width: 1280,
    height: 720,
    fps: 30.0,
};

/// Frame rates within this of the maximum pass: 60000/1001 is "60", and a container's
/// rounded rate is no reason to refuse a publisher.
const FPS_TOLERANCE: f64 = 0.5;

impl SourceSize {
    fn pixel_rate(&self) -> f64 {
        f64::from(self.width) * f64::from(self.height) * self.fps
    }

    /// Why `source` is above this maximum, or `None` when it fits: its long side against
    /// `width`, its short side against `height`, its frame rate against `fps`.
    pub fn refuses(&self, source: &SourceSize) -> Option<String> {
        let (long, short) = (
            source.width.max(source.height),
            source.width.min(source.height),
        );
        if long > self.width || short > self.height {
            return Some(format!(
                "source {}x{} is larger than this server's maximum {}x{}",
                source.width, source.height, self.width, self.height
            ));
        }
        if source.fps > self.fps + FPS_TOLERANCE {
            return Some(format!(
                "source frame rate {:.2} is above this server's maximum {}",
                source.fps, self.fps
            ));
        }
        None
    }
}

impl std::fmt::Display for SourceSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}@{}", self.width, self.height, self.fps)
    }
}

/// One transcoded rung of the ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rung {
    pub name: String,
    /// Nominal 16:9 width; the pipeline keeps the source's aspect ratio.
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_kbps: u32,
    pub milli_units: u32,
}

/// A stream that may publish: its secret key and its public playback ID.
#[derive(Clone)]
pub struct StreamConfig {
    pub key: String,
    pub playback_id: String,
    pub srt_passphrase: Option<String>,
}

impl std::fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConfig")
            .field("playback_id", &self.playback_id)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Units a stream whose source is not known yet may cost: decoding the largest source
    /// allowed (`transcode.max_source_*`) plus the whole ladder. The node charges this at
    /// admission (and a balancer reserves it) and corrects it once the first keyframe shows
    /// the source and the ladder is planned.
    pub fn stream_milli_units(&self) -> u32 {
        self.milli_units_for(&self.transcode.max_source, &self.ladder)
    }

    /// Units a stream costs once its ladder is planned: decoding its source once plus the
    /// rungs that run.
    pub fn milli_units_for(&self, source: &SourceSize, rungs: &[Rung]) -> u32 {
        self.decode_milli_units_for(source)
            .saturating_add(rungs.iter().map(|r| r.milli_units).sum::<u32>())
    }

    /// Units decoding `source` costs: `transcode.decode_units` up to [`DECODE_REFERENCE`],
    /// in proportion to pixels per second above it.
    pub fn decode_milli_units_for(&self, source: &SourceSize) -> u32 {
        let scale = (source.pixel_rate() / DECODE_REFERENCE.pixel_rate()).max(1.0);
        let units = (f64::from(self.transcode.decode_milli_units) * scale).ceil();
        if units >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            units as u32
        }
    }
}

/// A secret from the config: `Debug` never prints it (configs are logged on reload diffs).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    /// The secret itself, for the code that signs or hashes with it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
