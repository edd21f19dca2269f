//! Isolation and lifecycle tests against real sandboxes.
//!
//! They need root (namespaces, mounts, cgroups); without it each test prints why and
//! returns early. Every sandbox is killed by the fixture's `Drop`, even when a test fails.
//! Timing checks use generous margins: the machine may be loaded.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use courier_sandboxd::Error;
use courier_sandboxd::runtime::{
    BindMount, ExecOptions, Isolation, Limits, RecoverPolicy, Runtime, RuntimeConfig, SandboxSpec,
    SandboxStatus,
};

mod support;

const HELPER: &str = env!("CARGO_BIN_EXE_courier-sandbox-init");

struct Fixture {
    runtime: Runtime,
    config: RuntimeConfig,
    base: PathBuf,
    dir: tempfile::TempDir,
    isolation: Isolation,
}

impl Fixture {
    /// A runtime on a fresh data dir with a fresh base layer, or `None` when not root.
    fn new(test: &str) -> Option<Self> {
        if !support::root_or_skip(test) {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let base = courier_sandboxd::base_layer::assemble(&dir.path().join("layers/base"))
            .expect("base layer");
        let mut config = RuntimeConfig::new(dir.path().join("data"));
        config.helper = PathBuf::from(HELPER);
        let isolation = support::isolation();
        if isolation == Isolation::Gvisor {
            let runsc = courier_sandboxd::runtime::gvisor::find_runsc().expect("runsc installed");
            config.runsc = Some(
                courier_sandboxd::runtime::gvisor::probe(&runsc, &dir.path().join("probe"))
                    .expect("runsc works"),
            );
        }
        let runtime = Runtime::with_config(config.clone()).expect("runtime");
        Some(Self {
            runtime,
            config,
            base,
            dir,
            isolation,
        })
    }

    fn gvisor(&self) -> bool {
        self.isolation == Isolation::Gvisor
    }

    /// The init's pid inside: 2 under the runtime's own PID 1, 1 under gVisor.
    fn init_pid(&self) -> u32 {
        if self.gvisor() { 1 } else { 2 }
    }

    fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// A spec with a unique id (cgroups are host-global) running `init args`.
    fn spec(&self, init: &str, args: &[&str]) -> SandboxSpec {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let mut spec = SandboxSpec::new(id, vec![self.base.clone()], init, args);
        spec.isolation = self.isolation;
        spec
    }

    fn sleeper(&self) -> SandboxSpec {
        self.spec("/bin/sleep", &["infinity"])
    }

    /// A sleeper with the host file `source` bound read-only at `target`.
    fn with_file(&self, source: &Path, target: &str) -> SandboxSpec {
        let mut spec = self.sleeper();
        spec.binds.push(BindMount {
            source: source.to_path_buf(),
            target: target.into(),
            readonly: true,
            map_user: false,
        });
        spec
    }

    /// Runs `sh -c script` inside sandbox `id` and returns its output.
    fn sh(&self, id: &str, script: &str) -> Output {
        self.runtime
            .command(id, "/bin/sh")
            .expect("command")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .expect("run in sandbox")
    }

    fn sh_ok(&self, id: &str, script: &str) -> String {
        let out = self.sh(id, script);
        assert!(
            out.status.success(),
            "`{script}` failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Err(e) = self.runtime.kill_all() {
            eprintln!("fixture cleanup in {}: {e}", self.dir.path().display());
        }
        // Also whatever other runtimes on this data dir left behind (e.g. a test that
        // failed between a simulated crash and its recovery).
        match self.runtime.recover(RecoverPolicy::KillAll) {
            Ok(report) if !report.failed.is_empty() => {
                eprintln!("fixture cleanup failed: {:?}", report.failed)
            }
            Ok(_) => {}
            Err(e) => eprintln!("fixture cleanup in {}: {e}", self.dir.path().display()),
        }
    }
}

/// Whether the data of the sparse file `image` contains `needle` (only the allocated
/// ranges are read).
fn image_contains(image: &Path, needle: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::fd::AsFd;
    let mut file = fs::File::open(image).expect("open image");
    let len = file.metadata().unwrap().len() as i64;
    let mut pos = 0i64;
    while pos < len {
        let Ok(start) = nix::unistd::lseek(file.as_fd(), pos, nix::unistd::Whence::SeekData) else {
            break;
        };
        let end = nix::unistd::lseek(file.as_fd(), start, nix::unistd::Whence::SeekHole).unwrap();
        let mut buf = vec![0u8; (end - start) as usize];
        file.seek(SeekFrom::Start(start as u64)).unwrap();
        file.read_exact(&mut buf).unwrap();
        if buf.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        pos = end;
    }
    false
}

fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        })
        .unwrap_or(false)
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

/// Every mount line of every process on the host that mentions `path`.
fn mounts_mentioning(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(info) = fs::read_to_string(entry.path().join("mountinfo")) {
            found.extend(
                info.lines()
                    .filter(|l| l.contains(&needle))
                    .map(|l| format!("{:?}: {l}", entry.path())),
            );
        }
    }
    found
}

#[test]
fn sandbox_sees_only_its_own_processes_network_and_hostname() {
    let Some(fx) = Fixture::new("isolation") else {
        return;
    };
    let sbx = fx.runtime.create(fx.sleeper()).expect("create");
    assert!(alive(sbx.init_pid));

    let pids = fx.sh_ok(&sbx.id, "for p in /proc/[0-9]*; do echo ${p#/proc/}; done");
    let pids: Vec<u32> = pids.lines().map(|l| l.parse().unwrap()).collect();
    // PID 1 (the reaper; under gVisor the init), the init, the shell and maybe its
    // subshell.
    assert!(
        pids.contains(&1) && pids.contains(&fx.init_pid()),
        "{pids:?}"
    );
    assert!(
        pids.len() <= 5 && pids.iter().all(|p| *p < 20),
        "host processes visible: {pids:?}"
    );
    assert_eq!(
        fx.sh_ok(&sbx.id, &format!("cat /proc/{}/comm", fx.init_pid()))
            .trim(),
        "sleep"
    );

    assert_eq!(
        fx.sh_ok(&sbx.id, "cat /proc/sys/kernel/hostname").trim(),
        sbx.id
    );
    let ifaces = fx.sh_ok(&sbx.id, "tail -n +3 /proc/net/dev | cut -d: -f1");
    assert_eq!(
        ifaces.split_whitespace().collect::<Vec<_>>(),
        ["lo"],
        "only loopback"
    );

    // Root inside is bounded: no CAP_SYS_ADMIN, so no mounting.
    let out = fx.sh(&sbx.id, "mount -t tmpfs none /mnt");
    assert!(!out.status.success(), "mount inside the sandbox must fail");
}

#[test]
fn sandboxes_see_neither_each_others_files_nor_host_private_paths() {
    let Some(fx) = Fixture::new("files") else {
        return;
    };
    let a = fx.runtime.create(fx.sleeper()).expect("create a");
    let b = fx.runtime.create(fx.sleeper()).expect("create b");

    let marker = format!("secret-{}-{}", std::process::id(), a.id);
    fx.sh_ok(
        &a.id,
        &format!(
            "echo {marker} > /home/user/a-secret && echo x > /usr/local/a-usr && echo t > /tmp/a-tmp && sync"
        ),
    );
    // Writes land on A's own disk (an image file the host never mounts), nowhere else.
    let a_disk = fx.data_dir().join("sandboxes").join(&a.id).join("disk.img");
    assert!(
        image_contains(&a_disk, marker.as_bytes()),
        "the write is not on A's disk"
    );
    let b_disk = fx.data_dir().join("sandboxes").join(&b.id).join("disk.img");
    assert!(!image_contains(&b_disk, marker.as_bytes()));
    assert!(
        !Path::new("/usr/local/a-usr").exists(),
        "a sandbox write reached the host's /usr"
    );
    assert!(
        !fx.base.join("rootfs/home/user/a-secret").exists(),
        "a sandbox write reached the layer"
    );

    fx.sh_ok(
        &b.id,
        "test ! -e /home/user/a-secret && test ! -e /usr/local/a-usr && test ! -e /tmp/a-tmp",
    );
    assert_eq!(
        fx.sh_ok(&b.id, "ls -A /root").trim(),
        "",
        "host /root must not be visible"
    );
    assert_eq!(fx.sh_ok(&b.id, "ls -A /home").trim(), "user");
    let data = fx.data_dir().display().to_string();
    fx.sh_ok(
        &b.id,
        &format!("test ! -e '{data}' && test ! -e /work && test ! -e /opt/skills"),
    );
    // Nor A's id: the host's loop devices (A's disk among them) name their images in
    // sysfs, and an id is a sandbox's address at the proxy.
    let sysfs = fx.sh_ok(
        &b.id,
        "cat /sys/block/*/loop/backing_file /sys/devices/virtual/block/*/loop/backing_file 2>/dev/null; true",
    );
    assert!(
        !sysfs.contains(&a.id),
        "A's disk is named in B's sysfs: {sysfs}"
    );

    // The base userland works and has the sandbox user.
    assert_eq!(fx.sh_ok(&b.id, "id -u user").trim(), "1000");
    fx.sh_ok(
        &b.id,
        "bash -c 'echo ok' && git --version && test -d /home/user",
    );
    if Path::new("/usr/bin/python3").exists() {
        fx.sh_ok(&b.id, "python3 -c 'print(1)'");
    }
}

/// Root inside is nobody outside, yet the sandbox's own `sudo` works: the user namespace
/// maps the sandbox's root to an unprivileged host id, and setuid binaries only gain
/// that id.
#[test]
fn sudo_works_inside_and_root_inside_is_an_unprivileged_host_id() {
    let Some(fx) = Fixture::new("sudo") else {
        return;
    };
    if fx.gvisor() {
        // gVisor ignores setuid bits; its sandboxes get sudo from envd's broker, which the
        // server-level tests cover.
        eprintln!("skipping: setuid sudo needs the container isolation");
        return;
    }
    let sbx = fx.runtime.create(fx.sleeper()).expect("create");
    let options = ExecOptions {
        user: Some((1000, 1000)),
        cwd: Some("/home/user".into()),
    };
    let out = fx
        .runtime
        .command_with(&sbx.id, "/bin/sh", &options)
        .unwrap()
        .args([
            "-c",
            "sudo -n id -u && sudo -n sh -c 'echo hi > /root/by-sudo && cat /root/by-sudo'",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{out:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\nhi\n");
    // uid 0 inside is the sandbox's own host id, not host root.
    let map = fx.sh_ok(&sbx.id, "cat /proc/self/uid_map");
    let fields: Vec<u64> = map.split_whitespace().map(|f| f.parse().unwrap()).collect();
    assert_eq!(fields[0], 0);
    assert!(fields[1] >= 1 << 30, "{map}");
    assert_eq!(fields[2], 65_536);
    let status = fs::read_to_string(format!("/proc/{}/status", sbx.init_pid)).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == fields[1].to_string()),
        "{uid_line}"
    );
}

/// Under gVisor the sandbox has a kernel of its own: it reports gVisor's version, answers
/// a system call gVisor does not implement with ENOSYS (the host's kernel implements
/// it: the call never reached the host), and its kernel log is gVisor's, not the host's.
#[test]
fn a_gvisor_sandbox_has_a_kernel_of_its_own() {
    let Some(fx) = Fixture::new("gvisor kernel") else {
        return;
    };
    if !fx.gvisor() {
        eprintln!("skipping: the container isolation shares the host's kernel by design");
        return;
    }
    let sbx = fx.runtime.create(fx.sleeper()).expect("create");
    let host_release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let host_version = fs::read_to_string("/proc/version").unwrap();
    let release = fx.sh_ok(&sbx.id, "uname -r");
    assert_ne!(release.trim(), host_release.trim());
    let version = fx.sh_ok(&sbx.id, "cat /proc/version");
    assert_ne!(version.trim(), host_version.trim());
    // sysfs(2) (option 3: the number of file system types): implemented by Linux, not by
    // gVisor's Sentry.
    let probe = "import ctypes, os; l = ctypes.CDLL(None, use_errno=True); \
                 r = l.syscall(139, 3); print(r, os.strerror(ctypes.get_errno()) if r < 0 else 'ok')";
    let inside = fx.sh_ok(&sbx.id, &format!("python3 -c '{probe}'"));
    assert!(inside.starts_with("-1 "), "{inside}");
    assert!(inside.contains("not implemented"), "{inside}");
    let on_host = std::process::Command::new("python3")
        .args(["-c", probe])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&on_host.stdout)
            .trim()
            .ends_with("ok"),
        "the host implements sysfs(2): {on_host:?}"
    );
    let dmesg = fx.sh(&sbx.id, "dmesg 2>&1 | head -3");
    let log = String::from_utf8_lossy(&dmesg.stdout);
    assert!(
        !log.contains(host_release.trim()),
        "the host's kernel log: {log}"
    );
}

#[test]
fn commands_can_run_as_the_sandbox_user() {
    let Some(fx) = Fixture::new("user") else {
        return;
    };
    let sbx = fx.runtime.create(fx.sleeper()).expect("create");
    let options = ExecOptions {
        user: Some((1000, 1000)),
        cwd: Some("/home/user".into()),
    };
    let out = fx
        .runtime
        .command_with(&sbx.id, "/bin/sh", &options)
        .unwrap()
        .args(["-c", "id -un; pwd; echo $HOME; touch mine && ls -n mine | cut -d' ' -f3; touch /root/x 2>/dev/null || echo denied"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "user\n/home/user\n/home/user\n1000\ndenied\n"
    );
}

#[test]
fn host_binary_can_be_bound_in_as_init() {
    let Some(fx) = Fixture::new("bind init") else {
        return;
    };
    let mut spec = fx.spec("/courier/init", &["infinity"]);
    spec.binds.push(BindMount {
        source: "/usr/bin/sleep".into(),
        target: "/courier/init".into(),
        readonly: true,
        map_user: false,
    });
    let sbx = fx.runtime.create(spec).expect("create");
    assert_eq!(
        fx.sh_ok(
            &sbx.id,
            &format!("cat /proc/{}/cmdline | tr '\\0' ' '", fx.init_pid())
        )
        .trim(),
        "/courier/init infinity"
    );
    assert!(
        !fx.sh(&sbx.id, "echo x > /courier/init").status.success(),
        "read-only bind is writable"
    );
}

/// Writes 8 MiB to `path` around the page cache (`O_DIRECT`): none of it is cached.
fn write_uncached(path: &Path) {
    let written = std::process::Command::new("dd")
        .args([
            "if=/dev/urandom",
            "bs=1M",
            "count=8",
            "oflag=direct",
            "status=none",
        ])
        .arg(format!("of={}", path.display()))
        .status()
        .unwrap();
    assert!(written.success());
    assert_eq!(resident_bytes(path), 0, "written around the page cache");
}

/// Bytes of `path` in the page cache (util-linux `fincore`).
fn resident_bytes(path: &Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("run fincore");
    assert!(out.status.success(), "fincore: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn an_ended_sandbox_leaves_no_page_cache_charged_to_it() {
    let Some(fx) = Fixture::new("page cache") else {
        return;
    };
    // A removed memory cgroup stays in the kernel, dying, while any page is charged to
    // it: sandboxes that read host files would leave one behind each, by the thousand on
    // a busy server (memory, and slower creates). What a sandbox read is reclaimed when
    // it ends.
    let blob = fx.dir.path().join("blob");
    write_uncached(&blob);
    let spec = fx.with_file(&blob, "/data/blob");
    let sbx = fx.runtime.create(spec).expect("create");
    fx.sh_ok(&sbx.id, "cat /data/blob > /dev/null");
    assert!(
        resident_bytes(&blob) >= 4 << 20,
        "the sandbox's read is cached"
    );
    fx.runtime.kill(&sbx.id).expect("kill");
    assert_eq!(resident_bytes(&blob), 0, "charged to the ended sandbox");
}

#[test]
fn a_preloaded_file_stays_cached_across_sandbox_ends() {
    let Some(fx) = Fixture::new("preload") else {
        return;
    };
    // What every sandbox runs (envd) is read on the runtime's account, so the reclaim
    // at each sandbox's end does not send the next create to the disk for it.
    let blob = fx.dir.path().join("envd-like");
    write_uncached(&blob);
    fx.runtime.preload(&blob);
    wait_for("the preload", Duration::from_secs(10), || {
        resident_bytes(&blob) == 8 << 20
    });
    let spec = fx.with_file(&blob, "/data/blob");
    let sbx = fx.runtime.create(spec).expect("create");
    fx.sh_ok(&sbx.id, "cat /data/blob > /dev/null");
    fx.runtime.kill(&sbx.id).expect("kill");
    assert_eq!(resident_bytes(&blob), 8 << 20);
}

#[test]
fn memory_hog_is_killed_at_its_limit() {
    let Some(fx) = Fixture::new("memory") else {
        return;
    };
    let mut spec = fx.sleeper();
    spec.limits = Limits {
        memory_mb: 64,
        ..Limits::default()
    };
    let sbx = fx.runtime.create(spec).expect("create");
    assert_eq!(
        fx.runtime.stats(&sbx.id).unwrap().memory_limit_bytes,
        Some(64 << 20)
    );

    let out = fx.sh(&sbx.id, "head -c 200m /dev/zero | tail > /dev/null");
    assert!(
        !out.status.success(),
        "a 200 MB hog survived a 64 MB limit: {out:?}"
    );
    if fx.gvisor() {
        // gVisor's kernel (the Sentry) is one host process charged for all of the
        // sandbox's memory: the host's OOM killer ends the whole sandbox, not one process
        // in it. The host and the runtime are fine, and kill cleans up.
        wait_for("the sandbox to end", Duration::from_secs(10), || {
            fx.runtime.status(&sbx.id).unwrap() == SandboxStatus::Exited
        });
        fx.runtime.kill(&sbx.id).unwrap();
        return;
    }
    // The sandbox itself survives its hog.
    assert_eq!(fx.runtime.status(&sbx.id).unwrap(), SandboxStatus::Running);
    fx.sh_ok(&sbx.id, "true");

    // Raising the limit lets the same allocation through.
    fx.runtime
        .update_limits(
            &sbx.id,
            Limits {
                memory_mb: 512,
                ..Limits::default()
            },
        )
        .unwrap();
    assert_eq!(
        fx.runtime.stats(&sbx.id).unwrap().memory_limit_bytes,
        Some(512 << 20)
    );
    fx.sh_ok(&sbx.id, "head -c 200m /dev/zero | tail > /dev/null");
}

#[test]
fn fork_bomb_stops_at_the_pids_limit() {
    let Some(fx) = Fixture::new("pids") else {
        return;
    };
    let mut spec = fx.sleeper();
    spec.limits = Limits {
        pids: 32,
        ..Limits::default()
    };
    let sbx = fx.runtime.create(spec).expect("create");

    let out = fx.sh(&sbx.id, "i=0; while [ $i -lt 100 ]; do sleep 60 > /dev/null 2>&1 & i=$((i+1)); done; echo all-spawned");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if fx.gvisor() {
        // Under gVisor the host tasks are the Sentry's threads and stubs: the pids limit
        // stops the sandbox's kernel from growing, which ends the sandbox. The host never
        // sees more than the limit.
        assert!(
            !stdout.contains("all-spawned"),
            "100 processes under pids=32"
        );
        assert!(fx.runtime.stats(&sbx.id).map_or(0, |s| s.pids) <= 32);
        fx.runtime.kill(&sbx.id).unwrap();
        return;
    }
    assert!(
        !stdout.contains("all-spawned"),
        "100 processes spawned under pids=32"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("fork"),
        "{out:?}"
    );
    assert!(fx.runtime.stats(&sbx.id).unwrap().pids <= 32);
}

#[test]
fn cpu_bound_loop_is_throttled_to_its_quota() {
    let Some(fx) = Fixture::new("cpu") else {
        return;
    };
    let mut spec = fx.sleeper();
    spec.limits = Limits {
        cpu_count: 0.5,
        ..Limits::default()
    };
    let sbx = fx.runtime.create(spec).expect("create");

    // Two busy loops: unthrottled they would use up to 2 CPUs.
    let mut hog = fx
        .runtime
        .command(&sbx.id, "/bin/sh")
        .unwrap()
        .args(["-c", "while :; do :; done & while :; do :; done"])
        .spawn()
        .expect("spawn loops");
    sleep(Duration::from_millis(500));
    let (cpu0, t0) = (
        fx.runtime.stats(&sbx.id).unwrap().cpu_usage_ns,
        Instant::now(),
    );
    sleep(Duration::from_secs(2));
    let (cpu1, t1) = (
        fx.runtime.stats(&sbx.id).unwrap().cpu_usage_ns,
        Instant::now(),
    );
    let _ = hog.kill();
    let _ = hog.wait();
    let ratio = (cpu1 - cpu0) as f64 / 1e9 / (t1 - t0).as_secs_f64();
    eprintln!("cpu ratio with quota 0.5: {ratio:.3}");
    assert!(
        ratio <= 0.75,
        "CPU use {ratio:.2} CPUs exceeds the 0.5 quota"
    );
    assert!(ratio > 0.02, "the loops did not run at all ({ratio:.3})");
}

#[test]
fn freeze_stops_processes_and_thaw_resumes_them() {
    let Some(fx) = Fixture::new("freeze") else {
        return;
    };
    let spec = fx.spec(
        "/bin/sh",
        &[
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done",
        ],
    );
    let sbx = fx.runtime.create(spec).expect("create");
    // The init counts on its console, which the runtime keeps on the host.
    let console = fx
        .data_dir()
        .join("sandboxes")
        .join(&sbx.id)
        .join("console.log");
    let counter = || {
        fs::read_to_string(&console)
            .ok()
            .and_then(|s| s.lines().last().and_then(|l| l.trim().parse::<u64>().ok()))
    };
    wait_for("the counter to start", Duration::from_secs(10), || {
        counter().is_some_and(|c| c > 2)
    });

    fx.runtime.freeze(&sbx.id).unwrap();
    assert_eq!(fx.runtime.status(&sbx.id).unwrap(), SandboxStatus::Frozen);
    assert!(matches!(
        fx.runtime.command(&sbx.id, "/bin/true"),
        Err(Error::NotRunning(_))
    ));
    let frozen_at = counter().unwrap();
    sleep(Duration::from_secs(1));
    assert_eq!(
        counter().unwrap(),
        frozen_at,
        "counter advanced while frozen"
    );

    fx.runtime.thaw(&sbx.id).unwrap();
    assert_eq!(fx.runtime.status(&sbx.id).unwrap(), SandboxStatus::Running);
    wait_for(
        "the counter to advance after thaw",
        Duration::from_secs(10),
        || counter().is_some_and(|c| c > frozen_at),
    );
}

#[test]
fn kill_leaves_no_process_mount_cgroup_or_directory() {
    let Some(fx) = Fixture::new("kill") else {
        return;
    };
    let sbx = fx.runtime.create(fx.sleeper()).expect("create");
    // A background process inside, detached from the init.
    fx.sh_ok(&sbx.id, "setsid sleep 600 > /dev/null 2>&1 < /dev/null &");
    let cgroup = fx.runtime.cgroups().sandbox(&sbx.id);
    let inside = cgroup.pids();
    assert!(
        inside.len() >= 4,
        "monitor, PID 1, init, background sleep: {inside:?}"
    );
    let dir = fx.data_dir().join("sandboxes").join(&sbx.id);
    assert!(dir.exists() && cgroup.exists());

    fx.runtime.kill(&sbx.id).expect("kill");
    for pid in inside {
        assert!(!alive(pid), "process {pid} survived kill");
    }
    assert!(!cgroup.exists(), "cgroup dirs left: {:?}", cgroup.dirs());
    assert!(!dir.exists(), "sandbox dir left");
    assert_eq!(mounts_mentioning(&dir), Vec::<String>::new());
    assert!(matches!(fx.runtime.kill(&sbx.id), Err(Error::NotFound(_))));
    assert!(matches!(
        fx.runtime.status(&sbx.id),
        Err(Error::NotFound(_))
    ));
}

/// The loop devices on the host whose image lies under `dir`.
fn loop_devices_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("loop/backing_file")).ok())
        .filter(|file| file.contains(&needle))
        .collect()
}

#[test]
fn ready_disks_are_fresh_private_and_gone_with_the_runtime() {
    let Some(fx) = Fixture::new("ready disks") else {
        return;
    };
    // Attack: a tenant writes into its disk hoping a later tenant is handed the same one
    // (a pool that recycles disks), or that a prepared disk is reachable before its
    // sandbox exists. Each ready disk is a fresh copy of the golden image, taken once.
    fx.runtime
        .prewarm_disks(courier_sandboxd::runtime::DEFAULT_DISK_MB);
    wait_for("two ready disks", Duration::from_secs(30), || {
        fx.runtime.ready_disks() == 2
    });
    let a = fx.runtime.create(fx.sleeper()).expect("create a");
    let b = fx.runtime.create(fx.sleeper()).expect("create b");
    fx.sh_ok(&a.id, "echo a-was-here > /home/user/mark && sync");
    fx.sh_ok(&b.id, "test ! -e /home/user/mark");
    // Each sandbox's image is its own (renamed out of the pool), holding only its writes.
    let image = |id: &str| fx.data_dir().join("sandboxes").join(id).join("disk.img");
    assert!(image_contains(&image(&a.id), b"a-was-here"));
    assert!(!image_contains(&image(&b.id), b"a-was-here"));
    // The writable layer still has its quota on a ready disk.
    let out = fx.sh(&a.id, "fallocate -l 5G /home/user/big");
    assert!(!out.status.success(), "5 GiB on a 4 GiB disk");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No space left"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The pool refills behind the creates; the next create takes a fresh disk again.
    wait_for("the pool refilled", Duration::from_secs(30), || {
        fx.runtime.ready_disks() == 2
    });
    let c = fx.runtime.create(fx.sleeper()).expect("create c");
    fx.sh_ok(&c.id, "test ! -e /home/user/mark");
    for id in [&a.id, &b.id, &c.id] {
        fx.runtime.kill(id).expect("kill");
    }
    // Ready disks hold loop devices; the runtime's end lets them go.
    let data = fx.data_dir().to_path_buf();
    assert!(
        !loop_devices_under(&data).is_empty(),
        "the pool holds its disks"
    );
    drop(fx);
    wait_for(
        "the pool's loop devices detached",
        Duration::from_secs(10),
        || loop_devices_under(&data).is_empty(),
    );
}

/// Children of this test process that are helpers still waiting for a task, with what
/// their descriptors point at.
fn waiting_helpers() -> Vec<(i32, Vec<String>)> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let parent = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1));
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .collect();
        if parent != Some(me.as_str()) || args.len() != 2 || args[1] != b"--courier-sandbox-helper"
        {
            continue;
        }
        // A helper with a task (a sandbox's monitor) has /dev/null on stdin; one still
        // waiting has its task channel there.
        let stdin = fs::read_link(entry.path().join("fd/0")).unwrap_or_default();
        if !stdin.to_string_lossy().starts_with("socket:") {
            continue;
        }
        let mut fds: Vec<String> = fs::read_dir(entry.path().join("fd"))
            .map(|dir| {
                dir.flatten()
                    .filter_map(|fd| {
                        let target = fs::read_link(fd.path()).ok()?;
                        Some(format!(
                            "{}={}",
                            fd.file_name().to_string_lossy(),
                            target.display()
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        fds.sort();
        found.push((pid, fds));
    }
    found
}

#[test]
fn the_next_helper_waits_holding_nothing_of_any_sandbox() {
    let Some(fx) = Fixture::new("waiting helper") else {
        return;
    };
    // Attack: a helper is host root; one started ahead of its task must not carry
    // anything of the sandbox created before it (its disk, console, control socket,
    // namespaces) for the next tenant's setup to inherit.
    // A descriptor the embedding process left inheritable by mistake.
    let stray = fs::File::open(fx.data_dir()).unwrap();
    nix::fcntl::fcntl(
        &stray,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .unwrap();
    let a = fx.runtime.create(fx.sleeper()).expect("create");
    wait_for("the next helper", Duration::from_secs(10), || {
        !waiting_helpers().is_empty()
    });
    let data = fx.data_dir().display().to_string();
    for (pid, fds) in waiting_helpers() {
        // Its task channel on stdin (and the copy it reads from), /dev/null where the
        // console will go, and the status pipe: nothing else, notably nothing its parent
        // happened to have open.
        let channel = fds.iter().find(|fd| fd.starts_with("0=")).unwrap()[2..].to_string();
        for fd in &fds {
            let (number, target) = fd.split_once('=').unwrap();
            let expected = target == channel
                || target == "/dev/null" && ["1", "2"].contains(&number)
                || number == "3" && target.starts_with("pipe:");
            assert!(expected, "helper {pid} holds {fd}: {fds:?}");
        }
        assert!(
            fds.iter()
                .all(|fd| !fd.contains(&data) && !fd.contains(&a.id)),
            "helper {pid} holds sandbox state: {fds:?}"
        );
    }
    // It is the one the next create uses, and the runtime's end takes the last one.
    let b = fx
        .runtime
        .create(fx.sleeper())
        .expect("create with the waiting helper");
    fx.sh_ok(&b.id, "true");
    drop(fx);
    wait_for("waiting helpers gone", Duration::from_secs(10), || {
        waiting_helpers().is_empty()
    });
}

#[test]
fn a_sandbox_dies_with_its_runtime_unless_released() {
    let Some(fx) = Fixture::new("lifeline") else {
        return;
    };
    // A sandbox started ahead of a create (or a template build's) must not outlive the
    // server that started it: nobody would know it any more, and whatever it runs would
    // go on unowned. Once a create takes it, it outlives the server like any other.
    let server = Runtime::with_config(fx.config.clone()).unwrap();
    let mut bound = fx.sleeper();
    bound.die_with_runtime = true;
    let mut released = fx.sleeper();
    released.die_with_runtime = true;
    let bound = server.create(bound).expect("create");
    let released = server.create(released).expect("create");
    server.outlive_runtime(&released.id).expect("release");
    drop(server);
    wait_for("the bound sandbox's end", Duration::from_secs(20), || {
        !alive(bound.init_pid)
    });
    sleep(Duration::from_millis(500));
    assert!(alive(released.init_pid), "the released sandbox died too");
    // The restarted runtime finds it as an ordinary sandbox.
    let report = fx.runtime.recover(RecoverPolicy::Adopt).unwrap();
    let adopted: Vec<&str> = report.adopted.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(adopted, vec![released.id.as_str()]);
    fx.sh_ok(&released.id, "true");
}

#[test]
fn recover_adopts_running_sandboxes_and_reaps_the_rest() {
    let Some(fx) = Fixture::new("recover") else {
        return;
    };
    // A runtime that "crashes": dropped without killing its sandboxes.
    let crashed = Runtime::with_config(fx.config.clone()).unwrap();
    let keep = crashed.create(fx.sleeper()).expect("create keep");
    let orphan = crashed.create(fx.sleeper()).expect("create orphan");
    drop(crashed);
    // A half-created sandbox: directory without state.
    let half = fx.data_dir().join("sandboxes/t-half-created");
    fs::create_dir_all(half.join("upper")).unwrap();

    let restarted = Runtime::with_config(fx.config.clone()).unwrap();
    let report = restarted.recover(RecoverPolicy::Adopt).unwrap();
    let mut adopted: Vec<&str> = report.adopted.iter().map(|h| h.id.as_str()).collect();
    adopted.sort();
    let mut expected = vec![keep.id.as_str(), orphan.id.as_str()];
    expected.sort();
    assert_eq!(adopted, expected);
    assert_eq!(report.reaped, vec!["t-half-created".to_string()]);
    assert!(!half.exists());
    assert_eq!(restarted.status(&keep.id).unwrap(), SandboxStatus::Running);
    restarted.kill(&keep.id).unwrap();
    assert!(!alive(keep.init_pid));
    drop(restarted);

    // Another restart that wants a clean slate reaps everything left.
    let clean = Runtime::with_config(fx.config.clone()).unwrap();
    let report = clean.recover(RecoverPolicy::KillAll).unwrap();
    assert_eq!(report.reaped, vec![orphan.id.clone()]);
    assert!(!alive(orphan.init_pid));
    assert!(!fx.runtime.cgroups().sandbox(&orphan.id).exists());
    assert_eq!(
        fs::read_dir(fx.data_dir().join("sandboxes"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(mounts_mentioning(fx.data_dir()), Vec::<String>::new());
}

#[test]
fn failing_init_is_reported_and_cleaned_up() {
    let Some(fx) = Fixture::new("bad init") else {
        return;
    };
    let spec = fx.spec("/does/not/exist", &[]);
    let id = spec.id.clone();
    match fx.runtime.create(spec) {
        Err(Error::Setup { message, .. }) => {
            assert!(message.contains("/does/not/exist"), "{message}")
        }
        other => panic!("expected a setup error, got {other:?}"),
    }
    assert!(!fx.data_dir().join("sandboxes").join(&id).exists());
    assert!(!fx.runtime.cgroups().sandbox(&id).exists());
}

/// The host's IPv4 address on the interface that routes outwards (a UDP "connect" sends
/// nothing; it only picks the source address).
fn host_address() -> Option<std::net::Ipv4Addr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.254:9").ok()?;
    match socket.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// A tiny HTTP server on `addr` answering every request with `body`; returns its port.
fn serve_text(addr: &str, body: &'static str) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(addr).expect("bind test server");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
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
    let allow = vec![courier_sandboxd::egress::Cidr::host(host_ip.into())];
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

#[test]
fn duplicate_ids_are_rejected() {
    let Some(fx) = Fixture::new("duplicate") else {
        return;
    };
    let spec = fx.sleeper();
    fx.runtime.create(spec.clone()).expect("create");
    assert!(matches!(
        fx.runtime.create(spec),
        Err(Error::AlreadyExists(_))
    ));
}

#[test]
fn pid_1_reaps_orphans_and_forwards_sigterm_to_the_init() {
    let Some(fx) = Fixture::new("reaper") else {
        return;
    };
    if fx.gvisor() {
        eprintln!("skipping: under gVisor PID 1 is gVisor's own init, not the runtime's reaper");
        return;
    }
    let spec = fx.spec(
        "/bin/sh",
        &["-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done"],
    );
    let sbx = fx.runtime.create(spec).expect("create");

    // Orphans (the backgrounded sleeps) are re-parented to PID 1, which must reap them.
    fx.sh_ok(&sbx.id, "for i in 1 2 3; do (sleep 0.1 &); done");
    let root = fx.runtime.root_path(&sbx.id).unwrap();
    wait_for("orphans to be reaped", Duration::from_secs(10), || {
        let zombies = fx.sh_ok(
            &sbx.id,
            "cat /proc/[0-9]*/stat 2>/dev/null | cut -d' ' -f3 | grep -c Z || true",
        );
        zombies.trim() == "0"
    });
    assert!(root.exists());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sbx.init_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for(
        "the sandbox to end on SIGTERM",
        Duration::from_secs(10),
        || fx.runtime.status(&sbx.id).unwrap() == SandboxStatus::Exited,
    );
    assert!(matches!(
        fx.runtime.command(&sbx.id, "/bin/true"),
        Err(Error::NotRunning(_))
    ));
    fx.runtime.kill(&sbx.id).expect("kill after exit");
    assert!(!fx.runtime.cgroups().sandbox(&sbx.id).exists());
}

#[test]
fn init_that_exits_ends_the_sandbox_and_kill_cleans_up() {
    let Some(fx) = Fixture::new("short init") else {
        return;
    };
    let sbx = fx
        .runtime
        .create(fx.spec("/bin/true", &[]))
        .expect("create");
    wait_for("the sandbox to end", Duration::from_secs(10), || {
        fx.runtime.status(&sbx.id).unwrap() == SandboxStatus::Exited
    });
    let dir = fx.data_dir().join("sandboxes").join(&sbx.id);
    fx.runtime.kill(&sbx.id).expect("kill");
    assert!(!dir.exists());
    assert!(!fx.runtime.cgroups().sandbox(&sbx.id).exists());
}
