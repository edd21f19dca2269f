#!/usr/bin/env bash
# Scenario suite: the official E2B Python SDK against a running courier-sandboxd.
#
#   bash tests/python/run_sandboxd.sh [pytest args...]
#
# 1. needs root (sandboxes are namespaces + cgroups + overlays); otherwise prints why
#    and exits 0,
# 2. builds courier-sandboxd and courier-envd (honours CARGO_TARGET_DIR; skipped when
#    COURIER_SANDBOXD_BIN and COURIER_ENVD_BIN point at binaries),
# 3. prepares the virtualenv (tests/python/venv.sh),
# 4. starts `courier-sandboxd serve --kill-on-exit` on two free loopback ports with a
#    throw-away data dir and a random dev API key; `--egress-allow <this host's outward
#    address>/32` lets sandboxes reach test servers there (the network tests' stand-in
#    for the internet; the host's addresses are refused to sandboxes otherwise),
# 5. runs pytest on tests/python/sandboxd with E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY,
#    COURIER_SANDBOXD_DATA_DIR (the server's data dir) and COURIER_SANDBOXD_ISOLATION
#    (passed to the server too: `container` or `gvisor`; unset, the server picks),
# 6. stops the server on exit (SIGTERM: it kills every sandbox), removes the data dir,
#    and returns pytest's exit code.
#
# The server log is kept at $CARGO_TARGET_DIR/courier-sandboxd-scenarios.log.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

log() { echo "run_sandboxd.sh: $*" >&2; }

if [[ "$(id -u)" != 0 ]]; then
  log "skipping: courier-sandboxd needs root (namespaces, mounts, cgroups)"
  exit 0
fi

target="${CARGO_TARGET_DIR:-target}"
case "$target" in
  /*) ;;
  *) target="$repo/$target" ;;
esac

# ---------------------------------------------------------------- build
if [[ -n "${COURIER_SANDBOXD_BIN:-}" && -n "${COURIER_ENVD_BIN:-}" ]]; then
  server_bin="$COURIER_SANDBOXD_BIN"
  envd_bin="$COURIER_ENVD_BIN"
else
  log "building courier-sandboxd-bin and courier-envd-bin"
  cargo build --quiet -p courier-sandboxd-bin --bin courier-sandboxd -p courier-envd-bin --bin courier-envd
  server_bin="$target/debug/courier-sandboxd"
  envd_bin="$target/debug/courier-envd"
fi
for bin in "$server_bin" "$envd_bin"; do
  [[ -x "$bin" ]] || { log "binary not found: $bin"; exit 1; }
done

# ---------------------------------------------------------------- venv
venv="$(bash "$here/venv.sh" | tail -n1)"
python="$venv/bin/python"

free_port() {
  "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
api_port="$(free_port)"
proxy_port="$(free_port)"
while [[ "$proxy_port" == "$api_port" ]]; do proxy_port="$(free_port)"; done
api_key="e2b_$("$python" -c 'import secrets; print(secrets.token_hex(20))')"
# This host's outward IPv4 address (the source of a route out; nothing is sent).
outside_ip="$("$python" - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.connect(("192.0.2.254", 9))
    ip = s.getsockname()[0]
    print("" if ip.startswith("127.") or ip == "0.0.0.0" else ip)
except OSError:
    print("")
PY
)"
egress_args=()
if [[ -n "$outside_ip" ]]; then
  egress_args=(--egress-allow "$outside_ip/32")
  export COURIER_EGRESS_OUTSIDE_IP="$outside_ip"
fi

# ---------------------------------------------------------------- server
rundir="$(mktemp -d "${TMPDIR:-/tmp}/courier-sandboxd-scenarios.XXXXXX")"
server_log="$target/courier-sandboxd-scenarios.log"
mkdir -p "$target"
: >"$server_log"
server_pid=""

cleanup() {
  local rc=$?
  set +e
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    # SIGTERM: with --kill-on-exit the server kills every sandbox before exiting.
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 1 300); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$server_pid" 2>/dev/null; then
      log "server did not stop within 60s; killing it"
      kill -KILL "$server_pid" 2>/dev/null
    fi
    wait "$server_pid" 2>/dev/null
  fi
  if [[ -d "$rundir/data/runtime/sandboxes" ]] && [[ -n "$(ls -A "$rundir/data/runtime/sandboxes" 2>/dev/null)" ]]; then
    # The server died without cleaning up: a fresh start with KillAll-like recovery
    # would reap them; do it with a short-lived server run.
    log "sandboxes left behind; reaping them"
    "$server_bin" serve --data-dir "$rundir/data" --api-addr 127.0.0.1:0 --proxy-addr 127.0.0.1:0 \
      --envd-binary "$envd_bin" --kill-on-exit >>"$server_log" 2>&1 &
    local reaper=$!
    sleep 3
    kill -TERM "$reaper" 2>/dev/null
    wait "$reaper" 2>/dev/null
  fi
  if [[ $rc -ne 0 && -s "$server_log" ]]; then
    log "last lines of the server log ($server_log):"
    tail -n 40 "$server_log" >&2
  fi
  rm -rf "$rundir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting $server_bin (api 127.0.0.1:$api_port, proxy 127.0.0.1:$proxy_port, log $server_log)"
COURIER_SANDBOXD_API_KEY="$api_key" RUST_LOG="${RUST_LOG:-info}" \
  "$server_bin" serve --data-dir "$rundir/data" \
  --api-addr "127.0.0.1:$api_port" --proxy-addr "127.0.0.1:$proxy_port" \
  --domain courier.test --envd-binary "$envd_bin" --kill-on-exit "${egress_args[@]}" \
  >>"$server_log" 2>&1 &
server_pid=$!

health() {
  "$python" - "$api_port" <<'PY'
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2) as r:
        sys.exit(0 if r.status == 204 else 1)
except Exception:
    sys.exit(1)
PY
}
deadline=$((SECONDS + 120))
until health; do
  if ! kill -0 "$server_pid" 2>/dev/null; then
    log "courier-sandboxd exited before becoming healthy"
    exit 1
  fi
  if ((SECONDS > deadline)); then
    log "courier-sandboxd did not answer GET /health with 204 within 120s"
    exit 1
  fi
  sleep 0.2
done
log "courier-sandboxd is healthy"

# ---------------------------------------------------------------- pytest
unset E2B_DEBUG E2B_ACCESS_TOKEN E2B_DOMAIN
export E2B_API_URL="http://127.0.0.1:$api_port"
export E2B_SANDBOX_URL="http://127.0.0.1:$proxy_port"
export E2B_API_KEY="$api_key"
export COURIER_SANDBOXD_SUITE=1
# Host-side checks of the attack suite (console logs, control sockets) read the data dir.
export COURIER_SANDBOXD_DATA_DIR="$rundir/data"
export PYTHONDONTWRITEBYTECODE=1

set +e
(cd "$here/sandboxd" && "$python" -m pytest -p no:cacheprovider -c pytest.ini --rootdir . --confcutdir . "$@")
rc=$?
set -e
exit "$rc"
