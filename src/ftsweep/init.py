"""``ftsweep init DIR``: a starter project that keeps the user's data and options next to the installed tool.

    DIR/conf/data/my_data.yaml          a data option pointing at the example file below
    DIR/conf/experiment/my_baseline.yaml  a baseline run (+experiment=my_baseline)
    DIR/sweep/my_sweep.yaml             a sweep (ftsweep train -m sweep=my_sweep)
    DIR/data/my_data.jsonl              example rows in Alpaca layout (instruction / input / output)
    DIR/README.md                       the commands

Run ``ftsweep`` from DIR: ``conf/`` there is searched before the shipped config (new options extend a
group, an option with a shipped name replaces it) and ``sweep/`` holds the project's sweeps. Existing
files are never overwritten.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from ftsweep.config.errors import UsageError

DATA_YAML = """\
# My data: data/my_data.jsonl in Alpaca layout (instruction / input / output); completion-only loss.
# Point path at your own file (json, jsonl, csv, tsv, parquet, txt, .gz, or a Hub dataset name); its columns tell the format.
defaults: [data_schema, _self_]
path: data/my_data.jsonl
format: auto  # told by the columns: instruction / input / output reads as alpaca, messages as chat, ... (README "Data")
template: alpaca_en
val_size: 0.2
cutoff_len: 128
"""

BASELINE_YAML = """\
# @package _global_
# My baseline run. Run: ftsweep train +experiment=my_baseline
# On a GPU: ftsweep train +experiment=my_baseline model=llama3_2_1b quantization=nf4 trainer.max_steps=300
defaults:
  - override /data: my_data
  - override /lora: r16
optimizer:
  lr: 1.0e-3
trainer:
  max_steps: 30
  eval_steps: 10
  logging_steps: 10
"""

SWEEP_YAML = """\
# @package _global_
# Run: ftsweep train -m sweep=my_sweep
# Learning rate (log) x LoRA option on my_data, median pruning; the tiny model on CPU by default.
# On a GPU: ftsweep train -m sweep=my_sweep model=llama3_2_1b quantization=nf4 trainer.max_steps=300
defaults:
  - override /data: my_data

trainer:
  max_steps: 30
  eval_steps: 10
  logging_steps: 10
  # With a large validation split: the evaluations before the last step (what the pruner compares) score a
  # fixed subset of this many rows, the last one (the objective) every row.
  # intermediate_eval_rows: 256

hydra:
  mode: MULTIRUN
  sweep:
    dir: outputs/sweeps/my_sweep
  sweeper:
    study_name: my_sweep
    n_trials: 6
    n_workers: 1
    params:
      optimizer.lr: tag(log, interval(1e-4, 1e-2))
      lora: choice(r8, r16)
    sampler:
      name: tpe
      seed: 0
      n_startup_trials: 3
    pruner:
      name: median
      n_startup_trials: 3
      n_warmup_steps: 10
"""

README = """\
# My ftsweep project

Made by `ftsweep init`. Run every command from this folder: `conf/` here is searched before ftsweep's
shipped config (add options to any group, or replace a shipped one by using its name), and `sweep/`
holds this project's sweeps.

```bash
ftsweep inspect data=my_data                  # the rows exactly as trained (masked prompt vs trained answer)
ftsweep train +experiment=my_baseline         # one baseline run -> outputs/runs/<date>/<time>/
ftsweep train -m sweep=my_sweep               # the sweep -> outputs/sweeps/my_sweep/ (report, best.yaml)
ftsweep report outputs/sweeps/my_sweep        # the report again (also for a running sweep)
ftsweep train --help                          # every group and option, shipped and yours
```

Files:
- `data/my_data.jsonl`: example rows; replace them with your own (or point `conf/data/my_data.yaml` elsewhere).
- `conf/data/my_data.yaml`, `conf/experiment/my_baseline.yaml`: options of your own; more go in any group folder
  (`conf/model/`, `conf/lora/`, ...).
- `sweep/my_sweep.yaml`: the search space, sampler, pruner and trial budget.

The defaults use the tiny CPU stand-in model; on a GPU add e.g. `model=llama3_2_1b quantization=nf4`.
"""

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen"]


def example_rows() -> list[dict[str, str]]:
    """Small arithmetic rows with exact answers, in Alpaca layout (some with an input, most without)."""
    rows = []
    for a in range(1, 10):
        for b in (2, 5, 9):
            if a + b < len(NUMBER_WORDS):
                rows.append({"instruction": f"What is {a} plus {b}? Answer in words.", "input": "",
                             "output": f"{a} plus {b} is {NUMBER_WORDS[a + b]}."})
    for a in range(2, 8):
        rows.append({"instruction": "Double the number and answer in words.", "input": str(a),
                     "output": f"Twice {a} is {NUMBER_WORDS[2 * a]}."})
    return rows


def files() -> dict[str, str]:
    """Relative path -> content of every file ``ftsweep init`` writes."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in example_rows())
    return {
        "conf/data/my_data.yaml": DATA_YAML,
        "conf/experiment/my_baseline.yaml": BASELINE_YAML,
        "sweep/my_sweep.yaml": SWEEP_YAML,
        "data/my_data.jsonl": data,
        "README.md": README,
    }


def init_project(target: str | Path) -> list[Path]:
    """Write the starter project into ``target``; refuse (nothing written) if any of its files exists."""
    root = Path(target).expanduser()
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root}: exists and is not a directory")
    planned = {root / rel: text for rel, text in files().items()}
    existing = [p for p in planned if p.exists()]
    if existing:
        raise UsageError(f"{existing[0]}: already exists; ftsweep init never overwrites (choose an empty folder)")
    for path, text in planned.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(planned)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ftsweep init", description="Write a starter project (conf/, sweep/, data/).")
    parser.add_argument("dir", help="the project folder (created if missing)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    written = init_project(args.dir)
    for path in written:
        print(f"wrote {path}")
    print(f"next: cd {shlex.quote(args.dir)} && ftsweep train -m sweep=my_sweep")  # a folder with spaces: pasteable
    return 0
