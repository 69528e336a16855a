"""RandAugment on PIL images, configured by timm's policy strings (`rand-m9-mstd0.5-inc1`).

Each image gets `n` operations drawn uniformly with replacement from a 15-operation set; each is applied with
probability `p`, at a magnitude drawn per application (Gaussian noise of std `mstd` around `m`, or uniform in [0, m]
when `mstd` > 100) and clipped to [0, `mmax`]. The operation's argument scales with the level `magnitude / 10`.
Every random number comes from torch's global RNG, so Trainer's seed and the data-loader's worker seeds apply.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image, ImageEnhance, ImageOps

from ..errors import UserError
from .image_modes import to_rgb

LEVEL_DENOMINATOR = 10.0
DEFAULT_FILL = (128, 128, 128)
UNIFORM_MAGNITUDE_STD = 100.0  # an mstd above this draws magnitudes uniformly in [0, m]

SPEC_FORMAT = (
    "rand-<key><value>-…, keys: m (magnitude, default 10), n (operations per image, default 2), mstd (std of the "
    "magnitude noise, default 0; above 100: uniform in [0, m]), mmax (upper clip of the magnitude, default 10), inc "
    "(0 or 1: the 'increasing' operation set), p (probability of applying each operation, default 0.5); "
    "e.g. rand-m9-mstd0.5-inc1"
)

_RESAMPLE_CHOICES = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)
# timm's `--train-interpolation` names: "random" draws bilinear or bicubic per use, the others fix one.
INTERPOLATIONS = {"random": None, "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def choose_resample(interpolation: str) -> int:
    """The PIL filter for one use under `interpolation` (a draw from torch's RNG for "random")."""
    fixed = INTERPOLATIONS[interpolation]
    return fixed if fixed is not None else _RESAMPLE_CHOICES[int(torch.rand(()).item() < 0.5)]


def _affine(image, matrix, resample, fill):
    return image.transform(image.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=fill)


def _solarize_add(image, add, *_):
    lut = [min(255, i + add) if i < 128 else i for i in range(256)]
    return image.point(lut * len(image.getbands()))


def _posterize(image, bits, *_):
    """Keep the top `bits` bits of every channel. No bits left (PosterizeIncreasing at level 1 and beyond) gives a
    black image, as the reference's Pillow did (its mask `~(2 ** (8 - bits) - 1)` clears every bit); Pillow 13
    refuses `bits` < 1."""
    if bits >= 8:
        return image
    if bits <= 0:
        return Image.new(image.mode, image.size)
    return ImageOps.posterize(image, bits)


def _enhance(enhancer) -> Callable:
    return lambda image, factor, *_: enhancer(image).enhance(factor)


@dataclass(frozen=True)
class _Operation:
    apply: Callable  # (image, argument, resample, fill) -> image
    argument: Callable[[float], float] | None = None  # level -> argument (its magnitude, before the sign)
    signed: bool = False  # the argument's sign is drawn at random
    geometric: bool = False  # resamples the image (random bilinear/bicubic) and fills the uncovered area
    around_one: bool = False  # the argument is the factor max(0.1, 1 ± value)


_OPERATIONS = {
    "AutoContrast": _Operation(lambda image, *_: ImageOps.autocontrast(image)),
    "Equalize": _Operation(lambda image, *_: ImageOps.equalize(image)),
    "Invert": _Operation(lambda image, *_: ImageOps.invert(image)),
    "Rotate": _Operation(
        lambda image, degrees, resample, fill: image.rotate(degrees, resample=resample, fillcolor=fill),
        lambda level: 30.0 * level, signed=True, geometric=True,
    ),
    "Posterize": _Operation(_posterize, lambda level: int(level * 4)),
    "PosterizeIncreasing": _Operation(_posterize, lambda level: 4 - int(level * 4)),
    "Solarize": _Operation(lambda image, threshold, *_: ImageOps.solarize(image, threshold),
                           lambda level: int(level * 256)),
    "SolarizeIncreasing": _Operation(lambda image, threshold, *_: ImageOps.solarize(image, threshold),
                                     lambda level: 256 - int(level * 256)),
    "SolarizeAdd": _Operation(_solarize_add, lambda level: int(level * 110)),
    "ShearX": _Operation(lambda image, f, resample, fill: _affine(image, (1, f, 0, 0, 1, 0), resample, fill),
                         lambda level: 0.3 * level, signed=True, geometric=True),
    "ShearY": _Operation(lambda image, f, resample, fill: _affine(image, (1, 0, 0, f, 1, 0), resample, fill),
                         lambda level: 0.3 * level, signed=True, geometric=True),
    "TranslateXRel": _Operation(
        lambda image, f, resample, fill: _affine(image, (1, 0, f * image.width, 0, 1, 0), resample, fill),
        lambda level: 0.45 * level, signed=True, geometric=True,
    ),
    "TranslateYRel": _Operation(
        lambda image, f, resample, fill: _affine(image, (1, 0, 0, 0, 1, f * image.height), resample, fill),
        lambda level: 0.45 * level, signed=True, geometric=True,
    ),
}
for _name, _enhancer in (("Color", ImageEnhance.Color), ("Contrast", ImageEnhance.Contrast),
                         ("Brightness", ImageEnhance.Brightness), ("Sharpness", ImageEnhance.Sharpness)):
    # The plain form blends from 0.1 to 1.9 as the level grows; the increasing form moves away from 1 either way.
    _OPERATIONS[_name] = _Operation(_enhance(_enhancer), lambda level: 1.8 * level + 0.1)
    _OPERATIONS[f"{_name}Increasing"] = _Operation(
        _enhance(_enhancer), lambda level: 0.9 * level, signed=True, around_one=True
    )
del _name, _enhancer

RAND_OPERATIONS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color", "Contrast",
    "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)
RAND_INCREASING_OPERATIONS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)


def operation_argument(name: str, magnitude: float, negate: bool = False) -> float | None:
    """The argument operation `name` takes at `magnitude` (level = magnitude / 10), negated if `negate` and the
    operation is signed; None for the operations without one (AutoContrast, Equalize, Invert)."""
    operation = _OPERATIONS[name]
    if operation.argument is None:
        return None
    value = operation.argument(magnitude / LEVEL_DENOMINATOR)
    if operation.signed:
        value = -value if negate else value
    if operation.around_one:
        value = max(0.1, 1.0 + value)
    return value


def apply_operation(image: Image.Image, name: str, argument=None, resample=Image.Resampling.BILINEAR,
                    fill=DEFAULT_FILL) -> Image.Image:
    """Operation `name` on `image` with `argument` (see `operation_argument`); geometric operations resample with
    `resample` and fill the area they uncover with `fill`."""
    return _OPERATIONS[name].apply(image, argument, resample, tuple(fill))


@dataclass(frozen=True)
class RandAugmentConfig:
    """A RandAugment policy: `num_ops` operations per image from the plain or `increasing` set, each applied with
    probability `prob`, at magnitude N(`magnitude`, `magnitude_std`²) (uniform in [0, magnitude] for an std above
    100) clipped to [0, `magnitude_max`]."""

    magnitude: float = 10.0
    num_ops: int = 2
    magnitude_std: float = 0.0
    magnitude_max: float = LEVEL_DENOMINATOR
    increasing: bool = False
    prob: float = 0.5

    def __post_init__(self):
        checks = (
            ("magnitude", "m", self.magnitude >= 0, "a number ≥ 0"),
            ("num_ops", "n", isinstance(self.num_ops, int) and self.num_ops >= 1, "an integer ≥ 1"),
            ("magnitude_std", "mstd", self.magnitude_std >= 0, "a number ≥ 0"),
            ("magnitude_max", "mmax", self.magnitude_max > 0, "a number > 0"),
            ("prob", "p", 0 <= self.prob <= 1, "a probability in [0, 1]"),
            ("magnitude", "m", self.magnitude <= self.magnitude_max,
             (f"at most mmax {self.magnitude_max:g} (magnitudes are clipped to [0, mmax], so it would act as "
              f"m{self.magnitude_max:g}); lower m, or raise mmax")),
        )
        for field, key, ok, expected in checks:
            if not ok:
                raise UserError(f"RandAugment {field} ({key}) must be {expected}; got {getattr(self, field)!r}.")

    @property
    def operations(self) -> tuple[str, ...]:
        return RAND_INCREASING_OPERATIONS if self.increasing else RAND_OPERATIONS

    @property
    def uniform_magnitude(self) -> bool:
        return self.magnitude_std > UNIFORM_MAGNITUDE_STD


_SPEC_KEYS = {
    "m": ("magnitude", float),
    "n": ("num_ops", int),
    "mstd": ("magnitude_std", float),
    "mmax": ("magnitude_max", float),
    "inc": ("increasing", int),
    "p": ("prob", float),
}


def parse_rand_augment(spec: str) -> RandAugmentConfig:
    """The `RandAugmentConfig` of a timm-style policy string such as `rand-m9-mstd0.5-inc1`."""
    parts = str(spec).strip().split("-")
    if parts[0] != "rand":
        raise UserError(f"RandAugment policy {spec!r} must start with 'rand'; the format is {SPEC_FORMAT}.")
    values = {}
    for part in parts[1:]:
        match = re.fullmatch(r"([a-z]+)([0-9][0-9.]*)", part)
        if match is None or match.group(1) not in _SPEC_KEYS:
            raise UserError(f"RandAugment policy {spec!r}: cannot read {part!r}; the format is {SPEC_FORMAT}.")
        key, text = match.groups()
        field, kind = _SPEC_KEYS[key]
        if field in values:
            raise UserError(f"RandAugment policy {spec!r} sets {key!r} twice; give each key once.")
        try:
            value = kind(text)
        except ValueError:
            raise UserError(
                f"RandAugment policy {spec!r}: {part!r} needs {'an integer' if kind is int else 'a number'} after "
                f"{key!r}; the format is {SPEC_FORMAT}."
            ) from None
        if key == "inc":
            if value not in (0, 1):
                raise UserError(f"RandAugment policy {spec!r}: {part!r} must be inc0 or inc1.")
            value = bool(value)
        values[field] = value
    try:
        return RandAugmentConfig(**values)
    except UserError as error:
        raise UserError(f"RandAugment policy {spec!r}: {error}") from None


@dataclass(frozen=True)
class DrawnOperation:
    """One of the operations drawn for an image: whether it is applied, and if so its magnitude before and after
    clipping, the sign of its argument and, for geometric operations, the resampling filter."""

    name: str
    applied: bool
    raw_magnitude: float | None = None
    magnitude: float | None = None
    negate: bool = False
    resample: int | None = None

    @property
    def argument(self) -> float | None:
        return None if not self.applied else operation_argument(self.name, self.magnitude, self.negate)


def _uniform() -> float:
    return torch.rand(()).item()


@dataclass(frozen=True)
class RandAugment:
    """RandAugment on PIL images (converted to RGB by `to_rgb`); geometric operations fill with `fill` (the mean
    pixel, round(255 · mean)) and resample with `interpolation` ("random": bilinear or bicubic, drawn per operation)."""

    config: RandAugmentConfig = RandAugmentConfig()
    fill: tuple[int, int, int] = DEFAULT_FILL
    interpolation: str = "random"

    def __post_init__(self):
        fill = tuple(self.fill)
        if len(fill) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in fill):
            raise UserError(f"RandAugment fill must be three integers in [0, 255] (an RGB pixel); got {self.fill!r}.")
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(f"interpolation {self.interpolation!r}: choose one of {', '.join(INTERPOLATIONS)}.")
        object.__setattr__(self, "fill", fill)

    @classmethod
    def from_string(cls, spec: str, fill=DEFAULT_FILL, interpolation: str = "random") -> "RandAugment":
        """RandAugment for a timm-style policy string, e.g. `RandAugment.from_string("rand-m9-mstd0.5-inc1")`."""
        return cls(parse_rand_augment(spec), fill, interpolation)

    def draw(self) -> list[DrawnOperation]:
        """The random choices for one image, in the order they are applied."""
        config, operations = self.config, self.config.operations
        drawn = []
        for index in torch.randint(len(operations), (config.num_ops,)).tolist():
            name = operations[index]
            if config.prob < 1 and _uniform() >= config.prob:
                drawn.append(DrawnOperation(name, applied=False))
                continue
            if config.uniform_magnitude:
                raw = config.magnitude * _uniform()
            elif config.magnitude_std > 0:
                raw = config.magnitude + config.magnitude_std * torch.randn(()).item()
            else:
                raw = config.magnitude
            operation = _OPERATIONS[name]
            negate = operation.signed and _uniform() < 0.5
            resample = choose_resample(self.interpolation) if operation.geometric else None
            magnitude = min(max(raw, 0.0), config.magnitude_max)
            drawn.append(DrawnOperation(name, True, raw, magnitude, negate, resample))
        return drawn

    def apply(self, image: Image.Image, drawn: list[DrawnOperation]) -> Image.Image:
        """`image` (any mode, converted by `to_rgb`) with the `drawn` operations applied in order."""
        image = to_rgb(image)
        for operation in drawn:
            if operation.applied:
                image = apply_operation(image, operation.name, operation.argument, operation.resample, self.fill)
        return image

    def __call__(self, image: Image.Image) -> Image.Image:
        return self.apply(image, self.draw())


def fill_from_mean(mean) -> tuple[int, int, int]:
    """The fill pixel of the geometric operations for normalisation mean `mean` (fractions of 1): round(255 · mean)."""
    return tuple(min(255, max(0, round(255 * float(m)))) for m in mean)


__all__ = [
    "INTERPOLATIONS",
    "RAND_INCREASING_OPERATIONS",
    "RAND_OPERATIONS",
    "DrawnOperation",
    "RandAugment",
    "RandAugmentConfig",
    "apply_operation",
    "choose_resample",
    "fill_from_mean",
    "operation_argument",
    "parse_rand_augment",
]
