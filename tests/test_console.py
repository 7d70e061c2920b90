"""ftsweep.console.copied_to: a single run's console output kept in its log file."""

from __future__ import annotations

import logging
import sys

from ftsweep.console import copied_to, say


def test_console_output_is_copied_to_the_log_with_bars_at_their_last_state(tmp_path, capsys):
    log_path = tmp_path / "train.log"
    log_path.write_text("[hydra] an earlier record\n")  # Hydra's own records stay: the file is appended to
    handler = logging.StreamHandler(sys.stderr)  # a library's logger that writes to the console itself
    library = logging.getLogger("some_library_test_console")
    library.addHandler(handler)
    library.propagate = False
    try:
        with copied_to(log_path) as log_only:
            say("data: 10 rows")
            print("{'loss': 1.0}")
            sys.stderr.write("\r  0%|          | 0/4")
            sys.stderr.write("\r 50%|#####     | 2/4")
            sys.stderr.write("\r100%|##########| 4/4\n")
            print("\x1b[1mbold\x1b[0m line")
            library.warning("a library warning")
            print("windows\r\nline end", end="")  # the last line has no newline: written at the end
            log_only.write("ftsweep: error: only in the log\n")
        assert handler.stream is sys.stderr  # the library's handler writes to the console again
    finally:
        library.removeHandler(handler)
    lines = log_path.read_text().splitlines()
    assert lines[:5] == ["[hydra] an earlier record", "ftsweep: data: 10 rows", "{'loss': 1.0}",
                         "100%|##########| 4/4", "bold line"]
    assert lines[5] == "a library warning"
    assert lines[-3:] == ["windows", "ftsweep: error: only in the log", "line end"]  # an unended line: at the end
    captured = capsys.readouterr()
    assert "only in the log" not in captured.err + captured.out  # file-only
    assert "\r 50%" in captured.err and "\x1b[1mbold" in captured.out  # the console is as it was


def test_the_copy_keeps_the_console_streams_tty_answer(tmp_path):
    with copied_to(tmp_path / "train.log"):
        assert sys.stderr.isatty() is sys.__stderr__.isatty() or not hasattr(sys.__stderr__, "isatty")
        assert sys.stdout.encoding


def test_a_library_closing_the_stderr_it_took_during_a_run_leaves_the_console_open(tmp_path, monkeypatch):
    # absl's log handler (rouge_score) closes the stream it took as stderr when logging is reconfigured, unless it
    # is sys.stderr then; taken during a run, that stream is the copy's, whose close reached the console before
    import io

    console = io.StringIO()
    monkeypatch.setattr(sys, "stderr", console)
    with copied_to(tmp_path / "train.log"):
        taken = sys.stderr
        print("during the run", file=taken)
    taken.close()
    assert not console.closed and console.getvalue() == "during the run\n"
    print("after it", file=taken)  # still the console (the log file is closed: not copied)
    assert console.getvalue().endswith("after it\n")
    assert (tmp_path / "train.log").read_text() == "during the run\n"
