//! A minimal SRT caller speaking raw UDP, to see exactly what the listener answers (libsrt's
//! tools print rejection codes only as "Application-defined rejection reason") and to send the
//! malformed packets a hostile peer could send.

use std::{net::UdpSocket, time::Duration};

/// How long to wait for each handshake answer.
pub const SRT_REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// Handshake types on the wire.
pub const HS_INDUCTION: i32 = 1;
pub const HS_CONCLUSION: i32 = -1;

fn header(ctype: u16, subtype: u16, dest: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&(0x8000 | ctype).to_be_bytes());
    p.extend_from_slice(&subtype.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&dest.to_be_bytes());
    p
}

/// A handshake packet: version, extension field, type, our socket ID, cookie, extensions.
pub fn handshake(
    version: u32,
    ext_field: u16,
    hs_type: i32,
    socket_id: u32,
    cookie: u32,
    exts: &[(u16, Vec<u8>)],
) -> Vec<u8> {
    let mut p = header(0, 0, 0);
    p.extend_from_slice(&version.to_be_bytes());
    p.extend_from_slice(&0u16.to_be_bytes()); // encryption field
    p.extend_from_slice(&ext_field.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes()); // initial sequence number
    p.extend_from_slice(&1500u32.to_be_bytes()); // MTU
    p.extend_from_slice(&8192u32.to_be_bytes()); // flow window
    p.extend_from_slice(&hs_type.to_be_bytes());
    p.extend_from_slice(&socket_id.to_be_bytes());
    p.extend_from_slice(&cookie.to_be_bytes());
    p.extend_from_slice(&[1, 0, 0, 127]); // peer IP, as libsrt writes 127.0.0.1
    p.extend_from_slice(&[0; 12]);
    for (ty, body) in exts {
        p.extend_from_slice(&ty.to_be_bytes());
        p.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
        p.extend_from_slice(body);
    }
    p
}

/// HSREQ extension body: SRT 1.5.1, the usual live-mode flags, 120 ms latency both ways.
pub fn hsreq() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0x0001_0501u32.to_be_bytes());
    b.extend_from_slice(&0x3Fu32.to_be_bytes());
    b.extend_from_slice(&((120u32 << 16) | 120).to_be_bytes());
    b
}

/// Stream ID extension body: padded to 4 bytes, each 32-bit word little-endian (SRT quirk).
pub fn sid(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    while !b.len().is_multiple_of(4) {
        b.push(0);
    }
    for w in b.chunks_mut(4) {
        w.reverse();
    }
    b
}

/// A control packet of any type (for hostile tests).
pub fn control(ctype: u16, subtype: u16, dest: u32, cif: &[u8]) -> Vec<u8> {
    let mut p = header(ctype, subtype, dest);
    p.extend_from_slice(cif);
    p
}

/// Handshake type of a reply (bytes 16+20..16+24), if it is a handshake.
pub fn reply_type(p: &[u8]) -> Option<i32> {
    if p.len() < 64 || p[0] & 0x80 == 0 || u16::from_be_bytes([p[0], p[1]]) & 0x7FFF != 0 {
        return None;
    }
    Some(i32::from_be_bytes(p[36..40].try_into().ok()?))
}

fn cookie(p: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(p.get(44..48)?.try_into().ok()?))
}

/// Run induction + conclusion with `stream_id` against `addr`; returns the conclusion
/// reply's handshake type: -1 when accepted, the rejection code (>= 1000) when refused.
pub fn connect(sock: &UdpSocket, addr: &str, stream_id: &str) -> Result<i32, String> {
    let socket_id = 0x0bad_cafe;
    let mut buf = [0u8; 1500];
    let n = induction(sock, addr, socket_id, &mut buf)?;
    let c = cookie(&buf[..n]).ok_or("short induction reply")?;
    let exts = [(1u16, hsreq()), (5u16, sid(stream_id))];
    sock.set_read_timeout(Some(SRT_REPLY_TIMEOUT))
        .map_err(|e| e.to_string())?;
    // Extension field: HSREQ (1) | CONFIG (4).
    sock.send_to(&handshake(5, 5, HS_CONCLUSION, socket_id, c, &exts), addr)
        .map_err(|e| e.to_string())?;
    loop {
        let n = sock
            .recv(&mut buf)
            .map_err(|e| format!("no conclusion reply: {e}"))?;
        if let Some(t) = reply_type(&buf[..n]) {
            return Ok(t);
        }
    }
}

/// Like libsrt, retransmit the induction every 250 ms until answered (UDP may drop it).
/// Returns the reply's length in `buf`.
pub fn induction(
    sock: &UdpSocket,
    addr: &str,
    socket_id: u32,
    buf: &mut [u8],
) -> Result<usize, String> {
    sock.set_read_timeout(Some(INDUCTION_RETRY))
        .map_err(|e| e.to_string())?;
    for _ in 0..INDUCTION_TRIES {
        sock.send_to(&handshake(4, 2, HS_INDUCTION, socket_id, 0, &[]), addr)
            .map_err(|e| e.to_string())?;
        if let Ok(n) = sock.recv(buf) {
            return Ok(n);
        }
    }
    Err("no induction reply".into())
}

/// libsrt's handshake retransmission interval.
const INDUCTION_RETRY: Duration = Duration::from_millis(250);
/// 12 tries: 3 s, libsrt's order of magnitude before it gives up on a connect.
const INDUCTION_TRIES: usize = 12;

/// Sends UDP datagrams with a forged source address (a raw IPv4 socket with our own IP and
/// UDP headers; needs root, as the tests run in CI). What an attacker on the path, or one whose
/// network does not filter spoofed sources, can do: send as a live encoder without receiving
/// anything back.
pub struct Spoofer {
    sock: socket2::Socket,
}

impl Spoofer {
    pub fn new() -> Spoofer {
        // IPPROTO_RAW: we write the IP header ourselves (IP_HDRINCL is implied).
        let sock = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(255)),
        )
        .expect("raw socket (the spoofing tests run as root)");
        Spoofer { sock }
    }

    /// Send `payload` to `to` as if from `from`.
    pub fn send(&self, from: std::net::SocketAddrV4, to: std::net::SocketAddrV4, payload: &[u8]) {
        let udp_len = 8 + payload.len();
        let total = 20 + udp_len;
        let mut p = Vec::with_capacity(total);
        p.extend_from_slice(&[0x45, 0]); // IPv4, header of 5 words; TOS 0
        p.extend_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0]); // ID (the kernel fills it), don't fragment
        p.extend_from_slice(&[64, 17, 0, 0]); // TTL, UDP, checksum (the kernel fills it)
        p.extend_from_slice(&from.ip().octets());
        p.extend_from_slice(&to.ip().octets());
        p.extend_from_slice(&from.port().to_be_bytes());
        p.extend_from_slice(&to.port().to_be_bytes());
        p.extend_from_slice(&(udp_len as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]); // no UDP checksum (allowed over IPv4)
        p.extend_from_slice(payload);
        let dest = socket2::SockAddr::from(std::net::SocketAddr::V4(to));
        self.sock
            .send_to(&p, &dest)
            .expect("send a spoofed datagram");
    }
}
