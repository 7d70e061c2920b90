"""Where does a sweep trial's time go? Runs the quickstart sweep (``ftsweep train -m sweep=quickstart``,
W&B offline) with a phase probe in every trial process and splits each trial's wall-clock into phases:
process start + imports + compose, tokenizer, data, memory preflight, model, LoRA, tracker (W&B init),
trainer init, initial eval, first optimizer step, training loop, in-loop evals, final eval, save, tracker
finish + exit; then the share of a trial that is not training.

    python bench/trial_overhead.py                 # the quickstart sweep as shipped (8 trials, 2 at a time)
    python bench/trial_overhead.py --quick         # 2 trials of 10 steps, 1 at a time (smoke test)
    python bench/trial_overhead.py -- data=proxy_tasks   # extra overrides after --

The probe (bench/_phase_probe/sitecustomize.py, put on PYTHONPATH) wraps a few ftsweep / transformers
functions after they are imported and appends timestamps to one file per process; ftsweep is not changed.
Figures are medians over the sweep's trials (each trial is one repetition); pruned trials are included
(their loop is shorter). "Training" = ``Trainer.train()`` wall after the first optimizer step, minus the
evaluations inside it (the first step carries the trainer's one-time set-up and is counted apart).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    ROOT,
    bench_env,
    default_cache,
    ensure_tiny_model,
    ftsweep_cmd,
    median,
    run_proc,
    table,
    write_result,
)

PHASES = ("process + imports + compose", "tokenizer", "data", "memory preflight", "model", "lora", "tracker",
          "trainer init", "initial eval", "first step", "training loop", "in-loop evals", "final eval", "save",
          "tracker finish + exit")


def load_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def first(events, name, after: float = 0.0) -> float | None:
    return next((e["t"] for e in events if e["ev"] == name and e["t"] >= after), None)


def last(events, name) -> float | None:
    ts = [e["t"] for e in events if e["ev"] == name]
    return ts[-1] if ts else None


def span(events, phase, after: float = 0.0) -> tuple[float, float] | None:
    a = first(events, phase + ":start", after)
    b = first(events, phase + ":end", a) if a is not None else None
    return (a, b) if a is not None and b is not None else None


def trial_phases(events: list[dict[str, Any]]) -> dict[str, Any]:
    """One trial process's events -> phase durations (seconds; None where the probe saw nothing)."""
    t0 = events[0].get("t0") or events[0]["t"]
    end = last(events, "exit") or events[-1]["t"]
    d: dict[str, float | None] = dict.fromkeys(PHASES)
    tok, data, model, lora = (span(events, p) for p in ("tokenizer", "data", "model", "lora"))
    tracker, tinit, train, save = (span(events, p) for p in ("tracker", "trainer_init", "train", "save"))
    if tok:
        d["process + imports + compose"] = tok[0] - t0
    for name, s in (("tokenizer", tok), ("data", data), ("model", model), ("lora", lora), ("tracker", tracker),
                    ("trainer init", tinit), ("save", save)):
        d[name] = s[1] - s[0] if s else None
    if data and model:
        d["memory preflight"] = model[0] - data[1]
    evals = [(a["t"], b["t"]) for a, b in zip([e for e in events if e["ev"] == "evaluate:start"],
                                              [e for e in events if e["ev"] == "evaluate:end"])]
    if train:
        before = [e for e in evals if e[1] <= train[0]]
        inside = [e for e in evals if train[0] <= e[0] <= train[1]]
        after = [e for e in evals if e[0] >= train[1]]
        d["initial eval"] = sum(b - a for a, b in before)
        d["in-loop evals"] = sum(b - a for a, b in inside)
        d["final eval"] = sum(b - a for a, b in after)
        step1 = first(events, "step_end:end", train[0])
        if step1:
            d["first step"] = step1 - train[0]
            d["training loop"] = train[1] - step1 - d["in-loop evals"]
    last_work = max(x for x in (save[1] if save else None, train[1] if train else None,
                                evals[-1][1] if evals else None, t0) if x is not None)
    d["tracker finish + exit"] = end - last_work
    wall = end - t0
    # The first step carries the trainer's one-time set-up (optimizer, dataloader, first forward): overhead.
    training = d["training loop"]
    return {"phases": d, "wall_s": wall, "training_s": training,
            "not_training_share": 1 - training / wall if training and wall else None,
            "start_to_first_step_s": (first(events, "step_end:end", train[0]) - t0) if train else None,
            "pruned": not save, "missing_probes": [e["target"] for e in events if e["ev"] == "probe_missing"]}


def trial_result(run_dir: Path) -> dict[str, Any]:
    """The trial's status and eval loss from its metrics.json (empty if the layout changed)."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return {}
    m = json.loads(path.read_text())
    return {"status": m.get("status"), "eval_loss": m.get("eval_loss"), "initial_eval_loss": m.get("initial_eval_loss")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("overrides", nargs="*", help="extra sweep overrides (after --)")
    args = p.parse_args(argv)
    cache = default_cache()
    env = bench_env(cache)
    ensure_tiny_model(env)
    with tempfile.TemporaryDirectory(prefix="ftsweep-bench-trials-") as d:
        tmp = Path(d)
        phases_dir = tmp / "phases"
        phases_dir.mkdir()
        sweep_dir = tmp / "sweep"
        # A fresh study in the temp dir (the default sweep dir would resume an earlier study instead).
        overrides = ["sweep=quickstart", f"hydra.sweep.dir={sweep_dir}",
                     *args.overrides]
        if args.quick:
            overrides += ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_workers=1", "trainer.max_steps=10",
                          "trainer.eval_steps=5"]
        probe_env = dict(env)
        probe_env["PYTHONPATH"] = str(ROOT / "bench" / "_phase_probe") + os.pathsep + env["PYTHONPATH"]
        probe_env.update({"FTSWEEP_BENCH_PHASES": str(phases_dir), "WANDB_MODE": "offline", "WANDB_DIR": str(tmp)})
        # The sweeper splits the cores between parallel trials itself (OMP_NUM_THREADS per trial) only when
        # the variable is unset: leave that decision to it, as a user's sweep would.
        probe_env.pop("OMP_NUM_THREADS", None)
        proc = run_proc(ftsweep_cmd("train", "-m", *overrides), env=probe_env, timeout=1800)
        trials = []
        for f in sorted(phases_dir.glob("*.jsonl")):
            ev = load_events(f)
            if ev and ev[0].get("trial") is not None and any(e["ev"] == "train:start" for e in ev):
                n = int(ev[0]["trial"])
                trials.append({"trial": n, "params": json.loads(ev[0].get("params") or "null"),
                               **trial_result(sweep_dir / f"trial_{n}"), **trial_phases(ev)})
        trials.sort(key=lambda t: t["trial"])
    if not trials:
        raise SystemExit("no trial was timed: the probe saw no trial process (see bench/_phase_probe)")
    med = {ph: median(t["phases"][ph] for t in trials) for ph in PHASES}
    wall = median(t["wall_s"] for t in trials)
    training = median(t["training_s"] for t in trials)
    share = median(t["not_training_share"] for t in trials)
    rows = [[ph, med[ph], (med[ph] / wall if med[ph] is not None and wall else None)] for ph in PHASES]
    rows.append(["trial wall-clock", wall, 1.0])
    print(f"\nquickstart sweep ({len(trials)} trials, {sum(t['pruned'] for t in trials)} pruned), "
          f"whole sweep {proc.wall_s:.1f} s; medians per trial\n")
    print(table(["phase", "seconds", "share of trial"], rows))
    print(f"\nnot training: {share:.0%} of a trial (median); start -> first optimizer step "
          f"{median(t['start_to_first_step_s'] for t in trials):.2f} s; training {training:.2f} s of {wall:.2f} s")
    print("\ntrials: " + "; ".join(f"#{t['trial']} {t.get('params')} -> {t.get('status')} eval_loss "
                                    f"{t['eval_loss']:.3f}" if t.get("eval_loss") is not None else f"#{t['trial']} -"
                                    for t in trials))
    missing = sorted({m for t in trials for m in t["missing_probes"]})
    if missing:
        print(f"probe targets not found (phases unknown): {', '.join(missing)}")
    write_result("trial_overhead", {
        "command": "ftsweep train -m " + " ".join(o for o in overrides if "sweep_dir" not in o and "sweep.dir" not in o),
        "sweep_wall_s": proc.wall_s, "n_trials": len(trials), "n_pruned": sum(t["pruned"] for t in trials),
        "median_phase_s": med, "median_trial_wall_s": wall, "median_training_s": training,
        "median_not_training_share": share,
        "median_start_to_first_step_s": median(t["start_to_first_step_s"] for t in trials),
        "sum_training_s": sum(t["training_s"] or 0 for t in trials),
        "sweep_training_share": sum(t["training_s"] or 0 for t in trials) / proc.wall_s,
        "missing_probes": missing, "trials": trials,
        "definitions": {"training": "Trainer.train() wall after the first optimizer step minus evaluations inside it",
                        "process + imports + compose": "process start (/proc) -> load_tokenizer called"},
    }, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
