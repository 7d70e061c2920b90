"""``ftsweep dashboard`` (optuna-dashboard on a study, read-only) and what the sweep stores for it.

Fast tests build studies in-process and talk to the server over HTTP; the ``slow`` tests run sweeps and load
the page in headless Chromium (installed by scripts/browser.sh, which CI runs too).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ftsweep import cli
from ftsweep import dashboard as dash
from ftsweep.sweeper import watch

# one worker runs this module: its module-scoped fixtures are built once (scripts/test.sh: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("dashboard")

ROOT = Path(__file__).resolve().parents[1]
PLANTED = {"HF_TOKEN": "hf_planted_token_4815162342", "WANDB_API_KEY": "planted-wandb-key-0123456789abcdef",
           "PGPASSWORD": "planted-pg-password-77"}


def make_study(sweep_dir: Path, kind: str = "sqlite", name: str = "s", url: str | None = None) -> tuple[str, object]:
    """A study as the sweeper writes it: one COMPLETE trial, one PRUNED (with intermediate values)."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    from ftsweep.sweeper.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    url = url or (f"sqlite:///{sweep_dir / 'study.db'}" if kind == "sqlite" else f"journal:{sweep_dir / 'study.journal'}")
    study = optuna.create_study(storage=open_storage(url), study_name=name)
    study.set_user_attr("ftsweep:sweep_dir", str(sweep_dir))
    for state in (TrialState.COMPLETE, TrialState.PRUNED):
        t = study.ask({"lr": FloatDistribution(1e-4, 1e-2, log=True)})
        t.report(2.0, 4)
        study.tell(t, 1.5) if state == TrialState.COMPLETE else study.tell(t, state=state)
    return url, study


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli.main(["dashboard", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("dash") / "sw"
    make_study(d)
    return d


class Served:
    """optuna-dashboard served in a thread, as ``ftsweep dashboard`` serves it."""

    def __init__(self, url: str, sweep_dir: Path | None = None):
        self.storage = dash.open_readonly(url)
        self.server = dash.make_server(self.storage, "127.0.0.1", 0, dash.artifact_dir(sweep_dir))
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base + path, timeout=30) as r:
            return r.read()

    def json(self, path: str) -> dict:
        return json.loads(self.get(path))


# ------------------------------------------------------------------------------------------ bad input
def one_line_error(rc: int, out: str, err: str) -> str:
    assert rc == 2, (rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ftsweep: error: "), err
    assert out == ""
    return lines[0]


def test_folder_without_study(tmp_path, capsys):
    line = one_line_error(*run_cli([str(tmp_path)], capsys))
    assert f"{tmp_path}: no study.db or study.journal here" in line
    line = one_line_error(*run_cli([str(tmp_path / "nope")], capsys))
    assert "nope: no such sweep directory" in line


def test_no_sweep_here(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(*run_cli([], capsys))
    assert "no sweep found" in line and "outputs/sweeps" in line


def test_default_is_newest_sweep(tmp_path, monkeypatch):
    for name in ("old", "new"):
        (tmp_path / "outputs" / "sweeps" / name).mkdir(parents=True)
        (tmp_path / "outputs" / "sweeps" / name / "study.db").touch()
    (tmp_path / "outputs" / "sweeps" / "nostudy").mkdir()
    os.utime(tmp_path / "outputs/sweeps/old/study.db", (time.time() - 100, time.time() - 100))
    monkeypatch.chdir(tmp_path)
    url, sweep_dir = dash.resolve_target(None)
    assert sweep_dir == (tmp_path / "outputs/sweeps/new").resolve()
    assert url == f"sqlite:///{sweep_dir / 'study.db'}"


def test_unreadable_storage(tmp_path, capsys):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "study.db").write_text("not a database\n" * 100)
    line = one_line_error(*run_cli([str(tmp_path / "bad")], capsys))
    assert re.search(r"cannot open sqlite:///.*bad/study\.db: file is not a database", line), line
    line = one_line_error(*run_cli([f"journal:{tmp_path}/missing.journal"], capsys))
    assert f"cannot read the study file {tmp_path}/missing.journal: No such file or directory" in line
    assert not (tmp_path / "missing.journal").exists()  # nothing created


def test_unreachable_postgres_and_password_in_url(capsys):
    pytest.importorskip("psycopg")
    line = one_line_error(*run_cli(["postgresql://u@127.0.0.1:1/db"], capsys))
    assert "cannot open postgresql://u@127.0.0.1:1/db" in line and "refused" in line.lower()
    rc, out, err = run_cli([f"postgresql://u:{PLANTED['PGPASSWORD']}@127.0.0.1:1/db"], capsys)
    line = one_line_error(rc, out, err)
    assert "PGPASSWORD" in line and PLANTED["PGPASSWORD"] not in err


def test_unknown_study_lists_names(sweep, capsys):
    line = one_line_error(*run_cli([str(sweep), "--study", "nope"], capsys))
    assert line.endswith("no study 'nope' in sqlite:///" + str(sweep / "study.db") + "; studies there: s")


def test_port_in_use(sweep, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_line_error(*run_cli([str(sweep), "--port", str(port)], capsys))
    assert f"--port: cannot listen on 127.0.0.1:{port}: Address already in use" in line


@pytest.mark.parametrize("port", ["-1", "99999"])
def test_a_port_out_of_range_is_one_line(tmp_path, capsys, port):
    assert one_line_error(*run_cli([str(tmp_path), "--port", port], capsys)) == (
        f"ftsweep: error: --port: must be 1 to 65535, or 0 for a free port (got {port})")


# ------------------------------------------------------------------------------------------ serving
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_serves_study_read_only(tmp_path, kind):
    """The API the page polls shows the trials; the study file is byte-identical afterwards; writes fail."""
    url, _ = make_study(tmp_path / "sw", kind)
    path = tmp_path / "sw" / ("study.db" if kind == "sqlite" else "study.journal")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with Served(url) as s:
        studies = s.json("/api/studies")["study_summaries"]
        assert [x["study_name"] for x in studies] == ["s"]
        doc = s.json(f"/api/studies/{studies[0]['study_id']}?after=0")
        assert [t["state"] for t in doc["trials"]] == ["Complete", "Pruned"]
        assert doc["trials"][1]["intermediate_values"] == [{"step": 4, "value": 2.0}]
        assert b"<html" in s.get("/dashboard").lower()
        from optuna.exceptions import StorageInternalError

        with pytest.raises((StorageInternalError, PermissionError)):  # the dashboard's writes (notes, delete) fail
            s.storage.set_study_user_attr(studies[0]["study_id"], "x", 1)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert [p.name for p in (tmp_path / "sw").iterdir()] == [path.name]  # no lock or journal file left


@pytest.mark.slow  # starts a PostgreSQL server (tests/pg_server.py)
def test_postgres_read_only(tmp_path, monkeypatch):
    """PostgreSQL: the password comes from PGPASSWORD; the dashboard's connection is read-only."""
    pytest.importorskip("psycopg")
    import pg_server
    from optuna.exceptions import StorageInternalError

    server = pg_server.start_or_skip()
    try:
        with_password = server.createdb("dash")
        make_study(tmp_path, url=with_password)
        url = with_password.replace(f":{pg_server.PASSWORD}@", "@")
        monkeypatch.setenv("PGPASSWORD", pg_server.PASSWORD)
        with Served(url) as s:
            doc = s.json("/api/studies/1?after=0")
            assert [t["state"] for t in doc["trials"]] == ["Complete", "Pruned"]
            with pytest.raises(StorageInternalError):
                s.storage.set_study_user_attr(1, "x", 1)
            s.storage.engine.dispose()
    finally:
        server.stop()


def test_cli_prints_url_binds_loopback_and_stops(sweep, capsys, monkeypatch):
    """`ftsweep dashboard SWEEP_DIR`: the URL, a page, a clean stop on Ctrl-C; a public --host warns."""
    proc = subprocess.Popen([sys.executable, "-m", "ftsweep", "dashboard", str(sweep), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert first.startswith(f"ftsweep dashboard: study s (2 trials) in sqlite:///{sweep}/study.db")
        m = re.search(r"http://127\.0\.0\.1:(\d+)/dashboard/studies/1 ", second)
        assert m, second
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/api/studies/1?after=0", timeout=30) as r:
            assert len(json.loads(r.read())["trials"]) == 2
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out.strip() == "ftsweep dashboard: stopped" and err == ""
    with pytest.raises(ConnectionRefusedError):  # the server is gone
        socket.create_connection(("127.0.0.1", int(m.group(1))), timeout=5)

    served = []
    monkeypatch.setattr(dash, "serve", lambda server: served.append(server.server_address) or server.server_close())
    rc, out, err = run_cli([str(sweep), "--port", "0", "--host", "0.0.0.0"], capsys)
    assert rc == 0 and served[0][0] == "0.0.0.0"
    assert "warning: --host 0.0.0.0" in err and "no authentication" in err and "ssh -N -L" in err


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _block_sigint() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


@pytest.mark.parametrize("inherited", [_ignore_sigint, _block_sigint], ids=["ignored", "blocked"])
def test_ctrl_c_stops_it_when_the_parent_ignored_or_blocked_sigint(sweep, inherited):
    """Both are inherited across exec (a background job of a non-interactive shell ignores SIGINT); the
    dashboard still stops on Ctrl-C."""
    proc = subprocess.Popen([sys.executable, "-m", "ftsweep", "dashboard", str(sweep), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=inherited)
    try:
        _, second = proc.stdout.readline(), proc.stdout.readline()
        port = re.search(r"http://127\.0\.0\.1:(\d+)/", second).group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/1?after=0", timeout=30):
            pass  # answered: it is serving, with its Ctrl-C handler in place
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out.strip() == "ftsweep dashboard: stopped", err


def test_stops_when_the_sweep_process_is_gone(sweep):
    """The sweeper's dashboard exits by itself when the sweep process dies (kill -9 included)."""
    parent = subprocess.Popen(["sleep", "60"])
    proc = subprocess.Popen([sys.executable, "-m", "ftsweep", "dashboard", str(sweep), "--port", "0"],
                            env={**os.environ, dash.PARENT_ENV: str(parent.pid)}, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("ftsweep dashboard: study s")
        parent.kill()
        parent.wait()
        assert proc.wait(timeout=20) == 0
    finally:
        parent.kill()
        proc.kill()
    assert proc.stdout.read().strip().endswith("ftsweep dashboard: stopped")


def test_metric_names(tmp_path):
    _, study = make_study(tmp_path / "sw")
    watch.label_study(study, ["eval_loss"])
    with Served(f"sqlite:///{tmp_path / 'sw' / 'study.db'}") as s:
        assert s.json("/api/studies/1?after=0")["objective_names"] == ["eval_loss"]


# ------------------------------------------------------------------------------------------ what ftsweep stores
def test_trial_attributes():
    doc = {"wandb_run_url": "https://wandb.ai/me/p/runs/abc", "memory_estimate_mib": 2000, "peak_memory_mb": 1500.04,
           "train_tokens": 12345, "pruned_at_step": 40}
    assert watch.trial_attributes(doc, "pruned", None, oom_retried=True) == {
        "wandb_url": "https://wandb.ai/me/p/runs/abc", "memory_estimate_mib": 2000.0, "memory_peak_mib": 1500.0,
        "memory_peak_measure": "cuda: max allocated", "memory_peak_vs_estimate": 0.75, "trained_tokens": 12345,
        "status_reason": "pruned at step 40 (after an OOM re-run with half the micro-batch)"}
    cpu = {"memory_estimate_mib": 180.0, "peak_memory_mb": 676.4, "peak_rss_mb": 676.4, "rss_before_model_mb": 617.8}
    assert watch.trial_attributes(cpu, "complete", None, False) == {  # a CPU run: RSS growth from the model on
        "memory_estimate_mib": 180.0, "memory_peak_mib": 58.6, "memory_peak_measure": "cpu: growth of peak RSS",
        "memory_peak_vs_estimate": 0.326, "status_reason": "complete"}
    warm = {**cpu, "peak_memory_mb": 778.23, "peak_rss_mb": 778.23, "rss_before_model_mb": 778.3}  # a reused worker
    assert watch.trial_attributes(warm, "complete", None, False)["memory_peak_mib"] == 0.0  # was -0.1
    assert watch.trial_attributes({}, "failed", "oom: CUDA out of memory", False) == {
        "status_reason": "failed: oom: CUDA out of memory"}
    assert watch.trial_attributes({}, "complete", None, False) == {"status_reason": "complete"}


def test_files_stored_and_served_without_secrets(tmp_path, monkeypatch):
    """Trial and report files reach the dashboard through the artifact store, with planted secrets masked."""
    import optuna
    from optuna.artifacts import get_all_artifact_meta
    from optuna.distributions import FloatDistribution

    from ftsweep.sweeper.storage import open_storage

    for k, v in PLANTED.items():
        monkeypatch.setenv(k, v)
    sweep_dir = tmp_path / "sw"
    url, _ = make_study(sweep_dir)
    study = optuna.load_study(study_name="s", storage=open_storage(url))
    leak = f"token {PLANTED['HF_TOKEN']} url postgresql://u:{PLANTED['PGPASSWORD']}@h/db"
    trial_dir = sweep_dir / "trial_2"
    trial_dir.mkdir()
    doc = {"status": "complete", "eval_loss": 1.2, "note": leak,
           "eval_history": [{"step": 0, "eval_loss": 2.0}, {"step": 10, "eval_loss": 1.2}]}
    (trial_dir / "metrics.json").write_text(json.dumps(doc))
    (trial_dir / "log_history.json").write_text(json.dumps([{"step": s, "loss": 3.0 - s / 10} for s in (2, 4, 6)]))
    (trial_dir / "predictions.jsonl").write_text(json.dumps({"prediction": leak}) + "\n")
    trial = study.ask({"lr": FloatDistribution(1e-4, 1e-2, log=True)})
    for k, v in watch.trial_attributes(doc, "failed", leak, False).items():
        trial.set_user_attr(k, v)
    assert watch.upload_trial_files(trial, trial_dir, doc, sweep_dir) == [
        "metrics.json", "learning_curve.png", "predictions.jsonl"]
    study.tell(trial, 1.2)
    assert (trial_dir / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (sweep_dir / "plots").mkdir()
    shutil.copy(trial_dir / "learning_curve.png", sweep_dir / "plots" / "optimization_history.png")
    (sweep_dir / "trials.md").write_text(f"| trial | reason |\n| 2 | {leak} |\n")
    (sweep_dir / "best.yaml").write_text("# @package _global_\noptimizer:\n  lr: 0.001\n")
    for _ in range(2):  # a resumed sweep re-writes its report: each file stays listed once
        assert watch.upload_study_files(study, sweep_dir, sweep_dir) == [
            "trials.md", "best.yaml", "optimization_history.png"]
    assert sorted(m.filename for m in get_all_artifact_meta(study)) == [
        "best.yaml", "optimization_history.png", "trials.md"]

    stored = list((sweep_dir / "artifacts").iterdir())
    assert len(stored) == 6
    with Served(url, sweep_dir) as s:
        page = s.json("/api/studies/1?after=0")
        t = page["trials"][2]
        files = {a["filename"]: a["artifact_id"] for a in t["artifacts"]}
        assert sorted(files) == ["learning_curve.png", "metrics.json", "predictions.jsonl"]
        bodies = [s.get(f"/artifacts/1/{t['trial_id']}/{files[n]}")
                  for n in ("metrics.json", "learning_curve.png", "predictions.jsonl")]
        bodies += [s.get(f"/artifacts/1/{a['artifact_id']}") for a in page["artifacts"]]
        everything = b"".join([json.dumps(page).encode(), s.get("/dashboard"), *bodies,
                               *(p.read_bytes() for p in stored)])
    assert json.loads(bodies[0])["eval_loss"] == 1.2 and bodies[1][:4] == b"\x89PNG"
    assert b"***" in bodies[0] and b"***" in bodies[2]  # the planted values were there, and were masked
    for v in PLANTED.values():
        assert v.encode() not in everything, v


# ------------------------------------------------------------------------------------------ in a browser
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Selenium (scripts/browser.sh installs Debian's chromium + chromium-driver)."""
    setup = subprocess.run(["bash", str(ROOT / "scripts" / "browser.sh")], check=False, capture_output=True, text=True)
    if setup.returncode != 0:
        pytest.skip(f"no headless Chromium: {setup.stderr.strip().splitlines()[-1] if setup.stderr.strip() else 'browser.sh failed'}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_text(driver, pattern: str, timeout: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(pattern, page_text(driver))
        if m or time.monotonic() > deadline:
            assert m, f"{pattern!r} not on the page after {timeout} s:\n{page_text(driver)[:2000]}"
            return m
        time.sleep(0.5)


def fake_sweep_args(sweep_dir: Path, n_trials: int, *extra: str, report: bool = True) -> list[str]:
    """A sweep of fake trials (tests/fake_trial.py); the median pruner may prune from the second trial on."""
    from sweep_helpers import sweep_args

    args = sweep_args(sweep_dir, "hydra.sweeper.pruner.n_startup_trials=1", *extra, n_trials=n_trials)
    return [a for a in args if a != "hydra.sweeper.report=false" or not report]


@pytest.mark.slow
def test_browser_shows_the_study(browser, tmp_path):
    """A short sweep (one trial pruned), then `ftsweep dashboard` on it: the rendered page shows the study
    name, the number of trials, the pruned trial, ftsweep's attributes and files; no planted secret anywhere."""
    from sweep_helpers import run

    sweep_dir = tmp_path / "sw"
    r = run(fake_sweep_args(sweep_dir, 2), cwd=tmp_path, FAKE_PLAN={"1": "bad"}, FAKE_CURVE="1", **PLANTED)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"watch it live: ftsweep dashboard {sweep_dir}" in r.stderr + r.stdout
    port = free_port()
    env = {**os.environ, **PLANTED}
    proc = subprocess.Popen([sys.executable, "-m", "ftsweep", "dashboard", str(sweep_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert "(2 trials)" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}/dashboard"
        browser.get(base)
        wait_text(browser, r"\bt\b[\s\S]*Direction: MINIMIZE")
        browser.get(f"{base}/studies/1/trials")
        wait_text(browser, r"2 Trials")
        text = wait_text(browser, r"Trial 1\s+Pruned").string
        assert re.search(r"Trial 0\s+Complete", text) and "t (id=1)" in text
        # ftsweep's attributes and files of trial 0 (fake_trial.py reports 4096 tokens, 1000 of 1200 MiB)
        for shown in ("status_reason complete", "trained_tokens 4096", "memory_estimate_mib 1200",
                      "memory_peak_mib 1000", "memory_peak_vs_estimate 0.833", "metrics.json", "learning_curve.png"):
            assert shown in text, shown
        time.sleep(1)  # let the intermediate-values plot draw
        shot = tmp_path / "dashboard.png"
        browser.save_screenshot(str(shot))
        assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 20_000
        if os.environ.get("FTSWEEP_UPDATE_SCREENSHOT"):  # the README's picture (docs/dashboard.png)
            shutil.copy(shot, ROOT / "docs" / "dashboard.png")
        sources = [browser.page_source]
        browser.get(f"{base}/studies/1")
        wait_text(browser, r"Study Artifacts[\s\S]*trials\.md")
        wait_text(browser, r"eval_loss")  # set_metric_names: not "Objective 0"
        sources.append(browser.page_source)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    logs = out + err + "".join(sources) + r.stdout + r.stderr
    for v in PLANTED.values():
        assert v not in logs


@pytest.mark.slow
def test_browser_watches_a_running_sweep(browser, tmp_path):
    """hydra.sweeper.dashboard=true: the page, kept open, sees trials appear and finish; the dashboard stops
    with the sweep."""
    sweep_dir = tmp_path / "sw"
    from sweep_helpers import env

    proc = subprocess.Popen(fake_sweep_args(sweep_dir, 2, "hydra.sweeper.dashboard=true", report=False), cwd=tmp_path,
                            env=env(FAKE_STEP_S="1.5", FAKE_CURVE="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"dashboard: (http://127\.0\.0\.1:(\d+)/dashboard)", line)
            if m:
                break
        assert m, "".join(lines)
        assert not any("started" in x for x in lines), "the URL must come before the first trial"
        url, port = m.group(1), int(m.group(2))
        deadline = time.monotonic() + 60
        while True:  # the dashboard process takes a moment to import
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "dashboard did not answer"
                time.sleep(0.3)
        browser.get(f"{url}/studies/1/trials")
        first = int(wait_text(browser, r"(\d+) Trials?").group(1))
        assert first < 2
        # No reload: the page polls the storage itself. Trial 1 appears after trial 0 finished.
        text = wait_text(browser, r"2 Trials", timeout=120).string
        assert re.search(r"Trial 0\s+Complete[\s\S]*Trial 1\s+(Running|Complete|Pruned)", text), text[:500]
        rest, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, "".join(lines) + rest
    with pytest.raises(ConnectionRefusedError):  # stopped with the sweep
        socket.create_connection(("127.0.0.1", port), timeout=5)


@pytest.mark.slow
def test_live_on_a_journal_file(tmp_path):
    """A journal-file study read while the sweep appends to it: trials appear and change state in what the
    page polls, and the sweep runs to the end undisturbed."""
    from sweep_helpers import env

    sweep_dir = tmp_path / "sw"
    proc = subprocess.Popen(fake_sweep_args(sweep_dir, 2, "hydra.sweeper.storage=journal", report=False),
                            cwd=tmp_path, env=env(FAKE_STEP_S="2.5", FAKE_CURVE="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen: list[list[str]] = []
    try:
        deadline = time.monotonic() + 120
        while not (sweep_dir / "study.journal").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "no journal file"
            time.sleep(0.2)
        with Served(f"journal:{sweep_dir / 'study.journal'}") as s:
            while proc.poll() is None:
                studies = s.json("/api/studies")["study_summaries"]  # a journal's first study has id 0
                doc = s.json(f"/api/studies/{studies[0]['study_id']}?after=0") if studies else None
                states = [t["state"] for t in doc["trials"]] if doc else []
                if not seen or states != seen[-1]:
                    seen.append(states)
                time.sleep(0.3)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert ["Running"] in seen and ["Complete", "Running"] in seen, seen  # trial 0 ran, finished; trial 1 ran
