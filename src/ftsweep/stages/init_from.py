"""``init_from=<run or trial dir>``: start a stage from a finished run's adapter.

The policy is the base model with that adapter merged into its weights, plus a new adapter; the
reference is the same weights with the new adapter off (trl keeps a frozen copy of the starting, zero
adapter), so the reference is exactly the SFT model and no second model copy is held in memory. This
is TRL's choice for a PEFT policy without ``ref_model``; LLaMA-Factory instead merges earlier adapters
and, with ``create_new_adapter``, trains a new one on top, which is what is done here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftsweep.config.errors import ConfigError


def run_dir_of(path: str | Path) -> Path:
    """A run or trial directory as given, or a sweep folder's best trial (its summary.json ``best_trial_dir``)."""
    import json

    from ftsweep.rundir import RunDir
    from ftsweep.sweepdir import SweepDir

    root = Path(path).expanduser()
    summary = SweepDir(root).summary
    if not RunDir(root).adapter.is_dir() and summary.is_file():
        try:
            best = json.loads(summary.read_text()).get("best_trial_dir")
        except (OSError, ValueError):
            best = None
        if best:
            return Path(best)
    return root


def adapter_dir(path: str | Path) -> Path | None:
    """The adapter folder of a run / trial directory (or the adapter folder itself, or a sweep folder's best
    trial), None if there is none."""
    root = run_dir_of(path)
    for candidate in (root / "adapter", root):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    return None


def init_from_problem(cfg: Any) -> str | None:
    """One line when ``init_from`` cannot be used with this config (checked before anything is written)."""
    init = cfg.get("init_from") if hasattr(cfg, "get") else None
    if not init:
        return None
    from ftsweep.paths import from_launch_dir

    root = from_launch_dir(str(init))
    if root.is_dir():
        root = run_dir_of(root)
    if not root.is_dir():
        return f"init_from: no such directory {str(init)!r}"
    adapter = adapter_dir(root)
    if adapter is None:
        return f"init_from: {str(init)!r} holds no adapter (adapter/adapter_config.json); give a finished LoRA run or trial directory"
    from ftsweep.rundir import ALLOW_FAILED_INIT, incomplete_problem

    if not cfg.get("init_from_allow_failed"):  # a failed / pruned / killed run's adapter: refused as merge does
        problem = incomplete_problem(root, adapter, ALLOW_FAILED_INIT)
        if problem:
            return f"init_from: {problem}"
    run_cfg = root / ".hydra" / "config.yaml"
    if run_cfg.is_file():
        from omegaconf import OmegaConf

        saved = OmegaConf.load(run_cfg)
        theirs = OmegaConf.select(saved, "model.name_or_path")
        tiny = OmegaConf.to_container(saved.model.tiny) if OmegaConf.select(saved, "model.tiny") else None
        ours = OmegaConf.to_container(cfg.model.tiny) if cfg.model.tiny is not None else None
        if theirs != cfg.model.name_or_path or tiny != ours:
            return (f"init_from: the adapter in {str(init)!r} was trained on {theirs!r}, not on this run's base "
                    f"model {cfg.model.name_or_path!r}{' (another tiny spec)' if theirs == cfg.model.name_or_path else ''}")
    if cfg.quantization.method != "none":
        return ("init_from: merging the SFT adapter into a quantized base would change its weights; "
                "use quantization=none with init_from")
    return None


def init_adapters(init: str | Path) -> list[Path]:
    """The adapters an ``init_from`` run stands for, oldest first: the run's own adapter after the adapters of the
    runs it started from (a DPO run's adapter was trained on the SFT model: SFT's adapter comes first)."""
    from omegaconf import OmegaConf

    from ftsweep.paths import from_launch_dir
    from ftsweep.rundir import RunDir, started_in

    chain: list[Path] = []
    init = from_launch_dir(init) if init else init
    while init:
        root, path = run_dir_of(init), adapter_dir(init)
        if path is None or path in chain:
            break
        chain.insert(0, path)
        config = RunDir(root).config
        init = OmegaConf.select(OmegaConf.load(config), "init_from", default=None) if config.is_file() else None
        if init and not Path(str(init)).expanduser().is_absolute():  # relative to where that run started
            init = str((started_in(root) or Path.cwd()) / str(init))
    return chain


def merge_init_adapter(cfg: Any, model: Any) -> Any:
    """``model`` with the ``init_from`` run's adapter (after those of the runs it started from) merged into its
    weights (``model`` when unset): the model a run with ``init_from`` trains on, and what merge / generate start
    from for it."""
    if not cfg.init_from:
        return model
    problem = init_from_problem(cfg)
    if problem:
        raise ConfigError("init_from", problem.removeprefix("init_from: "))
    from ftsweep.console import say
    from ftsweep.model import load_adapter
    from ftsweep.paths import from_launch_dir
    from ftsweep.rundir import ALLOW_FAILED_INIT, check_complete

    root = run_dir_of(from_launch_dir(str(cfg.init_from)))
    adapter = adapter_dir(root)
    if adapter is not None and cfg.get("init_from_allow_failed"):  # (refused above otherwise): say so, once
        check_complete(root, adapter, True, ALLOW_FAILED_INIT)
    for path in init_adapters(cfg.init_from):
        model = load_adapter(model, path).merge_and_unload()
        say(f"init_from: merged the adapter of {path} into the base weights")
    return model
