"""transformers' PoolFormer as RIFormer's module-imitation teacher.

RIFormer imitates a PoolFormer of its own layout block by block: the student's affine token mixer learns the
teacher's pooling mixer `pool(n) − n`, and its blocks learn the teacher's block outputs. This module checks that a
PoolFormer and a RIFormer are isomorphic (on `convert.poolformer.ARCHITECTURE_FIELDS`, the one map between the two
families) and reads the teacher's per-block tensors through forward hooks, leaving PoolFormer's code untouched.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PoolFormerConfig, PoolFormerForImageClassification, PoolFormerModel

from ..convert.poolformer import ARCHITECTURE_FIELDS
from ..errors import UserError
from ..models.riformer import RIFormerConfig

# `hidden_act` may differ for imitation (the features still line up); the rest may not.
_ISOMORPHIC_FIELDS = tuple(f for f in ARCHITECTURE_FIELDS if f != "hidden_act")


def _config_of(model_or_config):
    return getattr(model_or_config, "config", model_or_config)


def isomorphism_mismatches(poolformer, student) -> list[str]:
    """Every field on which a PoolFormer and a RIFormer (models or configs) disagree; empty when isomorphic."""
    pool_config, student_config = _config_of(poolformer), _config_of(student)
    if not isinstance(pool_config, PoolFormerConfig):
        return [f"the imitation teacher is a {type(pool_config).__name__}, not a PoolFormer"]
    if not isinstance(student_config, RIFormerConfig):
        return [f"the student is a {type(student_config).__name__}, not a RIFormer"]
    mismatches = []
    if pool_config.num_encoder_blocks != len(pool_config.depths):
        mismatches.append(
            f"PoolFormer num_encoder_blocks={pool_config.num_encoder_blocks} but {len(pool_config.depths)} depths"
        )
    for field in _ISOMORPHIC_FIELDS:
        teacher_value, student_value = getattr(pool_config, field), getattr(student_config, field)
        if isinstance(teacher_value, (list, tuple)):
            teacher_value, student_value = list(teacher_value), list(student_value)
        if teacher_value != student_value:  # 4 == 4.0: an int and a float mlp_ratio agree
            mismatches.append(f"{field}: PoolFormer {teacher_value} vs RIFormer {student_value}")
    return mismatches


def is_isomorphic(poolformer, student) -> bool:
    """Whether `poolformer` can serve as the module-imitation teacher of `student`."""
    return not isomorphism_mismatches(poolformer, student)


def check_isomorphic(poolformer, student) -> None:
    """Raise a `UserError` listing every mismatch unless the PoolFormer and the RIFormer map block to block."""
    mismatches = isomorphism_mismatches(poolformer, student)
    if mismatches:
        raise UserError(
            "The imitation teacher must be a transformers PoolFormer with the student's layout, but:\n  - "
            + "\n  - ".join(mismatches)
            + "\nBuild the student with the PoolFormer's architecture (e.g. "
            "`riformer_hf.convert.from_poolformer(teacher)`) or pick the PoolFormer of the student's size."
        )


def default_imitation_blocks(depths) -> list[int]:
    """Flat indices of the last block of every stage: the paper's four imitated layers."""
    ends, total = [], 0
    for depth in depths:
        total += depth
        ends.append(total - 1)
    return ends


@dataclass
class ImitationStates:
    """Per imitated block (in the order asked for): the token-mixer output and the block output."""

    mixer_states: tuple[torch.Tensor, ...] = ()
    block_states: tuple[torch.Tensor, ...] = ()


class PoolFormerImitationAdapter:
    """Reads token-mixer outputs (`pool(n) − n`, the `pooling` module's output) and block outputs of chosen blocks of a
    transformers PoolFormer, through forward hooks that live only while `capture()` is open.

    ```python
    adapter = PoolFormerImitationAdapter(poolformer, blocks=[1, 3, 9, 11])
    with adapter.capture() as states, torch.no_grad():
        logits = poolformer(pixel_values).logits
    states.mixer_states, states.block_states  # four (B, C, H, W) tensors each
    ```
    """

    def __init__(self, poolformer: PoolFormerForImageClassification | PoolFormerModel, blocks: list[int] | None = None):
        base = poolformer.poolformer if isinstance(poolformer, PoolFormerForImageClassification) else poolformer
        if not isinstance(base, PoolFormerModel):
            raise TypeError(
                f"PoolFormerImitationAdapter needs a transformers PoolFormerModel or PoolFormerForImageClassification; "
                f"got {type(poolformer).__name__}."
            )
        layers = [layer for stage in base.encoder.block for layer in stage]
        blocks = default_imitation_blocks(base.config.depths) if blocks is None else list(blocks)
        bad = [b for b in blocks if not 0 <= b < len(layers)]
        if bad:
            raise UserError(f"Imitated blocks {bad} out of range: the PoolFormer has {len(layers)} blocks (0-based).")
        self.blocks = blocks
        self._layers: list[nn.Module] = [layers[b] for b in blocks]

    @contextmanager
    def capture(self):
        """Hook the chosen blocks for the duration of the `with` block; yields the `ImitationStates` they fill."""
        mixers: list[torch.Tensor | None] = [None] * len(self._layers)
        outputs: list[torch.Tensor | None] = [None] * len(self._layers)
        states = ImitationStates()

        def store(slots, position):
            def hook(module, args, output):
                slots[position] = output[0] if isinstance(output, tuple) else output

            return hook

        handles = []
        try:
            for position, layer in enumerate(self._layers):
                handles.append(layer.pooling.register_forward_hook(store(mixers, position)))
                handles.append(layer.register_forward_hook(store(outputs, position)))
            yield states
        finally:
            for handle in handles:
                handle.remove()
        if any(t is None for t in mixers + outputs):
            raise RuntimeError("The PoolFormer did not run every imitated block inside `capture()`.")
        states.mixer_states, states.block_states = tuple(mixers), tuple(outputs)


__all__ = [
    "ImitationStates",
    "PoolFormerImitationAdapter",
    "check_isomorphic",
    "default_imitation_blocks",
    "is_isomorphic",
    "isomorphism_mismatches",
]
