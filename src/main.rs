//! `edge`: the one binary. `edge ingest` runs an ingest node, `edge balancer` a balancer,
//! `edge dev` an all-in-one local cluster (a balancer and two ingest nodes as child
//! processes) and prints where to publish and play, `edge certs` creates a cluster CA
//! and certificates, `edge config check` validates a config file and prints every problem.

mod ctl;
mod dev;

use std::{path::PathBuf, process::ExitCode};

/// jemalloc, not glibc's malloc: a balancer holds thousands of idle pinned relays for hours,
/// and tokio allocates each task and socket registration 128-byte aligned, which glibc pads
/// (2.1 KiB per idle relay against 1.7 with jemalloc in `cargo bench --bench relay --
/// --memory`). Pingora makes the same choice. GStreamer's own buffers still come from glib.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "edge",
    version,
    about = "Live-streaming ingest edge: RTMP/SRT in, LL-HLS out"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an ingest node.
    Ingest {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a balancer.
    Balancer {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a local cluster: one balancer on the dev ports and two ingest nodes behind it.
    /// With --config, run just one node with that config instead.
    Dev {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Where the dev cluster keeps its certificates and node configs.
        #[arg(long, default_value = "/tmp/edge-dev")]
        dir: PathBuf,
    },
    /// Create a cluster CA and certificates for nodes and balancers.
    Certs {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Node IDs (repeat).
        #[arg(long = "node")]
        nodes: Vec<String>,
        /// Balancer IDs (repeat).
        #[arg(long = "balancer")]
        balancers: Vec<String>,
        /// Days each node and balancer certificate is valid (the CA: 10 years). Issue again
        /// before they expire; the EdgeCertificateExpiringSoon alert fires 14 days ahead.
        #[arg(long, default_value_t = control::certs::DEFAULT_LEAF_VALIDITY_DAYS)]
        days: u32,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Operate the cluster through a balancer's admin API (or one node through its own):
    /// nodes, streams, cordon, drain, kick. Token from EDGE_TOKEN or --token-file.
    Ctl(ctl::CtlArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file (node, or balancer with --balancer); print every problem with
    /// its key path.
    Check {
        file: PathBuf,
        #[arg(long)]
        balancer: bool,
    },
    /// Print the embedded dev config.
    Dev,
}

fn main() -> ExitCode {
    // A hostile input that trips a parser's panic is contained to its connection; without
    // this hook each would print a panic message and backtrace (a log flood).
    wire_contain_hook();
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file, balancer },
        } => {
            let r = if balancer {
                edge_config::load_balancer_file(&file).map(|c| format!("balancer {}", c.id))
            } else {
                edge_config::load_file(&file)
                    .map(|c| format!("{} stream(s), {} rung(s)", c.streams.len(), c.ladder.len()))
            };
            match r {
                Ok(what) => {
                    println!("{}: ok ({what})", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    for line in e.lines() {
                        eprintln!("{line}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config {
            command: ConfigCommand::Dev,
        } => {
            print!("{}", edge_config::DEV_CONFIG);
            ExitCode::SUCCESS
        }
        Command::Certs {
            out,
            nodes,
            balancers,
            days,
        } => match control::certs::write_cluster_for(&out, &nodes, &balancers, days) {
            Ok(()) => {
                println!(
                    "wrote ca.pem, ca.key and {} certificate(s) valid for {days} days to {}",
                    nodes.len() + balancers.len(),
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("edge certs: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Ctl(args) => ctl::run(args),
        Command::Balancer { config } => run_balancer(config),
        Command::Ingest { config } => run_node(Some(config), false),
        Command::Dev {
            config: Some(config),
            ..
        } => run_node(Some(config), true),
        Command::Dev { config: None, dir } => {
            init_tracing();
            runtime()
                .and_then(|rt| rt.block_on(dev::run(dir)).map_err(|e| format!("{e:#}")))
                .map_or_else(
                    |e| {
                        eprintln!("edge dev: {e}");
                        ExitCode::FAILURE
                    },
                    |()| ExitCode::SUCCESS,
                )
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))
}

fn run_balancer(path: PathBuf) -> ExitCode {
    init_tracing();
    let cfg = match edge_config::load_balancer_file(&path) {
        Ok(c) => c,
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            return ExitCode::FAILURE;
        }
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(balancer_main(cfg, Some(path))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Run a balancer: take over from the one listening on `balancer.handover_socket` if any,
/// else bind. SIGHUP reloads `path`; SIGUSR2 starts this binary again (the file at the path
/// recorded at start, so replacing it and sending SIGUSR2 upgrades) and hands everything to
/// it; SIGTERM or SIGINT drains (no new encoders, live ones relay on until they end or
/// `balancer.drain_deadline`), and a second one stops at once. After handing over, the
/// process idles until SIGTERM or SIGINT.
pub(crate) async fn balancer_main(
    cfg: edge_config::BalancerConfig,
    path: Option<PathBuf>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let fds = server::raise_fd_limit();
    tracing::info!(
        open_files_limit = fds,
        "descriptor limit (two per relayed connection, as many again for a hand-over)"
    );
    // Recorded now: once the file is replaced, /proc/self/exe reads "(deleted)".
    let exe = std::env::current_exe().ok();
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let sock = cfg.handover_socket.clone();
    let taken = tokio::task::spawn_blocking(move || balancer::handover::take_over(&sock))
        .await
        .context("hand-over thread")?;
    let start = match taken {
        Ok(Some(i)) => balancer::Start::Inherited(Box::new(i)),
        Ok(None) => balancer::Start::Fresh(balancer::Listeners::bind(&cfg).await?),
        Err(e) => {
            return Err(anyhow::anyhow!(
                "{e}; the running balancer keeps serving every connection"
            ))
        }
    };
    let stop = CancellationToken::new();
    let mut hup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    let mut usr2 = signal(SignalKind::user_defined2()).context("cannot install SIGUSR2 handler")?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let run = balancer::run(cfg.clone(), start, stop.clone(), move |r| {
        let _ = tx.send(r);
    });
    tokio::pin!(run);
    let mut running: Option<balancer::Running> = None;
    let mut current = cfg;
    let mut rx = Some(rx);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = &mut run => return r.map_err(Into::into),
            r = async { match rx.as_mut() { Some(rx) => rx.await.ok(), None => std::future::pending().await } }, if rx.is_some() => {
                running = r;
                rx = None;
                // Serving now (fresh, or after taking over): systemd's main process is us.
                sd_notify_main_pid();
            }
            _ = hup.recv() => {
                let Some(p) = &path else { continue };
                match edge_config::load_balancer_file(p) {
                    Ok(new) => {
                        if let Some(r) = &running {
                            r.reload(&current, &new);
                        }
                        current = new;
                    }
                    Err(e) => {
                        for line in e.lines() {
                            tracing::error!(problem = %line, "config reload refused; keeping the running config");
                        }
                    }
                }
            }
            _ = usr2.recv() => {
                let Some(exe) = &exe else {
                    tracing::error!("SIGUSR2: the path of this binary is unknown; start the new balancer by hand");
                    continue;
                };
                match std::process::Command::new(exe).args(&args).spawn() {
                    Ok(mut child) => {
                        tracing::info!(pid = child.id(), binary = %exe.display(), "SIGUSR2: started a successor; it takes over");
                        // Reap it whenever it ends, so it never lingers as a zombie.
                        std::thread::spawn(move || {
                            let _ = child.wait();
                        });
                    }
                    Err(e) => tracing::error!(binary = %exe.display(), error = %e, "SIGUSR2: cannot start a successor"),
                }
            }
            _ = async { tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} } } => {
                let handed_over = running.as_ref().is_some_and(|r| r.balancer.handed_over.is_cancelled());
                if stopping || running.is_none() {
                    stop.cancel();
                    continue;
                }
                stopping = true;
                if let Some(r) = running.as_ref().filter(|_| handed_over) {
                    // Idle after a hand-over: let viewers' last requests here finish, then go.
                    let b = std::sync::Arc::clone(&r.balancer);
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        b.wind_down().await;
                        stop.cancel();
                    });
                } else if let Some(r) = &running {
                    let b = std::sync::Arc::clone(&r.balancer);
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        b.drain().await;
                        stop.cancel();
                    });
                }
            }
        }
    }
}

/// Under systemd (`Type=notify`, `NotifyAccess=all`), tell it that this process is now the
/// balancer's main process: a reload (SIGUSR2) moved the service to it.
fn sd_notify_main_pid() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let msg = format!("MAINPID={}\nREADY=1\n", std::process::id());
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)
            .and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
    } else {
        sock.send_to(msg.as_bytes(), std::path::Path::new(&path))
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd of the new main PID");
    }
}

fn run_node(path: Option<PathBuf>, dev: bool) -> ExitCode {
    init_tracing();
    let cfg = match &path {
        Some(p) => edge_config::load_file(p),
        None => edge_config::load_str(edge_config::DEV_CONFIG, "<embedded dev config>"),
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(node_main(cfg, path, dev)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn node_main(
    cfg: edge_config::Config,
    path: Option<PathBuf>,
    dev: bool,
) -> anyhow::Result<()> {
    let fds = server::raise_fd_limit();
    tracing::info!(
        open_files_limit = fds,
        "descriptor limit (one per connection)"
    );
    let listeners = ingest::Listeners::bind(&cfg).await?;
    if dev {
        print_dev_urls(&cfg);
    }
    let drain = CancellationToken::new();
    let stop = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    spawn_signal_handlers(drain.clone(), stop.clone(), path, ready_rx)
        .context("cannot install signal handlers")?;
    ingest::run(cfg, listeners, drain, stop, move |node| {
        let _ = ready_tx.send(node);
    })
    .await?;
    Ok(())
}

/// SIGTERM drains (stop taking streams, keep the live ones); SIGINT or a second SIGTERM stops;
/// SIGHUP reloads `path` into the running node (a broken file is refused and the running
/// config kept; no stream is touched).
fn spawn_signal_handlers(
    drain: CancellationToken,
    stop: CancellationToken,
    path: Option<PathBuf>,
    ready: tokio::sync::oneshot::Receiver<std::sync::Arc<ingest::Node>>,
) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut ready = Some(ready);
        let mut node: Option<std::sync::Arc<ingest::Node>> = None;
        loop {
            tokio::select! {
                n = async { match ready.as_mut() { Some(r) => r.await.ok(), None => std::future::pending().await } }, if ready.is_some() => {
                    node = n;
                    ready = None;
                }
                _ = hup.recv() => {
                    let (Some(p), Some(n)) = (&path, &node) else {
                        tracing::warn!("SIGHUP: nothing to reload (no config file, or the node is still starting)");
                        continue;
                    };
                    match edge_config::load_file(p) {
                        Ok(new) => n.reload(&new),
                        Err(e) => {
                            for line in e.lines() {
                                tracing::error!(problem = %line, "config reload refused; keeping the running config");
                            }
                        }
                    }
                }
                _ = term.recv() => {
                    if drain.is_cancelled() {
                        stop.cancel();
                    } else {
                        tracing::info!("SIGTERM: draining");
                        drain.cancel();
                    }
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: stopping");
                    stop.cancel();
                }
            }
        }
    });
    Ok(())
}

fn print_dev_urls(cfg: &edge_config::Config) {
    let host = |a: std::net::SocketAddr| {
        if a.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            a.ip().to_string()
        }
    };
    let l = &cfg.listen;
    println!("edge dev: node {} is up", cfg.node.id);
    for s in &cfg.streams {
        println!(
            "  publish (RTMP): rtmp://{}:{}/live/{}",
            host(l.rtmp),
            l.rtmp.port(),
            s.key
        );
        println!(
            "  publish (SRT):  srt://{}:{}?streamid=#!::r=live/{},m=publish",
            host(l.srt),
            l.srt.port(),
            s.key
        );
        println!(
            "  play (LL-HLS):  http://{}:{}/live/{}/index.m3u8",
            host(l.http),
            l.http.port(),
            s.playback_id
        );
    }
    println!(
        "  admin:          http://{}:{}/api/v1/streams (Authorization: Bearer <admin.token>)",
        host(l.admin),
        l.admin.port()
    );
    println!("  try: ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440 -c:v libx264 -preset veryfast -tune zerolatency -g 60 -c:a aac -f flv rtmp://127.0.0.1:{}/live/{}", l.rtmp.port(), cfg.streams.first().map(|s| s.key.as_str()).unwrap_or("KEY"));
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

fn wire_contain_hook() {
    wire::contain::install_quiet_hook();
}
