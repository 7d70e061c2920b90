"""Commands ftsweep prints for the user to paste (continue a stopped run, watch a sweep, the next step after
``ftsweep init``) work as printed when a folder has spaces or Korean in its name. They were printed unquoted
(``cd 새 프로젝트 dir && ...``, ``ftsweep dashboard .../my proj 한글/sweeps/s``), and the resume command's
folder was shell-quoted but not Hydra-quoted, so Hydra refused it ("Hydra reads unquoted values as ASCII only")."""

from __future__ import annotations

import shlex
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

from ftsweep import rundir
from ftsweep.config.keys import override_value


def _overrides(words: list[str]) -> dict[str, object]:
    parser = OverridesParser.create()
    return {o.key_or_group: o.value() for o in parser.parse_overrides(words)}


def test_resume_hint_for_a_korean_folder(tmp_path: Path) -> None:
    run = tmp_path / "my proj 한글" / "실행 1"
    point = run / "checkpoints" / "checkpoint-4"
    point.mkdir(parents=True)
    (point / "trainer_state.json").write_text('{"global_step": 4}')
    (run / ".hydra").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("- logger=none\n- data.path='데이터/학습 파일.jsonl'\n",
                                                   encoding="utf-8")
    hint = rundir.resume_hint(run)
    assert hint is not None and hint.startswith("it saved step 4: continue from there with ftsweep train ")
    words = shlex.split(hint.split(" with ", 1)[1])
    assert words[:2] == ["ftsweep", "train"]
    assert _overrides(words[2:]) == {"logger": "none", "data.path": "데이터/학습 파일.jsonl",
                                     "trainer.resume_from_checkpoint": str(run)}


def test_override_value_quotes_non_ascii() -> None:
    assert override_value("데이터/a.jsonl") == "'데이터/a.jsonl'"
    assert override_value("data/a.jsonl") == "data/a.jsonl"


def test_init_next_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from ftsweep.init import main

    monkeypatch.chdir(tmp_path)
    assert main(["새 프로젝트 dir"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert shlex.split(last.removeprefix("next: "))[:3] == ["cd", "새 프로젝트 dir", "&&"]


def test_watch_line(tmp_path: Path) -> None:
    from ftsweep.sweepdir import SweepDir
    from ftsweep.sweeper.watch import watch_line

    sd = tmp_path / "my proj 한글" / "sweeps" / "s 1"
    line = watch_line(sd, SweepDir(sd).default_storage_url("sqlite"), "s")
    assert shlex.split(line.removeprefix("watch it live: ")) == ["ftsweep", "dashboard", str(sd)]
