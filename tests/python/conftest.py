"""Fixtures for the courier-envd interop suite.

The suite drives a locally running courier-envd through the *official* E2B Python SDK
in debug mode (``E2B_DEBUG=true``): the SDK then makes no control-plane call and talks
to envd at ``http://localhost:49983`` (see ``run.sh``). The daemon runs on this machine,
so host paths are the sandbox's paths: every test works inside its own temporary
directory and never touches anything else.
"""

from __future__ import annotations

import getpass
import os
import shutil
import tempfile
from typing import AsyncIterator, Iterator

import pytest

from e2b import AsyncSandbox, Sandbox

# The SDK reads E2B_DEBUG when a sandbox object is created; refuse to run otherwise so
# the suite can never reach the real E2B cloud by accident.
if os.environ.get("E2B_DEBUG", "").lower() != "true":
    raise pytest.UsageError(
        "tests/python must run with E2B_DEBUG=true against a local courier-envd; "
        "use `bash tests/python/run.sh`"
    )


@pytest.fixture
def user() -> str:
    """The Unix user the daemon runs processes as (run.sh passes it as --default-user)."""
    return os.environ.get("COURIER_ENVD_USER") or getpass.getuser()


@pytest.fixture
def tmp_dir() -> Iterator[str]:
    """A fresh absolute directory for one test (under the run's TMPDIR), removed afterwards."""
    path = os.path.realpath(tempfile.mkdtemp(prefix="envd-interop-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    sbx = Sandbox.create()
    try:
        yield sbx
    finally:
        sbx.kill()  # a no-op in debug mode, kept for symmetry with real sandboxes


@pytest.fixture
async def async_sandbox() -> AsyncIterator[AsyncSandbox]:
    sbx = await AsyncSandbox.create()
    try:
        yield sbx
    finally:
        await sbx.kill()
