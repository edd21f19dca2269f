"""Courier's own lifecycle checks through the official E2B Python SDK.

Run by `cargo xtask e2b-suite /abs/path/to/tests/e2b-suite/courier/test_lifecycle.py`
against courier-sandboxd (E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY set by the runner).

The official suite's `test_auto_resume_wakes_on_http_request` reaches the sandbox at
`https://<port>-<id>.<domain>` (`get_host`): the runner has no DNS for `*.courier.test`
nor TLS on the proxy, so these reach the same port through the sandbox URL with E2B's
routing headers instead, which the proxy serves the same way.
"""

import os
import time

import httpx
from e2b import Sandbox, SandboxState


def _wait_paused(sbx: Sandbox) -> None:
    for _ in range(60):
        if sbx.get_info().state == SandboxState.PAUSED:
            return
        time.sleep(0.5)
    raise AssertionError("the sandbox did not pause at its timeout")


def _get_port(sbx: Sandbox, port: int) -> httpx.Response:
    return httpx.get(
        os.environ["E2B_SANDBOX_URL"],
        headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(port)},
        timeout=15.0,
    )


def test_auto_resume_wakes_on_http_request_through_the_proxy():
    sbx = Sandbox.create(
        timeout=3, lifecycle={"on_timeout": "pause", "auto_resume": True}
    )
    try:
        assert sbx.get_info().lifecycle["auto_resume"] is True
        sbx.commands.run("python3 -m http.server 8000", background=True)
        _wait_paused(sbx)
        res = _get_port(sbx, 8000)
        assert res.status_code == 200
        assert sbx.get_info().state == SandboxState.RUNNING
        assert sbx.is_running()
    finally:
        sbx.kill()


def test_without_auto_resume_traffic_gets_the_paused_answer():
    sbx = Sandbox.create(timeout=3, lifecycle={"on_timeout": "pause"})
    try:
        sbx.commands.run("python3 -m http.server 8000", background=True)
        _wait_paused(sbx)
        res = _get_port(sbx, 8000)
        assert res.status_code == 502
        assert sbx.get_info().state == SandboxState.PAUSED
    finally:
        sbx.kill()
