//! The balancer: accepts every encoder connection and pins it to one ingest node for its whole
//! life, placing it from the capacity reports the nodes push over the control plane.
//!
//! Reading order: [`rtmp`] and [`srt`] accept encoders → [`place`] (the [`place::Placer`])
//! chooses a node with the pure [`placement`] policy and gets the node's promise over the
//! control plane (`control` crate) → the relay runs until one of its two sockets ends.
//! [`srt_route`] is the pure SRT routing (which session a datagram belongs to, a session's
//! life), [`srt_relay`] the pure SRT handshake relay; [`playback`] routes viewers to the node serving their stream; [`admin`]
//! and [`metrics`] are for operators; [`handover`] moves everything to a successor process
//! (upgrades without dropping a stream). Entry point: [`run`].
//!
//! The rule everything here keeps: admission is not liveness. A node that is full, draining,
//! cordoned or silent gets no new streams and keeps every stream it has.

pub mod admin;
pub mod capacity_metrics;
pub mod conns;
pub mod handover;
pub mod metrics;
pub mod operate;
pub mod place;
pub mod placement;
pub mod playback;
pub mod rtmp;
pub mod rtmp_peek;
pub mod rtmp_relay;
pub mod rtmps;
pub mod srt;
/// The SRT handshake relay and routing cores live in `wire` (the node's SRT front runs them
/// too); re-exported under their old paths.
pub use wire::{srt_relay, srt_route};

use std::{
    os::fd::{AsFd, AsRawFd, OwnedFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use edge_config::BalancerConfig;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

/// Errors that stop the balancer from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listening address could not be bound.
    #[error(transparent)]
    Bind(#[from] server::BindError),
    /// Certificates unreadable or the control plane could not start.
    #[error("control plane: {0}")]
    Control(String),
    /// Sockets inherited from the previous balancer could not be used.
    #[error("inherited sockets: {0}")]
    Inherited(#[from] std::io::Error),
    /// The RTMPS certificate (`[listen.tls]`) does not load.
    #[error("listen.tls: {0}")]
    Tls(#[from] server::tls::TlsError),
}

/// The balancer's listeners, bound (fresh start) or inherited (takeover).
pub struct Listeners {
    pub rtmp: TcpListener,
    /// RTMPS, when `listen.rtmps` is set.
    pub rtmps: Option<TcpListener>,
    /// HTTPS for viewers, when `listen.https` is set.
    pub https: Option<TcpListener>,
    pub srt: UdpSocket,
    pub http: TcpListener,
    pub admin: TcpListener,
    /// The control plane's UDP socket (QUIC runs on it).
    pub control: std::net::UdpSocket,
}

impl Listeners {
    pub async fn bind(cfg: &BalancerConfig) -> Result<Self, StartError> {
        let l = &cfg.listen;
        let control = std::net::UdpSocket::bind(l.control).map_err(|source| server::BindError {
            what: "control",
            addr: l.control,
            source,
        })?;
        Ok(Self {
            rtmp: server::listen::tcp("rtmp", l.rtmp).await?,
            rtmps: server::listen::tcp_opt("rtmps", l.rtmps).await?,
            https: server::listen::tcp_opt("https", l.https).await?,
            srt: server::listen::udp("srt", l.srt, None).await?,
            http: server::listen::tcp("http", l.http).await?,
            admin: server::listen::tcp("admin", l.admin).await?,
            control,
        })
    }

    fn from_inherited(i: &mut handover::Inherited) -> Result<Self, StartError> {
        let tcp = |l: &std::net::TcpListener| -> std::io::Result<TcpListener> {
            let l = l.try_clone()?;
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        };
        let srt = i.srt.try_clone()?;
        srt.set_nonblocking(true)?;
        Ok(Self {
            rtmp: tcp(&i.rtmp)?,
            rtmps: i.rtmps.as_ref().map(tcp).transpose()?,
            https: i.https.as_ref().map(tcp).transpose()?,
            http: tcp(&i.http)?,
            admin: tcp(&i.admin)?,
            srt: UdpSocket::from_std(srt)?,
            control: i.control.try_clone()?,
        })
    }
}

/// How the balancer starts.
// One value per process start: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Start {
    /// Listeners bound by us.
    Fresh(Listeners),
    /// Everything taken over from the previous balancer process.
    Inherited(Box<handover::Inherited>),
}

/// Our own duplicates of every listening socket: what a hand-over sends.
struct ListenerFds {
    rtmp: OwnedFd,
    http: OwnedFd,
    admin: OwnedFd,
    srt: OwnedFd,
    control: OwnedFd,
    rtmps: Option<OwnedFd>,
    https: Option<OwnedFd>,
}

impl ListenerFds {
    /// In the order of the `Listeners` frame: RTMP, HTTP, admin, SRT, control, then the
    /// optional ones this process has, named in the second list (`rtmps`, `https`).
    fn raw(&self) -> (Vec<std::os::fd::RawFd>, Vec<String>) {
        let mut v = vec![
            self.rtmp.as_raw_fd(),
            self.http.as_raw_fd(),
            self.admin.as_raw_fd(),
            self.srt.as_raw_fd(),
            self.control.as_raw_fd(),
        ];
        let mut names = Vec::new();
        for (name, fd) in [("rtmps", &self.rtmps), ("https", &self.https)] {
            if let Some(fd) = fd {
                v.push(fd.as_raw_fd());
                names.push(name.to_string());
            }
        }
        (v, names)
    }
}

/// The steering of every accept loop.
struct Gates {
    rtmp: server::GateHandle,
    rtmps: server::GateHandle,
    https: server::GateHandle,
    srt: server::GateHandle,
    http: server::GateHandle,
    admin: server::GateHandle,
}

/// The running balancer: what reload, drain and hand-over act on.
pub struct Balancer {
    cfg: BalancerConfig,
    /// Closed (taken) at the commit point of a hand-over.
    fds: Mutex<Option<ListenerFds>>,
    gates: Gates,
    relays: Arc<rtmp_relay::Relays>,
    rtmp_front: Arc<rtmp::Front>,
    /// The RTMPS front, when `listen.rtmps` is set.
    rtmps_front: Option<Arc<rtmps::Front>>,
    srt_front: Arc<srt::Front>,
    srt_sock: Mutex<Option<Arc<UdpSocket>>>,
    srt_task: Mutex<Option<tokio::task::JoinHandle<srt::FrontState>>>,
    rtmp_quiesced: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<rtmp_relay::Quiesced>>,
    srt_quiesced: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<srt::Quiesced>>,
    pub placement: Arc<place::Placer>,
    registry: Arc<control::server::Registry>,
    /// The control server's settings (certificates replaced by a reload).
    control_cfg: Mutex<control::server::ServerConfig>,
    control: Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>>,
    /// The running control server's certificates, for a reload.
    control_tls: Mutex<Option<control::server::ServerTls>>,
    pub admin: Arc<admin::AdminState>,
    pub conns: Arc<conns::Conns>,
    /// Viewers' connections (a retired balancer waits for them before it exits).
    http_acceptor: Arc<server::Acceptor>,
    /// Cancelled at the commit point of a hand-over: this process serves nothing any more.
    pub handed_over: CancellationToken,
    /// Serialises hand-overs and drains.
    busy: tokio::sync::Mutex<()>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How long the control server may take to close its QUIC connections (their close frames
/// must go out before the successor reads the socket).
const CONTROL_CLOSE_WAIT: Duration = Duration::from_secs(2);

impl Balancer {
    /// The descriptors a hand-over sends (`None` once handed over).
    fn listener_fds(&self) -> Option<(Vec<std::os::fd::RawFd>, Vec<String>)> {
        lock(&self.fds).as_ref().map(ListenerFds::raw)
    }

    /// After the commit point: close our copies of every listening socket, so this process
    /// holds nothing the successor serves.
    fn release_listeners(&self) {
        lock(&self.fds).take();
        lock(&self.srt_sock).take();
        self.admin
            .ready
            .store(false, std::sync::atomic::Ordering::Release);
    }

    /// Start (or restart, after a hand-over that failed) the control server on our socket.
    fn start_control(&self) -> Result<(), StartError> {
        let sock: std::net::UdpSocket = lock(&self.fds)
            .as_ref()
            .ok_or_else(|| StartError::Control("handed over".into()))?
            .control
            .try_clone()?
            .into();
        let token = CancellationToken::new();
        let cfg = lock(&self.control_cfg).clone();
        let (task, tls) =
            control::server::spawn_server_on(cfg, sock, Arc::clone(&self.registry), token.clone())
                .map_err(|e| StartError::Control(e.to_string()))?;
        *lock(&self.control) = Some((token, task));
        *lock(&self.control_tls) = Some(tls);
        Ok(())
    }

    /// Close every node's QUIC connection and stop reading the control socket.
    async fn stop_control(&self) {
        // Our handle on the QUIC endpoint goes first: an endpoint still held here would go on
        // reading the control socket the successor shares, and answer nodes' new connections
        // in its place.
        lock(&self.control_tls).take();
        let running = lock(&self.control).take();
        if let Some((token, task)) = running {
            token.cancel();
            let _ = tokio::time::timeout(CONTROL_CLOSE_WAIT, task).await;
        }
    }

    /// Start the SRT front with `state`, running `adopt`ed sessions.
    fn start_srt(&self, state: srt::FrontState, adopt: Vec<srt::Quiesced>) {
        let Some(sock) = lock(&self.srt_sock).clone() else {
            return;
        };
        let task = tokio::spawn(srt::serve(
            sock,
            state,
            adopt,
            Arc::clone(&self.srt_front),
            self.gates.srt.gate(),
        ));
        *lock(&self.srt_task) = Some(task);
    }

    /// Resume RTMP relays in this process.
    fn resume_rtmp(&self, relays: Vec<rtmp_relay::Quiesced>) {
        for q in relays {
            let permit = self
                .rtmp_front
                .acceptor
                .admit(q.state.client_addr.ip())
                .ok();
            rtmp_relay::spawn(
                q.client,
                q.node,
                q.state,
                Arc::clone(&self.conns),
                &self.relays,
                self.rtmp_front.quiesced.clone(),
                permit,
            );
        }
    }

    /// SIGTERM after a hand-over: the viewers' requests this process still answers (blocking
    /// playlist reloads included) finish first, then it may exit. Bounded by the playback
    /// listener's retire grace.
    pub async fn wind_down(&self) {
        let deadline = tokio::time::Instant::now() + playback::retire_grace() + DRAIN_POLL;
        while self.http_acceptor.open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL / 4).await;
        }
        // RTMPS connections keep their TLS session here (it cannot move): they end with
        // their encoders, or at the drain deadline.
        let Some(front) = self.rtmps_front.as_ref() else {
            return;
        };
        let live = || front.live.load(std::sync::atomic::Ordering::Acquire);
        if live() == 0 {
            return;
        }
        tracing::info!(
            connections = live(),
            deadline_s = self.cfg.drain_deadline.as_secs(),
            "RTMPS connections stay in this process until they end (their TLS cannot move)"
        );
        let deadline = tokio::time::Instant::now() + self.cfg.drain_deadline;
        while live() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(DRAIN_POLL).await;
        }
        if live() > 0 {
            tracing::warn!(
                connections = live(),
                "drain deadline passed: ending the RTMPS connections"
            );
        }
    }

    /// SIGTERM with no successor: `/readyz` says 503 at once, no new encoders (RTMP and SRT
    /// refuse them), live connections relay on until they end or `balancer.drain_deadline`
    /// passes. Returns when it is over; viewers' HTTP is served to the end.
    pub async fn drain(&self) {
        let _busy = self.busy.lock().await;
        self.admin
            .ready
            .store(false, std::sync::atomic::Ordering::Release);
        self.rtmp_front
            .draining
            .store(true, std::sync::atomic::Ordering::Release);
        self.gates.srt.retire();
        // New RTMPS encoders reach the RTMP front, which refuses them with the reason while
        // draining; live ones relay on like RTMP.
        let live = self.conns.count("rtmp") + self.conns.count("srt");
        tracing::info!(
            connections = live,
            deadline_s = self.cfg.drain_deadline.as_secs(),
            "draining: no new encoders; live connections relay on until they end"
        );
        let deadline = tokio::time::Instant::now() + self.cfg.drain_deadline;
        loop {
            let live = self.conns.count("rtmp") + self.conns.count("srt");
            if live == 0
                && self
                    .relays
                    .opening
                    .load(std::sync::atomic::Ordering::Acquire)
                    == 0
            {
                tracing::info!("drained: the last connection ended");
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    connections = live,
                    "drain deadline passed: ending the live connections"
                );
                return;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}

/// How often a drain checks whether the last connection ended.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// Handles a running balancer exposes to its caller (reload, drain).
pub struct Running {
    pub placement: Arc<place::Placer>,
    pub admin: Arc<admin::AdminState>,
    pub balancer: Arc<Balancer>,
}

impl Running {
    /// Apply a reloaded config: placement settings, the admin token and the control plane's
    /// certificates (for node connections made from now on). Listen addresses need a restart
    /// (logged; a hand-over keeps every stream); no connection is touched either way.
    pub fn reload(&self, old: &BalancerConfig, new: &BalancerConfig) {
        self.placement.reconfigure(new);
        if let Ok(mut t) = self.admin.token.write() {
            *t = new.admin.token.clone();
        }
        if old.listen.rtmp != new.listen.rtmp
            || old.listen.srt != new.listen.srt
            || old.listen.admin != new.listen.admin
            || old.listen.control != new.listen.control
        {
            tracing::warn!("listen addresses changed: they apply at the next restart (a hand-over: kill -USR2)");
        }
        self.balancer.reload_control_certificates(new);
        tracing::info!(balancer.id = %new.id, "config reloaded");
    }
}

impl Balancer {
    /// Load the control plane's certificate files again (renewed in place, or at new paths):
    /// node connections accepted from now on get them, those up keep theirs. Files that do
    /// not load are refused with the reason, and the certificates in use stay.
    fn reload_control_certificates(&self, new: &BalancerConfig) {
        let t = &new.tls;
        let loaded = control::certs::TlsFiles::at(&t.ca, &t.cert, &t.key)
            .load()
            .map_err(|e| e.to_string())
            .and_then(|(ca, own)| {
                if let Some(tls) = lock(&self.control_tls).as_ref() {
                    tls.reload(&ca.cert_pem, &own.cert_pem, &own.key_pem)
                        .map_err(|e| e.to_string())?;
                }
                let mut cfg = lock(&self.control_cfg);
                cfg.ca_pem = ca.cert_pem;
                cfg.cert_pem = own.cert_pem;
                cfg.key_pem = own.key_pem;
                Ok(())
            });
        match loaded {
            Ok(()) => {
                control::process_metrics::refresh_certificates(&t.ca, &t.cert);
                tracing::info!(cert = %t.cert.display(), "control-plane certificates reloaded; new node connections get them");
            }
            Err(e) => {
                tracing::error!(error = %e, "control-plane certificates not reloaded; keeping the current ones")
            }
        }
    }
}

fn dup(fd: impl AsFd) -> std::io::Result<OwnedFd> {
    fd.as_fd().try_clone_to_owned()
}

/// Run until `stop`: serve RTMP and SRT relays, the control plane and the admin API; hand
/// everything to a successor that connects to `balancer.handover_socket`.
pub async fn run(
    cfg: BalancerConfig,
    start: Start,
    stop: CancellationToken,
    ready: impl FnOnce(Running),
) -> Result<(), StartError> {
    metrics::init();
    capacity_metrics::init();
    control::process_metrics::register(
        "balancer",
        env!("CARGO_PKG_VERSION"),
        Some((&cfg.tls.ca, &cfg.tls.cert)),
    );
    let (ca, own) = control::certs::TlsFiles::at(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key)
        .load()
        .map_err(|e| StartError::Control(e.to_string()))?;
    let control_cfg = control::server::ServerConfig {
        listen: cfg.listen.control,
        ca_pem: ca.cert_pem,
        cert_pem: own.cert_pem,
        key_pem: own.key_pem,
    };
    let (listeners, inherited) = match start {
        Start::Fresh(l) => (l, None),
        Start::Inherited(mut i) => (Listeners::from_inherited(&mut i)?, Some(i)),
    };
    let fds = ListenerFds {
        rtmp: dup(&listeners.rtmp)?,
        http: dup(&listeners.http)?,
        admin: dup(&listeners.admin)?,
        srt: dup(&listeners.srt)?,
        control: dup(&listeners.control)?,
        rtmps: listeners.rtmps.as_ref().map(dup).transpose()?,
        https: listeners.https.as_ref().map(dup).transpose()?,
    };
    let registry = control::server::Registry::new();
    let placement = place::Placer::new(&cfg, Arc::clone(&registry));
    tokio::spawn(Arc::clone(&placement).learn_forever(stop.clone()));
    let conns = Arc::new(conns::Conns::default());
    let admin = Arc::new(admin::AdminState {
        token: std::sync::RwLock::new(cfg.admin.token.clone()),
        placement: Arc::clone(&placement),
        conns: Arc::clone(&conns),
        id: cfg.id.clone(),
        ready: std::sync::atomic::AtomicBool::new(true),
        sessions: server::dashboard::Sessions::new(),
        playback_port: listeners.http.local_addr().ok().map(|a| a.port()),
    });
    let relays = Arc::new(rtmp_relay::Relays::default());
    let (rtmp_tx, rtmp_rx) = tokio::sync::mpsc::unbounded_channel();
    let (srt_tx, srt_rx) = tokio::sync::mpsc::unbounded_channel();
    let hops = Arc::new(rtmps::Hops::default());
    let rtmp_front = Arc::new(rtmp::Front {
        acceptor: rtmp::acceptor(),
        placement: Arc::clone(&placement),
        conns: Arc::clone(&conns),
        relays: Arc::clone(&relays),
        quiesced: rtmp_tx,
        draining: std::sync::atomic::AtomicBool::new(false),
        hops: Arc::clone(&hops),
    });
    // RTMPS: TLS terminated here, the RTMP inside sent through our own RTMP front.
    // RTMPS and HTTPS share one certificate, reloaded when its files change.
    let store = match (
        listeners.rtmps.is_some() || listeners.https.is_some(),
        cfg.public_tls.as_ref(),
    ) {
        (true, Some(t)) => {
            let store = server::tls::CertStore::load(&t.cert, &t.key)?;
            store.watch(stop.clone());
            Some(store)
        }
        _ => None,
    };
    let https_tls = match (&listeners.https, &store) {
        (Some(_), Some(store)) => Some(store.acceptor(&server::tls::HTTP_ALPN)?),
        _ => None,
    };
    let rtmps_front = match (listeners.rtmps.is_some(), store.as_ref()) {
        (true, Some(store)) => {
            let rtmp_addr = listeners.rtmp.local_addr()?;
            // Every hop comes from loopback: the per-address cap is the RTMPS front's, on
            // the encoders' real addresses.
            rtmp_front.acceptor.set_exempt(vec![
                std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ]);
            Some(Arc::new(rtmps::Front::new(
                store.acceptor(&[])?,
                rtmp_addr,
                hops,
            )))
        }
        _ => None,
    };
    let srt_front = Arc::new(srt::Front {
        placement: Arc::clone(&placement),
        conns: Arc::clone(&conns),
        relays: Arc::clone(&relays),
        quiesced: srt_tx,
    });
    let (g_rtmp, rtmp_gate) = server::gate();
    let (g_rtmps, rtmps_gate) = server::gate();
    let (g_https, https_gate) = server::gate();
    let (g_srt, _) = server::gate();
    let (g_http, http_gate) = server::gate();
    let (g_admin, admin_gate) = server::gate();
    srt::tune(&listeners.srt);
    let b = Arc::new(Balancer {
        cfg: cfg.clone(),
        fds: Mutex::new(Some(fds)),
        gates: Gates {
            rtmp: g_rtmp,
            rtmps: g_rtmps,
            https: g_https,
            srt: g_srt,
            http: g_http,
            admin: g_admin,
        },
        relays,
        rtmp_front: Arc::clone(&rtmp_front),
        rtmps_front: rtmps_front.clone(),
        srt_front,
        srt_sock: Mutex::new(Some(Arc::new(listeners.srt))),
        srt_task: Mutex::new(None),
        rtmp_quiesced: tokio::sync::Mutex::new(rtmp_rx),
        srt_quiesced: tokio::sync::Mutex::new(srt_rx),
        placement: Arc::clone(&placement),
        registry,
        control_cfg: Mutex::new(control_cfg),
        control: Mutex::new(None),
        control_tls: Mutex::new(None),
        admin: Arc::clone(&admin),
        conns,
        http_acceptor: playback::acceptor(),
        handed_over: CancellationToken::new(),
        busy: tokio::sync::Mutex::new(()),
    });
    // What the predecessor handed over, resumed before anything else runs.
    let mut srt_state = srt::FrontState {
        secret: srt::new_secret(),
        cookie_secs: 0,
    };
    let mut adopt_srt = Vec::new();
    if let Some(i) = inherited {
        placement.import(i.placer);
        srt_state = i.srt_front;
        let (mut rtmp_n, mut srt_n) = (0usize, 0usize);
        let mut relays = Vec::new();
        for (state, client, node) in i.rtmp_relays {
            let std_ok = client.set_nonblocking(true).and(node.set_nonblocking(true));
            match std_ok.and_then(|()| {
                Ok((
                    tokio::net::TcpStream::from_std(client)?,
                    tokio::net::TcpStream::from_std(node)?,
                ))
            }) {
                Ok((client, node)) => {
                    relays.push(rtmp_relay::Quiesced {
                        state,
                        client,
                        node,
                    });
                    rtmp_n += 1;
                }
                Err(e) => tracing::error!(error = %e, "cannot resume an inherited RTMP relay"),
            }
        }
        b.resume_rtmp(relays);
        for (state, up) in i.srt_sessions {
            match up
                .set_nonblocking(true)
                .and_then(|()| UdpSocket::from_std(up))
            {
                Ok(upstream) => {
                    adopt_srt.push(srt::Quiesced { state, upstream });
                    srt_n += 1;
                }
                Err(e) => tracing::error!(error = %e, "cannot resume an inherited SRT session"),
            }
        }
        let took = i.started.elapsed();
        metrics::HANDOVERS.with_label_values(&["taken_over"]).inc();
        metrics::HANDOVER_SECONDS.observe(took.as_secs_f64());
        tracing::info!(
            from_pid = i.from_pid,
            rtmp = rtmp_n,
            srt = srt_n,
            ms = took.as_millis() as u64,
            "took over from the previous balancer"
        );
    }
    b.start_control()?;
    b.start_srt(srt_state, adopt_srt);
    tokio::spawn(rtmp::serve(listeners.rtmp, rtmp_front, rtmp_gate));
    if let (Some(l), Some(front)) = (listeners.rtmps, rtmps_front) {
        tokio::spawn(rtmps::serve(l, front, rtmps_gate));
    }
    tokio::spawn(admin::serve(
        Arc::clone(&admin),
        listeners.admin,
        admin_gate,
    ));
    let router = playback::Router::new(Arc::clone(&placement), cfg.node_https.as_ref());
    tokio::spawn(playback::serve(
        Arc::clone(&router),
        listeners.http,
        http_gate,
        Arc::clone(&b.http_acceptor),
        None,
    ));
    // HTTPS for viewers: the same router and connection caps; to nodes it is plain HTTP.
    if let (Some(l), Some(tls)) = (listeners.https, https_tls) {
        tokio::spawn(playback::serve(
            router,
            l,
            https_gate,
            Arc::clone(&b.http_acceptor),
            Some(tls),
        ));
    }
    tokio::spawn(handover::old::serve_successors(Arc::clone(&b)));
    tracing::info!(balancer.id = %cfg.id, control = %cfg.listen.control, "balancer ready");
    ready(Running {
        placement,
        admin,
        balancer: Arc::clone(&b),
    });
    stop.cancelled().await;
    Ok(())
}
