//! The gateway between a real LLM stand-in and git's own `http-backend`, driven as the
//! CLIs and git inside a sandbox drive it. What an attacker holding a sandbox's run token
//! tries is refused: the token from outside (without its proof), after the run ended,
//! another provider, another repository, another branch.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::{Arc, Mutex};

use courier_gateway::{
    Budget, GitGrant, Grant, Grants, Minter, PROOF_HEADER, Provider, ProviderCredential, Refusal,
    RunCredentials, TokenUsage, Upstreams,
};
use courier_secret::Secret;
use courier_testkit::binaries::{Build, workspace_binary};
use courier_testkit::git_http::GitHttp;

const RUN: &str = "0190c3a4-0000-7000-8000-00000000beef";
const REAL_KEY: &str = "sk-real-provider-key-0000000000000000";
const REAL_GITHUB: &str = "ghp_realgithubtoken00000000000000000000";

#[derive(Default)]
struct Runs {
    live: bool,
    budget: Option<u64>,
    recorded: Vec<(Provider, TokenUsage)>,
}

/// The application's side, as the orchestrator plays it: one run, live or not.
#[derive(Clone, Default)]
struct OneRun(Arc<Mutex<Runs>>);

#[async_trait::async_trait]
impl Grants for OneRun {
    async fn grant(&self, run: &str) -> Result<Grant, Refusal> {
        let runs = self.0.lock().unwrap();
        if run != RUN || !runs.live {
            return Err(Refusal::RunEnded { run: run.into() });
        }
        let used = runs.recorded.iter().map(|(_, u)| u.total()).sum();
        Ok(Grant {
            proof_required: true,
            credentials: vec![
                (
                    Provider::Anthropic,
                    ProviderCredential::ApiKey(Secret::new(REAL_KEY)),
                ),
                (
                    Provider::OpenAi,
                    ProviderCredential::ApiKey(Secret::new(REAL_KEY)),
                ),
            ],
            git: Some(GitGrant {
                repo: "acme/project".into(),
                branch: "courier/run".into(),
                token: Secret::new(REAL_GITHUB),
            }),
            budget: runs.budget.map(|limit| Budget { limit, used }),
        })
    }

    async fn record_usage(&self, _run: &str, provider: Provider, usage: TokenUsage) {
        self.0.lock().unwrap().recorded.push((provider, usage));
    }
}

struct World {
    url: String,
    runs: OneRun,
    credentials: RunCredentials,
    record: tempfile::NamedTempFile,
    _standin: std::process::Child,
    _git: Option<GitHttp>,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self._standin.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn world(git: Option<GitHttp>) -> World {
    let standin = workspace_binary(
        "COURIER_LLM_STANDIN_BIN",
        "courier-llm-standin",
        "courier-llm-standin",
        Build::IfMissing,
    );
    let record = tempfile::NamedTempFile::new().unwrap();
    let port = free_port();
    let child = Command::new(standin)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--record")
        .arg(record.path())
        .env("STANDIN_KEY", REAL_KEY)
        .spawn()
        .unwrap();
    let llm = format!("http://127.0.0.1:{port}");
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let runs = OneRun::default();
    runs.0.lock().unwrap().live = true;
    let minter = Minter::new(b"a test server secret");
    let credentials = minter.mint(RUN);
    let upstreams = Upstreams {
        anthropic: llm.clone(),
        openai: llm.clone(),
        openrouter: llm,
        github: git.as_ref().map(|g| g.url.clone()).unwrap_or_default(),
    };
    let gateway = courier_gateway::Gateway::new(minter, upstreams, Arc::new(runs.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, gateway.router()).await });
    World {
        url,
        runs,
        credentials,
        record,
        _standin: child,
        _git: git,
    }
}

/// A Claude Code-style streamed Messages request carrying `key`, with the proof when
/// given (the sandbox's egress adds it; the sandbox itself never holds it).
async fn claude_turn(world: &World, key: &str, proof: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/llm/anthropic/v1/messages", world.url))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&serde_json::json!({
            "model": "claude-sonnet-4-5", "stream": true, "max_tokens": 100,
            "messages": [{"role": "user", "content": "hello"}],
        }));
    if let Some(proof) = proof {
        request = request.header(PROOF_HEADER, proof);
    }
    request.send().await.unwrap()
}

async fn recorded(world: &World, n: usize) -> Vec<(Provider, TokenUsage)> {
    for _ in 0..200 {
        let got = world.runs.0.lock().unwrap().recorded.clone();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    world.runs.0.lock().unwrap().recorded.clone()
}

#[tokio::test]
async fn a_streamed_turn_reaches_the_provider_with_the_real_key_and_is_counted() {
    let world = world(None).await;
    let c = &world.credentials;
    let answer = claude_turn(&world, c.token.expose(), Some(c.proof.expose())).await;
    assert_eq!(answer.status(), 200);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = answer.text().await.unwrap();
    assert!(text.contains("message_stop"), "{text}");
    // The stand-in's figures for a side request (no tools offered), read at the gateway.
    let got = recorded(&world, 1).await;
    let line = std::fs::read_to_string(world.record.path()).unwrap();
    let reply: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    let figures = &reply["answer"]["figures"];
    assert_eq!(
        got,
        vec![(
            Provider::Anthropic,
            TokenUsage {
                input: figures["input"].as_u64().unwrap(),
                output: figures["output"].as_u64().unwrap(),
                cache_read: figures["cache_read"].as_u64().unwrap(),
                cache_write: figures["cache_write"].as_u64().unwrap(),
            }
        )],
        "{reply}"
    );
    // Neither the run token nor the proof travelled upstream.
    assert!(
        !line.contains(c.token.expose()) && !line.contains(c.proof.expose()),
        "{line}"
    );
}

#[tokio::test]
async fn codex_and_chat_style_turns_are_counted_from_their_own_usage_shapes() {
    let world = world(None).await;
    let c = &world.credentials;
    let client = reqwest::Client::new();
    let responses = client
        .post(format!("{}/llm/openai/v1/responses", world.url))
        .bearer_auth(c.token.expose())
        .header(PROOF_HEADER, c.proof.expose())
        .json(&serde_json::json!({"model": "gpt-5", "stream": true, "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(responses.status(), 200);
    assert!(
        responses
            .text()
            .await
            .unwrap()
            .contains("response.completed")
    );
    let got = recorded(&world, 1).await;
    assert_eq!(got[0].0, Provider::OpenAi);
    assert!(got[0].1.input > 0 && got[0].1.output > 0, "{got:?}");
    // OpenRouter has no key in this run: refused by name, nothing sent.
    let chat = client
        .post(format!(
            "{}/llm/openrouter/api/v1/chat/completions",
            world.url
        ))
        .bearer_auth(c.token.expose())
        .header(PROOF_HEADER, c.proof.expose())
        .json(&serde_json::json!({"model": "x", "stream": true, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 403);
    assert!(chat.text().await.unwrap().contains("no openrouter key"));
}

#[tokio::test]
async fn a_run_token_is_worthless_outside_its_sandbox_and_after_its_run() {
    let world = world(None).await;
    let c = &world.credentials;
    // From outside the sandbox: the token without the proof its egress adds.
    let answer = claude_turn(&world, c.token.expose(), None).await;
    assert_eq!(answer.status(), 401);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("only accepted from its own sandbox")
    );
    // With another run's proof, a forged token, the real key itself.
    let other = Minter::new(b"a test server secret").mint("0190c3a4-0000-7000-8000-000000000000");
    for (key, proof) in [
        (c.token.expose(), other.proof.expose()),
        (other.token.expose(), other.proof.expose()),
        (
            "crt_0190c3a4-0000-7000-8000-00000000beef.AAAA",
            c.proof.expose(),
        ),
        (REAL_KEY, c.proof.expose()),
    ] {
        assert_eq!(
            claude_turn(&world, key, Some(proof)).await.status(),
            401,
            "{key}"
        );
    }
    // After the run ends, its token dies with it.
    assert_eq!(
        claude_turn(&world, c.token.expose(), Some(c.proof.expose()))
            .await
            .status(),
        200
    );
    world.runs.0.lock().unwrap().live = false;
    let answer = claude_turn(&world, c.token.expose(), Some(c.proof.expose())).await;
    assert_eq!(answer.status(), 401);
    assert!(answer.text().await.unwrap().contains("is not live"));
    // Nothing of that reached the provider but the one allowed turn.
    let lines = std::fs::read_to_string(world.record.path()).unwrap();
    assert_eq!(lines.lines().count(), 1, "{lines}");
}

#[tokio::test]
async fn a_spent_budget_stops_the_next_turn() {
    let world = world(None).await;
    let c = &world.credentials;
    world.runs.0.lock().unwrap().budget = Some(10);
    let first = claude_turn(&world, c.token.expose(), Some(c.proof.expose())).await;
    assert_eq!(first.status(), 200);
    // Counted once the answer has streamed to its end.
    first.text().await.unwrap();
    let used = recorded(&world, 1).await[0].1.total();
    assert!(used > 10);
    let answer = claude_turn(&world, c.token.expose(), Some(c.proof.expose())).await;
    assert_eq!(answer.status(), 403);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("({used} of 10 tokens)")),
        "{body}"
    );
}

fn git(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap()
}

fn git_ok(dir: &std::path::Path, args: &[&str]) {
    let out = git(dir, args);
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// git runs as a blocking child process: the servers need a thread of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_reaches_only_its_repository_and_pushes_only_its_branch() {
    let root = tempfile::tempdir().unwrap();
    let repos = root.path().join("repos");
    for repo in ["acme/project.git", "acme/other.git"] {
        std::fs::create_dir_all(repos.join(repo)).unwrap();
        git_ok(
            &repos.join(repo),
            &["init", "--quiet", "--bare", "-b", "main"],
        );
    }
    let seed = root.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git_ok(&seed, &["init", "--quiet", "-b", "main"]);
    git_ok(
        &seed,
        &[
            "-c",
            "user.name=a",
            "-c",
            "user.email=a@b",
            "commit",
            "--quiet",
            "--allow-empty",
            "-m",
            "seed",
        ],
    );
    git_ok(
        &seed,
        &[
            "push",
            "--quiet",
            repos.join("acme/project.git").to_str().unwrap(),
            "main",
        ],
    );
    let world = world(Some(GitHttp::start(&repos, REAL_GITHUB).await)).await;
    let c = &world.credentials;
    // The sandbox's git: its URL is GitHub's rewritten to the gateway, and its only
    // credential is the run token; the proof header stands for what the egress adds.
    let work = root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let config = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "-c".to_owned(),
            format!("url.{}/git/.insteadOf=https://github.com/", world.url),
            "-c".to_owned(),
            format!("http.extraHeader=x-courier-run-token: {}", c.token.expose()),
        ];
        for e in extra {
            args.push("-c".into());
            args.push((*e).to_owned());
        }
        args
    };
    let proof = format!("http.extraHeader={PROOF_HEADER}: {}", c.proof.expose());
    let run = |dir: &std::path::Path, extra: &[&str], args: &[&str]| {
        let mut all = config(extra);
        all.extend(args.iter().map(|a| (*a).to_owned()));
        git(dir, &all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let cloned = run(
        &work,
        &[&proof],
        &[
            "clone",
            "--quiet",
            "https://github.com/acme/project.git",
            "p",
        ],
    );
    assert!(
        cloned.status.success(),
        "{}",
        String::from_utf8_lossy(&cloned.stderr)
    );
    let p = work.join("p");
    git_ok(&p, &["checkout", "--quiet", "-b", "courier/run"]);
    git_ok(
        &p,
        &[
            "-c",
            "user.name=a",
            "-c",
            "user.email=a@b",
            "commit",
            "--quiet",
            "--allow-empty",
            "-m",
            "work",
        ],
    );
    let pushed = run(&p, &[&proof], &["push", "--quiet", "origin", "courier/run"]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let remote = git(
        &repos.join("acme/project.git"),
        &["log", "--format=%s", "courier/run"],
    );
    assert_eq!(String::from_utf8_lossy(&remote.stdout).trim(), "work\nseed");

    // Another branch, deleting its own, another repository, no proof: all refused, and
    // the remote is as it was.
    let to_main = run(&p, &[&proof], &["push", "--quiet", "origin", "HEAD:main"]);
    assert!(!to_main.status.success());
    assert!(
        // git shows a refused push as its status only.
        String::from_utf8_lossy(&to_main.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&to_main.stderr)
    );
    assert!(
        !run(
            &p,
            &[&proof],
            &["push", "--quiet", "origin", ":courier/run"]
        )
        .status
        .success()
    );
    assert!(
        !run(
            &work,
            &[&proof],
            &["clone", "--quiet", "https://github.com/acme/other.git", "o"]
        )
        .status
        .success()
    );
    assert!(
        !run(
            &work,
            &[],
            &[
                "clone",
                "--quiet",
                "https://github.com/acme/project.git",
                "q"
            ]
        )
        .status
        .success()
    );
    let main = git(
        &repos.join("acme/project.git"),
        &["log", "--format=%s", "main"],
    );
    assert_eq!(String::from_utf8_lossy(&main.stdout).trim(), "seed");
    // The real token never reached the sandbox's side: not in its config, not in what git
    // stored.
    let mut found = Vec::new();
    for entry in walk(&work) {
        if std::fs::read(&entry).is_ok_and(|b| {
            b.windows(REAL_GITHUB.len())
                .any(|w| w == REAL_GITHUB.as_bytes())
        }) {
            found.push(entry);
        }
    }
    assert!(found.is_empty(), "{found:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
