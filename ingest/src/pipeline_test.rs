//! Unit tests of `pipeline` (kept beside it; compiled only for tests): the caps our parsers put
//! out become the codec configuration the packager serves, and its CODECS string is the one
//! GStreamer's codec utilities (`gst_codec_utils_caps_get_mime_codec`) derive from the same caps.

use super::*;
use gstreamer_pbutils as pbutils;

/// The caps of the first buffer `launch` (a gst-launch description ending in `appsink
/// name=out`) puts out.
fn caps_of(launch: &str) -> gst::Caps {
    gst::init().expect("gstreamer");
    let (pipeline, sink) = crate::test_pipeline::launch_to_appsink(launch);
    pipeline.set_state(gst::State::Playing).expect("playing");
    let sample = sink
        .try_pull_sample(gst::ClockTime::from_seconds(60))
        .expect("a sample");
    let caps = sample.caps().expect("caps").to_owned();
    pipeline.set_state(gst::State::Null).expect("stopped");
    caps
}

fn gstreamer_codec_string(caps: &gst::Caps) -> String {
    pbutils::functions::codec_utils_caps_get_mime_codec(caps)
        .expect("GStreamer derives a codec string")
        .to_string()
}

#[test]
fn hevc_codecs_string_is_gstreamers() {
    // x265 as h265parse hands it to the tee (`hvc1`, one access unit per buffer).
    let caps = caps_of(
        "videotestsrc num-buffers=5 ! video/x-raw,format=I420,width=854,height=480,framerate=30/1 \
         ! x265enc speed-preset=ultrafast ! h265parse \
         ! video/x-h265,stream-format=hvc1,alignment=au ! appsink name=out",
    );
    let config = codec_from_caps(&caps).expect("an H.265 configuration");
    assert!(matches!(config, CodecConfig::H265 { .. }), "{config:?}");
    let ours = packager::codec_string(&config).expect("a codec string");
    assert_eq!(ours, gstreamer_codec_string(&caps), "{caps}");
    assert!(ours.starts_with("hvc1.1.6.L"), "{ours}");
}

#[test]
fn h264_codecs_string_is_gstreamers() {
    let caps = caps_of(
        "videotestsrc num-buffers=5 ! video/x-raw,format=I420,width=640,height=360,framerate=30/1 \
         ! x264enc ! h264parse ! video/x-h264,stream-format=avc,alignment=au \
         ! appsink name=out",
    );
    let config = codec_from_caps(&caps).expect("an H.264 configuration");
    let ours = packager::codec_string(&config).expect("a codec string");
    // The same three bytes; GStreamer writes them in upper case, we (like Apple's examples
    // and ffmpeg) in lower case, and RFC 6381 hex is read either way.
    assert_eq!(
        ours.to_lowercase(),
        gstreamer_codec_string(&caps).to_lowercase()
    );
    assert_eq!(ours, "avc1.64001e", "{caps}");
}

#[test]
fn av1_codecs_string_is_gstreamers() {
    // The av1C ffmpeg 7 sent over Enhanced RTMP for libaom at 854x480 in real-time mode (Main,
    // level 3.0, main tier, 8 bits, 4:2:0), then its sequence header OBU; av1parse hands the
    // frames on with it in the caps the capsfilter adds (`parsed_caps`).
    let av1c = Bytes::from_static(&[
        0x81, 0x04, 0x0c, 0x00, 0x0a, 0x0b, 0x00, 0x00, 0x00, 0x24, 0xc6, 0xab, 0xdf, 0x36, 0xa6,
        0x40, 0x10,
    ]);
    gst::init().expect("gstreamer");
    let mut caps = parsed_caps(VideoCodec::Av1, Some(&av1c));
    if let Some(c) = caps.get_mut() {
        c.set("width", 854i32);
        c.set("height", 480i32);
        c.set("framerate", gst::Fraction::new(30, 1));
    }
    let config = codec_from_caps(&caps).expect("an AV1 configuration");
    let ours = packager::codec_string(&config).expect("a codec string");
    assert_eq!(ours, "av01.0.04M.08");
    let theirs = gstreamer_codec_string(&caps);
    eprintln!("AV1: GStreamer {theirs}, ours {ours}");
    // GStreamer 1.22 writes only the sample entry for AV1 (profile, level, tier and depth came
    // later); where it writes more, it must agree with ours.
    assert!(
        theirs == "av01" || theirs == ours,
        "GStreamer: {theirs}, ours: {ours}"
    );
}

#[test]
fn samples_are_timed_in_running_time() {
    gst::init().expect("gstreamer");
    // What x264enc puts out: timestamps 1,000 hours ahead, and a segment that starts there.
    let offset = gst::ClockTime::from_seconds(3_600_000);
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_start(offset);
    segment.set_time(gst::ClockTime::ZERO);
    let segment = segment.upcast();
    let at = |s: u64| offset + gst::ClockTime::from_seconds(s);
    assert_eq!(
        running_time(Some(&segment), at(5)),
        gst::ClockTime::from_seconds(5)
    );
    // Before the segment's start (a DTS can be): 0, never the raw 1,000 hours.
    assert_eq!(
        running_time(Some(&segment), offset - gst::ClockTime::from_mseconds(33)),
        gst::ClockTime::ZERO
    );
    // No segment: the timestamp as it is.
    assert_eq!(running_time(None, at(5)), at(5));
}

/// Our scaler for 8-bit progressive video in the formats it takes; GStreamer's `videoscale`
/// for 10-bit or interlaced video, for caps that do not say, and when `own_scaler` is off.
#[test]
fn the_ladder_scales_8_bit_progressive_video_itself_and_the_rest_with_videoscale() {
    gst::init().expect("gstreamer");
    let caps = |chroma: Option<&str>, depth: Option<u32>, interlace: Option<&str>| {
        let mut s = gst::Structure::new_empty("video/x-h264");
        if let Some(c) = chroma {
            s.set("chroma-format", c);
        }
        if let Some(d) = depth {
            s.set("bit-depth-luma", d);
            s.set("bit-depth-chroma", d);
        }
        if let Some(i) = interlace {
            s.set("interlace-mode", i);
        }
        s
    };
    for chroma in ["4:2:0", "4:2:2", "4:4:4", "4:0:0"] {
        let s = caps(Some(chroma), Some(8), None);
        assert_eq!(scaler_for(&s, true), "edgescale", "{chroma}");
        assert_eq!(
            scaler_for(&s, false),
            "videoscale",
            "{chroma}, own_scaler off"
        );
    }
    for (s, why) in [
        (caps(Some("4:2:0"), Some(10), None), "10-bit"),
        (
            caps(Some("4:2:0"), Some(8), Some("interleaved")),
            "interlaced",
        ),
        (caps(Some("4:2:0"), None, None), "no bit depth"),
        (caps(None, Some(8), None), "no chroma format"),
    ] {
        assert_eq!(scaler_for(&s, true), "videoscale", "{why}");
    }
    assert_eq!(
        scaler_for(&caps(Some("4:2:0"), Some(8), Some("progressive")), true),
        "edgescale"
    );
}
