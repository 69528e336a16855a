"""The save hook: Trainer checkpoints stay in training form, `save_model()` and Hub pushes hold the deploy export.

Checkpoint safety (whole or absent) is `training.checkpoints.SafeCheckpointMixin`."""

import json
import shutil
import tempfile
from pathlib import Path

import torch
from huggingface_hub import HfApi
from transformers.trainer_utils import HubStrategy, SaveStrategy
from transformers.utils import logging
from transformers.utils.hub import PushInProgress

from ..data.preprocessing import make_image_processor
from ..errors import UserError
from ..models.riformer.modeling_riformer import RIFormerPreTrainedModel
from .deploy import export_reparameterized
from .distributed_save import plain_twin
from .hub import HubPushError, push_failure, upload_checkpoint, upload_export
from .model_card import (
    build_classifier_card,
    build_model_card,
    describe_teachers,
    eval_results_from_log_history,
    hub_model_id_of,
    recipe_from_training,
)

logger = logging.get_logger(__name__)
TRAINING_ARGS_FILE = "training_args.bin"


def _is_sharded(accelerator) -> bool:
    """Whether the FSDP run saves `SHARDED_STATE_DICT` checkpoints (per-process shards, no full weights)."""
    return "SHARDED_STATE_DICT" in str(accelerator.state.fsdp_plugin.state_dict_type)


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
      raises `HubPushError`; both name what failed and the `riformer-push` command that retries.
    - Models that are not RIFormers (teachers, baselines) save their checkpoints and weights as with `Trainer`; the
      final save and `push_to_hub()` add their model card (`build_classifier_card`: the model as trained, no
      re-parameterisation), and `push_to_hub()` pushes the same files as for a RIFormer, failing the same way.

    Args (keyword, besides the Trainer's):
        push_training_weights: also push (and keep in `output_dir/training/`) the training form.
        model_card: card fields (`datasets`, `base_model`, `license`, `language`, `tags`, `model_name`,
            `initialised_from`); teachers loaded from the Hub (`teacher_model`, `imitation_teacher` attributes)
            become `base_model` by default, and every teacher is named in the card with its recorded accuracy.
    """

    def __init__(self, *args, push_training_weights: bool = False, model_card: dict | None = None, **kwargs):
        self.push_training_weights = push_training_weights
        self.model_card = dict(model_card or {})
        self._hub_api = None
        self._teacher_entries = None
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
    def _is_checkpoint_save(self, output_dir, internal: bool) -> bool:
        """Trainer saves checkpoints through `save_model(checkpoint_dir, _internal_call=True)`; every other save
        (the user's, `push_to_hub`'s into `output_dir`) is an export."""
        if not internal or output_dir is None:
            return False
        return Path(output_dir).absolute() != Path(self.args.output_dir).absolute()

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Training form inside checkpoints; the deploy export (`export_reparameterized`) everywhere else. Other
        models save as with Trainer, plus their model card outside checkpoints.

        Under FSDP with `SHARDED_STATE_DICT` a checkpoint also gets the gathered training form (`model.safetensors`,
        `config.json`, the modelling code), as with `FULL_STATE_DICT`: the shards resume training, the full weights
        load with `from_pretrained` (`trust_remote_code`), `riformer-push` and the checkpoint pushes."""
        if self._is_checkpoint_save(output_dir, _internal_call):
            if self.is_fsdp_enabled and _is_sharded(self.accelerator):
                self._save(output_dir, state_dict=self.accelerator.get_state_dict(self.model))  # a collective
            else:
                super().save_model(output_dir, _internal_call=_internal_call)
            return
        if self._riformer is None:
            super().save_model(output_dir, _internal_call=_internal_call)
            if self.args.should_save:
                self._save_classifier_card(Path(output_dir if output_dir is not None else self.args.output_dir))
            return
        output_dir = Path(output_dir if output_dir is not None else self.args.output_dir)
        student = self._gathered_student()
        if self.args.should_save and student is None:
            logger.info(f"No export on this machine: the gathered weights went to process 0, which writes "
                        f"{output_dir}.")
        elif self.args.should_save:
            export_reparameterized(
                student, output_dir, image_processor=self.processing_class,
                training_form=self.push_training_weights, **self._card_info(),
            )
            torch.save(self.args, output_dir / TRAINING_ARGS_FILE)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _gathered_student(self) -> RIFormerPreTrainedModel | None:
        """The student with its full weights: the model itself, or a copy gathered from FSDP / DeepSpeed shards on
        the processes that receive them (the main process under FSDP2 and ZeRO-3, every process under ZeRO-1/2);
        None on the others. A collective when sharded: every process calls it."""
        student = self._riformer
        if not (self.is_fsdp_enabled or self.is_deepspeed_enabled):
            return student
        state = self.accelerator.get_state_dict(self.model_wrapped)
        if not state:  # this process took part in the gathering but did not receive the weights
            return None
        copy = plain_twin(student)
        copy.load_state_dict(state, assign=True)
        return copy

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """`Trainer.train`, refusing to resume from a deploy export (it has no token mixers to train)."""
        student = self._riformer
        if student is not None and not student.is_reparameterized and isinstance(resume_from_checkpoint, (str, Path)):
            config_file = Path(resume_from_checkpoint) / "config.json"
            if config_file.is_file() and json.loads(config_file.read_text()).get("reparameterized"):
                raise UserError(
                    f"{resume_from_checkpoint} holds the re-parameterised (deploy) export, which cannot resume "
                    "training. Resume from one of the training-form `checkpoint-N` folders (or "
                    "`resume_from_checkpoint=True`)."
                )
        return super().train(resume_from_checkpoint, *args, **kwargs)

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
        except Exception as error:  # noqa: BLE001 -- any Hub failure: training goes on, every push tries again
            logger.warning(
                f"Could not create the Hub repo {self._repo_name()!r} ({type(error).__name__}: {error}). Training goes "
                "on and saves locally; pushes will try again."
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
        """Save the deploy export (another model: the model as saved) to `output_dir` and push it. `kwargs` are card
        fields, with Trainer's names too
        (`dataset`, `dataset_tags`, `finetuned_from`, `license`, `tags`, `model_name`, `language`).

        Returns the CommitInfo, or a Future when `blocking=False`. Raises `HubPushError` when the Hub fails; the
        local export is complete by then and the error gives the command that retries. A model that is not a RIFormer
        is pushed as it was saved (weights, config, image processor, code, card).
        """
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
        """Write the model card to `output_dir/README.md` (fields as in `push_to_hub`): the RIFormer card, or for
        another model the classifier card."""
        if not self.is_world_process_zero():
            return
        self._update_card_fields(kwargs)
        if self._riformer is None:
            self._save_classifier_card(Path(self.args.output_dir))
            return
        processor = self.processing_class if self.processing_class is not None else make_image_processor()
        card = build_model_card(
            self._riformer, processor, **self._card_info(), training_subfolder=self.push_training_weights
        )
        card.save(Path(self.args.output_dir) / "README.md")

    def _save_classifier_card(self, folder: Path) -> None:
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        processor = self.processing_class if self.processing_class is not None else make_image_processor()
        build_classifier_card(model, processor, **self._card_info()).save(folder / "README.md")

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
        # From the folder just written, as Trainer pushes checkpoints: no second gathering of sharded weights.
        try:
            export_reparameterized(
                checkpoint_folder, snapshot, image_processor=self.processing_class,
                training_form=self.push_training_weights, **self._card_info(),
            )
        except BaseException:
            shutil.rmtree(snapshot.parent, ignore_errors=True)
            raise
        jobs = [self._push_export(snapshot, message, blocking=False, retry_dir=checkpoint_folder, cleanup=True)]
        if self.args.hub_strategy in (HubStrategy.CHECKPOINT, HubStrategy.ALL_CHECKPOINTS):
            # Trainer's resume copy: the training-form checkpoint, in a subfolder of the repo.
            last_only = self.args.hub_strategy == HubStrategy.CHECKPOINT
            subfolder = "last-checkpoint" if last_only else Path(checkpoint_folder).name
            upload = {"path_in_repo": subfolder, "token": self.args.hub_token, "revision": self.args.hub_revision,
                      "commit_message": message + ", checkpoint"}
            jobs.append(self.hub_api.run_as_future(
                self._upload_in_background, upload_checkpoint, checkpoint_folder, upload, checkpoint_folder, False
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
                f"{self._push_failure(error, retry_dir, upload)}\nTraining goes on; the final save_model() writes the "
                f"export to {self.args.output_dir}."
            )
            raise
        finally:
            if cleanup:
                shutil.rmtree(Path(folder).parent, ignore_errors=True)

    def _push_failure(self, error, local_dir, upload: dict) -> HubPushError:
        retry = {k: upload.get(k) for k in ("revision", "private", "commit_message")}
        what = "the re-parameterised RIFormer" if self._riformer is not None else "the model"
        return push_failure(error, self.hub_model_id or self._repo_name(), local_dir, what=what, **retry)

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

    def _teacher(self, name: str):
        """The `teacher_model` / `imitation_teacher` attribute as loaded: without the DeepSpeed engine that runs it."""
        teacher = getattr(self, name, None)
        return None if teacher is None else self.accelerator.unwrap_model(teacher, keep_torch_compile=False)

    def _card_info(self) -> dict:
        teachers = (self._teacher(name) for name in ("teacher_model", "imitation_teacher"))
        teacher_ids = list(dict.fromkeys(i for i in map(hub_model_id_of, teachers) if i))
        best_step = self.state.best_global_step if self.args.load_best_model_at_end else None
        return {
            "repo_id": self.hub_model_id or self._repo_name(),
            "base_model": teacher_ids or None,
            "eval_results": eval_results_from_log_history(self.state.log_history, best_step),
            "recipe": recipe_from_training(self.args, self.state),
            "teachers": self._teachers_for_card(),
            **self.model_card,
        }

    def _teachers_for_card(self) -> list[dict] | None:
        """The teachers the card names (a logit teacher only when logits are distilled), looked up once."""
        logit = self._teacher("teacher_model")
        if getattr(self.args, "distillation_type", None) == "none":
            logit = None
        imitation = self._teacher("imitation_teacher")
        key = (id(logit), id(imitation))
        if self._teacher_entries is None or self._teacher_entries[0] != key:
            self._teacher_entries = (key, describe_teachers(logit, imitation) or None)
        return self._teacher_entries[1]


__all__ = ["ReparameterizedExportMixin"]

