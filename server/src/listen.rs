//! Binding listeners, with an error that says which listener and which address failed.

use std::net::SocketAddr;

use tokio::net::{TcpListener, UdpSocket};

/// A listening address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {what} {addr}: {source}")]
pub struct BindError {
    /// Which listener (`rtmp`, `srt`, `http`, `admin`, ...).
    pub what: &'static str,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Bind a TCP listener.
pub async fn tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { what, addr, source })
}

/// [`tcp`] for a listener that is off unless configured (`None`: nothing bound).
pub async fn tcp_opt(
    what: &'static str,
    addr: Option<SocketAddr>,
) -> Result<Option<TcpListener>, BindError> {
    match addr {
        Some(a) => tcp(what, a).await.map(Some),
        None => Ok(None),
    }
}

/// Bind a UDP socket, asking for a receive buffer of `recv_buffer` bytes (the kernel caps
/// it at `rmem_max`; a refusal is logged, not fatal).
pub async fn udp(
    what: &'static str,
    addr: SocketAddr,
    recv_buffer: Option<usize>,
) -> Result<UdpSocket, BindError> {
    let s = UdpSocket::bind(addr)
        .await
        .map_err(|source| BindError { what, addr, source })?;
    if let Some(size) = recv_buffer {
        if let Err(e) = socket2::SockRef::from(&s).set_recv_buffer_size(size) {
            tracing::warn!(listener = what, error = %e, "cannot enlarge the receive buffer");
        }
    }
    Ok(s)
}
