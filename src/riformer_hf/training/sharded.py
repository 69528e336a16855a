"""What sharded training (FSDP2, DeepSpeed ZeRO) changes for the distillation trainer's teachers and initialisation.

- `prepare_teacher`: a frozen teacher placed or sharded the way the student is trained, as TRL prepares its teachers
  and reference models: DeepSpeed → an inference engine (ZeRO-3 partitions it like the student, ZeRO-0/1/2 keep a full
  copy per process); FSDP2 → `fully_shard` with the run's mesh, mixed precision and offload; anything else →
  `accelerator.prepare_model(model, evaluation_mode=True)` (device placement, autocast).
- `full_parameters`: read a model whose parameters ZeRO-3 partitioned (loaded inside `zero.Init`): a collective.

Saving under FSDP2 and on several machines is in `riformer_hf.export.distributed_save`. Free of `Trainer`; the names of
accelerate and transformers relied on are listed in docs/recipe.md ("Sharded and multi-machine training").
"""

import copy
from contextlib import nullcontext

from torch import nn
from transformers.utils import logging

logger = logging.get_logger(__name__)

# DeepSpeed keys that size ZeRO-3 buckets from the model's width; "auto" is filled by transformers for the student only.
_WIDTH_KEYS = {
    "reduce_bucket_size": lambda width: width * width,
    "stage3_prefetch_bucket_size": lambda width: int(0.9 * width * width),
    "stage3_param_persistence_threshold": lambda width: 10 * width,
}


def is_zero3_partitioned(model: nn.Module) -> bool:
    """Whether ZeRO-3 partitioned the model's parameters (`from_pretrained` inside `deepspeed.zero.Init`)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def full_parameters(model: nn.Module):
    """A context in which `model`'s parameters hold their full values (read-only): ZeRO-3 gathers partitioned ones
    (every process must enter it); a no-op for other models."""
    if not is_zero3_partitioned(model):
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)


def _width(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if getattr(config, "hidden_size", None):
        return int(config.hidden_size)
    sizes = getattr(config, "hidden_sizes", None)
    return int(max(sizes)) if sizes else None


def teacher_deepspeed_config(student_config: dict, teacher: nn.Module) -> dict:
    """The DeepSpeed config of a frozen teacher, from the run's: no optimizer or scheduler; ZeRO-3 stays ZeRO-3 (the
    teacher is partitioned like the student), any other stage becomes 0 (a full copy per process, as DDP would hold);
    bucket sizes left at "auto" are sized from the teacher's width, or left to DeepSpeed's defaults."""
    config = copy.deepcopy(student_config)
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    zero = config.setdefault("zero_optimization", {})
    stage = int(zero.get("stage", 0))
    if stage != 3:
        config["zero_optimization"] = {"stage": 0}
        return config
    width = _width(teacher)
    for key, size in _WIDTH_KEYS.items():
        if zero.get(key) == "auto":
            if width is None:
                del zero[key]
            else:
                zero[key] = size(width)
    return config


def prepare_teacher(teacher: nn.Module, accelerator) -> nn.Module:
    """`teacher` frozen, in eval mode, placed or sharded for the run (see the module docstring). Every process must
    call it, in the same order, for the same teachers: under ZeRO-3 and FSDP2 it is a collective."""
    from accelerate.utils import DistributedType

    teacher.requires_grad_(False)
    teacher.eval()
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        import deepspeed

        config = teacher_deepspeed_config(accelerator.state.deepspeed_plugin.deepspeed_config, teacher)
        engine, *_ = deepspeed.initialize(model=teacher, config=config)
        engine.eval()
        return engine
    if accelerator.distributed_type == DistributedType.FSDP:
        plugin = accelerator.state.fsdp_plugin
        if plugin.fsdp_version != 2:
            logger.info("FSDP1: each process holds a full copy of the teacher.")
            return teacher.to(accelerator.device)
        from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

        if not isinstance(teacher, FSDPModule):
            mesh = getattr(accelerator, "torch_device_mesh", None)
            if mesh is not None:
                mesh = mesh[tuple(accelerator.parallelism_config.fsdp_dim_names)]
            # A teacher runs forward only: its parameters are gathered for it and freed right after.
            fully_shard(
                teacher, mesh=mesh, reshard_after_forward=True, offload_policy=plugin.cpu_offload,
                mp_policy=plugin.mixed_precision_policy or MixedPrecisionPolicy(),
            )
        return teacher.eval()
    return accelerator.prepare_model(teacher, evaluation_mode=True)


__all__ = [
    "full_parameters",
    "is_zero3_partitioned",
    "prepare_teacher",
    "teacher_deepspeed_config",
]
