//! Replies and the bearer-token check shared by the admin APIs of node and balancer.

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every admin reply: a complete body in memory.
pub type Reply = Response<Full<Bytes>>;

/// A plain-text reply.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON reply (200), or a 500 naming why the value could not be encoded.
pub fn json(value: &impl serde::Serialize) -> Reply {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode: {e}\n"),
        ),
    }
}

/// A JSON document kept as text (an embedded OpenAPI document), 200.
pub fn json_text(body: &'static str) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Media type of an error reply of the admin APIs (RFC 9457).
pub const PROBLEM_TYPE: &str = "application/problem+json";

/// An error reply of the admin APIs: RFC 9457 problem details, one JSON shape for every
/// error (`type` is `about:blank`: the status says what kind; `detail` says what happened,
/// for a person).
pub fn problem(status: StatusCode, detail: impl std::fmt::Display) -> Reply {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail.to_string().trim_end(),
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_TYPE));
    r
}

/// The Prometheus text exposition of the default registry.
pub fn metrics() -> Reply {
    let mut r = text(StatusCode::OK, crate::metrics::render());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// The value of query parameter `name`, if given (first occurrence, not percent-decoded: the
/// admin APIs take only numbers there).
pub fn query_param<'a, B>(req: &'a Request<B>, name: &str) -> Option<&'a str> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// The `block_seconds` of a kick (0 when absent), at most `max`; else the 400 reply naming
/// the problem.
pub fn block_param<B>(
    req: &Request<B>,
    max: std::time::Duration,
) -> Result<std::time::Duration, Box<Reply>> {
    let Some(v) = query_param(req, "block_seconds") else {
        return Ok(std::time::Duration::ZERO);
    };
    match v.parse::<u64>() {
        Ok(s) if s <= max.as_secs() => Ok(std::time::Duration::from_secs(s)),
        _ => Err(Box::new(problem(
            StatusCode::BAD_REQUEST,
            format!(
                "block_seconds must be a whole number of seconds from 0 to {}",
                max.as_secs()
            ),
        ))),
    }
}

/// 401 with the `WWW-Authenticate` challenge.
pub fn unauthorized() -> Reply {
    let mut r = problem(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token (or dashboard session)",
    );
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Whether two secrets are equal, in time that depends on neither their contents nor their
/// lengths: both are hashed first, and the fixed-size digests are compared in constant time.
/// An empty expected secret matches nothing (config validation refuses empty tokens; this
/// is the second line).
pub fn secret_eq(given: &[u8], want: &[u8]) -> bool {
    let a = Sha256::digest(given);
    let b = Sha256::digest(want);
    !want.is_empty() && bool::from(a.as_slice().ct_eq(b.as_slice()))
}

/// Whether the request carries `Authorization: Bearer <token>` with this token.
pub fn bearer_ok<B>(req: &Request<B>, token: &str) -> bool {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) => secret_eq(g.as_bytes(), token.as_bytes()),
        None => false,
    }
}

#[cfg(test)]
#[path = "http_test.rs"]
mod tests;
