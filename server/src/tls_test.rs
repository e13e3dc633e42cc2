use super::*;

use std::io::Write;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A leaf for `localhost` signed by `ca`: (certificate PEM, key PEM).
fn pair(ca: &(rcgen::Certificate, rcgen::KeyPair)) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn ca() -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    (params.self_signed(&key).unwrap(), key)
}

fn write(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("edge-tls-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[test]
fn a_changed_pair_is_taken_and_a_broken_one_refused() {
    let d = dir("reload");
    let (cert, key) = (d.join("tls.crt"), d.join("tls.key"));
    let ca = ca();
    let (c1, k1) = pair(&ca);
    write(&cert, &c1);
    write(&key, &k1);
    let store = CertStore::load(&cert, &key).unwrap();
    assert_eq!(store.leaf(), Some(der(&c1)));
    assert!(!store.reload().unwrap(), "unchanged files are not reloaded");
    // Renewed: both files replaced.
    let (c2, k2) = pair(&ca);
    write(&cert, &c2);
    write(&key, &k2);
    assert!(store.reload().unwrap());
    assert_eq!(store.leaf(), Some(der(&c2)));
    // Caught half-way: a new certificate next to the old key. Refused, the pair in force stays.
    let (c3, _) = pair(&ca);
    write(&cert, &c3);
    let e = store.reload().unwrap_err();
    assert!(e.to_string().contains("do not go together"), "{e}");
    assert_eq!(store.leaf(), Some(der(&c2)));
    // Refused once per change, not again on every poll.
    assert!(!store.reload().unwrap());
    // Not PEM at all.
    write(&cert, "not a certificate");
    assert!(matches!(
        store.reload(),
        Err(TlsError::NoCertificate { .. })
    ));
    assert_eq!(store.leaf(), Some(der(&c2)));
    // A missing file is an error too, and the pair stays.
    std::fs::remove_file(&key).unwrap();
    assert!(matches!(store.reload(), Err(TlsError::Read { .. })));
    assert!(CertStore::load(&cert, &key).is_err());
    assert_eq!(store.leaf(), Some(der(&c2)));
}

#[test]
fn a_kubernetes_secret_volume_swap_is_seen() {
    // A Secret volume: tls.crt -> ..data/tls.crt, ..data -> ..2026_12_06_v1; a renewal writes
    // a new timestamped directory and swaps the ..data symlink in one rename.
    let d = dir("k8s");
    let ca = ca();
    let version = |name: &str, (c, k): &(String, String)| {
        let v = d.join(name);
        std::fs::create_dir_all(&v).unwrap();
        write(&v.join("tls.crt"), c);
        write(&v.join("tls.key"), k);
    };
    let first = pair(&ca);
    version("..v1", &first);
    std::os::unix::fs::symlink("..v1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/tls.crt", d.join("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", d.join("tls.key")).unwrap();
    let store = CertStore::load(&d.join("tls.crt"), &d.join("tls.key")).unwrap();
    assert_eq!(store.leaf(), Some(der(&first.0)));
    let second = pair(&ca);
    version("..v2", &second);
    std::os::unix::fs::symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..v1")).unwrap();
    assert!(store.reload().unwrap());
    assert_eq!(store.leaf(), Some(der(&second.0)));
}

/// A client that trusts `ca_pem` only, for `localhost`.
fn connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der(ca_pem)).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn new_connections_get_the_new_certificate_and_old_ones_carry_on() {
    let d = dir("handshake");
    let (cert, key) = (d.join("tls.crt"), d.join("tls.key"));
    let ca = ca();
    let ca_pem = ca.0.pem();
    let (c1, k1) = pair(&ca);
    write(&cert, &c1);
    write(&key, &k1);
    let store = CertStore::load(&cert, &key).unwrap();
    let acceptor = store.acceptor(&[]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // An echo server over TLS.
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let accepted = tokio::time::Instant::now();
                let mut sock = sock;
                let Ok(hello) = read_hello(&mut sock, accepted, "test").await else {
                    return;
                };
                let Ok(mut tls) = accept(&acceptor, sock, hello, accepted, "test").await else {
                    return;
                };
                let mut buf = [0u8; 64];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        connector(&ca_pem).connect(name, tcp).await.unwrap()
    };
    let leaf = |s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        s.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first().cloned())
    };
    let echo = |mut s: tokio_rustls::client::TlsStream<tokio::net::TcpStream>| async move {
        s.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        s
    };
    let first = echo(connect().await).await;
    assert_eq!(leaf(&first), Some(der(&c1)));
    let (c2, k2) = pair(&ca);
    write(&cert, &c2);
    write(&key, &k2);
    assert!(store.reload().unwrap());
    let second = echo(connect().await).await;
    assert_eq!(leaf(&second), Some(der(&c2)));
    // The first connection was not touched by the reload.
    let first = echo(first).await;
    assert_eq!(leaf(&first), Some(der(&c1)));
}

#[tokio::test]
async fn a_peer_that_never_finishes_the_handshake_is_dropped_at_the_deadline() {
    tokio::time::pause();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sock, _) = listener.accept().await.unwrap();
    // A silent peer: no hello within the deadline, and no TLS state was ever made for it.
    let accepted = tokio::time::Instant::now();
    let e = read_hello(&mut sock, accepted, "test").await.unwrap_err();
    assert!(e.contains("not done within 10 s"), "{e}");
}

#[tokio::test]
async fn a_whole_hello_is_read_and_plain_bytes_are_refused_at_once() {
    let d = dir("hello");
    let (cert, key) = (d.join("tls.crt"), d.join("tls.key"));
    let (c, k) = pair(&ca());
    write(&cert, &c);
    write(&key, &k);
    let acceptor = CertStore::load(&cert, &key).unwrap().acceptor(&[]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A record announcing 2 bytes, its 2 bytes (not a real hello) and more: the opening is
    // complete with that record, and rustls refuses it.
    let mut peer = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sock, _) = listener.accept().await.unwrap();
    let accepted = tokio::time::Instant::now();
    peer.write_all(&[22, 3, 1, 0, 2, 1, 0, 9, 9]).await.unwrap();
    let hello = read_hello(&mut sock, accepted, "test").await.unwrap();
    // What came with it goes back in front of the socket with it.
    assert!(hello.starts_with(&[22, 3, 1, 0, 2, 1, 0]), "{hello:?}");
    assert!(accept(&acceptor, sock, hello, accepted, "test")
        .await
        .is_err());
    // Plain HTTP on a TLS port: complete at its first byte, well before the 10 s deadline a
    // half hello gets, and refused.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sock, _) = listener.accept().await.unwrap();
    let accepted = tokio::time::Instant::now();
    plain.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let hello = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        read_hello(&mut sock, accepted, "test"),
    )
    .await
    .expect("no wait for the deadline")
    .unwrap();
    assert!(accept(&acceptor, sock, hello, accepted, "test")
        .await
        .is_err());
}
