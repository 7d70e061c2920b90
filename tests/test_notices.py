"""A first run that speaks: one-time steps (building the tiny model) print progress on the console, in a
sweep too (the trial's notices are relayed to the sweep's console, not only its trial.log)."""

from __future__ import annotations

import io

from sweep_helpers import run, sweep_args

from ftsweep import notices
from ftsweep.sweeper.progress import Progress


def test_notice_goes_to_stderr_and_the_trials_notice_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(notices.ENV, str(tmp_path / ".notices"))
    notices.notice("building something\nslow")
    assert capsys.readouterr().err == "ftsweep: building something\nslow\n"
    assert (tmp_path / ".notices").read_text() == "building something slow\n"  # one line per notice
    monkeypatch.delenv(notices.ENV)
    notices.notice("outside a sweep")
    assert (tmp_path / ".notices").read_text() == "building something slow\n"


def test_ticker_reports_at_most_every_interval_and_at_the_end(monkeypatch, capsys):
    now = [100.0]
    monkeypatch.setattr(notices.time, "monotonic", lambda: now[0])
    t = notices.Ticker("steps", 10, every_s=5.0)
    for step in range(1, 11):
        now[0] += 1.0
        t.step(step)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["ftsweep: steps: 5/10 (5 s, about 5 s left)", "ftsweep: steps: 10/10 done in 10 s"]


def test_progress_relays_only_complete_new_lines(tmp_path):
    out = io.StringIO()
    progress = Progress("s", 4, mode="plain", stream=out)
    path = tmp_path / ".notices"
    progress.relay_notices(0, path)  # no file yet: nothing
    path.write_text("building the tiny model\nhalf a li")
    progress.relay_notices(0, path)
    progress.relay_notices(0, path)  # nothing new
    with open(path, "a") as f:
        f.write("ne\n")
    progress.relay_notices(0, path)
    assert out.getvalue().splitlines() == ["[sweep s] trial 0: building the tiny model", "[sweep s] trial 0: half a line"]


def test_a_notice_two_trials_give_is_said_once(tmp_path):
    """Two warm workers that tokenize the same data at once both warn of it: the sweep's console says it once."""
    out = io.StringIO()
    progress = Progress("s", 4, mode="plain", stream=out)
    for n in (0, 1):
        (tmp_path / f"t{n}").mkdir()
        (tmp_path / f"t{n}" / ".notices").write_text(f"data: warning: 7 of 80 validation rows are copies\nstep {n}\n")
        progress.relay_notices(n, tmp_path / f"t{n}" / ".notices")
    assert out.getvalue().splitlines() == ["[sweep s] trial 0: data: warning: 7 of 80 validation rows are copies",
                                           "[sweep s] trial 0: step 0", "[sweep s] trial 1: step 1"]


def test_tiny_model_build_notices_reach_the_notice_file(tmp_path, monkeypatch):
    from ftsweep.tiny import TinySpec, ensure_tiny

    monkeypatch.setenv(notices.ENV, str(tmp_path / ".notices"))
    ensure_tiny(TinySpec(pretrain_steps=3, num_hidden_layers=1), tmp_path / "cache")
    lines = (tmp_path / ".notices").read_text().splitlines()
    assert lines[0].startswith(f"building the tiny model once into {tmp_path / 'cache' / 'tiny'}")
    assert lines[-1].startswith("tiny model pre-training steps: 3/3 done in ")
    ensure_tiny(TinySpec(pretrain_steps=3, num_hidden_layers=1), tmp_path / "cache")  # cached: silent
    assert (tmp_path / ".notices").read_text().splitlines() == lines


def test_sweep_console_shows_a_trials_notice(tmp_path):
    sd = tmp_path / "sd"
    r = run(sweep_args(sd, n_trials=1), tmp_path, FAKE_NOTICE="building the tiny model once (fake)")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[sweep t] trial 0: building the tiny model once (fake)" in r.stdout


def test_a_long_tokenization_says_how_far_it_is(compose, tmp_path, monkeypatch, capsys):
    import functools
    import json

    from ftsweep.data import build_datasets, pipeline
    from ftsweep.model import load_tokenizer

    rows = [{"instruction": f"Question {i}?", "output": f"Answer {i}."} for i in range(3000)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def build(cache):
        cfg = compose(f"data.path={path}", f"cache_dir={tmp_path / cache}", "data.max_rows=null", "data.val_size=0.1",
                      "model.tiny.pretrain_steps=0")
        capsys.readouterr()
        build_datasets(cfg, load_tokenizer(cfg))
        return [x for x in capsys.readouterr().err.splitlines() if "tokenizing rows" in x]

    assert build("quick") == []  # done within the first interval: no progress line
    monkeypatch.setattr(pipeline, "Ticker", functools.partial(notices.Ticker, every_s=0.0))  # as if each batch were slow
    lines = build("slow")
    # batches of 1000 rows: 2,700 train rows, then the 300 eval rows; the end is the "tokenized in" line
    assert [x.split(" (")[0] for x in lines] == [f"ftsweep: data: tokenizing rows: {n}/3000" for n in (1000, 2000, 2700)]
