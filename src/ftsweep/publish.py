"""Push an adapter or a merged model to the Hugging Face Hub.

The token comes only from ``HF_TOKEN`` or the standard login (``hf auth login``), resolved by
huggingface_hub itself: ftsweep never takes it as an argument or config value and never writes it
(seed 002 pasted one into a notebook). Repositories are created private unless asked otherwise, and
a folder that contains the token anywhere is refused before anything is uploaded.

    ftsweep merge RUN_DIR --push-to-hub USER/NAME               merged model
    python -m ftsweep.publish RUN_DIR/adapter USER/NAME          adapter only
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Never uploaded: trainer checkpoints (optimizer state) and anything that looks like a credential file.
IGNORE = ["checkpoints/*", "**/optimizer.pt", "**/rng_state*.pth", "*.token", ".env"]


def _usage(message: str):
    from ftsweep.config.errors import UsageError

    return UsageError(message)


def resolve_token() -> str:
    """HF_TOKEN, else the token of ``hf auth login``; a clear error when neither is set."""
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise _usage("no Hugging Face token: set HF_TOKEN or run `hf auth login` (tokens are never read from config)")
    return token


def push_token() -> str:
    """The token of a push that can happen: refused up front while the Hub is off (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise _usage("cannot push to the Hub while HF_HUB_OFFLINE is set (offline mode): unset it to push")
    return resolve_token()


def check_no_secret(folder: Path, token: str) -> None:
    """Refuse to upload a folder in which any file contains the token, or another secret this process knows
    (WANDB_API_KEY and the other secret environment variables: ``ftsweep.tracking.SECRET_ENV``)."""
    import os

    from ftsweep.tracking import SECRET_ENV

    needles = {token.encode(): "the Hugging Face token"}
    for name in SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 6 and value != token:
            needles.setdefault(value.encode(), f"the value of {name}")
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            what = next((what for needle, what in needles.items() if needle in data), None)
            if what:
                raise _usage(f"refusing to upload: {path} contains {what}")


def push_folder(folder: str | Path, repo_id: str, *, private: bool = True, commit_message: str | None = None) -> str:
    """Create ``repo_id`` (private by default) and upload ``folder``; returns the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not folder.is_dir():
        raise _usage(f"{folder} is not a directory")
    token = push_token()
    check_no_secret(folder, token)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", ignore_patterns=IGNORE,
            commit_message=commit_message or f"ftsweep: upload {folder.name}",
        )
    except Exception as err:  # noqa: BLE001 -- no network, the Hub down, a wrong token or repo: one line, folder kept
        from ftsweep.errors import Failure
        from ftsweep.tracking import scrub

        reason = scrub(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
        raise Failure(f"could not push {folder} to {repo_id} ({type(err).__name__}: {reason}); the folder is kept: "
                      f"push it later with `ftsweep publish {folder} {repo_id}`") from None
    url = str(getattr(info, "commit_url", info))
    print(f"ftsweep: pushed {folder} to {repo_id} ({'private' if private else 'public'}): {url}")
    return url


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ftsweep publish", description="Upload an adapter or merged model folder to the Hub.")
    p.add_argument("folder", type=Path, help="RUN_DIR/adapter, RUN_DIR/merged, or a run directory (its adapter/)")
    p.add_argument("repo", help="USER/NAME on the Hub")
    p.add_argument("--public", action="store_true", help="create the repo public (default private)")
    p.add_argument("--allow-failed", action="store_true",
                   help="push the adapter of a run that failed or did not finish (refused otherwise)")
    args = p.parse_args(argv)
    from ftsweep.rundir import ADAPTER, FULL_MODEL, RunDir, check_complete

    adapter = RunDir(args.folder).adapter
    folder = adapter if adapter.is_dir() else args.folder
    # a run folder, or its adapter/ (model/): the run must have completed (a merged folder was checked by merge)
    run = args.folder if adapter.is_dir() else args.folder.parent if args.folder.name in (ADAPTER, FULL_MODEL) else None
    if run is not None and RunDir(run).config.is_file():
        check_complete(run, folder, args.allow_failed)
    push_folder(folder, args.repo, private=not args.public)
    return 0


if __name__ == "__main__":
    from ftsweep.cli import main as cli_main

    sys.exit(cli_main(["publish", *sys.argv[1:]]))
