"""Read an offline W&B run back (tests check what a run logged without network)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def read_offline_run(run_path: str | os.PathLike) -> dict[str, Any]:
    """Config, summary, history rows, group, name and saved files of an offline W&B run (``.../offline-run-*``).

    wandb >= 0.2x writes an offline run's config and summary only into its ``run-<id>.wandb``
    transaction log (a LevelDB-style log of protobuf records), not into ``files/``; this reads them
    back so tests and reports can check what a run logged without network.
    """
    import json
    import struct
    import zlib

    from wandb.proto import wandb_internal_pb2 as pb

    (log_file,) = Path(run_path).glob("run-*.wandb")
    raw = log_file.read_bytes()
    block, pos, records, pending = 32768, 7, [], b""  # 7-byte file header: ":W&B", magic, version
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        chunk, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0:  # zero padding (preallocated space), not a record
            continue
        if len(chunk) < length or zlib.crc32(chunk, zlib.crc32(bytes([kind]))) != crc:
            break  # a torn tail: W&B's service is still writing it (callers poll until what they need is there)
        if kind in (1, 2):  # full record / first chunk
            pending = chunk
        else:  # middle / last chunk
            pending += chunk
        if kind in (1, 4):
            records.append(pending)
    out: dict[str, Any] = {"config": {}, "summary": {}, "history": [], "group": None, "name": None, "run_id": None,
                           "files": []}
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
        elif kind == "files":  # files the run asked W&B to upload (wandb sync uploads them)
            out["files"] += [f.path for f in record.files.files]
    return out


def wait_offline_run(run_path: str | os.PathLike, ready, timeout: float = 60.0) -> dict[str, Any]:
    """``read_offline_run`` again until ``ready(logged)`` holds or ``timeout`` seconds pass; returns the last read.

    W&B's service process may still be writing a run's log after ``finish()`` (or after the process that logged
    it exited), so a test reads what is there and waits for what it needs instead of reading once."""
    import time

    deadline = time.monotonic() + timeout
    logged = read_offline_run(run_path)
    while not ready(logged) and time.monotonic() < deadline:
        time.sleep(0.2)
        logged = read_offline_run(run_path)
    return logged


def read_offline_table(run_path: str | os.PathLike, key: str) -> dict[str, Any] | None:
    """The last ``wandb.Table`` logged under ``key`` in an offline run: its JSON file (``columns``, ``data``)
    from ``files/``, found through the history row that points at it; None when none was logged (yet)."""
    import json

    rows = [r for r in read_offline_run(run_path)["history"] if r.get(f"{key}/_type") == "table-file"]
    if not rows:
        return None
    path = Path(run_path) / "files" / rows[-1][f"{key}/path"]
    return json.loads(path.read_text()) if path.is_file() else None
