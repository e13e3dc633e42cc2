//! Unit tests of `events` (kept beside it; compiled only for tests).

use super::*;

fn config(extra: &str) -> edge_config::Config {
    let text = format!(
        "[node]\nid = \"n9\"\ncapacity_units = 4.0\n\n[admin]\ntoken = \"an-admin-token-of-some-length-0123\"\n\n[auth]\nsecret = \"0123456789abcdef0123456789abcdef\"\n\n[[streams]]\nkey = \"a-stream-key-0123456789\"\nplayback_id = \"p\"\n\n{extra}"
    );
    edge_config::load_str(&text, "test.toml").unwrap_or_else(|e| panic!("{e:?}"))
}

#[test]
fn without_a_url_events_are_kept_for_the_api_but_not_sent() {
    let e = Events::new(&config(""));
    e.emit(
        "stream.connected",
        serde_json::json!({ "playback_id": "p" }),
    );
    e.emit("stream.ended", serde_json::json!({ "playback_id": "p" }));
    let r = e.recent();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].event.id, "n9-1");
    assert_eq!(r[1].event.kind, "stream.ended");
    assert!(r.iter().all(|s| s.delivery == "unsent"));
    assert!(lock(&e.queue).is_empty());
}

#[test]
fn the_queue_and_the_history_are_bounded() {
    let e = Events::new(&config("[events]\nurl = \"http://127.0.0.1:9/hook\"\n"));
    for i in 0..(MAX_QUEUED + 5) {
        e.emit("stream.connected", serde_json::json!({ "i": i }));
    }
    assert_eq!(lock(&e.queue).len(), MAX_QUEUED);
    // The oldest waiting ones went first.
    assert_eq!(
        lock(&e.queue).front().map(|x| x.id.clone()),
        Some("n9-6".into())
    );
    assert_eq!(e.recent().len(), RECENT_EVENTS);
}

#[test]
fn a_url_needs_the_auth_secret_that_signs_events() {
    let text = "[node]\nid = \"n9\"\ncapacity_units = 4.0\n\n[admin]\ntoken = \"an-admin-token-of-some-length-0123\"\n\n[[streams]]\nkey = \"a-stream-key-0123456789\"\nplayback_id = \"p\"\n\n[events]\nurl = \"http://127.0.0.1:9/hook\"\n";
    let errs = format!(
        "{:?}",
        edge_config::load_str(text, "test.toml").unwrap_err()
    );
    assert!(
        errs.contains("events.url") && errs.contains("auth.secret"),
        "{errs}"
    );
    let text = text.replace("http://127.0.0.1:9/hook", "ftp://x");
    let errs = format!(
        "{:?}",
        edge_config::load_str(&text, "test.toml").unwrap_err()
    );
    assert!(
        errs.contains("must be an https:// (or http://) URL"),
        "{errs}"
    );
}
