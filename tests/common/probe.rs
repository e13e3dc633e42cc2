//! [`ffprobe_decode`]: decode fMP4 media (init + parts/segments) with ffprobe.

use super::{run_with_timeout, TempDir};
use std::process::Command;
use std::time::Duration;

/// How long ffprobe may take to decode a few seconds of media on a busy 2-core machine.
pub const FFPROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// What ffprobe decoded, for the first video stream (or the first stream if none is video).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    /// `codec_name`, e.g. "h264", "aac".
    pub codec: String,
    /// "video" or "audio".
    pub codec_type: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Frames actually decoded (`nb_read_frames` with `-count_frames`; audio frames for audio).
    pub frames_decoded: u64,
    /// Stream duration in seconds, else the container's.
    pub duration: Option<f64>,
    /// Number of streams in the file.
    pub stream_count: usize,
    /// ffprobe's stderr at `-v error` (decode errors; empty when clean).
    pub stderr: String,
}

/// Writes `init` followed by `media` (parts or segments, in order) to a temp file and runs
/// `ffprobe -v error -count_frames -show_streams -show_format -of json` on it.
/// Errors if ffprobe fails, times out, prints no stream, or its JSON is unreadable.
pub fn ffprobe_decode(init: &[u8], media: &[&[u8]]) -> Result<ProbeResult, String> {
    let dir = TempDir::new("probe");
    let path = dir.path().join("media.mp4");
    let mut data = Vec::with_capacity(init.len() + media.iter().map(|m| m.len()).sum::<usize>());
    data.extend_from_slice(init);
    for m in media {
        data.extend_from_slice(m);
    }
    std::fs::write(&path, &data).map_err(|e| format!("write {}: {e}", path.display()))?;
    let out = run_with_timeout(
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-count_frames",
                "-show_streams",
                "-show_format",
                "-of",
                "json",
            ])
            .arg(&path),
        FFPROBE_TIMEOUT,
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(format!(
            "ffprobe failed ({}) on {} bytes: {stderr}",
            out.status,
            data.len()
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("ffprobe JSON: {e}; stderr: {stderr}"))?;
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    let s = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .or_else(|| streams.first())
        .ok_or_else(|| format!("ffprobe found no stream; stderr: {stderr}"))?;
    let num = |x: &serde_json::Value| -> Option<f64> {
        x.as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| x.as_f64())
    };
    Ok(ProbeResult {
        codec: s["codec_name"].as_str().unwrap_or_default().to_string(),
        codec_type: s["codec_type"].as_str().unwrap_or_default().to_string(),
        width: s["width"].as_u64().map(|w| w as u32),
        height: s["height"].as_u64().map(|h| h as u32),
        frames_decoded: num(&s["nb_read_frames"]).map(|n| n as u64).unwrap_or(0),
        duration: num(&s["duration"]).or_else(|| num(&v["format"]["duration"])),
        stream_count: streams.len(),
        stderr,
    })
}
