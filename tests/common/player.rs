//! [`play_in_chromium`]: real playback with hls.js in Debian's headless Chromium
//! (`tests/player/play.mjs`, driven by playwright-core).

use super::run_with_timeout;
use serde::Deserialize;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// Time allowed beyond the requested play time: launching Chromium and loading the page take
/// a few seconds normally, much longer on a loaded 2-core machine.
pub const PLAYER_OVERHEAD_TIMEOUT: Duration = Duration::from_secs(90);

/// `npm ci` of hls.js + playwright-core (two packages, no browser download).
pub const NPM_CI_TIMEOUT: Duration = Duration::from_secs(300);

/// What play.mjs printed after playing (field names as in its JSON line).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlayerReport {
    /// `video.currentTime` when playback first started (null if it never did).
    pub start_time: Option<f64>,
    /// hls.js: where the buffered range holding `start_time` began then (the keyframe the
    /// player loaded and decoded from to reach its start position).
    #[serde(default)]
    pub buffer_start_at_start: Option<f64>,
    /// `video.currentTime` at the end.
    pub end_time: Option<f64>,
    /// Seconds of media played: `end_time - start_time` (0 if playback never started).
    pub advanced: f64,
    /// hls.js fatal errors (`type/details ...`) and `<video>` errors.
    pub fatal_errors: Vec<String>,
    pub non_fatal_errors: u64,
    /// Count per hls.js error `details`, for messages.
    #[serde(default)]
    pub non_fatal_details: serde_json::Map<String, serde_json::Value>,
    /// The first few non-fatal errors in full: message, playhead, whether playback had
    /// started, and the buffered ranges of the media element and of each SourceBuffer.
    #[serde(default)]
    pub non_fatal_log: Vec<serde_json::Value>,
    /// Non-fatal errors raised after playback started (those before are the player finding
    /// its way in, e.g. jumping a start gap between the audio and video buffers).
    #[serde(default)]
    pub non_fatal_after_start: u64,
    /// Which player: `hls.js` or `shaka`.
    #[serde(default)]
    pub player: Option<String>,
    /// Seconds behind the live edge at the end: `hls.latency` (hls.js), or the end of the seek
    /// range less the playhead (Shaka, whose range already ends a hold-back before the edge).
    pub latency: Option<f64>,
    /// Seconds from the PDT of the frame playing to the wall clock at the end: how long after
    /// it reached the node (within the PDT's accuracy, 100 ms) a frame is on screen.
    #[serde(default)]
    pub pdt_latency: Option<f64>,
    pub target_latency: Option<f64>,
    /// `hls.currentLevel`.
    pub level: Option<i64>,
    /// Number of variants hls.js loaded.
    pub levels: u64,
    /// Milliseconds from attaching the player to the first `playing` event.
    #[serde(default)]
    pub first_playing_ms: Option<f64>,
    /// `waiting` events after playback started.
    #[serde(default)]
    pub stalls: u64,
    #[serde(default)]
    pub decoded_frames: Option<u64>,
    #[serde(default)]
    pub dropped_frames: Option<u64>,
}

/// `tests/player`: the player scripts and their node_modules.
pub fn player_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("player")
}

/// Serializes the one-time `npm ci` across the tests of one binary.
static NPM_LOCK: Mutex<()> = Mutex::new(());

/// Makes sure `tests/player/node_modules` holds hls.js and playwright-core (`npm ci` once).
pub fn ensure_node_modules() {
    let _guard = NPM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = player_dir();
    let ready = || {
        dir.join("node_modules/hls.js/dist/hls.min.js").is_file()
            && dir
                .join("node_modules/shaka-player/dist/shaka-player.compiled.js")
                .is_file()
            && dir
                .join("node_modules/video.js/dist/video.min.js")
                .is_file()
            && dir
                .join("node_modules/playwright-core/package.json")
                .is_file()
    };
    if ready() {
        return;
    }
    eprintln!("[harness] running npm ci in {}", dir.display());
    let out = run_with_timeout(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir),
        NPM_CI_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("npm ci in {}: {e}", dir.display()));
    assert!(
        out.status.success() && ready(),
        "npm ci in {} failed ({}): {}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Plays `url` with hls.js (lowLatencyMode) in headless Chromium for `secs` seconds and returns
/// the player's report. Panics only if the harness itself fails (node/Chromium missing, no
/// report); player errors are in the report for the test to assert on.
pub fn play_in_chromium(url: &str, secs: u64) -> PlayerReport {
    play_in_chromium_trusting(url, secs, &[])
}

/// [`play_in_chromium`] over HTTPS: Chromium trusts certificates whose public key has one of
/// the `spki` hashes (base64 SHA-256 of the SubjectPublicKeyInfo, [`spki_hash`]).
pub fn play_in_chromium_trusting(url: &str, secs: u64, spki: &[String]) -> PlayerReport {
    play_with(url, secs, spki, "hlsjs")
}

/// Plays `url` with Shaka Player (`streaming.lowLatencyMode`, its other settings default) in
/// headless Chromium for `secs` seconds; the report has the same shape as hls.js's.
pub fn play_shaka_in_chromium(url: &str, secs: u64) -> PlayerReport {
    play_with(url, secs, &[], "shaka")
}

fn play_with(url: &str, secs: u64, spki: &[String], player: &str) -> PlayerReport {
    ensure_node_modules();
    let dir = player_dir();
    let out = run_with_timeout(
        Command::new("node")
            .arg(dir.join("play.mjs"))
            .arg(url)
            .arg(secs.to_string())
            .arg(player)
            .env("EDGE_PLAYER_TRUST_SPKI", spki.join(","))
            .current_dir(&dir),
        Duration::from_secs(secs) + PLAYER_OVERHEAD_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("play.mjs {url}: {e}"));
    report(&out, &format!("play.mjs {url}"))
}

/// The base64 SHA-256 of a PEM certificate's SubjectPublicKeyInfo (what Chromium's
/// `--ignore-certificate-errors-spki-list` takes), by openssl.
pub fn spki_hash(cert: &std::path::Path) -> String {
    let out = run_with_timeout(
        Command::new("sh").arg("-c").arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | base64",
            cert.display()
        )),
        Duration::from_secs(20),
    )
    .expect("openssl");
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && hash.len() == 44,
        "no SPKI hash for {}: {}",
        cert.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    hash
}

/// Drives the web dashboard at `admin_url` in headless Chromium as an operator would
/// (`tests/player/dashboard.mjs`: log in, wait for `pid` on `node` with live figures, preview
/// it, screenshots into `out_dir`, drain `node`, log out) and returns its JSON report.
pub fn drive_dashboard(
    admin_url: &str,
    token: &str,
    pid: &str,
    node: &str,
    out_dir: &std::path::Path,
) -> serde_json::Value {
    ensure_node_modules();
    let dir = player_dir();
    let out = run_with_timeout(
        Command::new("node")
            .arg(dir.join("dashboard.mjs"))
            .args([admin_url, token, pid, node])
            .arg(out_dir)
            .current_dir(&dir),
        PLAYER_OVERHEAD_TIMEOUT * 3,
    )
    .unwrap_or_else(|e| panic!("dashboard.mjs {admin_url}: {e}"));
    report(&out, &format!("dashboard.mjs {admin_url}"))
}

/// The JSON report a player script printed last on stdout (its stderr shown), parsed; panics
/// naming `what` when the script failed or printed none.
fn report<T: serde::de::DeserializeOwned>(out: &std::process::Output, what: &str) -> T {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        eprintln!("[harness] {what} stderr:\n{stderr}");
    }
    assert!(
        out.status.success(),
        "{what} failed ({}): {stderr}",
        out.status
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| {
            panic!("{what} printed no JSON report; stdout: {stdout}; stderr: {stderr}")
        });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{what} report {line:?}: {e}"))
}
