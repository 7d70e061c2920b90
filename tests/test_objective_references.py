"""Several acceptable answers per validation row (``data.columns.references``): every answer metric scores the
best over the trained answer and the row's own gold answers, as SQuAD's evaluate script takes the max over them.

Before, a SQuAD-style row was scored against its one trained answer (``answers.text.0``) only: a model giving the
second gold answer scored 0 where SQuAD scores 1.
"""

from __future__ import annotations

import json
import os
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from ftsweep.config.objective import ObjectiveConfig
from ftsweep.errors import DataError
from ftsweep.objectives.metrics import build_scorer

NO_PRETRAIN = "model.tiny.pretrain_steps=0"


def _objective(**kw):
    return OmegaConf.merge(OmegaConf.structured(ObjectiveConfig), kw)


def _row(prediction, reference, references=None):
    return {"index": 0, "prompt": "p", "prediction": prediction, "reference": reference,
            **({"references": references} if references is not None else {})}


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


# ------------------------------------------------------------------------------------ scoring
@pytest.mark.parametrize("metric, kw, prediction, golds", [
    ("exact_match", {}, "Broncos", ["Denver Broncos", "Broncos"]),
    ("contains", {}, "It was the Broncos.", ["Denver Broncos", "Broncos"]),
    ("regex", {"pattern": r"#### (\S+)"}, "so #### 7", ["#### 8", "#### 7"]),
    ("rouge_l", {}, "Broncos", ["Denver Broncos of Colorado", "Broncos"]),
    ("bleu", {}, "the Denver Broncos won it", ["a team from Colorado", "the Denver Broncos won it"]),
    ("chrf", {}, "Santa Clara, California", ["Levi's Stadium", "Santa Clara, California"]),
])
def test_each_metric_scores_the_best_over_the_references(metric, kw, prediction, golds):
    """The answer matches only the second gold answer: scored against the trained (first) one alone it falls
    short; with the row's references it scores what it scores against the second one alone."""
    scorer = build_scorer(metric, _objective(**kw))
    alone = scorer([_row(prediction, golds[0])])
    second = scorer([_row(prediction, golds[1])])
    best = scorer([_row(prediction, golds[0], golds)])
    assert alone.value < second.value
    assert best.value == pytest.approx(second.value) and best.rows == pytest.approx(second.rows)
    if metric in ("exact_match", "contains", "regex", "rouge_l", "bleu"):
        assert best.value == pytest.approx(100.0 if metric == "bleu" else 1.0)


def test_chrf_over_several_references_equals_sacrebleus_own():
    """sacrebleu's chrF given several references takes each segment's best-scoring one: the same corpus value."""
    import sacrebleu

    pairs = [("Santa Clara, California", ["Levi's Stadium", "Santa Clara"]),
             ("the Broncos", ["Denver Broncos", "Broncos of Denver"]),
             ("February 7", ["7 February 2016", "Feb 7"])]
    rows = [_row(p, golds[0], golds) for p, golds in pairs]
    ours = build_scorer("chrf", _objective())(rows).value
    theirs = sacrebleu.corpus_chrf([p for p, _ in pairs], [[g[0] for _, g in pairs], [g[1] for _, g in pairs]]).score
    assert ours == pytest.approx(theirs)
    assert ours > build_scorer("chrf", _objective())([_row(p, golds[0]) for p, golds in pairs]).value


def test_exact_match_extra_metrics_and_rows_without_references():
    """Rows without references are scored as before, beside rows with them; extra_metrics take the best too."""
    obj = _objective(metric="exact_match", extra_metrics=["contains"])
    rows = [_row("Broncos", "Denver Broncos", ["Denver Broncos", "Broncos"]),  # the second gold answer
            _row("Broncos", "Denver Broncos"),  # no references: the trained answer only
            _row("Panthers", "Denver Broncos", ["Denver Broncos", "Broncos"])]
    em = build_scorer("exact_match", obj)(rows)
    assert em.rows == [1.0, 0.0, 0.0] and em.value == pytest.approx(1 / 3)
    assert build_scorer("contains", obj)([_row("the Broncos", "Denver Broncos", ["Denver Broncos", "Broncos"])]).value == 1.0


def test_a_user_function_is_called_per_reference_and_the_best_kept(tmp_path, monkeypatch):
    (tmp_path / "refs_metric.py").write_text(
        "CALLS = []\n"
        "def score(prompt, prediction, reference, row):\n"
        "    CALLS.append((reference, row))\n"
        "    return float(prediction == reference)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    obj = _objective(metric="function", function="refs_metric:score", direction="maximize")
    got = build_scorer("function", obj)([_row("b", "a", ["a", "b"])])
    import refs_metric

    assert got.value == 1.0
    assert [c[0] for c in refs_metric.CALLS] == ["a", "b"]
    assert refs_metric.CALLS[0][1] == {"index": 0, "references": ["a", "b"]}
    # the function as a minimized objective: the best is the lowest
    low = _objective(metric="function", function="refs_metric:score", direction="minimize")
    assert build_scorer("function", low)([_row("b", "a", ["a", "b"])]).value == 0.0


def test_references_without_an_answer_metric_are_said_to_count_for_nothing(compose):
    from ftsweep.objectives.evaluator import references_unread

    refs = "data.columns.references=answers.text"
    assert references_unread(compose(refs)) == (
        "warning: data.columns.references=answers.text: no answer metric reads it (objective.metric=eval_loss); it "
        "counts for exact_match, contains, regex, token_f1, rouge_l, bleu, chrf and function (objective=exact_match, or "
        "objective.extra_metrics)")
    assert references_unread(compose(refs, "objective=exact_match")) is None
    assert references_unread(compose(refs, "objective=eval_loss", "objective.extra_metrics=[contains]")) is None
    assert references_unread(compose("objective=eval_loss")) is None


def test_the_wandb_predictions_table_lists_the_references():
    from ftsweep.tracking import predictions_table

    rows = [{**_row("Broncos", "Denver Broncos", ["Denver Broncos", "Broncos"]), "scores": {"exact_match": 1.0}},
            {**_row("Panthers", "Carolina Panthers"), "scores": {"exact_match": 0.0}}]
    columns, data = predictions_table(rows, "exact_match")
    assert columns == ["prompt", "reference", "references", "prediction", "score"]
    assert data == [["p", "Denver Broncos", "Denver Broncos\nBroncos", "Broncos", 1.0],
                    ["p", "Carolina Panthers", "Carolina Panthers", "Panthers", 0.0]]
    assert predictions_table(rows[1:], "exact_match")[0] == ["prompt", "reference", "prediction", "score"]


# SQuAD v1.1's evaluate script, the two functions that decide EM (written from its published rule): normalize_answer
# (lower, no punctuation, no a / an / the, single spaces) and metric_max_over_ground_truths (the best over golds).
def _squad_normalize(s):
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())


def _squad_em(prediction, golds):
    return max(float(_squad_normalize(prediction) == _squad_normalize(g)) for g in golds)


# (prediction, gold answers); hand-written, SQuAD-like
SQUAD_CASES = [
    ("Denver Broncos", ["Denver Broncos", "The Denver Broncos", "Broncos"]),
    ("the Broncos", ["Denver Broncos", "Broncos"]),
    ("Santa Clara", ["Levi's Stadium", "Santa Clara, California", "Santa Clara"]),
    ("Levis Stadium.", ["Levi's Stadium", "Santa Clara"]),
    ("Carolina", ["Carolina Panthers", "the Panthers"]),
    ("an apple", ["Apple Inc.", "apple"]),
    ("1,000", ["one thousand", "1000"]),
    ("February 7", ["February 7, 2016", "7 February"]),
    ("gold", ["golden", "gold-coloured"]),
    ("  New   York ", ["NYC", "New York City", "new york"]),
]


@pytest.mark.parametrize("prediction, golds", SQUAD_CASES)
def test_exact_match_over_gold_answers_equals_squads(compose, prediction, golds):
    """objective=exact_match with SQuAD's normalisation and data.columns.references: the evaluator's row lists the
    trained answer (the first gold, ``answers.text.0``) then the golds; its score equals SQuAD's EM."""
    cfg = compose("objective=exact_match", "objective.normalize.casefold=true",
                  "objective.normalize.remove_punctuation=true", "objective.normalize.remove_articles=true")
    references = list(dict.fromkeys([golds[0], *golds]))
    got = build_scorer("exact_match", cfg.objective)([_row(prediction, golds[0], references)]).value
    assert got == _squad_em(prediction, golds)


def test_squad_cases_include_matches_of_a_later_gold_only():
    later = [c for c in SQUAD_CASES if _squad_em(c[0], c[1]) == 1.0 and _squad_em(c[0], c[1][:1]) == 0.0]
    assert len(later) == 5


# ------------------------------------------------------------------------------------ reading the column
def _d(column="answers.text"):
    from ftsweep.config.data import Columns

    return type("D", (), {"columns": Columns(references=column), "format": "alpaca"})()


def test_read_references_takes_a_list_or_a_string_and_refuses_anything_else():
    from ftsweep.data.templates import read_references

    assert read_references({"references": ["a", "b", "a", " "]}, "v.jsonl line 1", _d()) == ["a", "b"]
    assert read_references({"references": "Paris"}, "v.jsonl line 1", _d()) == ["Paris"]
    assert read_references({"references": [42, "forty-two"]}, "v.jsonl line 1", _d()) == ["42", "forty-two"]
    assert read_references({"references": None}, "v.jsonl line 1", _d()) is None
    # a CSV cell holds no list: a JSON list in it is the list; other text in brackets is one answer
    assert read_references({"references": '["Paris", "paris, France", 1]'}, "v.csv line 2", _d()) == [
        "Paris", "paris, France", "1"]
    assert read_references({"references": "[citation needed]"}, "v.csv line 2", _d()) == ["[citation needed]"]
    assert read_references({"references": "[]"}, "v.csv line 2", _d()) == []
    assert read_references({"output": "x"}, "v.jsonl line 1", _d()) is None  # a row without the column
    assert read_references({"references": ["a"]}, "v.jsonl line 1", _d(None)) is None  # the key unset
    with pytest.raises(DataError) as err:
        read_references({"references": {"text": ["a"]}}, "v.jsonl line 3", _d("answers"))
    assert str(err.value) == ("v.jsonl line 3: field \"references (column 'answers')\": expected a list of answers "
                              "(strings) or one string, got dict")
    with pytest.raises(DataError) as err:
        read_references({"references": ["a", True]}, "v.jsonl line 2", _d())
    assert str(err.value).startswith("v.jsonl line 2: field \"references (column 'answers.text')\": item 1 is bool")


def _write(tmp_path, val_rows):
    train = [{"instruction": "Capital of France?", "input": "", "output": "Paris"},
             {"instruction": "Capital of Japan?", "input": "", "output": "Tokyo"}] * 4
    (tmp_path / "train.jsonl").write_text(jsonl(train))
    (tmp_path / "val.jsonl").write_text(jsonl(val_rows))


def test_validation_rows_carry_their_references_and_training_is_unchanged(compose, tmp_path):
    """The stored validation split holds each row's references (null for a row without them); the datasets the
    trainer gets have input_ids and labels only, with the same tokens as without the key."""
    from ftsweep.data.pipeline import build_datasets
    from ftsweep.model import load_tokenizer

    val = [{"instruction": "Who won?", "input": "", "output": "Denver Broncos",
            "answers": {"text": ["Denver Broncos", "Broncos"]}},
           {"instruction": "Where?", "input": "", "output": "Santa Clara"},  # no answers column: unchanged
           {"instruction": "When?", "input": "", "output": "2016", "answers": {"text": "February 2016"}}]
    _write(tmp_path, val)
    base = ["data=custom_json", f"data.path={tmp_path / 'train.jsonl'}", "data.format=alpaca",
            f"data.validation_path={tmp_path / 'val.jsonl'}", "data.val_size=0", NO_PRETRAIN]
    with_refs = compose(*base, "data.columns.references=answers.text")
    tokenizer = load_tokenizer(with_refs)
    bundle = build_datasets(with_refs, tokenizer)
    plain = build_datasets(compose(*base), tokenizer)
    assert bundle.references("eval") == [["Denver Broncos", "Broncos"], None, ["February 2016"]]
    assert plain.references("eval") is None and bundle.references("train") is None
    for split in ("train", "eval"):
        ours, theirs = getattr(bundle, split), getattr(plain, split)
        assert ours.column_names == theirs.column_names == ["input_ids", "labels"]
        assert ours["input_ids"] == theirs["input_ids"] and ours["labels"] == theirs["labels"]


def test_a_csv_validation_file_gives_its_json_list_cells_as_several_references(compose, tmp_path):
    """A CSV has no lists: a references cell written as a JSON list is each of its answers, other cells one."""
    from ftsweep.data.pipeline import build_datasets
    from ftsweep.model import load_tokenizer

    _write(tmp_path, [])
    (tmp_path / "val.csv").write_text('instruction,input,output,aliases\n'
                                      'Who won?,,Denver Broncos,"[""Denver Broncos"", ""Broncos""]"\n'
                                      'Where?,,Santa Clara,Santa Clara (California)\n')
    cfg = compose("data=custom_json", f"data.path={tmp_path / 'train.jsonl'}", "data.format=alpaca",
                  f"data.validation_path={tmp_path / 'val.csv'}", "data.val_size=0",
                  "data.columns.references=aliases", NO_PRETRAIN)
    bundle = build_datasets(cfg, load_tokenizer(cfg))
    assert bundle.references("eval") == [["Denver Broncos", "Broncos"], ["Santa Clara (California)"]]


def test_inspect_shows_and_dumps_each_validation_rows_references(cache_dir, tmp_path, capsys):
    """``ftsweep inspect --split eval`` prints each shown row's references under it and --dump writes them (null
    for a row without them), so a user sees what the answers are scored against before a sweep."""
    from ftsweep.cli import main

    val = [{"instruction": "Who won?", "input": "", "output": "Denver Broncos",
            "answers": {"text": ["Denver Broncos", "Broncos"]}},
           {"instruction": "Where?", "input": "", "output": "Santa Clara"}]
    _write(tmp_path, val)
    dump = tmp_path / "eval_rows.jsonl"
    code = main(["inspect", "data=custom_json", f"data.path={tmp_path / 'train.jsonl'}", "data.format=alpaca",
                 f"data.validation_path={tmp_path / 'val.jsonl'}", "data.val_size=0", "data.shuffle=false",
                 "data.columns.references=answers.text", NO_PRETRAIN, "--split", "eval", "--plain",
                 "--dump", str(dump)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("references: ") == 2
    assert 'references: ["Denver Broncos", "Broncos"]' in out and "references: null" in out
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    assert [r["references"] for r in rows] == [["Denver Broncos", "Broncos"], None]


def test_every_dataset_info_validation_entry_reads_its_references(compose, tmp_path, monkeypatch):
    """data.eval_dataset='v1,v2' reads each entry with its own columns: data.columns.references was dropped from them
    ('no validation row has it' on rows that had it)."""
    from ftsweep.data.pipeline import build_datasets
    from ftsweep.model import load_tokenizer

    monkeypatch.chdir(tmp_path)
    train = [{"instruction": f"Say {w}.", "input": "", "output": w} for w in ("red", "blue") * 4]
    (tmp_path / "t.json").write_text(json.dumps(train))
    (tmp_path / "v1.json").write_text(json.dumps([{"instruction": "Who won?", "input": "", "output": "Denver Broncos",
                                                   "answers": ["Denver Broncos", "Broncos"]}]))
    (tmp_path / "v2.json").write_text(json.dumps([{"instruction": "Where?", "input": "", "output": "Santa Clara",
                                                   "answers": "Levi's Stadium"}]))
    (tmp_path / "dataset_info.json").write_text(json.dumps({n: {"file_name": f"{n}.json"} for n in ("t", "v1", "v2")}))
    cfg = compose("data.dataset=t", "data.eval_dataset='v1,v2'", f"data.dataset_dir={tmp_path}", "data.val_size=0",
                  "data.columns.references=answers", NO_PRETRAIN)
    bundle = build_datasets(cfg, load_tokenizer(cfg))
    assert bundle.references("eval") == [["Denver Broncos", "Broncos"], ["Levi's Stadium"]]


def cli(*args: str, cwd: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FTSWEEP_CACHE_DIR": str(cache_dir), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "ftsweep", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300, check=False)


def test_cli_a_bad_path_or_a_bad_value_is_one_line_naming_file_and_line(cache_dir, tmp_path, monkeypatch, capsys):
    """SQuAD-shaped files (data.format=auto reads answers.text.0 as the output): a path no validation row has (a
    typo) and a value that is no list of answers are one line naming the validation file and line, exit 2, no run
    folder left. Mapping the whole ``answers`` column as the references keeps it for the format detection (it was
    taken out of the row: 'cannot tell the format'), and the training rows' answers are not checked (they named
    train.jsonl line 1). The first case goes through the real ``ftsweep`` process (its exit code and stderr); the
    second through the same ``ftsweep.cli.main`` in this process (a second process only paid the imports again)."""
    ctx = "The Denver Broncos beat the Carolina Panthers at Levi's Stadium."
    train = [{"question": q, "context": ctx, "answers": {"text": [a, a.split()[-1]], "answer_start": [0, 0]}}
             for q, a in (("Who won?", "Denver Broncos"), ("Who lost?", "Carolina Panthers"))] * 4
    val = [{"question": "Which team won?", "context": ctx, "answers": {"text": ["Denver Broncos", "Broncos"]}}]
    (tmp_path / "train.jsonl").write_text(jsonl(train))
    (tmp_path / "val.jsonl").write_text(jsonl(val))
    run = ["train", "data=custom_json", "data.path=train.jsonl", "data.validation_path=val.jsonl", "data.val_size=0",
           "objective=exact_match", "logger=none", NO_PRETRAIN, "hydra.run.dir=out"]
    cases = {
        "data.columns.references=answers.txt": "ftsweep: error: val.jsonl line 1: field "
                                               "'data.columns.references=answers.txt': no validation row has it (this "
                                               "row has columns: answers, instruction, input, "
                                               "output); the column or a dotted path (answers.text) of each row's "
                                               "acceptable answers",
        "data.columns.references=answers": "ftsweep: error: val.jsonl line 1: field \"references (column 'answers')\": "
                                           "expected a list of answers (strings) or one string, got dict",
    }
    from ftsweep.cli import main

    monkeypatch.chdir(tmp_path)
    for i, (override, line) in enumerate(cases.items()):
        if i == 0:
            out = cli(*run, override, cwd=tmp_path, cache_dir=cache_dir)
            code, stderr = out.returncode, out.stderr
        else:
            capsys.readouterr()
            code, stderr = main([*run, override]), capsys.readouterr().err
        assert code == 2, stderr
        assert [ln for ln in stderr.splitlines() if ln.startswith("ftsweep: error")] == [line]
        assert "Traceback" not in stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl", "val.jsonl"]


# ------------------------------------------------------------------------------------ a real run
@pytest.mark.slow
def test_a_run_whose_answer_matches_only_the_second_gold_answer_scores_1(compose, tmp_path):
    """End to end on the tiny model: the first run shows what the model answers each validation row (its trained
    answer is something else, so exact match 0). The same run on a validation file whose rows list that answer as
    their second gold answer scores 1 with data.columns.references and still 0 without it; predictions.jsonl lists
    the references used."""
    from ftsweep import rundir
    from ftsweep.train import run

    train = [{"instruction": f"Say {w}.", "input": "", "output": w} for w in ("red", "blue", "green", "black") * 4]
    val = [{"instruction": "Say nothing.", "input": "", "output": "zzqx"},
           {"instruction": "Say red.", "input": "", "output": "qqzy"}]
    (tmp_path / "train.jsonl").write_text(jsonl(train))
    (tmp_path / "val.jsonl").write_text(jsonl(val))
    base = ["data=custom_json", f"data.path={tmp_path / 'train.jsonl'}", "data.format=alpaca",
            f"data.validation_path={tmp_path / 'val.jsonl'}", "data.val_size=0", "objective=exact_match",
            "objective.extra_metrics=[contains,rouge_l]", "objective.max_new_tokens=4", "trainer.max_steps=4",
            "trainer.eval_steps=4", "logger=none", NO_PRETRAIN]
    first = run(compose(*base), tmp_path / "first")
    answers = [p["prediction"] for p in rundir.read_predictions(tmp_path / "first")]
    assert first["exact_match"] == 0.0 and all(a.strip() for a in answers), answers
    assert all("references" not in p for p in rundir.read_predictions(tmp_path / "first"))

    for row, answer in zip(val, answers):
        row["answers"] = {"text": [row["output"], answer]}
    (tmp_path / "val.jsonl").write_text(jsonl(val))
    scored = run(compose(*base, "data.columns.references=answers.text"), tmp_path / "refs")
    preds = rundir.read_predictions(tmp_path / "refs")
    assert [p["prediction"] for p in preds] == answers  # the same model, the same answers
    assert [p["references"] for p in preds] == [[r["output"], a] for r, a in zip(val, answers)]
    assert scored["exact_match"] == scored["objective"] == 1.0
    assert scored["contains"] == 1.0 and scored["rouge_l"] == pytest.approx(1.0)
    assert all(p["scores"]["exact_match"] == 1.0 for p in preds)

    again = run(compose(*base), tmp_path / "plain")  # the same file without the key: the trained answer only
    assert again["exact_match"] == 0.0
    assert [p["prediction"] for p in rundir.read_predictions(tmp_path / "plain")] == answers
