#!/usr/bin/env bash
# Create .venv and install ftsweep into it (idempotent: skipped when pyproject.toml is unchanged).
# On a machine without an NVIDIA GPU, torch==2.13.0 (a CPU build) is installed first so that no
# dependency pulls a multi-GB CUDA build (see docs/environment notes in README).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
venv="$root/.venv"
stamp="$venv/.ftsweep-installed"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ftsweep needs Python 3.11+")'
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip >/dev/null
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "[setup] no NVIDIA GPU: installing the CPU build torch==2.13.0 first" >&2
  "${pip[@]}" install "torch==2.13.0"
fi
echo "[setup] installing ftsweep and its dependencies into .venv (first time: ~2 minutes)" >&2
# pip's and setuptools' own chatter (e.g. the boxed editable-install notice) goes to a log, shown on failure
log="$venv/setup.log"
if ! "${pip[@]}" install -e ".[dev]" >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "[setup] pip install failed: full log in $log" >&2
  exit 1
fi
echo "$want" > "$stamp"
