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
//! Every datagram from a caller passes [`wire::srt_guard::inspect`] (the node's own guard):
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
//! Caveats: a caller that restarts from the same address and port while its session lives is
//! not recognised here (its induction is ignored); the driver's idle timeout ends the old
//! session first. Encryption is end to end between encoder and node (KMREQ relayed as is).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use wire::srt_guard::{self, Kind, Verdict, HANDSHAKE_CIF_LEN, HEADER_LEN};

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
fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}
fn put32(b: &mut [u8], at: usize, v: u32) {
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

fn encode_sid(sid: &str) -> Vec<u8> {
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
mod tests {
    use super::*;
    use srt_protocol::packet::{ControlTypes, Packet, RejectReason, ServerRejectReason, ShakeType};

    const CALLER: u32 = 0x0123_4567;
    const NODE: u32 = 0x0765_4321;

    fn peer() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    /// A handshake packet: fixed part with these fields, then extension blocks.
    fn hs(
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

    fn hsreq() -> (u16, Vec<u8>) {
        // SRT version 1.3.0, flags (TSBPD snd/rcv, TLPKTDROP, NAKREPORT, REXMITFLG), 120 ms both ways.
        let mut b = vec![0, 1, 3, 0, 0, 0, 0, 0xBF, 0, 120, 0, 120];
        b.truncate(12);
        (1, b)
    }

    fn conclusion(cookie: u32, sid: Option<&str>) -> Vec<u8> {
        let mut exts = vec![hsreq()];
        let mut flags = 1;
        if let Some(s) = sid {
            exts.push((EXT_SID, encode_sid(s)));
            flags |= EXT_FLAG_CONFIG;
        }
        hs(5, flags, HS_CONCLUSION, CALLER, cookie, 0, &exts)
    }

    fn parse(pkt: &[u8]) -> Packet {
        Packet::parse(&mut std::io::Cursor::new(pkt), false).expect("srt-protocol parses it")
    }

    fn shake(pkt: &[u8]) -> srt_protocol::packet::HandshakeControlInfo {
        match parse(pkt) {
            Packet::Control(c) => match c.control_type {
                ControlTypes::Handshake(h) => h,
                other => panic!("not a handshake: {other:?}"),
            },
            other => panic!("not control: {other:?}"),
        }
    }

    #[test]
    fn cookies_are_valid_for_this_and_the_previous_bucket_only() {
        let c = Cookies::new([9; 32]);
        let t = 1_000_000 * COOKIE_BUCKET_SECS + 5;
        let k = c.make(peer(), t);
        assert!(c.check(peer(), k, t));
        assert!(
            c.check(peer(), k, t + COOKIE_BUCKET_SECS - 6),
            "same bucket"
        );
        assert!(c.check(peer(), k, t + COOKIE_BUCKET_SECS), "next bucket");
        assert!(
            !c.check(peer(), k, t + 2 * COOKIE_BUCKET_SECS),
            "two buckets later"
        );
        assert!(
            !c.check(peer(), k, t - COOKIE_BUCKET_SECS),
            "from the future"
        );
        assert!(
            !c.check("127.0.0.1:40001".parse().unwrap(), k, t),
            "other port"
        );
        assert!(
            !c.check("127.0.0.2:40000".parse().unwrap(), k, t),
            "other ip"
        );
        assert!(
            !c.check("[::1]:40000".parse().unwrap(), k, t),
            "other family"
        );
        assert!(!Cookies::new([8; 32]).check(peer(), k, t), "other secret");
        assert!(!c.check(peer(), k ^ 1, t));
        // The first buckets do not underflow.
        assert!(c.check(peer(), c.make(peer(), 0), 0));
        assert_ne!(c.make(peer(), t), c.make(peer(), t + COOKIE_BUCKET_SECS));
    }

    #[test]
    fn induction_answer_layout() {
        let c = Cookies::new([1; 32]);
        // As libsrt and srt-tokio send it: HSv4, UDT_DGRAM, cookie 0.
        let ind = hs(4, UDT_DGRAM, HS_INDUCTION, CALLER, 0, 0, &[]);
        let Fresh::Reply(r) = on_fresh(&ind, peer(), &c, 100) else {
            panic!("no reply")
        };
        assert_eq!(r.len(), 64);
        assert_eq!(be16(&r, 0), Some(0x8000));
        assert_eq!(be32(&r, OFF_TIMESTAMP), Some(1234));
        assert_eq!(be32(&r, OFF_DEST), Some(CALLER));
        assert_eq!(be32(&r, OFF_VERSION), Some(5));
        assert_eq!(be16(&r, OFF_ENC), Some(0));
        assert_eq!(be16(&r, OFF_EXT), Some(0x4A17));
        assert_eq!(
            (be32(&r, OFF_ISN), be32(&r, OFF_MTU), be32(&r, OFF_FLOW)),
            (Some(777), Some(1500), Some(8192))
        );
        assert_eq!(be32(&r, OFF_TYPE), Some(1));
        assert_eq!(be32(&r, OFF_COOKIE), Some(c.make(peer(), 100)));
        assert_ne!(be32(&r, OFF_SOCKET), Some(0));
        assert_eq!(
            &r[OFF_PEER_IP..HS_LEN],
            &[1, 0, 0, 127, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        // srt-tokio reads it as an HSv5 induction with our cookie and the caller's address.
        let h = shake(&r);
        assert_eq!(h.shake_type, ShakeType::Induction);
        assert_eq!(h.info.version(), 5);
        assert_eq!(h.syn_cookie as u32, c.make(peer(), 100));
        assert_eq!(h.peer_addr, IpAddr::from([127, 0, 0, 1]));
        // An induction with extensions is answered from its cleaned copy.
        let dirty = hs(
            5,
            0,
            HS_INDUCTION,
            CALLER,
            0,
            0,
            &[(EXT_SID, b"abcd".to_vec())],
        );
        assert_eq!(on_fresh(&dirty, peer(), &c, 100), Fresh::Reply(r));
    }

    #[test]
    fn conclusions_need_our_cookie_and_carry_the_stream_id() {
        let c = Cookies::new([1; 32]);
        let k = c.make(peer(), 100);
        let sid = "#!::r=live/KEY,m=publish";
        let good = conclusion(k, Some(sid));
        assert_eq!(
            on_fresh(&good, peer(), &c, 130),
            Fresh::Place {
                stream_id: sid.into(),
                conclusion: good.clone(),
                caller_socket_id: CALLER
            }
        );
        assert_eq!(
            on_fresh(&conclusion(k ^ 0x10, Some(sid)), peer(), &c, 130),
            Fresh::Drop("bad_cookie")
        );
        assert_eq!(
            on_fresh(&good, "10.0.0.1:40000".parse().unwrap(), &c, 130),
            Fresh::Drop("bad_cookie")
        );
        assert_eq!(
            on_fresh(&good, peer(), &c, 100 + 3 * COOKIE_BUCKET_SECS),
            Fresh::Drop("bad_cookie")
        );
        // No stream ID: placed with an empty one (the driver refuses it with a readable code).
        assert!(
            matches!(on_fresh(&conclusion(k, None), peer(), &c, 100), Fresh::Place { stream_id, .. } if stream_id.is_empty())
        );
        // Not UTF-8.
        let bad = hs(
            5,
            5,
            HS_CONCLUSION,
            CALLER,
            k,
            0,
            &[hsreq(), (EXT_SID, vec![0xff, 0xfe, 0x41, 0x41])],
        );
        assert_eq!(
            on_fresh(&bad, peer(), &c, 100),
            Fresh::Drop("bad_stream_id")
        );
        // HSv4 conclusion, agreement, data and control without a session, guard drops.
        assert_eq!(
            on_fresh(&hs(4, 2, HS_CONCLUSION, CALLER, k, 0, &[]), peer(), &c, 100),
            Fresh::Drop("hsv4_conclusion")
        );
        assert_eq!(
            on_fresh(
                &hs(5, 0, HS_CONCLUSION - 1, CALLER, k, 0, &[]),
                peer(),
                &c,
                100
            ),
            Fresh::Drop("not_conclusion")
        );
        assert_eq!(
            on_fresh(&[0u8; 100], peer(), &c, 100),
            Fresh::Drop("no_session")
        );
        let mut keepalive = vec![0u8; 16];
        keepalive[0..2].copy_from_slice(&0x8001u16.to_be_bytes());
        assert_eq!(
            on_fresh(&keepalive, peer(), &c, 100),
            Fresh::Drop("no_session")
        );
        let mut cgwarn = vec![0u8; 16];
        cgwarn[0..2].copy_from_slice(&0x8004u16.to_be_bytes());
        assert_eq!(
            on_fresh(&cgwarn, peer(), &c, 100),
            Fresh::Drop("unsupported_control")
        );
        assert_eq!(
            on_fresh(&good[..70], peer(), &c, 100),
            Fresh::Drop("bad_handshake")
        );
        // An unknown extension (congestion control) is stripped before we keep the conclusion.
        let dirty = hs(
            5,
            5,
            HS_CONCLUSION,
            CALLER,
            k,
            0,
            &[hsreq(), (6, b"evil".to_vec()), (EXT_SID, encode_sid(sid))],
        );
        let clean = hs(
            5,
            5,
            HS_CONCLUSION,
            CALLER,
            k,
            0,
            &[hsreq(), (EXT_SID, encode_sid(sid))],
        );
        assert!(
            matches!(on_fresh(&dirty, peer(), &c, 100), Fresh::Place { conclusion, .. } if conclusion == clean)
        );
    }

    #[test]
    fn stream_id_is_stored_as_little_endian_words() {
        // From srt-protocol's own test vector: "abcdefghij" in three words.
        let body = [
            0x64, 0x63, 0x62, 0x61, 0x68, 0x67, 0x66, 0x65, 0x00, 0x00, 0x6a, 0x69,
        ];
        assert_eq!(decode_sid(&body).as_deref(), Some("abcdefghij"));
        assert_eq!(encode_sid("abcdefghij"), body);
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "#!::r=live/KEY,m=publish",
            "ключ",
        ] {
            let e = encode_sid(s);
            assert_eq!(e.len() % 4, 0);
            assert_eq!(e.len(), s.len().div_ceil(4) * 4);
            assert_eq!(decode_sid(&e).as_deref(), Some(s));
        }
        assert_eq!(decode_sid(&[0xC3, 0x28, 0, 0]), None);
    }

    #[test]
    fn rejection_layout_and_code() {
        let c = conclusion(55, Some("x"));
        let r = rejection(&c, REJECT_OVERLOAD).expect("a rejection");
        assert_eq!(r.len(), 64, "no extensions");
        assert_eq!(be16(&r, 0), Some(0x8000));
        assert_eq!(be32(&r, OFF_DEST), Some(CALLER));
        assert_eq!(be32(&r, OFF_VERSION), Some(5));
        assert_eq!(be32(&r, OFF_TYPE), Some(2402));
        assert_eq!(be32(&r, OFF_ISN), Some(777));
        let h = shake(&r);
        assert_eq!(
            h.shake_type,
            ShakeType::Rejection(RejectReason::Server(ServerRejectReason::Overload))
        );
        assert_eq!(rejection(&c, 999), None);
        assert_eq!(rejection(&c[..40], 2402), None);
        assert_eq!(
            rejection(&[0u8; 64], 2402),
            None,
            "a data packet is not a conclusion"
        );
    }

    /// What a node (srt-tokio or libsrt listener) answers.
    fn node_induction_answer(cookie: u32) -> Vec<u8> {
        hs(5, SRT_MAGIC, HS_INDUCTION, NODE, cookie, CALLER, &[])
    }
    fn node_conclusion_answer() -> Vec<u8> {
        let (_, mut hsrsp) = hsreq();
        hsrsp.truncate(12);
        hs(5, 1, HS_CONCLUSION, NODE, 0, CALLER, &[(2, hsrsp)])
    }

    #[test]
    fn upstream_handshake_and_relay() {
        let t0 = Instant::now();
        let sid = "#!::r=live/KEY,m=publish";
        let caller_conclusion = conclusion(42, Some(sid));
        let (mut up, ind) = Upstream::start(
            caller_conclusion.clone(),
            Some(format!("{sid},edge-res=7")),
            t0,
        );
        // The induction: HSv4 request for the caller's socket, cookie 0.
        assert_eq!(be32(&ind, OFF_VERSION), Some(4));
        assert_eq!(be16(&ind, OFF_EXT), Some(UDT_DGRAM));
        assert_eq!(be32(&ind, OFF_TYPE), Some(HS_INDUCTION));
        assert_eq!(be32(&ind, OFF_SOCKET), Some(CALLER));
        assert_eq!(be32(&ind, OFF_COOKIE), Some(0));
        assert_eq!(be32(&ind, OFF_ISN), Some(777));
        assert_eq!(srt_guard::inspect(&ind), Verdict::Forward(Kind::Induction));
        assert!(!up.established());

        // Nothing for the node's answer addressed to another socket.
        let mut stray = node_induction_answer(0xC00C1E);
        put32(&mut stray, OFF_DEST, 1);
        assert!(up.on_node(&stray, t0).is_empty());
        // Caller retransmits before we have an answer: ignored.
        assert!(up.on_caller(&caller_conclusion, t0).is_empty());

        let steps = up.on_node(
            &node_induction_answer(0xC00C1E),
            t0 + Duration::from_millis(5),
        );
        let [Step::ToNode(c)] = steps.as_slice() else {
            panic!("{steps:?}")
        };
        assert_eq!(be32(c, OFF_COOKIE), Some(0xC00C1E));
        assert_eq!(be32(c, OFF_DEST), Some(0));
        assert_eq!(be32(c, OFF_SOCKET), Some(CALLER));
        assert_eq!(be32(c, OFF_TYPE), Some(HS_CONCLUSION));
        assert_eq!(stream_id(c), Ok(Some(format!("{sid},edge-res=7"))));
        assert_eq!(be16(c, OFF_EXT), Some(1 | EXT_FLAG_CONFIG));
        // The caller's HSREQ goes through unchanged; the node's guard and srt-tokio accept it.
        assert_eq!(
            &c[HS_LEN..HS_LEN + 16],
            &caller_conclusion[HS_LEN..HS_LEN + 16]
        );
        assert_eq!(srt_guard::inspect(c), Verdict::Forward(Kind::Handshake));
        let h = shake(c);
        assert_eq!(h.shake_type, ShakeType::Conclusion);

        // Retransmits every 250 ms until the answer.
        assert!(up.on_timer(t0 + Duration::from_millis(200)).is_empty());
        assert_eq!(
            up.on_timer(t0 + Duration::from_millis(260)),
            vec![Step::ToNode(c.clone())]
        );
        assert_eq!(up.next_timer(), Some(t0 + Duration::from_millis(510)));

        let answer = node_conclusion_answer();
        assert_eq!(
            up.on_node(&answer, t0 + Duration::from_millis(300)),
            vec![Step::ToCaller(answer.clone()), Step::Established]
        );
        assert!(up.established());
        assert_eq!(up.next_timer(), None);
        assert!(
            up.on_timer(t0 + Duration::from_secs(10)).is_empty(),
            "established never times out here"
        );

        // Relaying, unchanged both ways; the guard drops what would crash the node.
        let data = [
            0x00, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 9, 0x07, 0x65, 0x43, 0x21, 0xAA, 0xBB,
        ];
        assert_eq!(up.on_caller(&data, t0), vec![Step::ToNode(data.to_vec())]);
        assert_eq!(up.on_node(&data, t0), vec![Step::ToCaller(data.to_vec())]);
        let mut peer_error = vec![0u8; 20];
        peer_error[0..2].copy_from_slice(&0x8008u16.to_be_bytes());
        assert!(up.on_caller(&peer_error, t0).is_empty());
        assert!(up.on_caller(&[0x80, 0], t0).is_empty());
        // A retransmitted conclusion (our answer was lost) is answered from the cache.
        assert_eq!(
            up.on_caller(&caller_conclusion, t0),
            vec![Step::ToCaller(answer)]
        );
        // A stray induction from the caller's address is not passed on.
        assert!(up
            .on_caller(&hs(4, 2, HS_INDUCTION, CALLER, 0, 0, &[]), t0)
            .is_empty());
    }

    #[test]
    fn upstream_keeps_the_callers_stream_id_when_not_replaced() {
        let t0 = Instant::now();
        let (mut up, _) = Upstream::start(conclusion(1, Some("abcde")), None, t0);
        let steps = up.on_node(&node_induction_answer(3), t0);
        let [Step::ToNode(c)] = steps.as_slice() else {
            panic!("{steps:?}")
        };
        assert_eq!(stream_id(c), Ok(Some("abcde".into())));
        // A caller without one and no replacement: none, and no CONFIG flag.
        let (mut up, _) = Upstream::start(conclusion(1, None), None, t0);
        let steps = up.on_node(&node_induction_answer(3), t0);
        let [Step::ToNode(c)] = steps.as_slice() else {
            panic!("{steps:?}")
        };
        assert_eq!(stream_id(c), Ok(None));
        assert_eq!(be16(c, OFF_EXT), Some(1));
        // A caller without one and a replacement: added.
        let (mut up, _) = Upstream::start(conclusion(1, None), Some("n".into()), t0);
        let steps = up.on_node(&node_induction_answer(3), t0);
        let [Step::ToNode(c)] = steps.as_slice() else {
            panic!("{steps:?}")
        };
        assert_eq!(stream_id(c), Ok(Some("n".into())));
        assert_eq!(be16(c, OFF_EXT), Some(1 | EXT_FLAG_CONFIG));
    }

    #[test]
    fn upstream_rejection_timeout_and_bad_input() {
        let t0 = Instant::now();
        // The node rejects our conclusion.
        let (mut up, _) = Upstream::start(conclusion(1, Some("s")), None, t0);
        up.on_node(&node_induction_answer(3), t0);
        let rej = hs(5, 0, 2403, NODE, 0, CALLER, &[]);
        assert_eq!(up.on_node(&rej, t0), vec![Step::Rejected(2403)]);
        assert!(up.on_node(&node_conclusion_answer(), t0).is_empty(), "over");
        assert!(up.on_timer(t0 + Duration::from_secs(1)).is_empty());
        // ...or already the induction.
        let (mut up, _) = Upstream::start(conclusion(1, Some("s")), None, t0);
        assert_eq!(
            up.on_node(&hs(5, 0, 1005, NODE, 0, CALLER, &[]), t0),
            vec![Step::Rejected(1005)]
        );
        // A node that never answers.
        let (mut up, ind) = Upstream::start(conclusion(1, Some("s")), None, t0);
        let mut sent = 0;
        let mut end = None;
        for ms in (0..4000).step_by(10) {
            for s in up.on_timer(t0 + Duration::from_millis(ms)) {
                match s {
                    Step::ToNode(p) => {
                        assert_eq!(p, ind);
                        sent += 1;
                    }
                    Step::Rejected(code) => end = Some((ms, code)),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(end, Some((3000, REJECT_BAD_GATEWAY)));
        assert_eq!(sent, 11, "every 250 ms for 3 s");
        // A stream ID too long for SRT, or a start from something that is not a conclusion.
        let (mut up, _) = Upstream::start(conclusion(1, Some("s")), Some("x".repeat(513)), t0);
        assert_eq!(up.on_timer(t0), vec![Step::Rejected(REJECT_BAD_REQUEST)]);
        assert!(up.on_timer(t0).is_empty());
        let (mut up, _) = Upstream::start(vec![1, 2, 3], None, t0);
        assert_eq!(
            up.on_node(&node_induction_answer(3), t0),
            vec![Step::Rejected(REJECT_BAD_REQUEST)]
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let c = Cookies::new([3; 32]);
        let t0 = Instant::now();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let seeds = [
            conclusion(c.make(peer(), 0), Some("abc")),
            node_induction_answer(9),
            node_conclusion_answer(),
        ];
        for i in 0..30_000 {
            let r = next();
            // Mutate real handshakes so the parsers get past their first checks.
            let mut buf = seeds[(r % 3) as usize].clone();
            let len = (next() % 200) as usize;
            buf.resize(len.max(1), 0);
            for _ in 0..(r % 6) {
                let at = (next() as usize) % buf.len();
                buf[at] = next() as u8;
            }
            let _ = on_fresh(&buf, peer(), &c, 0);
            let _ = rejection(&buf, 2402);
            let (mut up, _) =
                Upstream::start(buf.clone(), (i % 2 == 0).then(|| "s".to_string()), t0);
            let _ = up.on_node(&node_induction_answer(1), t0);
            let _ = up.on_node(&buf, t0);
            let _ = up.on_caller(&buf, t0);
            let _ = up.on_timer(t0 + Duration::from_millis(i % 5000));
            let _ = up.on_node(&node_conclusion_answer(), t0);
            let _ = up.on_caller(&buf, t0);
        }
    }

    // ---- against real srt-tokio endpoints, through a small test relay on the pure API ----

    mod live {
        use super::super::*;
        use bytes::Bytes;
        use futures::{SinkExt, StreamExt};
        use srt_protocol::packet::{RejectReason, ServerRejectReason};
        use srt_protocol::protocol::pending_connection::ConnectionReject;
        use srt_tokio::{SrtListener, SrtSocket};
        use tokio::net::UdpSocket;
        use tokio::sync::mpsc;

        /// What the test relay saw.
        #[derive(Debug, PartialEq)]
        enum Event {
            Placed(String),
            Established,
            Rejected(u32),
        }

        /// One-session relay: the front socket answers inductions, a per-session upstream
        /// socket talks to the node. Only the pure API decides what goes where.
        async fn relay(
            front: UdpSocket,
            node: SocketAddr,
            suffix: Option<&'static str>,
            events: mpsc::UnboundedSender<Event>,
        ) {
            let cookies = Cookies::new([5; 32]);
            let mut session: Option<(SocketAddr, Upstream, UdpSocket)> = None;
            let mut fbuf = vec![0u8; 2048];
            let mut ubuf = vec![0u8; 2048];
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let now_secs = 1_000_000;
            loop {
                let (steps, peer) = tokio::select! {
                    r = front.recv_from(&mut fbuf) => {
                        let Ok((n, from)) = r else { continue };
                        match session.as_mut() {
                            Some((p, up, _)) if *p == from => (up.on_caller(&fbuf[..n], Instant::now()), from),
                            _ => match on_fresh(&fbuf[..n], from, &cookies, now_secs) {
                                Fresh::Reply(r) => {
                                    front.send_to(&r, from).await.unwrap();
                                    continue;
                                }
                                Fresh::Drop(_) => continue,
                                Fresh::Place { stream_id, conclusion, .. } => {
                                    events.send(Event::Placed(stream_id.clone())).unwrap();
                                    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                                    sock.connect(node).await.unwrap();
                                    let sid = suffix.map(|s| format!("{stream_id}{s}"));
                                    let (up, ind) = Upstream::start(conclusion, sid, Instant::now());
                                    sock.send(&ind).await.unwrap();
                                    session = Some((from, up, sock));
                                    continue;
                                }
                            },
                        }
                    }
                    r = async { session.as_ref().unwrap().2.recv(&mut ubuf).await }, if session.is_some() => {
                        let Ok(n) = r else { continue };
                        let (p, up, _) = session.as_mut().unwrap();
                        (up.on_node(&ubuf[..n], Instant::now()), *p)
                    }
                    _ = tick.tick(), if session.is_some() => {
                        let (p, up, _) = session.as_mut().unwrap();
                        (up.on_timer(Instant::now()), *p)
                    }
                };
                for step in steps {
                    match step {
                        Step::ToNode(b) => {
                            session.as_ref().unwrap().2.send(&b).await.unwrap();
                        }
                        Step::ToCaller(b) => {
                            front.send_to(&b, peer).await.unwrap();
                        }
                        Step::Established => events.send(Event::Established).unwrap(),
                        Step::Rejected(code) => {
                            events.send(Event::Rejected(code)).unwrap();
                            let (_, up, _) = session.take().unwrap();
                            let r = rejection(up.conclusion(), code).unwrap();
                            front.send_to(&r, peer).await.unwrap();
                        }
                        Step::Nothing => {}
                    }
                }
            }
        }

        /// A node (srt-tokio listener) and the relay in front of it; returns the relay's address.
        async fn setup(
            accept: bool,
            suffix: Option<&'static str>,
        ) -> (
            SocketAddr,
            mpsc::UnboundedReceiver<Event>,
            mpsc::UnboundedReceiver<(Option<String>, Vec<Bytes>)>,
        ) {
            let inner = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let node_addr = inner.local_addr().unwrap();
            let (listener, mut incoming) = SrtListener::builder()
                .latency(Duration::from_millis(50))
                .socket(inner)
                .bind(node_addr)
                .await
                .unwrap();
            let (got_tx, got_rx) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                let _listener = listener;
                while let Some(req) = incoming.incoming().next().await {
                    let sid = req.stream_id().map(|s| s.to_string());
                    if !accept {
                        req.reject(RejectReason::Server(ServerRejectReason::Forbidden))
                            .await
                            .unwrap();
                        got_tx.send((sid, vec![])).unwrap();
                        continue;
                    }
                    let mut sock = req.accept(None).await.unwrap();
                    let mut msgs = Vec::new();
                    while let Some(Ok((_, data))) = sock.next().await {
                        msgs.push(data);
                        if msgs.len() == 100 {
                            break;
                        }
                    }
                    got_tx.send((sid, msgs)).unwrap();
                }
            });
            let front = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let front_addr = front.local_addr().unwrap();
            let (ev_tx, ev_rx) = mpsc::unbounded_channel();
            tokio::spawn(relay(front, node_addr, suffix, ev_tx));
            (front_addr, ev_rx, got_rx)
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_caller_reaches_the_node_through_the_relay() {
            tokio::time::timeout(Duration::from_secs(15), async {
                let (front, mut events, mut got) = setup(true, Some(",edge-res=42")).await;
                let sid = "#!::r=live/KEY,m=publish";
                let mut caller = SrtSocket::builder()
                    .latency(Duration::from_millis(50))
                    .call(front, Some(sid))
                    .await
                    .expect("the caller connects through the relay");
                assert_eq!(events.recv().await, Some(Event::Placed(sid.into())));
                assert_eq!(events.recv().await, Some(Event::Established));
                let sent: Vec<Bytes> = (0..100)
                    .map(|i| Bytes::from(format!("message {i:03} {}", "x".repeat(i * 10))))
                    .collect();
                for m in &sent {
                    caller
                        .send((std::time::Instant::now(), m.clone()))
                        .await
                        .unwrap();
                    // srt-tokio's live sender estimates the input rate and stalls on a burst.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let (node_sid, msgs) = got.recv().await.unwrap();
                assert_eq!(
                    node_sid.as_deref(),
                    Some("#!::r=live/KEY,m=publish,edge-res=42")
                );
                assert_eq!(msgs, sent, "100 messages, intact and in order");
                caller.close().await.unwrap();
            })
            .await
            .expect("within 15 s");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_node_rejection_reaches_the_caller() {
            tokio::time::timeout(Duration::from_secs(15), async {
                let (front, mut events, mut got) = setup(false, None).await;
                let sid = "#!::r=live/NOPE,m=publish";
                let Err(err) = SrtSocket::builder().call(front, Some(sid)).await else {
                    panic!("the caller is refused");
                };
                assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
                let reason = err
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<ConnectionReject>());
                assert_eq!(
                    reason,
                    Some(&ConnectionReject::Rejected(RejectReason::Server(
                        ServerRejectReason::Forbidden
                    )))
                );
                assert_eq!(
                    got.recv().await.unwrap().0.as_deref(),
                    Some(sid),
                    "the node saw the caller's own stream ID"
                );
                assert_eq!(events.recv().await, Some(Event::Placed(sid.into())));
                assert_eq!(events.recv().await, Some(Event::Rejected(2403)));
            })
            .await
            .expect("within 15 s");
        }
    }
}
