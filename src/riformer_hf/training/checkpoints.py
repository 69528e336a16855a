"""Trainer checkpoints that are whole or absent: which `checkpoint-N` folders can resume a run, what one takes on
disk, and `SafeCheckpointMixin`, which removes a half-written checkpoint, names a full disk and writes the weights
in the model's own class on every process that saves (each machine's with `--save_on_each_node`)."""

import errno
import shutil
from pathlib import Path

from transformers import PreTrainedModel
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints
from transformers.utils import logging

from ..errors import OutputError
from ..export.distributed_save import plain_twin, unsharded_class, writing_on_this_process
from .resume_check import missing_for_resume

logger = logging.get_logger(__name__)


def checkpoint_folders(output_dir) -> list[Path]:
    """The `checkpoint-N` folders in `output_dir`, oldest step first (complete or not)."""
    if not Path(output_dir).is_dir():
        return []
    return [Path(folder) for folder in sort_checkpoints(str(output_dir))]


def is_complete_checkpoint(folder, process_index: int = 0, world_size: int = 1) -> bool:
    """Whether `folder` holds all that `Trainer` needs to resume process `process_index` of a `world_size`-process
    run exactly (weights or their shards, optimizer, scheduler, trainer state, the process's RNG state; see
    `resume_check.missing_for_resume`)."""
    return not missing_for_resume(folder, process_index, world_size)


def last_complete_checkpoint(output_dir, process_index: int = 0, world_size: int = 1) -> Path | None:
    """The newest checkpoint of `output_dir` complete for this process (what it alone can see)."""
    return next((folder for folder in reversed(checkpoint_folders(output_dir))
                 if is_complete_checkpoint(folder, process_index, world_size)), None)


def checkpoint_bytes(model, with_optimizer: bool = True) -> int:
    """About what one checkpoint of `model` takes on disk: float32 weights, AdamW's two moments, 10 % + 1 MB."""
    tensors = 3 if with_optimizer else 1
    return int(1.1 * tensors * 4 * model.num_parameters()) + 1_000_000


def _is_disk_full(error: BaseException, folder: Path, needed: int) -> bool:
    while error is not None:
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        error = error.__cause__ or error.__context__
    try:
        return shutil.disk_usage(folder).free < needed
    except OSError:
        return False


class SafeCheckpointMixin:
    """For `transformers.Trainer` subclasses: a checkpoint is whole or not at all. A save that fails removes the
    folder it began (so `--resume_from_checkpoint last` finds the previous one), and a full disk is named as such.
    Weights are written through the model's own class (FSDP2 swaps it for a generated `FSDP<Class>`) by every
    process that `should_save`, and only where the gathered weights are."""

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """`Trainer._save`, through a twin of the model's own class when FSDP2 has swapped its class (otherwise
        `save_pretrained` writes torch's class into `auto_map` and copies torch's code), and writing the weights on
        every process that `should_save` (each machine's with `--save_on_each_node`)."""
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if not isinstance(model, PreTrainedModel):
            return super()._save(output_dir, state_dict=state_dict)
        swapped = unsharded_class(model) is not type(model)  # FSDP2
        if swapped and state_dict is None:
            state_dict = self.accelerator.get_state_dict(self.model)  # a collective, as in Trainer.save_model
        sharded = self.is_fsdp_enabled or self.is_deepspeed_enabled
        if sharded and state_dict is not None and not state_dict and not self.is_world_process_zero():
            return  # the gathered weights went to process 0 (FSDP2, ZeRO-3), which writes them: nothing to write here
        if not swapped:
            with writing_on_this_process(model):  # --save_on_each_node: every machine's main process
                return super()._save(output_dir, state_dict=state_dict)
        wrapped = self.model
        self.model = plain_twin(model)
        try:
            with writing_on_this_process(self.model):
                return super()._save(output_dir, state_dict=state_dict)
        finally:
            self.model = wrapped

    def _save_checkpoint(self, model, trial) -> None:
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        existed = folder.exists()
        try:
            super()._save_checkpoint(model, trial)
        except BaseException as error:
            if self.args.should_save and not existed:
                shutil.rmtree(folder, ignore_errors=True)
            needed = checkpoint_bytes(self.model)
            if isinstance(error, Exception) and _is_disk_full(error, folder.parent, needed):
                complete = [f.name for f in checkpoint_folders(folder.parent)
                            if is_complete_checkpoint(f, self.args.process_index, self.args.world_size)]
                previous = f"{complete[-1]} is complete" if complete else "no earlier checkpoint was saved"
                free = shutil.disk_usage(folder.parent).free
                raise OutputError(
                    f"Disk full while writing {folder.name} in {folder.parent} ({free:,}"
                    f" bytes free, a checkpoint takes about {needed:,}); the partial {folder.name} was removed and "
                    f"{previous}: free some space, then run again with --resume_from_checkpoint last"
                ) from error
            raise


__all__ = [
    "SafeCheckpointMixin",
    "checkpoint_bytes",
    "checkpoint_folders",
    "is_complete_checkpoint",
    "last_complete_checkpoint",
]
