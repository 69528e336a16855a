"""Hub pushes of the deploy export: one commit per export, failures that name the exact retry command.

`push_reparameterized(model_or_dir, repo_id)` exports and pushes; `main` is its command line, `riformer-push`
(`python -m riformer_hf.cli push`).
"""

import argparse
import contextlib
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, constants
from huggingface_hub.utils import HFValidationError, validate_repo_id
from torch import nn

from ..errors import UserError
from ..safety import OutputFolder
from .deploy import STALE_WEIGHTS, export_files, export_reparameterized


class HubPushError(RuntimeError):
    """A push to the Hub failed; the local export is complete. `retry_command` pushes it again."""

    def __init__(self, message: str, *, repo_id: str, local_dir: Path, retry_command: str):
        super().__init__(message)
        self.repo_id, self.local_dir, self.retry_command = repo_id, local_dir, retry_command


def upload_export(api: HfApi, folder, repo_id: str, *, token=None, private=None, revision=None, commit_message=None):
    """Create the repo (and branch) if needed, then commit the export in `folder` as one commit. Returns CommitInfo."""
    repo_id = api.create_repo(repo_id, token=token, private=private, exist_ok=True).repo_id
    if revision not in (None, constants.DEFAULT_REVISION):
        api.create_branch(repo_id, branch=revision, token=token, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        allow_patterns=export_files(folder),
        delete_patterns=list(STALE_WEIGHTS),
        commit_message=commit_message or "Upload re-parameterised RIFormer",
        token=token,
        revision=revision,
    )


def upload_checkpoint(api: HfApi, folder, repo_id: str, **upload):
    return api.upload_folder(repo_id=repo_id, folder_path=folder, **upload)


def retry_command(
    model_dir, repo_id: str, *, revision=None, private=None, commit_message=None, push_training_weights=False
) -> str:
    """The shell command that pushes `model_dir` again (endpoint included when it is not the public Hub).

    It runs `python -m riformer_hf.cli push` (what `riformer-push` runs), so it works from any install.
    """
    words = [sys.executable, "-m", "riformer_hf.cli", "push", "--model_dir", str(Path(model_dir).absolute())]
    words += ["--repo_id", repo_id]
    if revision not in (None, constants.DEFAULT_REVISION):
        words += ["--revision", revision]
    if private:
        words.append("--private")
    if commit_message:
        words += ["--commit_message", commit_message]
    if push_training_weights:
        words.append("--push_training_weights")
    prefix = f"HF_ENDPOINT={shlex.quote(constants.ENDPOINT)} " if constants.ENDPOINT != "https://huggingface.co" else ""
    return prefix + shlex.join(words)


def push_failure(error: BaseException, repo_id: str, local_dir, **retry) -> HubPushError:
    """A HubPushError saying what failed, that `local_dir` is complete, and the exact command to retry."""
    command = retry_command(local_dir, repo_id, **retry)
    reason = " ".join(str(error).split()) or type(error).__name__
    message = (
        f"Pushing the re-parameterised RIFormer to the Hub repo {repo_id!r} at {constants.ENDPOINT} failed: "
        f"{type(error).__name__}: {reason}\n"
        f"Nothing local is lost: {Path(local_dir).absolute()} is complete. Once the Hub answers, retry with:\n"
        f"  {command}\n"
        f"(or from Python: riformer_hf.push_reparameterized({str(local_dir)!r}, {repo_id!r}); pass --token or set "
        "HF_TOKEN if the repo needs a write token)"
    )
    return HubPushError(message, repo_id=repo_id, local_dir=Path(local_dir), retry_command=command)


def push_reparameterized(
    model_or_dir,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    push_training_weights: bool = False,
    image_processor=None,
    save_dir=None,
    overwrite: bool = False,
    **card_info,
):
    """Re-parameterise a RIFormer (a model, or a folder in either form) and push the deploy export to `repo_id`.

    A training-form model or checkpoint is folded; a deploy one passes through. The export is written to `save_dir`
    (kept; a folder, or the command's `riformer_hf.safety.OutputFolder`: one holding an earlier model, export or run
    is refused unless `overwrite`, and ends holding only the new export) or a temporary folder, which is removed once
    pushed, and also when the push fails from a folder (the retry command then names that folder); from an in-memory
    model it is kept for the retry command.
    `push_training_weights=True` adds the training form under `training/`. `card_info` goes to `build_model_card`.
    Honours `HF_ENDPOINT`; returns the CommitInfo. Raises `HubPushError` (with the retry command) when the Hub fails.
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UserError(
            f"{repo_id!r} is not a valid Hub repo id ({error}): use `name` or `namespace/name` with letters, digits, "
            "'-', '_' and '.'."
        ) from None
    keep = save_dir is not None
    export = {"image_processor": image_processor, "training_form": push_training_weights, "repo_id": repo_id,
              **card_info}
    if keep:
        if not isinstance(save_dir, OutputFolder):
            reads = [] if isinstance(model_or_dir, nn.Module) else [(None, model_or_dir)]
            save_dir = OutputFolder(save_dir, flag=None, overwrite=overwrite, sources=reads)
        save_dir.check()
        with save_dir.staged() as staging:
            export_reparameterized(model_or_dir, staging, **export)
        local_dir = save_dir.path
    else:
        local_dir = Path(tempfile.mkdtemp(prefix="riformer-export-")) / "export"
        try:
            export_reparameterized(model_or_dir, local_dir, **export)
        except BaseException:
            shutil.rmtree(local_dir.parent, ignore_errors=True)
            raise
    try:
        commit = upload_export(
            HfApi(library_name="riformer_hf"), local_dir, repo_id, token=token, private=private, revision=revision,
            commit_message=commit_message,
        )
    except Exception as error:
        source_dir = None if keep or isinstance(model_or_dir, nn.Module) else Path(model_or_dir)
        if source_dir is not None:
            shutil.rmtree(local_dir.parent, ignore_errors=True)
        retry = {"revision": revision, "private": private, "commit_message": commit_message}
        if source_dir is not None:
            retry["push_training_weights"] = push_training_weights
        raise push_failure(error, repo_id, source_dir or local_dir, **retry) from error
    if not keep:
        shutil.rmtree(local_dir.parent, ignore_errors=True)
    return commit


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="riformer-push",
        description="Push a RIFormer to the Hub in its re-parameterised (deploy) form, with a model card. A "
        "training-form folder (a Trainer checkpoint-N, or save_pretrained output) is folded first; a deploy export "
        "passes through. Honours HF_ENDPOINT and HF_TOKEN.",
    )
    parser.add_argument("--model_dir", required=True, help="folder with config.json + model.safetensors (either form)")
    parser.add_argument("--repo_id", required=True, help="Hub repo, `name` or `namespace/name`; created if missing")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing; default main)")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument("--private", action="store_true", default=None, help="create the repo as private")
    parser.add_argument("--token", default=None, help="write token (default: HF_TOKEN or the saved login)")
    parser.add_argument("--push_training_weights", action="store_true",
                        help="also push the training form under training/ (needs a training-form --model_dir)")
    parser.add_argument("--save_dir", default=None, help="also keep the deploy export in this folder")
    parser.add_argument("--overwrite_output_dir", action="store_true",
                        help="replace an earlier model, export or run in --save_dir: it then holds only the new export")
    parser.add_argument("--dataset", action="append", dest="datasets", help="training dataset Hub id (repeatable)")
    parser.add_argument("--base_model", action="append", help="teacher / base model Hub id (repeatable)")
    parser.add_argument("--license", default=None)
    return parser


def main(argv: list[str] | None = None):
    """`riformer-push`. `--save_dir` is checked before any work and written whole, under its run lock."""
    args = build_parser().parse_args(argv)
    save_dir = None if args.save_dir is None else OutputFolder(
        args.save_dir, "--save_dir", overwrite=args.overwrite_output_dir, sources=[("--model_dir", args.model_dir)])
    with save_dir.claim() if save_dir else contextlib.nullcontext():
        commit = push_reparameterized(
            args.model_dir, args.repo_id, token=args.token, private=args.private, revision=args.revision,
            commit_message=args.commit_message, push_training_weights=args.push_training_weights,
            save_dir=save_dir, datasets=args.datasets, base_model=args.base_model, license=args.license,
        )
    print(f"Pushed the re-parameterised model to {commit.repo_url} ({commit.oid}).")
    return commit


__all__ = ["HubPushError", "main", "push_failure", "push_reparameterized", "retry_command", "upload_export"]
