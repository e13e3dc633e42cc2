//! Parsers and builders of untrusted network bytes, shared by the ingest node and the balancer.
//! Pure code: bytes in, decisions out; no IO, no clock of its own, no panics. Each parser has a fuzz target
//! in `fuzz/`.
//!
//! - [`srt_guard`]: inspects every SRT datagram before srt-tokio sees it.
//! - [`streamid`]: SRT stream IDs (`#!::r=live/KEY,m=publish` and the short forms).
//! - [`proxy`]: PROXY protocol v2 headers (balancer → node, carrying the encoder's address).
//! - [`chunk`]: the RTMP chunk stream: a decoder whose whole state serialises (the balancer
//!   hands live relays to another process with it) and a stateless encoder.
//! - [`rtmp`]: the RTMP server session up to and through `publish`, as a state machine
//!   without IO (node and balancer), and the client side of the handshake (balancer → node).
//!   Time comes in as `now` (tokio's clock, so tests can pause it).

pub mod chunk;
pub mod contain;
pub mod proxy;
pub mod rtmp;
pub mod srt_guard;
pub mod streamid;
