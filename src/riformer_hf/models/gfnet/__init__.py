"""GFNet-H, RIFormer's logit teacher: `configuration_gfnet`, `modeling_gfnet`. The names below load their module on
first use."""

import importlib

_LAZY = {
    "GFNET_PRESETS": "configuration_gfnet",
    "GFNetConfig": "configuration_gfnet",
    "GFNetForImageClassification": "modeling_gfnet",
    "GFNetModel": "modeling_gfnet",
    "GFNetPreTrainedModel": "modeling_gfnet",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


__all__ = [
    "GFNET_PRESETS",
    "GFNetConfig",
    "GFNetForImageClassification",
    "GFNetModel",
    "GFNetPreTrainedModel",
]
