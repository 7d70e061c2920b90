"""The one error root (ftsweep/errors.py): every user error is a UsageError, one printing function maps
errors to exit codes and masks secrets, and library code never exits the process itself."""

from __future__ import annotations

import ast
import io

import pytest
from test_structure import modules

from ftsweep import errors
from ftsweep.config.compose import ConfigFailure
from ftsweep.config.errors import ConfigError
from ftsweep.data.errors import DataError
from ftsweep.memory import MemoryInfeasible
from ftsweep.sweeper.grammar import SweepInputError
from ftsweep.sweeper.runner import SweepAborted


def test_old_names_are_the_classes_of_the_one_root():
    for cls in (ConfigError, ConfigFailure, DataError, SweepInputError, MemoryInfeasible):
        assert issubclass(cls, errors.UsageError), cls
        assert getattr(errors, cls.__name__) is cls
    assert SweepAborted is errors.SweepAborted and issubclass(SweepAborted, errors.Failure)
    assert issubclass(DataError, ValueError) and issubclass(SweepInputError, ValueError)  # old bases kept


@pytest.mark.parametrize(("err", "code", "line"), [
    (ConfigError("lora.r", "must be >= 1 (got 0)"), 2, "ftsweep: error: lora.r: must be >= 1 (got 0)"),
    (DataError("d.jsonl line 3", "expected a string", "output"), 2,
     "ftsweep: error: d.jsonl line 3: field 'output': expected a string"),
    (SweepInputError("hydra.sweeper.storage: cannot open postgresql://u:hunter22@db/x\n(refused)"), 2,
     "ftsweep: error: hydra.sweeper.storage: cannot open postgresql://u:***@db/x (refused)"),
    (MemoryInfeasible("oom: estimated 9 MiB > free 1 MiB"), 1, "ftsweep: error: oom: estimated 9 MiB > free 1 MiB"),
    (SweepAborted("3 of 4 trials failed"), 1, "ftsweep: error: 3 of 4 trials failed"),
    (KeyboardInterrupt(), 130, "ftsweep: error: interrupted"),
])
def test_report_prints_one_masked_line_and_returns_the_code(err, code, line):
    out = io.StringIO()
    assert errors.report(err, out) == code
    assert out.getvalue().splitlines() == [line]


def test_report_masks_secret_environment_values(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_abcdefgh1234")
    out = io.StringIO()
    assert errors.report(errors.UsageError("model: 401 for token hf_abcdefgh1234"), out) == 2
    assert out.getvalue() == "ftsweep: error: model: 401 for token ***\n"


def test_a_failed_run_shows_its_cause_then_one_line():
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError as cause:
            raise errors.RunFailed("RuntimeError: boom (see out/x)") from cause
    except errors.RunFailed as err:
        out = io.StringIO()
        assert errors.report(err, out) == 1
    text = out.getvalue()
    assert text.startswith("Traceback") and "RuntimeError: boom\n" in text
    assert text.splitlines()[-1] == "ftsweep: run failed: RuntimeError: boom (see out/x)"


# Only these entry points turn an error into an exit code; library code raises.
ENTRY_POINTS = {"ftsweep.cli", "ftsweep.__main__", "ftsweep.publish", "ftsweep.lr_find", "ftsweep.sweeper.trial",
                "ftsweep.sweeper.worker"}


def test_library_code_never_exits_or_prints_errors_itself():
    bad = []
    for name, path in modules().items():
        if name in ENTRY_POINTS or name == "ftsweep.errors":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("sys.exit", "exit", "os._exit"):
                bad.append(f"{name}:{node.lineno} {ast.unparse(node.func)}")
            if isinstance(node, ast.Raise) and node.exc is not None and "SystemExit" in ast.unparse(node.exc):
                bad.append(f"{name}:{node.lineno} raise SystemExit")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("ftsweep: error"):
                bad.append(f"{name}:{node.lineno} prints 'ftsweep: error'")
    assert not bad, bad


def test_a_run_on_a_disk_that_filled_up_still_ends_in_its_one_line(tmp_path, monkeypatch):
    """The disk fills up mid-run (a checkpoint save): writing failure.json failed too, inside the handler, so the
    run ended in a second traceback from write_json with no 'run failed' line, and left failure.json.tmp behind."""
    import errno
    from pathlib import Path

    from ftsweep import train

    def full(self, *args, **kwargs):
        self.touch()  # (the file is created, its content does not fit)
        raise OSError(errno.ENOSPC, "No space left on device")

    def run(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train, "run", run)
    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(errors.RunFailed) as err:
        train.execute(None, tmp_path)
    assert str(err.value) == (f"OSError: [Errno 28] No space left on device (see {tmp_path}; failure.json not "
                              "written: No space left on device)")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no failure.json.tmp left behind
    out = io.StringIO()
    assert errors.report(err.value, out) == 1
    assert out.getvalue().strip().splitlines()[-1].startswith("ftsweep: run failed: OSError: [Errno 28] No space")


def _write_failures(run_dir: str, rank: int, times: int, errors) -> None:
    from pathlib import Path

    from ftsweep import rundir

    notes = [rundir.record_failure(Path(run_dir), f"rank {rank} failed {i} " + "x" * 2000, "RuntimeError")
             for i in range(times)]
    errors.put(sum(bool(n) for n in notes))


def test_failure_json_written_by_two_ranks_at_once(tmp_path):
    """The ranks of a DDP run that fails together each record failure.json: each one is written whole, none is
    lost (with one temp name shared by the ranks, a rank's rename found it gone: 'failure.json not written')."""
    import json
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_write_failures, args=(str(tmp_path), rank, 2000, errors)) for rank in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [errors.get(timeout=5) for _ in procs] == [0, 0]
    assert json.loads((tmp_path / "failure.json").read_text())["reason"].startswith("rank ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failure.json"]


def test_a_long_failure_reason_is_scrubbed_in_linear_time(tmp_path):
    """Every JSON file is scrubbed of URL passwords; the URL pattern started a scan at every letter of a long word,
    quadratic in its length (5 ms for a 2,000-character reason, ~12 s for 100,000). The URL in it is still masked."""
    import json
    import time
    from pathlib import Path

    from ftsweep import rundir

    reason = "x" * 100_000 + " postgresql://u:hunter22@db/x"
    start = time.perf_counter()
    assert rundir.record_failure(Path(tmp_path), reason, "RuntimeError") == ""
    assert time.perf_counter() - start < 2.0
    assert json.loads((tmp_path / "failure.json").read_text())["reason"].endswith(" postgresql://u:***@db/x")
