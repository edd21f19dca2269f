//! The steps each tool adds after the common ones.

use super::{SYSTEM_PROMPT_PATH, SetupContext, Steps};
use crate::registry::ToolId;
use crate::{HOME_DIR, PROJECT_DIR};

fn project_claude_md(ctx: &SetupContext, steps: &mut Steps, injected: &mut Vec<String>) {
    if let Some(md) = &ctx.claude_md {
        steps.write(format!("{PROJECT_DIR}/CLAUDE.md"), md.clone(), 0o644);
        injected.push("/CLAUDE.md".to_owned());
    }
}

/// Skills as `.claude/skills/<name>/SKILL.md`: Claude Code lists them by name and
/// description, and OpenCode reads the same folders.
fn project_skills(ctx: &SetupContext, steps: &mut Steps, injected: &mut Vec<String>) {
    for skill in &ctx.skills {
        steps.write(
            format!("{PROJECT_DIR}/.claude/skills/{}/SKILL.md", skill.name),
            skill.content.clone(),
            0o644,
        );
        injected.push(format!("/.claude/skills/{}/", skill.name));
    }
}

/// Skills as `<dir>/<name>/SKILL.md` in a CLI's own user-level skills folder, outside
/// the work tree (Codex `~/.codex/skills`, Pi `~/.pi/agent/skills`).
fn user_skills(ctx: &SetupContext, dir: &str, steps: &mut Steps) {
    for skill in &ctx.skills {
        steps.write(
            format!("{dir}/{}/SKILL.md", skill.name),
            skill.content.clone(),
            0o644,
        );
    }
}

pub(super) fn claude_steps(
    ctx: &SetupContext,
    system_prompt: &str,
    steps: &mut Steps,
    injected: &mut Vec<String>,
) {
    project_claude_md(ctx, steps, injected);
    project_skills(ctx, steps, injected);
    for command in &ctx.commands {
        steps.write(
            format!("{PROJECT_DIR}/.claude/commands/{}.md", command.name),
            command.content.clone(),
            0o644,
        );
        injected.push(format!("/.claude/commands/{}.md", command.name));
    }
    // The user-level memory file carries the system prompt and the compiled learnings, so
    // they apply without touching the repository.
    let mut memory = system_prompt.trim_end().to_owned();
    memory.push('\n');
    if let Some(learnings) = ctx.learnings.as_deref().filter(|l| !l.trim().is_empty()) {
        memory.push_str("\n# Learnings from earlier sandboxes\n\n");
        memory.push_str(learnings.trim_end());
        memory.push('\n');
    }
    steps.write(format!("{HOME_DIR}/.claude/CLAUDE.md"), memory, 0o644);
    if let Some(url) = &ctx.endpoints.anthropic {
        steps.set_plain("ANTHROPIC_BASE_URL", url);
    }
    // An API key beats a subscription token; setting both would be ambiguous.
    if let Some(key) = &ctx.keys.anthropic_api_key {
        steps.set_secret("ANTHROPIC_API_KEY", key);
    } else if let Some(token) = &ctx.keys.anthropic_oauth_token {
        steps.set_secret("CLAUDE_CODE_OAUTH_TOKEN", token);
    }
}

pub(super) fn opencode_steps(ctx: &SetupContext, steps: &mut Steps, injected: &mut Vec<String>) {
    // OpenCode reads `CLAUDE.md` when the repository has no `AGENTS.md`, and lists the
    // skills of `.claude/skills/`.
    project_claude_md(ctx, steps, injected);
    project_skills(ctx, steps, injected);
    let mut options = serde_json::json!({ "apiKey": "{env:OPENROUTER_API_KEY}" });
    if let Some(url) = &ctx.endpoints.openrouter {
        options["baseURL"] = serde_json::Value::String(url.clone());
    }
    let config = serde_json::json!({
        "$schema": "https://opencode.ai/config.json",
        "instructions": [SYSTEM_PROMPT_PATH],
        "provider": { "openrouter": { "options": options } },
        "permission": { "*": "allow", "external_directory": "allow" },
        "autoupdate": false,
        "share": "disabled"
    });
    let text = serde_json::to_string_pretty(&config).unwrap_or_default() + "\n";
    steps.write(
        format!("{HOME_DIR}/.config/opencode/opencode.json"),
        text,
        0o644,
    );
    if let Some(key) = &ctx.keys.openrouter_api_key {
        steps.set_secret("OPENROUTER_API_KEY", key);
    }
}

pub(super) fn codex_steps(
    ctx: &SetupContext,
    system_prompt: &str,
    steps: &mut Steps,
    injected: &mut Vec<String>,
) {
    // Read through `project_doc_fallback_filenames` below when the repository has no
    // `AGENTS.md`.
    project_claude_md(ctx, steps, injected);
    user_skills(ctx, &format!("{HOME_DIR}/.codex/skills"), steps);
    if let Some(key) = &ctx.keys.openai_api_key {
        // Codex reads CODEX_API_KEY for exec, not OPENAI_API_KEY.
        steps.set_secret("CODEX_API_KEY", key);
    }
    if let Some(install) = crate::registry::install_command(ToolId::Codex, None) {
        steps.run(
            format!("command -v codex >/dev/null 2>&1 || {install}"),
            None,
        );
    }
    // The key comes from the environment set above, never from the command line.
    steps.run("printenv CODEX_API_KEY | codex login --with-api-key", None);
    let mut config = "approval_policy = \"never\"\n\
                      sandbox_mode = \"danger-full-access\"\n\
                      project_doc_fallback_filenames = [\"CLAUDE.md\"]\n"
        .to_owned();
    if let Some(url) = &ctx.endpoints.openai {
        // Validated: no quote or backslash can end the TOML string.
        config.push_str(&format!("openai_base_url = \"{url}\"\n"));
    }
    steps.write(format!("{HOME_DIR}/.codex/config.toml"), config, 0o644);
    steps.write(format!("{HOME_DIR}/.codex/AGENTS.md"), system_prompt, 0o644);
}

pub(super) fn pi_steps(
    ctx: &SetupContext,
    system_prompt: &str,
    steps: &mut Steps,
    injected: &mut Vec<String>,
) {
    if let Some(key) = &ctx.keys.openrouter_api_key {
        steps.set_secret("OPENROUTER_API_KEY", key);
    }
    project_claude_md(ctx, steps, injected);
    user_skills(ctx, &format!("{HOME_DIR}/.pi/agent/skills"), steps);
    steps.write(
        format!("{HOME_DIR}/.pi/agent/APPEND_SYSTEM.md"),
        system_prompt,
        0o644,
    );
    if let Some(url) = &ctx.endpoints.openrouter {
        let models = serde_json::json!({ "providers": { "openrouter": { "baseUrl": url } } });
        let text = serde_json::to_string_pretty(&models).unwrap_or_default() + "\n";
        steps.write(format!("{HOME_DIR}/.pi/agent/models.json"), text, 0o644);
    }
}
