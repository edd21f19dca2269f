"""Sandbox lifecycle through the official SDK against courier-sandboxd: create with
metadata, envs and timeout; get_info; list with filters and pagination; pause/resume
keeping files and processes; set_timeout; timeout expiry; kill."""

from __future__ import annotations

import re
import time
import uuid
from datetime import datetime, timedelta, timezone

from e2b import Sandbox, SandboxQuery, SandboxState

from support import eventually


def _list_ids(query: SandboxQuery, limit: int | None = None) -> list[str]:
    paginator = Sandbox.list(query=query, limit=limit)
    ids: list[str] = []
    while paginator.has_next:
        ids.extend(info.sandbox_id for info in paginator.next_items())
    return ids


def test_create_with_metadata_envs_and_timeout_then_get_info():
    run = uuid.uuid4().hex
    before = datetime.now(timezone.utc)
    sbx = Sandbox.create(timeout=120, metadata={"run": run, "with space": "a b&c=d"}, envs={"GREETING": "hi there"})
    try:
        assert re.fullmatch(r"[a-z0-9]{20}", sbx.sandbox_id), sbx.sandbox_id
        assert sbx.commands.run("echo $GREETING").stdout == "hi there\n"
        info = sbx.get_info()
        assert info.sandbox_id == sbx.sandbox_id
        assert info.template_id == "base"
        assert info.metadata == {"run": run, "with space": "a b&c=d"}
        assert info.state == SandboxState.RUNNING
        assert info.cpu_count >= 1 and info.memory_mb >= 128
        # endAt = start + timeout (allow slack for a slow machine).
        lifetime = (info.end_at - info.started_at).total_seconds()
        assert 110 <= lifetime <= 130, lifetime
        assert info.started_at >= before - timedelta(seconds=5)
        assert sbx.is_running()
    finally:
        sbx.kill()


def test_list_filters_by_metadata_and_state_and_paginates():
    run = uuid.uuid4().hex
    sandboxes = [Sandbox.create(timeout=180, metadata={"run": run, "n": str(i), "odd key": "v a&l=ue"}) for i in range(3)]
    try:
        ids = [s.sandbox_id for s in sandboxes]
        assert sorted(_list_ids(SandboxQuery(metadata={"run": run}))) == sorted(ids)
        assert _list_ids(SandboxQuery(metadata={"run": run, "n": "1"})) == [ids[1]]
        assert sorted(_list_ids(SandboxQuery(metadata={"odd key": "v a&l=ue", "run": run}))) == sorted(ids)
        assert _list_ids(SandboxQuery(metadata={"run": run, "odd key": "other"})) == []
        # Pagination: pages of one, newest first, every sandbox exactly once.
        assert _list_ids(SandboxQuery(metadata={"run": run}), limit=1) == list(reversed(ids))

        assert sandboxes[0].pause()
        assert _list_ids(SandboxQuery(metadata={"run": run}, state=[SandboxState.PAUSED])) == [ids[0]]
        running = _list_ids(SandboxQuery(metadata={"run": run}, state=[SandboxState.RUNNING]))
        assert sorted(running) == sorted(ids[1:])
        assert sorted(_list_ids(SandboxQuery(metadata={"run": run}, template="base"))) == sorted(ids)
        assert _list_ids(SandboxQuery(metadata={"run": run}, template="no-such-template")) == []
    finally:
        for s in sandboxes:
            s.kill()


def test_pause_then_resume_keeps_files_and_running_processes(sandbox: Sandbox):
    sandbox.files.write("/home/user/keep.txt", "still here")
    proc = sandbox.commands.run("sleep 1000", background=True, timeout=0)
    counter = sandbox.commands.run(
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.2; done",
        background=True,
        timeout=0,
    )
    eventually(lambda: sandbox.files.exists("/tmp/counter"), what="counter file")

    assert sandbox.pause() is True
    assert sandbox.is_running() is False
    assert Sandbox.get_info(sandbox.sandbox_id).state == SandboxState.PAUSED

    resumed = Sandbox.connect(sandbox.sandbox_id, timeout=300)
    assert resumed.is_running()
    assert resumed.files.read("/home/user/keep.txt") == "still here"
    pids = {p.pid for p in resumed.commands.list()}
    assert proc.pid in pids and counter.pid in pids, pids
    # The loop keeps counting after the thaw: its memory and state were kept.
    first = int(resumed.files.read("/tmp/counter").strip())
    eventually(lambda: int(resumed.files.read("/tmp/counter").strip()) > first, what="counter advancing")


def test_connect_to_a_running_sandbox_only_extends_its_timeout(sandbox: Sandbox):
    end = sandbox.get_info().end_at
    Sandbox.connect(sandbox.sandbox_id, timeout=60)
    assert sandbox.get_info().end_at == end, "connect never shortens"
    Sandbox.connect(sandbox.sandbox_id, timeout=900)
    assert sandbox.get_info().end_at > end


def test_set_timeout_moves_end_at_both_ways(sandbox: Sandbox):
    sandbox.set_timeout(900)
    later = sandbox.get_info().end_at
    sandbox.set_timeout(120)
    sooner = sandbox.get_info().end_at
    assert sooner < later
    assert abs((sooner - datetime.now(timezone.utc)).total_seconds() - 120) < 30


def test_timeout_expiry_kills_the_sandbox():
    sbx = Sandbox.create(timeout=300)
    try:
        sbx.set_timeout(3)
        eventually(lambda: not sbx.is_running(), timeout=90, interval=0.5, what="the timeout to kill the sandbox")
        assert sbx.sandbox_id not in _list_ids(SandboxQuery())
    finally:
        try:
            sbx.kill()
        except Exception:
            pass


def test_kill_then_is_running_is_false():
    sbx = Sandbox.create(timeout=120)
    assert sbx.is_running()
    assert sbx.kill() is True
    assert sbx.is_running() is False
    assert Sandbox.kill(sbx.sandbox_id) is False


def test_metrics_come_from_the_sandbox(sandbox: Sandbox):
    sandbox.commands.run("head -c 20000000 /dev/zero > /tmp/blob")
    time.sleep(1)
    metrics = sandbox.get_metrics()
    assert metrics, "at least one sample"
    m = metrics[-1]
    assert m.mem_used > 0 and m.mem_total >= m.mem_used
    assert m.cpu_count >= 1
