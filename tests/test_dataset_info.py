"""LLaMA-Factory's dataset registry: ``data.dataset=<name>`` reads ``<data.dataset_dir>/dataset_info.json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ftsweep.data import DataError, build_datasets
from ftsweep.data.dataset_info import dataset_problem, entry_settings
from ftsweep.data.options import data_options
from ftsweep.model import load_tokenizer

NO_PRETRAIN = "model.tiny.pretrain_steps=0"
QA = [{"question": f"What is {i} plus {i}?", "answer": f"It is {2 * i}."} for i in range(12)]
CHAT = [{"sys": "Be brief.", "dialog": [{"role": "user", "content": f"Say {i}"},
                                        {"role": "assistant", "content": f"Number {i}"}]} for i in range(12)]
PAIRS = [{"instruction": f"Say {i}", "input": "", "chosen": f"{i}", "rejected": "no"} for i in range(12)]
HIST = [{"sys": "Be brief.", "past": [[f"Say {i}", f"Said {i}"]], "instruction": f"Again {i}", "input": "",
         "output": f"Again said {i}"} for i in range(12)]
REGISTRY = {
    "qa": {"file_name": "qa.json", "columns": {"prompt": "question", "response": "answer"}, "num_samples": 8},
    "talk": {"file_name": "sub/chat.jsonl", "formatting": "sharegpt", "columns": {"messages": "dialog", "system": "sys"},
             "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}},
    "pairs": {"file_name": "pairs.json", "ranking": True},
    "hist": {"file_name": "hist.json", "columns": {"history": "past", "system": "sys"}},
    "c4": {"file_name": "docs.jsonl", "columns": {"prompt": "body"}},
    "qa_eval": {"file_name": "qa_eval.json", "columns": {"prompt": "question", "response": "answer"}},
    "hub": {"hf_hub_url": "someone/some_set", "subset": "en", "split": "test", "folder": "v2", "revision": "main"},
}


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A LLaMA-Factory-style project: ./data/dataset_info.json beside its files; the working directory."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "qa.json").write_text(json.dumps(QA))
    (data / "sub" / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CHAT))
    (data / "pairs.json").write_text(json.dumps(PAIRS))
    (data / "hist.json").write_text(json.dumps(HIST))
    (data / "qa_eval.json").write_text(json.dumps([{"question": f"What is {i} times 3?", "answer": f"{3 * i}."}
                                                    for i in range(5)]))
    (data / "docs.jsonl").write_text("".join(json.dumps({"body": f"Document {i}. " * 20}) + "\n" for i in range(12)))
    (data / "dataset_info.json").write_text(json.dumps(REGISTRY, indent=2))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _answers(tok, ds) -> list[str]:
    return sorted(tok.decode([t for t in r if t != -100], skip_special_tokens=True) for r in ds["labels"])


def test_an_alpaca_entry_maps_its_columns_and_caps_the_rows(project, compose):
    cfg = compose("data.dataset=qa", "data.val_size=0", "data.max_rows=null", "objective.metric=train_loss", NO_PRETRAIN)
    d = data_options(cfg.data)
    assert (d.path, d.loader, d.format, d.max_rows) == (str(project / "data" / "qa.json"), "auto", "alpaca", 8)
    assert (d.columns.instruction, d.columns.output, d.columns.input) == ("question", "answer", None)
    tok = load_tokenizer(cfg)
    bundle = build_datasets(cfg, tok)
    answers = _answers(tok, bundle.train)
    assert len(answers) == 8 and set(answers) <= {r["answer"] for r in QA}  # num_samples rows, the answers trained
    # an explicit, smaller data.max_rows wins over num_samples
    assert data_options(compose("data.dataset=qa", "data.max_rows=3").data).max_rows == 3


def test_a_sharegpt_entry_with_openai_tags_trains_the_assistant_turns(project, compose):
    cfg = compose("data.dataset=talk", "data.val_size=0", "data.max_rows=null", "objective.metric=train_loss", NO_PRETRAIN)
    d = data_options(cfg.data)
    assert (d.format, d.columns.conversations, d.columns.system) == ("sharegpt", "dialog", "sys")
    tok = load_tokenizer(cfg)
    bundle = build_datasets(cfg, tok)
    assert _answers(tok, bundle.train) == sorted(f"Number {i}" for i in range(12))
    assert "Be brief." in tok.decode(bundle.train[0]["input_ids"])  # the system column is the system turn



def test_an_openai_entry_reads_messages_with_role_and_content(project, compose):
    # LLaMA-Factory's formatting: openai (before: refused, "alpaca or sharegpt")
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Say {i}"},
                          {"role": "assistant", "content": f"Number {i}"}]} for i in range(12)]
    (project / "data" / "oa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = json.loads((project / "data" / "dataset_info.json").read_text())
    info["oa"] = {"file_name": "oa.jsonl", "formatting": "openai"}
    (project / "data" / "dataset_info.json").write_text(json.dumps(info))
    cfg = compose("data.dataset=oa", "data.val_size=0", "data.max_rows=null", "objective.metric=train_loss", NO_PRETRAIN)
    d = data_options(cfg.data)
    assert (d.format, d.columns.conversations) == ("sharegpt", "messages")
    tok = load_tokenizer(cfg)
    bundle = build_datasets(cfg, tok)
    assert _answers(tok, bundle.train) == sorted(f"Number {i}" for i in range(12))
    assert "Be brief." in tok.decode(bundle.train[0]["input_ids"])


def test_a_system_turn_first_wins_over_the_system_column_as_in_llamafactory(project, compose):
    # LLaMA-Factory's converters take a first system turn as the system prompt and read the system column only
    # without one; a file that carries the prompt in both places (an export of its own dataset) trains
    rows = [{"sys": "Column prompt.", "dialog": [{"role": "system", "content": f"Turn prompt {i}."},
                                                 *CHAT[i]["dialog"]]} for i in range(6)]
    rows[5]["dialog"].pop(0)  # no system turn: the column is the system prompt
    (project / "data" / "sys.json").write_text(json.dumps(rows))
    registry = {**REGISTRY, "sys": {**REGISTRY["talk"], "file_name": "sys.json"}}
    registry["sys"]["tags"] = {**registry["sys"]["tags"], "system_tag": "system"}
    (project / "data" / "dataset_info.json").write_text(json.dumps(registry))
    cfg = compose("data.dataset=sys", "data.val_size=0", "data.shuffle=false", "objective.metric=train_loss",
                  NO_PRETRAIN)
    tok = load_tokenizer(cfg)
    texts = [tok.decode(ids) for ids in build_datasets(cfg, tok).train["input_ids"]]
    assert [t.count("prompt") for t in texts] == [1] * 6
    assert [f"Turn prompt {i}." in t for i, t in enumerate(texts)] == [True] * 5 + [False]
    assert "Column prompt." in texts[5]


def test_a_bad_row_of_a_listed_entry_is_named_first_in_file_order(project, compose):
    # every row of 'hist' has a system prompt the Alpaca templates cannot hold: the error names its first row,
    # as for the entry alone, although each entry's rows are shuffled before they are mixed
    cfg = compose("data.dataset='qa,hist'", "objective.metric=train_loss", NO_PRETRAIN)
    with pytest.raises(DataError) as err:
        build_datasets(cfg, load_tokenizer(cfg))
    assert str(err.value).startswith(f"{project / 'data' / 'hist.json'} row 1: field ")

def test_a_hub_entry_gives_name_subset_split_revision_and_folder(project):
    got = entry_settings("hub", "data")
    assert {k: got[k] for k in ("path", "loader", "subset", "split", "revision", "data_dir")} == {
        "path": "someone/some_set", "loader": "hub", "subset": "en", "split": "test", "revision": "main",
        "data_dir": "v2"}
    assert entry_settings("hub", "data/dataset_info.json")["path"] == "someone/some_set"  # the file itself


@pytest.mark.parametrize(("entry", "message"), [
    ({"file_name": "qa.json", "formating": "sharegpt"}, ("'x' in data/dataset_info.json: unknown key 'formating'; "
                                                        "did you mean 'formatting'?")),
    ({"ms_hub_url": "a/b"}, ("ms_hub_url is not read here (local files: file_name; Hugging Face Hub datasets: "
                            "hf_hub_url)")),
    ({"file_name": "qa.json", "formatting": "chatml"}, "formatting 'chatml': alpaca, sharegpt or openai"),
    ({"file_name": "qa.json", "columns": {"images": "img"}}, "columns.images: multimodal rows are not supported"),
    ({"file_name": "c.json", "formatting": "sharegpt", "tags": {"user_tag": "Q"}},
     "tags.user_tag='Q': this role is read under the names human, user"),
    ({"file_name": "c.json", "formatting": "sharegpt", "tags": {"role_tag": "speaker"}},
     "tags role_tag='speaker', content_tag='value': turns are read with from/value or role/content"),
    ({"file_name": "qa.json", "num_samples": 0}, "num_samples must be a whole number >= 1 (got 0)"),
])
def test_what_cannot_be_read_is_one_line_naming_the_file_and_entry(project, entry, message):
    (project / "data" / "dataset_info.json").write_text(json.dumps({"x": entry}))
    from ftsweep.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        entry_settings("x", "data")
    assert str(err.value).startswith("data.dataset: ") and message in str(err.value)


def test_the_cli_refuses_a_bad_entry_before_any_run_folder(project, capsys):
    """Exit 2, one line, nothing written: an unknown name (with the names defined), a missing file, a preference
    dataset trained as SFT, a missing registry. The first case through the real ``ftsweep`` process, the others
    through the same ``ftsweep.cli.main`` in this process (a process each only paid the imports again)."""
    from ftsweep.cli import main

    cases = [
        (["data.dataset=qaa"], ("data.dataset: no dataset 'qaa' in data/dataset_info.json (it defines: c4, hist, "
                               "hub, pairs, qa, qa_eval, talk); did you mean 'qa'?")),
        (["data.dataset=pairs"], ("data.dataset: 'pairs' is a preference dataset (ranking: true, chosen / rejected "
                                 "answers): train it with stage=dpo (or stage=kto)")),
        (["data.dataset=qa", "data.dataset_dir=elsewhere"], "data.dataset: no elsewhere/dataset_info.json to define"),
        (["dataset=qa"], "did you mean data.dataset?"),
        (["data.dataset=qa", "data.eval_dataset=talk"], ("data.eval_dataset: 'talk' is read as sharegpt and 'qa' as "
                                                         "alpaca: validation rows are rendered like the training rows")),
        (["data.dataset=qa", "data.eval_dataset=pairs"], ("data.eval_dataset: 'pairs' and 'qa': one holds preference "
                                                          "pairs (ranking: true), the other does not")),
        (["data.eval_dataset=qa_eval"], "data.eval_dataset: needs data.dataset"),
        (["data.dataset=qa,talk"], ("is a sweep: add -m (or use sweep=<name>); several dataset_info.json entries as one "
                                    "dataset (LLaMA-Factory's list): quote them, \"data.dataset='qa,talk'\"")),
        (["data.dataset=[qa, talk]"], ("data.dataset: several dataset_info.json entries are one comma-separated "
                                       "string, as LLaMA-Factory writes them: \"data.dataset='qa,talk'\"")),
        (["data.dataset='qa,pairs'"], "data.dataset: 'pairs' holds preference pairs (ranking: true) and 'qa' does not"),
        (["data.dataset=qa", "data.path=other.json"], ("data.path: given with data.dataset, whose dataset_info.json "
                                                      "entry names the file; give one of them")),
    ]
    (project / "data" / "qa.json").rename(project / "data" / "moved.json")
    cases.append((["data.dataset=qa"], f"data.dataset: 'qa': no such file {project / 'data' / 'qa.json'}"))
    cases.append((["data.dataset='talk,qa'"], f"data.dataset: 'qa': no such file {project / 'data' / 'qa.json'}"))
    for i, (overrides, message) in enumerate(cases):
        argv = ["train", *overrides, "model=tiny", "logger=none", f"hydra.run.dir={project / 'run'}"]
        if i == 0:
            r = subprocess.run([sys.executable, "-m", "ftsweep", *argv], capture_output=True, text=True, cwd=project,
                               check=False)
            code, stderr = r.returncode, r.stderr
        else:
            capsys.readouterr()
            code, stderr = main(argv), capsys.readouterr().err
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and message in lines[0], (overrides, stderr)
        assert not (project / "run").exists()


def test_a_preference_entry_reads_as_pairs_under_dpo(project, compose):
    cfg = compose("stage=dpo", "data.dataset=pairs", NO_PRETRAIN)
    assert dataset_problem(cfg) is None
    d = data_options(cfg.data)
    assert (d.format, d.path) == ("alpaca", str(project / "data" / "pairs.json"))


def test_the_merged_model_card_names_the_entry_even_when_the_registry_is_gone(project, compose):
    from ftsweep.merge import _data_line

    cfg = compose("data.dataset=talk", NO_PRETRAIN)
    assert _data_line(cfg) == ("- data: `talk` (an entry of data/dataset_info.json) (format sharegpt, the tokenizer's "
                               f"chat template, cutoff {cfg.data.cutoff_len})")
    (project / "data" / "dataset_info.json").unlink()
    assert _data_line(cfg).startswith("- data: `talk` (an entry of data/dataset_info.json) (format ")


def test_a_sweep_over_entries_checks_every_one_before_the_first_trial(project, monkeypatch, capsys):
    """The bad sweep in-process (``ftsweep.cli.main``; the sweeper's bad input ends in SystemExit(2) there, as in
    tests/test_bad_input.py), the good one through the real ``ftsweep`` process."""
    from sweep_helpers import FAKE_CMD, run, sweep_args

    from ftsweep.cli import main

    sd = project / "s"
    monkeypatch.setenv("FTSWEEP_TRIAL_CMD", FAKE_CMD)  # were the bad entry missed: fake trials
    capsys.readouterr()
    try:
        code = main([*sweep_args(sd), "model=tiny", "data.dataset=choice(qa, nope, talk)"][3:])
    except SystemExit as exc:
        code = exc.code
    stderr = capsys.readouterr().err
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, stderr
    assert lines[0].startswith("ftsweep: error: data.dataset: no dataset 'nope' in data/dataset_info.json"), lines
    assert not list(sd.glob("trial_*"))
    r = run([*sweep_args(sd, n_trials=2), "model=tiny", "data.dataset=choice(qa, talk)"], project)
    assert r.returncode == 0, r.stderr[-2000:]


def test_an_alpaca_entry_with_history_trains_under_the_chat_format(project, compose):
    """LLaMA-Factory renders alpaca rows with a chat template: data.format=chat keeps that (history and system
    columns included); under the default alpaca format the same rows are refused in one line."""
    cfg = compose("data.dataset=hist", "data.format=chat", "data.val_size=0", "data.max_rows=null",
                  "objective.metric=train_loss", NO_PRETRAIN)
    d = data_options(cfg.data)
    assert (d.format, d.columns.history, d.columns.system) == ("chat", "past", "sys")
    tok = load_tokenizer(cfg)
    bundle = build_datasets(cfg, tok)
    trained = _answers(tok, bundle.train)
    assert len(trained) == 12 and all(t.startswith("Said ") and "Again said" in t for t in trained), trained[:2]
    from ftsweep.data import DataError

    alpaca = compose("data.dataset=hist", "data.val_size=0", "objective.metric=train_loss", NO_PRETRAIN)
    with pytest.raises(DataError, match="a system prompt: the alpaca templates have no place for it; read these "
                                        "rows with data.format=chat"):
        build_datasets(alpaca, tok)


def test_a_pretraining_entry_is_read_as_documents_under_the_text_format(project, compose):
    """LLaMA-Factory's pre-training entries (stage pt) keep the text in the column columns.prompt names."""
    cfg = compose("data.dataset=c4", "data.format=text", "data.val_size=0", "data.max_rows=null",
                  "objective.metric=train_loss", "data.cutoff_len=32", NO_PRETRAIN)
    d = data_options(cfg.data)
    assert (d.format, d.columns.text, d.columns.instruction) == ("text", "body", None)
    tok = load_tokenizer(cfg)
    bundle = build_datasets(cfg, tok)
    text = tok.decode(bundle.train[0]["input_ids"])
    assert "Document" in text and all(len(r) == 32 for r in bundle.train["input_ids"])  # blocks of cutoff_len


def test_an_eval_dataset_entry_is_the_validation_file(project, compose):
    """LLaMA-Factory's eval_dataset: the entry's file is data.validation_path (no split of the training rows);
    an eval_ objective with data.val_size=0 is then fine."""
    cfg = compose("data.dataset=qa", "data.eval_dataset=qa_eval", "data.val_size=0", "data.max_rows=null",
                  NO_PRETRAIN)
    d = data_options(cfg.data)
    assert d.validation_path == str(project / "data" / "qa_eval.json")
    tok = load_tokenizer(cfg)
    bundle = build_datasets(cfg, tok)
    assert len(bundle.eval) == 5 and len(bundle.train) == 8  # every eval row; num_samples 8 training rows
    assert _answers(tok, bundle.eval) == sorted(f"{3 * i}." for i in range(5))


def test_a_validation_entry_with_its_own_columns_or_layout_is_read_with_them(project, compose):
    """As LLaMA-Factory aligns every dataset: a validation entry whose columns differ from the training entry's is
    read with its own; Alpaca validation rows of a ShareGPT run are chat turns."""
    info = project / "data" / "dataset_info.json"
    info.write_text(json.dumps({**REGISTRY, "qa_plain": {"file_name": "plain.json"}}))
    (project / "data" / "plain.json").write_text(json.dumps([{"instruction": "What is 7 plus 7?", "input": "",
                                                              "output": "It is 14."}]))
    tok = None
    for dataset, expected in (("qa", "### Instruction"), ("talk", "<|start_header_id|>user<|end_header_id|>")):
        cfg = compose(f"data.dataset={dataset}", "data.eval_dataset=qa_plain", "data.val_size=0", NO_PRETRAIN)
        tok = tok or load_tokenizer(cfg)
        bundle = build_datasets(cfg, tok)
        assert _answers(tok, bundle.eval) == ["It is 14."]
        assert expected in tok.decode(bundle.eval[0]["input_ids"]) and "7 plus 7" in tok.decode(bundle.eval[0]["input_ids"])


def test_a_list_of_entries_is_one_dataset_each_read_with_its_own_columns(project, compose):
    """LLaMA-Factory's ``dataset: a,b``: the rows of every entry, each with its own file, columns and num_samples;
    Alpaca entries listed with ShareGPT ones are chat turns (rendered by the chat template, as LLaMA-Factory)."""
    cfg = compose("data.dataset='qa,talk'", "data.val_size=0", "data.max_rows=null", "objective.metric=train_loss",
                  NO_PRETRAIN)
    d = data_options(cfg.data)
    assert (d.loader, d.format) == ("mix", "sharegpt")
    tok = load_tokenizer(cfg)
    bundle = build_datasets(cfg, tok)
    answers = _answers(tok, bundle.train)
    assert len(answers) == 8 + 12  # qa's num_samples, every row of talk
    assert set(answers) - {r["answer"] for r in QA} == {f"Number {i}" for i in range(12)}
    texts = [tok.decode(ids) for ids in bundle.train["input_ids"]]
    qa_rows = [t for t in texts if "plus" in t]
    assert len(qa_rows) == 8 and all("<|start_header_id|>user<|end_header_id|>" in t for t in qa_rows)

    # two Alpaca entries stay Alpaca (the Alpaca templates), validation split from the whole list
    cfg = compose("data.dataset='qa,qa_eval'", "data.val_size=3", "data.max_rows=null", NO_PRETRAIN)
    assert data_options(cfg.data).format == "alpaca"
    bundle = build_datasets(cfg, tok)
    assert len(bundle.train) + len(bundle.eval) == 8 + 5 and len(bundle.eval) == 3
    assert all("### Instruction" in tok.decode(ids) for ids in bundle.train["input_ids"])
    # the same list, the other way round and as data.max_rows caps it: the seeded selection of the whole list
    assert len(build_datasets(compose("data.dataset='qa_eval,qa'", "data.val_size=0", "data.max_rows=6",
                                      "objective.metric=train_loss", NO_PRETRAIN), tok).train) == 6


def _sources(tok, ds) -> tuple[int, int]:
    """(rows of qa, rows of qa_eval) among ``ds``'s trained answers."""
    answers = _answers(tok, ds)
    qa = sum(a.startswith("It is") for a in answers)
    return qa, len(answers) - qa


@pytest.mark.parametrize(("strategy", "probs", "expected"), [
    ("concat", None, (8, 5)),
    ("interleave_under", None, (5, 5)),  # one row of each in turn, until qa_eval's 5 rows are used
    ("interleave_over", None, (8, 8)),  # until both ran out: qa_eval's rows again
    ("interleave_under", "[0.9,0.1]", None),  # drawn at random: qa runs out first
])
def test_a_list_is_mixed_as_llama_factorys_mix_strategy(project, compose, strategy, probs, expected):
    """LLaMA-Factory's mix_strategy (datasets' interleave_datasets): qa (num_samples 8) with qa_eval (5 rows)."""
    cfg = compose("data.dataset='qa,qa_eval'", "data.val_size=0", "data.max_rows=null", "objective.metric=train_loss",
                  f"data.mix_strategy={strategy}", *([f"data.interleave_probs={probs}"] if probs else []), NO_PRETRAIN)
    tok = load_tokenizer(cfg)
    bundle = build_datasets(cfg, tok)
    got = _sources(tok, bundle.train)
    if expected is not None:
        assert got == expected
    else:
        assert got[0] == 8 and got[1] < 5
        assert _sources(tok, build_datasets(cfg, tok).train) == got  # seeded: data.seed
    if strategy == "interleave_over":  # repeated rows are the same rows
        assert len(set(map(tuple, bundle.train["input_ids"]))) == 8 + 5
    # a validation list keeps every row once, whatever the training list's strategy
    cfg = compose("data.dataset='qa,qa_eval'", "data.eval_dataset='qa_eval,qa'", "data.max_rows=null",
                  f"data.mix_strategy={strategy}", *([f"data.interleave_probs={probs}"] if probs else []), NO_PRETRAIN)
    assert _sources(tok, build_datasets(cfg, tok).eval) == (8, 5)


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.mix_strategy=interleave"],
     "data.mix_strategy: got 'interleave'; allowed: concat, interleave_under, interleave_over"),
    (["data.interleave_probs=[0.5,0.5]"],
     "data.interleave_probs: only with data.mix_strategy=interleave_under or interleave_over"),
    (["data.mix_strategy=interleave_over", "data.interleave_probs=[0.2,0.3,0.5]"],
     "data.interleave_probs: one chance per entry of data.dataset: got 3 (data.dataset='qa,qa_eval' lists 2)"),
    (["data.mix_strategy=interleave_over", "data.interleave_probs=[0.5,0.6]"],
     "data.interleave_probs: chances >= 0 that sum to 1 (got [0.5, 0.6], sum 1.1)"),
    (["data.mix_strategy=interleave_over", "data.interleave_probs=[1.5,-0.5]"],
     "data.interleave_probs: chances >= 0 that sum to 1"),
])
def test_a_mix_the_list_cannot_have_is_one_line(project, compose, overrides, message):
    from ftsweep.errors import UsageError

    with pytest.raises(UsageError) as err:
        compose("data.dataset='qa,qa_eval'", *overrides)
    assert str(err.value).startswith(message), str(err.value)


def test_interleaving_an_entry_left_without_rows_is_one_line():
    from ftsweep.data.errors import DataError
    from ftsweep.data.sources import Record, mix

    rows = [Record({"text": "a"}, "a.json:1")]
    assert mix([rows, []], "concat", None, 0) == rows
    with pytest.raises(DataError, match="interleave_over needs rows in every entry of the list; entry 2 has none"):
        mix([rows, []], "interleave_over", None, 0)


@pytest.mark.parametrize(("value", "extra", "message"), [
    ("'qa,pairs'", [], "data.dataset: 'pairs' holds preference pairs (ranking: true) and 'qa' does not"),
    ("'c4,talk'", ["data.format=text"], "data.dataset: 'c4' is read as text and 'talk' as sharegpt"),
    ("'qa,,talk'", [], "data.dataset: 'qa,,talk': an empty name in the list of datasets"),
    ("'qa,tlak'", [], "data.dataset: no dataset 'tlak' in data/dataset_info.json"),
    ("'qa,qa_eval'", ["data.eval_dataset=talk", "data.format=alpaca"], None),
])
def test_a_list_of_entries_that_cannot_train_together_is_one_line(project, value, extra, message):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"data": {"dataset": value.strip("'"), "dataset_dir": "data", "format": "alpaca",
                                     **{k.split(".")[1]: v for k, v in (e.split("=") for e in extra)}},
                            "stage": {"name": "sft"}})
    problem = dataset_problem(cfg)
    if message is None:
        assert problem == ("data.eval_dataset: 'talk' is read as sharegpt and 'qa,qa_eval' as alpaca: validation "
                           "rows are rendered like the training rows")
    else:
        assert problem is not None and problem.startswith(message), problem


def test_a_run_read_back_from_another_folder_finds_its_registry(project, tmp_path, monkeypatch):
    """merge / generate read a run's config from any folder: a relative data.dataset_dir is the one of the folder
    the run was started from (hydra.runtime.cwd), as a relative model folder is; the run's files are unchanged."""
    from ftsweep.rundir import load_config

    run = project / "run" / ".hydra"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("data:\n  dataset: qa,talk\n  dataset_dir: data\n")
    (run / "hydra.yaml").write_text(f"hydra:\n  runtime:\n    cwd: {project}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(project / "run")
    assert cfg.data.dataset_dir == str(project / "data")
    assert data_options(cfg.data).format == "sharegpt"
    assert "dataset_dir: data\n" in (run / "config.yaml").read_text()


def test_a_list_of_entries_is_cached_by_the_bytes_of_its_files_and_registry(project, compose, monkeypatch):
    from ftsweep.data import sources

    cfg = compose("data.dataset='qa,talk'", "data.val_size=0", "objective.metric=train_loss", NO_PRETRAIN)
    tok = load_tokenizer(cfg)
    cfg.cache_dir = str(project / "cache")  # a data cache of its own: a reused FTSWEEP_TEST_CACHE holds these rows
    first = build_datasets(cfg, tok)
    with monkeypatch.context() as m:  # a cache hit reads no row (the files are hashed by their bytes)
        m.setattr(sources, "read_records", lambda *a: pytest.fail("rows read on a cache hit"))
        again = build_datasets(cfg, tok)
    assert (first.stats["cache_hit"], again.stats["cache_hit"]) == (False, True)
    assert again.fingerprint == first.fingerprint
    talk = project / "data" / "sub" / "chat.jsonl"
    talk.write_text(talk.read_text().replace("Number 0", "Number zero"))  # an entry's file changed
    changed = build_datasets(cfg, tok)
    assert not changed.stats["cache_hit"] and "Number zero" in _answers(tok, changed.train)
    info = project / "data" / "dataset_info.json"
    info.write_text(json.dumps({**REGISTRY, "qa": {**REGISTRY["qa"], "num_samples": 3}}))  # the registry changed
    fewer = build_datasets(cfg, tok)
    assert not fewer.stats["cache_hit"] and len(fewer.train) == 3 + 12


def test_a_kto_list_of_alpaca_and_sharegpt_entries_keeps_every_rows_label(project, compose):
    """An Alpaca KTO entry listed with a ShareGPT one: its rows become turns and keep their kto_tag (label)."""
    from ftsweep.data.preference import build_preference_datasets

    data = project / "data"
    (data / "k1.json").write_text(json.dumps([{"instruction": f"Say {i}", "input": "", "output": f"{i}", "tag": i < 3}
                                              for i in range(6)]))
    (data / "k2.json").write_text(json.dumps([{"conversations": [{"from": "human", "value": f"Name {i}"},
                                                                 {"from": "gpt", "value": f"N{i}"}], "ok": i < 1}
                                              for i in range(4)]))
    (data / "dataset_info.json").write_text(json.dumps({
        "k1": {"file_name": "k1.json", "columns": {"kto_tag": "tag"}},
        "k2": {"file_name": "k2.json", "formatting": "sharegpt", "columns": {"kto_tag": "ok"}}}))
    cfg = compose("stage=kto", "data.dataset='k1,k2'", "data.val_size=0", "data.shuffle=false",
                  "objective.metric=train_loss", NO_PRETRAIN)
    ds = build_preference_datasets(cfg, load_tokenizer(cfg), paired=False, max_prompt_length=None).train
    assert len(ds) == 6 + 4 and sum(ds["label"]) == 3 + 1
