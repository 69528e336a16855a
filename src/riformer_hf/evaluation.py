"""`riformer-eval`: top-1 / top-k accuracy of an image classifier on a labelled split, through its saved preprocessing.

The model is a folder or Hub id that `AutoModelForImageClassification` loads (RIFormer in either form, GFNet,
PoolFormer, ...) or an `.onnx` file run with ONNX Runtime, whose `config.json` (labels) and
`preprocessor_config.json` lie beside it. The images come from a local image folder, a Hub dataset or the bundled
digits, and are preprocessed by the model's own image processor. The dataset's classes must be the model's (matched
by name when both have names, else by index). Top-k is top-min(5, classes); a percentile bootstrap over the images
gives confidence intervals.
"""

import argparse
import importlib.util
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data import digits_dataset, load_image_processor, processor_spec
from .data.image_modes import to_rgb

TOP_K = 5
EVAL_SPLITS = ("validation", "valid", "val", "test")
UNNAMED_LABEL = re.compile(r"LABEL_\d+")
_SHOWN_NAMES = 8


# ---- metrics ----


def top_k(num_classes: int) -> int:
    """The k of top-k accuracy: 5, or every class when there are fewer."""
    return min(TOP_K, num_classes)


def hits(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(n, 2) booleans: is the true class the top prediction, is it among the top `k`. Ties go to the lower class
    index, as in `argmax`; NaN logits rank last."""
    order = np.argsort(-np.asarray(logits, dtype=np.float64), axis=-1, kind="stable")[:, :k]
    in_top = order == np.asarray(labels)[:, None]
    return np.stack([in_top[:, 0], in_top.any(-1)], axis=1)


def accuracy_metrics(eval_pred) -> dict[str, float]:
    """`accuracy` (top-1) and `topK_accuracy` (K = min(5, classes)), for `Trainer(compute_metrics=...)`."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    logits = logits[0] if isinstance(logits, tuple) else logits
    k = top_k(logits.shape[-1])
    top1, topk = hits(logits, labels, k).mean(0)
    return {"accuracy": float(top1), f"top{k}_accuracy": float(topk)}


def bootstrap_interval(correct: np.ndarray, resamples: int, seed: int = 0, confidence: float = 0.95) -> np.ndarray:
    """Percentile bootstrap interval of the mean of each column of `correct` (n images × m metrics): the images are
    resampled with replacement `resamples` times (the same draws for every column). Returns (m, 2) low / high."""
    correct = np.asarray(correct, dtype=np.float64).reshape(len(correct), -1)
    if resamples < 1 or len(correct) == 0:
        raise ValueError(f"A bootstrap needs at least one resample and one image; got {resamples} and {len(correct)}.")
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // len(correct))  # bounds the index array at ~16 MB
    means = []
    for start in range(0, resamples, chunk):
        draws = rng.integers(0, len(correct), size=(min(chunk, resamples - start), len(correct)))
        means.append(correct[draws].mean(axis=1))
    tail = 100 * (1 - confidence) / 2
    return np.percentile(np.concatenate(means), [tail, 100 - tail], axis=0).T


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with the true class in rows and the predicted class in columns."""
    flat = np.asarray(labels) * num_classes + np.asarray(predictions)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def plot_confusion_matrix(matrix: np.ndarray, names: list[str], path) -> None:
    """The confusion matrix, normalised per true class, as a PNG (matplotlib's Agg backend, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.35 * len(names), 24)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    if len(names) <= 40:
        ax.set_xticks(range(len(names)), names, rotation=90)
        ax.set_yticks(range(len(names)), names)
    if len(names) <= 20:
        for (row, column), count in np.ndenumerate(matrix):
            if count:
                ax.text(column, row, str(count), ha="center", va="center", fontsize=8,
                        color="white" if rates[row, column] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


# ---- labels ----


def _describe(names) -> str:
    shown = ", ".join(names[:_SHOWN_NAMES])
    return shown + (f", … ({len(names)} in all)" if len(names) > _SHOWN_NAMES else "")


def label_mapping(model_names: list[str], data_names: list[str] | None, max_label: int) -> np.ndarray | None:
    """The model's class index of each dataset class (None: the same indices), or a ValueError naming both label
    sets. Names are compared when both sides have real ones (`LABEL_i` counts as unnamed); otherwise the dataset's
    labels must be indices into the model's classes."""
    model_named = not all(UNNAMED_LABEL.fullmatch(name) for name in model_names)
    fix = "evaluate on a split with the model's classes, or fine-tune the model on this dataset (riformer-train)"
    if data_names is None:
        if max_label >= len(model_names):
            raise ValueError(
                f"The dataset has label {max_label} but the model predicts {len(model_names)} classes "
                f"({_describe(model_names)}): {fix}."
            )
        return None
    if len(data_names) != len(model_names):
        raise ValueError(
            f"The model predicts {len(model_names)} classes ({_describe(model_names)}) but the dataset has "
            f"{len(data_names)} ({_describe(data_names)}): {fix}."
        )
    if not model_named:
        return None
    model_index = {name: i for i, name in enumerate(model_names)}
    missing = [name for name in data_names if name not in model_index]
    if missing:
        extra = [name for name in model_names if name not in set(data_names)]
        raise ValueError(
            f"The dataset's classes ({_describe(data_names)}) are not the model's ({_describe(model_names)}): "
            f"{_describe(missing)} only in the dataset, {_describe(extra)} only in the model. Rename the classes "
            f"(folder names or config.json id2label) to match, or {fix}."
        )
    mapping = np.asarray([model_index[name] for name in data_names])
    return None if (mapping == np.arange(len(mapping))).all() else mapping


# ---- models ----


class TorchClassifier:
    """A transformers image classifier in eager PyTorch."""

    runtime = "pytorch"

    def __init__(self, model, processor, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.id2label = {int(i): name for i, name in model.config.id2label.items()}
        self.batch_size = None

    @property
    def description(self) -> str:
        reparameterized = getattr(self.model.config, "reparameterized", None)  # RIFormer only
        form = "" if reparameterized is None else (", deploy form" if reparameterized else ", training form")
        return f"{type(self.model).__name__}{form}, eager PyTorch on {self.device}"

    @torch.inference_mode()
    def __call__(self, pixel_values: torch.Tensor) -> np.ndarray:
        return self.model(pixel_values=pixel_values.to(self.device)).logits.float().cpu().numpy()


class OnnxClassifier:
    """An ONNX image classifier in ONNX Runtime; `pixel_values` in, logits out."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, processor, id2label: dict[int, str], threads: int | None = None):
        try:
            import onnxruntime
        except ImportError as error:
            raise ValueError(f"Evaluating {path} needs ONNX Runtime: pip install onnxruntime.") from error

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's load errors derive from Exception only
            raise ValueError(
                f"{path} is not a loadable ONNX model ({str(error).splitlines()[0]}): re-export it (riformer-export)."
            ) from error
        (model_input,) = self.session.get_inputs()
        self.input_name = model_input.name
        self.batch_size = model_input.shape[0] if isinstance(model_input.shape[0], int) else None
        self.input_size = tuple(model_input.shape[2:])
        self.processor = processor
        self.id2label = id2label
        self.path = path

    @property
    def description(self) -> str:
        return f"ONNX ({self.path.name}), ONNX Runtime on CPU"

    def __call__(self, pixel_values: torch.Tensor) -> np.ndarray:
        array = pixel_values.numpy()
        if self.batch_size is not None and len(array) < self.batch_size:  # a fixed batch: pad the last one
            array = np.concatenate([array, np.zeros((self.batch_size - len(array), *array.shape[1:]), array.dtype)])
        return self.session.run(None, {self.input_name: array})[0][: len(pixel_values)]


def _processor_or_error(source, where: str):
    processor = load_image_processor(source)
    if processor is None:
        raise FileNotFoundError(
            f"{where} has no image processor (preprocessor_config.json): save the model's processor beside it "
            "(processor.save_pretrained) so that evaluation preprocesses as the model was trained."
        )
    return processor


def _load_onnx(path: Path, threads: int | None) -> OnnxClassifier:
    config_file = path.parent / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"No config.json beside {path}: save the model's config (its labels) in the same folder "
            "(model.config.save_pretrained)."
        )
    id2label = json.loads(config_file.read_text()).get("id2label")
    if not id2label:
        raise ValueError(f"{config_file} has no id2label: save the config of the exported model beside {path.name}.")
    processor = _processor_or_error(path.parent, f"The folder of {path}")
    classifier = OnnxClassifier(path, processor, {int(i): name for i, name in id2label.items()}, threads)
    spec = processor_spec(processor)
    expected = (spec.height, spec.width)
    if all(isinstance(d, int) for d in classifier.input_size) and classifier.input_size != expected:
        raise ValueError(
            f"{path} takes {classifier.input_size[0]}×{classifier.input_size[1]} images but its image processor "
            f"gives {expected[0]}×{expected[1]}: export with dynamic spatial axes, or save the matching processor."
        )
    return classifier


def load_classifier(name_or_path: str, device: str = "cpu", threads: int | None = None):
    """A `TorchClassifier` for a model folder or Hub id, an `OnnxClassifier` for an `.onnx` file; either carries
    the model's saved image processor and labels."""
    from transformers import AutoModelForImageClassification

    path = Path(name_or_path).expanduser()
    if path.suffix == ".onnx" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"--model_name_or_path {name_or_path}: no such ONNX file.")
        return _load_onnx(path, threads)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{name_or_path} has no config.json: give a folder written by save_pretrained (either RIFormer form, "
                "GFNet, PoolFormer, ...), a Hub id or an .onnx file."
            )
        model = AutoModelForImageClassification.from_pretrained(path)
        return TorchClassifier(model, _processor_or_error(path, name_or_path), device)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise FileNotFoundError(
            f"--model_name_or_path {name_or_path}: no such folder or .onnx file (and not a Hub id `owner/name`)."
        )
    try:
        model = AutoModelForImageClassification.from_pretrained(name_or_path)
    except OSError as error:
        raise OSError(
            f"--model_name_or_path {name_or_path} is no local folder and could not be loaded from the Hub "
            f"({str(error).splitlines()[0]}): check the id, the network or HF_HUB_OFFLINE."
        ) from error
    return TorchClassifier(model, _processor_or_error(name_or_path, name_or_path), device)


# ---- data ----


def load_split(*, data_dir=None, dataset_name=None, dataset_config=None, split=None, digits=False, image_size=32):
    """One labelled split (a `datasets.Dataset`) and its description: a local image folder, a Hub dataset or the
    digits (rendered at `image_size`²). Without `split`: the only split, else validation / val / test."""
    from datasets import load_dataset

    if sum(map(bool, (data_dir, dataset_name, digits))) != 1:
        raise ValueError("Give exactly one of --data_dir (an image folder), --dataset_name (a Hub dataset), --digits.")
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise FileNotFoundError(
                f"--data_dir {data_dir} is not a folder: give a folder with one sub-folder of images per class "
                "(optionally under train/, validation/ or test/)."
            )
        data, source = load_dataset("imagefolder", data_dir=str(data_dir)), f"image folder {data_dir}"
    elif dataset_name is not None:
        data, source = load_dataset(dataset_name, dataset_config), f"Hub dataset {dataset_name}"
    else:
        data, source = digits_dataset(image_size=image_size), "bundled digits"
        split = split or "test"
    if split is None:
        candidates = list(data) if len(data) == 1 else [s for s in EVAL_SPLITS if s in data]
        if not candidates:
            raise ValueError(f"The dataset has splits {', '.join(data)}: choose one with --split.")
        split = candidates[0]
    if split not in data:
        raise ValueError(f"No split {split!r} in the {source}; it has {', '.join(data)}: pass one with --split.")
    return data[split], f"{source}, split {split}"


def dataset_labels(dataset, label_column: str) -> tuple[list[str] | None, np.ndarray]:
    """The class names of the label column (None when it holds plain integers) and every image's label."""
    from datasets import ClassLabel

    if label_column not in dataset.column_names:
        raise ValueError(
            f"The dataset has no {label_column!r} column (columns: {', '.join(dataset.column_names)}); set "
            "--label_column."
        )
    labels = np.asarray(dataset[label_column], dtype=np.int64)
    if (labels < 0).any():
        raise ValueError(
            f"{int((labels < 0).sum())} images of the split have no label (label -1): evaluate a labelled split "
            "(--split validation)."
        )
    feature = dataset.features[label_column]
    return (list(feature.names) if isinstance(feature, ClassLabel) else None), labels


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

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        lines = [f"{self.model}: {self.dataset}, {self.images} images, {self.classes} classes"]
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
                        description: str = "dataset") -> EvaluationResult:
    """Top-1 / top-k of `classifier` on `dataset`, preprocessed by the classifier's image processor in batches."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"--batch_size must be positive; got {batch_size}.")
    if image_column not in dataset.column_names:
        raise ValueError(
            f"The dataset has no {image_column!r} column (columns: {', '.join(dataset.column_names)}); set "
            "--image_column."
        )
    if len(dataset) == 0:
        raise ValueError(f"The {description} has no images.")
    model_names = [classifier.id2label[i] for i in range(len(classifier.id2label))]
    data_names, labels = dataset_labels(dataset, label_column)
    mapping = label_mapping(model_names, data_names, int(labels.max()))
    if mapping is not None:
        labels = mapping[labels]
    batch_size = classifier.batch_size or batch_size
    images = dataset.select_columns([image_column])
    logits = []
    start = time.perf_counter()
    with tqdm(total=len(dataset), unit="img", disable=not progress, desc="evaluating") as bar:
        for first in range(0, len(dataset), batch_size):
            batch = [to_rgb(image) for image in images[first:first + batch_size][image_column]]
            # One call per batch (3× faster than image by image, same output): the saved processor as it is.
            logits.append(classifier(classifier.processor(batch, return_tensors="pt")["pixel_values"]))
            bar.update(len(batch))
    seconds = time.perf_counter() - start
    logits = np.concatenate(logits)
    if logits.shape[-1] != len(model_names):
        raise ValueError(f"{name} returns {logits.shape[-1]} logits but its config names {len(model_names)} classes.")
    k = top_k(len(model_names))
    correct = hits(logits, labels, k)
    top1, topk = correct.mean(0)
    result = EvaluationResult(
        model=name, runtime=classifier.runtime, dataset=description, images=len(labels), classes=len(model_names),
        k=k, top1=float(top1), topk=float(topk), seconds=seconds, images_per_second=len(labels) / seconds,
        class_names=model_names,
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


def _writable_file(path: str | None, flag: str) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a folder: give a file name.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="riformer-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_name_or_path", required=True,
                        help="model folder (either RIFormer form, GFNet, PoolFormer, ...), Hub id or .onnx file")
    data = parser.add_argument_group("data (exactly one of --data_dir, --dataset_name, --digits)")
    data.add_argument("--data_dir", default=None, help="local image folder: one sub-folder per class")
    data.add_argument("--dataset_name", default=None, help="a dataset on the Hub")
    data.add_argument("--dataset_config", default=None, help="configuration of the Hub dataset")
    data.add_argument("--digits", action="store_true",
                      help="the bundled scikit-learn digits (held-out split), rendered at the processor's size")
    data.add_argument("--split", default=None, help="default: the only split, else validation/val/test")
    data.add_argument("--image_column", default="image")
    data.add_argument("--label_column", default="label")
    data.add_argument("--max_samples", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch and ONNX Runtime)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="N bootstrap resamples of the images for 95%% percentile intervals (0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--per_class", action="store_true", help="report the top-1 accuracy of every class")
    parser.add_argument("--confusion_matrix", default=None, metavar="PATH", help="write the confusion matrix PNG")
    parser.add_argument("--output_json", default=None, metavar="PATH", help="write the results as JSON")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar (also off when not a TTY)")
    return parser.parse_args(argv)


def main(argv=None) -> EvaluationResult:
    args = parse_args(argv)
    if args.bootstrap < 0 or (args.max_samples is not None and args.max_samples < 1):
        raise ValueError("--bootstrap must be ≥ 0 and --max_samples ≥ 1.")
    if args.confusion_matrix and importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--confusion_matrix needs matplotlib: pip install matplotlib (or riformer_hf[dev]).")
    output_json = _writable_file(args.output_json, "--output_json")
    plot = _writable_file(args.confusion_matrix, "--confusion_matrix")
    if args.threads:
        torch.set_num_threads(args.threads)
    progress = not args.no_progress and sys.stderr.isatty()
    if not progress:
        from transformers.utils.logging import disable_progress_bar

        disable_progress_bar()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    classifier = load_classifier(args.model_name_or_path, device, args.threads)
    dataset, description = load_split(
        data_dir=args.data_dir, dataset_name=args.dataset_name, dataset_config=args.dataset_config, split=args.split,
        digits=args.digits, image_size=processor_spec(classifier.processor).image_size if args.digits else 32,
    )
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    result = evaluate_classifier(
        classifier, dataset, batch_size=args.batch_size, image_column=args.image_column,
        label_column=args.label_column, bootstrap=args.bootstrap, seed=args.seed, per_class=args.per_class,
        with_confusion=plot is not None, progress=progress,
        name=f"{args.model_name_or_path} ({classifier.description})", description=description,
    )
    print(result.summary())
    if plot is not None:
        plot_confusion_matrix(np.asarray(result.confusion_matrix), result.class_names, plot)
        print(f"confusion matrix → {plot}")
    if output_json is not None:
        output_json.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        print(f"results → {output_json}")
    return result


__all__ = [
    "EvaluationResult",
    "OnnxClassifier",
    "TorchClassifier",
    "accuracy_metrics",
    "bootstrap_interval",
    "confusion_matrix",
    "dataset_labels",
    "evaluate_classifier",
    "hits",
    "label_mapping",
    "load_classifier",
    "load_split",
    "main",
    "plot_confusion_matrix",
    "top_k",
]
