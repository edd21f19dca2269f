//! The client: what runs when envd's binary is executed as `sudo`.

use std::{
    ffi::OsString,
    io::{IoSlice, Write as _},
    os::{
        fd::{AsFd as _, OwnedFd},
        unix::net::UnixStream,
    },
};

use nix::sys::signal::{Signal, raise};
use rustix::{
    fs::{Mode, OFlags},
    net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg},
};
use tokio::{
    io::AsyncWriteExt as _,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use super::{
    DEFAULT_SOCKET_NAME, SOCKET_NAME_ENV, SudoError,
    options::{self, Invocation, USAGE},
    wire::{self, Control, FrameReader, PreserveEnv, Reply, Request, recv_segment},
};

/// Signals forwarded to the command's process group. SIGTSTP is forwarded too, then
/// stops the client itself (see [`forward`]).
const FORWARDED: [Signal; 9] = [
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGTSTP,
];

/// Runs sudo with this process's arguments and returns the exit code: the command's, or 1
/// when sudo itself fails (messages on stderr, prefixed `sudo: `), as sudo does.
pub fn main() -> i32 {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let invocation = match options::parse(args) {
        Ok(invocation) => invocation,
        Err(e) => {
            eprintln!("sudo: {e}");
            if e.is_usage() {
                eprint!("{USAGE}");
            }
            return 1;
        }
    };
    match invocation {
        Invocation::Help => {
            print!("{USAGE}");
            0
        }
        Invocation::Version => {
            println!(
                "Courier sudo {} (courier-envd's client of its privilege broker)",
                env!("CARGO_PKG_VERSION")
            );
            0
        }
        Invocation::Nothing => 0,
        Invocation::Broker(request) => match ask(request) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("sudo: {e}");
                1
            }
        },
    }
}

/// Sends `request` to the broker and follows it to the end.
fn ask(mut request: Request) -> Result<i32, SudoError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| SudoError::Broker {
            what: "starting",
            source,
        })?;
    if let Request::Run(run) = &mut request {
        run.env = environment(&run.preserve_env);
    }
    runtime.block_on(async move {
        // Handlers first: a Ctrl-C from now on reaches the command, not just us.
        let signals = signals()?;
        let name = std::env::var(SOCKET_NAME_ENV)
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_SOCKET_NAME.to_owned());
        let (stream, reader) = connect(&name)?;
        send_request(&stream, &request)?;
        follow(stream, reader, signals).await
    })
}

/// This process's environment as UTF-8 pairs (the protocol carries text). Variables that
/// are not UTF-8 stay behind; with `-E` the caller is told which.
fn environment(policy: &PreserveEnv) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => env.push((name, value)),
            (name, _) => {
                if *policy != PreserveEnv::Reset {
                    let name = name.unwrap_or_else(|n| n.to_string_lossy().into_owned());
                    eprintln!("sudo: not passing {name}: not valid UTF-8");
                }
            }
        }
    }
    env
}

/// Signal handlers, feeding one channel.
fn signals() -> Result<mpsc::UnboundedReceiver<Signal>, SudoError> {
    let (sender, receiver) = mpsc::unbounded_channel();
    for forwarded in FORWARDED {
        let mut stream = signal(SignalKind::from_raw(forwarded as i32)).map_err(|source| {
            SudoError::SignalHandler {
                signal: forwarded,
                source,
            }
        })?;
        let sender = sender.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if sender.send(forwarded).is_err() {
                    return;
                }
            }
        });
    }
    Ok(receiver)
}

/// How long the broker has to say hello: a process squatting the name that never
/// answers must not hang the caller.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to `@name` and checks that root listens there (from the credentials the
/// kernel attaches to the broker's hello): a process that bound the name before envd (or
/// after it died) must receive nothing, not the caller's command line, environment or
/// terminal. Returns the stream and what was read past the hello.
fn connect(name: &str) -> Result<(UnixStream, FrameReader), SudoError> {
    let unreachable = |source: std::io::Error| SudoError::Unreachable {
        socket: name.to_owned(),
        source,
    };
    let socket = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| unreachable(e.into()))?;
    // Before connecting, so that the hello, sent right after accept, carries credentials.
    rustix::net::sockopt::set_socket_passcred(&socket, true).map_err(|e| unreachable(e.into()))?;
    let address = rustix::net::SocketAddrUnix::new_abstract_name(name.as_bytes())
        .map_err(|e| unreachable(e.into()))?;
    rustix::net::connect(&socket, &address).map_err(|e| unreachable(e.into()))?;
    let stream = UnixStream::from(socket);
    stream
        .set_read_timeout(Some(HELLO_TIMEOUT))
        .map_err(unreachable)?;
    let untrusted = |who: String| SudoError::UntrustedBroker {
        socket: name.to_owned(),
        who,
    };
    let mut reader = FrameReader::default();
    let mut buffer = [0u8; 4096];
    let hello = loop {
        if let Some(frame) = reader
            .take()
            .map_err(|e| malformed("reading the broker's hello", e))?
        {
            break frame;
        }
        let segment = recv_segment(&stream, &mut buffer).map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                untrusted(format!("said nothing within {} s", HELLO_TIMEOUT.as_secs()))
            } else {
                unreachable(e)
            }
        })?;
        if segment.bytes == 0 {
            return Err(untrusted("closed the connection without a hello".into()));
        }
        match segment.sender {
            Some(sender) if sender.uid == 0 => reader.push(&buffer[..segment.bytes]),
            Some(sender) => return Err(untrusted(format!("runs as uid {}, not root", sender.uid))),
            None => return Err(untrusted("sent no credentials".into())),
        }
    };
    match wire::decode::<Reply>(&hello) {
        Ok(Reply::Hello { .. }) => {}
        _ => return Err(untrusted("did not say hello".into())),
    }
    stream.set_read_timeout(None).map_err(unreachable)?;
    Ok((stream, reader))
}

/// Sends the request; a `run` request carries stdin, stdout, stderr and the working
/// directory with its first byte.
fn send_request(stream: &UnixStream, request: &Request) -> Result<(), SudoError> {
    let failed = |what: &'static str, source: std::io::Error| SudoError::Broker { what, source };
    let frame = wire::encode(request);
    let sent = if matches!(request, Request::Run(_)) {
        // O_PATH: the directory is only entered, never read, and needs no read permission.
        let cwd: OwnedFd = rustix::fs::open(
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| failed("opening the working directory", e.into()))?;
        let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
        // std opens /dev/null on 0, 1 and 2 at start when they are closed: these are valid.
        let fds = [stdin.as_fd(), stdout.as_fd(), stderr.as_fd(), cwd.as_fd()];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        sendmsg(
            stream,
            &[IoSlice::new(&frame)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .map_err(|e| failed("sending the request", e.into()))?
    } else {
        0
    };
    let mut rest = stream;
    rest.write_all(&frame[sent..])
        .map_err(|e| failed("sending the request", e))
}

/// Relays signals to the broker and waits for its answer; returns the exit code.
async fn follow(
    stream: UnixStream,
    mut reader: FrameReader,
    mut signals: mpsc::UnboundedReceiver<Signal>,
) -> Result<i32, SudoError> {
    let broken = |source: std::io::Error| SudoError::Broker {
        what: "following the command",
        source,
    };
    stream.set_nonblocking(true).map_err(broken)?;
    let stream = tokio::net::UnixStream::from_std(stream).map_err(broken)?;
    let (mut from_broker, mut to_broker) = stream.into_split();
    loop {
        tokio::select! {
            frame = reader.next(&mut from_broker) => {
                let Some(payload) = frame.map_err(broken)? else {
                    return Err(SudoError::BrokerHungUp);
                };
                match wire::decode::<Reply>(&payload).map_err(|e| malformed("reading the broker's reply", e))? {
                    Reply::Hello { .. } | Reply::Started { .. } => {}
                    Reply::Exited { code } => return Ok(code),
                    Reply::Output { text, code } => {
                        let mut stdout = std::io::stdout().lock();
                        // With stdout closed there is no one to tell; the exit code still says.
                        let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
                        return Ok(code);
                    }
                    Reply::Refused { message } => {
                        eprintln!("sudo: {message}");
                        return Ok(1);
                    }
                }
            }
            Some(received) = signals.recv() => {
                let frame = wire::encode(&Control::Signal { signal: received as i32 });
                // The broker may be gone already; its answer (or its absence) decides.
                let _ = to_broker.write_all(&frame).await;
                forward(received);
            }
        }
    }
}

/// After forwarding Ctrl-Z (SIGTSTP) to the command, stops the client too, so the
/// caller's shell sees its job stop; its `fg` sends SIGCONT, which is forwarded in turn.
fn forward(received: Signal) {
    if received == Signal::SIGTSTP {
        // raise(3) fails only for an invalid signal, and SIGSTOP is valid.
        let _ = raise(Signal::SIGSTOP);
    }
}

/// A frame from the broker that does not parse.
fn malformed(what: &'static str, error: wire::FrameError) -> SudoError {
    SudoError::Broker {
        what,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
    }
}
