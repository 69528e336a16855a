"""Classifiers behind one interface for evaluation: `logits = classifier(pixel_values)` with the model's own image
processor (`classifier.processor`) and labels (`classifier.id2label`); a model folder or Hub id runs in eager PyTorch
(`TorchClassifier`, fp32 or bf16), an exported `.onnx` file (or its folder) in ONNX Runtime (`OnnxClassifier`), an
OpenVINO IR `.xml` in OpenVINO (`OpenVINOClassifier`, fp32 or bf16 inference precision)."""

from pathlib import Path

import numpy as np
import torch

from ..data import load_image_processor, processor_spec
from ..errors import MissingInputError, UserError
from ..loading import WEIGHT_FILES, exported_graphs, load_pretrained

ONNX_FILE = "model.onnx"
IR_FILE = "openvino_model.xml"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX); without them torch emulates bf16, slower than
    fp32."""
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def check_dtype(dtype: str, device: str = "cpu") -> None:
    """A `UserError` for an unknown dtype, or bf16 on a CPU without bf16 instructions."""
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype}: choose one of {', '.join(DTYPES)}.")
    if dtype == "bf16" and str(device).startswith("cpu") and not cpu_has_bf16():
        raise UserError("--dtype bf16: this CPU has no bf16 instructions (AVX512-BF16 or AMX), so bf16 would be "
                        "emulated and slower than fp32; evaluate with --dtype fp32.")


class TorchClassifier:
    """A transformers image classifier in eager PyTorch, in fp32 or bf16 (weights and inputs cast)."""

    runtime = "pytorch"

    def __init__(self, model, processor, device: str = "cpu", dtype: str = "fp32"):
        self.dtype = dtype
        self.model = model.to(device, DTYPES[dtype]).eval()
        self.processor = processor
        self.device = device
        self.id2label = {int(i): name for i, name in model.config.id2label.items()}
        self.batch_size = None

    @property
    def description(self) -> str:
        reparameterized = getattr(self.model.config, "reparameterized", None)  # RIFormer only
        form = "" if reparameterized is None else (", deploy form" if reparameterized else ", training form")
        return f"{type(self.model).__name__}{form}, eager PyTorch on {self.device}, {self.dtype}"

    @torch.inference_mode()
    def __call__(self, pixel_values: torch.Tensor) -> np.ndarray:
        pixel_values = pixel_values.to(self.device, DTYPES[self.dtype])
        return self.model(pixel_values=pixel_values).logits.float().cpu().numpy()


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


class OpenVINOClassifier:
    """An OpenVINO IR image classifier on the CPU, in fp32 or bf16 inference precision (an INT8 IR runs its
    quantised operators in int8 either way); `pixel_values` in, logits out."""

    runtime = "openvino"

    def __init__(self, path: Path, processor, id2label: dict[int, str], threads: int | None = None,
                 dtype: str = "fp32"):
        from ..export.openvino import IRRunner, compile_ir, read_ir

        model = read_ir(path)
        shape = model.inputs[0].get_partial_shape()
        self.batch_size = shape[0].get_length() if shape[0].is_static else None
        self.input_size = tuple(d.get_length() if d.is_static else None for d in shape)[2:]
        self.runner = IRRunner(compile_ir(model, dtype, threads))
        self.processor = processor
        self.id2label = id2label
        self.path = path
        self.dtype = dtype

    @property
    def description(self) -> str:
        return f"OpenVINO IR ({self.path.name}), OpenVINO on CPU, {self.dtype} inference precision"

    def __call__(self, pixel_values: torch.Tensor) -> np.ndarray:
        array = pixel_values.float().numpy()
        if self.batch_size is not None and len(array) < self.batch_size:  # a fixed batch: pad the last one
            array = np.concatenate([array, np.zeros((self.batch_size - len(array), *array.shape[1:]), array.dtype)])
        return self.runner(array)[: len(pixel_values)]


def _processor_or_error(source, where: str):
    processor = load_image_processor(source)
    if processor is None:
        raise MissingInputError(
            f"{where} has no image processor (preprocessor_config.json): save the model's processor beside it "
            "(processor.save_pretrained) so that evaluation preprocesses as the model was trained."
        )
    return processor


def _exported_labels(path: Path) -> dict[int, str]:
    """The labels of the `config.json` beside an exported graph."""
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
    return {int(i): name for i, name in id2label.items()}


def _load_exported(path: Path, threads: int | None, dtype: str = "fp32"):
    """The classifier of an exported graph (`.onnx` or OpenVINO `.xml`) with the labels and image processor saved
    beside it; a fixed input size must be the processor's."""
    if path.suffix == ".xml":
        from ..export.openvino import check_ir_files

        check_ir_files(path)  # the .xml and its .bin first: the likeliest mistake
    id2label = _exported_labels(path)
    processor = _processor_or_error(path.parent, f"The folder of {path}")
    if path.suffix == ".xml":
        classifier = OpenVINOClassifier(path, processor, id2label, threads, dtype)
    else:
        classifier = OnnxClassifier(path, processor, id2label, threads)
    spec = processor_spec(processor)
    expected = (spec.height, spec.width)
    if all(isinstance(d, int) for d in classifier.input_size) and classifier.input_size != expected:
        raise UserError(
            f"{path} takes {classifier.input_size[0]}×{classifier.input_size[1]} images but its image processor "
            f"gives {expected[0]}×{expected[1]}: export with dynamic spatial axes, or save the matching processor."
        )
    return classifier


def _export_folder_graph(path: Path) -> Path | None:
    """The graph an export folder (no PyTorch weights) holds: `model.onnx`, else `openvino_model.xml`."""
    if not path.is_dir() or any(path.glob("*.safetensors")) or any((path / n).is_file() for n in WEIGHT_FILES):
        return None
    graphs = exported_graphs(path)
    for name in (ONNX_FILE, IR_FILE):
        if name in graphs:
            return path / name
    return None


def load_classifier(name_or_path: str, device: str = "cpu", threads: int | None = None, dtype: str = "fp32"):
    """A `TorchClassifier` for a model folder or Hub id, an `OnnxClassifier` for an `.onnx` file or an ONNX export
    folder, an `OpenVINOClassifier` for an OpenVINO IR `.xml` or an OpenVINO export folder; each carries the model's
    saved image processor and labels. `dtype` "bf16" runs PyTorch in bf16 and OpenVINO with bf16 inference
    precision; ONNX graphs run as exported, so bf16 on one is refused."""
    from transformers import AutoModelForImageClassification

    path = Path(name_or_path).expanduser()
    if path.suffix == ".xml":
        check_dtype(dtype)
        return _load_exported(path, threads, dtype)
    graph = _export_folder_graph(path)
    if graph is not None and graph.suffix == ".xml":
        check_dtype(dtype)
        return _load_exported(graph, threads, dtype)
    if dtype != "fp32" and (path.suffix == ".onnx" or path.is_file() or graph):
        raise UserError(f"--dtype {dtype}: ONNX Runtime runs {path.name} as exported (fp32 or INT8); for bf16 "
                        "evaluate the model folder or an OpenVINO IR (riformer-export --format openvino).")
    check_dtype(dtype, device)
    if path.suffix == ".onnx" or path.is_file():
        if not path.is_file():
            raise MissingInputError(f"--model_name_or_path {name_or_path}: no such ONNX file.")
        return _load_exported(path, threads)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise MissingInputError(
                f"{name_or_path} has no config.json: give a folder written by save_pretrained (either RIFormer form, "
                "GFNet, PoolFormer, ...), a Hub id, an .onnx file or an OpenVINO .xml."
            )
        if graph is not None:
            return _load_exported(graph, threads)
        model = load_pretrained(AutoModelForImageClassification, path)
        return TorchClassifier(model, _processor_or_error(path, name_or_path), device, dtype)
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
    return TorchClassifier(model, _processor_or_error(name_or_path, name_or_path), device, dtype)


__all__ = ["DTYPES", "OnnxClassifier", "OpenVINOClassifier", "TorchClassifier", "check_dtype", "cpu_has_bf16",
           "load_classifier"]
