//! End to end: TLS on the public listeners (issue 13). Real encoders publish over RTMPS to a
//! node and through a balancer; the certificate is replaced on disk while a stream is live;
//! curl plays LL-HLS over HTTPS with HTTP/2 from a node and through a balancer, blocking
//! reloads included; hls.js in Chromium plays over HTTPS through a balancer while its
//! certificate is replaced, from GStreamer's rtmp2sink publishing over RTMPS; a balancer
//! reaches its nodes' HTTPS origins, and refuses one whose certificate it does not trust.
// End-to-end tests drive real processes on real time; the ban on the std clock (clippy.toml)
// is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use common::{cluster::*, tls::make_cert, *};

/// A test CA and a certificate it signed for `localhost` and 127.0.0.1 (not a CA itself, as
/// webpki wants a server's certificate), by openssl: (CA cert, cert, key).
fn make_ca_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (ca, ca_key) = make_cert(dir, &format!("{name}-ca"));
    let f = |ext: &str| dir.join(format!("{name}.{ext}"));
    std::fs::write(
        f("ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    let script = format!(
        "set -e; openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
         -subj /CN=localhost -keyout '{key}' -out '{csr}' 2>/dev/null; \
         openssl x509 -req -in '{csr}' -CA '{ca}' -CAkey '{ca_key}' -CAcreateserial -days 2 \
         -extfile '{ext}' -out '{crt}' 2>/dev/null",
        key = f("key").display(),
        csr = f("csr").display(),
        ca = ca.display(),
        ca_key = ca_key.display(),
        ext = f("ext").display(),
        crt = f("crt").display(),
    );
    let out = run_with_timeout(
        std::process::Command::new("sh").arg("-c").arg(script),
        Duration::from_secs(30),
    )
    .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (ca, f("crt"), f("key"))
}

/// The SHA-256 fingerprint of the certificate a TLS server at `port` presents now.
fn presented(port: u16) -> String {
    let out = run_with_timeout(
        std::process::Command::new("sh").arg("-c").arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256"
        )),
        Duration::from_secs(20),
    )
    .expect("openssl s_client");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The SHA-256 fingerprint of a certificate file.
fn fingerprint(cert: &Path) -> String {
    let out = run_with_timeout(
        std::process::Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(cert),
        Duration::from_secs(20),
    )
    .expect("openssl x509");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `curl` over HTTPS (HTTP/2 when the server offers it), trusting only `cert`, for
/// `localhost` at `port`: (HTTP version, status, body).
fn curl(cert: &Path, port: u16, path: &str) -> (String, u16, String) {
    let out = run_with_timeout(
        std::process::Command::new("curl")
            .args(["-sS", "--http2", "--max-time", "15", "--cacert"])
            .arg(cert)
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["-w", "\n%{http_version} %{http_code}"])
            .arg(format!("https://localhost:{port}{path}")),
        Duration::from_secs(20),
    )
    .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut it = tail.split(' ');
    let version = it.next().unwrap_or_default().to_string();
    let status = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    assert!(
        out.status.success(),
        "curl {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (version, status, body.to_string())
}

/// A node with RTMPS on a port of its own, its certificate at `dir/tls.crt` and `dir/tls.key`.
fn rtmps_node(dir: &Path) -> (Node, u16) {
    let port = free_tcp_port();
    let tls = format!(
        "rtmps = \"127.0.0.1:{port}\"\n\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.join("tls.crt").display(),
        dir.join("tls.key").display()
    );
    let node = Node::start(|c| {
        // `[listen.tls]` must follow the last key of `[listen]`, before `[admin]`.
        *c = c.replacen("\n[admin]", &format!("{tls}\n[admin]"), 1);
    });
    (node, port)
}

#[test]
fn ffmpeg_and_gstreamer_publish_over_rtmps_and_play() {
    let dir = TempDir::new("rtmps");
    let (cert, key) = make_cert(dir.path(), "first");
    std::fs::copy(&cert, dir.path().join("tls.crt")).unwrap();
    std::fs::copy(&key, dir.path().join("tls.key")).unwrap();
    let (node, port) = rtmps_node(dir.path());
    let mut ff = Encoder::ffmpeg_rtmp(
        &format!("rtmps://127.0.0.1:{port}/live/test-stream-key-1"),
        EncOpts::default(),
    );
    let mut gst = Encoder::gst_rtmp2sink(
        &format!("rtmps://127.0.0.1:{port}/live/test-stream-key-2"),
        EncOpts::default(),
    );
    for pid in ["one", "two"] {
        for r in ["source", "360p", "audio"] {
            node.wait_media_playlist(pid, r, 2, Duration::from_secs(30));
        }
    }
    assert!(ff.is_running(), "ffmpeg stopped:\n{}", ff.log_text());
    assert!(gst.is_running(), "rtmp2sink stopped:\n{}", gst.log_text());
    let m = node.metrics();
    assert_eq!(
        metric_value(
            &m,
            "edge_tls_handshakes_total{listener=\"rtmps\",result=\"ok\"}"
        ),
        2.0,
        "{m}"
    );
    // Plain RTMP to the TLS port is a failed handshake, and the streams never notice.
    let sessions = |n: &Node| ["one", "two"].map(|p| n.stream(p).map(|s| s["session_id"].clone()));
    let before = sessions(&node);
    let plain = Encoder::ffmpeg_rtmp(
        &format!("rtmp://127.0.0.1:{port}/live/test-stream-key-1"),
        EncOpts::short(),
    );
    wait_for(
        "the failed handshake counted",
        Duration::from_secs(20),
        || {
            (metric_value(
                &node.metrics(),
                "edge_tls_handshakes_total{listener=\"rtmps\",result=\"failed\"}",
            ) >= 1.0)
                .then_some(())
        },
    );
    drop(plain);
    assert_eq!(sessions(&node), before);
    assert!(ff.is_running() && gst.is_running());
}

#[test]
fn a_renewed_certificate_is_served_to_new_connections_while_a_stream_goes_on() {
    let dir = TempDir::new("rtmps-renew");
    let (c1, k1) = make_cert(dir.path(), "first");
    let (c2, k2) = make_cert(dir.path(), "second");
    let (live_cert, live_key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::copy(&c1, &live_cert).unwrap();
    std::fs::copy(&k1, &live_key).unwrap();
    let (node, port) = rtmps_node(dir.path());
    assert_eq!(presented(port), fingerprint(&c1));
    let mut enc = Encoder::ffmpeg_rtmp(
        &format!("rtmps://127.0.0.1:{port}/live/test-stream-key-1"),
        EncOpts::default(),
    );
    node.wait_media_playlist("one", "source", 2, Duration::from_secs(30));
    let session = node.stream("one").expect("listed")["session_id"].clone();
    // Caught half-way through a renewal: the new certificate next to the old key. Refused;
    // the first pair stays.
    std::fs::copy(&c2, &live_cert).unwrap();
    wait_for(
        "the mismatched pair refused",
        Duration::from_secs(20),
        || {
            node.log_text()
                .contains("TLS certificate not reloaded; keeping the one in use")
                .then_some(())
        },
    );
    assert!(node.log_text().contains("do not go together"));
    assert_eq!(presented(port), fingerprint(&c1));
    // The key follows: the new pair is taken for the next handshake.
    std::fs::copy(&k2, &live_key).unwrap();
    wait_for(
        "the new certificate served",
        Duration::from_secs(20),
        || (presented(port) == fingerprint(&c2)).then_some(()),
    );
    let m = node.metrics();
    assert_eq!(
        metric_value(&m, "edge_tls_certificate_reloads_total{result=\"refused\"}"),
        1.0
    );
    assert_eq!(
        metric_value(
            &m,
            "edge_tls_certificate_reloads_total{result=\"reloaded\"}"
        ),
        1.0
    );
    // The stream published under the first certificate never noticed: same session, and its
    // playlist goes on growing.
    let next =
        |pl: &hls::MediaPlaylist| pl.media_sequence_tag.unwrap_or(0) + pl.segments.len() as u64;
    let before = next(&node.wait_media_playlist("one", "source", 2, Duration::from_secs(5)));
    wait_for("two more segments", Duration::from_secs(15), || {
        (next(&node.wait_media_playlist("one", "source", 2, Duration::from_secs(5))) >= before + 2)
            .then_some(())
    });
    let s = node.stream("one").expect("still listed");
    assert_eq!(s["session_id"], session, "{s}");
    assert!(enc.is_running(), "ffmpeg stopped:\n{}", enc.log_text());
}

/// The process serving the balancer's admin port now.
fn serving_pid(b: &Balancer) -> Option<u32> {
    let r = http_get_with_headers(
        &b.admin_url("/api/v1/balancer"),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        Duration::from_secs(5),
    )
    .ok()?;
    (r.status == 200).then_some(())?;
    r.json().ok()?["pid"].as_u64().map(|p| p as u32)
}

/// Whether process `pid` still exists.
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn rtmps_through_a_balancer_is_placed_and_survives_a_hand_over() {
    let c = Cluster::new(1, 1);
    let (cert, key_file) = make_cert(c.dir.path(), "public");
    let (b, port, https) = c.balancer_with_tls(1, &cert, &key_file);
    let n1 = c.node(1, 40, &[&b]);
    wait_nodes(&b, &["n1"]);
    let opts = || EncOpts {
        source_file: Some(clip()),
        duration: Duration::from_secs(600),
        ..EncOpts::default()
    };
    let url = |i: usize| format!("rtmps://127.0.0.1:{port}/live/{}", key(i));
    let mut first = Encoder::ffmpeg_rtmp(&url(1), opts());
    let session = wait_for(
        "the RTMPS stream on the node",
        Duration::from_secs(30),
        || n1.stream(&pid(1)).and_then(|s| s["session_id"].as_u64()),
    );
    let segments = |pid: &str| {
        let pl = n1.wait_media_playlist(pid, "source", 1, Duration::from_secs(20));
        pl.media_sequence_tag.unwrap_or(0) + pl.segments.len() as u64
    };
    let before = segments(&pid(1));
    assert!(
        b.log_text()
            .contains("rtmps: TLS terminated by this balancer"),
        "{}",
        b.log_text()
    );
    // A PROXY header from any other loopback connection is not taken: it names nobody, and
    // the publish never happens.
    let forged = wire::proxy::encode(
        "192.0.2.9:4000".parse().unwrap(),
        format!("127.0.0.1:{}", b.ports.rtmp).parse().unwrap(),
        None,
    );
    let outcome = rtmp_raw::publish_after(
        "127.0.0.1".parse().unwrap(),
        format!("127.0.0.1:{}", b.ports.rtmp).parse().unwrap(),
        &forged,
        &key(4),
        Duration::from_secs(10),
    );
    assert!(
        !matches!(outcome, Ok(rtmp_raw::Outcome::Accepted(_))),
        "a forged PROXY header got a publish through: {outcome:?}"
    );
    assert!(n1.stream(&pid(4)).is_none());
    // A plain RTMP stream next to it, through the same balancer.
    let _plain = Encoder::ffmpeg_rtmp(&b.rtmp_url(&key(3)), opts());
    wait_for("the RTMP stream", Duration::from_secs(30), || {
        n1.stream(&pid(3))
    });

    // Upgrade by SIGUSR2: the RTMP inside moves to the successor, the TLS session stays here.
    let old = b.pid();
    send_signal(old, "USR2").expect("SIGUSR2");
    let new = wait_for("a successor serving", Duration::from_secs(30), || {
        serving_pid(&b).filter(|p| *p != old)
    });
    eprintln!("hand-over {old} -> {new}");
    let _successor = KillOnDrop(new);
    let log = b.log_text();
    assert!(
        log.contains("handed everything over to the successor"),
        "{log}"
    );
    // Told to stop, the old process stays while its RTMPS connection lives.
    send_signal(old, "TERM").expect("SIGTERM");
    wait_for(
        "the old process to say why it stays",
        Duration::from_secs(10),
        || {
            b.log_text()
                .contains("RTMPS connections stay in this process until they end")
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        alive(old),
        "the old balancer exited with an RTMPS stream live"
    );
    // The stream never noticed: same session, and it goes on.
    wait_for("the RTMPS stream to go on", Duration::from_secs(20), || {
        (segments(&pid(1)) >= before + 3).then_some(())
    });
    assert_eq!(
        n1.stream(&pid(1)).and_then(|s| s["session_id"].as_u64()),
        Some(session)
    );
    assert!(first.is_running(), "ffmpeg stopped:\n{}", first.log_text());
    // Viewers over HTTPS with HTTP/2, through the successor (it took the HTTPS listener too).
    let (version, status, body) = curl(&cert, https, &format!("/live/{}/index.m3u8", pid(1)));
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    let (_, status, body) = curl(&cert, https, &format!("/live/{}/source/index.m3u8", pid(1)));
    assert_eq!(status, 200, "{body}");
    check_ll_hls(&body, Track::Video).expect("a valid LL-HLS playlist through the balancer");
    // The successor took the RTMPS listener: a new encoder is placed through it.
    let _second = Encoder::ffmpeg_rtmp(&url(2), opts());
    wait_for(
        "a new RTMPS stream after the hand-over",
        Duration::from_secs(30),
        || n1.stream(&pid(2)),
    );
    // When the encoder of the old process's last RTMPS connection leaves, the process ends.
    drop(first);
    wait_for("the old process to exit", Duration::from_secs(20), || {
        (!alive(old)).then_some(())
    });
}

/// Kills a process the harness did not start (a balancer's successor) when the test ends.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = send_signal(self.0, "KILL");
    }
}

#[test]
fn a_node_serves_ll_hls_over_https_with_http2_and_blocking_reloads() {
    let dir = TempDir::new("https");
    let (cert, key_file) = make_cert(dir.path(), "web");
    let port = free_tcp_port();
    let tls = format!(
        "https = \"127.0.0.1:{port}\"\n\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key_file.display()
    );
    let node = Node::start(|c| *c = c.replacen("\n[admin]", &format!("{tls}\n[admin]"), 1));
    let _enc = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    node.wait_media_playlist("one", "source", 2, Duration::from_secs(30));
    let (version, status, body) = curl(&cert, port, "/live/one/index.m3u8");
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    assert!(
        body.starts_with("#EXTM3U") && body.contains("source/index.m3u8"),
        "{body}"
    );
    let (_, status, body) = curl(&cert, port, "/live/one/source/index.m3u8");
    assert_eq!(status, 200);
    let pl = check_ll_hls(&body, Track::Video).expect("a valid LL-HLS playlist over HTTPS");
    // A blocking reload for the next part, over HTTP/2: answered once the part exists.
    let (msn, part) = pl.last_part().expect("a part");
    let started = std::time::Instant::now();
    let (version, status, body) = curl(
        &cert,
        port,
        &format!(
            "/live/one/source/index.m3u8?_HLS_msn={msn}&_HLS_part={}",
            part + 1
        ),
    );
    let waited = started.elapsed();
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    let next = check_ll_hls(&body, Track::Video)
        .expect("valid")
        .last_part();
    assert!(next > Some((msn, part)), "{next:?} after {msn}.{part}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // The media itself over HTTPS: the init segment is served.
    let (_, status, _) = curl(&cert, port, "/live/one/source/init.mp4");
    assert_eq!(status, 200);
    // Plain HTTP stays on its own port, for a CDN or load balancer in front.
    assert!(
        http_get(&node.playlist_url("one"), Duration::from_secs(5)).is_ok_and(|r| r.status == 200)
    );
}

#[test]
fn hls_js_plays_over_https_through_a_balancer_while_its_certificate_is_replaced() {
    let c = Cluster::new(1, 1);
    let (c1, k1) = make_cert(c.dir.path(), "first");
    let (c2, k2) = make_cert(c.dir.path(), "second");
    let (live_cert, live_key) = (c.dir.path().join("tls.crt"), c.dir.path().join("tls.key"));
    std::fs::copy(&c1, &live_cert).unwrap();
    std::fs::copy(&k1, &live_key).unwrap();
    let (b, rtmps, https) = c.balancer_with_tls(1, &live_cert, &live_key);
    let n1 = c.node(1, 40, &[&b]);
    wait_nodes(&b, &["n1"]);
    // GStreamer's rtmp2sink publishes over RTMPS through the balancer.
    let mut gst = Encoder::gst_rtmp2sink(
        &format!("rtmps://127.0.0.1:{rtmps}/live/{}", key(1)),
        EncOpts {
            duration: Duration::from_secs(300),
            ..EncOpts::default()
        },
    );
    let session = wait_for(
        "the rtmp2sink stream on the node",
        Duration::from_secs(30),
        || n1.stream(&pid(1)).and_then(|s| s["session_id"].as_u64()),
    );
    n1.wait_media_playlist(&pid(1), "source", 2, Duration::from_secs(30));
    assert_eq!(presented(https), fingerprint(&c1));
    // hls.js in Chromium, trusting the two test keys as it would a test CA, plays over HTTPS
    // through the balancer while the certificate is replaced on disk.
    let url = format!("https://127.0.0.1:{https}/live/{}/index.m3u8", pid(1));
    let trust = vec![spki_hash(&c1), spki_hash(&c2)];
    let viewer = std::thread::spawn(move || play_in_chromium_trusting(&url, 24, &trust));
    std::thread::sleep(Duration::from_secs(10));
    std::fs::copy(&k2, &live_key).unwrap();
    std::fs::copy(&c2, &live_cert).unwrap();
    wait_for(
        "the new certificate served",
        Duration::from_secs(20),
        || (presented(https) == fingerprint(&c2)).then_some(()),
    );
    let report = viewer.join().expect("player thread");
    assert!(report.fatal_errors.is_empty(), "{report:?}");
    assert!(report.advanced >= 10.0, "{report:?}");
    // Trust is what made it play: the same player trusting neither key gets nothing.
    let url = format!("https://127.0.0.1:{https}/live/{}/index.m3u8", pid(1));
    let untrusted = play_in_chromium_trusting(&url, 5, &[]);
    assert!(
        untrusted.advanced == 0.0 && !untrusted.fatal_errors.is_empty(),
        "{untrusted:?}"
    );
    // A new viewer connection gets the new certificate over HTTP/2.
    let (version, status, body) = curl(&c2, https, &format!("/live/{}/index.m3u8", pid(1)));
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    // The encoder never noticed: same session, still publishing.
    assert_eq!(
        n1.stream(&pid(1)).and_then(|s| s["session_id"].as_u64()),
        Some(session)
    );
    assert!(gst.is_running(), "rtmp2sink stopped:\n{}", gst.log_text());
}

#[test]
fn a_balancer_reaches_its_nodes_over_https_when_told_to() {
    let c = Cluster::new(1, 2);
    let (ca, node_cert, node_key) = make_ca_signed(c.dir.path(), "node");
    let (other_ca, _) = make_cert(c.dir.path(), "other");
    // b1 trusts the CA that signed the node's certificate, b2 another one.
    let b1 = c.balancer_with(1, "5s", |cfg| {
        cfg.push_str(&format!("\n[node_https]\nca = \"{}\"\n", ca.display()));
    });
    let b2 = c.balancer_with(2, "5s", |cfg| {
        cfg.push_str(&format!(
            "\n[node_https]\nca = \"{}\"\n",
            other_ca.display()
        ));
    });
    let https = free_tcp_port();
    let n1 = c.node_with(1, 40, &[&b1, &b2], |cfg| {
        *cfg = cfg.replacen(
            "\n[admin]",
            &format!(
                "https = \"127.0.0.1:{https}\"\n\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[admin]",
                node_cert.display(),
                node_key.display()
            ),
            1,
        );
    });
    wait_nodes(&b1, &["n1"]);
    wait_nodes(&b2, &["n1"]);
    let mut enc = Encoder::ffmpeg_rtmp(&b1.rtmp_url(&key(1)), EncOpts::default());
    n1.wait_media_playlist(&pid(1), "source", 2, Duration::from_secs(30));
    let handshakes = |result: &str| {
        metric_value(
            &n1.metrics(),
            &format!("edge_tls_handshakes_total{{listener=\"https\",result=\"{result}\"}}"),
        )
    };
    // Through b1, over the node's HTTPS origin: a playlist, and the node counted the handshake.
    let r = http_get(&b1.playlist_url(&pid(1)), Duration::from_secs(20)).expect("b1");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("#EXT-X-STREAM-INF"), "{}", r.text());
    assert!(handshakes("ok") >= 1.0, "{}", n1.metrics());
    // b2 does not trust the node's certificate: it says so, and gives no playlist.
    let r = http_get(&b2.playlist_url(&pid(1)), Duration::from_secs(30)).expect("b2");
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(handshakes("failed") >= 1.0, "{}", n1.metrics());
    assert!(
        b2.log_text().contains("playback request failed"),
        "{}",
        b2.log_text()
    );
    assert!(enc.is_running(), "ffmpeg stopped:\n{}", enc.log_text());
}
