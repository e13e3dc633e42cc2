//! PROXY protocol version 2 (HAProxy's spec, section 2.2): the binary header the balancer sends
//! to a node before relaying an encoder's TCP bytes, so the node knows the encoder's real
//! address. We also carry the balancer's reservation ID in a custom TLV
//! ([`TLV_RESERVATION`]), so the node can match the connection to the capacity it promised.
//!
//! [`encode`] builds a header; [`decode`] parses one from the start of a buffer and says how
//! many bytes it used, or that more bytes are needed. Pure; fuzzed by `fuzz_targets/proxy.rs`.

use std::net::{IpAddr, SocketAddr};

/// The 12-byte v2 signature.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Custom TLV (0xE0-0xEF are reserved for applications): u64 big-endian reservation ID.
pub const TLV_RESERVATION: u8 = 0xE0;
/// Largest header we accept: addresses plus a few TLVs. The format allows 64 KiB; nothing we
/// send comes close, and a peer that claims more is not our balancer.
pub const MAX_HEADER: usize = 16 + 216 + 512;

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// `None` for the LOCAL command (a health check from the proxy itself) or an unspecified
    /// family.
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    /// Our reservation TLV, if present.
    pub reservation: Option<u64>,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes do not start with the v2 signature.
    #[error("not a PROXY v2 header")]
    NoSignature,
    /// Version other than 2, or a command other than LOCAL/PROXY.
    #[error("unsupported PROXY version or command")]
    BadVersion,
    /// The declared length is larger than [`MAX_HEADER`] or too small for its family.
    #[error("bad PROXY header length")]
    BadLength,
    /// A TLV runs past the end of the header, or our TLV has the wrong size.
    #[error("malformed PROXY TLV")]
    BadTlv,
}

/// Outcome of [`decode`] on a prefix of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// More bytes are needed (at least this many in total).
    Incomplete(usize),
    /// A header, and how many bytes it took.
    Header(Header, usize),
}

/// Build a PROXY v2 header for a TCP connection from `source` to `destination`.
pub fn encode(source: SocketAddr, destination: SocketAddr, reservation: Option<u64>) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(0x21); // version 2, PROXY
    let mut body = Vec::with_capacity(64);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11); // TCP over IPv4
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push(0x21); // TCP over IPv6 (IPv4 addresses mapped when the families differ)
            body.extend_from_slice(&to_v6(s).octets());
            body.extend_from_slice(&to_v6(d).octets());
        }
    }
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&destination.port().to_be_bytes());
    if let Some(id) = reservation {
        body.push(TLV_RESERVATION);
        body.extend_from_slice(&8u16.to_be_bytes());
        body.extend_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Parse a header from the start of `buf`.
pub fn decode(buf: &[u8]) -> Result<Decoded, ProxyError> {
    let sig_len = buf.len().min(SIGNATURE.len());
    if buf[..sig_len] != SIGNATURE[..sig_len] {
        return Err(ProxyError::NoSignature);
    }
    if buf.len() < 16 {
        return Ok(Decoded::Incomplete(16));
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 || (ver_cmd & 0x0F) > 1 {
        return Err(ProxyError::BadVersion);
    }
    let local = ver_cmd & 0x0F == 0;
    let fam = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if 16 + len > MAX_HEADER {
        return Err(ProxyError::BadLength);
    }
    if buf.len() < 16 + len {
        return Ok(Decoded::Incomplete(16 + len));
    }
    let body = &buf[16..16 + len];
    let (addrs, rest) = match fam >> 4 {
        1 if body.len() >= 12 => {
            let ip = |o: usize| IpAddr::from([body[o], body[o + 1], body[o + 2], body[o + 3]]);
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            (
                Some((
                    SocketAddr::new(ip(0), port(8)),
                    SocketAddr::new(ip(4), port(10)),
                )),
                &body[12..],
            )
        }
        2 if body.len() >= 36 => {
            let ip = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&body[o..o + 16]);
                IpAddr::from(a)
            };
            let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
            (
                Some((
                    SocketAddr::new(ip(0), port(32)),
                    SocketAddr::new(ip(16), port(34)),
                )),
                &body[36..],
            )
        }
        1 | 2 => return Err(ProxyError::BadLength),
        // AF_UNSPEC, AF_UNIX: no usable address; skip the block.
        _ => (None, &body[body.len()..]),
    };
    let mut reservation = None;
    let mut t = rest;
    while !t.is_empty() {
        if t.len() < 3 {
            return Err(ProxyError::BadTlv);
        }
        let ty = t[0];
        let l = usize::from(u16::from_be_bytes([t[1], t[2]]));
        let v = t.get(3..3 + l).ok_or(ProxyError::BadTlv)?;
        if ty == TLV_RESERVATION {
            let bytes: [u8; 8] = v.try_into().map_err(|_| ProxyError::BadTlv)?;
            reservation = Some(u64::from_be_bytes(bytes));
        }
        t = &t[3 + l..];
    }
    let (source, destination) = match (local, addrs) {
        (false, Some((s, d))) => (Some(s), Some(d)),
        _ => (None, None),
    };
    Ok(Decoded::Header(
        Header {
            source,
            destination,
            reservation,
        },
        16 + len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_v4_v6_with_reservation() {
        let s: SocketAddr = "192.0.2.7:50000".parse().unwrap();
        let d: SocketAddr = "10.1.2.3:1935".parse().unwrap();
        let h = encode(s, d, Some(42));
        assert_eq!(&h[..12], &SIGNATURE);
        let Decoded::Header(p, used) = decode(&h).unwrap() else {
            panic!("incomplete")
        };
        assert_eq!(used, h.len());
        assert_eq!(
            p,
            Header {
                source: Some(s),
                destination: Some(d),
                reservation: Some(42)
            }
        );
        let s6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        let h = encode(s6, d, None);
        let Decoded::Header(p, _) = decode(&h).unwrap() else {
            panic!()
        };
        assert_eq!(p.source, Some(s6));
        assert_eq!(p.destination.map(|a| a.port()), Some(1935));
    }

    #[test]
    fn partial_and_bad_input() {
        let h = encode(
            "1.2.3.4:5".parse().unwrap(),
            "5.6.7.8:9".parse().unwrap(),
            Some(1),
        );
        for cut in 0..h.len() {
            assert!(
                matches!(decode(&h[..cut]), Ok(Decoded::Incomplete(_))),
                "cut at {cut}"
            );
        }
        // Trailing stream bytes are not part of the header.
        let mut more = h.clone();
        more.extend_from_slice(b"\x03rtmp");
        assert!(matches!(decode(&more), Ok(Decoded::Header(_, n)) if n == h.len()));
        assert_eq!(decode(b"\x03\x00\x00"), Err(ProxyError::NoSignature));
        let mut v1 = h.clone();
        v1[12] = 0x11;
        assert_eq!(decode(&v1), Err(ProxyError::BadVersion));
        let mut huge = h.clone();
        huge[14] = 0xFF;
        assert_eq!(decode(&huge), Err(ProxyError::BadLength));
        let mut bad_tlv = h.clone();
        let n = bad_tlv.len();
        bad_tlv[n - 9] = 0x09; // TLV length 9 runs past the end
        assert_eq!(decode(&bad_tlv), Err(ProxyError::BadTlv));
        // LOCAL command: no addresses.
        let mut local = h;
        local[12] = 0x20;
        assert!(matches!(
            decode(&local),
            Ok(Decoded::Header(Header { source: None, .. }, _))
        ));
    }
}
