//! Two API replicas on one PostgreSQL database (a cluster): a sandbox created through
//! one streams live through the other, and what changes it (follow-ups, kill) is carried
//! out by the replica that follows it, whichever replica the client called.
//!
//! Needs `COURIER_TEST_PG_URL` (`cargo xtask test` starts a throwaway cluster); skips
//! without it, except under CI.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Sse, read_events};
use courier_api::{Api, ApiConfig, ClusterLink, Tokens};
use courier_orchestrator::keys::{KeyVault, MasterKey};
use courier_orchestrator::lifecycle::Orchestrator;
use courier_orchestrator::stream::EventHub;
use courier_store::{Cluster, NewProject, NewUser, PgStore, Store};
use courier_testkit::host_sandbox::HostSandboxApi;
use reqwest::Method;
use serde_json::{Value, json};

struct Replica {
    url: String,
    orchestrator: Orchestrator,
    cluster: Arc<Cluster>,
}

async fn replica(
    url: &str,
    schema: &str,
    master: &MasterKey,
    sandboxes: Arc<HostSandboxApi>,
) -> Replica {
    let pg = PgStore::connect_in_schema(url, schema).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(pg.clone());
    let tokens = Tokens::postgres(pg.pool().clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cluster = Arc::new(Cluster::join(&pg, &url).await.unwrap());
    let hub = EventHub::default()
        .join_cluster(cluster.clone(), store.clone())
        .await
        .unwrap();
    let vault = KeyVault::new(master.clone(), store.clone());
    let orchestrator = Orchestrator::new(store.clone(), sandboxes, vault.clone(), hub)
        .with_tool_path(vec![common::fake_clis()])
        .with_cluster(cluster.clone());
    let config = ApiConfig {
        cluster: Some(ClusterLink::new(cluster.clone(), master).unwrap()),
        ..ApiConfig::default()
    };
    let api = Api::new(store, vault, orchestrator.clone(), tokens, config);
    let router = api.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Replica {
        url,
        orchestrator,
        cluster,
    }
}

struct World {
    a: Replica,
    b: Replica,
    token: String,
    project: String,
    http: reqwest::Client,
}

async fn world() -> Option<World> {
    let url = match std::env::var("COURIER_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "COURIER_TEST_PG_URL is not set, but CI must run the replica tests"
            );
            eprintln!("skipping: COURIER_TEST_PG_URL is not set");
            return None;
        }
    };
    let schema = format!("courier_test_{}", uuid::Uuid::new_v4().simple());
    let master = MasterKey::generate();
    // One provider both replicas reach, as several `courier serve` share one E2B.
    let sandboxes = Arc::new(HostSandboxApi::new());
    let a = replica(&url, &schema, &master, sandboxes.clone()).await;
    let b = replica(&url, &schema, &master, sandboxes).await;
    let pg = PgStore::connect_in_schema(&url, &schema).await.unwrap();
    let user = pg
        .create_user(NewUser {
            email: "ada@example.com".into(),
            name: "ada".into(),
        })
        .await
        .unwrap();
    let project = pg
        .create_project(NewProject {
            user_id: user.id,
            name: "engine".into(),
        })
        .await
        .unwrap();
    let token = Tokens::postgres(pg.pool().clone())
        .await
        .unwrap()
        .issue(user.id, "test")
        .await
        .unwrap()
        .token;
    Some(World {
        a,
        b,
        token,
        project: project.id.to_string(),
        http: reqwest::Client::new(),
    })
}

impl World {
    async fn call(
        &self,
        at: &Replica,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", at.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn events(&self, at: &Replica, id: &str, stop: impl Fn(&Sse) -> bool) -> Vec<Sse> {
        let res = self
            .http
            .get(format!("{}/v1/sandboxes/{id}/events", at.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        read_events(res, stop).await
    }

    async fn messages(
        &self,
        at: &Replica,
        id: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        for _ in 0..400 {
            let (_, body) = self
                .call(
                    at,
                    Method::GET,
                    &format!("/v1/sandboxes/{id}/messages"),
                    None,
                )
                .await;
            let items = body["items"].as_array().cloned().unwrap_or_default();
            if done(&items) {
                return items;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("messages of {id} never got there");
    }
}

/// Each message's text as a client rebuilds it from `message` snapshots and `text`
/// appends, checking that every append continues the text exactly.
fn rebuilt(events: &[Sse]) -> std::collections::BTreeMap<i64, String> {
    let mut out = std::collections::BTreeMap::new();
    for e in events {
        match e.event.as_str() {
            "message" => {
                let m = &e.data["message"];
                out.insert(
                    m["seq"].as_i64().unwrap(),
                    m["content"].as_str().unwrap().to_owned(),
                );
            }
            "text" => {
                let seq = e.data["seq"].as_i64().unwrap();
                let text = out.get_mut(&seq).expect("text after its message");
                let end = e.data["content_end"].as_u64().unwrap() as usize;
                let piece = e.data["text"].as_str().unwrap();
                assert_eq!(
                    text.len() + piece.len(),
                    end,
                    "a gap or a repeat in message {seq}"
                );
                text.push_str(piece);
            }
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn a_sandbox_streams_live_on_the_other_replica_and_its_changes_reach_its_owner() {
    let Some(w) = world().await else { return };
    let command = "for i in $(seq 1 150); do echo line-$i; sleep 0.01; done";
    let (status, created) = w
        .call(
            &w.a,
            Method::POST,
            "/v1/sandboxes",
            Some(json!({ "tool": "shell", "prompt": command, "project_id": w.project })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    // Replica A follows it; B does not.
    assert!(w.a.orchestrator.is_working(id.parse().unwrap()));
    assert!(!w.b.orchestrator.is_working(id.parse().unwrap()));

    // A client of replica B watches it live, to the end of the run.
    let events = w
        .events(&w.b, &id, |e| {
            e.event == "finished" && e.data["seq"] == 2
                || e.event == "message"
                    && e.data["message"]["seq"] == 2
                    && e.data["message"]["status"] == "completed"
        })
        .await;
    let messages = w
        .messages(&w.b, &id, |m| m.len() == 2 && m[1]["status"] == "completed")
        .await;
    let seen = rebuilt(&events);
    assert_eq!(seen[&2], messages[1]["content"].as_str().unwrap());
    assert!(seen[&2].contains("line-150"));
    let texts = events.iter().filter(|e| e.event == "text").count();
    assert!(
        texts > 1,
        "B's client got the run as {texts} text events: not live"
    );

    // A follow-up sent to B is run by A (a client's own forwarding header changes
    // nothing: attacker: skipping the owner to start a second agent on the sandbox).
    let res = w
        .http
        .post(format!("{}/v1/sandboxes/{id}/messages", w.b.url))
        .bearer_auth(&w.token)
        .header("x-courier-forwarded", "anything")
        .json(&json!({ "text": "echo second-turn" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let messages = w
        .messages(&w.a, &id, |m| m.len() == 4 && m[3]["status"] == "completed")
        .await;
    assert!(
        messages[3]["content"]
            .as_str()
            .unwrap()
            .contains("second-turn")
    );
    assert!(!w.b.orchestrator.is_working(id.parse().unwrap()));

    // A kill sent to B is carried out once, by A.
    let (status, killed) = w
        .call(
            &w.b,
            Method::POST,
            &format!("/v1/sandboxes/{id}/kill"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{killed}");
    assert_eq!(killed["status"], "killed");
    let (status, again) = w
        .call(
            &w.a,
            Method::POST,
            &format!("/v1/sandboxes/{id}/kill"),
            None,
        )
        .await;
    assert_eq!(status, 409, "a second kill is refused: {again}");
}

#[tokio::test]
async fn a_follow_up_to_a_dead_replicas_sandbox_is_taken_over_and_run() {
    let Some(w) = world().await else { return };
    let (status, created) = w
        .call(
            &w.a,
            Method::POST,
            "/v1/sandboxes",
            Some(json!({ "tool": "shell", "prompt": "echo first-turn", "project_id": w.project })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    w.messages(&w.a, &id, |m| m.len() == 2 && m[1]["status"] == "completed")
        .await;
    // Replica A stops following (as a dying process does) and leaves the cluster.
    w.a.orchestrator.detach_all();
    w.a.cluster.leave().await;
    let (status, body) = w
        .call(
            &w.b,
            Method::POST,
            &format!("/v1/sandboxes/{id}/messages"),
            Some(json!({ "text": "echo after-takeover" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let messages = w
        .messages(&w.b, &id, |m| m.len() == 4 && m[3]["status"] == "completed")
        .await;
    assert!(
        messages[3]["content"]
            .as_str()
            .unwrap()
            .contains("after-takeover")
    );
    assert_eq!(
        w.b.cluster.owner(id.parse().unwrap()).await.unwrap(),
        courier_store::Owner::Me
    );
}

/// A project's kill-all sent to one replica kills every live sandbox of the project,
/// those another replica follows included (each at its owner: `owner::kill_project`), and
/// counts each once; a second kill-all finds nothing left. (That the owner, not the
/// receiver, carried a kill out is not visible from outside: both end the agent the same
/// way.)
#[tokio::test]
async fn a_projects_kill_all_kills_each_sandbox_at_its_owner() {
    let Some(w) = world().await else { return };
    let mut ids = Vec::new();
    for at in [&w.a, &w.b] {
        let (status, created) = w
            .call(
                at,
                Method::POST,
                "/v1/sandboxes",
                Some(json!({ "tool": "shell", "prompt": "echo started; sleep 60", "project_id": w.project })),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let id: courier_store::SandboxId = created["id"].as_str().unwrap().parse().unwrap();
        assert!(at.orchestrator.is_working(id), "its creator follows it");
        ids.push(id);
    }
    let (on_a, on_b) = (ids[0], ids[1]);

    let (status, body) = w
        .call(
            &w.b,
            Method::POST,
            &format!("/v1/projects/{}/kill-all", w.project),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["killed"], 2, "{body}");
    // Each owner let go of its agent as part of the kill it carried out.
    assert!(
        !w.a.orchestrator.is_working(on_a),
        "A killed its own sandbox"
    );
    assert!(!w.b.orchestrator.is_working(on_b));
    for id in ids {
        let (status, sandbox) = w
            .call(&w.a, Method::GET, &format!("/v1/sandboxes/{id}"), None)
            .await;
        assert_eq!(status, 200, "{sandbox}");
        assert_eq!(sandbox["status"], "killed", "{sandbox}");
    }
    let (status, body) = w
        .call(
            &w.a,
            Method::POST,
            &format!("/v1/projects/{}/kill-all", w.project),
            None,
        )
        .await;
    assert_eq!((status, &body["killed"]), (200, &json!(0)), "{body}");
}
