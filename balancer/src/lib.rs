//! The balancer: accepts every encoder connection and pins it to one ingest node for its whole
//! life, placing it from the capacity reports the nodes push over the control plane.
//!
//! Reading order: [`rtmp`] and [`srt`] accept encoders → [`place`] (the [`place::Placer`])
//! chooses a node with the pure [`placement`] policy and gets the node's promise over the
//! control plane (`control` crate) → the relay runs until one of its two sockets ends.
//! [`srt_route`] is the pure SRT routing (which session a datagram belongs to, a session's
//! life), [`srt_relay`] the pure SRT handshake relay; [`playback`] routes viewers to the node serving their stream; [`admin`]
//! and [`metrics`] are for operators. Entry point: [`run`].
//!
//! The rule everything here keeps: admission is not liveness. A node that is full, draining,
//! cordoned or silent gets no new streams and keeps every stream it has.

pub mod admin;
pub mod capacity_metrics;
pub mod conns;
pub mod metrics;
pub mod place;
pub mod placement;
pub mod playback;
pub mod rtmp;
pub mod rtmp_peek;
pub mod srt;
pub mod srt_relay;
pub mod srt_route;

use std::sync::Arc;

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
}

/// The balancer's listeners, bound.
pub struct Listeners {
    pub rtmp: TcpListener,
    pub srt: UdpSocket,
    pub http: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(cfg: &BalancerConfig) -> Result<Self, StartError> {
        let l = &cfg.listen;
        Ok(Self {
            rtmp: server::listen::tcp("rtmp", l.rtmp).await?,
            srt: server::listen::udp("srt", l.srt, None).await?,
            http: server::listen::tcp("http", l.http).await?,
            admin: server::listen::tcp("admin", l.admin).await?,
        })
    }
}

/// Handles a running balancer exposes to its caller (reload).
pub struct Running {
    pub placement: Arc<place::Placer>,
    pub admin: Arc<admin::AdminState>,
}

impl Running {
    /// Apply a reloaded config: placement settings and the admin token. Listen addresses and
    /// certificates need a restart (logged); no connection is touched either way.
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
            tracing::warn!("listen addresses changed: they apply at the next restart");
        }
        tracing::info!(balancer.id = %new.id, "config reloaded");
    }
}

/// Run until `stop`: serve RTMP and SRT relays, the control plane and the admin API.
pub async fn run(
    cfg: BalancerConfig,
    listeners: Listeners,
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
    let files = control::certs::TlsFiles {
        ca: cfg.tls.ca.clone(),
        cert: cfg.tls.cert.clone(),
        key: cfg.tls.key.clone(),
    };
    let (ca, own) = files
        .load()
        .map_err(|e| StartError::Control(e.to_string()))?;
    let registry = control::server::Registry::new();
    control::server::spawn_server(
        control::server::ServerConfig {
            listen: cfg.listen.control,
            ca_pem: ca.cert_pem,
            cert_pem: own.cert_pem,
            key_pem: own.key_pem,
        },
        Arc::clone(&registry),
        stop.clone(),
    )
    .await
    .map_err(|e| StartError::Control(e.to_string()))?;
    let placement = place::Placer::new(&cfg, registry);
    tokio::spawn(Arc::clone(&placement).learn_forever(stop.clone()));
    let conns = Arc::new(conns::Conns::default());
    let admin = Arc::new(admin::AdminState {
        token: std::sync::RwLock::new(cfg.admin.token.clone()),
        placement: Arc::clone(&placement),
        conns: Arc::clone(&conns),
        id: cfg.id.clone(),
    });
    tokio::spawn(rtmp::serve(
        listeners.rtmp,
        Arc::clone(&placement),
        Arc::clone(&conns),
        stop.clone(),
    ));
    tokio::spawn(srt::serve(
        listeners.srt,
        Arc::clone(&placement),
        Arc::clone(&conns),
        stop.clone(),
    ));
    tokio::spawn(admin::serve(
        Arc::clone(&admin),
        listeners.admin,
        stop.clone(),
    ));
    tokio::spawn(playback::serve(
        playback::Router::new(Arc::clone(&placement)),
        listeners.http,
        stop.clone(),
    ));
    tracing::info!(balancer.id = %cfg.id, control = %cfg.listen.control, "balancer ready");
    ready(Running { placement, admin });
    stop.cancelled().await;
    Ok(())
}
