"""RandAugment (timm's policy strings on PIL images, torch RNG) and the colour jitter of TrainTransform."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from riformer_hf.data import (
    IMAGENET_MEAN,
    RandAugment,
    RandAugmentConfig,
    TrainTransform,
    fill_from_mean,
    parse_rand_augment,
    to_tensor,
)
from riformer_hf.data.rand_augment import (
    RAND_INCREASING_OPERATIONS,
    RAND_OPERATIONS,
    DrawnOperation,
    apply_operation,
    operation_argument,
)
from riformer_hf.data.transforms import jitter_colors

RECIPE = "rand-m9-mstd0.5-inc1"
SIGMAS = 5  # statistical tolerances: 5 standard errors of the sample statistic (false alarm < 1e-6 per check)


def noise_image(width=40, height=30, seed=0, low=0, high=256) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(low, high, (height, width, 3), dtype=np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.int64)


@pytest.fixture(scope="module")
def recipe_draws():
    augment = RandAugment.from_string(RECIPE)
    torch.manual_seed(0)
    return [augment.draw() for _ in range(6000)]


# ---- the policy string ----


def test_parse_reads_every_key_and_timm_defaults():
    assert parse_rand_augment(RECIPE) == RandAugmentConfig(magnitude=9, magnitude_std=0.5, increasing=True)
    assert parse_rand_augment("rand") == RandAugmentConfig(magnitude=10, num_ops=2, magnitude_std=0, prob=0.5)
    config = parse_rand_augment("rand-n3-m7.5-p0.8-mmax12-inc0-mstd101")
    assert (config.num_ops, config.magnitude, config.prob, config.magnitude_max) == (3, 7.5, 0.8, 12)
    assert not config.increasing and config.uniform_magnitude
    assert config.operations == RAND_OPERATIONS and parse_rand_augment(RECIPE).operations == RAND_INCREASING_OPERATIONS
    assert len(set(RAND_INCREASING_OPERATIONS)) == 15


@pytest.mark.parametrize(("spec", "named", "shows_format"), [
    ("rand-m9-foo", "cannot read 'foo'", True),
    ("bad", "'bad' must start with 'rand'", True),
    ("", "must start with 'rand'", True),
    ("rand-m", "cannot read 'm'", True),
    ("rand-m9-", "cannot read ''", True),
    ("rand-n2.5", "'n2.5' needs an integer", True),
    ("rand-m9.1.2", "'m9.1.2' needs a number", True),
    ("rand-inc2", "'inc2' must be inc0 or inc1", False),
    ("rand-p2", "prob (p) must be a probability in [0, 1]; got 2.0", False),
    ("rand-n0", "num_ops (n) must be an integer ≥ 1; got 0", False),
    ("rand-m9-m8", "sets 'm' twice", False),
])
def test_parse_errors_name_the_bad_part_and_the_format(spec, named, shows_format):
    with pytest.raises(ValueError) as error:
        parse_rand_augment(spec)
    message = str(error.value)
    assert named in message and f"{spec!r}" in message
    assert ("e.g. rand-m9-mstd0.5-inc1" in message) == shows_format
    with pytest.raises(ValueError):
        RandAugment.from_string(spec)


def test_fill_must_be_a_pixel_and_defaults_to_the_mean_colour():
    assert fill_from_mean(IMAGENET_MEAN) == (124, 116, 104)
    with pytest.raises(ValueError, match="three integers"):
        RandAugment.from_string(RECIPE, fill=(0.5, 0.5, 0.5))


# ---- the random choices, over many draws ----


def test_two_choices_per_image_uniform_over_15_with_replacement(recipe_draws):
    assert all(len(drawn) == 2 for drawn in recipe_draws)
    names = [op.name for drawn in recipe_draws for op in drawn]
    counts = Counter(names)
    assert set(counts) == set(RAND_INCREASING_OPERATIONS)
    expected = len(names) / 15
    chi2 = sum((counts[name] - expected) ** 2 / expected for name in RAND_INCREASING_OPERATIONS)
    assert chi2 < stats.chi2.ppf(1 - 1e-6, df=14)
    # with replacement: both choices are the same operation in 1/15 of the images (never, without replacement)
    same = np.mean([drawn[0].name == drawn[1].name for drawn in recipe_draws])
    assert abs(same - 1 / 15) < SIGMAS * math.sqrt((1 / 15) * (14 / 15) / len(recipe_draws))


def test_each_choice_applied_with_probability_p(recipe_draws):
    applied = np.array([op.applied for drawn in recipe_draws for op in drawn])
    assert abs(applied.mean() - 0.5) < SIGMAS * math.sqrt(0.25 / applied.size)
    first, second = (np.array([drawn[i].applied for drawn in recipe_draws]) for i in (0, 1))
    both = np.mean(first & second)  # independent choices: both applied in a quarter of the images
    assert abs(both - 0.25) < SIGMAS * math.sqrt(0.25 * 0.75 / first.size)
    augment = RandAugment.from_string("rand-m9-p0.2")
    torch.manual_seed(1)
    rare = np.array([op.applied for _ in range(3000) for op in augment.draw()])
    assert abs(rare.mean() - 0.2) < SIGMAS * math.sqrt(0.16 / rare.size)
    assert all(op.applied for _ in range(50) for op in RandAugment.from_string("rand-p1").draw())


def test_magnitudes_gaussian_around_m_clipped_at_10(recipe_draws):
    applied = [op for drawn in recipe_draws for op in drawn if op.applied]
    raw = np.array([op.raw_magnitude for op in applied])
    clipped = np.array([op.magnitude for op in applied])
    n = raw.size
    assert abs(raw.mean() - 9.0) < SIGMAS * 0.5 / math.sqrt(n)
    assert abs(raw.std(ddof=1) - 0.5) < SIGMAS * 0.5 / math.sqrt(2 * (n - 1))
    np.testing.assert_array_equal(clipped, np.clip(raw, 0, 10))
    above = np.mean(raw > 10)  # P(N(9, 0.5²) > 10) = P(Z > 2)
    p_above = stats.norm.sf(2.0)
    assert clipped.max() == 10.0 and abs(above - p_above) < SIGMAS * math.sqrt(p_above * (1 - p_above) / n)
    # one draw per application: the two operations of an image get different magnitudes
    pairs = [drawn for drawn in recipe_draws if drawn[0].applied and drawn[1].applied]
    assert np.mean([a.raw_magnitude != b.raw_magnitude for a, b in pairs]) == 1.0


def test_uniform_magnitudes_and_mmax():
    uniform = RandAugment.from_string("rand-m9-mstd101-p1")
    torch.manual_seed(2)
    raw = np.array([op.raw_magnitude for _ in range(3000) for op in uniform.draw()])
    assert raw.min() >= 0 and raw.max() <= 9
    assert abs(raw.mean() - 4.5) < SIGMAS * (9 / math.sqrt(12)) / math.sqrt(raw.size)
    high = RandAugment.from_string("rand-m11.5-mstd1-mmax12-p1")
    torch.manual_seed(3)
    magnitudes = [op.magnitude for _ in range(200) for op in high.draw()]
    assert max(magnitudes) == 12.0 and sum(m > 10 for m in magnitudes) > 200  # mmax moves the clip beyond 10
    with pytest.raises(ValueError, match=r"magnitude \(m\) must be at most mmax 12 .*got 15.0"):
        RandAugment.from_string("rand-m15-mstd1-mmax12-p1")  # would act as m12: refused, not clipped silently


def test_signs_and_resampling_are_fair_coins(recipe_draws):
    signed = [op for drawn in recipe_draws for op in drawn if op.applied and op.name in
              {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing", "ContrastIncreasing",
               "BrightnessIncreasing", "SharpnessIncreasing"}]
    negated = np.mean([op.negate for op in signed])
    assert abs(negated - 0.5) < SIGMAS * math.sqrt(0.25 / len(signed))
    geometric = [op for op in signed if op.resample is not None]
    assert {op.name for op in geometric} == {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
    bicubic = np.mean([op.resample == Image.Resampling.BICUBIC for op in geometric])
    assert abs(bicubic - 0.5) < SIGMAS * math.sqrt(0.25 / len(geometric))
    assert {op.resample for op in geometric} == {Image.Resampling.BILINEAR, Image.Resampling.BICUBIC}


def test_call_applies_what_it_draws_and_is_seeded():
    augment = RandAugment.from_string(RECIPE, fill=(10, 20, 30))
    image = noise_image()
    for seed in range(20):
        torch.manual_seed(seed)
        out = augment(image)
        torch.manual_seed(seed)
        drawn = augment.draw()
        assert np.array_equal(pixels(out), pixels(augment.apply(image, drawn)))
        if not any(op.applied for op in drawn):
            assert np.array_equal(pixels(out), pixels(image))
    torch.manual_seed(5)
    first = [pixels(augment(image)) for _ in range(8)]
    torch.manual_seed(5)
    again = [pixels(augment(image)) for _ in range(8)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert sum(not np.array_equal(first[0], other) for other in first[1:]) >= 4


# ---- each operation's argument and effect ----


def test_operation_arguments_scale_with_the_level():
    assert operation_argument("Rotate", 9) == pytest.approx(27.0)
    assert operation_argument("Rotate", 9, negate=True) == pytest.approx(-27.0)
    assert operation_argument("ShearX", 10) == pytest.approx(0.3)
    assert operation_argument("TranslateYRel", 5, negate=True) == pytest.approx(-0.225)
    assert [operation_argument("PosterizeIncreasing", m) for m in (0, 2.4, 5, 9, 10)] == [4, 4, 2, 1, 0]
    assert operation_argument("Posterize", 9) == 3
    assert operation_argument("SolarizeIncreasing", 9) == 256 - 230
    assert operation_argument("SolarizeIncreasing", 0) == 256  # nothing inverted at level 0
    assert operation_argument("SolarizeAdd", 9) == 99
    assert operation_argument("BrightnessIncreasing", 9) == pytest.approx(1.81)
    assert operation_argument("ContrastIncreasing", 9, negate=True) == pytest.approx(0.19)
    assert operation_argument("ColorIncreasing", 10, negate=True) == pytest.approx(0.1)
    assert operation_argument("Color", 5) == pytest.approx(1.0)
    assert operation_argument("Invert", 9) is None


def test_colour_operations_on_a_known_image():
    image = noise_image()
    x = pixels(image)
    assert np.array_equal(pixels(apply_operation(image, "Invert")), 255 - x)
    one_bit = apply_operation(image, "PosterizeIncreasing", operation_argument("PosterizeIncreasing", 9))
    assert np.array_equal(pixels(one_bit), x & 0b1000_0000)
    assert np.array_equal(pixels(apply_operation(image, "Posterize", 3)), x & 0b1110_0000)
    threshold = operation_argument("SolarizeIncreasing", 9)
    solarized = pixels(apply_operation(image, "SolarizeIncreasing", threshold))
    assert np.array_equal(solarized, np.where(x >= threshold, 255 - x, x))
    added = pixels(apply_operation(image, "SolarizeAdd", 99))
    assert np.array_equal(added, np.where(x < 128, np.minimum(x + 99, 255), x))
    narrow = noise_image(low=60, high=140)
    stretched = pixels(apply_operation(narrow, "AutoContrast"))
    low, high = pixels(narrow).min(axis=(0, 1)), pixels(narrow).max(axis=(0, 1))
    assert np.abs(stretched - (pixels(narrow) - low) * 255 / (high - low)).max() <= 1  # each channel to [0, 255]
    equalized = pixels(apply_operation(narrow, "Equalize"))
    assert equalized.max() >= 250 and equalized.min() <= 10  # the narrow histogram spread over the whole range
    order = np.argsort(pixels(narrow)[..., 0], axis=None)
    assert (np.diff(equalized[..., 0].ravel()[order]) >= 0).all()  # a monotone remapping of each channel
    brighter = pixels(apply_operation(image, "BrightnessIncreasing", 1.81))
    assert np.abs(brighter - np.clip(x * 1.81, 0, 255)).max() <= 1
    gray = pixels(image.convert("L"))[..., None]
    desaturated = pixels(apply_operation(image, "ColorIncreasing", 0.19))
    assert np.abs(desaturated - np.clip(gray + 0.19 * (x - gray), 0, 255)).max() <= 1.5
    mean = int(pixels(image.convert("L")).mean() + 0.5)
    flatter = pixels(apply_operation(image, "ContrastIncreasing", 0.19))
    assert np.abs(flatter - np.clip(mean + 0.19 * (x - mean), 0, 255)).max() <= 1.5
    inner = (slice(1, -1), slice(1, -1))
    smoothed = pixels(apply_operation(image, "SharpnessIncreasing", 0.1))[inner].std()
    sharpened = pixels(apply_operation(image, "SharpnessIncreasing", 1.81))[inner].std()
    assert smoothed < x[inner].std() < sharpened
    assert np.array_equal(pixels(apply_operation(image, "SharpnessIncreasing", 1.0)), x)


def test_geometric_operations_move_pixels_and_fill_with_the_mean_colour():
    fill = fill_from_mean(IMAGENET_MEAN)
    image = noise_image(40, 40)
    x = pixels(image)
    bilinear = Image.Resampling.BILINEAR
    # a translation by a whole number of pixels is exact even with bilinear resampling
    moved = pixels(apply_operation(image, "TranslateXRel", 0.25, bilinear, fill))
    assert np.array_equal(moved[:, :30], x[:, 10:]) and (moved[:, 30:] == fill).all()
    moved = pixels(apply_operation(image, "TranslateYRel", -0.25, bilinear, fill))
    assert np.array_equal(moved[10:], x[:30]) and (moved[:10] == fill).all()
    # shears: output (u, v) samples the input at (u + f·v, v) (x) or (u, v + f·u) (y), pixel centres, nearest
    nearest = Image.Resampling.NEAREST
    for name, axis in (("ShearX", 1), ("ShearY", 0)):
        sheared = pixels(apply_operation(image, name, 0.3, nearest, fill))
        v, u = np.mgrid[0:40, 0:40] if axis == 1 else np.mgrid[0:40, 0:40][::-1]
        source = np.floor(u + 0.5 + 0.3 * (v + 0.5)).astype(int)
        inside = source < 40
        rows, cols = (v, source) if axis == 1 else (source, v)
        expected = np.where(inside[..., None], x[np.where(inside, rows, 0), np.where(inside, cols, 0)], fill)
        assert np.array_equal(sheared, expected), name
    # rotation: counter-clockwise for positive degrees, corners filled, the centre kept
    assert np.array_equal(pixels(apply_operation(image, "Rotate", 90.0, bilinear, fill)), np.rot90(x))
    plain = Image.new("RGB", (40, 40), (200, 10, 50))
    rotated = pixels(apply_operation(plain, "Rotate", operation_argument("Rotate", 9), Image.Resampling.BICUBIC, fill))
    for corner in ((0, 0), (0, 39), (39, 0), (39, 39)):
        assert tuple(rotated[corner]) == fill
    assert tuple(rotated[20, 20]) == (200, 10, 50)


def test_recipe_policy_fills_geometric_operations_with_the_given_colour():
    augment = RandAugment.from_string("rand-m10-p1-n1", fill=(1, 2, 3))
    plain = Image.new("RGB", (32, 32), (200, 200, 200))
    torch.manual_seed(0)
    seen = set()
    for _ in range(150):
        drawn = augment.draw()
        out = pixels(augment.apply(plain, drawn))
        if drawn[0].name in {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}:
            seen.add(drawn[0].name)
            corners = [tuple(out[r, c]) for r in (0, 31) for c in (0, 31)]
            assert (1, 2, 3) in corners, drawn[0]
    assert len(seen) == 5


# ---- in TrainTransform ----


def test_train_transform_runs_rand_augment_after_crop_and_flip():
    augment = RandAugment.from_string(RECIPE, fill=fill_from_mean(IMAGENET_MEAN))
    transform = TrainTransform(24, scale=(0.3, 1.0), hflip=0.5, rand_augment=augment, interpolation="bicubic")
    image = noise_image(60, 45)
    for seed in range(6):
        torch.manual_seed(seed)
        out = transform(image)
        torch.manual_seed(seed)
        cropped = image.resize((24, 24), Image.BICUBIC, box=transform.crop_box(60, 45))
        if torch.rand(1).item() < 0.5:
            cropped = cropped.transpose(Image.FLIP_LEFT_RIGHT)
        assert torch.equal(out, to_tensor(augment(cropped), transform.mean, transform.std))
    # colour jitter is not used with RandAugment: same random numbers, same output
    jittered = TrainTransform(24, scale=(0.3, 1.0), hflip=0.5, rand_augment=augment, color_jitter=0.4,
                              interpolation="bicubic")
    torch.manual_seed(9)
    first = transform(image)
    torch.manual_seed(9)
    assert torch.equal(first, jittered(image))


def test_color_jitter_factors_are_uniform_in_range():
    transform = TrainTransform(8, scale=(1.0, 1.0), hflip=0.0, color_jitter=0.4, mean=(0, 0, 0), std=(1, 1, 1))
    gray = Image.new("RGB", (8, 8), (100, 100, 100))  # contrast and saturation leave a flat gray image alone
    torch.manual_seed(0)
    factors = np.array([transform(gray)[0, 0, 0].item() * 255 / 100 for _ in range(3000)])
    assert factors.min() >= 0.6 - 0.01 and factors.max() <= 1.4 + 0.01
    spread = 0.8 / math.sqrt(12)
    assert abs(factors.mean() - 1.0) < SIGMAS * spread / math.sqrt(factors.size)
    assert abs(factors.std() - spread) < 0.01
    # on a coloured image all three factors act, in a random order
    image = noise_image()
    torch.manual_seed(1)
    outputs = {pixels(jitter_colors(image, 0.4)).tobytes() for _ in range(5)}
    assert len(outputs) == 5
    with pytest.raises(ValueError, match="color_jitter"):
        TrainTransform(color_jitter=-0.1)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    TrainTransform(8, scale=(1.0, 1.0), hflip=0.0, color_jitter=0.0, interpolation="bicubic")(image)
    assert torch.equal(state, torch.get_rng_state())


def test_from_image_processor_takes_the_augmentation():
    from riformer_hf.data import make_image_processor

    processor = make_image_processor(32, 0.9)
    augment = RandAugment.from_string(RECIPE)
    transform = TrainTransform.from_image_processor(processor, rand_augment=augment, color_jitter=0.4, hflip=0.0)
    assert transform.rand_augment is augment and transform.color_jitter == 0.4
    assert transform(noise_image(50, 40)).shape == (3, 32, 32)


# ---- never raises: every operation, magnitude, sign and image mode ----

DATASET_MODES = ("RGB", "L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F")
ALL_OPERATIONS = sorted(set(RAND_OPERATIONS) | set(RAND_INCREASING_OPERATIONS))
# Every tenth of a magnitude in [0, 10] (the posterize, solarize and solarize-add arguments step at multiples of 2.5,
# 1/25.6 and 1/11 of the level), plus magnitudes a policy's `mmax` allows beyond 10.
GRID_MAGNITUDES = [m / 10 for m in range(101)] + [12.5, 20.0, 30.0]


def image_in_mode(mode: str, size=(12, 10), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, size[::-1], dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(0, 65536, size[::-1]).astype(np.int32))
    if mode == "F":
        return Image.fromarray(rng.random(size[::-1], dtype=np.float32))
    return noise_image(*size, seed=seed).convert(mode)


def test_every_operation_at_every_magnitude_sign_and_mode_gives_an_rgb_image():
    augment = RandAugment(RandAugmentConfig(magnitude_max=30.0), fill=(124, 116, 104))
    images = {mode: image_in_mode(mode) for mode in DATASET_MODES}
    applied = 0
    for name in ALL_OPERATIONS:
        for magnitude in GRID_MAGNITUDES:
            for negate in (False, True):
                for resample in (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC):
                    drawn = [DrawnOperation(name, True, magnitude, magnitude, negate, resample)]
                    for mode, image in images.items():
                        out = augment.apply(image, drawn)
                        assert (out.mode, out.size) == ("RGB", image.size), (name, magnitude, negate, mode)
                        applied += 1
    assert applied == len(ALL_OPERATIONS) * len(GRID_MAGNITUDES) * 2 * 2 * len(DATASET_MODES)


def test_posterize_with_no_bits_left_gives_black_as_the_reference_did():
    image = noise_image()
    x = pixels(image)
    for magnitude, bits in ((7.4, 2), (7.5, 1), (9.9, 1), (10.0, 0), (12.5, -1), (30.0, -8)):
        assert operation_argument("PosterizeIncreasing", magnitude) == bits
        out = pixels(apply_operation(image, "PosterizeIncreasing", bits))
        # The reference's Pillow kept `x & ~(2 ** (8 - bits) - 1)` for any bits < 8: 0 for bits ≤ 0.
        assert np.array_equal(out, x & ~(2 ** (8 - bits) - 1)), bits
    assert not pixels(apply_operation(image, "Posterize", 0)).any()
    assert np.array_equal(pixels(apply_operation(image, "Posterize", 8)), x)


@pytest.mark.parametrize("mode", DATASET_MODES)
def test_every_dataset_mode_reaches_the_model_as_rgb(mode):
    transform = TrainTransform(16, rand_augment=RandAugment.from_string("rand-m10-mstd0.5-inc1-p1"))
    torch.manual_seed(0)
    for seed in range(20):
        tensor = transform(image_in_mode(mode, seed=seed))
        assert tensor.shape == (3, 16, 16) and torch.isfinite(tensor).all()


def test_soak_20000_images_through_the_recipe_transform_never_raises():
    """The recipe's per-image pipeline (crop, flip, rand-m9-mstd0.5-inc1) over 20,000 seeded images of every mode.
    About 0.1 % of images draw PosterizeIncreasing at magnitude 10 (0 bits), which Pillow 13 refuses: the test
    counts them, so it cannot pass without meeting the case."""
    augment = RandAugment.from_string(RECIPE, fill=fill_from_mean(IMAGENET_MEAN))
    no_bits = 0

    class Counting(RandAugment):
        def draw(self):
            nonlocal no_bits
            drawn = super().draw()
            no_bits += sum(op.applied and op.name == "PosterizeIncreasing" and op.argument <= 0 for op in drawn)
            return drawn

    transform = TrainTransform(24, rand_augment=Counting(augment.config, augment.fill))
    sources = [image_in_mode(mode, size=(40, 30), seed=i) for i, mode in enumerate(DATASET_MODES)]
    torch.manual_seed(0)
    for index in range(20_000):
        tensor = transform(sources[index % len(sources)])
        assert tensor.shape == (3, 24, 24)
    assert no_bits >= 5  # expected ≈ 2 ops × 1/15 × p 0.5 × P(N(9, 0.5²) ≥ 10) × 20,000 ≈ 30


# ---- one interpolation policy for the crop and RandAugment's geometric operations ----

GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}


def crop_and_operation_filters(interpolation: str, images: int, monkeypatch) -> tuple[list, list]:
    """The resampling filter of every crop resize and of every applied geometric RandAugment operation."""
    crops, operations = [], []
    resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, size, resample=None, box=None, **kw: crops.append(
        resample) or resize(self, size, resample, box, **kw))

    class Recording(RandAugment):
        def draw(self):
            drawn = super().draw()
            operations.extend(op.resample for op in drawn if op.applied and op.name in GEOMETRIC)
            return drawn

    augment = Recording(parse_rand_augment("rand-m9-n2-p1-inc1"), interpolation=interpolation)
    transform = TrainTransform(16, scale=(0.3, 1.0), rand_augment=augment, interpolation=interpolation)
    torch.manual_seed(0)
    source = noise_image(30, 20)
    for _ in range(images):
        transform(source)
    return crops, operations


@pytest.mark.parametrize("interpolation,expected", [("bilinear", Image.Resampling.BILINEAR),
                                                    ("bicubic", Image.Resampling.BICUBIC)])
def test_a_fixed_interpolation_resamples_the_crop_and_every_geometric_operation(interpolation, expected, monkeypatch):
    crops, operations = crop_and_operation_filters(interpolation, 300, monkeypatch)
    assert len(crops) == 300 and len(operations) > 100
    assert set(crops) == set(operations) == {expected}


def test_random_interpolation_draws_bilinear_or_bicubic_evenly_for_both(monkeypatch):
    crops, operations = crop_and_operation_filters("random", 2000, monkeypatch)
    for filters in (crops, operations):
        assert set(filters) == {Image.Resampling.BILINEAR, Image.Resampling.BICUBIC}
        share = sum(f == Image.Resampling.BICUBIC for f in filters) / len(filters)
        assert abs(share - 0.5) <= SIGMAS * math.sqrt(0.25 / len(filters)), share
    with pytest.raises(ValueError, match="interpolation 'nearest'"):
        TrainTransform(interpolation="nearest")
