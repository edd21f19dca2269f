//! ProviderSet over in-memory fake providers: placement, routing, templates. The real
//! courier-sandboxd hosts are in `tests/providers.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use courier_e2b::models::{ListedSandbox, NewSandbox, SandboxRecord};
use courier_e2b::{
    BuildReason, BuildRequested, BuildState, BuildStatus, CommandOutput, CommandSpec, Error,
    Recipe, SandboxApi, SpawnedCommand, TemplateInfo,
};

use super::templates::{Part, decode, encode, intersect};
use super::*;

/// A provider holding sandboxes in memory; every call it gets is recorded.
#[derive(Default)]
struct Fake {
    live: Mutex<Vec<String>>,
    calls: Mutex<Vec<String>>,
    next: AtomicUsize,
    lists: AtomicUsize,
    /// Creates wait this long (so concurrent creates overlap).
    create_delay: Duration,
    /// `create` fails with a transport error.
    unreachable: bool,
    /// `list` fails.
    cannot_list: bool,
    templates: Vec<TemplateInfo>,
    build_state: Option<BuildState>,
}

impl Fake {
    fn with_live(n: usize) -> Fake {
        let fake = Fake::default();
        *fake.live.lock().unwrap() = (0..n).map(|i| format!("old{i}")).collect();
        fake
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

async fn transport_error() -> Error {
    // A real reqwest error: nothing listens on port 1.
    let e = reqwest::Client::new()
        .get("http://127.0.0.1:1/")
        .send()
        .await
        .unwrap_err();
    Error::Transport(e)
}

fn record(id: &str) -> SandboxRecord {
    SandboxRecord {
        sandbox_id: id.to_owned(),
        ..crate::testing::sandbox_record()
    }
}

fn listed(id: &str) -> ListedSandbox {
    serde_json::from_value(serde_json::json!({
        "templateID": "base", "sandboxID": id, "clientID": "c",
        "startedAt": "2026-01-01T00:00:00Z", "endAt": "2026-01-01T01:00:00Z",
        "envdVersion": "0.6.13", "cpuCount": 1, "memoryMB": 512, "diskSizeMB": 1024,
        "state": "running"
    }))
    .unwrap()
}

fn template(id: &str, aliases: &[&str], state: BuildState) -> TemplateInfo {
    TemplateInfo {
        template_id: id.into(),
        build_id: format!("{id}-build"),
        aliases: aliases.iter().map(|a| (*a).to_owned()).collect(),
        names: aliases.iter().map(|a| (*a).to_owned()).collect(),
        cpu_count: 1,
        memory_mb: 512,
        build_status: state,
        public: false,
    }
}

#[async_trait]
impl SandboxApi for Fake {
    async fn create(&self, request: NewSandbox) -> courier_e2b::Result<SandboxRecord> {
        self.record(format!("create {}", request.template_id));
        if self.unreachable {
            return Err(transport_error().await);
        }
        tokio::time::sleep(self.create_delay).await;
        let id = format!("s{}", self.next.fetch_add(1, Ordering::SeqCst));
        self.live.lock().unwrap().push(id.clone());
        Ok(record(&id))
    }
    async fn connect(&self, id: &str, _: Option<Duration>) -> courier_e2b::Result<SandboxRecord> {
        self.record(format!("connect {id}"));
        if self.live.lock().unwrap().iter().any(|s| s == id) {
            Ok(record(id))
        } else {
            Err(Error::NotFound {
                kind: NotFoundKind::Sandbox,
                message: id.into(),
            })
        }
    }
    async fn kill(&self, id: &str) -> courier_e2b::Result<bool> {
        self.record(format!("kill {id}"));
        let mut live = self.live.lock().unwrap();
        let before = live.len();
        live.retain(|s| s != id);
        Ok(live.len() < before)
    }
    async fn set_timeout(&self, id: &str, _: Duration) -> courier_e2b::Result<()> {
        self.record(format!("set_timeout {id}"));
        Ok(())
    }
    async fn pause(&self, id: &str) -> courier_e2b::Result<bool> {
        self.record(format!("pause {id}"));
        Ok(true)
    }
    async fn run(&self, s: &SandboxRecord, c: CommandSpec) -> courier_e2b::Result<CommandOutput> {
        self.record(format!("run {} {}", s.sandbox_id, c.cmd));
        Ok(crate::testing::command_output(0, "", ""))
    }
    async fn spawn(
        &self,
        s: &SandboxRecord,
        _: CommandSpec,
    ) -> courier_e2b::Result<SpawnedCommand> {
        self.record(format!("spawn {}", s.sandbox_id));
        Ok(SpawnedCommand {
            pid: 1,
            events: Box::pin(futures::stream::empty()),
        })
    }
    async fn send_stdin(&self, s: &SandboxRecord, _: u32, _: Bytes) -> courier_e2b::Result<()> {
        self.record(format!("send_stdin {}", s.sandbox_id));
        Ok(())
    }
    async fn kill_process(&self, s: &SandboxRecord, _: u32) -> courier_e2b::Result<bool> {
        self.record(format!("kill_process {}", s.sandbox_id));
        Ok(true)
    }
    async fn write_file(&self, s: &SandboxRecord, p: &str, _: Bytes) -> courier_e2b::Result<()> {
        self.record(format!("write_file {} {p}", s.sandbox_id));
        Ok(())
    }
    async fn read_file(&self, s: &SandboxRecord, p: &str) -> courier_e2b::Result<Bytes> {
        self.record(format!("read_file {} {p}", s.sandbox_id));
        Ok(Bytes::new())
    }
    async fn list(&self) -> courier_e2b::Result<Vec<ListedSandbox>> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        if self.cannot_list {
            return Err(Error::Api {
                status: 500,
                code: None,
                message: "list broke".into(),
            });
        }
        Ok(self
            .live
            .lock()
            .unwrap()
            .iter()
            .map(|s| listed(s))
            .collect())
    }
    async fn build_template(&self, name: &str, _: Recipe) -> courier_e2b::Result<BuildRequested> {
        self.record(format!("build {name}"));
        Ok(BuildRequested {
            template_id: format!("tpl:{name}"),
            build_id: format!("b,{}", self.next.fetch_add(1, Ordering::SeqCst)),
            public: false,
            names: vec![name.into()],
            tags: Vec::new(),
            aliases: vec![name.into()],
        })
    }
    async fn template_build_status(
        &self,
        template_id: &str,
        build_id: &str,
        offset: usize,
    ) -> courier_e2b::Result<BuildStatus> {
        self.record(format!("status {template_id} {build_id} {offset}"));
        let status = self.build_state.unwrap_or(BuildState::Ready);
        Ok(BuildStatus {
            template_id: template_id.into(),
            build_id: build_id.into(),
            status,
            log_entries: Vec::new(),
            reason: (status == BuildState::Error).then(|| BuildReason {
                message: "npm failed".into(),
                step: Some("2".into()),
            }),
        })
    }
    async fn list_templates(&self) -> courier_e2b::Result<Vec<TemplateInfo>> {
        Ok(self.templates.clone())
    }
}

/// A provider of a test set: name, fake, capacity, labels.
type Entry<'a> = (&'a str, &'a Arc<Fake>, Option<u32>, &'a [&'a str]);

fn set(fakes: &[Entry<'_>]) -> ProviderSet {
    ProviderSet::new(
        fakes
            .iter()
            .map(|(name, fake, capacity, labels)| ProviderSpec {
                name: (*name).to_owned(),
                api: (*fake).clone(),
                capacity: *capacity,
                labels: labels.iter().map(|l| (*l).to_owned()).collect(),
            })
            .collect(),
    )
    .unwrap()
}

fn base() -> NewSandbox {
    NewSandbox {
        template_id: "base".into(),
        ..Default::default()
    }
}

fn labelled(label: &str) -> NewSandbox {
    let mut request = base();
    request
        .metadata
        .insert(METADATA_PLACEMENT_LABEL.into(), label.into());
    request
}

#[tokio::test]
async fn creates_go_to_the_least_loaded_provider_ties_by_order() {
    let (a, b) = (Arc::new(Fake::with_live(2)), Arc::new(Fake::with_live(0)));
    let providers = set(&[("a", &a, None, &[]), ("b", &b, None, &[])]);
    let mut placed = Vec::new();
    for _ in 0..4 {
        placed.push(providers.create(base()).await.unwrap().sandbox_id);
    }
    // b (0) twice until it has a's 2, then a (tie: first configured), then b.
    assert_eq!(placed, ["b:s0", "b:s1", "a:s0", "b:s2"]);
    // Counted from one list each, then from what the set did itself.
    assert_eq!(a.lists.load(Ordering::SeqCst), 1);
    assert_eq!(b.lists.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrent_creates_count_each_other_in_flight() {
    let slow = || Fake {
        create_delay: Duration::from_millis(200),
        ..Fake::default()
    };
    let (a, b) = (Arc::new(slow()), Arc::new(slow()));
    let providers = Arc::new(set(&[("a", &a, None, &[]), ("b", &b, None, &[])]));
    let creates = (0..4).map(|_| {
        let providers = providers.clone();
        async move { providers.create(base()).await.unwrap().sandbox_id }
    });
    let placed = futures::future::join_all(creates).await;
    let on_a = placed.iter().filter(|id| id.starts_with("a:")).count();
    assert_eq!(on_a, 2, "{placed:?}");
}

#[tokio::test]
async fn capacity_is_honoured_then_the_provider_429() {
    let (a, b) = (Arc::new(Fake::default()), Arc::new(Fake::default()));
    let providers = set(&[("a", &a, Some(1), &[]), ("b", &b, Some(1), &[])]);
    providers.create(base()).await.unwrap();
    providers.create(base()).await.unwrap();
    let e = providers.create(base()).await.unwrap_err();
    match &e {
        Error::RateLimited { message, .. } => {
            assert!(
                message.contains("a 1/1") && message.contains("b 1/1"),
                "{message}"
            );
            assert!(message.contains("capacity"), "{message}");
        }
        other => panic!("expected the capacity error, got {other:?}"),
    }
    // A kill through the set frees the place at once.
    providers.kill("a:s0").await.unwrap();
    assert!(
        providers
            .create(base())
            .await
            .unwrap()
            .sandbox_id
            .starts_with("a:")
    );
}

#[tokio::test]
async fn labels_choose_among_providers() {
    let (a, b, c) = (
        Arc::new(Fake::default()),
        Arc::new(Fake::default()),
        Arc::new(Fake::default()),
    );
    let providers = set(&[
        ("a", &a, None, &[]),
        ("b", &b, None, &["gpu"]),
        ("c", &c, Some(1), &["gpu", "eu"]),
    ])
    .with_template_label("big", "eu")
    .unwrap();
    for _ in 0..3 {
        assert!(
            providers
                .create(labelled("gpu"))
                .await
                .unwrap()
                .sandbox_id
                .starts_with(['b', 'c'])
        );
    }
    assert!(a.calls().is_empty(), "{:?}", a.calls());
    // c is full now: the label's providers only, so the capacity error names it.
    let big = NewSandbox {
        template_id: "big".into(),
        ..Default::default()
    };
    let e = providers.create(big).await.unwrap_err();
    assert!(
        matches!(e, Error::RateLimited { ref message, .. } if message.contains("\"eu\"")),
        "{e:?}"
    );
    let e = providers.create(labelled("tpu")).await.unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { ref message } if message.contains("\"tpu\"") && message.contains("b [gpu]")),
        "{e:?}"
    );
    let unknown = set(&[("a", &a, None, &[])]).with_template_label("big", "eu");
    assert!(matches!(
        unknown,
        Err(OrchestratorError::InvalidConfig {
            field: "provider_template_labels",
            ..
        })
    ));
}

#[tokio::test]
async fn an_unreachable_provider_is_skipped_for_the_next() {
    let down = Arc::new(Fake {
        unreachable: true,
        ..Fake::default()
    });
    let up = Arc::new(Fake::with_live(3));
    let providers = set(&[("down", &down, None, &[]), ("up", &up, None, &[])]);
    let record = providers.create(base()).await.unwrap();
    assert_eq!(record.sandbox_id, "up:s0");
    assert_eq!(down.calls(), ["create base"]);
    // Alone, its error is the caller's.
    let alone = set(&[("down", &down, None, &[])]);
    assert!(matches!(
        alone.create(base()).await,
        Err(Error::Transport(_))
    ));
}

#[tokio::test]
async fn a_provider_that_cannot_be_counted_is_not_placed_on() {
    let blind = Arc::new(Fake {
        cannot_list: true,
        ..Fake::default()
    });
    let ok = Arc::new(Fake::with_live(5));
    let providers = set(&[("blind", &blind, None, &[]), ("ok", &ok, None, &[])]);
    assert_eq!(providers.create(base()).await.unwrap().sandbox_id, "ok:s0");
    assert!(blind.calls().is_empty());
    let alone = set(&[("blind", &blind, None, &[])]);
    let e = alone.create(base()).await.unwrap_err();
    assert!(
        matches!(e, Error::Api { status: 503, ref message, .. } if message.contains("blind")),
        "{e:?}"
    );
}

#[tokio::test]
async fn every_call_routes_by_prefix_with_the_inner_id() {
    let (a, b) = (Arc::new(Fake::with_live(1)), Arc::new(Fake::default()));
    let providers = set(&[("a", &a, None, &[]), ("b", &b, None, &[])]);
    let created = providers.create(base()).await.unwrap();
    assert_eq!(created.sandbox_id, "b:s0");
    let connected = providers.connect("b:s0", None).await.unwrap();
    assert_eq!(connected.sandbox_id, "b:s0");
    providers
        .set_timeout("b:s0", Duration::from_secs(5))
        .await
        .unwrap();
    providers.pause("b:s0").await.unwrap();
    providers
        .run(&created, CommandSpec::new("id"))
        .await
        .unwrap();
    providers
        .spawn(&created, CommandSpec::new("id"))
        .await
        .unwrap();
    providers
        .send_stdin(&created, 1, Bytes::new())
        .await
        .unwrap();
    providers.kill_process(&created, 1).await.unwrap();
    providers
        .write_file(&created, "/f", Bytes::new())
        .await
        .unwrap();
    providers.read_file(&created, "/f").await.unwrap();
    assert!(providers.kill("b:s0").await.unwrap());
    assert_eq!(
        b.calls(),
        [
            "create base",
            "connect s0",
            "set_timeout s0",
            "pause s0",
            "run s0 id",
            "spawn s0",
            "send_stdin s0",
            "kill_process s0",
            "write_file s0 /f",
            "read_file s0 /f",
            "kill s0"
        ]
    );
    assert!(a.calls().is_empty(), "{:?}", a.calls());
}

#[tokio::test]
async fn ids_naming_no_provider_reach_none() {
    // Attacker: an API caller naming a sandbox by a made-up or unprefixed id, hoping it
    // lands on some provider. Nothing is called; the error names the id.
    let (a, b) = (Arc::new(Fake::with_live(1)), Arc::new(Fake::with_live(1)));
    let providers = set(&[("a", &a, None, &[]), ("b", &b, None, &[])]);
    for id in ["old0", "c:old0", "a:", ":old0", "A:old0"] {
        let e = providers.kill(id).await.unwrap_err();
        assert!(
            matches!(e, Error::NotFound { kind: NotFoundKind::Sandbox, ref message } if message.contains(id) && message.contains("a, b")),
            "{id}: {e:?}"
        );
        assert!(
            providers
                .run(&record(id), CommandSpec::new("id"))
                .await
                .is_err()
        );
    }
    assert!(a.calls().is_empty() && b.calls().is_empty());
    // An inner id with a colon stays whole: routed on the first one only.
    assert!(!providers.kill("a:b:old0").await.unwrap());
    assert_eq!(a.calls(), ["kill b:old0"]);
}

#[tokio::test]
async fn list_prefixes_ids_and_fails_whole_when_one_provider_fails() {
    let (a, b) = (Arc::new(Fake::with_live(1)), Arc::new(Fake::with_live(2)));
    let providers = set(&[("a", &a, None, &[]), ("b", &b, None, &[])]);
    let mut ids: Vec<String> = providers
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.sandbox_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["a:old0", "b:old0", "b:old1"]);
    let broken = Arc::new(Fake {
        cannot_list: true,
        ..Fake::with_live(1)
    });
    let providers = set(&[("a", &a, None, &[]), ("broken", &broken, None, &[])]);
    let e = providers.list().await.unwrap_err();
    assert!(
        matches!(e, Error::Api { ref message, .. } if message.contains("provider broken")),
        "{e:?}"
    );
}

#[test]
fn names_and_labels_are_checked() {
    let fake: Arc<dyn SandboxApi> = Arc::new(Fake::default());
    let field = |specs: Vec<ProviderSpec>| match ProviderSet::new(specs) {
        Err(OrchestratorError::InvalidConfig { field, message }) => (field, message),
        Ok(_) => panic!("accepted"),
        Err(e) => panic!("{e}"),
    };
    let (f, m) = field(vec![ProviderSpec::new("Host_1", fake.clone())]);
    assert_eq!(f, "providers.name");
    assert!(m.contains("Host_1") && m.contains("a-z, 0-9"), "{m}");
    let (f, _) = field(vec![ProviderSpec::new("x".repeat(33), fake.clone())]);
    assert_eq!(f, "providers.name");
    let (f, m) = field(vec![
        ProviderSpec::new("h1", fake.clone()),
        ProviderSpec::new("h1", fake.clone()),
    ]);
    assert_eq!(f, "providers.name");
    assert!(m.contains("unique"), "{m}");
    let (f, _) = field(vec![ProviderSpec::new("h1", fake.clone()).label("GPU")]);
    assert_eq!(f, "providers.labels");
    let (f, _) = field(Vec::new());
    assert_eq!(f, "providers");
    let ok = ProviderSet::new(vec![
        ProviderSpec::new("h1", fake.clone())
            .capacity(2)
            .label("gpu"),
        ProviderSpec::new("e2b-cloud", fake),
    ])
    .unwrap();
    assert_eq!(ok.names(), ["h1", "e2b-cloud"]);
}

#[test]
fn build_ids_carry_every_providers_ids() {
    let parts = vec![
        Part {
            provider: "h1".into(),
            template_id: "t:1".into(),
            build_id: "b,%2C".into(),
        },
        Part {
            provider: "e2b".into(),
            template_id: "abc".into(),
            build_id: "uuid".into(),
        },
    ];
    let id = encode(&parts);
    assert_eq!(id, "h1:t%3A1:b%2C%252C,e2b:abc:uuid");
    assert_eq!(decode(&id).unwrap(), parts);
    assert_eq!(decode("plain-build-id"), None);
    assert_eq!(decode("h1:t:b:extra"), None);
}

#[tokio::test]
async fn templates_build_everywhere_and_are_followed_as_one() {
    let (a, b) = (Arc::new(Fake::default()), Arc::new(Fake::default()));
    let providers = set(&[("a", &a, None, &[]), ("b", &b, None, &[])]);
    let requested = providers
        .build_template("claude", Recipe::from_template("base"))
        .await
        .unwrap();
    assert_eq!(requested.template_id, "claude");
    assert_eq!(a.calls(), ["build claude"]);
    assert_eq!(b.calls(), ["build claude"]);
    let status = providers
        .template_build_status(&requested.template_id, &requested.build_id, 7)
        .await
        .unwrap();
    assert_eq!(status.status, BuildState::Ready);
    assert_eq!(status.build_id, requested.build_id);
    // Each provider was asked about its own template and build.
    assert_eq!(a.calls()[1], "status tpl:claude b,0 7");
    assert_eq!(b.calls()[1], "status tpl:claude b,0 7");

    let failing = Arc::new(Fake {
        build_state: Some(BuildState::Error),
        ..Fake::default()
    });
    let building = Arc::new(Fake {
        build_state: Some(BuildState::Building),
        ..Fake::default()
    });
    let providers = set(&[("a", &a, None, &[]), ("b", &building, None, &[])]);
    let requested = providers
        .build_template("claude", Recipe::from_template("base"))
        .await
        .unwrap();
    let status = providers
        .template_build_status("claude", &requested.build_id, 0)
        .await
        .unwrap();
    assert_eq!(status.status, BuildState::Building);
    let providers = set(&[("ok", &a, None, &[]), ("bad", &failing, None, &[])]);
    let requested = providers
        .build_template("claude", Recipe::from_template("base"))
        .await
        .unwrap();
    let status = providers
        .template_build_status("claude", &requested.build_id, 0)
        .await
        .unwrap();
    assert_eq!(status.status, BuildState::Error);
    let reason = status.reason.unwrap();
    assert_eq!(reason.message, "provider bad: npm failed");
    assert_eq!(reason.step.as_deref(), Some("2"));
    // A build id this set did not make names no provider's build.
    let e = providers
        .template_build_status("claude", "other:t:b", 0)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NotFound {
                kind: NotFoundKind::Template,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn templates_are_listed_only_where_every_provider_has_them() {
    let first = vec![
        template("base", &["base"], BuildState::Ready),
        template("id-a1", &["claude"], BuildState::Ready),
        template("id-a2", &["codex"], BuildState::Ready),
        template("id-a3", &["pi"], BuildState::Ready),
    ];
    let second = vec![
        template("base", &["base"], BuildState::Ready),
        template("id-b1", &["claude"], BuildState::Ready),
        template("id-b3", &["pi"], BuildState::Error),
    ];
    let common = intersect(&[first, second]);
    let named: Vec<(&str, BuildState)> = common
        .iter()
        .map(|t| (t.template_id.as_str(), t.build_status))
        .collect();
    assert_eq!(
        named,
        [
            ("base", BuildState::Ready),
            ("claude", BuildState::Ready),
            ("pi", BuildState::Error)
        ]
    );
    assert!(common[1].is_named("claude"));
}
