"""How fast does the command line answer? Whole-process wall time of ``ftsweep --help``,
``ftsweep train --help``, ``ftsweep train --cfg job`` and ``ftsweep inspect --help`` (target < 1.0 s each),
next to a bare ``python -c pass``, and whether each one imported torch / transformers / peft / trl / optuna.

    python bench/startup.py            # 7 interleaved repetitions, medians
    python bench/startup.py --quick    # 3 repetitions
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PY, bench_env, ftsweep_cmd, median, run_proc, table, write_result  # noqa: E402

COMMANDS = {
    "python -c pass (floor)": [PY, "-c", "pass"],
    "ftsweep --help": ftsweep_cmd("--help"),
    "ftsweep train --help": ftsweep_cmd("train", "--help"),
    "ftsweep train --cfg job": ftsweep_cmd("train", "--cfg", "job"),
    "ftsweep inspect --help": ftsweep_cmd("inspect", "--help"),
}
HEAVY = ("torch", "transformers", "peft", "trl", "optuna", "datasets", "wandb")
TARGET_S = 1.0


def heavy_imports(cmd: list[str], env: dict[str, str]) -> list[str]:
    """Top-level heavy packages the command imported (``python -X importtime``)."""
    proc = run_proc([cmd[0], "-X", "importtime", *cmd[1:]], env=env)
    seen = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name in HEAVY:
                seen.add(name)
    return sorted(seen)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    reps = args.reps or (3 if args.quick else 7)
    env = bench_env()
    for cmd in COMMANDS.values():  # warm the page cache and .pyc files once
        run_proc(cmd, env=env)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(reps):  # interleaved: a burst of load from other jobs hits every command alike
        for name, cmd in COMMANDS.items():
            proc = run_proc(cmd, env=env)
            times[name].append(proc.wall_s)
            cpu[name].append(proc.cpu_s)
    rows, results = [], {}
    for name, cmd in COMMANDS.items():
        med = median(times[name])
        heavy = heavy_imports(cmd, env) if name.startswith("ftsweep") else []
        ok = None if not name.startswith("ftsweep") else med < TARGET_S
        results[name] = {"median_s": med, "min_s": min(times[name]), "max_s": max(times[name]), "runs_s": times[name],
                         "median_cpu_s": median(cpu[name]),
                         "heavy_imports": heavy, "meets_target_lt_1s": ok, "command": " ".join(cmd[1:])}
        rows.append([name, med, min(times[name]), max(times[name]), median(cpu[name]), ", ".join(heavy) or "none",
                     "–" if ok is None else ("yes" if ok else "NO")])
    print(f"whole-process wall time, {reps} interleaved repetitions (target < {TARGET_S} s)\n")
    print(table(["command", "median s", "min s", "max s", "CPU s (user+sys)", "heavy imports", "< 1 s (wall)"], rows))
    write_result("startup", {"repetitions": reps, "target_s": TARGET_S, "results": results}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
