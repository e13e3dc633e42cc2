//! End to end: balancers and ingest nodes as separate processes on loopback, publishers
//! pushing real streams (ffmpeg, copying a pre-encoded clip to keep CPU low) over RTMP and SRT.
//! Every scenario asserts that every established stream kept flowing: its encoder never saw
//! an error and its playlist kept growing without a discontinuity.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{cluster::*, srt_raw, *};

/// How long a flowing stream may take to complete its next segment (2 s of media) at a check,
/// with encoders, nodes and other tests sharing 2 cores.
const FLOW_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a publish may take to be placed, relayed and show up on its node.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// Publisher run time: longer than any scenario.
const LONG: Duration = Duration::from_secs(300);

fn opts() -> EncOpts {
    EncOpts {
        source_file: Some(clip()),
        duration: LONG,
        ..EncOpts::default()
    }
}

/// A published stream we watch: its encoder, playback ID and the node it landed on.
struct Watched {
    enc: Encoder,
    pid: String,
    node: usize,
    last: (u64, usize),
    /// The encoder came back after a drop: its playlist marks the join.
    rejoined: bool,
}

/// Which node (index into `nodes`) has `pid` live, waiting for it to appear.
fn landed(nodes: &[&Node], pid: &str) -> usize {
    wait_until(PUBLISH_TIMEOUT, || {
        nodes.iter().position(|n| n.stream(pid).is_some())
    })
    .unwrap_or_else(|| panic!("stream {pid} never appeared on any node"))
}

/// Last part of `pid`'s playlist; `rejoined` streams (an encoder came back) may carry the
/// discontinuity that marks their join, others must not.
fn position_of(node: &Node, pid: &str, rejoined: bool) -> Option<(u64, usize)> {
    let r = http_get(&node.media_playlist_url(pid, "source"), HTTP_TIMEOUT).ok()?;
    if r.status != 200 {
        eprintln!("{pid}: HTTP {}", r.status);
        return None;
    }
    let pl = match check_ll_hls(&r.text(), Track::Video) {
        Ok(pl) => pl,
        Err(e) => {
            eprintln!("{pid}: {e:?}\n{}", r.text());
            return None;
        }
    };
    assert!(
        rejoined || (pl.discontinuities().is_empty() && !pl.trailing_discontinuity),
        "{pid}: discontinuity in a stream that never broke:\n{}",
        r.text()
    );
    pl.last_part()
}

fn publish(b: &Balancer, nodes: &[&Node], i: usize, srt: bool) -> Watched {
    publish_as(b, nodes, i, srt, false)
}

/// Publish key `i`; `rejoined`: the same key was live before (its playlist marks the join).
fn publish_as(b: &Balancer, nodes: &[&Node], i: usize, srt: bool, rejoined: bool) -> Watched {
    let enc = if srt {
        Encoder::ffmpeg_srt(&b.srt_url(&key(i)), opts())
    } else {
        Encoder::ffmpeg_rtmp(&b.rtmp_url(&key(i)), opts())
    };
    let pid = pid(i);
    let node = landed(nodes, &pid);
    let last = wait_until(PUBLISH_TIMEOUT, || position_of(nodes[node], &pid, rejoined))
        .unwrap_or_else(|| panic!("{pid}: no playlist"));
    Watched {
        enc,
        pid,
        node,
        last,
        rejoined,
    }
}

/// Every watched stream completed a new segment since the last check, and its encoder is still
/// running.
fn all_flowing(nodes: &[&Node], ws: &mut [Watched]) {
    for w in ws.iter_mut() {
        let last = w.last;
        let now = wait_for(
            format_args!("{} to complete a segment after {last:?}", w.pid),
            FLOW_TIMEOUT,
            || position_of(nodes[w.node], &w.pid, w.rejoined).filter(|p| p.0 > last.0),
        );
        assert!(
            w.enc.is_running(),
            "{}: its encoder saw an error:\n{}",
            w.pid,
            w.enc.log_text()
        );
        w.last = now;
    }
}

/// A publish that must be refused: the encoder fails and the stream appears nowhere.
fn refused(b: &Balancer, nodes: &[&Node], i: usize, srt: bool) {
    let o = EncOpts {
        duration: Duration::from_secs(10),
        ..opts()
    };
    let mut enc = if srt {
        Encoder::ffmpeg_srt(&b.srt_url(&key(i)), o)
    } else {
        Encoder::ffmpeg_rtmp(&b.rtmp_url(&key(i)), o)
    };
    let st = enc
        .wait_exit(Duration::from_secs(30))
        .expect("a refused encoder exits");
    assert!(
        !st.success(),
        "{}: publish to a full cluster succeeded",
        pid(i)
    );
    assert!(
        nodes.iter().all(|n| n.stream(&pid(i)).is_none()),
        "{} was placed",
        pid(i)
    );
}

#[test]
fn fill_nodes_then_refuse_and_drain_keeps_streams() {
    let c = Cluster::new(2, 1);
    let b = c.balancer(1, "3s");
    let (n1, n2) = (c.node(1, 2, &[&b]), c.node(2, 2, &[&b]));
    wait_nodes(&b, &["n1", "n2"]);
    let nodes = [&n1, &n2];
    let mut ws = Vec::new();
    for i in 0..4 {
        ws.push(publish(&b, &nodes, i, i % 2 == 1));
    }
    // Least loaded: two streams on each node; then everything is full.
    assert_eq!(
        ws.iter().filter(|w| w.node == 0).count(),
        2,
        "placement: {:?}",
        ws.iter().map(|w| w.node).collect::<Vec<_>>()
    );
    assert!(
        wait_until(Duration::from_secs(10), || (b.status_of("n1").as_deref()
            == Some("full")
            && b.status_of("n2").as_deref() == Some("full"))
        .then_some(()))
        .is_some(),
        "{:?}",
        b.nodes()
    );
    refused(&b, &nodes, 4, false);
    refused(&b, &nodes, 5, true);
    // The code an SRT caller reads: libsrt's 1402 (overload), 2402 on the wire.
    let srt_addr = format!("127.0.0.1:{}", b.ports.srt);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        srt_raw::connect(
            &sock,
            &srt_addr,
            &format!("#!::r=live/{},m=publish", key(7))
        ),
        Ok(2402)
    );
    // Malformed and hostile SRT datagrams at the balancer are dropped, not passed to a node;
    // the established streams below keep flowing through them.
    let hostile = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xFF; 15],
        vec![0x80; 2000],
        srt_raw::control(8, 0, 0x0bad_cafe, &[0, 0, 0, 1]),
        srt_raw::control(4, 0, 0x0bad_cafe, &[]),
        srt_raw::control(0x7FFF, 9, 0x0bad_cafe, &[1, 2, 3, 4]),
        srt_raw::handshake(5, 5, srt_raw::HS_CONCLUSION, 7, 0, &[(5, vec![])]),
        srt_raw::handshake(
            5,
            5,
            srt_raw::HS_CONCLUSION,
            7,
            12345,
            &[(6, b"live".to_vec())],
        ),
        srt_raw::handshake(9, 0, srt_raw::HS_INDUCTION, 7, 0, &[]),
    ];
    for _ in 0..50 {
        for p in &junk {
            let _ = hostile.send_to(p, &srt_addr);
        }
    }
    assert!(
        b.log_text().contains("no node can take a stream"),
        "refusal reason not logged"
    );
    all_flowing(&nodes, &mut ws);
    // Drain n1: it takes nothing new (n2 is full too, so the next is refused) and keeps its streams.
    let r = http_request(
        "POST",
        &n1.admin_url("/api/v1/node/drain"),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        &[],
        HTTP_TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        wait_until(Duration::from_secs(10), || (b.status_of("n1").as_deref()
            == Some("draining"))
        .then_some(()))
        .is_some()
    );
    // End one stream on n2: the next publish goes to n2, not to the draining n1.
    let idx = ws.iter().position(|w| w.node == 1).unwrap();
    let mut gone = ws.remove(idx);
    gone.enc.stop(Duration::from_secs(10));
    assert!(wait_until(Duration::from_secs(15), || n2
        .stream(&gone.pid)
        .is_none()
        .then_some(()))
    .is_some());
    let w = publish(&b, &nodes, 6, false);
    assert_eq!(w.node, 1, "a draining node got a new stream");
    ws.push(w);
    all_flowing(&nodes, &mut ws);
    let m = http_get(&b.admin_url("/metrics"), HTTP_TIMEOUT)
        .unwrap()
        .text();
    assert!(
        m.contains("edge_balancer_placements_total{result=\"no_capacity\"}"),
        "{m}"
    );
    assert!(
        m.contains("edge_balancer_node_state{node=\"n1\",state=\"draining\"} 1"),
        "{m}"
    );
}

#[test]
fn an_added_node_gets_the_next_streams_and_nothing_moves() {
    let c = Cluster::new(2, 1);
    let b = c.balancer(1, "3s");
    let n1 = c.node(1, 10, &[&b]);
    wait_nodes(&b, &["n1"]);
    let mut ws: Vec<Watched> = (0..2).map(|i| publish(&b, &[&n1], i, false)).collect();
    let n2 = c.node(2, 10, &[&b]);
    wait_nodes(&b, &["n1", "n2"]);
    let nodes = [&n1, &n2];
    // n2 is empty, so least loaded sends the next two there.
    for i in 2..4 {
        let w = publish(&b, &nodes, i, i == 3);
        assert_eq!(w.node, 1, "stream {i} went to n1, not the new node");
        ws.push(w);
    }
    all_flowing(&nodes, &mut ws);
    // The first two never moved.
    assert!(n1.stream(&pid(0)).is_some() && n1.stream(&pid(1)).is_some());
    let conns = b.api("/api/v1/connections");
    assert_eq!(conns.as_array().map(|a| a.len()), Some(4), "{conns}");
}

#[test]
fn a_node_without_reports_keeps_its_streams_and_gets_no_new_ones() {
    let c = Cluster::new(2, 1);
    let b = c.balancer(1, "3s");
    let (n1, n2) = (c.node(1, 10, &[&b]), c.node(2, 10, &[&b]));
    wait_nodes(&b, &["n1", "n2"]);
    let nodes = [&n1, &n2];
    let mut ws: Vec<Watched> = (0..2).map(|i| publish(&b, &nodes, i, i == 1)).collect();
    let on_n1: Vec<String> = ws
        .iter()
        .filter(|w| w.node == 0)
        .map(|w| w.pid.clone())
        .collect();
    assert!(!on_n1.is_empty(), "least loaded put nothing on n1");
    // Cut n1's control plane for 30 s.
    let r = http_request(
        "POST",
        &n1.admin_url("/api/v1/control/pause?seconds=30"),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        &[],
        HTTP_TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        wait_until(Duration::from_secs(10), || (b.status_of("n1").as_deref()
            == Some("lost"))
        .then_some(()))
        .is_some(),
        "{:?}",
        b.nodes()
    );
    // New streams all go to n2 while n1 is silent; n1's streams keep flowing.
    for i in 2..5 {
        let w = publish(&b, &nodes, i, false);
        assert_eq!(w.node, 1, "a silent node got a new stream");
        ws.push(w);
    }
    for _ in 0..5 {
        all_flowing(&nodes, &mut ws);
    }
    // Reports resume: n1 is ready again.
    assert!(
        wait_until(Duration::from_secs(30), || (b.status_of("n1").as_deref()
            == Some("ready"))
        .then_some(()))
        .is_some(),
        "{:?}",
        b.nodes()
    );
    all_flowing(&nodes, &mut ws);
}

#[test]
fn killing_a_node_ends_only_its_streams_and_reconnects_land_elsewhere() {
    let c = Cluster::new(2, 1);
    let b = c.balancer(1, "3s");
    let (mut n1, n2) = (c.node(1, 10, &[&b]), c.node(2, 10, &[&b]));
    wait_nodes(&b, &["n1", "n2"]);
    let mut ws: Vec<Watched> = (0..4)
        .map(|i| publish(&b, &[&n1, &n2], i, i % 2 == 0))
        .collect();
    n1.kill();
    let (mut dead, mut alive): (Vec<Watched>, Vec<Watched>) =
        ws.drain(..).partition(|w| w.node == 0);
    assert!(!dead.is_empty() && !alive.is_empty());
    // The survivors keep flowing (indexes are into [n1, n2]; only n2 is asked).
    let nodes = [&n2, &n2];
    all_flowing(&nodes, &mut alive);
    // The dead node's encoders see their connection end...
    for w in dead.iter_mut() {
        assert!(
            w.enc.wait_exit(Duration::from_secs(40)).is_some(),
            "{}: encoder still connected to a dead node",
            w.pid
        );
    }
    // ...and their reconnects (a new publish with the same key) land on n2.
    for w in &dead {
        let i: usize = w.pid[1..].parse().unwrap();
        let back = publish_as(&b, &[&n2], i, false, true);
        assert_eq!(back.node, 0);
        alive.push(back);
    }
    all_flowing(&nodes, &mut alive);
}

#[test]
fn two_balancers_and_40_publishers_never_overfill_a_node() {
    let c = Cluster::new(3, 2);
    let (b1, b2) = (c.balancer(1, "3s"), c.balancer(2, "3s"));
    let nodes: Vec<Node> = (1..=3).map(|i| c.node(i, 10, &[&b1, &b2])).collect();
    wait_nodes(&b1, &["n1", "n2", "n3"]);
    wait_nodes(&b2, &["n1", "n2", "n3"]);
    // 40 publishers at once, alternating balancers and protocols, against 30 units.
    let mut encs: Vec<(usize, Encoder)> = (0..40)
        .map(|i| {
            let b = if i % 2 == 0 { &b1 } else { &b2 };
            let o = opts();
            (
                i,
                if i % 4 < 2 {
                    Encoder::ffmpeg_rtmp(&b.rtmp_url(&key(i)), o)
                } else {
                    Encoder::ffmpeg_srt(&b.srt_url(&key(i)), o)
                },
            )
        })
        .collect();
    // Settled: the cluster is full and every refused encoder has exited.
    let (counts, running) = wait_for(
        "30 streams placed and the 10 refused encoders exited",
        Duration::from_secs(60),
        || {
            let counts: Vec<usize> = nodes.iter().map(|n| n.streams().len()).collect();
            let running = encs
                .iter_mut()
                .map(|(_, e)| e.is_running())
                .filter(|r| *r)
                .count();
            (counts.iter().sum::<usize>() == 30 && running == 30).then_some((counts, running))
        },
    );
    eprintln!("streams per node {counts:?}, running encoders {running}");
    for (n, c) in counts.iter().enumerate() {
        assert!(*c <= 10, "node n{} carries {c} streams, capacity 10", n + 1);
    }
    assert_eq!(
        counts.iter().sum::<usize>(),
        30,
        "the cluster should be exactly full: {counts:?}"
    );
    assert_eq!(
        running, 30,
        "every placed stream keeps its encoder; every refused one exits"
    );
    for n in &nodes {
        let v = n.admin_get("/api/v1/node").unwrap().json().unwrap();
        assert!(
            v["used_milli_units"].as_u64().unwrap() <= v["capacity_milli_units"].as_u64().unwrap(),
            "{v}"
        );
    }
}

#[test]
fn reloading_the_balancer_config_under_load_drops_nothing() {
    let c = Cluster::new(2, 1);
    let b = c.balancer(1, "3s");
    let (n1, n2) = (c.node(1, 10, &[&b]), c.node(2, 10, &[&b]));
    wait_nodes(&b, &["n1", "n2"]);
    let nodes = [&n1, &n2];
    let mut ws: Vec<Watched> = (0..4).map(|i| publish(&b, &nodes, i, i % 2 == 1)).collect();
    // Change the policy and timeouts, then SIGHUP, several times under load.
    let text = std::fs::read_to_string(&b.config_path).unwrap();
    std::fs::write(
        &b.config_path,
        text.replace("lost_after = \"3s\"", "lost_after = \"4s\"")
            .replace("[balancer]", "[balancer]\npolicy = \"power-of-two\""),
    )
    .unwrap();
    for n in 1..=3 {
        b.signal("HUP");
        wait_for(
            format_args!("reload {n} to be logged"),
            Duration::from_secs(10),
            || (b.log_text().matches("config reloaded").count() >= n).then_some(()),
        );
    }
    // A broken config is refused and the running one kept.
    std::fs::write(&b.config_path, "[balancer]\nid = \"b1\"\nbogus = 1\n").unwrap();
    b.signal("HUP");
    wait_for(
        "the bad reload to be reported",
        Duration::from_secs(10),
        || b.log_text().contains("config reload refused").then_some(()),
    );
    all_flowing(&nodes, &mut ws);
    // New streams are still placed after the reloads.
    ws.push(publish(&b, &nodes, 4, false));
    all_flowing(&nodes, &mut ws);
}
