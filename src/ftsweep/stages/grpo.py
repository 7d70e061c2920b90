"""GRPO: trl's GRPOTrainer on prompts rendered exactly as SFT renders them; the data's answer column
(``output`` / ``completion`` / the last assistant turn) is handed to the rewards as ``answer`` (None for
trl's prompt-only rows), and the row's other columns by their names, as trl hands them."""

from __future__ import annotations

from typing import Any

# Mean reward of the evaluation's sampled completions (trl logs it as eval_reward).
OBJECTIVE = ("eval_reward", "maximize")
METRICS = ("eval_reward", "eval_reward_std")
# The common evaluation metrics that mean something here: the entropy of the sampled completions (trl's eval
# "loss" is the policy loss on the evaluation's own samples, 0.0 without a reference: no objective).
COMMON_EVAL_METRICS = ("eval_entropy",)
# Memory model (ftsweep.memory): a batch row is one prompt + one of its num_generations completions (trl counts
# completions in per_device_train_batch_size), generated first with a KV cache; beta > 0 adds a reference pass.
MEMORY = (1, 0)
WARM = False


def datasets(cfg: Any, tokenizer: Any) -> Any:
    from ftsweep.data.preference import build_prompt_datasets
    from ftsweep.stages.rewards import NEEDS_ANSWER

    # trl's prompt-only rows are read too, unless a reward compares completions with the answer
    return build_prompt_datasets(cfg, tokenizer, tuple(r.name for r in cfg.stage.rewards if r.name in NEEDS_ANSWER))


def trainer(cfg: Any, model: Any, tokenizer: Any, bundle: Any, common: dict[str, Any], callbacks: list) -> Any:
    from trl import GRPOConfig, GRPOTrainer

    from ftsweep.stages.ddp import AllRanksTrainLoss
    from ftsweep.stages.rewards import build_rewards

    class AllRanksGRPOTrainer(AllRanksTrainLoss, GRPOTrainer):
        """train_loss: every rank's (see ftsweep.stages.ddp)."""

    s = cfg.stage
    funcs, weights = build_rewards(s.rewards)
    common = {k: v for k, v in common.items() if k != "dataset_num_proc"}  # GRPO tokenizes while it trains
    args = GRPOConfig(**common, num_generations=s.num_generations, num_generations_eval=s.num_generations,
                      max_completion_length=s.max_completion_length, beta=s.beta, temperature=s.temperature,
                      reward_weights=weights)
    return AllRanksGRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=bundle.train,
                               eval_dataset=bundle.eval, processing_class=tokenizer, callbacks=callbacks)
