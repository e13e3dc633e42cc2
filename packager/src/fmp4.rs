//! CMAF boxes: the init segment (ftyp+moov) and one fragment (moof+mdat) per part.
//!
//! Entry points: [`init_segment`] and [`fragment`], both pure, built with `mp4-atom` types.
//! A segment is the concatenation of its parts' fragments, which is a valid CMAF segment
//! (one CMAF chunk per part), so no separate segment writer exists.
//!
//! Details: one track (ID 1) per init segment; timescale 90 kHz for video and the sample rate
//! for audio; `tfhd` uses default-base-is-moof and `trun` carries per-sample durations and
//! sizes, per-sample flags for video (sync / non-sync) and signed (version 1) composition
//! offsets for video. Caveat: an AAC sample rate above 65535 Hz does not fit the sample entry's
//! 16-bit field and is written as 0 there (the AudioSpecificConfig and mdhd carry the truth).

use bytes::Bytes;
use mp4_atom::{
    esds, Atom, Audio, Av01, Av1c, Avc1, Avcc, Codec, Dinf, Dref, Encode, Esds, Ftyp, Hdlr, Hvc1,
    Hvcc, Mdat, Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsd, Tfdt,
    Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

use crate::codec::{aac_object_type, CodecInfo};
use crate::{CodecConfig, PackagerError};

/// Track ID used in every init segment and fragment.
pub(crate) const TRACK_ID: u32 = 1;

/// sample_depends_on = 2 (depends on no other sample): a sync sample.
const SYNC_SAMPLE_FLAGS: u32 = 0x0200_0000;
/// sample_depends_on = 1 and sample_is_non_sync_sample = 1.
const NON_SYNC_SAMPLE_FLAGS: u32 = 0x0101_0000;
/// Size of an `mdat` header with a 32-bit size field.
const MDAT_HEADER_LEN: usize = 8;

/// One sample of a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FragSample {
    /// Duration in track ticks.
    pub duration: u32,
    /// Size of its data in the mdat.
    pub size: u32,
    /// Sync sample.
    pub keyframe: bool,
    /// PTS - DTS in track ticks (video only).
    pub cts: i32,
}

/// The init segment (ftyp + moov) for a rendition; `bandwidth` fills the esds bit rates.
pub(crate) fn init_segment(info: &CodecInfo, bandwidth: u64) -> Result<Bytes, PackagerError> {
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    };
    let (codec, handler, width, height, vmhd, smhd, volume) = match &info.config {
        CodecConfig::H264 { .. } | CodecConfig::H265 { .. } | CodecConfig::Av1 { .. } => {
            let (width, height) = info
                .config
                .picture()
                .map_or((0, 0), |p| (p.width, p.height));
            let w = u16::try_from(width).unwrap_or(u16::MAX);
            let h = u16::try_from(height).unwrap_or(u16::MAX);
            let visual = Visual {
                data_reference_index: 1,
                width: w,
                height: h,
                ..Default::default()
            };
            let codec = match &info.config {
                CodecConfig::H264 { avcc, .. } => Codec::from(Avc1 {
                    visual,
                    avcc: Avcc::decode_body(&mut avcc.as_ref())?,
                    ..Default::default()
                }),
                CodecConfig::H265 { hvcc, .. } => Codec::from(Hvc1 {
                    visual,
                    hvcc: Hvcc::decode_body(&mut hvcc.as_ref())?,
                    ..Default::default()
                }),
                CodecConfig::Av1 { av1c, .. } => Codec::from(Av01 {
                    visual,
                    av1c: Av1c::decode_body(&mut av1c.as_ref())?,
                    ..Default::default()
                }),
                // Not reached: the outer match took audio, and CodecInfo::new checked kinds.
                CodecConfig::Aac { .. } => {
                    return Err(PackagerError::InvalidCodecConfig {
                        rendition: String::new(),
                        reason: "AAC configuration for a video sample entry".into(),
                    })
                }
            };
            (codec, b"vide", w, h, Some(Vmhd::default()), None, 0u8)
        }
        CodecConfig::Aac {
            asc,
            sample_rate,
            channels,
        } => {
            let asc_bytes = asc.to_vec();
            let profile = aac_object_type(&asc_bytes).unwrap_or(0);
            let bitrate = u32::try_from(bandwidth).unwrap_or(u32::MAX);
            let mp4a = Mp4a {
                audio: Audio {
                    data_reference_index: 1,
                    channel_count: u16::try_from(*channels).unwrap_or(u16::MAX),
                    sample_size: 16,
                    sample_rate: u16::try_from(*sample_rate).unwrap_or(0).into(),
                },
                esds: Esds {
                    es_desc: esds::EsDescriptor {
                        es_id: 0,
                        dec_config: esds::DecoderConfig {
                            // 0x40: MPEG-4 Audio; stream type 5: audio.
                            object_type_indication: 0x40,
                            stream_type: 0x05,
                            max_bitrate: bitrate,
                            avg_bitrate: bitrate,
                            dec_specific: Some(esds::DecoderSpecific {
                                profile,
                                freq_index: asc_freq_index(&asc_bytes),
                                chan_conf: u8::try_from(*channels).unwrap_or(0),
                                raw: asc_bytes,
                            }),
                            ..Default::default()
                        },
                        ..Default::default()
                    },
                },
                btrt: None,
                taic: None,
            };
            (
                Codec::from(mp4a),
                b"soun",
                0,
                0,
                None,
                Some(Smhd::default()),
                1u8,
            )
        }
    };
    let moov = Moov {
        mvhd: Mvhd {
            timescale: info.timescale,
            rate: 1u16.into(),
            volume: 1u8.into(),
            next_track_id: TRACK_ID + 1,
            ..Default::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: vec![Trex {
                track_id: TRACK_ID,
                default_sample_description_index: 1,
                default_sample_duration: 0,
                default_sample_size: 0,
                default_sample_flags: 0,
            }],
        }),
        trak: vec![Trak {
            tkhd: Tkhd {
                track_id: TRACK_ID,
                enabled: true,
                in_movie: true,
                volume: volume.into(),
                width: width.into(),
                height: height.into(),
                ..Default::default()
            },
            mdia: Mdia {
                mdhd: Mdhd {
                    timescale: info.timescale,
                    language: "und".into(),
                    ..Default::default()
                },
                hdlr: Hdlr {
                    handler: handler.into(),
                    name: if vmhd.is_some() {
                        "VideoHandler".into()
                    } else {
                        "SoundHandler".into()
                    },
                },
                minf: Minf {
                    vmhd,
                    smhd,
                    dinf: Dinf {
                        dref: Dref {
                            entries: vec![Url::default().into()],
                        },
                    },
                    stbl: Stbl {
                        stsd: Stsd {
                            codecs: vec![codec],
                        },
                        stco: Some(Stco::default()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut out = Vec::new();
    ftyp.encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(Bytes::from(out))
}

/// The samplingFrequencyIndex of an AudioSpecificConfig (non-escaped object types).
fn asc_freq_index(asc: &[u8]) -> u8 {
    match asc {
        [a, b, ..] if (a >> 3) != 31 => ((a & 0x07) << 1) | (b >> 7),
        _ => 0,
    }
}

/// One CMAF fragment: moof (mfhd `sequence`, tfdt `base_dts`) + mdat holding `payload`.
pub(crate) fn fragment(
    sequence: u32,
    base_dts: u64,
    samples: &[FragSample],
    payload: &[Bytes],
    video: bool,
) -> Result<Bytes, PackagerError> {
    let entries = samples
        .iter()
        .map(|s| TrunEntry {
            duration: Some(s.duration),
            size: Some(s.size),
            flags: video.then_some(if s.keyframe {
                SYNC_SAMPLE_FLAGS
            } else {
                NON_SYNC_SAMPLE_FLAGS
            }),
            cts: video.then_some(i64::from(s.cts)),
        })
        .collect::<Vec<_>>();
    let mut moof = Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id: TRACK_ID,
                // Audio: every sample is sync; say it once.
                default_sample_flags: (!video).then_some(SYNC_SAMPLE_FLAGS),
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: base_dts,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples: TrunSamples::Explicit(entries),
            }],
            ..Default::default()
        }],
    };
    // The data offset counts from the moof's first byte to the first sample in the mdat; its
    // field has a fixed width, so the moof's size does not depend on its value.
    let mut probe = Vec::new();
    moof.encode(&mut probe)?;
    let offset = i32::try_from(probe.len() + MDAT_HEADER_LEN)
        .map_err(|_| mp4_atom::Error::TooLarge(Moof::KIND))?;
    for traf in &mut moof.traf {
        for trun in &mut traf.trun {
            trun.data_offset = Some(offset);
        }
    }
    // The samples are copied once, into a buffer of the fragment's exact size. The mdat header
    // is written here: mp4-atom encodes an mdat's body a byte at a time.
    let payload_len: usize = payload.iter().map(Bytes::len).sum();
    let mdat_size = u32::try_from(MDAT_HEADER_LEN + payload_len)
        .map_err(|_| mp4_atom::Error::TooLarge(Mdat::KIND))?;
    let mut out = Vec::with_capacity(probe.len() + MDAT_HEADER_LEN + payload_len);
    moof.encode(&mut out)?;
    out.extend_from_slice(&mdat_size.to_be_bytes());
    out.extend_from_slice(b"mdat");
    for chunk in payload {
        out.extend_from_slice(chunk);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
#[path = "fmp4_test.rs"]
pub(crate) mod tests;
