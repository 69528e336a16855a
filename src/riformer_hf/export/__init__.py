"""Deployment: the re-parameterised export (in memory → folder), model cards, Hub pushes, the Trainer save hook."""

from .deploy import export_reparameterized, load_riformer
from .hub import HubPushError, push_model_folder, push_reparameterized
from .model_card import build_classifier_card, build_model_card
from .save_hook import ReparameterizedExportMixin

__all__ = [
    "HubPushError",
    "ReparameterizedExportMixin",
    "build_classifier_card",
    "build_model_card",
    "export_reparameterized",
    "load_riformer",
    "push_model_folder",
    "push_reparameterized",
]
