"""The deploy export: a RIFormer folded in memory and written, atomically, as the folder users download.

The folder holds `model.safetensors` without token-mixer tensors, `config.json` with `reparameterized: true` and
`auto_map`, the modelling code for `trust_remote_code`, the image processor (`preprocessor_config.json`) and a model
card (`README.md`), optionally with the training form in `training/`. It is written to a temporary folder and moved
into place, so a failure never leaves a half-written folder behind.
"""

import argparse
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from torch import nn

from ..data.preprocessing import load_image_processor, make_image_processor
from ..errors import MissingInputError, UserError
from ..loading import load_pretrained
from ..models.riformer import modeling_riformer
from ..models.riformer.modeling_riformer import (
    RIFormerForImageClassification,
    RIFormerPreTrainedModel,
    reparameterize_model,
)
from ..safety import OVERWRITE_HELP, OutputFolder
from ..safety.paths import temporary_path
from .distributed_save import writing_on_this_process
from .model_card import build_model_card, card_info_from_folder

TRAINING_SUBFOLDER = "training"
# Files of an export at the top of a folder (`output_dir` also holds checkpoints, logs, ...).
_EXPORT_FILE = re.compile(r"(config\.json|preprocessor_config\.json|README\.md|model(-\d+-of-\d+)?\.safetensors"
                          r"|model\.safetensors\.index\.json|[A-Za-z_]\w*\.py)")
# Weight files a new export replaces: deleted locally and on the Hub when the new export does not have them.
STALE_WEIGHTS = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin")


def load_riformer(model_dir, flag: str = "--model_dir") -> RIFormerPreTrainedModel:
    """A RIFormer folder written by `save_pretrained`, an export or a Trainer checkpoint, in the form it was saved."""
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        raise MissingInputError(
            f"{model_dir} has no config.json: pass a folder written by `save_pretrained`, an export or a Trainer "
            "checkpoint."
        )
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "riformer":
        raise UserError(
            f"{model_dir} holds a {config.get('model_type')!r} model, not a RIFormer (config.json model_type "
            "'riformer'): pass a RIFormer folder, or convert the checkpoint first (riformer-convert)."
        )
    name = (config.get("architectures") or ["RIFormerForImageClassification"])[0]
    return load_pretrained(getattr(modeling_riformer, name, RIFormerForImageClassification), model_dir, flag)


def folder_model_type(model_dir) -> str | None:
    """The `model_type` in a model folder's config.json (a `MissingInputError` when it has none)."""
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        raise MissingInputError(
            f"{model_dir} has no config.json: pass a folder written by `save_pretrained`, an export or a Trainer "
            "checkpoint."
        )
    try:
        return json.loads(config_file.read_text()).get("model_type")
    except (ValueError, AttributeError) as error:
        raise UserError(f"{config_file} is not a JSON config ({error}): pass a model folder.") from None


def export_reparameterized(
    model_or_dir,
    save_dir,
    *,
    image_processor=None,
    training_form: bool = False,
    **card_info,
) -> Path:
    """Write the deploy export of a RIFormer (a model, or a folder in either form) to `save_dir`; returns the path.

    The model is folded in memory (a copy: the caller's model is left as it is). `save_dir` ends up with
    `model.safetensors` (token mixers folded into the norms), `config.json` (`reparameterized: true`, `auto_map`),
    `configuration_riformer.py`, `modeling_riformer.py`, `preprocessor_config.json` (`image_processor`, else the
    source folder's, else `make_image_processor()`'s 224 px defaults) and `README.md`, which describes that
    processor; with `training_form=True` also the training form in `training/`. Everything is written to a
    temporary folder first and moved in file by file, so an interrupted export leaves what was there before.
    `card_info` goes to `build_model_card` (repo_id, datasets, base_model, license, eval_results, recipe, ...);
    for a folder, what its README.md and trainer_state.json record fills the gaps.
    """
    source_dir = None if isinstance(model_or_dir, nn.Module) else Path(model_or_dir)
    if source_dir is not None:
        model = load_riformer(source_dir)
        card_info = {**card_info_from_folder(source_dir), **{k: v for k, v in card_info.items() if v is not None}}
        if image_processor is None:
            image_processor = load_image_processor(source_dir)
    else:
        model = model_or_dir
        if not isinstance(model, RIFormerPreTrainedModel):
            raise TypeError(f"Expected a RIFormer model (RIFormerPreTrainedModel), got {type(model).__name__}.")
    if training_form and model.is_reparameterized:
        raise UserError(
            "training_form=True needs the training form, but this model is already re-parameterised; the deploy form "
            "cannot be turned back. Export from a training checkpoint instead."
        )
    image_processor = image_processor if image_processor is not None else make_image_processor()
    save_dir = Path(save_dir).absolute()
    save_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = temporary_path(save_dir, "export")  # beside it; inside it when the parent cannot be written (a volume)
    staging.mkdir()
    try:
        if training_form:
            with writing_on_this_process(model):
                model.save_pretrained(staging / TRAINING_SUBFOLDER)
            image_processor.save_pretrained(staging / TRAINING_SUBFOLDER)
        elif source_dir is not None and (source_dir / TRAINING_SUBFOLDER / "config.json").is_file():
            shutil.copytree(source_dir / TRAINING_SUBFOLDER, staging / TRAINING_SUBFOLDER)  # a previous export's
            training_form = True
        deploy = model if model.is_reparameterized else reparameterize_model(model)
        # Trainer sets `use_cache` (a generation switch) on every model's config; it says nothing about this one.
        deploy.config.__dict__.pop("use_cache", None)
        with writing_on_this_process(deploy):  # the caller writes from this process (each machine's main process)
            deploy.save_pretrained(staging)
        image_processor.save_pretrained(staging)
        card_info.setdefault("training_subfolder", training_form)
        build_model_card(deploy, image_processor, **card_info).save(staging / "README.md")
        _move_into(staging, save_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return save_dir


def _move_into(staging: Path, target: Path) -> None:
    """Move the finished export from `staging` into `target`: one rename when `target` does not exist, otherwise one
    atomic rename per file (a folder such as `training/` is swapped whole), then drop weight files it replaced."""
    if not target.exists():
        os.replace(staging, target)
        return
    new_names = {item.name for item in staging.iterdir()}
    for item in staging.iterdir():
        destination = target / item.name
        if item.is_dir() and destination.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{item.name}.old-", dir=target))
            os.replace(destination, retired / item.name)
            os.replace(item, destination)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(item, destination)
    for pattern in STALE_WEIGHTS:
        for stale in target.glob(pattern):
            if stale.name not in new_names:
                stale.unlink()

def export_files(folder) -> list[str]:
    """The files of a deploy export in `folder`, as upload patterns (top level only, plus `training/`)."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and _EXPORT_FILE.fullmatch(p.name))
    if (folder / TRAINING_SUBFOLDER).is_dir():
        names.append(f"{TRAINING_SUBFOLDER}/*")
    return names

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="riformer-reparameterize",
        description="Fold a training-form RIFormer (a Trainer checkpoint-N or save_pretrained folder) into the deploy "
        "folder the trainer writes: weights without token mixers, config, modelling code, image processor, model "
        "card. Nothing is pushed.",
    )
    parser.add_argument("--model_dir", "--model_name_or_path", dest="model_dir", required=True,
                        help="training-form folder (config.json + model.safetensors)")
    parser.add_argument("--output_dir", required=True, help="folder for the deploy export")
    parser.add_argument("--training_form", action="store_true", help="also keep the training form in training/")
    parser.add_argument("--overwrite_output_dir", action="store_true", help=OVERWRITE_HELP)
    return parser


def main(argv: list[str] | None = None) -> Path:
    """`riformer-reparameterize`: the folder is checked before any work and written whole, under its run lock."""
    from transformers.utils.logging import disable_progress_bar

    args = build_parser().parse_args(argv)
    reads = [("--model_dir", args.model_dir)]
    output = OutputFolder(args.output_dir, overwrite=args.overwrite_output_dir, sources=reads)
    disable_progress_bar()  # no "Loading weights" bar in the report
    with output.claim(), output.staged() as staging:
        export_reparameterized(args.model_dir, staging, training_form=args.training_form)
    print(f"Deploy form of {args.model_dir} → {output.path}")
    return output.path


__all__ = [
    "STALE_WEIGHTS",
    "TRAINING_SUBFOLDER",
    "export_files",
    "export_reparameterized",
    "folder_model_type",
    "load_riformer",
    "main",
]
