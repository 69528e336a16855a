"""Data: the embedded digits, the image processor as the one owner of preprocessing, per-image transforms and
RandAugment, datasets that name (or skip) unreadable images."""

from .digits import digits_dataset
from .image_modes import to_rgb
from .preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESET_CROP_PCT,
    ProcessorSpec,
    load_image_processor,
    make_image_processor,
    processor_spec,
)
from .rand_augment import RandAugment, RandAugmentConfig, fill_from_mean, parse_rand_augment
from .transforms import (
    ProcessorTransform,
    TrainTransform,
    TransformedImages,
    UnreadableImageError,
    to_tensor,
    with_image_transform,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESET_CROP_PCT",
    "ProcessorSpec",
    "ProcessorTransform",
    "RandAugment",
    "RandAugmentConfig",
    "TrainTransform",
    "TransformedImages",
    "UnreadableImageError",
    "digits_dataset",
    "fill_from_mean",
    "load_image_processor",
    "make_image_processor",
    "parse_rand_augment",
    "processor_spec",
    "to_rgb",
    "to_tensor",
    "with_image_transform",
]
