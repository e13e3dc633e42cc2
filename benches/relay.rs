//! Relay benchmark: the real `edge balancer` against HAProxy (`mode tcp`, `send-proxy-v2`)
//! relaying the same RTMP publishers to the same sink, on the same machine in the same run;
//! and the balancer's hand-over to a successor process under load.
//!
//! The "node" is a fake: a control-plane client (`control::client::spawn_client`, in this
//! process) reporting one huge, ready node whose RTMP address is the sink, and accepting every
//! reservation; plus the sink, a minimal RTMP server (PROXY v2 header when present, RTMP
//! handshake, accepts `connect` and `publish`, then reads) that runs as a child process of this
//! binary (`--sink-child`), so that this process and the sink each hold one descriptor per
//! connection and 10,000 connections fit a 20,000 `RLIMIT_NOFILE`. Clients are minimal RTMP
//! publishers (handshake, `connect` to `live`, `publish`), each from its own source address in
//! 127.1.0.0/16, then send bytes that neither relay parses. Speaking real RTMP up to the publish
//! keeps the bench valid whether the balancer relays bytes from the first one or terminates the
//! RTMP opening itself to learn the stream key.
//!
//! Modes (`cargo bench --bench relay -- --help`):
//! - `--memory`: relay RSS per pinned idle publisher at `--conns` publishers (10,000 unless the
//!   descriptor limit is lower);
//! - `--load`: relay CPU seconds per relayed Gbit at full speed (50 publishers writing as fast
//!   as they can) and relay CPU % at encoder rates (200 × 6 Mbps);
//! - `--latency`: publish setup latency (client connect() to `NetStream.Publish.Start`),
//!   p50/p90/p99, direct, through HAProxy and through edge;
//! - `--handover N[,N...]`: for each N, a fresh balancer with N pinned publishers, `--active`
//!   of them streaming numbered, timestamped records at `--rate-mbps`; a second
//!   `edge balancer --config SAME_FILE` is started (or `--usr2`: `kill -USR2`) and takes over.
//!   Measured: spawn → the admin API reporting the new pid, the `ms=` both processes log, the
//!   longest pause in arrivals at the sink and the longest send → sink delay of the streaming
//!   connections (before and during the hand-over), and for every connection that it is still
//!   open on both ends, that the sink received exactly the bytes the publisher sent (content
//!   checked byte by byte: nothing lost, duplicated, reordered) and that a ping from the sink
//!   still reaches the publisher (node → encoder through the successor). `--haproxy-reload`
//!   adds the same run through HAProxy reloaded with `-sf` (it does not hand connections over;
//!   the old process keeps them).
//!
//! With no mode: `--memory --load --latency`. Run: `cargo bench --bench relay` (needs
//! /usr/sbin/haproxy).
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::{
    cell::RefCell,
    collections::HashMap,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

// The test harness's process helpers (CPU, memory, descriptors, signals, logs).
#[path = "../tests/common/mod.rs"]
mod common;
use common::procfs;

use control::{
    client::{spawn_client, ClientConfig, NodeControl},
    NodeState, Report,
};
use rml_rtmp::{
    handshake::{Handshake, HandshakeProcessResult, PeerType},
    sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
        PublishRequestType, ServerSession, ServerSessionConfig, ServerSessionEvent,
        ServerSessionResult,
    },
};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

const HAPROXY: &str = "/usr/sbin/haproxy";
const COMMAND: &str = "cargo bench --bench relay";
const USAGE: &str = "\
Usage: cargo bench --bench relay -- [MODE...] [OPTION...]

Modes (default: --memory --load --latency, edge against HAProxy):
  --memory             relay RSS per pinned idle publisher (at --conns publishers)
  --load               relay CPU at full speed (50 publishers) and at encoder rates (200 x 6 Mbps)
  --latency            publish setup latency, direct / HAProxy / edge (500 each)
  --handover N[,N...]  edge hand-over to a successor process with N pinned publishers (each N
                       on a fresh balancer), e.g. --handover 100,1000,10000

Options:
  --conns N            idle publishers for --memory (default 10000)
  --active N           publishers streaming during --handover (default 20; all if N is smaller)
  --rate-mbps X        bit rate of each streaming publisher in --handover (default 2)
  --usr2               hand over with kill -USR2 (the balancer starts its own binary again)
                       instead of starting a second `edge balancer --config SAME_FILE`
  --haproxy-reload     also run --handover through HAProxy reloaded with -sf, for comparison
  --no-fd-cap          do not scale N down to what RLIMIT_NOFILE allows (to see what breaks)
  -h, --help           this text

Environment:
  EDGE_BENCH_KEEP=1    keep the temporary directory (configs, relay logs) and print its path
  EDGE_BENCH_RUST_LOG  the balancer's RUST_LOG (default info), e.g. info,quinn_proto=trace
  EDGE_BENCH_WRAP      a command the balancer runs under, split on spaces, e.g. `heaptrack -o
                       /tmp/edge.heaptrack` (to see what its memory is); its RSS figures are
                       then the wrapper's, not the balancer's
";

/// Full-speed run: enough publishers to keep both relay threads busy.
const BLAST_CONNS: usize = 50;
/// Length of each measured window: long enough that the 10 ms CPU tick is < 1% of it.
const MEASURE: Duration = Duration::from_secs(10);
/// Traffic before the measured window starts, so connection setup is not in the figures.
const WARMUP: Duration = Duration::from_secs(1);
/// Bytes per write at full speed (what a relay reads at most per call: 16-64 KiB).
const BLAST_WRITE: usize = 64 * 1024;
/// Encoder-rate run: publishers and bit rate each (a 1080p30 H.264 contribution feed).
const PACED_CONNS: usize = 200;
const PACED_BPS: u64 = 6_000_000;
/// Encoders send a frame at a time: 30 fps.
const PACED_TICK: Duration = Duration::from_micros(33_333);
/// Sequential publish setups per target for the latency percentiles.
const LATENCY_SAMPLES: usize = 500;
/// Idle pinned publishers for the memory figure.
const MEM_CONNS: usize = 10_000;
/// Setups in flight while opening many publishers: overlaps placement round trips without
/// outrunning the listen backlogs (1024 for the sink).
const MEM_OPEN_CONCURRENCY: usize = 64;
/// After the last idle publisher is up, let the relays finish their per-connection work
/// before RSS is read.
const MEM_SETTLE: Duration = Duration::from_secs(1);
/// File descriptors this process (and the sink's) needs beyond one per publisher.
const FD_MARGIN: u64 = 500;
/// File descriptors a relay process needs beyond two per connection (listeners, epoll, log,
/// the control plane, the hand-over socket; edge has about 30 when idle).
const RELAY_FD_RESERVE: u64 = 100;

/// edge: starting, binding, and the fake node's first report over QUIC (the node client
/// retries with backoff up to 5 s, so a balancer that is slow to bind costs one retry).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// One publish setup through a relay on loopback takes milliseconds; this only catches a
/// stuck one (2 shared cores under load, edge's placement is bounded at 1.5 s per node).
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// All publishers of a load run being up (they open concurrently, placement included).
const ALL_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// After clients close, the relays close their node side; the sink must see it within this.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Publisher tasks end at cancellation; a task stuck in a write is aborted after this.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// haproxy `timeout connect` (edge's own node connect timeout is 3 s).
const HAPROXY_CONNECT_TIMEOUT: &str = "3s";
/// haproxy `timeout client/server`: longer than the bench, so it never cuts idle publishers
/// (edge has no idle timeout at all).
const HAPROXY_IDLE_TIMEOUT: &str = "1h";
/// Sink read buffer (one per sink thread, not per connection).
const SINK_BUF: usize = 64 * 1024;
/// Reads per wake-up in the sink before yielding, so one fast connection cannot starve others.
const SINK_READS_PER_WAKE: usize = 16;
/// What a publisher sends before `publish` is a few hundred bytes; bounds the sink's
/// byte-at-a-time parsing.
const MAX_BYTES_BEFORE_PUBLISH: usize = 64 * 1024;
/// First bytes of a PROXY v2 header.
const PROXY_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The argument that makes this binary the sink.
const SINK_CHILD_ARG: &str = "--sink-child";
/// Set to keep the temporary directory (configs, relay logs) for a look afterwards.
const KEEP_ENV: &str = "EDGE_BENCH_KEEP";
/// Overrides the balancer's RUST_LOG (default `info`), e.g. `info,quinn_proto=trace`.
const LOG_ENV: &str = "EDGE_BENCH_RUST_LOG";
/// A profiler the balancer runs under (see the help text).
const WRAP_ENV: &str = "EDGE_BENCH_WRAP";
/// Admin token in the bench's balancer config.
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

// Hand-over mode.

/// Stream keys of hand-over publishers start with this; the sink checks their bytes.
/// `ho-N-a-I` streams, `ho-N-i-I` is idle.
const HO_PREFIX: &str = "ho-";
/// Streaming publishers by default (the rest of the N are idle).
const HO_ACTIVE: usize = 20;
/// Bit rate of a streaming publisher by default.
const HO_RATE_BPS: f64 = 2_000_000.0;
/// What a publisher writes at a time: `u64` record number, `u64` send time (µs since the
/// epoch, wall clock: the sink is another process), then bytes that depend on their offset
/// in the stream. The sink checks every byte.
const RECORD: usize = 8192;
/// Phases of a hand-over run, as the sink's "epochs": 0 opening and warm-up, 1 the baseline
/// window, 2 from starting the successor to `HO_SETTLE` after it serves, 3 afterwards.
const EPOCHS: usize = 4;
const HO_WARMUP: Duration = Duration::from_secs(2);
const HO_BASELINE: Duration = Duration::from_secs(3);
const HO_SETTLE: Duration = Duration::from_secs(1);
const HO_AFTER: Duration = Duration::from_secs(3);
/// The successor serving: spawn, config, TLS, the whole transfer (30 s is the product's own
/// phase timeout).
const HO_TIMEOUT: Duration = Duration::from_secs(90);
/// Between admin API polls while waiting for the new pid.
const HO_POLL: Duration = Duration::from_millis(5);
/// The sink pings each streaming publisher this often during the run, writing each ping in
/// two pieces `PING_SPLIT_PAUSE` apart, so that a hand-over can find the balancer's node-side
/// chunk parser in the middle of a message.
const PING_EVERY: Duration = Duration::from_millis(100);
const PING_SPLIT_PAUSE: Duration = Duration::from_millis(20);
const PING_SPLIT_AT: usize = 7;
/// Idle publishers' last record and final ping, this many at a time.
const PROBE_CONCURRENCY: usize = 256;
/// Everything sent has arrived (the sink's counts match the publishers').
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// The old balancer after SIGTERM (it idles after a hand-over and should exit at once).
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The byte at offset `o` of a hand-over stream (outside the record header).
fn pattern(o: u64) -> u8 {
    (o.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8
}

fn fill_record(buf: &mut [u8], rec: u64) {
    buf[..8].copy_from_slice(&rec.to_be_bytes());
    buf[8..16].copy_from_slice(&now_us().to_be_bytes());
    let base = rec * RECORD as u64;
    for (j, b) in buf.iter_mut().enumerate().skip(16) {
        *b = pattern(base + j as u64);
    }
}

// ------------------------------------------------------------------------------------------
// Arguments

struct Args {
    memory: bool,
    load: bool,
    latency: bool,
    handover: Vec<usize>,
    conns: usize,
    active: usize,
    rate_bps: f64,
    usr2: bool,
    haproxy_reload: bool,
    no_fd_cap: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        memory: false,
        load: false,
        latency: false,
        handover: Vec::new(),
        conns: MEM_CONNS,
        active: HO_ACTIVE,
        rate_bps: HO_RATE_BPS,
        usr2: false,
        haproxy_reload: false,
        no_fd_cap: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let value = |it: &mut std::iter::Skip<std::env::Args>| {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let num = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{name}: not a number: {v}"))
        };
        match name.as_str() {
            // cargo bench passes --bench to harness = false binaries.
            "--bench" => {}
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--memory" => a.memory = true,
            "--load" => a.load = true,
            "--latency" => a.latency = true,
            "--handover" => {
                for n in value(&mut it)?.split(',') {
                    a.handover.push(num(n.trim().to_string())?);
                }
            }
            "--conns" => a.conns = num(value(&mut it)?)?,
            "--active" => a.active = num(value(&mut it)?)?,
            "--rate-mbps" => {
                let v = value(&mut it)?;
                a.rate_bps = v
                    .parse::<f64>()
                    .map_err(|_| format!("--rate-mbps: not a number: {v}"))?
                    * 1e6;
            }
            "--usr2" => a.usr2 = true,
            "--haproxy-reload" => a.haproxy_reload = true,
            "--no-fd-cap" => a.no_fd_cap = true,
            other => return Err(format!("unknown argument {other}\n\n{USAGE}")),
        }
    }
    if !(a.memory || a.load || a.latency || !a.handover.is_empty()) {
        a.memory = true;
        a.load = true;
        a.latency = true;
    }
    if a.handover.contains(&0) || a.conns == 0 {
        return Err("connection counts must be at least 1".into());
    }
    Ok(a)
}

// ------------------------------------------------------------------------------------------
// Processes

/// A child process killed and reaped on drop (also on panic).
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            _ => None,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("[bench] stopped {} (pid {})", self.name, self.child.id());
    }
}

/// A process that is not our child (a successor started by SIGUSR2), killed on drop.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = common::send_signal(self.0, "KILL");
        eprintln!("[bench] killed pid {}", self.0);
    }
}

/// Removed on drop (also on panic).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os(KEEP_ENV).is_some() {
            eprintln!(
                "[bench] {KEEP_ENV}: configs and logs kept in {}",
                self.0.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// The most connections that fit: this process holds one descriptor per publisher, the sink
/// (its own process) one per connection, a relay two per connection.
fn fit(n: usize, what: &str, no_cap: bool) -> usize {
    let soft = procfs::nofile_limits().0;
    let max =
        (soft.saturating_sub(RELAY_FD_RESERVE) / 2).min(soft.saturating_sub(FD_MARGIN)) as usize;
    if n <= max {
        return n;
    }
    if no_cap {
        eprintln!("[bench] {what}: {n} connections need more than RLIMIT_NOFILE {soft} in the relay (2 per connection + {RELAY_FD_RESERVE}); running {n} anyway (--no-fd-cap)");
        n
    } else {
        eprintln!("[bench] {what}: {n} connections do not fit RLIMIT_NOFILE {soft} (a relay holds 2 per connection + {RELAY_FD_RESERVE}): running {max}");
        max
    }
}

fn machine() -> (usize, String) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    (cores, model)
}

// ------------------------------------------------------------------------------------------
// The fake node: control-plane client

struct FakeNode {
    rtmp_addr: SocketAddr,
    reserves: AtomicU64,
    cancels: AtomicU64,
}

impl FakeNode {
    fn new(rtmp_addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            rtmp_addr,
            reserves: AtomicU64::new(0),
            cancels: AtomicU64::new(0),
        })
    }
}

impl NodeControl for FakeNode {
    fn report(&self) -> Report {
        Report {
            node_id: "n1".into(),
            seq: 0,
            rtmp_addr: self.rtmp_addr,
            srt_addr: self.rtmp_addr,
            http_addr: self.rtmp_addr,
            https_addr: None,
            state: NodeState::Ready,
            overloaded: false,
            // 100,000 streams: the memory run pins 10,000, each with a reservation.
            capacity_milli_units: 100_000_000,
            used_milli_units: 0,
            stream_milli_units: 1000,
            cpu: 0.0,
            streams: vec![],
            reservations: vec![],
            served: vec![],
            continuations: Default::default(),
            operations: false,
            blocked: Default::default(),
        }
    }
    fn reserve(&self, _: control::Reservation) -> control::client::ReserveFuture {
        self.reserves.fetch_add(1, Ordering::Relaxed);
        control::client::decided(Ok(()))
    }
    fn cancel(&self, _: u64) {
        self.cancels.fetch_add(1, Ordering::Relaxed);
    }
}

/// The fake node's control client for the balancer at `control_port`; stops at `shutdown`.
fn node_client(
    certs: &Path,
    control_port: u16,
    node: &Arc<FakeNode>,
    shutdown: &CancellationToken,
) -> impl Sized {
    let read = |f: &str| fs::read_to_string(certs.join(f)).expect("read cert");
    spawn_client(
        ClientConfig {
            balancers: vec![SocketAddr::from(([127, 0, 0, 1], control_port))],
            ca_pem: read("ca.pem"),
            cert_pem: read("node-n1.pem"),
            key_pem: read("node-n1.key"),
            report_interval: Duration::from_secs(1),
        },
        Arc::clone(node) as Arc<dyn NodeControl>,
        shutdown.clone(),
    )
    .expect("control client")
}

// ------------------------------------------------------------------------------------------
// The sink (a child process): PROXY v2 (optional), RTMP server up to publish, then read.

/// The sink's counters, as the parent sees them.
#[derive(Default, Clone, Copy, Serialize, Deserialize)]
struct SinkSnap {
    /// Payload bytes after `publish` was accepted.
    bytes: u64,
    /// Connections open now.
    open: u64,
    accepted: u64,
    /// Connections that started with a PROXY v2 header.
    proxied: u64,
    published: u64,
    failed: u64,
}

#[derive(Default)]
struct SinkStats {
    bytes: AtomicU64,
    open: AtomicU64,
    accepted: AtomicU64,
    proxied: AtomicU64,
    published: AtomicU64,
    failed: AtomicU64,
}

/// One hand-over connection at the sink.
#[derive(Default)]
struct ConnStats {
    bytes: AtomicU64,
    /// First offset whose byte was not what the publisher wrote there, plus one (0: none).
    mismatch_at: AtomicU64,
    closed: AtomicBool,
    error: Mutex<Option<String>>,
    pings_sent: AtomicU64,
    /// Per epoch: longest time between two wake-ups with data, µs.
    max_gap_us: [AtomicU64; EPOCHS],
    /// Per epoch: longest send → arrival of a record header, µs.
    max_delay_us: [AtomicU64; EPOCHS],
}

#[derive(Clone, Serialize, Deserialize)]
struct ConnSnap {
    key: String,
    bytes: u64,
    mismatch_at: Option<u64>,
    closed: bool,
    error: Option<String>,
    pings_sent: u64,
    max_gap_us: [u64; EPOCHS],
    max_delay_us: [u64; EPOCHS],
}

struct SinkShared {
    st: SinkStats,
    conns: Mutex<HashMap<String, Arc<ConnStats>>>,
    epoch: AtomicUsize,
    /// Bumped to make every hand-over connection send one ping.
    ping_all: watch::Sender<u64>,
    /// Streaming connections get split pings every `PING_EVERY` while this is on.
    pinging: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SinkShared {
    fn snap(&self) -> SinkSnap {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SinkSnap {
            bytes: l(&self.st.bytes),
            open: l(&self.st.open),
            accepted: l(&self.st.accepted),
            proxied: l(&self.st.proxied),
            published: l(&self.st.published),
            failed: l(&self.st.failed),
        }
    }

    fn command(&self, cmd: &str) -> String {
        match cmd {
            "stats" => serde_json::to_string(&self.snap()).unwrap_or_default(),
            "conns" => {
                let conns = lock(&self.conns);
                let v: Vec<ConnSnap> = conns
                    .iter()
                    .map(|(k, c)| ConnSnap {
                        key: k.clone(),
                        bytes: c.bytes.load(Ordering::Relaxed),
                        mismatch_at: match c.mismatch_at.load(Ordering::Relaxed) {
                            0 => None,
                            n => Some(n - 1),
                        },
                        closed: c.closed.load(Ordering::Relaxed),
                        error: lock(&c.error).clone(),
                        pings_sent: c.pings_sent.load(Ordering::Relaxed),
                        max_gap_us: std::array::from_fn(|i| {
                            c.max_gap_us[i].load(Ordering::Relaxed)
                        }),
                        max_delay_us: std::array::from_fn(|i| {
                            c.max_delay_us[i].load(Ordering::Relaxed)
                        }),
                    })
                    .collect();
                serde_json::to_string(&v).unwrap_or_default()
            }
            "epoch" => {
                let e = (self.epoch.load(Ordering::Relaxed) + 1).min(EPOCHS - 1);
                self.epoch.store(e, Ordering::Relaxed);
                e.to_string()
            }
            "ping" => {
                self.ping_all.send_modify(|g| *g += 1);
                "ok".into()
            }
            "pings on" => {
                self.pinging.send_replace(true);
                "ok".into()
            }
            "pings off" => {
                self.pinging.send_replace(false);
                "ok".into()
            }
            "forget" => {
                lock(&self.conns).clear();
                self.epoch.store(0, Ordering::Relaxed);
                "ok".into()
            }
            other => format!("error: unknown command {other}"),
        }
    }
}

thread_local! {
    static DISCARD: RefCell<Vec<u8>> = RefCell::new(vec![0u8; SINK_BUF]);
}

/// `relay --sink-child`: serve the sink on a free port, print its address, answer commands
/// on stdin (one line each way) until stdin closes.
fn sink_child_main() {
    let (cores, _) = machine();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("sink bind");
        let addr = listener.local_addr().expect("sink addr");
        let sh = Arc::new(SinkShared {
            st: SinkStats::default(),
            conns: Mutex::new(HashMap::new()),
            epoch: AtomicUsize::new(0),
            ping_all: watch::channel(0).0,
            pinging: watch::channel(false).0,
        });
        tokio::spawn(sink(listener, Arc::clone(&sh)));
        let mut out = tokio::io::stdout();
        let _ = out.write_all(format!("{addr}\n").as_bytes()).await;
        let _ = out.flush().await;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut reply = sh.command(line.trim());
            reply.push('\n');
            if out.write_all(reply.as_bytes()).await.is_err() || out.flush().await.is_err() {
                break;
            }
        }
    });
    // The parent is gone (or done): leave without waiting for the connections.
    std::process::exit(0);
}

/// The parent's handle on the sink process.
struct Sink {
    addr: SocketAddr,
    io: tokio::sync::Mutex<(
        tokio::process::ChildStdin,
        tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    )>,
    child: tokio::process::Child,
}

impl Sink {
    async fn start() -> Sink {
        let exe = std::env::current_exe().expect("bench binary path");
        let mut child = tokio::process::Command::new(exe)
            .arg(SINK_CHILD_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the sink process");
        let stdin = child.stdin.take().expect("sink stdin");
        let mut lines =
            tokio::io::BufReader::new(child.stdout.take().expect("sink stdout")).lines();
        let addr = lines
            .next_line()
            .await
            .ok()
            .flatten()
            .and_then(|l| l.trim().parse().ok())
            .expect("the sink's address");
        Sink {
            addr,
            io: tokio::sync::Mutex::new((stdin, lines)),
            child,
        }
    }
    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
    async fn cmd(&self, c: &str) -> String {
        let mut io = self.io.lock().await;
        io.0.write_all(format!("{c}\n").as_bytes())
            .await
            .expect("write to the sink");
        io.0.flush().await.expect("write to the sink");
        io.1.next_line()
            .await
            .ok()
            .flatten()
            .expect("the sink's answer")
    }
    async fn snap(&self) -> SinkSnap {
        serde_json::from_str(&self.cmd("stats").await).expect("sink stats")
    }
    async fn conns(&self) -> HashMap<String, ConnSnap> {
        let v: Vec<ConnSnap> =
            serde_json::from_str(&self.cmd("conns").await).expect("sink connections");
        v.into_iter().map(|c| (c.key.clone(), c)).collect()
    }
}

async fn sink(listener: TcpListener, sh: Arc<SinkShared>) {
    loop {
        let sock = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                eprintln!("[bench] sink accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        sh.st.accepted.fetch_add(1, Ordering::Relaxed);
        sh.st.open.fetch_add(1, Ordering::Relaxed);
        let sh = Arc::clone(&sh);
        tokio::spawn(async move {
            if sink_conn(sock, &sh).await.is_err() {
                sh.st.failed.fetch_add(1, Ordering::Relaxed);
            }
            sh.st.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), BoxErr> {
    let mut chunk = [0u8; 4096];
    let n = s.read(&mut chunk).await?;
    if n == 0 {
        return Err("closed during setup".into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

async fn sink_conn(mut s: TcpStream, sh: &SinkShared) -> Result<(), BoxErr> {
    let st = &sh.st;
    s.set_nodelay(true)?;
    let mut buf = Vec::new();
    read_more(&mut s, &mut buf).await?;
    // RTMP starts with version 3; a PROXY v2 header with "\r\n".
    if buf[0] == PROXY_SIG[0] {
        while buf.len() < 16 {
            read_more(&mut s, &mut buf).await?;
        }
        if buf[..12] != PROXY_SIG {
            return Err("bad PROXY signature".into());
        }
        let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        while buf.len() < len {
            read_more(&mut s, &mut buf).await?;
        }
        buf.drain(..len);
        st.proxied.fetch_add(1, Ordering::Relaxed);
    }
    let mut hs = Handshake::new(PeerType::Server);
    let mut input = buf;
    let remaining = loop {
        if !input.is_empty() {
            match hs.process_bytes(&input)? {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    s.write_all(&response_bytes).await?;
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    s.write_all(&response_bytes).await?;
                    break remaining_bytes;
                }
            }
            input.clear();
        }
        read_more(&mut s, &mut input).await?;
    };
    let (mut session, initial) = ServerSession::new(ServerSessionConfig::new())?;
    for r in initial {
        if let ServerSessionResult::OutboundResponse(p) = r {
            s.write_all(&p.bytes).await?;
        }
    }
    // Before publish, one byte at a time, as the ingest node does: each command is answered
    // (connect accepted) before the next is parsed, because rml_rtmp drops a publish parsed
    // before its connect is accepted, and a balancer that answered the encoder itself replays
    // connect ... publish in one go.
    let mut input = remaining;
    let mut seen = 0usize;
    let (key, after_publish) = 'setup: loop {
        for (i, b) in input.iter().enumerate() {
            seen += 1;
            if seen > MAX_BYTES_BEFORE_PUBLISH {
                return Err("too much data before publish".into());
            }
            let mut pending = session.handle_input(std::slice::from_ref(b))?;
            let mut published = None;
            while !pending.is_empty() {
                for r in std::mem::take(&mut pending) {
                    match r {
                        ServerSessionResult::OutboundResponse(p) => s.write_all(&p.bytes).await?,
                        ServerSessionResult::RaisedEvent(
                            ServerSessionEvent::ConnectionRequested { request_id, .. },
                        ) => pending.extend(session.accept_request(request_id)?),
                        ServerSessionResult::RaisedEvent(
                            ServerSessionEvent::PublishStreamRequested {
                                request_id,
                                stream_key,
                                ..
                            },
                        ) => {
                            pending.extend(session.accept_request(request_id)?);
                            published = Some(stream_key);
                        }
                        _ => {}
                    }
                }
            }
            if let Some(key) = published {
                break 'setup (key, input.get(i + 1..).unwrap_or_default().to_vec());
            }
        }
        input.clear();
        read_more(&mut s, &mut input).await?;
    };
    st.published.fetch_add(1, Ordering::Relaxed);
    st.bytes
        .fetch_add(after_publish.len() as u64, Ordering::Relaxed);
    if key.starts_with(HO_PREFIX) {
        return ho_conn(s, session, key, after_publish, sh).await;
    }
    drop(session);
    // Discard everything with one buffer per thread (10,000 idle connections hold none).
    loop {
        s.readable().await?;
        for _ in 0..SINK_READS_PER_WAKE {
            let r = DISCARD.with(|b| s.try_read(&mut b.borrow_mut()));
            match r {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    st.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Checks a hand-over stream byte by byte against what the publisher wrote (`fill_record`).
#[derive(Default)]
struct Verifier {
    off: u64,
    ts: u64,
}

impl Verifier {
    fn feed(&mut self, data: &[u8], epoch: usize, cs: &ConnStats) {
        let mut bad = cs.mismatch_at.load(Ordering::Relaxed) != 0;
        for &b in data {
            let pos = (self.off % RECORD as u64) as usize;
            let expected = if pos < 8 {
                Some((self.off / RECORD as u64).to_be_bytes()[pos])
            } else if pos < 16 {
                self.ts = (self.ts << 8) | u64::from(b);
                if pos == 15 {
                    let delay = now_us().saturating_sub(self.ts);
                    cs.max_delay_us[epoch].fetch_max(delay, Ordering::Relaxed);
                    self.ts = 0;
                }
                None
            } else {
                Some(pattern(self.off))
            };
            if !bad && expected.is_some_and(|e| e != b) {
                cs.mismatch_at.store(self.off + 1, Ordering::Relaxed);
                bad = true;
            }
            self.off += 1;
        }
    }
}

async fn ho_conn(
    s: TcpStream,
    session: ServerSession,
    key: String,
    first: Vec<u8>,
    sh: &SinkShared,
) -> Result<(), BoxErr> {
    let cs = Arc::new(ConnStats::default());
    cs.bytes.store(first.len() as u64, Ordering::Relaxed);
    lock(&sh.conns).insert(key.clone(), Arc::clone(&cs));
    let active = key.contains("-a-");
    let r = ho_loop(s, session, active, &first, sh, &cs).await;
    cs.closed.store(true, Ordering::Relaxed);
    if let Err(e) = &r {
        *lock(&cs.error) = Some(e.to_string());
    }
    r
}

async fn ho_loop(
    mut s: TcpStream,
    mut session: ServerSession,
    active: bool,
    first: &[u8],
    sh: &SinkShared,
    cs: &ConnStats,
) -> Result<(), BoxErr> {
    let mut v = Verifier::default();
    v.feed(first, sh.epoch.load(Ordering::Relaxed), cs);
    let mut last_read = (!first.is_empty()).then(Instant::now);
    let mut ping_rx = sh.ping_all.subscribe();
    ping_rx.borrow_and_update();
    let mut on_rx = sh.pinging.subscribe();
    let mut every = tokio::time::interval(PING_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The second piece of a split ping, and when to write it.
    let mut half: Option<(tokio::time::Instant, Vec<u8>)> = None;
    loop {
        let pinging = active && *on_rx.borrow_and_update();
        let half_at = half.as_ref().map(|(t, _)| *t);
        tokio::select! {
            r = s.readable() => {
                r?;
                let epoch = sh.epoch.load(Ordering::Relaxed);
                let mut woke = false;
                for _ in 0..SINK_READS_PER_WAKE {
                    let r = DISCARD.with(|b| {
                        let mut b = b.borrow_mut();
                        let r = s.try_read(&mut b);
                        if let Ok(n) = r {
                            v.feed(b.get(..n).unwrap_or_default(), epoch, cs);
                        }
                        r
                    });
                    match r {
                        Ok(0) => return Ok(()),
                        Ok(n) => {
                            if !woke {
                                woke = true;
                                let now = Instant::now();
                                if let Some(l) = last_read {
                                    let gap = now.duration_since(l).as_micros() as u64;
                                    cs.max_gap_us[epoch].fetch_max(gap, Ordering::Relaxed);
                                }
                                last_read = Some(now);
                            }
                            cs.bytes.fetch_add(n as u64, Ordering::Relaxed);
                            sh.st.bytes.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            r = ping_rx.changed() => {
                if r.is_err() {
                    return Ok(());
                }
                if let Some((_, rest)) = half.take() {
                    s.write_all(&rest).await?;
                }
                let (p, _) = session.send_ping_request()?;
                s.write_all(&p.bytes).await?;
                cs.pings_sent.fetch_add(1, Ordering::Relaxed);
            }
            _ = every.tick(), if pinging && half.is_none() => {
                let (p, _) = session.send_ping_request()?;
                let at = PING_SPLIT_AT.min(p.bytes.len());
                s.write_all(&p.bytes[..at]).await?;
                half = Some((tokio::time::Instant::now() + PING_SPLIT_PAUSE, p.bytes[at..].to_vec()));
                cs.pings_sent.fetch_add(1, Ordering::Relaxed);
            }
            _ = tokio::time::sleep_until(half_at.unwrap_or_else(tokio::time::Instant::now)), if half_at.is_some() => {
                if let Some((_, rest)) = half.take() {
                    s.write_all(&rest).await?;
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Publishers

/// Connect and publish `key` on app `live`; returns the socket once the server (the sink,
/// through the relay) has answered NetStream.Publish.Start.
async fn publish(addr: SocketAddr, key: String) -> Result<TcpStream, BoxErr> {
    publish_session(addr, key).await.map(|(s, _)| s)
}

/// `publish`, keeping the client session (to parse what the server sends afterwards).
async fn publish_session(
    addr: SocketAddr,
    key: String,
) -> Result<(TcpStream, ClientSession), BoxErr> {
    tokio::time::timeout(SETUP_TIMEOUT, publish_inner(addr, key))
        .await
        .map_err(|_| -> BoxErr { "publish setup timed out".into() })?
}

/// Publishers come from many addresses, as encoders do: the balancer caps connections per
/// address (`balancer::rtmp::MAX_CONNECTIONS_PER_IP`). Each client binds its own source in
/// 127.1.0.0/16 (all of 127/8 is loopback on Linux).
fn next_source() -> SocketAddr {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % (250 * 250);
    SocketAddr::from(([127, 1, (n / 250) as u8, (n % 250 + 1) as u8], 0))
}

async fn publish_inner(
    addr: SocketAddr,
    key: String,
) -> Result<(TcpStream, ClientSession), BoxErr> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(next_source())?;
    let mut s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1()?).await?;
    let mut input = Vec::new();
    let remaining = loop {
        read_more(&mut s, &mut input).await?;
        match hs.process_bytes(&input)? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                s.write_all(&response_bytes).await?;
                break remaining_bytes;
            }
        }
        input.clear();
    };
    let (mut session, initial) = ClientSession::new(ClientSessionConfig::new())?;
    for r in initial {
        if let ClientSessionResult::OutboundResponse(p) = r {
            s.write_all(&p.bytes).await?;
        }
    }
    if let ClientSessionResult::OutboundResponse(p) = session.request_connection("live".into())? {
        s.write_all(&p.bytes).await?;
    }
    let mut input = remaining;
    loop {
        if !input.is_empty() {
            let results = session.handle_input(&input)?;
            input.clear();
            let mut published = false;
            for r in results {
                match r {
                    ClientSessionResult::OutboundResponse(p) => s.write_all(&p.bytes).await?,
                    ClientSessionResult::RaisedEvent(
                        ClientSessionEvent::ConnectionRequestAccepted,
                    ) => {
                        if let ClientSessionResult::OutboundResponse(p) =
                            session.request_publishing(key.clone(), PublishRequestType::Live)?
                        {
                            s.write_all(&p.bytes).await?;
                        }
                    }
                    ClientSessionResult::RaisedEvent(
                        ClientSessionEvent::PublishRequestAccepted,
                    ) => published = true,
                    ClientSessionResult::RaisedEvent(
                        ClientSessionEvent::ConnectionRequestRejected { description },
                    ) => return Err(format!("connect rejected: {description}").into()),
                    _ => {}
                }
            }
            if published {
                return Ok((s, session));
            }
        }
        read_more(&mut s, &mut input).await?;
    }
}

/// Bytes a publisher sends after `publish`: RTMP-ish (a type-0 video chunk header on csid 6
/// every 4 KiB) but nobody parses them.
fn junk(len: usize) -> Arc<Vec<u8>> {
    let mut v = vec![0u8; len];
    for (i, b) in v.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0];
    }
    for chunk in v.chunks_mut(4096) {
        chunk[0] = 0x06;
    }
    Arc::new(v)
}

#[derive(Default)]
struct LoadCounters {
    up: AtomicU64,
    failed: AtomicU64,
}

/// Run `n` publishers against `addr` until `stop`; `pace` = bytes per tick, None = flat out.
fn start_load(
    addr: SocketAddr,
    n: usize,
    pace: Option<usize>,
    tag: &'static str,
    stop: CancellationToken,
) -> (JoinSet<()>, Arc<LoadCounters>) {
    let counters = Arc::new(LoadCounters::default());
    let mut set = JoinSet::new();
    let data = junk(pace.unwrap_or(BLAST_WRITE));
    for i in 0..n {
        let (stop, data, counters) = (stop.clone(), Arc::clone(&data), Arc::clone(&counters));
        set.spawn(async move {
            let mut s = match publish(addr, format!("bench-{tag}-{i}")).await {
                Ok(s) => s,
                Err(e) => {
                    if counters.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("[bench] {tag} publisher failed: {e}");
                    }
                    return;
                }
            };
            counters.up.fetch_add(1, Ordering::Relaxed);
            match pace {
                None => loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        r = s.write_all(&data) => if r.is_err() { break },
                    }
                },
                Some(_) => {
                    // Spread the publishers over one tick, as independent encoders are.
                    let offset = PACED_TICK.mul_f64(i as f64 / n as f64);
                    let mut tick =
                        tokio::time::interval_at(tokio::time::Instant::now() + offset, PACED_TICK);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tick.tick() => {
                                if s.write_all(&data).await.is_err() { break }
                            }
                        }
                    }
                }
            }
        });
    }
    (set, counters)
}

async fn stop_load(stop: CancellationToken, mut set: JoinSet<()>) {
    stop.cancel();
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                set.abort_all();
                break;
            }
        }
    }
}

/// Wait until the sink has no connection open (the relay has closed every node side).
async fn drain(sink: &Sink) -> bool {
    let t0 = Instant::now();
    loop {
        let open = sink.snap().await.open;
        if open == 0 {
            return true;
        }
        if t0.elapsed() > DRAIN_TIMEOUT {
            eprintln!("[bench] sink still has {open} connections open after {DRAIN_TIMEOUT:?}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_up(c: &LoadCounters, n: usize) {
    let t0 = Instant::now();
    while (c.up.load(Ordering::Relaxed) + c.failed.load(Ordering::Relaxed)) < n as u64
        && t0.elapsed() < ALL_UP_TIMEOUT
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------------------------------
// Measurements

#[derive(Default, Clone, Copy)]
struct LoadResult {
    gbit_per_s: f64,
    cpu_s: f64,
    wall_s: f64,
    gbit: f64,
    up: u64,
    failed: u64,
}

async fn load_run(
    addr: SocketAddr,
    pid: u32,
    n: usize,
    pace: Option<usize>,
    tag: &'static str,
    sink: &Sink,
) -> LoadResult {
    let stop = CancellationToken::new();
    let (set, counters) = start_load(addr, n, pace, tag, stop.clone());
    wait_up(&counters, n).await;
    tokio::time::sleep(WARMUP).await;
    let b0 = sink.snap().await.bytes;
    let (c0, t0) = (procfs::cpu_seconds(pid), Instant::now());
    tokio::time::sleep(MEASURE).await;
    let b1 = sink.snap().await.bytes;
    let (c1, wall) = (procfs::cpu_seconds(pid), t0.elapsed().as_secs_f64());
    stop_load(stop, set).await;
    drain(sink).await;
    let gbit = (b1 - b0) as f64 * 8.0 / 1e9;
    LoadResult {
        gbit_per_s: gbit / wall,
        cpu_s: c1 - c0,
        wall_s: wall,
        gbit,
        up: counters.up.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
    }
}

#[derive(Default, Clone, Copy)]
struct Latency {
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    ok: usize,
    failed: usize,
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        f64::NAN
    } else {
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }
}

/// `LATENCY_SAMPLES` sequential publish setups per target, interleaved round-robin so that
/// noise from the shared machine hits every target alike.
async fn latency_run(targets: &[(&str, SocketAddr)], sink: &Sink) -> Vec<Latency> {
    let mut samples = vec![Vec::with_capacity(LATENCY_SAMPLES); targets.len()];
    let mut failed = vec![0usize; targets.len()];
    for i in 0..LATENCY_SAMPLES {
        for (t, (tag, addr)) in targets.iter().enumerate() {
            let t0 = Instant::now();
            match publish(*addr, format!("bench-lat-{tag}-{i}")).await {
                Ok(s) => {
                    samples[t].push(t0.elapsed().as_secs_f64() * 1e3);
                    drop(s);
                }
                Err(e) => {
                    if failed[t] == 0 {
                        eprintln!("[bench] latency {tag}: {e}");
                    }
                    failed[t] += 1;
                }
            }
        }
    }
    drain(sink).await;
    samples
        .into_iter()
        .zip(failed)
        .map(|(mut v, failed)| {
            v.sort_by(f64::total_cmp);
            Latency {
                p50_ms: quantile(&v, 0.50),
                p90_ms: quantile(&v, 0.90),
                p99_ms: quantile(&v, 0.99),
                ok: v.len(),
                failed,
            }
        })
        .collect()
}

#[derive(Default, Clone, Copy)]
struct Mem {
    kib_per_conn: f64,
    before_mib: f64,
    after_mib: f64,
    pinned: usize,
    open_s: f64,
}

async fn memory_run(addr: SocketAddr, pid: u32, n: usize, tag: &'static str, sink: &Sink) -> Mem {
    let before = procfs::rss_kib(pid);
    let limit = Arc::new(Semaphore::new(MEM_OPEN_CONCURRENCY));
    let mut set = JoinSet::new();
    let t0 = Instant::now();
    for i in 0..n {
        let limit = Arc::clone(&limit);
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.ok()?;
            publish(addr, format!("bench-mem-{tag}-{i}")).await.ok()
        });
    }
    let mut held = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        if let Ok(Some(s)) = r {
            held.push(s);
        }
    }
    let open_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(MEM_SETTLE).await;
    let after = procfs::rss_kib(pid);
    let pinned = held.len();
    if pinned < n {
        eprintln!("[bench] {tag}: only {pinned}/{n} idle publishers pinned");
    }
    drop(held);
    drain(sink).await;
    Mem {
        kib_per_conn: (after - before) / pinned.max(1) as f64,
        before_mib: before / 1024.0,
        after_mib: after / 1024.0,
        pinned,
        open_s,
    }
}

// ------------------------------------------------------------------------------------------
// Relays

fn start_haproxy(
    dir: &Path,
    listen: u16,
    sink: SocketAddr,
    threads: usize,
    maxconn: usize,
    replace_pid: Option<u32>,
) -> Proc {
    let cfg = format!(
        "global\n    maxconn {maxconn}\n    nbthread {threads}\n\ndefaults\n    mode tcp\n    timeout connect {HAPROXY_CONNECT_TIMEOUT}\n    timeout client {HAPROXY_IDLE_TIMEOUT}\n    timeout server {HAPROXY_IDLE_TIMEOUT}\n\nfrontend rtmp\n    bind 127.0.0.1:{listen}\n    maxconn {maxconn}\n    default_backend nodes\n\nbackend nodes\n    server n1 {sink} send-proxy-v2\n"
    );
    let path = dir.join("haproxy.cfg");
    fs::write(&path, cfg).expect("write haproxy.cfg");
    let log_name = match replace_pid {
        None => "haproxy.log",
        Some(_) => "haproxy2.log",
    };
    let log = fs::File::create(dir.join(log_name)).expect("haproxy log");
    let mut cmd = Command::new(HAPROXY);
    cmd.arg("-db").arg("-f").arg(&path);
    if let Some(pid) = replace_pid {
        // A reload: the new process binds beside the old one, which stops listening and
        // lives on until its connections end.
        cmd.arg("-sf").arg(pid.to_string());
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("spawn haproxy");
    Proc {
        name: "haproxy",
        child,
    }
}

/// HAProxy's `maxconn` for `n` connections: some room, but within RLIMIT_NOFILE, which
/// HAProxy refuses to start without (it needs about 2 × maxconn + 20 descriptors).
fn haproxy_maxconn(n: usize) -> usize {
    let soft = procfs::nofile_limits().0 as usize;
    (n + 100).min(soft.saturating_sub(60) / 2)
}

/// A balancer config the bench wrote, and its addresses.
struct EdgeCfg {
    path: PathBuf,
    rtmp: SocketAddr,
    admin: SocketAddr,
    control_port: u16,
}

fn edge_config(dir: &Path, certs: &Path) -> EdgeCfg {
    let (rtmp, control, admin) = (
        common::free_tcp_port(),
        common::free_udp_port(),
        common::free_tcp_port(),
    );
    let cfg = format!(
        "[balancer]\nid = \"b1\"\nlost_after = \"5s\"\nreservation_ttl = \"10s\"\nreconnect_window = \"10s\"\nhandover_socket = \"{c}/b1.sock\"\n\n[listen]\nrtmp = \"127.0.0.1:{rtmp}\"\nsrt = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{admin}\"\ncontrol = \"127.0.0.1:{control}\"\n\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n\n[tls]\nca = \"{c}/ca.pem\"\ncert = \"{c}/balancer-b1.pem\"\nkey = \"{c}/balancer-b1.key\"\n",
        common::free_udp_port(),
        common::free_tcp_port(),
        c = certs.display()
    );
    let path = dir.join("balancer.toml");
    fs::write(&path, cfg).expect("write balancer.toml");
    EdgeCfg {
        path,
        rtmp: SocketAddr::from(([127, 0, 0, 1], rtmp)),
        admin: SocketAddr::from(([127, 0, 0, 1], admin)),
        control_port: control,
    }
}

fn start_edge(cfg: &EdgeCfg, log: &Path) -> Proc {
    let log = fs::File::create(log).expect("edge log");
    let wrap = std::env::var(WRAP_ENV).unwrap_or_default();
    let mut wrap = wrap.split_whitespace();
    let mut cmd = match wrap.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(wrap).arg(env!("CARGO_BIN_EXE_edge"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_edge")),
    };
    let child = cmd
        .args(["balancer", "--config"])
        .arg(&cfg.path)
        // Production default level: a few lines per connection.
        .env(
            "RUST_LOG",
            std::env::var(LOG_ENV).unwrap_or_else(|_| "info".into()),
        )
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log)
        .spawn()
        .expect("spawn edge balancer");
    Proc {
        name: "edge balancer",
        child,
    }
}

/// Wait until a publish through `addr` reaches the sink (for edge: the node has reported).
async fn wait_ready(addr: SocketAddr, p: &mut Proc, log: &Path) {
    let t0 = Instant::now();
    loop {
        if let Some(st) = p.exited() {
            panic!(
                "{} exited with {st}:\n{}",
                p.name,
                common::tail_file(log, 40)
            );
        }
        let last = match publish(addr, "bench-probe".into()).await {
            Ok(_) => return,
            Err(e) => e.to_string(),
        };
        assert!(
            t0.elapsed() < START_TIMEOUT,
            "{} not relaying after {START_TIMEOUT:?} (last: {last}):\n{}",
            p.name,
            common::tail_file(log, 40)
        );
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// `GET path` on the balancer's admin API; the JSON body.
async fn admin_get(addr: SocketAddr, path: &str) -> Result<serde_json::Value, BoxErr> {
    let run = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        if !text.starts_with("HTTP/1.1 200") {
            return Err(format!(
                "admin {path}: {}",
                text.lines().next().unwrap_or("no answer")
            )
            .into());
        }
        let (start, end) = (text.find('{'), text.rfind('}'));
        match (start, end) {
            (Some(a), Some(b)) if a < b => Ok(serde_json::from_str(&text[a..=b])?),
            _ => Err(format!("admin {path}: no JSON body").into()),
        }
    };
    tokio::time::timeout(SETUP_TIMEOUT, run)
        .await
        .map_err(|_| -> BoxErr { "admin request timed out".into() })?
}

/// The first log line containing `needle`, waiting up to `wait` for it.
async fn log_line(path: &Path, needle: &str, wait: Duration) -> Option<String> {
    let t0 = Instant::now();
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return Some(l.to_string());
        }
        if t0.elapsed() > wait {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `name=VALUE` in a tracing line.
fn field(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

/// WARN and ERROR lines of a log.
fn problems(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(str::to_string)
        .collect()
}

// ------------------------------------------------------------------------------------------
// Hand-over

#[derive(Clone, Copy, PartialEq)]
enum HoKind {
    /// A second `edge balancer --config SAME_FILE`.
    EdgeSpawn,
    /// `kill -USR2` on the running balancer.
    EdgeUsr2,
    /// `haproxy -sf OLD_PID`.
    HaproxyReload,
}

impl HoKind {
    fn label(self) -> &'static str {
        match self {
            HoKind::EdgeSpawn => "edge",
            HoKind::EdgeUsr2 => "edge (SIGUSR2)",
            HoKind::HaproxyReload => "HAProxy -sf",
        }
    }
}

/// A hand-over publisher's side of the books.
#[derive(Default)]
struct PubStats {
    sent: AtomicU64,
    /// Pings from the sink parsed by the client session (each makes it answer a pong).
    pongs: AtomicU64,
    failed: Mutex<Option<String>>,
}

impl PubStats {
    fn fail(&self, why: String) {
        lock(&self.failed).get_or_insert(why);
    }
    /// Bytes from the server: count the pings.
    fn on_down(&self, session: &mut ClientSession, data: &[u8]) -> bool {
        match session.handle_input(data) {
            Ok(results) => {
                let pongs = results
                    .iter()
                    .filter(|r| matches!(r, ClientSessionResult::OutboundResponse(_)))
                    .count();
                self.pongs.fetch_add(pongs as u64, Ordering::Relaxed);
                true
            }
            Err(e) => {
                self.fail(format!("RTMP from the server: {e:?}"));
                false
            }
        }
    }
}

struct HoConn {
    key: String,
    stats: Arc<PubStats>,
}

/// One publisher's open connection.
struct Held {
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    session: ClientSession,
    next_record: u64,
}

/// Stream records every `tick` until `stop_writing`, reading what the server sends until
/// `done`; returns the connection.
async fn stream_records(
    mut h: Held,
    ps: Arc<PubStats>,
    tick: Duration,
    offset: Duration,
    stop_writing: CancellationToken,
    done: CancellationToken,
) -> Held {
    let mut record = vec![0u8; RECORD];
    let mut buf = vec![0u8; 4096];
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + offset, tick);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let writing = !stop_writing.is_cancelled();
        tokio::select! {
            _ = done.cancelled() => break,
            _ = stop_writing.cancelled(), if writing => {}
            _ = every.tick(), if writing => {
                fill_record(&mut record, h.next_record);
                if let Err(e) = h.wr.write_all(&record).await {
                    ps.fail(format!("write: {e}"));
                    break;
                }
                h.next_record += 1;
                ps.sent.fetch_add(RECORD as u64, Ordering::Relaxed);
            }
            r = h.rd.read(&mut buf) => match r {
                Ok(0) => { ps.fail("closed by the relay".into()); break }
                Ok(n) => if !ps.on_down(&mut h.session, &buf[..n]) { break },
                Err(e) => { ps.fail(format!("read: {e}")); break }
            },
        }
    }
    h
}

/// An idle publisher: one more record, then read until the sink's ping arrives.
async fn probe(h: &mut Held, ps: &PubStats) {
    let mut record = vec![0u8; RECORD];
    fill_record(&mut record, h.next_record);
    if let Err(e) = h.wr.write_all(&record).await {
        ps.fail(format!("write after the hand-over: {e}"));
        return;
    }
    h.next_record += 1;
    ps.sent.fetch_add(RECORD as u64, Ordering::Relaxed);
    let want = ps.pongs.load(Ordering::Relaxed) + 1;
    let mut buf = vec![0u8; 4096];
    let t0 = Instant::now();
    while ps.pongs.load(Ordering::Relaxed) < want {
        match tokio::time::timeout(
            SETTLE_TIMEOUT.saturating_sub(t0.elapsed()),
            h.rd.read(&mut buf),
        )
        .await
        {
            Err(_) => {
                ps.fail("no ping from the sink after the hand-over".into());
                return;
            }
            Ok(Ok(0)) => {
                ps.fail("closed by the relay".into());
                return;
            }
            Ok(Ok(n)) => {
                if !ps.on_down(&mut h.session, &buf[..n]) {
                    return;
                }
            }
            Ok(Err(e)) => {
                ps.fail(format!("read: {e}"));
                return;
            }
        }
    }
}

#[derive(Default)]
struct HoResult {
    label: &'static str,
    wanted: usize,
    pinned: usize,
    setup_failed: usize,
    active: usize,
    open_s: f64,
    /// Successor started → admin API answers with its pid, ms.
    switch_ms: Option<f64>,
    /// `ms=` of the old process's "handed everything over" and the successor's "took over".
    old_ms: Option<u64>,
    new_ms: Option<u64>,
    old_rtmp: Option<u64>,
    new_rtmp: Option<u64>,
    /// Streaming connections: max and median (across them) of the longest arrival gap, per
    /// epoch, ms.
    gap_max_ms: [f64; EPOCHS],
    gap_p50_ms: [f64; EPOCHS],
    delay_max_ms: [f64; EPOCHS],
    /// Every connection: open on both ends and answered the last ping.
    alive: usize,
    /// Bytes the sink got == bytes sent, and every byte as written.
    exact: usize,
    /// Pings the sink sent == pings the publisher parsed.
    pings_ok: usize,
    pings_sent: u64,
    bad: Vec<String>,
    new_publish_ms: Option<f64>,
    serving_count: Option<u64>,
    old_exit_ms: Option<f64>,
    fds: (usize, usize, usize),
    rss_mib: (f64, f64),
    successor_cpu_s: f64,
    log_problems: Vec<String>,
    failure: Option<String>,
    mib_sent: f64,
}

struct BenchEnv {
    dir: PathBuf,
    certs: PathBuf,
    cores: usize,
}

/// What is being handed over: the running relay and how to reach it.
struct Relay {
    old: Proc,
    addr: SocketAddr,
    edge: Option<EdgeCfg>,
    log: PathBuf,
}

async fn handover_run(
    kind: HoKind,
    wanted: usize,
    args: &Args,
    sink: &Sink,
    env: &BenchEnv,
) -> HoResult {
    let n = fit(wanted, kind.label(), args.no_fd_cap);
    let mut res = HoResult {
        label: kind.label(),
        wanted,
        ..Default::default()
    };
    let dir = env.dir.join(format!(
        "ho-{}-{n}",
        kind.label().split(' ').next().unwrap_or("x")
    ));
    fs::create_dir_all(&dir).expect("run dir");
    let shutdown = CancellationToken::new();
    let node = FakeNode::new(sink.addr);
    let mut client = None;
    let mut relay = match kind {
        HoKind::EdgeSpawn | HoKind::EdgeUsr2 => {
            let cfg = edge_config(&dir, &env.certs);
            let log = dir.join("edge.log");
            let old = start_edge(&cfg, &log);
            client = Some(node_client(&env.certs, cfg.control_port, &node, &shutdown));
            Relay {
                old,
                addr: cfg.rtmp,
                edge: Some(cfg),
                log,
            }
        }
        HoKind::HaproxyReload => {
            let port = common::free_tcp_port();
            let old = start_haproxy(&dir, port, sink.addr, env.cores, haproxy_maxconn(n), None);
            Relay {
                old,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                edge: None,
                log: dir.join("haproxy.log"),
            }
        }
    };
    wait_ready(relay.addr, &mut relay.old, &relay.log).await;
    drain(sink).await;
    let old_pid = relay.old.pid();
    if let Some(cfg) = &relay.edge {
        let pid = admin_get(cfg.admin, "/api/v1/balancer")
            .await
            .ok()
            .and_then(|v| v["pid"].as_u64());
        assert_eq!(
            pid,
            Some(u64::from(old_pid)),
            "the admin API names another process"
        );
    }

    // N publishers; the first `active` stream.
    let active = args.active.min(n);
    res.active = active;
    eprintln!(
        "[bench] {}: hand-over with {n} pinned publishers, {active} streaming at {:.1} Mbit/s",
        kind.label(),
        args.rate_bps / 1e6
    );
    let limit = Arc::new(Semaphore::new(MEM_OPEN_CONCURRENCY));
    let mut set = JoinSet::new();
    let t0 = Instant::now();
    for i in 0..n {
        let limit = Arc::clone(&limit);
        let addr = relay.addr;
        let key = format!("{HO_PREFIX}{n}-{}-{i}", if i < active { "a" } else { "i" });
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.ok();
            let r = publish_session(addr, key.clone()).await;
            (i, key, r)
        });
    }
    let mut conns: Vec<Option<(HoConn, Held)>> = (0..n).map(|_| None).collect();
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        let Ok((i, key, r)) = r else { continue };
        match r {
            Ok((s, session)) => {
                let (rd, wr) = s.into_split();
                conns[i] = Some((
                    HoConn {
                        key,
                        stats: Arc::new(PubStats::default()),
                    },
                    Held {
                        rd,
                        wr,
                        session,
                        next_record: 0,
                    },
                ));
            }
            Err(e) => {
                res.setup_failed += 1;
                first_err.get_or_insert(e.to_string());
            }
        }
    }
    res.open_s = t0.elapsed().as_secs_f64();
    if let Some(e) = first_err {
        eprintln!(
            "[bench] {}: {} of {n} publishers failed to set up (first: {e})",
            kind.label(),
            res.setup_failed
        );
    }
    res.pinned = n - res.setup_failed;

    // Idle ones send one record now; streaming ones start.
    let tick = Duration::from_secs_f64(RECORD as f64 * 8.0 / args.rate_bps);
    let stop_writing = CancellationToken::new();
    let done = CancellationToken::new();
    let mut streams = JoinSet::new();
    let mut idle: Vec<(HoConn, Held)> = Vec::new();
    let mut books: Vec<(String, Arc<PubStats>, bool)> = Vec::new();
    for (i, c) in conns.into_iter().enumerate() {
        let Some((c, mut h)) = c else { continue };
        books.push((c.key.clone(), Arc::clone(&c.stats), i < active));
        if i < active {
            let offset = tick.mul_f64(i as f64 / active.max(1) as f64);
            streams.spawn(stream_records(
                h,
                Arc::clone(&c.stats),
                tick,
                offset,
                stop_writing.clone(),
                done.clone(),
            ));
        } else {
            let mut record = vec![0u8; RECORD];
            fill_record(&mut record, 0);
            match h.wr.write_all(&record).await {
                Ok(()) => {
                    h.next_record = 1;
                    c.stats.sent.fetch_add(RECORD as u64, Ordering::Relaxed);
                }
                Err(e) => c.stats.fail(format!("first write: {e}")),
            }
            idle.push((c, h));
        }
    }
    sink.cmd("pings on").await;
    tokio::time::sleep(HO_WARMUP).await;
    sink.cmd("epoch").await; // 1: baseline
    res.fds.0 = procfs::fd_count(old_pid);
    res.rss_mib.0 = procfs::rss_kib(old_pid) / 1024.0;
    tokio::time::sleep(HO_BASELINE).await;
    sink.cmd("epoch").await; // 2: the hand-over

    // The hand-over.
    let mut successor: Option<Proc> = None;
    let mut foreign: Option<KillOnDrop> = None;
    let mut new_pid = None;
    let t_switch = Instant::now();
    match kind {
        HoKind::EdgeSpawn => {
            let cfg = relay.edge.as_ref().expect("edge config");
            successor = Some(start_edge(cfg, &dir.join("edge2.log")));
        }
        HoKind::EdgeUsr2 => {
            assert!(
                common::send_signal(old_pid, "USR2").is_ok(),
                "kill -USR2 {old_pid}"
            );
        }
        HoKind::HaproxyReload => {
            let p = start_haproxy(
                &dir,
                relay.addr.port(),
                sink.addr,
                env.cores,
                haproxy_maxconn(n),
                Some(old_pid),
            );
            new_pid = Some(p.pid());
            successor = Some(p);
        }
    }
    if let Some(cfg) = &relay.edge {
        loop {
            if let Some(p) = successor.as_mut() {
                if let Some(st) = p.exited() {
                    res.failure = Some(format!(
                        "the successor exited with {st} before serving:\n{}",
                        common::tail_file(&dir.join("edge2.log"), 20)
                    ));
                    break;
                }
            }
            if t_switch.elapsed() > HO_TIMEOUT {
                res.failure = Some(format!("no new pid on the admin API after {HO_TIMEOUT:?}"));
                break;
            }
            match admin_get(cfg.admin, "/api/v1/balancer").await {
                Ok(v) => match v["pid"].as_u64() {
                    Some(pid) if pid != u64::from(old_pid) => {
                        res.switch_ms = Some(t_switch.elapsed().as_secs_f64() * 1e3);
                        new_pid = Some(pid as u32);
                        if kind == HoKind::EdgeUsr2 {
                            foreign = Some(KillOnDrop(pid as u32));
                        }
                        break;
                    }
                    _ => {}
                },
                Err(e) => eprintln!("[bench] admin API during the hand-over: {e}"),
            }
            tokio::time::sleep(HO_POLL).await;
        }
    } else {
        // HAProxy has no admin API here: the new process is up once it listens (its own
        // bind); the old one stops listening at its signal and keeps its connections.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Some(pid) = new_pid {
        res.successor_cpu_s = procfs::cpu_seconds(pid);
    }
    tokio::time::sleep(HO_SETTLE).await;
    sink.cmd("epoch").await; // 3: after
    tokio::time::sleep(HO_AFTER).await;

    // Every connection: the last records and a ping each way round.
    sink.cmd("pings off").await;
    stop_writing.cancel();
    tokio::time::sleep(PING_SPLIT_PAUSE * 3).await;
    sink.cmd("ping").await;
    let limit = Arc::new(Semaphore::new(PROBE_CONCURRENCY));
    let mut probes = JoinSet::new();
    for (c, mut h) in idle {
        let limit = Arc::clone(&limit);
        probes.spawn(async move {
            let _permit = limit.acquire_owned().await.ok();
            probe(&mut h, &c.stats).await;
            h
        });
    }
    let mut held: Vec<Held> = Vec::with_capacity(n);
    while let Some(r) = probes.join_next().await {
        if let Ok(h) = r {
            held.push(h);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    done.cancel();
    while let Some(r) = streams.join_next().await {
        if let Ok(h) = r {
            held.push(h);
        }
    }

    // Books: wait until the sink has what was sent (or stops getting more).
    let t0 = Instant::now();
    let at_sink = loop {
        let got = sink.conns().await;
        let settled = books.iter().all(|(k, ps, _)| {
            got.get(k)
                .is_some_and(|c| c.bytes >= ps.sent.load(Ordering::Relaxed))
        });
        if settled || t0.elapsed() > SETTLE_TIMEOUT {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut gaps: [Vec<f64>; EPOCHS] = Default::default();
    let mut delays: [Vec<f64>; EPOCHS] = Default::default();
    for (key, ps, is_active) in &books {
        let sent = ps.sent.load(Ordering::Relaxed);
        res.mib_sent += sent as f64 / (1024.0 * 1024.0);
        let pongs = ps.pongs.load(Ordering::Relaxed);
        let pub_fail = lock(&ps.failed).clone();
        let Some(c) = at_sink.get(key) else {
            res.bad.push(format!("{key}: never reached the sink"));
            continue;
        };
        res.pings_sent += c.pings_sent;
        let open = pub_fail.is_none() && !c.closed;
        if open {
            res.alive += 1;
        }
        let exact = c.bytes == sent && c.mismatch_at.is_none();
        if exact {
            res.exact += 1;
        }
        if c.pings_sent == pongs {
            res.pings_ok += 1;
        }
        if !open || !exact || c.pings_sent != pongs {
            res.bad.push(format!(
                "{key}: sent {sent} B, sink got {} B{}; pings {} sent, {pongs} parsed; publisher: {}; sink: {}",
                c.bytes,
                c.mismatch_at.map(|o| format!(", first wrong byte at offset {o}")).unwrap_or_default(),
                c.pings_sent,
                pub_fail.as_deref().unwrap_or("open"),
                if c.closed { c.error.clone().unwrap_or_else(|| "closed by the relay".into()) } else { "open".into() },
            ));
        }
        if *is_active {
            for e in 0..EPOCHS {
                gaps[e].push(c.max_gap_us[e] as f64 / 1e3);
                delays[e].push(c.max_delay_us[e] as f64 / 1e3);
            }
        }
    }
    for e in 0..EPOCHS {
        gaps[e].sort_by(f64::total_cmp);
        delays[e].sort_by(f64::total_cmp);
        res.gap_max_ms[e] = gaps[e].last().copied().unwrap_or(f64::NAN);
        res.gap_p50_ms[e] = quantile(&gaps[e], 0.5);
        res.delay_max_ms[e] = delays[e].last().copied().unwrap_or(f64::NAN);
    }

    // After: what each process holds, new publishes, the logs, the old process's exit.
    if let Some(pid) = new_pid {
        res.fds.1 = procfs::fd_count(pid);
        res.rss_mib.1 = procfs::rss_kib(pid) / 1024.0;
    }
    res.fds.2 = procfs::fd_count(old_pid);
    // Before the new publish below, which the count would include while it closes.
    if let Some(cfg) = &relay.edge {
        res.serving_count = admin_get(cfg.admin, "/api/v1/balancer")
            .await
            .ok()
            .and_then(|v| v["rtmp_connections"].as_u64());
    }
    let t0 = Instant::now();
    match publish(relay.addr, "bench-after-handover".into()).await {
        Ok(_) => res.new_publish_ms = Some(t0.elapsed().as_secs_f64() * 1e3),
        Err(e) => res
            .bad
            .push(format!("a new publish after the hand-over failed: {e}")),
    }
    if relay.edge.is_some() {
        let new_log = match kind {
            HoKind::EdgeSpawn => dir.join("edge2.log"),
            _ => relay.log.clone(),
        };
        let wait = if res.failure.is_some() {
            Duration::ZERO
        } else {
            Duration::from_secs(5)
        };
        if let Some(l) = log_line(&relay.log, "handed everything over to the successor", wait).await
        {
            res.old_ms = field(&l, "ms");
            res.old_rtmp = field(&l, "rtmp");
        }
        if let Some(l) = log_line(&new_log, "took over from the previous balancer", wait).await {
            res.new_ms = field(&l, "ms");
            res.new_rtmp = field(&l, "rtmp");
        }
        res.log_problems = problems(&relay.log);
        if kind == HoKind::EdgeSpawn {
            res.log_problems.extend(
                problems(&new_log)
                    .into_iter()
                    .map(|l| format!("(successor) {l}")),
            );
        }
        if res.failure.is_none() {
            // It handed everything over and idles: SIGTERM ends it at once.
            let t0 = Instant::now();
            let _ = common::send_signal(old_pid, "TERM");
            while relay.old.exited().is_none() && t0.elapsed() < EXIT_TIMEOUT {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if relay.old.exited().is_some() {
                res.old_exit_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
    } else {
        res.log_problems = problems(&relay.log);
    }
    drop(held);
    drop(relay);
    drop(successor);
    drop(foreign);
    shutdown.cancel();
    drop(client);
    drain(sink).await;
    sink.cmd("forget").await;
    res
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

fn print_handover(results: &[HoResult], args: &Args, cores: usize, model: &str) {
    let ns: Vec<String> = args.handover.iter().map(|n| n.to_string()).collect();
    println!("\n## Balancer hand-over\n");
    println!(
        "command: {COMMAND} -- --handover {}{}{}{}",
        ns.join(","),
        if args.active != HO_ACTIVE {
            format!(" --active {}", args.active)
        } else {
            String::new()
        },
        if args.usr2 { " --usr2" } else { "" },
        if args.haproxy_reload {
            " --haproxy-reload"
        } else {
            ""
        },
    );
    println!("machine: {cores} cores, {model}");
    println!(
        "streaming publishers: {:.1} Mbit/s each ({RECORD}-byte records every {:.1} ms); pings from the sink every {} ms in two pieces {} ms apart\n",
        args.rate_bps / 1e6,
        RECORD as f64 * 8.0 / args.rate_bps * 1e3,
        PING_EVERY.as_millis(),
        PING_SPLIT_PAUSE.as_millis()
    );
    let head: Vec<String> = results
        .iter()
        .map(|r| format!("{} N={}", r.label, r.pinned + r.setup_failed))
        .collect();
    println!("| | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(results.len()));
    let row = |name: &str, f: &dyn Fn(&HoResult) -> String| {
        let cells: Vec<String> = results.iter().map(f).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    row("pinned publishers (streaming)", &|r| {
        format!("{} ({})", r.pinned, r.active)
    });
    row(
        "hand-over: successor started → admin API reports its pid, ms",
        &|r| ms(r.switch_ms),
    );
    row("old process's log: handed everything over, ms=", &|r| {
        r.old_ms.map(|v| v.to_string()).unwrap_or("-".into())
    });
    row("successor's log: took over, ms=", &|r| {
        r.new_ms.map(|v| v.to_string()).unwrap_or("-".into())
    });
    row(
        "relays handed over / taken over (logs)",
        &|r| match (r.old_rtmp, r.new_rtmp) {
            (None, None) => "-".into(),
            (a, b) => format!(
                "{} / {}",
                a.map(|v| v.to_string()).unwrap_or("?".into()),
                b.map(|v| v.to_string()).unwrap_or("?".into())
            ),
        },
    );
    row(
        "longest arrival gap before (3 s window), max over streams, ms",
        &|r| format!("{:.0}", r.gap_max_ms[1]),
    );
    row(
        "longest arrival gap across the hand-over, max over streams, ms",
        &|r| format!("{:.0}", r.gap_max_ms[2]),
    );
    row(
        "longest arrival gap across the hand-over, median over streams, ms",
        &|r| format!("{:.0}", r.gap_p50_ms[2]),
    );
    row("longest arrival gap after (3 s window), max, ms", &|r| {
        format!("{:.0}", r.gap_max_ms[3])
    });
    row(
        "longest send → sink delay before / across the hand-over, ms",
        &|r| format!("{:.1} / {:.1}", r.delay_max_ms[1], r.delay_max_ms[2]),
    );
    row("connections open at both ends afterwards", &|r| {
        format!("{}/{}", r.alive, r.pinned)
    });
    row(
        "bytes at the sink == bytes sent, every byte checked",
        &|r| format!("{}/{}", r.exact, r.pinned),
    );
    row(
        "node → encoder: every ping from the sink parsed by the encoder",
        &|r| format!("{}/{} ({} pings)", r.pings_ok, r.pinned, r.pings_sent),
    );
    row("new publish after the hand-over, ms", &|r| {
        ms(r.new_publish_ms)
    });
    row(
        "old process: exit after SIGTERM, ms",
        &|r| ms(r.old_exit_ms),
    );
    row("descriptors: old before / new after / old after", &|r| {
        format!("{} / {} / {}", r.fds.0, r.fds.1, r.fds.2)
    });
    row("RSS old before / new after, MiB", &|r| {
        format!("{:.1} / {:.1}", r.rss_mib.0, r.rss_mib.1)
    });
    println!();
    for r in results {
        println!(
            "- {} N={} requested: opened in {:.1} s ({} failed to set up); {:.1} MiB sent; successor CPU until serving {:.2} s; admin API afterwards: {} RTMP connections; WARN/ERROR log lines: {}",
            r.label,
            r.wanted,
            r.open_s,
            r.setup_failed,
            r.mib_sent,
            r.successor_cpu_s,
            r.serving_count.map(|v| v.to_string()).unwrap_or("-".into()),
            r.log_problems.len()
        );
        if let Some(f) = &r.failure {
            println!("  - HAND-OVER FAILED: {f}");
        }
        for b in r.bad.iter().take(10) {
            println!("  - {b}");
        }
        if r.bad.len() > 10 {
            println!("  - ... {} more", r.bad.len() - 10);
        }
        for l in r.log_problems.iter().take(10) {
            println!("  - log: {l}");
        }
    }
}

// ------------------------------------------------------------------------------------------

#[derive(Default)]
struct RelayResults {
    blast: LoadResult,
    paced: LoadResult,
    mem: Mem,
}

async fn bench_relay(
    name: &'static str,
    addr: SocketAddr,
    pid: u32,
    args: &Args,
    mem_conns: usize,
    sink: &Sink,
) -> RelayResults {
    let mut r = RelayResults::default();
    if args.memory {
        eprintln!("[bench] {name}: memory, {mem_conns} idle publishers");
        r.mem = memory_run(addr, pid, mem_conns, name, sink).await;
    }
    if args.load {
        let paced_bytes = (PACED_BPS as f64 / 8.0 * PACED_TICK.as_secs_f64()).round() as usize;
        eprintln!("[bench] {name}: full speed, {BLAST_CONNS} publishers");
        r.blast = load_run(addr, pid, BLAST_CONNS, None, name, sink).await;
        eprintln!(
            "[bench] {name}: encoder rate, {PACED_CONNS} x {} Mbps",
            PACED_BPS / 1_000_000
        );
        r.paced = load_run(addr, pid, PACED_CONNS, Some(paced_bytes), name, sink).await;
    }
    r
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".into()
    }
}

struct Comparison {
    lat: Vec<Latency>,
    h: RelayResults,
    e: RelayResults,
    mem_conns: usize,
}

async fn compare(args: &Args, sink: &Sink, env: &BenchEnv) -> Comparison {
    let mem_conns = if args.memory {
        fit(args.conns, "memory", args.no_fd_cap)
    } else {
        0
    };
    let cfg = edge_config(&env.dir, &env.certs);
    let mut edge = start_edge(&cfg, &env.dir.join("edge.log"));
    let node = FakeNode::new(sink.addr);
    let shutdown = CancellationToken::new();
    let client = node_client(&env.certs, cfg.control_port, &node, &shutdown);
    let hap_port = common::free_tcp_port();
    let mut hap = start_haproxy(
        &env.dir,
        hap_port,
        sink.addr,
        env.cores,
        haproxy_maxconn(mem_conns.max(PACED_CONNS)),
        None,
    );
    let edge_addr = cfg.rtmp;
    let hap_addr = SocketAddr::from(([127, 0, 0, 1], hap_port));
    wait_ready(hap_addr, &mut hap, &env.dir.join("haproxy.log")).await;
    wait_ready(edge_addr, &mut edge, &env.dir.join("edge.log")).await;
    drain(sink).await;
    let proxied0 = sink.snap().await.proxied;

    let h = bench_relay("haproxy", hap_addr, hap.pid(), args, mem_conns, sink).await;
    let e = bench_relay("edge", edge_addr, edge.pid(), args, mem_conns, sink).await;
    let lat = if args.latency {
        eprintln!(
            "[bench] setup latency: {LATENCY_SAMPLES} sequential publishes per target, interleaved"
        );
        latency_run(
            &[
                ("direct", sink.addr),
                ("haproxy", hap_addr),
                ("edge", edge_addr),
            ],
            sink,
        )
        .await
    } else {
        vec![Latency::default(); 3]
    };
    shutdown.cancel();
    let s = sink.snap().await;
    eprintln!(
        "[bench] sink: {} accepted, {} with PROXY v2 ({} during the runs), {} published, {} failed; node: {} reservations, {} cancels",
        s.accepted,
        s.proxied,
        s.proxied - proxied0,
        s.published,
        s.failed,
        node.reserves.load(Ordering::Relaxed),
        node.cancels.load(Ordering::Relaxed),
    );
    drop(client);
    drop(hap);
    drop(edge);
    Comparison {
        lat,
        h,
        e,
        mem_conns,
    }
}

fn print_comparison(c: &Comparison, args: &Args, cores: usize, model: &str) {
    let (h, e) = (&c.h, &c.e);
    let (direct, hl, el) = (c.lat[0], c.lat[1], c.lat[2]);
    let per_gbit = |r: &LoadResult| r.cpu_s / r.gbit;
    let pct = |r: &LoadResult| r.cpu_s / r.wall_s * 100.0;
    println!("\n## Balancer relay vs HAProxy\n");
    let mut modes = Vec::new();
    for (on, m) in [
        (args.memory, "--memory"),
        (args.load, "--load"),
        (args.latency, "--latency"),
    ] {
        if on {
            modes.push(m);
        }
    }
    let all = args.memory && args.load && args.latency;
    println!(
        "command: {COMMAND}{}{}",
        if all {
            String::new()
        } else {
            format!(" -- {}", modes.join(" "))
        },
        if args.conns != MEM_CONNS && args.memory {
            format!(" --conns {}", args.conns)
        } else {
            String::new()
        }
    );
    println!("machine: {cores} cores, {model}");
    println!(
        "haproxy: {} (nbthread {cores}); edge: tokio, {cores} workers, RUST_LOG=info\n",
        Command::new(HAPROXY)
            .arg("-v")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string))
            .unwrap_or_default()
    );
    println!("| | direct | HAProxy | edge | edge / HAProxy |");
    println!("|---|---|---|---|---|");
    if args.load {
        println!(
            "| full speed, {BLAST_CONNS} publishers: relayed Gbit/s | | {:.2} | {:.2} | {} |",
            h.blast.gbit_per_s,
            e.blast.gbit_per_s,
            ratio(e.blast.gbit_per_s, h.blast.gbit_per_s)
        );
        println!(
            "| full speed: relay CPU-s per Gbit | | {:.3} | {:.3} | {} |",
            per_gbit(&h.blast),
            per_gbit(&e.blast),
            ratio(per_gbit(&e.blast), per_gbit(&h.blast))
        );
        println!(
            "| {PACED_CONNS} x {} Mbps: delivered Gbit/s | | {:.3} | {:.3} | |",
            PACED_BPS / 1_000_000,
            h.paced.gbit_per_s,
            e.paced.gbit_per_s
        );
        println!(
            "| {PACED_CONNS} x {} Mbps: relay CPU % (100 = one core) | | {:.1} | {:.1} | {} |",
            PACED_BPS / 1_000_000,
            pct(&h.paced),
            pct(&e.paced),
            ratio(pct(&e.paced), pct(&h.paced))
        );
    }
    if args.latency {
        for (q, f) in [
            ("p50", (|l: &Latency| l.p50_ms) as fn(&Latency) -> f64),
            ("p90", |l: &Latency| l.p90_ms),
            ("p99", |l: &Latency| l.p99_ms),
        ] {
            println!(
                "| publish setup {q}, ms ({LATENCY_SAMPLES} sequential each) | {:.2} | {:.2} | {:.2} | {} |",
                f(&direct),
                f(&hl),
                f(&el),
                ratio(f(&el), f(&hl))
            );
        }
    }
    if args.memory {
        println!(
            "| RSS per pinned idle publisher at {}, KiB | | {:.1} | {:.1} | {} |",
            c.mem_conns,
            h.mem.kib_per_conn,
            e.mem.kib_per_conn,
            ratio(e.mem.kib_per_conn, h.mem.kib_per_conn)
        );
    }
    println!();
    for (name, r, l) in [("HAProxy", h, &hl), ("edge", e, &el)] {
        let mut parts = Vec::new();
        if args.load {
            parts.push(format!(
                "full speed {:.1} Gbit in {:.1} s for {:.2} CPU-s ({}/{} up); paced {:.2} CPU-s in {:.1} s ({}/{} up)",
                r.blast.gbit, r.blast.wall_s, r.blast.cpu_s, r.blast.up, r.blast.up + r.blast.failed,
                r.paced.cpu_s, r.paced.wall_s, r.paced.up, r.paced.up + r.paced.failed,
            ));
        }
        if args.latency {
            parts.push(format!("latency {} ok, {} failed", l.ok, l.failed));
        }
        if args.memory {
            parts.push(format!(
                "RSS {:.1} -> {:.1} MiB with {} pinned (opened in {:.1} s)",
                r.mem.before_mib, r.mem.after_mib, r.mem.pinned, r.mem.open_s
            ));
        }
        println!("- {name}: {}", parts.join("; "));
    }
    if args.latency {
        println!(
            "- direct latency: {} ok, {} failed",
            direct.ok, direct.failed
        );
    }
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some(SINK_CHILD_ARG) {
        sink_child_main();
        return;
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let (cores, model) = machine();
    let soft = procfs::raise_nofile();
    eprintln!(
        "[bench] RLIMIT_NOFILE {soft} (hard {})",
        procfs::nofile_limits().1
    );
    let tmp =
        TempDir(std::env::temp_dir().join(format!("edge-relay-bench-{}", std::process::id())));
    fs::create_dir_all(&tmp.0).expect("temp dir");
    let certs = tmp.0.join("certs");
    let out = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["certs", "--out"])
        .arg(&certs)
        .args(["--node", "n1", "--balancer", "b1"])
        .output()
        .expect("run edge certs");
    assert!(
        out.status.success(),
        "edge certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = BenchEnv {
        dir: tmp.0.clone(),
        certs,
        cores,
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("runtime");
    let (cmp, ho) = rt.block_on(async {
        let sink = Sink::start().await;
        eprintln!("[bench] sink process {} on {}", sink.pid(), sink.addr);
        let cmp = if args.memory || args.load || args.latency {
            Some(compare(&args, &sink, &env).await)
        } else {
            None
        };
        let mut ho = Vec::new();
        for &n in &args.handover {
            let kind = if args.usr2 {
                HoKind::EdgeUsr2
            } else {
                HoKind::EdgeSpawn
            };
            ho.push(handover_run(kind, n, &args, &sink, &env).await);
            if args.haproxy_reload {
                ho.push(handover_run(HoKind::HaproxyReload, n, &args, &sink, &env).await);
            }
        }
        drop(sink);
        (cmp, ho)
    });
    rt.shutdown_timeout(JOIN_TIMEOUT);
    drop(tmp);
    if let Some(c) = &cmp {
        print_comparison(c, &args, cores, &model);
    }
    if !ho.is_empty() {
        print_handover(&ho, &args, cores, &model);
    }
    println!(
        "\ntotal bench time {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
