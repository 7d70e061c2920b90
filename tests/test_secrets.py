"""Secrets: credentials given as overrides are refused (one line naming the environment variable); URL
passwords (storage URLs) are masked in every file a run or a sweep writes and in every message."""

from __future__ import annotations

import sys
import time
import types
from urllib.parse import unquote

import pytest
from sweep_helpers import run, sweep_args

from ftsweep.cli import main
from ftsweep.tracking import mask_url_passwords, secret_override_env

PLANTED = "PLANTEDpw9"
URL = f"postgresql://alice:{PLANTED}@db.example.org:5432/optuna"


@pytest.mark.parametrize(("override", "env"), [
    ("+hf_token=hf_abcdef123", "HF_TOKEN"),
    ("++hub_token=hf_abcdef123", "HF_TOKEN"),
    ("+token=abc", "HF_TOKEN"),
    ("+logger.api_key=abc123", "WANDB_API_KEY"),
    ("+wandb_api_key=abc123", "WANDB_API_KEY"),
    ("+openai_api_key=sk-1", "OPENAI_API_KEY"),
    ("+db_password=hunter2", "PGPASSWORD"),
    ("+secret=s3", "WANDB_API_KEY (W&B) or HF_TOKEN (Hub)"),
    ("+logger.access_token=x", "HF_TOKEN"),
])
def test_secret_overrides_are_refused(tmp_path, monkeypatch, capsys, override, env):
    monkeypatch.chdir(tmp_path)
    for argv in (["train", "model=tiny", "logger=none", override], ["train", "-m", "sweep=quickstart", override]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        key = override.split("=", 1)[0].lstrip("+")
        assert len(err) == 1 and err[0].startswith(f"ftsweep: error: {key}: secrets are read from the environment")
        assert env in err[0] and override.split("=", 1)[1] not in err[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["model.pad_token", "data.eos_token", "data.special_tokens", "max_new_tokens",
                                 "tokenizer", "data.columns.token_count"])
def test_tokenizer_settings_are_no_secrets(key):
    assert secret_override_env(key) is None


def test_mask_url_passwords():
    assert mask_url_passwords(f"storage {URL} and 'mysql+pymysql://u:p@h/d'") == (
        "storage postgresql://alice:***@db.example.org:5432/optuna and 'mysql+pymysql://u:***@h/d'")
    assert mask_url_passwords("postgresql://u@/db?host=/tmp/sock sqlite:////a/b.db") == \
        "postgresql://u@/db?host=/tmp/sock sqlite:////a/b.db"


@pytest.mark.parametrize(("url", "password"), [
    ("postgresql://alice:pw/PLANTEDpw9@db.example.org/x", "pw/PLANTEDpw9"),  # a "/" (SQLAlchemy reads it whole)
    ("postgresql://alice:p@PLANTEDpw9@db.example.org/x", "p@PLANTEDpw9"),  # an unencoded "@"
    ("postgresql://:PLANTEDpw9@db.example.org/x", "PLANTEDpw9"),  # no user name (libpq's default user)
    ("postgresql://alice@db.example.org/x?password=PLANTEDpw9", "PLANTEDpw9"),  # psycopg reads it from the query
    ("postgresql://alice@db.example.org/x?sslmode=require&PASSWORD=PLANTEDpw9&x=1", "PLANTEDpw9"),
    ("postgresql://alice:p%40PLANTEDpw9@db.example.org/x", "p%40PLANTEDpw9"),
    ("postgresql://alice:my PLANTEDpw9@db.example.org/x", "my PLANTEDpw9"),  # a space, unencoded
    ("postgresql://alice:it's PLANTEDpw9@db.example.org/x", "it's PLANTEDpw9"),  # a quote
])
def test_every_form_of_a_url_password_is_found_and_masked(monkeypatch, url, password):
    from ftsweep.dashboard import resolve_target
    from ftsweep.errors import UsageError
    from ftsweep.sweeper.storage import password_of, redact, storage_error
    from ftsweep.sweeper.submitit_backend import _without_secrets

    assert password_of(url) == password
    if " " not in password:  # free text: a space ends the URL; the storage's own password is masked by value
        assert PLANTED not in mask_url_passwords(f"storage: {url} and more")
    assert redact(url) == url.replace(f":{password}@", ":***@").replace(f"={password}", "=***")
    # a driver's error that echoes the password (decoded), or its part after an unencoded "@" as the host name
    decoded = unquote(password)
    echo = RuntimeError(f"failed to resolve host '{decoded.split('@')[-1]}@db.example.org' (password {decoded})")
    line = storage_error(url, echo)
    assert PLANTED not in line and line.startswith("hydra.sweeper.storage: cannot open postgresql://")
    assert line.endswith(": failed to resolve host '***@db.example.org' (password ***)")
    monkeypatch.setenv("FTSWEEP_STORAGE", "")
    assert "FTSWEEP_STORAGE" not in _without_secrets({"FTSWEEP_STORAGE": url})  # not pickled by submitit
    with pytest.raises(UsageError, match="password in the URL"):
        resolve_target(url)  # ftsweep dashboard URL: refused, as a user:password@ one is


def test_a_storage_password_the_url_masks_miss_is_masked_by_value(tmp_path, monkeypatch):
    """A password with an unencoded space (hydra.sweeper.storage='postgresql://u:my pw@h/db', which SQLAlchemy
    accepts): once the storage is opened, every scrubbed text of the process masks it (W&B's arguments, files)."""
    from ftsweep.sweeper.grammar import SweepInputError
    from ftsweep.sweeper.storage import open_storage
    from ftsweep.tracking import masked_argv, scrub

    url = f"postgresql+pg8000://alice:my {PLANTED}x@db.example.org/x"  # no such driver: fails at once
    with pytest.raises(SweepInputError) as err:
        open_storage(url)
    assert PLANTED not in str(err.value) and "alice:***@db.example.org" in str(err.value)
    assert PLANTED not in scrub(f"storage: {url}\n")
    assert PLANTED not in " ".join(masked_argv(["train", f"hydra.sweeper.storage='{url}'"]))


def test_printed_tracebacks_mask_secrets(monkeypatch):
    """The traceback ftsweep prints for a failed run (its cause) or a bug: masked like its last line."""
    import io

    from ftsweep.errors import RunFailed, report

    def raised(err: Exception, cause: Exception | None = None) -> Exception:
        try:
            raise err from cause
        except Exception as e:  # noqa: BLE001
            return e

    monkeypatch.setenv("HF_TOKEN", "hf_PLANTEDtok77")
    cause = raised(RuntimeError(f"cannot reach {URL} with hf_PLANTEDtok77"))
    for err in (raised(RunFailed("training stopped"), cause), cause):
        out = io.StringIO()
        assert report(err, out) == 1
        assert "Traceback" in out.getvalue() and "RuntimeError: cannot reach postgresql://alice:***@" in out.getvalue()
        assert "PLANTED" not in out.getvalue()


def test_an_unset_variable_in_the_storage_url_is_one_line(tmp_path, monkeypatch, capsys):
    """The password from the environment by interpolation, the variable unset: one line naming the key (it was
    Hydra's 160-line traceback, exit 1, from building the sweeper); nothing created."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FTSWEEP_PROBE_PW", raising=False)
    url = "postgresql://alice:${oc.env:FTSWEEP_PROBE_PW}@db.example.org/x"
    assert main(["train", "-m", "sweep=quickstart", f"hydra.sweeper.storage='{url}'"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ftsweep: error: hydra.sweeper.storage: ")
    assert "Environment variable 'FTSWEEP_PROBE_PW' not found" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_printed_configs_mask_secrets(tmp_path, monkeypatch, capsys):
    """--cfg hydra prints the storage URL; --resolve prints what ${oc.env:...} read: both masked."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_PLANTEDtok77")
    monkeypatch.setenv("FTSWEEP_PROBE_PW", PLANTED)
    url = "postgresql://alice:${oc.env:FTSWEEP_PROBE_PW}@db.example.org/x"
    assert main(["train", "-m", "sweep=quickstart", f"hydra.sweeper.storage='{URL}'", "--cfg", "hydra"]) == 0
    out = capsys.readouterr().out
    assert "storage: postgresql://alice:***@db.example.org" in out and PLANTED not in out
    assert main(["train", "-m", "sweep=quickstart", f"hydra.sweeper.storage='{url}'", "--cfg", "hydra",
                 "--resolve"]) == 0
    out = capsys.readouterr().out
    assert "storage: postgresql://alice:***@db.example.org/x" in out and PLANTED not in out
    assert main(["train", "model=tiny", "notes=${oc.env:HF_TOKEN}", "--cfg", "job", "--resolve"]) == 0
    out = capsys.readouterr().out
    assert "notes: ***" in out and "PLANTEDtok" not in out
    assert list(tmp_path.iterdir()) == []


def _stub_train(monkeypatch, seen: list) -> None:
    """Replace the training recipe (torch) by a stub that records the config it was given."""
    stub = types.ModuleType("ftsweep.train")

    def execute(cfg, run_dir, *args, **kwargs):
        seen.append(cfg.notes)
        return {"status": "complete", "objective": 1.0}

    stub.execute = execute
    monkeypatch.setitem(sys.modules, "ftsweep.train", stub)


def _grep(root, text):
    return [str(p) for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_a_trial_masks_url_passwords_in_its_hydra_files(tmp_path, monkeypatch):
    from ftsweep.sweeper import trial

    seen: list = []
    _stub_train(monkeypatch, seen)
    monkeypatch.setattr(trial, "trial_callbacks", lambda ctx: [])
    monkeypatch.setenv("FTSWEEP_TRIAL_ID", "1")
    monkeypatch.setenv("FTSWEEP_STORAGE", URL)
    monkeypatch.setenv("FTSWEEP_TRIAL_NUMBER", "0")
    sd = tmp_path / "s"
    code = trial.main(["model=tiny", "logger=none", f"notes='{URL}'", f"hydra.sweep.dir={sd}",
                       "hydra.sweep.subdir=trial_0", f"hydra.sweeper.storage='{URL}'"])
    assert code == 0 and seen == [URL]  # the run itself gets the real value
    assert (sd / "trial_0" / ".hydra" / "hydra.yaml").is_file()
    assert _grep(tmp_path, PLANTED) == []
    assert "postgresql://alice:***@db.example.org" in (sd / "trial_0" / ".hydra" / "overrides.yaml").read_text()


def test_a_single_run_masks_url_passwords_in_its_hydra_files(tmp_path, monkeypatch):
    seen: list = []
    _stub_train(monkeypatch, seen)
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    assert main(["train", "model=tiny", "logger=none", f"notes='{URL}'", f"hydra.run.dir={run_dir}"]) == 0
    assert seen == [URL] and (run_dir / ".hydra" / "config.yaml").is_file()
    assert _grep(tmp_path, PLANTED) == []


def test_a_single_run_masks_an_environment_token_given_as_a_value(tmp_path, monkeypatch):
    """HF_TOKEN's value typed into a setting that is no credential key (notes=...): kept out of .hydra/ too."""
    token = "hf_PLANTEDtok77"
    seen: list = []
    _stub_train(monkeypatch, seen)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", token)
    run_dir = tmp_path / "run"
    assert main(["train", "model=tiny", "logger=none", f"notes='see {token}'", f"hydra.run.dir={run_dir}"]) == 0
    assert seen == [f"see {token}"] and (run_dir / ".hydra" / "config.yaml").is_file()
    assert _grep(tmp_path, token) == []
    assert "see ***" in (run_dir / ".hydra" / "overrides.yaml").read_text()


@pytest.mark.slow  # ~10 s
def test_hydras_basic_sweeper_writes_and_logs_no_secret(tmp_path, monkeypatch, capsys):
    """hydra/sweeper=basic saves multirun.yaml (the whole config) and logs each job's overrides: both masked."""
    seen: list = []
    _stub_train(monkeypatch, seen)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", "hf_PLANTEDtok77")
    sd = tmp_path / "s"
    assert main(["train", "-m", "hydra/sweeper=basic", "model=tiny", "logger=none", f"notes='{URL} hf_PLANTEDtok77'",
                 f"hydra.sweep.dir={sd}"]) == 0
    assert seen == [f"{URL} hf_PLANTEDtok77"] and (sd / "multirun.yaml").is_file()
    assert _grep(tmp_path, PLANTED) == [] and _grep(tmp_path, "PLANTEDtok") == []
    printed = capsys.readouterr()
    assert "#0 : " in printed.out + printed.err and "PLANTED" not in printed.out + printed.err


@pytest.fixture
def storage_url(request, tmp_path):
    """(storage override or None, the password in it) for a sweep on SQLite or a real PostgreSQL server."""
    if request.param == "sqlite":
        yield None, PLANTED
        return

    import pg_server

    pytest.importorskip("psycopg", reason="psycopg (ftsweep[postgres]) is not installed")
    server = pg_server.start_or_skip()
    try:
        yield server.createdb("planted"), pg_server.PASSWORD
    finally:
        server.stop()


@pytest.mark.slow  # ~10 s each
@pytest.mark.parametrize("storage_url", ["sqlite", "postgresql"], indirect=True)
def test_no_file_of_a_sweep_with_wandb_holds_a_planted_secret(tmp_path, storage_url):
    """Every file the sweep writes, W&B's own (summary run, debug logs, its cache and config folders)
    included: the storage URL's password, a URL password in a value and a token in the environment.

    Also what test_no_file_of_a_sweep_holds_a_planted_url_password checked in a sweep of its own (merged here: the
    same sweep's files, W&B's besides): nor HF_TOKEN's value typed into a setting: the study's attributes,
    trial.log, .hydra/, best.yaml (the URL in it masked), trials.md and the report."""
    url, password = storage_url
    token = "hf_PLANTEDtok77"
    sd = tmp_path / "s"
    extra = [f"hydra.sweeper.storage={url}"] if url else []
    args = sweep_args(sd, *extra, f"notes='{URL} see {token}'", "hydra.sweeper.report=true", n_trials=2)
    args[args.index("logger=none")] = "logger=wandb"
    r = run(args, tmp_path, WANDB_MODE="offline", HF_TOKEN=token, WANDB_DIR=str(tmp_path / "wandb_dir"),
            WANDB_CACHE_DIR=str(tmp_path / "wandb_cache"), WANDB_CONFIG_DIR=str(tmp_path / "wandb_config"),
            WANDB_DATA_DIR=str(tmp_path / "wandb_data"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert (sd / "best.yaml").is_file() and (sd / "trials.md").is_file() and (sd / "report.md").is_file()
    assert "alice:***@" in (sd / "best.yaml").read_text()
    if not url:
        assert (sd / "study.db").is_file()
    (summary_run,) = (tmp_path / "wandb_dir" / "wandb").glob("offline-run-*")
    from wandb_offline import wait_offline_run

    logged = wait_offline_run(summary_run, lambda w: "n_complete" in w["summary"])
    assert logged["summary"]["n_complete"] == 2  # the summary run was written
    log = next(summary_run.glob("run-*.wandb")).read_bytes()
    assert b"hydra.sweeper.n_trials=2" in log  # W&B still records the (masked) program arguments ...
    if url:
        assert url.replace(f":{password}@", ":***@").encode() in log  # ... with the password masked
    for secret in (password, PLANTED, token):
        assert _grep(tmp_path, secret) == [], secret
        assert secret not in r.stdout + r.stderr


def test_wandb_init_records_masked_arguments_and_no_code_or_git(tmp_path, monkeypatch):
    """The one W&B entry (training runs, generate, the sweep summary): the command line goes in masked."""
    from ftsweep.tracking import wandb_init

    monkeypatch.setenv("HF_TOKEN", "hf_PLANTEDtok77")
    argv = ["ftsweep", "train", f"notes='{URL}'", "x=hf_PLANTEDtok77"]
    monkeypatch.setattr(sys, "argv", list(argv))
    run_ = wandb_init(project="p", dir=str(tmp_path), mode="offline", config={"a": 1})
    run_.finish()
    import wandb

    wandb.teardown()  # the service flushes the run's transaction log (finish alone may leave it unwritten)
    assert sys.argv == argv  # the process's own arguments are untouched
    # W&B's service writes the arguments in its run metadata asynchronously, and may not write them at all when
    # the run ends first (a lone process, or a loaded machine: seen once in a full suite after 60 s): wait for
    # them; when written, they are the masked ones. A secret is never anywhere, whether they were written or not.
    deadline = time.monotonic() + 30
    while True:
        logs = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
        data = logs[0].read_bytes() if len(logs) == 1 else b""
        if b"notes=" in data or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(logs) == 1
    if b"notes=" in data:
        assert b"alice:***@db.example.org" in data and b"x=***" in data
    assert _grep(tmp_path, PLANTED) == [] and _grep(tmp_path, "PLANTEDtok77") == []
    assert not list(tmp_path.glob("wandb/offline-run-*/files/code"))


def test_wandb_runs_list_the_installed_packages_read_once_per_process(tmp_path):
    """Every W&B run gets requirements.txt (name==version of each installed package, as W&B's own listing
    writes it) and asks W&B to upload it; a warm worker's second run reuses the first run's reading."""
    from importlib.metadata import version

    import wandb
    from wandb_offline import wait_offline_run

    from ftsweep.tracking import installed_packages, wandb_init

    installed_packages.cache_clear()
    wandb_init(project="p", dir=str(tmp_path / "off"), mode="disabled").finish()  # nothing to list, no error
    for n in range(2):
        run_ = wandb_init(project="p", dir=str(tmp_path / str(n)), mode="offline")
        run_.finish()
    assert installed_packages.cache_info().misses == 1 and installed_packages.cache_info().hits == 1
    wandb.teardown()
    for n in range(2):
        (folder,) = (tmp_path / str(n)).glob("wandb/offline-run-*")
        lines = (folder / "files" / "requirements.txt").read_text().splitlines()
        assert f"torch=={version('torch')}" in lines and f"wandb=={version('wandb')}" in lines
        assert all(line.count("==") == 1 for line in lines)
        # the service may still be writing the run's log under load
        assert "requirements.txt" in wait_offline_run(folder, lambda w: "requirements.txt" in w["files"])["files"]


def _paths_holding(root, text):
    return [str(p) for p in root.rglob("*") if text in str(p.relative_to(root))]


def test_a_run_folder_named_by_its_overrides_holds_no_secret(tmp_path, monkeypatch):
    """``hydra.run.dir=...${hydra.job.override_dirname}`` (Hydra's common pattern) made the overrides a folder name:
    a URL password or HF_TOKEN's value typed into a setting were on disk in the path, where no masking of files
    reaches. The folder name masks them (``***``), as ``.hydra/`` does."""
    token = "hf_PLANTEDtok77"
    seen: list = []
    _stub_train(monkeypatch, seen)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", token)
    assert main(["train", "model=tiny", "logger=none", f"notes='{URL} {token}'",
                 "hydra.run.dir=runs/${hydra.job.override_dirname}"]) == 0
    assert seen == [f"{URL} {token}"]
    assert _paths_holding(tmp_path, PLANTED) == [] and _paths_holding(tmp_path, token) == []
    (run_dir,) = [p.parent for p in tmp_path.glob("runs/**/.hydra")]
    assert "alice:***@" in str(run_dir) and str(run_dir).endswith("optuna ***'")
    assert _grep(tmp_path, PLANTED) == [] and _grep(tmp_path, token) == []


def test_a_sweep_trial_folder_named_by_its_overrides_holds_no_secret(tmp_path, monkeypatch):
    """The sweeper resolves ``hydra.sweep.subdir`` for each trial the way Hydra's launchers do: masked too."""
    from hydra.types import HydraContext

    from ftsweep.config.compose import compose, hydra_session
    from hydra_plugins.ftsweep_sweeper.ftsweep_sweeper import FtsweepOptunaSweeper

    token = "hf_PLANTEDtok77"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.chdir(tmp_path)
    cfg = compose(["model=tiny", "hydra.sweep.subdir=${hydra.job.override_dirname}_${hydra.job.num}"], hydra=True,
                  check=False)
    with hydra_session() as loader:
        sweeper = FtsweepOptunaSweeper()
        sweeper.setup(hydra_context=HydraContext(config_loader=loader, callbacks=None), task_function=None, config=cfg)
        sub = sweeper.trial_subdir(3, ["model=tiny", f"notes='{URL} {token}'", "optimizer.lr=0.001"])
    assert PLANTED not in sub and token not in sub
    assert sub.endswith("_3") and "alice:***@" in sub and "optimizer.lr=0.001" in sub
