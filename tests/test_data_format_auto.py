"""``data.format=auto`` (``data=custom_json``'s default): the format is told by the training file's columns, as
TRL's trainers tell a dataset's type; the rows are then read exactly as with the format set by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftsweep.data import DataError, build_datasets
from ftsweep.data.templates import detect_columns, detect_format
from ftsweep.model import load_tokenizer

NO_PRETRAIN = "model.tiny.pretrain_steps=0"
TURNS = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.mark.parametrize(("row", "fmt"), [
    ({"messages": TURNS}, "chat"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}, "sharegpt"),
    ({"instruction": "Add.", "input": "2+2", "output": "4"}, "alpaca"),
    ({"instruction": "Add.", "input": "", "output": "4", "text": "### Instruction: Add. ### Response: 4"}, "alpaca"),
    ({"prompt": "2+2?", "completion": "4"}, "prompt_completion"),
    ({"prompt": TURNS[:1], "completion": TURNS[1:]}, "prompt_completion"),  # TRL's conversational prompt-completion
    ({"prompt": TURNS[:1]}, "prompt_completion"),  # GRPO's prompt-only rows
    ({"prompt": "2+2?", "completion": "4", "label": True}, "prompt_completion"),  # KTO
    ({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, "prompt_completion"),
    ({"chosen": "Human: hi Assistant: hello", "rejected": "Human: hi Assistant: go"}, "prompt_completion"),
    ({"prompt": TURNS[:1], "chosen": TURNS[1:], "rejected": [{"role": "assistant", "content": "5"}]}, "chat"),
    ({"chosen": TURNS, "rejected": [TURNS[0], {"role": "assistant", "content": "5"}]}, "chat"),  # implicit prompt
    ({"text": "a document"}, "text"),
    ({"q": "2+2?", "a": "4"}, None),
])
def test_the_columns_tell_the_format(row, fmt):
    assert detect_format(row) == fmt


SHAREGPT = [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]


@pytest.mark.parametrize(("row", "fmt", "columns"), [
    ({"question": "2+2?", "answer": "#### 4"}, "alpaca", {"instruction": "question", "output": "answer"}),  # GSM8K
    ({"query": "2+2?", "response": "4", "type": "GSM_Rephrased"}, "alpaca",  # MetaMathQA
     {"instruction": "query", "output": "response"}),
    ({"problem": "2+2?", "solution": "4", "level": "Level 1"}, "alpaca",  # MATH
     {"instruction": "problem", "output": "solution"}),
    ({"instruction": "Add.", "context": "2+2", "response": "4", "category": "qa"}, "alpaca",  # Dolly
     {"input": "context", "output": "response"}),
    ({"input": "2+2?", "output": "4"}, "alpaca", {"instruction": "input"}),
    ({"input": "2+2?", "context": "numbers", "output": "4"}, "alpaca", {"instruction": "input", "input": "context"}),
    ({"question": "2+2?", "input": "", "answer": "4"}, "alpaca", {"instruction": "question", "output": "answer"}),
    ({"id": "1", "system_prompt": "Be brief.", "question": "2+2?", "response": "4"}, "chat",  # OpenOrca
     {"system": "system_prompt", "instruction": "question", "output": "response"}),
    ({"instruction": "Add.", "output": "4", "history": [["hi", "hello"]]}, "chat", {}),  # LLaMA-Factory's history
    ({"instruction": "Add.", "output": "4", "system": ""}, "chat", {}),  # empty here, not in every row
    ({"instruction": "Add.", "output": "4", "history": None}, "alpaca", {}),  # null: no column (parquet's empty cell)
    ({"system": "", "question": "2+2?", "chosen": "4", "rejected": "5"}, "chat", {"instruction": "question"}),  # Orca DPO
    ({"question": "2+2?", "chosen": "4", "rejected": "5", "response": "x"}, "alpaca", {"instruction": "question"}),
    ({"chosen": "Human: 2+2? Assistant: 4", "rejected": "Human: 2+2? Assistant: 5"}, "prompt_completion", {}),  # HH
    ({"prompt": "2+2 =", "response": " 4"}, "prompt_completion", {"completion": "response"}),
    ({"prompt": "2+2?", "answer": "4"}, "prompt_completion", {"completion": "answer"}),
    ({"prompt": TURNS[:1], "solution": "4"}, "prompt_completion", {"completion": "solution"}),  # a GRPO set
    ({"prompt": "2+2?", "chosen": "4", "rejected": "5", "response": "x"}, "prompt_completion", {}),  # a pair's own
    ({"messages": SHAREGPT}, "sharegpt", {"conversations": "messages"}),
    ({"conversation_id": "x", "conversation": TURNS, "turn": 1}, "chat", {"messages": "conversation"}),  # LMSYS
    ({"conversation": SHAREGPT}, "sharegpt", {"conversations": "conversation"}),
    ({"conversation": "a text", "q": 1}, None, {}),
    ({"content": "def f(): pass", "path": "a.py", "size": 13}, "text", {"text": "content"}),  # The Stack
    ({"question": "2+2?", "answer": "4", "text": "Q: 2+2? A: 4"}, "alpaca", {"instruction": "question",
                                                                         "output": "answer"}),  # the fields win
    ({"question": "2+2?", "text": "Q: 2+2?"}, "text", {}),  # no answer column: the document
    ({"content": "2+2?", "answer": "4"}, None, {}),  # not a document: a question's answer beside it
    ({"messages": TURNS}, "chat", {}),
    ({"conversations": [{"role": "user", "content": "2+2?"}]}, "sharegpt", {}),
    ({"question": "2+2?"}, None, {}),  # no answer column: nothing fits
    ({"answer": "4"}, None, {}),
    ({"instruction": "Add.", "reply": "4"}, "alpaca", {}),  # an answer under an unknown name: the reading says so
    ({"id": "1", "title": "T", "context": "Two and two.", "question": "2+2?",  # SQuAD: its first answer
      "answers": {"text": ["4", "four"], "answer_start": [0, 0]}}, "alpaca",
     {"instruction": "question", "input": "context", "output": "answers.text.0"}),
    ({"question": "2+2?", "answers": {"text": [], "answer_start": []}}, None, {}),  # SQuAD 2's unanswerable first row
    ({"question": "2+2?", "answer": {"value": "4", "aliases": ["four"]}}, "alpaca",  # TriviaQA
     {"instruction": "question", "output": "answer.value"}),
])
def test_well_known_column_names_are_read_as_their_fields(row, fmt, columns):
    assert detect_columns(row) == (fmt, columns)


def test_the_first_row_is_read_without_parsing_the_rest_where_the_format_allows(tmp_path):
    import pandas as pd

    from ftsweep.config.data import DataConfig
    from ftsweep.data.sources import first_records, read_records, resolve_source

    rows = [{"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(3)]
    files = {
        "array.json": "\ufeff \n [ \n" + json.dumps(rows)[1:],  # BOM, blank space before and after the bracket
        "lines.jsonl": jsonl(rows),
        "by_column.json": json.dumps({k: [r[k] for r in rows] for k in rows[0]}),  # Dataset.to_dict(): read in full
        "under_key.json": json.dumps({"data": rows}),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    pd.DataFrame(rows).to_parquet(tmp_path / "rows.parquet")
    for name in [*files, "rows.parquet"]:
        d = DataConfig(extra={"field": "data"} if name == "under_key.json" else {})
        first = next(first_records(resolve_source(str(tmp_path / name), "auto"), d))
        full = next(read_records(resolve_source(str(tmp_path / name), "auto"), d))
        assert (first.row, first.where) == (full.row, full.where) == (rows[0], full.where), name
    (tmp_path / "broken.json").write_text('[{"instruction": "q", "output": ')  # the full reading's own error
    with pytest.raises(DataError, match="invalid JSON"):
        next(first_records(resolve_source(str(tmp_path / "broken.json"), "auto"), DataConfig()))


@pytest.fixture
def build(compose):
    def _b(path, *overrides: str):
        cfg = compose(f"data.path={path}", "data.val_size=0", "objective.metric=train_loss", "data.shuffle=false",
                      NO_PRETRAIN, *overrides)
        tok = load_tokenizer(cfg)
        return build_datasets(cfg, tok)

    return _b


def test_auto_reads_each_file_as_its_format_set_by_hand(build, tmp_path, capfd):
    files = [
        ("chat", "c.jsonl", jsonl([{"messages": TURNS}, {"messages": [{"role": "user", "content": "hi"},
                                                                       {"role": "assistant", "content": "hello"}]}])),
        ("alpaca", "a.csv", "instruction,input,output\nAdd.,2+2,4\nGreet.,,hello\n"),
        ("prompt_completion", "p.json", json.dumps([{"prompt": "2+2?", "completion": "4"},
                                                    {"prompt": "3+3?", "completion": "6"}])),
        ("prompt_completion", "pc.json", json.dumps([{"prompt": TURNS[:1], "completion": TURNS[1:]}] * 2)),
        ("text", "t.txt", "one document\nanother document\n"),
    ]
    for fmt, name, text in files:
        (tmp_path / name).write_text(text)
        auto = build(tmp_path / name, "data.format=auto")
        by_hand = build(tmp_path / name, f"data.format={fmt}")
        assert auto.train["input_ids"] == by_hand.train["input_ids"], fmt
        assert auto.train["labels"] == by_hand.train["labels"], fmt  # the same tokens trained
        assert f"data.format=auto: {tmp_path / name} reads as {fmt}" in capfd.readouterr().err


@pytest.mark.parametrize(("stage", "rows", "fmt"), [
    ("dpo", [{"prompt": TURNS[:1], "chosen": TURNS[1:], "rejected": [{"role": "assistant", "content": "5"}]}], "chat"),
    ("dpo", [{"chosen": "Human: 2+2? Assistant: 4", "rejected": "Human: 2+2? Assistant: 5"}], "prompt_completion"),
    ("kto", [{"prompt": "2+2?", "completion": "4", "label": True}, {"prompt": "2+2?", "completion": "5", "label": False}],
     "prompt_completion"),
])
def test_auto_reads_preference_rows_as_their_format_set_by_hand(compose, tmp_path, stage, rows, fmt):
    from ftsweep.stages.registry import stage_module

    path = tmp_path / "pairs.jsonl"
    path.write_text(jsonl(rows * 2))
    built = []
    for given in ("auto", fmt):
        cfg = compose(f"stage={stage}", f"data.path={path}", f"data.format={given}", "data.val_size=0",
                      "objective.metric=train_loss", "data.shuffle=false", NO_PRETRAIN)
        built.append(stage_module(stage).datasets(cfg, load_tokenizer(cfg)).train.to_list())
    assert built[0] == built[1]


def test_alpaca_ranking_rows_with_a_system_prompt_are_chat_turns_and_auto_reads_them(compose, tmp_path):
    from ftsweep.stages.registry import stage_module

    path = tmp_path / "orca_dpo.jsonl"  # OpenOrca's DPO pairs: the first row's system prompt empty
    path.write_text(jsonl([{"system": "" if i == 0 else "Be brief.", "question": f"{i}+{i}?", "chosen": str(2 * i),
                            "rejected": str(2 * i + 1)} for i in range(3)]))
    built = []
    for given in (["data.format=auto"], ["data.format=chat", "data.columns.instruction=question"]):
        cfg = compose("stage=dpo", f"data.path={path}", "data.val_size=0", "objective.metric=train_loss",
                      "data.shuffle=false", NO_PRETRAIN, *given)
        tok = load_tokenizer(cfg)
        built.append(stage_module("dpo").datasets(cfg, tok).train.to_list())
    assert built[0] == built[1]
    prompts = [tok.decode(r["prompt_ids"]) for r in built[0]]
    assert "system" not in prompts[0] and prompts[0].count("0+0?") == 1
    assert "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" in prompts[1] and "1+1?" in prompts[1]
    assert [tok.decode(r["chosen_ids"]) for r in built[0]][1].startswith("2")
    assert [tok.decode(r["rejected_ids"]) for r in built[0]][1].startswith("3")


def test_auto_reads_mapped_columns_and_skips_an_unreadable_first_line(build, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("{not json\n" + jsonl([{"dialog": TURNS}]))
    bundle = build(path, "data.format=auto", "data.columns.messages=dialog", "data.bad_rows=skip")
    assert bundle.stats["n_skipped_bad"] == 1 and bundle.stats["n_train"] == 1
    by_hand = build(path, "data.format=chat", "data.columns.messages=dialog", "data.bad_rows=skip")
    assert bundle.train["labels"] == by_hand.train["labels"]


@pytest.mark.parametrize(("rows", "by_hand", "said"), [
    ([{"question": f"{i}+{i}?", "answer": f"#### {2 * i}"} for i in range(3)],
     ["data.format=alpaca", "data.columns.instruction=question", "data.columns.output=answer"],
     "alpaca (columns question as instruction, answer as output)"),
    ([{"instruction": "Add.", "context": f"{i}+{i}", "response": str(2 * i), "category": "qa"} for i in range(3)],
     ["data.format=alpaca", "data.columns.input=context", "data.columns.output=response"],
     "alpaca (columns instruction, context as input, response as output, category)"),
    ([{"system_prompt": "Be brief.", "question": f"{i}+{i}?", "response": str(2 * i)} for i in range(3)],
     ["data.format=chat", "data.columns.system=system_prompt", "data.columns.instruction=question",
      "data.columns.output=response"],
     "chat (columns system_prompt as system, question as instruction, response as output)"),
    ([{"messages": [{"from": "human", "value": f"{i}+{i}?"}, {"from": "gpt", "value": str(2 * i)}]} for i in range(3)],
     ["data.format=sharegpt", "data.columns.conversations=messages"], "sharegpt (columns messages as conversations)"),
    ([{"prompt": f"{i}+{i} =", "response": f" {2 * i}"} for i in range(3)],
     ["data.format=prompt_completion", "data.columns.completion=response"],
     "prompt_completion (columns prompt, response as completion)"),
    ([{"id": str(i), "context": f"{i} and {i}.", "question": f"{i}+{i}?",
       "answers": {"text": [str(2 * i), "x"], "answer_start": [0, 1]}} for i in range(3)],
     ["data.format=alpaca", "data.columns.instruction=question", "data.columns.input=context",
      "data.columns.output=answers.text.0"],
     "alpaca (columns id, context as input, question as instruction, answers.text.0 as output)"),
])
def test_auto_reads_well_known_column_names_as_the_mapping_by_hand(build, tmp_path, capfd, rows, by_hand, said):
    path = tmp_path / "d.jsonl"
    path.write_text(jsonl(rows))
    auto = build(path, "data.format=auto")
    assert f"data.format=auto: {path} reads as {said}" in capfd.readouterr().err
    hand = build(path, *by_hand)
    assert auto.train["input_ids"] == hand.train["input_ids"]
    assert auto.train["labels"] == hand.train["labels"]
    assert all(any(x != -100 for x in labels) for labels in auto.train["labels"])  # each answer trained


def test_auto_never_overrides_a_mapping_given(build, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(jsonl([{"question": "2+2?", "answer": "4", "final": "four"}]))
    given = build(path, "data.format=auto", "data.columns.output=final")  # answer is not taken as the output
    hand = build(path, "data.format=alpaca", "data.columns.instruction=question", "data.columns.output=final")
    assert given.train["labels"] == hand.train["labels"]
    with pytest.raises(DataError, match=r"field \"output \(column 'reply'\)\": missing"):
        build(path, "data.format=auto", "data.columns.output=reply")  # a column the file lacks: said, not guessed


def test_a_run_records_the_format_it_read_and_generate_reads_it_back(compose, tmp_path):
    from ftsweep import rundir
    from ftsweep.train import run

    data = tmp_path / "chat.jsonl"
    data.write_text(jsonl([{"messages": [{"role": "user", "content": f"{i}+{i}?"},
                                         {"role": "assistant", "content": str(2 * i)}]} for i in range(12)]))
    cfg = compose("data=custom_json", f"data.path={data}", "data.val_size=2", "trainer.max_steps=2",
                  "trainer.eval_steps=2", "logger=none", NO_PRETRAIN)
    assert cfg.data.format == "auto"
    run(cfg, tmp_path / "run")
    assert rundir.read_manifest(tmp_path / "run")["data_format"] == "chat"
    (tmp_path / "run" / ".hydra").mkdir()
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text("data:\n  format: auto\n  path: gone.jsonl\n")
    assert rundir.load_config(tmp_path / "run").data.format == "chat"  # the file itself need not be there


def test_a_run_records_the_columns_auto_mapped_and_generate_reads_them_back(compose, tmp_path):
    from omegaconf import OmegaConf

    from ftsweep import rundir
    from ftsweep.train import run

    data = tmp_path / "gsm.jsonl"
    data.write_text(jsonl([{"question": f"{i}+{i}?", "answer": f"#### {2 * i}"} for i in range(12)]))
    cfg = compose("data=custom_json", f"data.path={data}", "data.val_size=2", "trainer.max_steps=2",
                  "trainer.eval_steps=2", "logger=none", NO_PRETRAIN)
    saved = OmegaConf.to_yaml(cfg)
    run(cfg, tmp_path / "run")
    manifest = rundir.read_manifest(tmp_path / "run")
    assert (manifest["data_format"], manifest["data_columns"]) == ("alpaca", {"instruction": "question",
                                                                              "output": "answer"})
    (tmp_path / "run" / ".hydra").mkdir()
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text(saved)  # as Hydra saves it: format auto, no columns
    loaded = rundir.load_config(tmp_path / "run")
    assert (loaded.data.format, loaded.data.columns.instruction, loaded.data.columns.output) == (
        "alpaca", "question", "answer")


def cli(*args: str, cwd: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FTSWEEP_CACHE_DIR": str(cache_dir), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "ftsweep", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300, check=False)


def test_cli_a_file_no_format_fits_is_one_line_and_nothing_is_written(cache_dir, tmp_path):
    (tmp_path / "qa.jsonl").write_text(jsonl([{"q": "2+2?", "a": "4"}]))
    (tmp_path / "docs.txt").write_text("one document\n")
    cases = {
        ("data.path=qa.jsonl",): "ftsweep: error: qa.jsonl line 1: data.format=auto cannot tell the format from the "
                                 "columns (q, a): set data.format (alpaca, chat, sharegpt, "
                                 "prompt_completion or text) and map the columns, e.g. data.columns.instruction=<column>",
        ("data.path=docs.txt", "stage=dpo"): "ftsweep: error: data.format: stage=dpo needs prompts and answers; "
                                             "'text' has neither",
    }
    for overrides, line in cases.items():
        out = cli("train", "data=custom_json", *overrides, "logger=none", NO_PRETRAIN, cwd=tmp_path, cache_dir=cache_dir)
        assert out.returncode == 2, out.stderr
        assert out.stderr.strip().splitlines()[-1] == line
        assert "Traceback" not in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.txt", "qa.jsonl"]  # no outputs/ folder


def test_a_searched_file_no_format_fits_stops_the_sweep_before_any_trial(cache_dir, tmp_path):
    (tmp_path / "a.jsonl").write_text(jsonl([{"messages": TURNS}]))
    (tmp_path / "qa.jsonl").write_text(jsonl([{"q": "2+2?", "a": "4"}]))
    out = cli("train", "-m", "data=custom_json", "data.path=choice(a.jsonl,qa.jsonl)", "logger=none",
              f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path, cache_dir=cache_dir)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        "ftsweep: error: qa.jsonl line 1: data.format=auto cannot tell the format from the columns (q, a)")
    (tmp_path / "docs.txt").write_text("one document\n")
    out = cli("train", "-m", "data=custom_json", "data.path=choice(a.jsonl,docs.txt)", "stage=kto", "logger=none",
              f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path, cache_dir=cache_dir)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1] == ("ftsweep: error: data.format: stage=kto needs prompts and answers; "
                                                   "'text' has neither (the searched data.path=docs.txt reads as text)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "docs.txt", "qa.jsonl"]


def test_a_column_path_reads_a_nested_value_and_a_missing_one_names_the_path(build, tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(jsonl([{"q": f"{i}+{i}?", "a": {"texts": [str(2 * i), "x"]}} for i in range(3)]))
    paths = build(path, "data.format=alpaca", "data.columns.instruction=q", "data.columns.output=a.texts.0")
    flat = tmp_path / "flat.jsonl"
    flat.write_text(jsonl([{"instruction": f"{i}+{i}?", "output": str(2 * i)} for i in range(3)]))
    assert paths.train["input_ids"] == build(flat, "data.format=alpaca").train["input_ids"]
    with pytest.raises(DataError, match=r"d.jsonl line 1: field \"output \(column 'a.texts.2'\)\": missing"):
        build(path, "data.format=alpaca", "data.columns.instruction=q", "data.columns.output=a.texts.2")
