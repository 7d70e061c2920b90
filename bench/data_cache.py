"""Data stage on a big file: a 50,000-row Alpaca file (generated into a temp dir from the bundled demo rows,
each instruction made unique), tokenized cold vs loaded from ftsweep's tokenized-data cache. Data time
only (``ftsweep.data.build_datasets``, tokenizer already loaded, imports done), not process time; plus the
peak RSS of the data stage. Target: cached < 2 s.

    python bench/data_cache.py            # 50,000 rows, 3 cold + 3 cached repetitions (paired)
    python bench/data_cache.py --quick    # 2,000 rows, 1 repetition (smoke test)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    PY,
    ROOT,
    bench_env,
    default_cache,
    ensure_tiny_model,
    median,
    ratio,
    run_proc,
    table,
    write_result,
)

TARGET_CACHED_S = 2.0


def make_rows(n: int, path: Path) -> int:
    """``n`` Alpaca rows cycled from the bundled demo file, each instruction suffixed to be unique."""
    demo = json.loads((ROOT / "data" / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    rows = []
    for i in range(n):
        r = dict(demo[i % len(demo)])
        r["instruction"] = f"{r['instruction']} (variant {i})"
        rows.append(r)
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path.stat().st_size


def probe(cache_dir: Path, overrides: list[str], out: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = run_proc([PY, str(ROOT / "bench" / "_data_probe.py"), str(out), f"cache_dir={cache_dir}", *overrides], env=env)
    return {**json.loads(out.read_text()), "process_s": proc.wall_s}


def fresh_cache(root: Path, name: str, bench_cache: Path) -> Path:
    """An empty data cache that shares the already-built tiny model (so only the data is cold)."""
    d = root / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    (d / "tiny").symlink_to(bench_cache / "tiny", target_is_directory=True)
    return d


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rows", type=int, default=None)
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    n = args.rows or (2000 if args.quick else 50_000)
    reps = args.reps or (1 if args.quick else 3)
    bench_cache = default_cache()
    env = bench_env(bench_cache)
    ensure_tiny_model(env)
    pairs = []
    with tempfile.TemporaryDirectory(prefix="ftsweep-bench-data-") as d:
        tmp = Path(d)
        path = tmp / f"alpaca_{n}.json"
        size = make_rows(n, path)
        overrides = ["data=alpaca_demo", f"data.path={path}", "data.max_rows=null", "logger=none"]
        for rep in range(reps):
            cache = fresh_cache(tmp, f"cache{rep}", bench_cache)
            cold = probe(cache, overrides, tmp / f"cold{rep}.json", env)
            hit = probe(cache, overrides, tmp / f"hit{rep}.json", env)
            assert not cold["cache_hit"] and hit["cache_hit"], (cold, hit)
            pairs.append({"cold": cold, "cached": hit})
            print(f"  rep {rep}: cold {cold['data_s']:.2f} s, cached {hit['data_s']:.2f} s", flush=True)
    cold_s = median(x["cold"]["data_s"] for x in pairs)
    hit_s = median(x["cached"]["data_s"] for x in pairs)
    speedup = median(ratio(x["cold"]["data_s"], x["cached"]["data_s"]) for x in pairs)
    rows = [
        ["cold (tokenize + save)", cold_s, median(x["cold"]["peak_rss_mib"] for x in pairs),
         median(x["cold"]["peak_rss_mib"] - x["cold"]["rss_before_mib"] for x in pairs), "–"],
        ["cached (cache hit)", hit_s, median(x["cached"]["peak_rss_mib"] for x in pairs),
         median(x["cached"]["peak_rss_mib"] - x["cached"]["rss_before_mib"] for x in pairs),
         "yes" if hit_s < TARGET_CACHED_S else "NO"],
    ]
    print(f"\n{n:,}-row Alpaca file ({size / 2**20:.1f} MiB), cutoff 256, data time only; medians of {reps} "
          f"repetition(s); cold / cached = {speedup:.1f}x (median of pairs)\n")
    print(table(["data stage", "seconds", "peak RSS MiB (process)", "RSS added by the stage MiB",
                 f"< {TARGET_CACHED_S:g} s"], rows))
    write_result("data_cache", {
        "rows": n, "file_mib": size / 2**20, "repetitions": reps, "overrides": overrides,
        "target_cached_s": TARGET_CACHED_S, "cold_s": cold_s, "cached_s": hit_s, "cold_over_cached": speedup,
        "pairs": pairs,
    }, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
