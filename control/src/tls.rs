//! TLS and QUIC configuration shared by the client and the server (internal).
//!
//! Both sides use TLS 1.3 with the `ring` provider, the ALPN [`ALPN`], and the same QUIC
//! transport limits. [`node_identity`] reads the node ID from a verified client certificate.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;

use crate::certs::{parse_certs, parse_key, validate_id, NODE_SUFFIX};
use crate::ControlError;

/// ALPN protocol of the control plane, so nothing else can talk to the port by accident.
pub(crate) const ALPN: &[u8] = b"edge-control/1";

/// How often an idle connection sends a keep-alive: well under [`IDLE_TIMEOUT`], so a live
/// peer is never timed out even when several keep-alives are lost, and NAT bindings stay open.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// A connection with no traffic (not even keep-alives) for this long is dead: a vanished peer
/// is noticed within this time, and a node reconnects to a restarted balancer soon after.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The one bidirectional stream a node opens; balancers open none.
const NODE_STREAMS: u32 = 1;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, ControlError> {
    let mut roots = RootCertStore::empty();
    let certs = parse_certs(ca_pem)?;
    if certs.is_empty() {
        return Err(ControlError::Pem("no CA certificate".into()));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| ControlError::Tls(format!("CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

fn transport(incoming_bidi: u32) -> Result<Arc<quinn::TransportConfig>, ControlError> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(IDLE_TIMEOUT).map_err(|e| ControlError::Tls(e.to_string()))?,
    ));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(incoming_bidi));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    Ok(Arc::new(t))
}

fn chain_and_key(
    cert_pem: &str,
    key_pem: &str,
) -> Result<
    (
        Vec<rustls_pki_types::CertificateDer<'static>>,
        rustls_pki_types::PrivateKeyDer<'static>,
    ),
    ControlError,
> {
    let chain = parse_certs(cert_pem)?;
    if chain.is_empty() {
        return Err(ControlError::Pem("no certificate".into()));
    }
    Ok((chain, parse_key(key_pem)?))
}

/// Node side: verify the balancer against the CA, present the node certificate.
pub(crate) fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<quinn::ClientConfig, ControlError> {
    let (chain, key) = chain_and_key(cert_pem, key_pem)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ControlError::Tls(e.to_string()))?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(chain, key)
        .map_err(|e| ControlError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| ControlError::Tls(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    cfg.transport_config(transport(0)?);
    Ok(cfg)
}

/// Balancer side: require a client certificate chaining to the CA.
pub(crate) fn server_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<quinn::ServerConfig, ControlError> {
    let (chain, key) = chain_and_key(cert_pem, key_pem)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
            .build()
            .map_err(|e| ControlError::Tls(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ControlError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| ControlError::Tls(e.to_string()))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = QuicServerConfig::try_from(tls).map_err(|e| ControlError::Tls(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(quic));
    cfg.transport_config(transport(NODE_STREAMS)?);
    Ok(cfg)
}

/// The node ID a (verified) client certificate speaks for: the `X` of its single SAN DNS name
/// `X.node.edge`, or, when it has no such name, its CN. `None` if neither names a valid ID or
/// if the certificate names several nodes.
pub(crate) fn node_identity(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let mut from_san = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                if let Some(id) = dns.strip_suffix(NODE_SUFFIX) {
                    from_san.push(id.to_string());
                }
            }
        }
    }
    let id = match from_san.len() {
        0 => cert
            .subject()
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string(),
        1 => from_san.pop()?,
        _ => return None,
    };
    validate_id(&id).ok()?;
    Some(id)
}

/// The node ID of a connection's verified peer certificate.
pub(crate) fn connection_node_id(conn: &quinn::Connection) -> Option<String> {
    let any = conn.peer_identity()?;
    let certs = any
        .downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
        .ok()?;
    node_identity(certs.first()?.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{issue, new_ca, Role};

    #[test]
    fn identity_from_certificates() {
        let ca = new_ca("t").unwrap();
        let node = issue(&ca, &Role::Node("n-7".into()), 30).unwrap();
        let der = parse_certs(&node.cert_pem).unwrap().remove(0);
        assert_eq!(node_identity(der.as_ref()).as_deref(), Some("n-7"));
        // A balancer certificate names no node (its CN has dots).
        let bal = issue(&ca, &Role::Balancer("b".into()), 30).unwrap();
        let der = parse_certs(&bal.cert_pem).unwrap().remove(0);
        assert_eq!(node_identity(der.as_ref()), None);
        assert_eq!(node_identity(b"garbage"), None);
    }

    #[test]
    fn configs_build_and_reject_garbage() {
        let ca = new_ca("t").unwrap();
        let node = issue(&ca, &Role::Node("n".into()), 30).unwrap();
        let bal = issue(&ca, &Role::Balancer("b".into()), 30).unwrap();
        assert!(client_config(&ca.cert_pem, &node.cert_pem, &node.key_pem).is_ok());
        assert!(server_config(&ca.cert_pem, &bal.cert_pem, &bal.key_pem).is_ok());
        assert!(client_config("", &node.cert_pem, &node.key_pem).is_err());
        assert!(server_config(&ca.cert_pem, &bal.cert_pem, "").is_err());
        assert!(server_config(&ca.cert_pem, &bal.cert_pem, &node.key_pem).is_err());
    }
}
