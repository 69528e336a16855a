"""`riformer-convert`: published weights into a folder that `AutoModelForImageClassification` loads: an mmpretrain
RIFormer checkpoint, an official GFNet-H checkpoint, or a transformers PoolFormer into a RIFormer student initialised
from it. Architectures are read from the tensors."""

import argparse

from ..safety import OVERWRITE_HELP, OutputFolder


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="riformer-convert", description=__doc__)
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
        sub.add_argument("--overwrite_output_dir", action="store_true", help=OVERWRITE_HELP)
    return parser


def main(argv: list[str] | None = None):
    """`riformer-convert mmpretrain|gfnet|poolformer`; returns the converted model. The folder is checked before the
    source is read and written whole, under its run lock (`riformer_hf.safety`)."""
    from transformers.utils.logging import disable_progress_bar

    args = build_parser().parse_args(argv)
    source = ("--model_name_or_path", args.model_name_or_path) if args.source == "poolformer" else (
        "--checkpoint", args.checkpoint)
    output = OutputFolder(args.output_dir, overwrite=args.overwrite_output_dir, sources=[source])
    disable_progress_bar()  # no "Writing model shards" bar in the report
    with output.claim(), output.staged() as staging:
        if args.source == "mmpretrain":
            from .mmpretrain import convert_mmpretrain_riformer

            model = convert_mmpretrain_riformer(args.checkpoint, staging, args.reparameterize, args.image_size)
        elif args.source == "gfnet":
            from .gfnet import convert_gfnet

            model = convert_gfnet(args.checkpoint, staging)
        else:
            from .poolformer import convert_poolformer

            model = convert_poolformer(args.model_name_or_path, staging, args.drop_path_rate)
    config = model.config
    form = ""
    if config.model_type == "riformer":
        form = f"{'deploy' if config.reparameterized else 'training'} form, "
    print(
        f"{type(model).__name__}: depths {tuple(config.depths)}, hidden sizes {tuple(config.hidden_sizes)}, "
        f"{config.num_labels} labels, {form}{model.num_parameters():,} parameters → {args.output_dir}"
    )
    return model


__all__ = ["build_parser", "main"]
