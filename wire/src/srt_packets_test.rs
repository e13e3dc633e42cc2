//! SRT packets for the balancer's unit tests (`srt_relay`, `srt_route`): one handshake builder
//! on the relay's own field offsets, and the stream-ID encoding the relay uses.

use super::*;

pub(crate) use super::{encode_sid, put16, put32};

/// A handshake packet: fixed part with these fields, then extension blocks.
pub(crate) fn hs(
    version: u32,
    ext_field: u16,
    hs_type: u32,
    socket: u32,
    cookie: u32,
    dest: u32,
    exts: &[(u16, Vec<u8>)],
) -> Vec<u8> {
    let mut p = vec![0u8; HS_LEN];
    put16(&mut p, 0, 0x8000);
    put32(&mut p, OFF_TIMESTAMP, 1234);
    put32(&mut p, OFF_DEST, dest);
    put32(&mut p, OFF_VERSION, version);
    put16(&mut p, OFF_EXT, ext_field);
    put32(&mut p, OFF_ISN, 777);
    put32(&mut p, OFF_MTU, 1500);
    put32(&mut p, OFF_FLOW, 8192);
    put32(&mut p, OFF_TYPE, hs_type);
    put32(&mut p, OFF_SOCKET, socket);
    put32(&mut p, OFF_COOKIE, cookie);
    p[OFF_PEER_IP..OFF_PEER_IP + 4].copy_from_slice(&[1, 0, 0, 127]);
    for (ty, body) in exts {
        p.extend_from_slice(&ty.to_be_bytes());
        p.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
        p.extend_from_slice(body);
    }
    p
}

/// A big-endian u32 of a packet the test knows is long enough.
pub(crate) fn be32_at(p: &[u8], at: usize) -> u32 {
    be32(p, at).expect("packet long enough")
}
