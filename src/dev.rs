//! `edge dev`: a local cluster on one machine. One balancer on the dev ports (rtmp/1935,
//! srt/9000, admin/8081, control/7000) and two ingest nodes on other ports, each a child
//! process, with certificates from a fresh cluster CA. A user of `edge dev` publishes through
//! the balancer exactly as in production, and upgrades it as in production: `kill -USR2` on
//! the balancer, or `edge balancer --config DIR/balancer.toml` from another shell, hands
//! every connection to a new balancer process. A child that exits is reported with the last
//! lines of its log.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;

/// The dev balancer's addresses: the ports DESIGN.md gives encoders and operators.
const BALANCER_RTMP: &str = "0.0.0.0:1935";
const BALANCER_SRT: &str = "0.0.0.0:9000";
const BALANCER_HTTP: &str = "0.0.0.0:8080";
const BALANCER_ADMIN: &str = "127.0.0.1:8081";
const BALANCER_CONTROL: &str = "127.0.0.1:7000";
/// Each dev node's ports: (rtmp, srt, http, admin).
const NODES: [(&str, [u16; 4]); 2] = [
    ("dev-node-1", [11935, 19000, 18080, 18081]),
    ("dev-node-2", [21935, 29000, 28080, 28081]),
];
/// How long to wait for a node to come up before saying so.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(60);

fn node_config(id: &str, ports: [u16; 4], dir: &std::path::Path) -> String {
    // The dev stream, ladder and HLS settings, with this node's ports and control section.
    let base = edge_config::DEV_CONFIG
        .replace("id = \"dev-node\"", &format!("id = \"{id}\""))
        .replace("\"0.0.0.0:1935\"", &format!("\"127.0.0.1:{}\"", ports[0]))
        .replace("\"0.0.0.0:9000\"", &format!("\"127.0.0.1:{}\"", ports[1]))
        .replace("\"0.0.0.0:8080\"", &format!("\"127.0.0.1:{}\"", ports[2]))
        .replace("\"127.0.0.1:8081\"", &format!("\"127.0.0.1:{}\"", ports[3]));
    format!(
        "{base}\n[control]\nbalancers = [\"{BALANCER_CONTROL}\"]\nca = \"{d}/ca.pem\"\ncert = \"{d}/node-{id}.pem\"\nkey = \"{d}/node-{id}.key\"\nreport_interval = \"1s\"\ntrusted_proxies = [\"127.0.0.1\"]\n",
        d = dir.display()
    )
}

fn balancer_config(dir: &std::path::Path) -> String {
    format!(
        "[balancer]\nid = \"dev-balancer\"\nlost_after = \"5s\"\nreservation_ttl = \"10s\"\nreconnect_window = \"30s\"\nhandover_socket = \"{d}/balancer.sock\"\n\n[listen]\nrtmp = \"{BALANCER_RTMP}\"\nsrt = \"{BALANCER_SRT}\"\nhttp = \"{BALANCER_HTTP}\"\nadmin = \"{BALANCER_ADMIN}\"\ncontrol = \"{BALANCER_CONTROL}\"\n\n[admin]\ntoken = \"dev-admin-token-change-me\"\n\n[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/balancer-dev-balancer.pem\"\nkey = \"{d}/balancer-dev-balancer.key\"\n",
        d = dir.display()
    )
}

pub async fn run(dir: PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ids: Vec<String> = NODES.iter().map(|(id, _)| id.to_string()).collect();
    control::certs::write_cluster(&dir, &ids, &["dev-balancer".to_string()])
        .context("cannot create certificates")?;
    let bpath = dir.join("balancer.toml");
    std::fs::write(&bpath, balancer_config(&dir))?;
    let bcfg = edge_config::load_balancer_file(&bpath)?;
    drop(bcfg);
    let exe = std::env::current_exe().context("cannot find the edge binary")?;
    let spawn = |args: &[&std::ffi::OsStr],
                 log: &std::path::Path|
     -> anyhow::Result<tokio::process::Child> {
        let log = std::fs::File::create(log)?;
        Ok(tokio::process::Command::new(&exe)
            .args(args)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?)
    };
    let mut children: Vec<Child> = Vec::new();
    for (id, ports) in NODES {
        let path = dir.join(format!("{id}.toml"));
        std::fs::write(&path, node_config(id, ports, &dir))?;
        let log = dir.join(format!("{id}.log"));
        let child = spawn(
            &["ingest".as_ref(), "--config".as_ref(), path.as_os_str()],
            &log,
        )
        .with_context(|| format!("cannot start node {id}"))?;
        children.push(Child {
            name: id.to_string(),
            log,
            admin: ([127, 0, 0, 1], ports[3]).into(),
            proc: child,
        });
    }
    let blog = dir.join("balancer.log");
    let balancer = spawn(
        &["balancer".as_ref(), "--config".as_ref(), bpath.as_os_str()],
        &blog,
    )
    .context("cannot start the balancer")?;
    children.push(Child {
        name: "balancer dev-balancer".into(),
        log: blog,
        admin: BALANCER_ADMIN.parse().context("balancer admin address")?,
        proc: balancer,
    });
    for c in &mut children {
        let deadline = tokio::time::Instant::now() + NODE_START_TIMEOUT;
        while tokio::net::TcpStream::connect(c.admin).await.is_err() {
            if let Ok(Some(st)) = c.proc.try_wait() {
                anyhow::bail!("{} exited with {st}:\n{}", c.name, tail(&c.log));
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("{} did not start; see {}", c.name, c.log.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "edge dev: balancer dev-balancer and nodes {} are up (files in {})",
        ids.join(", "),
        dir.display()
    );
    for (key, pid) in [("dev-stream-key", "dev"), ("dev-stream-key-2", "dev2")] {
        println!("  publish (RTMP): rtmp://127.0.0.1:1935/live/{key}");
        println!("  publish (SRT):  srt://127.0.0.1:9000?streamid=#!::r=live/{key},m=publish");
        println!("  play (LL-HLS):  http://127.0.0.1:8080/live/{pid}/index.m3u8");
    }
    for (id, ports) in NODES {
        println!(
            "  node {id}: play http://127.0.0.1:{}/live/dev/index.m3u8, admin http://127.0.0.1:{}",
            ports[2], ports[3]
        );
    }
    println!(
        "  dashboard: http://127.0.0.1:8081/ (log in with the token dev-admin-token-change-me)"
    );
    println!("  balancer admin: http://127.0.0.1:8081/api/v1/nodes (Authorization: Bearer dev-admin-token-change-me; OpenAPI at /api/v1/openapi.json)");
    println!(
        "  upgrade the balancer with no stream dropped: kill -USR2 {}, or edge balancer --config {}",
        children.last().and_then(|c| c.proc.id()).unwrap_or(0),
        bpath.display()
    );
    println!("  logs: {}/{{balancer,dev-node-*}}.log", dir.display());
    let r = supervise(&mut children).await;
    stop_all(children).await;
    r
}

/// A child process of `edge dev`.
struct Child {
    name: String,
    log: PathBuf,
    admin: SocketAddr,
    proc: tokio::process::Child,
}

/// Lines of a child's log shown when it exits.
const LOG_TAIL: usize = 20;
/// How long children get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL)..].join("\n")
}

/// Run until SIGINT or SIGTERM; report every child that exits (and keep the rest running).
async fn supervise(children: &mut [Child]) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut alive = children.len();
    loop {
        let exits = futures_exit(children);
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            (i, st) = exits => {
                let c = &children[i];
                eprintln!(
                    "edge dev: {} exited ({}); last lines of {}:\n{}",
                    c.name,
                    st.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    c.log.display(),
                    tail(&c.log)
                );
                alive -= 1;
                if alive == 0 {
                    anyhow::bail!("every process of the local cluster exited");
                }
            }
        }
    }
}

/// The first child (still running) to exit, with its status.
async fn futures_exit(
    children: &mut [Child],
) -> (usize, std::io::Result<std::process::ExitStatus>) {
    let waits = children.iter_mut().enumerate().filter_map(|(i, c)| {
        c.proc.id()?;
        Some(Box::pin(async move { (i, c.proc.wait().await) }))
    });
    let waits: Vec<_> = waits.collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    futures::future::select_all(waits).await.0
}

/// SIGTERM every child and the balancer that took over from ours (if an upgrade happened),
/// then kill what is left after [`STOP_GRACE`].
async fn stop_all(mut children: Vec<Child>) {
    if let Some(pid) = serving_balancer().await {
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    for c in &children {
        if let Some(id) = c.proc.id() {
            let _ = std::process::Command::new("kill")
                .arg(id.to_string())
                .status();
        }
    }
    for c in &mut children {
        if tokio::time::timeout(STOP_GRACE, c.proc.wait())
            .await
            .is_err()
        {
            let _ = c.proc.kill().await;
        }
    }
    if let Some(pid) = serving_balancer().await {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

/// The PID of the balancer process serving the dev admin port now.
async fn serving_balancer() -> Option<u32> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect(BALANCER_ADMIN),
    )
    .await
    .ok()?
    .ok()?;
    s.write_all(b"GET /api/v1/balancer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev-admin-token-change-me\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out);
    let body = text.split("\r\n\r\n").nth(1)?;
    let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    v["pid"].as_u64().map(|p| p as u32)
}
