"""riformer_hf: RIFormer (CVPR 2023) for the Hugging Face stack. Importing it registers the Auto classes.

Rooms: `models` (RIFormer, GFNet-H), `data` (digits, image processor, transforms), `distillation` (losses, teachers,
arguments, trainer), `export` (deploy export, card, Hub, save hook), `convert` (published checkpoints), `cli`.
"""

from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification

from .distillation import RIFormerDistillationTrainer, RIFormerTrainingArguments, from_poolformer
from .export import ReparameterizedExportMixin, export_reparameterized, push_reparameterized
from .models.gfnet import GFNET_PRESETS, GFNetConfig, GFNetForImageClassification, GFNetModel, GFNetPreTrainedModel
from .models.riformer import (
    RIFORMER_PRESETS,
    RIFormerBackbone,
    RIFormerConfig,
    RIFormerForImageClassification,
    RIFormerModel,
    RIFormerPreTrainedModel,
    reparameterize_model,
)

AutoConfig.register("riformer", RIFormerConfig, exist_ok=True)
AutoModel.register(RIFormerConfig, RIFormerModel, exist_ok=True)
AutoModelForImageClassification.register(RIFormerConfig, RIFormerForImageClassification, exist_ok=True)
AutoBackbone.register(RIFormerConfig, RIFormerBackbone, exist_ok=True)

# `save_pretrained` then writes `auto_map` and copies the modelling code for `trust_remote_code`.
RIFormerConfig.register_for_auto_class()
RIFormerModel.register_for_auto_class("AutoModel")
RIFormerForImageClassification.register_for_auto_class("AutoModelForImageClassification")
RIFormerBackbone.register_for_auto_class("AutoBackbone")

AutoConfig.register("gfnet", GFNetConfig, exist_ok=True)
AutoModel.register(GFNetConfig, GFNetModel, exist_ok=True)
AutoModelForImageClassification.register(GFNetConfig, GFNetForImageClassification, exist_ok=True)
GFNetConfig.register_for_auto_class()
GFNetModel.register_for_auto_class("AutoModel")
GFNetForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__version__ = "0.2.0"

__all__ = [
    "GFNET_PRESETS",
    "GFNetConfig",
    "GFNetForImageClassification",
    "GFNetModel",
    "GFNetPreTrainedModel",
    "RIFORMER_PRESETS",
    "RIFormerBackbone",
    "RIFormerConfig",
    "RIFormerDistillationTrainer",
    "RIFormerForImageClassification",
    "RIFormerModel",
    "RIFormerPreTrainedModel",
    "RIFormerTrainingArguments",
    "ReparameterizedExportMixin",
    "export_reparameterized",
    "from_poolformer",
    "push_reparameterized",
    "reparameterize_model",
]
