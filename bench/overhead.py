"""What does ftsweep cost over a hand-written script? ``ftsweep train`` vs bench/plain_trl.py (plain trl +
peft) on the same tiny model files, the same tokenized rows and masks (``ftsweep inspect --dump``), the same
template, LoRA (r16 q/k/v/o), batch, optimizer, schedule, seed and steps, with no evaluation at all
(``data.val_size=0 objective.metric=train_loss``) so the timed loop is training only. Target <= 1.05x.

    python bench/overhead.py                 # 40 and 100 steps, 3 paired repetitions (order alternates)
    python bench/overhead.py --quick         # 5 steps, 1 repetition (smoke test; not a measurement)

Per tool: whole process (fork to exit), training loop (``trainer.train()`` wall), non-padding tokens/s in
the loop, peak RSS of the whole process (``wait4``), final logged training loss; and the largest
difference between the two tools' logged losses at the same steps (identical data and masks: expect < 1e-4).
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
from _common import (  # noqa: E402
    PY,
    ROOT,
    bench_env,
    default_cache,
    ensure_tiny_model,
    ftsweep_cmd,
    median,
    ratio,
    run_proc,
    table,
    write_result,
)

TARGET = 1.05


def composed(overrides: list[str], env: dict[str, str]) -> dict[str, Any]:
    """The resolved config of a run (``ftsweep train --cfg job --resolve``)."""
    out = run_proc(ftsweep_cmd("train", *overrides, "--cfg", "job", "--resolve"), env=env).stdout
    return yaml.safe_load(out)


def tiny_model_dir(cfg: dict[str, Any], cache: Path) -> Path:
    """The cached tiny model built for this config's ``model.tiny`` spec."""
    want = cfg["model"]["tiny"]
    for marker in sorted((cache / "tiny").glob("*/ftsweep_tiny.json")):
        spec = json.loads(marker.read_text())["spec"]
        if all(spec.get(k) == v for k, v in want.items()):
            return marker.parent
    raise RuntimeError(f"no tiny model for {want} under {cache}/tiny (run ftsweep train once)")


def plain_args(cfg: dict[str, Any], model_dir: Path, rows: Path, out: Path, extra: list[str] = ()) -> list[str]:
    """bench/plain_trl.py mirroring the composed config (every value it could differ in is passed)."""
    t, o, s, lora, d = cfg["trainer"], cfg["optimizer"], cfg["scheduler"], cfg["lora"], cfg["data"]
    assert o["name"] == "adamw_torch" and s["warmup_steps"] == 0 and o["weight_decay"] == 0.0, "plain_trl mirrors adamw_torch"
    return [PY, str(ROOT / "bench" / "plain_trl.py"), "--model", str(model_dir), "--rows", str(rows), "--out", str(out),
            "--steps", str(t["max_steps"]), "--batch", str(t["per_device_train_batch_size"]), "--lr", repr(o["lr"]),
            "--warmup-ratio", repr(s["warmup_ratio"]), "--scheduler", s["name"], "--r", str(lora["r"]),
            "--alpha", str(lora["alpha"]), "--dropout", repr(lora["dropout"]), "--targets", *lora["target_modules"],
            "--max-length", str(d["cutoff_len"]), "--logging-steps", str(t["logging_steps"]), "--seed", str(t["seed"]),
            "--pad-token", cfg["model"]["pad_token"], *extra]


def run_ftsweep(overrides: list[str], run_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = run_proc(ftsweep_cmd("train", *overrides, f"hydra.run.dir={run_dir}"), env=env)
    m = json.loads((run_dir / "metrics.json").read_text())
    hist = json.loads((run_dir / "log_history.json").read_text())
    return {"process_s": proc.wall_s, "process_cpu_s": proc.cpu_s, "peak_rss_mib": proc.peak_rss_mib, "loop_s": m["train_runtime"],
            "tokens_per_s": m["train_tokens_per_s"], "train_tokens": m["train_tokens"],
            "losses": {h["step"]: h["loss"] for h in hist if "loss" in h}}


def run_plain(cmd: list[str], out: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = run_proc(cmd, env=env)
    r = json.loads(out.read_text())
    return {"process_s": proc.wall_s, "process_cpu_s": proc.cpu_s, "peak_rss_mib": proc.peak_rss_mib, "loop_s": r["train_runtime"],
            "tokens_per_s": r["train_tokens_per_s"], "train_tokens": r["train_tokens"],
            "losses": {h["step"]: h["loss"] for h in r["log_history"] if "loss" in h}}


def measure(steps: int, reps: int, cache: Path, env: dict[str, str], tmp: Path) -> dict[str, Any]:
    overrides = ["logger=none", f"trainer.max_steps={steps}", "data.val_size=0", "objective.metric=train_loss",
                 "trainer.logging_steps=10" if steps >= 10 else "trainer.logging_steps=1"]
    cfg = composed(overrides, env)
    rows = tmp / f"rows_{steps}.jsonl"
    run_proc(ftsweep_cmd("inspect", *overrides, "--rows", "0", "--dump", str(rows)), env=env)
    model_dir = tiny_model_dir(cfg, cache)
    pairs = []
    for rep in range(reps):
        plain_out = tmp / f"plain_{steps}_{rep}.json"
        cmd = plain_args(cfg, model_dir, rows, plain_out)
        order = ("ftsweep", "plain") if rep % 2 == 0 else ("plain", "ftsweep")
        got = {}
        for tool in order:
            got[tool] = (run_ftsweep(overrides, tmp / f"ft_{steps}_{rep}", env) if tool == "ftsweep"
                         else run_plain(cmd, plain_out, env))
        common = sorted(set(got["ftsweep"]["losses"]) & set(got["plain"]["losses"]))
        diff = max((abs(got["ftsweep"]["losses"][s] - got["plain"]["losses"][s]) for s in common), default=None)
        pairs.append({"rep": rep, "order": order, **got, "loss_steps_compared": len(common), "max_loss_diff": diff})
        print(f"  {steps} steps rep {rep}: ftsweep {got['ftsweep']['process_s']:.1f} s / plain "
              f"{got['plain']['process_s']:.1f} s; max loss diff {diff}", flush=True)
    return {"steps": steps, "overrides": overrides, "plain_command": " ".join(plain_args(cfg, model_dir, rows, Path("OUT.json"))),
            "pairs": pairs, "summary": summarize(pairs)}


def summarize(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("process_s", "process_cpu_s", "loop_s", "tokens_per_s", "peak_rss_mib"):
        ft = median(p["ftsweep"][key] for p in pairs)
        pl = median(p["plain"][key] for p in pairs)
        out[key] = {"ftsweep": ft, "plain": pl, "ratio_of_medians": ratio(ft, pl),
                    "median_of_paired_ratios": median(ratio(p["ftsweep"][key], p["plain"][key]) for p in pairs)}
    last = lambda losses: losses[max(losses)] if losses else None  # noqa: E731
    out["final_loss"] = {"ftsweep": last(pairs[0]["ftsweep"]["losses"]), "plain": last(pairs[0]["plain"]["losses"])}
    out["max_loss_diff"] = max((p["max_loss_diff"] for p in pairs if p["max_loss_diff"] is not None), default=None)
    out["losses_identical_within_1e-4"] = out["max_loss_diff"] is not None and out["max_loss_diff"] < 1e-4
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="5 steps, 1 repetition: checks the script runs")
    p.add_argument("--steps", type=int, nargs="+", default=None)
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    steps = args.steps or ([5] if args.quick else [40, 100])
    reps = args.reps or (1 if args.quick else 3)
    cache = default_cache()
    env = bench_env(cache)
    ensure_tiny_model(env)
    results = []
    with tempfile.TemporaryDirectory(prefix="ftsweep-bench-overhead-") as d:
        for n in steps:
            results.append(measure(n, reps, cache, env, Path(d)))
    rows = []
    for r in results:
        s = r["summary"]
        for key, label in (("process_s", "whole process, s"), ("process_cpu_s", "whole process, CPU s"),
                           ("loop_s", "training loop, s"),
                           ("tokens_per_s", "tokens/s in the loop"), ("peak_rss_mib", "peak RSS, MiB")):
            rows.append([f"{r['steps']} steps", label, s[key]["ftsweep"], s[key]["plain"], s[key]["median_of_paired_ratios"]])
        rows.append([f"{r['steps']} steps", "final logged loss", s["final_loss"]["ftsweep"], s["final_loss"]["plain"],
                     f"max diff {s['max_loss_diff']:.2e}" if s["max_loss_diff"] is not None else "–"])
    print(f"\nftsweep train vs plain trl + peft (tiny model, CPU), medians of {reps} paired repetition(s); "
          "ratio = median of per-pair ftsweep / plain\n")
    print(table(["run", "figure", "ftsweep", "plain trl", "ratio"], rows))
    write_result("overhead", {"repetitions": reps, "target_ratio": TARGET, "results": results}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
