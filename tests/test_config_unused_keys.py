"""A key of a config group that the chosen option's builder does not read is refused in one line (exit 2),
naming the key and the option: ``quantization=int8`` with a ``bnb_4bit_*`` key, a 4-bit option with
``llm_int8_threshold``, ``quantization=none`` with any of them."""

from __future__ import annotations

import pytest

from ftsweep.config.compose import ConfigFailure

# the keys ftsweep.model.build_quantization reads for each option
OWN_KEYS = {
    "none": (),
    "int8": ("llm_int8_threshold",),
    "nf4": ("bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"),
    "fp4": ("bnb_4bit_quant_type", "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"),
}

OTHER_KEYS = [
    ("int8", "quantization.bnb_4bit_compute_dtype=bfloat16", "only quantization=fp4 / nf4 reads it"),
    ("int8", "quantization.bnb_4bit_quant_type=fp4", "only quantization=fp4 / nf4 reads it"),
    ("int8", "quantization.bnb_4bit_use_double_quant=false", "only quantization=fp4 / nf4 reads it"),
    ("int8", "quantization.bnb_4bit_quant_storage=bfloat16", "only quantization=fp4 / nf4 reads it"),
    ("nf4", "quantization.llm_int8_threshold=3.0", "only quantization=int8 reads it"),
    ("fp4", "quantization.llm_int8_threshold=3.0", "only quantization=int8 reads it"),
    ("none", "quantization.bnb_4bit_compute_dtype=float16", "only quantization=fp4 / nf4 reads it"),
    ("none", "quantization.llm_int8_threshold=3.0", "only quantization=int8 reads it"),
]


@pytest.mark.parametrize(("option", "override", "why"), OTHER_KEYS)
def test_a_key_of_another_quantization_method_is_refused(compose, option, override, why):
    key, value = override.split("=")
    with pytest.raises(ConfigFailure) as err:
        compose(f"quantization={option}", override)
    shown = {"false": "False", "3.0": "3.0"}.get(value, repr(value))
    assert str(err.value) == f"{key}: {shown} would be ignored with quantization={option}: {why}; drop it or choose that option"


@pytest.mark.parametrize("option", ["none", "nf4", "fp4", "int8"])
def test_each_shipped_option_passes_with_its_own_keys_changed(compose, option):
    changed = {"llm_int8_threshold": "3.0", "bnb_4bit_use_double_quant": "false", "bnb_4bit_compute_dtype": "float16",
               "bnb_4bit_quant_storage": "bfloat16", "bnb_4bit_quant_type": option}
    own = [f"quantization.{k}={changed[k]}" for k in OWN_KEYS[option]]
    assert compose(f"quantization={option}", *own).quantization.method == option


def test_the_validation_knows_what_each_builder_reads():
    from ftsweep.config.validate import QUANT_KEYS_READ

    assert {k: tuple(sorted(set(v) - {"method"})) for k, v in QUANT_KEYS_READ.items()} == {
        k: tuple(sorted(v)) for k, v in OWN_KEYS.items()}


def test_the_cli_refuses_it_in_one_line_with_exit_2(capsys, tmp_path, monkeypatch):
    from ftsweep.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "quantization=int8", "quantization.bnb_4bit_compute_dtype=bfloat16"]) == 2
    err = capsys.readouterr().err
    assert err == ("ftsweep: error: quantization.bnb_4bit_compute_dtype: 'bfloat16' would be ignored with "
                   "quantization=int8: only quantization=fp4 / nf4 reads it; drop it or choose that option\n")
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(("override", "shown"), [("lora.r=64", "64"), ("lora.target_modules=all-linear", "'all-linear'"),
                                                 ("lora.use_dora=true", "True"), ("lora.init=pissa", "'pissa'")])
def test_a_lora_key_with_a_full_fine_tune_is_refused(compose, override, shown):
    with pytest.raises(ConfigFailure) as err:
        compose("lora=none", override)
    assert str(err.value) == (f"{override.split('=')[0]}: {shown} would be ignored: lora=none (lora.enabled=false) "
                              "is a full fine-tune with no adapter; drop it or choose a LoRA option")
    assert compose("lora=none").lora.enabled is False


def test_a_quant_storage_dtype_bitsandbytes_cannot_pack_into_and_a_negative_threshold_are_refused(compose):
    with pytest.raises(ConfigFailure, match=r"^quantization.bnb_4bit_quant_storage: got 'float8'; allowed: null, uint8, "):
        compose("quantization=fp4", "quantization.bnb_4bit_quant_storage=float8")
    with pytest.raises(ConfigFailure, match=r"^quantization.llm_int8_threshold: must be >= 0 \(got -1.0\)$"):
        compose("quantization=int8", "quantization.llm_int8_threshold=-1")
    assert compose("quantization=nf4", "quantization.bnb_4bit_quant_storage=uint8").quantization.method == "nf4"
