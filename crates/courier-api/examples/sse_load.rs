//! Load test of live events: many SSE clients on one busy sandbox.
//!
//! ```text
//! COURIER_TOKEN=… cargo run --release -p courier-api --example sse_load -- \
//!     http://127.0.0.1:8080 <sandbox-id> [clients=100] [lines=20000]
//! ```
//!
//! Opens `clients` event streams on the sandbox (a running `shell`-tool sandbox), then
//! sends it a follow-up that prints `lines` lines `L <n> <microseconds since the epoch>`
//! with short sleeps. Every client checks that it sees every line exactly once and in
//! order; the timestamp in each line gives the delivery latency (sandbox and server share
//! the host's clock). Prints one `key=value` line per figure, for `cargo xtask loadtest`.
//! The token is read from `COURIER_TOKEN` and never printed.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use serde_json::Value;

/// How long the whole run may take before clients give up.
const DEADLINE: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
struct ClientReport {
    /// SSE events received (all kinds).
    events: u64,
    /// Distinct lines seen.
    lines: u64,
    /// Lines that came out of order or twice.
    order_errors: u64,
    /// Delivery latencies in microseconds.
    latencies: Vec<u64>,
    /// When the last line arrived.
    done_at: Option<Instant>,
    error: Option<String>,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `L <n> <stamp>` → `(n, stamp)`.
fn parse_line(line: &str) -> Option<(u64, u64)> {
    let mut words = line.trim_end().strip_prefix("L ")?.split(' ');
    let n = words.next()?.parse().ok()?;
    let stamp = words.next()?.parse().ok()?;
    words.next().is_none().then_some((n, stamp))
}

struct Tracker {
    last: u64,
    want: u64,
    report: ClientReport,
}

impl Tracker {
    fn line(&mut self, line: &str, received_us: u64) {
        let Some((n, stamp)) = parse_line(line) else {
            return;
        };
        if n <= self.last {
            // A snapshot repeating lines already seen (a resync) is fine; a text event
            // repeating one is not — the caller tells them apart.
            return;
        }
        if n != self.last + 1 {
            self.report.order_errors += 1;
        }
        self.last = n;
        self.report.lines += 1;
        self.report
            .latencies
            .push(received_us.saturating_sub(stamp));
        if n == self.want {
            self.report.done_at = Some(Instant::now());
        }
    }

    fn event(&mut self, name: &str, data: &str) {
        self.report.events += 1;
        let received = now_us();
        let Ok(value) = serde_json::from_str::<Value>(data) else {
            return;
        };
        match name {
            "text" => {
                let text = value["text"].as_str().unwrap_or("");
                for line in text.lines() {
                    if let Some((n, _)) = parse_line(line)
                        && n <= self.last
                    {
                        self.report.order_errors += 1;
                        continue;
                    }
                    self.line(line, received);
                }
            }
            "message" => {
                let content = value["message"]["content"].as_str().unwrap_or("");
                for line in content.lines() {
                    self.line(line, received);
                }
            }
            _ => {}
        }
    }
}

async fn client(
    http: reqwest::Client,
    url: String,
    token: String,
    want: u64,
    connected: tokio::sync::mpsc::Sender<()>,
) -> ClientReport {
    let mut tracker = Tracker {
        last: 0,
        want,
        report: ClientReport::default(),
    };
    let response = match http
        .get(&url)
        .bearer_auth(&token)
        .header("accept", "text/event-stream")
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            tracker.report.error = Some(format!("HTTP {}", r.status()));
            let _ = connected.send(()).await;
            return tracker.report;
        }
        Err(e) => {
            tracker.report.error = Some(e.to_string());
            let _ = connected.send(()).await;
            return tracker.report;
        }
    };
    let _ = connected.send(()).await;
    drop(connected);
    let mut body = response.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    while tracker.last < want {
        let chunk = match body.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                tracker.report.error = Some(e.to_string());
                break;
            }
            None => {
                tracker.report.error = Some("stream ended early".into());
                break;
            }
        };
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let frame: Vec<u8> = buf.drain(..end + 2).collect();
            let frame = String::from_utf8_lossy(&frame);
            let mut name = "message";
            let mut data = String::new();
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = v.trim_start();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if !data.is_empty() {
                tracker.event(name, &data);
            }
        }
    }
    tracker.report
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(base), Some(sandbox)) = (args.first(), args.get(1)) else {
        return Err("usage: sse_load URL SANDBOX_ID [CLIENTS] [LINES]".into());
    };
    let clients: usize = args.get(2).map_or(Ok(100), |s| s.parse())?;
    let lines: u64 = args.get(3).map_or(Ok(20_000), |s| s.parse())?;
    let token = std::env::var("COURIER_TOKEN").map_err(|_| "COURIER_TOKEN is not set")?;
    let base = base.trim_end_matches('/');
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients + 4)
        .build()?;

    // Wait for the sandbox's first task to finish, then start after its last message: no
    // replay of older output.
    let mut items = Vec::new();
    for _ in 0..300 {
        let messages: Value = http
            .get(format!("{base}/v1/sandboxes/{sandbox}/messages?limit=200"))
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        items = messages["items"].as_array().cloned().unwrap_or_default();
        let idle = items.iter().any(|m| m["role"] == "assistant")
            && items.iter().all(|m| m["status"] != "streaming");
        if idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = items
        .iter()
        .filter_map(|m| m["seq"].as_i64())
        .max()
        .unwrap_or(0);

    let url = format!("{base}/v1/sandboxes/{sandbox}/events?after={after}");
    let (tx, mut rx) = tokio::sync::mpsc::channel(clients);
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        tasks.push(tokio::spawn(tokio::time::timeout(
            DEADLINE,
            client(http.clone(), url.clone(), token.clone(), lines, tx.clone()),
        )));
    }
    drop(tx);
    for _ in 0..clients {
        if rx.recv().await.is_none() {
            break;
        }
    }
    // Every stream is open: make the sandbox busy.
    let script = format!(
        "bash -c 'for ((i=1;i<={lines};i++)); do printf \"L %d %s\\n\" \"$i\" \"${{EPOCHREALTIME//[.,]/}}\"; \
         (( i % 100 )) || sleep 0.005; done'"
    );
    let started = Instant::now();
    http.post(format!("{base}/v1/sandboxes/{sandbox}/messages"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "text": script }))
        .send()
        .await?
        .error_for_status()?;

    let mut reports = Vec::with_capacity(clients);
    for task in tasks {
        match task.await {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(_)) => reports.push(ClientReport {
                error: Some(format!("timed out after {DEADLINE:?}")),
                ..ClientReport::default()
            }),
            Err(e) => reports.push(ClientReport {
                error: Some(e.to_string()),
                ..ClientReport::default()
            }),
        }
    }
    let last_done = reports
        .iter()
        .filter_map(|r| r.done_at)
        .max()
        .unwrap_or_else(Instant::now);
    let elapsed = last_done.duration_since(started).as_secs_f64().max(1e-9);
    let events: u64 = reports.iter().map(|r| r.events).sum();
    let delivered: u64 = reports.iter().map(|r| r.lines).sum();
    let complete = reports
        .iter()
        .filter(|r| r.lines == lines && r.order_errors == 0 && r.error.is_none())
        .count();
    let order_errors: u64 = reports.iter().map(|r| r.order_errors).sum();
    let mut latencies: Vec<u64> = reports
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    for (i, r) in reports.iter().enumerate() {
        if let Some(e) = &r.error {
            eprintln!("client {i}: {e} (saw {} of {lines} lines)", r.lines);
        }
    }
    println!("clients={clients}");
    println!("lines_per_client={lines}");
    println!("elapsed_s={elapsed:.2}");
    println!("sse_events_total={events}");
    println!("events_per_s={:.0}", events as f64 / elapsed);
    println!("lines_delivered_total={delivered}");
    println!("lines_per_s={:.0}", delivered as f64 / elapsed);
    println!(
        "latency_p50_ms={:.2}",
        percentile(&latencies, 50.0) as f64 / 1000.0
    );
    println!(
        "latency_p99_ms={:.2}",
        percentile(&latencies, 99.0) as f64 / 1000.0
    );
    println!(
        "latency_max_ms={:.2}",
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    println!("clients_complete_in_order={complete}");
    println!("order_errors={order_errors}");
    if complete != clients {
        return Err(format!(
            "{} of {clients} clients missed or reordered lines",
            clients - complete
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_order() {
        assert_eq!(
            parse_line("L 12 1700000000123456\n"),
            Some((12, 1700000000123456))
        );
        assert_eq!(parse_line("printf \"L %d %s\\n\""), None);
        let mut t = Tracker {
            last: 0,
            want: 3,
            report: ClientReport::default(),
        };
        t.event("text", r#"{"text":"L 1 5\n"}"#);
        t.event("text", r#"{"text":"L 3 5\n"}"#);
        t.event("text", r#"{"text":"L 3 5\n"}"#);
        assert_eq!(t.report.lines, 2);
        assert_eq!(t.report.order_errors, 2);
        assert!(t.report.done_at.is_some());
    }
}
