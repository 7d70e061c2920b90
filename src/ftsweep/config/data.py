"""Schema of the ``data`` config group (read by :mod:`ftsweep.data`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from ftsweep.errors import ConfigError


@dataclass
class AlpacaTemplate:
    """A user-defined Alpaca-style template. ``{instruction}`` and ``{input}`` are substituted."""

    prompt_with_input: str = ""
    prompt_no_input: str = ""


@dataclass
class Columns:
    """Canonical field -> the source column that holds it (unset = the column has the field's own name).

    A fixed set of keys (not a free dict), so ``data.columns={instruction: question}`` merges like any
    other group field and a typo such as ``data.columns.instrution`` fails at composition, naming the keys.
    """

    instruction: str | None = None
    input: str | None = None
    output: str | None = None
    prompt: str | None = None
    completion: str | None = None
    text: str | None = None
    messages: str | None = None
    conversations: str | None = None
    system: str | None = None
    tools: str | None = None
    history: str | None = None  # LLaMA-Factory's alpaca history (refused: use the chat format)
    # Preference stages (stage=dpo / kto): the preferred and dispreferred answer, KTO's boolean tag.
    chosen: str | None = None
    rejected: str | None = None
    label: str | None = None
    # Generation objectives (objective=exact_match, ...): the validation row's acceptable answers, a column or a
    # dotted path holding a list of strings or one string (SQuAD's answers.text, TriviaQA's answer.aliases).
    # Every answer metric scores the best over the trained answer and these (SQuAD's max over gold answers);
    # training is unchanged (the output column is still the one answer trained).
    references: str | None = None


@dataclass
class DataConfig:
    # A file (json, jsonl, csv, tsv, parquet, txt: a row {"text": line} per non-blank line; .gz/.bz2/.xz read
    # through; relative paths are resolved against the project root, then the working directory) or a Hugging
    # Face dataset name.
    path: str = MISSING
    # LLaMA-Factory's dataset registry: a name defined in <dataset_dir>/dataset_info.json. Its entry (file_name or
    # hf_hub_url, formatting, ranking, columns, tags, split, subset, num_samples) replaces path, loader, format and
    # the columns it maps (ftsweep.data.dataset_info). dataset_dir: the folder holding dataset_info.json (or the
    # file itself), relative to the working directory as in LLaMA-Factory. Several names, 'identity,alpaca_en_demo',
    # are one dataset of their rows (LLaMA-Factory's list).
    dataset: str | None = None
    dataset_dir: str = "data"
    # How a list of entries is mixed (LLaMA-Factory's mix_strategy, with datasets' interleave_datasets): concat
    # (every row of every entry) | interleave_under (a row of each entry in turn, or drawn with interleave_probs,
    # until the first entry runs out) | interleave_over (until every entry has run out once; shorter ones repeat).
    # data.max_rows, the shuffle and the validation split then apply to the mixed rows; a data.eval_dataset list
    # keeps every row once.
    mix_strategy: str = "concat"
    # interleave_*: the chance of each entry (in the order listed) for every row, e.g. [0.7,0.3]; null: in turn.
    interleave_probs: list[float] | None = None
    # An entry of the same dataset_info.json for validation (LLaMA-Factory's eval_dataset): its file becomes
    # validation rows (read with its own columns, rendered as the training rows; several names: every entry's rows).
    eval_dataset: str | None = None
    # auto (by file extension; a non-file is a Hub dataset) | json | jsonl | csv | tsv | parquet | arrow | text | hub
    loader: str = "auto"
    split: str = "train"
    subset: str | None = None
    revision: str | None = None
    # A separate validation file; when unset, ``val_size`` rows are split off with ``seed``.
    validation_path: str | None = None
    # Fraction (< 1) or number of rows (>= 1) for the seeded validation split.
    val_size: float = 0.1
    # Canonical field -> source column, e.g. data.columns={instruction: question, output: answer}.
    columns: Columns = field(default_factory=Columns)
    # Text encoding of json / jsonl / csv / tsv / txt files, e.g. latin-1, cp949. Under utf-8 a byte-order mark is
    # honoured: UTF-8's is skipped, a UTF-16 / UTF-32 one reads the file in that encoding.
    encoding: str = "utf-8"
    # Keep only rows whose ``input`` is empty (seeds 000 and 002).
    only_empty_input: bool = False
    # Literal replacements applied to every text field, e.g. {"{{name}}": "ftsweep"} for identity.json.
    replacements: dict[str, str] = field(default_factory=dict)
    max_rows: int | None = None
    shuffle: bool = True
    seed: int = 42
    # alpaca | chat | sharegpt | prompt_completion | text | auto (the training file's first row tells: its columns)
    format: str = "alpaca"
    # Alpaca templates: alpaca_en | alpaca_ko | special_tokens | custom (uses ``custom_template``)
    template: str = "alpaca_en"
    custom_template: AlpacaTemplate = field(default_factory=AlpacaTemplate)
    # Name of a bundled chat template to use instead of the tokenizer's own (never applied silently).
    chat_template: str | None = None
    # Tokens added to the tokenizer (embeddings resized), e.g. ["<|prompt|>", "<|assistant|>"].
    special_tokens: list[str] = field(default_factory=list)
    # Set the tokenizer's eos to this token (e.g. "<|endofanswer|>", seed 003).
    eos_token: str | None = None
    # Also train embed_tokens / lm_head (needed when new tokens were added).
    train_embeddings: bool = False
    # Completion-only loss unless true.
    train_on_prompt: bool = False
    # Multi-turn: train only the last assistant turn (earlier answers stay masked even with
    # train_on_prompt, as in LLaMA-Factory).
    mask_history: bool = False
    # Append the eos to every answer (Alpaca, prompt_completion) and document (text), unless its text ends with it.
    add_eos: bool = True
    cutoff_len: int = 512
    # Rows longer than cutoff_len: truncate_answer (keep the whole prompt, cut the answer's end) |
    # truncate_both (split the budget between prompt and answer as LLaMA-Factory does; the prompt is
    # cut from the left after bos, the answer from the right) | truncate_prompt (from the left) | drop.
    # Before any cut: untrained history turns go first, oldest first (mask_history keeps the trained last
    # turn), and a chat row's system / tool block is kept whole (cuts start after it).
    # Default truncate_both: on the bundled Alpaca rows at cutoff 128 it keeps 899 training rows and loses no
    # whole prompt; truncate_answer keeps 599 (341 are left without an answer token), truncate_prompt loses 591 prompts.
    overlong: str = "truncate_both"
    # Which end of the prompt truncate_both / truncate_prompt cut: keep_end (default: cut from the left, after
    # the system / tool block; the end of the prompt is the turn header that leads into the trained answer) |
    # keep_start (LLaMA-Factory's rule: cut the prompt's end, keeping its start; the answer may then follow a
    # cut prompt without its assistant header).
    prompt_cut: str = "keep_end"
    # SFT packing without attention across examples (trl bfd / padding-free); text: concatenate + cut.
    packing: bool = False
    # fail | skip (count and report skipped rows)
    bad_rows: str = "fail"
    # Extra loader options passed through (e.g. data_files for Hub datasets); ``field``: the key that holds a JSON
    # file's rows ({"data": [...]}), as datasets' json loader (+data.extra.field=data); ``sep`` (or ``delimiter``):
    # the cell separator of a csv / tsv file ("+data.extra.sep=';'").
    extra: dict[str, Any] = field(default_factory=dict)


def names_of(value: str, key: str = "data.dataset") -> list[str]:
    """The dataset_info.json entry names of ``data.dataset`` / ``data.eval_dataset``: one name, or several
    separated by commas (LLaMA-Factory's ``dataset: identity,alpaca_en_demo``)."""
    names = [n.strip() for n in str(value).split(",")]
    if not all(names):
        raise ConfigError(key, f"{value!r}: an empty name in the list of datasets")
    return names
