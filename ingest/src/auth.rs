//! Publisher authentication: stream keys compared in constant time against the config, and an
//! optional HTTP webhook for keys the config does not list.
//!
//! Entry point: [`Authenticator::check`]. The key is a secret: it is never logged, never a
//! metric label, and it leaves the node only in the webhook's POST body.

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
}

/// Largest webhook answer we read (it may carry a playback ID).
const MAX_WEBHOOK_BODY: usize = 16 * 1024;

/// Checks stream keys.
pub struct Authenticator {
    streams: Vec<edge_config::StreamConfig>,
    webhook: Option<(http::Uri, Duration)>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
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
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
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
        let body = serde_json::json!({ "key": key, "client_addr": client.to_string(), "protocol": protocol });
        let req = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| AuthError::WebhookUnavailable(e.to_string()))?;
        let resp = tokio::time::timeout(*timeout, self.client.request(req))
            .await
            .map_err(|_| AuthError::WebhookUnavailable("timed out".into()))?
            .map_err(|e| AuthError::WebhookUnavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(AuthError::Refused);
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
        // The hook may name the playback ID; otherwise derive a stable public one from a hash
        // of the key, so the key itself never appears in a URL.
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
            .unwrap_or_else(|| derived_playback_id(key));
        Ok(Grant {
            playback_id,
            srt_passphrase: None,
        })
    }
}

/// A public ID derived from a key (FNV-1a 64, hex). Not reversible in practice for random keys;
/// webhooks that care should return their own `playback_id`.
pub fn derived_playback_id(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("s{h:016x}")
}

#[cfg(test)]
#[path = "auth_test.rs"]
mod tests;
