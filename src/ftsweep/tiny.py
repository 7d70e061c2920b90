"""The tiny Llama-architecture stand-in model, built locally (no Hub access needed).

A byte-level BPE tokenizer is trained on the bundled text with Llama 3's special tokens
(``<|begin_of_text|>``, ``<|end_of_text|>``, header/eot tokens, ``<|reserved_special_token_0..250|>``),
Llama 3's chat template and **no pad token**, so the pad-token policy code that runs on it is the same
code that runs on a real Llama 3. The model is a ``LlamaForCausalLM`` with random weights, optionally
given a short causal-LM pass on the bundled C4 text (``pretrain_steps``). Both are saved once under
``<cache_dir>/tiny/<hash of the spec>/`` and then loaded with the Auto classes like any Hub model.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from ftsweep.config.schema import TinyModelSpec as TinySpec  # the model.tiny schema
from ftsweep.data.templates import LLAMA3_CHAT_TEMPLATE
from ftsweep.notices import Ticker, notice
from ftsweep.numerics import apply_threads
from ftsweep.paths import bundled_data_dir

BUILDER_VERSION = 3  # bump when the recipe changes so old caches are not reused (3: pre-trained on one thread)
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
HEADER_TOKENS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
N_RESERVED = 251  # <|reserved_special_token_0|> .. <|reserved_special_token_250|>, as in Llama 3
CORPUS_FILES = ("alpaca_en_demo.json", "identity.json", "c4_demo.jsonl")


def spec_from_cfg(node: Any) -> TinySpec:
    """The ``model.tiny`` config node as a :class:`TinySpec`."""
    return TinySpec(**{f.name: node[f.name] for f in fields(TinySpec)})


def spec_key(spec: TinySpec) -> str:
    """Cache key: the spec and the builder version (a changed recipe never reuses an old build)."""
    # The chat template is part of the key: a changed template is never served from an old build.
    key = {"spec": asdict(spec), "v": BUILDER_VERSION, "chat_template": LLAMA3_CHAT_TEMPLATE}
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def special_tokens() -> list[str]:
    return [BOS, EOS, *HEADER_TOKENS] + [f"<|reserved_special_token_{i}|>" for i in range(N_RESERVED)]


def corpus_texts(data_dir: Path | None = None) -> list[str]:
    """Every text field of the bundled data files (Alpaca rows, identity rows, C4 documents)."""
    data_dir = data_dir or bundled_data_dir()
    texts: list[str] = []
    for name in CORPUS_FILES:
        path = data_dir / name
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            rows = json.loads(path.read_text(encoding="utf-8"))
        for row in rows:
            texts.extend(v for v in row.values() if isinstance(v, str) and v)
    # A little Korean so the alpaca_ko template is not all unknown bytes.
    texts.append("아래는 문제를 설명하는 지시사항입니다. 이 요청에 대해 적절하게 답변해주세요.\n###지시사항:\n###답변:")
    return texts


def build_tokenizer(spec: TinySpec):
    """Train the byte-level BPE and wrap it as a transformers fast tokenizer (no pad token)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = special_tokens()
    if spec.vocab_size < len(specials) + 300:
        raise ValueError(f"model.tiny.vocab_size must be >= {len(specials) + 300} (got {spec.vocab_size})")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_texts(), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    # Like Llama 3: <|begin_of_text|> is prepended to every encoded sequence.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        additional_special_tokens=HEADER_TOKENS,
        model_max_length=spec.max_position_embeddings,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = LLAMA3_CHAT_TEMPLATE
    return fast


def llama_config(spec: TinySpec, vocab_size: int, bos_token_id: int | None = None, eos_token_id: int | None = None,
                 tie_word_embeddings: bool = False):
    """The tiny model's architecture (also what the memory estimate reads its shapes from); tests build
    a tied variant (as Llama 3.2 1B / Qwen2.5 0.5B) with ``tie_word_embeddings=True``."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=None,
        tie_word_embeddings=tie_word_embeddings,
        rope_theta=500000.0,
    )


def build_model(spec: TinySpec, tokenizer):
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(spec.seed)
    config = llama_config(spec, len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
    model = LlamaForCausalLM(config)
    if spec.pretrain_steps > 0:
        pretrain(model, tokenizer, spec)
    return model


def pretrain(model, tokenizer, spec: TinySpec, block: int = 128, batch: int = 16) -> list[float]:
    """A short causal-LM pass on the bundled C4 text (documents joined with eos, cut into blocks)."""
    import torch

    docs = [json.loads(line)["text"] for line in (bundled_data_dir() / "c4_demo.jsonl").read_text().splitlines() if line]
    ids: list[int] = []
    for d in docs:
        ids.extend(tokenizer(d, verbose=False)["input_ids"] + [tokenizer.eos_token_id])
    n = len(ids) // block
    blocks = torch.tensor(ids[: n * block]).view(n, block)
    gen = torch.Generator().manual_seed(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.pretrain_lr)
    losses = []
    model.train()
    ticker = Ticker("tiny model pre-training steps", spec.pretrain_steps)
    # One intra-op thread: on CPU the weights depend on the thread count, and the same spec (cache key) must
    # give the same model whether a 2-worker sweep's trial, a one-off run or a 64-core machine builds it.
    with apply_threads(1):
        for step in range(spec.pretrain_steps):
            idx = torch.randint(0, n, (batch,), generator=gen)
            out = model(input_ids=blocks[idx], labels=blocks[idx])
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(out.loss.item())
            ticker.step(step + 1)
    model.eval()
    return losses


def ensure_tiny(spec: TinySpec, cache_dir: str | os.PathLike) -> Path:
    """Build the tiny model and tokenizer once per spec; return the directory to load them from."""
    root = Path(cache_dir).expanduser() / "tiny"
    target = root / spec_key(spec)
    if (target / "ftsweep_tiny.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    # Parallel sweep trials starting on a fresh cache: one builds, the others wait and reuse it.
    lock = FileLock(str(root / f"{spec_key(spec)}.lock"))
    try:
        lock.acquire(timeout=0)
    except TimeoutError:  # filelock.Timeout
        notice(f"waiting for another process that is building the tiny model into {target}")
        lock.acquire()
    try:
        if not (target / "ftsweep_tiny.json").is_file():
            _build_into(spec, root, target)
    finally:
        lock.release()
    return target


def _build_into(spec: TinySpec, root: Path, target: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        notice(f"building the tiny model once into {target} (pretrain_steps={spec.pretrain_steps}; about a minute "
               "on 2 CPU cores, cached for every later run)")
        tokenizer = build_tokenizer(spec)
        model = build_model(spec, tokenizer)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "ftsweep_tiny.json").write_text(json.dumps({"spec": asdict(spec), "builder_version": BUILDER_VERSION}))
        tmp.rename(target)  # atomic: a killed build never leaves half a model behind
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
