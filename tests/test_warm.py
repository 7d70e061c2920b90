"""Warm sweep workers (``hydra.sweeper.warm_workers=true``): the same trial gives the same metrics warm and
cold (bitwise on CPU), the kept base model carries nothing from one trial to the next, and a trial that
fails ends its worker, which is replaced."""

from __future__ import annotations

import json
import re
import sys

import pytest
from conftest import FAST
from sweep_helpers import load, run

from ftsweep import rundir

RESULT_KEYS = ("eval_history", "train_loss", "eval_loss", "initial_eval_loss", "last_train_loss", "train_steps",
               "train_tokens", "trainable_params")


def _result(metrics: dict) -> dict:
    return {k: metrics.get(k) for k in RESULT_KEYS}


def _embedding_hooks(model) -> int:
    return len(model.get_input_embeddings()._forward_hooks)


@pytest.mark.parametrize("extra", [[], ["quantization=nf4", "trainer.gradient_checkpointing=true"]],
                         ids=["bf16-lora", "nf4-checkpointing"])
def test_warm_trials_equal_cold_trials_and_leave_the_base_clean(compose, tmp_path, extra):
    import gc

    from ftsweep.sweeper.warm import WarmComponents
    from ftsweep.sweeper.worker import _free_trial_memory
    from ftsweep.train import run as train_run

    trials = [("1e-3", "r8"), ("5e-3", "r16"), ("1e-3", "r8")]
    cfgs = [compose(*FAST, "trainer.max_steps=4", "trainer.eval_steps=2", f"optimizer.lr={lr}",
                    f"lora={r}", *extra)
            for lr, r in trials]
    parts = WarmComponents()
    warm, hooks = [], []
    for i, cfg in enumerate(cfgs):
        warm.append(_result(train_run(cfg, tmp_path / f"warm{i}", parts=parts)))
        # from the second trial on, the first evaluation is the cached one (the fresh adapter has B = 0);
        # warm[1] == cold[1] below proves it equal to a freshly computed one, bitwise
        assert parts.reused == ([] if i == 0 else ["tokenizer", "data", "base model", "initial evaluation"])
        base = parts._base[1]
        # the adapter is gone again: no LoRA layer, no peft config, nothing trainable, eval mode
        assert not any("lora_" in name for name, _ in base.named_modules())
        assert not hasattr(base, "peft_config")
        assert not any(p.requires_grad for p in base.parameters())
        assert not base.training
        hooks.append(_embedding_hooks(base))
        del base
        _free_trial_memory()  # as the worker does between trials (frozen survivors change no result)
    gc.unfreeze()
    assert hooks[0] == hooks[1] == hooks[2]  # no hook piles up from trial to trial
    cold = [_result(train_run(cfg, tmp_path / f"cold{i}")) for i, cfg in enumerate(cfgs[:2])]
    assert warm[0] == cold[0]
    assert warm[1] == cold[1]
    assert warm[2] == warm[0]  # the first trial's adapter left nothing behind
    assert warm[0]["eval_history"] != warm[1]["eval_history"]


def test_the_kept_base_keeps_its_own_forward(compose, tmp_path):
    """trl's trainers wrap the model's forward in their fused LM head at every init (``add_fused_lm_head`` on
    the PEFT model's base: the kept base model). Each trial wrapped the last trial's wrapper, so a worker's
    non-fused forward (generation, the exact-match objective) went through one wrapper per trial it had run,
    and by 1,000 trials raised RecursionError. The base goes back with the forward it was kept with."""
    from ftsweep.sweeper.warm import WarmComponents
    from ftsweep.train import run as train_run

    parts = WarmComponents()
    cfg = compose(*FAST, "trainer.max_steps=2", "trainer.eval_steps=2")
    train_run(cfg, tmp_path / "t", parts=parts)
    base = parts._base[1]
    assert "forward" not in vars(base)  # the class's own forward, no wrapper left on the instance
    assert base.forward.__func__ is type(base).forward


def test_full_fine_tune_never_reuses_its_base(compose, tmp_path):
    from ftsweep.sweeper.warm import WarmComponents
    from ftsweep.train import run as train_run

    parts = WarmComponents()
    cfg = compose(*FAST, "trainer.max_steps=2", "trainer.eval_steps=2", "lora=none")
    a = train_run(cfg, tmp_path / "a", parts=parts)
    assert parts._base is None
    b = train_run(cfg, tmp_path / "b", parts=parts)
    assert parts.reused == ["tokenizer", "data"]
    assert _result(a) == _result(b)


def test_changed_model_settings_rebuild_the_base(compose, tmp_path):
    from ftsweep.sweeper.warm import WarmComponents
    from ftsweep.train import run as train_run

    parts = WarmComponents()
    train_run(compose(*FAST, "trainer.max_steps=2", "trainer.eval_steps=2"), tmp_path / "a", parts=parts)
    first = parts._base[1]
    train_run(compose(*FAST, "trainer.max_steps=2", "trainer.eval_steps=2", "quantization=nf4"), tmp_path / "b",
              parts=parts)
    assert parts.reused == ["tokenizer", "data"] and parts._base[1] is not first


def test_the_worker_freezes_what_survives_a_trial_and_a_dropped_base_is_still_collected(compose, tmp_path):
    """Between trials the worker freezes the survivors out of the cyclic GC (so Trainer.train's gc.collect
    scans only the new trial's objects); a kept base model dropped later is unfrozen and collected, even when
    it sits in a reference cycle."""
    import gc
    import weakref

    from ftsweep.sweeper.warm import WarmComponents
    from ftsweep.sweeper.worker import _free_trial_memory
    from ftsweep.train import run as train_run

    parts = WarmComponents()
    try:
        train_run(compose(*FAST, "trainer.max_steps=2", "trainer.eval_steps=2"), tmp_path / "a", parts=parts)
        first = parts._base[1]
        first._test_cycle = [first]  # only the cyclic collector can free it now
        gone = weakref.ref(first)
        del first
        _free_trial_memory()
        assert gc.get_freeze_count() > 0 and gone() is not None  # kept, frozen
        train_run(compose(*FAST, "trainer.max_steps=2", "trainer.eval_steps=2", "quantization=nf4"),
                  tmp_path / "b", parts=parts)  # another base model: the first one is dropped
        _free_trial_memory()
        assert gone() is None
    finally:
        gc.unfreeze()


def test_garbage_frozen_with_a_trials_survivors_is_collected_within_50_trials():
    """What is alive when the worker freezes a trial's survivors and dies later in a reference cycle (a
    trial's finished W&B run, its parsed config: about 180 objects a trial on the quickstart) sits in the
    frozen generation, which no collection scans: it piled up for as long as the worker ran. Every
    ``worker.FULL_COLLECT_EVERY`` trials (at most 50) the worker unfreezes and collects everything once."""
    import gc
    import weakref

    from ftsweep.sweeper import worker

    class Node:
        pass

    try:
        node = Node()
        node.cycle = node  # alive at this freeze, cyclic garbage right after it
        gone = weakref.ref(node)
        worker._free_trial_memory()
        del node
        for _ in range(50):
            worker._free_trial_memory()
        assert gone() is None
    finally:
        gc.unfreeze()


def _worker_pid(trial_dir) -> int:
    text = (trial_dir / "trial.log").read_text()
    m = re.search(r"^# warm worker (\d+): trial (\d+) of this worker", text, re.MULTILINE)
    assert m, text[-2000:]
    return int(m.group(1))


@pytest.mark.slow
def test_warm_sweep_matches_cold_runs_and_replaces_a_failed_worker(tmp_path, cache_dir, compose):
    """A real sweep with one warm worker: trials that time out (a raise inside training) fail with their
    reason and end the worker; the next trial runs in a fresh one, a reused worker builds the next config
    from the last; every complete trial's metrics equal a cold run of its saved config."""
    from ftsweep.train import run as train_run

    sd = tmp_path / "sweep"
    args = [sys.executable, "-m", "ftsweep", "train", "-m", "hydra/sweeper=ftsweep_optuna", *FAST,
            "trainer.max_steps=4", "trainer.eval_steps=2", f"cache_dir={cache_dir}",
            "optimizer.lr=choice(1e-3, 4e-3)", "trainer.timeout_s=choice(0.0, 1e-9)",
            "hydra.sweeper.sampler.name=grid", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_workers=1",
            "hydra.sweeper.warm_workers=true", "hydra.sweeper.max_failure_rate=1.0", "hydra.sweeper.report=false",
            "hydra.sweeper.progress=plain", f"hydra.sweep.dir={sd}", "hydra.sweeper.study_name=w"]
    r = run(args, tmp_path, timeout=600, fake=False)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load(sd, name="w")
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    pids = [_worker_pid(sd / f"trial_{t.number}") for t in trials]
    for t, pid in zip(trials, pids):
        if t.params["trainer.timeout_s"] > 0:
            assert t.state.name == "FAIL" and t.user_attrs["reason"].startswith("timeout"), t.user_attrs
            assert rundir.read_failure(sd / f"trial_{t.number}")["reason"].startswith("timeout")
        else:
            assert t.state.name == "COMPLETE", t.user_attrs
    for i in range(1, 4):  # a worker outlives a good trial, never a failed one
        after_failure = trials[i - 1].state.name == "FAIL"
        assert (pids[i] != pids[i - 1]) == after_failure, (pids, [t.state.name for t in trials])
    assert len(set(pids)) == 1 + sum(t.state.name == "FAIL" for t in trials[:-1])
    for i in range(1, 4):  # a reused worker builds the trial config from the previous one (only values differ)
        said = "reusing trial config, tokenizer" in (sd / f"trial_{trials[i].number}" / "trial.log").read_text()
        assert said == (pids[i] == pids[i - 1]), i
    for t in trials:
        if t.state.name != "COMPLETE":
            continue
        trial_dir = sd / f"trial_{t.number}"
        warm = json.loads((trial_dir / "metrics.json").read_text())
        assert warm["objective"] == t.value
        cold = train_run(rundir.load_config(trial_dir), tmp_path / f"cold{t.number}")
        assert _result(warm) == _result(cold)
    assert not (sd / "warm_workers.log").exists()  # nothing went wrong outside a trial (an empty log is removed)


def test_warm_workers_step_aside_for_a_wrapped_trial_command(tmp_path):
    """FTSWEEP_TRIAL_CMD (here: the fake trial) wraps every trial in its own command: the sweep says so and
    runs its trials cold."""
    from sweep_helpers import states, sweep_args

    sd = tmp_path / "s"
    r = run(sweep_args(sd, "hydra.sweeper.warm_workers=true", n_trials=2), tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert ("hydra.sweeper.warm_workers: trials run cold (FTSWEEP_TRIAL_CMD wraps each trial in a command of its "
            "own)") in r.stderr
    assert states(load(sd)) == {0: "COMPLETE", 1: "COMPLETE"}
    assert not (sd / "warm_workers.log").exists()


@pytest.mark.slow
def test_idle_workers_exit_on_their_own_at_the_end(tmp_path, cache_dir):
    """At the end of a sweep its idle workers were SIGKILLed, so what their libraries made at import stayed
    behind: two empty ``tmp*wandb-media`` / ``tmp*wandb-artifacts`` folders in ``$TMPDIR`` per worker (also with
    ``logger=none``). An idle worker now gets its stdin closed and exits as Python does; nothing is left."""
    tmp = tmp_path / "tmp dir 임시"
    tmp.mkdir()
    sd = tmp_path / "sweep"
    args = [sys.executable, "-m", "ftsweep", "train", "-m", "hydra/sweeper=ftsweep_optuna", *FAST,
            "trainer.max_steps=2", "trainer.eval_steps=2", f"cache_dir={cache_dir}", "logger=none",
            "optimizer.lr=choice(1e-3, 4e-3)", "hydra.sweeper.sampler.name=grid", "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_workers=2", "hydra.sweeper.warm_workers=true", "hydra.sweeper.report=false",
            "hydra.sweeper.progress=plain", f"hydra.sweep.dir={sd}", "hydra.sweeper.study_name=w"]
    r = run(args, tmp_path, timeout=600, fake=False, TMPDIR=str(tmp))
    assert r.returncode == 0, r.stderr[-3000:]
    assert [t.state.name for t in load(sd, name="w").trials] == ["COMPLETE", "COMPLETE"]
    assert sorted(p.name for p in tmp.iterdir() if "wandb" in p.name) == []
