"""Is a short C4 pre-pass a better tiny stand-in? Fine-tune the default run on a random-weight tiny
model and on one given `pretrain_steps` causal-LM steps on the bundled C4 text, at a few learning
rates, and print / write initial and final eval loss and token accuracy.

    .venv/bin/python bench/tiny_standin.py [--steps 0 300] [--lrs 2e-4 1e-3 5e-3] [--out bench/results/tiny_standin.json]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[0, 300], help="model.tiny.pretrain_steps values")
    p.add_argument("--lrs", type=float, nargs="+", default=[2e-4, 1e-3, 5e-3])
    p.add_argument("--out", default="bench/results/tiny_standin.json")
    args = p.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")

    from ftsweep.config.compose import compose
    from ftsweep.train import run

    cache = tempfile.mkdtemp(prefix="ftsweep-bench-standin-")
    atexit.register(shutil.rmtree, cache, True)  # models, data cache and runs: removed at exit
    rows = []
    for steps in args.steps:
        built = time.perf_counter()
        for lr in args.lrs:
            cfg = compose([f"cache_dir={cache}", "logger=none", f"model.tiny.pretrain_steps={steps}", f"optimizer.lr={lr}"])
            with tempfile.TemporaryDirectory() as run_dir:
                m = run(cfg, run_dir)
            rows.append({
                "pretrain_steps": steps, "lr": lr,
                "initial_eval_loss": m["initial_eval_loss"], "eval_loss": m["eval_loss"],
                "eval_mean_token_accuracy": m["eval_mean_token_accuracy"], "train_runtime_s": m["train_runtime"],
                "first_run_wall_s_incl_build": time.perf_counter() - built if lr == args.lrs[0] else None,
            })
            built = time.perf_counter()
    print(f"{'pretrain':>8} {'lr':>8} {'eval0':>7} {'eval':>7} {'drop':>6} {'tok_acc':>7}")
    for r in rows:
        drop = r["initial_eval_loss"] - r["eval_loss"]
        print(f"{r['pretrain_steps']:>8} {r['lr']:>8.0e} {r['initial_eval_loss']:>7.3f} {r['eval_loss']:>7.3f} "
              f"{drop:>6.3f} {r['eval_mean_token_accuracy']:>7.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
