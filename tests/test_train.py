"""End-to-end training on the tiny model: it learns, it is reproducible, it writes what it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST
from safetensors.torch import load_file
from wandb_offline import wait_offline_run

from ftsweep.train import run


def _lora_init(cfg):
    """The adapter weights exactly as initialised for this config (same seed, same code path)."""
    from transformers import set_seed

    from ftsweep import model as model_mod

    set_seed(cfg.trainer.seed)
    tok = model_mod.load_tokenizer(cfg)
    set_seed(cfg.trainer.seed)
    model = model_mod.apply_lora(cfg, model_mod.load_model(cfg, tok))
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def _saved_adapter(run_dir: Path) -> dict:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def test_twenty_steps_learn_and_change_every_lora_parameter(compose, tmp_path):
    # whole prompts and answer starts (truncate_answer): 20 steps visibly lower the eval loss of these rows
    cfg = compose(*FAST, "trainer.max_steps=20", "trainer.eval_steps=10", "optimizer.lr=2e-3",
                  "data.overlong=truncate_answer")
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "complete"
    assert metrics["eval_loss"] < metrics["initial_eval_loss"]
    assert metrics["objective"] == metrics["eval_loss"]
    init = _lora_init(cfg)
    saved = _saved_adapter(tmp_path)
    assert len(saved) == len(init) == 2 * 4 * cfg.model.tiny.num_hidden_layers  # A and B of q/k/v/o per layer
    for name, before in init.items():
        key = name.replace(".default", "")
        after = saved[key]
        assert not (after == before).all(), f"{name} did not change"
    written = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("train_loss", "eval_loss", "eval_mean_token_accuracy", "objective", "train_runtime",
                "train_tokens_per_s", "peak_memory_mb"):
        assert isinstance(written[key], float), key
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == cfg.trainer.seed
    assert set(manifest["versions"]) >= {"torch", "transformers", "peft", "trl", "bitsandbytes", "optuna"}
    assert manifest["data_fingerprint"] and manifest["config_hash"]
    assert (tmp_path / "adapter" / "tokenizer.json").is_file()
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]  # sorted, not set order


def test_manifest_versions_are_the_installed_ones_read_once_per_process(monkeypatch):
    import importlib.metadata as md

    from ftsweep.train import MANIFEST_PACKAGES, package_versions

    package_versions.cache_clear()
    reads = []
    real = md.version
    monkeypatch.setattr(md, "version", lambda pkg: reads.append(pkg) or real(pkg))
    first = package_versions()
    assert first["torch"] == real("torch") and first["hydra-core"] == real("hydra-core")
    assert package_versions() == first  # a warm worker's next trial
    assert sorted(reads) == sorted(MANIFEST_PACKAGES)  # each package's metadata read once


def test_same_seed_same_metrics(compose, tmp_path):
    cfg = compose(*FAST, "trainer.max_steps=6", "trainer.eval_steps=3")
    a = run(cfg, tmp_path / "a")
    b = run(cfg, tmp_path / "b")
    keys = ["train_loss", "eval_loss", "eval_mean_token_accuracy", "initial_eval_loss"]
    assert [a[k] for k in keys] == [b[k] for k in keys]
    assert a["eval_history"] == b["eval_history"]
    other = run(compose(*FAST, "trainer.max_steps=6", "trainer.eval_steps=3", "trainer.seed=7"), tmp_path / "c")
    assert other["eval_loss"] != a["eval_loss"]


def test_unknown_objective_metric_lists_available(compose):
    from ftsweep.config.compose import ConfigFailure

    with pytest.raises(ConfigFailure, match=r"objective.metric: unknown metric 'eval_bleu'; available: eval_loss, "):
        compose("objective.metric=eval_bleu")


def test_a_w_and_b_server_out_of_reach_logs_the_run_offline(compose, tmp_path, wandb_dir, monkeypatch, capfd):
    import wandb

    real = wandb.init
    tried = []

    def init(*args, **kwargs):
        tried.append(kwargs["mode"])
        if kwargs["mode"] == "online":  # as wandb.init does without network, after its retries
            raise wandb.errors.CommError("Timed out while retrying; api key sk-" + "x" * 8 + " not reached")
        return real(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setenv("WANDB_MODE", "online")
    cfg = compose(*[o for o in FAST if o != "logger=none"], "logger=wandb", "trainer.max_steps=2", "trainer.eval_steps=2")
    metrics = run(cfg, tmp_path / "run")
    assert tried == ["online", "offline"] and metrics["status"] == "complete"
    assert metrics["wandb_run_url"] is None
    assert list((wandb_dir / "wandb").glob(f"offline-run-*{metrics['wandb_run_id']}"))
    err = capfd.readouterr().err
    assert "W&B: cannot start the run online (CommError: Timed out while retrying" in err
    assert "it logs offline instead (upload it later with wandb sync" in err


def test_a_disabled_w_and_b_says_so_and_names_no_offline_folder(tmp_path, capfd):
    from omegaconf import OmegaConf

    from ftsweep.tracking import Tracker

    tracker = Tracker(OmegaConf.create({"name": "wandb", "project": "p", "entity": None, "group": None,
                                        "run_name": None, "tags": [], "mode": "disabled"}), tmp_path, {})
    tracker.start()
    try:
        err = capfd.readouterr().err  # before: "W&B offline run: /tmp/wandb/run-... (upload later: wandb sync ...)"
        assert err.strip() == "ftsweep: W&B: disabled (logger.mode=disabled or WANDB_MODE=disabled): nothing is " \
                              "logged to W&B"
    finally:
        tracker.run.finish()


def test_wandb_offline_run_holds_config_and_final_eval_loss(compose, tmp_path, wandb_dir, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose(*[o for o in FAST if o != "logger=none"], "logger=wandb", "trainer.max_steps=4", "trainer.eval_steps=2")
    metrics = run(cfg, tmp_path / "run")
    runs = list((wandb_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and metrics["wandb_run_id"] in runs[0].name
    done = {"state", "objective", "eval_loss"}
    logged = wait_offline_run(runs[0], lambda w: w["run_id"] and done <= set(w["summary"]))
    assert logged["run_id"] == metrics["wandb_run_id"]
    assert logged["config"]["optimizer"]["lr"] == 0.0002 and logged["config"]["lora"]["r"] == 16
    summary = logged["summary"]
    assert summary["eval_loss"] == pytest.approx(metrics["eval_loss"])
    logged_evals = [row["eval/loss"] for row in logged["history"] if "eval/loss" in row]
    assert logged_evals[-1] == pytest.approx(metrics["eval_loss"])
    assert any("train/loss" in row and "train/learning_rate" in row for row in logged["history"])
    assert summary["state"] == "COMPLETE"
    assert summary["objective"] == pytest.approx(metrics["objective"])


def test_tensorboard_writes_event_files(compose, tmp_path):
    cfg = compose(*[o for o in FAST if o != "logger=none"], "logger=tensorboard", "trainer.max_steps=4", "trainer.eval_steps=2")
    run(cfg, tmp_path)
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_nf4_on_cpu_keeps_learning_after_evaluation(compose, tmp_path):
    # bitsandbytes 0.50 can repack 4-bit weights at the first no-grad forward on CPU, and the repacked
    # matmul has no backward: the gradient norm would drop to 0.0 after the first evaluation.
    cfg = compose(*FAST, "quantization=nf4", "trainer.max_steps=24", "trainer.eval_steps=8",
                  "trainer.logging_steps=1", "optimizer.lr=3e-3", "data.overlong=truncate_answer")
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "complete"
    history = json.loads((tmp_path / "log_history.json").read_text())
    grad_norms = [h["grad_norm"] for h in history if "grad_norm" in h]
    assert len(grad_norms) == 24 and min(grad_norms) > 0.0  # evaluations at steps 0, 8, 16 did not kill them
    evals = {e["step"]: e["eval_loss"] for e in metrics["eval_history"]}
    assert list(evals) == [0, 8, 16, 24]
    assert evals[24] < evals[8] and evals[24] < evals[0]  # still learning after the evaluations
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_planted_hf_token_appears_nowhere_in_run_dir(compose, tmp_path, wandb_dir, monkeypatch):
    secret = "hf_PLANTEDsecretVALUE1234567890"
    monkeypatch.setenv("HF_TOKEN", secret)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "run"))
    run_dir = tmp_path / "run"
    env = {**os.environ, "HF_TOKEN": secret, "WANDB_MODE": "offline"}
    out = subprocess.run(
        [sys.executable, "-m", "ftsweep", "train", *FAST[:-1], "logger=wandb", "trainer.max_steps=3",
         "trainer.eval_steps=3", "trainer.generate_after=true", f"cache_dir={os.environ['FTSWEEP_CACHE_DIR']}", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert secret not in out.stdout + out.stderr
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "metrics.json").is_file()
    assert list(run_dir.rglob("run-*.wandb")), "the W&B offline run should be in the run dir"
    # trainer.generate_after: base vs fine-tuned answers written at the end of the run
    assert (run_dir / "generations" / "answers.md").is_file() and (run_dir / "generations" / "answers.jsonl").is_file()
    for path in files:
        assert secret.encode() not in path.read_bytes(), path


def test_infeasible_run_fails_before_loading_the_model(compose, tmp_path, monkeypatch):
    from ftsweep import memory
    from ftsweep import model as model_mod
    from ftsweep.train import failure_reason

    monkeypatch.setattr(memory, "free_memory_mib", lambda: (1.0, "cpu"))
    monkeypatch.setattr(model_mod, "load_model", lambda *a, **k: pytest.fail("the model must not be loaded"))
    with pytest.raises(memory.MemoryInfeasible) as info:
        run(compose(*FAST), tmp_path)
    assert failure_reason(info.value).startswith("oom: estimated ")
    assert "> free 1 MiB on cpu" in str(info.value)


def test_trained_tokens_are_counted_when_no_step_was_logged(compose, tmp_path):
    # before: train_tokens (and tokens/s) was 0 when trainer.logging_steps > trainer.max_steps
    cfg = compose(*FAST, "trainer.max_steps=2", "trainer.logging_steps=10", "trainer.eval_steps=2")
    metrics = run(cfg, tmp_path / "run")
    assert metrics["train_tokens"] > 0 and metrics["train_tokens_per_s"] > 0
