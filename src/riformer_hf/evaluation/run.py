"""`riformer-eval`: top-1 / top-k accuracy of an image classifier on a labelled split, through its saved preprocessing.

The model is a folder or Hub id that `AutoModelForImageClassification` loads (RIFormer in either form, GFNet,
PoolFormer, ...), an exported `.onnx` file (or its folder) run with ONNX Runtime or an OpenVINO IR `.xml` (or its
folder) run with OpenVINO, whose `config.json` (labels) and `preprocessor_config.json` lie beside it. `--dtype bf16`
runs PyTorch models in bf16 and OpenVINO IR with bf16 inference precision. The images come from a local image
folder, a Hub dataset or the bundled digits, and are preprocessed by the model's own image processor. The dataset's
classes must be the model's (matched by name when both have names, else by index). Top-k is top-min(5, classes); a
percentile bootstrap over the images gives confidence intervals.
"""

import argparse
import importlib.util
import json
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..data import processor_spec
from ..data.datasets import (
    ImageSource,
    class_names,
    describe_split,
    eval_split_name,
    load_image_splits,
    resolve_split,
)
from ..data.image_modes import to_rgb
from ..data.transforms import ImageDecoder, undecoded
from ..errors import UserError
from ..safety import check_output_file, staged_file, write_file
from .classifiers import DTYPES, load_classifier
from .metrics import bootstrap_interval, confusion_matrix, hits, label_mapping, plot_confusion_matrix, top_k


def load_split(source: ImageSource, split: str | None = None, image_size: int = 32):
    """One labelled split (a `datasets.Dataset`) of `source`, its name and its description in the user's words (the
    folder it came from: a `val/` folder is not "split train"). `split` may name a split or a split folder (`val`).
    Without it: the only split, else validation / valid / val / test (the digits: their held-out `test`)."""
    data = load_image_splits(source, digits_image_size=image_size)
    if split is not None:
        split = resolve_split(data, split, source, "--split")
    else:
        split = "test" if source.is_digits else eval_split_name(data)
    if split is None:
        raise UserError(f"The {source.describe()} has splits {', '.join(data)}: choose one with --split.")
    return data[split], split, describe_split(source, split)


def dataset_labels(dataset, label_column: str) -> tuple[list[str] | None, np.ndarray]:
    """The class names of the label column (None when it holds plain integers) and every image's label."""
    if label_column not in dataset.column_names:
        raise UserError(
            f"The dataset has no {label_column!r} column (columns: {', '.join(dataset.column_names)}); set "
            "--label_column."
        )
    labels = np.asarray(dataset[label_column], dtype=np.int64)
    if (labels < 0).any():
        raise UserError(
            f"{int((labels < 0).sum())} images of the split have no label (label -1): evaluate a labelled split "
            "(--split validation)."
        )
    return class_names(dataset, label_column), labels


# ---- evaluation ----


@dataclass
class EvaluationResult:
    """Accuracies are fractions; intervals are (low, high) at `confidence`, or None without a bootstrap."""

    model: str
    runtime: str
    dataset: str
    images: int
    classes: int
    k: int
    top1: float
    topk: float
    seconds: float
    images_per_second: float
    top1_interval: tuple[float, float] | None = None
    topk_interval: tuple[float, float] | None = None
    bootstrap: dict | None = None
    per_class: dict[str, dict] | None = None
    confusion_matrix: list[list[int]] | None = None
    class_names: list[str] = field(default_factory=list)
    skipped: int = 0  # unreadable images left out (`skip_bad_images`)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        skipped = f" ({self.skipped} unreadable skipped)" if self.skipped else ""
        lines = [f"{self.model}: {self.dataset}, {self.images} images{skipped}, {self.classes} classes"]
        for name, value, interval in (("top-1", self.top1, self.top1_interval),
                                      (f"top-{self.k}", self.topk, self.topk_interval)):
            ci = ""
            if interval is not None:
                ci = (f"  ({100 * self.bootstrap['confidence']:.0f}% CI {100 * interval[0]:.2f}–"
                      f"{100 * interval[1]:.2f}, {self.bootstrap['resamples']} bootstrap resamples)")
            lines.append(f"{name:<7}{100 * value:6.2f}%{ci}")
        lines.append(f"{self.images_per_second:.0f} img/s end to end ({self.seconds:.1f}s, {self.runtime})")
        for name, entry in (self.per_class or {}).items():
            accuracy = "n/a" if entry["accuracy"] is None else f"{100 * entry['accuracy']:6.2f}%"
            lines.append(f"  {name:<24}{accuracy:>8}  of {entry['images']}")
        return "\n".join(lines)


def evaluate_classifier(classifier, dataset, *, batch_size: int = 64, image_column: str = "image",
                        label_column: str = "label", bootstrap: int = 0, seed: int = 0, per_class: bool = False,
                        with_confusion: bool = False, progress: bool = False, name: str = "model",
                        description: str = "dataset", split: str = "evaluation",
                        skip_bad_images: bool = False) -> EvaluationResult:
    """Top-1 / top-k of `classifier` on `dataset`, preprocessed by the classifier's image processor in batches. An
    image that cannot be decoded raises `UnreadableImageError` naming its file (or its index in the `split` set); with
    `skip_bad_images` it is logged once and left out of every figure (`skipped` counts them)."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise UserError(f"--batch_size must be positive; got {batch_size}.")
    if image_column not in dataset.column_names:
        raise UserError(
            f"The dataset has no {image_column!r} column (columns: {', '.join(dataset.column_names)}); set "
            "--image_column."
        )
    if len(dataset) == 0:
        raise UserError(f"The {description} has no images.")
    model_names = [classifier.id2label[i] for i in range(len(classifier.id2label))]
    data_names, labels = dataset_labels(dataset, label_column)
    mapping = label_mapping(model_names, data_names, int(labels.max()))
    if mapping is not None:
        labels = mapping[labels]
    batch_size = classifier.batch_size or batch_size
    stored, feature = undecoded(dataset.select_columns([image_column]), image_column)
    decode = ImageDecoder(feature, split, skip_bad_images)
    logits, kept = [], []
    start = time.perf_counter()
    with tqdm(total=len(dataset), unit="img", disable=not progress, desc="evaluating") as bar:
        for first in range(0, len(dataset), batch_size):
            values = stored[first:first + batch_size][image_column]
            decoded = [(first + i, decode(value, first + i)) for i, value in enumerate(values)]
            batch = [to_rgb(image) for _, image in decoded if image is not None]
            kept += [index for index, image in decoded if image is not None]
            if batch:  # one call per batch (3× faster than image by image, same output): the processor as it is
                logits.append(classifier(classifier.processor(batch, return_tensors="pt")["pixel_values"]))
            bar.update(len(values))
    seconds = time.perf_counter() - start
    if not kept:
        raise UserError(f"None of the {len(dataset)} images of the {description} can be read.")
    logits, labels = np.concatenate(logits), labels[kept]
    if logits.shape[-1] != len(model_names):
        raise UserError(f"{name} returns {logits.shape[-1]} logits but its config names {len(model_names)} classes.")
    k = top_k(len(model_names))
    correct = hits(logits, labels, k)
    top1, topk = correct.mean(0)
    result = EvaluationResult(
        model=name, runtime=classifier.runtime, dataset=description, images=len(labels), classes=len(model_names),
        k=k, top1=float(top1), topk=float(topk), seconds=seconds, images_per_second=len(labels) / seconds,
        class_names=model_names, skipped=len(dataset) - len(kept),
    )
    if bootstrap:
        low_high = bootstrap_interval(correct, bootstrap, seed)
        result.top1_interval, result.topk_interval = (tuple(map(float, row)) for row in low_high)
        result.bootstrap = {"resamples": bootstrap, "seed": seed, "confidence": 0.95, "method": "percentile"}
    matrix = confusion_matrix(labels, logits.argmax(-1), len(model_names))
    if per_class:
        counts = matrix.sum(axis=1)
        result.per_class = {
            name: {"accuracy": float(matrix[i, i] / counts[i]) if counts[i] else None, "images": int(counts[i])}
            for i, name in enumerate(model_names)
        }
    if with_confusion:
        result.confusion_matrix = matrix.tolist()
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="riformer-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_name_or_path", required=True,
                        help="model folder (either RIFormer form, GFNet, PoolFormer, ...), Hub id, .onnx file, "
                        "OpenVINO IR .xml or an export folder")
    data = parser.add_argument_group("data (exactly one of --data_dir, --dataset_name, --digits)")
    data.add_argument("--data_dir", default=None, help="local image folder: one sub-folder per class")
    data.add_argument("--dataset_name", default=None, help="a dataset on the Hub")
    data.add_argument("--dataset_config", default=None, help="configuration of the Hub dataset")
    data.add_argument("--digits", action="store_true",
                      help="the bundled scikit-learn digits (held-out split), rendered at the processor's size")
    data.add_argument("--split", default=None,
                      help="a split, or a split folder of --data_dir (val); default: the only split, else "
                      "validation/val/test")
    data.add_argument("--image_column", default="image")
    data.add_argument("--label_column", default="label")
    data.add_argument("--max_samples", type=int, default=None, help="evaluate the first N images only")
    data.add_argument("--skip_bad_images", action="store_true",
                      help="log and leave out images that cannot be decoded instead of stopping with an error naming "
                      "the file")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch, ONNX Runtime, OpenVINO)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                        help="bf16: PyTorch weights and inputs in bf16, OpenVINO with bf16 inference precision (CPUs "
                        "with AVX512-BF16 or AMX)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="N bootstrap resamples of the images for 95%% percentile intervals (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--per_class", action="store_true", help="report the top-1 accuracy of every class")
    parser.add_argument("--confusion_matrix", default=None, metavar="PATH",
                        help="write the confusion matrix PNG (needs matplotlib: pip install 'riformer_hf[plot]')")
    parser.add_argument("--output_json", default=None, metavar="PATH", help="write the results as JSON")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar (also off when not a TTY)")
    return parser.parse_args(argv)


def main(argv=None) -> EvaluationResult:
    args = parse_args(argv)
    if args.bootstrap < 0 or (args.max_samples is not None and args.max_samples < 1):
        raise UserError("--bootstrap must be ≥ 0 and --max_samples ≥ 1.")
    if args.confusion_matrix and importlib.util.find_spec("matplotlib") is None:
        raise UserError("--confusion_matrix needs matplotlib: pip install 'riformer_hf[plot]'.")
    output_json = check_output_file(args.output_json, "--output_json",
                                    others=[("--confusion_matrix", args.confusion_matrix)])
    plot = check_output_file(args.confusion_matrix, "--confusion_matrix", suffixes=(".png",))
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress and sys.stderr.isatty()
    if not progress:
        from transformers.utils.logging import disable_progress_bar

        disable_progress_bar()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if sum(map(bool, (args.data_dir, args.dataset_name, args.digits))) != 1:
        raise UserError("Give exactly one of --data_dir (an image folder), --dataset_name (a Hub dataset), --digits.")
    classifier = load_classifier(args.model_name_or_path, device, args.threads, args.dtype)
    source = ImageSource(args.data_dir, args.dataset_name, args.dataset_config)
    dataset, split, description = load_split(source, args.split, processor_spec(classifier.processor).image_size)
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    result = evaluate_classifier(
        classifier, dataset, batch_size=args.batch_size, image_column=args.image_column,
        label_column=args.label_column, bootstrap=args.bootstrap, seed=args.seed, per_class=args.per_class,
        with_confusion=plot is not None, progress=progress,
        name=f"{args.model_name_or_path} ({classifier.description})", description=description,
        split=split, skip_bad_images=args.skip_bad_images,
    )
    print(result.summary())
    if plot is not None:
        with staged_file(plot) as temporary:
            plot_confusion_matrix(np.asarray(result.confusion_matrix), result.class_names, temporary)
        print(f"confusion matrix → {plot}")
    if output_json is not None:
        write_file(output_json, json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"results → {output_json}")
    return result


__all__ = ["EvaluationResult", "dataset_labels", "evaluate_classifier", "load_split", "main"]
