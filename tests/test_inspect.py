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
    # Each dumped row names its source (the split is shuffled): file and row (from 1), whose instruction it shows.
    from importlib.resources import files

    source = json.loads(files("ftsweep.demo_data").joinpath("alpaca_en_demo.json").read_text())
    assert len({r["source"] for r in rows}) == 360
    for row in rows:
        name, _, i = row["source"].rpartition(" row ")
        assert name == "pkg://ftsweep.demo_data/alpaca_en_demo.json"
        assert "### Instruction:\n" + source[int(i) - 1]["instruction"]  # rows count from 1 in row["text"]
    untruncated = [r for r in rows if len(r["input_ids"]) < 1024]
    assert untruncated and all(r["trained_text"].endswith("<|end_of_text|>") for r in untruncated)


def test_inspect_chat_marks_each_assistant_turn(cache_dir, capsys):
    code = cli_main(
        [
            "inspect",
            "data=chat_demo",
            "--rows",  # options between the overrides, as ftsweep train and lr-find take them
            "3",
            NO_PRETRAIN,
            "data.shuffle=false",
            "--plain",
            "data.val_size=0",
            "objective.metric=train_loss",
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
    bad.write_text(json.dumps([{"instruction": "x", "input": "", "output": True}]))
    code = cli_main(["inspect", f"data.path={bad}", NO_PRETRAIN, "--plain"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"ftsweep: error: {bad} row 1: field 'output': expected a string, got bool\n" in err
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


def test_inspect_without_validation_rows_and_its_dropped_rows(cache_dir, tmp_path, capsys):
    """val_size=0 is fine for a command that trains nothing (issue 21 item 8), and --dropped names each row
    the length policy dropped, with the reason."""
    rows = [{"instruction": "hi", "input": "", "output": "hello"},
            {"instruction": "word " * 200, "input": "", "output": "long"},
            {"instruction": "bye", "input": "", "output": "see you"}]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    code = cli_main(["inspect", f"data.path={path}", "data.val_size=0", "data.cutoff_len=400", "data.overlong=drop",
                     NO_PRETRAIN, "--rows", "1", "--plain", "--dropped"])
    out = capsys.readouterr().out
    assert code == 0
    assert "data: 2 train / 0 eval rows; 0 truncated, 1 dropped (1 over-long" in out
    listing = out[out.index("dropped rows (1, train and eval):"):].splitlines()
    assert listing[1].startswith(f"  {path} row 2: over-long (") and "> 400 tokens, data.overlong=drop)" in listing[1]
    assert cli_main(["inspect", f"data.path={path}", "data.val_size=0", NO_PRETRAIN, "--split", "eval"]) == 2
    capsys.readouterr()
    # every row dropped: no training rows to show, but --dropped still lists which and why, then the error
    code = cli_main(["inspect", f"data.path={path}", "data.val_size=0", "data.cutoff_len=8", "data.overlong=drop",
                     NO_PRETRAIN, "--dropped"])
    captured = capsys.readouterr()
    assert code == 2
    listing = captured.out.splitlines()
    assert listing[0] == "dropped rows (3 listed, train and eval):"
    assert sorted(line.split(": ")[0] for line in listing[1:]) == [f"  {path} row {i}" for i in (1, 2, 3)]
    assert captured.err.strip().endswith("no training rows left after filtering, bad rows and the length policy; "
                                         "ftsweep inspect --dropped lists the dropped ones")


def test_rows_listed_from_a_cache_entry_carry_this_runs_file_names():
    """A cache entry is shared by files with the same bytes: its listed rows take the current names."""
    from types import SimpleNamespace

    from ftsweep.data.pipeline import _rename_rows

    stats = {"dropped_where": ["old/a.json row 2: over-long (9 > 8 tokens, data.overlong=drop)", "old/v.json row 1: x"],
             "call_text_dropped_where": ["old/a.json row 3"], "eval_answers_cut_where": ["old/v.json row 4"],
             "where_names": ["old/a.json", "old/v.json"]}
    got = _rename_rows(stats, SimpleNamespace(path="new/a.json", validation_path="new/v.json"))
    assert got["dropped_where"] == ["new/a.json row 2: over-long (9 > 8 tokens, data.overlong=drop)",
                                    "new/v.json row 1: x"]
    assert got["call_text_dropped_where"] == ["new/a.json row 3"]
    assert got["eval_answers_cut_where"] == ["new/v.json row 4"]  # what the generation objective flags
    assert _rename_rows(stats, SimpleNamespace(path="old/a.json", validation_path="old/v.json")) == stats


def _sentencepiece_like():
    """A Llama 2 / Mistral style tokenizer (Metaspace: "▁" for spaces, a leading space added and, when decoding,
    stripped from the first token), with a hand-written vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", "▁[INST]", "▁Hi", "▁[/INST]", "▁Hello", "▁4", "4"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_spans_of_a_sentencepiece_tokenizer_keep_the_space_at_each_seam():
    # before: each span was decoded alone, and the Metaspace decoder strips the leading space of what it decodes:
    # "[/INST][[Hello</s>]][INST]" hid that the answer is trained as "▁Hello" (a space token), not "Hello"
    from ftsweep.inspect import row_spans

    tok = _sentencepiece_like()
    ids = tok.convert_tokens_to_ids(["<s>", "▁[INST]", "▁Hi", "▁[/INST]", "▁Hello", "</s>",
                                     "▁[INST]", "▁Hi", "▁[/INST]", "4", "</s>"])
    trained = {4, 5, 9, 10}
    labels = [t if i in trained else -100 for i, t in enumerate(ids)]
    spans = row_spans(tok, ids, labels)
    assert "".join(s.text for s in spans) == tok.decode(ids) == "<s> [INST] Hi [/INST] Hello</s> [INST] Hi [/INST]4</s>"
    assert plain_text(spans) == "<s> [INST] Hi [/INST][[ Hello</s>]] [INST] Hi [/INST][[4</s>]]"
    # the first token of a row is decoded as the whole row's decoding does (its leading space stripped)
    assert plain_text(row_spans(tok, ids[4:6], [-100, -100])) == "Hello</s>"
