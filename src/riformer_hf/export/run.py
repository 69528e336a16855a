"""`riformer-export`: a RIFormer (training form folded first) as an ONNX graph (model.onnx, checked in ONNX Runtime)
or an OpenVINO IR (--format openvino: openvino_model.xml/.bin, checked in OpenVINO in fp32 and bf16), with
config.json and preprocessor_config.json beside it; optionally also an INT8 model calibrated through the model's
image processor (ONNX: static QDQ, per-channel; OpenVINO: NNCF post-training). The folder is checked before any work
and written whole, under its run lock (`riformer_hf.safety`)."""

import argparse

from ..safety import OVERWRITE_HELP, OutputFolder
from .onnx import DEFAULT_OPSET, export_onnx, format_export_report, onnx_source

FORMATS = ("onnx", "openvino")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="riformer-export", description=__doc__)
    parser.add_argument("--model_name_or_path", required=True,
                        help="RIFormer folder or Hub id; or an ONNX export (model.onnx or its folder) for --int8 only")
    parser.add_argument("--output_dir", required=True, help="folder for the model file(s), config and image processor")
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (also of OpenVINO's source graph)")
    parser.add_argument("--int8", action="store_true", help="also write model_int8.onnx / openvino_model_int8.xml")
    parser.add_argument("--calibration_data", default=None,
                        help="'digits', an image folder (class subfolders optional) or a Hub dataset: INT8 "
                        "calibration (OpenVINO: also the images bf16 is compared on)")
    parser.add_argument("--calibration_samples", type=int, default=200, help="images to calibrate on")
    parser.add_argument("--eval_data", default=None,
                        help="held-out images to compare INT8 with fp32 on: 'digits', an image folder or a Hub dataset "
                        "(default: --calibration_data's validation/test split; without one, the calibration split's "
                        "other images, which the report calls training images)")
    parser.add_argument("--eval_split", default=None,
                        help="the split (or split folder, e.g. val) of --eval_data, else of --calibration_data, to "
                        "compare on")
    parser.add_argument("--no_validate", action="store_true", help="skip the runtime vs PyTorch check")
    parser.add_argument("--overwrite_output_dir", action="store_true", help=OVERWRITE_HELP)
    return parser


def main(argv: list[str] | None = None):
    """`riformer-export`: the `OnnxExport` or `OpenVINOExport` it wrote."""
    from transformers.utils.logging import disable_progress_bar

    args = build_parser().parse_args(argv)
    disable_progress_bar()  # no "Loading weights" bar in the report
    # An ONNX source is copied into the new export, so it may lie in the folder it replaces.
    reads = [] if onnx_source(args.model_name_or_path) else [("--model_name_or_path", args.model_name_or_path)]
    output = OutputFolder(args.output_dir, overwrite=args.overwrite_output_dir, sources=reads)
    options = {"opset": args.opset, "validate": not args.no_validate, "int8": args.int8,
               "calibration_data": args.calibration_data, "calibration_samples": args.calibration_samples,
               "eval_data": args.eval_data, "eval_split": args.eval_split}
    if args.format == "openvino":
        from .openvino import export_openvino, format_openvino_report

        export, report = export_openvino, format_openvino_report
    else:
        export, report = export_onnx, format_export_report
    with output.claim():
        result = export(args.model_name_or_path, output, **options)
    print(report(result))
    return result


__all__ = ["FORMATS", "build_parser", "main"]
