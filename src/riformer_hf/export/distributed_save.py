"""Saving a model trained on several processes: under FSDP2, and from each machine with `--save_on_each_node`.

- `unsharded_class` / `plain_twin`: FSDP2's `fully_shard` swaps a module's class for a generated subclass
  (`FSDPRIFormerForImageClassification`, defined in torch's `_fsdp_init`); `save_pretrained` on it writes that name into
  `auto_map` and copies torch's source files next to the weights. Saving through a twin of the model's own class on the
  meta device (the weights passed as a state dict) writes ours.
- `writing_on_this_process`: `save_pretrained` writes on the process the caller chose, not only on global rank 0.
"""

from contextlib import contextmanager

import torch
from torch import nn


def unsharded_class(model: nn.Module) -> type:
    """The model's own class: under FSDP2 `type(model)` is a generated subclass of it and of `FSDPModule`."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        return type(model)
    return next(cls for cls in type(model).__mro__ if not issubclass(cls, FSDPModule))


def plain_twin(model: nn.Module) -> nn.Module:
    """A weightless (meta-device) instance of the model's own class with its config: `save_pretrained(...,
    state_dict=...)` on it writes that class's `architectures`, `auto_map` and modelling code."""
    with torch.device("meta"):
        return unsharded_class(model)(model.config)


@contextmanager
def writing_on_this_process(model: nn.Module):
    """`model.save_pretrained(...)` writes on this process when told to (`is_main_process=True`, the default).

    transformers 5.x writes only on global rank 0 once torch.distributed is up (`should_save_on_this_rank`), whatever
    `is_main_process` says: with `--save_on_each_node` the other machines' checkpoints then get the optimizer, the
    scheduler and the trainer state but no weights, and their exports no model. The callers here decide which processes
    write (`TrainingArguments.should_save`)."""
    model.should_save_on_this_rank = lambda is_main_process: is_main_process  # shadows the method on this instance
    try:
        yield model
    finally:
        del model.should_save_on_this_rank


__all__ = ["plain_twin", "unsharded_class", "writing_on_this_process"]
