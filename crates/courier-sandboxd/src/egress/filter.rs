//! The seccomp filter installed on slirp4netns, as a classic BPF program built here
//! (pure, unit-tested with a small interpreter) and installed by [`super::sys`].
//!
//! What it does, per system call of slirp4netns (and of anything it forks):
//!
//! - another architecture's calling convention (e.g. i386 `int 0x80` on x86_64, where
//!   `connect` would be `socketcall`) or an x32 call: the process is killed. slirp4netns
//!   never makes them; an exploit might, to slip past the numbers below;
//! - `connect`, `sendmsg`, `sendmmsg`, and `sendto` with a destination address: stopped
//!   and handed to the supervisor (`SECCOMP_RET_USER_NOTIF`), which decides and performs
//!   the call itself;
//! - `sendto` with a NULL address (`send` on a connected socket — every TCP write slirp
//!   makes): allowed in the kernel. The address is a register, not memory, so the check
//!   cannot be raced, and the connection was checked when it was made. This keeps TCP
//!   throughput at full speed;
//! - `io_uring_setup`: `ENOSYS` (io_uring's connect and sendmsg would bypass seccomp);
//! - `socket`: only `AF_UNIX`, `AF_NETLINK`, and `AF_INET`/`AF_INET6` stream or datagram
//!   sockets of TCP, UDP or ICMP (ping). SCTP, DCCP, MPTCP and raw sockets could connect
//!   without `connect` (e.g. SCTP's `SCTP_SOCKOPT_CONNECTX`) or carry their own headers.
//!   slirp4netns needs none of them;
//! - everything else: allowed (slirp4netns's own `--enable-seccomp` filter still
//!   applies on top).

use nix::libc;

/// `AUDIT_ARCH_*` of the architecture this was built for: `EM_*` | 64-bit | little-endian.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: Option<u32> = Some(0xC000_00B7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH_NATIVE: Option<u32> = None;

/// x32 system calls on x86_64 carry this bit in their number (and the x86_64 arch value).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(n: u32) -> u32 {
    // args are u64; on little-endian machines the low half comes first.
    if cfg!(target_endian = "little") {
        16 + 8 * n
    } else {
        16 + 8 * n + 4
    }
}
const fn off_arg_hi(n: u32) -> u32 {
    if cfg!(target_endian = "little") {
        16 + 8 * n + 4
    } else {
        16 + 8 * n
    }
}

/// Classic BPF opcodes (`linux/filter.h`).
const LD_W_ABS: u16 = 0x20;
const ALU_AND_K: u16 = 0x54;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

/// `SOCK_TYPE_MASK`: the socket type without `SOCK_NONBLOCK`/`SOCK_CLOEXEC`.
const SOCK_TYPE_MASK: u32 = 0xf;

/// Where a jump goes.
#[derive(Clone, Copy)]
enum To {
    Next,
    Label(Label),
}

/// The program's jump targets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Label {
    SendTo,
    Socket,
    InetSocket,
    InetProto,
    Allow,
    Notify,
    NoSys,
    NoAf,
    NoProto,
    Kill,
}

enum Ins {
    Ld(u32),
    And(u32),
    Jeq(u32, To, To),
    Jge(u32, To, To),
    Ret(u32),
    /// Marks the position of a label (emits nothing).
    At(Label),
}

/// The system calls the supervisor handles, on this architecture.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Syscalls {
    pub connect: u32,
    pub sendto: u32,
    pub sendmsg: u32,
    pub sendmmsg: u32,
    pub socket: u32,
    pub io_uring_setup: u32,
}

impl Syscalls {
    /// This architecture's numbers (libc's constants).
    pub(crate) const NATIVE: Syscalls = Syscalls {
        connect: libc::SYS_connect as u32,
        sendto: libc::SYS_sendto as u32,
        sendmsg: libc::SYS_sendmsg as u32,
        sendmmsg: libc::SYS_sendmmsg as u32,
        socket: libc::SYS_socket as u32,
        io_uring_setup: libc::SYS_io_uring_setup as u32,
    };
}

/// The filter for this machine, or `None` on an architecture it was not written for.
pub(crate) fn program() -> Option<Vec<libc::sock_filter>> {
    AUDIT_ARCH_NATIVE.map(|arch| assemble(&source(arch, Syscalls::NATIVE)))
}

fn source(arch: u32, nr: Syscalls) -> Vec<Ins> {
    use Ins::*;
    use Label::*;
    let errno = |e: i32| libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA);
    vec![
        Ld(OFF_ARCH),
        Jeq(arch, To::Next, To::Label(Kill)),
        Ld(OFF_NR),
        Jge(X32_SYSCALL_BIT, To::Label(Kill), To::Next),
        Jeq(nr.connect, To::Label(Notify), To::Next),
        Jeq(nr.sendmsg, To::Label(Notify), To::Next),
        Jeq(nr.sendmmsg, To::Label(Notify), To::Next),
        Jeq(nr.io_uring_setup, To::Label(NoSys), To::Next),
        Jeq(nr.socket, To::Label(Socket), To::Next),
        Jeq(nr.sendto, To::Label(SendTo), To::Label(Allow)),
        // sendto: a NULL destination (both halves zero) goes through.
        At(SendTo),
        Ld(off_arg_lo(4)),
        Jeq(0, To::Next, To::Label(Notify)),
        Ld(off_arg_hi(4)),
        Jeq(0, To::Label(Allow), To::Label(Notify)),
        // socket(domain, type, protocol): int arguments, the kernel reads the low half.
        At(Socket),
        Ld(off_arg_lo(0)),
        Jeq(libc::AF_UNIX as u32, To::Label(Allow), To::Next),
        Jeq(libc::AF_NETLINK as u32, To::Label(Allow), To::Next),
        Jeq(libc::AF_INET as u32, To::Label(InetSocket), To::Next),
        Jeq(
            libc::AF_INET6 as u32,
            To::Label(InetSocket),
            To::Label(NoAf),
        ),
        At(InetSocket),
        Ld(off_arg_lo(1)),
        And(SOCK_TYPE_MASK),
        Jeq(libc::SOCK_STREAM as u32, To::Label(InetProto), To::Next),
        Jeq(
            libc::SOCK_DGRAM as u32,
            To::Label(InetProto),
            To::Label(NoProto),
        ),
        At(InetProto),
        Ld(off_arg_lo(2)),
        Jeq(0, To::Label(Allow), To::Next),
        Jeq(libc::IPPROTO_TCP as u32, To::Label(Allow), To::Next),
        Jeq(libc::IPPROTO_UDP as u32, To::Label(Allow), To::Next),
        Jeq(libc::IPPROTO_ICMP as u32, To::Label(Allow), To::Next),
        Jeq(
            libc::IPPROTO_ICMPV6 as u32,
            To::Label(Allow),
            To::Label(NoProto),
        ),
        At(Allow),
        Ret(libc::SECCOMP_RET_ALLOW),
        At(Notify),
        Ret(libc::SECCOMP_RET_USER_NOTIF),
        At(NoSys),
        Ret(errno(libc::ENOSYS)),
        At(NoAf),
        Ret(errno(libc::EAFNOSUPPORT)),
        At(NoProto),
        Ret(errno(libc::EPROTONOSUPPORT)),
        At(Kill),
        Ret(libc::SECCOMP_RET_KILL_PROCESS),
    ]
}

/// Resolves labels into relative jumps. Panics on a backward or too long jump (a bug in
/// [`source`], caught by the tests).
fn assemble(source: &[Ins]) -> Vec<libc::sock_filter> {
    let mut positions = Vec::new();
    let mut pc = 0usize;
    for ins in source {
        match ins {
            Ins::At(label) => positions.push((*label, pc)),
            _ => pc += 1,
        }
    }
    let target = |label: Label| {
        positions
            .iter()
            .find(|(l, _)| *l == label)
            .map(|(_, p)| *p)
            .expect("label defined")
    };
    let offset = |to: To, pc: usize| -> u8 {
        match to {
            To::Next => 0,
            To::Label(label) => {
                let t = target(label);
                assert!(t > pc, "backward jump to {label:?}");
                u8::try_from(t - pc - 1).expect("jump fits in 8 bits")
            }
        }
    };
    let mut out = Vec::new();
    for ins in source {
        let pc = out.len();
        let (code, jt, jf, k) = match *ins {
            Ins::At(_) => continue,
            Ins::Ld(off) => (LD_W_ABS, 0, 0, off),
            Ins::And(k) => (ALU_AND_K, 0, 0, k),
            Ins::Jeq(k, t, f) => (JEQ_K, offset(t, pc), offset(f, pc), k),
            Ins::Jge(k, t, f) => (JGE_K, offset(t, pc), offset(f, pc), k),
            Ins::Ret(k) => (RET_K, 0, 0, k),
        };
        out.push(libc::sock_filter { code, jt, jf, k });
    }
    out
}

#[cfg(test)]
/// A tiny interpreter for the classic-BPF subset seccompiler, this module and the
/// runtime's syscall filter ([`crate::runtime::seccomp`]) emit, to check compiled
/// programs' decisions without installing them.
pub(crate) fn interpret(program: &[libc::sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let mut data = Vec::new();
    data.extend_from_slice(&nr.to_ne_bytes());
    data.extend_from_slice(&arch.to_ne_bytes());
    data.extend_from_slice(&0u64.to_ne_bytes());
    for a in args {
        data.extend_from_slice(&a.to_ne_bytes());
    }
    let word = |off: u32| {
        let o = off as usize;
        u32::from_ne_bytes(data[o..o + 4].try_into().unwrap())
    };
    let (mut acc, mut pc) = (0u32, 0usize);
    loop {
        let ins = &program[pc];
        let class = (ins.code & 0x07) as u32;
        match class {
            libc::BPF_LD => acc = word(ins.k),
            libc::BPF_ALU => {
                if (ins.code as u32 & 0xf0) == libc::BPF_AND {
                    acc &= ins.k;
                } else {
                    panic!("unexpected ALU op {:#x}", ins.code);
                }
            }
            libc::BPF_JMP => {
                let op = ins.code as u32 & 0xf0;
                if op == libc::BPF_JA {
                    pc += ins.k as usize + 1;
                    continue;
                }
                let taken = match op {
                    libc::BPF_JEQ => acc == ins.k,
                    libc::BPF_JGE => acc >= ins.k,
                    libc::BPF_JGT => acc > ins.k,
                    libc::BPF_JSET => acc & ins.k != 0,
                    _ => panic!("unexpected jump {:#x}", ins.code),
                };
                pc += 1 + if taken { ins.jt } else { ins.jf } as usize;
                continue;
            }
            libc::BPF_RET => return ins.k,
            libc::BPF_MISC => {}
            _ => panic!("unexpected class {class}"),
        }
        pc += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` over a `seccomp_data` the way the kernel does (the interpreter the
    /// runtime's own filter is tested with).
    fn run(prog: &[libc::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        interpret(prog, arch, nr, args)
    }

    const ARCH: u32 = 0xC000_003E;

    fn prog() -> Vec<libc::sock_filter> {
        assemble(&source(ARCH, Syscalls::NATIVE))
    }

    fn verdict(nr: i64, args: [u64; 6]) -> u32 {
        run(&prog(), nr as u32, ARCH, args)
    }

    fn errno(e: i32) -> u32 {
        libc::SECCOMP_RET_ERRNO | e as u32
    }

    #[test]
    fn address_carrying_calls_go_to_the_supervisor() {
        let notify = libc::SECCOMP_RET_USER_NOTIF;
        assert_eq!(verdict(libc::SYS_connect, [3, 0x1000, 16, 0, 0, 0]), notify);
        assert_eq!(verdict(libc::SYS_sendmsg, [3, 0x1000, 0, 0, 0, 0]), notify);
        assert_eq!(verdict(libc::SYS_sendmmsg, [3, 0x1000, 2, 0, 0, 0]), notify);
        // sendto with an address, including one whose low half is zero.
        assert_eq!(
            verdict(libc::SYS_sendto, [3, 1, 1, 0, 0x7f00_1000, 16]),
            notify
        );
        assert_eq!(
            verdict(libc::SYS_sendto, [3, 1, 1, 0, 0x1_0000_0000, 16]),
            notify
        );
    }

    #[test]
    fn sends_on_connected_sockets_and_other_calls_stay_in_the_kernel() {
        let allow = libc::SECCOMP_RET_ALLOW;
        assert_eq!(verdict(libc::SYS_sendto, [3, 0x1000, 100, 0, 0, 0]), allow);
        assert_eq!(verdict(libc::SYS_read, [3, 0, 0, 0, 0, 0]), allow);
        assert_eq!(verdict(libc::SYS_write, [3, 0, 0, 0, 0, 0]), allow);
        assert_eq!(verdict(libc::SYS_recvfrom, [3, 0, 0, 0, 0, 0]), allow);
        assert_eq!(verdict(libc::SYS_execve, [0; 6]), allow);
        assert_eq!(
            verdict(libc::SYS_io_uring_setup, [0; 6]),
            errno(libc::ENOSYS)
        );
    }

    #[test]
    fn sockets_are_limited_to_what_slirp_uses() {
        let allow = libc::SECCOMP_RET_ALLOW;
        let sock = |d: i32, t: i32, p: i32| {
            verdict(libc::SYS_socket, [d as u64, t as u64, p as u64, 0, 0, 0])
        };
        let nb = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        assert_eq!(sock(libc::AF_INET, libc::SOCK_STREAM | nb, 0), allow);
        assert_eq!(
            sock(libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP),
            allow
        );
        assert_eq!(
            sock(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            allow
        );
        assert_eq!(
            sock(libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_ICMPV6),
            allow
        );
        assert_eq!(sock(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0), allow);
        assert_eq!(sock(libc::AF_NETLINK, libc::SOCK_RAW, 0), allow);
        assert_eq!(
            sock(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP),
            errno(libc::EPROTONOSUPPORT)
        );
        assert_eq!(
            sock(libc::AF_INET, libc::SOCK_SEQPACKET, 0),
            errno(libc::EPROTONOSUPPORT),
            "SCTP"
        );
        assert_eq!(
            sock(libc::AF_INET, libc::SOCK_STREAM, 132),
            errno(libc::EPROTONOSUPPORT),
            "SCTP"
        );
        assert_eq!(
            sock(libc::AF_INET, libc::SOCK_STREAM, 262),
            errno(libc::EPROTONOSUPPORT),
            "MPTCP"
        );
        assert_eq!(
            sock(libc::AF_INET, 6, 0),
            errno(libc::EPROTONOSUPPORT),
            "DCCP"
        );
        assert_eq!(
            sock(libc::AF_PACKET, libc::SOCK_RAW, 0),
            errno(libc::EAFNOSUPPORT)
        );
        assert_eq!(
            sock(libc::AF_VSOCK, libc::SOCK_STREAM, 0),
            errno(libc::EAFNOSUPPORT)
        );
    }

    #[test]
    fn foreign_calling_conventions_kill_the_process() {
        let kill = libc::SECCOMP_RET_KILL_PROCESS;
        let p = prog();
        assert_eq!(run(&p, 102, 0x4000_0003, [0; 6]), kill, "i386 socketcall");
        assert_eq!(run(&p, libc::SYS_connect as u32, 0x4000_0003, [0; 6]), kill);
        assert_eq!(
            run(&p, X32_SYSCALL_BIT | 42, ARCH, [0; 6]),
            kill,
            "x32 connect"
        );
    }

    #[test]
    fn the_native_program_exists_and_fits() {
        let p = program().expect("x86_64 or aarch64");
        assert!(p.len() < 64, "{}", p.len());
    }
}
