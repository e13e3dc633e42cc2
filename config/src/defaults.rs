//! The default of every config setting that has one, each written once.
//!
//! The raw (file) types use these for absent keys, and other crates that need a setting's
//! default (tests, the balancer's placement policy) take it from here instead of repeating it.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use crate::resolved::{Ranking, X264Preset};

const fn any_v4(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
}

/// `listen.rtmp`: tcp/1935 is what every encoder assumes for `rtmp://`.
pub const DEFAULT_LISTEN_RTMP: SocketAddr = any_v4(1935);
/// `listen.srt`: udp/9000 (DESIGN.md).
pub const DEFAULT_LISTEN_SRT: SocketAddr = any_v4(9000);
/// `listen.http`: the viewer port.
pub const DEFAULT_LISTEN_HTTP: SocketAddr = any_v4(8080);
/// `listen.admin`: loopback only unless the operator opens it on purpose.
pub const DEFAULT_LISTEN_ADMIN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8081));
/// `listen.control` of a balancer: the QUIC control plane.
pub const DEFAULT_LISTEN_CONTROL: SocketAddr = any_v4(7000);

/// `control.report_interval`.
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// `node.overload_lag`.
pub const DEFAULT_OVERLOAD_LAG: Duration = Duration::from_secs(3);

/// `hls.part_target`: DESIGN.md asks for 200-333 ms parts; the shorter end, because a player
/// holds back `hls.part_hold_back_parts` part targets from the live edge (PART-HOLD-BACK), so
/// each 100 ms of part target is 200-300 ms of latency on every screen (README, "Latency").
pub const DEFAULT_PART_TARGET: Duration = Duration::from_millis(200);
/// `hls.segment_target`.
pub const DEFAULT_SEGMENT_TARGET: Duration = Duration::from_secs(2);
/// `hls.window_segments`: 10 segments of 2 s, long enough that a delta update
/// (CAN-SKIP-UNTIL = 6 target durations) skips something, short enough for a live edge.
pub const DEFAULT_WINDOW_SEGMENTS: usize = 10;
/// `hls.reconnect_window` and `balancer.reconnect_window`: how long a stream waits for its
/// encoder (and the balancer sends it back to its node).
pub const DEFAULT_RECONNECT_WINDOW: Duration = Duration::from_secs(30);
/// `hls.ended_retention`.
pub const DEFAULT_ENDED_RETENTION: Duration = Duration::from_secs(60);
/// `hls.keyframe_join`: on, because hls.js (and players that start the same way) then play
/// about a quarter of a second nearer the camera for the whole play, for a first frame about a
/// second later on average (README, "Latency"; BENCHMARKS.md, glass to glass).
pub const DEFAULT_KEYFRAME_JOIN: bool = true;
/// `hls.part_hold_back_parts`: three, as RFC 8216bis recommends and DESIGN.md asks. Two (the
/// spec's minimum) puts hls.js 0.66-0.77 s behind the camera instead of 0.88-1.05 s (it plays
/// 0.2-0.35 s behind PART-HOLD-BACK, its own start-up, and never makes that up), but a player
/// that plays right at PART-HOLD-BACK has 0.41 s of room: Shaka Player stalled with two, in the
/// benchmark and in `player_chromium` (README, "Latency"; BENCHMARKS.md, glass to glass).
pub const DEFAULT_PART_HOLD_BACK_PARTS: u32 = 3;

/// `srt.latency`: libsrt's default receiver latency.
pub const DEFAULT_SRT_LATENCY: Duration = Duration::from_millis(120);
/// `auth.webhook_timeout`.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(2);

/// `auth.refused_publishes_per_minute` and `balancer.refused_publishes_per_minute`: an
/// encoder with a typo in its key retries every few seconds (OBS: 10 s), a few refusals a
/// minute; a key-guessing address makes hundreds.
pub const DEFAULT_REFUSED_PUBLISHES_PER_MINUTE: u32 = 10;

/// `transcode.passthrough`.
pub const DEFAULT_PASSTHROUGH: bool = true;
/// `transcode.direct_passthrough`: RTMP streams with nothing to encode skip GStreamer (less
/// than half the CPU per stream, benches/passthrough.rs); off only to compare or work around.
pub const DEFAULT_DIRECT_PASSTHROUGH: bool = true;
/// `transcode.own_scaler`: the ladder's pictures are scaled by edge's own scaler, which costs
/// about half of GStreamer 1.22's `videoscale` (BENCHMARKS.md, ladder); off only to compare or
/// to work around.
pub const DEFAULT_OWN_SCALER: bool = true;
/// `transcode.x264_preset`.
pub const DEFAULT_X264_PRESET: X264Preset = X264Preset::Veryfast;
/// `transcode.decode_units`.
pub const DEFAULT_DECODE_UNITS: f64 = 0.5;
/// `transcode.max_source_width` and `max_source_height`: 1080p, the largest picture OBS and
/// most hardware encoders send for live; a 4K source costs four times its decoding and is
/// refused unless the operator raises these.
pub const DEFAULT_MAX_SOURCE_WIDTH: u32 = 1920;
pub const DEFAULT_MAX_SOURCE_HEIGHT: u32 = 1080;
/// `transcode.max_source_fps`: 60, what games and sports are streamed at.
pub const DEFAULT_MAX_SOURCE_FPS: u32 = 60;
/// The highest source video bit rate (kbit/s) accepted by default: five times what a 1080p60
/// broadcast needs (OBS suggests 6 to 9 Mbit/s), well above any real encoder setting, so it
/// only stops a runaway or hostile sender from costing a node what its capacity does not
/// count.
pub const DEFAULT_MAX_SOURCE_KBPS: u32 = 50_000;
/// `ladder[].fps`.
pub const DEFAULT_RUNG_FPS: u32 = 30;

/// `balancer.lost_after`: a few report intervals.
pub const DEFAULT_LOST_AFTER: Duration = Duration::from_secs(5);
/// `balancer.reservation_ttl`.
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(10);
/// `balancer.drain_deadline`: an hour lets most live shows end on their own; a supervisor's
/// own stop timeout (Kubernetes `terminationGracePeriodSeconds`) must be at least this.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(3600);
/// `balancer.policy`.
pub const DEFAULT_RANKING: Ranking = Ranking::LeastLoaded;
