//! Publisher authentication: stream keys compared in constant time against the config, and an
//! optional HTTP webhook for keys the config does not list.
//!
//! Entry point: [`Authenticator::check`]. The key is a secret: it is never logged, never a
//! metric label, and it leaves the node only in the webhook's POST body.
//!
//! The webhook: `https://` (certificates checked against Mozilla's roots, built in, or the CA
//! file `auth.webhook_ca`; a certificate that does not verify is "unavailable", never a key
//! check) or `http://` on a private network. Each request is signed (`X-Edge-Timestamp: <unix seconds>` and
//! `X-Edge-Signature: v1=<hex HMAC-SHA256(auth.secret, "<timestamp>.<body>")>`, so the hook can
//! refuse forged or replayed requests), at most [`MAX_WEBHOOK_CONCURRENCY`] are in flight, and
//! answers are cached for [`WEBHOOK_CACHE_TTL`] (a reconnecting encoder, or a placement and its
//! stream, ask once). 2xx accepts; 4xx refuses the key; a 5xx, a timeout or no connection is
//! "auth backend unavailable", kept apart from a wrong key in the encoder's message, the logs
//! and the metrics, and never cached. Playback IDs derived from keys are keyed hashes
//! (HMAC-SHA256 with `auth.secret`), so a short key cannot be found from its public ID.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use subtle::ConstantTimeEq;

/// The result of a successful check: which stream publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Public ID of the stream; names it in URLs, logs and the admin API.
    pub playback_id: String,
    /// SRT passphrase the caller must use, if any.
    pub srt_passphrase: Option<String>,
}

/// Why a publisher was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The key matched no configured stream and no webhook accepted it.
    #[error("stream key refused")]
    Refused,
    /// The webhook could not be reached or answered too late: refuse rather than let anyone in.
    #[error("auth webhook unavailable: {0}")]
    WebhookUnavailable(String),
    /// This address had too many keys refused lately: refused with no check.
    #[error(transparent)]
    Limited(#[from] server::Limited),
    /// An operator kicked this stream and refuses its key for a while.
    #[error("stream key blocked by an operator for {} more s", .0.as_secs().max(1))]
    Blocked(std::time::Duration),
}

pub(crate) type Connector = server::tls::HttpsConnector;

/// The webhook's and the events' connector ([`server::tls::https_connector`]): TLS for
/// `https://` URLs checked against `ca` (a PEM file) or Mozilla's roots; plain TCP for
/// `http://`. `None` only if TLS cannot be set up at all.
pub(crate) fn https_connector(setting: &str, ca: Option<&std::path::Path>) -> Option<Connector> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    server::tls::https_connector(setting, ca, None, http)
}

/// Largest webhook answer we read (it may carry a playback ID).
const MAX_WEBHOOK_BODY: usize = 16 * 1024;
/// Webhook requests in flight at once: a flood of publishers must not become a flood on the
/// auth backend; the rest wait (within the webhook timeout) for a slot.
pub const MAX_WEBHOOK_CONCURRENCY: usize = 32;
/// How long a webhook answer (accept or refuse) is reused for the same key.
pub const WEBHOOK_CACHE_TTL: Duration = Duration::from_secs(10);
/// Keys whose answers are cached at once (a flood of distinct wrong keys cannot grow it).
const WEBHOOK_CACHE_MAX: usize = 10_000;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn hmac_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    use hmac::Mac;
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut m) = HmacSha256::new_from_slice(secret) else {
        return String::new();
    };
    for p in parts {
        m.update(p);
    }
    hex(&m.finalize().into_bytes())
}

/// A cached webhook answer.
#[derive(Clone)]
enum Cached {
    Accepted(Grant),
    Refused,
}

/// Checks stream keys.
pub struct Authenticator {
    streams: Vec<edge_config::StreamConfig>,
    webhook: Option<(http::Uri, Duration)>,
    secret: Option<edge_config::Secret>,
    /// `None` only if TLS could not be set up (see [`https_connector`]).
    client: Option<Client<Connector, Full<Bytes>>>,
    slots: tokio::sync::Semaphore,
    /// stream_ref of the key → (when answered, the answer).
    cache: std::sync::Mutex<std::collections::HashMap<String, (tokio::time::Instant, Cached)>>,
}

impl Authenticator {
    pub fn new(cfg: &edge_config::Config) -> Self {
        Self {
            streams: cfg.streams.clone(),
            webhook: cfg
                .auth
                .webhook
                .as_ref()
                .and_then(|u| u.parse().ok())
                .map(|u| (u, cfg.auth.webhook_timeout)),
            secret: cfg.auth.secret.clone(),
            client: https_connector("auth.webhook_ca", cfg.auth.webhook_ca.as_deref())
                .map(|c| Client::builder(TokioExecutor::new()).build(c)),
            slots: tokio::sync::Semaphore::new(MAX_WEBHOOK_CONCURRENCY),
            cache: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn cached(&self, sref: &str) -> Option<Cached> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (at, c) = cache.get(sref)?;
        (at.elapsed() < WEBHOOK_CACHE_TTL).then(|| c.clone())
    }

    fn remember(&self, sref: String, c: Cached) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= WEBHOOK_CACHE_MAX {
            cache.retain(|_, (at, _)| at.elapsed() < WEBHOOK_CACHE_TTL);
            if cache.len() >= WEBHOOK_CACHE_MAX {
                return;
            }
        }
        cache.insert(sref, (tokio::time::Instant::now(), c));
    }

    /// A public ID for a key the webhook accepted without naming one.
    pub fn derived_playback_id(&self, key: &str) -> String {
        derived_playback_id(
            key,
            self.secret
                .as_ref()
                .map_or(&[][..], |s| s.expose().as_bytes()),
        )
    }

    /// Look the key up in the config, in constant time per configured key (every key is
    /// compared, so timing does not reveal which or how many bytes matched).
    pub fn check_config(&self, key: &str) -> Option<Grant> {
        let mut found = None;
        for s in &self.streams {
            let same =
                key.len() == s.key.len() && bool::from(key.as_bytes().ct_eq(s.key.as_bytes()));
            if same && found.is_none() {
                found = Some(Grant {
                    playback_id: s.playback_id.clone(),
                    srt_passphrase: s.srt_passphrase.clone(),
                });
            }
        }
        found
    }

    /// Config first, then the webhook if one is configured.
    pub async fn check(
        &self,
        key: &str,
        client: SocketAddr,
        protocol: &str,
    ) -> Result<Grant, AuthError> {
        if let Some(g) = self.check_config(key) {
            return Ok(g);
        }
        let Some((uri, timeout)) = &self.webhook else {
            return Err(AuthError::Refused);
        };
        let sref = control::stream_ref(key);
        match self.cached(&sref) {
            Some(Cached::Accepted(g)) => return Ok(g),
            Some(Cached::Refused) => return Err(AuthError::Refused),
            None => {}
        }
        let _slot = tokio::time::timeout(*timeout, self.slots.acquire())
            .await
            .map_err(|_| AuthError::WebhookUnavailable("too many checks in flight".into()))?
            .map_err(|_| AuthError::WebhookUnavailable("closed".into()))?;
        let body = serde_json::json!({ "key": key, "client_addr": client.to_string(), "protocol": protocol }).to_string();
        let ts = server::wall_clock()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        let secret = self
            .secret
            .as_ref()
            .map_or(&[][..], |s| s.expose().as_bytes());
        let signature = hmac_hex(secret, &[ts.as_bytes(), b".", body.as_bytes()]);
        let req = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("x-edge-timestamp", &ts)
            .header("x-edge-signature", format!("v1={signature}"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AuthError::WebhookUnavailable(e.to_string()))?;
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| AuthError::WebhookUnavailable("no TLS configuration".into()))?;
        let resp = tokio::time::timeout(*timeout, client.request(req))
            .await
            .map_err(|_| AuthError::WebhookUnavailable("timed out".into()))?
            .map_err(|e| AuthError::WebhookUnavailable(e.to_string()))?;
        let status = resp.status();
        if status.is_client_error() {
            self.remember(sref, Cached::Refused);
            return Err(AuthError::Refused);
        }
        if !status.is_success() {
            return Err(AuthError::WebhookUnavailable(format!("answered {status}")));
        }
        let bytes = tokio::time::timeout(
            *timeout,
            http_body_util::Limited::new(resp.into_body(), MAX_WEBHOOK_BODY).collect(),
        )
        .await
        .ok()
        .and_then(|r| r.ok())
        .map(|c| c.to_bytes())
        .unwrap_or_default();
        // The hook may name the playback ID; otherwise derive a stable public one from a
        // keyed hash of the key, so the key itself never appears in a URL.
        let playback_id = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("playback_id")
                    .and_then(|p| p.as_str())
                    .map(str::to_string)
            })
            .filter(|p| {
                !p.is_empty()
                    && p.len() <= 64
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .unwrap_or_else(|| self.derived_playback_id(key));
        let grant = Grant {
            playback_id,
            srt_passphrase: None,
        };
        self.remember(sref, Cached::Accepted(grant.clone()));
        Ok(grant)
    }
}

/// A public ID derived from a key: `s` and 32 hex digits of HMAC-SHA256(`secret`, key). With
/// the secret unknown, the key cannot be searched for from the ID, however short it is.
pub fn derived_playback_id(key: &str, secret: &[u8]) -> String {
    let h = hmac_hex(secret, &[b"edge playback id v1\0", key.as_bytes()]);
    format!("s{}", h.get(..32).unwrap_or(&h))
}

#[cfg(test)]
#[path = "auth_test.rs"]
mod tests;
