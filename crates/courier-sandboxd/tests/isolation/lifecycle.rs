//! Freeze, kill, ready disks, waiting helpers, lifelines, recovery and the init's end.

use super::*;

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
pub(crate) fn loop_devices_under(dir: &Path) -> Vec<String> {
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
pub(crate) fn waiting_helpers() -> Vec<(i32, Vec<String>)> {
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

/// `begin_kill` is what the API waits for: once it returns, every process of the
/// sandbox is dead or has a SIGKILL pending, and `finish_kill` removes everything else.
///
/// Attacks: a process inside forks in a loop (so that a listing of the sandbox's
/// processes is always out of date, and a child forked during the kill escapes it) and
/// ignores SIGTERM, SIGINT and SIGHUP; another detaches into its own session. None of
/// them outlives the kill, and nothing of the sandbox (cgroup, directory, mount, loop
/// device) is left once the cleanup ends.
#[test]
fn begin_kill_dooms_forkers_and_signal_ignorers_and_finish_kill_leaves_nothing() {
    let Some(fx) = Fixture::new("begin_kill") else {
        return;
    };
    let mut spec = fx.sleeper();
    spec.limits.pids = 256;
    let sbx = fx.runtime.create(spec).expect("create");
    fx.sh_ok(
        &sbx.id,
        "setsid sh -c 'trap \"\" TERM INT HUP; while :; do sleep 600 & done' \
         > /dev/null 2>&1 < /dev/null &
         setsid sh -c 'trap \"\" TERM INT HUP; exec sleep 600' > /dev/null 2>&1 < /dev/null &",
    );
    let cgroup = fx.runtime.cgroups().sandbox(&sbx.id);
    let dir = fx.data_dir().join("sandboxes").join(&sbx.id);
    if !fx.gvisor() {
        // Under gVisor the sandbox's processes live in its own kernel, not on the host.
        wait_for(
            "the fork loop to fill the sandbox",
            Duration::from_secs(30),
            || cgroup.pids().len() >= 40,
        );
    }
    let before = cgroup.pids();
    assert!(
        before.iter().any(|pid| !support::dead_or_dying(*pid)),
        "the sandbox runs before its kill: {before:?}"
    );

    let ending = fx.runtime.begin_kill(&sbx.id).expect("begin_kill");
    // Not a timing check: whatever still runs is doomed, including children forked
    // while the kill was being sent.
    let after = cgroup.pids();
    for pid in before.iter().chain(after.iter()) {
        assert!(
            support::dead_or_dying(*pid),
            "process {pid} survived begin_kill"
        );
    }
    // The sandbox is unknown at once; its id stays taken until the cleanup ends.
    assert!(matches!(
        fx.runtime.status(&sbx.id),
        Err(Error::NotFound(_))
    ));
    assert!(fx.runtime.is_ending(&sbx.id));
    assert!(matches!(fx.runtime.kill(&sbx.id), Err(Error::NotFound(_))));
    let mut again = fx.sleeper();
    again.id = sbx.id.clone();
    assert!(
        fx.runtime.create(again).is_err(),
        "a sandbox being cleaned up keeps its id"
    );

    fx.runtime.finish_kill(ending).expect("finish_kill");
    assert!(!fx.runtime.is_ending(&sbx.id));
    for pid in before.iter().chain(after.iter()) {
        assert!(!alive(*pid), "process {pid} survived the kill");
    }
    assert!(!cgroup.exists(), "cgroup dirs left: {:?}", cgroup.dirs());
    assert!(!dir.exists(), "sandbox dir left");
    assert_eq!(mounts_mentioning(&dir), Vec::<String>::new());
    assert_eq!(loop_devices_under(&dir), Vec::<String>::new());
}

/// A runtime that crashes between a kill's answer and the end of its cleanup leaves the
/// killed marker: the next start finishes the cleanup instead of adopting the sandbox,
/// even one whose processes still run (a crash between the marker and the signals).
///
/// Attack: a sandbox that survives its kill through a restart of the server, so that it
/// keeps running after its owner was told it is gone.
#[test]
fn a_restart_during_a_kills_cleanup_finishes_it() {
    let Some(fx) = Fixture::new("restart_mid_kill") else {
        return;
    };
    let crashed = Runtime::with_config(fx.config.clone()).unwrap();
    let signalled = crashed.create(fx.sleeper()).expect("create signalled");
    let marked = crashed.create(fx.sleeper()).expect("create marked");
    let kept = crashed.create(fx.sleeper()).expect("create kept");
    // Killed, the cleanup never run: the crash came right after the answer.
    let ending = crashed.begin_kill(&signalled.id).expect("begin_kill");
    std::mem::forget(ending);
    // Marked, not signalled: the crash came between the two.
    let marked_dir = fx.data_dir().join("sandboxes").join(&marked.id);
    fs::write(marked_dir.join("killed"), b"").unwrap();
    drop(crashed);
    assert!(alive(marked.init_pid));

    let restarted = Runtime::with_config(fx.config.clone()).unwrap();
    let report = restarted.recover(RecoverPolicy::Adopt).unwrap();
    let adopted: Vec<&str> = report.adopted.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(adopted, vec![kept.id.as_str()]);
    let mut reaped = report.reaped.clone();
    reaped.sort();
    let mut expected = vec![signalled.id.clone(), marked.id.clone()];
    expected.sort();
    assert_eq!(reaped, expected, "failed: {:?}", report.failed);
    for handle in [&signalled, &marked] {
        let dir = fx.data_dir().join("sandboxes").join(&handle.id);
        assert!(!alive(handle.init_pid), "{} survived", handle.id);
        assert!(!restarted.cgroups().sandbox(&handle.id).exists());
        assert!(!dir.exists(), "{} left its directory", handle.id);
        assert_eq!(mounts_mentioning(&dir), Vec::<String>::new());
        assert_eq!(loop_devices_under(&dir), Vec::<String>::new());
    }
    assert_eq!(restarted.status(&kept.id).unwrap(), SandboxStatus::Running);
    restarted.kill(&kept.id).unwrap();
}
