#!/usr/bin/env bash
# Installs what the test suites need on a fresh Debian machine (run as root by
# `cargo xtask test`; a no-op when everything is there). Nothing here is started: the
# test tooling starts its own throwaway services.
set -euo pipefail

need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
command -v runuser >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v git >/dev/null || need+=(git)
# The `base` sandbox template reuses the host's /usr: these become the sandbox's tools.
command -v sudo >/dev/null || need+=(sudo)
command -v tput >/dev/null || need+=(ncurses-bin)
command -v curl >/dev/null || need+=(curl)
# Outbound network for sandboxes that ask for it (user-space stack, no host firewall rules).
command -v slirp4netns >/dev/null || need+=(slirp4netns)
# The agent CLIs' templates `npm install -g` them over the host's /usr (Node >= 20.6 for
# Pi); `ps` is how an agent's processes are found and stopped.
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v ps >/dev/null || need+=(procps)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup-machine: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
else
  echo "setup-machine: nothing to install"
fi

# The dashboard's browser test (headless Chromium driven through chromedriver).
bash "$(dirname "$0")/../tests/browser/install.sh"
