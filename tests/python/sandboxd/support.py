"""Small helpers for the courier-sandboxd scenario suite."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

import httpx

T = TypeVar("T")


def eventually(
    probe: Callable[[], T],
    timeout: float = 60.0,
    interval: float = 0.2,
    what: str = "condition",
) -> T:
    """Call ``probe`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T = probe()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
        time.sleep(interval)
        last = probe()
    return last


@dataclass
class Shell:
    """What a command run in a sandbox did (stdout only is trusted: root's login profile
    on the test machines prints noise on stderr)."""

    exit_code: int
    stdout: str
    stderr: str


def sh(sbx, command: str, user: str = "root", timeout: float = 120) -> Shell:
    """Runs ``command`` in ``sbx`` through envd as ``user`` and returns its exit code and
    output whatever the exit code (the SDK raises on non-zero; attacks are expected to)."""
    from e2b.sandbox.commands.command_handle import CommandExitException

    try:
        result = sbx.commands.run(command, user=user, timeout=timeout)
        return Shell(result.exit_code, result.stdout, result.stderr)
    except CommandExitException as failed:
        return Shell(failed.exit_code, failed.stdout, failed.stderr)


def sandbox_host_processes(sandbox_id: str) -> list[int]:
    """Host PIDs of every process in the sandbox's cgroup (``courier/<id>`` in any
    hierarchy, cgroup v1 or v2), read from the host's ``/proc``."""
    suffix = f"/courier/{sandbox_id}"
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cgroup") as cgroups:
                if any(line.rstrip("\n").endswith(suffix) for line in cgroups):
                    pids.append(int(entry))
        except OSError:  # gone meanwhile
            continue
    return pids


def host_status(pid: int) -> dict[str, str]:
    """``/proc/<pid>/status`` of a host process as a dict (empty when it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)
    except OSError:
        return {}


def host_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def api_headers() -> dict[str, str]:
    return {"X-API-Key": os.environ["E2B_API_KEY"]}


def build_template_rest(
    name: str,
    steps: Iterable[dict] = (),
    *,
    from_template: str = "base",
    disk_size_mb: int | None = None,
    isolation: str | None = None,
    timeout: float = 180,
) -> tuple[httpx.Response, dict | None]:
    """Builds a template through E2B's REST build API directly, for the settings the
    Python SDK's ``Template.build`` does not send (``diskSizeMB``, courier's
    ``isolation``). Returns the answer to ``POST /v3/templates`` and, when that was
    accepted, the final build status."""
    api = os.environ["E2B_API_URL"]
    body: dict = {"name": name}
    if disk_size_mb is not None:
        body["diskSizeMB"] = disk_size_mb
    if isolation is not None:
        body["isolation"] = isolation
    requested = httpx.post(f"{api}/v3/templates", headers=api_headers(), json=body, timeout=60)
    if requested.status_code != 202:
        return requested, None
    ids = requested.json()
    template_id, build_id = ids["templateID"], ids["buildID"]
    started = httpx.post(
        f"{api}/v2/templates/{template_id}/builds/{build_id}",
        headers=api_headers(),
        json={"fromTemplate": from_template, "steps": list(steps)},
        timeout=60,
    )
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + timeout
    while True:
        status = httpx.get(
            f"{api}/templates/{template_id}/builds/{build_id}/status",
            headers=api_headers(),
            timeout=60,
        ).json()
        if status["status"] not in ("waiting", "building"):
            return requested, status
        if time.monotonic() > deadline:
            raise AssertionError(f"template {name} still {status['status']} after {timeout}s")
        time.sleep(0.3)


def delete_template(name: str) -> None:
    """Removes a template through the REST API (no sandbox may still use it)."""
    httpx.delete(f"{os.environ['E2B_API_URL']}/templates/{name}", headers=api_headers(), timeout=60)
