"""`RIFormerTrainingArguments`: transformers' `TrainingArguments` plus RIFormer's distillation recipe."""

import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

DISTILLATION_TYPES = ("none", "soft", "hard")
LOSS_TERMS = ("ce", "kd", "hidden", "mixer", "relation")
IMITATION_TERMS = ("hidden", "mixer", "relation")


def _has_accelerator() -> bool:
    if hasattr(torch, "accelerator"):  # torch >= 2.6
        return torch.accelerator.is_available()
    return torch.cuda.is_available()


@dataclass
class RIFormerTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus RIFormer's distillation recipe (paper §3.3-3.4, Table 10).

    A multi-process launch on a machine without an accelerator (e.g. `accelerate launch` with
    `configs/accelerate_cpu_2proc.yaml`) trains on CPU with gloo: `use_cpu` is switched on for it.
    """

    distillation_type: str = field(
        default="none",
        metadata={
            "help": "Logit distillation from `teacher_model`: none, soft (DeiT: KL at temperature τ, × τ²) or hard "
            "(cross-entropy to the teacher's argmax).",
            "choices": list(DISTILLATION_TYPES),
        },
    )
    distillation_alpha: float = field(
        default=0.5,
        metadata={"help": "Weight α of the distillation term; the label term gets 1 − α. 1.0 = label-free (paper)."},
    )
    distillation_temperature: float = field(default=1.0, metadata={"help": "Temperature τ of soft distillation."})
    lambda_hidden: float = field(
        default=0.0, metadata={"help": "Weight of block-output imitation (the paper's L′_in; 1e-4 for S12)."}
    )
    lambda_mixer: float = field(
        default=0.0,
        metadata={"help": "Weight of token-mixer imitation, student affine vs teacher pooling (L_out; 1e-3 for S12)."},
    )
    lambda_relation: float = field(
        default=0.0, metadata={"help": "Weight of token-relation imitation (L_rel; 1.0 for S12)."}
    )
    imitation_layers: list[int] | None = field(
        default=None,
        metadata={"help": "Imitated blocks as flat 0-based indices over all blocks; default: the last of each stage."},
    )
    feature_epochs: float | None = field(
        default=None,
        metadata={"help": "Apply the hidden and mixer terms during the first N epochs only (paper: 400 of 600)."},
    )
    relation_epochs: float | None = field(
        default=None,
        metadata={"help": "Apply the relation term during the first N epochs only (paper: 100 of 600)."},
    )

    def __post_init__(self):
        if self.distillation_type not in DISTILLATION_TYPES:
            raise ValueError(
                f"distillation_type={self.distillation_type!r}; choose one of {', '.join(DISTILLATION_TYPES)}."
            )
        if not 0.0 <= self.distillation_alpha <= 1.0:
            raise ValueError(f"distillation_alpha must lie in [0, 1]; got {self.distillation_alpha}.")
        if self.distillation_temperature <= 0:
            raise ValueError(f"distillation_temperature must be positive; got {self.distillation_temperature}.")
        for name in ("lambda_hidden", "lambda_mixer", "lambda_relation", "feature_epochs", "relation_epochs"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be non-negative; got {value}.")
        if self.imitation_layers is not None and len(set(self.imitation_layers)) != len(self.imitation_layers):
            raise ValueError(f"imitation_layers lists a block twice: {self.imitation_layers}.")
        if not self.use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _has_accelerator():
            self.use_cpu = True
        super().__post_init__()

    @property
    def uses_labels(self) -> bool:
        """Whether the training loss reads the labels (anything but label-free distillation)."""
        return self.distillation_type == "none" or self.distillation_alpha < 1.0

    @property
    def imitation_weights(self) -> dict[str, float]:
        return {"hidden": self.lambda_hidden, "mixer": self.lambda_mixer, "relation": self.lambda_relation}


__all__ = ["DISTILLATION_TYPES", "IMITATION_TERMS", "LOSS_TERMS", "RIFormerTrainingArguments"]
