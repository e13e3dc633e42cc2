//! The running balancer's side of a hand-over (see the module docs of [`super`]): listen on
//! `balancer.handover_socket`, and for each successor that connects, pause, quiesce, send
//! everything, and commit, or resume everything if the successor fails before the commit
//! point.

use std::{
    os::{
        fd::AsRawFd,
        unix::{fs::PermissionsExt, net::UnixStream},
    },
    path::Path,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio::time::Instant;

use super::{recv, same_user, send, HandoverError, Msg, MIN_VERSION, PHASE_TIMEOUT, VERSION};
use crate::{metrics, rtmp_relay, srt, Balancer};

/// How long a hand-over waits for connections that are still opening (peeking, placing) to
/// become relays; after that they are closed (they are not streams yet; the encoder retries).
/// Encoders send connect ... publish in one go, so this is ample.
pub const OPENING_GRACE: Duration = Duration::from_secs(3);
/// How long every relay and session task may take to reach its clean point. They stop at
/// their next await; this only bounds a stuck one.
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long aborted opening connections get to go away.
const ABORT_WAIT: Duration = Duration::from_secs(1);
/// How often the hand-over checks on opening connections and quiescing tasks.
const POLL: Duration = Duration::from_millis(5);

/// Bind the hand-over socket: the directory is created private to our user if missing, a
/// stale socket file (nobody listening: the takeover attempt at start found none) replaced,
/// and the socket readable and writable by our user only.
fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serve successors until one takes over (then return: this process serves nothing more).
pub async fn serve_successors(b: Arc<Balancer>) {
    let path = b.cfg.handover_socket.clone();
    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot listen for a successor: an upgrade will have to restart and drop connections");
            return;
        }
    };
    tracing::info!(path = %path.display(), "listening for a successor (hand-over)");
    loop {
        let sock = tokio::select! {
            _ = b.handed_over.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "hand-over accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let sock = match sock.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(PHASE_TIMEOUT))?;
            s.set_write_timeout(Some(PHASE_TIMEOUT))?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "hand-over socket unusable");
                continue;
            }
        };
        match hand_over(&b, sock).await {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(error = %e, "hand-over failed: this balancer keeps serving everything");
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HandoverError> + Send + 'static,
) -> Result<T, HandoverError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HandoverError::Protocol(format!("hand-over thread: {e}")))?
}

/// What a quiesce collected: everything to send, or to resume if the successor fails.
struct Collected {
    srt_state: srt::FrontState,
    rtmp: Vec<rtmp_relay::Quiesced>,
    srt: Vec<srt::Quiesced>,
}

/// Listening sockets a hand-over sends (RTMP, HTTP, admin, SRT, control, RTMPS, HTTPS).
const LISTENER_FDS: u64 = 7;
/// Descriptors the successor needs beyond those handed to it to run at all (its own sockets,
/// logs, the runtime, new connections during the commit).
const FD_HEADROOM: u64 = 64;

async fn hand_over(b: &Arc<Balancer>, sock: UnixStream) -> Result<(), HandoverError> {
    let _busy = b.busy.lock().await;
    let started = Instant::now();
    same_user(&sock)?;
    let mut r = sock.try_clone()?;
    let (hello, _) = blocking(move || recv(&mut r)).await?;
    let Msg::Hello {
        version,
        min_version,
        pid,
        build,
        fds_free,
    } = hello
    else {
        return Err(HandoverError::Protocol(format!(
            "expected Hello, got {hello:?}"
        )));
    };
    // What the hand-over would send: the listeners, two descriptors per RTMP relay (encoder,
    // node) and one per SRT session (upstream), counted generously as every live task.
    let needed = LISTENER_FDS + 2 * b.relays.live() as u64 + FD_HEADROOM;
    let refusal = if version < MIN_VERSION || min_version > VERSION {
        Some(format!(
            "incompatible hand-over protocol: the successor (pid {pid}, {build}) speaks {min_version}..={version}, this balancer ({}) {MIN_VERSION}..={VERSION}",
            env!("CARGO_PKG_VERSION")
        ))
    } else if version < 2 && b.listener_fds().is_some_and(|(_, extra)| !extra.is_empty()) {
        Some(format!(
            "the successor (pid {pid}, {build}) speaks hand-over protocol {version}, which cannot carry the RTMPS or HTTPS listener this balancer serves; upgrade to a build that speaks 2"
        ))
    } else if fds_free != 0 && fds_free < needed {
        Some(format!(
            "the successor (pid {pid}) can open {fds_free} more descriptors; taking over {} live connections needs about {needed}: raise its open-files limit (LimitNOFILE, ulimit -n)",
            b.relays.live()
        ))
    } else {
        None
    };
    if let Some(reason) = refusal {
        let s = sock.try_clone()?;
        let r2 = reason.clone();
        let _ = blocking(move || send(&s, &Msg::Refused { reason: r2 }, &[])).await;
        metrics::HANDOVERS.with_label_values(&["refused"]).inc();
        return Err(HandoverError::Refused(reason));
    }
    let s = sock.try_clone()?;
    blocking(move || {
        send(
            &s,
            &Msg::Welcome {
                version: VERSION.min(version),
                pid: std::process::id(),
            },
            &[],
        )
    })
    .await?;
    tracing::info!(
        successor_pid = pid,
        "a successor is taking over: pausing and quiescing"
    );
    // Close our QUIC connections while the relays quiesce and travel, not after: QUIC's
    // draining period (~90 ms) then costs the relays no pause. Nodes reconnect at once; their
    // attempts wait in the control socket for whoever reads it next (the successor, or this
    // process again if the hand-over fails).
    let control_closing = {
        let b = Arc::clone(b);
        tokio::spawn(async move { b.stop_control().await })
    };
    let collected = quiesce(b).await;
    let (n_rtmp, n_srt) = (collected.rtmp.len(), collected.srt.len());
    let transferred = transfer(b, &sock, &collected).await;
    // Commit only once nothing here reads the control socket any more.
    let _ = control_closing.await;
    if let Err(e) = transferred {
        resume(b, collected, true);
        return Err(e);
    }
    // The successor holds everything and has touched nothing: commit.
    let s = sock.try_clone()?;
    if let Err(e) = blocking(move || send(&s, &Msg::Commit, &[])).await {
        resume(b, collected, true);
        return Err(e);
    }
    // Committed: the successor serves. Our copies close; viewers' requests in flight finish.
    b.handed_over.cancel();
    b.gates.rtmp.retire();
    b.gates.rtmps.retire();
    b.gates.https.retire();
    b.gates.srt.retire();
    b.gates.http.retire();
    b.gates.admin.retire();
    drop(collected);
    b.release_listeners();
    let took = started.elapsed();
    metrics::HANDOVERS.with_label_values(&["handed_over"]).inc();
    metrics::HANDOVER_SECONDS.observe(took.as_secs_f64());
    metrics::HANDOVER_CONNECTIONS
        .with_label_values(&["rtmp"])
        .inc_by(n_rtmp as u64);
    metrics::HANDOVER_CONNECTIONS
        .with_label_values(&["srt"])
        .inc_by(n_srt as u64);
    tracing::info!(
        successor_pid = pid,
        rtmp = n_rtmp,
        srt = n_srt,
        ms = took.as_millis() as u64,
        "handed everything over to the successor; idle until told to stop"
    );
    Ok(())
}

/// Pause the accept loops, let opening connections finish (or end them), quiesce every relay
/// and session, and collect them.
async fn quiesce(b: &Arc<Balancer>) -> Collected {
    b.gates.rtmp.pause();
    b.gates.rtmps.pause();
    b.gates.https.pause();
    b.gates.http.pause();
    b.gates.admin.pause();
    b.relays.srt_paused.store(true, Ordering::Release);
    let deadline = Instant::now() + OPENING_GRACE;
    while b.relays.opening.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    let still = b.relays.opening.load(Ordering::Acquire);
    if still > 0 {
        tracing::warn!(
            connections = still,
            "connections still opening after the grace: closed (their encoders retry)"
        );
        b.relays.abort_opening();
        // RTMP connections end at once; SRT handshakes still going are dropped by the
        // quiesce below (their callers retransmit and the successor places them).
        let deadline = Instant::now() + ABORT_WAIT;
        while b.relays.opening.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
    }
    b.relays.quiesce_all(&b.conns);
    let task = crate::lock(&b.srt_task).take();
    let srt_state = match task {
        Some(t) => t.await.unwrap_or_else(|_| srt::FrontState {
            secret: srt::new_secret(),
            cookie_secs: 0,
        }),
        None => srt::FrontState {
            secret: srt::new_secret(),
            cookie_secs: 0,
        },
    };
    let deadline = Instant::now() + QUIESCE_TIMEOUT;
    while b.relays.live() > 0 && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    if b.relays.live() > 0 {
        tracing::error!(
            tasks = b.relays.live(),
            "relays did not quiesce in time: they stay with this process"
        );
    }
    let mut rtmp = Vec::new();
    let mut srt = Vec::new();
    {
        let mut rx = b.rtmp_quiesced.lock().await;
        while let Ok(q) = rx.try_recv() {
            rtmp.push(q);
        }
    }
    {
        let mut rx = b.srt_quiesced.lock().await;
        while let Ok(q) = rx.try_recv() {
            srt.push(q);
        }
    }
    Collected {
        srt_state,
        rtmp,
        srt,
    }
}

/// Send the listeners, the state and every connection; wait for `Ready`.
async fn transfer(
    b: &Arc<Balancer>,
    sock: &UnixStream,
    c: &Collected,
) -> Result<(), HandoverError> {
    let mut frames: Vec<(Msg, Vec<std::os::fd::RawFd>)> =
        Vec::with_capacity(c.rtmp.len() + c.srt.len() + 2);
    let (listeners, extra) = b
        .listener_fds()
        .ok_or_else(|| HandoverError::Protocol("already handed over".into()))?;
    frames.push((
        Msg::Listeners {
            placer: b.placement.export(),
            srt_front: c.srt_state.clone(),
            extra,
        },
        listeners,
    ));
    for r in &c.rtmp {
        frames.push((
            Msg::Rtmp {
                state: r.state.clone(),
            },
            vec![r.client.as_raw_fd(), r.node.as_raw_fd()],
        ));
    }
    for s in &c.srt {
        frames.push((
            Msg::Srt {
                state: s.state.clone(),
            },
            vec![s.upstream.as_raw_fd()],
        ));
    }
    frames.push((
        Msg::Done {
            rtmp: c.rtmp.len(),
            srt: c.srt.len(),
        },
        Vec::new(),
    ));
    let s = sock.try_clone()?;
    let mut r = sock.try_clone()?;
    // The descriptors stay open here (owned by `c`) while the thread sends them.
    blocking(move || {
        for (m, fds) in &frames {
            send(&s, m, fds)?;
        }
        match recv(&mut r)?.0 {
            Msg::Ready => Ok(()),
            other => Err(HandoverError::Protocol(format!(
                "expected Ready, got {other:?}"
            ))),
        }
    })
    .await
}

/// The successor failed before the commit point: everything goes on here.
fn resume(b: &Arc<Balancer>, c: Collected, control_stopped: bool) {
    let (n_rtmp, n_srt) = (c.rtmp.len(), c.srt.len());
    b.resume_rtmp(c.rtmp);
    b.start_srt(c.srt_state, c.srt);
    if control_stopped {
        if let Err(e) = b.start_control() {
            tracing::error!(error = %e, "cannot restart the control server after a failed hand-over");
        }
    }
    b.relays.srt_paused.store(false, Ordering::Release);
    b.gates.rtmp.resume();
    b.gates.rtmps.resume();
    b.gates.https.resume();
    b.gates.http.resume();
    b.gates.admin.resume();
    metrics::HANDOVERS.with_label_values(&["failed"]).inc();
    tracing::warn!(
        rtmp = n_rtmp,
        srt = n_srt,
        "successor failed before the commit point: every connection resumed here"
    );
}
