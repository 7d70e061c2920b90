"""``lora.loraplus_lr_ratio`` (LoRA+): LoRA's B matrices learn at optimizer.lr x the ratio, the A matrices at lr."""

from __future__ import annotations

import pytest
from conftest import FAST


def adapter(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def largest_b(weights) -> float:
    return max(float(w.abs().max()) for k, w in weights.items() if "lora_B" in k)


def test_b_matrices_take_ratio_times_the_learning_rate(compose, tmp_path):
    """One Adam step moves each trained weight by about lr (m / sqrt(v) = +-1 at the first step); the B
    matrices start at 0, so their largest entry after one step is the step size they were given."""
    from ftsweep.train import run

    one_step = [*FAST, "trainer.max_steps=1", "optimizer.lr=1e-3", "scheduler=constant_with_warmup",
                "scheduler.warmup_steps=0"]
    run(compose(*one_step), tmp_path / "plain")
    run(compose(*one_step, "lora.loraplus_lr_ratio=16"), tmp_path / "plus")
    assert largest_b(adapter(tmp_path / "plain")) == pytest.approx(1e-3, rel=1e-3)
    assert largest_b(adapter(tmp_path / "plus")) == pytest.approx(16e-3, rel=1e-3)


def test_ratio_one_trains_exactly_as_plain_lora(compose, tmp_path):
    from ftsweep.train import run

    steps = [*FAST, "trainer.max_steps=3", "trainer.eval_steps=3"]
    plain = run(compose(*steps), tmp_path / "plain")
    same = run(compose(*steps, "lora.loraplus_lr_ratio=1"), tmp_path / "same")
    assert same["eval_loss"] == plain["eval_loss"]
    a, b = adapter(tmp_path / "plain"), adapter(tmp_path / "same")
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


@pytest.mark.parametrize(("overrides", "message"), [
    (["lora.loraplus_lr_ratio=0"], r"^lora.loraplus_lr_ratio: must be > 0 \(got 0.0\)"),
    (["lora=none", "lora.loraplus_lr_ratio=16"], r"^lora.loraplus_lr_ratio: LoRA\+ sets the learning rate of LoRA's B"),
])
def test_bad_ratios_are_one_line(compose, overrides, message):
    from ftsweep.config.compose import ConfigFailure

    with pytest.raises(ConfigFailure, match=message):
        compose(*overrides)


def test_llama_factory_loraplus_lr_ratio_maps_to_it():
    from ftsweep.config.keys import override_for

    assert override_for("loraplus_lr_ratio", 16.0) == "lora.loraplus_lr_ratio=16.0"
