//! `edge`: the one binary. `edge ingest` runs an ingest node, `edge dev` runs one with the
//! embedded dev config and prints where to publish and play, `edge config check` validates a
//! config file and prints every problem.

use std::{path::PathBuf, process::ExitCode};

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
    /// Run a local node with the embedded dev config (or --config) and print its URLs.
    Dev {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file; print every problem with its key path.
    Check { file: PathBuf },
    /// Print the embedded dev config.
    Dev,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match edge_config::load_file(&file) {
            Ok(c) => {
                println!(
                    "{}: ok ({} stream(s), {} rung(s))",
                    file.display(),
                    c.streams.len(),
                    c.ladder.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                for line in e.lines() {
                    eprintln!("{line}");
                }
                ExitCode::FAILURE
            }
        },
        Command::Config {
            command: ConfigCommand::Dev,
        } => {
            print!("{}", edge_config::DEV_CONFIG);
            ExitCode::SUCCESS
        }
        Command::Ingest { config } => run_node(Some(config), false),
        Command::Dev { config } => run_node(config, true),
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
    match rt.block_on(node_main(cfg, dev)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn node_main(cfg: edge_config::Config, dev: bool) -> anyhow::Result<()> {
    let listeners = ingest::Listeners::bind(&cfg).await?;
    if dev {
        print_dev_urls(&cfg);
    }
    let drain = CancellationToken::new();
    let stop = CancellationToken::new();
    spawn_signal_handlers(drain.clone(), stop.clone()).context("cannot install signal handlers")?;
    ingest::run(cfg, listeners, drain, stop).await?;
    Ok(())
}

/// SIGTERM drains (stop taking streams, keep the live ones); SIGINT or a second SIGTERM stops.
fn spawn_signal_handlers(drain: CancellationToken, stop: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
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
