//! The figures and the side-by-side table they are printed in.

use super::*;

pub(crate) fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    if samples.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    (at(0.50), at(0.99))
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// What one isolation measured.
pub(crate) struct Figures {
    pub(crate) isolation: String,
    pub(crate) create: Option<(Duration, Duration)>,
    pub(crate) create_warm: Option<(Duration, Duration)>,
    pub(crate) create_net: Option<(Duration, Duration)>,
    /// Creates without internet taken alternately with `create_net`'s.
    pub(crate) create_net_plain: Option<(Duration, Duration)>,
    pub(crate) idle_mib: Option<f64>,
    pub(crate) parallel: Option<(usize, usize, Duration, Duration)>,
    pub(crate) kill: Option<(Duration, Duration)>,
    pub(crate) kill_net: Option<(Duration, Duration)>,
    pub(crate) run_true: Option<(Duration, Duration)>,
    pub(crate) run_true_json: Option<(Duration, Duration)>,
    pub(crate) run_true_python: Option<(Duration, Duration)>,
    /// p50 inside the sandbox of `bash -l -c true`, `bash -c true`, `/bin/true`.
    pub(crate) shell_floor: Option<[Duration; 3]>,
    pub(crate) stat_20k: Option<Duration>,
    pub(crate) writes_300: Option<Duration>,
    pub(crate) npm: Result<Duration, Unavailable>,
    pub(crate) git_tests: Result<Duration, Unavailable>,
}

pub(crate) fn print_table(all: &[Figures], sizes: &Sizes, npm_package: &str) {
    println!();
    let mut header = format!("{:<44}", "");
    for f in all {
        header.push_str(&format!("{:>24}", f.isolation));
    }
    println!("{header}");
    let row = |label: &str, cell: &dyn Fn(&Figures) -> String| {
        let mut line = format!("{label:<44}");
        for f in all {
            line.push_str(&format!("{:>24}", cell(f)));
        }
        println!("{line}");
    };
    let pair = |v: Option<(Duration, Duration)>| {
        v.map_or("n/a".to_owned(), |(a, b)| format!("{} / {}", ms(a), ms(b)))
    };
    let secs = |v: &Result<Duration, Unavailable>| match v {
        Ok(d) => format!("{:.2} s", d.as_secs_f64()),
        Err(_) => "n/a".to_owned(),
    };
    // Short workloads: milliseconds with a decimal, or the container's figure reads 0.00 s.
    let short = |v: Option<Duration>| {
        v.map_or("n/a".to_owned(), |d| {
            format!("{:.1} ms", d.as_secs_f64() * 1000.0)
        })
    };
    row(
        &format!("create -> envd ready p50 / p99 (n={})", sizes.creates),
        &|f| pair(f.create),
    );
    row("  from the warm pool, one a second p50 / p99", &|f| {
        pair(f.create_warm)
    });
    row("  with internet access p50 / p99", &|f| pair(f.create_net));
    row("  without, alternating with those p50 / p99", &|f| {
        pair(f.create_net_plain)
    });
    row(
        &format!("kill (the SDK's call) p50 / p99 (n={})", sizes.creates),
        &|f| pair(f.kill),
    );
    row("  with internet access p50 / p99", &|f| pair(f.kill_net));
    row("memory per idle sandbox (cgroup, mean)", &|f| {
        f.idle_mib.map_or("n/a".into(), |m| format!("{m:.1} MiB"))
    });
    row(
        &format!("{} creates in parallel: wall (ok)", sizes.parallel),
        &|f| {
            f.parallel.map_or("n/a".into(), |(_, ok, wall, _)| {
                format!("{} ({ok})", ms(wall))
            })
        },
    );
    row(
        &format!("run(\"true\") p50 / p99 (n={})", sizes.runs),
        &|f| pair(f.run_true),
    );
    row("  JSON codec p50 / p99", &|f| pair(f.run_true_json));
    row("  official Python SDK p50 / p99", &|f| {
        pair(f.run_true_python)
    });
    row("  inside: bash -l -c true / bash -c true p50", &|f| {
        f.shell_floor
            .map_or("n/a".into(), |[l, c, _]| format!("{} / {}", ms(l), ms(c)))
    });
    row("  inside: /bin/true p50 (fork+exec+wait)", &|f| {
        f.shell_floor.map_or("n/a".into(), |[_, _, t]| ms(t))
    });
    row("20 000 stat() calls (python3)", &|f| short(f.stat_20k));
    row("300 small file writes (python3)", &|f| short(f.writes_300));
    row(
        &format!("npm install {npm_package} (offline cache)"),
        &|f| secs(&f.npm),
    );
    row("git clone + 1000 unit tests", &|f| secs(&f.git_tests));
    for f in all {
        if let Err(why) = &f.npm {
            println!("({} npm workload: {why})", f.isolation);
        }
        if let Err(why) = &f.git_tests {
            println!("({} git workload: {why})", f.isolation);
        }
    }
}

/// The `figure KEY = N` lines `cargo xtask bench` collects into its table of issue [17]'s
/// figures: p50s in milliseconds, from container isolation (where the issue measured
/// them), and the gVisor ones under their own keys.
pub(crate) fn print_figure_lines(all: &[Figures]) {
    for f in all {
        let prefix = match f.isolation.as_str() {
            "container" => "sandboxd".to_owned(),
            other => format!("sandboxd.{other}"),
        };
        let p50 = |v: Option<(Duration, Duration)>| v.map(|(p50, _)| p50.as_secs_f64() * 1e3);
        for (key, value) in [
            ("create_p50_ms", p50(f.create)),
            ("create_internet_p50_ms", p50(f.create_net)),
            ("run_true_p50_ms", p50(f.run_true)),
            ("run_true_python_p50_ms", p50(f.run_true_python)),
            ("kill_p50_ms", p50(f.kill)),
            ("kill_internet_p50_ms", p50(f.kill_net)),
        ] {
            if let Some(value) = value {
                println!("figure {prefix}.{key} = {value:.3}");
            }
        }
    }
}
