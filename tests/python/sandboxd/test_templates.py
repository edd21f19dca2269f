"""Custom templates through the official SDK's template builder against courier-sandboxd:
``Template().from_template("base").run_cmd(...).set_envs(...)`` built with
``Template.build`` (``POST /v3/templates``, ``POST /v2/templates/{id}/builds/{build}``,
status polling with log offsets), then ``Sandbox.create("<name>")`` on the result; a
start command with a ready check runs in each sandbox; a failing step raises
``BuildException`` with the step's message; COPY uploads files from the context
directory."""

from __future__ import annotations

import os
import uuid

import httpx
import pytest

from e2b import BuildException, Sandbox, Template, wait_for_file
from e2b.template.logger import LogEntry


def _delete_template(name: str) -> None:
    """Removes a template through the REST API (no sandbox may still use it)."""
    httpx.delete(
        f"{os.environ['E2B_API_URL']}/templates/{name}",
        headers={"X-API-Key": os.environ["E2B_API_KEY"]},
        timeout=60,
    )


@pytest.fixture
def template_name():
    name = f"courier-test-tpl-{uuid.uuid4().hex[:8]}"
    yield name
    _delete_template(name)


def test_build_from_base_then_create_sandbox_from_the_template(template_name):
    template = (
        Template()
        .from_template("base")
        .run_cmd("mkdir -p /opt/courier && echo built-by-recipe > /opt/courier/marker", user="root")
        .run_cmd("echo from-user > ~/user-file.txt && whoami")
        .set_envs({"COURIER_TPL_VAR": "set by the recipe"})
        .run_cmd('echo "during build: $COURIER_TPL_VAR"')
    )
    logs: list[LogEntry] = []
    info = Template.build(template, template_name, cpu_count=1, memory_mb=512, on_build_logs=logs.append)
    assert info.name == template_name
    messages = [entry.message for entry in logs]
    # Steps run as `user` unless told otherwise, like E2B's builder.
    assert "user" in messages, messages
    assert "during build: set by the recipe" in messages, messages
    assert Template.exists(template_name)

    sbx = Sandbox.create(template_name, timeout=120)
    try:
        assert sbx.get_info().template_id == info.template_id
        result = sbx.commands.run("cat /opt/courier/marker ~/user-file.txt; echo $COURIER_TPL_VAR; whoami")
        assert result.stdout == "built-by-recipe\nfrom-user\nset by the recipe\nuser\n"
        assert sbx.files.read("/opt/courier/marker") == "built-by-recipe\n"
    finally:
        sbx.kill()


def test_start_command_runs_in_each_sandbox_after_its_ready_command_passes(template_name):
    template = (
        Template()
        .from_template("base")
        .set_envs({"STARTED_BY": "the template"})
        .set_start_cmd("sleep 1; echo \"$STARTED_BY\" > /tmp/ready; exec sleep infinity", wait_for_file("/tmp/ready"))
    )
    Template.build(template, template_name)
    sbx = Sandbox.create(template_name, timeout=120)
    try:
        # Create returned only once the ready command passed.
        assert sbx.commands.run("cat /tmp/ready").stdout == "the template\n"
    finally:
        sbx.kill()


def test_failing_step_raises_build_exception_with_the_steps_message(template_name):
    template = (
        Template()
        .from_template("base")
        .run_cmd("echo fine")
        .run_cmd("echo broken-step-output >&2; exit 3")
        .run_cmd("echo never")
    )
    logs: list[LogEntry] = []
    with pytest.raises(BuildException) as raised:
        Template.build(template, template_name, on_build_logs=logs.append)
    message = str(raised.value)
    assert "step 2" in message and "exit code 3" in message and "broken-step-output" in message, message
    messages = [entry.message for entry in logs]
    assert "fine" in messages and "never" not in messages, messages
    assert not Template.exists(template_name) or _not_startable(template_name)


def _not_startable(name: str) -> bool:
    try:
        Sandbox.create(name, timeout=30).kill()
    except Exception:
        return True
    return False


def test_copy_uploads_files_from_the_context_directory(tmp_path, template_name):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('hello from the copied app')\n")
    (tmp_path / "config.txt").write_text("setting=1\n")
    template = (
        Template(file_context_path=tmp_path)
        .from_template("base")
        .copy("app", "/home/user/app")
        .copy("config.txt", "/etc/courier-test/", user="root", mode=0o640)
        .run_cmd("python3 /home/user/app/main.py")
    )
    logs: list[LogEntry] = []
    Template.build(template, template_name, on_build_logs=logs.append)
    assert "hello from the copied app" in [entry.message for entry in logs]
    sbx = Sandbox.create(template_name, timeout=120)
    try:
        result = sbx.commands.run("stat -c '%U %a' /home/user/app/main.py /etc/courier-test/config.txt")
        assert result.stdout == "user 644\nroot 640\n"
        assert sbx.commands.run("sudo cat /etc/courier-test/config.txt").stdout == "setting=1\n"
    finally:
        sbx.kill()
