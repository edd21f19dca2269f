//! The pull request pipeline against real parts: a real bare git repository as the remote,
//! real git commands run by a host-side sandbox, and a local GitHub stand-in answering
//! with recorded GitHub bodies.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use courier_orchestrator::OrchestratorError;
use courier_orchestrator::pr::{
    PrConfig, PrOutcome, PrPipeline, RepoSlug, WebhookEvent, handle_webhook,
};
use courier_store::{MessageRole, PrStatus, Sandbox, Store};
use courier_tools::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::{LocalSandbox, Recorded, Reply, Repos, StandIn, fixture, record, say, seeded};

const TOKEN: &str = "ghp_testtoken0000000000000000000000abcd";
const PROMPT: &str = "Fix the login\n\nSafari users are logged out after every refresh.";

struct World {
    store: Arc<dyn Store>,
    sandbox: Sandbox,
    repos: Repos,
    github: StandIn,
    pipeline: PrPipeline,
}

async fn world(branch: &str, github: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> World {
    let (store, _, sandbox) = seeded(PROMPT).await;
    say(store.as_ref(), &sandbox, MessageRole::User, PROMPT).await;
    say(
        store.as_ref(),
        &sandbox,
        MessageRole::Assistant,
        "Fixed the session cookie's SameSite attribute; added a regression test.",
    )
    .await;
    let repos = Repos::new(branch);
    let github = StandIn::start(github).await;
    let pipeline = PrPipeline::new(
        store.clone(),
        Arc::new(LocalSandbox::default()),
        PrConfig {
            api_base: github.url.clone(),
            project_dir: repos.project().display().to_string(),
            push_timeout: Duration::from_secs(20),
            request_timeout: Duration::from_secs(10),
        },
    );
    World {
        store,
        sandbox,
        repos,
        github,
        pipeline,
    }
}

impl World {
    async fn open(&self) -> PrOutcome {
        self.pipeline
            .open(self.sandbox.id, &record(), Some(&Secret::new(TOKEN)))
            .await
            .unwrap()
    }

    async fn stored(&self) -> Sandbox {
        self.store.get_sandbox(self.sandbox.id).await.unwrap()
    }
}

fn created(_: &Recorded) -> Reply {
    Reply::json(201, fixture("github/create_pull_201.json"))
}

#[tokio::test]
async fn a_feature_branch_is_pushed_to_the_remote_and_opened_as_a_pull_request() {
    let w = world("courier/login", created).await;
    let outcome = w.open().await;
    assert_eq!(
        outcome,
        PrOutcome::Created {
            number: 201,
            url: "https://github.com/acme/engine/pull/201".into()
        }
    );

    // The work really reached the remote.
    assert_eq!(
        w.repos.remote_ref("refs/heads/courier/login"),
        Some(w.repos.head())
    );

    // One request, as GitHub expects it.
    let requests = w.github.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/repos/acme/engine/pulls");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let body = request.json();
    assert_eq!(body["title"], "Fix the login");
    assert_eq!(body["head"], "courier/login");
    assert_eq!(body["base"], "main");
    let text = body["body"].as_str().unwrap();
    assert!(text.contains("Safari users are logged out"), "{text}");
    assert!(text.contains("SameSite attribute"), "{text}");

    let git = w.stored().await.git;
    assert_eq!(git.pr_status, Some(PrStatus::Created));
    assert_eq!(git.pr_number, Some(201));
    assert_eq!(
        git.pr_url.as_deref(),
        Some("https://github.com/acme/engine/pull/201")
    );
    assert_eq!(git.branch.as_deref(), Some("courier/login"));
    assert_eq!(git.repo_url.as_deref(), Some(support::GITHUB_REMOTE));
}

#[tokio::test]
async fn main_and_master_are_skipped_without_a_push_or_a_request() {
    for branch in ["main", "master"] {
        let w = world(branch, created).await;
        let before = w.repos.remote_ref("refs/heads/main");
        let outcome = w.open().await;
        assert!(
            matches!(&outcome, PrOutcome::Skipped { reason } if reason.contains(branch)),
            "{outcome:?}"
        );
        assert!(w.github.requests().is_empty());
        assert_eq!(
            w.repos.remote_ref("refs/heads/main"),
            before,
            "nothing pushed"
        );
        assert_eq!(w.stored().await.git.pr_status, Some(PrStatus::Skipped));
    }
}

#[tokio::test]
async fn an_already_open_pull_request_of_the_branch_is_recorded() {
    // A later sandbox on the same branch (a work chain) finds its PR open already.
    let w = world("courier/login", |r| match r.method.as_str() {
        "POST" => Reply::json(422, fixture("github/create_pull_422_exists.json")),
        _ => Reply::json(200, fixture("github/list_pulls_open_head.json")),
    })
    .await;
    let outcome = w.open().await;
    assert_eq!(
        outcome,
        PrOutcome::Created {
            number: 201,
            url: "https://github.com/acme/engine/pull/201".into()
        }
    );
    let lookup = w.github.requests().pop().unwrap();
    assert_eq!(
        (lookup.method.as_str(), lookup.path.as_str()),
        ("GET", "/repos/acme/engine/pulls")
    );
    assert!(lookup.query.contains("state=open"), "{}", lookup.query);
    assert!(
        lookup.query.contains("head=acme%3Acourier%2Flogin"),
        "{}",
        lookup.query
    );
    let git = w.stored().await.git;
    assert_eq!(
        (git.pr_status, git.pr_number),
        (Some(PrStatus::Created), Some(201))
    );
}

#[tokio::test]
async fn a_validation_error_fails_with_githubs_reason_and_the_branch_is_kept() {
    let w = world("courier/login", |r| match r.method.as_str() {
        "POST" => Reply::json(422, fixture("github/create_pull_422_exists.json")),
        // The PR named in the error is not open (closed meanwhile): nothing to record.
        _ => Reply::json(200, "[]"),
    })
    .await;
    let outcome = w.open().await;
    let PrOutcome::Failed { reason } = outcome else {
        panic!("{outcome:?}");
    };
    assert!(reason.contains("422"), "{reason}");
    assert!(
        reason.contains("A pull request already exists for acme:courier/login."),
        "{reason}"
    );
    let stored = w.stored().await.git;
    assert_eq!(stored.pr_status, Some(PrStatus::Failed));
    assert_eq!(stored.pr_error.as_deref(), Some(reason.as_str()));
    assert_eq!(
        w.repos.remote_ref("refs/heads/courier/login"),
        Some(w.repos.head()),
        "pushed before GitHub was asked"
    );
}

#[tokio::test]
async fn a_github_enterprise_base_url_keeps_its_api_path() {
    let mut w = world("courier/login", created).await;
    w.pipeline = PrPipeline::new(
        w.store.clone(),
        Arc::new(LocalSandbox::default()),
        PrConfig {
            api_base: format!("{}/api/v3", w.github.url),
            ..w.pipeline.config().clone()
        },
    );
    assert!(matches!(
        w.open().await,
        PrOutcome::Created { number: 201, .. }
    ));
    assert_eq!(
        w.github.requests()[0].path,
        "/api/v3/repos/acme/engine/pulls"
    );
}

#[tokio::test]
async fn bad_credentials_fail_with_the_401_and_never_echo_the_token() {
    let w = world("courier/login", |_| {
        Reply::json(401, fixture("github/bad_credentials_401.json"))
    })
    .await;
    let PrOutcome::Failed { reason } = w.open().await else {
        panic!("expected a failure");
    };
    assert!(
        reason.contains("401") && reason.contains("Bad credentials"),
        "{reason}"
    );
    assert!(!reason.contains(TOKEN));
    let stored = w.stored().await.git;
    assert_eq!(stored.pr_status, Some(PrStatus::Failed));
    assert_eq!(stored.pr_error.as_deref(), Some(reason.as_str()));
}

#[tokio::test]
async fn without_a_token_the_pr_fails_naming_where_to_add_one() {
    let w = world("courier/login", created).await;
    let outcome = w
        .pipeline
        .open(w.sandbox.id, &record(), None)
        .await
        .unwrap();
    let PrOutcome::Failed { reason } = outcome else {
        panic!("{outcome:?}");
    };
    assert!(reason.contains("no GitHub token"), "{reason}");
    assert!(w.github.requests().is_empty());
}

#[tokio::test]
async fn a_hanging_push_is_cut_off_and_the_work_stays_committed() {
    let mut w = world("courier/login", created).await;
    w.repos.remote_hook("sleep 60");
    w.pipeline = PrPipeline::new(
        w.store.clone(),
        Arc::new(LocalSandbox::default()),
        PrConfig {
            push_timeout: Duration::from_secs(1),
            ..w.pipeline.config().clone()
        },
    );
    let head = w.repos.head();
    let PrOutcome::Failed { reason } = w.open().await else {
        panic!("expected a failure");
    };
    assert!(
        reason.contains("push") && reason.contains("timed out"),
        "{reason}"
    );
    assert!(
        w.github.requests().is_empty(),
        "no PR for an unpushed branch"
    );
    let stored = w.stored().await.git;
    assert_eq!(stored.pr_status, Some(PrStatus::Failed));
    assert_eq!(stored.pr_error.as_deref(), Some(reason.as_str()));
    // Nothing was lost: the branch and its commit are still there.
    assert_eq!(
        support::git(&w.repos.project(), &["rev-parse", "courier/login"]),
        head
    );
    assert_eq!(w.repos.remote_ref("refs/heads/courier/login"), None);
}

#[tokio::test]
async fn a_rejected_push_fails_with_gits_message_and_the_work_stays_committed() {
    let w = world("courier/login", created).await;
    w.repos
        .remote_hook("echo 'protected: pushes are closed for maintenance' >&2; exit 1");
    let head = w.repos.head();
    let PrOutcome::Failed { reason } = w.open().await else {
        panic!("expected a failure");
    };
    assert!(reason.contains("git push failed"), "{reason}");
    assert!(
        reason.contains("pushes are closed for maintenance"),
        "{reason}"
    );
    assert_eq!(
        support::git(&w.repos.project(), &["rev-parse", "courier/login"]),
        head
    );
    assert!(w.github.requests().is_empty());
}

/// The project's `origin` renamed to `url`; pushes still land in the bare repo.
fn set_origin(w: &World, url: &str) {
    let project = w.repos.project();
    support::git(&project, &["remote", "set-url", "origin", url]);
    let bare = w.repos.remote();
    support::git(
        &project,
        &["config", &format!("url.{}.insteadOf", bare.display()), url],
    );
}

#[tokio::test]
async fn a_remote_not_on_github_gets_the_push_and_the_pr_is_skipped_with_the_reason() {
    for origin in [
        "https://gitlab.example.com/acme/engine.git".to_owned(),
        // A bare repository named by its path: no host at all.
        String::new(),
    ] {
        let w = world("courier/login", created).await;
        let origin = if origin.is_empty() {
            w.repos.remote().display().to_string()
        } else {
            origin
        };
        set_origin(&w, &origin);
        let PrOutcome::Skipped { reason } = w.open().await else {
            panic!("expected a skip for {origin}");
        };
        assert!(
            reason.contains("not on GitHub") && reason.contains(&origin),
            "{reason}"
        );
        // The work reached the remote all the same; GitHub was never asked.
        assert_eq!(
            w.repos.remote_ref("refs/heads/courier/login"),
            Some(w.repos.head())
        );
        assert!(w.github.requests().is_empty());
        let stored = w.stored().await.git;
        assert_eq!(stored.pr_status, Some(PrStatus::Skipped));
        assert_eq!(stored.pr_error.as_deref(), Some(reason.as_str()));
        assert_eq!(stored.repo_url.as_deref(), Some(origin.as_str()));
    }
}

#[tokio::test]
async fn a_rejected_push_to_a_remote_not_on_github_fails() {
    let w = world("courier/login", created).await;
    set_origin(&w, "https://gitlab.example.com/acme/engine.git");
    w.repos.remote_hook("echo 'read-only mirror' >&2; exit 1");
    let PrOutcome::Failed { reason } = w.open().await else {
        panic!("expected a failure");
    };
    assert!(reason.contains("read-only mirror"), "{reason}");
    assert_eq!(w.stored().await.git.pr_status, Some(PrStatus::Failed));
}

#[tokio::test]
async fn a_merge_is_found_by_polling() {
    let w = world("courier/login", |r| {
        if r.method == "GET" {
            Reply::json(200, fixture("github/pull_201_merged.json"))
        } else {
            created(r)
        }
    })
    .await;
    w.open().await;
    let status = w
        .pipeline
        .poll_merged(w.sandbox.id, &Secret::new(TOKEN))
        .await
        .unwrap();
    assert_eq!(status, Some(PrStatus::Merged));
    let get = w.github.requests().pop().unwrap();
    assert_eq!(
        (get.method.as_str(), get.path.as_str()),
        ("GET", "/repos/acme/engine/pulls/201")
    );
    assert_eq!(w.stored().await.git.pr_status, Some(PrStatus::Merged));
}

#[tokio::test]
async fn an_open_pull_request_stays_created_when_polled() {
    let w = world("courier/login", |r| {
        if r.method == "GET" {
            Reply::json(200, fixture("github/create_pull_201.json"))
        } else {
            created(r)
        }
    })
    .await;
    w.open().await;
    let status = w
        .pipeline
        .poll_merged(w.sandbox.id, &Secret::new(TOKEN))
        .await
        .unwrap();
    assert_eq!(status, Some(PrStatus::Created));
}

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn a_signed_merge_webhook_marks_the_sandbox_merged() {
    let w = world("courier/login", created).await;
    w.open().await;
    let body = fixture("github/webhook_pull_request_closed_merged.json");
    let secret = b"webhook-secret";

    let forged = handle_webhook(
        secret,
        Some("pull_request"),
        Some(&sign(b"guess", body.as_bytes())),
        body.as_bytes(),
    );
    assert!(matches!(forged, Err(OrchestratorError::Webhook(_))));
    assert_eq!(w.stored().await.git.pr_status, Some(PrStatus::Created));

    let event = handle_webhook(
        secret,
        Some("pull_request"),
        Some(&sign(secret, body.as_bytes())),
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(
        event,
        WebhookEvent::PullRequestMerged {
            repo: RepoSlug {
                owner: "acme".into(),
                repo: "engine".into()
            },
            number: 201,
            url: "https://github.com/acme/engine/pull/201".into(),
        }
    );
    let marked = w.pipeline.record_webhook(&event).await.unwrap();
    assert_eq!(marked, vec![w.sandbox.id]);
    assert_eq!(w.stored().await.git.pr_status, Some(PrStatus::Merged));

    // A delivery of an unmerged close is read but changes nothing.
    let unmerged = body.replace("\"merged\": true", "\"merged\": false");
    let event = handle_webhook(
        secret,
        Some("pull_request"),
        Some(&sign(secret, unmerged.as_bytes())),
        unmerged.as_bytes(),
    )
    .unwrap();
    assert!(matches!(event, WebhookEvent::Ignored { .. }), "{event:?}");
}
