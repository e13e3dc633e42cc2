//! Parsers and builders of untrusted network bytes, shared by the ingest node and the balancer.
//! Pure code: bytes in, decisions out; no IO, no clock, no panics. Each parser has a fuzz target
//! in `fuzz/`.
//!
//! - [`srt_guard`]: inspects every SRT datagram before srt-tokio sees it.
//! - [`streamid`]: SRT stream IDs (`#!::r=live/KEY,m=publish` and the short forms).
//! - [`proxy`]: PROXY protocol v2 headers (balancer → node, carrying the encoder's address).

pub mod proxy;
pub mod srt_guard;
pub mod streamid;
