"""The `riformer-train` run: datasets (Hub, local image folder, the embedded digits), the student and its teachers,
the image processor, offline metrics, and `run_training()` (validate, train or resume, evaluate, save, push).

Nothing already on disk is lost: the arguments, the output folder (an earlier run, write access, free space) and the
models named are checked before any data is read; a failed push leaves every local file written (see `cli`)."""

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_type_hints

import datasets
import torch
from datasets import ClassLabel, DatasetDict, IterableDataset, IterableDatasetDict, load_dataset
from huggingface_hub.errors import StrictDataclassError
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    HfArgumentParser,
    PoolFormerForImageClassification,
    TrainingArguments,
    default_data_collator,
    set_seed,
)
from transformers.utils import logging

from ..data import (
    PRESET_CROP_PCT,
    ProcessorSpec,
    ProcessorTransform,
    TrainTransform,
    digits_dataset,
    load_image_processor,
    make_image_processor,
    processor_spec,
    with_image_transform,
)
from ..data.preprocessing import DEFAULT_CROP_PCT, PROCESSOR_FILE
from ..data.rand_augment import RandAugment
from ..evaluation import accuracy_metrics
from ..export.save_hook import checkpoint_bytes, checkpoint_folders, is_complete_checkpoint
from ..models.riformer import RIFormerConfig, RIFormerForImageClassification
from .arguments import RIFormerTrainingArguments, has_accelerator
from .recipes import recipe_model_values, recipe_training_values
from .seeding import SeededAugmentation
from .teachers import from_poolformer
from .trainer import RIFormerDistillationTrainer

logger = logging.get_logger(__name__)

EVAL_SPLIT_NAMES = ("validation", "valid", "val", "test")
DIGITS_IMAGE_SIZE = 32
STREAM_SHUFFLE_BUFFER = 1000  # examples (undecoded) held to shuffle a stream, after its shards are shuffled


@dataclass
class ScriptArguments:
    """Where the images come from and how they are augmented."""

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
    """The student and its teachers."""

    model_preset: str = field(default="s12", metadata={"help": "RIFormer preset (s12, s24, s36, m36, m48)."})
    config_name: str | None = field(
        default=None, metadata={"help": "A RIFormer config (folder, config.json or Hub id) to build the student from."}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A trained RIFormer (training form; folder or Hub id) to start from."}
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
        default=None, metadata={"help": "Logit teacher (folder or Hub id): any image classifier on the same labels."}
    )
    imitation_teacher: str | None = field(
        default=None,
        metadata={"help": "Module-imitation teacher: a PoolFormer isomorphic to the student (folder or Hub id)."},
    )
    init_from_teacher: bool = field(
        default=False,
        metadata={"help": "Initialise the student from the PoolFormer teacher (all but the affine mixers)."},
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

    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh in an --output_dir that holds an earlier run: its checkpoint-N folders are "
                  "deleted when training starts, its export is replaced at the end."},
    )
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads for torch (torch.set_num_threads); default: torch's choice."}
    )


def load_image_dataset(args: ScriptArguments, image_size: int = DIGITS_IMAGE_SIZE) -> DatasetDict:
    """`train` and `eval` splits from the Hub, a local image folder or (by default) the embedded digits."""
    if args.data_dir is not None:
        data = load_dataset(args.dataset_name or "imagefolder", args.dataset_config, data_dir=args.data_dir,
                            streaming=args.streaming)
    elif args.dataset_name is not None:
        data = load_dataset(args.dataset_name, args.dataset_config, streaming=args.streaming)
    elif args.streaming:
        raise ValueError("--streaming reads a Hub dataset or a local folder: pass --dataset_name or --data_dir.")
    else:
        data = digits_dataset(image_size=image_size)
    if args.train_split not in data:
        raise ValueError(f"No split {args.train_split!r} in the dataset; it has {', '.join(data)}.")
    eval_split = args.eval_split or next((s for s in EVAL_SPLIT_NAMES if s in data and s != args.train_split), None)
    if eval_split is not None and eval_split not in data:
        raise ValueError(f"No split {eval_split!r} in the dataset; it has {', '.join(data)}.")
    if eval_split is None and args.streaming:
        if args.max_eval_samples is None:
            raise ValueError(
                "The streamed dataset has no eval split: pass --max_eval_samples N to hold out its first N images, "
                "or name a split with --eval_split."
            )
        stream = data[args.train_split]
        data = IterableDatasetDict(train=stream.skip(args.max_eval_samples), eval=stream.take(args.max_eval_samples))
    elif eval_split is None:
        held_out = data[args.train_split].train_test_split(test_size=args.eval_fraction, seed=0)
        data = DatasetDict(train=held_out["train"], eval=held_out["test"])
    else:
        data = type(data)(train=data[args.train_split], eval=data[eval_split])
    for split, limit in (("train", args.max_train_samples), ("eval", args.max_eval_samples)):
        if limit is not None and args.streaming:
            data[split] = data[split].take(limit)
        elif limit is not None:
            data[split] = data[split].select(range(min(limit, len(data[split]))))
    for column in (args.image_column, args.label_column):
        if data["train"].column_names is not None and column == args.label_column and args.data_dir is not None \
                and column not in data["train"].column_names:
            classes = sorted(p.name for p in _class_folders(Path(args.data_dir), args.train_split))
            if len(classes) < 2:
                raise ValueError(
                    f"--data_dir {args.data_dir} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); "
                    "an image folder needs one sub-folder per class, at least two (optionally under train/ and test/)."
                )
        if data["train"].column_names is not None and column not in data["train"].column_names:
            raise ValueError(
                f"The dataset has no {column!r} column (columns: {', '.join(data['train'].column_names)}); set "
                "--image_column / --label_column."
            )
    return data


def _class_folders(data_dir: Path, train_split: str) -> list[Path]:
    root = data_dir / train_split if (data_dir / train_split).is_dir() else data_dir
    return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]


def label_maps(dataset, label_column: str) -> tuple[dict[int, str], dict[str, int]]:
    feature = (dataset.features or {}).get(label_column)
    if isinstance(feature, ClassLabel):
        names = feature.names
    elif isinstance(dataset, IterableDataset):
        raise ValueError(
            f"A streamed dataset must name its classes up front: its {label_column!r} column is {feature}, not a "
            "ClassLabel (an image folder's labels are one). Drop --streaming or use a dataset with class names."
        )
    else:
        names = [str(i) for i in range(int(max(dataset[label_column])) + 1)]
    return dict(enumerate(names)), {name: i for i, name in enumerate(names)}


def load_teacher(name_or_path: str):
    """A teacher from a folder or the Hub, through the Auto classes (RIFormer and GFNet are registered)."""
    return AutoModelForImageClassification.from_pretrained(name_or_path)


def teacher_preprocessing(name_or_path: str, model_args: ModelArguments):
    """What a teacher expects as input: the image processor saved with it, else the --teacher_image_size /
    --teacher_mean / --teacher_std spec; a ValueError naming those flags when neither tells."""
    processor = load_image_processor(name_or_path)
    if processor is not None:
        return processor
    flags = (model_args.teacher_image_size, model_args.teacher_mean, model_args.teacher_std)
    if all(v is None for v in flags):
        raise ValueError(
            f"Cannot tell what input the teacher {name_or_path} expects: it has no image processor "
            f"({PROCESSOR_FILE}). Pass --teacher_image_size N --teacher_mean R G B --teacher_std R G B (the resolution "
            "and normalisation it was trained with), or save its image processor with it."
        )
    if any(v is None for v in flags) or len(model_args.teacher_mean) != 3 or len(model_args.teacher_std) != 3:
        raise ValueError(
            "--teacher_image_size, --teacher_mean and --teacher_std go together (a size and three values each); got "
            f"{model_args.teacher_image_size}, {model_args.teacher_mean}, {model_args.teacher_std}."
        )
    size = model_args.teacher_image_size
    return ProcessorSpec(size, size, tuple(model_args.teacher_mean), tuple(model_args.teacher_std))


def build_train_transform(processor, script_args: ScriptArguments, training_args, hflip: float) -> TrainTransform:
    """Crop, flip, then RandAugment (`--aa`, filling with the mean pixel) or colour jitter (`--color_jitter`)."""
    spec = processor_spec(processor)
    rand_augment = None
    if training_args.aa is not None:
        fill = tuple(round(255 * m) for m in spec.mean)
        rand_augment = RandAugment.from_string(training_args.aa, fill=fill)
    return TrainTransform.from_image_processor(
        processor, scale=(script_args.min_crop_area, 1.0), hflip=hflip, rand_augment=rand_augment,
        color_jitter=training_args.color_jitter,
    )


def _seeded(train_dataset, training_args):
    """Per-example augmentation seeds (exact resumption), for map-style data whose loader workers learn the epoch:
    not for streams, nor persistent workers (accelerate's `set_epoch` would not reach their copies)."""
    if isinstance(train_dataset, IterableDataset):
        return train_dataset
    if training_args.dataloader_persistent_workers and training_args.dataloader_num_workers > 0:
        logger.warning("Persistent data-loader workers: augmentation is drawn from the workers' RNG, so a resumed run's "
                       "augmentation differs from the uninterrupted run's.")
        return train_dataset
    return SeededAugmentation(train_dataset, training_args.seed)


def build_student(
    model_args: ModelArguments, id2label, label2id, poolformer=None, evaluate_only: bool = False
) -> RIFormerForImageClassification:
    """The student: from a PoolFormer (`--init_from_teacher`), trained weights, a config or a preset. To evaluate
    only, `--model_name_or_path` is loaded as saved (deploy form too) and must predict the dataset's classes."""
    overrides = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in (
            ("depths", model_args.depths),
            ("hidden_sizes", model_args.hidden_sizes),
            ("drop_path_rate", model_args.drop_path_rate),
        )
        if v is not None
    }
    labels = {"id2label": id2label, "label2id": label2id}
    if model_args.init_from_teacher:
        if poolformer is None:
            raise ValueError(
                "--init_from_teacher needs a PoolFormer teacher: pass --imitation_teacher (or a PoolFormer "
                "--teacher_model)."
            )
        architecture = {"depths", "hidden_sizes"} & set(overrides)
        if architecture:
            raise ValueError(
                f"--init_from_teacher takes the architecture from the PoolFormer; drop --{', --'.join(architecture)}."
            )
        if poolformer.config.num_labels != len(id2label):
            raise ValueError(
                f"The PoolFormer predicts {poolformer.config.num_labels} classes, the dataset has {len(id2label)}."
            )
        return from_poolformer(poolformer, **overrides)
    if model_args.model_name_or_path is not None and evaluate_only:
        model = AutoModelForImageClassification.from_pretrained(model_args.model_name_or_path)
        if model.config.num_labels != len(id2label):
            raise ValueError(
                f"--model_name_or_path {model_args.model_name_or_path} predicts {model.config.num_labels} classes, the "
                f"evaluation data has {len(id2label)}: evaluate it on the dataset it was trained on."
            )
        return model
    if model_args.model_name_or_path is not None:
        model = AutoModelForImageClassification.from_pretrained(
            model_args.model_name_or_path, ignore_mismatched_sizes=True, **labels, **overrides
        )
        if getattr(model.config, "reparameterized", False):
            raise ValueError(
                f"{model_args.model_name_or_path} is a re-parameterised (deploy) RIFormer, which has no token mixer to "
                "train or imitate. Start from the training-form weights (a `checkpoint-N` folder or `training/`)."
            )
        return model
    if model_args.config_name is not None:
        config = AutoConfig.from_pretrained(model_args.config_name, **labels, **overrides)
    else:
        config = RIFormerConfig.from_preset(model_args.model_preset, **labels, **overrides)
    return RIFormerForImageClassification(config)


def build_image_processor(model_args: ModelArguments, sources=(), default_size: int = 224):
    """The student's image processor, the one owner of its preprocessing: the first of `sources` (the starting
    weights, the PoolFormer it is initialised from) that has one, else a PoolFormer-style processor at the preset's
    crop. `--image_size` / `--crop_pct` override its size and crop."""
    processor = next((p for p in map(load_image_processor, sources) if p is not None), None)
    if processor is None:
        crop_pct = PRESET_CROP_PCT.get(model_args.model_preset.lower(), DEFAULT_CROP_PCT)
        return make_image_processor(model_args.image_size or default_size, model_args.crop_pct or crop_pct)
    if model_args.image_size or model_args.crop_pct:
        size = model_args.image_size or processor.crop_size["height"]
        return make_image_processor(size, model_args.crop_pct or processor.crop_pct, processor.image_mean,
                                    processor.image_std)
    return processor


def build_trainer(
    script_args: ScriptArguments, model_args: ModelArguments, training_args: RIFormerTrainingArguments
) -> RIFormerDistillationTrainer:
    """Dataset, student, teachers, image processor, transforms and metrics, wired into a
    `RIFormerDistillationTrainer`. The student is built after the seed is set, so a seed fixes its initial weights."""
    embedded = script_args.dataset_name is None and script_args.data_dir is None
    default_size = DIGITS_IMAGE_SIZE if embedded else 224  # the digits are small: train them at 32 px
    with training_args.main_process_first(desc="loading data and models"):  # one process downloads, the others reuse
        teacher = load_teacher(model_args.teacher_model) if model_args.teacher_model else None
        imitation_teacher = load_teacher(model_args.imitation_teacher) if model_args.imitation_teacher else None
        if imitation_teacher is not None and not isinstance(imitation_teacher, PoolFormerForImageClassification):
            raise ValueError(
                f"--imitation_teacher {model_args.imitation_teacher} is a {imitation_teacher.config.model_type!r} model; "
                "module imitation needs a PoolFormer isomorphic to the student (pass other classifiers as "
                "--teacher_model)."
            )
        teacher_processor = teacher_preprocessing(model_args.teacher_model, model_args) if teacher else None
        imitation_processor = (
            teacher_preprocessing(model_args.imitation_teacher, model_args) if imitation_teacher else None
        )
        poolformer = imitation_teacher or (teacher if isinstance(teacher, PoolFormerForImageClassification) else None)
        sources = [model_args.model_name_or_path] if model_args.model_name_or_path else []
        if model_args.init_from_teacher and poolformer is not None:
            sources.append(poolformer.name_or_path)
        processor = build_image_processor(model_args, [s for s in sources if s], default_size)
        data = load_image_dataset(script_args, image_size=processor_spec(processor).image_size)
        id2label, label2id = label_maps(data["train"], script_args.label_column)
        set_seed(training_args.seed)
        evaluate_only = training_args.do_eval and not training_args.do_train
        student = build_student(model_args, id2label, label2id, poolformer, evaluate_only=evaluate_only)
    if script_args.streaming:
        data["train"] = data["train"].shuffle(seed=training_args.seed, buffer_size=STREAM_SHUFFLE_BUFFER)
    hflip = script_args.hflip if script_args.hflip is not None else (0.0 if embedded else 0.5)
    train_transform = build_train_transform(processor, script_args, training_args, hflip)
    columns = {"image_column": script_args.image_column, "label_column": script_args.label_column,
               "skip_bad_images": script_args.skip_bad_images}
    return RIFormerDistillationTrainer(
        model=student,
        args=training_args,
        teacher_model=teacher,
        imitation_teacher=imitation_teacher,
        teacher_processor=teacher_processor,
        imitation_teacher_processor=imitation_processor,
        train_dataset=_seeded(with_image_transform(data["train"], train_transform, **columns), training_args),
        eval_dataset=with_image_transform(data["eval"], ProcessorTransform(processor), split="evaluation", **columns),
        data_collator=default_data_collator,
        processing_class=processor,
        compute_metrics=accuracy_metrics,
    )


def _explicit_destinations(parser, argv: list[str]) -> set[str]:
    """The argument names given on the command line (`--name value` or `--name=value`)."""
    options = {option: action.dest for action in parser._actions for option in action.option_strings}
    return {options[token.split("=", 1)[0]] for token in argv if token.split("=", 1)[0] in options}


def _without_recipe(argv: list[str]) -> list[str]:
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--recipe":
            skip = True
        elif not token.startswith("--recipe="):
            out.append(token)
    return out


GROUP_TITLES = {
    RIFormerTrainingArguments: "RIFormer distillation",
    ModelArguments: "student and teachers",
    ScriptArguments: "data and augmentation",
    RunArguments: "output folder and machine",
    TrainingArguments: "transformers TrainingArguments",
}


class RunArgumentParser(HfArgumentParser):
    """`HfArgumentParser` with one `--help` section per dataclass, RIFormer's first: the distillation fields that
    `RIFormerTrainingArguments` adds come before the `TrainingArguments` fields it inherits, which come last."""

    def _add_dataclass_arguments(self, dtype):
        if not hasattr(self, "_groups"):
            self._groups = {cls: self.add_argument_group(title) for cls, title in GROUP_TITLES.items()}
        inherited = {f.name for f in dataclasses.fields(TrainingArguments)} if issubclass(dtype, TrainingArguments) else ()
        hints = get_type_hints(dtype)
        for dataclass_field in dataclasses.fields(dtype):
            if not dataclass_field.init:
                continue
            dataclass_field.type = hints[dataclass_field.name]
            owner = TrainingArguments if dataclass_field.name in inherited else dtype
            self._parse_dataclass_field(self._groups.get(owner, self), dataclass_field)


def parse_args(argv=None):
    """`(ScriptArguments, ModelArguments, RIFormerTrainingArguments, RunArguments)` from the command line. With
    `--recipe`, the recipe's values become the defaults of a second parse, so every flag given explicitly (even at
    transformers' default value) overrides the recipe; the learning rate follows the effective batch of the first
    parse."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = RunArgumentParser(
        (ScriptArguments, ModelArguments, RIFormerTrainingArguments, RunArguments), prog="riformer-train",
        usage="%(prog)s [--FLAG VALUE ...]",
        description="Distil or train a RIFormer student (default: the embedded digits, train then evaluate). "
        "RIFormer's options come first, transformers' TrainingArguments last.",
    )
    # Images reach the collator as PIL images: keep the dataset's columns. Digits by default: small and quick.
    # No pinned memory without an accelerator (torch warns on every loader); every student parameter takes part in
    # the loss, so DDP need not search for unused ones (it warns when it finds none).
    # do_train / do_eval: None = not given, so that giving neither can mean both (see `validate_run`).
    parser.set_defaults(
        remove_unused_columns=False, output_dir="riformer-output", report_to="none",
        dataloader_pin_memory=has_accelerator(), ddp_find_unused_parameters=False, do_train=None, do_eval=None,
    )
    script_args, model_args, training_args, run_args = parser.parse_args_into_dataclasses(args=argv)
    recipe = training_args.recipe
    if recipe is None:
        return script_args, model_args, training_args, run_args
    explicit = _explicit_destinations(parser, argv)
    batch = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    epochs = training_args.num_train_epochs if "num_train_epochs" in explicit else None
    values = {**recipe_training_values(recipe, batch * training_args.world_size, epochs), **recipe_model_values(recipe)}
    parser.set_defaults(**{name: value for name, value in values.items() if name not in explicit})
    script_args, model_args, training_args, run_args = parser.parse_args_into_dataclasses(args=_without_recipe(argv))
    training_args.recipe = recipe
    return script_args, model_args, training_args, run_args


RESUME_LAST = ("last", "latest", "true", "True")


def validate_run(script_args: ScriptArguments, model_args: ModelArguments, training_args, run_args: RunArguments):
    """Every check that needs no data: value ranges, the models named (type and form), the Hub repo id, what to do
    (`--do_train` / `--do_eval`, both when neither is given) and the output folder. Raises ValueError (or
    FileNotFoundError / NotADirectoryError / PermissionError) naming the flag, the value and the fix."""
    if script_args.streaming and training_args.max_steps <= 0:
        raise ValueError("--streaming trains on a stream of unknown length: set the schedule with --max_steps N.")
    given_train, given_eval = training_args.do_train, training_args.do_eval
    if given_train is None and given_eval is None:
        training_args.do_train = training_args.do_eval = True
    else:
        training_args.do_train = bool(given_train)
        training_args.do_eval = bool(given_eval) or (given_eval is None and training_args.eval_strategy != "no")

    def check(ok: bool, flag: str, value, rule: str, fix: str = "") -> None:
        if not ok:
            raise ValueError(f"--{flag} {value}: {rule}{'; ' + fix if fix else ''}.")

    check(script_args.hflip is None or 0.0 <= script_args.hflip <= 1.0, "hflip", script_args.hflip,
          "a probability must lie in [0, 1]")
    check(0.0 < script_args.min_crop_area <= 1.0, "min_crop_area", script_args.min_crop_area,
          "an area fraction must lie in (0, 1]", "1 = no random crop")
    check(0.0 < script_args.eval_fraction < 1.0, "eval_fraction", script_args.eval_fraction, "must lie in (0, 1)")
    for flag, value in (("image_size", model_args.image_size), ("max_train_samples", script_args.max_train_samples),
                        ("max_eval_samples", script_args.max_eval_samples), ("threads", run_args.threads)):
        check(value is None or value > 0, flag, value, "must be positive")
    for flag in ("depths", "hidden_sizes"):
        value = getattr(model_args, flag)
        check(value is None or all(v > 0 for v in value), flag, value, "every entry must be positive")
    check(model_args.crop_pct is None or 0.0 < model_args.crop_pct <= 1.0, "crop_pct", model_args.crop_pct,
          "a crop fraction must lie in (0, 1]")
    check(model_args.drop_path_rate is None or 0.0 <= model_args.drop_path_rate < 1.0, "drop_path_rate",
          model_args.drop_path_rate, "a drop probability must lie in [0, 1)")
    if training_args.do_train:
        check(training_args.max_steps != 0, "max_steps", 0, "trains nothing",
              "give a positive count (-1 = use --num_train_epochs), or --do_eval alone to evaluate only")
        check(training_args.max_steps > 0 or training_args.num_train_epochs > 0, "num_train_epochs",
              training_args.num_train_epochs, "trains nothing", "give a positive count, or --do_eval alone to "
              "evaluate only")
    elif not training_args.do_eval:
        raise ValueError("--do_train false and --do_eval false: nothing to do; give --do_train and/or --do_eval.")
    elif model_args.model_name_or_path is None:
        raise ValueError("--do_eval without --do_train evaluates --model_name_or_path: give the model to evaluate.")

    for flag in ("teacher_model", "imitation_teacher"):
        _check_source(flag, getattr(model_args, flag))
    for flag in ("config_name", "model_name_or_path"):
        value = getattr(model_args, flag)
        if value is not None:
            _check_student_config(flag, value, training_args.do_train)
    if training_args.push_to_hub or training_args.hub_model_id:
        repo_id = training_args.hub_model_id or Path(training_args.output_dir).absolute().name
        try:
            validate_repo_id(repo_id)
        except HFValidationError as error:
            raise ValueError(
                f"--hub_model_id {repo_id!r} is not a valid Hub repo id ({error}): use `name` or `namespace/name` "
                "with letters, digits, '-', '_' and '.'."
            ) from None
    if training_args.do_train:
        check_output_dir(training_args, run_args)


def _check_source(flag: str, value: str | None) -> None:
    """`value` names an existing file or folder, or has the form of a Hub repo id."""
    if value is None or Path(value).exists():
        return
    try:
        validate_repo_id(value)
    except HFValidationError:
        raise FileNotFoundError(
            f"--{flag} {value}: no such file or folder, and not a Hub repo id: give a folder with config.json (check "
            "the path) or a Hub id such as `namespace/name`."
        ) from None


def _check_student_config(flag: str, value: str, training: bool) -> None:
    """A RIFormer config, in training form when it is trained."""
    _check_source(flag, value)
    try:
        config = AutoConfig.from_pretrained(value)
    except StrictDataclassError as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"--{flag} {value}: its config is invalid ({reason}): correct config.json.") from None
    if config.model_type == "poolformer":
        raise ValueError(
            f"--{flag} {value} is a PoolFormer, not a RIFormer: to start a RIFormer student from it pass "
            f"`--imitation_teacher {value} --init_from_teacher` (or convert it with `riformer-convert poolformer`)."
        )
    if config.model_type != "riformer":
        raise ValueError(
            f"--{flag} {value} is a {config.model_type!r} model; riformer-train trains RIFormer students: give a "
            "RIFormer (model_type 'riformer'), or use it as --teacher_model."
        )
    if training and getattr(config, "reparameterized", False):
        raise ValueError(
            f"--{flag} {value} is a re-parameterised (deploy) RIFormer, which has no token mixer to train or imitate: "
            "start from the training form (a `checkpoint-N` folder or the export's `training/`), or evaluate it with "
            "--do_eval alone."
        )


def earlier_run(output_dir: Path) -> list[str]:
    """What in `output_dir` a new run would replace: an export and `checkpoint-N` folders."""
    if not output_dir.is_dir():
        return []
    found = [name for name in ("config.json", "model.safetensors", "trainer_state.json") if (output_dir / name).exists()]
    return found + [folder.name for folder in checkpoint_folders(output_dir)]


def check_output_dir(training_args, run_args: RunArguments) -> None:
    """Refuse an `--output_dir` holding an earlier run unless resuming or `--overwrite_output_dir`; check that the
    folder can be written (by a probe that leaves a missing folder missing: a run refused later writes nothing; the
    local main process probes, once per machine)."""
    output_dir = Path(training_args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"--output_dir {output_dir} is a file: give a folder (it is created if missing).")
    found = earlier_run(output_dir)
    if found and not run_args.overwrite_output_dir and training_args.resume_from_checkpoint is None:
        shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
        raise ValueError(
            f"--output_dir {output_dir} holds an earlier run ({shown}). Continue it with --resume_from_checkpoint "
            "last, start afresh there with --overwrite_output_dir, or give another --output_dir."
        )
    if training_args.local_process_index != 0:
        return  # one probe per machine: the ranks' probes would race on the folders each creates and removes
    missing = [p for p in (output_dir, *output_dir.parents) if not p.exists()]
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
        for folder in missing:  # deepest first
            folder.rmdir()
    except OSError as error:
        raise PermissionError(
            f"--output_dir {output_dir} is not writable ({type(error).__name__}: {error.strerror or error}): give a "
            "folder you can write to."
        ) from None


def check_free_disk(model, training_args) -> None:
    """The disk under `output_dir` holds at least one checkpoint of `model` (weights, AdamW states, a margin)."""
    needed = checkpoint_bytes(model, with_optimizer=training_args.save_strategy != "no")
    existing = next(p for p in (Path(training_args.output_dir).absolute(), *Path(training_args.output_dir).absolute().parents)
                    if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise OSError(
            f"Not enough free disk for one checkpoint in --output_dir {training_args.output_dir}: "
            f"{_size(free)} free, a checkpoint of this {model.num_parameters():,}-parameter model takes about "
            f"{_size(needed)} (weights + AdamW states): free some space or give another --output_dir."
        )


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    raise AssertionError


def resolve_resume(training_args) -> str | None:
    """`--resume_from_checkpoint`: `last` = the newest complete `checkpoint-N` of `output_dir` (one log line for each
    incomplete one skipped); a path must be a complete checkpoint."""
    resume = training_args.resume_from_checkpoint
    if resume is None:
        return None
    if resume not in RESUME_LAST:
        if not is_complete_checkpoint(resume):
            raise FileNotFoundError(
                f"--resume_from_checkpoint {resume} is not a complete checkpoint (it needs trainer_state.json and the "
                "weights): give a `checkpoint-N` folder, or `last`."
            )
        return resume
    folders = checkpoint_folders(training_args.output_dir)
    for folder in reversed(folders):
        if is_complete_checkpoint(folder):
            return str(folder)
        logger.warning(f"Skipping {folder.name}: incomplete (an interrupted save); resuming from an earlier one.")
    raise FileNotFoundError(
        f"--resume_from_checkpoint last: no complete checkpoint-N folder in {training_args.output_dir}"
        f"{f' ({len(folders)} incomplete)' if folders else ''}: drop the flag to start afresh."
    )


def run_training(argv=None):
    """Validate, train (or resume), evaluate, save the metrics, the state and the export, push; returns the trainer.

    `--do_eval` without `--do_train` evaluates `--model_name_or_path` (either form) and writes eval_results.json.
    A failed push raises `HubPushError` after everything local is written."""
    script_args, model_args, training_args, run_args = parse_args(argv)
    if run_args.threads:
        torch.set_num_threads(run_args.threads)
    logging.disable_progress_bar()  # "Writing model shards" / "Loading weights" at every save and load
    datasets.disable_progress_bars()  # "Generating train split" at every load of an image folder
    validate_run(script_args, model_args, training_args, run_args)
    resume = resolve_resume(training_args) if training_args.do_train else None
    trainer = build_trainer(script_args, model_args, training_args)
    if training_args.do_train:
        check_free_disk(trainer.model, training_args)
        if run_args.overwrite_output_dir and resume is None:
            for folder in checkpoint_folders(training_args.output_dir):
                shutil.rmtree(folder)
        result = trainer.train(resume_from_checkpoint=resume)
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
    if training_args.do_eval:
        metrics = trainer.evaluate()  # before the export, so that its model card has the final evaluation
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if training_args.do_train:
        trainer.save_state()
        if training_args.push_to_hub:
            trainer.push_to_hub()  # writes the export first; raises HubPushError with the retry command
        else:
            trainer.save_model()
    return trainer


__all__ = [
    "ModelArguments",
    "RunArguments",
    "ScriptArguments",
    "accuracy_metrics",
    "build_student",
    "build_trainer",
    "label_maps",
    "load_image_dataset",
    "load_teacher",
    "run_training",
    "validate_run",
]
