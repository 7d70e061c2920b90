"""Bad input found by a Hydra / Optuna user's probe of the command line: exit 2, one line naming the flag or key,
nothing created or changed. A ``--config-dir`` that is not a folder was ignored by every command but ``train``
(which ran on the shipped config, or failed with exit 1)."""

from __future__ import annotations

import pytest
from test_bad_input_round2 import RUN, SWEEP, assert_one_line_exit_2, project  # noqa: F401 -- the fixture, shared

CASES = [
    ("config_dir_missing_train", ["train", "--config-dir", "nope", *RUN[1:]], ["--config-dir", "nope", "no such folder"]),
    ("config_dir_missing_train_short", ["train", "-cd", "nope", *RUN[1:]], ["--config-dir", "nope", "no such folder"]),
    ("config_dir_missing_cfg_job", ["train", "-cd", "nope", "--cfg", "job"], ["--config-dir", "nope"]),
    ("config_dir_missing_estimate", ["train", "--config-dir=nope", "--estimate-memory"], ["--config-dir", "nope"]),
    ("config_dir_is_a_file", ["train", "--config-dir", "afile", "--cfg", "job"], ["--config-dir", "afile", "not a folder"]),
    ("config_dir_missing_inspect", ["inspect", "--config-dir", "nope", "--rows", "1"], ["--config-dir", "nope"]),
    ("config_dir_missing_lr_find", ["lr-find", "-cd", "nope", "--steps", "11", "--out", "lrf"], ["--config-dir", "nope"]),
]


@pytest.mark.parametrize(("argv", "texts"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(project, capsys, argv, texts):  # noqa: F811
    assert_one_line_exit_2(project, capsys, argv, texts)
