//! deploy/: the Kubernetes manifests, the configs inside them, the alert rules and the
//! dashboard, checked with the real tools and the real binary.
//!
//! - every overlay renders with `kubectl kustomize` and validates strictly against the
//!   Kubernetes 1.29 schemas (kubernetes-validate) and, for custom resources, against the
//!   upstream CRDs kept in deploy/crds; the properties the design depends on hold.
//! - the TOML in the rendered ConfigMaps, rendered for a pod by the same script the init
//!   containers run, passes `edge config check`.
//! - `promtool check rules` and `promtool test rules`, with a firing test for every alert.
//! - a real Prometheus scrapes a running `edge dev` with a live stream, and every metric and
//!   every label matcher in the dashboard and the rules selects a series.
//! - (opt-in, `EDGE_TEST_ROOTFS=1`) deploy/rootfs.sh: the runtime image built with debootstrap.
//!
//! Tools come from scripts/setup.sh (kubectl, .venv with kubernetes-validate, prometheus).
// End-to-end tests and benchmarks drive real processes (encoders, players, `edge`) on real
// time; the ban on the std clock (clippy.toml) is for product code.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{
    edge_bin, free_tcp_port, http_get, kill_and_reap, run_with_timeout, tail_file, wait_until,
    EncOpts, Encoder, TempDir, HTTP_TIMEOUT,
};
use serde_json::Value;

/// The oldest Kubernetes the manifests must validate against (the issue: 1.29 or newer).
const KUBERNETES_VERSION: &str = "1.29.0";
/// kustomize, kubernetes-validate, promtool: each takes a second or two; generous for 2 loaded cores.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
/// `edge dev` binds fixed ports (DESIGN.md's): its balancer and two nodes.
const DEV_METRICS_PORTS: [u16; 3] = [8081, 18081, 28081];
const DEV_PORTS: [u16; 8] = [1935, 8080, 8081, 11935, 18080, 18081, 21935, 28081];
/// How long `edge dev` may take to start both nodes and hear their first reports.
const DEV_START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long Prometheus may take to start and scrape every target once.
const PROMETHEUS_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long every selector may take to return data: rate() over the scrape needs two samples
/// and histograms need observations from the live stream and the blocking reloads.
const SELECTORS_TIMEOUT: Duration = Duration::from_secs(90);
/// The rootfs script builds ~850 MB with debootstrap the first time (about 4 minutes here).
const ROOTFS_TIMEOUT: Duration = Duration::from_secs(1200);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    run_with_timeout(cmd.current_dir(repo()), TOOL_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn venv(tool: &str) -> PathBuf {
    let p = repo().join(".venv/bin").join(tool);
    assert!(p.exists(), "{} missing: run scripts/setup.sh", p.display());
    p
}

fn overlays() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(repo().join("deploy/k8s/overlays"))
        .expect("deploy/k8s/overlays")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("kustomization.yaml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    assert!(
        v.len() >= 2 && v.contains(&"dev".into()) && v.contains(&"production".into()),
        "{v:?}"
    );
    v
}

/// `kubectl kustomize` of an overlay: the YAML and its documents.
fn render(overlay: &str) -> (String, Vec<Value>) {
    let o = run(Command::new("kubectl")
        .arg("kustomize")
        .arg(format!("deploy/k8s/overlays/{overlay}")));
    assert!(o.status.success(), "kustomize {overlay}: {}", text(&o));
    let yaml = String::from_utf8_lossy(&o.stdout).into_owned();
    let docs = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).expect("YAML document");
            serde_json::to_value(v).expect("YAML as JSON")
        })
        .filter(|v| !v.is_null())
        .collect();
    (yaml, docs)
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// Strict schema validation of built-in kinds and CRD validation of custom resources.
fn validate(dir: &Path, name: &str, yaml: &str) -> (Output, Output) {
    let path = dir.join(format!("{name}.yaml"));
    fs::write(&path, yaml).expect("write rendered manifests");
    let k = run(Command::new(venv("kubernetes-validate"))
        .args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .arg(&path));
    let c = run(Command::new(venv("python"))
        .arg("tests/deploy/validate_crs.py")
        .arg("deploy/crds")
        .arg(&path));
    (k, c)
}

#[test]
fn every_overlay_renders_and_validates_strictly() {
    let dir = TempDir::new("k8s");
    for overlay in overlays() {
        let (yaml, docs) = render(&overlay);
        let (k, c) = validate(dir.path(), &overlay, &yaml);
        assert!(
            k.status.success(),
            "{overlay}: kubernetes-validate: {}",
            text(&k)
        );
        // Kinds without a built-in schema are the CRD script's; it fails on any it cannot check.
        assert!(c.status.success(), "{overlay}: CRDs: {}", text(&c));
        let customs = docs
            .iter()
            .filter(|d| {
                [
                    "PodMonitor",
                    "ServiceMonitor",
                    "ScaledObject",
                    "Certificate",
                    "Issuer",
                ]
                .contains(&d["kind"].as_str().unwrap_or(""))
            })
            .count();
        assert!(
            text(&c).contains(&format!("{customs} custom resource(s) valid")),
            "{overlay}: expected {customs} custom resources checked: {}",
            text(&c)
        );
        check_design(&overlay, &docs);
    }

    // The validators can fail: an unknown field in a built-in kind and in a custom resource.
    let (yaml, _) = render("production");
    let bad = yaml.replacen(
        "podManagementPolicy: Parallel",
        "podManagementPolicy: Parallel\n  podManagement: Parallel",
        1,
    );
    let (k, _) = validate(dir.path(), "bad-builtin", &bad);
    assert!(
        !k.status.success(),
        "an unknown StatefulSet field passed: {}",
        text(&k)
    );
    let bad = yaml.replacen(
        "minReplicaCount: 2",
        "minReplicaCount: 2\n  minReplicas: 2",
        1,
    );
    assert_ne!(bad, yaml, "the ScaledObject is in the production overlay");
    let (_, c) = validate(dir.path(), "bad-custom", &bad);
    assert!(
        !c.status.success(),
        "an unknown ScaledObject field passed: {}",
        text(&c)
    );
}

/// What DESIGN.md and the deploy issue require of the rendered objects.
fn check_design(overlay: &str, docs: &[Value]) {
    let sts = find(docs, "StatefulSet", "edge-ingest").expect("ingest StatefulSet");
    assert_eq!(sts["spec"]["podManagementPolicy"], "Parallel", "{overlay}");
    let grace = sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace period");
    let drain = ingest::DRAIN_DEADLINE.as_secs();
    assert!(
        grace > drain && grace <= drain + 300,
        "{overlay}: terminationGracePeriodSeconds {grace} should be just above the drain deadline {drain}"
    );
    let node = &sts["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        node["livenessProbe"]["httpGet"]["path"], "/healthz",
        "{overlay}"
    );

    let ds = find(docs, "DaemonSet", "edge-balancer").expect("balancer DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "{overlay}");
    let ru = &ds["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(
        (ru["maxSurge"].as_i64(), ru["maxUnavailable"].as_i64()),
        (Some(1), Some(0)),
        "{overlay}"
    );
    for c in pod["containers"].as_array().expect("containers") {
        assert!(
            c.get("ports").is_none(),
            "{overlay}: balancer declares containerPorts (hostPorts with hostNetwork)"
        );
        for probe in ["livenessProbe", "readinessProbe"] {
            assert!(
                c[probe]["exec"].is_object(),
                "{overlay}: balancer {probe} is not exec"
            );
        }
    }
    assert!(
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["hostPath"]["path"] == "/run/edge"),
        "{overlay}: no hand-over hostPath"
    );

    for d in docs {
        let kind = d["kind"].as_str().unwrap_or("");
        let name = d["metadata"]["name"].as_str().unwrap_or("");
        if kind == "ServiceAccount" {
            assert_eq!(
                d["automountServiceAccountToken"],
                name == "edge-certs",
                "{overlay}: only the certificate Job's account gets a token ({name})"
            );
        }
        let pod = match kind {
            "StatefulSet" | "DaemonSet" | "Job" => &d["spec"]["template"]["spec"],
            _ => continue,
        };
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"], true,
            "{overlay}: {name}"
        );
        let containers = pod["containers"].as_array().into_iter().flatten();
        let inits = pod["initContainers"].as_array().into_iter().flatten();
        for c in containers.chain(inits) {
            let sc = &c["securityContext"];
            assert_eq!(
                sc["readOnlyRootFilesystem"], true,
                "{overlay}: {name}/{}",
                c["name"]
            );
            assert_eq!(
                sc["allowPrivilegeEscalation"], false,
                "{overlay}: {name}/{}",
                c["name"]
            );
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{overlay}: {name}/{}",
                c["name"]
            );
            // One step runs as root: the balancer's, handing the hostPath /run/edge to the
            // balancer's uid, with CHOWN and nothing else.
            if sc["runAsUser"] == 0 || sc["runAsNonRoot"] == false {
                assert_eq!(
                    (name, c["name"].as_str()),
                    ("edge-balancer", Some("handover-dir")),
                    "{overlay}: only the hand-over directory step may run as root"
                );
                assert_eq!(sc["capabilities"]["add"], serde_json::json!(["CHOWN"]));
                assert!(c["command"][2]
                    .as_str()
                    .is_some_and(|c| c.contains("chown 10001:10001 /run/edge")));
            } else {
                assert!(
                    sc["capabilities"]["add"].is_null() || name == "edge-balancer",
                    "{overlay}: {name}/{} adds capabilities",
                    c["name"]
                );
            }
        }
    }
    assert!(
        find(docs, "PodDisruptionBudget", "edge-ingest").is_some(),
        "{overlay}"
    );
    assert!(
        find(docs, "NetworkPolicy", "edge-ingest").is_some(),
        "{overlay}"
    );
}

/// The cluster layout of /etc/edge that pods see, in `root`: certificates for the first ingest
/// ordinal and the shared balancer certificate, and an admin token.
fn etc_edge(root: &Path) {
    let certs = root.join("certs");
    let o = run(Command::new(edge_bin())
        .args(["certs", "--out"])
        .arg(&certs)
        .args(["--node", "edge-ingest-0", "--balancer", "edge-balancer"]));
    assert!(o.status.success(), "edge certs: {}", text(&o));
    fs::create_dir_all(root.join("admin")).expect("admin dir");
    fs::write(
        root.join("admin/token"),
        "a-test-admin-token-from-a-secret\n",
    )
    .expect("token");
    fs::create_dir_all(root.join("auth")).expect("auth dir");
    fs::write(
        root.join("auth/secret"),
        "a-test-auth-secret-of-at-least-32-characters\n",
    )
    .expect("auth secret");
    fs::create_dir_all(root.join("run")).expect("run dir");
}

/// Runs render-config.sh (from the rendered edge-scripts ConfigMap) on a template the way the
/// init container does, with the pod's environment; returns its output.
fn render_config(dir: &Path, script: &str, role: &str, template: &str) -> Output {
    let etc = dir.join("etc-edge");
    let template_path = dir.join(format!("{role}.toml.in"));
    // The files are where the pod mounts them, relative to this directory.
    fs::write(
        &template_path,
        template.replace("/etc/edge/", &format!("{}/", etc.display())),
    )
    .expect("write template");
    let script_path = dir.join("render-config.sh");
    fs::write(&script_path, script).expect("write script");
    let bin_dir = edge_bin().parent().expect("bin dir").to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run(Command::new("sh")
        .arg(&script_path)
        .arg(role)
        .arg(&template_path)
        .arg(etc.join(format!("run/{role}.toml")))
        .env("PATH", path)
        .env("POD_NAME", "edge-ingest-0")
        .env("POD_IP", "10.1.2.3")
        // Resolves to loopback: stands in for the balancers' headless Service.
        .env("EDGE_BALANCERS", "localhost")
        .env("NODE_NAME", "machine-7.example.internal"))
}

/// The systemd unit reads as systemd reads it: `systemd-analyze verify` (from Debian's systemd
/// package, which `scripts/setup.sh` installs; it needs no running systemd) on the unit with
/// `ExecStart` pointing at the binary built here. What the unit's reload does is tested with
/// real processes in `balancer_handover::systemd_is_told_each_new_main_pid`.
#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/edge-balancer.service"))
        .expect("read the unit");
    assert!(unit.contains("ExecStart=/usr/local/bin/edge balancer"));
    let dir = TempDir::new("systemd");
    let path = dir.path().join("edge-balancer.service");
    let bin = edge_bin();
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/edge", &bin.to_string_lossy()),
    )
    .expect("write the unit");
    let o = run(Command::new("systemd-analyze").arg("verify").arg(&path));
    assert!(o.status.success(), "systemd-analyze verify:\n{}", text(&o));
    let out = text(&o);
    assert!(
        !out.contains("edge-balancer.service"),
        "systemd-analyze has something to say about the unit:\n{out}"
    );
}

#[test]
fn configs_in_every_overlay_pass_edge_config_check() {
    for overlay in overlays() {
        let (_, docs) = render(&overlay);
        let dir = TempDir::new("config");
        etc_edge(&dir.path().join("etc-edge"));
        let cm = |name: &str| {
            docs.iter()
                .find(|d| {
                    d["kind"] == "ConfigMap"
                        && d["metadata"]["name"]
                            .as_str()
                            .is_some_and(|n| n.starts_with(name))
                })
                .unwrap_or_else(|| panic!("{overlay}: no ConfigMap {name}"))
        };
        let config = cm("edge-config");
        let script = cm("edge-scripts")["data"]["render-config.sh"]
            .as_str()
            .expect("render-config.sh")
            .to_string();
        for role in ["ingest", "balancer"] {
            let template = config["data"][format!("{role}.toml")]
                .as_str()
                .unwrap_or_else(|| panic!("{overlay}: no {role}.toml"));
            let o = render_config(dir.path(), &script, role, template);
            assert!(o.status.success(), "{overlay}: {role}.toml: {}", text(&o));
            assert!(
                text(&o).contains(": ok ("),
                "{overlay}: {role}: {}",
                text(&o)
            );
            let rendered = fs::read_to_string(dir.path().join(format!("etc-edge/run/{role}.toml")))
                .expect("rendered config");
            let placeholder =
                rendered.split('@').skip(1).step_by(2).find(|w| {
                    !w.is_empty() && w.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                });
            assert!(
                placeholder.is_none(),
                "{overlay}: @{placeholder:?}@ left in {role}.toml:\n{rendered}"
            );
            if role == "ingest" {
                assert!(rendered.contains("id = \"edge-ingest-0\""), "{rendered}");
                assert!(
                    rendered.contains("advertise_rtmp = \"10.1.2.3:1935\""),
                    "{rendered}"
                );
                assert!(
                    rendered.contains("balancers = [\"127.0.0.1:7000\""),
                    "{rendered}"
                );
            } else {
                assert!(
                    rendered.contains("id = \"machine-7-example-internal\""),
                    "{rendered}"
                );
            }
        }
        // The check can fail: an unknown key is refused, and so the pod would not start.
        let broken = config["data"]["ingest.toml"]
            .as_str()
            .expect("ingest.toml")
            .replacen("[node]", "[node]\ncapacity = 3", 1);
        let o = render_config(dir.path(), &script, "ingest", &broken);
        assert!(
            !o.status.success() && text(&o).contains("capacity"),
            "{overlay}: {}",
            text(&o)
        );
    }
}

#[test]
fn balancer_probe_sees_only_sockets_this_pod_holds() {
    let (_, docs) = render("dev");
    let scripts = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("edge-scripts"))
        })
        .expect("edge-scripts");
    let dir = TempDir::new("probe");
    let probe = dir.path().join("balancer-probe.sh");
    fs::write(
        &probe,
        scripts["data"]["balancer-probe.sh"]
            .as_str()
            .expect("probe"),
    )
    .expect("write probe");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let ready = |p: u16| {
        run(Command::new("sh")
            .arg(&probe)
            .args(["ready", &p.to_string()]))
        .status
        .success()
    };
    assert!(
        ready(port),
        "the probe does not see a socket this process listens on"
    );
    drop(listener);
    assert!(
        !ready(port),
        "the probe is ready on a port nobody listens on"
    );
    let o = run(Command::new("sh").arg(&probe).arg("bogus"));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

/// Alert names of a rule file, and the alerts some unit test expects to fire.
fn alerts_and_tested() -> (BTreeSet<String>, BTreeSet<String>) {
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &fs::read_to_string(repo().join("deploy/prometheus/edge-rules.yaml")).expect("rules"),
    )
    .expect("rules YAML");
    let tests: serde_yaml::Value = serde_yaml::from_str(
        &fs::read_to_string(repo().join("deploy/prometheus/edge-rules.test.yaml")).expect("tests"),
    )
    .expect("tests YAML");
    let mut alerts = BTreeSet::new();
    for g in rules["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            if let Some(a) = r["alert"].as_str() {
                alerts.insert(a.to_string());
            }
        }
    }
    let mut fired = BTreeSet::new();
    for t in tests["tests"].as_sequence().expect("tests") {
        for a in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            if a["exp_alerts"].as_sequence().is_some_and(|e| !e.is_empty()) {
                fired.insert(a["alertname"].as_str().unwrap_or("").to_string());
            }
        }
    }
    (alerts, fired)
}

#[test]
fn alert_rules_check_and_every_alert_has_a_firing_unit_test() {
    let o =
        run(Command::new("promtool").args(["check", "rules", "deploy/prometheus/edge-rules.yaml"]));
    assert!(o.status.success(), "{}", text(&o));
    let o = run(Command::new("promtool").args([
        "test",
        "rules",
        "deploy/prometheus/edge-rules.test.yaml",
    ]));
    assert!(
        o.status.success() && text(&o).contains("SUCCESS"),
        "{}",
        text(&o)
    );
    let (alerts, fired) = alerts_and_tested();
    assert!(alerts.len() >= 8, "{alerts:?}");
    let untested: Vec<_> = alerts.difference(&fired).collect();
    assert!(
        untested.is_empty(),
        "alerts without a test that fires them: {untested:?}"
    );
}

/// Every PromQL expression in the dashboard and the rule files.
fn expressions() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dash: Value = serde_json::from_str(
        &fs::read_to_string(repo().join("deploy/grafana/edge.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    fn panels(v: &Value, out: &mut Vec<(String, String)>) {
        for p in v["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((
                        format!("dashboard: {}", p["title"].as_str().unwrap_or("?")),
                        e.to_string(),
                    ));
                }
            }
            panels(p, out);
        }
    }
    panels(&dash, &mut out);
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &fs::read_to_string(repo().join("deploy/prometheus/edge-rules.yaml")).expect("rules"),
    )
    .expect("rules YAML");
    for g in rules["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
            out.push((
                format!("rule {name}"),
                r["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    out
}

/// The series selectors in an expression: every metric name (all ours start with `edge_` or
/// are the standard `process_` ones) with the label matchers written after it.
fn selectors(expr: &str) -> Vec<String> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
        if ident(b[i]) && (i == 0 || !ident(b[i - 1])) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            if name.starts_with("edge_") || name.starts_with("process_") {
                let mut sel = name.to_string();
                if b.get(i) == Some(&b'{') {
                    let end = expr[i..].find('}').map(|e| i + e + 1).unwrap_or(b.len());
                    sel.push_str(&expr[i..end]);
                    i = end;
                }
                out.push(sel);
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn selector_extraction_finds_names_and_matchers() {
    assert_eq!(
        selectors("sum by (le) (rate(edge_a_bucket{kind=\"video\", x!~\"y\"}[5m])) / process_open_fds * on (instance) group_left edge_build_info"),
        ["edge_a_bucket{kind=\"video\", x!~\"y\"}", "process_open_fds", "edge_build_info"]
    );
}

fn curl_json(url: &str, query: Option<&str>) -> Result<Value, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-G", url]);
    if let Some(q) = query {
        cmd.arg("--data-urlencode").arg(format!("query={q}"));
    }
    let o = run_with_timeout(&mut cmd, HTTP_TIMEOUT + Duration::from_secs(5))?;
    serde_json::from_slice(&o.stdout).map_err(|e| format!("{url}: {e}: {}", text(&o)))
}

/// A child killed on drop.
struct Child(std::process::Child, PathBuf);
impl Drop for Child {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[deploy] {}:\n{}", self.1.display(), tail_file(&self.1, 40));
        }
        kill_and_reap(&mut self.0);
    }
}

fn spawn(cmd: &mut Command, log: PathBuf) -> Child {
    let f = fs::File::create(&log).expect("log file");
    let c = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone().expect("log"))
        .stderr(f)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    Child(c, log)
}

/// How long `edge dev` gets to stop its nodes after SIGTERM.
const DEV_STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `edge dev`. Dropped: SIGTERM, so it stops its node processes itself (a SIGKILL
/// would orphan them on the dev ports); then any node process still running with this
/// cluster's (unique) directory in its command line is killed by its PID.
struct DevCluster {
    child: Child,
    dir: PathBuf,
}
impl Drop for DevCluster {
    fn drop(&mut self) {
        let _ = common::send_signal(self.child.0.id(), "TERM");
        let _ = common::wait_child(&mut self.child.0, DEV_STOP_TIMEOUT);
        let needle = self.dir.display().to_string();
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                let _ = common::send_signal(pid, "KILL");
            }
        }
    }
}

#[test]
fn prometheus_scrapes_edge_dev_and_every_referenced_series_exists() {
    for p in DEV_PORTS {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok(),
            "port {p} is taken: is an `edge dev` running? This test runs one itself."
        );
    }
    let dir = TempDir::new("prom");
    let dev = DevCluster {
        child: spawn(
            Command::new(edge_bin())
                .args(["dev", "--dir"])
                .arg(dir.path().join("dev"))
                .env("RUST_LOG", "info"),
            dir.path().join("dev.log"),
        ),
        dir: dir.path().join("dev"),
    };
    let nodes_reported = wait_until(DEV_START_TIMEOUT, || {
        let m = http_get("http://127.0.0.1:8081/metrics", HTTP_TIMEOUT).ok()?;
        let t = m.text();
        (t.contains("edge_balancer_nodes{state=\"ready\"} 2")).then_some(())
    });
    assert!(
        nodes_reported.is_some(),
        "edge dev: two ready nodes never showed in the balancer's metrics"
    );

    let _encoder = Encoder::ffmpeg_rtmp(
        "rtmp://127.0.0.1:1935/live/dev-stream-key",
        EncOpts::default(),
    );
    let playlist = "http://127.0.0.1:8080/live/dev/index.m3u8";
    let media = wait_until(common::FIRST_SEGMENT_TIMEOUT, || {
        let m = http_get(playlist, HTTP_TIMEOUT)
            .ok()
            .filter(|r| r.status == 200)?;
        let uri = m
            .text()
            .lines()
            .find(|l| !l.starts_with('#') && l.ends_with(".m3u8"))?
            .to_string();
        let url = common::resolve_url(playlist, &uri);
        let p = http_get(&url, HTTP_TIMEOUT)
            .ok()
            .filter(|r| r.status == 200)?;
        p.text().contains("#EXTINF").then_some((url, p.text()))
    });
    let (media_url, media_text) =
        media.expect("the dev stream never served a segment through the balancer");
    // A blocking reload for the next segment, as an LL-HLS player sends (it waits for it).
    let msn = common::parse_media_playlist(&media_text)
        .map(|p| p.media_sequence_tag.unwrap_or(0) + p.skipped_segments + p.segments.len() as u64)
        .expect("media playlist");
    let r = http_get(
        &common::blocking_reload_url(&media_url, msn, 0),
        HTTP_TIMEOUT,
    )
    .expect("blocking reload");
    assert_eq!(r.status, 200, "blocking reload: {}", r.text());

    let prom_port = free_tcp_port();
    let targets: Vec<String> = DEV_METRICS_PORTS
        .iter()
        .map(|p| format!("'127.0.0.1:{p}'"))
        .collect();
    let config = dir.path().join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n- job_name: edge\n  static_configs:\n  - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .expect("prometheus config");
    let _prom = spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .arg("--log.level=warn"),
        dir.path().join("prometheus.log"),
    );
    let api = format!("http://127.0.0.1:{prom_port}/api/v1");
    let up = wait_until(PROMETHEUS_UP_TIMEOUT, || {
        let t = curl_json(&format!("{api}/targets"), None).ok()?;
        let active = t["data"]["activeTargets"].as_array()?.clone();
        (active.len() == DEV_METRICS_PORTS.len() && active.iter().all(|a| a["health"] == "up"))
            .then_some(active)
    });
    let active = up.expect("Prometheus never had every edge dev target up");
    for a in &active {
        let url = a["scrapeUrl"].as_str().unwrap_or("");
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "Prometheus scrapes a non-loopback address: {url}"
        );
    }

    let exprs = expressions();
    let mut wanted: BTreeMap<String, String> = BTreeMap::new();
    for (where_, e) in &exprs {
        for s in selectors(e) {
            wanted.entry(s).or_insert_with(|| where_.clone());
        }
    }
    assert!(wanted.len() > 30, "too few selectors found: {wanted:?}");
    let mut missing = wanted.clone();
    wait_until(SELECTORS_TIMEOUT, || {
        missing.retain(|sel, _| {
            let r = curl_json(&format!("{api}/query"), Some(&format!("count({sel})")));
            !r.is_ok_and(|v| {
                v["data"]["result"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
            })
        });
        missing.is_empty().then_some(())
    });
    assert!(
        missing.is_empty(),
        "selectors in deploy/ that select no series of a running edge dev: {missing:#?}"
    );
    // Every whole expression is valid PromQL for this Prometheus.
    for (where_, e) in &exprs {
        let v = curl_json(&format!("{api}/query"), Some(e)).expect("query");
        assert_eq!(v["status"], "success", "{where_}: {e}: {v}");
    }
    drop(dev);
}

#[test]
fn rootfs_script_runs_the_node_in_the_runtime_image() {
    if std::env::var("EDGE_TEST_ROOTFS").as_deref() != Ok("1") {
        eprintln!("skipped: set EDGE_TEST_ROOTFS=1 to build the runtime root filesystem (about 4 minutes, 850 MB from Debian's archive)");
        return;
    }
    let o = run_with_timeout(
        Command::new("bash")
            .arg("deploy/rootfs.sh")
            .current_dir(repo())
            .env("EDGE_BIN", edge_bin())
            .env("EDGE_ROOTFS_PORT", free_tcp_port().to_string()),
        ROOTFS_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        o.status.success() && text(&o).contains("rootfs: ok"),
        "{}",
        text(&o)
    );
}
