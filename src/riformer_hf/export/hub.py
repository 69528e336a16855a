"""Hub pushes of the deploy export: one commit per export, failures that name the exact retry command.

`push_reparameterized(model_or_dir, repo_id)` exports and pushes a RIFormer; `push_model_folder` pushes a saved
folder: a RIFormer's deploy export, or any other image classifier (a teacher trained with riformer-train) as it is.
`main` is the command line, `riformer-push` (`python -m riformer_hf.cli push`).
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


def push_failure(error: BaseException, repo_id: str, local_dir, what: str = "the re-parameterised RIFormer",
                 **retry) -> HubPushError:
    """A HubPushError saying what failed, that `local_dir` is complete, and the exact command to retry."""
    command = retry_command(local_dir, repo_id, **retry)
    reason = " ".join(str(error).split()) or type(error).__name__
    message = (
        f"Pushing {what} to the Hub repo {repo_id!r} at {constants.ENDPOINT} failed: "
        f"{type(error).__name__}: {reason}\n"
        f"Nothing local is lost: {Path(local_dir).absolute()} is complete. Once the Hub answers, retry with:\n"
        f"  {command}\n"
        f"(or from Python: riformer_hf.export.push_model_folder({str(local_dir)!r}, {repo_id!r}); pass --token or "
        "set HF_TOKEN if the repo needs a write token)"
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


def push_model_folder(model_dir, repo_id: str, *, token=None, private=None, revision=None, commit_message=None,
                      push_training_weights: bool = False, save_dir=None, **card_info):
    """Push a saved model folder: a RIFormer's deploy export (`push_reparameterized`: a training-form folder is
    folded first), or any other image classifier as it is: its weights, config, image processor, code and model card
    (written from the folder when it has none). Returns the CommitInfo; raises `HubPushError` when the Hub fails."""
    from .deploy import folder_model_type

    model_type = folder_model_type(model_dir)
    if model_type == "riformer":
        return push_reparameterized(
            model_dir, repo_id, token=token, private=private, revision=revision, commit_message=commit_message,
            push_training_weights=push_training_weights, save_dir=save_dir, **card_info,
        )
    for flag, value in (("--push_training_weights", push_training_weights), ("--save_dir", save_dir)):
        if value:
            raise UserError(f"{flag} applies to RIFormers (their training and deploy forms); {model_dir} holds a "
                            f"{model_type!r} model, which is pushed as it is: drop {flag}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UserError(f"{repo_id!r} is not a valid Hub repo id ({error}): use `name` or `namespace/name`.") from None
    folder, staging = Path(model_dir), None
    if not (folder / "README.md").is_file() or any(v for v in card_info.values()):
        staging = _with_card(folder, repo_id, card_info)
    upload = {"token": token, "private": private, "revision": revision,
              "commit_message": commit_message or f"Upload {model_type} model"}
    try:
        return upload_export(HfApi(library_name="riformer_hf"), staging or folder, repo_id, **upload)
    except Exception as error:
        retry = {"revision": revision, "private": private, "commit_message": commit_message}
        raise push_failure(error, repo_id, folder, what=f"the {model_type} model", **retry) from error
    finally:
        if staging is not None:
            shutil.rmtree(staging.parent, ignore_errors=True)


def _with_card(folder: Path, repo_id: str, card_info: dict) -> Path:
    """A temporary folder of links to `folder`'s model files plus a model card (`build_classifier_card`: what the
    folder's card records, then `card_info`)."""
    import os

    from transformers import AutoModelForImageClassification

    from ..data.preprocessing import load_image_processor, make_image_processor
    from .model_card import build_classifier_card, card_info_from_folder

    info = {**card_info_from_folder(folder), **{k: v for k, v in card_info.items() if v}}
    model = AutoModelForImageClassification.from_pretrained(folder)
    processor = load_image_processor(folder) or make_image_processor()
    staging = Path(tempfile.mkdtemp(prefix="riformer-push-")) / "model"
    staging.mkdir()
    for name in export_files(folder):
        if name != "README.md" and (folder / name).is_file():
            os.symlink((folder / name).absolute(), staging / name)
    build_classifier_card(model, processor, repo_id=repo_id, **info).save(staging / "README.md")
    return staging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="riformer-push",
        description="Push a model folder to the Hub with its model card. A RIFormer goes in its re-parameterised "
        "(deploy) form: a training-form folder (a Trainer checkpoint-N, or save_pretrained output) is folded first; a "
        "deploy export passes through. Any other image classifier (a teacher trained with riformer-train) goes as it "
        "is. Honours HF_ENDPOINT and HF_TOKEN.",
    )
    parser.add_argument("--model_dir", "--model_name_or_path", dest="model_dir", required=True,
                        help="folder with config.json + model.safetensors (a RIFormer in either form, or another "
                        "image classifier)")
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
    parser.add_argument("--eval_results", default=None, metavar="JSON",
                        help="accuracy for the card's model-index: riformer-eval's --output_json file, or a JSON "
                        "object of metrics ({\"accuracy\": 0.77})")
    return parser


def eval_results_from_json(path) -> dict[str, float]:
    """Card metrics from riformer-eval's `--output_json` (top-1 as `accuracy`, top-k as `top{k}_accuracy`) or from a
    JSON object of metric names to values."""
    import json

    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"--eval_results {path}: cannot read it as JSON ({error}).") from None
    if isinstance(values, dict) and {"top1", "topk", "k"} <= set(values):
        return {"accuracy": float(values["top1"]), f"top{values['k']}_accuracy": float(values["topk"])}
    if isinstance(values, dict) and values and all(isinstance(v, (int, float)) for v in values.values()):
        return {str(k).removeprefix("eval_"): float(v) for k, v in values.items()}
    raise UserError(f"--eval_results {path}: give riformer-eval's --output_json file or an object of metric values.")


def main(argv: list[str] | None = None):
    """`riformer-push`. `--save_dir` is checked before any work and written whole, under its run lock."""
    from transformers.utils.logging import disable_progress_bar

    args = build_parser().parse_args(argv)
    disable_progress_bar()  # no "Loading weights" / "Writing model shards" bars in the report (uploads keep theirs)
    eval_results = eval_results_from_json(args.eval_results) if args.eval_results else None
    save_dir = None if args.save_dir is None else OutputFolder(
        args.save_dir, "--save_dir", overwrite=args.overwrite_output_dir, sources=[("--model_dir", args.model_dir)])
    with save_dir.claim() if save_dir else contextlib.nullcontext():
        commit = push_model_folder(
            args.model_dir, args.repo_id, token=args.token, private=args.private, revision=args.revision,
            commit_message=args.commit_message, push_training_weights=args.push_training_weights,
            save_dir=save_dir, datasets=args.datasets, base_model=args.base_model, license=args.license,
            eval_results=eval_results,
        )
    revision = args.revision or constants.DEFAULT_REVISION
    print(f"Pushed {args.model_dir} to {commit.repo_url}, revision {revision} (commit {commit.oid}).")
    return commit


__all__ = [
    "HubPushError",
    "eval_results_from_json",
    "main",
    "push_failure",
    "push_model_folder",
    "push_reparameterized",
    "retry_command",
    "upload_export",
]
