//! What a sandbox can see and do: its own processes, files, network, hostname, users and kernel.

use super::*;

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
