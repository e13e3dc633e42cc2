//! The accept loop of every TCP listener, with connection caps.
//!
//! An [`Acceptor`] admits a connection when both the listener's global cap and the per-IP cap
//! allow it ([`ConnLimits`]); the returned [`ConnPermit`] gives the slot back when dropped.
//! Addresses in `exempt` (the balancers in front of a node, a CDN in front of a balancer)
//! are counted globally but not per IP, since every relayed connection comes from one of them.
//! IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
//!
//! When `accept` itself fails (out of file descriptors, most often) the loop backs off
//! instead of spinning: [`ACCEPT_BACKOFF_MIN`] doubling to [`ACCEPT_BACKOFF_MAX`], reset by
//! the next success.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use tokio::net::{TcpListener, TcpStream};

/// First pause after a failed `accept`. Short: most failures (a connection reset before we
/// took it) are one-offs.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause after repeated `accept` failures. EMFILE clears when connections end; a
/// second is long enough not to burn a core and short enough that service resumes at once.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Caps of one listener.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Connections at once from everyone.
    pub max_total: usize,
    /// Connections at once from one address (not applied to `exempt`).
    pub max_per_ip: usize,
    /// Addresses not capped per IP (trusted proxies).
    pub exempt: Vec<IpAddr>,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener's global cap is reached.
    TooManyConnections,
    /// This address holds its per-IP cap.
    TooManyFromAddress,
}

impl Refusal {
    /// A low-cardinality metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::TooManyConnections => "too_many_connections",
            Refusal::TooManyFromAddress => "too_many_from_address",
        }
    }
}

/// Admits connections of one listener under its [`ConnLimits`].
pub struct Acceptor {
    name: &'static str,
    limits: RwLock<ConnLimits>,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    on_refused: Box<dyn Fn(Refusal) + Send + Sync>,
}

/// One admitted connection's slot; released on drop.
pub struct ConnPermit {
    acceptor: Arc<Acceptor>,
    ip: Option<IpAddr>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.acceptor.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            if let Ok(mut m) = self.acceptor.per_ip.lock() {
                if let Some(n) = m.get_mut(&ip) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        m.remove(&ip);
                    }
                }
            }
        }
    }
}

impl Acceptor {
    /// `on_refused` is called for every connection refused by a cap (count it in a metric).
    pub fn new(
        name: &'static str,
        limits: ConnLimits,
        on_refused: impl Fn(Refusal) + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            name,
            limits: RwLock::new(limits),
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            on_refused: Box::new(on_refused),
        })
    }

    /// Replace the limits (a reload); connections already admitted keep their slots.
    pub fn set_limits(&self, limits: ConnLimits) {
        if let Ok(mut l) = self.limits.write() {
            *l = limits;
        }
    }

    /// Replace the addresses exempt from the per-address cap (a reload of trusted proxies).
    pub fn set_exempt(&self, exempt: Vec<IpAddr>) {
        if let Ok(mut l) = self.limits.write() {
            l.exempt = exempt;
        }
    }

    /// Connections admitted and not yet ended.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Admit a connection from `ip`, or say why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, Refusal> {
        let ip = ip.to_canonical();
        let (max_total, max_per_ip, exempt) = match self.limits.read() {
            Ok(l) => (l.max_total, l.max_per_ip, l.exempt.contains(&ip)),
            Err(_) => return Err(Refusal::TooManyConnections),
        };
        if self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_total).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Refusal::TooManyConnections);
        }
        // From here the global slot is ours: the permit gives it back on every path.
        let mut permit = ConnPermit {
            acceptor: Arc::clone(self),
            ip: None,
        };
        if !exempt {
            let Ok(mut m) = self.per_ip.lock() else {
                return Err(Refusal::TooManyFromAddress);
            };
            let n = m.entry(ip).or_insert(0);
            if *n >= max_per_ip {
                if *n == 0 {
                    m.remove(&ip);
                }
                return Err(Refusal::TooManyFromAddress);
            }
            *n += 1;
            permit.ip = Some(ip);
        }
        Ok(permit)
    }

    /// Accept the next admitted connection. Refused connections are closed at once (and
    /// reported to `on_refused`); accept errors back off. Never returns an error: a listener
    /// lives as long as its process.
    pub async fn accept(
        self: &Arc<Self>,
        listener: &TcpListener,
    ) -> (TcpStream, SocketAddr, ConnPermit) {
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            match listener.accept().await {
                Ok((sock, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    match self.admit(peer.ip()) {
                        Ok(p) => return (sock, peer, p),
                        Err(why) => {
                            (self.on_refused)(why);
                            tracing::debug!(listener = self.name, client.addr = %peer, reason = why.as_str(), "connection refused");
                            drop(sock);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(listener = self.name, error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "accept_test.rs"]
mod tests;
