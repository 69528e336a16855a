"""RIFormer and GFNet in transformers' Auto classes, registered without importing transformers.

`AutoConfig`, `AutoModel`, `AutoModelForImageClassification` and `AutoBackbone` live in two transformers modules
(`configuration_auto`, `modeling_auto`) that only load when first used, and importing either pulls in torch. So
`import riformer_hf` registers nothing itself: it asks Python to run each registration right after that module is
first imported (a post-import hook on `sys.meta_path`), or at once when it is loaded already. Whatever the order of
imports, the Auto classes know RIFormer and GFNet by the time anyone can use them, and `import riformer_hf` stays
light (`tests/test_layout.py` measures it).
"""

import sys
from collections.abc import Callable

CONFIG_MODULE = "transformers.models.auto.configuration_auto"
MODEL_MODULE = "transformers.models.auto.modeling_auto"


def register_configs() -> None:
    from transformers import AutoConfig

    from .models.gfnet.configuration_gfnet import GFNetConfig
    from .models.riformer.configuration_riformer import RIFormerConfig

    AutoConfig.register("riformer", RIFormerConfig, exist_ok=True)
    AutoConfig.register("gfnet", GFNetConfig, exist_ok=True)


# Per Auto model mapping of `transformers.models.auto.modeling_auto`: the class each family's package gives it.
MODEL_CLASSES = {
    "MODEL_MAPPING": {"riformer": "RIFormerModel", "gfnet": "GFNetModel"},
    "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING": {
        "riformer": "RIFormerForImageClassification", "gfnet": "GFNetForImageClassification",
    },
    "MODEL_FOR_BACKBONE_MAPPING": {"riformer": "RIFormerBackbone"},
}
FAMILIES = {"riformer": ("RIFormerConfig", "models.riformer"), "gfnet": ("GFNetConfig", "models.gfnet")}


def register_models() -> None:
    """Enter each family in the Auto model mappings by name, as transformers enters its own models: the mapping
    imports the family's package (and through it the modelling file) at the first lookup, not now. Importing the
    modelling files here could meet a transformers module halfway through its own import (`modeling_layers` imports
    `AutoModel` at its top)."""
    from importlib import import_module

    from transformers.models.auto import modeling_auto

    for mapping_name, classes in MODEL_CLASSES.items():
        mapping = getattr(modeling_auto, mapping_name)
        for model_type, class_name in classes.items():
            config_name, package = FAMILIES[model_type]
            add_lazy_entry(mapping, config_name, model_type, class_name, import_module(f".{package}", __package__))


def add_lazy_entry(mapping, config_name: str, model_type: str, class_name: str, package) -> None:
    """`mapping[<config class named config_name>]` → `package.class_name`, loaded on first lookup. The one place that
    writes a `_LazyAutoMapping`'s private name tables; `tests/test_layout.py` fails when transformers changes them."""
    mapping._reverse_config_mapping[config_name] = model_type
    mapping._model_mapping[model_type] = class_name
    mapping._modules[model_type] = package


class _AfterImport:
    """A `sys.meta_path` finder that finds nothing itself: for each watched module it lets the other finders find it
    and runs the callback once the module's code has run."""

    def __init__(self, callbacks: dict[str, Callable[[], None]]):
        self.callbacks = dict(callbacks)

    def find_spec(self, name, path=None, target=None):
        if name not in self.callbacks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        callback, execute = self.callbacks.pop(name), spec.loader.exec_module
        if not self.callbacks:
            sys.meta_path.remove(self)

        def exec_module(module):
            execute(module)
            callback()

        spec.loader.exec_module = exec_module  # this module's loader only
        return spec


def _loaded(name: str) -> bool:
    module = sys.modules.get(name)
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)


def install() -> None:
    """Register now what is loaded, and the rest right after transformers loads it."""
    pending = {}
    for name, callback in ((CONFIG_MODULE, register_configs), (MODEL_MODULE, register_models)):
        if _loaded(name):
            callback()
        else:
            pending[name] = callback
    if pending and not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(pending))


__all__ = ["install", "register_configs", "register_models"]
