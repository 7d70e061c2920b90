"""One owner per name: RunDir / SweepDir own the file names of a run and a sweep folder, and
ftsweep.sweeper.attrs the names of trial and study attributes (read from the source with ast)."""

from __future__ import annotations

import ast

from test_structure import modules

from ftsweep.rundir import RunDir
from ftsweep.sweepdir import SweepDir
from ftsweep.sweeper import attrs

# ("adapter" is also an ordinary word in printed tables, so it is not scanned for; RunDir.adapter names it.)
FILE_NAMES = {"trial.log", "study.db", "study.journal", ".ftsweep.lock", "summary.json", "best.yaml", "metrics.json",
              "failure.json", "manifest.json", "log_history.json", "report.md", "trials.md"}
OWNERS = {"ftsweep.rundir", "ftsweep.sweepdir"}


def _string_constants(name):
    tree = ast.parse(modules()[name].read_text(encoding="utf-8"))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_run_and_sweep_file_names_are_spelled_only_by_their_owners():
    bad = [f"{name}:{line} {value!r}" for name in modules() if name not in OWNERS
           for line, value in _string_constants(name) if value in FILE_NAMES]
    assert not bad, bad


def test_trial_attributes_are_set_only_through_attrs():
    bad = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("set_user_attr", "set_trial_user_attr")
                    and any(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args)):
                bad.append(f"{name}:{node.lineno}")
    assert not bad, bad


def test_folders_name_their_files(tmp_path):
    run = RunDir(tmp_path / "trial_3")
    assert run.metrics == tmp_path / "trial_3" / "metrics.json"
    assert run.saved_model(lora=True).name == "adapter" and run.saved_model(lora=False).name == "model"
    assert run.config == tmp_path / "trial_3" / ".hydra" / "config.yaml"
    sweep = SweepDir(tmp_path)
    assert sweep.default_storage_url() == f"sqlite:///{tmp_path}/study.db"
    assert sweep.default_storage_url("journal") == f"journal:{tmp_path}/study.journal"
    assert sweep.existing_storage_url() is None and sweep.read_summary() is None
    sweep.study_journal.write_text("")
    assert sweep.existing_storage_url() == f"journal:{tmp_path.resolve()}/study.journal"
    sweep.summary.write_text('{"study_name": "s"}')
    assert sweep.read_summary() == {"study_name": "s"}


def test_trial_attrs_read_typed():
    from types import SimpleNamespace

    trial = SimpleNamespace(user_attrs={"trial_dir": "/x/trial_1", "overrides": ["a=1"], "retry_of": 0,
                                        "ftsweep:replaces": 1, "ftsweep:rerun": 1, "reason": "oom: x", "runtime_s": 2.5})
    a = attrs.TrialAttrs.of(trial)
    assert (str(a.trial_dir), a.overrides, a.retry_of, a.replaces, a.attempt, a.reason, a.runtime_s, a.status) == (
        "/x/trial_1", ("a=1",), 0, 1, 1, "oom: x", 2.5, None)
