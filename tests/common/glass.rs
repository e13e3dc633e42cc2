//! The glass-to-glass measurement shared by `benches/glass.rs` and its short version in
//! `tests/player_chromium.rs`: ffmpeg publishes a test picture with the wall clock burnt into a
//! strip of blocks ([`publish`]), and `tests/player/glass.mjs` reads the strip back off every
//! frame the player displays ([`glass_mjs`], [`report_of`]). See the bench's documentation.

use std::process::Command;
use std::time::Duration;

use super::Encoder;

/// The source picture.
pub const SOURCE_WIDTH: u32 = 1280;
pub const SOURCE_HEIGHT: u32 = 720;
pub const SOURCE_FPS: u32 = 30;
/// Side of one block of the time strip, in source pixels: 20 px in a 360p rung, enough to
/// survive x264 at 600 kbit/s.
pub const BLOCK: u32 = 40;
/// Bits of the time code: milliseconds modulo 2^24 (4.6 hours).
pub const BITS: u32 = 24;

/// The `geq` luma expression of the 26x1 strip: X is the block.
pub fn strip_expression() -> String {
    let top = BITS + 1;
    format!(
        "st(1,mod(floor(time(0)*1000),{modulo}));\
         if(eq(X,0),255,if(lt(X,2),0,\
         st(2,{top}-X);\
         255*mod(floor(ld(1)/pow(2,ld(2)))+floor(ld(1)/pow(2,ld(2)+1)),2)))",
        modulo = 1u64 << BITS
    )
}

/// ffmpeg publishing the source with its time strip over RTMP to `url` for `duration`.
///
/// The strip is drawn on the output side (`-filter_complex` on the paced input), not in the
/// lavfi input: with two inputs, ffmpeg 5.1 reads each in a thread of its own that fills a
/// queue of 8 packets ahead of `-re`'s pacing, so a strip drawn in the input graph read the
/// clock up to 8 frames (0.27 s) before the frame was let go towards the encoder, as no camera
/// does; the glass-to-glass figures of stop 21 include that.
pub fn publish(url: &str, gop_seconds: u32, duration: Duration) -> Encoder {
    let blocks = BITS + 2;
    let picture = format!("testsrc2=size={SOURCE_WIDTH}x{SOURCE_HEIGHT}:rate={SOURCE_FPS}");
    let graph = format!(
        "color=c=black:size={blocks}x1:rate={SOURCE_FPS},format=gray,geq=lum='{expr}',\
         scale={w}:{BLOCK}:flags=neighbor,format=yuv420p[strip];\
         [0:v][strip]overlay=x=0:y=0[out0]",
        expr = strip_expression(),
        w = blocks * BLOCK,
    );
    let gop = (gop_seconds * SOURCE_FPS).to_string();
    let t = format!("{:.3}", duration.as_secs_f64());
    #[rustfmt::skip]
    let args = [
        "-hide_banner", "-nostdin", "-loglevel", "warning",
        "-re", "-f", "lavfi", "-i", &picture,
        "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-filter_complex", &graph,
        "-t", &t, "-map", "[out0]", "-map", "1:a",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
        "-g", &gop, "-keyint_min", &gop, "-sc_threshold", "0",
        "-pix_fmt", "yuv420p", "-b:v", "4M",
        "-c:a", "aac", "-ar", "48000", "-ac", "2", "-b:a", "128k",
        "-f", "flv", "-flvflags", "no_duration_filesize", url,
    ];
    Encoder::ffmpeg_with("ffmpeg-glass", &args.map(String::from))
}

/// `node glass.mjs URL SECONDS` with `player` (hlsjs, shaka, videojs or native), the warm-up and the
/// strip's geometry, run from the player directory.
pub fn glass_mjs(url: &str, seconds: u64, warmup: u64, player: &str) -> Command {
    let dir = super::player::player_dir();
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("glass.mjs"))
        .arg(url)
        .arg(seconds.to_string())
        .args(["--warmup", &warmup.to_string()])
        .args(["--block", &BLOCK.to_string(), "--bits", &BITS.to_string()])
        .args(["--source", &format!("{SOURCE_WIDTH}x{SOURCE_HEIGHT}")])
        .args(["--player", player])
        .current_dir(dir);
    cmd
}

/// The JSON report glass.mjs printed last on `stdout`.
pub fn report_of(stdout: &str) -> Result<serde_json::Value, String> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| format!("glass.mjs printed no report: {stdout}"))?;
    serde_json::from_str(line).map_err(|e| format!("glass.mjs report {line:?}: {e}"))
}
