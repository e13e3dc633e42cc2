//! Ladder benchmark: the real `edge` binary transcoding one 720p30 stream into the default
//! ladder, against `gst-launch-1.0` and against one `ffmpeg` process doing the same decode and
//! x264 encodes (decode once, split, scale, encode), on the same machine in the same run. The
//! ffmpeg peer runs twice: live, fed over RTMP in real time by the same publisher as edge (the
//! goal's peer), and flat out on the file.
//!
//! Prints: (1) time from a frame's arrival at the node to the publication of the part that
//! holds it, p50/p99, from `edge_packager_part_latency_seconds`; (2) CPU seconds per second
//! of media for edge, gst-launch and ffmpeg, and edge's ratio to each.
//!
//! Run: `cargo bench --bench ladder [-- --rounds N]` (needs scripts/setup.sh; about 4 minutes
//! with one round). Edge runs twice per round: with its own scaler and with GStreamer's
//! `videoscale` (`transcode.own_scaler = false`).
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

// The test harness: a node process, HTTP, metrics, and what /proc says about a process.
#[path = "../tests/common/mod.rs"]
mod common;
use common::{
    bench_config_template, free_tcp_port, http_get, metric_value, procfs, wait_for, Node, Ports,
    HTTP_TIMEOUT,
};

/// Media length: long enough for steady state, short enough for a benchmark run.
const MEDIA_SECONDS: u32 = 40;
/// The source's keyframe interval in frames (2 s at 30 fps, the default segment target), fixed:
/// no scene cuts.
const SOURCE_GOP: u32 = 60;
/// After the publisher finishes, how long the pipeline may take to drain before CPU is read.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Quantile from a Prometheus histogram's cumulative buckets (linear within a bucket).
fn quantile(metrics: &str, name: &str, q: f64) -> Option<f64> {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{")) {
            let le = rest.split("le=\"").nth(1)?.split('"').next()?;
            let count: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            buckets.push((le, count));
        }
    }
    // Several label sets (video/audio): sum by bound.
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f64, f64)> = Vec::new();
    for (le, c) in buckets {
        match merged.last_mut() {
            Some(l) if l.0 == le => l.1 += c,
            _ => merged.push((le, c)),
        }
    }
    let total = merged.last()?.1;
    if total == 0.0 {
        return None;
    }
    let target = q * total;
    let mut prev = (0.0, 0.0);
    for (le, c) in merged {
        if c >= target {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let frac = if c > prev.1 {
                (target - prev.1) / (c - prev.1)
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, c);
    }
    None
}

fn main() {
    let dir = std::env::temp_dir().join(format!("edge-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let media = dir.join("source.flv");
    let st = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
        ])
        .args([
            "-t",
            &MEDIA_SECONDS.to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-b:v",
            "4M",
            "-g",
            &SOURCE_GOP.to_string(),
            "-keyint_min",
            &SOURCE_GOP.to_string(),
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-ar",
            "48000",
        ])
        .arg(&media)
        .status()
        .expect("ffmpeg");
    assert!(st.success(), "cannot make the source file");

    // Edge with its own scaler and with GStreamer's `videoscale` (`transcode.own_scaler =
    // false`), alternating, `--rounds N` times each (default 1).
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let mut own = Vec::new();
    let mut theirs = Vec::new();
    let mut metrics = String::new();
    for _ in 0..rounds {
        let (cpu, m) = run_edge(&media, true);
        own.push(cpu);
        metrics = m;
        theirs.push(run_edge(&media, false).0);
    }
    let edge_cpu = own.iter().sum::<f64>() / own.len() as f64;
    let videoscale_cpu = theirs.iter().sum::<f64>() / theirs.len() as f64;

    // The same work with gst-launch: decode once, the same two x264 rungs with the same
    // settings. Edge forces a keyframe in every rung where the source has one; x264enc alone
    // cannot, so the GOP is the source's fixed one (`SOURCE_GOP` frames, scene cuts off).
    let rung = |w: u32, h: u32, kbps: u32| {
        format!("dt. ! queue ! videoscale ! video/x-raw,width={w},height={h},pixel-aspect-ratio=1/1 ! x264enc bitrate={kbps} speed-preset=veryfast tune=zerolatency bframes=0 key-int-max={SOURCE_GOP} option-string=scenecut=0 ! h264parse ! fakesink sync=false ")
    };
    let desc = format!(
        "filesrc location={} ! flvdemux name=d d.video ! queue ! h264parse ! avdec_h264 ! tee name=dt {}{} d.audio ! queue ! aacparse ! fakesink sync=false",
        media.display(),
        rung(854, 480, 1200),
        rung(640, 360, 600)
    );
    let gst_cpu = cpu_of(&format!("gst-launch-1.0 -q {desc} > /dev/null"));

    // The same work with one ffmpeg process: decode once, split, scale, the same two x264
    // rungs with the same settings (zerolatency, no B-frames, no scene cuts, the same GOP
    // cap, a keyframe wherever the source has one as edge forces, and the constant bit rate
    // x264enc runs by default: VBV at the bit rate with a 600 ms buffer), the source's video
    // and audio copied as edge passes them through. Until stop 26 the peer had no forced
    // keyframes (one every 300 frames instead of 60), which costs x264 about 5% less.
    let x264 = |kbps: u32| {
        format!("-c:v libx264 -preset veryfast -tune zerolatency -bf 0 -g 300 -force_key_frames source -sc_threshold 0 -b:v {kbps}k -maxrate {kbps}k -bufsize {}k -f null /dev/null", kbps * 6 / 10)
    };
    let ff = |input: &str| {
        format!(
            "ffmpeg -v error -nostdin {input} -filter_complex '[0:v]split=2[a][b];[a]scale=854:480[r480];[b]scale=640:360[r360]' -map '[r480]' {} -map '[r360]' {} -map 0:v -map 0:a -c copy -f null /dev/null",
            x264(1200),
            x264(600)
        )
    };
    // Live, as edge runs: the same RTMP publisher (`ffmpeg -re -c copy`) pushes the file in
    // real time to the ffmpeg peer listening for it. This is the goal's peer: a live ladder
    // cannot run ahead of its source, and working at the source's pace costs more per frame
    // (threads wake for every frame, caches go cold between frames) than working through a
    // file as fast as possible.
    let port = free_tcp_port();
    let url = format!("rtmp://127.0.0.1:{port}/live/bench");
    let publisher = {
        let (media, url) = (media.clone(), url.clone());
        std::thread::spawn(move || publish_when_listening(&media, &url))
    };
    let ffmpeg_live_cpu = cpu_of(&ff(&format!("-listen 1 -i {url}")));
    assert!(
        publisher.join().unwrap_or(false),
        "the publisher never reached the ffmpeg peer"
    );
    // And as fast as it can, from the file.
    let ffmpeg_cpu = cpu_of(&ff(&format!("-i {}", media.display())));

    let secs = f64::from(MEDIA_SECONDS);
    println!("ladder benchmark: 1280x720p30 source, default ladder (source passthrough + 480p/360p x264 veryfast; the 720p rung is the source's size and is skipped), {MEDIA_SECONDS} s of media");
    match (
        quantile(&metrics, "edge_packager_part_latency_seconds", 0.5),
        quantile(&metrics, "edge_packager_part_latency_seconds", 0.99),
    ) {
        (Some(p50), Some(p99)) => println!(
            "frame arrival -> part published: p50 {:.0} ms, p99 {:.0} ms",
            p50 * 1000.0,
            p99 * 1000.0
        ),
        _ => println!(
            "frame arrival -> part published: no samples in edge_packager_part_latency_seconds"
        ),
    }
    let per = |v: &[f64]| {
        v.iter()
            .map(|c| format!("{:.2}", c / secs))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "edge:       {:.2} CPU-s per media second (rounds: {})",
        edge_cpu / secs,
        per(&own)
    );
    println!(
        "edge with videoscale (own_scaler = false): {:.2} CPU-s per media second (rounds: {})",
        videoscale_cpu / secs,
        per(&theirs)
    );
    println!("gst-launch: {:.2} CPU-s per media second", gst_cpu / secs);
    println!(
        "ffmpeg, live (RTMP in at the source's pace, as edge): {:.2} CPU-s per media second",
        ffmpeg_live_cpu / secs
    );
    println!(
        "ffmpeg, flat out on the file: {:.2} CPU-s per media second",
        ffmpeg_cpu / secs
    );
    println!("ratio edge / gst-launch: {:.2}", edge_cpu / gst_cpu);
    println!(
        "ratio edge / ffmpeg live (goal at most 0.95): {:.2}",
        edge_cpu / ffmpeg_live_cpu
    );
    println!("ratio edge / ffmpeg flat out: {:.2}", edge_cpu / ffmpeg_cpu);
    println!(
        "ratio edge / edge with videoscale: {:.2}",
        edge_cpu / videoscale_cpu
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// How long the publisher keeps retrying until the ffmpeg peer listens.
const PEER_LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Publish `media` in real time (`ffmpeg -re -c copy`) to `url` once something listens there;
/// false if nothing did within [`PEER_LISTEN_TIMEOUT`] or the publish failed.
fn publish_when_listening(media: &std::path::Path, url: &str) -> bool {
    let start = Instant::now();
    while start.elapsed() < PEER_LISTEN_TIMEOUT {
        std::thread::sleep(Duration::from_millis(200));
        let st = Command::new("ffmpeg")
            .args(["-v", "quiet", "-nostdin", "-re", "-i"])
            .arg(media)
            .args(["-c", "copy", "-f", "flv", url])
            .status();
        if st.is_ok_and(|s| s.success()) {
            return true;
        }
    }
    false
}

/// User + system CPU seconds of a shell command, from bash's `time -p`; panics if it failed.
fn cpu_of(command: &str) -> f64 {
    let out = Command::new("bash")
        .args(["-c", &format!("time -p {command}")])
        .output()
        .expect("bash");
    let times = String::from_utf8_lossy(&out.stderr);
    let field = |k: &str| -> f64 {
        times
            .lines()
            .find_map(|l| {
                l.strip_prefix(k)
                    .map(|v| v.trim().parse::<f64>().unwrap_or(0.0))
            })
            .unwrap_or(0.0)
    };
    let cpu = field("user") + field("sys");
    assert!(
        out.status.success() && cpu > 0.0,
        "{command} failed: {times}"
    );
    cpu
}

/// The test harness's node config with the default ladder, room for the stream, the bench's
/// stream key, and `transcode.own_scaler`.
fn edge_config_text(ports: &Ports, own_scaler: bool) -> String {
    let base = bench_config_template(ports);
    assert!(
        base.contains("[transcode]\n"),
        "the template has a [transcode] table"
    );
    base.replace(
        "[transcode]\n",
        &format!("[transcode]\nown_scaler = {own_scaler}\n"),
    ) + "\n[[streams]]\nkey = \"bench-stream-key\"\nplayback_id = \"bench\"\n"
}

/// Publish `media` in real time to a fresh node and wait until it has drained: the node's CPU
/// seconds over the publish and its metrics at the end. Panics if no 480p part was made.
fn run_edge(media: &std::path::Path, own_scaler: bool) -> (f64, String) {
    let ports = Ports::free();
    let edge = Node::start_with_config(ports, edge_config_text(&ports, own_scaler));
    let cpu_before = procfs::cpu_seconds(edge.pid());
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-i"])
        .arg(media)
        .args([
            "-c",
            "copy",
            "-f",
            "flv",
            &edge.rtmp_url("bench-stream-key"),
        ])
        .status()
        .expect("ffmpeg publish");
    assert!(st.success(), "publish failed");
    // The pipeline drains what it holds: wait until it has published no part for a while.
    let parts = || {
        metric_value(
            &edge.metrics(),
            r#"edge_packager_parts_total{kind="video"}"#,
        )
    };
    let mut last = (parts(), Instant::now());
    wait_for(
        "the pipeline to drain (no new part for 2 s)",
        DRAIN_TIMEOUT,
        || {
            let now = parts();
            if now != last.0 {
                last = (now, Instant::now());
            }
            (last.1.elapsed() >= Duration::from_secs(2)).then_some(())
        },
    );
    let cpu = procfs::cpu_seconds(edge.pid()) - cpu_before;
    let metrics = edge.metrics();
    // The 720p rung is the source's own size, so the source passes through instead (the
    // ladder skips rungs not smaller than the source): 480p is the largest encoded rung.
    let playlist = http_get(&edge.media_playlist_url("bench", "480p"), HTTP_TIMEOUT)
        .map(|r| r.text())
        .unwrap_or_default();
    let log = std::fs::read_to_string(&edge.log_path).unwrap_or_default();
    drop(edge);
    assert!(
        playlist.contains("#EXT-X-PART:"),
        "edge produced no 480p parts:\n{playlist}"
    );
    let scaler = if own_scaler {
        "edgescale"
    } else {
        "videoscale"
    };
    assert!(
        log.contains(&format!("scaler=\"{scaler}\"")),
        "the node did not scale with {scaler}"
    );
    (cpu, metrics)
}
