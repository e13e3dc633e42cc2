//! The SRT handshake relay: pure state machines, no sockets, no clock.
//!
//! SRT is routed on its stream ID, which only arrives in the caller's conclusion. So the
//! balancer answers the caller's induction itself with a stateless SYN cookie ([`on_fresh`] →
//! [`Fresh::Reply`]), reads the stream ID from the conclusion ([`Fresh::Place`]), places the
//! stream, then redoes the handshake with the chosen node as a caller ([`Upstream`]) from one
//! upstream UDP socket per session (libsrt drops packets whose source changes). The node's
//! conclusion answer is forwarded to the caller unchanged, and from then on datagrams go both
//! ways unchanged: the caller talks to the node's socket ID, the node to the caller's (our
//! conclusion to the node carries the caller's socket ID, initial sequence number and
//! extensions, only the cookie and optionally the stream ID differ).
//!
//! Entry points: [`Cookies`], [`on_fresh`] (a datagram from a caller without a session),
//! [`rejection`] (refuse a caller with a code libsrt shows), [`Upstream`] (`start`, then
//! `on_node`, `on_caller`, `on_timer` return [`Step`]s to perform).
//!
//! Every datagram from a caller passes [`crate::srt_guard::inspect`] (the node's own guard):
//! malformed and unknown control packets are dropped, never passed on. Datagrams from the node
//! are trusted (our own ingest node) but parsed with the same bounds checks.
//!
//! Layout (HSv5): a 16-byte header (bit 0x8000 control, type 0 handshake, timestamp at 8..12,
//! destination socket ID at 12..16), then the handshake CIF: version u32, encryption field u16,
//! extension field u16, initial sequence number, MTU, flow window, handshake type i32
//! (1 induction, -1 conclusion, >= 1000 rejection), socket ID, SYN cookie, peer IP (16 bytes),
//! then extension blocks (u16 type, u16 length in 4-byte words, body). The stream ID extension
//! (type 5) is stored as 32-bit little-endian words, zero padded.
//!
//! Caveats: which session a datagram belongs to (a caller restarting from the same address and
//! port included) is [`crate::srt_route`]'s business, not this module's. Encryption is end to
//! end between encoder and node (KMREQ relayed as is).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

// tokio's instant, so a driver on tokio's clock and a test on paused time agree; nothing here
// reads a clock.
use tokio::time::Instant;

use crate::srt_guard::{self, Kind, Verdict, HANDSHAKE_CIF_LEN, HEADER_LEN};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// libsrt retransmits a handshake request every 250 ms; so do we towards the node.
pub const HANDSHAKE_RETRY: Duration = Duration::from_millis(250);
/// Give up on a node that does not complete the handshake: by then the caller (libsrt's default
/// connect timeout is 3 s) has given up too.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Width of a SYN cookie time bucket; a cookie is valid in its bucket and the next one, so a
/// caller has 60 to 120 s between induction and conclusion.
pub const COOKIE_BUCKET_SECS: u64 = 60;
/// SRT caps the stream ID at 512 bytes (libsrt and srt-tokio refuse longer ones).
pub const MAX_STREAM_ID_BYTES: usize = 512;

/// libsrt SRT_REJX_BAD_REQUEST (1400) on the wire: the stream ID cannot be used.
pub const REJECT_BAD_REQUEST: u32 = 2400;
/// libsrt SRT_REJX_OVERLOAD (1402) on the wire: no node can take the stream.
pub const REJECT_OVERLOAD: u32 = 2402;
/// libsrt SRT_REJX_UNAUTHORIZED (1401) on the wire: the node refused the stream key.
pub const REJECT_UNAUTHORIZED: u32 = 2401;
/// libsrt SRT_REJX_FORBIDDEN (1403) on the wire: too many refused keys from this address.
pub const REJECT_FORBIDDEN: u32 = 2403;
/// libsrt SRT_REJX_DOWN (1503) on the wire: the node's auth backend is unavailable.
pub const REJECT_DOWN: u32 = 2503;
/// libsrt SRT_REJX_GW (1502) on the wire: the node behind us did not complete the handshake.
pub const REJECT_BAD_GATEWAY: u32 = 2502;
/// Smallest handshake type that is a rejection (1000 + reason).
const REJECTION_MIN: u32 = 1000;

// Offsets from the start of the packet.
const OFF_TIMESTAMP: usize = 8;
const OFF_DEST: usize = 12;
const OFF_VERSION: usize = HEADER_LEN;
const OFF_ENC: usize = HEADER_LEN + 4;
const OFF_EXT: usize = HEADER_LEN + 6;
const OFF_ISN: usize = HEADER_LEN + 8;
const OFF_MTU: usize = HEADER_LEN + 12;
const OFF_FLOW: usize = HEADER_LEN + 16;
const OFF_TYPE: usize = HEADER_LEN + 20;
const OFF_SOCKET: usize = HEADER_LEN + 24;
const OFF_COOKIE: usize = HEADER_LEN + 28;
const OFF_PEER_IP: usize = HEADER_LEN + 32;
/// Where the extension blocks start.
const HS_LEN: usize = HEADER_LEN + HANDSHAKE_CIF_LEN;

const HS_INDUCTION: u32 = 1;
const HS_CONCLUSION: u32 = 0xFFFF_FFFF;
/// Extension field of an HSv5 induction answer.
const SRT_MAGIC: u16 = 0x4A17;
/// Socket type of an HSv4-style induction request (UDT_DGRAM), as libsrt sends it.
const UDT_DGRAM: u16 = 2;
/// Extension field flag: a config extension (the stream ID) follows.
const EXT_FLAG_CONFIG: u16 = 4;
const EXT_SID: u16 = 5;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}
fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Handshake types are i32 on the wire: rejections are 1000 and up, negatives are phases.
fn is_rejection(hs_type: u32) -> bool {
    (REJECTION_MIN..=i32::MAX.unsigned_abs()).contains(&hs_type)
}

/// The fixed part of a handshake packet, if `pkt` is one.
#[derive(Debug, Clone, Copy)]
struct Hs {
    version: u32,
    hs_type: u32,
    socket_id: u32,
    cookie: u32,
    dest: u32,
}

fn handshake(pkt: &[u8]) -> Option<Hs> {
    if pkt.len() < HS_LEN || be16(pkt, 0)? != 0x8000 {
        return None;
    }
    Some(Hs {
        version: be32(pkt, OFF_VERSION)?,
        hs_type: be32(pkt, OFF_TYPE)?,
        socket_id: be32(pkt, OFF_SOCKET)?,
        cookie: be32(pkt, OFF_COOKIE)?,
        dest: be32(pkt, OFF_DEST)?,
    })
}

/// The extension blocks after the fixed handshake: (type, body range). `None` if malformed.
fn extensions(pkt: &[u8]) -> Option<Vec<(u16, std::ops::Range<usize>)>> {
    let mut at = HS_LEN;
    let mut out = Vec::new();
    while at < pkt.len() {
        let ty = be16(pkt, at)?;
        let len = usize::from(be16(pkt, at + 2)?) * 4;
        let body = at + 4..at + 4 + len;
        if body.end > pkt.len() {
            return None;
        }
        at = body.end;
        out.push((ty, body));
    }
    Some(out)
}

/// A stream ID body: 32-bit little-endian words, zero padded. `None` if not UTF-8.
fn decode_sid(body: &[u8]) -> Option<String> {
    let mut bytes: Vec<u8> = body
        .chunks(4)
        .flat_map(|w| w.iter().rev().copied())
        .collect();
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    String::from_utf8(bytes).ok()
}

pub(crate) fn encode_sid(sid: &str) -> Vec<u8> {
    sid.as_bytes()
        .chunks(4)
        .flat_map(|w| {
            let mut word = [0u8; 4];
            for (d, s) in word.iter_mut().zip(w) {
                *d = *s;
            }
            word.reverse();
            word
        })
        .collect()
}

/// The stream ID of a handshake: `Ok(None)` without one, `Err` if malformed or not UTF-8.
fn stream_id(pkt: &[u8]) -> Result<Option<String>, ()> {
    let exts = extensions(pkt).ok_or(())?;
    match exts.into_iter().find(|(t, _)| *t == EXT_SID) {
        None => Ok(None),
        Some((_, body)) => {
            let body = pkt.get(body).ok_or(())?;
            decode_sid(body).map(Some).ok_or(())
        }
    }
}

/// The peer IP field as libsrt writes it: each 32-bit word of the address little-endian.
fn peer_ip_field(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    let raw: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    for (o, w) in out.chunks_mut(4).zip(raw.chunks(4)) {
        for (d, s) in o.iter_mut().zip(w.iter().rev()) {
            *d = *s;
        }
    }
    out
}

/// Stateless SYN cookies: hash of a secret, the caller's address and a time bucket (accept this
/// and the previous bucket).
pub struct Cookies {
    secret: [u8; 32],
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cookies { .. }")
    }
}

impl Cookies {
    pub fn new(secret: [u8; 32]) -> Self {
        Cookies { secret }
    }

    pub fn secret(&self) -> [u8; 32] {
        self.secret
    }

    fn for_bucket(&self, peer: SocketAddr, bucket: u64) -> u32 {
        let mut h = Sha256::new();
        h.update(b"edge srt cookie v1");
        h.update(self.secret);
        h.update(bucket.to_be_bytes());
        match peer.ip() {
            IpAddr::V4(ip) => {
                h.update([4u8]);
                h.update(ip.octets());
            }
            IpAddr::V6(ip) => {
                h.update([6u8]);
                h.update(ip.octets());
            }
        }
        h.update(peer.port().to_be_bytes());
        let d = h.finalize();
        d.get(..4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_be_bytes)
    }

    pub fn make(&self, peer: SocketAddr, now_secs: u64) -> u32 {
        self.for_bucket(peer, now_secs / COOKIE_BUCKET_SECS)
    }

    pub fn check(&self, peer: SocketAddr, cookie: u32, now_secs: u64) -> bool {
        let bucket = now_secs / COOKIE_BUCKET_SECS;
        let this = self.for_bucket(peer, bucket).ct_eq(&cookie);
        let prev = self
            .for_bucket(peer, bucket.saturating_sub(1))
            .ct_eq(&cookie);
        bool::from(this | prev)
    }
}

/// What to do with a datagram from a caller that has no session yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fresh {
    /// Send this induction answer back to the caller.
    Reply(Vec<u8>),
    /// A conclusion with a valid cookie: place the stream. `stream_id` is empty when the caller
    /// sent none; `conclusion` is the caller's (guard-cleaned) conclusion for [`Upstream::start`]
    /// and [`rejection`].
    Place {
        stream_id: String,
        conclusion: Vec<u8>,
        caller_socket_id: u32,
    },
    /// Ignore it; the reason is a low-cardinality metric label.
    Drop(&'static str),
}

/// A datagram from a caller without a session: answer an induction, accept a conclusion that
/// carries our cookie, drop everything else.
pub fn on_fresh(pkt: &[u8], peer: SocketAddr, cookies: &Cookies, now_secs: u64) -> Fresh {
    let (kind, pkt) = match srt_guard::inspect(pkt) {
        Verdict::Forward(kind) => (kind, pkt.to_vec()),
        Verdict::Rewrite(kind, clean) => (kind, clean),
        Verdict::Drop(reason) => return Fresh::Drop(reason.as_str()),
    };
    let Some(hs) = handshake(&pkt) else {
        return Fresh::Drop("no_session");
    };
    match kind {
        Kind::Induction => match induction_answer(&pkt, peer, cookies.make(peer, now_secs)) {
            Some(r) => Fresh::Reply(r),
            None => Fresh::Drop("bad_handshake"),
        },
        Kind::Handshake => {
            if hs.hs_type != HS_CONCLUSION {
                return Fresh::Drop("not_conclusion");
            }
            // We answered with HSv5; an HSv4 conclusion cannot carry a stream ID.
            if hs.version != 5 {
                return Fresh::Drop("hsv4_conclusion");
            }
            if !cookies.check(peer, hs.cookie, now_secs) {
                return Fresh::Drop("bad_cookie");
            }
            match stream_id(&pkt) {
                Ok(sid) => Fresh::Place {
                    stream_id: sid.unwrap_or_default(),
                    conclusion: pkt,
                    caller_socket_id: hs.socket_id,
                },
                Err(()) => Fresh::Drop("bad_stream_id"),
            }
        }
        Kind::Data | Kind::Control => Fresh::Drop("no_session"),
    }
}

/// Our answer to a caller's induction: HSv5, the SRT magic, our cookie.
fn induction_answer(ind: &[u8], peer: SocketAddr, cookie: u32) -> Option<Vec<u8>> {
    let hs = handshake(ind)?;
    let mut out = vec![0u8; HS_LEN];
    put16(&mut out, 0, 0x8000);
    out.get_mut(OFF_TIMESTAMP..OFF_TIMESTAMP + 4)?
        .copy_from_slice(ind.get(OFF_TIMESTAMP..OFF_TIMESTAMP + 4)?);
    put32(&mut out, OFF_DEST, hs.socket_id);
    put32(&mut out, OFF_VERSION, 5);
    put16(&mut out, OFF_ENC, 0);
    put16(&mut out, OFF_EXT, SRT_MAGIC);
    put32(&mut out, OFF_ISN, be32(ind, OFF_ISN)?);
    put32(&mut out, OFF_MTU, be32(ind, OFF_MTU)?);
    put32(&mut out, OFF_FLOW, be32(ind, OFF_FLOW)?);
    put32(&mut out, OFF_TYPE, HS_INDUCTION);
    // Callers only keep the socket ID of the conclusion answer (the node's); any non-zero
    // SRT-style (30-bit) ID does here.
    put32(&mut out, OFF_SOCKET, (cookie & 0x3FFF_FFFF).max(1));
    put32(&mut out, OFF_COOKIE, cookie);
    out.get_mut(OFF_PEER_IP..HS_LEN)?
        .copy_from_slice(&peer_ip_field(peer.ip()));
    Some(out)
}

/// A handshake rejection answer to the caller's conclusion, with `code` on the wire as libsrt
/// expects (1000 + reason, e.g. 2402 = libsrt's 1402 SRT_REJX_OVERLOAD), so libsrt shows the
/// reason. `None` if `conclusion` is not a handshake or `code` is below 1000.
pub fn rejection(conclusion: &[u8], code: u32) -> Option<Vec<u8>> {
    let hs = handshake(conclusion)?;
    if code < REJECTION_MIN {
        return None;
    }
    let mut out = conclusion.get(..HS_LEN)?.to_vec();
    put32(&mut out, OFF_DEST, hs.socket_id);
    put32(&mut out, OFF_VERSION, 5);
    put16(&mut out, OFF_ENC, 0);
    put16(&mut out, OFF_EXT, 0);
    put32(&mut out, OFF_TYPE, code);
    put32(&mut out, OFF_SOCKET, 0);
    Some(out)
}

/// The induction we send the node: an HSv4-style request (as libsrt callers send) carrying the
/// caller's socket ID and initial sequence number, so the node answers for the caller.
fn induction_for_node(conclusion: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; HS_LEN];
    put16(&mut out, 0, 0x8000);
    put32(&mut out, OFF_VERSION, 4);
    put16(&mut out, OFF_EXT, UDT_DGRAM);
    for off in [OFF_ISN, OFF_MTU, OFF_FLOW, OFF_SOCKET] {
        put32(&mut out, off, be32(conclusion, off).unwrap_or(0));
    }
    put32(&mut out, OFF_TYPE, HS_INDUCTION);
    if let (Some(dst), Some(src)) = (
        out.get_mut(OFF_PEER_IP..HS_LEN),
        conclusion.get(OFF_PEER_IP..HS_LEN),
    ) {
        dst.copy_from_slice(src);
    }
    out
}

/// The caller's conclusion with the node's cookie and the stream ID to send the node.
/// `None` if the conclusion is malformed.
fn conclusion_for_node(conclusion: &[u8], cookie: u32, sid: Option<&str>) -> Option<Vec<u8>> {
    let exts = extensions(conclusion)?;
    let original = match exts.iter().find(|(t, _)| *t == EXT_SID) {
        Some((_, body)) => Some(decode_sid(conclusion.get(body.clone())?)?),
        None => None,
    };
    let sid = sid
        .map(str::to_owned)
        .or(original)
        .filter(|s| !s.is_empty());
    let mut out = conclusion.get(..HS_LEN)?.to_vec();
    put32(&mut out, OFF_DEST, 0);
    put32(&mut out, OFF_COOKIE, cookie);
    let mut sid_block = sid.as_deref().map(|s| {
        let body = encode_sid(s);
        let mut b = Vec::with_capacity(4 + body.len());
        b.extend_from_slice(&EXT_SID.to_be_bytes());
        b.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
        b.extend_from_slice(&body);
        b
    });
    for (ty, body) in exts {
        if ty == EXT_SID {
            // The stream ID goes where the caller had it; other copies are dropped.
            if let Some(b) = sid_block.take() {
                out.extend_from_slice(&b);
            }
            continue;
        }
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
        out.extend_from_slice(conclusion.get(body)?);
    }
    if let Some(b) = sid_block {
        out.extend_from_slice(&b);
    }
    let flags = be16(&out, OFF_EXT)?;
    let flags = if sid.is_some() {
        flags | EXT_FLAG_CONFIG
    } else {
        flags & !EXT_FLAG_CONFIG
    };
    put16(&mut out, OFF_EXT, flags);
    Some(out)
}

/// Something for the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this datagram to the node (from the session's upstream socket).
    ToNode(Vec<u8>),
    /// Send this datagram to the caller (from the front socket).
    ToCaller(Vec<u8>),
    /// The node accepted: the session now relays.
    Established,
    /// The handshake failed with this wire code (the node's rejection, [`REJECT_BAD_GATEWAY`]
    /// after [`HANDSHAKE_TIMEOUT`], [`REJECT_BAD_REQUEST`] for an unusable conclusion or stream
    /// ID). The driver answers the caller with [`rejection`] (or tries another node) and ends
    /// the session; the relay does nothing more.
    Rejected(u32),
    /// Nothing to do (the functions return an empty list instead; kept for drivers' matches).
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Our induction is out; waiting for the node's cookie.
    Induction,
    /// Our conclusion is out; waiting for the node's answer.
    Conclusion,
    /// Relaying; `answer` is the node's conclusion answer, replayed to caller retransmits.
    Established { answer: Vec<u8> },
    /// Failed before any exchange; reported as `Rejected(code)` at the next call.
    Failing(u32),
    /// Over (rejected or timed out).
    Closed,
}

/// An established session's relay state, to resume it in another process.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exported {
    /// The caller's conclusion (for rejections and the caller's socket ID).
    pub conclusion: Vec<u8>,
    /// The node's answer to our conclusion, replayed to caller retransmits.
    pub answer: Vec<u8>,
    pub caller_socket_id: u32,
}

/// The per-session relay towards one node.
#[derive(Debug)]
pub struct Upstream {
    /// The caller's conclusion, as [`on_fresh`] returned it.
    conclusion: Vec<u8>,
    sid: Option<String>,
    caller_socket_id: u32,
    phase: Phase,
    started: Instant,
    last_sent: Instant,
    /// The request to retransmit during the handshake.
    request: Vec<u8>,
}

impl Upstream {
    /// Start the handshake with the node: returns the induction to send it (from the session's
    /// own upstream socket). `stream_id_for_node` replaces the caller's stream ID (e.g. to add
    /// ",edge-res=ID"); one longer than [`MAX_STREAM_ID_BYTES`], or a conclusion that is not a
    /// valid handshake, makes the next call report `Rejected(REJECT_BAD_REQUEST)`.
    pub fn start(
        conclusion: Vec<u8>,
        stream_id_for_node: Option<String>,
        now: Instant,
    ) -> (Self, Vec<u8>) {
        let hs = handshake(&conclusion);
        let sid_ok = stream_id_for_node
            .as_ref()
            .is_none_or(|s| s.len() <= MAX_STREAM_ID_BYTES);
        let valid = hs.is_some_and(|h| h.version == 5 && h.hs_type == HS_CONCLUSION)
            && stream_id(&conclusion).is_ok();
        let request = induction_for_node(&conclusion);
        let up = Upstream {
            caller_socket_id: hs.map_or(0, |h| h.socket_id),
            conclusion,
            sid: stream_id_for_node,
            phase: if valid && sid_ok {
                Phase::Induction
            } else {
                Phase::Failing(REJECT_BAD_REQUEST)
            },
            started: now,
            last_sent: now,
            request: request.clone(),
        };
        (up, request)
    }

    /// The caller's conclusion this session started from (for [`rejection`]).
    pub fn conclusion(&self) -> &[u8] {
        &self.conclusion
    }

    /// What an established relay is (`None` while handshaking or closed).
    pub fn export(&self) -> Option<Exported> {
        match &self.phase {
            Phase::Established { answer } => Some(Exported {
                conclusion: self.conclusion.clone(),
                answer: answer.clone(),
                caller_socket_id: self.caller_socket_id,
            }),
            _ => None,
        }
    }

    /// An established relay from [`Upstream::export`].
    pub fn resume(e: Exported, now: Instant) -> Self {
        Upstream {
            conclusion: e.conclusion,
            sid: None,
            caller_socket_id: e.caller_socket_id,
            phase: Phase::Established { answer: e.answer },
            started: now,
            last_sent: now,
            request: Vec::new(),
        }
    }

    pub fn established(&self) -> bool {
        matches!(self.phase, Phase::Established { .. })
    }

    /// When [`Upstream::on_timer`] has something to do next, if anything.
    pub fn next_timer(&self) -> Option<Instant> {
        match self.phase {
            Phase::Induction | Phase::Conclusion => {
                Some((self.last_sent + HANDSHAKE_RETRY).min(self.started + HANDSHAKE_TIMEOUT))
            }
            Phase::Failing(_) => Some(self.started),
            Phase::Established { .. } | Phase::Closed => None,
        }
    }

    fn fail(&mut self, code: u32) -> Vec<Step> {
        self.phase = Phase::Closed;
        vec![Step::Rejected(code)]
    }

    /// A datagram from the node. Handshake phase: the node's induction answer → our conclusion
    /// (the caller's conclusion with the node's cookie and, if given, the replaced SID) →
    /// ToNode; the node's conclusion answer → ToCaller (forwarded) + Established; a rejection →
    /// Rejected(code) (the driver answers the caller with [`rejection`]). Established: forward
    /// ToCaller unchanged.
    pub fn on_node(&mut self, pkt: &[u8], now: Instant) -> Vec<Step> {
        match &self.phase {
            Phase::Established { .. } => return vec![Step::ToCaller(pkt.to_vec())],
            Phase::Failing(code) => {
                let code = *code;
                return self.fail(code);
            }
            Phase::Closed => return Vec::new(),
            Phase::Induction | Phase::Conclusion => {}
        }
        // Only handshakes addressed to the caller's socket ID matter before we are established.
        let Some(hs) = handshake(pkt).filter(|h| h.dest == self.caller_socket_id) else {
            return Vec::new();
        };
        if is_rejection(hs.hs_type) {
            return self.fail(hs.hs_type);
        }
        match (&self.phase, hs.hs_type) {
            (Phase::Induction, HS_INDUCTION) if hs.version == 5 => {
                let Some(c) = conclusion_for_node(&self.conclusion, hs.cookie, self.sid.as_deref())
                else {
                    return self.fail(REJECT_BAD_REQUEST);
                };
                self.phase = Phase::Conclusion;
                self.request = c.clone();
                self.last_sent = now;
                vec![Step::ToNode(c)]
            }
            (Phase::Conclusion, HS_CONCLUSION) if hs.version == 5 => {
                self.phase = Phase::Established {
                    answer: pkt.to_vec(),
                };
                vec![Step::ToCaller(pkt.to_vec()), Step::Established]
            }
            _ => Vec::new(),
        }
    }

    /// A datagram from the caller. During the handshake a retransmitted conclusion is answered
    /// from the node's cached answer if we have it, else ignored; established: ToNode unchanged
    /// (after the guard; a cleaned copy when the guard rewrote it).
    pub fn on_caller(&mut self, pkt: &[u8], _now: Instant) -> Vec<Step> {
        let (kind, pkt) = match srt_guard::inspect(pkt) {
            Verdict::Forward(kind) => (kind, pkt.to_vec()),
            Verdict::Rewrite(kind, clean) => (kind, clean),
            Verdict::Drop(_) => return Vec::new(),
        };
        match (&self.phase, kind) {
            (Phase::Established { answer }, Kind::Handshake) => {
                // A conclusion retransmitted because our answer was lost: replay it. Other
                // handshakes have no business in an established session.
                match handshake(&pkt) {
                    Some(hs) if hs.hs_type == HS_CONCLUSION => vec![Step::ToCaller(answer.clone())],
                    _ => Vec::new(),
                }
            }
            (Phase::Established { .. }, Kind::Induction) => Vec::new(),
            (Phase::Established { .. }, Kind::Data | Kind::Control) => vec![Step::ToNode(pkt)],
            (Phase::Failing(code), _) => {
                let code = *code;
                self.fail(code)
            }
            _ => Vec::new(),
        }
    }

    /// Retransmit our induction/conclusion to the node if no answer for [`HANDSHAKE_RETRY`]
    /// (libsrt: 250 ms); give up after [`HANDSHAKE_TIMEOUT`] with
    /// `Rejected(REJECT_BAD_GATEWAY)`.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Step> {
        match &self.phase {
            Phase::Failing(code) => {
                let code = *code;
                self.fail(code)
            }
            Phase::Induction | Phase::Conclusion => {
                if now.saturating_duration_since(self.started) >= HANDSHAKE_TIMEOUT {
                    return self.fail(REJECT_BAD_GATEWAY);
                }
                if now.saturating_duration_since(self.last_sent) >= HANDSHAKE_RETRY {
                    self.last_sent = now;
                    return vec![Step::ToNode(self.request.clone())];
                }
                Vec::new()
            }
            Phase::Established { .. } | Phase::Closed => Vec::new(),
        }
    }
}

#[cfg(test)]
#[path = "srt_relay_test.rs"]
mod tests;

#[cfg(test)]
#[path = "srt_packets_test.rs"]
pub(crate) mod test_packets;
