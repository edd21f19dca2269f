//! `courier-envd`: the E2B-compatible daemon inside every Courier sandbox.
//! Parses flags and serves [`courier_envd::Envd`]; all behaviour lives in the library.
//!
//! Three ways to serve: `--listen-fd N` (a socket the control plane bound and handed
//! over, how courier-sandboxd runs it), `--socket PATH`, or TCP (`--listen`, loopback by
//! default). TCP refuses to start without an access token unless told
//! `--insecure-no-token`: whoever reaches the port runs commands and reads and writes
//! files as any user of the machine, and the first `POST /init` would set the token.
//!
//! Executed under the name `sudo` (a second bind of this binary at
//! `/usr/local/bin/sudo`), it is instead the sudo client of the privilege broker that
//! `--sudo-socket` starts ([`courier_envd::sudo`]): gVisor ignores setuid bits.

use std::{os::fd::RawFd, path::PathBuf};

use anyhow::Context as _;
use clap::Parser;

/// The address `--listen` uses when not given (E2B's envd port, loopback only).
const DEFAULT_LISTEN: &str = "127.0.0.1:49983";

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "courier-envd",
    version,
    about = "E2B-compatible envd for Courier sandboxes"
)]
struct Args {
    /// TCP address to listen on (loopback by default; needs --access-token or
    /// --insecure-no-token).
    #[arg(long, default_value = DEFAULT_LISTEN, conflicts_with_all = ["socket", "listen_fd"])]
    listen: String,
    /// Serve on this Unix socket instead of TCP.
    #[arg(long, conflicts_with = "listen_fd")]
    socket: Option<PathBuf>,
    /// Serve on an inherited Unix stream socket: descriptor N, bound by the parent
    /// (courier-sandboxd); envd calls listen() on it itself.
    #[arg(long, value_name = "N")]
    listen_fd: Option<RawFd>,
    /// User for requests that name none (default: `user` when it exists, else the current user).
    #[arg(long)]
    default_user: Option<String>,
    /// Require this token in `X-Access-Token` (can also be set later with `POST /init`).
    #[arg(long, env = "COURIER_ENVD_ACCESS_TOKEN", hide_env_values = true)]
    access_token: Option<String>,
    /// Serve TCP without an access token (the E2B SDK's debug mode, local development
    /// only): anyone who can connect acts as any user.
    #[arg(long, conflicts_with = "access_token")]
    insecure_no_token: bool,
    /// Largest upload accepted by `POST /files`, in bytes.
    #[arg(long, default_value_t = 4 << 30)]
    max_upload_bytes: u64,
    /// Also serve sudo for the sandbox's users: a privilege broker on the abstract Unix
    /// socket @NAME (default `courier-sudo`), for this binary run as `sudo`. For sandboxes
    /// whose kernel ignores setuid bits (gVisor). Needs root.
    #[arg(
        long,
        value_name = "NAME",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = courier_envd::sudo::DEFAULT_SOCKET_NAME
    )]
    sudo_socket: Option<String>,
    /// Keep file metadata in this root-only file where the file system has no user
    /// extended attributes (gVisor's gofer before 2026-05); needs root. Off by default:
    /// metadata then lives in `user.e2b.*` xattrs only.
    #[arg(long, value_name = "FILE")]
    metadata_store: Option<PathBuf>,
}

/// Where to serve.
#[derive(Debug, PartialEq, Eq)]
enum Mode {
    Tcp(String),
    Socket(PathBuf),
    Fd(RawFd),
}

impl Args {
    /// The serving mode, or why these flags must not start a daemon.
    fn mode(&self) -> anyhow::Result<Mode> {
        if let Some(fd) = self.listen_fd {
            return Ok(Mode::Fd(fd));
        }
        if let Some(socket) = &self.socket {
            return Ok(Mode::Socket(socket.clone()));
        }
        let has_token = self.access_token.as_deref().is_some_and(|t| !t.is_empty());
        if !has_token && !self.insecure_no_token {
            anyhow::bail!(
                "refusing to serve TCP on {} without an access token: pass --access-token \
                 (or set COURIER_ENVD_ACCESS_TOKEN), or --insecure-no-token to serve without \
                 one (local development only: whoever reaches the port runs commands as any \
                 user and the first POST /init sets the token)",
                self.listen
            );
        }
        Ok(Mode::Tcp(self.listen.clone()))
    }
}

fn main() -> anyhow::Result<()> {
    if std::env::args_os()
        .next()
        .is_some_and(|argv0| courier_envd::sudo::invoked_as_sudo(&argv0))
    {
        std::process::exit(courier_envd::sudo::client_main());
    }
    serve()
}

#[tokio::main]
async fn serve() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mode = args.mode()?;
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
    let version = courier_envd::ENVD_VERSION;
    if let Some(file) = args.metadata_store {
        courier_envd::filesystem::meta_store::enable(file.clone())
            .with_context(|| format!("--metadata-store {}", file.display()))?;
    }
    if let Some(name) = &args.sudo_socket {
        // Bound before anything is served: no process of the sandbox exists yet that
        // could have taken the name first.
        let broker = courier_envd::sudo::Broker::bind(name)
            .with_context(|| format!("--sudo-socket: binding @{name}"))?;
        tokio::spawn(async move {
            if let Err(e) = broker.serve().await {
                tracing::error!(error = %e, "sudo broker stopped; sudo will not work");
            }
        });
    }
    match mode {
        Mode::Fd(fd) => {
            let listener = courier_envd::listener::unix_listener_from_fd(inherited::take(fd)?)
                .with_context(|| format!("--listen-fd {fd}"))?;
            tracing::info!(
                fd,
                version,
                "courier-envd listening on the inherited socket"
            );
            envd.serve_unix(listener).await.context("serving")?;
        }
        Mode::Socket(socket) => {
            // A socket left by an earlier run is replaced. This is how gVisor sandboxes
            // run envd, so the socket can be let go of for a checkpoint (SIGUSR2) and
            // bound again (SIGUSR1): see courier_envd::checkpoint.
            tracing::info!(socket = %socket.display(), version, "courier-envd listening");
            envd.serve_unix_checkpointable(socket.clone())
                .await
                .with_context(|| format!("--socket {}", socket.display()))?;
        }
        Mode::Tcp(address) => {
            let listener = tokio::net::TcpListener::bind(&address)
                .await
                .with_context(|| format!("--listen: binding {address}"))?;
            let address = listener.local_addr().map_or(address, |a| a.to_string());
            if args.insecure_no_token {
                tracing::warn!(
                    %address,
                    "SERVING WITHOUT AN ACCESS TOKEN (--insecure-no-token): anyone who can \
                     connect runs commands and reads and writes files as any user, and the \
                     first POST /init sets the token; use only for local development"
                );
            }
            tracing::info!(%address, version, "courier-envd listening");
            envd.serve(listener).await.context("serving")?;
        }
    }
    Ok(())
}

/// Taking ownership of the descriptor the parent handed over: the one place of this
/// binary that needs `unsafe`.
mod inherited {
    #![allow(unsafe_code)]

    use std::os::fd::{FromRawFd as _, OwnedFd, RawFd};

    /// Takes descriptor `fd`, inherited from the parent process.
    pub(super) fn take(fd: RawFd) -> anyhow::Result<OwnedFd> {
        if fd < 3 {
            anyhow::bail!(
                "--listen-fd {fd}: must be 3 or more (0, 1 and 2 are stdin, stdout, stderr)"
            );
        }
        // SAFETY: fcntl(F_GETFD) on any integer only reads this process's descriptor table;
        // it touches no memory of ours and fails with EBADF when `fd` is not open.
        if unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } == -1 {
            anyhow::bail!(
                "--listen-fd {fd}: not an open descriptor ({})",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: `fd` is open (checked above) and was inherited from our parent for this
        // purpose. Nothing else in this process owns it: the kernel never hands out an open
        // number, and this function, called once at start, is the only code that claims
        // inherited descriptors.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("courier-envd").chain(args.iter().copied()))
    }

    #[test]
    fn tcp_listens_on_loopback_by_default() {
        // On 0.0.0.0 a standalone envd would answer the whole network.
        let args = parse(&["--access-token", "t"]).unwrap();
        assert_eq!(
            args.mode().unwrap(),
            Mode::Tcp("127.0.0.1:49983".to_owned())
        );
    }

    #[test]
    fn tcp_without_a_token_is_refused_unless_insecure_is_asked_for() {
        // Without a token anyone reaching the port is root in the sandbox, and the first
        // /init caller chooses the token.
        if std::env::var_os("COURIER_ENVD_ACCESS_TOKEN").is_some() {
            println!("skipped: COURIER_ENVD_ACCESS_TOKEN is set in this environment");
            return;
        }
        for args in [&[][..], &["--access-token", ""], &["--listen", "0.0.0.0:1"]] {
            let err = parse(args).unwrap().mode().unwrap_err().to_string();
            assert!(err.contains("--access-token"), "{err}");
            assert!(err.contains("--insecure-no-token"), "{err}");
        }
        let args = parse(&["--insecure-no-token", "--listen", "127.0.0.1:1"]).unwrap();
        assert_eq!(args.mode().unwrap(), Mode::Tcp("127.0.0.1:1".to_owned()));
        assert!(parse(&["--insecure-no-token", "--access-token", "t"]).is_err());
    }

    #[test]
    fn socket_modes_need_no_token_at_start() {
        // The control plane sets it with /init over its private channel.
        assert_eq!(
            parse(&["--listen-fd", "3"]).unwrap().mode().unwrap(),
            Mode::Fd(3)
        );
        assert_eq!(
            parse(&["--socket", "/run/x.sock"]).unwrap().mode().unwrap(),
            Mode::Socket("/run/x.sock".into())
        );
        assert!(parse(&["--listen-fd", "3", "--socket", "/x"]).is_err());
        assert!(parse(&["--listen-fd", "3", "--listen", "127.0.0.1:1"]).is_err());
    }

    #[test]
    fn sudo_socket_is_off_unless_asked_and_takes_an_optional_name() {
        assert_eq!(parse(&["--listen-fd", "3"]).unwrap().sudo_socket, None);
        assert_eq!(
            parse(&["--sudo-socket", "--listen-fd", "3"])
                .unwrap()
                .sudo_socket
                .as_deref(),
            Some("courier-sudo")
        );
        let named = parse(&["--sudo-socket=test-1", "--listen-fd", "3"]).unwrap();
        assert_eq!(named.sudo_socket.as_deref(), Some("test-1"));
        assert_eq!(named.mode().unwrap(), Mode::Fd(3));
    }
}
