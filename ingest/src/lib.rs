//! The ingest node: RTMP and SRT publishers in, a GStreamer ladder per stream, LL-HLS out.
//!
//! Reading order, following a packet (`docs/architecture.md` has every hop): [`rtmp`] (a thin
//! driver of `wire::rtmp::ServerCore`) / [`srt`] (with `wire::srt_guard` and `wire::streamid`)
//! accept a publisher → [`admission`] checks its key ([`auth`]) and charges [`capacity`](mod@capacity),
//! registering it in the [`node`] → [`pipeline`] demuxes and transcodes (scaling with
//! [`scale`]) the rungs [`ladder`]
//! picks → [`output`] creates the stream's packager stream and hands it every access unit;
//! the `packager` crate serves them over HTTP. [`report`] is what the node tells its
//! balancers ([`control_link`]); [`admin`] and [`metrics`] are for operators; [`calibrate`]
//! measures capacity at start; [`cpu`] samples CPU use. Entry point: [`run`].

pub mod admin;
pub mod admission;
pub mod auth;
pub mod bitstream;
pub mod calibrate;
pub mod capacity;
pub mod control_link;
pub mod cpu;
pub mod direct;
pub mod events;
pub mod flv;
pub mod health;
pub mod ladder;
pub mod metrics;
pub mod node;
pub mod output;
pub mod pipeline;
pub mod report;
pub mod rtmp;
pub mod scale;
pub mod srt;
#[cfg(test)]
mod test_pipeline;

use std::{sync::Arc, time::Duration};

use edge_config::{Capacity, Config};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

pub use node::Node;

/// After SIGTERM, how long the node keeps serving streams that are still live before it
/// exits anyway (Kubernetes' terminationGracePeriodSeconds should be a little longer).
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(6 * 3600);
/// Receive buffer of the SRT socket. Every SRT stream of the node arrives on it; the kernel's
/// default (~208 KiB) overflows under a burst of a few streams at 8 Mbps (each ~100 KB per
/// 100 ms) and a dropped handshake costs a caller a retransmission. 4 MiB is Linux's default
/// `rmem_max`; the kernel silently caps a larger request.
pub const SRT_RECV_BUFFER: usize = 4 * 1024 * 1024;
/// How often a draining node checks whether its last stream has ended.
const DRAIN_POLL: Duration = Duration::from_millis(500);

/// Errors that stop the node from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listening address could not be bound.
    #[error(transparent)]
    Bind(#[from] server::BindError),
    /// GStreamer could not initialise or calibrate.
    #[error("gstreamer: {0}")]
    Gstreamer(String),
    /// The control plane could not start (certificates unreadable or invalid).
    #[error("control plane: {0}")]
    Control(String),
    /// The public TLS certificate (`[listen.tls]`) does not load.
    #[error("listen.tls: {0}")]
    Tls(#[from] server::tls::TlsError),
}

/// The node's listeners, bound and ready.
pub struct Listeners {
    pub rtmp: TcpListener,
    /// RTMPS, when `listen.rtmps` is set.
    pub rtmps: Option<TcpListener>,
    /// HTTPS for viewers, when `listen.https` is set.
    pub https: Option<TcpListener>,
    pub srt: UdpSocket,
    pub http: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    pub async fn bind(cfg: &Config) -> Result<Self, StartError> {
        let l = &cfg.listen;
        Ok(Self {
            rtmp: server::listen::tcp("rtmp", l.rtmp).await?,
            rtmps: server::listen::tcp_opt("rtmps", l.rtmps).await?,
            https: server::listen::tcp_opt("https", l.https).await?,
            srt: server::listen::udp("srt", l.srt, Some(SRT_RECV_BUFFER)).await?,
            http: server::listen::tcp("http", l.http).await?,
            admin: server::listen::tcp("admin", l.admin).await?,
        })
    }
}

/// Resolve the node's capacity: configured, or measured now.
pub fn capacity(cfg: &Config) -> Result<u32, StartError> {
    match cfg.node.capacity {
        Capacity::Units(u) => Ok(u),
        Capacity::Calibrate => {
            let u = calibrate::calibrate(cfg.transcode.x264_preset.as_str())
                .map_err(|e| StartError::Gstreamer(e.to_string()))?;
            tracing::info!(milli_units = u, "capacity calibrated");
            let one = cfg.stream_milli_units();
            if u < one {
                // Config validation catches this for a configured capacity; a measured one is
                // known only now. The node runs (its admin API and metrics say why) but refuses
                // every publish as full.
                tracing::error!(
                    capacity_milli_units = u,
                    stream_milli_units = one,
                    max_source = %cfg.transcode.max_source,
                    "this machine cannot take a single stream of the largest allowed source: lower transcode.max_source_* or the ladder"
                );
            }
            Ok(u)
        }
    }
}

/// Run a node until `stop` (immediate) or `drain` (stop taking streams, wait for the live ones
/// to end, up to [`DRAIN_DEADLINE`]).
pub async fn run(
    cfg: Config,
    listeners: Listeners,
    drain: CancellationToken,
    stop: CancellationToken,
    ready: impl FnOnce(Arc<Node>),
) -> Result<(), StartError> {
    gstreamer::init().map_err(|e| StartError::Gstreamer(e.to_string()))?;
    metrics::init();
    let certs = cfg
        .control
        .as_ref()
        .map(|c| (c.tls.ca.as_path(), c.tls.cert.as_path()));
    control::process_metrics::register("ingest", env!("CARGO_PKG_VERSION"), certs);
    let capacity = capacity(&cfg)?;
    let origin = packager::Origin::new(packager::PackagerConfig {
        part_target: cfg.hls.part_target,
        segment_target: cfg.hls.segment_target,
        window_segments: cfg.hls.window_segments,
        ended_retention: cfg.hls.ended_retention,
        keyframe_join: cfg.hls.keyframe_join,
        part_hold_back_parts: cfg.hls.part_hold_back_parts,
        ..packager::PackagerConfig::default()
    });
    let node = Node::new(cfg, capacity, origin.clone());
    if let Some(c) = node.config.control.clone() {
        let handle = control_link::start(&node, &c, stop.clone())?;
        node.set_control(handle);
    }
    let accept = CancellationToken::new();
    let serve_stop = stop.clone();
    // RTMPS and HTTPS: the same sessions behind TLS, with one certificate reloaded when its
    // files change.
    let store = match (
        &listeners.rtmps,
        &listeners.https,
        node.config.public_tls.as_ref(),
    ) {
        (None, None, _) | (_, _, None) => None,
        (_, _, Some(t)) => {
            let store = server::tls::CertStore::load(&t.cert, &t.key)?;
            store.watch(stop.clone());
            Some(store)
        }
    };
    let mut tls_tasks = Vec::new();
    if let (Some(l), Some(store)) = (listeners.rtmps, store.as_ref()) {
        tls_tasks.push(tokio::spawn(rtmp::serve(
            Arc::clone(&node),
            l,
            accept.clone(),
            Some(store.acceptor(&[])?),
        )));
    }
    if let (Some(l), Some(store)) = (listeners.https, store.as_ref()) {
        let acceptor = packager::origin_acceptor(Vec::new(), |why| {
            metrics::CONNECTIONS_TOTAL
                .with_label_values(&["https", why.as_str()])
                .inc();
        });
        node.exempt_trusted(&acceptor);
        tls_tasks.push(tokio::spawn(origin.clone().serve_tls(
            l,
            acceptor,
            server::serve::retired_on(stop.clone()),
            Some(store.acceptor(&server::tls::HTTP_ALPN)?),
        )));
    }
    let tasks = [
        tokio::spawn(rtmp::serve(
            Arc::clone(&node),
            listeners.rtmp,
            accept.clone(),
            None,
        )),
        tokio::spawn(srt::serve(Arc::clone(&node), listeners.srt, stop.clone())),
        tokio::spawn(admin::serve(
            Arc::clone(&node),
            listeners.admin,
            stop.clone(),
        )),
        tokio::spawn(origin.serve(
            listeners.http,
            {
                let acceptor = packager::origin_acceptor(Vec::new(), |why| {
                    metrics::CONNECTIONS_TOTAL
                        .with_label_values(&["http", why.as_str()])
                        .inc();
                });
                node.exempt_trusted(&acceptor);
                acceptor
            },
            server::serve::retired_on(serve_stop),
        )),
    ];
    tokio::spawn(Arc::clone(&node.events).run());
    let hk = Arc::clone(&node);
    let hk_stop = stop.clone();
    tokio::spawn(async move {
        let mut cpu = cpu::CpuSampler::default();
        let mut tick = tokio::time::interval(node::HOUSEKEEPING_INTERVAL);
        while !hk_stop.is_cancelled() {
            tick.tick().await;
            hk.housekeeping(&mut cpu);
        }
    });
    tracing::info!(node.id = %node.config.node.id, capacity_milli_units = capacity, "ingest node ready");
    ready(Arc::clone(&node));
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = drain.cancelled() => {
            node.start_draining();
            accept.cancel();
            let deadline = tokio::time::Instant::now() + DRAIN_DEADLINE;
            while node.stream_count() > 0 && tokio::time::Instant::now() < deadline && !stop.is_cancelled() {
                tokio::time::sleep(DRAIN_POLL).await;
            }
            tracing::info!(streams = node.stream_count(), "drain finished");
        }
    }
    accept.cancel();
    stop.cancel();
    for t in tasks.into_iter().chain(tls_tasks) {
        t.abort();
    }
    Ok(())
}
