//! A minimal RTMP publisher on a blocking socket, bound to a source address of our choice
//! (all of 127/8 is loopback on Linux): for floods from many addresses, where an encoder
//! process per attempt would cost more CPU than the system under test. It speaks RTMP through
//! rml_rtmp's client session (a library we did not write), up to the server's answer to
//! `publish`; [`replay_flv`] then sends media an encoder made, re-timed as an encoder that
//! does not interleave its tracks would send it.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use rml_rtmp::{
    handshake::{Handshake, HandshakeProcessResult, PeerType},
    sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
        PublishRequestType,
    },
};

/// What the server said to `publish`.
#[derive(Debug)]
pub enum Outcome {
    /// NetStream.Publish.Start: the socket, ready for media.
    Accepted(TcpStream),
    /// An onStatus code other than Publish.Start, or the server closed the connection.
    Refused(String),
}

fn other(e: impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

/// Connect from `source` to `addr`, publish `key` on app `live`; wait at most `timeout` for
/// each read.
pub fn publish_from(
    source: IpAddr,
    addr: SocketAddr,
    key: &str,
    timeout: Duration,
) -> Result<Outcome, String> {
    publish_after(source, addr, &[], key, timeout)
}

/// [`publish_from`], sending `prefix` (e.g. a PROXY v2 header) before the RTMP handshake.
pub fn publish_after(
    source: IpAddr,
    addr: SocketAddr,
    prefix: &[u8],
    key: &str,
    timeout: Duration,
) -> Result<Outcome, String> {
    Ok(match publish_session(source, addr, prefix, key, timeout)? {
        Ok((s, _)) => Outcome::Accepted(s),
        Err(why) => Outcome::Refused(why),
    })
}

/// Publish `key` on `addr` and send the FLV file `flv` (as ffmpeg writes it) in real time, in
/// its own order and pace (each tag when its timestamp is due), but with every audio tag's
/// timestamp moved by `audio_shift_ms`: what an encoder whose audio clock runs apart from its
/// video clock sends, since it does not hold one track back to interleave them by timestamp
/// as ffmpeg's and OBS's muxers do. Returns when the file is sent or `stop` is set.
pub fn replay_flv(
    addr: SocketAddr,
    key: &str,
    flv: &[u8],
    audio_shift_ms: u32,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    let (mut s, mut session) = publish_session(
        "127.0.0.1".parse().map_err(other)?,
        addr,
        &[],
        key,
        Duration::from_secs(10),
    )?
    .map_err(|why| format!("publish refused: {why}"))?;
    // The server's few messages (acknowledgements) are not read: nothing we send waits on
    // them, and the socket's buffer holds them.
    let started = std::time::Instant::now();
    let mut at = 13; // after the FLV header and the first PreviousTagSize
    while at + 11 <= flv.len() && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let kind = flv[at];
        let size = u32::from_be_bytes([0, flv[at + 1], flv[at + 2], flv[at + 3]]) as usize;
        let ts = u32::from_be_bytes([flv[at + 7], flv[at + 4], flv[at + 5], flv[at + 6]]);
        let body = flv
            .get(at + 11..at + 11 + size)
            .ok_or("FLV tag past the end of the file")?;
        at += 11 + size + 4;
        let due = Duration::from_millis(u64::from(ts));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let data = bytes::Bytes::copy_from_slice(body);
        let packet = match kind {
            8 => session.publish_audio_data(
                data,
                rml_rtmp::time::RtmpTimestamp::new(ts + audio_shift_ms),
                false,
            ),
            9 => session.publish_video_data(data, rml_rtmp::time::RtmpTimestamp::new(ts), false),
            _ => continue, // script data: the stream plays without it
        }
        .map_err(other)?;
        if let ClientSessionResult::OutboundResponse(p) = packet {
            s.write_all(&p.bytes)
                .map_err(|e| format!("sending media: {e}"))?;
        }
    }
    Ok(())
}

/// The handshake, `connect` and `publish`: the socket and session once the server said
/// NetStream.Publish.Start, or why not.
#[allow(clippy::type_complexity)]
fn publish_session(
    source: IpAddr,
    addr: SocketAddr,
    prefix: &[u8],
    key: &str,
    timeout: Duration,
) -> Result<Result<(TcpStream, ClientSession), String>, String> {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).map_err(other)?;
    sock.bind(&SocketAddr::new(source, 0).into())
        .map_err(|e| format!("bind {source}: {e}"))?;
    sock.connect_timeout(&addr.into(), timeout)
        .map_err(|e| format!("connect: {e}"))?;
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(timeout)).map_err(other)?;
    s.set_nodelay(true).map_err(other)?;
    if !prefix.is_empty() {
        s.write_all(prefix).map_err(other)?;
    }
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().map_err(other)?)
        .map_err(other)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut remaining = loop {
        let n = s.read(&mut buf).map_err(|e| format!("handshake: {e}"))?;
        if n == 0 {
            return Ok(Err("closed during handshake".into()));
        }
        match hs.process_bytes(&buf[..n]).map_err(other)? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes).map_err(other)?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                s.write_all(&response_bytes).map_err(other)?;
                break remaining_bytes;
            }
        }
    };
    let (mut session, initial) = ClientSession::new(ClientSessionConfig::new()).map_err(other)?;
    for r in initial {
        if let ClientSessionResult::OutboundResponse(p) = r {
            s.write_all(&p.bytes).map_err(other)?;
        }
    }
    if let ClientSessionResult::OutboundResponse(p) =
        session.request_connection("live".into()).map_err(other)?
    {
        s.write_all(&p.bytes).map_err(other)?;
    }
    loop {
        if !remaining.is_empty() {
            let results = session.handle_input(&remaining).map_err(other)?;
            remaining.clear();
            for r in results {
                match r {
                    ClientSessionResult::OutboundResponse(p) => {
                        s.write_all(&p.bytes).map_err(other)?
                    }
                    ClientSessionResult::RaisedEvent(
                        ClientSessionEvent::ConnectionRequestAccepted,
                    ) => {
                        if let ClientSessionResult::OutboundResponse(p) = session
                            .request_publishing(key.to_string(), PublishRequestType::Live)
                            .map_err(other)?
                        {
                            s.write_all(&p.bytes).map_err(other)?;
                        }
                    }
                    ClientSessionResult::RaisedEvent(
                        ClientSessionEvent::PublishRequestAccepted,
                    ) => return Ok(Ok((s, session))),
                    ClientSessionResult::RaisedEvent(
                        ClientSessionEvent::ConnectionRequestRejected { description },
                    ) => return Ok(Err(format!("connect rejected: {description}"))),
                    ClientSessionResult::RaisedEvent(
                        ClientSessionEvent::UnhandleableOnStatusCode { code },
                    ) => return Ok(Err(code)),
                    _ => {}
                }
            }
        }
        match s.read(&mut buf) {
            Ok(0) => return Ok(Err("closed".into())),
            Ok(n) => remaining.extend_from_slice(&buf[..n]),
            // A reset after the refusal is a refusal.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok(Err("reset".into()))
            }
            Err(e) => return Err(format!("waiting for the publish answer: {e}")),
        }
    }
}
