//! Registering Prometheus metrics in the default registry, once, without boilerplate.
//!
//! Each constructor builds the metric and registers it. Names and labels are constants in
//! our code, so building can only fail on a programming error, which the crates' metric
//! tests catch (they force every metric); registration fails only for a duplicate name, in
//! which case the metric still works but is not exported, and the error is logged.

use prometheus::{
    core::Collector, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

fn register<C: Collector + Clone + 'static>(name: &str, c: C) -> C {
    if let Err(e) = prometheus::register(Box::new(c.clone())) {
        tracing::error!(metric = name, error = %e, "metric not registered");
    }
    c
}

fn built<T>(name: &str, r: prometheus::Result<T>) -> T {
    match r {
        Ok(m) => m,
        // A constant name or label set that Prometheus refuses: a bug in our code, caught
        // by the metric tests of the crate that declares it, never by input.
        #[allow(clippy::panic)]
        Err(e) => panic!("metric {name} is invalid: {e}"),
    }
}

/// A counter.
pub fn counter(name: &str, help: &str) -> IntCounter {
    register(name, built(name, IntCounter::new(name, help)))
}

/// A counter with labels.
pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        name,
        built(name, IntCounterVec::new(Opts::new(name, help), labels)),
    )
}

/// An integer gauge.
pub fn gauge(name: &str, help: &str) -> IntGauge {
    register(name, built(name, IntGauge::new(name, help)))
}

/// An integer gauge with labels.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        name,
        built(name, IntGaugeVec::new(Opts::new(name, help), labels)),
    )
}

/// A float gauge.
pub fn float_gauge(name: &str, help: &str) -> Gauge {
    register(name, built(name, Gauge::new(name, help)))
}

/// A float gauge with labels.
pub fn float_gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(
        name,
        built(name, GaugeVec::new(Opts::new(name, help), labels)),
    )
}

/// A histogram with the given buckets.
pub fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        name,
        built(
            name,
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)),
        ),
    )
}

/// A histogram with labels.
pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    register(
        name,
        built(
            name,
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels),
        ),
    )
}

/// The text exposition of every registered metric.
pub fn render() -> String {
    use prometheus::Encoder;
    // Contained parser panics are counted in `wire` (no metrics there): bring the counter up
    // to date before every scrape.
    let caught = wire::contain::caught();
    let shown = PARSER_PANICS.get();
    if caught > shown {
        PARSER_PANICS.inc_by(caught - shown);
    }
    let mut buf = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&prometheus::gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// Panics of third-party parsers on untrusted input, contained to their connection.
pub static PARSER_PANICS: std::sync::LazyLock<prometheus::IntCounter> =
    std::sync::LazyLock::new(|| {
        counter(
            "edge_parser_panics_total",
            "Panics of a third-party parser on untrusted input, contained (the connection was \
             closed, nothing else affected)",
        )
    });
