//! What a publisher's RTMP media becomes on a node. Its audio/video message bodies are framed
//! as FLV tags (`ingest::flv::tag`, what `ingest::rtmp` feeds GStreamer's flvdemux): the FLV
//! stream must read back as exactly the tags that went in (type, 32-bit timestamp, body).
//! The passthrough rendition then hands the publisher's codec configuration (avcC, hvcC or
//! av1C / AudioSpecificConfig, as GStreamer's caps carry them) and access units to the packager
//! (`StreamHandle::configure` and `push`, which build the init segment and fragments): they
//! may be refused, never panic. The codec check before that (`ingest::flv::{video, audio}`:
//! legacy H.264 and audio pass unchanged, Enhanced RTMP H.264 is rewritten as legacy H.264,
//! HEVC and AV1 split into configuration and frames, other codecs refused) never panics
//! either.
#![no_main]
use bytes::Bytes;
use ingest::flv::{audio, header, tag, video, Media, TagType};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use packager::{CodecConfig, Origin, PackagerConfig, RenditionKind, RenditionPlan, Sample};

/// Reads an FLV stream back: (type, timestamp, body) per tag.
fn read_flv(mut b: &[u8]) -> Vec<(u8, u32, &[u8])> {
    let (head, rest) = b.split_at(13);
    assert_eq!(head, &header()[..]);
    b = rest;
    let mut tags = Vec::new();
    while !b.is_empty() {
        assert!(b.len() >= 15, "truncated tag");
        let size = u32::from_be_bytes([0, b[1], b[2], b[3]]) as usize;
        let ts = u32::from_be_bytes([b[7], b[4], b[5], b[6]]);
        assert_eq!(&b[8..11], &[0, 0, 0]);
        let body = &b[11..11 + size];
        let prev = u32::from_be_bytes([b[11 + size], b[12 + size], b[13 + size], b[14 + size]]);
        assert_eq!(prev as usize, 11 + size);
        tags.push((b[0], ts, body));
        b = &b[15 + size..];
    }
    tags
}

fn media(u: &mut Unstructured<'_>) {
    let mut tags = Vec::new();
    let mut stream = header().to_vec();
    // An exhausted `Unstructured` keeps giving defaults: stop at its end.
    while let (false, Ok(video), Ok(ts), Ok(len)) = (
        u.is_empty(),
        u.arbitrary::<bool>(),
        u.arbitrary::<u32>(),
        u.int_in_range(0..=2048usize),
    ) {
        let Ok(body) = u.bytes(len) else {
            break;
        };
        let kind = if video {
            TagType::Video
        } else {
            TagType::Audio
        };
        // The publisher's codec check and Enhanced RTMP rewrite (`ingest::rtmp::push_tag`):
        // legacy H.264 and audio pass unchanged, a rewrite is always legacy H.264.
        let owned = Bytes::copy_from_slice(body);
        let enhanced_video = video && owned.first().is_some_and(|b| b & 0x80 != 0);
        match if video { self::video(&owned) } else { audio(&owned) } {
            Media::Forward(out) if enhanced_video => {
                assert_eq!(out.first().map(|b| b & 0x0f), Some(7))
            }
            Media::Forward(out) => assert_eq!(out, owned),
            Media::Skip | Media::Refuse(_) | Media::Elementary(..) => {}
        }
        let t = tag(kind, ts, body).expect("bodies under 16 MiB fit a tag");
        stream.extend_from_slice(&t);
        tags.push((kind as u8, ts, body));
    }
    assert_eq!(read_flv(&stream), tags);
}

fn codec(u: &mut Unstructured<'_>) -> Option<()> {
    let origin = Origin::new(PackagerConfig::default());
    let video = RenditionPlan {
        name: "source".into(),
        kind: RenditionKind::Video,
        bandwidth: u.arbitrary().ok()?,
    };
    let audio = RenditionPlan {
        name: "audio".into(),
        kind: RenditionKind::Audio,
        bandwidth: u.arbitrary().ok()?,
    };
    let handle = origin.publish("p", vec![video, audio]);
    let len = u.int_in_range(0..=256usize).ok()?;
    let record = Bytes::copy_from_slice(u.bytes(len).ok()?);
    let (width, height, framerate) = (
        u.arbitrary().ok()?,
        u.arbitrary().ok()?,
        u.arbitrary().ok()?,
    );
    // The three video codecs a publisher's configuration record can announce; AV1's samples
    // also go through the temporal delimiter removal (`packager::codec::av1_sample`).
    let v = match u.int_in_range(0..=2u8).ok()? {
        0 => CodecConfig::H264 {
            avcc: record,
            width,
            height,
            framerate,
        },
        1 => CodecConfig::H265 {
            hvcc: record,
            width,
            height,
            framerate,
        },
        _ => CodecConfig::Av1 {
            av1c: record,
            width,
            height,
            framerate,
        },
    };
    let len = u.int_in_range(0..=64usize).ok()?;
    let asc = Bytes::copy_from_slice(u.bytes(len).ok()?);
    let a = CodecConfig::Aac {
        asc,
        sample_rate: u.arbitrary().ok()?,
        channels: u.arbitrary().ok()?,
    };
    let video_ok = handle.configure("source", v).is_ok();
    let audio_ok = handle.configure("audio", a).is_ok();
    let mut pts = 0u64;
    while let (false, Ok(audio)) = (u.is_empty(), u.arbitrary::<bool>()) {
        let step = u64::from(u.arbitrary::<u32>().ok()?);
        let len = u.int_in_range(0..=512usize).ok()?;
        let data = Bytes::copy_from_slice(u.bytes(len).ok()?);
        pts = pts.saturating_add(step);
        let keyframe = audio || u.arbitrary::<bool>().ok()?;
        let sample = Sample {
            pts_ns: pts,
            dts_ns: pts,
            keyframe,
            data,
            arrival: None,
        };
        let (name, ok) = if audio {
            ("audio", audio_ok)
        } else {
            ("source", video_ok)
        };
        if ok {
            let _ = handle.push(name, sample);
        }
    }
    handle.end();
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    if which & 1 == 0 {
        media(&mut u);
    } else {
        let _ = codec(&mut u);
    }
});
