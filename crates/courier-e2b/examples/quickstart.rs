//! Quickstart: create a sandbox, run a command, write and read a file, kill it.
//!
//! Reads the official variables: `E2B_API_KEY` (and optionally `E2B_DOMAIN`,
//! `E2B_API_URL`, `E2B_SANDBOX_URL`, `E2B_DEBUG`), so it runs against E2B's cloud or a
//! local compatible server alike:
//!
//! ```text
//! E2B_API_KEY=e2b_... cargo run -p courier-e2b --example quickstart
//! ```

use std::time::Duration;

use courier_e2b::{Client, Error, Sandbox};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let client = Client::from_env()?;
    let sandbox = Sandbox::builder()
        .template(std::env::var("E2B_TEMPLATE").unwrap_or_else(|_| "base".to_owned()))
        .timeout(Duration::from_secs(120))
        .metadata("example", "quickstart")
        .create(&client)
        .await?;
    println!(
        "created sandbox {} (envd {})",
        sandbox.id(),
        sandbox.envd_version()
    );

    let result = use_sandbox(&sandbox).await;
    // Kill even when something above failed.
    let killed = sandbox.kill().await?;
    println!("killed: {killed}");
    result
}

async fn use_sandbox(sandbox: &Sandbox) -> Result<(), Error> {
    let output = sandbox
        .commands()
        .run("echo hello from $(hostname)")
        .await?;
    print!("stdout: {}", output.stdout);

    let written = sandbox
        .files()
        .write("quickstart/hello.txt", "Hello, sandbox!\n")
        .await?;
    println!("wrote {}", written.path);
    let text = sandbox.files().read_text(&written.path).await?;
    print!("read back: {text}");

    match sandbox.commands().run("exit 3").await {
        Err(Error::CommandExited { exit_code, .. }) => {
            println!("`exit 3` exited with {exit_code}, as expected")
        }
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
