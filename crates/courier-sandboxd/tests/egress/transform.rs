//! E2B's `network.rules` transforms and the port-scoped operator allow, end to end: a
//! sandbox's plain-HTTP requests get the rule's headers on the way out; what an attacker
//! inside tries in order to read the values, send them elsewhere, or exhaust the proxy,
//! and that it fails.

use std::collections::BTreeMap;

use courier_e2b::models::{NetworkRule, NetworkUpdate};

use super::lab::Lab;
use super::probes::{fetch, sh};
use super::*;

// The secrets, spelled in halves inside sandboxes so that a command line searching for
// one never contains it whole.
const PROOF_A: &str = "proof-7f3a";
const PROOF_B: &str = "9c21e4b8d05a";
const NAMED_A: &str = "Bearer named-51d0";
const NAMED_B: &str = "e6a9b7c3f2";
const NEXT_A: &str = "proof2-0b9e";
const NEXT_B: &str = "44d1a6c7e3f8";

fn proof() -> String {
    format!("{PROOF_A}{PROOF_B}")
}
fn named() -> String {
    format!("{NAMED_A}{NAMED_B}")
}
fn next_proof() -> String {
    format!("{NEXT_A}{NEXT_B}")
}

/// Looks for the values (argv: their halves) in every regular file of the sandbox (but
/// /proc, /sys, /dev) and in the environment and command line of every process.
const SCAN: &str = r#"import os, sys, time
needles = [(sys.argv[1] + sys.argv[2]).encode(), (sys.argv[3] + sys.argv[4]).encode()]
# Only what was written since the sandbox was made can hold a value the server put there
# (the template's files are older): every file is looked at, the new ones read.
since = time.time() - 3600
hits, searched = [], 0
def check(path):
    try:
        with open(path, 'rb') as f:
            data = f.read(256 << 20)
    except OSError:
        return
    if any(n in data for n in needles):
        hits.append(path)
for root, dirs, files in os.walk('/'):
    if root == '/':
        dirs[:] = [d for d in dirs if d not in ('proc', 'sys', 'dev')]
    for name in files:
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        searched += 1
        if (st.st_mtime >= since or st.st_ctime >= since) and os.path.isfile(path) and not os.path.islink(path):
            check(path)
for pid in os.listdir('/proc'):
    if pid.isdigit():
        check('/proc/%s/environ' % pid)
        check('/proc/%s/cmdline' % pid)
print('searched', searched, 'hits', hits)
"#;

/// The body of `curl args` (with `-sS`), or what went wrong.
async fn body(sbx: &Sandbox, args: &str) -> String {
    sh(sbx, &format!("curl -sS --max-time 10 {args} 2>&1; true")).await
}

/// Resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn transform_rules_set_headers_and_keep_their_values_secret() {
    let test = "transform_rules_set_headers_and_keep_their_values_secret";
    let Some(mut lab) = Lab::new(test) else {
        return;
    };
    // The gateway pattern: one TCP port of sandboxd's own address opened by the operator.
    lab.start_sandboxd(&["10.77.0.1:8081"]);
    let sandboxd_pid = lab.sandboxd.as_ref().unwrap().id();
    let id = lab.with_api(|api| async move {
        let network = NetworkConfig {
            rules: Some(BTreeMap::from([
                (
                    "10.77.0.1".to_owned(),
                    vec![NetworkRule::set_headers([("X-Proof", proof())])],
                ),
                (
                    "allowed.test".to_owned(),
                    vec![NetworkRule::set_headers([("Authorization", named())])],
                ),
            ])),
            ..Default::default()
        };
        let sbx = Sandbox::builder()
            .timeout(Duration::from_secs(600))
            .allow_internet_access(true)
            .network(network)
            .create(&api.client)
            .await
            .expect("create with rules");

        // The attacker inside looks for the values before any request could have echoed
        // them: in every file, and in the environment and command line of every process.
        // The search runs in Python, which joins the halves in memory: a shell would put
        // the whole value in grep's command line, where the search would find it.
        sbx.files().write("/tmp/scan.py", SCAN).await.unwrap();
        let found = sbx
            .commands()
            .run(format!(
                "python3 /tmp/scan.py '{PROOF_A}' '{PROOF_B}' '{NAMED_A}' '{NAMED_B}'"
            ))
            .user("root")
            .timeout(Duration::from_secs(450))
            .await
            .unwrap()
            .stdout;
        assert!(
            found.starts_with("searched ") && found.ends_with(" hits []\n"),
            "a value is readable inside the sandbox: {found}"
        );
        // The search did look (the root file system has tens of thousands of files).
        let searched: usize = found.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(searched > 10_000, "{found}");
        eprintln!("secret scan: {}", found.trim());

        // The rule's header reaches the server, replacing the one the sandbox forged.
        let seen = body(&sbx, "-H 'X-Proof: forged' http://10.77.0.1:8081/headers").await;
        assert!(seen.starts_with("10.77.0.1\n"), "{seen}");
        assert!(seen.contains(&format!("x-proof: {}\n", proof())), "{seen}");
        assert!(
            !seen.contains("forged"),
            "the forged header went through: {seen}"
        );

        // The operator opened one port: the next one on the same address stays closed.
        fetch(&sbx, "http://10.77.0.1:8081/")
            .await
            .assert_reached("the allowed port", "sandboxd-host");
        fetch(&sbx, "http://10.77.0.1:8082/")
            .await
            .assert_refused_fast("the next port of the allowed address");

        // Keep-alive: two requests on one connection both get the header.
        let script = "import http.client\n\
            c = http.client.HTTPConnection('10.77.0.1', 8081, timeout=10)\n\
            for _ in range(2):\n\
            \x20   c.request('GET', '/headers', headers={'X-Proof': 'forged'})\n\
            \x20   body = c.getresponse().read().decode()\n\
            \x20   print(sum(l.startswith('x-proof: proof-') for l in body.splitlines()), \
                         'forged' in body, c.sock.getsockname()[1])\n";
        let out = sh(&sbx, &format!("python3 -c \"{script}\"")).await;
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        let port = lines[0].rsplit(' ').next().unwrap();
        assert_eq!(lines[0], format!("1 False {port}"), "{out}");
        assert_eq!(lines[1], format!("1 False {port}"), "one connection: {out}");

        // A streamed answer (server-sent events) arrives as it is sent: the first event
        // well before the server ends the answer 3 s later.
        let script = "import http.client, time\n\
            c = http.client.HTTPConnection('10.77.0.1', 8081, timeout=10)\n\
            t = time.time()\n\
            c.request('GET', '/sse')\n\
            r = c.getresponse()\n\
            got = b''\n\
            while b'one' not in got:\n\
            \x20   got += r.read1(100)\n\
            first = time.time() - t\n\
            rest = r.read()\n\
            print('%.2f %.2f %s' % (first, time.time() - t, b'two' in rest))\n";
        let out = sh(&sbx, &format!("python3 -c \"{script}\"")).await;
        let words: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(words.len(), 3, "{out}");
        let (first, total): (f64, f64) = (words[0].parse().unwrap(), words[1].parse().unwrap());
        assert!(first < 2.0 && total >= 2.9 && words[2] == "True", "{out}");

        // A streamed (chunked) request body goes through whole.
        sh(&sbx, "head -c 1048576 /dev/urandom > /tmp/big").await;
        let uploaded = body(
            &sbx,
            "-H 'Transfer-Encoding: chunked' --data-binary @/tmp/big http://10.77.0.1:8081/up",
        )
        .await;
        assert_eq!(uploaded, "len=1048576");

        // Upgrades would carry later traffic past the proxy: refused, with the 426 that
        // tells a client (Codex) to use plain HTTP at once.
        let status = body(
            &sbx,
            "-o /dev/null -w '%{http_code}' -H 'Connection: Upgrade' -H 'Upgrade: websocket' \
             http://10.77.0.1:8081/headers",
        )
        .await;
        assert_eq!(status, "426");

        // A domain key: the named host gets its header.
        let seen = body(&sbx, "http://allowed.test/headers").await;
        assert!(seen.starts_with("203.0.113.10\n"), "{seen}");
        assert!(
            seen.contains(&format!("authorization: {}\n", named())),
            "{seen}"
        );
        // The attacker names that host in requests to a server of its own
        // (elsewhere.test, 203.0.113.20): by Host, and by absolute URI. The requests go
        // where the sandbox connected, without the header.
        for args in [
            "-H 'Host: allowed.test' http://203.0.113.20/headers",
            "--request-target http://allowed.test/headers http://203.0.113.20/",
        ] {
            let seen = body(&sbx, args).await;
            assert!(seen.starts_with("203.0.113.20\n"), "{args}: {seen}");
            assert!(!seen.contains(NAMED_B), "{args} got the header: {seen}");
        }
        // TLS to a host a domain key names is intercepted: the sandbox trusts the
        // server's CA (curl verifies, no -k) and the header is set inside.
        let seen = body(&sbx, "https://allowed.test/headers").await;
        assert!(seen.starts_with("203.0.113.10\n"), "{seen}");
        assert!(
            seen.contains(&format!("authorization: {}\n", named())),
            "{seen}"
        );
        // TLS without a name a rule names, to an address an IP key covers: no leaf to
        // mint, so closed rather than sent without the header.
        fetch(&sbx, "https://10.77.0.1:8081/")
            .await
            .assert_refused_fast("TLS without a ruled name to an IP key's address");
        // TLS elsewhere is untouched.
        fetch(&sbx, "https://203.0.113.20/")
            .await
            .assert_reached("TLS to a host without rules", "203.0.113.20");

        // A giant header block is refused at the proxy's bound, without growing the
        // server: 8 MiB of headers, sent as fast as the proxy reads.
        let before = rss_kib(sandboxd_pid);
        let script = "import socket\n\
            s = socket.create_connection(('10.77.0.1', 8081), timeout=10)\n\
            s.sendall(b'GET /headers HTTP/1.1\\\\r\\\\nHost: x\\\\r\\\\n')\n\
            line = b'X-Big: ' + b'a' * 1000 + b'\\\\r\\\\n'\n\
            try:\n\
            \x20   for _ in range(8192):\n\
            \x20       s.sendall(line)\n\
            except OSError as e:\n\
            \x20   pass\n\
            try:\n\
            \x20   print(s.recv(64).split(b' ')[1].decode())\n\
            except (OSError, IndexError):\n\
            \x20   print('closed')\n";
        let out = sh(&sbx, &format!("python3 -c \"{script}\"")).await;
        assert!(out == "431\n" || out == "closed\n", "{out}");
        let grown = rss_kib(sandboxd_pid).saturating_sub(before);
        assert!(grown < 16 * 1024, "sandboxd grew by {grown} KiB");
        let seen = body(&sbx, "http://10.77.0.1:8081/headers").await;
        assert!(seen.contains(PROOF_B), "still serving: {seen}");

        // The values are in the sandbox's detail, behind the API key only.
        let anonymous = api
            .http
            .get(format!("http://{API}/sandboxes/{}", sbx.id()))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status().as_u16(), 401);
        assert!(!anonymous.text().await.unwrap().contains(PROOF_B));
        let info = sbx.get_info().await.unwrap().network.unwrap();
        let rules = info.rules.unwrap();
        let headers = &rules["10.77.0.1"][0].transform.as_ref().unwrap().headers;
        assert_eq!(headers["X-Proof"].expose(), proof());

        // A live update through the SDK replaces the rules for the next connection.
        sbx.update_network(NetworkUpdate {
            rules: Some(BTreeMap::from([(
                "10.77.0.1".to_owned(),
                vec![NetworkRule::set_headers([("X-Proof", next_proof())])],
            )])),
            ..Default::default()
        })
        .await
        .unwrap();
        let seen = body(&sbx, "http://10.77.0.1:8081/headers").await;
        assert!(
            seen.contains(&format!("x-proof: {}\n", next_proof())),
            "{seen}"
        );
        let seen = body(&sbx, "http://allowed.test/headers").await;
        assert!(
            !seen.contains(NAMED_B),
            "the removed rule still applies: {seen}"
        );
        sbx.id().to_owned()
    });

    // The rules survive a crash of the server: they come back from the record.
    lab.crash_sandboxd();
    lab.start_sandboxd(&["10.77.0.1:8081"]);
    lab.with_api(|api| async move {
        let sbx = Sandbox::connect(&api.client, &id).await.unwrap();
        let seen = body(&sbx, "http://10.77.0.1:8081/headers").await;
        assert!(
            seen.contains(&format!("x-proof: {}\n", next_proof())),
            "{seen}"
        );
        sbx.kill().await.unwrap();
    });

    // The server said why it closed the TLS connection, and never wrote a value.
    let log = lab.log();
    assert!(log.contains("without a server name a rule names"), "{log}");
    for secret in [PROOF_B, NAMED_B, NEXT_B] {
        assert!(!log.contains(secret), "a value is in the server's log");
    }
}

#[test]
fn transforms_combine_with_allow_out_domains_checking_every_request() {
    let test = "transforms_combine_with_allow_out_domains_checking_every_request";
    let Some(mut lab) = Lab::new(test) else {
        return;
    };
    lab.start_sandboxd(&[]);
    lab.with_api(|api| async move {
        // Everything denied but allowed.test, which also has a transform.
        let sbx = api
            .create(
                None,
                Some(serde_json::json!({
                    "denyOut": ["0.0.0.0/0"],
                    "allowOut": ["allowed.test"],
                    "rules": {"allowed.test": [{"transform": {"headers": {"X-Proof": proof()}}}]},
                })),
            )
            .await;
        let seen = body(&sbx, "-H 'X-Proof: forged' http://allowed.test/headers").await;
        assert!(seen.starts_with("203.0.113.10\n"), "{seen}");
        assert!(seen.contains(&format!("x-proof: {}\n", proof())), "{seen}");
        assert!(!seen.contains("forged"), "{seen}");

        // The attacker opens the connection with the allowed name, then asks for
        // other.test (same address, not allowed) on it: the domain proxy alone would
        // have checked the first request only; this one checks each.
        let script = "import http.client\n\
            c = http.client.HTTPConnection('allowed.test', 80, timeout=10)\n\
            codes = []\n\
            for host in ('allowed.test', 'other.test'):\n\
            \x20   c.putrequest('GET', '/headers', skip_host=True)\n\
            \x20   c.putheader('Host', host)\n\
            \x20   c.endheaders()\n\
            \x20   r = c.getresponse()\n\
            \x20   r.read()\n\
            \x20   codes.append(str(r.status))\n\
            print(' '.join(codes))\n";
        let codes = sh(&sbx, &format!("python3 -c \"{script}\"")).await;
        assert_eq!(codes, "200 403\n");
        // A connection opening with a name that is not allowed does not get through.
        fetch(&sbx, "-H 'Host: other.test' http://203.0.113.10/headers")
            .await
            .assert_refused_fast("a name outside allowOut");
        // allowOut lets TLS to allowed.test out, and its transform is applied inside
        // (intercepted with the CA the sandbox trusts).
        let seen = body(&sbx, "-H 'X-Proof: forged' https://allowed.test/headers").await;
        assert!(seen.starts_with("203.0.113.10\n"), "{seen}");
        assert!(seen.contains(&format!("x-proof: {}\n", proof())), "{seen}");
        assert!(!seen.contains("forged"), "{seen}");
        sbx.kill().await.unwrap();
    });
    let log = lab.log();
    assert!(!log.contains(PROOF_B), "the value is in the server's log");
    assert!(
        log.contains("other.test is not an allowOut domain"),
        "{log}"
    );
}

/// Prints the common name of the issuer of the certificate `argv[1]:443` presents, as
/// Python's default TLS context (the system bundle) or one trusting only `argv[2]` sees
/// it; `failed <error>` when it does not verify.
const PEER: &str = r#"import socket, ssl, sys
c = ssl.create_default_context(cafile=sys.argv[2]) if len(sys.argv) > 2 else ssl.create_default_context()
try:
    s = c.wrap_socket(socket.create_connection((sys.argv[1], 443), timeout=10), server_hostname=sys.argv[1])
    print(dict(x[0] for x in s.getpeercert()['issuer'])['commonName'])
except Exception as e:
    print('failed', type(e).__name__)
"#;

#[test]
fn https_transforms_go_through_a_ca_only_sandboxes_with_rules_trust() {
    let test = "https_transforms_go_through_a_ca_only_sandboxes_with_rules_trust";
    let Some(mut lab) = Lab::new(test) else {
        return;
    };
    let lab_ca = fs::read_to_string(lab.path("ca.pem")).unwrap();
    let key_path = lab.data_dir().join("egress-ca/ca.key");
    let mut isolations = vec!["container"];
    if has("runsc") {
        isolations.insert(0, "gvisor");
    }
    for (round, isolation) in isolations.into_iter().enumerate() {
        lab.sandboxd_args = vec!["--isolation".into(), isolation.into()];
        lab.start_sandboxd(&[]);
        let (lab_ca, key_path) = (lab_ca.clone(), key_path.clone());
        lab.with_api(|api| async move {
            let clock = Instant::now();
            let ruled = api
                .create(
                    Some(true),
                    Some(serde_json::json!({"rules": {
                        "allowed.test": [{"transform": {"headers": {"X-Proof": proof()}}}],
                        "untrusted.test": [{"transform": {"headers": {"X-Proof": proof()}}}],
                    }})),
                )
                .await;
            let ruled_create = clock.elapsed();
            // The CA was made for this sandbox: root-only on the host.
            let mode = |p: &Path| {
                use std::os::unix::fs::PermissionsExt as _;
                fs::metadata(p).unwrap().permissions().mode() & 0o777
            };
            assert_eq!(mode(&key_path), 0o600, "{isolation}");
            assert_eq!(mode(key_path.parent().unwrap()), 0o700, "{isolation}");
            let ca = fs::read_to_string(key_path.with_file_name("ca.pem")).unwrap();
            let ca_line = ca.lines().nth(3).unwrap().to_owned();

            // curl verifies (no -k) against the sandbox's bundle and the rule's header
            // replaces the forged one inside TLS.
            let seen = body(&ruled, "-H 'X-Proof: forged' https://allowed.test/headers").await;
            assert!(seen.starts_with("203.0.113.10\n"), "{isolation}: {seen}");
            assert!(
                seen.contains(&format!("x-proof: {}\n", proof())),
                "{isolation}: {seen}"
            );
            assert!(!seen.contains("forged"), "{isolation}: {seen}");
            // Python's default context (the system bundle) trusts it too.
            ruled.files().write("/tmp/peer.py", PEER).await.unwrap();
            ruled
                .files()
                .write("/tmp/lab-ca.pem", lab_ca.clone())
                .await
                .unwrap();
            let issuer = sh(&ruled, "python3 /tmp/peer.py allowed.test").await;
            assert_eq!(
                issuer, "courier-sandboxd egress interception CA\n",
                "{isolation}"
            );
            // A name without a rule (same address, same port) gets no leaf: the
            // sandbox sees the server's own certificate, spliced untouched.
            let issuer = sh(&ruled, "python3 /tmp/peer.py other.test /tmp/lab-ca.pem").await;
            assert_eq!(issuer, "Egress Lab Test CA\n", "{isolation}");
            // A destination whose certificate does not verify on the host: a 502
            // naming why, never its answer (nor the header).
            let seen = body(
                &ruled,
                "-w '\\n%{http_code}' https://untrusted.test/headers",
            )
            .await;
            assert!(seen.ends_with("\n502"), "{isolation}: {seen}");
            assert!(
                seen.contains("TLS to untrusted.test failed") && seen.contains("certificate"),
                "{isolation}: {seen}"
            );
            assert!(!seen.contains(PROOF_B), "{isolation}: {seen}");

            // Figures (printed, not asserted): HTTPS through the interception (the first
            // request of a round may mint the leaf) and spliced, as curl times them.
            let times = |url: &str| {
                format!(
                    "for i in 1 2 3; do curl -sS -k -o /dev/null -w '%{{time_total}} ' {url}; done"
                )
            };
            let intercepted = sh(&ruled, &times("https://allowed.test/")).await;
            let spliced = sh(&ruled, &times("https://other.test/")).await;
            eprintln!(
                "{isolation}: curl time_total s, intercepted: {intercepted}| spliced: {spliced}"
            );

            // A sandbox without rules: the bundle is the template's, TLS untouched.
            let clock = Instant::now();
            let plain = api.create(Some(true), None).await;
            let plain_create = clock.elapsed();
            // A second create with rules: the CA is loaded by then (the first one may
            // have made it, and was the server's first create).
            let clock = Instant::now();
            let again = api
                .create(
                    Some(true),
                    Some(serde_json::json!({"rules": {
                        "allowed.test": [{"transform": {"headers": {"X-Proof": proof()}}}],
                    }})),
                )
                .await;
            let again_create = clock.elapsed();
            again.kill().await.unwrap();
            eprintln!(
                "{isolation}: create with rules, first {ruled_create:?}, second \
                 {again_create:?}; without rules {plain_create:?}"
            );
            plain.files().write("/tmp/peer.py", PEER).await.unwrap();
            plain
                .files()
                .write("/tmp/lab-ca.pem", lab_ca.clone())
                .await
                .unwrap();
            let issuer = sh(&plain, "python3 /tmp/peer.py allowed.test /tmp/lab-ca.pem").await;
            assert_eq!(issuer, "Egress Lab Test CA\n", "{isolation}");
            let count = format!("grep -cF '{ca_line}' /etc/ssl/certs/ca-certificates.crt; true");
            assert_eq!(sh(&plain, &count).await, "0\n", "{isolation}");
            assert_eq!(sh(&ruled, &count).await, "1\n", "{isolation}");
            // Rules added live to a sandbox created without any: its TLS to the host is
            // intercepted, and fails verification there (curl exits 60) rather than
            // leaving without the header.
            let (status, answer) = api
                .put_network(
                    plain.id(),
                    serde_json::json!({"rules": {
                        "allowed.test": [{"transform": {"headers": {"X-Proof": proof()}}}],
                    }}),
                )
                .await;
            assert_eq!(status, 204, "{answer}");
            let rc = sh(
                &plain,
                "curl -sS -o /dev/null https://allowed.test/ 2>/dev/null; echo $?",
            )
            .await;
            assert_eq!(rc, "60\n", "{isolation}");

            // The attacker inside sees the CA's certificate, never its key: not at the
            // host's path, and (once) nowhere in the sandbox's files or processes.
            let probe = format!(
                "test -e '{}' && echo present || echo absent",
                key_path.display()
            );
            assert_eq!(sh(&ruled, &probe).await, "absent\n", "{isolation}");
            if round == 0 {
                let key = fs::read_to_string(&key_path).unwrap();
                let line = key.lines().nth(2).unwrap();
                let (a, b) = line.split_at(line.len() / 2);
                ruled.files().write("/tmp/scan.py", SCAN).await.unwrap();
                let found = ruled
                    .commands()
                    .run(format!("python3 /tmp/scan.py '{a}' '{b}' '{a}' '{b}'"))
                    .user("root")
                    .timeout(Duration::from_secs(450))
                    .await
                    .unwrap()
                    .stdout;
                assert!(
                    found.ends_with(" hits []\n"),
                    "the CA key is readable: {found}"
                );
                eprintln!("{isolation}: CA key scan: {}", found.trim());
            }
            eprintln!("{isolation}: HTTPS transforms, 502 and untouched splice checked");
            ruled.kill().await.unwrap();
            plain.kill().await.unwrap();
        });
        lab.stop_sandboxd();
    }
    let log = lab.log();
    let key = fs::read_to_string(&key_path).unwrap();
    assert!(
        !log.contains(key.lines().nth(2).unwrap()),
        "the CA key is in the log"
    );
    assert!(!log.contains(PROOF_B), "a value is in the server's log");
    assert!(log.contains("TLS to untrusted.test failed"), "{log}");
}
