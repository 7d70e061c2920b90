"""Child process of bench/data_cache.py: time ftsweep's data stage alone (tokenizer ready, model not loaded).

    python bench/_data_probe.py OUT.json override [override ...]

Uses ftsweep's public data entry point, ``ftsweep.data.build_datasets(cfg, tokenizer)``, with the config
from ``ftsweep.config.compose.compose`` and the tokenizer from ``ftsweep.model.load_tokenizer``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    out, overrides = Path(sys.argv[1]), sys.argv[2:]
    from ftsweep.config.compose import compose
    from ftsweep.data import build_datasets
    from ftsweep.model import load_tokenizer

    cfg = compose(overrides)
    tokenizer = load_tokenizer(cfg)
    import datasets  # noqa: F401  (imported before the clock starts: an import is not data time)

    try:
        Path("/proc/self/clear_refs").write_text("5")  # restart the peak-RSS mark here
    except OSError:
        pass
    rss_before = _rss_mib("VmRSS")
    start = time.perf_counter()
    bundle = build_datasets(cfg, tokenizer)
    data_s = time.perf_counter() - start
    out.write_text(json.dumps({
        "data_s": data_s, "cache_hit": bundle.stats.get("cache_hit"), "n_train": bundle.stats.get("n_train"),
        "n_eval": bundle.stats.get("n_eval"), "rss_before_mib": rss_before, "peak_rss_mib": _rss_mib("VmHWM"),
    }))


if __name__ == "__main__":
    main()
