//! RTMP ingest on tcp/1935: the thin tokio driver around `wire::rtmp::ServerCore`.
//!
//! [`serve`] accepts connections under the listener's caps (`server::Acceptor`);
//! [`handle_connection`] runs one of them and is generic over the byte stream, so tests can
//! drive it through `tokio::io::duplex`. The protocol (PROXY header from a trusted balancer,
//! handshake, connect/publish, phase deadlines, media messages) lives in the core; this file
//! moves bytes, asks the node to admit the publish ([`Node::admit`]), and wraps media
//! messages as FLV tags into the stream's pipeline, until the publisher leaves, is kicked or
//! replaced, or its pipeline fails. A refusal sends the RTMP `onStatus` error the encoder
//! shows its user, then closes. Malformed input ends that connection only.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use wire::rtmp::{Event, MediaKind, ServerCore, ServerOptions, SessionError, NODE_TIMEOUTS};

use crate::{
    direct::Input,
    flv, metrics,
    node::{Admission, AdmitError, Node, Protocol, StreamOutput},
    pipeline::PipelineError,
};

/// Connections at once, publishing or not: bounds what idle or slow peers can hold.
pub const MAX_CONNECTIONS: usize = 4096;
/// Connections at once from one address that is not a trusted balancer: an encoder needs
/// one, a studio behind one NAT a few dozen.
pub const MAX_CONNECTIONS_PER_IP: usize = 64;
/// Read buffer per publishing connection (media arrives in large writes).
const READ_BUF: usize = 64 * 1024;
/// Read buffer until `publish`: the handshake and the commands before it come in messages of a
/// few KiB at most, and an idle or hostile connection that never publishes should cost little.
const OPENING_READ_BUF: usize = 4 * 1024;
/// After refusing a publish mid-stream (a codec we cannot take), how long we keep reading
/// so the encoder can read the status: it checks for server messages between writes, and a
/// close with its data unread would reset the connection and lose the status.
const REFUSAL_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a connection ended badly.
#[derive(Debug, thiserror::Error)]
pub enum RtmpError {
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The RTMP session failed (handshake, malformed input, deadline, refused request).
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The publisher was refused (key, capacity) or kicked.
    #[error("refused: {0}")]
    Refused(String),
    /// The stream's pipeline failed or could not start.
    #[error("pipeline: {0}")]
    Pipeline(String),
    /// RTMPS: the TLS handshake failed or timed out.
    #[error("{0}")]
    Tls(String),
    /// The encoder sends what we cannot take once publishing (a codec, a source above
    /// `transcode.max_source_*`), told to it in an RTMP status.
    #[error("refused: {0}")]
    Codec(String),
}

/// Accept RTMP connections until `shutdown`; with `tls`, RTMPS: each connection completes a
/// TLS handshake (within `server::tls::HANDSHAKE_TIMEOUT`) before its RTMP session starts.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tls: Option<server::tls::TlsAcceptor>,
) {
    let name = if tls.is_some() { "rtmps" } else { "rtmp" };
    let acceptor = server::Acceptor::new(
        name,
        server::ConnLimits {
            max_total: MAX_CONNECTIONS,
            max_per_ip: MAX_CONNECTIONS_PER_IP,
            exempt: Vec::new(),
        },
        move |why| {
            metrics::CONNECTIONS_TOTAL
                .with_label_values(&[name, why.as_str()])
                .inc();
        },
    );
    // Balancers' addresses are exempt from the per-address cap (and stay so across reloads).
    node.exempt_trusted(&acceptor);
    loop {
        let (sock, peer, permit) = tokio::select! {
            _ = shutdown.cancelled() => break,
            c = acceptor.accept(&listener) => c,
        };
        let _ = sock.set_nodelay(true);
        let node = Arc::clone(&node);
        let tls = tls.clone();
        let span = tracing::info_span!("rtmp", client.addr = %peer, tls = tls.is_some(), encoder.addr = tracing::field::Empty, stream.id = tracing::field::Empty);
        tokio::spawn(
            async move {
                let ended = open_connection(node, sock, peer, tls).await;
                match ended {
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
    input: Input,
    output: Arc<StreamOutput>,
}

/// One accepted connection to its end. Its first bytes (C0+C1, or a balancer's PROXY header
/// and most of them; for RTMPS the ClientHello) are read into a buffer the size of what
/// arrives; the session's state (and TLS's) exists, boxed, once they are in, so a silent or
/// trickling peer costs a small task. Deadlines count from accept.
async fn open_connection(
    node: Arc<Node>,
    mut sock: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<server::tls::TlsAcceptor>,
) -> Result<(), RtmpError> {
    let accepted = Instant::now();
    match tls {
        None => {
            let len = wire::rtmp::C0_C1_LEN;
            let until = accepted + NODE_TIMEOUTS.handshake;
            let opening = server::opening::read_opening(&mut sock, until, len, |b| b.len() >= len)
                .await
                .map_err(opening_error)?;
            Box::pin(handle_connection(node, sock, peer, accepted, opening)).await
        }
        Some(tls) => {
            let hello = server::tls::read_hello(&mut sock, accepted, "rtmps")
                .await
                .map_err(RtmpError::Tls)?;
            Box::pin(async move {
                let s = server::tls::accept(&tls, sock, hello, accepted, "rtmps")
                    .await
                    .map_err(RtmpError::Tls)?;
                // The RTMP handshake's own deadline starts once TLS is up.
                handle_connection(node, s, peer, Instant::now(), Vec::new()).await
            })
            .await
        }
    }
}

/// Why a connection's opening ([`server::opening::read_opening`]) was not read: its deadline
/// is the handshake's; a peer that left is not an error.
fn opening_error(e: std::io::Error) -> RtmpError {
    match e.kind() {
        std::io::ErrorKind::TimedOut => RtmpError::Session(SessionError::Timeout("handshake")),
        std::io::ErrorKind::UnexpectedEof => {
            RtmpError::Session(SessionError::Handshake("closed before C0+C1".into()))
        }
        _ => RtmpError::Io(e),
    }
}

/// Run one RTMP connection to its end: accepted at `accepted` (the handshake deadline counts
/// from there), `opening` its first bytes, already read.
pub async fn handle_connection<S>(
    node: Arc<Node>,
    mut io: S,
    peer: SocketAddr,
    accepted: Instant,
    opening: Vec<u8>,
) -> Result<(), RtmpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut core = ServerCore::new(
        ServerOptions {
            // A balancer in front of us opens with a PROXY v2 header naming the encoder and
            // the reservation it holds here; anyone else's connection starts with the RTMP
            // handshake, and a PROXY header from them is not accepted.
            expect_proxy: node.trusts(peer.ip()),
            record: false,
            timeouts: NODE_TIMEOUTS,
        },
        accepted,
    );
    let mut conn = ConnInfo {
        client: peer,
        reservation: None,
    };
    let mut publishing: Option<Publishing> = None;
    let mut buf = vec![0u8; OPENING_READ_BUF];
    let result = match core.handle_input(&opening, Instant::now()) {
        Err(e) => Err(e.into()),
        Ok(()) => {
            drop(opening);
            run(
                &node,
                &mut io,
                &mut core,
                &mut conn,
                &mut publishing,
                &mut buf,
            )
            .await
        }
    };
    // Whatever the core still has to say (a refusal status) goes out before we close.
    if let Some(b) = core.poll_transmit() {
        let _ = io.write_all(&b).await;
        let _ = io.flush().await;
    }
    if matches!(result, Err(RtmpError::Codec(_))) {
        // An encoder mid-publish reads server messages between its writes: keep reading
        // (and dropping) what it sends for a moment, so it reads the status instead of
        // finding its connection reset with the status lost.
        // On the heap: an array here would sit in every connection's future for its life.
        let mut sink = vec![0u8; OPENING_READ_BUF];
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
    if let Some(p) = publishing {
        let r = result.as_ref().map(|_| ()).map_err(|e| e.to_string());
        if let Err(e) = p.admission.finish_pipeline(p.input, p.output, r).await {
            tracing::info!(reason = %e, "stream ended");
        }
    }
    let _ = io.shutdown().await;
    result
}

/// The connection's loop: send what the core has, act on its events, read or time out.
async fn run<S>(
    node: &Arc<Node>,
    io: &mut S,
    core: &mut ServerCore,
    conn: &mut ConnInfo,
    publishing: &mut Option<Publishing>,
    buf: &mut Vec<u8>,
) -> Result<(), RtmpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        if let Some(b) = core.poll_transmit() {
            io.write_all(&b).await?;
            continue;
        }
        if let Some(ev) = core.poll_event() {
            match ev {
                Event::Proxy(header) => {
                    if let Some(h) = header {
                        conn.reservation = h.reservation;
                        if let Some(src) = h.source {
                            conn.client = src;
                            tracing::Span::current()
                                .record("encoder.addr", tracing::field::display(src));
                            tracing::info!("connection relayed by a balancer");
                        }
                    }
                }
                Event::PublishRequested { key } => {
                    admit(node, core, conn, publishing, &key).await?;
                }
                Event::Media {
                    kind,
                    timestamp,
                    data,
                } => {
                    if let Err(e) = push_tag(publishing, kind, timestamp, &data) {
                        if let RtmpError::Codec(why) = &e {
                            // The encoder hears why before the connection closes.
                            core.fail_publish("NetStream.Publish.Rejected", why)?;
                            metrics::CONNECTIONS_TOTAL
                                .with_label_values(&["rtmp", "refused_codec"])
                                .inc();
                        }
                        return Err(e);
                    }
                }
                Event::Metadata { fps_milli } => {
                    // flvdemux reads the announced rate for H.264; elementary inputs (HEVC,
                    // AV1 over Enhanced RTMP) take it from here.
                    if let (Some(p), Some(milli)) = (publishing.as_mut(), fps_milli) {
                        p.input.announce_frame_rate(f64::from(milli) / 1000.0);
                    }
                }
                Event::Finished => return Ok(()),
            }
            continue;
        }
        if publishing.is_some() && buf.len() < READ_BUF {
            buf.resize(READ_BUF, 0);
        }
        let deadline = core.poll_timeout();
        let read = async {
            match deadline {
                Some(at) => tokio::time::timeout_at(at, io.read(buf)).await.ok(),
                None => Some(io.read(buf).await),
            }
        };
        let read = match publishing.as_ref() {
            Some(p) => tokio::select! {
                _ = p.admission.cancel.cancelled() => {
                    return Err(RtmpError::Refused("kicked or replaced by a new publisher".into()))
                }
                r = p.input.wait() => {
                    return Err(match r {
                        Err(PipelineError::SourceRefused(why)) => {
                            metrics::CONNECTIONS_TOTAL
                                .with_label_values(&["rtmp", metrics::REFUSED_SOURCE])
                                .inc();
                            // Accepted already: the encoder hears why in a status.
                            core.fail_publish("NetStream.Publish.Rejected", &why)?;
                            RtmpError::Codec(why)
                        }
                        r => {
                            metrics::PIPELINE_ERRORS.inc();
                            RtmpError::Pipeline(
                                r.err().map(|e| e.to_string()).unwrap_or_else(|| "ended".into()),
                            )
                        }
                    });
                }
                r = read => r,
            },
            None => read.await,
        };
        match read {
            None => core.handle_timeout(Instant::now())?,
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(0)) => return Ok(()),
            Some(Ok(n)) => {
                if publishing.is_some() {
                    metrics::BYTES_RECEIVED
                        .with_label_values(&["rtmp"])
                        .inc_by(n as u64);
                }
                core.handle_input(&buf[..n], Instant::now())?;
            }
        }
    }
}

/// The publish decision: key, capacity, the pipeline; the core tells the encoder.
async fn admit(
    node: &Arc<Node>,
    core: &mut ServerCore,
    conn: &ConnInfo,
    publishing: &mut Option<Publishing>,
    key: &str,
) -> Result<(), RtmpError> {
    match node
        .admit(key, conn.client, Protocol::Rtmp, conn.reservation)
        .await
    {
        Ok(admission) => {
            tracing::Span::current().record("stream.id", admission.playback_id.as_str());
            let (input, output) = admission
                .start_rtmp_input()
                .map_err(|e| RtmpError::Pipeline(e.to_string()))?;
            core.accept_publish()?;
            metrics::CONNECTIONS_TOTAL
                .with_label_values(&["rtmp", "accepted"])
                .inc();
            tracing::info!("rtmp publisher accepted");
            *publishing = Some(Publishing {
                admission,
                input,
                output,
            });
            Ok(())
        }
        Err(e) => {
            let (code, text) = refusal(&e);
            core.reject_publish(code, &text)?;
            metrics::CONNECTIONS_TOTAL
                .with_label_values(&["rtmp", e.label()])
                .inc();
            Err(RtmpError::Refused(e.to_string()))
        }
    }
}

/// The RTMP status code and text an encoder shows its user for a refusal.
fn refusal(e: &AdmitError) -> (&'static str, String) {
    match e {
        AdmitError::Auth(crate::auth::AuthError::Refused) => (
            "NetStream.Publish.Denied",
            "publish denied: invalid stream key".to_string(),
        ),
        AdmitError::Auth(
            e @ (crate::auth::AuthError::Limited(_) | crate::auth::AuthError::Blocked(_)),
        ) => ("NetStream.Publish.Denied", format!("publish denied: {e}")),
        AdmitError::Auth(_) => (
            "NetStream.Publish.Rejected",
            "publish rejected: the authentication service is unavailable, try again".to_string(),
        ),
        AdmitError::Full(why) => (
            "NetStream.Publish.Rejected",
            format!("publish rejected: {why}"),
        ),
        AdmitError::Busy => (
            "NetStream.Publish.BadName",
            "publish rejected: stream is busy".to_string(),
        ),
    }
}

/// Where a connection really comes from, and the balancer's reservation for it.
struct ConnInfo {
    client: SocketAddr,
    reservation: Option<u64>,
}

fn push_tag(
    publishing: &mut Option<Publishing>,
    kind: MediaKind,
    ts: u32,
    data: &Bytes,
) -> Result<(), RtmpError> {
    let Some(p) = publishing else {
        return Ok(()); // media before publish: ignore
    };
    // What the encoder sent that cannot go on (a codec change, a source too large): it
    // hears why in a status.
    let failed = |e: PipelineError| match e {
        PipelineError::SourceRefused(why) => RtmpError::Codec(why),
        e => RtmpError::Pipeline(e.to_string()),
    };
    let (kind, media) = match kind {
        MediaKind::Audio => (flv::TagType::Audio, flv::audio(data)),
        MediaKind::Video => (flv::TagType::Video, flv::video(data)),
    };
    let now = tokio::time::Instant::now();
    let data = match media {
        flv::Media::Forward(body) => body,
        flv::Media::Skip => return Ok(()),
        flv::Media::Refuse(why) => return Err(RtmpError::Codec(why)),
        flv::Media::Elementary(codec, packet) => {
            if matches!(packet, flv::Elementary::Frame { .. }) {
                p.output.health.arrival(
                    crate::health::Track::Video,
                    u64::from(ts) * 1_000_000,
                    now,
                );
            }
            return p.input.push_elementary(codec, ts, packet).map_err(failed);
        }
    };
    if data.len() > flv::MAX_TAG_BODY {
        return Err(SessionError::Malformed("media message larger than FLV allows".into()).into());
    }
    // Timed as read off the socket, before any of this node's own delays (health: late frames,
    // timestamp jumps, A/V drift).
    let track = match kind {
        flv::TagType::Audio => crate::health::Track::Audio,
        flv::TagType::Video => crate::health::Track::Video,
    };
    p.output
        .health
        .arrival(track, u64::from(ts) * 1_000_000, now);
    p.input.push(kind, ts, data, now).map_err(failed)
}
