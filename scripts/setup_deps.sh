#!/usr/bin/env bash
# The Debian packages the build and the model fetch need, checked and, when
# missing, installed: as root with apt-get, through `sudo -n` where that works
# without a password, otherwise the script stops at once with the exact
# apt-get line to run. `make` runs it before the first compile (and again
# whenever this file changes), so `make demo` and `make test` set themselves
# up on a fresh Debian 12 machine.
# Usage: scripts/setup_deps.sh [--check] [PACKAGE...]
#   --check: report only, never install; PACKAGEs: check these instead of the
#   build's own (scripts/setup_peers.sh asks for its toolchain this way)
set -euo pipefail

check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
# library headers the build includes, and what fetching models needs
PKGS=(gcc make liblapacke-dev libmicrohttpd-dev libjansson-dev python3 python3-pip python3-venv)
if [ $# -gt 0 ]; then PKGS=("$@"); fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" && continue
  case $p in   # an interpreter from elsewhere (pyenv, a venv) serves as well
    python3) command -v python3 >/dev/null 2>&1 && continue ;;
    python3-pip) python3 -m pip --version >/dev/null 2>&1 && continue ;;
  esac
  missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

line="apt-get install -y ${missing[*]}"
if [ "$check" = 1 ]; then
  echo "setup_deps: missing Debian packages: ${missing[*]}" >&2
  echo "  run: $line" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "setup_deps: missing packages (${missing[*]}) and no apt-get on this system; install their equivalents" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=(sudo -n)
else
  echo "setup_deps: missing Debian packages: ${missing[*]}" >&2
  echo "  as root, run: $line" >&2
  exit 1
fi
echo "setup_deps: installing ${missing[*]}" >&2
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
