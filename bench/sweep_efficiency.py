"""Does searching pay? REAL ftsweep sweeps (warm workers, the shipped sweeper) on the proxy task, per method:
grid, random, TPE, TPE + median, TPE + hyperband, TPE + successive halving, GP, and the shipped default
(the sampler and pruner of ``sweep/quickstart.yaml``, read from that file, so the figure follows what ships);
GP + median, GP + hyperband, and the default and GP seeded by the learning-rate range test (``default+lr_find``,
``gp+lr_find``: ``hydra.sweeper.lr_find=true``) on request (``--methods``; ``--quick`` runs every method).

    python bench/sweep_efficiency.py                                # full: 8 methods x 5 seeds x 40 trials
    python bench/sweep_efficiency.py --seeds 0 1 --methods grid default tpe+hyperband   # a part of it
    python bench/sweep_efficiency.py --resume                      # add what bench/results/... lacks
    python bench/sweep_efficiency.py --resume --methods gp+median gp+hyperband   # candidates, measured apart
    python bench/sweep_efficiency.py --resume --methods default+lr_find gp+lr_find   # lr-find-seeded candidates
    python bench/sweep_efficiency.py --quick                       # every method end to end, tiny, 1 worker (tests)
    python bench/sweep_efficiency.py --objective exact_match       # rank on exact match (maximize), not eval loss

Space (chosen before any result was seen): lr log-uniform 1e-5..1e-1, LoRA r {4, 8, 16, 32}, alpha/r {1, 2}
(``lora.alpha`` derived). The grid's learning rates are fixed beforehand at the centres of five equal bins
of log10(lr) over the range (2.5e-5, 1.6e-4, 1e-3, 6.3e-3, 4e-2: one point per 0.8 decade), so the grid has
the density of the common "one lr per decade" grid and none of its points is the continuous optimum.
Grid = 5 x 4 x 2 = 40 trials; every other method gets the same 40 trials (pruned ones cost less).
Trials: model=tiny data=proxy_tasks, 60 optimizer steps, eval every 10 (the quickstart's settings; exact
match: 400 steps, eval every 50, as sweep=quickstart_em), 2 warm workers, logger none, no report; every method's
evaluations before the last step score the quickstart's ``trainer.intermediate_eval_rows`` (read from
sweep/quickstart.yaml; ``--intermediate-eval-rows`` to change, 0 = every row), the last one every row.

Measured per sweep (from the study's own storage after the real run): for every trial its finish time since
the sweep command started (imports, start-up and hand-overs included: what a user waits for) and the
optimizer steps it ran (a pruned trial: its last reported step). Reported per method, median and range over
seeds: wall-clock seconds and optimizer steps until a finished trial is within 2% of the best value any run
of any method found, the best value at a fixed wall budget (40% of grid's median sweep time, the goal), and
the whole sweep's time. A seed that never gets within 2% counts as its whole sweep (a lower bound, flagged).
Results are written after every sweep, so ``--resume`` continues an interrupted run.

``--objective exact_match`` runs the same sweeps with ``objective=exact_match`` (greedy answers on the
validation rows scored at every evaluation, the pruners see it; its direction, maximize, is read from
``conf/objective/exact_match.yaml``) and ranks on it; results go to ``results/sweep_efficiency_exact_match.json``.
Its trials run 400 steps (eval every 50) as in ``sweep=quickstart_em`` (``--steps`` to change), so a full run
takes about six times as long as the eval-loss one.
"Within 2% of the best" follows the direction: for minimize a value <= best * 1.02, for maximize a value
>= best * 0.98 (2% of the best value, relative: with a best exact match of 0.80 the target is 0.784).
"""

from __future__ import annotations

import argparse
import datetime as dt
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
    ROOT,
    bench_env,
    default_cache,
    ensure_tiny_model,
    eval_interval,
    ftsweep_cmd,
    machine,
    median,
    run_proc,
    scratch,
    table,
    versions,
)

OUT = RESULTS / "sweep_efficiency.json"
OBJECTIVES = ("eval_loss", "exact_match")  # conf/objective/<name>.yaml: the metric and its direction
METHODS = ("grid", "random", "tpe", "tpe+median", "tpe+hyperband", "tpe+sh", "gp", "gp+median", "gp+hyperband",
           "default", "default+lr_find", "gp+lr_find")
# Run only when asked (--methods): candidates for the default, measured apart so the full run keeps to 45 min.
# "<method>+lr_find": the method with hydra.sweeper.lr_find=true (the range test first, its suggestion as trial 0, the
# lr range narrowed around it); its wall-clock includes the test.
EXTRA_METHODS = ("gp+median", "gp+hyperband", "default+lr_find", "gp+lr_find")
GRID_LRS = [float(f"{10 ** (-5 + 0.4 + 0.8 * i):.2g}") for i in range(5)]  # bin centres, fixed beforehand
TARGET_RATIO = 0.40  # the goal: the default within 2% of the best in <= 40% of grid's wall-clock
WITHIN = 0.02  # "within 2% of the best"


def out_path(objective: str) -> Path:
    """Results file of an objective (eval loss keeps the historical name the summary table reads)."""
    return OUT if objective == "eval_loss" else RESULTS / f"sweep_efficiency_{objective}.json"


def objective_direction(objective: str) -> str:
    """minimize | maximize, as the shipped objective option gives it (composed: its direction is an interpolation
    over the metric's name and the stage)."""
    from ftsweep.config.compose import compose

    return str(compose([f"objective={objective}"], check=False).objective.direction)


def better(a: float, b: float, direction: str) -> bool:
    """a is strictly better than b."""
    return a > b if direction == "maximize" else a < b


def target_of(best: float, direction: str) -> float:
    """The value a trial must reach to be "within 2% of the best" (minimize: <= this; maximize: >= this)."""
    return best * (1 - WITHIN) if direction == "maximize" else best * (1 + WITHIN)


def reaches(value: float, target: float, direction: str) -> bool:
    return value >= target if direction == "maximize" else value <= target


def method_settings(method: str, *, n_startup: int, eval_every: int, max_steps: int,
                    objective: str = "eval_loss") -> dict[str, Any]:
    """``hydra.sweeper.sampler`` / ``pruner`` of one method (the default: what ``sweep=quickstart
    objective=<objective>`` composes to, so sweep/by_objective/quickstart_exact_match.yaml's pruner for exact match)."""
    if method.endswith("+lr_find"):  # the same sampler and pruner; the sweep file switches lr_find on
        return method_settings(method.removesuffix("+lr_find"), n_startup=n_startup, eval_every=eval_every,
                               max_steps=max_steps, objective=objective)
    if method == "default":
        from omegaconf import OmegaConf

        from ftsweep.config.compose import compose

        cfg = compose(["sweep=quickstart", f"objective={objective}"], check=False, hydra=True)
        shipped = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)
        sampler = {k: v for k, v in shipped["sampler"].items() if k != "seed" and v is not None}
        pruner = {k: v for k, v in (shipped.get("pruner") or {"name": "none"}).items() if v is not None}
        return {"sampler": sampler, "pruner": pruner}
    name, _, pruned_by = method.partition("+")
    sampler = {"grid": {"name": "grid"}, "random": {"name": "random"}}.get(
        name, {"name": name, "n_startup_trials": n_startup})
    pruner: dict[str, Any] = {"name": "none"}
    if pruned_by == "median":
        pruner = {"name": "median", "n_startup_trials": n_startup, "n_warmup_steps": 2 * eval_every}
    elif pruned_by == "hyperband":
        pruner = {"name": "hyperband", "min_resource": eval_every, "max_resource": max_steps, "reduction_factor": 3}
    elif pruned_by == "sh":
        pruner = {"name": "successive_halving", "min_resource": eval_every, "reduction_factor": 3}
    return {"sampler": sampler, "pruner": pruner}


def shipped_intermediate_eval_rows() -> int | None:
    """``trainer.intermediate_eval_rows`` of ``sweep=quickstart``, as it ships."""
    from ftsweep.config.compose import compose

    return compose(["sweep=quickstart"], check=False).trainer.intermediate_eval_rows


def spec_settings(method: str, spec: dict[str, Any]) -> dict[str, Any]:
    return method_settings(method, n_startup=spec["n_startup"], eval_every=spec["eval_every"],
                           max_steps=spec["max_steps"], objective=spec.get("objective", "eval_loss"))


def sweep_yaml(method: str, seed: int, spec: dict[str, Any]) -> str:
    """A sweep file (``sweep=<name>``) for one method and seed."""
    s = spec_settings(method, spec)
    lr = ("choice(" + ", ".join(repr(x) for x in spec["grid_lrs"]) + ")" if method == "grid"
          else f"tag(log, interval({spec['lr'][0]!r}, {spec['lr'][1]!r}))")
    doc = {
        "defaults": [{"override /hydra/sweeper": "ftsweep_optuna"}, {"override /model": "tiny"},
                     {"override /data": "proxy_tasks"}, {"override /logger": "none"},
                     # eval loss: the config's own objective, as in the runs measured before --objective existed
                     *([{"override /objective": spec["objective"]}] if spec.get("objective", "eval_loss") != "eval_loss"
                       else [])],
        "trainer": {"max_steps": spec["max_steps"], "eval_steps": spec["eval_every"],
                    "logging_steps": spec["eval_every"], "save_steps": 0,
                    "intermediate_eval_rows": spec.get("intermediate_eval_rows")},
        "hydra": {"mode": "MULTIRUN", "sweeper": {
            "study_name": f"{method.replace('+', '_')}-seed{seed}", "n_trials": spec["n_trials"],
            "n_workers": spec["workers"], "warm_workers": True, "report": False, "progress": "plain",
            "params": {"optimizer.lr": lr, "lora.r": "choice(" + ", ".join(map(str, spec["rs"])) + ")"},
            "variables": {"alpha_ratio": "choice(" + ", ".join(map(str, spec["ratios"])) + ")"},
            "derived": {"lora.alpha": "{lora.r} * {alpha_ratio}"},
            "sampler": {**s["sampler"], "seed": seed}, "pruner": s["pruner"],
            **({"lr_find": True} if method.endswith("+lr_find") else {})}},
    }
    if spec.get("objective_max_samples"):  # --quick: fewer rows scored at each evaluation
        doc["objective"] = {"max_samples": spec["objective_max_samples"]}
    import yaml

    return "# @package _global_\n" + yaml.safe_dump(doc, sort_keys=False)


def run_sweep(method: str, seed: int, spec: dict[str, Any], workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    """One real sweep (``ftsweep train sweep=...``); trial timings and steps from its study.db."""
    name = f"bench_{method.replace('+', '_')}_s{seed}"
    (workdir / "sweep").mkdir(parents=True, exist_ok=True)
    (workdir / "conf").mkdir(exist_ok=True)
    (workdir / "sweep" / f"{name}.yaml").write_text(sweep_yaml(method, seed, spec))
    sweep_dir = workdir / "sweeps" / name
    started = dt.datetime.now()
    proc = run_proc(ftsweep_cmd("train", "--config-dir", str(workdir / "conf"), f"sweep={name}",
                                f"hydra.sweep.dir={sweep_dir}"), env=env, timeout=3600)
    trials = read_trials(sweep_dir / "study.db", started, spec["max_steps"])
    return {"method": method, "seed": seed, "sweep_wall_s": proc.wall_s, "sweep_cpu_s": proc.cpu_s,
            "settings": spec_settings(method, spec),
            "trials": trials}


def read_trials(db: Path, started: dt.datetime, max_steps: int) -> list[dict[str, Any]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{db}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    out = []
    for t in study.get_trials(deepcopy=False):
        end = t.datetime_complete
        steps = max_steps if t.state.name == "COMPLETE" else max(t.intermediate_values, default=0)
        out.append({"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                    "steps": steps, "finished_s": (end - started).total_seconds() if end else None})
    return sorted(out, key=lambda x: (x["finished_s"] is None, x["finished_s"] or 0))


# ------------------------------------------------------------------------------------------ analysis
def trace(run: dict[str, Any], direction: str = "minimize") -> list[tuple[float, int, float | None]]:
    """(seconds since start, optimizer steps of all finished trials, best value so far) after each trial."""
    out, steps, best = [], 0, None
    for t in run["trials"]:
        if t["finished_s"] is None:
            continue
        steps += t["steps"]
        if t["state"] == "COMPLETE" and t["value"] is not None and (best is None or better(t["value"], best, direction)):
            best = t["value"]
        out.append((t["finished_s"], steps, best))
    return out


def reach(run: dict[str, Any], target: float, direction: str = "minimize") -> tuple[float, int] | None:
    """(wall s, steps) when a finished trial first is within ``target``; None if never."""
    return next(((s, n) for s, n, b in trace(run, direction) if b is not None and reaches(b, target, direction)), None)


def best_at(run: dict[str, Any], seconds: float, direction: str = "minimize") -> float | None:
    vals = [b for s, _, b in trace(run, direction) if s <= seconds and b is not None]
    return (max if direction == "maximize" else min)(vals) if vals else None


def spread(xs: list[float | None]) -> list[float] | None:
    vals = [x for x in xs if x is not None]
    return [min(vals), max(vals)] if vals else None


def summarize(runs: list[dict[str, Any]], direction: str = "minimize") -> dict[str, Any]:
    """Per method: wall / steps to within 2% of the best found by any run, best at the fixed budget."""
    values = [t["value"] for r in runs for t in r["trials"] if t["state"] == "COMPLETE" and t["value"] is not None]
    if not values:
        return {}
    best_any = max(values) if direction == "maximize" else min(values)
    target = target_of(best_any, direction)
    methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
    grid_sweep = median(r["sweep_wall_s"] for r in runs if r["method"] == "grid")
    budget = TARGET_RATIO * grid_sweep if grid_sweep else None
    out: dict[str, Any] = {"_": {"best_any": best_any, "target": target, "budget_s": budget, "direction": direction}}
    for m in methods:
        mine = [r for r in runs if r["method"] == m]
        hit = [reach(r, target, direction) for r in mine]
        walls = [h[0] if h else r["sweep_wall_s"] for h, r in zip(hit, mine)]
        steps = [h[1] if h else trace(r)[-1][1] if trace(r) else None for h, r in zip(hit, mine)]
        out[m] = {
            "seeds": [r["seed"] for r in mine],
            "seeds_reaching_2pct": sum(h is not None for h in hit),
            "wall_to_2pct_per_seed": walls, "wall_to_2pct_median": median(walls), "wall_to_2pct_range": spread(walls),
            "steps_to_2pct_per_seed": steps, "steps_to_2pct_median": median(steps), "steps_to_2pct_range": spread(steps),
            "best_median": median(best_at(r, math.inf, direction) for r in mine),
            "best_at_budget_median": median(best_at(r, budget, direction) for r in mine) if budget else None,
            "sweep_wall_median": median(r["sweep_wall_s"] for r in mine),
            "trials_median": median(len(r["trials"]) for r in mine),
            "pruned_median": median(sum(t["state"] == "PRUNED" for t in r["trials"]) for r in mine),
        }
    grid = out.get("grid", {}).get("wall_to_2pct_median")
    grid_steps = out.get("grid", {}).get("steps_to_2pct_median")
    for m in methods:
        out[m]["wall_vs_grid"] = out[m]["wall_to_2pct_median"] / grid if grid else None
        out[m]["steps_vs_grid"] = out[m]["steps_to_2pct_median"] / grid_steps if grid_steps else None
    return out


def print_report(summary: dict[str, Any], n_seeds: int, objective: str = "eval_loss") -> None:
    head = summary["_"]
    budget = f"{head['budget_s']:.0f} s" if head["budget_s"] else "-"
    sign = ">=" if head.get("direction") == "maximize" else "<="
    print(f"\nREAL SWEEPS ({objective}, {head.get('direction', 'minimize')}): best value any run found "
          f"{head['best_any']:.4f}; target (within 2%) {sign} {head['target']:.4f}; "
          f"fixed budget {budget} (40% of grid's median sweep)\n")
    rows = []
    for m, s in summary.items():
        if m == "_":
            continue
        rows.append([m, f"{s['seeds_reaching_2pct']}/{len(s['seeds'])}", s["wall_to_2pct_median"],
                     "–".join(f"{x:.0f}" for x in s["wall_to_2pct_range"] or []), s["wall_vs_grid"],
                     s["steps_to_2pct_median"], s["steps_vs_grid"], s["best_at_budget_median"], s["best_median"],
                     s["sweep_wall_median"], f"{s['trials_median']:g}", f"{s['pruned_median']:g}"])
    print(table(["method", "seeds within 2%", "wall s to 2% (median)", "range", "wall vs grid", "steps to 2%",
                 "steps vs grid", "best at budget", "best", "sweep wall s", "trials", "pruned"], rows))


def plot(runs: list[dict[str, Any]], summary: dict[str, Any], path: Path, objective: str = "eval_loss") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    end = max(r["sweep_wall_s"] for r in runs)
    xs = [end * i / 200 for i in range(201)]
    for m in METHODS:
        mine = [r for r in runs if r["method"] == m]
        if mine:
            ys = [median(best_at(r, x, summary["_"].get("direction", "minimize")) for r in mine) for x in xs]
            ax.step(xs, [y if y is not None else float("nan") for y in ys], where="post", label=m)
    ax.axhline(summary["_"]["target"], color="grey", linestyle=":", label="within 2% of best found")
    ax.set_xlabel("wall-clock seconds since the sweep command started")
    ax.set_ylabel(f"best {objective.replace('_', ' ')} so far (median over seeds)")
    ax.set_title("proxy task, tiny model, real ftsweep sweeps (2 warm workers)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="every method end to end: 4 trials of 12 steps, 1 seed, 1 worker (a smoke test: half the CPU)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(5)))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=None,
                   help=f"default: all but {', '.join(EXTRA_METHODS)} (--quick: all)")
    p.add_argument("--workers", type=int, default=None, help="trials at once (warm workers; default 2, --quick 1)")
    p.add_argument("--keep", action="store_true", help="keep the working folder of sweeps and runs (removed at exit)")
    p.add_argument("--resume", action="store_true", help="keep the runs already in --out, run only missing ones")
    p.add_argument("--out", type=Path, default=None, help=f"results JSON (default {OUT}; "
                   "results/sweep_efficiency_<objective>.json for another objective)")
    p.add_argument("--objective", choices=OBJECTIVES, default="eval_loss",
                   help="what the sweeps optimise and the methods are ranked on (exact_match: maximize)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimizer steps per trial, evaluated 6-8 times (default: 60 as sweep=quickstart; 400 with "
                        "--objective exact_match, as sweep=quickstart_em, since the tiny model answers almost nothing "
                        "exactly after 60; 12 with --quick)")
    p.add_argument("--intermediate-eval-rows", type=int, default=None,
                   help="rows scored by the evaluations before the last step, in every method (default: "
                        "sweep/quickstart.yaml's trainer.intermediate_eval_rows; 0 = every row)")
    args = p.parse_args(argv)
    if args.methods is None:
        args.methods = list(METHODS) if args.quick else [m for m in METHODS if m not in EXTRA_METHODS]
    if args.workers is None:
        args.workers = 1 if args.quick else 2
    if args.quick:
        spec = {"lr": [1e-4, 1e-1], "rs": [4, 8], "ratios": [1], "grid_lrs": [1e-3, 3e-2], "n_trials": 4,
                "max_steps": args.steps or 12,  # (lr-find refuses a test of under 11 steps)
                "eval_every": 5, "n_startup": 2, "workers": args.workers}
        if args.objective != "eval_loss":
            spec["objective_max_samples"] = 8
        seeds = args.seeds[:1]
    else:
        steps = args.steps or (60 if args.objective == "eval_loss" else 400)
        spec = {"lr": [1e-5, 1e-1], "rs": [4, 8, 16, 32], "ratios": [1, 2], "grid_lrs": GRID_LRS, "n_trials": 40,
                "max_steps": steps, "eval_every": eval_interval(steps), "n_startup": 10,
                "workers": args.workers}
        seeds = args.seeds
    spec.update(objective=args.objective, direction=objective_direction(args.objective),
                intermediate_eval_rows=(shipped_intermediate_eval_rows() if args.intermediate_eval_rows is None
                                        else args.intermediate_eval_rows or None))
    out = args.out or (Path(tempfile.mkdtemp(prefix="ftsweep-bench-eff-")) / "e.json" if args.quick
                       else out_path(args.objective))
    workdir = scratch("ftsweep-bench-eff-", args.keep)
    env = bench_env(default_cache())
    ensure_tiny_model(env)
    runs: list[dict[str, Any]] = []
    if args.resume and out.is_file():
        before = json.loads(out.read_text())
        if before.get("spec", {}).get("objective", "eval_loss") != args.objective:
            raise SystemExit(f"{out} holds {before['spec'].get('objective', 'eval_loss')} sweeps, not {args.objective}")
        if before.get("spec", {}).get("intermediate_eval_rows") != spec["intermediate_eval_rows"]:
            raise SystemExit(f"{out} holds sweeps with intermediate_eval_rows="
                             f"{before['spec'].get('intermediate_eval_rows')}, not {spec['intermediate_eval_rows']}")
        runs = before.get("runs", [])
    for seed in seeds:  # seed-major: a partial run has every method at the first seeds
        for m in args.methods:
            if any(r["method"] == m and r["seed"] == seed for r in runs):
                continue
            t0 = time.perf_counter()
            runs.append(run_sweep(m, seed, spec, workdir, env))
            print(f"  {m} seed {seed}: {len(runs[-1]['trials'])} trials in {time.perf_counter() - t0:.0f} s", flush=True)
            write(out, spec, runs)
    doc = write(out, spec, runs)
    if doc["summary"]:
        print_report(doc["summary"], len(seeds), args.objective)
        plot(runs, doc["summary"], out.with_suffix(".png"), args.objective)
    return 0


def write(out: Path, spec: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    doc = {"benchmark": "sweep_efficiency", "replay": False, "machine": machine(), "versions": versions(),
           "how": "real ftsweep sweeps (ftsweep train sweep=<generated file>), timings from each study's storage",
           "objective": spec.get("objective", "eval_loss"), "direction": spec.get("direction", "minimize"),
           "spec": spec, "methods": sorted({r["method"] for r in runs}, key=METHODS.index),
           "seeds": sorted({r["seed"] for r in runs}), "summary": summarize(runs, spec.get("direction", "minimize")),
           "runs": runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return doc


if __name__ == "__main__":
    sys.exit(main())
