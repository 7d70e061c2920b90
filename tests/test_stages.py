"""Stages beyond SFT (stage=dpo / kto): config, preference data layouts, init_from, training behaviour.

One SFT run and one DPO run from it are shared by the module (tiny model, CPU, a few seconds each).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import FAST

from ftsweep.cli import main
from ftsweep.data import DataError

# one worker runs this module: its module-scoped fixtures are built once (scripts/test.sh: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("stages")

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ["data=proxy_pairs", "data.max_rows=200", "data.val_size=40", "data.cutoff_len=64"]


# ------------------------------------------------------------------------------------------- config
def test_every_stage_composes_with_its_own_keys_and_default_objective(compose):
    assert dict(compose().stage) == {"name": "sft"}
    assert compose().objective.metric == "eval_loss"
    dpo = compose("stage=dpo", "data=proxy_pairs")
    assert (dpo.stage.beta, dpo.stage.loss_type, dpo.objective.metric, dpo.objective.direction) == (
        0.1, "sigmoid", "eval_loss", "minimize")
    kto = compose("stage=kto", "data=proxy_kto", "stage.desirable_weight=1.5")
    assert kto.stage.desirable_weight == 1.5
    # the default objective comes from the stage module; an explicit one wins and may be a stage metric
    chosen = compose("stage=dpo", "data=proxy_pairs", "objective.metric=eval_rewards/accuracies",
                     "objective.direction=maximize")
    assert chosen.objective.metric == "eval_rewards/accuracies"
    # the common metrics a stage logs stay selectable
    assert compose("stage=dpo", "data=proxy_pairs", "objective.metric=eval_mean_token_accuracy").objective.metric == (
        "eval_mean_token_accuracy")
    assert compose("stage=grpo", "data=proxy_tasks", "objective.metric=eval_entropy").objective.metric == "eval_entropy"


@pytest.mark.parametrize(("argv", "names"), [
    (["stage=sft", "stage.beta=0.1"], "stage.beta: unknown key for this stage"),
    (["stage=kto", "data=proxy_kto", "stage.loss_type=ipo"], "stage.loss_type: unknown key"),
    (["stage=dpo", "data=proxy_pairs", "stage.loss_type=magic"], "stage.loss_type"),
    (["stage=dpo", "data=proxy_pairs", "stage.beta=0"], "stage.beta"),
    (["stage=dpo", "data=proxy_pairs", "lora=none"], "lora.enabled"),
    (["stage=dpo", "data=proxy_pairs", "objective.metric=eval_kl"], "objective.metric"),
    (["stage=dpo", "data=proxy_pairs", "objective.extra_metrics=[contains]"],
     "objective.extra_metrics: contains generates answers after SFT evaluations; stage=dpo uses its own metrics"),
    (["stage=kto", "data=proxy_kto", "objective.extra_metrics=[exact_match]"], "objective.extra_metrics: exact_match"),
    (["stage=grpo", "data=proxy_tasks", "objective.extra_metrics=[contains]"], "objective.extra_metrics: contains"),
    (["stage=kto", "data=proxy_kto", "trainer.per_device_train_batch_size=1"],
     ("trainer.per_device_train_batch_size: must be >= 2 with stage=kto (its KL term pairs each completion with "
      "another row's prompt in the same batch; got 1)")),
    (["-m", "stage=kto", "data=proxy_kto", "hydra/sweeper=ftsweep_optuna", "trainer.per_device_train_batch_size=1,4"],
     "trainer.per_device_train_batch_size: must be >= 2 with stage=kto"),
    # a common metric the stage never logs: refused with the stage's own list
    (["stage=dpo", "data=proxy_pairs", "objective.metric=eval_perplexity"],
     "objective.metric: stage=dpo does not log eval_perplexity; its metrics: eval_loss, "),
    (["stage=grpo", "data=proxy_tasks", "objective.metric=eval_loss"],
     "objective.metric: stage=grpo does not log eval_loss; its metrics: eval_entropy, train_loss, "),
    (["stage=grpo", "data=proxy_tasks", "objective.metric=eval_mean_token_accuracy"],
     "stage=grpo does not log eval_mean_token_accuracy; its metrics: "),
    (["stage=kto", "data=proxy_kto", "objective.metric=eval_mean_token_accuracy"],
     "stage=kto does not log eval_mean_token_accuracy; its metrics: eval_loss, eval_entropy, "),
    (["-m", "stage=grpo", "data=proxy_tasks", "hydra/sweeper=ftsweep_optuna", "optimizer.lr=1e-3,1e-2",
      "hydra.sweeper.metric=eval_loss", "hydra.sweeper.direction=minimize"],
     "hydra.sweeper.metric: stage=grpo does not log eval_loss; its metrics: eval_entropy, "),
    (["stage=ppo"], "stage=ppo: no such option"),
    (["stage=dpo", "data=proxy_pairs", "init_from=./nowhere"], "init_from: no such directory"),
    (["stage=dpo", "data=proxy_pairs", "init_from=./empty"], "init_from: './empty' holds no adapter"),
    (["init_from=./empty"], "init_from"),
])
def test_bad_stage_input_is_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, argv, names):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code = main(["train", "model=tiny", "logger=none", *argv])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and err[0].startswith("ftsweep: error: ") and names in err[0], err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# ------------------------------------------------------------------------------------- data layouts
def _tokenizer(compose, *overrides):
    from ftsweep.model import load_tokenizer

    cfg = compose(*overrides, "objective.metric=train_loss")  # some cases have no validation rows
    return cfg, load_tokenizer(cfg)


def _build(cfg, tok, paired=True):
    from ftsweep.data.preference import build_preference_datasets

    return build_preference_datasets(cfg, tok, paired=paired, max_prompt_length=None)


def _write(tmp_path, rows, name="p.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_alpaca_pairs_are_the_exact_answers_plus_eos_after_the_sft_prompt(compose):
    cfg, tok = _tokenizer(compose, "stage=dpo", *PAIRS, "data.shuffle=false", "data.val_size=0")
    bundle = _build(cfg, tok)
    rows = [json.loads(x) for x in Path("data/proxy_pairs.jsonl").read_text().splitlines()][:200]
    first = bundle.train[0]
    row = next(r for r in rows if tok.decode(first["prompt_ids"]).endswith(r["input"] + "\n### Response:\n"))
    prompt = f"### Instruction:\n{row['instruction']}\n### Input:\n{row['input']}\n### Response:\n"
    # The prompt is the SFT template's text with bos; the answers are exactly the answer tokens + eos.
    assert first["prompt_ids"] == tok(prompt)["input_ids"]
    assert first["chosen_ids"] == tok(row["chosen"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert first["rejected_ids"] == tok(row["rejected"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert bundle.stats["n_train"] == 200 and bundle.stats["n_dropped"] == 0


def test_chat_layouts_give_the_same_pairs_and_end_each_answer_with_the_end_of_turn(compose, tmp_path):
    user, good, bad = "Give the last word.\nred cat", "cat", "red"
    layouts = {
        "sharegpt": ("sharegpt", {"conversations": [{"from": "human", "value": user}],
                                  "chosen": {"from": "gpt", "value": good}, "rejected": {"from": "gpt", "value": bad}}),
        "trl_conversational": ("chat", {"prompt": [{"role": "user", "content": user}],
                                        "chosen": [{"role": "assistant", "content": good}],
                                        "rejected": [{"role": "assistant", "content": bad}]}),
        "trl_implicit": ("chat", {"chosen": [{"role": "user", "content": user}, {"role": "assistant", "content": good}],
                                  "rejected": [{"role": "user", "content": user}, {"role": "assistant", "content": bad}]}),
        # TRL's conversational layout read with data.format=prompt_completion: the prompt decides
        "trl_conversational_pc": ("prompt_completion", {"prompt": [{"role": "user", "content": user}],
                                                        "chosen": [{"role": "assistant", "content": good}],
                                                        "rejected": [{"role": "assistant", "content": bad}]}),
        "content_parts": ("chat", {"prompt": [{"role": "user", "content": [{"type": "text", "text": user}]}],
                                   "chosen": [{"role": "assistant", "content": good}],
                                   "rejected": [{"role": "assistant", "content": bad}]}),
        # UltraFeedback binarized: the prompt as a string beside whole conversations that repeat it
        "ultrafeedback": ("chat", {"prompt": user,
                                   "chosen": [{"role": "user", "content": user}, {"role": "assistant", "content": good}],
                                   "rejected": [{"role": "user", "content": user},
                                                {"role": "assistant", "content": bad}]}),
    }
    seen = {}
    for name, (fmt, row) in layouts.items():
        path = _write(tmp_path, [row] * 2, f"{name}.jsonl")
        cfg, tok = _tokenizer(compose, "stage=dpo", f"data.path={path}", f"data.format={fmt}", "data.val_size=0")
        ex = _build(cfg, tok).train[0]
        seen[name] = (ex["prompt_ids"], ex["chosen_ids"], ex["rejected_ids"])
    prompt = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    for name, (p, c, r) in seen.items():
        assert tok.decode(p) == prompt, name
        assert c == tok(good, add_special_tokens=False)["input_ids"] + [eot], name
        assert r == tok(bad, add_special_tokens=False)["input_ids"] + [eot], name
    assert len(set(map(str, seen.values()))) == 1


def test_two_whole_conversations_that_differ_before_their_last_answer_name_the_message(compose, tmp_path):
    """trl's implicit conversational pair whose earlier turns differ was refused as 'chosen and rejected render
    different prompts with this template', naming a 'prompt' field the row does not have."""
    def u(text):
        return {"role": "user", "content": text}

    def a(text):
        return {"role": "assistant", "content": text}

    rows = {"earlier": ({"chosen": [u("hi"), a("hello"), u("2+2?"), a("4")],
                         "rejected": [u("hi"), a("hey"), u("2+2?"), a("5")]},
                        "message 2 differs (assistant 'hello' vs assistant 'hey')"),
            "longer": ({"chosen": [u("2+2?"), a("4")], "rejected": [u("2+2?"), a("5"), u("sure?"), a("yes")]},
                       "2 vs 4 messages")}
    for name, (row, said) in rows.items():
        path = _write(tmp_path, [row] * 2, f"{name}.jsonl")
        cfg, tok = _tokenizer(compose, "stage=dpo", f"data.path={path}", "data.format=chat", "data.val_size=0")
        with pytest.raises(DataError) as err:
            _build(cfg, tok)
        assert str(err.value) == (f"{path} line 1: field 'rejected': {said}: a pair of whole conversations shares "
                                  "every message before its last answer (the prompt)")


def test_a_pair_of_whole_texts_is_split_at_their_common_prompt(compose, tmp_path):
    # Anthropic HH: no prompt column, chosen and rejected each hold the whole dialogue
    hh = {"chosen": "\n\nHuman: Name a pet.\n\nAssistant: A cat.", "rejected": "\n\nHuman: Name a pet.\n\nAssistant: No."}
    path = _write(tmp_path, [hh] * 2, "hh.jsonl")
    cfg, tok = _tokenizer(compose, "stage=dpo", f"data.path={path}", "data.format=prompt_completion", "data.val_size=0")
    ex = _build(cfg, tok).train[0]
    assert tok.decode(ex["prompt_ids"], skip_special_tokens=True) == "\n\nHuman: Name a pet.\n\nAssistant:"
    assert ex["chosen_ids"] == tok(" A cat.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ex["rejected_ids"] == tok(" No.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    from ftsweep.data.preference import implicit_prompt

    assert implicit_prompt("a b", "a b c") == {"prompt": "a b", "chosen": "", "rejected": " c"}  # an empty answer: dropped
    # answers that begin alike: the prompt ends at the last "Assistant:", not inside the answers (trl's cut:
    # prompt "... Assistant: I can", answers " help." / "not.")
    hh = ("\n\nHuman: Can you help?\n\nAssistant: I can help.", "\n\nHuman: Can you help?\n\nAssistant: I cannot.")
    assert implicit_prompt(*hh) == {"prompt": "\n\nHuman: Can you help?\n\nAssistant:", "chosen": " I can help.",
                                    "rejected": " I cannot."}
    # no turn marker: never inside a word; a script without spaces is cut where the texts differ
    assert implicit_prompt("Q: 2+2? A: 4 is it", "Q: 2+2? A: 42") == {"prompt": "Q: 2+2? A:", "chosen": " 4 is it",
                                                                       "rejected": " 42"}
    assert implicit_prompt("问：好吗？答：好的", "问：好吗？答：不好") == {"prompt": "问：好吗？答：", "chosen": "好的", "rejected": "不好"}
    # whole conversations beside a plain-text prompt: the chat layout reads them
    uf = {"prompt": "Hi", "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
          "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go"}]}
    cfg, tok = _tokenizer(compose, "stage=dpo", f"data.path={_write(tmp_path, [uf], 'uf.jsonl')}",
                          "data.format=prompt_completion", "data.val_size=0")
    with pytest.raises(DataError, match=r"uf.jsonl line 1: field 'chosen': a list of messages after a plain-text "
                                        r"prompt: read this layout with data.format=chat$"):
        _build(cfg, tok)


def test_a_preference_answer_that_already_ends_with_eos_gets_no_second_one(compose, tmp_path):
    # before: "A cat.<|end_of_text|>" (eos written in the data) became the answer tokens + eos + eos, as in SFT rows
    row = {"prompt": "Name a pet.", "chosen": " A cat.<|end_of_text|>", "rejected": " No."}
    path = _write(tmp_path, [row] * 2, "eos.jsonl")
    cfg, tok = _tokenizer(compose, "stage=dpo", f"data.path={path}", "data.format=prompt_completion", "data.val_size=0")
    ex = _build(cfg, tok).train[0]
    assert ex["chosen_ids"] == tok(" A cat.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert ex["rejected_ids"] == tok(" No.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def test_kto_labels_written_as_text_or_0_1_as_csv_and_spreadsheets_hold_them(compose, tmp_path):
    path = tmp_path / "kto.csv"
    path.write_text("prompt,completion,label\nQ1,good,true\nQ2,bad,False\nQ3,good,1\nQ4,bad,0\n")
    cfg, tok = _tokenizer(compose, "stage=kto", f"data.path={path}", "data.format=prompt_completion", "data.val_size=0",
                          "data.shuffle=false")
    labels = {tok.decode(ex["prompt_ids"], skip_special_tokens=True): ex["label"] for ex in _build(cfg, tok, paired=False).train}
    assert labels == {"Q1": True, "Q2": False, "Q3": True, "Q4": False}
    rows = [{"prompt": f"Q{i}", "completion": "a", "label": v} for i, v in enumerate((1, 0, True))]
    cfg, tok = _tokenizer(compose, "stage=kto", f"data.path={_write(tmp_path, rows)}", "data.format=prompt_completion",
                          "data.val_size=0", "data.shuffle=false")
    labels = {tok.decode(ex["prompt_ids"], skip_special_tokens=True): ex["label"] for ex in _build(cfg, tok, paired=False).train}
    assert labels == {"Q0": True, "Q1": False, "Q2": True}


def test_kto_rows_plain_conversational_and_unpaired_pairs(compose, tmp_path):
    cfg, tok = _tokenizer(compose, "stage=kto", "data=proxy_kto", "data.max_rows=40", "data.val_size=0",
                          "data.shuffle=false")
    ds = _build(cfg, tok, paired=False).train
    assert len(ds) == 40 and sum(ds["label"]) == 20
    # A pair file under stage=kto is unpaired as trl does: chosen -> true, rejected -> false.
    cfg, tok = _tokenizer(compose, "stage=kto", "data=proxy_pairs", "data.max_rows=30", "data.val_size=0")
    ds = _build(cfg, tok, paired=False).train
    assert len(ds) == 60 and sum(ds["label"]) == 30
    # messages + a boolean tag: the last assistant turn is the completion
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "label": False}
    path = _write(tmp_path, [row, {**row, "label": True}])
    cfg, tok = _tokenizer(compose, "stage=kto", f"data.path={path}", "data.format=chat", "data.val_size=0")
    ds = _build(cfg, tok, paired=False).train
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    assert sorted(ds["label"]) == [False, True]
    assert ds[0]["completion_ids"] == tok("hello", add_special_tokens=False)["input_ids"] + [eot]
    # the same as ShareGPT turns (LLaMA-Factory's kto_en_demo through dataset_info.json): the same examples
    sharegpt = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}], "label": v}
                for v in (False, True)]
    cfg, tok = _tokenizer(compose, "stage=kto", f"data.path={_write(tmp_path, sharegpt, 's.jsonl')}",
                          "data.format=sharegpt", "data.val_size=0")
    same = _build(cfg, tok, paired=False).train
    assert [same[i] for i in range(2)] == [ds[i] for i in range(2)]


@pytest.mark.parametrize("label, text", [
    (True, "every KTO training row is labelled true (desirable) (4 rows): the undesirable term of the loss is empty; "
           "add rows of the other label (a DPO file's pairs give both), or train these answers with stage=sft"),
    ("0", "every KTO training row is labelled false (undesirable) (4 rows): the desirable term of the loss is empty"),
])
def test_kto_rows_of_one_label_only_train_with_a_warning(compose, tmp_path, monkeypatch, capsys, label, text):
    """trl's KTOTrainer trains on with one label only (and ftsweep's pre-tokenized path skipped its weight warning):
    the run says in one line that one term of the loss is empty, and trains."""
    rows = [{"prompt": f"Q{i}", "completion": "a", "label": label} for i in range(4)]
    path = _write(tmp_path, rows)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "model=tiny", "logger=none", "stage=kto", "data=custom_json", f"data.path={path}",
                 "data.val_size=0", "objective.metric=train_loss", "trainer.max_steps=2", "hydra.run.dir=run"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "every KTO training row" in line]
    assert warned == [f"ftsweep: warning: {path}: {text}"] if label is True else \
        warned and warned[0].startswith(f"ftsweep: warning: {path}: {text}")
    assert (tmp_path / "run" / "metrics.json").exists()


def test_dropped_and_truncated_pairs_are_counted(compose, tmp_path):
    rows = [{"prompt": "a b", "chosen": "c", "rejected": "d"},
            {"prompt": "a b", "chosen": "same", "rejected": "same"},
            {"prompt": "a b", "chosen": "  ", "rejected": "d"},
            {"prompt": "x " * 40, "chosen": "c", "rejected": "d"},
            {"prompt": "a", "chosen": "long " * 30, "rejected": "d"}]
    path = _write(tmp_path, rows)
    cfg, tok = _tokenizer(compose, "stage=dpo", f"data.path={path}", "data.format=prompt_completion",
                          "data.val_size=0", "data.cutoff_len=24", "data.shuffle=false", "stage.max_prompt_length=16")
    bundle = _build(cfg, tok)
    s = bundle.stats
    assert (s["n_train"], s["n_dropped_identical"], s["n_dropped_empty_answer"], s["n_dropped_prompt_too_long"],
            s["n_truncated"]) == (2, 1, 1, 1, 1)
    assert max(len(e["prompt_ids"]) + len(e["chosen_ids"]) for e in bundle.train) == 24


def test_whole_text_pairs_that_are_identical_or_have_an_empty_answer_are_dropped_and_counted(compose, tmp_path):
    # Anthropic HH: the answers are what follows the common prompt, so these are dropped as explicit pairs are
    def hh(q, chosen, rejected):
        return {"chosen": f"\n\nHuman: {q}?\n\nAssistant:{chosen}", "rejected": f"\n\nHuman: {q}?\n\nAssistant:{rejected}"}

    rows = [hh("Q1", " Same.", " Same."), hh("Q2", " A.", ""), hh("Q3", " A.", " "), hh("Q4", " Yes indeed.", " Yes"),
            hh("Q5", " Good.", " Bad."), hh("Q6", " Fine.", " Poor.")]
    path = _write(tmp_path, rows, "hh.jsonl")
    # Q4 is a pair ("Yes" vs "Yes indeed."): its answers begin after "Assistant:" (trl's cut left "" as rejected)
    for stage, counts in (("dpo", (3, 1, 2, 0)), ("kto", (6, 0, 3, 0))):
        cfg, tok = _tokenizer(compose, f"stage={stage}", f"data.path={path}", "data.format=prompt_completion",
                              "data.val_size=0", "data.bad_rows=skip")
        s = _build(cfg, tok, paired=stage == "dpo").stats
        assert (s["n_train"], s["n_dropped_identical"], s["n_dropped_empty_answer"], s["n_skipped_bad"]) == counts, stage


def test_every_validation_pair_dropped_is_refused_before_training(compose, tmp_path, monkeypatch, capsys):
    train = _write(tmp_path, [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(4)], "train.jsonl")
    long = "word " * 80  # over data.cutoff_len - 1 tokens: every validation row is dropped
    pairs = _write(tmp_path, [{"prompt": long, "chosen": "a", "rejected": "b"}] * 4, "val.jsonl")
    kto = _write(tmp_path, [{"prompt": long, "completion": "a", "label": i % 2 == 0} for i in range(4)], "val_kto.jsonl")
    for stage, val, what in (("dpo", pairs, "pairs"), ("kto", kto, "rows")):
        cfg, tok = _tokenizer(compose, f"stage={stage}", f"data.path={train}", f"data.validation_path={val}",
                              "data.format=prompt_completion", "data.cutoff_len=32")
        with pytest.raises(DataError) as err:
            _build(cfg, tok, paired=stage == "dpo")
        assert str(err.value).startswith(f"{val}: no validation {what} left: all 4 were dropped (a prompt longer than "
                                         "stage.max_prompt_length = 31 tokens"), str(err.value)
    # ftsweep inspect --split eval says the same (it said: no eval split, data.val_size=0 and no validation_path)
    monkeypatch.chdir(tmp_path)
    code = main(["inspect", "model=tiny", "stage=dpo", "data.path=train.jsonl", "data.validation_path=val.jsonl",
                 "data.format=prompt_completion", "data.cutoff_len=32", "--split", "eval", "--dropped"])
    captured = capsys.readouterr()
    assert code == 2 and "val.jsonl line 4: prompt of " in captured.out
    assert captured.err.splitlines()[-1].startswith("ftsweep: error: val.jsonl: no validation pairs left: all 4 were dropped")
    # GRPO: every validation prompt skipped as a bad row (a prompt-only row where exact_match needs the answer)
    qa = _write(tmp_path, [{"instruction": f"q{i}", "input": "", "output": "a"} for i in range(4)], "qa.jsonl")
    prompts = _write(tmp_path, [{"instruction": f"q{i}", "input": ""} for i in range(4)], "prompts.jsonl")
    cfg, tok = _tokenizer(compose, "stage=grpo", f"data.path={qa}", f"data.validation_path={prompts}",
                          "data.format=alpaca", "data.bad_rows=skip")
    from ftsweep.data.preference import build_prompt_datasets

    with pytest.raises(DataError, match=r"prompts.jsonl: no validation prompts left: all 4 were skipped as bad rows$"):
        build_prompt_datasets(cfg, tok, ("exact_match",))


def test_inspect_dropped_lists_the_dropped_pairs(tmp_path, monkeypatch, capsys):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": "same", "rejected": "same"},
            {"prompt": "p", "chosen": " ", "rejected": "b"}]
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, rows)
    code = main(["inspect", "model=tiny", "stage=dpo", "data.path=p.jsonl", "data.format=prompt_completion",
                 "data.val_size=0", "data.shuffle=false", "objective.metric=train_loss", "--rows", "0", "--dropped"])
    out = capsys.readouterr().out
    assert code == 0 and out.split("dropped rows (2, train and eval):\n", 1)[1].splitlines() == [
        "  p.jsonl line 2: chosen identical to rejected", "  p.jsonl line 3: empty answer"], out


@pytest.mark.parametrize(("rows", "fmt", "stage", "text"), [
    ([{"instruction": "i", "input": "", "chosen": "a"}], "alpaca", "dpo", "line 1: field 'rejected': missing"),
    # a null answer is there, null: not 'missing' with a mapping to set for a column the row has
    ([{"prompt": "p", "chosen": "a", "rejected": None}], "prompt_completion", "dpo",
     "line 1: field 'rejected': null (a text is needed here)"),
    ([{"instruction": "i", "input": "", "chosen": None, "rejected": "b"}], "alpaca", "dpo",
     "line 1: field 'chosen': null (a text is needed here)"),
    ([{"prompt": "p", "chosen": "a", "rejected": "a"}] * 3, "prompt_completion", "dpo",
     "chosen is identical to rejected in every row (3)"),
    ([{"prompt": "p", "completion": "a", "label": "yes"}], "prompt_completion", "kto",
     "line 1: field 'label': must be true or false, got 'yes'"),
    ([{"prompt": "p", "completion": "a"}], "prompt_completion", "kto", "line 1: field 'label': missing"),
    # a KTO row in Alpaca layout has a completion column: no format guess for its missing label
    ([{"instruction": "i", "input": "", "completion": "a"}], "alpaca", "kto",
     ("line 1: field 'label': missing (the row has columns: instruction, input, completion); if one of them is the "
      "label, map it: data.columns.label=<column>")),
    # checked against the row as read: its own answer column and its own columns, not the SFT row built from it
    ([{"instruction": "i", "input": "", "chosen": True, "rejected": "b"}], "alpaca", "dpo",
     "line 1: field 'chosen': expected a string, got bool"),
    ([{"prompt": "p", "chosen": "a", "rejected": "b"}], "alpaca", "dpo",
     ("line 1: field 'instruction': missing (the row has columns: prompt, chosen, rejected; they look like "
      "data.format=prompt_completion)")),
    # UltraFeedback-style: chosen is the whole conversation, rejected only the reply
    ([{"prompt": "Hi", "chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
       "rejected": [{"role": "assistant", "content": "Go"}]}], "chat", "dpo",
     ("line 1: field 'rejected': chosen is the whole conversation (it repeats the prompt's messages) but rejected is "
      "not: write both as whole conversations or both as the reply alone")),
    # rows are encoded shuffled and split, but the error names the first bad row of the file
    ([{"instruction": f"i{n}", "input": "", "chosen": "a", "rejected": True if n in (6, 17) else "b"} for n in range(30)],
     "alpaca", "dpo", "line 7: field 'rejected': expected a string, got bool"),
])
def test_bad_preference_rows_name_file_row_and_field(compose, tmp_path, rows, fmt, stage, text):
    path = _write(tmp_path, rows)
    cfg, tok = _tokenizer(compose, f"stage={stage}", f"data.path={path}", f"data.format={fmt}",
                          "data.val_size=0" if len(rows) < 10 else "data.val_size=0.2")
    with pytest.raises(DataError) as err:
        _build(cfg, tok, paired=stage == "dpo")
    assert text in str(err.value) and "p.jsonl" in str(err.value)


# ----------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def sft_run(cache_dir, tmp_path_factory):
    """A short SFT run on the proxy task, with its .hydra/config.yaml as ftsweep train writes it."""
    from omegaconf import OmegaConf

    from ftsweep.config.compose import compose
    from ftsweep.train import run

    cfg = compose([f"cache_dir={cache_dir}", *FAST, "data=proxy_tasks", "data.max_rows=120", "data.val_size=16",
                   "data.cutoff_len=64", "trainer.max_steps=8", "trainer.eval_steps=8", "optimizer.lr=3e-3"])
    run_dir = tmp_path_factory.mktemp("sft")
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run_dir, run(cfg, run_dir)


@pytest.fixture(scope="module")
def dpo_run(cache_dir, sft_run, tmp_path_factory):
    """DPO from the SFT run on 48 bundled pairs, evaluated on the same pairs (the tiny model learns them but
    does not generalise to held-out pairs in a few steps: measured 0.45 / 0.375 held-out accuracy)."""
    from ftsweep.config.compose import compose
    from ftsweep.train import run

    run_dir = tmp_path_factory.mktemp("dpo")
    rows = Path("data/proxy_pairs.jsonl").read_text().splitlines()[:48]
    (run_dir / "pairs.jsonl").write_text("\n".join(rows) + "\n")
    pairs = str(run_dir / "pairs.jsonl")
    cfg = compose([f"cache_dir={cache_dir}", *FAST, "stage=dpo", "data=proxy_pairs", f"data.path={pairs}",
                   f"data.validation_path={pairs}", "data.cutoff_len=64", f"init_from={sft_run[0]}",
                   "trainer.max_steps=24", "trainer.eval_steps=12", "optimizer.lr=1e-2", "stage.beta=0.5",
                   "scheduler=constant_with_warmup"])
    return run_dir, run(cfg, run_dir / "run")


def test_dpo_reference_equals_policy_at_step_zero(dpo_run):
    m = dpo_run[1]
    # Step 0: the new adapter is zero and the reference is the same weights with it off: margins are exactly
    # zero, accuracy is 0 (no pair has a positive margin) and the sigmoid loss is exactly ln 2.
    assert m["initial_eval_rewards/margins"] == 0.0
    assert m["initial_eval_rewards/accuracies"] == 0.0
    assert m["initial_eval_loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_dpo_raises_reward_accuracy_and_puts_chosen_above_rejected(dpo_run, sft_run):
    m = dpo_run[1]
    # exp(eval_loss) is a perplexity of SFT's language-model loss only
    assert "eval_perplexity" not in m and sft_run[1]["eval_perplexity"] == pytest.approx(math.exp(sft_run[1]["eval_loss"]))
    assert m["status"] == "complete" and m["data_n_eval"] == 48
    assert m["eval_rewards/accuracies"] > 0.75  # chance is 0.5
    assert m["eval_rewards/margins"] > 0
    assert m["eval_logps/chosen"] > m["eval_logps/rejected"]
    assert m["eval_loss"] < math.log(2)
    assert (dpo_run[0] / "run" / "adapter" / "adapter_config.json").is_file()


def test_init_from_loads_exactly_the_sft_adapter(cache_dir, sft_run):
    import torch
    from peft import PeftModel

    from ftsweep.config.compose import compose
    from ftsweep.model import load_model, load_tokenizer
    from ftsweep.stages.init_from import merge_init_adapter

    cfg = compose([f"cache_dir={cache_dir}", *FAST, "stage=dpo", *PAIRS, f"init_from={sft_run[0]}"])
    tok = load_tokenizer(cfg)
    merged = merge_init_adapter(cfg, load_model(cfg, tok)).eval()
    sft = PeftModel.from_pretrained(load_model(cfg, tok), str(sft_run[0] / "adapter")).eval()
    base = load_model(cfg, tok).eval()
    ids = torch.tensor([tok("### Instruction:\nGive the last word.\n### Input:\nred cat\n### Response:\ncat")["input_ids"]])
    with torch.no_grad():
        a, b, c = merged(ids).logits, sft(ids).logits, base(ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)  # the SFT adapter did change the model


def test_init_from_refuses_the_adapter_of_a_run_that_did_not_complete(cache_dir, sft_run, tmp_path, monkeypatch,
                                                                       capsys):
    """``init_from=<a failed, pruned or killed run>`` trained on its adapter/ without a word (an earlier run's, or
    half-written), where merge / generate / publish refuse it: now one line, exit 2, naming the folder and why,
    nothing written; ``init_from_allow_failed=true`` uses it anyway with one warning line."""
    import shutil

    from ftsweep.config.compose import compose
    from ftsweep.model import load_model, load_tokenizer
    from ftsweep.stages.init_from import init_from_problem, merge_init_adapter

    failed = tmp_path / "failed"
    shutil.copytree(sft_run[0], failed, ignore=shutil.ignore_patterns("checkpoints"))
    (failed / "metrics.json").unlink()
    (failed / "failure.json").write_text(json.dumps({"status": "failed", "reason": "killed at step 3",
                                                     "error_type": "Killed", "phase": "run"}))
    monkeypatch.chdir(tmp_path)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    argv = ["train", "model=tiny", "logger=none", f"cache_dir={cache_dir}", "stage=dpo", *PAIRS, "init_from=failed"]
    for extra in ([], ["-m", "hydra/sweeper=ftsweep_optuna", "optimizer.lr=1e-3,2e-3"]):
        assert main([*argv, *extra]) == 2, extra
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert err == [(f"ftsweep: error: init_from: {failed}: the run failed (killed at step 3; failure.json): its "
                        "adapter/ may be an earlier run's or unfinished; give a completed run, or pass "
                        "init_from_allow_failed=true to use it anyway")], err
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    (failed / "failure.json").unlink()
    (failed / "metrics.json").write_text(json.dumps({"status": "pruned"}))
    cfg = compose([f"cache_dir={cache_dir}", *FAST, "stage=dpo", *PAIRS, f"init_from={failed}"])
    assert "the run ended pruned (metrics.json)" in init_from_problem(cfg)
    cfg = compose([f"cache_dir={cache_dir}", *FAST, "stage=dpo", *PAIRS, f"init_from={failed}",
                   "init_from_allow_failed=true"])
    assert init_from_problem(cfg) is None
    capsys.readouterr()
    merge_init_adapter(cfg, load_model(cfg, load_tokenizer(cfg)))
    assert (f"ftsweep: warning: {failed}: the run ended pruned (metrics.json): using its adapter/ anyway "
            "(init_from_allow_failed=true)") in capsys.readouterr().err
    cfg = compose([f"cache_dir={cache_dir}", *FAST, "stage=dpo", *PAIRS, f"init_from={sft_run[0]}"])
    assert init_from_problem(cfg) is None  # a completed run, as before


def test_a_warm_worker_starts_from_init_from_as_a_cold_run_does(cache_dir, sft_run, tmp_path):
    # a warm sweep worker keeps the base model between trials: it must be the SFT run's merged weights too
    from ftsweep.config.compose import compose
    from ftsweep.sweeper.warm import WarmComponents
    from ftsweep.train import run

    cfg = compose([f"cache_dir={cache_dir}", *FAST, "stage=dpo", *PAIRS, f"init_from={sft_run[0]}",
                   "trainer.max_steps=2", "trainer.eval_steps=2", "optimizer.lr=1e-2"])
    keys = ("initial_eval_logps/chosen", "initial_eval_logps/rejected", "eval_loss", "train_loss")
    cold = run(cfg, tmp_path / "cold")
    parts = WarmComponents()
    warm = [run(cfg, tmp_path / f"warm{i}", parts=parts) for i in range(2)]
    assert parts.reused[:3] == ["tokenizer", "data", "base model"]
    assert [{k: m[k] for k in keys} for m in warm] == [{k: cold[k] for k in keys}] * 2


def test_merge_and_generate_of_an_init_from_run_start_from_the_sft_model(cache_dir, sft_run, tmp_path, monkeypatch):
    # before: merge and generate loaded the raw base plus the DPO adapter, dropping the SFT adapter it was trained on
    import torch
    from omegaconf import OmegaConf
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ftsweep.config.compose import compose
    from ftsweep.generate import load_models, load_tokenizer
    from ftsweep.merge import merge_run
    from ftsweep.model import load_model
    from ftsweep.rundir import load_config
    from ftsweep.stages.init_from import init_adapters
    from ftsweep.train import run

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sft").symlink_to(sft_run[0])  # init_from given relative to where the run started
    cfg = compose([f"cache_dir={cache_dir}", *FAST, "stage=dpo", *PAIRS, "init_from=sft", "trainer.max_steps=2",
                   "trainer.eval_steps=2", "optimizer.lr=1e-2"])
    dpo = tmp_path / "dpo"
    (dpo / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, dpo / ".hydra" / "config.yaml")
    OmegaConf.save({"hydra": {"runtime": {"cwd": str(tmp_path)}}}, dpo / ".hydra" / "hydra.yaml")
    assert run(cfg, dpo)["status"] == "complete"
    # a run started from the DPO run stands for both adapters, the SFT one first
    assert [p.resolve() for p in init_adapters(dpo)] == [sft_run[0] / "adapter", dpo / "adapter"]

    tok = load_tokenizer(dpo)
    expected = PeftModel.from_pretrained(load_model(cfg, tok), str(sft_run[0] / "adapter")).merge_and_unload()
    expected = PeftModel.from_pretrained(expected, str(dpo / "adapter")).eval()
    ids = torch.tensor([tok("### Instruction:\nGive the last word.\n### Input:\nred cat\n### Response:\ncat")["input_ids"]])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # merge / generate from another folder find the relative init_from
    out = merge_run(dpo, out=tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    model, _ = load_models(dpo, load_config(dpo), tok, quantized=False)
    with torch.no_grad():
        want = expected(ids).logits
        assert torch.allclose(merged(ids).logits, want, atol=1e-5)
        assert torch.allclose(model(ids).logits, want, atol=1e-5)
        with model.disable_adapter():  # generate's "base" answers: the model this run started from, the SFT one
            sft = PeftModel.from_pretrained(load_model(cfg, tok), str(sft_run[0] / "adapter")).eval()
            assert torch.allclose(model(ids).logits, sft(ids).logits, atol=1e-5)
    card = (out / "README.md").read_text()
    assert "- stage: dpo" in card and f"adapters merged before this run's: `{sft_run[0] / 'adapter'}`" in card, card


def test_kto_trains(cache_dir, tmp_path):
    from ftsweep.config.compose import compose
    from ftsweep.train import run

    rows = Path("data/proxy_kto.jsonl").read_text().splitlines()[:48]
    (tmp_path / "kto.jsonl").write_text("\n".join(rows) + "\n")
    data = str(tmp_path / "kto.jsonl")
    cfg = compose([f"cache_dir={cache_dir}", *FAST, "stage=kto", "data=proxy_kto", f"data.path={data}",
                   f"data.validation_path={data}", "data.cutoff_len=64", "trainer.max_steps=12",
                   "trainer.eval_steps=12", "optimizer.lr=1e-2", "scheduler=constant_with_warmup"])
    m = run(cfg, tmp_path / "run")
    assert m["status"] == "complete" and m["train_steps"] == 12
    assert m["eval_loss"] < m["initial_eval_loss"]
    assert m["initial_eval_rewards/chosen"] == 0.0  # step 0: reference == policy
    assert "eval_perplexity" not in m  # not a language-model loss


def test_memory_model_counts_both_answers_and_the_reference_pass(compose):
    from ftsweep.memory import estimate
    from ftsweep.model import load_tokenizer  # noqa: F401  (shapes come from the shipped 1B config, offline)

    common = ["model=llama3_2_1b", "quantization=nf4", "data.cutoff_len=512"]
    sft = estimate(compose(*common, "data=proxy_tasks"), on_cuda=True)
    dpo = estimate(compose(*common, "stage=dpo", "data=proxy_pairs"), on_cuda=True)
    kto = estimate(compose(*common, "stage=kto", "data=proxy_kto"), on_cuda=True)
    assert sft["reference_mib"] == 0 and dpo["reference_mib"] > 0 and kto["reference_mib"] > 0
    assert dpo["activations_mib"] == pytest.approx(2 * sft["activations_mib"])  # chosen + rejected rows
    assert kto["activations_mib"] == pytest.approx(sft["activations_mib"])
    assert dpo["weights_mib"] == sft["weights_mib"] and dpo["total_mib"] > kto["total_mib"] > sft["total_mib"]


@pytest.mark.slow
def test_four_trial_dpo_sweep_from_sft_prunes_and_reports(cache_dir, sft_run, tmp_path):
    import sys

    from sweep_helpers import load, run

    sd = tmp_path / "sweeps" / "dpo"
    args = [sys.executable, "-m", "ftsweep", "train", "-m", "sweep=dpo_beta_lr", f"init_from={sft_run[0]}",
            "logger=none", "data.max_rows=160", "data.val_size=16", "trainer.max_steps=8", "trainer.eval_steps=4",
            "hydra.sweeper.n_trials=4", "hydra.sweeper.n_workers=2", "hydra.sweeper.pruner.n_startup_trials=1",
            "hydra.sweeper.pruner.n_warmup_steps=0", f"hydra.sweep.dir={sd}", "hydra.sweeper.study_name=dpo",
            "hydra.sweeper.progress=plain"]
    r = run(args, tmp_path, timeout=900, fake=False)
    assert r.returncode == 0, r.stderr[-3000:]
    trials = load(sd, name="dpo").trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    for t in trials:  # the objective (reward accuracy) was reported at every evaluation, for the pruner
        assert set(t.intermediate_values) <= {0, 4, 8} and 4 in t.intermediate_values
        assert set(t.params) == {"stage.beta", "optimizer.lr"}
        assert all(0 <= v <= 1 for v in t.intermediate_values.values())  # a share of pairs, not a loss
    assert load(sd, name="dpo").direction.name == "MAXIMIZE"  # before: minimize the DPO loss, which beta scales
    summary = json.loads((sd / "summary.json").read_text())
    assert summary["n_trials"] == 4 and (sd / "report.md").is_file() and (sd / "best.yaml").is_file()
    assert "stage.beta" in (sd / "best.yaml").read_text()


def test_a_sweep_of_beta_ranked_on_a_loss_that_beta_scales_is_refused(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "ftsweep", "train", "-m", "sweep=dpo_beta_lr", "objective.metric=eval_loss",
                        f"hydra.sweep.dir={tmp_path / 's'}", "logger=none"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2 and not (tmp_path / "s").exists(), r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == (
        "ftsweep: error: objective.metric: eval_loss changes scale with stage.beta in a dpo run, so trials that search "
        "stage.beta are not comparable on it; rank them on objective.metric=eval_rewards/accuracies (the share of "
        "pairs ranked right, which beta does not scale)")


# --------------------------------------------------------------------------------------------- GRPO
def test_grpo_rewards_from_config():
    from omegaconf import OmegaConf

    from ftsweep.config import ConfigError
    from ftsweep.config.stage import GrpoStage
    from ftsweep.stages.rewards import build_rewards

    def specs(*items):
        return OmegaConf.merge(OmegaConf.structured(GrpoStage), {"rewards": list(items)}).rewards

    funcs, weights = build_rewards(specs({"name": "exact_match", "weight": 2.0},
                                         {"name": "regex", "pattern": "[a-z]+( [a-z]+)*"},
                                         {"name": "length_penalty", "target": 2},
                                         {"name": "function", "function": "stage_rewards:first_word_is_answer"}))
    assert weights == [2.0, 1.0, 1.0, 1.0]
    completions, answers = ["  Book  Fish ", "fish book", "x1"], ["book fish"] * 3
    assert funcs[0](None, completions, answer=answers) == [1.0, 0.0, 0.0]  # case and spaces normalised
    assert funcs[1](None, completions) == [0.0, 1.0, 0.0]
    assert funcs[2](None, completions, completion_ids=[[1, 2], [1, 2, 3], [1, 2, 3, 4]]) == [0.0, -0.5, -1.0]
    assert funcs[3](None, completions, answer=answers) == [0.0, 0.0, 0.0]  # "Book" != "book": user's own rule
    f1 = build_rewards(specs({"name": "token_f1"}))[0][0]
    # word-level F1 (SQuAD's partial credit): order does not count, repeated words count once per match
    assert f1(None, ["Fish  BOOK", "book", "book book fish", "dog", ""], answer=["book fish"] * 5) == [
        1.0, pytest.approx(2 / 3), pytest.approx(0.8), 0.0, 0.0]
    assert f1(None, [""], answer=[""]) == [1.0]
    wrong = build_rewards(specs({"name": "function", "function": "stage_rewards:one_too_few"}))[0][0]
    with pytest.raises(ConfigError, match="stage.rewards.0.function: returned 2 rewards for 3 completions"):
        wrong(None, completions)
    # as trl takes them: a numpy array, a tuple with None for a completion the reward does not score
    numpy = build_rewards(specs({"name": "function", "function": "stage_rewards:as_numpy"}))[0][0]
    assert numpy(None, completions) == [13.0, 9.0, 2.0]
    assert build_rewards(specs({"name": "function", "function": "stage_rewards:with_none"}))[0][0](
        None, completions) == [1.0, 1.0, None]
    text = build_rewards(specs({"name": "function", "function": "stage_rewards:as_text"}))[0][0]
    with pytest.raises(ConfigError, match=r"stage.rewards.0.function: returned 'high' as a reward \(a number or None"):
        text(None, completions)


def test_a_function_reward_is_imported_from_the_working_directory_as_objective_function_is(tmp_path, monkeypatch):
    import sys

    from omegaconf import OmegaConf

    from ftsweep.config.objective import load_function
    from ftsweep.config.stage import GrpoStage
    from ftsweep.stages.rewards import build_rewards

    (tmp_path / "my_rewards_cwd.py").write_text(
        "def gsm_reward(prompts, completions, answer=None, **kw):\n    return [float(c == a) for c, a in zip(completions, answer)]\n"
        "def em(prompt, prediction, reference, row):\n    return float(prediction == reference)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    spec = OmegaConf.merge(OmegaConf.structured(GrpoStage),
                           {"rewards": [{"name": "function", "function": "my_rewards_cwd:gsm_reward"}]}).rewards
    reward = build_rewards(spec)[0][0]
    assert reward(None, ["4", "5"], answer=["4", "4"]) == [1.0, 0.0]
    assert load_function("my_rewards_cwd:em")(prompt="", prediction="a", reference="a", row={}) == 1.0


@pytest.mark.parametrize(("argv", "names"), [
    (["stage.rewards=[]"], "stage.rewards: stage=grpo needs at least one reward"),
    (["stage.rewards=[{name: bleu}]"], "stage.rewards.0.name: unknown reward 'bleu'"),
    (["stage.rewards=[{name: function, function: 'no_such_pkg.mod:f'}]"], "stage.rewards.0.function: cannot import"),
    (["stage.rewards=[{name: regex}]"], "stage.rewards.0.pattern"),
    (["stage.num_generations=3"], "trainer.per_device_train_batch_size: must be a multiple"),
])
def test_bad_grpo_input_is_one_line_exit_2(tmp_path, monkeypatch, capsys, argv, names):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "logger=none", "stage=grpo", "data=proxy_tasks", *argv])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and names in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_grpo_prompts_are_the_sft_prompts_and_the_answer_is_the_reference(compose):
    from ftsweep.data.preference import build_prompt_datasets

    cfg, tok = _tokenizer(compose, "stage=grpo", "data=proxy_tasks", "data.max_rows=8", "data.val_size=0",
                          "data.shuffle=false")
    ds = build_prompt_datasets(cfg, tok).train
    rows = [json.loads(x) for x in Path("data/proxy_tasks.jsonl").read_text().splitlines()[:8]]
    assert ds[0]["prompt"] == f"### Instruction:\n{rows[0]['instruction']}\n### Input:\n{rows[0]['input']}\n### Response:\n"
    assert ds["answer"] == [r["output"] for r in rows]
    # trl tokenizes the prompt with the tokenizer's special tokens: exactly the SFT prompt ids (bos first)
    assert tok(ds[0]["prompt"])["input_ids"][0] == tok.bos_token_id


@pytest.mark.parametrize("fmt, full, prompt_only", [
    ("prompt_completion", {"prompt": "Name a pet.", "completion": "A cat."}, {"prompt": "Name a pet."}),
    ("prompt_completion", {"prompt": [{"role": "user", "content": "Name a pet."}], "completion": "A cat."},
     {"prompt": [{"role": "user", "content": "Name a pet."}]}),  # trl's conversational prompt-only layout
    ("alpaca", {"instruction": "Name a pet.", "output": "A cat."}, {"instruction": "Name a pet."}),
    # LLaMA-Factory's Alpaca layout rendered with the chat template
    ("chat", {"instruction": "Name a pet.", "output": "A cat."}, {"instruction": "Name a pet."}),
    ("chat", {"messages": [{"role": "user", "content": "Name a pet."}, {"role": "assistant", "content": "A cat."}]},
     {"messages": [{"role": "user", "content": "Name a pet."}]}),
    ("sharegpt", {"conversations": [{"from": "human", "value": "Name a pet."}, {"from": "gpt", "value": "A cat."}]},
     {"conversations": [{"from": "human", "value": "Name a pet."}]}),
])
def test_grpo_reads_prompt_only_rows_when_no_reward_needs_an_answer(compose, tmp_path, fmt, full, prompt_only):
    from ftsweep.stages import grpo

    def build(rows, *overrides):
        path = _write(tmp_path, rows, f"{fmt}.jsonl")
        cfg, tok = _tokenizer(compose, "stage=grpo", f"data.path={path}", f"data.format={fmt}", "data.val_size=0",
                              "data.shuffle=false", *overrides)
        return grpo.datasets(cfg, tok).train, path

    length_only = "stage.rewards=[{name: length_penalty, target: 8}]"
    with_answer, _ = build([full], length_only)
    only, _ = build([prompt_only], length_only)
    assert only["prompt"] == with_answer["prompt"] and with_answer["answer"] == ["A cat."] and only["answer"] == [None]
    # an answer column beside the prompt (trl's / GSM8K's layout: messages + answer) is the row's answer
    answered, _ = build([{**prompt_only, "answer": " A cat."}, {**prompt_only, "answer": 7}])
    assert answered["prompt"][0] == with_answer["prompt"][0] and answered["answer"] == ["A cat.", "7"]
    # the default reward (exact_match) compares with the answer: the first prompt-only row of the file is named
    with pytest.raises(DataError) as err:
        build([full, prompt_only, prompt_only])
    path = tmp_path / f"{fmt}.jsonl"
    field = {"prompt_completion": "completion", "alpaca": "output"}.get(fmt, "conversations" if fmt == "sharegpt" else "messages")
    field = "output" if "instruction" in full else field
    assert str(err.value) == (f"{path} line 2: field '{field}': a prompt without an answer: the exact_match reward "
                              "compares each completion with the row's answer (an 'answer' column beside the prompt "
                              "is read as it; rewards that need none: regex, length_penalty, function)")


def test_inspect_shows_grpo_prompts_and_their_reference_answers(tmp_path, capsys):
    path = _write(tmp_path, [{"prompt": "Name a pet.", "completion": "A cat."}, {"prompt": "Name a color."}] * 3)
    assert main(["inspect", "stage=grpo", f"data.path={path}", "data.format=prompt_completion", "data.val_size=0",
                 "data.shuffle=false", "stage.rewards=[{name: length_penalty, target: 8}]", "model.tiny.pretrain_steps=0",
                 "--plain", "--rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "<|begin_of_text|>Name a pet.\nanswer (the rewards' reference): 'A cat.'" in out
    assert "<|begin_of_text|>Name a color.\nanswer: none (a prompt-only row)" in out
    assert "data: 6 train / 0 eval prompts, 0 dropped (prompt longer than data.cutoff_len), 0 bad rows skipped" in out


def test_grpo_trains_and_hands_each_row_answer_to_the_weighted_rewards(cache_dir, tmp_path):
    from ftsweep.config.compose import compose
    from ftsweep.train import run

    cfg = compose([f"cache_dir={cache_dir}", *FAST, "stage=grpo", "data=proxy_tasks", "data.max_rows=24",
                   "data.val_size=4", "trainer.max_steps=2", "trainer.eval_steps=2", "trainer.logging_steps=1",
                   "trainer.per_device_eval_batch_size=4", "stage.num_generations=4", "stage.max_completion_length=4",
                   "stage.rewards=[{name: function, function: 'stage_rewards:answer_is_the_row_answer', weight: 0.5},"
                   "{name: exact_match, weight: 1.0}]"])
    m = run(cfg, tmp_path)
    assert m["status"] == "complete" and m["train_steps"] == 2 and cfg.objective.metric == "eval_reward"
    # every completion got the row's answer (the user reward is 1.0 for all) and the weights apply: 0.5 x 1.0
    # plus 1.0 x the exact-match mean
    evals = [h for h in json.loads((tmp_path / "log_history.json").read_text()) if "eval_reward" in h]
    assert evals and all(h["eval_rewards/answer_is_the_row_answer/mean"] == 1.0 for h in evals)
    for h in evals:
        assert h["eval_reward"] == pytest.approx(0.5 + h["eval_rewards/exact_match/mean"])
    assert m["objective"] == m["eval_reward"]


def test_grpo_rewards_get_every_column_of_the_row_as_trl_hands_them(cache_dir, tmp_path):
    from ftsweep.config.compose import compose
    from ftsweep.data.preference import build_prompt_datasets
    from ftsweep.model import load_tokenizer
    from ftsweep.train import run

    rows = [{"instruction": f"Add one to {i}.", "input": "", "output": str(i + 1), "solution": f"s{i + 1}",
             "difficulty": i % 3} for i in range(12)]
    path = _write(tmp_path, rows, "qa.jsonl")
    cfg = compose([f"cache_dir={cache_dir}", *FAST, "stage=grpo", f"data.path={path}", "data.format=alpaca",
                   "data.val_size=4", "trainer.max_steps=1", "trainer.eval_steps=1", "trainer.logging_steps=1",
                   "trainer.per_device_train_batch_size=4", "trainer.per_device_eval_batch_size=4",
                   "stage.num_generations=4", "stage.max_completion_length=2",
                   "stage.rewards=[{name: function, function: 'stage_rewards:solution_reward'}]"])
    m = run(cfg, tmp_path / "run")
    evals = [h for h in json.loads((tmp_path / "run" / "log_history.json").read_text()) if "eval_reward" in h]
    assert m["status"] == "complete" and evals and all(h["eval_reward"] == 1.0 for h in evals)
    # a column must hold one type (one list per column): the row that differs is named
    rows[5]["difficulty"] = "hard"
    cfg.data.path = _write(tmp_path, rows, "mixed.jsonl")
    cfg.data.shuffle, cfg.data.val_size = False, 0
    with pytest.raises(DataError, match=r"mixed.jsonl line 6: field 'difficulty': a str where \S*mixed.jsonl line 1 "
                                        r"has a number: trl hands each column to the rewards as one list"):
        build_prompt_datasets(cfg, load_tokenizer(cfg))


def test_grpo_rewards_get_a_renamed_column_under_the_files_own_name(compose, tmp_path):
    """trl's GRPO layout {prompt, solution} with its documented reward `f(completions, solution, **kw)`: the column
    data.format=auto (or data.columns) reads as the answer still reaches the rewards as `solution` (it was
    handed on as `completion`: the reward failed with a traceback, missing its `solution` argument)."""
    from ftsweep.data.preference import build_prompt_datasets

    turns = [{"role": "user", "content": "2+2?"}]
    path = _write(tmp_path, [{"prompt": turns, "solution": "4"}, {"prompt": turns, "solution": "5"}], "sol.jsonl")
    cfg, tok = _tokenizer(compose, "stage=grpo", "data=custom_json", f"data.path={path}", "data.val_size=0",
                          "data.shuffle=false")
    ds = build_prompt_datasets(cfg, tok, ("exact_match",)).train
    assert ds["solution"] == ["4", "5"] and ds["answer"] == ["4", "5"] and "completion" not in ds.column_names
    # a mapping by hand: the reward reads the file's `question`
    path = _write(tmp_path, [{"question": "2+2?", "reply": "4"}], "q.jsonl")
    cfg, tok = _tokenizer(compose, "stage=grpo", "data=custom_json", f"data.path={path}", "data.val_size=0",
                          "data.format=alpaca",
                          "data.columns.instruction=question", "data.columns.output=reply")
    ds = build_prompt_datasets(cfg, tok, ("exact_match",)).train
    assert ds["question"] == ["2+2?"] and ds["reply"] == ["4"] and ds["answer"] == ["4"]


@pytest.mark.parametrize("rows, text", [
    # a KTO file: the completion of a row labelled false is no reference answer (it was rewarded as one)
    ([{"prompt": "2+2?", "completion": "4", "label": True}, {"prompt": "2+2?", "completion": "5", "label": False}],
     "line 2: field 'label': false: this row's completion is an undesirable answer (a KTO row), no reference for the "
     "exact_match reward"),
    ([{"prompt": "2+2?", "completion": "4", "label": "true"}, {"prompt": "2+2?", "completion": "5", "label": "0"}],
     "line 2: field 'label': false: "),
    # a DPO pair: no one answer (was: 'a prompt without an answer', naming a 'completion' the file lacks)
    ([{"prompt": "2+2?", "chosen": "4", "rejected": "5"}],
     "line 1: field 'chosen': a preference pair has no one answer: the exact_match reward compares each completion "
     "with the row's answer; read its chosen answer as the answer (data.columns.completion=chosen "
     "data.format=prompt_completion) or use rewards that need none"),
    ([{"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}],
       "rejected": [{"role": "assistant", "content": "5"}]}],
     "line 1: field 'chosen': a preference pair has no one answer"),  # was: field 'messages': missing
    # trl's implicit prompt: nothing to generate from (was: 'prompt' missing, listing a 'completion' column)
    ([{"chosen": "Human: 2+2? Assistant: 4", "rejected": "Human: 2+2? Assistant: 5"}],
     "line 1: field 'prompt': a preference pair of two whole texts or conversations (trl's implicit prompt) holds no "
     "prompt to generate from"),
])
def test_grpo_refuses_kto_rows_and_preference_pairs_as_reference_answers(compose, tmp_path, rows, text):
    from ftsweep.data.preference import build_prompt_datasets

    path = _write(tmp_path, rows, "pref.jsonl")
    cfg, tok = _tokenizer(compose, "stage=grpo", "data=custom_json", f"data.path={path}", "data.val_size=0",
                          "data.shuffle=false")
    with pytest.raises(DataError) as err:
        build_prompt_datasets(cfg, tok, ("exact_match",))
    assert str(err.value).startswith(f"{path} {text}"), str(err.value)


def test_grpo_reads_a_pair_with_its_chosen_answer_mapped_as_the_answer(compose, tmp_path):
    from ftsweep.data.preference import build_prompt_datasets

    path = _write(tmp_path, [{"prompt": [{"role": "user", "content": "2+2?"}],
                              "chosen": [{"role": "assistant", "content": "4"}],
                              "rejected": [{"role": "assistant", "content": "5"}]}], "pref.jsonl")
    cfg, tok = _tokenizer(compose, "stage=grpo", "data=custom_json", f"data.path={path}", "data.val_size=0",
                          "data.format=prompt_completion", "data.columns.completion=chosen")
    ds = build_prompt_datasets(cfg, tok, ("exact_match",)).train
    assert ds["answer"] == ["4"] and ds["prompt"][0].endswith("assistant<|end_header_id|>\n\n")


def test_grpo_prompts_longer_than_the_cutoff_are_dropped_and_counted(compose, tmp_path, monkeypatch):
    """trl 1.x cuts no GRPO prompt: one of 4000 tokens was generated from past the model's context. The drop is
    counted without transformers' own "Token indices sequence length is longer ..." line."""
    from transformers import tokenization_utils_base

    from ftsweep.data.preference import build_prompt_datasets

    said = []
    monkeypatch.setattr(tokenization_utils_base.logger, "warning", lambda msg, *a, **k: said.append(msg))
    rows = [{"prompt": f"Q{i}?", "answer": f"a{i}"} for i in range(6)]
    path = _write(tmp_path, rows, "long.jsonl")
    cfg, tok = _tokenizer(compose, "stage=grpo", "data=custom_json", f"data.path={path}", "data.val_size=0",
                          "data.cutoff_len=64")
    rows[2]["prompt"] = "long " * (tok.model_max_length + 10)  # longer than the model's context too
    path = _write(tmp_path, rows, "long.jsonl")
    bundle = build_prompt_datasets(cfg, tok, ("exact_match",))
    assert not [m for m in said if "sequence length" in str(m)], said
    assert len(bundle.train) == 5 and "long" not in "".join(bundle.train["prompt"])
    assert bundle.stats["n_dropped"] == bundle.stats["n_dropped_prompt_too_long"] == 1
    [where] = bundle.stats["dropped_where"]
    assert where.startswith(f"{path} line 3: prompt of ") and where.endswith(" tokens > data.cutoff_len = 64")
    # every validation prompt too long: refused before training, as DPO / KTO refuse theirs
    val = _write(tmp_path, [rows[2]], "val.jsonl")
    cfg, tok = _tokenizer(compose, "stage=grpo", "data=custom_json", f"data.path={path}",
                          f"data.validation_path={val}", "data.val_size=0", "data.cutoff_len=64")
    with pytest.raises(DataError, match=r"val.jsonl: no validation prompts left: all 1 were dropped \(a prompt longer "
                                        r"than data.cutoff_len = 64 tokens") as err:
        build_prompt_datasets(cfg, tok, ("exact_match",))
    # ... and the error carries which, as inspect --dropped lists them (it listed none)
    assert [w.split(": prompt of ")[0] for w in err.value.dropped_where] == [f"{path} line 3", f"{val} line 1"]


@pytest.mark.slow
def test_grpo_raises_the_mean_reward_from_an_sft_start(cache_dir, tmp_path):
    """sweep=grpo_lr's settings at one learning rate, from an SFT run that answers some proxy rows: the mean
    training reward (word-level F1 of completions sampled at temperature 0.7) rises, 0.13 -> about 0.29 over
    200 steps at lr 3e-3 (on one thread and on two), and the validation reward beats its value before training."""
    import yaml
    from omegaconf import OmegaConf

    from ftsweep.config.compose import compose
    from ftsweep.train import run

    sft = tmp_path / "sft"
    (sft / ".hydra").mkdir(parents=True)
    cfg = compose([f"cache_dir={cache_dir}", "logger=none", "data=proxy_tasks", "lora=r8", "optimizer.lr=1e-2",
                   "trainer.max_steps=400", "trainer.eval_steps=400"])
    OmegaConf.save(cfg, sft / ".hydra" / "config.yaml")
    assert run(cfg, sft)["status"] == "complete"
    grpo = yaml.safe_load((ROOT / "sweep" / "grpo_lr.yaml").read_text())
    overrides = [f"data.{k}={v}" for k, v in grpo["data"].items()]
    overrides += [f"trainer.{k}={v}" for k, v in grpo["trainer"].items()]
    overrides += [f"stage.{k}={v}" for k, v in grpo["stage"].items() if k != "rewards"]
    cfg = compose([f"cache_dir={cache_dir}", "logger=none", "stage=grpo", "data=proxy_tasks",
                   "scheduler=constant_with_warmup", "stage.rewards=[{name: token_f1}]", f"init_from={sft}",
                   "optimizer.lr=3e-3", *overrides])
    assert cfg.stage.temperature == 0.7 and cfg.trainer.max_steps == 200  # the sweep's settings reached the run
    m = run(cfg, tmp_path / "grpo")
    assert m["status"] == "complete"
    history = json.loads((tmp_path / "grpo" / "log_history.json").read_text())
    train = [h["reward"] for h in history if "reward" in h]  # mean reward of each 10 steps' 320 completions
    evals = [h["eval_reward"] for h in history if "eval_reward" in h]
    assert len(train) == 20 and sum(train[-5:]) / 5 > sum(train[:2]) / 2 + 0.05, train
    # on 64 validation rows the sampled reward is noisier (one thread: 0.15 -> 0.20, 0.26, 0.17, 0.15)
    assert max(evals) > m["initial_eval_reward"] + 0.04, (m["initial_eval_reward"], evals)


def test_init_from_a_sweep_folder_uses_its_best_trial(tmp_path):
    from ftsweep.stages.init_from import adapter_dir

    best = tmp_path / "sweep" / "trial_3"
    (best / "adapter").mkdir(parents=True)
    (best / "adapter" / "adapter_config.json").write_text("{}")
    (tmp_path / "sweep" / "summary.json").write_text(json.dumps({"best_trial_dir": str(best)}))
    assert adapter_dir(tmp_path / "sweep") == best / "adapter"
    assert adapter_dir(best) == best / "adapter" and adapter_dir(tmp_path) is None
