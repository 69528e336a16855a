"""RIFormer's training recipe: losses, the PoolFormer imitation teacher, teachers' preprocessing, the training
arguments with the paper's recipes, and the distillation Trainer."""

from .arguments import RIFormerTrainingArguments
from .losses import (
    feature_imitation_loss,
    hard_distillation_loss,
    relation_imitation_loss,
    soft_distillation_loss,
    soft_target_cross_entropy,
)
from .teachers import PoolFormerImitationAdapter, check_isomorphic
from .trainer import RIFormerDistillationTrainer, check_same_label_space

__all__ = [
    "PoolFormerImitationAdapter",
    "RIFormerDistillationTrainer",
    "RIFormerTrainingArguments",
    "check_isomorphic",
    "check_same_label_space",
    "feature_imitation_loss",
    "hard_distillation_loss",
    "relation_imitation_loss",
    "soft_distillation_loss",
    "soft_target_cross_entropy",
]
