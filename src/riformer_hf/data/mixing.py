"""Per-batch augmentation on the device: mixup / cutmix with soft, smoothed targets (their loss is
`distillation.losses.soft_target_cross_entropy`), and random erasing.

Semantics of the RIFormer (PoolFormer, timm) recipe:

- `BatchMixer`, "batch" mode: one λ per batch. With probability `prob` the batch is mixed, by cutmix with probability
  `switch_prob` (when both are on) else by mixup; λ ~ Beta(α, α) of the chosen method. Image i is mixed with image
  B − 1 − i (the batch flipped). Mixup blends whole images, λ·x + (1 − λ)·x_flip; cutmix pastes a box of side
  √(1 − λ)·(H, W) from x_flip, centred uniformly and clipped to the image, then sets λ = 1 − box area / image area.
  Targets are λ·y + (1 − λ)·y_flip of label-smoothed one-hot vectors (off-class ε/K, on-class 1 − ε + ε/K).
- `random_erase`: each image independently with probability `prob`, one box of area `area` (fractions of the image)
  and log-uniform aspect ratio `aspect`, filled with N(0, 1) pixels (the images are normalised); up to `attempts` draws
  for a box that fits, else the image is kept.

Random draws come from `generator` when given, else from torch's global RNG (seeded by `Trainer` and saved in its
checkpoints). Decisions and boxes are drawn on the CPU (no device synchronisation); erasing noise on the images' device.
"""

import math
from dataclasses import dataclass

import torch


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """(B,) class indices → (B, K) targets: 1 − ε + ε/K on the class, ε/K elsewhere."""
    off = smoothing / num_classes
    targets = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return targets.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off)


def _uniform(low: float, high: float, generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(high: int, generator) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (), generator=generator).item())


def _beta(alpha: float, generator) -> float:
    """Beta(α, α) from two Gamma(α) draws (`torch.distributions` takes no generator)."""
    a, b = torch._standard_gamma(torch.full((2,), float(alpha), dtype=torch.float64), generator=generator).tolist()
    return a / (a + b)


def cutmix_box(lam: float, height: int, width: int, generator=None) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a box of side √(1 − λ)·(H, W) centred uniformly on a pixel, clipped to the
    image."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = _randint(height, generator), _randint(width, generator)
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, width)
    return top, bottom, left, right


@dataclass
class MixDecision:
    """What `BatchMixer` did to one batch: `method` "mixup", "cutmix" or "none", the final λ, the cutmix box."""

    method: str
    lam: float
    box: tuple[int, int, int, int] | None = None


@dataclass
class BatchMixer:
    """Mixup / cutmix of a batch with smoothed soft targets (see the module docstring).

    Args:
        mixup_alpha: Beta(α, α) parameter of mixup; 0 turns mixup off.
        cutmix_alpha: Beta(α, α) parameter of cutmix; 0 turns cutmix off.
        prob: probability that a batch is mixed at all.
        switch_prob: probability of cutmix rather than mixup when both are on.
        label_smoothing: ε of the targets.
        num_classes: K.
    """

    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    prob: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1
    num_classes: int = 1000

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def decide(self, height: int, width: int, generator=None) -> MixDecision:
        """Draw this batch's method, λ and box."""
        if not self.enabled or torch.rand((), generator=generator).item() >= self.prob:
            return MixDecision("none", 1.0)
        use_cutmix = self.cutmix_alpha > 0 and (
            self.mixup_alpha <= 0 or torch.rand((), generator=generator).item() < self.switch_prob
        )
        if not use_cutmix:
            return MixDecision("mixup", _beta(self.mixup_alpha, generator))
        box = cutmix_box(_beta(self.cutmix_alpha, generator), height, width, generator)
        top, bottom, left, right = box
        return MixDecision("cutmix", 1.0 - (bottom - top) * (right - left) / (height * width), box)

    def apply(self, pixel_values: torch.Tensor, labels: torch.Tensor | None, decision: MixDecision,
              inplace: bool = False):
        """The mixed batch and its (B, K) soft targets (None without labels); `inplace` overwrites `pixel_values`."""
        mixed = pixel_values
        if decision.method == "mixup":
            partner = pixel_values.flip(0)
            mixed = mixed.mul_(decision.lam) if inplace else mixed * decision.lam
            mixed.add_(partner, alpha=1.0 - decision.lam)
        elif decision.method == "cutmix":
            top, bottom, left, right = decision.box
            mixed = mixed if inplace else mixed.clone()
            mixed[..., top:bottom, left:right] = pixel_values[..., top:bottom, left:right].flip(0)
        if labels is None:
            return mixed, None
        targets = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        if decision.method != "none":
            targets = targets * decision.lam + targets.flip(0) * (1.0 - decision.lam)
        return mixed, targets

    def __call__(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, generator=None,
                 inplace: bool = False):
        """Mix a (B, C, H, W) batch; returns (mixed images, soft targets or None, `MixDecision`)."""
        decision = self.decide(pixel_values.shape[-2], pixel_values.shape[-1], generator)
        mixed, targets = self.apply(pixel_values, labels, decision, inplace)
        return mixed, targets, decision


def erase_box(height: int, width: int, area=(0.02, 1 / 3), aspect=(0.3, 1 / 0.3), attempts: int = 10,
              generator=None) -> tuple[int, int, int, int] | None:
    """(top, left, h, w) of a random-erasing box, or None when no draw of `attempts` fits inside the image."""
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    for _ in range(attempts):
        target = _uniform(*area, generator) * height * width
        ratio = math.exp(_uniform(*log_aspect, generator))
        h, w = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < h < height and 0 < w < width:
            return _randint(height - h + 1, generator), _randint(width - w + 1, generator), h, w
    return None


def random_erase(pixel_values: torch.Tensor, prob: float = 0.25, area=(0.02, 1 / 3), aspect=(0.3, 1 / 0.3),
                 attempts: int = 10, generator=None, inplace: bool = False) -> tuple[torch.Tensor, list]:
    """Random erasing ("pixel" mode) of a normalised (B, C, H, W) batch, per image; returns (the erased batch, the box
    `(top, left, h, w)` or None of every image). `inplace` overwrites `pixel_values`, else a copy is erased."""
    out = pixel_values if inplace else pixel_values.clone()
    batch, channels, height, width = pixel_values.shape
    noise_device = generator.device if generator is not None else pixel_values.device
    boxes = []
    for i in range(batch):
        box = None
        if prob > 0 and torch.rand((), generator=generator).item() < prob:
            box = erase_box(height, width, area, aspect, attempts, generator)
        if box is not None:
            top, left, h, w = box
            noise = torch.randn((channels, h, w), generator=generator, device=noise_device)
            out[i, :, top:top + h, left:left + w] = noise.to(out.device, out.dtype)
        boxes.append(box)
    return out, boxes


__all__ = [
    "BatchMixer",
    "MixDecision",
    "cutmix_box",
    "erase_box",
    "random_erase",
    "smooth_one_hot",
]
