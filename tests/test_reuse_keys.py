"""Cache and warm-worker keys are derived from the schema (ftsweep/config/reuse.py): every schema key is
either included or excluded on purpose, and a key nobody listed is part of every key by default."""

from __future__ import annotations

from dataclasses import field, make_dataclass

import pytest

from ftsweep.config import reuse
from ftsweep.config.data import DataConfig
from ftsweep.data.cache import TOKEN_FIELDS
from ftsweep.sweeper.warm import DATA_KEYS, MODEL_KEYS, TOKENIZER_KEYS


@pytest.mark.parametrize("artefact", sorted(reuse.EXCLUDED))
def test_every_schema_key_is_included_or_excluded(artefact):
    assert reuse.unclassified(artefact) == [], (
        f"{artefact}: add these keys to INCLUDED (they change it) or EXCLUDED (they cannot) in ftsweep/config/reuse.py")
    included = {k for k in reuse.schema_keys() if any(k == e or k.startswith(e + ".") for e in reuse.INCLUDED[artefact])}
    assert not included & set(reuse.EXCLUDED[artefact])  # no key on both lists


def test_the_keys_in_use_are_the_derived_ones():
    assert TOKEN_FIELDS == reuse.data_cache_fields()
    assert (TOKENIZER_KEYS, DATA_KEYS, MODEL_KEYS) == tuple(reuse.reuse_keys(a) for a in ("tokenizer", "datasets", "base_model"))
    assert "data.path" not in TOKEN_FIELDS and "packing" in TOKEN_FIELDS and "columns" in TOKEN_FIELDS
    assert "optimizer.lr" not in MODEL_KEYS and "lora.r" not in MODEL_KEYS and "lora.enabled" in MODEL_KEYS
    assert "model.name_or_path" in TOKENIZER_KEYS and "data.cutoff_len" not in TOKENIZER_KEYS


def test_a_new_schema_key_is_in_every_key_and_fails_the_classification(monkeypatch):
    grown = make_dataclass("GrownData", [("new_knob", int, field(default=0))], bases=(DataConfig,))
    grown_train = make_dataclass("GrownTrain", [("data", grown, field(default_factory=grown))],
                                 bases=(reuse.TrainConfig,))
    monkeypatch.setattr(reuse, "TrainConfig", grown_train)
    monkeypatch.setattr(reuse, "DataConfig", grown)
    reuse.schema_keys.cache_clear()
    try:
        assert "data.new_knob" in reuse.schema_keys()
        # the datasets include the whole data group; the others list data keys one by one
        expected = {"tokenizer": ["data.new_knob"], "datasets": [], "base_model": ["data.new_knob"],
                    "data_cache": ["data.new_knob"]}
        for artefact, unlisted in expected.items():
            assert "data.new_knob" in reuse.reuse_keys(artefact)  # included by default: never a stale reuse
            assert reuse.unclassified(artefact) == unlisted  # ... and the first test would fail
    finally:
        reuse.schema_keys.cache_clear()



def test_settings_of_reads_each_group_once_with_the_values_of_one_key_at_a_time(monkeypatch):
    """settings_of resolves a top-level group once and reads its keys from that: the same values as resolving
    each key alone (interpolations, nested nodes, missing keys), and a group with a value that cannot resolve,
    under a key not asked for, is read key by key instead of failing."""
    from omegaconf import OmegaConf

    from ftsweep.config.reuse import settings_of

    monkeypatch.delenv("FTSWEEP_TEST_UNSET", raising=False)
    cfg = OmegaConf.create({"model": {"name": "m", "size": "${trainer.steps}", "sub": {"a": [1, "${model.name}"]}},
                            "trainer": {"steps": 7, "broken": "${oc.env:FTSWEEP_TEST_UNSET}", "lr": 0.1},
                            "flat": 3})
    keys = ("model.name", "model.size", "model.sub", "model.nothing", "trainer.steps", "trainer.lr", "flat", "none.x")
    got = settings_of(cfg, keys)
    assert got == {"model.name": "m", "model.size": 7, "model.sub": {"a": [1, "m"]}, "model.nothing": None,
                   "trainer.steps": 7, "trainer.lr": 0.1, "flat": 3, "none.x": None}
    one_at_a_time = {}
    for k in keys:
        node = OmegaConf.select(cfg, k, default=None)
        one_at_a_time[k] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    assert got == one_at_a_time
