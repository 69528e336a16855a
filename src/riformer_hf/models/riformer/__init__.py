"""RIFormer: `configuration_riformer`, `modeling_riformer` (both forms, `reparameterize()`) and `fused_riformer`
(the deploy form's fused CPU path). The names below load their module on first use, so that reading the config does
not load the model."""

from ..._lazy import lazy_attributes

_LAZY = {
    "RIFORMER_PRESETS": "configuration_riformer",
    "RIFormerConfig": "configuration_riformer",
    "RIFormerBackbone": "modeling_riformer",
    "RIFormerForImageClassification": "modeling_riformer",
    "RIFormerModel": "modeling_riformer",
    "RIFormerPreTrainedModel": "modeling_riformer",
    "fuse_mixer_into_norm": "modeling_riformer",
    "reparameterize_model": "modeling_riformer",
}


__getattr__ = lazy_attributes(__name__, _LAZY)

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
