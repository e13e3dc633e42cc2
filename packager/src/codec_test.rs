//! Unit tests of `codec` (kept beside it; compiled only for tests).

use super::*;
use bytes::Bytes;

#[test]
fn codec_strings() {
    assert_eq!(
        avc_codec_string(&[1, 0x64, 0x00, 0x1f, 0xff]).as_deref(),
        Some("avc1.64001f")
    );
    assert_eq!(avc_codec_string(&[1, 0x64]), None);
    // AAC-LC 48 kHz stereo: 0x11 0x90.
    assert_eq!(aac_object_type(&[0x11, 0x90]), Some(2));
    // HE-AAC (SBR, AOT 5): 0x2B 0x11 ...
    assert_eq!(aac_object_type(&[0x2b, 0x11, 0x88]), Some(5));
    // Escape: 31 then 6 bits (000010 → 34).
    assert_eq!(aac_object_type(&[0xf8, 0x40]), Some(34));
    assert_eq!(aac_object_type(&[0x11]), None);
}

#[test]
fn validation_by_kind() {
    let h264 = CodecConfig::H264 {
        avcc: Bytes::from_static(&[1, 0x42, 0xc0, 0x1e, 0xff, 0xe0, 0x00]),
        width: 640,
        height: 360,
        framerate: Some((30000, 1001)),
    };
    let info = CodecInfo::new("360p", RenditionKind::Video, h264.clone()).unwrap();
    assert_eq!(info.codec_string, "avc1.42c01e");
    assert_eq!(info.timescale, 90_000);
    assert!((info.frame_rate().unwrap() - 29.97).abs() < 0.001);
    assert!(CodecInfo::new("audio", RenditionKind::Audio, h264).is_err());
    let aac = CodecConfig::Aac {
        asc: Bytes::from_static(&[0x11, 0x90]),
        sample_rate: 48_000,
        channels: 2,
    };
    let info = CodecInfo::new("audio", RenditionKind::Audio, aac).unwrap();
    assert_eq!(info.codec_string, "mp4a.40.2");
    assert_eq!(info.timescale, 48_000);
}

#[test]
fn tick_conversions() {
    assert_eq!(ns_to_ticks(1_000_000_000, 90_000), 90_000);
    assert_eq!(ns_to_ticks(33_366_667, 90_000), 3003);
    assert_eq!(
        duration_to_ticks_floor(Duration::from_millis(333), 90_000),
        29_970
    );
    assert_eq!(
        duration_to_ticks_floor(Duration::from_millis(333), 48_000),
        15_984
    );
}

#[test]
fn hevc_codec_strings_follow_annex_e() {
    // x265 Main, level 4 (120): compatibility flags 0x60000000 reversed are 6; one constraint
    // byte (progressive, frame-only).
    let mut hvcc = vec![1, 0x01, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 120];
    assert_eq!(
        hevc_codec_string(&hvcc).as_deref(),
        Some("hvc1.1.6.L120.90")
    );
    // Main 10, high tier, level 5.1 (153), two constraint bytes.
    hvcc[1] = 0x22;
    hvcc[2] = 0x20;
    hvcc[7] = 0x08;
    hvcc[12] = 153;
    assert_eq!(
        hevc_codec_string(&hvcc).as_deref(),
        Some("hvc1.2.4.H153.90.08")
    );
    // Profile space 1 is written A; no constraint bytes at all.
    let hvcc = [1, 0x41, 0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 93];
    assert_eq!(hevc_codec_string(&hvcc).as_deref(), Some("hvc1.A1.6.L93"));
    assert_eq!(hevc_codec_string(&[1, 2, 3]), None);
}

#[test]
fn av1_codec_strings_follow_the_isobmff_binding() {
    // libaom realtime at 854x480: Main profile, level 3.0 (index 4), main tier, 8 bits.
    assert_eq!(
        av1_codec_string(&[0x81, 0x04, 0x0c, 0x00]).as_deref(),
        Some("av01.0.04M.08")
    );
    // High profile (1), level 5.1 (index 13), high tier, 10 bits.
    assert_eq!(
        av1_codec_string(&[0x81, 0x2d, 0xc0, 0x00]).as_deref(),
        Some("av01.1.13H.10")
    );
    // Professional profile (2), 12 bits.
    assert_eq!(
        av1_codec_string(&[0x81, 0x48, 0x60, 0x00]).as_deref(),
        Some("av01.2.08M.12")
    );
    // Not an av1C (marker/version byte), too short.
    assert_eq!(av1_codec_string(&[0x01, 0x04, 0x0c, 0x00]), None);
    assert_eq!(av1_codec_string(&[0x81, 0x04]), None);
}

#[test]
fn av1_samples_lose_their_temporal_delimiters_and_nothing_else() {
    // TD (type 2, size 0), a sequence header (type 1, 2 bytes), a frame (type 6, 3 bytes).
    let tu = Bytes::from_static(&[0x12, 0x00, 0x0a, 0x02, 0xaa, 0xbb, 0x32, 0x03, 1, 2, 3]);
    assert_eq!(
        av1_sample(tu),
        Bytes::from_static(&[0x0a, 0x02, 0xaa, 0xbb, 0x32, 0x03, 1, 2, 3])
    );
    // An OBU with an extension byte and a two-byte leb128 size (130), after a TD.
    let mut tu = vec![0x12, 0x00, 0x36, 0x00, 0x82, 0x01];
    tu.extend(std::iter::repeat_n(7u8, 130));
    let out = av1_sample(Bytes::from(tu.clone()));
    assert_eq!(&out[..], &tu[2..]);
    // The last OBU without a size field runs to the end.
    let tu = Bytes::from_static(&[0x12, 0x00, 0x30, 9, 9]);
    assert_eq!(av1_sample(tu), Bytes::from_static(&[0x30, 9, 9]));
    // Nothing to remove, or not OBUs (a size past the end, the forbidden bit): unchanged.
    for raw in [
        &[0x32, 0x01, 5][..],
        &[0x12, 0x00, 0x32, 0x09, 1][..],
        &[0x92, 0x00][..],
        &[
            0x12, 0x00, 0x32, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ][..],
    ] {
        assert_eq!(av1_sample(Bytes::copy_from_slice(raw)), raw);
    }
}
