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
# The egress tests build their own network namespaces (ip) and TLS test host (openssl).
command -v ip >/dev/null || need+=(iproute2)
command -v openssl >/dev/null || need+=(openssl)
# `cargo xtask e2b-suite`'s registry stand-in serves a debootstrapped Debian as the
# `ubuntu:22.04` the suite's `fromImage` template tests pull.
command -v debootstrap >/dev/null || need+=(debootstrap)

# Filesystems for sandbox disks (mkfs.ext4).
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
# The agent CLIs' templates `npm install -g` them over the host's /usr (Node >= 20.6 for
# Pi); `ps` is how an agent's processes are found and stopped.
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v ps >/dev/null || need+=(procps)
# The attack suite (tests/python/sandboxd/test_attacks.py): keyctl stores a host key that
# sandboxes must not see; nft (in the sandboxes too, through the shared /usr) tries to
# reach nf_tables from inside.
command -v keyctl >/dev/null || need+=(keyutils)
command -v nft >/dev/null || [ -x /usr/sbin/nft ] || need+=(nftables)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup-machine: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
else
  echo "setup-machine: nothing to install"
fi

# gVisor for sandboxes with a kernel of their own. Debian 12 ships runsc 20221219, which
# lacks the systrap platform and fails Debian 12's own coreutils (statx with
# AT_NO_AUTOMOUNT answers EINVAL); Debian 13's runsc (20240729, a static binary without
# dependencies) works, so it is taken from trixie without adding trixie to apt's sources.
# The version is read whole before it is matched: `runsc --version | grep -q` under
# pipefail fails whenever grep has quit before runsc writes its second line (SIGPIPE).
runsc_ok() {
  local version
  command -v runsc >/dev/null && version="$(runsc --version 2>/dev/null)" &&
    grep -qE 'version 0\.0~20(2[4-9]|[3-9][0-9])' <<<"$version"
}
if ! runsc_ok; then
  echo "setup-machine: installing runsc from Debian 13 (trixie)"
  tmp=$(mktemp -d)
  chmod 755 "$tmp"
  mkdir -p "$tmp/lists/partial"
  echo "deb http://deb.debian.org/debian trixie main" > "$tmp/trixie.list"
  apt_trixie=(-o "Dir::Etc::SourceList=$tmp/trixie.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$tmp/lists")
  apt-get "${apt_trixie[@]}" update -q
  (cd "$tmp" && apt-get "${apt_trixie[@]}" download runsc)
  dpkg -i "$tmp"/runsc_*.deb
  rm -rf "$tmp"
  runsc_ok || { echo "setup-machine: runsc from trixie does not run" >&2; exit 1; }
fi

# The dashboard's browser test (headless Chromium driven through chromedriver).
bash "$(dirname "$0")/../tests/browser/install.sh"
