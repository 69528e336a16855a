"""Embedded default: build a small RIFormer, re-parameterise it, save it, reload it through the Auto classes and
classify bundled digits images with `pipeline`. No network."""

import argparse
import tempfile

import torch
from transformers import AutoModelForImageClassification, pipeline

import riformer_hf
from riformer_hf.data import digits_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", default=None, help="where to save the deploy model (default: a temp dir)")
    args = parser.parse_args()

    torch.manual_seed(0)
    data = digits_dataset()
    names = data["train"].features["label"].names
    config = riformer_hf.RIFormerConfig(
        depths=(1, 1, 2, 1), hidden_sizes=(16, 32, 48, 64), image_size=32, crop_pct=1.0,
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
    )
    model = riformer_hf.RIFormerForImageClassification(config).eval()
    deploy = riformer_hf.reparameterize_model(model)
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        delta = (model(pixels).logits - deploy(pixels).logits).abs().max().item()
    print(f"training form: {sum(p.numel() for p in model.parameters()):,} params; "
          f"deploy form: {sum(p.numel() for p in deploy.parameters()):,} params; max |Δlogits| = {delta:.2e}")

    output_dir = args.output_dir or tempfile.mkdtemp(prefix="riformer_demo_")
    deploy.save_pretrained(output_dir)
    reloaded = AutoModelForImageClassification.from_pretrained(output_dir)
    print(f"saved to {output_dir}; reloaded as {type(reloaded).__name__} (reparameterized={reloaded.config.reparameterized})")
    classifier = pipeline("image-classification", model=output_dir)
    for example in data["test"].select(range(5)):
        top = classifier(example["image"], top_k=1)[0]
        print(f"digit {names[example['label']]}: predicted {top['label']} ({top['score']:.2f}) [untrained model]")


if __name__ == "__main__":
    main()
