//! Codec parameter checks, RFC 6381 codec strings and timescale arithmetic.
//!
//! Entry points: [`CodecInfo::new`] validates a [`CodecConfig`] against the rendition kind and
//! derives the track timescale (90 kHz for video, the sample rate for audio) and the CODECS
//! string ("avc1.PPCCLL" from avcC bytes 1..4, "mp4a.40.N" from the AudioSpecificConfig's
//! object type); [`ns_to_ticks`], [`duration_to_ticks_floor`], [`ticks_to_secs`] convert times.
//!
//! H.265 gets "hvc1.…" from its hvcC (ISO/IEC 14496-15 Annex E, as GStreamer's codec
//! utilities write it), AV1 "av01.P.LLT.DD" from its av1C (AV1 ISOBMFF binding). Caveat: only
//! H.264, H.265, AV1 and AAC are supported; other codecs are rejected by type.

use std::time::Duration;

use bytes::Bytes;

use crate::{CodecConfig, PackagerError, RenditionKind};

/// Video timescale: 90 kHz, the MPEG convention; every common frame rate is exact in it.
pub(crate) const VIDEO_TIMESCALE: u32 = 90_000;

/// Nanoseconds per second.
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// What the packager derives from a [`CodecConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CodecInfo {
    /// The configuration as given.
    pub config: CodecConfig,
    /// RFC 6381 codec string for CODECS.
    pub codec_string: String,
    /// Track timescale (ticks per second).
    pub timescale: u32,
}

impl CodecInfo {
    /// Validate `config` for a rendition of `kind` named `rendition`.
    pub fn new(
        rendition: &str,
        kind: RenditionKind,
        config: CodecConfig,
    ) -> Result<Self, PackagerError> {
        let invalid = |reason: &str| PackagerError::InvalidCodecConfig {
            rendition: rendition.to_string(),
            reason: reason.to_string(),
        };
        match (&config, kind) {
            (
                CodecConfig::H264 { .. } | CodecConfig::H265 { .. } | CodecConfig::Av1 { .. },
                RenditionKind::Video,
            ) => {
                let codec_string = match &config {
                    CodecConfig::H264 { avcc, .. } => avc_codec_string(avcc)
                        .ok_or_else(|| invalid("avcC record shorter than 4 bytes"))?,
                    CodecConfig::H265 { hvcc, .. } => hevc_codec_string(hvcc)
                        .ok_or_else(|| invalid("hvcC record shorter than 13 bytes"))?,
                    CodecConfig::Av1 { av1c, .. } => av1_codec_string(av1c).ok_or_else(|| {
                        invalid("av1C record shorter than 4 bytes or not version 1")
                    })?,
                    CodecConfig::Aac { .. } => {
                        return Err(invalid("AAC configuration for a video rendition"))
                    }
                };
                if let Some(p) = config.picture() {
                    check_picture(p.width, p.height, p.framerate).map_err(invalid)?;
                }
                Ok(Self {
                    config,
                    codec_string,
                    timescale: VIDEO_TIMESCALE,
                })
            }
            (
                CodecConfig::Aac {
                    asc,
                    sample_rate,
                    channels,
                },
                RenditionKind::Audio,
            ) => {
                let aot = aac_object_type(asc)
                    .ok_or_else(|| invalid("AudioSpecificConfig shorter than 2 bytes"))?;
                if *sample_rate == 0 {
                    return Err(invalid("sample rate is 0"));
                }
                if *channels == 0 || *channels > 0xFFFF {
                    return Err(invalid("channel count must be within 1..=65535"));
                }
                let timescale = *sample_rate;
                Ok(Self {
                    config,
                    codec_string: format!("mp4a.40.{aot}"),
                    timescale,
                })
            }
            (_, RenditionKind::Audio) => Err(invalid("video configuration for an audio rendition")),
            (CodecConfig::Aac { .. }, RenditionKind::Video) => {
                Err(invalid("AAC configuration for a video rendition"))
            }
        }
    }

    /// Frame rate, for FRAME-RATE (video only).
    pub fn frame_rate(&self) -> Option<f64> {
        match self.config.picture().and_then(|p| p.framerate) {
            Some((num, den)) if den != 0 && num != 0 => Some(f64::from(num) / f64::from(den)),
            _ => None,
        }
    }

    /// Resolution, for RESOLUTION (video only).
    pub fn resolution(&self) -> Option<(u32, u32)> {
        self.config.picture().map(|p| (p.width, p.height))
    }

    /// Channel count, for CHANNELS (audio only).
    pub fn channels(&self) -> Option<u32> {
        match &self.config {
            CodecConfig::Aac { channels, .. } => Some(*channels),
            _ => None,
        }
    }
}

/// A video picture's size and frame rate fit the sample entry and a FRAME-RATE.
fn check_picture(
    width: u32,
    height: u32,
    framerate: Option<(u32, u32)>,
) -> Result<(), &'static str> {
    if width == 0 || height == 0 || width > 0xFFFF || height > 0xFFFF {
        return Err("width/height must be within 1..=65535");
    }
    if framerate.is_some_and(|(_, den)| den == 0) {
        return Err("frame rate denominator is 0");
    }
    Ok(())
}

/// "avc1.PPCCLL" from avcC bytes 1..4 (profile, constraint flags, level), lower-case hex.
pub(crate) fn avc_codec_string(avcc: &[u8]) -> Option<String> {
    match avcc.get(1..4) {
        Some([p, c, l]) => Some(format!("avc1.{p:02x}{c:02x}{l:02x}")),
        _ => None,
    }
}

/// "hvc1.P.C.TL.B…" from an hvcC (ISO/IEC 14496-15 Annex E): the profile space as a letter
/// (none, A, B, C) before the profile_idc in decimal; the 32 profile compatibility flags in
/// reverse bit order, in hex without leading zeros; the tier (L or H) and level_idc in
/// decimal; then the six constraint indicator bytes in two hex digits each, trailing zero
/// bytes left out (as GStreamer's `gst_codec_utils_caps_get_mime_codec` writes them).
pub(crate) fn hevc_codec_string(hvcc: &[u8]) -> Option<String> {
    let b = hvcc.get(..13)?;
    let space = ["", "A", "B", "C"][usize::from(b[1] >> 6)];
    let tier = if b[1] & 0x20 != 0 { 'H' } else { 'L' };
    let profile = b[1] & 0x1f;
    let compat = u32::from_be_bytes([b[2], b[3], b[4], b[5]]).reverse_bits();
    let constraints = &b[6..12];
    let used = constraints
        .iter()
        .rposition(|c| *c != 0)
        .map_or(0, |i| i + 1);
    let mut s = format!("hvc1.{space}{profile}.{compat:X}.{tier}{}", b[12]);
    for c in &constraints[..used] {
        s.push_str(&format!(".{c:02X}"));
    }
    Some(s)
}

/// "av01.P.LLT.DD" from an av1C (AV1 ISOBMFF binding, "Codecs Parameter String"): the profile,
/// the level index of operating point 0 in two digits, its tier (M or H) and the bit depth in
/// two digits. The optional fields after them are left out, which means their defaults.
pub(crate) fn av1_codec_string(av1c: &[u8]) -> Option<String> {
    let [marker, b1, b2, _] = *av1c.get(..4)? else {
        return None;
    };
    if marker != AV1C_MARKER_VERSION {
        return None;
    }
    let profile = b1 >> 5;
    let level = b1 & 0x1f;
    let tier = if b2 & 0x80 != 0 { 'H' } else { 'M' };
    let depth = match (b2 & 0x40 != 0, b2 & 0x20 != 0) {
        (false, _) => 8,
        (true, false) => 10,
        (true, true) => 12,
    };
    Some(format!("av01.{profile}.{level:02}{tier}.{depth:02}"))
}

/// The first byte of every av1C: marker bit 1, version 1.
const AV1C_MARKER_VERSION: u8 = 0x81;
/// AV1 OBU type of a temporal delimiter, which samples must not carry.
const OBU_TEMPORAL_DELIMITER: u8 = 2;
/// Longest leb128 the AV1 specification allows (section 4.10.5).
const LEB128_MAX_BYTES: usize = 8;

/// An AV1 temporal unit as an ISOBMFF sample: the same OBUs without temporal delimiters
/// (AV1 ISOBMFF binding, 2.4). Returns the input unchanged when it has none, and when it does
/// not parse as OBUs with sizes (the decoder then says what is wrong; we lose nothing).
pub(crate) fn av1_sample(tu: Bytes) -> Bytes {
    let mut keep: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    let mut dropped = false;
    while pos < tu.len() {
        let Some((obu_type, len)) = obu_at(&tu[pos..]) else {
            return tu;
        };
        if obu_type == OBU_TEMPORAL_DELIMITER {
            dropped = true;
        } else {
            keep.push((pos, pos + len));
        }
        pos += len;
    }
    if !dropped {
        return tu;
    }
    let mut out = bytes::BytesMut::with_capacity(tu.len());
    for (a, b) in keep {
        out.extend_from_slice(&tu[a..b]);
    }
    out.freeze()
}

/// The type and whole length (header, size field, payload) of the OBU at the start of `b`, if
/// it has a size field that fits in `b`. An OBU without a size field runs to the end.
fn obu_at(b: &[u8]) -> Option<(u8, usize)> {
    let header = *b.first()?;
    if header & 0x80 != 0 {
        return None; // forbidden bit
    }
    let obu_type = (header >> 3) & 0x0f;
    let header_len = if header & 0x04 != 0 { 2 } else { 1 };
    if header & 0x02 == 0 {
        return (b.len() >= header_len).then_some((obu_type, b.len()));
    }
    let mut size: u64 = 0;
    let mut i = 0;
    loop {
        let byte = *b.get(header_len + i)?;
        size |= u64::from(byte & 0x7f) << (7 * i);
        i += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if i == LEB128_MAX_BYTES {
            return None;
        }
    }
    let len = (header_len + i).checked_add(usize::try_from(size).ok()?)?;
    (len <= b.len()).then_some((obu_type, len))
}

/// The MPEG-4 audio object type of an AudioSpecificConfig (5 bits, escape 31 → 32 + 6 bits).
pub(crate) fn aac_object_type(asc: &[u8]) -> Option<u8> {
    let (a, b) = match asc {
        [a, b, ..] => (*a, *b),
        _ => return None,
    };
    let aot = a >> 3;
    if aot == 31 {
        Some(32 + (((a & 0x07) << 3) | (b >> 5)))
    } else {
        Some(aot)
    }
}

/// Nanoseconds to ticks of `timescale`, rounded to nearest.
pub(crate) fn ns_to_ticks(ns: u64, timescale: u32) -> u64 {
    let v = (u128::from(ns) * u128::from(timescale) + NANOS_PER_SEC / 2) / NANOS_PER_SEC;
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Ticks of `timescale` to nanoseconds, rounded down.
pub(crate) fn ticks_to_ns(ticks: u64, timescale: u32) -> u64 {
    let v = u128::from(ticks) * NANOS_PER_SEC / u128::from(timescale.max(1));
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// A duration in ticks of `timescale`, rounded down (so "<= target" checks stay true).
pub(crate) fn duration_to_ticks_floor(d: Duration, timescale: u32) -> u64 {
    let v = d.as_nanos() * u128::from(timescale) / NANOS_PER_SEC;
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Ticks to seconds as f64 (for playlist decimals).
pub(crate) fn ticks_to_secs(ticks: u64, timescale: u32) -> f64 {
    if timescale == 0 {
        return 0.0;
    }
    ticks as f64 / f64::from(timescale)
}

#[cfg(test)]
#[path = "codec_test.rs"]
mod tests;
