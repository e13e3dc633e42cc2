//! RTMP ingest on tcp/1935 (rml_rtmp on tokio).
//!
//! [`serve`] accepts connections; [`handle_connection`] runs one of them and is generic over
//! the byte stream, so tests can drive it through `tokio::io::duplex`. Flow: handshake →
//! `connect` (app must be `live`) → `publish` (key checked, capacity reserved) → media
//! messages wrapped as FLV tags into the stream's pipeline, until the publisher leaves, is
//! kicked or replaced, or its pipeline fails. A refusal sends the RTMP `onStatus` error the
//! encoder shows its user, then closes. Malformed input ends that connection only.

use std::{net::SocketAddr, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use bytes::Bytes;
use rml_rtmp::{
    handshake::{Handshake, HandshakeProcessResult, PeerType},
    sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use wire::streamid::APP;

use crate::{
    flv, metrics,
    node::{Admission, AdmitError, Node, Protocol, StreamOutput},
    pipeline::{InputFormat, Pipeline},
};

/// Connections at once, publishing or not: bounds what idle or slow peers can hold.
pub const MAX_CONNECTIONS: usize = 4096;
/// The RTMP handshake is 3 small messages each way; a peer slower than this is not an encoder.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// From handshake to `publish`: encoders send connect/createStream/publish at once.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);
/// A publisher that sends nothing at all for this long is gone (encoders send media many
/// times per second; a TCP connection can stay half-open for hours without this).
const MEDIA_TIMEOUT: Duration = Duration::from_secs(30);
/// Read buffer per connection.
const READ_BUF: usize = 64 * 1024;
/// What a publisher may send before `publish`: connect, releaseStream, FCPublish,
/// createStream and publish are a few hundred bytes. Bounds the byte-at-a-time parsing.
const MAX_BYTES_BEFORE_PUBLISH: usize = 64 * 1024;

/// Why a connection ended badly.
#[derive(Debug, thiserror::Error)]
pub enum RtmpError {
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the handshake.
    #[error("bad handshake: {0}")]
    Handshake(String),
    /// The peer sent bytes that are not valid RTMP chunks or messages.
    #[error("malformed RTMP input: {0}")]
    Malformed(String),
    /// A phase took longer than its timeout.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The publisher was refused (key, capacity, app).
    #[error("refused: {0}")]
    Refused(String),
    /// The stream's pipeline failed or could not start.
    #[error("pipeline: {0}")]
    Pipeline(String),
}

/// Accept RTMP connections until `shutdown`.
pub async fn serve(node: Arc<Node>, listener: TcpListener, shutdown: CancellationToken) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (sock, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "rtmp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            metrics::CONNECTIONS
                .with_label_values(&["rtmp", "too_many_connections"])
                .inc();
            continue;
        };
        let _ = sock.set_nodelay(true);
        let node = Arc::clone(&node);
        let span = tracing::info_span!("rtmp", client.addr = %peer, encoder.addr = tracing::field::Empty, stream.id = tracing::field::Empty);
        tokio::spawn(
            async move {
                match handle_connection(node, sock, peer).await {
                    Ok(()) => tracing::info!("rtmp connection closed"),
                    Err(e) => tracing::info!(reason = %e, "rtmp connection ended"),
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

struct Publishing {
    admission: Admission,
    pipeline: Pipeline,
    output: Arc<StreamOutput>,
}

/// Run one RTMP connection to its end.
pub async fn handle_connection<S>(
    node: Arc<Node>,
    mut io: S,
    peer: SocketAddr,
) -> Result<(), RtmpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; READ_BUF];
    // A balancer in front of us opens with a PROXY v2 header naming the encoder and the
    // reservation it holds here; anyone else's connection starts with the RTMP handshake.
    let (conn, prefix) = if node.trusts(peer.ip()) {
        let (header, rest) =
            tokio::time::timeout(HANDSHAKE_TIMEOUT, read_proxy_header(&mut io, &mut buf))
                .await
                .map_err(|_| RtmpError::Timeout("PROXY header"))??;
        let conn = ConnInfo {
            client: header.as_ref().and_then(|h| h.source).unwrap_or(peer),
            reservation: header.and_then(|h| h.reservation),
        };
        if conn.client != peer {
            tracing::Span::current().record("encoder.addr", tracing::field::display(conn.client));
            tracing::info!(balancer.addr = %peer, "connection relayed by a balancer");
        }
        (conn, rest)
    } else {
        (
            ConnInfo {
                client: peer,
                reservation: None,
            },
            Vec::new(),
        )
    };
    let remaining = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut io, &mut buf, prefix))
        .await
        .map_err(|_| RtmpError::Timeout("handshake"))??;

    let (mut session, initial) = ServerSession::new(ServerSessionConfig::new())
        .map_err(|e| RtmpError::Malformed(e.to_string()))?;
    let mut publishing: Option<Publishing> = None;
    let mut pending = initial;
    let mut input = remaining;
    let mut before_publish = 0usize;
    let result = loop {
        if !input.is_empty() {
            let data = std::mem::take(&mut input);
            let mut fed = 0;
            let mut outcome = None;
            while fed < data.len() {
                // Before publish, one byte at a time: each command is answered (connect
                // accepted, stream created) before the next is parsed, because rml_rtmp drops
                // commands that arrive before their connect is accepted, and encoders and our
                // balancers send connect ... publish in one go. After publish, all at once.
                let step = if publishing.is_some() {
                    data.len() - fed
                } else {
                    1
                };
                if publishing.is_none() {
                    before_publish += step;
                    if before_publish > MAX_BYTES_BEFORE_PUBLISH {
                        outcome = Some(Err(RtmpError::Malformed(
                            "too much data before publish".into(),
                        )));
                        break;
                    }
                }
                match guarded_input(&mut session, &data[fed..fed + step]) {
                    Ok(r) => pending.extend(r),
                    Err(e) => {
                        outcome = Some(Err(e));
                        break;
                    }
                }
                fed += step;
                if !pending.is_empty() {
                    match process(
                        &node,
                        &mut io,
                        &mut session,
                        &mut pending,
                        &mut publishing,
                        &conn,
                    )
                    .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            outcome = Some(Ok(()));
                            break;
                        }
                        Err(e) => {
                            outcome = Some(Err(e));
                            break;
                        }
                    }
                }
            }
            if let Some(o) = outcome {
                break o;
            }
        }
        match process(
            &node,
            &mut io,
            &mut session,
            &mut pending,
            &mut publishing,
            &conn,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
        let timeout = if publishing.is_some() {
            MEDIA_TIMEOUT
        } else {
            PUBLISH_TIMEOUT
        };
        let read = match &publishing {
            Some(p) => tokio::select! {
                _ = p.admission.cancel.cancelled() => break Err(RtmpError::Refused("kicked or replaced by a new publisher".into())),
                r = p.pipeline.wait() => {
                    metrics::PIPELINE_ERRORS.inc();
                    break Err(RtmpError::Pipeline(r.err().map(|e| e.to_string()).unwrap_or_else(|| "ended".into())));
                }
                r = tokio::time::timeout(timeout, io.read(&mut buf)) => r,
            },
            None => tokio::time::timeout(timeout, io.read(&mut buf)).await,
        };
        match read {
            Err(_) => {
                break Err(RtmpError::Timeout(if publishing.is_some() {
                    "media"
                } else {
                    "publish"
                }))
            }
            Ok(Err(e)) => break Err(e.into()),
            Ok(Ok(0)) => break Ok(()),
            Ok(Ok(n)) => {
                if publishing.is_some() {
                    metrics::BYTES_RECEIVED
                        .with_label_values(&["rtmp"])
                        .inc_by(n as u64);
                }
                input.extend_from_slice(&buf[..n]);
            }
        }
    };
    if let Some(p) = publishing {
        let r = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
        if let Err(e) = p.admission.finish_pipeline(p.pipeline, p.output, r).await {
            tracing::info!(reason = %e, "stream ended");
        }
    }
    let _ = io.shutdown().await;
    result
}

/// Where a connection really comes from, and the balancer's reservation for it.
struct ConnInfo {
    client: SocketAddr,
    reservation: Option<u64>,
}

/// Read a PROXY v2 header if the connection starts with one. Returns it (or `None`) and the
/// bytes read past it, which belong to the RTMP handshake.
async fn read_proxy_header<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut [u8],
) -> Result<(Option<wire::proxy::Header>, Vec<u8>), RtmpError> {
    let mut acc = Vec::new();
    loop {
        let n = io.read(buf).await?;
        if n == 0 {
            return Err(RtmpError::Handshake("closed before the handshake".into()));
        }
        acc.extend_from_slice(&buf[..n]);
        match wire::proxy::decode(&acc) {
            Ok(wire::proxy::Decoded::Header(h, used)) => return Ok((Some(h), acc.split_off(used))),
            Ok(wire::proxy::Decoded::Incomplete(_)) => continue,
            Err(wire::proxy::ProxyError::NoSignature) => return Ok((None, acc)),
            Err(e) => return Err(RtmpError::Handshake(e.to_string())),
        }
    }
}

async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    buf: &mut [u8],
    mut prefix: Vec<u8>,
) -> Result<Vec<u8>, RtmpError> {
    let mut hs = Handshake::new(PeerType::Server);
    loop {
        let data = if prefix.is_empty() {
            let n = io.read(buf).await?;
            if n == 0 {
                return Err(RtmpError::Handshake("closed during handshake".into()));
            }
            buf[..n].to_vec()
        } else {
            std::mem::take(&mut prefix)
        };
        let step = std::panic::catch_unwind(AssertUnwindSafe(|| hs.process_bytes(&data)))
            .map_err(|_| RtmpError::Handshake("handshake parser failed".into()))?
            .map_err(|e| RtmpError::Handshake(format!("{e:?}")))?;
        match step {
            HandshakeProcessResult::InProgress { response_bytes } => {
                io.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                io.write_all(&response_bytes).await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// Feed bytes to rml_rtmp; a panic inside it (a bug a hostile peer might find) becomes an
/// error for this connection instead of a crash.
fn guarded_input(
    session: &mut ServerSession,
    bytes: &[u8],
) -> Result<Vec<ServerSessionResult>, RtmpError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| session.handle_input(bytes)))
        .map_err(|_| RtmpError::Malformed("RTMP parser failed".into()))?
        .map_err(|e| RtmpError::Malformed(e.to_string()))
}

/// Send outbound packets and act on events. Ok(false) when the publisher finished.
async fn process<S: AsyncWrite + Unpin>(
    node: &Arc<Node>,
    io: &mut S,
    session: &mut ServerSession,
    pending: &mut Vec<ServerSessionResult>,
    publishing: &mut Option<Publishing>,
    conn: &ConnInfo,
) -> Result<bool, RtmpError> {
    while !pending.is_empty() {
        let results = std::mem::take(pending);
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => io.write_all(&p.bytes).await?,
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
                ServerSessionResult::RaisedEvent(ev) => {
                    match ev {
                        ServerSessionEvent::ConnectionRequested {
                            request_id,
                            app_name,
                        } => {
                            if app_name.trim_matches('/') == APP {
                                pending.extend(
                                    session
                                        .accept_request(request_id)
                                        .map_err(|e| RtmpError::Malformed(e.to_string()))?,
                                );
                            } else {
                                let out = session
                                .reject_request(request_id, "NetConnection.Connect.Rejected", "unknown application: publish to rtmp://HOST/live/STREAM_KEY")
                                .map_err(|e| RtmpError::Malformed(e.to_string()))?;
                                send_all(io, out).await?;
                                metrics::CONNECTIONS
                                    .with_label_values(&["rtmp", "bad_app"])
                                    .inc();
                                return Err(RtmpError::Refused(format!(
                                    "unknown application '{}'",
                                    app_name.chars().take(64).collect::<String>()
                                )));
                            }
                        }
                        ServerSessionEvent::PublishStreamRequested {
                            request_id,
                            stream_key,
                            ..
                        } => {
                            if publishing.is_some() {
                                let out = session
                                    .reject_request(
                                        request_id,
                                        "NetStream.Publish.BadName",
                                        "this connection already publishes a stream",
                                    )
                                    .map_err(|e| RtmpError::Malformed(e.to_string()))?;
                                send_all(io, out).await?;
                                continue;
                            }
                            match node
                                .admit(&stream_key, conn.client, Protocol::Rtmp, conn.reservation)
                                .await
                            {
                                Ok(admission) => {
                                    tracing::Span::current()
                                        .record("stream.id", admission.playback_id.as_str());
                                    let (pipeline, output) = admission
                                        .start_pipeline(InputFormat::Flv, None)
                                        .map_err(|e| RtmpError::Pipeline(e.to_string()))?;
                                    pipeline
                                        .push(flv::header())
                                        .map_err(|e| RtmpError::Pipeline(e.to_string()))?;
                                    pending.extend(
                                        session
                                            .accept_request(request_id)
                                            .map_err(|e| RtmpError::Malformed(e.to_string()))?,
                                    );
                                    metrics::CONNECTIONS
                                        .with_label_values(&["rtmp", "accepted"])
                                        .inc();
                                    tracing::info!("rtmp publisher accepted");
                                    *publishing = Some(Publishing {
                                        admission,
                                        pipeline,
                                        output,
                                    });
                                }
                                Err(e) => {
                                    let (code, text) = match &e {
                                        AdmitError::Auth(_) => (
                                            "NetStream.Publish.Denied",
                                            "publish denied: invalid stream key".to_string(),
                                        ),
                                        AdmitError::Full(why) => (
                                            "NetStream.Publish.Rejected",
                                            format!("publish rejected: {why}"),
                                        ),
                                        AdmitError::Busy => (
                                            "NetStream.Publish.BadName",
                                            "publish rejected: stream is busy".to_string(),
                                        ),
                                    };
                                    let out = session
                                        .reject_request(request_id, code, &text)
                                        .map_err(|e| RtmpError::Malformed(e.to_string()))?;
                                    send_all(io, out).await?;
                                    let _ = io.flush().await;
                                    metrics::CONNECTIONS
                                        .with_label_values(&["rtmp", e.label()])
                                        .inc();
                                    return Err(RtmpError::Refused(e.to_string()));
                                }
                            }
                        }
                        ServerSessionEvent::PublishStreamFinished { .. } => return Ok(false),
                        ServerSessionEvent::VideoDataReceived {
                            data, timestamp, ..
                        } => push_tag(publishing, flv::TagType::Video, timestamp.value, &data)?,
                        ServerSessionEvent::AudioDataReceived {
                            data, timestamp, ..
                        } => push_tag(publishing, flv::TagType::Audio, timestamp.value, &data)?,
                        ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                            let out = session
                                .reject_request(
                                    request_id,
                                    "NetStream.Play.Failed",
                                    "this is an ingest: play over HLS",
                                )
                                .map_err(|e| RtmpError::Malformed(e.to_string()))?;
                            send_all(io, out).await?;
                            return Err(RtmpError::Refused("play requested".into()));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(true)
}

async fn send_all<S: AsyncWrite + Unpin>(
    io: &mut S,
    results: Vec<ServerSessionResult>,
) -> Result<(), RtmpError> {
    for r in results {
        if let ServerSessionResult::OutboundResponse(p) = r {
            io.write_all(&p.bytes).await?;
        }
    }
    Ok(())
}

fn push_tag(
    publishing: &Option<Publishing>,
    kind: flv::TagType,
    ts: u32,
    data: &Bytes,
) -> Result<(), RtmpError> {
    let Some(p) = publishing else {
        return Ok(()); // media before publish: ignore
    };
    let Some(tag) = flv::tag(kind, ts, data) else {
        return Err(RtmpError::Malformed(
            "media message larger than FLV allows".into(),
        ));
    };
    p.pipeline
        .push(tag)
        .map_err(|e| RtmpError::Pipeline(e.to_string()))
}
