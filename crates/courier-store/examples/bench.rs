//! Prints message appends/s, status transitions/s, and sandbox gets/s and lists/s (a
//! page of 20 of a user with 5 sandboxes, beside another user's 2,000) per backend.
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

    // Reads as the API does them: one user's sandbox by id, and one user's first page,
    // in a store that also holds many sandboxes of someone else.
    let other = store
        .create_user(NewUser {
            email: "other@example.com".into(),
            name: "other".into(),
        })
        .await?;
    let other_project = store
        .create_project(NewProject {
            user_id: other.id,
            name: "other".into(),
        })
        .await?;
    let new_sandbox = |user_id, project_id| NewSandbox {
        user_id,
        project_id,
        config: SandboxConfig::default(),
        cli_tool: "claude".into(),
        model: None,
        prompt: "bench".into(),
        links: SandboxLinks::default(),
        repo_url: None,
        branch: None,
    };
    for _ in 0..4 {
        store
            .create_sandbox(new_sandbox(user.id, project.id))
            .await?;
    }
    for _ in 0..2000 {
        store
            .create_sandbox(new_sandbox(other.id, other_project.id))
            .await?;
    }
    let start = Instant::now();
    let mut gets = 0u64;
    while start.elapsed() < RUN_FOR {
        store.get_sandbox(sandbox.id).await?;
        gets += 1;
    }
    let get_rate = gets as f64 / start.elapsed().as_secs_f64();
    let filter = courier_store::SandboxFilter {
        user_id: Some(user.id),
        ..Default::default()
    };
    let start = Instant::now();
    let mut lists = 0u64;
    while start.elapsed() < RUN_FOR {
        let page = store
            .list_sandboxes(
                filter.clone(),
                courier_store::PageRequest {
                    limit: 20,
                    cursor: None,
                },
            )
            .await?;
        assert_eq!(page.items.len(), 5);
        lists += 1;
    }
    let list_rate = lists as f64 / start.elapsed().as_secs_f64();
    println!(
        "{name}: {get_rate:.0} sandbox gets/s, {list_rate:.0} lists of a user's 5 sandboxes/s"
    );
    Ok(())
}
