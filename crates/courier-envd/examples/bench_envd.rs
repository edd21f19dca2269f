//! courier-e2b (Proto and JSON codecs) vs the official E2B Python SDK, side by side on the
//! same courier-envd: `run("true")` round trip p50/p99, stdout streaming MB/s, file upload
//! and download MB/s.
//!
//! ```text
//! cargo run --release -p courier-envd --example bench_envd
//! ```
//!
//! Starts courier-envd in this process on 127.0.0.1 (commands run as the current user),
//! measures with courier-e2b, then runs `tests/python/bench_envd.py` in the virtualenv of
//! `tests/python/venv.sh` (`E2B_DEBUG=true`, `E2B_SANDBOX_URL` at the same daemon) and
//! prints one table. Without Python the SDK's column says why it is missing.
//!
//! BENCH_RUNS (200), BENCH_STREAM_MB (200) and BENCH_FILE_MB (64) change the sizes.
//! Prints figures only; asserts no timing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use courier_e2b::{Client, CommandEvent, ConnectionConfig, Sandbox, codec::Codec};
use courier_envd::Envd;
use futures::StreamExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn current_user() -> String {
    let uid = nix::unistd::getuid().as_raw().to_string();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                (fields.get(2) == Some(&uid.as_str())).then(|| fields[0].to_owned())
            })
        })
        .unwrap_or_else(|| "root".to_owned())
}

/// One client's four figures.
#[derive(Debug, Default, Clone)]
struct Figures {
    p50: Duration,
    p99: Duration,
    stream_mb_s: Option<f64>,
    upload_mb_s: Option<f64>,
    download_mb_s: Option<f64>,
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    (at(0.50), at(0.99))
}

fn sandbox(addr: std::net::SocketAddr, codec: Codec) -> Result<Sandbox, BoxError> {
    let config = ConnectionConfig::builder()
        .api_key("e2b_0000000000000000000000000000000000000000")
        .sandbox_url(format!("http://{addr}"))
        .request_timeout(Duration::from_secs(600))
        .codec(codec)
        .build()?;
    let client = Client::new(config)?;
    let record = serde_json::from_value(serde_json::json!({
        "templateID": "base", "sandboxID": "local", "clientID": "x",
        "envdVersion": courier_envd::ENVD_VERSION,
    }))?;
    Ok(Sandbox::from_record(&client, record))
}

async fn rust_side(
    addr: std::net::SocketAddr,
    codec: Codec,
    dir: &Path,
    home: &str,
    runs: usize,
    stream_mb: usize,
    file_mb: usize,
) -> Result<Figures, BoxError> {
    let sandbox = sandbox(addr, codec)?;
    let commands = sandbox.commands();
    commands.run("true").env("HOME", home).await?; // warm the connection pool
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        commands.run("true").env("HOME", home).await?;
        samples.push(start.elapsed());
    }
    let (p50, p99) = percentiles(samples);
    let mut figures = Figures {
        p50,
        p99,
        ..Figures::default()
    };

    if stream_mb > 0 {
        let start = Instant::now();
        let mut handle = commands
            .run(format!("head -c {stream_mb}M /dev/zero"))
            .env("HOME", home)
            .timeout(Duration::from_secs(600))
            .spawn()
            .await?;
        let mut received = 0usize;
        while let Some(event) = handle.next().await {
            match event? {
                CommandEvent::Stdout(bytes) => received += bytes.len(),
                CommandEvent::Exit(_) => break,
                _ => {}
            }
        }
        let elapsed = start.elapsed();
        if received != stream_mb << 20 {
            return Err(format!("streamed {received} bytes, expected {}", stream_mb << 20).into());
        }
        figures.stream_mb_s = Some(received as f64 / 1e6 / elapsed.as_secs_f64());
    }

    if file_mb > 0 {
        // Incompressible and not all zeros, like the Python side's os.urandom.
        let mut data = vec![0u8; file_mb << 20];
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        for chunk in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let data = bytes::Bytes::from(data);
        let path = dir.join(format!("bench-{codec:?}.bin"));
        let path = path.to_string_lossy();
        let files = sandbox.files();
        let start = Instant::now();
        files.write(&path, data.clone()).await?;
        figures.upload_mb_s = Some(data.len() as f64 / 1e6 / start.elapsed().as_secs_f64());
        let start = Instant::now();
        let back = files.read(&path).await?;
        figures.download_mb_s = Some(back.len() as f64 / 1e6 / start.elapsed().as_secs_f64());
        if back != data {
            return Err("downloaded file differs from the upload".into());
        }
        files.remove(&path).await?;
    }
    Ok(figures)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Why the official SDK's side has no figures.
#[derive(Debug, thiserror::Error)]
enum PythonSide {
    #[error("venv.sh: {0}")]
    StartVenv(std::io::Error),
    #[error("venv.sh failed ({0})")]
    Venv(std::process::ExitStatus),
    #[error("python: {0}")]
    StartPython(std::io::Error),
    #[error("bench_envd.py failed ({0})")]
    Python(std::process::ExitStatus),
    #[error("bench_envd.py output: {error}: {line}")]
    Output {
        error: serde_json::Error,
        line: String,
    },
    #[error("bench_envd.py output lacks run_true_s")]
    NoRuns,
}

/// The official SDK's figures, or why there are none.
async fn python_side(
    addr: std::net::SocketAddr,
    dir: &Path,
    home: &str,
    runs: usize,
    stream_mb: usize,
    file_mb: usize,
) -> Result<Figures, PythonSide> {
    let root = repo_root();
    let venv = tokio::process::Command::new("bash")
        .arg(root.join("tests/python/venv.sh"))
        .current_dir(&root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(PythonSide::StartVenv)?;
    if !venv.status.success() {
        return Err(PythonSide::Venv(venv.status));
    }
    let venv = String::from_utf8_lossy(&venv.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let output = tokio::process::Command::new(Path::new(&venv).join("bin/python"))
        .arg(root.join("tests/python/bench_envd.py"))
        .args(["--runs", &runs.to_string()])
        .args(["--stream-mb", &stream_mb.to_string()])
        .args(["--file-mb", &file_mb.to_string()])
        .arg("--dir")
        .arg(dir)
        .args(["--home", home])
        .env("E2B_DEBUG", "true")
        .env("E2B_SANDBOX_URL", format!("http://{addr}"))
        .env_remove("E2B_API_URL")
        .env_remove("E2B_DOMAIN")
        .env_remove("E2B_ACCESS_TOKEN")
        .env(
            "E2B_API_KEY",
            "e2b_0000000000000000000000000000000000000000",
        )
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(PythonSide::StartPython)?;
    if !output.status.success() {
        return Err(PythonSide::Python(output.status));
    }
    parse_python(&String::from_utf8_lossy(&output.stdout))
}

/// Reads bench_envd.py's JSON line.
fn parse_python(stdout: &str) -> Result<Figures, PythonSide> {
    let line = stdout.lines().last().unwrap_or_default();
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|error| PythonSide::Output {
            error,
            line: line.to_owned(),
        })?;
    let samples = value["run_true_s"]
        .as_array()
        .ok_or(PythonSide::NoRuns)?
        .iter()
        .filter_map(|v| v.as_f64())
        .map(Duration::from_secs_f64)
        .collect();
    let (p50, p99) = percentiles(samples);
    Ok(Figures {
        p50,
        p99,
        stream_mb_s: value["stream_mb_s"].as_f64(),
        upload_mb_s: value["upload_mb_s"].as_f64(),
        download_mb_s: value["download_mb_s"].as_f64(),
    })
}

fn cell_ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn cell_rate(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} MB/s"))
}

fn main() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench())
}

async fn bench() -> Result<(), BoxError> {
    let runs = env_usize("BENCH_RUNS", 200);
    let stream_mb = env_usize("BENCH_STREAM_MB", 200);
    let file_mb = env_usize("BENCH_FILE_MB", 64);
    let user = current_user();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let envd = Envd::builder().default_user(user.clone()).build();
    let daemon = tokio::spawn(async move {
        if let Err(e) = envd.serve(listener).await {
            eprintln!("bench_envd: envd stopped: {e}");
        }
    });
    let dir = tempfile::tempdir()?;
    // Commands run through a login shell: an empty HOME keeps this machine's profile (which
    // can take most of a second) out of the figures, for every client alike.
    let home = dir.path().join("home");
    std::fs::create_dir(&home)?;
    let home = home.to_string_lossy().into_owned();
    println!(
        "courier-envd {} in-process on {addr} as {user} (HOME={home}); run(\"true\") x{runs}, \
         `head -c {stream_mb}M /dev/zero`, {file_mb} MiB upload + download",
        courier_envd::ENVD_VERSION
    );

    let (d, h) = (dir.path(), home.as_str());
    let proto = rust_side(addr, Codec::Proto, d, h, runs, stream_mb, file_mb).await?;
    let json = rust_side(addr, Codec::Json, d, h, runs, stream_mb, file_mb).await?;
    let python = python_side(addr, d, h, runs, stream_mb, file_mb).await;
    daemon.abort();

    let py = |f: fn(&Figures) -> String| match &python {
        Ok(p) => f(p),
        Err(_) => "n/a".to_owned(),
    };
    // How many times courier-e2b (Proto) beats the official SDK.
    let ratio = |rust: Option<f64>, python: Option<f64>, lower_is_better: bool| match (rust, python)
    {
        (Some(r), Some(p)) if r > 0.0 && p > 0.0 => {
            format!("{:.1}x", if lower_is_better { p / r } else { r / p })
        }
        _ => "-".to_owned(),
    };
    let secs = |d: Duration| Some(d.as_secs_f64());
    let python_fig = python.as_ref().ok();
    println!();
    println!(
        "{:<22} {:>16} {:>16} {:>18} {:>14}",
        "figure", "e2b-rs Proto", "e2b-rs JSON", "official Python", "Proto/Python"
    );
    let rows: [(&str, String, String, String, String); 5] = [
        (
            "run(\"true\") p50",
            cell_ms(proto.p50),
            cell_ms(json.p50),
            py(|p| cell_ms(p.p50)),
            ratio(secs(proto.p50), python_fig.and_then(|p| secs(p.p50)), true),
        ),
        (
            "run(\"true\") p99",
            cell_ms(proto.p99),
            cell_ms(json.p99),
            py(|p| cell_ms(p.p99)),
            ratio(secs(proto.p99), python_fig.and_then(|p| secs(p.p99)), true),
        ),
        (
            "stdout streaming",
            cell_rate(proto.stream_mb_s),
            cell_rate(json.stream_mb_s),
            py(|p| cell_rate(p.stream_mb_s)),
            ratio(
                proto.stream_mb_s,
                python_fig.and_then(|p| p.stream_mb_s),
                false,
            ),
        ),
        (
            "file upload",
            cell_rate(proto.upload_mb_s),
            cell_rate(json.upload_mb_s),
            py(|p| cell_rate(p.upload_mb_s)),
            ratio(
                proto.upload_mb_s,
                python_fig.and_then(|p| p.upload_mb_s),
                false,
            ),
        ),
        (
            "file download",
            cell_rate(proto.download_mb_s),
            cell_rate(json.download_mb_s),
            py(|p| cell_rate(p.download_mb_s)),
            ratio(
                proto.download_mb_s,
                python_fig.and_then(|p| p.download_mb_s),
                false,
            ),
        ),
    ];
    for (name, a, b, c, d) in rows {
        println!("{name:<22} {a:>16} {b:>16} {c:>18} {d:>14}");
    }
    if let Err(why) = &python {
        println!("(official Python SDK column skipped: {why})");
    }
    println!("(MB = 10^6 bytes; ratio = how many times courier-e2b Proto beats the Python SDK)");
    Ok(())
}
