"""Scoring generated answers against references: pure functions, no model, no torch.

Per-row metrics (exact_match, contains, regex, token_f1, rouge_l, function) give a score per row and the mean over
rows; bleu is the mean of the rows' sentence BLEU (sacrebleu's ``sentence_bleu``: effective order, exp
smoothing; its char tokenizer for rows with Japanese kana, zh for rows with Chinese characters; 0-100), as LLaMA-Factory's bleu-4 is a mean of smoothed sentence BLEU; chrf is computed over all
rows at once by sacrebleu (0-100). Each row's sentence score is kept for predictions.jsonl. The normalisation is public so other objectives (e.g. a GRPO
exact-match reward) score answers the same way.

A row with several acceptable answers (``references``: the trained one and the row's own, ``data.columns.references``)
scores the best over them in every metric, as SQuAD's evaluate script takes the max over gold answers
(``metric_max_over_ground_truths``): a per-row metric its best value, bleu the best sentence BLEU, chrf the corpus
score with each row's reference of best sentence chrF (what sacrebleu's chrF does with several references). A row
without them is scored against its ``reference`` alone.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ftsweep.config.objective import compile_pattern, load_function

_PUNCT = str.maketrans("", "", string.punctuation)
_SPACE = re.compile(r"\s+")
# SQuAD's normalize_answer drops the English articles (after lower-casing and dropping punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Normalize:
    """Text normalisation before comparing (``objective.normalize``)."""

    strip: bool = True
    casefold: bool = False
    collapse_whitespace: bool = True
    remove_punctuation: bool = False
    remove_articles: bool = False

    @classmethod
    def from_config(cls, node: Any) -> Normalize:
        return cls(strip=bool(node.strip), casefold=bool(node.casefold),
                   collapse_whitespace=bool(node.collapse_whitespace), remove_punctuation=bool(node.remove_punctuation),
                   remove_articles=bool(node.remove_articles))

    def __call__(self, text: str) -> str:
        if self.remove_punctuation:  # ASCII punctuation and symbols, and punctuation of any script (。，「」“”…)
            text = "".join(c for c in text.translate(_PUNCT) if not unicodedata.category(c).startswith("P"))
        if self.casefold:
            text = text.casefold()
        if self.remove_articles:  # a / an / the as words, replaced by a space (SQuAD's rule)
            text = _ARTICLES.sub(" ", text)
        if self.collapse_whitespace:
            text = _SPACE.sub(" ", text)
        if self.strip:
            text = text.strip()
        return text


def exact_match(prediction: str, reference: str, norm: Normalize = Normalize()) -> float:
    return float(norm(prediction) == norm(reference))


def contains(prediction: str, reference: str, norm: Normalize = Normalize()) -> float:
    ref = norm(reference)
    return float(bool(ref) and ref in norm(prediction))


# lm-evaluation-harness's gsm8k strict-match ignores these in the extracted answer (its regexes_to_ignore)
_NUMBER_IGNORED = re.compile(r"[,$]|\.$")
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)")


def _as_number(text: str) -> str | None:
    """An extracted number as lm-eval's gsm8k strict-match compares it ("$1,000." -> "1000"); None for other text."""
    stripped = _NUMBER_IGNORED.sub("", text.strip())
    return stripped if _NUMBER.fullmatch(stripped) else None


def extract(text: str, pattern: re.Pattern, last: bool = False) -> str | None:
    """The answer the pattern extracts from ``text``: of its first match (``last``: its last match, as lm-eval's
    gsm8k flexible-extract takes the last number), the first group that matched; None for no match."""
    if last:
        found = None
        for found in pattern.finditer(text):  # the last one is kept
            pass
    else:
        found = pattern.search(text)
    if found is None:
        return None
    return next((g for g in found.groups() if g is not None), found.group(0))


def regex_match(prediction: str, reference: str, pattern: re.Pattern, norm: Normalize = Normalize(),
                last: bool = False) -> float:
    """The pattern's first group that matched, extracted from both (of the first match, or of the ``last``), must
    match; no match in the prediction scores 0.
    A reference without a match is compared whole (the reference may be the bare answer). Numbers match as
    lm-eval's gsm8k strict-match compares them: ``,``, ``$`` and a trailing ``.`` do not count ("#### 1,000."
    matches "#### 1000")."""
    p, r = extract(prediction, pattern, last), extract(reference, pattern, last)
    if p is None:
        return 0.0
    pred, ref = norm(p), norm(r if r is not None else reference)
    if pred == ref:
        return 1.0
    number = _as_number(pred)
    return float(number is not None and number == _as_number(ref))


def f1_of_words(pred: list[str], ref: list[str]) -> float:
    """SQuAD's F1 of two word lists (its evaluate-v2.0 ``compute_f1``): the harmonic mean of the precision and recall
    of the words in common (counted with repeats); two lists one of which is empty score 1 when both are."""
    from collections import Counter

    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, reference: str, norm: Normalize = Normalize()) -> float:
    """Word-level F1 (SQuAD's partial credit) after ``norm``: the words are split at whitespace, and each Chinese /
    Japanese character is a word of its own (those scripts put no spaces between words, as CMRC's F1 counts
    characters). With casefold, remove_punctuation and remove_articles (``objective=token_f1``) it is SQuAD's F1."""
    return f1_of_words(_f1_words(norm(prediction)), _f1_words(norm(reference)))


def _f1_words(text: str) -> list[str]:
    return [w for part in text.split() for w in (_CJK_SPLIT.findall(part) if _HAS_CJK.search(part) else [part])]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 from Google's rouge-score over lower-cased Unicode words (:class:`UnicodeWords`)."""
    return float(_rouge().score(reference, prediction)["rougeL"].fmeasure)


# Scripts written without spaces between words: each character is a token (as ROUGE is usually run on them).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_WORDS = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")
_HAS_CJK = re.compile(f"[{_CJK}]")
_CJK_SPLIT = re.compile(f"[{_CJK}]|[^{_CJK}]+")  # a word with such characters: each of them, and the runs between


_HAS_KANA = re.compile("[\u3040-\u30ff]")


def bleu_tokenize(prediction: str, reference: str) -> str:
    """sacrebleu's tokenizer for one row: ``char`` (every character a token) where either text has Japanese kana,
    else ``zh`` (each Chinese character a token) where either has Chinese characters, else its default ``13a``,
    which splits on spaces: a sentence of those scripts would be one token, and an answer one word off would score
    0. Not ``zh`` for Japanese: it splits Chinese characters only, so a run of kana stays one token
    (これはペンです vs これはペンでした: 0); ``ja-mecab`` needs MeCab and its dictionary."""
    if _HAS_KANA.search(prediction) or _HAS_KANA.search(reference):
        return "char"
    return "zh" if _HAS_CJK.search(prediction) or _HAS_CJK.search(reference) else "13a"


class UnicodeWords:
    """rouge-score's tokenizer interface: lower-cased runs of letters and digits in any script, and each
    Chinese / Japanese character alone. rouge-score's own default keeps only [a-z0-9]: a Korean, Chinese or
    accented answer had no tokens and scored 0 even when it equalled the reference. On ASCII text the tokens
    are the same as the default's."""

    def tokenize(self, text: str) -> list[str]:
        return _WORDS.findall(text.lower())


_ROUGE: Any = None


def _rouge() -> Any:
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False, tokenizer=UnicodeWords())
    return _ROUGE


def references_of(row: dict[str, Any]) -> list[str]:
    """The answers a row is scored against: its ``references`` (the trained answer and the row's own acceptable
    answers), else its one ``reference``."""
    return row.get("references") or [row["reference"]]


class MetricError(RuntimeError):
    """A metric raised on one row: the run (trial) fails with this reason, the sweep goes on."""


@dataclass
class Scores:
    """Per-row scores and the aggregate (the objective value)."""

    rows: list[float]
    value: float


def build_scorer(metric: str, objective: Any) -> Callable[[Sequence[dict[str, Any]]], Scores]:
    """A function (rows of prompt / prediction / reference / row, and ``references`` where a row has several
    acceptable answers) -> :class:`Scores` for ``metric``: each row's best over its references."""
    norm = Normalize.from_config(objective.normalize)
    best = max
    if metric in ("bleu", "chrf"):
        return lambda rows: _corpus(metric, rows)
    if metric == "exact_match":
        def one(r, ref):
            return exact_match(r["prediction"], ref, norm)
    elif metric == "contains":
        def one(r, ref):
            return contains(r["prediction"], ref, norm)
    elif metric == "regex":
        pattern = compile_pattern(objective.pattern)
        last = objective.pattern_match == "last"

        def one(r, ref):
            return regex_match(r["prediction"], ref, pattern, norm, last)
    elif metric == "token_f1":
        def one(r, ref):
            return token_f1(r["prediction"], ref, norm)
    elif metric == "rouge_l":
        def one(r, ref):
            return rouge_l(r["prediction"], ref)
    elif metric == "function":
        fn = load_function(objective.function)
        # called once per reference; the best is the objective's direction when the function is the objective
        if metric == objective.metric and objective.direction == "minimize":
            best = min

        def one(r, ref):
            return float(fn(prompt=r["prompt"], prediction=r["prediction"], reference=ref,
                             row=r.get("row") or {"index": r.get("index"),
                                                     **({"source": r["source"]} if "source" in r else {}),
                                                     **({"references": r["references"]} if "references" in r else {})}))
    else:
        raise ValueError(f"not a generation metric: {metric}")

    def score(rows: Sequence[dict[str, Any]]) -> Scores:
        values = []
        for i, r in enumerate(rows):
            try:
                values.append(best(one(r, ref) for ref in references_of(r)))
            except Exception as err:  # noqa: BLE001 -- a user metric may raise anything
                raise MetricError(f"metric: {metric} raised on validation row {r.get('index', i)}: "
                                  f"{type(err).__name__}: {err}") from err
        return Scores(values, sum(values) / len(values) if values else 0.0)

    return score


def _corpus(metric: str, rows: Sequence[dict[str, Any]]) -> Scores:
    import sacrebleu

    preds = [r["prediction"] for r in rows]
    refs = [references_of(r) for r in rows]
    if metric == "bleu":
        # the mean of the rows' sentence BLEU (effective order, exp smoothing), as LLaMA-Factory's bleu-4 is a
        # mean of smoothed sentence BLEU: corpus BLEU is 0 whenever no reference has 4 tokens, however right;
        # a row with several acceptable answers: its best sentence BLEU over them
        per_row = [max(sacrebleu.sentence_bleu(p, [r], tokenize=bleu_tokenize(p, r)).score for r in rs)
                   for p, rs in zip(preds, refs)]
        corpus = sum(per_row) / len(per_row) if per_row else 0.0
    else:
        # each row's reference of best sentence chrF (sacrebleu's chrF picks the best-scoring reference per
        # segment when given several), then the corpus score over those
        per_row, chosen = [], []
        for p, rs in zip(preds, refs):
            scored = [(sacrebleu.sentence_chrf(p, [r]).score, r) for r in rs]
            top = max(scored, key=lambda x: x[0])
            per_row.append(top[0])
            chosen.append(top[1])
        corpus = sacrebleu.corpus_chrf(preds, [chosen]).score
    return Scores(per_row, float(corpus))
