"""Schemas of the ``stage`` config group: one dataclass per training stage (``conf/stage/<name>.yaml``).

Each option file starts with ``defaults: [<name>_schema, _self_]``, so a key of another stage
(``stage=sft stage.beta=0.1``) fails at composition, naming the key. Which trainer, data columns and
default objective a stage uses is decided by its module under :mod:`ftsweep.stages`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SftStage:
    """Supervised fine-tuning (trl SFTTrainer): today's behaviour, the default."""

    name: str = "sft"


@dataclass
class DpoStage:
    """Direct preference optimisation on (prompt, chosen, rejected) pairs (trl DPOTrainer)."""

    name: str = "dpo"
    # How far the policy may move from the reference (higher = closer to it).
    beta: float = 0.1
    # trl's DPO losses: sigmoid | ipo | hinge | robust | exo_pair | nca_pair | bco_pair | sppo_hard | aot |
    # apo_zero | apo_down | sigmoid_norm
    loss_type: str = "sigmoid"
    # Robust DPO / EXO: the probability that a preference label is flipped.
    label_smoothing: float = 0.0
    # Pairs whose prompt is longer (in tokens) are dropped and counted; null = data.cutoff_len - 1.
    max_prompt_length: int | None = None


@dataclass
class KtoStage:
    """KTO on unpaired (prompt, completion, desirable?) rows (trl KTOTrainer); pairs are unpaired."""

    name: str = "kto"
    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0
    # Rows whose prompt is longer (in tokens) are dropped and counted; null = data.cutoff_len - 1.
    max_prompt_length: int | None = None


@dataclass
class RewardSpec:
    """One GRPO reward: ``name`` chooses it, ``weight`` scales it in the sum (trl ``reward_weights``)."""

    # exact_match | regex | length_penalty | function
    name: str = "exact_match"
    weight: float = 1.0
    # regex: 1.0 when the stripped completion fully matches, else 0.0
    pattern: str | None = None
    # length_penalty: -(completion tokens above target) / target
    target: int | None = None
    # function: "my_pkg.rewards:score" with trl's reward-function signature (prompts, completions, **columns)
    function: str | None = None


@dataclass
class GrpoStage:
    """GRPO with verifiable rewards (trl GRPOTrainer): prompts from any SFT format, the answer as reference."""

    name: str = "grpo"
    num_generations: int = 4
    max_completion_length: int = 16
    # KL weight against the reference (0 = no reference pass, trl's default)
    beta: float = 0.0
    temperature: float = 1.0
    rewards: list[RewardSpec] = field(default_factory=list)


STAGE_SCHEMAS: dict[str, type] = {"sft": SftStage, "dpo": DpoStage, "kto": KtoStage, "grpo": GrpoStage}


def register_stage_schemas() -> None:
    """Store each stage's schema as ``stage/<name>_schema`` in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for name, schema in STAGE_SCHEMAS.items():
        cs.store(group="stage", name=f"{name}_schema", node=schema)


def stage_keys() -> str:
    """Each stage's keys, for an error about a key on the wrong stage."""
    from dataclasses import fields

    return "; ".join(f"{n}: {', '.join(f.name for f in fields(s) if f.name != 'name') or '(none)'}"
                     for n, s in STAGE_SCHEMAS.items())
