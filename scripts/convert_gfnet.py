"""Convert an official GFNet-H checkpoint (raoyongming/GFNet; .pth or .safetensors) into a folder that
`AutoModelForImageClassification.from_pretrained` loads. Architecture and image size are read from the tensors."""

import argparse

from riformer_hf.converters import convert_gfnet


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="e.g. gfnet-h-b.pth")
    parser.add_argument("--output_dir", required=True, help="folder for config, weights and preprocessor config")
    args = parser.parse_args()
    try:
        model = convert_gfnet(args.checkpoint, args.output_dir)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None
    config = model.config
    print(
        f"GFNet-H: depths {tuple(config.depths)}, hidden sizes {tuple(config.hidden_sizes)}, {config.num_labels} "
        f"labels, {sum(p.numel() for p in model.parameters()):,} parameters, made for {config.image_size} px."
    )
    print(f"Saved to {args.output_dir}")


if __name__ == "__main__":
    main()
