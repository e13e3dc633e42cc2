//! The operator's web dashboard, served by every admin listener (node and balancer): the
//! embedded page and its assets, the login that turns the admin token into a session cookie,
//! and the check that lets either a bearer token or a session through to the JSON API.
//!
//! Routes (see [`route`]):
//! - `GET /` and `GET /dashboard`: the page. It holds no data; it asks for the token, logs in
//!   and then reads the same `/api/v1/...` routes `edge ctl` uses.
//! - `GET /dashboard/app.js`, `app.css`, `hls.min.js`: its assets, compiled into the binary
//!   (nothing is loaded from the internet; hls.js plays the preview).
//! - `POST /dashboard/session` with `Authorization: Bearer TOKEN`: a new session. The answer
//!   sets an `HttpOnly; SameSite=Strict` cookie and carries the session's CSRF token. The token
//!   never travels in a URL (it would end up in logs and in the browser's history).
//! - `GET /dashboard/session`: the CSRF token of the session the cookie names (a reloaded page
//!   gets it back; SameSite=Strict and the absence of CORS headers keep other sites from it).
//! - `DELETE /dashboard/session`: log out (with the CSRF token).
//!
//! [`authorize`]: the API takes a bearer token, or a session cookie; with a cookie, anything
//! but `GET`/`HEAD` must carry the session's CSRF token in `X-CSRF-Token` (a form on another
//! site can make the browser send the cookie, never the header). A session ends after
//! [`SESSION_TTL`], on logout, and when the admin token changes (a rotated token locks out
//! every page logged in with the old one).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::http::{bearer_ok, json, problem, secret_eq, Reply};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "edge_session";

/// Header that carries the CSRF token of a cookie-authenticated action.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How long a login lasts: an operator's shift; then the page asks for the token again.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Sessions kept at once; a login past it ends the oldest. Each is under a hundred bytes; the
/// cap bounds what a token holder scripting logins can make the process keep.
pub const MAX_SESSIONS: usize = 256;

/// The page and its assets.
const INDEX_HTML: &str = include_str!("../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../assets/dashboard/app.css");
/// hls.js 1.7.4 (Apache-2.0, `assets/hls.js.LICENSE`), for the preview player.
const HLS_JS: &[u8] = include_bytes!("../assets/hls.min.js");

/// What the page may load and talk to: its own scripts and styles only; media (the preview
/// plays from the playback listener, another port) over http(s); hls.js makes blob: URLs for
/// its media source and its worker. No framing (clickjacking of the action buttons).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self' http: https:; media-src 'self' blob:; worker-src blob:; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Session {
    csrf: String,
    expires: Instant,
    /// SHA-256 of the admin token it was made with: a new token ends it.
    token_digest: [u8; 32],
}

/// The dashboard's login sessions (one per admin listener).
#[derive(Default)]
pub struct Sessions {
    /// By SHA-256 of the cookie value (the value itself is never kept).
    inner: Mutex<HashMap<[u8; 32], Session>>,
}

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new session for a caller who showed `token`: (cookie value, CSRF token). Fails only
    /// when the kernel's random source cannot be read (no session is better than a guessable one).
    pub fn login(&self, token: &str, now: Instant) -> std::io::Result<(String, String)> {
        let cookie = hex(&crate::random_secret()?);
        let csrf = hex(&crate::random_secret()?);
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.expires > now);
        while map.len() >= MAX_SESSIONS {
            let oldest = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k);
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(
            digest(cookie.as_bytes()),
            Session {
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
                token_digest: digest(token.as_bytes()),
            },
        );
        Ok((cookie, csrf))
    }

    /// The CSRF token of the live session `cookie` names, made with `token`.
    pub fn csrf(&self, cookie: &str, token: &str, now: Instant) -> Option<String> {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let key = digest(cookie.as_bytes());
        let s = map.get(&key)?;
        if s.expires <= now || !secret_eq(&s.token_digest, &digest(token.as_bytes())) {
            map.remove(&key);
            return None;
        }
        Some(s.csrf.clone())
    }

    /// End the session `cookie` names.
    pub fn logout(&self, cookie: &str) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&digest(cookie.as_bytes()));
    }

    /// How many sessions are kept (expired ones included until the next login).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session cookie's value in `req`, if any.
pub fn session_cookie<B>(req: &Request<B>) -> Option<&str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == SESSION_COOKIE && !v.is_empty()).then_some(v)
        })
}

/// Whether `req` may use the admin API: the bearer token, or a live session (plus its CSRF
/// token for anything but GET and HEAD). The error is the reply to send (boxed: it is large).
pub fn authorize<B>(
    req: &Request<B>,
    token: &str,
    sessions: &Sessions,
    now: Instant,
) -> Result<(), Box<Reply>> {
    if bearer_ok(req, token) {
        return Ok(());
    }
    let Some(csrf) = session_cookie(req).and_then(|c| sessions.csrf(c, token, now)) else {
        return Err(Box::new(crate::http::unauthorized()));
    };
    if matches!(*req.method(), Method::GET | Method::HEAD) {
        return Ok(());
    }
    let given = req
        .headers()
        .get(CSRF_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if secret_eq(given, csrf.as_bytes()) {
        Ok(())
    } else {
        Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            "missing or wrong X-CSRF-Token for this session",
        )))
    }
}

fn asset(content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

fn set_cookie(r: &mut Reply, value: &str, max_age: Duration) {
    // Not `Secure`: the admin listener speaks plain HTTP (put it on a private network or
    // behind TLS); a Secure cookie would never come back over it.
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age.as_secs()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The dashboard's own routes; `None` for any other path (the caller goes on with its API).
pub fn route<B>(req: &Request<B>, token: &str, sessions: &Sessions, now: Instant) -> Option<Reply> {
    let method = req.method();
    let reply = match (method, req.uri().path()) {
        (&Method::GET, "/" | "/dashboard" | "/dashboard/") => {
            asset("text/html; charset=utf-8", INDEX_HTML)
        }
        (&Method::GET, "/dashboard/app.js") => asset("text/javascript; charset=utf-8", APP_JS),
        (&Method::GET, "/dashboard/app.css") => asset("text/css; charset=utf-8", APP_CSS),
        (&Method::GET, "/dashboard/hls.min.js") => {
            asset("text/javascript; charset=utf-8", Bytes::from_static(HLS_JS))
        }
        (&Method::POST, "/dashboard/session") => {
            if !bearer_ok(req, token) {
                return Some(crate::http::unauthorized());
            }
            match sessions.login(token, now) {
                Ok((cookie, csrf)) => {
                    let mut r = json(&serde_json::json!({ "csrf": csrf }));
                    set_cookie(&mut r, &cookie, SESSION_TTL);
                    r
                }
                Err(e) => problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot make a session: no random source ({e})"),
                ),
            }
        }
        (&Method::GET, "/dashboard/session") => {
            match session_cookie(req).and_then(|c| sessions.csrf(c, token, now)) {
                Some(csrf) => {
                    let mut r = json(&serde_json::json!({ "csrf": csrf }));
                    r.headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    r
                }
                None => crate::http::unauthorized(),
            }
        }
        (&Method::DELETE, "/dashboard/session") => {
            if let Err(r) = authorize(req, token, sessions, now) {
                return Some(*r);
            }
            if let Some(c) = session_cookie(req) {
                sessions.logout(c);
            }
            let mut r = json(&serde_json::json!({ "logged_out": true }));
            set_cookie(&mut r, "", Duration::ZERO);
            r
        }
        (_, "/dashboard/session") => problem(StatusCode::METHOD_NOT_ALLOWED, "GET, POST or DELETE"),
        (_, p) if p.starts_with("/dashboard/") => problem(StatusCode::NOT_FOUND, "no such page"),
        _ => return None,
    };
    Some(reply)
}

#[cfg(test)]
#[path = "dashboard_test.rs"]
mod tests;
