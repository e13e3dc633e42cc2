use super::*;

#[test]
fn dev_example_is_valid_and_has_the_dev_stream() {
    let c = load_str(DEV_CONFIG, "dev.toml").expect("dev config must validate");
    assert_eq!(c.streams.len(), 2);
    assert_eq!(c.streams[0].key, "dev-stream-key");
    assert_eq!(c.streams[0].playback_id, "dev");
    assert_eq!(c.streams[1].key, "dev-stream-key-2");
    assert_eq!(c.streams[1].playback_id, "dev2");
    let names: Vec<_> = c.ladder.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["720p", "480p", "360p"]);
    assert_eq!(c.ladder[0].width, 1280);
    assert_eq!(c.ladder[0].milli_units, 1000);
    assert_eq!(c.listen.rtmp.port(), 1935);
    assert_eq!(c.listen.srt.port(), 9000);
    assert_eq!(c.listen.http.port(), 8080);
    assert_eq!(c.listen.admin.port(), 8081);
    assert_eq!(c.node.capacity, Capacity::Units(4000));
}

#[test]
fn webhook_ca_is_checked() {
    let dir = std::env::temp_dir().join(format!("edge-config-ca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMII=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let with = |webhook: &str, ca_line: &str| {
        DEV_CONFIG.replace(
            "[transcode]",
            &format!("[auth]\nwebhook = \"{webhook}\"\n{ca_line}secret = \"0123456789abcdef0123456789abcdef\"\n\n[transcode]"),
        )
    };
    let line = |p: &std::path::Path| format!("webhook_ca = \"{}\"\n", p.display());
    let c = load_str(&with("https://hook.example/publish", &line(&ca)), "x.toml").unwrap();
    assert_eq!(c.auth.webhook_ca.as_deref(), Some(ca.as_path()));
    load_str(&with("https://hook.example/publish", ""), "x.toml").expect("public roots");
    for (webhook, ca_line, want) in [
        (
            "http://hook.example/publish",
            line(&ca),
            "auth.webhook_ca: only an https:// URL has a certificate",
        ),
        (
            "https://hook.example/publish",
            line(&junk),
            "holds no PEM certificate",
        ),
        (
            "https://hook.example/publish",
            line(&dir.join("absent.pem")),
            "auth.webhook_ca: cannot read",
        ),
    ] {
        let lines = load_str(&with(webhook, &ca_line), "x.toml")
            .unwrap_err()
            .lines();
        assert!(lines.iter().any(|l| l.contains(want)), "{want}: {lines:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn node_example_is_valid_once_its_token_file_exists() {
    let dir = std::env::temp_dir().join(format!("edge-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("admin-token");
    std::fs::write(&token, "0123456789abcdef0123\n").unwrap();
    let secret = dir.join("auth-secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let text = include_str!("../examples/node.toml")
        .replace("/etc/edge/admin-token", token.to_str().unwrap())
        .replace("/etc/edge/auth-secret", secret.to_str().unwrap());
    let c = load_str(&text, "node.toml").expect("node example must validate");
    assert_eq!(c.admin.token, "0123456789abcdef0123");
    assert_eq!(
        c.auth.secret.as_ref().map(|s| s.expose()),
        Some("0123456789abcdef0123456789abcdef")
    );
    assert!(!format!("{:?}", c.auth).contains("0123456789abcdef0123456789abcdef"));
    assert_eq!(
        c.events.as_ref().map(|e| e.url.as_str()),
        Some("https://hooks.example.internal/edge-events")
    );
    // A webhook without a secret is refused, naming the key.
    let unsigned = text.replace(
        &format!("secret_file = \"{}\"", secret.to_str().unwrap()),
        "",
    );
    let err = load_str(&unsigned, "node.toml").unwrap_err();
    assert!(
        err.lines()
            .iter()
            .any(|l| l.contains("auth.secret: required with auth.webhook")),
        "{err}"
    );
    assert_eq!(c.node.capacity, Capacity::Calibrate);
    assert_eq!(
        c.streams[0].srt_passphrase.as_deref(),
        Some("a-srt-passphrase")
    );
    // And without the file, the problem names the key.
    let err = load_str(include_str!("../examples/node.toml"), "node.toml").unwrap_err();
    assert!(
        err.lines()
            .iter()
            .any(|l| l.contains("admin.token_file: cannot read")),
        "{err}"
    );
}

#[test]
fn unknown_key_is_an_error_naming_the_key() {
    let text = DEV_CONFIG.replace("[hls]", "[hls]\npart_targte = \"200ms\"");
    let err = load_str(&text, "x.toml").unwrap_err().to_string();
    assert!(err.contains("part_targte"), "{err}");
    assert!(err.contains("x.toml: line"), "{err}");
}

#[test]
fn every_value_problem_is_reported_with_its_path() {
    let text = r#"
[node]
id = "bad id!"
capacity_units = -1
[admin]
token = "short"
[hls]
part_target = "50ms"
window_segments = 1
part_hold_back_parts = 1
[srt]
passphrase = "short"
[auth]
webhook = "ftp://x"
[[ladder]]
name = "source"
height = 721
video_kbps = 10
[[streams]]
key = "k"
playback_id = "p"
[[streams]]
key = "k"
playback_id = "p"
"#;
    let lines = load_str(text, "bad.toml").unwrap_err().lines();
    for want in [
        "bad.toml: node.id:",
        "node.capacity_units:",
        "admin.token: too short",
        "hls.part_target:",
        "hls.window_segments:",
        "hls.part_hold_back_parts: must be between 2 and 6",
        "srt.passphrase:",
        "auth.webhook:",
        "ladder[0].name:",
        "ladder[0].height:",
        "ladder[0].video_kbps:",
        "streams[0].key:",
        "streams[1].key: duplicate",
        "streams[1].playback_id: duplicate",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "missing {want:?} in {lines:#?}"
        );
    }
}

#[test]
fn admin_token_is_required_and_redacted() {
    let text = DEV_CONFIG.replace("token = \"dev-admin-token-change-me\"", "");
    let lines = load_str(&text, "x.toml").unwrap_err().lines();
    assert!(
        lines.iter().any(|l| l.contains("admin.token: missing")),
        "{lines:?}"
    );
    let c = load_str(DEV_CONFIG, "dev.toml").unwrap();
    assert!(!format!("{c:?}").contains("dev-admin-token"));
    assert!(!format!("{c:?}").contains("dev-stream-key"));
}

#[test]
fn stream_units_count_the_rungs_that_run() {
    let c = load_str(DEV_CONFIG, "dev.toml").unwrap();
    let all = c.stream_milli_units();
    let src = crate::DECODE_REFERENCE;
    let small = c.milli_units_for(&src, &c.ladder[2..]);
    assert_eq!(
        small,
        c.transcode.decode_milli_units + c.ladder[2].milli_units
    );
    assert_eq!(c.milli_units_for(&src, &[]), c.transcode.decode_milli_units);
    assert!(all > small);
}

#[test]
fn a_stream_is_charged_for_the_largest_source_until_its_own_is_known() {
    let c = load_str(DEV_CONFIG, "dev.toml").unwrap();
    let d = c.transcode.decode_milli_units;
    let rungs: u32 = c.ladder.iter().map(|r| r.milli_units).sum();
    // The default maximum is 1080p60: 4.5 times the 720p30 a decode unit is defined by.
    assert_eq!(c.transcode.max_source.to_string(), "1920x1080@60");
    assert_eq!(
        c.stream_milli_units(),
        (f64::from(d) * 4.5).ceil() as u32 + rungs
    );
    let at = |width, height, fps| crate::SourceSize { width, height, fps };
    // Smaller than 720p30 costs no less; 1080p30 costs 2.25 times; a vertical phone stream
    // the same as its landscape twin.
    assert_eq!(c.decode_milli_units_for(&at(640, 360, 30.0)), d);
    assert_eq!(
        c.decode_milli_units_for(&at(1920, 1080, 30.0)),
        (f64::from(d) * 2.25).ceil() as u32
    );
    assert_eq!(
        c.decode_milli_units_for(&at(1080, 1920, 30.0)),
        c.decode_milli_units_for(&at(1920, 1080, 30.0))
    );
    let max = c.transcode.max_source;
    assert_eq!(max.refuses(&at(1920, 1080, 60.0)), None);
    assert_eq!(max.refuses(&at(1080, 1920, 59.94)), None);
    assert_eq!(
        max.refuses(&at(3840, 2160, 60.0)).as_deref(),
        Some("source 3840x2160 is larger than this server's maximum 1920x1080")
    );
    assert_eq!(
        max.refuses(&at(1280, 720, 120.0)).as_deref(),
        Some("source frame rate 120.00 is above this server's maximum 60")
    );
}

#[test]
fn a_capacity_below_one_largest_stream_is_refused() {
    let text = DEV_CONFIG.replace("capacity_units = 4.0", "capacity_units = 3.0");
    let lines = load_str(&text, "x.toml").unwrap_err().lines();
    assert!(
        lines.iter().any(|l| l.contains(
            "node.capacity_units: 3 cannot take a single stream: until its first keyframe a stream is charged"
        ) && l.contains("1920x1080@60")),
        "{lines:?}"
    );
    let text = text.replace(
        "[transcode]",
        "[transcode]\nmax_source_width = 1280\nmax_source_height = 720\nmax_source_fps = 30",
    );
    load_str(&text, "x.toml").expect("a 720p30 maximum fits 3 units");
}

#[test]
fn max_source_settings_are_checked() {
    let text = DEV_CONFIG.replace(
        "[transcode]",
        "[transcode]\nmax_source_width = 720\nmax_source_height = 1280\nmax_source_fps = 0",
    );
    let lines = load_str(&text, "x.toml").unwrap_err().lines();
    for want in [
        "transcode.max_source_fps: must be between 1 and 240",
        "transcode.max_source_height: is the short side",
    ] {
        assert!(lines.iter().any(|l| l.contains(want)), "{want}: {lines:?}");
    }
    let text = DEV_CONFIG.replace("[transcode]", "[transcode]\nmax_source_width = 10000");
    let lines = load_str(&text, "x.toml").unwrap_err().lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("transcode.max_source_width: must be between 1 and 8192")),
        "{lines:?}"
    );
}

#[test]
fn balancer_example_is_valid_once_its_files_exist() {
    let dir = std::env::temp_dir().join(format!("edge-config-bal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in [
        "admin-token",
        "ca.pem",
        "balancer-lb-1.pem",
        "balancer-lb-1.key",
    ] {
        std::fs::write(dir.join(f), "0123456789abcdef0123\n").unwrap();
    }
    let text = include_str!("../examples/balancer.toml")
        .replace("/etc/edge/certs", dir.to_str().unwrap())
        .replace(
            "/etc/edge/admin-token",
            dir.join("admin-token").to_str().unwrap(),
        );
    let c = load_balancer_str(&text, "balancer.toml").expect("balancer example must validate");
    assert_eq!(c.id, "lb-1");
    assert_eq!(c.policy, Ranking::LeastLoaded);
    assert_eq!(c.listen.control.port(), 7000);
    assert_eq!(c.lost_after, std::time::Duration::from_secs(5));
}

#[test]
fn balancer_problems_are_all_reported() {
    let text = "[balancer]\nid = \"bad id\"\nlost_after = \"10ms\"\npolicy = \"random\"\n[listen]\nrtmp = \"0.0.0.0:1935\"\nrtmps = \"0.0.0.0:1935\"\n[admin]\ntoken = \"short\"\n[tls]\nca = \"/nope/ca.pem\"\ncert = \"/nope/c.pem\"\nkey = \"/nope/k.key\"\n[node_https]\nca = \"/nope/nodes.pem\"\nserver_name = \"not a name\"\n";
    let lines = load_balancer_str(text, "b.toml").unwrap_err().lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("listen.rtmps") && l.contains("needs listen.tls")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("listen.rtmps") && l.contains("same address as listen.rtmp")),
        "{lines:#?}"
    );
    for want in [
        "balancer.id",
        "balancer.lost_after",
        "balancer.policy",
        "admin.token",
        "tls.ca",
        "tls.cert",
        "tls.key",
        "node_https.ca",
        "node_https.server_name",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(&format!("b.toml: {want}"))),
            "missing {want} in {lines:#?}"
        );
    }
    let unknown = load_balancer_str("[balancer]\nid = \"b\"\nwat = 1\n", "b.toml")
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("wat"), "{unknown}");
}

#[test]
fn node_control_section_needs_advertised_addresses_for_wildcard_listens() {
    let text = format!(
        "{DEV_CONFIG}\n[control]\nbalancers = [\"127.0.0.1:7000\"]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\ntrusted_proxies = [\"127.0.0.1\"]\n"
    );
    // The dev config listens on 0.0.0.0 for rtmp/srt/http: balancers cannot relay to that.
    let lines = load_str(&text, "n.toml").unwrap_err().lines();
    assert!(
        lines.iter().any(|l| l.contains("control.advertise_rtmp")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("control.advertise_srt")),
        "{lines:#?}"
    );
    let ok = text.replace("trusted_proxies", "advertise_rtmp = \"10.0.0.1:1935\"\nadvertise_srt = \"10.0.0.1:9000\"\nadvertise_http = \"10.0.0.1:8080\"\ntrusted_proxies");
    let c = load_str(&ok, "n.toml").expect("valid with advertised addresses");
    let control = c.control.unwrap();
    assert_eq!(control.advertise_rtmp.port(), 1935);
    assert_eq!(
        control.advertise_https, None,
        "no HTTPS origin without listen.https"
    );
    // An HTTPS origin on 0.0.0.0 is advertised at the HTTP origin's address, its own port.
    let wildcard = format!(
        "{}\n[listen.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
        ok.replacen("[listen]\n", "[listen]\nhttps = \"0.0.0.0:8443\"\n", 1)
    );
    let c = load_str(&wildcard, "n.toml").expect("valid with listen.https on 0.0.0.0");
    assert_eq!(
        c.control.unwrap().advertise_https,
        Some("10.0.0.1:8443".parse().unwrap())
    );
    // An HTTPS origin to advertise needs one to listen on.
    let https = ok.replace(
        "trusted_proxies",
        "advertise_https = \"10.0.0.1:8443\"\ntrusted_proxies",
    );
    let lines = load_str(&https, "n.toml").unwrap_err().lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("control.advertise_https") && l.contains("needs listen.https")),
        "{lines:#?}"
    );
}

#[test]
fn absent_keys_take_the_one_default() {
    let node = "[node]\nid = \"n\"\n[admin]\ntoken = \"0123456789abcdef\"\n[[streams]]\nkey = \"stream-key-1\"\nplayback_id = \"p\"\n";
    let c = load_str(node, "n.toml").expect("minimal node config");
    assert_eq!(c.hls.window_segments, DEFAULT_WINDOW_SEGMENTS);
    assert_eq!(c.hls.part_target, DEFAULT_PART_TARGET);
    assert_eq!(c.hls.segment_target, DEFAULT_SEGMENT_TARGET);
    assert_eq!(c.hls.reconnect_window, DEFAULT_RECONNECT_WINDOW);
    assert_eq!(c.hls.ended_retention, DEFAULT_ENDED_RETENTION);
    assert_eq!(c.hls.keyframe_join, DEFAULT_KEYFRAME_JOIN);
    assert_eq!(c.hls.part_hold_back_parts, DEFAULT_PART_HOLD_BACK_PARTS);
    assert_eq!(c.srt.latency, DEFAULT_SRT_LATENCY);
    assert_eq!(c.auth.webhook_timeout, DEFAULT_WEBHOOK_TIMEOUT);
    assert_eq!(c.transcode.x264_preset, DEFAULT_X264_PRESET);
    assert_eq!(c.transcode.passthrough, DEFAULT_PASSTHROUGH);
    assert_eq!(c.transcode.own_scaler, DEFAULT_OWN_SCALER);
    assert_eq!(c.node.overload_lag, DEFAULT_OVERLOAD_LAG);
    assert_eq!(c.listen.rtmp, DEFAULT_LISTEN_RTMP);
    assert_eq!(c.listen.srt, DEFAULT_LISTEN_SRT);
    assert_eq!(c.listen.http, DEFAULT_LISTEN_HTTP);
    assert_eq!(c.listen.admin, DEFAULT_LISTEN_ADMIN);
    assert!(c.ladder.iter().all(|r| r.fps == DEFAULT_RUNG_FPS));
    // The example files spell the defaults out; they must agree with them.
    let dev = load_str(DEV_CONFIG, "dev.toml").unwrap();
    assert_eq!(dev.hls.window_segments, DEFAULT_WINDOW_SEGMENTS);
    assert_eq!(dev.hls.reconnect_window, DEFAULT_RECONNECT_WINDOW);

    let dir = std::env::temp_dir().join(format!("edge-config-defaults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    let bal = format!("[balancer]\nid = \"b\"\n[admin]\ntoken = \"0123456789abcdef\"\n[tls]\nca = \"{d}\"\ncert = \"{d}\"\nkey = \"{d}\"\n");
    let b = load_balancer_str(&bal, "b.toml").expect("minimal balancer config");
    assert_eq!(b.lost_after, DEFAULT_LOST_AFTER);
    assert_eq!(b.reservation_ttl, DEFAULT_RESERVATION_TTL);
    assert_eq!(b.reconnect_window, DEFAULT_RECONNECT_WINDOW);
    assert_eq!(b.policy, DEFAULT_RANKING);
    assert_eq!(b.listen.control, DEFAULT_LISTEN_CONTROL);
}

#[test]
fn closed_sets_are_typed_and_unknown_names_are_problems() {
    let text = DEV_CONFIG.replace("x264_preset = \"veryfast\"", "x264_preset = \"placebo\"");
    assert!(text.contains("placebo"), "dev.toml sets x264_preset");
    let lines = load_str(&text, "x.toml").unwrap_err().lines();
    assert!(
        lines.iter().any(|l| l
            == "x.toml: transcode.x264_preset: must be one of ultrafast, superfast, veryfast, faster, fast, medium"),
        "{lines:#?}"
    );
    let ok = text.replace("placebo", "medium");
    assert_eq!(
        load_str(&ok, "x.toml").unwrap().transcode.x264_preset,
        X264Preset::Medium
    );
}

#[test]
fn rtmps_needs_a_certificate_and_a_port_of_its_own() {
    let with = |listen: &str| DEV_CONFIG.replacen("[listen]", &format!("[listen]\n{listen}"), 1);
    // Off unless set.
    let c = load_str(DEV_CONFIG, "dev.toml").unwrap();
    assert!(c.listen.rtmps.is_none() && c.public_tls.is_none());
    let e = load_str(&with("rtmps = \"0.0.0.0:1936\""), "x.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("listen.rtmps") && e.contains("needs listen.tls"),
        "{e}"
    );
    let e = load_str(&with("https = \"0.0.0.0:8443\""), "x.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("listen.https") && e.contains("needs listen.tls"),
        "{e}"
    );
    let e = load_str(
        &with("rtmps = \"0.0.0.0:1935\"\ntls = { cert = \"c.pem\", key = \"k.pem\" }"),
        "x.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("listen.rtmps") && e.contains("same address"),
        "{e}"
    );
    let c = load_str(
        &with("rtmps = \"0.0.0.0:1936\"\ntls = { cert = \"c.pem\", key = \"k.pem\" }"),
        "x.toml",
    )
    .unwrap();
    assert_eq!(c.listen.rtmps.map(|a| a.port()), Some(1936));
    assert_eq!(
        c.public_tls.map(|t| t.cert),
        Some(std::path::PathBuf::from("c.pem"))
    );
}
