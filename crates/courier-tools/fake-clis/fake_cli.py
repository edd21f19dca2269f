#!/usr/bin/env python3
"""Fake agent CLIs for Courier's end-to-end tests (python3, stdlib only).

Invoked through the symlinks `claude`, `codex`, `opencode` and `pi` (the tool is the
basename of argv[0], or $FAKE_CLI_TOOL). Each fake:

- accepts the real tool's headless flags (unknown flags exit 2, like a real argument
  parser), and enforces a few of the real tool's pitfalls so command builders are tested:
  Claude refuses an inherited CLAUDECODE, refuses bypass mode as root without IS_SANDBOX=1,
  and needs --verbose with stream-json in print mode; Codex refuses to run outside a git
  repository without --skip-git-repo-check / --yolo;
- prints a realistic stream in the tool's own JSON format on stdout (noise on stderr);
- appends a line to `courier-fake-<tool>.md` and commits it, when run inside a git repo;
- honours the continue flag (claude/opencode/pi `-c`/`--continue`, `codex exec resume
  --last`): the session id is kept and the answer mentions the prior session and turn.
  State lives in $FAKE_CLI_STATE_DIR (default ~/.fake-cli), per tool and working directory.

Scripted behaviour through the prompt:
- `SLEEP n`  sleep n seconds (after the session start is printed);
- `FAIL`     end with the tool's failure event (no edit, no commit);
- `CRASH`    stop mid-stream without a terminal event, exit 137.
- `PASS_AT_COMMITS n`  end the answer with a workflow checker's verdict line: `pass` when
  the repository had at least n commits when the fake started, else `needs_changes`
  with feedback (so a designer turn between two checks flips the verdict);
- `CARDS n`  end the answer with a fenced JSON list of n issue cards (title, description,
  severity, suggested_prompt), as an issue-scanning agent is asked to.
- `STREAM n [ms]` (claude only)  before its work, print n assistant text blocks
  `stream line <i> of <n>` (each with its line break), ms milliseconds apart (default
  50): a steady stream, so a test can cut in mid-run (`cargo xtask cluster-test`).
- `CALL_LLM` (claude only; once per occurrence)  call the Messages API the real CLI would:
  a streamed `POST $ANTHROPIC_BASE_URL/v1/messages` with `x-api-key: $ANTHROPIC_API_KEY`,
  the first call before the edit, the others after its commit; a refused call ends the run
  with the API's error (exit 1).

Optional: FAKE_CLI_REQUIRE_KEYS=1 makes each fake require its provider key variable.

Replay mode: with FAKE_CLI_RECORDINGS=<dir> (courier-tools' tests/fixtures/real), the fake
prints what the REAL CLI printed against the stand-in LLM, byte for byte: the recording
`<tool>-<version>-<scenario>.jsonl` of the newest recorded version (or FAKE_CLI_VERSION),
scenario `follow_up` when continuing, `unauthorized` when the prompt says FAIL, `killed`
(then it waits to be stopped) when it says SLEEP, else `first`; it writes the file the
recorded tool call wrote (under the working directory instead of /home/user/project) and
`--version` prints the recorded version.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid

TOOLS = ("claude", "codex", "opencode", "pi")


class UsageError(Exception):
    pass


def parse_flags(args, with_value, boolean, aliases=None):
    """Parses `args` strictly: returns (options, positionals). `--` ends the flags."""
    aliases = aliases or {}
    opts, pos = {}, []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            pos.extend(args[i + 1:])
            break
        if a.startswith("-") and len(a) > 1 and not (a[1:].replace(".", "").isdigit()):
            name, eq, inline = a.partition("=")
            name = aliases.get(name, name)
            if name in with_value:
                if eq:
                    value = inline
                else:
                    i += 1
                    if i >= len(args):
                        raise UsageError("option %s needs a value" % name)
                    value = args[i]
                opts.setdefault(name, []).append(value)
            elif name in boolean and not eq:
                opts[name] = True
            else:
                raise UsageError("unknown option %s" % a)
        else:
            pos.append(a)
        i += 1
    return opts, pos


def last(opts, name, default=None):
    v = opts.get(name)
    if isinstance(v, list):
        return v[-1]
    return default if v is None else v


def in_git_repo():
    try:
        r = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True)
        return r.returncode == 0 and r.stdout.strip() == "true"
    except OSError:
        return False


def edit_and_commit(tool, prompt, turn):
    """Appends to the tool's file and commits. Returns (path, commit sha or None)."""
    path = "courier-fake-%s.md" % tool
    first = prompt.strip().splitlines()[0] if prompt.strip() else "(empty prompt)"
    with open(path, "a", encoding="utf-8") as f:
        f.write("- turn %d: %s\n" % (turn, first))
    if not in_git_repo():
        return path, None
    ident = []
    if subprocess.run(["git", "config", "user.email"], capture_output=True).returncode != 0:
        ident = ["-c", "user.name=Fake Agent", "-c", "user.email=fake-agent@example.invalid"]
    subprocess.run(["git", "add", path], check=True, capture_output=True)
    msg = "%s: %s" % (tool, first[:60])
    subprocess.run(["git"] + ident + ["commit", "-q", "-m", msg], check=True, capture_output=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return path, sha


def state_path(tool):
    root = os.environ.get("FAKE_CLI_STATE_DIR") or os.path.join(os.path.expanduser("~"), ".fake-cli")
    key = hashlib.sha1(os.getcwd().encode()).hexdigest()[:16]
    return os.path.join(root, "%s-%s.json" % (tool, key))


def load_state(tool):
    try:
        with open(state_path(tool), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def save_state(tool, session_id, turn):
    p = state_path(tool)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "w", encoding="utf-8") as f:
        json.dump({"session_id": session_id, "turn": turn}, f)


def emit(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def directives(prompt):
    m = re.search(r"SLEEP\s+(\d+(?:\.\d+)?)", prompt)
    return {
        "sleep": float(m.group(1)) if m else 0.0,
        "fail": "FAIL" in prompt,
        "crash": "CRASH" in prompt,
    }


def call_llm(model):
    """One streamed Messages call, as Claude Code makes it; returns (ok, detail)."""
    import urllib.error
    import urllib.request
    base = os.environ.get("ANTHROPIC_BASE_URL", "https://api.anthropic.com").rstrip("/")
    body = json.dumps({"model": model, "max_tokens": 64, "stream": True,
                       "messages": [{"role": "user", "content": "fake turn"}]}).encode()
    request = urllib.request.Request(base + "/v1/messages", data=body, method="POST", headers={
        "content-type": "application/json", "anthropic-version": "2023-06-01",
        "x-api-key": os.environ.get("ANTHROPIC_API_KEY", "")})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode("utf-8", "replace")
            return "message_stop" in text, text[-200:]
    except urllib.error.HTTPError as e:
        return False, "%d %s" % (e.code, e.read().decode("utf-8", "replace"))
    except Exception as e:  # noqa: BLE001 - any failure is the run's
        return False, str(e)


def session(tool, continuing, new_id):
    """Returns (session_id, turn, prior) where prior is the previous state when continuing."""
    prior = load_state(tool) if continuing else None
    if prior:
        return prior["session_id"], prior["turn"] + 1, prior
    return new_id, 1, None


# Commits in the working directory's repository when the fake started (before its own).
START_COMMITS = 0


def commit_count():
    try:
        r = subprocess.run(["git", "rev-list", "--count", "HEAD"], capture_output=True, text=True)
    except OSError:
        return 0
    out = r.stdout.strip()
    return int(out) if r.returncode == 0 and out.isdigit() else 0


SEVERITIES = ("low", "medium", "high", "critical")


def scripted_tail(prompt):
    """The structured endings the prompt's directives ask for (verdict, issue cards)."""
    tail = []
    m = re.search(r"PASS_AT_COMMITS\s+(\d+)", prompt)
    if m:
        need = int(m.group(1))
        if START_COMMITS >= need:
            verdict = {"verdict": "pass", "feedback": "Looks good: %d commits." % START_COMMITS}
        else:
            verdict = {"verdict": "needs_changes",
                       "feedback": "Only %d commits; add one more turn (need %d)." % (START_COMMITS, need)}
        tail.append(json.dumps(verdict))
    m = re.search(r"CARDS\s+(\d+)", prompt)
    if m:
        cards = [{"title": "Fake issue %d" % (i + 1),
                  "description": "The fake scanner found problem %d." % (i + 1),
                  "severity": SEVERITIES[i % len(SEVERITIES)],
                  "suggested_prompt": "Fix fake issue %d" % (i + 1)} for i in range(int(m.group(1)))]
        tail.append("```json\n%s\n```" % json.dumps(cards, indent=2))
    return tail


def answer_text(tool, prompt, prior, session_id, turn, path):
    head = "Continuing session %s (turn %d). " % (session_id, turn) if prior else ""
    text = "%sDone: %s. I appended a line to %s and committed it." % (
        head, prompt.strip().splitlines()[0][:80] if prompt.strip() else "nothing asked", path)
    return "\n\n".join([text] + scripted_tail(prompt))


def require_key(names):
    if os.environ.get("FAKE_CLI_REQUIRE_KEYS") == "1" and not any(os.environ.get(n) for n in names):
        sys.stderr.write("error: no API key (%s)\n" % " or ".join(names))
        sys.exit(1)


# --------------------------------------------------------------------------- claude

def run_claude(args):
    opts, pos = parse_flags(
        args,
        with_value={"--output-format", "--model", "--effort", "--max-turns", "--max-budget-usd",
                    "--append-system-prompt", "--system-prompt", "--permission-mode", "--allowedTools",
                    "--disallowedTools", "--tools", "--fallback-model", "--add-dir", "--mcp-config",
                    "--settings", "--setting-sources", "--resume", "--session-id", "--thinking",
                    "--input-format", "--json-schema", "--permission-prompt-tool"},
        boolean={"--print", "--verbose", "--dangerously-skip-permissions", "--continue",
                 "--include-partial-messages", "--include-hook-events", "--bare", "--strict-mcp-config",
                 "--fork-session", "--no-session-persistence", "--help", "--version"},
        aliases={"-p": "--print", "-c": "--continue", "-r": "--resume"},
    )
    if opts.get("--version"):
        print("2.1.197 (Claude Code, fake)")
        return 0
    if os.environ.get("CLAUDECODE"):
        sys.stderr.write("Error: Claude Code cannot be launched inside another Claude Code session.\n")
        return 1
    if not opts.get("--print"):
        raise UsageError("the fake claude supports only print mode (-p)")
    fmt = last(opts, "--output-format", "text")
    if fmt not in ("text", "json", "stream-json"):
        raise UsageError("--output-format must be text, json or stream-json")
    if fmt == "stream-json" and not opts.get("--verbose"):
        sys.stderr.write("Error: When using --print, --output-format=stream-json requires --verbose\n")
        return 1
    effort = last(opts, "--effort")
    if effort is not None and effort not in ("low", "medium", "high", "xhigh", "max"):
        raise UsageError("--effort must be one of low, medium, high, xhigh, max")
    bypass = opts.get("--dangerously-skip-permissions") or last(opts, "--permission-mode") == "bypassPermissions"
    if bypass and hasattr(os, "geteuid") and os.geteuid() == 0 and os.environ.get("IS_SANDBOX") != "1":
        sys.stderr.write("--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons\n")
        return 1
    require_key(["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN"])
    prompt = " ".join(pos)
    continuing = bool(opts.get("--continue"))
    if continuing and load_state("claude") is None:
        sys.stderr.write("No conversation found to continue\n")
        return 1
    sid, turn, prior = session("claude", continuing, str(uuid.uuid4()))
    model = last(opts, "--model", "claude-opus-4-6")
    d = directives(prompt)
    save_state("claude", sid, turn)
    base = {"session_id": sid, "parent_tool_use_id": None}

    def assistant(mid, block, stop):
        ev = {"type": "assistant", "uuid": str(uuid.uuid4()), **base,
              "message": {"id": mid, "type": "message", "role": "assistant", "model": model,
                          "content": [block], "stop_reason": stop,
                          "usage": {"input_tokens": 3, "cache_creation_input_tokens": 120,
                                    "cache_read_input_tokens": 4000, "output_tokens": 40}}}
        emit(ev)

    stream = fmt == "stream-json"
    if stream:
        emit({"type": "system", "subtype": "init", "uuid": str(uuid.uuid4()), "cwd": os.getcwd(),
              "model": model, "permissionMode": "bypassPermissions" if bypass else "default",
              "apiKeySource": "ANTHROPIC_API_KEY" if os.environ.get("ANTHROPIC_API_KEY") else "none",
              "tools": ["Bash", "Edit", "Read", "Write", "Grep", "Glob"], "mcp_servers": [],
              "claude_code_version": "2.1.197", "output_style": "default", **base})
    if d["sleep"]:
        time.sleep(d["sleep"])
    if d["crash"]:
        if stream:
            assistant("msg_crash", {"type": "text", "text": "Working on it..."}, None)
        return 137
    if d["fail"]:
        text = "API Error: 500 simulated failure (FAIL in prompt)"
        if stream:
            emit({"type": "assistant", "uuid": str(uuid.uuid4()), **base, "error": "server_error",
                  "is_api_error_message": True,
                  "message": {"id": "msg_" + uuid.uuid4().hex[:12], "type": "message", "role": "assistant",
                              "model": "<synthetic>", "content": [{"type": "text", "text": text}],
                              "stop_reason": "stop_sequence",
                              "usage": {"input_tokens": 0, "output_tokens": 0}}})
        result = {"type": "result", "subtype": "success", "is_error": True, "result": text,
                  "duration_ms": 900, "num_turns": 1, "total_cost_usd": 0, "usage": {
                      "input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}, **base}
        emit_final(fmt, result, text)
        return 1
    streamed = re.search(r"STREAM\s+(\d+)(?:\s+(\d+))?", prompt)
    if streamed:
        lines, pause = int(streamed.group(1)), int(streamed.group(2) or 50) / 1000.0
        for i in range(1, lines + 1):
            if stream:
                assistant("msg_" + uuid.uuid4().hex[:12],
                          {"type": "text", "text": "stream line %d of %d\n" % (i, lines)}, None)
            if pause:
                time.sleep(pause)
    calls = prompt.count("CALL_LLM")

    def llm_failed(detail):
        text = "API Error: %s" % detail
        sys.stderr.write(text + "\n")
        result = {"type": "result", "subtype": "success", "is_error": True, "result": text,
                  "duration_ms": 100, "num_turns": 1, "total_cost_usd": 0, "usage": {
                      "input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}, **base}
        emit_final(fmt, result, text)
        return 1

    if calls:
        ok, detail = call_llm(model)
        if not ok:
            return llm_failed(detail)
    m1 = "msg_" + uuid.uuid4().hex[:12]
    if stream:
        assistant(m1, {"type": "thinking", "thinking": "I will record the task in a file and commit it.",
                       "signature": "fake"}, None)
        assistant(m1, {"type": "tool_use", "id": "toolu_edit_%d" % turn, "name": "Edit",
                       "input": {"file_path": os.path.join(os.getcwd(), "courier-fake-claude.md"),
                                 "old_string": "", "new_string": "- turn %d" % turn}}, "tool_use")
    path, sha = edit_and_commit("claude", prompt, turn)
    if stream:
        emit({"type": "user", "uuid": str(uuid.uuid4()), **base,
              "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_edit_%d" % turn,
                                                       "content": "The file %s has been updated." % path,
                                                       "is_error": False}]}})
        m2 = "msg_" + uuid.uuid4().hex[:12]
        assistant(m2, {"type": "tool_use", "id": "toolu_bash_%d" % turn, "name": "Bash",
                       "input": {"command": "git commit -am 'claude: turn %d'" % turn, "description": "Commit"}},
                  "tool_use")
        emit({"type": "user", "uuid": str(uuid.uuid4()), **base,
              "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_bash_%d" % turn,
                                                       "content": "[%s] committed" % (sha or "no git repo"),
                                                       "is_error": False}]}})
    for _ in range(max(calls - 1, 0)):
        ok, detail = call_llm(model)
        if not ok:
            return llm_failed(detail)
    text = answer_text("claude", prompt, prior, sid, turn, path)
    if stream:
        assistant("msg_" + uuid.uuid4().hex[:12], {"type": "text", "text": text}, "end_turn")
    result = {"type": "result", "subtype": "success", "is_error": False, "result": text,
              "duration_ms": 1234, "duration_api_ms": 1000, "num_turns": 3, "total_cost_usd": 0.0123,
              "stop_reason": "end_turn", "terminal_reason": "completed",
              "usage": {"input_tokens": 9, "output_tokens": 120, "cache_creation_input_tokens": 360,
                        "cache_read_input_tokens": 12000},
              "permission_denials": [], "uuid": str(uuid.uuid4()), **base}
    emit_final(fmt, result, text)
    return 0


def emit_final(fmt, result, text):
    if fmt == "text":
        print(text)
    else:
        emit(result)


# --------------------------------------------------------------------------- codex

CODEX_VALUE = {"--model", "--config", "--sandbox", "--cd", "--profile", "--image", "--add-dir",
               "--output-last-message", "--output-schema", "--color", "--local-provider"}
CODEX_BOOL = {"--json", "--experimental-json", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox",
              "--yolo", "--full-auto", "--ephemeral", "--oss", "--ignore-user-config", "--ignore-rules",
              "--last", "--all", "--with-api-key", "--device-auth", "--help", "--version", "--not-so-yolo"}
CODEX_ALIASES = {"-m": "--model", "-c": "--config", "-s": "--sandbox", "-C": "--cd", "-p": "--profile",
                 "-i": "--image", "-o": "--output-last-message"}


def run_codex(args):
    if args[:1] == ["login"]:
        opts, _ = parse_flags(args[1:], set(), {"--with-api-key", "--device-auth"})
        if opts.get("--with-api-key"):
            key = sys.stdin.read().strip()
            if not key:
                sys.stderr.write("error: no API key on stdin\n")
                return 1
        print("Successfully logged in")
        return 0
    if args[:1] == ["--version"]:
        print("codex-cli 0.169.0 (fake)")
        return 0
    if args[:1] != ["exec"]:
        raise UsageError("the fake codex supports only `exec` and `login`")
    opts, pos = parse_flags(args[1:], CODEX_VALUE, CODEX_BOOL, CODEX_ALIASES)
    resume = False
    if pos[:1] == ["resume"]:
        resume = True
        pos = pos[1:]
        if not opts.get("--last") and pos:
            pos = pos[1:]  # a session id
    for c in opts.get("--config", []):
        if "=" not in c:
            raise UsageError("-c expects key=value, got %r" % c)
        key, _, value = c.partition("=")
        if key == "model_reasoning_effort" and value.strip('"\'') not in (
                "none", "minimal", "low", "medium", "high", "xhigh"):
            raise UsageError("bad model_reasoning_effort %s" % value)
    cd = last(opts, "--cd")
    if cd:
        os.chdir(cd)
    skip = opts.get("--skip-git-repo-check") or opts.get("--yolo") or opts.get(
        "--dangerously-bypass-approvals-and-sandbox")
    if not skip and not in_git_repo():
        sys.stderr.write("Not inside a trusted directory and --skip-git-repo-check was not specified.\n")
        return 1
    require_key(["CODEX_API_KEY", "CODEX_ACCESS_TOKEN"])
    prompt = " ".join(pos)
    if not prompt:
        raise UsageError("no prompt given (stdin prompts are not supported by the fake)")
    sid, turn, prior = session("codex", resume, str(uuid.uuid4()))
    save_state("codex", sid, turn)
    d = directives(prompt)
    json_out = opts.get("--json") or opts.get("--experimental-json")
    out = emit if json_out else (lambda _obj: None)
    sys.stderr.write("OpenAI Codex v0.169.0 (fake)\n")
    out({"type": "thread.started", "thread_id": sid})
    out({"type": "turn.started"})
    if d["sleep"]:
        time.sleep(d["sleep"])
    if d["crash"]:
        out({"type": "item.completed", "item": {"id": "item_0", "type": "reasoning", "text": "**Working**"}})
        return 137
    if d["fail"]:
        out({"type": "error", "message": "Reconnecting... 1/5"})
        out({"type": "turn.failed", "error": {"message": "simulated failure (FAIL in prompt)"}})
        return 1
    out({"type": "item.completed", "item": {"id": "item_0", "type": "reasoning",
                                             "text": "**Recording the task and committing**"}})
    path, sha = edit_and_commit("codex", prompt, turn)
    out({"type": "item.completed", "item": {"id": "item_1", "type": "file_change",
                                             "changes": [{"path": path, "kind": "update"}], "status": "completed"}})
    cmd = "bash -lc 'git commit -am \"codex: turn %d\"'" % turn
    out({"type": "item.started", "item": {"id": "item_2", "type": "command_execution", "command": cmd,
                                           "aggregated_output": "", "exit_code": None, "status": "in_progress"}})
    out({"type": "item.completed", "item": {"id": "item_2", "type": "command_execution", "command": cmd,
                                             "aggregated_output": "[%s] committed\n" % (sha or "no git repo"),
                                             "exit_code": 0, "status": "completed"}})
    text = answer_text("codex", prompt, prior, sid, turn, path)
    out({"type": "item.completed", "item": {"id": "item_3", "type": "agent_message", "text": text}})
    out({"type": "turn.completed", "usage": {"input_tokens": 2400 * turn, "cached_input_tokens": 2000 * turn,
                                              "output_tokens": 90 * turn}})
    if not json_out:
        print(text)
    return 0


# --------------------------------------------------------------------------- opencode

def run_opencode(args):
    if args[:1] == ["--version"]:
        print("1.18.33")
        return 0
    if args[:1] != ["run"]:
        raise UsageError("the fake opencode supports only `run`")
    opts, pos = parse_flags(
        args[1:],
        with_value={"--format", "--model", "--variant", "--dir", "--session", "--title", "--agent", "--command",
                    "--file", "--attach", "--port", "--log-level"},
        boolean={"--thinking", "--auto", "--yolo", "--dangerously-skip-permissions", "--continue", "--fork",
                 "--share", "--print-logs", "--help"},
        aliases={"-m": "--model", "-c": "--continue", "-s": "--session", "-f": "--file"},
    )
    fmt = last(opts, "--format", "default")
    if fmt not in ("default", "json"):
        raise UsageError("--format must be default or json")
    model = last(opts, "--model", "openrouter/google/gemini-2.5-pro")
    if "/" not in model:
        raise UsageError("--model must be provider/model")
    if opts.get("--fork") and not (opts.get("--continue") or opts.get("--session")):
        sys.stderr.write("Error: --fork needs --continue or --session\n")
        return 1
    d_ = last(opts, "--dir")
    if d_:
        os.chdir(d_)
    require_key(["OPENROUTER_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"])
    prompt = " ".join(pos)
    if not prompt and not opts.get("--command"):
        sys.stderr.write("Error: You must provide a message or a command\n")
        return 1
    sid, turn, prior = session("opencode", bool(opts.get("--continue")), "ses_" + uuid.uuid4().hex[:14])
    save_state("opencode", sid, turn)
    d = directives(prompt)
    json_out = fmt == "json"
    now = [int(time.time() * 1000)]
    counter = [0]

    def ev(kind, **data):
        now[0] += 7
        if json_out:
            emit({"type": kind, "timestamp": now[0], "sessionID": sid, **data})

    def part(kind, message, **data):
        counter[0] += 1
        return {"id": "prt_%s%03d" % (uuid.uuid4().hex[:8], counter[0]), "sessionID": sid, "messageID": message,
                "type": kind, **data}

    sys.stderr.write("\x1b[90m> build · %s\x1b[0m\n" % model)
    m1 = "msg_" + uuid.uuid4().hex[:10]
    ev("step_start", part=part("step-start", m1))
    if d["sleep"]:
        time.sleep(d["sleep"])
    if d["crash"]:
        return 137
    if d["fail"]:
        ev("error", error={"name": "APIError", "data": {"message": "simulated failure (FAIL in prompt)"}})
        return 1
    if opts.get("--thinking"):
        ev("reasoning", part=part("reasoning", m1, text="Record the task and commit.", time={"start": now[0], "end": now[0]}))
    path, sha = edit_and_commit("opencode", prompt, turn)
    ev("tool_use", part=part("tool", m1, callID="call_edit_%d" % turn, tool="edit", state={
        "status": "completed", "input": {"filePath": os.path.join(os.getcwd(), path)},
        "output": "Edit applied successfully.", "title": path, "metadata": {}, "time": {"start": now[0], "end": now[0]}}))
    ev("tool_use", part=part("tool", m1, callID="call_bash_%d" % turn, tool="bash", state={
        "status": "completed", "input": {"command": "git commit -am 'opencode: turn %d'" % turn},
        "output": "[%s] committed\n" % (sha or "no git repo"), "title": "git commit", "metadata": {},
        "time": {"start": now[0], "end": now[0]}}))
    ev("step_finish", part=part("step-finish", m1, reason="tool-calls", cost=0.0021,
                                tokens={"total": 5200, "input": 900, "output": 60, "reasoning": 10,
                                        "cache": {"read": 4230, "write": 0}}))
    m2 = "msg_" + uuid.uuid4().hex[:10]
    ev("step_start", part=part("step-start", m2))
    text = answer_text("opencode", prompt, prior, sid, turn, path)
    ev("text", part=part("text", m2, text=text, time={"start": now[0], "end": now[0]}))
    ev("step_finish", part=part("step-finish", m2, reason="stop", cost=0.0034,
                                tokens={"total": 5600, "input": 300, "output": 80, "reasoning": 0,
                                        "cache": {"read": 5220, "write": 0}}))
    ev("done", reason="idle", rejected=[])
    if not json_out:
        print(text)
    return 0


# --------------------------------------------------------------------------- pi

def run_pi(args):
    opts, pos = parse_flags(
        args,
        with_value={"--mode", "--provider", "--model", "--thinking", "--session", "--session-dir", "--fork",
                    "--system-prompt", "--append-system-prompt", "--tools", "--api-key", "--skill", "--extension"},
        boolean={"--print", "--offline", "--no-extensions", "--continue", "--no-session", "--no-tools",
                 "--no-builtin-tools", "--verbose", "--no-context-files", "--no-skills", "--help", "--version"},
        aliases={"-p": "--print", "-c": "--continue", "-nc": "--no-context-files", "-e": "--extension"},
    )
    if opts.get("--version"):
        print("0.73.1")
        return 0
    mode = last(opts, "--mode", "text")
    if mode not in ("text", "json", "rpc"):
        raise UsageError("--mode must be text, json or rpc")
    if mode == "rpc":
        raise UsageError("the fake pi does not support --mode rpc")
    thinking = last(opts, "--thinking")
    if thinking is not None and thinking not in ("off", "minimal", "low", "medium", "high", "xhigh"):
        raise UsageError("--thinking must be off, minimal, low, medium, high or xhigh")
    if mode != "json" and not opts.get("--print"):
        raise UsageError("the fake pi supports only --mode json or -p")
    require_key(["OPENROUTER_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"])
    prompt = " ".join(pos)
    sid, turn, prior = session("pi", bool(opts.get("--continue")), str(uuid.uuid4()))
    save_state("pi", sid, turn)
    d = directives(prompt)
    model = last(opts, "--model", "openrouter/moonshotai/kimi-k2.6")
    provider, _, model_id = model.partition("/") if "/" in model else ("openrouter", "", model)
    json_out = mode == "json"
    out = emit if json_out else (lambda _obj: None)
    ts = [int(time.time() * 1000)]

    def assistant(content, stop, error=None, tokens=(800, 50)):
        ts[0] += 10
        cost = round(tokens[0] * 0.0000006 + tokens[1] * 0.0000025, 6)
        return {"role": "assistant", "content": content, "api": "openai-completions", "provider": provider,
                "model": model_id, "usage": {"input": tokens[0], "output": tokens[1], "cacheRead": 0, "cacheWrite": 0,
                                             "totalTokens": tokens[0] + tokens[1],
                                             "cost": {"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0,
                                                      "total": cost if stop != "error" else 0}},
                "stopReason": stop, "errorMessage": error, "timestamp": ts[0]}

    header = {"type": "session", "version": 3, "id": sid, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "cwd": os.getcwd()}
    if prior:
        header["parentSession"] = sid
    out(header)
    out({"type": "agent_start"})
    out({"type": "turn_start"})
    user = {"role": "user", "content": prompt, "timestamp": ts[0]}
    out({"type": "message_start", "message": user})
    out({"type": "message_end", "message": user})
    if d["sleep"]:
        time.sleep(d["sleep"])
    if d["crash"]:
        return 137
    if d["fail"]:
        # Like the real Pi in JSON mode: a failed model call still exits 0.
        msg = assistant([], "error", "simulated failure (FAIL in prompt)", tokens=(0, 0))
        out({"type": "message_end", "message": msg})
        out({"type": "turn_end", "message": msg, "toolResults": []})
        out({"type": "agent_end", "messages": [user, msg]})
        if not json_out:
            sys.stderr.write("simulated failure (FAIL in prompt)\n")
            return 1
        return 0
    call = {"type": "toolCall", "id": "toolu_pi_%d" % turn, "name": "bash",
            "arguments": {"command": "echo ... >> courier-fake-pi.md && git commit -am 'pi: turn %d'" % turn}}
    first = assistant([{"type": "thinking", "thinking": "Record the task and commit."}, call], "toolUse")
    out({"type": "message_start", "message": assistant([], "toolUse")})
    out({"type": "message_update", "message": first,
         "assistantMessageEvent": {"type": "toolcall_end", "contentIndex": 1, "toolCall": call, "partial": first}})
    out({"type": "message_end", "message": first})
    out({"type": "tool_execution_start", "toolCallId": call["id"], "toolName": "bash", "args": call["arguments"]})
    path, sha = edit_and_commit("pi", prompt, turn)
    result = {"content": [{"type": "text", "text": "[%s] committed\n" % (sha or "no git repo")}], "details": {}}
    out({"type": "tool_execution_end", "toolCallId": call["id"], "toolName": "bash", "result": result, "isError": False})
    out({"type": "turn_end", "message": first, "toolResults": []})
    out({"type": "turn_start"})
    text = answer_text("pi", prompt, prior, sid, turn, path)
    final = assistant([{"type": "text", "text": text}], "stop", tokens=(1200, 40))
    out({"type": "message_update", "message": final,
         "assistantMessageEvent": {"type": "text_delta", "contentIndex": 0, "delta": text, "partial": final}})
    out({"type": "message_end", "message": final})
    out({"type": "turn_end", "message": final, "toolResults": []})
    out({"type": "agent_end", "messages": [user, first, final]})
    if not json_out:
        print(text)
    return 0


RECORDED_PROJECT = "/home/user/project/"


def recording(tool, scenario):
    """(version, path) of the recording to replay, or None."""
    root = os.environ["FAKE_CLI_RECORDINGS"]
    want = os.environ.get("FAKE_CLI_VERSION")
    found = []
    for name in os.listdir(root):
        m = re.match(r"^%s-(.+)-(first|follow_up|killed|unauthorized)\.jsonl$" % tool, name)
        if m and m.group(2) == scenario and (want is None or m.group(1) == want):
            key = tuple(int(x) if x.isdigit() else 0 for x in re.split(r"[.-]", m.group(1)))
            found.append((key, m.group(1), os.path.join(root, name)))
    if not found:
        return None
    found.sort()
    return found[-1][1], found[-1][2]


def replay(tool, args):
    """Replays a real CLI's recorded stream (see the module docs)."""
    if "--version" in args[:2]:
        rec = recording(tool, "first")
        if rec is None:
            sys.stderr.write("fake_cli: no recording of %s\n" % tool)
            return 1
        print({"claude": "%s (Claude Code)", "codex": "codex-cli %s"}.get(tool, "%s") % rec[0])
        return 0
    if tool == "codex" and args[:1] == ["login"]:
        sys.stdin.read()
        print("Successfully logged in")
        return 0
    prompt = " ".join(args)
    # Codex's `-c` sets config; it continues with `exec resume`.
    continuing = "resume" in args if tool == "codex" else any(a in ("--continue", "-c") for a in args)
    scenario = ("unauthorized" if "FAIL" in prompt else "killed" if "SLEEP" in prompt
                else "follow_up" if continuing else "first")
    rec = recording(tool, scenario)
    if rec is None:
        sys.stderr.write("fake_cli: no %s recording of %s\n" % (scenario, tool))
        return 1
    with open(rec[1], encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        # The written path: in the tool call's content, or (Codex) in its file change.
        written = re.findall(r"standin wrote (/home/user/project/[^\s\\\"']+)", line)
        written += re.findall(r'"path":"(/home/user/project/[^"]+)","kind":"add"', line)
        for recorded in written:
            path = os.path.join(os.getcwd(), recorded[len(RECORDED_PROJECT):])
            if not os.path.exists(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as out:
                    out.write("standin wrote %s\n" % recorded)
    if scenario == "killed":
        time.sleep(3600)
    return 1 if scenario == "unauthorized" else 0


def main():
    tool = os.environ.get("FAKE_CLI_TOOL") or os.path.basename(sys.argv[0])
    if tool.endswith(".py"):
        tool = tool[:-3]
    if tool in TOOLS and os.environ.get("FAKE_CLI_RECORDINGS"):
        return replay(tool, sys.argv[1:])
    runners = {"claude": run_claude, "codex": run_codex, "opencode": run_opencode, "pi": run_pi}
    if tool not in runners:
        sys.stderr.write("fake_cli: run me as one of %s (symlink or FAKE_CLI_TOOL)\n" % ", ".join(TOOLS))
        return 2
    global START_COMMITS
    START_COMMITS = commit_count() if in_git_repo() else 0
    try:
        return runners[tool](sys.argv[1:])
    except UsageError as e:
        sys.stderr.write("%s: error: %s\n" % (tool, e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
