//! `courier persona list|show|create|update|delete`.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use courier_api::views::{NamedFile, Persona, PersonaList, PersonaRequest};
use reqwest::Method;

use super::{
    Conn, Http, Result, or_dash, print_json, project_id, read_file, short_time, split_pair,
};
use crate::table;

#[derive(Debug, Subcommand)]
pub enum PersonaCommand {
    /// Lists a project's personas by name.
    List {
        /// The project (default: your first).
        #[arg(long)]
        project: Option<String>,
    },
    /// Shows one persona, its system prompt and skills.
    Show {
        /// Persona id.
        id: String,
    },
    /// Creates a persona: a named agent setup (tool, model, effort, system prompt,
    /// skills) that workflow steps can run as (`courier workflow run --persona
    /// ROLE=ID`).
    Create(PersonaArgs),
    /// Changes a persona; what is not mentioned stays as it is.
    Update {
        /// Persona id.
        id: String,
        #[command(flatten)]
        args: PersonaArgs,
    },
    /// Deletes a persona.
    Delete {
        /// Persona id.
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct PersonaArgs {
    /// The project (create only; default: your first).
    #[arg(long)]
    project: Option<String>,
    /// Its name, unique in the project (1–100 characters; required to create).
    #[arg(long)]
    name: Option<String>,
    /// CLI tool: claude, opencode, codex, pi or shell ("": the workflow's).
    #[arg(long, value_name = "TOOL")]
    tool: Option<String>,
    /// Model, one of its tool's ("" clears it).
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// Thinking effort: none, low, medium or high ("" clears it).
    #[arg(long, value_name = "EFFORT")]
    effort: Option<String>,
    /// Appended to the project's system prompt, read from FILE (an empty file clears
    /// it).
    #[arg(long, value_name = "FILE")]
    system_prompt: Option<PathBuf>,
    /// Adds or replaces a skill: NAME (a-z0-9-) and its SKILL.md FILE (repeatable).
    #[arg(long = "skill", value_name = "NAME=FILE")]
    skill: Vec<String>,
}

fn text_option(value: String) -> Option<String> {
    Some(value).filter(|v| !v.is_empty())
}

/// The request that keeps `current` except for what `args` change.
fn request(current: PersonaRequest, args: PersonaArgs) -> Result<PersonaRequest> {
    let mut skills = current.skills;
    for pair in &args.skill {
        let (name, file) = split_pair("--skill", pair)?;
        let content = read_file(Path::new(file))?;
        match skills.iter_mut().find(|s| s.name == name) {
            Some(s) => s.content = content,
            None => skills.push(NamedFile {
                name: name.to_owned(),
                content,
            }),
        }
    }
    let system_prompt = match args.system_prompt {
        Some(path) => text_option(read_file(&path)?),
        None => current.system_prompt,
    };
    Ok(PersonaRequest {
        name: args.name.unwrap_or(current.name),
        tool: args.tool.map_or(current.tool, text_option),
        model: args.model.map_or(current.model, text_option),
        thinking_effort: args.effort.map_or(current.thinking_effort, text_option),
        system_prompt,
        skills,
    })
}

fn rows(items: &[Persona]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.name.clone(),
                or_dash(p.tool.as_deref()),
                or_dash(p.model.as_deref()),
                or_dash(p.thinking_effort.as_deref()),
                p.skills.len().to_string(),
            ]
        })
        .collect()
}

const HEADER: [&str; 6] = ["ID", "NAME", "TOOL", "MODEL", "EFFORT", "SKILLS"];

fn print(p: &Persona) {
    let skills = if p.skills.is_empty() {
        "-".to_owned()
    } else {
        p.skills
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = [
        ("id", p.id.to_string()),
        ("name", p.name.clone()),
        ("project", p.project_id.to_string()),
        ("tool", or_dash(p.tool.as_deref())),
        ("model", or_dash(p.model.as_deref())),
        ("effort", or_dash(p.thinking_effort.as_deref())),
        ("skills", skills),
        ("updated", short_time(&p.updated_at)),
    ];
    for (k, v) in rows {
        println!("{k:<13} {v}");
    }
    if let Some(prompt) = &p.system_prompt {
        println!("system_prompt:\n{prompt}");
    }
}

/// `courier persona …`.
pub async fn persona(conn: &Conn, command: PersonaCommand) -> Result<()> {
    let http = Http::new(conn)?;
    let shown: Persona = match command {
        PersonaCommand::List { project } => {
            let project = project_id(&http, project).await?;
            let list: PersonaList = http
                .fetch(Method::GET, &format!("/v1/projects/{project}/personas"))
                .await?;
            if conn.json {
                print_json(&list);
            } else {
                print!("{}", table::render(&HEADER, &rows(&list.items)));
            }
            return Ok(());
        }
        PersonaCommand::Show { id } => {
            http.fetch(Method::GET, &format!("/v1/personas/{id}"))
                .await?
        }
        PersonaCommand::Create(args) => {
            let project = project_id(&http, args.project.clone()).await?;
            let body = request(PersonaRequest::default(), args)?;
            http.call(
                Method::POST,
                &format!("/v1/projects/{project}/personas"),
                &body,
            )
            .await?
        }
        PersonaCommand::Update { id, args } => {
            let path = format!("/v1/personas/{id}");
            let current: Persona = http.fetch(Method::GET, &path).await?;
            let current = PersonaRequest {
                name: current.name,
                tool: current.tool,
                model: current.model,
                thinking_effort: current.thinking_effort,
                system_prompt: current.system_prompt,
                skills: current.skills,
            };
            let body = request(current, args)?;
            http.call(Method::PUT, &path, &body).await?
        }
        PersonaCommand::Delete { id } => {
            http.done(Method::DELETE, &format!("/v1/personas/{id}"))
                .await?;
            println!("{id} deleted");
            return Ok(());
        }
    };
    if conn.json {
        print_json(&shown);
    } else {
        print(&shown);
    }
    Ok(())
}
