"""scripts/test.sh runs pytest-xdist with --dist loadgroup: the tests marked xdist_group(NAME) go to one worker, so
the module fixtures they share are built once. With pytest 9 and pytest-xdist 3.8 the mark did nothing (xdist sets
``item._nodeid``, which pytest 9 no longer reads): each grouped test was dealt out alone and a module fixture was
built on both workers (test_ddp.py's torchrun run, test_stages.py's SFT run, test_postgres.py's server ...).
tests/conftest.py now gives grouped tests their ``@NAME`` id itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = '''
import os
import time

import pytest

SHARED = pytest.mark.xdist_group("probe")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    with open(os.environ["PROBE_LOG"], "a") as f:
        f.write(f"built {os.getpid()}\\n")
    time.sleep(0.5)


def _ran():
    with open(os.environ["PROBE_LOG"], "a") as f:
        f.write(f"ran {os.getpid()}\\n")


@SHARED
@pytest.mark.parametrize("i", range(6))
def test_grouped(shared, i):
    _ran()


def test_alone_a():
    time.sleep(0.3)


def test_alone_b():
    time.sleep(0.3)
'''

CONFTEST = '''
import importlib.util

_spec = importlib.util.spec_from_file_location("ftsweep_tests_conftest", {path!r})
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
pytest_collection_modifyitems = _mod.pytest_collection_modifyitems
'''


def test_a_group_runs_on_one_worker_and_builds_its_module_fixture_once(tmp_path):
    (tmp_path / "conftest.py").write_text(CONFTEST.format(path=str(Path(__file__).with_name("conftest.py"))))
    (tmp_path / "test_probe.py").write_text(PROBE)
    log = tmp_path / "probe.log"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup",
                        "-o", "addopts=", "--rootdir", str(tmp_path), str(tmp_path / "test_probe.py")],
                       check=False, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PROBE_LOG": str(log)})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = log.read_text().splitlines()
    built = [ln for ln in lines if ln.startswith("built ")]
    ran = {ln.split()[1] for ln in lines if ln.startswith("ran ")}
    assert len(built) == 1 and ran == {built[0].split()[1]}, lines  # one worker: the fixture built once
