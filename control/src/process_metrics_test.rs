// Certificate expiry is wall-clock time by definition.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

fn exposition() -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&prometheus::gather(), &mut buf)
        .expect("encode");
    String::from_utf8(buf).expect("utf-8")
}

#[test]
fn seconds_left_counts_down_and_goes_negative() {
    let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
    assert_eq!(seconds_left(1_000_000 + 14 * 86_400, now), 14.0 * 86_400.0);
    assert_eq!(seconds_left(999_000, now), -1000.0);
}

#[test]
fn registers_build_info_process_metrics_and_both_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    crate::certs::write_cluster(dir.path(), &["n1".to_string()], &[]).expect("certs");
    let ca = dir.path().join("ca.pem");
    let own = dir.path().join("node-n1.pem");
    let t = not_after_of(&own).expect("notAfter of a certificate edge certs wrote");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!(
        t > now,
        "a fresh certificate expires in the future ({t} <= {now})"
    );
    assert!(
        not_after_of(&dir.path().join("ca.key")).is_err(),
        "a key is no certificate"
    );

    register("ingest", "9.9.9", Some((&ca, &own)));
    register("ingest", "9.9.9", Some((&ca, &own))); // a second registration is harmless
    let text = exposition();
    assert!(
        text.contains("edge_build_info{component=\"ingest\",version=\"9.9.9\"} 1"),
        "{text}"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(
            text.contains(&format!("\n{name} ")),
            "{name} missing:\n{text}"
        );
    }
    for cert in [CERT_OWN, CERT_CA] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "edge_control_certificate_expiry_seconds{{cert=\"{cert}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no expiry for {cert}:\n{text}"));
        let v: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a number");
        assert!(v > 14.0 * 86_400.0, "{cert} expires too soon: {v}");
    }
}
