//! Hand-over: a new balancer process takes every listening socket, every live relay and the
//! placement state from the running one, over a Unix socket with `SCM_RIGHTS`; no encoder or
//! viewer notices, and no stream is dropped (`../shared/DESIGN.md`, rule 5).
//!
//! The protocol (frames of [`fds`], JSON bodies of [`Msg`]), the new process speaking first:
//!
//! 1. `Hello { version, min_version, fds_free }` →; ← `Welcome { version }`, or
//!    `Refused { reason }` when the versions do not overlap or the successor could not open the
//!    descriptors it would be handed (the old process keeps serving; the new one exits with
//!    the reason).
//! 2. The old process pauses its accept loops (new connections wait in the kernel backlog of
//!    the shared listening sockets), waits a moment for connections still opening (then ends
//!    them: they are not streams yet), and quiesces every relay at a clean point.
//! 3. ← `Listeners` (descriptors: RTMP, HTTP, admin, SRT, control, and from protocol 2 the
//!    RTMPS and HTTPS listeners when configured, named in `extra`; the node registry, pending
//!    placements, stream affinities, the SRT cookie secret and clock), then one `Rtmp` frame per
//!    RTMP relay (descriptors: encoder, node; everything read and not yet written, and the
//!    re-serialiser's state) and one `Srt` frame per SRT session (descriptor: its upstream
//!    socket), then `Done`.
//! 4. `Ready` → once the new process holds everything (it has touched none of it).
//! 5. The old process has closed its QUIC connections meanwhile (from step 2 on, so QUIC's
//!    draining period costs the relays no pause; nodes reconnect at once, to the new process),
//!    then ← `Commit`: the commit point. The new process starts serving; the old one
//!    closes its copies, lets viewers' HTTP requests in flight finish, and idles until told to
//!    stop (a supervisor that restarts exited processes must not start a third).
//!
//! Any failure before the commit point (the new process crashed, was killed, broke the
//! protocol, timed out) and the old process resumes every relay from its quiesced state and
//! its accept loops: at no moment is a connection owned by no process.
//!
//! Entry points: [`take_over`] (the new process), [`serve_successors`] in [`old`] (the old).

pub mod fds;
pub mod old;

use std::{
    os::{fd::OwnedFd, unix::net::UnixStream},
    path::Path,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{place::PlacerState, rtmp_relay::RelayState, srt};

/// The protocol this binary speaks. 2: the `Listeners` frame may carry more listeners, named
/// in `extra` (RTMPS, HTTPS).
pub const VERSION: u32 = 2;
/// The oldest predecessor protocol this binary can take over from.
pub const MIN_VERSION: u32 = 1;
/// How long either side waits for the other's next frame. Quiescing waits up to
/// [`old::OPENING_GRACE`] for connections that are opening; sending 10,000 relays takes well
/// under a second.
pub const PHASE_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable of the test hook: the new process aborts (as a crash would) at
/// this phase of the protocol. Phases: `hello`, `listeners`, `connections`, `ready`.
pub const ABORT_HOOK: &str = "EDGE_TEST_HANDOVER_ABORT_AT";

/// One frame's body.
#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // a few frames per hand-over; boxing buys nothing
pub enum Msg {
    Hello {
        version: u32,
        min_version: u32,
        pid: u32,
        build: String,
        /// Descriptors the successor can still open (its open-files limit less those open);
        /// 0 from a successor that does not say. The old process refuses a hand-over that
        /// would not fit, instead of failing it halfway with a reset socket.
        #[serde(default)]
        fds_free: u64,
    },
    Welcome {
        version: u32,
        pid: u32,
    },
    Refused {
        reason: String,
    },
    /// Descriptors: RTMP, HTTP, admin, SRT, control (in this order), then one per name in
    /// `extra` (protocol 2: `rtmps`, `https`).
    Listeners {
        placer: PlacerState,
        srt_front: srt::FrontState,
        #[serde(default)]
        extra: Vec<String>,
    },
    /// Descriptors: encoder, node.
    Rtmp {
        state: RelayState,
    },
    /// Descriptor: the upstream socket.
    Srt {
        state: srt::SessionState,
    },
    Done {
        rtmp: usize,
        srt: usize,
    },
    Ready,
    Commit,
}

/// Why a takeover failed (the old process keeps serving in every case).
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("hand-over socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("the running balancer refused the hand-over: {0}")]
    Refused(String),
    #[error("hand-over protocol: {0}")]
    Protocol(String),
    #[error("hand-over: {0}")]
    Io(#[from] std::io::Error),
}

/// What the new process receives.
pub struct Inherited {
    pub from_pid: u32,
    pub rtmp: std::net::TcpListener,
    /// The predecessor's RTMPS and HTTPS listeners, if it had them.
    pub rtmps: Option<std::net::TcpListener>,
    pub https: Option<std::net::TcpListener>,
    pub http: std::net::TcpListener,
    pub admin: std::net::TcpListener,
    pub srt: std::net::UdpSocket,
    pub control: std::net::UdpSocket,
    pub placer: PlacerState,
    pub srt_front: srt::FrontState,
    pub rtmp_relays: Vec<(RelayState, std::net::TcpStream, std::net::TcpStream)>,
    pub srt_sessions: Vec<(srt::SessionState, std::net::UdpSocket)>,
    /// When the hand-over started (for its log line and metric).
    pub started: tokio::time::Instant,
}

pub(crate) fn send(
    sock: &UnixStream,
    msg: &Msg,
    fds: &[std::os::fd::RawFd],
) -> Result<(), HandoverError> {
    let body = serde_json::to_vec(msg).map_err(|e| HandoverError::Protocol(e.to_string()))?;
    fds::send(sock, &body, fds)?;
    Ok(())
}

pub(crate) fn recv(sock: &mut UnixStream) -> Result<(Msg, Vec<OwnedFd>), HandoverError> {
    let Some((body, fds)) = fds::recv(sock)? else {
        return Err(HandoverError::Protocol(
            "the other process closed the hand-over".into(),
        ));
    };
    let msg = serde_json::from_slice(&body)
        .map_err(|e| HandoverError::Protocol(format!("bad frame: {e}")))?;
    Ok((msg, fds))
}

/// The peer of a hand-over connection must run as our user: anyone else could steal our
/// sockets (old side) or feed us theirs (new side).
pub(crate) fn same_user(sock: &UnixStream) -> Result<(), HandoverError> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let cred = getsockopt(sock, PeerCredentials)
        .map_err(|e| HandoverError::Protocol(format!("peer credentials: {e}")))?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() != me {
        return Err(HandoverError::Protocol(format!(
            "peer runs as uid {}, we as {me}",
            cred.uid()
        )));
    }
    Ok(())
}

fn abort_at(phase: &str) {
    if std::env::var(ABORT_HOOK).is_ok_and(|p| p == phase) {
        eprintln!("{ABORT_HOOK}={phase}: aborting the hand-over here, as a crash would");
        std::process::abort();
    }
}

/// Descriptors this process can still open: its open-files soft limit (already raised to the
/// hard limit at start) less those open now. 0 when it cannot tell.
fn fds_free() -> u64 {
    use nix::sys::resource::{getrlimit, Resource};
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    soft.saturating_sub(open)
}

fn take<const N: usize>(fds: Vec<OwnedFd>, what: &str) -> Result<[OwnedFd; N], HandoverError> {
    let n = fds.len();
    fds.try_into()
        .map_err(|_| HandoverError::Protocol(format!("{what}: {n} descriptors, expected {N}")))
}

/// Take over from the balancer listening on `path`, if one does: `Ok(None)` when nobody
/// listens there (start fresh). Blocking; returns after the commit point, holding
/// everything the old process served.
pub fn take_over(path: &Path) -> Result<Option<Inherited>, HandoverError> {
    let mut sock = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(source) => {
            return Err(HandoverError::Socket {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let started = tokio::time::Instant::now();
    same_user(&sock)?;
    sock.set_read_timeout(Some(PHASE_TIMEOUT))?;
    send(
        &sock,
        &Msg::Hello {
            version: VERSION,
            min_version: MIN_VERSION,
            pid: std::process::id(),
            build: env!("CARGO_PKG_VERSION").into(),
            fds_free: fds_free(),
        },
        &[],
    )?;
    abort_at("hello");
    let from_pid = match recv(&mut sock)?.0 {
        Msg::Welcome { pid, .. } => pid,
        Msg::Refused { reason } => return Err(HandoverError::Refused(reason)),
        other => {
            return Err(HandoverError::Protocol(format!(
                "expected Welcome, got {other:?}"
            )))
        }
    };
    let (msg, fds) = recv(&mut sock)?;
    let Msg::Listeners {
        placer,
        srt_front,
        extra,
    } = msg
    else {
        return Err(HandoverError::Protocol(format!(
            "expected Listeners, got {msg:?}"
        )));
    };
    if fds.len() != 5 + extra.len() {
        return Err(HandoverError::Protocol(format!(
            "Listeners: {} descriptors, expected {} ({extra:?} beyond the five)",
            fds.len(),
            5 + extra.len()
        )));
    }
    let mut fds = fds.into_iter();
    let mut next = || {
        fds.next()
            .ok_or_else(|| HandoverError::Protocol("Listeners: a descriptor short".into()))
    };
    let (rtmp, http, admin, srt_fd, control) = (next()?, next()?, next()?, next()?, next()?);
    let (mut rtmps, mut https) = (None, None);
    for name in &extra {
        let fd = next()?;
        match name.as_str() {
            "rtmps" => rtmps = Some(fd.into()),
            "https" => https = Some(fd.into()),
            other => {
                return Err(HandoverError::Protocol(format!(
                    "Listeners: unknown listener {other:?}"
                )))
            }
        }
    }
    abort_at("listeners");
    let mut rtmp_relays = Vec::new();
    let mut srt_sessions = Vec::new();
    loop {
        let (msg, fds) = recv(&mut sock)?;
        match msg {
            Msg::Rtmp { state } => {
                let [client, node] = take::<2>(fds, "Rtmp")?;
                rtmp_relays.push((state, client.into(), node.into()));
            }
            Msg::Srt { state } => {
                let [up] = take::<1>(fds, "Srt")?;
                srt_sessions.push((state, up.into()));
            }
            Msg::Done { rtmp, srt } => {
                if rtmp != rtmp_relays.len() || srt != srt_sessions.len() {
                    return Err(HandoverError::Protocol(format!(
                        "Done says {rtmp} RTMP and {srt} SRT, got {} and {}",
                        rtmp_relays.len(),
                        srt_sessions.len()
                    )));
                }
                break;
            }
            other => return Err(HandoverError::Protocol(format!("unexpected {other:?}"))),
        }
        if rtmp_relays.len() + srt_sessions.len() == 1 {
            abort_at("connections");
        }
    }
    abort_at("ready");
    send(&sock, &Msg::Ready, &[])?;
    match recv(&mut sock)?.0 {
        Msg::Commit => {}
        other => {
            return Err(HandoverError::Protocol(format!(
                "expected Commit, got {other:?}"
            )))
        }
    }
    Ok(Some(Inherited {
        from_pid,
        rtmp: rtmp.into(),
        rtmps,
        https,
        http: http.into(),
        admin: admin.into(),
        srt: srt_fd.into(),
        control: control.into(),
        placer,
        srt_front,
        rtmp_relays,
        srt_sessions,
        started,
    }))
}

/// Where the hand-over socket is when the config does not say.
pub fn default_socket(balancer_id: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("/run/edge/balancer-{balancer_id}.sock"))
}
