//! RTMPS on the balancer: TLS is terminated here, and the plain RTMP inside goes through this
//! balancer's own RTMP front ([`crate::rtmp`]) over a loopback connection that opens with a
//! PROXY v2 header naming the encoder. Everything RTMP does (reading the publish for key
//! affinity, placement, the relay to the node, drains) is then the same for RTMPS.
//!
//! ```text
//! encoder ─TLS─▶ rtmps front ─loopback, PROXY v2 + RTMP─▶ rtmp front ─RTMP─▶ node
//!                (this module)                            (rtmp, rtmp_relay)
//! ```
//!
//! Only our own loopback connections may open with a PROXY header: each is bound to a local
//! port before it connects, and that address is registered in [`Hops`] until it closes; the
//! RTMP front trusts a PROXY header from a registered address only.
//!
//! Hand-over: the inner relay is plain TCP and moves to the successor like any RTMP relay; the
//! TLS session cannot leave this process (its keys and sequence numbers live in rustls), so
//! the terminator stays here, relaying between the encoder and the loopback connection whose
//! other end the successor now holds. A process that handed over keeps running until its last
//! RTMPS connection ends (`Balancer::wind_down`), and says so in its log and in
//! `edge_balancer_rtmps_live`.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, LazyLock, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpSocket},
};
use tracing::Instrument;

/// Connections at once (TLS terminations; each also holds a relay in the RTMP front).
pub const MAX_CONNECTIONS: usize = 10_000;
/// From one address: as for RTMP.
pub const MAX_CONNECTIONS_PER_IP: usize = crate::rtmp::MAX_CONNECTIONS_PER_IP;
/// Connecting to our own RTMP listener over loopback: instant unless the process is stuck.
const HOP_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// RTMPS connections being relayed by this process (TLS terminated here).
static LIVE: LazyLock<prometheus::IntGauge> = LazyLock::new(|| {
    server::metrics::gauge(
        "edge_balancer_rtmps_live",
        "RTMPS connections whose TLS this process terminates (they stay in it across a hand-over)",
    )
});

/// The local addresses of our loopback connections into the RTMP front.
#[derive(Default)]
pub struct Hops(Mutex<HashSet<SocketAddr>>);

impl Hops {
    /// Whether `peer` is one of our own hops (its PROXY header is trusted). Addresses are
    /// compared canonically: a dual-stack RTMP listener sees our 127.0.0.1 as
    /// ::ffff:127.0.0.1.
    pub fn contains(&self, peer: SocketAddr) -> bool {
        self.lock().contains(&canonical(peer))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Removes a hop's address when its connection ends.
struct HopGuard<'a>(&'a Hops, SocketAddr);

impl Drop for HopGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// What the RTMPS front needs.
pub struct Front {
    pub acceptor: Arc<server::Acceptor>,
    pub tls: server::tls::TlsAcceptor,
    /// Where the plain RTMP goes: this balancer's RTMP listener, on loopback.
    pub rtmp: SocketAddr,
    pub hops: Arc<Hops>,
    /// Terminations running in this process.
    pub live: AtomicUsize,
}

impl Front {
    /// The RTMPS front for an RTMP listener at `rtmp_listen` (an unspecified address is
    /// reached on loopback).
    pub fn new(tls: server::tls::TlsAcceptor, rtmp_listen: SocketAddr, hops: Arc<Hops>) -> Front {
        let rtmp = match rtmp_listen.ip() {
            ip if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), rtmp_listen.port())
            }
            _ => rtmp_listen,
        };
        Front {
            acceptor: server::Acceptor::new(
                "rtmps",
                server::ConnLimits {
                    max_total: MAX_CONNECTIONS,
                    max_per_ip: MAX_CONNECTIONS_PER_IP,
                    exempt: Vec::new(),
                },
                |why| {
                    crate::metrics::CONNECTIONS_TOTAL
                        .with_label_values(&["rtmps", why.as_str()])
                        .inc();
                },
            ),
            tls,
            rtmp,
            hops,
            live: AtomicUsize::new(0),
        }
    }
}

/// Accept while `gate` lets us.
pub async fn serve(listener: TcpListener, front: Arc<Front>, mut gate: server::Gate) {
    while gate.open().await {
        let (sock, peer, permit) = tokio::select! {
            _ = gate.closing() => continue,
            c = front.acceptor.accept(&listener) => c,
        };
        let front = Arc::clone(&front);
        let span = tracing::info_span!("rtmps", client.addr = %peer);
        tokio::spawn(
            async move {
                front.live.fetch_add(1, Ordering::AcqRel);
                LIVE.inc();
                // The ClientHello first, into a buffer the size of what arrives; the TLS
                // session and the hop exist once it is in.
                let accepted = tokio::time::Instant::now();
                let mut sock = sock;
                let ended = match server::tls::read_hello(&mut sock, accepted, "rtmps").await {
                    Ok(hello) => Box::pin(terminate(sock, hello, accepted, peer, &front)).await,
                    Err(e) => Err(e),
                };
                match ended {
                    Ok(()) => tracing::info!("rtmps connection closed"),
                    Err(e) => tracing::info!(reason = %e, "rtmps connection ended"),
                }
                front.live.fetch_sub(1, Ordering::AcqRel);
                LIVE.dec();
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// One connection: TLS handshake, a registered loopback hop into the RTMP front with a PROXY
/// header, then bytes both ways until either side ends.
async fn terminate(
    sock: tokio::net::TcpStream,
    hello: Vec<u8>,
    accepted: tokio::time::Instant,
    peer: SocketAddr,
    front: &Front,
) -> Result<(), String> {
    let _ = sock.set_nodelay(true);
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    let mut tls = server::tls::accept(&front.tls, sock, hello, accepted, "rtmps").await?;
    let hop = match front.rtmp {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| format!("hop socket: {e}"))?;
    let unspecified = match front.rtmp {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 0),
    };
    hop.bind(unspecified)
        .map_err(|e| format!("hop bind: {e}"))?;
    let hop_addr = hop.local_addr().map_err(|e| format!("hop address: {e}"))?;
    // Registered before it connects: the RTMP front sees a known address from its accept on.
    let hop_addr = canonical(hop_addr);
    front.hops.lock().insert(hop_addr);
    let _registered = HopGuard(&front.hops, hop_addr);
    let mut plain = tokio::time::timeout(HOP_CONNECT_TIMEOUT, hop.connect(front.rtmp))
        .await
        .map_err(|_| "connecting to our own RTMP listener timed out".to_string())?
        .map_err(|e| format!("cannot reach our own RTMP listener: {e}"))?;
    let _ = plain.set_nodelay(true);
    plain
        .write_all(&wire::proxy::encode(peer, local, None))
        .await
        .map_err(|e| format!("hop: {e}"))?;
    match tokio::io::copy_bidirectional(&mut tls, &mut plain).await {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("relay: {e}")),
    }
}

#[cfg(test)]
#[path = "rtmps_test.rs"]
mod tests;
