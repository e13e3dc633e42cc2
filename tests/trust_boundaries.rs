//! End to end: what only a balancer may say is believed only from `trusted_proxies`. A node
//! trusts 127.0.0.1 (its balancer); other loopback addresses (127.0.0.5, 127.0.0.6) are
//! strangers on the internet. A PROXY v2 header naming another encoder and a reservation, and
//! an SRT stream ID carrying `edge-res`/`edge-client`, change nothing when a stranger sends
//! them; the same PROXY header from the balancer's address is believed. Also with the node
//! listening on `[::]`, where an IPv4 peer arrives as an IPv4-mapped IPv6 address.
// End-to-end tests drive real processes on real time; the ban on the std clock (clippy.toml)
// is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use common::{cluster::*, rtmp_raw, srt_raw, *};

/// How long one raw publish may wait for each answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The encoder a forged header claims to be (TEST-NET-3: never a real peer here).
const FORGED_CLIENT: &str = "203.0.113.7:1234";
/// A reservation ID nobody made.
const FORGED_RESERVATION: u64 = 4242;

fn stranger(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

fn proxy_header(node_rtmp: SocketAddr) -> Vec<u8> {
    let forged: SocketAddr = FORGED_CLIENT.parse().unwrap();
    wire::proxy::encode(forged, node_rtmp, Some(FORGED_RESERVATION))
}

/// The node's view of `pid`'s publisher address, once it has one.
fn client_of(node: &Node, pid: &str) -> String {
    wait_for(format_args!("{pid} on the node"), ATTEMPT_TIMEOUT, || {
        node.stream(pid)
            .and_then(|s| s["client_addr"].as_str().map(String::from))
    })
}

fn check_boundaries(node: &Node) {
    let rtmp = SocketAddr::from(([127, 0, 0, 1], node.ports.rtmp));
    // A stranger's PROXY header: the connection does not even start (it is not RTMP), and
    // nothing about the forged encoder or reservation reaches the node's state.
    let out = rtmp_raw::publish_after(
        stranger(5),
        rtmp,
        &proxy_header(rtmp),
        &key(0),
        ATTEMPT_TIMEOUT,
    );
    assert!(
        !matches!(out, Ok(rtmp_raw::Outcome::Accepted(_))),
        "a stranger's PROXY header was accepted"
    );
    assert!(node.stream(&pid(0)).is_none(), "{:?}", node.streams());

    // The same header from the balancer's address is believed: the node records the encoder
    // the header names. (No such reservation: the node decides the key itself.)
    let header = wire::proxy::encode(FORGED_CLIENT.parse().unwrap(), rtmp, None);
    let out = rtmp_raw::publish_after(stranger(1), rtmp, &header, &key(1), ATTEMPT_TIMEOUT)
        .expect("publish from the trusted address");
    let rtmp_raw::Outcome::Accepted(conn) = out else {
        panic!("the trusted PROXY publish was refused: {out:?}");
    };
    assert_eq!(
        client_of(node, &pid(1)),
        FORGED_CLIENT,
        "the trusted header's encoder address"
    );
    drop(conn);

    // A stranger's SRT stream ID with edge-res/edge-client: the key is checked as for anyone,
    // and the node sees the stranger's own address, not the forged one.
    let sock = UdpSocket::bind(SocketAddr::new(stranger(6), 0)).expect("bind 127.0.0.6");
    let sid = wire::streamid::for_node(&key(2), FORGED_RESERVATION, FORGED_CLIENT.parse().unwrap());
    let srt = format!("127.0.0.1:{}", node.ports.srt);
    assert_eq!(
        srt_raw::connect(&sock, &srt, &sid),
        Ok(srt_raw::HS_CONCLUSION),
        "a stranger with a valid key publishes as itself"
    );
    let seen = client_of(node, &pid(2));
    let own = sock.local_addr().unwrap();
    assert!(
        seen == own.to_string() || seen == format!("[::ffff:{}]:{}", own.ip(), own.port()),
        "the node took the stranger for {seen}, not {own}"
    );
}

#[test]
fn proxy_headers_and_relay_stream_ids_count_only_from_trusted_proxies() {
    let c = Cluster::new(1, 1);
    let b = c.balancer(1, "5s");
    let node = c.node(1, 10, &[&b]);
    check_boundaries(&node);
}

#[test]
fn ipv4_mapped_peers_on_a_dual_stack_listener_are_judged_by_their_ipv4_address() {
    let c = Cluster::new(1, 1);
    let b = c.balancer(1, "5s");
    let node = c.node_with(1, 10, &[&b], |cfg| {
        // Listen on every address; tell balancers where to relay.
        let port = |key: &str| {
            let at = cfg.find(&format!("{key} = \"127.0.0.1:")).expect(key) + key.len() + 14;
            cfg[at..].split('"').next().unwrap_or_default().to_string()
        };
        let (rtmp, srt) = (port("rtmp"), port("srt"));
        *cfg = cfg
            .replace(&format!("rtmp = \"127.0.0.1:{rtmp}\""), &format!("rtmp = \"[::]:{rtmp}\""))
            .replace(&format!("srt = \"127.0.0.1:{srt}\""), &format!("srt = \"[::]:{srt}\""))
            .replace(
                "[control]\n",
                &format!("[control]\nadvertise_rtmp = \"127.0.0.1:{rtmp}\"\nadvertise_srt = \"127.0.0.1:{srt}\"\n"),
            );
    });
    check_boundaries(&node);
}

#[test]
fn trusted_proxies_follow_a_reload_on_sighup() {
    let c = Cluster::new(1, 1);
    let b = c.balancer(1, "5s");
    let node = c.node(1, 10, &[&b]);
    let rtmp = SocketAddr::from(([127, 0, 0, 1], node.ports.rtmp));
    let header = wire::proxy::encode(FORGED_CLIENT.parse().unwrap(), rtmp, None);
    // 127.0.0.7 is a stranger: its PROXY header ends the connection.
    let out = rtmp_raw::publish_after(stranger(7), rtmp, &header, &key(3), ATTEMPT_TIMEOUT);
    assert!(
        !matches!(out, Ok(rtmp_raw::Outcome::Accepted(_))),
        "a stranger's PROXY header was accepted"
    );
    // A second balancer at 127.0.0.7 joins: the operator adds it and sends SIGHUP.
    let text = std::fs::read_to_string(&node.config_path).expect("node config");
    std::fs::write(
        &node.config_path,
        text.replace(
            "trusted_proxies = [\"127.0.0.1\"]",
            "trusted_proxies = [\"127.0.0.1\", \"127.0.0.7\"]",
        ),
    )
    .expect("write node config");
    send_signal(node.pid(), "HUP").expect("SIGHUP");
    wait_for("the node to log the reload", ATTEMPT_TIMEOUT, || {
        node.log_text()
            .contains("config reloaded: keys, webhook, admin token, trusted proxies")
            .then_some(())
    });
    assert!(
        !node.log_text().contains("apply at the next restart"),
        "trusted proxies were reported as needing a restart"
    );
    let out = rtmp_raw::publish_after(stranger(7), rtmp, &header, &key(3), ATTEMPT_TIMEOUT)
        .expect("publish from the newly trusted address");
    let rtmp_raw::Outcome::Accepted(conn) = out else {
        panic!("the newly trusted PROXY publish was refused: {out:?}");
    };
    assert_eq!(client_of(&node, &pid(3)), FORGED_CLIENT);
    drop(conn);
}

#[test]
fn control_plane_certificates_follow_a_reload_on_sighup() {
    let c = Cluster::new(1, 1);
    let b = c.balancer(1, "5s");
    let node = c.node(1, 10, &[&b]);
    wait_for("the node to report", ATTEMPT_TIMEOUT, || {
        (b.status_of("n1").as_deref() == Some("ready")).then_some(())
    });
    let days_left = || {
        metric_value(
            &node.metrics(),
            r#"edge_control_certificate_expiry_seconds{cert="own"}"#,
        ) / 86_400.0
    };
    assert!(days_left() > 360.0, "{} days", days_left());
    // The operator re-issues n1's certificate (30 days, same CA) in place and sends SIGHUP.
    let out = run_edge(&[
        "certs",
        "--out",
        c.certs.to_str().expect("utf-8 path"),
        "--node",
        "n1",
        "--days",
        "30",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    send_signal(node.pid(), "HUP").expect("SIGHUP");
    wait_for(
        "the node to present the re-issued certificate and say so",
        ATTEMPT_TIMEOUT,
        // The gauge moves just before the log line is written: wait for both.
        || {
            (days_left() < 31.0
                && node
                    .log_text()
                    .contains("control-plane certificates reloaded"))
            .then_some(())
        },
    );
    // A certificate file that does not load is refused; the node keeps its link and figures.
    std::fs::write(c.certs.join("node-n1.pem"), "not a certificate").expect("write");
    send_signal(node.pid(), "HUP").expect("SIGHUP");
    wait_for(
        "the node to refuse the broken file",
        ATTEMPT_TIMEOUT,
        || {
            node.log_text()
                .contains("control-plane certificates not reloaded")
                .then_some(())
        },
    );
    assert!(days_left() < 31.0 && days_left() > 29.0);
    assert_eq!(b.status_of("n1").as_deref(), Some("ready"));
}

#[test]
fn the_balancer_takes_renewed_control_plane_certificates_on_sighup() {
    let c = Cluster::new(2, 1);
    let b = c.balancer(1, "5s");
    let n1 = c.node(1, 10, &[&b]);
    wait_for("n1 to report", ATTEMPT_TIMEOUT, || {
        (b.status_of("n1").as_deref() == Some("ready")).then_some(())
    });
    let days_left = || {
        let m = http_get(&b.admin_url("/metrics"), Duration::from_secs(5))
            .expect("balancer metrics")
            .text();
        metric_value(&m, r#"edge_control_certificate_expiry_seconds{cert="own"}"#) / 86_400.0
    };
    assert!(days_left() > 360.0, "{} days", days_left());
    // The operator re-issues b1's certificate (30 days, same CA) in place and sends SIGHUP.
    let out = run_edge(&[
        "certs",
        "--out",
        c.certs.to_str().expect("utf-8 path"),
        "--balancer",
        "b1",
        "--days",
        "30",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    send_signal(b.pid(), "HUP").expect("SIGHUP");
    wait_for(
        "the balancer to load the renewed certificate and say so",
        ATTEMPT_TIMEOUT,
        // The gauge moves just before the log line is written (CI once read the log between
        // the two): wait for both.
        || {
            (days_left() < 31.0
                && b.log_text()
                    .contains("control-plane certificates reloaded; new node connections get them"))
            .then_some(())
        },
    );
    // A node connecting now is accepted with it; the node already connected never noticed.
    let _n2 = c.node(2, 10, &[&b]);
    wait_for("n2 to report", ATTEMPT_TIMEOUT, || {
        (b.status_of("n2").as_deref() == Some("ready")).then_some(())
    });
    assert_eq!(b.status_of("n1").as_deref(), Some("ready"));
    assert_eq!(
        n1.log_text().matches("control connected").count(),
        1,
        "n1 reconnected:\n{}",
        n1.log_text()
    );
    // A file that does not load is refused; the balancer keeps what it has.
    std::fs::write(c.certs.join("balancer-b1.pem"), "not a certificate").expect("write");
    send_signal(b.pid(), "HUP").expect("SIGHUP");
    wait_for(
        "the balancer to refuse the broken file",
        ATTEMPT_TIMEOUT,
        || {
            b.log_text()
                .contains("control-plane certificates not reloaded")
                .then_some(())
        },
    );
    assert!(days_left() < 31.0 && days_left() > 29.0);
    assert_eq!(b.status_of("n1").as_deref(), Some("ready"));
}
