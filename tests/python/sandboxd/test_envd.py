"""envd through the sandbox proxy: commands, PTY, files and watch inside a real sandbox."""

from __future__ import annotations

import threading

import pytest
from e2b import CommandExitException, FilesystemEventType, PtySize, Sandbox

from support import eventually


def test_commands_run_as_user_with_exit_codes(sandbox: Sandbox):
    out = sandbox.commands.run("whoami; pwd; echo err >&2")
    assert out.stdout == "user\n/home/user\n"
    assert out.stderr == "err\n"
    with pytest.raises(CommandExitException) as exc:
        sandbox.commands.run("exit 7")
    assert exc.value.exit_code == 7
    # The base layer is the host's /usr: sudo is there when the host has it.
    if sandbox.commands.run("command -v sudo || true").stdout.strip():
        assert sandbox.commands.run("sudo -n id -u").stdout.strip() == "0"
    assert sandbox.commands.run("hostname").stdout.strip() == sandbox.sandbox_id


def test_commands_stream_and_background(sandbox: Sandbox):
    chunks: list[str] = []
    sandbox.commands.run("for i in 1 2 3; do echo line$i; done", on_stdout=chunks.append)
    assert "".join(chunks) == "line1\nline2\nline3\n"
    handle = sandbox.commands.run("sleep 600", background=True, timeout=0)
    assert any(p.pid == handle.pid for p in sandbox.commands.list())
    assert handle.kill()


def test_pty_runs_an_interactive_shell(sandbox: Sandbox):
    output = bytearray()
    seen = threading.Event()

    handle = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=120)

    failures: list[BaseException] = []

    def reader():
        try:
            for _stdout, _stderr, pty in handle:
                if pty:
                    output.extend(pty)
                    if b"pty-42" in output:
                        seen.set()
        except BaseException as e:  # reported by the test, not lost in the thread
            failures.append(e)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    sandbox.pty.send_stdin(handle.pid, b"echo pty-$((40+2))\n")
    assert seen.wait(60), output.decode(errors="replace")
    assert sandbox.pty.kill(handle.pid)
    # The kill ends the stream cleanly (an end event), not by the sandbox going away.
    t.join(30)
    assert not t.is_alive(), "the PTY stream did not end after the kill"
    assert not failures, failures


def test_files_write_read_list_and_remove(sandbox: Sandbox):
    sandbox.files.write("dir/a.txt", "alpha")
    sandbox.files.write("/tmp/b.bin", b"\x00\x01\x02")
    assert sandbox.files.read("/home/user/dir/a.txt") == "alpha"
    assert sandbox.files.read("/tmp/b.bin", format="bytes") == b"\x00\x01\x02"
    names = {e.name for e in sandbox.files.list("/home/user/dir")}
    assert names == {"a.txt"}
    assert sandbox.files.exists("dir/a.txt")
    sandbox.files.remove("dir/a.txt")
    assert not sandbox.files.exists("dir/a.txt")
    # Written files belong to the user.
    sandbox.files.write("owned.txt", "x")
    assert sandbox.commands.run("stat -c %U owned.txt").stdout.strip() == "user"


def test_watch_dir_sees_writes(sandbox: Sandbox):
    sandbox.files.make_dir("/home/user/watched")
    handle = sandbox.files.watch_dir("/home/user/watched")
    try:
        sandbox.files.write("/home/user/watched/new.txt", "hello")
        seen = []

        def probe():
            seen.extend(handle.get_new_events())
            return any(e.name == "new.txt" and e.type == FilesystemEventType.WRITE for e in seen)

        eventually(probe, what=f"a write event; seen {seen}")
    finally:
        handle.stop()


def test_a_sandbox_never_sees_another_sandboxs_files():
    a = Sandbox.create(timeout=120)
    b = Sandbox.create(timeout=120)
    try:
        a.files.write("/tmp/secret.txt", "only in a")
        assert not b.files.exists("/tmp/secret.txt")
        assert b.commands.run("ls /root 2>&1 || true").stdout.strip() in ("", "ls: cannot open directory '/root': Permission denied")
    finally:
        a.kill()
        b.kill()
