"""Accuracy metrics: top-1 / top-k hits, `accuracy_metrics` for `Trainer(compute_metrics=...)`, a percentile
bootstrap, the confusion matrix (and its plot), and the map between a dataset's classes and a model's."""

import re

import numpy as np

from ..errors import UserError

TOP_K = 5
UNNAMED_LABEL = re.compile(r"LABEL_\d+")
_SHOWN_NAMES = 8


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
        raise UserError(f"A bootstrap needs at least one resample and one image; got {resamples} and {len(correct)}.")
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
            raise UserError(
                f"The dataset has label {max_label} but the model predicts {len(model_names)} classes "
                f"({_describe(model_names)}): {fix}."
            )
        return None
    if len(data_names) != len(model_names):
        raise UserError(
            f"The model predicts {len(model_names)} classes ({_describe(model_names)}) but the dataset has "
            f"{len(data_names)} ({_describe(data_names)}): {fix}."
        )
    if not model_named:
        return None
    model_index = {name: i for i, name in enumerate(model_names)}
    missing = [name for name in data_names if name not in model_index]
    if missing:
        extra = [name for name in model_names if name not in set(data_names)]
        raise UserError(
            f"The dataset's classes ({_describe(data_names)}) are not the model's ({_describe(model_names)}): "
            f"{_describe(missing)} only in the dataset, {_describe(extra)} only in the model. Rename the classes "
            f"(folder names or config.json id2label) to match, or {fix}."
        )
    mapping = np.asarray([model_index[name] for name in data_names])
    return None if (mapping == np.arange(len(mapping))).all() else mapping


__all__ = [
    "accuracy_metrics",
    "bootstrap_interval",
    "confusion_matrix",
    "hits",
    "label_mapping",
    "plot_confusion_matrix",
    "top_k",
]
