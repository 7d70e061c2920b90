"""Merge and export: the merged model computes what base + adapter computes; export picks the best trial;
publishing reads the token only from the environment and never writes it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FAST
from omegaconf import OmegaConf

from ftsweep import cli
from ftsweep.train import run

# one worker runs this module: its module-scoped fixtures are built once (scripts/test.sh: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("merge")

PLANTED = "hf_PLANTEDtokenMERGE1234567890"


def make_run(compose, run_dir: Path, *overrides: str) -> Path:
    """A finished tiny run with its composed config where Hydra would have put it."""
    cfg = compose(*FAST, "optimizer.lr=5e-3", *overrides)
    run(cfg, run_dir)
    (run_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    return run_dir


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir):
    from ftsweep.config.compose import compose

    def _c(*o):
        return compose([f"cache_dir={cache_dir}", *o])

    return make_run(_c, tmp_path_factory.mktemp("merge") / "run")


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_merged_logits_match_base_plus_adapter(tiny_run, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftsweep.merge import merge_run
    from ftsweep.model import load_base_for_inference
    from ftsweep.rundir import load_config as load_run_config

    monkeypatch.setenv("HF_TOKEN", PLANTED)
    out = merge_run(tiny_run, tmp_path / "merged", "fp32")
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok(["### Instruction:\nName three colors.\n\n### Response:\n"], return_tensors="pt")["input_ids"]
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    base = load_base_for_inference(load_run_config(tiny_run), tok, quantized=False)
    peft_model = PeftModel.from_pretrained(base, tiny_run / "adapter").eval()
    expected = _logits(peft_model, ids)
    torch.testing.assert_close(_logits(merged, ids), expected, atol=1e-4, rtol=1e-4)
    with peft_model.disable_adapter():
        base_logits = _logits(peft_model, ids)
    assert (expected - base_logits).abs().max() > 1e-3, "the adapter changed nothing: the test would prove nothing"
    assert not any("lora" in n for n, _ in merged.named_parameters())
    for name in ("model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "README.md"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert "base_model: ftsweep-tiny-llama" in card and "data/alpaca_en_demo.json" in card
    assert "r=16, alpha=16" in card and f"eval_loss: {metrics['eval_loss']:.4g}" in card
    assert not [p for p in out.rglob("*") if p.is_file() and PLANTED.encode() in p.read_bytes()]


def _fake_trial(src: Path, dst: Path, objective: float, status: str = "complete") -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "merged"))
    m = json.loads((dst / "metrics.json").read_text())
    m.update(objective=objective, status=status)
    (dst / "metrics.json").write_text(json.dumps(m))
    return dst


def _study(sweep: Path, direction: str, values: dict[int, float | None]):
    """A study in sweep/study.db whose trial n (value None = failed) points at sweep/trial_<n>."""
    import optuna

    study = optuna.create_study(storage=f"sqlite:///{sweep / 'study.db'}", study_name="s", direction=direction)
    for n, value in values.items():
        t = study.ask()
        t.set_user_attr("trial_dir", str(sweep / f"trial_{n}"))
        study.tell(t, value, state=optuna.trial.TrialState.FAIL if value is None else None)
    return study


def test_export_merges_the_best_trial_in_the_study_direction(tiny_run, tmp_path):
    from ftsweep.sweeper.study import best_trial_dir

    sweep = tmp_path / "study"
    sweep.mkdir()
    for n in range(3):
        _fake_trial(tiny_run, sweep / f"trial_{n}", float(n))
    # The runs themselves say objective.direction=minimize; the study maximizes: the study decides.
    _study(sweep, "maximize", {0: 2.5, 1: 1.5, 2: None})
    assert best_trial_dir(sweep) == sweep / "trial_0"
    assert cli.main(["export", str(sweep), "--dtype", "fp32"]) == 0
    assert (sweep / "best_merged" / "model.safetensors").is_file()
    assert "trial_0" in (sweep / "best_merged" / "README.md").read_text()
    # merge (and generate) given the sweep folder take its best trial, and say so
    from ftsweep.sweeper.study import run_or_best_trial

    assert run_or_best_trial(sweep) == sweep / "trial_0" and run_or_best_trial(sweep / "trial_1") == sweep / "trial_1"
    assert cli.main(["merge", str(sweep), "--out", str(tmp_path / "m"), "--dtype", "fp32"]) == 0
    assert "trial_0" in (tmp_path / "m" / "README.md").read_text()


def test_merge_never_writes_into_an_existing_folder(tiny_run, tmp_path, capsys):
    out = tmp_path / "exported"
    out.mkdir()
    (out / "README.md").write_text("my notes")
    assert cli.main(["merge", str(tiny_run), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"ftsweep: error: {out}: exists and is not empty; a merge writes a new folder "
                                       "(remove it, or give another --out)\n")
    assert [p.name for p in out.iterdir()] == ["README.md"] and (out / "README.md").read_text() == "my notes"
    (out / "README.md").unlink()  # an empty folder is fine; the line names the dtype as --dtype does
    assert cli.main(["merge", str(tiny_run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"(float32) -> {out}")


def test_export_without_complete_trials_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path)]) == 2
    assert "no study.db" in capsys.readouterr().err
    _study(tmp_path, "minimize", {0: None})
    assert cli.main(["export", str(tmp_path)]) == 2
    assert "no complete trial" in capsys.readouterr().err


def test_merge_refuses_a_quantized_base_and_full_fine_tunes(tiny_run, tmp_path, capsys):
    from ftsweep.model import resolve_model_path

    cfg = OmegaConf.load(tiny_run / ".hydra" / "config.yaml")
    base = tmp_path / "base-bnb4"
    shutil.copytree(resolve_model_path(cfg), base)
    conf = json.loads((base / "config.json").read_text())
    conf["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (base / "config.json").write_text(json.dumps(conf))
    run_q = tmp_path / "run_q"
    shutil.copytree(tiny_run, run_q, ignore=shutil.ignore_patterns("checkpoints", "merged"))
    cfg.model.tiny = None
    cfg.model.name_or_path = str(base)
    OmegaConf.save(cfg, run_q / ".hydra" / "config.yaml")
    assert cli.main(["merge", str(run_q)]) == 2
    assert "without dequantising is not supported" in capsys.readouterr().err
    (run_q / "adapter").rename(run_q / "model")
    assert cli.main(["merge", str(run_q)]) == 2
    assert "full fine-tune" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- publish
class FakeApi:
    calls: list = []

    def __init__(self, token=None):
        FakeApi.calls.append(("init", token))

    def create_repo(self, repo_id, **kw):
        FakeApi.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, **kw):
        FakeApi.calls.append(("upload_folder", kw))
        return "https://hub.example/commit/1"


@pytest.fixture
def hub_online(monkeypatch):
    """The suite runs with HF_HUB_OFFLINE=1 (conftest); the push tests fake the Hub with the offline mode off."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)


def test_push_is_private_by_default_and_reads_the_token_from_env(tiny_run, monkeypatch, tmp_path, hub_online):
    import huggingface_hub

    from ftsweep.config.errors import UsageError
    from ftsweep.publish import push_folder

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", PLANTED)
    push_folder(tiny_run / "adapter", "me/tiny-adapter")
    create = next(c for c in FakeApi.calls if c[0] == "create_repo")
    assert create[1] == "me/tiny-adapter" and create[2]["private"] is True
    upload = next(c for c in FakeApi.calls if c[0] == "upload_folder")[1]
    assert upload["folder_path"] == str(tiny_run / "adapter") and "checkpoints/*" in upload["ignore_patterns"]
    assert ("init", PLANTED) in FakeApi.calls
    # a folder holding the token is refused before anything is uploaded
    leak = tmp_path / "leak"
    leak.mkdir()
    (leak / "notes.txt").write_text(f"token={PLANTED}")
    FakeApi.calls = []
    assert cli.main(["publish", str(leak), "me/x"]) == 2
    assert not [c for c in FakeApi.calls if c[0] == "upload_folder"]
    # so is one that holds another secret of the environment (a W&B key copied into notes)
    monkeypatch.setenv("WANDB_API_KEY", "wandb_SECRET_7890")
    (leak / "notes.txt").write_text("key=wandb_SECRET_7890")
    with pytest.raises(UsageError, match=r"notes.txt contains the value of WANDB_API_KEY$"):
        push_folder(leak, "me/x")
    assert not [c for c in FakeApi.calls if c[0] == "upload_folder"]


def test_push_without_a_token_says_how_to_log_in(tiny_run, monkeypatch, tmp_path, hub_online):
    import huggingface_hub

    from ftsweep.config.errors import UsageError
    from ftsweep.publish import push_folder

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login either
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(UsageError, match="set HF_TOKEN or run `hf auth login`"):
        push_folder(tiny_run / "adapter", "me/x")


def test_a_relative_base_model_folder_is_read_from_where_the_run_started(tmp_path, monkeypatch):
    """merge / generate / export from another folder find ./my_model (Hydra records the run's cwd)."""
    from omegaconf import OmegaConf

    from ftsweep import rundir

    started, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (started / "my_model").mkdir(parents=True)
    elsewhere.mkdir()
    run = started / "outputs" / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"model": {"name_or_path": "./my_model", "tiny": None}}), run / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"cwd": str(started)}}}), run / ".hydra" / "hydra.yaml")
    before = (run / ".hydra" / "config.yaml").read_bytes()
    monkeypatch.chdir(elsewhere)
    assert rundir.load_config(run).model.name_or_path == str(started / "my_model")
    assert (run / ".hydra" / "config.yaml").read_bytes() == before  # the run's files are never changed
    (started / "my_model").rmdir()  # gone: the path stays as written (and fails as "no such folder")
    assert rundir.load_config(run).model.name_or_path == "./my_model"


def test_merged_generation_config_stops_where_generate_stops(tiny_run, tmp_path):
    """A chat run trains its answers to end with <|eot_id|>; the tiny base's generation_config lists only
    <|end_of_text|>, so vLLM / generate() on the merged folder must be told to stop at the end of the turn."""
    from transformers import AutoTokenizer, GenerationConfig

    out = merge_run_quiet(tiny_run, tmp_path / "merged")
    tok = AutoTokenizer.from_pretrained(out)
    eos = GenerationConfig.from_pretrained(out).eos_token_id
    eos = [eos] if isinstance(eos, int) else list(eos)
    assert eos[0] == tok.eos_token_id
    assert tok.convert_tokens_to_ids("<|eot_id|>") in eos


def merge_run_quiet(run_dir: Path, out: Path) -> Path:
    from ftsweep.merge import merge_run

    return merge_run(run_dir, out, "fp32")


def test_a_push_that_fails_is_one_line_and_keeps_the_folder(tiny_run, monkeypatch, capsys, hub_online):
    """No network, HF_HUB_OFFLINE or a rejected token: one line saying how to push later, not a traceback."""
    import huggingface_hub

    class OfflineApi(FakeApi):
        def create_repo(self, *a, **k):
            raise OSError("Cannot reach https://huggingface.co/api/repos/create: offline mode is enabled.\nmore")

    monkeypatch.setattr(huggingface_hub, "HfApi", OfflineApi)
    monkeypatch.setenv("HF_TOKEN", PLANTED)
    assert cli.main(["publish", str(tiny_run / "adapter"), "me/x"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not push" in err[0] and "ftsweep publish" in err[0] and "Traceback" not in err[0]
    assert (tiny_run / "adapter" / "adapter_config.json").is_file()


def test_merge_push_without_a_token_is_refused_before_merging(tiny_run, monkeypatch, tmp_path, capsys, hub_online):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    out = tmp_path / "m"
    assert cli.main(["merge", str(tiny_run), "--out", str(out), "--push-to-hub", "me/x"]) == 2
    assert "HF_TOKEN" in capsys.readouterr().err and not out.exists()


def test_merge_push_while_the_hub_is_offline_is_refused_before_merging(tiny_run, monkeypatch, tmp_path, capsys):
    """HF_HUB_OFFLINE=1 (this suite's own setting): the push cannot happen, so nothing is merged first."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_TOKEN", PLANTED)
    out = tmp_path / "m"
    assert cli.main(["merge", str(tiny_run), "--out", str(out), "--push-to-hub", "me/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HF_HUB_OFFLINE" in err[0] and not out.exists()
    assert cli.main(["publish", str(tiny_run / "adapter"), "me/x"]) == 2
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err


def _trained_prompt(run_dir: Path, question: str, tok) -> str:
    from ftsweep.generate import render_prompt
    from ftsweep.rundir import load_config as load_run_config

    text, bos = render_prompt(question, load_run_config(run_dir).data, tok)
    return (tok.bos_token if bos else "") + text


def test_merged_chat_template_renders_the_alpaca_prompt_the_run_trained_on(tiny_run, tmp_path):
    """vLLM / TGI serve chat requests with the folder's chat template: an Alpaca run's must be its Alpaca prompt,
    in the merged folder and in the adapter's (vLLM's LoRA serving, a published adapter)."""
    from transformers import AutoTokenizer

    out = merge_run_quiet(tiny_run, tmp_path / "merged")
    q = "Name three colors."
    for folder in (out, tiny_run / "adapter"):
        tok = AutoTokenizer.from_pretrained(folder)
        rendered = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
        assert rendered == _trained_prompt(tiny_run, q, tok), folder
        assert "### Response:\n" in rendered
        ids = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert list(ids) == tok(rendered, add_special_tokens=False)["input_ids"]


def test_merged_chat_template_is_the_one_a_chat_run_trained_with(tiny_run, tmp_path):
    """data.chat_template=chatml trains on ChatML; the merged folder must not keep the base's Llama 3 template."""
    from transformers import AutoTokenizer

    run_dir = tmp_path / "chatml_run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns("checkpoints", "merged"))
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.data.format, cfg.data.chat_template = "chat", "chatml"
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    out = merge_run_quiet(run_dir, tmp_path / "merged")
    tok = AutoTokenizer.from_pretrained(out)
    rendered = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert "<|im_start|>assistant" in rendered and rendered == _trained_prompt(run_dir, "Hi", tok)


def test_model_card_names_dora_rslora_init_and_modules_trained_whole(tiny_run, tmp_path):
    """A card that says only "LoRA r=16" for a DoRA run that also trained its embeddings misleads whoever
    reproduces or audits the model."""
    from ftsweep.merge import model_card

    run_dir = tmp_path / "run"
    (run_dir / "adapter").mkdir(parents=True)
    ac = json.loads((tiny_run / "adapter" / "adapter_config.json").read_text())
    ac.update(use_dora=True, use_rslora=True, modules_to_save=["embed_tokens", "lm_head"])
    (run_dir / "adapter" / "adapter_config.json").write_text(json.dumps(ac))
    cfg = OmegaConf.load(tiny_run / ".hydra" / "config.yaml")
    cfg.lora.init = "pissa"
    cfg.data.special_tokens = ["<|prompt|>"]
    line = next(x for x in model_card(run_dir, cfg, "float32").splitlines() if x.startswith("- LoRA:"))
    for fact in ("DoRA", "rsLoRA", "init pissa", "embed_tokens, lm_head", "<|prompt|>"):
        assert fact in line, (fact, line)


def test_merge_keeps_the_tokenizer_template_when_the_dataset_entry_is_gone(monkeypatch):
    """A run read from a dataset_info.json entry that was since removed still merges (its card says so too)."""
    from types import SimpleNamespace

    from ftsweep.data import options
    from ftsweep.data.deploy import deploy_chat_template
    from ftsweep.errors import ConfigError

    def gone(_d):
        raise ConfigError("data.dataset", "no dataset 'talk' in data/dataset_info.json")

    monkeypatch.setattr(options, "data_options", gone)
    assert deploy_chat_template(OmegaConf.create({"dataset": "talk"}), SimpleNamespace(chat_template="T")) == "T"


def test_model_card_of_a_chat_run_names_its_chat_template_not_the_alpaca_one(tiny_run):
    from ftsweep.merge import _data_line

    cfg = OmegaConf.load(tiny_run / ".hydra" / "config.yaml")
    cfg.data.format, cfg.data.chat_template = "chat", "chatml"
    line = _data_line(cfg)
    assert "chat template chatml" in line and "alpaca" not in line.split("(format")[1], line
    cfg.data.chat_template = None
    assert "the tokenizer's chat template" in _data_line(cfg)


def test_merge_generate_and_publish_refuse_the_adapter_of_a_run_that_did_not_complete(tiny_run, tmp_path, capsys,
                                                                                      monkeypatch):
    """A failed run's folder may hold an adapter/ that is not its result: ``overwrite=true`` over a finished run,
    failed before saving (the earlier run's adapter beside the new run's config), or a run killed while saving.
    merge / generate / publish used it without a word; now one line, exit 2, unless --allow-failed (then a warning)."""
    failed = tmp_path / "failed"
    shutil.copytree(tiny_run, failed, ignore=shutil.ignore_patterns("checkpoints", "merged", "generations*"))
    (failed / "metrics.json").unlink()
    (failed / "failure.json").write_text(json.dumps({"status": "failed", "reason": "nan_loss: loss is nan at step 3",
                                                     "error_type": "TrainingFailed", "phase": "run"}))
    monkeypatch.setenv("HF_TOKEN", PLANTED)
    line = (f"ftsweep: error: {failed}: the run failed (nan_loss: loss is nan at step 3; failure.json): its adapter/ "
            "may be an earlier run's or unfinished; give a completed run, or pass --allow-failed to use it anyway\n")
    for argv in (["merge", str(failed), "--out", str(tmp_path / "m")], ["generate", str(failed), "--no-base"],
                 ["publish", str(failed), "me/x"], ["publish", str(failed / "adapter"), "me/x"]):
        assert cli.main(argv) == 2, argv
        assert capsys.readouterr().err == line, argv
    assert not (tmp_path / "m").exists() and not (failed / "generations").exists()
    (failed / "failure.json").unlink()  # killed before metrics.json (or still running)
    assert cli.main(["merge", str(failed), "--out", str(tmp_path / "m")]) == 2
    assert "the run did not finish (no metrics.json: stopped, or still running)" in capsys.readouterr().err
    (failed / "metrics.json").write_text(json.dumps({"status": "pruned"}))
    assert cli.main(["generate", str(failed)]) == 2
    assert "the run ended pruned (metrics.json)" in capsys.readouterr().err
    assert cli.main(["merge", str(failed), "--out", str(tmp_path / "m"), "--allow-failed"]) == 0
    assert (f"ftsweep: warning: {failed}: the run ended pruned (metrics.json): using its adapter/ anyway "
            "(--allow-failed)") in capsys.readouterr().err
    assert (tmp_path / "m" / "model.safetensors").is_file()
    shutil.rmtree(failed / "adapter")  # a pruned sweep trial saves none: the line says why (it said "did the run finish?")
    for argv in (["merge", str(failed), "--out", str(tmp_path / "m2")], ["generate", str(failed), "--no-base"]):
        assert cli.main(argv) == 2, argv
        assert "has no adapter/" in (err := capsys.readouterr().err) and "(the run ended pruned (metrics.json))" in err


def test_the_model_card_of_a_run_counted_in_epochs_says_its_epochs(tiny_run, tmp_path):
    """trainer.max_steps=-1 trains trainer.num_train_epochs: "max_steps -1" on the card said nothing of its length."""
    from ftsweep.merge import model_card

    cfg = OmegaConf.load(tiny_run / ".hydra" / "config.yaml")
    line = lambda: next(x for x in model_card(tiny_run, cfg, "float32").splitlines() if x.startswith("- scheduler:"))
    assert f"; max_steps {cfg.trainer.max_steps}; " in line()
    cfg.trainer.max_steps, cfg.trainer.num_train_epochs = -1, 2.5
    assert "; 2.5 epochs (max_steps -1); seed " in line()


def test_merge_into_a_folder_that_cannot_be_made_is_one_line_before_loading(tiny_run, capsys):
    """``--out`` under a file (or on a read-only disk): the model was loaded and merged first, then save_pretrained's
    makedirs stopped in a NotADirectoryError traceback (exit 1)."""
    blocker = tiny_run / "metrics.json"  # a file where a folder is expected
    assert cli.main(["merge", str(tiny_run), "--out", str(blocker / "merged")]) == 2
    err = capsys.readouterr().err
    assert err == (f"ftsweep: error: --out: {blocker} is a file (on the way to {blocker / 'merged'}); choose "
                   "another --out\n"), err


def test_a_merge_stopped_midway_leaves_no_half_merged_folder(tiny_run, tmp_path, monkeypatch, capsys):
    """Ctrl-C (or a full disk) while the merged model was written left its weights without the model card in --out:
    a half export that looked like one, and the export run again was refused as the folder 'exists and is not
    empty'. The merge is written beside --out and moved into place whole."""
    from ftsweep import merge

    out = tmp_path / "exported"

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(merge, "model_card", stop)  # the last file written
    assert cli.main(["merge", str(tiny_run), "--out", str(out)]) == 130
    assert not out.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    capsys.readouterr()
    assert cli.main(["merge", str(tiny_run), "--out", str(out)]) == 0
    assert (out / "README.md").is_file() and (out / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["exported"]
