//! Real parts for the end-to-end tests: a courier-sandboxd started in-process (real
//! sandboxes: namespaces, cgroups, overlay root, courier-envd as init), reached through
//! courier-e2b's `Client` like any E2B endpoint; a bare git repository on the host as the
//! remote; the fake agent CLIs of courier-tools; a SQLite or PostgreSQL store.
//!
//! Sandboxes have no network, so the host's git directory and the fake CLIs reach them as
//! courier-sandboxd shared dirs: the repository is `file:///srv/git/project.git` inside
//! every sandbox, and the fake CLIs are first on the `PATH` of every command the
//! orchestrator runs ([`Orchestrator::with_tool_path`]).
//!
//! Everything is torn down when the [`World`] is dropped, even when a test fails: the
//! servers stop, every sandbox is killed, the Postgres schema is dropped.

#![allow(dead_code)] // each test uses its own part of the support

/// One `#[tokio::test]` per scenario and backend: `sqlite::<scenario>` and
/// `postgres::<scenario>`, each calling `<scenario>(Backend)`.
#[allow(unused_macros)] // not every test binary runs on both backends
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_e2b::{Client, ConnectionConfig};
use courier_orchestrator::keys::{KeyVault, MasterKey};
use courier_orchestrator::lifecycle::Orchestrator;
use courier_orchestrator::stream::EventHub;
pub use courier_sandboxd::runtime::Isolation;
use courier_sandboxd::{Sandboxd, ServerConfig, SharedDir};
use courier_store::{
    KeyOwner, NewProject, NewUser, PgStore, ProjectId, Provider, SqliteStore, Store, UserId,
};

/// Where the host's git directory is mounted in every sandbox.
pub const GIT_DIR_IN_SANDBOX: &str = "/srv/git";
/// The remote the sandboxes clone and push to.
pub const REPO_URL: &str = "file:///srv/git/project.git";
/// Where the fake CLIs are mounted in every sandbox.
pub const FAKE_CLIS_IN_SANDBOX: &str = "/opt/courier-fake-clis";
/// The template every test sandbox uses (the host's system directories).
pub const TEMPLATE: &str = "base";
/// A dummy Anthropic key: the fake CLI never calls out.
pub const DUMMY_ANTHROPIC_KEY: &str = "sk-ant-api03-dummy-e2e-0000";
/// The uid of the sandboxes' user `user` (no user namespace: the same on the host).
const SANDBOX_UID: u32 = 1000;
const API_KEY: &str = "e2b_e2e0112233445566778899aabbccddeeff0011";

/// Generous: the machine may be loaded.
pub const LONG: Duration = Duration::from_secs(240);

/// Which store backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's temporary directory.
    Sqlite,
    /// A fresh schema on `COURIER_TEST_PG_URL`.
    Postgres,
}

use courier_testkit::binaries::{envd_binary, sandbox_init_binary};
use courier_testkit::root::is_root;

/// Runs host git (as root, on repositories owned by the sandbox user); its stdout.
pub fn git(args: &[&str], cwd: Option<&Path>) -> String {
    let mut cmd = Command::new("git");
    cmd.args(["-c", "safe.directory=*"]).args(args);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let out = cmd.output().expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One test's world: a running courier-sandboxd, a client for it, a store with a user and
/// a project, the master key, and the bare repository.
pub struct World {
    /// The in-process courier-sandboxd.
    pub server: Sandboxd,
    /// A courier-e2b client for it (what the orchestrator uses).
    pub client: Client,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The master key, base64 (each orchestrator opens its own vault with it).
    master_key: String,
    /// The seeded user.
    pub user: UserId,
    /// The seeded project.
    pub project: ProjectId,
    /// The bare repository on the host.
    pub bare: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    pg_schema: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

impl World {
    /// A world for `test` on `backend`; `None` (with the reason printed) without root, or
    /// on Postgres without `COURIER_TEST_PG_URL` (outside CI, where that fails instead).
    pub async fn new(test: &str, backend: Backend) -> Option<World> {
        Self::with_isolation(test, backend, Isolation::Container).await
    }

    /// Like [`new`](Self::new), with the sandboxes isolated as `isolation` (gVisor needs
    /// runsc: without it the test prints why and returns `None`, or fails in CI).
    pub async fn with_isolation(
        test: &str,
        backend: Backend,
        isolation: Isolation,
    ) -> Option<World> {
        Self::build(test, backend, isolation, Vec::new(), Vec::new()).await
    }

    /// [`World::new`] whose sandboxes may reach these internal addresses (`IP:PORT` or
    /// a CIDR, as courier-sandboxd's `--egress-allow`): a gateway on this host.
    pub async fn with_egress_allow(
        test: &str,
        backend: Backend,
        allow: &[String],
    ) -> Option<World> {
        let allow = allow
            .iter()
            .map(|a| a.parse().expect("an egress allow"))
            .collect();
        Self::build(test, backend, Isolation::Container, Vec::new(), allow).await
    }

    /// [`World::new`] with more host directories shared into every sandbox (build
    /// sandboxes too).
    pub async fn with_shared_dirs(
        test: &str,
        backend: Backend,
        extra: Vec<SharedDir>,
    ) -> Option<World> {
        Self::build(test, backend, Isolation::Container, extra, Vec::new()).await
    }

    /// [`World::with_shared_dirs`] whose sandboxes may also reach `allow` (as
    /// [`World::with_egress_allow`]): the real CLIs against a gateway on this host.
    pub async fn with_shared_dirs_and_egress_allow(
        test: &str,
        backend: Backend,
        extra: Vec<SharedDir>,
        allow: &[String],
    ) -> Option<World> {
        let allow = allow
            .iter()
            .map(|a| a.parse().expect("an egress allow"))
            .collect();
        Self::build(test, backend, Isolation::Container, extra, allow).await
    }

    async fn build(
        test: &str,
        backend: Backend,
        isolation: Isolation,
        extra: Vec<SharedDir>,
        egress_allow: Vec<courier_sandboxd::egress::OperatorAllow>,
    ) -> Option<World> {
        if !is_root() {
            eprintln!("skipping {test}: sandboxes need root (namespaces, mounts, cgroups)");
            return None;
        }
        let pg_url = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => match std::env::var("COURIER_TEST_PG_URL") {
                Ok(url) if !url.is_empty() => Some(url),
                _ => {
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "COURIER_TEST_PG_URL is not set, but CI must run the Postgres end-to-end tests"
                    );
                    eprintln!(
                        "skipping {test}: COURIER_TEST_PG_URL is not set \
                         (`cargo xtask test` starts a throwaway cluster)"
                    );
                    return None;
                }
            },
        };
        let (envd, helper) = (envd_binary(), sandbox_init_binary());
        let dir = tempfile::tempdir().expect("tempdir");

        // The remote: a bare repository with one commit on `main`, owned by the sandbox
        // user so it can push.
        let git_dir = dir.path().join("git");
        let bare = git_dir.join("project.git");
        std::fs::create_dir_all(&git_dir).unwrap();
        git(
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
            None,
        );
        let seed = dir.path().join("seed");
        git(
            &[
                "clone",
                "-q",
                bare.to_str().unwrap(),
                seed.to_str().unwrap(),
            ],
            None,
        );
        std::fs::write(seed.join("README.md"), "# project\n").unwrap();
        git(&["add", "README.md"], Some(&seed));
        git(
            &[
                "-c",
                "user.name=Seed",
                "-c",
                "user.email=seed@example.com",
                "commit",
                "-q",
                "-m",
                "initial commit",
            ],
            Some(&seed),
        );
        git(&["push", "-q", "origin", "HEAD:main"], Some(&seed));
        let chown = Command::new("chown")
            .arg("-R")
            .arg(format!("{SANDBOX_UID}:{SANDBOX_UID}"))
            .arg(&git_dir)
            .status()
            .expect("chown");
        assert!(chown.success());

        let fake_clis = fake_clis_dir();
        if isolation == Isolation::Gvisor
            && courier_sandboxd::runtime::gvisor::find_runsc().is_none()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: runsc is not installed (scripts/setup-machine.sh installs it)"
            );
            eprintln!("skipping {test}: runsc (gVisor) is not installed");
            return None;
        }
        let mut config = ServerConfig::new(dir.path().join("sandboxd"), envd);
        config.isolation = Some(isolation);
        config.helper = Some(helper);
        config.dev_api_key = Some(API_KEY.to_owned());
        config.shared_dirs = vec![
            SharedDir {
                host: git_dir.clone(),
                sandbox: GIT_DIR_IN_SANDBOX.into(),
                read_only: false,
            },
            SharedDir {
                host: fake_clis,
                sandbox: FAKE_CLIS_IN_SANDBOX.into(),
                read_only: true,
            },
        ];
        config.shared_dirs.extend(extra);
        config.egress_allow = egress_allow;
        let (server, client, stop) = serve_sandboxd(config).await;

        let mut pg_schema = None;
        let store: Arc<dyn Store> = match pg_url {
            None => Arc::new(
                SqliteStore::open(dir.path().join("courier.db"))
                    .await
                    .expect("open SQLite"),
            ),
            Some(url) => {
                let schema = format!("courier_e2e_{}", UserId::new().to_string().replace('-', ""));
                let store = PgStore::connect_in_schema(&url, &schema)
                    .await
                    .expect("connect to Postgres");
                pg_schema = Some((url, schema));
                Arc::new(store)
            }
        };
        let user = store
            .create_user(NewUser {
                email: format!("{}@example.com", UserId::new()),
                name: "Ada".into(),
            })
            .await
            .unwrap();
        let project = store
            .create_project(NewProject {
                user_id: user.id,
                name: "project".into(),
            })
            .await
            .unwrap();
        Some(World {
            server,
            client,
            store,
            master_key: MasterKey::generate().to_base64().to_string(),
            user: user.id,
            project: project.id,
            bare,
            stop,
            pg_schema,
            _dir: dir,
        })
    }

    /// A key vault under the world's master key.
    pub fn vault(&self) -> KeyVault {
        KeyVault::new(
            MasterKey::from_base64(&self.master_key).unwrap(),
            self.store.clone(),
        )
    }

    /// Stores the dummy Anthropic key as the project's.
    pub async fn put_anthropic_key(&self) {
        self.vault()
            .put(
                KeyOwner::Project(self.project),
                Provider::Anthropic,
                DUMMY_ANTHROPIC_KEY,
            )
            .save()
            .await
            .unwrap();
    }

    /// An orchestrator over the world's store and provider, with its own vault and `hub`
    /// (a new process after a restart has new ones), the fake CLIs first on `PATH`.
    /// Another connection to the world's PostgreSQL schema (a second replica's), or
    /// `None` on SQLite.
    #[allow(dead_code)]
    pub async fn pg_store(&self) -> Option<PgStore> {
        let (url, schema) = self.pg_schema.as_ref()?;
        Some(
            PgStore::connect_in_schema(url, schema)
                .await
                .expect("connect to Postgres"),
        )
    }

    pub fn orchestrator(&self, hub: EventHub) -> Orchestrator {
        Orchestrator::new(
            self.store.clone(),
            Arc::new(self.client.clone()),
            self.vault(),
            hub,
        )
        .with_tool_path(vec![FAKE_CLIS_IN_SANDBOX.to_owned()])
    }

    /// The subjects of the bare repository's commits on `branch`, newest first (empty
    /// when the branch does not exist).
    pub fn remote_log(&self, branch: &str) -> Vec<String> {
        let out = Command::new("git")
            .args(["-c", "safe.directory=*", "--git-dir"])
            .arg(&self.bare)
            .args(["log", "--format=%s", branch, "--"])
            .output()
            .expect("git log");
        if !out.status.success() {
            return Vec::new();
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Whether the provider still has this sandbox.
    pub fn provider_has(&self, provider_id: &str) -> bool {
        self.server
            .list()
            .iter()
            .any(|r| r.sandbox_id == provider_id)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Fails only when every watcher is gone already: nothing left to stop.
        let _ = self.stop.send(true);
        self.server.stop();
        // Kill whatever the test left, even on failure. Drop is synchronous: run the async
        // cleanup on a helper thread with its own runtime.
        let server = self.server.clone();
        let pg = self.pg_schema.take();
        let cleanup = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(async move {
                    server.kill_all().await;
                    if let Some((url, schema)) = pg
                        && let Ok(pool) = sqlx::PgPool::connect(&url).await
                    {
                        let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                        if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&pool).await
                        {
                            eprintln!("could not drop the test schema {schema}: {e}");
                        }
                        pool.close().await;
                    }
                });
        });
        // A panic in the cleanup must not become a second panic inside `drop`.
        if cleanup.join().is_err() {
            eprintln!("the world's cleanup panicked");
        }
    }
}

/// Polls `check` until it holds; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The fake agent CLIs of courier-tools on the host.
fn fake_clis_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../courier-tools/fake-clis")
        .canonicalize()
        .expect("fake CLIs dir")
}

/// Starts a courier-sandboxd with `config` serving its API and proxy on loopback ports,
/// and a courier-e2b client for it; sending `true` on the sender stops serving.
async fn serve_sandboxd(
    config: ServerConfig,
) -> (Sandboxd, Client, tokio::sync::watch::Sender<bool>) {
    let server = Sandboxd::start(config).await.expect("start sandboxd");
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (api_addr, proxy_addr) = (api.local_addr().unwrap(), proxy.local_addr().unwrap());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn({
        let server = server.clone();
        let until = stopped(stop_rx.clone());
        async move { server.serve_api(api, until).await }
    });
    tokio::spawn({
        let server = server.clone();
        let until = stopped(stop_rx);
        async move { server.serve_proxy(proxy, until).await }
    });
    let client = Client::new(
        ConnectionConfig::builder()
            .api_key(API_KEY)
            .api_url(format!("http://{api_addr}"))
            .sandbox_url(format!("http://{proxy_addr}"))
            .request_timeout(Duration::from_secs(120))
            .build()
            .expect("config"),
    )
    .expect("client");
    (server, client, stop)
}

/// Another courier-sandboxd host beside the world's: its own data dir, the same shared
/// dirs (the bare repository, the fake CLIs). Stopped, its sandboxes killed, when
/// dropped.
pub struct Host {
    /// The in-process courier-sandboxd.
    pub server: Sandboxd,
    /// A courier-e2b client for it.
    pub client: Client,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl World {
    /// A second sandbox host for this world (container isolation, like [`World::new`]).
    pub async fn another_host(&self) -> Host {
        let dir = tempfile::tempdir().expect("tempdir");
        let git_dir = self.bare.parent().expect("the bare repository's dir");
        let mut config = ServerConfig::new(dir.path().join("sandboxd"), envd_binary());
        config.isolation = Some(Isolation::Container);
        config.helper = Some(sandbox_init_binary());
        config.dev_api_key = Some(API_KEY.to_owned());
        config.shared_dirs = vec![
            SharedDir {
                host: git_dir.to_path_buf(),
                sandbox: GIT_DIR_IN_SANDBOX.into(),
                read_only: false,
            },
            SharedDir {
                host: fake_clis_dir(),
                sandbox: FAKE_CLIS_IN_SANDBOX.into(),
                read_only: true,
            },
        ];
        let (server, client, stop) = serve_sandboxd(config).await;
        Host {
            server,
            client,
            stop,
            _dir: dir,
        }
    }

    /// An orchestrator like [`World::orchestrator`] over another sandbox API (several
    /// providers).
    pub fn orchestrator_over(
        &self,
        api: Arc<dyn courier_e2b::SandboxApi>,
        hub: EventHub,
    ) -> Orchestrator {
        Orchestrator::new(self.store.clone(), api, self.vault(), hub)
            .with_tool_path(vec![FAKE_CLIS_IN_SANDBOX.to_owned()])
    }
}

impl Host {
    /// The ids of the sandboxes this host runs.
    pub fn sandbox_ids(&self) -> Vec<String> {
        self.server
            .list()
            .into_iter()
            .map(|r| r.sandbox_id)
            .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Fails only when every watcher is gone already: nothing left to stop.
        let _ = self.stop.send(true);
        self.server.stop();
        let server = self.server.clone();
        let cleanup = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(server.kill_all());
        });
        if cleanup.join().is_err() {
            eprintln!("the host's cleanup panicked");
        }
    }
}
