"""Per-image transforms without torchvision.

Evaluation preprocessing is the image processor saved with the model (`ProcessorTransform` calls it); training
augmentation (`TrainTransform`) takes its output size and normalisation from that same processor.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image as PILImage

from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, processor_spec


def to_tensor(image: PILImage.Image, mean, std) -> torch.Tensor:
    """PIL image → normalised float32 tensor (3, H, W)."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    array = (array - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


@dataclass
class TrainTransform:
    """Training augmentation: random-resized crop (area fraction in `scale`, aspect ratio in `ratio`), bicubic resize
    to `image_size`², horizontal flip with probability `hflip`, normalisation. Draws from torch's global RNG (seeded
    by Trainer); with `scale=(1, 1)` and `hflip=0` it draws nothing and resizes the whole image."""

    image_size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @classmethod
    def from_image_processor(cls, processor, **augmentation) -> "TrainTransform":
        """The augmentation for a model whose evaluation preprocessing is `processor`: its crop size, mean and std."""
        spec = processor_spec(processor)
        return cls(image_size=spec.image_size, mean=spec.mean, std=spec.std, **augmentation)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of a random crop; the centre crop of clamped ratio after 10 failed draws."""
        area = width * height
        log_ratio = torch.log(torch.tensor(self.ratio))
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(*self.scale).item()
            aspect = math.exp(torch.empty(1).uniform_(log_ratio[0].item(), log_ratio[1].item()).item())
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                left = torch.randint(0, width - w + 1, (1,)).item()
                top = torch.randint(0, height - h + 1, (1,)).item()
                return left, top, left + w, top + h
        aspect = width / height
        if aspect < min(self.ratio):
            w, h = width, round(width / min(self.ratio))
        elif aspect > max(self.ratio):
            w, h = round(height * max(self.ratio)), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __call__(self, image: PILImage.Image) -> torch.Tensor:
        image = image.convert("RGB")
        box = None if self.scale[0] >= 1.0 else self.crop_box(*image.size)  # scale (1, 1): the whole image
        image = image.resize((self.image_size, self.image_size), PILImage.BICUBIC, box=box)
        if self.hflip > 0 and torch.rand(1).item() < self.hflip:
            image = image.transpose(PILImage.FLIP_LEFT_RIGHT)
        return to_tensor(image, self.mean, self.std)


@dataclass
class ProcessorTransform:
    """Evaluation preprocessing: the model's own image processor, one image at a time."""

    processor: object

    def __call__(self, image: PILImage.Image) -> torch.Tensor:
        return self.processor(image.convert("RGB"), return_tensors="pt")["pixel_values"][0]


@dataclass
class _BatchTransform:
    transform: Callable[[PILImage.Image], torch.Tensor]
    image_column: str
    label_column: str

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self.image_column not in batch:
            raise KeyError(f"No {self.image_column!r} column (columns: {', '.join(batch)}); set the image column name.")
        out = {"pixel_values": [self.transform(image) for image in batch[self.image_column]]}
        if self.label_column in batch:
            out["labels"] = batch[self.label_column]
        return out


def with_image_transform(dataset, transform, image_column: str = "image", label_column: str = "label"):
    """A view of `dataset` whose examples are `{"pixel_values": transform(image), "labels": label}`, transformed on
    access (so in the data-loader workers, with fresh augmentation every epoch). Batch them with transformers'
    `default_data_collator`; train with `remove_unused_columns=False` so that Trainer hands the images over."""
    return dataset.with_transform(_BatchTransform(transform, image_column, label_column))


__all__ = ["ProcessorTransform", "TrainTransform", "to_tensor", "with_image_transform"]
