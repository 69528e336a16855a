"""GFNet-H, RIFormer's logit teacher: `configuration_gfnet`, `modeling_gfnet`. The names below load their module on
first use."""

from ..._lazy import lazy_attributes

_LAZY = {
    "GFNET_PRESETS": "configuration_gfnet",
    "GFNetConfig": "configuration_gfnet",
    "GFNetForImageClassification": "modeling_gfnet",
    "GFNetModel": "modeling_gfnet",
    "GFNetPreTrainedModel": "modeling_gfnet",
}


__getattr__ = lazy_attributes(__name__, _LAZY)

__all__ = [
    "GFNET_PRESETS",
    "GFNetConfig",
    "GFNetForImageClassification",
    "GFNetModel",
    "GFNetPreTrainedModel",
]
