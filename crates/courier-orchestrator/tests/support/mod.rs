//! Real parts for the pipelines' tests: a sandbox that runs commands on this host, local
//! HTTP stand-ins for GitHub and the LLM API, git repositories on disk, a seeded store.

#![allow(dead_code, unused_imports)] // each test file uses its own part of the support (and of its re-exports)

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use courier_e2b::models::{NewSandbox as ProviderSandbox, SandboxRecord};
use courier_e2b::{CommandOutput, CommandSpec, SandboxApi, SpawnedCommand};
use courier_store::{
    MessageRole, MessageStatus, NewMessage, NewProject, NewSandbox, NewUser, Project, Sandbox,
    SandboxConfig, SqliteStore, Store,
};

/// A recorded fixture's text.
pub fn fixture(path: &str) -> String {
    let path = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The record a [`LocalSandbox`] answers with (its fields are not used).
pub fn record() -> SandboxRecord {
    serde_json::from_str(
        r#"{"templateID":"base","sandboxID":"local1","clientID":"c","envdVersion":"0.6.13"}"#,
    )
    .unwrap()
}

/// A sandbox whose commands run on this host through `bash -c`: a real executor (real
/// git, real processes, the command timeout enforced by killing the process group), not a
/// mock. Only what the pipelines use is supported.
#[derive(Debug, Default)]
pub struct LocalSandbox {
    /// Every command line run, in order.
    pub commands: Mutex<Vec<String>>,
}

fn unsupported(what: &str) -> courier_e2b::Error {
    courier_e2b::Error::InvalidArgument {
        message: format!("LocalSandbox does not support {what}"),
    }
}

#[async_trait]
impl SandboxApi for LocalSandbox {
    async fn create(&self, _: ProviderSandbox) -> courier_e2b::Result<SandboxRecord> {
        Ok(record())
    }
    async fn connect(&self, _: &str, _: Option<Duration>) -> courier_e2b::Result<SandboxRecord> {
        Ok(record())
    }
    async fn kill(&self, _: &str) -> courier_e2b::Result<bool> {
        Ok(true)
    }
    async fn set_timeout(&self, _: &str, _: Duration) -> courier_e2b::Result<()> {
        Ok(())
    }
    async fn pause(&self, _: &str) -> courier_e2b::Result<bool> {
        Err(unsupported("pause"))
    }

    async fn run(
        &self,
        _: &SandboxRecord,
        spec: CommandSpec,
    ) -> courier_e2b::Result<CommandOutput> {
        self.commands.lock().unwrap().push(spec.cmd.clone());
        let mut cmd = tokio::process::Command::new("bash");
        cmd.arg("-c")
            .arg(&spec.cmd)
            .envs(&spec.envs)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Its own process group, so a timeout kills git's children (ssh, hooks) too.
            .process_group(0)
            .kill_on_drop(true);
        if let Some(cwd) = &spec.cwd {
            cmd.current_dir(cwd);
        }
        let child = cmd
            .spawn()
            .map_err(|e| unsupported(&format!("spawn: {e}")))?;
        let pgid = child.id();
        let wait = child.wait_with_output();
        let output = if spec.timeout.is_zero() {
            wait.await
        } else {
            match tokio::time::timeout(spec.timeout, wait).await {
                Ok(output) => output,
                Err(_) => {
                    if let Some(pgid) = pgid {
                        // Best effort: the group may have ended by itself meanwhile.
                        if let Err(e) = std::process::Command::new("kill")
                            .args(["-9", "--", &format!("-{pgid}")])
                            .status()
                        {
                            eprintln!("could not kill process group {pgid}: {e}");
                        }
                    }
                    return Err(courier_e2b::Error::Timeout {
                        message: format!("command ran longer than {:?}", spec.timeout),
                    });
                }
            }
        }
        .map_err(|e| unsupported(&format!("wait: {e}")))?;
        Ok(CommandOutput {
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            exit_code: output.status.code().unwrap_or(-1),
            error: None,
        })
    }

    async fn spawn(
        &self,
        _: &SandboxRecord,
        _: CommandSpec,
    ) -> courier_e2b::Result<SpawnedCommand> {
        Err(unsupported("spawn"))
    }
    async fn send_stdin(&self, _: &SandboxRecord, _: u32, _: Bytes) -> courier_e2b::Result<()> {
        Err(unsupported("stdin"))
    }
    async fn kill_process(&self, _: &SandboxRecord, _: u32) -> courier_e2b::Result<bool> {
        Ok(false)
    }
    async fn write_file(
        &self,
        _: &SandboxRecord,
        path: &str,
        data: Bytes,
    ) -> courier_e2b::Result<()> {
        std::fs::write(path, data).map_err(|e| unsupported(&format!("write: {e}")))
    }
    async fn read_file(&self, _: &SandboxRecord, path: &str) -> courier_e2b::Result<Bytes> {
        std::fs::read(path)
            .map(Bytes::from)
            .map_err(|e| unsupported(&format!("read: {e}")))
    }
}

pub use courier_testkit::standin::{Recorded, Reply, StandIn};

/// Runs `git` with `args` in `dir`, panicking with its output on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Courier Test")
        .env("GIT_AUTHOR_EMAIL", "test@courier.invalid")
        .env("GIT_COMMITTER_NAME", "Courier Test")
        .env("GIT_COMMITTER_EMAIL", "test@courier.invalid")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The GitHub URL the project's `origin` claims; pushes to it land in the bare repo.
pub const GITHUB_REMOTE: &str = "https://github.com/acme/engine.git";

/// A bare repository on disk as the remote, and a clone of it as the sandbox's project
/// with `origin` named by its GitHub URL (git's `insteadOf` routes pushes to the bare
/// repo), checked out on `branch` with one commit of work.
pub struct Repos {
    /// Holds both.
    pub dir: tempfile::TempDir,
}

impl Repos {
    /// Creates the remote (with `main`) and the project on `branch`.
    pub fn new(branch: &str) -> Repos {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(
            root,
            &["init", "--quiet", "--bare", "-b", "main", "remote.git"],
        );
        git(root, &["init", "--quiet", "-b", "main", "seed"]);
        let seed = root.join("seed");
        std::fs::write(seed.join("README.md"), "# engine\n").unwrap();
        git(&seed, &["add", "-A"]);
        git(&seed, &["commit", "--quiet", "-m", "initial"]);
        let remote = root.join("remote.git");
        git(
            &seed,
            &["push", "--quiet", remote.to_str().unwrap(), "main"],
        );
        git(
            root,
            &["clone", "--quiet", remote.to_str().unwrap(), "project"],
        );
        let repos = Repos { dir };
        let project = repos.project();
        git(&project, &["config", "user.name", "Courier Agent"]);
        git(&project, &["config", "user.email", "agent@courier.invalid"]);
        git(&project, &["remote", "set-url", "origin", GITHUB_REMOTE]);
        git(
            &project,
            &[
                "config",
                &format!("url.{}.insteadOf", remote.display()),
                GITHUB_REMOTE,
            ],
        );
        if branch != "main" {
            git(&project, &["checkout", "--quiet", "-b", branch]);
        }
        std::fs::write(project.join("login.rs"), "fn login() {}\n").unwrap();
        git(&project, &["add", "-A"]);
        git(&project, &["commit", "--quiet", "-m", "Fix the login"]);
        repos
    }

    /// The sandbox's project directory.
    pub fn project(&self) -> std::path::PathBuf {
        self.dir.path().join("project")
    }

    /// The bare remote.
    pub fn remote(&self) -> std::path::PathBuf {
        self.dir.path().join("remote.git")
    }

    /// Installs a `pre-receive` hook in the remote.
    pub fn remote_hook(&self, script: &str) {
        let hook = self.remote().join("hooks/pre-receive");
        std::fs::write(&hook, format!("#!/bin/sh\n{script}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The commit a ref points to in the remote, if it exists there.
    pub fn remote_ref(&self, name: &str) -> Option<String> {
        let out = std::process::Command::new("git")
            .args(["rev-parse", "--verify", "--quiet", name])
            .current_dir(self.remote())
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The project's `HEAD` commit.
    pub fn head(&self) -> String {
        git(&self.project(), &["rev-parse", "HEAD"])
    }
}

/// A store with a user, a project and a sandbox of it (with the task prompt).
pub async fn seeded(prompt: &str) -> (Arc<dyn Store>, Project, Sandbox) {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let user = store
        .create_user(NewUser {
            email: "ada@example.com".into(),
            name: "Ada".into(),
        })
        .await
        .unwrap();
    let project = store
        .create_project(NewProject {
            user_id: user.id,
            name: "engine".into(),
        })
        .await
        .unwrap();
    let sandbox = store
        .create_sandbox(NewSandbox {
            user_id: user.id,
            project_id: project.id,
            config: SandboxConfig::default(),
            cli_tool: "claude".into(),
            model: None,
            prompt: prompt.into(),
            links: Default::default(),
            repo_url: Some(GITHUB_REMOTE.into()),
            branch: None,
        })
        .await
        .unwrap();
    (store, project, sandbox)
}

/// Adds a finished message to the sandbox's transcript.
pub async fn say(store: &dyn Store, sandbox: &Sandbox, role: MessageRole, text: &str) {
    store
        .create_message(NewMessage {
            sandbox_id: sandbox.id,
            role,
            content: text.into(),
            status: MessageStatus::Completed,
        })
        .await
        .unwrap();
}
