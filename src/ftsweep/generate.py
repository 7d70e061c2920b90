"""``ftsweep generate RUN_DIR``: answer a fixed list of questions with the base model and the fine-tuned
model side by side (seed 002's evaluation), with the prompt rendered exactly as training rendered it.

Writes ``RUN_DIR/generations/answers.md`` and ``answers.jsonl`` (or ``--out DIR``) and logs a W&B table
when the run logged to W&B. The base answers come from the same model with its adapter disabled, so
only one copy of the weights is loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ftsweep import rundir
from ftsweep.rundir import ADAPTER  # the kind of a fine-tuned model: an adapter (or a full model)

log = logging.getLogger(__name__)

@dataclass
class GenerationSettings:
    """Sampling settings (seed 002: temperature 0.05, top_p 0.95, 128 new tokens)."""

    max_new_tokens: int = 128
    temperature: float = 0.05
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.0
    do_sample: bool = True
    seed: int = 42

    @property
    def sampling(self) -> bool:
        """Whether answers are sampled: ``do_sample`` with a temperature above 0 (else greedy)."""
        return self.do_sample and self.temperature > 0

    def used(self) -> dict[str, Any]:
        """The settings as decoding used them (what answers.jsonl, answers.md and W&B record): greedy decoding
        (``--greedy`` or ``--temperature 0``) has ``do_sample`` false and no temperature / top-p / top-k."""
        d = asdict(self)
        if not self.sampling:
            d.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return d

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.sampling:
            kw.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw


# ----------------------------------------------------------------------------------------- questions
def default_questions() -> list[str]:
    """The six questions of seed 002 (Korean and English)."""
    text = resources.files("ftsweep").joinpath("questions/seed002.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


@dataclass
class Question:
    """A question as read from a ``--questions`` file: a string or a row, and where it is (for errors)."""

    value: Any
    where: str


def read_questions(path: str | Path) -> list[Question]:
    """One question per line (.txt), a JSON list, or JSONL rows (strings, or objects such as
    ``{"instruction": ..., "input": ...}`` / ``{"messages": [...]}`` in the run's data format, its
    ``data.columns`` mapping included). ``-`` reads stdin; stdin, a pipe or a file of another suffix is told by its
    first character: ``[`` a JSON list, ``{`` JSONL rows, else a question per line. A bad file is one line naming it
    and the line or item."""
    from ftsweep.config.errors import UsageError

    path = Path(path)
    stdin = str(path) == "-"
    if not stdin and not path.exists():  # (a pipe, <(...), is read like a file)
        raise UsageError(f"--questions: no such file: {path}")
    if path.is_dir():
        raise UsageError(f"--questions: {path} is a folder; give a .txt, .json or .jsonl file")
    name = "--questions - (stdin)" if stdin else str(path)
    try:
        text = sys.stdin.read() if stdin else path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UsageError(f"{name}: not UTF-8 text at byte {err.start}") from err
    suffix = "" if stdin else path.suffix.lower()
    if suffix not in (".txt", ".json", ".jsonl"):  # stdin, a pipe (<(...): /dev/fd/63): told by its first character
        suffix = {"[": ".json", "{": ".jsonl"}.get(text.lstrip()[:1], ".txt")
    if suffix == ".json" or (suffix == ".jsonl" and text.lstrip().startswith("[")):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"{name} line {err.lineno}: invalid JSON ({err.msg})") from err
        if not isinstance(items, list):
            raise UsageError(f"{name}: expected a JSON list of questions, got {type(items).__name__}")
        questions = [Question(q, f"{name} item {i + 1}") for i, q in enumerate(items)]
    elif suffix == ".jsonl":
        questions = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    questions.append(Question(json.loads(line), f"{name} line {n}"))
                except json.JSONDecodeError as err:
                    raise UsageError(f"{name} line {n}: invalid JSON ({err.msg})") from err
    else:
        questions = [Question(line, f"{name} line {n}") for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    for q in questions:
        if not (isinstance(q.value, dict) or (isinstance(q.value, str) and q.value.strip())):
            raise UsageError(f"{q.where}: a question is a non-empty string or an object, got {q.value!r}")
    if not questions:
        raise UsageError(f"{name}: no questions in it")
    return questions


def question_text(q: Any) -> str:
    """The question as the heading of its answers (a conversation's last message, an Alpaca row's
    instruction and input)."""
    if isinstance(q, Question):
        q = q.value
    if isinstance(q, str):
        return q
    if "instruction" in q:
        return q["instruction"] + (f"\n{q['input']}" if q.get("input") else "")
    turns = q.get("messages") or q.get("conversations") or q.get("prompt")
    if isinstance(turns, list) and turns and isinstance(turns[-1], dict):  # a conversation: its last question
        asked = [t for t in turns if isinstance(t, dict) and (t.get("role") or t.get("from")) not in ("assistant", "gpt")]
        last = (asked or turns)[-1]
        return str(last.get("content", last.get("value", "")))
    return q.get("prompt") or q.get("text") or q.get("question") or json.dumps(q, ensure_ascii=False)


# The fields a row of each format is read from (chat reads LLaMA-Factory's Alpaca layout too): a row with none of
# them (after the run's column mapping) is taken as a plain question from its first field of these (a QA set's
# {"question": ...}).
FORMAT_FIELDS = {"alpaca": ("instruction",), "prompt_completion": ("prompt",), "chat": ("messages", "instruction"),
                 "sharegpt": ("conversations", "messages"), "text": ("text",)}
PLAIN_FIELDS = ("question", "prompt", "instruction", "input", "text", "query")


def as_row(question: Any, d: Any) -> Any:
    """A question as the run reads it: a row with the run's ``data.columns`` mapping applied, or the text of a
    row that has none of the format's fields (:data:`PLAIN_FIELDS`)."""
    from ftsweep.data.options import data_options
    from ftsweep.data.sources import column_map, map_columns
    from ftsweep.data.templates import column_value

    d = data_options(d)  # a dataset_info.json entry gives the format and columns
    if isinstance(question, Question):
        question = question.value
    if not isinstance(question, dict):
        return question
    # a question may be in the run's layout or in the format's own: only the mappings whose column it has apply
    row = map_columns(question, {k: v for k, v in column_map(d).items() if column_value(question, v)[0]})
    if any(k in row for k in FORMAT_FIELDS.get(d.format, ())):
        return row
    return next((row[k] for k in PLAIN_FIELDS if isinstance(row.get(k), str)), row)


# -------------------------------------------------------------------------------------------- prompts
def render_prompt(question: Any, data_cfg, tokenizer) -> tuple[str, bool]:
    """The prompt text the model saw in training for this question, and whether bos is added.

    Reuses the data package's renderer on a row with a placeholder answer and keeps the segments
    before the last answer, so template, chat template and bos handling are the training ones.
    ``question``: a string, a row in the run's data format (its ``data.columns`` mapping applied), or a
    :class:`Question` (errors name its file and line). The ids to send: :func:`prompt_ids`.
    """
    segments = prompt_segments(question, data_cfg, tokenizer)
    return "".join(s.text for s in segments), bool(segments and segments[0].bos)


def prompt_ids(question: Any, data_cfg, tokenizer) -> list[int]:
    """The token ids of the prompt, encoded as training encodes a row: each segment (a turn's prompt, an earlier
    answer) tokenized on its own by the training encoder. Tokenizing the joined text would differ at the seams on a
    SentencePiece tokenizer (Llama 2 / Mistral: an earlier answer is trained as ``▁Hello``, one text gives ``Hello``)."""
    from ftsweep.data.encode import tokenize_segments

    where = question.where if isinstance(question, Question) else "question"
    return tokenize_segments([(prompt_segments(question, data_cfg, tokenizer), where)], tokenizer, False)[0].ids


def prompt_segments(question: Any, data_cfg, tokenizer) -> list:
    """The training renderer's segments of this question's row before its last answer (:func:`render_prompt`)."""
    from ftsweep.data import render
    from ftsweep.data.chat import ROLE_ALIASES, alpaca_as_chat
    from ftsweep.data.options import data_options
    from ftsweep.data.sources import Record
    from ftsweep.data.templates import ANSWER, HISTORY, PROMPT, Segment, resolve_chat_template

    d = data_options(data_cfg)  # a dataset_info.json entry (or a list of them) gives the format and columns
    where = question.where if isinstance(question, Question) else "question"
    question = as_row(question, d)
    placeholder = "x"
    if d.format == "text":
        return [Segment(question_text(question), PROMPT, True)]
    if isinstance(question, dict):
        row = dict(question)
        if d.format == "sharegpt" and "messages" not in row and isinstance(row.get("conversations"), list):
            # ShareGPT turns (from / value) as messages; the renderer reads them back as the run's turns
            row["messages"] = [{"role": ROLE_ALIASES.get(t.get("from"), t.get("from")), "content": t.get("value")}
                               if isinstance(t, dict) and "from" in t else t for t in row.pop("conversations")]
        if d.format in ("chat", "sharegpt") and "messages" in row:
            turns = list(row["messages"])
            if turns and isinstance(turns[-1], dict) and turns[-1].get("role") == "assistant":
                turns = turns[:-1]  # a row with its answer (a validation file's): the model writes that answer
            kept = {k: row[k] for k in ("system", "tools") if row.get(k)}  # as the row's training prompt had them
            row = {"messages": [*turns, {"role": "assistant", "content": placeholder}], **kept}
    elif d.format == "alpaca":
        row = {"instruction": question, "input": ""}
    elif d.format == "prompt_completion":
        row = {"prompt": question}
    else:
        row = {"messages": [{"role": "user", "content": question}]}
    if d.format == "alpaca" or alpaca_as_chat(row, d.format):  # an Alpaca-layout question of a chat run too
        row.setdefault("output", placeholder)
    elif d.format == "prompt_completion":
        row.setdefault("completion", placeholder)
    elif "messages" in row and row["messages"][-1]["role"] != "assistant":
        row["messages"] = [*row["messages"], {"role": "assistant", "content": placeholder}]
    if d.format == "sharegpt":  # the renderer reads ShareGPT rows (turns without "from" as role / content)
        row = {"conversations": row.pop("messages"), **row}
    chat_template = resolve_chat_template(d, tokenizer) if d.format in ("chat", "sharegpt") else None
    segments = render(Record(row, where), d, tokenizer, chat_template)
    last_answer = max(i for i, s in enumerate(segments) if s.kind in (ANSWER, HISTORY))
    return segments[:last_answer]


# ------------------------------------------------------------------------------------------- models
def load_tokenizer(run_dir: Path):
    """The tokenizer the run saved beside its adapter (or full model)."""
    from transformers import AutoTokenizer

    from ftsweep.rundir import RunDir, not_complete

    adapter_dir, full_dir = RunDir(run_dir).adapter, RunDir(run_dir).full_model
    source = adapter_dir if adapter_dir.is_dir() else full_dir
    if not source.is_dir():
        from ftsweep.config.errors import UsageError

        raise UsageError(f"{run_dir} has no adapter/ or model/ ({not_complete(run_dir) or 'did the run finish?'})")
    return AutoTokenizer.from_pretrained(source)


def load_models(run_dir: Path, cfg, tokenizer, *, quantized: bool = True):
    """(model, kind): a PeftModel whose adapter can be disabled for the base answers, or for a full
    fine-tune a pair (base, fine-tuned)."""
    from ftsweep.model import load_base_for_inference
    from ftsweep.rundir import RunDir
    from ftsweep.stages.init_from import merge_init_adapter

    adapter_dir, full_dir = RunDir(run_dir).adapter, RunDir(run_dir).full_model
    # a run with init_from trained on the SFT model: that is its base (the "base" answers are the SFT model's)
    base = merge_init_adapter(cfg, load_base_for_inference(cfg, tokenizer, quantized=quantized))
    if adapter_dir.is_dir():
        from ftsweep.model import load_adapter

        return load_adapter(base, adapter_dir).eval(), ADAPTER
    from transformers import AutoModelForCausalLM

    tuned = AutoModelForCausalLM.from_pretrained(full_dir, dtype=base.dtype).eval()
    return (base, tuned), "full"


def _answer(model, tokenizer, ids: list[int], settings: GenerationSettings) -> str:
    """The model's answer to the prompt ``ids`` (:func:`prompt_ids`)."""
    import torch
    from transformers import set_seed

    from ftsweep.objectives.generation import stop_token_ids

    set_seed(settings.seed)  # same seed for base and fine-tuned: differences come from the weights
    device = next(model.parameters()).device
    inputs = {"input_ids": torch.tensor([ids], device=device), "attention_mask": torch.ones(1, len(ids), dtype=torch.long,
                                                                                             device=device)}
    with torch.no_grad():
        out = model.generate(
            **inputs,
            **settings.generate_kwargs(),
            eos_token_id=stop_token_ids(tokenizer, model),  # the same stops as the generation objective's
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            use_cache=True,
        )
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def generate_run(run_dir: str | Path, questions: list[Any] | None = None, settings: GenerationSettings | None = None,
                 out_dir: str | Path | None = None, *, base: bool = True, quantized: bool = True,
                 allow_failed: bool = False) -> list[dict[str, Any]]:
    """Answer ``questions`` (default: seed 002's six) with base and fine-tuned model; write the files.

    Args:
        run_dir: a finished run directory (``.hydra/config.yaml`` and ``adapter/`` or ``model/``).
        questions: strings, rows in the run's data format, or :class:`Question` s read from a file.
        settings: sampling settings.
        out_dir: where answers.md / answers.jsonl go (default ``RUN_DIR/generations``).
        base: also answer with the base model.
        quantized: load the base as the run trained it (e.g. nf4); False loads it in full precision.
        allow_failed: answer with the adapter (or model) of a run that failed or did not finish (refused otherwise).

    Returns:
        One dict per question: question, prompt, base, finetuned, seconds.
    """
    run_dir = Path(run_dir)
    cfg = rundir.load_config(run_dir)
    saved = next((d for d in (rundir.RunDir(run_dir).adapter, rundir.RunDir(run_dir).full_model) if d.is_dir()), None)
    if saved is not None:  # (none: load_tokenizer says so)
        rundir.check_complete(run_dir, saved, allow_failed)
    questions = questions or default_questions()
    settings = settings or GenerationSettings()
    from ftsweep.verbosity import quiet_warnings

    quiet_warnings()
    tokenizer = load_tokenizer(run_dir)
    from ftsweep.data.options import data_options

    d = data_options(cfg.data)
    # a bad question fails before the model loads; the ids are the training encoder's (segment by segment)
    prompts = [(render_prompt(q, d, tokenizer)[0], prompt_ids(q, d, tokenizer)) for q in questions]
    models, kind = load_models(run_dir, cfg, tokenizer, quantized=quantized)
    rows = []
    for q, (prompt, ids) in zip(questions, prompts):
        started = time.perf_counter()
        if kind == ADAPTER:
            tuned = _answer(models, tokenizer, ids, settings)
            with models.disable_adapter():
                base_answer = _answer(models, tokenizer, ids, settings) if base else None
        else:
            tuned = _answer(models[1], tokenizer, ids, settings)
            base_answer = _answer(models[0], tokenizer, ids, settings) if base else None
        rows.append({"question": question_text(as_row(q, d)), "prompt": prompt, "base": base_answer, "finetuned": tuned,
                     "seconds": round(time.perf_counter() - started, 3)})
    out_dir = Path(out_dir) if out_dir else run_dir / "generations"
    write_outputs(out_dir, rows, settings, run_dir)
    _log_wandb(cfg, run_dir, rows, settings)
    return rows


# ------------------------------------------------------------------------------------------ outputs
def write_outputs(out_dir: Path, rows: list[dict[str, Any]], settings: GenerationSettings, run_dir: Path) -> None:
    from ftsweep.tracking import scrub

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = scrub(rows)
    with (out_dir / "answers.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({**row, "settings": settings.used()}, ensure_ascii=False) + "\n")
    md = [f"# Base vs fine-tuned: {run_dir}", "", "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.used().items()), ""]
    for i, row in enumerate(rows):
        md += [f"## {i + 1}. {row['question']}", ""]
        if row["base"] is not None:
            md += ["**Base**", "", _quote(row["base"]), ""]
        md += ["**Fine-tuned**", "", _quote(row["finetuned"]), ""]
    (out_dir / "answers.md").write_text("\n".join(md), encoding="utf-8")
    print(f"ftsweep: wrote {out_dir / 'answers.md'} and answers.jsonl ({len(rows)} question{'s' if len(rows) != 1 else ''})")


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in (text or "(empty)").splitlines()) or "> (empty)"


def _log_wandb(cfg, run_dir: Path, rows: list[dict[str, Any]], settings: GenerationSettings) -> None:
    if cfg.logger.name != "wandb":
        return

    import wandb

    from ftsweep.tracking import wandb_dir, wandb_init, wandb_mode

    mode = wandb_mode(cfg.logger)
    run = wandb_init(project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group,
                     name=f"generate-{run_dir.name}", job_type="generate", config=settings.used(),
                     dir=wandb_dir(run_dir), mode=mode, reinit="finish_previous")
    try:
        table = wandb.Table(columns=["question", "base", "finetuned"])
        for row in rows:
            table.add_data(row["question"], row["base"], row["finetuned"])
        run.log({"generations": table})
    finally:
        run.finish()


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ftsweep generate", description="Base vs fine-tuned answers to a list of questions.")
    p.add_argument("run_dir", type=Path, help="a run folder, or a sweep folder (its best trial)")
    p.add_argument("--questions", help="file: one question per line (.txt), a JSON list (.json), or JSONL rows (.jsonl); "
                   "- reads stdin (stdin or another file: starting with [ a JSON list, with { JSONL rows, else a question per line) "
                   "(default: seed 002's six)")
    p.add_argument("--out", type=Path, help="output directory (default RUN_DIR/generations)")
    d = GenerationSettings()
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--top-k", type=int, default=d.top_k)
    p.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty)
    p.add_argument("--greedy", action="store_true", help="no sampling (temperature, top_p, top_k ignored)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--no-base", action="store_true", help="only the fine-tuned model")
    p.add_argument("--full-precision", action="store_true", help="load the base unquantized even if the run was QLoRA")
    p.add_argument("--allow-failed", action="store_true",
                   help="answer with the adapter of a run that failed or did not finish (refused otherwise)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from ftsweep.config.errors import UsageError

    for flag, ok, want in (("--max-new-tokens", args.max_new_tokens >= 1, ">= 1"),
                           ("--temperature", 0 <= args.temperature < float("inf"), "finite and >= 0 (0: greedy)"),
                           ("--top-p", 0 < args.top_p <= 1, "in (0, 1]"), ("--top-k", args.top_k >= 0, ">= 0"),
                           ("--repetition-penalty", args.repetition_penalty > 0, "> 0 (1: none)"),
                           ("--seed", 0 <= args.seed < 2**32, "in [0, 2**32 - 1] (numpy's seed range)")):
        if not ok:  # (NaN fails every check too)
            value = getattr(args, flag[2:].replace("-", "_"))
            raise UsageError(f"{flag}: must be {want} (got {value})")
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        repetition_penalty=args.repetition_penalty, do_sample=not args.greedy, seed=args.seed,
    )
    questions = read_questions(args.questions) if args.questions else None
    from ftsweep.sweeper.study import run_or_best_trial

    run_dir = run_or_best_trial(args.run_dir)
    generate_run(run_dir, questions, settings, answers_folder(Path(run_dir), args.out), base=not args.no_base,
                 quantized=not args.full_precision, allow_failed=args.allow_failed)
    return 0


ANSWER_FILES = ("answers.md", "answers.jsonl")


def answers_folder(run_dir: Path, given: Path | None) -> Path:
    """Where ``ftsweep generate`` writes: ``--out`` (refused when it holds earlier answers: nothing is overwritten),
    else the run's ``generations/`` (``generations_2``, ... when earlier answers are there)."""
    from ftsweep.config.errors import UsageError

    if given is not None:
        if Path(given).exists() and not Path(given).is_dir():
            raise UsageError(f"--out {given}: is a file, not a folder: give a folder for answers.md and answers.jsonl")
        held = [name for name in ANSWER_FILES if (Path(given) / name).exists()]
        if held:
            raise UsageError(f"--out {given}: already holds {' and '.join(held)} of an earlier generate (nothing is "
                             "overwritten): give a new folder")
        return Path(given)
    out, n = run_dir / "generations", 1
    while any((out / name).exists() for name in ANSWER_FILES):
        n += 1
        out = run_dir / f"generations_{n}"
    return out
