//! What the host shows of sandboxd and its sandboxes: /proc, the sandboxes' cgroups, the
//! loop devices and mounts — read before, during and after, and what is left at the end.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use courier_sandboxd::runtime::CgroupDriver;

/// The cgroup parent courier-sandboxd uses by default (`--cgroup-parent` unset).
const CGROUP_PARENT: &str = "courier";

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// The value (first number) of `key:` in a `/proc` status-like file.
fn field_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn load_average() -> String {
    read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn mem_available_mib() -> u64 {
    field_kib(&read("/proc/meminfo"), "MemAvailable:") / 1024
}

fn sysctl(name: &str) -> String {
    read(format!("/proc/sys/{}", name.replace('.', "/")))
        .trim()
        .to_owned()
}

/// The host limits 1,000 sandboxes run into first.
pub(crate) fn print_limits() {
    println!(
        "host limits: kernel.pid_max {}, kernel.threads-max {}, fs.inotify.max_user_instances {} \
         (per uid: each sandbox runs as its own ids), user.max_user_namespaces {}, \
         {} CPUs, {} MiB memory",
        sysctl("kernel.pid_max"),
        sysctl("kernel.threads-max"),
        sysctl("fs.inotify.max_user_instances"),
        sysctl("user.max_user_namespaces"),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        field_kib(&read("/proc/meminfo"), "MemTotal:") / 1024,
    );
}

/// Descriptors of `pid` and, of those, inotify instances with their watches.
fn fds_of(pid: i32) -> (u64, u64, u64) {
    let (mut fds, mut instances, mut watches) = (0, 0, 0);
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0, 0);
    };
    for entry in entries.flatten() {
        fds += 1;
        let is_inotify = fs::read_link(entry.path())
            .is_ok_and(|target| target.as_os_str() == "anon_inode:inotify");
        if is_inotify {
            instances += 1;
            let info = read(format!(
                "/proc/{pid}/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ));
            watches += info
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count() as u64;
        }
    }
    (fds, instances, watches)
}

/// Children of `parent` whose command is `comm`.
fn children_named(parent: u32, comm: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = read(format!("/proc/{pid}/stat"));
            // "pid (comm) state ppid ...": comm may hold spaces, so split after the ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            ppid == Some(parent) && read(format!("/proc/{pid}/comm")).trim() == comm
        })
        .collect()
}

/// The host's view at one moment.
pub(crate) struct Snapshot {
    server_rss_kib: u64,
    server_fds: u64,
    server_threads: u64,
    host_used_kib: u64,
    host_tasks: u64,
    cgroup_bytes: u64,
    /// CPU time the sandboxes used so far (their cgroups), nanoseconds.
    pub(crate) cpu_ns: u64,
    sandbox_tasks: u64,
    slirp: usize,
    inotify_instances: u64,
    inotify_watches: u64,
}

impl Snapshot {
    /// sandboxd (`server_pid`) and the sandboxes `ids`.
    pub(crate) fn take(server_pid: u32, ids: &[String]) -> Self {
        let status = read(format!("/proc/{server_pid}/status"));
        let meminfo = read("/proc/meminfo");
        let (server_fds, mut inotify_instances, mut inotify_watches) = fds_of(server_pid as i32);
        let driver = CgroupDriver::detect_at(Path::new("/sys/fs/cgroup"), CGROUP_PARENT).ok();
        let (mut cgroup_bytes, mut sandbox_tasks, mut cpu_ns) = (0, 0, 0);
        for id in ids {
            let Some(cgroup) = driver.as_ref().map(|d| d.sandbox(id)) else {
                break;
            };
            let stats = cgroup.stats();
            cgroup_bytes += stats.memory_bytes;
            cpu_ns += stats.cpu_usage_ns;
            sandbox_tasks += stats.pids;
            for pid in cgroup.pids() {
                let (_, instances, watches) = fds_of(pid);
                inotify_instances += instances;
                inotify_watches += watches;
            }
        }
        let host_tasks = read("/proc/loadavg")
            .split_whitespace()
            .nth(3)
            .and_then(|f| f.split_once('/'))
            .and_then(|(_, total)| total.parse().ok())
            .unwrap_or(0);
        Self {
            server_rss_kib: field_kib(&status, "VmRSS:"),
            server_fds,
            server_threads: field_kib(&status, "Threads:"),
            host_used_kib: field_kib(&meminfo, "MemTotal:")
                .saturating_sub(field_kib(&meminfo, "MemAvailable:")),
            host_tasks,
            cgroup_bytes,
            cpu_ns,
            sandbox_tasks,
            slirp: children_named(server_pid, "slirp4netns").len(),
            inotify_instances,
            inotify_watches,
        }
    }
}

/// The figures at scale: totals, and per sandbox what grew from `before` to `after`.
pub(crate) fn print_usage(before: &Snapshot, after: &Snapshot, n: usize) {
    let per = |a: u64, b: u64| (a as f64 - b as f64) / n.max(1) as f64;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("                                   before       with {n:<5}  per sandbox");
    println!(
        "sandboxd RSS                   {:>9.1} MiB {:>9.1} MiB {:>9.1} KiB",
        mib(before.server_rss_kib),
        mib(after.server_rss_kib),
        per(after.server_rss_kib, before.server_rss_kib)
    );
    println!(
        "sandboxes' cgroups (memory)    {:>13} {:>9.1} MiB {:>9.2} MiB",
        "-",
        after.cgroup_bytes as f64 / 1048576.0,
        after.cgroup_bytes as f64 / 1048576.0 / n.max(1) as f64
    );
    println!(
        "host used (MemTotal-Available) {:>9.1} MiB {:>9.1} MiB {:>9.2} MiB  (shared host: noisy)",
        mib(before.host_used_kib),
        mib(after.host_used_kib),
        per(after.host_used_kib, before.host_used_kib) / 1024.0
    );
    println!(
        "sandboxd descriptors           {:>13} {:>13} {:>13.2}",
        before.server_fds,
        after.server_fds,
        per(after.server_fds, before.server_fds)
    );
    println!(
        "sandboxd threads               {:>13} {:>13} {:>13.2}",
        before.server_threads,
        after.server_threads,
        per(after.server_threads, before.server_threads)
    );
    println!(
        "tasks in the sandboxes         {:>13} {:>13} {:>13.2}",
        "-",
        after.sandbox_tasks,
        after.sandbox_tasks as f64 / n.max(1) as f64
    );
    println!(
        "host tasks (all processes)     {:>13} {:>13} {:>13.2}  (shared host: noisy)",
        before.host_tasks,
        after.host_tasks,
        per(after.host_tasks, before.host_tasks)
    );
    println!(
        "slirp4netns processes          {:>13} {:>13} {:>13.2}",
        before.slirp,
        after.slirp,
        per(after.slirp as u64, before.slirp as u64)
    );
    println!(
        "inotify instances / watches    {:>13} {:>13} {:>13.2}",
        format!("{} / {}", before.inotify_instances, before.inotify_watches),
        format!("{} / {}", after.inotify_instances, after.inotify_watches),
        per(after.inotify_watches, before.inotify_watches)
    );
}

/// What is left of the killed sandboxes.
pub(crate) struct Leftovers {
    cgroups: Vec<String>,
    processes: usize,
    dirs: Vec<String>,
    mounts: Vec<String>,
    loop_devices: Vec<String>,
    slirp: usize,
    fds: (u64, u64),
    threads: (u64, u64),
}

/// Descriptors and threads sandboxd may hold beyond what it held before the creates:
/// pooled connections and idle blocking threads come and go on their own.
const SLACK: u64 = 16;

impl Leftovers {
    fn look(server_pid: u32, data_dir: &Path, ids: &[String], before: &Snapshot) -> Self {
        let driver = CgroupDriver::detect_at(Path::new("/sys/fs/cgroup"), CGROUP_PARENT).ok();
        let mut cgroups = Vec::new();
        let mut processes = 0;
        let mut dirs = Vec::new();
        let sandboxes_dir = data_dir.join("data/runtime/sandboxes");
        for id in ids {
            if let Some(cgroup) = driver.as_ref().map(|d| d.sandbox(id)) {
                processes += cgroup.pids().len();
                if cgroup.exists() {
                    cgroups.push(id.clone());
                }
            }
            if sandboxes_dir.join(id).exists() {
                dirs.push(id.clone());
            }
        }
        let data = data_dir.to_string_lossy().into_owned();
        let mounts = read("/proc/self/mountinfo")
            .lines()
            .filter(|l| l.contains(&data))
            .map(str::to_owned)
            .collect();
        // Ready disks (kept attached for the next creates) are the server's, not a
        // sandbox's: only other images under the data dir count.
        let mut loop_devices = Vec::new();
        if let Ok(entries) = fs::read_dir("/sys/block") {
            for entry in entries.flatten() {
                let file = read(entry.path().join("loop/backing_file"));
                let file = file.trim();
                if file.starts_with(&data) && !file.contains("/disks/ready/") {
                    loop_devices.push(format!("{}: {file}", entry.file_name().to_string_lossy()));
                }
            }
        }
        let status = read(format!("/proc/{server_pid}/status"));
        Self {
            cgroups,
            processes,
            dirs,
            mounts,
            loop_devices,
            slirp: children_named(server_pid, "slirp4netns").len(),
            fds: (before.server_fds, fds_of(server_pid as i32).0),
            threads: (before.server_threads, field_kib(&status, "Threads:")),
        }
    }

    /// Whether the places [`wait_for_none`](Self::wait_for_none) looks in hold a *live*
    /// sandbox `id` (its directory, its cgroup): a check of an empty place could not fail.
    pub(crate) fn places_hold(data_dir: &Path, id: &str) -> Result<(), String> {
        let dir = data_dir.join("data/runtime/sandboxes").join(id);
        if !dir.is_dir() {
            return Err(format!("no directory {} for a live sandbox", dir.display()));
        }
        let driver = CgroupDriver::detect_at(Path::new("/sys/fs/cgroup"), CGROUP_PARENT)
            .map_err(|e| e.to_string())?;
        if !driver.sandbox(id).exists() {
            return Err(format!(
                "no cgroup under {CGROUP_PARENT}/ for live sandbox {id}"
            ));
        }
        Ok(())
    }

    /// Looks until nothing is left or 30 s have passed (idle blocking threads linger 10 s).
    pub(crate) fn wait_for_none(
        server_pid: u32,
        data_dir: &Path,
        ids: &[String],
        before: &Snapshot,
    ) -> Self {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = Self::look(server_pid, data_dir, ids, before);
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.cgroups.is_empty()
            && self.processes == 0
            && self.dirs.is_empty()
            && self.mounts.is_empty()
            && self.loop_devices.is_empty()
            && self.slirp == 0
            && self.fds.1 <= self.fds.0 + SLACK
            && self.threads.1 <= self.threads.0 + SLACK
    }
}

impl std::fmt::Display for Leftovers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unique: HashSet<&String> = self.cgroups.iter().chain(&self.dirs).collect();
        write!(
            f,
            "{} (cgroups {}, processes {}, sandbox dirs {}, mounts {}, loop devices {}, \
             slirp4netns {}; sandboxd descriptors {} -> {}, threads {} -> {})",
            if self.is_empty() {
                "nothing"
            } else {
                "SOMETHING"
            },
            self.cgroups.len(),
            self.processes,
            self.dirs.len(),
            self.mounts.len(),
            self.loop_devices.len(),
            self.slirp,
            self.fds.0,
            self.fds.1,
            self.threads.0,
            self.threads.1,
        )?;
        for line in self.mounts.iter().chain(&self.loop_devices).take(5) {
            write!(f, "\n  {line}")?;
        }
        if !unique.is_empty() {
            let first: Vec<&&String> = unique.iter().take(5).collect();
            write!(f, "\n  e.g. {first:?}")?;
        }
        Ok(())
    }
}
