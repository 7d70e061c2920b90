"""objective=lm_eval: lm-evaluation-harness tasks on the in-memory model (adapter active).

The task is our own: a 2-choice multiple_choice task (tests/data/lm_eval/tiny_mc.yaml) over 8 bundled rows
(tests/data/lm_eval/tiny_mc.jsonl), written into a temporary folder with the JSONL's absolute path so the
tests run from any working directory. Only the bad-input cases that name an lm_eval task of its own build
lm_eval's full task index (~5 s, once per process)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import FAST

pytest.importorskip("lm_eval")

DATA = Path(__file__).parent / "data" / "lm_eval"
TASK = "ftsweep_tiny_mc"


def _task_folder(folder: Path) -> Path:
    folder.mkdir()
    text = (DATA / "tiny_mc.yaml").read_text().replace("tests/data/lm_eval/tiny_mc.jsonl", str(DATA / "tiny_mc.jsonl"))
    (folder / "tiny_mc.yaml").write_text(text)
    return folder


@pytest.fixture
def task_dir(tmp_path) -> Path:
    """A folder with tiny_mc.yaml whose data_files is the bundled JSONL's absolute path."""
    return _task_folder(tmp_path / "tasks")


@pytest.fixture(scope="module")
def bad_input_task_dir(tmp_path_factory) -> Path:
    """The bad-input cases' task folder, one for the module: lm_eval's full task index, which three cases build,
    is cached per process and include_path (ftsweep.config.harness.task_manager), so they build it once, as one
    process would, instead of once per case (~5 s each). Holds lost.yaml too (a task whose data file is missing)."""
    folder = _task_folder(tmp_path_factory.mktemp("bad_input") / "tasks")
    lost = (DATA / "tiny_mc.yaml").read_text().replace(f"task: {TASK}", "task: ftsweep_lost_mc").replace(
        "tests/data/lm_eval/tiny_mc.jsonl", "lost.jsonl")
    (folder / "lost.yaml").write_text(lost)
    lower = (DATA / "tiny_mc.yaml").read_text().replace(f"task: {TASK}", "task: ftsweep_lower_mc").replace(
        "tests/data/lm_eval/tiny_mc.jsonl", str(DATA / "tiny_mc.jsonl"))
    head, tail = lower.split("  - metric: acc_norm")
    (folder / "lower.yaml").write_text(head + "  - metric: acc_norm" + tail.replace("higher_is_better: true",
                                                                                   "higher_is_better: false", 1))
    return folder


def _perturb_adapter(model) -> None:
    """LoRA B starts at zero (the adapter is a no-op): random B makes the adapter change the scores."""
    import torch

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)


def _hand_accuracy(model, tokenizer) -> tuple[float, list[list[float]]]:
    """Score each row as lm_eval's multiple_choice does: context "Question: ...\\nAnswer:", continuation
    " <choice>", encoded together and split after the context's tokens; the sum of the continuation's
    log-probabilities; the argmax against the gold label."""
    import torch

    rows = [json.loads(line) for line in (DATA / "tiny_mc.jsonl").read_text().splitlines()]
    correct, scores = 0, []
    model.eval()
    with torch.no_grad():
        for row in rows:
            context = f"Question: {row['question']}\nAnswer:"
            lls = []
            for choice in row["choices"]:
                whole = tokenizer.encode(context + " " + choice)
                n_ctx = len(tokenizer.encode(context))
                logits = model(input_ids=torch.tensor([whole[:-1]])).logits[0].float()
                logp = torch.log_softmax(logits, dim=-1)
                lls.append(sum(logp[i - 1, whole[i]].item() for i in range(n_ctx, len(whole))))
            scores.append(lls)
            correct += int(max(range(len(lls)), key=lls.__getitem__) == row["label"])
    return correct / len(rows), scores


def test_harness_accuracy_equals_scoring_the_rows_by_hand(compose, task_dir):
    from ftsweep.model import apply_lora, load_model, load_tokenizer
    from ftsweep.objectives.harness import HarnessEvaluator

    cfg = compose("objective=lm_eval", f"objective.tasks=[{TASK}]", f"objective.include_path={task_dir}")
    tokenizer = load_tokenizer(cfg)
    model = apply_lora(cfg, load_model(cfg, tokenizer))
    _perturb_adapter(model)
    pad, side = tokenizer.pad_token, tokenizer.padding_side
    expected, scores = _hand_accuracy(model, tokenizer)
    with model.disable_adapter():
        _, base_scores = _hand_accuracy(model, tokenizer)
    assert scores != base_scores  # the adapter changes the scores: the harness must see it active
    model.train()
    evaluator = HarnessEvaluator(cfg, tokenizer)
    value, per_task, samples = evaluator.evaluate(model, final=True)
    assert value == pytest.approx(expected)
    assert per_task[TASK]["acc"] == pytest.approx(expected) and "acc_norm" in per_task[TASK]
    assert samples[TASK] == {"original": 8, "effective": 8}
    assert model.training  # the trainer's mode is restored
    assert (tokenizer.pad_token, tokenizer.padding_side) == (pad, side)  # the trainer's tokenizer untouched


def test_include_path_alone_does_not_build_lm_eval_task_index(task_dir):
    from types import SimpleNamespace

    from ftsweep.config import harness

    obj = SimpleNamespace(tasks=[TASK], include_path=str(task_dir))
    assert not harness.needs_defaults([TASK], str(task_dir))
    manager = harness.resolve(obj)
    assert manager is harness.resolve(obj)  # cached
    assert TASK in manager.all_tasks and len(manager.all_tasks) < 10


def test_pick_metric_by_name_filter_or_first():
    from ftsweep.config.errors import ConfigError
    from ftsweep.objectives.harness import pick_metric

    values = {"alias": "t", "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.1,
              "exact_match,flexible-extract": 0.5}
    assert pick_metric(values, "exact_match") == ("exact_match,strict-match", 0.25)
    assert pick_metric(values, "exact_match,flexible-extract")[1] == 0.5
    assert pick_metric(values, None)[1] == 0.25
    with pytest.raises(ConfigError, match="objective.task_metric"):
        pick_metric(values, "acc")


def test_train_run_writes_objective_and_per_task_metrics(task_dir, tmp_path, cache_dir, capsys):
    """A one-off ``ftsweep train objective=lm_eval`` (in-process CLI), values at evaluations too."""
    from ftsweep.cli import main

    run_dir = tmp_path / "run"
    code = main(["train", f"cache_dir={cache_dir}", *FAST, "objective=lm_eval", f"objective.tasks=[{TASK}]",
                 f"objective.include_path={task_dir}", "objective.lm_eval_at_evals=true",
                 f"hydra.run.dir={run_dir}"])
    assert code == 0, capsys.readouterr().err[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    assert metrics["objective"] == metrics["lm_eval"] == metrics["lm_eval_results"][TASK]["acc"]
    assert set(metrics["lm_eval_results"][TASK]) >= {"acc", "acc_norm", "acc_stderr"}
    assert [h["step"] for h in metrics["objective_history"]] == [0, 6, 12]
    assert metrics["initial_lm_eval"] == metrics["objective_history"][0]["lm_eval"]
    # the last evaluation (step 12) ran with 0 bootstrap iterations; the final one is run again with stderr
    assert metrics["lm_eval_evals"] == 4 and metrics["lm_eval_batch_size"] == 8


def test_pruning_sees_lm_eval_at_evaluations(compose, task_dir, tmp_path):
    from ftsweep.sweeper.trial import _make_pruning_callback
    from ftsweep.train import run

    class Reporter:
        def __init__(self):
            self.seen = []

        def report(self, value, step, judge=True):
            self.seen.append((step, value))
            return step >= 6

        def heartbeat(self, force=False):
            pass

    reporter = Reporter()
    cfg = compose(*FAST, "objective=lm_eval", f"objective.tasks=[{TASK}]", f"objective.include_path={task_dir}",
                  "objective.lm_eval_at_evals=true", "objective.limit=4")
    metrics = run(cfg, tmp_path, [_make_pruning_callback(reporter, "lm_eval")])
    assert metrics["status"] == "pruned" and metrics["pruned_at_step"] == 6
    assert [s for s, _ in reporter.seen] == [0, 6]
    assert "objective" not in metrics and metrics["lm_eval_subset"] == reporter.seen[-1][1]


# ------------------------------------------------------------------------------------------ bad input
RUN = ["train", "model=tiny", "logger=none", "objective=lm_eval"]
CASES = [
    ("not_installed", [*RUN, f"objective.tasks=[{TASK}]"], ["objective.metric", "pip install ftsweep[eval]"]),
    ("no_tasks", RUN, ["objective.tasks", "at least one"]),
    ("unknown_own_task", [*RUN, "objective.tasks=[ftsweep_tiny_mcq]"], ["objective.tasks", "'ftsweep_tiny_mcq'",
                                                                        f"did you mean {TASK}"]),
    ("unknown_lm_eval_task", [*RUN, "objective.tasks=[arc_eazy]"], ["objective.tasks", "'arc_eazy'", "arc_easy"]),
    ("hub_task_offline", [*RUN, "objective.tasks=[arc_easy]"], ["objective.tasks", "task arc_easy", "HF_HUB_OFFLINE"]),
    ("include_path_missing", [*RUN, f"objective.tasks=[{TASK}]", "objective.include_path=nowhere"],
     ["objective.include_path", "nowhere does not exist"]),
    ("data_file_missing", [*RUN, "objective.tasks=[ftsweep_lost_mc]"], ["objective.tasks", "task ftsweep_lost_mc",
                                                                       "lost.jsonl not found"]),
    ("task_metric_not_reported", [*RUN, f"objective.tasks=[{TASK}]", "objective.task_metric=f1"],
     ["objective.task_metric", "acc, acc_norm", "'f1'"]),
    # a metric the task declares better lower, searched the way its name says (up): the worst trial would win
    ("direction_against_the_task", [*RUN, "objective.tasks=[ftsweep_lower_mc]", "objective.task_metric=acc_norm"],
     ["objective.direction", "maximize for acc_norm of task ftsweep_lower_mc", "higher_is_better: false",
      "set objective.direction=minimize"]),
    ("limit_zero", [*RUN, f"objective.tasks=[{TASK}]", "objective.limit=0"], ["objective.limit"]),
    ("early_stopping_without_evals", [*RUN, f"objective.tasks=[{TASK}]", "trainer.early_stopping_patience=2"],
     ["trainer.early_stopping_patience", "objective.lm_eval_at_evals=true"]),
]


@pytest.fixture
def project(tmp_path, monkeypatch, cache_dir):
    import types

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for var in ("HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE"):  # arc_easy must not be in a local cache
        monkeypatch.setenv(var, str(tmp_path / "hf" / var))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    stub = types.ModuleType("ftsweep.train")  # a case that wrongly passes must not train
    stub.execute = lambda cfg, run_dir, *a, **k: {"status": "complete", "objective": 1.0}
    monkeypatch.setitem(sys.modules, "ftsweep.train", stub)
    return work


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.xdist_group("lm_eval_bad_input")  # one worker: the cached task index is built once (scripts/test.sh)
@pytest.mark.parametrize(("argv", "texts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_lm_eval_input_is_one_line_exit_2(project, bad_input_task_dir, monkeypatch, capsys, argv, texts, request):
    from ftsweep.cli import main

    argv = list(argv)
    if "include_path" not in " ".join(argv):
        argv.append(f"objective.include_path={bad_input_task_dir}")
    if "not_installed" in request.node.name:
        monkeypatch.setitem(sys.modules, "lm_eval", None)  # find_spec answers None: not installed
    before = _tree(project)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err[-3000:])
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("ftsweep: error: "), lines[0]
    for text in texts:
        assert text in lines[0], (text, lines[0])
    assert "Traceback" not in out + err
    assert _tree(project) == before


@pytest.mark.xdist_group("lm_eval_bad_input")
def test_the_direction_a_task_declares_is_accepted_and_lm_evals_defaults_apply(project, bad_input_task_dir, capsys):
    """objective.direction=minimize for the task's lower-is-better metric passes; with no higher_is_better in the
    metric_list, lm_eval's registry says (brier_score: lower, acc: higher)."""
    from ftsweep.cli import main
    from ftsweep.config.harness import declared_direction

    code = main([*RUN, "objective.tasks=[ftsweep_lower_mc]", "objective.task_metric=acc_norm",
                 "objective.direction=minimize", f"objective.include_path={bad_input_task_dir}"])
    assert code in (0, None), capsys.readouterr().err[-2000:]
    assert declared_direction({"metric_list": [{"metric": "brier_score"}]}, None) == ("brier_score", "minimize")
    assert declared_direction({"metric_list": [{"metric": "acc"}, {"metric": "mine"}]}, None) == ("acc", "maximize")
    assert declared_direction({"metric_list": [{"metric": "mine"}]}, "mine") is None  # nobody says: not checked


def test_help_and_composition_do_not_import_lm_eval(compose):
    import subprocess

    code = ("import sys; from ftsweep.config.compose import compose; "
            "compose(['objective=lm_eval', 'objective.tasks=[x]'], check=False); "
            "from ftsweep.cli import main; "
            "print('lm_eval' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]


# --------------------------------------------------------------------------------------------- sweep
@pytest.mark.slow
def test_a_sweep_optimises_lm_eval(tmp_path, task_dir, cache_dir):
    from sweep_helpers import load, run, sweep_args

    sd = tmp_path / "sweep"
    # 2 steps a trial: the claims are about the objective the sweep ranks, not about what training reaches
    fast = [o for o in FAST if not o.startswith(("trainer.max_steps", "trainer.eval_steps"))]
    args = sweep_args(sd, *fast, "trainer.max_steps=2", "trainer.eval_steps=2", f"cache_dir={cache_dir}",
                      "objective=lm_eval", f"objective.tasks=[{TASK}]",
                      f"objective.include_path={task_dir}", n_trials=2)
    r = run(args, tmp_path, timeout=600, fake=False)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(sd)
    assert study.directions[0].name == "MAXIMIZE"
    for t in study.trials:
        assert t.state.name == "COMPLETE"
        metrics = json.loads((sd / f"trial_{t.number}" / "metrics.json").read_text())
        assert t.values[0] == metrics["objective"] == metrics["lm_eval"]
        assert TASK in metrics["lm_eval_results"]
