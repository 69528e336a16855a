"""Publishing RIFormer: the re-parameterised export, its model card, Hub pushes and the Trainer save hook.

What users download must be the fast form; what training resumes from must be the training form. The deploy export
is a folder holding `model.safetensors` without token-mixer tensors, `config.json` with `reparameterized: true` and
`auto_map`, the modelling code for `trust_remote_code`, `preprocessor_config.json` and a model card (`README.md`),
optionally with the training form in `training/`. It is written to a temporary folder and moved into place, so a
failure never leaves a half-written folder behind.

- `export_reparameterized(model_or_dir, save_dir)`: write the export.
- `push_reparameterized(model_or_dir, repo_id)`: export and push; its command line is `python -m riformer_hf.push`
  (`scripts/push_to_hub.py` in the repository).
- `ReparameterizedExportMixin`: put it in front of `transformers.Trainer` to keep `checkpoint-N` folders in training
  form while `save_model()` and every Hub push hold the export.
"""

import json
import logging
import os
import re
import shlex
import shutil
import sys
import tempfile
from enum import Enum
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants
from torch import nn
from transformers.trainer_utils import HubStrategy, SaveStrategy
from transformers.utils.hub import PushInProgress

from . import modeling_riformer
from .configuration_riformer import RIFORMER_PRESETS
from .modeling_riformer import RIFormerForImageClassification, RIFormerPreTrainedModel, reparameterize_model

logger = logging.getLogger(__name__)

MODEL_CARD_TEMPLATE = Path(__file__).with_name("model_card_template.md")  # package data (model_cards/ links to it)

CARD_TAGS = ["riformer", "image-classification", "knowledge-distillation", "reparameterized"]
TRAINING_SUBFOLDER = "training"
PREPROCESSOR_CONFIG = "preprocessor_config.json"
TRAINING_ARGS_FILE = "training_args.bin"
# Files of an export at the top of a folder (`output_dir` also holds checkpoints, logs, ...).
_EXPORT_FILE = re.compile(r"(config\.json|preprocessor_config\.json|README\.md|model(-\d+-of-\d+)?\.safetensors"
                          r"|model\.safetensors\.index\.json|[A-Za-z_]\w*\.py)")
# Weight files a new export replaces: deleted locally and on the Hub when the new export does not have them.
_STALE_WEIGHTS = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin")

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
_DISTILLATION_FIELDS = ("distillation_type", "distillation_alpha", "distillation_temperature", "lambda_hidden",
                        "lambda_mixer", "lambda_relation", "imitation_layers", "feature_epochs", "relation_epochs")


class HubPushError(RuntimeError):
    """A push to the Hub failed; the local export is complete. `retry_command` pushes it again."""

    def __init__(self, message: str, *, repo_id: str, local_dir: Path, retry_command: str):
        super().__init__(message)
        self.repo_id, self.local_dir, self.retry_command = repo_id, local_dir, retry_command


# ---------------------------------------------------------------------------------------------------- the export


def load_riformer(model_dir, model_class: type[RIFormerPreTrainedModel] | None = None) -> RIFormerPreTrainedModel:
    """Load a RIFormer folder written by `save_pretrained` or a Trainer checkpoint, in whichever form it was saved."""
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{model_dir} has no config.json: pass a folder written by `save_pretrained` or a Trainer checkpoint."
        )
    config = json.loads(config_file.read_text())
    if config.get("model_type") != "riformer":
        raise ValueError(
            f"{model_dir} holds a {config.get('model_type')!r} model, not a RIFormer (model_type 'riformer')."
        )
    if model_class is None:
        name = (config.get("architectures") or ["RIFormerForImageClassification"])[0]
        model_class = getattr(modeling_riformer, name, RIFormerForImageClassification)
    return model_class.from_pretrained(model_dir)


def export_reparameterized(
    model_or_dir,
    save_dir,
    *,
    image_processor=None,
    training_form: bool = False,
    model_class: type[RIFormerPreTrainedModel] | None = None,
    **card_info,
) -> Path:
    """Write the deploy export of a RIFormer (a model, or a folder in either form) to `save_dir`; returns the path.

    `save_dir` ends up with `model.safetensors` (token mixers folded into the norms), `config.json`
    (`reparameterized: true`, `auto_map`), `configuration_riformer.py`, `modeling_riformer.py`,
    `preprocessor_config.json` (`image_processor`, else the source folder's, else the model's default) and
    `README.md`; with `training_form=True` also the training form in `training/`. Everything is written to a
    temporary folder first and moved in file by file, so an interrupted export leaves what was there before.
    `card_info` goes to `build_model_card` (repo_id, datasets, base_model, license, eval_results, recipe, ...);
    for a folder, what its README.md and trainer_state.json record fills the gaps.
    """
    source_dir = None if isinstance(model_or_dir, nn.Module) else Path(model_or_dir)
    if source_dir is not None:
        model = load_riformer(source_dir, model_class)
        card_info = {**card_info_from_folder(source_dir), **{k: v for k, v in card_info.items() if v is not None}}
    else:
        model = model_or_dir
        if not isinstance(model, RIFormerPreTrainedModel):
            raise TypeError(f"Expected a RIFormer model (RIFormerPreTrainedModel), got {type(model).__name__}.")
    if training_form and model.is_reparameterized:
        raise ValueError(
            "training_form=True needs the training form, but this model is already re-parameterised; the deploy form "
            "cannot be turned back. Export from a training checkpoint instead."
        )
    save_dir = Path(save_dir).absolute()
    save_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{save_dir.name}.export-", dir=save_dir.parent))
    try:
        _save_processor(staging, image_processor, source_dir)
        if training_form:
            _save_processor(staging / TRAINING_SUBFOLDER, image_processor, source_dir)
            model.save_pretrained(staging / TRAINING_SUBFOLDER)
        elif source_dir is not None and (source_dir / TRAINING_SUBFOLDER / "config.json").is_file():
            shutil.copytree(source_dir / TRAINING_SUBFOLDER, staging / TRAINING_SUBFOLDER)  # a previous export's
            training_form = True
        if model.is_reparameterized:
            deploy = model
        else:  # fold in place what we loaded ourselves; never touch the caller's model
            deploy = model.reparameterize() if source_dir is not None else reparameterize_model(model)
        deploy.save_pretrained(staging)
        card_info.setdefault("training_subfolder", training_form)
        build_model_card(deploy, **card_info).save(staging / "README.md")
        _move_into(staging, save_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return save_dir


def _save_processor(folder: Path, image_processor, source_dir: Path | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if image_processor is not None:
        image_processor.save_pretrained(folder)
    elif source_dir is not None and (source_dir / PREPROCESSOR_CONFIG).is_file():
        shutil.copy2(source_dir / PREPROCESSOR_CONFIG, folder / PREPROCESSOR_CONFIG)
    # otherwise RIFormerPreTrainedModel.save_pretrained writes the model's default preprocessing


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
    for pattern in _STALE_WEIGHTS:
        for stale in target.glob(pattern):
            if stale.name not in new_names:
                stale.unlink()


# ---------------------------------------------------------------------------------------------------- the card


def build_model_card(
    model: RIFormerPreTrainedModel,
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
    training_subfolder: bool = False,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """The model card of a RIFormer's deploy export (`model` in either form), from the package's
    `model_card_template.md` (also at `model_cards/riformer_template.md` in the repository).

    Metadata: `library_name: transformers`, `pipeline_tag: image-classification`, the RIFormer tags, `datasets`,
    `base_model` (teachers with a Hub id), a `model-index` with `eval_results` (e.g. `{"accuracy": 0.91}`) and the
    training `recipe` as `training_recipe`. The text gives the architecture, parameter counts, recipe, a `pipeline`
    snippet and the paper's citation.
    """
    template_path = Path(template_path or MODEL_CARD_TEMPLATE)
    if not template_path.is_file():
        raise FileNotFoundError(f"Model card template not found at {template_path}; pass template_path=...")
    config = model.config
    datasets, base_models = _as_list(datasets), _as_list(base_model)
    preset = _preset_name(config)
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else f"RIFormer-{preset or 'custom'}")
    eval_results = {name: float(value) for name, value in (eval_results or {}).items()}
    dataset_id = datasets[0] if datasets else "custom"
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=CARD_TAGS + [t for t in tags or () if t not in CARD_TAGS],
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
    )
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
        image_size=config.image_size,
        crop_pct=config.crop_pct,
        resize_size=int(config.image_size / config.crop_pct),
        num_labels=config.num_labels,
        base_models=base_models,
        datasets=datasets,
        eval_results=eval_results,
        recipe=_yaml_safe(recipe) or {},
        recipe_meanings=RECIPE_MEANINGS,
        distilled=any(name in (recipe or {}) for name in _DISTILLATION_FIELDS),
        training_subfolder=training_subfolder,
        citation=CITATION,
    )


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
    """The Hub id a model was loaded from (`name_or_path`), or None for local paths and models built in memory."""
    name = getattr(module, "name_or_path", None) or getattr(getattr(module, "config", None), "_name_or_path", None)
    if not name or os.path.exists(name) or not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return None
    return name


# ---------------------------------------------------------------------------------------------------- pushing


def export_files(folder) -> list[str]:
    """The files of a deploy export in `folder`, as upload patterns (top level only, plus `training/`)."""
    folder = Path(folder)
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and _EXPORT_FILE.fullmatch(p.name))
    if (folder / TRAINING_SUBFOLDER).is_dir():
        names.append(f"{TRAINING_SUBFOLDER}/*")
    return names


def upload_export(api: HfApi, folder, repo_id: str, *, token=None, private=None, revision=None, commit_message=None):
    """Create the repo (and branch) if needed, then commit the export in `folder` as one commit. Returns CommitInfo."""
    repo_id = api.create_repo(repo_id, token=token, private=private, exist_ok=True).repo_id
    if revision not in (None, constants.DEFAULT_REVISION):
        api.create_branch(repo_id, branch=revision, token=token, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        allow_patterns=export_files(folder),
        delete_patterns=list(_STALE_WEIGHTS),
        commit_message=commit_message or "Upload re-parameterised RIFormer",
        token=token,
        revision=revision,
    )


def _upload_checkpoint(api: HfApi, folder, repo_id: str, **upload):
    return api.upload_folder(repo_id=repo_id, folder_path=folder, **upload)


def retry_command(model_dir, repo_id: str, *, revision=None, private=None, commit_message=None) -> str:
    """The shell command that pushes `model_dir` again (endpoint included when it is not the public Hub).

    It runs `python -m riformer_hf.push` (what `scripts/push_to_hub.py` runs), so it works from any install.
    """
    words = [sys.executable, "-m", "riformer_hf.push", "--model_dir", str(Path(model_dir).absolute())]
    words += ["--repo_id", repo_id]
    if revision not in (None, constants.DEFAULT_REVISION):
        words += ["--revision", revision]
    if private:
        words.append("--private")
    if commit_message:
        words += ["--commit_message", commit_message]
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
    **card_info,
):
    """Re-parameterise a RIFormer (a model, or a folder in either form) and push the deploy export to `repo_id`.

    A training-form model or checkpoint is folded; a deploy one passes through. The export is written to `save_dir`
    (kept) or a temporary folder (removed after a successful push, kept and named in the error otherwise).
    `push_training_weights=True` adds the training form under `training/`. `card_info` goes to `build_model_card`.
    Honours `HF_ENDPOINT`; returns the CommitInfo. Raises `HubPushError` (with the retry command) when the Hub fails.
    """
    keep = save_dir is not None
    local_dir = Path(save_dir) if keep else Path(tempfile.mkdtemp(prefix="riformer-export-")) / "export"
    export_reparameterized(
        model_or_dir, local_dir, image_processor=image_processor, training_form=push_training_weights,
        repo_id=repo_id, **card_info,
    )
    try:
        commit = upload_export(
            HfApi(library_name="riformer_hf"), local_dir, repo_id, token=token, private=private, revision=revision,
            commit_message=commit_message,
        )
    except Exception as error:
        raise push_failure(error, repo_id, local_dir, revision=revision, private=private) from error
    if not keep:
        shutil.rmtree(local_dir.parent, ignore_errors=True)
    return commit


# ---------------------------------------------------------------------------------------------------- the Trainer


class ReparameterizedExportMixin:
    """The save hook, for `transformers.Trainer` subclasses: `class MyTrainer(ReparameterizedExportMixin, Trainer)`.

    - `checkpoint-N` folders are ordinary Trainer checkpoints in training form (affine mixers present), so
      `resume_from_checkpoint` and `load_best_model_at_end` work unchanged.
    - `save_model()` outside checkpointing (the final save) writes the deploy export (`export_reparameterized`) to
      `output_dir`, atomically, plus `training_args.bin`.
    - Hub pushes hold the export: `push_to_hub()` pushes `output_dir`; during training, `hub_strategy`
      `every_save` / `checkpoint` / `all_checkpoints` push an export of each saved checkpoint in the background
      (the last two also upload the training-form checkpoint to `last-checkpoint/` or `checkpoint-N/`, as Trainer
      does, for resuming); `end` pushes only from `push_to_hub()`. `hub_model_id`, `hub_token`, `hub_private_repo`,
      `hub_revision`, `hub_always_push` and `HF_ENDPOINT` are honoured.
    - The Hub failing never stops training or the local save: background failures are logged, `push_to_hub()`
      raises `HubPushError`; both name what failed and the `python -m riformer_hf.push` command that retries.
    - Students that are not RIFormers (baselines) save and push exactly as with `Trainer`.

    Args (keyword, besides the Trainer's):
        push_training_weights: also push (and keep in `output_dir/training/`) the training form.
        model_card: card fields (`datasets`, `base_model`, `license`, `language`, `tags`, `model_name`); teachers
            loaded from the Hub (`teacher_model`, `imitation_teacher` attributes) become `base_model` by default.
    """

    def __init__(self, *args, push_training_weights: bool = False, model_card: dict | None = None, **kwargs):
        self.push_training_weights = push_training_weights
        self.model_card = dict(model_card or {})
        self._saving_checkpoint = False
        self._hub_api = None
        super().__init__(*args, **kwargs)

    @property
    def _riformer(self) -> RIFormerPreTrainedModel | None:
        """The (unwrapped) model when it is a RIFormer; None for other models, which save and push as with Trainer."""
        model = None if self.model is None else self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        return model if isinstance(model, RIFormerPreTrainedModel) else None

    @property
    def hub_api(self) -> HfApi:
        """One HfApi per trainer: its background jobs run one after another, in order (as with Trainer's)."""
        if self._hub_api is None:
            self._hub_api = HfApi(library_name="riformer_hf")
        return self._hub_api

    # ---- saving ----
    def _save_checkpoint(self, model, trial):
        self._saving_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._saving_checkpoint = False

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Training form inside checkpoints; the deploy export (`export_reparameterized`) everywhere else."""
        if self._saving_checkpoint or self._riformer is None:
            super().save_model(output_dir, _internal_call=_internal_call)
            return
        output_dir = Path(output_dir if output_dir is not None else self.args.output_dir)
        # Trainer's own save (which gathers FSDP / DeepSpeed / PEFT weights) into a scratch folder, then the export.
        scratch = output_dir / "_riformer_training_form"
        super().save_model(str(scratch), _internal_call=True)
        if self.args.should_save:
            try:
                export_reparameterized(
                    scratch, output_dir, training_form=self.push_training_weights, model_class=type(self._riformer),
                    **self._card_info(),
                )
                os.replace(scratch / TRAINING_ARGS_FILE, output_dir / TRAINING_ARGS_FILE)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        if self.args.push_to_hub and not _internal_call:
            self._push_export(output_dir, "Model save", blocking=True)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        config_file = Path(resume_from_checkpoint) / "config.json"
        student = self._riformer
        if student is not None and not student.is_reparameterized and config_file.is_file() and (
            json.loads(config_file.read_text()).get("reparameterized")
        ):
            raise ValueError(
                f"{resume_from_checkpoint} holds the re-parameterised (deploy) export, which cannot resume training. "
                "Resume from one of the training-form `checkpoint-N` folders (or `resume_from_checkpoint=True`)."
            )
        return super()._load_from_checkpoint(resume_from_checkpoint, model)

    # ---- the Hub ----
    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Create the repo; when the Hub fails, log it and go on (every push tries again)."""
        if not self.is_world_process_zero():
            return
        self.push_in_progress = None
        try:
            self.hub_model_id = self.hub_api.create_repo(
                self._repo_name(),
                token=token if token is not None else self.args.hub_token,
                private=private if private is not None else self.args.hub_private_repo,
                exist_ok=True,
            ).repo_id
        except Exception as error:
            logger.warning(
                "Could not create the Hub repo %r (%s: %s). Training goes on and saves locally; pushes will try again.",
                self._repo_name(), type(error).__name__, error,
            )

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs,
    ):
        """Save the deploy export to `output_dir` and push it. `kwargs` are card fields, with Trainer's names too
        (`dataset`, `dataset_tags`, `finetuned_from`, `license`, `tags`, `model_name`, `language`).

        Returns the CommitInfo, or a Future when `blocking=False`. Raises `HubPushError` when the Hub fails; the
        local export is complete by then and the error gives the command that retries.
        """
        if self._riformer is None:
            return super().push_to_hub(commit_message, blocking, token, revision, private, **kwargs)
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        self._update_card_fields(kwargs)
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        self._finish_current_push()
        return self._push_export(
            Path(self.args.output_dir), commit_message, blocking=blocking, token=token, revision=revision,
            private=private,
        )

    def create_model_card(self, **kwargs) -> None:
        """Write the RIFormer model card to `output_dir/README.md` (fields as in `push_to_hub`)."""
        if self._riformer is None:
            return super().create_model_card(**kwargs)
        if not self.is_world_process_zero():
            return
        self._update_card_fields(kwargs)
        build_model_card(self._riformer, **self._card_info(), training_subfolder=self.push_training_weights).save(
            Path(self.args.output_dir) / "README.md"
        )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """Push an export of the checkpoint just saved, in the background, following `hub_strategy`."""
        if self._riformer is None:
            return super()._push_from_checkpoint(checkpoint_folder)
        if not self.is_world_process_zero() or self.args.hub_strategy == HubStrategy.END:
            return
        if not self.args.hub_always_push and self.push_in_progress is not None and not self.push_in_progress.is_done():
            return
        self.callback_handler.on_push_begin(self.args, self.state, self.control)
        if self.args.save_strategy == SaveStrategy.STEPS:
            message = f"Training in progress, step {self.state.global_step}"
        else:
            message = f"Training in progress, epoch {int(self.state.epoch)}"
        snapshot = Path(tempfile.mkdtemp(prefix="riformer-push-")) / "export"
        export_reparameterized(
            checkpoint_folder, snapshot, training_form=self.push_training_weights, model_class=type(self._riformer),
            **self._card_info(),
        )
        jobs = [self._push_export(snapshot, message, blocking=False, retry_dir=checkpoint_folder, cleanup=True)]
        if self.args.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
            # Trainer's resume copy: the training-form checkpoint, in a subfolder of the repo.
            last_only = self.args.hub_strategy == HubStrategy.CHECKPOINT
            subfolder = "last-checkpoint" if last_only else Path(checkpoint_folder).name
            upload = {"path_in_repo": subfolder, "token": self.args.hub_token, "revision": self.args.hub_revision,
                      "commit_message": message + ", checkpoint"}
            jobs.append(self.hub_api.run_as_future(
                self._upload_in_background, _upload_checkpoint, checkpoint_folder, upload, checkpoint_folder, False
            ))
        if self.push_in_progress is None or self.push_in_progress.is_done():
            self.push_in_progress = PushInProgress(jobs)
        else:
            self.push_in_progress.jobs.extend(jobs)

    def _push_export(self, folder: Path, commit_message, *, blocking, token=None, revision=None, private=None,
                     retry_dir=None, cleanup=False):
        """Push the export in `folder`: now (raising HubPushError) or as a background job (logging failures)."""
        upload = {
            "token": token if token is not None else self.args.hub_token,
            "private": private if private is not None else self.args.hub_private_repo,
            "revision": revision if revision is not None else self.args.hub_revision,
            "commit_message": commit_message,
        }
        if blocking:
            try:
                return self._upload(upload_export, folder, **upload)
            except Exception as error:
                raise self._push_failure(error, folder, upload) from error
        return self.hub_api.run_as_future(
            self._upload_in_background, upload_export, folder, upload, retry_dir or folder, cleanup
        )

    def _upload(self, upload_fn, folder, **upload):
        commit = upload_fn(self.hub_api, folder, self.hub_model_id or self._repo_name(), **upload)
        self.hub_model_id = commit.repo_url.repo_id
        return commit

    def _upload_in_background(self, upload_fn, folder, upload: dict, retry_dir, cleanup: bool):
        """Runs in HfApi's worker thread: failures are logged here, before the job counts as done."""
        try:
            return self._upload(upload_fn, folder, **upload)
        except Exception as error:
            logger.warning(
                "%s\nTraining goes on; the final save_model() writes the export to %s.",
                self._push_failure(error, retry_dir, upload), self.args.output_dir,
            )
            raise
        finally:
            if cleanup:
                shutil.rmtree(Path(folder).parent, ignore_errors=True)

    def _push_failure(self, error, local_dir, upload: dict) -> HubPushError:
        retry = {k: upload.get(k) for k in ("revision", "private", "commit_message")}
        return push_failure(error, self.hub_model_id or self._repo_name(), local_dir, **retry)

    # ---- card fields ----
    def _repo_name(self) -> str:
        return self.args.hub_model_id or Path(self.args.output_dir).absolute().name

    def _update_card_fields(self, kwargs: dict) -> None:
        renames = {"dataset": "datasets", "dataset_tags": "datasets", "finetuned_from": "base_model"}
        for name, value in kwargs.items():
            if value is not None and name in renames:
                self.model_card[renames[name]] = value
            elif value is not None and name in ("license", "language", "tags", "model_name", "datasets", "base_model"):
                self.model_card[name] = value

    def _card_info(self) -> dict:
        teachers = (getattr(self, name, None) for name in ("teacher_model", "imitation_teacher"))
        teacher_ids = list(dict.fromkeys(i for i in map(hub_model_id_of, teachers) if i))
        best_step = self.state.best_global_step if self.args.load_best_model_at_end else None
        return {
            "repo_id": self.hub_model_id or self._repo_name(),
            "base_model": teacher_ids or None,
            "eval_results": eval_results_from_log_history(self.state.log_history, best_step),
            "recipe": recipe_from_training(self.args, self.state),
            **self.model_card,
        }


__all__ = [
    "HubPushError",
    "ReparameterizedExportMixin",
    "build_model_card",
    "export_reparameterized",
    "push_reparameterized",
]
