//! Measuring this machine's capacity at start (`node.capacity_units = "calibrate"`).

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::pipeline::PipelineError;

fn build_err(e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Build(e.to_string())
}

/// Measure this machine's capacity: encode a few seconds of 720p30 with one x264 thread and
/// return milli-units (1000 = one 720p30 rung in real time on one core) for all cores.
pub fn calibrate(preset: &str) -> Result<u32, PipelineError> {
    /// Frames encoded: 2 s of 720p30, long enough to smooth x264 start-up, short for start.
    const CALIBRATION_FRAMES: u32 = 60;
    /// Keep 20% for demuxing, decoding, scaling, packaging and the OS.
    const HEADROOM: f64 = 0.8;
    gst::init().map_err(build_err)?;
    let desc = format!(
        "videotestsrc num-buffers={CALIBRATION_FRAMES} pattern=smpte ! video/x-raw,width=1280,height=720,framerate=30/1 ! \
         x264enc threads=1 speed-preset={preset} tune=zerolatency bitrate=3000 ! fakesink sync=false"
    );
    let pipeline = gst::parse::launch(&desc).map_err(build_err)?;
    // Wall-clock time is the measurement here (how fast this machine encodes), not a timeout.
    #[allow(clippy::disallowed_methods, clippy::disallowed_types)]
    let start = std::time::Instant::now();
    pipeline.set_state(gst::State::Playing).map_err(build_err)?;
    let bus = pipeline.bus().ok_or_else(|| build_err("no bus"))?;
    let mut result = Err(build_err("calibration did not finish"));
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Eos(_) => {
                result = Ok(());
                break;
            }
            gst::MessageView::Error(e) => {
                result = Err(build_err(e.error()));
                break;
            }
            _ => {}
        }
    }
    let elapsed = start.elapsed().as_secs_f64().max(0.001);
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    let realtime = f64::from(CALIBRATION_FRAMES) / 30.0;
    let per_core = realtime / elapsed;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    Ok((per_core * cores * HEADROOM * 1000.0) as u32)
}
