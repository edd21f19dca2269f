//! The test's world: its network namespaces, test hosts and courier-sandboxd.

use super::probes::{Api, Fetch, curl_script};
use super::*;

/// The test's world: two network namespaces, their test hosts, and courier-sandboxd.
pub(crate) struct Lab {
    /// The process holding sandboxd's namespace.
    pub(crate) ns: Child,
    /// The process holding the outside namespace.
    pub(crate) outside_ns: Child,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) hosts: Vec<Child>,
    pub(crate) sandboxd: Option<Child>,
    /// More arguments for courier-sandboxd (e.g. `--isolation container`).
    pub(crate) sandboxd_args: Vec<String>,
}

/// A process in a new network namespace, holding it until killed.
pub(crate) fn namespace_holder() -> Child {
    #[allow(clippy::zombie_processes)] // returned to the Lab, which kills and waits for it
    let child = Command::new("unshare")
        .args(["--net", "--", "sleep", "infinity"])
        .spawn()
        .expect("unshare --net");
    // Wait until it runs in its own namespace.
    let mine = fs::read_link("/proc/self/ns/net").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let exe = fs::read_link(format!("/proc/{}/exe", child.id())).unwrap_or_default();
        let ns = fs::read_link(format!("/proc/{}/ns/net", child.id())).ok();
        if exe.ends_with("sleep") && ns.is_some_and(|ns| ns != mine) {
            return child;
        }
        assert!(Instant::now() < deadline, "unshare --net did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `ip args` inside `holder`'s network namespace.
pub(crate) fn ip(holder: &Child, args: &[&str]) {
    let pid = holder.id().to_string();
    let mut all = vec!["-t", pid.as_str(), "-n", "--", "ip"];
    all.extend_from_slice(args);
    run("nsenter", &all);
}

impl Lab {
    pub(crate) fn new(test: &str) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            unavailable(test, "network namespaces and sandboxes need root");
            return None;
        }
        for tool in [
            "ip",
            "nsenter",
            "unshare",
            "python3",
            "openssl",
            "curl",
            "slirp4netns",
        ] {
            if !has(tool) {
                unavailable(test, &format!("{tool} is not installed"));
                return None;
            }
        }
        let mut lab = Lab {
            ns: namespace_holder(),
            outside_ns: namespace_holder(),
            dir: tempfile::tempdir().expect("tempdir"),
            hosts: Vec::new(),
            sandboxd: None,
            sandboxd_args: Vec::new(),
        };
        lab.build_network();
        lab.start_hosts();
        Some(lab)
    }

    pub(crate) fn build_network(&self) {
        let (s, o) = (&self.ns, &self.outside_ns);
        let outside_pid = o.id().to_string();
        ip(s, &["link", "set", "lo", "up"]);
        ip(o, &["link", "set", "lo", "up"]);
        ip(
            s,
            &[
                "link",
                "add",
                "v-host",
                "type",
                "veth",
                "peer",
                "name",
                "v-out",
                "netns",
                &outside_pid,
            ],
        );
        for addr in ["10.77.0.1/24", "198.51.100.1/24"] {
            ip(s, &["addr", "add", addr, "dev", "v-host"]);
        }
        ip(s, &["link", "set", "v-host", "up"]);
        ip(s, &["route", "add", "default", "via", "10.77.0.2"]);
        ip(o, &["addr", "add", "10.77.0.2/24", "dev", "v-out"]);
        for addr in [
            "10.77.0.5",
            "10.77.0.6",
            "10.77.0.53",
            "169.254.169.254",
            "203.0.113.10",
            "203.0.113.20",
        ] {
            ip(o, &["addr", "add", &format!("{addr}/32"), "dev", "v-out"]);
        }
        ip(o, &["link", "set", "v-out", "up"]);
        ip(o, &["route", "add", "198.51.100.0/24", "dev", "v-out"]);
        fs::write(self.path("resolv.conf"), "nameserver 10.77.0.53\n").unwrap();
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn start_hosts(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/egress_lab.py");
        // The lab's own CA (trusted by courier-sandboxd's upstream verifier through
        // `--egress-upstream-ca`, never by sandboxes) signs the outside's HTTPS
        // certificate; `untrusted.test` presents a self-signed one instead.
        let (ca, ca_key) = (self.path("ca.pem"), self.path("ca.key"));
        let (cert, key) = (self.path("cert.pem"), self.path("key.pem"));
        let (untrusted, untrusted_key) = (self.path("untrusted.pem"), self.path("untrusted.key"));
        let ext = self.path("leaf.ext");
        fs::write(
            &ext,
            "subjectAltName=DNS:allowed.test,DNS:api.allowed.test,DNS:other.test,\
             DNS:elsewhere.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let p = |p: &PathBuf| p.to_str().unwrap().to_owned();
        let csr = self.path("leaf.csr");
        for args in [
            vec![
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=Egress Lab Test CA",
                "-keyout",
                &p(&ca_key),
                "-out",
                &p(&ca),
            ],
            vec![
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=allowed.test",
                "-keyout",
                &p(&key),
                "-out",
                &p(&csr),
            ],
            vec![
                "x509",
                "-req",
                "-in",
                &p(&csr),
                "-CA",
                &p(&ca),
                "-CAkey",
                &p(&ca_key),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                &p(&ext),
                "-out",
                &p(&cert),
            ],
            vec![
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=untrusted.test",
                "-addext",
                "subjectAltName=DNS:untrusted.test",
                "-keyout",
                &p(&untrusted_key),
                "-out",
                &p(&untrusted),
            ],
        ] {
            run("openssl", &args);
        }
        let outside: Vec<String> = vec![
            "outside".into(),
            p(&cert),
            p(&key),
            p(&untrusted),
            p(&untrusted_key),
        ];
        for (ns, args) in [
            (self.outside_ns.id(), outside),
            (self.ns.id(), vec!["host".to_owned()]),
        ] {
            let mut child = Command::new("nsenter")
                .args(["-t", &ns.to_string(), "-n", "--", "python3"])
                .arg(&script)
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start test hosts");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(
                line.trim(),
                "ready",
                "test hosts in {ns}'s namespace did not start"
            );
            self.hosts.push(child);
        }
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.path("data")
    }

    /// Starts courier-sandboxd in the lab's namespace, `--egress-allow` each of
    /// `egress_allow`, and waits until it serves.
    pub(crate) fn start_sandboxd(&mut self, egress_allow: &[&str]) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("sandboxd.log"))
            .unwrap();
        let mut cmd = Command::new("unshare");
        // A private mount namespace in which /etc/resolv.conf names the lab's DNS, then
        // the lab's network namespace.
        cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                "mount --bind \"$1\" /etc/resolv.conf && ns=\"$2\" && shift 2 && \
                 exec nsenter --net=\"$ns\" -- \"$@\"",
            )
            .arg("sh")
            .arg(self.path("resolv.conf"))
            .arg(self.ns_path())
            .arg(support::sandboxd_binary())
            .args(["serve", "--data-dir"])
            .arg(self.data_dir())
            .args([
                "--api-addr",
                API,
                "--proxy-addr",
                PROXY,
                "--dev-api-key",
                KEY,
            ])
            .arg("--envd-binary")
            .arg(support::envd_binary())
            .arg("--kill-on-exit")
            .arg("--egress-upstream-ca")
            .arg(self.path("ca.pem"))
            .args(&self.sandboxd_args);
        for range in egress_allow {
            cmd.args(["--egress-allow", range]);
        }
        let child = cmd
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start courier-sandboxd");
        self.sandboxd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        while !self.in_namespace(|| std::net::TcpStream::connect(API).is_ok()) {
            let exited = self.sandboxd.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "courier-sandboxd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.path("sandboxd.log")).unwrap_or_default()
    }

    /// Kills courier-sandboxd with SIGKILL (its sandboxes stay, as after a crash).
    pub(crate) fn crash_sandboxd(&mut self) {
        if let Some(mut child) = self.sandboxd.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Stops courier-sandboxd with SIGTERM: `--kill-on-exit` kills its sandboxes.
    pub(crate) fn stop_sandboxd(&mut self) {
        let Some(mut child) = self.sandboxd.take() else {
            return;
        };
        // Best effort: a server already gone is what this waits for anyway.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Last resort after SIGTERM; a process already gone needs neither.
        let _ = child.kill();
        let _ = child.wait();
    }

    /// sandboxd's network namespace.
    pub(crate) fn ns_path(&self) -> String {
        format!("/proc/{}/ns/net", self.ns.id())
    }

    /// Runs `f` on a thread inside the lab's (sandboxd's) network namespace.
    pub(crate) fn in_namespace<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = fs::File::open(self.ns_path()).unwrap();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                        .expect("enter the lab's network namespace");
                    f()
                })
                .join()
                .expect("lab thread")
        })
    }

    /// Runs the async `f` with an API client, inside the lab's network namespace.
    pub(crate) fn with_api<T, F>(&self, f: impl FnOnce(Api) -> F + Send) -> T
    where
        T: Send,
        F: std::future::Future<Output = T>,
    {
        self.in_namespace(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f(Api::new()))
        })
    }

    /// The host PID of sandbox `id`'s PID 1, from the runtime's state.
    pub(crate) fn init_pid(&self, id: &str) -> i32 {
        let state = self
            .data_dir()
            .join("runtime/sandboxes")
            .join(id)
            .join("state.json");
        let state: serde_json::Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
        state["handle"]["init_pid"].as_i64().unwrap() as i32
    }

    /// `curl` run on the host but inside sandbox `pid`'s network namespace: the same
    /// path out (tap0, slirp4netns) as a process inside the sandbox, usable when
    /// courier-sandboxd (and so envd's API) is down.
    pub(crate) fn curl_from_sandbox_netns(&self, pid: i32, url: &str) -> Fetch {
        let out = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "--", "sh", "-c"])
            .arg(curl_script(url))
            .output()
            .unwrap();
        Fetch::parse(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_sandboxd();
        // Cleanup: a process already gone needs neither kill nor wait.
        for mut host in self.hosts.drain(..) {
            let _ = host.kill();
            let _ = host.wait();
        }
        // The namespaces (and the veth pair) go with their last process.
        for holder in [&mut self.ns, &mut self.outside_ns] {
            let _ = holder.kill();
            let _ = holder.wait();
        }
        if std::thread::panicking() {
            eprintln!("courier-sandboxd log:\n{}", self.log());
        }
    }
}
