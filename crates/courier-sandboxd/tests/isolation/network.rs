//! Outbound network: only when asked for, and never to the host's loopback.

use super::*;

/// The host's IPv4 address on the interface that routes outwards (a UDP "connect" sends
/// nothing; it only picks the source address).
pub(crate) fn host_address() -> Option<std::net::Ipv4Addr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.254:9").ok()?;
    match socket.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// A tiny HTTP server on `addr` answering every request with `body`; returns its port.
pub(crate) fn serve_text(addr: &str, body: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(addr).expect("bind test server");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            // A client that went away gets no answer; the test sees that on its side.
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn outbound_network_only_when_asked_for_and_never_to_host_loopback() {
    let Some(fx) = Fixture::new("network") else {
        return;
    };
    let mut spec = fx.sleeper();
    spec.allow_internet = true;
    if courier_sandboxd::runtime::network::find_slirp4netns().is_none() {
        let err = fx.runtime.create(spec).expect_err("no slirp4netns");
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("slirp4netns"), "{err}");
        eprintln!("slirp4netns is not installed: only the refusal was checked");
        return;
    }
    let Some(host_ip) = host_address() else {
        eprintln!("skipping the reachability part: this host has no outward IPv4 address");
        return;
    };
    let public_port = serve_text("0.0.0.0:0", "hello from outside");
    let loopback_port = serve_text("127.0.0.1:0", "host loopback secret");
    // The host's own addresses are internal to sandboxes; the operator's allow list opens
    // this one, as `--egress-allow` would (tests/egress.rs checks the refusal).
    let allow = vec![courier_sandboxd::egress::Cidr::host(host_ip.into()).into()];
    spec.egress =
        courier_sandboxd::egress::Egress::new(allow).sandbox(&spec.id, Default::default());

    let networked = fx.runtime.create(spec).expect("create with internet");
    let isolated = fx.runtime.create(fx.sleeper()).expect("create without");

    let ifaces = fx.sh_ok(&networked.id, "tail -n +3 /proc/net/dev | cut -d: -f1");
    let mut ifaces: Vec<&str> = ifaces.split_whitespace().collect();
    ifaces.sort();
    assert_eq!(ifaces, ["lo", "tap0"]);
    let resolv = fx.sh_ok(&networked.id, "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 10.0.2.3"), "{resolv}");

    let url = format!("http://{host_ip}:{public_port}/");
    assert_eq!(
        fx.sh_ok(&networked.id, &format!("curl -sS -m 10 {url}")),
        "hello from outside"
    );
    let out = fx.sh(&isolated.id, &format!("curl -sS -m 5 {url}"));
    assert!(
        !out.status.success(),
        "a sandbox without internet reached {url}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for target in [
        format!("http://10.0.2.2:{loopback_port}/"),
        format!("http://127.0.0.1:{loopback_port}/"),
    ] {
        let out = fx.sh(&networked.id, &format!("curl -sS -m 5 {target}"));
        assert!(
            !out.status.success(),
            "the sandbox reached the host's loopback via {target}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // slirp4netns runs in the sandbox's cgroup and dies with it.
    let cgroup = fx.runtime.cgroups().sandbox(&networked.id);
    let slirp: Vec<i32> = cgroup
        .pids()
        .into_iter()
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "slirp4netns")
        })
        .collect();
    assert_eq!(slirp.len(), 1, "one slirp4netns in the sandbox's cgroup");
    fx.runtime.kill(&networked.id).expect("kill");
    assert!(!alive(slirp[0]), "slirp4netns survived the sandbox");
}

/// `create_network_pending` lets the sandbox's init start while slirp4netns configures
/// `tap0`; `wait_network` then waits for it. Attacker inside a sandbox: nothing of the
/// tenant's runs before the wait (the server calls it before answering the create), and
/// the stack is the sandbox's own — its slirp4netns is in the sandbox's cgroup, serves no
/// other sandbox (two sandboxes get two processes) and dies with it, so a later sandbox
/// can never be handed a stack (and its addresses, routes or connections) another used.
#[test]
fn pending_network_is_up_after_wait_and_each_sandbox_has_its_own_stack() {
    let Some(fx) = Fixture::new("pending network") else {
        return;
    };
    if courier_sandboxd::runtime::network::find_slirp4netns().is_none() {
        eprintln!("slirp4netns is not installed: nothing to check");
        return;
    }
    let slirp_of = |id: &str| -> Vec<i32> {
        fx.runtime
            .cgroups()
            .sandbox(id)
            .pids()
            .into_iter()
            .filter(|pid| {
                fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "slirp4netns")
            })
            .collect()
    };
    let mut first = fx.sleeper();
    first.allow_internet = true;
    let first = fx.runtime.create_network_pending(first).expect("create");
    fx.runtime.wait_network(&first.id).expect("network up");
    // A second wait has nothing left to wait for.
    fx.runtime.wait_network(&first.id).expect("second wait");
    // The default route through slirp4netns's gateway (10.0.2.2, little-endian hex).
    let routes = fx.sh_ok(&first.id, "cat /proc/net/route");
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("tap0") && l.split_whitespace().nth(2) == Some("0202000A")),
        "no default route via tap0 after wait_network:\n{routes}"
    );

    let mut second = fx.sleeper();
    second.allow_internet = true;
    let second = fx.runtime.create_network_pending(second).expect("create");
    fx.runtime.wait_network(&second.id).expect("network up");
    let (a, b) = (slirp_of(&first.id), slirp_of(&second.id));
    assert_eq!(
        (a.len(), b.len()),
        (1, 1),
        "one slirp4netns each: {a:?} {b:?}"
    );
    assert_ne!(a, b, "two sandboxes share a network stack");
    // Inside gVisor every sandbox has its own kernel, whose one network namespace always
    // reads `net:[1]`: separate stacks show in the two slirp4netns processes above.
    if support::isolation() == courier_sandboxd::runtime::Isolation::Container {
        let netns = |id: &str| fx.sh_ok(id, "readlink /proc/self/ns/net");
        assert_ne!(
            netns(&first.id),
            netns(&second.id),
            "two sandboxes share a network namespace"
        );
    }

    fx.runtime.kill(&first.id).expect("kill");
    assert!(!alive(a[0]), "a killed sandbox's slirp4netns lives on");
    assert!(alive(b[0]), "killing one sandbox ended another's network");

    // Without internet there is nothing to wait for; an unknown id is named.
    let isolated = fx
        .runtime
        .create_network_pending(fx.sleeper())
        .expect("create");
    fx.runtime
        .wait_network(&isolated.id)
        .expect("no network, no wait");
    let err = fx.runtime.wait_network("no-such-sandbox").unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
}
