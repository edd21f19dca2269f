//! `courier-sandboxd`: Courier's local E2B-compatible sandbox server.
//! Parses flags and wires [`courier_sandboxd::Sandboxd`]; all behaviour lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    // Boxed: the flags make it much larger than the other commands.
    Serve(Box<ServeArgs>),
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
    /// How sandboxes are isolated unless their template says otherwise: `gvisor` (a kernel
    /// of their own) or `container` (namespaces around the host kernel). Default: gvisor
    /// where runsc is installed and works, else container (the reason is logged).
    #[arg(long, env = "COURIER_SANDBOXD_ISOLATION", value_parser = ["gvisor", "container"])]
    isolation: Option<String>,
    /// The runsc binary for gVisor sandboxes (default: `runsc` on PATH).
    #[arg(long, env = "COURIER_SANDBOXD_RUNSC")]
    runsc: Option<PathBuf>,
    /// Let sandboxes create namespaces of their own (nested user namespaces, e.g. for
    /// rootless containers inside); off by default.
    #[arg(long, env = "COURIER_SANDBOXD_NESTED_NAMESPACES")]
    nested_namespaces: bool,
    /// Sandbox disks kept ready (copied, attached, mounted) per disk size in use, so that
    /// creates skip that work (~4 ms each); 0 turns it off.
    #[arg(long, env = "COURIER_SANDBOXD_READY_DISKS", default_value_t = courier_sandboxd::runtime::DEFAULT_READY_DISKS)]
    ready_disks: usize,
    /// gVisor sandboxes kept started per recently created shape (template, memory, CPUs,
    /// internet), so a create takes one instead of waiting for runsc (~0.2 s); 0 turns it
    /// off.
    #[arg(long, env = "COURIER_SANDBOXD_WARM_SANDBOXES", default_value_t = courier_sandboxd::server::DEFAULT_WARM_SANDBOXES)]
    warm_sandboxes: usize,
    /// Size of each volume in MiB (64 or more): a hard limit for the content API and for
    /// sandboxes writing through a mount alike.
    #[arg(long, env = "COURIER_SANDBOXD_VOLUME_MB", default_value_t = courier_sandboxd::volumes::DEFAULT_VOLUME_MB)]
    volume_mb: u64,
    /// Total size in MiB of the volumes one API key may own; a create past it is refused
    /// (507).
    #[arg(long, env = "COURIER_SANDBOXD_VOLUME_QUOTA_MB", default_value_t = courier_sandboxd::volumes::DEFAULT_PER_KEY_MB)]
    volume_quota_mb: u64,
    /// A TOML file with the settings above (`isolation`, `runsc`, `nested_namespaces`,
    /// `domain`); a flag or environment variable beats the file.
    #[arg(long, env = "COURIER_SANDBOXD_CONFIG")]
    config: Option<PathBuf>,
    /// An internal range networked sandboxes may reach anyway (repeatable, or a comma
    /// list in the environment variable). Loopback, link-local (cloud metadata), private,
    /// CGNAT and this host's own addresses are refused otherwise, whatever a sandbox's
    /// own rules say; e.g. `--egress-allow 10.1.2.3/32` for a package mirror. With a port
    /// (`10.1.2.3:8080`, `10.0.0.0/8:443`, `[fd00::1]:8080`) only that TCP port opens.
    #[arg(
        long = "egress-allow",
        value_name = "CIDR[:PORT]",
        env = "COURIER_SANDBOXD_EGRESS_ALLOW",
        value_delimiter = ','
    )]
    egress_allow: Vec<courier_sandboxd::egress::OperatorAllow>,
    /// A PEM file of extra roots (repeatable) that a destination's certificate may chain
    /// to when TLS to a host with `network.rules` transforms is intercepted; the host's
    /// own roots are always trusted. E.g. an internal CA of the hosts rules name.
    #[arg(long = "egress-upstream-ca", value_name = "PEM")]
    egress_upstream_ca: Vec<PathBuf>,
    /// Pull `fromImage` images of a registry from a mirror instead, as
    /// `REGISTRY=URL` (repeatable, or a comma list in the environment variable), e.g.
    /// `docker.io=http://127.0.0.1:5000`. Plain HTTP only to a loopback address.
    #[arg(
        long = "registry-mirror",
        value_name = "REGISTRY=URL",
        env = "COURIER_SANDBOXD_REGISTRY_MIRROR",
        value_delimiter = ','
    )]
    registry_mirror: Vec<String>,
    /// Let `fromImage` pulls reach a registry at a non-public address (loopback,
    /// private, link-local...), as `HOST[:PORT]` (repeatable, or a comma list in the
    /// environment variable), e.g. `127.0.0.1:5000` for a local mirror. Pulls reach
    /// public addresses only otherwise.
    #[arg(
        long = "registry-allow",
        value_name = "HOST[:PORT]",
        env = "COURIER_SANDBOXD_REGISTRY_ALLOW",
        value_delimiter = ','
    )]
    registry_allow: Vec<String>,
    /// Most bytes one `fromImage` image may unpack to.
    /// A host directory bound read-only into every sandbox, as `HOST_DIR:SANDBOX_DIR`
    /// (repeatable; both absolute), e.g. tools every sandbox may run. Sandboxes cannot
    /// write it; every sandbox of every API key sees it.
    #[arg(long = "share", value_name = "HOST_DIR:SANDBOX_DIR", value_parser = parse_share)]
    share: Vec<courier_sandboxd::SharedDir>,
    #[arg(
        long = "image-max-bytes",
        env = "COURIER_SANDBOXD_IMAGE_MAX_BYTES",
        default_value_t = courier_sandboxd::images::DEFAULT_MAX_UNPACKED_BYTES
    )]
    image_max_bytes: u64,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Settings a `--config` file may hold.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    isolation: Option<String>,
    runsc: Option<PathBuf>,
    nested_namespaces: Option<bool>,
    domain: Option<String>,
}

impl FileConfig {
    fn load(path: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
    }
}

/// Server-wide limits (see `courier_sandboxd::limits`); a create past the capacity
/// answers 429 naming the limit.
#[derive(Debug, clap::Args)]
struct LimitArgs {
    /// Most sandboxes at once (running and paused, template build sandboxes included).
    #[arg(long, env = "COURIER_SANDBOXD_MAX_SANDBOXES", default_value_t = courier_sandboxd::limits::DEFAULT_MAX_SANDBOXES,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_sandboxes: u32,
    /// Most committed memory in MiB: the sum of the sandboxes' `memoryMB` [default: the
    /// host's MemTotal].
    #[arg(long, env = "COURIER_SANDBOXD_MAX_MEMORY_MB", value_parser = clap::value_parser!(u64).range(128..))]
    max_memory_mb: Option<u64>,
    /// Deadline of each template build step (RUN, COPY, USER, WORKDIR), in seconds.
    #[arg(long, env = "COURIER_SANDBOXD_TEMPLATE_STEP_TIMEOUT", default_value_t = courier_sandboxd::limits::DEFAULT_TEMPLATE_STEP_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    template_step_timeout: u64,
    /// How long a template's ready command may keep failing, in seconds: at the end of its
    /// build and at each create of its sandboxes (the start/ready step's deadline).
    #[arg(long, env = "COURIER_SANDBOXD_TEMPLATE_READY_TIMEOUT", default_value_t = courier_sandboxd::templates::build::READY_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    template_ready_timeout: u64,
    /// Deadline of a whole template build, in seconds.
    #[arg(long, env = "COURIER_SANDBOXD_TEMPLATE_BUILD_TIMEOUT", default_value_t = courier_sandboxd::limits::DEFAULT_TEMPLATE_BUILD_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=courier_sandboxd::server::MAX_TIMEOUT.as_secs()))]
    template_build_timeout: u64,
    /// Largest COPY upload (`PUT /templates/{id}/files/{hash}`), in bytes.
    #[arg(long, env = "COURIER_SANDBOXD_MAX_UPLOAD_BYTES", default_value_t = courier_sandboxd::limits::DEFAULT_MAX_UPLOAD_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_upload_bytes: u64,
    /// Largest total of stored COPY uploads, in bytes.
    #[arg(long, env = "COURIER_SANDBOXD_MAX_UPLOADS_TOTAL_BYTES", default_value_t = courier_sandboxd::limits::DEFAULT_MAX_UPLOADS_TOTAL_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_uploads_total_bytes: u64,
}

impl LimitArgs {
    fn limits(&self) -> courier_sandboxd::ServerLimits {
        courier_sandboxd::ServerLimits {
            max_sandboxes: self.max_sandboxes,
            max_memory_mb: self.max_memory_mb,
            template_step_timeout: Duration::from_secs(self.template_step_timeout),
            template_build_timeout: Duration::from_secs(self.template_build_timeout),
            max_upload_bytes: self.max_upload_bytes,
            max_uploads_total_bytes: self.max_uploads_total_bytes,
        }
    }
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

/// `--share HOST_DIR:SANDBOX_DIR`: an existing host directory, an absolute sandbox path
/// without `..`, always read-only.
fn parse_share(value: &str) -> anyhow::Result<courier_sandboxd::SharedDir> {
    use std::path::{Component, Path};
    let (host, sandbox) = value
        .split_once(':')
        .context("expected HOST_DIR:SANDBOX_DIR, both absolute paths")?;
    let (host, sandbox) = (Path::new(host), Path::new(sandbox));
    if !host.is_absolute() || !sandbox.is_absolute() {
        anyhow::bail!("expected HOST_DIR:SANDBOX_DIR, both absolute paths");
    }
    if sandbox.components().any(|c| c == Component::ParentDir) {
        anyhow::bail!("SANDBOX_DIR {} must not contain `..`", sandbox.display());
    }
    if !host.is_dir() {
        anyhow::bail!("HOST_DIR {} is not a directory", host.display());
    }
    Ok(courier_sandboxd::SharedDir {
        host: host.to_path_buf(),
        sandbox: sandbox.to_path_buf(),
        read_only: true,
    })
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
            .block_on(serve(*args)),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let file = FileConfig::load(args.config.as_deref())?;
    let mut config = ServerConfig::new(&args.data_dir, envd_binary(args.envd_binary)?);
    config.domain = args.domain.or(file.domain);
    config.isolation = match args.isolation.or(file.isolation) {
        Some(name) => Some(
            name.parse()
                .map_err(|e| anyhow::anyhow!("isolation: {e}"))?,
        ),
        None => None,
    };
    config.runsc = args.runsc.or(file.runsc);
    config.nested_namespaces = args.nested_namespaces || file.nested_namespaces.unwrap_or(false);
    config.ready_disks = args.ready_disks;
    config.warm_sandboxes = args.warm_sandboxes;
    config.volumes = courier_sandboxd::volumes::VolumeLimits {
        size_mb: args.volume_mb,
        per_key_mb: args.volume_quota_mb,
    };
    config.dev_api_key = args.dev_api_key.filter(|k| !k.is_empty());
    config.limits = args.limits.limits();
    config.template_ready_timeout = Duration::from_secs(args.limits.template_ready_timeout);
    config.egress_allow = args.egress_allow;
    config.egress_upstream_roots = args.egress_upstream_ca;
    config.shared_dirs.extend(args.share);
    config.images.max_unpacked_bytes = args.image_max_bytes;
    for mirror in &args.registry_mirror {
        config
            .images
            .add_mirror_arg(mirror)
            .with_context(|| format!("--registry-mirror {mirror}"))?;
    }
    for allow in &args.registry_allow {
        config
            .images
            .add_allow_arg(allow)
            .with_context(|| format!("--registry-allow {allow}"))?;
    }
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
    let capacity = server.capacity();
    tracing::info!(
        api = %args.api_addr,
        proxy = %args.proxy_addr,
        max_sandboxes = capacity.max_sandboxes,
        max_memory_mb = capacity.max_memory_mb,
        "courier-sandboxd listening"
    );

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            // An error means the sender is gone, i.e. the process is stopping anyway.
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
    // Fails only when both servers have ended already: nothing left to stop.
    let _ = stop.send(true);
    server.stop();
    if args.kill_on_exit {
        server.kill_all().await;
    } else {
        // Their builds end with this process: no build sandbox outlives its build.
        courier_sandboxd::templates::build::kill_build_sandboxes(&server).await;
        // Kills answered already finish their cleanup (a crash would leave it to the
        // next start).
        server.finish_cleanups().await;
    }
    for (name, task) in [("api", api_task), ("proxy", proxy_task)] {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(server = name, %error, "serving ended with an error"),
            Err(error) => tracing::warn!(server = name, %error, "the serving task failed"),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A shared dir is an operator's: a sandbox (attacker 1) must not be able to write
    /// into the host directory, so `--share` is read-only whatever the value says, and a
    /// sandbox path cannot climb out of the sandbox's root with `..`.
    #[test]
    fn share_is_read_only_and_takes_only_absolute_paths_without_dotdot() {
        let dir = std::env::temp_dir();
        let host = dir.to_str().unwrap();
        let shared = parse_share(&format!("{host}:/opt/tools")).unwrap();
        assert_eq!(shared.host, dir);
        assert_eq!(shared.sandbox, PathBuf::from("/opt/tools"));
        assert!(shared.read_only);
        for bad in [
            host.to_owned(),
            format!("{host}:opt/tools"),
            "tmp:/opt/tools".to_owned(),
            format!("{host}:/opt/../etc"),
            "/nonexistent-courier-dir:/opt/tools".to_owned(),
        ] {
            assert!(parse_share(&bad).is_err(), "{bad} was accepted");
        }
        let cli = Cli::try_parse_from([
            "courier-sandboxd",
            "serve",
            "--data-dir",
            "/tmp/d",
            "--share",
            &format!("{host}:/opt/a"),
            "--share",
            &format!("{host}:/opt/b"),
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.share.len(), 2);
    }
}
