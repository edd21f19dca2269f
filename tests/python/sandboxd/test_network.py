"""Outbound network: off unless the create request asks for it (``allow_internet_access``);
when asked for, the sandbox reaches the outside through slirp4netns but never the host's
loopback. "Outside" here is a web server on this host's outward address: the test machine
has no internet."""

from __future__ import annotations

import http.server
import shutil
import socket
import threading

import pytest
from e2b import Sandbox

SANDBOX_TIMEOUT = 300


def _host_address() -> str | None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.254", 9))  # picks a source address, sends nothing
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") or ip == "0.0.0.0" else ip


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = b"hello from outside"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def outside_url():
    ip = _host_address()
    if ip is None:
        pytest.skip("this host has no outward IPv4 address")
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{ip}:{server.server_address[1]}/"
    finally:
        server.shutdown()


def _interfaces(sbx: Sandbox) -> list[str]:
    out = sbx.commands.run("tail -n +3 /proc/net/dev | cut -d: -f1").stdout
    return sorted(out.split())


def test_default_sandbox_has_only_loopback(sandbox: Sandbox, outside_url: str):
    assert _interfaces(sandbox) == ["lo"]
    assert sandbox.get_info() is not None
    result = sandbox.commands.run(f"curl -sS -m 5 {outside_url} || echo unreachable")
    assert result.stdout.strip().endswith("unreachable")


@pytest.mark.skipif(shutil.which("slirp4netns") is None, reason="slirp4netns is not installed")
def test_allow_internet_access_reaches_outside_but_not_host_loopback(outside_url: str):
    sbx = Sandbox.create(timeout=SANDBOX_TIMEOUT, allow_internet_access=True)
    try:
        assert _interfaces(sbx) == ["lo", "tap0"]
        assert sbx.commands.run(f"curl -sS -m 10 {outside_url}").stdout == "hello from outside"
        port = outside_url.rsplit(":", 1)[1].rstrip("/")
        blocked = sbx.commands.run(f"curl -sS -m 5 http://10.0.2.2:{port}/ || echo blocked")
        assert blocked.stdout.strip().endswith("blocked")
    finally:
        sbx.kill()


def test_egress_rules_are_refused_not_silently_ignored():
    from e2b.exceptions import SandboxException

    with pytest.raises(SandboxException) as refused:
        Sandbox.create(timeout=SANDBOX_TIMEOUT, network={"deny_out": ["8.8.8.8"]})
    assert "network.denyOut" in str(refused.value)

    # E2B's own spelling of "no internet" is understood.
    sbx = Sandbox.create(timeout=SANDBOX_TIMEOUT, network={"deny_out": ["0.0.0.0/0"]})
    try:
        assert _interfaces(sbx) == ["lo"]
    finally:
        sbx.kill()
