//! `courier`: the server (`courier serve`), its admin commands, and the command-line
//! client that talks to a running server over HTTP.
//!
//! Exit codes: 0 success, 1 other failure, 2 bad usage, 3 not authenticated or not
//! allowed, 4 not found, 5 invalid input, 6 conflict with the current state, 7 rate
//! limited, 8 server unreachable.

mod client;
mod config;
mod data_dir;
mod providers;
mod serve;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Runs AI coding agents in sandboxes.
#[derive(Debug, Parser)]
#[command(name = "courier", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 failure, 2 usage, 3 auth (401/403), 4 not found, \
5 invalid input, 6 conflict, 7 rate limited, 8 server unreachable.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server: API, orchestrator, dashboard (one process).
    Serve(serve::ServeArgs),
    /// Administration with direct access to the database.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Sandboxes: create, list, get, logs, send, kill, delete, restore.
    Sandbox {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::SandboxCommand,
    },
    /// Provider keys (shown masked).
    Keys {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::KeysCommand,
    },
    /// Projects: their settings (defaults, env vars, system prompt, CLAUDE.md, skills,
    /// commands).
    Project {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::ProjectCommand,
    },
    /// Personas: named agent setups (tool, model, effort, system prompt, skills) that
    /// workflow steps run as.
    Persona {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::PersonaCommand,
    },
    /// Workflow runs: a designer works on a prompt, a checker reviews it with a verdict,
    /// round after round; an optimizer may polish the result.
    Workflow {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::WorkflowCommand,
    },
    /// Work chains: issues worked on one after another by workflow runs on one branch.
    Chain {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::ChainCommand,
    },
    /// Issue sessions: an agent scans the project and reports issue cards, which can be
    /// started as sandboxes or added to a chain.
    Issues {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::IssuesCommand,
    },
    /// Tool templates at the server's sandbox provider: build, list builds.
    Templates {
        #[command(flatten)]
        conn: client::Conn,
        #[command(subcommand)]
        command: client::TemplatesCommand,
    },
    /// Usage and cost per project.
    Usage {
        #[command(flatten)]
        conn: client::Conn,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Cost rates: the US dollars per unit usage is priced at (E2B's per-second vCPU and
    /// GiB prices are put in when the table has none).
    Rates {
        #[command(subcommand)]
        command: RatesCommand,
    },
}

#[derive(Debug, Subcommand)]
enum RatesCommand {
    /// Lists every rate, past ones included.
    List {
        #[command(flatten)]
        db: AdminDb,
    },
    /// Sets the rate of SERVICE's METRIC from now on: usage recorded earlier keeps its
    /// cost. E.g. `courier admin rates set e2b cpu_seconds 0.000014`.
    Set {
        /// Who bills: e2b, anthropic, openai, openrouter.
        service: courier_store::Service,
        /// What is priced: cpu_seconds, memory_gib_seconds, compute_seconds (a flat rate
        /// per sandbox-second: not charged, compute is priced per vCPU and GiB),
        /// input_tokens, output_tokens, cache_read_tokens, cache_write_tokens.
        metric: courier_store::UsageMetric,
        /// US dollars per unit (0 or more).
        usd_per_unit: f64,
        #[command(flatten)]
        db: AdminDb,
    },
}

/// Where an admin command finds the database.
#[derive(Debug, Args)]
struct AdminDb {
    /// Data directory (SQLite database); ignored for Postgres [default: ./courier-data].
    #[arg(long, env = "COURIER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Config file, as for `courier serve` (its `data_dir` and `database_url` count)
    /// [default: courier.toml in the data dir, if it exists].
    #[arg(long, env = "COURIER_CONFIG")]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl AdminDb {
    fn overrides(&self) -> config::Overrides {
        config::Overrides {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            ..config::Overrides::default()
        }
    }
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Creates a user with a first project and prints a new API token (shown once).
    Create(UserCreate),
}

#[derive(Debug, Args)]
struct UserCreate {
    /// E-mail address (unique).
    #[arg(long)]
    email: String,
    /// Display name.
    #[arg(long, default_value = "")]
    name: String,
    /// Name of the user's first project.
    #[arg(long, default_value = "default")]
    project: String,
    /// Data directory (SQLite database, master key); ignored for Postgres
    /// [default: ./courier-data].
    #[arg(long, env = "COURIER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Config file, as for `courier serve` (its `data_dir` and `database_url` count)
    /// [default: courier.toml in the data dir, if it exists].
    #[arg(long, env = "COURIER_CONFIG")]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    // The embedded courier-sandboxd re-executes this binary as its sandbox helper: that
    // must happen before any thread exists.
    courier_sandboxd::runtime::init::main_if_requested();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(args).await.map_err(client::Failure::from),
            Command::Admin {
                command:
                    AdminCommand::User {
                        command: UserCommand::Create(args),
                    },
            } => serve::create_user(
                config::Overrides {
                    config: args.config,
                    data_dir: args.data_dir,
                    ..config::Overrides::default()
                },
                &args.email,
                &args.name,
                &args.project,
                args.json,
            )
            .await
            .map_err(client::Failure::from),
            Command::Admin {
                command: AdminCommand::Rates { command },
            } => {
                let (db, set) = match &command {
                    RatesCommand::List { db } => (db, None),
                    RatesCommand::Set {
                        service,
                        metric,
                        usd_per_unit,
                        db,
                    } => (db, Some((*service, *metric, *usd_per_unit))),
                };
                serve::rates(db.overrides(), set, db.json)
                    .await
                    .map_err(client::Failure::from)
            }
            Command::Sandbox { conn, command } => client::sandbox(&conn, command).await,
            Command::Keys { conn, command } => client::keys(&conn, command).await,
            Command::Project { conn, command } => client::project(&conn, command).await,
            Command::Persona { conn, command } => client::persona(&conn, command).await,
            Command::Workflow { conn, command } => client::workflow(&conn, command).await,
            Command::Chain { conn, command } => client::chain(&conn, command).await,
            Command::Issues { conn, command } => client::issues(&conn, command).await,
            Command::Templates { conn, command } => client::templates(&conn, command).await,
            Command::Usage { conn } => client::usage(&conn).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
