"""One run under torchrun with 2 CPU processes (gloo), as a multi-GPU user starts it (docs/multi_gpu.md): the
numbers it reports equal a 1-process run's with the same global batch, and the run folder is written once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import FAST

from ftsweep.train import run

pytestmark = pytest.mark.slow
# the tests that share the module fixtures (one torchrun run, one 1-process run) run on one worker, so each fixture
# is built once (scripts/test.sh: --dist loadgroup); the other torchrun tests are dealt out on their own
SHARED = pytest.mark.xdist_group("ddp")

# 17 validation rows do not divide into 2 processes x 8: accelerate fills the last batch with repeated rows
# logging_steps > max_steps: the step's loss reaches train_loss at the end of training, not through a logging step
# 2 steps at a constant lr 1e-2, no LoRA dropout (its masks are per rank): the trained weights must match too
SETTINGS = ["data=proxy_tasks", "data.val_size=17", "data.max_rows=200", "data.cutoff_len=64", "trainer.max_steps=2",
            "trainer.eval_steps=2", "trainer.logging_steps=5", "trainer.per_device_eval_batch_size=8",
            "optimizer.lr=1e-2", "scheduler=constant_with_warmup", "scheduler.warmup_steps=0", "lora.dropout=0.0"]


def torchrun(cache_dir, tmp, *overrides: str, timeout: int = 120) -> str:
    """``torchrun --nproc_per_node 2 -m ftsweep train`` (W&B offline) into ``tmp / "run"``: its console."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp / "wandb"), "OMP_NUM_THREADS": "1"}
    (tmp / "wandb").mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "ftsweep", "train", f"cache_dir={cache_dir}", *overrides,
                           f"hydra.run.dir={tmp / 'run'}"],
                          check=False, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def ddp_run(cache_dir, tmp_path_factory):
    """The SFT run under torchrun with 2 processes (W&B offline): its folder and console."""
    tmp = tmp_path_factory.mktemp("ddp")
    return tmp, torchrun(cache_dir, tmp, *FAST, *SETTINGS, "logger=wandb", "trainer.per_device_train_batch_size=8")


@pytest.fixture(scope="module")
def one_process(cache_dir, tmp_path_factory):
    """The same run in one process, with the same global batch (16 rows a step)."""
    from ftsweep.config.compose import compose

    cfg = compose([f"cache_dir={cache_dir}", *FAST, *SETTINGS, "trainer.per_device_train_batch_size=16"])
    return run(cfg, tmp_path_factory.mktemp("one"))


def _ddp_metrics(ddp_run) -> dict:
    import json

    return json.loads((ddp_run[0] / "run" / "metrics.json").read_text())


@SHARED
def test_eval_loss_under_ddp_equals_one_process(ddp_run, one_process):
    """Every validation token once: the rows accelerate repeats to fill the last batch are not counted (before the
    fix: 6.856 under 2 processes vs 6.825 in one)."""
    ddp, one = _ddp_metrics(ddp_run), one_process
    assert ddp["initial_eval_loss"] == pytest.approx(one["initial_eval_loss"], rel=1e-5), (ddp, one)
    assert ddp["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)


@SHARED
def test_ddp_run_starts_one_wandb_run_and_says_everything_once(ddp_run):
    """Rank 0 alone starts the W&B run and prints ftsweep's lines; train.log holds them once (before: two offline
    W&B runs, every ftsweep line twice on the console and in train.log)."""
    tmp, console = ddp_run
    runs = sorted(p.name for p in (tmp / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    log = (tmp / "run" / "train.log").read_text()
    for text in (console, log):
        assert text.count(" eval rows, ") == 1, text[-4000:]
        assert text.count("ftsweep: complete: ") == 1, text
        assert text.count("W&B offline run: ") == 1, text
    assert runs[0].split("-")[-1] in (tmp / "run" / "metrics.json").read_text()  # the run's own W&B id


@SHARED
def test_train_loss_and_token_count_under_ddp_equal_one_process(ddp_run, one_process):
    """train_loss is every rank's loss, not rank 0's alone (before the fix, 1 step that no logging step saw:
    5.777 under 2 processes vs 6.441 in one); trl's token count is the total over the ranks."""
    ddp, one = _ddp_metrics(ddp_run), one_process
    assert ddp["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5), (ddp, one)
    assert ddp["train_tokens"] == one["train_tokens"] > 0
    assert ddp["train_steps"] == one["train_steps"] == 2


@SHARED
def test_ddp_ranks_train_one_model(ddp_run, one_process):
    """The ranks' gradients are averaged, also after the evaluation before training (which left the model marked
    prepared, so train() never wrapped it in DistributedDataParallel: each rank trained on its own half of every
    batch and rank 0 saved that model). The eval loss after training equals one process's."""
    ddp, one = _ddp_metrics(ddp_run), one_process
    assert ddp["eval_loss"] != ddp["initial_eval_loss"]  # the steps changed the model
    assert ddp["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5), (ddp["eval_history"], one["eval_history"])


@SHARED
def test_token_accuracy_and_entropy_under_ddp_equal_one_process(ddp_run, one_process):
    """eval_mean_token_accuracy / eval_entropy are fractions over every validation label token, once: trl's mean of
    per-batch values whose last batch's gather keeps one rank's counts with its repeated rows (before the fix, at
    after the 2 steps: 0.0269 under 2 processes vs 0.0202, itself a per-batch mean, in one)."""
    ddp, one = _ddp_metrics(ddp_run), one_process
    for key in ("eval_mean_token_accuracy", "eval_entropy"):
        assert ddp[key] == pytest.approx(one[key], rel=1e-5), (key, ddp, one)


# data.packing=true: each evaluation batch is one flattened (padding-free) row; 43 validation rows in batches of
# 2 processes x 4 leave 3 for the last round: rank 0's last batch holds 3 real rows and one repeat
# 6 validation rows (data.max_rows=64), fewer than one rank's evaluation batch (8), packed (padding-free batches):
# rank 0's batch is 6 real rows and 2 repeats, rank 1's only repeats
PACKED_FEW_EVAL_ROWS = ["data=proxy_tasks", "data.max_rows=64", "data.cutoff_len=64", "data.packing=true",
                        "trainer.max_steps=1", "trainer.eval_steps=1", "optimizer.lr=1e-2",
                        "scheduler=constant_with_warmup", "scheduler.warmup_steps=0", "lora.dropout=0.0", "logger=none"]


def test_packed_eval_and_a_rank_with_only_repeated_rows_under_ddp_equal_one_process(cache_dir, tmp_path):
    """With packing, the repeated rows are cut off the flattened row at the length of the real ones (before: initial
    eval_loss 6.590 under 2 processes vs 6.757 in one, 43 rows, eval batch 4); a rank whose evaluation batches are
    all repeats still joins the sums' reduce (before the fix it skipped it and the run hung at the evaluation before
    training). eval_loss, token accuracy and entropy equal one process's. (Unpacked batches with repeats: the module's
    run above.)"""
    from ftsweep.config.compose import compose

    torchrun(cache_dir, tmp_path, *PACKED_FEW_EVAL_ROWS, "trainer.per_device_train_batch_size=8", timeout=150)
    ddp = _ddp_metrics((tmp_path,))
    one = run(compose([f"cache_dir={cache_dir}", *PACKED_FEW_EVAL_ROWS, "trainer.per_device_train_batch_size=16"]),
              tmp_path / "one")
    for key in ("initial_eval_loss", "eval_loss", "eval_mean_token_accuracy", "eval_entropy"):
        assert ddp[key] == pytest.approx(one[key], rel=1e-5), (key, ddp, one)


KTO = ["stage=kto", "data=proxy_pairs", "data.val_size=17", "data.max_rows=200", "data.cutoff_len=64",
       "trainer.max_steps=2", "trainer.eval_steps=2", "trainer.logging_steps=5", "trainer.per_device_eval_batch_size=8",
       "optimizer.lr=1e-2", "scheduler=constant_with_warmup", "scheduler.warmup_steps=0", "lora.dropout=0.0",
       "logger=none"]


def test_kto_train_loss_under_ddp_equals_one_process(cache_dir, tmp_path):
    """KTO's train_loss is every rank's too (before the fix: 0.500417 under 2 processes vs 0.500718 in one)."""
    from ftsweep.config.compose import compose

    torchrun(cache_dir, tmp_path, *KTO, "trainer.per_device_train_batch_size=8")
    ddp = _ddp_metrics((tmp_path,))
    one = run(compose([f"cache_dir={cache_dir}", *KTO, "trainer.per_device_train_batch_size=16"]), tmp_path / "one")
    assert ddp["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5), (ddp, one)
    assert ddp["train_tokens"] == one["train_tokens"] > 0
