//! The privilege broker: envd's side of sudo. Listens on an abstract Unix socket,
//! authorizes each request from the credentials the kernel attaches to it
//! (`SCM_CREDENTIALS`), starts the command as the target user with the caller's
//! descriptors, forwards its signals and answers its exit status.

use std::{
    io,
    os::{
        fd::OwnedFd,
        linux::net::SocketAddrExt as _,
        unix::{fs::PermissionsExt as _, process::ExitStatusExt as _},
    },
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::Arc,
    time::Duration,
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use rustix::fs::{Mode, OFlags};
use tokio::{
    io::{AsyncWriteExt as _, Interest},
    net::{UnixStream, unix::OwnedWriteHalf},
};

use super::{
    policy::{self, Invoker, Refusal},
    wire::{self, Control, FrameReader, RUN_FDS, Reply, Request, Sender, recv_segment},
};
use crate::{
    process::{Identity, privileges},
    users::UserDb,
};

/// How long a connection may take to send its request: a caller must not hold the
/// broker's attention (and a task) by saying nothing.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest abstract socket name (`sun_path` is 108 bytes, one for the leading NUL).
const MAX_NAME: usize = 107;

/// Where the account database is read from, at each request (a template build or a
/// command run as root may add users or change group `sudo` at any time).
#[derive(Debug, Clone)]
struct Accounts {
    passwd: PathBuf,
    group: PathBuf,
}

impl Accounts {
    fn load(&self) -> UserDb {
        let passwd = std::fs::read_to_string(&self.passwd).unwrap_or_default();
        let group = std::fs::read_to_string(&self.group).unwrap_or_default();
        UserDb::parse(&passwd, &group)
    }
}

/// The sudo broker, bound and ready to serve.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// let broker = courier_envd::sudo::Broker::bind(courier_envd::sudo::DEFAULT_SOCKET_NAME)?;
/// tokio::spawn(broker.serve());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Broker {
    name: String,
    listener: std::os::unix::net::UnixListener,
    accounts: Accounts,
}

impl Broker {
    /// Binds the abstract Unix socket `@name` (`name` without the leading NUL).
    ///
    /// Errors: `PermissionDenied` when this process is not root (it could not start
    /// commands as other users), `InvalidInput` for an empty name, one with a NUL byte or
    /// longer than 107 bytes, `AddrInUse` when something already listens on the name.
    pub fn bind(name: &str) -> io::Result<Broker> {
        if !nix::unistd::geteuid().is_root() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the sudo broker must run as root (uid 0) to start commands as other users",
            ));
        }
        if name.is_empty() || name.contains('\0') || name.len() > MAX_NAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("sudo socket name {name:?}: must be 1 to {MAX_NAME} bytes without NUL"),
            ));
        }
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        // std creates it close-on-exec: no command envd starts inherits the listener.
        let listener = std::os::unix::net::UnixListener::bind_addr(&address)?;
        // Connections inherit it: what a client writes before accept() carries its
        // credentials too.
        rustix::net::sockopt::set_socket_passcred(&listener, true)?;
        Ok(Broker {
            name: name.to_owned(),
            listener,
            accounts: Accounts {
                passwd: "/etc/passwd".into(),
                group: "/etc/group".into(),
            },
        })
    }

    /// Reads accounts from these files instead of `/etc/passwd` and `/etc/group` (for
    /// tests, which must not edit the machine's).
    #[must_use]
    pub fn with_accounts(
        mut self,
        passwd: impl Into<PathBuf>,
        group: impl Into<PathBuf>,
    ) -> Broker {
        self.accounts = Accounts {
            passwd: passwd.into(),
            group: group.into(),
        };
        self
    }

    /// The abstract name it listens on (without the leading NUL).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Serves connections, each in a task of its own, until the runtime stops. Returns an
    /// error only when the listener cannot be registered with tokio.
    pub async fn serve(self) -> io::Result<()> {
        self.listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(self.listener)?;
        let accounts = Arc::new(self.accounts);
        tracing::info!(socket = %format!("@{}", self.name), "sudo broker listening");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, accounts.clone()));
                }
                Err(e) => {
                    // Out of descriptors or memory: wait instead of spinning.
                    tracing::warn!(error = %e, "sudo broker: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// One connection: hello, who, what, then run it or say why not.
async fn handle(stream: UnixStream, accounts: Arc<Accounts>) {
    // Before anything is written: from now on the kernel attaches the writer's
    // credentials to what the client sends, and the client learns ours from the hello.
    if let Err(e) = rustix::net::sockopt::set_socket_passcred(&stream, true) {
        tracing::warn!(error = %e, "sudo broker: SO_PASSCRED failed; connection dropped");
        return;
    }
    if send(
        &stream,
        &Reply::Hello {
            protocol: wire::PROTOCOL,
        },
    )
    .await
    .is_err()
    {
        return;
    }
    let db = accounts.load();
    let mut invoker: Option<Invoker> = None;
    // Judged at the request's first bytes: an outsider is refused before the broker
    // buffers anything more of it (a request may be megabytes long).
    let judge = |sender: Sender| -> Result<(), Refusal> {
        connector_is_writer(&stream, sender)?;
        invoker = Some(policy::authorize(sender.uid, sender.gid, &db)?);
        Ok(())
    };
    let mut reader = FrameReader::default();
    let first = tokio::time::timeout(REQUEST_TIMEOUT, read_first(&stream, &mut reader, judge));
    let (payload, fds, sender) = match first.await {
        Ok(Ok(first)) => first,
        Ok(Err(First::Refused(sender, refusal))) => {
            tracing::warn!(
                uid = sender.uid,
                gid = sender.gid,
                peer_pid = sender.pid,
                "sudo refused: {refusal}"
            );
            answer(&stream, &Reply::Refused { message: refusal.0 }).await;
            return;
        }
        Ok(Err(First::Bad(e))) => {
            tracing::debug!(error = %e, "sudo broker: no usable request");
            let message = format!("bad request: {e}");
            answer(&stream, &Reply::Refused { message }).await;
            return;
        }
        Err(_) => {
            tracing::debug!("sudo broker: no request in time");
            return;
        }
    };
    let Some(invoker) = invoker else {
        return;
    };
    let peer_pid = sender.pid;
    let request: Request = match wire::decode(&payload) {
        Ok(request) => request,
        Err(e) => {
            answer(
                &stream,
                &Reply::Refused {
                    message: format!("bad request: {e}"),
                },
            )
            .await;
            return;
        }
    };
    let reply = match request {
        Request::Validate => Reply::Output {
            text: String::new(),
            code: 0,
        },
        Request::List { command } => list(&invoker, &command),
        Request::Run(run) => {
            return run_command(stream, reader, run, invoker, &db, fds, peer_pid).await;
        }
    };
    answer(&stream, &reply).await;
}

/// Why [`read_first`] stopped.
enum First {
    /// The writer of the first bytes may not use sudo.
    Refused(Sender, Refusal),
    /// The request is unusable (ended early, two writers, too many descriptors, ...).
    Bad(io::Error),
}

impl From<io::Error> for First {
    fn from(e: io::Error) -> First {
        First::Bad(e)
    }
}

/// Where the kernel implements `SO_PEERCRED`, whoever connected must be the same user as
/// whoever writes the request: a socket handed to another process does not carry its
/// first owner's rights. gVisor answers `SO_PEERCRED` with the caller's own credentials
/// (the broker's pid and uid 0), so there it says nothing and is skipped.
fn connector_is_writer(stream: &UnixStream, writer: Sender) -> Result<(), Refusal> {
    let Ok(connector) = rustix::net::sockopt::socket_peercred(stream) else {
        return Ok(());
    };
    let pid = connector.pid.as_raw_nonzero().get();
    let uid = connector.uid.as_raw();
    if u32::try_from(pid).ok() == Some(std::process::id()) || uid == writer.uid {
        return Ok(());
    }
    Err(Refusal(format!(
        "the connection was opened by uid {uid} but the request written by uid {}",
        writer.uid
    )))
}

/// Reads the first frame, the descriptors sent with it and who wrote it; `judge` decides
/// on the writer of the first bytes before more is read. Every byte of the frame must
/// carry the same credentials: a request pieced together from two writers (one passing
/// descriptors, another writing the rest) is refused.
async fn read_first(
    stream: &UnixStream,
    reader: &mut FrameReader,
    mut judge: impl FnMut(Sender) -> Result<(), Refusal>,
) -> Result<(Vec<u8>, Vec<OwnedFd>, Sender), First> {
    let invalid = |what: String| First::Bad(io::Error::new(io::ErrorKind::InvalidInput, what));
    let mut fds: Vec<OwnedFd> = Vec::new();
    let mut writer: Option<Sender> = None;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Some(frame) = reader.take().map_err(io::Error::other)? {
            let writer = writer.ok_or_else(|| invalid("no credentials".into()))?;
            return Ok((frame, fds, writer));
        }
        stream.readable().await?;
        let segment = match stream.try_io(Interest::READABLE, || recv_segment(stream, &mut chunk)) {
            Ok(segment) => segment,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        if segment.bytes == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        let Some(sender) = segment.sender else {
            return Err(invalid(
                "the kernel attached no credentials to the request".into(),
            ));
        };
        match writer {
            None => judge(sender).map_err(|refusal| First::Refused(sender, refusal))?,
            Some(first) if first != sender => {
                return Err(invalid("the request was written by two processes".into()));
            }
            Some(_) => {}
        }
        writer = Some(sender);
        fds.extend(segment.fds);
        if segment.truncated || fds.len() > RUN_FDS {
            return Err(invalid(format!("more than {RUN_FDS} descriptors sent")));
        }
        reader.push(&chunk[..segment.bytes]);
    }
}

async fn send(stream: &UnixStream, reply: &Reply) -> io::Result<()> {
    let frame = wire::encode(reply);
    let mut written = 0;
    while written < frame.len() {
        stream.writable().await?;
        match stream.try_write(&frame[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `sudo -l [command]`.
fn list(invoker: &Invoker, command: &[String]) -> Reply {
    if command.is_empty() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        return Reply::Output {
            text: policy::listing(invoker, &host),
            code: 0,
        };
    }
    let run = wire::Run {
        command: command.to_vec(),
        ..wire::Run::default()
    };
    // `plan` finds the command as a run would; the target does not change the path.
    match policy::plan(&run, invoker, &invoker.user, is_executable) {
        Ok(plan) => Reply::Output {
            text: format!("{}\n", plan.program.display()),
            code: 0,
        },
        Err(refusal) => Reply::Refused { message: refusal.0 },
    }
}

/// Whether `path` is a regular file someone may execute (what sudo's path search wants).
fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts the command, then relays signals until it ends and answers its status.
async fn run_command(
    stream: UnixStream,
    mut reader: FrameReader,
    run: wire::Run,
    invoker: Invoker,
    db: &UserDb,
    fds: Vec<OwnedFd>,
    peer_pid: i32,
) {
    let started = match start(&run, &invoker, db, fds) {
        Ok(started) => started,
        Err(refusal) => {
            tracing::info!(invoker = %invoker.user.name, peer_pid, "sudo: nothing run: {refusal}");
            answer(&stream, &Reply::Refused { message: refusal.0 }).await;
            return;
        }
    };
    let (mut child, target_name, program) = started;
    let Some(pid) = child.id() else {
        return;
    };
    tracing::info!(
        invoker = %invoker.user.name,
        target = %target_name,
        program = %program.display(),
        pid,
        peer_pid,
        "sudo: command started"
    );
    let group = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    answer(&stream, &Reply::Started { pid }).await;
    let (mut from_client, to_client) = stream.into_split();
    let mut to_client: Option<OwnedWriteHalf> = Some(to_client);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            frame = reader.next(&mut from_client), if to_client.is_some() => match frame {
                Ok(Some(payload)) => match wire::decode::<Control>(&payload) {
                    Ok(Control::Signal { signal }) => {
                        if let Ok(signal) = Signal::try_from(signal) {
                            signal_group(group, signal);
                        }
                    }
                    Err(e) => tracing::debug!(pid, error = %e, "sudo: bad control frame ignored"),
                },
                // The client is gone (killed, or its connection broke): like a terminal
                // hang-up, the command's group gets SIGHUP, and SIGCONT in case it was
                // stopped. Its status is still collected (no zombie).
                Ok(None) | Err(_) => {
                    tracing::info!(pid, "sudo: client gone; hanging up the command");
                    signal_group(group, Signal::SIGHUP);
                    signal_group(group, Signal::SIGCONT);
                    to_client = None;
                }
            },
        }
    };
    let code = match status {
        Ok(status) => exit_code(status),
        Err(e) => {
            tracing::warn!(pid, error = %e, "sudo: waiting for the command failed");
            1
        }
    };
    if let Some(mut to_client) = to_client
        && let Err(e) = to_client
            .write_all(&wire::encode(&Reply::Exited { code }))
            .await
    {
        tracing::debug!(pid, error = %e, "sudo: the client left before the exit code");
    }
}

/// The child and, for the log, the target's name and the program.
type Started = (tokio::process::Child, String, PathBuf);

/// Plans and spawns the command; every reason not to is a [`Refusal`].
fn start(
    run: &wire::Run,
    invoker: &Invoker,
    db: &UserDb,
    fds: Vec<OwnedFd>,
) -> Result<Started, Refusal> {
    let Ok([stdin, stdout, stderr, cwd]) = <[OwnedFd; RUN_FDS]>::try_from(fds) else {
        return Err(Refusal(format!(
            "bad request: a run request passes {RUN_FDS} descriptors (stdin, stdout, \
             stderr, working directory)"
        )));
    };
    let target = policy::target(run.user.as_deref(), db)?;
    let plan = policy::plan(run, invoker, &target, is_executable)?;
    let identity = Identity {
        uid: target.uid,
        gid: target.gid,
        groups: db.supplementary_groups(&target),
    };
    // -i starts in the target's home; when it has none, where the caller is (sudo warns,
    // then goes on the same way).
    let dir = if plan.in_home {
        rustix::fs::open(
            &target.home,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap_or(cwd)
    } else {
        cwd
    };
    let mut command = tokio::process::Command::new(&plan.program);
    command
        .arg0(&plan.arg0)
        .args(&plan.args)
        .env_clear()
        .envs(&plan.env)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        // Its own group: forwarded signals reach everything it starts, as a terminal's
        // would, and nothing aimed at envd reaches it.
        .process_group(0);
    privileges::apply_in_dir(&mut command, &identity, dir);
    let child = command.spawn();
    // Dropping the command closes the broker's copies of the caller's descriptors now:
    // a reader of the command's stdout must see end-of-file when the command and the
    // client are done, not when envd happens to drop them.
    drop(command);
    let child =
        child.map_err(|e| Refusal(format!("unable to execute {}: {e}", plan.program.display())))?;
    Ok((child, target.name, plan.program))
}

/// The code a shell would report: the exit code, or 128 + the signal.
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1)
}

/// Sends `message` to the client; one that has already gone is only logged, as there is
/// no one left to answer.
async fn answer(stream: &UnixStream, message: &Reply) {
    if let Err(e) = send(stream, message).await {
        tracing::debug!(error = %e, "sudo broker: the client left before the reply");
    }
}

/// Signals the command's process group; a group that has already exited is only logged.
fn signal_group(group: Pid, signal: Signal) {
    if let Err(e) = killpg(group, signal) {
        tracing::debug!(group = group.as_raw(), ?signal, error = %e, "sudo: signalling the command");
    }
}
