"""ftsweep as a user installs it: a built wheel (not the repository) run from an empty folder.

The wheel is installed with --no-deps --target into a temporary folder placed first on PYTHONPATH, so the
test environment's libraries are used but every ftsweep file (code, shipped config, sweeps, demo data)
comes from the wheel.

One sweep with real trials runs from the wheel (a user's project from ``ftsweep init``): a second one of
sweep=quickstart trained through the same path (test_sweep_real.py runs that sweep from the repository); what is the
quickstart's own (its overlay, its sweep folder, its bundled data resolved from the wheel) is checked without training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]

# one worker runs this module: its module-scoped fixtures are built once (scripts/test.sh: --dist loadgroup)
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheel")]


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(tmp / "dist")],
                   check=True, capture_output=True, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("ftsweep-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)], check=True,
                   capture_output=True)
    return tmp / "site"


def _env(site: Path, cache_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTSWEEP_")}
    env.update(PYTHONPATH=str(site), FTSWEEP_CACHE_DIR=str(cache_dir), WANDB_MODE="offline", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1")
    return env


def _ftsweep(site: Path, cache_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "ftsweep", *args], cwd=cwd, env=_env(site, cache_dir),
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_the_wheel_carries_config_sweeps_and_data(wheel_site, tmp_path, cache_dir):
    probe = ("import ftsweep, ftsweep.paths as p; print(ftsweep.__file__); print(p.shipped_conf_dir()); "
             "print(p.shipped_sweep_dir()); print(p.bundled_data_dir()); "
             "print(p.resolve_data_path('pkg://ftsweep.demo_data/proxy_tasks.jsonl'))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=_env(wheel_site, cache_dir),
                         capture_output=True, text=True, check=True).stdout.split()
    assert all(line.startswith(str(wheel_site)) for line in out), out
    conf = Path(out[1])
    assert (conf / "train.yaml").is_file() and (conf / "model" / "tiny.yaml").is_file()
    assert (Path(out[2]) / "quickstart.yaml").is_file() and (Path(out[3]) / "alpaca_en_demo.json").is_file()
    # and the sweeps' per-objective settings (sweep/by_objective/), which train.yaml loads on top
    shown = OmegaConf.create(_ftsweep(wheel_site, cache_dir, tmp_path, "train", "sweep=quickstart",
                                      "objective=exact_match", "--cfg", "all").stdout)
    assert shown.trainer.max_steps == 400
    # the sweep folder (relative to where it is run) of that overlay, and the quickstart's bundled data, from the wheel
    assert shown.hydra.sweep.dir == "outputs/sweeps/quickstart_em" and shown.hydra.sweeper.study_name == "quickstart_em"
    assert shown.data.path == "pkg://ftsweep.demo_data/proxy_tasks.jsonl"
    assert out[4] == str(Path(out[3]) / "proxy_tasks.jsonl") and Path(out[4]).is_file()  # that path, read from the wheel


def test_init_and_a_user_sweep_from_an_empty_folder(wheel_site, tmp_path, cache_dir):
    _ftsweep(wheel_site, cache_dir, tmp_path, "init", "proj")
    proj = tmp_path / "proj"
    (proj / "conf" / "lora").mkdir()
    (proj / "conf" / "lora" / "r4.yaml").write_text("# LoRA r=4 (mine)\ndefaults: [lora_schema, _self_]\nr: 4\nalpha: 8\n")
    shown = _ftsweep(wheel_site, cache_dir, proj, "inspect", "data=my_data", "--rows", "1", "--plain").stdout
    assert "[[" in shown and "### Response:" in shown  # the trained answer marked, the prompt masked
    out = _ftsweep(wheel_site, cache_dir, proj, "train", "-m", "sweep=my_sweep", "hydra.sweeper.n_trials=2",
                   "lora=choice(r4, r8)", "trainer.max_steps=4", "trainer.eval_steps=2", "logger=none",
                   "hydra.sweep.dir=sweeps/mine")
    sd = proj / "sweeps" / "mine"  # hydra.sweep.dir, relative to where the user ran the command
    assert (sd / "study.db").is_file() and (sd / "summary.json").is_file() and (sd / "best.yaml").is_file()
    assert (sd / "report.md").is_file() and "best trial" in out.stdout
    trials = sorted(sd.glob("trial_*"))
    assert [t.name for t in trials] == ["trial_0", "trial_1"]
    for t in trials:
        assert json.loads((t / "metrics.json").read_text())["status"] in ("complete", "pruned")
        hydra = OmegaConf.load(t / ".hydra" / "hydra.yaml").hydra
        assert hydra.mode == "MULTIRUN"
        sources = {s.provider: s.path for s in hydra.runtime.config_sources}
        assert sources["main"] == str(wheel_site / "ftsweep" / "conf")  # the wheel's config, not the repository
        assert sources["ftsweep-user"] == str(proj / "conf")
    assert not (proj / "outputs").exists()
