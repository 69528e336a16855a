"""Model cards: a RIFormer's deploy export (`model_card_template.md`) and any other image classifier trained with
riformer-train, e.g. a teacher (`classifier_card_template.md`): metadata (`model-index`, recipe, teachers),
architecture, preprocessing, usage.

The templates are package data; what a card says about preprocessing is read from the image processor saved beside
the weights, and each teacher is named with the accuracy it records about itself, when it records one.
"""

import json
import os
import re
from enum import Enum
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, processor_spec
from ..models.riformer import RIFORMER_PRESETS

MODEL_CARD_TEMPLATE = Path(__file__).with_name("model_card_template.md")  # package data (model_cards/ links to it)
CLASSIFIER_CARD_TEMPLATE = Path(__file__).with_name("classifier_card_template.md")

CARD_TAGS = ["riformer", "image-classification", "knowledge-distillation", "reparameterized"]

CITATION = """@inproceedings{wang2023riformer,
  title     = {RIFormer: Keep Your Vision Backbone Effective But Removing Token Mixer},
  author    = {Wang, Jiahao and Zhang, Songyang and Liu, Yong and Wu, Taiqiang and Yang, Yujiu and Liu, Xihui and
               Chen, Kai and Luo, Ping and Lin, Dahua},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2023},
  note      = {arXiv:2304.05659}
}"""

# Training settings reported in the card, with what they mean. Distillation fields are read when the arguments
# define them (RIFormerTrainingArguments); the others come from any TrainingArguments.
RECIPE_MEANINGS = {
    "distillation_type": "logit distillation: soft (KL to the teacher's softened logits) or hard (CE to its argmax)",
    "distillation_alpha": "weight α of the distillation loss (the label loss gets 1 − α)",
    "distillation_temperature": "distillation temperature τ",
    "lambda_hidden": "λ1, block-output imitation L′in",
    "lambda_mixer": "λ2, token-mixer-output imitation Lout",
    "lambda_relation": "λ3, relation imitation Lrel",
    "imitation_layers": "imitated blocks",
    "feature_epochs": "epochs with the feature imitation terms",
    "relation_epochs": "epochs with the relation term",
    "feature_fraction": "share of the training steps with the feature imitation terms",
    "relation_fraction": "share of the training steps with the relation term",
    "train_interpolation": "resampling of the crop and of RandAugment's geometric operations",
    "recipe": "training recipe preset (explicit flags override it)",
    "aa": "RandAugment policy (timm format)",
    "color_jitter": "colour-jitter strength",
    "mixup": "mixup α",
    "cutmix": "cutmix α",
    "mixup_prob": "probability that a batch is mixed",
    "mixup_switch_prob": "probability of cutmix rather than mixup",
    "reprob": "random-erasing probability",
    "num_train_epochs": "epochs planned",
    "max_steps": "optimizer steps planned",
    "trained_epochs": "epochs run",
    "trained_steps": "optimizer steps run",
    "train_batch_size": "effective batch size (devices × per-device batch × accumulation)",
    "learning_rate": "peak learning rate",
    "lr_scheduler_type": "learning-rate schedule",
    "warmup_steps": "warm-up steps (a fraction below 1 is a share of the training steps)",
    "optim": "optimizer",
    "weight_decay": "weight decay",
    "label_smoothing_factor": "label smoothing",
    "seed": "random seed",
}
_DISTILLATION_FIELDS = (
    "distillation_type", "distillation_alpha", "distillation_temperature", "lambda_hidden", "lambda_mixer",
    "lambda_relation", "imitation_layers", "feature_epochs", "relation_epochs", "feature_fraction",
    "relation_fraction", "recipe", "aa", "train_interpolation", "color_jitter", "mixup", "cutmix", "mixup_prob",
    "mixup_switch_prob", "reprob",
)


def build_model_card(
    model,
    image_processor,
    repo_id: str | None = None,
    *,
    datasets: str | list[str] | None = None,
    base_model: str | list[str] | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    tags: list[str] | None = None,
    model_name: str | None = None,
    eval_results: dict[str, float] | None = None,
    recipe: dict | None = None,
    teachers: list[dict] | None = None,
    initialised_from: str | None = None,
    training_subfolder: bool = False,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """The model card of a RIFormer's deploy export (`model` in either form, `image_processor` the one saved beside
    it), from the package's `model_card_template.md` (also at `model_cards/riformer_template.md` in the repository).

    Metadata: `library_name: transformers`, `pipeline_tag: image-classification`, the RIFormer tags, `datasets`,
    `base_model` (teachers with a Hub id), a `model-index` with `eval_results` (e.g. `{"accuracy": 0.91}`), the
    training `recipe` as `training_recipe` and the `teachers` (`describe_teachers`). The text gives the
    architecture, parameter counts, teachers, recipe, a `pipeline` snippet and the paper's citation.
    """
    template_path = _template(template_path, MODEL_CARD_TEMPLATE)
    config = model.config
    preset = _preset_name(config)
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else f"RIFormer-{preset or 'custom'}")
    card_data = _card_data(
        CARD_TAGS, model_name, datasets=datasets, base_model=base_model, license=license, language=language,
        tags=tags, eval_results=eval_results, recipe=recipe, teachers=teachers, initialised_from=initialised_from,
    )
    datasets, base_models = _as_list(datasets), _as_list(base_model)
    eval_results = {name: float(value) for name, value in (eval_results or {}).items()}
    mixer_parameters = 2 * sum(d * c for d, c in zip(config.depths, config.hidden_sizes))  # 2·C per block
    num_parameters = model.num_parameters() - (0 if model.is_reparameterized else mixer_parameters)
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        repo_id=repo_id or "path/to/this/folder",
        preset=preset,
        depths=list(config.depths),
        hidden_sizes=list(config.hidden_sizes),
        mlp_ratio=config.mlp_ratio,
        num_parameters=num_parameters,
        num_training_parameters=num_parameters + mixer_parameters,
        preprocessing=describe_preprocessing(image_processor),
        num_labels=config.num_labels,
        base_models=base_models,
        datasets=datasets,
        eval_results=eval_results,
        recipe=_yaml_safe(recipe) or {},
        recipe_meanings=RECIPE_MEANINGS,
        distilled=any(name in (recipe or {}) for name in _DISTILLATION_FIELDS),
        teachers=_yaml_safe(teachers) or [],
        initialised_from=initialised_from,
        training_subfolder=training_subfolder,
        citation=CITATION,
    )


# Architectures the classifier card knows by name: (display name, paper, whether transformers has the code built in).
KNOWN_ARCHITECTURES = {
    "poolformer": ("PoolFormer", "https://arxiv.org/abs/2111.11418", True),
    "gfnet": ("GFNet-H", "https://arxiv.org/abs/2107.00645", False),
}
CLASSIFIER_CARD_TAGS = ["image-classification", "riformer-teacher"]


def build_classifier_card(
    model,
    image_processor,
    repo_id: str | None = None,
    *,
    datasets: str | list[str] | None = None,
    base_model: str | list[str] | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    tags: list[str] | None = None,
    model_name: str | None = None,
    eval_results: dict[str, float] | None = None,
    recipe: dict | None = None,
    teachers: list[dict] | None = None,
    initialised_from: str | None = None,
    template_path: str | os.PathLike | None = None,
    training_subfolder: bool = False,
) -> ModelCard:
    """The card of an image classifier other than RIFormer trained with riformer-train (typically a PoolFormer or
    GFNet teacher for RIFormer distillation), from `classifier_card_template.md`. It is published as it is, with no
    re-parameterisation, and the card says so; it says whether loading needs `riformer_hf` (GFNet) or not
    (families transformers has built in), names the teachers it learnt from and the model it was fine-tuned from,
    and shows how to use it as a RIFormer teacher. Fields as in `build_model_card` (`training_subfolder` is
    RIFormer's: ignored)."""
    config = model.config
    model_type = config.model_type
    display, paper, built_in = KNOWN_ARCHITECTURES.get(model_type, (type(model).__name__, None, True))
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else f"{display} classifier")
    base_models = _as_list(base_model)
    card_data = _card_data(
        CLASSIFIER_CARD_TAGS + [model_type], model_name, datasets=datasets, base_model=base_models, license=license,
        language=language, tags=tags, eval_results=eval_results, recipe=recipe, teachers=teachers,
        initialised_from=initialised_from,
    )
    names = [str(config.id2label[i]) for i in sorted(config.id2label)]
    return ModelCard.from_template(
        card_data,
        template_path=str(_template(template_path, CLASSIFIER_CARD_TEMPLATE)),
        model_name=model_name,
        repo_id=repo_id or "path/to/this/folder",
        architecture=display,
        architecture_class=type(model).__name__,
        paper=paper,
        built_in=built_in,
        is_poolformer=model_type == "poolformer",
        depths=list(getattr(config, "depths", []) or []),
        hidden_sizes=list(getattr(config, "hidden_sizes", []) or []),
        num_parameters=model.num_parameters(),
        preprocessing=describe_preprocessing(image_processor),
        num_labels=config.num_labels,
        class_names=", ".join(names[:10]) + (f", … ({len(names) - 10} more)" if len(names) > 10 else ""),
        initialised_from=initialised_from,
        base_models=base_models,
        datasets=_as_list(datasets),
        eval_results={name: float(value) for name, value in (eval_results or {}).items()},
        recipe=_yaml_safe(recipe) or {},
        recipe_meanings=RECIPE_MEANINGS,
        distilled=(recipe or {}).get("distillation_type", "none") != "none",
        teachers=_yaml_safe(teachers) or [],
    )


def _template(path, default: Path) -> Path:
    path = Path(path or default)
    if not path.is_file():
        raise FileNotFoundError(f"Model card template not found at {path}; pass template_path=...")
    return path


def _card_data(tags_first: list[str], model_name: str, *, datasets, base_model, license, language, tags,
               eval_results, recipe, teachers, initialised_from=None) -> ModelCardData:
    """The YAML metadata both cards share: tags, datasets, base models, `model-index` accuracy, recipe, teachers."""
    datasets, base_models = _as_list(datasets), _as_list(base_model)
    eval_results = {name: float(value) for name, value in (eval_results or {}).items()}
    dataset_id = datasets[0] if datasets else "custom"
    return ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=tags_first + [t for t in tags or () if t not in tags_first],
        datasets=datasets or None,
        base_model=(base_models[0] if len(base_models) == 1 else base_models) or None,
        license=license,
        language=language,
        metrics=["accuracy"] if eval_results else None,
        model_name=model_name,
        eval_results=[
            EvalResult(
                task_type="image-classification", task_name="Image Classification", dataset_type=dataset_id,
                dataset_name=dataset_id, metric_type="accuracy", metric_name=name, metric_value=value,
            )
            for name, value in eval_results.items()
        ] or None,
        training_recipe=_yaml_safe(recipe) or None,
        teachers=_yaml_safe(teachers) or None,
        initialised_from=initialised_from,
    )


def describe_teachers(teacher=None, imitation_teacher=None) -> list[dict]:
    """The card's entries for a logit teacher and an imitation teacher (models, or None): each one's role, name
    (Hub id, or a local folder's name), model type and the top-1 accuracy it records about itself (or None)."""
    roles: dict[int, list] = {}
    for model, role in ((teacher, "logit teacher"), (imitation_teacher, "imitation teacher")):
        if model is not None:
            roles.setdefault(id(model), [model, []])[1].append(role)
    entries = []
    for model, names in roles.values():
        source = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None) or ""
        hub_id = hub_model_id_of(model)
        entries.append({
            "role": " and ".join(names),
            "model": hub_id or (Path(source).name if source else type(model).__name__),
            "on_hub": hub_id is not None,
            "model_type": model.config.model_type,
            "accuracy": recorded_accuracy(source) if source else None,
        })
    return entries


def recorded_accuracy(name_or_path) -> float | None:
    """The top-1 accuracy a model folder or Hub repo records about itself: riformer-train's `eval_results.json`,
    else its card's `model-index` accuracy; None when it records none (or the Hub cannot be asked)."""
    folder = Path(str(name_or_path))
    try:
        if folder.is_dir():
            results = folder / "eval_results.json"
            if results.is_file():
                value = json.loads(results.read_text()).get("eval_accuracy")
                if value is not None:
                    return float(value)
            if not (folder / "README.md").is_file():
                return None
            card = ModelCard.load(folder / "README.md", ignore_metadata_errors=True)
        elif hub_model_id_of(str(name_or_path)) is not None:
            card = ModelCard.load(str(name_or_path), ignore_metadata_errors=True)
        else:
            return None
    except Exception:  # noqa: BLE001 -- unreadable file, no such repo, offline: the accuracy is just not known
        return None
    found = [r.metric_value for r in card.data.eval_results or () if (r.metric_name or r.metric_type) == "accuracy"]
    return float(found[0]) if found else None


def describe_preprocessing(image_processor) -> str:
    """One line saying what `image_processor` does to an image, for the card."""
    spec = processor_spec(image_processor)
    resize = f"short side resized to {spec.resize_shortest_edge} px (bicubic), " if spec.resize_shortest_edge else ""
    crop = f" (crop_pct {spec.crop_pct})" if spec.crop_pct else ""
    stats = "ImageNet mean/std" if (spec.mean, spec.std) == (IMAGENET_MEAN, IMAGENET_STD) else (
        f"mean {list(spec.mean)}, std {list(spec.std)}")
    return f"RGB, {resize}centre-cropped to {spec.height}×{spec.width}{crop}, {stats}"


def card_info_from_folder(folder) -> dict:
    """Card fields a folder records: README.md metadata (a previous export), trainer_state.json (a checkpoint)."""
    folder, info = Path(folder), {}
    if (folder / "README.md").is_file():
        data = ModelCard.load(folder / "README.md", ignore_metadata_errors=True).data
        info = {
            "datasets": data.datasets,
            "base_model": data.base_model,
            "license": data.license,
            "language": data.language,
            "tags": [t for t in data.tags or () if t not in CARD_TAGS],
            "eval_results": {r.metric_name or r.metric_type: r.metric_value for r in data.eval_results or ()},
            "recipe": data.get("training_recipe"),
            "teachers": data.get("teachers"),
            "initialised_from": data.get("initialised_from"),
        }
    if (folder / "trainer_state.json").is_file():
        state = json.loads((folder / "trainer_state.json").read_text())
        history = state.get("log_history", [])
        info["eval_results"] = info.get("eval_results") or eval_results_from_log_history(history)
        progress = {"trained_epochs": state.get("epoch"), "trained_steps": state.get("global_step")}
        info["recipe"] = info.get("recipe") or progress
    return {k: v for k, v in info.items() if v}


def eval_results_from_log_history(log_history: list[dict], step: int | None = None) -> dict[str, float]:
    """Accuracy metrics (`eval_*accuracy`) of the evaluation at `step`, or of the last evaluation."""
    evaluations = [e for e in log_history if any(_is_accuracy(k) for k in e)]
    if not evaluations:
        return {}
    chosen = next((e for e in evaluations if e.get("step") == step), evaluations[-1])
    return {k.removeprefix("eval_"): float(v) for k, v in chosen.items() if _is_accuracy(k)}


def recipe_from_training(args, state=None) -> dict:
    """The training settings worth a model card, from TrainingArguments (distillation fields when it has them)."""
    recipe = {name: getattr(args, name) for name in _DISTILLATION_FIELDS if getattr(args, name, None) is not None}
    if args.max_steps > 0:
        recipe["max_steps"] = args.max_steps
    else:
        recipe["num_train_epochs"] = args.num_train_epochs
    if state is not None and state.global_step:
        recipe["trained_epochs"] = round(state.epoch or 0.0, 4)
        recipe["trained_steps"] = state.global_step
    recipe["train_batch_size"] = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    for name in ("learning_rate", "lr_scheduler_type", "warmup_steps", "optim", "weight_decay",
                 "label_smoothing_factor", "seed"):
        recipe[name] = getattr(args, name)
    return _yaml_safe(recipe)


def _is_accuracy(key: str) -> bool:
    return key.startswith("eval_") and key.endswith("accuracy")


def _yaml_safe(value):
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _yaml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_yaml_safe(v) for v in value]
    return value


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _preset_name(config) -> str | None:
    for name, preset in RIFORMER_PRESETS.items():
        if tuple(config.depths) == preset["depths"] and tuple(config.hidden_sizes) == preset["hidden_sizes"]:
            return name.upper()
    return None


def hub_model_id_of(module) -> str | None:
    """The Hub id a model was loaded from (`name_or_path`; or a name given as a string), or None for local paths and
    models built in memory."""
    if isinstance(module, str):
        name = module
    else:
        name = getattr(module, "name_or_path", None) or getattr(getattr(module, "config", None), "_name_or_path", None)
    if not name or os.path.exists(name) or not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return None
    return name


__all__ = [
    "build_classifier_card",
    "build_model_card",
    "card_info_from_folder",
    "describe_preprocessing",
    "describe_teachers",
    "eval_results_from_log_history",
    "hub_model_id_of",
    "recipe_from_training",
    "recorded_accuracy",
]
