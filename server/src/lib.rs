//! The server kit: what the ingest node and the balancer both do to serve, written once.
//!
//! - [`http`]: replies (`text`, `json`, the Prometheus exposition) and the bearer-token check
//!   of the admin APIs, constant time including the length.
//! - [`accept`]: the accept loop every TCP listener runs: a global and a per-IP connection cap
//!   (trusted proxies exempt), backoff when `accept` fails (out of file descriptors), and a
//!   permit that releases the slot when the connection ends.
//! - [`gate`]: pause, resume or retire an accept loop from outside (the balancer's hand-over
//!   and drain).
//! - [`serve`]: an HTTP/1.1 + h2c server over [`accept`] with a header deadline and HTTP/2
//!   limits, for the admin listeners.
//! - [`listen`]: binding listeners with an error that names the listener.
//! - [`refusals`]: a limit on refused publishes per source address.
//! - [`metrics`]: registering Prometheus metrics in the default registry without boilerplate.
//!
//! Nothing here knows about streams or nodes; the node (`ingest`) and the balancer
//! (`balancer`) pass their own handlers and limits in.

pub mod accept;
pub mod gate;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod refusals;
pub mod serve;

pub use accept::{Acceptor, ConnLimits, ConnPermit};
pub use gate::{gate, Gate, GateHandle};
pub use listen::BindError;
pub use refusals::{Limited, RefusalLimiter};

/// The wall clock, for the start times and timestamps the APIs and reports show (never for
/// timeouts: those follow tokio's clock, which tests can pause). The one allowed use of
/// `SystemTime::now` in node and balancer (clippy.toml).
#[allow(clippy::disallowed_methods)]
pub fn wall_clock() -> std::time::SystemTime {
    std::time::SystemTime::now()
}
