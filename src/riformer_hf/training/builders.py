"""What `riformer-train` builds from its arguments: the data (train and eval splits, label maps, transforms), the
teachers and their preprocessing, the student and its image processor, and the `RIFormerDistillationTrainer`."""

import logging as logging_module
from contextlib import contextmanager
from pathlib import Path

from transformers import (
    AutoModelForImageClassification,
    PoolFormerForImageClassification,
    default_data_collator,
    set_seed,
)
from transformers.utils import logging

from ..convert.gfnet import GFNET_CROP_PCT
from ..convert.poolformer import from_poolformer, poolformer_config
from ..data import (
    PRESET_CROP_PCT,
    ProcessorSpec,
    ProcessorTransform,
    TrainTransform,
    load_image_processor,
    make_image_processor,
    processor_spec,
    with_image_transform,
)
from ..data.datasets import (
    ImageSource,
    check_columns,
    class_names,
    eval_split_name,
    load_image_splits,
    resolve_split,
)
from ..data.preprocessing import DEFAULT_CROP_PCT, PROCESSOR_FILE
from ..data.rand_augment import RandAugment, fill_from_mean
from ..distillation.seeding import SeededAugmentation
from ..distillation.trainer import RIFormerDistillationTrainer, label_space
from ..errors import UserError
from ..evaluation.metrics import accuracy_metrics
from ..loading import load_pretrained
from ..models.gfnet import GFNetConfig
from ..models.riformer import RIFormerConfig, RIFormerForImageClassification
from .arguments import RIFORMER, STREAM_SHUFFLE_BUFFER
from .checks import load_config, trained_model_type
from .sharded import full_parameters

logger = logging.get_logger(__name__)


def image_source(data_args) -> ImageSource:
    return ImageSource(data_args.data_dir, data_args.dataset_name, data_args.dataset_config)


def load_image_dataset(data_args, image_size: int):
    """`train` and `eval` splits of the data source (the digits rendered at `image_size`²): the named eval split,
    else validation / test, else a seeded hold-out of `--eval_fraction` (the first `--max_eval_samples` of a stream)."""
    from datasets import DatasetDict, IterableDatasetDict

    source = image_source(data_args)
    data = load_image_splits(source, streaming=data_args.streaming, digits_image_size=image_size)
    train_split = resolve_split(data, data_args.train_split, source, "--train_split")
    if data_args.eval_split is not None:
        eval_split = resolve_split(data, data_args.eval_split, source, "--eval_split")
    else:
        eval_split = eval_split_name(data, exclude=train_split)
    if eval_split is not None:
        data = type(data)(train=data[train_split], eval=data[eval_split])
    elif data_args.streaming:
        if data_args.max_eval_samples is None:
            raise UserError(
                "The streamed dataset has no eval split: pass --max_eval_samples N to hold out its first N images, "
                "or name a split with --eval_split."
            )
        stream = data[train_split]
        data = IterableDatasetDict(train=stream.skip(data_args.max_eval_samples),
                                   eval=stream.take(data_args.max_eval_samples))
    else:
        held_out = data[train_split].train_test_split(test_size=data_args.eval_fraction, seed=0)
        data = DatasetDict(train=held_out["train"], eval=held_out["test"])
    for split, limit in (("train", data_args.max_train_samples), ("eval", data_args.max_eval_samples)):
        if limit is not None and data_args.streaming:
            data[split] = data[split].take(limit)
        elif limit is not None:
            data[split] = data[split].select(range(min(limit, len(data[split]))))
    _check_label_column(data["train"], data_args)
    check_columns(data["train"], {"--image_column": data_args.image_column, "--label_column": data_args.label_column})
    return data


def _check_label_column(train, data_args) -> None:
    """An image folder without a label column has fewer than two class folders: say so, not "no 'label' column"."""
    columns = train.column_names
    if data_args.data_dir is None or columns is None or data_args.label_column in columns:
        return
    root = Path(data_args.data_dir)
    root = root / data_args.train_split if (root / data_args.train_split).is_dir() else root
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    empty = [name for name in classes if not any(f.is_file() for f in (root / name).rglob("*"))]
    without = f" ({', '.join(empty)} holds no images)" if empty else ""
    raise UserError(
        f"--data_dir {data_args.data_dir} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'})"
        f"{without}; an image folder needs one sub-folder of images per class, at least two (optionally under train/ "
        "and test/)."
    )


def label_maps(dataset, label_column: str) -> tuple[dict[int, str], dict[str, int]]:
    from datasets import IterableDataset

    names = class_names(dataset, label_column)
    if names is None and isinstance(dataset, IterableDataset):
        raise UserError(
            f"A streamed dataset must name its classes up front: its {label_column!r} column is not a ClassLabel (an "
            "image folder's labels are one). Drop --streaming or use a dataset with class names."
        )
    if names is None:
        names = [str(i) for i in range(int(max(dataset[label_column])) + 1)]
    return dict(enumerate(names)), {name: i for i, name in enumerate(names)}


def load_classifier(flag: str, name_or_path: str, **kwargs):
    """An image classifier from a folder or the Hub, through the Auto classes (RIFormer and GFNet are registered)."""
    load_config(flag, name_or_path)
    return load_pretrained(AutoModelForImageClassification, name_or_path, f"--{flag}", **kwargs)


class _LoadReportFilter(logging_module.Filter):
    def filter(self, record) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextmanager
def _without_load_report():
    """transformers' load report (a table of re-initialised tensors, at warning level) stays quiet: the caller logs
    one line saying the same in the dataset's terms. A filter, not a level: transformers checks tensor-parallel
    plans (and warns about them) when its loading logger is set above warnings."""
    report, quiet = logging.get_logger("transformers.modeling_utils"), _LoadReportFilter()
    report.addFilter(quiet)
    try:
        yield
    finally:
        report.removeFilter(quiet)


def _names(labels: dict, limit: int = 5) -> str:
    values = [str(labels[k]) for k in sorted(labels)]
    return ", ".join(values[:limit]) + (", ..." if len(values) > limit else "")


def load_for_labels(flag: str, name_or_path: str, id2label: dict, label2id: dict, **overrides):
    """The image classifier `name_or_path` with its head fitted to the dataset's classes: a new head (one log line
    naming the re-initialised tensors) when it predicts another number of classes, else its own head under the
    dataset's class names (a warning when its own names differ, e.g. ImageNet's words against folder names).
    `overrides` are config fields (e.g. `drop_path_rate`)."""
    count, names = label_space(load_config(flag, name_or_path))
    with _without_load_report():
        model, info = load_classifier(
            flag, name_or_path, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True,
            output_loading_info=True, **overrides,
        )
    fresh = sorted(info["missing_keys"])
    fresh += [f"{key} {list(old)} → {list(new)}" for key, old, new in sorted(info["mismatched_keys"])]
    theirs = _names(names) if names else "unnamed"
    if fresh:
        logger.warning(
            f"--{flag} {name_or_path} ({type(model).__name__}) predicts {count} classes ({theirs}), the dataset has "
            f"{len(id2label)} ({_names(id2label)}): re-initialised for the dataset's classes: {', '.join(fresh)}; "
            "every other tensor is loaded."
        )
    elif names is not None and names != id2label:
        logger.warning(
            f"--{flag} {name_or_path} predicts as many classes as the dataset ({count}) under other names ({theirs} "
            f"against {_names(id2label)}): its classifier is kept, as predicting the dataset's classes in the "
            "dataset's order (image folders: sorted folder names)."
        )
    return model


def teacher_preprocessing(name_or_path: str, model_args):
    """What a teacher expects as input: the image processor saved with it, else the --teacher_image_size /
    --teacher_mean / --teacher_std spec; a UserError naming those flags when neither tells."""
    processor = load_image_processor(name_or_path)
    if processor is not None:
        return processor
    flags = (model_args.teacher_image_size, model_args.teacher_mean, model_args.teacher_std)
    if all(v is None for v in flags):
        raise UserError(
            f"Cannot tell what input the teacher {name_or_path} expects: it has no image processor "
            f"({PROCESSOR_FILE}). Pass --teacher_image_size N --teacher_mean R G B --teacher_std R G B (the resolution "
            "and normalisation it was trained with), or save its image processor with it."
        )
    if any(v is None for v in flags) or len(model_args.teacher_mean) != 3 or len(model_args.teacher_std) != 3:
        raise UserError(
            "--teacher_image_size, --teacher_mean and --teacher_std go together (a size and three values each); got "
            f"{model_args.teacher_image_size}, {model_args.teacher_mean}, {model_args.teacher_std}."
        )
    size = model_args.teacher_image_size
    return ProcessorSpec(size, size, tuple(model_args.teacher_mean), tuple(model_args.teacher_std))


def build_train_transform(processor, data_args, training_args, hflip: float) -> TrainTransform:
    """Crop, flip, then RandAugment (`--aa`, filling with the mean pixel) or colour jitter (`--color_jitter`); the
    crop and RandAugment's geometric operations resample with `--train_interpolation`."""
    spec = processor_spec(processor)
    interpolation = training_args.train_interpolation
    rand_augment = None
    if training_args.aa is not None:
        rand_augment = RandAugment.from_string(training_args.aa, fill_from_mean(spec.mean), interpolation)
    return TrainTransform.from_image_processor(
        processor, scale=(data_args.min_crop_area, 1.0), hflip=hflip, rand_augment=rand_augment,
        color_jitter=training_args.color_jitter, interpolation=interpolation,
    )


def _seeded(train_dataset, training_args):
    """Per-example augmentation seeds (exact resumption), for map-style data whose loader workers learn the epoch:
    not for streams, nor persistent workers (accelerate's `set_epoch` would not reach their copies)."""
    from datasets import IterableDataset

    if isinstance(train_dataset, IterableDataset):
        return train_dataset
    if training_args.dataloader_persistent_workers and training_args.dataloader_num_workers > 0:
        logger.warning("Persistent data-loader workers: augmentation is drawn from the workers' RNG, so a resumed "
                       "run's augmentation differs from the uninterrupted run's.")
        return train_dataset
    return SeededAugmentation(train_dataset, training_args.seed)


def _config_overrides(model_args) -> dict:
    values = (("depths", model_args.depths), ("hidden_sizes", model_args.hidden_sizes),
              ("drop_path_rate", model_args.drop_path_rate))
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values if v is not None}


def build_student(model_args, id2label, label2id, poolformer=None) -> RIFormerForImageClassification:
    """The RIFormer student to train: from a PoolFormer (`--init_from_teacher`; a new head when the PoolFormer
    predicts other classes), trained weights, a config or a preset."""
    overrides = _config_overrides(model_args)
    labels = {"id2label": id2label, "label2id": label2id}
    if model_args.init_from_teacher:
        if poolformer is None:
            raise UserError(
                "--init_from_teacher needs a PoolFormer teacher: pass --imitation_teacher (or a PoolFormer "
                "--teacher_model)."
            )
        architecture = {"depths", "hidden_sizes"} & set(overrides)
        if architecture:
            raise UserError(
                f"--init_from_teacher takes the architecture from the PoolFormer; drop --{', --'.join(architecture)}."
            )
        with full_parameters(poolformer):  # a teacher ZeRO-3 partitioned while loading is gathered to be copied
            return from_poolformer(poolformer, **labels, **overrides)
    if model_args.model_name_or_path is not None:
        return load_for_labels("model_name_or_path", model_args.model_name_or_path, **labels, **overrides)
    return build_from_scratch(model_args, RIFORMER, id2label, label2id)


def build_from_scratch(model_args, model_type: str, id2label, label2id, image_size: int = 224):
    """A model of `model_type` with fresh weights, from `--config_name` or `--model_preset` (RIFormer and PoolFormer:
    the paper's s12 … m48 layouts; GFNet: GFNet-H-Ti/S/B, made for `image_size`)."""
    overrides = _config_overrides(model_args)
    labels = {"id2label": id2label, "label2id": label2id}
    try:
        if model_args.config_name is not None:
            config = load_config("config_name", model_args.config_name, **labels, **overrides)
        elif model_type == "gfnet":
            config = GFNetConfig.from_preset(model_args.model_preset or "gfnet-h-ti", image_size=image_size,
                                             **labels, **overrides)
        else:
            config = RIFormerConfig.from_preset(model_args.model_preset or "s12", **labels, **overrides)
            if model_type == "poolformer":  # the PoolFormer of the same layout, as the paper pairs them
                config = poolformer_config(config, drop_path_rate=config.drop_path_rate)
    except ValueError as error:  # an unknown preset, or overrides the config refuses
        raise UserError(" ".join(str(error).split())) from None
    if config.model_type == RIFORMER:
        return RIFormerForImageClassification(config)
    return AutoModelForImageClassification.from_config(config)


def build_model(model_args, model_type: str, id2label, label2id, poolformer=None, image_size: int = 224):
    """The model riformer-train trains: a RIFormer student (`build_student`), or another image classifier (a teacher):
    fine-tuned from `--model_name_or_path` with its head fitted to the dataset's classes, or built from scratch."""
    if model_type == RIFORMER:
        return build_student(model_args, id2label, label2id, poolformer)
    if model_args.model_name_or_path is not None:
        overrides = {"drop_path_rate": model_args.drop_path_rate} if model_args.drop_path_rate is not None else {}
        return load_for_labels("model_name_or_path", model_args.model_name_or_path, id2label, label2id, **overrides)
    return build_from_scratch(model_args, model_type, id2label, label2id, image_size)


def load_model_to_evaluate(model_args, id2label):
    """`--model_name_or_path` as saved (either RIFormer form), which must predict the dataset's classes."""
    model = load_classifier("model_name_or_path", model_args.model_name_or_path)
    if model.config.num_labels != len(id2label):
        raise UserError(
            f"--model_name_or_path {model_args.model_name_or_path} predicts {model.config.num_labels} classes, the "
            f"evaluation data has {len(id2label)}: evaluate it on the dataset it was trained on."
        )
    return model


def build_image_processor(model_args, sources=(), default_size: int = 224, model_type: str = RIFORMER):
    """The trained model's image processor, the one owner of its preprocessing: the first of `sources` (the starting
    weights, the PoolFormer it is initialised from) that has one, else a PoolFormer-style processor at the preset's
    crop (GFNet: DeiT's 0.875). `--image_size` / `--crop_pct` override its size and crop."""
    processor = next((p for p in map(load_image_processor, sources) if p is not None), None)
    if processor is None:
        preset = (model_args.model_preset or "s12").lower().removeprefix("riformer-")
        crop_pct = GFNET_CROP_PCT if model_type == "gfnet" else PRESET_CROP_PCT.get(preset, DEFAULT_CROP_PCT)
        return make_image_processor(model_args.image_size or default_size, model_args.crop_pct or crop_pct)
    if model_args.image_size or model_args.crop_pct:
        size = model_args.image_size or processor.crop_size["height"]
        return make_image_processor(size, model_args.crop_pct or processor.crop_pct, processor.image_mean,
                                    processor.image_std)
    return processor


def build_teachers(model_args):
    """(logit teacher, imitation teacher), each None when not named; the imitation teacher must be a PoolFormer."""
    teacher = load_classifier("teacher_model", model_args.teacher_model) if model_args.teacher_model else None
    imitation_teacher = None
    if model_args.imitation_teacher:
        imitation_teacher = load_classifier("imitation_teacher", model_args.imitation_teacher)
        if not isinstance(imitation_teacher, PoolFormerForImageClassification):
            raise UserError(
                f"--imitation_teacher {model_args.imitation_teacher} is a {imitation_teacher.config.model_type!r} "
                "model; module imitation needs a PoolFormer isomorphic to the student (pass other classifiers as "
                "--teacher_model)."
            )
    return teacher, imitation_teacher


def drop_recipe_imitation(training_args, model_type: str) -> None:
    """`--recipe` sets module imitation, which trains a RIFormer's token mixers: for another model (a teacher) the
    weights it set are switched off, with a log line (given explicitly they are refused before, by `check_models`)."""
    dropped = [name for name in ("lambda_hidden", "lambda_mixer", "lambda_relation") if getattr(training_args, name)]
    if not dropped:
        return
    for name in dropped:
        setattr(training_args, name, 0.0)
    logger.warning(
        f"--recipe {training_args.recipe} sets module imitation ({', '.join(dropped)}), which trains a RIFormer "
        f"student; the model trained here is a {model_type!r} model, so it is off. The rest of the recipe applies."
    )


def build_trainer(data_args, model_args, training_args) -> RIFormerDistillationTrainer:
    """Dataset, model, teachers, image processor, transforms and metrics, wired into a
    `RIFormerDistillationTrainer`. The model is built after the seed is set, so a seed fixes its initial weights. It
    is a RIFormer student, or any image classifier (a teacher, which may learn from a logit teacher itself)."""
    source = image_source(data_args)
    model_type = trained_model_type(model_args, training_args.do_train)
    if training_args.do_train and model_type != RIFORMER:
        drop_recipe_imitation(training_args, model_type)
    # Every process loads the models, at the same time and in the same order: under DeepSpeed ZeRO-3 a load is a
    # collective (`zero.Init` partitions the parameters as they are created), so no process may load alone (inside
    # `main_process_first` the others wait at its barrier: a deadlock). The Hub client locks each file it downloads,
    # so processes loading one model at once download it once.
    teacher, imitation_teacher = build_teachers(model_args)
    teacher_processor = teacher_preprocessing(model_args.teacher_model, model_args) if teacher else None
    imitation_processor = teacher_preprocessing(model_args.imitation_teacher, model_args) if imitation_teacher else None
    poolformer = imitation_teacher or (teacher if isinstance(teacher, PoolFormerForImageClassification) else None)
    sources = [model_args.model_name_or_path] if model_args.model_name_or_path else []
    if model_args.init_from_teacher and poolformer is not None:
        sources.append(poolformer.name_or_path)
    processor = build_image_processor(model_args, [s for s in sources if s], source.default_image_size, model_type)
    image_size = processor_spec(processor).image_size
    with training_args.main_process_first(desc="loading data"):  # one process downloads and prepares, the others reuse
        data = load_image_dataset(data_args, image_size=image_size)
    id2label, label2id = label_maps(data["train"], data_args.label_column)
    set_seed(training_args.seed)
    if training_args.do_train:
        student = build_model(model_args, model_type, id2label, label2id, poolformer, image_size)
    else:
        student = load_model_to_evaluate(model_args, id2label)
    if data_args.streaming:
        data["train"] = data["train"].shuffle(seed=training_args.seed, buffer_size=STREAM_SHUFFLE_BUFFER)
    hflip = data_args.hflip if data_args.hflip is not None else source.default_hflip
    train_transform = build_train_transform(processor, data_args, training_args, hflip)
    columns = {"image_column": data_args.image_column, "label_column": data_args.label_column,
               "skip_bad_images": data_args.skip_bad_images}
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
        model_card=card_fields(model_args, poolformer, student) if training_args.do_train else None,
    )


def card_fields(model_args, poolformer, model) -> dict:
    """What the model card says about where the trained model's weights started (`initialised_from`, and a Hub
    model as `base_model`)."""
    from ..export.model_card import hub_model_id_of

    def shown(name: str) -> str:
        return name if hub_model_id_of(name) else f"{Path(name).name} (a local folder)"

    fields = {}
    if model_args.init_from_teacher and poolformer is not None:  # a teacher: named as one, and base_model already
        new_head = dict(poolformer.config.id2label) != dict(model.config.id2label)
        fields["initialised_from"] = (
            f"the PoolFormer {shown(poolformer.name_or_path)}: every tensor but the affine token mixers"
            + (" and the classifier, new for these classes" if new_head else "")
        )
    elif model_args.model_name_or_path is not None:
        source = model_args.model_name_or_path
        fields["initialised_from"] = shown(source)
        if hub_model_id_of(source):
            fields["base_model"] = [source]
    return fields


__all__ = [
    "build_from_scratch",
    "build_image_processor",
    "build_model",
    "build_student",
    "build_teachers",
    "build_train_transform",
    "build_trainer",
    "card_fields",
    "drop_recipe_imitation",
    "label_maps",
    "load_classifier",
    "load_for_labels",
    "load_image_dataset",
    "load_model_to_evaluate",
    "teacher_preprocessing",
]
