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

/// Placement policy among nodes that can take a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    LeastLoaded,
    PowerOfTwo,
}

/// A validated balancer config.
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    pub id: String,
    pub lost_after: Duration,
    pub reservation_ttl: Duration,
    pub reconnect_window: Duration,
    pub policy: Policy,
    pub listen: BalancerListen,
    pub admin: AdminConfig,
    pub tls: TlsPaths,
}

#[derive(Debug, Clone, Copy)]
pub struct BalancerListen {
    pub rtmp: SocketAddr,
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
}

#[derive(Debug, Clone)]
pub struct SrtConfig {
    pub latency: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub webhook: Option<String>,
    pub webhook_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct TranscodeConfig {
    pub passthrough: bool,
    pub x264_preset: String,
    pub decode_milli_units: u32,
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
    /// Units the node charges a stream whose source is `source_height` lines (None: unknown,
    /// charge the whole ladder): decoding once plus every rung at or below the source.
    pub fn stream_milli_units(&self, source_height: Option<u32>) -> u32 {
        let rungs: u32 = self
            .ladder
            .iter()
            .filter(|r| source_height.is_none_or(|h| r.height <= h))
            .map(|r| r.milli_units)
            .sum();
        self.transcode.decode_milli_units + rungs
    }
}
