"""Hydra's shell completion (``-sc install=bash``) for ``ftsweep train``: the script it prints registers the
``ftsweep`` command (it registered two commands, ``ftsweep`` and ``train``), and the query that script runs,
``ftsweep -sc query=bash`` with the shell's ``COMP_LINE``, completes the subcommand and then train's overrides
(it failed: ``unknown command '-sc'``, and Hydra read the word ``train`` as an override)."""

from __future__ import annotations

import pytest

from ftsweep.cli import main


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_bash_script_registers_the_ftsweep_command(capsys):
    code, out, err = _run(capsys, ["train", "-sc", "install=bash"])
    assert code == 0, err
    last = [ln for ln in out.splitlines() if "complete -o nospace" in ln]
    assert len(last) == 1 and last[0].endswith("-F hydra_bash_completion ftsweep"), last
    assert "ftsweep train" not in out


def test_the_fish_script_registers_the_ftsweep_command(capsys):
    code, out, err = _run(capsys, ["train", "-sc", "install=fish"])
    assert code == 0, err
    assert "complete -c ftsweep -x -a '(hydra_fish_completion)'" in out
    assert "ftsweep train" not in out


@pytest.mark.parametrize(("line", "expected", "absent"), [
    ("ftsweep tr", ["train"], ["inspect"]),
    ("ftsweep ", ["train", "inspect", "lr-find", "report"], []),
    ("ftsweep train lor", ["lora="], ["model="]),
    ("ftsweep train lora=", ["lora=r16", "lora=r8"], []),
    ("ftsweep train optimizer.l", ["optimizer.lr="], []),
    ("ftsweep train -m lora=r8 trainer.max_s", ["trainer.max_steps="], []),
])
def test_the_query_completes_the_subcommand_then_trains_overrides(capsys, monkeypatch, line, expected, absent):
    monkeypatch.setenv("COMP_LINE", line)
    monkeypatch.setenv("COMP_POINT", str(len(line)))
    code, out, err = _run(capsys, ["-sc", "query=bash"])
    assert code == 0, err
    words = out.split()
    for word in expected:
        assert word in words, (word, out[:500], err[-2000:])
    for word in absent:
        assert word not in words, (word, out[:500])


def test_completion_without_its_subcommand_is_one_line_exit_2(capsys):
    code, _out, err = _run(capsys, ["train", "--shell-completion"])
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ftsweep: error: --shell-completion"), err
    assert "install=bash" in lines[0]


def test_the_schemas_in_hydras_store_are_no_options(capsys, monkeypatch):
    """``lora=lora_schema`` (the dataclass every lora option is checked against) was offered by the completion and
    accepted by ``ftsweep train`` (it trained with the schema's defaults); it is no option of the group."""
    monkeypatch.setenv("COMP_LINE", "ftsweep train lora=")
    code, out, err = _run(capsys, ["-sc", "query=bash"])
    assert code == 0, err
    assert "lora=r16" in out.split() and "lora_schema" not in out
    code, _out, err = _run(capsys, ["train", "--cfg", "job", "lora=lora_schema"])
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == ["ftsweep: error: lora=lora_schema: no such option; available: none, r16, r16_all_linear, r8"]
