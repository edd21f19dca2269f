//! `sudo` where setuid binaries cannot work: a privilege broker inside envd and a
//! sudo-compatible client, both in envd's one static binary.
//!
//! Why: under gVisor the sandbox's kernel is gVisor's Sentry, which ignores setuid bits
//! (google/gvisor#212, #5299), so the system's `sudo` fails with "The no new privileges
//! flag is set". envd runs as root as the sandbox's init; with `--sudo-socket` it also
//! runs the [`Broker`] on an abstract Unix socket (`@courier-sudo`). The binary executed
//! under the name `sudo` is the client ([`client_main`]): it connects, checks the broker
//! is root, sends the request and its stdin, stdout, stderr and working directory
//! (`SCM_RIGHTS`), forwards the signals it receives, and exits with the command's status.
//! The protocol is described in the `wire` module: length-prefixed JSON frames.
//!
//! Why an abstract name: inside gVisor, Unix sockets are the Sentry's own, and an abstract
//! name never touches a file system (a path on the root file system would become a host
//! socket, runsc running with `--host-uds=create`), so nothing in the sandbox can replace
//! or redirect it by editing files.
//!
//! **Authorization** comes from the credentials the kernel attaches to the request's
//! bytes (`SCM_CREDENTIALS`, both ends set `SO_PASSCRED`), never from the request: root
//! may run anything; other users only when their account is in group `sudo` (read from
//! `/etc/passwd` and `/etc/group` at each request), matching the base template's sudoers
//! (`user ALL=(ALL) NOPASSWD:ALL`). Everyone else is refused with sudo's wording and
//! nothing runs. Why not `SO_PEERCRED`: gVisor (runsc 20240729 and its current source)
//! answers it with the *caller's own* credentials, so the broker would see every client
//! as root (uid 0, its own pid). `SCM_CREDENTIALS` is checked by both kernels: a process
//! may only claim its own pid and one of its own uids (else `EPERM`). Where `SO_PEERCRED`
//! works (its pid is not the broker's), the connecting user must also be the writing one.
//! The client in turn reads the broker's first frame (`hello`) and refuses a broker whose
//! credentials are not root's, so a process that bound the name first learns nothing (no
//! command line, environment or terminal).
//!
//! **Environment** (built by the broker, see `policy`): sudo's `env_reset` with this
//! policy's defaults: a safe set of the caller's variables (`TERM`, `LANG`, `LC_*`, `TZ`,
//! `DISPLAY`, ...), `PATH` = [`SECURE_PATH`], `HOME`, `SHELL`, `USER`, `LOGNAME` of the
//! target, `SUDO_USER`, `SUDO_UID`, `SUDO_GID`, `SUDO_HOME`, `SUDO_COMMAND`. `-E` keeps
//! the caller's variables except sudo's `env_delete` list (`LD_*`, `BASH_ENV`,
//! `PYTHONPATH`, ...), still with the secure `PATH` and the target's `USER`/`LOGNAME`.
//! `VAR=value` arguments before the command are set last.
//!
//! **What carries over to the command, and what does not.** The command gets the
//! caller's very descriptors 0, 1 and 2 and starts in the caller's directory (passed as a
//! descriptor, entered before the switch to the target user, as a child of a real sudo
//! inherits it). A terminal on them keeps working for reading, writing, `isatty`, window
//! size and raw mode: the terminal is not the command's *controlling* terminal (it is
//! the caller's session's, and taking it would take it from the caller's shell), so:
//! - Ctrl-C, Ctrl-\ and window-size changes reach the command because the terminal sends
//!   them to the client (in the foreground), which forwards them: SIGINT, SIGQUIT,
//!   SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH and SIGCONT are delivered to the
//!   command's process group. Ctrl-Z (SIGTSTP) is forwarded and then stops the client,
//!   so the caller's shell sees the job stop; `fg` continues both.
//! - An interactive shell (`sudo -i`, `sudo -s`) says it has no job control (it cannot
//!   make itself the terminal's foreground process group): jobs inside it cannot be
//!   suspended with Ctrl-Z, and `/dev/tty` names no terminal for it.
//! - The command runs in its own process group, as a child of envd (not of the client);
//!   it does not get the client's resource limits, cgroup moves or namespace changes.
//! - When the client dies without the command ending (killed with SIGKILL, say), the
//!   command's process group gets SIGHUP (and SIGCONT), as on a terminal hang-up.
//!
//! Not supported: `-g`, `-D`, `-b`, `-e`/`sudoedit`, `-U`, `-P`, `-T`, `-C`, `-R`,
//! `--chroot`; those are refused by name.

mod broker;
mod client;
mod options;
mod policy;
mod wire;

pub use broker::Broker;
pub use client::main as client_main;

/// The abstract socket name (without the leading NUL) the broker uses by default.
pub const DEFAULT_SOCKET_NAME: &str = "courier-sudo";

/// The environment variable that points the client at another broker name (tests).
/// Harmless to leave to the caller: the client only talks to a broker running as root.
pub const SOCKET_NAME_ENV: &str = "COURIER_SUDO_SOCKET";

/// `PATH` of every command run through sudo, and where bare command names are looked up
/// (Debian's sudoers `secure_path`).
pub const SECURE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether a process started as `argv0` is the sudo client (its base name is `sudo`).
///
/// ```
/// use courier_envd::sudo::invoked_as_sudo;
/// assert!(invoked_as_sudo("/usr/local/bin/sudo".as_ref()));
/// assert!(invoked_as_sudo("sudo".as_ref()));
/// assert!(!invoked_as_sudo("/usr/local/bin/courier-envd".as_ref()));
/// assert!(!invoked_as_sudo("sudoedit".as_ref()));
/// ```
pub fn invoked_as_sudo(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|name| name == "sudo")
}

/// Why the sudo client stops before or instead of running the command.
#[derive(Debug, thiserror::Error)]
pub enum SudoError {
    /// An option this sudo does not have.
    #[error("unknown option '{option}'; Courier's sudo supports: {supported}", supported = options::SUPPORTED)]
    UnknownOption {
        /// As given.
        option: String,
    },
    /// An option that needs a value came last.
    #[error("option '{option}' requires a value ({what})")]
    MissingValue {
        /// The option.
        option: String,
        /// What value it wants.
        what: &'static str,
    },
    /// A flag given a value (`--login=yes`).
    #[error("option '{option}' takes no value")]
    UnexpectedValue {
        /// The option.
        option: String,
    },
    /// Two options that exclude each other.
    #[error("you may not specify both the '{first}' and '{second}' options")]
    Conflict {
        /// The first.
        first: &'static str,
        /// The second.
        second: &'static str,
    },
    /// Nothing to do: no command and no `-i`, `-s`, `-v`, `-l`, `-k`, `-h`, `-V`.
    #[error("a command is required (or one of -i, -s, -v, -l, -k, -h, -V)")]
    NoCommand,
    /// An argument that cannot travel (the protocol carries UTF-8 text).
    #[error("{what} is not valid UTF-8; Courier's sudo passes UTF-8 arguments only")]
    NotUtf8 {
        /// Which argument.
        what: String,
    },
    /// No broker answers on the socket.
    #[error(
        "cannot reach the privilege broker at @{socket}: {source} (courier-envd serves it \
         with --sudo-socket, in gVisor sandboxes)"
    )]
    Unreachable {
        /// The abstract socket name.
        socket: String,
        /// Why.
        source: std::io::Error,
    },
    /// What listens on the socket is not root (or does not speak as the broker does):
    /// someone else bound the name.
    #[error(
        "the process listening on @{socket} is not the privilege broker ({who}); nothing \
         was sent to it"
    )]
    UntrustedBroker {
        /// The abstract socket name.
        socket: String,
        /// What gave it away ("runs as uid 1000, not root", ...).
        who: String,
    },
    /// The conversation with the broker failed.
    #[error("talking to the privilege broker: {what}: {source}")]
    Broker {
        /// What the client was doing.
        what: &'static str,
        /// Why it failed (a malformed frame is `InvalidData`).
        source: std::io::Error,
    },
    /// A signal to forward could not be handled.
    #[error("talking to the privilege broker: handling {signal}: {source}")]
    SignalHandler {
        /// The signal.
        signal: nix::sys::signal::Signal,
        /// Why.
        source: std::io::Error,
    },
    /// The broker closed the connection before the command ended.
    #[error(
        "talking to the privilege broker: the broker closed the connection before the command ended"
    )]
    BrokerHungUp,
}

impl SudoError {
    /// Whether the command line was at fault (sudo then prints its usage).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            SudoError::UnknownOption { .. }
                | SudoError::MissingValue { .. }
                | SudoError::UnexpectedValue { .. }
                | SudoError::Conflict { .. }
                | SudoError::NoCommand
        )
    }
}
