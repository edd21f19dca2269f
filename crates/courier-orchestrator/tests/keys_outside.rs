//! [16] Keys that never enter the sandbox, end to end: a real courier-sandboxd whose
//! egress adds each run's proof, Courier's gateway on this host's outward address, the
//! LLM stand-in as the provider and git's own `http-backend` as GitHub.
//!
//! What an agent steered by a prompt injection could try inside its sandbox: read the
//! provider key or the GitHub token from any process's environment, any file, or
//! `git credential fill`; use its run token from elsewhere, or after its run; spend past
//! its budget. Each is checked here.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod e2e_support;

use std::process::Command;
use std::time::Duration;

use courier_e2b::{CommandSpec, SandboxApi};
use courier_gateway::{Gateway, Minter, PROOF_HEADER, Upstreams};
use courier_orchestrator::config::CreateRequest;
use courier_orchestrator::gateway::GatewayLink;
use courier_orchestrator::lifecycle::Orchestrator;
use courier_orchestrator::settings::SettingsUpdate;
use courier_orchestrator::stream::EventHub;
use courier_store::{
    KeyOwner, MessageStatus, Provider, SandboxDefaults, SandboxId, SandboxStatus, UsageMetric,
};
use courier_testkit::binaries::{Build, workspace_binary};
use courier_testkit::git_http::GitHttp;
use e2e_support::{Backend, LONG, TEMPLATE, World, eventually};

const REAL_ANTHROPIC: &str = "sk-ant-api03-REALKEY-never-in-a-sandbox-0000000000";
const REAL_GITHUB: &str = "ghp_REALTOKENneverinasandbox000000000000";
const REPO: &str = "https://github.com/acme/project.git";

/// Everything outside the sandbox: the stand-in provider, GitHub, the gateway.
struct Outside {
    world: World,
    orchestrator: Orchestrator,
    minter: Minter,
    gateway_url: String,
    llm_record: tempfile::NamedTempFile,
    git: GitHttp,
    _repos: tempfile::TempDir,
    standin: std::process::Child,
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = self.standin.kill();
    }
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn outside(test: &str, backend: Backend, budget: Option<u64>) -> Option<Outside> {
    let ip = courier_gateway::outward_ipv4().expect("an outward IPv4 address");
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let gateway_url = format!("http://{}", listener.local_addr().unwrap());
    let allow = format!("{}", listener.local_addr().unwrap());
    let world = World::with_egress_allow(test, backend, &[allow]).await?;

    // The provider: the LLM stand-in, which answers only the real key.
    let llm_record = tempfile::NamedTempFile::new().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let standin = Command::new(workspace_binary(
        "COURIER_LLM_STANDIN_BIN",
        "courier-llm-standin",
        "courier-llm-standin",
        Build::IfMissing,
    ))
    .args(["--listen", &format!("127.0.0.1:{port}")])
    .arg("--record")
    .arg(llm_record.path())
    .env("STANDIN_KEY", REAL_ANTHROPIC)
    .spawn()
    .unwrap();

    // GitHub: acme/project with `main`, reachable only with the real token.
    let repos = tempfile::tempdir().unwrap();
    let bare = repos.path().join("acme/project.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    let seed = repos.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git(&seed, &["init", "-q", "-b", "main"]);
    std::fs::write(seed.join("README.md"), "# project\n").unwrap();
    git(&seed, &["add", "-A"]);
    git(
        &seed,
        &[
            "-c",
            "user.name=s",
            "-c",
            "user.email=s@e",
            "commit",
            "-qm",
            "initial commit",
        ],
    );
    git(&seed, &["push", "-q", bare.to_str().unwrap(), "main"]);
    let github = GitHttp::start(repos.path(), REAL_GITHUB).await;

    let minter = Minter::new(b"the test server's master key......");
    let orchestrator = world
        .orchestrator(EventHub::default())
        .with_gateway(GatewayLink {
            url: gateway_url.clone(),
            minter: minter.clone(),
            proof_at_egress: true,
        })
        .unwrap();
    let gateway = Gateway::new(
        minter.clone(),
        Upstreams {
            anthropic: format!("http://127.0.0.1:{port}"),
            github: github.url.clone(),
            ..Upstreams::default()
        },
        orchestrator.gateway_grants(),
    );
    tokio::spawn(async move { axum::serve(listener, gateway.router()).await });

    let vault = world.vault();
    vault
        .put(
            KeyOwner::Project(world.project),
            Provider::Anthropic,
            REAL_ANTHROPIC,
        )
        .save()
        .await
        .unwrap();
    vault
        .put(
            KeyOwner::Project(world.project),
            Provider::GitHub,
            REAL_GITHUB,
        )
        .save()
        .await
        .unwrap();
    if budget.is_some() {
        vault
            .put_project_settings(
                world.project,
                SettingsUpdate {
                    sandbox_defaults: SandboxDefaults {
                        token_budget: budget,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(Outside {
        world,
        orchestrator,
        minter,
        gateway_url,
        llm_record,
        git: github,
        _repos: repos,
        standin,
    })
}

fn request(o: &Outside, prompt: &str) -> CreateRequest {
    CreateRequest {
        user_id: o.world.user,
        project_id: o.world.project,
        tool: Some("claude".into()),
        prompt: prompt.into(),
        template_id: Some(TEMPLATE.into()),
        repo_url: Some(REPO.into()),
        base_branch: Some("main".into()),
        ..Default::default()
    }
}

/// Runs `script` as root inside the sandbox; its stdout.
async fn inside(o: &Outside, id: SandboxId, script: &str) -> String {
    let sandbox = o.world.store.get_sandbox(id).await.unwrap();
    let record = o
        .world
        .client
        .connect(sandbox.provider_sandbox_id.as_deref().unwrap(), None)
        .await
        .unwrap();
    let out = o
        .world
        .client
        .run(
            &record,
            CommandSpec::new(script)
                .user("root")
                .timeout(Duration::from_secs(120)),
        )
        .await
        .unwrap();
    out.stdout
}

/// The stand-in's figures for every answer it gave, summed per metric.
fn standin_figures(o: &Outside) -> [u64; 4] {
    let mut sum = [0u64; 4];
    for line in std::fs::read_to_string(o.llm_record.path())
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let f = &v["answer"]["figures"];
        for (i, k) in ["input", "output", "cache_read", "cache_write"]
            .iter()
            .enumerate()
        {
            sum[i] += f[k].as_u64().unwrap_or(0);
        }
    }
    sum
}

async fn billed(o: &Outside, id: SandboxId) -> [u64; 4] {
    let totals = o.world.store.usage_for_sandbox(id).await.unwrap();
    let get = |m: UsageMetric| {
        totals
            .iter()
            .filter(|t| t.metric == m)
            .map(|t| t.quantity as u64)
            .sum::<u64>()
    };
    [
        get(UsageMetric::InputTokens),
        get(UsageMetric::OutputTokens),
        get(UsageMetric::CacheReadTokens),
        get(UsageMetric::CacheWriteTokens),
    ]
}

async fn with_token(o: &Outside, token: &str, proof: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("{}/llm/anthropic/v1/messages", o.gateway_url))
        .header("x-api-key", token)
        .json(&serde_json::json!({"model": "m", "max_tokens": 8, "messages": []}));
    if let Some(proof) = proof {
        request = request.header(PROOF_HEADER, proof);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn the_keys_never_enter_the_sandbox(backend: Backend) {
    let Some(o) = outside("the_keys_never_enter_the_sandbox", backend, None).await else {
        return;
    };
    let sandbox = o
        .orchestrator
        .create(request(&o, "CALL_LLM fix the login CALL_LLM"))
        .await
        .unwrap();
    let id = sandbox.id;
    assert!(sandbox.config.keys_via_gateway);
    eventually("the agent's answer", LONG, || async {
        let m = o.world.store.list_messages(id, 0, 50).await.unwrap();
        !o.orchestrator.is_working(id)
            && m.len() >= 2
            && m.iter().all(|m| m.status != MessageStatus::Streaming)
    })
    .await;
    let messages = o.world.store.list_messages(id, 0, 50).await.unwrap();
    let answer = messages.last().unwrap();
    assert_eq!(answer.status, MessageStatus::Completed, "{answer:?}");
    assert!(answer.content.contains("Done: "), "{}", answer.content);

    // The agent made its two calls through the gateway with the real key (the stand-in
    // refuses any other), and what was billed is what the stand-in reported, once.
    let figures = standin_figures(&o);
    assert!(figures[0] > 0, "the stand-in answered no call");
    eventually(
        "the gateway's usage billed",
        Duration::from_secs(20),
        || async { billed(&o, id).await == figures },
    )
    .await;

    // Nothing inside holds a real secret: no process's environment, no file, and git's
    // credential machinery has nothing to give.
    let hunt = format!(
        "for e in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $e; done | grep -c -e '{REAL_ANTHROPIC}' -e '{REAL_GITHUB}'; \
         grep -rIl -e '{REAL_ANTHROPIC}' -e '{REAL_GITHUB}' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null | head; \
         printf 'protocol=https\\nhost=github.com\\n\\n' | su -s /bin/sh user -c 'cd /home/user/project && GIT_TERMINAL_PROMPT=0 git credential fill' 2>&1; \
         echo proof:; grep -rIl -e '{}' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev 2>/dev/null | head",
        o.minter.mint(&id.to_string()).proof.expose()
    );
    let found = inside(&o, id, &hunt).await;
    assert!(
        !found.contains(REAL_ANTHROPIC) && !found.contains(REAL_GITHUB),
        "{found}"
    );
    let mut lines = found.lines();
    assert_eq!(
        lines.next(),
        Some("0"),
        "a process's environment holds a real key: {found}"
    );
    let after_proof = found.split("proof:").nth(1).unwrap_or("");
    assert!(
        after_proof.trim().is_empty(),
        "the proof is in a file inside: {after_proof}"
    );
    // What the agent does hold is its run token, worthless outside: from this host (no
    // proof) it is refused while the run lives.
    let token = o.minter.mint(&id.to_string()).token;
    let held = inside(&o, id, "cat /home/user/.courier/gateway.gitconfig").await;
    assert!(held.contains(token.expose()), "{held}");
    assert_eq!(with_token(&o, token.expose(), None).await, 401);

    // The kill pushes the agent's commit through the gateway to "GitHub".
    let killed = o.orchestrator.kill(id, None).await.unwrap();
    assert_eq!(killed.status, SandboxStatus::Killed);
    let branch = killed.git.branch.clone().unwrap();
    let log = git(
        &o.git.root.join("acme/project.git"),
        &["log", "--format=%s", &branch],
    );
    assert!(
        log.contains("initial commit") && log.lines().count() >= 2,
        "{log}"
    );
    // After the run, its token is dead even with its proof.
    let proof = o.minter.mint(&id.to_string()).proof;
    assert_eq!(
        with_token(&o, token.expose(), Some(proof.expose())).await,
        401
    );
}

async fn a_spent_budget_stops_the_run_with_its_work_saved(backend: Backend) {
    let Some(o) = outside("a_spent_budget_stops_the_run", backend, Some(50)).await else {
        return;
    };
    // The first call spends more than 50 tokens (the stand-in's 86 for a call that offers
    // no tools); the second is refused.
    let sandbox = o
        .orchestrator
        .create(request(&o, "CALL_LLM then more CALL_LLM"))
        .await
        .unwrap();
    let id = sandbox.id;
    eventually("the run to end over budget", LONG, || async {
        o.world
            .store
            .get_sandbox(id)
            .await
            .unwrap()
            .status
            .is_final()
    })
    .await;
    let ended = o.world.store.get_sandbox(id).await.unwrap();
    assert_eq!(ended.status, SandboxStatus::Error, "{ended:?}");
    let reason = ended.error_message.clone().unwrap_or_default();
    assert!(reason.contains("token budget is spent"), "{reason}");
    // One call reached the provider; the commit made before the refusal was pushed.
    let calls = std::fs::read_to_string(o.llm_record.path())
        .unwrap()
        .lines()
        .count();
    assert_eq!(calls, 1);
    let log = git(
        &o.git.root.join("acme/project.git"),
        &["log", "--format=%s", ended.git.branch.as_deref().unwrap()],
    );
    assert!(log.lines().count() >= 2, "the work was not saved: {log}");
}

on_both_backends!(
    the_keys_never_enter_the_sandbox,
    a_spent_budget_stops_the_run_with_its_work_saved
);
