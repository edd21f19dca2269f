//! `courier-envd`: the E2B-compatible daemon inside every Courier sandbox.
//! Parses flags and serves [`courier_envd::Envd`]; all behaviour lives in the library.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "courier-envd",
    version,
    about = "E2B-compatible envd for Courier sandboxes"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:49983", conflicts_with = "socket")]
    listen: String,
    /// Serve on this Unix socket instead of TCP.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Serve on an inherited Unix stream socket (bound by the control plane; envd calls
    /// `listen()` on it).
    #[arg(long, conflicts_with = "socket")]
    listen_fd: Option<i32>,
    /// User for requests that name none (default: `user` when it exists, else the current user).
    #[arg(long)]
    default_user: Option<String>,
    /// Require this token in `X-Access-Token` (can also be set later with `POST /init`).
    #[arg(long, env = "COURIER_ENVD_ACCESS_TOKEN", hide_env_values = true)]
    access_token: Option<String>,
    /// Largest upload accepted by `POST /files`, in bytes.
    #[arg(long, default_value_t = 4 << 30)]
    max_upload_bytes: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let default_user = args.default_user.unwrap_or_else(|| {
        if courier_envd::users::UserDb::load().user("user").is_some() {
            "user".to_owned()
        } else {
            courier_envd::users::current_user_name()
        }
    });
    let mut builder = courier_envd::Envd::builder()
        .default_user(default_user)
        .max_upload_bytes(args.max_upload_bytes);
    if let Some(token) = args.access_token.filter(|t| !t.is_empty()) {
        builder = builder.access_token(token);
    }
    let envd = builder.build();
    if let Some(fd) = args.listen_fd {
        let listener = inherited_listener(fd).with_context(|| format!("--listen-fd {fd}"))?;
        tracing::info!(
            fd,
            version = courier_envd::ENVD_VERSION,
            "courier-envd listening"
        );
        envd.serve_unix(listener).await.context("serving")?;
    } else if let Some(socket) = args.socket {
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket)
            .with_context(|| format!("binding unix socket {}", socket.display()))?;
        tracing::info!(socket = %socket.display(), version = courier_envd::ENVD_VERSION, "courier-envd listening");
        envd.serve_unix(listener).await.context("serving")?;
    } else {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        tracing::info!(address = %args.listen, version = courier_envd::ENVD_VERSION, "courier-envd listening");
        envd.serve(listener).await.context("serving")?;
    }
    Ok(())
}

/// The Unix socket the control plane handed over as descriptor `fd`.
#[allow(unsafe_code)]
fn inherited_listener(fd: i32) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::fd::FromRawFd as _;
    anyhow::ensure!(fd > 2, "must be a descriptor above 2");
    // SAFETY: the control plane passed this descriptor to us and nothing else in this
    // process refers to it; it is taken once, here.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    nix::sys::socket::listen(&owned, nix::sys::socket::Backlog::new(1024)?)?;
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    let std = std::os::unix::net::UnixListener::from(owned);
    std.set_nonblocking(true)?;
    Ok(tokio::net::UnixListener::from_std(std)?)
}
