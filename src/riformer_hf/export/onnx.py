"""ONNX export of a RIFormer (folded first), validated in ONNX Runtime, and its INT8 post-training quantisation.

The export folder follows optimum's layout: `model.onnx` (input `pixel_values` with dynamic batch, height and width;
output `logits`), `config.json` (the deploy-form config, labels included) and `preprocessor_config.json` (the image
processor that makes `pixel_values`). With `int8=True` it also holds `model_int8.onnx`: ONNX Runtime's static
quantisation in QDQ format, per-channel int8 weights, uint8 activations calibrated (min/max) on images run through that
same image processor.

The graph comes from the TorchScript exporter at opset 20: GroupNorm becomes ONNX Runtime's InstanceNormalization
kernel, GELU the native `Gelu` operator (one kernel instead of five, and in INT8 one dequantise / quantise pair
instead of four). A deploy-form RIFormer classifier is exported as `FoldedRIFormerClassifier` (its per-channel scales
folded into the convolutions; see `inference_graph`), never through the deploy form's fused CPU path, whose
cache-sized batch chunks are no graph. The TorchScript exporter ran S12 faster in ONNX Runtime than the dynamo
exporter's graphs and exports in seconds instead of a minute.
"""

import copy
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.image_modes import to_rgb
from ..data.preprocessing import load_image_processor, make_image_processor, processor_spec
from ..errors import MissingInputError, UserError
from ..models.riformer.modeling_riformer import RIFormerPreTrainedModel, reparameterize_model
from ..safety import OutputFolder
from .deploy import load_riformer
from .inference_graph import FoldedRIFormerClassifier, can_fold

ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
DEFAULT_OPSET = 20
MAX_ABS_DIFF = 1e-4


class _LogitsGraph(nn.Module):
    """`pixel_values → logits` of an image classifier, through a RIFormer's plain modules (the traceable path)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.block_states = isinstance(model, RIFormerPreTrainedModel)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.block_states:
            return self.model(pixel_values=pixel_values, output_block_states=True).logits
        return self.model(pixel_values=pixel_values).logits


def export_graph(model: nn.Module, path, image_size: int = 224, opset: int = DEFAULT_OPSET,
                 norm: str = "instance_norm") -> Path:
    """Write `model` (any `pixel_values → logits` classifier, in the form it is in) to the ONNX file `path`, with
    dynamic batch, height and width: a deploy-form RIFormer classifier as its `FoldedRIFormerClassifier` (its norms
    spelled `norm`: see `inference_graph.NORMS`), anything else through its own forward. Traced on a CPU float32
    copy in eval mode; the caller's model is untouched."""
    if opset < 17:
        raise UserError(f"opset={opset}: GroupNorm needs opset ≥ 17 here; use {DEFAULT_OPSET}.")
    source = copy.deepcopy(model).float().cpu().eval()
    graph = FoldedRIFormerClassifier(source, norm) if can_fold(source) else _LogitsGraph(source)
    example = torch.zeros(2, source.config.num_channels, image_size, image_size)
    path = Path(path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on the input-shape check
        torch.onnx.export(
            graph, (example,), str(path), input_names=["pixel_values"], output_names=["logits"],
            opset_version=opset, dynamo=False,
            dynamic_axes={"pixel_values": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}},
        )
    return path


def ort_session(path, threads: int | None = None):
    """A CPU ONNX Runtime session; `threads` intra-op threads, which do not spin between runs (fair interleaving)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_onnx_file(path) -> None:
    """Raise a clear error unless `path` is a readable, well-formed ONNX model."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"ONNX file {path} does not exist: export the model first (riformer-export).")
    try:
        onnx.checker.check_model(str(path))
    except Exception as error:  # noqa: BLE001 -- protobuf's DecodeError, onnx's ValidationError: an unusable file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"{path} is not a valid ONNX model ({first_line}): re-export it with riformer-export."
        ) from None


@dataclass
class ValidationResult:
    """Max |Δlogits| between ONNX Runtime and PyTorch (float32) for one input shape."""

    batch_size: int
    image_size: int
    max_abs_diff: float


def validate_onnx(path, model: nn.Module, batch_sizes=(1, 2), image_sizes=(224,), seed: int = 0):
    """ONNX Runtime against `model` in PyTorch (its usual forward, float32, eval) on random inputs of every
    batch size × image size; returns one `ValidationResult` per shape."""
    session = ort_session(path)
    model = model.float().cpu().eval()
    generator = torch.Generator().manual_seed(seed)
    results = []
    for image_size in image_sizes:
        for batch_size in batch_sizes:
            pixels = torch.randn(batch_size, model.config.num_channels, image_size, image_size, generator=generator)
            with torch.no_grad():
                expected = model(pixel_values=pixels).logits.numpy()
            actual = session.run(["logits"], {"pixel_values": pixels.numpy()})[0]
            results.append(ValidationResult(batch_size, image_size, float(np.abs(actual - expected).max())))
    return results


# ---- calibration data and INT8 ----


@dataclass
class ImageSplit:
    """Calibration images and the images to compare fp32 and INT8 on (with labels and class names when the source
    has them), where those come from, and whether they are training images (not held out)."""

    calibration: list
    held_out: list
    held_out_labels: list[int] | None = None
    class_names: list[str] | None = None
    held_out_from: str = ""
    training_images: bool = False


def load_calibration_images(source, samples: int, held_out: int = 1000, seed: int = 0, eval_data=None,
                            eval_split: str | None = None) -> ImageSplit:
    """`samples` calibration images from `source` ("digits", an image folder or a Hub dataset; its `train` split or
    its only one, in a seeded order) and up to `held_out` images to compare top-1 on: the split `eval_split` of
    `eval_data` (default: its evaluation split, else its only one) when `eval_data` is given, else `eval_split` of
    `source`, else the source's evaluation split (validation / test) when it has one, else the rest of the
    calibration split, which are training images and are reported as such."""
    from ..data.datasets import (
        ImageSource,
        class_names,
        describe_split,
        eval_split_name,
        load_image_splits,
        resolve_split,
    )

    if samples < 1:
        raise UserError(f"--calibration_samples {samples}: calibrate on at least 1 image (100–500 is typical).")
    calibration_source = ImageSource.named(str(source), "--calibration_data")
    splits = load_image_splits(calibration_source)
    name = "train" if "train" in splits else next(iter(splits))
    dataset = splits[name].shuffle(seed=seed)
    count = min(samples, len(dataset))
    compare_source, compare_splits = calibration_source, splits
    if eval_data is not None:
        compare_source = ImageSource.named(str(eval_data), "--eval_data")
        compare_splits = load_image_splits(compare_source)
    if eval_split is not None:
        evaluation = resolve_split(compare_splits, eval_split, compare_source, "--eval_split")
    elif eval_data is not None:
        evaluation = eval_split_name(compare_splits)
        if evaluation is None:
            raise UserError(f"--eval_data {eval_data} has splits {', '.join(compare_splits)}: choose one with "
                            "--eval_split.")
    else:
        evaluation = eval_split_name(splits, exclude=name)
    training = evaluation is None or (eval_data is None and evaluation == name)
    if training:  # the calibration split's other images (datasets refuses an empty range: select none then)
        first, rest = count, dataset
        held_out_from = f"{describe_split(calibration_source, name)}, minus the calibration images"
    else:
        first, rest = 0, compare_splits[evaluation]
        held_out_from = describe_split(compare_source, evaluation)
    last = min(len(rest), first + held_out)
    rest = rest.select(range(first, last)) if last > first else rest.select([])
    names = class_names(rest, "label")
    labels = list(rest["label"]) if names is not None else None
    return ImageSplit([to_rgb(image) for image in dataset.select(range(count))["image"]],
                      [to_rgb(image) for image in rest["image"]], labels, names, held_out_from, training)


def _pixel_batches(images: Sequence, image_processor, batch_size: int) -> Iterable[np.ndarray]:
    for start in range(0, len(images), batch_size):
        batch = image_processor(images=list(images[start:start + batch_size]), return_tensors="np")
        yield np.asarray(batch["pixel_values"], dtype=np.float32)


def calibration_reader(batches: Iterable[np.ndarray]):
    """An ONNX Runtime `CalibrationDataReader` over `pixel_values` batches (arrays N×C×H×W)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(batches)

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {"pixel_values": batch}

    return _Reader()


def quantize_int8(onnx_path, output_path, batches: Iterable[np.ndarray]) -> Path:
    """Static INT8 quantisation of an fp32 export: QDQ format, per-channel symmetric int8 weights, uint8 activations
    with min/max ranges from `batches` (calibration `pixel_values`), every operator ONNX Runtime can quantise (norms,
    residual adds and GELU too: quantising only the convolutions left S12 no faster than fp32). Writes `output_path`
    and returns it."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    check_onnx_file(onnx_path)
    output_path = Path(output_path)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=output_path.parent) as work:
        calibration = iter(batches)
        first = next(calibration, None)
        if first is None:
            raise UserError("The calibration set is empty: give --calibration_data images (a folder or 'digits').")
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        root = logging.getLogger()
        level, root.level = root.level, max(root.level, logging.ERROR)  # one note per rank-1 constant: noise
        try:
            quantize_static(
                str(prepared), str(Path(work) / "int8.onnx"), calibration_reader([first, *calibration]),
                quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            )
        finally:
            root.setLevel(level)
        os.replace(Path(work) / "int8.onnx", output_path)
    return output_path


def compare_top1(fp32_path, int8_path, images: Sequence, image_processor, labels=None, batch_size: int = 32) -> dict:
    """Top-1 of the fp32 and INT8 graphs on `images` (accuracy when `labels` are given, agreement always)."""
    fp32, int8 = ort_session(fp32_path), ort_session(int8_path)
    fp32_top, int8_top = [], []
    for pixels in _pixel_batches(images, image_processor, batch_size):
        fp32_top.append(fp32.run(["logits"], {"pixel_values": pixels})[0].argmax(-1))
        int8_top.append(int8.run(["logits"], {"pixel_values": pixels})[0].argmax(-1))
    fp32_top, int8_top = np.concatenate(fp32_top), np.concatenate(int8_top)
    result = {"images": len(fp32_top), "agreement": float((fp32_top == int8_top).mean())}
    if labels is not None:
        labels = np.asarray(labels)
        result["fp32_top1"] = float((fp32_top == labels).mean())
        result["int8_top1"] = float((int8_top == labels).mean())
        result["top1_change_points"] = 100 * (result["int8_top1"] - result["fp32_top1"])
    return result


# ---- the export command's pipeline ----


@dataclass
class OnnxExport:
    """What `export_onnx` wrote and measured."""

    output_dir: Path
    onnx_path: Path | None
    opset: int
    validation: list[ValidationResult] = field(default_factory=list)
    int8_path: Path | None = None
    int8_comparison: dict | None = None
    calibration_images: int = 0
    copied_from: Path | None = None  # the fp32 graph an INT8-only export carries over


def export_onnx(
    model_or_dir,
    output_path,
    *,
    image_processor=None,
    opset: int = DEFAULT_OPSET,
    validate: bool = True,
    batch_sizes: Sequence[int] = (1, 2),
    image_sizes: Sequence[int] | None = None,
    int8: bool = False,
    calibration_data=None,
    calibration_samples: int = 200,
    overwrite: bool = False,
    eval_data=None,
    eval_split: str | None = None,
) -> OnnxExport:
    """Export a RIFormer to ONNX with its labels and preprocessing; optionally quantise it to INT8.

    `model_or_dir`: a model (RIFormer in either form, folded first; or another transformers image classifier, exported
    as it is), a RIFormer folder or Hub id, or an ONNX export (`model.onnx` or its folder: only the INT8 step runs,
    and the fp32 graph is copied beside the INT8 one). `output_path`: a folder (gets `model.onnx`, `config.json`,
    `preprocessor_config.json`, with `int8` also `model_int8.onnx`), or the command's `riformer_hf.safety.OutputFolder`.
    A folder holding an earlier model, export or run is refused unless `overwrite`; with it the folder ends holding
    only the new files (no earlier `model_int8.onnx` beside a new `model.onnx`). The fp32 graph is checked in ONNX
    Runtime against PyTorch at every batch size × image size (default: the processor's size and 32 px more) and
    nothing is written if any max |Δlogits| exceeds 1e-4. INT8 calibrates on `calibration_samples` images of
    `calibration_data` (a folder or "digits") and compares top-1 with the fp32 graph on held-out images
    (`load_calibration_images`: `eval_data` / `eval_split`, else the calibration data's evaluation split, else the
    rest of its training images, reported as such). The files are written to a staging folder and moved into place
    when every step succeeded (`OutputFolder.staged`).
    """
    source_onnx = onnx_source(model_or_dir)
    output = checked_export_folder(output_path, model_or_dir, overwrite, ONNX_FILE, (".onnx",),
                                   reads_model=source_onnx is None)
    output_dir = output.path
    if int8 and calibration_data is None:
        raise UserError("--int8 needs --calibration_data: a folder of images, or 'digits'.")
    if source_onnx is not None and not int8:
        raise UserError(f"{model_or_dir} is already an ONNX export: pass --int8 to quantise it, or give a model.")
    if source_onnx is not None:
        check_onnx_file(source_onnx)
        model = None
        if image_processor is None:
            image_processor = load_image_processor(source_onnx.parent)
    else:
        model, source_processor = _load_model(model_or_dir)
        image_processor = image_processor or source_processor
    image_processor = image_processor if image_processor is not None else make_image_processor()
    image_size = processor_spec(image_processor).image_size
    if (eval_data is not None or eval_split is not None) and not int8:
        raise UserError("--eval_data and --eval_split choose the images INT8 is compared on: add --int8.")
    split = None
    if int8:
        split = load_calibration_images(calibration_data, calibration_samples, eval_data=eval_data,
                                        eval_split=eval_split)

    result = OnnxExport(output_dir, output_dir / ONNX_FILE, opset)
    with output.staged() as staging:
        if model is not None:
            fp32_path = export_graph(model, staging / ONNX_FILE, image_size, opset)
            if validate:
                sizes = tuple(image_sizes or (image_size, image_size + 32))
                result.validation = validate_onnx(fp32_path, model, tuple(batch_sizes), sizes)
                worst = max(r.max_abs_diff for r in result.validation)
                if worst > MAX_ABS_DIFF:
                    raise RuntimeError(f"ONNX Runtime differs from PyTorch by {worst:.2e} (> {MAX_ABS_DIFF:.0e}).")
            model.config.save_pretrained(staging)
        else:  # an export folder is whole: the fp32 graph, its config and the config's code beside the INT8 graph
            fp32_path = shutil.copy2(source_onnx, staging / ONNX_FILE)
            result.copied_from = source_onnx
            for name in ("config.json", *(p.name for p in source_onnx.parent.glob("*.py"))):
                if (source_onnx.parent / name).is_file():
                    shutil.copy(source_onnx.parent / name, staging / name)
        image_processor.save_pretrained(staging)
        if int8:
            batches = _pixel_batches(split.calibration, image_processor, batch_size=8)
            quantize_int8(fp32_path, staging / INT8_FILE, batches)
            labels = split.held_out_labels if _same_labels(staging / "config.json", split.class_names) else None
            if split.held_out:
                result.int8_comparison = compare_top1(
                    fp32_path, staging / INT8_FILE, split.held_out, image_processor, labels
                )
                result.int8_comparison["held_out_from"] = split.held_out_from
                result.int8_comparison["training_images"] = split.training_images
            result.int8_path, result.calibration_images = output_dir / INT8_FILE, len(split.calibration)
    return result


def checked_export_folder(output_path, model_or_dir, overwrite: bool, file_name: str, file_suffixes: tuple[str, ...],
                          reads_model: bool = True) -> OutputFolder:
    """An export's output folder, checked before any work: the command's `OutputFolder` as it is, else one for the
    folder `output_path` (a library call) that may not hold `model_or_dir` when the export reads it. A name ending
    like the graph file (`file_suffixes`) is refused: the export wants a folder."""
    if isinstance(output_path, OutputFolder):
        output = output_path
    else:
        reads = [(None, model_or_dir)] if reads_model and not isinstance(model_or_dir, nn.Module) else []
        output = OutputFolder(output_path, flag=None, overwrite=overwrite, sources=reads)
    if output.path.suffix in file_suffixes:
        raise UserError(f"{output.path} looks like a file: give an output folder (it gets {file_name}).")
    output.check()
    return output


def onnx_source(model_or_dir) -> Path | None:
    """The ONNX file `model_or_dir` names (a `.onnx` file, or a folder with `model.onnx` and no PyTorch weights)."""
    if isinstance(model_or_dir, nn.Module):
        return None
    path = Path(model_or_dir)
    if path.suffix == ".onnx":
        return path
    if (path / ONNX_FILE).is_file() and not any(path.glob("*.safetensors")):
        return path / ONNX_FILE
    return None


def _load_model(model_or_dir):
    """The model to export (a RIFormer folded into its deploy form) and the image processor that came with it."""
    if isinstance(model_or_dir, nn.Module):
        if not hasattr(getattr(model_or_dir, "config", None), "num_channels"):
            raise TypeError(f"Expected a transformers image classifier, got {type(model_or_dir).__name__}.")
        model, processor = model_or_dir, None
    else:
        folder = Path(model_or_dir)
        if not folder.exists():
            folder = _download(str(model_or_dir))
        model, processor = load_riformer(folder, "--model_name_or_path"), load_image_processor(folder)
    if isinstance(model, RIFormerPreTrainedModel) and not model.is_reparameterized:
        model = reparameterize_model(model)
    return model.float().cpu().eval(), processor


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.py", "*.md"]))
    except Exception as error:  # noqa: BLE001 -- no such repo, offline, no access: all mean the source is not there
        raise MissingInputError(
            f"{repo_id} is not a local folder and could not be fetched from the Hub ({type(error).__name__}): pass "
            "a RIFormer folder, or a Hub id that is reachable."
        ) from None


def _same_labels(config_file: Path, class_names) -> bool:
    """Whether the exported model's labels are the dataset's classes (then held-out accuracy means something)."""
    if not class_names or not config_file.is_file():
        return False
    id2label = json.loads(config_file.read_text()).get("id2label") or {}
    return [id2label.get(str(i)) for i in range(len(id2label))] == list(class_names)


def format_export_report(result: OnnxExport) -> str:
    """The lines `riformer-export` prints: files, validation numbers, INT8 top-1 change."""
    lines = []
    if result.copied_from is not None:
        lines.append(f"ONNX (fp32, from {result.copied_from}) → {result.onnx_path}")
    else:
        lines.append(f"ONNX (opset {result.opset}, dynamic batch/height/width) → {result.onnx_path}")
    if result.validation:
        diffs = ", ".join(f"batch {r.batch_size} @ {r.image_size}²: {r.max_abs_diff:.1e}" for r in result.validation)
        lines.append(f"ONNX Runtime vs PyTorch, max |Δlogits| (fp32): {diffs} (bound {MAX_ABS_DIFF:.0e})")
    if result.int8_path is not None:
        lines.append(f"INT8 (static QDQ, per-channel, {result.calibration_images} calibration images) → "
                     f"{result.int8_path}")
        compared = result.int8_comparison
        if compared:
            if compared.get("training_images"):
                text = (f"{compared['images']} training images ({compared['held_out_from']}), not held out "
                        "(--eval_data or --eval_split names held-out images): top-1 agrees with fp32")
            else:
                text = f"{compared['images']} held-out images ({compared['held_out_from']}): top-1 agrees with fp32"
            text += f" {100 * compared['agreement']:.1f} %"
            if "top1_change_points" in compared:
                text += (f"; top-1 fp32 {100 * compared['fp32_top1']:.2f} %, INT8 {100 * compared['int8_top1']:.2f} % "
                         f"({compared['top1_change_points']:+.2f} points)")
            lines.append(text)
        elif result.int8_path is not None:
            lines.append("No images left to compare INT8 with fp32 on (every image calibrated): pass --eval_data.")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_OPSET",
    "INT8_FILE",
    "ONNX_FILE",
    "OnnxExport",
    "calibration_reader",
    "check_onnx_file",
    "compare_top1",
    "export_graph",
    "export_onnx",
    "format_export_report",
    "load_calibration_images",
    "onnx_source",
    "ort_session",
    "quantize_int8",
    "validate_onnx",
]
