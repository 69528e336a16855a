"""The console scripts: argument parsing only, the work is done in the package's rooms.

    riformer-train     distil / train a student            (riformer_hf.distillation.pipeline)
    riformer-convert   mmpretrain | gfnet | poolformer → folder  (riformer_hf.convert, distillation.teachers)
    riformer-push      deploy export → the Hub              (riformer_hf.export.hub)
    riformer-demo      the embedded digits demo             (riformer_hf.demo)
    riformer-bench     speed against PoolFormer             (riformer_hf.benchmark)
    riformer-eval      top-1 / top-5 of a model or ONNX file    (riformer_hf.evaluation)
    riformer-export    ONNX / INT8 export                   (riformer_hf.export.onnx)
    riformer-reparameterize  training form → deploy folder  (riformer_hf.export.deploy)

`python -m riformer_hf.cli COMMAND ...` runs the same commands. Exit codes:

    0    done
    1    internal failure (a bug): its traceback is printed
    2    user error (a bad value, a missing or unreadable file, a full disk): one `error: …` line naming the problem,
         the value and the fix; nothing already saved was changed
    3    saved locally but not pushed (the Hub failed): every local file is written, the `error: …` message ends with
         the one command that retries the push
    130  interrupted (Ctrl-C)

`--debug` prints the traceback for codes 2 and 3 too.
"""

import argparse
import sys
import traceback
from collections.abc import Callable

USER_ERROR = 2
NOT_PUSHED = 3
# What bad input raises in this package and the libraries it drives (with huggingface_hub's StrictDataclassError for
# a config.json that its class refuses); anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError)


def _run(command: Callable[[list[str]], object], argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    from huggingface_hub.errors import StrictDataclassError

    from .export.hub import HubPushError

    try:
        command(argv)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except HubPushError as error:
        if debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return NOT_PUSHED
    except (*USER_ERRORS, StrictDataclassError) as error:
        if debug:
            traceback.print_exc()
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return USER_ERROR
    return 0


def _one_line(error: BaseException) -> str:
    """The message on one line; an OSError raised with our own text (errno, message) without its `[Errno N]`."""
    text = error.strerror if isinstance(error, OSError) and error.strerror and error.filename is None else str(error)
    return " ".join(text.split()) or type(error).__name__


def _train(argv):
    from .distillation.pipeline import run_training

    run_training(argv)


def train(argv: list[str] | None = None) -> int:
    """`riformer-train`: every flag in `riformer-train --help`."""
    return _run(_train, argv)


def _push(argv):
    from .export.hub import push_reparameterized

    parser = argparse.ArgumentParser(
        prog="riformer-push",
        description="Push a RIFormer to the Hub in its re-parameterised (deploy) form, with a model card. A "
        "training-form folder (a Trainer checkpoint-N, or save_pretrained output) is folded first; a deploy export "
        "passes through. Honours HF_ENDPOINT and HF_TOKEN.",
    )
    parser.add_argument("--model_dir", required=True, help="folder with config.json + model.safetensors (either form)")
    parser.add_argument("--repo_id", required=True, help="Hub repo, `name` or `namespace/name`; created if missing")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing; default main)")
    parser.add_argument("--commit_message", default=None)
    parser.add_argument("--private", action="store_true", default=None, help="create the repo as private")
    parser.add_argument("--token", default=None, help="write token (default: HF_TOKEN or the saved login)")
    parser.add_argument("--push_training_weights", action="store_true",
                        help="also push the training form under training/ (needs a training-form --model_dir)")
    parser.add_argument("--save_dir", default=None, help="also keep the deploy export in this folder")
    parser.add_argument("--dataset", action="append", dest="datasets", help="training dataset Hub id (repeatable)")
    parser.add_argument("--base_model", action="append", help="teacher / base model Hub id (repeatable)")
    parser.add_argument("--license", default=None)
    args = parser.parse_args(argv)
    commit = push_reparameterized(
        args.model_dir, args.repo_id, token=args.token, private=args.private, revision=args.revision,
        commit_message=args.commit_message, push_training_weights=args.push_training_weights,
        save_dir=args.save_dir, datasets=args.datasets, base_model=args.base_model, license=args.license,
    )
    print(f"Pushed the re-parameterised model to {commit.repo_url} ({commit.oid}).")


def push(argv: list[str] | None = None) -> int:
    """`riformer-push`."""
    return _run(_push, argv)


def _convert(argv):
    parser = argparse.ArgumentParser(
        prog="riformer-convert",
        description="Convert published weights into a folder that AutoModelForImageClassification loads: an "
        "mmpretrain RIFormer checkpoint, an official GFNet-H checkpoint, or a transformers PoolFormer into a "
        "RIFormer student initialised from it. Architectures are read from the tensors.",
    )
    sources = parser.add_subparsers(dest="source", required=True, metavar="{mmpretrain,gfnet,poolformer}")
    mmpretrain = sources.add_parser("mmpretrain", help="an mmpretrain RIFormer .pth / .safetensors")
    mmpretrain.add_argument("--checkpoint", required=True, help="e.g. riformer-s12_32xb128_in1k_20230406-6741ce71.pth")
    mmpretrain.add_argument("--reparameterize", action="store_true", help="fold the token mixers (deploy form)")
    mmpretrain.add_argument("--image_size", type=int, default=None, help="evaluation size (224; 384 for -384px)")
    gfnet = sources.add_parser("gfnet", help="an official GFNet-H .pth / .safetensors (raoyongming/GFNet)")
    gfnet.add_argument("--checkpoint", required=True, help="e.g. gfnet-h-b.pth")
    poolformer = sources.add_parser("poolformer", help="a transformers PoolFormer → a RIFormer student (paper init)")
    poolformer.add_argument("--model_name_or_path", required=True, help="PoolFormer folder or Hub id")
    poolformer.add_argument("--drop_path_rate", type=float, default=None)
    for sub in (mmpretrain, gfnet, poolformer):
        sub.add_argument("--output_dir", required=True, help="folder for config, weights and image processor")
    args = parser.parse_args(argv)
    _check_output_dir(args.output_dir)

    if args.source == "mmpretrain":
        from .convert import convert_mmpretrain_riformer

        model = convert_mmpretrain_riformer(args.checkpoint, args.output_dir, args.reparameterize, args.image_size)
    elif args.source == "gfnet":
        from .convert import convert_gfnet

        model = convert_gfnet(args.checkpoint, args.output_dir)
    else:
        from .data.preprocessing import load_image_processor
        from .distillation.teachers import from_poolformer

        overrides = {} if args.drop_path_rate is None else {"drop_path_rate": args.drop_path_rate}
        model = from_poolformer(args.model_name_or_path, **overrides)
        model.save_pretrained(args.output_dir)
        processor = load_image_processor(args.model_name_or_path)
        if processor is not None:
            processor.save_pretrained(args.output_dir)
    config = model.config
    form = "deploy" if getattr(config, "reparameterized", False) else "training"
    print(
        f"{type(model).__name__}: depths {tuple(config.depths)}, hidden sizes {tuple(config.hidden_sizes)}, "
        f"{config.num_labels} labels, {form} form, {model.num_parameters():,} parameters → {args.output_dir}"
    )


def _check_output_dir(path: str) -> None:
    from pathlib import Path

    if Path(path).exists() and not Path(path).is_dir():
        raise NotADirectoryError(f"--output_dir {path} is a file; give a folder (it is created if missing).")


def convert(argv: list[str] | None = None) -> int:
    """`riformer-convert mmpretrain|gfnet|poolformer`."""
    return _run(_convert, argv)


def _demo(argv):
    from .demo import main

    main(argv)


def demo(argv: list[str] | None = None) -> int:
    """`riformer-demo`: the embedded digits demo (no network)."""
    return _run(_demo, argv)


def _bench(argv):
    from .benchmark import main

    main(argv)


def bench(argv: list[str] | None = None) -> int:
    """`riformer-bench`: throughput against PoolFormer."""
    return _run(_bench, argv)


def _evaluate(argv):
    from .evaluation import main

    main(argv)


def evaluate(argv: list[str] | None = None) -> int:
    """`riformer-eval`: accuracy of a model folder, Hub id or ONNX file on a labelled split."""
    return _run(_evaluate, argv)


def _quiet_weight_loading() -> None:
    """No "Loading weights" / "Writing model shards" bars in a command's report (they are for long downloads)."""
    from transformers.utils.logging import disable_progress_bar

    disable_progress_bar()


def _export(argv):
    from .export.onnx import DEFAULT_OPSET, export_onnx, format_export_report

    parser = argparse.ArgumentParser(
        prog="riformer-export",
        description="Export a RIFormer to ONNX (training form folded first) with config.json and "
        "preprocessor_config.json beside model.onnx, checked in ONNX Runtime against PyTorch; optionally also a "
        "static INT8 model (QDQ, per-channel) calibrated through the model's image processor.",
    )
    parser.add_argument("--model_name_or_path", required=True,
                        help="RIFormer folder or Hub id; or an ONNX export (model.onnx or its folder) for --int8 only")
    parser.add_argument("--output_dir", required=True, help="folder for model.onnx, config and image processor")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--int8", action="store_true", help="also write model_int8.onnx")
    parser.add_argument("--calibration_data", default=None, help="folder of images (class subfolders) or 'digits'")
    parser.add_argument("--calibration_samples", type=int, default=200, help="images to calibrate on")
    parser.add_argument("--no_validate", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    args = parser.parse_args(argv)
    _quiet_weight_loading()
    result = export_onnx(
        args.model_name_or_path, args.output_dir, opset=args.opset, validate=not args.no_validate, int8=args.int8,
        calibration_data=args.calibration_data, calibration_samples=args.calibration_samples,
    )
    print(format_export_report(result))


def export(argv: list[str] | None = None) -> int:
    """`riformer-export`: ONNX (and INT8) export."""
    return _run(_export, argv)


def _reparameterize(argv):
    from .export import export_reparameterized

    parser = argparse.ArgumentParser(
        prog="riformer-reparameterize",
        description="Fold a training-form RIFormer (a Trainer checkpoint-N or save_pretrained folder) into the deploy "
        "folder the trainer writes: weights without token mixers, config, modelling code, image processor, model "
        "card. Nothing is pushed.",
    )
    parser.add_argument("--model_dir", required=True, help="training-form folder (config.json + model.safetensors)")
    parser.add_argument("--output_dir", required=True, help="folder for the deploy export")
    parser.add_argument("--training_form", action="store_true", help="also keep the training form in training/")
    args = parser.parse_args(argv)
    _check_output_dir(args.output_dir)
    _quiet_weight_loading()
    path = export_reparameterized(args.model_dir, args.output_dir, training_form=args.training_form)
    print(f"Deploy form of {args.model_dir} → {path}")


def reparameterize(argv: list[str] | None = None) -> int:
    """`riformer-reparameterize`: training checkpoint → deploy folder."""
    return _run(_reparameterize, argv)


COMMANDS = {"train": train, "convert": convert, "push": push, "demo": demo, "bench": bench, "eval": evaluate,
            "export": export, "reparameterize": reparameterize}


def main(argv: list[str] | None = None) -> int:
    """`python -m riformer_hf.cli COMMAND ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m riformer_hf.cli {{{','.join(COMMANDS)}}} [args]", file=sys.stderr)
        return USER_ERROR
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
