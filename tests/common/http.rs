//! A small blocking HTTP/1.1 client on `std::net::TcpStream` (plain http only), enough for
//! playlists, media, `/healthz`, `/metrics` and the admin API. One connection per request
//! (`Connection: close`); bodies may be Content-Length, chunked, or delimited by EOF.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Status, headers and the offset where the body starts.
type Head = (u16, Vec<(String, String)>, usize);

/// Status, headers (in order, names as sent) and body of one response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body)
            .map_err(|e| format!("body is not JSON ({e}): {}", self.text()))
    }
}

/// `GET url`, whole exchange bounded by `timeout`.
pub fn http_get(url: &str, timeout: Duration) -> Result<HttpResponse, String> {
    http_request("GET", url, &[], &[], timeout)
}

/// `GET url` (bounded by [`super::HTTP_TIMEOUT`]), panicking unless it answers 200.
pub fn get_ok(url: &str) -> HttpResponse {
    let r = http_get(url, super::HTTP_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        r.status,
        200,
        "GET {url}: {}",
        String::from_utf8_lossy(&r.body[..r.body.len().min(500)])
    );
    r
}

/// `GET url` with extra request headers (e.g. `("Authorization", "Bearer ...")`).
pub fn http_get_with_headers(
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<HttpResponse, String> {
    http_request("GET", url, headers, &[], timeout)
}

/// Any method with optional body; the whole exchange is bounded by `timeout`.
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let deadline = Instant::now() + timeout;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    let has_port = if authority.starts_with('[') {
        authority.contains("]:")
    } else {
        authority.contains(':')
    };
    let host_port = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = host_port
        .to_socket_addrs()
        .map_err(|e| format!("{url}: resolve {host_port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: {host_port} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("{method} {url}: connect: {e}"))?;
    let _ = stream.set_nodelay(true);

    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: edge-e2e-tests\r\nAccept: */*\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    stream
        .set_write_timeout(Some(remaining(deadline, url)?))
        .map_err(|e| format!("{url}: set timeout: {e}"))?;
    stream
        .write_all(req.as_bytes())
        .and_then(|_| stream.write_all(body))
        .map_err(|e| format!("{method} {url}: write: {e}"))?;

    let mut buf = Vec::with_capacity(16 * 1024);
    let mut head: Option<Head> = None;
    let mut chunk = [0u8; 64 * 1024];
    loop {
        if let Some((status, hdrs, body_start)) = &head {
            if let Some(body) = body_if_complete(method, *status, hdrs, &buf[*body_start..], false)?
            {
                return Ok(HttpResponse {
                    status: *status,
                    headers: hdrs.clone(),
                    body,
                });
            }
        }
        stream
            .set_read_timeout(Some(remaining(deadline, url)?))
            .map_err(|e| format!("{url}: set timeout: {e}"))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "{method} {url}: no complete response within {timeout:?} ({} bytes read)",
                    buf.len()
                ))
            }
            Err(e) => return Err(format!("{method} {url}: read: {e}")),
        };
        if n == 0 {
            // EOF: the response must be complete now.
            return match &head {
                Some((status, hdrs, body_start)) => {
                    match body_if_complete(method, *status, hdrs, &buf[*body_start..], true)? {
                        Some(body) => Ok(HttpResponse {
                            status: *status,
                            headers: hdrs.clone(),
                            body,
                        }),
                        None => Err(format!("{method} {url}: connection closed mid-body")),
                    }
                }
                None => Err(format!(
                    "{method} {url}: connection closed before response headers ({} bytes)",
                    buf.len()
                )),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        if head.is_none() {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let (status, hdrs) =
                    parse_head(&buf[..end]).map_err(|e| format!("{method} {url}: {e}"))?;
                head = Some((status, hdrs, end + 4));
            }
        }
    }
}

fn remaining(deadline: Instant, url: &str) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(format!("{url}: timed out"))
    } else {
        Ok(left)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> Result<(u16, Vec<(String, String)>), String> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok((status, headers))
}

/// The decoded body if `data` holds all of it (`eof`: the server closed the connection).
fn body_if_complete(
    method: &str,
    status: u16,
    headers: &[(String, String)],
    data: &[u8],
    eof: bool,
) -> Result<Option<Vec<u8>>, String> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(Some(Vec::new()));
    }
    if get("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked")) {
        return decode_chunked(data);
    }
    if let Some(cl) = get("content-length") {
        let cl: usize = cl
            .parse()
            .map_err(|_| format!("bad Content-Length {cl:?}"))?;
        return Ok((data.len() >= cl).then(|| data[..cl].to_vec()));
    }
    Ok(eof.then(|| data.to_vec()))
}

/// Decodes a chunked body; `Ok(None)` while incomplete.
pub fn decode_chunked(mut data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&data[..line_end])
            .map_err(|_| "bad chunk size line".to_string())?;
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_hex, 16).map_err(|_| format!("bad chunk size {line:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(end) = find(data, b"\r\n") else {
                    return Ok(None);
                };
                if end == 0 {
                    return Ok(Some(out));
                }
                data = &data[end + 2..];
            }
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        if &data[size..size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".to_string());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// One request a [`hook_server`] received: headers (names lower-cased) and body.
#[derive(Debug, Clone)]
pub struct HookRequest {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HookRequest {
    /// The first header with this (lower-case) name, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// A webhook on loopback for the node to call: records every request, in order, and answers
/// each with `answer(request, how many came before it)` (a whole HTTP/1.1 response). Keeps
/// connections open between requests.
pub fn hook_server(
    answer: impl Fn(&HookRequest, usize) -> Vec<u8> + Send + Sync + 'static,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<HookRequest>>>) {
    use std::io::BufRead;
    use std::sync::{Arc, Mutex};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the hook");
    let port = l.local_addr().expect("hook address").port();
    let seen: Arc<Mutex<Vec<HookRequest>>> = Arc::new(Mutex::new(Vec::new()));
    let (s2, answer) = (Arc::clone(&seen), Arc::new(answer));
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let (seen, answer) = (Arc::clone(&s2), Arc::clone(&answer));
            std::thread::spawn(move || {
                let Ok(read) = conn.try_clone() else { return };
                let mut r = std::io::BufReader::new(read);
                loop {
                    let mut headers = Vec::new();
                    let mut line = String::new();
                    let mut first = true;
                    while r.read_line(&mut line).unwrap_or(0) > 2 {
                        if !first {
                            if let Some((k, v)) = line.split_once(':') {
                                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                            }
                        }
                        first = false;
                        line.clear();
                    }
                    if first {
                        return; // the connection closed
                    }
                    let len = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err() {
                        return;
                    }
                    let req = HookRequest {
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let reply = {
                        let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                        let reply = answer(&req, s.len());
                        s.push(req);
                        reply
                    };
                    if (&conn).write_all(&reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}
