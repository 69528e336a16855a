"""Convert a published mmpretrain RIFormer checkpoint (.pth or .safetensors) into a folder that
`AutoModelForImageClassification.from_pretrained` loads. The architecture is read from the tensors."""

import argparse

from riformer_hf.converters import convert_mmpretrain_riformer


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="e.g. riformer-s12_32xb128_in1k_20230406-6741ce71.pth")
    parser.add_argument("--output_dir", required=True, help="folder for config, weights and preprocessor config")
    parser.add_argument("--reparameterize", action="store_true", help="fold the token mixers into the norms (deploy)")
    parser.add_argument("--image_size", type=int, default=None, help="evaluation size (default 224; 384 for -384px)")
    args = parser.parse_args()
    try:
        model = convert_mmpretrain_riformer(args.checkpoint, args.output_dir, args.reparameterize, args.image_size)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    config = model.config
    print(
        f"RIFormer: depths {tuple(config.depths)}, hidden sizes {tuple(config.hidden_sizes)}, {config.num_labels} "
        f"labels, {'deploy' if config.reparameterized else 'training'} form, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, image size {config.image_size}."
    )
    print(f"Saved to {args.output_dir}")


if __name__ == "__main__":
    main()
