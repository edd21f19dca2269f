//! The syscall filters: what a sandbox's processes (and, under gVisor, `runsc` itself) may
//! not ask the host kernel for.
//!
//! Modelled on the default profiles of Docker and containerd, written as a deny list over
//! an allow-by-default filter: every call listed below fails with `EPERM` (`clone3` with
//! `ENOSYS`, so libc falls back to `clone`, whose flags a filter can see); everything else
//! reaches the kernel, where the sandbox's user namespace and capability bounding set
//! limit it further. Why a deny list: the sandbox runs arbitrary Linux software (agents,
//! package managers, language runtimes); an allow list breaks whatever new syscall their
//! libc picks up, while the attack surface that matters is the short list of interfaces
//! that reach global kernel state or have a history of container escapes.
//!
//! Denied for sandboxes ([`Profile::Sandbox`]):
//! - kernel modules, kexec, reboot, swap, clock setting, accounting, quotas;
//! - keyrings (`keyctl`, `add_key`, `request_key`): the kernel keyring is not namespaced
//!   enough to share;
//! - `bpf`, `perf_event_open`, `userfaultfd`, `io_uring_*`, `lookup_dcookie`, `kcmp`,
//!   `syslog`, `vhangup`, `fanotify_init`;
//! - `open_by_handle_at` / `name_to_handle_at` (the classic "shocker" escape);
//! - mounting (`mount`, `umount2`, `pivot_root`, the new mount API) and `setns`;
//! - new namespaces: `unshare` and `clone` with any `CLONE_NEW*` flag (so no nested user
//!   namespace reaches nf_tables and friends) unless the operator allows nested
//!   namespaces, which also allows mounting and `setns` (rootless containers need them);
//! - `personality` other than the harmless values Docker allows; `ioctl(TIOCSTI)` and
//!   `ioctl(TIOCLINUX)` (typing into another process's terminal);
//! - on x86_64: the x32 ABI (syscall numbers with bit 30 set) and, through the filter's
//!   architecture check, i386 system calls (the process is killed), `modify_ldt`, `iopl`,
//!   `ioperm`, `uselib`, `ustat`, `sysfs`, `_sysctl` and `nfsservctl`.
//!
//! [`Profile::Runsc`] is the subset that leaves gVisor working (runsc creates namespaces,
//! mounts, and ptraces its stubs): it keeps the host-kernel interfaces runsc never needs
//! out of reach of a compromised runsc (defence in depth behind gVisor's own filters).

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};

use super::sys::BpfProgram;

/// Which filter to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The processes of a namespace sandbox.
    Sandbox {
        /// Allow new namespaces (nested user namespaces), mounting and `setns`.
        nested_namespaces: bool,
    },
    /// `runsc` and the gVisor processes it starts.
    Runsc,
}

/// Every `CLONE_NEW*` flag.
const NAMESPACE_FLAGS: [u64; 8] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
    0x80, // CLONE_NEWTIME
];

/// `personality` values Docker's profile allows: PER_LINUX, PER_LINUX32, UNAME26 and
/// their combination, and the query value.
const SAFE_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Denied for every profile.
fn always_denied() -> Vec<libc::c_long> {
    let mut calls = vec![
        libc::SYS_acct,
        libc::SYS_add_key,
        libc::SYS_keyctl,
        libc::SYS_request_key,
        libc::SYS_bpf,
        libc::SYS_clock_adjtime,
        libc::SYS_clock_settime,
        libc::SYS_settimeofday,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_lookup_dcookie,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_vhangup,
        libc::SYS_fanotify_init,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_uselib,
        libc::SYS_ustat,
        libc::SYS_sysfs,
        libc::SYS__sysctl,
        libc::SYS_nfsservctl,
    ]);
    calls
}

/// Denied for sandboxes unless nested namespaces are allowed.
fn namespace_and_mount_calls() -> Vec<libc::c_long> {
    vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_setns,
        libc::SYS_open_tree,
        libc::SYS_move_mount,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
    ]
}

fn cond(arg: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, len, op, value).expect("static seccomp condition")
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).expect("static seccomp rule")
}

fn target_arch() -> TargetArch {
    #[cfg(target_arch = "x86_64")]
    {
        TargetArch::x86_64
    }
    #[cfg(target_arch = "aarch64")]
    {
        TargetArch::aarch64
    }
}

/// The rules (syscall → conditions, any of which matching denies) of `profile`.
fn denied(profile: Profile) -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for call in always_denied() {
        rules.insert(call, Vec::new());
    }
    let Profile::Sandbox { nested_namespaces } = profile else {
        return rules;
    };
    rules.insert(libc::SYS_kcmp, Vec::new());
    #[cfg(target_arch = "x86_64")]
    rules.insert(libc::SYS_modify_ldt, Vec::new());
    if !nested_namespaces {
        for call in namespace_and_mount_calls() {
            rules.insert(call, Vec::new());
        }
        // clone(flags, …) and unshare(flags): any namespace flag denies.
        let ns_rules = || -> Vec<SeccompRule> {
            NAMESPACE_FLAGS
                .iter()
                .map(|&flag| {
                    rule(vec![cond(
                        0,
                        SeccompCmpArgLen::Qword,
                        SeccompCmpOp::MaskedEq(flag),
                        flag,
                    )])
                })
                .collect()
        };
        rules.insert(libc::SYS_clone, ns_rules());
        rules.insert(libc::SYS_unshare, ns_rules());
    }
    rules.insert(
        libc::SYS_personality,
        vec![rule(
            SAFE_PERSONALITIES
                .iter()
                .map(|&p| cond(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, p))
                .collect(),
        )],
    );
    rules.insert(
        libc::SYS_ioctl,
        [libc::TIOCSTI, libc::TIOCLINUX]
            .iter()
            .map(|&request| {
                rule(vec![cond(
                    1,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    request,
                )])
            })
            .collect(),
    );
    rules
}

fn convert(program: seccompiler::BpfProgram) -> BpfProgram {
    program
        .into_iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect()
}

/// Compiles `profile` into one program: the x32 guard, `clone3` → `ENOSYS`, then the deny
/// list (`EPERM`).
pub fn compile(profile: Profile) -> BpfProgram {
    let arch = target_arch();
    let deny = SeccompFilter::new(
        denied(profile),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .expect("static seccomp filter");
    let deny = convert(deny.try_into().expect("compile seccomp filter"));
    let clone3 = match profile {
        Profile::Sandbox {
            nested_namespaces: false,
        } => {
            let filter = SeccompFilter::new(
                [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
                SeccompAction::Allow,
                SeccompAction::Errno(libc::ENOSYS as u32),
                arch,
            )
            .expect("static seccomp filter");
            Some(convert(filter.try_into().expect("compile seccomp filter")))
        }
        _ => None,
    };
    chain(x32_guard(), clone3, deny)
}

/// On x86_64, `ENOSYS` for x32 system calls (numbers with bit 30 set), which would
/// otherwise slip past rules written for the x86_64 numbers. Falls through (to the next
/// part of the program) for everything else. Empty elsewhere.
fn x32_guard() -> BpfProgram {
    #[cfg(target_arch = "x86_64")]
    {
        const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
        let ld = |k| libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k,
        };
        vec![
            // seccomp_data.arch
            ld(4),
            libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                jt: 0,
                jf: 3,
                k: AUDIT_ARCH_X86_64,
            },
            // seccomp_data.nr
            ld(0),
            libc::sock_filter {
                code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
                jt: 0,
                jf: 1,
                k: 0x4000_0000,
            },
            libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
            },
        ]
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}

/// Runs the parts one after another: each part ends in `RET`, so a part that would allow
/// is rewritten to fall through to the next one instead. seccompiler's programs return
/// ALLOW in one or more places; those become jumps to the next part.
fn chain(guard: BpfProgram, first: Option<BpfProgram>, last: BpfProgram) -> BpfProgram {
    let mut out = guard;
    if let Some(part) = first {
        let len = part.len();
        for (i, mut ins) in part.into_iter().enumerate() {
            if ins.code == (libc::BPF_RET | libc::BPF_K) as u16 && ins.k == libc::SECCOMP_RET_ALLOW
            {
                // Jump to the instruction after this part: `len - i - 1` ahead.
                let ahead = (len - i - 1) as u32;
                ins = libc::sock_filter {
                    code: (libc::BPF_JMP | libc::BPF_JA) as u16,
                    jt: 0,
                    jf: 0,
                    k: ahead,
                };
            }
            out.push(ins);
        }
    }
    out.extend(last);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::interpret;

    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    fn decide(profile: Profile, nr: libc::c_long, args: [u64; 6]) -> u32 {
        interpret(&compile(profile), ARCH, nr as u32, args)
    }

    const SANDBOX: Profile = Profile::Sandbox {
        nested_namespaces: false,
    };

    #[test]
    fn dangerous_calls_are_denied_and_ordinary_ones_allowed() {
        // An attacker inside the sandbox reaching for kernel-global interfaces.
        for call in [
            libc::SYS_keyctl,
            libc::SYS_bpf,
            libc::SYS_perf_event_open,
            libc::SYS_userfaultfd,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_open_by_handle_at,
            libc::SYS_mount,
            libc::SYS_setns,
            libc::SYS_io_uring_setup,
        ] {
            assert_eq!(decide(SANDBOX, call, [0; 6]), EPERM, "syscall {call}");
        }
        for call in [
            libc::SYS_read,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_setresuid,
            libc::SYS_ptrace,
        ] {
            assert_eq!(decide(SANDBOX, call, [0; 6]), ALLOW, "syscall {call}");
        }
    }

    #[test]
    fn namespaces_are_denied_by_flag_unless_nested_ones_are_allowed() {
        let fork_like = libc::SIGCHLD as u64;
        let thread_like = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(
            decide(SANDBOX, libc::SYS_clone, [fork_like, 0, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(
            decide(SANDBOX, libc::SYS_clone, [thread_like, 0, 0, 0, 0, 0]),
            ALLOW
        );
        // `unshare -Urn` and friends.
        for flag in NAMESPACE_FLAGS {
            assert_eq!(
                decide(SANDBOX, libc::SYS_unshare, [flag, 0, 0, 0, 0, 0]),
                EPERM
            );
            assert_eq!(
                decide(SANDBOX, libc::SYS_clone, [flag | fork_like, 0, 0, 0, 0, 0]),
                EPERM
            );
        }
        assert_eq!(
            decide(
                SANDBOX,
                libc::SYS_unshare,
                [libc::CLONE_FS as u64, 0, 0, 0, 0, 0]
            ),
            ALLOW
        );
        // clone3 hides its flags in memory: ENOSYS makes libc fall back to clone.
        assert_eq!(decide(SANDBOX, libc::SYS_clone3, [0; 6]), ENOSYS);

        let nested = Profile::Sandbox {
            nested_namespaces: true,
        };
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(
            decide(nested, libc::SYS_unshare, [newuser, 0, 0, 0, 0, 0]),
            ALLOW
        );
        assert_eq!(decide(nested, libc::SYS_clone3, [0; 6]), ALLOW);
        assert_eq!(decide(nested, libc::SYS_mount, [0; 6]), ALLOW);
        assert_eq!(decide(nested, libc::SYS_keyctl, [0; 6]), EPERM);
    }

    #[test]
    fn personality_and_terminal_injection_are_restricted() {
        assert_eq!(decide(SANDBOX, libc::SYS_personality, [0; 6]), ALLOW);
        assert_eq!(
            decide(SANDBOX, libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]),
            ALLOW
        );
        // READ_IMPLIES_EXEC
        assert_eq!(
            decide(SANDBOX, libc::SYS_personality, [0x0040_0000, 0, 0, 0, 0, 0]),
            EPERM
        );
        let tiocsti = libc::TIOCSTI;
        assert_eq!(
            decide(SANDBOX, libc::SYS_ioctl, [0, tiocsti, 0, 0, 0, 0]),
            EPERM
        );
        assert_eq!(
            decide(SANDBOX, libc::SYS_ioctl, [0, libc::TIOCGWINSZ, 0, 0, 0, 0]),
            ALLOW
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_and_foreign_architectures_are_refused() {
        let program = compile(SANDBOX);
        // x32 read: would otherwise bypass every rule written for x86_64 numbers.
        assert_eq!(interpret(&program, ARCH, 0x4000_0000, [0; 6]), ENOSYS);
        // i386 (int 0x80): the architecture check kills the process.
        assert_eq!(
            interpret(&program, 0x4000_0003, 0, [0; 6]),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }

    #[test]
    fn runsc_keeps_namespaces_and_mounts_but_not_keyrings() {
        assert_eq!(decide(Profile::Runsc, libc::SYS_mount, [0; 6]), ALLOW);
        assert_eq!(
            decide(
                Profile::Runsc,
                libc::SYS_unshare,
                [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0]
            ),
            ALLOW
        );
        assert_eq!(decide(Profile::Runsc, libc::SYS_clone3, [0; 6]), ALLOW);
        assert_eq!(decide(Profile::Runsc, libc::SYS_keyctl, [0; 6]), EPERM);
        assert_eq!(decide(Profile::Runsc, libc::SYS_kexec_load, [0; 6]), EPERM);
    }
}
