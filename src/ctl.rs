//! `edge ctl`: the operator's CLI against a balancer's admin API (the whole cluster) or a
//! node's (that node). Human tables by default, `-o json` for scripts; the token from
//! `EDGE_TOKEN` or `--token-file`, never from the command line (it would show in `ps`).
//!
//! Exit codes, for scripts: 0 done; 1 the server refused (the message says why); 2 usage;
//! 3 cannot reach the API or the token is refused; 4 no such node or stream; 5 gave up waiting.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where `edge ctl` goes without `--url` or `EDGE_URL`: the admin port of `edge dev`'s
/// balancer.
const DEFAULT_URL: &str = "http://127.0.0.1:8081";

/// One admin request may take this long (connect, send, read the whole answer): the API
/// answers from memory; a stuck server must not hang a script.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest admin answer read (a cluster of a few hundred nodes and thousands of streams
/// lists in well under this).
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// How long cordon, uncordon and drain wait for the node's report to show the new state
/// (a node reports at once on a change; a balancer hears within one round trip).
const EFFECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often `drain --wait` and the effect checks poll.
const POLL_EVERY: Duration = Duration::from_millis(500);

#[derive(Args)]
pub struct CtlArgs {
    /// Admin API of a balancer (the cluster) or of a node (that node only).
    #[arg(long, env = "EDGE_URL", default_value = DEFAULT_URL, global = true)]
    url: String,
    /// File holding the admin token (else `EDGE_TOKEN`).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Output: human tables or the API's JSON.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum CtlCommand {
    /// Every node: state, capacity, streams.
    Nodes,
    /// Every live stream, with its node and health.
    Streams,
    /// One live stream in full.
    Stream { playback_id: String },
    /// Take no new streams on NODE; its live streams continue.
    Cordon { node: String },
    /// Take new streams on NODE again.
    Uncordon { node: String },
    /// Take no new streams on NODE, for good (before removing it); live streams continue.
    Drain {
        node: String,
        /// Wait until the node carries no stream, showing how many are left.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long (e.g. 30m); exit 5.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
    /// End a live stream. Encoders reconnect within seconds: --block refuses its key that
    /// long on every node (e.g. 10m).
    Kick {
        playback_id: String,
        #[arg(long, value_parser = humantime::parse_duration)]
        block: Option<Duration>,
    },
    /// Forget a node that is gone (a balancer only; refused while the node is connected).
    Forget { node: String },
}

/// How a command ended, mapped to the exit code.
enum Failure {
    Refused(String),
    Unreachable(String),
    NotFound(String),
    TimedOut(String),
}

impl Failure {
    fn exit(self) -> ExitCode {
        let (code, msg) = match self {
            Failure::Refused(m) => (1, m),
            Failure::Unreachable(m) => (3, m),
            Failure::NotFound(m) => (4, m),
            Failure::TimedOut(m) => (5, m),
        };
        eprintln!("edge ctl: {}", msg.trim_end());
        ExitCode::from(code)
    }
}

type Outcome = Result<(), Failure>;

/// Run `edge ctl`.
pub fn run(args: CtlArgs) -> ExitCode {
    let token = match token(args.token_file.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("edge ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let api = match Api::new(&args.url, token) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("edge ctl: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("edge ctl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(command(&api, args.command, args.output)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit(),
    }
}

fn token(file: Option<&std::path::Path>) -> Result<String, String> {
    let t = match file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read the token file {}: {e}", f.display()))?,
        None => std::env::var("EDGE_TOKEN")
            .map_err(|_| "no admin token: set EDGE_TOKEN or give --token-file".to_string())?,
    };
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err("the admin token is empty".into());
    }
    Ok(t)
}

/// Which admin API `--url` points at.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Balancer,
    Node,
}

async fn command(api: &Api, cmd: CtlCommand, out: Output) -> Outcome {
    let target = api.target().await?;
    match cmd {
        CtlCommand::Nodes => {
            let nodes = match target {
                Target::Balancer => api.get("/api/v1/nodes").await?,
                Target::Node => Value::Array(vec![api.get("/api/v1/node").await?]),
            };
            print_out(out, &nodes, || nodes_table(&nodes, target));
            Ok(())
        }
        CtlCommand::Streams => {
            let streams = api.get("/api/v1/streams").await?;
            print_out(out, &streams, || streams_table(&streams, target));
            Ok(())
        }
        CtlCommand::Stream { playback_id } => {
            let streams = api.get("/api/v1/streams").await?;
            let s = streams
                .as_array()
                .and_then(|a| a.iter().find(|s| s["playback_id"] == playback_id.as_str()))
                .cloned()
                .ok_or_else(|| Failure::NotFound(format!("no live stream {playback_id}")))?;
            print_out(out, &s, || fields(&s));
            Ok(())
        }
        CtlCommand::Cordon { node } => node_action(api, target, &node, "cordon", out).await,
        CtlCommand::Uncordon { node } => node_action(api, target, &node, "uncordon", out).await,
        CtlCommand::Drain {
            node,
            wait,
            timeout,
        } => {
            node_action(api, target, &node, "drain", out).await?;
            if wait {
                drain_wait(api, target, &node, timeout, out).await?;
            }
            Ok(())
        }
        CtlCommand::Kick { playback_id, block } => {
            let secs = block.map_or(0, |b| b.as_secs());
            let path = format!("/api/v1/streams/{playback_id}?block_seconds={secs}");
            let v = api.send("DELETE", &path).await?;
            print_out(out, &v, || {
                let node = v["node_id"].as_str().unwrap_or("?");
                if secs > 0 {
                    format!("kicked {playback_id} on {node}; its key is refused for {secs} s\n")
                } else {
                    format!("kicked {playback_id} on {node}\n")
                }
            });
            Ok(())
        }
        CtlCommand::Forget { node } => {
            if target == Target::Node {
                return Err(Failure::Refused(
                    "forget is a balancer's: point --url at one".into(),
                ));
            }
            let v = api.send("DELETE", &format!("/api/v1/nodes/{node}")).await?;
            print_out(out, &v, || format!("forgot node {node}\n"));
            Ok(())
        }
    }
}

/// Whether a node in `state` shows that `action` took effect. Draining outranks cordoned
/// (a drained node stays draining through a cordon or an uncordon); a balancer may say
/// `full` of a node that takes streams.
fn took_effect(action: &str, state: &str) -> bool {
    match action {
        "cordon" => matches!(state, "cordoned" | "draining"),
        "drain" => state == "draining",
        _ => matches!(state, "ready" | "full" | "draining"),
    }
}

async fn node_action(api: &Api, target: Target, node: &str, action: &str, out: Output) -> Outcome {
    let v = match target {
        Target::Balancer => {
            api.send("POST", &format!("/api/v1/nodes/{node}/{action}"))
                .await?
        }
        Target::Node => {
            let me = api.get("/api/v1/node").await?;
            if me["id"] != node {
                return Err(Failure::NotFound(format!(
                    "this is node {}, not {node}",
                    me["id"].as_str().unwrap_or("?")
                )));
            }
            api.send("POST", &format!("/api/v1/node/{action}")).await?
        }
    };
    // Wait for the node's own word (its report, or its API), so that what is printed is true.
    let deadline = tokio::time::Instant::now() + EFFECT_TIMEOUT;
    loop {
        let state = node_view(api, target, node).await?.0;
        if took_effect(action, &state) {
            print_out(out, &v, || format!("node {node}: {state}\n"));
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Failure::TimedOut(format!(
                "node {node} was sent {action} but still shows {state} after {} s",
                EFFECT_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A node's state and stream count, as the target reports them.
async fn node_view(api: &Api, target: Target, node: &str) -> Result<(String, u64), Failure> {
    let n = match target {
        Target::Node => api.get("/api/v1/node").await?,
        Target::Balancer => api
            .get("/api/v1/nodes")
            .await?
            .as_array()
            .and_then(|a| a.iter().find(|n| n["id"] == node).cloned())
            .ok_or_else(|| Failure::NotFound(format!("no node {node}")))?,
    };
    // A balancer says `status` (ready, full, draining, cordoned, lost), a node `state`.
    let state = n["state"]
        .as_str()
        .or_else(|| n["status"].as_str())
        .unwrap_or("unknown")
        .to_string();
    Ok((state, n["streams"].as_u64().unwrap_or(0)))
}

async fn drain_wait(
    api: &Api,
    target: Target,
    node: &str,
    timeout: Option<Duration>,
    out: Output,
) -> Outcome {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut last = None;
    loop {
        let (_, streams) = node_view(api, target, node).await?;
        if last != Some(streams) && streams > 0 && out == Output::Table {
            println!("node {node} draining: {streams} stream(s) left");
            let _ = std::io::stdout().flush();
        }
        last = Some(streams);
        if streams == 0 {
            if out == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({ "node_id": node, "drained": true })
                );
            } else {
                println!("node {node} drained: no streams left");
            }
            return Ok(());
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() > d) {
            return Err(Failure::TimedOut(format!(
                "node {node} still carries {streams} stream(s)"
            )));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

fn print_out(out: Output, v: &Value, human: impl FnOnce() -> String) {
    match out {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
        ),
        Output::Table => print!("{}", human()),
    }
}

/// A value as a table cell.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// Thousandths of a unit as units with two decimals.
fn units(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "-".into(), |m| format!("{:.2}", m as f64 / 1000.0))
}

fn uptime(started_unix_ms: &Value) -> String {
    let Some(start) = started_unix_ms.as_u64() else {
        return "-".into();
    };
    let now = server::wall_clock()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let s = now.saturating_sub(start) / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn nodes_table(nodes: &Value, target: Target) -> String {
    let rows = nodes
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    let state = match target {
                        Target::Balancer => cell(&n["status"]),
                        Target::Node => cell(&n["state"]),
                    };
                    vec![
                        cell(&n["id"]),
                        state,
                        cell(&n["streams"]),
                        format!(
                            "{}/{}",
                            units(&n["used_milli_units"]),
                            units(&n["capacity_milli_units"])
                        ),
                        units(&n["free_milli_units"]),
                        match target {
                            Target::Balancer => format!(
                                "{}{}",
                                if n["connected"] == true {
                                    ""
                                } else {
                                    "disconnected, "
                                },
                                n["report_age_ms"]
                                    .as_u64()
                                    .map_or("-".into(), |ms| format!("report {ms} ms ago"))
                            ),
                            Target::Node => "-".into(),
                        },
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "NODE",
            "STATE",
            "STREAMS",
            "USED/CAPACITY",
            "FREE",
            "CONTROL",
        ],
        rows,
    )
}

fn streams_table(streams: &Value, target: Target) -> String {
    let rows = streams
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let health = match s["health_reason"].as_str() {
                        Some(r) => format!("{} ({r})", cell(&s["health"])),
                        None => cell(&s["health"]),
                    };
                    vec![
                        cell(&s["playback_id"]),
                        match target {
                            Target::Balancer => cell(&s["node_id"]),
                            Target::Node => "this".into(),
                        },
                        cell(&s["protocol"]),
                        uptime(&s["started_unix_ms"]),
                        units(&s["milli_units"]),
                        health,
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(
        &[
            "PLAYBACK-ID",
            "NODE",
            "PROTOCOL",
            "UPTIME",
            "UNITS",
            "HEALTH",
        ],
        rows,
    )
}

/// An object as `key: value` lines; nested objects (a stream's `stats`) indented under their
/// key, and lists of objects or of sentences (`issues`, `rungs`) one item per line.
fn fields(v: &Value) -> String {
    let mut out = String::new();
    write_fields(&mut out, v, 0);
    out
}

fn write_fields(out: &mut String, v: &Value, indent: usize) {
    let Some(o) = v.as_object() else {
        out.push_str(&format!("{:indent$}{}\n", "", cell(v)));
        return;
    };
    let width = o.keys().map(|k| k.len()).max().unwrap_or(0) + 1;
    for (k, v) in o {
        let key = format!("{k}:");
        match v {
            Value::Object(_) => {
                out.push_str(&format!("{:indent$}{key}\n", ""));
                write_fields(out, v, indent + 2);
            }
            Value::Array(a)
                if !a.is_empty()
                    && a.iter()
                        .all(|x| x.is_object() || x.as_str().is_some_and(|s| s.contains(' '))) =>
            {
                out.push_str(&format!("{:indent$}{key}\n", ""));
                for x in a {
                    out.push_str(&format!("{:indent$}  - {}\n", "", item(x)));
                }
            }
            _ => out.push_str(&format!("{:indent$}{key:<width$}  {}\n", "", cell(v))),
        }
    }
}

/// A list item on one line: an object as `key=value` pairs, anything else as its cell.
fn item(v: &Value) -> String {
    match v.as_object() {
        Some(o) => o
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(" "),
        None => cell(v),
    }
}

/// A tiny HTTP/1.1 client for the admin API (plain HTTP on loopback or a private network,
/// one request per connection).
struct Api {
    host: String,
    port: u16,
    token: String,
}

impl Api {
    fn new(url: &str, token: String) -> Result<Api, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("--url {url}: give http://HOST:PORT (the admin listener speaks plain HTTP)")
        })?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => (
                h.trim_start_matches('[').trim_end_matches(']').to_string(),
                p.parse::<u16>()
                    .map_err(|_| format!("--url {url}: bad port {p:?}"))?,
            ),
            _ => return Err(format!("--url {url}: give http://HOST:PORT")),
        };
        Ok(Api { host, port, token })
    }

    async fn target(&self) -> Result<Target, Failure> {
        match self.request("GET", "/api/v1/balancer").await? {
            (200, _) => Ok(Target::Balancer),
            (404, _) => Ok(Target::Node),
            (status, body) => Err(status_failure(status, &body)),
        }
    }

    async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.send("GET", path).await
    }

    /// A request whose answer must be 200 with JSON.
    async fn send(&self, method: &str, path: &str) -> Result<Value, Failure> {
        match self.request(method, path).await? {
            (200, body) => serde_json::from_slice(&body).map_err(|e| {
                Failure::Refused(format!("{method} {path}: the answer is not JSON: {e}"))
            }),
            (status, body) => Err(status_failure(status, &body)),
        }
    }

    async fn request(&self, method: &str, path: &str) -> Result<(u16, Vec<u8>), Failure> {
        let target = format!("{}:{}", self.host, self.port);
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            let host = if self.host.contains(':') {
                format!("[{}]:{}", self.host, self.port)
            } else {
                target.clone()
            };
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.token
            );
            s.write_all(req.as_bytes()).await?;
            let mut buf = Vec::new();
            (&mut s)
                .take(MAX_ANSWER_BYTES as u64 + 1)
                .read_to_end(&mut buf)
                .await?;
            Ok::<_, std::io::Error>(buf)
        };
        let raw = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                Failure::Unreachable(format!(
                    "{target}: no answer within {} s",
                    REQUEST_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| Failure::Unreachable(format!("{target}: {e}")))?;
        if raw.len() > MAX_ANSWER_BYTES {
            return Err(Failure::Refused(format!(
                "{method} {path}: answer larger than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        parse_response(&raw)
            .ok_or_else(|| Failure::Unreachable(format!("{target}: not an HTTP answer")))
    }
}

/// Status and body of a complete HTTP/1.1 response (body by Content-Length, or to the end;
/// the admin API never sends chunked bodies).
fn parse_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(raw.get(..end)?).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.get(end + 4..)?;
    let len = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    let body = match len {
        Some(n) => body.get(..n)?.to_vec(),
        None => body.to_vec(),
    };
    Some((status, body))
}

fn status_failure(status: u16, body: &[u8]) -> Failure {
    // Errors come as RFC 9457 problem details; older servers sent plain text.
    let msg = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    match status {
        401 => Failure::Unreachable("the admin token was refused".into()),
        404 => Failure::NotFound(msg),
        _ => Failure::Refused(format!("{msg} (HTTP {status})")),
    }
}

#[cfg(test)]
#[path = "ctl_test.rs"]
mod tests;
