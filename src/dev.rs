//! `edge dev`: a local cluster on one machine. One balancer runs in this process on the dev
//! ports (rtmp/1935, srt/9000, admin/8081, control/7000); two ingest nodes run as child
//! processes on other ports, with certificates from a fresh cluster CA, reporting to it. A
//! user of `edge dev` publishes through the balancer exactly as in production.

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
        "[balancer]\nid = \"dev-balancer\"\nlost_after = \"5s\"\nreservation_ttl = \"10s\"\nreconnect_window = \"30s\"\n\n[listen]\nrtmp = \"{BALANCER_RTMP}\"\nsrt = \"{BALANCER_SRT}\"\nhttp = \"{BALANCER_HTTP}\"\nadmin = \"{BALANCER_ADMIN}\"\ncontrol = \"{BALANCER_CONTROL}\"\n\n[admin]\ntoken = \"dev-admin-token-change-me\"\n\n[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/balancer-dev-balancer.pem\"\nkey = \"{d}/balancer-dev-balancer.key\"\n",
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
    let exe = std::env::current_exe().context("cannot find the edge binary")?;
    let mut children = Vec::new();
    for (id, ports) in NODES {
        let path = dir.join(format!("{id}.toml"));
        std::fs::write(&path, node_config(id, ports, &dir))?;
        let log = std::fs::File::create(dir.join(format!("{id}.log")))?;
        let child = tokio::process::Command::new(&exe)
            .arg("ingest")
            .arg("--config")
            .arg(&path)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start node {id}"))?;
        children.push((id, ports, child));
    }
    for (id, ports, _) in &children {
        let admin: SocketAddr = ([127, 0, 0, 1], ports[3]).into();
        let deadline = tokio::time::Instant::now() + NODE_START_TIMEOUT;
        while tokio::net::TcpStream::connect(admin).await.is_err() {
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "node {id} did not start; see {}",
                    dir.join(format!("{id}.log")).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "edge dev: balancer dev-balancer and nodes {} are up (files in {})",
        ids.join(", "),
        dir.display()
    );
    let key = "dev-stream-key";
    println!("  publish (RTMP): rtmp://127.0.0.1:1935/live/{key}");
    println!("  publish (SRT):  srt://127.0.0.1:9000?streamid=#!::r=live/{key},m=publish");
    println!("  play (LL-HLS):  http://127.0.0.1:8080/live/dev/index.m3u8");
    for (id, ports, _) in &children {
        println!(
            "  node {id}: play http://127.0.0.1:{}/live/dev/index.m3u8, admin http://127.0.0.1:{}",
            ports[2], ports[3]
        );
    }
    println!("  balancer admin: http://127.0.0.1:8081/api/v1/nodes (Authorization: Bearer dev-admin-token-change-me)");
    println!("  logs: {}/dev-node-*.log", dir.display());
    let r = crate::balancer_main(bcfg, Some(bpath)).await;
    for (_, _, mut c) in children {
        let _ = c.kill().await;
    }
    r
}
