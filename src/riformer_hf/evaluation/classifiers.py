"""Classifiers behind one interface for evaluation: `logits = classifier(pixel_values)` with the model's own image
processor (`classifier.processor`) and labels (`classifier.id2label`); a model folder or Hub id runs in eager PyTorch
(`TorchClassifier`), an exported `.onnx` file (or its folder) in ONNX Runtime (`OnnxClassifier`)."""

from pathlib import Path

import numpy as np
import torch

from ..data import load_image_processor, processor_spec
from ..errors import MissingInputError, UserError
from ..loading import exported_graphs, load_pretrained

ONNX_FILE = "model.onnx"


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
        from ..export.onnx import ort_session

        try:
            self.session = ort_session(path, threads)
        except ImportError as error:
            raise UserError(f"Evaluating {path} needs ONNX Runtime: pip install 'riformer_hf[onnx]'.") from error
        except Exception as error:  # onnxruntime's load errors derive from Exception only
            raise UserError(
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
        raise MissingInputError(
            f"{where} has no image processor (preprocessor_config.json): save the model's processor beside it "
            "(processor.save_pretrained) so that evaluation preprocesses as the model was trained."
        )
    return processor


def _load_onnx(path: Path, threads: int | None) -> OnnxClassifier:
    config_file = path.parent / "config.json"
    if not config_file.is_file():
        raise MissingInputError(
            f"No config.json beside {path}: save the model's config (its labels) in the same folder "
            "(model.config.save_pretrained)."
        )
    from transformers import PretrainedConfig

    try:  # the generic config: its id2label, or transformers' default labels when the file leaves them out
        id2label = PretrainedConfig.from_pretrained(path.parent).id2label
    except (OSError, ValueError) as error:
        reason = " ".join(str(error).split())
        raise UserError(f"{config_file} cannot be read ({reason}): save the exported model's config beside it.") \
            from None
    processor = _processor_or_error(path.parent, f"The folder of {path}")
    classifier = OnnxClassifier(path, processor, {int(i): name for i, name in id2label.items()}, threads)
    spec = processor_spec(processor)
    expected = (spec.height, spec.width)
    if all(isinstance(d, int) for d in classifier.input_size) and classifier.input_size != expected:
        raise UserError(
            f"{path} takes {classifier.input_size[0]}×{classifier.input_size[1]} images but its image processor "
            f"gives {expected[0]}×{expected[1]}: export with dynamic spatial axes, or save the matching processor."
        )
    return classifier


def load_classifier(name_or_path: str, device: str = "cpu", threads: int | None = None):
    """A `TorchClassifier` for a model folder or Hub id, an `OnnxClassifier` for an `.onnx` file or an ONNX export
    folder; either carries the model's saved image processor and labels."""
    from transformers import AutoModelForImageClassification

    path = Path(name_or_path).expanduser()
    if path.suffix == ".onnx" or path.is_file():
        if not path.is_file():
            raise MissingInputError(f"--model_name_or_path {name_or_path}: no such ONNX file.")
        return _load_onnx(path, threads)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MissingInputError(
                f"{name_or_path} has no config.json: give a folder written by save_pretrained (either RIFormer form, "
                "GFNet, PoolFormer, ...), a Hub id or an .onnx file."
            )
        if ONNX_FILE in exported_graphs(path) and not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            return _load_onnx(path / ONNX_FILE, threads)
        model = load_pretrained(AutoModelForImageClassification, path)
        return TorchClassifier(model, _processor_or_error(path, name_or_path), device)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1:
        raise MissingInputError(
            f"--model_name_or_path {name_or_path}: no such folder or .onnx file (and not a Hub id `owner/name`)."
        )
    try:
        model = AutoModelForImageClassification.from_pretrained(name_or_path)
    except OSError as error:
        raise MissingInputError(
            f"--model_name_or_path {name_or_path} is no local folder and could not be loaded from the Hub "
            f"({str(error).splitlines()[0]}): check the id, the network or HF_HUB_OFFLINE."
        ) from error
    return TorchClassifier(model, _processor_or_error(name_or_path, name_or_path), device)


__all__ = ["OnnxClassifier", "TorchClassifier", "load_classifier"]
