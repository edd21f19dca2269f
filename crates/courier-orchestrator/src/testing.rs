//! Shared test setup: a seeded store and the recorded agent streams of courier-tools.

use courier_store::{
    NewProject, NewSandbox, NewUser, Project, Sandbox, SandboxConfig, Store, User,
};

/// A recorded agent stream from courier-tools' fixtures.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../courier-tools/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A user, a project and a `creating` sandbox of the project.
pub async fn seed(store: &dyn Store) -> (User, Project, Sandbox) {
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
