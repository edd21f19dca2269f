//! A sandbox provider that runs agent commands on the host, for API and CLI tests that need
//! real agent output without a sandbox backend (it is no isolation: tests only).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use courier_e2b::models::{NewSandbox, SandboxRecord};
use courier_e2b::{
    BuildRequested, BuildState, BuildStatus, CommandEvent, CommandOutput, CommandSpec, ExitStatus,
    Recipe, SandboxApi, SpawnedCommand,
};
use futures::StreamExt;
use tokio::io::AsyncReadExt;

/// Runs spawned commands with `bash -c` on the host, in a per-sandbox temp dir standing
/// in for `/home/user/project`. Setup commands (`run`) are recorded, not executed, so
/// nothing outside the temp dir is touched; the tool's kill command kills the sandbox's
/// processes. Template builds are recorded (see [`HostSandboxApi::built`]), not run, and
/// report `ready` at once.
#[derive(Debug)]
pub struct HostSandboxApi {
    root: tempfile::TempDir,
    next: Mutex<u32>,
    pids: Mutex<HashMap<String, Vec<u32>>>,
    builds: Mutex<Vec<(String, Recipe)>>,
    /// Sandboxes created and not killed, with their metadata (what `list` shows).
    live: Mutex<HashMap<String, HashMap<String, String>>>,
}

/// A failure of the host standing in for a sandbox (a directory, a process).
fn host_error(what: &str, e: impl std::fmt::Display) -> courier_e2b::Error {
    courier_e2b::Error::Api {
        status: 500,
        code: Some("host".into()),
        message: format!("{what}: {e}"),
    }
}

/// The lock's data even if a holder panicked: each holds plain lists and counters that a
/// panic cannot leave half-written.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HostSandboxApi {
    /// A provider rooted in a fresh temp dir.
    ///
    /// # Panics
    ///
    /// If no temp dir can be made: this is test support, and such a test cannot run.
    pub fn new() -> Self {
        HostSandboxApi {
            root: tempfile::tempdir().expect("a temp dir for the host sandboxes"),
            next: Mutex::new(0),
            pids: Mutex::default(),
            builds: Mutex::default(),
            live: Mutex::default(),
        }
    }

    /// The directory each sandbox's directory is made in (`<root>/<sandbox id>`): a test
    /// can make it a git repository, whose commits the fake agent CLIs then count.
    pub fn root(&self) -> &std::path::Path {
        self.root.path()
    }

    /// The template builds asked for so far: (template name, recipe).
    pub fn built(&self) -> Vec<(String, Recipe)> {
        lock(&self.builds).clone()
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.path().join(id)
    }

    fn kill_all(&self, id: &str) {
        let pids = lock(&self.pids).remove(id).unwrap_or_default();
        for pid in pids {
            // The whole process group: the command's children hold its stdout open. A
            // group that is already gone is what was wanted.
            let _ = std::process::Command::new("kill")
                .args(["-9", "--", &format!("-{pid}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn record(id: &str) -> SandboxRecord {
    serde_json::from_value(serde_json::json!({
        "templateID": "shell", "sandboxID": id, "clientID": "c", "envdVersion": "0.0.0"
    }))
    .expect("a fixed record with every required field")
}

#[async_trait]
impl SandboxApi for HostSandboxApi {
    async fn list(&self) -> courier_e2b::Result<Vec<courier_e2b::models::ListedSandbox>> {
        let now = chrono::Utc::now();
        lock(&self.live)
            .iter()
            .map(|(id, metadata)| {
                serde_json::from_value(serde_json::json!({
                    "templateID": "shell", "sandboxID": id, "clientID": "c",
                    "startedAt": now, "endAt": now + chrono::Duration::hours(1),
                    "envdVersion": "0.0.0", "cpuCount": 1, "memoryMB": 512,
                    "diskSizeMB": 1024, "state": "running", "metadata": metadata,
                }))
                .map_err(|e| host_error("listing", e))
            })
            .collect()
    }
    async fn create(&self, request: NewSandbox) -> courier_e2b::Result<SandboxRecord> {
        let id = {
            let mut n = lock(&self.next);
            *n += 1;
            format!("host{n}")
        };
        std::fs::create_dir_all(self.dir(&id))
            .map_err(|e| host_error("creating the sandbox dir", e))?;
        lock(&self.live).insert(id.clone(), request.metadata);
        Ok(record(&id))
    }
    async fn connect(&self, id: &str, _t: Option<Duration>) -> courier_e2b::Result<SandboxRecord> {
        Ok(record(id))
    }
    async fn kill(&self, id: &str) -> courier_e2b::Result<bool> {
        lock(&self.live).remove(id);
        self.kill_all(id);
        Ok(true)
    }
    async fn set_timeout(&self, _id: &str, _t: Duration) -> courier_e2b::Result<()> {
        Ok(())
    }
    async fn pause(&self, _id: &str) -> courier_e2b::Result<bool> {
        Ok(true)
    }
    async fn run(
        &self,
        sandbox: &SandboxRecord,
        spec: CommandSpec,
    ) -> courier_e2b::Result<CommandOutput> {
        if spec.cmd.contains("pkill") {
            self.kill_all(&sandbox.sandbox_id);
        }
        Ok(CommandOutput {
            stdout: String::new(),
            stderr: String::new(),
            exit_code: 0,
            error: None,
        })
    }
    async fn spawn(
        &self,
        sandbox: &SandboxRecord,
        spec: CommandSpec,
    ) -> courier_e2b::Result<SpawnedCommand> {
        let dir = self.dir(&sandbox.sandbox_id);
        let cmd = spec
            .cmd
            .replace("/home/user/project", &dir.to_string_lossy())
            .replace("< /dev/null", "");
        let mut child = tokio::process::Command::new("bash")
            .arg("-c")
            .arg(&cmd)
            .current_dir(&dir)
            .envs(spec.envs)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .process_group(0)
            .spawn()
            .map_err(|e| host_error("spawning bash", e))?;
        let pid = child
            .id()
            .ok_or_else(|| host_error("spawning bash", "no pid"))?;
        lock(&self.pids)
            .entry(sandbox.sandbox_id.clone())
            .or_default()
            .push(pid);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| host_error("spawning bash", "no stdout pipe"))?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        // A receiver that is gone no longer wants the output.
                        let _ =
                            tx.send(Ok(CommandEvent::Stdout(Bytes::copy_from_slice(&buf[..n]))));
                    }
                }
            }
            let status = match child.wait().await {
                Ok(status) => status,
                Err(e) => {
                    // As above: no receiver, no one to tell.
                    let _ = tx.send(Err(host_error("waiting for bash", e)));
                    return;
                }
            };
            let code = status.code().unwrap_or(-1);
            // As above: no receiver, no one to tell.
            let _ = tx.send(Ok(CommandEvent::Exit(ExitStatus {
                exit_code: code,
                exited: status.code().is_some(),
                status: format!("exit status {code}"),
                error: None,
            })));
        });
        let mut rx = rx;
        let events = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
        Ok(SpawnedCommand { pid, events })
    }
    async fn send_stdin(
        &self,
        _s: &SandboxRecord,
        _pid: u32,
        _d: Bytes,
    ) -> courier_e2b::Result<()> {
        Ok(())
    }
    async fn kill_process(&self, _s: &SandboxRecord, pid: u32) -> courier_e2b::Result<bool> {
        // A process that is already gone is what was wanted.
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
        Ok(true)
    }
    async fn write_file(&self, _s: &SandboxRecord, _p: &str, _d: Bytes) -> courier_e2b::Result<()> {
        Ok(())
    }
    async fn read_file(&self, _s: &SandboxRecord, _p: &str) -> courier_e2b::Result<Bytes> {
        Ok(Bytes::new())
    }
    async fn build_template(
        &self,
        name: &str,
        recipe: Recipe,
    ) -> courier_e2b::Result<BuildRequested> {
        let mut builds = lock(&self.builds);
        builds.push((name.to_owned(), recipe));
        Ok(BuildRequested {
            template_id: format!("tpl-{name}"),
            build_id: format!("build{}", builds.len()),
            public: false,
            names: vec![name.to_owned()],
            tags: Vec::new(),
            aliases: vec![name.to_owned()],
        })
    }
    async fn template_build_status(
        &self,
        template_id: &str,
        build_id: &str,
        _logs_offset: usize,
    ) -> courier_e2b::Result<BuildStatus> {
        Ok(BuildStatus {
            template_id: template_id.to_owned(),
            build_id: build_id.to_owned(),
            status: BuildState::Ready,
            log_entries: Vec::new(),
            reason: None,
        })
    }
}

impl Default for HostSandboxApi {
    fn default() -> Self {
        Self::new()
    }
}
