//! `courier-sandboxd`: Courier's local E2B-compatible sandbox server.
//! Parses flags and wires [`courier_sandboxd::Sandboxd`]; all behaviour lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use courier_sandboxd::{Sandboxd, ServerConfig};

/// Command-line interface.
#[derive(Debug, Parser)]
#[command(
    name = "courier-sandboxd",
    version,
    about = "Local E2B-compatible sandbox server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the control plane and the sandbox proxy.
    Serve(ServeArgs),
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Data directory (sandboxes, layers, records, keys).
    #[arg(long)]
    data_dir: PathBuf,
    /// Address of the REST control plane (what `E2B_API_URL` points at).
    #[arg(long, default_value = "127.0.0.1:3000")]
    api_addr: SocketAddr,
    /// Address of the sandbox proxy (what `E2B_SANDBOX_URL` points at).
    #[arg(long, default_value = "127.0.0.1:3001")]
    proxy_addr: SocketAddr,
    /// Domain of sandbox hosts (`<port>-<id>.<domain>`), returned to clients.
    #[arg(long)]
    domain: Option<String>,
    /// A fixed API key accepted besides the stored ones (development and tests).
    #[arg(long, env = "COURIER_SANDBOXD_API_KEY", hide_env_values = true)]
    dev_api_key: Option<String>,
    /// The courier-envd binary (default: `courier-envd` next to this executable).
    #[arg(long)]
    envd_binary: Option<PathBuf>,
    /// Kill every sandbox when the server stops (default: they survive and are found
    /// again by the next start).
    #[arg(long)]
    kill_on_exit: bool,
    /// An internal range networked sandboxes may reach anyway (repeatable, or a comma
    /// list in the environment variable). Loopback, link-local (cloud metadata), private,
    /// CGNAT and this host's own addresses are refused otherwise, whatever a sandbox's
    /// own rules say; e.g. `--egress-allow 10.1.2.3/32` for a package mirror.
    #[arg(
        long = "egress-allow",
        value_name = "CIDR",
        env = "COURIER_SANDBOXD_EGRESS_ALLOW",
        value_delimiter = ','
    )]
    egress_allow: Vec<courier_sandboxd::egress::Cidr>,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create an API key, store its hash and print it.
    Create {
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn envd_binary(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = flag {
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locating the current executable")?;
    let sibling = exe.with_file_name("courier-envd");
    if sibling.is_file() {
        return Ok(sibling);
    }
    anyhow::bail!(
        "no courier-envd next to {} ; pass --envd-binary PATH",
        exe.display()
    )
}

fn main() -> anyhow::Result<()> {
    // The runtime re-executes this binary as its sandbox helper: that must happen before
    // anything else (no threads, no tokio).
    courier_sandboxd::runtime::init::main_if_requested();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Keys {
            command: KeysCommand::Create { data_dir },
        } => {
            let key = courier_sandboxd::keys::create_key(&data_dir).context("creating a key")?;
            println!("{key}");
            Ok(())
        }
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting tokio")?
            .block_on(serve(args)),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = ServerConfig::new(&args.data_dir, envd_binary(args.envd_binary)?);
    config.domain = args.domain;
    config.dev_api_key = args.dev_api_key.filter(|k| !k.is_empty());
    config.egress_allow = args.egress_allow;
    if !config.egress_allow.is_empty() {
        let ranges: Vec<String> = config
            .egress_allow
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::info!(ranges = %ranges.join(", "), "sandboxes may reach these internal ranges");
    }
    let api = tokio::net::TcpListener::bind(args.api_addr)
        .await
        .with_context(|| format!("binding {}", args.api_addr))?;
    let proxy = tokio::net::TcpListener::bind(args.proxy_addr)
        .await
        .with_context(|| format!("binding {}", args.proxy_addr))?;
    let server = Sandboxd::start(config).await.context("starting")?;
    tracing::info!(api = %args.api_addr, proxy = %args.proxy_addr, "courier-sandboxd listening");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let api_task = tokio::spawn({
        let server = server.clone();
        let until = until_stopped();
        async move { server.serve_api(api, until).await }
    });
    let proxy_task = tokio::spawn({
        let server = server.clone();
        let until = until_stopped();
        async move { server.serve_proxy(proxy, until).await }
    });
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    server.stop();
    if args.kill_on_exit {
        server.kill_all().await;
    }
    let _ = api_task.await;
    let _ = proxy_task.await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
