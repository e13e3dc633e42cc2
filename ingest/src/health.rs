//! A stream's health as its node sees it: is the encoder sending video, and is the pipeline
//! turning it into renditions in real time?
//!
//! Entry points: [`Health`] (one per publish, shared by the registry entry and the pipeline's
//! output: source frames are stamped as they reach the demuxer's output, video samples as
//! they leave for the packager) and [`assess`], a pure function of those stamps and `now`.
//! The node counts its streams by status in `edge_ingest_streams_by_health` (the labels are
//! the statuses, never a stream) and shows each stream's status and reason in
//! `GET /api/v1/streams`.
//!
//! - `starving`: no source video frame for [`STARVING_AFTER`] while the connection is open
//!   (an encoder that froze, a network that stalled; RTMP ends such a connection only after
//!   `wire::rtmp::NODE_TIMEOUTS.media`).
//! - `unhealthy`: source video arrives but no video sample has left for the packager for
//!   [`STALLED_AFTER`] (a stuck pipeline, or no keyframe yet), or the last transcoded sample
//!   was later than `node.overload_lag` behind its source frame.
//! - `healthy`: otherwise.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::pipeline::ArrivalLog;

/// No source video frame for this long: starving. An encoder sends a frame every 17-100 ms
/// (60 to 10 fps); a second of network jitter on top still leaves a wide margin.
pub const STARVING_AFTER: Duration = Duration::from_secs(3);
/// Source video arrives but no video sample left for this long: unhealthy. The first sample
/// waits for the first keyframe (2 s GOPs are what we recommend; 6 s is already a long wait
/// for a viewer), later ones only for the pipeline.
pub const STALLED_AFTER: Duration = Duration::from_secs(6);

/// A stream's status (`GET /api/v1/streams` `health`, label of
/// `edge_ingest_streams_by_health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Healthy,
    Unhealthy,
    Starving,
}

impl Status {
    /// Every status, in the order metrics list them.
    pub const ALL: [Status; 3] = [Status::Healthy, Status::Unhealthy, Status::Starving];

    /// The label value and API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
            Status::Starving => "starving",
        }
    }
}

/// The stamps one stream's health is judged from.
pub struct Health {
    /// When the publish was admitted: stands in for stamps not made yet.
    started: Instant,
    /// When each source video frame reached the demuxer's output (also times the output).
    pub(crate) arrivals: Arc<ArrivalLog>,
    /// The last video sample handed to the packager: when, and how far behind its source
    /// frame (for transcoded rungs; zero for the source rendition).
    last_out: Mutex<Option<(Instant, Duration)>>,
}

impl Health {
    pub fn new(started: Instant) -> Self {
        Health {
            started,
            arrivals: Arc::new(ArrivalLog::default()),
            last_out: Mutex::new(None),
        }
    }

    /// A video sample left for the packager at `at`, `lag` behind its source frame.
    pub fn video_out(&self, at: Instant, lag: Duration) {
        if let Ok(mut l) = self.last_out.lock() {
            *l = Some((at, lag));
        }
    }

    /// The status now, with the reason when it is not healthy.
    pub fn assess(&self, now: Instant, overload_lag: Duration) -> (Status, Option<String>) {
        let last_out = self.last_out.lock().ok().and_then(|l| *l);
        assess(
            self.started,
            self.arrivals.latest(),
            last_out,
            now,
            overload_lag,
        )
    }
}

/// The status of a stream admitted at `started`, whose last source video frame arrived at
/// `last_in` and whose last video sample left at `last_out` (with its lag).
pub fn assess(
    started: Instant,
    last_in: Option<Instant>,
    last_out: Option<(Instant, Duration)>,
    now: Instant,
    overload_lag: Duration,
) -> (Status, Option<String>) {
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let since_in = now.saturating_duration_since(last_in.unwrap_or(started));
    if since_in >= STARVING_AFTER {
        let why = match last_in {
            Some(_) => format!("no video from the encoder for {}", secs(since_in)),
            None => format!(
                "no video from the encoder since it connected {} ago",
                secs(since_in)
            ),
        };
        return (Status::Starving, Some(why));
    }
    let (out_at, lag) = match last_out {
        Some((at, lag)) => (at, lag),
        None => (started, Duration::ZERO),
    };
    let since_out = now.saturating_duration_since(out_at);
    if since_out >= STALLED_AFTER {
        let why = match last_out {
            Some(_) => format!(
                "video arrives but none has come out for {}",
                secs(since_out)
            ),
            None => format!(
                "no video has come out {} after the publish began (no keyframe yet?)",
                secs(since_out)
            ),
        };
        return (Status::Unhealthy, Some(why));
    }
    if lag > overload_lag {
        return (
            Status::Unhealthy,
            Some(format!(
                "transcoding is {} behind real time (node.overload_lag {})",
                secs(lag),
                secs(overload_lag)
            )),
        );
    }
    (Status::Healthy, None)
}

#[cfg(test)]
#[path = "health_test.rs"]
mod tests;
