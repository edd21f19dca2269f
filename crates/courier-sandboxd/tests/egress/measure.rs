//! Measurements of the supervisor's, the domain proxy's and the transform proxy's costs
//! (ignored by default).

use super::lab::{Lab, namespace_holder};
use super::*;

/// Connect latency added by the supervisor and throughput of the direct path and of the
/// domain proxy, printed (run with `-- --ignored --nocapture`, ideally `--release`).
/// Two network namespaces stand in for sandboxes: one behind slirp4netns attached as
/// courier-sandboxd does (filter + supervisor), one behind a plain slirp4netns.
#[test]
#[ignore = "a measurement, not a check: run by hand"]
fn measure_connect_latency_and_proxy_throughput() {
    let Some(lab) = Lab::new("measure_connect_latency_and_proxy_throughput") else {
        return;
    };
    let supervised = namespace_holder();
    let plain = namespace_holder();
    let egress = Egress::new(Vec::new()).sandbox("measure", EgressRules::default());
    let log = lab.path("supervised.log");
    let resolv = lab.path("resolv.conf");
    let (mut attached, mut unsupervised) = lab.in_namespace(|| {
        // This thread (and the supervisor and domain proxy threads it starts) resolve
        // through the lab's DNS, as courier-sandboxd does in the other tests.
        use nix::mount::{MsFlags, mount};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
        let none: Option<&str> = None;
        mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).unwrap();
        mount(
            Some(&resolv),
            "/etc/resolv.conf",
            none,
            MsFlags::MS_BIND,
            none,
        )
        .unwrap();
        let program = network::find_slirp4netns().unwrap();
        let attached =
            network::attach(&program, supervised.id() as i32, &[], &log, &egress).expect("attach");
        // The same flags, no egress filter (in a private mount namespace, see the module
        // docs).
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(&program)
            .args([
                "--configure",
                "--mtu=65520",
                "--disable-host-loopback",
                "--enable-sandbox",
                "--enable-seccomp",
                &plain.id().to_string(),
                "tap0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (attached, child)
    });
    std::thread::sleep(Duration::from_secs(1));

    let connects = "import socket, time\n\
        times = []\n\
        for _ in range(200):\n\
        \x20   start = time.perf_counter()\n\
        \x20   socket.create_connection(('203.0.113.10', 8080), timeout=5).close()\n\
        \x20   times.append((time.perf_counter() - start) * 1e6)\n\
        times.sort()\n\
        print(f'p50 {times[99]:.0f} us, p90 {times[179]:.0f} us, max {times[-1]:.0f} us')\n";
    let in_ns = |holder: &Child, program: &str, args: &[&str]| {
        let out = Command::new("nsenter")
            .args(["-t", &holder.id().to_string(), "-n", "--", program])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let speed = |holder: &Child, args: &[&str]| {
        let mut all = vec!["-sS", "-o", "/dev/null", "-w", "%{speed_download}"];
        all.extend_from_slice(args);
        let bytes_per_s: f64 = in_ns(holder, "curl", &all).parse().unwrap_or(0.0);
        format!("{:.0} MB/s", bytes_per_s / 1e6)
    };
    // Warm up both paths (ARP, first connections).
    in_ns(&supervised, "python3", &["-c", connects]);
    in_ns(&plain, "python3", &["-c", connects]);
    println!("200 TCP connects to the public stand-in (connect + close):");
    println!(
        "  plain slirp4netns:      {}",
        in_ns(&plain, "python3", &["-c", connects])
    );
    println!(
        "  filter + supervisor:    {}",
        in_ns(&supervised, "python3", &["-c", connects])
    );
    let big = "http://203.0.113.10/bytes/500000000";
    println!("500 MB download, direct:");
    println!("  plain slirp4netns:      {}", speed(&plain, &[big]));
    println!("  filter + supervisor:    {}", speed(&supervised, &[big]));
    egress.set_rules(
        EgressRules::parse(&["allowed.test".to_owned()], &["0.0.0.0/0".to_owned()], "").unwrap(),
    );
    let via_proxy = [
        "--resolve",
        "allowed.test:80:203.0.113.10",
        "http://allowed.test/bytes/500000000",
    ];
    println!(
        "  through the domain proxy: {}",
        speed(&supervised, &via_proxy)
    );
    // The transform proxy: the same download, then 200 requests on one keep-alive
    // connection, with and without a transform rule for the address.
    let requests = "import http.client, time\n\
        c = http.client.HTTPConnection('203.0.113.10', 80, timeout=5)\n\
        times = []\n\
        for _ in range(200):\n\
        \x20   start = time.perf_counter()\n\
        \x20   c.request('GET', '/headers')\n\
        \x20   c.getresponse().read()\n\
        \x20   times.append((time.perf_counter() - start) * 1e6)\n\
        times.sort()\n\
        print(f'p50 {times[99]:.0f} us, p90 {times[179]:.0f} us, max {times[-1]:.0f} us')\n";
    egress.set_rules(EgressRules::default());
    println!("200 GETs on one keep-alive connection:");
    println!(
        "  no rules (spliced by slirp4netns only): {}",
        in_ns(&supervised, "python3", &["-c", requests])
    );
    let transform = courier_sandboxd::egress::TransformRules::parse(
        Some(&serde_json::json!({"203.0.113.10": [{"transform": {"headers": {"X-Proof": "p"}}}]})),
        "rules",
    )
    .unwrap();
    egress.set_rules(EgressRules::default().with_transforms(transform));
    println!(
        "  through the transform proxy:           {}",
        in_ns(&supervised, "python3", &["-c", requests])
    );
    println!(
        "500 MB download through the transform proxy: {}",
        speed(&supervised, &[big])
    );
    attached.kill().unwrap();
    attached.wait().unwrap();
    // Cleanup: a process already gone needs neither kill nor wait.
    let _ = unsupervised.kill();
    let _ = unsupervised.wait();
    for mut holder in [supervised, plain] {
        let _ = holder.kill();
        let _ = holder.wait();
    }
}
