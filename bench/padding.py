"""How much of each batch is real tokens, and what does it buy? Padding (random batches),
``trainer.group_by_length=true`` and ``data.packing=true`` (trl's padding-free bfd packing) on the bundled
Alpaca demo rows (400 rows, cutoff 256, batch 8, tiny model, CPU), at equal optimizer steps and at equal
(real) tokens. Targets: real share >= 0.95 with packing; packing >= 1.5x tokens/s.

    python bench/padding.py             # 20 steps, 3 repetitions per mode (interleaved)
    python bench/padding.py --quick     # 2 steps, 1 repetition (smoke test; not a measurement)

Real-token share: non-padding tokens / token slots over the batches the trainer feeds, counted by
bench/plain_trl.py --stats-steps on the same rows (``ftsweep inspect --dump``), seed and sampler settings
(no training). Tokens/s: ftsweep's ``train_tokens_per_s`` (non-padding tokens / training-loop wall).
Equal tokens: packing runs ``steps x (real tokens per padded batch / real tokens per packed batch)`` steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
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
from overhead import composed, plain_args, tiny_model_dir  # noqa: E402

MODES = {
    "padding": ([], []),
    "group_by_length": (["trainer.group_by_length=true"], ["--group-by-length"]),
    "packing": (["data.packing=true"], ["--packing"]),
}
BASE = ["logger=none", "data.val_size=0", "objective.metric=train_loss", "trainer.logging_steps=10"]


def batch_stats(mode: str, steps: int, cfg: dict[str, Any], model_dir: Path, rows: Path, tmp: Path,
                env: dict[str, str]) -> dict[str, Any]:
    out = tmp / f"stats_{mode}_{steps}.json"
    run_proc(plain_args(cfg, model_dir, rows, out, [*MODES[mode][1], "--stats-steps", str(steps)]), env=env)
    return json.loads(out.read_text())


def train_speed(mode: str, steps: int, tmp: Path, tag: str, env: dict[str, str]) -> dict[str, Any]:
    run_dir = tmp / f"run_{mode}_{steps}_{tag}"
    run_proc(ftsweep_cmd("train", *BASE, *MODES[mode][0], f"trainer.max_steps={steps}", f"hydra.run.dir={run_dir}"), env=env)
    m = json.loads((run_dir / "metrics.json").read_text())
    return {"steps": steps, "loop_s": m["train_runtime"], "train_tokens": m["train_tokens"],
            "tokens_per_s": m["train_tokens_per_s"], "final_train_loss": m.get("last_train_loss")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    steps = args.steps or (2 if args.quick else 20)
    reps = args.reps or (1 if args.quick else 3)
    cache = default_cache()
    env = bench_env(cache)
    ensure_tiny_model(env)
    with tempfile.TemporaryDirectory(prefix="ftsweep-bench-padding-") as d:
        tmp = Path(d)
        cfg = composed([*BASE, f"trainer.max_steps={steps}"], env)
        rows = tmp / "rows.jsonl"
        run_proc(ftsweep_cmd("inspect", *BASE, "--rows", "0", "--dump", str(rows)), env=env)
        model_dir = tiny_model_dir(cfg, cache)
        stats = {m: batch_stats(m, steps, cfg, model_dir, rows, tmp, env) for m in MODES}
        # Equal real tokens: packing needs fewer steps to see as many real tokens as padded batches do.
        pack_steps = max(1, round(steps * stats["padding"]["real_tokens_per_batch"] / stats["packing"]["real_tokens_per_batch"]))
        runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
        runs["packing@equal_tokens"] = []
        for rep in range(reps):  # interleaved, so background load hits every mode alike
            for m in MODES:
                runs[m].append(train_speed(m, steps, tmp, str(rep), env))
            runs["packing@equal_tokens"].append(train_speed("packing", pack_steps, tmp, f"eq{rep}", env))
    med = {k: {f: median(r[f] for r in v) for f in ("loop_s", "train_tokens", "tokens_per_s", "final_train_loss")}
           for k, v in runs.items()}
    paired = {k: median(ratio(a["tokens_per_s"], b["tokens_per_s"]) for a, b in zip(v, runs["padding"]))
              for k, v in runs.items()}
    rows_out = []
    for k in runs:
        mode = k.split("@")[0]
        rows_out.append([k, runs[k][0]["steps"], stats[mode]["real_share"], med[k]["train_tokens"], med[k]["loop_s"],
                         med[k]["tokens_per_s"], paired[k], med[k]["final_train_loss"]])
    print(f"\nalpaca_demo rows, cutoff 256, batch 8, tiny model, CPU; medians of {reps} repetition(s); "
          "ratio = median of paired tokens/s vs padding\n")
    print(table(["mode", "steps", "real-token share", "real tokens", "loop s", "tokens/s", "vs padding",
                 "last train loss"], rows_out))
    write_result("padding", {
        "repetitions": reps, "steps": steps, "packing_steps_at_equal_tokens": pack_steps,
        "settings": "data=alpaca_demo data.val_size=0 (400 rows), cutoff 256, batch 8, lora r16, logger=none, no eval",
        "targets": {"packing_real_share_ge": 0.95, "packing_tokens_per_s_ratio_ge": 1.5},
        "limit_note": ("trl's padding-free packing with sdpa attention makes transformers build a block-diagonal "
                       "mask over the flattened batch, so attention is dense over batch x cutoff tokens on CPU; "
                       "flash-attention varlen (GPU) or flex_attention would skip the masked blocks"),
        "batch_stats": {m: {k: v for k, v in s.items() if k != "per_batch"} for m, s in stats.items()},
        "median": med, "tokens_per_s_vs_padding": paired, "runs": runs,
    }, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
