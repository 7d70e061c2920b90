"""FAST ESTIMATE ONLY (a replay, not real sweeps; bench/sweep_efficiency.py runs real ones). Grid vs random vs TPE vs TPE + pruning (median, hyperband) on the proxy task
(data=proxy_tasks), over lr log 1e-5..1e-1 x LoRA r {4, 8, 16, 32} x alpha/r {1, 2}, 10 sampler seeds,
equal budgets in total optimizer steps.

    python bench/sweep_efficiency_replay.py             # replay on the measured table (measures it first if missing)
    python bench/sweep_efficiency_replay.py --seeds 0 1 2 --interp linear   # 3 seeds; linear interpolation
    python bench/sweep_efficiency_replay.py --measure   # re-measure the table: 13 lr x 8 (r, alpha) real runs, ~10 min
    python bench/sweep_efficiency_replay.py --quick     # tiny table (3 lr x 2 (r, alpha), 20 steps) in a temp dir

**This is a replay over measured curves.** Real training on a 2-core CPU cannot afford 5 methods x 3 seeds
x 40 trials, so the script first trains the proxy task once per point of a coarse grid (13 learning rates,
3 per decade, x 4 r x 2 alpha ratios; 80 steps, eval loss every 10 steps; ``ftsweep train -m`` with
Hydra's basic sweeper) and caches every eval-loss curve in ``bench/results/sweep_efficiency_table.json``.
Then Optuna's real samplers and pruners run in-process against that table: a proposed lr that lies between
two measured points gets the whole eval curve of the nearest measured lr in log10(lr) (same r and alpha;
``--interp linear`` interpolates linearly in log10(lr) instead). Runs are deterministic (fixed seed), so a
table point has no noise; the decade grid's lr values are table points.

Budget: the grid method's natural size, 5 lr (one per decade) x 4 r x 2 ratios = 40 trials x 80 steps =
3,200 optimizer steps; every method gets the same 3,200 steps. A pruned trial costs the steps it ran.
Reported: best eval loss vs steps used (median over seeds, plot in ``bench/results/sweep_efficiency_replay.png``)
and steps until a method is within 2% of the best eval loss any method found.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS,
    bench_env,
    default_cache,
    ftsweep_cmd,
    median,
    run_proc,
    scratch,
    table,
    write_result,
)

TABLE = RESULTS / "sweep_efficiency_table.json"
LR_LO, LR_HI = 1e-5, 1e-1
METHODS = ("grid", "random", "tpe", "tpe+median", "tpe+hyperband")


# ------------------------------------------------------------------------------------ measuring
def lr_grid(per_decade: int) -> list[float]:
    n = round(math.log10(LR_HI / LR_LO) * per_decade)
    return [float(f"{LR_LO * 10 ** (i / per_decade):.3g}") for i in range(n + 1)]


def measure_table(lrs: list[float], rs: list[int], ratios: list[int], steps: int, eval_every: int,
                  out: Path, workdir: Path) -> dict[str, Any]:
    """Train every (lr, r, alpha) point with ``ftsweep train -m`` (one process per (r, alpha))."""
    env = bench_env(default_cache())
    points = []
    started = time.perf_counter()
    for r in rs:
        for ratio in ratios:
            sweep_dir = workdir / f"r{r}_x{ratio}"
            cmd = ftsweep_cmd(
                "train", "-m", "hydra/sweeper=basic", "data=proxy_tasks", "logger=none", f"lora.r={r}", f"lora.alpha={r * ratio}",
                "optimizer.lr=" + ",".join(repr(x) for x in lrs), f"trainer.max_steps={steps}",
                f"trainer.eval_steps={eval_every}", f"trainer.logging_steps={eval_every}", "trainer.save_steps=0",
                f"hydra.sweep.dir={sweep_dir}",
            )
            proc = run_proc(cmd, env=env)
            for job in sorted(sweep_dir.iterdir()):
                if not (job / "metrics.json").is_file():
                    continue
                m = json.loads((job / "metrics.json").read_text())
                lr = _job_lr(job)
                points.append({
                    "lr": lr, "r": r, "alpha_ratio": ratio,
                    "steps": [h["step"] for h in m["eval_history"]],
                    "eval_loss": [h["eval_loss"] for h in m["eval_history"]],
                    "train_runtime_s": m.get("train_runtime"),
                })
            print(f"  measured r={r} alpha={r * ratio}: {len(lrs)} runs in {proc.wall_s:.0f} s", flush=True)
    doc = {
        "what": "eval-loss curves of real ftsweep runs on data=proxy_tasks (tiny model, CPU), one per grid point",
        "command": "python -m ftsweep train -m data=proxy_tasks logger=none lora.r=R lora.alpha=R*ratio "
                   f"optimizer.lr=<{len(lrs)} values> trainer.max_steps={steps} trainer.eval_steps={eval_every}",
        "lrs": lrs, "rs": rs, "alpha_ratios": ratios, "max_steps": steps, "eval_every": eval_every,
        "measure_wall_s": time.perf_counter() - started,
        "points": points,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out}")
    return doc


def _job_lr(job: Path) -> float:
    import yaml

    cfg = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
    return float(cfg["optimizer"]["lr"])


# ------------------------------------------------------------------------------------- the table
class Curves:
    """Eval-loss curve for any (lr, r, alpha ratio): the measured curve at the nearest measured lr in
    log10(lr) (default), or ``interp="linear"``: interpolated linearly in log10(lr) between the two
    neighbours. Neither invents a loss below a measured one; linear turns every measured minimum into a
    sharp V that only an lr very close to the grid point can match, which favours a grid that contains
    that point, so nearest is the default."""

    def __init__(self, doc: dict[str, Any], interp: str = "nearest"):
        self.interp = interp
        self.steps: list[int] = doc["points"][0]["steps"]
        self.max_steps: int = doc["max_steps"]
        self.rs = sorted({p["r"] for p in doc["points"]})
        self.ratios = sorted({p["alpha_ratio"] for p in doc["points"]})
        self.lo, self.hi = min(doc["lrs"]), max(doc["lrs"])
        by: dict[tuple[int, int], list[tuple[float, list[float]]]] = {}
        for p in doc["points"]:
            by.setdefault((p["r"], p["alpha_ratio"]), []).append((math.log10(p["lr"]), p["eval_loss"]))
        self.by = {k: sorted(v) for k, v in by.items()}

    def curve(self, lr: float, r: int, ratio: int) -> list[float]:
        pts = self.by[(r, ratio)]
        x = min(max(math.log10(lr), pts[0][0]), pts[-1][0])
        xs = [p[0] for p in pts]
        i = bisect.bisect_left(xs, x)
        if xs[i] == x:
            return list(pts[i][1])
        (x0, c0), (x1, c1) = pts[i - 1], pts[i]
        if self.interp == "nearest":
            return list(c0 if x - x0 <= x1 - x else c1)
        w = (x - x0) / (x1 - x0)
        return [(1 - w) * a + w * b for a, b in zip(c0, c1)]

    def final(self, lr: float, r: int, ratio: int) -> float:
        return self.curve(lr, r, ratio)[-1]


# ------------------------------------------------------------------------------------- the replay
def make_study(method: str, seed: int, curves: Curves, grid_lrs: list[float], eval_every: int):
    import optuna

    if method == "grid":
        sampler = optuna.samplers.GridSampler(
            {"lr": grid_lrs, "r": curves.rs, "alpha_ratio": curves.ratios}, seed=seed)
    elif method == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=8)
    if method == "tpe+median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2 * eval_every)
    elif method == "tpe+hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=eval_every, max_resource=curves.max_steps,
                                                reduction_factor=3)
    else:
        pruner = optuna.pruners.NopPruner()
    # A fixed name: Hyperband assigns trials to brackets by a hash of the study name (random by default).
    return optuna.create_study(study_name=f"{method}-seed{seed}", direction="minimize", sampler=sampler, pruner=pruner)


def replay(method: str, seed: int, curves: Curves, budget: int, grid_lrs: list[float]) -> dict[str, Any]:
    """One sweep against the table until ``budget`` optimizer steps are spent."""
    import optuna

    eval_every = curves.steps[1] - curves.steps[0]
    study = make_study(method, seed, curves, grid_lrs, eval_every)
    grid_size = len(grid_lrs) * len(curves.rs) * len(curves.ratios)
    used, best, trace, n_pruned, n_complete = 0, math.inf, [], 0, 0
    while used < budget and not (method == "grid" and n_complete >= grid_size):
        t = study.ask()
        lr = t.suggest_float("lr", curves.lo, curves.hi, log=True)
        r = t.suggest_categorical("r", curves.rs)
        ratio = t.suggest_categorical("alpha_ratio", curves.ratios)
        curve = curves.curve(lr, r, ratio)
        state, prev = "complete", 0
        for step, loss in zip(curves.steps[1:], curve[1:]):  # steps[0] is the initial eval (step 0)
            if used + (step - prev) > budget:
                state = "budget"  # the budget ends inside this trial: no result from it
                break
            used += step - prev
            prev = step
            t.report(loss, step)
            if t.should_prune():
                state = "pruned"
                break
        if state == "complete":
            _tell_complete(study, t, curve[-1])
            n_complete += 1
            best = min(best, curve[-1])
        elif state == "pruned":
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
            n_pruned += 1
        else:
            study.tell(t, state=optuna.trial.TrialState.FAIL)
            break
        trace.append([used, best if best < math.inf else None])
    return {"method": method, "seed": seed, "steps_used": used, "best": best if best < math.inf else None,
            "n_complete": n_complete, "n_pruned": n_pruned, "trace": trace}


def _tell_complete(study, trial, value: float) -> None:
    try:
        study.tell(trial, value)
    except RuntimeError as err:
        # GridSampler calls study.stop() once the grid is exhausted, which raises outside optimize();
        # the trial is stored before that (optuna's tell stores it in a finally block).
        if "Study.stop" not in str(err):
            raise


def steps_to(trace: list[list[Any]], target: float) -> int | None:
    return next((used for used, best in trace if best is not None and best <= target), None)


def best_at(trace: list[list[Any]], steps: int) -> float | None:
    vals = [b for u, b in trace if u <= steps and b is not None]
    return min(vals) if vals else None


# ------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny table in a temp dir, 1 seed (smoke test)")
    p.add_argument("--measure", action="store_true", help="re-measure the table even if it is cached")
    p.add_argument("--table", type=Path, default=None, help=f"table JSON (default {TABLE})")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)),
                   help="sampler seeds (default 10: with 3, which method wins flips from seed set to seed set)")
    p.add_argument("--interp", choices=("nearest", "linear"), default="nearest",
                   help="an lr between measured points: the nearest point's curve, or linear in log10(lr)")
    p.add_argument("--out", type=Path, default=None, help="results JSON (default bench/results/sweep_efficiency_replay.json)")
    p.add_argument("--keep", action="store_true", help="keep the working folder of sweeps and runs (removed at exit)")
    args = p.parse_args(argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tmp = scratch("ftsweep-bench-sweep-", args.keep)
    if args.quick:
        table_path = args.table or tmp / "table.json"
        doc = measure_table([1e-4, 1e-2, 1e-1], [4, 8], [2], 20, 10, table_path, tmp)
        seeds, grid_lrs = args.seeds[:1], [1e-4, 1e-2, 1e-1]
        out = args.out or Path(tempfile.mkdtemp(prefix="ftsweep-bench-replay-quick-")) / "sweep_efficiency.json"
        plot = out.with_suffix(".png")
    else:
        table_path = args.table or TABLE
        if args.measure or not table_path.is_file():
            print(f"measuring the table ({table_path}); about 10 minutes on 2 CPU cores", flush=True)
            doc = measure_table(lr_grid(3), [4, 8, 16, 32], [1, 2], 80, 10, table_path, tmp)
        else:
            doc = json.loads(table_path.read_text())
        seeds, grid_lrs = args.seeds, [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
        out = args.out
        plot = Path(args.out).with_suffix(".png") if args.out else RESULTS / "sweep_efficiency_replay.png"
    curves = Curves(doc, args.interp)
    budget = len(grid_lrs) * len(curves.rs) * len(curves.ratios) * curves.max_steps

    runs = [replay(m, s, curves, budget, grid_lrs) for m in METHODS for s in seeds]
    best_any = min(r["best"] for r in runs if r["best"] is not None)
    target = best_any * 1.02
    measured_best = min((pt["eval_loss"][-1], pt["lr"], pt["r"], pt["alpha_ratio"]) for pt in doc["points"])
    summary = summarize(runs, target, budget)
    print_report(doc, summary, budget, best_any, target, measured_best, len(seeds), args.interp)
    spread = spread_figures(doc)
    payload = {
        "replay": True,
        "how": ("replay over measured curves: Optuna samplers/pruners run in-process against a table of eval-loss "
                "curves from real ftsweep runs; an lr between two measured grid points gets "
                + ("the curve of the nearest measured lr in log10(lr)" if args.interp == "nearest" else
                   "the curve interpolated linearly in log10(lr) between its neighbours")
                + " (same r and alpha ratio)"),
        "interp": args.interp,
        "table": str(table_path), "table_command": doc["command"], "table_measure_wall_s": doc.get("measure_wall_s"),
        "space": {"lr": [LR_LO, LR_HI, "log"], "r": curves.rs, "alpha_ratio": curves.ratios},
        "grid_lrs": grid_lrs, "seeds": seeds, "budget_steps": budget, "max_steps_per_trial": curves.max_steps,
        "eval_every": curves.steps[1] - curves.steps[0],
        "best_any_method": best_any, "target_within_2pct": target,
        "best_measured_grid_point": {"eval_loss": measured_best[0], "lr": measured_best[1], "r": measured_best[2],
                                     "alpha_ratio": measured_best[3]},
        "lr_spread": spread, "summary": summary, "runs": runs,
    }
    write_result("sweep_efficiency_replay", payload, out)
    plot_traces(runs, target, budget, plot)
    return 0


def summarize(runs: list[dict[str, Any]], target: float, budget: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in METHODS:
        mine = [r for r in runs if r["method"] == m]
        reached = [steps_to(r["trace"], target) for r in mine]
        out[m] = {
            "best_median": median(r["best"] for r in mine),
            "best_per_seed": [r["best"] for r in mine],
            "best_at_25pct_budget_median": median(best_at(r["trace"], budget // 4) for r in mine),
            "steps_to_2pct_per_seed": reached,
            # a seed that never got within 2% counts as the whole budget (a lower bound on its cost)
            "steps_to_2pct_median": median(x if x is not None else budget for x in reached),
            "seeds_reaching_2pct": sum(x is not None for x in reached),
            "trials_median": median(r["n_complete"] + r["n_pruned"] for r in mine),
            "pruned_median": median(r["n_pruned"] for r in mine),
        }
    grid = out["grid"]["steps_to_2pct_median"]
    for m in METHODS:
        s = out[m]["steps_to_2pct_median"]
        out[m]["steps_vs_grid"] = s / grid if grid else None
    return out


def spread_figures(doc: dict[str, Any]) -> dict[str, Any]:
    """Best vs worst learning rate at the default LoRA (r 16, alpha 16 when measured)."""
    pts = [p for p in doc["points"] if p["r"] == 16 and p["alpha_ratio"] == 1] or doc["points"]
    best = min(pts, key=lambda p: p["eval_loss"][-1])
    worst = max(pts, key=lambda p: p["eval_loss"][-1])
    lrs = sorted(p["lr"] for p in pts)
    return {"at": {"r": pts[0]["r"], "alpha_ratio": pts[0]["alpha_ratio"]},
            "best_lr": best["lr"], "best_eval_loss": best["eval_loss"][-1],
            "worst_lr": worst["lr"], "worst_eval_loss": worst["eval_loss"][-1],
            "worst_over_best": worst["eval_loss"][-1] / best["eval_loss"][-1],
            "optimum_interior": lrs[0] < best["lr"] < lrs[-1]}


def print_report(doc, summary, budget, best_any, target, measured_best, n_seeds, interp) -> None:
    how = ("takes the curve of the nearest measured lr (log10)" if interp == "nearest"
           else "is interpolated linearly in log10(lr) between its neighbours")
    print(f"\nREPLAY over measured curves ({len(doc['points'])} real runs, {doc['max_steps']} steps each; "
          f"an lr between measured points {how})")
    print(f"budget {budget:,} optimizer steps per sweep, {n_seeds} sampler seed(s); best any method found "
          f"{best_any:.4f}, target (within 2%) {target:.4f}; best measured grid point {measured_best[0]:.4f} "
          f"(lr {measured_best[1]:g}, r {measured_best[2]}, alpha/r {measured_best[3]})\n")
    rows = []
    for m, s in summary.items():
        rows.append([m, s["best_median"], s["best_at_25pct_budget_median"], s["steps_to_2pct_median"],
                     f"{s['seeds_reaching_2pct']}/{n_seeds}", s["steps_vs_grid"], f"{s['trials_median']:g}", f"{s['pruned_median']:g}"])
    print(table(["method", "best eval loss (median)", "best at 25% budget", "steps to within 2%",
                 "seeds within 2%", "steps vs grid", "trials", "pruned"], rows))


def plot_traces(runs: list[dict[str, Any]], target: float, budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = list(range(0, budget + 1, max(1, budget // 200)))
    for m in METHODS:
        mine = [r for r in runs if r["method"] == m]
        ys = [median(best_at(r["trace"], x) for r in mine) for x in xs]
        ax.step(xs, [y if y is not None else float("nan") for y in ys], where="post", label=m)
    ax.axhline(target, color="grey", linestyle=":", label="within 2% of best found")
    ax.set_xlabel("optimizer steps used (all trials of the sweep)")
    ax.set_ylabel("best eval loss so far (median over seeds)")
    ax.set_title("proxy task, tiny model: replay over measured curves")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
