"""Preprocessing has one owner: the image processor saved with the model.

Evaluation runs it as it is (`ProcessorTransform`), training augmentation reads its output size and normalisation
from it (`processor_spec`), and the model card describes it. RIFormer folders carry transformers'
`PoolFormerImageProcessor` settings: bicubic resize of the short side to `image_size / crop_pct`, centre crop to
`image_size`², ImageNet mean/std.
"""

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Centre-crop fraction of the paper's evaluation: 0.9 for the S models, 0.95 for the M models (and GFNet's 0.875).
PRESET_CROP_PCT = {"s12": 0.9, "s24": 0.9, "s36": 0.9, "m36": 0.95, "m48": 0.95}
DEFAULT_CROP_PCT = 0.9
PROCESSOR_FILE = "preprocessor_config.json"


def crop_pct_for_widths(hidden_sizes) -> float:
    """The paper's crop for a RIFormer with these stage widths (its S or M presets), else `DEFAULT_CROP_PCT`."""
    from ..models.riformer import RIFORMER_PRESETS

    widths = tuple(hidden_sizes)
    presets = (name for name, preset in RIFORMER_PRESETS.items() if tuple(preset["hidden_sizes"]) == widths)
    return PRESET_CROP_PCT.get(next(presets, None), DEFAULT_CROP_PCT)


def make_image_processor(image_size: int = 224, crop_pct: float = DEFAULT_CROP_PCT, mean=IMAGENET_MEAN,
                         std=IMAGENET_STD):
    """A PoolFormer-style image processor: bicubic resize to `int(image_size / crop_pct)`, centre crop, normalise."""
    from transformers.models.poolformer.image_processing_pil_poolformer import PoolFormerImageProcessorPil

    if image_size < 1 or not 0 < crop_pct <= 1:
        raise UserError(f"image_size must be positive and crop_pct in (0, 1]; got {image_size} and {crop_pct}.")
    return PoolFormerImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}, crop_pct=crop_pct,
        image_mean=list(mean), image_std=list(std),
    )


def load_image_processor(name_or_path):
    """The image processor saved with a model folder or Hub repo (`AutoImageProcessor`), or None if it has none."""
    from transformers import AutoImageProcessor

    if Path(str(name_or_path)).is_dir() and not (Path(name_or_path) / PROCESSOR_FILE).is_file():
        return None
    try:
        return AutoImageProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class ProcessorSpec:
    """What an image processor hands the model: `height` × `width` pixels normalised with `mean` / `std`."""

    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float | None = None
    resize_shortest_edge: int | None = None

    @property
    def image_size(self) -> int:
        if self.height != self.width:
            raise UserError(f"Expected square inputs; the image processor gives {self.height}×{self.width}.")
        return self.height


def processor_spec(processor) -> ProcessorSpec:
    """Output size and normalisation of a transformers image processor (centre crop if it crops, else its resize)."""
    size = dict(getattr(processor, "size", None) or {})
    crop = dict(getattr(processor, "crop_size", None) or {})
    if getattr(processor, "do_center_crop", False) and crop.get("height"):
        height, width = crop["height"], crop["width"]
    elif size.get("height"):
        height, width = size["height"], size["width"]
    elif size.get("shortest_edge") and not getattr(processor, "do_center_crop", False):
        raise UserError(
            f"{type(processor).__name__} resizes the short side to {size['shortest_edge']} without cropping, so the "
            "input size depends on each image: give it a crop_size or a fixed height and width."
        )
    else:
        raise UserError(f"Cannot tell the input size of {type(processor).__name__} (size={size}, crop_size={crop}).")
    if getattr(processor, "do_normalize", True):
        mean, std = tuple(processor.image_mean), tuple(processor.image_std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    crop_pct = getattr(processor, "crop_pct", None)
    shortest = size.get("shortest_edge")
    resize = int(shortest / crop_pct) if shortest and crop_pct else shortest
    return ProcessorSpec(int(height), int(width), tuple(map(float, mean)), tuple(map(float, std)), crop_pct, resize)


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESET_CROP_PCT",
    "ProcessorSpec",
    "crop_pct_for_widths",
    "load_image_processor",
    "make_image_processor",
    "processor_spec",
]
