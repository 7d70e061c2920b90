"""KTO: trl's KTOTrainer on pre-tokenized unpaired rows (``prompt_ids`` / ``completion_ids`` / ``label``)."""

from __future__ import annotations

from typing import Any

OBJECTIVE = ("eval_loss", "minimize")
METRICS = ("eval_rewards/chosen", "eval_rewards/rejected", "eval_kl", "eval_logps/chosen", "eval_logps/rejected")
# The common evaluation metrics trl's KTOTrainer logs (no token accuracy; no perplexity: not a language-model loss).
COMMON_EVAL_METRICS = ("eval_loss", "eval_entropy")
# Memory model (ftsweep.memory): the completion is trained; the KL completion and the reference run without grad, one pass at a time.
MEMORY = (1, 1)
# Metrics whose scale a swept key changes (see ftsweep.stages.dpo): KTO logs none that beta leaves alone
SCALED_BY = {"stage.beta": ("eval_loss", "eval_rewards/chosen", "eval_rewards/rejected")}
SCALE_FREE = "a fixed stage.beta (KTO logs no preference metric that beta does not scale)"
WARM = False


def datasets(cfg: Any, tokenizer: Any) -> Any:
    from ftsweep.data.preference import build_preference_datasets

    bundle = build_preference_datasets(cfg, tokenizer, paired=False, max_prompt_length=cfg.stage.max_prompt_length)
    labels = bundle.train["label"]
    desirable = sum(labels)
    advice = (one_label(desirable, len(labels) - desirable, cfg.data.path)
              or weight_advice(desirable, len(labels) - desirable, cfg.stage.desirable_weight,
                               cfg.stage.undesirable_weight))
    if advice:
        from ftsweep.notices import notice

        notice(advice)
    return bundle


def one_label(desirable: int, undesirable: int, path: Any) -> str | None:
    """A warning when every training row has one label: KTO weighs desirable against undesirable completions, and
    the other term is then empty (trl trains on without a word; no eval_rewards/rejected, or chosen, is logged)."""
    if desirable and undesirable:
        return None
    kind = "true (desirable)" if desirable else "false (undesirable)"
    return (f"warning: {path}: every KTO training row is labelled {kind} ({desirable + undesirable} rows): the "
            f"{'undesirable' if desirable else 'desirable'} term of the loss is empty; add rows of the other label (a "
            "DPO file's pairs give both)" + (", or train these answers with stage=sft" if desirable else ""))


def weight_advice(desirable: int, undesirable: int, w_des: float, w_und: float) -> str | None:
    """trl's KTOTrainer warning (its dataset preparation, which the pre-tokenized rows skip): with unequal counts,
    the weights should put desirable_weight x desirable / (undesirable_weight x undesirable) in [1, 4/3] (Eq. 8
    of the KTO paper); None when they do or the counts are equal."""
    if desirable == undesirable or not desirable or not undesirable:
        return None
    des = (round(undesirable * w_und / desirable, 2), round(undesirable * w_und / desirable * 1.33, 2))
    und = (round(desirable * w_des / undesirable / 1.33, 2), round(desirable * w_des / undesirable, 2))
    if des[0] <= w_des <= des[1] or und[0] <= w_und <= und[1]:
        return None
    return (f"stage=kto: {desirable} desirable and {undesirable} undesirable training rows: trl recommends EITHER "
            f"stage.desirable_weight in [{des[0]}, {des[1]}] or stage.undesirable_weight in [{und[0]}, {und[1]}] "
            "(not both; Eq. 8 of the KTO paper)")


def _with_kl_completions(dataset: Any, batch_size: int) -> Any:
    """trl's KL estimate: completions rotated by one within each batch (as its own preprocessing does)."""
    def rotate(batch):
        batch["KL_completion_ids"] = [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]
        return batch

    return dataset.map(rotate, batched=True, batch_size=batch_size)


def trainer(cfg: Any, model: Any, tokenizer: Any, bundle: Any, common: dict[str, Any], callbacks: list) -> Any:
    from trl import KTOConfig, KTOTrainer

    from ftsweep.stages.ddp import AllRanksTrainLoss

    batch = cfg.trainer.per_device_train_batch_size

    class PretokenizedKTOTrainer(AllRanksTrainLoss, KTOTrainer):
        """The rows are tokenized by ftsweep; only trl's KL completions are added here."""

        def _prepare_dataset(self, dataset, *args, **kwargs):
            return _with_kl_completions(dataset, batch) if "KL_completion_ids" not in dataset.column_names else dataset

    s = cfg.stage
    # trl's KL completions are rotated against the neighbours of a fixed-order batch: the rows were shuffled
    # once (seeded) when they were built, and are read in that order.
    common = {**common, "train_sampling_strategy": "sequential"}
    args = KTOConfig(**common, beta=s.beta, desirable_weight=s.desirable_weight,
                     undesirable_weight=s.undesirable_weight, max_length=cfg.data.cutoff_len)
    return PretokenizedKTOTrainer(model=model, ref_model=None, args=args, train_dataset=bundle.train,
                                  eval_dataset=bundle.eval, processing_class=tokenizer, callbacks=callbacks)
