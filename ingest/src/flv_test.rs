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
