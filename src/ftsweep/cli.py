"""ftsweep's command line: thin glue (parse, compose, call). Nothing here imports torch, peft or trl;
each subcommand imports its module only when it runs, so ``--help`` and ``--cfg job`` stay fast.

    ftsweep init DIR                                                          a starter project (conf/, sweep/, data)
    ftsweep train [overrides] [-m] [--cfg job] [--help] [--estimate-memory] [-v]   one run or a sweep (Hydra)
    ftsweep inspect [overrides] [--rows N] [--dump FILE.jsonl] [--plain]      show exactly what is trained
    ftsweep lr-find [overrides] [--min-lr A --max-lr B --steps N --out DIR]    learning-rate range test, suggested lr
    ftsweep report SWEEP_DIR | STORAGE_URL [--study NAME]                     tables, plots, best.yaml
    ftsweep dashboard [SWEEP_DIR | STORAGE_URL] [--study NAME] [--port N]     watch a sweep live (optuna-dashboard)
    ftsweep generate RUN_DIR|SWEEP_DIR [--questions FILE] [generation options]   base vs fine-tuned answers
    ftsweep merge RUN_DIR|SWEEP_DIR [--out DIR] [--dtype bf16|fp16|fp32]    merge the adapter into the base
    ftsweep export SWEEP_DIR [--out DIR]                                      merge the best trial of a sweep
    ftsweep publish FOLDER REPO [--public]                                    push an adapter or merged model
    ftsweep --version                                                         ftsweep's and its stack's versions
"""

from __future__ import annotations

import importlib
import shutil
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from pathlib import Path

from ftsweep.errors import (
    Failure,
    RunFailed,
    UsageError,
    exit_code,
    one_line,
    quiet_log_write_errors,
    report,
    sigterm_as_interrupt,
    write_trouble,
)

USAGE = __doc__.split("\n\n", 1)[1]

# subcommand -> "module:function"; each function takes argv (list[str]) and returns an exit code.
COMMANDS = {
    "init": "ftsweep.init:main",
    "train": "ftsweep.cli:train_main",
    "inspect": "ftsweep.inspect:main",
    "lr-find": "ftsweep.lr_find:main",
    "report": "ftsweep.report:main",
    "dashboard": "ftsweep.dashboard:main",
    "generate": "ftsweep.generate:main",
    "merge": "ftsweep.merge:main",
    "export": "ftsweep.merge:export_main",
    "publish": "ftsweep.publish:main",
}


def fail(message: str, code: int = 2) -> int:
    """Print ``message`` as one ``ftsweep: error:`` line (secrets masked); return ``code``."""
    print(f"ftsweep: error: {one_line(message)}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the real command line (tests pass argv and keep their own interpreter)
        _utf8_or_reexec()
        _home_when_unset()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print("usage: ftsweep COMMAND [ARGS]\n\n" + USAGE)
        return 0
    if argv[0] in ("--version", "-V"):
        print(version_line())
        return 0
    command, rest = argv[0], argv[1:]
    if command in ("-sc", "--shell-completion"):  # what the script of `ftsweep train -sc install=bash` runs
        return shell_completion(rest)
    if command not in COMMANDS:
        return fail(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}")
    module_name, func_name = COMMANDS[command].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    from hydra_plugins.ftsweep_sweeper.ftsweep_searchpath import register

    register()  # the user's config roots (--config-dir, ./conf) and the sweeper, in an editable install too
    quiet_log_write_errors()
    try:
        with one_line_usage_errors():
            return int(func(rest) or 0)
    except (UsageError, Failure, KeyboardInterrupt) as err:  # the one place a command's error becomes a code
        return report(err)
    except BrokenPipeError:  # e.g. `ftsweep train --help | head`
        sys.stderr.close()
        return 0
    except Exception as err:  # a full disk, a read-only folder: the machine's trouble, not a bug (one line)
        why = write_trouble(err)
        if why is None:
            raise
        return report(Failure(f"ftsweep {command}: a write failed ({why}); free space (or make the folder "
                              "writable) and run the command again"))


def _utf8_or_reexec() -> None:
    """Korean (any non-ASCII) text must survive a locale that is not UTF-8.

    Under an ASCII locale without Python's UTF-8 mode (``LC_ALL=C`` with ``PYTHONUTF8=0``), Python reads the
    command line and file names as ASCII: a Korean path or config value becomes lone surrogates, which the
    tokenizers library refuses (the tokenizer of a run whose folder has a Korean name could not be saved) and
    printing Korean data stopped with UnicodeEncodeError. The command is run again, unchanged, in UTF-8 mode
    (``-X utf8``, also for the processes it starts): what Python itself picks for the C locale unless told not to.
    Under another locale that is not UTF-8 (latin-1, EUC-KR) the console keeps its encoding; a character it cannot
    show is written as a ``\\uXXXX`` escape instead of stopping the command."""
    import codecs
    import locale
    import os

    if sys.flags.utf8_mode:
        return
    if codecs.lookup(locale.getpreferredencoding(False)).name == "ascii":
        import subprocess

        script = sys.argv[0]
        target = ["-m", "ftsweep"] if not os.path.isfile(script) or script.endswith("__main__.py") else [script]
        command = [sys.executable, *subprocess._args_from_interpreter_flags(), "-X", "utf8", *target, *sys.argv[1:]]
        os.environ["PYTHONUTF8"] = "1"  # the sweep's trial processes too
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, command)
    for stream in (sys.stdout, sys.stderr):
        if codecs.lookup(getattr(stream, "encoding", None) or "utf-8").name != "utf-8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def _home_when_unset() -> None:
    """``HOME`` unset (a service, ``env -i``, some cron set-ups): the shipped ``cache_dir``
    (``${oc.env:HOME}/.cache/ftsweep``) stopped every command with "cache_dir: ... Environment variable 'HOME' not
    found". Take the user's home from the password database, as ``~`` does (``Path.home()``), for this process and
    the ones it starts (a user the database does not know keeps the error; FTSWEEP_CACHE_DIR avoids it)."""
    import os
    from pathlib import Path

    if os.environ.get("HOME"):
        return
    try:
        home = Path.home()
    except (RuntimeError, KeyError):
        return
    os.environ["HOME"] = str(home)


def shell_completion(argv: list[str]) -> int:
    """``ftsweep -sc query=bash|fish`` (the shell's line in ``$COMP_LINE``): the subcommand's name while it is
    being typed, then Hydra's completion of ``ftsweep train``'s overrides; nothing for the other subcommands.
    ``install=`` / ``uninstall=`` print train's script (``ftsweep train -sc install=bash`` does the same)."""
    import os

    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if not any(a.startswith("query=") for a in argv):
        return train_main(["-sc", *argv])
    if len(words) < 2 or (len(words) == 2 and not line[-1:].isspace()):  # the subcommand itself
        typed = words[1] if len(words) == 2 else ""
        sep = "\n" if any(a == "query=fish" for a in argv) else " "
        print(sep.join(c for c in COMMANDS if c.startswith(typed)))
        return 0
    if words[1] != "train":
        return 0
    return train_main(["-sc", *argv])


def _completion_line() -> None:
    """Hydra completes ``<app> <overrides>``: the subcommand word (``ftsweep train lora=``) is taken out of
    ``$COMP_LINE``, or Hydra would read ``train`` as an override."""
    import os
    import re

    line = os.environ.get("COMP_LINE")
    if line:
        os.environ["COMP_LINE"] = re.sub(r"^(\s*\S+)\s+train(?=\s|$)", r"\1", line, count=1)


DATASET_KEYS = ("data.dataset", "data.eval_dataset")  # LLaMA-Factory's dataset_info.json entries
VERSION_PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "optuna", "hydra-core", "datasets")


def version_line() -> str:
    """``ftsweep 0.1.0 (torch 2.13.0, transformers ...)``: the stack a bug report needs, read from the installed
    packages' metadata (nothing imported)."""
    from importlib.metadata import PackageNotFoundError, version

    from ftsweep import __version__

    def one(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} not installed"

    return f"ftsweep {__version__} ({', '.join(one(n) for n in VERSION_PACKAGES)})"


@contextmanager
def one_line_usage_errors() -> Iterator[None]:
    """argparse answers a usage error with its whole usage text and exit 2; every subcommand's parser
    reports it as one line instead (``ftsweep: error: ftsweep report: the following arguments are
    required: target``). ``--help`` is unchanged."""
    import argparse

    original = argparse.ArgumentParser.error

    def error(self: argparse.ArgumentParser, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")

    argparse.ArgumentParser.error = error  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original  # type: ignore[method-assign]


# --------------------------------------------------------------------------------------------- train
HYDRA_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--info", "-i", "--experimental-rerun"}
HYDRA_INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")  # --info's optional value
HYDRA_BARE_FLAGS = {"-m", "--multirun", "-r", "--run", "--resolve", "--hydra-help", "--version", "-h", "--help",
                    "--shell-completion", "-sc"}


def flags_first(argv: list[str]) -> list[str]:
    """Hydra's flags (with their values) before the overrides: Hydra's argparse takes the overrides as one
    positional list, so ``a=1 -m b=2`` would fail on ``b=2``; ftsweep accepts flags anywhere, as git does."""
    flags, overrides, last = [], [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--info", "-i") and (i + 1 == len(argv) or argv[i + 1] not in HYDRA_INFO_CHOICES):
            last.append(arg)  # --info without its optional value: after the overrides, or it would take one
        elif arg in HYDRA_VALUE_FLAGS:
            flags += argv[i : i + 2]
            i += 1
        else:
            (flags if arg.startswith("-") else overrides).append(arg)
        i += 1
    return flags + overrides + last


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
    from omegaconf import OmegaConf

    from ftsweep.config import compose as config
    from ftsweep.config.outputs import check_cache_dir

    estimate = "--estimate-memory" in argv
    if {"-v", "--verbose"} & set(argv):  # third-party warnings, bars and W&B output back (ftsweep.verbosity)
        from ftsweep.verbosity import set_verbose

        set_verbose()
    given = [a for a in argv if a not in ("--estimate-memory", "-v", "--verbose")]
    argv = flags_first(given)
    overrides, flags, config_dirs = split_overrides(argv)
    check_secrets(overrides)
    message = foreign_flag(given)  # in the order given: each --flag with the value after it
    if message:
        raise UsageError(message)
    argv = check_hydra_flags(argv, flags)
    config.export_config_dirs(config_dirs)  # sweep trials (child processes) see the same user config
    if flags & {"-h", "--help"}:
        return train_help(overrides, config_dirs)
    if flags & {"--info", "-i"}:  # (Hydra would print its banner, then fail on the override, exit 1)
        try:
            config.compose(config.fixed_overrides(overrides), config_dirs=config_dirs, hydra=True, check=False)
        except UsageError as err:
            return fail(str(err))
    if not flags & {"--hydra-help", "--version", "-sc", "--shell-completion", "--info", "-i"}:
        # Fail before Hydra creates any directory. In a multirun (-m, or a sweep overlay that sets
        # hydra.mode=MULTIRUN), sweep syntax (a=1,2, interval(...)) is checked by the sweeper.
        try:
            listed = next((o for o in overrides if o.split("=", 1)[0].lstrip("+") in DATASET_KEYS
                           and o.split("=", 1)[-1].startswith("[")), None)
            if listed:  # LLaMA-Factory's list of entries is one string
                key, value = listed.split("=", 1)
                raise UsageError(f"{key}: several dataset_info.json entries are one comma-separated string, as "
                                 f"LLaMA-Factory writes them: \"{key}='{value.strip('[]').replace(' ', '')}'\"")
            fixed = config.fixed_overrides(overrides)
            with_hydra = config.compose(fixed, config_dirs=config_dirs, hydra=True, check=False)
            multirun = bool(flags & {"-m", "--multirun"}) or str(with_hydra.hydra.mode) == "RunMode.MULTIRUN"
            argv = home_expanded(argv, with_hydra)
            if multirun:
                config.check_sweeper_resolves(with_hydra)
            else:
                check_sweep_mode(with_hydra, config_dirs, fixed)
            if not multirun and fixed != overrides:
                bad = next(o for o in overrides if o not in fixed)
                key = bad.split("=", 1)[0]
                mix = (f"; several dataset_info.json entries as one dataset (LLaMA-Factory's list): quote them, "
                       f"\"{key}='{bad.split('=', 1)[1]}'\"" if key.lstrip("+") in DATASET_KEYS and "(" not in bad
                       else "")
                raise UsageError(f"{key}: {bad!r} is a sweep: add -m (or use sweep=<name>){mix}")
            # A swept key may have no value of its own (data=custom_json data.path=choice(a,b)): check with its
            # first value; the sweeper checks the corners of the space and every searched data file.
            job = [*fixed, *first_values(overrides, fixed)] if multirun else fixed
            cfg = (config.task_config(with_hydra, job, config_dirs=config_dirs) if job == fixed
                   else config.compose(job, config_dirs=config_dirs))
            given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
            for entry, path in (("data.dataset", "data.path"), ("data.eval_dataset", "data.validation_path")):
                if {entry, path} <= given:  # the entry's file would replace the path silently
                    raise UsageError(f"{path}: given with {entry}, whose dataset_info.json entry names the file; "
                                     "give one of them")
            validation = next((k for k in ("data.validation_path", "data.eval_dataset") if OmegaConf.select(cfg, k)), None)
            if "data.val_size" in given and validation and OmegaConf.select(cfg, "data.val_size"):
                # the split would be ignored silently (LLaMA-Factory refuses val_size with eval_dataset); 0 agrees
                raise UsageError(f"data.val_size: not used with {validation}={OmegaConf.select(cfg, validation)} (its rows "
                                 "are the validation set, the training file is not split): give one of them")
            if flags & {"--cfg", "-c"} and flags & {"--package", "-p"}:
                shown = package_shown(argv, cfg, with_hydra)
                if shown is not None:
                    print(shown)
                    return 0
            if not estimate and not flags & {"--cfg", "-c"}:  # printing a config or an estimate reads no data
                # a sweep of ours checks the data format after its search space (every searched file, each corner):
                # here its notice would come before an error in the space, a second line
                check_data_files(cfg, formats=not (multirun and _our_sweeper(with_hydra)),
                                 written_in=lambda key: config.written_in(key, fixed, config_dirs))
                check_resume(cfg, multirun, str(with_hydra.hydra.run.dir))
                check_output_dir(with_hydra, multirun)
                check_cache_dir(str(OmegaConf.select(cfg, "cache_dir")))
                if not multirun:
                    check_run_dir(with_hydra)
                    _NEW_FOLDERS[:] = [first_missing(str(with_hydra.hydra.run.dir))]
        except UsageError as err:
            return fail(str(err))
        if estimate:
            from ftsweep.memory import print_estimate

            try:
                print_estimate(cfg)
            except OSError as err:  # the model's config could not be read (no Hub access, wrong name)
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise UsageError(f"model.name_or_path: cannot read the config of {cfg.model.name_or_path!r}: {first}") from err
            return 0
    if flags & {"-sc", "--shell-completion"}:
        # Hydra names the command to complete after its program name: ftsweep (the script calls
        # `ftsweep -sc query=...`, which shell_completion hands back here), never "ftsweep train".
        _completion_line()
        import contextlib
        import io

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            config.run_hydra(argv, train_task, config_dirs, prog="ftsweep")
        # the schemas in Hydra's store (lora=lora_schema) are no options
        text = printed.getvalue()
        if any(a.startswith("query=") for a in argv):
            words = [w for w in text.split() if not ("=" in w and w.endswith("_schema"))]
            text = ("\n" if "query=fish" in argv else " ").join(words) + "\n"
        sys.stdout.write(text)
        return 0
    if flags & {"--cfg", "-c", "--info", "-i"}:
        # Hydra prints the config: a URL password (hydra.sweeper.storage) or, with --resolve, a secret read
        # through ${oc.env:...} would reach the terminal and any CI log; print it masked
        import contextlib
        import io

        from ftsweep.tracking import scrub

        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed):
                config.run_hydra(argv, train_task, config_dirs)
        finally:
            sys.stdout.write(scrub(printed.getvalue()))
        return 0
    config.run_hydra(argv, train_task, config_dirs)
    return 0


def flag_value(argv: list[str], names: tuple[str, ...]) -> str | None:
    """The value of a Hydra flag given as ``--flag value`` or ``--flag=value`` (None when absent)."""
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            return argv[i + 1]
        name, eq, value = arg.partition("=")
        if eq and name in names:
            return value
    return None


def package_shown(argv: list[str], cfg: Any, with_hydra: Any) -> str | None:
    """``--cfg TYPE --package KEY``: a key the printed config lacks is one line naming what is there (Hydra: 'package
    ... not found in config', exit 1); a key whose value is null prints ``null`` (Hydra took it for a missing key).
    None: Hydra prints it."""
    import difflib

    from omegaconf import DictConfig, OmegaConf

    kind = flag_value(argv, ("--cfg", "-c")) or "job"
    package = flag_value(argv, ("--package", "-p")) or ""
    if package in ("", "_global_"):
        return None
    root = {"job": cfg, "hydra": OmegaConf.masked_copy(with_hydra, ["hydra"]), "all": with_hydra}.get(kind, cfg)
    absent = object()
    value = OmegaConf.select(root, package, default=absent, throw_on_missing=False)
    if value is None:
        return "null"
    if value is not absent:
        return None
    if kind == "job" and package.split(".")[0] == "hydra":
        raise UsageError(f"--package {package}: the job config has no hydra node; show it with --cfg hydra -p {package}")
    parent = package.rpartition(".")[0]
    node = OmegaConf.select(root, parent, default=None) if parent else root
    keys = [f"{parent}.{k}" if parent else str(k) for k in node] if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(package, keys, n=1, cutoff=0.6)
    raise UsageError(f"--package {package}: no such key in the {kind} config"
                     + (f"; did you mean {close[0]}?" if close else f"; keys here: {', '.join(keys)}" if keys else ""))


def first_values(overrides: list[str], fixed: list[str]) -> list[str]:
    """``key=<first value>`` for each sweep override of a list (choice / range; an interval is numeric
    and has a default already), so that composing without the sweeps still gives every key a value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for o in overrides:
        if o in fixed:
            continue
        parsed = parser.parse_overrides([o])[0]
        try:
            first = next(iter(parsed.sweep_string_iterator()))
        except Exception:  # noqa: BLE001, S112 -- interval(...) and tag(...) sweeps have no list of values
            continue
        out.append(f"{parsed.get_key_element()}={first}")
    return out


def check_secrets(overrides: list[str]) -> None:
    """Credentials given as overrides (``+hf_token=...``, ``+logger.api_key=...``) are refused: Hydra would
    write them to .hydra/, and a sweep to the study, best.yaml and every trial's W&B config."""
    from ftsweep.tracking import check_secret_override

    for o in overrides:
        message = check_secret_override(o)
        if message:
            raise UsageError(message)


def foreign_flag(argv: list[str]) -> str | None:
    """One line for the ``--name [value]`` / ``--name=value`` arguments that are no flags of ftsweep's or Hydra's (a
    TRL / transformers script's: ``--learning_rate 1e-4``), saying the overrides to write instead (all of them:
    ``trl sft --model_name_or_path ... --dataset_name ... --learning_rate ...`` is one line to paste)."""
    from ftsweep.config.keys import ours, override_for, shell_quoted

    known = HYDRA_VALUE_FLAGS | HYDRA_BARE_FLAGS | {"--estimate-memory", "-v", "--verbose"}
    found: list[tuple[str, str | None, list[str]]] = []  # (flag, the override, the other keys it may be)
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if not arg.startswith("--") or name in known or (i and argv[i - 1] in HYDRA_VALUE_FLAGS):
            continue
        key = name[2:].replace("-", "_")
        if not eq and i + 1 < len(argv) and not argv[i + 1].startswith("-") and "=" not in argv[i + 1]:
            value = argv[i + 1]
        write = override_for(key, value or "true")  # a bare switch: HF's argument parsers read it as true
        found.append((name, shell_quoted(write) if write else None, ours(key)[1:]))
    if not found:
        return None
    first = found[0][0]
    writes = [w for _, w, _ in found if w]
    if not writes:
        return (f"{first}: ftsweep train takes overrides (key=value, e.g. optimizer.lr=1e-4), not --flags "
                "(see ftsweep train --help)")
    # seed: trainer.seed (or model.tiny.seed / data.seed)
    others = [f"or {' / '.join(o)}" + (f" for {name}" if len(found) > 1 else "") for name, w, o in found if w and o]
    unknown = [name for name, w, _ in found if not w]
    return (f"{first}: ftsweep train takes overrides (key=value), not --flags: write {' '.join(writes)}"
            + (f" ({'; '.join(others)})" if others else "")
            + (f" (no key here for: {', '.join(unknown)})" if unknown else "") + " (see ftsweep train --help)")


def check_hydra_flags(argv: list[str], flags: set[str]) -> list[str]:
    """Hydra flags that would end in a traceback or a multi-line message: made to work, or one line."""
    if flags & {"--config-name", "-cn", "--config-path", "-cp"}:
        raise UsageError("--config-name / --config-path: ftsweep train always composes its train.yaml; "
                         "add your own config roots with --config-dir DIR (or a conf/ folder here)")
    if flags & {"-r", "--run"} and flags & {"-m", "--multirun"}:
        raise UsageError("--run / --multirun: give one of them (a single run, or a sweep)")
    if flags & {"--cfg", "-c", "--info", "-i", "-sc", "--shell-completion"} and flags & {"-m", "--multirun", "-r", "--run"}:
        # show the config / info instead of running or sweeping (Hydra takes only one of them)
        argv = [a for a in argv if a not in ("-m", "--multirun", "-r", "--run")]
    if flags & {"--cfg", "-c", "--info", "-i"}:  # a swept key has no one value to show: the config without it
        from ftsweep.config.compose import fixed_overrides
        from ftsweep.console import say

        swept = [a for a in argv if "=" in a and not a.startswith("-") and not fixed_overrides([a])]
        if swept:
            say(f"the config without the swept key(s) {', '.join(swept)}: each trial sets them")
            argv = [a for a in argv if a not in swept]
    if flags & {"-sc", "--shell-completion"} and not any(
            a.split("=", 1)[0] in ("install", "uninstall", "query") for a in argv if "=" in a):
        raise UsageError('--shell-completion: give what to do, e.g. install=bash (or zsh, fish): '
                         'eval "$(ftsweep train -sc install=bash)"')
    if "--experimental-rerun" in flags:
        i = argv.index("--experimental-rerun")
        path = argv[i + 1] if i + 1 < len(argv) else ""
        from pathlib import Path

        if not Path(path).is_file():
            raise UsageError(f"--experimental-rerun: no such file {path!r} (a run's .hydra/config.pickle)")
        if Path(path).read_bytes()[:1] != b"\x80":  # every pickle protocol >= 2 starts so (Hydra: a traceback)
            raise UsageError(f"--experimental-rerun: {path!r} is not a pickle (a run's .hydra/config.pickle, written "
                             "by Hydra's PickleJobInfoCallback)")
    return argv


def check_sweep_mode(with_hydra: Any, config_dirs: Any = (), overrides: Any = ()) -> None:
    """``sweep=<name>`` without ``-m`` whose file searches something but sets no ``hydra.mode`` (the shipped sweep
    files and ``ftsweep init``'s set ``MULTIRUN``; a ``best.yaml`` sets ``RUN``): it trained once with the defaults,
    none of the searched values, and said nothing. One line, exit 2, instead; not when ``overrides`` fix every
    searched key (a trial's own command: sweep=my_search optimizer.lr=0.001 lora=r8)."""
    from omegaconf import OmegaConf

    name = OmegaConf.select(with_hydra, "hydra.runtime.choices.sweep")
    if not name or OmegaConf.select(with_hydra, "hydra.mode") is not None:
        return
    searched = [*(OmegaConf.select(with_hydra, "hydra.sweeper.params") or {}),
                *(OmegaConf.select(with_hydra, "hydra.sweeper.variables") or {})]
    given = {str(o).partition("=")[0].lstrip("+~") for o in overrides}
    searched = [k for k in searched if k not in given]
    if not searched:
        return
    from ftsweep.config.source import shown, user_file

    file = user_file(f"sweep/{name}", config_dirs)
    file = shown(file) if file else None
    raise UsageError(f"sweep={name}: searches {', '.join(map(str, searched))} but this would train once without "
                     f"them (its file sets no hydra.mode): add -m, or 'mode: MULTIRUN' under 'hydra:' in "
                     f"{file or f'sweep/{name}.yaml'}")


def _our_sweeper(with_hydra: Any) -> bool:
    from omegaconf import OmegaConf

    return "FtsweepOptunaSweeper" in str(OmegaConf.select(with_hydra, "hydra.sweeper._target_") or "")


def check_data_files(cfg: Any, formats: bool = True, written_in: Any = None) -> None:
    """A missing local data file fails now, before any run directory exists (not as a Hub error later).
    ``formats``: also tell ``data.format=auto``'s format (and say it), which ftsweep's sweeper does itself.
    ``written_in(key)``: where the user's own file sets a key (`` (conf/data/x.yaml line 3)``), for the message."""
    from omegaconf import OmegaConf

    from ftsweep.config.validate import DATA_FILE_KEYS, missing_data_file
    from ftsweep.stages.init_from import init_from_problem

    for key in DATA_FILE_KEYS:
        message = missing_data_file(key, OmegaConf.select(cfg, key))
        if message:
            raise UsageError(message + (written_in(key) if written_in else ""))
    if OmegaConf.select(cfg, "data.dataset") or OmegaConf.select(cfg, "data.eval_dataset"):
        from ftsweep.data.dataset_info import dataset_problem  # (the data package: only when it is needed)

        message = dataset_problem(cfg)  # LLaMA-Factory's dataset_info.json entry: readable, its file there
        if message:
            raise UsageError(message)
    message = init_from_problem(cfg)  # an SFT run to start from: an adapter for this base model
    if message:
        raise UsageError(message)
    if formats and OmegaConf.select(cfg, "data.format") == "auto":  # the file's format, and what the config allows
        from ftsweep.data.options import format_problem

        message = format_problem(cfg)
        if message:
            raise UsageError(message)


def check_resume(cfg: Any, multirun: bool, run_dir: str) -> None:
    """``trainer.resume_from_checkpoint``: a checkpoint this run can continue from (one line, exit 2), in a single run."""
    from omegaconf import OmegaConf

    from ftsweep import rundir

    if not OmegaConf.select(cfg, "trainer.resume_from_checkpoint"):
        return
    if multirun:
        raise UsageError(f"{rundir.RESUME_KEY}: continues one run; in a sweep, run its command again: a killed "
                         "sweep resumes, its lost trials from their last checkpoints")
    rundir.checked_resume_point(cfg, run_dir)


def check_output_dir(cfg: Any, multirun: bool) -> None:
    """The run (or sweep) folder can be made: not a file, writable, room on its disk (one line, exit 2)."""
    from omegaconf import OmegaConf

    from ftsweep.config.outputs import check_output_dir as check

    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    check(str(OmegaConf.select(cfg, key)), key)


# The outermost folder a single run is about to create (None: its run folder exists already). Bad input
# found once the run has started (bad data rows) removes it again: bad input leaves nothing behind.
_NEW_FOLDERS: list[Any] = [None]


def home_expanded(argv: list[str], with_hydra: Any) -> list[str]:
    """``argv`` with ``hydra.run.dir`` / ``hydra.sweep.dir`` set to the home folder's path where they start with
    ``~`` (on the command line or in a config file). Hydra does not expand ``~``: it made a folder named ``~`` in
    the working directory, while the checks before it (a finished run is not overwritten, the folder is writable)
    looked in the home folder, so a finished run in ``./~/x`` was overwritten without a word."""
    import os

    from omegaconf import OmegaConf

    from ftsweep.config.keys import override_value

    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        node = OmegaConf.select(with_hydra, key.rsplit(".", 1)[0])
        raw = OmegaConf.to_container(node, resolve=False).get("dir") if node is not None else None
        if isinstance(raw, str) and raw.startswith("~"):
            expanded = os.path.expanduser(raw)
            if expanded != raw:
                argv = [a for a in argv if a.split("=", 1)[0].lstrip("+") != key]
                argv.append(f"{key}={override_value(expanded)}")
    return argv


def first_missing(path: str) -> Any:
    """The outermost folder on the way to ``path`` that does not exist yet (None if ``path`` exists)."""
    from pathlib import Path

    target = Path(path).expanduser().absolute()
    missing = [p for p in (target, *target.parents) if not p.exists()]
    return missing[-1] if missing else None


def check_run_dir(cfg: Any) -> None:
    """A finished run is never overwritten without ``overwrite=true`` (then its result files are removed
    first, so the new run's outcome is the only one there)."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from ftsweep import rundir
    from ftsweep.sweepdir import SweepDir

    run_dir = Path(str(OmegaConf.select(cfg, "hydra.run.dir"))).expanduser()
    folder = SweepDir(run_dir)
    if folder.existing_storage_url() is not None or folder.summary.is_file():  # even with overwrite=true
        raise UsageError(f"hydra.run.dir: {run_dir} is a sweep folder (its study, report and trials); give the run a "
                         f"folder of its own (hydra.run.dir=<new>); to run a sweep's best trial again: "
                         f"{folder.rerun_best_command()}")
    resuming = bool(OmegaConf.select(cfg, rundir.RESUME_KEY))
    if not rundir.is_finished(run_dir):
        step = None if resuming else rundir.saved_step(run_dir)
        if step is not None and not cfg.overwrite:  # a stopped run (killed, a time limit): its checkpoints stay
            raise UsageError(f"hydra.run.dir: {run_dir} holds a stopped run that saved step {step}: continue it "
                             f"with {rundir.RESUME_KEY}=true, write to a new folder (hydra.run.dir=<new>), or start "
                             "it over with overwrite=true")
        if step is not None:
            rundir.clear_finished(run_dir, checkpoints=True)
        return
    if not cfg.overwrite:
        if rundir.read_failure(run_dir) is not None and rundir.resume_hint(run_dir):  # it failed, with checkpoints
            raise UsageError(f"hydra.run.dir: {run_dir} holds a failed run that saved checkpoints: continue it in a "
                             f"new folder with {rundir.RESUME_KEY}={run_dir}, or in this one with "
                             f"{rundir.RESUME_KEY}=true overwrite=true")
        raise UsageError(f"hydra.run.dir: {run_dir} holds a finished run; write to a new folder "
                         "(hydra.run.dir=<new>) or replace it with overwrite=true")
    rundir.clear_finished(run_dir, checkpoints=not resuming)


def train_task(cfg: Any) -> float | None:
    """The Hydra task of ``ftsweep train``: one run in Hydra's output dir, then the optional generation."""
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    from ftsweep import rundir
    from ftsweep.console import copied_to, is_main_process

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    rundir.mask_hydra_files(run_dir)  # a URL password given as an override stays out of .hydra/
    if HydraConfig.get().mode.name != "RUN":  # a sweep trial: its output goes to its trial.log
        # hydra/sweeper=basic saved the whole config there before its first job (ftsweep's sweeper writes none)
        rundir.mask_file(Path(HydraConfig.get().sweep.dir) / "multirun.yaml")
        return _train_in(cfg, run_dir, single_run=False)
    if not is_main_process():  # DDP: rank 0's console output is the run's log (every rank's would repeat it)
        return _train_in(cfg, run_dir, single_run=True)
    with copied_to(rundir.RunDir(run_dir).job_log(HydraConfig.get().job.name)) as log_only:
        try:
            return _train_in(cfg, run_dir, single_run=True)
        except BaseException as err:  # what ends the run, in its log too (the console gets it from main)
            report(err, stream=log_only)
            raise


def _train_in(cfg: Any, run_dir: Path, single_run: bool) -> float | None:
    from ftsweep import rundir
    from ftsweep.train import execute

    try:
        with sigterm_as_interrupt(single_run):  # a sweep trial keeps the default: its sweeper reads the exit code
            metrics = execute(cfg, run_dir)
    except KeyboardInterrupt as exc:  # Ctrl-C, or a cluster's time limit (SIGTERM): how to go on, when it can
        hint = rundir.resume_hint(run_dir)
        raise KeyboardInterrupt(f"{str(exc) or 'interrupted'}{'; ' + hint if hint else ''}") from None
    except UsageError as exc:
        created = _NEW_FOLDERS[0]
        if exit_code(exc) == 2 and created is not None and run_dir.resolve().is_relative_to(created.resolve()):
            import shutil

            shutil.rmtree(created, ignore_errors=True)  # bad input (data): the folders this run made go again
        raise
    except RunFailed as exc:  # a run that saved checkpoints can go on from the last one
        hint = rundir.resume_hint(run_dir)
        if hint:
            raise RunFailed(f"{exc}; {hint}") from exc.__cause__
        raise
    # After the run's W&B run is closed: generation logs its answers as a W&B run of its own.
    if cfg.trainer.generate_after and metrics["status"] == "complete" and cfg.lora.enabled and rundir.RunDir(run_dir).adapter.is_dir():
        from ftsweep.generate import generate_run

        generate_run(run_dir)
    return metrics.get("objective")


def train_help(overrides: list[str], config_dirs: list[str]) -> int:
    """``ftsweep train --help``: every group option with its one-line description, then the config."""
    from omegaconf import OmegaConf

    from ftsweep.config import compose as config

    print("usage: ftsweep train [group=option ...] [key=value ...] [-m] [--cfg job] [--estimate-memory] [-v]\n")
    print("  -v, --verbose  show third-party warnings, progress bars and W&B's own output (FTSWEEP_VERBOSE=1)\n")
    print("Config groups (group=option; experiment is added with +experiment=NAME, a sweep with sweep=NAME):")
    width = max(60, shutil.get_terminal_size((100, 24)).columns - 1)
    for group in config.list_groups(config_dirs):
        print(f"\n  {group}:")
        for option in config.group_options(group, config_dirs) or []:
            # whole descriptions, wrapped under their column (never cut)
            print(textwrap.fill(config.option_summary(group, option, config_dirs), width=width,
                                initial_indent=f"    {option:<32} ", subsequent_indent=" " * 37, break_on_hyphens=False,
                                break_long_words=False) or f"    {option}")
    try:
        cfg = config.compose(config.fixed_overrides(overrides), check=False, config_dirs=config_dirs)
    except UsageError as err:
        return fail(str(err))
    print("\nConfig (override any key: key=value; Hydra's own options: --hydra-help):\n")
    print(OmegaConf.to_yaml(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
