//! Project settings through the real CLIs: a system prompt, a `CLAUDE.md`, a skill and an
//! env var saved as the project's settings before the scenario's first create, each
//! carrying its own marker; then what of them reached the model (the stand-in's recorded
//! request bodies) and the agent's process environment.

use std::collections::BTreeMap;

use courier_orchestrator::settings::SettingsUpdate;
use courier_store::{NamedText, SandboxId};
use courier_tools::{Secret, ToolId};
use serde_json::Value;

use crate::harness::Harness;

/// The markers: plain `a-z0-9-` words, so they read the same inside any JSON body.
pub const SYSTEM_PROMPT: &str = "courier-system-prompt-7f3a";
pub const CLAUDE_MD: &str = "courier-claude-md-91bc";
pub const SKILL_NAME: &str = "courier-marker-skill";
pub const SKILL_DESCRIPTION: &str = "courier-skill-description-4d2e";
pub const SKILL_BODY: &str = "courier-skill-body-c5e8";
pub const ENV_NAME: &str = "COURIER_PROJECT_MARKER";
pub const ENV_VALUE: &str = "courier-env-value-e3d1";

/// The settings saved before the first create.
pub fn update() -> SettingsUpdate {
    SettingsUpdate {
        env_vars: BTreeMap::from([(ENV_NAME.to_owned(), Some(Secret::new(ENV_VALUE)))]),
        system_prompt: Some(format!(
            "You work in a Courier test sandbox. Project rule {SYSTEM_PROMPT}: keep answers short."
        )),
        claude_md: Some(format!(
            "# Project notes\n\nThe project's build word is {CLAUDE_MD}.\n"
        )),
        skills: vec![NamedText {
            name: SKILL_NAME.into(),
            content: format!(
                "---\nname: {SKILL_NAME}\ndescription: Use for the {SKILL_DESCRIPTION} procedure.\n---\n\
                 Follow the {SKILL_BODY} steps.\n"
            ),
        }],
        ..SettingsUpdate::default()
    }
}

/// Where a setting reached the model, per tool; `None` where it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    pub system_prompt: Option<&'static str>,
    pub claude_md: Option<&'static str>,
    /// The skill's name and description listed (its body is never sent unprompted).
    pub skill: Option<&'static str>,
}

/// What each real CLI does with the project's settings, as measured at the pinned
/// versions: where in the first turn's request each marker appears.
///
/// - Claude Code: the system prompt (the plan's `~/.claude/CLAUDE.md`), the project's
///   `CLAUDE.md` and the skill's name and description all come as `<system-reminder>`s in
///   the first user message.
/// - Codex: the system prompt (`~/.codex/AGENTS.md`) and `CLAUDE.md` (read through
///   `project_doc_fallback_filenames`) in the instructions user message; the skill
///   (`~/.codex/skills/`) listed in a developer message.
/// - OpenCode: all three in its system message (the config's `instructions` file,
///   `CLAUDE.md`, the `.claude/skills/` listing).
/// - Pi: all three in its developer message (`APPEND_SYSTEM.md`, `CLAUDE.md`, the
///   `~/.pi/agent/skills/` listing).
pub fn expected(tool: ToolId) -> Reach {
    match tool {
        ToolId::Claude => Reach {
            system_prompt: Some("user message"),
            claude_md: Some("user message"),
            skill: Some("user message"),
        },
        ToolId::Codex => Reach {
            system_prompt: Some("user message"),
            claude_md: Some("user message"),
            skill: Some("developer message"),
        },
        ToolId::Opencode => Reach {
            system_prompt: Some("system message"),
            claude_md: Some("system message"),
            skill: Some("system message"),
        },
        ToolId::Pi => Reach {
            system_prompt: Some("developer message"),
            claude_md: Some("developer message"),
            skill: Some("developer message"),
        },
        ToolId::Shell => unreachable!("the shell tool has no model"),
    }
}

/// Where `marker` is in a request body: `system` (Anthropic), `instructions`
/// (Responses), the role of the message or input item carrying it (`system`,
/// `developer`, `user`), or `tools` (a tool's description). `None` when absent.
pub fn place(body: &Value, marker: &str) -> Option<&'static str> {
    let has = |v: &Value| v.to_string().contains(marker);
    if has(&body["system"]) {
        return Some("system");
    }
    if has(&body["instructions"]) {
        return Some("instructions");
    }
    for list in ["messages", "input"] {
        for item in body[list].as_array().into_iter().flatten() {
            if has(item) {
                return Some(match item["role"].as_str() {
                    Some("system") => "system message",
                    Some("developer") => "developer message",
                    Some("user") => "user message",
                    Some("assistant") => "assistant message",
                    _ => "input item",
                });
            }
        }
    }
    if has(&body["tools"]) {
        return Some("tools");
    }
    has(body).then_some("elsewhere")
}

/// Where each setting reached the model in the first turn the stand-in answered (a CLI
/// may list models or try a WebSocket first).
pub fn measured(requests: &[Value]) -> Reach {
    let first = &requests
        .iter()
        .find(|r| r.pointer("/answer/turn").is_some())
        .expect("an answered turn")["body"];
    Reach {
        system_prompt: place(first, SYSTEM_PROMPT),
        claude_md: place(first, CLAUDE_MD),
        skill: place(first, SKILL_DESCRIPTION).filter(|_| place(first, SKILL_NAME).is_some()),
    }
}

/// The env var's value is never in a request, and the skill's body is not sent while
/// the agent never used the skill.
pub fn assert_nothing_leaked(tool: ToolId, requests: &[Value]) {
    for r in requests {
        let text = r.to_string();
        assert!(
            !text.contains(ENV_VALUE),
            "{tool}: the project env var's value reached the model: {}",
            r["path"]
        );
        assert!(
            !text.contains(SKILL_BODY),
            "{tool}: the skill's body was sent without the skill being used: {}",
            r["path"]
        );
    }
}

/// Prints the table for one tool and asserts it is the expected one.
pub fn check_reach(h: &Harness, requests: &[Value]) {
    let got = measured(requests);
    let show = |p: Option<&str>| p.unwrap_or("-").to_owned();
    eprintln!(
        "project settings → {} {}: system prompt: {} | CLAUDE.md: {} | skill: {}",
        h.tool,
        h.version,
        show(got.system_prompt),
        show(got.claude_md),
        show(got.skill)
    );
    assert_eq!(
        got,
        expected(h.tool),
        "{} {}: where the project's settings reached the model",
        h.tool,
        h.version
    );
}

/// The env var is in the environment of every process of the running agent's session
/// (the CLI and what it started), read from `/proc/<pid>/environ` while the run is on.
pub async fn assert_env_in_agent(h: &Harness, id: SandboxId, sid: &str) {
    let sid = sid.trim();
    assert!(
        sid.parse::<u32>().is_ok(),
        "{}: agent session id {sid:?}",
        h.tool
    );
    let script = format!(
        "for p in $(ps -o pid= -s {sid}); do \
           [ -r /proc/$p/environ ] || continue; \
           comm=$(cat /proc/$p/comm); \
           if tr '\\0' '\\n' < /proc/$p/environ | grep -qx '{ENV_NAME}={ENV_VALUE}'; \
           then echo \"$p $comm has\"; else echo \"$p $comm lacks\"; fi; \
         done"
    );
    let out = h.run(id, &script).await;
    assert_eq!(out.exit_code, 0, "{}: {}", h.tool, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    eprintln!(
        "project settings → {}: env var {ENV_NAME} in the agent's processes (pid comm): {lines:?}",
        h.tool
    );
    assert!(
        lines
            .iter()
            .any(|l| !l.ends_with(" sh has") && !l.ends_with(" sh lacks")),
        "{}: no agent CLI process found in session {sid}: {lines:?}",
        h.tool
    );
    assert!(
        lines.iter().all(|l| l.ends_with(" has")),
        "{}: the project env var is missing from an agent process: {lines:?}",
        h.tool
    );
}
