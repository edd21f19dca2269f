"""The async SDK against courier-sandboxd: create, run, files, kill."""

from __future__ import annotations

from e2b import AsyncSandbox


async def test_async_create_run_files_and_kill(async_sandbox: AsyncSandbox):
    result = await async_sandbox.commands.run("echo async-$((1+1))")
    assert result.stdout == "async-2\n"
    await async_sandbox.files.write("async.txt", "written async")
    assert await async_sandbox.files.read("async.txt") == "written async"
    info = await async_sandbox.get_info()
    assert info.sandbox_id == async_sandbox.sandbox_id
    assert await async_sandbox.kill()
    assert not await async_sandbox.is_running()
