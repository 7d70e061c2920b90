"""SFT: trl's SFTTrainer on rows tokenized by :mod:`ftsweep.data` (input_ids + labels)."""

from __future__ import annotations

from typing import Any

OBJECTIVE = ("eval_loss", "minimize")
METRICS: tuple[str, ...] = ()
# The common evaluation metrics (ftsweep.config.objective.KNOWN_METRICS) a run of this stage writes.
COMMON_EVAL_METRICS = ("eval_loss", "eval_mean_token_accuracy", "eval_entropy", "eval_perplexity")
# A warm sweep worker may keep this stage's model and data between trials (ftsweep.warm).
# Memory model (ftsweep.memory): one sequence per example, no reference pass.
MEMORY = (1, 0)
WARM = True


def datasets(cfg: Any, tokenizer: Any) -> Any:
    from ftsweep.data import build_datasets

    return build_datasets(cfg, tokenizer)


def trainer(cfg: Any, model: Any, tokenizer: Any, bundle: Any, common: dict[str, Any], callbacks: list) -> Any:
    """SFTTrainer; ``common`` holds the trainer/optimizer/scheduler arguments every stage shares."""
    from trl import SFTConfig, SFTTrainer

    from ftsweep.stages.ddp import AllRanksTrainLoss
    from ftsweep.stages.eval_loss import BatchFreeEvalLoss

    class ExactEvalSFTTrainer(BatchFreeEvalLoss, AllRanksTrainLoss, SFTTrainer):
        """eval_loss: every validation token's loss averaged, whatever the eval batch size (and the ranks)."""

    packing = cfg.data.packing and cfg.data.format != "text"  # (text rows are cut into blocks by ftsweep.data)
    args = SFTConfig(**common, max_length=cfg.data.cutoff_len, packing=packing)
    trainer = ExactEvalSFTTrainer(model=model, args=args, train_dataset=bundle.train, eval_dataset=bundle.eval,
                                  processing_class=tokenizer, callbacks=callbacks)
    if packing:
        from ftsweep.model import check_packed_attention

        check_packed_attention(trainer.model)  # on its training device, with its attention implementation
    return trainer
