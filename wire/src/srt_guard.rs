//! A strict, non-panicking inspector for SRT datagrams, run on every packet before it reaches
//! srt-tokio.
//!
//! srt-tokio 0.4 is not production ready: some packets a peer can send reach `todo!()`,
//! `unimplemented!()` or `panic!` in it (Congestion Warning and Peer Error control packets,
//! unknown handshake extensions, unknown SRT control subtypes). [`inspect`] decides for each
//! datagram whether to forward it as is, forward a cleaned copy, or drop it, with the reason.
//! Pure code: no IO, no clock. Fuzzed by `fuzz/fuzz_targets/srt_guard.rs`.
//!
//! Layout (SRT draft, section 3): a 16-byte header; bit 0 of byte 0 says control (1) or data
//! (0). Control: 15-bit type, 16-bit subtype, 32-bit type-specific info, timestamp,
//! destination socket ID, then the control information field (CIF).

/// Largest SRT datagram we accept: libsrt's default MSS is 1500 bytes including IP/UDP headers;
/// we allow a full 1500 bytes of payload for peers that raised it, and nothing bigger.
pub const MAX_DATAGRAM: usize = 1500;
/// SRT packet header size.
pub const HEADER_LEN: usize = 16;
/// Handshake CIF size without extensions.
pub const HANDSHAKE_CIF_LEN: usize = 48;
/// SRT caps the stream ID at 512 bytes.
const MAX_SID_BYTES: usize = 512;
/// HSREQ/HSRSP bodies are three 32-bit words.
const HSREQ_LEN: usize = 12;
/// A keying-material message has at least four 32-bit words before its keys.
const KM_MIN_LEN: usize = 16;

/// What kind of packet passed inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Data,
    /// Handshake induction: the first packet of a new connection.
    Induction,
    /// Handshake conclusion (or another handshake phase).
    Handshake,
    Control,
}

/// Why a packet was dropped. Low-cardinality: used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    TooShort,
    TooLong,
    /// Control types srt-tokio cannot handle (Congestion Warning, Peer Error) or unknown.
    UnsupportedControl,
    /// A handshake whose fixed part or extensions are malformed.
    BadHandshake,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooShort => "too_short",
            DropReason::TooLong => "too_long",
            DropReason::UnsupportedControl => "unsupported_control",
            DropReason::BadHandshake => "bad_handshake",
        }
    }
}

/// The decision for one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Forward(Kind),
    /// Forward this cleaned copy instead (unsupported handshake extensions removed).
    Rewrite(Kind, Vec<u8>),
    Drop(DropReason),
}

// Control packet types (SRT draft 3.2).
const CT_HANDSHAKE: u16 = 0x0000;
const CT_KEEPALIVE: u16 = 0x0001;
const CT_ACK: u16 = 0x0002;
const CT_NAK: u16 = 0x0003;
const CT_SHUTDOWN: u16 = 0x0005;
const CT_ACKACK: u16 = 0x0006;
const CT_DROPREQ: u16 = 0x0007;
const CT_USER: u16 = 0x7FFF;
// SRT extension subtypes of CT_USER that srt-tokio handles.
const EXT_HSREQ: u16 = 1;
const EXT_HSRSP: u16 = 2;
const EXT_KMREQ: u16 = 3;
const EXT_KMRSP: u16 = 4;
const EXT_SID: u16 = 5;

// Handshake types.
const HS_INDUCTION: u32 = 1;
const HS_WAVEAHAND: u32 = 0;
const HS_CONCLUSION: u32 = 0xFFFF_FFFF;
const HS_AGREEMENT: u32 = 0xFFFF_FFFE;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Inspect one datagram.
pub fn inspect(pkt: &[u8]) -> Verdict {
    if pkt.len() < HEADER_LEN {
        return Verdict::Drop(DropReason::TooShort);
    }
    if pkt.len() > MAX_DATAGRAM {
        return Verdict::Drop(DropReason::TooLong);
    }
    if pkt[0] & 0x80 == 0 {
        return Verdict::Forward(Kind::Data);
    }
    let Some(ctype) = be16(pkt, 0).map(|w| w & 0x7FFF) else {
        return Verdict::Drop(DropReason::TooShort);
    };
    match ctype {
        CT_HANDSHAKE => handshake(pkt),
        CT_KEEPALIVE | CT_SHUTDOWN | CT_ACKACK => Verdict::Forward(Kind::Control),
        // ACK (full or light), NAK and drop requests carry CIFs srt-tokio parses with checks.
        CT_ACK | CT_NAK | CT_DROPREQ => Verdict::Forward(Kind::Control),
        CT_USER => match be16(pkt, 2) {
            // srt-tokio reads these bodies without checking their length first.
            Some(EXT_HSREQ | EXT_HSRSP) if pkt.len() >= HEADER_LEN + HSREQ_LEN => {
                Verdict::Forward(Kind::Control)
            }
            Some(EXT_KMREQ | EXT_KMRSP) if pkt.len() >= HEADER_LEN + KM_MIN_LEN => {
                Verdict::Forward(Kind::Control)
            }
            Some(EXT_HSREQ | EXT_HSRSP | EXT_KMREQ | EXT_KMRSP) => {
                Verdict::Drop(DropReason::BadHandshake)
            }
            _ => Verdict::Drop(DropReason::UnsupportedControl),
        },
        _ => Verdict::Drop(DropReason::UnsupportedControl),
    }
}

fn handshake(pkt: &[u8]) -> Verdict {
    let cif = &pkt[HEADER_LEN..];
    if cif.len() < HANDSHAKE_CIF_LEN {
        return Verdict::Drop(DropReason::BadHandshake);
    }
    let (Some(version), Some(hs_type)) = (be32(cif, 0), be32(cif, 20)) else {
        return Verdict::Drop(DropReason::BadHandshake);
    };
    if version != 4 && version != 5 {
        return Verdict::Drop(DropReason::BadHandshake);
    }
    match hs_type {
        HS_INDUCTION => {
            // An induction carries no extensions; srt-tokio panics on some that do.
            if cif.len() == HANDSHAKE_CIF_LEN {
                Verdict::Forward(Kind::Induction)
            } else {
                Verdict::Rewrite(
                    Kind::Induction,
                    pkt[..HEADER_LEN + HANDSHAKE_CIF_LEN].to_vec(),
                )
            }
        }
        HS_CONCLUSION | HS_AGREEMENT | HS_WAVEAHAND => {
            if version == 4 || cif.len() == HANDSHAKE_CIF_LEN {
                return Verdict::Forward(Kind::Handshake);
            }
            extensions(pkt)
        }
        _ => Verdict::Drop(DropReason::BadHandshake),
    }
}

/// Walk the HSv5 extension blocks; keep the ones srt-tokio understands, drop the others.
fn extensions(pkt: &[u8]) -> Verdict {
    let start = HEADER_LEN + HANDSHAKE_CIF_LEN;
    let mut at = start;
    let mut kept: Vec<(usize, usize)> = Vec::new();
    let mut stripped = false;
    while at < pkt.len() {
        let (Some(ty), Some(words)) = (be16(pkt, at), be16(pkt, at + 2)) else {
            return Verdict::Drop(DropReason::BadHandshake);
        };
        let len = usize::from(words) * 4;
        let end = at + 4 + len;
        if end > pkt.len() {
            return Verdict::Drop(DropReason::BadHandshake);
        }
        match ty {
            EXT_HSREQ | EXT_HSRSP if len != 12 => return Verdict::Drop(DropReason::BadHandshake),
            // An empty stream ID makes srt-tokio read a word that is not there (a panic).
            EXT_SID if len == 0 || len > MAX_SID_BYTES => {
                return Verdict::Drop(DropReason::BadHandshake)
            }
            EXT_KMREQ | EXT_KMRSP if len < KM_MIN_LEN => {
                return Verdict::Drop(DropReason::BadHandshake)
            }
            EXT_HSREQ | EXT_HSRSP | EXT_KMREQ | EXT_KMRSP | EXT_SID => kept.push((at, end)),
            _ => stripped = true,
        }
        at = end;
    }
    if !stripped {
        return Verdict::Forward(Kind::Handshake);
    }
    let mut out = pkt[..start].to_vec();
    for (a, b) in kept {
        out.extend_from_slice(&pkt[a..b]);
    }
    Verdict::Rewrite(Kind::Handshake, out)
}

/// The destination socket ID of a packet (bytes 12..16); 0 in an induction.
pub fn dest_socket_id(pkt: &[u8]) -> Option<u32> {
    be32(pkt, 12)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A handshake packet with the given type, version and extension blocks.
    pub fn hs(version: u32, hs_type: u32, exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut cif = vec![0u8; HANDSHAKE_CIF_LEN];
        cif[0..4].copy_from_slice(&version.to_be_bytes());
        cif[20..24].copy_from_slice(&hs_type.to_be_bytes());
        p.extend_from_slice(&cif);
        for (ty, body) in exts {
            p.extend_from_slice(&ty.to_be_bytes());
            p.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
            p.extend_from_slice(body);
        }
        p
    }

    fn control(ctype: u16, subtype: u16) -> Vec<u8> {
        let mut p = vec![0u8; 16];
        p[0..2].copy_from_slice(&(0x8000 | ctype).to_be_bytes());
        p[2..4].copy_from_slice(&subtype.to_be_bytes());
        p
    }

    #[test]
    fn data_and_ordinary_control_pass() {
        assert_eq!(inspect(&[0u8; 100]), Verdict::Forward(Kind::Data));
        for t in [
            CT_KEEPALIVE,
            CT_ACK,
            CT_NAK,
            CT_SHUTDOWN,
            CT_ACKACK,
            CT_DROPREQ,
        ] {
            assert_eq!(
                inspect(&control(t, 0)),
                Verdict::Forward(Kind::Control),
                "type {t}"
            );
        }
        let mut km = control(CT_USER, EXT_KMREQ);
        km.extend_from_slice(&[0; 16]);
        assert_eq!(inspect(&km), Verdict::Forward(Kind::Control));
        // Truncated keying material / HSREQ bodies, and an empty stream ID: srt-tokio reads
        // past the end of each.
        assert_eq!(
            inspect(&control(CT_USER, EXT_KMREQ)),
            Verdict::Drop(DropReason::BadHandshake)
        );
        assert_eq!(
            inspect(&control(CT_USER, EXT_HSREQ)),
            Verdict::Drop(DropReason::BadHandshake)
        );
        assert_eq!(
            inspect(&hs(5, HS_CONCLUSION, &[(EXT_SID, vec![])])),
            Verdict::Drop(DropReason::BadHandshake)
        );
        assert_eq!(
            inspect(&hs(5, HS_CONCLUSION, &[(EXT_KMREQ, vec![0; 8])])),
            Verdict::Drop(DropReason::BadHandshake)
        );
    }

    #[test]
    fn packets_that_crash_srt_tokio_are_dropped() {
        // Congestion Warning (4) and Peer Error (8) reach todo!() in srt-tokio.
        assert_eq!(
            inspect(&control(4, 0)),
            Verdict::Drop(DropReason::UnsupportedControl)
        );
        assert_eq!(
            inspect(&control(8, 0)),
            Verdict::Drop(DropReason::UnsupportedControl)
        );
        // Unknown SRT extension subtypes reach unimplemented!().
        assert_eq!(
            inspect(&control(CT_USER, 9)),
            Verdict::Drop(DropReason::UnsupportedControl)
        );
        assert_eq!(inspect(&[0x80; 15]), Verdict::Drop(DropReason::TooShort));
        assert_eq!(inspect(&[0u8; 2000]), Verdict::Drop(DropReason::TooLong));
    }

    #[test]
    fn handshakes() {
        assert_eq!(
            inspect(&hs(4, HS_INDUCTION, &[])),
            Verdict::Forward(Kind::Induction)
        );
        // Induction with extensions: cleaned to the fixed part.
        let dirty = hs(5, HS_INDUCTION, &[(EXT_SID, b"abcd".to_vec())]);
        assert_eq!(
            inspect(&dirty),
            Verdict::Rewrite(Kind::Induction, dirty[..64].to_vec())
        );
        // Conclusion with a congestion-control extension (type 6): stripped, SID kept.
        let c = hs(
            5,
            HS_CONCLUSION,
            &[
                (EXT_HSREQ, vec![0; 12]),
                (6, b"live".to_vec()),
                (EXT_SID, b"abcd".to_vec()),
            ],
        );
        let want = hs(
            5,
            HS_CONCLUSION,
            &[(EXT_HSREQ, vec![0; 12]), (EXT_SID, b"abcd".to_vec())],
        );
        assert_eq!(inspect(&c), Verdict::Rewrite(Kind::Handshake, want.clone()));
        assert_eq!(inspect(&want), Verdict::Forward(Kind::Handshake));
        // Truncated extension, bad HSREQ size, bad version, unknown handshake type, short CIF.
        let mut trunc = hs(5, HS_CONCLUSION, &[(EXT_SID, b"abcdefgh".to_vec())]);
        trunc.truncate(trunc.len() - 4);
        assert_eq!(inspect(&trunc), Verdict::Drop(DropReason::BadHandshake));
        assert_eq!(
            inspect(&hs(5, HS_CONCLUSION, &[(EXT_HSREQ, vec![0; 8])])),
            Verdict::Drop(DropReason::BadHandshake)
        );
        assert_eq!(
            inspect(&hs(3, HS_INDUCTION, &[])),
            Verdict::Drop(DropReason::BadHandshake)
        );
        assert_eq!(
            inspect(&hs(5, 77, &[])),
            Verdict::Drop(DropReason::BadHandshake)
        );
        assert_eq!(
            inspect(&hs(5, HS_INDUCTION, &[])[..40]),
            Verdict::Drop(DropReason::BadHandshake)
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        // A cheap always-on complement to the cargo-fuzz target.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 200) as usize;
            let mut buf: Vec<u8> = (0..len)
                .map(|i| (x >> (i % 8 * 8)) as u8 ^ i as u8)
                .collect();
            if len > 0 && x & 1 == 1 {
                buf[0] |= 0x80;
                if len > 1 {
                    buf[1] = 0;
                }
            }
            let _ = inspect(&buf);
        }
    }
}
