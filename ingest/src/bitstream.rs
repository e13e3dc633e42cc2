//! What the packager needs to know of an H.264 or AAC stream, read from the publisher's own
//! configuration records, for the RTMP passthrough that does without GStreamer
//! ([`crate::direct`]):
//!
//! - [`parse_avcc`]: an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) and the
//!   fields of its first SPS that a player is told (ITU-T H.264 7.3.2.1.1 and E.1.1): picture
//!   size after cropping, frame rate from the VUI timing, profile and level;
//! - [`parse_asc`]: an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1): object type, sample
//!   rate, channels;
//! - [`has_idr`]: whether an access unit of length-prefixed NAL units holds an IDR slice.
//!
//! Everything here reads bytes a publisher sent: every read is bounded, every value that sizes
//! something is checked, and a record we cannot read is an error with the reason (the stream
//! then goes through GStreamer, which may read it). Fuzzed by `fuzz_targets/bitstream.rs`.

/// Largest picture side taken from an SPS, in pixels: H.264's level 6.2 allows 8,192 x 4,320
/// (139,264 macroblocks); anything larger is a malformed record, not a picture.
const MAX_PICTURE_SIDE: u64 = 16_384;
/// Largest exp-Golomb prefix (leading zero bits) read: a 32-bit value needs 31.
const MAX_GOLOMB_ZEROS: u32 = 31;

/// What a publisher's H.264 configuration says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Avc {
    pub profile_idc: u8,
    /// constraint_set0..5 flags, as in the SPS byte after profile_idc.
    pub constraints: u8,
    pub level_idc: u8,
    /// Bytes of each NAL unit's length prefix in the access units (1, 2 or 4).
    pub nal_length_size: u8,
    /// Picture size after the SPS's cropping.
    pub width: u32,
    pub height: u32,
    /// Frames per second as (numerator, denominator), when the VUI states its timing.
    pub framerate: Option<(u32, u32)>,
}

impl Avc {
    /// Profile and level as GStreamer's caps name them (`high`, `3.1`), so the health view
    /// says the same of a stream whichever way it was read.
    pub fn describe(&self) -> String {
        let c = |n: u8| self.constraints & (0x80 >> n) != 0;
        let profile = match self.profile_idc {
            66 if c(1) => "constrained-baseline".to_string(),
            66 => "baseline".into(),
            77 => "main".into(),
            88 => "extended".into(),
            100 if c(4) && c(5) => "constrained-high".into(),
            100 if c(4) => "progressive-high".into(),
            100 => "high".into(),
            110 if c(3) => "high-10-intra".into(),
            110 => "high-10".into(),
            122 if c(3) => "high-4:2:2-intra".into(),
            122 => "high-4:2:2".into(),
            244 if c(3) => "high-4:4:4-intra".into(),
            244 => "high-4:4:4".into(),
            44 => "cavlc-4:4:4-intra".into(),
            other => format!("profile {other}"),
        };
        let level = match self.level_idc {
            9 => "1b".to_string(),
            11 if c(3) && matches!(self.profile_idc, 66 | 77 | 88) => "1b".into(),
            l if l % 10 == 0 => format!("{}", l / 10),
            l => format!("{}.{}", l / 10, l % 10),
        };
        format!("H.264 {profile} {level}")
    }
}

/// Reads bits most significant first from an RBSP (emulation prevention removed).
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Result<u32, String> {
        let byte = self
            .data
            .get(self.pos / 8)
            .ok_or_else(|| "the record ends in the middle of a field".to_string())?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(b))
    }

    /// `n` (at most 32) bits as a number.
    fn bits(&mut self, n: u32) -> Result<u32, String> {
        let mut v: u64 = 0;
        for _ in 0..n.min(32) {
            v = (v << 1) | u64::from(self.bit()?);
        }
        Ok(v as u32)
    }

    fn flag(&mut self) -> Result<bool, String> {
        Ok(self.bit()? == 1)
    }

    /// ue(v): unsigned exp-Golomb.
    fn ue(&mut self) -> Result<u32, String> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > MAX_GOLOMB_ZEROS {
                return Err("an exp-Golomb code longer than 32 bits".into());
            }
        }
        let rest = u64::from(self.bits(zeros)?);
        Ok(((1u64 << zeros) - 1 + rest).min(u64::from(u32::MAX)) as u32)
    }

    /// se(v): signed exp-Golomb.
    fn se(&mut self) -> Result<i64, String> {
        let k = i64::from(self.ue()?);
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }

    /// ue(v) that must not exceed `max` (a field whose value sizes what follows).
    fn ue_max(&mut self, max: u32, field: &str) -> Result<u32, String> {
        let v = self.ue()?;
        if v > max {
            return Err(format!("{field} {v} is above {max}"));
        }
        Ok(v)
    }
}

/// The RBSP of a NAL unit's payload: every emulation prevention byte (00 00 03) dropped.
fn rbsp(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    let mut zeros = 0;
    for &b in payload {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Read an AVCDecoderConfigurationRecord and its first SPS.
pub fn parse_avcc(record: &[u8]) -> Result<Avc, String> {
    let [version, _, _, _, length_byte, sps_count, ..] = *record else {
        return Err(format!(
            "the avcC record is {} bytes, shorter than its 6-byte header",
            record.len()
        ));
    };
    if version != 1 {
        return Err(format!("avcC configuration version {version}, not 1"));
    }
    let nal_length_size = (length_byte & 0x03) + 1;
    if nal_length_size == 3 {
        return Err("avcC NAL length size 3, which H.264 does not allow".into());
    }
    if sps_count & 0x1f == 0 {
        return Err("the avcC record holds no SPS".into());
    }
    let sps_len = record
        .get(6..8)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or("the avcC record ends before its SPS length")?;
    let sps = record
        .get(8..8 + sps_len)
        .ok_or("the avcC record ends inside its SPS")?;
    let mut pos = 8 + sps_len;
    // Every other SPS, then the PPS list, must be whole: the record goes to players as it is,
    // and one without a PPS cannot be decoded.
    let entry = |pos: &mut usize, what: &str| -> Result<(), String> {
        let len = record
            .get(*pos..*pos + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or_else(|| format!("the avcC record ends inside its {what} list"))?;
        record
            .get(*pos + 2..*pos + 2 + len)
            .ok_or_else(|| format!("the avcC record ends inside its {what} list"))?;
        *pos += 2 + len;
        Ok(())
    };
    for _ in 1..(sps_count & 0x1f) {
        entry(&mut pos, "SPS")?;
    }
    let pps_count = match record.get(pos) {
        Some(n) if *n > 0 => *n,
        _ => return Err("the avcC record holds no PPS".into()),
    };
    pos += 1;
    for _ in 0..pps_count {
        entry(&mut pos, "PPS")?;
    }
    let (header, payload) = sps.split_first().ok_or("the avcC record's SPS is empty")?;
    if header & 0x1f != 7 {
        return Err(format!(
            "the avcC record's SPS is a NAL unit of type {}, not 7",
            header & 0x1f
        ));
    }
    let mut avc = parse_sps(&rbsp(payload))?;
    avc.nal_length_size = nal_length_size;
    Ok(avc)
}

/// The SPS fields we need, from its RBSP (after the NAL header byte).
fn parse_sps(data: &[u8]) -> Result<Avc, String> {
    let mut r = Bits::new(data);
    let profile_idc = r.bits(8)? as u8;
    let constraints = r.bits(8)? as u8;
    let level_idc = r.bits(8)? as u8;
    r.ue_max(31, "seq_parameter_set_id")?;
    let mut chroma_format_idc = 1;
    let mut separate_planes = false;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue_max(3, "chroma_format_idc")?;
        if chroma_format_idc == 3 {
            separate_planes = r.flag()?;
        }
        r.ue_max(6, "bit_depth_luma_minus8")?;
        r.ue_max(6, "bit_depth_chroma_minus8")?;
        r.flag()?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            // seq_scaling_matrix_present_flag: the lists are read only to be skipped.
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue_max(12, "log2_max_frame_num_minus4")?;
    match r.ue_max(2, "pic_order_cnt_type")? {
        0 => {
            r.ue_max(12, "log2_max_pic_order_cnt_lsb_minus4")?;
        }
        1 => {
            r.flag()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue_max(255, "num_ref_frames_in_pic_order_cnt_cycle")?;
            for _ in 0..cycle {
                r.se()?;
            }
        }
        _ => {}
    }
    r.ue()?; // max_num_ref_frames
    r.flag()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.flag()?; // mb_adaptive_frame_field_flag
    }
    r.flag()?; // direct_8x8_inference_flag
    let fields: u64 = if frame_mbs_only { 1 } else { 2 };
    let mut width = width_mbs * 16;
    let mut height = height_map_units * 16 * fields;
    if r.flag()? {
        // frame_cropping_flag: offsets in chroma sample units (H.264 7.4.2.1.1).
        let chroma_array_type = if separate_planes {
            0
        } else {
            chroma_format_idc
        };
        let (unit_x, unit_y) = match chroma_array_type {
            0 => (1, fields),
            1 => (2, 2 * fields),
            2 => (2, fields),
            _ => (1, fields),
        };
        let (left, right, top, bottom) = (
            u64::from(r.ue()?),
            u64::from(r.ue()?),
            u64::from(r.ue()?),
            u64::from(r.ue()?),
        );
        let crop_x = unit_x * (left + right);
        let crop_y = unit_y * (top + bottom);
        if crop_x >= width || crop_y >= height {
            return Err(format!(
                "the SPS crops {crop_x}x{crop_y} off a {width}x{height} picture"
            ));
        }
        width -= crop_x;
        height -= crop_y;
    }
    if width > MAX_PICTURE_SIDE || height > MAX_PICTURE_SIDE {
        return Err(format!(
            "the SPS describes a {width}x{height} picture, larger than {MAX_PICTURE_SIDE} on a side"
        ));
    }
    let framerate = if r.flag()? {
        vui_framerate(&mut r)?
    } else {
        None
    };
    Ok(Avc {
        profile_idc,
        constraints,
        level_idc,
        nal_length_size: 4,
        width: width as u32,
        height: height as u32,
        framerate,
    })
}

/// A scaling_list() of `size` entries (H.264 7.3.2.1.1.1), read and dropped.
fn skip_scaling_list(r: &mut Bits, size: usize) -> Result<(), String> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return Err(format!("a scaling list delta of {delta}"));
            }
            next = (last + delta + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// The VUI up to its timing info (H.264 E.1.1): frames per second, reduced, when stated.
/// A frame is two fields' ticks: rate = time_scale / (2 x num_units_in_tick).
fn vui_framerate(r: &mut Bits) -> Result<Option<(u32, u32)>, String> {
    if r.flag()? {
        // aspect_ratio_info_present_flag; 255 is Extended_SAR, followed by the ratio itself.
        if r.bits(8)? == 255 {
            r.bits(32)?;
        }
    }
    if r.flag()? {
        r.flag()?; // overscan_appropriate_flag
    }
    if r.flag()? {
        // video_signal_type_present_flag: video_format, video_full_range_flag
        r.bits(4)?;
        if r.flag()? {
            r.bits(24)?; // colour primaries, transfer characteristics, matrix coefficients
        }
    }
    if r.flag()? {
        r.ue()?; // chroma_sample_loc_type_top_field
        r.ue()?; // chroma_sample_loc_type_bottom_field
    }
    if !r.flag()? {
        return Ok(None);
    }
    let units = u64::from(r.bits(32)?);
    let scale = u64::from(r.bits(32)?);
    if units == 0 || scale == 0 {
        return Ok(None);
    }
    let (mut num, mut den) = (scale, 2 * units);
    let g = gcd(num, den);
    num /= g;
    den /= g;
    Ok(u32::try_from(num)
        .ok()
        .zip(u32::try_from(den).ok())
        .filter(|(n, d)| *n > 0 && *d > 0))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// Whether an access unit of NAL units, each after a big-endian length of `length_size`
/// bytes, holds an IDR slice (type 5). A length that runs past the end stops the walk.
pub fn has_idr(au: &[u8], length_size: u8) -> bool {
    let n = usize::from(length_size);
    let mut pos = 0;
    while let Some(len_bytes) = au.get(pos..pos + n) {
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        pos += n;
        if len == 0 {
            continue;
        }
        let Some(header) = au.get(pos) else {
            return false;
        };
        if header & 0x1f == 5 {
            return true;
        }
        pos = pos.saturating_add(len);
    }
    false
}

/// What a publisher's AAC configuration says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asc {
    /// Audio object type (2: AAC LC, 5: SBR, 29: PS, ...).
    pub object_type: u8,
    pub sample_rate: u32,
    pub channels: u32,
}

/// Sample rates by index (ISO/IEC 14496-3 1.6.3.4); 13 and 14 are reserved, 15 says the rate
/// follows in 24 bits.
const AAC_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Read an AudioSpecificConfig's object type, sample rate and channel configuration.
/// Channel configuration 0 (a program config element in the stream) is refused: the channel
/// count is then not in the record.
pub fn parse_asc(record: &[u8]) -> Result<Asc, String> {
    let mut r = Bits::new(record);
    let mut object_type = r.bits(5)?;
    if object_type == 31 {
        object_type = 32 + r.bits(6)?;
    }
    let index = r.bits(4)?;
    let sample_rate = match index {
        15 => r.bits(24)?,
        i => *AAC_RATES
            .get(i as usize)
            .ok_or_else(|| format!("AAC sample rate index {i} is reserved"))?,
    };
    if sample_rate == 0 {
        return Err("AAC sample rate 0".into());
    }
    let channels = match r.bits(4)? {
        0 => return Err("AAC channel configuration 0 (the channels are in the stream)".into()),
        c @ 1..=6 => c,
        7 => 8,
        c => return Err(format!("AAC channel configuration {c} is reserved")),
    };
    Ok(Asc {
        object_type: object_type as u8,
        sample_rate,
        channels,
    })
}

#[cfg(test)]
#[path = "bitstream_test.rs"]
mod tests;
