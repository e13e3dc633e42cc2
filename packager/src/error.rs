//! The crate's error type.
//!
//! Entry point: [`PackagerError`], returned by [`crate::StreamHandle::configure`] and
//! [`crate::StreamHandle::push`]. HTTP handling never returns errors: it answers with a status.

/// Everything that can go wrong when feeding a stream.
#[derive(Debug, thiserror::Error)]
pub enum PackagerError {
    /// The rendition name is not part of this publish session's plan.
    #[error("unknown rendition {0:?}")]
    UnknownRendition(String),
    /// `push` was called before `configure` for this rendition.
    #[error("rendition {0:?} has no codec configuration yet")]
    NotConfigured(String),
    /// The codec configuration does not fit the rendition kind or cannot be parsed.
    #[error("invalid codec configuration for {rendition:?}: {reason}")]
    InvalidCodecConfig {
        /// The rendition's name.
        rendition: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A sample's decode time does not come after the previous sample's; the sample was dropped.
    #[error("rendition {rendition:?}: decode time {dts_ns} ns does not follow {previous_ns} ns")]
    NonMonotonicDts {
        /// The rendition's name.
        rendition: String,
        /// The rejected sample's DTS.
        dts_ns: u64,
        /// The previous sample's DTS.
        previous_ns: u64,
    },
    /// This publish session is over: the stream was finished, removed, or published again.
    #[error("the publish session has ended")]
    SessionEnded,
    /// Writing an MP4 box failed (should not happen with validated input).
    #[error("mp4 encoding: {0}")]
    Mp4(#[from] mp4_atom::Error),
}
