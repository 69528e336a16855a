"""The embedded default dataset (scikit-learn's bundled 8×8 digits, upsampled to RGB images, no network), and image
transforms and a collator for training without torchvision."""

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage


def digits_dataset(image_size: int = 32, test_fraction: float = 0.25, seed: int = 0) -> DatasetDict:
    """`train` / `test` splits of the 1,797 digits as `image` (PIL RGB, `image_size`²) and `label` (0-9).

    The split is random but fixed by `seed`, so every run holds out the same images.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    images = [
        PILImage.fromarray(p, mode="L").resize((image_size, image_size), PILImage.BICUBIC).convert("RGB")
        for p in pixels
    ]
    labels = digits.target.astype(int).tolist()
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = int(round(len(images) * test_fraction))
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})

    def subset(indices):
        return Dataset.from_dict(
            {"image": [images[i] for i in indices], "label": [labels[i] for i in indices]}, features=features
        )

    return DatasetDict(train=subset(order[n_test:]), test=subset(order[:n_test]))


# ---- Image transforms without torchvision, and the collator ----

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_tensor(image: PILImage.Image, mean, std) -> torch.Tensor:
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
        return _to_tensor(image, self.mean, self.std)


@dataclass
class EvalTransform:
    """Evaluation preprocessing, pixel for pixel that of the `PoolFormerImageProcessorPil` saved with RIFormer models:
    bicubic resize of the short side to `int(image_size / crop_pct)`, centre crop `image_size`², normalisation."""

    image_size: int = 224
    crop_pct: float = 0.9
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __call__(self, image: PILImage.Image) -> torch.Tensor:
        image = image.convert("RGB")
        width, height = image.size
        short = int(self.image_size / self.crop_pct)
        scale = short / min(width, height)
        width, height = max(short, int(width * scale)), max(short, int(height * scale))
        image = image.resize((width, height), PILImage.BICUBIC)
        left, top = (width - self.image_size) // 2, (height - self.image_size) // 2
        image = image.crop((left, top, left + self.image_size, top + self.image_size))
        return _to_tensor(image, self.mean, self.std)


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
    access (so in the data-loader workers, with fresh augmentation every epoch). Train with
    `remove_unused_columns=False` so that Trainer hands the images to the transform."""
    return dataset.with_transform(_BatchTransform(transform, image_column, label_column))


def collate_images(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack `pixel_values` and `labels` (when present) of transformed examples into a batch."""
    batch = {"pixel_values": torch.stack([example["pixel_values"] for example in examples])}
    if "labels" in examples[0]:
        batch["labels"] = torch.tensor([int(example["labels"]) for example in examples], dtype=torch.long)
    return batch
