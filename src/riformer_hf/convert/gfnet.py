"""Official GFNet-H checkpoints (raoyongming/GFNet `GFNetPyramid`) → `GFNetForImageClassification` folders; the
architecture and the image size the filters were made for are read from the tensors."""

import math
import os

import torch

from ..data.preprocessing import make_image_processor
from ..errors import UserError
from ..models.gfnet import GFNET_PRESETS, GFNetConfig, GFNetForImageClassification
from .checkpoints import count_blocks, load_mapped, read_checkpoint, required, unwrap_state_dict, weight_and_bias

# DeiT's evaluation preprocessing, which GFNet uses: resize to image_size / 0.875, centre crop.
GFNET_CROP_PCT = 0.875


def infer_gfnet_config(state_dict: dict[str, torch.Tensor]) -> GFNetConfig:
    """The `GFNetConfig` of an official GFNet-H state dict; the image size follows from the position embedding."""
    stem = required(state_dict, "patch_embed.0.proj.weight", "a GFNet-H (GFNetPyramid)")
    position = required(state_dict, "pos_embed", "a GFNet-H (GFNetPyramid)")
    head = required(state_dict, "head.weight", "a GFNet-H (GFNetPyramid)")
    grid = math.isqrt(position.shape[1])
    if position.ndim != 3 or grid * grid != position.shape[1]:
        raise UserError(f"pos_embed has shape {tuple(position.shape)}: expected (1, grid * grid, channels).")
    depths, widths, ratios = [], [], set()
    while f"patch_embed.{len(depths)}.proj.weight" in state_dict:
        stage = len(depths)
        widths.append(state_dict[f"patch_embed.{stage}.proj.weight"].shape[0])
        depths.append(count_blocks(state_dict, rf"blocks\.{stage}\.(\d+)\."))
        fc1 = state_dict.get(f"blocks.{stage}.0.mlp.fc1.weight")
        if fc1 is not None:
            ratios.add(fc1.shape[0] / widths[-1])
    if len(ratios) > 1:
        raise UserError(f"The MLP ratio differs between stages ({sorted(ratios)}); GFNetConfig has one mlp_ratio.")
    same = (p for p in GFNET_PRESETS.values() if list(p["depths"]) == depths and list(p["hidden_sizes"]) == widths)
    preset = next(same, {})
    return GFNetConfig(
        num_channels=stem.shape[1],
        patch_size=stem.shape[-1],
        image_size=grid * stem.shape[-1],
        depths=tuple(depths),
        hidden_sizes=tuple(widths),
        mlp_ratio=ratios.pop() if ratios else 4.0,
        num_labels=head.shape[0],
        **{k: v for k, v in preset.items() if k not in ("depths", "hidden_sizes")},
    )


def gfnet_key_table(config: GFNetConfig) -> list[tuple[str, str, tuple | None]]:
    """`(GFNet key, riformer_hf key, GFNet shape if it differs)` for every tensor of GFNet-H."""
    grid = config.grid_sizes[0]
    pairs = [("pos_embed", "gfnet.encoder.position_embeddings", (1, grid * grid, config.hidden_sizes[0]))]
    for stage, depth in enumerate(config.depths):
        ours = f"gfnet.encoder.stages.{stage}"
        pairs += weight_and_bias(f"patch_embed.{stage}.proj", f"{ours}.patch_embeddings")
        for block in range(depth):
            theirs, mine = f"blocks.{stage}.{block}", f"{ours}.blocks.{block}"
            for module in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                pairs += weight_and_bias(f"{theirs}.{module}", f"{mine}.{module}")
            pairs.append((f"{theirs}.filter.complex_weight", f"{mine}.filter.complex_weight", None))
            pairs.append((f"{theirs}.gamma", f"{mine}.layer_scale", None))
    return pairs + weight_and_bias("norm", "norm") + weight_and_bias("head", "classifier")


def convert_gfnet(checkpoint, output_dir: str | os.PathLike | None) -> GFNetForImageClassification:
    """An official GFNet-H checkpoint as a `GFNetForImageClassification`, saved to `output_dir` unless it is None.

    `checkpoint` is a `.pth` / `.safetensors` path or an already loaded (possibly wrapped) state dict. Depths, widths,
    MLP ratio, labels and the image size the filters were made for are read from the tensors.
    """
    state_dict = unwrap_state_dict(checkpoint if isinstance(checkpoint, dict) else read_checkpoint(checkpoint))
    config = infer_gfnet_config(state_dict)
    model = load_mapped(GFNetForImageClassification, config, state_dict, gfnet_key_table(config), "GFNet-H")
    if output_dir is not None:
        model.save_pretrained(output_dir)
        make_image_processor(config.image_size, GFNET_CROP_PCT).save_pretrained(output_dir)
    return model


__all__ = ["convert_gfnet", "gfnet_key_table", "infer_gfnet_config"]
