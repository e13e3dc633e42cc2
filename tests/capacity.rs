//! End to end: the capacity a node measures at start (`node.capacity_units` absent) carries a
//! stream in real time, and a pipeline that falls behind real time marks the node overloaded:
//! it refuses new streams (RTMP and the API say why) and keeps the one it carries.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::*;

/// One test of this file at a time: the calibration measures how fast this machine encodes,
/// and the overload test saturates it on purpose.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one stream of the test ladder (360p + 240p) is charged: 0.5 (decode) + 0.25 + 0.11
/// units, in milli-units.
const TEST_LADDER_MILLI_UNITS: u64 = 860;

/// How long the calibrated stream is watched for keeping real time.
const WATCH: Duration = Duration::from_secs(10);

/// How long a ladder far beyond this machine may take to fall `node.overload_lag` (1 s here)
/// behind real time: at half speed, 2 s of media, plus the pipeline's start.
const OVERLOAD_TIMEOUT: Duration = Duration::from_secs(60);

fn node_view(node: &Node) -> serde_json::Value {
    node.admin_get("/api/v1/node")
        .expect("GET /api/v1/node")
        .json()
        .expect("node view is JSON")
}

#[test]
fn a_calibrated_node_carries_a_stream_in_real_time() {
    let _one = one_at_a_time();
    let node = Node::start(|c| *c = c.replace("capacity_units = 8.0\n", ""));
    let log = node.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("capacity calibrated"))
        .unwrap_or_else(|| panic!("no calibration in the log:\n{log}"));
    let logged: u64 = line
        .split("milli_units=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no milli_units in {line:?}"));
    let v = node_view(&node);
    assert_eq!(v["capacity_milli_units"], logged, "{v}");
    // At least the one stream this test publishes; at most what 40 x264 encodes of 720p30 per
    // core would be (a measurement that ran no encode would be enormous).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert!(
        (TEST_LADDER_MILLI_UNITS..=cores * 40_000).contains(&logged),
        "calibrated {logged} milli-units on {cores} cores"
    );

    let mut enc = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), EncOpts::default());
    node.wait_media_playlist("one", "360p", 2, FIRST_SEGMENT_TIMEOUT);
    let v = node_view(&node);
    assert_eq!(v["used_milli_units"], TEST_LADDER_MILLI_UNITS, "{v}");
    // What the node admitted, it carries in real time: never overloaded, every rung at speed.
    let until = Instant::now() + WATCH;
    while Instant::now() < until {
        let v = node_view(&node);
        assert_eq!(v["overloaded"], false, "{v}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = &node.streams()[0];
    assert_eq!(s["health"], "healthy", "{s}");
    let rungs = s["stats"]["rungs"].as_array().expect("rung figures");
    assert_eq!(rungs.len(), 2, "{s}");
    for r in rungs {
        let speed = r["speed"].as_f64().unwrap_or(0.0);
        assert!(
            speed >= 0.95,
            "rung {} runs at {speed}x real time",
            r["name"]
        );
    }
    assert!(
        enc.is_running(),
        "encoder saw an error:\n{}",
        enc.log_text()
    );
}

#[test]
fn a_pipeline_behind_real_time_marks_the_node_overloaded_and_keeps_its_stream() {
    let _one = one_at_a_time();
    // A 720p source and four near-720p rungs at x264's `medium`: several times what a small
    // machine encodes in real time (CI has 2 cores), and room for it in the units, so only the
    // measured lag can stop the next stream.
    let node = Node::start(|c| {
        let ladder_at = c.find("\n[[ladder]]").expect("test config has a ladder");
        let streams_at = c.find("\n[[streams]]").expect("test config has streams");
        let mut heavy = String::new();
        for h in [716, 712, 708, 704] {
            heavy.push_str(&format!(
                "\n[[ladder]]\nname = \"{h}p\"\nheight = {h}\nfps = 30\nvideo_kbps = 2500\n"
            ));
        }
        *c = format!("{}{heavy}{}", &c[..ladder_at], &c[streams_at..])
            .replace("capacity_units = 8.0", "capacity_units = 100.0")
            .replace("[transcode]\n", "[transcode]\nx264_preset = \"medium\"\n")
            .replace("[node]\n", "[node]\noverload_lag = \"1s\"\n");
    });
    let opts = EncOpts {
        width: 1280,
        height: 720,
        ..EncOpts::default()
    };
    let mut first = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-1"), opts);
    node.wait_media_playlist("one", "source", 1, FIRST_SEGMENT_TIMEOUT);
    let start = Instant::now();
    let v = loop {
        let v = node_view(&node);
        if v["state"] == "overloaded" {
            break v;
        }
        assert!(
            start.elapsed() < OVERLOAD_TIMEOUT,
            "four 720p rungs at medium never put the node behind real time: {v}\n{}",
            node.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(v["overloaded"], true, "{v}");
    // The state flips just before the warning is written: wait for the line, do not race it.
    wait_for(
        "the overload warning in the log",
        Duration::from_secs(5),
        || {
            node.log_text()
                .contains("node overloaded, refusing new streams")
                .then_some(())
        },
    );
    assert!(
        node.metrics().contains("edge_ingest_overloaded 1"),
        "the overloaded gauge is not set"
    );
    let s = &node.streams()[0];
    assert_eq!(s["health"], "unhealthy", "{s}");
    // The next stream is refused, with the reason.
    let second = Encoder::ffmpeg_rtmp(&node.rtmp_url("test-stream-key-2"), EncOpts::short())
        .expect_refused(Duration::from_secs(20));
    assert!(
        second
            .log_text()
            .contains("overloaded: a pipeline is behind real time"),
        "{}",
        second.log_text()
    );
    // The stream it carries goes on: its source rendition (passed through) keeps growing.
    let pos = |n: &Node| {
        let url = n.media_playlist_url("one", "source");
        parse_media_playlist(&get_ok(&url).text())
            .expect("source playlist")
            .next_part_position()
    };
    let before = pos(&node);
    std::thread::sleep(Duration::from_secs(3));
    let after = pos(&node);
    assert!(
        after > before,
        "the overloaded stream stopped at {before:?}"
    );
    assert!(
        first.is_running(),
        "encoder saw an error:\n{}",
        first.log_text()
    );
}
