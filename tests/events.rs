//! End to end: a node sends stream lifecycle and health events to a webhook (a test HTTP
//! server on loopback): in order, each signed (HMAC-SHA256 of timestamp and body with
//! `auth.secret`), a refused delivery (503) retried, and the same events readable in
//! `GET /api/v1/events`.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http::{hook_server, HookRequest};
use common::*;
use hmac::Mac;

const SECRET: &str = "a-32-character-secret-for-tests!";

/// An event webhook on loopback that records every request and answers 503 to the first one
/// (the node must retry it), 200 to the rest.
fn hook() -> (u16, Arc<Mutex<Vec<HookRequest>>>) {
    hook_server(|_, before| {
        if before == 0 {
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec()
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()
        }
    })
}

fn valid_signature(r: &HookRequest) -> bool {
    let ts = r.header("x-edge-timestamp");
    let Some(sig) = r.header("x-edge-signature").strip_prefix("v1=") else {
        return false;
    };
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    m.update(ts.as_bytes());
    m.update(b".");
    m.update(r.body.as_bytes());
    let want: String = m
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    sig == want
}

#[test]
fn events_reach_the_webhook_in_order_signed_and_retried() {
    let (port, seen) = hook();
    let node = Node::start(|c| {
        *c = c.replace(
            "[hls]",
            &format!("[auth]\nsecret = \"{SECRET}\"\n\n[events]\nurl = \"http://127.0.0.1:{port}/events\"\n\n[hls]"),
        )
    });
    // A stream that connects, goes live, then leaves: its reconnect window (5 s) ends it.
    let mut enc = Encoder::ffmpeg_rtmp(
        &node.rtmp_url("test-stream-key-1"),
        EncOpts {
            width: 320,
            height: 180,
            ..EncOpts::default()
        },
    );
    wait_for("the stream", Duration::from_secs(30), || node.stream("one"));
    std::thread::sleep(Duration::from_secs(3));
    enc.kill();
    // An operator drains the node: a node event.
    let r = http_request(
        "POST",
        &node.admin_url("/api/v1/node/drain"),
        &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        &[],
        HTTP_TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let types = |s: &[HookRequest]| -> Vec<String> {
        s.iter()
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.body).ok())
            .map(|v| v["type"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    wait_for("stream.ended at the hook", Duration::from_secs(30), || {
        types(&seen.lock().unwrap())
            .iter()
            .any(|t| t == "stream.ended")
            .then_some(())
    });
    let got = seen.lock().unwrap();
    let all = types(&got);
    eprintln!("received: {all:?}");
    // The first request was refused (503) and sent again: the same event twice, first.
    assert_eq!(all[0], "stream.connected", "{all:?}");
    assert_eq!(
        got[0].body, got[1].body,
        "the refused event is retried as it was"
    );
    // After the retry, each event once, in the order they happened.
    let once: Vec<&str> = all[1..].iter().map(String::as_str).collect();
    let want = [
        "stream.connected",
        "stream.active",
        "stream.disconnected",
        "node.state_changed",
        "stream.ended",
    ];
    assert_eq!(once, want, "{all:?}");
    let mut ids = Vec::new();
    for r in got.iter() {
        assert!(valid_signature(r), "a bad signature on {}", r.body);
        assert_eq!(r.header("content-type"), "application/json");
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(r.header("x-edge-event"), v["type"].as_str().unwrap());
        assert_eq!(v["node_id"], "test-node");
        ids.push(v["id"].as_str().unwrap().to_string());
        if v["type"].as_str().is_some_and(|t| t.starts_with("stream.")) {
            assert_eq!(v["data"]["playback_id"], "one", "{v}");
        }
    }
    let v: serde_json::Value = serde_json::from_str(&got[4].body).unwrap();
    assert_eq!(v["data"]["state"], "draining", "{v}");
    assert!(
        !got.iter().any(|r| r.body.contains("test-stream-key")),
        "the stream key left the node in an event"
    );
    drop(got);
    // The API shows the same events, and how each went.
    let r = node.admin_get("/api/v1/events").unwrap();
    let listed: serde_json::Value = r.json().unwrap();
    let listed = listed.as_array().unwrap();
    let api_ids: Vec<&str> = listed.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(api_ids, ids[1..], "{listed:?}");
    assert_eq!(listed[0]["delivery"], "delivered");
    assert_eq!(listed[0]["attempts"], 2, "refused once, then taken");
}
