"""``lora.init``: how the adapter starts (peft's init_lora_weights). PiSSA / OLoRA move part of each adapted
weight into the adapter: the saved adapter is converted to apply to the original base, a warm worker never keeps
the changed base, and what cannot work (quantized weights, a reference model with the adapter off) is one line."""

from __future__ import annotations

import json

import pytest
from conftest import FAST

IDS = [[1, 17, 42, 99, 7, 300, 12, 5, 64, 81]]


def _model(compose, *overrides):
    from ftsweep.model import apply_lora, load_model, load_tokenizer

    cfg = compose(*FAST, *overrides)
    tok = load_tokenizer(cfg)
    return cfg, tok, apply_lora(cfg, load_model(cfg, tok))


def _logits(model):
    import torch

    with torch.no_grad():
        return model.eval()(torch.tensor(IDS)).logits


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_4", "olora"])
def test_converted_adapter_on_the_original_base_is_the_trained_model(compose, tmp_path, init):
    import torch
    from peft import PeftModel

    from ftsweep.model import load_model, save_converted_adapter, save_initial_adapter

    cfg, tok, model = _model(compose, f"lora.init={init}")
    base = load_model(cfg, tok)
    base_weight = base.model.layers[0].self_attn.q_proj.weight
    residual = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    assert not torch.equal(residual, base_weight)  # the base keeps only the residual
    assert torch.allclose(_logits(model), _logits(base), atol=1e-4)  # ... and the start is the base model
    save_initial_adapter(model, tmp_path / "init")
    with torch.no_grad():  # "training": move every A and B
        gen = torch.Generator().manual_seed(0)
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    trained = _logits(model)
    save_converted_adapter(model, tmp_path / "adapter", tmp_path / "init")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["r"] == 2 * cfg.lora.r and saved["init_lora_weights"] is True
    reloaded = PeftModel.from_pretrained(load_model(cfg, tok), str(tmp_path / "adapter"))
    assert not torch.allclose(trained, _logits(base), atol=1e-3)
    assert torch.allclose(_logits(reloaded), trained, atol=1e-4)


def test_gaussian_starts_at_the_base_model_and_keeps_it(compose):
    import torch

    from ftsweep.model import load_model

    cfg, tok, model = _model(compose, "lora.init=gaussian")
    assert model.peft_config["default"].init_lora_weights == "gaussian"
    assert all(not p.any() for n, p in model.named_parameters() if "lora_B" in n)
    assert torch.equal(_logits(model), _logits(load_model(cfg, tok)))


def test_a_pissa_run_saves_an_adapter_for_the_original_model(compose, tmp_path):
    from ftsweep.train import run

    m = run(compose(*FAST, "trainer.max_steps=3", "trainer.eval_steps=3", "lora.init=pissa"), tmp_path / "run")
    assert m["status"] == "complete"
    assert json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())["r"] == 32
    init = json.loads((tmp_path / "run" / "adapter_init" / "adapter_config.json").read_text())
    assert init["r"] == 16 and init["init_lora_weights"] is True


def test_a_warm_worker_never_keeps_a_base_that_pissa_changed(compose, tmp_path):
    from ftsweep.sweeper.warm import WarmComponents
    from ftsweep.train import run

    keys = ("initial_eval_loss", "eval_loss", "train_loss")
    steps = [*FAST, "trainer.max_steps=2", "trainer.eval_steps=2"]
    parts = WarmComponents()
    first = run(compose(*steps), tmp_path / "w0", parts=parts)
    pissa = run(compose(*steps, "lora.init=pissa"), tmp_path / "w1", parts=parts)
    assert parts._base is None and "base model" not in parts.reused
    after = run(compose(*steps), tmp_path / "w2", parts=parts)
    cold = run(compose(*steps, "lora.init=pissa"), tmp_path / "cold")
    assert {k: pissa[k] for k in keys} == {k: cold[k] for k in keys}
    assert {k: after[k] for k in keys} == {k: first[k] for k in keys}  # the next trial starts from the true base


@pytest.mark.parametrize(("overrides", "message"), [
    (["lora.init=pisa"], r"^lora.init: got 'pisa'; allowed: default, gaussian, pissa, olora, pissa_niter_N"),
    (["lora.init=pissa_niter_0"], r"^lora.init: got 'pissa_niter_0'"),
    (["lora.init=pissa", "quantization=nf4"], r"^lora.init: pissa changes the base weights .*\(quantization=none\)"),
    (["lora.init=olora", "stage=dpo", "data=proxy_pairs"], r"^lora.init: .* stage=dpo's reference"),
])
def test_inits_that_cannot_work_are_one_line(compose, overrides, message):
    from ftsweep.config.compose import ConfigFailure

    with pytest.raises(ConfigFailure, match=message):
        compose(*overrides)


def test_a_resume_across_a_pissa_init_is_refused(compose, tmp_path):
    from ftsweep.rundir import resume_problem

    point = tmp_path / "checkpoints" / "checkpoint-2"
    point.mkdir(parents=True)
    (point / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (point / "adapter_config.json").write_text(json.dumps({"r": 16, "init_lora_weights": "pissa"}))
    assert "was trained from lora.init=pissa, but this run has lora.init=default" in resume_problem(
        compose(*FAST), point)
    assert resume_problem(compose(*FAST, "lora.init=pissa"), point) is None
    (point / "adapter_config.json").write_text(json.dumps({"r": 16, "init_lora_weights": True}))
    assert resume_problem(compose(*FAST, "lora.init=gaussian"), point) is None  # both start at B = 0


def test_peft_and_llama_factory_names_map_to_it():
    from ftsweep.config.keys import override_for

    assert override_for("init_lora_weights", "olora") == "lora.init=olora"
    assert override_for("pissa_init", True) == "lora.init=pissa"
    assert override_for("pissa_init", False) is None
