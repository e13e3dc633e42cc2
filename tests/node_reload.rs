//! End to end: SIGHUP on an ingest node reloads its keys and admin token; live streams go
//! on, a removed key is refused at its next publish, a new key publishes, and a broken file
//! is refused with the node still serving.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::{fs, process::Command, time::Duration};

use common::*;

/// How long a reload may take to show in the log (signal delivery, file read, validation).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

fn hup(node: &Node) {
    let st = Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -HUP failed");
}

/// Publishes `key` for a few seconds with ffmpeg; true if the node refused it as a wrong key.
fn refused(node: &Node, key: &str) -> bool {
    let mut enc = Encoder::ffmpeg_rtmp(
        &node.rtmp_url(key),
        EncOpts {
            duration: Duration::from_secs(4),
            ..EncOpts::default()
        },
    );
    enc.wait_exit(Duration::from_secs(30))
        .expect("ffmpeg exits after its few seconds");
    enc.log_text().to_lowercase().contains("invalid stream key")
}

/// Waits until the stream's source playlist gains a segment (it is still live).
fn grows(node: &Node, pid: &str) {
    let before = node
        .wait_media_playlist(pid, "source", 1, FIRST_SEGMENT_TIMEOUT)
        .next_msn();
    let url = node.media_playlist_url(pid, "source");
    wait_until(FIRST_SEGMENT_TIMEOUT, || {
        let r = http_get(&url, HTTP_TIMEOUT).ok()?;
        let pl = check_ll_hls(&r.text(), Track::Video).ok()?;
        (pl.next_msn() > before).then_some(())
    })
    .unwrap_or_else(|| panic!("stream {pid} stopped growing after MSN {before}"));
}

#[test]
fn sighup_reloads_keys_and_keeps_live_streams() {
    let mut node = Node::start(|_| {});
    let mut live = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    node.wait_media_playlist("one", "source", 1, FIRST_SEGMENT_TIMEOUT);
    assert!(
        refused(&node, "reloaded-key-three"),
        "a key not yet configured was accepted"
    );

    // Remove key 1 (live), add key 3, change the admin token.
    let text = fs::read_to_string(&node.config_path).expect("read config");
    let reloaded = text
        .replace(
            "key = \"test-stream-key-1\"\nplayback_id = \"one\"",
            "key = \"reloaded-key-three\"\nplayback_id = \"three\"",
        )
        .replace(ADMIN_TOKEN, "a-new-admin-token-after-reload");
    assert_ne!(reloaded, text, "the test config changed shape");
    fs::write(&node.config_path, &reloaded).expect("write config");
    hup(&node);
    wait_until(RELOAD_TIMEOUT, || {
        node.log_text().contains("config reloaded").then_some(())
    })
    .expect("the node did not log a reload after SIGHUP");
    assert!(node.is_running(), "SIGHUP ended the node");

    // The live stream of the removed key goes on.
    grows(&node, "one");
    assert!(live.is_running(), "the live encoder was cut by the reload");
    // The new key publishes; the removed one is refused at its next publish.
    let _three = Encoder::ffmpeg_rtmp(&node.rtmp_url("reloaded-key-three"), EncOpts::default());
    node.wait_media_playlist("three", "source", 1, FIRST_SEGMENT_TIMEOUT);
    // The admin API takes the new token only.
    let r = http_get_with_headers(
        &node.admin_url("/api/v1/node"),
        &[("Authorization", "Bearer a-new-admin-token-after-reload")],
        HTTP_TIMEOUT,
    )
    .expect("admin request");
    assert_eq!(r.status, 200, "new admin token refused");
    assert_eq!(
        node.admin_get("/api/v1/node").map(|r| r.status).ok(),
        Some(401),
        "old admin token still accepted"
    );

    // A broken file is refused; the node and its streams go on with the running config.
    fs::write(&node.config_path, "[node]\nthis is not toml").expect("write broken config");
    hup(&node);
    wait_until(RELOAD_TIMEOUT, || {
        node.log_text()
            .contains("config reload refused")
            .then_some(())
    })
    .expect("the node did not refuse a broken file");
    assert!(node.is_running(), "a broken file ended the node");
    grows(&node, "three");
    assert!(
        refused(&node, "test-stream-key-1"),
        "the removed key still publishes"
    );
    assert!(live.is_running(), "the live encoder was cut");
}
