"""The checks `riformer-train` makes before it reads any data: value ranges, what to do, the models named (type and
form), the Hub repo id, the output folder (earlier work, write access, its run lock), free disk and the checkpoint to
resume from. Each raises a `UserError` naming the flag, the value and the fix; none changes the arguments."""

import json
import shutil
from pathlib import Path

from huggingface_hub.errors import StrictDataclassError
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import AutoConfig
from transformers.utils import logging

from ..errors import MissingInputError, OutputError, UserError
from ..safety import OutputFolder, RunLock
from .arguments import RIFORMER
from .checkpoints import checkpoint_bytes, checkpoint_folders
from .resume_check import (
    STORAGE_HINT,
    describe_lacking,
    gather_views,
    is_rng_only,
    lacking,
    local_view,
    split_visibility,
    step_of,
)

logger = logging.get_logger(__name__)

RESUME_LAST = ("last", "latest", "true", "True")


def _check(ok: bool, flag: str, value, rule: str, fix: str = "") -> None:
    if not ok:
        raise UserError(f"--{flag} {value}: {rule}{'; ' + fix if fix else ''}.")


def check_values(data_args, model_args, training_args, run_args) -> None:
    """Ranges and combinations of the values."""
    if data_args.streaming and training_args.max_steps <= 0:
        raise UserError("--streaming trains on a stream of unknown length: set the schedule with --max_steps N.")
    _check(data_args.hflip is None or 0.0 <= data_args.hflip <= 1.0, "hflip", data_args.hflip,
           "a probability must lie in [0, 1]")
    _check(0.0 < data_args.min_crop_area <= 1.0, "min_crop_area", data_args.min_crop_area,
           "an area fraction must lie in (0, 1]", "1 = no random crop")
    _check(0.0 < data_args.eval_fraction < 1.0, "eval_fraction", data_args.eval_fraction, "must lie in (0, 1)")
    for flag, value in (("image_size", model_args.image_size), ("max_train_samples", data_args.max_train_samples),
                        ("max_eval_samples", data_args.max_eval_samples), ("threads", run_args.threads)):
        _check(value is None or value > 0, flag, value, "must be positive")
    for flag in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        value = getattr(training_args, flag)
        _check(value > 0, flag, value, "must be positive")
    _check(training_args.learning_rate >= 0, "learning_rate", training_args.learning_rate, "must not be negative")
    for flag in ("depths", "hidden_sizes"):
        value = getattr(model_args, flag)
        _check(value is None or all(v > 0 for v in value), flag, value, "every entry must be positive")
    _check(model_args.crop_pct is None or 0.0 < model_args.crop_pct <= 1.0, "crop_pct", model_args.crop_pct,
           "a crop fraction must lie in (0, 1]")
    _check(model_args.drop_path_rate is None or 0.0 <= model_args.drop_path_rate < 1.0, "drop_path_rate",
           model_args.drop_path_rate, "a drop probability must lie in [0, 1)")
    if training_args.do_train:
        _check(training_args.max_steps != 0, "max_steps", 0, "trains nothing",
               "give a positive count (-1 = use --num_train_epochs), or --do_eval alone to evaluate only")
        _check(training_args.max_steps > 0 or training_args.num_train_epochs > 0, "num_train_epochs",
               training_args.num_train_epochs, "trains nothing", "give a positive count, or --do_eval alone to "
               "evaluate only")
    elif not training_args.do_eval:
        raise UserError("--do_train false and --do_eval false: nothing to do; give --do_train and/or --do_eval.")
    elif model_args.model_name_or_path is None:
        raise UserError("--do_eval without --do_train evaluates --model_name_or_path: give the model to evaluate.")


def check_models(model_args, training_args, data_args=None) -> str:
    """The models named, read from their configs only: the teachers exist (or look like Hub ids); the model to train
    is an image classifier (a RIFormer in training form when it is trained); RIFormer-only options are refused for
    another model; the imitation teacher is a PoolFormer, and `--init_from_teacher` has one; a logit teacher predicts
    the dataset's classes (when a local folder or the digits tell them without reading an image). Returns the
    model type of the model to train."""
    training = training_args.do_train
    for flag in ("teacher_model", "imitation_teacher"):
        check_source(flag, getattr(model_args, flag))
    model_type = trained_model_type(model_args, training)
    if training and model_type != RIFORMER:
        _refuse_riformer_only_options(model_type, model_args, training_args)
    if training:
        _check_teachers(model_args)
    if training and data_args is not None and model_args.teacher_model and training_args.distillation_type != "none":
        from ..data.datasets import ImageSource, peek_class_names

        source = ImageSource(data_args.data_dir, data_args.dataset_name, data_args.dataset_config)
        _check_teacher_classes(model_args.teacher_model, peek_class_names(source))
    return model_type


def trained_model_type(model_args, training: bool = True) -> str:
    """The `model_type` of the model riformer-train trains (or evaluates): that of --model_name_or_path or
    --config_name, else --model_type (default riformer); every way of naming it is checked."""
    named = [(flag, getattr(model_args, flag)) for flag in ("model_name_or_path", "config_name")]
    named = [(flag, value) for flag, value in named if value is not None]
    if not named:
        model_type = model_args.model_type or RIFORMER
        _check_preset(model_type, model_args.model_preset)
        return model_type
    if model_args.model_preset is not None:
        raise UserError(
            f"--model_preset {model_args.model_preset} builds a model from scratch, but --{named[0][0]} names the "
            "model already: drop one of them."
        )
    if model_args.model_name_or_path is not None:
        for flag in ("depths", "hidden_sizes"):
            if getattr(model_args, flag) is not None:
                raise UserError(
                    f"--{flag} changes the architecture, which --model_name_or_path {model_args.model_name_or_path} "
                    f"fixes with its weights: drop --{flag}, or build a model from scratch (--model_type, "
                    "--model_preset or --config_name)."
                )
    types = {}
    for flag, value in named:
        check_source(flag, value)
        config = load_config(flag, value)
        _check_classifier(flag, value, config, training)
        types[flag] = config.model_type
    model_type = next(iter(types.values()))
    given = {f"--{flag} {value}": t for (flag, value), t in zip(named, types.values())}
    if model_args.model_type is not None:
        given["--model_type"] = model_args.model_type
    if len(set(given.values())) > 1:
        listed = ", ".join(f"{name} is a {t!r} model" for name, t in given.items() if name != "--model_type")
        wanted = f"; --model_type {model_args.model_type}" if model_args.model_type else ""
        raise UserError(f"The model to train is named twice, differently: {listed}{wanted}: keep one of them.")
    return model_type


def _check_preset(model_type: str, preset: str | None) -> None:
    from ..models.gfnet import GFNET_PRESETS, GFNetConfig
    from ..models.riformer import RIFORMER_PRESETS, RIFormerConfig

    if preset is None:
        return
    family, presets = (GFNetConfig, GFNET_PRESETS) if model_type == "gfnet" else (RIFormerConfig, RIFORMER_PRESETS)
    try:
        family.from_preset(preset)
    except ValueError:
        other = "" if model_type == "gfnet" else " (the GFNet presets go with --model_type gfnet)"
        raise UserError(
            f"--model_preset {preset} is not a {model_type} preset: choose one of {', '.join(presets)}{other}."
        ) from None


def _check_classifier(flag: str, value: str, config, training: bool) -> None:
    """An image classifier the Auto classes build; a RIFormer in training form when it is trained."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING

    if config.model_type == RIFORMER:
        if training and getattr(config, "reparameterized", False):
            raise UserError(
                f"--{flag} {value} is a re-parameterised (deploy) RIFormer, which has no token mixer to train or "
                "imitate: start from the training form (a `checkpoint-N` folder or the export's `training/`), or "
                "evaluate it with --do_eval alone."
            )
        return
    if type(config) not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING:
        raise UserError(
            f"--{flag} {value} is a {config.model_type!r} model, which AutoModelForImageClassification cannot build: "
            "give an image classifier (a RIFormer, PoolFormer, GFNet, ConvNeXt, ViT, ...)."
        )


def _refuse_riformer_only_options(model_type: str, model_args, training_args) -> None:
    """Module imitation and teacher initialisation train a RIFormer's token mixers: one line listing every such
    option given for another model. Imitation weights set by --recipe (not given explicitly) are dropped later."""
    explicit = set(training_args.recipe_overrides or ()) if training_args.recipe else None
    given = []
    for name in ("lambda_hidden", "lambda_mixer", "lambda_relation"):
        value = getattr(training_args, name)
        if value and (explicit is None or name in explicit):
            given.append(f"--{name} {value}")
    if training_args.imitation_layers is not None:
        given.append("--imitation_layers")
    if model_args.imitation_teacher is not None:
        given.append(f"--imitation_teacher {model_args.imitation_teacher}")
    if model_args.init_from_teacher:
        given.append("--init_from_teacher")
    if given:
        trained = model_args.model_name_or_path or model_args.config_name or f"--model_type {model_type}"
        raise UserError(
            f"{', '.join(given)}: module imitation and teacher initialisation train a RIFormer student, but the model "
            f"to train ({trained}) is a {model_type!r} model: drop them (logit distillation, --teacher_model with "
            "--distillation_type, works for any model)."
        )


def _check_teachers(model_args) -> None:
    """The imitation teacher is a PoolFormer; `--init_from_teacher` has one and takes its architecture."""
    if model_args.imitation_teacher is not None:
        config = load_config("imitation_teacher", model_args.imitation_teacher)
        if config.model_type != "poolformer":
            raise UserError(
                f"--imitation_teacher {model_args.imitation_teacher} is a {config.model_type!r} model; module "
                "imitation needs a PoolFormer isomorphic to the student (pass other classifiers as --teacher_model)."
            )
    if not model_args.init_from_teacher:
        return
    teacher_is_poolformer = (
        model_args.teacher_model is not None
        and load_config("teacher_model", model_args.teacher_model).model_type == "poolformer"
    )
    if model_args.imitation_teacher is None and not teacher_is_poolformer:
        raise UserError(
            "--init_from_teacher needs a PoolFormer teacher: pass --imitation_teacher (or a PoolFormer "
            "--teacher_model)."
        )
    architecture = [flag for flag in ("depths", "hidden_sizes") if getattr(model_args, flag) is not None]
    architecture += ["model_preset"] if model_args.model_preset is not None else []
    if architecture:
        raise UserError(
            f"--init_from_teacher takes the architecture from the PoolFormer; drop --{', --'.join(architecture)}."
        )


def _check_teacher_classes(teacher: str, classes: list[str] | None) -> None:
    """A logit teacher predicts the dataset's classes in the dataset's order (when the names are known)."""
    from ..distillation.trainer import label_space

    if classes is None:
        return  # a Hub dataset: the trainer checks the label spaces once the data is loaded
    count, names = label_space(load_config("teacher_model", teacher))
    data_names = dict(enumerate(classes))
    if count == len(classes) and (names is None or names == data_names):
        return
    shown = ", ".join(list((names or {}).values())[:5]) or "unnamed"
    raise UserError(
        f"--teacher_model {teacher} predicts {count} classes ({shown}{', ...' if count > 5 else ''}), the dataset "
        f"{len(classes)} ({', '.join(classes[:5])}{', ...' if len(classes) > 5 else ''}): logit distillation compares "
        "predictions class by class. Fine-tune the teacher on this data first (riformer-train --model_name_or_path "
        f"{teacher} --data_dir ...), or train without it (--distillation_type none)."
    )


def check_source(flag: str, value: str | None) -> None:
    """`value` names an existing file or folder, or has the form of a Hub repo id."""
    if value is None or Path(value).exists():
        return
    try:
        validate_repo_id(value)
    except HFValidationError:
        raise MissingInputError(
            f"--{flag} {value}: no such file or folder, and not a Hub repo id: give a folder with config.json (check "
            "the path) or a Hub id such as `namespace/name`."
        ) from None


def load_config(flag: str, value: str, **overrides):
    """The config of a model folder, config file or Hub id named by `--flag`, as a user error when it cannot be read
    or its class refuses it."""
    try:
        return AutoConfig.from_pretrained(value, **overrides)
    except StrictDataclassError as error:
        reason = " ".join(str(error).split())
        raise UserError(f"--{flag} {value}: its config is invalid ({reason}): correct config.json.") from None
    except (OSError, ValueError) as error:
        reason = " ".join(str(error).split())
        raise UserError(f"--{flag} {value}: cannot read its config ({reason}).") from None


def check_hub_repo(training_args) -> None:
    if not (training_args.push_to_hub or training_args.hub_model_id):
        return
    repo_id = training_args.hub_model_id or Path(training_args.output_dir).absolute().name
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise UserError(
            f"--hub_model_id {repo_id!r} is not a valid Hub repo id ({error}): use `name` or `namespace/name` with "
            "letters, digits, '-', '_' and '.'."
        ) from None


TRAIN_FIX = ("continue it with --resume_from_checkpoint last, start afresh there with --overwrite_output_dir, or give "
             "another --output_dir")
MODEL_FLAGS = ("model_name_or_path", "config_name", "teacher_model", "imitation_teacher")


def output_folder(training_args, run_args, model_args=None) -> OutputFolder:
    """The guard of `--output_dir` (`riformer_hf.safety`): an earlier run is refused unless resuming or
    `--overwrite_output_dir`; starting afresh, no model this run reads may lie in the run it replaces."""
    resuming = training_args.resume_from_checkpoint is not None
    sources = [] if resuming or model_args is None else [(f"--{f}", getattr(model_args, f)) for f in MODEL_FLAGS]
    return OutputFolder(training_args.output_dir, overwrite=run_args.overwrite_output_dir or resuming, fix=TRAIN_FIX,
                        sources=sources)


def check_output_dir(training_args, run_args, model_args=None) -> RunLock | None:
    """`--output_dir` is no file and can be written (a probe that leaves a missing folder missing, once per machine).
    Training also takes the folder's run lock (the saving process; the other ranks join it after) and then, under
    the lock, refuses an earlier run unless resuming or `--overwrite_output_dir`. Returns the lock (None when only
    evaluating: that writes eval_results.json and all_results.json, nothing else)."""
    folder = output_folder(training_args, run_args, model_args)
    folder.check_not_a_file()
    if training_args.local_process_index == 0:
        folder.check_writable()  # one probe per machine: the ranks' probes would race on the folders they create
    if not training_args.do_train:
        return None
    lock = RunLock(folder.path, label=folder.label, flag="--output_dir")
    with training_args.main_process_first(local=False, desc="the output folder's run lock"):
        lock.acquire() if training_args.should_save else lock.join()
    try:
        folder.check(writable=False, warn=training_args.should_save)
    except BaseException:
        lock.release()
        raise
    return lock


def check_free_disk(model, training_args) -> None:
    """The disk under `output_dir` holds at least one checkpoint of `model` (weights, AdamW states, a margin)."""
    needed = checkpoint_bytes(model, with_optimizer=training_args.save_strategy != "no")
    output_dir = Path(training_args.output_dir).absolute()
    existing = next(p for p in (output_dir, *output_dir.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise OutputError(
            f"Not enough free disk for one checkpoint in --output_dir {training_args.output_dir}: "
            f"{_size(free)} free, a checkpoint of this {model.num_parameters():,}-parameter model takes about "
            f"{_size(needed)} (weights + AdamW states): free some space or give another --output_dir."
        )


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB"):
        if n < 1000:
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"


def check_resume_matches(checkpoint, model) -> None:
    """The weights in `checkpoint` have the shapes of `model` (built from this run's flags): a checkpoint of another
    architecture is named with both shapes and both layouts, before Trainer's load fails with a size mismatch."""
    from safetensors import safe_open

    weights = Path(checkpoint) / "model.safetensors"
    if not weights.is_file():
        return  # sharded or another format: Trainer's own loading checks it
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    with safe_open(weights, framework="pt") as saved:
        names = saved.keys()  # a safetensors handle, not a dict
        found = {name: tuple(saved.get_slice(name).get_shape()) for name in names}
    differing = [name for name in expected if name in found and found[name] != expected[name]]
    missing = sorted(set(expected) - set(found))
    if not differing and not missing:
        return
    layout = ("depths", "hidden_sizes", "mlp_ratio", "num_labels")
    try:
        saved_config = json.loads((Path(checkpoint) / "config.json").read_text())
        theirs = ", ".join(f"{k} {saved_config.get(k, len(saved_config.get('id2label', {})))}" for k in layout)
    except (OSError, ValueError):
        theirs = "its config.json is unreadable"
    ours = ", ".join(f"{k} {list(v) if isinstance(v := getattr(model.config, k), tuple) else v}" for k in layout)
    detail = (f"{differing[0]} is {found[differing[0]]} there and {expected[differing[0]]} here" if differing
              else f"it lacks {missing[0]}")
    raise UserError(
        f"--resume_from_checkpoint {checkpoint} holds another architecture ({detail}; the checkpoint: {theirs}; "
        f"this run's flags: {ours}): resume with the flags of the run that wrote it, or start afresh with "
        "--overwrite_output_dir."
    )


def resolve_resume(training_args) -> str | None:
    """`--resume_from_checkpoint`: `last` = the newest `checkpoint-N` of `output_dir` complete for every process (one
    log line for each one skipped, naming what it lacks); a path must be complete for every process (a missing RNG
    state only warns: a run with another process count resumes, not exactly). Complete = what `Trainer` needs to
    resume exactly (`resume_check`). A collective when several processes run: they all get the same answer, or the
    same error, which names the storage to use when the machines do not see the same checkpoints."""
    resume = training_args.resume_from_checkpoint
    if resume is None:
        return None
    last = resume in RESUME_LAST
    folders = checkpoint_folders(training_args.output_dir) if last else [Path(resume)]
    views = gather_views(local_view(
        folders, training_args.process_index, training_args.world_size, scheduler_file=_scheduler_file(training_args)
    ))
    main_process = training_args.process_index == 0
    if not last:
        name = Path(resume).name
        gaps = lacking(views, name)
        if gaps and all(is_rng_only(items) for _, items in gaps):
            if main_process:
                logger.warning(f"--resume_from_checkpoint {resume}: {describe_lacking(views, name)}: resuming, but not "
                               "exactly (was it saved by a run with another number of processes?).")
            return resume
        if gaps:
            storage = f"; {STORAGE_HINT}" if len(gaps) < len(views) else ""
            raise MissingInputError(
                f"--resume_from_checkpoint {resume} is not a complete checkpoint: {describe_lacking(views, name)}"
                f"{storage}. Give a whole `checkpoint-N` folder, or `last`."
            )
        return resume
    names = sorted({name for view in views for name in view.missing}, key=step_of)
    complete = [name for name in names if not lacking(views, name)]
    if complete:
        for name in names[names.index(complete[-1]) + 1:] if main_process else ():
            logger.warning(f"Skipping {name}, incomplete: {describe_lacking(views, name)}; resuming from an earlier "
                           "one.")
        return str(Path(training_args.output_dir) / complete[-1])
    split = split_visibility(views, names)
    if split is not None:
        whole = [view.process_index for view in views if not view.lacks(split)]
        raise MissingInputError(
            f"--resume_from_checkpoint last: {split} in --output_dir {training_args.output_dir} is whole for "
            f"process{'es' if len(whole) > 1 else ''} {', '.join(map(str, whole))} only: "
            f"{describe_lacking(views, split)}; {STORAGE_HINT}."
        )
    raise MissingInputError(
        f"--resume_from_checkpoint last: no complete checkpoint-N folder in {training_args.output_dir}"
        f"{f' ({len(names)} incomplete)' if names else ''}: drop the flag to start afresh."
    )


def _scheduler_file(training_args) -> bool:
    """Whether checkpoints hold `scheduler.pt`: not under DeepSpeed when its config defines the scheduler."""
    plugin = getattr(training_args, "deepspeed_plugin", None)
    return plugin is None or "scheduler" not in (getattr(plugin, "deepspeed_config", None) or {})


__all__ = [
    "RESUME_LAST",
    "check_free_disk",
    "check_hub_repo",
    "check_models",
    "check_output_dir",
    "check_resume_matches",
    "check_source",
    "check_values",
    "load_config",
    "output_folder",
    "resolve_resume",
    "trained_model_type",
]
