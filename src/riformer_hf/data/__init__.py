"""Data: the embedded digits, the image processor as the one owner of preprocessing, and per-image transforms."""

from .digits import digits_dataset
from .preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESET_CROP_PCT,
    ProcessorSpec,
    load_image_processor,
    make_image_processor,
    processor_spec,
)
from .transforms import ProcessorTransform, TrainTransform, to_tensor, with_image_transform

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESET_CROP_PCT",
    "ProcessorSpec",
    "ProcessorTransform",
    "TrainTransform",
    "digits_dataset",
    "load_image_processor",
    "make_image_processor",
    "processor_spec",
    "to_tensor",
    "with_image_transform",
]
