//! TLS for the public listeners (RTMPS today): a certificate and key from files, reloaded when
//! the files change on disk, without touching a connection.
//!
//! [`CertStore`] holds the pair in force and answers every TLS handshake with it
//! (rustls's `ResolvesServerCert`), so a reload takes effect at the next handshake and
//! connections already up keep the session they made. [`CertStore::watch`] reads both files
//! every [`CERT_POLL`] and reloads when their bytes change: cert-manager renewing a
//! Kubernetes Secret swaps the volume's `..data` symlink, which changes what the paths read
//! without an event on the paths themselves, so we compare contents rather than watch names.
//! A new pair that does not load, or whose key does not match its certificate (a renewal
//! caught between writing the two files), is refused with the reason and the old pair stays;
//! the next change is tried again.
//!
//! [`accept`] runs the handshake under [`HANDSHAKE_TIMEOUT`], so a peer that opens a TCP
//! connection and never finishes TLS holds its slot only that long.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, LazyLock, Mutex, RwLock},
    time::Duration,
};

use rustls::{server::ResolvesServerCert, sign::CertifiedKey};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The acceptor [`CertStore::acceptor`] builds (re-exported so users need no TLS crate).
pub use tokio_rustls::TlsAcceptor;

/// How often the certificate files are read for a change: renewals happen days ahead of
/// expiry, so seconds do not matter, and reading two small files is nothing.
pub const CERT_POLL: Duration = Duration::from_secs(5);

/// What an HTTPS listener offers in ALPN: HTTP/2 first (Safari plays LL-HLS over HTTP/2
/// only), HTTP/1.1 for everything else.
pub const HTTP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The longest a TLS handshake may take: one or two round trips for a real encoder, even on a
/// slow mobile link; a peer that stalls mid-handshake holds a connection slot no longer.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Certificate reloads by result (`reloaded`, `refused`).
static RELOADS: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "edge_tls_certificate_reloads_total",
        "Reloads of the public listeners' certificate files, by result (refused: the old pair stays)",
        &["result"],
    )
});

/// TLS handshakes on the public listeners, by result (`ok`, `failed`, `timeout`).
static HANDSHAKES: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    crate::metrics::counter_vec(
        "edge_tls_handshakes_total",
        "TLS handshakes on the public listeners, by listener and result",
        &["listener", "result"],
    )
});

/// Why a certificate pair was not taken.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: no PEM private key in it ({detail})")]
    NoKey { path: PathBuf, detail: String },
    #[error("certificate {cert} and key {key} do not go together: {detail}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The certificate and key the public listeners present, reloaded from their files.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' bytes as last read (loaded or refused): a change is a difference from these.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parse a PEM certificate chain and key, and check that the key is the certificate's.
fn certified(
    cert: &Path,
    cert_pem: &[u8],
    key: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::NoKey {
        path: key.to_path_buf(),
        detail: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, private, &rustls::crypto::ring::default_provider()).map_err(|e| {
        TlsError::Mismatch {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            detail: e.to_string(),
        }
    })
}

impl CertStore {
    /// Load the pair at `cert` and `key` (PEM: the chain, leaf first; a PKCS#8, PKCS#1 or
    /// SEC1 key).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertStore>, TlsError> {
        let (c, k) = (read(cert)?, read(key)?);
        let pair = certified(cert, &c, key, &k)?;
        Ok(Arc::new(CertStore {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            current: RwLock::new(Arc::new(pair)),
            seen: Mutex::new((c, k)),
        }))
    }

    /// Read the files again; if they changed, take the new pair (`Ok(true)`), or refuse it
    /// and keep the pair in force (`Err`, said once per change). `Ok(false)`: unchanged.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (c, k) = (read(&self.cert_path)?, read(&self.key_path)?);
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.0 == c && seen.1 == k {
                return Ok(false);
            }
            *seen = (c.clone(), k.clone());
        }
        match certified(&self.cert_path, &c, &self.key_path, &k) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
                RELOADS.with_label_values(&["reloaded"]).inc();
                Ok(true)
            }
            Err(e) => {
                RELOADS.with_label_values(&["refused"]).inc();
                Err(e)
            }
        }
    }

    /// Reload on change every [`CERT_POLL`] until `stop`, logging what happened.
    pub fn watch(self: &Arc<Self>, stop: CancellationToken) {
        let store = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CERT_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match store.reload() {
                    Ok(true) => {
                        tracing::info!(cert = %store.cert_path.display(), "TLS certificate reloaded; new connections get it")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "TLS certificate not reloaded; keeping the one in use")
                    }
                }
            }
        });
    }

    /// The leaf certificate in force (DER).
    #[cfg(test)]
    fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cert
            .first()
            .cloned()
    }

    /// A TLS acceptor that presents whatever pair is in force at each handshake; `alpn`: the
    /// protocols offered (none for RTMPS).
    pub fn acceptor(
        self: &Arc<Self>,
        alpn: &[&[u8]],
    ) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// A public listener's TLS stream: its ClientHello record, read before rustls's state existed
/// ([`read_hello`]), put back in front of the socket.
pub type TlsStream = tokio_rustls::server::TlsStream<crate::opening::Rewind<TcpStream>>;

/// Largest TLS record: 2^14 bytes of plaintext after a 5-byte header (RFC 8446, 5.1); a
/// ClientHello is one record of a few hundred bytes in practice.
const MAX_HELLO_RECORD: usize = 5 + (1 << 14);
/// The content type of a TLS handshake record, which a ClientHello opens with.
const TLS_HANDSHAKE_RECORD: u8 = 22;

/// The first TLS record of a connection accepted at `accepted` (the ClientHello), read into a
/// buffer the size of what arrives before any TLS state exists, within [`HANDSHAKE_TIMEOUT`]:
/// a peer that sends half a hello and stalls costs what it sent. Failures are counted per
/// `listener` in `edge_tls_handshakes_total`, as [`accept`]'s are.
pub async fn read_hello(
    sock: &mut TcpStream,
    accepted: tokio::time::Instant,
    listener: &str,
) -> Result<Vec<u8>, String> {
    // Complete at the end of the first record; at once if it is not a TLS handshake record
    // (plain HTTP or RTMP on a TLS port): rustls then refuses it without a wait.
    let complete = |b: &[u8]| {
        b.first().is_some_and(|t| *t != TLS_HANDSHAKE_RECORD)
            || (b.len() >= 5 && b.len() >= 5 + usize::from(u16::from_be_bytes([b[3], b[4]])))
    };
    crate::opening::read_opening(
        sock,
        accepted + HANDSHAKE_TIMEOUT,
        MAX_HELLO_RECORD,
        complete,
    )
    .await
    .map_err(|e| {
        let timeout = e.kind() == std::io::ErrorKind::TimedOut;
        HANDSHAKES
            .with_label_values(&[listener, if timeout { "timeout" } else { "failed" }])
            .inc();
        if timeout {
            format!(
                "TLS handshake not done within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            )
        } else {
            format!("TLS handshake failed: {e}")
        }
    })
}

/// Complete the TLS handshake on `sock`, whose ClientHello `hello` was read already
/// ([`read_hello`]), within [`HANDSHAKE_TIMEOUT`] of `accepted`; counted per `listener` in
/// `edge_tls_handshakes_total`.
pub async fn accept(
    acceptor: &tokio_rustls::TlsAcceptor,
    sock: TcpStream,
    hello: Vec<u8>,
    accepted: tokio::time::Instant,
    listener: &str,
) -> Result<TlsStream, String> {
    let sock = crate::opening::Rewind::new(hello, sock);
    match tokio::time::timeout_at(accepted + HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
        Ok(Ok(s)) => {
            HANDSHAKES.with_label_values(&[listener, "ok"]).inc();
            Ok(s)
        }
        Ok(Err(e)) => {
            HANDSHAKES.with_label_values(&[listener, "failed"]).inc();
            Err(format!("TLS handshake failed: {e}"))
        }
        Err(_) => {
            HANDSHAKES.with_label_values(&[listener, "timeout"]).inc();
            Err(format!(
                "TLS handshake not done within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            ))
        }
    }
}

/// An HTTPS (or plain HTTP) client connector.
pub type HttpsConnector =
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// A client connector over `http` (which must allow non-`http` schemes): TLS for `https://`
/// URLs (rustls, ring) checked against `ca` (a PEM file of trusted certificates: a private CA,
/// or a self-signed server certificate itself) or, without one, Mozilla's roots; plain TCP for
/// `http://`. With `server_name`, every server certificate must carry that name (instead of
/// the URL's host). A CA file that cannot be read now (the config check read it) leaves no
/// trusted root, so every HTTPS request fails and says why; `setting` names the config key in
/// those logs. `None` only if TLS cannot be set up at all.
pub fn https_connector(
    setting: &str,
    ca: Option<&Path>,
    server_name: Option<rustls_pki_types::ServerName<'static>>,
    http: hyper_util::client::legacy::connect::HttpConnector,
) -> Option<HttpsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => match CertificateDer::pem_file_iter(path) {
            Ok(certs) => {
                for cert in certs {
                    match cert.map(|c| roots.add(c)) {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::error!(setting, file = %path.display(), error = %e, "certificate refused")
                        }
                        Err(e) => {
                            tracing::error!(setting, file = %path.display(), error = %e, "not PEM")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(setting, file = %path.display(), error = %e, "cannot read")
            }
        },
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // ring supports every default protocol version, so this fails only if that ever changes;
    // then no request can be made, and each says why.
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(
            |e| tracing::error!(setting, error = %e, "cannot build a TLS client configuration"),
        )
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = server_name {
        builder =
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    Some(builder.enable_http1().wrap_connector(http))
}

#[cfg(test)]
#[path = "tls_test.rs"]
mod tests;
