//! The shared test world: an in-memory store seeded with a user, a project and a sandbox,
//! key vaults, the provider's record of a sandbox and command outputs, and the recorded
//! agent streams of courier-tools. Each module's tests build their own fakes on top (e.g.
//! the lifecycle's provider whose agents stream what the test sends them).

use std::sync::Arc;

use courier_e2b::CommandOutput;
use courier_e2b::models::SandboxRecord;
use courier_store::{
    KeyOwner, NewProject, NewSandbox, NewUser, Project, Provider, Sandbox, SandboxConfig,
    SqliteStore, Store, User,
};

use crate::keys::{KeyVault, MasterKey};

/// A recorded agent stream from courier-tools' fixtures.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../courier-tools/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A user, a project and a `creating` sandbox of the project.
async fn seed(store: &dyn Store) -> (User, Project, Sandbox) {
    let user = store
        .create_user(NewUser {
            email: format!("{}@example.com", uuid_like()),
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
            prompt: "fix the login".into(),
            links: Default::default(),
            repo_url: None,
            branch: None,
        })
        .await
        .unwrap();
    (user, project, sandbox)
}

fn uuid_like() -> String {
    courier_store::UserId::new().to_string()
}

/// An in-memory store holding a user, a project and a `creating` sandbox of the project.
pub struct Seeded {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The seeded user.
    pub user: User,
    /// The user's project.
    pub project: Project,
    /// The project's `creating` sandbox (prompt `fix the login`, tool `claude`).
    pub sandbox: Sandbox,
}

impl Seeded {
    /// A fresh in-memory SQLite store, seeded.
    pub async fn new() -> Seeded {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let (user, project, sandbox) = seed(store.as_ref()).await;
        Seeded {
            store,
            user,
            project,
            sandbox,
        }
    }

    /// An empty key vault over the store under a fresh master key.
    pub fn vault(&self) -> KeyVault {
        KeyVault::new(MasterKey::generate(), self.store.clone())
    }

    /// A key vault over the store under a fresh master key, holding `key` for `provider`
    /// of `owner`.
    pub async fn vault_with(&self, owner: KeyOwner, provider: Provider, key: &str) -> KeyVault {
        let vault = self.vault();
        vault.put(owner, provider, key).save().await.unwrap();
        vault
    }
}

/// The provider's record of sandbox `sbx1` (template `claude`).
pub fn sandbox_record() -> SandboxRecord {
    serde_json::from_str(
        r#"{"templateID":"claude","sandboxID":"sbx1","clientID":"c","envdVersion":"0.6.13"}"#,
    )
    .unwrap()
}

/// A finished command's output.
pub fn command_output(exit_code: i32, stdout: &str, stderr: &str) -> CommandOutput {
    CommandOutput {
        stdout: stdout.into(),
        stderr: stderr.into(),
        exit_code,
        error: None,
    }
}
