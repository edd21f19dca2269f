//! `courier project settings show|set`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use courier_api::views::{NamedFile, ProjectSettings, ProjectSettingsUpdate};
use reqwest::Method;

use super::{Conn, Http, Result, or_dash, print_json, project_id};

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// A project's settings: the defaults its sandboxes start from and what every one of
    /// them gets (env vars, system prompt, CLAUDE.md, skills, slash commands).
    Settings {
        #[command(subcommand)]
        command: SettingsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Shows the settings (env var values masked as ****abcd).
    Show {
        /// The project (default: your first).
        #[arg(long)]
        project: Option<String>,
    },
    /// Changes the settings; what is not mentioned stays as it is.
    Set(Box<SetArgs>),
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The project (default: your first).
    #[arg(long)]
    project: Option<String>,
    /// Default repository to clone ("" clears it).
    #[arg(long, value_name = "URL")]
    repo: Option<String>,
    /// Default base branch ("" clears it).
    #[arg(long, value_name = "BRANCH")]
    base_branch: Option<String>,
    /// Sets an env var for every sandbox (repeatable); the value is stored encrypted.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Removes an env var (repeatable).
    #[arg(long = "unset-env", value_name = "KEY")]
    unset_env: Vec<String>,
    /// The agent's system prompt, read from FILE (an empty file clears it).
    #[arg(long, value_name = "FILE")]
    system_prompt: Option<PathBuf>,
    /// The project's CLAUDE.md, read from FILE (an empty file clears it).
    #[arg(long, value_name = "FILE")]
    claude_md: Option<PathBuf>,
    /// Adds or replaces a skill: NAME (a-z0-9-) and its SKILL.md FILE (repeatable).
    #[arg(long = "skill", value_name = "NAME=FILE")]
    skill: Vec<String>,
    /// Removes a skill (repeatable).
    #[arg(long = "remove-skill", value_name = "NAME")]
    remove_skill: Vec<String>,
    /// Adds or replaces a slash command: NAME (A-Za-z0-9_-) and its Markdown FILE
    /// (repeatable).
    #[arg(long = "command", value_name = "NAME=FILE")]
    command: Vec<String>,
    /// Removes a slash command (repeatable).
    #[arg(long = "remove-command", value_name = "NAME")]
    remove_command: Vec<String>,
    /// Default tool: claude, opencode, codex, pi or shell ("" clears it).
    #[arg(long, value_name = "TOOL")]
    default_tool: Option<String>,
    /// Default model, used when a create runs the default tool ("" clears it).
    #[arg(long, value_name = "MODEL")]
    default_model: Option<String>,
    /// Default memory in MB (256–8192).
    #[arg(long, value_name = "MB")]
    default_memory: Option<i64>,
    /// Default CPUs (1–8).
    #[arg(long, value_name = "N")]
    default_cpus: Option<i64>,
    /// Default lifetime in seconds (60–14400).
    #[arg(long, value_name = "SECONDS")]
    default_timeout: Option<i64>,
    /// Default custom template ("" clears it).
    #[arg(long, value_name = "TEMPLATE")]
    default_template: Option<String>,
    /// The workflow checker's template (falls back to the default template; "" clears
    /// it).
    #[arg(long, value_name = "NAME")]
    checker_template: Option<String>,
    /// Thinking effort for a model: none, low, medium or high (repeatable; `MODEL=`
    /// removes it).
    #[arg(long = "effort", value_name = "MODEL=EFFORT")]
    effort: Vec<String>,
}

/// `""` clears a text setting; anything else sets it.
fn text_option(value: String) -> Option<String> {
    Some(value).filter(|v| !v.is_empty())
}

use super::{read_file as read, split_pair as split};

/// Replaces or adds `name` in `files`, keeping the order.
fn upsert(files: &mut Vec<NamedFile>, name: &str, content: String) {
    match files.iter_mut().find(|f| f.name == name) {
        Some(f) => f.content = content,
        None => files.push(NamedFile {
            name: name.to_owned(),
            content,
        }),
    }
}

/// The update that keeps `current` except for what `args` change. Stored env vars are
/// sent without values (the server keeps them).
fn update(current: ProjectSettings, args: SetArgs) -> Result<ProjectSettingsUpdate> {
    let mut env_vars: std::collections::BTreeMap<String, Option<String>> = current
        .env_vars
        .into_iter()
        .map(|v| (v.name, None))
        .collect();
    for pair in &args.env {
        let (name, value) = split("--env", pair)?;
        env_vars.insert(name.to_owned(), Some(value.to_owned()));
    }
    for name in &args.unset_env {
        env_vars.remove(name);
    }
    let mut skills = current.skills;
    for pair in &args.skill {
        let (name, file) = split("--skill", pair)?;
        upsert(&mut skills, name, read(Path::new(file))?);
    }
    skills.retain(|s| !args.remove_skill.contains(&s.name));
    let mut commands = current.commands;
    for pair in &args.command {
        let (name, file) = split("--command", pair)?;
        upsert(&mut commands, name, read(Path::new(file))?);
    }
    commands.retain(|c| !args.remove_command.contains(&c.name));
    let mut defaults = current.sandbox_defaults;
    if let Some(tool) = args.default_tool {
        defaults.tool = text_option(tool);
    }
    if let Some(model) = args.default_model {
        defaults.model = text_option(model);
    }
    if let Some(template) = args.default_template {
        defaults.template_id = text_option(template);
    }
    if let Some(template) = args.checker_template {
        defaults.checker_template_id = text_option(template);
    }
    for pair in &args.effort {
        let (model, effort) = split("--effort", pair)?;
        if effort.is_empty() {
            defaults.thinking_effort.remove(model);
        } else {
            defaults
                .thinking_effort
                .insert(model.to_owned(), effort.to_owned());
        }
    }
    defaults.memory_mb = args.default_memory.or(defaults.memory_mb);
    defaults.cpu_count = args.default_cpus.or(defaults.cpu_count);
    defaults.timeout_ms = args
        .default_timeout
        .map(|s| s.saturating_mul(1000))
        .or(defaults.timeout_ms);
    let file_option = |path: Option<PathBuf>, keep: Option<String>| -> Result<Option<String>> {
        match path {
            Some(p) => Ok(text_option(read(&p)?)),
            None => Ok(keep),
        }
    };
    Ok(ProjectSettingsUpdate {
        repo_url: args.repo.map_or(current.repo_url, text_option),
        base_branch: args.base_branch.map_or(current.base_branch, text_option),
        env_vars,
        system_prompt: file_option(args.system_prompt, current.system_prompt)?,
        claude_md: file_option(args.claude_md, current.claude_md)?,
        skills,
        commands,
        sandbox_defaults: defaults,
    })
}

fn summary(text: Option<&str>) -> String {
    text.map_or_else(
        || "-".to_owned(),
        |t| {
            format!(
                "{} lines, {} characters",
                t.lines().count(),
                t.chars().count()
            )
        },
    )
}

fn names(files: &[NamedFile]) -> String {
    if files.is_empty() {
        return "-".to_owned();
    }
    files
        .iter()
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `model=effort, …`, or `-`.
pub(super) fn efforts(map: &std::collections::BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return "-".to_owned();
    }
    map.iter()
        .map(|(m, e)| format!("{m}={e}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print(s: &ProjectSettings) {
    let env = if s.env_vars.is_empty() {
        "-".to_owned()
    } else {
        s.env_vars
            .iter()
            .map(|v| format!("{}={}", v.name, v.masked))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let d = &s.sandbox_defaults;
    let rows = [
        ("repo", or_dash(s.repo_url.as_deref())),
        ("base_branch", or_dash(s.base_branch.as_deref())),
        ("env", env),
        ("system_prompt", summary(s.system_prompt.as_deref())),
        ("claude_md", summary(s.claude_md.as_deref())),
        ("skills", names(&s.skills)),
        ("commands", names(&s.commands)),
        ("tool", or_dash(d.tool.as_deref())),
        ("model", or_dash(d.model.as_deref())),
        ("memory_mb", or_dash(d.memory_mb)),
        ("cpus", or_dash(d.cpu_count)),
        ("timeout_s", or_dash(d.timeout_ms.map(|ms| ms / 1000))),
        ("template", or_dash(d.template_id.as_deref())),
        (
            "checker_template",
            or_dash(d.checker_template_id.as_deref()),
        ),
        ("effort", efforts(&d.thinking_effort)),
    ];
    for (key, value) in rows {
        println!("{key:<13} {value}");
    }
}

async fn project_path(http: &Http, project: Option<String>) -> Result<String> {
    let id = project_id(http, project).await?;
    Ok(format!("/v1/projects/{id}/settings"))
}

/// `courier project …`.
pub async fn project(conn: &Conn, command: ProjectCommand) -> Result<()> {
    let http = Http::new(conn)?;
    let ProjectCommand::Settings { command } = command;
    let settings: ProjectSettings = match command {
        SettingsCommand::Show { project } => {
            let path = project_path(&http, project).await?;
            http.fetch(Method::GET, &path).await?
        }
        SettingsCommand::Set(args) => {
            let path = project_path(&http, args.project.clone()).await?;
            let current: ProjectSettings = http.fetch(Method::GET, &path).await?;
            let body = update(current, *args)?;
            http.call(Method::PUT, &path, &body).await?
        }
    };
    if conn.json {
        print_json(&settings);
    } else {
        print(&settings);
    }
    Ok(())
}
