"""Generation objectives (objective group): metric values on hand-made answers, template parity with
``ftsweep inspect``, batched left-padded generation, a run scored and pruned on exact match."""

from __future__ import annotations

import json
import textwrap

import pytest
from conftest import FAST
from omegaconf import OmegaConf

from ftsweep.config.objective import ObjectiveConfig
from ftsweep.objectives.metrics import (
    MetricError,
    Normalize,
    build_scorer,
    contains,
    exact_match,
    regex_match,
)


def _objective(**kw):
    return OmegaConf.merge(OmegaConf.structured(ObjectiveConfig), kw)


def _rows(pairs):
    return [{"index": i, "prompt": "p", "prediction": p, "reference": r} for i, (p, r) in enumerate(pairs)]


# ------------------------------------------------------------------------------------ metric values
def test_exact_match_and_contains_with_and_without_normalisation():
    assert exact_match("  Paris \n", "Paris") == 1.0  # default: strip + collapse whitespace
    assert exact_match("the  big\tcat", "the big cat") == 1.0
    assert exact_match("paris", "Paris") == 0.0
    assert exact_match("paris", "Paris", Normalize(casefold=True)) == 1.0
    assert exact_match("Paris.", "Paris", Normalize(remove_punctuation=True)) == 1.0
    # punctuation of any script: a full stop 。, commas ，、, quotes “” 「」 (string.punctuation is ASCII only)
    for answer, ref in (("서울입니다。", "서울입니다"), ("「東京」、です", "東京です"), ("“Paris”…", "Paris")):
        assert exact_match(answer, ref, Normalize(remove_punctuation=True)) == 1.0, answer
    assert exact_match("a+b=c", "abc", Normalize(remove_punctuation=True)) == 1.0  # ASCII symbols as before
    raw = Normalize(strip=False, collapse_whitespace=False)
    assert exact_match(" Paris", "Paris", raw) == 0.0
    assert contains("It is Paris, France", "Paris") == 1.0
    assert contains("It is paris", "Paris") == 0.0
    assert contains("anything", "   ") == 0.0  # an empty reference is contained nowhere
    scores = build_scorer("exact_match", _objective(normalize={"casefold": True}))(
        _rows([("A", "a"), ("b ", "b"), ("c", "d"), ("x y", "x  y")]))
    assert scores.rows == [1.0, 1.0, 0.0, 1.0] and scores.value == 0.75


def _squad_normalize(s):
    """SQuAD v1.1's official normalize_answer: lower, drop punctuation, drop the articles a / an / the, fix spaces."""
    import re
    import string

    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())


@pytest.mark.parametrize("prediction, gold", [
    ("The Denver Broncos", "Denver Broncos"), ("an apple", "Apple"), ("Paris.", "paris"), ("1,000", "1000"),
    ("$5", "5"), ("Levi's Stadium", "Levis Stadium"), ("  New   York ", "New York"), ("the the", ""),
    ("Theory of a cat", "theory of cat"), ("Answer: 72", "72"), ("Santa Clara", "Levi's Stadium"),
    ("A.", "a"), ("Thea", "thea"),
])
def test_exact_match_with_squad_normalisation_equals_squads_exact_match(compose, prediction, gold):
    """objective.normalize can be SQuAD's normalize_answer (casefold, remove_punctuation, remove_articles, whitespace):
    without remove_articles 'The Denver Broncos' against 'Denver Broncos' scored 0 where SQuAD scores 1."""
    cfg = compose("objective=exact_match", "objective.normalize.casefold=true",
                  "objective.normalize.remove_punctuation=true", "objective.normalize.remove_articles=true")
    expected = float(_squad_normalize(prediction) == _squad_normalize(gold))
    assert build_scorer("exact_match", cfg.objective)(_rows([(prediction, gold)])).value == expected
    assert exact_match(prediction, gold, Normalize(casefold=True, remove_punctuation=True, remove_articles=True)) == expected


def test_regex_extracts_group_from_prediction_and_reference():
    import re

    pattern = re.compile(r"#### (\S+)")
    assert regex_match("so 3+4 = 7\n#### 7", "work...\n#### 7", pattern) == 1.0
    assert regex_match("#### 8", "#### 7", pattern) == 0.0
    assert regex_match("the answer is 7", "#### 7", pattern) == 0.0  # nothing extracted from the prediction
    assert regex_match("#### 7", "7", pattern) == 1.0  # a bare reference is compared whole
    # numbers as lm-eval's gsm8k strict-match compares them: ',', '$' and a trailing '.' ignored
    assert regex_match("so #### 42.", "#### 42", pattern) == 1.0
    assert regex_match("#### 1000", "#### 1,000", pattern) == 1.0
    assert regex_match("#### $1,000.", "1000", pattern) == 1.0
    assert regex_match("#### 1000", "#### 100", pattern) == 0.0
    assert regex_match("#### 1.5", "#### 15", pattern) == 0.0 and regex_match("#### 4.0", "#### 4", pattern) == 0.0
    assert regex_match("#### yes.", "#### yes", pattern) == 0.0  # not a number: compared as written
    value = build_scorer("regex", _objective(metric="regex", pattern=r"#### (\S+)"))(
        _rows([("#### 7", "#### 7"), ("#### 1", "#### 2")])).value
    assert value == 0.5


# GSM8K layout: the reference is the worked answer ending in "#### <number>"
_GSM8K_GOLD = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
# (prediction, reference, lm-evaluation-harness gsm8k strict-match's exact_match)
_STRICT_MATCH_CASES = [
    ("So 72 in all.\n#### 72", _GSM8K_GOLD, 1.0), ("#### 72.", _GSM8K_GOLD, 1.0), ("#### 72 clips", _GSM8K_GOLD, 1.0),
    ("#### 72%", _GSM8K_GOLD, 1.0), ("#### 72**", _GSM8K_GOLD, 1.0), ("#### 72)", _GSM8K_GOLD, 1.0),
    ("#### 72!", _GSM8K_GOLD, 1.0), ("#### 72:", _GSM8K_GOLD, 1.0), ("#### 72;", _GSM8K_GOLD, 1.0),
    ("#### 72\n\nQuestion: next", _GSM8K_GOLD, 1.0), ("#### 72 #### 73", _GSM8K_GOLD, 1.0),
    ("#### 1,000", "x\n#### 1000", 1.0), ("#### 1000", "x\n#### 1,000", 1.0), ("#### -5", "x\n#### -5", 1.0),
    ("#### -5.", "x\n#### -5", 1.0), ("#### 3.5", "x\n#### 3.5", 1.0), ("#### 72", "72", 1.0),
    ("#### 72.0", _GSM8K_GOLD, 0.0), ("#### 72.00", _GSM8K_GOLD, 0.0), ("#### $72", _GSM8K_GOLD, 0.0),
    ("#### **72**", _GSM8K_GOLD, 0.0), ("####72", _GSM8K_GOLD, 0.0), ("The answer is 72", _GSM8K_GOLD, 0.0),
    ("#### +72", _GSM8K_GOLD, 0.0), ("#### 0.5", "x\n#### .5", 0.0), ("#### 73", _GSM8K_GOLD, 0.0),
]


@pytest.mark.parametrize("prediction, reference, strict", _STRICT_MATCH_CASES)
def test_regex_gsm8k_scores_as_lm_eval_gsm8k_strict_match(compose, prediction, reference, strict):
    """objective=regex_gsm8k is lm-eval's gsm8k strict-match (its regex, its ignored ',', '$', trailing '.').
    Its pattern was '#### (\\S+)': an answer followed by anything but a space ('#### 72%', '#### 72**',
    '#### 72)') extracted '72%' and scored 0 where strict-match extracts 72 and scores 1."""
    cfg = compose("objective=regex_gsm8k")
    score = build_scorer("regex", cfg.objective)(_rows([(prediction, reference)]))
    assert score.value == strict
    try:  # the harness itself, where installed (pip install ftsweep[eval])
        from lm_eval.api.metrics import exact_match_hf_evaluate
        from lm_eval.filters.extraction import RegexFilter
    except ImportError:
        return
    extracted = list(RegexFilter(regex_pattern=r"#### (\-?[0-9\.\,]+)", group_select=0).apply([[prediction]], [None]))
    assert exact_match_hf_evaluate([extracted[0][0]], [reference], ignore_case=True, ignore_punctuation=False,
                                   regexes_to_ignore=[",", "\\$", "(?s).*#### ", "\\.$"])["exact_match"] == strict


# (prediction, reference, lm-evaluation-harness gsm8k flexible-extract's exact_match)
_FLEXIBLE_CASES = [
    ("So 72 in all.", _GSM8K_GOLD, 1.0), ("48/2 = 24, then 48 + 24 = 72", _GSM8K_GOLD, 1.0),
    ("The answer is $72.", _GSM8K_GOLD, 1.0), ("#### 72", _GSM8K_GOLD, 1.0), ("It costs 1,000 dollars", "x\n#### 1000", 1.0),
    ("72 or maybe 73", _GSM8K_GOLD, 0.0), ("The answer is 72.0", _GSM8K_GOLD, 0.0), ("no number", _GSM8K_GOLD, 0.0),
    ("-5 degrees", "x\n#### -5", 1.0), ("7", "x\n#### 7", 1.0), ("It is 72 ...", _GSM8K_GOLD, 0.0),
]


@pytest.mark.parametrize("prediction, reference, flexible", _FLEXIBLE_CASES)
def test_regex_gsm8k_flexible_scores_as_lm_eval_gsm8k_flexible_extract(compose, prediction, reference, flexible):
    """objective=regex_gsm8k_flexible is lm-eval's gsm8k flexible-extract: the last number of the answer (its regex,
    group_select -1, the first group that matched), compared as strict-match compares."""
    cfg = compose("objective=regex_gsm8k_flexible")
    assert cfg.objective.direction == "maximize"
    assert build_scorer("regex", cfg.objective)(_rows([(prediction, reference)])).value == flexible
    try:  # the harness itself, where installed (pip install ftsweep[eval])
        from lm_eval.api.metrics import exact_match_hf_evaluate
        from lm_eval.filters.extraction import RegexFilter
    except ImportError:
        return
    extracted = list(RegexFilter(regex_pattern=r"(-?[$0-9.,]{2,})|(-?[0-9]+)", group_select=-1).apply(
        [[prediction]], [None]))
    assert exact_match_hf_evaluate([extracted[0][0]], [reference], ignore_case=True, ignore_punctuation=False,
                                   regexes_to_ignore=[",", "\\$", "(?s).*#### ", "\\.$"])["exact_match"] == flexible


def test_a_bad_pattern_match_is_one_line(compose):
    from ftsweep.errors import ConfigFailure

    with pytest.raises(ConfigFailure, match="objective.pattern_match: got 'middle'; allowed: first, last"):
        compose("objective=regex_gsm8k", "objective.pattern_match=middle")


def test_rouge_bleu_chrf_values():
    import sacrebleu

    assert build_scorer("rouge_l", _objective())(_rows([("a b c d", "a b c d")])).value == 1.0
    # LCS "a c" (2) of 3 predicted and 4 reference words: P 2/3, R 1/2, F1 = 4/7
    assert build_scorer("rouge_l", _objective())(_rows([("a x c", "a b c d")])).value == pytest.approx(4 / 7)
    # any script: a Korean / accented answer equal to its reference scores 1 (rouge-score's default tokenizer
    # keeps [a-z0-9] only: these scored 0), Chinese / Japanese are scored per character
    same = [("답변은 서울입니다", "답변은 서울입니다"), ("Café crème", "café crème"), ("東京は首都", "東京は首都")]
    assert build_scorer("rouge_l", _objective())(_rows(same)).rows == [1.0, 1.0, 1.0]
    # LCS 東京 (2) of 2 predicted and 5 reference characters: P 1, R 2/5, F1 = 4/7
    assert build_scorer("rouge_l", _objective())(_rows([("東京", "東京は首都")])).value == pytest.approx(4 / 7)
    from rouge_score import tokenize

    from ftsweep.objectives.metrics import UnicodeWords

    ascii_text = "Don't stop_now: 3.5x faster, (a-b) & C++ -- 'quoted' text\tTAB"
    assert UnicodeWords().tokenize(ascii_text) == tokenize.tokenize(ascii_text, None)  # ASCII: the default's tokens
    pairs = [("the cat sat on the mat", "the cat sat on the mat"), ("a dog ran", "the dog ran away")]
    bleu = build_scorer("bleu", _objective())(_rows(pairs))
    # the mean of the rows' smoothed sentence BLEU (LLaMA-Factory's bleu-4 is such a mean), what predictions.jsonl shows
    assert bleu.rows == [pytest.approx(sacrebleu.sentence_bleu(p, [r]).score) for p, r in pairs]
    assert bleu.rows[0] == pytest.approx(100.0) and bleu.value == pytest.approx(sum(bleu.rows) / 2)
    # references under 4 tokens: perfect answers score 100 (corpus BLEU has no 4-gram and scored 0)
    short = build_scorer("bleu", _objective())(_rows([("42", "42"), ("Paris", "Paris"), ("a cat", "a cat")]))
    assert short.value == pytest.approx(100.0) and short.rows == [pytest.approx(100.0)] * 3
    chrf = build_scorer("chrf", _objective())(_rows(pairs))
    assert chrf.value == pytest.approx(sacrebleu.corpus_chrf([p for p, _ in pairs], [[r for _, r in pairs]]).score)
    assert 0 < chrf.value < 100


def test_bleu_of_chinese_and_japanese_answers_counts_characters():
    """sacrebleu's default 13a tokenizer splits on spaces: a Chinese / Japanese sentence is one token, so an answer
    one word off scored BLEU 0 (the same as a wrong one). Rows with Chinese characters use sacrebleu's zh tokenizer
    (each Chinese character a token), rows with Japanese kana its char tokenizer (zh leaves a run of kana one
    token: これはペンです vs これはペンでした scored 0), as rouge_l counts them per character; other rows keep 13a."""
    import sacrebleu

    pairs = [("我喜欢吃苹果。", "我喜欢吃香蕉。"), ("東京は日本の首都です", "東京は日本の首都だ"),
             ("これはペンです", "これはペンでした"),
             ("서울은 한국의 수도입니다", "서울은 한국의 수도이다"), ("a dog ran", "the dog ran away")]
    bleu = build_scorer("bleu", _objective())(_rows(pairs))
    assert bleu.rows[0] == pytest.approx(sacrebleu.sentence_bleu(pairs[0][0], [pairs[0][1]], tokenize="zh").score)
    for i in (1, 2):
        assert bleu.rows[i] == pytest.approx(sacrebleu.sentence_bleu(pairs[i][0], [pairs[i][1]], tokenize="char").score)
    assert bleu.rows[0] > 40 and bleu.rows[1] > 70 and bleu.rows[2] > 50  # 13a: 0.0, 0.0, 0.0; zh: 2 of 3 also 0
    assert sacrebleu.sentence_bleu(pairs[2][0], [pairs[2][1]], tokenize="zh").score == 0
    assert bleu.rows[3:] == [pytest.approx(sacrebleu.sentence_bleu(p, [r]).score) for p, r in pairs[3:]]  # 13a
    wrong = build_scorer("bleu", _objective())(_rows([("完全不同的回答", "我喜欢吃香蕉。")]))
    assert wrong.value < bleu.rows[0]  # a wrong answer still scores below a near miss


def test_user_function_gets_prompt_prediction_reference_row_and_a_raise_names_the_row(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text(textwrap.dedent("""
        def length_ratio(prompt, prediction, reference, row):
            assert prompt == "p" and "index" in row
            return len(prediction) / len(reference)

        def fails(prompt, prediction, reference, row):
            if row["index"] == 1:
                raise ValueError("bad row")
            return 1.0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = _rows([("ab", "abcd"), ("abc", "abc")])
    assert build_scorer("function", _objective(metric="function", function="my_metrics:length_ratio"))(rows).value == 0.75
    with pytest.raises(MetricError, match="function raised on validation row 1: ValueError: bad row"):
        build_scorer("function", _objective(metric="function", function="my_metrics:fails"))(rows)


# ------------------------------------------------------------------------------ template parity
@pytest.mark.parametrize("data", ["data=proxy_tasks", "data=chat_demo"])
def test_generation_prompts_are_the_token_ids_inspect_shows(compose, cache_dir, tmp_path, data):
    from ftsweep.cli import main as cli_main
    from ftsweep.data import build_datasets
    from ftsweep.model import load_tokenizer
    from ftsweep.objectives.generation import examples_from_dataset

    dump = tmp_path / "eval.jsonl"
    assert cli_main(["inspect", data, f"cache_dir={cache_dir}", "--split", "eval", "--rows", "0", "--dump", str(dump)]) == 0
    shown = [json.loads(line) for line in dump.read_text().splitlines()]
    cfg = compose(data)
    tokenizer = load_tokenizer(cfg)
    examples = examples_from_dataset(build_datasets(cfg, tokenizer).eval)
    assert len(examples) == len(shown) > 0
    for ex, row in zip(examples, shown):
        ids, labels = row["input_ids"], row["labels"]
        last = max(i for i, lab in enumerate(labels) if lab != -100)
        assert ids[: len(ex.prompt_ids)] == ex.prompt_ids  # the prompt is the inspected row's prefix
        assert ex.prompt_ids + ex.reference_ids == ids[: last + 1]
        assert all(lab == -100 for lab in labels[len(ex.prompt_ids) - 1 : len(ex.prompt_ids)])  # answer starts after
        assert all(lab != -100 for lab in labels[len(ex.prompt_ids) : last + 1])
    if data == "data=chat_demo":  # multi-turn rows: the reference is the last assistant turn, history in the prompt
        multi = [ex for ex, row in zip(examples, shown) if row["text"].count("assistant<|end_header_id|>") > 1]
        assert multi and all(tokenizer.decode(ex.prompt_ids).count("assistant<|end_header_id|>") > 1 for ex in multi)


def test_batched_left_padded_generation_equals_one_row_at_a_time(compose):
    from ftsweep.data import build_datasets
    from ftsweep.model import load_model, load_tokenizer
    from ftsweep.objectives.generation import examples_from_dataset, generate_answers

    cfg = compose("data=proxy_tasks")
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, tokenizer)
    examples = examples_from_dataset(build_datasets(cfg, tokenizer).eval)[:6]
    assert len({len(e.prompt_ids) for e in examples}) > 1  # different lengths: the batch is padded
    batched = generate_answers(model, tokenizer, examples, batch_size=6, max_new_tokens=6)
    single = [generate_answers(model, tokenizer, [e], batch_size=1, max_new_tokens=6)[0] for e in examples]
    assert batched == single
    assert tokenizer.padding_side == "right"  # training padding is untouched


# ----------------------------------------------------------------------------------- runs
@pytest.mark.slow
def test_run_scored_on_exact_match_learns_and_writes_predictions(compose, tmp_path):
    from ftsweep import rundir
    from ftsweep.train import run

    cfg = compose("data=proxy_tasks", "objective=exact_match", "objective.max_samples=16", "lora=r8",
                  "optimizer.lr=1e-2", "trainer.max_steps=60", "trainer.eval_steps=30", "logger=none")
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "complete"
    assert metrics["objective"] == metrics["exact_match"]
    assert [h["step"] for h in metrics["objective_history"]] == [0, 30, 60]
    assert all(h["rows"] == 16 for h in metrics["objective_history"])
    # trained on the proxy task, the adapter answers more rows exactly than the untrained model
    assert metrics["initial_exact_match"] == 0.0 and metrics["exact_match"] > 0.0
    preds = rundir.read_predictions(tmp_path)
    assert len(preds) == metrics["generation_final_rows"] == metrics["data_n_eval"]
    assert sum(p["scores"]["exact_match"] for p in preds) / len(preds) == pytest.approx(metrics["exact_match"])
    assert all(p["scores"]["exact_match"] == float(p["prediction"].strip() == p["reference"].strip()) for p in preds)
    assert metrics["generation_evals"] == 4 and metrics["generation_rows"] == 3 * 16 + len(preds)
    assert metrics["generation_eval_s"] > 0 and metrics["generation_s_per_100_rows"] > 0


def test_predictions_name_each_rows_source_when_validation_rows_are_dropped(compose, tmp_path, monkeypatch):
    """predictions.jsonl's index is the row's place among the kept eval rows: with an over-long validation row
    dropped (or a seeded val_size split) it was no line of the user's file, and nothing said which row a
    prediction answered. Each row now has its source, as ``ftsweep inspect --dump`` writes it; a user metric
    function gets it in ``row``."""
    from ftsweep import rundir
    from ftsweep.train import run

    train = [{"instruction": "Repeat.", "input": w, "output": w} for w in ("red", "blue", "cat", "dog") * 4]
    val = [{"instruction": "Repeat.", "input": "red", "output": "red"},
           {"instruction": "Repeat. " * 80, "input": "sun", "output": "sun"},  # over-long: dropped
           {"instruction": "Repeat.", "input": "dog", "output": "dog"},
           {"instruction": "Repeat.", "input": "blue cat", "output": "blue cat"}]
    for name, rows in (("train.jsonl", train), ("val.jsonl", val)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "row_metric.py").write_text(
        "SEEN = []\ndef score(prompt, prediction, reference, row):\n    SEEN.append(row)\n    return 0.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose("data=custom_json", f"data.path={tmp_path / 'train.jsonl'}",
                  f"data.validation_path={tmp_path / 'val.jsonl'}", "data.val_size=0", "data.overlong=drop",
                  "data.cutoff_len=128", "objective=exact_match", "objective.extra_metrics=[function]",
                  "objective.function=row_metric:score", "objective.max_new_tokens=2", "trainer.max_steps=1",
                  "trainer.eval_steps=1", "logger=none")
    out = tmp_path / "run"
    assert run(cfg, out)["status"] == "complete"
    preds = rundir.read_predictions(out)
    assert [p["index"] for p in preds] == [0, 1, 2]
    assert [p["source"] for p in preds] == [f"{tmp_path / 'val.jsonl'} line {n}" for n in (1, 3, 4)]
    assert [p["reference"] for p in preds] == ["red", "dog", "blue cat"]
    import row_metric

    assert row_metric.SEEN[-3:] == [{"index": i, "source": p["source"]} for i, p in enumerate(preds)]


def test_validation_answers_cut_by_truncation_are_said_and_flagged(compose, tmp_path, capsys):
    """A validation row whose answer truncation cut (data.overlong=truncate_both, the default) is scored against
    the cut answer: a model answering it in full scores 0 on exact match. That was silent (the 5% truncation
    warning counts every row's answer tokens, here under it); now one line names the rows, predictions.jsonl
    flags them (reference_cut) and metrics.json counts them."""
    from ftsweep import rundir
    from ftsweep.train import run

    words = ["red", "blue", "cat", "dog", "sun", "moon", "tree", "fish", "bird", "green"]
    train = [{"instruction": "Repeat.", "input": w, "output": " ".join(words[i % 10:] + words[:i % 10])}
             for i, w in enumerate(words * 30)]
    long_answer = " ".join(["tree fish bird"] * 40)
    val = [{"instruction": "Repeat.", "input": "red", "output": "red"},
           {"instruction": "Repeat.", "input": "tree fish bird", "output": long_answer},  # cut at 128 tokens
           {"instruction": "Repeat.", "input": "dog", "output": "dog"}]
    for name, rows in (("train.jsonl", train), ("val.jsonl", val)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose("data=custom_json", f"data.path={tmp_path / 'train.jsonl'}",
                  f"data.validation_path={tmp_path / 'val.jsonl'}", "data.val_size=0", "data.cutoff_len=128",
                  "objective=exact_match", "objective.max_new_tokens=2", "trainer.max_steps=1", "trainer.eval_steps=1",
                  "logger=none")
    out = tmp_path / "run"
    metrics = run(cfg, out)
    assert metrics["status"] == "complete" and metrics["data_n_eval_answers_cut"] == 1
    preds = rundir.read_predictions(out)
    assert [p.get("reference_cut", False) for p in preds] == [False, True, False]
    assert long_answer.startswith(preds[1]["reference"]) and len(preds[1]["reference"]) < len(long_answer)
    err = capsys.readouterr().err
    assert ("objective: warning: truncation to data.cutoff_len=128 cut the answer of 1 of 3 validation rows "
            f"(e.g. {tmp_path / 'val.jsonl'} line 2)") in err
    assert "data: warning: truncation" not in err  # under the 5% of all answer tokens the data warning needs


def test_pruning_sees_the_generation_metric(compose, tmp_path):
    from ftsweep.sweeper.trial import _make_pruning_callback
    from ftsweep.train import run

    class Reporter:
        def __init__(self):
            self.seen = []

        def report(self, value, step, judge=True):
            self.seen.append((step, value))
            return step >= 6  # prune at the first evaluation after step 0

        def heartbeat(self, force=False):
            pass

    reporter = Reporter()
    cfg = compose(*FAST, "data=proxy_tasks", "objective=exact_match", "objective.max_samples=8")
    metrics = run(cfg, tmp_path, [_make_pruning_callback(reporter, "exact_match")])
    assert metrics["status"] == "pruned" and metrics["pruned_at_step"] == 6
    history = metrics["objective_history"]
    assert reporter.seen == [(h["step"], h["exact_match"]) for h in history] and [s for s, _ in reporter.seen] == [0, 6]
    assert "objective" not in metrics and "exact_match_subset" in metrics
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 8


def test_wandb_run_holds_the_predictions_table_with_secrets_masked(compose, tmp_path, wandb_dir, monkeypatch):
    """logger=wandb: the run's answers are the W&B table ``predictions`` (prompt, reference, prediction,
    score), row for row what predictions.jsonl holds. The planted "secret" is a word of every prompt, so
    masking is exercised: it must not reach the table."""
    import time

    from wandb_offline import read_offline_table

    from ftsweep import rundir
    from ftsweep.train import run

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HF_TOKEN", "Instruction")  # every proxy-task prompt starts "### Instruction:"
    cfg = compose(*[o for o in FAST if o != "logger=none"], "logger=wandb", "data=proxy_tasks",
                  "objective=exact_match", "objective.max_samples=4", "trainer.max_steps=2", "trainer.eval_steps=2")
    metrics = run(cfg, tmp_path / "run")
    preds = rundir.read_predictions(tmp_path / "run")
    assert metrics["status"] == "complete" and len(preds) == metrics["generation_final_rows"] > 4
    (offline,) = (wandb_dir / "wandb").glob("offline-run-*")
    import wandb

    wandb.teardown()  # the service flushes the run's transaction log
    deadline = time.monotonic() + 60
    while (table := read_offline_table(offline, "predictions")) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert table is not None, "no predictions table in the offline run"
    assert table["columns"] == ["prompt", "reference", "prediction", "score", "contains"]
    assert table["data"] == [[p["prompt"], p["reference"], p["prediction"], p["scores"]["exact_match"],
                              p["scores"]["contains"]] for p in preds]
    assert all("### ***:" in p["prompt"] for p in preds)
    text = next((offline / "files" / "media" / "table").glob("predictions_*.table.json")).read_text()
    assert "Instruction" not in text


def test_predictions_table_masks_secrets_and_puts_the_objective_first(monkeypatch):
    from ftsweep.tracking import predictions_table

    monkeypatch.setenv("HF_TOKEN", "hf_PLANTEDtok77")
    rows = [{"index": 0, "prompt": "key hf_PLANTEDtok77?", "reference": "a", "prediction": "a",
             "scores": {"contains": 1.0, "exact_match": 1.0}},
            {"index": 1, "prompt": "q", "reference": "b", "prediction": "postgresql://u:pw@h/db",
             "scores": {"contains": 0.0, "exact_match": 0.0}}]
    columns, data = predictions_table(rows, "exact_match")
    assert columns == ["prompt", "reference", "prediction", "score", "contains"]
    assert data == [["key ***?", "a", "a", 1.0, 1.0], ["q", "b", "postgresql://u:***@h/db", 0.0, 0.0]]
    # a Trainer objective (eval_loss) with extra generation metrics: the first metric scored is "score"
    assert predictions_table(rows, "eval_loss")[0] == ["prompt", "reference", "prediction", "score", "exact_match"]


def test_a_metric_that_raises_fails_the_run_with_the_reason(compose, tmp_path, monkeypatch):
    from ftsweep.train import run

    (tmp_path / "boom_metric.py").write_text("def score(prompt, prediction, reference, row):\n    raise KeyError('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose(*FAST, "data=proxy_tasks", "objective=exact_match", "objective.metric=function",
                  "objective.function=boom_metric:score", "objective.max_samples=4")
    with pytest.raises(MetricError, match="metric: function raised on validation row"):
        run(cfg, tmp_path / "run")


# ------------------------------------------------------------------------- evaluator bookkeeping
class _Tok:
    eos_token_id, pad_token_id = 0, 0

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(str(i) for i in ids if not (skip_special_tokens and i == 0))


def _dataset(n=10):
    # row i: prompt [1, 2, i+10] (masked), answer [i+100] * (1 + i % 3) + eos (trained)
    ids, labels = [], []
    for i in range(n):
        answer = [i + 100] * (1 + i % 3) + [0]
        ids.append([1, 2, i + 10, *answer])
        labels.append([-100, -100, -100, *answer])
    return {"input_ids": ids, "labels": labels}


def test_evaluator_subset_history_final_and_predictions(monkeypatch, tmp_path):
    from ftsweep import rundir
    from ftsweep.objectives import evaluator as ev

    calls = []

    def fake_generate(model, tokenizer, examples, *, batch_size, max_new_tokens):
        calls.append((len(examples), batch_size, max_new_tokens))
        refs = [tokenizer.decode(e.reference_ids, skip_special_tokens=True) for e in examples]
        return [r if e.index % 2 == 0 else "wrong" for e, r in zip(examples, refs)]

    monkeypatch.setattr(ev, "generate_answers", fake_generate)
    obj = _objective(metric="exact_match", direction="maximize", max_samples=4, subset_seed=1, new_tokens_margin=5)
    e = ev.GenerationEvaluator(obj, _Tok(), _dataset(), batch_size=3)
    assert e.subset == ev.subset_indices(10, 4, 1) == ev.GenerationEvaluator(obj, _Tok(), _dataset(), 3).subset
    assert len(e.subset) == 4 and e.subset != ev.subset_indices(10, 4, 2)
    assert e.max_new_tokens == 4 + 5  # longest reference (3 answer tokens + eos) + margin
    first = e.at_step(None, 0)
    assert e.at_step(None, 0) == first and len(calls) == 1  # the same step is generated once
    assert first["exact_match"] == sum(i % 2 == 0 for i in e.subset) / 4
    out = e.finish(None, tmp_path, pruned=False, step=10)
    assert out["exact_match"] == 0.5 and out["initial_exact_match"] == first["exact_match"]
    assert calls == [(4, 3, 9), (10, 3, 9)] and out["generation_rows"] == 14 and out["generation_evals"] == 2
    preds = rundir.read_predictions(tmp_path)
    assert [p["index"] for p in preds] == list(range(10))
    assert preds[2] == {"index": 2, "prompt": "1 2 12", "reference": "102 102 102", "prediction": "102 102 102",
                        "scores": {"exact_match": 1.0}}
    # final_all_rows=false: the subset's last value is the objective; write_predictions=false: no file
    obj2 = _objective(metric="exact_match", max_samples=4, final_all_rows=False, write_predictions=False,
                      max_new_tokens=2)
    e2 = ev.GenerationEvaluator(obj2, _Tok(), _dataset(), batch_size=3)
    e2.at_step(None, 5)
    out2 = e2.finish(None, tmp_path / "b", pruned=False, step=5)
    assert out2["exact_match"] == e2.history[-1]["exact_match"] and out2["generation_final_rows"] == 4
    assert e2.max_new_tokens == 2 and not (tmp_path / "b").exists()


def test_memory_model_counts_the_generation_kv_cache(compose):
    from ftsweep.memory import estimate

    base = estimate(compose("model=llama3_8b", "quantization=nf4"), on_cuda=True)
    auto = estimate(compose("model=llama3_8b", "quantization=nf4", "objective=exact_match"), on_cuda=True)
    assert base["generation_mib"] == 0 and base["generation_batch"] == 0
    # the automatic batch keeps generation within what training already needs: the peak does not change
    assert 1 <= auto["generation_batch"] < 64 and auto["total_mib"] == base["total_mib"]
    big = estimate(compose("model=llama3_8b", "quantization=nf4", "objective=exact_match", "objective.batch_size=64",
                           "data.cutoff_len=1024"), on_cuda=True)
    # Llama-3-8B KV cache: 2 x 32 layers x 8 kv heads x 128 x 64 rows x (1024 + 8) tokens x 2 bytes
    kv_mib = 2 * 32 * 8 * 128 * 64 * 1032 * 2 / 2**20
    assert big["generation_batch"] == 64 and big["generation_mib"] > kv_mib
    assert big["total_mib"] > estimate(compose("model=llama3_8b", "quantization=nf4", "data.cutoff_len=1024"),
                                       on_cuda=True)["total_mib"] + kv_mib * 0.5


def test_report_shows_generation_cost_and_best_next_to_worst_answers(tmp_path):
    import optuna

    from ftsweep import rundir
    from ftsweep.report import generation_section

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for number, value in enumerate([0.25, 0.75, 0.5]):
        d = tmp_path / f"trial_{number}"
        d.mkdir()
        rundir.write_metrics(d, {"generation_eval_s": 1.5 + number, "generation_s_per_100_rows": 0.5,
                                 "train_runtime": 10.0})
        rundir.write_predictions(d, [{"reference": "moon", "prediction": f"answer {number}|x"}])
        trial = study.ask()
        trial.set_user_attr("trial_dir", str(d))
        study.tell(trial, value)
    text = generation_section(study)
    assert "| 0 | 1.5 | 0.5 | 10 |" in text and "| 2 | 3.5 | 0.5 | 10 |" in text
    assert "best trial (1, value 0.75" in text and "worst complete trial (0, value 0.25" in text
    assert "| `moon` | `answer 1\\|x` | `answer 0\\|x` |" in text
    assert generation_section(optuna.create_study()) == ""


@pytest.mark.parametrize("overrides, direction", [
    (["objective.metric=exact_match"], "maximize"),  # before: minimize (the SFT stage's), the worst trial won
    (["stage=dpo", "data=proxy_pairs", "objective.metric=eval_rewards/accuracies"], "maximize"),
    (["stage=dpo", "data=proxy_pairs", "objective.metric=eval_rewards/margins"], "maximize"),
    (["stage=grpo", "objective.metric=eval_entropy"], "minimize"),  # before: maximize (GRPO's)
    (["stage=dpo", "data=proxy_pairs"], "minimize"),  # the stage's own metric keeps the stage's direction
    (["stage=grpo"], "maximize"),
    (["objective.metric=exact_match", "objective.direction=minimize"], "minimize"),  # given: it wins
    (["objective.metric=peak_memory_mb"], "minimize"),
    # a metric set over another objective group: before, that group's direction (the loss maximized, the score minimized)
    (["objective=exact_match", "objective.metric=eval_loss"], "minimize"),
    (["objective=rouge_l", "objective.metric=eval_loss"], "minimize"),
    (["objective=eval_loss", "objective.metric=exact_match"], "maximize"),
    (["objective=eval_loss", "objective.metric=chrf"], "maximize"),
    (["objective=bleu"], "maximize"),
    (["objective=regex_gsm8k"], "maximize"),
    (["objective=eval_loss"], "minimize"),
    (["objective=exact_match", "objective.metric=eval_loss", "objective.direction=maximize"], "maximize"),
])
def test_a_metric_set_alone_takes_the_direction_its_name_says(compose, overrides, direction):
    assert compose(*overrides).objective.direction == direction


@pytest.mark.parametrize("task_metric, direction", [
    ("acc", "maximize"), ("acc_norm", "maximize"), ("exact_match,strict-match", "maximize"),
    # lm-eval's lower-is-better metrics (wikitext, translation ter): before, maximized like every lm_eval objective
    ("word_perplexity", "minimize"), ("byte_perplexity", "minimize"), ("bits_per_byte", "minimize"),
    ("perplexity", "minimize"), ("ter", "minimize"), ("bits_per_byte,none", "minimize"),
])
def test_lm_eval_objective_takes_its_task_metrics_direction(compose, task_metric, direction):
    cfg = compose("objective=lm_eval", "objective.tasks=[wikitext]", f"objective.task_metric='{task_metric}'", check=False)
    assert cfg.objective.direction == direction
    given = compose("objective=lm_eval", "objective.tasks=[wikitext]", f"objective.task_metric='{task_metric}'",
                    "objective.direction=maximize", check=False)
    assert given.objective.direction == "maximize"  # given: it wins


# SQuAD v2.0's evaluate script (normalize_answer, get_tokens, compute_f1), as written there: the reference token_f1
# is checked against
def _squad_normalize(s):
    import re
    import string

    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _squad_f1(a_gold, a_pred):
    import collections

    gold_toks = _squad_normalize(a_gold).split() if a_gold else []
    pred_toks = _squad_normalize(a_pred).split() if a_pred else []
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision, recall = 1.0 * num_same / len(pred_toks), 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


SQUAD_F1_CASES = [  # (prediction, gold)
    ("Denver Broncos", "Denver Broncos"), ("the Denver Broncos", "Denver Broncos"), ("Broncos", "Denver Broncos"),
    ("Denver, Colorado Broncos team", "Denver Broncos"), ("Santa Clara, California", "Levi's Stadium"),
    ("in 1066", "1066"), ("", "1066"), ("", ""), ("a", "the"), ("New York New York", "New York"),
    ("Levi's Stadium in the San Francisco Bay Area", "Levi's Stadium"), ("Golden   Anniversary!", "golden anniversary"),
]


def test_token_f1_is_squads_f1():
    """objective=token_f1's normalisation and F1 equal SQuAD v2.0's compute_f1, answer by answer, and its value is
    the mean; with several gold answers the best (SQuAD's max over ground truths)."""
    from pathlib import Path

    from ftsweep.objectives.metrics import token_f1

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "objective" / "token_f1.yaml")
    obj = _objective(normalize=cfg.normalize)
    norm = Normalize.from_config(obj.normalize)
    for pred, gold in SQUAD_F1_CASES:
        assert token_f1(pred, gold, norm) == pytest.approx(_squad_f1(gold, pred)), (pred, gold)
    scores = build_scorer("token_f1", obj)(_rows(SQUAD_F1_CASES))
    assert 0 < scores.value < 1
    assert scores.value == pytest.approx(sum(_squad_f1(g, p) for p, g in SQUAD_F1_CASES) / len(SQUAD_F1_CASES))
    several = [{**_rows([("Broncos", "Denver Broncos")])[0], "references": ["Denver Broncos", "Broncos"]}]
    assert build_scorer("token_f1", obj)(several).value == 1.0
    # Chinese / Japanese: a character is a word (a sentence with no spaces would otherwise be one word, 0 or 1)
    assert token_f1("我喜欢吃苹果", "我喜欢吃香蕉") == pytest.approx(4 / 6)
    assert token_f1("東京 Tower", "東京") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))


def test_objective_token_f1_composes_maximized_with_exact_match(compose):
    cfg = compose("objective=token_f1")
    assert cfg.objective.metric == "token_f1" and cfg.objective.direction == "maximize"
    assert list(cfg.objective.extra_metrics) == ["exact_match"]
    assert compose("objective=token_f1", "objective.metric=eval_loss").objective.direction == "minimize"


def test_a_run_scored_on_token_f1_writes_it_and_squads_exact_match(compose, tmp_path):
    from ftsweep import rundir
    from ftsweep.train import run

    cfg = compose(*FAST, "data=proxy_tasks", "data.val_size=8", "objective=token_f1", "trainer.max_steps=2",
                  "trainer.eval_steps=2")
    metrics = run(cfg, tmp_path)
    assert metrics["status"] == "complete" and metrics["objective"] == metrics["token_f1"]
    preds = rundir.read_predictions(tmp_path)
    assert len(preds) == 8 and all(set(p["scores"]) == {"token_f1", "exact_match"} for p in preds)
    assert sum(p["scores"]["token_f1"] for p in preds) / 8 == pytest.approx(metrics["token_f1"])
    assert all(p["scores"]["token_f1"] == pytest.approx(_squad_f1(p["reference"], p["prediction"])) for p in preds)
