"""Experiment tracking: W&B / TensorBoard set-up, run naming and grouping, secrets kept out.

One W&B run per training run. In a sweep trial the group is the study name, the name ``trial-<n>`` and
the config carries the trial number and params. W&B goes offline by itself when no API key is set and
``WANDB_MODE`` is unset, so runs work without network. ``finish()`` always runs (callers use
``try/finally``) so trials never share a run.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "HF_API_TOKEN", "OPENAI_API_KEY")
# Keys whose values are credentials (pad_token, eos_token... are not: only these exact names).
SECRET_KEY = re.compile(
    r"^(token|hf_token|hub_token|hf_api_token|access_token|auth_token|api_key|wandb_api_key|password|secret)$",
    re.IGNORECASE,
)


def secret_values() -> list[str]:
    """Values of secret environment variables (to be kept out of anything we write)."""
    return [v for k in SECRET_ENV if (v := os.environ.get(k)) and len(v) >= 6]


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
    return obj


class Tracker:
    """Owns the W&B run (if any) of one training run."""

    def __init__(self, logger_cfg, run_dir: Path, config: dict[str, Any], trial: dict[str, Any] | None):
        self.cfg = logger_cfg
        self.run_dir = Path(run_dir)
        self.config = scrub(config)
        self.trial = trial
        self.run = None

    @property
    def report_to(self) -> list[str]:
        return {"wandb": ["wandb"], "tensorboard": ["tensorboard"]}.get(self.cfg.name, [])

    def start(self) -> None:
        if self.cfg.name == "tensorboard":
            # transformers 5 dropped TrainingArguments.logging_dir; TensorBoardCallback reads this variable.
            os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.run_dir / "tensorboard")
        if self.cfg.name != "wandb":
            return
        mode = self.cfg.mode or os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        os.environ["WANDB_MODE"] = mode  # transformers' WandbCallback re-reads it
        os.environ.setdefault("WANDB_LOG_MODEL", "false")
        import wandb

        config = dict(self.config)
        group, name = self.cfg.group, self.cfg.run_name
        if self.trial:
            group = group or self.trial.get("study_name")
            name = name or f"trial-{self.trial.get('trial_number')}"
            config["trial_number"] = self.trial.get("trial_number")
            config["trial_params"] = self.trial.get("params", {})
            config["study_name"] = self.trial.get("study_name")
        self.run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            group=group,
            name=name,
            tags=list(self.cfg.tags) or None,
            config=config,
            dir=os.environ.get("WANDB_DIR") or str(self.run_dir),
            mode=mode,
            reinit="finish_previous",
        )

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def read_offline_run(run_path: str | os.PathLike) -> dict[str, Any]:
    """Config, summary, history rows, group and name of an offline W&B run (``.../offline-run-*``).

    wandb >= 0.2x writes an offline run's config and summary only into its ``run-<id>.wandb``
    transaction log (a LevelDB-style log of protobuf records), not into ``files/``; this reads them
    back so tests and reports can check what a run logged without network.
    """
    import json
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    (log_file,) = Path(run_path).glob("run-*.wandb")
    raw = log_file.read_bytes()
    block, pos, records, pending = 32768, 7, [], b""  # 7-byte file header: ":W&B", magic, version
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        chunk, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:  # zero padding (preallocated space), not a record
            continue
        if kind in (1, 2):  # full record / first chunk
            pending = chunk
        else:  # middle / last chunk
            pending += chunk
        if kind in (1, 4):
            records.append(pending)
    out: dict[str, Any] = {"config": {}, "summary": {}, "history": [], "group": None, "name": None, "run_id": None}
    for data in records:
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.update(run_id=record.run.run_id, group=record.run.run_group or None, name=record.run.display_name)
            out["config"].update({u.key: json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            out["config"].update({u.key: json.loads(u.value_json) for u in record.config.update if u.key})
        elif kind == "history":
            out["history"].append({u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in record.history.item})
        elif kind == "summary":
            out["summary"].update({u.key: json.loads(u.value_json) for u in record.summary.update if u.key})
    return out
