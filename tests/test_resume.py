"""``trainer.resume_from_checkpoint``: a run that stopped continues from a checkpoint it saved, to the result the
uninterrupted run has; bad resume points are one line, exit 2, before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftsweep import rundir
from ftsweep.errors import UsageError
from ftsweep.train import run

RUN = ["trainer.max_steps=6", "trainer.save_steps=3", "trainer.eval_steps=3", "trainer.logging_steps=1",
       "data.max_rows=60", "data.cutoff_len=64", "logger=none", "model.tiny.pretrain_steps=0"]


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path / "adapter" / "adapter_model.safetensors")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file()}


def test_a_resumed_run_ends_where_the_uninterrupted_one_does(compose, tmp_path, capfd):
    whole = run(compose(*RUN), tmp_path / "whole")
    saved = tmp_path / "whole" / "checkpoints" / "checkpoint-3"
    before = snapshot(tmp_path / "whole")
    resumed = run(compose(*RUN, f"trainer.resume_from_checkpoint={saved}"), tmp_path / "resumed")
    assert f"resuming from {saved} (step 3)" in capfd.readouterr().err
    a, b = tensors(tmp_path / "whole"), tensors(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)  # bitwise, on CPU
    for key in ("eval_loss", "initial_eval_loss", "eval_history", "train_steps", "last_train_loss"):
        assert resumed[key] == whole[key], key
    losses = [h["loss"] for h in rundir.read_json(tmp_path / "whole" / "checkpoints" / "checkpoint-6" /
                                                  "trainer_state.json")["log_history"] if "loss" in h]
    assert resumed["train_loss"] == pytest.approx(sum(losses[3:]) / 3, rel=1e-6)  # the steps this run trained
    history = json.loads((tmp_path / "whole" / "log_history.json").read_text())
    tokens = {h["step"]: h["num_tokens"] for h in history if "num_tokens" in h and "loss" in h}
    assert whole["train_tokens"] == tokens[6]
    assert resumed["train_tokens"] == tokens[6] - tokens[3]  # the tokens this run trained, as its runtime and loss
    assert snapshot(tmp_path / "whole") == before  # the saving run's folder is not touched


def test_a_resumed_run_continues_the_w_and_b_run_that_saved_its_checkpoint(compose, tmp_path, wandb_dir, capfd,
                                                                            monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    logged = [o if o != "logger=none" else "logger=wandb" for o in RUN]
    first = run(compose(*logged, "trainer.max_steps=3"), tmp_path / "first")
    point = tmp_path / "first" / "checkpoints" / "checkpoint-3"
    assert rundir.checkpoint_tracker_run(point) == first["wandb_run_id"]
    resumed = run(compose(*logged, f"trainer.resume_from_checkpoint={point}"), tmp_path / "resumed")
    assert resumed["wandb_run_id"] == first["wandb_run_id"]
    assert "(continued: the run that saved the checkpoint)" in capfd.readouterr().err
    fresh = run(compose(*logged, "trainer.max_steps=3"), tmp_path / "fresh")
    assert fresh["wandb_run_id"] != first["wandb_run_id"]
    assert rundir.checkpoint_tracker_run(tmp_path / "fresh" / "checkpoints" / "checkpoint-3") == fresh["wandb_run_id"]


def test_a_run_folder_resumes_from_its_latest_checkpoint(tmp_path):
    for step in (3, 12, 6):
        (tmp_path / "r" / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
        (tmp_path / "r" / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text(
            f'{{"global_step": {step}}}')
    (tmp_path / "r" / "checkpoints" / "checkpoint-20").mkdir()  # killed while saving: no trainer_state.json
    latest = tmp_path / "r" / "checkpoints" / "checkpoint-12"
    assert rundir.resume_point(tmp_path / "r") == latest
    assert rundir.resume_point(tmp_path / "r" / "checkpoints") == latest
    assert rundir.resume_point(latest) == latest
    assert rundir.checkpoint_step(latest) == 12
    assert rundir.resume_point("true", tmp_path / "r") == latest  # transformers' word: the run's own folder
    with pytest.raises(UsageError, match=r"^trainer.resume_from_checkpoint=true: this run's folder .* holds no "):
        rundir.resume_point("True", tmp_path / "new_run")
    # the failure line of a run that stopped says how to go on (ftsweep train's single runs)
    (tmp_path / "r" / ".hydra").mkdir()
    (tmp_path / "r" / ".hydra" / "overrides.yaml").write_text(  # a resumed run that stopped again
        "- optimizer.lr=1e-3\n- data.path=my data.jsonl\n- trainer.resume_from_checkpoint=old\n")
    assert rundir.resume_hint(tmp_path / "r") == (
        "it saved step 12: continue from there with ftsweep train optimizer.lr=1e-3 'data.path=my data.jsonl' "
        f"trainer.resume_from_checkpoint={tmp_path / 'r'}")
    assert rundir.resume_hint(tmp_path) is None
    with pytest.raises(UsageError, match=r"^trainer.resume_from_checkpoint: .* holds no checkpoint"):
        rundir.resume_point(tmp_path / "r" / "checkpoints" / "checkpoint-20")
    with pytest.raises(UsageError, match=r"^trainer.resume_from_checkpoint: no such folder nope"):
        rundir.resume_point("nope")


def test_a_checkpoint_the_run_cannot_continue_from_is_named(compose, tmp_path):
    point = tmp_path / "checkpoint-6"
    point.mkdir()
    (point / "trainer_state.json").write_text('{"global_step": 6}')
    (point / "adapter_config.json").write_text('{"r": 8}')
    cfg = compose("lora=r8", "trainer.max_steps=10")
    assert rundir.resume_problem(cfg, point) is None
    assert rundir.resume_problem(compose("lora=r8", "trainer.max_steps=6"), point) == (
        f"trainer.resume_from_checkpoint: {point} is at step 6: trainer.max_steps=6 leaves nothing to train "
        "(raise trainer.max_steps)")
    assert rundir.resume_problem(compose("lora=r16", "trainer.max_steps=10"), point) == (
        f"trainer.resume_from_checkpoint: {point} holds a LoRA adapter of r=8, but this run has lora.r=16: "
        "resume with the settings of the run that saved it")
    assert "but this run is a full fine-tune (lora=none)" in rundir.resume_problem(
        compose("lora=none", "trainer.max_steps=10"), point)


def test_a_checkpoint_saved_with_or_without_lora_plus_resumes_only_the_same_way(compose, tmp_path):
    from omegaconf import OmegaConf

    run_dir = tmp_path / "r"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose("lora=r8", "lora.loraplus_lr_ratio=16"), run_dir / ".hydra" / "config.yaml")
    point = run_dir / "checkpoints" / "checkpoint-6"
    point.mkdir(parents=True)
    (point / "trainer_state.json").write_text('{"global_step": 6}')
    (point / "adapter_config.json").write_text('{"r": 8}')
    assert rundir.resume_problem(compose("lora=r8", "lora.loraplus_lr_ratio=8", "trainer.max_steps=10"), point) is None
    assert rundir.resume_problem(compose("lora=r8", "trainer.max_steps=10"), point) == (
        f"trainer.resume_from_checkpoint: {point} was saved with LoRA+ (lora.loraplus_lr_ratio), whose optimizer "
        "state has other parameter groups: resume with it")


def cli(*args: str, cwd: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FTSWEEP_CACHE_DIR": str(cache_dir), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "ftsweep", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300, check=False)


def test_cli_bad_resume_points_are_one_line_and_nothing_is_written(cache_dir, tmp_path):
    (tmp_path / "empty_run").mkdir()
    cases = {
        ("trainer.resume_from_checkpoint=empty_run",):
            "trainer.resume_from_checkpoint: empty_run holds no checkpoint (checkpoint-<step>/trainer_state.json; a run "
            "saves them every trainer.save_steps steps)",
        ("-m", "trainer.resume_from_checkpoint=empty_run", "optimizer.lr=1e-3,1e-2"):
            "trainer.resume_from_checkpoint: continues one run; in a sweep, run its command again: a killed sweep "
            "resumes, its lost trials from their last checkpoints",
    }
    for overrides, line in cases.items():
        out = cli("train", *overrides, "logger=none", cwd=tmp_path, cache_dir=cache_dir)
        assert out.returncode == 2, out.stderr
        assert out.stderr.strip().splitlines() == [f"ftsweep: error: {line}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_run"]


def saved_checkpoint(run_dir: Path, step: int = 3) -> None:
    (run_dir / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
    (run_dir / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text(f'{{"global_step": {step}}}')


def assert_rerun_refused(tmp_path: Path, cache_dir: Path, folder: str, line: str) -> None:
    """The same command again into ``folder`` exits 2 with ``line`` alone and changes nothing."""
    before = snapshot(tmp_path)
    out = cli("train", f"hydra.run.dir={folder}", "trainer.max_steps=10", "logger=none", cwd=tmp_path,
              cache_dir=cache_dir)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [f"ftsweep: error: {line}"]
    assert snapshot(tmp_path) == before


def test_cli_a_failed_run_with_checkpoints_says_how_to_continue_it(cache_dir, tmp_path):
    saved_checkpoint(tmp_path / "failed")
    rundir.write_failure(tmp_path / "failed", "timeout: training ran 5 s > trainer.timeout_s=4", "RunTimeout")
    assert_rerun_refused(tmp_path, cache_dir, "failed", (
        "hydra.run.dir: failed holds a failed run that saved checkpoints: continue it in a new folder "
        "with trainer.resume_from_checkpoint=failed, or in this one with trainer.resume_from_checkpoint=true "
        "overwrite=true"))


def test_cli_a_stopped_run_with_checkpoints_is_not_started_over_by_a_rerun(cache_dir, tmp_path):
    saved_checkpoint(tmp_path / "stopped")  # killed (kill -9, a time limit): checkpoints, no metrics.json nor failure.json
    assert_rerun_refused(tmp_path, cache_dir, "stopped", (
        "hydra.run.dir: stopped holds a stopped run that saved step 3: continue it with "
        "trainer.resume_from_checkpoint=true, write to a new folder (hydra.run.dir=<new>), or start it over with "
        "overwrite=true"))


def test_a_resume_in_the_run_folder_compares_with_the_config_the_checkpoint_recorded(compose, tmp_path, capfd):
    # a resume in the stopped run's own folder: Hydra has replaced .hydra/config.yaml with the new run's config
    # before the run starts; the checkpoint's own record still says what it was trained with
    from omegaconf import OmegaConf

    run(compose(*RUN, "trainer.max_steps=3", "data.max_rows=60"), tmp_path / "r")
    point = tmp_path / "r" / "checkpoints" / "checkpoint-3"
    assert OmegaConf.load(point / "run_config.yaml").data.max_rows == 60
    again = compose(*RUN, "data.max_rows=50", "trainer.resume_from_checkpoint=true")
    (tmp_path / "r" / ".hydra").mkdir()
    OmegaConf.save(again, tmp_path / "r" / ".hydra" / "config.yaml")
    run(again, tmp_path / "r")
    assert ("resuming with other settings than the run that saved it: data.max_rows=50 (was 60)"
            in capfd.readouterr().err)
    assert OmegaConf.load(tmp_path / "r" / "checkpoints" / "checkpoint-6" / "run_config.yaml").data.max_rows == 50


def test_cli_a_terminated_run_says_how_to_continue_from_its_checkpoint(cache_dir, tmp_path):
    # SIGTERM: what a cluster's time limit (SLURM) or kill sends; before, the run died without a word (exit -15)
    import signal
    import time

    env = {**os.environ, "FTSWEEP_CACHE_DIR": str(cache_dir), "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "ftsweep", "train", "logger=none", "hydra.run.dir=r",
                             "trainer.max_steps=100000", "trainer.save_steps=2", "trainer.eval_steps=100000"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "r" / "checkpoints").glob("checkpoint-*/trainer_state.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint saved"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("ftsweep: error: terminated (SIGTERM); it saved step "), last
    assert last.endswith(f"trainer.resume_from_checkpoint={tmp_path / 'r'}"), last
    assert "Traceback" not in err
    assert (tmp_path / "r" / "train.log").read_text().splitlines()[-1] == last  # the run's log ends with it too


def test_a_resume_with_other_settings_says_which(compose, tmp_path):
    from omegaconf import OmegaConf

    run_dir = tmp_path / "r"
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose("optimizer.lr=1e-3", "data=custom_json", "data.path=a.jsonl"), run_dir / ".hydra" / "config.yaml")
    point = run_dir / "checkpoints" / "checkpoint-3"
    point.mkdir(parents=True)
    same = compose("optimizer.lr=1e-3", "data=custom_json", "data.path=a.jsonl", "trainer.max_steps=90", "logger=none")
    same.data.format = "chat"  # data.format=auto, resolved by the run: the same setting
    assert rundir.resume_changes(same, point) == []  # longer, logged elsewhere: not what is trained
    other = compose("optimizer.lr=2e-3", "data=custom_json", "data.path=b.jsonl")
    assert rundir.resume_changes(other, point) == ["data.path=b.jsonl (was a.jsonl)", "optimizer.lr=0.002 (was 0.001)"]
    assert rundir.resume_changes(other, tmp_path / "checkpoint-3") == []  # a checkpoint outside a run folder
    mapped = compose("optimizer.lr=1e-3", "data=custom_json", "data.path=a.jsonl")
    mapped.data.format, mapped.data.columns.instruction = "alpaca", "question"  # auto: GSM8K's columns, resolved
    assert rundir.resume_changes(mapped, point) == []


def test_a_lost_trials_checkpoint_is_used_only_when_the_rerun_can_go_on_from_it(compose, tmp_path, capfd):
    from ftsweep.sweeper.trial import resume_lost_trial

    point = tmp_path / "trial_3" / "checkpoints" / "checkpoint-20"
    point.mkdir(parents=True)
    (point / "trainer_state.json").write_text('{"global_step": 20}')
    (point / "adapter_config.json").write_text('{"r": 8}')
    fits = compose("lora=r8", "trainer.max_steps=60")
    resume_lost_trial(fits, str(point))
    assert fits.trainer.resume_from_checkpoint == str(point)
    changed = compose("lora=r16", "trainer.max_steps=60")  # e.g. the sweep's lora option file was edited meanwhile
    resume_lost_trial(changed, str(point))
    assert changed.trainer.resume_from_checkpoint is None
    assert "not resuming the lost trial (trainer.resume_from_checkpoint: " in capfd.readouterr().err


def _checkpoint_files(point: Path) -> None:
    """A checkpoint's files in their real formats (safetensors, torch zip, JSON), small."""
    import json

    import torch
    from safetensors.torch import save_file

    point.mkdir(parents=True)
    save_file({"a": torch.ones(64, 8)}, str(point / "adapter_model.safetensors"))
    torch.save({"state": {0: torch.zeros(256)}}, point / "optimizer.pt")
    (point / "adapter_config.json").write_text(json.dumps({"r": 16, "init_lora_weights": True}))
    (point / "trainer_state.json").write_text(json.dumps({"global_step": int(point.name.split("-")[1])}))


@pytest.mark.parametrize("damage", ["optimizer.pt", "adapter_model.safetensors", "trainer_state.json"])
def test_a_damaged_checkpoint_is_one_line_naming_the_file_and_the_one_before_it(compose, tmp_path, damage):
    """A checkpoint cut short (a copy or a full disk while it was saved) failed after the model loaded, with a
    torch / safetensors traceback that named neither the file nor the checkpoint to go on from."""
    folder = tmp_path / "r" / "checkpoints"
    for step in (4, 8):
        _checkpoint_files(folder / f"checkpoint-{step}")
    cfg = compose(*RUN, "trainer.max_steps=20", f"trainer.resume_from_checkpoint={tmp_path / 'r'}")
    assert rundir.checked_resume_point(cfg, None) == folder / "checkpoint-8"  # intact: the latest
    path = folder / "checkpoint-8" / damage
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(UsageError) as err:
        rundir.checked_resume_point(cfg, None)
    assert str(err.value).startswith(f"trainer.resume_from_checkpoint: {folder / 'checkpoint-8'} is damaged: {path} (")
    assert str(err.value).endswith(f"; resume from the checkpoint before it: trainer.resume_from_checkpoint="
                                   f"{folder / 'checkpoint-4'}")
    assert "\n" not in str(err.value)
    (folder / "checkpoint-4" / "optimizer.pt").write_bytes(b"")  # none intact before it: no suggestion
    with pytest.raises(UsageError, match=r"is damaged: .*\)$"):
        rundir.checked_resume_point(cfg, None)
    # an empty model card alone damages nothing: no resume reads it (it was refused as damaged)
    path.write_bytes(data)
    (folder / "checkpoint-8" / "README.md").write_text("")
    assert rundir.checked_resume_point(cfg, None) == folder / "checkpoint-8"


@pytest.mark.parametrize("change", ["optimizer.lr=5e-4", "optimizer.weight_decay=0.1", "optimizer.betas=[0.8,0.99]",
                                    "optimizer.eps=1e-6"])
def test_an_optimizer_setting_the_checkpoint_would_override_is_refused(compose, tmp_path, change):
    """transformers restores optimizer.pt (its parameter groups: lr, betas, eps, weight decay) and scheduler.pt (the
    base lr) on resume: a resume with optimizer.lr=1e-3 where the checkpoint had 2e-4 trained on at 2e-4, the same
    losses bit for bit, while the console said 'resuming with other settings: optimizer.lr=0.001 (was 0.0002)'."""
    from omegaconf import OmegaConf

    point = tmp_path / "r" / "checkpoints" / "checkpoint-3"
    point.mkdir(parents=True)
    (point / "trainer_state.json").write_text('{"global_step": 3}')
    (point / "adapter_config.json").write_text('{"r": 16, "init_lora_weights": true}')
    (point / "run_config.yaml").write_text(OmegaConf.to_yaml(compose(*RUN)))
    assert rundir.checked_resume_point(compose(*RUN, f"trainer.resume_from_checkpoint={point}"), None) == point
    key = change.split("=")[0]
    cfg = compose(*RUN, change, f"trainer.resume_from_checkpoint={point}")
    with pytest.raises(UsageError) as err:
        rundir.checked_resume_point(cfg, None)
    was = OmegaConf.to_container(compose(*RUN).optimizer)[key.split(".")[1]]
    now = OmegaConf.to_container(cfg.optimizer)[key.split(".")[1]]
    assert str(err.value) == (f"trainer.resume_from_checkpoint: {point} was saved with {key}={was}, which its optimizer "
                              f"and scheduler state (restored on resume) keep: {key}={now} would not apply; resume "
                              f"with {key}={was}, or start a new run")


def test_a_resume_whose_epochs_end_at_the_checkpoint_is_refused_and_one_past_it_trains_on(compose, tmp_path):
    # 60 rows, val_size 0.1: 54 training rows, batch 8: 7 optimizer steps an epoch (transformers' count)
    run(compose(*RUN, "trainer.max_steps=4", "trainer.save_steps=4"), tmp_path / "first")
    point = tmp_path / "first" / "checkpoints" / "checkpoint-4"
    epochs = ["trainer.max_steps=-1", f"trainer.resume_from_checkpoint={point}"]
    with pytest.raises(UsageError, match=r"^trainer.resume_from_checkpoint: .*checkpoint-4 is at step 4: "
                                         r"trainer.num_train_epochs=0.5 is 4 steps here \(7 an epoch\), which "
                                         r"leaves nothing to train \(raise trainer.num_train_epochs\)$"):
        run(compose(*RUN, *epochs, "trainer.num_train_epochs=0.5"), tmp_path / "short")  # ceil(0.5 x 7) = 4
    assert not (tmp_path / "short" / "metrics.json").exists()
    resumed = run(compose(*RUN, *epochs, "trainer.num_train_epochs=1"), tmp_path / "resumed")
    assert resumed["train_steps"] == 7 and resumed["train_loss"] > 0
    # its train_tokens are the 3 steps it trained (trl's count restarts), not the 4 saved ones' larger count
    logged = [h["num_tokens"] for h in json.loads((tmp_path / "resumed" / "log_history.json").read_text())
              if "loss" in h]
    first = json.loads((tmp_path / "first" / "metrics.json").read_text())["train_tokens"]
    assert resumed["train_tokens"] == logged[-1] < first


def test_a_resume_over_a_checkpoint_a_full_disk_left_an_empty_readme_in_prints_only_ftsweep_lines(compose, tmp_path,
                                                                                                    capfd):
    """A full disk emptied checkpoint-6/README.md while it was saved; a resume from checkpoint-3 saves checkpoint-6
    again: peft updates the README.md it finds there, and
    huggingface_hub said 'Repo card metadata block was not found. Setting CardData to empty.' on stderr."""
    run(compose(*RUN), tmp_path / "r")
    readme = tmp_path / "r" / "checkpoints" / "checkpoint-6" / "README.md"
    readme.write_text("")
    capfd.readouterr()
    point = tmp_path / "r" / "checkpoints" / "checkpoint-3"
    run(compose(*RUN, f"trainer.resume_from_checkpoint={point}"), tmp_path / "r")
    err = capfd.readouterr().err
    assert f"resuming from {point} (step 3)" in err
    assert all(line.startswith("ftsweep: ") for line in err.splitlines()), err
    assert readme.read_text().startswith("---\n")  # peft wrote the card anew
