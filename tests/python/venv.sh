#!/usr/bin/env bash
# Create or refresh the virtualenv used by the courier-envd interop suite.
#
#   tests/python/venv.sh            -> prints the venv path on stdout (last line)
#
# Location: ${CARGO_TARGET_DIR:-target}/python-venv, relative to the repository root
# when CARGO_TARGET_DIR is relative. Idempotent: a stamp file holding the hash of
# requirements.txt (plus the interpreter version) makes re-runs a no-op.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-target}"
case "$target" in
  /*) ;;
  *) target="$repo/$target" ;;
esac
venv="$target/python-venv"
req="$here/requirements.txt"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
  echo "venv.sh: $python not found" >&2
  exit 1
fi

want="$( { cat "$req"; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
stamp="$venv/.courier-requirements.sha256"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$venv"
  exit 0
fi

if ! "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "venv.sh: ensurepip missing, installing python3-venv" >&2
    apt-get install -y python3-venv >&2 || { apt-get update >&2 && apt-get install -y python3-venv >&2; }
  else
    echo "venv.sh: $python lacks ensurepip/venv; install python3-venv" >&2
    exit 1
  fi
fi

mkdir -p "$target"
rm -f "$stamp"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "venv.sh: creating $venv" >&2
  "$python" -m venv "$venv" >&2
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$venv/bin/python" -m pip install --quiet --requirement "$req" >&2
echo "$want" >"$stamp"
echo "$venv"
