"""Any PIL image as 8-bit RGB, with high-bit-depth samples scaled rather than clipped.

Pillow's own `convert("RGB")` reads 16-bit (`I;16*`, `I`) and float (`F`) samples on the 8-bit scale and clips
them, so a 16-bit PNG turns almost white. Here those modes are scaled by their nominal range: `I;16*` and `I` (the
32-bit container Pillow decodes 16-bit PNG and TIFF samples into) by 255 / 65535, `F` by 255 when its values lie in
[0, 1] and as 8-bit values otherwise; values beyond the range saturate. Every other mode (RGB, L, LA, P, PA, RGBA,
CMYK, YCbCr, 1, ...) goes through Pillow's conversion.
"""

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
SIXTEEN_BIT_MAX = 65535


def _scaled_to_8_bits(samples: np.ndarray, full_scale: float) -> Image.Image:
    values = np.clip(np.rint(samples.astype(np.float64) * (255.0 / full_scale)), 0, 255)
    return Image.fromarray(values.astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as an RGB image with 8 bits per channel (see the module docstring); RGB images are returned as they
    are."""
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        image = _scaled_to_8_bits(np.asarray(image), SIXTEEN_BIT_MAX)
    elif image.mode == "F":
        samples = np.asarray(image)
        finite = samples[np.isfinite(samples)]
        unit_range = finite.size == 0 or (finite.min() >= 0.0 and finite.max() <= 1.0)
        image = _scaled_to_8_bits(np.nan_to_num(samples), 1.0 if unit_range else 255.0)
    elif image.mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow's advice for palette images with a transparent colour
    return image.convert("RGB")


__all__ = ["SIXTEEN_BIT_MODES", "to_rgb"]
