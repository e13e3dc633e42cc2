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

#[cfg(test)]
#[path = "flv_test.rs"]
mod tests;
