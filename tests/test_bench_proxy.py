"""The bundled proxy task (bench/proxy_task.py -> data/proxy_tasks.jsonl): exact answers, reproducible."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _proxy():
    spec = importlib.util.spec_from_file_location("proxy_task", ROOT / "bench" / "proxy_task.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_answer_is_the_exact_function_of_the_input():
    proxy = _proxy()
    rows = proxy.generate(400, seed=3)
    assert Counter(r["kind"] for r in rows) == {k: 100 for k in proxy.KINDS}
    for r in rows:
        if r["kind"] == "lookup":
            pairs, asked = r["input"].split("; ")
            table = dict(p.split("=") for p in pairs.split())
            assert r["output"] == table[asked]
            continue
        words = r["input"].split()
        assert 2 <= len(words) <= 4 and set(words) <= set(proxy.WORDS)
        expected = {"copy": words, "reverse": words[::-1], "last": words[-1:]}[r["kind"]]
        assert r["output"].split() == expected, r


def test_generation_is_deterministic_and_the_bundled_file_is_current(tmp_path):
    proxy = _proxy()
    assert proxy.generate(50, seed=1) == proxy.generate(50, seed=1)
    assert proxy.generate(50, seed=1) != proxy.generate(50, seed=2)
    bundled = ROOT / "data" / "proxy_tasks.jsonl"
    assert bundled.stat().st_size < 200_000
    assert proxy.main(["--check", "--out", str(bundled)]) == 0
    stale = tmp_path / "stale.jsonl"
    stale.write_text(bundled.read_text().replace('"cat"', '"dog"', 1))
    assert proxy.main(["--check", "--out", str(stale)]) == 1


def test_data_option_trains_only_the_answer_and_eos(compose):
    from ftsweep.data import build_datasets
    from ftsweep.model import load_tokenizer

    cfg = compose("data=proxy_tasks", "logger=none")
    tok = load_tokenizer(cfg)
    bundle = build_datasets(cfg, tok)
    assert bundle.stats["n_truncated"] == 0 and bundle.stats["n_dropped"] == 0
    rows = [json.loads(x) for x in (ROOT / "data" / "proxy_tasks.jsonl").read_text().splitlines()]
    outputs = {r["output"] for r in rows}
    for ids, labels in zip(bundle.train["input_ids"][:20], bundle.train["labels"][:20]):
        trained = [t for t, lab in zip(ids, labels) if lab != -100]
        assert trained[-1] == tok.eos_token_id
        assert tok.decode(trained[:-1]) in outputs
        assert labels[: len(ids) - len(trained)] == [-100] * (len(ids) - len(trained))
