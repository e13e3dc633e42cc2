//! Unit tests of `fmp4` (kept beside it; compiled only for tests).

use super::*;
use crate::RenditionKind;
use mp4_atom::Decode;

/// A real avcC (High profile, level 3.1, 1280x720) with one SPS and one PPS.
pub const AVCC: &[u8] = &[
    0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1c, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x80, 0x50,
    0x05, 0xbb, 0x01, 0x6a, 0x02, 0x02, 0x02, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x1e,
    0x07, 0x8c, 0x18, 0xcd, 0x01, 0x00, 0x05, 0x68, 0xe9, 0x7b, 0x2c, 0x8b,
];

pub fn h264_info() -> CodecInfo {
    CodecInfo::new(
        "720p",
        RenditionKind::Video,
        CodecConfig::H264 {
            avcc: Bytes::from_static(AVCC),
            width: 1280,
            height: 720,
            framerate: Some((30, 1)),
        },
    )
    .unwrap()
}

pub fn aac_info() -> CodecInfo {
    CodecInfo::new(
        "audio",
        RenditionKind::Audio,
        CodecConfig::Aac {
            asc: Bytes::from_static(&[0x11, 0x90]),
            sample_rate: 48_000,
            channels: 2,
        },
    )
    .unwrap()
}

#[test]
fn video_init_parses_back() {
    let init = init_segment(&h264_info(), 3_000_000).unwrap();
    let buf = &mut init.as_ref();
    let ftyp = Ftyp::decode(buf).unwrap();
    assert_eq!(ftyp.major_brand, b"iso6".into());
    assert!(ftyp.compatible_brands.contains(&b"cmfc".into()));
    let moov = Moov::decode(buf).unwrap();
    assert!(buf.is_empty());
    assert_eq!(moov.mvhd.timescale, 90_000);
    let trak = &moov.trak[0];
    assert_eq!(trak.tkhd.track_id, TRACK_ID);
    assert_eq!(trak.tkhd.width.integer(), 1280);
    assert_eq!(trak.tkhd.height.integer(), 720);
    assert_eq!(trak.mdia.mdhd.timescale, 90_000);
    assert_eq!(trak.mdia.hdlr.handler, b"vide".into());
    assert!(trak.mdia.minf.vmhd.is_some());
    match &trak.mdia.minf.stbl.stsd.codecs[0] {
        Codec::Avc1(avc1) => {
            assert_eq!(avc1.visual.width, 1280);
            assert_eq!(avc1.avcc.avc_profile_indication, 0x64);
            assert_eq!(avc1.avcc.avc_level_indication, 0x1f);
            assert_eq!(avc1.avcc.sequence_parameter_sets.len(), 1);
            assert_eq!(
                avc1.avcc.picture_parameter_sets[0],
                vec![0x68, 0xe9, 0x7b, 0x2c, 0x8b]
            );
        }
        other => panic!("unexpected sample entry {other:?}"),
    }
    let mvex = moov.mvex.unwrap();
    assert_eq!(mvex.trex[0].track_id, TRACK_ID);
}

#[test]
fn audio_init_parses_back() {
    let init = init_segment(&aac_info(), 128_000).unwrap();
    let buf = &mut init.as_ref();
    Ftyp::decode(buf).unwrap();
    let moov = Moov::decode(buf).unwrap();
    let trak = &moov.trak[0];
    assert_eq!(trak.mdia.mdhd.timescale, 48_000);
    assert_eq!(trak.mdia.hdlr.handler, b"soun".into());
    assert!(trak.mdia.minf.smhd.is_some());
    match &trak.mdia.minf.stbl.stsd.codecs[0] {
        Codec::Mp4a(mp4a) => {
            assert_eq!(mp4a.audio.channel_count, 2);
            assert_eq!(mp4a.audio.sample_rate.integer(), 48_000);
            let dc = &mp4a.esds.es_desc.dec_config;
            assert_eq!(dc.object_type_indication, 0x40);
            let ds = dc.dec_specific.as_ref().unwrap();
            assert_eq!(ds.raw, vec![0x11, 0x90]);
            assert_eq!((ds.profile, ds.freq_index, ds.chan_conf), (2, 3, 2));
        }
        other => panic!("unexpected sample entry {other:?}"),
    }
}

#[test]
fn invalid_avcc_is_an_error() {
    let mut info = h264_info();
    info.config = CodecConfig::H264 {
        avcc: Bytes::from_static(&[2, 0x64, 0, 0x1f]),
        width: 1,
        height: 1,
        framerate: None,
    };
    assert!(init_segment(&info, 1).is_err());
}

#[test]
fn fragment_parses_back() {
    let samples = [
        FragSample {
            duration: 3000,
            size: 5,
            keyframe: true,
            cts: 6000,
        },
        FragSample {
            duration: 3000,
            size: 3,
            keyframe: false,
            cts: -3000,
        },
        FragSample {
            duration: 3000,
            size: 2,
            keyframe: false,
            cts: 0,
        },
    ];
    let payload = b"aaaaabbbcc".to_vec();
    // The samples as they arrive, one buffer each: the fragment holds them back to back.
    let chunks = [
        Bytes::from_static(b"aaaaa"),
        Bytes::from_static(b"bbb"),
        Bytes::from_static(b"cc"),
    ];
    let frag = fragment(7, 123_456_789_012, &samples, &chunks, true).unwrap();
    let buf = &mut frag.as_ref();
    let moof = Moof::decode(buf).unwrap();
    let mdat = Mdat::decode(buf).unwrap();
    assert!(buf.is_empty());
    assert_eq!(mdat.data, payload);
    assert_eq!(moof.mfhd.sequence_number, 7);
    let traf = &moof.traf[0];
    assert_eq!(traf.tfhd.track_id, TRACK_ID);
    assert!(traf.tfhd.default_base_is_moof);
    assert_eq!(
        traf.tfdt.as_ref().unwrap().base_media_decode_time,
        123_456_789_012
    );
    let trun = &traf.trun[0];
    let entries: Vec<_> = trun.samples.iter().collect();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0].flags, Some(SYNC_SAMPLE_FLAGS));
    assert_eq!(entries[1].flags, Some(NON_SYNC_SAMPLE_FLAGS));
    assert_eq!(entries[1].cts, Some(-3000));
    assert_eq!(entries.iter().map(|e| e.size.unwrap()).sum::<u32>(), 10);
    // The data offset points at the first mdat payload byte.
    let offset = trun.data_offset.unwrap() as usize;
    assert_eq!(&frag[offset..offset + 5], b"aaaaa");
}

#[test]
fn audio_fragment_uses_default_sync_flags() {
    let samples = [FragSample {
        duration: 1024,
        size: 4,
        keyframe: true,
        cts: 0,
    }; 2];
    let frag = fragment(1, 0, &samples, &[Bytes::from(vec![0; 8])], false).unwrap();
    let moof = Moof::decode(&mut frag.as_ref()).unwrap();
    let traf = &moof.traf[0];
    assert_eq!(traf.tfhd.default_sample_flags, Some(SYNC_SAMPLE_FLAGS));
    let entries: Vec<_> = traf.trun[0].samples.iter().collect();
    assert!(entries.iter().all(|e| e.flags.is_none() && e.cts.is_none()));
    assert!(entries.iter().all(|e| e.duration == Some(1024)));
}
