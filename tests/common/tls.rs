//! TLS for the end-to-end tests: self-signed certificates made by openssl, and the config lines
//! that turn on a process's RTMPS and HTTPS listeners with them.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::run_with_timeout;

/// A self-signed certificate for `localhost` and 127.0.0.1, made by openssl: (cert, key).
pub fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = run_with_timeout(
        std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(30),
    )
    .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Put `rtmps` and `https` listeners presenting `cert`/`key` into a node's or balancer's config
/// (`[listen.tls]` must follow the last key of `[listen]`, before `[admin]`).
pub fn add_tls_listeners(cfg: &mut String, rtmps: u16, https: u16, cert: &Path, key: &Path) {
    *cfg = cfg.replacen(
        "\n[admin]",
        &format!(
            "rtmps = \"127.0.0.1:{rtmps}\"\nhttps = \"127.0.0.1:{https}\"\n\n[listen.tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[admin]",
            cert.display(),
            key.display()
        ),
        1,
    );
}
