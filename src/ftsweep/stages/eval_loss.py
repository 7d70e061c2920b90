"""An evaluation loss that does not depend on the evaluation batch size.

transformers' evaluation loop averages the per-batch losses row by row (huggingface/transformers#39241, open):
for SFT that is a mean of per-batch token means, so the same model on the same rows scores differently with
another ``trainer.per_device_eval_batch_size`` (the quickstart's tiny model after 60 steps: 6.157 at 8, 6.122 at
32). A sweep ranks trials by this value and halves a trial's eval batch when it runs out of memory
(``ftsweep.sweeper.outcome.oom_retry``), so it must be the same whatever the batching: every validation token's
loss averaged (the positions trl's loss counts). DPO's loss is per pair, which the row-wise mean already weighs
right (accelerate trims the last partial batch's repeated values); KTO's has a per-batch KL term and is left as is.

trl's ``eval_mean_token_accuracy`` and ``eval_entropy`` have the same flaw (a mean of per-batch fractions, and under
DDP its per-batch gather keeps only the first ranks' counts on the last batch, with their repeated rows): they are
the fraction of every validation label token predicted top-1 and the mean entropy over those tokens, from the same
forward pass (the fused LM head's ``is_top1`` / ``entropy`` / ``label_mask``, read off the model's output).

Under DDP the rows accelerate repeats to fill the last evaluation batch are left out of all three (``_real_rows``),
also in a padding-free (packed) batch, where they are the flattened row's last tokens (``_packed_cut``).

With one process the validation rows are fed longest first (:meth:`BatchFreeEvalLoss._get_eval_sampler`): a
batch holds rows of similar length, so it carries little padding (the bundled Alpaca demo rows in batches of 8:
56% of the token slots were padding in file order, 5% sorted), the same idea as the generation objectives'
length-sorted batches. The values do not depend on the batching (above), only on the rows.

A batch that gives no finite loss makes the whole value non-finite (transformers drops such batches from the
mean with ``logging_nan_inf_filter``, which would let a diverged model score on the rows it still fits).
"""

from __future__ import annotations

from typing import Any


class BatchFreeEvalLoss:
    """Mixin before trl's ``SFTTrainer``: ``eval_loss`` as the mean over every validation token."""

    _eval_sums: list | None = None
    _eval_counts: list | None = None
    _eval_rows: Any = None  # the evaluation dataloader's dataset (the packed rows, see _packed_cut)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        import torch

        seen = []  # the fused LM head's output of this step's forward (SFTTrainer.compute_loss)
        hook = None
        if self._eval_counts is not None and hasattr(model, "register_forward_hook"):
            hook = model.register_forward_hook(lambda _m, _a, output: seen.append(output))
        try:
            out = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        finally:
            if hook is not None:
                hook.remove()
        if self._eval_sums is None or out[0] is None:
            return out
        real = _real_rows(self.accelerator, inputs, self.args.eval_batch_size)
        if real == 0:  # only the rows accelerate repeated to fill the last batch (DDP): counted on another rank
            return out
        if real is not None and _packed(inputs):  # a padding-free batch: its real rows are its first `cut` tokens
            cut = _packed_cut(self.accelerator, inputs, real, self._eval_rows, self.args.eval_batch_size)
            fused = _fused(seen)
            if cut is None or fused is None:  # cannot be cut (see _packed_cut, _count_tokens): the whole batch counts
                real = None
            else:
                mask = fused.label_mask[:, :cut]
                self._count_tokens(seen, rows=1, cols=cut)
                loss = -(fused.log_probs[:, :cut].detach().double() * mask).sum()
                self._eval_sums.append(torch.stack([loss.float(), mask.sum().float()]))
                return out
        self._count_tokens(seen, rows=_rows(inputs) if real is None else real)
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

    def _get_eval_sampler(self, eval_dataset):
        """transformers' sequential sampler (one process, ``group_by_length`` off) in order of decreasing length
        (ties in file order), so batches carry little padding; the longest batch first, as transformers'
        ``LengthGroupedSampler`` does, so one that does not fit in memory fails at once. Under DDP (sequential
        shards, see :func:`_packed_cut`) and for padding-free (packed) batches, transformers' own."""
        from torch.utils.data import SequentialSampler

        sampler = super()._get_eval_sampler(eval_dataset)
        if not isinstance(sampler, SequentialSampler) or getattr(self.args, "padding_free", False):
            return sampler
        lengths = _row_lengths(eval_dataset)
        return sampler if lengths is None else sorted(range(len(lengths)), key=lambda i: -lengths[i])

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        import torch

        self._eval_sums, self._eval_counts = [], []
        self._eval_rows = getattr(dataloader, "dataset", None)
        try:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only=prediction_loss_only,
                                             ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
            sums, counts = self._eval_sums, self._eval_counts
        finally:
            self._eval_sums = self._eval_counts = self._eval_rows = None
        key = f"{metric_key_prefix}_loss"
        if sums is not None and key in output.metrics:
            # every rank takes part in the reduce, also one whose batches were all repeats (no sums: DDP with fewer
            # validation rows than the other ranks' batches hold, which hung or mismatched the next collective)
            total = torch.stack(sums).sum(0) if sums else torch.zeros(2, device=self.accelerator.device)
            total = self.accelerator.reduce(total, reduction="sum")  # every process's batches (DDP)
            if total[1] > 0:
                output.metrics[key] = (total[0] / total[1]).item()
        self._exact_token_metrics(counts)
        return output

    def _count_tokens(self, seen: list, rows: int, cols: int | None = None) -> None:
        """This step's label tokens, top-1 hits and entropy sum over its real part: the first ``rows`` rows, and
        of a packed row its first ``cols`` tokens."""
        import torch

        out = _fused(seen)
        if out is None:
            self._eval_counts = None  # no fused-head output (e.g. a compute_loss_func): trl's own values stand
            return
        if self._eval_counts is None:
            return
        mask, top1, entropy = (x[:rows, :cols] for x in (out.label_mask, out.is_top1, out.entropy))
        self._eval_counts.append(torch.stack([mask.sum().double(), (top1 & mask).sum().double(),
                                              (entropy.detach().double() * mask).sum()]))

    def _exact_token_metrics(self, counts: list | None) -> None:
        """Replace trl's per-batch means (logged by its ``log``) with the fractions over every label token."""
        import torch

        metrics = getattr(self, "_metrics", {}).get("eval")
        if metrics is None or "mean_token_accuracy" not in metrics:
            return
        # every rank takes part in the reduce, also one whose batches were all repeats (empty list); the 4th value
        # counts the ranks that had no fused-head output to count from
        total = torch.zeros(4, dtype=torch.float64, device=self.accelerator.device)
        if counts is None:
            total[3] = 1
        elif counts:
            total[:3] = torch.stack(counts).sum(0).to(total.device)
        total = self.accelerator.reduce(total, reduction="sum")
        if total[3] == 0 and total[0] > 0:
            metrics["mean_token_accuracy"] = [(total[1] / total[0]).item()]
            metrics["entropy"] = [(total[2] / total[0]).item()]


_MODEL_KEYS = ("input_ids", "attention_mask", "labels", "shift_labels", "position_ids", "token_type_ids")


def _rows(inputs: dict[str, Any]) -> int:
    return int(inputs["input_ids"].shape[0]) if "input_ids" in inputs else int(inputs["labels"].shape[0])


def _row_lengths(dataset: Any) -> list[int] | None:
    """Each row's token count (its ``input_ids``, read from the Arrow column, no row decoded), or None where the
    rows have no such column (another dataset type)."""
    try:
        import pyarrow.compute as pc

        column = dataset.select_columns(["input_ids"]).with_format("arrow")[:]["input_ids"]
        return pc.list_value_length(column).to_pylist()
    except (AttributeError, KeyError, TypeError, ValueError, ImportError):
        return None


def _batched(value: Any, inputs: dict[str, Any]) -> bool:
    return getattr(value, "ndim", 0) >= 1 and value.shape[0] == _rows(inputs)


def _fused(seen: list):
    """The forward's output with trl's fused LM head fields (per-token ``log_probs``, ``is_top1``, ``entropy``,
    ``label_mask``), or None."""
    keys = ("log_probs", "is_top1", "entropy", "label_mask")
    return next((o for o in seen if all(getattr(o, k, None) is not None for k in keys)), None)


def _packed(inputs: dict[str, Any]) -> bool:
    return inputs.get("position_ids") is not None and _rows(inputs) == 1


def _packed_cut(accelerator, inputs: dict[str, Any], real: int | None, rows, batch_size: int) -> int | None:
    """For a padding-free (packed) batch whose last dataset rows are repeats (DDP): how many of its flattened tokens
    are this rank's real rows, else None.

    The batch is the concatenation of its dataset rows (each one packed sequence). The evaluation sampler is
    sequential, so the real rows of the last round are the validation set's last ``remainder`` rows, this rank's
    share being its ``real`` rows after the lower ranks' ones: their lengths give the cut, which must fall where a
    sequence starts (``position_ids`` 0)."""
    if real is None or not _packed(inputs) or rows is None:
        return None
    state = accelerator.gradient_state
    try:
        start = len(rows) - state.remainder + accelerator.process_index * int(batch_size)
        cut = sum(len(rows[i]["input_ids"]) for i in range(start, start + real))
    except (KeyError, IndexError, TypeError):
        return None
    position_ids = inputs["position_ids"][0]
    return cut if 0 < cut < len(position_ids) and int(position_ids[cut]) == 0 else None


def _real_rows(accelerator, inputs: dict[str, Any], batch_size: int) -> int | None:
    """How many of this batch's dataset rows are real when accelerate filled the last evaluation batch with repeated
    rows (DDP, ``even_batches``: the validation rows do not divide into processes x batch size); None: all.

    accelerate's ``gather_for_metrics`` keeps the first ``remainder`` rows of the last gathered batch, which
    lists rank 0's rows, then rank 1's, ...: this rank's real rows are the first ones of its share of those.
    A padding-free (packed) batch is one flattened row of ``batch_size`` dataset rows (see :func:`_packed_cut`)."""
    state = accelerator.gradient_state
    if accelerator.num_processes < 2 or not state.end_of_dataloader or state.remainder is None or state.remainder <= 0:
        return None
    rows = int(batch_size) if _packed(inputs) else _rows(inputs)
    real = max(0, min(rows, state.remainder - accelerator.process_index * rows))
    return None if real == rows else real


def _label_tokens(inputs: dict[str, Any]):
    """The batch's label tokens after the causal shift: the positions trl's loss averages over."""
    shifted = inputs.get("shift_labels")
    if shifted is None:
        shifted = inputs["labels"][..., 1:]
    return (shifted != -100).sum()
