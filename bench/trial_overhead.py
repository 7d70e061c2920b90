"""Where does a sweep trial's time go, cold and warm? Runs the quickstart sweep (``ftsweep train -m
sweep=quickstart``, W&B offline) with cold trials (``hydra.sweeper.warm_workers=false``: one new process per
trial) and with warm workers (``warm_workers=true``, as shipped: one long-lived process per slot keeps
imports, data and the base model), in pairs, with a phase probe in every process. Splits each trial's
wall-clock into phases: start (process start + imports, or in a warm worker the trial's hand-over) +
compose, tokenizer, data, memory preflight, model, LoRA, tracker (W&B init), trainer init, initial eval,
first optimizer step, training loop, in-loop evals, final eval, save, tracker finish (+ exit); then the
share of a trial that is not training, and the whole sweep's wall-clock, cold vs warm.

    python bench/trial_overhead.py                 # 3 repetitions: a probed and a plain pair of quickstart sweeps
    python bench/trial_overhead.py --quick         # 1 probed pair of 2 trials of 4 steps, 1 at a time (smoke test)
    python bench/trial_overhead.py -- data=alpaca_en_demo   # extra overrides after --

The probe (bench/_phase_probe/sitecustomize.py, put on PYTHONPATH) wraps a few ftsweep / transformers
functions after they are imported and appends timestamps to one file per process; ftsweep is not changed.
A warm worker's file holds several trials (split at each trial's hand-over); its first trial starts at
the process start, like a cold trial. Figures are medians over trials (pruned trials included: their loop
is shorter); "warm" rows are the trials that reused a worker, "first in worker" the ones that started it.
"Training" = ``Trainer.train()`` wall after the first optimizer step, minus the evaluations inside it (the
first step carries the trainer's one-time set-up and is counted apart). Sweep ratios are medians of the
paired ratios (cold / warm of the same repetition).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

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

PHASES = ("start + compose", "tokenizer", "data", "memory preflight", "model", "lora", "tracker",
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
    """One trial's events -> phase durations (seconds; None where the probe saw nothing). In a warm worker
    the tokenizer / data / model phases are the warm components' calls (a lookup when kept)."""
    t0 = events[0].get("t0") or events[0]["t"]
    end = last(events, "exit") or events[-1]["t"]
    d: dict[str, float | None] = dict.fromkeys(PHASES)
    tok, data = (span(events, "warm_" + p) or span(events, p) for p in ("tokenizer", "data"))
    model, lora, warm_model = (span(events, p) for p in ("model", "lora", "warm_model"))
    if model is None and warm_model and lora:  # kept base model: the time before its fresh adapter
        model = (warm_model[0], lora[0])
    tracker, tinit, train, save = (span(events, p) for p in ("tracker", "trainer_init", "train", "save"))
    if tok:
        d["start + compose"] = tok[0] - t0
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


def trial_segments(events: list[dict[str, Any]]) -> list[tuple[int, bool, list[dict[str, Any]]]]:
    """One process's events -> (trial number, reused worker, events) per trial it ran. A cold trial
    process is one trial; a warm worker runs one trial per ``warm_trial`` span, the first from the process
    start (imports included), the others from their hand-over."""
    marks = [i for i, e in enumerate(events) if e["ev"] == "warm_trial:start"]
    if not marks:
        if events and events[0].get("trial") is not None and any(e["ev"] == "train:start" for e in events):
            return [(int(events[0]["trial"]), False, events)]
        return []
    out = []
    for k, i in enumerate(marks):
        j = marks[k + 1] if k + 1 < len(marks) else len(events)
        seg = events[i:j]
        t0 = (events[0].get("t0") or events[0]["t"]) if k == 0 else events[i]["t"]
        end = next((e["t"] for e in seg if e["ev"] == "warm_trial:end"), seg[-1]["t"])
        body = [{"ev": "trial_start", "t": t0, "t0": t0}, *(e for e in seg if e["t"] <= end), {"ev": "exit", "t": end}]
        if any(e["ev"] == "train:start" for e in body):
            out.append((int(events[i]["trial"]), k > 0, body))
    return out


def trial_result(run_dir: Path) -> dict[str, Any]:
    """The trial's parameters (its Hydra overrides, sampled values included: ``.hydra/overrides.yaml``),
    status and eval loss (``metrics.json``); None for what is missing."""
    overrides = run_dir / ".hydra" / "overrides.yaml"
    params = sorted(yaml.safe_load(overrides.read_text())) if overrides.is_file() else None
    path = run_dir / "metrics.json"
    m = json.loads(path.read_text()) if path.is_file() else {}
    return {"params": params, "status": m.get("status"), "eval_loss": m.get("eval_loss"),
            "initial_eval_loss": m.get("initial_eval_loss")}


def run_sweep(mode: str, overrides: list[str], env: dict[str, str], tmp: Path, probe: bool = True) -> dict[str, Any]:
    """One quickstart sweep (cold or warm), with the probe (its trials' phases) or without it (the sweep's
    wall-clock alone, as a user runs it)."""
    phases_dir = tmp / "phases"
    phases_dir.mkdir()
    sweep_dir = tmp / "sweep"
    # A fresh study in the temp dir (the default sweep dir would resume an earlier study instead).
    args = ["sweep=quickstart", f"hydra.sweep.dir={sweep_dir}", f"hydra.sweeper.warm_workers={mode == 'warm'}",
            *overrides]
    probe_env = dict(env)
    probe_env.update({"WANDB_MODE": "offline", "WANDB_DIR": str(tmp)})
    if probe:
        probe_env["PYTHONPATH"] = str(ROOT / "bench" / "_phase_probe") + os.pathsep + env["PYTHONPATH"]
        probe_env["FTSWEEP_BENCH_PHASES"] = str(phases_dir)
    # The sweeper splits the cores between its trials itself (OMP_NUM_THREADS per trial, any worker count)
    # only when the variable is unset: leave that decision to it, as a user's sweep would.
    probe_env.pop("OMP_NUM_THREADS", None)
    proc = run_proc(ftsweep_cmd("train", "-m", *args), env=probe_env, timeout=1800)
    trials = []
    for f in sorted(phases_dir.glob("*.jsonl")):
        for n, reused, ev in trial_segments(load_events(f)):
            trials.append({"trial": n, "reused_worker": reused,
                           **trial_result(sweep_dir / f"trial_{n}"), **trial_phases(ev)})
    trials.sort(key=lambda t: t["trial"])
    return {"mode": mode, "probe": probe, "sweep_wall_s": proc.wall_s, "n_trials": len(trials),
            "n_pruned": sum(t["pruned"] for t in trials), "trials": trials,
            "command": "ftsweep train -m " + " ".join(a for a in args if "sweep.dir" not in a)}


def summarize(trials: list[dict[str, Any]]) -> dict[str, Any]:
    if not trials:
        return {"n": 0}
    return {"n": len(trials), "median_phase_s": {ph: median(t["phases"][ph] for t in trials) for ph in PHASES},
            "median_trial_wall_s": median(t["wall_s"] for t in trials),
            "median_training_s": median(t["training_s"] for t in trials),
            "median_not_training_share": median(t["not_training_share"] for t in trials),
            "median_start_to_first_step_s": median(t["start_to_first_step_s"] for t in trials)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=None, help="pairs of sweeps (default 3; --quick: 1)")
    p.add_argument("--out", default=None)
    p.add_argument("overrides", nargs="*", help="extra sweep overrides (after --)")
    args = p.parse_args(argv)
    reps = args.reps or (1 if args.quick else 3)
    cache = default_cache()
    env = bench_env(cache)
    ensure_tiny_model(env)
    overrides = list(args.overrides)
    if args.quick:
        # the smallest sweep that still has a cold trial, a worker's first and a reused worker's trial
        overrides += ["hydra.sweeper.n_trials=2", "hydra.sweeper.n_workers=1", "trainer.max_steps=4",
                      "trainer.eval_steps=2", "data.max_rows=200"]
    sweeps: list[dict[str, Any]] = []
    # Each repetition: a cold and a warm sweep with the probe (phases), then a pair without it (the sweep's
    # wall-clock as a user sees it; the probe's import hook and file appends cost both modes a little).
    for rep in range(reps):
        for probe in (True,) if args.quick else (True, False):
            for mode in ("cold", "warm") if rep % 2 == 0 else ("warm", "cold"):  # alternate the order
                with tempfile.TemporaryDirectory(prefix=f"ftsweep-bench-{mode}-") as d:
                    sweeps.append({"rep": rep, **run_sweep(mode, overrides, env, Path(d), probe)})
                    print(f"rep {rep} {mode}{'' if probe else ' (no probe)'}: sweep {sweeps[-1]['sweep_wall_s']:.1f} s, "
                          f"{sweeps[-1]['n_trials']} trials timed", flush=True)
    probed = [s for s in sweeps if s["probe"]]
    by = {m: [s for s in probed if s["mode"] == m] for m in ("cold", "warm")}
    # --quick times the probed pair only
    plain = {m: [s for s in sweeps if not s["probe"] and s["mode"] == m] or by[m] for m in ("cold", "warm")}
    if not all(s["trials"] for s in probed):
        raise SystemExit("a sweep had no timed trial: the probe saw no trial process (see bench/_phase_probe)")
    groups = {"cold": [t for s in by["cold"] for t in s["trials"]],
              "warm: first in worker": [t for s in by["warm"] for t in s["trials"] if not t["reused_worker"]],
              "warm: reused worker": [t for s in by["warm"] for t in s["trials"] if t["reused_worker"]]}
    summary = {name: summarize(ts) for name, ts in groups.items()}
    ratios = [c["sweep_wall_s"] / w["sweep_wall_s"] for c, w in zip(plain["cold"], plain["warm"])]
    sweep = {m: median(s["sweep_wall_s"] for s in plain[m]) for m in plain}
    probed_ratio = median(c["sweep_wall_s"] / w["sweep_wall_s"] for c, w in zip(by["cold"], by["warm"]))
    same, n_matched = _same_results(sweeps)

    def col(name: str, key: str, ph: str | None = None) -> float | None:
        s = summary[name]
        return (s["median_phase_s"][ph] if ph else s[key]) if s["n"] else None

    names = list(groups)
    rows = [[ph, *(col(n, "", ph) for n in names)] for ph in PHASES]
    rows.append(["trial wall-clock", *(col(n, "median_trial_wall_s") for n in names)])
    rows.append(["start -> first optimizer step", *(col(n, "median_start_to_first_step_s") for n in names)])
    rows.append(["not training (share of trial)", *(col(n, "median_not_training_share") for n in names)])
    print(f"\nquickstart sweep, {reps} pair(s); medians per trial (seconds)\n")
    print(table(["phase", *(f"{n} ({summary[n]['n']})" for n in names)], rows))
    print(f"\nwhole sweep (no probe): cold {sweep['cold']:.1f} s, warm {sweep['warm']:.1f} s: warm is "
          f"**{median(ratios):.2f}x** faster (median of paired ratios {', '.join(f'{r:.2f}' for r in ratios)}; "
          f"with the probe {probed_ratio:.2f}x); "
          f"complete trials with the same parameters cold and warm ({n_matched}) gave identical eval losses: {'yes' if same else 'NO'}")
    missing = sorted({m for ts in groups.values() for t in ts for m in t["missing_probes"]})
    if missing:
        print(f"probe targets not found (phases unknown): {', '.join(missing)}")
    write_result("trial_overhead", {
        "command": by["warm"][0]["command"], "reps": reps, "summary": summary,
        "sweep_wall_s": sweep, "sweep_cold_over_warm": median(ratios), "paired_ratios": ratios,
        "sweep_cold_over_warm_with_probe": probed_ratio,
        "results_identical": same, "n_trials_compared": n_matched, "missing_probes": missing, "sweeps": sweeps,
        "definitions": {"training": "Trainer.train() wall after the first optimizer step minus evaluations inside it",
                        "start + compose": "cold trial / first trial of a worker: process start (/proc) -> load_tokenizer "
                                           "called; reused worker: the trial's hand-over -> tokenizer asked for"},
    }, args.out)
    return 0


def _same_results(sweeps: list[dict[str, Any]]) -> tuple[bool, int]:
    """Do complete trials with the same parameters give the same eval loss cold and warm? (Two trials run at
    once, so which trials have finished when TPE asks or the pruner decides depends on timing: the later
    parameters and the pruning may differ, so only complete trials with equal parameters are compared.)
    Returns (all equal, number of warm trials compared)."""
    cold = {json.dumps(t["params"], sort_keys=True): (t.get("status"), t.get("eval_loss"))
            for s in sweeps if s["mode"] == "cold" for t in s["trials"] if t.get("status") == "complete"}
    if any(t["params"] is None for s in sweeps for t in s["trials"]):
        raise SystemExit("a trial folder has no .hydra/overrides.yaml: its parameters are unknown")
    pairs = [(cold[k], (t.get("status"), t.get("eval_loss"))) for s in sweeps if s["mode"] == "warm"
             for t in s["trials"] if t.get("status") == "complete"
             and (k := json.dumps(t["params"], sort_keys=True)) in cold]
    return all(a == b for a, b in pairs), len(pairs)


if __name__ == "__main__":
    sys.exit(main())
