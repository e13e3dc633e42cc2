use super::*;

use gstreamer_app as gst_app;

use crate::test_pipeline::launch_to_appsink;

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
    let (pipeline, sink) = launch_to_appsink(&desc);
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

/// One 128x8 I420 picture whose U plane is the ramp 0, 4, 8, ... across (V flat), with the
/// caps' `chroma-site` set to `site` (and no colorimetry, as `avdec_h264` gives when the
/// stream signals none), through `edgescale` to 64x4: the output's U row.
fn scaled_chroma_ramp(site: &str) -> Vec<u8> {
    gst::init().expect("gstreamer");
    register().expect("register edgescale");
    let (w, h) = (128usize, 8usize);
    let (cw, ch) = (w / 2, h / 2);
    let mut frame = vec![128u8; w * h + 2 * cw * ch];
    for y in 0..ch {
        for x in 0..cw {
            frame[w * h + y * cw + x] = (4 * x) as u8;
        }
    }
    let desc = format!(
        "appsrc name=in caps=video/x-raw,format=I420,width={w},height={h},framerate=30/1,chroma-site={site} ! \
         edgescale ! video/x-raw,width=64,height=4 ! appsink name=out sync=false"
    );
    let (pipeline, sink) = launch_to_appsink(&desc);
    let src = pipeline
        .by_name("in")
        .expect("appsrc")
        .downcast::<gst_app::AppSrc>()
        .expect("appsrc");
    pipeline.set_state(gst::State::Playing).expect("play");
    src.push_buffer(gst::Buffer::from_slice(frame))
        .expect("push");
    src.end_of_stream().expect("eos");
    let sample = sink.pull_sample().expect("a picture");
    let map = sample
        .buffer()
        .expect("buffer")
        .map_readable()
        .expect("map");
    // Y is 64x4, U 32x2: U's first row.
    let u = map.as_slice()[64 * 4..64 * 4 + 32].to_vec();
    let _ = pipeline.set_state(gst::State::Null);
    u
}

#[test]
fn chroma_sited_with_its_first_luma_sample_stays_there() {
    // Halved, a chroma sample centred in its cell comes from source chroma 2x + 0.5 (ramp
    // value 8x + 2); one sited with its first luma sample (H.264's default, `mpeg2`) from
    // 2x + 0.25 (8x + 1): scaled as if centred, it moved half a luma pixel.
    for (site, offset) in [("mpeg2", 1), ("jpeg", 2)] {
        let u = scaled_chroma_ramp(site);
        for (x, &got) in u.iter().enumerate().take(28).skip(1) {
            assert_eq!(i32::from(got), 8 * x as i32 + offset, "{site}: U {x}");
        }
    }
}
