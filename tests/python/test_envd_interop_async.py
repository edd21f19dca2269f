"""courier-envd interop scenarios through the official SDK's ``AsyncSandbox``.

The async client uses the streaming ``WatchDir`` RPC (the sync one polls), and its
command handles consume the Start/Connect streams on a background task. Same rules as
the sync suite: stdout compared exactly, stderr only with ``in``, absolute paths in the
per-test ``tmp_dir``, ``eventually_async`` instead of fixed sleeps.
"""

from __future__ import annotations

import asyncio
import os
from typing import List

import pytest

from e2b import (
    AsyncSandbox,
    CommandExitException,
    FilesystemEvent,
    FilesystemEventType,
    NotFoundException,
    PtySize,
    TimeoutException,
)

from support import eventually_async

BG_TIMEOUT = 120
UNKNOWN_PID = 2_000_000_000


# --------------------------------------------------------------------------- commands


async def test_async_run_returns_stdout_and_exit_code(async_sandbox: AsyncSandbox):
    result = await async_sandbox.commands.run("echo async-hello")
    assert result.exit_code == 0
    assert result.stdout == "async-hello\n"


async def test_async_nonzero_exit_raises_command_exit_exception(async_sandbox: AsyncSandbox):
    with pytest.raises(CommandExitException) as info:
        await async_sandbox.commands.run("echo o; echo e >&2; exit 4")
    assert info.value.exit_code == 4
    assert info.value.stdout == "o\n"
    assert "e" in info.value.stderr


async def test_async_run_with_envs_cwd_and_callbacks(async_sandbox: AsyncSandbox, tmp_dir: str):
    chunks: List[str] = []

    async def on_stdout(chunk: str) -> None:
        chunks.append(chunk)

    result = await async_sandbox.commands.run(
        'echo "$COURIER_X"; pwd -P', envs={"COURIER_X": "ex"}, cwd=tmp_dir, on_stdout=on_stdout
    )
    assert result.stdout == f"ex\n{tmp_dir}\n"
    assert "".join(chunks) == result.stdout


async def test_async_background_command_and_kill(async_sandbox: AsyncSandbox):
    handle = await async_sandbox.commands.run("sleep 90", background=True, timeout=BG_TIMEOUT)
    procs = await async_sandbox.commands.list()
    assert any(p.pid == handle.pid for p in procs)
    assert await handle.kill() is True
    with pytest.raises(CommandExitException):
        await handle.wait()
    assert await async_sandbox.commands.kill(handle.pid) is False
    assert await async_sandbox.commands.kill(UNKNOWN_PID) is False


async def test_async_stdin(async_sandbox: AsyncSandbox):
    handle = await async_sandbox.commands.run("cat", background=True, stdin=True, timeout=BG_TIMEOUT)
    await handle.send_stdin("async ")
    await async_sandbox.commands.send_stdin(handle.pid, b"stdin\n")
    await handle.close_stdin()
    result = await handle.wait()
    assert result.stdout == "async stdin\n"


async def test_async_connect_to_running_command(async_sandbox: AsyncSandbox):
    handle = await async_sandbox.commands.run(
        "read line; echo got-$line", background=True, stdin=True, timeout=BG_TIMEOUT
    )
    await handle.disconnect()
    again = await async_sandbox.commands.connect(handle.pid, timeout=BG_TIMEOUT)
    await async_sandbox.commands.send_stdin(handle.pid, "y\n")
    result = await again.wait()
    assert result.stdout == "got-y\n"


async def test_async_connect_unknown_pid_raises_not_found(async_sandbox: AsyncSandbox):
    with pytest.raises(NotFoundException):
        await async_sandbox.commands.connect(UNKNOWN_PID)


async def test_async_run_timeout_raises_timeout_exception(async_sandbox: AsyncSandbox):
    with pytest.raises(TimeoutException):
        await async_sandbox.commands.run("sleep 10", timeout=1)


async def test_async_large_output_arrives_intact(async_sandbox: AsyncSandbox):
    n = 750_000
    result = await async_sandbox.commands.run(f"seq 1 {n}", timeout=150)
    assert result.stdout == "".join(f"{i}\n" for i in range(1, n + 1))


async def test_async_pty(async_sandbox: AsyncSandbox, tmp_dir: str):
    output = bytearray()

    handle = await async_sandbox.pty.create(
        PtySize(rows=24, cols=80), on_data=output.extend, cwd=tmp_dir, timeout=BG_TIMEOUT
    )
    try:
        await async_sandbox.pty.send_stdin(handle.pid, b"echo async-hi-$((20+1))\n")
        await eventually_async(
            lambda: b"async-hi-21" in output, timeout=30, what=f"PTY output; got {bytes(output)[-2000:]!r}"
        )
        await async_sandbox.pty.resize(handle.pid, PtySize(rows=40, cols=120))
        await async_sandbox.pty.send_stdin(handle.pid, b"stty size\n")
        await eventually_async(
            lambda: b"40 120" in output, timeout=30, what=f"resized PTY; got {bytes(output)[-2000:]!r}"
        )
    finally:
        killed = await async_sandbox.pty.kill(handle.pid)
    assert killed is True
    with pytest.raises(CommandExitException):
        await asyncio.wait_for(handle.wait(), 30)


# --------------------------------------------------------------------------- watch_dir (streaming WatchDir)


def _has(events: List[FilesystemEvent], name: str, kind: FilesystemEventType) -> bool:
    return any(e.name == name and e.type == kind for e in events)


async def test_async_watch_dir_sees_create_and_write(async_sandbox: AsyncSandbox, tmp_dir: str):
    events: List[FilesystemEvent] = []
    handle = await async_sandbox.files.watch_dir(tmp_dir, on_event=events.append, timeout=BG_TIMEOUT)
    try:
        await async_sandbox.files.write(os.path.join(tmp_dir, "w.txt"), "hello")
        await eventually_async(
            lambda: _has(events, "w.txt", FilesystemEventType.CREATE)
            and _has(events, "w.txt", FilesystemEventType.WRITE),
            what=f"CREATE+WRITE for w.txt; seen {events}",
        )
    finally:
        await handle.stop()


async def test_async_watch_dir_recursive(async_sandbox: AsyncSandbox, tmp_dir: str):
    await async_sandbox.files.make_dir(os.path.join(tmp_dir, "nested"))
    events: List[FilesystemEvent] = []
    handle = await async_sandbox.files.watch_dir(
        tmp_dir, on_event=events.append, recursive=True, timeout=BG_TIMEOUT
    )
    try:
        await async_sandbox.files.write(os.path.join(tmp_dir, "nested", "file.txt"), "deep")
        await eventually_async(
            lambda: _has(events, "nested/file.txt", FilesystemEventType.WRITE),
            what=f"WRITE for nested/file.txt; seen {events}",
        )
    finally:
        await handle.stop()


async def test_async_watch_dir_stop_calls_on_exit(async_sandbox: AsyncSandbox, tmp_dir: str):
    events: List[FilesystemEvent] = []
    exits: List[object] = []
    handle = await async_sandbox.files.watch_dir(
        tmp_dir, on_event=events.append, on_exit=exits.append, timeout=BG_TIMEOUT
    )
    await async_sandbox.files.write(os.path.join(tmp_dir, "alive.txt"), "x")
    await eventually_async(
        lambda: _has(events, "alive.txt", FilesystemEventType.WRITE), what=f"WRITE; seen {events}"
    )
    assert exits == [], f"watch stream ended early: {exits}"
    await handle.stop()
    assert exits == [None]


async def test_async_watch_missing_dir_raises_not_found(async_sandbox: AsyncSandbox, tmp_dir: str):
    with pytest.raises(NotFoundException):
        await async_sandbox.files.watch_dir(
            os.path.join(tmp_dir, "missing"), on_event=lambda e: None, timeout=BG_TIMEOUT
        )


# --------------------------------------------------------------------------- files (smoke)


async def test_async_files_roundtrip(async_sandbox: AsyncSandbox, tmp_dir: str):
    path = os.path.join(tmp_dir, "async", "f.txt")
    info = await async_sandbox.files.write(path, "async file")
    assert info.path == path
    assert await async_sandbox.files.read(path) == "async file"
    assert await async_sandbox.files.exists(path) is True
    names = [e.name for e in await async_sandbox.files.list(os.path.dirname(path))]
    assert names == ["f.txt"]
    await async_sandbox.files.remove(path)
    assert await async_sandbox.files.exists(path) is False
