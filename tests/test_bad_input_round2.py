"""Bad input, round 2 (issue 21 items 9-14), table-driven like test_bad_input.py: exit 2, exactly one stderr
line naming the field / file / row, and nothing created or changed in the working directory.

Output folders that cannot be made, values that were wrongly accepted, data files whose errors are found
once the run has started (the real recipe runs up to the data: tiny tokenizer, no model), a broken sweep
file, Hydra's own multi-line messages.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types
from collections import namedtuple

import pytest
from sweep_helpers import FAKE_CMD

from ftsweep.cli import main

RUN = ["train", "model=tiny", "logger=none"]
SWEEP = ["train", "-m", "hydra/sweeper=ftsweep_optuna", "model=tiny", "logger=none", "hydra.sweeper.report=false",
         "hydra.sweeper.n_trials=1", "optimizer.lr=tag(log,interval(1e-4,1e-2))"]

# (id, argv, texts the one error line must contain)
CASES = [
    # item 9: the output folder cannot be made
    ("run_dir_is_a_file", [*RUN, "hydra.run.dir=afile"], ["hydra.run.dir", "afile is a file"]),
    ("sweep_dir_under_a_file", [*SWEEP, "hydra.sweep.dir=afile/s"], ["hydra.sweep.dir", "afile is a file"]),
    ("run_dir_read_only", [*RUN, "hydra.run.dir=ro/run"], ["hydra.run.dir", "cannot write in", "/ro"]),
    ("sweep_dir_read_only", [*SWEEP, "hydra.sweep.dir=ro/s"], ["hydra.sweep.dir", "cannot write in", "/ro"]),
    ("disk_full", [*RUN, "hydra.run.dir=full/run"], ["hydra.run.dir", "is full"]),
    # a folder name over the file system's 255 bytes (86 Korean characters): an OSError traceback, exit 1
    ("run_dir_name_too_long", [*RUN, "hydra.run.dir='runs/" + "가" * 86 + "'"], ["hydra.run.dir", "258 bytes", "255"]),
    ("sweep_dir_name_too_long", [*SWEEP, "hydra.sweep.dir=s/" + "a" * 256 + "/x"], ["hydra.sweep.dir", "256 bytes"]),
    # item 10: wrongly accepted values
    ("val_size_fraction_above_1", [*RUN, "data.val_size=1.5"], ["data.val_size", "1.5"]),
    ("val_size_nan", [*RUN, "data.val_size=nan"], ["data.val_size"]),
    ("gpu_not_on_this_machine", [*SWEEP, "hydra.sweeper.gpus=[7]"], ["hydra.sweeper.gpus", "GPU 7"]),
    ("trial_timeout_negative", [*SWEEP, "hydra.sweeper.trial_timeout_s=-5"], ["hydra.sweeper.trial_timeout_s"]),
    # item 11: data errors found once the run started (nothing may stay behind)
    ("data_invalid_json_line", [*RUN, "data.path=bad.jsonl", "data.format=chat"], ["bad.jsonl line 2", "invalid JSON"]),
    ("data_last_turn_user", [*RUN, "data.path=lastuser.jsonl", "data.format=chat"],
     ["lastuser.jsonl line 1", "messages", "last turn"]),
    ("data_empty_messages", [*RUN, "data.path=emptymsgs.jsonl", "data.format=chat"],
     ["emptymsgs.jsonl line 1", "messages"]),
    ("data_empty_jsonl", [*RUN, "data.path=empty.jsonl"], ["empty.jsonl", "the file is empty"]),
    ("data_empty_json", [*RUN, "data.path=empty.json"], ["empty.json", "the file is empty"]),  # item 14
    ("data_object_not_list", [*RUN, "data.path=obj.json"], ["obj.json", "JSON list"]),
    ("data_csv_without_output", [*RUN, "data.path=noout.csv"], ["noout.csv line 2", "'output'", "missing"]),
    ("data_txt_file", [*RUN, "data.path=t.txt"], ["t.txt line 1", "'instruction'", "data.format=text"]),  # a .txt is text rows
    ("data_unknown_extension", [*RUN, "data.path=t.xml"], ["t.xml", "'.xml'", "data.loader"]),
    ("data_directory", [*RUN, "data.path=adir"], ["adir", "the folder holds no data file", "it is empty"]),  # item 14: not "Hub dataset"
    ("data_spreadsheet", [*RUN, "data.path=book.xlsx"], ["book.xlsx", "a spreadsheet workbook ('.xlsx') is not read",
                                                        "save the sheet as CSV"]),
    ("data_spreadsheet_missing", [*RUN, "data.path=gone.xlsx"], ["data.path: no such file 'gone.xlsx'"]),
    # item 13: a broken sweep file is an error only where it is used, naming the file
    ("broken_sweep_file_used", ["train", "sweep=broken", "model=tiny", "logger=none"],
     ["sweep/broken.yaml", "not a valid YAML file"]),
    # item 14: messages
    ("sweep_over_hydra_settings", [*SWEEP, "+hydra.sweeper.params.optimizer.weight_decay=choice(0.0,0.1)"],
     ["hydra.sweeper.params.optimizer.weight_decay: on the command line a search space is given as the key itself: "
      "\"optimizer.weight_decay=choice(0.0,0.1)\""]),
    ("sweep_a_hydra_setting", [*SWEEP, "hydra.sweeper.n_trials=2,3"],
     ["hydra.sweeper.n_trials: Hydra's own settings cannot be swept"]),
    ("non_ascii_unquoted_path", [*RUN, "data.path=données.json"], ["data.path", "quote it", "data.path='données.json'"]),
    ("garbage_study_db", [*SWEEP, "hydra.sweep.dir=gs"], ["hydra.sweeper.storage", "not a database"]),
    ("storage_a_bare_file_name", [*SWEEP, "hydra.sweep.dir=bs", "hydra.sweeper.storage=my.db"],
     ["hydra.sweeper.storage: cannot open my.db", "names its driver (sqlite:///my.db), a journal file journal:my.db"]),
    # a TRL / transformers script's arguments: the override to write instead
    ("trl_style_flag_and_value", ["train", "--learning_rate", "1e-4", "model=tiny"],
     ["--learning_rate: ftsweep train takes overrides (key=value), not --flags: write optimizer.lr=1e-4"]),
    ("trl_style_flag_equals", ["train", "--per_device_train_batch_size=4"],
     ["write trainer.per_device_train_batch_size=4"]),
    ("trl_style_switch", ["train", "--bf16"], ["--bf16", "write trainer.precision=bf16"]),
    ("trl_style_bool_switch", ["train", "--packing"], ["--packing", "write data.packing=true"]),
    ("trl_style_seed", ["train", "--seed", "3"], ["write trainer.seed=3 (or model.tiny.seed / data.seed)"]),
    ("unknown_flag", ["train", "--frobnicate", "3"], ["--frobnicate: ftsweep train takes overrides", "not --flags"]),
    # a whole TRL command line: every flag's override in one line to paste, in the order given
    ("trl_style_command_line", ["train", "--model_name_or_path", "Qwen/Qwen2.5-0.5B", "--learning_rate", "2e-5",
                                "--seed", "3", "--frob", "2", "--bf16"],
     ["--model_name_or_path: ftsweep train takes overrides (key=value), not --flags: write model=hub "
      "model.name_or_path=Qwen/Qwen2.5-0.5B optimizer.lr=2e-5 trainer.seed=3 trainer.precision=bf16 (or "
      "model.tiny.seed / data.seed for --seed) (no key here for: --frob)"]),
    ("run_and_multirun", ["train", "--run", "-m", "model=tiny"], ["--run / --multirun: give one of them"]),
    # a config file given as LLaMA-Factory's CLI takes it: how to keep settings in a file here
    ("config_file_as_argument", ["train", "my_lora_sft.yaml"],
     ["my_lora_sft.yaml: a config file is not an override", "conf/experiment/<name>.yaml", "+experiment=<name>",
      ("; its settings as overrides: model=hub model.name_or_path=meta-llama/Meta-Llama-3-8B-Instruct stage=sft "
       "(no key here for: do_train)")]),
]

FILES = {
    "bad.jsonl": '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n{not json\n',
    "lastuser.jsonl": '{"messages": [{"role": "user", "content": "hi"}]}\n',
    "emptymsgs.jsonl": '{"messages": []}\n',
    "empty.jsonl": "",
    "empty.json": "\n",
    "obj.json": '{"instruction": "hi", "output": "yo"}',
    "noout.csv": "instruction,input\nhi,\n",
    "t.txt": "hello\n",
    "t.xml": "<rows/>\n",
    "book.xlsx": "PK\x03\x04",
    "afile": "x",
    "données.json": '[{"instruction": "hi", "input": "", "output": "hello"}]',
    "gs/study.db": "garbage" * 100,
    "my_lora_sft.yaml": "model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct\nstage: sft\ndo_train: true\n",
}


def tree(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))


def _make_read_only(path) -> bool:
    """A folder nobody may write in, root included (chattr +i); False where that cannot be done."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return True
    chattr = shutil.which("chattr")
    return bool(chattr) and subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode == 0


@pytest.fixture
def project(tmp_path, monkeypatch, request, tiny_model):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FTSWEEP_CONFIG_DIRS", "")  # recorded, so what a command sets in-process (./conf) is undone
    monkeypatch.delenv("FTSWEEP_CONFIG_DIRS")
    monkeypatch.setenv("FTSWEEP_TRIAL_CMD", FAKE_CMD)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # one "GPU" (0), whatever the machine has
    if "[data_" not in request.node.name:  # a case that wrongly passes must not train
        stub = types.ModuleType("ftsweep.train")
        stub.execute = lambda cfg, run_dir, *a, **k: {"status": "complete", "objective": 1.0}
        monkeypatch.setitem(sys.modules, "ftsweep.train", stub)
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    if "broken" in request.node.name:  # (elsewhere its warning would be a second line)
        (tmp_path / "sweep").mkdir()
        (tmp_path / "sweep" / "broken.yaml").write_text("hydra: [unclosed\n  x: :\n")
    (tmp_path / "adir").mkdir()
    (tmp_path / "full").mkdir()
    ro = tmp_path / "ro"
    if not _make_read_only(ro):
        pytest.skip("cannot make a read-only folder here (no chattr)")
    import ftsweep.config.outputs as outputs

    real = shutil.disk_usage
    monkeypatch.setattr(outputs.shutil, "disk_usage", lambda p: namedtuple("U", "total used free")(
        10 << 30, 10 << 30, 4096) if str(p).endswith("/full") else real(p))
    yield tmp_path
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(ro)], capture_output=True)
    ro.chmod(0o755)


@pytest.mark.parametrize(("argv", "texts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(project, capsys, argv, texts):
    assert_one_line_exit_2(project, capsys, argv, texts)


def assert_one_line_exit_2(project, capsys, argv, texts, said: tuple[str, ...] = ()) -> None:
    """``ftsweep argv`` exits 2 with one error line holding every one of ``texts`` (lines starting with ``said``
    are what the run said before: allowed), no traceback, and nothing created or changed under ``project``."""
    before = tree(project)
    try:
        code = main(list(argv))
    except SystemExit as exc:  # found inside Hydra (the sweeper, or the run's data)
        code = exc.code
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip() and not (said and ln.startswith(said))]
    assert code == 2, (code, err[-3000:])
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("ftsweep: error: "), lines[0]
    for text in texts:
        assert text in lines[0], (text, lines[0])
    assert "Traceback" not in out + err
    assert tree(project) == before


def test_a_broken_sweep_file_does_not_break_other_commands(project, capsys):
    assert main([*RUN, "--cfg", "job"]) == 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("ftsweep: warning: ") and "sweep/broken.yaml" in err[0]
    assert "sweep=broken skipped" in err[0]


@pytest.mark.parametrize(("code", "last", "reason"), [
    (-9, "", "killed by signal SIGKILL (kill -9, or the kernel's out-of-memory killer: check the host's free "
             "memory); the trial wrote nothing to trial.log"),
    (-15, "step 3", "killed by signal SIGTERM: step 3"),
    (3, "", "exit code 3; the trial wrote nothing to trial.log"),
    (1, "ValueError: x", "exit code 1: ValueError: x"),
])
def test_a_trial_that_left_no_failure_file_has_a_reason_after_the_colon(code, last, reason):
    from ftsweep.sweeper.outcome import exit_reason

    assert exit_reason(code, last) == reason


def test_a_config_file_that_is_not_utf8_is_named(project, capsys):
    """A user's option file saved as latin-1: the error was the codec's alone ("'utf-8' codec can't decode byte
    0xe9 in position 70"), naming no file. Now the file and the line."""
    (project / "conf" / "data").mkdir(parents=True, exist_ok=True)
    (project / "conf" / "data" / "latin.yaml").write_bytes(
        b"defaults: [data_schema, _self_]\npath: rows.jsonl\ntemplate: custom\ncustom_template:\n"
        b"  prompt_no_input: \"Caf\xe9 {instruction}\"\n  prompt_with_input: \"{instruction} {input}\"\n")
    assert_one_line_exit_2(project, capsys, [*RUN, "data=latin"],
                           ["conf/data/latin.yaml: not valid utf-8 text at line 5 (byte 0xe9)", "save it as UTF-8"])
    # the option listing goes on (it stopped `ftsweep train --help` with a UnicodeDecodeError traceback), and a
    # file saved with a byte-order mark and CRLF (Notepad) keeps its description
    (project / "conf" / "data" / "bomdesc.yaml").write_bytes(
        "\ufeff# 메모장 rows\r\ndefaults: [data_schema, _self_]\r\npath: rows.jsonl\r\n".encode())
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "latin" in out and re.search(r"^\s+bomdesc\s+메모장 rows$", out, re.MULTILINE), out
