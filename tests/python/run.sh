#!/usr/bin/env bash
# Interop suite: the official E2B Python SDK (debug mode) against a local courier-envd.
#
#   bash tests/python/run.sh [pytest args...]
#
# 1. builds the daemon (`cargo build -p <package of bins/courier-envd>`, honours
#    CARGO_TARGET_DIR; skipped when COURIER_ENVD_BIN points at a binary),
# 2. prepares the virtualenv (tests/python/venv.sh),
# 3. starts courier-envd on 127.0.0.1:49983 (the address the SDK uses when
#    E2B_DEBUG=true) as the current user, from a throw-away run directory, with
#    --insecure-no-token (debug mode sends no token; envd refuses TCP without one),
# 4. waits for GET /health = 204, runs pytest with E2B_DEBUG=true,
# 5. stops the daemon on exit and returns pytest's exit code.
#
# COURIER_ENVD_PORT=<port> runs on another port (for local use next to a daemon that
# already owns 49983): the SDK is then pointed at it with E2B_SANDBOX_URL.
# The daemon log is kept at $CARGO_TARGET_DIR/courier-envd-interop.log.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

target="${CARGO_TARGET_DIR:-target}"
case "$target" in
  /*) ;;
  *) target="$repo/$target" ;;
esac
port="${COURIER_ENVD_PORT:-49983}"
user="$(id -un)"

log() { echo "run.sh: $*" >&2; }

# ---------------------------------------------------------------- build
if [[ -n "${COURIER_ENVD_BIN:-}" ]]; then
  bin="$COURIER_ENVD_BIN"
else
  pkg="$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$repo/bins/courier-envd/Cargo.toml" | head -n1)"
  pkg="${pkg:-courier-envd-bin}"
  log "building $pkg"
  cargo build --quiet -p "$pkg" --bin courier-envd
  bin="$target/debug/courier-envd"
fi
if [[ ! -x "$bin" ]]; then
  log "daemon binary not found at $bin"
  exit 1
fi

# ---------------------------------------------------------------- venv
venv="$(bash "$here/venv.sh" | tail -n1)"
python="$venv/bin/python"

# ---------------------------------------------------------------- port
port_open() {
  "$python" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(1)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
sys.exit(0)
EOF
}
if port_open "$port"; then
  log "127.0.0.1:$port is already in use; stop whatever listens there (E2B debug mode needs that port)"
  log "or set COURIER_ENVD_PORT to run on another port"
  exit 1
fi

# ---------------------------------------------------------------- daemon
rundir="$(mktemp -d "${TMPDIR:-/tmp}/courier-envd-interop.XXXXXX")"
mkdir -p "$rundir/tmp" "$rundir/home"
# Traversable by everyone: a scenario checks that envd acts as another user (nobody)
# below it, which needs the way there open (each test's own directory is 0700).
chmod 755 "$rundir" "$rundir/tmp"
envd_log="$target/courier-envd-interop.log"
mkdir -p "$target"
: >"$envd_log"
daemon_pid=""

cleanup() {
  local rc=$?
  set +e
  if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid" 2>/dev/null
    for _ in $(seq 1 50); do
      kill -0 "$daemon_pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$daemon_pid" 2>/dev/null
    wait "$daemon_pid" 2>/dev/null
  fi
  # The daemon ran in its own process group: reap commands it left behind.
  if [[ -n "$daemon_pid" ]]; then
    kill -KILL -- "-$daemon_pid" 2>/dev/null
  fi
  if [[ $rc -ne 0 && -s "$envd_log" ]]; then
    log "last lines of the daemon log ($envd_log):"
    tail -n 40 "$envd_log" >&2
  fi
  rm -rf "$rundir"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "starting $bin on 127.0.0.1:$port as $user (log: $envd_log)"
(
  cd "$rundir/home"
  umask 022
  export HOME="$rundir/home"
  unset COURIER_ENVD_ACCESS_TOKEN  # debug mode: the SDK has no token to send
  export RUST_LOG="${RUST_LOG:-info}"
  exec setsid "$bin" --listen "127.0.0.1:$port" --default-user "$user" --insecure-no-token
) >>"$envd_log" 2>&1 &
daemon_pid=$!

health() {
  "$python" - "$port" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2) as r:
        sys.exit(0 if r.status == 204 else 1)
except Exception:
    sys.exit(1)
EOF
}
deadline=$((SECONDS + 60))
until health; do
  if ! kill -0 "$daemon_pid" 2>/dev/null; then
    log "courier-envd exited before becoming healthy"
    exit 1
  fi
  if ((SECONDS > deadline)); then
    log "courier-envd did not answer GET /health with 204 within 60s"
    exit 1
  fi
  sleep 0.2
done
log "courier-envd is healthy"

# ---------------------------------------------------------------- pytest
unset E2B_API_KEY E2B_ACCESS_TOKEN E2B_DOMAIN E2B_API_URL E2B_SANDBOX_URL
export E2B_DEBUG=true
if [[ "$port" != 49983 ]]; then
  export E2B_SANDBOX_URL="http://127.0.0.1:$port"
fi
export COURIER_ENVD_USER="$user"
export TMPDIR="$rundir/tmp"
export PYTHONDONTWRITEBYTECODE=1

set +e
(cd "$here" && "$python" -m pytest -p no:cacheprovider "$@")
rc=$?
set -e
exit "$rc"
