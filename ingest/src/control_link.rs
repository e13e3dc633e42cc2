//! The node's side of the control plane: reports to every balancer over QUIC (mutual TLS) and
//! answers their reservation requests. Entry point: [`start`].
//!
//! Losing the control plane affects nothing else: streams keep flowing, and the node keeps
//! taking direct publishers; balancers simply stop placing streams here until reports resume.

use std::sync::Arc;

use control::client::{ClientConfig, ClientHandle, NodeControl};
use edge_config::ControlConfig;
use tokio_util::sync::CancellationToken;

use crate::{node::Node, StartError};

struct Link {
    node: Arc<Node>,
    advertise: crate::report::Advertise,
}

impl NodeControl for Link {
    fn report(&self) -> control::Report {
        self.node.report(self.advertise)
    }
    fn reserve(&self, r: control::Reservation) -> control::client::ReserveFuture {
        // A continuation we cannot read is dropped (in `decide_reservation`): the stream then
        // starts fresh numbering, which players survive; refusing the stream would be worse.
        self.node.decide_reservation(r)
    }
    fn cancel(&self, id: u64) {
        self.node.cancel_from_balancer(id);
    }
    fn operate(&self, op: control::Operation) {
        match op {
            control::Operation::Cordon => self.node.set_cordoned(true),
            control::Operation::Uncordon => self.node.set_cordoned(false),
            control::Operation::Drain => self.node.start_draining(),
            control::Operation::Kick {
                playback_id,
                block_ms,
            } => {
                if !self
                    .node
                    .kick(&playback_id, std::time::Duration::from_millis(block_ms))
                {
                    tracing::info!(stream.id = %playback_id, "kick from a balancer: no such live stream here");
                }
            }
        }
    }
}

/// Connect to every balancer and keep reporting until `shutdown`.
pub fn start(
    node: &Arc<Node>,
    cfg: &ControlConfig,
    shutdown: CancellationToken,
) -> Result<ClientHandle, StartError> {
    let (ca, own) = control::certs::TlsFiles::at(&cfg.tls.ca, &cfg.tls.cert, &cfg.tls.key)
        .load()
        .map_err(|e| StartError::Control(e.to_string()))?;
    let link = Arc::new(Link {
        node: Arc::clone(node),
        advertise: crate::report::Advertise {
            rtmp: cfg.advertise_rtmp,
            srt: cfg.advertise_srt,
            http: cfg.advertise_http,
            https: cfg.advertise_https,
        },
    });
    let handle = control::client::spawn_client(
        ClientConfig {
            balancers: cfg.balancers.clone(),
            ca_pem: ca.cert_pem,
            cert_pem: own.cert_pem,
            key_pem: own.key_pem,
            report_interval: cfg.report_interval,
        },
        link,
        shutdown,
    )
    .map_err(|e| StartError::Control(e.to_string()))?;
    let h = handle.clone();
    node.set_on_change(Box::new(move || h.report_now()));
    Ok(handle)
}
