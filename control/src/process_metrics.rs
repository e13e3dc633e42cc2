//! Metrics every edge process exports, node and balancer alike, so one dashboard row and one
//! set of alerts cover the whole fleet.
//!
//! Entry point: [`register`], called once at start by `ingest::run` and `balancer::run`. It
//! registers, in the default registry:
//! - `edge_build_info{component, version}`: always 1; joins any series to the build it came from.
//! - the standard `process_*` metrics of the prometheus crate's Linux process collector
//!   (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
//!   `process_max_fds`, `process_start_time_seconds`, ...), read from /proc at scrape time.
//! - `edge_control_certificate_expiry_seconds{cert}`: seconds until the certificate this process
//!   presents on the control plane (`cert="own"`) and the cluster CA it trusts (`cert="ca"`)
//!   expire, computed at scrape time from the files the process last loaded: at start, and
//!   again when a node reloads its certificates on SIGHUP ([`refresh_certificates`]), so the
//!   figure is always that of the certificate new connections present.
//!
//! Caveat: registering twice in one process (a test that runs a node and a balancer in one
//! process) keeps the first registration; nothing fails.

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntGaugeVec, Opts};

use crate::certs::parse_certs;

/// Label values of `edge_control_certificate_expiry_seconds`.
pub const CERT_OWN: &str = "own";
/// The cluster CA this process verifies its peers with.
pub const CERT_CA: &str = "ca";

/// Register the process-wide metrics of one edge process. `component` is `ingest` or
/// `balancer`; `certs` are the control plane's (CA, own certificate) files, when the process
/// has a control plane. An unreadable certificate is logged and left out (the process itself
/// refuses to start on it a moment later, with a better message).
pub fn register(component: &str, version: &str, certs: Option<(&Path, &Path)>) {
    if let Ok(info) = IntGaugeVec::new(
        Opts::new(
            "edge_build_info",
            "Always 1; the labels say which build and component this process runs",
        ),
        &["component", "version"],
    ) {
        info.with_label_values(&[component, version]).set(1);
        let _ = prometheus::register(Box::new(info));
    }
    let pc = prometheus::process_collector::ProcessCollector::for_self();
    let _ = prometheus::register(Box::new(pc));

    let Some((ca, own)) = certs else { return };
    refresh_certificates(ca, own);
    if let Ok(c) = CertExpiry::new() {
        let _ = prometheus::register(Box::new(c));
    }
}

/// `notAfter` (Unix seconds) of each certificate the expiry gauge reports, by label.
static NOT_AFTER: Mutex<Vec<(&'static str, i64)>> = Mutex::new(Vec::new());

/// Read the control plane's (CA, own certificate) files again for the expiry gauge: after a
/// reload, the gauge reports the certificates new connections use. An unreadable file keeps
/// its previous figure.
pub fn refresh_certificates(ca: &Path, own: &Path) {
    let mut list = NOT_AFTER.lock().unwrap_or_else(|e| e.into_inner());
    for (label, path) in [(CERT_OWN, own), (CERT_CA, ca)] {
        match not_after_of(path) {
            Ok(t) => {
                list.retain(|(l, _)| *l != label);
                list.push((label, t));
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read certificate expiry")
            }
        }
    }
}

/// `notAfter` of the first certificate in a PEM file, as Unix seconds.
pub fn not_after_of(path: &Path) -> Result<i64, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let der = parse_certs(&pem)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or("no certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|_| "not an X.509 certificate")?;
    Ok(cert.validity().not_after.timestamp())
}

/// Seconds from `now` until each certificate's `notAfter` (negative once expired).
pub fn seconds_left(not_after: i64, now: SystemTime) -> f64 {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    not_after as f64 - now
}

/// A collector that computes the time left at every scrape, so the value never goes stale.
struct CertExpiry {
    gauge: GaugeVec,
}

impl CertExpiry {
    fn new() -> prometheus::Result<Self> {
        let gauge = GaugeVec::new(
            Opts::new(
                "edge_control_certificate_expiry_seconds",
                "Seconds until the control-plane certificate (cert=own) or cluster CA (cert=ca) this process loaded expires",
            ),
            &["cert"],
        )?;
        Ok(Self { gauge })
    }
}

impl Collector for CertExpiry {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Certificate validity is wall-clock time by definition.
        #[allow(clippy::disallowed_methods)]
        let now = SystemTime::now();
        let list = NOT_AFTER.lock().map(|l| l.clone()).unwrap_or_default();
        for (label, t) in &list {
            self.gauge
                .with_label_values(&[label])
                .set(seconds_left(*t, now));
        }
        self.gauge.collect()
    }
}

#[cfg(test)]
#[path = "process_metrics_test.rs"]
mod tests;
