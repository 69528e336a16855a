from .configuration_gfnet import GFNET_PRESETS, GFNetConfig
from .modeling_gfnet import GFNetForImageClassification, GFNetModel, GFNetPreTrainedModel

__all__ = ["GFNET_PRESETS", "GFNetConfig", "GFNetForImageClassification", "GFNetModel", "GFNetPreTrainedModel"]
