"""The paper's training recipes, one flag each: `--recipe riformer-s12` (and -s24, -s36, -m36, -m48).

Every preset is PoolFormer's ImageNet recipe with RIFormer's distillation (paper §4, Table 10): AdamW (0.9, 0.999),
lr 1e-3 × batch / 1024 (the effective batch: devices × per-device batch × accumulation), weight decay 0.05, cosine
schedule, 600 epochs; soft, label-free logit distillation (α = 1); module imitation with Table 10's λ on the last block
of each stage (4 layers); student drop path 0.1; RandAugment rand-m9-mstd0.5-inc1 and random-resized crops with a
random (bilinear or bicubic) interpolation, mixup 0.8, cutmix 1.0 (switch 0.5, every batch), random erasing 0.25,
label smoothing 0.1.

The paper's warm-up (5 of 600 epochs) and imitation windows (feature terms for the first 400 epochs, the relation term
for the first 100) are set as the same fractions of whatever run it is: 1/120, 2/3 and 1/6 of the training steps, so
a run of 6 epochs or of `--max_steps 30` keeps the paper's shape instead of warming up for most of it.

Table 10 gives λ for S12 and S24 only. S36, M36 and M48 use S24's λ, marked `extrapolated`: S24 is the nearest
published setting, and the imitation losses are means over channels and positions, so a deeper or wider student does
not by itself scale them; scaling λ further, as from S12 to S24, would be a guess beyond the paper's data.
"""

from dataclasses import dataclass

from ..errors import UserError

BASE_LEARNING_RATE = 1e-3
BASE_BATCH_SIZE = 1024
PAPER_EPOCHS = 600
WARMUP_EPOCHS, FEATURE_EPOCHS, RELATION_EPOCHS = 5, 400, 100  # of the paper's 600


@dataclass(frozen=True)
class Recipe:
    """The λ of one preset (λ1 block outputs, λ2 token-mixer outputs, λ3 relation) and whether the paper gives them."""

    lambda_hidden: float
    lambda_mixer: float
    lambda_relation: float
    extrapolated: bool = False


_S12 = Recipe(1e-4, 1e-3, 1.0)
_S24 = Recipe(3e-4, 5e-3, 4.0)
_BEYOND_TABLE_10 = Recipe(_S24.lambda_hidden, _S24.lambda_mixer, _S24.lambda_relation, extrapolated=True)
RECIPES = {
    "riformer-s12": _S12,
    "riformer-s24": _S24,
    "riformer-s36": _BEYOND_TABLE_10,
    "riformer-m36": _BEYOND_TABLE_10,
    "riformer-m48": _BEYOND_TABLE_10,
}

# Settings every preset shares, by `RIFormerTrainingArguments` field.
SHARED_TRAINING = {
    "optim": "adamw_torch",
    "adam_beta1": 0.9,
    "adam_beta2": 0.999,
    "weight_decay": 0.05,
    "lr_scheduler_type": "cosine",
    "num_train_epochs": float(PAPER_EPOCHS),
    "warmup_steps": WARMUP_EPOCHS / PAPER_EPOCHS,  # below 1: a share of the training steps
    "distillation_type": "soft",
    "distillation_alpha": 1.0,
    "feature_fraction": FEATURE_EPOCHS / PAPER_EPOCHS,
    "relation_fraction": RELATION_EPOCHS / PAPER_EPOCHS,
    "aa": "rand-m9-mstd0.5-inc1",
    "train_interpolation": "random",
    "mixup": 0.8,
    "cutmix": 1.0,
    "mixup_prob": 1.0,
    "mixup_switch_prob": 0.5,
    "reprob": 0.25,
    "label_smoothing_factor": 0.1,
}
# Settings of the student (`ModelArguments` of riformer-train).
SHARED_MODEL = {"drop_path_rate": 0.1}


def recipe_help() -> str:
    names = ", ".join(f"{name} (λ extrapolated from S24)" if r.extrapolated else name for name, r in RECIPES.items())
    return (
        f"The paper's whole recipe in one flag: {names}. AdamW (0.9, 0.999), lr 1e-3 × effective batch / 1024, "
        "wd 0.05, cosine, 600 epochs, soft label-free KD, Table 10's λ, drop path 0.1, RandAugment "
        "rand-m9-mstd0.5-inc1, random interpolation, mixup 0.8, cutmix 1.0, reprob 0.25, label smoothing 0.1; "
        "warm-up and feature / relation imitation for the paper's shares of the run (5, 400, 100 of 600 epochs: "
        "1/120, 2/3, 1/6 of the training steps, also under --max_steps). Flags given explicitly override it."
    )


def check_recipe(name: str | None) -> None:
    if name is not None and name not in RECIPES:
        raise UserError(f"--recipe {name!r} is not a recipe; choose one of {', '.join(RECIPES)}.")


def recipe_learning_rate(batch_size: int) -> float:
    """The paper's learning rate for an effective batch of `batch_size` images (linear scaling from 1e-3 at 1024)."""
    return BASE_LEARNING_RATE * batch_size / BASE_BATCH_SIZE


def recipe_training_values(name: str, batch_size: int) -> dict:
    """The `RIFormerTrainingArguments` values of recipe `name` for an effective batch of `batch_size` images."""
    check_recipe(name)
    recipe = RECIPES[name]
    return {
        **SHARED_TRAINING,
        "learning_rate": recipe_learning_rate(batch_size),
        "lambda_hidden": recipe.lambda_hidden,
        "lambda_mixer": recipe.lambda_mixer,
        "lambda_relation": recipe.lambda_relation,
    }


def recipe_model_values(name: str) -> dict:
    """The student settings (riformer-train's `ModelArguments` fields) of recipe `name`."""
    check_recipe(name)
    return dict(SHARED_MODEL)


__all__ = [
    "RECIPES",
    "Recipe",
    "check_recipe",
    "recipe_help",
    "recipe_learning_rate",
    "recipe_model_values",
    "recipe_training_values",
]
