"""Shared fixtures: compose the real config and shrink it; the tiny model is built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before anything imports wandb / HF libraries: no network, no telemetry, everything under tmp.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DISABLE_MLFLOW_INTEGRATION", "TRUE")

# Under pytest-xdist the workers share the machine's cores: each worker's torch (and the processes its tests
# start) gets its share of intra-op threads, as the sweeper gives its trials, so that the workers' OpenMP
# threads do not oversubscribe the cores. An OMP_NUM_THREADS already set wins; tests that need it unset unset it.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    from ftsweep.numerics import ENV, intra_op_share  # torch-free

    if share := intra_op_share(int(os.environ["PYTEST_XDIST_WORKER_COUNT"])):
        os.environ[ENV] = share

# The test process is an entry point like `ftsweep`: it registers ftsweep's Hydra plugins itself (an
# editable install hides them from Hydra's discovery; ftsweep.config never registers them).
from hydra_plugins.ftsweep_sweeper.ftsweep_searchpath import register as _register_hydra_plugins

_register_hydra_plugins()

# absl's log handler (imported with rouge_score by objective=rouge_l) keeps the stderr of the moment it was
# imported and closes it when Hydra reconfigures logging, unless that stream is sys.stderr then. In a test process
# it was pytest's capture file, so a later in-process multirun under capsys closed it and every test after it on
# that worker failed ("I/O operation on closed file"). Its handler writes to the real stderr here, which it never
# closes.
try:
    import absl.logging as _absl_logging
except ImportError:
    pass
else:
    import sys as _sys

    _absl_logging.get_absl_handler().python_handler.stream = _sys.__stderr__

# Small, fast settings shared by tests that train.
FAST = [
    "data.max_rows=120",
    "data.cutoff_len=128",
    "trainer.max_steps=12",
    "trainer.eval_steps=6",
    "trainer.logging_steps=2",
    "logger=none",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache (tiny model, tokenized data) for the whole session, shared with subprocesses and, under
    pytest-xdist, with the other workers (its entries are written atomically under a lock)."""
    if os.environ.get("FTSWEEP_TEST_CACHE"):
        path = Path(os.environ["FTSWEEP_TEST_CACHE"])
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        path = tmp_path_factory.getbasetemp().parent / "ftsweep-cache"
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("ftsweep-cache")
    os.environ["FTSWEEP_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(cache_dir) -> Path:
    """The tiny model built into the session cache (for tests whose output must not show its one-off build)."""
    from ftsweep.config.compose import compose
    from ftsweep.tiny import ensure_tiny, spec_from_cfg

    return ensure_tiny(spec_from_cfg(compose([f"cache_dir={cache_dir}", "model=tiny"]).model.tiny), cache_dir)


@pytest.fixture(autouse=True)
def _not_verbose(monkeypatch):
    """Every test starts without FTSWEEP_VERBOSE (``-v`` sets it in the process, for the sweep trials it starts):
    one test's -v never makes another's subprocesses verbose."""
    monkeypatch.delenv("FTSWEEP_VERBOSE", raising=False)


@pytest.fixture
def compose(cache_dir):
    """compose(*overrides) -> validated DictConfig of conf/train.yaml."""
    from ftsweep.config.compose import compose as _compose

    def _c(*overrides: str, check: bool = True):
        return _compose([f"cache_dir={cache_dir}", *overrides], check=check)

    return _c


@pytest.fixture
def wandb_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    return tmp_path


@pytest.fixture
def nan_loss_from(monkeypatch):
    """``nan_loss_from(k)``: trl's training loss is NaN from its k-th step on (a diverged step, as bf16
    gives on a GPU at a learning rate far too high); the step still runs its backward pass."""

    def start(k: int) -> None:
        from trl import SFTTrainer

        real, calls = SFTTrainer.compute_loss, []

        def poisoned(self, *args, **kwargs):
            out = real(self, *args, **kwargs)
            calls.append(1)
            if len(calls) < k:
                return out
            return (out[0] * float("nan"), *out[1:]) if isinstance(out, tuple) else out * float("nan")

        monkeypatch.setattr(SFTTrainer, "compute_loss", poisoned)

    return start


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Modules with slow tests or an xdist group run first, each module's tests together and in their order (so
    module fixtures are built once): pytest-xdist deals tests out in this order, and long tests dealt out last
    left one worker running them while the other had finished (the suite's wall time is the busier worker's)."""
    slow: dict[str, bool] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        slow[module] = slow.get(module, False) or any(item.iter_markers("slow")) or any(item.iter_markers("xdist_group"))
    items.sort(key=lambda item: not slow[item.nodeid.split("::")[0]])  # stable: the rest keeps its order
    if getattr(config.option, "loadgroup", False):  # set in a pytest-xdist worker under --dist loadgroup
        _xdist_group_ids(items)


def _xdist_group_ids(items) -> None:
    """A pytest-xdist worker (--dist loadgroup): give each test marked xdist_group(NAME) its ``@NAME`` node id
    suffix, by which the controller sends a group to one worker. pytest-xdist 3.8 writes ``item._nodeid``, which
    pytest 9 no longer reads (the id is ``item._id``): every group was dealt out test by test, so a module's
    fixtures were built once per worker (pytest-dev/pytest-xdist#1386, open; its pull request #1388 sets the
    structured id the same way)."""
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        if not names or "@" in item.nodeid.rsplit("]", 1)[-1]:
            continue  # no group, or pytest-xdist's own suffix took effect (pytest < 9)
        grouped = f"{item.nodeid}@{'_'.join(names)}"
        if hasattr(item, "_id"):
            from _pytest.nodeid import NodeId

            item._id = NodeId.parse(grouped)
        else:
            item._nodeid = grouped
