"""The attack suite of issue [9] (and [10]'s "attack suite under gVisor"): an attacker
drives the official E2B SDK (and curl) against a running courier-sandboxd and tries to
get out of a sandbox. Every test states the attacker, what they try and what stops them;
each asserts that the attack fails, and an autouse fixture then creates a fresh sandbox
and runs a command in it, so every attack is also checked not to have broken the server.

The attackers:
- *root inside a sandbox*: the agent has passwordless sudo, a cloned repository's
  scripts run as the agent, and anyone with an API key runs commands as root through
  envd (``user="root"``), so everything here runs as root inside unless said otherwise;
- *an API-key holder* using the REST API, the template builder and signed file URLs;
- *a template author*, whose RUN steps (or an npm postinstall script during a tool
  template build) shape the layers later sandboxes start from.

The suite runs under both isolations (``COURIER_SANDBOXD_ISOLATION=container|gvisor``,
see the ``isolation`` fixture); where they differ the test says why. Egress (network
namespaces, metadata and private addresses, allow/deny lists) has its own suite.
Run time on the 2-core test machine: about 15 s under container, 26 s under gVisor
(``run_sandboxd.sh -k attacks``; the two template-building tests take half of it).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import httpx
import pytest
from e2b import Sandbox, Template

from support import (
    build_template_rest,
    delete_template,
    host_cmdline,
    host_status,
    sandbox_host_processes,
    sh,
)

API = os.environ["E2B_API_URL"]
PROXY = os.environ["E2B_SANDBOX_URL"]
KEY = os.environ["E2B_API_KEY"]
SANDBOX_TIMEOUT = 300
#: envd's port: the host part of signed URLs is ``49983-<id>.<domain>``.
ENVD_PORT = 49983
#: Bytes of console output the runtime keeps per sandbox (``RuntimeConfig::console_cap``).
CONSOLE_CAP = 16 << 20


def _create(**kwargs) -> Sandbox:
    return Sandbox.create(timeout=SANDBOX_TIMEOUT, **kwargs)


def _kill(sbx: Sandbox) -> None:
    try:
        sbx.kill()
    except Exception:  # already gone
        pass


@pytest.fixture(autouse=True)
def server_keeps_serving() -> Iterator[None]:
    """After each attack, the server still creates a sandbox and runs a command in it."""
    yield
    sbx = _create()
    try:
        assert sbx.commands.run("echo still serving").stdout == "still serving\n"
    finally:
        _kill(sbx)


@pytest.fixture(scope="module")
def victim() -> Iterator[Sandbox]:
    """A sandbox shared by the attacks that leave it as it was (reading, probing)."""
    sbx = _create()
    try:
        yield sbx
    finally:
        _kill(sbx)


@pytest.fixture
def host_dir() -> Iterator[str]:
    """A directory on the host, outside anything a sandbox is given, removed afterwards."""
    path = tempfile.mkdtemp(prefix="courier-attack-", dir="/var/tmp")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------- 1. control channel


class FakeHostSocket:
    """A Unix socket on the host standing in for ``/var/run/docker.sock`` (any host
    service that obeys whoever connects; a path starting with NUL is an abstract name,
    like containerd-shim's): it records every connection and the first bytes sent, so a
    test can prove nothing reached it."""

    def __init__(self, path: str):
        self.path = path
        self.connections: list[bytes] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(path)
        if not path.startswith("\0"):  # abstract names have no file
            os.chmod(path, 0o777)  # anyone may connect: only the redirect decides
        self._server.listen(16)
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            conn.settimeout(1)
            try:
                self.connections.append(conn.recv(200))
            except OSError:
                self.connections.append(b"")
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()


def test_control_socket_cannot_be_redirected_to_a_host_socket(isolation, data_dir, host_dir):
    """Attacker: root inside a sandbox. Tries: find the socket sandboxd reaches envd
    through, replace ``/run/courier/envd.sock`` (where envd's socket lived before [9],
    in a directory writable inside) with a symlink to a host Unix socket, then make the
    server talk to envd (a command, a file read, a fresh connect, the port tunnel) so
    that it forwards those requests to the host service as host root.

    Stopped by: *container* — the runtime binds the control socket in its own data dir
    and hands it to envd as a descriptor; it is in no mount namespace of the sandbox, so
    there is nothing to find or replace, and the server keeps reaching the real envd.
    *gVisor* — envd binds ``/run/courier/envd.sock`` in a directory bound from the host
    (so the planted link does land where the server looks), but the runtime opens it
    with ``O_NOFOLLOW`` beneath that directory, accepts only a socket and checks the
    peer is a process of the sandbox's cgroup: the redirected sandbox becomes
    unreachable, the host socket never sees a connection, other sandboxes keep working.
    """
    fake = FakeHostSocket(os.path.join(host_dir, "docker.sock"))
    bystander = _create()
    sbx = _create()
    try:
        # Reconnaissance: every socket file in the sandbox's tree (/usr is the host's
        # package tree and holds none; skipping it keeps this fast under gVisor).
        found = sh(
            sbx, "find / \\( -path /proc -o -path /sys -o -path /dev -o -path /usr \\) -prune -o -type s -print 2>/dev/null"
        ).stdout.split()
        if isolation == "container":
            assert not [s for s in found if s.endswith(("control.sock", "envd.sock"))], found
            assert sh(sbx, f"test -e {data_dir}").exit_code != 0, "the server's data dir is visible inside"
        else:
            assert "/run/courier/envd.sock" in found, found

        planted = sh(
            sbx,
            f"mkdir -p /run/courier && rm -f /run/courier/envd.sock"
            f" && ln -s {fake.path} /run/courier/envd.sock && readlink /run/courier/envd.sock",
        )
        assert planted.exit_code == 0 and planted.stdout.strip() == fake.path, planted
        if isolation == "gvisor":
            # The link sits exactly where the server connects (the test is not vacuous).
            on_host = os.path.join(data_dir, "runtime/sandboxes", sbx.sandbox_id, "control/envd.sock")
            assert os.readlink(on_host) == fake.path

        # Make the server talk to envd in every way it does.
        outcomes = {}
        try:
            outcomes["command"] = sbx.commands.run("echo reached the sandbox", timeout=30).stdout
        except Exception as e:  # the sandbox's envd is unreachable now (gVisor)
            outcomes["command"] = f"refused: {type(e).__name__}"
        try:
            outcomes["read"] = Sandbox.connect(sbx.sandbox_id).files.read("/etc/hostname")
        except Exception as e:
            outcomes["read"] = f"refused: {type(e).__name__}"
        tunnel = httpx.get(PROXY + "/", headers={"Host": sbx.get_host(8000)}, timeout=30)
        outcomes["tunnel"] = tunnel.status_code
        time.sleep(0.5)  # let a connection that was made show up

        assert fake.connections == [], f"the server reached the host socket: {fake.connections!r}"
        if isolation == "container":
            # The planted link changed nothing: the server still reaches envd itself.
            assert outcomes["command"] == "reached the sandbox\n", outcomes
            assert outcomes["read"] == f"{sbx.sandbox_id}\n", outcomes
        else:
            assert outcomes["command"].startswith("refused"), outcomes
            assert outcomes["read"].startswith("refused"), outcomes
        assert outcomes["tunnel"] != 200, outcomes

        # The server still serves the others, and still kills the redirected one.
        assert bystander.commands.run("echo bystander").stdout == "bystander\n"
        assert Sandbox.kill(sbx.sandbox_id)
        listed = httpx.get(f"{API}/v2/sandboxes", headers={"X-API-Key": KEY}, timeout=30).json()
        assert sbx.sandbox_id not in [s["sandboxID"] for s in listed]
    finally:
        fake.close()
        _kill(sbx)
        _kill(bystander)


# --------------------------------------------------------------- 2. user namespaces


def _id_map(text: str) -> list[tuple[int, int, int]]:
    return [tuple(int(f) for f in line.split()) for line in text.strip().splitlines()]


def _root_only_host_etc_files() -> dict[str, str]:
    """Non-empty regular files of the host's /etc that other users cannot read, with
    their SHA-256, except those the base layer regenerates (the account databases) or
    needs as they are (sudo's policy, which holds no secret)."""
    regenerated = {"/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-"}
    found = {}
    for top, _dirs, files in os.walk("/etc"):
        for name in files:
            path = os.path.join(top, name)
            if path in regenerated or path == "/etc/sudoers" or path.startswith("/etc/sudoers.d/"):
                continue
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or st.st_mode & stat.S_IROTH or st.st_size == 0:
                    continue
                with open(path, "rb") as f:
                    found[path] = hashlib.sha256(f.read()).hexdigest()
            except OSError:
                continue
    return found


def test_root_inside_cannot_read_root_only_host_files(victim, host_dir):
    """Attacker: root inside a sandbox who knows (or guesses) the path of a root-only
    host file: a 0600 secret, or the host's root-only files under /etc (TLS private
    keys, old password hashes...). Tries: read it by its path, through
    ``/proc/<pid>/root`` of every process it sees, through ``/proc/self/root/..``
    climbs, and the base template's copy of the host's /etc.

    Stopped by: the sandbox's own root (nothing of the host but its system dirs is in
    its mount namespace), the user namespace (root inside is an unmapped id outside, so
    even a reachable host file would be "other" to it; under gVisor the Sentry serves
    only the sandbox's own tree), and the base layer copying only the world-readable
    part of /etc (plus sudo's policy and its own account files).
    """
    secret = secrets.token_hex(16)
    path = os.path.join(host_dir, "secret")
    with open(path, "w") as f:
        f.write(secret)
    os.chmod(path, 0o600)
    os.chmod(host_dir, 0o700)
    attempts = [
        path,
        f"/proc/1/root{path}",
        f"/proc/self/root/..{path}",
        f"/proc/self/root/../../../..{path}",
        f"/proc/self/cwd/../../../..{path}",
    ]
    script = " ".join(f"'{p}'" for p in attempts)
    got = sh(victim, f"for p in {script} /proc/[0-9]*/root{path}; do cat \"$p\" 2>/dev/null && echo \"READ $p\"; done; true")
    assert secret not in got.stdout and "READ" not in got.stdout, got.stdout
    got = sh(victim, f"cat {path} 2>/dev/null; ls -la {host_dir} 2>/dev/null; true", user="user")
    assert secret not in got.stdout, got.stdout

    host_files = _root_only_host_etc_files()
    if host_files:
        listing = " ".join(f"'{p}'" for p in host_files)
        sums = sh(victim, f"sha256sum {listing} 2>/dev/null; true").stdout
        inside = {line.split(None, 1)[1].strip(): line.split(None, 1)[0] for line in sums.splitlines() if "  " in line}
        leaked = sorted(p for p, digest in host_files.items() if inside.get(p) == digest)
        assert leaked == [], f"root-only host files readable inside the sandbox: {leaked}"


def _sandbox_code_processes(sandbox_id: str) -> dict[int, str]:
    """Host processes of a sandbox that run its code or its kernel (not the runtime's
    monitor, not gVisor's gofer, not slirp4netns), with their host uid."""
    uids = {}
    for pid in sandbox_host_processes(sandbox_id):
        cmdline = host_cmdline(pid)
        if "--courier-sandbox-helper" in cmdline or cmdline.startswith(("runsc-gofer", "slirp4netns")):
            continue
        status = host_status(pid)
        if status:
            uids[pid] = status["Uid"].split()[1]  # effective
    return uids


def test_each_sandbox_runs_as_its_own_unprivileged_host_ids(isolation):
    """Attacker: root inside one sandbox who gets past its kernel interface (a kernel
    bug, a misconfigured mount) or shares per-uid state with other sandboxes (signals,
    ptrace, ``/proc/<pid>/environ`` of another tenant, inotify and keyring quotas).
    Tries: be host root, or the same host user as another sandbox.

    Stopped by (container): each sandbox's user namespace maps root inside to its own
    unprivileged range of host ids (``0 <2^30 + slot*65536> 65536``): the uid map is not
    the identity, every process of the sandbox runs as an id of its range, and two
    sandboxes' ranges do not overlap.

    gVisor: ``/proc/self/uid_map`` inside is the Sentry's own (``0 0 4294967295``) and
    says nothing about the host; what must hold is that the host processes running the
    sandbox's code and kernel (runsc's sandbox process and its systrap stubs) are not
    host root and not shared between sandboxes — [10]'s "defence in depth kept (user
    namespace ...)". runsc's default ``--directfs`` starts the Sentry as host uid 0 in an
    identity-mapped user namespace, so this fails until the runtime gives runsc the
    sandbox's id range.
    """
    first, second = _create(), _create()
    try:
        if isolation == "container":
            ranges = []
            for sbx in (first, second):
                for user in ("user", "root"):
                    maps = sh(sbx, "cat /proc/self/uid_map; echo; cat /proc/self/gid_map", user=user).stdout
                    uid_map, gid_map = (_id_map(part) for part in maps.split("\n\n", 1))
                    assert len(uid_map) == 1 and uid_map == gid_map, maps
                    inside, outside, count = uid_map[0]
                    assert (inside, count) == (0, 65536), maps
                    assert outside >= 65536, f"root inside is host id {outside}"
                ranges.append(range(outside, outside + count))
            assert not set(ranges[0]) & set(ranges[1]), ranges
        else:
            maps = sh(first, "cat /proc/self/uid_map").stdout
            assert _id_map(maps)  # the Sentry's map; nothing to learn about the host

        host_ids = []
        for sbx in (first, second):
            uids = _sandbox_code_processes(sbx.sandbox_id)
            assert uids, f"no host process found for {sbx.sandbox_id}"
            described = {pid: (uid, host_cmdline(pid)[:60]) for pid, uid in uids.items()}
            assert "0" not in uids.values(), f"processes of {sbx.sandbox_id} run as host root: {described}"
            host_ids.append(set(uids.values()))
        assert not host_ids[0] & host_ids[1], f"two sandboxes share host ids: {host_ids}"
    finally:
        _kill(first)
        _kill(second)


# --------------------------------------------------------------- 3. syscall filter

#: x86_64 numbers of system calls a sandbox must not reach (with harmless arguments:
#: the filter, or gVisor, must refuse them before the arguments matter).
DENIED_SYSCALLS = {
    "bpf": (321, [0, 0, 0]),
    "perf_event_open": (298, [0, 0, -1, -1, 0]),
    "userfaultfd": (323, [0]),
    "io_uring_setup": (425, [1, 0]),
    "keyctl": (250, [0, -3, 0]),  # KEYCTL_GET_KEYRING_ID of the session keyring
    "add_key": (248, [0, 0, 0, 0, -3]),
    "unshare_user": (272, [0x10000000]),  # CLONE_NEWUSER
    "unshare_net": (272, [0x40000000]),  # CLONE_NEWNET
    "mount": (165, [0, 0, 0, 0, 0]),
    "setns": (308, [-1, 0]),
    "open_by_handle_at": (304, [-1, 0, 0]),
    "init_module": (175, [0, 0, 0]),
    "kexec_load": (246, [0, 0, 0, 0]),
}
#: Calls gVisor's Sentry serves itself, against its own state: keyrings and namespaces
#: of the sandbox's own kernel (the host's keyring and namespaces are out of reach; the
#: keyring test checks the host's keys stay invisible).
SENTRY_OWN = {"keyctl", "add_key", "unshare_user", "unshare_net"}

PROBE = """
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
out = {}
for name, (nr, args) in json.loads(sys.argv[1]).items():
    ctypes.set_errno(0)
    ret = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    out[name] = [ret, ctypes.get_errno()]
print(json.dumps(out))
"""


def test_syscall_filter_refuses_kernel_attack_surface(isolation, victim):
    """Attacker: root inside a sandbox going for the host kernel's large, historically
    exploitable interfaces: bpf, perf events, userfaultfd, io_uring, keyrings, mounts,
    namespace creation (a new user namespace would hand it CAP_NET_ADMIN over nf_tables),
    module loading, kexec, ``open_by_handle_at``.

    Stopped by (container): the seccomp filter (``Seccomp: 2`` in every process's
    status) answers EPERM before the kernel sees the call, and ``unshare -Urn`` fails, so
    nft never reaches nf_tables; root's bounding set lacks CAP_NET_ADMIN, so nft fails
    in the sandbox's own network namespace too. gVisor: these calls reach the Sentry,
    which implements none of them against the host (keyrings and ``unshare -Urn`` may
    succeed: they are the Sentry's own, and nft still finds no nf_tables); the host
    processes running the sandbox run under runsc's seccomp filters plus the runtime's
    (``Seccomp: 2``, ``NoNewPrivs: 1``).
    """
    assert sh(victim, "test -x /usr/sbin/nft").exit_code == 0, "nft is missing: install nftables (scripts/setup-machine.sh)"
    if isolation == "container":
        for user in ("user", "root"):
            status = sh(victim, "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status", user=user).stdout
            assert "Seccomp:\t2" in status, (user, status)
        unshared = sh(victim, "unshare -Urn true 2>&1; echo rc=$?", user="user").stdout
        assert "rc=0" not in unshared, unshared
    else:
        for pid in _sandbox_code_processes(victim.sandbox_id):
            status = host_status(pid)
            if status:
                assert status["Seccomp"] == "2" and status["NoNewPrivs"] == "1", (pid, host_cmdline(pid), status)
    for user in ("user", "root"):
        nft = sh(
            victim,
            "unshare -Urn /usr/sbin/nft add table inet courier_attack 2>&1; echo rc=$?;"
            " unshare -Urn /usr/sbin/nft list ruleset 2>&1; echo rc=$?",
            user=user,
        ).stdout
        assert "rc=0" not in nft and "courier_attack" not in nft, (user, nft)
    direct = sh(victim, "/usr/sbin/nft add table inet courier_attack 2>&1; echo rc=$?").stdout
    assert "rc=0" not in direct, direct

    victim.files.write("/tmp/probe.py", PROBE)
    calls = json.loads(sh(victim, f"python3 /tmp/probe.py '{json.dumps(DENIED_SYSCALLS)}'").stdout)
    for name, (ret, errno) in calls.items():
        if isolation == "gvisor" and name in SENTRY_OWN:
            continue
        assert ret == -1, f"{name} succeeded inside the sandbox ({ret})"
        if isolation == "container":
            assert errno == 1, f"{name} failed with errno {errno}, not the filter's EPERM"


def test_host_kernel_keys_are_invisible(victim):
    """Attacker: root (or user) inside a sandbox looking for secrets host root keeps in
    the kernel keyring (the keyring is not namespaced: before [9] a sandbox saw host
    root's). The test stores a key in host root's user keyring first. Tries:
    ``keyctl show @s`` / ``@u``, ``/proc/keys``, ``keyctl search``, and reading the key
    by its id.

    Stopped by: container — the filter refuses every keyring call and the sandbox starts
    with a fresh session keyring; gVisor — the Sentry has keyrings of its own. Either
    way the host key's id, name and payload appear nowhere.
    """
    if shutil.which("keyctl") is None:
        pytest.fail("keyctl is missing: install keyutils (scripts/setup-machine.sh)")
    name = f"courier-test-secret-{secrets.token_hex(4)}"
    payload = secrets.token_hex(16)
    key_id = subprocess.run(["keyctl", "add", "user", name, payload, "@u"], capture_output=True, text=True, check=True).stdout.strip()
    try:
        # The key really is there for host root.
        assert subprocess.run(["keyctl", "print", key_id], capture_output=True, text=True).stdout.strip() == payload
        for user in ("user", "root"):
            out = sh(
                victim,
                f"keyctl show @s 2>&1; keyctl show @u 2>&1; cat /proc/keys 2>&1;"
                f" keyctl search @u user {name} 2>&1; keyctl print {key_id} 2>&1; echo print-rc=$?;"
                f" keyctl read {key_id} 2>&1",
                user=user,
            ).stdout
            assert payload not in out and name not in out, (user, out)
            assert "print-rc=0" not in out, (user, out)
            assert key_id not in out, (user, out)
    finally:
        subprocess.run(["keyctl", "revoke", key_id], capture_output=True)
        subprocess.run(["keyctl", "unlink", key_id, "@u"], capture_output=True)


# --------------------------------------------------------------- 4. path safety


def _replace_with_links(host: str) -> str:
    """A RUN step (as root) turning /etc, /run and /usr/local/bin into symlinks to the
    host directories ``host``/etc, /run, /bin, each holding a copy of the original so
    the sandbox still boots. /run's link is relative with many ``..``: resolved on the
    host from the sandbox's root directory, it would climb to the host's /."""
    return f"""set -e
d={host}
mkdir -p $d/etc $d/run $d/bin
cp -a /etc/. $d/etc/
rm -rf /etc
ln -s $d/etc /etc
if rm -rf /run 2>/dev/null; then ln -s ../../../../../../../..$d/run /run; else echo "/run is busy"; fi
if cp -a /usr/local/bin/. $d/bin/ && rm -rf /usr/local/bin 2>/dev/null; then
  ln -s $d/bin /usr/local/bin
else
  echo "/usr/local/bin is busy"
fi
"""


def _host_dirs_for_links(host_dir: str) -> list[str]:
    dirs = []
    for name in ("etc", "run", "bin"):
        path = os.path.join(host_dir, name)
        os.mkdir(path)
        # World-writable: a write the runtime made through a link as the sandbox's
        # unprivileged host id must land here too, not fail on permissions and pass.
        os.chmod(path, 0o1777)
        dirs.append(path)
    return dirs


def _assert_untouched(dirs: list[str]) -> None:
    for path in dirs:
        assert os.listdir(path) == [], f"the runtime wrote into the host's {path}: {os.listdir(path)}"


def test_template_symlinks_to_host_dirs_write_nothing_on_the_host(host_dir):
    """Attacker: a template author (a RUN step as root, or an npm postinstall script in
    a tool template build). Tries: make /etc, /run and /usr/local/bin symlinks to host
    directories (absolute, and relative with ``..`` climbs), so that when a sandbox is
    created from the template the runtime — which writes /etc/hosts, /etc/hostname and
    resolv.conf and creates mount targets (envd at /usr/local/bin/courier-envd, gVisor's
    control dir /run/courier) as host root before the sandbox starts — writes host paths.

    Stopped by: path-safe root assembly: everything the runtime creates or writes is
    resolved with ``openat2(RESOLVE_IN_ROOT)`` from the sandbox's root, so the links
    resolve as they would inside. The runtime's writes land in the sandbox's own copies
    (its /etc/hostname names it) and the host directories stay empty. (A container build
    sandbox cannot replace /usr/local/bin, where envd is mounted; the next test builds
    that layer under gVisor.)
    """
    dirs = _host_dirs_for_links(host_dir)
    name = f"courier-attack-links-{uuid.uuid4().hex[:8]}"
    logs: list[str] = []
    template = Template().from_template("base").run_cmd(_replace_with_links(host_dir), user="root")
    Template.build(template, name, on_build_logs=lambda entry: logs.append(entry.message))
    try:
        _assert_untouched(dirs)
        sbx = _create(template=name)
        try:
            seen = sh(sbx, "readlink /etc; cat /etc/hostname; grep -c localhost /etc/hosts").stdout.split("\n")
            assert seen[0] == f"{host_dir}/etc", seen
            assert seen[1] == sbx.sandbox_id, "the runtime did not write the sandbox's own /etc/hostname"
            links = sh(sbx, "readlink /run /usr/local/bin; true").stdout
            assert f"{host_dir}/run" in links or "/run is busy" in logs, (links, logs)
            assert sbx.commands.run("echo through envd").stdout == "through envd\n"
        finally:
            _kill(sbx)
        _assert_untouched(dirs)
    finally:
        delete_template(name)


def test_layers_built_under_the_other_isolation_cannot_redirect_mount_targets(host_dir):
    """Attacker: a template author who builds under gVisor (where the build sandbox may
    replace /usr/local/bin, the directory of envd's mount point) and sets the template's
    sandboxes to ``isolation: "container"``. A build sandbox runs its parent template's
    isolation, so the chain is: a gVisor template from base, then the attack's template
    from it. Tries: make the container runtime create envd's mount target, and bind
    envd, through a symlink to a host directory (and /etc, /run likewise).

    Stopped by: the same ``RESOLVE_IN_ROOT`` assembly in both runtimes: the mount target
    is created inside the sandbox's tree, envd is still found and serves, the host
    directories stay empty. Skipped where the server offers only one isolation.
    """
    dirs = _host_dirs_for_links(host_dir)
    gvisor = f"courier-attack-gv-{uuid.uuid4().hex[:8]}"
    links = f"courier-attack-ct-{uuid.uuid4().hex[:8]}"
    try:
        requested, status = build_template_rest(gvisor, [], isolation="gvisor")
        if requested.status_code == 400 and "isolation" in requested.text:
            pytest.skip(f"the server offers no gVisor isolation: {requested.text}")
        assert status is not None and status["status"] == "ready", (requested.text, status)
        steps = [{"type": "RUN", "args": [_replace_with_links(host_dir) + "readlink /usr/local/bin\n", "root"]}]
        requested, status = build_template_rest(links, steps, from_template=gvisor, isolation="container")
        assert status is not None and status["status"] == "ready", (requested.text, status)
        # The gVisor build sandbox did replace envd's directory with the link.
        assert f"{host_dir}/bin" in [line.split(" ", 1)[-1] for line in status["logs"]], status["logs"]
        _assert_untouched(dirs)
        sbx = _create(template=links)
        try:
            assert sh(sbx, "uname -r").stdout.strip() == os.uname().release  # a container indeed
            assert sh(sbx, "readlink /usr/local/bin").stdout.strip() == f"{host_dir}/bin"
            assert sbx.commands.run("cat /etc/hostname").stdout == f"{sbx.sandbox_id}\n"
        finally:
            _kill(sbx)
        _assert_untouched(dirs)
    finally:
        delete_template(links)
        delete_template(gvisor)


# --------------------------------------------------------------- 5. limits


def test_disk_quota_ends_in_enospc_and_the_sandbox_keeps_working(data_dir):
    """Attacker: root inside a sandbox filling the host's disk through its writable
    layer (before [9] the upper dir lived on the host's file system, unlimited).
    Tries: ``fallocate`` more than the sandbox's disk, then fill it with writes.

    Stopped by: each sandbox's writable layer is its own ext4 image of the template's
    ``diskSizeMB`` (here 128 MiB, set through E2B's build API): both fail with ENOSPC,
    the image on the host never exceeds that size, and once the files are removed the
    sandbox writes again.
    """
    name = f"courier-attack-disk-{uuid.uuid4().hex[:8]}"
    requested, status = build_template_rest(name, [], disk_size_mb=128)
    assert status is not None and status["status"] == "ready", (requested.text, status)
    try:
        sbx = _create(template=name)
        try:
            big = sh(sbx, "fallocate -l 200M /home/user/big 2>&1; echo rc=$?", user="user").stdout
            assert "No space left on device" in big and "rc=0" not in big, big
            fill = sh(sbx, "{ head -c 300M /dev/zero > /home/user/fill; } 2>&1; echo rc=$?", user="user").stdout
            assert "No space left on device" in fill and "rc=0" not in fill, fill
            image = os.path.join(data_dir, "runtime/sandboxes", sbx.sandbox_id, "disk.img")
            assert os.stat(image).st_blocks * 512 <= 128 << 20, "the disk image grew past its size"
            sh(sbx, "rm -f /home/user/big /home/user/fill", user="user")
            again = sh(sbx, "echo written > /home/user/after && cat /home/user/after", user="user")
            assert again.stdout == "written\n", again
        finally:
            _kill(sbx)
    finally:
        delete_template(name)


def test_console_flood_stays_within_the_cap(isolation, data_dir):
    """Attacker: root inside a sandbox filling the host's disk through the sandbox's
    console log (the init's output, kept on the host). Tries every way to write to it
    from inside: PID 1's and envd's stdout/stderr through ``/proc/<pid>/fd``, stealing
    envd's descriptor with ``pidfd_getfd``; then writes 40 MiB through whichever works.

    Stopped by: the runtime copies the console into ``console.log`` up to 16 MiB and
    drops the rest (one marker line). Container: none of those routes opens at all (the
    console pipe belongs to an id the sandbox does not map, the reaper is not dumpable,
    ``pidfd_getfd`` needs ptrace rights), so the log stays near empty. gVisor: root
    inside may write envd's stdout (a host descriptor the Sentry holds), so the flood
    reaches the runtime and the cap is what holds.
    """
    sbx = _create()
    try:
        log = os.path.join(data_dir, "runtime/sandboxes", sbx.sandbox_id, "console.log")
        assert os.path.isfile(log)
        routes = [f"/proc/{pid}/fd/{fd}" for pid in (1, 2) for fd in (1, 2)]
        opened = []
        for route in routes:
            if "rc=0" in sh(sbx, f"echo probe > {route} 2>/dev/null; echo rc=$?").stdout:
                opened.append(route)
        if opened:
            flood = sh(sbx, f"head -c 40M /dev/zero | tr '\\0' x > {opened[0]}; echo rc=$?").stdout
            assert "rc=0" in flood, flood  # the whole flood went through: the cap must hold
        steal = (
            "import ctypes,os,sys\n"
            "l=ctypes.CDLL(None,use_errno=True)\n"
            "for pid in (1,2):\n"
            "  p=l.syscall(434,pid,0)\n"
            "  fd=l.syscall(438,p,1,0) if p>=0 else -1\n"
            "  if fd>=0:\n"
            "    n=0\n"
            "    for _ in range(640): n+=os.write(fd,b'y'*65536)\n"
            "    print('stolen',pid,n)\n"
        )
        sbx.files.write("/tmp/steal.py", steal)
        stolen = sh(sbx, "python3 /tmp/steal.py 2>/dev/null; true").stdout
        if isolation == "container":
            assert opened == [], f"the console is writable from inside through {opened}"
            assert "stolen" not in stolen, stolen
        time.sleep(1)  # the monitor copies asynchronously
        size = os.path.getsize(log)
        assert size <= CONSOLE_CAP + 4096, f"console.log is {size} bytes, past the {CONSOLE_CAP}-byte cap"
        if opened or "stolen" in stolen:
            with open(log, "rb") as f:
                f.seek(max(0, size - 300))
                assert b"console log limit" in f.read(), "the cap's marker line is missing"
        assert sbx.commands.run("echo alive").stdout == "alive\n"
    finally:
        _kill(sbx)


def _create_huge() -> httpx.Response:
    # The SDK has no memory parameter; courier-sandboxd reads `memoryMB` from the body.
    return httpx.post(
        f"{API}/sandboxes",
        headers={"X-API-Key": KEY},
        json={"templateID": "base", "timeout": 120, "memoryMB": 65536},
        timeout=120,
    )


def test_capacity_answers_429_to_concurrent_64_gib_creates():
    """Attacker: an API-key holder exhausting the host: concurrent creates asking 64 GiB
    of memory each (before [9] twenty of them all started).

    Stopped by: the server-wide capacity (committed memory ≤ the host's MemTotal by
    default), reserved before anything is made: past it E2B's 429 ``{code, message}``
    naming ``max_memory_mb``, nothing half-made. (test_limits.py runs the full twenty.)
    """
    with open("/proc/meminfo") as meminfo:
        total_mb = next(int(line.split()[1]) // 1024 for line in meminfo if line.startswith("MemTotal:"))
    n = 8
    fits = min(n, total_mb // 65536)
    with ThreadPoolExecutor(max_workers=n) as pool:
        answers = list(pool.map(lambda _: _create_huge(), range(n)))
    created = [a.json()["sandboxID"] for a in answers if a.status_code == 201]
    try:
        assert len(created) <= fits
        for answer in answers:
            if answer.status_code == 201:
                continue
            assert answer.status_code == 429, answer.text
            body = answer.json()
            assert body["code"] == 429 and "max_memory_mb" in body["message"], body
    finally:
        for sandbox_id in created:
            httpx.delete(f"{API}/sandboxes/{sandbox_id}", headers={"X-API-Key": KEY}, timeout=60)


# --------------------------------------------------------------- 6. envd file access


def _curl(args: list[str]) -> tuple[int, str]:
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=60)
    body, _, code = out.stdout.rpartition("\n")
    return int(code or 0), body


def test_signed_urls_for_user_do_not_follow_links_out_of_users_reach():
    """Attacker: whoever holds a signed file URL for ``user`` (URLs get pasted, logged,
    handed to browsers), with ``user`` (the agent, a cloned repo's scripts) planting
    symlinks in its home. Tries: download ``~/link -> /etc/shadow`` and a link to a
    root-only file, and upload through ``~/plink -> /etc/passwd`` (with the signed URL
    and with the SDK) to rewrite a root file.

    Stopped by: envd does every file access of a request with the requesting user's
    credentials, so the link resolves with ``user``'s rights: 403, nothing read, the
    root file unchanged. (The same URLs signed for root succeed: the files exist and
    the refusal is about the user.)
    """
    sbx = _create(secure=True)
    try:
        host = sbx.get_host(ENVD_PORT)
        setup = sh(
            sbx,
            "echo top-secret-content > /opt/secret && chmod 600 /opt/secret"
            " && ln -s /etc/shadow /home/user/link && ln -s /opt/secret /home/user/link2"
            " && ln -s /etc/passwd /home/user/plink && sha256sum /etc/passwd",
        )
        assert setup.exit_code == 0, setup
        passwd_before = setup.stdout.split()[0]
        for link, content in (("/home/user/link", "root:"), ("/home/user/link2", "top-secret-content")):
            code, body = _curl(["-H", f"Host: {host}", sbx.download_url(link, user="user", use_signature_expiration=60)])
            assert code == 403 and content not in body, (link, code, body)
            code, body = _curl(["-H", f"Host: {host}", sbx.download_url(link, user="root", use_signature_expiration=60)])
            assert code == 200 and content in body, (link, code, body)

        with tempfile.NamedTemporaryFile("w", suffix=".txt") as evil:
            evil.write("evil::0:0::/root:/bin/bash\n")
            evil.flush()
            url = sbx.upload_url("/home/user/plink", user="user", use_signature_expiration=60)
            code, body = _curl(["-H", f"Host: {host}", "-F", f"file=@{evil.name}", url])
            assert code == 403, (code, body)
            # The same upload to a path of user's own works (the refusal is the link's).
            ok = sbx.upload_url("/home/user/mine.txt", user="user", use_signature_expiration=60)
            code, body = _curl(["-H", f"Host: {host}", "-F", f"file=@{evil.name}", ok])
            assert code == 200, (code, body)
        with pytest.raises(Exception) as refused:
            sbx.files.write("/home/user/plink", "evil2::0:0::/root:/bin/bash\n", user="user")
        assert "403" in str(refused.value) or "ermission" in str(refused.value), refused.value
        assert sh(sbx, "sha256sum /etc/passwd").stdout.split()[0] == passwd_before
        assert sh(sbx, "cat /home/user/mine.txt", user="user").stdout == "evil::0:0::/root:/bin/bash\n"
    finally:
        _kill(sbx)


def test_envd_refuses_requests_without_a_valid_token_or_signature():
    """Attacker: someone who knows a sandbox's id (it is in every URL) and maybe holds
    one signed URL of it. Tries: start a process and read a file with no access token;
    reuse a signed URL for another path, for root instead of ``user``, after it expired;
    a made-up signature.

    Stopped by: envd's access token, installed by the server at create and never shown
    to the sandbox's processes: every request needs it or a signature made with it over
    (path, operation, user, expiry), checked before anything is read.
    """
    from urllib.parse import parse_qs, urlencode, urlsplit

    sbx = _create(secure=True)
    try:
        assert sh(sbx, "echo root-only > /root/note && chmod 600 /root/note").exit_code == 0
        sbx.files.write("/home/user/other.txt", "user-readable", user="user")
        routed = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(ENVD_PORT)}
        start = httpx.post(
            f"{PROXY}/process.Process/Start",
            headers={**routed, "Content-Type": "application/json", "Connect-Protocol-Version": "1"},
            json={"process": {"cmd": "/bin/sh", "args": ["-c", "touch /tmp/pwned"]}},
            timeout=30,
        )
        assert start.status_code == 401, start.text
        unsigned = httpx.get(f"{PROXY}/files", params={"path": "/root/note", "username": "root"}, headers=routed, timeout=30)
        assert unsigned.status_code == 401, unsigned.text

        signed = urlsplit(sbx.download_url("/home/user/.bashrc", user="user", use_signature_expiration=60))
        query = {k: v[0] for k, v in parse_qs(signed.query).items()}
        # Each would be served (200) if envd did not check the signature: user may read
        # other.txt, root may read .bashrc and the note.
        tampered = {
            "other path": {**query, "path": "/home/user/other.txt"},
            "other user": {**query, "username": "root"},
            "made-up signature": {**query, "signature": "v1_" + "A" * 43},
        }
        expired = urlsplit(sbx.download_url("/root/note", user="root", use_signature_expiration=-10))
        tampered["expired"] = {k: v[0] for k, v in parse_qs(expired.query).items()}
        for what, params in tampered.items():
            answer = httpx.get(f"{PROXY}/files?{urlencode(params)}", headers=routed, timeout=30)
            assert answer.status_code in (401, 403), (what, answer.status_code, answer.text)
            assert "root-only" not in answer.text and "user-readable" not in answer.text, what
        genuine = httpx.get(f"{PROXY}/files?{signed.query}", headers=routed, timeout=30)
        assert genuine.status_code == 200, genuine.text  # the untampered URL works
        assert sh(sbx, "test -e /tmp/pwned").exit_code != 0
    finally:
        _kill(sbx)


# --------------------------------------------------------------- 7. the host around


def test_sandbox_cannot_reach_the_data_dir_other_sandboxes_or_host_root(isolation, data_dir, victim):
    """Attacker: root inside a sandbox after other tenants' data: the server's data dir
    (records with envd access tokens, API key hashes, template layers), another
    sandbox's disk and files, host root's home. It learns the data dir's path the way
    an attacker would (from ``/proc/self/mountinfo`` under container; the test knows it
    anyway). Tries: read them by path, open or create loop devices to read another
    sandbox's disk image.

    Stopped by: the sandbox's root holds none of it (pivot_root into its own overlay;
    the base template presents only the host's system dirs and a copy of /etc), no
    block devices exist in its /dev and it may not create any (no CAP_MKNOD, and a user
    namespace's mounts are ``nodev``; gVisor's device nodes are the Sentry's own). For
    other local users of the host, the data dir is the owner's alone (0700): layers
    hold what sandboxes' root made, setuid bits included.
    """
    assert os.stat(data_dir).st_mode & 0o077 == 0, f"{data_dir} is open to other local users"
    other = _create()
    marker = f"courier-other-tenant-{secrets.token_hex(8)}"
    host_root_file = f"/root/.courier-attack-{secrets.token_hex(4)}"
    try:
        with open(host_root_file, "w") as f:
            f.write(marker)
        os.chmod(host_root_file, 0o600)
        assert other.commands.run(f"echo {marker} > /home/user/tenant-secret && sync").exit_code == 0

        # Under container the data dir's path shows in /proc/self/mountinfo (overlay
        # options): the path is no secret, reaching what is behind it is the question.
        other_dir = os.path.join(data_dir, "runtime/sandboxes", other.sandbox_id)
        assert os.path.isfile(os.path.join(other_dir, "disk.img"))  # it is there on the host
        targets = [
            data_dir,
            f"{data_dir}/runtime/sandboxes",
            f"{other_dir}/state.json",
            f"{other_dir}/disk.img",
            f"{other_dir}/rootfs/home/user/tenant-secret",
            f"{other_dir}/disk/upper/home/user/tenant-secret",
            host_root_file,
            "/proc/1/root" + host_root_file,
        ]
        listing = " ".join(f"'{t}'" for t in targets)
        probe = sh(
            victim,
            f"for t in {listing}; do if [ -e \"$t\" ]; then echo \"EXISTS $t\"; head -c 200 \"$t\" 2>/dev/null; fi; done;"
            " cat /root/.courier-attack-* 2>/dev/null; ls /dev; true",
        )
        assert "EXISTS" not in probe.stdout and marker not in probe.stdout, probe.stdout
        assert not [d for d in probe.stdout.split() if d.startswith(("loop", "vd", "sd", "nvme", "dm-"))], probe.stdout

        # A node for the host's loop0 (some sandbox's disk): in /dev, /tmp, on its disk.
        mknod = (
            "import os,stat\n"
            "for path in ('/dev/courier-loop', '/tmp/courier-loop', '/home/user/courier-loop'):\n"
            "  try:\n"
            "    os.mknod(path, stat.S_IFBLK|0o600, os.makedev(7,0)); print('MADE', path)\n"
            "  except OSError as e:\n"
            "    print('refused', path, e.errno); continue\n"
            "  try:\n"
            "    with open(path, 'rb') as f: print('READ', path, len(f.read(512)))\n"
            "  except OSError as e: print('unreadable', path, e.errno)\n"
        )
        victim.files.write("/tmp/mknod.py", mknod)
        made = sh(victim, "python3 /tmp/mknod.py").stdout
        assert "READ" not in made, made
        if isolation == "container":
            assert "MADE" not in made, made
        else:
            # The Sentry may make device nodes in its own tmpfs; they reach no host device,
            # and none is made on the disk (the gofer refuses).
            assert "MADE /home/user/courier-loop" not in made, made
        found = sh(victim, f"grep -rs {marker} /home /tmp /root /var/tmp 2>/dev/null; true").stdout
        assert marker not in found, found
    finally:
        os.unlink(host_root_file)
        _kill(other)


def test_sandbox_cannot_learn_other_sandboxes_ids(victim):
    """Attacker: root inside a sandbox enumerating other tenants: a sandbox's id is its
    address at the proxy (``<port>-<id>.<domain>``), so knowing one lets a networked
    sandbox reach another tenant's public ports. Tries: the host's block devices as
    sysfs shows them (each sandbox's disk is a loop device whose backing file path holds
    its id), the mount table, the partition list.

    Stopped by: the sandbox sees only its own mounts, and the runtime masks the host's
    virtual block devices in the sandbox's read-only sysfs (gVisor's sysfs is the
    Sentry's own).
    """
    other = _create()
    try:
        out = sh(
            victim,
            "cat /sys/block/*/loop/backing_file /sys/devices/virtual/block/*/loop/backing_file"
            " /proc/self/mountinfo /proc/partitions 2>/dev/null; true",
        ).stdout
        assert other.sandbox_id not in out, f"another sandbox's id is visible inside: {other.sandbox_id}"
    finally:
        _kill(other)


def test_private_sandbox_urls_are_enforced_or_refused_never_ignored():
    """Attacker: anyone who learns a sandbox's id (it is in every URL of it) and reaches
    the proxy, against a sandbox created with E2B's ``allowPublicTraffic: false`` (its
    ports should need ``e2b-traffic-access-token``). Tries: an app port without the
    token.

    Stopped by: either the server enforces the token (no answer without it, the app's
    answer with it), or it refuses the create naming ``allowPublicTraffic``: a request
    for private URLs is never accepted and left public.
    """
    from e2b.exceptions import SandboxException

    try:
        sbx = _create(network={"allow_public_traffic": False})
    except SandboxException as refused:
        assert "allowPublicTraffic" in str(refused), refused
        return
    try:
        sbx.files.write("/tmp/www/index.html", "private page")
        sbx.commands.run("cd /tmp/www && python3 -m http.server 8000", background=True, timeout=0)
        host = sbx.get_host(8000)
        token = sbx.traffic_access_token
        assert token, "a private sandbox came back without a traffic access token"

        def get(headers: dict) -> httpx.Response:
            return httpx.get(PROXY + "/index.html", headers={"Host": host, **headers}, timeout=30)

        deadline = time.monotonic() + 30
        while get({"e2b-traffic-access-token": token}).status_code != 200:
            assert time.monotonic() < deadline, "the app never answered with the token"
            time.sleep(0.3)
        for headers in ({}, {"e2b-traffic-access-token": "not-the-token"}):
            denied = get(headers)
            assert denied.status_code != 200 and "private page" not in denied.text, (headers, denied.status_code)
    finally:
        _kill(sbx)


def test_sandbox_shares_no_abstract_sockets_or_ipc_with_the_host(victim):
    """Attacker: root inside a sandbox going for host services that are not files:
    abstract Unix sockets (no path, no permissions: containerd-shim's API was one,
    CVE-2020-15257) and System V shared memory of host processes. The test serves an
    abstract socket and holds a shared memory segment on the host first. Tries: connect
    to the socket by name, list and attach the segment.

    Stopped by: each sandbox has its own network namespace (abstract names are per
    namespace; under gVisor the Sentry's own network stack) and its own IPC namespace.
    """
    name = f"courier-attack-{secrets.token_hex(6)}"
    fake = FakeHostSocket("\0" + name)
    made = subprocess.run(["ipcmk", "-M", "4096"], capture_output=True, text=True, check=True).stdout
    shmid = made.strip().rsplit(" ", 1)[-1]
    try:
        connect = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX)\n"
            "try:\n"
            "  s.connect('\\0'+sys.argv[1]); s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); print('CONNECTED')\n"
            "except OSError as e: print('refused', e.errno)\n"
        )
        victim.files.write("/tmp/abstract.py", connect)
        out = sh(victim, f"python3 /tmp/abstract.py {name}").stdout
        time.sleep(0.3)
        assert "CONNECTED" not in out and fake.connections == [], (out, fake.connections)

        with open("/proc/sysvipc/shm") as table:
            key = next(line.split()[0] for line in table if line.split()[1:2] == [shmid])
        # The segment by its key, as any process of the host could find it: shmget(key, 0, 0).
        lookup = sh(
            victim,
            "python3 -c \"import ctypes; l=ctypes.CDLL(None, use_errno=True);"
            f" r=l.shmget({key}, 0, 0); print('FOUND' if r >= 0 else 'absent', ctypes.get_errno())\";"
            " cat /proc/sysvipc/shm 2>/dev/null; true",
        ).stdout
        assert "FOUND" not in lookup, lookup
        assert all(line.split()[0] != key for line in lookup.splitlines()[1:] if line.split()), lookup
    finally:
        fake.close()
        subprocess.run(["ipcrm", "-m", shmid], capture_output=True)
