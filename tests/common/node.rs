//! [`Node`]: one `edge ingest` process on free loopback ports, with its config and log in a
//! temp dir; killed on drop (log tail printed if the test is failing).

use super::{
    check_ll_hls, free_tcp_port, free_udp_port, http_get, http_get_with_headers, kill_and_reap,
    run_with_timeout, send_signal, tail_file, wait_child, wait_until, HttpResponse, MediaPlaylist,
    TempDir, Track, HTTP_TIMEOUT,
};
use std::fs::{self, File};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long `edge ingest` may take to answer `/healthz` after spawn. The first start on a fresh
/// machine scans the GStreamer plugin registry (can take 10-20 s on 2 busy cores); parallel
/// tests and a debug build slow it further.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a short CLI invocation (`edge config check ...`) may run: it should be instant, but a
/// debug binary loading GStreamer on a shared 2-core machine can take seconds.
pub const EDGE_CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a node may take to exit after SIGTERM (graceful drain of streams and listeners).
pub const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Lines of the node's log printed when a test fails while the node is alive.
const LOG_TAIL_LINES: usize = 50;

/// The admin bearer token in the test config.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The `edge` binary under test (built by cargo for the root package's integration tests).
pub fn edge_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_edge"))
}

/// Runs `edge ARGS...` to completion (bounded by [`EDGE_CLI_TIMEOUT`]).
pub fn run_edge(args: &[&str]) -> Output {
    run_with_timeout(Command::new(edge_bin()).args(args), EDGE_CLI_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The node's listening ports (all on 127.0.0.1; `srt` is UDP, the rest TCP).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub rtmp: u16,
    pub srt: u16,
    pub http: u16,
    pub admin: u16,
}

impl Ports {
    /// Four ports that were free a moment ago.
    pub fn free() -> Ports {
        Ports {
            rtmp: free_tcp_port(),
            srt: free_udp_port(),
            http: free_tcp_port(),
            admin: free_tcp_port(),
        }
    }
}

/// The test config (two streams `test-stream-key-1`/`one` and `test-stream-key-2`/`two`, a
/// 360p + 240p ladder, 333 ms parts, 2 s segments) on the given ports.
pub fn config_template(p: &Ports) -> String {
    format!(
        r#"[node]
id = "test-node"
capacity_units = 8.0

[listen]
rtmp = "127.0.0.1:{rtmp}"
srt = "127.0.0.1:{srt}"
http = "127.0.0.1:{http}"
admin = "127.0.0.1:{admin}"

[admin]
token = "{ADMIN_TOKEN}"

[hls]
part_target = "333ms"
segment_target = "2s"
window_segments = 6
reconnect_window = "5s"
ended_retention = "30s"

# A stream is charged for the largest source allowed until its first keyframe; every test
# source is at most 720p30, which keeps a test's capacity arithmetic at decode_units + rungs.
[transcode]
max_source_width = 1280
max_source_height = 720
max_source_fps = 30

[[ladder]]
name = "360p"
height = 360
fps = 30
video_kbps = 600

[[ladder]]
name = "240p"
height = 240
fps = 30
video_kbps = 300

[[streams]]
key = "test-stream-key-1"
playback_id = "one"

[[streams]]
key = "test-stream-key-2"
playback_id = "two"
"#,
        rtmp = p.rtmp,
        srt = p.srt,
        http = p.http,
        admin = p.admin,
    )
}

/// The test config without its ladder and streams (everything from its first `[[ladder]]` on)
/// and with room for 100 units: benchmarks append the ladder (none: the default one) and the
/// streams they measure.
pub fn bench_config_template(p: &Ports) -> String {
    let base = config_template(p);
    let base = base.split("\n[[ladder]]").next().unwrap_or(&base);
    assert!(base.contains("capacity_units = 8.0"));
    base.replace("capacity_units = 8.0", "capacity_units = 100.0")
}

/// A running `edge ingest --config FILE`.
pub struct Node {
    child: Child,
    pub ports: Ports,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    dir: TempDir,
}

impl Node {
    /// Writes the template config on free ports (after `extra` edits its text), starts the
    /// node and waits until `/healthz` answers 200 and the RTMP port accepts connections.
    /// Panics with the log tail if the node exits or is not ready within [`NODE_START_TIMEOUT`].
    pub fn start(extra: impl FnOnce(&mut String)) -> Node {
        let ports = Ports::free();
        let mut config = config_template(&ports);
        extra(&mut config);
        Node::start_with_config(ports, config)
    }

    /// Like [`Node::start`] with a complete config text; `ports` must be the ones it uses.
    pub fn start_with_config(ports: Ports, config: String) -> Node {
        let dir = TempDir::new("node");
        let config_path = dir.path().join("edge.toml");
        fs::write(&config_path, &config).expect("write the node config to the temp dir");
        let log_path = dir.path().join("edge.log");
        let log = File::create(&log_path).expect("create the node log file");
        let log_err = log.try_clone().expect("clone the node log file handle");
        let child = Command::new(edge_bin())
            .arg("ingest")
            .arg("--config")
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .env("GST_DEBUG_NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", edge_bin().display()));
        let mut node = Node {
            child,
            ports,
            config_path,
            log_path,
            dir,
        };
        eprintln!(
            "[harness] edge node pid {} log {}",
            node.pid(),
            node.log_path.display()
        );
        node.wait_ready(NODE_START_TIMEOUT);
        node
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        let healthz = self.admin_url("/healthz");
        let rtmp = format!("127.0.0.1:{}", self.ports.rtmp);
        let mut last = String::from("no attempt yet");
        let ready = wait_until(timeout, || {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "edge exited during start-up with {st}; log {}:\n{}",
                    self.log_path.display(),
                    tail_file(&self.log_path, LOG_TAIL_LINES)
                );
            }
            match http_get(&healthz, HTTP_TIMEOUT) {
                Ok(r) if r.status == 200 => {}
                Ok(r) => {
                    last = format!("/healthz answered {}", r.status);
                    return None;
                }
                Err(e) => {
                    last = e;
                    return None;
                }
            }
            match TcpStream::connect(&rtmp) {
                Ok(_) => Some(()),
                Err(e) => {
                    last = format!("RTMP port {rtmp}: {e}");
                    None
                }
            }
        });
        if ready.is_none() {
            panic!(
                "edge not ready after {:?} (last: {last}); log {}:\n{}",
                start.elapsed(),
                self.log_path.display(),
                tail_file(&self.log_path, LOG_TAIL_LINES)
            );
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp dir holding config and log (removed on drop unless the test fails).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail_file(&self.log_path, n)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and waits up to [`NODE_STOP_TIMEOUT`]; `None` if it did not exit.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        if let Some(st) = self.exit_status() {
            return Some(st);
        }
        send_signal(self.pid(), "TERM").expect("send SIGTERM to edge");
        wait_child(&mut self.child, NODE_STOP_TIMEOUT)
    }

    /// SIGKILL (a crash, as far as clients can tell).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        kill_and_reap(&mut self.child)
    }

    /// `rtmp://127.0.0.1:PORT/live/KEY`
    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.ports.rtmp)
    }

    /// `srt://127.0.0.1:PORT?streamid=#!::r=live/KEY,m=publish`
    pub fn srt_url(&self, key: &str) -> String {
        format!(
            "srt://127.0.0.1:{}?streamid=#!::r=live/{key},m=publish",
            self.ports.srt
        )
    }

    /// `http://127.0.0.1:HTTP` (viewer origin, no trailing slash).
    pub fn http_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.http)
    }

    /// The multivariant playlist: `http://127.0.0.1:HTTP/live/PID/index.m3u8`.
    pub fn playlist_url(&self, playback_id: &str) -> String {
        format!("{}/live/{playback_id}/index.m3u8", self.http_base())
    }

    /// A rendition's media playlist: `/live/PID/RENDITION/index.m3u8` (source, 360p, 240p, audio).
    pub fn media_playlist_url(&self, playback_id: &str, rendition: &str) -> String {
        format!(
            "{}/live/{playback_id}/{rendition}/index.m3u8",
            self.http_base()
        )
    }

    /// `http://127.0.0.1:ADMIN{path}`
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.admin)
    }

    /// GET on the admin listener with `Authorization: Bearer <test token>`.
    pub fn admin_get(&self, path: &str) -> Result<HttpResponse, String> {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        http_get_with_headers(
            &self.admin_url(path),
            &[("Authorization", &auth)],
            HTTP_TIMEOUT,
        )
    }

    /// `GET /api/v1/streams` (authorized), asserted 200 and parsed as a JSON array.
    pub fn streams(&self) -> Vec<serde_json::Value> {
        let r = self
            .admin_get("/api/v1/streams")
            .unwrap_or_else(|e| panic!("GET /api/v1/streams: {e}"));
        assert_eq!(r.status, 200, "GET /api/v1/streams: {}", r.text());
        match r
            .json()
            .unwrap_or_else(|e| panic!("GET /api/v1/streams: {e}"))
        {
            serde_json::Value::Array(v) => v,
            other => panic!("GET /api/v1/streams: expected a JSON array, got {other}"),
        }
    }

    /// The `/api/v1/streams` entry with this playback id, if any.
    pub fn stream(&self, playback_id: &str) -> Option<serde_json::Value> {
        self.streams()
            .into_iter()
            .find(|s| s["playback_id"] == playback_id)
    }

    /// Polls `/live/PID/RENDITION/index.m3u8` until it passes [`check_ll_hls`] (video rules
    /// unless the rendition is "audio") with at least `min_segments` complete segments, and
    /// returns it. Panics after `timeout` with the last status/violations and the playlist.
    pub fn wait_media_playlist(
        &self,
        playback_id: &str,
        rendition: &str,
        min_segments: usize,
        timeout: Duration,
    ) -> MediaPlaylist {
        let url = self.media_playlist_url(playback_id, rendition);
        let track = if rendition == "audio" {
            Track::Audio
        } else {
            Track::Video
        };
        let mut last = String::from("no attempt yet");
        let found = wait_until(timeout, || {
            let r = match http_get(&url, HTTP_TIMEOUT) {
                Ok(r) => r,
                Err(e) => {
                    last = e;
                    return None;
                }
            };
            if r.status != 200 {
                last = format!("HTTP {}: {}", r.status, r.text());
                return None;
            }
            let text = r.text();
            match check_ll_hls(&text, track) {
                Ok(pl) if pl.segments.len() >= min_segments => Some(pl),
                Ok(pl) => {
                    last = format!("only {} segments:\n{text}", pl.segments.len());
                    None
                }
                Err(errs) => {
                    last = format!("LL-HLS violations {errs:#?} in:\n{text}");
                    None
                }
            }
        });
        found.unwrap_or_else(|| {
            panic!("{url}: no valid playlist with >= {min_segments} segments within {timeout:?}; last: {last}")
        })
    }

    /// `GET /metrics` body (asserted 200).
    pub fn metrics(&self) -> String {
        let r = http_get(&self.admin_url("/metrics"), HTTP_TIMEOUT)
            .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        assert_eq!(r.status, 200, "GET /metrics");
        r.text()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let status = kill_and_reap(&mut self.child);
        if std::thread::panicking() {
            eprintln!(
                "[harness] edge node (pid {}, {}) log {} — last {LOG_TAIL_LINES} lines:\n{}",
                self.child.id(),
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "not reaped".into()),
                self.log_path.display(),
                tail_file(&self.log_path, LOG_TAIL_LINES)
            );
        }
    }
}
