from .configuration_riformer import RIFORMER_PRESETS, RIFormerConfig
from .modeling_riformer import (
    RIFormerBackbone,
    RIFormerForImageClassification,
    RIFormerModel,
    RIFormerPreTrainedModel,
    fuse_mixer_into_norm,
    reparameterize_model,
)

__all__ = [
    "RIFORMER_PRESETS",
    "RIFormerBackbone",
    "RIFormerConfig",
    "RIFormerForImageClassification",
    "RIFormerModel",
    "RIFormerPreTrainedModel",
    "fuse_mixer_into_norm",
    "reparameterize_model",
]
