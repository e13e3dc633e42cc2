//! Faulty networks for real: test hosts in network namespaces behind a user-space impairment
//! router (this kernel has no netem).
//!
//! A [`TestNet`] creates namespaces named `edgeimp-PID-N-NAME` (removed on drop, also while
//! panicking; a new `TestNet` first removes those of test processes that are gone). Each
//! [`Host`] is one namespace joined to the root namespace by a pair of TUN devices: one opened
//! inside the namespace (by a thread that `setns`es into it), one in the root namespace. Router
//! threads of the test process forward IPv4 packets between the two descriptors and impair
//! them per direction ([`Impairment`]): a one-way delay, uniform jitter, random loss, and a
//! share of packets held back so later ones overtake them (reordering); [`Host::block_port`]
//! drops every packet to or from a TCP/UDP port (a partition of one service, say the control
//! plane). Randomness comes from a generator seeded per host and direction, so a run is
//! reproducible for a given packet sequence.
//!
//! Addresses come from 198.18.0.0/15 (RFC 2544, benchmarking): a host gets a /30, the root
//! side `.1` and the namespace `.2` of it (point-to-point), and the namespace's default route
//! goes through its TUN device, so nothing it sends can leave the machine: the root side only
//! forwards what is addressed to it (IP forwarding is not touched).

use std::collections::BinaryHeap;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::run_with_timeout;

/// Every namespace this harness creates starts with this, then the creating process's PID.
pub const NS_PREFIX: &str = "edgeimp";
/// How long one `ip` or `sysctl` invocation may take.
const IP_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest packet we read from a TUN device (its MTU is 1500; room for a larger one).
const MAX_PACKET: usize = 65_536;
/// How often an idle router thread wakes to look at its stop flag.
const IDLE_WAKE: Duration = Duration::from_millis(50);
/// Packets a router direction holds at most (delay × rate): past this, new ones are dropped
/// (and counted) instead of growing without bound.
const QUEUE_LIMIT: usize = 50_000;

/// What one direction of a link does to packets.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Each packet's delay is `delay` plus a uniform offset in [-jitter, +jitter]; packets
    /// leave in order of their release time, so jitter larger than their spacing reorders.
    pub jitter: Duration,
    /// Probability that a packet is dropped.
    pub loss: f64,
    /// Probability that a packet is held `reorder_gap` longer (later packets overtake it).
    pub reorder: f64,
    /// How long a reordered packet is held back beyond its delay.
    pub reorder_gap: Duration,
}

impl Impairment {
    /// A fixed one-way delay and random loss, nothing else.
    pub fn delay_loss(delay: Duration, loss: f64) -> Impairment {
        Impairment {
            delay,
            loss,
            ..Impairment::default()
        }
    }
}

/// Counters of one direction of a link.
#[derive(Debug, Default)]
pub struct DirStats {
    /// IPv4 packets read from the source device.
    pub seen: AtomicU64,
    /// Dropped by the random loss.
    pub lost: AtomicU64,
    /// Dropped by a port rule ([`Host::block_port`]).
    pub blocked: AtomicU64,
    /// Held back by the reordering.
    pub reordered: AtomicU64,
    /// Written to the destination device.
    pub forwarded: AtomicU64,
    /// Not IPv4 (IPv6 router solicitations and such), dropped; or the queue was full.
    pub other_dropped: AtomicU64,
    /// Bytes written to the destination device.
    pub bytes: AtomicU64,
}

/// A snapshot of [`DirStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DirCounts {
    pub seen: u64,
    pub lost: u64,
    pub blocked: u64,
    pub reordered: u64,
    pub forwarded: u64,
    pub other_dropped: u64,
    pub bytes: u64,
}

impl DirCounts {
    /// Share of the packets subject to random loss (not blocked by a rule) that it dropped.
    pub fn loss_ratio(&self) -> f64 {
        let subject = self.seen.saturating_sub(self.blocked);
        if subject == 0 {
            0.0
        } else {
            self.lost as f64 / subject as f64
        }
    }
}

impl DirStats {
    pub fn counts(&self) -> DirCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DirCounts {
            seen: g(&self.seen),
            lost: g(&self.lost),
            blocked: g(&self.blocked),
            reordered: g(&self.reordered),
            forwarded: g(&self.forwarded),
            other_dropped: g(&self.other_dropped),
            bytes: g(&self.bytes),
        }
    }
}

/// State shared by a link's two router threads and its [`Host`] handle.
struct LinkShared {
    /// Namespace → root ("up") and root → namespace ("down").
    up: Mutex<Impairment>,
    down: Mutex<Impairment>,
    up_stats: DirStats,
    down_stats: DirStats,
    /// TCP/UDP ports whose packets (either direction, source or destination port) are dropped.
    blocked_ports: Mutex<Vec<u16>>,
    stop: AtomicBool,
}

/// One test host: a namespace behind the impairment router.
pub struct Host {
    /// The namespace's name (for `ip netns exec`).
    pub ns: String,
    /// The host's address (inside the namespace).
    pub addr: Ipv4Addr,
    /// The root namespace's address on this link: what the host reaches the test's servers
    /// at (a local address of the root namespace, so root processes may listen on it).
    pub gateway: Ipv4Addr,
    /// The TUN device of the root side.
    pub root_dev: String,
    shared: Arc<LinkShared>,
    threads: Vec<JoinHandle<()>>,
}

impl Host {
    /// A command run inside the namespace: `ip netns exec NS program`.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// Runs `sysctl -w KEY=VALUE` inside the namespace (per-namespace keys such as
    /// `net.ipv4.tcp_congestion_control`) and returns what it reads back.
    pub fn sysctl(&self, key: &str, value: &str) -> String {
        ip(&[
            "netns",
            "exec",
            &self.ns,
            "sysctl",
            "-w",
            &format!("{key}={value}"),
        ]);
        ip(&["netns", "exec", &self.ns, "sysctl", "-n", key])
            .trim()
            .to_string()
    }

    /// Replaces the impairment of traffic leaving the host (namespace → root).
    pub fn set_up(&self, i: Impairment) {
        *lock(&self.shared.up) = i;
    }

    /// Replaces the impairment of traffic to the host (root → namespace).
    pub fn set_down(&self, i: Impairment) {
        *lock(&self.shared.down) = i;
    }

    /// Drops every TCP or UDP packet on this link whose source or destination port is `port`.
    pub fn block_port(&self, port: u16) {
        let mut b = lock(&self.shared.blocked_ports);
        if !b.contains(&port) {
            b.push(port);
        }
    }

    /// Lifts every [`Host::block_port`].
    pub fn unblock_all(&self) {
        lock(&self.shared.blocked_ports).clear();
    }

    /// Counters of traffic from the host (namespace → root).
    pub fn up_counts(&self) -> DirCounts {
        self.shared.up_stats.counts()
    }

    /// Counters of traffic to the host (root → namespace).
    pub fn down_counts(&self) -> DirCounts {
        self.shared.down_stats.counts()
    }

    /// Runs `f` on a thread inside the host's namespace (its sockets are the host's) and
    /// returns its result.
    pub fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.ns, f).unwrap_or_else(|e| panic!("enter namespace {}: {e}", self.ns))
    }

    /// Round-trip times of `n` TCP connects from inside the namespace to a listener on the
    /// gateway address (SYN out, SYN-ACK back: one round trip through the router each). A
    /// connect whose SYN or SYN-ACK was lost takes the kernel's 1 s retransmission longer;
    /// callers look at the median.
    pub fn tcp_connect_rtts(&self, n: usize) -> Vec<Duration> {
        let listener = std::net::TcpListener::bind((self.gateway, 0))
            .unwrap_or_else(|e| panic!("bind a probe listener on {}: {e}", self.gateway));
        let target = listener.local_addr().expect("probe listener address");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let acceptor = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => drop(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let rtts = self.run_inside(move || {
            (0..n)
                .filter_map(|_| {
                    let t = Instant::now();
                    let s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(10));
                    let rtt = t.elapsed();
                    drop(s.ok()?);
                    Some(rtt)
                })
                .collect::<Vec<_>>()
        });
        stop.store(true, Ordering::Relaxed);
        let _ = acceptor.join();
        rtts
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // The TUN devices go with their descriptors (closed as the threads ended).
    }
}

/// A set of namespaces for one test; everything it created is removed on drop.
pub struct TestNet {
    tag: String,
    namespaces: Vec<String>,
    hosts: Vec<Host>,
}

/// Links made by this process (for unique names and addresses).
static LINKS: AtomicU64 = AtomicU64::new(0);

impl TestNet {
    /// Checks that we may create namespaces (root, `ip netns`, /dev/net/tun) and fails the
    /// test with a clear message if not; removes namespaces left by earlier runs whose process
    /// is gone. `tag` names the test in namespace names.
    pub fn new(tag: &str) -> TestNet {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "the impaired-network tests need root (network namespaces, TUN devices); run them as root (CI does)"
        );
        assert!(
            std::path::Path::new("/dev/net/tun").exists(),
            "/dev/net/tun is missing: the impairment router needs TUN devices"
        );
        remove_leftovers();
        TestNet {
            tag: tag
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(12)
                .collect(),
            namespaces: Vec::new(),
            hosts: Vec::new(),
        }
    }

    /// A new host `name` in its own namespace, with `up` impairing what it sends and `down`
    /// what it receives. Returns its index (see [`TestNet::host`]).
    pub fn add_host(&mut self, name: &str, up: Impairment, down: Impairment) -> &Host {
        let n = LINKS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let ns = format!("{NS_PREFIX}-{pid}-{n}-{}-{name}", self.tag);
        let out = run_with_timeout(Command::new("ip").args(["netns", "add", &ns]), IP_TIMEOUT)
            .unwrap_or_else(|e| panic!("ip netns add: {e}"));
        assert!(
            out.status.success(),
            "`ip netns add {ns}` failed (the impaired-network tests need root and network namespaces): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let (gateway, addr) = free_block(pid as u64, n);
        let root_dev = format!("ei{}r{n}", pid % 100_000);
        let ns_dev = "imp0".to_string();
        // The namespace side: opened by a thread inside the namespace; the device lives there.
        let dev2 = ns_dev.clone();
        let ns_fd = in_netns(&ns, move || open_tun(&dev2))
            .unwrap_or_else(|e| panic!("enter namespace {ns}: {e}"))
            .unwrap_or_else(|e| panic!("open a TUN device in {ns}: {e}"));
        let root_fd = open_tun(&root_dev).unwrap_or_else(|e| panic!("open TUN {root_dev}: {e}"));
        // Neither side speaks IPv6 (no router solicitations to drop).
        ip(&["-n", &ns, "link", "set", &ns_dev, "mtu", "1500"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{addr}/32"),
            "peer",
            &format!("{gateway}/32"),
            "dev",
            &ns_dev,
        ]);
        ip(&["-n", &ns, "link", "set", &ns_dev, "up"]);
        ip(&["-n", &ns, "route", "add", "default", "dev", &ns_dev]);
        ip(&[
            "addr",
            "add",
            &format!("{gateway}/32"),
            "peer",
            &format!("{addr}/32"),
            "dev",
            &root_dev,
        ]);
        ip(&["link", "set", &root_dev, "up"]);
        let shared = Arc::new(LinkShared {
            up: Mutex::new(up),
            down: Mutex::new(down),
            up_stats: DirStats::default(),
            down_stats: DirStats::default(),
            blocked_ports: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let ns_fd = Arc::new(ns_fd);
        let root_fd = Arc::new(root_fd);
        let seed = 0x5eed_0000_0000_0000 ^ (n << 8);
        let threads = vec![
            spawn_direction(
                format!("imp-up-{n}"),
                Arc::clone(&ns_fd),
                Arc::clone(&root_fd),
                Arc::clone(&shared),
                true,
                seed ^ 1,
            ),
            spawn_direction(
                format!("imp-down-{n}"),
                Arc::clone(&root_fd),
                Arc::clone(&ns_fd),
                Arc::clone(&shared),
                false,
                seed ^ 2,
            ),
        ];
        eprintln!(
            "[netns] host {name}: namespace {ns}, {addr} <-> {gateway} (root dev {root_dev}); up {up:?}; down {down:?}"
        );
        self.hosts.push(Host {
            ns,
            addr,
            gateway,
            root_dev,
            shared,
            threads,
        });
        self.hosts.last().expect("just pushed")
    }

    /// The `i`-th host added.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        // Router threads stop and close the TUN descriptors (the devices vanish with them).
        self.hosts.clear();
        for ns in self.namespaces.drain(..) {
            kill_processes_in(&ns);
            let _ = run_with_timeout(Command::new("ip").args(["netns", "del", &ns]), IP_TIMEOUT);
        }
    }
}

/// SIGKILLs what still runs in a namespace of ours (a leaked encoder or node).
fn kill_processes_in(ns: &str) {
    if let Ok(out) = run_with_timeout(Command::new("ip").args(["netns", "pids", ns]), IP_TIMEOUT) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill has no memory-safety preconditions; the PID runs in our namespace.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// Removes namespaces of ours whose creating test process no longer runs.
fn remove_leftovers() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{NS_PREFIX}-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("[netns] removing leftover namespace {name} (process {pid} is gone)");
        kill_processes_in(&name);
        let _ = run_with_timeout(Command::new("ip").args(["netns", "del", &name]), IP_TIMEOUT);
    }
}

/// A /30 of 198.18.0.0/15 not in use in the root namespace: (root side .1, namespace .2).
fn free_block(pid: u64, n: u64) -> (Ipv4Addr, Ipv4Addr) {
    let used = ip(&["-o", "-4", "addr", "show"]);
    let base = u32::from(Ipv4Addr::new(198, 18, 0, 0));
    let blocks: u64 = (1 << 17) / 4;
    let mut b = (pid.wrapping_mul(64).wrapping_add(n * 7)) % blocks;
    for _ in 0..blocks {
        // Skip block 0 (198.18.0.0/30) and keep away from the network/broadcast addresses.
        if b != 0 {
            let gw = Ipv4Addr::from(base + (b as u32) * 4 + 1);
            let host = Ipv4Addr::from(base + (b as u32) * 4 + 2);
            if !used.contains(&format!("{gw}/")) && !used.contains(&format!("{gw} ")) {
                return (gw, host);
            }
        }
        b = (b + 1) % blocks;
    }
    panic!("no free /30 in 198.18.0.0/15");
}

/// Runs `ip ARGS` (or `ip netns exec ...`), panicking with its stderr if it fails; its stdout.
fn ip(args: &[&str]) -> String {
    let out = run_with_timeout(
        Command::new("ip").args(args).stdin(Stdio::null()),
        IP_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on a new thread that first joins the network namespace `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path)?;
    std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace descriptor changes only this thread's network
        // namespace; the thread ends after `f`.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}

/// TUNSETIFF = _IOW('T', 202, int).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens a TUN device (IP packets, no packet-info header) named `name` in the calling
/// thread's network namespace, non-blocking.
fn open_tun(name: &str) -> io::Result<OwnedFd> {
    assert!(name.len() < 16, "interface name too long: {name}");
    // SAFETY: a NUL-terminated path; the returned descriptor is checked and then owned.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReq lays out (40 bytes).
    let r = unsafe { libc::ioctl(owned.as_raw_fd(), TUNSETIFF as _, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

/// splitmix64: a small seeded generator (reproducible runs, no dependency).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A packet waiting for its release time (min-heap by time, then arrival order).
struct Queued {
    at: Instant,
    seq: u64,
    pkt: Vec<u8>,
}
impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// The TCP/UDP source and destination ports of an IPv4 packet (None for other protocols or
/// fragments past the first).
fn ports(pkt: &[u8]) -> Option<(u16, u16)> {
    let ihl = usize::from(pkt.first()? & 0x0f) * 4;
    let proto = *pkt.get(9)?;
    let frag_off = u16::from_be_bytes([*pkt.get(6)?, *pkt.get(7)?]) & 0x1fff;
    if (proto != 6 && proto != 17) || frag_off != 0 {
        return None;
    }
    let p = pkt.get(ihl..ihl + 4)?;
    Some((
        u16::from_be_bytes([p[0], p[1]]),
        u16::from_be_bytes([p[2], p[3]]),
    ))
}

/// One direction of a link: reads packets from `from`, impairs them, writes them to `to` at
/// their release time. A single thread: it polls `from` with a timeout of the next release.
fn spawn_direction(
    name: String,
    from: Arc<OwnedFd>,
    to: Arc<OwnedFd>,
    shared: Arc<LinkShared>,
    up: bool,
    seed: u64,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let mut rng = Rng(seed);
            let mut queue: BinaryHeap<Queued> = BinaryHeap::new();
            let mut seq = 0u64;
            let mut buf = vec![0u8; MAX_PACKET];
            let (imp_m, stats) = if up {
                (&shared.up, &shared.up_stats)
            } else {
                (&shared.down, &shared.down_stats)
            };
            while !shared.stop.load(Ordering::Relaxed) {
                // Release what is due.
                let now = Instant::now();
                while queue.peek().is_some_and(|q| q.at <= now) {
                    let q = queue.pop().expect("peeked");
                    // SAFETY: writing an initialised buffer to an open descriptor.
                    let w =
                        unsafe { libc::write(to.as_raw_fd(), q.pkt.as_ptr().cast(), q.pkt.len()) };
                    if w >= 0 {
                        stats.forwarded.fetch_add(1, Ordering::Relaxed);
                        stats.bytes.fetch_add(q.pkt.len() as u64, Ordering::Relaxed);
                    } else {
                        stats.other_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let wait = queue
                    .peek()
                    .map(|q| q.at.saturating_duration_since(Instant::now()))
                    .unwrap_or(IDLE_WAKE)
                    .min(IDLE_WAKE);
                let mut pfd = libc::pollfd {
                    fd: from.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // Round up so we never wake just before a release and spin.
                let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
                // SAFETY: one valid pollfd.
                let r = unsafe { libc::poll(&mut pfd, 1, ms) };
                if r <= 0 {
                    continue;
                }
                loop {
                    // SAFETY: reading into our buffer of MAX_PACKET bytes.
                    let n =
                        unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                    if n <= 0 {
                        break;
                    }
                    let pkt = &buf[..n as usize];
                    if pkt[0] >> 4 != 4 {
                        stats.other_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    stats.seen.fetch_add(1, Ordering::Relaxed);
                    if let Some((sp, dp)) = ports(pkt) {
                        let b = lock(&shared.blocked_ports);
                        if b.contains(&sp) || b.contains(&dp) {
                            stats.blocked.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    let imp = *lock(imp_m);
                    // Draw every number for every packet so the sequence does not depend on
                    // which impairments are on.
                    let (l, j, r) = (rng.unit(), rng.unit(), rng.unit());
                    if l < imp.loss {
                        stats.lost.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    let mut delay =
                        imp.delay.as_secs_f64() + (2.0 * j - 1.0) * imp.jitter.as_secs_f64();
                    if r < imp.reorder {
                        delay += imp.reorder_gap.as_secs_f64();
                        stats.reordered.fetch_add(1, Ordering::Relaxed);
                    }
                    if queue.len() >= QUEUE_LIMIT {
                        stats.other_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    seq += 1;
                    queue.push(Queued {
                        at: Instant::now() + Duration::from_secs_f64(delay.max(0.0)),
                        seq,
                        pkt: pkt.to_vec(),
                    });
                }
            }
        })
        .expect("spawn a router thread")
}
