//! End to end: `edge ctl` steers a real cluster (a balancer and two nodes as processes) and a
//! standalone node: tables and JSON, cordon and uncordon reaching the node over the control
//! plane, a kick whose block keeps the encoder's reconnects out, `drain --wait` showing
//! progress until the node is empty, and the exit codes scripts rely on.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;

/// A publish through a balancer is on a node within this long.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// `edge ctl ARGS` against `url` with the admin token in `EDGE_TOKEN`.
fn ctl_with(url: &str, token: &str, args: &[&str]) -> Output {
    let out = run_with_timeout(
        Command::new(edge_bin())
            .arg("ctl")
            .args(["--url", url])
            .args(args)
            .env("EDGE_TOKEN", token),
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("edge ctl {args:?}: {e}"));
    eprintln!(
        "$ edge ctl {} -> {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ctl(url: &str, args: &[&str]) -> Output {
    ctl_with(url, ADMIN_TOKEN, args)
}

/// stdout of a run that must succeed.
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "edge ctl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// The clip, copied (no encoding): cheap publishers.
fn cheap(duration: Duration) -> EncOpts {
    EncOpts {
        source_file: Some(clip()),
        duration,
        ..EncOpts::default()
    }
}

/// Which of `nodes` has `pid` live (its index), waiting for it.
fn landed(nodes: &[&Node], pid: &str) -> usize {
    wait_until(PUBLISH_TIMEOUT, || {
        nodes.iter().position(|n| n.stream(pid).is_some())
    })
    .unwrap_or_else(|| panic!("stream {pid} never appeared on any node"))
}

fn node_state(n: &Node) -> String {
    let r = n.admin_get("/api/v1/node").expect("node API");
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
    v["state"].as_str().unwrap_or("?").to_string()
}

#[test]
fn edge_ctl_steers_the_cluster_through_a_balancer() {
    let c = Cluster::new(2, 1);
    let b = c.balancer(1, "5s");
    let nodes = [c.node(1, 20, &[&b]), c.node(2, 20, &[&b])];
    wait_nodes(&b, &["n1", "n2"]);
    let url = b.admin_url("");
    let url = url.trim_end_matches('/');
    let refs = [&nodes[0], &nodes[1]];

    let mut live = Encoder::ffmpeg_rtmp(&b.rtmp_url(&key(0)), cheap(Duration::from_secs(120)));
    let on = landed(&refs, &pid(0));
    let on_id = format!("n{}", on + 1);

    // Tables for people, JSON for scripts.
    let t = ok(ctl(url, &["nodes"]));
    assert!(t.starts_with("NODE"), "{t}");
    assert!(
        t.contains("n1") && t.contains("n2") && t.contains("ready"),
        "{t}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok(ctl(url, &["-o", "json", "nodes"]))).expect("nodes as JSON");
    assert_eq!(j.as_array().map(Vec::len), Some(2), "{j}");
    let pid0 = pid(0);
    let t = wait_until(REPORT_TIMEOUT, || {
        let t = ok(ctl(url, &["streams"]));
        t.contains(&pid0).then_some(t)
    })
    .expect("the stream is listed");
    assert!(t.contains(&on_id) && t.contains("rtmp"), "{t}");
    let s: serde_json::Value =
        serde_json::from_str(&ok(ctl(url, &["-o", "json", "stream", &pid0]))).expect("JSON");
    assert_eq!(s["node_id"], on_id.as_str(), "{s}");
    assert!(s["health"].is_string(), "health comes with the stream: {s}");
    assert_eq!(code(&ctl(url, &["stream", "no-such-stream"])), Some(4));

    // Cordon through the balancer reaches the node over the control plane; uncordon undoes it.
    let t = ok(ctl(url, &["cordon", "n1"]));
    assert_eq!(t.trim(), "node n1: cordoned");
    assert_eq!(node_state(&nodes[0]), "cordoned");
    assert_eq!(b.status_of("n1").as_deref(), Some("cordoned"));
    let t = ok(ctl(url, &["uncordon", "n1"]));
    assert_eq!(t.trim(), "node n1: ready");
    assert_eq!(node_state(&nodes[0]), "ready");
    assert_eq!(code(&ctl(url, &["cordon", "n9"])), Some(4));

    // A kick with a block: the encoder is cut off, and its reconnect is refused on every node.
    let mut kicked = Encoder::ffmpeg_rtmp(&b.rtmp_url(&key(1)), cheap(Duration::from_secs(120)));
    landed(&refs, &pid(1));
    let pid1 = pid(1);
    wait_until(REPORT_TIMEOUT, || {
        ok(ctl(url, &["streams"])).contains(&pid1).then_some(())
    })
    .expect("the second stream is listed");
    let t = ok(ctl(url, &["kick", &pid1, "--block", "2m"]));
    assert!(t.contains(&format!("kicked {pid1} on n")), "{t}");
    assert!(t.contains("refused for 120 s"), "{t}");
    assert!(
        kicked.wait_exit(Duration::from_secs(20)).is_some(),
        "the kicked encoder is still connected"
    );
    let again = Encoder::ffmpeg_rtmp(&b.rtmp_url(&key(1)), cheap(Duration::from_secs(20)));
    again.expect_refused(Duration::from_secs(20));
    assert!(
        b.log_text().contains("blocked by an operator"),
        "the balancer says why it refused"
    );
    assert_eq!(code(&ctl(url, &["kick", "no-such-stream"])), Some(4));
    assert_eq!(
        code(&ctl(url, &["kick", &pid0, "--block", "48h"])),
        Some(1),
        "a block over the maximum is refused"
    );

    // Drain the node that carries a finite stream: progress, then done when it is empty.
    live.stop(Duration::from_secs(10));
    wait_until(REPORT_TIMEOUT, || {
        (!ok(ctl(url, &["streams"])).contains(&pid0)).then_some(())
    })
    .expect("the first stream ended");
    let finite = Encoder::ffmpeg_rtmp(&b.rtmp_url(&key(2)), cheap(Duration::from_secs(12)));
    let at = landed(&refs, &pid(2));
    let node = format!("n{}", at + 1);
    let started = Instant::now();
    let t = ok(ctl(url, &["drain", &node, "--wait", "--timeout", "90s"]));
    assert!(t.contains(&format!("node {node}: draining")), "{t}");
    assert!(t.contains("stream(s) left"), "{t}");
    assert!(t.trim_end().ends_with("drained: no streams left"), "{t}");
    // The stream on it ran to its end (12 s of media): the drain waited for it.
    assert!(started.elapsed() > Duration::from_secs(3), "{t}");
    assert_eq!(node_state(&nodes[at]), "draining");
    drop(finite);

    // Scripts can tell failures apart.
    let connected = ctl(url, &["forget", "n1"]);
    assert_eq!(code(&connected), Some(1));
    assert!(String::from_utf8_lossy(&connected.stderr).contains("connected"));
    assert_eq!(code(&ctl_with(url, "wrong-token", &["nodes"])), Some(3));
    assert_eq!(code(&ctl("http://127.0.0.1:1", &["nodes"])), Some(3));
    let no_token = run_with_timeout(
        Command::new(edge_bin())
            .args(["ctl", "--url", url, "nodes"])
            .env_remove("EDGE_TOKEN"),
        Duration::from_secs(30),
    )
    .expect("run edge ctl");
    assert_eq!(code(&no_token), Some(2));
}

#[test]
fn edge_ctl_against_a_standalone_node() {
    let node = Node::start(|_| {});
    let url = format!("http://127.0.0.1:{}", node.ports.admin);
    let _enc = Encoder::ffmpeg_rtmp(
        &node.rtmp_url("test-stream-key-1"),
        cheap(Duration::from_secs(60)),
    );
    landed(&[&node], "one");
    let t = ok(ctl(&url, &["nodes"]));
    assert!(t.lines().count() == 2 && t.contains("ready"), "{t}");
    let t = ok(ctl(&url, &["streams"]));
    assert!(t.contains("one") && t.contains("this"), "{t}");
    let id = {
        let r = node.admin_get("/api/v1/node").expect("node API");
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON");
        v["id"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(
        ok(ctl(&url, &["cordon", &id])).trim(),
        format!("node {id}: cordoned")
    );
    assert_eq!(code(&ctl(&url, &["cordon", "some-other-node"])), Some(4));
    assert_eq!(
        ok(ctl(&url, &["uncordon", &id])).trim(),
        format!("node {id}: ready")
    );
    assert_eq!(code(&ctl(&url, &["forget", &id])), Some(1));
    let t = ok(ctl(&url, &["kick", "one"]));
    assert_eq!(t.trim(), format!("kicked one on {id}"));
}
