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
//! - [`srt_relay`]: the SRT handshake answered with stateless SYN cookies, and redone as a
//!   caller towards whoever takes the stream ([`srt_relay::Upstream`]).
//! - [`srt_route`]: which session an SRT datagram belongs to on a front socket, and each
//!   session's life ([`srt_route::Router`], [`srt_route::Session`]). The balancer routes to
//!   nodes with them; the node routes to its private srt-tokio listeners with them, so a
//!   spoofed induction opens nothing and replaces nothing on either.

pub mod chunk;
pub mod contain;
pub mod proxy;
pub mod rtmp;
pub mod srt_guard;
pub mod srt_relay;
pub mod srt_route;
pub mod streamid;
