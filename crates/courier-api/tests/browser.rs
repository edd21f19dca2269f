//! The dashboard in a real headless Chromium, driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`; `tests/browser/install.sh` installs them): launch a
//! sandbox with the `shell` tool and see its output, send a message and see the answer,
//! kill it; the templates panel: build rows, building one, launching from one; and the
//! project settings panel: saved, masked, refused with the field named; the terminal's
//! tool calls (a fake Claude run): collapsible rows, errors, live and on reload alike,
//! agent output shown as text, never as markup; work beyond one sandbox (a workflow run
//! and a work chain started from their forms with the fake Claude, an issue session's
//! cards started and added to a chain, a hostile card shown as text).
//! Skips with a printed reason when chromedriver is not installed.

// Test code: its helpers (outside `#[test]` functions) unwrap too; a failure is the test's.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use courier_store::{NewTemplateBuild, TemplateBuildStatus};
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn find_driver() -> Option<String> {
    if let Ok(path) = std::env::var("CHROMEDRIVER") {
        return Some(path);
    }
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(str::to_owned)
}

fn find_chromium() -> Option<String> {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return Some(path);
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(str::to_owned)
}

struct Driver {
    child: Child,
    http: reqwest::Client,
    base: String,
    session: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start(driver: &str, chromium: &str) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]
            }
        }}});
        let res: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"))
            .to_owned();
        let mut d = Driver {
            child,
            http,
            base,
            session,
        };
        d.base = format!("{}/session/{}", d.base, d.session);
        d
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let res: Value = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if res["value"].get("error").is_some() {
            panic!("webdriver {path}: {res}");
        }
        res["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    async fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    async fn element(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found: Value = self
                .http
                .post(format!("{}/element", self.base))
                .json(&json!({ "using": "css selector", "value": css }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(id) = found["value"][ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(Instant::now() < deadline, "no element {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.post(&format!("/element/{id}/click"), json!({})).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.post(&format!("/element/{id}/clear"), json!({})).await;
        self.post(&format!("/element/{id}/value"), json!({ "text": text }))
            .await;
    }

    async fn text(&self, css: &str) -> String {
        self.js(&format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            json!(css)
        ))
        .await
        .as_str()
        .unwrap_or_default()
        .to_owned()
    }

    /// Waits until the element's text satisfies `ok`.
    async fn wait_text(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        self.wait_text_within(css, 30, ok).await
    }

    /// Waits up to `secs` seconds until the element's text satisfies `ok`.
    async fn wait_text_within(&self, css: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let t = self.text(css).await;
            if ok(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never matched; last text: {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    async fn quit(&self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

/// A test server and a browser on its dashboard as Alice, or `None` (skip) when
/// chromium or chromedriver is missing outside CI.
async fn dashboard() -> Option<(common::Server, Driver)> {
    dashboard_on(common::server()).await
}

/// Like [`dashboard`], on a server whose agents are courier-tools' fake CLIs.
async fn dashboard_with_fake_clis() -> Option<(common::Server, Driver)> {
    dashboard_on(common::server_with_fake_clis()).await
}

async fn dashboard_on(
    server: impl std::future::Future<Output = common::Server>,
) -> Option<(common::Server, Driver)> {
    let (Some(driver), Some(chromium)) = (find_driver(), find_chromium()) else {
        // CI installs them (scripts/setup-machine.sh), so there a skip would hide a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the browser test: chromium and chromedriver are missing"
        );
        println!(
            "skipping the browser test: chromium and chromedriver are not installed (run tests/browser/install.sh: apt-get install -y chromium chromium-driver)"
        );
        return None;
    };
    let s = server.await;
    let d = Driver::start(&driver, &chromium).await;
    Some((s, d))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_launches_a_shell_sandbox_streams_it_talks_to_it_and_kills_it() {
    let Some((s, d)) = dashboard().await else {
        return;
    };
    d.go(&format!("{}/#token={}", s.url, s.alice.token)).await;
    d.wait_text("#list", |t| t.contains("No sandboxes yet"))
        .await;
    assert_eq!(d.text("#active").await, "0");

    // The launch dialog validates like the API does.
    d.click("#launch").await;
    d.js("document.querySelector('#f-tool').value = 'shell';")
        .await;
    d.type_into("#f-prompt", "echo hello-from-browser").await;
    d.type_into("#f-memory", "100").await;
    d.click("#launch-submit").await;
    d.wait_text("#launch-error", |t| t.contains("memory_mb"))
        .await;
    d.type_into("#f-memory", "1024").await;
    d.click("#launch-submit").await;

    // The sandbox appears running, with its output streamed into the terminal.
    d.wait_text("#terminal", |t| {
        t.contains("hello-from-browser\n") || t.matches("hello-from-browser").count() >= 2
    })
    .await;
    d.wait_text("#list .badge", |t| t == "running").await;
    d.wait_text("#active", |t| t == "1").await;

    // A follow-up message runs as the next command.
    d.type_into("#message", "echo second-$((20+22))").await;
    d.click("#message-form button").await;
    d.wait_text("#terminal", |t| t.contains("second-42")).await;

    // Kill: the badge turns to killed and the counter drops.
    d.click("#kill").await;
    d.wait_text("#detail-status", |t| t == "killed").await;
    d.wait_text("#active", |t| t == "0").await;
    let (_, list) = s.get(&s.alice, "/v1/sandboxes").await;
    assert_eq!(list["items"][0]["status"], "killed");
    // "tool default" sends no template.
    assert_eq!(list["items"][0]["config"]["template_id"], Value::Null);
    d.quit().await;
}

/// Seeds a template build for `tool` and moves it to `status` (with `error`), recording
/// `version` as its CLI version.
async fn seed_build(
    s: &common::Server,
    tool: &str,
    name: &str,
    version: &str,
    status: TemplateBuildStatus,
    error: Option<&str>,
) {
    let b = s
        .store
        .create_template_build(NewTemplateBuild {
            tool_id: tool.into(),
            template_name: name.into(),
            cli_version: "latest".into(),
        })
        .await
        .unwrap();
    s.store
        .update_template_build(b.id, TemplateBuildStatus::Building, None)
        .await
        .unwrap();
    s.store
        .update_template_build(b.id, status, error.map(str::to_owned))
        .await
        .unwrap();
    s.store
        .set_template_build_version(b.id, version)
        .await
        .unwrap();
}

/// The newest of Alice's sandboxes, once there are `count`.
async fn newest_sandbox(s: &common::Server, count: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, list) = s.get(&s.alice, "/v1/sandboxes").await;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= count {
            return items[0].clone();
        }
        assert!(Instant::now() < deadline, "no sandbox #{count}: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_template_builds_launches_from_one_and_starts_builds() {
    let Some((s, d)) = dashboard().await else {
        return;
    };
    let (status, key) = s
        .call(
            reqwest::Method::PUT,
            &s.alice,
            "/v1/keys/anthropic",
            Some(json!({ "value": "sk-ant-api03-browser-test-abcd" })),
        )
        .await;
    assert_eq!(status, 200, "{key}");
    seed_build(
        &s,
        "claude",
        "team-claude:v2",
        "2.1.197 (Claude Code)",
        TemplateBuildStatus::Succeeded,
        None,
    )
    .await;
    seed_build(
        &s,
        "codex",
        "codex",
        "latest",
        TemplateBuildStatus::Failed,
        Some("<b>npm</b> install exited 1"),
    )
    .await;

    // The panel: the latest build per tool, its error as text.
    d.go(&format!("{}/#token={}", s.url, s.alice.token)).await;
    d.wait_text("#tpl-claude .badge", |t| t == "succeeded")
        .await;
    let meta = d.text("#tpl-claude .meta").await;
    assert!(
        meta.contains("team-claude:v2") && meta.contains("2.1.197 (Claude Code)"),
        "{meta}"
    );
    d.wait_text("#tpl-codex .badge", |t| t == "failed").await;
    assert_eq!(
        d.text("#tpl-codex .tpl-error").await,
        "<b>npm</b> install exited 1"
    );
    assert_eq!(
        d.js("return document.querySelectorAll('.tpl-error *').length;")
            .await,
        json!(0)
    );
    assert_eq!(d.text("#tpl-opencode .badge").await, "none");

    // Launch from the succeeded template: the create request carries it.
    d.click("#launch").await;
    d.js("const t = document.querySelector('#f-tool'); t.value = 'claude'; t.dispatchEvent(new Event('change'));")
        .await;
    d.wait_text("#f-template", |t| t.contains("team-claude:v2"))
        .await;
    let options = d
        .js("return [...document.querySelectorAll('#f-template option')].map((o) => o.textContent);")
        .await;
    assert_eq!(
        options,
        json!(["tool default", "team-claude:v2", "custom…"])
    );
    d.js("const t = document.querySelector('#f-template'); t.value = 'team-claude:v2'; t.dispatchEvent(new Event('change'));")
        .await;
    d.type_into("#f-prompt", "add a health check").await;
    d.click("#launch-submit").await;
    let sandbox = newest_sandbox(&s, 1).await;
    assert_eq!(sandbox["cli_tool"], "claude");
    assert_eq!(sandbox["config"]["template_id"], "team-claude:v2");
    d.element("#detail-status").await;

    // A custom template typed in.
    d.wait_text("#launch-error", |t| t.is_empty()).await;
    d.click("#launch").await;
    d.js("const t = document.querySelector('#f-template'); t.selectedIndex = t.options.length - 1; t.dispatchEvent(new Event('change'));")
        .await;
    d.type_into("#f-template-custom", "data-team:v3").await;
    d.type_into("#f-prompt", "and a readme").await;
    d.click("#launch-submit").await;
    let sandbox = newest_sandbox(&s, 2).await;
    assert_eq!(sandbox["config"]["template_id"], "data-team:v3");

    // Build: the host provider starts it and reports it ready; the row follows.
    d.wait_text("#launch-error", |t| t.is_empty()).await;
    d.click("#tpl-opencode .tpl-build").await;
    d.wait_text("#tpl-opencode .badge", |t| t == "succeeded")
        .await;
    assert!(d.text("#tpl-opencode .meta").await.contains("opencode"));
    let builds = s
        .store
        .list_template_builds(Some("opencode".into()))
        .await
        .unwrap();
    assert_eq!(builds.len(), 1);
    assert_eq!(builds[0].status, TemplateBuildStatus::Succeeded);

    // The API's refusal is shown (a tool without a template, as a stale page might send).
    d.js("document.querySelector('#tpl-pi .tpl-build').dataset.tool = 'shell';")
        .await;
    d.click("#tpl-pi .tpl-build").await;
    d.wait_text("#templates-error", |t| {
        t.contains("has no template to build")
    })
    .await;
    assert_eq!(d.text("#tpl-pi .badge").await, "none");

    // A build in progress is polled until it ends, then polling stops.
    let pi = s
        .store
        .create_template_build(NewTemplateBuild {
            tool_id: "pi".into(),
            template_name: "pi".into(),
            cli_version: "latest".into(),
        })
        .await
        .unwrap();
    d.click("#launch").await; // opening the dialog reloads the builds
    d.wait_text("#tpl-pi .badge", |t| t == "pending").await;
    d.click("#launch-cancel").await;
    s.store
        .update_template_build(pi.id, TemplateBuildStatus::Succeeded, None)
        .await
        .unwrap();
    d.wait_text("#tpl-pi .badge", |t| t == "succeeded").await;
    assert_eq!(d.js("return state.buildsTimer;").await, Value::Null);
    d.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_edits_project_settings_with_env_values_masked() {
    let Some((s, d)) = dashboard().await else {
        return;
    };
    d.go(&format!("{}/#token={}", s.url, s.alice.token)).await;
    d.wait_text("#s-env-list", |t| t == "no env vars").await;
    d.click("#settings summary").await;

    // A malformed env var is refused by the API, naming the field.
    d.type_into("#s-env", "1BAD=x").await;
    d.click("#settings-save").await;
    d.wait_text("#settings-error", |t| t.contains("env_vars"))
        .await;

    d.type_into("#s-env", "DEPLOY_TOKEN=tok-browser-123456")
        .await;
    d.type_into("#s-prompt", "Answer in French.").await;
    d.type_into("#s-repo", "https://github.com/acme/engine.git")
        .await;
    d.js("document.querySelector('#s-tool').value = 'shell';")
        .await;
    d.click("#settings-save").await;
    d.wait_text("#settings-saved", |t| t == "Saved").await;
    d.wait_text("#s-env-list", |t| t == "DEPLOY_TOKEN=****3456")
        .await;
    let (_, saved) = s
        .get(
            &s.alice,
            &format!("/v1/projects/{}/settings", s.alice.project_id),
        )
        .await;
    assert_eq!(saved["system_prompt"], "Answer in French.");
    assert_eq!(saved["repo_url"], "https://github.com/acme/engine.git");
    assert_eq!(saved["sandbox_defaults"]["tool"], "shell");
    assert_eq!(saved["env_vars"][0]["masked"], "****3456");

    // Saving again without retyping the value keeps it; the page never holds it.
    d.type_into("#s-branch", "develop").await;
    d.click("#settings-save").await;
    d.wait_text("#settings-saved", |t| t == "Saved").await;
    let (_, kept) = s
        .get(
            &s.alice,
            &format!("/v1/projects/{}/settings", s.alice.project_id),
        )
        .await;
    assert_eq!(kept["base_branch"], "develop");
    assert_eq!(kept["env_vars"], saved["env_vars"]);

    // The workflow defaults: the checker's template and thinking effort per model (an
    // effort the CLIs do not know is refused, naming the field).
    d.type_into("#s-thinking", "claude-opus-4-6=extreme").await;
    d.click("#settings-save").await;
    d.wait_text("#settings-error", |t| t.contains("thinking_effort"))
        .await;
    d.js("document.querySelector('#s-thinking').value = 'claude-opus-4-6=high\\n claude-sonnet-4-5 = low\\n';")
        .await;
    d.type_into("#s-checker-template", "team-checker:v1").await;
    d.click("#settings-save").await;
    d.wait_text("#settings-saved", |t| t == "Saved").await;
    let (_, workflow) = s
        .get(
            &s.alice,
            &format!("/v1/projects/{}/settings", s.alice.project_id),
        )
        .await;
    let defaults = &workflow["sandbox_defaults"];
    assert_eq!(defaults["checker_template_id"], "team-checker:v1");
    assert_eq!(
        defaults["thinking_effort"],
        json!({ "claude-opus-4-6": "high", "claude-sonnet-4-5": "low" })
    );
    assert_eq!(defaults["tool"], "shell");
    assert_eq!(workflow["env_vars"], saved["env_vars"]);
    // Shown again as they were saved.
    assert_eq!(
        d.js("return document.querySelector('#s-thinking').value;")
            .await,
        json!("claude-opus-4-6=high\nclaude-sonnet-4-5=low")
    );
    assert_eq!(
        d.js("return document.querySelector('#s-checker-template').value;")
            .await,
        json!("team-checker:v1")
    );
    let html = d.js("return document.body.innerHTML;").await;
    assert!(!html.to_string().contains("tok-browser-123456"));
    d.quit().await;
}

/// The terminal as rows of `class|text`, one per part of each message: what a reload
/// must reproduce.
const TERMINAL_PARTS: &str = "return [...document.querySelectorAll('#terminal > div > *, #terminal > div.user')].map((e) => `${e.tagName}.${e.className}|${e.tagName === 'DETAILS' ? e.querySelector('summary').textContent + '|' + [...e.querySelectorAll('pre')].map((p) => p.textContent).join('|') : e.textContent}`);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_terminal_shows_tool_calls_as_rows_live_and_on_reload_as_text() {
    let Some((s, d)) = dashboard_with_fake_clis().await else {
        return;
    };
    let (status, key) = s
        .call(
            reqwest::Method::PUT,
            &s.alice,
            "/v1/keys/anthropic",
            Some(json!({ "value": "sk-ant-api03-browser-test-abcd" })),
        )
        .await;
    assert_eq!(status, 200, "{key}");
    let page = format!("{}/#token={}", s.url, s.alice.token);
    d.go(&page).await;
    d.wait_text("#list", |t| t.contains("No sandboxes yet"))
        .await;

    // The fake Claude edits a file (an Edit tool call), commits (Bash) and answers.
    d.click("#launch").await;
    d.js("document.querySelector('#f-tool').value = 'claude';")
        .await;
    d.type_into("#f-prompt", "fix the login").await;
    d.click("#launch-submit").await;
    d.wait_text("#terminal", |t| t.contains("Done: fix the login"))
        .await;
    d.wait_text("#terminal", |t| t.contains("✓ done: 3 turns"))
        .await;

    // One collapsed row per tool call, its summary the tool and what it works on.
    let summaries = d
        .js("return [...document.querySelectorAll('#terminal details.tool > summary')].map((s) => s.textContent);")
        .await;
    let summaries: Vec<String> = serde_json::from_value(summaries).unwrap();
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert!(
        summaries[0].starts_with("Edit ") && summaries[0].contains("courier-fake-claude.md"),
        "{summaries:?}"
    );
    assert!(
        summaries[1].starts_with("Bash git commit -am 'claude: turn 1'"),
        "{summaries:?}"
    );
    let input_shown =
        "return document.querySelector('#terminal details.tool .tool-input').checkVisibility();";
    assert_eq!(
        d.js("return document.querySelector('#terminal details.tool').open;")
            .await,
        json!(false)
    );
    assert_eq!(d.js(input_shown).await, json!(false));
    // Expanded: the input and the tool's result.
    d.click("#terminal details.tool > summary").await;
    assert_eq!(
        d.js("return document.querySelector('#terminal details.tool').open;")
            .await,
        json!(true)
    );
    assert_eq!(d.js(input_shown).await, json!(true));
    let input = d.text("#terminal details.tool .tool-input").await;
    assert!(
        input.contains("\"file_path\"") && input.contains("\"new_string\": \"- turn 1\""),
        "{input}"
    );
    let output = d.text("#terminal details.tool .tool-output").await;
    assert!(output.contains("has been updated"), "{output}");
    // Thinking is dimmed.
    let thinking = d.text("#terminal .thinking.dim").await;
    assert!(thinking.contains("record the task"), "{thinking}");

    // A failed run: its error stands out.
    d.type_into("#message", "FAIL now").await;
    d.click("#message-form button").await;
    d.wait_text("#terminal", |t| t.contains("run failed: API Error: 500"))
        .await;
    let errors = d
        .js("return [...document.querySelectorAll('#terminal .err')].map((e) => e.textContent);")
        .await;
    assert!(
        errors.to_string().contains("run failed: API Error: 500"),
        "{errors}"
    );

    // An agent printing markup (in a call's input and its result), recorded as the
    // orchestrator records a run and streamed live: it must show as text. An agent can
    // print anything, so the page never sets agent output as HTML.
    let sandbox = newest_sandbox(&s, 1).await;
    let sandbox_id: courier_store::SandboxId = sandbox["id"].as_str().unwrap().parse().unwrap();
    let hostile = [
        json!({"type": "assistant", "message": {"id": "msg_xss", "content": [{"type": "tool_use",
            "id": "toolu_xss", "name": "Bash",
            "input": {"command": "cat <script>window.__pwned = 1</script>"}}]}}),
        json!({"type": "user", "message": {"content": [{"type": "tool_result",
            "tool_use_id": "toolu_xss", "is_error": true,
            "content": "<img src=x onerror=\"window.__pwned = 2\"><script>window.__pwned = 3</script>"}]}}),
        json!({"type": "assistant", "message": {"id": "msg_xss2", "content": [{"type": "text",
            "text": "<b>bold?</b> done"}]}}),
        json!({"type": "result", "subtype": "success", "is_error": false,
            "result": "<b>bold?</b> done", "num_turns": 1}),
    ];
    let mut recorder = courier_orchestrator::stream::StreamRecorder::start(
        s.store.clone(),
        s.hub.clone(),
        sandbox_id,
        courier_tools::ToolId::Claude,
    )
    .await
    .unwrap();
    for line in &hostile {
        recorder.feed(format!("{line}\n").as_bytes()).await.unwrap();
    }
    recorder.finish(Some(0)).await.unwrap();
    d.wait_text("#terminal details.tool.failed > summary", |t| {
        t.starts_with("Bash cat <script>")
    })
    .await;
    d.click("#terminal details.tool.failed > summary").await;
    let output = d.text("#terminal details.tool.failed .tool-output").await;
    assert_eq!(
        output,
        "<img src=x onerror=\"window.__pwned = 2\"><script>window.__pwned = 3</script>"
    );
    let tags = d
        .js("return document.querySelectorAll('#terminal img, #terminal script, #terminal b').length;")
        .await;
    assert_eq!(tags, json!(0));
    assert_eq!(d.js("return window.__pwned ?? null;").await, Value::Null);

    // A reload replays the same terminal from the stored messages (the server parses
    // their raw logs): the same rows, texts and errors.
    let live = d.js(TERMINAL_PARTS).await;
    d.go("about:blank").await;
    d.go(&page).await;
    d.click("#list .row").await;
    d.wait_text("#terminal", |t| t.contains("✓ done: 1 turns"))
        .await;
    let replayed = d.js(TERMINAL_PARTS).await;
    assert_eq!(replayed, live);
    assert_eq!(
        d.js("return document.querySelectorAll('#terminal img, #terminal script, #terminal b').length;")
            .await,
        json!(0)
    );
    assert_eq!(d.js("return window.__pwned ?? null;").await, Value::Null);
    d.quit().await;
}

/// The names of the steps shown in the run view, in order.
const STEP_ROLES: &str =
    "return [...document.querySelectorAll('#run-steps .step-role')].map((e) => e.textContent);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_runs_a_workflow_a_chain_and_shows_issue_cards_as_text() {
    let Some((s, d)) = dashboard_with_fake_clis().await else {
        return;
    };
    s.anthropic_key(&s.alice).await;
    let page = format!("{}/#token={}", s.url, s.alice.token);
    d.go(&page).await;
    d.wait_text("#list", |t| t.contains("No sandboxes yet"))
        .await;

    // ---- a workflow run started from its form: the fake Claude designs, the fake Claude
    // checks. `PASS_AT_COMMITS 0`: this server's host sandboxes have no remote to push
    // to, so each checker starts from a fresh `git init` (0 commits) and a higher count
    // would never pass here; the iterating run is the orchestrator's workflow tests'.
    d.click("#tab-workflows").await;
    d.wait_text("#list", |t| t.contains("No workflow runs yet"))
        .await;
    d.click("#new-run").await;
    d.click("#w-submit").await;
    d.wait_text("#w-error", |t| t.contains("prompt")).await;
    d.type_into("#w-prompt", "Add a greeting module. PASS_AT_COMMITS 0")
        .await;
    d.type_into("#w-max", "3").await;
    d.js("document.querySelector('#w-designer-cli').value = 'claude'; document.querySelector('#w-checker-cli').value = 'claude';")
        .await;
    d.click("#w-submit").await;
    d.element("#run-status").await;
    d.wait_text_within("#run-status", 90, |t| FINAL.contains(&t))
        .await;
    let (_, runs) = s
        .get(
            &s.alice,
            &format!("/v1/projects/{}/workflow-runs", s.alice.project_id),
        )
        .await;
    let run = &runs["items"][0];
    assert_eq!(run["status"], "succeeded", "{runs}");
    assert_eq!(run["spec"]["designer_cli_id"], "claude");
    assert_eq!(run["spec"]["checker_cli_id"], "claude");
    assert_eq!(run["spec"]["max_iterations"], 3);
    assert_eq!(d.text("#run-status").await, "succeeded");
    assert_eq!(d.text("#run-verdict").await, "pass");
    assert!(
        d.text("#run-title")
            .await
            .starts_with("Add a greeting module")
    );
    assert!(d.text("#run-cost").await.starts_with("cost $"));
    // Its steps: designer first, a checker last whose verdict is `pass`; the checker's
    // feedback folded until opened.
    let roles: Vec<String> = serde_json::from_value(d.js(STEP_ROLES).await).unwrap();
    assert_eq!(
        roles.first().map(String::as_str),
        Some("designer"),
        "{roles:?}"
    );
    assert_eq!(
        roles.last().map(String::as_str),
        Some("checker"),
        "{roles:?}"
    );
    assert!(roles.len() >= 2, "{roles:?}");
    let last = "#run-steps .step:last-child";
    assert_eq!(d.text(&format!("{last} .step-verdict")).await, "pass");
    assert_eq!(d.text(&format!("{last} .step-status")).await, "succeeded");
    let feedback = format!("{last} details.feedback");
    assert_eq!(
        d.js(&format!(
            "return document.querySelector({}).open;",
            json!(feedback)
        ))
        .await,
        json!(false)
    );
    d.click(&format!("{feedback} > summary")).await;
    assert!(
        d.text(&format!("{feedback} pre"))
            .await
            .contains("Looks good"),
        "the checker's feedback"
    );
    // The list shows the run with its verdict.
    d.wait_text("#list .row", |t| {
        t.contains("Add a greeting module") && t.contains("succeeded") && t.contains("pass")
    })
    .await;
    // A step links to its sandbox's terminal.
    d.click("#run-steps .step:first-child .step-terminal").await;
    d.wait_text("#terminal", |t| t.contains("Done:")).await;
    assert_eq!(
        d.js("return document.querySelector('#tab-sandboxes').classList.contains('active');")
            .await,
        json!(true)
    );

    // ---- a chain of two issues from its form, each one a run (one PR per issue).
    d.click("#tab-chains").await;
    d.wait_text("#list", |t| t.contains("No work chains yet"))
        .await;
    d.click("#new-chain").await;
    d.type_into("#c-title", "Two fixes").await;
    d.type_into("#c-items .c-item:nth-child(1) .c-item-title", "First")
        .await;
    d.type_into(
        "#c-items .c-item:nth-child(1) .c-item-prompt",
        "Fix the first thing. PASS_AT_COMMITS 0",
    )
    .await;
    d.click("#c-add").await;
    d.type_into(
        "#c-items .c-item:nth-child(2) .c-item-prompt",
        "Fix the second thing. PASS_AT_COMMITS 0",
    )
    .await;
    d.js("document.querySelector('#c-pr-mode').value = 'per_issue'; document.querySelector('#c-tool').value = 'claude';")
        .await;
    d.type_into("#c-max", "1").await;
    d.click("#c-submit").await;
    d.element("#chain-status").await;
    d.wait_text_within("#chain-status", 90, |t| FINAL.contains(&t))
        .await;
    assert_eq!(d.text("#chain-status").await, "succeeded");
    let items = d
        .js("return [...document.querySelectorAll('#chain-items .chain-item')].map((e) => e.querySelector('.item-title').textContent + '|' + e.querySelector('.item-status').textContent);")
        .await;
    let items: Vec<String> = serde_json::from_value(items).unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0], "First|succeeded");
    assert!(
        items[1].starts_with("Fix the second thing") && items[1].ends_with("|succeeded"),
        "{items:?}"
    );
    let (_, chains) = s
        .get(
            &s.alice,
            &format!("/v1/projects/{}/work-chains", s.alice.project_id),
        )
        .await;
    assert_eq!(chains["items"][0]["pr_mode"], "per_issue", "{chains}");
    assert_eq!(chains["items"][0]["title"], "Two fixes");
    // An issue links to its run.
    d.click("#chain-items .chain-item:first-child .item-run")
        .await;
    d.wait_text("#run-title", |t| t == "First").await;
    assert_eq!(d.text("#run-status").await, "succeeded");

    // ---- an issue session: the fake scanner reports one card.
    d.click("#tab-issues").await;
    d.wait_text("#list", |t| t.contains("No issue sessions yet"))
        .await;
    d.type_into("#scan-focus", "the parser CARDS 1").await;
    d.js("document.querySelector('#scan-tool').value = 'claude';")
        .await;
    d.click("#scan").await;
    d.element("#session-status").await;
    d.wait_text_within("#session-status", 60, |t| FINAL.contains(&t))
        .await;
    assert_eq!(d.text("#session-status").await, "succeeded");
    d.wait_text("#cards .card-title", |t| t == "Fake issue 1")
        .await;
    assert_eq!(d.text("#cards .severity").await, "low");
    assert_eq!(
        d.text("#cards .card-desc").await,
        "The fake scanner found problem 1."
    );
    assert_eq!(d.text("#cards .card-prompt").await, "Fix fake issue 1");
    // No chain is running: the card cannot be added to one.
    assert_eq!(
        d.js("return document.querySelector('#cards .card-chain').disabled;")
            .await,
        json!(true)
    );
    // Started as a sandbox: the card links to it.
    d.click("#cards .card-start").await;
    d.element("#cards .card-sandbox").await;
    let session_id = d
        .js("return state.work;")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    let (_, session) = s
        .get(&s.alice, &format!("/v1/issue-sessions/{session_id}"))
        .await;
    let card_sandbox = session["cards"][0]["sandbox_id"].as_str().unwrap();
    let (_, sandbox) = s
        .get(&s.alice, &format!("/v1/sandboxes/{card_sandbox}"))
        .await;
    assert_eq!(sandbox["prompt"], "Fix fake issue 1");
    // With a chain running, the card goes into it as its next issue.
    let (status, chain) = s
        .post(
            &s.alice,
            &format!("/v1/projects/{}/work-chains", s.alice.project_id),
            json!({ "title": "Long chain", "items": [{ "prompt": "Wait. SLEEP 20 PASS_AT_COMMITS 0" }],
                    "workflow": { "tool": "claude", "max_iterations": 1 } }),
        )
        .await;
    assert_eq!(status, 201, "{chain}");
    let chain_id = chain["id"].as_str().unwrap().to_owned();
    d.click(&format!("#list .row[data-id='{session_id}']"))
        .await;
    d.wait_text("#cards .card-chain-select", |t| t.contains("Long chain"))
        .await;
    d.js(&format!(
        "document.querySelector('#cards .card-chain-select').value = {};",
        json!(chain_id)
    ))
    .await;
    d.click("#cards .card-chain").await;
    d.element("#cards .card-chain-link").await;
    let (_, detail) = s
        .get(&s.alice, &format!("/v1/work-chains/{chain_id}"))
        .await;
    assert_eq!(
        detail["items"][1]["card_id"], session["cards"][0]["id"],
        "{detail}"
    );
    assert_eq!(detail["items"][1]["prompt"], "Fix fake issue 1");
    let (status, _) = s
        .call(
            reqwest::Method::POST,
            &s.alice,
            &format!("/v1/work-chains/{chain_id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 200);

    // A scanning agent reads the repository, and whoever wrote the repository can steer
    // it: the cards it reports may carry markup meant to run in the dashboard of whoever
    // reviews them (an `<img onerror>` reading the token from localStorage, a
    // `<script>`). Recorded as the engine records a scan's cards, it must show as text.
    let hostile = s
        .store
        .create_issue_session(courier_store::NewIssueSession {
            user_id: s.alice.user_id.parse().unwrap(),
            project_id: s.alice.project_id.parse().unwrap(),
            focus: Some("<img src=x onerror=\"window.__pwned = 1\">".into()),
        })
        .await
        .unwrap();
    s.store
        .finish_issue_session(
            hostile.id,
            courier_store::RunStatus::Succeeded,
            None,
            vec![courier_store::NewIssueCard {
                title:
                    "<img src=x onerror=\"window.__pwned = localStorage.getItem('courier.token')\">"
                        .into(),
                description: "<script>window.__pwned = 3</script><b>bold?</b>".into(),
                severity: courier_store::Severity::Critical,
                suggested_prompt: "<img src=x onerror=\"window.__pwned = 4\">".into(),
            }],
        )
        .await
        .unwrap();
    d.wait_text("#list", |t| t.contains("<img src=x onerror"))
        .await;
    d.click(&format!("#list .row[data-id='{}']", hostile.id))
        .await;
    d.wait_text("#cards .card-title", |t| {
        t == "<img src=x onerror=\"window.__pwned = localStorage.getItem('courier.token')\">"
    })
    .await;
    assert_eq!(
        d.text("#cards .card-desc").await,
        "<script>window.__pwned = 3</script><b>bold?</b>"
    );
    assert_eq!(
        d.text("#cards .card-prompt").await,
        "<img src=x onerror=\"window.__pwned = 4\">"
    );
    assert_eq!(d.text("#cards .severity").await, "critical");
    assert_eq!(
        d.text("#session-focus").await,
        "<img src=x onerror=\"window.__pwned = 1\">"
    );
    assert_eq!(
        d.js("return document.querySelectorAll('#list img, #list script, #detail img, #detail script, #cards b').length;")
            .await,
        json!(0)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(d.js("return window.__pwned ?? null;").await, Value::Null);
    d.quit().await;
}

/// The final statuses of a run, chain or session.
const FINAL: [&str; 3] = ["succeeded", "failed", "cancelled"];
