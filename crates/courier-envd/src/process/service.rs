//! The `process.Process` RPC handlers.

use std::collections::BTreeMap;

use axum::{
    extract::{Path, Request, State},
    response::Response,
};
use courier_e2b::{
    codec::RpcMessage,
    proto::process::{
        CloseStdinRequest, CloseStdinResponse, ConnectRequest, ConnectResponse, ListRequest,
        ListResponse, ProcessEvent, ProcessInput, SendInputRequest, SendInputResponse,
        SendSignalRequest, SendSignalResponse, Signal as ProtoSignal, StartRequest, StartResponse,
        StreamInputRequest, UpdateRequest, UpdateResponse,
        process_event::{self, DataEvent, EndEvent, KeepAlive, StartEvent, data_event},
        process_input::Input,
        stream_input_request,
    },
};
use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::{Attach, EndInfo, Event, Identity, Output, Process, SpawnSpec, spawn};
use crate::{
    Envd, Error,
    identity::as_user,
    paths,
    rpc::{self, Ctx, MessageReader, StreamWriter},
    users::UserDb,
};

/// `POST /process.Process/{method}`.
pub(crate) async fn route(
    State(envd): State<Envd>,
    Path(method): Path<String>,
    req: Request,
) -> Response {
    let kind = match method.as_str() {
        "Start" | "Connect" => rpc::Kind::ServerStream,
        "StreamInput" => rpc::Kind::ClientStream,
        "List" | "SendInput" | "SendSignal" | "CloseStdin" | "Update" => rpc::Kind::Unary,
        _ => return rpc::unimplemented("process.Process", &method),
    };
    let (ctx, codec, body) = match rpc::prepare(envd, kind, req).await {
        Ok(prepared) => prepared,
        Err(response) => return response,
    };
    match method.as_str() {
        "Start" => rpc::server_stream(ctx, codec, body, start).await,
        "Connect" => rpc::server_stream(ctx, codec, body, connect).await,
        "StreamInput" => {
            let reader = MessageReader::new(body, codec);
            let result = stream_input(ctx, reader).await;
            rpc::client_stream_response(
                codec,
                result.map(|()| courier_e2b::proto::process::StreamInputResponse {}),
            )
        }
        "List" => rpc::unary(ctx, codec, body, list).await,
        "SendInput" => rpc::unary(ctx, codec, body, send_input).await,
        "SendSignal" => rpc::unary(ctx, codec, body, send_signal).await,
        "CloseStdin" => rpc::unary(ctx, codec, body, close_stdin).await,
        _ => rpc::unary(ctx, codec, body, update).await,
    }
}

/// PATH for processes when the daemon itself has none.
const FALLBACK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `Start`: spawn, then stream start → data/keepalive → end.
pub(crate) async fn start(ctx: Ctx, request: StartRequest, out: StreamWriter) -> Result<(), Error> {
    let config = request
        .process
        .ok_or_else(|| Error::InvalidArgument("the process config is required".to_owned()))?;
    if config.cmd.is_empty() {
        return Err(Error::InvalidArgument(
            "the process cmd is required".to_owned(),
        ));
    }
    let runtime = ctx.envd.shared.runtime();
    let user = &ctx.user;
    let cwd = match config.cwd.as_deref().filter(|c| !c.is_empty()) {
        Some(cwd) => paths::resolve(cwd, user, None)?,
        None => runtime
            .default_workdir
            .clone()
            .unwrap_or_else(|| user.home.clone()),
    };
    // Checked as the user: the child changes directory before it drops to the user, so
    // this is where a directory the user may not enter is refused. `<cwd>/.` makes the
    // kernel check search permission on the cwd itself too, as chdir does.
    let probe = cwd.join(".");
    let usable = as_user(ctx.identity.clone(), move || Ok(std::fs::metadata(probe))).await?;
    match usable {
        Ok(meta) if meta.is_dir() => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(Error::PermissionDenied(format!(
                "cwd '{}' is not accessible to user '{}'",
                paths::display(&cwd),
                user.name
            )));
        }
        _ => {
            return Err(Error::InvalidArgument(format!(
                "cwd '{}' does not exist",
                paths::display(&cwd)
            )));
        }
    }
    // Later entries win: daemon PATH and identity, sandbox variables, then the request's.
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_owned(),
        std::env::var("PATH").unwrap_or_else(|_| FALLBACK_PATH.to_owned()),
    );
    env.insert("HOME".to_owned(), paths::display(&user.home));
    env.insert("USER".to_owned(), user.name.clone());
    env.insert("LOGNAME".to_owned(), user.name.clone());
    env.extend(runtime.env_vars.clone());
    env.extend(config.envs.iter().map(|(k, v)| (k.clone(), v.clone())));
    if env
        .keys()
        .any(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return Err(Error::InvalidArgument(
            "environment variable names must be non-empty, without '=' or NUL".to_owned(),
        ));
    }
    let identity = nix::unistd::geteuid().is_root().then(|| Identity {
        uid: user.uid,
        gid: user.gid,
        groups: UserDb::load().supplementary_groups(user),
    });
    let pty = request.pty.map(|pty| {
        let size = pty.size.unwrap_or_default();
        let clamp = |v: u32, default: u16| {
            if v == 0 {
                default
            } else {
                u16::try_from(v).unwrap_or(u16::MAX)
            }
        };
        (clamp(size.cols, 80), clamp(size.rows, 24))
    });
    let spec = SpawnSpec {
        config,
        tag: request.tag,
        env: env.into_iter().collect(),
        cwd,
        identity,
        pty,
        stdin: request.stdin.unwrap_or(true),
        lifetime: ctx.timeout,
    };
    let deadline = ctx.timeout.map(|t| Instant::now() + t);
    let (process, attach) = spawn(&ctx.envd.shared.processes, spec)?;
    forward(&process, attach, &out, &ctx, deadline, |event| {
        StartResponse { event: Some(event) }
    })
    .await
}

/// `Connect`: attach to a running process (or replay start + end of an exited one).
pub(crate) async fn connect(
    ctx: Ctx,
    request: ConnectRequest,
    out: StreamWriter,
) -> Result<(), Error> {
    let process = ctx.envd.shared.processes.find(request.process.as_ref())?;
    let attach = process.attach();
    let deadline = ctx.timeout.map(|t| Instant::now() + t);
    forward(&process, attach, &out, &ctx, deadline, |event| {
        ConnectResponse { event: Some(event) }
    })
    .await
}

fn event(event: process_event::Event) -> ProcessEvent {
    ProcessEvent { event: Some(event) }
}

fn end_event(end: EndInfo) -> ProcessEvent {
    event(process_event::Event::End(EndEvent {
        exit_code: end.exit_code,
        exited: end.exited,
        status: end.status,
        error: end.error,
    }))
}

async fn forward<M: RpcMessage>(
    process: &Process,
    attach: Attach,
    out: &StreamWriter,
    ctx: &Ctx,
    deadline: Option<Instant>,
    wrap: fn(ProcessEvent) -> M,
) -> Result<(), Error> {
    if !out
        .send(&wrap(event(process_event::Event::Start(StartEvent {
            pid: process.pid,
        }))))
        .await
    {
        return Ok(());
    }
    let mut events = match attach {
        Attach::Ended(end) => {
            out.send(&wrap(end_event(end))).await;
            return Ok(());
        }
        Attach::Live(events) => events,
    };
    let deadline_sleep = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline_sleep);
    loop {
        let idle = tokio::time::sleep(ctx.keepalive);
        let message = tokio::select! {
            received = events.recv() => match received {
                Some(Event::Data(output)) => {
                    let output = match output {
                        Output::Stdout(b) => data_event::Output::Stdout(b.to_vec()),
                        Output::Stderr(b) => data_event::Output::Stderr(b.to_vec()),
                        Output::Pty(b) => data_event::Output::Pty(b.to_vec()),
                    };
                    event(process_event::Event::Data(DataEvent { output: Some(output) }))
                }
                Some(Event::End(end)) => {
                    out.send(&wrap(end_event(end))).await;
                    return Ok(());
                }
                None => return Err(Error::Internal(format!("output of process {} ended without an end event", process.pid))),
            },
            () = idle => event(process_event::Event::Keepalive(KeepAlive {})),
            () = &mut deadline_sleep => return Err(Error::DeadlineExceeded("deadline exceeded".to_owned())),
            () = out.closed() => return Ok(()),
        };
        if !out.send(&wrap(message)).await {
            return Ok(());
        }
    }
}

/// `List`: the running processes.
pub(crate) async fn list(ctx: Ctx, _request: ListRequest) -> Result<ListResponse, Error> {
    Ok(ListResponse {
        processes: ctx.envd.shared.processes.list(),
    })
}

async fn write_input(process: &Process, input: Option<ProcessInput>) -> Result<(), Error> {
    match input.and_then(|i| i.input) {
        Some(Input::Stdin(data)) => process.write_stdin(&data).await,
        Some(Input::Pty(data)) => process.write_pty(&data).await,
        None => Ok(()),
    }
}

/// `SendInput`: stdin or PTY bytes.
pub(crate) async fn send_input(
    ctx: Ctx,
    request: SendInputRequest,
) -> Result<SendInputResponse, Error> {
    let process = ctx
        .envd
        .shared
        .processes
        .find_running(request.process.as_ref())?;
    write_input(&process, request.input).await?;
    Ok(SendInputResponse {})
}

/// `StreamInput`: a start message naming the process, then input messages.
pub(crate) async fn stream_input(ctx: Ctx, mut reader: MessageReader) -> Result<(), Error> {
    let mut process = None;
    while let Some(message) = reader.next::<StreamInputRequest>().await? {
        match message.event {
            Some(stream_input_request::Event::Start(start)) => {
                process = Some(
                    ctx.envd
                        .shared
                        .processes
                        .find_running(start.process.as_ref())?,
                );
            }
            Some(stream_input_request::Event::Data(data)) => {
                let Some(process) = &process else {
                    return Err(Error::InvalidArgument(
                        "the first StreamInput message must be start".to_owned(),
                    ));
                };
                write_input(process, data.input).await?;
            }
            Some(stream_input_request::Event::Keepalive(_)) | None => {}
        }
    }
    Ok(())
}

/// `SendSignal`: SIGKILL or SIGTERM.
pub(crate) async fn send_signal(
    ctx: Ctx,
    request: SendSignalRequest,
) -> Result<SendSignalResponse, Error> {
    let signal = match ProtoSignal::try_from(request.signal) {
        Ok(ProtoSignal::Sigkill) => Signal::SIGKILL,
        Ok(ProtoSignal::Sigterm) => Signal::SIGTERM,
        _ => {
            return Err(Error::InvalidArgument(format!(
                "unsupported signal {}",
                request.signal
            )));
        }
    };
    let process = ctx
        .envd
        .shared
        .processes
        .find_running(request.process.as_ref())?;
    process.signal(signal)?;
    Ok(SendSignalResponse {})
}

/// `CloseStdin`.
pub(crate) async fn close_stdin(
    ctx: Ctx,
    request: CloseStdinRequest,
) -> Result<CloseStdinResponse, Error> {
    let process = ctx
        .envd
        .shared
        .processes
        .find_running(request.process.as_ref())?;
    process.close_stdin().await?;
    Ok(CloseStdinResponse {})
}

/// `Update`: PTY resize.
pub(crate) async fn update(ctx: Ctx, request: UpdateRequest) -> Result<UpdateResponse, Error> {
    let process = ctx
        .envd
        .shared
        .processes
        .find_running(request.process.as_ref())?;
    if let Some(size) = request.pty.and_then(|p| p.size) {
        process.resize(size.cols, size.rows).await?;
    }
    Ok(UpdateResponse {})
}
