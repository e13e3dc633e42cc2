use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// avcC records as ffmpeg 5.1's libx264 writes them into FLV (`-f lavfi -i testsrc2=size=WxH:rate=R
// -c:v libx264 -profile:v P -f flv`), first video tag body from byte 5.
const AVCC_720P30_HIGH: &str = "0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000668ebe3cb22c0fdf8f800";
const AVCC_1080P25_MAIN: &str =
    "014d4028ffe1001a674d4028eca03c0113f2e022000003000200000300641e30632c01000568ebe3cb20";
const AVCC_360P30_BASELINE: &str =
    "0142c01effe100196742c01ed900a02ff970110000030001000003003c0f162e4801000568cb83cb20";
const AVCC_480P60_HIGH444: &str = "01f4001fffe1001b67f4001f919b281b07bc5f8088000003000800000303c078c18cb001000668ebe3c44844fff8f800";

#[test]
fn x264_records_read_as_gstreamer_reads_them() {
    let a = parse_avcc(&hex(AVCC_720P30_HIGH)).unwrap();
    assert_eq!((a.width, a.height, a.framerate), (1280, 720, Some((30, 1))));
    assert_eq!(a.nal_length_size, 4);
    assert_eq!(a.describe(), "H.264 high 3.1");

    // 1088 coded lines cropped to 1080.
    let a = parse_avcc(&hex(AVCC_1080P25_MAIN)).unwrap();
    assert_eq!(
        (a.width, a.height, a.framerate),
        (1920, 1080, Some((25, 1)))
    );
    assert_eq!(a.describe(), "H.264 main 4");

    let a = parse_avcc(&hex(AVCC_360P30_BASELINE)).unwrap();
    assert_eq!((a.width, a.height, a.framerate), (640, 360, Some((30, 1))));
    assert_eq!(a.describe(), "H.264 constrained-baseline 3");

    // 4:4:4 crops in luma samples: 864 coded columns to 854.
    let a = parse_avcc(&hex(AVCC_480P60_HIGH444)).unwrap();
    assert_eq!((a.width, a.height, a.framerate), (854, 480, Some((60, 1))));
    assert_eq!(a.describe(), "H.264 high-4:4:4 3.1");
}

#[test]
fn damaged_records_are_refused_with_the_reason() {
    let good = hex(AVCC_720P30_HIGH);
    // Every truncation up to the end of the PPS list is an error, never a panic or a wrong
    // size (the 4 bytes after it, high profile's chroma format and bit depths, repeat the SPS).
    for n in 0..good.len() - 4 {
        if let Ok(a) = parse_avcc(&good[..n]) {
            panic!("a record cut at {n} bytes read as {a:?}");
        }
    }
    let mut v = good.clone();
    v[0] = 2;
    assert!(parse_avcc(&v).unwrap_err().contains("version 2"));
    let mut v = good.clone();
    v[4] = 0xfe; // NAL length size 3
    assert!(parse_avcc(&v).unwrap_err().contains("length size 3"));
    let mut v = good.clone();
    v[5] = 0xe0; // no SPS
    assert!(parse_avcc(&v).unwrap_err().contains("no SPS"));
    let mut v = good.clone();
    v[8] = 0x68; // the SPS slot holds a PPS
    assert!(parse_avcc(&v).unwrap_err().contains("type 8"));
    let mut v = good;
    let pps_count = 8 + 0x1a;
    v[pps_count] = 0;
    assert!(parse_avcc(&v).unwrap_err().contains("no PPS"));
}

#[test]
fn an_absurd_picture_size_is_refused() {
    // profile 66, no constraints, level 30; seq_parameter_set_id 0, log2_max_frame_num_minus4
    // 0, pic_order_cnt_type 2, one reference frame, no gaps; then a width of 2^20 macroblocks,
    // one map unit of height, frame_mbs_only, direct_8x8_inference, no cropping.
    let mut bits = String::from("010000100000000000011110");
    bits.push('1'); // sps id
    bits.push('1'); // log2_max_frame_num_minus4
    bits.push_str("011" /* poc type 2 */);
    bits.push_str("010" /* 1 ref frame */);
    bits.push('0' /* gaps */);
    bits.push_str(&"0".repeat(20));
    bits.push('1');
    bits.push_str(&"0".repeat(20));
    bits.push_str("1110");
    while bits.len() % 8 != 0 {
        bits.push('0');
    }
    let rbsp: Vec<u8> = (0..bits.len())
        .step_by(8)
        .map(|i| u8::from_str_radix(&bits[i..i + 8], 2).unwrap())
        .collect();
    let e = parse_sps(&rbsp).unwrap_err();
    assert!(e.contains("larger than 16384"), "{e}");
}

#[test]
fn emulation_prevention_bytes_are_dropped() {
    assert_eq!(
        rbsp(&[0, 0, 3, 1, 0, 0, 3, 0, 0, 3]),
        vec![0, 0, 1, 0, 0, 0, 0]
    );
    assert_eq!(rbsp(&[0, 3, 0, 0, 0, 3]), vec![0, 3, 0, 0, 0]);
}

#[test]
fn idr_slices_are_found_by_walking_the_lengths() {
    // SPS, PPS, IDR slice.
    let key = [
        0, 0, 0, 2, 0x67, 1, 0, 0, 0, 1, 0x68, 0, 0, 0, 2, 0x65, 0x88,
    ];
    assert!(has_idr(&key, 4));
    // A non-IDR slice whose payload happens to hold 0x65.
    let delta = [0, 0, 0, 3, 0x41, 0x65, 0x65];
    assert!(!has_idr(&delta, 4));
    // A length running past the end, a zero length, an empty unit.
    assert!(!has_idr(&[0, 0, 0, 9, 0x41], 4));
    assert!(has_idr(&[0, 0, 0, 0, 0, 0, 0, 1, 0x65], 4));
    assert!(!has_idr(&[], 4));
    assert!(has_idr(&[0, 2, 0x06, 0, 0, 1, 0x25], 2));
}

#[test]
fn audio_specific_configs() {
    // ffmpeg's AAC LC, 44.1 kHz mono, with the SBR sync extension it appends.
    let a = parse_asc(&hex("120856e500")).unwrap();
    assert_eq!((a.object_type, a.sample_rate, a.channels), (2, 44_100, 1));
    let a = parse_asc(&hex("1190")).unwrap();
    assert_eq!((a.object_type, a.sample_rate, a.channels), (2, 48_000, 2));
    // An explicit rate (index 15), 7.1.
    let a = parse_asc(&[0x17, 0x80, 0x5d, 0xc0, 0x38]).unwrap();
    assert_eq!((a.object_type, a.sample_rate, a.channels), (2, 48_000, 8));
    // An escaped object type (31 + 6 bits: 32 + 10 = 42).
    assert_eq!(parse_asc(&[0xf9, 0x46, 0x20]).unwrap().object_type, 42);
    assert!(parse_asc(&hex("1180"))
        .unwrap_err()
        .contains("channel configuration 0"));
    assert!(parse_asc(&hex("16 90".replace(' ', "").as_str()))
        .unwrap_err()
        .contains("reserved"));
    assert!(parse_asc(&[0x12]).is_err());
    assert!(parse_asc(&[]).is_err());
}
