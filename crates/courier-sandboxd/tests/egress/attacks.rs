//! What an attacker inside a networked sandbox tries, and that it fails while the server keeps serving.

use super::lab::Lab;
use super::probes::{fetch, sh, udp_echo};
use super::*;

#[test]
fn sandboxes_reach_the_public_stand_in_and_nothing_internal() {
    let Some(mut lab) = Lab::new("sandboxes_reach_the_public_stand_in_and_nothing_internal") else {
        return;
    };
    lab.start_sandboxd(&["10.77.0.5/32"]);
    lab.with_api(|api| async move {
        let sbx = api.create(Some(true), None).await;

        // The way out works.
        fetch(&sbx, "http://203.0.113.10/")
            .await
            .assert_reached("public stand-in", "203.0.113.10");
        fetch(&sbx, "https://203.0.113.20/")
            .await
            .assert_reached("public stand-in over TLS", "203.0.113.20");

        // An attacker inside goes for the cloud's credentials, the private network, the
        // machine sandboxd runs on (its addresses on every interface, its loopback
        // through slirp's gateway): each fails at once.
        for (what, url) in [
            ("cloud metadata", "http://169.254.169.254/latest/meta-data/"),
            ("a private host", "http://10.77.0.6/"),
            ("the private gateway", "http://10.77.0.2/"),
            ("sandboxd's public address", "http://198.51.100.1:8081/"),
            ("sandboxd's private address", "http://10.77.0.1:8081/"),
            (
                "sandboxd's loopback via the gateway",
                "http://10.0.2.2:8081/",
            ),
        ] {
            fetch(&sbx, url).await.assert_refused_fast(what);
        }
        // The operator opened exactly 10.77.0.5: reachable, its neighbours not.
        fetch(&sbx, "http://10.77.0.5/")
            .await
            .assert_reached("operator-allowed", "10.77.0.5");
        fetch(&sbx, "http://10.77.0.6:8080/")
            .await
            .assert_refused_fast("operator's neighbour");

        // Datagrams: echoed by the public host, never delivered to internal ones.
        let echoes = udp_echo(&sbx, &["203.0.113.10", "169.254.169.254", "10.77.0.6"]).await;
        assert_eq!(echoes[0], "203.0.113.10 echo", "{echoes:?}");
        assert!(
            !echoes[1].ends_with("echo") && !echoes[2].ends_with("echo"),
            "{echoes:?}"
        );

        // DNS goes to the host's resolver although it is internal (as on E2B).
        let resolved = sh(&sbx, "getent ahostsv4 allowed.test | head -n1").await;
        assert!(resolved.starts_with("203.0.113.10"), "{resolved:?}");

        api.assert_serving().await;
        sbx.kill().await.unwrap();
    });
}

#[test]
fn allow_and_deny_rules_domains_and_live_updates_are_enforced() {
    let Some(mut lab) = Lab::new("allow_and_deny_rules_domains_and_live_updates_are_enforced")
    else {
        return;
    };
    lab.start_sandboxd(&["10.77.0.5/32"]);
    lab.with_api(|api| async move {
        // CIDRs: deny a range, allow one address in it. The attacker tries the denied
        // neighbour, and tries to lift the internal ranges with its own allowOut.
        let cidrs = api
            .create(
                Some(true),
                Some(serde_json::json!({
                    "denyOut": ["203.0.113.0/24"],
                    "allowOut": ["203.0.113.20/32", "169.254.169.254", "10.0.0.0/8"],
                })),
            )
            .await;
        fetch(&cidrs, "http://203.0.113.20/")
            .await
            .assert_reached("allowOut", "203.0.113.20");
        fetch(&cidrs, "http://203.0.113.10/")
            .await
            .assert_refused_fast("denyOut");
        fetch(&cidrs, "http://169.254.169.254/")
            .await
            .assert_refused_fast("metadata via allowOut");
        fetch(&cidrs, "http://10.77.0.6/")
            .await
            .assert_refused_fast("private via allowOut");
        fetch(&cidrs, "http://10.77.0.5/")
            .await
            .assert_reached("operator-allowed", "10.77.0.5");

        // Domains: everything denied but allowed.test and its subdomains, over HTTP and
        // HTTPS. The attacker sends another name to the same address, the allowed name
        // to another address (fronting), or the allowed name to the metadata service.
        let domains = api
            .create(
                None,
                Some(serde_json::json!({
                    "denyOut": ["0.0.0.0/0"],
                    "allowOut": ["allowed.test", "*.allowed.test"],
                })),
            )
            .await;
        let resolve = |name: &str, port: u16, ip: &str| format!("--resolve {name}:{port}:{ip}");
        let allowed = format!(
            "{} http://allowed.test/",
            resolve("allowed.test", 80, "203.0.113.10")
        );
        fetch(&domains, &allowed)
            .await
            .assert_reached("allowed domain", "203.0.113.10");
        let tls = format!(
            "{} https://allowed.test/",
            resolve("allowed.test", 443, "203.0.113.10")
        );
        fetch(&domains, &tls)
            .await
            .assert_reached("allowed domain, TLS", "203.0.113.10");
        let sub = format!(
            "{} http://api.allowed.test/",
            resolve("api.allowed.test", 80, "203.0.113.10")
        );
        fetch(&domains, &sub)
            .await
            .assert_reached("wildcard", "203.0.113.10");
        for (what, args) in [
            (
                "another name, same address",
                format!(
                    "{} http://other.test/",
                    resolve("other.test", 80, "203.0.113.10")
                ),
            ),
            (
                "another name over TLS",
                format!(
                    "{} https://other.test/",
                    resolve("other.test", 443, "203.0.113.10")
                ),
            ),
            (
                "allowed name, another address",
                format!(
                    "{} http://allowed.test/",
                    resolve("allowed.test", 80, "203.0.113.20")
                ),
            ),
            (
                "allowed name at the metadata address",
                format!(
                    "{} http://allowed.test/",
                    resolve("allowed.test", 80, "169.254.169.254")
                ),
            ),
            (
                "allowed Host on a port without domain rules",
                "-H 'Host: allowed.test' http://203.0.113.10:8080/".to_owned(),
            ),
            ("no name at all", "http://203.0.113.10/".to_owned()),
        ] {
            fetch(&domains, &args).await.assert_refused_fast(what);
        }
        // DNS still resolves for a sandbox whose traffic is all denied.
        let resolved = sh(&domains, "getent ahostsv4 elsewhere.test | head -n1").await;
        assert!(resolved.starts_with("203.0.113.20"), "{resolved:?}");

        // Live update: the rules of a running sandbox change for its next connection.
        let live = api.create(Some(true), None).await;
        fetch(&live, "http://203.0.113.10/")
            .await
            .assert_reached("before the update", "203.0.113.10");
        let (status, body) = api
            .put_network(live.id(), serde_json::json!({"denyOut": ["203.0.113.10"]}))
            .await;
        assert_eq!(status, 204, "{body}");
        fetch(&live, "http://203.0.113.10/")
            .await
            .assert_refused_fast("after the update");
        fetch(&live, "http://203.0.113.20/")
            .await
            .assert_reached("not denied", "203.0.113.20");
        let detail = api.detail(live.id()).await;
        assert_eq!(
            detail["network"]["denyOut"],
            serde_json::json!(["203.0.113.10"])
        );
        let (status, body) = api
            .put_network(live.id(), serde_json::json!({"denyOut": ["example.com"]}))
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("denyOut[0]"), "{body}");
        let (status, _) = api.put_network(live.id(), serde_json::json!({})).await;
        assert_eq!(status, 204);
        fetch(&live, "http://203.0.113.10/")
            .await
            .assert_reached("rules cleared", "203.0.113.10");

        // A sandbox created without internet has no interface to open: an update that
        // would let traffic out says so instead of pretending.
        let offline = api.create(Some(false), None).await;
        let (status, body) = api
            .put_network(
                offline.id(),
                serde_json::json!({"allowOut": ["203.0.113.10"]}),
            )
            .await;
        assert_eq!(status, 409, "{body}");
        fetch(&offline, "http://203.0.113.10/")
            .await
            .assert_refused_fast("no interface");

        api.assert_serving().await;
        for sbx in [cidrs, domains, live, offline] {
            sbx.kill().await.unwrap();
        }
    });
}

#[test]
fn a_dead_supervisor_fails_closed_and_a_new_one_can_be_attached() {
    let Some(mut lab) = Lab::new("a_dead_supervisor_fails_closed_and_a_new_one_can_be_attached")
    else {
        return;
    };
    lab.start_sandboxd(&[]);
    let id = lab.with_api(|api| async move {
        let sbx = api
            .create(
                Some(true),
                Some(serde_json::json!({"denyOut": ["203.0.113.20/32"]})),
            )
            .await;
        fetch(&sbx, "http://203.0.113.10/")
            .await
            .assert_reached("public", "203.0.113.10");
        fetch(&sbx, "http://203.0.113.20/")
            .await
            .assert_refused_fast("denied");
        // Without the operator's allow list the private host stays closed.
        fetch(&sbx, "http://10.77.0.5/")
            .await
            .assert_refused_fast("private host");
        sbx.id().to_owned()
    });
    let pid = lab.init_pid(&id);

    // courier-sandboxd crashes: its supervisor thread dies with it, slirp4netns (in the
    // sandbox's cgroup) lives on, and the attacker inside tries to use the moment.
    lab.crash_sandboxd();
    let fetch = lab.curl_from_sandbox_netns(pid, "http://203.0.113.10/");
    assert_ne!(
        fetch.rc, 0,
        "a connection went out without a supervisor: {fetch:?}"
    );
    let fetch = lab.curl_from_sandbox_netns(pid, "http://169.254.169.254/");
    assert_ne!(fetch.rc, 0, "{fetch:?}");

    // Recovery path: the stale slirp4netns is replaced, with a new supervisor, for the
    // running sandbox.
    let killed = lab.in_namespace(|| network::detach_stale(pid).unwrap());
    assert_eq!(killed.len(), 1, "{killed:?}");
    let log = lab.path("reattached.log");
    let egress = Egress::new(Vec::new()).sandbox(&id, EgressRules::default());
    let mut attached = lab.in_namespace(|| {
        network::attach(
            &network::find_slirp4netns().unwrap(),
            pid,
            &[],
            &log,
            &egress,
        )
        .expect("attach to the running sandbox")
    });
    lab.curl_from_sandbox_netns(pid, "http://203.0.113.10/")
        .assert_reached("after re-attaching", "203.0.113.10");
    lab.curl_from_sandbox_netns(pid, "http://169.254.169.254/")
        .assert_refused_fast("metadata after re-attaching");
    egress.set_rules(EgressRules::deny_all());
    lab.curl_from_sandbox_netns(pid, "http://203.0.113.10/")
        .assert_refused_fast("after denying all");
    attached.kill().unwrap();
    attached.wait().unwrap();

    // The server comes back and serves (it adopts the sandbox, then --kill-on-exit
    // reaps it when the lab is dropped).
    lab.start_sandboxd(&[]);
    lab.with_api(|api| async move {
        api.assert_serving().await;
        // The recovered sandbox's rules came back from its record.
        let detail = api.detail(&id).await;
        assert_eq!(detail["sandboxID"], serde_json::json!(id));
        assert_eq!(
            detail["network"]["denyOut"],
            serde_json::json!(["203.0.113.20/32"]),
            "{detail}"
        );
    });
}
