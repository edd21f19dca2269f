//! Limits and accounting: page cache, memory, tasks and CPU.

use super::*;

/// Writes 8 MiB to `path` around the page cache (`O_DIRECT`): none of it is cached.
pub(crate) fn write_uncached(path: &Path) {
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
pub(crate) fn resident_bytes(path: &Path) -> u64 {
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
    // Cleanup after the measurement: a hog already gone needs neither.
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
