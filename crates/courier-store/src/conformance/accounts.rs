//! Users, projects and provider keys.

use super::seed::*;
use crate::*;

/// Users and projects round-trip; duplicate e-mails conflict; unknown ids are not found.
pub async fn users_and_projects_round_trip(store: &dyn Store) {
    let u = user(store).await;
    assert_eq!(store.get_user(u.id).await.unwrap(), u);
    assert_eq!(store.get_user_by_email(&u.email).await.unwrap(), u);
    expect_conflict(
        store
            .create_user(NewUser {
                email: u.email.clone(),
                name: "again".into(),
            })
            .await,
    );
    expect_not_found(store.get_user(UserId::new()).await, "user");
    expect_not_found(store.get_user_by_email("nobody@example.com").await, "user");

    let p = store
        .create_project(NewProject {
            user_id: u.id,
            name: "p1".into(),
        })
        .await
        .unwrap();
    assert_eq!(p.active_sandboxes, 0);
    assert_eq!(store.get_project(p.id).await.unwrap(), p);
    let p2 = store
        .create_project(NewProject {
            user_id: u.id,
            name: "p2".into(),
        })
        .await
        .unwrap();
    let listed: Vec<_> = store
        .list_projects(u.id)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(listed, vec![p.id, p2.id]);
    expect_not_found(
        store
            .create_project(NewProject {
                user_id: UserId::new(),
                name: "x".into(),
            })
            .await,
        "user",
    );
    expect_not_found(store.get_project(ProjectId::new()).await, "project");
}

/// Keys are kept per user and per project, replaced in place, and deleted.
pub async fn provider_keys_at_user_and_project_level(store: &dyn Store) {
    let p = project(store).await;
    let user = KeyOwner::User(p.user_id);
    let proj = KeyOwner::Project(p.id);
    let key = |bytes: &[u8], last: &str| NewProviderKey {
        ciphertext: bytes.to_vec(),
        last_four: last.into(),
    };

    let uk = store
        .put_provider_key(user, Provider::Anthropic, key(&[1, 2, 3], "abcd"))
        .await
        .unwrap();
    assert_eq!(
        (uk.owner, uk.provider, uk.last_four.as_str()),
        (user, Provider::Anthropic, "abcd")
    );
    let pk = store
        .put_provider_key(proj, Provider::Anthropic, key(&[9, 9], "wxyz"))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_provider_key(user, Provider::Anthropic)
            .await
            .unwrap(),
        Some(uk.clone())
    );
    assert_eq!(
        store
            .get_provider_key(proj, Provider::Anthropic)
            .await
            .unwrap(),
        Some(pk)
    );
    assert_eq!(
        store
            .get_provider_key(user, Provider::OpenAi)
            .await
            .unwrap(),
        None
    );

    let replaced = store
        .put_provider_key(user, Provider::Anthropic, key(&[4, 5], "efgh"))
        .await
        .unwrap();
    assert_eq!(replaced.id, uk.id, "replacing keeps the key's identity");
    assert_eq!(
        (replaced.ciphertext.as_slice(), replaced.last_four.as_str()),
        (&[4u8, 5][..], "efgh")
    );
    assert_eq!(replaced.created_at, uk.created_at);

    store
        .put_provider_key(user, Provider::GitHub, key(&[7], "1234"))
        .await
        .unwrap();
    let providers: Vec<_> = store
        .list_provider_keys(user)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.provider)
        .collect();
    assert_eq!(providers, vec![Provider::Anthropic, Provider::GitHub]);

    store
        .delete_provider_key(user, Provider::Anthropic)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_provider_key(user, Provider::Anthropic)
            .await
            .unwrap(),
        None
    );
    expect_not_found(
        store.delete_provider_key(user, Provider::Anthropic).await,
        "provider key",
    );
    expect_invalid(
        store
            .put_provider_key(user, Provider::E2b, key(&[1], "toolong"))
            .await,
        "last_four",
    );
    expect_not_found(
        store
            .put_provider_key(
                KeyOwner::Project(ProjectId::new()),
                Provider::E2b,
                key(&[1], "1"),
            )
            .await,
        "project",
    );
}
