//! `cargo xtask e2b-suite [pytest args]`: the official E2B Python SDK's own test suite
//! (`../shared/e2b-python-sdk`, see its `ORIGIN.md`) against courier-sandboxd.
//!
//! 1. copies the SDK folder to `$CARGO_TARGET_DIR/e2b-suite/sdk` (CI lays `shared/` out
//!    read-only) and installs it with the pinned test tooling
//!    (`tests/e2b-suite/requirements.txt`) into `$CARGO_TARGET_DIR/e2b-suite/venv`; a stamp
//!    makes the venv step a no-op when nothing changed,
//! 2. builds courier-sandboxd and courier-envd (or takes `COURIER_SANDBOXD_BIN` and
//!    `COURIER_ENVD_BIN`) and starts `courier-sandboxd serve --kill-on-exit` on two free
//!    loopback ports with a throw-away data dir and a random dev API key, the way
//!    `tests/python/run_sandboxd.sh` does, its Docker Hub mirror pointed at a local
//!    registry stand-in (courier-testkit's `courier-registry-standin`) that serves, under
//!    the name the suite pulls (`ubuntu:22.04`), a Debian bookworm `minbase` root file
//!    system debootstrapped once into `$CARGO_TARGET_DIR/e2b-suite/image-rootfs` (not
//!    Ubuntu: only Debian's archive is reachable here; bookworm because it is the host's
//!    release, whose glibc the dynamically linked debug courier-envd needs),
//! 3. runs pytest in the copy with xdist, a per-test timeout and a junit XML report, the
//!    tests of `[[skip]]` in `tests/e2b-suite/expectations.toml` deselected,
//! 4. prints passed / failed / skipped / expected-failing per test file, a total and the
//!    wall time; fails when a test that is not listed under `[[expected]]` fails (a
//!    regression) and reports listed tests that now pass, without failing for those.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::{cargo, cleanup, is_root, root, run, target_dir};

/// The list of tests Courier does not pass today, and of tests not run at all.
const EXPECTATIONS: &str = "tests/e2b-suite/expectations.toml";
/// The pinned test tooling.
const REQUIREMENTS: &str = "tests/e2b-suite/requirements.txt";
/// Courier's own tests through the official Python SDK, run with the suite.
const COURIER_TESTS: &str = "tests/e2b-suite/courier";
/// pytest-xdist workers (`-n`): sandboxes wait on I/O more than on the CPU, so 4 workers on
/// the 2-core machine measured 127-128 s of pytest against 164-190 s with 2, with the same
/// results (see ARCHITECTURE.md).
const WORKERS: &str = "4";
/// Seconds a test may take before pytest-timeout fails it (the SDK's own default is 30,
/// tuned for E2B's cloud; sandboxes here share two cores with the build).
const TEST_TIMEOUT: &str = "90";

/// `cargo xtask e2b-suite [pytest args]`. Without arguments the whole `tests` folder runs;
/// with arguments they go to pytest as they are (e.g. `tests/sync -k snapshot`).
pub fn e2b_suite(args: &[String]) -> Result<()> {
    if !is_root() {
        println!(
            "==> e2b-suite skipped: not root (courier-sandboxd needs namespaces, mounts, \
             cgroups)"
        );
        return Ok(());
    }
    let started = Instant::now();
    let expectations_path = root().join(EXPECTATIONS);
    let expectations = Expectations::parse(
        &fs::read_to_string(&expectations_path)
            .with_context(|| format!("reading {}", expectations_path.display()))?,
    )
    .with_context(|| format!("parsing {}", expectations_path.display()))?;

    let sdk = sdk_dir();
    if !sdk.join("tests").is_dir() || !sdk.join("pyproject.toml").is_file() {
        bail!(
            "the official E2B Python SDK is not at {} nor in a `shared/` beside any parent of \
             the checkout (set COURIER_E2B_SDK_DIR to its folder)",
            sdk.display()
        );
    }
    let work = target_dir().join("e2b-suite");
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let copy = prepare_copy(&sdk, &work)?;
    let python = prepare_venv(&work, &copy)?;
    let (server_bin, envd_bin) = binaries()?;
    let standin = ImageStandin::start(&work)?;

    let server = Server::start(&work, &server_bin, &envd_bin, &standin.url)?;
    let junit = work.join("junit.xml");
    if junit.exists() {
        fs::remove_file(&junit).with_context(|| format!("removing {}", junit.display()))?;
    }
    let mut pytest = Command::new(&python);
    pytest
        .current_dir(&copy)
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE"])
        .args(["-n", WORKERS, "--timeout", TEST_TIMEOUT])
        // xunit1 keeps the `file` attribute: the per-file table needs it.
        .args(["-o", "junit_family=xunit1", "--junitxml"])
        .arg(&junit);
    for id in expectations.skipped() {
        pytest.arg("--deselect").arg(id);
    }
    if args.is_empty() {
        // The official suite, and Courier's own checks through the same SDK (flows the
        // suite reaches only through E2B's cloud host names).
        pytest.arg("tests").arg(root().join(COURIER_TESTS));
    } else {
        pytest.args(args);
    }
    pytest
        .env_remove("E2B_DEBUG")
        .env_remove("E2B_ACCESS_TOKEN")
        .env_remove("E2B_DOMAIN")
        .env("E2B_VALIDATE_API_KEY", "false")
        .env("E2B_API_URL", &server.api_url)
        .env("E2B_SANDBOX_URL", &server.sandbox_url)
        .env("E2B_API_KEY", &server.api_key)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    // Not `run`: the command's Debug form would print the API key.
    println!(
        "\n==> pytest in {} (-n {WORKERS}, --timeout {TEST_TIMEOUT}, {} deselected, args {:?})",
        copy.display(),
        expectations.skipped().count(),
        args
    );
    let pytest_started = Instant::now();
    let status = pytest.status().context("starting pytest")?;
    let pytest_secs = pytest_started.elapsed().as_secs_f64();
    drop(server);
    drop(standin);

    let xml = fs::read_to_string(&junit).with_context(|| {
        format!(
            "pytest ({status}) wrote no junit report at {}",
            junit.display()
        )
    })?;
    let cases = parse_junit(&xml).context("parsing the junit report")?;
    let report = Report::new(&cases, &expectations, args.is_empty());
    print!("{}", report.table());
    println!(
        "\n==> e2b-suite: pytest {pytest_secs:.0}s, wall time {:.0}s (setup, server and pytest)",
        started.elapsed().as_secs_f64()
    );
    for id in &report.now_passing {
        println!("now passing, remove it from {EXPECTATIONS}: {id}");
    }
    for id in &report.not_run {
        println!("listed in {EXPECTATIONS} but not in this run: {id}");
    }
    if !report.regressions.is_empty() {
        for id in &report.regressions {
            println!("REGRESSION (failed, not listed in {EXPECTATIONS}): {id}");
        }
        bail!(
            "{} test(s) of the official E2B suite failed that are not expected to",
            report.regressions.len()
        );
    }
    // 0: all passed, 1: some failed (judged above against the list); anything else is an
    // interrupted run, an internal or usage error, or no test collected.
    match status.code() {
        Some(0 | 1) => {}
        _ => bail!("pytest did not complete ({status})"),
    }
    println!("==> e2b-suite: no regression");
    Ok(())
}

/// The SDK folder: `COURIER_E2B_SDK_DIR`, else `shared/e2b-python-sdk` beside the checkout
/// or beside one of its parents (CI lays `shared/` out next to the checkout; a clone made
/// inside the workspace finds it one level further up). Falls back to the first candidate
/// so the error names where it looked.
fn sdk_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COURIER_E2B_SDK_DIR") {
        return PathBuf::from(dir);
    }
    let candidates: Vec<PathBuf> = root()
        .ancestors()
        .skip(1)
        .map(|dir| dir.join("shared").join("e2b-python-sdk"))
        .collect();
    candidates
        .iter()
        .find(|dir| dir.join("pyproject.toml").is_file())
        .cloned()
        .unwrap_or_else(|| root().join("..").join("shared").join("e2b-python-sdk"))
}

/// A fresh writable copy of the SDK folder (the editable install points at it).
fn prepare_copy(sdk: &Path, work: &Path) -> Result<PathBuf> {
    let copy = work.join("sdk");
    if copy.exists() {
        fs::remove_dir_all(&copy).with_context(|| format!("removing {}", copy.display()))?;
    }
    run(
        "copy the SDK",
        Command::new("cp")
            .args(["-R", "--no-preserve=mode,ownership"])
            .arg(sdk)
            .arg(&copy),
    )?;
    Ok(copy)
}

/// The venv with the SDK (editable, from `copy`) and the pinned tooling; reinstalled only
/// when the requirements, the SDK's `pyproject.toml` or the interpreter changed.
fn prepare_venv(work: &Path, copy: &Path) -> Result<PathBuf> {
    let venv = work.join("venv");
    let python = venv.join("bin/python");
    let requirements = root().join(REQUIREMENTS);
    let version = Command::new("python3")
        .arg("--version")
        .output()
        .context("python3 --version (the suite needs Python 3.10 or later)")?;
    let want = format!(
        "{}\n{}\n{}",
        String::from_utf8_lossy(&version.stdout).trim(),
        fs::read_to_string(&requirements)
            .with_context(|| format!("reading {}", requirements.display()))?,
        fs::read_to_string(copy.join("pyproject.toml")).context("reading the SDK's pyproject")?,
    );
    let stamp = venv.join(".courier-e2b-suite.stamp");
    if python.is_file() && fs::read_to_string(&stamp).is_ok_and(|have| have == want) {
        println!("\n==> venv {} is up to date", venv.display());
        return Ok(python);
    }
    cleanup("removing the venv stamp", fs::remove_file(&stamp));
    if !python.is_file() {
        run(
            "create the venv",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        )?;
    }
    run(
        "install the SDK and the test tooling",
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--requirement"])
            .arg(&requirements)
            .arg("--editable")
            .arg(copy)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
    )?;
    fs::write(&stamp, want).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}

/// courier-sandboxd and courier-envd: `COURIER_SANDBOXD_BIN` and `COURIER_ENVD_BIN`, or a
/// debug build of both.
fn binaries() -> Result<(PathBuf, PathBuf)> {
    if let (Some(server), Some(envd)) = (
        std::env::var_os("COURIER_SANDBOXD_BIN"),
        std::env::var_os("COURIER_ENVD_BIN"),
    ) {
        return Ok((server.into(), envd.into()));
    }
    run(
        "build courier-sandboxd and courier-envd",
        cargo().args([
            "build",
            "--quiet",
            "-p",
            "courier-sandboxd-bin",
            "--bin",
            "courier-sandboxd",
            "-p",
            "courier-envd-bin",
            "--bin",
            "courier-envd",
        ]),
    )?;
    let debug = target_dir().join("debug");
    Ok((debug.join("courier-sandboxd"), debug.join("courier-envd")))
}

/// A running `courier-sandboxd serve --kill-on-exit`; dropping it stops the server (SIGTERM:
/// it kills every sandbox) and removes its data dir.
struct Server {
    child: Child,
    data: PathBuf,
    log: PathBuf,
    api_url: String,
    sandbox_url: String,
    api_key: String,
}

impl Server {
    fn start(work: &Path, server_bin: &Path, envd_bin: &Path, mirror: &str) -> Result<Self> {
        // Both listeners open at once: two distinct free ports.
        let api = TcpListener::bind("127.0.0.1:0")?;
        let proxy = TcpListener::bind("127.0.0.1:0")?;
        let (api_port, proxy_port) = (api.local_addr()?.port(), proxy.local_addr()?.port());
        drop((api, proxy));
        let api_key = format!("e2b_{}", random_hex(20)?);
        // A throw-away data dir outside the target dir (overlays need a filesystem that
        // supports them as upper layer; /tmp is what the other suites use).
        let data = std::env::temp_dir().join(format!("courier-e2b-suite.{}", std::process::id()));
        if data.exists() {
            fs::remove_dir_all(&data)?;
        }
        fs::create_dir_all(&data)?;
        let log = work.join("courier-sandboxd.log");
        let log_file = fs::File::create(&log)?;
        let mut cmd = Command::new(server_bin);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data.join("data"))
            .args(["--api-addr", &format!("127.0.0.1:{api_port}")])
            .args(["--proxy-addr", &format!("127.0.0.1:{proxy_port}")])
            .args(["--domain", "courier.test", "--kill-on-exit"])
            .arg("--envd-binary")
            .arg(envd_bin)
            .arg("--registry-mirror")
            .arg(format!("docker.io={mirror}"))
            // The stand-in listens on loopback, which pulls may reach only when allowed.
            .arg("--registry-allow")
            .arg(
                mirror
                    .trim_start_matches("http://")
                    .trim_start_matches("https://")
                    .trim_end_matches('/'),
            )
            .env("COURIER_SANDBOXD_API_KEY", &api_key)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        // Sandboxes may reach test servers on this host's outward address (the stand-in for
        // the internet in run_sandboxd.sh); the host's addresses are refused otherwise.
        if let Some(ip) = outward_ipv4() {
            cmd.args(["--egress-allow", &format!("{ip}/32")]);
        }
        println!(
            "\n==> start {} (api 127.0.0.1:{api_port}, proxy 127.0.0.1:{proxy_port}, log {})",
            server_bin.display(),
            log.display()
        );
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", server_bin.display()))?;
        let mut server = Self {
            child,
            data,
            log,
            api_url: format!("http://127.0.0.1:{api_port}"),
            sandbox_url: format!("http://127.0.0.1:{proxy_port}"),
            api_key,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !healthy(api_port) {
            if let Some(status) = server.child.try_wait()? {
                server.print_log_tail();
                bail!("courier-sandboxd exited before becoming healthy ({status})");
            }
            if Instant::now() > deadline {
                server.print_log_tail();
                bail!("courier-sandboxd did not answer GET /health with 204 within 120s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("<== courier-sandboxd is healthy");
        Ok(server)
    }

    fn print_log_tail(&self) {
        if let Ok(text) = fs::read_to_string(&self.log) {
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("last lines of the server log ({}):", self.log.display());
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            cleanup(
                "stopping courier-sandboxd",
                Command::new("kill")
                    .args(["-TERM", &self.child.id().to_string()])
                    .status(),
            );
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                eprintln!("xtask: warning: courier-sandboxd did not stop within 60s; killing it");
                cleanup("killing courier-sandboxd", self.child.kill());
                cleanup("waiting for courier-sandboxd", self.child.wait());
            }
        }
        let left = self.data.join("data/runtime/sandboxes");
        if fs::read_dir(&left).is_ok_and(|mut entries| entries.next().is_some()) {
            eprintln!(
                "xtask: warning: sandboxes left behind in {}; not removing the data dir",
                left.display()
            );
            return;
        }
        cleanup("removing the data dir", fs::remove_dir_all(&self.data));
    }
}

/// The image names the suite builds from, served by the stand-in.
const STANDIN_IMAGES: [&str; 1] = ["library/ubuntu:22.04"];

/// The registry stand-in process; dropping it stops it.
struct ImageStandin {
    child: Child,
    url: String,
}

impl ImageStandin {
    /// Debootstraps the image's root file system once (kept across runs), builds and
    /// starts `courier-registry-standin` on a loopback port.
    fn start(work: &Path) -> Result<Self> {
        let rootfs = work.join("image-rootfs");
        let done = work.join("image-rootfs.complete");
        if !done.is_file() {
            if rootfs.exists() {
                fs::remove_dir_all(&rootfs)
                    .with_context(|| format!("removing {}", rootfs.display()))?;
            }
            let debootstrap = Command::new("debootstrap").arg("--version").output();
            if debootstrap.is_err() {
                bail!(
                    "debootstrap is not installed (scripts/setup-machine.sh installs it): the \
                     registry stand-in serves a debootstrapped root file system"
                );
            }
            run(
                "debootstrap the stand-in image (Debian bookworm minbase, once)",
                Command::new("debootstrap")
                    .args(["--variant=minbase", "bookworm"])
                    .arg(&rootfs)
                    .arg("http://deb.debian.org/debian"),
            )?;
            fs::write(&done, "bookworm minbase\n")
                .with_context(|| format!("writing {}", done.display()))?;
        }
        run(
            "build the registry stand-in",
            cargo().args([
                "build",
                "--quiet",
                "-p",
                "courier-testkit",
                "--bin",
                "courier-registry-standin",
            ]),
        )?;
        let bin = target_dir().join("debug/courier-registry-standin");
        let mut cmd = Command::new(&bin);
        cmd.arg("--rootfs").arg(&rootfs);
        for image in STANDIN_IMAGES {
            cmd.args(["--image", image]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut line = String::new();
        {
            use std::io::BufRead as _;
            let stdout = child.stdout.take().context("the stand-in's stdout")?;
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .context("reading the stand-in's address")?;
        }
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .map(str::to_owned)
            .with_context(|| format!("the stand-in said {line:?}, not its address"))?;
        println!(
            "<== registry stand-in at {url} serving {} (Debian bookworm minbase)",
            STANDIN_IMAGES.join(", ")
        );
        Ok(Self { child, url })
    }
}

impl Drop for ImageStandin {
    fn drop(&mut self) {
        cleanup("stopping the registry stand-in", self.child.kill());
        cleanup("waiting for the registry stand-in", self.child.wait());
    }
}

/// `GET /health` answered 204.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 204")
}

/// This host's outward IPv4 address (the source of a route out; nothing is sent).
fn outward_ipv4() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.254:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0_u8; bytes];
    fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

// ------------------------------------------------------------------ expectations

/// `tests/e2b-suite/expectations.toml`: the tests Courier does not pass today, by feature,
/// and the tests not run at all; each group with its reason.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expectations {
    #[serde(default)]
    expected: Vec<Group>,
    #[serde(default)]
    skip: Vec<Group>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    /// What Courier lacks (`expected` only): "snapshots", "network rules", ...
    #[serde(default)]
    feature: Option<String>,
    reason: String,
    /// pytest node ids: `tests/<path>.py::<test>` (with `[params]` where parametrized).
    tests: Vec<String>,
}

impl Expectations {
    fn parse(text: &str) -> Result<Self> {
        let expectations: Self = toml::from_str(text)?;
        let mut seen = BTreeSet::new();
        for (kind, groups) in [
            ("expected", &expectations.expected),
            ("skip", &expectations.skip),
        ] {
            for group in groups {
                if group.reason.trim().is_empty() {
                    bail!("a [[{kind}]] group has an empty reason");
                }
                if kind == "expected" && group.feature.as_deref().is_none_or(str::is_empty) {
                    bail!("the [[expected]] group {:?} names no feature", group.reason);
                }
                for id in &group.tests {
                    if !id.starts_with("tests/") || !id.contains(".py::") {
                        bail!("{id:?} is not a pytest node id (tests/<file>.py::<test>)");
                    }
                    if !seen.insert(id.as_str()) {
                        bail!("{id:?} is listed twice");
                    }
                }
            }
        }
        Ok(expectations)
    }

    fn expected(&self) -> impl Iterator<Item = &str> {
        self.expected
            .iter()
            .flat_map(|g| g.tests.iter().map(String::as_str))
    }

    fn skipped(&self) -> impl Iterator<Item = &str> {
        self.skip
            .iter()
            .flat_map(|g| g.tests.iter().map(String::as_str))
    }
}

// ------------------------------------------------------------------ junit

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Passed,
    Skipped,
    Failed,
}

#[derive(Debug, PartialEq, Eq)]
struct Case {
    /// The pytest node id, `tests/<path>.py[::Class]::<name>`.
    id: String,
    file: String,
    outcome: Outcome,
}

/// The test cases of a pytest junit report (`junit_family=xunit1`); a case reported twice
/// (a teardown error after a pass) keeps its worst outcome.
fn parse_junit(xml: &str) -> Result<Vec<Case>> {
    let mut cases: BTreeMap<String, Case> = BTreeMap::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<testcase") {
        rest = &rest[start + "<testcase".len()..];
        let end = rest.find('>').context("unterminated <testcase")?;
        let (attrs, self_closing) = match rest[..end].strip_suffix('/') {
            Some(attrs) => (attrs, true),
            None => (&rest[..end], false),
        };
        let attrs = attributes(attrs)?;
        rest = &rest[end + 1..];
        let body = if self_closing {
            ""
        } else {
            let close = rest
                .find("</testcase>")
                .context("unterminated <testcase>")?;
            let body = &rest[..close];
            rest = &rest[close + "</testcase>".len()..];
            body
        };
        let outcome = if body.contains("<failure") || body.contains("<error") {
            Outcome::Failed
        } else if body.contains("<skipped") {
            Outcome::Skipped
        } else {
            Outcome::Passed
        };
        let name = attrs.get("name").context("<testcase> without a name")?;
        let classname = attrs.get("classname").map_or("", String::as_str);
        let file = match attrs.get("file") {
            Some(file) => file.clone(),
            None => format!("{}.py", classname.replace('.', "/")),
        };
        let module = file.trim_end_matches(".py").replace('/', ".");
        let id = match classname
            .strip_prefix(&module)
            .and_then(|c| c.strip_prefix('.'))
        {
            Some(class) => format!("{file}::{}::{name}", class.replace('.', "::")),
            None => format!("{file}::{name}"),
        };
        let case = Case {
            id: id.clone(),
            file,
            outcome,
        };
        match cases.get_mut(&id) {
            Some(old) => old.outcome = old.outcome.max(outcome),
            None => {
                cases.insert(id, case);
            }
        }
    }
    Ok(cases.into_values().collect())
}

/// The attributes of a tag, unescaped.
fn attributes(text: &str) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let eq = rest.find('=').context("attribute without a value")?;
        let key = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next().context("attribute without a value")?;
        if quote != '"' && quote != '\'' {
            bail!("unquoted attribute {key}");
        }
        let close = after[1..].find(quote).context("unterminated attribute")?;
        map.insert(key, unescape(&after[1..=close]));
        rest = after[close + 2..].trim_start();
    }
    Ok(map)
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

// ------------------------------------------------------------------ report

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    passed: usize,
    failed: usize,
    skipped: usize,
    expected_failing: usize,
}

impl Counts {
    fn add(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.expected_failing += other.expected_failing;
    }
}

#[derive(Debug)]
struct Report {
    files: BTreeMap<String, Counts>,
    /// Failed and not listed under `[[expected]]`.
    regressions: Vec<String>,
    /// Listed under `[[expected]]` and passed.
    now_passing: Vec<String>,
    /// Listed (either list) and absent from a whole-suite run.
    not_run: Vec<String>,
}

impl Report {
    /// `full`: the whole suite ran, so a listed test missing from it is worth a word.
    fn new(cases: &[Case], expectations: &Expectations, full: bool) -> Self {
        let expected: BTreeSet<&str> = expectations.expected().collect();
        let mut report = Self {
            files: BTreeMap::new(),
            regressions: Vec::new(),
            now_passing: Vec::new(),
            not_run: Vec::new(),
        };
        let mut ran = BTreeSet::new();
        for case in cases {
            ran.insert(case.id.as_str());
            let counts = report.files.entry(case.file.clone()).or_default();
            let listed = expected.contains(case.id.as_str());
            match case.outcome {
                Outcome::Passed => {
                    counts.passed += 1;
                    if listed {
                        report.now_passing.push(case.id.clone());
                    }
                }
                Outcome::Skipped => counts.skipped += 1,
                Outcome::Failed if listed => counts.expected_failing += 1,
                Outcome::Failed => {
                    counts.failed += 1;
                    report.regressions.push(case.id.clone());
                }
            }
        }
        // Deselected tests count as skipped in their file.
        for id in expectations.skipped() {
            if let Some((file, _)) = id.split_once("::")
                && (full || report.files.contains_key(file))
            {
                report.files.entry(file.to_owned()).or_default().skipped += 1;
            }
        }
        if full {
            report.not_run = expected
                .into_iter()
                .filter(|id| !ran.contains(id))
                .map(str::to_owned)
                .collect();
        }
        report
    }

    fn total(&self) -> Counts {
        let mut total = Counts::default();
        for counts in self.files.values() {
            total.add(*counts);
        }
        total
    }

    fn table(&self) -> String {
        let width = self
            .files
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max("test file".len());
        let mut out = format!(
            "\n{:<width$}  {:>6}  {:>6}  {:>7}  {:>8}\n",
            "test file", "passed", "failed", "skipped", "expected"
        );
        let row = |name: &str, c: &Counts| {
            format!(
                "{name:<width$}  {:>6}  {:>6}  {:>7}  {:>8}\n",
                c.passed, c.failed, c.skipped, c.expected_failing
            )
        };
        for (file, counts) in &self.files {
            out.push_str(&row(file, counts));
        }
        out.push_str(&row("total", &self.total()));
        out.push_str(
            "(skipped: skipped by the suite or deselected by the list; expected: failing and \
             listed in tests/e2b-suite/expectations.toml)\n",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JUNIT: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="6">
<testcase classname="tests.sync.sandbox_sync.test_snapshot" name="test_create_snapshot" file="tests/sync/sandbox_sync/test_snapshot.py" line="3" time="1.2"><failure message="NotFoundException: Sandbox &quot;x&quot; not found">trace &lt;here&gt;</failure></testcase>
<testcase classname="tests.sync.sandbox_sync.test_snapshot" name="test_list[a&amp;b]" file="tests/sync/sandbox_sync/test_snapshot.py" line="9" time="0.1" />
<testcase classname="tests.test_client.TestClient" name="test_headers" file="tests/test_client.py" line="12" time="0.0"></testcase>
<testcase classname="tests.test_client" name="test_skip" file="tests/test_client.py" line="20" time="0.0"><skipped type="pytest.skip" message="needs E2B_DEBUG">reason</skipped></testcase>
<testcase classname="tests.test_client" name="test_teardown" file="tests/test_client.py" line="30" time="0.0" />
<testcase classname="tests.test_client" name="test_teardown" file="tests/test_client.py" line="30" time="0.0"><error message="teardown failed" /></testcase>
<testcase classname="tests.async.api_async.test_sbx_list" name="test_list_paginated" file="tests/async/api_async/test_sbx_list.py" line="1" time="0.3"><error message="fixture" /></testcase>
</testsuite></testsuites>"#;

    const EXPECTATIONS_TOML: &str = r#"
[[expected]]
feature = "snapshots"
reason = "snapshots are not served yet"
tests = [
  "tests/sync/sandbox_sync/test_snapshot.py::test_create_snapshot",
  "tests/sync/sandbox_sync/test_snapshot.py::test_list[a&b]",
  "tests/sync/sandbox_sync/test_snapshot.py::test_gone",
]

[[skip]]
reason = "needs the public internet"
tests = ["tests/sync/sandbox_sync/test_internet.py::test_internet_access"]
"#;

    #[test]
    fn junit_cases_get_node_ids_and_outcomes() {
        let cases = parse_junit(JUNIT).unwrap();
        let got: Vec<(&str, Outcome)> = cases.iter().map(|c| (c.id.as_str(), c.outcome)).collect();
        assert_eq!(
            got,
            vec![
                (
                    "tests/async/api_async/test_sbx_list.py::test_list_paginated",
                    Outcome::Failed
                ),
                (
                    "tests/sync/sandbox_sync/test_snapshot.py::test_create_snapshot",
                    Outcome::Failed
                ),
                (
                    "tests/sync/sandbox_sync/test_snapshot.py::test_list[a&b]",
                    Outcome::Passed
                ),
                (
                    "tests/test_client.py::TestClient::test_headers",
                    Outcome::Passed
                ),
                ("tests/test_client.py::test_skip", Outcome::Skipped),
                ("tests/test_client.py::test_teardown", Outcome::Failed),
            ]
        );
    }

    #[test]
    fn expectations_parse_and_reject_mistakes() {
        let e = Expectations::parse(EXPECTATIONS_TOML).unwrap();
        assert_eq!(e.expected().count(), 3);
        assert_eq!(
            e.skipped().collect::<Vec<_>>(),
            ["tests/sync/sandbox_sync/test_internet.py::test_internet_access"]
        );
        let twice = r#"
[[expected]]
feature = "f"
reason = "r"
tests = ["tests/a.py::t"]
[[skip]]
reason = "r"
tests = ["tests/a.py::t"]
"#;
        assert!(Expectations::parse(twice).is_err());
        let no_feature = "[[expected]]\nreason = \"r\"\ntests = [\"tests/a.py::t\"]\n";
        assert!(Expectations::parse(no_feature).is_err());
        let not_an_id = "[[skip]]\nreason = \"r\"\ntests = [\"test_a\"]\n";
        assert!(Expectations::parse(not_an_id).is_err());
        let unknown_key = "[[skip]]\nreason = \"r\"\ntests = []\nwhy = \"x\"\n";
        assert!(Expectations::parse(unknown_key).is_err());
    }

    #[test]
    fn report_counts_per_file_and_judges_against_the_list() {
        let cases = parse_junit(JUNIT).unwrap();
        let e = Expectations::parse(EXPECTATIONS_TOML).unwrap();
        let report = Report::new(&cases, &e, true);
        assert_eq!(
            report.files["tests/sync/sandbox_sync/test_snapshot.py"],
            Counts {
                passed: 1,
                failed: 0,
                skipped: 0,
                expected_failing: 1
            }
        );
        assert_eq!(
            report.files["tests/sync/sandbox_sync/test_internet.py"].skipped,
            1
        );
        assert_eq!(
            report.total(),
            Counts {
                passed: 2,
                failed: 2,
                skipped: 2,
                expected_failing: 1
            }
        );
        assert_eq!(
            report.regressions,
            [
                "tests/async/api_async/test_sbx_list.py::test_list_paginated",
                "tests/test_client.py::test_teardown"
            ]
        );
        assert_eq!(
            report.now_passing,
            ["tests/sync/sandbox_sync/test_snapshot.py::test_list[a&b]"]
        );
        assert_eq!(
            report.not_run,
            ["tests/sync/sandbox_sync/test_snapshot.py::test_gone"]
        );
        let table = report.table();
        assert!(table.contains("total"), "{table}");
        // A partial run does not report listed tests it did not select.
        let partial = Report::new(&cases, &e, false);
        assert!(partial.not_run.is_empty());
        assert!(
            !partial
                .files
                .contains_key("tests/sync/sandbox_sync/test_internet.py")
        );
    }

    #[test]
    fn unescape_handles_entities() {
        assert_eq!(
            unescape("a&amp;b &lt;c&gt; &#65;&#x42; &bogus; &"),
            "a&b <c> AB &bogus; &"
        );
    }
}
