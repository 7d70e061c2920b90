"""trl's fused LM head on CPU projects only the labelled positions (ftsweep.stages.lm_head), with the same
per-token values, loss and gradients as when it projects every position."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST
from trl.kernels import ChunkedLogProbFunction, chunked_logprob
from trl.trainer import utils

from ftsweep.stages import lm_head
from ftsweep.stages.lm_head import score_labelled_positions_only
from ftsweep.train import run

OUTPUTS = ("log_probs", "entropy", "is_top1")


def _projected_rows(monkeypatch) -> list[int]:
    """Rows each call of trl's chunked log-prob kernel projects through the LM head."""
    rows: list[int] = []
    apply = ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        rows.append(hidden.shape[0])
        return apply(hidden, *args)

    monkeypatch.setattr(utils._ChunkedLogProbFunction, "apply", spy)
    return rows


def _fused_pass(model, ids, labels):
    model.zero_grad()
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_cpu_projects_labelled_positions_only_with_the_same_values(monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    monkeypatch.setattr(utils, "_use_triton", chunked_logprob._use_triton)  # trl's own; restored after the test
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    utils.add_fused_lm_head(model, outputs=OUTPUTS)
    ids = torch.randint(0, 500, (3, 12))
    labels = torch.full_like(ids, -100)
    labels[0, 8:] = ids[0, 8:]  # answers: the last 4, 2 and 0 tokens (a fully masked row included)
    labels[1, 10:] = ids[1, 10:]
    rows = _projected_rows(monkeypatch)

    every, every_grads = _fused_pass(model, ids, labels)
    assert rows == [3 * 11]  # every next-token position, prompt and padding included
    assert score_labelled_positions_only() and score_labelled_positions_only()  # idempotent
    compact, compact_grads = _fused_pass(model, ids, labels)
    assert rows[1:] == [int((labels[:, 1:] != -100).sum())] == [6]

    torch.testing.assert_close(compact.loss, every.loss, rtol=0, atol=1e-6)
    for name in ("log_probs", "entropy", "is_top1", "label_mask"):
        torch.testing.assert_close(getattr(compact, name), getattr(every, name), rtol=0, atol=1e-6)
    assert (compact.log_probs[labels[:, 1:] == -100] == 0).all()
    assert compact_grads.keys() == every_grads.keys() and compact_grads
    for name, grad in every_grads.items():
        torch.testing.assert_close(compact_grads[name], grad, rtol=1e-5, atol=1e-7)


def test_a_run_projects_fewer_rows_and_gets_the_same_numbers(compose, tmp_path, monkeypatch):
    monkeypatch.setattr(utils, "_use_triton", chunked_logprob._use_triton)
    cfg = compose(*FAST, "trainer.max_steps=2", "trainer.eval_steps=2")
    with monkeypatch.context() as m:
        m.setattr(lm_head, "score_labelled_positions_only", lambda: False)
        rows = _projected_rows(m)
        every = run(cfg, tmp_path / "every")
        every_rows = list(rows)
    assert not utils._use_triton(torch.device("cpu"))
    rows = _projected_rows(monkeypatch)
    compact = run(cfg, tmp_path / "compact")
    assert utils._use_triton(torch.device("cpu"))
    assert every["status"] == compact["status"] == "complete"
    assert len(rows) == len(every_rows)
    assert all(c < e for c, e in zip(rows, every_rows, strict=True))  # prompts and padding are not projected
    for key in ("initial_eval_loss", "train_loss", "eval_loss", "eval_mean_token_accuracy"):
        assert compact[key] == pytest.approx(every[key], rel=1e-6, abs=1e-7), key


@pytest.mark.parametrize("device", ["cuda", "meta"])
def test_other_devices_keep_trls_own_decision(device, monkeypatch):
    monkeypatch.setattr(utils, "_use_triton", chunked_logprob._use_triton)
    before = utils._use_triton(torch.device(device))
    score_labelled_positions_only()
    assert utils._use_triton(torch.device(device)) == before
