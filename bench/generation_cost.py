"""What a generation objective costs: the quickstart trial (data=proxy_tasks, tiny model, lora=r8, 60 steps,
eval every 10) with objective=exact_match (32 seeded rows per evaluation as in sweep=quickstart_em, all 80
at the end; more evaluations per training step than quickstart_em's 400-step trials, so a harder case) vs
objective=eval_loss, as paired cold ``ftsweep train`` processes; and seconds of generation per 100 validation rows (tiny model, CPU). Target: exact_match trial <= 1.3x the eval_loss one.

    python bench/generation_cost.py             # 2 pairs, about 1-2 minutes on 2 quiet CPU cores
    python bench/generation_cost.py --pairs 1   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_env, default_cache, ensure_tiny_model, ftsweep_cmd, median, run_proc, table, write_result  # noqa: E402

SETTINGS = ["data=proxy_tasks", "lora=r8", "optimizer.lr=4.5e-3", "trainer.max_steps=60", "trainer.eval_steps=10",
            "trainer.logging_steps=10", "logger=none"]
OBJECTIVES = {"eval_loss": ["objective=eval_loss"], "exact_match": ["objective=exact_match", "objective.max_samples=32"]}


def one(name: str, run_dir: Path, env: dict[str, str]) -> dict:
    proc = run_proc(ftsweep_cmd("train", *SETTINGS, *OBJECTIVES[name], f"hydra.run.dir={run_dir}"), env=env)
    m = json.loads((run_dir / "metrics.json").read_text())
    return {"objective": name, "wall_s": proc.wall_s, "cpu_s": proc.cpu_s, "train_runtime_s": m["train_runtime"],
            "value": m["objective"], "generation_eval_s": m.get("generation_eval_s"),
            "generation_rows": m.get("generation_rows"), "generation_s_per_100_rows": m.get("generation_s_per_100_rows")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    env = bench_env(default_cache())
    ensure_tiny_model(env)
    load_before = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory(prefix="ftsweep-bench-gen-") as d:
        for i in range(args.pairs):
            for name in OBJECTIVES:
                runs.append(one(name, Path(d) / f"{name}-{i}", env))
    by = {n: [r for r in runs if r["objective"] == n] for n in OBJECTIVES}
    wall_ratio = median(em["wall_s"] / el["wall_s"] for em, el in zip(by["exact_match"], by["eval_loss"]))
    cpu_ratio = median(em["cpu_s"] / el["cpu_s"] for em, el in zip(by["exact_match"], by["eval_loss"]))
    per100 = median(r["generation_s_per_100_rows"] for r in by["exact_match"])
    print(table(["objective", "wall s", "cpu s", "training s", "generation s", "s / 100 rows", "value"],
                [[r["objective"], f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", f"{r['train_runtime_s']:.1f}",
                  r["generation_eval_s"] or "-", r["generation_s_per_100_rows"] or "-", f"{r['value']:.3f}"] for r in runs]))
    print(f"exact_match / eval_loss trial: wall {wall_ratio:.2f}x, CPU {cpu_ratio:.2f}x (target <= 1.3x); "
          f"generation {per100:.2f} s per 100 rows")
    write_result("generation_cost", {
        "command": "ftsweep train " + " ".join(SETTINGS) + " objective=<eval_loss | exact_match objective.max_samples=32>",
        "pairs": args.pairs, "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
        "wall_ratio": wall_ratio, "cpu_ratio": cpu_ratio, "generation_s_per_100_rows": per100,
        "target_ratio": 1.3, "met": wall_ratio is not None and wall_ratio <= 1.3, "runs": runs,
    }, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
