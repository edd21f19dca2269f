"""`get_host(port)`: a web server started inside the sandbox is reachable through the
sandbox proxy with a `<port>-<id>.<domain>` Host header (sent explicitly: the test has no
wildcard DNS)."""

from __future__ import annotations

import os

import httpx
from e2b import Sandbox

from support import eventually

PROXY = os.environ["E2B_SANDBOX_URL"]


def _get(host: str, path: str = "/") -> httpx.Response:
    return httpx.get(PROXY + path, headers={"Host": host}, timeout=30)


def test_get_host_reaches_python_http_server(sandbox: Sandbox):
    sandbox.files.write("/tmp/www/index.html", "<h1>from the sandbox</h1>")
    host = sandbox.get_host(8000)
    assert host.startswith(f"8000-{sandbox.sandbox_id}.")

    closed = _get(host)
    assert closed.status_code == 502
    assert "port is not open" in closed.json()["message"]

    sandbox.commands.run("cd /tmp/www && python3 -m http.server 8000", background=True, timeout=0)
    eventually(lambda: _get(host).status_code == 200, what="python3 -m http.server")
    response = _get(host, "/index.html")
    assert response.text == "<h1>from the sandbox</h1>"

    sandbox.kill()
    gone = _get(host)
    assert gone.status_code == 502
    assert gone.json() == {"sandboxId": sandbox.sandbox_id, "message": "The sandbox was not found", "code": 502}


def test_unknown_sandbox_answers_the_sdk_502():
    response = httpx.get(
        PROXY + "/health",
        headers={"E2b-Sandbox-Id": "nosuchsandbox", "E2b-Sandbox-Port": "49983"},
        timeout=30,
    )
    assert response.status_code == 502
    assert response.json()["message"] == "The sandbox was not found"
