//! FLV framing of RTMP media messages, so the GStreamer pipeline can demux RTMP input with
//! `flvdemux`. RTMP audio/video message bodies are FLV tag bodies; we add the tag headers.

use bytes::{BufMut, Bytes, BytesMut};

/// FLV tag types (FLV spec, E.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagType {
    Audio = 8,
    Video = 9,
}

/// The FLV file header announcing audio and video, followed by PreviousTagSize0.
pub fn header() -> Bytes {
    Bytes::from_static(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00")
}

/// Largest body an FLV tag can carry (24-bit DataSize).
pub const MAX_TAG_BODY: usize = 0x00FF_FFFF;

/// One FLV tag with its trailing PreviousTagSize. `None` if the body is too large for FLV.
pub fn tag(kind: TagType, timestamp_ms: u32, body: &[u8]) -> Option<Bytes> {
    if body.len() > MAX_TAG_BODY {
        return None;
    }
    let mut out = BytesMut::with_capacity(11 + body.len() + 4);
    out.put_u8(kind as u8);
    let size = body.len() as u32;
    out.put_slice(&size.to_be_bytes()[1..]);
    out.put_slice(&timestamp_ms.to_be_bytes()[1..]);
    out.put_u8((timestamp_ms >> 24) as u8);
    out.put_slice(&[0, 0, 0]); // StreamID, always 0
    out.put_slice(body);
    out.put_u32(11 + size);
    Some(out.freeze())
}

/// What to do with one RTMP video or audio message before `flvdemux` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Media {
    /// Forward this body (the message's own, or a legacy translation of an Enhanced RTMP one).
    Forward(Bytes),
    /// Nothing for the decoder (Enhanced RTMP metadata): skip it.
    Skip,
    /// A codec we cannot take: end the publish with this reason for the broadcaster.
    Refuse(String),
    /// HEVC or AV1 over Enhanced RTMP, which `flvdemux` cannot read: the pipeline takes it as
    /// an elementary stream ([`crate::pipeline::Pipeline::push_elementary`]).
    Elementary(VideoCodec, Elementary),
}

/// A video codec that reaches the pipeline as an elementary stream (Enhanced RTMP only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// `hvc1`: length-prefixed NAL units, configuration in an hvcC.
    Hevc,
    /// `av01`: OBUs in the low-overhead bitstream format (each with its size), one temporal
    /// unit per message, configuration in an av1C.
    Av1,
}

/// One Enhanced RTMP message of an elementary video codec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elementary {
    /// SequenceStart: the decoder configuration record (hvcC, av1C).
    Config(Bytes),
    /// CodedFrames / CodedFramesX: one access unit (HEVC) or temporal unit (AV1), presented
    /// `cto_ms` after it is decoded (always 0 for AV1, which has no reordering offset).
    Frame {
        keyframe: bool,
        cto_ms: i32,
        data: Bytes,
    },
}

/// Legacy FLV video codec ID of H.264 (AVC).
pub(crate) const CODEC_AVC: u8 = 7;
/// Enhanced RTMP video frame type of a command frame ("video info/command frame" in FLV).
const FRAME_TYPE_COMMAND: u8 = 5;
/// Set in an Enhanced RTMP video tag's first byte: a FourCC header follows.
const EX_HEADER: u8 = 0x80;
/// Legacy FLV sound format that means an Enhanced RTMP audio header follows.
const SOUND_EX_HEADER: u8 = 9;

/// The common name of a legacy FLV video codec ID.
fn legacy_video_name(id: u8) -> String {
    match id {
        2 => "Sorenson H.263".into(),
        3 => "Screen video".into(),
        4 => "On2 VP6".into(),
        5 => "On2 VP6 with alpha".into(),
        6 => "Screen video 2".into(),
        12 => "HEVC (legacy codec ID 12)".into(),
        other => format!("codec ID {other}"),
    }
}

/// The common name of an Enhanced RTMP FourCC.
fn fourcc_name(f: &[u8]) -> String {
    match f {
        b"hvc1" => "HEVC".into(),
        b"av01" => "AV1".into(),
        b"vp09" => "VP9".into(),
        b"vp08" => "VP8".into(),
        b"Opus" => "Opus".into(),
        b"fLaC" => "FLAC".into(),
        b"ac-3" => "AC-3".into(),
        b"ec-3" => "E-AC-3".into(),
        b".mp3" => "MP3".into(),
        b"mp4a" => "AAC".into(),
        other => format!("FourCC {:?}", String::from_utf8_lossy(other)),
    }
}

/// A video message body: legacy H.264 as it is; Enhanced RTMP (E-RTMP v1/v2) H.264 (`avc1`)
/// rewritten as the legacy tag `flvdemux` reads (sequence start → AVC sequence header, coded
/// frames with or without a composition offset → AVC NALUs, sequence end → end of sequence,
/// metadata skipped); E-RTMP HEVC (`hvc1`) and AV1 (`av01`) split into their configuration
/// and frames for the pipeline; any other codec refused with its name.
pub fn video(body: &Bytes) -> Media {
    let Some(&first) = body.first() else {
        return Media::Skip;
    };
    if first & EX_HEADER == 0 {
        let codec = first & 0x0f;
        return if codec == CODEC_AVC {
            Media::Forward(body.clone())
        } else {
            Media::Refuse(format!(
                "video codec {} is not supported; set the encoder to H.264",
                legacy_video_name(codec)
            ))
        };
    }
    let frame_type = (first >> 4) & 0x07;
    let packet_type = first & 0x0f;
    // A command frame (seek start/end) carries one command byte, no picture; its metadata
    // variant (HDR colour info) nothing the decoder needs either.
    if frame_type == FRAME_TYPE_COMMAND {
        return Media::Skip;
    }
    let Some(fourcc) = body.get(1..5) else {
        return Media::Refuse("an Enhanced RTMP video tag too short for its FourCC".into());
    };
    let elementary = match fourcc {
        b"hvc1" => Some(VideoCodec::Hevc),
        b"av01" => Some(VideoCodec::Av1),
        _ => None,
    };
    if let Some(codec) = elementary {
        return elementary_video(codec, frame_type, packet_type, body.slice(5..));
    }
    if fourcc != b"avc1" {
        let name = fourcc_name(fourcc);
        return Media::Refuse(format!(
            "video codec {name} (Enhanced RTMP {}) is not supported yet; set the encoder to H.264, HEVC or AV1",
            String::from_utf8_lossy(fourcc)
        ));
    }
    let rest = body.slice(5..);
    let legacy = |avc_packet: u8, cto: &[u8], data: &[u8]| {
        let mut out = BytesMut::with_capacity(5 + data.len());
        out.put_u8((frame_type << 4) | CODEC_AVC);
        out.put_u8(avc_packet);
        out.put_slice(cto);
        out.put_slice(data);
        Media::Forward(out.freeze())
    };
    match packet_type {
        // SequenceStart: the AVCDecoderConfigurationRecord.
        0 => legacy(0, &[0, 0, 0], &rest),
        // CodedFrames: SI24 composition time offset, then NAL units.
        1 if rest.len() >= 3 => legacy(1, &rest[..3], &rest[3..]),
        // SequenceEnd.
        2 => legacy(2, &[0, 0, 0], &[]),
        // CodedFramesX: NAL units, composition time offset 0.
        3 => legacy(1, &[0, 0, 0], &rest),
        // Metadata (HDR colour info), MPEG-2 TS sequence start: nothing for the decoder.
        4 | 5 => Media::Skip,
        // Multitrack (E-RTMP v2): one track is all we take; say so instead of guessing.
        6 => Media::Refuse(
            "Enhanced RTMP multitrack video is not supported; send one video track".into(),
        ),
        _ => Media::Refuse(format!(
            "Enhanced RTMP video packet type {packet_type} is not supported"
        )),
    }
}

/// An Enhanced RTMP HEVC or AV1 message (after its FourCC): its configuration or a frame.
/// Only HEVC's CodedFrames carry a composition time offset (E-RTMP: AVC and HEVC only).
fn elementary_video(codec: VideoCodec, frame_type: u8, packet_type: u8, rest: Bytes) -> Media {
    let frame = |cto_ms: i32, data: Bytes| {
        Media::Elementary(
            codec,
            Elementary::Frame {
                keyframe: frame_type == 1,
                cto_ms,
                data,
            },
        )
    };
    match packet_type {
        // ffmpeg announces an empty configuration before its encoder has made one.
        0 if rest.is_empty() => Media::Skip,
        0 => Media::Elementary(codec, Elementary::Config(rest)),
        1 if codec == VideoCodec::Av1 => frame(0, rest),
        1 if rest.len() >= 3 => frame(si24(&rest), rest.slice(3..)),
        3 => frame(0, rest),
        // SequenceEnd, Metadata (HDR colour info), MPEG-2 TS sequence start (a descriptor
        // that repeats the configuration): nothing for the decoder.
        2 | 4 | 5 => Media::Skip,
        6 => Media::Refuse(
            "Enhanced RTMP multitrack video is not supported; send one video track".into(),
        ),
        _ => Media::Refuse(format!(
            "Enhanced RTMP video packet type {packet_type} is not supported"
        )),
    }
}

/// A signed 24-bit big-endian number at the start of `b` (an FLV or Enhanced RTMP composition
/// time offset, ms); 0 if `b` is shorter.
pub(crate) fn si24(b: &[u8]) -> i32 {
    match *b {
        [a, b, c, ..] => {
            let raw = i32::from_be_bytes([0, a, b, c]);
            if raw & 0x80_0000 != 0 {
                raw - 0x100_0000
            } else {
                raw
            }
        }
        _ => 0,
    }
}

/// An audio message body: legacy FLV audio as it is (AAC passes through, other formats are
/// converted); Enhanced RTMP audio (sound format 9, a FourCC) refused with its name.
pub fn audio(body: &Bytes) -> Media {
    match body.first() {
        None => Media::Skip,
        Some(b) if b >> 4 == SOUND_EX_HEADER => {
            let name = body
                .get(1..5)
                .map(fourcc_name)
                .unwrap_or_else(|| "unknown".into());
            Media::Refuse(format!(
                "audio codec {name} over Enhanced RTMP is not supported yet; set the encoder to AAC"
            ))
        }
        Some(_) => Media::Forward(body.clone()),
    }
}

#[cfg(test)]
#[path = "flv_test.rs"]
mod tests;
