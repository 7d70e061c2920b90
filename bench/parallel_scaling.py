"""Parallel trials: trials per hour with 1 vs 2 trials at once on the same sweep.

    python bench/parallel_scaling.py                          # CPU: quickstart sweep, 8 trials, 1 vs 2 workers
    python bench/parallel_scaling.py --trials 12 --steps 80   # more / longer trials
    python bench/parallel_scaling.py --gpu                    # GPU: 1B Llama shape (random weights), trials_per_gpu 1 vs 2
    python bench/parallel_scaling.py --quick                  # 2 trials of 5 steps (smoke test)

Every trial does the same work: random sampler (the same seed, so both settings train the same trials),
no pruning, warm workers, logger none. Intra-op threads: the sweeper's own choice (it sets them for every
worker count so trials never oversubscribe the cores; ``OMP_NUM_THREADS`` is removed from the environment
here unless ``--threads N`` is given, which a user's explicit setting would also be respected as). Without
``--threads``, on CPU, one worker also runs on one thread (``OMP_NUM_THREADS=1``): the sweeper gives a
lone worker every core, and that run shows what the extra threads buy.
Reported per setting: the whole sweep's wall time, trials per hour over the sweep (start-up included) and
in steady state (from the study's timestamps: the trials finished after every worker's first one, over
the time from that first round to the last finish; each worker's first trial carries its start-up),
and the ratio 2 vs 1. On a GPU (``--gpu``) the two settings are ``trials_per_gpu`` 1 and 2 on one GPU
(``n_workers`` = trials at once), on ``model=llama3_2_1b`` with random weights (bench/gpu_qlora.py's builder).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    bench_env,
    default_cache,
    ensure_tiny_model,
    ftsweep_cmd,
    run_proc,
    scratch,
    table,
    write_result,
)


def sweep(workers: int, args: argparse.Namespace, workdir: Path, env: dict[str, str], extra: list[str],
          label: str = "") -> dict[str, Any]:
    import optuna

    sweep_dir = workdir / f"w{workers}{label}"
    per_gpu = [f"hydra.sweeper.trials_per_gpu={workers}"] if args.gpu else ["hydra.sweeper.gpus=null"]
    cmd = ftsweep_cmd("train", "sweep=quickstart", f"hydra.sweep.dir={sweep_dir}", "logger=none",
                      f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.n_workers={workers}",
                      "hydra.sweeper.sampler.name=random", "hydra.sweeper.sampler.seed=0",
                      "hydra.sweeper.pruner.name=none", "hydra.sweeper.report=false", "hydra.sweeper.progress=plain",
                      f"trainer.max_steps={args.steps}", f"trainer.eval_steps={max(1, args.steps // 2)}",
                      *per_gpu, *extra)
    started = dt.datetime.now()
    proc = run_proc(cmd, env=env, timeout=3600)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    trials = study.get_trials(deepcopy=False)
    ends = sorted((t.datetime_complete - started).total_seconds() for t in trials if t.datetime_complete)
    complete = sum(t.state.name == "COMPLETE" for t in trials)
    steady = steady_rate(ends, workers)
    return {"workers": workers, "omp_num_threads": env.get("OMP_NUM_THREADS"), "sweep_wall_s": proc.wall_s,
            "sweep_cpu_s": proc.cpu_s, "n_trials": len(trials), "complete": complete, "finish_s": ends,
            "trials_per_hour": len(ends) / proc.wall_s * 3600, "steady_trials_per_hour": steady}


def steady_rate(ends: list[float], workers: int) -> float | None:
    """Trials per hour once every worker has finished its first trial (its start-up): the finishes after
    the first ``workers`` ones over the time since the last of those. Counting from the very first finish
    instead would count the partner's first trial too (finished moments later), overstating 2 workers."""
    if len(ends) <= workers or ends[-1] <= ends[workers - 1]:
        return None
    return (len(ends) - workers) / (ends[-1] - ends[workers - 1]) * 3600


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 trials of 5 steps (smoke test)")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--gpu", action="store_true", help="1B Llama shape (random weights) on one GPU, trials_per_gpu 1 vs 2")
    p.add_argument("--threads", type=int, default=None, help="set OMP_NUM_THREADS (default: the sweeper decides)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the working folder of sweeps and runs (removed at exit)")
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.steps = 2, 5
    env = bench_env(default_cache())
    if args.threads is None:
        env.pop("OMP_NUM_THREADS", None)  # bench_env's default of 1 would hide what the sweeper does
    else:
        env["OMP_NUM_THREADS"] = str(args.threads)
    workdir = scratch("ftsweep-bench-par-", args.keep)
    extra: list[str] = []
    if args.gpu:
        from gpu_qlora import build_checkpoint

        ckpt = build_checkpoint("1b", default_cache())
        extra = ["model=llama3_2_1b", f"model.name_or_path={ckpt}", "data=alpaca_demo", "trainer.precision=bf16"]
    else:
        ensure_tiny_model(env)
    one = sweep(1, args, workdir, env, extra)
    # On CPU the sweeper gives a lone worker every core; the same worker on one thread says what those
    # extra threads bought (on the tiny model: within the noise, at 1.5-1.7x the CPU) and is the baseline
    # that 2 workers of one thread each double at best.
    one_thread = (sweep(1, args, workdir, {**env, "OMP_NUM_THREADS": "1"}, extra, "_t1")
                  if not args.gpu and args.threads is None else None)
    two = sweep(2, args, workdir, env, extra)
    runs = [r for r in (one, one_thread, two) if r is not None]
    ratio, steady = ratios(one, two)
    print(table(["trials at once", "OMP_NUM_THREADS", "sweep wall s", "sweep CPU s", "trials/h (sweep)", "trials/h (steady)"],
                [[r["workers"], r["omp_num_threads"] or "sweeper's choice", r["sweep_wall_s"], r["sweep_cpu_s"],
                  r["trials_per_hour"], r["steady_trials_per_hour"]] for r in runs]))
    print(f"2 vs 1: {ratio:.2f}x trials per hour over the sweep" + (f", {steady:.2f}x in steady state" if steady else ""))
    doc = {"gpu": args.gpu, "trials": args.trials, "steps": args.steps, "threads": args.threads, "runs": runs,
           "ratio_2_vs_1": ratio, "steady_ratio_2_vs_1": steady}
    if one_thread is not None:
        r1, s1 = ratios(one_thread, two)
        print(f"2 vs 1 on one thread: {r1:.2f}x over the sweep" + (f", {s1:.2f}x in steady state" if s1 else ""))
        doc.update(ratio_2_vs_1_thread=r1, steady_ratio_2_vs_1_thread=s1)
    write_result("parallel_scaling_gpu" if args.gpu else "parallel_scaling", doc, args.out)
    return 0


def ratios(one: dict[str, Any], two: dict[str, Any]) -> tuple[float, float | None]:
    """Trials per hour of ``two`` over ``one``: over the whole sweep, and in steady state (None if unknown)."""
    steady = (two["steady_trials_per_hour"] / one["steady_trials_per_hour"]
              if one["steady_trials_per_hour"] and two["steady_trials_per_hour"] else None)
    return two["trials_per_hour"] / one["trials_per_hour"], steady


if __name__ == "__main__":
    sys.exit(main())
