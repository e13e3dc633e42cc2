//! The RTMP server session as a state machine without IO: bytes and `now` in, bytes to send
//! and events out (in the style of quinn-proto). The node runs it to take a publish; the
//! balancer runs it to read the `publish` (and the key) before it picks a node.
//!
//! ```text
//! [PROXY v2 header] → handshake → connect (app `live`) → createStream → publish(KEY)
//!     → Event::PublishRequested { key } → accept_publish() | reject_publish(code, text)
//!     → Event::Media { .. } ... → Event::Finished
//! ```
//! Feed with [`ServerCore::handle_input`]; take [`ServerCore::poll_transmit`] and
//! [`ServerCore::poll_event`] until both are empty; wait for input until
//! [`ServerCore::poll_timeout`] and then call [`ServerCore::handle_timeout`].
//!
//! The deadlines are for whole phases, not for each read: a peer that sends one byte every
//! few seconds does not hold a connection past [`Timeouts::publish`].
//!
//! rml_rtmp parses what the peer sends; a panic inside it (a bug a hostile peer might find)
//! is caught and becomes [`SessionError::Malformed`] for this connection only. Before
//! `publish`, commands are fed one byte at a time: rml_rtmp drops commands that arrive before
//! their `connect` is accepted, and encoders send connect ... publish in one go; each command
//! is answered before the next is parsed. After `publish`, input is fed at once.

use std::{collections::VecDeque, time::Duration};

use bytes::Bytes;
use rml_rtmp::{
    handshake::{Handshake, HandshakeProcessResult, PeerType},
    sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult},
};
use tokio::time::Instant;

use crate::{proxy, streamid::APP};

/// The message stream a publisher's `createStream` gets: encoders create one stream, and
/// rml_rtmp numbers them from 1.
const PUBLISH_STREAM_ID: u32 = 1;
/// The chunk stream [`ServerCore::fail_publish`] writes its status on: one rml_rtmp's
/// serializer does not use, so a full (type 0) header there contradicts nothing it sent.
const STATUS_CSID: u32 = 8;

/// What a publisher may send before `publish`: connect, releaseStream, FCPublish,
/// createStream and publish are a few hundred bytes. Bounds the byte-at-a-time parsing.
pub const MAX_BYTES_BEFORE_PUBLISH: usize = 64 * 1024;
/// What may arrive while a publish waits for admission (key check, capacity): encoders wait
/// for the publish status, but some send metadata and a first frame at once. More than this
/// before we answered is not an encoder.
pub const MAX_BYTES_AWAITING_ADMISSION: usize = 1024 * 1024;

/// Phase deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// From the start (accept) to the end of the RTMP handshake (and PROXY header).
    pub handshake: Duration,
    /// From the start to `publish`.
    pub publish: Duration,
    /// While publishing: the longest silence from the encoder.
    pub media: Duration,
}

/// The node's deadlines. The handshake is 3 small messages each way; encoders send
/// connect/createStream/publish at once after it; an encoder sends media many times per
/// second, and a TCP connection can stay half-open for hours without a media timeout.
pub const NODE_TIMEOUTS: Timeouts = Timeouts {
    handshake: Duration::from_secs(10),
    publish: Duration::from_secs(15),
    media: Duration::from_secs(30),
};

/// How a session starts.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// The peer is a trusted balancer: the connection may open with a PROXY v2 header.
    pub expect_proxy: bool,
    /// Keep every byte the peer sends after the handshake, up to `publish` (the balancer
    /// replays them to the node).
    pub record: bool,
    pub timeouts: Timeouts,
}

/// An RTMP handshake's opening from the client: C0 (the version byte) and C1 (1536 bytes).
pub const C0_C1_LEN: usize = 1 + 1536;

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
}

/// What happened, for the driver to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The PROXY v2 header (only with [`ServerOptions::expect_proxy`]); `None` when the
    /// connection started with the RTMP handshake directly.
    Proxy(Option<proxy::Header>),
    /// The peer asks to publish `key` (a secret: never log it). Input is held until
    /// [`ServerCore::accept_publish`] or [`ServerCore::reject_publish`].
    PublishRequested { key: String },
    /// An audio or video message (FLV tag body).
    Media {
        kind: MediaKind,
        timestamp: u32,
        data: Bytes,
    },
    /// The publisher's stream metadata (`@setDataFrame onMetaData`): the frame rate it
    /// announces in thousandths of a frame per second (29.97 fps is 29970), if any.
    /// Untrusted: any value may arrive (negative and NaN rates arrive as `None`).
    Metadata { fps_milli: Option<u32> },
    /// The publisher ended its stream.
    Finished,
}

/// Why a session ended badly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The peer broke the PROXY header or the RTMP handshake.
    #[error("bad handshake: {0}")]
    Handshake(String),
    /// Bytes that are not valid RTMP chunks or messages, or too many of them.
    #[error("malformed RTMP input: {0}")]
    Malformed(String),
    /// A phase passed its deadline.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The peer asked for something we refuse (wrong application, play); it was told why.
    #[error("refused: {0}")]
    Refused(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Proxy,
    Handshake,
    Commands,
    AwaitingAdmission,
    Publishing,
    Closed,
}

/// One RTMP server session, without IO.
pub struct ServerCore {
    opts: ServerOptions,
    phase: Phase,
    handshake: Handshake,
    session: Option<ServerSession>,
    chunk_size: u32,
    /// Publish request waiting for admission.
    request_id: Option<u32>,
    /// `rtmp://host/live/KEY` with an empty key field: OBS sends app `live/KEY`.
    key_in_app: Option<String>,
    input: Vec<u8>,
    fed_before_publish: usize,
    out: Vec<u8>,
    events: VecDeque<Event>,
    recorded: Vec<u8>,
    started: Instant,
    last_input: Instant,
}

fn guard<T, E: std::fmt::Debug>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, SessionError> {
    match crate::contain::catch(f) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(SessionError::Malformed(format!("{what}: {e:?}"))),
        Err(_) => Err(SessionError::Malformed(format!("{what}: parser failed"))),
    }
}

/// Parse the app name of `connect`: `live` or `live/KEY` (OBS with the key in the URL).
/// `None`: an application we do not serve.
fn parse_app(app: &str) -> Option<Option<String>> {
    let app = app.trim_matches('/');
    if app == APP {
        return Some(None);
    }
    let key = app.strip_prefix(APP)?.strip_prefix('/')?;
    (!key.is_empty()).then(|| Some(key.to_string()))
}

impl ServerCore {
    pub fn new(opts: ServerOptions, now: Instant) -> Self {
        Self {
            phase: if opts.expect_proxy {
                Phase::Proxy
            } else {
                Phase::Handshake
            },
            opts,
            handshake: Handshake::new(PeerType::Server),
            session: None,
            chunk_size: 0,
            request_id: None,
            key_in_app: None,
            input: Vec::new(),
            fed_before_publish: 0,
            out: Vec::new(),
            events: VecDeque::new(),
            recorded: Vec::new(),
            started: now,
            last_input: now,
        }
    }

    /// Bytes from the peer.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) -> Result<(), SessionError> {
        if self.phase == Phase::Closed {
            return Ok(());
        }
        self.last_input = now;
        self.input.extend_from_slice(data);
        if self.phase == Phase::AwaitingAdmission && self.input.len() > MAX_BYTES_AWAITING_ADMISSION
        {
            return self.fail(SessionError::Malformed(
                "too much data before the publish was answered".into(),
            ));
        }
        self.drive()
    }

    /// Bytes to send to the peer, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.out.is_empty()).then(|| std::mem::take(&mut self.out))
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called if no input arrives first. `None` while
    /// a publish waits for admission (the driver bounds its own admission) and once closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = self.opts.timeouts;
        match self.phase {
            Phase::Proxy | Phase::Handshake => Some(self.started + t.handshake),
            Phase::Commands => Some(self.started + t.publish),
            Phase::Publishing => Some(self.last_input + t.media),
            Phase::AwaitingAdmission | Phase::Closed => None,
        }
    }

    /// The clock reached [`Self::poll_timeout`] (or passed it): the phase's deadline expired.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), SessionError> {
        match self.poll_timeout() {
            Some(at) if now >= at => {
                let what = match self.phase {
                    Phase::Proxy => "PROXY header",
                    Phase::Handshake => "handshake",
                    Phase::Commands => "publish",
                    _ => "media",
                };
                self.fail(SessionError::Timeout(what))
            }
            _ => Ok(()),
        }
    }

    /// Accept the publish announced by [`Event::PublishRequested`]; held input goes on.
    pub fn accept_publish(&mut self) -> Result<(), SessionError> {
        let Some(id) = self.request_id.take() else {
            return Ok(());
        };
        let results = {
            let Some(s) = self.session.as_mut() else {
                return Ok(());
            };
            guard("publish", || s.accept_request(id))?
        };
        self.phase = Phase::Publishing;
        self.apply(results)?;
        self.drive()
    }

    /// Refuse the publish with an RTMP status the encoder shows its user (`code` such as
    /// `NetStream.Publish.Denied`). The session is over; send what [`Self::poll_transmit`]
    /// returns, then close.
    pub fn reject_publish(&mut self, code: &str, description: &str) -> Result<(), SessionError> {
        if let (Some(id), Some(s)) = (self.request_id.take(), self.session.as_mut()) {
            let results = guard("reject", || s.reject_request(id, code, description))?;
            self.apply(results)?;
        }
        self.phase = Phase::Closed;
        self.input.clear();
        Ok(())
    }

    /// End a publish already accepted because of what the encoder sends (a codec we cannot
    /// take): an `onStatus` with level `error`, `code` and `description` on the publishing
    /// stream, which encoders show their user (ffmpeg: "Server error: ..."). The session is
    /// over; send what [`Self::poll_transmit`] returns, then close.
    pub fn fail_publish(&mut self, code: &str, description: &str) -> Result<(), SessionError> {
        use rml_rtmp::{messages::RtmpMessage, rml_amf0::Amf0Value, time::RtmpTimestamp};
        let status: std::collections::HashMap<String, Amf0Value> = [
            ("level", "error"),
            ("code", code),
            ("description", description),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Amf0Value::Utf8String(v.to_string())))
        .collect();
        let payload = RtmpMessage::Amf0Command {
            command_name: "onStatus".into(),
            transaction_id: 0.0,
            command_object: Amf0Value::Null,
            additional_arguments: vec![Amf0Value::Object(status)],
        }
        .into_message_payload(RtmpTimestamp::new(0), PUBLISH_STREAM_ID)
        .map_err(|e| SessionError::Malformed(format!("status message: {e:?}")))?;
        let msg = crate::chunk::Message {
            csid: STATUS_CSID,
            timestamp: 0,
            type_id: payload.type_id,
            stream_id: payload.message_stream_id,
            payload: payload.data,
        };
        crate::chunk::write_message(&mut self.out, &msg, self.chunk_size)
            .map_err(|e| SessionError::Malformed(format!("status message: {e}")))?;
        self.phase = Phase::Closed;
        self.input.clear();
        Ok(())
    }

    /// Everything the peer sent after the handshake up to its `publish` (with
    /// [`ServerOptions::record`]).
    pub fn recorded(&self) -> &[u8] {
        &self.recorded
    }

    /// The chunk size the peer was told to expect from us.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Whether a publish was accepted and media flows.
    pub fn is_publishing(&self) -> bool {
        self.phase == Phase::Publishing
    }

    fn fail(&mut self, e: SessionError) -> Result<(), SessionError> {
        self.phase = Phase::Closed;
        self.input.clear();
        Err(e)
    }

    fn drive(&mut self) -> Result<(), SessionError> {
        let r = self.drive_inner();
        if r.is_err() {
            self.phase = Phase::Closed;
            self.input.clear();
        }
        r
    }

    fn drive_inner(&mut self) -> Result<(), SessionError> {
        loop {
            match self.phase {
                Phase::Proxy => match proxy::decode(&self.input) {
                    Ok(proxy::Decoded::Header(h, used)) => {
                        self.input.drain(..used);
                        self.events.push_back(Event::Proxy(Some(h)));
                        self.phase = Phase::Handshake;
                    }
                    Ok(proxy::Decoded::Incomplete(_)) => return Ok(()),
                    Err(proxy::ProxyError::NoSignature) => {
                        self.events.push_back(Event::Proxy(None));
                        self.phase = Phase::Handshake;
                    }
                    Err(e) => return Err(SessionError::Handshake(e.to_string())),
                },
                Phase::Handshake => {
                    if self.input.is_empty() {
                        return Ok(());
                    }
                    let data = std::mem::take(&mut self.input);
                    let hs = &mut self.handshake;
                    let step = match crate::contain::catch(|| hs.process_bytes(&data)) {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return Err(SessionError::Handshake(format!("{e:?}"))),
                        Err(_) => {
                            return Err(SessionError::Handshake("handshake parser failed".into()))
                        }
                    };
                    match step {
                        HandshakeProcessResult::InProgress { response_bytes } => {
                            self.out.extend_from_slice(&response_bytes);
                            return Ok(());
                        }
                        HandshakeProcessResult::Completed {
                            response_bytes,
                            remaining_bytes,
                        } => {
                            self.out.extend_from_slice(&response_bytes);
                            self.input = remaining_bytes;
                            let config = ServerSessionConfig::new();
                            self.chunk_size = config.chunk_size;
                            let (session, initial) =
                                guard("session", || ServerSession::new(config))?;
                            self.session = Some(session);
                            self.phase = Phase::Commands;
                            self.apply(initial)?;
                        }
                    }
                }
                Phase::Commands => {
                    if self.input.is_empty() {
                        return Ok(());
                    }
                    // One byte at a time (see the module docs), until publish changes phase.
                    let mut fed = 0;
                    while fed < self.input.len() && self.phase == Phase::Commands {
                        self.fed_before_publish += 1;
                        if self.fed_before_publish > MAX_BYTES_BEFORE_PUBLISH {
                            return Err(SessionError::Malformed(
                                "too much data before publish".into(),
                            ));
                        }
                        let byte = [self.input[fed]];
                        fed += 1;
                        if self.opts.record {
                            self.recorded.push(byte[0]);
                        }
                        let results = {
                            let Some(s) = self.session.as_mut() else {
                                return Err(SessionError::Malformed("no session".into()));
                            };
                            guard("input", || s.handle_input(&byte))?
                        };
                        self.apply(results)?;
                    }
                    self.input.drain(..fed);
                    if self.phase == Phase::Commands {
                        return Ok(());
                    }
                }
                Phase::Publishing => {
                    if self.input.is_empty() {
                        return Ok(());
                    }
                    let data = std::mem::take(&mut self.input);
                    let results = {
                        let Some(s) = self.session.as_mut() else {
                            return Err(SessionError::Malformed("no session".into()));
                        };
                        guard("input", || s.handle_input(&data))?
                    };
                    self.apply(results)?;
                    return Ok(());
                }
                Phase::AwaitingAdmission | Phase::Closed => return Ok(()),
            }
        }
    }

    /// Act on rml_rtmp's results: queue bytes, answer what needs no decision, raise events.
    fn apply(&mut self, results: Vec<ServerSessionResult>) -> Result<(), SessionError> {
        let mut queue: VecDeque<ServerSessionResult> = results.into();
        while let Some(r) = queue.pop_front() {
            match r {
                ServerSessionResult::OutboundResponse(p) => self.out.extend_from_slice(&p.bytes),
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
                ServerSessionResult::RaisedEvent(ev) => {
                    let Some(s) = self.session.as_mut() else {
                        return Err(SessionError::Malformed("no session".into()));
                    };
                    match ev {
                        ServerSessionEvent::ConnectionRequested {
                            request_id,
                            app_name,
                        } => match parse_app(&app_name) {
                            Some(key) => {
                                self.key_in_app = key;
                                queue.extend(guard("connect", || s.accept_request(request_id))?);
                            }
                            None => {
                                let out = guard("connect", || {
                                    s.reject_request(
                                        request_id,
                                        "NetConnection.Connect.Rejected",
                                        "unknown application: publish to rtmp://HOST/live with your stream key",
                                    )
                                })?;
                                self.flush_results(out);
                                return Err(SessionError::Refused("unknown application"));
                            }
                        },
                        ServerSessionEvent::PublishStreamRequested {
                            request_id,
                            stream_key,
                            ..
                        } => {
                            if self.phase != Phase::Commands {
                                let out = guard("publish", || {
                                    s.reject_request(
                                        request_id,
                                        "NetStream.Publish.BadName",
                                        "this connection already publishes a stream",
                                    )
                                })?;
                                self.flush_results(out);
                                continue;
                            }
                            let key = if stream_key.is_empty() {
                                self.key_in_app.clone().unwrap_or_default()
                            } else {
                                stream_key
                            };
                            self.request_id = Some(request_id);
                            self.phase = Phase::AwaitingAdmission;
                            self.events.push_back(Event::PublishRequested { key });
                        }
                        ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                            let out = guard("play", || {
                                s.reject_request(
                                    request_id,
                                    "NetStream.Play.Failed",
                                    "this is an ingest: play over HLS",
                                )
                            })?;
                            self.flush_results(out);
                            return Err(SessionError::Refused("play requested"));
                        }
                        ServerSessionEvent::PublishStreamFinished { .. } => {
                            self.events.push_back(Event::Finished);
                        }
                        ServerSessionEvent::VideoDataReceived {
                            data, timestamp, ..
                        } if self.phase == Phase::Publishing => {
                            self.events.push_back(Event::Media {
                                kind: MediaKind::Video,
                                timestamp: timestamp.value,
                                data,
                            });
                        }
                        ServerSessionEvent::StreamMetadataChanged { metadata, .. }
                            if self.phase == Phase::Publishing =>
                        {
                            self.events.push_back(Event::Metadata {
                                fps_milli: metadata
                                    .video_frame_rate
                                    .filter(|f| f.is_finite() && *f > 0.0)
                                    .map(|f| {
                                        (f64::from(f) * 1000.0).round().min(f64::from(u32::MAX))
                                            as u32
                                    }),
                            });
                        }
                        ServerSessionEvent::AudioDataReceived {
                            data, timestamp, ..
                        } if self.phase == Phase::Publishing => {
                            self.events.push_back(Event::Media {
                                kind: MediaKind::Audio,
                                timestamp: timestamp.value,
                                data,
                            });
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    fn flush_results(&mut self, results: Vec<ServerSessionResult>) {
        for r in results {
            if let ServerSessionResult::OutboundResponse(p) = r {
                self.out.extend_from_slice(&p.bytes);
            }
        }
    }
}

/// The client side of the RTMP handshake (the balancer to a node), without IO.
pub struct ClientHandshake {
    hs: Handshake,
}

/// A step of [`ClientHandshake`].
pub enum ClientStep {
    /// Send these bytes and wait for more.
    Continue(Vec<u8>),
    /// Send these bytes; the handshake is done and `remaining` is the server's first data.
    Done { send: Vec<u8>, remaining: Vec<u8> },
}

impl ClientHandshake {
    /// Start; returns the handshake and the C0+C1 bytes to send.
    pub fn start() -> Result<(Self, Vec<u8>), SessionError> {
        let mut hs = Handshake::new(PeerType::Client);
        let c0c1 = match crate::contain::catch(|| hs.generate_outbound_p0_and_p1()) {
            Ok(Ok(b)) => b,
            _ => return Err(SessionError::Handshake("cannot start the handshake".into())),
        };
        Ok((Self { hs }, c0c1))
    }

    /// Bytes from the server.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<ClientStep, SessionError> {
        let hs = &mut self.hs;
        match crate::contain::catch(|| hs.process_bytes(data)) {
            Ok(Ok(HandshakeProcessResult::InProgress { response_bytes })) => {
                Ok(ClientStep::Continue(response_bytes))
            }
            Ok(Ok(HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            })) => Ok(ClientStep::Done {
                send: response_bytes,
                remaining: remaining_bytes,
            }),
            Ok(Err(e)) => Err(SessionError::Handshake(format!("{e:?}"))),
            Err(_) => Err(SessionError::Handshake("handshake parser failed".into())),
        }
    }
}

#[cfg(test)]
#[path = "rtmp_test.rs"]
mod tests;
