//! End to end: one stream, one URL. Viewers play through any balancer; an encoder that drops
//! and comes back with the same key continues the same playback URL (numbering goes on, a
//! discontinuity marks the join, no ENDLIST), on its node or on another one.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::time::Duration;

use common::{cluster::*, *};

const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after an encoder returns its new media must be in the playlist.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

fn opts() -> EncOpts {
    EncOpts {
        source_file: Some(clip()),
        duration: Duration::from_secs(300),
        ..EncOpts::default()
    }
}

fn landed(nodes: &[&Node], pid: &str) -> usize {
    wait_until(PUBLISH_TIMEOUT, || {
        nodes.iter().position(|n| n.stream(pid).is_some())
    })
    .unwrap_or_else(|| panic!("{pid} never appeared on a node"))
}

fn admin_post(node: &Node, path: &str) {
    let r = http_request(
        "POST",
        &node.admin_url(path),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        &[],
        HTTP_TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.text());
}

/// The source playlist as a viewer gets it through `b` (retried: during a switch of nodes a
/// request may briefly fail, and a player retries too).
fn via(b: &Balancer, pid: &str) -> MediaPlaylist {
    let url = b
        .playlist_url(pid)
        .replace("/index.m3u8", "/source/index.m3u8");
    let mut last = String::new();
    wait_until(Duration::from_secs(10), || {
        let r = http_get(&url, HTTP_TIMEOUT).ok()?;
        if r.status != 200 {
            last = format!("HTTP {}: {}", r.status, r.text());
            return None;
        }
        check_ll_hls(&r.text(), Track::Video)
            .map_err(|e| last = format!("{e:?}\n{}", r.text()))
            .ok()
    })
    .unwrap_or_else(|| panic!("{url}: {last}"))
}

/// The playlist through `b` now, after checking that its last segment decodes (segments
/// before a join may be gone from the cluster once the stream has moved).
fn capture(b: &Balancer, pid: &str) -> MediaPlaylist {
    let pl = via(b, pid);
    let url = b
        .playlist_url(pid)
        .replace("/index.m3u8", "/source/index.m3u8");
    if let Some(seg) = pl.segments.last() {
        let init = get_ok(&resolve_url(
            &url,
            pl.map_uri.as_deref().unwrap_or("init.mp4"),
        ))
        .body;
        let body = get_ok(&resolve_url(&url, &seg.uri)).body;
        let p = ffprobe_decode(&init, &[&body])
            .unwrap_or_else(|e| panic!("{pid}: segment before the join does not decode: {e}"));
        assert!(p.frames_decoded > 0);
    }
    pl
}

/// Wait until the playlist through `b` shows a discontinuity followed by a new segment, and
/// check the join: numbering continued, no ENDLIST, and the segments on both sides decode.
fn check_join(b: &Balancer, pid: &str, before: &MediaPlaylist) -> MediaPlaylist {
    // A discontinuity after everything seen before (not an older join still in the window),
    // followed by new media.
    let seen = before.last_msn().unwrap_or(0);
    let after = wait_until(JOIN_TIMEOUT, || {
        let pl = via(b, pid);
        let join = pl.discontinuities().into_iter().rfind(|d| *d > seen)?;
        pl.segments.iter().any(|s| s.msn > join).then_some(pl)
    })
    .unwrap_or_else(|| {
        panic!(
            "{pid}: no discontinuity followed by new media; last: {:?}",
            via(b, pid)
        )
    });
    assert!(!after.endlist, "{pid}: ENDLIST across a reconnect");
    let join = *after.discontinuities().last().unwrap();
    assert!(
        join > before.last_msn().unwrap_or(0),
        "{pid}: numbering restarted: join at {join}, before ended at {:?}",
        before.last_msn()
    );
    assert!(
        after.media_sequence() >= before.media_sequence(),
        "{pid}: media sequence went backwards"
    );
    // Decode the first segment after the join and a segment before it if still listed.
    let url = b
        .playlist_url(pid)
        .replace("/index.m3u8", "/source/index.m3u8");
    let seg = after
        .segments
        .iter()
        .find(|s| s.msn >= join)
        .expect("a segment after the join");
    let init_uri = after.map_uri.clone().expect("EXT-X-MAP");
    let init = get_ok(&resolve_url(&url, &init_uri)).body;
    let parts: Vec<Vec<u8>> = seg
        .parts
        .iter()
        .map(|p| get_ok(&resolve_url(&url, &p.uri)).body)
        .collect();
    let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
    let probe = ffprobe_decode(&init, &refs)
        .unwrap_or_else(|e| panic!("{pid}: parts after the join do not decode: {e}"));
    assert!(probe.frames_decoded > 0);
    after
}

#[test]
fn rtmp_reconnect_goes_back_to_its_node_then_continues_on_another() {
    let c = Cluster::new(2, 2);
    let (b1, b2) = (c.balancer(1, "3s"), c.balancer(2, "3s"));
    let (n1, n2) = (c.node(1, 10, &[&b1, &b2]), c.node(2, 10, &[&b1, &b2]));
    wait_nodes(&b1, &["n1", "n2"]);
    wait_nodes(&b2, &["n1", "n2"]);
    let nodes = [&n1, &n2];
    let mut enc = Encoder::ffmpeg_rtmp(&b1.rtmp_url(&key(0)), opts());
    let home = landed(&nodes, &pid(0));
    // A viewer on the other balancer plays a stream published through the first.
    node_wait(&b2, &pid(0));
    let first = capture(&b2, &pid(0));
    // Publish another stream so least-loaded alone would not pick `home` again.
    let _other = Encoder::ffmpeg_rtmp(&b2.rtmp_url(&key(1)), opts());
    landed(&nodes, &pid(1));
    // The encoder drops and comes back with the same key: stream-key affinity sends it home.
    enc.kill();
    gone_from(nodes[home], &pid(0));
    let mut enc = Encoder::ffmpeg_rtmp(&b2.rtmp_url(&key(0)), opts());
    assert_eq!(
        landed(&nodes, &pid(0)),
        home,
        "the returning encoder did not go back to its node"
    );
    let joined = check_join(&b1, &pid(0), &first);
    // Now its node is cordoned: the next return lands on the other node and continues there.
    admin_post(nodes[home], "/api/v1/node/cordon");
    enc.kill();
    assert!(wait_until(Duration::from_secs(15), || nodes[home]
        .stream(&pid(0))
        .is_none()
        .then_some(()))
    .is_some());
    let _enc = Encoder::ffmpeg_rtmp(&b1.rtmp_url(&key(0)), opts());
    let away = 1 - home;
    assert!(
        wait_until(PUBLISH_TIMEOUT, || nodes[away]
            .stream(&pid(0))
            .is_some()
            .then_some(()))
        .is_some(),
        "did not land on the other node"
    );
    let moved = check_join(&b2, &pid(0), &joined);
    assert!(!moved.discontinuities().is_empty());
    let log = std::fs::read_to_string(&nodes[away].log_path).unwrap_or_default();
    assert!(
        log.contains("continuing numbering from the previous node"),
        "the new node did not get the continuation"
    );
}

/// Wait until `node` no longer has a publisher for `pid` (its encoder's drop was noticed).
fn gone_from(node: &Node, pid: &str) {
    wait_for(
        format_args!("{pid}'s publisher to be gone from its node"),
        Duration::from_secs(15),
        || node.stream(pid).is_none().then_some(()),
    );
}

/// Media requests (parts and segments) `node` answered with 200.
fn media_served(node: &Node) -> f64 {
    let m = node.metrics();
    ["part", "segment"]
        .iter()
        .map(|k| {
            metric_value(
                &m,
                &format!(r#"edge_packager_http_requests_total{{code="200",kind="{k}"}}"#),
            )
        })
        .sum()
}

/// Parts and segments (video and audio) a player fetches in about five seconds of playing
/// at 333 ms parts: the viewer started Chromium, loaded hls.js, and has a few seconds of the
/// stream from `node` buffered before the test breaks something.
const PLAYING_REQUESTS: f64 = 30.0;

/// Wait until a viewer that just started plays from `node`: it has fetched
/// [`PLAYING_REQUESTS`] more parts or segments than before.
fn viewer_playing(node: &Node) {
    let before = media_served(node);
    wait_for(
        "the viewer to fetch media (Chromium started and hls.js playing)",
        common::player::PLAYER_OVERHEAD_TIMEOUT,
        || (media_served(node) >= before + PLAYING_REQUESTS).then_some(()),
    );
}

/// Wait until balancer `b` routes `pid` to a node that serves its playlist.
fn node_wait(b: &Balancer, pid: &str) {
    let url = b
        .playlist_url(pid)
        .replace("/index.m3u8", "/source/index.m3u8");
    assert!(
        wait_until(PUBLISH_TIMEOUT, || http_get(&url, HTTP_TIMEOUT)
            .ok()
            .filter(|r| r.status == 200 && r.text().contains("#EXTINF"))
            .map(|_| ()))
        .is_some(),
        "{url} never served"
    );
}

#[test]
fn srt_stream_survives_its_node_being_killed() {
    let c = Cluster::new(2, 1);
    let b = c.balancer(1, "3s");
    let (mut n1, mut n2) = (c.node(1, 10, &[&b]), c.node(2, 10, &[&b]));
    wait_nodes(&b, &["n1", "n2"]);
    // srt-live-transmit reconnects on its own when its connection breaks.
    let _enc = Encoder::srt_live_transmit(&b.srt_url(&key(0)), opts());
    let home = landed(&[&n1, &n2], &pid(0));
    node_wait(&b, &pid(0));
    // A viewer plays through the balancer the whole time.
    let url = b.playlist_url(&pid(0));
    let player = std::thread::spawn(move || play_in_chromium(&url, 30));
    viewer_playing(if home == 0 { &n1 } else { &n2 });
    let before = capture(&b, &pid(0));
    assert_eq!(
        http_get(&b.playlist_url("nope"), HTTP_TIMEOUT)
            .unwrap()
            .status,
        404,
        "unknown playback IDs are 404 at once"
    );
    let other = if home == 0 {
        n1.kill();
        &n2
    } else {
        n2.kill();
        &n1
    };
    assert!(
        wait_until(Duration::from_secs(45), || other
            .stream(&pid(0))
            .is_some()
            .then_some(()))
        .is_some(),
        "the encoder's reconnect did not land on the surviving node"
    );
    let after = check_join(&b, &pid(0), &before);
    let log = std::fs::read_to_string(&other.log_path).unwrap_or_default();
    assert!(
        log.contains("continuing numbering from the previous node"),
        "no continuation handed over: {}",
        after.media_sequence()
    );
    let report = player.join().expect("player thread");
    println!("hls.js across a node kill (SRT): {report:?}");
    assert!(
        report.fatal_errors.is_empty(),
        "fatal errors: {:?}",
        report.fatal_errors
    );
    assert!(
        report.advanced >= 12.0,
        "currentTime advanced only {} s in 30 s across the node kill",
        report.advanced
    );
}

#[test]
fn hls_js_keeps_playing_through_a_reconnect_to_another_node() {
    let c = Cluster::new(2, 1);
    let b = c.balancer(1, "3s");
    let (n1, n2) = (c.node(1, 10, &[&b]), c.node(2, 10, &[&b]));
    wait_nodes(&b, &["n1", "n2"]);
    let nodes = [&n1, &n2];
    let mut enc = Encoder::ffmpeg_rtmp(&b.rtmp_url(&key(0)), opts());
    let home = landed(&nodes, &pid(0));
    node_wait(&b, &pid(0));
    let url = b.playlist_url(&pid(0));
    let player = std::thread::spawn(move || play_in_chromium(&url, 24));
    viewer_playing(nodes[home]);
    // The encoder drops; its node is cordoned (full, say), so it comes back elsewhere.
    admin_post(nodes[home], "/api/v1/node/cordon");
    enc.kill();
    gone_from(nodes[home], &pid(0));
    let _enc = Encoder::ffmpeg_rtmp(&b.rtmp_url(&key(0)), opts());
    assert!(wait_until(PUBLISH_TIMEOUT, || nodes[1 - home]
        .stream(&pid(0))
        .is_some()
        .then_some(()))
    .is_some());
    let report = player.join().expect("player thread");
    println!("hls.js across the reconnect: {report:?}");
    assert!(
        report.fatal_errors.is_empty(),
        "fatal errors: {:?}",
        report.fatal_errors
    );
    assert!(
        report.advanced >= 14.0,
        "currentTime advanced only {} s in 24 s across the reconnect",
        report.advanced
    );
}
