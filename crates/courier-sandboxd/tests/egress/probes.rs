//! What the tests do from inside: the API seen from the lab's namespace, and curl, shell and UDP probes run in sandboxes.

use super::*;

/// The API, as seen from inside the lab's namespace.
pub(crate) struct Api {
    pub(crate) client: Client,
    pub(crate) http: reqwest::Client,
}

impl Api {
    pub(crate) fn new() -> Self {
        let client = Client::new(
            ConnectionConfig::builder()
                .api_key(KEY)
                .api_url(format!("http://{API}"))
                .sandbox_url(format!("http://{PROXY}"))
                .request_timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
        )
        .unwrap();
        Self {
            client,
            http: reqwest::Client::new(),
        }
    }

    pub(crate) async fn create(
        &self,
        internet: Option<bool>,
        network: Option<serde_json::Value>,
    ) -> Sandbox {
        let mut builder = Sandbox::builder().timeout(Duration::from_secs(600));
        if let Some(internet) = internet {
            builder = builder.allow_internet_access(internet);
        }
        if let Some(network) = network {
            let network: NetworkConfig = serde_json::from_value(network).unwrap();
            builder = builder.network(network);
        }
        builder.create(&self.client).await.expect("create sandbox")
    }

    /// `PUT /sandboxes/{id}/network`: status and body.
    pub(crate) async fn put_network(&self, id: &str, body: serde_json::Value) -> (u16, String) {
        let response = self
            .http
            .put(format!("http://{API}/sandboxes/{id}/network"))
            .header("X-API-Key", KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub(crate) async fn detail(&self, id: &str) -> serde_json::Value {
        self.http
            .get(format!("http://{API}/sandboxes/{id}"))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The server answers its health check and lists sandboxes.
    pub(crate) async fn assert_serving(&self) {
        let health = self
            .http
            .get(format!("http://{API}/health"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status().as_u16(), 204);
        let list = self
            .http
            .get(format!("http://{API}/v2/sandboxes"))
            .header("X-API-Key", KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(list.status().as_u16(), 200);
    }
}

/// What one `curl` saw.
#[derive(Debug)]
pub(crate) struct Fetch {
    /// curl's exit status (0 = a response).
    pub(crate) rc: i32,
    /// curl's `time_total`, seconds.
    pub(crate) secs: f64,
    pub(crate) body: String,
}

/// A shell line running `curl` (args appended) that always exits 0 and prints
/// `<time_total> <curl's status>` then the body.
pub(crate) fn curl_script(args: &str) -> String {
    format!(
        "rm -f /tmp/egress-body; curl -sS -k --max-time 10 -o /tmp/egress-body \
         -w '%{{time_total}}' {args} 2>/dev/null; echo \" $?\"; \
         cat /tmp/egress-body 2>/dev/null; true"
    )
}

impl Fetch {
    pub(crate) fn parse(out: &str) -> Self {
        let (first, body) = out.split_once('\n').unwrap_or((out, ""));
        let mut words = first.split_whitespace();
        let secs = words
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or(f64::MAX);
        let rc = words.next().and_then(|w| w.parse().ok()).unwrap_or(-1);
        Fetch {
            rc,
            secs,
            body: body.to_owned(),
        }
    }

    pub(crate) fn assert_reached(&self, what: &str, body: &str) {
        assert!(
            self.rc == 0 && self.body == body,
            "{what}: expected {body:?}, got {self:?}"
        );
    }

    pub(crate) fn assert_refused_fast(&self, what: &str) {
        assert!(
            self.rc != 0 && self.secs < FAST,
            "{what}: expected a quick failure, got {self:?}"
        );
    }
}

/// Runs `curl args` inside the sandbox (as root, through envd).
pub(crate) async fn fetch(sbx: &Sandbox, args: &str) -> Fetch {
    Fetch::parse(&sh(sbx, &curl_script(args)).await)
}

pub(crate) async fn sh(sbx: &Sandbox, cmd: &str) -> String {
    sbx.commands()
        .run(cmd)
        .user("root")
        .timeout(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
        .stdout
}

/// Sends one UDP datagram to each of `hosts` on port 9999 from inside the sandbox; the
/// line of each says `echo` or why not.
pub(crate) async fn udp_echo(sbx: &Sandbox, hosts: &[&str]) -> Vec<String> {
    let script = "import socket, sys\n\
        for host in sys.argv[1:]:\n\
        \x20   s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
        \x20   s.settimeout(2)\n\
        \x20   try:\n\
        \x20       s.sendto(b'ping', (host, 9999))\n\
        \x20       print(host, s.recvfrom(64)[0].decode() == 'ping' and 'echo')\n\
        \x20   except OSError as e:\n\
        \x20       print(host, type(e).__name__)\n";
    let out = sh(sbx, &format!("python3 -c \"{script}\" {}", hosts.join(" "))).await;
    out.lines().map(str::to_owned).collect()
}
