"""DPO: trl's DPOTrainer on pre-tokenized pairs (``prompt_ids`` / ``chosen_ids`` / ``rejected_ids``).

The reference is the policy's own weights with the new adapter off: trl keeps a frozen copy of the
starting adapter (a fresh LoRA adapter is zero, so this is the base or init_from model) and needs no
second model in memory.
"""

from __future__ import annotations

from typing import Any

# Eval DPO loss: continuous (reward accuracy saturates at 1.0 on easy pairs, which leaves a sweep with ties).
OBJECTIVE = ("eval_loss", "minimize")
METRICS = ("eval_rewards/accuracies", "eval_rewards/margins", "eval_rewards/chosen", "eval_rewards/rejected",
           "eval_logps/chosen", "eval_logps/rejected")
# The common evaluation metrics (ftsweep.config.objective.KNOWN_METRICS) trl's DPOTrainer logs (no perplexity:
# the DPO loss is not a language-model loss).
COMMON_EVAL_METRICS = ("eval_loss", "eval_mean_token_accuracy", "eval_entropy")
# Memory model (ftsweep.memory): chosen + rejected trained together (2 rows per example), then the reference pass over both.
MEMORY = (2, 2)
# Metrics whose scale a swept key changes: the loss is -log sigmoid(beta x log-ratio margin) (other loss types
# other functions of it), so trials with another beta are not comparable on them (ftsweep.stages.registry)
SCALED_BY = {"stage.beta": ("eval_loss", "eval_rewards/margins", "eval_rewards/chosen", "eval_rewards/rejected"),
             "stage.loss_type": ("eval_loss",)}
SCALE_FREE = "objective.metric=eval_rewards/accuracies (the share of pairs ranked right, which beta does not scale)"
WARM = False
LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust", "exo_pair", "nca_pair", "bco_pair", "sppo_hard", "aot",
              "apo_zero", "apo_down", "sigmoid_norm")


def datasets(cfg: Any, tokenizer: Any) -> Any:
    from ftsweep.data.preference import build_preference_datasets

    return build_preference_datasets(cfg, tokenizer, paired=True, max_prompt_length=cfg.stage.max_prompt_length)


def trainer(cfg: Any, model: Any, tokenizer: Any, bundle: Any, common: dict[str, Any], callbacks: list) -> Any:
    from trl import DPOConfig, DPOTrainer

    from ftsweep.stages.ddp import AllRanksTrainLoss

    class PretokenizedDPOTrainer(AllRanksTrainLoss, DPOTrainer):
        """The rows are tokenized by ftsweep (chat template, length policy, counts): trl's own step is skipped."""

        def _prepare_dataset(self, dataset, *args, **kwargs):
            return dataset

    s = cfg.stage
    args = DPOConfig(**common, beta=s.beta, loss_type=[s.loss_type], label_smoothing=s.label_smoothing,
                     max_length=cfg.data.cutoff_len)
    return PretokenizedDPOTrainer(model=model, ref_model=None, args=args, train_dataset=bundle.train,
                                  eval_dataset=bundle.eval, processing_class=tokenizer, callbacks=callbacks)
