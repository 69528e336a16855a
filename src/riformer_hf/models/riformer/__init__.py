"""RIFormer: `configuration_riformer`, `modeling_riformer` (both forms, `reparameterize()`) and `fused_riformer`
(the deploy form's fused CPU path). The names below load their module on first use, so that reading the config does
not load the model."""

import importlib

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


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


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
