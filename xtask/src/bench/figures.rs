//! The figures issue [17] ("Latency at the limit") tracks, collected from the benches'
//! output and printed in one table beside the figures measured before that work and the
//! goals.
//!
//! A bench reports a figure with a line `figure <key> = <number>`; every other line is
//! passed through. The "before" column is what the issue measured on this machine class
//! (2 cores) before any of its work; a figure no bench printed this run shows "not run".

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

/// Which way a figure gets better.
#[derive(Clone, Copy)]
enum Better {
    Lower,
    Higher,
}

/// One tracked figure: its key, what it is, its unit, the "before" and the goal.
struct Tracked {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    before: Option<f64>,
    goal: Option<(Better, f64)>,
}

const TRACKED: &[Tracked] = &[
    Tracked {
        key: "sandboxd.create_p50_ms",
        label: "create -> envd ready, no internet, p50",
        unit: "ms",
        before: Some(9.3),
        goal: None,
    },
    Tracked {
        key: "sandboxd.create_internet_p50_ms",
        label: "create with internet, p50",
        unit: "ms",
        before: Some(22.0),
        goal: Some((Better::Lower, 12.0)),
    },
    Tracked {
        key: "sandboxd.run_true_p50_ms",
        label: "run(\"true\") through the proxy (Rust), p50",
        unit: "ms",
        before: Some(4.0),
        goal: Some((Better::Lower, 1.0)),
    },
    Tracked {
        key: "sandboxd.run_true_python_p50_ms",
        label: "run(\"true\") through the proxy (Python), p50",
        unit: "ms",
        before: Some(4.4),
        goal: Some((Better::Lower, 1.0)),
    },
    Tracked {
        key: "sandboxd.kill_p50_ms",
        label: "kill through the SDK, no internet, p50",
        unit: "ms",
        before: Some(78.0),
        goal: Some((Better::Lower, 20.0)),
    },
    Tracked {
        key: "sandboxd.kill_internet_p50_ms",
        label: "kill through the SDK, internet, p50",
        unit: "ms",
        before: Some(172.0),
        goal: Some((Better::Lower, 20.0)),
    },
    Tracked {
        key: "orchestrator.sqlite.events_per_s",
        label: "orchestrator events/s, SQLite",
        unit: "/s",
        before: Some(5527.0),
        goal: Some((Better::Higher, 20_000.0)),
    },
    Tracked {
        key: "orchestrator.sqlite.p99_ms",
        label: "agent stdout -> subscriber p99, SQLite",
        unit: "ms",
        before: Some(71.6),
        goal: Some((Better::Lower, 20.0)),
    },
    Tracked {
        key: "orchestrator.postgres.events_per_s",
        label: "orchestrator events/s, PostgreSQL",
        unit: "/s",
        before: None,
        goal: Some((Better::Higher, 20_000.0)),
    },
    Tracked {
        key: "orchestrator.postgres.p99_ms",
        label: "agent stdout -> subscriber p99, PostgreSQL",
        unit: "ms",
        before: None,
        goal: Some((Better::Lower, 20.0)),
    },
    Tracked {
        key: "orchestrator.fanout.p99_ms",
        // The 5.2 s was over HTTP (`cargo xtask loadtest`); this bench stops at the
        // event hub, and measured 25.9 ms the same way before the change.
        label: "100 subscribers, one busy sandbox, hub p99",
        unit: "ms",
        before: Some(25.9),
        goal: Some((Better::Lower, 100.0)),
    },
    Tracked {
        key: "density.sandboxes",
        label: "idle sandboxes created on one host",
        unit: "",
        before: None,
        goal: Some((Better::Higher, 1000.0)),
    },
];

/// The figures the benches of one `cargo xtask bench` printed.
#[derive(Default)]
pub struct Figures(BTreeMap<String, f64>);

impl Figures {
    /// Runs `cmd` like `crate::run`, its output passed through, and keeps the figures it
    /// prints.
    pub fn run(&mut self, step: &str, cmd: &mut Command) -> Result<()> {
        println!("\n==> {step}: {cmd:?}");
        let started = Instant::now();
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("{step}: could not start {:?}", cmd.get_program()))?;
        let stdout = child.stdout.take().context("piped stdout")?;
        for line in BufReader::new(stdout).lines() {
            let line = line.with_context(|| format!("{step}: reading its output"))?;
            println!("{line}");
            if let Some((key, value)) = parse(&line) {
                self.0.insert(key.to_owned(), value);
            }
        }
        let status = child.wait()?;
        println!(
            "<== {step}: {status} in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        if !status.success() {
            bail!("{step} failed ({status})");
        }
        Ok(())
    }

    /// The tracked figures beside their "before" and goal, then any other figure printed.
    pub fn print(&self) {
        if self.0.is_empty() {
            return;
        }
        println!("\n==> figures of issue [17]: before (as the issue measured) and now");
        println!(
            "{:<52}{:>14}{:>14}{:>12}  goal",
            "figure", "before", "now", ""
        );
        for t in TRACKED {
            let now = self.0.get(t.key).copied();
            let verdict = match (now, t.goal) {
                (Some(v), Some((Better::Lower, g))) if v <= g => "met",
                (Some(v), Some((Better::Higher, g))) if v >= g => "met",
                (Some(_), Some(_)) => "not met",
                (None, _) => "not run",
                (Some(_), None) => "",
            };
            let goal = match t.goal {
                Some((Better::Lower, g)) => format!("<= {} {}", number(g), t.unit),
                Some((Better::Higher, g)) => format!(">= {} {}", number(g), t.unit),
                None => "-".to_owned(),
            };
            let cell =
                |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{} {}", number(v), t.unit));
            println!(
                "{:<52}{:>14}{:>14}{:>12}  {goal}",
                t.label,
                cell(t.before),
                now.map_or("not run".to_owned(), |v| format!(
                    "{} {}",
                    number(v),
                    t.unit
                )),
                verdict
            );
        }
        let others: Vec<_> = self
            .0
            .iter()
            .filter(|(k, _)| !TRACKED.iter().any(|t| t.key == k.as_str()))
            .collect();
        for (key, value) in others {
            println!("{key:<52}{:>14}{:>14}", "-", number(*value));
        }
    }
}

/// `figure <key> = <number>` → `(key, number)`.
fn parse(line: &str) -> Option<(&str, f64)> {
    let (key, value) = line.trim().strip_prefix("figure ")?.split_once(" = ")?;
    let key = key.trim();
    (!key.is_empty() && !key.contains(char::is_whitespace))
        .then_some(())
        .and(value.trim().parse().ok())
        .map(|v| (key, v))
}

fn number(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figure_lines_are_read_and_others_are_not() {
        assert_eq!(
            parse("figure sandboxd.kill_p50_ms = 6.5"),
            Some(("sandboxd.kill_p50_ms", 6.5))
        );
        assert_eq!(parse("  figure a.b = 20000 "), Some(("a.b", 20000.0)));
        assert_eq!(parse("figure a b = 1"), None);
        assert_eq!(parse("figure a.b = fast"), None);
        assert_eq!(parse("create p50 = 9 ms"), None);
        assert_eq!(parse("figure  = 1"), None);
    }

    #[test]
    fn tracked_keys_are_unique() {
        let mut keys: Vec<_> = TRACKED.iter().map(|t| t.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), TRACKED.len());
    }
}
