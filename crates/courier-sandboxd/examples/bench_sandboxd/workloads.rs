//! Host-side inputs of the agent-like workloads (an npm cache, a git bundle), made once.

use super::*;

/// Host-side inputs of the agent-like workloads, made once.
pub(crate) struct Workloads {
    /// A tarball of an npm cache holding the package and its dependencies.
    pub(crate) npm_cache: Result<Vec<u8>, Unavailable>,
    pub(crate) npm_package: String,
    /// A git bundle of a small Python project with a unittest suite.
    pub(crate) git_bundle: Result<Vec<u8>, Unavailable>,
    /// Whether the parallel creates and the agent-like workloads run (`BENCH_WORKLOADS=0`
    /// keeps to the latency figures: creates, kills, `run("true")`).
    pub(crate) enabled: bool,
}

impl Workloads {
    /// No workloads (BENCH_WORKLOADS=0): their figures read "n/a".
    pub(crate) fn skipped() -> Self {
        Workloads {
            npm_cache: Err(Unavailable::NotRun),
            npm_package: String::new(),
            git_bundle: Err(Unavailable::NotRun),
            enabled: false,
        }
    }
}

pub(crate) fn prepare_workloads(dir: &Path) -> Workloads {
    if std::env::var("BENCH_WORKLOADS").is_ok_and(|v| v == "0") {
        let off = || Err(Unavailable::failed("BENCH_WORKLOADS=0", "not run"));
        return Workloads {
            npm_cache: off(),
            npm_package: String::new(),
            git_bundle: off(),
            enabled: false,
        };
    }
    let npm_package =
        std::env::var("BENCH_NPM_PACKAGE").unwrap_or_else(|_| "eslint@9.39.1".to_owned());
    let npm_cache = (|| {
        let cache = dir.join("npmcache");
        let project = dir.join("npmproject");
        std::fs::create_dir_all(&project).map_err(Unavailable::io("create the npm project dir"))?;
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--cache"])
            .arg(&cache)
            .arg("--prefix")
            .arg(&project)
            .arg(&npm_package)
            .output()
            .map_err(Unavailable::io("npm"))?;
        if !out.status.success() {
            return Err(Unavailable::failed(
                format!("npm install {npm_package} (to fill the local cache) failed"),
                String::from_utf8_lossy(&out.stderr).trim(),
            ));
        }
        tar_dir(dir, "npmcache")
    })();
    let git_bundle = (|| {
        let repo = dir.join("repo");
        std::fs::create_dir_all(repo.join("tests"))
            .map_err(Unavailable::io("create the test repo"))?;
        for module in 0..40 {
            let mut text = String::from("import os, tempfile, unittest\n\n");
            text.push_str(&format!("class Test{module}(unittest.TestCase):\n"));
            for case in 0..25 {
                text.push_str(&format!(
                    "    def test_{case}(self):\n        with tempfile.NamedTemporaryFile('w') as f:\n            f.write('x' * {n})\n            f.flush()\n            self.assertEqual(os.stat(f.name).st_size, {n})\n        self.assertEqual(sum(range({n})), {sum})\n",
                    n = case * 10 + 1,
                    sum = (0..(case * 10 + 1)).sum::<u64>()
                ));
            }
            std::fs::write(repo.join(format!("tests/test_m{module}.py")), text)
                .map_err(Unavailable::io("write a test module"))?;
        }
        std::fs::write(repo.join("tests/__init__.py"), "")
            .map_err(Unavailable::io("write tests/__init__.py"))?;
        let git = |args: &[&str]| -> Result<(), Unavailable> {
            let out = Command::new("git")
                .args([
                    "-c",
                    "user.name=bench",
                    "-c",
                    "user.email=bench@example.invalid",
                ])
                .args(args)
                .current_dir(&repo)
                .output()
                .map_err(Unavailable::io("git"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(Unavailable::failed(
                    format!("git {args:?}"),
                    String::from_utf8_lossy(&out.stderr).trim(),
                ))
            }
        };
        git(&["init", "-q", "-b", "main"])?;
        git(&["add", "."])?;
        git(&["commit", "-q", "-m", "tests"])?;
        git(&["bundle", "create", "-q", "../repo.bundle", "--all"])?;
        std::fs::read(dir.join("repo.bundle")).map_err(Unavailable::io("read the git bundle"))
    })();
    Workloads {
        npm_cache,
        npm_package,
        git_bundle,
        enabled: true,
    }
}

/// `tar czf` of `dir/name`, in memory.
pub(crate) fn tar_dir(dir: &Path, name: &str) -> Result<Vec<u8>, Unavailable> {
    let out = Command::new("tar")
        .args(["czf", "-", "-C"])
        .arg(dir)
        .arg(name)
        .output()
        .map_err(Unavailable::io("tar"))?;
    if !out.status.success() {
        return Err(Unavailable::failed(
            "tar",
            String::from_utf8_lossy(&out.stderr),
        ));
    }
    Ok(out.stdout)
}
