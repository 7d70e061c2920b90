#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the dashboard's browser tests (tests/test_dashboard.py).
# Idempotent and quick when both are installed; otherwise installs Debian's chromium and chromium-driver
# with apt-get (as root, or through sudo without a password). Exit 0 when both are on PATH afterwards; else
# prints why on stderr and exits 1 (the tests then skip with that reason).
set -euo pipefail
have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }
if have; then
  exit 0
fi
# Two pytest-xdist workers may run this at once: the second waits for the first's apt-get (dpkg allows one)
# instead of failing on apt's lock, then finds both installed.
if command -v flock >/dev/null 2>&1; then
  exec 9>"${TMPDIR:-/tmp}/ftsweep-browser-install.lock"
  flock 9
  if have; then
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser.sh: chromium/chromedriver missing and no apt-get here: install Chromium and its chromedriver" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "browser.sh: chromium/chromedriver missing and not root (no password-less sudo): apt-get install chromium chromium-driver" >&2
  exit 1
fi
echo "[browser] installing Debian's chromium and chromium-driver (first time: ~1 minute)" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >/dev/null
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
if ! have; then
  echo "browser.sh: apt-get ran but chromium/chromedriver are still not on PATH" >&2
  exit 1
fi
