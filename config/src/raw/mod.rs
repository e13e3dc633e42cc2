//! The config files as written: serde types that mirror the TOML, with defaults (from
//! `defaults`) and `deny_unknown_fields`, and the validation that turns them into the resolved
//! types while collecting every problem with its key path.
//!
//! - [`node`]: an ingest node's file, [`RawConfig::validate`].
//! - [`balancer`]: a balancer's file, [`RawBalancerConfig::validate`].
//! - [`uri`]: just enough URI parsing to check a webhook address.
//! - here: what both files share (the `[admin]` table, IDs, units, closed sets of names).

pub mod balancer;
pub mod node;
pub mod uri;

pub use balancer::*;
pub use node::*;

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use crate::error::Problems;
use crate::resolved::Named;

/// Admin tokens shorter than this are guessable.
const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// IDs end up in URLs and JSON; keep them short.
const MAX_ID_LEN: usize = 64;
/// What [`valid_id`] accepts, for messages.
const ID_RULE: &str = "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_'";

/// `[listen.tls]` of both files: the certificate of the public TLS listeners (RTMPS), PEM
/// files reloaded when they change (a Kubernetes Secret volume, cert-manager).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublicTls {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// TLS listeners (`listen.rtmps`, `listen.https`) need `listen.tls`; the resolved pair, if any.
pub(crate) fn public_tls(
    p: &mut Problems,
    listeners: &[(&str, Option<std::net::SocketAddr>)],
    tls: &Option<RawPublicTls>,
) -> Option<crate::resolved::CertPair> {
    if tls.is_none() {
        for (key, addr) in listeners {
            if addr.is_some() {
                p.add(
                    *key,
                    "needs listen.tls (cert and key: PEM files of the certificate clients see)",
                );
            }
        }
    }
    tls.as_ref().map(|t| crate::resolved::CertPair {
        cert: t.cert.clone(),
        key: t.key.clone(),
    })
}

/// The `[admin]` table of both files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Bearer token for the admin API. Prefer `token_file` outside development.
    pub token: Option<String>,
    /// File holding the bearer token (trailing whitespace ignored).
    pub token_file: Option<PathBuf>,
}

impl RawAdmin {
    /// The token, from `token` or `token_file` (exactly one of them), at least
    /// [`MIN_ADMIN_TOKEN_LEN`] long; empty after a problem was recorded.
    fn resolve(&self, p: &mut Problems) -> String {
        let token = match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => {
                p.add("admin", "set either token or token_file, not both");
                return String::new();
            }
            (None, None) => {
                p.add(
                    "admin.token",
                    "missing: the admin API needs a token (or token_file)",
                );
                return String::new();
            }
            (Some(t), None) => t.clone(),
            (None, Some(f)) => match std::fs::read_to_string(f) {
                Ok(t) => t.trim_end().to_string(),
                Err(e) => {
                    p.add(
                        "admin.token_file",
                        format!("cannot read {}: {e}", f.display()),
                    );
                    return String::new();
                }
            },
        };
        if token.len() < MIN_ADMIN_TOKEN_LEN {
            p.add(
                if self.token.is_some() {
                    "admin.token"
                } else {
                    "admin.token_file"
                },
                format!("too short: at least {MIN_ADMIN_TOKEN_LEN} characters"),
            );
        }
        token
    }
}

/// A node, balancer, rung or playback ID: short, and safe in URLs, JSON and metric labels.
fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Milli-units from a float, refusing what is not a positive finite number.
fn milli_units(v: f64) -> Option<u32> {
    (v.is_finite() && v > 0.0 && v < 1_000_000.0).then(|| (v * 1000.0).round().max(1.0) as u32)
}

/// A value of a closed set as written in the file: the value, or the unknown name. Parsing
/// never fails here, so an unknown name is reported with the other problems (with its key
/// path) instead of stopping the load.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice<T>(Result<T, String>);

impl<T> Choice<T> {
    /// A known value (for defaults).
    pub const fn of(v: T) -> Self {
        Choice(Ok(v))
    }
}

impl<T: Named> Choice<T> {
    /// The value, or `fallback` after recording "must be a or b" / "must be one of a, b, c".
    fn resolve(self, path: &str, fallback: T, p: &mut Problems) -> T {
        match self.0 {
            Ok(v) => v,
            Err(_) => {
                let names: Vec<&str> = T::ALL.iter().map(|(n, _)| *n).collect();
                let message = match names.as_slice() {
                    [a, b] => format!("must be {a} or {b}"),
                    all => format!("must be one of {}", all.join(", ")),
                };
                p.add(path, message);
                fallback
            }
        }
    }
}

impl<'de, T: Named> Deserialize<'de> for Choice<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Choice(T::from_name(&name).ok_or(name)))
    }
}

#[cfg(test)]
#[path = "mod_test.rs"]
mod tests;
