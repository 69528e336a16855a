"""Throughput of the per-image training pipeline on one CPU core: JPEG decode, random-resized crop, flip, then
RandAugment or nothing, to a normalised tensor — what each data-loader worker does per image.

The images are generated 500×375 JPEGs (ImageNet's typical size; a smooth random field with noise, quality 90),
decoded from bytes by the `datasets` Image feature as training decodes them. The variants run interleaved — every
round times each once over all images — in one process with one torch thread; the figures are medians over rounds.
A data loader with `W` workers feeding a GPU step of `R` img/s needs `R / W` img/s per worker (per core).

    python -m riformer_hf.benchmarks.data_pipeline                       # 64 images, 5 rounds, 224²
    python -m riformer_hf.benchmarks.data_pipeline --images 128 --rounds 7 --gpu_rate 10000 --workers 8
"""

import argparse
import io
import json
import statistics

import numpy as np
import torch
from datasets import Image
from PIL import Image as PILImage

from ..data.image_modes import to_rgb
from ..data.rand_augment import RandAugment, fill_from_mean
from ..data.transforms import TrainTransform
from ..timing import time_interleaved, torch_threads

RECIPE_POLICY = "rand-m9-mstd0.5-inc1"


def make_jpegs(count: int, size=(500, 375), quality: int = 90, seed: int = 0) -> list[bytes]:
    """`count` JPEG files (bytes) of `size` (width, height) with photo-like content: smooth colour fields and noise."""
    rng = np.random.default_rng(seed)
    jpegs = []
    for _ in range(count):
        coarse = PILImage.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, PILImage.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.float32) + rng.normal(0, 12, (size[1], size[0], 3))
        buffer = io.BytesIO()
        PILImage.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
        jpegs.append(buffer.getvalue())
    return jpegs


def pipelines(image_size: int = 224, policy: str = RECIPE_POLICY) -> dict:
    """The variants timed: decode only, decode + crop/flip, decode + crop/flip + RandAugment `policy`."""
    plain = TrainTransform(image_size)
    augmented = TrainTransform(image_size, rand_augment=RandAugment.from_string(policy, fill_from_mean(plain.mean)))
    return {"decode": lambda image: image, "crop_flip": plain, "crop_flip_randaugment": augmented}


def measure(images: int = 64, rounds: int = 5, image_size: int = 224, policy: str = RECIPE_POLICY,
            seed: int = 0) -> dict[str, float]:
    """Median images/s on one core of each variant of `pipelines`, timed interleaved over `rounds` (one warm-up)."""
    decoder = Image()

    def run(transform, jpegs):
        for data in jpegs:
            transform(to_rgb(decoder.decode_example({"bytes": data, "path": None})))

    with torch_threads(1):
        torch.manual_seed(seed)
        jpegs, variants = make_jpegs(images, seed=seed), pipelines(image_size, policy)
        workloads = {name: (lambda t=transform: run(t, jpegs)) for name, transform in variants.items()}
        seconds = time_interleaved(workloads, warmup=1, repeats=rounds)
    return {name: images / statistics.median(values) for name, values in seconds.items()}


def format_report(rates: dict[str, float], gpu_rate: float, workers: int) -> str:
    needed = gpu_rate / workers
    lines = [f"{'pipeline (one core)':<24} {'img/s':>8} {'ms/img':>8} {'vs needed':>10}"]
    for name, rate in rates.items():
        lines.append(f"{name:<24} {rate:8.1f} {1000 / rate:8.2f} {rate / needed:9.2f}x")
    lines.append(
        f"A {gpu_rate:,.0f} img/s GPU step fed by {workers} workers needs {needed:,.0f} img/s per worker (core); "
        f"with RandAugment one core gives {rates['crop_flip_randaugment']:,.0f}, so it takes "
        f"{gpu_rate / rates['crop_flip_randaugment']:.0f} cores."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m riformer_hf.benchmarks.data_pipeline",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="Generated 500×375 JPEGs per round.")
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved rounds (median reported).")
    parser.add_argument("--image_size", type=int, default=224, help="Training resolution.")
    parser.add_argument("--policy", default=RECIPE_POLICY, help="RandAugment policy string.")
    parser.add_argument("--gpu_rate", type=float, default=10_000, help="Images/s of the GPU training step to feed.")
    parser.add_argument("--workers", type=int, default=8, help="Data-loader workers (one core each).")
    parser.add_argument("--json", help="Also write the figures to this JSON file.")
    args = parser.parse_args(argv)
    if args.images < 1 or args.rounds < 1 or args.workers < 1 or args.gpu_rate <= 0:
        parser.error("--images, --rounds and --workers must be ≥ 1 and --gpu_rate > 0.")
    rates = measure(args.images, args.rounds, args.image_size, args.policy)
    print(format_report(rates, args.gpu_rate, args.workers))
    result = {"images_per_second_per_core": rates, "needed_per_worker": args.gpu_rate / args.workers,
              "settings": vars(args)}
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
