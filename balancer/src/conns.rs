//! The table of pinned connections, for the admin API: which encoder is relayed to which
//! node, since when, and how many bytes went each way. Entries live exactly as long as the
//! relay task that owns their [`ConnGuard`].

use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, atomic::Ordering, Arc},
    time::SystemTime,
};

use dashmap::DashMap;
use serde::Serialize;

/// One pinned connection.
#[derive(Debug)]
pub struct Conn {
    pub id: u64,
    pub protocol: &'static str,
    pub client_addr: SocketAddr,
    pub node: String,
    pub started_unix_ms: u64,
    pub bytes_to_node: AtomicU64,
    pub bytes_to_encoder: AtomicU64,
    /// The relay task's waker, for [`Conns::wake_all`] (a quiesce).
    pub waker: futures::task::AtomicWaker,
}

/// A connection as the admin API shows it.
#[derive(Debug, Serialize)]
pub struct ConnView {
    pub id: u64,
    pub protocol: &'static str,
    pub client_addr: SocketAddr,
    pub node: String,
    pub started_unix_ms: u64,
    pub bytes_to_node: u64,
    pub bytes_to_encoder: u64,
}

#[derive(Default)]
pub struct Conns {
    next: AtomicU64,
    table: DashMap<u64, Arc<Conn>>,
}

/// Removes its connection from the table when dropped.
pub struct ConnGuard {
    table: Arc<Conns>,
    pub conn: Arc<Conn>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.table.table.remove(&self.conn.id);
    }
}

impl Conns {
    pub fn open(
        self: &Arc<Self>,
        protocol: &'static str,
        client_addr: SocketAddr,
        node: &str,
    ) -> ConnGuard {
        let now = server::wall_clock()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.adopt(protocol, client_addr, node, now, 0, 0)
    }

    /// Register a connection that already relayed (resumed after a quiesce, or handed over
    /// from the previous balancer): its start time and byte counts go on.
    pub fn adopt(
        self: &Arc<Self>,
        protocol: &'static str,
        client_addr: SocketAddr,
        node: &str,
        started_unix_ms: u64,
        bytes_to_node: u64,
        bytes_to_encoder: u64,
    ) -> ConnGuard {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let conn = Arc::new(Conn {
            id,
            protocol,
            client_addr,
            node: node.to_string(),
            started_unix_ms,
            bytes_to_node: AtomicU64::new(bytes_to_node),
            bytes_to_encoder: AtomicU64::new(bytes_to_encoder),
            waker: futures::task::AtomicWaker::new(),
        });
        self.table.insert(id, Arc::clone(&conn));
        ConnGuard {
            table: Arc::clone(self),
            conn,
        }
    }

    pub fn list(&self) -> Vec<ConnView> {
        let mut v: Vec<ConnView> = self
            .table
            .iter()
            .map(|e| {
                let c = e.value();
                ConnView {
                    id: c.id,
                    protocol: c.protocol,
                    client_addr: c.client_addr,
                    node: c.node.clone(),
                    started_unix_ms: c.started_unix_ms,
                    bytes_to_node: c.bytes_to_node.load(Ordering::Relaxed),
                    bytes_to_encoder: c.bytes_to_encoder.load(Ordering::Relaxed),
                }
            })
            .collect();
        v.sort_by_key(|c| c.id);
        v
    }
    /// Wake every connection's task (those that registered a waker).
    pub fn wake_all(&self) {
        for e in self.table.iter() {
            e.value().waker.wake();
        }
    }

    pub fn count(&self, protocol: &str) -> usize {
        self.table.iter().filter(|c| c.protocol == protocol).count()
    }
}
