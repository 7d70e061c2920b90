"""A stand-in for ``ftsweep train`` in sweeper tests (FTSWEEP_TRIAL_CMD='["python", "tests/fake_trial.py"]').

Behaves like a trial process without torch: reads the overrides, reports an objective curve through
ftsweep.sweeper.trial (so pruning is real), writes metrics.json / failure.json like train.py.
The objective is a smooth function of optimizer.lr (best at lr=1e-3, plus a little per-step decay).
FAKE_DATA_FP (JSON {trial_number: fingerprint}) writes manifest.json with that data_fingerprint.
FAKE_PLAN (JSON {trial_number: mode}) picks a failure mode per trial: raise | bad_data | nan | oom | oom_once |
hang | bad (a curve so bad the pruner must stop it); FAKE_STEP_S slows each step. FAKE_CURVE=1 adds the
eval_history a real trial's metrics.json holds, from which the sweep draws the dashboard's learning_curve.png
(matplotlib in the sweep process: about 1 s of CPU a 4-trial sweep, a sixth of it, so only the dashboard tests ask).
With ``objective=exact_match`` it also writes ``exact_match``, which rises with lr up to 1 at lr=1e-2 (so it
conflicts with eval_loss above lr=1e-3: a multi-objective sweep has a Pareto front of several trials), and the
objective is exact_match, as in a real run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path


def parse(argv: list[str]) -> dict[str, str]:
    out = {}
    for a in argv:
        if "=" in a:
            k, v = a.split("=", 1)
            out[k.lstrip("+")] = v.strip("'")
    return out


def main() -> int:
    t_start = time.time()
    args = parse(sys.argv[1:])
    run_dir = Path(args["hydra.sweep.dir"]) / args["hydra.sweep.subdir"]
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    batch = int(args.get("trainer.per_device_train_batch_size", 8))
    accum = int(args.get("trainer.gradient_accumulation_steps", 1))
    (run_dir / ".hydra" / "config.yaml").write_text(
        f"trainer:\n  per_device_train_batch_size: {batch}\n  gradient_accumulation_steps: {accum}\n")
    (run_dir / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {a}\n" for a in sys.argv[1:] if not a.startswith("hydra.")))
    from ftsweep import rundir

    rundir.mask_hydra_files(run_dir)  # as the real trial entry does once Hydra has written .hydra/
    number = os.environ.get("FTSWEEP_TRIAL_NUMBER", "-1")
    if os.environ.get("FAKE_NOTICE"):  # a one-time step that takes a while (ftsweep.notices)
        from ftsweep.notices import notice

        notice(os.environ["FAKE_NOTICE"])
    mode = json.loads(os.environ.get("FAKE_PLAN") or "{}").get(number, "ok")
    if mode == "oom_once" and batch < 8:
        mode = "ok"
    step_s = float(os.environ.get("FAKE_STEP_S") or 0.0)
    lr = float(args.get("optimizer.lr", 1e-3))
    final = (math.log10(lr) + 3.0) ** 2 + 1.0
    if mode == "bad":
        final = 100.0

    def fail(reason: str, error_type: str) -> int:
        (run_dir / "failure.json").write_text(json.dumps({"status": "failed", "reason": reason, "error_type": error_type}))
        print(reason, file=sys.stderr)
        return 1

    if mode == "raise":
        return fail("ValueError: deliberate failure", "ValueError")
    if mode == "bad_data":  # a bad row, as ftsweep.data refuses it
        return fail("rows.jsonl line 4: field 'output': empty", "DataError")
    if mode in ("oom", "oom_once"):
        return fail("oom: CUDA out of memory. Tried to allocate 2.00 GiB (simulated)", "OutOfMemoryError")
    if mode == "hang":
        time.sleep(3600)

    from ftsweep.sweeper.trial import TrialReporter, trial_context

    ctx = trial_context()
    reporter = TrialReporter(ctx) if ctx else None
    value = None
    evals = []
    for step in (2, 4, 6, 8):
        time.sleep(step_s)
        value = final + 2.0 / step
        evals.append({"step": step, "eval_loss": value})
        if mode == "nan" and step >= 4:
            return fail(f"nan_loss: training loss is nan at step {step}", "FloatingPointError")
        if reporter is not None and reporter.report(value, step):
            metrics = {"status": "pruned", "eval_loss": value, "pruned_at_step": step, "wandb_run_id": None,
                       "trial_number": int(number)}
            (run_dir / "metrics.json").write_text(json.dumps(metrics))
            return 0
    generation = {}
    if args.get("objective") == "exact_match":
        generation = {"exact_match": round(min(1.0, max(0.0, (math.log10(lr) + 4.0) / 2.0)), 6)}
    metrics = {"status": "complete", "objective": generation.get("exact_match", value), "eval_loss": value,
               "train_loss": value + 0.1, **generation,
               "wandb_run_id": None, "trial_number": int(number),
               # what the dashboard shows of a real trial (memory estimate vs peak, tokens, learning curve)
               "train_tokens": 4096, "memory_estimate_mib": 1200.0, "peak_memory_mb": 1000.0,
               **({"eval_history": evals} if os.environ.get("FAKE_CURVE") else {}),
               # for placement tests: which GPUs the trial was given, and when it ran
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "t_start": t_start, "t_end": time.time()}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    fp = json.loads(os.environ.get("FAKE_DATA_FP") or "{}").get(number)  # the data fingerprint a real trial records
    if fp:
        (run_dir / "manifest.json").write_text(json.dumps({"data_fingerprint": fp}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
