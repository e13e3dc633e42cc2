//! Glass-to-glass latency benchmark: the capture time is burnt into every frame at the
//! publisher and read back from the frame hls.js displays in headless Chromium, on one machine
//! clock. Not a player's estimate.
//!
//! The source is one ffmpeg process publishing RTMP in real time: lavfi `testsrc2` 1280x720 at
//! 30 fps with a strip of black and white 40x40 blocks overlaid at the top left, plus a 440 Hz
//! sine, x264 `veryfast` `zerolatency` (fixed GOP) and AAC. The strip is drawn by `geq` from
//! `time(0)` (the wall clock, evaluated when the output filter graph draws the frame, after
//! `-re` let the input frame go: see `publish`) on a 26x1 gray picture,
//! scaled up with nearest neighbour and overlaid: `geq` over a whole 720p frame is not real
//! time, and one row is computed by one thread in microseconds (two rows, computed by two
//! threads, could be a few ticks apart and read as a blend of two codes).
//! Block 0 is white and block 1 black (references); blocks 2..=25 hold the wall clock in
//! milliseconds modulo 2^24 in Gray code, most significant bit first, so a frame drawn across a
//! tick reads as one of the two values. ffmpeg's expressions have no xor: Gray bit i is
//! `mod(floor(t/2^i) + floor(t/2^(i+1)), 2)`.
//!
//! The player is `tests/player/glass.mjs`: hls.js (`lowLatencyMode: true`, default config
//! otherwise) in Debian's headless Chromium; on every frame handed to the compositor
//! (`requestVideoFrameCallback`) it draws the `<video>` to a canvas, decodes the strip and
//! subtracts it from `Date.now()` at the frame's expected display time. Samples from the first
//! `--warmup` seconds after playback starts are dropped; then `--seconds` are measured.
//! hls.js's default config never speeds playback up (`maxLiveSyncPlaybackRate` 1), so where a
//! player joins the stream sets its latency for the whole play: each configuration is played
//! `--plays` times by a fresh player on the same stream, and the percentiles are over the
//! frames of all plays. `--player shaka` plays with Shaka Player instead (its
//! `streaming.lowLatencyMode`, defaults otherwise), which keeps its own distance to the edge;
//! `--player videojs` with video.js 8 and its HLS engine VHS (LL-HLS on, its default);
//! `--player native` with Chromium's own HLS player (the URL set as the `<video>`'s source), which
//! plays segments only and cannot be pinned to a variant: in the ladder configurations it plays
//! the rung's media playlist (video only).
//!
//! Configurations (each with processes of its own, one after the other), all with 200 ms
//! parts and 2 s segments on loopback unless `--part-ms` and `--segment-s` say otherwise:
//! - `standalone`: one `edge ingest`, no ladder (the source passes through);
//! - `standalone-ladder`: one `edge ingest` with the default ladder, the player pinned to a
//!   transcoded rung (`--rung`, 480p by default);
//! - `balancer`: an `edge balancer` in front of one node (no ladder); publish and playback
//!   both through the balancer;
//! - `balancer-ladder`: the same with the default ladder and the pinned rung.
//!
//! The publisher and the player command live in `tests/common/glass.rs`, shared with the short
//! version CI runs (`player_chromium::glass_to_glass_reads_the_capture_time_off_the_displayed_frames`).
//!
//! Run: `cargo bench --bench glass` (needs scripts/setup.sh: ffmpeg, Chromium, node and
//! tests/player/node_modules; about 3 minutes per configuration). `-- --help` lists options.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

// The test harness: nodes, a cluster with a balancer, HTTP, LL-HLS playlist checks.
#[path = "../tests/common/mod.rs"]
mod common;
use common::glass::{glass_mjs, publish, report_of, SOURCE_FPS, SOURCE_HEIGHT, SOURCE_WIDTH};
use common::{
    bench_config_template, check_ll_hls,
    cluster::{self, wait_nodes, Balancer, Cluster},
    http_get, run_with_timeout, wait_until, Encoder, Node, Ports, TempDir, Track,
    FIRST_SEGMENT_TIMEOUT, HTTP_TIMEOUT,
};

const COMMAND: &str = "cargo bench --bench glass";
const USAGE: &str = "\
Usage: cargo bench --bench glass -- [OPTION...]

Options:
  --config NAME     run only this configuration (repeatable, or comma-separated); one of
                    standalone, standalone-ladder, balancer, balancer-ladder (default: all four)
  --plays N         fresh players, one after the other, per configuration (default 3): where
                    hls.js joins the stream sets its latency for the whole play
  --seconds N       seconds of playback measured per play (default 40)
  --warmup N        seconds after a play's first `playing` event whose samples are dropped
                    (default 10)
  --rung NAME       the transcoded rung the player is pinned to in the ladder configurations
                    (default 480p; the 720p rung is the source's own size and is skipped)
  --gop N           the publisher's keyframe interval in seconds (default 2)
  --part-ms N       the node's hls.part_target in ms (default 200, the product's default)
  --segment-s N     the node's hls.segment_target in seconds (default 2, the product's default)
  --gstreamer       package a stream without a ladder through GStreamer
                    (transcode.direct_passthrough = false) instead of straight from RTMP
  --no-keyframe-join  answer a player's first playlist load at the next part
                    (hls.keyframe_join = false) instead of when it would start next to a keyframe
  --part-hold-back N  the node's hls.part_hold_back_parts: PART-HOLD-BACK in part targets
                    (default: the product's, 3)
  --media-playlist  pin the rung by playing its media playlist (video only) instead of locking
                    the variant in the multivariant playlist (video and audio)
  --samples DIR     write each play's samples to DIR/CONFIG-PLAY.json
                    ([display wall-clock ms, latency ms] pairs)
  --player NAME     hlsjs (default: hls.js, lowLatencyMode), shaka (Shaka Player,
                    streaming.lowLatencyMode), videojs (video.js 8 with VHS, llhls) or
                    native (Chromium's own HLS player; pinned to a rung by its media
                    playlist); other settings are the player's defaults
  -h, --help        this text
";

/// The stream key and playback ID of the standalone node.
const KEY: &str = "glass-stream-key";
const PID: &str = "glass";
/// How long playback may take to start and the browser to come and go, beyond the measured
/// time (glass.mjs waits up to 60 s for `playing`).
const PLAYER_OVERHEAD: Duration = Duration::from_secs(150);
/// The goals of the issue: glass-to-glass p50 and p99 (ms).
const GOAL_P50_MS: f64 = 800.0;
const GOAL_P99_MS: f64 = 1200.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    Standalone,
    StandaloneLadder,
    Balancer,
    BalancerLadder,
}

impl Config {
    const ALL: [Config; 4] = [
        Config::Standalone,
        Config::StandaloneLadder,
        Config::Balancer,
        Config::BalancerLadder,
    ];

    fn name(self) -> &'static str {
        match self {
            Config::Standalone => "standalone",
            Config::StandaloneLadder => "standalone-ladder",
            Config::Balancer => "balancer",
            Config::BalancerLadder => "balancer-ladder",
        }
    }

    fn ladder(self) -> bool {
        matches!(self, Config::StandaloneLadder | Config::BalancerLadder)
    }

    fn balancer(self) -> bool {
        matches!(self, Config::Balancer | Config::BalancerLadder)
    }
}

struct Args {
    configs: Vec<Config>,
    seconds: u64,
    warmup: u64,
    rung: String,
    gop: u32,
    media_playlist: bool,
    plays: u32,
    samples: Option<PathBuf>,
    /// glass.mjs's `--player`: `hlsjs`, `shaka` or `videojs`.
    player: String,
    /// The node's `hls.part_target` (ms) and `hls.segment_target` (s).
    part_ms: u64,
    segment_s: u64,
    /// The node packages a stream without a ladder through GStreamer
    /// (`transcode.direct_passthrough = false`) instead of straight from RTMP.
    gstreamer: bool,
    /// `hls.keyframe_join = false`: a player's first playlist load is answered at the next part.
    no_keyframe_join: bool,
    /// The node's `hls.part_hold_back_parts`; `None`: the product's default.
    part_hold_back: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        configs: Vec::new(),
        seconds: 40,
        warmup: 10,
        rung: "480p".into(),
        gop: 2,
        media_playlist: false,
        plays: 3,
        samples: None,
        player: "hlsjs".into(),
        part_ms: 200,
        segment_s: 2,
        gstreamer: false,
        no_keyframe_join: false,
        part_hold_back: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: not a number: {v}"))
        };
        match name.as_str() {
            // cargo bench passes --bench to harness = false binaries.
            "--bench" => {}
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--config" => {
                for n in value()?.split(',') {
                    let c = Config::ALL
                        .into_iter()
                        .find(|c| c.name() == n.trim())
                        .ok_or_else(|| format!("unknown configuration {n}\n\n{USAGE}"))?;
                    if !a.configs.contains(&c) {
                        a.configs.push(c);
                    }
                }
            }
            "--seconds" => a.seconds = num(value()?)?,
            "--warmup" => a.warmup = num(value()?)?,
            "--gop" => {
                a.gop = u32::try_from(num(value()?)?).map_err(|_| "--gop: too large")?;
            }
            "--rung" => a.rung = value()?,
            "--part-ms" => a.part_ms = num(value()?)?,
            "--segment-s" => a.segment_s = num(value()?)?,
            "--plays" => {
                a.plays = u32::try_from(num(value()?)?).map_err(|_| "--plays: too large")?;
            }
            "--media-playlist" => a.media_playlist = true,
            "--gstreamer" => a.gstreamer = true,
            "--no-keyframe-join" => a.no_keyframe_join = true,
            "--part-hold-back" => a.part_hold_back = Some(num(value()?)?),
            "--samples" => a.samples = Some(PathBuf::from(value()?)),
            "--player" => {
                a.player = value()?;
                if !["hlsjs", "shaka", "videojs", "native"].contains(&a.player.as_str()) {
                    return Err(format!(
                        "--player {}: hlsjs, shaka, videojs or native\n\n{USAGE}",
                        a.player
                    ));
                }
            }
            other => return Err(format!("unknown argument {other}\n\n{USAGE}")),
        }
    }
    if a.configs.is_empty() {
        a.configs = Config::ALL.to_vec();
    }
    if a.seconds == 0 || a.plays == 0 || a.gop == 0 || a.gop > 10 {
        return Err("--seconds and --plays must be at least 1, --gop 1 to 10".into());
    }
    if rung_height(&a.rung).is_none() {
        return Err(format!(
            "--rung {}: expected a name like 480p (its height)",
            a.rung
        ));
    }
    Ok(a)
}

/// The height a default-ladder rung is named after: "480p" → 480.
fn rung_height(rung: &str) -> Option<u32> {
    rung.strip_suffix('p')?.parse().ok().filter(|h| *h > 0)
}

/// `text` with `from` replaced by `to`; panics when `from` is absent (the harness's template
/// changed and the bench would measure something else).
fn replace_present(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the harness config has no {from:?}:\n{text}"
    );
    text.replace(from, to)
}

/// The harness's node config text (`text`) with the bench's part and segment targets.
fn hls_targets(text: &str, a: &Args) -> String {
    let t = replace_present(
        text,
        "part_target = \"333ms\"",
        &format!("part_target = \"{}ms\"", a.part_ms),
    );
    let t = replace_present(
        &t,
        "segment_target = \"2s\"",
        &format!("segment_target = \"{}s\"", a.segment_s),
    );
    let t = if a.no_keyframe_join {
        replace_present(&t, "[hls]\n", "[hls]\nkeyframe_join = false\n")
    } else {
        t
    };
    let t = match a.part_hold_back {
        Some(n) => replace_present(
            &t,
            "[hls]\n",
            &format!("[hls]\npart_hold_back_parts = {n}\n"),
        ),
        None => t,
    };
    if a.gstreamer {
        replace_present(
            &t,
            "[transcode]\n",
            "[transcode]\ndirect_passthrough = false\n",
        )
    } else {
        t
    }
}

/// The harness's node config with the bench's part and segment targets, room for the stream,
/// the bench's stream key, and the default ladder or none (the source passes through alone).
fn standalone_config(ports: &Ports, ladder: bool, a: &Args) -> String {
    let base = hls_targets(&bench_config_template(ports), a);
    let head = if ladder { "" } else { "ladder = []\n\n" };
    format!("{head}{base}\n[[streams]]\nkey = \"{KEY}\"\nplayback_id = \"{PID}\"\n")
}

/// What one configuration runs: its processes (dropped, and killed, in this order), where to
/// publish and where to play.
struct Origin {
    _node: Node,
    _balancer: Option<Balancer>,
    _cluster: Option<Cluster>,
    rtmp: String,
    /// `http://127.0.0.1:PORT/live/PID` as viewers reach it.
    play_base: String,
}

fn start_origin(cfg: Config, a: &Args) -> Origin {
    if !cfg.balancer() {
        let ports = Ports::free();
        let node = Node::start_with_config(ports, standalone_config(&ports, cfg.ladder(), a));
        return Origin {
            rtmp: node.rtmp_url(KEY),
            play_base: format!("{}/live/{PID}", node.http_base()),
            _node: node,
            _balancer: None,
            _cluster: None,
        };
    }
    let c = Cluster::new(1, 1);
    let b = c.balancer(1, "5s");
    // 10 units: the stream with the default ladder costs about 3 (a 720p30 decode and the
    // rungs), passthrough alone 1.
    let node = c.node_with(1, 10, &[&b], |text| {
        let mut t = hls_targets(text, a);
        if cfg.ladder() {
            t = replace_present(&t, "ladder = []\n", "");
        }
        *text = t;
    });
    wait_nodes(&b, &["n1"]);
    Origin {
        rtmp: b.rtmp_url(&cluster::key(0)),
        play_base: format!("http://127.0.0.1:{}/live/{}", b.ports.http, cluster::pid(0)),
        _node: node,
        _balancer: Some(b),
        _cluster: Some(c),
    }
}

/// Waits until `url` serves a valid LL-HLS video playlist with 2 complete segments.
fn wait_playlist(url: &str, enc: &mut Encoder) {
    let mut last = String::from("no attempt yet");
    let ok = wait_until(FIRST_SEGMENT_TIMEOUT, || {
        assert!(enc.is_running(), "ffmpeg stopped:\n{}", enc.log_text());
        let r = http_get(url, HTTP_TIMEOUT).map_err(|e| last = e).ok()?;
        if r.status != 200 {
            last = format!("HTTP {}", r.status);
            return None;
        }
        match check_ll_hls(&r.text(), Track::Video) {
            Ok(pl) if pl.segments.len() >= 2 => Some(()),
            Ok(pl) => {
                last = format!("{} segments", pl.segments.len());
                None
            }
            Err(e) => {
                last = format!("{e:?}");
                None
            }
        }
    });
    assert!(ok.is_some(), "{url}: no playable playlist; last: {last}");
}

/// One configuration's result: a report per play, and every play's samples pooled.
struct Row {
    cfg: Config,
    variant: String,
    load: String,
    plays: Vec<serde_json::Value>,
    /// Glass-to-glass latency of every measured frame of every play (ms), sorted.
    pooled: Vec<f64>,
    encoder_ok: bool,
}

/// Plays `url` once with glass.mjs; its report, and its samples from `samples_file`.
fn play(
    a: &Args,
    url: &str,
    level: Option<u32>,
    samples_file: &Path,
) -> (serde_json::Value, Vec<f64>) {
    let mut cmd = glass_mjs(url, a.seconds, a.warmup, &a.player);
    cmd.arg("--samples").arg(samples_file);
    if let Some(h) = level {
        cmd.args(["--level", &h.to_string()]);
    }
    let out = run_with_timeout(
        &mut cmd,
        Duration::from_secs(a.warmup + a.seconds) + PLAYER_OVERHEAD,
    )
    .unwrap_or_else(|e| panic!("glass.mjs: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        eprintln!("[bench] glass.mjs stderr:\n{stderr}");
    }
    assert!(
        out.status.success(),
        "glass.mjs failed ({}): {stderr}",
        out.status
    );
    let report = report_of(&stdout).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("[bench] report: {report}");
    let samples: Vec<Vec<f64>> = fs::read(samples_file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    (
        report,
        samples.iter().filter_map(|s| s.get(1).copied()).collect(),
    )
}

fn run(cfg: Config, a: &Args) -> Row {
    eprintln!("[bench] {}: starting", cfg.name());
    let load = fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let origin = start_origin(cfg, a);
    let dir = TempDir::new("glass");
    let total = Duration::from_secs(a.warmup + a.seconds) * a.plays + PLAYER_OVERHEAD * a.plays;
    let mut enc = publish(&origin.rtmp, a.gop, total);
    let rendition = if cfg.ladder() {
        a.rung.as_str()
    } else {
        "source"
    };
    let media = format!("{}/{rendition}/index.m3u8", origin.play_base);
    wait_playlist(&media, &mut enc);

    // Chromium's own player cannot be told which variant to play.
    let media_playlist = a.media_playlist || a.player == "native";
    let (url, level, variant) = match (cfg.ladder(), media_playlist) {
        (false, _) => (
            format!("{}/index.m3u8", origin.play_base),
            None,
            "source".to_string(),
        ),
        (true, false) => (
            format!("{}/index.m3u8", origin.play_base),
            rung_height(&a.rung),
            format!("{} locked", a.rung),
        ),
        (true, true) => (media.clone(), None, format!("{} media playlist", a.rung)),
    };
    let mut plays = Vec::new();
    let mut pooled = Vec::new();
    for i in 1..=a.plays {
        eprintln!("[bench] {}: play {i}/{}: {url}", cfg.name(), a.plays);
        let file = dir.path().join(format!("{}-{i}.json", cfg.name()));
        let (report, samples) = play(a, &url, level, &file);
        if let Some(d) = &a.samples {
            fs::create_dir_all(d).expect("create the samples directory");
            fs::copy(&file, d.join(format!("{}-{i}.json", cfg.name()))).expect("copy samples");
        }
        plays.push(report);
        pooled.extend(samples);
    }
    pooled.sort_by(f64::total_cmp);
    let encoder_ok = enc.is_running();
    if !encoder_ok {
        eprintln!(
            "[bench] {}: ffmpeg stopped during playback:\n{}",
            cfg.name(),
            enc.log_text()
        );
    }
    drop(enc);
    drop(origin);
    Row {
        cfg,
        variant,
        load,
        plays,
        pooled,
        encoder_ok,
    }
}

/// Nearest-rank quantile of sorted `v`.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    let rank = (q * v.len() as f64).ceil() as usize;
    v.get(rank.max(1) - 1).copied()
}

/// A number as text ("-" when absent), `scale` times its value, `prec` decimals.
/// The marks of a play's join printed per play (label, key in glass.mjs's `join`).
const JOIN_MARKS: [(&str, &str); 6] = [
    ("first media request", "firstMediaRequest"),
    ("video buffered", "videoBuffered"),
    ("audio buffered", "audioBuffered"),
    ("seeking", "seeking"),
    ("seeked", "seeked"),
    ("playing", "playing"),
];

fn num(v: &serde_json::Value, scale: f64, prec: usize) -> String {
    opt(v.as_f64().map(|x| x * scale), prec)
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "-".into())
}

/// One field of every play, formatted by `f`, joined with " / ".
fn per_play(plays: &[serde_json::Value], f: impl Fn(&serde_json::Value) -> String) -> String {
    plays.iter().map(f).collect::<Vec<_>>().join(" / ")
}

fn sum(plays: &[serde_json::Value], key: &str) -> u64 {
    plays.iter().filter_map(|p| p[key].as_u64()).sum()
}

fn machine() -> (usize, String) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    (cores, model)
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    common::player::ensure_node_modules();
    let rows: Vec<Row> = a.configs.iter().map(|c| run(*c, &a)).collect();

    let (cores, model) = machine();
    println!();
    let player = match a.player.as_str() {
        "shaka" => "Shaka Player streaming.lowLatencyMode",
        "videojs" => "video.js with VHS (llhls)",
        "native" => "Chromium's own HLS player",
        _ => "hls.js lowLatencyMode",
    };
    println!(
        "glass-to-glass latency ({COMMAND}): {SOURCE_WIDTH}x{SOURCE_HEIGHT}p{SOURCE_FPS} x264 veryfast zerolatency, {} s GOP, RTMP in; {} ms parts, {} s segments, PART-HOLD-BACK {} part targets, keyframe join {}, loopback; {player} in headless Chromium",
        a.gop,
        a.part_ms,
        a.segment_s,
        a.part_hold_back
            .map_or_else(|| "default".to_string(), |n| n.to_string()),
        if a.no_keyframe_join { "off" } else { "on" },
    );
    println!(
        "machine: {cores} cores, {model}; per configuration {} play(s) by a fresh player, each {} s of samples after a {} s warm-up (dropped) from its first `playing`; percentiles over all plays' frames",
        a.plays, a.seconds, a.warmup
    );
    println!();
    println!("| configuration | variant | samples | p50 ms | p90 ms | p99 ms | max ms | p50 ms per play | stalls (measured/all) | hls.js targetLatency s at end, per play | the player's own latency estimate p50 s, per play | rejected frames | load avg | goal p50 ≤ 800, p99 ≤ 1200 |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let p = |q| quantile(&r.pooled, q);
        let rejected: u64 = r
            .plays
            .iter()
            .filter_map(|j| j["rejected"].as_object())
            .flat_map(|o| o.values().filter_map(|v| v.as_u64()))
            .sum();
        let goal = match (p(0.5), p(0.99)) {
            (Some(p50), Some(p99)) => {
                let ok = |m: bool| if m { "met" } else { "missed" };
                format!("{} / {}", ok(p50 <= GOAL_P50_MS), ok(p99 <= GOAL_P99_MS))
            }
            _ => "no samples".into(),
        };
        let mut sizes: Vec<String> = r
            .plays
            .iter()
            .filter_map(|j| j["videoSizes"].as_object())
            .flat_map(|o| o.keys().cloned())
            .collect();
        sizes.sort();
        sizes.dedup();
        println!(
            "| {} | {} ({}) | {} | {} | {} | {} | {} | {} | {}/{} | {} | {} | {} | {} | {} |",
            r.cfg.name(),
            r.variant,
            sizes.join(", "),
            r.pooled.len(),
            opt(p(0.5), 0),
            opt(p(0.9), 0),
            opt(p(0.99), 0),
            opt(r.pooled.last().copied(), 0),
            per_play(&r.plays, |j| num(&j["p50"], 1.0, 0)),
            sum(&r.plays, "stallsMeasured"),
            sum(&r.plays, "stalls"),
            per_play(&r.plays, |j| num(&j["targetLatency"], 1.0, 3)),
            per_play(&r.plays, |j| num(&j["ownLatencyP50"], 0.001, 2)),
            rejected,
            r.load,
            goal,
        );
    }
    println!();
    for r in &rows {
        for (i, j) in r.plays.iter().enumerate() {
            let mut notes = Vec::new();
            if j["started"] != serde_json::Value::Bool(true) {
                notes.push("playback never started".to_string());
            }
            if let Some(f) = j["fatalErrors"].as_array().filter(|f| !f.is_empty()) {
                notes.push(format!("hls.js fatal errors {f:?}"));
            }
            if j["nonFatalErrors"].as_u64().unwrap_or(0) > 0 {
                notes.push(format!("hls.js non-fatal errors {}", j["nonFatalDetails"]));
            }
            if let Some(st) = j["stallLog"].as_array().filter(|s| !s.is_empty()) {
                let each: Vec<String> = st
                    .iter()
                    .map(|x| {
                        let long = x["ms"].as_f64().map_or_else(
                            || "until the end of the play".to_string(),
                            |ms| format!("for {ms:.0} ms"),
                        );
                        format!("{} s after start {long}", num(&x["afterStartMs"], 0.001, 1))
                    })
                    .collect();
                notes.push(format!("stalls: {}", each.join(", ")));
            }
            if let Some(sl) = j["slowLoads"].as_array().filter(|s| !s.is_empty()) {
                notes.push(format!("media loads over 1 s: {}", sl.len()));
            }
            if j["rejected"]
                .as_object()
                .is_some_and(|o| o.values().any(|v| v.as_u64().unwrap_or(0) > 0))
            {
                notes.push(format!("rejected frames {}", j["rejected"]));
            }
            let at = &j["atPlaying"];
            notes.push(format!(
                "first playing after {} ms at hls.js latency {} s (target {} s); frames read {} ({} warm-up), decoded {} dropped {}; {}",
                num(&j["firstPlayingMs"], 1.0, 0),
                num(&at["latency"], 1.0, 3),
                num(&at["targetLatency"], 1.0, 3),
                num(&j["frames"], 1.0, 0),
                num(&j["warmupSamples"], 1.0, 0),
                num(&j["decodedFrames"], 1.0, 0),
                num(&j["droppedFrames"], 1.0, 0),
                j["frameClock"].as_str().unwrap_or("?"),
            ));
            let jn = &j["join"];
            if jn.is_object() {
                let playlists = jn["playlists"].as_array().map_or_else(String::new, |a| {
                    let names: Vec<&str> = a.iter().filter_map(|x| x.as_str()).collect();
                    names.join(" / ")
                });
                let marks: Vec<String> = JOIN_MARKS
                    .iter()
                    .map(|(label, key)| format!("{label} {}", num(&jn[*key], 1.0, 0)))
                    .collect();
                notes.push(format!(
                    "join, ms after the first media playlist arrived: playlists {playlists}, {}",
                    marks.join(", ")
                ));
            }
            println!("{} play {}: {}", r.cfg.name(), i + 1, notes.join("; "));
        }
        if !r.encoder_ok {
            println!("{}: ffmpeg stopped during playback", r.cfg.name());
        }
    }
}
