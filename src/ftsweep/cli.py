"""ftsweep's command line: thin glue (parse, compose, call). Nothing here imports torch, peft or trl;
each subcommand imports its module only when it runs, so ``--help`` and ``--cfg job`` stay fast.

    ftsweep train [overrides] [-m] [--cfg job] [--help] [--estimate-memory]   one run or a sweep (Hydra)
    ftsweep inspect [overrides] [--rows N] [--dump FILE.jsonl] [--plain]      show exactly what is trained
    ftsweep report SWEEP_DIR | STORAGE_URL [--study NAME]                     tables, plots, best.yaml
    ftsweep generate RUN_DIR [--questions FILE] [generation options]        base vs fine-tuned answers
    ftsweep merge RUN_DIR [--out DIR] [--dtype bf16|fp16|fp32]                merge the adapter into the base
    ftsweep export SWEEP_DIR [--out DIR]                                      merge the best trial of a sweep
    ftsweep publish FOLDER REPO [--public]                                    push an adapter or merged model
"""

from __future__ import annotations

import importlib
import sys

USAGE = __doc__.split("\n\n", 1)[1]

# subcommand -> "module:function"; each function takes argv (list[str]) and returns an exit code.
COMMANDS = {
    "train": "ftsweep.cli:train_main",
    "inspect": "ftsweep.inspect:main",
    "report": "ftsweep.report:main",
    "generate": "ftsweep.generate:main",
    "merge": "ftsweep.merge:main",
    "export": "ftsweep.merge:export_main",
    "publish": "ftsweep.publish:main",
}


class UsageError(Exception):
    """Bad input on the command line or in config: printed as one line, exit code 2."""


def fail(message: str, code: int = 2) -> int:
    print(f"ftsweep: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: ftsweep COMMAND [ARGS]\n\n" + USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        return fail(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}")
    module_name, func_name = COMMANDS[command].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except UsageError as err:
        return fail(str(err))
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except BrokenPipeError:  # e.g. `ftsweep train --help | head`
        sys.stderr.close()
        return 0


# --------------------------------------------------------------------------------------------- train
HYDRA_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--info", "-i", "--experimental-rerun"}
HYDRA_BARE_FLAGS = {"-m", "--multirun", "--resolve", "--hydra-help", "--version", "-h", "--help",
                    "--shell-completion", "-sc"}


def split_overrides(argv: list[str]) -> tuple[list[str], set[str], list[str]]:
    """Separate Hydra flags from overrides; returns (overrides, flags seen, --config-dir values)."""
    overrides, flags, config_dirs = [], set(), []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in HYDRA_VALUE_FLAGS:
            flags.add(arg)
            if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
                config_dirs.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith(("--config-dir=", "-cd=")):
            config_dirs.append(arg.split("=", 1)[1])
        if arg.startswith("-"):
            flags.add(arg.split("=", 1)[0])
        else:
            overrides.append(arg)
        i += 1
    return overrides, flags, config_dirs


def train_main(argv: list[str]) -> int:
    """``ftsweep train``: validate the composed config (one-line errors), then hand over to Hydra."""
    from ftsweep import config_io

    estimate = "--estimate-memory" in argv
    argv = [a for a in argv if a != "--estimate-memory"]
    overrides, flags, config_dirs = split_overrides(argv)
    multirun = bool(flags & {"-m", "--multirun"})
    if flags & {"-h", "--help"}:
        return train_help(overrides, config_dirs)
    if not flags & {"--hydra-help", "--version", "-sc", "--shell-completion", "--info", "-i"}:
        # Fail before Hydra creates any directory. In a multirun, sweep syntax (a=1,2, interval(...))
        # is checked by the sweeper; the fixed overrides are checked here.
        try:
            checked = config_io.fixed_overrides(overrides) if multirun else overrides
            cfg = config_io.compose(checked, config_dirs=config_dirs)
        except config_io.ConfigFailure as err:
            return fail(str(err))
        if estimate:
            from ftsweep.memory import print_estimate

            try:
                print_estimate(cfg)
            except OSError as err:  # the model's config could not be read (no Hub access, wrong name)
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise UsageError(f"model.name_or_path: cannot read the config of {cfg.model.name_or_path!r}: {first}") from err
            return 0
    return config_io.run_hydra(argv)


def train_help(overrides: list[str], config_dirs: list[str]) -> int:
    """``ftsweep train --help``: every group option with its one-line description, then the config."""
    from omegaconf import OmegaConf

    from ftsweep import config_io
    from ftsweep.paths import conf_dir

    print("usage: ftsweep train [group=option ...] [key=value ...] [-m] [--cfg job] [--estimate-memory]\n")
    print("Config groups (group=option; experiment and sweep are added with +experiment=NAME / sweep=NAME):")
    for group in sorted(p for p in conf_dir().iterdir() if p.is_dir()):
        print(f"\n  {group.name}:")
        for option in sorted(group.glob("*.yaml")):
            lines = option.read_text(encoding="utf-8").splitlines()
            comments = [x[1:].strip() for x in lines if x.startswith("#") and "@package" not in x]
            about = next((c for c in comments if not c.startswith("Run:")), "")
            print(f"    {option.stem:<32} {about}")
    try:
        cfg = config_io.compose(overrides, check=False, config_dirs=config_dirs)
    except config_io.ConfigFailure as err:
        return fail(str(err))
    print("\nConfig (override any key: key=value; Hydra's own options: --hydra-help):\n")
    print(OmegaConf.to_yaml(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
