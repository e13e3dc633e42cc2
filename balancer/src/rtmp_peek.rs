//! Stream-key affinity for RTMP: the balancer speaks RTMP with the encoder up to its
//! `publish` (to learn the key), then hands the connection to the node without the encoder
//! noticing.
//!
//! 1. [`peek`]: run the shared RTMP server core (`wire::rtmp::ServerCore`, the same one the
//!    node runs) with recording on: it answers `connect`/`createStream` and records every byte
//!    the encoder sent after the handshake, until `publish` names the key.
//! 2. The caller places the stream by the key's fingerprint (a reconnecting encoder goes back
//!    to its node, or takes its numbering to another one).
//! 3. [`handshake_with_node`] shakes hands with the node as a client; the recorded bytes are
//!    replayed to it, so its chunk decoder sees exactly the encoder's chunk stream (chunk size,
//!    header compression) and answers the same commands.
//! 4. From then on encoder → node is a byte relay. Node → encoder goes through [`Downstream`]:
//!    the node's answers to commands the balancer already answered are dropped, and from the
//!    `publish` status on every message is re-serialised with full chunk headers and the chunk
//!    size the encoder was told, so the encoder's decoder never sees state it did not get.
//!    [`Downstream`] follows the node's chunk stream with `wire::chunk::ChunkReader`, so its
//!    whole state serialises (serde): a live relay can be handed to another balancer process.
//!
//! What rml_rtmp parses here (inside the core) comes from the network; a panic inside it is
//! caught and ends that connection only. The chunk reader does not panic.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::Instant,
};
use wire::{
    chunk::{self, ChunkError, ChunkReader, Message},
    rtmp::{ClientHandshake, ClientStep, Event, ServerCore, ServerOptions, SessionError, Timeouts},
};

/// What an encoder may send before `publish` (the core enforces it).
pub const MAX_PEEK_BYTES: usize = wire::rtmp::MAX_BYTES_BEFORE_PUBLISH;
/// Read buffer while peeking: the handshake and the commands up to `publish` arrive in
/// messages of a few KiB at most, and a connection that never publishes should cost little.
const READ_BUF: usize = 4 * 1024;
/// The balancer's deadlines before it has a node: the handshake, then the whole opening up to
/// `publish` (encoders send connect ... publish at once). Media never flows through the core
/// here: after `publish` the connection is a byte relay.
pub const PEEK_TIMEOUTS: Timeouts = Timeouts {
    handshake: Duration::from_secs(10),
    publish: Duration::from_secs(10),
    media: Duration::from_secs(10),
};

/// Why a peek or hand-over failed.
#[derive(Debug, thiserror::Error)]
pub enum PeekError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed before publishing.
    #[error("closed before publish")]
    Closed,
    /// The RTMP session failed: not RTMP, a deadline, a wrong application, a play request.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The node's chunk stream cannot be followed, or a chunk size is out of range.
    #[error("RTMP chunk stream from the node: {0}")]
    Chunk(#[from] ChunkError),
}

/// Message type of an AMF0 command.
const TYPE_AMF0_COMMAND: u8 = 20;
/// How an AMF0 command named `onStatus` starts: the AMF0 string marker, the name's length
/// (u16 big endian) and the name.
const ON_STATUS: &[u8] = b"\x02\x00\x08onStatus";
/// What is pushed into the chunk reader at once: after `next_message` returned `None` it holds
/// less than a chunk header, so a piece this long always fits its buffer.
const PUSH_PIECE: usize = chunk::MAX_BUFFERED_BYTES - chunk::MAX_HEADER_LEN;

/// An AMF0 `onStatus` command: the node's answer to `publish`, the first message the
/// encoder has not had from us.
fn is_on_status(msg: &Message) -> bool {
    msg.type_id == TYPE_AMF0_COMMAND && msg.payload.starts_with(ON_STATUS)
}

/// The encoder's publish, held until a node takes it.
pub struct Peeked {
    /// The stream key (a secret: never logged).
    pub key: String,
    /// Every byte the encoder sent after its handshake.
    pub recorded: Vec<u8>,
    /// The chunk size the encoder was told to expect from us.
    pub chunk_size: u32,
    /// The encoder's address as a PROXY v2 header named it (our own RTMPS front, see
    /// [`crate::rtmps`]); `None` without one.
    pub proxied: Option<std::net::SocketAddr>,
    core: ServerCore,
}

impl Peeked {
    /// Refuse the publish with an RTMP status the encoder shows its user.
    pub async fn refuse<S: AsyncWrite + Unpin>(
        mut self,
        io: &mut S,
        description: &str,
    ) -> Result<(), PeekError> {
        self.core
            .reject_publish("NetStream.Publish.Rejected", description)?;
        if let Some(b) = self.core.poll_transmit() {
            io.write_all(&b).await?;
        }
        io.flush().await?;
        Ok(())
    }
}

/// A connection's first 1,537 bytes (C0+C1, or a PROXY header and most of them), read before
/// any session state exists ([`server::opening::read_opening`]), within the handshake deadline
/// from `accepted`.
pub async fn read_opening<S: AsyncRead + Unpin>(
    io: &mut S,
    accepted: Instant,
) -> Result<Vec<u8>, PeekError> {
    let len = wire::rtmp::C0_C1_LEN;
    server::opening::read_opening(io, accepted + PEEK_TIMEOUTS.handshake, len, |b| {
        b.len() >= len
    })
    .await
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::TimedOut => PeekError::Session(SessionError::Timeout("handshake")),
        std::io::ErrorKind::UnexpectedEof => PeekError::Closed,
        _ => PeekError::Io(e),
    })
}

/// Run the encoder side up to `publish`, within [`PEEK_TIMEOUTS`] from `accepted`, starting
/// with the `opening` already read ([`read_opening`]); with `expect_proxy`, the connection
/// opens with a PROXY v2 header (only our own RTMPS front's are accepted).
pub async fn peek<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    expect_proxy: bool,
    accepted: Instant,
    opening: Vec<u8>,
) -> Result<Peeked, PeekError> {
    let mut buf = vec![0u8; READ_BUF];
    let mut proxied = None;
    let mut core = ServerCore::new(
        ServerOptions {
            expect_proxy,
            record: true,
            timeouts: PEEK_TIMEOUTS,
        },
        accepted,
    );
    core.handle_input(&opening, Instant::now())?;
    drop(opening);
    loop {
        let failed = loop {
            if let Some(b) = core.poll_transmit() {
                io.write_all(&b).await?;
                continue;
            }
            match core.poll_event() {
                Some(Event::PublishRequested { key }) => {
                    return Ok(Peeked {
                        key,
                        recorded: core.recorded().to_vec(),
                        chunk_size: core.chunk_size(),
                        proxied,
                        core,
                    });
                }
                Some(Event::Proxy(h)) => {
                    proxied = h.and_then(|h| h.source);
                    continue;
                }
                Some(_) => continue,
                None => break None,
            }
        };
        if let Some(e) = failed {
            return Err(e);
        }
        let read = match core.poll_timeout() {
            Some(at) => tokio::time::timeout_at(at, io.read(&mut buf)).await.ok(),
            None => Some(io.read(&mut buf).await),
        };
        let step = match read {
            None => core.handle_timeout(Instant::now()),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(0)) => return Err(PeekError::Closed),
            Some(Ok(n)) => core.handle_input(&buf[..n], Instant::now()),
        };
        if let Err(e) = step {
            // A refusal (wrong application, play) carries a status for the encoder.
            if let Some(b) = core.poll_transmit() {
                let _ = io.write_all(&b).await;
                let _ = io.flush().await;
            }
            return Err(e.into());
        }
    }
}

/// Handshake with the node as an RTMP client; returns the node's bytes past the handshake.
pub async fn handshake_with_node<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
) -> Result<Vec<u8>, PeekError> {
    let (mut hs, c0c1) = ClientHandshake::start()?;
    io.write_all(&c0c1).await?;
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Err(PeekError::Closed);
        }
        match hs.handle_input(&buf[..n])? {
            ClientStep::Continue(b) => io.write_all(&b).await?,
            ClientStep::Done { send, remaining } => {
                io.write_all(&send).await?;
                return Ok(remaining);
            }
        }
    }
}

/// Node → encoder after the hand-over (see the module docs). Plain data: serialise it to hand
/// the relay to another process, which goes on with the node's next byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Downstream {
    /// The node's chunk stream, at the node's chunk size.
    from_node: ChunkReader,
    /// The chunk size the encoder was told by our session.
    encoder_chunk_size: u32,
    /// The node's `publish` status went by: every message is forwarded.
    forwarding: bool,
}

impl Downstream {
    /// `encoder_chunk_size`: the chunk size the encoder was told by our session.
    pub fn new(encoder_chunk_size: u32) -> Result<Self, PeekError> {
        chunk::check_chunk_size(encoder_chunk_size)?;
        Ok(Self {
            from_node: ChunkReader::new(),
            encoder_chunk_size,
            forwarding: false,
        })
    }

    /// Bytes from the node in, bytes for the encoder out.
    pub fn on_node_bytes(&mut self, bytes: &[u8]) -> Result<Vec<u8>, PeekError> {
        let mut out = Vec::new();
        for piece in bytes.chunks(PUSH_PIECE) {
            self.from_node.push(piece)?;
            while let Some(msg) = self.from_node.next_message()? {
                if msg.type_id == chunk::TYPE_SET_CHUNK_SIZE {
                    // The node's chunk size applies to what we read from it, not to the
                    // encoder.
                    let size = chunk::parse_set_chunk_size(&msg.payload)?;
                    self.from_node.set_chunk_size(size)?;
                    continue;
                }
                if !self.forwarding {
                    // Answers to connect/createStream were given by us already; the publish
                    // status is the first thing the encoder has not seen.
                    if !is_on_status(&msg) {
                        continue;
                    }
                    self.forwarding = true;
                }
                chunk::write_message(&mut out, &msg, self.encoder_chunk_size)?;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "rtmp_peek_test.rs"]
mod tests;
