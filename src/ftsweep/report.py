"""``ftsweep report``: a study (finished or running) -> summary.json, a Markdown table, plots, best.yaml.

    ftsweep report outputs/sweeps/quickstart                     # a sweep directory (study.db / study.journal)
    ftsweep report postgresql://host/db --study lora_search      # any Optuna storage URL
    ftsweep report SWEEP_DIR --out DIR                           # write elsewhere (default: the sweep dir)

Written to the output directory:
    summary.json   study_name, n_trials, n_complete, n_pruned, n_failed, best_value, best_params, best_trial_dir,
                   n_did_not_learn / did_not_learn (trials whose objective never beat its value before training,
                   judged by learning_metric: the objective, or the eval loss when it has no value before training),
                   all_tied_value (the value every complete trial scored, when they all tie; else null), ...
    report.md      the summary, a table of all trials (state, value, params, learned, reason) and the plots;
                   a multi-objective sweep (hydra.sweeper.metric=[exact_match,eval_loss]) lists its Pareto front
                   (the COMPLETE trials no other trial beats on every metric) and plots it
    trials.md      the table alone
    plots/         optimization_history, param_importances, parallel_coordinate, intermediate_values
                   (.png via matplotlib, .html via plotly; a plot that needs more trials is skipped, the
                   importances below MIN_IMPORTANCE_TRIALS complete trials)
    best.yaml      an experiment file that reproduces the best trial; its header says the command (without a
                   complete trial none, and an earlier study's in the folder is removed)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from ftsweep.errors import write_trouble
from ftsweep.rundir import write_atomic, write_text_atomic
from ftsweep.sweepdir import SweepDir
from ftsweep.sweeper import attrs
from ftsweep.tracking import scrub

PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")
# Optuna's parameter importances (fANOVA: a random forest fitted to the complete trials' values) from fewer
# points say nothing of which parameter matters; below this the plot is skipped, and with it scikit-learn's
# import (about 1.2-1.5 s of CPU at the end of every sweep)
MIN_IMPORTANCE_TRIALS = 5
MULTI_PLOTS = ("pareto_front",)  # multi-objective studies only


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
    if args.out:
        check_out_dir(out, args.out, study.study_name)
    out_dir = write_report(study, out, storage_url=url)
    folder = SweepDir(out_dir)
    summary = folder.read_summary() or {}
    print(f"study {summary['study_name']}: {summary['n_trials']} trials ({_counts(summary, '; ')})")
    if summary.get("pareto_trials") is not None:
        print(f"pareto front ({', '.join(summary['metrics'] or [])}): trial(s) "
              f"{', '.join(map(str, summary['pareto_trials'])) or 'none'}")
    elif summary["best_value"] is not None:
        print(f"best trial {summary['best_trial_number']}: value={summary['best_value']:.6g} "
              f"params={summary['best_params']} dir={summary['best_trial_dir']}")
    print(f"report: {folder.report}")
    if folder.best.is_file():
        print(f"best config: {folder.best}")
    return 0


def check_out_dir(out: Path, given: str, study_name: str) -> None:
    """``--out``: a folder for this study's report; not a file (a traceback before), a run's folder or the folder
    of another study, whose summary.json, report.md, trials.md and best.yaml it would replace."""
    from ftsweep import rundir
    from ftsweep.config.errors import UsageError
    from ftsweep.sweeper.study import studies_in

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {given}: is a file, not a folder")
    if rundir.is_finished(out):
        raise UsageError(f"--out {given}: holds a run; give the report a folder of its own")
    others = [n for n in studies_in(out) if n != study_name] if out.is_dir() else []
    if others:
        raise UsageError(f"--out {given}: holds study {others[0]!r} (its report would be replaced by {study_name!r}'s); "
                         "give a new folder")


def load(target: str, study_name: str | None) -> tuple[Any, Path, str]:
    """(study, sweep dir, storage URL): :func:`ftsweep.sweeper.study.load_study`."""
    from ftsweep.sweeper.study import load_study

    return load_study(target, study_name)


# ------------------------------------------------------------------------------------------ report
def sweep_end(plan: Any) -> Path | None:
    """The sweep's report hook (``sweeper.sweep.execute(plan, on_end=sweep_end)``): the report in the sweep
    folder (``hydra.sweeper.report``) and the W&B summary run (``hydra.sweeper.wandb_summary``); returns
    the report's folder. Neither can fail the sweep: its trials are in the storage already."""
    s = plan.settings
    report_dir = None
    if s.conf.report:
        from ftsweep.sweeper.watch import upload_study_files

        try:
            from ftsweep.sweeper.study import relocated

            # (a sweep resumed in a folder moved since: its earlier trials' folders are here now)
            report_dir = write_report(relocated(plan.study, s.sweep_dir), s.sweep_dir, storage_url=s.storage_url)
        except Exception as err:  # noqa: BLE001 -- said on stderr; `ftsweep report SWEEP_DIR` can redo it
            print(f"[sweep {s.study_name}] report failed: {type(err).__name__}: {err}; the trials are in the study: "
                  f"`ftsweep report {s.sweep_dir}` writes the report again", file=sys.stderr)
        else:  # also stored as the study's files, for the dashboard
            upload_study_files(plan.study, report_dir, s.sweep_dir)
    if plan.wandb_summary:
        from ftsweep.sweeper.wandb_summary import log_summary

        log_summary(plan.study, plan.logger, s.sweep_dir, summarize(plan.study))
    return report_dir


def write_report(study: Any, out_dir: Path, storage_url: str | None = None) -> Path:
    """Write summary.json, report.md, trials.md, plots/ and best.yaml for ``study`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = SweepDir(out_dir)
    summary = summarize(study, storage_url)
    summary.update(learning_summary(study))
    # (each file whole or not at all: a disk that fills up keeps the earlier report's, which best.yaml's readers trust)
    write_text_atomic(folder.summary, scrub(json.dumps(summary, indent=2, default=str)))
    table = scrub(trials_table(study))
    write_text_atomic(folder.trials, table + "\n")
    import optuna

    from ftsweep.verbosity import verbose

    level = optuna.logging.get_verbosity()
    if not verbose():  # "There are no complete trials." from each plot of a sweep with none: the report says so
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        plots = write_plots(study, folder.plots)
    finally:
        optuna.logging.set_verbosity(level)
    from ftsweep.sweeper.study import best_trial

    best = best_trial(study)
    if best is not None:
        write_text_atomic(folder.best, scrub(best_yaml(study, best, out_dir)))
    else:  # an earlier study's (a folder given a new one with overwrite=true): not this study's best config
        folder.best.unlink(missing_ok=True)
    text = report_markdown(summary, table, plots, best is not None, pareto_section(study)) + generation_section(study)
    write_text_atomic(folder.report, scrub(text))
    return out_dir


def summarize(study: Any, storage_url: str | None = None) -> dict[str, Any]:
    """The numbers of ``summary.json``."""
    from optuna.trial import TrialState

    from ftsweep.sweeper.storage import redact
    from ftsweep.sweeper.study import (
        LOST_AFTER_S,
        best_trial,
        count,
        counted_trials,
        pareto_front,
        stale_reason,
        tied_value,
    )

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
        # running trials whose sweep process is gone (killed): the next run of the sweep fails and re-runs them
        "n_lost": sum(stale_reason(t, LOST_AFTER_S) is not None
                      for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))),
        "n_waiting": c.waiting,
        "n_rerun": len(study.get_trials(deepcopy=False)) - len(counted_trials(study)),
        "directions": [d.name.lower() for d in study.directions],
        "metrics": study.user_attrs.get(attrs.METRICS),
        "best_value": None if best is None else (best.values if multi else best.value),
        "best_params": None if best is None else best.params,
        "best_trial_number": None if best is None else best.number,
        "best_trial_dir": None if best is None else best.user_attrs.get(attrs.TRIAL_DIR),
        "best_wandb_run_id": None if best is None else best.user_attrs.get(attrs.WANDB_RUN_ID),
        "pareto_trials": [t.number for t in pareto_front(study)] if multi else None,
        "all_tied_value": tied_value(study),
        "storage": redact(storage_url) if storage_url else None,
    }


def objective_of(study: Any) -> tuple[str, bool]:
    """(metric, maximize) of the study's first objective, as the sweep recorded it (eval_loss if unrecorded)."""
    metrics = study.user_attrs.get(attrs.METRICS) or ["eval_loss"]
    return metrics[0], study.directions[0].name == "MAXIMIZE"


def did_not_learn(trial: Any, metric: str = "eval_loss", maximize: bool = False) -> tuple[bool | None, str]:
    """(flag, judged metric): flag is True when a finished trial's objective never beat its value before
    training (``initial_<metric>`` in metrics.json; it diverged or did not learn, so its value is not a
    result), False when it did, None when metrics.json does not say. A metric without an initial value
    (e.g. an lm_eval score) is judged by the eval loss instead, as is every trial of a study that records none."""
    from ftsweep import rundir

    d = trial.user_attrs.get(attrs.TRIAL_DIR)
    metrics = rundir.read_metrics(Path(d)) if d else None
    if not metrics:
        return None, metric
    initial = metrics.get(f"initial_{metric}")
    seen = dict(trial.intermediate_values)  # what the pruner saw: this metric at each evaluation
    if not _finite(initial):
        metric, maximize, initial, seen = "eval_loss", False, metrics.get("initial_eval_loss"), {}
        if not _finite(initial):
            return None, metric
    history = [h for h in metrics.get("eval_history") or [] if isinstance(h, dict)]
    # Evaluations of a subset of the rows (trainer.intermediate_eval_rows) do not compare with the value before
    # training, which scored every row: a Trainer metric (eval_*) is judged by its every-row values only.
    subset = {h.get("step") for h in history if h.get("rows")} if metric.startswith("eval_") else set()
    seen = [v for step, v in seen.items() if step and step not in subset]  # step 0: the initial value itself
    seen += [h.get(metric) for h in history if h.get("step") and h.get("step") not in subset]
    seen += [h.get(metric) for h in metrics.get("objective_history") or [] if isinstance(h, dict) and h.get("step")]
    if not (history and history[-1].get("step") in subset):  # a pruned trial's value: its last evaluation's
        seen.append(metrics.get(metric))
    seen = [v for v in seen if _finite(v)]
    if not seen:
        return None, metric
    return not any((v > initial) if maximize else (v < initial) for v in seen), metric


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def learning_summary(study: Any) -> dict[str, Any]:
    """``n_did_not_learn`` and ``did_not_learn`` (trial numbers) of the COMPLETE and PRUNED trials, and the
    metric they were judged by (``learning_metric``)."""
    from optuna.trial import TrialState

    metric, maximize = objective_of(study)
    bad, judged = [], set()
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        if t.user_attrs.get(attrs.REPEAT_OF) is not None:  # not trained: its trial is judged
            continue
        flag, used = did_not_learn(t, metric, maximize)
        if flag is not None:
            judged.add(used)
        if flag:
            bad.append(t.number)
    return {"n_did_not_learn": len(bad), "did_not_learn": bad, "learning_metric": ", ".join(sorted(judged)) or metric}


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
    # what the trial ran with beyond its samples (lora.alpha, accumulation, effective batch: ftsweep.sweeper.derived)
    derived = sorted({k for t in trials for k in t.user_attrs.get(attrs.DERIVED) or {}}, key=lambda k: (k == "effective_batch", k))
    from ftsweep.sweeper.study import replaced_numbers

    rerun = replaced_numbers(trials)
    head = ["trial", "state", "value", *params, *derived, "steps", "runtime_s", "learned", "reason", "dir"]
    objective = objective_of(study)
    rows = []
    for t in trials:
        state = t.state.name + (" (re-run)" if t.number in rerun else "")
        if t.user_attrs.get(attrs.REPEAT_OF) is not None:  # proposed again: the earlier trial's value, not trained
            state += f" (repeat of {t.user_attrs[attrs.REPEAT_OF]})"
        value = t.values if t.values and len(t.values) > 1 else t.value
        steps = t.user_attrs.get(attrs.PRUNED_AT_STEP) or (max(t.intermediate_values) if t.intermediate_values else None)
        d = t.user_attrs.get(attrs.TRIAL_DIR)
        flat, judged = did_not_learn(t, *objective) if t.state.is_finished() and t.state.name != "FAIL" else (None, "")
        learned = None if flat is None else (f"NO: {judged} never beat its value before training" if flat else "yes")
        shown = t.user_attrs.get(attrs.DERIVED) or {}
        rows.append([t.number, state, value, *(t.params.get(p) for p in params), *(shown.get(k) for k in derived), steps,
                     t.user_attrs.get(attrs.RUNTIME_S), learned, t.user_attrs.get(attrs.REASON), Path(d).name if d else None])
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
    _drop_damaged_plotlyjs(plot_dir)
    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    metric = str((study.user_attrs.get("ftsweep:metrics") or ["objective"])[0])  # the axes say what is optimised
    kwargs = {"target": target, "target_name": metric} if multi else {"target_name": metric}
    status = {}
    names = study.user_attrs.get(attrs.METRICS) or []
    from optuna.trial import TrialState

    n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    for name in (*PLOTS, *(MULTI_PLOTS if multi else ())):
        if name == "param_importances" and n_complete < MIN_IMPORTANCE_TRIALS:
            status[name] = (f"skipped: {n_complete} complete trial{'s' * (n_complete != 1)}; parameter importances "
                            f"need at least {MIN_IMPORTANCE_TRIALS}")
            continue
        plot_kwargs = {} if name == "intermediate_values" else kwargs
        if name == "pareto_front":  # every objective on its own axis, the front highlighted
            plot_kwargs = {"target_names": [str(m) for m in names]} if len(names) == len(study.directions) else {}
        if name == "intermediate_values" and multi:
            status[name] = "skipped: multi-objective studies have no intermediate values"
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ax = getattr(vis_mpl, f"plot_{name}")(study, **plot_kwargs)
                _label_mpl(name, ax, study, metric, multi)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
                fig.set_size_inches(9, 5.5)
                fig.tight_layout()
                # (whole or not at all: a full disk left a 0-byte PNG in place of the earlier report's)
                write_atomic(plot_dir / f"{name}.png", lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=100))
                plt.close(fig)
                figure = getattr(vis, f"plot_{name}")(study, **plot_kwargs)
                _label_plotly(name, figure, study, metric, multi)
                write_atomic(plot_dir / f"{name}.html", lambda tmp, figure=figure: figure.write_html(
                    tmp, include_plotlyjs="directory"))
                status[name] = "ok"
            except Exception as err:
                plt.close("all")
                if write_trouble(err) is not None:  # a full disk is not a plot to skip: the report stops on it
                    raise
                status[name] = f"skipped: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
    return status


def _drop_damaged_plotlyjs(plot_dir: Path) -> None:
    """Remove ``plotly.min.js`` when it is not plotly's bundle whole (cut short by a disk that filled up while an
    earlier report wrote it): plotly writes it only when it is missing, so every later report's HTML plots stayed
    blank."""
    bundle = plot_dir / "plotly.min.js"
    if not bundle.is_file():
        return
    from plotly.offline import get_plotlyjs

    if bundle.stat().st_size != len(get_plotlyjs().encode("utf-8")):
        bundle.unlink()


PRUNED_LABEL = "pruned (last reported value)"


def _pruned_points(study: Any) -> tuple[list[int], list[float]]:
    """Pruned trials as (trial number, last reported value): Optuna's history plot leaves them out."""
    from optuna.trial import TrialState

    points = [(t.number, t.intermediate_values[max(t.intermediate_values)])
              for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if t.intermediate_values]
    return [n for n, _ in points], [v for _, v in points]


def _label_mpl(name: str, ax: Any, study: Any, metric: str, multi: bool) -> None:
    if name == "intermediate_values":
        ax.set_ylabel(f"{metric} at each evaluation")
    elif name == "optimization_history" and not multi:
        xs, ys = _pruned_points(study)
        if xs:
            ax.scatter(xs, ys, marker="x", color="grey", label=PRUNED_LABEL, zorder=3)
            ax.legend()


def _label_plotly(name: str, figure: Any, study: Any, metric: str, multi: bool) -> None:
    if name == "intermediate_values":
        figure.update_yaxes(title_text=f"{metric} at each evaluation")
    elif name == "optimization_history" and not multi:
        xs, ys = _pruned_points(study)
        if xs:
            figure.add_scatter(x=xs, y=ys, mode="markers", marker_symbol="x", marker_color="grey", name=PRUNED_LABEL)


def _stopped(summary: dict[str, Any]) -> bool:
    """Trials a killed or interrupted sweep left: running without their sweep process, or waiting to (re-)run."""
    return bool(summary.get("n_lost") or summary.get("n_waiting"))


def _counts(summary: dict[str, Any], then: str) -> str:
    """'2 complete, 0 pruned, 0 failed, 2 running[, of which 2 lost: ...][, 2 waiting to run]' and, when the sweep
    was stopped before its end, ``then`` + how to resume it (a waiting re-run of an interrupted trial counts
    towards the total: without it the counts summed to less than the trials)."""
    text = (f"{summary['n_complete']} complete, {summary['n_pruned']} pruned, {summary['n_failed']} failed, "
            f"{summary['n_running']} running")
    if summary.get("n_lost"):
        text += f", of which {summary['n_lost']} lost: their sweep process is gone"
    if summary.get("n_waiting"):
        text += f", {summary['n_waiting']} waiting to run"
    return text + (f"{then}run the sweep's command again to resume it" if _stopped(summary) else "")


def report_markdown(summary: dict[str, Any], table: str, plots: dict[str, str], has_best: bool,
                    pareto: str = "") -> str:
    lines = [f"# Sweep {summary['study_name']}", ""]
    lines.append(f"{summary['n_trials']} trials: {_counts(summary, ' (')}{')' if _stopped(summary) else ''} "
                 f"({_objectives(summary)}).")
    if pareto:
        lines += ["", pareto]
    elif summary["best_value"] is not None:
        lines += ["", f"**Best trial {summary['best_trial_number']}**: value {_fmt(summary['best_value'])}, "
                      f"params `{summary['best_params']}`, dir `{summary['best_trial_dir']}`."]
    if summary.get("all_tied_value") is not None:
        from ftsweep.sweeper.study import TIED_HINT

        lines += ["", f"**Warning**: all {summary['n_complete']} complete trials scored "
                      f"{_fmt(summary['all_tied_value'])}: {TIED_HINT}."]
    if summary.get("n_did_not_learn"):
        numbers = ", ".join(str(n) for n in summary["did_not_learn"])
        lines += ["", f"**Warning**: {summary['n_did_not_learn']} trial(s) never beat their value before training on "
                      f"{summary.get('learning_metric') or 'eval_loss'} (diverged or did not learn; their values are not "
                      f"results): trial(s) {numbers}."]
        if summary.get("best_trial_number") in summary["did_not_learn"]:
            lines += ["", "**The best trial did not learn either**: widen or move the search space."]
    if has_best:
        which = "the front's first trial" if pareto else "it"
        lines += ["", f"Reproduce {which}: see the command at the top of [best.yaml](best.yaml)."]
    lines += ["", "## Trials", "", table, "", "## Plots", ""]
    for name, state in plots.items():
        if state == "ok":
            lines.append(f"### {name.replace('_', ' ')}\n\n![{name}](plots/{name}.png)\n\n"
                         f"[interactive](plots/{name}.html)\n")
        else:
            lines.append(f"- {name}: {state}")
    return "\n".join(lines) + "\n"


def _objectives(summary: dict[str, Any]) -> str:
    """'minimize eval_loss' ('maximize exact_match, minimize eval_loss'); the directions alone without metrics."""
    directions, metrics = summary["directions"], summary.get("metrics") or []
    if len(metrics) != len(directions):
        return ", ".join(directions)
    return ", ".join(f"{d} {m}" for d, m in zip(directions, metrics))


# ------------------------------------------------------------------------------------ multi-objective
def pareto_section(study: Any) -> str:
    """``## Pareto front``: one row per non-dominated trial (its value on each metric, params, folder); ""
    for a single-objective study."""
    if len(study.directions) < 2:
        return ""
    from ftsweep.sweeper.study import pareto_front

    front = pareto_front(study)
    metrics = [str(m) for m in study.user_attrs.get(attrs.METRICS) or []]
    if len(metrics) != len(study.directions):
        metrics = [f"value {i}" for i in range(len(study.directions))]
    heads = [f"{m} ({d.name.lower()})" for m, d in zip(metrics, study.directions)]
    lines = ["## Pareto front", "",
             f"{len(front)} trial(s) that no other complete trial beats on every metric "
             f"({', '.join(heads)}); a better value on one metric costs a worse one on another."]
    if front:
        params = sorted({k for t in front for k in t.params})
        head = ["trial", *heads, *params, "dir"]
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for t in front:
            d = t.user_attrs.get(attrs.TRIAL_DIR)
            row = [t.number, *t.values, *(t.params.get(p) for p in params), Path(d).name if d else None]
            lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ generation
def generation_section(study: Any, n_examples: int = 5) -> str:
    """For a generation objective: its cost per trial and the best trial's first answers next to the worst
    complete trial's (from each trial's predictions.jsonl); "" when no trial generated anything."""
    from ftsweep import rundir
    from ftsweep.sweeper.study import best_trial

    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.user_attrs.get(attrs.TRIAL_DIR)]
    metrics = {t.number: rundir.read_metrics(Path(t.user_attrs[attrs.TRIAL_DIR])) or {} for t in done}
    costs = [(n, m["generation_eval_s"], m.get("generation_s_per_100_rows"), m.get("train_runtime"))
             for n, m in metrics.items() if "generation_eval_s" in m]
    if not costs:
        return ""
    lines = ["", "## Generation objective", "", "| trial | generation evals (s) | s per 100 rows | training (s) |",
             "|---|---|---|---|"]
    lines += [f"| {n} | {_fmt(s)} | {_fmt(per)} | {_fmt(train)} |" for n, s, per, train in sorted(costs)]
    best = best_trial(study)
    if best is None or len(study.directions) > 1:
        return "\n".join(lines) + "\n"
    sign = 1 if study.direction.name == "MAXIMIZE" else -1
    others = [t for t in done if t.number != best.number] or done
    worst = min(others, key=lambda t: sign * t.value)
    pairs = []
    for label, trial in (("best", best), ("worst", worst)):
        pairs.append((label, trial, rundir.read_predictions(Path(trial.user_attrs[attrs.TRIAL_DIR]))[:n_examples]))
    lines += ["", f"First {n_examples} validation answers of the best trial ({best.number}, value {_fmt(best.value)}) "
              f"and the worst complete trial ({worst.number}, value {_fmt(worst.value)}):", "",
              "| reference | best: prediction | worst: prediction |", "|---|---|---|"]
    for i in range(max(len(p[2]) for p in pairs)):
        cells = [pairs[0][2][i]["reference"] if i < len(pairs[0][2]) else ""]
        cells += [p[2][i]["prediction"] if i < len(p[2]) else "" for p in pairs]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return "`" + " ".join(str(text).split()).replace("|", "\\|").replace("`", "'")[:80] + "`"


# ------------------------------------------------------------------------------------------ best.yaml
def best_yaml(study: Any, best: Any, out_dir: Path) -> str:
    """An experiment file (``# @package _global_``) with the best trial's overrides.

    Group selections become ``override /<group>: <option>`` defaults entries, values become nested YAML.
    It is loaded from the directory above the sweep directory, as config group <sweep dir name>:
    ``ftsweep train --config-dir <parent> +<name>=best``.
    """
    from omegaconf import OmegaConf

    overrides = list(best.user_attrs.get(attrs.OVERRIDES) or _overrides_file(best))
    groups, values, skipped = _split_for_yaml(overrides)
    threads = _recorded_threads(best)
    pinned = threads is not None and not any(k == "trainer.num_threads" for k, _ in values)
    if pinned:
        values.append(("trainer.num_threads", threads))  # CPU losses depend on it: same count, same numbers
    _anchor_paths(values, best.user_attrs.get(attrs.TRIAL_DIR))  # the file runs from any folder
    value = best.values if len(study.directions) > 1 else best.value
    metrics = study.user_attrs.get(attrs.METRICS) or ["objective"]
    header = [
        "# @package _global_",
        f"# Run: {SweepDir(out_dir).rerun_best_command()}",
        f"# Best trial {best.number} of sweep {study.study_name}: {', '.join(metrics)} = {_fmt(value)} "
        f"({', '.join(d.name.lower() for d in study.directions)}); trial dir {best.user_attrs.get(attrs.TRIAL_DIR)}",
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


# Keys whose relative value is a path read from where the sweep ran (its trials' ``hydra.runtime.cwd``).
PATH_KEYS = ("data.path", "data.validation_path", "data.dataset_dir", "model.name_or_path", "init_from",
             "objective.include_path")


def _anchor_paths(values: list[tuple[str, Any]], trial_dir: str | None) -> None:
    """Relative paths the trial read (``data.path=데이터/학습 파일.jsonl``) made absolute from the folder the sweep
    ran in, so ``best.yaml``, whose header command names an absolute ``--config-dir``, finds the same files from
    any folder (it failed there: "data.path: no such file"). A value that is no existing path there (a Hub
    dataset or model name) stays as written."""
    from ftsweep import rundir
    from ftsweep.paths import PKG_SCHEME

    cwd = rundir.started_in(trial_dir) if trial_dir else None
    if cwd is None:
        return

    def anchored(v: Any) -> Any:
        if isinstance(v, list):
            return [anchored(x) for x in v]
        if not isinstance(v, str) or not v or v.startswith(PKG_SCHEME) or Path(v).expanduser().is_absolute():
            return v
        return str(cwd / v) if (cwd / v).exists() else v

    for i, (key, v) in enumerate(values):
        if key in PATH_KEYS:
            values[i] = (key, anchored(v))


def _recorded_threads(trial: Any) -> int | None:
    """The intra-op thread count the trial ran with (its manifest.json), if it recorded one."""
    from ftsweep import rundir
    from ftsweep.numerics import recorded_threads

    d = trial.user_attrs.get(attrs.TRIAL_DIR)
    return recorded_threads(rundir.read_manifest(Path(d))) if d else None


def _overrides_file(trial: Any) -> list[str]:
    from ftsweep import rundir

    d = trial.user_attrs.get(attrs.TRIAL_DIR)
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
        except Exception:  # not an override the best config can repeat: listed as skipped in the file
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
