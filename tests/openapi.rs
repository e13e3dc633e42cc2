//! End to end: the OpenAPI documents of both admin APIs (`balancer/openapi.json`,
//! `ingest/openapi.json`) against a live `edge dev` of the test's own (a balancer and two nodes
//! as processes, a stream from ffmpeg): every documented route answers, the served document is
//! the one in the repository, and schemathesis (PyPI, installed by `scripts/setup.sh`) runs
//! every check it has, including its examples (which drain `dev-node-2` and kick `dev2`), and
//! finds nothing: status codes, content types, headers and every response body against the
//! schema (`additionalProperties: false` everywhere), errors as problem details, 405 with
//! `Allow` for other methods.
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::cluster::REPORT_TIMEOUT;
use common::*;

/// The token of `edge dev`'s embedded config.
const DEV_TOKEN: &str = "dev-admin-token-change-me";
/// `edge dev`'s fixed TCP ports (DESIGN.md's): balancer RTMP, playback and admin; each node's
/// HLS and admin.
const DEV_PORTS: [u16; 7] = [1935, 8080, 8081, 18080, 18081, 28080, 28081];
/// `edge dev` is up (both nodes connected) within this long.
const DEV_START_TIMEOUT: Duration = Duration::from_secs(60);
/// One schemathesis run (a few hundred requests) takes seconds; a loaded machine, more.
const SCHEMATHESIS_TIMEOUT: Duration = Duration::from_secs(300);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn schemathesis() -> PathBuf {
    let st = repo().join(".venv/bin/st");
    assert!(
        st.is_file(),
        "{} is missing: run scripts/setup.sh (it installs schemathesis)",
        st.display()
    );
    st
}

struct Dev(Child);

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = send_signal(self.0.id(), "TERM");
        if wait_child(&mut self.0, Duration::from_secs(20)).is_none() {
            kill_and_reap(&mut self.0);
        }
    }
}

fn start_dev(dir: &Path) -> Dev {
    for p in DEV_PORTS {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok(),
            "port {p} is taken: this test runs its own `edge dev` on the dev ports (stop any other)"
        );
    }
    let log = std::fs::File::create(dir.join("dev.log")).expect("dev log");
    let child = Command::new(edge_bin())
        .args(["dev", "--dir"])
        .arg(dir)
        .stdout(log.try_clone().expect("dev log"))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn edge dev");
    let dev = Dev(child);
    let up = wait_until(DEV_START_TIMEOUT, || {
        let v = api_get(8081, "/api/v1/nodes").ok()?;
        let n = v
            .as_array()?
            .iter()
            .filter(|n| n["connected"] == true)
            .count();
        (n == 2).then_some(())
    });
    assert!(
        up.is_some(),
        "edge dev did not come up: {}",
        tail_file(&dir.join("dev.log"), 40)
    );
    dev
}

fn api_get(port: u16, path: &str) -> Result<serde_json::Value, String> {
    let auth = format!("Bearer {DEV_TOKEN}");
    let r = http_get_with_headers(
        &format!("http://127.0.0.1:{port}{path}"),
        &[("Authorization", &auth)],
        HTTP_TIMEOUT,
    )?;
    if r.status != 200 {
        return Err(format!("{path}: HTTP {}: {}", r.status, r.text()));
    }
    r.json()
}

/// Every (method, path) the document at `file` lists, with its path parameters filled with
/// their examples.
fn documented(file: &Path) -> Vec<(String, String)> {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(file).expect("read the document")).expect("JSON");
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let mut p = path.clone();
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["in"] == "path" {
                    let name = param["name"].as_str().unwrap_or_default();
                    let example = param["example"].as_str().unwrap_or("x");
                    p = p.replace(&format!("{{{name}}}"), example);
                }
            }
            out.push((method.to_uppercase(), p));
        }
    }
    out
}

/// Every documented route answers something other than "unknown API path" (with a block or a
/// pause length where one is needed, so none is refused for a missing parameter only).
fn every_route_answers(port: u16, file: &Path) {
    let auth = format!("Bearer {DEV_TOKEN}");
    for (method, path) in documented(file) {
        if method != "GET" {
            continue; // actions run under schemathesis below, with its own checks
        }
        let r = http_request(
            &method,
            &format!("http://127.0.0.1:{port}{path}"),
            &[("Authorization", &auth)],
            &[],
            HTTP_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
    }
    let r = http_request(
        "GET",
        &format!("http://127.0.0.1:{port}/api/v1/no-such-route"),
        &[("Authorization", &auth)],
        &[],
        HTTP_TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json().unwrap()["detail"], "unknown API path");
    // The served document is the repository's.
    let served = http_get(
        &format!("http://127.0.0.1:{port}/api/v1/openapi.json"),
        HTTP_TIMEOUT,
    )
    .unwrap();
    assert_eq!(served.status, 200, "the document needs no token");
    assert_eq!(served.body, std::fs::read(file).unwrap());
}

/// schemathesis with every check against the API on `port`; panics with its report unless it
/// found nothing.
fn schemathesis_passes(port: u16, file: &Path, work: &Path) -> String {
    let out = run_with_timeout(
        Command::new(schemathesis())
            .arg("run")
            .arg(file)
            .args(["--url", &format!("http://127.0.0.1:{port}")])
            .args(["-H", &format!("Authorization: Bearer {DEV_TOKEN}")])
            .args(["--checks", "all", "--max-examples", "15", "--seed", "7"])
            .args(["--request-timeout", "10"])
            // Its hypothesis database and reports stay out of the repository.
            .current_dir(work)
            .env("NO_COLOR", "1"),
        SCHEMATHESIS_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("schemathesis: {e}"));
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("schemathesis against :{port}:\n{report}");
    assert!(
        out.status.success(),
        "schemathesis found problems ({}):\n{report}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

#[test]
fn both_admin_apis_answer_as_their_openapi_documents_say() {
    let dir = TempDir::new("openapi");
    let _dev = start_dev(dir.path());
    // A live stream on the second dev key, which the document's kick example names.
    let _enc = Encoder::ffmpeg_rtmp(
        "rtmp://127.0.0.1:1935/live/dev-stream-key-2",
        EncOpts::default(),
    );
    let listed = wait_until(Duration::from_secs(45), || {
        let v = api_get(8081, "/api/v1/streams").ok()?;
        v.as_array()?
            .iter()
            .any(|s| s["playback_id"] == "dev2")
            .then_some(())
    });
    assert!(listed.is_some(), "the dev2 stream never showed up");

    let balancer_doc = repo().join("balancer/openapi.json");
    let node_doc = repo().join("ingest/openapi.json");
    every_route_answers(8081, &balancer_doc);
    every_route_answers(18081, &node_doc);

    let report = schemathesis_passes(8081, &balancer_doc, dir.path());
    assert!(report.contains("passed"), "{report}");
    // Its examples ran the actions for real: dev-node-2 drained, dev2 kicked.
    let nodes = api_get(8081, "/api/v1/nodes").unwrap();
    let n2 = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "dev-node-2")
        .cloned()
        .unwrap_or_default();
    assert_eq!(n2["status"], "draining", "{nodes}");
    let kicked = wait_until(REPORT_TIMEOUT, || {
        let v = api_get(8081, "/api/v1/streams").ok()?;
        (!v.as_array()?.iter().any(|s| s["playback_id"] == "dev2")).then_some(())
    });
    assert!(
        kicked.is_some(),
        "dev2 is still live: the kick example did not end it"
    );

    schemathesis_passes(18081, &node_doc, dir.path());
}
