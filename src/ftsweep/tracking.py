"""Experiment tracking: W&B / TensorBoard set-up, run naming and grouping, secrets kept out.

One W&B run per training run. The caller may name it (``RunInfo``: a sweep trial is grouped by its study,
named ``trial-<n>`` and carries its number and params in the config). :func:`wandb_mode` is the one rule
for online/offline: W&B goes offline by itself when no API key is set and ``WANDB_MODE`` is unset, so
runs work without network. ``finish()`` always runs (callers use ``try/finally``) so runs never share
a W&B run.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "HF_API_TOKEN", "OPENAI_API_KEY")
# Keys whose values are credentials (pad_token, eos_token... are not: only these exact names).
SECRET_KEY = re.compile(
    r"^(token|hf_token|hub_token|hf_api_token|access_token|auth_token|api_key|wandb_api_key|password|secret)$",
    re.IGNORECASE,
)


# The last part of an override key that names a credential (hf_token, logger.api_key, db_password, ...).
# pad_token / eos_token / special_tokens are tokenizer settings, not credentials: only these prefixes of "token".
SECRET_OVERRIDE = re.compile(
    r"^(?:(?:\w*_)?(?:api_key|apikey|password|passwd|secret|secret_key|access_key)"
    r"|(?:(?:hf|hub|hf_api|huggingface|access|auth|api|wandb|github|gh|openai|bearer|refresh|session)_)?token)$",
    re.IGNORECASE,
)
# user:password@ in a URL (storage URLs: postgresql://user:password@host/db; the user may be empty, libpq's default).
# The password runs to the "@" before the host: one that holds a "/" or an unencoded "@" is masked whole.
# (?<![A-Za-z]): a scheme starts at the first letter of its run (the leftmost match anyway); without it every letter
# of a long word started a scan to the word's end, quadratic: 5 ms for a 2000-character failure reason.
URL_PASSWORD = re.compile(r"(?<![A-Za-z])([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):[^\s'\"]*?@(?=[^@/?#\s'\"]*(?:[/?#\s'\"]|$))")
# ?password=... / &sslpassword=... in a URL's query (SQLAlchemy hands query parameters to the driver: psycopg
# reads the password from there as well)
# (a ":" that ends the URL in a message, "cannot open <url>: <why>", is not the password's)
QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?(?:password|passwd|pwd)=)[^&#\s'\"]*?(?=[&#\s'\"]|:\s|:?$)",
                            re.IGNORECASE)


def mask_url_passwords(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (``postgresql://u:***@host/db``,
    ``postgresql://u@host/db?password=***``)."""
    return QUERY_PASSWORD.sub(r"\1***", URL_PASSWORD.sub(r"\1:***@", text))


def secret_override_env(key: str) -> str | None:
    """For an override key that names a credential, the environment variable to use instead; else None."""
    key = key.lstrip("+~").split("@", 1)[0]
    last = key.rsplit(".", 1)[-1]
    if not SECRET_OVERRIDE.match(last):
        return None
    lowered = key.lower()
    if "wandb" in lowered or (lowered.startswith("logger.") and "key" in last.lower()):
        return "WANDB_API_KEY"
    if "openai" in lowered:
        return "OPENAI_API_KEY"
    if "token" in last.lower() or lowered.startswith(("hf", "hub")):
        return "HF_TOKEN"
    if "password" in last.lower() or "passwd" in last.lower():
        return "PGPASSWORD (PostgreSQL storage) or your tool's own variable"
    return "WANDB_API_KEY (W&B) or HF_TOKEN (Hub)"


def check_secret_override(override: str) -> str | None:
    """One line explaining why ``override`` (``key=value``) is refused, or None when it is no secret."""
    key = override.split("=", 1)[0]
    env = secret_override_env(key)
    if env is None:
        return None
    return (f"{key.lstrip('+~')}: secrets are read from the environment only, never from overrides (they would "
            f"be written to .hydra/, the study and W&B); set {env} instead")


# Other values this process knows to be secret (:func:`add_secret`).
_SECRETS: set[str] = set()


def add_secret(value: str) -> None:
    """Mask ``value`` wherever :func:`scrub` runs in this process (a storage password the URL masks miss)."""
    _SECRETS.add(value)


def secret_values() -> list[str]:
    """Values of secret environment variables and :func:`add_secret`'s (to be kept out of anything we write)."""
    return [v for k in SECRET_ENV if (v := os.environ.get(k)) and len(v) >= 6] + sorted(_SECRETS, key=len, reverse=True)


def scrub(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a nested dict/list with secret-looking keys dropped and secret values masked."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {k: scrub(v, secrets) for k, v in obj.items() if not SECRET_KEY.search(str(k))}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, secrets) for v in obj]
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, "***")
        return mask_url_passwords(obj)
    return obj


def masked_argv(argv: list[str], secrets: list[str] | None = None) -> list[str]:
    """``argv`` with URL passwords and secret environment values masked (``postgresql://u:***@h/db``)."""
    return [scrub(a, secrets) for a in argv]


@contextmanager
def _argv_masked() -> Iterator[None]:
    # W&B records sys.argv[1:] as the run's program arguments (wandb.Settings._args, computed from
    # sys.argv when the settings are sent at init; no setting turns it off short of dropping all system
    # metadata). A sweep's command line holds the storage URL: hand W&B the masked line.
    real = sys.argv
    sys.argv = masked_argv(real)
    try:
        yield
    finally:
        sys.argv = real


def wandb_init(**kwargs: Any) -> Any:
    """``wandb.init`` recording no secret: masked program arguments, no code, no git (its remote URL can
    hold a token), no job artifact (it copies the arguments); the program is named ``ftsweep``.

    The run's ``requirements.txt`` (the installed packages, which W&B lists in every run) is written from
    :func:`installed_packages`, read once per process: W&B's own listing re-reads every package's metadata
    at each ``init``, about 0.2 s of every trial in a warm sweep worker."""
    from ftsweep.verbosity import quiet_wandb

    quiet_wandb()  # W&B's console chatter off unless -v; the caller says where the run is
    import wandb

    options: dict[str, Any] = {"program": "ftsweep", "disable_code": True, "save_code": False, "disable_git": True,
                               "disable_job_creation": True}
    own_requirements = "x_save_requirements" in getattr(wandb.Settings, "model_fields", {})
    if own_requirements:
        options["x_save_requirements"] = False
    with _argv_masked():
        run = wandb.init(settings=wandb.Settings(**options), **kwargs)
    files = Path(getattr(run, "dir", None) or "")
    if own_requirements and run is not None and files.is_absolute() and files.is_dir():  # not mode=disabled
        path = files / "requirements.txt"
        path.write_text(installed_packages())
        run.save(str(path), base_path=run.dir, policy="now")
    return run


@functools.cache
def installed_packages() -> str:
    """``requirements.txt`` of this environment as W&B writes it (``name==version``, one per line), read once
    per process (a warm sweep worker's trials share it)."""
    from importlib.metadata import distributions

    lines = []
    for dist in distributions():
        try:
            lines.append(f"{dist.metadata['Name']}=={dist.version}")
        except (KeyError, UnicodeDecodeError, TypeError):  # a distribution with broken metadata, as W&B skips it
            continue
    return "".join(line + "\n" for line in lines)


def wandb_mode(logger_cfg: Any) -> str:
    """online | offline | disabled: ``logger.mode``, else ``WANDB_MODE``, else online only with an API key."""
    mode = logger_cfg.get("mode") if isinstance(logger_cfg, dict) else getattr(logger_cfg, "mode", None)
    return mode or os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


def wandb_dir(default: Path) -> str:
    """Where W&B writes its run folders: ``$WANDB_DIR`` or ``default`` (the run or sweep directory)."""
    return os.environ.get("WANDB_DIR") or str(default)


# The W&B table of a generation objective's answers (one per run: a sweep trial's run holds its trial's).
PREDICTIONS_TABLE = "predictions"


def predictions_table(rows: list[dict[str, Any]], metric: str | None = None) -> tuple[list[str], list[list[Any]]]:
    """(columns, data) of the predictions table: prompt, reference, (references: where rows have several acceptable
    answers, one per line), prediction, score (the row's score on ``metric``, else on the first metric it was scored
    on), then one column per other metric scored."""
    rows = scrub(rows)
    names: list[str] = []
    for r in rows:
        names += [m for m in r.get("scores") or {} if m not in names]
    first = metric if metric in names else (names[0] if names else None)
    others = [m for m in names if m != first]
    # the acceptable answers scored (data.columns.references), one per line, where any row has them
    several = any("references" in r for r in rows)
    data = [[r.get("prompt"), r.get("reference"),
             *(["\n".join(r.get("references") or [r.get("reference") or ""])] if several else []),
             r.get("prediction"), (r.get("scores") or {}).get(first),
             *((r.get("scores") or {}).get(m) for m in others)] for r in rows]
    return ["prompt", "reference", *(["references"] if several else []), "prediction", "score", *others], data


@dataclass
class RunInfo:
    """How the caller names this run's W&B run (a sweep trial: group = study, name = trial-<n>)."""

    group: str | None = None
    name: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


class Tracker:
    """Owns the W&B run (if any) of one training run."""

    def __init__(self, logger_cfg, run_dir: Path, config: dict[str, Any], info: RunInfo | None = None):
        self.cfg = logger_cfg
        self.run_dir = Path(run_dir)
        self.config = scrub(config)
        self.info = info or RunInfo()
        self.run = None
        self.mode: str | None = None  # the W&B mode the run started in (offline when online could not start)

    @property
    def report_to(self) -> list[str]:
        return {"wandb": ["wandb"], "tensorboard": ["tensorboard"]}.get(self.cfg.name, [])

    def start(self, resume_run_id: str | None = None) -> None:
        """Start the W&B run (W&B logger only); ``resume_run_id``: the run that saved the checkpoint this run
        resumes from, continued (W&B's ``resume="allow"``: a new run with that id when it is not there)."""
        if self.cfg.name == "tensorboard":
            # transformers 5 dropped TrainingArguments.logging_dir; TensorBoardCallback reads this variable.
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.run_dir / "tensorboard")
        from ftsweep.console import is_main_process

        if self.cfg.name != "wandb" or not is_main_process():  # DDP: one W&B run, rank 0's (transformers logs there)
            return
        mode = wandb_mode(self.cfg)
        os.environ["WANDB_MODE"] = mode  # transformers' WandbCallback re-reads it
        os.environ.setdefault("WANDB_LOG_MODEL", "false")
        config = {**self.config, **scrub(self.info.config)}
        group, name = self.cfg.group or self.info.group, self.cfg.run_name or self.info.name
        settings = dict(project=self.cfg.project, entity=self.cfg.entity, group=group, name=name,
                        tags=list(self.cfg.tags) or None, config=config, dir=wandb_dir(self.run_dir),
                        reinit="finish_previous",
                        **({"id": resume_run_id, "resume": "allow"} if resume_run_id else {}))
        try:
            self.run = wandb_init(mode=mode, **settings)
        except Exception as err:  # no network, a bad key, W&B down: the run goes on, logged offline
            if mode != "online":
                raise
            from ftsweep.notices import notice

            why = scrub(f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}")  # secrets masked
            notice(f"W&B: cannot start the run online ({why}): it logs offline instead (upload it later "
                   "with wandb sync; WANDB_MODE=offline or logger=none skip the wait)")
            mode = os.environ["WANDB_MODE"] = "offline"
            self.run = wandb_init(mode=mode, **settings)
        self.mode = mode
        from ftsweep.console import say

        say(self.where() + (" (continued: the run that saved the checkpoint)" if resume_run_id else ""))

    def where(self) -> str:
        """One line: the W&B run's URL, or its offline folder and how to upload it."""
        if self.run is None:
            return "W&B: no run"
        if self.mode == "disabled":
            return "W&B: disabled (logger.mode=disabled or WANDB_MODE=disabled): nothing is logged to W&B"
        if self.run_url:
            return f"W&B run: {self.run_url}"
        folder = getattr(getattr(self.run, "settings", None), "sync_dir", None) or wandb_dir(self.run_dir)
        return f"W&B offline run: {folder} (upload later: wandb sync {folder})"

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def run_url(self) -> str | None:
        """The W&B run's page (None offline or without W&B)."""
        if self.run is None or self.mode != "online":
            return None  # offline runs have no page (asking W&B for one prints a warning)
        try:
            return self.run.url
        except Exception:
            return None

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def log_predictions(self, rows: list[dict[str, Any]], metric: str | None = None) -> None:
        """A generation objective's ``predictions.jsonl`` rows as the W&B table ``predictions`` (no-op
        without a W&B run or rows); secrets masked as in every other thing ftsweep writes."""
        if self.run is None or not rows:
            return
        import wandb

        columns, data = predictions_table(rows, metric)
        self.run.log({PREDICTIONS_TABLE: wandb.Table(columns=columns, data=data)})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
