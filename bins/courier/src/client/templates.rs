//! `courier templates build|list` and `courier usage`.

use clap::Subcommand;
use courier_api::views::{
    TemplateBuild, TemplateBuildList, TemplateBuildRequest, Usage, UsageReport,
};
use reqwest::Method;

use super::{Conn, Http, Result, fail, print_json, short_time};
use crate::table;

#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// Builds a tool's sandbox template at the server's provider (from `base`, with the
    /// CLI installed); needed once on the embedded backend.
    Build {
        /// claude, opencode, codex or pi.
        tool: String,
    },
    /// Lists template builds, newest first.
    List {
        /// Only this tool's builds.
        #[arg(long)]
        tool: Option<String>,
    },
}

fn template_build_row(b: &TemplateBuild) -> Vec<String> {
    vec![
        b.id.to_string(),
        b.tool_id.clone(),
        b.template_name.clone(),
        b.status.to_string(),
        short_time(&b.created_at),
        b.error.clone().unwrap_or_default(),
    ]
}

const TEMPLATE_BUILD_HEADERS: [&str; 6] = ["ID", "TOOL", "TEMPLATE", "STATUS", "CREATED", "ERROR"];

/// `courier templates build|list`.
pub async fn templates(conn: &Conn, command: TemplatesCommand) -> Result<()> {
    let http = Http::new(conn)?;
    match command {
        TemplatesCommand::Build { tool } => {
            let build: TemplateBuild = http
                .call(
                    Method::POST,
                    "/v1/template-builds",
                    &TemplateBuildRequest { tool: tool.clone() },
                )
                .await?;
            if conn.json {
                print_json(&build);
            } else {
                print!(
                    "{}",
                    table::render(&TEMPLATE_BUILD_HEADERS, &[template_build_row(&build)])
                );
                println!("follow it with: courier templates list --tool {tool}");
            }
            Ok(())
        }
        TemplatesCommand::List { tool } => {
            let path = match &tool {
                Some(tool) if tool.chars().all(|c| c.is_ascii_alphanumeric()) => {
                    format!("/v1/template-builds?tool={tool}")
                }
                Some(tool) => {
                    return Err(fail(
                        5,
                        format!(
                            "invalid tool {tool:?}: a tool id such as claude, opencode, codex or pi"
                        ),
                    ));
                }
                None => "/v1/template-builds".to_owned(),
            };
            let list: TemplateBuildList = http.fetch(Method::GET, &path).await?;
            if conn.json {
                print_json(&list);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list.items.iter().map(template_build_row).collect();
            print!("{}", table::render(&TEMPLATE_BUILD_HEADERS, &rows));
            Ok(())
        }
    }
}

/// `courier usage`.
pub async fn usage(conn: &Conn) -> Result<()> {
    let http = Http::new(conn)?;
    let report: UsageReport = http.fetch(Method::GET, "/v1/usage").await?;
    if conn.json {
        print_json(&report);
        return Ok(());
    }
    let row = |name: String, active: String, u: &Usage| {
        vec![
            name,
            active,
            format!("{:.0}", u.compute_seconds),
            format!("{:.0}", u.cpu_seconds),
            format!("{:.0}", u.memory_gib_seconds),
            format!("{:.0}", u.input_tokens),
            format!("{:.0}", u.output_tokens),
            format!("${:.4}", u.cost_usd),
        ]
    };
    let mut rows: Vec<Vec<String>> = report
        .projects
        .iter()
        .map(|p| row(p.name.clone(), p.active_sandboxes.to_string(), &p.usage))
        .collect();
    rows.push(row("TOTAL".into(), String::new(), &report.total));
    print!(
        "{}",
        table::render(
            &[
                "PROJECT",
                "ACTIVE",
                "COMPUTE S",
                "VCPU S",
                "GIB S",
                "IN TOKENS",
                "OUT TOKENS",
                "COST"
            ],
            &rows
        )
    );
    Ok(())
}
