//! A balancer's config file: [`RawBalancerConfig`] and its validation into [`BalancerConfig`].

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::node::{
    d_reconnect, d_refused_per_minute, default_admin, default_http, default_rtmp, default_srt,
};
use super::{valid_id, Choice, RawAdmin, ID_RULE};
use crate::{defaults::*, error::Problems, resolved::*, Problem};

/// Shorter than a few report intervals, and a late report alone would make a node `lost`.
const MIN_LOST_AFTER: Duration = Duration::from_secs(1);
/// `sun_path` holds 108 bytes, the last a NUL.
const MAX_UNIX_PATH: usize = 107;
/// A relayed encoder arrives within seconds of its placement; nodes cap longer TTLs anyway.
const RESERVATION_TTL_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(120));

/// A balancer's config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalancerConfig {
    pub balancer: RawBalancer,
    #[serde(default)]
    pub listen: RawBalancerListen,
    pub admin: RawAdmin,
    pub tls: RawTls,
    /// Reach nodes' HTTPS origins (their `listen.https`) instead of plain HTTP.
    #[serde(default)]
    pub node_https: Option<RawNodeHttps>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodeHttps {
    /// PEM: the CA (or the certificates themselves) the nodes' public certificates verify
    /// against.
    pub ca: PathBuf,
    /// The name every node's certificate carries; default: the node's advertised IP address
    /// (which its certificate must then carry as an IP SAN).
    #[serde(default)]
    pub server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalancer {
    pub id: String,
    /// A node with no report for this long is `lost`: no new streams (it keeps its own).
    #[serde(default = "d_lost_after", with = "humantime_serde")]
    pub lost_after: Duration,
    /// How long a node holds capacity for a placement before the stream arrives.
    #[serde(default = "d_reservation_ttl", with = "humantime_serde")]
    pub reservation_ttl: Duration,
    /// How long a stream goes back to its node after it was last seen there.
    #[serde(default = "d_reconnect", with = "humantime_serde")]
    pub reconnect_window: Duration,
    /// `least-loaded` or `power-of-two`.
    #[serde(default = "d_policy")]
    pub policy: Choice<Ranking>,
    /// Publishes refused for their key that one source address may make per minute before
    /// the balancer refuses it at once, with no placement (0: no limit).
    #[serde(default = "d_refused_per_minute")]
    pub refused_publishes_per_minute: u32,
    /// The Unix socket a new balancer process finds this one by, to take over its sockets
    /// and live connections (default `/run/edge/balancer-<id>.sock`).
    #[serde(default)]
    pub handover_socket: Option<PathBuf>,
    /// SIGTERM with no successor: how long to keep relaying live connections before exiting
    /// anyway.
    #[serde(default = "d_drain_deadline", with = "humantime_serde")]
    pub drain_deadline: Duration,
}
fn d_drain_deadline() -> Duration {
    DEFAULT_DRAIN_DEADLINE
}
fn d_lost_after() -> Duration {
    DEFAULT_LOST_AFTER
}
fn d_reservation_ttl() -> Duration {
    DEFAULT_RESERVATION_TTL
}
fn d_policy() -> Choice<Ranking> {
    Choice::of(DEFAULT_RANKING)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBalancerListen {
    #[serde(default = "default_rtmp")]
    pub rtmp: SocketAddr,
    /// RTMPS (TLS terminated here, then relayed as RTMP): off unless set; needs `tls`.
    #[serde(default)]
    pub rtmps: Option<SocketAddr>,
    /// HTTPS for viewers (HTTP/2 and HTTP/1.1 by ALPN): off unless set; needs `tls`.
    #[serde(default)]
    pub https: Option<SocketAddr>,
    /// The certificate encoders and viewers see on RTMPS and HTTPS.
    #[serde(default)]
    pub tls: Option<super::RawPublicTls>,
    #[serde(default = "default_srt")]
    pub srt: SocketAddr,
    #[serde(default = "default_http")]
    pub http: SocketAddr,
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    #[serde(default = "default_control")]
    pub control: SocketAddr,
}
fn default_control() -> SocketAddr {
    DEFAULT_LISTEN_CONTROL
}
impl Default for RawBalancerListen {
    fn default() -> Self {
        Self {
            rtmp: default_rtmp(),
            rtmps: None,
            https: None,
            tls: None,
            srt: default_srt(),
            http: default_http(),
            admin: default_admin(),
            control: default_control(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A TLS server name as rustls takes one: an IP address, or a DNS name of dot-separated labels
/// of 1 to 63 letters, digits and hyphens (not at either end), at most 253 bytes.
fn valid_server_name(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl RawBalancerConfig {
    /// Check every value; return the resolved config or every problem found.
    pub fn validate(self) -> Result<BalancerConfig, Vec<Problem>> {
        let mut p = Problems::default();
        if !valid_id(&self.balancer.id) {
            p.add("balancer.id", ID_RULE);
        }
        let b = self.balancer;
        if b.lost_after < MIN_LOST_AFTER {
            p.add(
                "balancer.lost_after",
                "must be at least 1s (a few report intervals)",
            );
        }
        if b.reservation_ttl < RESERVATION_TTL_RANGE.0
            || b.reservation_ttl > RESERVATION_TTL_RANGE.1
        {
            p.add("balancer.reservation_ttl", "must be between 1s and 2m");
        }
        if b.drain_deadline.is_zero() {
            p.add(
                "balancer.drain_deadline",
                "must be more than 0s (a drain keeps live streams until they end or this passes)",
            );
        }
        if b.handover_socket
            .as_ref()
            .is_some_and(|s| s.as_os_str().len() > MAX_UNIX_PATH)
        {
            p.add(
                "balancer.handover_socket",
                format!("must be at most {MAX_UNIX_PATH} bytes (a Unix socket path)"),
            );
        }
        let handover_socket = b
            .handover_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/run/edge/balancer-{}.sock", b.id)));
        let policy = b.policy.resolve("balancer.policy", DEFAULT_RANKING, &mut p);
        let token = self.admin.resolve(&mut p);
        for (k, f) in [
            ("tls.ca", &self.tls.ca),
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
        ] {
            if !f.exists() {
                p.add(
                    k,
                    format!("{} does not exist (edge certs creates one)", f.display()),
                );
            }
        }
        if let Some(n) = &self.node_https {
            super::node::pem_certificate_file(&mut p, "node_https.ca", &n.ca);
            if n.server_name
                .as_deref()
                .is_some_and(|s| !valid_server_name(s))
            {
                p.add(
                    "node_https.server_name",
                    "must be a DNS name (labels of letters, digits and hyphens) or an IP address",
                );
            }
        }
        let node_https = self.node_https.map(|n| NodeHttps {
            ca: n.ca,
            server_name: n.server_name,
        });
        let l = self.listen;
        let public_tls = super::public_tls(
            &mut p,
            &[("listen.rtmps", l.rtmps), ("listen.https", l.https)],
            &l.tls,
        );
        let tcp = [
            ("listen.rtmp", Some(l.rtmp)),
            ("listen.rtmps", l.rtmps),
            ("listen.http", Some(l.http)),
            ("listen.https", l.https),
            ("listen.admin", Some(l.admin)),
        ];
        for (i, (a, x)) in tcp.iter().enumerate() {
            for (b, y) in &tcp[i + 1..] {
                if let (Some(x), Some(y)) = (x, y) {
                    if x.port() != 0 && x == y {
                        p.add(*b, format!("same address as {a} ({x})"));
                    }
                }
            }
        }
        p.finish(|| BalancerConfig {
            id: b.id,
            lost_after: b.lost_after,
            reservation_ttl: b.reservation_ttl,
            reconnect_window: b.reconnect_window,
            policy,
            refused_publishes_per_minute: b.refused_publishes_per_minute,
            handover_socket,
            drain_deadline: b.drain_deadline,
            public_tls,
            node_https,
            listen: BalancerListen {
                rtmp: l.rtmp,
                rtmps: l.rtmps,
                https: l.https,
                srt: l.srt,
                http: l.http,
                admin: l.admin,
                control: l.control,
            },
            admin: AdminConfig { token },
            tls: TlsPaths {
                ca: self.tls.ca,
                cert: self.tls.cert,
                key: self.tls.key,
            },
        })
    }
}
