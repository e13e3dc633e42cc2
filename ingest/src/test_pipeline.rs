//! Helpers of the unit tests that run real GStreamer pipelines (compiled only for tests).

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

/// The gst-launch description `desc` as a pipeline, and its appsink named `out`.
pub(crate) fn launch_to_appsink(desc: &str) -> (gst::Pipeline, gst_app::AppSink) {
    let pipeline = gst::parse::launch(desc)
        .expect("pipeline")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let sink = pipeline
        .by_name("out")
        .expect("appsink out")
        .downcast::<gst_app::AppSink>()
        .expect("an appsink");
    (pipeline, sink)
}
