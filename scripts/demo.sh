#!/usr/bin/env bash
# The main job: set up .venv, then run the quickstart sweep (tiny model, bundled data, CPU, a few minutes).
# Extra arguments are Hydra overrides, e.g. `bash scripts/demo.sh hydra.sweeper.n_trials=4`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
exec "$root/.venv/bin/ftsweep" train -m sweep=quickstart "$@"
