"""Does the learning rate matter on the proxy task? Real ``ftsweep train`` runs on data=proxy_tasks at the
settings proposed for the quickstart sweep (tiny model, 60 steps, eval every 10) over lr 1e-5..1e-1 for
lora=r8 and lora=r16: final eval loss and token accuracy per lr, the spread between the best and the worst
lr (goal >= 20%) and whether the best lr is interior.

    python bench/proxy_spread.py            # 7 lr x 2 LoRA options, about 2-4 minutes on 2 CPU cores
    python bench/proxy_spread.py --quick    # 3 lr x r16, 10 steps (smoke test)
    python bench/proxy_spread.py --exact-match   # objective=exact_match: exact match of greedy answers per lr
                                                 # (all 80 validation rows), lora=r8, 400 steps as in
                                                 # sweep=quickstart_em (bench/results/proxy_spread_em.json)
    python bench/proxy_spread.py --steps 120     # any other trial length
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_env, default_cache, eval_interval, ftsweep_cmd, run_proc, table, write_result  # noqa: E402

LRS = [1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]


def scan(lora: str, lrs: list[float], steps: int, eval_every: int, tmp: Path, env: dict[str, str],
         objective: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    sweep_dir = tmp / lora
    run_proc(ftsweep_cmd("train", "-m", "hydra/sweeper=basic", "data=proxy_tasks", f"lora={lora}", "logger=none", *objective,
                         "optimizer.lr=" + ",".join(repr(x) for x in lrs), f"trainer.max_steps={steps}",
                         f"trainer.eval_steps={eval_every}", f"trainer.logging_steps={eval_every}",
                         f"hydra.sweep.dir={sweep_dir}"), env=env)
    out = []
    for job in sorted(p for p in sweep_dir.iterdir() if (p / "metrics.json").is_file()):
        m = json.loads((job / "metrics.json").read_text())
        cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        out.append({"lora": lora, "lr": float(cfg["optimizer"]["lr"]), "initial_eval_loss": m["initial_eval_loss"],
                    "eval_loss": m["eval_loss"], "eval_mean_token_accuracy": m["eval_mean_token_accuracy"],
                    "eval_history": m["eval_history"],
                    **{k: m[k] for k in ("exact_match", "initial_exact_match", "contains", "generation_s_per_100_rows")
                       if k in m}})
    return sorted(out, key=lambda r: r["lr"])


def spread(rows: list[dict[str, Any]]) -> dict[str, Any]:
    best = min(rows, key=lambda r: r["eval_loss"])
    worst = max(rows, key=lambda r: r["eval_loss"])
    lrs = [r["lr"] for r in rows]
    return {"best_lr": best["lr"], "best_eval_loss": best["eval_loss"], "worst_lr": worst["lr"],
            "worst_eval_loss": worst["eval_loss"], "worst_over_best": worst["eval_loss"] / best["eval_loss"],
            "optimum_interior": min(lrs) < best["lr"] < max(lrs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--exact-match", action="store_true")
    p.add_argument("--lrs", default=None, help="comma-separated learning rates (default: the 7 of the table)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps per run (default 60; 400 with --exact-match, as sweep=quickstart_em; 10 with --quick)")
    args = p.parse_args(argv)
    lrs, loras, steps = ([1e-4, 1e-2, 1e-1], ["r16"], 10) if args.quick else (LRS, ["r8", "r16"], 60)
    if args.lrs:
        lrs = [float(x) for x in args.lrs.split(",")]
    if args.exact_match:
        return exact_match_spread(lrs, args.steps or (steps if args.quick else 400), args.out)
    steps = args.steps or steps
    env = bench_env(default_cache())
    with tempfile.TemporaryDirectory(prefix="ftsweep-bench-spread-") as d:
        rows = {lora: scan(lora, lrs, steps, eval_interval(steps), Path(d), env) for lora in loras}
    spreads = {lora: spread(r) for lora, r in rows.items()}
    allrows = [r for rs in rows.values() for r in rs]
    overall = spread(allrows)
    print(f"\ndata=proxy_tasks, tiny model, {steps} steps, final eval loss (token accuracy)\n")
    print(table(["lr", *loras], [[f"{lr:g}", *(f"{r['eval_loss']:.3f} ({r['eval_mean_token_accuracy']:.2f})"
                                              for lora in loras for r in rows[lora] if r["lr"] == lr)] for lr in lrs]))
    for lora, s in spreads.items():
        print(f"lora={lora}: best lr {s['best_lr']:g} -> {s['best_eval_loss']:.3f}, worst lr {s['worst_lr']:g} -> "
              f"{s['worst_eval_loss']:.3f}: worst/best {s['worst_over_best']:.2f}, optimum interior: {s['optimum_interior']}")
    write_result("proxy_spread", {
        "command": f"ftsweep train -m data=proxy_tasks lora=<r8|r16> logger=none optimizer.lr=<lrs> "
                   f"trainer.max_steps={steps} trainer.eval_steps={eval_interval(steps)}",
        "steps": steps, "lrs": lrs, "spread": spreads, "overall": overall, "runs": allrows,
    }, args.out)
    return 0


def exact_match_spread(lrs: list[float], steps: int, out: str | None) -> int:
    """Exact match of greedy answers on all validation rows after training, per lr (lora=r8)."""
    env = bench_env(default_cache())
    objective = ("objective=exact_match", "objective.max_samples=16")
    with tempfile.TemporaryDirectory(prefix="ftsweep-bench-spread-em-") as d:
        rows = scan("r8", lrs, steps, eval_interval(steps), Path(d), env, objective)
    best = max(rows, key=lambda r: r["exact_match"])
    worst = min(rows, key=lambda r: r["exact_match"])
    print(f"\ndata=proxy_tasks, tiny model, lora=r8, {steps} steps: exact match on all validation rows (eval loss)\n")
    print(table(["lr", "exact match", "eval loss"], [[f"{r['lr']:g}", f"{r['exact_match']:.3f}", f"{r['eval_loss']:.3f}"]
                                                    for r in rows]))
    print(f"best lr {best['lr']:g} -> {best['exact_match']:.3f}, worst lr {worst['lr']:g} -> {worst['exact_match']:.3f}")
    write_result("proxy_spread_em", {
        "command": f"ftsweep train -m data=proxy_tasks lora=r8 logger=none {' '.join(objective)} optimizer.lr=<lrs> "
                   f"trainer.max_steps={steps} trainer.eval_steps={eval_interval(steps)}",
        "steps": steps, "lrs": lrs, "best_lr": best["lr"], "best_exact_match": best["exact_match"],
        "worst_lr": worst["lr"], "worst_exact_match": worst["exact_match"], "runs": rows,
    }, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
