//! SRT stream ID parsing: which stream a caller wants to publish.
//!
//! Accepted forms (DESIGN.md): the SRT Access Control syntax `#!::r=live/KEY,m=publish`
//! (keys in any order, `m` defaults to `request` per the spec, so it must say `publish`),
//! `publish:live/KEY`, `live/KEY` and a bare `KEY`. Pure code; fuzzed by `fuzz_streamid`.

/// What a caller asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamIdRequest {
    /// The stream key (a secret: never log it).
    pub key: String,
    /// `edge-res=N`: the balancer's reservation on this node (only honoured from a balancer).
    pub reservation: Option<u64>,
    /// `edge-client=ADDR`: the encoder's address, as the balancer saw it (idem).
    pub client: Option<std::net::SocketAddr>,
}

/// Why a stream ID was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    /// The stream ID was empty or missing.
    #[error("empty stream ID")]
    Empty,
    /// Longer than SRT allows (512 bytes).
    #[error("stream ID longer than {MAX_STREAM_ID_LEN} bytes")]
    TooLong,
    /// `#!::` syntax with a malformed `key=value` pair.
    #[error("malformed access-control stream ID: {0}")]
    Malformed(&'static str),
    /// The caller wants to play, not publish; this is an ingest.
    #[error("mode '{0}' is not supported: use m=publish")]
    NotPublish(String),
    /// The resource names an application other than `live`.
    #[error("unknown application '{0}': use live/STREAM_KEY")]
    UnknownApp(String),
}

/// SRT limits the stream ID to 512 bytes (SRTO_STREAMID).
pub const MAX_STREAM_ID_LEN: usize = 512;

/// Access-control key a balancer adds for the reservation it holds on the node.
pub const RESERVATION_KEY: &str = "edge-res";
/// Access-control key a balancer adds for the encoder's address.
pub const CLIENT_KEY: &str = "edge-client";

/// The stream ID a balancer sends a node: the caller's key in the access-control form, plus
/// the reservation and the encoder's address.
pub fn for_node(key: &str, reservation: u64, client: std::net::SocketAddr) -> String {
    format!("#!::r={APP}/{key},m=publish,{RESERVATION_KEY}={reservation},{CLIENT_KEY}={client}")
}

/// The one application name we serve, as in `rtmp://host/live/KEY`.
pub const APP: &str = "live";

/// Parse a stream ID into the key to publish.
pub fn parse(sid: &str) -> Result<StreamIdRequest, StreamIdError> {
    if sid.len() > MAX_STREAM_ID_LEN {
        return Err(StreamIdError::TooLong);
    }
    let sid = sid.trim();
    if sid.is_empty() {
        return Err(StreamIdError::Empty);
    }
    if let Some(body) = sid.strip_prefix("#!::") {
        let mut resource = None;
        let mut user = None;
        let mut mode = "request";
        let mut reservation: Option<u64> = None;
        let mut client: Option<std::net::SocketAddr> = None;
        for pair in body.split(',') {
            let (k, v) = pair
                .split_once('=')
                .ok_or(StreamIdError::Malformed("pair without '='"))?;
            match k.trim() {
                "r" => resource = Some(v.trim()),
                "u" => user = Some(v.trim()),
                "m" => mode = v.trim(),
                RESERVATION_KEY => reservation = v.trim().parse().ok(),
                CLIENT_KEY => client = v.trim().parse().ok(),
                // h (host), s (session), t (type) and custom keys are allowed and ignored.
                _ => {}
            }
        }
        if mode != "publish" {
            return Err(StreamIdError::NotPublish(mode.to_string()));
        }
        // Some encoders put the key in `u` and leave `r` as the app.
        let resource = resource
            .or(user)
            .ok_or(StreamIdError::Malformed("no r= resource"))?;
        let mut r = resource_key(resource)?;
        r.reservation = reservation;
        r.client = client;
        return Ok(r);
    }
    if let Some(rest) = sid.strip_prefix("publish:") {
        return resource_key(rest);
    }
    if let Some(rest) = sid
        .strip_prefix("play:")
        .or_else(|| sid.strip_prefix("read:"))
    {
        let _ = rest;
        return Err(StreamIdError::NotPublish("play".into()));
    }
    resource_key(sid)
}

/// `live/KEY` or `KEY`.
fn resource_key(resource: &str) -> Result<StreamIdRequest, StreamIdError> {
    let resource = resource.trim().trim_start_matches('/');
    let key = match resource.split_once('/') {
        Some((app, key)) if app == APP => key,
        Some((app, _)) => return Err(StreamIdError::UnknownApp(app.to_string())),
        None => resource,
    };
    if key.is_empty() {
        return Err(StreamIdError::Empty);
    }
    Ok(StreamIdRequest {
        key: key.to_string(),
        reservation: None,
        client: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Result<String, StreamIdError> {
        parse(s).map(|r| r.key)
    }

    #[test]
    fn all_documented_forms() {
        assert_eq!(key("#!::r=live/abc,m=publish").unwrap(), "abc");
        assert_eq!(key("#!::m=publish,r=live/abc").unwrap(), "abc");
        assert_eq!(key("#!::r=abc,m=publish,s=x").unwrap(), "abc");
        assert_eq!(key("publish:live/abc").unwrap(), "abc");
        assert_eq!(key("live/abc").unwrap(), "abc");
        assert_eq!(key("abc").unwrap(), "abc");
    }

    #[test]
    fn balancer_fields_round_trip() {
        let c: std::net::SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let r = parse(&for_node("abc", 77, c)).unwrap();
        assert_eq!(
            (r.key.as_str(), r.reservation, r.client),
            ("abc", Some(77), Some(c))
        );
        assert_eq!(
            parse("#!::r=live/abc,m=publish,edge-res=x")
                .unwrap()
                .reservation,
            None
        );
    }

    #[test]
    fn refusals_are_precise() {
        assert_eq!(
            key("#!::r=live/abc"),
            Err(StreamIdError::NotPublish("request".into()))
        );
        assert_eq!(
            key("#!::r=live/abc,m=request"),
            Err(StreamIdError::NotPublish("request".into()))
        );
        assert_eq!(
            key("#!::rlive"),
            Err(StreamIdError::Malformed("pair without '='"))
        );
        assert_eq!(
            key("#!::m=publish"),
            Err(StreamIdError::Malformed("no r= resource"))
        );
        assert_eq!(key("vod/abc"), Err(StreamIdError::UnknownApp("vod".into())));
        assert_eq!(key(""), Err(StreamIdError::Empty));
        assert_eq!(key("live/"), Err(StreamIdError::Empty));
        assert_eq!(key(&"x".repeat(600)), Err(StreamIdError::TooLong));
        assert!(matches!(
            key("play:live/abc"),
            Err(StreamIdError::NotPublish(_))
        ));
    }
}
