//! Shared end-to-end test harness for the `edge` binary.
//!
//! Each integration test file does `mod common;` and uses what it needs: [`Node`] (a running
//! `edge ingest`), [`Encoder`] (a real publisher: ffmpeg, GStreamer, srt-live-transmit), a small
//! blocking HTTP client ([`http_get`]), LL-HLS playlist parsing and checking ([`check_ll_hls`]),
//! decoding with ffprobe ([`ffprobe_decode`]) and playback in headless Chromium with hls.js
//! ([`play_in_chromium`]). Every spawned process is killed when its handle drops.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod encoder;
pub mod glass;
pub mod hls;
pub mod http;
pub mod netns;
pub mod node;
pub mod player;
pub mod probe;
pub mod procfs;
pub mod rtmp_raw;
pub mod srt_raw;
pub mod tls;

pub use encoder::{clip, modern_ffmpeg, EncOpts, Encoder};
pub use hls::{
    blocking_reload_url, check_ll_hls, parse_media_playlist, parse_multivariant, resolve_url,
    MediaPlaylist, MediaRendition, Multivariant, Part, PreloadHint, RenditionReport, Segment,
    Track, Variant,
};
pub use http::{get_ok, http_get, http_get_with_headers, http_request, HttpResponse};
pub use node::{
    bench_config_template, config_template, edge_bin, run_edge, Node, Ports, ADMIN_TOKEN,
};
pub use player::{
    play_in_chromium, play_in_chromium_trusting, play_shaka_in_chromium, spki_hash, PlayerReport,
};
pub use probe::{ffprobe_decode, ProbeResult};

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Default timeout of one HTTP request to a local server. Generous because the 2-core machine is
/// shared with transcoding pipelines and parallel tests; blocking playlist reloads take longer
/// and pass their own timeout.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long after publishing starts a stream may take to show its first complete segment:
/// encoder start-up, one 2 s GOP, GStreamer pipeline start-up and the transcode ladder, all on
/// 2 shared cores while other tests run.
pub const FIRST_SEGMENT_TIMEOUT: Duration = Duration::from_secs(45);

/// Interval between polls in [`wait_until`]: short enough to see sub-second (LL-HLS part)
/// changes, long enough not to load the machine.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How long a killed child may take to be reaped before we give up waiting on it.
pub const KILL_REAP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for a finished child's output pipes to reach EOF (a grandchild may keep
/// them open); past that, what was read so far is lost and an empty buffer is returned.
pub const PIPE_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Polls `f` every [`POLL_INTERVAL`] until it returns `Some`, or `None` after `timeout`.
/// `f` is always called at least once, and once more right at the deadline.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

/// Polls `f` like [`wait_until`] and returns its value; when `timeout` passes first, panics
/// with "timed out after T waiting for: WHAT", so a failure says what did not happen.
pub fn wait_for<T>(
    what: impl std::fmt::Display,
    timeout: Duration,
    f: impl FnMut() -> Option<T>,
) -> T {
    wait_until(timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for: {what}"))
}

/// Ports handed out by this test process, so two tests in one binary never get the same one.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

fn claim_port(get: impl Fn() -> std::io::Result<u16>) -> u16 {
    for _ in 0..50 {
        let port = get().expect("bind an ephemeral port on 127.0.0.1");
        let mut set = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if set.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no fresh ephemeral port after 50 tries");
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind :0, read, drop).
pub fn free_tcp_port() -> u16 {
    claim_port(|| {
        TcpListener::bind("127.0.0.1:0")?
            .local_addr()
            .map(|a| a.port())
    })
}

/// A UDP port on 127.0.0.1 that was free a moment ago (bind :0, read, drop).
pub fn free_udp_port() -> u16 {
    claim_port(|| {
        UdpSocket::bind("127.0.0.1:0")?
            .local_addr()
            .map(|a| a.port())
    })
}

/// A fresh directory under the system temp dir, removed on drop unless the thread is
/// panicking (then it is kept, and its path printed, for post-mortem).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "edge-test-{prefix}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[harness] keeping {} for inspection", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// The last `n` lines of a (log) file, or a note that it could not be read.
pub fn tail_file(path: &Path, n: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Kills a child (SIGKILL) and reaps it, waiting at most [`KILL_REAP_TIMEOUT`].
pub fn kill_and_reap(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(st)) = child.try_wait() {
        return Some(st);
    }
    let _ = child.kill();
    wait_child(child, KILL_REAP_TIMEOUT)
}

/// Waits for a child to exit for at most `timeout`; `None` if it is still running.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    wait_until(timeout, || child.try_wait().ok().flatten())
}

/// Sends a signal (e.g. "TERM", "INT") to a process with the `kill` utility.
pub fn send_signal(pid: u32, signal: &str) -> Result<(), String> {
    let st = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("run kill: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("kill -{signal} {pid}: {st}"))
    }
}

/// Runs a command to completion with captured stdout/stderr, killing it after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {what}: {e}"))?;
    // Readers hand their bytes back over channels so that a grandchild still holding a pipe
    // open cannot hang us after the child itself was killed.
    let reader = |r: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            let _ = tx.send(buf);
        });
        rx
    };
    let out_rx = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err_rx = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(PIPE_DRAIN_TIMEOUT).unwrap_or_default()
    };
    match wait_child(&mut child, timeout) {
        Some(status) => Ok(Output {
            status,
            stdout: collect(out_rx),
            stderr: collect(err_rx),
        }),
        None => {
            kill_and_reap(&mut child);
            let stderr = collect(err_rx);
            Err(format!(
                "{what} still running after {timeout:?}; killed. stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            ))
        }
    }
}

/// The value of one series in a Prometheus exposition (`name{label="v"}` exactly as
/// exposed), 0 when absent (a counter never incremented is not exposed).
pub fn metric_value(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}
