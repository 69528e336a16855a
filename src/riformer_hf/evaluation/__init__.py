"""Evaluation: `metrics` (top-1 / top-k, bootstrap, confusion; the trainer's `accuracy_metrics`), `classifiers`
(PyTorch / ONNX Runtime behind one interface) and `run` (`riformer-eval`)."""

from .metrics import accuracy_metrics, bootstrap_interval, confusion_matrix, hits, label_mapping, top_k

__all__ = ["accuracy_metrics", "bootstrap_interval", "confusion_matrix", "hits", "label_mapping", "top_k"]
