//! Relay benchmark: the real `edge balancer` against HAProxy (`mode tcp`, `send-proxy-v2`)
//! relaying the same RTMP publishers to the same sink, on the same machine in the same run.
//!
//! The "node" is a fake that lives in this process: a control-plane client
//! (`control::client::spawn_client`) reporting one huge, ready node whose RTMP address is the
//! sink, and accepting every reservation; plus the sink, a minimal RTMP server (PROXY v2 header
//! when present, RTMP handshake, accepts `connect` and `publish`, then reads and discards).
//! Clients are minimal RTMP publishers (handshake, `connect` to `live`, `publish`), then send
//! junk bytes (neither relay parses what follows `publish`). Speaking real RTMP up to the
//! publish keeps the bench valid whether the balancer relays bytes from the first one or
//! terminates the RTMP opening itself to learn the stream key.
//!
//! Prints, as a table: (1) relay CPU seconds per relayed Gbit at full speed (50 publishers
//! writing as fast as they can) and relay CPU % at encoder rates (200 × 6 Mbps); (2) publish
//! setup latency (client connect() to `NetStream.Publish.Start`), p50/p90/p99, direct, through
//! HAProxy and through edge; (3) relay RSS per pinned idle publisher at 5,000 publishers.
//!
//! Run: `cargo bench --bench relay` (needs /usr/sbin/haproxy; about 2 minutes).
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::{
    cell::RefCell,
    fs,
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

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
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

const HAPROXY: &str = "/usr/sbin/haproxy";
const COMMAND: &str = "cargo bench --bench relay";

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
const MEM_CONNS: usize = 5_000;
/// Setups in flight while opening the idle publishers: overlaps placement round trips
/// without outrunning the listen backlogs (1024 for the sink).
const MEM_OPEN_CONCURRENCY: usize = 64;
/// After the last idle publisher is up, let the relays finish their per-connection work
/// before RSS is read.
const MEM_SETTLE: Duration = Duration::from_secs(1);
/// File descriptors this process needs beyond two per idle publisher (client + sink side).
const FD_MARGIN: u64 = 500;

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
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
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

/// Removed on drop (also on panic).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process (all threads), in seconds.
fn cpu_seconds(pid: u32, tck: f64) -> f64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let Some((_, after)) = stat.rsplit_once(") ") else {
        return f64::NAN;
    };
    let f: Vec<&str> = after.split_whitespace().collect();
    // After "pid (comm) ": state is field 0, utime 11, stime 12.
    let get = |i: usize| {
        f.get(i)
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (get(11) + get(12)) / tck
}

fn rss_kib(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

fn nofile_limits() -> (u64, u64) {
    let text = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with("Max open files"));
    let nums: Vec<u64> = line
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    (
        nums.first().copied().unwrap_or(1024),
        nums.get(1).copied().unwrap_or(1024),
    )
}

/// Raise our soft RLIMIT_NOFILE towards `want` (children inherit it) with util-linux
/// `prlimit`; returns the soft limit in force afterwards.
fn raise_nofile(want: u64) -> u64 {
    let (soft, hard) = nofile_limits();
    if soft >= want {
        return soft;
    }
    let target = want.min(hard);
    let _ = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={target}:{hard}"),
        ])
        .status();
    nofile_limits().0
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free tcp port")
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free udp port")
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

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ------------------------------------------------------------------------------------------
// The fake node: control-plane client

struct FakeNode {
    rtmp_addr: SocketAddr,
    reserves: AtomicU64,
    cancels: AtomicU64,
}

impl NodeControl for FakeNode {
    fn report(&self) -> Report {
        Report {
            node_id: "n1".into(),
            seq: 0,
            rtmp_addr: self.rtmp_addr,
            srt_addr: self.rtmp_addr,
            http_addr: self.rtmp_addr,
            state: NodeState::Ready,
            overloaded: false,
            // 100,000 streams: the memory run pins 5,000, each with a reservation.
            capacity_milli_units: 100_000_000,
            used_milli_units: 0,
            stream_milli_units: 1000,
            cpu: 0.0,
            streams: vec![],
            reservations: vec![],
            served: vec![],
            continuations: Default::default(),
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

// ------------------------------------------------------------------------------------------
// The sink: PROXY v2 (optional), RTMP server up to publish, then discard.

#[derive(Default)]
struct SinkStats {
    /// Payload bytes after `publish` was accepted.
    bytes: AtomicU64,
    /// Connections open now.
    open: AtomicU64,
    accepted: AtomicU64,
    /// Connections that started with a PROXY v2 header.
    proxied: AtomicU64,
    published: AtomicU64,
    failed: AtomicU64,
}

thread_local! {
    static DISCARD: RefCell<Vec<u8>> = RefCell::new(vec![0u8; SINK_BUF]);
}

async fn sink(listener: TcpListener, st: Arc<SinkStats>) {
    loop {
        let sock = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                eprintln!("[bench] sink accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        st.accepted.fetch_add(1, Ordering::Relaxed);
        st.open.fetch_add(1, Ordering::Relaxed);
        let st = Arc::clone(&st);
        tokio::spawn(async move {
            if sink_conn(sock, &st).await.is_err() {
                st.failed.fetch_add(1, Ordering::Relaxed);
            }
            st.open.fetch_sub(1, Ordering::Relaxed);
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

async fn sink_conn(mut s: TcpStream, st: &SinkStats) -> Result<(), BoxErr> {
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
    let after_publish = 'setup: loop {
        for (i, b) in input.iter().enumerate() {
            seen += 1;
            if seen > MAX_BYTES_BEFORE_PUBLISH {
                return Err("too much data before publish".into());
            }
            let mut pending = session.handle_input(std::slice::from_ref(b))?;
            let mut published = false;
            while !pending.is_empty() {
                for r in std::mem::take(&mut pending) {
                    match r {
                        ServerSessionResult::OutboundResponse(p) => s.write_all(&p.bytes).await?,
                        ServerSessionResult::RaisedEvent(
                            ServerSessionEvent::ConnectionRequested { request_id, .. },
                        ) => pending.extend(session.accept_request(request_id)?),
                        ServerSessionResult::RaisedEvent(
                            ServerSessionEvent::PublishStreamRequested { request_id, .. },
                        ) => {
                            pending.extend(session.accept_request(request_id)?);
                            published = true;
                        }
                        _ => {}
                    }
                }
            }
            if published {
                break 'setup input.len() - i - 1;
            }
        }
        input.clear();
        read_more(&mut s, &mut input).await?;
    };
    st.bytes.fetch_add(after_publish as u64, Ordering::Relaxed);
    drop(session);
    st.published.fetch_add(1, Ordering::Relaxed);
    // Discard everything with one buffer per thread (5,000 idle connections hold none).
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

// ------------------------------------------------------------------------------------------
// Publishers

/// Connect and publish `key` on app `live`; returns the socket once the server (the sink,
/// through the relay) has answered NetStream.Publish.Start.
async fn publish(addr: SocketAddr, key: String) -> Result<TcpStream, BoxErr> {
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

async fn publish_inner(addr: SocketAddr, key: String) -> Result<TcpStream, BoxErr> {
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
                    ) => {
                        return Ok(s);
                    }
                    ClientSessionResult::RaisedEvent(
                        ClientSessionEvent::ConnectionRequestRejected { description },
                    ) => return Err(format!("connect rejected: {description}").into()),
                    _ => {}
                }
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
async fn drain(st: &SinkStats) -> bool {
    let t0 = Instant::now();
    while st.open.load(Ordering::Relaxed) > 0 {
        if t0.elapsed() > DRAIN_TIMEOUT {
            eprintln!(
                "[bench] sink still has {} connections open after {DRAIN_TIMEOUT:?}",
                st.open.load(Ordering::Relaxed)
            );
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
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
    st: &SinkStats,
    tck: f64,
) -> LoadResult {
    let stop = CancellationToken::new();
    let (set, counters) = start_load(addr, n, pace, tag, stop.clone());
    wait_up(&counters, n).await;
    tokio::time::sleep(WARMUP).await;
    let (b0, c0, t0) = (
        st.bytes.load(Ordering::Relaxed),
        cpu_seconds(pid, tck),
        Instant::now(),
    );
    tokio::time::sleep(MEASURE).await;
    let (b1, c1, wall) = (
        st.bytes.load(Ordering::Relaxed),
        cpu_seconds(pid, tck),
        t0.elapsed().as_secs_f64(),
    );
    stop_load(stop, set).await;
    drain(st).await;
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

/// `LATENCY_SAMPLES` sequential publish setups per target, interleaved round-robin so that
/// noise from the shared machine hits every target alike.
async fn latency_run(targets: &[(&str, SocketAddr)], st: &SinkStats) -> Vec<Latency> {
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
    drain(st).await;
    samples
        .into_iter()
        .zip(failed)
        .map(|(mut v, failed)| {
            v.sort_by(f64::total_cmp);
            let q = |p: f64| {
                if v.is_empty() {
                    f64::NAN
                } else {
                    v[((v.len() - 1) as f64 * p).round() as usize]
                }
            };
            Latency {
                p50_ms: q(0.50),
                p90_ms: q(0.90),
                p99_ms: q(0.99),
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

async fn memory_run(
    addr: SocketAddr,
    pid: u32,
    n: usize,
    tag: &'static str,
    st: &SinkStats,
) -> Mem {
    let before = rss_kib(pid);
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
    let after = rss_kib(pid);
    let pinned = held.len();
    if pinned < n {
        eprintln!("[bench] {tag}: only {pinned}/{n} idle publishers pinned");
    }
    drop(held);
    drain(st).await;
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
) -> Proc {
    let cfg = format!(
        "global\n    maxconn {maxconn}\n    nbthread {threads}\n\ndefaults\n    mode tcp\n    timeout connect {HAPROXY_CONNECT_TIMEOUT}\n    timeout client {HAPROXY_IDLE_TIMEOUT}\n    timeout server {HAPROXY_IDLE_TIMEOUT}\n\nfrontend rtmp\n    bind 127.0.0.1:{listen}\n    maxconn {maxconn}\n    default_backend nodes\n\nbackend nodes\n    server n1 {sink} send-proxy-v2\n"
    );
    let path = dir.join("haproxy.cfg");
    fs::write(&path, cfg).expect("write haproxy.cfg");
    let log = fs::File::create(dir.join("haproxy.log")).expect("haproxy log");
    let child = Command::new(HAPROXY)
        .arg("-db")
        .arg("-f")
        .arg(&path)
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

fn start_edge(dir: &Path, certs: &Path, rtmp: u16, control: u16) -> Proc {
    let cfg = format!(
        "[balancer]\nid = \"b1\"\nlost_after = \"5s\"\nreservation_ttl = \"10s\"\nreconnect_window = \"10s\"\nhandover_socket = \"{c}/b1.sock\"\n\n[listen]\nrtmp = \"127.0.0.1:{rtmp}\"\nsrt = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\ncontrol = \"127.0.0.1:{control}\"\n\n[admin]\ntoken = \"bench-admin-token-0123456789\"\n\n[tls]\nca = \"{c}/ca.pem\"\ncert = \"{c}/balancer-b1.pem\"\nkey = \"{c}/balancer-b1.key\"\n",
        free_udp_port(),
        free_tcp_port(),
        free_tcp_port(),
        c = certs.display()
    );
    let path = dir.join("balancer.toml");
    fs::write(&path, cfg).expect("write balancer.toml");
    let log = fs::File::create(dir.join("edge.log")).expect("edge log");
    let child = Command::new(env!("CARGO_BIN_EXE_edge"))
        .args(["balancer", "--config"])
        .arg(&path)
        // Production default level: a few lines per connection.
        .env("RUST_LOG", "info")
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
            panic!("{} exited with {st}:\n{}", p.name, tail(log, 40));
        }
        let last = match publish(addr, "bench-probe".into()).await {
            Ok(_) => return,
            Err(e) => e.to_string(),
        };
        assert!(
            t0.elapsed() < START_TIMEOUT,
            "{} not relaying after {START_TIMEOUT:?} (last: {last}):\n{}",
            p.name,
            tail(log, 40)
        );
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

// ------------------------------------------------------------------------------------------

struct RelayResults {
    blast: LoadResult,
    paced: LoadResult,
    mem: Mem,
}

async fn bench_relay(
    name: &'static str,
    addr: SocketAddr,
    pid: u32,
    mem_conns: usize,
    st: &SinkStats,
    tck: f64,
) -> RelayResults {
    let paced_bytes = (PACED_BPS as f64 / 8.0 * PACED_TICK.as_secs_f64()).round() as usize;
    eprintln!("[bench] {name}: memory, {mem_conns} idle publishers");
    let mem = memory_run(addr, pid, mem_conns, name, st).await;
    eprintln!("[bench] {name}: full speed, {BLAST_CONNS} publishers");
    let blast = load_run(addr, pid, BLAST_CONNS, None, name, st, tck).await;
    eprintln!(
        "[bench] {name}: encoder rate, {PACED_CONNS} x {} Mbps",
        PACED_BPS / 1_000_000
    );
    let paced = load_run(addr, pid, PACED_CONNS, Some(paced_bytes), name, st, tck).await;
    RelayResults { blast, paced, mem }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}x", a / b)
    } else {
        "n/a".into()
    }
}

fn main() {
    let started = Instant::now();
    let tck = clk_tck();
    let (cores, model) = machine();
    let need_fds = 2 * MEM_CONNS as u64 + FD_MARGIN;
    let soft = raise_nofile(need_fds);
    let mem_conns = if soft >= need_fds {
        MEM_CONNS
    } else {
        let n = (soft.saturating_sub(FD_MARGIN) / 2) as usize;
        eprintln!("[bench] RLIMIT_NOFILE is {soft}: memory run scaled down to {n} publishers");
        n
    };
    let tmp =
        TempDir(std::env::temp_dir().join(format!("edge-relay-bench-{}", std::process::id())));
    fs::create_dir_all(&tmp.0).expect("temp dir");
    let dir = tmp.0.clone();
    let certs = dir.join("certs");
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

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt.block_on(async {
        let st = Arc::new(SinkStats::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("sink bind");
        let sink_addr = listener.local_addr().expect("sink addr");
        tokio::spawn(sink(listener, Arc::clone(&st)));

        let control_port = free_udp_port();
        let rtmp_port = free_tcp_port();
        let mut edge = start_edge(&dir, &certs, rtmp_port, control_port);
        let node = Arc::new(FakeNode {
            rtmp_addr: sink_addr,
            reserves: AtomicU64::new(0),
            cancels: AtomicU64::new(0),
        });
        let shutdown = CancellationToken::new();
        let read = |f: &str| fs::read_to_string(certs.join(f)).expect("read cert");
        let _client = spawn_client(
            ClientConfig {
                balancers: vec![SocketAddr::from(([127, 0, 0, 1], control_port))],
                ca_pem: read("ca.pem"),
                cert_pem: read("node-n1.pem"),
                key_pem: read("node-n1.key"),
                report_interval: Duration::from_secs(1),
            },
            node.clone() as Arc<dyn NodeControl>,
            shutdown.clone(),
        )
        .expect("control client");
        let hap_port = free_tcp_port();
        let mut hap = start_haproxy(&dir, hap_port, sink_addr, cores, mem_conns + FD_MARGIN as usize);
        let edge_addr = SocketAddr::from(([127, 0, 0, 1], rtmp_port));
        let hap_addr = SocketAddr::from(([127, 0, 0, 1], hap_port));
        wait_ready(hap_addr, &mut hap, &dir.join("haproxy.log")).await;
        wait_ready(edge_addr, &mut edge, &dir.join("edge.log")).await;
        drain(&st).await;
        let proxied0 = st.proxied.load(Ordering::Relaxed);

        let h = bench_relay("haproxy", hap_addr, hap.pid(), mem_conns, &st, tck).await;
        let e = bench_relay("edge", edge_addr, edge.pid(), mem_conns, &st, tck).await;
        eprintln!("[bench] setup latency: {LATENCY_SAMPLES} sequential publishes per target, interleaved");
        let lat = latency_run(
            &[("direct", sink_addr), ("haproxy", hap_addr), ("edge", edge_addr)],
            &st,
        )
        .await;
        shutdown.cancel();
        eprintln!(
            "[bench] sink: {} accepted, {} with PROXY v2 ({} during the runs), {} published, {} failed; node: {} reservations, {} cancels",
            st.accepted.load(Ordering::Relaxed),
            st.proxied.load(Ordering::Relaxed),
            st.proxied.load(Ordering::Relaxed) - proxied0,
            st.published.load(Ordering::Relaxed),
            st.failed.load(Ordering::Relaxed),
            node.reserves.load(Ordering::Relaxed),
            node.cancels.load(Ordering::Relaxed),
        );
        drop(hap);
        drop(edge);
        (lat, h, e)
    });
    rt.shutdown_timeout(JOIN_TIMEOUT);
    let (lat, h, e) = results;
    let (direct, hl, el) = (lat[0], lat[1], lat[2]);
    drop(tmp);

    let per_gbit = |r: &LoadResult| r.cpu_s / r.gbit;
    let pct = |r: &LoadResult| r.cpu_s / r.wall_s * 100.0;
    println!("\n## Balancer relay vs HAProxy\n");
    println!("command: {COMMAND}");
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
    println!(
        "| RSS per pinned idle publisher at {mem_conns}, KiB | | {:.1} | {:.1} | {} |",
        h.mem.kib_per_conn,
        e.mem.kib_per_conn,
        ratio(e.mem.kib_per_conn, h.mem.kib_per_conn)
    );
    println!();
    for (name, r, l) in [("HAProxy", &h, &hl), ("edge", &e, &el)] {
        println!(
            "- {name}: full speed {:.1} Gbit in {:.1} s for {:.2} CPU-s ({}/{} up); paced {:.2} CPU-s in {:.1} s ({}/{} up); latency {} ok, {} failed; RSS {:.1} -> {:.1} MiB with {} pinned (opened in {:.1} s)",
            r.blast.gbit, r.blast.wall_s, r.blast.cpu_s, r.blast.up, r.blast.up + r.blast.failed,
            r.paced.cpu_s, r.paced.wall_s, r.paced.up, r.paced.up + r.paced.failed,
            l.ok, l.failed,
            r.mem.before_mib, r.mem.after_mib, r.mem.pinned, r.mem.open_s
        );
    }
    println!(
        "- direct latency: {} ok, {} failed; total bench time {:.0} s",
        direct.ok,
        direct.failed,
        started.elapsed().as_secs_f64()
    );
}
