"""Secrets: credentials given as overrides are refused (one line naming the environment variable); URL
passwords (storage URLs) are masked in every file a run or a sweep writes and in every message."""

from __future__ import annotations

import sys
import types

import pytest
from sweep_helpers import run, sweep_args

from ftsweep.cli import main
from ftsweep.tracking import mask_url_passwords, secret_override_env

PLANTED = "PLANTEDpw9"
URL = f"postgresql://alice:{PLANTED}@db.example.org:5432/optuna"


@pytest.mark.parametrize(("override", "env"), [
    ("+hf_token=hf_abcdef123", "HF_TOKEN"),
    ("++hub_token=hf_abcdef123", "HF_TOKEN"),
    ("+token=abc", "HF_TOKEN"),
    ("+logger.api_key=abc123", "WANDB_API_KEY"),
    ("+wandb_api_key=abc123", "WANDB_API_KEY"),
    ("+openai_api_key=sk-1", "OPENAI_API_KEY"),
    ("+db_password=hunter2", "PGPASSWORD"),
    ("+secret=s3", "WANDB_API_KEY (W&B) or HF_TOKEN (Hub)"),
    ("+logger.access_token=x", "HF_TOKEN"),
])
def test_secret_overrides_are_refused(tmp_path, monkeypatch, capsys, override, env):
    monkeypatch.chdir(tmp_path)
    for argv in (["train", "model=tiny", "logger=none", override], ["train", "-m", "sweep=quickstart", override]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        key = override.split("=", 1)[0].lstrip("+")
        assert len(err) == 1 and err[0].startswith(f"ftsweep: error: {key}: secrets are read from the environment")
        assert env in err[0] and override.split("=", 1)[1] not in err[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["model.pad_token", "data.eos_token", "data.special_tokens", "max_new_tokens",
                                 "tokenizer", "data.columns.token_count"])
def test_tokenizer_settings_are_no_secrets(key):
    assert secret_override_env(key) is None


def test_mask_url_passwords():
    assert mask_url_passwords(f"storage {URL} and 'mysql+pymysql://u:p@h/d'") == (
        "storage postgresql://alice:***@db.example.org:5432/optuna and 'mysql+pymysql://u:***@h/d'")
    assert mask_url_passwords("postgresql://u@/db?host=/tmp/sock sqlite:////a/b.db") == \
        "postgresql://u@/db?host=/tmp/sock sqlite:////a/b.db"


def _stub_train(monkeypatch, seen: list) -> None:
    """Replace the training recipe (torch) by a stub that records the config it was given."""
    stub = types.ModuleType("ftsweep.train")

    def execute(cfg, run_dir, *args, **kwargs):
        seen.append(cfg.notes)
        return {"status": "complete", "objective": 1.0}

    stub.execute = execute
    monkeypatch.setitem(sys.modules, "ftsweep.train", stub)


def _grep(root, text):
    return [str(p) for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_a_trial_masks_url_passwords_in_its_hydra_files(tmp_path, monkeypatch):
    from ftsweep.sweeper import trial

    seen: list = []
    _stub_train(monkeypatch, seen)
    monkeypatch.setattr(trial, "trial_callbacks", lambda ctx: [])
    monkeypatch.setenv("FTSWEEP_TRIAL_ID", "1")
    monkeypatch.setenv("FTSWEEP_STORAGE", URL)
    monkeypatch.setenv("FTSWEEP_TRIAL_NUMBER", "0")
    sd = tmp_path / "s"
    code = trial.main(["model=tiny", "logger=none", f"notes='{URL}'", f"hydra.sweep.dir={sd}",
                       "hydra.sweep.subdir=trial_0", f"hydra.sweeper.storage='{URL}'"])
    assert code == 0 and seen == [URL]  # the run itself gets the real value
    assert (sd / "trial_0" / ".hydra" / "hydra.yaml").is_file()
    assert _grep(tmp_path, PLANTED) == []
    assert "postgresql://alice:***@db.example.org" in (sd / "trial_0" / ".hydra" / "overrides.yaml").read_text()


def test_a_single_run_masks_url_passwords_in_its_hydra_files(tmp_path, monkeypatch):
    seen: list = []
    _stub_train(monkeypatch, seen)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    assert main(["train", "model=tiny", "logger=none", f"notes='{URL}'", f"hydra.run.dir={run_dir}"]) == 0
    assert seen == [URL] and (run_dir / ".hydra" / "config.yaml").is_file()
    assert _grep(tmp_path, PLANTED) == []


@pytest.mark.slow
def test_no_file_of_a_sweep_holds_a_planted_url_password(tmp_path):
    sd = tmp_path / "s"
    r = run(sweep_args(sd, f"notes='{URL}'", "hydra.sweeper.report=true", n_trials=2), tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (sd / "best.yaml").is_file() and (sd / "study.db").is_file()
    assert _grep(tmp_path, PLANTED) == []
    assert PLANTED not in r.stdout + r.stderr
    assert "alice:***@" in (sd / "best.yaml").read_text()
