//! The cluster CA and the certificates of nodes and balancers (rcgen, ECDSA P-256).
//!
//! Entry points: [`new_ca`], [`issue`], [`write_cluster`] (used by `edge certs`, `edge dev` and
//! tests), and [`TlsFiles::load`] to read them back.
//!
//! Names: a node certificate carries the node ID as CN and the SAN DNS name `<id>.node.edge`
//! (balancers take the node's identity from it); a balancer certificate carries `balancer.edge`
//! (what every node verifies) and `<id>.balancer.edge`. Node certificates are for client auth,
//! balancer certificates for server auth, so one cannot stand in for the other.
//!
//! Validity: the CA for [`CA_VALIDITY_DAYS`], each node and balancer certificate for
//! [`DEFAULT_LEAF_VALIDITY_DAYS`] unless `edge certs --days` says otherwise, both starting
//! [`CLOCK_SKEW`] before now. Rotate a leaf by issuing it again into the same directory
//! ([`write_cluster`] reuses an existing `ca.pem`/`ca.key`, so nodes can also be added later
//! without re-keying the cluster) and restarting or reloading the process that uses it;
//! `edge_certificate_expiry_timestamp_seconds` and the `EdgeCertificateExpiringSoon` alert
//! say when.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::ControlError;

/// The SAN DNS name every balancer certificate carries and every node verifies.
pub const BALANCER_NAME: &str = "balancer.edge";
/// Suffix of a node's SAN DNS name: `<id>.node.edge`.
pub const NODE_SUFFIX: &str = ".node.edge";
/// Suffix of a balancer's own SAN DNS name: `<id>.balancer.edge`.
pub const BALANCER_SUFFIX: &str = ".balancer.edge";

/// How long the cluster CA is valid: long enough to outlive many leaf rotations, since
/// replacing it means re-issuing every certificate in the cluster at once.
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// How long a node's or balancer's certificate is valid by default: a year, renewed well
/// before the 14-day expiry alert fires.
pub const DEFAULT_LEAF_VALIDITY_DAYS: u32 = 365;
/// Certificates start this long before they are issued, so a peer whose clock is a little
/// behind does not refuse a certificate that is not valid yet.
pub const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(3600);

/// Validity from [`CLOCK_SKEW`] ago to `days` from now.
fn valid_for(params: &mut CertificateParams, days: u32) {
    // Certificates carry wall-clock dates: this is the one place here that reads the wall
    // clock, and nothing times out on it.
    #[allow(clippy::disallowed_methods)]
    let now = time::OffsetDateTime::from(std::time::SystemTime::now());
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + time::Duration::days(i64::from(days));
}

/// Longest ID: one DNS label.
const MAX_ID_LEN: usize = 63;

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct Pem {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM); empty when only the certificate is known.
    pub key_pem: String,
}

impl std::fmt::Debug for Pem {
    // Never print the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem")
            .field("cert_pem", &self.cert_pem)
            .field(
                "key_pem",
                &if self.key_pem.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .finish()
    }
}

/// Who a certificate is for, with the ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// An ingest node.
    Node(String),
    /// A balancer.
    Balancer(String),
}

/// Check that an ID can be a DNS label in a certificate name.
pub fn validate_id(id: &str) -> Result<(), ControlError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ControlError::InvalidId(id.to_string()))
    }
}

/// A new self-signed cluster CA.
pub fn new_ca(cluster_name: &str) -> Result<Pem, ControlError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{cluster_name} edge CA"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "edge");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    valid_for(&mut params, CA_VALIDITY_DAYS);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Pem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issue a certificate signed by the CA. Node certs carry the node ID as CN and as a SAN DNS
/// name `<id>.node.edge`; balancer certs carry the SAN DNS name `balancer.edge` (what nodes
/// verify) plus `<id>.balancer.edge`. Valid for `days` from now.
pub fn issue(ca: &Pem, role: &Role, days: u32) -> Result<Pem, ControlError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)
        .map_err(|_| ControlError::Pem("CA key is not a PKCS#8 private key".into()))?;
    let ca_params = CertificateParams::from_ca_cert_pem(&ca.cert_pem)
        .map_err(|_| ControlError::Pem("CA certificate does not parse".into()))?;
    check_key_matches(&ca.cert_pem, &ca_key)?;
    // Only the subject and key identifier of this re-signed copy are used, to sign the leaf.
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let (names, cn, eku) = match role {
        Role::Node(id) => {
            validate_id(id)?;
            (
                vec![format!("{id}{NODE_SUFFIX}")],
                id.clone(),
                ExtendedKeyUsagePurpose::ClientAuth,
            )
        }
        Role::Balancer(id) => {
            validate_id(id)?;
            (
                vec![BALANCER_NAME.to_string(), format!("{id}{BALANCER_SUFFIX}")],
                format!("{id}{BALANCER_SUFFIX}"),
                ExtendedKeyUsagePurpose::ServerAuth,
            )
        }
    };
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "edge");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    valid_for(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
    Ok(Pem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Refuse a CA key that does not belong to the CA certificate (the issued certificates
/// would not verify, and the failure would only show at connect time).
fn check_key_matches(cert_pem: &str, key: &KeyPair) -> Result<(), ControlError> {
    let der = parse_certs(cert_pem)?
        .into_iter()
        .next()
        .ok_or_else(|| ControlError::Pem("no certificate in CA PEM".into()))?;
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| ControlError::Pem("CA certificate does not parse".into()))?;
    if x509.public_key().raw != key.public_key_der().as_slice() {
        return Err(ControlError::Pem(
            "CA key does not match the CA certificate".into(),
        ));
    }
    Ok(())
}

/// Write a cluster's files into `dir`: ca.pem, ca.key, node-<id>.pem/.key for each node,
/// balancer-<id>.pem/.key for each balancer (keys mode 0600). Used by `edge certs`, by
/// `edge dev` and by tests.
///
/// An existing `ca.pem` + `ca.key` in `dir` is reused (to add nodes to a running cluster);
/// otherwise a new CA named after the directory is created. Existing leaf files are replaced.
/// Leaves are valid for [`DEFAULT_LEAF_VALIDITY_DAYS`].
pub fn write_cluster(
    dir: &Path,
    nodes: &[String],
    balancers: &[String],
) -> Result<(), ControlError> {
    write_cluster_for(dir, nodes, balancers, DEFAULT_LEAF_VALIDITY_DAYS)
}

/// [`write_cluster`] with leaves valid for `days` (`edge certs --days`).
pub fn write_cluster_for(
    dir: &Path,
    nodes: &[String],
    balancers: &[String],
    days: u32,
) -> Result<(), ControlError> {
    if days == 0 {
        return Err(ControlError::Pem(
            "a certificate must be valid for at least one day".into(),
        ));
    }
    for id in nodes.iter().chain(balancers) {
        validate_id(id)?;
    }
    std::fs::create_dir_all(dir).map_err(|source| io_err(dir, source))?;
    let ca_cert_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let ca = if ca_cert_path.exists() && ca_key_path.exists() {
        Pem {
            cert_pem: read(&ca_cert_path)?,
            key_pem: read(&ca_key_path)?,
        }
    } else {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .unwrap_or("cluster");
        let ca = new_ca(name)?;
        write_file(&ca_key_path, &ca.key_pem, true)?;
        write_file(&ca_cert_path, &ca.cert_pem, false)?;
        ca
    };
    let roles = nodes
        .iter()
        .map(|id| (format!("node-{id}"), Role::Node(id.clone())))
        .chain(
            balancers
                .iter()
                .map(|id| (format!("balancer-{id}"), Role::Balancer(id.clone()))),
        );
    for (stem, role) in roles {
        let pem = issue(&ca, &role, days)?;
        write_file(&dir.join(format!("{stem}.key")), &pem.key_pem, true)?;
        write_file(&dir.join(format!("{stem}.pem")), &pem.cert_pem, false)?;
    }
    tracing::info!(dir = %dir.display(), nodes = nodes.len(), balancers = balancers.len(), "cluster certificates written");
    Ok(())
}

fn io_err(path: &Path, source: std::io::Error) -> ControlError {
    ControlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<String, ControlError> {
    std::fs::read_to_string(path).map_err(|source| io_err(path, source))
}

/// Write `text` to `path`; secrets get mode 0600 (also when the file already existed).
fn write_file(path: &Path, text: &str, secret: bool) -> Result<(), ControlError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|source| io_err(path, source))?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|source| io_err(path, source))?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    f.write_all(text.as_bytes())
        .map_err(|source| io_err(path, source))?;
    f.sync_all().map_err(|source| io_err(path, source))
}

/// Paths of the PEM files one side needs.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// This process's certificate.
    pub cert: PathBuf,
    /// This process's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files at these paths (as a config names them).
    pub fn at(ca: &Path, cert: &Path, key: &Path) -> Self {
        TlsFiles {
            ca: ca.to_path_buf(),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }
    }

    /// Reads PEM files: returns (the CA, certificate only with an empty key; our own cert and
    /// key). Each file is checked to hold what it should, and errors name the file.
    pub fn load(&self) -> Result<(Pem, Pem), ControlError> {
        let ca = read(&self.ca)?;
        let cert = read(&self.cert)?;
        let key = read(&self.key)?;
        let named =
            |path: &Path, e: ControlError| ControlError::Pem(format!("{}: {e}", path.display()));
        if parse_certs(&ca).map_err(|e| named(&self.ca, e))?.is_empty() {
            return Err(named(&self.ca, ControlError::Pem("no certificate".into())));
        }
        if parse_certs(&cert)
            .map_err(|e| named(&self.cert, e))?
            .is_empty()
        {
            return Err(named(
                &self.cert,
                ControlError::Pem("no certificate".into()),
            ));
        }
        parse_key(&key).map_err(|e| named(&self.key, e))?;
        Ok((
            Pem {
                cert_pem: ca,
                key_pem: String::new(),
            },
            Pem {
                cert_pem: cert,
                key_pem: key,
            },
        ))
    }
}

/// All certificates in a PEM text (possibly none).
pub(crate) fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, ControlError> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ControlError::Pem(format!("certificate: {e}")))
}

/// The first private key in a PEM text.
pub(crate) fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, ControlError> {
    // The error type's Display does not include key material.
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| ControlError::Pem(format!("private key: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(pem: &str) -> (Option<String>, Vec<String>) {
        let der = parse_certs(pem).unwrap().remove(0);
        let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let cn = c
            .subject()
            .iter_common_name()
            .next()
            .map(|a| a.as_str().unwrap().to_string());
        let mut dns = Vec::new();
        if let Ok(Some(san)) = c.subject_alternative_name() {
            for n in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                    dns.push(d.to_string());
                }
            }
        }
        (cn, dns)
    }

    #[test]
    fn names_in_certificates() {
        let ca = new_ca("test").unwrap();
        let node = issue(&ca, &Role::Node("n1".into()), 30).unwrap();
        assert_eq!(
            names(&node.cert_pem),
            (Some("n1".into()), vec!["n1.node.edge".into()])
        );
        let bal = issue(&ca, &Role::Balancer("b1".into()), 30).unwrap();
        let (_, dns) = names(&bal.cert_pem);
        assert_eq!(
            dns,
            vec!["balancer.edge".to_string(), "b1.balancer.edge".to_string()]
        );
        assert!(format!("{node:?}").contains("redacted"));
        assert!(!format!("{node:?}").contains("PRIVATE"));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the certificate's dates are wall-clock dates
    fn certificates_expire_when_asked() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let validity = |pem: &str| {
            let der = parse_certs(pem).unwrap().remove(0);
            let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
            (
                c.validity().not_before.timestamp(),
                c.validity().not_after.timestamp(),
            )
        };
        let near = |got: i64, want: i64| (got - want).abs() < 120;
        let ca = new_ca("test").unwrap();
        let (from, until) = validity(&ca.cert_pem);
        assert!(near(from, now - 3600) && near(until, now + 3650 * 86400));
        let leaf = issue(&ca, &Role::Node("n1".into()), 10).unwrap();
        let (from, until) = validity(&leaf.cert_pem);
        assert!(near(from, now - 3600), "not before {from}, now {now}");
        assert!(
            near(until, now + 10 * 86400),
            "not after {until}, now {now}"
        );

        let dir = tempfile::tempdir().unwrap();
        assert!(write_cluster_for(dir.path(), &["n".into()], &[], 0).is_err());
        write_cluster(dir.path(), &["n".into()], &[]).unwrap();
        let pem = std::fs::read_to_string(dir.path().join("node-n.pem")).unwrap();
        assert!(near(validity(&pem).1, now + 365 * 86400));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let ca = new_ca("test").unwrap();
        assert!(matches!(
            issue(&ca, &Role::Node("a.b".into()), 30),
            Err(ControlError::InvalidId(_))
        ));
        assert!(matches!(
            issue(&ca, &Role::Node(String::new()), 30),
            Err(ControlError::InvalidId(_))
        ));
        let other = new_ca("other").unwrap();
        let mixed = Pem {
            cert_pem: ca.cert_pem.clone(),
            key_pem: other.key_pem,
        };
        assert!(matches!(
            issue(&mixed, &Role::Node("n".into()), 30),
            Err(ControlError::Pem(_))
        ));
        let garbage = Pem {
            cert_pem: "nope".into(),
            key_pem: ca.key_pem,
        };
        assert!(issue(&garbage, &Role::Node("n".into()), 30).is_err());
    }

    #[test]
    fn write_and_load_cluster() {
        let dir = tempfile::tempdir().unwrap();
        write_cluster(dir.path(), &["n1".into(), "n2".into()], &["b1".into()]).unwrap();
        for f in [
            "ca.pem",
            "ca.key",
            "node-n1.pem",
            "node-n1.key",
            "node-n2.pem",
            "balancer-b1.key",
        ] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["ca.key", "node-n1.key", "balancer-b1.key"] {
                let mode = std::fs::metadata(dir.path().join(f))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
        let files = TlsFiles {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("node-n1.pem"),
            key: dir.path().join("node-n1.key"),
        };
        let (ca, me) = files.load().unwrap();
        assert!(ca.key_pem.is_empty());
        assert_eq!(names(&me.cert_pem).0.as_deref(), Some("n1"));

        // Adding a node later keeps the CA.
        let ca_before = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        write_cluster(dir.path(), &["n3".into()], &[]).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
            ca_before
        );

        // A key file in place of a cert is reported with its path.
        let wrong = TlsFiles {
            cert: dir.path().join("node-n1.key"),
            ..files.clone()
        };
        let err = wrong.load().unwrap_err().to_string();
        assert!(err.contains("node-n1.key"), "{err}");
        let missing = TlsFiles {
            ca: dir.path().join("nope.pem"),
            ..files
        };
        assert!(matches!(missing.load(), Err(ControlError::Io { .. })));
    }
}
