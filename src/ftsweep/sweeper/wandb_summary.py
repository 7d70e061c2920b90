"""The W&B summary run of a sweep: one run in the study's group with a table of all trials and the best params."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ftsweep.sweeper import attrs


def trial_rows(study: Any) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of the trials table (params flattened into columns)."""
    trials = study.get_trials(deepcopy=False)
    params = sorted({k for t in trials for k in t.params})
    columns = ["trial", "state", "value", *params, "reason", "wandb_run_id", "trial_dir"]
    rows = []
    for t in trials:
        value = t.values[0] if t.values and len(t.values) == 1 else (list(t.values) if t.values else None)
        rows.append([t.number, t.state.name, value if not isinstance(value, list) else str(value),
                     *(_cell(t.params.get(p)) for p in params), t.user_attrs.get(attrs.REASON),
                     t.user_attrs.get(attrs.WANDB_RUN_ID), t.user_attrs.get(attrs.TRIAL_DIR)])
    return columns, rows


def _cell(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def log_summary(study: Any, logger: dict[str, Any], sweep_dir: Path, summary: dict[str, Any]) -> str | None:
    """Log the summary run (``summary``: the report's :func:`ftsweep.report.summarize`); returns its id
    (None if W&B failed: the sweep result does not depend on it)."""
    from ftsweep.tracking import wandb_dir, wandb_init, wandb_mode

    os.environ.setdefault("WANDB_SILENT", "true")  # no run summary dump in the sweep's output
    try:
        import wandb

        mode = wandb_mode(logger)
        run = wandb_init(project=logger.get("project") or "ftsweep", entity=logger.get("entity"),
                         group=study.study_name, name=f"{study.study_name}-summary", job_type="sweep-summary",
                         config={"study_name": study.study_name, "n_trials": summary["n_trials"],
                                 "directions": summary["directions"], "metrics": summary["metrics"]},
                         dir=wandb_dir(sweep_dir), mode=mode, reinit="finish_previous")
        columns, rows = trial_rows(study)
        run.log({"trials": wandb.Table(columns=columns, data=rows)})
        for key in ("n_trials", "n_complete", "n_pruned", "n_failed", "best_value", "best_trial_number",
                    "best_trial_dir"):
            run.summary[key] = summary[key]
        for k, v in (summary["best_params"] or {}).items():
            run.summary[f"best_params/{k}"] = _cell(v)
        run_id = run.id
        run.finish()
        return run_id
    except Exception as err:
        print(f"[sweep {study.study_name}] W&B summary run failed: {type(err).__name__}: {err}", file=sys.stderr)
        return None
