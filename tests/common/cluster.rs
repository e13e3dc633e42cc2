//! A cluster of real processes on loopback: ingest nodes reporting over QUIC (mutual TLS,
//! certificates from `edge certs`) to one or more balancers. For the balancer scenarios.

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{
    free_tcp_port, free_udp_port, http_get_with_headers, kill_and_reap, run_edge, tail_file,
    wait_until, Node, Ports, TempDir, ADMIN_TOKEN, HTTP_TIMEOUT,
};

/// How long a balancer may take to open its ports.
pub const BALANCER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long nodes may take to report to every balancer after they start.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(20);
/// Streams every cluster node accepts: keys `cluster-key-NN`, playback IDs `sNN`.
pub const CLUSTER_STREAMS: usize = 60;
/// Lines of log shown when a balancer fails.
const LOG_TAIL_LINES: usize = 60;

pub fn key(i: usize) -> String {
    format!("cluster-key-{i:02}")
}
pub fn pid(i: usize) -> String {
    format!("s{i:02}")
}

/// A balancer's ports (SRT and control are UDP).
#[derive(Debug, Clone, Copy)]
pub struct BalancerPorts {
    pub rtmp: u16,
    pub srt: u16,
    pub http: u16,
    pub admin: u16,
    pub control: u16,
}

impl BalancerPorts {
    pub fn free() -> Self {
        Self {
            rtmp: free_tcp_port(),
            srt: free_udp_port(),
            http: free_tcp_port(),
            admin: free_tcp_port(),
            control: free_udp_port(),
        }
    }
}

/// A running `edge balancer`, killed on drop.
pub struct Balancer {
    child: Child,
    pub id: String,
    pub ports: BalancerPorts,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Balancer {
    pub fn config(id: &str, ports: &BalancerPorts, certs: &Path, lost_after: &str) -> String {
        format!(
            "[balancer]\nid = \"{id}\"\nlost_after = \"{lost_after}\"\nreservation_ttl = \"10s\"\nreconnect_window = \"10s\"\nhandover_socket = \"{c}/{id}.sock\"\n\n[listen]\nrtmp = \"127.0.0.1:{}\"\nsrt = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{}\"\nadmin = \"127.0.0.1:{}\"\ncontrol = \"127.0.0.1:{}\"\n\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n\n[tls]\nca = \"{c}/ca.pem\"\ncert = \"{c}/balancer-{id}.pem\"\nkey = \"{c}/balancer-{id}.key\"\n",
            ports.rtmp, ports.srt, ports.http, ports.admin, ports.control,
            c = certs.display()
        )
    }

    pub fn start(dir: &Path, id: &str, certs: &Path, lost_after: &str) -> Balancer {
        Self::start_with(dir, id, certs, lost_after, |_| {})
    }

    /// [`Balancer::start`] with its config text edited by `edit` first.
    pub fn start_with(
        dir: &Path,
        id: &str,
        certs: &Path,
        lost_after: &str,
        edit: impl FnOnce(&mut String),
    ) -> Balancer {
        let ports = BalancerPorts::free();
        let config_path = dir.join(format!("{id}.toml"));
        let mut config = Self::config(id, &ports, certs, lost_after);
        edit(&mut config);
        fs::write(&config_path, config).expect("write balancer config");
        let log_path = dir.join(format!("{id}.log"));
        // Appended to: a balancer's successors (a re-exec after SIGUSR2 inherits this file, a
        // new process opens it again) write to the same file, and a writer at its own offset
        // would overwrite the lines another appended (a successor's "took over" line was lost
        // so once, under load).
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("create balancer log");
        let child = Command::new(super::edge_bin())
            .args(["balancer", "--config"])
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn edge balancer");
        let mut b = Balancer {
            child,
            id: id.into(),
            ports,
            config_path,
            log_path,
        };
        eprintln!(
            "[harness] balancer {id} pid {} log {}",
            b.child.id(),
            b.log_path.display()
        );
        let healthz = b.admin_url("/healthz");
        let ok = wait_until(BALANCER_START_TIMEOUT, || {
            if let Ok(Some(st)) = b.child.try_wait() {
                panic!(
                    "balancer exited with {st}:\n{}",
                    tail_file(&b.log_path, LOG_TAIL_LINES)
                );
            }
            super::http_get(&healthz, HTTP_TIMEOUT)
                .ok()
                .filter(|r| r.status == 200)
                .map(|_| ())
        });
        assert!(
            ok.is_some(),
            "balancer not ready:\n{}",
            tail_file(&b.log_path, LOG_TAIL_LINES)
        );
        b
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.admin)
    }
    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{key}", self.ports.rtmp)
    }
    pub fn srt_url(&self, key: &str) -> String {
        format!(
            "srt://127.0.0.1:{}?streamid=#!::r=live/{key},m=publish",
            self.ports.srt
        )
    }
    pub fn playlist_url(&self, playback_id: &str) -> String {
        format!(
            "http://127.0.0.1:{}/live/{playback_id}/index.m3u8",
            self.ports.http
        )
    }
    pub fn api(&self, path: &str) -> serde_json::Value {
        let r = http_get_with_headers(
            &self.admin_url(path),
            &[("Authorization", &format!("Bearer {ADMIN_TOKEN}"))],
            HTTP_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json().expect("JSON")
    }
    /// `/api/v1/nodes`, as (id, status, streams) for each node.
    pub fn nodes(&self) -> Vec<(String, String, u64)> {
        self.api("/api/v1/nodes")
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| {
                        (
                            n["id"].as_str().unwrap_or("").to_string(),
                            n["status"].as_str().unwrap_or("").to_string(),
                            n["streams"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
    pub fn status_of(&self, node: &str) -> Option<String> {
        self.nodes().into_iter().find(|n| n.0 == node).map(|n| n.1)
    }
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
    pub fn signal(&self, sig: &str) {
        super::send_signal(self.child.id(), sig).expect("signal the balancer");
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "[harness] balancer {} log {}:\n{}",
                self.id,
                self.log_path.display(),
                tail_file(&self.log_path, LOG_TAIL_LINES)
            );
        }
        kill_and_reap(&mut self.child);
        // Successors started by SIGUSR2 or by hand run this config too: none may outlive the
        // test (a leaked one keeps its ports, and the descriptors it inherited, open).
        let config = self.config_path.display().to_string();
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for p in procs.flatten() {
                let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                    continue;
                };
                let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains("balancer --config") && cmdline.contains(&config) {
                    let _ = super::send_signal(pid, "KILL");
                }
            }
        }
    }
}

/// Certificates and configs for a cluster; nodes and balancers are started from it.
pub struct Cluster {
    pub dir: TempDir,
    pub certs: PathBuf,
}

impl Cluster {
    /// Create a cluster CA and certificates for nodes `n1..=n{nodes}` and balancers
    /// `b1..=b{balancers}` with `edge certs`.
    pub fn new(nodes: usize, balancers: usize) -> Cluster {
        let dir = TempDir::new("cluster");
        let certs = dir.path().join("certs");
        let mut args: Vec<String> =
            vec!["certs".into(), "--out".into(), certs.display().to_string()];
        for i in 1..=nodes {
            args.extend(["--node".into(), format!("n{i}")]);
        }
        for i in 1..=balancers {
            args.extend(["--balancer".into(), format!("b{i}")]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_edge(&refs);
        assert!(
            out.status.success(),
            "edge certs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster { dir, certs }
    }

    pub fn balancer(&self, i: usize, lost_after: &str) -> Balancer {
        Balancer::start(self.dir.path(), &format!("b{i}"), &self.certs, lost_after)
    }

    /// [`Cluster::balancer`] with its config text edited by `edit` first.
    pub fn balancer_with(
        &self,
        i: usize,
        lost_after: &str,
        edit: impl FnOnce(&mut String),
    ) -> Balancer {
        Balancer::start_with(
            self.dir.path(),
            &format!("b{i}"),
            &self.certs,
            lost_after,
            edit,
        )
    }

    /// Node `n{i}` with `capacity` units where each stream costs 1 unit (passthrough only, no
    /// ladder: the balancer scenarios are about placement, not transcoding), reporting to
    /// `balancers`.
    /// Balancer `i` with RTMPS and HTTPS on ports of their own, presenting `cert` and `key`:
    /// (balancer, RTMPS port, HTTPS port).
    pub fn balancer_with_tls(&self, i: usize, cert: &Path, key: &Path) -> (Balancer, u16, u16) {
        let (rtmps, https) = (free_tcp_port(), free_tcp_port());
        let b = self.balancer_with(i, "5s", |cfg| {
            super::tls::add_tls_listeners(cfg, rtmps, https, cert, key)
        });
        (b, rtmps, https)
    }

    pub fn node(&self, i: usize, capacity: u32, balancers: &[&Balancer]) -> Node {
        self.node_with(i, capacity, balancers, |_| {})
    }

    /// [`Cluster::node`] with its config text edited by `edit` first.
    pub fn node_with(
        &self,
        i: usize,
        capacity: u32,
        balancers: &[&Balancer],
        edit: impl FnOnce(&mut String),
    ) -> Node {
        let ports = Ports::free();
        let id = format!("n{i}");
        let bal: Vec<SocketAddr> = balancers
            .iter()
            .map(|b| SocketAddr::from(([127, 0, 0, 1], b.ports.control)))
            .collect();
        let local = IpAddr::from([127, 0, 0, 1]);
        let cfg = node_config(&id, local, capacity, &ports, &bal, &[local], &self.certs);
        let mut cfg = cfg;
        edit(&mut cfg);
        Node::start_with_config(ports, cfg)
    }
}

/// The config of cluster node `id`: passthrough only (no ladder, each stream 1 unit of
/// `capacity`), listening on `ip`, reporting to `balancers` every 500 ms, taking PROXY headers
/// from `trusted`, certificates from `certs`; streams `cluster-key-NN` → `sNN`.
pub fn node_config(
    id: &str,
    ip: IpAddr,
    capacity: u32,
    ports: &Ports,
    balancers: &[SocketAddr],
    trusted: &[IpAddr],
    certs: &Path,
) -> String {
    let mut streams = String::new();
    for s in 0..CLUSTER_STREAMS {
        streams.push_str(&format!(
            "[[streams]]\nkey = \"{}\"\nplayback_id = \"{}\"\n\n",
            key(s),
            pid(s)
        ));
    }
    let quoted = |v: Vec<String>| {
        v.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let bal = quoted(balancers.iter().map(|b| b.to_string()).collect());
    let trusted = quoted(trusted.iter().map(|a| a.to_string()).collect());
    format!(
        "ladder = []\n\n[node]\nid = \"{id}\"\ncapacity_units = {capacity}.0\n\n[listen]\nrtmp = \"{ip}:{}\"\nsrt = \"{ip}:{}\"\nhttp = \"{ip}:{}\"\nadmin = \"{ip}:{}\"\n\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n\n[hls]\npart_target = \"333ms\"\nsegment_target = \"2s\"\nwindow_segments = 6\nreconnect_window = \"10s\"\nended_retention = \"30s\"\n\n[transcode]\npassthrough = true\ndecode_units = 1.0\nmax_source_width = 1280\nmax_source_height = 720\nmax_source_fps = 30\n\n{streams}[control]\nbalancers = [{bal}]\nca = \"{c}/ca.pem\"\ncert = \"{c}/node-{id}.pem\"\nkey = \"{c}/node-{id}.key\"\nreport_interval = \"500ms\"\ntrusted_proxies = [{trusted}]\n",
        ports.rtmp,
        ports.srt,
        ports.http,
        ports.admin,
        c = certs.display()
    )
}

/// Wait until `balancer` lists every node in `ids` with a report.
pub fn wait_nodes(balancer: &Balancer, ids: &[&str]) {
    let ok = wait_until(REPORT_TIMEOUT, || {
        let nodes = balancer.nodes();
        ids.iter()
            .all(|id| nodes.iter().any(|n| n.0 == *id && n.1 != "lost"))
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "balancer {} never heard from {ids:?}: {:?}\n{}",
        balancer.id,
        balancer.nodes(),
        tail_file(&balancer.log_path, LOG_TAIL_LINES)
    );
}
