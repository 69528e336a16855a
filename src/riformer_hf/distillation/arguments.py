"""`RIFormerTrainingArguments`: transformers' `TrainingArguments` plus RIFormer's distillation recipe."""

import argparse
import os
from dataclasses import dataclass, field, fields

import torch
from transformers import TrainingArguments

from ..errors import UserError
from .recipes import check_recipe, recipe_help, recipe_training_values

DISTILLATION_TYPES = ("none", "soft", "hard")
INTERPOLATIONS = ("random", "bicubic", "bilinear")
LOSS_TERMS = ("ce", "kd", "hidden", "mixer", "relation")
IMITATION_TERMS = ("hidden", "mixer", "relation")


def has_accelerator() -> bool:
    return torch.accelerator.is_available()


def _check_range(flag: str, value, low: float, high: float | None, meaning: str) -> None:
    if value is not None and not (low <= value and (high is None or value <= high)):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise UserError(f"--{flag} {value}: must be {bounds} ({meaning}).")


def _check_rand_augment(spec: str) -> None:
    from ..data.rand_augment import parse_rand_augment

    try:
        parse_rand_augment(spec)
    except ValueError as error:
        raise UserError(f"--aa {spec!r}: {error}") from None


@dataclass
class RIFormerRecipeArguments:
    """RIFormer's distillation recipe (paper §3.3-3.4, Table 10): the fields `RIFormerTrainingArguments` adds to
    `TrainingArguments`, in a base of their own so that they come first in `riformer-train --help`."""

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
        metadata={"help": "Apply the hidden and mixer terms during the first N epochs only (or --feature_fraction)."},
    )
    relation_epochs: float | None = field(
        default=None,
        metadata={"help": "Apply the relation term during the first N epochs only (or --relation_fraction)."},
    )
    feature_fraction: float | None = field(
        default=None,
        metadata={"help": "Apply the hidden and mixer terms during this first share of the training steps (paper: "
                  "400 of 600 epochs = 2/3; the recipe's)."},
    )
    relation_fraction: float | None = field(
        default=None,
        metadata={"help": "Apply the relation term during this first share of the training steps (paper: 100 of 600 "
                  "epochs = 1/6; the recipe's)."},
    )

    recipe: str | None = field(default=None, metadata={"help": recipe_help()})
    aa: str | None = field(
        default=None,
        metadata={"help": "RandAugment policy in timm's format, per training image (the recipe: rand-m9-mstd0.5-inc1 = "
                  "2 ops of magnitude 9, σ 0.5, increasing set); 'none' turns it off."},
    )
    train_interpolation: str = field(
        default="random",
        metadata={"help": "Resampling of the random-resized crop and of RandAugment's geometric operations (timm's "
                  "--train-interpolation): random (bilinear or bicubic, drawn per image and per operation; the "
                  "paper's), bicubic or bilinear.", "choices": list(INTERPOLATIONS)},
    )
    color_jitter: float | None = field(
        default=None,
        metadata={"help": "Colour-jitter strength (brightness, contrast, saturation) per training image; only "
                  "without --aa."},
    )
    mixup: float = field(
        default=0.0, metadata={"help": "Mixup α: λ ~ Beta(α, α), one per batch, on the device; 0 = off (recipe 0.8)."}
    )
    cutmix: float = field(
        default=0.0,
        metadata={"help": "CutMix α: a box of side √(1 − λ), λ ~ Beta(α, α), λ corrected to the box; 0 = off "
                  "(recipe 1.0)."},
    )
    mixup_prob: float = field(
        default=1.0, metadata={"help": "Probability that a batch is mixed (mixup or cutmix) when either is on."}
    )
    mixup_switch_prob: float = field(
        default=0.5, metadata={"help": "Probability of cutmix rather than mixup for a batch when both are on."}
    )
    reprob: float = field(
        default=0.0,
        metadata={"help": "Random-erasing probability per training image, on the device after normalisation: one box "
                  "of N(0, 1) pixels, 0.02 to 1/3 of the image (recipe 0.25)."},
    )

    recipe_overrides: list[str] | None = field(
        default=None,
        metadata={"help": argparse.SUPPRESS},  # riformer-train fills it with the flags given explicitly
    )


@dataclass
class RIFormerTrainingArguments(TrainingArguments, RIFormerRecipeArguments):
    """`TrainingArguments` plus RIFormer's distillation recipe (`RIFormerRecipeArguments`).

    `recipe` sets every field of the recipe (`distillation.recipes`) except those in `recipe_overrides`; without
    that list (the Python API), except those not at their default.

    A multi-process launch on a machine without an accelerator (e.g. `accelerate launch` with
    `configs/accelerate_cpu_2proc.yaml`) trains on CPU with gloo: `use_cpu` is switched on for it.
    """

    _argument_group_name = "RIFormer's recipe, then transformers' TrainingArguments"

    def __post_init__(self):
        check_recipe(self.recipe)
        if self.recipe is not None:
            self._apply_recipe()
        if self.aa is not None and self.aa.lower() in ("", "none"):
            self.aa = None
        _check_range("mixup", self.mixup, 0.0, None, "the Beta(α, α) parameter of mixup; 0 turns it off")
        _check_range("cutmix", self.cutmix, 0.0, None, "the Beta(α, α) parameter of cutmix; 0 turns it off")
        _check_range("mixup_prob", self.mixup_prob, 0.0, 1.0, "a probability")
        _check_range("mixup_switch_prob", self.mixup_switch_prob, 0.0, 1.0, "a probability")
        _check_range("reprob", self.reprob, 0.0, 1.0, "the random-erasing probability per image")
        _check_range("color_jitter", self.color_jitter, 0.0, None, "a jitter strength")
        _check_range("label_smoothing_factor", self.label_smoothing_factor, 0.0, 1.0, "the label-smoothing ε")
        if self.aa is not None:
            _check_rand_augment(self.aa)
            if self.color_jitter:
                raise UserError(
                    f"--color_jitter {self.color_jitter} with --aa {self.aa!r}: colour jitter is used only without "
                    "RandAugment; drop one of them (--aa none turns RandAugment off)."
                )
        if self.distillation_type not in DISTILLATION_TYPES:
            raise UserError(
                f"distillation_type={self.distillation_type!r}; choose one of {', '.join(DISTILLATION_TYPES)}."
            )
        if not 0.0 <= self.distillation_alpha <= 1.0:
            raise UserError(f"distillation_alpha must lie in [0, 1]; got {self.distillation_alpha}.")
        if self.distillation_temperature <= 0:
            raise UserError(f"distillation_temperature must be positive; got {self.distillation_temperature}.")
        for name in ("lambda_hidden", "lambda_mixer", "lambda_relation", "feature_epochs", "relation_epochs"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise UserError(f"{name} must be non-negative; got {value}.")
        for window in ("feature", "relation"):
            epochs, fraction = getattr(self, f"{window}_epochs"), getattr(self, f"{window}_fraction")
            _check_range(f"{window}_fraction", fraction, 0.0, 1.0, "a share of the training steps")
            if epochs is not None and fraction is not None:
                raise UserError(
                    f"--{window}_epochs {epochs} and --{window}_fraction {fraction} both set the {window} imitation "
                    "window: give one."
                )
        if self.train_interpolation not in INTERPOLATIONS:
            raise UserError(
                f"--train_interpolation {self.train_interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}."
            )
        if self.imitation_layers is not None and len(set(self.imitation_layers)) != len(self.imitation_layers):
            raise UserError(f"imitation_layers lists a block twice: {self.imitation_layers}.")
        if not self.use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator():
            self.use_cpu = True
        super().__post_init__()

    def _apply_recipe(self) -> None:
        """Set the recipe's values on every field it covers that is not kept (see the class docstring)."""
        defaults = {f.name: f.default for f in fields(self) if f.init}
        if self.recipe_overrides is None:
            kept = {name for name, default in defaults.items() if getattr(self, name) != default}
        else:
            kept = set(self.recipe_overrides)
        kept |= {f"{window}_fraction" for window in ("feature", "relation") if f"{window}_epochs" in kept}
        for name, value in recipe_training_values(self.recipe, self.effective_batch_size).items():
            if name not in kept:
                setattr(self, name, value)

    @property
    def effective_batch_size(self) -> int:
        """Images per optimizer step: per-device batch × accumulation × processes (`WORLD_SIZE` before the launch)."""
        processes = int(os.environ.get("WORLD_SIZE", "1"))
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * processes

    @property
    def uses_labels(self) -> bool:
        """Whether the training loss reads the labels (anything but label-free distillation)."""
        return self.distillation_type == "none" or self.distillation_alpha < 1.0

    @property
    def imitation_weights(self) -> dict[str, float]:
        return {"hidden": self.lambda_hidden, "mixer": self.lambda_mixer, "relation": self.lambda_relation}

    @property
    def mixes_batches(self) -> bool:
        """Whether training batches are mixed (mixup or cutmix) on the device."""
        return self.mixup_prob > 0 and (self.mixup > 0 or self.cutmix > 0)


__all__ = ["DISTILLATION_TYPES", "IMITATION_TERMS", "INTERPOLATIONS", "LOSS_TERMS", "RIFormerTrainingArguments"]
