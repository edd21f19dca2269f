//! Project settings.

use super::seed::*;
use crate::*;

fn var(name: &str, last_four: &str) -> EncryptedEnvVar {
    EncryptedEnvVar {
        name: name.into(),
        ciphertext: vec![0, 1, 2, 0xff],
        last_four: last_four.into(),
    }
}

fn text(name: &str, content: &str) -> NamedText {
    NamedText {
        name: name.into(),
        content: content.into(),
    }
}

/// Settings start empty, are replaced whole (env vars sorted by name), reject duplicate
/// names without storing anything, and belong to an existing project.
pub async fn project_settings_are_replaced_whole(store: &dyn Store) {
    let p = project(store).await;
    assert_eq!(
        store.get_project_settings(p.id).await.unwrap(),
        ProjectSettings::default()
    );

    let first = ProjectSettings {
        repo_url: Some("https://example.invalid/repo.git".into()),
        base_branch: Some("main".into()),
        env_vars: vec![var("ZED", "wxyz"), var("ALPHA", "abcd")],
        system_prompt: Some("Be brief.".into()),
        claude_md: Some("# Rules\n".into()),
        skills: vec![text("review", "---\nname: review\n---\n")],
        commands: vec![text("deploy", "Deploy it."), text("a_b", "AB")],
        sandbox_defaults: SandboxDefaults {
            tool: Some("claude".into()),
            model: Some("sonnet".into()),
            memory_mb: Some(2048),
            cpu_count: Some(4),
            timeout_ms: Some(600_000),
            template_id: Some("tpl".into()),
            ..Default::default()
        },
    };
    let stored = store
        .put_project_settings(p.id, first.clone())
        .await
        .unwrap();
    let mut expected = first.clone();
    expected.env_vars.reverse();
    assert_eq!(stored, expected);
    assert_eq!(store.get_project_settings(p.id).await.unwrap(), expected);

    // Replacing drops what the new settings leave out.
    let second = ProjectSettings {
        env_vars: vec![var("BETA", "1234")],
        ..ProjectSettings::default()
    };
    store
        .put_project_settings(p.id, second.clone())
        .await
        .unwrap();
    assert_eq!(store.get_project_settings(p.id).await.unwrap(), second);

    // Duplicate names are invalid and change nothing.
    for bad in [
        ProjectSettings {
            env_vars: vec![var("X", "1"), var("X", "2")],
            ..ProjectSettings::default()
        },
        ProjectSettings {
            skills: vec![text("s", "1"), text("s", "2")],
            ..ProjectSettings::default()
        },
        ProjectSettings {
            commands: vec![text("c", "1"), text("c", "2")],
            ..ProjectSettings::default()
        },
        ProjectSettings {
            env_vars: vec![var("LONG", "12345")],
            ..ProjectSettings::default()
        },
    ] {
        let err = store.put_project_settings(p.id, bad).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput { .. }), "{err:?}");
    }
    assert_eq!(store.get_project_settings(p.id).await.unwrap(), second);

    // Another project's settings are its own.
    let other = project(store).await;
    assert_eq!(
        store.get_project_settings(other.id).await.unwrap(),
        ProjectSettings::default()
    );

    expect_not_found(
        store.get_project_settings(ProjectId::new()).await,
        "project",
    );
    expect_not_found(
        store.put_project_settings(ProjectId::new(), first).await,
        "project",
    );
}
