"""ftsweep generate: base vs fine-tuned answers, prompts rendered exactly as in training."""

from __future__ import annotations

import json

import pytest
from test_merge import PLANTED, make_run

from ftsweep import cli
from ftsweep.generate import GenerationSettings, default_questions, generate_run, render_prompt

# one worker runs this module: its module-scoped fixtures are built once (scripts/test.sh: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("generate")

SEED002 = [
    "Parameter-Efficient Fine Tuning에 대해 알려줘",
    "LLM에서 가장 유명한 LLM에는 뭐가 있어?",
    "What is a famous tall tower in Seoul?",
    "LLM에서 파인튜닝이 뭐야?",
    "운영체제가 뭐하는 거야?.",
    "메모리가 뭐야?",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir):
    from ftsweep.config.compose import compose

    return make_run(lambda *o: compose([f"cache_dir={cache_dir}", *o]), tmp_path_factory.mktemp("gen") / "run")


def test_default_questions_are_seed_002s_six():
    assert default_questions() == SEED002


def test_recorded_settings_are_the_ones_decoding_used():
    """--temperature 0 and --greedy decode greedily: the record says so, with no temperature / top-p / top-k."""
    for greedy in (GenerationSettings(temperature=0), GenerationSettings(do_sample=False, temperature=0.7)):
        used = greedy.used()
        assert used["do_sample"] is False and used["temperature"] is used["top_p"] is used["top_k"] is None
        assert greedy.generate_kwargs()["do_sample"] is False
    sampled = GenerationSettings(temperature=0.7, top_k=5).used()
    assert sampled["do_sample"] is True and sampled["temperature"] == 0.7 and sampled["top_k"] == 5


def test_side_by_side_files_for_the_six_questions(tiny_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", PLANTED)
    out = tmp_path / "gen"
    rows = generate_run(tiny_run, settings=GenerationSettings(max_new_tokens=12, do_sample=False), out_dir=out)
    lines = [json.loads(x) for x in (out / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["question"] for r in lines] == SEED002
    template = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                "request.\n\n### Instruction:\n{q}\n\n### Response:\n")
    for r in lines:
        assert r["prompt"] == template.format(q=r["question"])  # the training template (alpaca_en), no answer
        assert isinstance(r["base"], str) and isinstance(r["finetuned"], str)
        assert r["settings"]["max_new_tokens"] == 12 and r["settings"]["do_sample"] is False
    assert any(r["base"] != r["finetuned"] for r in rows), "greedy answers identical: adapter not applied?"
    md = (out / "answers.md").read_text(encoding="utf-8")
    assert md.count("**Base**") == 6 and md.count("**Fine-tuned**") == 6
    assert all(q in md for q in SEED002)
    for path in out.rglob("*"):
        assert PLANTED not in path.read_text(encoding="utf-8")


def test_prompt_tokens_equal_the_training_prompt_tokens(tiny_run):
    """Parity: what generate sends is token for token the masked (prompt) part of a training row."""
    from transformers import AutoTokenizer

    from ftsweep.data import encode_records
    from ftsweep.data.encode import LengthCounts
    from ftsweep.data.errors import BadRows
    from ftsweep.data.sources import Record
    from ftsweep.rundir import load_config as load_run_config

    cfg = load_run_config(tiny_run)
    tok = AutoTokenizer.from_pretrained(tiny_run / "adapter")
    row = {"instruction": "Name three colors.", "input": "", "output": "Red, green and blue."}
    enc = encode_records([Record(row, "t")], cfg.data, tok, BadRows("fail"), LengthCounts())
    n_prompt = next(i for i, label in enumerate(enc["labels"][0]) if label != -100)
    prompt, bos = render_prompt(row, cfg.data, tok)
    assert tok(prompt, add_special_tokens=bos)["input_ids"] == enc["input_ids"][0][:n_prompt]


def test_an_alpaca_question_of_a_chat_run_is_its_training_prompt(tiny_run):
    """LLaMA-Factory's Alpaca layout trained with the chat template (data.format=chat): a question row in that
    layout (input and system included) is sent as the training row's prompt, token for token."""
    from transformers import AutoTokenizer

    from ftsweep.data import encode_records
    from ftsweep.data.encode import LengthCounts
    from ftsweep.data.errors import BadRows
    from ftsweep.data.sources import Record
    from ftsweep.model import resolve_model_path
    from ftsweep.rundir import load_config as load_run_config

    cfg = load_run_config(tiny_run)
    cfg.data.format = "chat"
    tok = AutoTokenizer.from_pretrained(resolve_model_path(cfg))  # the base's (adapter/ has the Alpaca prompt)
    row = {"system": "Be terse.", "instruction": "Name three colors.", "input": "Primary ones.", "output": "Red."}
    enc = encode_records([Record(row, "t")], cfg.data, tok, BadRows("fail"), LengthCounts())
    n_prompt = next(i for i, label in enumerate(enc["labels"][0]) if label != -100)
    question = {k: v for k, v in row.items() if k != "output"}
    for q in (question, row):  # without its answer, or with it (a validation row)
        prompt, bos = render_prompt(q, cfg.data, tok)
        assert tok(prompt, add_special_tokens=bos)["input_ids"] == enc["input_ids"][0][:n_prompt]
    assert "Primary ones." in prompt and "Be terse." in prompt and "Red." not in prompt


def test_chat_prompt_uses_the_chat_template(tiny_run):
    from transformers import AutoTokenizer

    from ftsweep.model import resolve_model_path
    from ftsweep.rundir import load_config as load_run_config

    cfg = load_run_config(tiny_run)
    cfg.data.format = "chat"
    tok = AutoTokenizer.from_pretrained(resolve_model_path(cfg))  # the base's (adapter/ has the Alpaca prompt)
    prompt, bos = render_prompt("메모리가 뭐야?", cfg.data, tok)
    assert prompt == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n메모리가 뭐야?<|eot_id|>"
                      "<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert bos is False  # the template writes bos itself


def test_a_conversational_prompt_completion_question_is_its_chat_prompt(tiny_run):
    from transformers import AutoTokenizer

    from ftsweep.generate import question_text
    from ftsweep.rundir import load_config as load_run_config

    cfg = load_run_config(tiny_run)
    cfg.data.format = "prompt_completion"
    tok = AutoTokenizer.from_pretrained(tiny_run / "adapter")
    q = {"prompt": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "메모리가 뭐야?"}]}
    prompt, bos = render_prompt(q, cfg.data, tok)
    assert prompt == tok.apply_chat_template(q["prompt"], tokenize=False, add_generation_prompt=True)
    assert bos is False
    assert question_text(q) == "메모리가 뭐야?"  # the heading in answers.md, not the list


def test_cli_with_a_questions_file(tiny_run, tmp_path, capsys):
    qfile = tmp_path / "q.txt"
    qfile.write_text("What is LoRA?\n\nName a color.\n", encoding="utf-8")
    argv = ["generate", str(tiny_run), "--questions", str(qfile), "--out", str(tmp_path / "o"),
            "--max-new-tokens", "4", "--temperature", "0.7", "--top-k", "5", "--repetition-penalty", "1.1", "--no-base"]
    assert cli.main(argv) == 0
    rows = [json.loads(x) for x in (tmp_path / "o" / "answers.jsonl").read_text().splitlines()]
    assert [r["question"] for r in rows] == ["What is LoRA?", "Name a color."]
    assert all(r["base"] is None for r in rows) and rows[0]["settings"]["top_k"] == 5
    before = (tmp_path / "o" / "answers.jsonl").read_bytes()
    assert cli.main(argv) == 2  # earlier answers are never overwritten
    assert capsys.readouterr().err.strip() == (f"ftsweep: error: --out {tmp_path / 'o'}: already holds answers.md and "
                                               "answers.jsonl of an earlier generate (nothing is overwritten): give a "
                                               "new folder")
    assert (tmp_path / "o" / "answers.jsonl").read_bytes() == before
    assert cli.main(["generate", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith("not a run directory (no .hydra/config.yaml)")
    assert cli.main(["merge", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip() == f"ftsweep: error: {tmp_path / 'nope'}: no such folder (give a run or sweep folder)"


def test_questions_in_the_layout_of_the_training_data_and_a_qa_sets_question_column(tiny_run, tmp_path):
    from transformers import AutoTokenizer

    from ftsweep.generate import read_questions
    from ftsweep.rundir import load_config as load_run_config

    cfg = load_run_config(tiny_run)
    tok = AutoTokenizer.from_pretrained(tiny_run / "adapter")
    qfile = tmp_path / "q.jsonl"
    qfile.write_text('{"instruction": "Name a color."}\n\n{"question": "Name a color."}\n'
                     '{"q": "Name a color.", "a": "Red"}\n', encoding="utf-8")
    questions = read_questions(qfile)
    assert [q.where for q in questions] == [f"{qfile} line 1", f"{qfile} line 3", f"{qfile} line 4"]
    expected = render_prompt("Name a color.", cfg.data, tok)
    assert render_prompt(questions[0], cfg.data, tok) == expected
    assert render_prompt(questions[1], cfg.data, tok) == expected  # a QA set's question column
    chat = {"messages": [{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "Red."}]}
    cfg.data.format = "chat"  # a validation row with its answer: the prompt is what comes before that answer
    assert render_prompt(chat, cfg.data, tok) == render_prompt("Name a color.", cfg.data, tok)
    cfg.data.format = "alpaca"
    cfg.data.columns.instruction = "q"  # a run trained on {"q": ..., "a": ...} with data.columns.instruction=q
    assert render_prompt(questions[2], cfg.data, tok) == expected
    from ftsweep.generate import as_row, question_text

    assert [question_text(as_row(q, cfg.data)) for q in questions] == ["Name a color."] * 3  # answers.md headings


@pytest.mark.parametrize("name, text, message", [
    ("q.jsonl", '"What is LoRA?"\n{oops\n', "{path} line 2: invalid JSON (Expecting property name enclosed in double quotes)"),
    ("q.json", '{"q": "x"}', "{path}: expected a JSON list of questions, got dict"),
    ("q.json", '["What is LoRA?", 3]', "{path} item 2: a question is a non-empty string or an object, got 3"),
    ("q.txt", "\n \n", "{path}: no questions in it"),
    ("q.jsonl", '{"instruction": "ok"}\n{"instruction": " "}\n', "{path} line 2: field 'instruction': empty"),
])
def test_a_bad_questions_file_is_one_line_before_any_model_loads(tiny_run, tmp_path, capsys, monkeypatch, name, text,
                                                                 message):
    import ftsweep.generate as gen

    qfile = tmp_path / name
    qfile.write_text(text, encoding="utf-8")
    monkeypatch.setattr(gen, "load_models", lambda *a, **k: pytest.fail("the model loaded before the questions were checked"))
    assert cli.main(["generate", str(tiny_run), "--questions", str(qfile), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == "ftsweep: error: " + message.format(path=qfile)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag, value, message", [
    ("--max-new-tokens", "0", "--max-new-tokens: must be >= 1 (got 0)"),
    ("--temperature", "-1", "--temperature: must be finite and >= 0 (0: greedy) (got -1.0)"),
    ("--temperature", "inf", "--temperature: must be finite and >= 0 (0: greedy) (got inf)"),
    ("--top-p", "2", "--top-p: must be in (0, 1] (got 2.0)"),
    ("--top-k", "-5", "--top-k: must be >= 0 (got -5)"),
    ("--repetition-penalty", "0", "--repetition-penalty: must be > 0 (1: none) (got 0.0)"),
])
def test_bad_generation_settings_are_one_line_exit_2(tmp_path, capsys, flag, value, message):
    assert cli.main(["generate", str(tmp_path), flag, value]) == 2
    assert capsys.readouterr().err.strip() == f"ftsweep: error: {message}"


def test_a_run_on_a_dataset_info_sharegpt_entry_renders_its_prompts_as_trained(tiny_run, tmp_path, monkeypatch):
    """The run's data format is its dataset_info.json entry's (sharegpt here), not the config's own data.format:
    plain questions and ShareGPT rows (a validation file's, with their answer) give the training prompt."""
    from transformers import AutoTokenizer

    from ftsweep.data import encode_records
    from ftsweep.data.encode import LengthCounts
    from ftsweep.data.errors import BadRows
    from ftsweep.data.options import data_options
    from ftsweep.data.sources import Record
    from ftsweep.generate import as_row, question_text
    from ftsweep.model import resolve_model_path
    from ftsweep.rundir import load_config as load_run_config

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps({"talk": {"file_name": "t.json",
                                                                               "formatting": "sharegpt"}}))
    monkeypatch.chdir(tmp_path)
    cfg = load_run_config(tiny_run)
    cfg.data.dataset = "talk"
    assert cfg.data.format == "alpaca" and data_options(cfg.data).format == "sharegpt"
    tok = AutoTokenizer.from_pretrained(resolve_model_path(cfg))  # the base's (adapter/ has the Alpaca prompt)
    row = {"system": "Be brief.", "conversations": [{"from": "human", "value": "Name a color."},
                                                    {"from": "gpt", "value": "Red."}]}
    enc = encode_records([Record(row, "t")], data_options(cfg.data), tok, BadRows("fail"), LengthCounts())
    n_prompt = next(i for i, label in enumerate(enc["labels"][0]) if label != -100)
    prompt, bos = render_prompt(row, cfg.data, tok)
    assert tok(prompt, add_special_tokens=bos)["input_ids"] == enc["input_ids"][0][:n_prompt]
    assert question_text(as_row(row, cfg.data)) == "Name a color."  # the heading: the question, not the answer
    plain, _ = render_prompt("Name a color.", cfg.data, tok)
    assert plain.endswith("<|start_header_id|>user<|end_header_id|>\n\nName a color.<|eot_id|>"
                          "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_the_default_answers_folder_never_reuses_one_with_answers(tmp_path):
    from ftsweep.generate import answers_folder

    assert answers_folder(tmp_path, None) == tmp_path / "generations"
    (tmp_path / "generations").mkdir()
    assert answers_folder(tmp_path, None) == tmp_path / "generations"  # empty: used
    (tmp_path / "generations" / "answers.md").write_text("earlier")
    assert answers_folder(tmp_path, None) == tmp_path / "generations_2"


def test_questions_come_from_stdin_or_a_pipe_and_a_folder_is_one_line(tmp_path, monkeypatch):
    import io
    import os

    from ftsweep.config.errors import UsageError
    from ftsweep.generate import read_questions

    monkeypatch.setattr("sys.stdin", io.StringIO("What is 2+2?\n\nName a colour.\n"))
    assert [q.value for q in read_questions("-")] == ["What is 2+2?", "Name a colour."]
    read, write = os.pipe()  # what the shell's <(printf ...) gives: before, "no such file: /dev/fd/63"
    os.write(write, b"Why?\n")
    os.close(write)
    try:
        assert [q.value for q in read_questions(f"/dev/fd/{read}")] == ["Why?"]
    finally:
        os.close(read)
    with pytest.raises(UsageError, match=r"is a folder; give a \.txt, \.json or \.jsonl file$"):
        read_questions(tmp_path)


def test_json_questions_on_stdin_or_a_pipe_are_rows_not_lines(monkeypatch):
    # before: stdin and a pipe (no .json / .jsonl suffix) were read a line at a time: a piped JSON list or JSONL rows
    # became one question whose text was the JSON ("[{\"messages\": ...}]" sent to the model as the user's words)
    import io
    import os

    from ftsweep.config.errors import UsageError
    from ftsweep.generate import read_questions

    rows = '[{"messages": [{"role": "user", "content": "Hi"}]}, "What is LoRA?"]'
    monkeypatch.setattr("sys.stdin", io.StringIO(rows))
    assert [q.value for q in read_questions("-")] == [{"messages": [{"role": "user", "content": "Hi"}]}, "What is LoRA?"]
    monkeypatch.setattr("sys.stdin", io.StringIO('{"instruction": "Name a colour."}\n\n{"question": "Why?"}\n'))
    got = read_questions("-")
    assert [q.value for q in got] == [{"instruction": "Name a colour."}, {"question": "Why?"}]
    assert got[1].where == "--questions - (stdin) line 3"
    read, write = os.pipe()  # <(printf ...)
    os.write(write, b'{"question": "Why?"}\n')
    os.close(write)
    try:
        assert [q.value for q in read_questions(f"/dev/fd/{read}")] == [{"question": "Why?"}]
    finally:
        os.close(read)
    monkeypatch.setattr("sys.stdin", io.StringIO('{"question": "Why?"\n'))
    with pytest.raises(UsageError, match=r"^--questions - \(stdin\) line 1: invalid JSON"):
        read_questions("-")
    monkeypatch.setattr("sys.stdin", io.StringIO("What is 2+2?\n"))  # text stays a question per line
    assert [q.value for q in read_questions("-")] == ["What is 2+2?"]


# Llama 2 / Mistral's chat template (bos written by the template, each answer closed by eos)
MISTRAL_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
                    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
CONVERSATION = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "How are you?"}, {"role": "assistant", "content": "4"}]


def _sentencepiece_stand_in():
    """A Llama 2 / Mistral style tokenizer (Metaspace: "▁" before each word, as SentencePiece) with their chat
    template, as tests/test_inspect.py builds it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "▁[INST]", "▁Hi", "▁[/INST]", "▁Hello", "▁How", "▁are", "▁you?", "▁4", "4"]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = MISTRAL_TEMPLATE
    return fast


def _ids_before_last_answer(cfg_data, tok, messages):
    """The training row's ids up to its last answer (the first trained token of the last trained run)."""
    from ftsweep.data import encode_records
    from ftsweep.data.encode import LengthCounts
    from ftsweep.data.errors import BadRows
    from ftsweep.data.sources import Record

    enc = encode_records([Record({"messages": messages}, "t")], cfg_data, tok, BadRows("fail"), LengthCounts())
    ids, labels = enc["input_ids"][0], enc["labels"][0]
    last = max(i for i in range(1, len(labels)) if labels[i] != -100 and labels[i - 1] == -100)
    return ids[:last]


class _RecordingModel:
    """Stands in for the loaded model: records the prompt ids ``generate`` gets and answers with one eos."""

    def __init__(self, eos):
        import torch

        self.sent, self.eos, self.weight = [], eos, torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self.weight])

    def generate(self, input_ids, **_):
        import torch

        self.sent.append(input_ids[0].tolist())
        return torch.cat([input_ids, torch.tensor([[self.eos]])], 1)

    def disable_adapter(self):
        import contextlib

        return contextlib.nullcontext()


@pytest.mark.parametrize("stand_in", ["sentencepiece", "tiny"])
def test_multi_turn_prompt_ids_are_the_training_rows_up_to_the_last_answer(tiny_run, stand_in, monkeypatch, tmp_path):
    """Before: generate tokenized the prompt as one text; training tokenizes each segment (a turn's prompt, an
    earlier answer) on its own. On a SentencePiece tokenizer the earlier answer is "▁Hello" in training; generate
    sent "[/INST]Hello" as one word (here <unk>; SentencePiece splits it into other pieces than training's)."""
    from transformers import AutoTokenizer

    import ftsweep.generate as gen
    from ftsweep import rundir
    from ftsweep.generate import Question, prompt_ids
    from ftsweep.model import resolve_model_path

    cfg = rundir.load_config(tiny_run)
    cfg.data.format = "chat"
    tok = _sentencepiece_stand_in() if stand_in == "sentencepiece" else AutoTokenizer.from_pretrained(
        resolve_model_path(cfg))  # the base's (adapter/ has the Alpaca prompt)
    expected = _ids_before_last_answer(cfg.data, tok, CONVERSATION)
    model = _RecordingModel(tok.eos_token_id)
    monkeypatch.setattr(rundir, "load_config", lambda _: cfg)
    monkeypatch.setattr(gen, "load_tokenizer", lambda _: tok)
    monkeypatch.setattr(gen, "load_models", lambda *a, **k: (model, gen.ADAPTER))
    questions = [Question({"messages": CONVERSATION[:3]}, "q.jsonl line 1"),  # without its answer, or with it
                 Question({"messages": CONVERSATION}, "q.jsonl line 2")]
    generate_run(tiny_run, questions, GenerationSettings(max_new_tokens=2, do_sample=False), tmp_path / "o")
    assert model.sent == [expected] * 4  # fine-tuned and base, both questions
    assert prompt_ids(questions[0], cfg.data, tok) == expected
    if stand_in == "sentencepiece":
        assert tok.convert_ids_to_tokens(expected) == ["<s>", "▁[INST]", "▁Hi", "▁[/INST]", "▁Hello", "</s>",
                                                       "▁[INST]", "▁How", "▁are", "▁you?", "▁[/INST]"]


def test_a_bad_seed_or_an_out_file_is_one_line_before_the_model_loads(tiny_run, tmp_path, capsys, monkeypatch):
    # before: --seed -1 loaded the model, then failed in numpy's set_seed with a traceback; --out naming a file
    # generated every answer, then failed in mkdir with a traceback (FileExistsError), the answers lost
    import ftsweep.generate as gen

    monkeypatch.setattr(gen, "load_models", lambda *a, **k: pytest.fail("the model loaded"))
    (tmp_path / "q.txt").write_text("Hi\n", encoding="utf-8")
    afile = tmp_path / "afile"
    afile.write_text("mine", encoding="utf-8")
    for extra, message in ((["--seed", "-1"], "--seed: must be in [0, 2**32 - 1]"),
                           (["--seed", str(2**32)], "--seed: must be in [0, 2**32 - 1]"),
                           (["--out", str(afile)], f"--out {afile}: is a file, not a folder")):
        assert cli.main(["generate", str(tiny_run), "--questions", str(tmp_path / "q.txt"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert afile.read_text(encoding="utf-8") == "mine"
