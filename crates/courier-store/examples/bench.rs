//! Prints message appends/s and status transitions/s per backend.
//!
//! SQLite always (a temp file); PostgreSQL when `COURIER_TEST_PG_URL` is set (in a
//! throwaway schema). Each measurement runs for about two seconds, one operation at a
//! time, so the numbers are per-operation latency expressed as a rate.
//!
//! `cargo run --release -p courier-store --example bench`

use std::time::{Duration, Instant};

use courier_store::{
    MessageRole, MessageStatus, NewMessage, NewProject, NewSandbox, NewUser, PgStore,
    SandboxConfig, SandboxLinks, SandboxStatus, SqliteStore, Store,
};

const RUN_FOR: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let sqlite = SqliteStore::open(dir.path().join("bench.db")).await?;
    measure("sqlite", &sqlite).await?;

    match std::env::var("COURIER_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => {
            let schema = format!("courier_bench_{}", uuid::Uuid::new_v4().simple());
            let pg = PgStore::connect_in_schema(&url, &schema).await?;
            measure("postgres", &pg).await?;
            let drop = format!("DROP SCHEMA {schema} CASCADE");
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(pg.pool())
                .await?;
        }
        _ => println!("postgres: skipped (COURIER_TEST_PG_URL is not set)"),
    }
    Ok(())
}

async fn measure(name: &str, store: &dyn Store) -> Result<(), Box<dyn std::error::Error>> {
    let user = store
        .create_user(NewUser {
            email: "bench@example.com".into(),
            name: "bench".into(),
        })
        .await?;
    let project = store
        .create_project(NewProject {
            user_id: user.id,
            name: "bench".into(),
        })
        .await?;
    let sandbox = store
        .create_sandbox(NewSandbox {
            user_id: user.id,
            project_id: project.id,
            config: SandboxConfig::default(),
            cli_tool: "claude".into(),
            model: None,
            prompt: "bench".into(),
            links: SandboxLinks::default(),
            repo_url: None,
            branch: None,
        })
        .await?;
    let message = store
        .create_message(NewMessage {
            sandbox_id: sandbox.id,
            role: MessageRole::Assistant,
            content: String::new(),
            status: MessageStatus::Streaming,
        })
        .await?;

    let start = Instant::now();
    let mut appends = 0u64;
    while start.elapsed() < RUN_FOR {
        store
            .append_message_content(message.id, "a token or two ")
            .await?;
        appends += 1;
    }
    let append_rate = appends as f64 / start.elapsed().as_secs_f64();

    store
        .transition_sandbox(
            sandbox.id,
            SandboxStatus::Creating,
            SandboxStatus::Running,
            None,
        )
        .await?;
    let start = Instant::now();
    let mut transitions = 0u64;
    let mut state = SandboxStatus::Running;
    while start.elapsed() < RUN_FOR {
        let next = if state == SandboxStatus::Running {
            SandboxStatus::Paused
        } else {
            SandboxStatus::Running
        };
        store
            .transition_sandbox(sandbox.id, state, next, None)
            .await?;
        state = next;
        transitions += 1;
    }
    let transition_rate = transitions as f64 / start.elapsed().as_secs_f64();

    println!("{name}: {append_rate:.0} message appends/s, {transition_rate:.0} transitions/s");
    Ok(())
}
