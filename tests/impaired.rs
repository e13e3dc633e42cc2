//! Faulty networks, for real: publishers (and, for the partition, a node) in network
//! namespaces behind a user-space impairment router (`common::netns`: delay, loss,
//! reordering, port rules), streaming through a balancer.
//!
//! - `srt_over_lossy_high_rtt_link`: SRT over 300 ms RTT and 5% loss each way (latency 1.2 s).
//! - `rtmp_over_lossy_rtt_link`: RTMP over 200 ms RTT and 1% loss each way, Reno pinned.
//! - `control_plane_partition_keeps_streams`: the control-plane port alone cut between one node
//!   and the balancer for longer than `lost_after` and the QUIC idle timeout, then healed.
//!
//! Each watches every rendition through the balancer's playback port: no publisher
//! disconnects (same node session, one accepted connection), no rendition's playlist stands
//! still longer than [`MAX_STALL`], media keeps up with the wall clock. The first two stream
//! for [`SHORT_STREAMING`] in CI; `EDGE_TEST_IMPAIRED_FULL=1` streams for [`FULL_STREAMING`].
//! They need root (namespaces, TUN devices) and fail, not skip, without it.
// End-to-end tests drive real processes on real time; the ban on the std clock (clippy.toml)
// is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{self, key, pid, BalancerPorts, Cluster};
use common::netns::{in_netns, Host, Impairment, TestNet};
use common::*;

/// Packets other than the test's own that the router may drop while the UDP count runs (late
/// TCP retransmissions, kernel traffic on the link): a handful at most.
const STRAY_PACKETS: u64 = 10;
/// The opt-in flag for the long runs.
const FULL_ENV: &str = "EDGE_TEST_IMPAIRED_FULL";
/// Streaming time of the CI runs.
const SHORT_STREAMING: Duration = Duration::from_secs(35);
/// Streaming time with [`FULL_ENV`] set.
const FULL_STREAMING: Duration = Duration::from_secs(300);
/// Longest a rendition's playlist may go without a new part before we call it frozen. Parts
/// are 333 ms and segments 2 s. Over RTMP a lost segment costs a fast retransmit (one RTT,
/// 200 ms) or, when the tail of a burst is lost, a retransmission timeout (about RTT + 200 ms,
/// doubling once if the retransmission is lost too: ~1.2 s), and the node holds back what
/// follows the hole; over SRT the receiver delivers on its 1.2 s latency schedule. 3 s is
/// above any of those plus the 250 ms polling interval, and above a whole segment target: a
/// rendition standing still that long has stopped, it is not riding out one loss.
const MAX_STALL: Duration = Duration::from_secs(3);
/// Interval between polls of the watched playlists.
const WATCH_POLL: Duration = Duration::from_millis(250);
/// How long a publish through the impaired link may take to show up on its node (handshakes
/// over 300 ms RTT with loss, first keyframe, pipeline start).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(45);
/// Media produced over the watch must be at least this share of the wall time (the path
/// carries the bitrate: a publisher falling behind real time would show here first).
const MIN_REALTIME_RATIO: f64 = 0.9;

/// Polls `f` (see [`wait_until`]) and returns its value; panics naming `what` at `timeout`.
fn wait_or_fail<T>(
    what: impl std::fmt::Display,
    timeout: Duration,
    f: impl FnMut() -> Option<T>,
) -> T {
    wait_until(timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for: {what}"))
}

fn streaming_time() -> Duration {
    if std::env::var(FULL_ENV).is_ok_and(|v| v == "1") {
        FULL_STREAMING
    } else {
        SHORT_STREAMING
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A looping-free source for `-c copy` publishing: 640x360 30 fps H.264 at a constant
/// `video_kbps` (NAL HRD CBR, so the link carries the rate we say), 2 s GOP, AAC at
/// `audio_kbps`, `secs` long (longer than the publish, so the loop seam never comes).
fn make_clip(dir: &Path, video_kbps: u32, audio_kbps: u32, secs: u64) -> PathBuf {
    let path = dir.join(format!("clip-{video_kbps}k-{secs}s.ts"));
    let v = format!("{video_kbps}k");
    let out = run_with_timeout(
        Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-y",
                "-f",
                "lavfi",
                "-i",
            ])
            .arg("testsrc2=size=640x360:rate=30")
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-t",
                &secs.to_string(),
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
            ])
            .args(["-g", "60", "-keyint_min", "60", "-sc_threshold", "0"])
            .args([
                "-pix_fmt", "yuv420p", "-b:v", &v, "-minrate", &v, "-maxrate", &v,
            ])
            .args(["-bufsize", &v, "-x264-params", "nal-hrd=cbr"])
            .args([
                "-c:a",
                "aac",
                "-b:a",
                &format!("{audio_kbps}k"),
                "-ar",
                "48000",
            ])
            .args(["-muxrate", &format!("{}k", video_kbps + audio_kbps + 100)])
            .arg(&path),
        Duration::from_secs(600),
    )
    .unwrap_or_else(|e| panic!("make the test clip: {e}"));
    assert!(
        out.status.success(),
        "ffmpeg could not make the test clip: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

/// An `edge balancer` whose encoder, playback and control listeners are on `ip` (the root
/// side of a test link, so namespaced hosts reach it; root processes too, it is local), admin
/// on loopback. Killed on drop.
struct Bal {
    child: Child,
    ports: BalancerPorts,
    ip: Ipv4Addr,
    log_path: PathBuf,
}

impl Bal {
    fn start(c: &Cluster, ip: Ipv4Addr, lost_after: &str) -> Bal {
        let ports = BalancerPorts::free();
        let dir = c.dir.path();
        let certs = c.certs.display();
        let cfg = format!(
            "[balancer]\nid = \"b1\"\nlost_after = \"{lost_after}\"\nreservation_ttl = \"10s\"\nreconnect_window = \"10s\"\nhandover_socket = \"{certs}/b1.sock\"\n\n[listen]\nrtmp = \"{ip}:{}\"\nsrt = \"{ip}:{}\"\nhttp = \"{ip}:{}\"\nadmin = \"127.0.0.1:{}\"\ncontrol = \"{ip}:{}\"\n\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n\n[tls]\nca = \"{certs}/ca.pem\"\ncert = \"{certs}/balancer-b1.pem\"\nkey = \"{certs}/balancer-b1.key\"\n",
            ports.rtmp, ports.srt, ports.http, ports.admin, ports.control,
        );
        let config_path = dir.join("b1.toml");
        fs::write(&config_path, cfg).expect("write balancer config");
        let log_path = dir.join("b1.log");
        let log = File::create(&log_path).expect("balancer log");
        let child = Command::new(edge_bin())
            .args(["balancer", "--config"])
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn edge balancer");
        let mut b = Bal {
            child,
            ports,
            ip,
            log_path,
        };
        eprintln!(
            "[impaired] balancer pid {} on {ip}, log {}",
            b.child.id(),
            b.log_path.display()
        );
        let healthz = b.admin_url("/healthz");
        wait_or_fail(
            "the balancer to answer /healthz",
            Duration::from_secs(30),
            || {
                if let Ok(Some(st)) = b.child.try_wait() {
                    panic!("balancer exited with {st}:\n{}", tail_file(&b.log_path, 40));
                }
                http_get(&healthz, HTTP_TIMEOUT)
                    .ok()
                    .filter(|r| r.status == 200)
                    .map(|_| ())
            },
        );
        b
    }
    fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.admin)
    }
    fn control_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.ports.control))
    }
    fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}:{}/live/{key}", self.ip, self.ports.rtmp)
    }
    /// SRT caller URL with ffmpeg's `latency` (microseconds).
    fn srt_url(&self, key: &str, latency: Duration) -> String {
        format!(
            "srt://{}:{}?streamid=#!::r=live/{key},m=publish&latency={}",
            self.ip,
            self.ports.srt,
            latency.as_micros()
        )
    }
    fn playlist_url(&self, playback_id: &str) -> String {
        format!(
            "http://{}:{}/live/{playback_id}/index.m3u8",
            self.ip, self.ports.http
        )
    }
    fn api(&self, path: &str) -> serde_json::Value {
        let r = http_get_with_headers(
            &self.admin_url(path),
            &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            HTTP_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json().expect("JSON")
    }
    fn status_of(&self, node: &str) -> Option<String> {
        self.api("/api/v1/nodes")
            .as_array()?
            .iter()
            .find(|n| n["id"] == node)
            .and_then(|n| n["status"].as_str().map(String::from))
    }
    fn metrics(&self) -> String {
        http_get(&self.admin_url("/metrics"), HTTP_TIMEOUT)
            .expect("balancer /metrics")
            .text()
    }
}

impl Drop for Bal {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "[impaired] balancer log {}:\n{}",
                self.log_path.display(),
                tail_file(&self.log_path, 60)
            );
        }
        kill_and_reap(&mut self.child);
    }
}

/// [`cluster::node_config`] for a node with 8 units listening on `ip` inside a test host.
/// The watchers poll each rendition's plain playlist in turn as a monitor does, not as a player
/// joins: `hls.keyframe_join` is off, so a video playlist is answered at its next part rather
/// than held for a keyframe join (up to a segment per request, which polled in turn would
/// add up past [`MAX_STALL`]).
fn node_config(
    c: &Cluster,
    id: &str,
    ip: Ipv4Addr,
    ports: &Ports,
    balancer: SocketAddr,
    trusted: &[Ipv4Addr],
) -> String {
    let trusted: Vec<IpAddr> = trusted.iter().map(|a| IpAddr::V4(*a)).collect();
    cluster::node_config(
        id,
        IpAddr::V4(ip),
        8,
        ports,
        &[balancer],
        &trusted,
        &c.certs,
    )
    .replace("[hls]\n", "[hls]\nkeyframe_join = false\n")
}

/// An `edge ingest` inside a test host's namespace (listening on the host's address), killed
/// on drop. Its admin API is reached through the router.
struct NsNode {
    child: Child,
    ip: Ipv4Addr,
    ports: Ports,
    log_path: PathBuf,
    _dir: TempDir,
}

impl NsNode {
    fn start(host: &Host, config: impl FnOnce(&Ports) -> String) -> NsNode {
        let ports = Ports::free();
        let dir = TempDir::new("nsnode");
        let config_path = dir.path().join("edge.toml");
        fs::write(&config_path, config(&ports)).expect("write node config");
        let log_path = dir.path().join("edge.log");
        let log = File::create(&log_path).expect("node log");
        let child = host
            .command(edge_bin().to_str().expect("utf-8 path"))
            .args(["ingest", "--config"])
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn edge ingest in the namespace");
        let mut n = NsNode {
            child,
            ip: host.addr,
            ports,
            log_path,
            _dir: dir,
        };
        eprintln!(
            "[impaired] node pid {} in {} on {}, log {}",
            n.child.id(),
            host.ns,
            n.ip,
            n.log_path.display()
        );
        let healthz = n.admin_url("/healthz");
        wait_or_fail(
            "the namespaced node to answer /healthz",
            Duration::from_secs(60),
            || {
                if let Ok(Some(st)) = n.child.try_wait() {
                    panic!("node exited with {st}:\n{}", tail_file(&n.log_path, 40));
                }
                http_get(&healthz, HTTP_TIMEOUT)
                    .ok()
                    .filter(|r| r.status == 200)
                    .map(|_| ())
            },
        );
        n
    }
    fn admin_url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.ip, self.ports.admin)
    }
}

impl Drop for NsNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "[impaired] namespaced node log {}:\n{}",
                self.log_path.display(),
                tail_file(&self.log_path, 60)
            );
        }
        kill_and_reap(&mut self.child);
    }
}

/// What the tests need of a node, wherever it runs.
trait NodeApi {
    fn admin(&self, path: &str) -> HttpResponse;
    fn streams_json(&self) -> Vec<serde_json::Value> {
        let r = self.admin("/api/v1/streams");
        assert_eq!(r.status, 200, "GET /api/v1/streams: {}", r.text());
        r.json()
            .ok()
            .and_then(|v: serde_json::Value| v.as_array().cloned())
            .unwrap_or_default()
    }
    /// (session_id, protocol) of the stream with this playback ID, if live here.
    fn session(&self, playback_id: &str) -> Option<(u64, String)> {
        self.streams_json()
            .into_iter()
            .find(|s| s["playback_id"] == playback_id)
            .map(|s| {
                (
                    s["session_id"].as_u64().unwrap_or(u64::MAX),
                    s["protocol"].as_str().unwrap_or("").to_string(),
                )
            })
    }
    fn metrics_text(&self) -> String {
        self.admin("/metrics").text()
    }
}

fn admin_get(url: &str) -> HttpResponse {
    http_get_with_headers(
        url,
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        HTTP_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

impl NodeApi for NsNode {
    fn admin(&self, path: &str) -> HttpResponse {
        admin_get(&self.admin_url(path))
    }
}
impl NodeApi for Node {
    fn admin(&self, path: &str) -> HttpResponse {
        admin_get(&self.admin_url(path))
    }
}

/// One rendition's media playlist, polled through the balancer.
struct Rendition {
    name: String,
    url: String,
    track: Track,
    last: Option<(u64, usize)>,
    changed: Instant,
    max_stall: Duration,
    /// Complete segments seen: MSN → duration.
    segments: BTreeMap<u64, f64>,
    /// Last complete MSN when watching began (media before it is not counted).
    start_msn: Option<u64>,
    polls: u64,
    /// Failed requests or unparseable playlists.
    errors: Vec<String>,
    /// LL-HLS rule violations (`check_ll_hls`), each once. Kept apart from progress: a
    /// playlist that breaks a rule still shows whether the stream moves.
    violations: std::collections::BTreeSet<String>,
}

/// Every rendition of one stream, watched through the balancer's playback port.
struct Watch {
    playback_id: String,
    renditions: Vec<Rendition>,
    started: Instant,
}

impl Watch {
    /// Reads the multivariant playlist (through the balancer) and starts watching each
    /// rendition it lists.
    fn new(b: &Bal, playback_id: &str) -> Watch {
        let mv_url = b.playlist_url(playback_id);
        let mv = wait_or_fail(
            format!("{playback_id}: a multivariant playlist through the balancer"),
            PUBLISH_TIMEOUT,
            || {
                let r = http_get(&mv_url, HTTP_TIMEOUT).ok()?;
                (r.status == 200).then(|| parse_multivariant(&r.text()).ok())?
            },
        );
        let mut renditions: Vec<(String, Track)> = mv
            .variants
            .iter()
            .map(|v| (v.uri.clone(), Track::Video))
            .collect();
        renditions.extend(
            mv.media
                .iter()
                .filter_map(|m| m.uri.clone().map(|u| (u, Track::Audio))),
        );
        assert!(
            !renditions.is_empty(),
            "{playback_id}: no renditions in {mv:?}"
        );
        let now = Instant::now();
        let mut w = Watch {
            playback_id: playback_id.into(),
            renditions: renditions
                .into_iter()
                .map(|(uri, track)| Rendition {
                    name: uri.clone(),
                    url: resolve_url(&mv_url, &uri),
                    track,
                    last: None,
                    changed: now,
                    max_stall: Duration::ZERO,
                    segments: BTreeMap::new(),
                    start_msn: None,
                    polls: 0,
                    errors: Vec::new(),
                    violations: Default::default(),
                })
                .collect(),
            started: now,
        };
        // Every rendition serves a valid playlist with a part before the clock starts.
        wait_or_fail(
            format!("{playback_id}: every rendition with a part"),
            PUBLISH_TIMEOUT,
            || {
                w.poll();
                w.renditions.iter().all(|r| r.last.is_some()).then_some(())
            },
        );
        let now = Instant::now();
        for r in &mut w.renditions {
            r.changed = now;
            r.max_stall = Duration::ZERO;
            r.start_msn = r.segments.keys().next_back().copied();
            r.errors.clear();
        }
        w.started = now;
        w
    }

    fn poll(&mut self) {
        for r in &mut self.renditions {
            r.polls += 1;
            let now = Instant::now();
            let res = http_get(&r.url, HTTP_TIMEOUT);
            match res {
                Ok(resp) if resp.status == 200 => match parse_media_playlist(&resp.text()) {
                    Ok(pl) => {
                        if let Err(v) = check_ll_hls(&resp.text(), r.track) {
                            r.violations.extend(v);
                        }
                        assert!(
                            pl.discontinuities().is_empty() && !pl.trailing_discontinuity,
                            "{} {}: a discontinuity (the publisher reconnected):\n{}",
                            self.playback_id,
                            r.name,
                            resp.text()
                        );
                        for s in &pl.segments {
                            r.segments.insert(s.msn, s.duration);
                        }
                        let last = pl.last_part();
                        if last.is_some() && last != r.last {
                            r.last = last;
                            r.changed = now;
                        }
                    }
                    Err(e) => r.errors.push(format!("unparseable playlist: {e}")),
                },
                Ok(resp) => r
                    .errors
                    .push(format!("HTTP {}: {}", resp.status, resp.text())),
                Err(e) => r.errors.push(e),
            }
            r.max_stall = r.max_stall.max(now.saturating_duration_since(r.changed));
        }
    }

    /// Panics if a rendition has stood still longer than [`MAX_STALL`].
    fn assert_flowing(&self) {
        for r in &self.renditions {
            let stall = r.changed.elapsed().max(r.max_stall);
            assert!(
                stall <= MAX_STALL,
                "{} {}: frozen: no new part for {stall:?} (last {:?}); errors: {:?}",
                self.playback_id,
                r.name,
                r.last,
                r.errors
            );
        }
    }

    /// (media seconds in complete segments since watching began, wall seconds).
    fn media_vs_wall(&self, r: &Rendition) -> (f64, f64) {
        let from = r.start_msn.unwrap_or(0);
        let media: f64 = r.segments.range(from + 1..).map(|(_, d)| d).sum();
        let last_complete = r.segments.keys().next_back().copied().unwrap_or(from);
        // Wall time up to the end of the last complete segment is about now minus the
        // trailing parts; count from the start to now and allow for one segment.
        let _ = last_complete;
        (media, self.started.elapsed().as_secs_f64())
    }

    fn report(&self) -> String {
        self.renditions
            .iter()
            .map(|r| {
                let (media, wall) = self.media_vs_wall(r);
                format!(
                    "{} {}: last part {:?}, max stall {:.2} s, media {media:.1} s in {wall:.1} s, {} polls, {} errors, {} distinct LL-HLS rule violations{}",
                    self.playback_id,
                    r.name,
                    r.last,
                    r.max_stall.as_secs_f64(),
                    r.polls,
                    r.errors.len(),
                    r.violations.len(),
                    r.violations.iter().next().map(|v| format!(" (first: {v})")).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Media kept up with the wall clock (allowing one segment still being produced) and no
    /// request through the balancer failed.
    fn assert_kept_up(&self) {
        for r in &self.renditions {
            let (media, wall) = self.media_vs_wall(r);
            assert!(
                media + 2.5 >= wall * MIN_REALTIME_RATIO,
                "{} {}: only {media:.1} s of media in {wall:.1} s",
                self.playback_id,
                r.name
            );
            assert!(
                r.errors.is_empty(),
                "{} {}: viewer requests through the balancer failed: {:?}",
                self.playback_id,
                r.name,
                r.errors
            );
        }
    }

    /// Every playlist seen passed `check_ll_hls` (asserted last in each test, so the
    /// continuity figures are checked and printed first).
    fn assert_rules(&self) {
        for r in &self.renditions {
            assert!(
                r.violations.is_empty(),
                "{} {}: the playlists broke LL-HLS rules: {:#?}",
                self.playback_id,
                r.name,
                r.violations
            );
        }
    }
}

/// Watches `watches` for `dur`: every [`WATCH_POLL`], each rendition must have advanced within
/// [`MAX_STALL`]; every ~5 s `check` runs too (encoders alive, sessions unchanged...).
fn watch_for(watches: &mut [Watch], dur: Duration, mut check: impl FnMut()) {
    let end = Instant::now() + dur;
    let mut next_check = Instant::now();
    while Instant::now() < end {
        for w in watches.iter_mut() {
            w.poll();
            w.assert_flowing();
        }
        if Instant::now() >= next_check {
            check();
            next_check = Instant::now() + Duration::from_secs(5);
        }
        std::thread::sleep(WATCH_POLL);
    }
}

/// Waits until the stream `playback_id` is live on `node` and returns its session.
fn landed(node: &dyn NodeApi, playback_id: &str) -> (u64, String) {
    wait_or_fail(
        format!("{playback_id} live on its node"),
        PUBLISH_TIMEOUT,
        || node.session(playback_id),
    )
}

fn check_rtt(host: &Host, expected: Duration, slack: Duration) -> Duration {
    let rtts = host.tcp_connect_rtts(9);
    let m = median(rtts.clone());
    eprintln!("[impaired] RTT through the router (TCP connects): median {m:?} of {rtts:?}");
    assert!(
        m >= expected && m <= expected + slack,
        "RTT through the router {m:?}, configured {expected:?} (+{slack:?}): {rtts:?}"
    );
    m
}

/// The measured loss of each direction is near the configured one: within 40% of it
/// (relative) once enough packets went by for that to be a fair test.
fn check_loss(host: &Host, loss: f64) {
    for (dir, c) in [("up", host.up_counts()), ("down", host.down_counts())] {
        let ratio = c.loss_ratio();
        eprintln!("[impaired] router {dir}: {c:?}, loss {:.2}%", ratio * 100.0);
        let subject = c.seen - c.blocked;
        // Expected losses at least 30: the 40% band is then more than two standard deviations.
        if subject as f64 * loss >= 30.0 {
            assert!(
                (ratio - loss).abs() <= 0.4 * loss,
                "router {dir}: measured loss {ratio:.4}, configured {loss}: {c:?}"
            );
        }
    }
}

/// The harness itself: the delay is there (RTT of TCP connects), the loss ratio is the
/// configured one (UDP datagrams counted at the receiver and in the router agree), and a
/// blocked port passes nothing while the rest of the link works.
#[test]
fn impairment_router_delays_drops_and_blocks() {
    let mut net = TestNet::new("self");
    let d = Duration::from_millis(50);
    net.add_host(
        "probe",
        Impairment::delay_loss(d, 0.05),
        Impairment::delay_loss(d, 0.0),
    );
    let h = net.host(0);
    check_rtt(h, 2 * d, Duration::from_millis(25));
    let send = |n: usize, target: SocketAddr| {
        let ns = h.ns.clone();
        std::thread::spawn(move || {
            in_netns(&ns, move || {
                let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind in namespace");
                for i in 0..n {
                    s.send_to(&[0u8; 200], target).expect("send");
                    if i % 50 == 49 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            })
            .expect("enter namespace")
        })
    };
    let count = |sock: &std::net::UdpSocket, sender: std::thread::JoinHandle<()>| {
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut got = 0u64;
        let mut buf = [0u8; 2048];
        loop {
            match sock.recv(&mut buf) {
                Ok(_) => got += 1,
                Err(_) if sender.is_finished() => break,
                Err(_) => {}
            }
        }
        sender.join().unwrap();
        got
    };
    let sock = std::net::UdpSocket::bind((h.gateway, 0)).unwrap();
    let target = sock.local_addr().unwrap();
    let n = 4000u64;
    let before = h.up_counts();
    let got = count(&sock, send(n as usize, target));
    let after = h.up_counts();
    let lost = after.lost - before.lost;
    let ratio = 1.0 - got as f64 / n as f64;
    eprintln!(
        "[impaired] UDP: {got} of {n} arrived ({:.2}% lost); router dropped {lost}",
        ratio * 100.0
    );
    // The router's drop count covers every packet on the up link, and a few others cross it
    // while we count: late TCP retransmissions of the RTT probes above (their SYNs were
    // dropped too), the kernel's own traffic. None of ours may go missing unaccounted.
    assert!(
        (n..=n + STRAY_PACKETS).contains(&(got + lost)),
        "the receiver and the router disagree: {got} received + {lost} dropped, {n} sent"
    );
    assert!(
        (ratio - 0.05).abs() <= 0.015,
        "loss {ratio:.4}, configured 0.05"
    );
    // A blocked port: nothing passes; other ports still do.
    h.block_port(target.port());
    let got = count(&sock, send(200, target));
    assert_eq!(got, 0, "{got} datagrams crossed a blocked port");
    assert_eq!(h.up_counts().blocked, 200);
    check_rtt(h, 2 * d, Duration::from_millis(25));
    h.unblock_all();
    assert!(
        count(&sock, send(200, target)) > 150,
        "nothing passes after unblocking"
    );
}

#[test]
fn srt_over_lossy_high_rtt_link() {
    let mut net = TestNet::new("srt");
    // 300 ms RTT: 150 ms each way, ±5 ms jitter; 5% loss each way; 1% of packets held 20 ms
    // back (reordered).
    let imp = Impairment {
        delay: Duration::from_millis(150),
        jitter: Duration::from_millis(5),
        loss: 0.05,
        reorder: 0.01,
        reorder_gap: Duration::from_millis(20),
    };
    net.add_host("enc", imp, imp);
    let enc_host = net.host(0);
    let streaming = streaming_time();
    let rtt = Duration::from_millis(300);
    check_rtt(
        enc_host,
        rtt - Duration::from_millis(10),
        Duration::from_millis(40),
    );
    let latency = rtt * 4;

    let c = Cluster::new(1, 1);
    let clip = make_clip(c.dir.path(), 1500, 128, streaming.as_secs() + 60);
    let b = Bal::start(&c, enc_host.gateway, "3s");
    let node = {
        let ports = Ports::free();
        let cfg = node_config(
            &c,
            "n1",
            Ipv4Addr::LOCALHOST,
            &ports,
            b.control_addr(),
            &[Ipv4Addr::LOCALHOST, enc_host.gateway],
        );
        Node::start_with_config(ports, cfg)
    };
    wait_or_fail("n1 ready at the balancer", Duration::from_secs(20), || {
        (b.status_of("n1").as_deref() == Some("ready")).then_some(())
    });

    let mut enc = Encoder::ffmpeg_srt(
        &b.srt_url(&key(0), latency),
        EncOpts {
            source_file: Some(clip),
            duration: streaming + Duration::from_secs(120),
            netns: Some(enc_host.ns.clone()),
            ..EncOpts::default()
        },
    );
    let (session, proto) = landed(&node, &pid(0));
    assert_eq!(proto, "srt");
    let mut w = Watch::new(&b, &pid(0));
    let t0 = Instant::now();
    let before = (enc_host.up_counts(), enc_host.down_counts());
    watch_for(std::slice::from_mut(&mut w), streaming, || {
        assert!(
            enc.is_running(),
            "the SRT publisher stopped:\n{}",
            enc.log_text()
        );
        let now = node.session(&pid(0));
        assert_eq!(
            now.as_ref().map(|s| s.0),
            Some(session),
            "the SRT session was replaced or ended: {now:?}\n{}",
            node.log_tail(30)
        );
    });
    eprintln!(
        "[impaired] streamed {:?} over SRT\n{}",
        t0.elapsed(),
        w.report()
    );
    assert!(
        enc.is_running(),
        "the SRT publisher stopped:\n{}",
        enc.log_text()
    );
    w.assert_kept_up();
    let (up, down) = (enc_host.up_counts(), enc_host.down_counts());
    eprintln!(
        "[impaired] during streaming: up {} pkts {} lost {} reordered, {:.0} kbit/s delivered; down {} pkts {} lost",
        up.seen - before.0.seen,
        up.lost - before.0.lost,
        up.reordered - before.0.reordered,
        (up.bytes - before.0.bytes) as f64 * 8.0 / 1000.0 / t0.elapsed().as_secs_f64(),
        down.seen - before.1.seen,
        down.lost - before.1.lost
    );
    check_loss(enc_host, imp.loss);
    let nm = node.metrics_text();
    let bm = b.metrics();
    for (what, text, series, want) in [
        (
            "node",
            &nm,
            "edge_ingest_connections_total{protocol=\"srt\",result=\"accepted\"}",
            1.0,
        ),
        (
            "balancer",
            &bm,
            "edge_balancer_connections_total{protocol=\"srt\",result=\"relayed\"}",
            1.0,
        ),
    ] {
        assert_eq!(metric_value(text, series), want, "{what}: {series}");
    }
    w.assert_rules();
    eprintln!(
        "[impaired] node SRT drops: {}",
        nm.lines()
            .filter(|l| l.starts_with("edge_ingest_srt_dropped_packets_total") && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    enc.stop(Duration::from_secs(10));
}

#[test]
fn rtmp_over_lossy_rtt_link() {
    let mut net = TestNet::new("rtmp");
    // 200 ms RTT: 100 ms each way, 1% loss each way.
    let imp = Impairment::delay_loss(Duration::from_millis(100), 0.01);
    net.add_host("enc", imp, imp);
    let enc_host = net.host(0);
    // Pinned: Reno. Every Linux has it, and a namespace may only pick an allowed one (this
    // host allows reno and bbr; cubic is refused with EPERM outside the root namespace). Loss
    // based like CUBIC, and at 200 ms and 1% both sit in the same (Reno-friendly) regime.
    assert_eq!(
        enc_host.sysctl("net.ipv4.tcp_congestion_control", "reno"),
        "reno"
    );
    let streaming = streaming_time();
    check_rtt(
        enc_host,
        Duration::from_millis(200),
        Duration::from_millis(30),
    );

    let c = Cluster::new(1, 1);
    // 300 + 64 kbit/s (about 0.4 Mbit/s with FLV framing). Reno's steady state at 1% loss
    // and 200 ms RTT is about 1.22 × MSS / (RTT × √p) ≈ 0.7 Mbit/s (Mathis); a bulk transfer
    // through the router measured 1.2-1.7 Mbit/s over 10 s (slow start included), and an
    // 0.8 + 0.064 Mbit/s stream got through at only 0.57 × real time (about 0.55 Mbit/s): a
    // 1-1.5 Mbit/s RTMP stream does not fit this path with a loss-based sender.
    let (video_kbps, audio_kbps) = (300, 64);
    let clip = make_clip(
        c.dir.path(),
        video_kbps,
        audio_kbps,
        streaming.as_secs() + 60,
    );
    let b = Bal::start(&c, enc_host.gateway, "3s");
    let node = {
        let ports = Ports::free();
        let cfg = node_config(
            &c,
            "n1",
            Ipv4Addr::LOCALHOST,
            &ports,
            b.control_addr(),
            &[Ipv4Addr::LOCALHOST, enc_host.gateway],
        );
        Node::start_with_config(ports, cfg)
    };
    wait_or_fail("n1 ready at the balancer", Duration::from_secs(20), || {
        (b.status_of("n1").as_deref() == Some("ready")).then_some(())
    });

    let mut enc = Encoder::ffmpeg_rtmp(
        &b.rtmp_url(&key(0)),
        EncOpts {
            source_file: Some(clip),
            duration: streaming + Duration::from_secs(120),
            netns: Some(enc_host.ns.clone()),
            ..EncOpts::default()
        },
    );
    let (session, proto) = landed(&node, &pid(0));
    assert_eq!(proto, "rtmp");
    let mut w = Watch::new(&b, &pid(0));
    let t0 = Instant::now();
    let before = enc_host.up_counts();
    watch_for(std::slice::from_mut(&mut w), streaming, || {
        assert!(
            enc.is_running(),
            "the RTMP publisher stopped:\n{}",
            enc.log_text()
        );
        let now = node.session(&pid(0));
        assert_eq!(
            now.as_ref().map(|s| s.0),
            Some(session),
            "the RTMP session was replaced or ended: {now:?}\n{}",
            node.log_tail(30)
        );
    });
    eprintln!(
        "[impaired] streamed {:?} over RTMP\n{}",
        t0.elapsed(),
        w.report()
    );
    assert!(
        enc.is_running(),
        "the RTMP publisher stopped:\n{}",
        enc.log_text()
    );
    w.assert_kept_up();
    let up = enc_host.up_counts();
    eprintln!(
        "[impaired] during streaming: up {} pkts {} lost, {:.0} kbit/s delivered",
        up.seen - before.seen,
        up.lost - before.lost,
        (up.bytes - before.bytes) as f64 * 8.0 / 1000.0 / t0.elapsed().as_secs_f64(),
    );
    check_loss(enc_host, imp.loss);
    let nm = node.metrics_text();
    let bm = b.metrics();
    for (what, text, series, want) in [
        (
            "node",
            &nm,
            "edge_ingest_connections_total{protocol=\"rtmp\",result=\"accepted\"}",
            1.0,
        ),
        (
            "balancer",
            &bm,
            "edge_balancer_connections_total{protocol=\"rtmp\",result=\"relayed\"}",
            1.0,
        ),
    ] {
        assert_eq!(metric_value(text, series), want, "{what}: {series}");
    }
    w.assert_rules();
    enc.stop(Duration::from_secs(10));
}

#[test]
fn control_plane_partition_keeps_streams() {
    let mut net = TestNet::new("part");
    // The node's own link: a LAN (1 ms each way, no loss); only the partition matters here.
    let lan = Impairment::delay_loss(Duration::from_millis(1), 0.0);
    net.add_host("n1", lan, lan);
    let h = net.host(0);
    let c = Cluster::new(2, 1);
    let clip = clip();
    let lost_after = Duration::from_secs(3);
    let b = Bal::start(&c, h.gateway, "3s");
    // n1 in its namespace: its control plane, the relays to it and its viewers' requests all
    // cross the router.
    let n1 = NsNode::start(h, |p| {
        node_config(&c, "n1", h.addr, p, b.control_addr(), &[h.gateway])
    });
    wait_or_fail("n1 ready at the balancer", Duration::from_secs(30), || {
        (b.status_of("n1").as_deref() == Some("ready")).then_some(())
    });
    let opts = || EncOpts {
        source_file: Some(clip.clone()),
        duration: Duration::from_secs(300),
        ..EncOpts::default()
    };
    // Two streams on n1 (the only node yet): one RTMP, one SRT.
    let mut e0 = Encoder::ffmpeg_rtmp(&b.rtmp_url(&key(0)), opts());
    let mut e1 = Encoder::ffmpeg_srt(&b.srt_url(&key(1), Duration::from_millis(120)), opts());
    let s0 = landed(&n1, &pid(0));
    let s1 = landed(&n1, &pid(1));
    // n2 on loopback joins.
    let n2 = {
        let ports = Ports::free();
        let cfg = node_config(
            &c,
            "n2",
            Ipv4Addr::LOCALHOST,
            &ports,
            b.control_addr(),
            &[Ipv4Addr::LOCALHOST],
        );
        Node::start_with_config(ports, cfg)
    };
    wait_or_fail("n2 ready at the balancer", Duration::from_secs(30), || {
        (b.status_of("n2").as_deref() == Some("ready")).then_some(())
    });
    let mut ws = vec![Watch::new(&b, &pid(0)), Watch::new(&b, &pid(1))];
    let sessions_unchanged = |e0: &mut Encoder, e1: &mut Encoder| {
        assert!(
            e0.is_running(),
            "RTMP publisher stopped:\n{}",
            e0.log_text()
        );
        assert!(e1.is_running(), "SRT publisher stopped:\n{}", e1.log_text());
        assert_eq!(
            n1.session(&pid(0)),
            Some(s0.clone()),
            "{} session changed",
            pid(0)
        );
        assert_eq!(
            n1.session(&pid(1)),
            Some(s1.clone()),
            "{} session changed",
            pid(1)
        );
    };
    watch_for(&mut ws, Duration::from_secs(5), || {
        sessions_unchanged(&mut e0, &mut e1)
    });

    // Partition: the balancer's control port, both ways, on n1's link only.
    let before = (h.up_counts(), h.down_counts());
    h.block_port(b.ports.control);
    let cut = Instant::now();
    eprintln!(
        "[impaired] control plane of n1 cut (UDP port {})",
        b.ports.control
    );
    let mut seen_lost = None;
    let mut placed_elsewhere = None;
    let mut e2: Option<Encoder> = None;
    // Longer than lost_after and than the QUIC idle timeout (the connection dies too).
    let partition = lost_after.max(control::IDLE_TIMEOUT) + Duration::from_secs(5);
    watch_for(&mut ws, partition, || {
        sessions_unchanged(&mut e0, &mut e1);
        if seen_lost.is_none() && b.status_of("n1").as_deref() == Some("lost") {
            seen_lost = Some(cut.elapsed());
            // A lost node gets nothing new: the next stream goes to n2.
            e2 = Some(Encoder::ffmpeg_rtmp(&b.rtmp_url(&key(2)), opts()));
        }
        if placed_elsewhere.is_none() && e2.is_some() {
            placed_elsewhere = n2.session(&pid(2)).map(|_| cut.elapsed());
        }
    });
    let during = (h.up_counts(), h.down_counts());
    eprintln!(
        "[impaired] partition {partition:?}: n1 lost after {seen_lost:?}, s02 on n2 at {placed_elsewhere:?}; blocked {} up / {} down, forwarded {} up / {} down",
        during.0.blocked - before.0.blocked,
        during.1.blocked - before.1.blocked,
        during.0.forwarded - before.0.forwarded,
        during.1.forwarded - before.1.forwarded
    );
    let lost_at = seen_lost.unwrap_or_else(|| {
        panic!(
            "the balancer never marked n1 lost during the partition: {:?}",
            b.api("/api/v1/nodes")
        )
    });
    assert!(
        lost_at <= lost_after + Duration::from_secs(6),
        "n1 marked lost only after {lost_at:?}"
    );
    assert!(
        during.0.blocked > before.0.blocked,
        "nothing of n1's control plane was dropped"
    );
    assert!(
        during.0.forwarded - before.0.forwarded > 100,
        "n1's media traffic did not cross the router during the partition"
    );
    if placed_elsewhere.is_none() {
        let e2n = wait_until(PUBLISH_TIMEOUT, || n2.session(&pid(2)));
        assert!(
            e2n.is_some(),
            "a stream published while n1 was lost did not land on n2"
        );
    }
    assert!(
        n1.session(&pid(2)).is_none(),
        "a lost node got a new stream"
    );

    // Heal: n1 reconnects (the QUIC connection timed out) and is ready again.
    h.unblock_all();
    let healed = Instant::now();
    wait_or_fail(
        "n1 ready again after the partition healed",
        Duration::from_secs(30),
        || (b.status_of("n1").as_deref() == Some("ready")).then_some(()),
    );
    eprintln!("[impaired] n1 ready {:?} after healing", healed.elapsed());
    watch_for(&mut ws, Duration::from_secs(8), || {
        sessions_unchanged(&mut e0, &mut e1)
    });
    for w in &ws {
        eprintln!("{}", w.report());
        w.assert_kept_up();
    }
    // Routed as before: the balancer's route for each stream is still n1's.
    let conns = b.api("/api/v1/connections");
    eprintln!("[impaired] connections: {conns}");
    let nm = n1.metrics_text();
    for p in ["rtmp", "srt"] {
        let series =
            format!("edge_ingest_connections_total{{protocol=\"{p}\",result=\"accepted\"}}");
        assert_eq!(metric_value(&nm, &series), 1.0, "n1: {series}");
    }
    for w in &ws {
        w.assert_rules();
    }
    e0.stop(Duration::from_secs(10));
    e1.stop(Duration::from_secs(10));
    drop(e2);
}
