//! Soak: six streams (three RTMP, three SRT) through a balancer in front of two nodes, a viewer
//! in hls.js and a playlist poller on every stream through the balancer, and a hostile burst
//! every few minutes (`burst_every`: half-open connections on every TCP listener of the balancer, wrong-key
//! publishes from many addresses, spoofed SRT inductions). At the end: no stream dropped (each
//! encoder still runs on its first connection: its node session never changed), every playlist
//! kept advancing, the player saw no fatal error, and the RSS of every process at start and end
//! is printed and bounded.
//!
//! CI runs [`SHORT`]; `EDGE_SOAK_SECS=3600 cargo test --release --test soak -- --nocapture` is
//! the hour-long benchmark (BENCHMARKS.md).
// End-to-end tests drive real processes on real time; the ban on the std clock (clippy.toml)
// is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{cluster::*, procfs, rtmp_raw, srt_raw, *};

/// The CI run's length.
const SHORT: Duration = Duration::from_secs(60);
/// How often a hostile burst comes: every few minutes in a long run; a short one gets two.
fn burst_every(length: Duration) -> Duration {
    if length > Duration::from_secs(600) {
        Duration::from_secs(180)
    } else {
        length / 3
    }
}
/// Half-open connections per TCP listener of the balancer in one burst.
const BURST_HALF_OPEN: usize = 300;
/// Wrong-key publishes per protocol in one burst, each from its own address.
const BURST_WRONG_KEYS: usize = 20;
/// Spoofed SRT inductions in one burst.
const BURST_SPOOFED: u32 = 500;
/// How long a flowing stream may take to complete its next segment at the end.
const FLOW_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the poller reads every playlist through the balancer.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// RSS a process may gain over the run, MiB: its windows of media fill up in the first
/// minute; after that a leak shows as growth per burst.
const MAX_RSS_GROWTH_MIB: f64 = 200.0;

fn soak_length() -> Duration {
    std::env::var("EDGE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(SHORT)
}

fn position(node: &Node, pid: &str) -> Option<(u64, usize)> {
    let r = http_get(&node.media_playlist_url(pid, "source"), HTTP_TIMEOUT).ok()?;
    (r.status == 200).then_some(())?;
    check_ll_hls(&r.text(), Track::Video).ok()?.last_part()
}

/// One hostile burst against the balancer: half-open TCP connections (left to their
/// deadlines), wrong keys over RTMP and SRT, spoofed SRT inductions.
fn burst(b: &Balancer, round: u32) -> Vec<TcpStream> {
    let local = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let source = |i: usize| {
        IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            200 + (round % 50) as u8,
            1 + (i % 250) as u8,
        ))
    };
    let mut held = Vec::new();
    for (i, (port, opening)) in [
        (b.ports.rtmp, &b"\x03"[..]),
        (
            b.ports.http,
            &b"GET /live/s00/index.m3u8 HTTP/1.1\r\nHost: x\r\n"[..],
        ),
        (b.ports.admin, &b"GET /metrics HTTP/1.1\r\n"[..]),
    ]
    .into_iter()
    .enumerate()
    {
        for j in 0..BURST_HALF_OPEN {
            let Ok(sock) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            else {
                continue;
            };
            if sock
                .bind(&SocketAddr::new(source(i * BURST_HALF_OPEN + j), 0).into())
                .is_err()
            {
                continue;
            }
            if sock
                .connect_timeout(&local(port).into(), Duration::from_secs(2))
                .is_ok()
            {
                let mut s: TcpStream = sock.into();
                let _ = s.write_all(opening);
                held.push(s);
            }
        }
    }
    for i in 0..BURST_WRONG_KEYS {
        let _ = rtmp_raw::publish_from(
            source(1000 + i),
            local(b.ports.rtmp),
            &format!("soak-wrong-{round}-{i}"),
            Duration::from_secs(5),
        );
        if let Ok(sock) = UdpSocket::bind(SocketAddr::new(source(2000 + i), 0)) {
            let _ = srt_raw::connect(
                &sock,
                &format!("127.0.0.1:{}", b.ports.srt),
                &format!("#!::r=live/soak-wrong-{round}-{i},m=publish"),
            );
        }
    }
    let spoofer = srt_raw::Spoofer::new();
    let front = SocketAddrV4::new(Ipv4Addr::LOCALHOST, b.ports.srt);
    for i in 0..BURST_SPOOFED {
        let from = SocketAddrV4::new(
            Ipv4Addr::new(127, 2, (i >> 8) as u8, (i & 0xff) as u8 | 1),
            30_000 + i as u16,
        );
        spoofer.send(
            from,
            front,
            &srt_raw::handshake(4, 2, srt_raw::HS_INDUCTION, 0x7000_0000 + i, 0, &[]),
        );
    }
    // The half-open connections are the servers' to close at their deadlines; the caller
    // keeps our ends until the next burst.
    held
}

/// Polls every stream's playlist through the balancer until `stop`; counts failures.
fn poller(
    url_of: Vec<String>,
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut polls = 0;
        while !stop.load(Ordering::Relaxed) {
            for url in &url_of {
                polls += 1;
                match http_get(url, HTTP_TIMEOUT) {
                    Ok(r) if r.status == 200 => {}
                    other => {
                        eprintln!("[soak] viewer poll of {url}: {:?}", other.map(|r| r.status));
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            std::thread::sleep(POLL_EVERY);
        }
        polls
    })
}

#[test]
fn six_streams_viewers_and_hostile_bursts_drop_nothing() {
    let length = soak_length();
    let c = Cluster::new(2, 1);
    let b = c.balancer(1, "5s");
    let (n1, n2) = (c.node(1, 10, &[&b]), c.node(2, 10, &[&b]));
    wait_nodes(&b, &["n1", "n2"]);
    let nodes = [&n1, &n2];
    let opts = || EncOpts {
        source_file: Some(clip()),
        duration: length + Duration::from_secs(120),
        ..EncOpts::default()
    };
    let mut encs: Vec<(Encoder, usize, u64)> = Vec::new();
    for i in 0..6 {
        let enc = if i < 3 {
            Encoder::ffmpeg_rtmp(&b.rtmp_url(&key(i)), opts())
        } else {
            Encoder::ffmpeg_srt(&b.srt_url(&key(i)), opts())
        };
        let (node, session) = wait_for(format_args!("{} on a node", pid(i)), FLOW_TIMEOUT, || {
            nodes.iter().enumerate().find_map(|(k, n)| {
                n.stream(&pid(i))
                    .and_then(|s| s["session_id"].as_u64())
                    .map(|id| (k, id))
            })
        });
        nodes[node].wait_media_playlist(&pid(i), "source", 2, FIRST_SEGMENT_TIMEOUT);
        encs.push((enc, node, session));
    }
    let pids = [n1.pid(), n2.pid(), b.pid()];
    let rss_start = pids.map(procfs::rss_kib);
    let start_pos: Vec<(u64, usize)> = (0..6)
        .map(|i| position(nodes[encs[i].1], &pid(i)).expect("a playlist"))
        .collect();

    // Viewers: hls.js on one stream for the whole run, a poller on all six.
    let url = b.playlist_url(&pid(0));
    let player_secs = length.as_secs().saturating_sub(5).max(10);
    let player = std::thread::spawn(move || play_in_chromium(&url, player_secs));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let polls = poller(
        (0..6).map(|i| b.playlist_url(&pid(i))).collect(),
        Arc::clone(&stop),
        Arc::clone(&failures),
    );

    // Bursts until the end.
    let started = Instant::now();
    let every = burst_every(length);
    let mut round = 0;
    let mut _held = Vec::new();
    while started.elapsed() + every <= length {
        let next = started + every * (round + 1);
        _held = burst(&b, round);
        round += 1;
        eprintln!(
            "[soak] burst {round} at {:?}; RSS n1 {:.0} n2 {:.0} balancer {:.0} KiB",
            started.elapsed(),
            procfs::rss_kib(pids[0]),
            procfs::rss_kib(pids[1]),
            procfs::rss_kib(pids[2])
        );
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            // Not a wait for a condition: the soak's own pace.
            std::thread::sleep(wait);
        }
    }
    if let Some(rest) = length.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    let report = player.join().expect("player");
    stop.store(true, Ordering::Relaxed);
    let polled = polls.join().expect("poller");
    let rss_end = pids.map(procfs::rss_kib);

    // Nothing dropped: every encoder on its first connection, every stream still advancing.
    let mut dropped = 0;
    for (i, (enc, node, session)) in encs.iter_mut().enumerate() {
        let now = nodes[*node]
            .stream(&pid(i))
            .and_then(|s| s["session_id"].as_u64());
        if !enc.is_running() || now != Some(*session) {
            eprintln!(
                "[soak] {} dropped (session {now:?}, first {session}):\n{}",
                pid(i),
                enc.log_text()
            );
            dropped += 1;
            continue;
        }
        let was = start_pos[i];
        wait_for(
            format_args!("{} to be past {was:?}", pid(i)),
            FLOW_TIMEOUT,
            || position(nodes[*node], &pid(i)).filter(|p| p.0 > was.0),
        );
    }
    let growth: Vec<f64> = (0..3)
        .map(|k| (rss_end[k] - rss_start[k]) / 1024.0)
        .collect();
    println!(
        "soak {:?}: {round} bursts, 6 streams, {dropped} dropped; viewer polls {polled}, failed {}; \
         hls.js fatal errors {}, stalls {}, played {:.1} s; RSS MiB start/end: n1 {:.1}/{:.1}, n2 {:.1}/{:.1}, balancer {:.1}/{:.1}",
        length,
        failures.load(Ordering::Relaxed),
        report.fatal_errors.len(),
        report.stalls,
        report.advanced,
        rss_start[0] / 1024.0,
        rss_end[0] / 1024.0,
        rss_start[1] / 1024.0,
        rss_end[1] / 1024.0,
        rss_start[2] / 1024.0,
        rss_end[2] / 1024.0,
    );
    assert_eq!(dropped, 0, "streams dropped");
    assert!(report.fatal_errors.is_empty(), "player: {report:?}");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "viewer polls failed");
    for (k, g) in growth.iter().enumerate() {
        assert!(
            *g <= MAX_RSS_GROWTH_MIB,
            "process {} grew {g:.1} MiB",
            pids[k]
        );
    }
}
