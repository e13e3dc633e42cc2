//! End to end: the web dashboard of a real balancer (two nodes as processes, a live stream from
//! ffmpeg) in headless Chromium: log in with the token, the nodes and the stream listed with
//! live figures, the preview playing with the embedded hls.js, a drain from the page reaching
//! the node, logout; and the session rules checked on the wire (cookie flags, CSRF, a rotated
//! token). Screenshots go to `target/tmp/dashboard/` (the path is printed).
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::cluster::*;
use common::player::drive_dashboard;
use common::*;

/// A publish through a balancer is on a node within this long.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

fn post(url: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request("POST", url, headers, &[], HTTP_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_dashboard_shows_the_cluster_plays_a_stream_and_drains_a_node() {
    let c = Cluster::new(2, 1);
    let b = c.balancer(1, "5s");
    let nodes = [c.node(1, 20, &[&b]), c.node(2, 20, &[&b])];
    wait_nodes(&b, &["n1", "n2"]);
    let _enc = Encoder::ffmpeg_rtmp(&b.rtmp_url(&key(0)), EncOpts::default());
    let on = wait_until(PUBLISH_TIMEOUT, || {
        nodes.iter().position(|n| n.stream(&pid(0)).is_some())
    })
    .expect("the stream is on a node");
    let other = format!("n{}", 2 - on);
    let admin = b.admin_url("");
    let admin = admin.trim_end_matches('/');

    // The session rules on the wire: the cookie is HttpOnly and SameSite=Strict, reads need
    // only the cookie, actions also the CSRF token.
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let login = post(
        &format!("{admin}/dashboard/session"),
        &[("Authorization", &auth)],
    );
    assert_eq!(login.status, 200, "{}", login.text());
    let set = login
        .header("set-cookie")
        .expect("a session cookie")
        .to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let csrf = login.json().unwrap()["csrf"].as_str().unwrap().to_string();
    let r = http_get_with_headers(
        &format!("{admin}/api/v1/nodes"),
        &[("Cookie", &cookie)],
        HTTP_TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let cordon = format!("{admin}/api/v1/nodes/{other}/cordon");
    assert_eq!(
        post(&cordon, &[("Cookie", &cookie)]).status,
        403,
        "no CSRF token"
    );
    let r = post(&cordon, &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        wait_until(REPORT_TIMEOUT, || (b.status_of(&other).as_deref()
            == Some("cordoned"))
        .then_some(()))
        .is_some()
    );
    let r = post(
        &format!("{admin}/api/v1/nodes/{other}/uncordon"),
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
    );
    assert_eq!(r.status, 200);
    // The stream list carries what the page shows: encoder address, figures, renditions.
    let pid0 = pid(0);
    let s = wait_until(REPORT_TIMEOUT, || {
        let v = b.api("/api/v1/streams");
        v.as_array()?
            .iter()
            .find(|s| {
                s["playback_id"] == pid0.as_str() && s["stats"]["video_kbps"].as_u64() > Some(0)
            })
            .cloned()
    })
    .expect("the stream is listed with figures");
    assert!(
        s["client_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{s}"
    );
    assert!(s["stats"]["fps"].as_f64().unwrap_or(0.0) > 5.0, "{s}");
    assert_eq!(b.api("/api/v1/balancer")["playback_port"], b.ports.http);

    // In the browser.
    // Kept after the test (cargo's per-package scratch directory, `target/tmp`).
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let on_id = format!("n{}", on + 1);
    let report = drive_dashboard(admin, ADMIN_TOKEN, &pid0, &on_id, &shots);
    println!("dashboard report: {report}");
    println!(
        "screenshots: {}/dashboard.png, dashboard-narrow.png",
        shots.display()
    );
    assert_eq!(report["wrongTokenMessage"], "Wrong token.", "{report}");
    let row: Vec<String> = serde_json::from_value(report["streamRow"].clone()).unwrap();
    assert_eq!(row[0], pid0, "{row:?}");
    assert_eq!(row[1], on_id, "{row:?}");
    assert_eq!(row[2], "rtmp", "{row:?}");
    assert!(
        row[5].ends_with("kbit/s") && row[6].parse::<f64>().unwrap_or(0.0) > 5.0,
        "{row:?}"
    );
    assert!(row[9].starts_with("healthy"), "{row:?}");
    // The renditions cell folds the stream's other figures.
    assert!(
        row[8].contains("figures") && row[8].contains("late frames"),
        "{row:?}"
    );
    let nodes_shown = report["nodeRows"].as_array().map(Vec::len);
    assert_eq!(nodes_shown, Some(2), "{report}");
    assert!(
        report["previewTime"].as_f64().unwrap_or(0.0) > 2.0,
        "{report}"
    );
    assert_eq!(
        report["narrowOverflow"], 0,
        "the page overflows a narrow window: {report}"
    );
    assert_eq!(report["cookieVisibleToScripts"], false, "{report}");
    assert_eq!(report["tokenInAUrl"], false, "{report}");
    assert_eq!(
        report["externalRequests"],
        serde_json::json!([]),
        "{report}"
    );
    assert_eq!(report["afterLogout"], 401, "{report}");
    for shot in ["dashboard.png", "dashboard-narrow.png"] {
        let len = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 10_000, "{shot}: {len} bytes");
    }
    // The drain from the page reached the node, whose stream goes on.
    assert_eq!(b.status_of(&on_id).as_deref(), Some("draining"));
    let v: serde_json::Value =
        serde_json::from_slice(&nodes[on].admin_get("/api/v1/node").unwrap().body).unwrap();
    assert_eq!(v["state"], "draining");
    assert!(
        nodes[on].stream(&pid0).is_some(),
        "a drain keeps the live stream"
    );

    // A rotated admin token (reload) ends the sessions made with the old one.
    assert_eq!(
        http_get_with_headers(
            &format!("{admin}/api/v1/nodes"),
            &[("Cookie", &cookie)],
            HTTP_TIMEOUT
        )
        .unwrap()
        .status,
        200
    );
    let cfg = std::fs::read_to_string(&b.config_path)
        .unwrap()
        .replace(ADMIN_TOKEN, "a-rotated-admin-token-0123456789");
    std::fs::write(&b.config_path, cfg).unwrap();
    b.signal("HUP");
    let r = wait_until(REPORT_TIMEOUT, || {
        let r = http_get_with_headers(
            &format!("{admin}/api/v1/nodes"),
            &[("Cookie", &cookie)],
            HTTP_TIMEOUT,
        )
        .ok()?;
        (r.status == 401).then_some(r)
    });
    assert!(
        r.is_some(),
        "the old session still works after the token changed"
    );
}

#[test]
fn a_node_serves_its_own_dashboard() {
    let n = Node::start(|_| {});
    let url = n.admin_url("/dashboard");
    let page = get_ok(&url);
    assert!(page.text().contains("<title>edge dashboard</title>"));
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let login = post(
        &n.admin_url("/dashboard/session"),
        &[("Authorization", &auth)],
    );
    assert_eq!(login.status, 200);
    let cookie = login
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let r = http_get_with_headers(
        &n.admin_url("/api/v1/node"),
        &[("Cookie", &cookie)],
        HTTP_TIMEOUT,
    )
    .unwrap();
    let v = r.json().unwrap();
    assert_eq!(v["playback_port"], n.ports.http, "{v}");
    // Without a token or a session: 401, and the page's assets are public but hold no data.
    let r = http_get(&n.admin_url("/api/v1/node"), HTTP_TIMEOUT).unwrap();
    assert_eq!(r.status, 401);
    assert!(get_ok(&n.admin_url("/dashboard/hls.min.js")).body.len() > 100_000);
}
