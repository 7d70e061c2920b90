"""``hydra.job.chdir=true`` (Hydra's option to run the job inside its output folder): a relative data path is
still read from where ftsweep was run, as the README says and as sweep trials do. A single run passed the
pre-flight check (made from the launch folder), then failed in the run: 'mine.jsonl: file not found (looked for
it relative to <the run folder>)'."""

from __future__ import annotations

import pytest
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from ftsweep.paths import resolve_data_path


@pytest.fixture
def in_a_chdir_job(tmp_path, monkeypatch):
    launch, job = tmp_path / "project", tmp_path / "project" / "outputs" / "run"
    job.mkdir(parents=True)
    (launch / "mine.jsonl").write_text('{"instruction": "q", "output": "a"}\n')
    cfg = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
    cfg.hydra.runtime.cwd = str(launch)
    cfg.hydra.runtime.output_dir = str(job)
    cfg.hydra.job.chdir = True
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    monkeypatch.chdir(job)  # what hydra.job.chdir=true does
    yield launch
    HydraConfig.instance().cfg = saved


def test_a_relative_data_path_is_read_from_the_launch_folder(in_a_chdir_job):
    assert resolve_data_path("mine.jsonl") == (in_a_chdir_job / "mine.jsonl").resolve()
    assert resolve_data_path("./mine.jsonl") == (in_a_chdir_job / "mine.jsonl").resolve()
    assert resolve_data_path("nope.jsonl") is None


def test_outside_a_hydra_job_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.jsonl").write_text("{}\n")
    assert resolve_data_path("mine.jsonl") == (tmp_path / "mine.jsonl").resolve()


def test_a_hydra_config_left_from_an_earlier_job_is_not_the_launch_folder(in_a_chdir_job, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mine.jsonl").write_text("{}\n")
    monkeypatch.chdir(elsewhere)  # not the job's folder: the job is over (or never changed directory)
    assert resolve_data_path("mine.jsonl") == (elsewhere / "mine.jsonl").resolve()


def test_the_configs_other_relative_paths_are_read_from_the_launch_folder_too(in_a_chdir_job):
    # init_from, objective.include_path and the user's modules (objective.function, GRPO rewards) were read from
    # the run folder: "init_from: no such directory", "does not exist", "cannot import"
    from types import SimpleNamespace

    from ftsweep.config.harness import include_folder
    from ftsweep.config.imports import import_callable
    from ftsweep.stages.init_from import init_adapters, init_from_problem

    launch = in_a_chdir_job
    (launch / "my_rewards_chdir.py").write_text("def score(rows):\n    return 1.0\n")
    assert import_callable("my_rewards_chdir:score", "objective.function")([]) == 1.0
    (launch / "tasks").mkdir()
    assert include_folder("tasks") == str((launch / "tasks").resolve())
    sft = launch / "runs" / "sft"
    (sft / "adapter").mkdir(parents=True)
    (sft / "adapter" / "adapter_config.json").write_text("{}")
    cfg = SimpleNamespace(get=lambda key: "runs/sft" if key == "init_from" else None,
                          quantization=SimpleNamespace(method="none"), lora=SimpleNamespace(enabled=True),
                          stage=SimpleNamespace(name="dpo"))
    assert "no such directory" not in (init_from_problem(cfg) or "")
    assert init_adapters("runs/sft") == [sft / "adapter"]


@pytest.mark.parametrize("kind", ["shards", "save_to_disk", "save_to_disk_dict"])
def test_a_relative_data_folder_is_read_from_the_launch_folder(in_a_chdir_job, compose, kind):
    # before: a folder of shards or a save_to_disk folder given relative passed the check made from the launch folder,
    # then the chdir run read its name as a Hub dataset: "data/mine: cannot load the Hub dataset (ConnectionError ...)"
    from datasets import Dataset, DatasetDict

    from ftsweep.data.sources import read_records, resolve_source

    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(4)]
    folder = in_a_chdir_job / "data" / "mine"
    if kind == "shards":
        folder.mkdir(parents=True)
        (folder / "part-00.jsonl").write_text("".join(f'{{"instruction": "q{i}", "output": "a{i}"}}\n' for i in range(4)))
    elif kind == "save_to_disk":
        Dataset.from_list(rows).save_to_disk(folder)
    else:
        DatasetDict(train=Dataset.from_list(rows)).save_to_disk(folder)
    d = compose("data=custom_json", "data.path=data/mine").data
    got = [r.row["output"] for r in read_records(resolve_source("data/mine", "auto"), d)]
    assert got == [r["output"] for r in rows]
