"""The `riformer-train` run: datasets (Hub, local image folder, the embedded digits), the student and its teachers,
the image processor, offline metrics, and `run_training()` (train, resume, save, evaluate)."""

from dataclasses import dataclass, field

from datasets import ClassLabel, DatasetDict, IterableDataset, IterableDatasetDict, load_dataset
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    HfArgumentParser,
    PoolFormerForImageClassification,
    default_data_collator,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint
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
from ..models.riformer import RIFormerConfig, RIFormerForImageClassification
from .arguments import RIFormerTrainingArguments
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
        if data["train"].column_names is not None and column not in data["train"].column_names:
            raise ValueError(
                f"The dataset has no {column!r} column (columns: {', '.join(data['train'].column_names)}); set "
                "--image_column / --label_column."
            )
    return data


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


def build_student(model_args: ModelArguments, id2label, label2id, poolformer=None) -> RIFormerForImageClassification:
    """The student: from a PoolFormer (`--init_from_teacher`), trained weights, a config or a preset."""
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
    if script_args.streaming and training_args.max_steps <= 0:
        raise ValueError("--streaming trains on a stream of unknown length: set the schedule with --max_steps N.")
    embedded = script_args.dataset_name is None and script_args.data_dir is None
    default_size = DIGITS_IMAGE_SIZE if embedded else 224  # the digits are small: train them at 32 px
    with training_args.main_process_first(desc="loading data and models"):  # one process downloads, the others reuse
        teacher = load_teacher(model_args.teacher_model) if model_args.teacher_model else None
        imitation_teacher = load_teacher(model_args.imitation_teacher) if model_args.imitation_teacher else None
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
        student = build_student(model_args, id2label, label2id, poolformer)
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


def parse_args(argv=None):
    """The three argument dataclasses. With `--recipe`, the recipe's values become the defaults of a second parse, so
    every flag given explicitly (even at transformers' default value) overrides the recipe; the learning rate follows
    the effective batch of the first parse."""
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ScriptArguments, ModelArguments, RIFormerTrainingArguments))
    # Images reach the collator as PIL images: keep the dataset's columns. Digits by default: small and quick.
    parser.set_defaults(remove_unused_columns=False, output_dir="riformer-output", report_to="none")
    script_args, model_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    recipe = training_args.recipe
    if recipe is None:
        return script_args, model_args, training_args
    explicit = _explicit_destinations(parser, argv)
    batch = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    epochs = training_args.num_train_epochs if "num_train_epochs" in explicit else None
    values = {**recipe_training_values(recipe, batch * training_args.world_size, epochs), **recipe_model_values(recipe)}
    parser.set_defaults(**{name: value for name, value in values.items() if name not in explicit})
    script_args, model_args, training_args = parser.parse_args_into_dataclasses(args=_without_recipe(argv))
    training_args.recipe = recipe
    return script_args, model_args, training_args


def run_training(argv=None):
    """Train (or resume), save the final model, evaluate; returns the trainer."""
    script_args, model_args, training_args = parse_args(argv)
    trainer = build_trainer(script_args, model_args, training_args)
    resume = training_args.resume_from_checkpoint
    if resume in ("last", "latest", "true", "True"):
        resume = get_last_checkpoint(training_args.output_dir)
        if resume is None:
            raise ValueError(f"--resume_from_checkpoint last: no checkpoint-N folder in {training_args.output_dir}.")
    result = trainer.train(resume_from_checkpoint=resume)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_model()
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    trainer.save_state()
    return trainer


__all__ = [
    "ModelArguments",
    "ScriptArguments",
    "accuracy_metrics",
    "build_student",
    "build_trainer",
    "label_maps",
    "load_image_dataset",
    "load_teacher",
    "run_training",
]
