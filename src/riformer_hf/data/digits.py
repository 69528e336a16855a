"""The embedded default dataset: scikit-learn's bundled 8×8 digits, upsampled to RGB images (no network)."""

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage


def digits_dataset(image_size: int = 32, test_fraction: float = 0.25, seed: int = 0) -> DatasetDict:
    """`train` / `test` splits of the 1,797 digits as `image` (PIL RGB, `image_size`²) and `label` (0-9).

    The split is random but fixed by `seed`, so every run holds out the same images.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "The bundled digits come with scikit-learn: pip install 'riformer_hf[demo]' (or scikit-learn)."
        ) from error

    digits = load_digits()
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    images = [
        PILImage.fromarray(p, mode="L").resize((image_size, image_size), PILImage.BICUBIC).convert("RGB")
        for p in pixels
    ]
    labels = digits.target.astype(int).tolist()
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = round(len(images) * test_fraction)
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})

    def subset(indices):
        return Dataset.from_dict(
            {"image": [images[i] for i in indices], "label": [labels[i] for i in indices]}, features=features
        )

    return DatasetDict(train=subset(order[n_test:]), test=subset(order[:n_test]))


__all__ = ["digits_dataset"]
