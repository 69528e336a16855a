"""The arguments of `riformer-train`: data, models, the run itself, and `RIFormerTrainingArguments` (transformers'
`TrainingArguments` plus the recipe), parsed from the command line or one JSON file."""

import argparse
import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

from transformers import HfArgumentParser

from ..distillation.arguments import RIFormerTrainingArguments, has_accelerator
from ..distillation.recipes import recipe_model_values
from ..errors import UserError

STREAM_SHUFFLE_BUFFER = 1000  # examples (undecoded) held to shuffle a stream, after its shards are shuffled
RIFORMER = "riformer"
MODEL_TYPES = (RIFORMER, "poolformer", "gfnet")  # the families --model_type builds from scratch


@dataclass
class DataArguments:
    """Where the images come from and how they are augmented."""

    _argument_group_name = "data and augmentation"

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A dataset on the Hub (or `imagefolder` with --data_dir). Default: the embedded digits."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of the Hub dataset."})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "A local image folder: one sub-folder per class, optionally under train/ and test/."},
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(
        default=None, metadata={"help": "Split to evaluate on; default: validation/test if present, else a hold-out."}
    )
    eval_fraction: float = field(
        default=0.1, metadata={"help": "Fraction of the train split held out when the dataset has no eval split."}
    )
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column: str = field(default="label", metadata={"help": "Column holding the class indices."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N images only."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on the first N images only."})
    min_crop_area: float = field(
        default=0.08, metadata={"help": "Smallest area fraction of the random-resized crop (training augmentation)."}
    )
    hflip: float | None = field(
        default=None, metadata={"help": "Horizontal-flip probability; default 0.5, or 0 for the digits."}
    )
    skip_bad_images: bool = field(
        default=False,
        metadata={"help": "Log and skip images that cannot be decoded (replaced by the next readable one; dropped "
                  "from a stream) instead of stopping with an error naming the file."},
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Stream the dataset (Hub or --data_dir) instead of loading it: shards shuffled, then a "
                  f"{STREAM_SHUFFLE_BUFFER}-example buffer. Needs --max_steps; without an eval split, the first "
                  "--max_eval_samples images are held out."},
    )


@dataclass
class ModelArguments:
    """The model to train (a RIFormer student, or a teacher) and its teachers."""

    _argument_group_name = "student and teachers"

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The model to train, from a folder or Hub id: a RIFormer (training form) to continue, or any "
                  "image classifier AutoModelForImageClassification loads (PoolFormer, GFNet, ...) to fine-tune as a "
                  "teacher on these labels; its head is re-initialised when it predicts another number of classes "
                  "than the dataset has (the log names the tensors). Such a model is exported as it is, with its "
                  "image processor."},
    )
    model_type: str | None = field(
        default=None,
        metadata={"help": "Train a model of this family from scratch at --model_preset: riformer (the default "
                  "student), or poolformer / gfnet (teachers).", "choices": list(MODEL_TYPES)},
    )
    model_preset: str | None = field(
        default=None,
        metadata={"help": "Preset of --model_type: s12, s24, s36, m36, m48 (RIFormer, PoolFormer; default s12) or "
                  "gfnet-h-ti, gfnet-h-s, gfnet-h-b (GFNet; default gfnet-h-ti)."},
    )
    config_name: str | None = field(
        default=None,
        metadata={"help": "A config (folder, config.json or Hub id) of any image classifier to build the model from, "
                  "with fresh weights."},
    )
    depths: list[int] | None = field(default=None, metadata={"help": "Override the blocks per stage."})
    hidden_sizes: list[int] | None = field(default=None, metadata={"help": "Override the channels per stage."})
    image_size: int | None = field(
        default=None,
        metadata={"help": "Training and evaluation resolution (default: the image processor's, else 224; 32 for the "
                  "digits)."},
    )
    crop_pct: float | None = field(
        default=None, metadata={"help": "Evaluation centre-crop fraction (default: the preset's, 0.9 S / 0.95 M)."}
    )
    drop_path_rate: float | None = field(default=None, metadata={"help": "Stochastic depth of the student."})
    teacher_model: str | None = field(
        default=None,
        metadata={"help": "Logit teacher (folder or Hub id): any image classifier predicting the dataset's classes, "
                  "in the same order (fine-tune one with --model_name_or_path first). Any model can learn from it."},
    )
    imitation_teacher: str | None = field(
        default=None,
        metadata={"help": "Module-imitation teacher of a RIFormer student: a PoolFormer of the student's layout "
                  "(folder or Hub id). It may predict other classes: imitation compares features."},
    )
    init_from_teacher: bool = field(
        default=False,
        metadata={"help": "Start the RIFormer student from the PoolFormer teacher (the paper's initialisation): every "
                  "tensor but the affine mixers, which start as the identity; the architecture is the PoolFormer's. "
                  "The right choice whenever a PoolFormer of the size you want exists, e.g. an ImageNet one for "
                  "your own data: its backbone is copied and, when it predicts other classes, the head starts "
                  "afresh (logged)."},
    )
    teacher_image_size: int | None = field(
        default=None,
        metadata={"help": "Input resolution of a teacher saved without an image processor (with --teacher_mean and "
                  "--teacher_std); the student's batches are resized to it on the device (bicubic, antialiased)."},
    )
    teacher_mean: list[float] | None = field(
        default=None, metadata={"help": "Normalisation mean of a teacher saved without an image processor."}
    )
    teacher_std: list[float] | None = field(
        default=None, metadata={"help": "Normalisation std of a teacher saved without an image processor."}
    )


@dataclass
class RunArguments:
    """How the run treats its output folder and the machine."""

    _argument_group_name = "output folder and machine"

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh in an --output_dir that holds an earlier run: its checkpoint-N folders are "
                  "deleted when training starts, its export is replaced at the end."},
    )
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads for torch (torch.set_num_threads); default: torch's choice."}
    )


ARGUMENT_TYPES = (RIFormerTrainingArguments, ModelArguments, DataArguments, RunArguments)
# riformer-train's own defaults for transformers' fields. Images reach the collator as PIL images: keep the dataset's
# columns. No pinned memory without an accelerator (torch warns on every loader). Every student parameter takes part
# in the loss, so DDP need not search for unused ones (it warns when it finds none). do_train / do_eval: None = not
# given, so that giving neither can mean both (see `_actions`).
CLI_DEFAULTS = {
    "remove_unused_columns": False, "output_dir": "riformer-output", "report_to": "none",
    "ddp_find_unused_parameters": False, "do_train": None, "do_eval": None,
}


def build_parser() -> HfArgumentParser:
    parser = HfArgumentParser(
        ARGUMENT_TYPES, prog="riformer-train", usage="%(prog)s [--FLAG VALUE ...] | %(prog)s CONFIG.json",
        description="Distil or train a RIFormer student, or train a teacher: fine-tune any image classifier "
        "(--model_name_or_path, e.g. a PoolFormer or GFNet) or build one (--model_type poolformer|gfnet) on your "
        "labels (default data: the embedded digits; train, then evaluate). RIFormer's recipe options come first, "
        "then transformers' TrainingArguments, the model and teachers, the data and the run. A single CONFIG.json "
        "argument gives the same fields as a JSON object.",
    )
    parser.set_defaults(**CLI_DEFAULTS, dataloader_pin_memory=has_accelerator())
    return parser


_NOT_GIVEN = object()


def _given_fields(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The fields set on the command line: argparse fills in a default only for attributes missing from the
    namespace it is handed, so those left at a sentinel were not given."""
    names = {f.name for dtype in ARGUMENT_TYPES for f in fields(dtype) if f.init}
    probe = argparse.Namespace(**dict.fromkeys(names, _NOT_GIVEN))
    parser.parse_known_args(argv, namespace=probe)
    return {name for name in names if getattr(probe, name) is not _NOT_GIVEN}


def _read_json_config(path: Path) -> dict:
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"Cannot read the config file {path} ({error}): give a JSON object of riformer-train fields.")
    if not isinstance(values, dict):
        raise UserError(f"{path} holds a JSON {type(values).__name__}; give an object of riformer-train fields.")
    return values


def parse_args(argv: list[str] | None = None):
    """`(DataArguments, ModelArguments, RIFormerTrainingArguments, RunArguments)` from the command line or a single
    JSON file. Under `--recipe`, every field not given explicitly takes the recipe's value (even a flag given at
    transformers' default value wins): `RIFormerTrainingArguments.recipe_overrides` carries the given ones. Giving
    neither `--do_train` nor `--do_eval` means both."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if len(argv) == 1 and argv[0].endswith(".json"):
        values = _read_json_config(Path(argv[0]))
        given = set(values)
        known = {f.name for dtype in ARGUMENT_TYPES for f in fields(dtype) if f.init}
        unknown = sorted(given - known)
        if unknown:
            raise UserError(f"{argv[0]}: unknown field(s) {', '.join(unknown)}; see riformer-train --help.")
        namespace = vars(parser.parse_args([]))
        namespace.update(values)
    else:
        namespace = vars(parser.parse_args(argv))
        given = _given_fields(parser, argv)
    recipe = namespace.get("recipe")
    if recipe is not None:
        namespace["recipe_overrides"] = sorted(given)
        for name, value in recipe_model_values(recipe).items():
            if name not in given:
                namespace[name] = value
    data_args, model_args, training_args, run_args = (
        _build(dtype, namespace) for dtype in (DataArguments, ModelArguments, RIFormerTrainingArguments, RunArguments)
    )
    training_args.do_train, training_args.do_eval = _actions(training_args)
    return data_args, model_args, training_args, run_args


def _actions(training_args) -> tuple[bool, bool]:
    """(train, evaluate): both when neither `--do_train` nor `--do_eval` is given; evaluation also when an eval
    strategy asks for it."""
    given_train, given_eval = training_args.do_train, training_args.do_eval
    if given_train is None and given_eval is None:
        return True, True
    return bool(given_train), bool(given_eval) or (given_eval is None and training_args.eval_strategy != "no")


def _build(dtype, namespace: dict):
    """`dtype` from the parsed values; `TrainingArguments` refuses bad combinations of its own flags with a
    ValueError, which is the user's to fix."""
    try:
        return dtype(**{f.name: namespace[f.name] for f in fields(dtype) if f.init})
    except UserError:
        raise
    except ValueError as error:
        raise UserError(" ".join(str(error).split())) from error


__all__ = [
    "ARGUMENT_TYPES",
    "MODEL_TYPES",
    "RIFORMER",
    "DataArguments",
    "ModelArguments",
    "RunArguments",
    "build_parser",
    "parse_args",
]
