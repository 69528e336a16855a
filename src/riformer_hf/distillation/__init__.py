"""RIFormer's training recipe: losses, the PoolFormer teacher (imitation, initialisation, the one field and key map),
the training arguments and the distillation Trainer."""

from .arguments import RIFormerTrainingArguments
from .losses import feature_imitation_loss, hard_distillation_loss, relation_imitation_loss, soft_distillation_loss
from .teachers import (
    PoolFormerImitationAdapter,
    check_isomorphic,
    from_poolformer,
    poolformer_config,
    poolformer_key_to_riformer,
)
from .trainer import RIFormerDistillationTrainer, check_same_label_space

__all__ = [
    "PoolFormerImitationAdapter",
    "RIFormerDistillationTrainer",
    "RIFormerTrainingArguments",
    "check_isomorphic",
    "check_same_label_space",
    "feature_imitation_loss",
    "from_poolformer",
    "hard_distillation_loss",
    "poolformer_config",
    "poolformer_key_to_riformer",
    "relation_imitation_loss",
    "soft_distillation_loss",
]
