"""Outbound network through the official SDK: off when the create request says so,
otherwise through slirp4netns under the sandbox's egress policy: E2B's ``allow_out`` /
``deny_out`` are enforced (and changed live with ``update_network``), internal
destinations (cloud metadata, the host, private ranges) are refused whatever the
sandbox asks for, and ``allow_public_traffic=False`` puts the sandbox's ports behind its
traffic access token.

"Outside" is a web server on this host's outward address: the test machine has no
internet, and the host's own addresses are internal, so ``run_sandboxd.sh`` starts the
server with ``--egress-allow <that address>/32`` (the operator's allow list) and says so
in ``COURIER_EGRESS_OUTSIDE_IP``. Every refused destination used here is refused before a
packet is sent: nothing leaves the machine."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import threading
import time

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import SandboxException

SANDBOX_TIMEOUT = 300
needs_slirp = pytest.mark.skipif(
    shutil.which("slirp4netns") is None, reason="slirp4netns is not installed"
)


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
def outside() -> tuple[str, str]:
    """(address, url) of a web server standing in for the internet."""
    ip = _host_address()
    if ip is None:
        pytest.skip("this host has no outward IPv4 address")
    if os.environ.get("COURIER_EGRESS_OUTSIDE_IP") != ip:
        pytest.skip(f"the server's --egress-allow does not cover this host's address {ip}")
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield ip, f"http://{ip}:{server.server_address[1]}/"
    finally:
        server.shutdown()


def _interfaces(sbx: Sandbox) -> list[str]:
    out = sbx.commands.run("tail -n +3 /proc/net/dev | cut -d: -f1").stdout
    return sorted(out.split())


def _curl(sbx: Sandbox, url: str) -> tuple[bool, float, str]:
    """(reached, seconds, body) of one curl inside the sandbox."""
    start = time.monotonic()
    out = sbx.commands.run(
        f"curl -sS -m 10 {url} 2>/dev/null && echo ' <reached>' || echo ' <failed>'"
    ).stdout.strip()
    return out.endswith("<reached>"), time.monotonic() - start, out.rsplit(" ", 1)[0]


def _refused_fast(sbx: Sandbox, url: str) -> bool:
    reached, seconds, _ = _curl(sbx, url)
    return not reached and seconds < 5


def test_sandbox_without_internet_has_only_loopback(outside):
    _, url = outside
    sbx = Sandbox.create(timeout=SANDBOX_TIMEOUT, allow_internet_access=False)
    try:
        assert _interfaces(sbx) == ["lo"]
        assert not _curl(sbx, url)[0]
    finally:
        sbx.kill()


@needs_slirp
def test_internet_reaches_outside_but_nothing_internal(outside):
    _, url = outside
    sbx = Sandbox.create(timeout=SANDBOX_TIMEOUT, allow_internet_access=True)
    try:
        assert _interfaces(sbx) == ["lo", "tap0"]
        reached, _, body = _curl(sbx, url)
        assert reached and body == "hello from outside"
        # An attacker inside goes for the cloud's credentials, private networks and the
        # host's loopback (through slirp's gateway): each fails at once.
        port = url.rsplit(":", 1)[1].rstrip("/")
        for target in (
            "http://169.254.169.254/latest/meta-data/",
            "http://10.255.255.1/",
            "http://172.16.0.1/",
            "http://192.168.0.1/",
            "http://100.64.0.1/",
            f"http://10.0.2.2:{port}/",
        ):
            assert _refused_fast(sbx, target), target
    finally:
        sbx.kill()


@needs_slirp
def test_allow_and_deny_rules_are_enforced(outside):
    ip, url = outside
    denied = Sandbox.create(timeout=SANDBOX_TIMEOUT, network={"deny_out": [f"{ip}/32"]})
    try:
        assert _refused_fast(denied, url)
        info = denied.get_info()
        assert info.network is not None and info.network["deny_out"] == [f"{ip}/32"]
    finally:
        denied.kill()

    # Everything denied but the outside host: allow beats deny. The sandbox cannot
    # allow itself the metadata service.
    only = Sandbox.create(
        timeout=SANDBOX_TIMEOUT,
        network={"deny_out": ["0.0.0.0/0"], "allow_out": [ip, "169.254.169.254"]},
    )
    try:
        assert _curl(only, url)[0]
        assert _refused_fast(only, "http://169.254.169.254/")
    finally:
        only.kill()

    # E2B's spelling of "no internet" gives no interface at all.
    offline = Sandbox.create(timeout=SANDBOX_TIMEOUT, network={"deny_out": ["0.0.0.0/0"]})
    try:
        assert _interfaces(offline) == ["lo"]
    finally:
        offline.kill()


def test_invalid_or_unsupported_network_settings_are_refused_naming_the_field():
    with pytest.raises(SandboxException) as refused:
        Sandbox.create(timeout=SANDBOX_TIMEOUT, network={"deny_out": ["example.com"]})
    assert "network.denyOut[0]" in str(refused.value)
    with pytest.raises(SandboxException) as refused:
        Sandbox.create(timeout=SANDBOX_TIMEOUT, network={"allow_out": ["10.0.0.0/33"]})
    assert "network.allowOut[0]" in str(refused.value)
    # `mask_request_host` is served now (the port proxy sends that Host): accepted.
    sbx = Sandbox.create(
        timeout=SANDBOX_TIMEOUT, network={"mask_request_host": "${PORT}-x.example.com"}
    )
    sbx.kill()


@needs_slirp
def test_update_network_changes_the_rules_of_a_running_sandbox(outside):
    ip, url = outside
    sbx = Sandbox.create(timeout=SANDBOX_TIMEOUT, allow_internet_access=True)
    try:
        assert _curl(sbx, url)[0]
        sbx.update_network({"deny_out": [f"{ip}/32"]})
        assert _refused_fast(sbx, url)
        assert sbx.get_info().network["deny_out"] == [f"{ip}/32"]
        # The update replaces every rule: an empty one opens the way again.
        sbx.update_network({})
        assert _curl(sbx, url)[0]
        sbx.update_network({"allow_internet_access": False})
        assert _refused_fast(sbx, url)
    finally:
        sbx.kill()


def test_private_sandbox_ports_need_the_traffic_token():
    sbx = Sandbox.create(timeout=SANDBOX_TIMEOUT, network={"allow_public_traffic": False})
    try:
        token = sbx.traffic_access_token
        assert token
        sbx.files.write("/tmp/www/hello.txt", "private")
        sbx.commands.run("cd /tmp/www && exec python3 -m http.server 8000", background=True)
        url = f"{os.environ['E2B_SANDBOX_URL']}/hello.txt"
        route = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8000"}
        deadline = time.monotonic() + 60
        while True:
            ok = httpx.get(url, headers={**route, "e2b-traffic-access-token": token})
            if ok.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert (ok.status_code, ok.text) == (200, "private")
        # Whoever learns the sandbox's id tries its port without the token, or guesses.
        missing = httpx.get(url, headers=route)
        assert missing.status_code == 403
        assert missing.json()["sandboxId"] == sbx.sandbox_id
        guessed = httpx.get(url, headers={**route, "e2b-traffic-access-token": "0" * len(token)})
        assert guessed.status_code == 403
        # The SDK's own traffic (envd's port) keeps working with envd's token.
        assert sbx.commands.run("echo ok").stdout == "ok\n"
    finally:
        sbx.kill()
