"""riformer_hf: RIFormer (CVPR 2023) for the Hugging Face stack.

Importing it registers RIFormer and GFNet with transformers' Auto classes (`registration`) and nothing else: the
names below load their modules on first use.

Rooms: `models` (RIFormer, GFNet-H), `data` (digits, image processor, transforms, batch mixing), `distillation`
(losses, teachers, arguments, recipes, trainer), `training` (the riformer-train program), `export` (deploy export,
card, Hub, ONNX), `convert` (published checkpoints, PoolFormer → RIFormer), `evaluation`, `benchmarks`, `cli`.
"""

import importlib

from . import registration
from ._lazy import lazy_attributes

__version__ = "0.3.0"

_LAZY = {
    "RIFORMER_PRESETS": "models.riformer.configuration_riformer",
    "RIFormerConfig": "models.riformer.configuration_riformer",
    "RIFormerBackbone": "models.riformer.modeling_riformer",
    "RIFormerForImageClassification": "models.riformer.modeling_riformer",
    "RIFormerModel": "models.riformer.modeling_riformer",
    "RIFormerPreTrainedModel": "models.riformer.modeling_riformer",
    "reparameterize_model": "models.riformer.modeling_riformer",
    "GFNET_PRESETS": "models.gfnet.configuration_gfnet",
    "GFNetConfig": "models.gfnet.configuration_gfnet",
    "GFNetForImageClassification": "models.gfnet.modeling_gfnet",
    "GFNetModel": "models.gfnet.modeling_gfnet",
    "GFNetPreTrainedModel": "models.gfnet.modeling_gfnet",
    "RIFormerDistillationTrainer": "distillation.trainer",
    "RIFormerTrainingArguments": "distillation.arguments",
    "from_poolformer": "convert.poolformer",
    "ReparameterizedExportMixin": "export.save_hook",
    "export_reparameterized": "export.deploy",
    "push_reparameterized": "export.hub",
    "UserError": "errors",
}
_SUBMODULES = (
    "benchmarks", "cli", "convert", "data", "distillation", "errors", "evaluation", "export", "loading", "models",
    "timing", "training",
)

registration.install()


_lazy_attribute = lazy_attributes(__name__, _LAZY)


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    value = globals()[name] = _lazy_attribute(name)
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBMODULES})


__all__ = [
    "GFNET_PRESETS",
    "RIFORMER_PRESETS",
    "GFNetConfig",
    "GFNetForImageClassification",
    "GFNetModel",
    "GFNetPreTrainedModel",
    "RIFormerBackbone",
    "RIFormerConfig",
    "RIFormerDistillationTrainer",
    "RIFormerForImageClassification",
    "RIFormerModel",
    "RIFormerPreTrainedModel",
    "RIFormerTrainingArguments",
    "ReparameterizedExportMixin",
    "UserError",
    "export_reparameterized",
    "from_poolformer",
    "push_reparameterized",
    "reparameterize_model",
]
