"""Fixtures for the courier-sandboxd scenario suite.

The official E2B Python SDK talks to a running courier-sandboxd exactly as it would to
E2B: ``E2B_API_URL`` (control plane), ``E2B_SANDBOX_URL`` (the sandbox proxy, routed by
the ``E2b-Sandbox-Id`` header) and ``E2B_API_KEY``. ``run_sandboxd.sh`` starts the server
and sets them; it also sets ``COURIER_SANDBOXD_SUITE=1``. Without that variable (for
example when ``tests/python/run.sh`` collects the envd debug-mode suite one level up)
nothing here is collected, so the two suites never run against the wrong server.
"""

from __future__ import annotations

import os
from typing import AsyncIterator, Iterator

import pytest

if os.environ.get("COURIER_SANDBOXD_SUITE") != "1":
    collect_ignore_glob = ["test_*.py"]
else:
    for var in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY"):
        if not os.environ.get(var):
            raise pytest.UsageError(f"{var} is not set; use `bash tests/python/run_sandboxd.sh`")
    if os.environ.get("E2B_DEBUG", "").lower() == "true":
        raise pytest.UsageError("E2B_DEBUG must be off: this suite needs the control plane")

from e2b import AsyncSandbox, Sandbox  # noqa: E402

ISOLATIONS = ("container", "gvisor")

#: Lifetime of fixture sandboxes: long enough for a slow machine, short enough that a
#: crashed run does not keep them for long.
SANDBOX_TIMEOUT = 300


def _kill_quietly(sbx) -> None:
    try:
        sbx.kill()
    except Exception:  # already gone (killed by the test or timed out)
        pass


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    sbx = Sandbox.create(timeout=SANDBOX_TIMEOUT)
    try:
        yield sbx
    finally:
        _kill_quietly(sbx)


@pytest.fixture
async def async_sandbox() -> AsyncIterator[AsyncSandbox]:
    sbx = await AsyncSandbox.create(timeout=SANDBOX_TIMEOUT)
    try:
        yield sbx
    finally:
        try:
            await sbx.kill()
        except Exception:
            pass


@pytest.fixture(scope="session", autouse=True)
def kill_everything_at_the_end() -> Iterator[None]:
    """Whatever a failing test leaves running is killed when the session ends."""
    yield
    try:
        paginator = Sandbox.list()
        while paginator.has_next:
            for info in paginator.next_items():
                Sandbox.kill(info.sandbox_id)
    except Exception as e:  # the server may already be gone
        print(f"cleanup: {e}")


@pytest.fixture(scope="session")
def isolation() -> str:
    """The isolation the server under test gives its sandboxes: ``container`` or
    ``gvisor``. ``run_sandboxd.sh`` passes ``COURIER_SANDBOXD_ISOLATION`` to the server
    (CI runs the suite once with each); without it the server picks gVisor where runsc
    works. Either way a sandbox is asked: only gVisor's Sentry reports a kernel release
    other than the host's, so a suite told one isolation never silently tests the other."""
    wanted = os.environ.get("COURIER_SANDBOXD_ISOLATION") or None
    if wanted is not None and wanted not in ISOLATIONS:
        raise pytest.UsageError(f"COURIER_SANDBOXD_ISOLATION={wanted!r} is not one of {ISOLATIONS}")
    sbx = Sandbox.create(timeout=SANDBOX_TIMEOUT)
    try:
        release = sbx.commands.run("uname -r").stdout.strip()
    finally:
        _kill_quietly(sbx)
    seen = "container" if release == os.uname().release else "gvisor"
    if wanted is not None and wanted != seen:
        pytest.fail(f"COURIER_SANDBOXD_ISOLATION={wanted} but the server's sandboxes run {seen} (kernel {release})")
    return seen


@pytest.fixture(scope="session")
def data_dir() -> str:
    """The server's data directory (``COURIER_SANDBOXD_DATA_DIR``, set by
    ``run_sandboxd.sh``): host-side checks read sandboxes' console logs and control
    sockets there, and attacks from inside try to reach it."""
    path = os.environ.get("COURIER_SANDBOXD_DATA_DIR")
    if not path or not os.path.isdir(path):
        pytest.fail("COURIER_SANDBOXD_DATA_DIR is not the server's data dir; use `bash tests/python/run_sandboxd.sh`")
    return path
