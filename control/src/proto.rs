//! Control-plane messages and their framing.
//!
//! Every message is one frame: a `u32` big-endian length, then that many bytes of JSON.
//! Nodes send [`ToBalancer`], balancers send [`ToNode`], both on one bidirectional QUIC stream.
//!
//! Entry points: [`encode_frame`] to write, [`FrameDecoder`] to read (pure and incremental:
//! feed it whatever bytes arrived, pop whole messages), [`stream_ref`] to name a stream without
//! its key.
//!
//! Caveats: a frame longer than [`MAX_FRAME`] or holding bad JSON is an error; the caller
//! should drop the connection, since the stream can no longer be trusted to be in sync.

use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ControlError;

/// Largest frame payload, in bytes. A report with a few thousand streams (about 250 bytes of
/// JSON each) fits many times over, while a hostile or broken peer can make us buffer at most
/// this much per connection.
pub const MAX_FRAME: usize = 1024 * 1024;

/// Bytes of the length prefix in front of every frame.
const LEN_PREFIX: usize = 4;

/// What a node tells balancers about itself, pushed periodically and on every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The node's ID; must match its certificate.
    pub node_id: String,
    /// Increments with every report (filled in by the client).
    pub seq: u64,
    /// Where balancers relay RTMP to this node.
    pub rtmp_addr: SocketAddr,
    /// Where balancers relay SRT to this node.
    pub srt_addr: SocketAddr,
    /// The node's HLS origin.
    pub http_addr: SocketAddr,
    /// The node's HLS origin over HTTPS, when it has one (absent in reports of nodes from
    /// before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_addr: Option<SocketAddr>,
    /// Whether the node takes new streams.
    pub state: NodeState,
    /// Pipelines are falling behind real time: no new streams.
    pub overloaded: bool,
    /// Total transcode capacity, in thousandths of a unit.
    pub capacity_milli_units: u32,
    /// Capacity in use, including reservations the node holds.
    pub used_milli_units: u32,
    /// What one new stream costs on this node.
    pub stream_milli_units: u32,
    /// CPU use, 0.0..=1.0.
    pub cpu: f32,
    /// The streams the node carries.
    pub streams: Vec<StreamReport>,
    /// Reservation IDs held, not yet turned into streams.
    pub reservations: Vec<u64>,
    /// Playback IDs whose HLS this node serves: live, waiting for a reconnect, or ended and
    /// still retained. Balancers route viewers by it.
    #[serde(default)]
    pub served: Vec<String>,
    /// For every served playback ID, the packager state another node needs to continue the
    /// stream's numbering if its encoder lands there (opaque to the control plane).
    #[serde(default)]
    pub continuations: std::collections::BTreeMap<String, serde_json::Value>,
    /// The node carries out [`ToNode::Operate`] (absent in reports of nodes from before it).
    #[serde(default)]
    pub operations: bool,
    /// Stream keys an operator blocked on this node ([`Operation::Kick`] with a block), as
    /// [`StreamReport::stream_ref`], with the milliseconds of block left when the report was
    /// made: every balancer refuses to place them, on any node, until then.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub blocked: std::collections::BTreeMap<String, u64>,
}

impl Report {
    /// A ready node with no capacity, no streams and unspecified addresses: the starting point
    /// for a report that sets what it cares about (`Report { seq, ..Report::empty(id) }`).
    pub fn empty(node_id: &str) -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Report {
            node_id: node_id.into(),
            seq: 0,
            rtmp_addr: unspecified,
            srt_addr: unspecified,
            http_addr: unspecified,
            https_addr: None,
            state: NodeState::Ready,
            overloaded: false,
            capacity_milli_units: 0,
            used_milli_units: 0,
            stream_milli_units: 0,
            cpu: 0.0,
            streams: vec![],
            reservations: vec![],
            served: vec![],
            continuations: Default::default(),
            operations: false,
            blocked: Default::default(),
        }
    }
}

/// One stream on a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamReport {
    /// [`stream_ref`] of the stream key (never the key itself).
    pub stream_ref: String,
    /// The public playback ID.
    pub playback_id: String,
    /// `rtmp` or `srt`.
    pub protocol: String,
    /// What this stream costs.
    pub milli_units: u32,
    /// When the stream started, Unix milliseconds.
    pub started_unix_ms: u64,
    /// The reservation this stream consumed, if it was placed by a balancer.
    pub reservation: Option<u64>,
    /// The stream's health as its node measures it (`healthy`, `degraded`, `unhealthy`,
    /// `starving`);
    /// absent from nodes before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Why it is not healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_reason: Option<String>,
    /// What operators see of it (absent from nodes before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<StreamDetail>,
}

/// A stream as operators see it (the dashboard, `edge ctl stream`): who sends it, what it is
/// made into, and its source video's figures.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StreamDetail {
    /// The encoder's address as the node sees it (the balancer's, when relayed without PROXY).
    pub client_addr: String,
    /// Source resolution (`1280x720`), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Video renditions served.
    #[serde(default)]
    pub renditions: Vec<String>,
    /// Figures measured on the source video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<StreamStats>,
    /// Configuration issues, as advice for the broadcaster.
    #[serde(default)]
    pub issues: Vec<String>,
}

/// Figures of a stream's source video, measured at ingest over its last few seconds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StreamStats {
    /// Bit rate, kbit/s.
    pub video_kbps: u32,
    /// Frames per second.
    pub fps: f32,
    /// The last interval between two keyframes, ms (absent before the second keyframe).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyframe_interval_ms: Option<u32>,
    /// The source video's codec, profile and level as its caps say (`H.264 high 3.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// Audio bit rate over the same seconds, kbit/s (absent without audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_kbps: Option<u32>,
    /// Video and audio bit rates over the last minute (absent before two seconds of media).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_kbps_60s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_kbps_60s: Option<u32>,
    /// The source audio's codec as its caps say (`AAC`, `MP3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_codec: Option<String>,
    /// A/V timestamp drift: how far the audio's timestamps run ahead of the video's
    /// (negative: behind) for media that reaches the node at the same moment, ms (absent
    /// until both tracks have a few seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub av_drift_ms: Option<i32>,
    /// Source video frames that reached the node over a second behind the stream's best
    /// schedule, in the last minute.
    #[serde(default)]
    pub late_frames: u32,
    /// Timestamp jumps (back, or forward further than time passed) in the last minute, in
    /// the track with more of them (an encoder restart jumps both).
    #[serde(default)]
    pub timestamp_jumps: u32,
    /// Timestamp gaps (half a second or more of a track the encoder never sent) in the last
    /// minute, in the track with more of them.
    #[serde(default)]
    pub timestamp_gaps: u32,
    /// Frames the encoder skipped in the last few seconds (intervals of k times the usual
    /// count k - 1).
    #[serde(default)]
    pub dropped_frames: u32,
    /// Each transcoded rendition's output over the last few seconds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rungs: Vec<RungStats>,
}

/// One transcoded rendition's output, measured as it leaves for the packager.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RungStats {
    /// The rendition (`720p`).
    pub name: String,
    /// Its video bit rate, kbit/s.
    pub kbps: u32,
    /// Its frames per second.
    pub fps: f32,
    /// Real-time factor: media seconds made per second of wall time (below 1: the node
    /// cannot keep up with this rendition).
    pub speed: f32,
    /// How far its last frame left behind the source frame it was made from, ms.
    pub lag_ms: u32,
}

/// Whether a node takes new streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Takes new streams.
    Ready,
    /// Shutting down: keeps its streams, takes no new ones.
    Draining,
    /// Operator hold: keeps its streams, takes no new ones.
    Cordoned,
}

/// Node → balancer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// A report is large next to `Reserved`, but these messages live only between a read and a
// dispatch; boxing would add an allocation per report for nothing.
#[allow(clippy::large_enum_variant)]
pub enum ToBalancer {
    /// A capacity report.
    Report(Report),
    /// The node's final answer to [`ToNode::Reserve`].
    Reserved {
        /// The reservation ID from the request.
        id: u64,
        /// Whether the node holds the capacity.
        ok: bool,
        /// Why not (empty when `ok`).
        reason: String,
        /// What kind of no (capacity when absent: what nodes before credentials sent).
        #[serde(default)]
        kind: RefusalKind,
    },
}

/// Who asks to publish, carried by a reservation so the node decides key and capacity in one
/// step: a refused key never holds capacity. The key crosses only the mutually authenticated
/// control plane; `Debug` does not print it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The stream key the publisher sent.
    pub key: String,
    /// The publisher's address (what the node's webhook is told).
    pub client_addr: SocketAddr,
    /// `rtmp` or `srt`.
    pub protocol: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key", &"<redacted>")
            .field("client_addr", &self.client_addr)
            .field("protocol", &self.protocol)
            .finish()
    }
}

/// Why a node refused a reservation; the balancer acts on the kind (a refused key is not
/// tried on the next node, and the encoder is told which it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// No room, draining, cordoned, overloaded: another node may say yes.
    #[default]
    Capacity,
    /// The stream key is wrong: no node will take it.
    Credentials,
    /// The node's auth backend (webhook) failed or timed out: not the publisher's fault.
    AuthUnavailable,
}

/// A node's refusal of a reservation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    /// What kind of no.
    pub kind: RefusalKind,
    /// For logs and the encoder's status message (never holds the key).
    pub reason: String,
}

impl Refused {
    /// No room (or draining, cordoned, overloaded).
    pub fn capacity(reason: impl Into<String>) -> Self {
        Refused {
            kind: RefusalKind::Capacity,
            reason: reason.into(),
        }
    }
}

/// Balancer → node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToNode {
    /// Hold `milli_units` for `ttl_ms` (or until the stream arrives).
    Reserve {
        /// Reservation ID chosen by the balancer.
        id: u64,
        /// Capacity to hold.
        milli_units: u32,
        /// The stream the reservation is for, when known.
        stream_ref: Option<String>,
        /// How long to hold it if no stream arrives.
        ttl_ms: u64,
        /// The stream's continuation from the node that had it (see `Report::continuations`).
        #[serde(default)]
        continuation: Option<serde_json::Value>,
        /// The publisher's key, checked before any capacity is held.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials: Option<Credentials>,
    },
    /// Release a reservation (the placement fell through).
    Cancel {
        /// The reservation ID.
        id: u64,
    },
    /// An operator's action (a balancer's admin API, `edge ctl`). Sent only to nodes whose
    /// reports say they carry it out ([`Report::operations`]): a node from before it would
    /// take the unknown message for a protocol error and drop its control connection.
    Operate(Operation),
}

/// What an operator can ask of a node through any balancer. Live streams continue through
/// every one of them but a kick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Operation {
    /// Take no new streams, keep the live ones.
    Cordon,
    /// Take new streams again (a draining node stays draining).
    Uncordon,
    /// Take no new streams, for good: the node is going away once its streams end.
    Drain,
    /// End a live publish. With `block_ms`, its stream key is refused that long on every node
    /// (encoders reconnect within seconds, so a kick alone does not keep one off).
    Kick {
        /// The stream's playback ID.
        playback_id: String,
        /// How long to refuse the stream's key afterwards (0: not at all).
        #[serde(default)]
        block_ms: u64,
    },
}

/// Encode one message as a frame: `u32` big-endian length, then JSON.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, ControlError> {
    let json = serde_json::to_vec(msg)?;
    if json.len() > MAX_FRAME {
        return Err(ControlError::FrameTooLarge {
            len: json.len(),
            max: MAX_FRAME,
        });
    }
    let len = u32::try_from(json.len()).map_err(|_| ControlError::FrameTooLarge {
        len: json.len(),
        max: MAX_FRAME,
    })?;
    let mut out = Vec::with_capacity(LEN_PREFIX + json.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&json);
    Ok(out)
}

/// Pure incremental decoder: feed bytes, pop complete messages; a frame over [`MAX_FRAME`] or
/// bad JSON is an error.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already consumed.
    start: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        // Compact before growing so the buffer stays about one frame long.
        if self.start > 0 && (self.start == self.buf.len() || self.start >= self.buf.len() / 2) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet consumed as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Pop the next complete message, `Ok(None)` if more bytes are needed.
    ///
    /// An oversize frame stays an error on every later call (the stream is out of sync); a
    /// frame with bad JSON is consumed, so the caller may choose to go on.
    #[allow(clippy::should_implement_trait)] // generic over T, so not an Iterator
    pub fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ControlError> {
        let avail = &self.buf[self.start..];
        let Some(prefix) = avail.get(..LEN_PREFIX) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; LEN_PREFIX];
        len_bytes.copy_from_slice(prefix);
        let len = u32::from_be_bytes(len_bytes) as usize;
        if len > MAX_FRAME {
            return Err(ControlError::FrameTooLarge {
                len,
                max: MAX_FRAME,
            });
        }
        let Some(payload) = avail.get(LEN_PREFIX..LEN_PREFIX + len) else {
            return Ok(None);
        };
        let parsed = serde_json::from_slice(payload);
        self.start += LEN_PREFIX + len;
        Ok(Some(parsed?))
    }
}

/// Domain-separation prefix of [`stream_ref`], so the hash is useless for anything else.
const STREAM_REF_PREFIX: &str = "edge-stream-ref:";

/// Bytes of SHA-256 kept in a [`stream_ref`]: 128 bits never collide across a fleet's keys.
const STREAM_REF_BYTES: usize = 16;

/// One-way fingerprint of a stream key, so reports can say which stream a node has without
/// carrying the secret: lowercase hex of the first 16 bytes of SHA-256("edge-stream-ref:" + key).
pub fn stream_ref(key: &str) -> String {
    let mut h = Sha256::new();
    h.update(STREAM_REF_PREFIX.as_bytes());
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(STREAM_REF_BYTES * 2);
    for b in digest.iter().take(STREAM_REF_BYTES) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report(n: usize) -> Report {
        Report {
            node_id: "node-1".into(),
            seq: 7,
            rtmp_addr: "10.0.0.1:1935".parse().unwrap(),
            srt_addr: "10.0.0.1:9000".parse().unwrap(),
            http_addr: "[::1]:8080".parse().unwrap(),
            https_addr: Some("10.0.0.1:8443".parse().unwrap()),
            state: NodeState::Draining,
            overloaded: true,
            capacity_milli_units: 8000,
            used_milli_units: 3500,
            stream_milli_units: 1500,
            cpu: 0.25,
            streams: (0..n)
                .map(|i| StreamReport {
                    stream_ref: stream_ref(&format!("key{i}")),
                    playback_id: format!("pb{i}"),
                    protocol: "srt".into(),
                    milli_units: 1500,
                    started_unix_ms: 1_700_000_000_000 + i as u64,
                    reservation: if i % 2 == 0 { Some(i as u64) } else { None },
                    health: (i % 2 == 0).then(|| "healthy".into()),
                    health_reason: None,
                    detail: (i % 3 == 0).then(|| StreamDetail {
                        client_addr: "192.0.2.7:50000".into(),
                        source: Some("1280x720".into()),
                        renditions: vec!["source".into(), "360p".into()],
                        stats: Some(StreamStats {
                            video_kbps: 2500,
                            fps: 29.97,
                            keyframe_interval_ms: Some(2000),
                            codec: Some("H.264 high 3.1".into()),
                            audio_kbps: Some(128),
                            video_kbps_60s: Some(2400),
                            audio_kbps_60s: None,
                            audio_codec: Some("AAC".into()),
                            av_drift_ms: Some(-40),
                            late_frames: 3,
                            timestamp_jumps: 1,
                            timestamp_gaps: 0,
                            dropped_frames: 2,
                            rungs: vec![RungStats {
                                name: "360p".into(),
                                kbps: 800,
                                fps: 30.0,
                                speed: 0.98,
                                lag_ms: 250,
                            }],
                        }),
                        issues: vec![],
                    }),
                })
                .collect(),
            reservations: vec![1, 2, u64::MAX],
            served: vec!["p".into()],
            continuations: Default::default(),
            operations: true,
            blocked: [(stream_ref("key9"), 30_000)].into_iter().collect(),
        }
    }

    fn messages() -> (Vec<ToBalancer>, Vec<ToNode>) {
        (
            vec![
                ToBalancer::Report(sample_report(3)),
                ToBalancer::Reserved {
                    id: 9,
                    ok: false,
                    reason: "full".into(),
                    kind: RefusalKind::Capacity,
                },
                ToBalancer::Reserved {
                    id: 10,
                    ok: false,
                    reason: "stream key refused".into(),
                    kind: RefusalKind::Credentials,
                },
                ToBalancer::Report(sample_report(0)),
            ],
            vec![
                ToNode::Reserve {
                    id: 1,
                    milli_units: 1500,
                    stream_ref: Some("ab".into()),
                    ttl_ms: 5000,
                    continuation: None,
                    credentials: Some(Credentials {
                        key: "k".into(),
                        client_addr: "192.0.2.1:5000".parse().unwrap(),
                        protocol: "rtmp".into(),
                    }),
                },
                ToNode::Cancel { id: 1 },
                ToNode::Reserve {
                    id: 2,
                    milli_units: 0,
                    stream_ref: None,
                    ttl_ms: 0,
                    continuation: Some(serde_json::json!({"renditions": []})),
                    credentials: None,
                },
                ToNode::Operate(Operation::Cordon),
                ToNode::Operate(Operation::Uncordon),
                ToNode::Operate(Operation::Drain),
                ToNode::Operate(Operation::Kick {
                    playback_id: "pb1".into(),
                    block_ms: 60_000,
                }),
            ],
        )
    }

    #[test]
    fn credentials_are_never_printed_and_old_peers_still_parse() {
        let c = Credentials {
            key: "sekrit-key".into(),
            client_addr: "192.0.2.1:5000".parse().unwrap(),
            protocol: "srt".into(),
        };
        assert!(!format!("{c:?}").contains("sekrit"));
        // A node from before credentials answers without `kind`; a balancer from before
        // sends no `credentials`.
        let old: ToBalancer =
            serde_json::from_str(r#"{"Reserved":{"id":1,"ok":false,"reason":"full"}}"#).unwrap();
        assert!(matches!(
            old,
            ToBalancer::Reserved {
                kind: RefusalKind::Capacity,
                ..
            }
        ));
        let old: ToNode = serde_json::from_str(
            r#"{"Reserve":{"id":1,"milli_units":1,"stream_ref":null,"ttl_ms":1}}"#,
        )
        .unwrap();
        assert!(matches!(
            old,
            ToNode::Reserve {
                credentials: None,
                ..
            }
        ));
        // A node from before operator actions: no `operations`, nothing blocked.
        let mut v = serde_json::to_value(sample_report(1)).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("operations");
        o.remove("blocked");
        let r: Report = serde_json::from_value(v).unwrap();
        assert!(!r.operations && r.blocked.is_empty());
    }

    #[test]
    fn round_trip() {
        let (to_b, to_n) = messages();
        let mut d = FrameDecoder::new();
        for m in &to_b {
            d.push(&encode_frame(m).unwrap());
        }
        for m in &to_b {
            assert_eq!(d.next::<ToBalancer>().unwrap().as_ref(), Some(m));
        }
        assert_eq!(d.next::<ToBalancer>().unwrap(), None);
        for m in &to_n {
            d.push(&encode_frame(m).unwrap());
            assert_eq!(d.next::<ToNode>().unwrap().as_ref(), Some(m));
        }
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn node_state_is_lowercase() {
        assert_eq!(
            serde_json::to_string(&NodeState::Cordoned).unwrap(),
            "\"cordoned\""
        );
    }

    #[test]
    fn split_at_every_boundary() {
        let (to_b, _) = messages();
        let mut wire = Vec::new();
        for m in &to_b {
            wire.extend(encode_frame(m).unwrap());
        }
        // Two cuts at every pair of positions would be slow; every single cut plus
        // byte-by-byte and a few chunk sizes covers the boundaries.
        for cut in 0..=wire.len() {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                d.push(part);
                while let Some(m) = d.next::<ToBalancer>().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, to_b, "cut at {cut}");
        }
        for chunk in [1, 2, 3, 5, 7, 64, 1000] {
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for part in wire.chunks(chunk) {
                d.push(part);
                while let Some(m) = d.next::<ToBalancer>().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, to_b, "chunk {chunk}");
        }
    }

    #[test]
    fn oversize_frame_is_an_error() {
        let mut d = FrameDecoder::new();
        d.push(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert!(matches!(
            d.next::<ToNode>(),
            Err(ControlError::FrameTooLarge { .. })
        ));
        // Sticky: the stream is out of sync.
        assert!(matches!(
            d.next::<ToNode>(),
            Err(ControlError::FrameTooLarge { .. })
        ));

        let mut d = FrameDecoder::new();
        d.push(&u32::MAX.to_be_bytes());
        assert!(d.next::<ToNode>().is_err());

        // Encoding refuses too.
        let mut big = sample_report(0);
        big.node_id = "x".repeat(MAX_FRAME);
        assert!(matches!(
            encode_frame(&big),
            Err(ControlError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn exactly_max_frame_is_accepted() {
        // A JSON string of MAX_FRAME bytes including its quotes.
        let s = "y".repeat(MAX_FRAME - 2);
        let frame = encode_frame(&s).unwrap();
        assert_eq!(frame.len(), MAX_FRAME + 4);
        let mut d = FrameDecoder::new();
        d.push(&frame);
        assert_eq!(d.next::<String>().unwrap(), Some(s));
    }

    #[test]
    fn bad_json_is_an_error() {
        let mut d = FrameDecoder::new();
        let body = b"{not json";
        d.push(&(body.len() as u32).to_be_bytes());
        d.push(body);
        assert!(matches!(d.next::<ToNode>(), Err(ControlError::Json(_))));
        // Valid JSON of the wrong shape.
        let wrong = encode_frame(&ToBalancer::Reserved {
            id: 1,
            ok: true,
            reason: String::new(),
            kind: RefusalKind::Capacity,
        })
        .unwrap();
        d.push(&wrong);
        assert!(matches!(d.next::<ToNode>(), Err(ControlError::Json(_))));
        // Empty frame.
        d.push(&0u32.to_be_bytes());
        assert!(d.next::<ToNode>().is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid = encode_frame(&ToNode::Cancel { id: 3 }).unwrap();
        for _ in 0..5000 {
            let mut d = FrameDecoder::new();
            let len = (rnd() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            if rnd() % 2 == 0 {
                // Small plausible length prefixes reach the JSON parser.
                let n = (rnd() % 40) as u32;
                bytes.splice(0..0, n.to_be_bytes());
            }
            if rnd() % 4 == 0 {
                // Mutate a valid frame.
                bytes = valid.clone();
                let i = (rnd() as usize) % bytes.len();
                bytes[i] = rnd() as u8;
            }
            d.push(&bytes);
            for _ in 0..4 {
                match d.next::<ToNode>() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn stream_ref_is_stable_and_hides_the_key() {
        let r = stream_ref("secret-key");
        assert_eq!(r.len(), 32);
        assert!(r
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(!r.contains("secret"));
        assert_eq!(r, stream_ref("secret-key"));
        assert_ne!(r, stream_ref("secret-kez"));
        // Known answer, from `printf 'edge-stream-ref:abc' | sha256sum | cut -c1-32`.
        assert_eq!(stream_ref("abc"), "591ba76215f383a80b1bcf6418ce9581");
    }
}
