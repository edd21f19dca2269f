//! `courier keys set|list|delete`.

use std::io::{IsTerminal, Read};

use clap::Subcommand;
use courier_api::views::{Key, KeyList, KeyValue};
use reqwest::Method;

use super::{Conn, Http, Result, fail, print_json, short_time};
use crate::table;

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Sets a provider key (the value is read from stdin when omitted).
    Set {
        /// anthropic, openrouter, openai, github or e2b.
        provider: String,
        /// The key (prefer stdin: it stays out of shell history).
        value: Option<String>,
        /// Set it on this project instead of on your user.
        #[arg(long)]
        project: Option<String>,
    },
    /// Lists keys, masked.
    List {
        /// This project's keys instead of your user's.
        #[arg(long)]
        project: Option<String>,
    },
    /// Deletes a provider key.
    Delete {
        /// The provider.
        provider: String,
        /// On this project instead of on your user.
        #[arg(long)]
        project: Option<String>,
    },
}

fn keys_base(project: Option<&str>) -> String {
    match project {
        Some(p) => format!("/v1/projects/{p}/keys"),
        None => "/v1/keys".to_owned(),
    }
}

/// `courier keys …`.
pub async fn keys(conn: &Conn, command: KeysCommand) -> Result<()> {
    let http = Http::new(conn)?;
    match command {
        KeysCommand::Set {
            provider,
            value,
            project,
        } => {
            let value = match value {
                Some(v) => v,
                None => {
                    if std::io::stdin().is_terminal() {
                        eprint!("{provider} key: ");
                    }
                    let mut v = String::new();
                    std::io::stdin()
                        .read_to_string(&mut v)
                        .map_err(|e| fail(1, format!("reading stdin: {e}")))?;
                    v.trim().to_owned()
                }
            };
            let key: Key = http
                .call(
                    Method::PUT,
                    &format!("{}/{provider}", keys_base(project.as_deref())),
                    &KeyValue { value },
                )
                .await?;
            if conn.json {
                print_json(&key);
            } else {
                println!("{} key set: {}", key.provider, key.masked);
            }
            Ok(())
        }
        KeysCommand::List { project } => {
            let list: KeyList = http
                .fetch(Method::GET, &keys_base(project.as_deref()))
                .await?;
            if conn.json {
                print_json(&list);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = list
                .items
                .iter()
                .map(|k| {
                    vec![
                        k.provider.to_string(),
                        k.owner.as_str().to_owned(),
                        k.masked.clone(),
                        short_time(&k.updated_at),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(&["PROVIDER", "OWNER", "KEY", "UPDATED"], &rows)
            );
            Ok(())
        }
        KeysCommand::Delete { provider, project } => {
            http.done(
                Method::DELETE,
                &format!("{}/{provider}", keys_base(project.as_deref())),
            )
            .await?;
            println!("{provider} key deleted");
            Ok(())
        }
    }
}
