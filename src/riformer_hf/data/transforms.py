"""Per-image transforms without torchvision.

Evaluation preprocessing is the image processor saved with the model (`ProcessorTransform` calls it); training
augmentation (`TrainTransform`) takes its output size and normalisation from that same processor.
"""

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Image, IterableDataset
from PIL import Image as PILImage
from PIL import ImageEnhance
from torch.utils.data import Dataset as TorchDataset
from transformers.utils import logging

from ..errors import UserError
from .image_modes import to_rgb
from .preprocessing import IMAGENET_MEAN, IMAGENET_STD, processor_spec
from .rand_augment import INTERPOLATIONS, RandAugment, choose_resample

logger = logging.get_logger(__name__)


def to_tensor(image: PILImage.Image, mean, std) -> torch.Tensor:
    """PIL image (any mode, see `to_rgb`) → normalised float32 tensor (3, H, W): x / 255 scaled and shifted in one
    pass over the pixels."""
    pixels = torch.from_numpy(np.array(to_rgb(image), dtype=np.uint8))
    scale, shift = _normalisation(tuple(mean), tuple(std))
    tensor = pixels.permute(2, 0, 1).to(torch.float32, memory_format=torch.contiguous_format)
    return tensor.mul_(scale).sub_(shift)


@functools.lru_cache(maxsize=16)
def _normalisation(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    std_ = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return 1.0 / (255.0 * std_), torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_


@dataclass
class TrainTransform:
    """Training augmentation: random-resized crop (area fraction in `scale`, aspect ratio in `ratio`) resized to
    `image_size`² with `interpolation` (timm's names: "random" draws bilinear or bicubic per image, the paper's; or
    "bicubic", "bilinear"), horizontal flip with probability `hflip`, then `rand_augment` or, without it, colour jitter
    of strength `color_jitter` (brightness, contrast and saturation factors uniform in [max(0, 1 − s), 1 + s], in
    random order), normalisation. Draws from torch's global RNG (seeded by Trainer); with `scale=(1, 1)`, `hflip=0`, a
    fixed interpolation and no RandAugment or jitter it draws nothing and resizes the whole image."""

    image_size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    rand_augment: RandAugment | None = None
    color_jitter: float | None = None
    interpolation: str = "random"

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"interpolation {self.interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}.")
        if self.color_jitter is not None and not self.color_jitter >= 0:
            raise UserError(f"color_jitter must be a strength ≥ 0 (0.4 is usual); got {self.color_jitter!r}.")

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
        image = to_rgb(image)
        box = None if self.scale[0] >= 1.0 else self.crop_box(*image.size)  # scale (1, 1): the whole image
        image = image.resize((self.image_size, self.image_size), choose_resample(self.interpolation), box=box)
        if self.hflip > 0 and torch.rand(1).item() < self.hflip:
            image = image.transpose(PILImage.FLIP_LEFT_RIGHT)
        if self.rand_augment is not None:
            image = self.rand_augment(image)
        elif self.color_jitter:
            image = jitter_colors(image, self.color_jitter)
        return to_tensor(image, self.mean, self.std)


_JITTERED = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)


def jitter_colors(image: PILImage.Image, strength: float) -> PILImage.Image:
    """Brightness, contrast and saturation, in random order, each scaled by a factor uniform in
    [max(0, 1 − strength), 1 + strength]."""
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    for index in torch.randperm(len(_JITTERED)).tolist():
        image = _JITTERED[index](image).enhance(torch.empty(()).uniform_(low, high).item())
    return image


@dataclass
class ProcessorTransform:
    """Evaluation preprocessing: the model's own image processor, one image at a time."""

    processor: object

    def __call__(self, image: PILImage.Image) -> torch.Tensor:
        return self.processor(to_rgb(image), return_tensors="pt")["pixel_values"][0]


class UnreadableImageError(UserError, OSError):
    """An image that cannot be decoded; its message names the file (or the dataset index) and the fix."""


def _where(value, index: int, split: str) -> str:
    path = value.get("path") if isinstance(value, dict) else value if isinstance(value, str) else None
    if path:
        return f"{path} (index {index} of the {split} set)"
    size = len(value["bytes"]) if isinstance(value, dict) and value.get("bytes") is not None else None
    return f"at index {index} of the {split} set" + (f" ({size} bytes, no file name)" if size is not None else "")


class ImageDecoder:
    """Decodes one stored image (path / bytes / PIL image) as the dataset's `Image` feature would, naming the file or
    index when it cannot; with `skip_bad_images`, logs each bad image once (per process) and returns None instead."""

    def __init__(self, feature, split: str, skip_bad_images: bool):
        self.feature = Image(mode=getattr(feature, "mode", None))
        self.split, self.skip_bad_images = split, skip_bad_images
        self._reported: set[int] = set()

    def __call__(self, value, index: int) -> PILImage.Image | None:
        """The decoded image, or None for a bad one when skipping."""
        try:
            return self.feature.decode_example(value)
        except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as error:
            where = _where(value, index, self.split)
            if not self.skip_bad_images:
                raise UnreadableImageError(
                    f"Cannot read the image {where}: {error}. Remove or replace the file, or skip unreadable images "
                    "(`skip_bad_images=True`, `--skip_bad_images`)."
                ) from error
            if index not in self._reported:
                self._reported.add(index)
                logger.warning(f"Skipping the unreadable image {where}: {error}")
            return None


def undecoded(dataset, image_column: str):
    """`dataset` with its image column left undecoded (so that bad files can be named), and that column's feature."""
    features = getattr(dataset, "features", None) or {}
    feature = features.get(image_column)
    if isinstance(feature, Image) and feature.decode:
        dataset = dataset.cast_column(image_column, Image(mode=feature.mode, decode=False))
    return dataset, feature


def _check_image_column(columns, image_column: str) -> None:
    if columns is not None and image_column not in columns:
        raise KeyError(f"No {image_column!r} column (columns: {', '.join(columns)}); set the image column name.")


class TransformedImages(TorchDataset):
    """`{"pixel_values": transform(image), "labels": label}` for each example of a map-style `dataset`, decoded and
    transformed on access (so in the data-loader workers, with fresh augmentation every epoch). An unreadable image
    raises `UnreadableImageError` naming its file and index; with `skip_bad_images` it is logged and replaced by the
    next readable image, so batches keep their size."""

    def __init__(self, dataset, transform, image_column: str = "image", label_column: str = "label",
                 skip_bad_images: bool = False, split: str = "training"):
        _check_image_column(dataset.column_names, image_column)
        self.dataset, feature = undecoded(dataset, image_column)
        self.transform, self.image_column, self.label_column = transform, image_column, label_column
        self.has_labels = label_column in dataset.column_names
        self.decode = ImageDecoder(feature, split, skip_bad_images)

    @property
    def column_names(self) -> list[str]:
        return ["pixel_values", "labels"] if self.has_labels else ["pixel_values"]

    def __len__(self) -> int:
        return len(self.dataset)

    def _example(self, image, row: dict) -> dict:
        example = {"pixel_values": self.transform(image)}
        if self.has_labels:
            example["labels"] = row[self.label_column]
        return example

    def _next_readable(self, index: int) -> dict:
        for offset in range(len(self)):
            position = (index + offset) % len(self)
            row = self.dataset[position]
            image = self.decode(row[self.image_column], position)
            if image is not None:
                return self._example(image, row)
        raise UnreadableImageError(f"None of the {len(self)} images of the {self.decode.split} set can be read.")

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not -len(self) <= index < len(self):  # also ends `for example in dataset` (the sequence protocol)
            raise IndexError(f"index {index} out of range for {len(self)} images")
        return self._next_readable(index % len(self))

    def __getitems__(self, indices: list[int]) -> list[dict]:
        batch = self.dataset[list(indices)]
        examples = []
        for position, index in enumerate(indices):
            row = {column: values[position] for column, values in batch.items()}
            image = self.decode(row[self.image_column], index)
            examples.append(self._next_readable(index + 1) if image is None else self._example(image, row))
        return examples


@dataclass
class _StreamedBatchTransform:
    transform: Callable[[PILImage.Image], torch.Tensor]
    image_column: str
    label_column: str
    decode: ImageDecoder

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        _check_image_column(list(batch), self.image_column)
        images = [self.decode(value, index) for value, index in zip(batch[self.image_column], indices)]
        keep = [i for i, image in enumerate(images) if image is not None]
        out = {"pixel_values": [self.transform(images[i]) for i in keep]}
        if self.label_column in batch:
            out["labels"] = [batch[self.label_column][i] for i in keep]
        return out


def with_image_transform(dataset, transform, image_column: str = "image", label_column: str = "label",
                         skip_bad_images: bool = False, split: str = "training"):
    """`dataset`'s examples as `{"pixel_values": transform(image), "labels": label}`, transformed on access (in the
    data-loader workers, with fresh augmentation every epoch). Batch them with transformers' `default_data_collator`.

    A map-style dataset gives a `TransformedImages`; a streamed one (`IterableDataset`) a mapped stream. An image that
    cannot be decoded raises `UnreadableImageError` naming its file (or its index in the `split` set); with
    `skip_bad_images` it is logged once and skipped: replaced by the next readable image in a map-style dataset,
    dropped from a stream."""
    if isinstance(dataset, IterableDataset):
        _check_image_column(dataset.column_names, image_column)
        stream, feature = undecoded(dataset, image_column)
        function = _StreamedBatchTransform(
            transform, image_column, label_column, ImageDecoder(feature, split, skip_bad_images)
        )
        return stream.map(function, batched=True, with_indices=True,
                          remove_columns=stream.column_names or [image_column, label_column])
    return TransformedImages(dataset, transform, image_column, label_column, skip_bad_images, split)


__all__ = [
    "ImageDecoder",
    "ProcessorTransform",
    "TrainTransform",
    "TransformedImages",
    "UnreadableImageError",
    "jitter_colors",
    "to_tensor",
    "undecoded",
    "with_image_transform",
]
