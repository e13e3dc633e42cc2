//! End to end: half-open connections against every TCP listener of a node and a balancer.
//! [`PER_LISTENER`] connections on each (RTMP, HTTP playback/origin, admin), from
//! [`ADDRESSES`] source addresses, each sending the start of what it should (half an RTMP
//! handshake, half an HTTP request header) and then nothing, one in ten trickling one more byte
//! every [`TRICKLE_EVERY`]. Every one is closed at its phase deadline (the caps close what is
//! over them at once), the memory they hold is bounded per connection (RSS delta), and during
//! the flood a live stream goes on and a viewer's playlist request through the balancer is
//! answered as usual.
// End-to-end tests drive real processes on real time; the ban on the std clock (clippy.toml)
// is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::{cluster::*, procfs, *};

/// Half-open connections per listener (the issue asks for at least 2,000).
const PER_LISTENER: usize = 2000;
/// Source addresses 127.0.100.1 and up: 20 connections each, under every per-address cap.
const ADDRESSES: u32 = 100;
/// The slowest trickle a deadline must not be pushed back by.
const TRICKLE_EVERY: Duration = Duration::from_secs(10);
/// The longest phase deadline of these listeners: RTMP handshake (node and balancer), HTTP
/// request header (origin, playback, admin), 10 s each.
const DEADLINE: Duration = Duration::from_secs(10);
/// Beyond the deadline, for a loaded 2-core machine to get round to closing thousands.
const CLOSE_SLACK: Duration = Duration::from_secs(15);
/// Memory an idle hostile connection may cost its server, KiB, as this test measures it (RSS
/// delta over the connections held at the sample, which errs high: memory of connections
/// already closed is not given back). A connection's first bytes are read into a buffer the
/// size of what arrived (`server::opening`), and the protocol's state (hyper's 8 KiB buffer and
/// connection future, an RTMP handshake) exists only once the opening is complete: 3.3 to 3.8
/// KiB is measured (BENCHMARKS.md; the goal is 4), against 10 to 19 KiB before. The
/// bound leaves a loaded machine room (one run right after another test binary failed the goal
/// itself) and still catches any per-connection buffer of a few KiB coming back.
const MAX_KIB_PER_CONNECTION: f64 = 5.0;

/// The admin listeners' cap (server::serve::ADMIN_MAX_CONNECTIONS).
const ADMIN_CAP: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    Rtmp,
    Http,
}

struct Listener {
    name: &'static str,
    addr: SocketAddr,
    proto: Proto,
    /// The process that owns it (for memory and descriptors).
    server_pid: u32,
    /// At most this many are admitted; the rest are closed at once.
    cap: usize,
}

struct Conn {
    sock: TcpStream,
    listener: usize,
    opened: Instant,
    closed: Option<Instant>,
    trickle: bool,
}

fn source(i: usize) -> IpAddr {
    let n = (i as u32) % ADDRESSES;
    IpAddr::V4(Ipv4Addr::new(127, 0, 100, 1 + n as u8))
}

/// The bytes a half-open client sends first: half an RTMP C0+C1, half an HTTP header.
fn opening(proto: Proto) -> Vec<u8> {
    match proto {
        Proto::Rtmp => {
            let mut b = vec![3u8];
            b.extend(std::iter::repeat_n(0x5a, 700));
            b
        }
        Proto::Http => {
            b"GET /live/s00/index.m3u8 HTTP/1.1\r\nHost: edge\r\nUser-Agent: half".to_vec()
        }
    }
}

fn open(l: &Listener, i: usize) -> TcpStream {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    // Pick the port at connect, not at bind: a bind to port 0 searches the whole ephemeral
    // range for a port free on every address, which slows to milliseconds with thousands in use.
    set_bind_address_no_port(&sock);
    sock.bind(&SocketAddr::new(source(i), 0).into())
        .expect("bind a loopback source address");
    sock.connect_timeout(&l.addr.into(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{}: connect {i}: {e}", l.name));
    let mut s: TcpStream = sock.into();
    // A connection refused by a cap may be closed before we write: not an error here.
    let _ = s.write_all(&opening(l.proto));
    s.set_nonblocking(true).expect("nonblocking");
    s
}

fn set_bind_address_no_port(sock: &socket2::Socket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and an int option of the right size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Whether the server has closed `s` (EOF or reset); anything it sent is read and dropped.
fn is_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// [`PER_LISTENER`] half-open connections to `l`, opened from a few threads at once.
fn open_all(l: &Listener) -> Vec<TcpStream> {
    const THREADS: usize = 8;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    (t..PER_LISTENER)
                        .step_by(THREADS)
                        .map(|i| open(l, i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("opener thread"))
            .collect()
    })
}

fn kib_per(delta_kib: f64, n: usize) -> f64 {
    delta_kib / n.max(1) as f64
}

#[test]
fn half_open_floods_on_every_tcp_listener_are_closed_at_their_deadlines() {
    let limit = procfs::raise_nofile();
    assert!(
        limit as usize > 6 * PER_LISTENER + 500,
        "open-files limit {limit} is too low for {} connections",
        6 * PER_LISTENER
    );
    let c = Cluster::new(1, 1);
    let b = c.balancer(1, "5s");
    let n1 = c.node(1, 10, &[&b]);
    wait_nodes(&b, &["n1"]);
    // A live stream through the balancer, and its playlist through the balancer.
    let mut enc = Encoder::ffmpeg_rtmp(
        &b.rtmp_url(&key(0)),
        EncOpts {
            source_file: Some(clip()),
            duration: Duration::from_secs(300),
            ..EncOpts::default()
        },
    );
    n1.wait_media_playlist(&pid(0), "source", 2, FIRST_SEGMENT_TIMEOUT);
    let viewer_url = b.playlist_url(&pid(0));
    wait_for(
        "the playlist through the balancer",
        Duration::from_secs(20),
        || {
            http_get(&viewer_url, HTTP_TIMEOUT)
                .ok()
                .filter(|r| r.status == 200)
        },
    );

    let (node_fds, balancer_fds) = (procfs::fd_count(n1.pid()), procfs::fd_count(b.pid()));
    let fds_before = |pid| {
        if pid == n1.pid() {
            node_fds
        } else {
            balancer_fds
        }
    };
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let listeners = [
        Listener {
            name: "node rtmp",
            addr: local(n1.ports.rtmp),
            proto: Proto::Rtmp,
            server_pid: n1.pid(),
            cap: usize::MAX,
        },
        Listener {
            name: "node http",
            addr: local(n1.ports.http),
            proto: Proto::Http,
            server_pid: n1.pid(),
            cap: usize::MAX,
        },
        Listener {
            name: "node admin",
            addr: local(n1.ports.admin),
            proto: Proto::Http,
            server_pid: n1.pid(),
            cap: ADMIN_CAP,
        },
        Listener {
            name: "balancer rtmp",
            addr: local(b.ports.rtmp),
            proto: Proto::Rtmp,
            server_pid: b.pid(),
            cap: usize::MAX,
        },
        Listener {
            name: "balancer http",
            addr: local(b.ports.http),
            proto: Proto::Http,
            server_pid: b.pid(),
            cap: usize::MAX,
        },
        Listener {
            name: "balancer admin",
            addr: local(b.ports.admin),
            proto: Proto::Http,
            server_pid: b.pid(),
            cap: ADMIN_CAP,
        },
    ];
    // Memory, one server at a time (RSS does not shrink when memory is freed, so listeners of
    // one process are measured together): open its listeners' connections, let it take them,
    // read its RSS, close them.
    let mut per_kib = Vec::new();
    for pid in [n1.pid(), b.pid()] {
        let mine: Vec<&Listener> = listeners.iter().filter(|l| l.server_pid == pid).collect();
        let (rss0, fds0) = (procfs::rss_kib(pid), procfs::fd_count(pid));
        // Opening thousands takes seconds on a loaded machine (a debug build accepts slowly),
        // so the first may reach their deadline while the last open: sample RSS and the
        // descriptors held together after each batch. Every sample errs high (memory of
        // connections already closed at their deadline is not given back, but they no longer
        // count as held), the more so the more have closed: of the samples holding at least
        // half a listener's flood, keep the lowest figure per connection. (Keeping the sample
        // that held the most read 24.06 KiB once, with a build beside the suite, where the
        // flood took 11 s to open against a 10 s deadline.)
        let mut samples = Vec::new();
        let mut batches = Vec::new();
        for l in &mine {
            let t = Instant::now();
            batches.push(open_all(l));
            let (rss, fds) = (procfs::rss_kib(pid), procfs::fd_count(pid));
            let held = fds.saturating_sub(fds0);
            eprintln!(
                "{}: opened in {:?}, process holds {held} more, RSS +{:.0} KiB",
                l.name,
                t.elapsed(),
                rss - rss0
            );
            samples.push((rss - rss0, held));
        }
        let most = samples.iter().map(|s| s.1).max().unwrap_or(0);
        assert!(
            most >= PER_LISTENER / 2,
            "process {pid} held at most {most} of the flood's connections at once"
        );
        let (delta, held) = samples
            .iter()
            .copied()
            .filter(|s| s.1 >= PER_LISTENER / 2)
            .min_by(|a, b| kib_per(a.0, a.1).total_cmp(&kib_per(b.0, b.1)))
            .unwrap_or((0.0, 1));
        let per = kib_per(delta, held);
        let names: Vec<&str> = mine.iter().map(|l| l.name).collect();
        eprintln!(
            "{names:?}: {held} half-open connections held, RSS +{delta:.0} KiB, {per:.2} KiB each"
        );
        per_kib.push((names, per));
        drop(batches);
        wait_for(
            format_args!("process {pid} to release them"),
            Duration::from_secs(10),
            || (procfs::fd_count(pid) <= fds0 + 10).then_some(()),
        );
    }

    // Deadlines: all of them at once, interleaved across listeners.
    let started = Instant::now();
    let mut conns: Vec<Conn> = Vec::with_capacity(listeners.len() * PER_LISTENER);
    for i in 0..PER_LISTENER {
        for (li, l) in listeners.iter().enumerate() {
            conns.push(Conn {
                sock: open(l, i),
                listener: li,
                opened: Instant::now(),
                closed: None,
                trickle: i % 10 == 0,
            });
        }
    }
    let opened_in = started.elapsed();
    eprintln!("opened {} connections in {opened_in:?}", conns.len());

    // During the flood: the viewer is answered and the stream goes on.
    let r = http_get(&viewer_url, HTTP_TIMEOUT).expect("playlist during the flood");
    assert_eq!(r.status, 200, "a viewer during the flood: {}", r.text());
    assert!(r.text().contains("#EXTM3U"));

    // Trickle and watch: every connection must be closed by the deadline and the slack.
    let mut next_trickle = started + TRICKLE_EVERY;
    let until = started + opened_in + DEADLINE + CLOSE_SLACK;
    loop {
        let now = Instant::now();
        for c in conns.iter_mut().filter(|c| c.closed.is_none()) {
            if is_closed(&mut c.sock) {
                c.closed = Some(now);
            }
        }
        if now >= next_trickle {
            for c in conns.iter_mut().filter(|c| c.trickle && c.closed.is_none()) {
                let _ = c.sock.write_all(b"x");
            }
            next_trickle += TRICKLE_EVERY;
        }
        if conns.iter().all(|c| c.closed.is_some()) || now >= until {
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    for (li, l) in listeners.iter().enumerate() {
        let mine: Vec<&Conn> = conns.iter().filter(|c| c.listener == li).collect();
        let open = mine.iter().filter(|c| c.closed.is_none()).count();
        let lived: Vec<Duration> = mine
            .iter()
            .filter_map(|c| c.closed.map(|t| t - c.opened))
            .collect();
        // Closed well before the deadline: refused by a cap at accept.
        let at_once = lived.iter().filter(|d| **d < DEADLINE / 2).count();
        let longest = lived.iter().max().copied().unwrap_or_default();
        eprintln!(
            "{}: {} closed at once, {} at the deadline, longest {longest:?}, {open} still open",
            l.name,
            at_once,
            lived.len() - at_once
        );
        assert_eq!(
            open, 0,
            "{}: {open} connections outlived their deadline",
            l.name
        );
        let over_cap = PER_LISTENER.saturating_sub(l.cap);
        assert!(
            at_once <= over_cap + PER_LISTENER / 100,
            "{}: {at_once} closed before the deadline (cap refusals expected: {over_cap})",
            l.name
        );
    }

    // The memory bound, and everything given back.
    for (name, per) in &per_kib {
        assert!(
            *per <= MAX_KIB_PER_CONNECTION,
            "{name:?}: {per:.2} KiB per half-open connection (bound {MAX_KIB_PER_CONNECTION})"
        );
    }
    for pid in [n1.pid(), b.pid()] {
        let base = fds_before(pid);
        wait_for(
            format_args!("process {pid} to release the flood's descriptors"),
            Duration::from_secs(10),
            || (procfs::fd_count(pid) <= base + 50).then_some(()),
        );
    }
    assert!(
        enc.is_running(),
        "the encoder saw an error:\n{}",
        enc.log_text()
    );
    let r = http_get(&viewer_url, HTTP_TIMEOUT).expect("playlist after the flood");
    assert_eq!(r.status, 200);
}
