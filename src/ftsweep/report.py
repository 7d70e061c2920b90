"""``ftsweep report``: a study (finished or running) -> summary.json, a Markdown table, plots, best.yaml.

    ftsweep report outputs/sweeps/quickstart                     # a sweep directory (study.db / study.journal)
    ftsweep report postgresql://host/db --study lora_search      # any Optuna storage URL
    ftsweep report SWEEP_DIR --out DIR                           # write elsewhere (default: the sweep dir)

Written to the output directory:
    summary.json   study_name, n_trials, n_complete, n_pruned, n_failed, best_value, best_params, best_trial_dir,
                   n_did_not_learn / did_not_learn (trials whose eval loss never fell below its initial value), ...
    report.md      the summary, a table of all trials (state, value, params, learned, reason) and the plots
    trials.md      the table alone
    plots/         optimization_history, param_importances, parallel_coordinate, intermediate_values
                   (.png via matplotlib, .html via plotly; a plot that needs more trials is skipped)
    best.yaml      an experiment file that reproduces the best trial; its header says the command
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path
from typing import Any

from ftsweep.tracking import mask_url_passwords

PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")


# ------------------------------------------------------------------------------------------ CLI
def main(argv: list[str]) -> int:
    """Entry point of ``ftsweep report``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="ftsweep report", description=__doc__.split("\n\n")[0])
    parser.add_argument("target", help="a sweep directory, or an Optuna storage URL")
    parser.add_argument("--study", help="study name (needed when the storage holds several studies)")
    parser.add_argument("--out", help="output directory (default: the sweep directory)")
    args = parser.parse_args(argv)

    from ftsweep.config.errors import UsageError
    from ftsweep.sweeper.grammar import SweepInputError

    try:
        study, sweep_dir, url = load(args.target, args.study)
    except SweepInputError as err:
        raise UsageError(str(err)) from err
    out = Path(args.out).resolve() if args.out else sweep_dir
    out_dir = write_report(study, out, storage_url=url)
    summary = json.loads((out_dir / "summary.json").read_text())
    print(f"study {summary['study_name']}: {summary['n_trials']} trials ({summary['n_complete']} complete, "
          f"{summary['n_pruned']} pruned, {summary['n_failed']} failed, {summary['n_running']} running)")
    if summary["best_value"] is not None:
        print(f"best trial {summary['best_trial_number']}: value={summary['best_value']:.6g} "
              f"params={summary['best_params']} dir={summary['best_trial_dir']}")
    print(f"report: {out_dir / 'report.md'}")
    if (out_dir / "best.yaml").is_file():
        print(f"best config: {out_dir / 'best.yaml'}")
    return 0


def load(target: str, study_name: str | None) -> tuple[Any, Path, str]:
    """(study, sweep dir, storage URL) for a sweep directory or a storage URL."""
    import optuna

    from ftsweep.sweeper.grammar import SweepInputError
    from ftsweep.sweeper.storage import open_storage, redact

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(target).expanduser()
    if "://" not in target and not target.startswith("journal:"):
        if not path.is_dir():
            raise SweepInputError(f"{target}: no such sweep directory (or give a storage URL)")
        if (path / "study.db").is_file():
            url = f"sqlite:///{(path / 'study.db').resolve()}"
        elif (path / "study.journal").is_file():
            url = f"journal:{(path / 'study.journal').resolve()}"
        else:
            raise SweepInputError(f"{target}: no study.db or study.journal here; pass the storage URL and --study")
    else:
        url = target
    storage = open_storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study_name is None:
        if len(names) != 1:
            raise SweepInputError(f"{redact(url)} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                                  "choose one with --study")
        study_name = names[0]
    elif study_name not in names:
        raise SweepInputError(f"no study {study_name!r} in {redact(url)}; studies: {', '.join(names) or 'none'}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    sweep_dir = path.resolve() if path.is_dir() else _sweep_dir_of(study)
    return study, sweep_dir, url


def _sweep_dir_of(study: Any) -> Path:
    """The sweep directory recorded on the study when it was created (its ``hydra.sweep.dir``)."""
    from ftsweep.sweeper.study import SWEEP_DIR_ATTR

    recorded = study.user_attrs.get(SWEEP_DIR_ATTR)
    if recorded:
        return Path(recorded)
    trial_dirs = [t.user_attrs.get("trial_dir") for t in study.get_trials(deepcopy=False)]
    return next((Path(d).parent for d in trial_dirs if d), Path.cwd() / study.study_name)


# ------------------------------------------------------------------------------------------ report
def write_report(study: Any, out_dir: Path, storage_url: str | None = None) -> Path:
    """Write summary.json, report.md, trials.md, plots/ and best.yaml for ``study`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize(study, storage_url)
    summary.update(learning_summary(study))
    (out_dir / "summary.json").write_text(mask_url_passwords(json.dumps(summary, indent=2, default=str)))
    table = mask_url_passwords(trials_table(study))
    (out_dir / "trials.md").write_text(table + "\n")
    plots = write_plots(study, out_dir / "plots")
    from ftsweep.sweeper.study import best_trial

    best = best_trial(study)
    if best is not None:
        (out_dir / "best.yaml").write_text(mask_url_passwords(best_yaml(study, best, out_dir)))
    (out_dir / "report.md").write_text(mask_url_passwords(report_markdown(summary, table, plots, best is not None)))
    return out_dir


def summarize(study: Any, storage_url: str | None = None) -> dict[str, Any]:
    """The numbers of ``summary.json``."""
    from ftsweep.sweeper.storage import redact
    from ftsweep.sweeper.study import best_trial, count, counted_trials

    c = count(study)
    best = best_trial(study)
    multi = len(study.directions) > 1
    return {
        "study_name": study.study_name,
        "n_trials": c.total,
        "n_complete": c.complete,
        "n_pruned": c.pruned,
        "n_failed": c.failed,
        "n_running": c.running,
        "n_waiting": c.waiting,
        "n_rerun": len(study.get_trials(deepcopy=False)) - len(counted_trials(study)),
        "directions": [d.name.lower() for d in study.directions],
        "metrics": study.user_attrs.get("ftsweep:metrics"),
        "best_value": None if best is None else (best.values if multi else best.value),
        "best_params": None if best is None else best.params,
        "best_trial_number": None if best is None else best.number,
        "best_trial_dir": None if best is None else best.user_attrs.get("trial_dir"),
        "best_wandb_run_id": None if best is None else best.user_attrs.get("wandb_run_id"),
        "pareto_trials": [t.number for t in study.best_trials] if multi else None,
        "storage": redact(storage_url) if storage_url else None,
    }


def did_not_learn(trial: Any) -> bool | None:
    """True when a finished trial's eval loss never fell below its initial value (it diverged or did not
    learn; its objective is not a result), False when it did, None when its metrics.json does not say."""
    from ftsweep import rundir

    d = trial.user_attrs.get("trial_dir")
    metrics = rundir.read_metrics(Path(d)) if d else None
    initial = (metrics or {}).get("initial_eval_loss")
    if not isinstance(initial, (int, float)) or not math.isfinite(initial):
        return None
    losses = [h.get("eval_loss") for h in metrics.get("eval_history") or [] if isinstance(h, dict)]
    losses.append(metrics.get("eval_loss"))
    losses = [v for v in losses if isinstance(v, (int, float))]
    if not losses:
        return None
    return not any(math.isfinite(v) and v < initial for v in losses)


def learning_summary(study: Any) -> dict[str, Any]:
    """``n_did_not_learn`` and ``did_not_learn`` (trial numbers) of the COMPLETE and PRUNED trials."""
    from optuna.trial import TrialState

    bad = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
           if did_not_learn(t)]
    return {"n_did_not_learn": len(bad), "did_not_learn": bad}


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def trials_table(study: Any) -> str:
    """All trials as a Markdown table (re-run failures included, marked)."""
    trials = study.get_trials(deepcopy=False)
    params = sorted({k for t in trials for k in t.params})
    from ftsweep.sweeper.study import replaced_numbers

    rerun = replaced_numbers(trials)
    head = ["trial", "state", "value", *params, "steps", "runtime_s", "learned", "reason", "dir"]
    rows = []
    for t in trials:
        state = t.state.name + (" (re-run)" if t.number in rerun else "")
        value = t.values if t.values and len(t.values) > 1 else t.value
        steps = t.user_attrs.get("pruned_at_step") or (max(t.intermediate_values) if t.intermediate_values else None)
        d = t.user_attrs.get("trial_dir")
        flat = did_not_learn(t) if t.state.is_finished() and t.state.name != "FAIL" else None
        learned = None if flat is None else ("NO: loss never fell below its initial value" if flat else "yes")
        rows.append([t.number, state, value, *(t.params.get(p) for p in params), steps,
                     t.user_attrs.get("runtime_s"), learned, t.user_attrs.get("reason"), Path(d).name if d else None])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_plots(study: Any, plot_dir: Path) -> dict[str, str]:
    """PNG (matplotlib, Agg) and HTML (plotly) per plot; returns name -> status ("ok" or why skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as vis_mpl

    plot_dir.mkdir(parents=True, exist_ok=True)
    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    kwargs = {"target": target, "target_name": "objective 0"} if multi else {}
    status = {}
    for name in PLOTS:
        plot_kwargs = {} if name == "intermediate_values" else kwargs
        if name == "intermediate_values" and multi:
            status[name] = "skipped: multi-objective studies have no intermediate values"
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = getattr(vis_mpl, f"plot_{name}")(study, **plot_kwargs)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
                fig.set_size_inches(9, 5.5)
                fig.tight_layout()
                fig.savefig(plot_dir / f"{name}.png", dpi=100)
                plt.close(fig)
                getattr(vis, f"plot_{name}")(study, **plot_kwargs).write_html(
                    plot_dir / f"{name}.html", include_plotlyjs="directory")
                status[name] = "ok"
            except Exception as err:
                plt.close("all")
                status[name] = f"skipped: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    return status


def report_markdown(summary: dict[str, Any], table: str, plots: dict[str, str], has_best: bool) -> str:
    lines = [f"# Sweep {summary['study_name']}", ""]
    lines.append(f"{summary['n_trials']} trials: {summary['n_complete']} complete, {summary['n_pruned']} pruned, "
                 f"{summary['n_failed']} failed, {summary['n_running']} running "
                 f"({', '.join(summary['directions'])} {summary.get('metrics') or ''}).")
    if summary["best_value"] is not None:
        lines += ["", f"**Best trial {summary['best_trial_number']}**: value {_fmt(summary['best_value'])}, "
                      f"params `{summary['best_params']}`, dir `{summary['best_trial_dir']}`."]
    if summary.get("n_did_not_learn"):
        numbers = ", ".join(str(n) for n in summary["did_not_learn"])
        lines += ["", f"**Warning**: {summary['n_did_not_learn']} trial(s) never got an eval loss below their initial "
                      f"value (diverged or did not learn; their values are not results): trial(s) {numbers}."]
        if summary.get("best_trial_number") in summary["did_not_learn"]:
            lines += ["", "**The best trial did not learn either**: widen or move the search space."]
    if has_best:
        lines += ["", "Reproduce it: see the command at the top of [best.yaml](best.yaml)."]
    lines += ["", "## Trials", "", table, "", "## Plots", ""]
    for name, state in plots.items():
        if state == "ok":
            lines.append(f"### {name.replace('_', ' ')}\n\n![{name}](plots/{name}.png)\n\n"
                         f"[interactive](plots/{name}.html)\n")
        else:
            lines.append(f"- {name}: {state}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ best.yaml
def best_yaml(study: Any, best: Any, out_dir: Path) -> str:
    """An experiment file (``# @package _global_``) with the best trial's overrides.

    Group selections become ``override /<group>: <option>`` defaults entries, values become nested YAML.
    It is loaded from the directory above the sweep directory, as config group <sweep dir name>:
    ``ftsweep train --config-dir <parent> +<name>=best``.
    """
    from omegaconf import OmegaConf

    overrides = list(best.user_attrs.get("overrides") or _overrides_file(best))
    groups, values, skipped = _split_for_yaml(overrides)
    threads = _recorded_threads(best)
    pinned = threads is not None and not any(k == "trainer.num_threads" for k, _ in values)
    if pinned:
        values.append(("trainer.num_threads", threads))  # CPU losses depend on it: same count, same numbers
    parent, group = out_dir.resolve().parent, out_dir.resolve().name
    value = best.values if len(study.directions) > 1 else best.value
    metrics = study.user_attrs.get("ftsweep:metrics") or ["objective"]
    header = [
        "# @package _global_",
        f"# Run: ftsweep train --config-dir {parent} +{group}=best",
        f"# Best trial {best.number} of sweep {study.study_name}: {', '.join(metrics)} = {_fmt(value)} "
        f"({', '.join(d.name.lower() for d in study.directions)}); trial dir {best.user_attrs.get('trial_dir')}",
        "# Or copy this file to conf/experiment/ and run: ftsweep train +experiment=<file name>",
        f"# Trial overrides: {' '.join(overrides)}",
    ]
    if pinned:
        header.append(f"# trainer.num_threads: {threads}: the trial's CPU intra-op threads (its manifest.json); "
                      "CPU losses are bitwise equal only with the same count")
    header += [f"# not representable here, add on the command line: {o}" for o in skipped]
    body: dict[str, Any] = {}
    if groups:
        body["defaults"] = [{f"override /{g}": opt} for g, opt in groups]
    cfg = OmegaConf.create({})
    for key, v in values:
        OmegaConf.update(cfg, key, v, force_add=True)
    body.update(OmegaConf.to_container(cfg))
    if any(g == "sweep" for g, _ in groups):  # a sweep file sets hydra.mode=MULTIRUN: this file is one run
        body["hydra"] = {"mode": "RUN"}
    return "\n".join(header) + "\n" + (OmegaConf.to_yaml(OmegaConf.create(body)) if body else "{}\n")


def _recorded_threads(trial: Any) -> int | None:
    """The intra-op thread count the trial ran with (its manifest.json), if it recorded one."""
    from ftsweep import rundir
    from ftsweep.numerics import recorded_threads

    d = trial.user_attrs.get("trial_dir")
    return recorded_threads(rundir.read_manifest(Path(d))) if d else None


def _overrides_file(trial: Any) -> list[str]:
    from ftsweep import rundir

    d = trial.user_attrs.get("trial_dir")
    return rundir.load_overrides(d) if d else []


def _split_for_yaml(overrides: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, Any]], list[str]]:
    """(group selections, key/value settings, overrides a YAML file cannot express)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ftsweep.config.compose import group_options

    parser = OverridesParser.create()
    groups, values, skipped = [], [], []
    for text in overrides:
        key = text.split("=", 1)[0]
        if key.lstrip("+") == "cache_dir":
            continue  # where this machine caches models, not part of the experiment
        try:
            o = parser.parse_override(text)
        except Exception:
            skipped.append(text)
            continue
        name = o.get_key_element()
        if o.is_delete() or o.package is not None or name.startswith("hydra."):
            skipped.append(text)
        elif group_options(name.lstrip("+")) is not None or name == "sweep":
            groups.append((name.lstrip("+"), str(o.value())))
        else:
            values.append((name.lstrip("+"), o.value()))
    return groups, values, skipped
