"""An evaluation loss that does not depend on the evaluation batch size.

transformers' evaluation loop averages the per-batch losses row by row (huggingface/transformers#39241, open):
for SFT that is a mean of per-batch token means, so the same model on the same rows scores differently with
another ``trainer.per_device_eval_batch_size`` (the quickstart's tiny model after 60 steps: 6.157 at 8, 6.122 at
32). A sweep ranks trials by this value and halves a trial's eval batch when it runs out of memory
(``ftsweep.sweeper.outcome.oom_retry``), so it must be the same whatever the batching: every validation token's
loss averaged (the positions trl's loss counts). DPO's loss is per pair, which the row-wise mean already weighs
right (accelerate trims the last partial batch's repeated values); KTO's has a per-batch KL term and is left as is.

A batch that gives no finite loss makes the whole value non-finite (transformers drops such batches from the
mean with ``logging_nan_inf_filter``, which would let a diverged model score on the rows it still fits).
"""

from __future__ import annotations

from typing import Any


class BatchFreeEvalLoss:
    """Mixin before trl's ``SFTTrainer``: ``eval_loss`` as the mean over every validation token."""

    _eval_sums: list | None = None

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        import torch

        out = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if self._eval_sums is None or out[0] is None:
            return out
        real = _real_rows(self.accelerator, inputs)
        if real == 0:  # only the rows accelerate repeated to fill the last batch (DDP): counted on another rank
            return out
        if real is not None:  # the first `real` rows are this rank's share, the rest repeats: score them alone
            # (the unwrapped model, not trl's compute_loss: that gathers its metrics across ranks, and the other
            # ranks make no such call)
            part = {k: v[:real] for k, v in inputs.items() if k in _MODEL_KEYS and _batched(v, inputs)}
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = self.accelerator.unwrap_model(model)(**part, use_cache=False).loss.detach().float()
            weight = _label_tokens(part)
        else:
            weight, loss = _label_tokens(inputs), out[0].detach().float().mean()
        weight = torch.as_tensor(weight, dtype=torch.float32, device=loss.device)
        self._eval_sums.append(torch.stack([loss * weight, weight]))
        return out

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        import torch

        self._eval_sums = []
        try:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only=prediction_loss_only,
                                             ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
            sums = self._eval_sums
        finally:
            self._eval_sums = None
        key = f"{metric_key_prefix}_loss"
        if sums and key in output.metrics:
            total = torch.stack(sums).sum(0)
            total = self.accelerator.reduce(total, reduction="sum")  # every process's batches (DDP)
            if total[1] > 0:
                output.metrics[key] = (total[0] / total[1]).item()
        return output


_MODEL_KEYS = ("input_ids", "attention_mask", "labels", "shift_labels", "position_ids", "token_type_ids")


def _rows(inputs: dict[str, Any]) -> int:
    return int(inputs["input_ids"].shape[0]) if "input_ids" in inputs else int(inputs["labels"].shape[0])


def _batched(value: Any, inputs: dict[str, Any]) -> bool:
    return getattr(value, "ndim", 0) >= 1 and value.shape[0] == _rows(inputs)


def _real_rows(accelerator, inputs: dict[str, Any]) -> int | None:
    """How many of this batch's rows are real when accelerate filled the last evaluation batch with repeated
    rows (DDP, ``even_batches``: the validation rows do not divide into processes x batch size); None: all.

    accelerate's ``gather_for_metrics`` keeps the first ``remainder`` rows of the last gathered batch, which
    lists rank 0's rows, then rank 1's, ...: this rank's real rows are the first ones of its share of those."""
    state = accelerator.gradient_state
    if accelerator.num_processes < 2 or not state.end_of_dataloader or state.remainder is None or state.remainder <= 0:
        return None
    rows = _rows(inputs)
    if inputs.get("position_ids") is not None and rows == 1:
        return None  # padding-free (packed) batch: one flattened row, its samples cannot be told apart
    real = max(0, min(rows, state.remainder - accelerator.process_index * rows))
    return None if real == rows else real


def _label_tokens(inputs: dict[str, Any]):
    """The batch's label tokens after the causal shift: the positions trl's loss averages over."""
    shifted = inputs.get("shift_labels")
    if shifted is None:
        shifted = inputs["labels"][..., 1:]
    return (shifted != -100).sum()
