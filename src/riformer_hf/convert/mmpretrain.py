"""Published mmpretrain RIFormer checkpoints (ImageClassifier: backbone → norm6 → average pooling → head.fc) →
`RIFormerForImageClassification` folders, in the form they were saved (or folded with `reparameterize=True`)."""

import os
import re

import torch

from ..data.preprocessing import crop_pct_for_widths, make_image_processor
from ..errors import UserError
from ..models.riformer import RIFORMER_PRESETS, RIFormerConfig, RIFormerForImageClassification
from .checkpoints import count_blocks, load_mapped, read_checkpoint, required, unwrap_state_dict, weight_and_bias


def _mmengine_class_names(checkpoint) -> list[str] | None:
    """Class names an mmengine checkpoint records in `meta['dataset_meta']['classes']`, if any."""
    meta = checkpoint.get("meta") if isinstance(checkpoint, dict) else None
    dataset_meta = meta.get("dataset_meta") if isinstance(meta, dict) else None
    classes = dataset_meta.get("classes") if isinstance(dataset_meta, dict) else None
    return [str(name) for name in classes] if isinstance(classes, (list, tuple)) else None


def infer_riformer_config(state_dict: dict[str, torch.Tensor]) -> RIFormerConfig:
    """The `RIFormerConfig` of an mmpretrain RIFormer classifier state dict, read from its tensor shapes.

    The layer-scale init comes from the paper's preset with the same layout.
    """
    stem = required(state_dict, "backbone.patch_embed.proj.weight", "an mmpretrain RIFormer classifier")
    head = required(state_dict, "head.fc.weight", "an mmpretrain RIFormer classifier")
    depths, widths, ratios = [], [], set()
    while any(key.startswith(f"backbone.network.{2 * len(depths)}.") for key in state_dict):
        stage = 2 * len(depths)
        depths.append(count_blocks(state_dict, rf"backbone\.network\.{stage}\.(\d+)\."))
        embed = stem if stage == 0 else state_dict.get(f"backbone.network.{stage - 1}.proj.weight")
        norm = state_dict.get(f"backbone.network.{stage}.0.norm2.weight")
        if embed is None and norm is None:
            raise UserError(
                f"Cannot tell the width of stage {len(depths)}: the checkpoint has neither "
                f"'backbone.network.{stage - 1}.proj.weight' nor 'backbone.network.{stage}.0.norm2.weight'."
            )
        widths.append(embed.shape[0] if embed is not None else norm.shape[0])
        fc1 = state_dict.get(f"backbone.network.{stage}.0.mlp.fc1.weight")
        if fc1 is not None:
            ratios.add(fc1.shape[0] / widths[-1])
    if not depths:
        raise UserError("This mmpretrain RIFormer checkpoint has no blocks (no 'backbone.network.0.*' keys).")
    if len(ratios) > 1:
        raise UserError(f"The MLP ratio differs between stages ({sorted(ratios)}); RIFormerConfig has one mlp_ratio.")
    block_norms = (re.match(r"backbone\.network\.\d+\.\d+\.(norm_reparam|norm1)\.", key) for key in state_dict)
    forms = {match.group(1) for match in block_norms if match}
    if len(forms) > 1:
        raise UserError(
            "This checkpoint mixes training-form blocks (norm1 + token_mixer) and deploy-form blocks (norm_reparam); "
            "convert a checkpoint that is wholly one or the other."
        )
    same_widths = [p for p in RIFORMER_PRESETS.values() if list(p["hidden_sizes"]) == widths]
    preset = next((p for p in same_widths if list(p["depths"]) == depths), None)
    extra = {"layer_scale_init_value": preset["layer_scale_init_value"]} if preset else {}
    later = len(depths) - 1  # mmpretrain's convolutions: 7×7 stride 4 pad 2 stem, 3×3 stride 2 pad 1 downsampling
    return RIFormerConfig(
        num_channels=stem.shape[1],
        patch_sizes=(7,) + (3,) * later,
        strides=(4,) + (2,) * later,
        padding=(2,) + (1,) * later,
        depths=tuple(depths),
        hidden_sizes=tuple(widths),
        mlp_ratio=ratios.pop() if ratios else 4.0,
        num_labels=head.shape[0],
        reparameterized=forms == {"norm_reparam"},
        **extra,
    )


def mmpretrain_riformer_key_table(config: RIFormerConfig) -> list[tuple[str, str, tuple | None]]:
    """`(mmpretrain key, riformer_hf key, mmpretrain shape if it differs)` for every tensor of the classifier."""
    pairs = weight_and_bias("backbone.patch_embed.proj", "riformer.encoder.stages.0.patch_embeddings")
    block_tensors = ["norm_reparam" if config.reparameterized else "norm1", "norm2", "mlp.fc1", "mlp.fc2"]
    for stage, (depth, width) in enumerate(zip(config.depths, config.hidden_sizes)):
        ours = f"riformer.encoder.stages.{stage}"
        if stage > 0:
            pairs += weight_and_bias(f"backbone.network.{2 * stage - 1}.proj", f"{ours}.patch_embeddings")
        for block in range(depth):
            theirs, mine = f"backbone.network.{2 * stage}.{block}", f"{ours}.blocks.{block}"
            for module in block_tensors:
                pairs += weight_and_bias(f"{theirs}.{module}", f"{mine}.{module}")
            pairs += [(f"{theirs}.layer_scale_{i}", f"{mine}.layer_scale_{i}", None) for i in (1, 2)]
            if not config.reparameterized:  # depthwise 1×1 conv `affine`: kernel [C, 1, 1, 1] is the scale
                pairs.append((f"{theirs}.token_mixer.affine.weight", f"{mine}.token_mixer.scale", (width, 1, 1, 1)))
                pairs.append((f"{theirs}.token_mixer.affine.bias", f"{mine}.token_mixer.shift", None))
    last = 2 * (len(config.depths) - 1)
    return pairs + weight_and_bias(f"backbone.norm{last}", "norm") + weight_and_bias("head.fc", "classifier")


def convert_mmpretrain_riformer(
    checkpoint, output_dir: str | os.PathLike | None, reparameterize: bool = False, image_size: int | None = None
) -> RIFormerForImageClassification:
    """An mmpretrain RIFormer classifier checkpoint as a `RIFormerForImageClassification`, saved to `output_dir`.

    `checkpoint` is a `.pth` / `.safetensors` path or an already loaded (possibly wrapped) state dict. Training-form
    checkpoints give a training-form model, or a deploy-form one with `reparameterize=True`; deploy-form checkpoints
    (`norm_reparam`) give a deploy-form model. The tensors say nothing about the resolution: the image processor
    saved beside the weights evaluates at `image_size` (default 224; 384 for the 384 px fine-tunes) with the paper's
    crop for the model's widths (0.9 for S, 0.95 for M). Class names recorded by mmengine
    (`meta['dataset_meta']['classes']`) become `id2label`.
    """
    raw = checkpoint if isinstance(checkpoint, dict) else read_checkpoint(checkpoint)
    state_dict = unwrap_state_dict(raw)
    config = infer_riformer_config(state_dict)
    names = _mmengine_class_names(raw)
    if names and len(names) == config.num_labels:
        config.id2label = dict(enumerate(names))
        config.label2id = {name: index for index, name in enumerate(names)}
    model = load_mapped(
        RIFormerForImageClassification, config, state_dict, mmpretrain_riformer_key_table(config), "mmpretrain RIFormer"
    )
    if reparameterize:
        model.reparameterize()
    if output_dir is not None:
        model.save_pretrained(output_dir)
        make_image_processor(image_size or 224, crop_pct_for_widths(config.hidden_sizes)).save_pretrained(output_dir)
    return model


__all__ = ["convert_mmpretrain_riformer", "infer_riformer_config", "mmpretrain_riformer_key_table"]
