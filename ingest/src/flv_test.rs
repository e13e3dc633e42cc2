//! Unit tests of `flv` (kept beside it; compiled only for tests).

use super::*;

#[test]
fn tag_layout() {
    let t = tag(TagType::Video, 0x0102_0304, &[0xAA, 0xBB]).unwrap();
    assert_eq!(
        &t[..],
        &[9, 0, 0, 2, 0x02, 0x03, 0x04, 0x01, 0, 0, 0, 0xAA, 0xBB, 0, 0, 0, 13]
    );
    assert!(tag(TagType::Audio, 0, &vec![0; MAX_TAG_BODY + 1]).is_none());
    assert_eq!(header().len(), 13);
}

#[test]
fn legacy_h264_passes_and_other_legacy_codecs_are_refused_by_name() {
    let avc = Bytes::from_static(&[0x17, 0x01, 0, 0, 0, 1, 2, 3]);
    assert_eq!(video(&avc), Media::Forward(avc.clone()));
    let vp6 = Bytes::from_static(&[0x14, 0, 0]);
    assert_eq!(
        video(&vp6),
        Media::Refuse("video codec On2 VP6 is not supported; set the encoder to H.264".into())
    );
    assert_eq!(video(&Bytes::new()), Media::Skip);
}

#[test]
fn enhanced_rtmp_h264_is_rewritten_as_legacy_avc() {
    let ex = |first: u8, rest: &[u8]| {
        let mut v = vec![first];
        v.extend_from_slice(b"avc1");
        v.extend_from_slice(rest);
        Bytes::from(v)
    };
    // Keyframe (1) SequenceStart (0): the configuration record.
    assert_eq!(
        video(&ex(0x80 | 0x10, &[1, 0x64, 0, 0x1f])),
        Media::Forward(Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]))
    );
    // Inter frame (2) CodedFrames (1) with a composition offset of 0x000021.
    assert_eq!(
        video(&ex(0x80 | 0x20 | 1, &[0, 0, 0x21, 9, 9])),
        Media::Forward(Bytes::from_static(&[0x27, 1, 0, 0, 0x21, 9, 9]))
    );
    // CodedFramesX (3): offset 0.
    assert_eq!(
        video(&ex(0x80 | 0x10 | 3, &[5, 5])),
        Media::Forward(Bytes::from_static(&[0x17, 1, 0, 0, 0, 5, 5]))
    );
    // SequenceEnd (2), metadata (4) skipped, multitrack (6) refused, a truncated header.
    assert_eq!(
        video(&ex(0x80 | 0x10 | 2, &[])),
        Media::Forward(Bytes::from_static(&[0x17, 2, 0, 0, 0]))
    );
    assert_eq!(video(&ex(0x80 | 0x50 | 4, &[2, 0, 1])), Media::Skip);
    assert!(matches!(video(&ex(0x80 | 6, &[])), Media::Refuse(r) if r.contains("multitrack")));
    assert!(matches!(
        video(&Bytes::from_static(&[0x80, b'a'])),
        Media::Refuse(_)
    ));
    // CodedFrames too short for its offset.
    assert!(matches!(
        video(&ex(0x80 | 0x10 | 1, &[0])),
        Media::Refuse(_)
    ));
}

#[test]
fn enhanced_rtmp_vp9_and_audio_are_refused_by_name() {
    let vp9 = Bytes::from_static(b"\x90vp09\x01\x02");
    assert_eq!(
        video(&vp9),
        Media::Refuse(
            "video codec VP9 (Enhanced RTMP vp09) is not supported yet; set the encoder to H.264, HEVC or AV1"
                .into()
        )
    );
    let opus = Bytes::from_static(b"\x90Opus\x00");
    assert_eq!(
        audio(&opus),
        Media::Refuse(
            "audio codec Opus over Enhanced RTMP is not supported yet; set the encoder to AAC"
                .into()
        )
    );
    let aac = Bytes::from_static(&[0xaf, 1, 2]);
    assert_eq!(audio(&aac), Media::Forward(aac.clone()));
}

#[test]
fn enhanced_rtmp_hevc_is_split_into_configuration_and_frames() {
    assert_eq!(
        video(&Bytes::from_static(b"\x90hvc1\x01\x02")),
        Media::Elementary(
            VideoCodec::Hevc,
            Elementary::Config(Bytes::from_static(&[1, 2]))
        )
    );
    // Keyframe, CodedFrames with a composition offset of -33 ms (SI24).
    assert_eq!(
        video(&Bytes::from_static(
            b"\x91hvc1\xff\xff\xdf\x00\x00\x00\x01\x26"
        )),
        Media::Elementary(
            VideoCodec::Hevc,
            Elementary::Frame {
                keyframe: true,
                cto_ms: -33,
                data: Bytes::from_static(&[0, 0, 0, 1, 0x26]),
            }
        )
    );
    // Inter frame, CodedFramesX.
    assert_eq!(
        video(&Bytes::from_static(b"\xa3hvc1\x07")),
        Media::Elementary(
            VideoCodec::Hevc,
            Elementary::Frame {
                keyframe: false,
                cto_ms: 0,
                data: Bytes::from_static(&[7]),
            }
        )
    );
    assert_eq!(video(&Bytes::from_static(b"\x92hvc1")), Media::Skip);
}

#[test]
fn enhanced_rtmp_av1_is_split_into_configuration_and_temporal_units() {
    // ffmpeg announces an empty configuration first: nothing to build yet.
    assert_eq!(video(&Bytes::from_static(b"\x90av01")), Media::Skip);
    assert_eq!(
        video(&Bytes::from_static(b"\x90av01\x81\x04\x0c\x00")),
        Media::Elementary(
            VideoCodec::Av1,
            Elementary::Config(Bytes::from_static(&[0x81, 0x04, 0x0c, 0x00]))
        )
    );
    // CodedFrames of AV1 have no composition offset: the OBUs start at once.
    assert_eq!(
        video(&Bytes::from_static(b"\x91av01\x12\x00\x32\x01\x07")),
        Media::Elementary(
            VideoCodec::Av1,
            Elementary::Frame {
                keyframe: true,
                cto_ms: 0,
                data: Bytes::from_static(&[0x12, 0x00, 0x32, 0x01, 0x07]),
            }
        )
    );
    assert_eq!(
        video(&Bytes::from_static(b"\xa1av01\x12")),
        Media::Elementary(
            VideoCodec::Av1,
            Elementary::Frame {
                keyframe: false,
                cto_ms: 0,
                data: Bytes::from_static(&[0x12]),
            }
        )
    );
    // Metadata (colour info, what ffmpeg sends after the configuration) is skipped.
    assert_eq!(video(&Bytes::from_static(b"\xd4av01\x02\x00")), Media::Skip);
}

#[test]
fn enhanced_rtmp_command_frames_never_reach_the_decoder() {
    // Frame type 5 (command), packet type 1 (coded frames) with a command byte (start seek):
    // for every FourCC, nothing for the decoder.
    for fourcc in [&b"avc1"[..], b"hvc1", b"av01"] {
        let mut body = vec![0x80 | 0x50 | 1];
        body.extend_from_slice(fourcc);
        body.push(0);
        assert_eq!(video(&Bytes::from(body)), Media::Skip, "{fourcc:?}");
    }
}

#[test]
fn composition_offsets_are_signed() {
    assert_eq!(si24(&[0, 0, 66]), 66);
    assert_eq!(si24(&[0xff, 0xff, 0xfe]), -2);
    assert_eq!(si24(&[0x80, 0, 0]), -0x80_0000);
    assert_eq!(si24(&[0, 0, 66, 0x41]), 66);
    assert_eq!(si24(&[1]), 0);
}
