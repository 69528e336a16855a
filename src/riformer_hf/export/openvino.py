"""OpenVINO export of a RIFormer: the folded deploy graph as OpenVINO IR, checked against PyTorch, run in fp32 or
bf16, and quantised to INT8 with NNCF.

The export folder follows optimum-intel's layout: `openvino_model.xml` + `openvino_model.bin` (the IR; input
`pixel_values` with dynamic batch, height and width, output `logits`; weights kept in fp32, not OpenVINO's default
fp16 compression, so that the fp32 check can hold 1e-4), `config.json` (labels) and `preprocessor_config.json` (the
image processor that makes `pixel_values`). With `int8=True` it also holds `openvino_model_int8.xml` / `.bin`:
NNCF post-training quantisation (symmetric int8 activations and weights, per-channel weights, fast bias correction)
calibrated on images run through that same image processor.

The IR is converted from the folded ONNX graph (`onnx.export_graph`) with its norms spelled as mean and variance
over (C, H, W) ("moments", `inference_graph.NORMS`), which OpenVINO fuses into one MVN per norm with the affine
inside; with ONNX Runtime's InstanceNormalization spelling OpenVINO keeps a reshape, a layout reorder and a separate
multiply per norm (S12 1.26× slower in INT8, 1.12× in bf16). The precision is chosen when the IR is compiled, not
stored in it: OpenVINO's CPU plugin runs fp32 IR in bf16 by default wherever the CPU has bf16 instructions, so every
fp32 use here asks for `INFERENCE_PRECISION_HINT=f32` explicitly, and bf16 is `INFERENCE_PRECISION_HINT=bf16`.

`openvino` and `nncf` are optional dependencies (`pip install 'riformer_hf[openvino]'`), imported when first needed.
"""

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.preprocessing import make_image_processor, processor_spec
from ..errors import MissingInputError, UserError
from .inference_graph import NORMS
from .onnx import (
    DEFAULT_OPSET,
    MAX_ABS_DIFF,
    ValidationResult,
    _load_model,
    _pixel_batches,
    _same_labels,
    checked_export_folder,
    export_graph,
    load_calibration_images,
    onnx_source,
)

XML_FILE = "openvino_model.xml"
INT8_XML_FILE = "openvino_model_int8.xml"
PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def _openvino():
    try:
        import openvino
    except ImportError:
        raise UserError("OpenVINO is not installed: pip install 'riformer_hf[openvino]'.") from None
    return openvino


_CORE = None


def core():
    """One OpenVINO `Core` per process (creating one loads the plugins)."""
    global _CORE
    if _CORE is None:
        _CORE = _openvino().Core()
    return _CORE


def cpu_supports_bf16() -> bool:
    """Whether OpenVINO's CPU plugin has bf16 kernels here (AVX512-BF16 or AMX); without them a bf16 hint runs
    fp32."""
    return "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


# ---- files ----


def check_ir_files(xml_path) -> Path:
    """The IR's `.xml` path, or a clear error: not an `.xml`, no such file, or its `.bin` (the weights) missing."""
    xml_path = Path(xml_path)
    if xml_path.suffix != ".xml":
        raise UserError(f"{xml_path} is not an OpenVINO IR file: give the .xml of an IR (its .bin beside it).")
    if not xml_path.is_file():
        raise MissingInputError(f"OpenVINO IR {xml_path} does not exist: export it first (riformer-export "
                                "--format openvino).")
    weights = xml_path.with_suffix(".bin")
    if not weights.is_file():
        raise MissingInputError(
            f"OpenVINO IR {xml_path} has no weights file {weights.name} beside it: an IR is two files, copy the .bin "
            "with the .xml (or export again with riformer-export --format openvino)."
        )
    return xml_path


def read_ir(xml_path):
    """The `openvino.Model` of an IR file pair, after `check_ir_files`; an unreadable file is a `UserError`."""
    xml_path = check_ir_files(xml_path)
    try:
        return core().read_model(str(xml_path))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{xml_path} is not a readable OpenVINO IR ({first}): export it again.") from None


@contextlib.contextmanager
def group_norms_as_moments():
    """While active, every one-group `nn.GroupNorm` on a 4-D input (PoolFormer's norms, RIFormer's when not folded)
    computes the "moments" spelling and then its affine, so that OpenVINO gets one MVN with the affine fused. Not
    thread-safe: for exporting only."""
    original = nn.GroupNorm.forward

    def forward(self, hidden_states):
        if self.num_groups != 1 or hidden_states.ndim != 4:
            return original(self, hidden_states)
        normed = NORMS["moments"](hidden_states, self.eps)
        return normed * self.weight[:, None, None] + self.bias[:, None, None] if self.affine else normed

    nn.GroupNorm.forward = forward
    try:
        yield
    finally:
        nn.GroupNorm.forward = original


def convert_graph(model: nn.Module, image_size: int = 224, workdir=None, opset: int = DEFAULT_OPSET,
                  norm: str = "moments"):
    """The `openvino.Model` of `model`'s exported graph (`onnx.export_graph`: a deploy-form RIFormer classifier
    folded, anything else through its own forward), with dynamic batch, height and width. `norm` "moments" spells
    every norm for OpenVINO's MVN fusion (one-group GroupNorms of other models too, for like-for-like comparisons);
    "instance_norm" converts ONNX Runtime's graph unchanged."""
    ov = _openvino()
    if norm not in NORMS:
        raise UserError(f"norm={norm!r}; choose one of {', '.join(NORMS)}.")
    rewrite = group_norms_as_moments() if norm == "moments" else contextlib.nullcontext()
    with tempfile.TemporaryDirectory(prefix=".riformer-ov-", dir=workdir) as work, rewrite:
        onnx_path = export_graph(model, Path(work) / "model.onnx", image_size, opset, norm=norm)
        return ov.convert_model(str(onnx_path))  # the weights are read in: the folder may go


def save_ir(ov_model, xml_path) -> Path:
    """Write the IR pair (`.xml` + `.bin`), weights in the model's own precision (no fp16 compression)."""
    _openvino().save_model(ov_model, str(xml_path), compress_to_fp16=False)
    return Path(xml_path)


# ---- compiling and running ----


def compile_ir(model_or_path, precision: str = "fp32", threads: int | None = None):
    """A CPU `CompiledModel` of an IR file or `openvino.Model`: inference precision `precision` ("fp32" or "bf16";
    an INT8 IR runs its quantised operators in int8 either way), one stream in latency mode so that one request uses
    every thread, `threads` inference threads (default OpenVINO's)."""
    if precision not in PRECISIONS:
        raise UserError(f"precision={precision!r}; choose one of {', '.join(PRECISIONS)}.")
    if precision == "bf16" and not cpu_supports_bf16():
        raise UserError("This CPU has no bf16 instructions (AVX512-BF16 or AMX) for OpenVINO: run in fp32 or INT8.")
    model = read_ir(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
    config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return core().compile_model(model, "CPU", config)


class IRRunner:
    """`pixel_values` (numpy or torch, N×C×H×W) → logits (numpy float32) through one compiled IR and one reused
    infer request."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def __call__(self, pixel_values) -> np.ndarray:
        if isinstance(pixel_values, torch.Tensor):
            pixel_values = pixel_values.detach().float().cpu().numpy()
        self.request.infer({0: np.ascontiguousarray(pixel_values, dtype=np.float32)})
        return self.request.get_output_tensor(0).data.copy()


# ---- checks ----


def validate_openvino(ov_model, model: nn.Module, batch_sizes=(1, 2), image_sizes=(224,), seed: int = 0):
    """OpenVINO (fp32) against `model` in PyTorch (float32, eval) on random inputs of every batch size × image size,
    through one compiled model (the IR's dynamic shapes); one `onnx.ValidationResult` each."""
    runner = IRRunner(compile_ir(ov_model, "fp32"))
    model = model.float().cpu().eval()
    generator = torch.Generator().manual_seed(seed)
    results = []
    for image_size in image_sizes:
        for batch_size in batch_sizes:
            pixels = torch.randn(batch_size, model.config.num_channels, image_size, image_size, generator=generator)
            with torch.no_grad():
                expected = model(pixel_values=pixels).logits.numpy()
            results.append(ValidationResult(batch_size, image_size, float(np.abs(runner(pixels) - expected).max())))
    return results


def compare_predictions(runners: dict[str, Callable], images: Sequence, image_processor, labels=None,
                        batch_size: int = 32) -> dict:
    """Top-1 of several `pixel_values → logits` runners on `images` against the first (the reference): per runner
    the agreement and largest |Δlogit| with it, and with `labels` its accuracy and change in points."""
    logits = {name: [] for name in runners}
    for pixels in _pixel_batches(images, image_processor, batch_size):
        for name, run in runners.items():
            logits[name].append(np.asarray(run(pixels), dtype=np.float32))
    logits = {name: np.concatenate(values) for name, values in logits.items()}
    reference = next(iter(runners))
    top = {name: values.argmax(-1) for name, values in logits.items()}
    result = {"images": len(top[reference]), "reference": reference, "runners": {}}
    for name in runners:
        entry = {"agreement": float((top[name] == top[reference]).mean()),
                 "max_abs_logit_diff": float(np.abs(logits[name] - logits[reference]).max())}
        if labels is not None:
            entry["top1"] = float((top[name] == np.asarray(labels)).mean())
            entry["top1_change_points"] = 100 * (entry["top1"] - float((top[reference] == np.asarray(labels)).mean()))
        result["runners"][name] = entry
    return result


def quantize_int8(ov_model, batches: Iterable[np.ndarray]):
    """NNCF post-training INT8 of an fp32 `openvino.Model`, calibrated on `batches` (`pixel_values` arrays):
    per-channel int8 weights, symmetric int8 activations (the "performance" preset) with min/max ranges over every
    batch, fast bias correction. Returns the quantised `openvino.Model`."""
    try:
        import nncf
    except ImportError:
        raise UserError("INT8 through NNCF needs nncf: pip install 'riformer_hf[openvino]'.") from None
    batches = [np.asarray(batch, dtype=np.float32) for batch in batches]
    if not batches:
        raise UserError("The calibration set is empty: give --calibration_data images (a folder or 'digits').")
    return nncf.quantize(
        ov_model, nncf.Dataset(batches), preset=nncf.QuantizationPreset.PERFORMANCE,
        target_device=nncf.TargetDevice.CPU, subset_size=len(batches),  # NNCF counts dataset items: batches
        fast_bias_correction=True,
    )


# ---- the export command's pipeline ----


@dataclass
class OpenVINOExport:
    """What `export_openvino` wrote and measured."""

    output_dir: Path
    xml_path: Path
    validation: list[ValidationResult] = field(default_factory=list)
    bf16: dict | None = None  # compare_predictions of fp32 vs bf16, or {"skipped": reason}
    int8_path: Path | None = None
    int8_comparison: dict | None = None
    calibration_images: int = 0


def export_openvino(
    model_or_dir,
    output_path,
    *,
    image_processor=None,
    opset: int = DEFAULT_OPSET,
    validate: bool = True,
    batch_sizes: Sequence[int] = (1, 2),
    image_sizes: Sequence[int] | None = None,
    check_bf16: bool = True,
    int8: bool = False,
    calibration_data=None,
    calibration_samples: int = 200,
    overwrite: bool = False,
    eval_data=None,
    eval_split: str | None = None,
) -> OpenVINOExport:
    """Export a RIFormer (either form, folded first) or another transformers image classifier to OpenVINO IR with
    its labels and preprocessing; report bf16 agreement; optionally quantise it to INT8 with NNCF.

    `output_path`: a folder (gets `openvino_model.xml` / `.bin`, `config.json`, `preprocessor_config.json`, with
    `int8` also `openvino_model_int8.xml` / `.bin`) or the command's `riformer_hf.safety.OutputFolder`, guarded and
    written whole as `onnx.export_onnx`'s. The fp32 IR is checked against PyTorch at every batch size × image size
    (default: the processor's size and 32 px more) and nothing is written if any max |Δlogits| exceeds 1e-4.
    `calibration_data` gives the INT8 calibration images and the held-out images (`onnx.load_calibration_images`:
    `eval_data` / `eval_split`, else its evaluation split, else the rest of its training images) on which bf16 and
    INT8 top-1 are compared with fp32; without it the bf16 check runs on random inputs.
    """
    if onnx_source(model_or_dir) is not None:
        raise UserError(f"{model_or_dir} is an ONNX export: the OpenVINO export starts from the PyTorch model folder.")
    output = checked_export_folder(output_path, model_or_dir, overwrite, XML_FILE, (".xml", ".bin"))
    output_dir = output.path
    if int8 and calibration_data is None:
        raise UserError("--int8 needs --calibration_data: a folder of images, or 'digits'.")
    if (eval_data is not None or eval_split is not None) and calibration_data is None:
        raise UserError("--eval_data and --eval_split choose the images bf16 and INT8 are compared on: add "
                        "--calibration_data.")
    _openvino()  # a clear error before any work when OpenVINO is missing
    model, source_processor = _load_model(model_or_dir)
    image_processor = image_processor or source_processor or make_image_processor()
    image_size = processor_spec(image_processor).image_size
    split = None
    if calibration_data is not None:
        split = load_calibration_images(calibration_data, calibration_samples, eval_data=eval_data,
                                        eval_split=eval_split)

    result = OpenVINOExport(output_dir, output_dir / XML_FILE)
    with output.staged() as staging:
        ov_model = convert_graph(model, image_size, workdir=staging, opset=opset)
        if validate:
            sizes = tuple(image_sizes or (image_size, image_size + 32))
            result.validation = validate_openvino(ov_model, model, tuple(batch_sizes), sizes)
            worst = max(r.max_abs_diff for r in result.validation)
            if worst > MAX_ABS_DIFF:
                raise RuntimeError(f"OpenVINO differs from PyTorch by {worst:.2e} (> {MAX_ABS_DIFF:.0e}).")
        save_ir(ov_model, staging / XML_FILE)
        model.config.save_pretrained(staging)
        image_processor.save_pretrained(staging)
        labels = None
        if split is not None and _same_labels(staging / "config.json", split.class_names):
            labels = split.held_out_labels
        fp32 = IRRunner(compile_ir(ov_model, "fp32"))
        if check_bf16:
            result.bf16 = _check_bf16(ov_model, fp32, model, split, image_processor, labels, image_size)
        if int8:
            quantized = quantize_int8(ov_model, _pixel_batches(split.calibration, image_processor, batch_size=8))
            save_ir(quantized, staging / INT8_XML_FILE)
            if split.held_out:
                runners = {"fp32": fp32, "int8": IRRunner(compile_ir(quantized, "fp32"))}
                result.int8_comparison = _held_out(compare_predictions(runners, split.held_out, image_processor,
                                                                       labels), split)
            result.int8_path, result.calibration_images = output_dir / INT8_XML_FILE, len(split.calibration)
    return result


def _held_out(compared: dict, split) -> dict:
    return {**compared, "held_out_from": split.held_out_from, "training_images": split.training_images}


def _check_bf16(ov_model, fp32: IRRunner, model, split, image_processor, labels, image_size) -> dict:
    """fp32 vs bf16 top-1 agreement on the held-out images, or on random inputs when there are none."""
    if not cpu_supports_bf16():
        return {"skipped": "this CPU has no bf16 instructions (AVX512-BF16 or AMX)"}
    runners = {"fp32": fp32, "bf16": IRRunner(compile_ir(ov_model, "bf16"))}
    if split is not None and split.held_out:
        return _held_out(compare_predictions(runners, split.held_out, image_processor, labels), split)
    generator = torch.Generator().manual_seed(1)
    pixels = torch.randn(32, model.config.num_channels, image_size, image_size, generator=generator).numpy()
    logits = {name: run(pixels) for name, run in runners.items()}
    return {
        "images": len(pixels), "reference": "fp32", "held_out_from": "random inputs",
        "runners": {name: {"agreement": float((v.argmax(-1) == logits["fp32"].argmax(-1)).mean()),
                           "max_abs_logit_diff": float(np.abs(v - logits["fp32"]).max())}
                    for name, v in logits.items()},
    }


def format_openvino_report(result: OpenVINOExport) -> str:
    """The lines `riformer-export --format openvino` prints."""
    lines = [f"OpenVINO IR (fp32 weights, dynamic batch/height/width) → {result.xml_path}"]
    if result.validation:
        diffs = ", ".join(f"batch {r.batch_size} @ {r.image_size}²: {r.max_abs_diff:.1e}" for r in result.validation)
        lines.append(f"OpenVINO fp32 vs PyTorch, max |Δlogits|: {diffs} (bound {MAX_ABS_DIFF:.0e})")
    if result.bf16 is not None:
        if "skipped" in result.bf16:
            lines.append(f"bf16: not checked, {result.bf16['skipped']}")
        else:
            lines.append("bf16 (INFERENCE_PRECISION_HINT=bf16) vs fp32: " + _comparison_text(result.bf16, "bf16"))
    if result.int8_path is not None:
        lines.append(f"INT8 (NNCF post-training, {result.calibration_images} calibration images) → {result.int8_path}")
        if result.int8_comparison:
            lines.append("INT8 vs fp32: " + _comparison_text(result.int8_comparison, "int8"))
        else:
            lines.append("No images left to compare INT8 with fp32 on (every image calibrated): pass --eval_data.")
    return "\n".join(lines)


def _comparison_text(compared: dict, name: str) -> str:
    entry = compared["runners"][name]
    kind = "training images, not held out" if compared.get("training_images") else "images"
    text = (f"{compared['images']} {kind} ({compared['held_out_from']}), top-1 agrees {100 * entry['agreement']:.1f} "
            f"%, max |Δlogit| {entry['max_abs_logit_diff']:.2g}")
    if "top1" in entry:
        reference = compared["runners"][compared["reference"]]["top1"]
        text += (f"; top-1 {compared['reference']} {100 * reference:.2f} %, {name} {100 * entry['top1']:.2f} % "
                 f"({entry['top1_change_points']:+.2f} points)")
    return text


__all__ = [
    "INT8_XML_FILE",
    "XML_FILE",
    "IRRunner",
    "OpenVINOExport",
    "check_ir_files",
    "compare_predictions",
    "compile_ir",
    "convert_graph",
    "cpu_supports_bf16",
    "export_openvino",
    "format_openvino_report",
    "quantize_int8",
    "read_ir",
    "save_ir",
    "validate_openvino",
]
