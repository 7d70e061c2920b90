"""Korean text under a locale that is not UTF-8, and an environment without HOME, as ``ftsweep`` runs from a shell.

Under ``LC_ALL=C`` with ``PYTHONUTF8=0`` Python read the command line and file names as ASCII: a Korean config
value or folder became lone surrogates (the tokenizers library refused them: a run in a Korean-named folder failed
saving its tokenizer, a Korean ``data.custom_template`` stopped tokenization with a TypeError), and printing Korean
(``--cfg job``, ``ftsweep inspect``) stopped with a UnicodeEncodeError traceback. ``ftsweep`` now runs itself again
in UTF-8 mode there; under another non-UTF-8 console encoding it writes what it cannot show as escapes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

KO_DATA = """# 한국어 템플릿
defaults: [data_schema, _self_]
path: pkg://ftsweep.demo_data/alpaca_en_demo.json
template: custom
custom_template:
  prompt_no_input: "너는 비서야. {instruction} 답: "
  prompt_with_input: "지시 {instruction} 입력 {input} 답: "
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "conf" / "data").mkdir(parents=True)
    (tmp_path / "conf" / "data" / "ko_mine.yaml").write_text(KO_DATA, encoding="utf-8")
    return tmp_path


def _ftsweep(cwd: Path, *args: str, command: tuple[str, ...] = (sys.executable, "-m", "ftsweep"),
             **env: str) -> subprocess.CompletedProcess[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "PYTHONIOENCODING", "PYTHONUTF8"))}
    return subprocess.run([*command, *args], check=False, cwd=cwd, env={**base, **env}, capture_output=True,
                          timeout=120)


@pytest.mark.parametrize("how", ["module", "script"])
def test_c_locale_prints_and_reads_korean(project: Path, how: str) -> None:
    """``--cfg job`` of a config with Korean values, and a Korean value on the command line, under an ASCII locale:
    exit 0, the values as UTF-8 (was: UnicodeEncodeError, exit 1; the argument as surrogate escapes)."""
    env = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    args = ("train", "--cfg", "job", "data=ko_mine", "notes='메모 한글'")
    command: tuple[str, ...] = (sys.executable, "-m", "ftsweep")
    if how == "script":  # the console script, as a shell runs it
        script = Path(sys.executable).parent / "ftsweep"
        if not script.is_file():
            pytest.skip("no ftsweep console script beside the interpreter")
        command = (str(script),)
    done = _ftsweep(project, *args, command=command, **env)
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-2000:]
    out = done.stdout.decode("utf-8")  # strict: valid UTF-8, no surrogate escapes
    assert "너는 비서야. {instruction} 답: " in out
    assert "notes: 메모 한글" in out


def test_other_console_encoding_escapes_instead_of_failing(project: Path) -> None:
    """A console whose encoding cannot hold Korean (latin-1) gets ``\\uXXXX`` escapes, exit 0."""
    done = _ftsweep(project, "train", "--cfg", "job", "data=ko_mine", PYTHONIOENCODING="latin-1")
    assert done.returncode == 0, done.stderr.decode("latin-1")[-2000:]
    assert "\\ub108\\ub294" in done.stdout.decode("latin-1")  # 너는


def test_home_unset(tmp_path: Path) -> None:
    """``HOME`` unset (a service, ``env -i``): the shipped cache_dir is under the user's home from the password
    database (was: every command stopped with "cache_dir: ... Environment variable 'HOME' not found", exit 2)."""
    import pwd

    base = {k: v for k, v in os.environ.items() if k not in ("HOME", "FTSWEEP_CACHE_DIR")}
    done = subprocess.run([sys.executable, "-m", "ftsweep", "train", "--cfg", "job", "--resolve"], check=False, cwd=tmp_path,
                          env=base, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    home = pwd.getpwuid(os.getuid()).pw_dir
    assert f"cache_dir: {home}/.cache/ftsweep" in done.stdout
