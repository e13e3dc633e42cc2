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
//! - [`openapi`]: the checks the admin APIs' tests run on their OpenAPI documents.
//! - [`tls`]: the public listeners' certificate, reloaded when its files change, and the TLS
//!   handshake under a deadline.
//! - [`dashboard`]: the operator's web page on every admin listener, its login sessions
//!   (cookie + CSRF token) and the check that admits a bearer token or a session to the API.
//!
//! Nothing here knows about streams or nodes; the node (`ingest`) and the balancer
//! (`balancer`) pass their own handlers and limits in.

pub mod accept;
pub mod dashboard;
pub mod gate;
pub mod http;
pub mod listen;
pub mod metrics;
pub mod openapi;
pub mod opening;
pub mod refusals;
pub mod serve;
pub mod tls;

pub use accept::{Acceptor, ConnLimits, ConnPermit};
pub use gate::{gate, Gate, GateHandle};
pub use listen::BindError;
pub use refusals::{Limited, RefusalLimiter};

/// Raise the soft limit on open files to the hard limit, and return the limit in force. Every
/// connection holds a descriptor (a balancer's relay two, and a hand-over as many again in the
/// successor), so the usual soft limit (1,024) would cap a process at a few hundred streams
/// and let a flood of idle connections exhaust it long before the connection caps apply.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// 32 bytes from the kernel's random source (`/dev/urandom`), for secrets a process makes at
/// start (SRT SYN cookie secrets).
pub fn random_secret() -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    Ok(secret)
}

/// When [`random_secret`] fails: a per-process value from std's randomly keyed hasher. Not
/// cryptographic randomness, but unpredictable enough for SYN cookies, which only stop blind
/// spoofing of handshakes.
pub fn fallback_secret() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    let mut secret = [0u8; 32];
    for (i, chunk) in secret.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u32(std::process::id());
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    secret
}

/// The wall clock, for the start times and timestamps the APIs and reports show (never for
/// timeouts: those follow tokio's clock, which tests can pause). The one allowed use of
/// `SystemTime::now` in node and balancer (clippy.toml).
#[allow(clippy::disallowed_methods)]
pub fn wall_clock() -> std::time::SystemTime {
    std::time::SystemTime::now()
}
