"""``ftsweep inspect``: rows as trained (prompt masked, answer + eos trained), histogram, counts, --dump."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ftsweep.cli import main as cli_main
from ftsweep.inspect import Span, histogram, plain_text

NO_PRETRAIN = "model.tiny.pretrain_steps=0"


def test_inspect_alpaca_demo_plain_and_dump(cache_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    dump = tmp_path / "rows.jsonl"
    code = cli_main(
        [
            "inspect",
            "data=alpaca_demo",
            "data.cutoff_len=1024",
            NO_PRETRAIN,
            "--rows",
            "4",
            "--plain",
            "--dump",
            str(dump),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    # The Alpaca prompt is shown unmarked (masked), the answer + eos inside [[...]] (trained).
    assert out.count("<|begin_of_text|>Below is an instruction that describes a task") == 4
    assert "### Response:\n[[" in out and "<|end_of_text|>]]" in out
    assert "length histogram (360 rows" in out
    assert "truncated" in out and "dropped" in out and "padding" in out
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    assert len(rows) == 360
    from ftsweep.config.compose import compose
    from ftsweep.model import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path(compose([NO_PRETRAIN])))
    for row in rows:
        ids, labels = row["input_ids"], row["labels"]
        # Independent check of the boundary: the prompt is everything up to "### Response:\n".
        prompt = row["text"][: row["text"].index("### Response:\n") + len("### Response:\n")]
        k = len(tok(prompt, add_special_tokens=False)["input_ids"])
        assert ids[:k] == tok(prompt, add_special_tokens=False)["input_ids"]
        assert labels[:k] == [-100] * k  # -100 exactly on prompt tokens ...
        assert labels[k:] == ids[k:]  # ... and equal to the input ids on answer tokens
        assert row["trained_text"] == row["text"][len(prompt) :]
    untruncated = [r for r in rows if len(r["input_ids"]) < 1024]
    assert untruncated and all(r["trained_text"].endswith("<|end_of_text|>") for r in untruncated)


def test_inspect_chat_marks_each_assistant_turn(cache_dir, capsys):
    code = cli_main(
        [
            "inspect",
            "data=chat_demo",
            NO_PRETRAIN,
            "data.shuffle=false",
            "data.val_size=0",
            "objective.metric=train_loss",
            "--rows",
            "3",
            "--plain",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert (
        "<|start_header_id|>assistant<|end_header_id|>\n\n[[Hello! I am ftsweep's demo assistant. How can I help you today?<|eot_id|>]]"
        "<|start_header_id|>user<|end_header_id|>\n\nCan you help me write a haiku?<|eot_id|>"
    ) in out


def test_inspect_bad_data_is_one_line_exit_2(cache_dir, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "x", "input": "", "output": 7}]))
    code = cli_main(["inspect", f"data.path={bad}", NO_PRETRAIN, "--plain"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"ftsweep: error: {bad} row 1: field 'output': expected a string, got int\n" in err
    assert cli_main(["inspect", "data.nope=1"]) == 2


def test_plain_markers_and_histogram():
    spans = [
        Span("<|begin_of_text|>", False, True, 1),
        Span("Q ", False, False, 2),
        Span("A", True, False, 1),
        Span("<|eot_id|>", True, True, 1),
    ]
    assert plain_text(spans) == "<|begin_of_text|>Q [[A<|eot_id|>]]"
    text = histogram([1, 5, 10, 10], cutoff=10, bins=2)
    assert text.splitlines()[1:] == [
        "       1-5           2 " + "#" * 40,
        "       6-10          2 " + "#" * 40,
    ]


def test_help_does_not_import_torch():
    code = "import sys; from ftsweep.cli import main; main(['--help']); import ftsweep.inspect; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


@pytest.mark.parametrize("flag", ["--help"])
def test_inspect_help(flag, capsys):
    assert cli_main(["inspect", flag]) == 0
    assert "--dump" in capsys.readouterr().out
