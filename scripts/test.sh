#!/usr/bin/env bash
# Run the test suite (sets up .venv first). Extra arguments go to pytest, e.g. `-m "not slow"`.
# Two pytest-xdist workers by default, tests dealt out one by one; a module with module-scoped fixtures
# marks itself pytest.mark.xdist_group(...) and runs on one worker, so its fixtures are built once;
# PYTEST_WORKERS=0 runs everything in this process, PYTEST_WORKERS=auto one worker per core.
# GPU-marked tests skip themselves without CUDA. pytest's "no tests collected" (exit 5) is a failure.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
export WANDB_MODE="${WANDB_MODE:-offline}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
set +e
workers="${PYTEST_WORKERS:-2}"
# The largest benchmark smoke runs (marker bench) are left out unless a -m expression is given: they take about
# a third of the suite's CPU time; `bash scripts/test.sh -m bench` runs them alone, `-m ""` runs everything.
marker=(-m "not bench")
for a in "$@"; do
  case "$a" in -m|-m*) marker=() ;; esac
done
"$root/.venv/bin/python" -m pytest -n "$workers" --dist loadgroup "${marker[@]}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "test.sh: pytest collected no tests: failing" >&2
  exit 1
fi
exit "$rc"
