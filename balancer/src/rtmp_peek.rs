//! Stream-key affinity for RTMP: the balancer speaks RTMP with the encoder up to its
//! `publish` (to learn the key), then hands the connection to the node without the encoder
//! noticing.
//!
//! 1. [`peek`]: handshake with the encoder as a server and answer `connect`/`createStream`
//!    with rml_rtmp's own server session, recording every byte the encoder sent after the
//!    handshake, until `publish` names the key.
//! 2. The caller places the stream by the key's fingerprint (a reconnecting encoder goes back
//!    to its node, or takes its numbering to another one).
//! 3. [`handshake_with_node`] shakes hands with the node as a client; the recorded bytes are
//!    replayed to it, so its chunk decoder sees exactly the encoder's chunk stream (chunk size,
//!    header compression) and answers the same commands.
//! 4. From then on encoder → node is a byte relay. Node → encoder goes through [`Downstream`]:
//!    the node's answers to commands the balancer already answered are dropped, and from the
//!    `publish` status on every message is re-serialised with full chunk headers and the chunk
//!    size the encoder was told, so the encoder's decoder never sees state it did not get.
//!
//! Everything rml_rtmp parses here comes from the network; a panic inside it is caught and
//! ends that connection only.

use std::panic::AssertUnwindSafe;

use rml_rtmp::{
    chunk_io::{ChunkDeserializer, ChunkSerializer},
    handshake::{Handshake, HandshakeProcessResult, PeerType},
    messages::RtmpMessage,
    sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult},
    time::RtmpTimestamp,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What an encoder may send before `publish`: connect, releaseStream, FCPublish, createStream
/// and publish are a few hundred bytes. More is not an encoder about to publish.
pub const MAX_PEEK_BYTES: usize = 64 * 1024;
/// Read buffer while peeking.
const READ_BUF: usize = 16 * 1024;
/// The application name encoders publish to (`rtmp://HOST/live/KEY`).
const APP: &str = "live";

/// Why a peek or hand-over failed.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed before publishing.
    #[error("closed before publish")]
    Closed,
    /// Not RTMP, or RTMP we cannot follow.
    #[error("malformed RTMP: {0}")]
    Malformed(String),
    /// More than [`MAX_PEEK_BYTES`] before `publish`.
    #[error("too much data before publish")]
    TooLong,
    /// The peer wants to play, or a wrong application.
    #[error("refused: {0}")]
    Refused(String),
}

fn guard<T, E: std::fmt::Display>(f: impl FnOnce() -> Result<T, E>) -> Result<T, PeekError> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| PeekError::Malformed("RTMP parser failed".into()))?
        .map_err(|e| PeekError::Malformed(e.to_string()))
}

/// The encoder's publish, held until a node takes it.
pub struct Peeked {
    /// The stream key (a secret: never logged).
    pub key: String,
    /// Every byte the encoder sent after its handshake.
    pub recorded: Vec<u8>,
    /// The chunk size the encoder was told to expect from us.
    pub chunk_size: u32,
    session: ServerSession,
    request_id: u32,
}

impl Peeked {
    /// Refuse the publish with an RTMP status the encoder shows its user.
    pub async fn refuse<S: AsyncWrite + Unpin>(
        mut self,
        io: &mut S,
        description: &str,
    ) -> Result<(), PeekError> {
        let out = guard(|| {
            self.session
                .reject_request(self.request_id, "NetStream.Publish.Rejected", description)
        })?;
        write_results(io, out).await?;
        io.flush().await?;
        Ok(())
    }
}

async fn write_results<S: AsyncWrite + Unpin>(
    io: &mut S,
    results: Vec<ServerSessionResult>,
) -> Result<(), PeekError> {
    for r in results {
        if let ServerSessionResult::OutboundResponse(p) = r {
            io.write_all(&p.bytes).await?;
        }
    }
    Ok(())
}

/// Run the encoder side up to `publish`. Bound the time with a timeout around this call.
pub async fn peek<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) -> Result<Peeked, PeekError> {
    let mut buf = vec![0u8; READ_BUF];
    let mut hs = Handshake::new(PeerType::Server);
    let remaining = loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Err(PeekError::Closed);
        }
        match guard(|| hs.process_bytes(&buf[..n]))? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                io.write_all(&response_bytes).await?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                io.write_all(&response_bytes).await?;
                break remaining_bytes;
            }
        }
    };
    let config = ServerSessionConfig::new();
    let chunk_size = config.chunk_size;
    let (mut session, initial) = guard(|| ServerSession::new(config))?;
    write_results(io, initial).await?;
    let mut recorded = Vec::new();
    let mut input = remaining;
    loop {
        if !input.is_empty() {
            recorded.extend_from_slice(&input);
            if recorded.len() > MAX_PEEK_BYTES {
                return Err(PeekError::TooLong);
            }
            let mut pending = guard(|| session.handle_input(&input))?;
            input.clear();
            while !pending.is_empty() {
                for r in std::mem::take(&mut pending) {
                    match r {
                        ServerSessionResult::OutboundResponse(p) => io.write_all(&p.bytes).await?,
                        ServerSessionResult::RaisedEvent(
                            ServerSessionEvent::ConnectionRequested {
                                request_id,
                                app_name,
                            },
                        ) => {
                            if app_name.trim_matches('/') != APP {
                                let out = guard(|| {
                                    session.reject_request(request_id, "NetConnection.Connect.Rejected", "unknown application: publish to rtmp://HOST/live/STREAM_KEY")
                                })?;
                                write_results(io, out).await?;
                                return Err(PeekError::Refused("unknown application".into()));
                            }
                            pending.extend(guard(|| session.accept_request(request_id))?);
                        }
                        ServerSessionResult::RaisedEvent(
                            ServerSessionEvent::PublishStreamRequested {
                                request_id,
                                stream_key,
                                ..
                            },
                        ) => {
                            return Ok(Peeked {
                                key: stream_key,
                                recorded,
                                chunk_size,
                                session,
                                request_id,
                            });
                        }
                        ServerSessionResult::RaisedEvent(
                            ServerSessionEvent::PlayStreamRequested { request_id, .. },
                        ) => {
                            let out = guard(|| {
                                session.reject_request(
                                    request_id,
                                    "NetStream.Play.Failed",
                                    "this is an ingest: play over HLS",
                                )
                            })?;
                            write_results(io, out).await?;
                            return Err(PeekError::Refused("play requested".into()));
                        }
                        _ => {}
                    }
                }
            }
        }
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Err(PeekError::Closed);
        }
        input.extend_from_slice(&buf[..n]);
    }
}

/// Handshake with the node as an RTMP client; returns the node's bytes past the handshake.
pub async fn handshake_with_node<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
) -> Result<Vec<u8>, PeekError> {
    let mut hs = Handshake::new(PeerType::Client);
    let c0c1 = guard(|| hs.generate_outbound_p0_and_p1())?;
    io.write_all(&c0c1).await?;
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Err(PeekError::Closed);
        }
        match guard(|| hs.process_bytes(&buf[..n]))? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                io.write_all(&response_bytes).await?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                io.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// Node → encoder after the hand-over (see the module docs).
pub struct Downstream {
    from_node: ChunkDeserializer,
    to_encoder: ChunkSerializer,
    forwarding: bool,
}

impl Downstream {
    /// `encoder_chunk_size`: the chunk size the encoder was told by our session.
    pub fn new(encoder_chunk_size: u32) -> Result<Self, PeekError> {
        let mut to_encoder = ChunkSerializer::new();
        // The encoder already has this size from our session; the SetChunkSize packet this
        // returns is not sent again.
        guard(|| to_encoder.set_max_chunk_size(encoder_chunk_size, RtmpTimestamp::new(0)))?;
        Ok(Self {
            from_node: ChunkDeserializer::new(),
            to_encoder,
            forwarding: false,
        })
    }

    /// Bytes from the node in, bytes for the encoder out.
    pub fn on_node_bytes(&mut self, bytes: &[u8]) -> Result<Vec<u8>, PeekError> {
        let mut out = Vec::new();
        let mut input = bytes;
        loop {
            let msg = match guard(|| self.from_node.get_next_message(input))? {
                Some(m) => m,
                None => break,
            };
            input = &[];
            let parsed = guard(|| msg.to_rtmp_message()).ok();
            if let Some(RtmpMessage::SetChunkSize { size }) = &parsed {
                // The node's chunk size applies to what we read from it, not to the encoder.
                let size = *size as usize;
                guard(|| self.from_node.set_max_chunk_size(size))?;
                continue;
            }
            if !self.forwarding {
                // Answers to connect/createStream were given by us already; the publish status
                // is the first thing the encoder has not seen.
                match &parsed {
                    Some(RtmpMessage::Amf0Command { command_name, .. })
                        if command_name == "onStatus" =>
                    {
                        self.forwarding = true
                    }
                    _ => continue,
                }
            }
            let packet = guard(|| self.to_encoder.serialize(&msg, true, false))?;
            out.extend_from_slice(&packet.bytes);
        }
        Ok(out)
    }
}
