use super::*;

use gstreamer_app as gst_app;

/// Frames of `videotestsrc` in `format`, `w`x`h`, BT.709, through `scaler` to `dw`x`dh`
/// (`out_colorimetry`: more fields for the caps after it): each buffer's bytes and the caps
/// the sink got.
fn run(
    scaler: &str,
    format: &str,
    (w, h): (u32, u32),
    (dw, dh): (u32, u32),
    out_colorimetry: &str,
) -> (Vec<Vec<u8>>, gst::Caps) {
    gst::init().expect("gstreamer");
    register().expect("register edgescale");
    let desc = format!(
        "videotestsrc num-buffers=3 pattern=smpte ! video/x-raw,format={format},width={w},height={h},framerate=30/1,colorimetry=bt709 ! \
         {scaler} ! video/x-raw,width={dw},height={dh},pixel-aspect-ratio=1/1{out_colorimetry} ! appsink name=out sync=false"
    );
    let pipeline = gst::parse::launch(&desc)
        .expect("pipeline")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline");
    let sink = pipeline
        .by_name("out")
        .expect("sink")
        .downcast::<gst_app::AppSink>()
        .expect("appsink");
    pipeline.set_state(gst::State::Playing).expect("play");
    let mut frames = Vec::new();
    let mut caps = None;
    while let Ok(sample) = sink.pull_sample() {
        caps = sample.caps_owned();
        let map = sample
            .buffer()
            .expect("buffer")
            .map_readable()
            .expect("map");
        frames.push(map.as_slice().to_vec());
    }
    let _ = pipeline.set_state(gst::State::Null);
    (frames, caps.expect("caps"))
}

#[test]
fn the_element_scales_as_videoscale_does_in_every_format_it_takes() {
    for format in ["I420", "Y444", "Y42B", "GRAY8"] {
        // The output colorimetry is pinned: left free, `videoscale` picks full range.
        let pinned = ",colorimetry=bt709";
        let (ours, caps) = run("edgescale", format, (1280, 720), (854, 480), pinned);
        let (theirs, _) = run("videoscale", format, (1280, 720), (854, 480), pinned);
        let info = gst_video::VideoInfo::from_caps(&caps).expect("video caps");
        assert_eq!((info.width(), info.height()), (854, 480), "{format}");
        assert_eq!(info.format().to_str(), format);
        assert_eq!(ours.len(), 3, "{format}: frames");
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a.len(), b.len(), "{format}: buffer size");
            let diff: u64 = a
                .iter()
                .zip(b)
                .map(|(x, y)| u64::from(x.abs_diff(*y)))
                .sum();
            let mean = diff as f64 / a.len() as f64;
            // The same filter, rounded differently: a small mean difference.
            assert!(mean < 2.0, "{format}: mean difference {mean:.2}");
        }
    }
}

/// Whether `scaler` takes `format` from `videotestsrc` to 320x180: the pipeline links and
/// its first message is the end of its 3 frames, not an error.
fn negotiates(scaler: &str, format: &str) -> bool {
    gst::init().expect("gstreamer");
    register().expect("register edgescale");
    let desc = format!(
        "videotestsrc num-buffers=3 ! video/x-raw,format={format},width=640,height=360 ! \
         {scaler} ! video/x-raw,width=320,height=180 ! fakesink"
    );
    let Ok(pipeline) = gst::parse::launch(&desc) else {
        return false;
    };
    pipeline.set_state(gst::State::Playing).expect("play");
    let bus = pipeline.bus().expect("bus");
    let ended = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .is_some_and(|m| m.type_() == gst::MessageType::Eos);
    let _ = pipeline.set_state(gst::State::Null);
    ended
}

#[test]
fn formats_it_does_not_take_do_not_negotiate() {
    for format in FORMATS {
        assert!(negotiates("edgescale", format.to_str()), "{format:?}");
    }
    for format in ["I420_10LE", "NV12", "RGBA"] {
        assert!(negotiates("videoscale", format), "{format} with videoscale");
        assert!(!negotiates("edgescale", format), "{format}");
    }
}

#[test]
fn the_element_keeps_the_colorimetry_and_passes_the_same_size_through() {
    let (frames, caps) = run("edgescale", "I420", (640, 360), (320, 180), "");
    let info = gst_video::VideoInfo::from_caps(&caps).expect("video caps");
    assert_eq!(info.colorimetry().to_string(), "bt709");
    assert_eq!((info.width(), info.height(), frames.len()), (320, 180, 3));
    let (same, caps) = run("edgescale", "I420", (640, 360), (640, 360), "");
    let (source, _) = run("identity", "I420", (640, 360), (640, 360), "");
    assert_eq!(same, source);
    assert_eq!(
        gst_video::VideoInfo::from_caps(&caps)
            .expect("caps")
            .width(),
        640
    );
}
