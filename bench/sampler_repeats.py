"""How often does a sampler propose a point it has already run, in a discrete search space? Those trials
are what the sweeper no longer trains (``repeat_of``: the earlier trial's value, see sweep/README.md).
Optuna's samplers alone, as the sweep builds them (TPE: multivariate, constant liar, 4 start-up trials),
on a cheap stand-in objective (smooth in log lr, a little in log2 r); no training, a few seconds.

    python bench/sampler_repeats.py            # 10 seeds x (12 and 24 points) x (10 and 20 trials)
    python bench/sampler_repeats.py --quick    # 2 seeds, one space (tests)
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, table, write_result  # noqa: E402

SPACES = {  # name -> {param: choices}
    "4 r x 3 lr (12 points)": {"lora.r": [4, 8, 16, 32], "optimizer.lr": [1e-4, 3e-4, 1e-3]},
    "4 r x 3 lr x 2 batch (24 points)": {"lora.r": [4, 8, 16, 32], "optimizer.lr": [1e-4, 3e-4, 1e-3],
                                          "trainer.per_device_train_batch_size": [4, 8]},
}


def objective(params: dict[str, Any]) -> float:
    return (math.log10(params["optimizer.lr"]) + 3.3) ** 2 + 0.1 * abs(math.log2(params["lora.r"]) - 4)


def repeats(sampler_name: str, space: dict[str, list[Any]], n_trials: int, seed: int) -> int:
    """Trials (of ``n_trials``, run one at a time) whose point an earlier trial of the study already had."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True, constant_liar=True)
               if sampler_name == "tpe" else optuna.samplers.RandomSampler(seed=seed))
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: objective({k: t.suggest_categorical(k, v) for k, v in space.items()}), n_trials=n_trials)
    points = [tuple(sorted(t.params.items())) for t in study.trials]
    return len(points) - len(set(points))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, default=None, help="seeds per row (default 10; --quick 2)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    seeds = range(args.seeds or (2 if args.quick else 10))
    spaces = dict(list(SPACES.items())[:1]) if args.quick else SPACES
    trial_counts = (10,) if args.quick else (10, 20)
    rows, results = [], []
    for sampler_name in ("tpe", "random"):
        for space_name, space in spaces.items():
            for n in trial_counts:
                per_seed = [repeats(sampler_name, space, n, s) for s in seeds]
                results.append({"sampler": sampler_name, "space": space_name, "n_trials": n, "repeats": per_seed,
                                "median": median(per_seed), "share_median": median(r / n for r in per_seed)})
                rows.append([sampler_name, space_name, n, len(per_seed), median(per_seed), min(per_seed),
                             max(per_seed), median(r / n for r in per_seed)])
    print("\ntrials that repeat an earlier trial's point (the sweeper copies their value instead of training)\n")
    print(table(["sampler", "space", "trials", "seeds", "repeats (median)", "min", "max", "share (median)"], rows))
    write_result("sampler_repeats", {"tpe": "multivariate, constant_liar, n_startup_trials=4",
                                     "objective": "(log10 lr + 3.3)^2 + 0.1 |log2 r - 4|", "results": results},
                 args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
