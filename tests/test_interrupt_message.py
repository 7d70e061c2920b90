"""Ctrl-C in a single run that saved a checkpoint: the last line says it was interrupted and how to continue.
It read 'ftsweep: error: ; it saved step 70: continue from there with ...' (an empty reason: a plain
KeyboardInterrupt has no message, and the exception object itself is always true)."""

from __future__ import annotations

import sys
import types

import pytest

from ftsweep import cli, rundir


def test_ctrl_c_says_interrupted_then_how_to_continue(tmp_path, monkeypatch):
    def execute(cfg, run_dir):
        raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "ftsweep.train", types.SimpleNamespace(execute=execute))
    monkeypatch.setattr(rundir, "resume_hint", lambda run_dir: "it saved step 70: continue from there with X")
    with pytest.raises(KeyboardInterrupt) as err:
        cli._train_in(types.SimpleNamespace(), tmp_path, single_run=False)
    assert str(err.value) == "interrupted; it saved step 70: continue from there with X"


def test_sigterm_keeps_its_own_reason(tmp_path, monkeypatch):
    def execute(cfg, run_dir):
        raise KeyboardInterrupt("terminated (SIGTERM)")

    monkeypatch.setitem(sys.modules, "ftsweep.train", types.SimpleNamespace(execute=execute))
    monkeypatch.setattr(rundir, "resume_hint", lambda run_dir: None)
    with pytest.raises(KeyboardInterrupt) as err:
        cli._train_in(types.SimpleNamespace(), tmp_path, single_run=False)
    assert str(err.value) == "terminated (SIGTERM)"
