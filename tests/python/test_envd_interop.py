"""courier-envd interop scenarios, driven by the official E2B Python SDK (sync API).

Rules every test follows (CI runs as root on machines whose login shells write noise
to stderr): compare stdout only, and stderr only with ``in``; use absolute paths inside
the per-test ``tmp_dir``; wait for asynchronous effects with ``eventually`` instead of
fixed sleeps.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import urllib.error
import urllib.request
from typing import List

import httpx
import pytest

from e2b import (
    AuthenticationException,
    CommandExitException,
    FileNotFoundException,
    FilesystemEventType,
    FileType,
    InvalidArgumentException,
    NotFoundException,
    PtySize,
    Sandbox,
    SandboxException,
    TimeoutException,
)

from support import eventually

# Background commands get an explicit lifetime so nothing outlives a failed test by much.
BG_TIMEOUT = 120
# Above Linux's maximum pid_max (4194304): can never name a live process.
UNKNOWN_PID = 2_000_000_000


def _marker(name: str) -> str:
    return f"courier-{name}-{os.getpid()}-{time.monotonic_ns()}"


# --------------------------------------------------------------------------- health


def test_sandbox_is_running_via_health(sandbox: Sandbox):
    assert sandbox.is_running() is True


# --------------------------------------------------------------------------- commands.run


def test_run_returns_stdout_and_exit_code(sandbox: Sandbox):
    result = sandbox.commands.run("echo hello-courier")
    assert result.exit_code == 0
    assert result.stdout == "hello-courier\n"
    assert result.error is None


def test_run_nonzero_exit_raises_command_exit_exception(sandbox: Sandbox):
    with pytest.raises(CommandExitException) as info:
        sandbox.commands.run("echo out-line; echo err-line >&2; exit 3")
    err = info.value
    assert err.exit_code == 3
    assert err.stdout == "out-line\n"
    assert "err-line" in err.stderr


def test_nonzero_exit_reports_go_style_error(sandbox: Sandbox):
    with pytest.raises(CommandExitException) as info:
        sandbox.commands.run("exit 7")
    assert info.value.exit_code == 7
    assert info.value.error == "exit status 7"


def test_run_separates_stdout_and_stderr(sandbox: Sandbox):
    result = sandbox.commands.run("echo to-out; echo to-err >&2")
    assert result.stdout == "to-out\n"
    assert "to-err" in result.stderr
    assert "to-err" not in result.stdout


def test_run_with_envs_and_cwd(sandbox: Sandbox, tmp_dir: str):
    result = sandbox.commands.run(
        'printf "%s|%s|%s\\n" "$COURIER_A" "$COURIER_B" "$(pwd -P)"',
        envs={"COURIER_A": "alpha", "COURIER_B": "two words"},
        cwd=tmp_dir,
    )
    assert result.stdout == f"alpha|two words|{tmp_dir}\n"


def test_run_envs_are_per_process(sandbox: Sandbox):
    sandbox.commands.run("true", envs={"COURIER_ONLY_ONCE": "1"})
    result = sandbox.commands.run('echo "[${COURIER_ONLY_ONCE:-unset}]"')
    assert result.stdout == "[unset]\n"


def test_run_default_cwd_is_user_home(sandbox: Sandbox, user: str):
    result = sandbox.commands.run('whoami; pwd -P; cd "$HOME" && pwd -P')
    lines = result.stdout.splitlines()
    assert lines[0] == user
    assert lines[1] == lines[2], f"default cwd {lines[1]!r} is not $HOME {lines[2]!r}"


def test_run_as_explicit_user(sandbox: Sandbox, user: str):
    # The SDK sends `Authorization: Basic base64("<user>:")` to pick the Unix user.
    result = sandbox.commands.run("whoami", user=user)
    assert result.stdout == f"{user}\n"


def test_run_as_unknown_user_is_rejected(sandbox: Sandbox):
    with pytest.raises(AuthenticationException):
        sandbox.commands.run("true", user="courier-no-such-user")


def test_run_in_missing_cwd_fails(sandbox: Sandbox, tmp_dir: str):
    missing = os.path.join(tmp_dir, "does-not-exist")
    # envd answers invalid_argument "cwd '<p>' does not exist" instead of starting.
    with pytest.raises(InvalidArgumentException):
        sandbox.commands.run("pwd", cwd=missing)


def test_run_on_stdout_and_on_stderr_callbacks(sandbox: Sandbox):
    out_chunks: List[str] = []
    err_chunks: List[str] = []
    result = sandbox.commands.run(
        "echo one; echo two; echo three >&2",
        on_stdout=out_chunks.append,
        on_stderr=err_chunks.append,
    )
    assert out_chunks, "on_stdout was never called"
    assert "".join(out_chunks) == "one\ntwo\n"
    assert result.stdout == "one\ntwo\n"
    assert "three" in "".join(err_chunks)


def test_run_streams_output_incrementally(sandbox: Sandbox):
    # "early" must reach the client while the command still runs: the command only
    # finishes after the client, having seen "early", writes to its stdin.
    handle = sandbox.commands.run(
        "echo early; read x; echo late-$x", background=True, stdin=True, timeout=BG_TIMEOUT
    )
    seen = ""
    answered = False
    for out, _err, _pty in handle:
        if out is not None:
            seen += out
        if not answered and "early\n" in seen:
            handle.send_stdin("ok\n")
            answered = True
    assert answered, f"never saw 'early' before the end; stdout={seen!r}"
    assert seen == "early\nlate-ok\n"


def test_run_without_stdin_reads_eof(sandbox: Sandbox):
    # stdin=False (the default) means /dev/null: cat must finish at once.
    result = sandbox.commands.run("cat; echo done", timeout=30)
    assert result.stdout == "done\n"


def test_run_large_output_arrives_intact(sandbox: Sandbox):
    n = 750_000  # ~5.1 MB of stdout
    result = sandbox.commands.run(f"seq 1 {n}", timeout=150)
    expected = "".join(f"{i}\n" for i in range(1, n + 1))
    assert len(result.stdout) == len(expected)
    assert result.stdout == expected


def test_run_binary_output_is_decoded_with_replacement(sandbox: Sandbox):
    result = sandbox.commands.run("printf 'a\\xffb\\n'")
    assert result.stdout == "a\ufffdb\n"


def test_run_utf8_split_across_chunks(sandbox: Sandbox):
    # Multi-byte characters survive whatever chunking the daemon uses.
    text = "héllo wörld ✓ 🚀 " * 20000
    result = sandbox.commands.run(f"for i in $(seq 1 20000); do printf 'héllo wörld ✓ 🚀 '; done", timeout=150)
    assert result.stdout == text


def test_run_timeout_raises_timeout_exception(sandbox: Sandbox):
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        sandbox.commands.run("sleep 10", timeout=1)
    assert time.monotonic() - started < 9


def test_run_timeout_kills_process_server_side(sandbox: Sandbox):
    marker = _marker("lifetime")
    with pytest.raises(TimeoutException):
        sandbox.commands.run(f": {marker}; exec sleep 45", timeout=2)

    def gone() -> bool:
        return not any(marker in " ".join(p.args) for p in sandbox.commands.list())

    eventually(gone, timeout=20, what="process to be killed at its Connect-Timeout-Ms lifetime")


# --------------------------------------------------------------------------- background


def test_background_command_and_kill(sandbox: Sandbox):
    handle = sandbox.commands.run("sleep 90", background=True, timeout=BG_TIMEOUT)
    assert isinstance(handle.pid, int) and handle.pid > 0
    assert handle.kill() is True
    with pytest.raises(CommandExitException) as info:
        handle.wait()
    assert info.value.exit_code != 0
    # The process is gone now: a second kill reports "not found".
    assert sandbox.commands.kill(handle.pid) is False


def test_kill_unknown_pid_returns_false(sandbox: Sandbox):
    assert sandbox.commands.kill(UNKNOWN_PID) is False


def test_killed_command_reports_signal(sandbox: Sandbox):
    handle = sandbox.commands.run("sleep 90", background=True, timeout=BG_TIMEOUT)
    assert sandbox.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException) as info:
        handle.wait()
    assert info.value.exit_code == -1
    assert info.value.error is not None and "killed" in info.value.error


def test_background_command_wait_returns_output(sandbox: Sandbox):
    handle = sandbox.commands.run("sleep 1; echo bg-done", background=True, timeout=BG_TIMEOUT)
    result = handle.wait()
    assert result.exit_code == 0
    assert result.stdout == "bg-done\n"


def test_commands_list_shows_running_background_command(sandbox: Sandbox, tmp_dir: str):
    marker = _marker("list")
    handle = sandbox.commands.run(
        f"sleep 90; : {marker}",
        background=True,
        envs={"COURIER_LISTED": "yes"},
        cwd=tmp_dir,
        timeout=BG_TIMEOUT,
    )
    try:
        procs = sandbox.commands.list()
        mine = [p for p in procs if p.pid == handle.pid]
        assert len(mine) == 1, f"pid {handle.pid} not in {procs}"
        proc = mine[0]
        assert proc.cmd == "/bin/bash"
        assert proc.args == ["-l", "-c", f"sleep 90; : {marker}"]
        assert proc.envs.get("COURIER_LISTED") == "yes"
        assert proc.cwd == tmp_dir
        assert proc.tag is None
    finally:
        handle.kill()
    eventually(
        lambda: all(p.pid != handle.pid for p in sandbox.commands.list()),
        what="killed command to leave commands.list()",
    )


def test_connect_to_running_background_command(sandbox: Sandbox):
    handle = sandbox.commands.run(
        "read line; echo got-$line", background=True, stdin=True, timeout=BG_TIMEOUT
    )
    pid = handle.pid
    handle.disconnect()  # disconnecting must not kill the process

    assert any(p.pid == pid for p in sandbox.commands.list())
    again = sandbox.commands.connect(pid, timeout=BG_TIMEOUT)
    assert again.pid == pid
    sandbox.commands.send_stdin(pid, "x\n")
    result = again.wait()
    assert result.exit_code == 0
    assert result.stdout == "got-x\n"


def test_connect_to_unknown_pid_raises_not_found(sandbox: Sandbox):
    with pytest.raises(NotFoundException):
        sandbox.commands.connect(UNKNOWN_PID)


def test_iterate_background_command_output(sandbox: Sandbox):
    handle = sandbox.commands.run("echo a; echo b >&2; echo c", background=True, timeout=BG_TIMEOUT)
    stdout, stderr = [], []
    for out, err, _pty in handle:
        if out is not None:
            stdout.append(out)
        if err is not None:
            stderr.append(err)
    assert "".join(stdout) == "a\nc\n"
    assert "b" in "".join(stderr)


# --------------------------------------------------------------------------- stdin


def test_stdin_send_and_close(sandbox: Sandbox):
    handle = sandbox.commands.run("cat", background=True, stdin=True, timeout=BG_TIMEOUT)
    handle.send_stdin("hello ")
    sandbox.commands.send_stdin(handle.pid, b"stdin\n")
    handle.close_stdin()
    result = handle.wait()
    assert result.exit_code == 0
    assert result.stdout == "hello stdin\n"


def test_stdin_binary_roundtrip(sandbox: Sandbox):
    payload = bytes(range(256)) * 64
    handle = sandbox.commands.run(
        "od -An -v -tx1 | tr -d ' \\n'", background=True, stdin=True, timeout=BG_TIMEOUT
    )
    handle.send_stdin(payload)
    handle.close_stdin()
    result = handle.wait()
    assert result.stdout == payload.hex()


def test_stream_input(sandbox: Sandbox):
    handle = sandbox.commands.run("cat", background=True, stdin=True, timeout=BG_TIMEOUT)
    sandbox.commands.stream_input(handle.pid, iter([b"chunk-1 ", "chunk-2 ", b"chunk-3\n"]))
    handle.close_stdin()
    result = handle.wait()
    assert result.stdout == "chunk-1 chunk-2 chunk-3\n"


def test_send_stdin_to_unknown_pid_raises_not_found(sandbox: Sandbox):
    with pytest.raises(NotFoundException):
        sandbox.commands.send_stdin(UNKNOWN_PID, "x")


# --------------------------------------------------------------------------- PTY


class PtyReader:
    """Drains a sync PTY handle on a thread so the test can wait for output."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self._buf = bytearray()
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for _out, _err, pty in self.handle:
                if pty is not None:
                    with self._lock:
                        self._buf.extend(pty)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            self.done.set()

    def text(self) -> str:
        with self._lock:
            return self._buf.decode("utf-8", errors="replace")

    def wait_for(self, needle: str, timeout: float = 30) -> str:
        return eventually(
            lambda: needle in self.text(),
            timeout=timeout,
            what=f"{needle!r} on the PTY; output so far: {self.text()[-2000:]!r}",
        )


def test_pty_create_send_input_resize_and_kill(sandbox: Sandbox, tmp_dir: str):
    handle = sandbox.pty.create(PtySize(rows=24, cols=80), cwd=tmp_dir, timeout=BG_TIMEOUT)
    reader = PtyReader(handle)
    try:
        # The echoed input never contains the computed result, so this proves execution.
        sandbox.pty.send_stdin(handle.pid, b"echo hi-$((40+2))\n")
        reader.wait_for("hi-42")

        sandbox.pty.send_stdin(handle.pid, b"echo \"tty=$TERM\"\n")
        reader.wait_for("tty=xterm-256color")

        sandbox.pty.resize(handle.pid, PtySize(rows=31, cols=107))
        sandbox.pty.send_stdin(handle.pid, b"stty size\n")
        reader.wait_for("31 107")
    finally:
        killed = sandbox.pty.kill(handle.pid)
    assert killed is True
    assert reader.done.wait(30), "PTY stream did not end after kill"
    assert sandbox.pty.kill(handle.pid) is False


def test_pty_exit_ends_stream_with_exit_code(sandbox: Sandbox):
    handle = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=BG_TIMEOUT)
    sandbox.pty.send_stdin(handle.pid, b"exit 5\n")
    with pytest.raises(CommandExitException) as info:
        handle.wait()
    assert info.value.exit_code == 5


def test_pty_is_a_terminal(sandbox: Sandbox):
    handle = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=BG_TIMEOUT)
    reader = PtyReader(handle)
    try:
        sandbox.pty.send_stdin(handle.pid, b"[ -t 0 ] && [ -t 1 ] && echo is-a-$((1+1))-tty\n")
        reader.wait_for("is-a-2-tty")
    finally:
        sandbox.pty.kill(handle.pid)


# --------------------------------------------------------------------------- files: write/read


def test_write_and_read_text(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "hello.txt")
    info = sandbox.files.write(path, "hello, courier ✓")
    assert info.path == path
    assert info.name == "hello.txt"
    assert info.type == FileType.FILE
    assert sandbox.files.read(path) == "hello, courier ✓"
    with open(path, encoding="utf-8") as f:  # the sandbox is this machine
        assert f.read() == "hello, courier ✓"


def test_write_and_read_bytes(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "blob.bin")
    payload = bytes(range(256)) * 1024
    sandbox.files.write(path, payload)
    data = sandbox.files.read(path, format="bytes")
    assert isinstance(data, bytearray)
    assert bytes(data) == payload


def test_read_as_stream(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "stream.bin")
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with open(path, "wb") as f:
        f.write(payload)
    reader = sandbox.files.read(path, format="stream")
    with reader:
        got = b"".join(reader)
    assert got == payload


def test_read_with_gzip(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "gz.txt")
    text = "compressible line\n" * 10000
    sandbox.files.write(path, text)
    assert sandbox.files.read(path, gzip=True) == text


def test_write_overwrites_existing_file(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "over.txt")
    sandbox.files.write(path, "a much longer first version")
    sandbox.files.write(path, "short")
    assert sandbox.files.read(path) == "short"


def test_write_creates_parent_directories(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "a", "b", "c", "deep.txt")
    sandbox.files.write(path, "deep")
    assert sandbox.files.read(path) == "deep"
    assert sandbox.files.get_info(os.path.join(tmp_dir, "a", "b")).type == FileType.DIR


def test_write_empty_file(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "empty.txt")
    sandbox.files.write(path, "")
    assert sandbox.files.read(path) == ""
    assert sandbox.files.get_info(path).size == 0


def test_write_files_multiple(sandbox: Sandbox, tmp_dir: str):
    entries = [
        {"path": os.path.join(tmp_dir, "one.txt"), "data": "first"},
        {"path": os.path.join(tmp_dir, "sub", "two.bin"), "data": b"\x00\x01second"},
        {"path": os.path.join(tmp_dir, "three.txt"), "data": "third ✓"},
    ]
    infos = sandbox.files.write_files(entries)
    assert [i.path for i in infos] == [e["path"] for e in entries]
    assert [i.name for i in infos] == ["one.txt", "two.bin", "three.txt"]
    assert sandbox.files.read(entries[0]["path"]) == "first"
    assert bytes(sandbox.files.read(entries[1]["path"], format="bytes")) == b"\x00\x01second"
    assert sandbox.files.read(entries[2]["path"]) == "third ✓"


def test_write_file_like_uses_octet_stream(sandbox: Sandbox, tmp_dir: str):
    # With envd >= 0.5.7 (debug mode assumes 99.99.99) a file object is uploaded as a raw
    # application/octet-stream body.
    path = os.path.join(tmp_dir, "octet.bin")
    payload = os.urandom(2 * 1024 * 1024 + 3)
    info = sandbox.files.write(path, io.BytesIO(payload))
    assert info.path == path
    assert bytes(sandbox.files.read(path, format="bytes")) == payload


def test_write_gzip_octet_stream(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "gzip-upload.txt")
    text = "gzip me please\n" * 5000
    sandbox.files.write(path, text, gzip=True)
    assert sandbox.files.read(path) == text


def test_write_iterable_chunks(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "chunks.txt")
    sandbox.files.write(path, iter([b"part-1,", b"part-2,", b"part-3"]))
    assert sandbox.files.read(path) == "part-1,part-2,part-3"


def test_write_and_read_with_explicit_user(sandbox: Sandbox, tmp_dir: str, user: str):
    # `user=` travels as the `username` query parameter on /files.
    path = os.path.join(tmp_dir, "as-user.txt")
    info = sandbox.files.write(path, "mine", user=user)
    assert info.path == path
    assert sandbox.files.read(path, user=user) == "mine"
    assert sandbox.files.get_info(path, user=user).owner == user


def test_read_missing_file_raises_file_not_found(sandbox: Sandbox, tmp_dir: str):
    with pytest.raises(FileNotFoundException):
        sandbox.files.read(os.path.join(tmp_dir, "missing.txt"))


def test_read_directory_is_an_error(sandbox: Sandbox, tmp_dir: str):
    # envd: 400 for a directory -> InvalidArgumentException.
    with pytest.raises(InvalidArgumentException):
        sandbox.files.read(tmp_dir)


# --------------------------------------------------------------------------- files: list


def _tree(sandbox: Sandbox, root: str) -> None:
    sandbox.files.write(os.path.join(root, "a.txt"), "a")
    sandbox.files.write(os.path.join(root, "sub", "b.txt"), "bb")
    sandbox.files.write(os.path.join(root, "sub", "deeper", "c.txt"), "ccc")


def test_list_depth_1(sandbox: Sandbox, tmp_dir: str):
    _tree(sandbox, tmp_dir)
    entries = sandbox.files.list(tmp_dir)
    by_name = {e.name: e for e in entries}
    assert set(by_name) == {"a.txt", "sub"}
    assert by_name["a.txt"].type == FileType.FILE
    assert by_name["a.txt"].path == os.path.join(tmp_dir, "a.txt")
    assert by_name["a.txt"].size == 1
    assert by_name["sub"].type == FileType.DIR
    assert by_name["sub"].path == os.path.join(tmp_dir, "sub")


def test_list_depth_2(sandbox: Sandbox, tmp_dir: str):
    _tree(sandbox, tmp_dir)
    entries = sandbox.files.list(tmp_dir, depth=2)
    paths = sorted(os.path.relpath(e.path, tmp_dir) for e in entries)
    assert paths == ["a.txt", "sub", "sub/b.txt", "sub/deeper"]
    types = {os.path.relpath(e.path, tmp_dir): e.type for e in entries}
    assert types["sub/b.txt"] == FileType.FILE
    assert types["sub/deeper"] == FileType.DIR


def test_list_order_is_walkdir_preorder(sandbox: Sandbox, tmp_dir: str):
    _tree(sandbox, tmp_dir)
    sandbox.files.write(os.path.join(tmp_dir, "z.txt"), "z")
    entries = sandbox.files.list(tmp_dir, depth=3)
    rel = [os.path.relpath(e.path, tmp_dir) for e in entries]
    assert rel == ["a.txt", "sub", "sub/b.txt", "sub/deeper", "sub/deeper/c.txt", "z.txt"]


def test_list_missing_dir_raises_not_found(sandbox: Sandbox, tmp_dir: str):
    with pytest.raises(NotFoundException):
        sandbox.files.list(os.path.join(tmp_dir, "nope"))


# --------------------------------------------------------------------------- files: make_dir / rename / remove / exists / get_info


def test_make_dir_true_then_false(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "newdir")
    assert sandbox.files.make_dir(path) is True
    assert os.path.isdir(path)
    assert sandbox.files.make_dir(path) is False


def test_make_dir_creates_parents(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "p", "q", "r")
    assert sandbox.files.make_dir(path) is True
    assert os.path.isdir(path)


def test_rename_file(sandbox: Sandbox, tmp_dir: str):
    old = os.path.join(tmp_dir, "old.txt")
    new = os.path.join(tmp_dir, "moved", "new.txt")
    sandbox.files.write(old, "moving")
    info = sandbox.files.rename(old, new)
    assert info.path == new
    assert info.name == "new.txt"
    assert info.type == FileType.FILE
    assert sandbox.files.exists(old) is False
    assert sandbox.files.read(new) == "moving"


def test_rename_directory(sandbox: Sandbox, tmp_dir: str):
    old = os.path.join(tmp_dir, "dir-old")
    new = os.path.join(tmp_dir, "dir-new")
    sandbox.files.write(os.path.join(old, "inner.txt"), "inner")
    info = sandbox.files.rename(old, new)
    assert info.type == FileType.DIR
    assert sandbox.files.read(os.path.join(new, "inner.txt")) == "inner"
    assert sandbox.files.exists(old) is False


def test_rename_missing_source_raises_not_found(sandbox: Sandbox, tmp_dir: str):
    with pytest.raises(NotFoundException):
        sandbox.files.rename(os.path.join(tmp_dir, "ghost"), os.path.join(tmp_dir, "x"))


def test_remove_file_then_exists_false(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "doomed.txt")
    sandbox.files.write(path, "bye")
    assert sandbox.files.exists(path) is True
    sandbox.files.remove(path)
    assert sandbox.files.exists(path) is False
    assert not os.path.exists(path)


def test_remove_directory_recursively(sandbox: Sandbox, tmp_dir: str):
    root = os.path.join(tmp_dir, "tree")
    _tree(sandbox, root)
    sandbox.files.remove(root)
    assert sandbox.files.exists(root) is False


def test_remove_missing_path_succeeds(sandbox: Sandbox, tmp_dir: str):
    sandbox.files.remove(os.path.join(tmp_dir, "never-existed"))


def test_exists(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "here.txt")
    sandbox.files.write(path, "x")
    assert sandbox.files.exists(path) is True
    assert sandbox.files.exists(tmp_dir) is True
    assert sandbox.files.exists(os.path.join(tmp_dir, "not-here.txt")) is False


def test_get_info_file(sandbox: Sandbox, tmp_dir: str, user: str):
    path = os.path.join(tmp_dir, "info.txt")
    sandbox.files.write(path, "12345")
    info = sandbox.files.get_info(path)
    assert info.name == "info.txt"
    assert info.path == path
    assert info.type == FileType.FILE
    assert info.size == 5
    assert info.mode == 0o644
    assert info.permissions == "-rw-r--r--"
    assert info.owner == user
    assert info.group
    assert abs(info.modified_time.timestamp() - os.stat(path).st_mtime) < 1.0
    assert info.symlink_target is None


def test_get_info_directory(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "infodir")
    sandbox.files.make_dir(path)
    info = sandbox.files.get_info(path)
    assert info.type == FileType.DIR
    assert info.name == "infodir"
    assert info.mode == 0o755
    assert info.permissions == "drwxr-xr-x"


def test_get_info_symlink(sandbox: Sandbox, tmp_dir: str):
    target = os.path.join(tmp_dir, "target.txt")
    link = os.path.join(tmp_dir, "link.txt")
    sandbox.files.write(target, "t")
    os.symlink(target, link)
    info = sandbox.files.get_info(link)
    assert info.symlink_target == target
    assert info.type in (FileType.FILE, FileType.SYMLINK)


def test_get_info_missing_raises_file_not_found(sandbox: Sandbox, tmp_dir: str):
    with pytest.raises(FileNotFoundException):
        sandbox.files.get_info(os.path.join(tmp_dir, "missing"))


# --------------------------------------------------------------------------- watch_dir (sync: CreateWatcher / GetWatcherEvents / RemoveWatcher)


def _collect(handle, wanted, timeout: float = 20):
    seen = []

    def probe():
        seen.extend(handle.get_new_events())
        return all(any(e.name == n and e.type == t for e in seen) for n, t in wanted)

    eventually(probe, timeout=timeout, interval=0.2, what=f"watch events {wanted}; seen {seen}")
    return seen


def test_watch_dir_sees_create_and_write(sandbox: Sandbox, tmp_dir: str):
    handle = sandbox.files.watch_dir(tmp_dir)
    try:
        sandbox.files.write(os.path.join(tmp_dir, "watched.txt"), "hello")
        seen = _collect(
            handle,
            [("watched.txt", FilesystemEventType.CREATE), ("watched.txt", FilesystemEventType.WRITE)],
        )
        assert all(e.name == "watched.txt" for e in seen), seen
    finally:
        handle.stop()


def test_watch_dir_new_file_yields_inotify_events(sandbox: Sandbox, tmp_dir: str):
    # inotify-faithful: an upload of a new small file is CREATE, CHMOD (the chown), WRITE.
    handle = sandbox.files.watch_dir(tmp_dir)
    try:
        sandbox.files.write(os.path.join(tmp_dir, "three.txt"), "abc")
        seen = []

        def probe():
            seen.extend(handle.get_new_events())
            return len(seen) >= 3

        eventually(probe, interval=0.2, what=f"three events; seen {seen}")
        assert [(e.name, e.type) for e in seen] == [
            ("three.txt", FilesystemEventType.CREATE),
            ("three.txt", FilesystemEventType.CHMOD),
            ("three.txt", FilesystemEventType.WRITE),
        ]
    finally:
        handle.stop()


def test_watch_dir_events_are_drained(sandbox: Sandbox, tmp_dir: str):
    handle = sandbox.files.watch_dir(tmp_dir)
    try:
        sandbox.files.write(os.path.join(tmp_dir, "once.txt"), "1")
        _collect(handle, [("once.txt", FilesystemEventType.WRITE)])
        time.sleep(2)
        handle.get_new_events()  # drop any straggler (e.g. CHMOD from the chown)
        assert handle.get_new_events() == []
    finally:
        handle.stop()


def test_watch_dir_sees_remove_and_rename(sandbox: Sandbox, tmp_dir: str):
    a = os.path.join(tmp_dir, "a.txt")
    gone = os.path.join(tmp_dir, "gone.txt")
    sandbox.files.write(a, "a")
    sandbox.files.write(gone, "g")
    handle = sandbox.files.watch_dir(tmp_dir)
    try:
        sandbox.files.remove(gone)
        sandbox.files.rename(a, os.path.join(tmp_dir, "b.txt"))
        _collect(
            handle,
            [("gone.txt", FilesystemEventType.REMOVE), ("a.txt", FilesystemEventType.RENAME)],
        )
    finally:
        handle.stop()


def test_watch_dir_recursive_sees_nested_file(sandbox: Sandbox, tmp_dir: str):
    sandbox.files.make_dir(os.path.join(tmp_dir, "nested"))
    handle = sandbox.files.watch_dir(tmp_dir, recursive=True)
    try:
        sandbox.files.write(os.path.join(tmp_dir, "nested", "file.txt"), "deep")
        _collect(
            handle,
            [
                ("nested/file.txt", FilesystemEventType.CREATE),
                ("nested/file.txt", FilesystemEventType.WRITE),
            ],
        )
    finally:
        handle.stop()


def test_watch_dir_recursive_sees_new_subdirectory_contents(sandbox: Sandbox, tmp_dir: str):
    handle = sandbox.files.watch_dir(tmp_dir, recursive=True)
    try:
        sandbox.files.make_dir(os.path.join(tmp_dir, "later"))
        _collect(handle, [("later", FilesystemEventType.CREATE)])
        sandbox.files.write(os.path.join(tmp_dir, "later", "inside.txt"), "x")
        _collect(handle, [("later/inside.txt", FilesystemEventType.WRITE)])
    finally:
        handle.stop()


def test_watch_dir_non_recursive_ignores_nested(sandbox: Sandbox, tmp_dir: str):
    sandbox.files.make_dir(os.path.join(tmp_dir, "nested"))
    handle = sandbox.files.watch_dir(tmp_dir)
    try:
        sandbox.files.write(os.path.join(tmp_dir, "nested", "hidden.txt"), "x")
        sandbox.files.write(os.path.join(tmp_dir, "top.txt"), "x")
        seen = _collect(handle, [("top.txt", FilesystemEventType.WRITE)])
        assert not any("hidden.txt" in e.name for e in seen), seen
    finally:
        handle.stop()


def test_watch_dir_include_entry(sandbox: Sandbox, tmp_dir: str):
    handle = sandbox.files.watch_dir(tmp_dir, include_entry=True)
    try:
        path = os.path.join(tmp_dir, "entry.txt")
        sandbox.files.write(path, "abc")
        seen = _collect(handle, [("entry.txt", FilesystemEventType.WRITE)])
        writes = [e for e in seen if e.type == FilesystemEventType.WRITE and e.entry is not None]
        assert writes, f"no WRITE event carried an entry: {seen}"
        assert writes[-1].entry.path == path
        assert writes[-1].entry.type == FileType.FILE
    finally:
        handle.stop()


def test_watch_missing_dir_raises_not_found(sandbox: Sandbox, tmp_dir: str):
    with pytest.raises(NotFoundException):
        sandbox.files.watch_dir(os.path.join(tmp_dir, "missing"))


# --------------------------------------------------------------------------- upload / download URLs


def test_upload_url_then_download_url_roundtrip(sandbox: Sandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "via-url", "payload.bin")
    payload = os.urandom(256 * 1024) + b"end"

    upload = sandbox.upload_url(path)
    assert upload.startswith("http://")
    assert "signature" not in upload  # debug mode: no access token, no signature
    r = httpx.post(upload, files={"file": ("payload.bin", payload)}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, list) and len(body) == 1
    assert body[0]["path"] == path
    assert body[0]["name"] == "payload.bin"
    assert body[0]["type"] == "file"

    download = sandbox.download_url(path)
    with urllib.request.urlopen(download, timeout=60) as resp:
        assert resp.status == 200
        assert resp.read() == payload

    assert bytes(sandbox.files.read(path, format="bytes")) == payload


def test_download_url_missing_file_is_json_404(sandbox: Sandbox, tmp_dir: str):
    url = sandbox.download_url(os.path.join(tmp_dir, "missing.bin"))
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, timeout=60)
    assert info.value.code == 404
    body = json.loads(info.value.read())
    assert body["code"] == 404
    assert isinstance(body["message"], str) and body["message"]


# --------------------------------------------------------------------------- acting as the requesting user


def test_files_are_read_and_written_as_the_requesting_user(sandbox: Sandbox, tmp_dir: str):
    # Attack: code running as an unprivileged user plants a link to a file only root may
    # read (or write), then asks envd, which runs as root, to read or write it for them.
    if os.geteuid() != 0:
        pytest.skip("needs root: envd acts as another user only when it runs as root")
    os.chmod(tmp_dir, 0o755)  # run.sh makes the directories above it traversable
    secret = os.path.join(tmp_dir, "secret")
    with open(secret, "w") as f:
        f.write("root-only secret")
    os.chmod(secret, 0o600)
    link = os.path.join(tmp_dir, "link")
    os.symlink(secret, link)
    # Positive control: what `nobody` may read, it reads; so the refusals below are about
    # the linked file's mode, not a directory on the way.
    public = os.path.join(tmp_dir, "public")
    with open(public, "w") as f:
        f.write("for everyone")
    os.chmod(public, 0o644)
    assert sandbox.files.read(public, user="nobody") == "for everyone"

    with pytest.raises(SandboxException) as err:
        sandbox.files.read(link, user="nobody")
    assert "403" in str(err.value)
    assert "root-only secret" not in str(err.value)
    with pytest.raises(SandboxException) as err:
        sandbox.files.write(link, "pwned", user="nobody")
    assert "403" in str(err.value)
    with pytest.raises(SandboxException) as err:
        sandbox.files.make_dir(os.path.join(tmp_dir, "made"), user="nobody")
    assert "PERMISSION_DENIED" in str(err.value).upper()

    with open(secret) as f:
        assert f.read() == "root-only secret"
    assert not os.path.exists(os.path.join(tmp_dir, "made"))
    # Root still reads it through the same link.
    assert sandbox.files.read(link, user="root") == "root-only secret"
