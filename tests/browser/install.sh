#!/usr/bin/env bash
# Installs what the dashboard's browser test needs (Debian's chromium and chromedriver).
# The test itself is `crates/courier-api/tests/browser.rs`; it skips with a printed
# reason when these are missing, so a machine without them stays green.
set -euo pipefail
if command -v chromedriver >/dev/null && { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "browser test: not root, cannot apt-get install chromium chromium-driver; the test will skip" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }; then
  echo "browser test: chromium is not installable here; the test will skip" >&2
fi
