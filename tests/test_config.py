"""Every option of every group composes; bad overrides fail with one line naming the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ftsweep.config.compose import ConfigFailure
from ftsweep.paths import shipped_conf_dir as conf_dir

LM_EVAL_TASKS = Path(__file__).parent / "data" / "lm_eval"
GROUPS = ["model", "quantization", "lora", "data", "optimizer", "scheduler", "trainer", "logger", "objective",
          "stage"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes(compose, group, option):
    # Options with a value the user must set (validation refuses them without it).
    extra = {
        ("data", "custom_json"): ["data.path=data/alpaca_en_demo.json"],
        ("model", "hub"): ["model.name_or_path=Qwen/Qwen2.5-1.5B"],
        ("objective", "lm_eval"): ["objective.tasks=[ftsweep_tiny_mc]", f"objective.include_path={LM_EVAL_TASKS}"],
    }.get((group, option), [])
    if (group, option) == ("objective", "lm_eval"):
        pytest.importorskip("lm_eval")
    cfg = compose(f"{group}={option}", *extra)
    assert cfg[group] is not None


@pytest.mark.parametrize("name", _options("experiment"))
def test_experiments_compose(compose, name):
    cfg = compose(f"+experiment={name}")
    assert cfg.quantization.method == "nf4"
    assert cfg.lora.r == 16


def test_seed_experiments_match_the_posts(compose):
    s4 = compose("+experiment=seed004_open_ko_qlora")
    assert s4.model.name_or_path == "beomi/Llama-3-Open-Ko-8B"
    assert (s4.trainer.per_device_train_batch_size, s4.trainer.gradient_accumulation_steps) == (1, 8)
    assert s4.optimizer.name == "paged_adamw_8bit" and list(s4.optimizer.betas) == [0.9, 0.95]
    assert s4.data.template == "alpaca_ko"
    s2 = compose("+experiment=seed002_llama3_alpaca_cleaned")
    assert s2.model.pad_token == "<|reserved_special_token_250|>"
    assert s2.data.only_empty_input is True
    assert s2.optimizer.name == "adamw_8bit" and s2.scheduler.name == "constant_with_warmup"


BAD = [
    ("lora.r=0", "lora.r: must be >= 1"),
    # LLaMA-Factory's template names a chat template; data.template is an Alpaca prompt template
    ("data.template=llama3", ("data.template: got 'llama3'; allowed: alpaca_en, alpaca_ko, special_tokens, custom "
                              "(Alpaca prompt templates); a chat model's template is its tokenizer's: data.format=chat "
                              "(or data.chat_template=llama3 / chatml)")),
    ("lora.rr=3", "lora.rr: unknown key; allowed keys: enabled, r, alpha"),
    ("lora=r99", "lora=r99: no such option; available: none, r16, r16_all_linear, r8"),
    ("lora.dropout=1.0", "lora.dropout: must be in [0, 1)"),
    ("lora.target_modules=[]", "lora.target_modules: must be 'all-linear' or a non-empty list"),
    ("optimizer.lr=0", "optimizer.lr: must be > 0"),
    ("optimizer.lr=abc", "optimizer.lr: Value 'abc' of type 'str' could not be converted to Float"),
    ("optimizer.name=sgd", "optimizer.name: got 'sgd'; allowed: adamw_torch, adamw_8bit, paged_adamw_8bit"),
    ("scheduler.name=step", "scheduler.name: got 'step'; allowed: cosine, linear, constant_with_warmup"),
    ("trainer.per_device_train_batch_size=0", "trainer.per_device_train_batch_size: must be >= 1"),
    ("trainer.max_steps=0", "trainer.max_steps: must be >= 1, or -1"),
    ("trainer.save_steps=15 trainer.load_best_model_at_end=true", "trainer.save_steps: must be a multiple of trainer.eval_steps=10"),
    ("trainer.precision=bf16", "trainer.precision: bf16 mixed precision needs a CUDA GPU"),
    ("model.pad_policy=zero", "model.pad_policy: got 'zero'; allowed: existing, eos, reserved, new, auto"),
    # the default model=tiny builds the tiny model: another name would have been ignored (it trained tiny)
    ("model.name_or_path=meta-llama/Llama-3.2-1B", (
        "model.name_or_path: 'meta-llama/Llama-3.2-1B' would be ignored: model=tiny builds the tiny model from "
        "model.tiny; for another model choose its option (model=llama3_2_1b, ...) or any model with model=hub "
        "model.name_or_path=meta-llama/Llama-3.2-1B")),
    ("model=meta-llama/Llama-3.2-1B", (
        "model=meta-llama/Llama-3.2-1B: no such option; available: exaone3_5_2_4b_instruct, hub, "
        "llama3_1_8b_instruct, llama3_2_1b, llama3_8b, llama3_open_ko_8b, qwen2_5_0_5b_instruct, tiny; for a Hub "
        "model or a local folder: model=hub model.name_or_path=meta-llama/Llama-3.2-1B")),
    ("model=tinyy", (
        "model=tinyy: no such option; available: exaone3_5_2_4b_instruct, hub, llama3_1_8b_instruct, llama3_2_1b, "
        "llama3_8b, llama3_open_ko_8b, qwen2_5_0_5b_instruct, tiny; did you mean model=tiny?")),
    ("model=hub", "model.name_or_path: a value is required (set model.name_or_path=...)"),
    ("data.cutoff_len=5000", "data.cutoff_len: 5000 exceeds the model's context"),
    ("data=custom_json", "data.path: a value is required"),
    ("objective.direction=up", "objective.direction: got 'up'; allowed: minimize, maximize"),
    ("quantization.method=int3", "quantization.method: got 'int3'; allowed: none, nf4, fp4, int8"),
    ("lora=none quantization=nf4", "lora.enabled: a full fine-tune (lora=none) cannot train a nf4-quantized model"),
]


@pytest.mark.parametrize("override,suggestion", [
    ("seed=1", "; did you mean model.tiny.seed or data.seed or trainer.seed?"),  # the same name in a group
    ("lora.lr=1e-4", "; did you mean optimizer.lr?"),
    ("model.path=/my/model", "; did you mean model.name_or_path?"),  # a longer name in the same group (not data.path)
    ("trainer.max_step=5", "; did you mean trainer.max_steps?"),  # a close spelling in the same group
    ("data.columns.instrution=q", "; did you mean data.columns.instruction?"),
    ("lora.rr=3", "allowed keys: enabled, r, alpha, dropout, target_modules, bias, modules_to_save, use_rslora, "
                  "use_dora, loraplus_lr_ratio, init"),  # nothing close: no guess
    # the names transformers' TrainingArguments / trl / peft give the same settings
    ("trainer.learning_rate=1e-4", "; did you mean optimizer.lr? (ftsweep's name for learning_rate)"),
    ("lora.lora_alpha=32", "; did you mean lora.alpha? (ftsweep's name for lora_alpha)"),
    ("max_seq_length=256", "; did you mean data.cutoff_len? (ftsweep's name for max_seq_length)"),
    ("trainer.bf16=true", "; did you mean trainer.precision? (ftsweep's name for bf16)"),
    ("load_in_4bit=true", "; did you mean quantization=nf4? (ftsweep's name for load_in_4bit)"),
    # a column mapping written the other way round (column: field)
    ("data.columns.question=q", "; a key here is the field, the value your column: data.columns.instruction=question"),
])
def test_an_unknown_key_names_the_key_meant(compose, override, suggestion):
    with pytest.raises(ConfigFailure) as info:
        compose(override)
    assert str(info.value).endswith(suggestion), str(info.value)


@pytest.mark.parametrize("override,message", [
    ("+trainer.learning_rate=1e-3", "trainer.learning_rate: unknown key; allowed keys: per_device_train_batch_size, "),
    ("+foo=1", "foo: unknown key; allowed keys: model, quantization, "),
    ("+model.tiny.bar=3", "model.tiny.bar: unknown key; allowed keys: vocab_size, "),
    ("+stage.beta=0.1", "stage.beta: unknown key for this stage (keys by stage: sft: (none); dpo: beta, "),
    ("+data.columns.question=q", "data.columns.question: unknown key; allowed keys: instruction, "),
])
def test_a_key_added_with_plus_that_nothing_reads_is_refused(compose, override, message):
    # Hydra lets +key=value add any key; it would be ignored (a run at the default learning rate)
    with pytest.raises(ConfigFailure) as info:
        compose(override)
    text = str(info.value)
    assert text.startswith(message) and text.endswith("(a key added with + is read by nothing)"), text
    if "learning_rate" in override:
        assert "did you mean optimizer.lr?" in text


@pytest.mark.parametrize("override, message", [
    ("data.path=데이터.csv", ("data.path: cannot parse '데이터.csv': LexerNoViableAltException: data.path=데이터.csv "
                             "(Hydra reads unquoted values as ASCII only: quote it, \"data.path='데이터.csv'\")")),
    ("data.path={x", ("data.path: cannot parse '{x': no viable alternative at input '{x' (quote a value with spaces, "
                      "braces or '=': \"key='...'\" in a shell)")),
])
def test_an_override_hydra_cannot_parse_is_named_by_compose_too(compose, override, message):
    # ftsweep inspect / lr-find / merge compose directly (ftsweep train parses its overrides first)
    with pytest.raises(ConfigFailure) as info:
        compose(override)
    assert str(info.value) == message


def test_an_unknown_key_inside_a_list_entry_names_its_override_and_the_keys_an_entry_takes(compose):
    # OmegaConf names the key without its path ("patern: unknown key; allowed keys: model, quantization, ...")
    with pytest.raises(ConfigFailure) as info:
        compose("stage=grpo", "stage.rewards=[{name: regex, patern: x}]")
    assert str(info.value) == ("stage.rewards: unknown key 'patern' in [{name: regex, patern: x}]; an entry takes: "
                               "name, weight, pattern, target, function; did you mean pattern?")


def test_free_form_keys_added_with_plus_are_kept(compose):
    cfg = compose("+data.extra.field=rows", "+data.replacements.NAME=ftsweep", "+data.columns.instruction=q")
    assert (cfg.data.extra.field, cfg.data.replacements.NAME, cfg.data.columns.instruction) == ("rows", "ftsweep", "q")


def test_every_foreign_name_points_at_a_key_or_option_that_exists():
    from ftsweep.config.compose import group_options
    from ftsweep.config.keys import FOREIGN_NAMES, allowed_keys
    from ftsweep.config.stage import DpoStage

    for name, target in FOREIGN_NAMES.items():
        if "=" in target and "." in target.split("=")[0]:  # a switch that sets a key's value (pissa_init)
            parent, _, leaf = target.split("=")[0].rpartition(".")
            assert leaf in allowed_keys(parent), (name, target)
        elif "=" in target:
            group, option = target.split("=")
            assert option in group_options(group), (name, target)
        elif target.startswith("stage."):  # a preference stage's setting (stage=dpo)
            assert target.split(".", 1)[1] in allowed_keys("", DpoStage), (name, target)
        elif not target.startswith("hydra."):
            parent, _, leaf = target.rpartition(".")
            if leaf.isdigit():  # an item of a list setting (optimizer.betas.1)
                parent, _, leaf = parent.rpartition(".")
            assert leaf in allowed_keys(parent), (name, target)


LLAMA_FACTORY_SFT = {  # the shape of LLaMA-Factory's examples/train_lora/llama3_lora_sft.yaml
    "model_name_or_path": "meta-llama/Meta-Llama-3-8B-Instruct", "trust_remote_code": True, "stage": "sft",
    "do_train": True, "finetuning_type": "lora", "lora_rank": 8, "lora_target": "all", "dataset": "identity",
    "template": "llama3", "cutoff_len": 2048, "max_samples": 1000, "output_dir": "saves/llama3-8b/lora/sft",
    "logging_steps": 10, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 8,
    "learning_rate": 1.0e-4, "num_train_epochs": 3.0, "lr_scheduler_type": "cosine", "warmup_ratio": 0.1,
    "bf16": True, "seed": 7}


def test_another_tools_settings_become_overrides_that_compose():
    """override_for: the foreign-name table, our own keys and exact last parts (trainer's first); switches
    that are options; LLaMA-Factory's values (lora_target all / a comma list). Every override it writes for
    LLaMA-Factory's SFT example composes and sets what the example sets."""
    from ftsweep.config.compose import compose
    from ftsweep.config.keys import override_for

    got = {k: override_for(k, v) for k, v in LLAMA_FACTORY_SFT.items()}
    assert [k for k, o in got.items() if o is None] == ["do_train"]
    assert got["template"] == "data.format=chat data.chat_template=llama3"  # LLaMA-Factory's llama3 chat format
    assert (override_for("template", "qwen"), override_for("template", "alpaca"), override_for("template", "empty")) == (
        "data.format=chat", "data.format=alpaca data.template=alpaca_en", None)
    assert got["finetuning_type"] == "lora.enabled=true"
    assert (override_for("finetuning_type", "full"), override_for("finetuning_type", "freeze")) == (
        "lora.enabled=false", None)  # full fine-tuning; LLaMA-Factory's freeze tuning has no option here
    assert override_for("use_peft", True) == "lora.enabled=true"
    assert got["model_name_or_path"] == "model=hub model.name_or_path=meta-llama/Meta-Llama-3-8B-Instruct"
    assert (got["lora_target"], got["bf16"], got["seed"]) == ("lora.target_modules=all-linear",
                                                             "trainer.precision=bf16", "trainer.seed=7")
    assert override_for("lora_target", "q_proj, v_proj") == "lora.target_modules=[q_proj,v_proj]"
    more = [override_for(k, v) for k, v in (("adam_beta2", 0.95), ("additional_target", "embed_tokens,lm_head"),
                                             ("new_special_tokens", "<think>"), ("neat_packing", True),
                                             ("mix_strategy", "interleave_under"), ("interleave_probs", "0.7,0.3"))]
    assert more == ["optimizer.betas.1=0.95", "lora.modules_to_save=[embed_tokens,lm_head]",
                    "data.special_tokens=['<think>']", "data.packing=true", "data.mix_strategy=interleave_under",
                    "data.interleave_probs=[0.7,0.3]"]
    other = compose(more, check=False)
    assert (list(other.optimizer.betas), list(other.lora.modules_to_save), list(other.data.special_tokens),
            other.data.packing, other.data.mix_strategy, list(other.data.interleave_probs)) == (
        [0.9, 0.95], ["embed_tokens", "lm_head"], ["<think>"], True, "interleave_under", [0.7, 0.3])
    assert override_for("load_in_4bit", False) is None and override_for("load_in_4bit", True) == "quantization=nf4"
    assert override_for("notes", "first try: r8") == "notes='first try: r8'"
    overrides = [w for o in got.values() if o and not o.startswith(("data.dataset", "hydra.")) for w in o.split()]
    cfg = compose(overrides, check=False)
    assert (cfg.model.name_or_path, cfg.lora.r, cfg.lora.target_modules, cfg.data.cutoff_len, cfg.data.max_rows,
            cfg.optimizer.lr, cfg.scheduler.name, cfg.trainer.precision, cfg.trainer.seed, cfg.data.format,
            cfg.data.chat_template) == (
        "meta-llama/Meta-Llama-3-8B-Instruct", 8, "all-linear", 2048, 1000, 1e-4, "cosine", "bf16", 7, "chat", "llama3")


def test_printed_overrides_reach_hydra_unchanged_through_a_shell():
    """The overrides a hint prints (config-file settings, --flag hints) are pasted into a shell: the shell must hand
    Hydra each one as written, its Hydra quotes included."""
    from ftsweep.config.keys import override_for, shell_quoted

    for name, value in [("dataset", "identity,alpaca_en_demo"), ("notes", 'say "hi" for $5 `x` \\n'),
                        ("lora_target", "q_proj,v_proj"), ("learning_rate", 1e-4),
                        ("model_name_or_path", "meta-llama/Meta-Llama-3-8B-Instruct")]:
        written = override_for(name, value)
        words = subprocess.run(["bash", "-c", f"printf '%s\\0' {shell_quoted(written)}"], capture_output=True,
                               text=True, check=True).stdout.split("\0")[:-1]
        assert words == (written.split(" ", 1) if written.startswith("model=hub ") else [written])
    # several overrides in one: one shell word each
    assert shell_quoted("data.format=chat data.chat_template=llama3 notes='a b'") == (
        "data.format=chat data.chat_template=llama3 \"notes='a b'\"")
    assert shell_quoted(override_for("dataset", "identity,alpaca_en_demo")) == "\"data.dataset='identity,alpaca_en_demo'\""
    assert shell_quoted("optimizer.lr=0.0001") == "optimizer.lr=0.0001"


def test_a_llama_factory_dpo_qlora_example_becomes_overrides_that_compose():
    """LLaMA-Factory's DPO / QLoRA settings: quantization_bit, pref_beta, pref_loss, flash_attn."""
    from ftsweep.config.compose import compose
    from ftsweep.config.keys import override_for

    example = {"stage": "dpo", "quantization_bit": 4, "pref_beta": 0.2, "pref_loss": "hinge", "flash_attn": "fa2",
               "lora_rank": 16}
    got = [override_for(k, v) for k, v in example.items()]
    assert got == ["stage=dpo", "quantization=nf4", "stage.beta=0.2", "stage.loss_type=hinge",
                   "model.attn_implementation=flash_attention_2", "lora.r=16"]
    cfg = compose(got, check=False)
    assert (cfg.quantization.method, cfg.stage.beta, cfg.stage.loss_type, cfg.model.attn_implementation) == (
        "nf4", 0.2, "hinge", "flash_attention_2")
    assert override_for("quantization_bit", 8) == "quantization=int8"
    assert override_for("quantization_bit", 2) is None  # no 2-bit option here: named among the settings left out
    assert override_for("flash_attn", "auto") == "model.attn_implementation=null"


@pytest.mark.parametrize("override,message", BAD)
def test_bad_override_message(compose, override, message):
    with pytest.raises(ConfigFailure) as info:
        compose(*override.split())
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_cli_bad_override_one_line_nonzero_exit(tmp_path):
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [sys.executable, "-m", "ftsweep", "train", "lora.r=0", f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["ftsweep: error: lora.r: must be >= 1 (got 0)"]
    assert not run_dir.exists()


def cli_in_fresh_python(argv: list[str], heavy=("torch", "peft", "trl", "transformers", "optuna")):
    """Run ``ftsweep <argv>`` in a new interpreter; its stdout ends with ``HEAVY [...]``: the heavy modules imported."""
    code = (f"import sys; from ftsweep.cli import main; rc = main({argv!r}); "
            f"print('HEAVY', [m for m in {heavy!r} if m in sys.modules]); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out


def test_cfg_job_prints_config_without_heavy_imports():
    out = cli_in_fresh_python(["train", "--cfg", "job"])
    assert "lora:" in out.stdout and "optimizer:" in out.stdout
    assert "HEAVY []" in out.stdout


@pytest.mark.parametrize("mode", ["--run", "-r", "-m"])
def test_cfg_job_with_a_run_or_sweep_flag_prints_the_config(mode):
    """Hydra takes one of --run / --multirun / --cfg (a ValueError traceback otherwise): --cfg wins."""
    out = cli_in_fresh_python(["train", mode, "--cfg", "job"])
    assert "lora:" in out.stdout and "Traceback" not in out.stderr


@pytest.mark.parametrize("swept", ["optimizer.lr=1e-4,1e-3", "optimizer.lr=tag(log,interval(1e-4,1e-3))"])
def test_cfg_job_of_a_sweep_prints_the_config_without_its_swept_keys(swept):
    out = cli_in_fresh_python(["train", "-m", swept, "trainer.max_steps=7", "--cfg", "job"])
    assert "max_steps: 7" in out.stdout and "lr: 0.0002" in out.stdout  # the fixed override applied; lr: default
    assert out.stderr.strip() == f"ftsweep: the config without the swept key(s) {swept}: each trial sets them"


def test_unreachable_model_is_one_line_error(monkeypatch, capsys, cache_dir):
    from ftsweep.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # shipped options are known offline (ftsweep.memory.ARCHITECTURES); an unknown Hub name is not
    rc = main(["train", "--estimate-memory", "model=llama3_2_1b", "model.name_or_path=some-org/unknown-model",
               f"cache_dir={cache_dir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith(
        "ftsweep: error: model.name_or_path: cannot read the config of 'some-org/unknown-model': "
    )


def test_train_help_lists_every_option_with_its_description():
    out = cli_in_fresh_python(["train", "--help"], heavy=("torch", "peft", "trl", "optuna"))
    for group in GROUPS:
        for option in _options(group):
            assert f"    {option:<32} " in out.stdout, (group, option)
    assert "_schema" not in out.stdout.split("Config (override")[0]
    assert "r16_all_linear                   LoRA r=16, alpha=16 on every linear layer" in out.stdout
    assert "quickstart                       Tiny model on CPU" in out.stdout
    assert "HEAVY []" in out.stdout


def test_version_names_ftsweep_and_its_stack_without_importing_it():
    import ftsweep

    out = cli_in_fresh_python(["--version"])
    line, heavy = out.stdout.strip().splitlines()
    assert line.startswith(f"ftsweep {ftsweep.__version__} (torch ")
    from importlib.metadata import version

    for name in ("transformers", "peft", "trl", "optuna", "hydra-core"):
        assert f"{name} {version(name)}" in line
    assert heavy == "HEAVY []"
