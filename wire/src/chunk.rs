//! The RTMP chunk stream (RTMP 1.0 spec, section 5.3) as plain data: a decoder whose whole
//! state can be serialised, and a stateless encoder. The balancer follows the node's chunk
//! stream with it (`balancer::rtmp_peek::Downstream`) and can hand a live relay, state and
//! all, to another balancer process; rml_rtmp's `ChunkDeserializer` keeps per-chunk-stream
//! headers that cannot be read out.
//!
//! ```text
//! bytes ──push──▶ ChunkReader ──next_message──▶ Message { csid, timestamp, type_id, stream_id, payload }
//!                    ▲ set_chunk_size (after a SetChunkSize message, see parse_set_chunk_size)
//! Message ──write_message(chunk_size)──▶ format 0 header + format 3 continuation chunks
//! ```
//! Feed with [`ChunkReader::push`], then call [`ChunkReader::next_message`] until it returns
//! `None`. It returns at most one message per call and parses nothing past it, so a
//! SetChunkSize can be applied ([`ChunkReader::set_chunk_size`]) before the chunks that follow
//! it are cut. At the end of the input, [`ChunkReader::finish`] says whether it stopped inside
//! a chunk. [`write_message`] serialises one message with full headers, needing no state.
//!
//! The reader decodes basic headers with 1, 2 and 3-byte chunk stream IDs, message headers of
//! formats 0 to 3, extended timestamps (also on format 3 chunks of a chunk stream whose last
//! header had one, as Flash, FFmpeg and rml_rtmp send them) and interleaved partial messages
//! on different chunk streams. A format 0, 1 or 2 header on a chunk stream whose message is
//! incomplete continues that message if it restates its fields (rml_rtmp's serializer with
//! `force_uncompressed` writes a format 0 header on every chunk); its timestamp is not applied
//! a second time.
//!
//! The bytes come from the network: nothing here panics, whatever the input, and memory is
//! bounded by [`MAX_BUFFERED_BYTES`], [`MAX_CHUNK_STREAMS`], [`MAX_MESSAGE_LEN`] and
//! [`MAX_INCOMPLETE_BYTES`]. After an error the stream cannot be followed: the reader keeps
//! returning the same error. A deserialised reader is checked for the same invariants.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserializer, Serializer};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The chunk size of both directions until a SetChunkSize says otherwise (spec 5.4.1).
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// The largest chunk size SetChunkSize can carry: its high bit must be zero (spec 5.4.1).
pub const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;
/// The largest message accepted. The 24-bit length field allows 16 MiB - 1; the largest
/// messages real peers send are video frames, and a 4K keyframe at a high bitrate is a few
/// MiB. Bounds what one announced message makes us hold.
pub const MAX_MESSAGE_LEN: u32 = 8 * 1024 * 1024;
/// The most bytes of incomplete messages held over all chunk streams at once, counted by
/// their announced lengths: a video frame and the audio, data and command messages
/// interleaved with it, with room to spare. Bounds memory per connection whatever the
/// number of chunk streams.
pub const MAX_INCOMPLETE_BYTES: usize = 2 * MAX_MESSAGE_LEN as usize;
/// The most chunk streams tracked. Peers use a handful (rml_rtmp 2 to 6, FFmpeg 2 to 8); each
/// costs its last header, and a chunk stream once used must be remembered for good, since a
/// later format 1, 2 or 3 header may refer to it. Bounds the headers a peer makes us keep.
pub const MAX_CHUNK_STREAMS: usize = 64;
/// The most bytes pushed but not parsed. [`ChunkReader::next_message`] parses everything up to
/// the end of the next message, so a caller that drains it after each push holds at most that
/// push plus an incomplete header ([`MAX_HEADER_LEN`]); this leaves room for a few network
/// reads (the balancer reads 64 KiB at a time) and bounds what a caller that forgets to drain
/// piles up.
pub const MAX_BUFFERED_BYTES: usize = 256 * 1024;
/// The longest chunk header: a 3-byte basic header, an 11-byte format 0 message header and a
/// 4-byte extended timestamp. What can stay buffered after `next_message` returned `None`
/// is shorter than this.
pub const MAX_HEADER_LEN: usize = 3 + 11 + 4;
/// The lowest chunk stream ID: 0 and 1 select the 2 and 3-byte basic header forms.
pub const MIN_CSID: u32 = 2;
/// The highest chunk stream ID the 3-byte basic header form can carry (65535 + 64).
pub const MAX_CSID: u32 = 65_599;
/// Message type of SetChunkSize (spec 5.4.1).
pub const TYPE_SET_CHUNK_SIZE: u8 = 1;

/// A 24-bit timestamp or delta field of this value means a 4-byte extended timestamp follows.
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;
/// The largest message length the 24-bit field can carry.
const MAX_LENGTH_FIELD: u32 = 0xFF_FFFF;

/// One complete RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The chunk stream it came on (or goes on).
    pub csid: u32,
    /// Absolute timestamp in milliseconds (wraps at 2^32).
    pub timestamp: u32,
    /// Message type (1 SetChunkSize, 8 audio, 9 video, 18 AMF0 data, 20 AMF0 command, ...).
    pub type_id: u8,
    /// Message stream ID.
    pub stream_id: u32,
    pub payload: Bytes,
}

/// Why a chunk stream cannot be followed, or a message cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk size {size} is outside 1..={max}", max = MAX_CHUNK_SIZE)]
    InvalidChunkSize { size: u32 },
    #[error("SetChunkSize payload is {len} bytes, not 4")]
    BadSetChunkSize { len: usize },
    #[error(
        "{buffered} unparsed bytes plus {pushed} pushed exceed the {max}-byte input buffer \
         (call next_message until it returns None before pushing more)",
        max = MAX_BUFFERED_BYTES
    )]
    BufferFull { buffered: usize, pushed: usize },
    #[error(
        "chunk stream {csid}: format {fmt} header without an earlier message on this chunk stream"
    )]
    NoPreviousHeader { csid: u32, fmt: u8 },
    #[error("chunk stream {csid}: one chunk stream more than the {max} tracked", max = MAX_CHUNK_STREAMS)]
    TooManyChunkStreams { csid: u32 },
    #[error("chunk stream {csid}: message of {length} bytes exceeds the {max}-byte limit", max = MAX_MESSAGE_LEN)]
    MessageTooLong { csid: u32, length: u32 },
    #[error(
        "chunk stream {csid}: a {length}-byte message on top of {incomplete} bytes of incomplete \
         messages exceeds the {max}-byte limit",
        max = MAX_INCOMPLETE_BYTES
    )]
    TooMuchIncomplete {
        csid: u32,
        length: u32,
        incomplete: usize,
    },
    #[error(
        "chunk stream {csid}: format {fmt} header changes the {field} of a message with \
         {received} of {length} bytes received"
    )]
    InterruptedMessage {
        csid: u32,
        fmt: u8,
        field: &'static str,
        received: usize,
        length: u32,
    },
    #[error(
        "input ended inside a chunk: {buffered} unparsed bytes, {incomplete} incomplete messages"
    )]
    Truncated { buffered: usize, incomplete: usize },
    #[error("chunk stream ID {csid} is outside {min}..={max}", min = MIN_CSID, max = MAX_CSID)]
    InvalidCsid { csid: u32 },
    #[error("a {len}-byte message does not fit the 24-bit message length field")]
    TooLongToWrite { len: usize },
    #[error("inconsistent chunk reader state: {0}")]
    InvalidState(&'static str),
}

/// Check a chunk size: 1 to [`MAX_CHUNK_SIZE`] (0 would never move a message forward).
pub fn check_chunk_size(size: u32) -> Result<(), ChunkError> {
    if (1..=MAX_CHUNK_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(ChunkError::InvalidChunkSize { size })
    }
}

/// The chunk size a SetChunkSize message (type [`TYPE_SET_CHUNK_SIZE`]) announces: 4 bytes big
/// endian, the high bit ignored (spec 5.4.1), checked with [`check_chunk_size`].
pub fn parse_set_chunk_size(payload: &[u8]) -> Result<u32, ChunkError> {
    let bytes: [u8; 4] = payload
        .try_into()
        .map_err(|_| ChunkError::BadSetChunkSize { len: payload.len() })?;
    let size = u32::from_be_bytes(bytes) & MAX_CHUNK_SIZE;
    check_chunk_size(size)?;
    Ok(size)
}

/// What a chunk stream remembers of its last header (the state format 1, 2 and 3 headers
/// leave out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Last {
    /// Timestamp of the current (or last) message.
    timestamp: u32,
    /// What a format 3 header starting a new message adds to the timestamp: the last format
    /// 1 or 2 delta, or a format 0 header's timestamp (as FFmpeg and rml_rtmp read it).
    delta: u32,
    /// The last header's 24-bit timestamp field was 0xFFFFFF: format 3 chunks on this chunk
    /// stream carry a 4-byte extended timestamp.
    extended: bool,
    length: u32,
    type_id: u8,
    stream_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ChunkStream {
    last: Last,
    /// The payload so far of a message not yet complete.
    partial: Option<Vec<u8>>,
}

/// The chunk streams seen, by chunk stream ID: a vector sorted by ID, grown one entry at a
/// time. A peer uses a handful, so it costs a few dozen bytes per stream where a `BTreeMap`
/// node costs about 600 bytes whatever it holds; the balancer keeps one reader per live relay
/// for hours. Serialised as the map it replaced, so a hand-over between releases reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Streams(Vec<(u32, ChunkStream)>);

impl Streams {
    fn index(&self, csid: u32) -> Result<usize, usize> {
        self.0.binary_search_by_key(&csid, |(id, _)| *id)
    }

    fn get(&self, csid: &u32) -> Option<&ChunkStream> {
        let i = self.index(*csid).ok()?;
        self.0.get(i).map(|(_, s)| s)
    }

    fn get_mut(&mut self, csid: &u32) -> Option<&mut ChunkStream> {
        let i = self.index(*csid).ok()?;
        self.0.get_mut(i).map(|(_, s)| s)
    }

    /// The chunk stream `csid`, added with `new` if it is not there.
    fn get_or_insert(&mut self, csid: u32, new: ChunkStream) -> Option<&mut ChunkStream> {
        let i = match self.index(csid) {
            Ok(i) => i,
            Err(i) => {
                // Exactly one more: chunk streams are added a few times per connection.
                self.0.reserve_exact(1);
                self.0.insert(i, (csid, new));
                i
            }
        };
        self.0.get_mut(i).map(|(_, s)| s)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn values(&self) -> impl Iterator<Item = &ChunkStream> {
        self.0.iter().map(|(_, s)| s)
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &ChunkStream)> {
        self.0.iter().map(|(id, s)| (*id, s))
    }
}

impl Serialize for Streams {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_map(self.0.iter().map(|(id, s)| (id, s)))
    }
}

impl<'de> Deserialize<'de> for Streams {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<u32, ChunkStream>::deserialize(de)?;
        Ok(Streams(map.into_iter().collect()))
    }
}

/// A chunk whose header was read and whose payload has not all arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Reading {
    csid: u32,
    /// Payload bytes of this chunk still to come (at least 1).
    left: u32,
}

/// The fields a message header carries, by format.
#[derive(Debug, Clone, Copy)]
enum Fields {
    /// Format 0.
    Full {
        timestamp: u32,
        length: u32,
        type_id: u8,
        stream_id: u32,
    },
    /// Format 1.
    Delta {
        delta: u32,
        length: u32,
        type_id: u8,
    },
    /// Format 2.
    DeltaOnly { delta: u32 },
    /// Format 3.
    Empty,
}

impl Fields {
    fn format(&self) -> u8 {
        match self {
            Fields::Full { .. } => 0,
            Fields::Delta { .. } => 1,
            Fields::DeltaOnly { .. } => 2,
            Fields::Empty => 3,
        }
    }

    /// The 24-bit timestamp or delta field, if the format has one.
    fn time_field(&self) -> Option<u32> {
        match *self {
            Fields::Full { timestamp, .. } => Some(timestamp),
            Fields::Delta { delta, .. } | Fields::DeltaOnly { delta } => Some(delta),
            Fields::Empty => None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Header {
    csid: u32,
    fields: Fields,
    /// The extended timestamp, when one followed the header.
    extended: Option<u32>,
}

/// Incremental RTMP chunk stream decoder (see the module docs). Its whole state, including
/// bytes pushed but not parsed and partial messages, serialises with serde.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ReaderState")]
pub struct ChunkReader {
    chunk_size: u32,
    /// Bytes pushed and not parsed yet (a deque: parsing takes from the front, pushing adds
    /// at the back).
    buffered: VecDeque<u8>,
    reading: Option<Reading>,
    streams: Streams,
}

/// A deserialised [`ChunkReader`] before its invariants are checked.
#[derive(Deserialize)]
struct ReaderState {
    chunk_size: u32,
    buffered: VecDeque<u8>,
    reading: Option<Reading>,
    streams: Streams,
}

impl TryFrom<ReaderState> for ChunkReader {
    type Error = ChunkError;

    fn try_from(s: ReaderState) -> Result<Self, ChunkError> {
        let r = ChunkReader {
            chunk_size: s.chunk_size,
            buffered: s.buffered,
            reading: s.reading,
            streams: s.streams,
        };
        r.check()?;
        Ok(r)
    }
}

impl Default for ChunkReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkReader {
    /// A reader at the start of a chunk stream, with the [`DEFAULT_CHUNK_SIZE`].
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            buffered: VecDeque::new(),
            reading: None,
            streams: Streams::default(),
        }
    }

    /// Bytes from the peer. Refused (and not kept) if they would make more than
    /// [`MAX_BUFFERED_BYTES`] unparsed: drain [`Self::next_message`] first.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), ChunkError> {
        let full = ChunkError::BufferFull {
            buffered: self.buffered.len(),
            pushed: bytes.len(),
        };
        match self.buffered.len().checked_add(bytes.len()) {
            Some(n) if n <= MAX_BUFFERED_BYTES => {
                self.buffered.extend(bytes);
                Ok(())
            }
            _ => Err(full),
        }
    }

    /// The peer's new chunk size, for the chunks after the SetChunkSize message that
    /// announced it (see [`parse_set_chunk_size`]).
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        check_chunk_size(size)?;
        self.chunk_size = size;
        Ok(())
    }

    /// The chunk size the peer's chunks are cut to.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Bytes pushed and not parsed yet.
    pub fn buffered_len(&self) -> usize {
        self.buffered.len()
    }

    /// The input ended: an error if it ended inside a chunk or a message.
    pub fn finish(&self) -> Result<(), ChunkError> {
        let incomplete = self
            .streams
            .values()
            .filter(|s| s.partial.is_some())
            .count();
        if self.buffered.is_empty() && incomplete == 0 && self.reading.is_none() {
            Ok(())
        } else {
            Err(ChunkError::Truncated {
                buffered: self.buffered.len(),
                incomplete,
            })
        }
    }

    /// The next complete message, or `None` until more bytes are pushed. Parses nothing past
    /// the message it returns.
    pub fn next_message(&mut self) -> Result<Option<Message>, ChunkError> {
        // One slice to parse from (moves bytes only when a push wrapped around).
        self.buffered.make_contiguous();
        let mut pos = 0;
        let result = self.parse(&mut pos);
        // What was parsed stays parsed, also when an error follows it: the next call meets
        // the same error.
        let pos = pos.min(self.buffered.len());
        self.buffered.drain(..pos);
        if self.buffered.is_empty() {
            // Give the memory back: a relay's reader sits idle between the node's rare
            // messages for hours, and the next push allocates what it needs.
            self.buffered = VecDeque::new();
        }
        result
    }

    fn parse(&mut self, pos: &mut usize) -> Result<Option<Message>, ChunkError> {
        loop {
            let rest = self.buffered.as_slices().0.get(*pos..).unwrap_or_default();
            if let Some(chunk) = self.reading {
                if rest.is_empty() {
                    return Ok(None);
                }
                let take = rest
                    .len()
                    .min(usize::try_from(chunk.left).unwrap_or(usize::MAX));
                let taken = u32::try_from(take)
                    .map_err(|_| ChunkError::InvalidState("chunk longer than u32"))?;
                let stream = self
                    .streams
                    .get_mut(&chunk.csid)
                    .ok_or(ChunkError::InvalidState("chunk on an unknown chunk stream"))?;
                let partial = stream
                    .partial
                    .as_mut()
                    .ok_or(ChunkError::InvalidState("chunk outside a message"))?;
                partial.extend_from_slice(rest.get(..take).unwrap_or_default());
                *pos = pos.saturating_add(take);
                let left = chunk.left.saturating_sub(taken);
                if left > 0 {
                    self.reading = Some(Reading { left, ..chunk });
                    return Ok(None);
                }
                self.reading = None;
                if let Some(m) = complete(chunk.csid, stream) {
                    return Ok(Some(m));
                }
                continue;
            }
            let Some((header, used)) = parse_header(rest, &self.streams)? else {
                return Ok(None);
            };
            let done = self.apply(header)?;
            *pos = pos.saturating_add(used);
            if let Some(m) = done {
                return Ok(Some(m));
            }
        }
    }

    /// Take a parsed header: check it against the chunk stream's state, then commit it. A
    /// zero-length message is complete at once.
    fn apply(&mut self, h: Header) -> Result<Option<Message>, ChunkError> {
        let csid = h.csid;
        let fmt = h.fields.format();
        let existing = self.streams.get(&csid);
        let prev = existing.map(|s| s.last);
        let received = existing.and_then(|s| s.partial.as_ref().map(Vec::len));
        // The timestamp or delta the header gives, with its extended form.
        let time = h.fields.time_field().map(|f| h.extended.unwrap_or(f));
        let extended = h.fields.time_field().map(|f| f == EXTENDED_TIMESTAMP);

        let (last, received) = match (received, prev) {
            (Some(received), Some(prev)) => {
                // A message is in progress here: this chunk continues it.
                let interrupted = |field| ChunkError::InterruptedMessage {
                    csid,
                    fmt,
                    field,
                    received,
                    length: prev.length,
                };
                match h.fields {
                    Fields::Full {
                        length,
                        type_id,
                        stream_id,
                        ..
                    } => {
                        if time != Some(prev.timestamp) {
                            return Err(interrupted("timestamp"));
                        }
                        if stream_id != prev.stream_id {
                            return Err(interrupted("message stream ID"));
                        }
                        check_same(length, type_id, prev, interrupted)?;
                    }
                    Fields::Delta {
                        length, type_id, ..
                    } => check_same(length, type_id, prev, interrupted)?,
                    Fields::DeltaOnly { .. } | Fields::Empty => {}
                }
                let last = Last {
                    extended: extended.unwrap_or(prev.extended),
                    ..prev
                };
                (last, received)
            }
            (Some(_), None) => return Err(ChunkError::InvalidState("message without a header")),
            (None, _) => {
                let last = match (h.fields, prev) {
                    (
                        Fields::Full {
                            length,
                            type_id,
                            stream_id,
                            ..
                        },
                        _,
                    ) => {
                        let t = time.unwrap_or_default();
                        Last {
                            timestamp: t,
                            delta: t,
                            extended: extended.unwrap_or_default(),
                            length,
                            type_id,
                            stream_id,
                        }
                    }
                    (
                        Fields::Delta {
                            length, type_id, ..
                        },
                        Some(prev),
                    ) => {
                        let d = time.unwrap_or_default();
                        Last {
                            timestamp: prev.timestamp.wrapping_add(d),
                            delta: d,
                            extended: extended.unwrap_or_default(),
                            length,
                            type_id,
                            ..prev
                        }
                    }
                    (Fields::DeltaOnly { .. }, Some(prev)) => {
                        let d = time.unwrap_or_default();
                        Last {
                            timestamp: prev.timestamp.wrapping_add(d),
                            delta: d,
                            extended: extended.unwrap_or_default(),
                            ..prev
                        }
                    }
                    (Fields::Empty, Some(prev)) => {
                        // With an extended timestamp, it is this message's delta.
                        let d = h.extended.unwrap_or(prev.delta);
                        Last {
                            timestamp: prev.timestamp.wrapping_add(d),
                            delta: d,
                            ..prev
                        }
                    }
                    (_, None) => return Err(ChunkError::NoPreviousHeader { csid, fmt }),
                };
                if last.length > MAX_MESSAGE_LEN {
                    return Err(ChunkError::MessageTooLong {
                        csid,
                        length: last.length,
                    });
                }
                if existing.is_none() && self.streams.len() >= MAX_CHUNK_STREAMS {
                    return Err(ChunkError::TooManyChunkStreams { csid });
                }
                let incomplete = self.incomplete_bytes();
                let length = usize::try_from(last.length).unwrap_or(usize::MAX);
                if incomplete.saturating_add(length) > MAX_INCOMPLETE_BYTES {
                    return Err(ChunkError::TooMuchIncomplete {
                        csid,
                        length: last.length,
                        incomplete,
                    });
                }
                (last, 0)
            }
        };
        let remaining = u32::try_from(received)
            .ok()
            .and_then(|r| last.length.checked_sub(r))
            .ok_or(ChunkError::InvalidState(
                "more payload than the message length",
            ))?;

        // Checked: commit.
        let stream = self
            .streams
            .get_or_insert(
                csid,
                ChunkStream {
                    last,
                    partial: None,
                },
            )
            .ok_or(ChunkError::InvalidState("chunk stream not added"))?;
        stream.last = last;
        if stream.partial.is_none() {
            stream.partial = Some(Vec::new());
        }
        if remaining == 0 {
            return Ok(complete(csid, stream));
        }
        self.reading = Some(Reading {
            csid,
            left: remaining.min(self.chunk_size),
        });
        Ok(None)
    }

    /// Announced bytes of the messages in progress.
    fn incomplete_bytes(&self) -> usize {
        self.streams
            .values()
            .filter(|s| s.partial.is_some())
            .map(|s| usize::try_from(s.last.length).unwrap_or(usize::MAX))
            .fold(0, usize::saturating_add)
    }

    /// The invariants `next_message` keeps, for a deserialised reader.
    fn check(&self) -> Result<(), ChunkError> {
        let bad = ChunkError::InvalidState;
        check_chunk_size(self.chunk_size)?;
        if self.buffered.len() > MAX_BUFFERED_BYTES {
            return Err(bad("more buffered bytes than the limit"));
        }
        if self.streams.len() > MAX_CHUNK_STREAMS {
            return Err(bad("more chunk streams than the limit"));
        }
        for (csid, s) in self.streams.iter() {
            if !(MIN_CSID..=MAX_CSID).contains(&csid) {
                return Err(bad("chunk stream ID out of range"));
            }
            if s.last.length > MAX_MESSAGE_LEN {
                return Err(bad("message longer than the limit"));
            }
            if let Some(p) = &s.partial {
                if u32::try_from(p.len()).map_or(true, |n| n >= s.last.length) {
                    return Err(bad("partial message not shorter than its length"));
                }
            }
        }
        if self.incomplete_bytes() > MAX_INCOMPLETE_BYTES {
            return Err(bad("more incomplete bytes than the limit"));
        }
        if let Some(r) = self.reading {
            let stream = self
                .streams
                .get(&r.csid)
                .ok_or(bad("chunk on an unknown chunk stream"))?;
            let received = stream
                .partial
                .as_ref()
                .ok_or(bad("chunk outside a message"))?
                .len();
            let remaining = u32::try_from(received)
                .ok()
                .and_then(|n| stream.last.length.checked_sub(n))
                .unwrap_or_default();
            if r.left == 0 || r.left > remaining {
                return Err(bad("chunk longer than what is left of its message"));
            }
        }
        Ok(())
    }
}

/// A restating header must keep the message's length and type.
fn check_same(
    length: u32,
    type_id: u8,
    prev: Last,
    interrupted: impl Fn(&'static str) -> ChunkError,
) -> Result<(), ChunkError> {
    if length != prev.length {
        return Err(interrupted("length"));
    }
    if type_id != prev.type_id {
        return Err(interrupted("type"));
    }
    Ok(())
}

/// The message on `csid`, if its payload is all there.
fn complete(csid: u32, stream: &mut ChunkStream) -> Option<Message> {
    let len = usize::try_from(stream.last.length).ok()?;
    if stream.partial.as_ref()?.len() != len {
        return None;
    }
    let payload = stream.partial.take()?;
    Some(Message {
        csid,
        timestamp: stream.last.timestamp,
        type_id: stream.last.type_id,
        stream_id: stream.last.stream_id,
        payload: Bytes::from(payload),
    })
}

fn u24(b: [u8; 3]) -> u32 {
    let [x, y, z] = b;
    u32::from_be_bytes([0, x, y, z])
}

/// Parse the chunk header at the start of `b`; `None` if it is not all there. Pure: the
/// state is read (a format 3 header has an extended timestamp if the last header had one).
fn parse_header(b: &[u8], streams: &Streams) -> Result<Option<(Header, usize)>, ChunkError> {
    let Some(&b0) = b.first() else {
        return Ok(None);
    };
    let fmt = b0 >> 6;
    let (csid, at) = match b0 & 0x3F {
        0 => match b.get(1) {
            Some(&x) => (64 + u32::from(x), 2),
            None => return Ok(None),
        },
        1 => match b.get(1..3) {
            Some(&[lo, hi]) => (64 + u32::from(lo) + 256 * u32::from(hi), 3),
            _ => return Ok(None),
        },
        n => (u32::from(n), 1),
    };
    let prev = streams.get(&csid).map(|s| s.last);
    if fmt != 0 && prev.is_none() {
        return Err(ChunkError::NoPreviousHeader { csid, fmt });
    }
    let rest = b.get(at..).unwrap_or_default();
    let (fields, used) = match fmt {
        0 => match rest.get(..11) {
            Some(&[t0, t1, t2, l0, l1, l2, type_id, s0, s1, s2, s3]) => (
                Fields::Full {
                    timestamp: u24([t0, t1, t2]),
                    length: u24([l0, l1, l2]),
                    type_id,
                    stream_id: u32::from_le_bytes([s0, s1, s2, s3]),
                },
                11,
            ),
            _ => return Ok(None),
        },
        1 => match rest.get(..7) {
            Some(&[t0, t1, t2, l0, l1, l2, type_id]) => (
                Fields::Delta {
                    delta: u24([t0, t1, t2]),
                    length: u24([l0, l1, l2]),
                    type_id,
                },
                7,
            ),
            _ => return Ok(None),
        },
        2 => match rest.get(..3) {
            Some(&[t0, t1, t2]) => (
                Fields::DeltaOnly {
                    delta: u24([t0, t1, t2]),
                },
                3,
            ),
            _ => return Ok(None),
        },
        _ => (Fields::Empty, 0),
    };
    let has_extended = match fields.time_field() {
        Some(field) => field == EXTENDED_TIMESTAMP,
        None => prev.is_some_and(|p| p.extended),
    };
    let rest = rest.get(used..).unwrap_or_default();
    let (extended, used) = if has_extended {
        match rest.get(..4) {
            Some(&[a, b, c, d]) => (Some(u32::from_be_bytes([a, b, c, d])), used + 4),
            _ => return Ok(None),
        }
    } else {
        (None, used)
    };
    Ok(Some((
        Header {
            csid,
            fields,
            extended,
        },
        at + used,
    )))
}

/// The basic header: format and chunk stream ID in 1, 2 or 3 bytes (`csid` checked).
fn put_basic_header(out: &mut Vec<u8>, fmt: u8, csid: u32) {
    let fmt = fmt << 6;
    let [_, _, hi, lo] = csid.saturating_sub(64).to_be_bytes();
    match csid {
        0..=63 => {
            let [.., id] = csid.to_be_bytes();
            out.push(fmt | id);
        }
        64..=319 => out.extend_from_slice(&[fmt, lo]),
        _ => out.extend_from_slice(&[fmt | 1, lo, hi]),
    }
}

fn put_u24(out: &mut Vec<u8>, v: u32) {
    let [_, a, b, c] = v.to_be_bytes();
    out.extend_from_slice(&[a, b, c]);
}

/// Serialise `msg` onto `out`: a format 0 header on its chunk stream (with an extended
/// timestamp from 0xFFFFFF on), then format 3 continuation chunks of at most `chunk_size`
/// payload bytes, which repeat the extended timestamp when the header had one (as the spec's
/// implementations and rml_rtmp do). Needs no state: the peer can read it whatever it saw
/// before. Nothing is written on an error.
pub fn write_message(out: &mut Vec<u8>, msg: &Message, chunk_size: u32) -> Result<(), ChunkError> {
    check_chunk_size(chunk_size)?;
    if !(MIN_CSID..=MAX_CSID).contains(&msg.csid) {
        return Err(ChunkError::InvalidCsid { csid: msg.csid });
    }
    let len = msg.payload.len();
    let length = u32::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_LENGTH_FIELD)
        .ok_or(ChunkError::TooLongToWrite { len })?;
    let extended = msg.timestamp >= EXTENDED_TIMESTAMP;
    let per_chunk = usize::try_from(chunk_size).unwrap_or(usize::MAX);

    put_basic_header(out, 0, msg.csid);
    put_u24(out, msg.timestamp.min(EXTENDED_TIMESTAMP));
    put_u24(out, length);
    out.push(msg.type_id);
    out.extend_from_slice(&msg.stream_id.to_le_bytes());
    if extended {
        out.extend_from_slice(&msg.timestamp.to_be_bytes());
    }
    for (i, piece) in msg.payload.chunks(per_chunk).enumerate() {
        if i > 0 {
            put_basic_header(out, 3, msg.csid);
            if extended {
                out.extend_from_slice(&msg.timestamp.to_be_bytes());
            }
        }
        out.extend_from_slice(piece);
    }
    Ok(())
}

#[cfg(test)]
#[path = "chunk_test.rs"]
mod tests;
