"""Checkpoint converters: published mmpretrain RIFormer and official GFNet-H weights → riformer_hf models.

Both read a `.pth` (bare state dict, or wrapped the mmengine / DeiT way) or a `.safetensors` file, infer the
architecture from the tensor shapes, map every key through one explicit table and refuse anything that does not fit:
a key with no counterpart, a tensor the model needs but the file lacks, or a shape that differs. The written folder
(config with `auto_map`, `model.safetensors`, modelling code, `preprocessor_config.json`) loads with
`AutoModelForImageClassification.from_pretrained`.
"""

import argparse
import math
import os
import pickle
import re
from pathlib import Path

import torch

from .configuration_gfnet import GFNET_PRESETS, GFNetConfig
from .configuration_riformer import RIFORMER_PRESETS, RIFormerConfig
from .modeling_gfnet import GFNetForImageClassification
from .modeling_riformer import RIFormerForImageClassification

# Keys under which training frameworks nest the weights: mmengine, DeiT / GFNet, DataParallel-style wrappers.
CHECKPOINT_WRAPPERS = ("state_dict", "model", "module")
_MAX_LISTED = 20


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict inside a `.safetensors` or `.pth` file (loaded with `weights_only=True`), unwrapped."""
    return unwrap_state_dict(_read_checkpoint(path))


def _read_checkpoint(path: str | os.PathLike):
    """The object saved in a `.safetensors` or `.pth` file, as saved (possibly a wrapper around the weights)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # DeiT-style files keep the training `args`
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        try:
            objects = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or "unknown"
        except Exception:  # not a zip-format file: the refusal itself is the explanation
            objects = "unknown"
        raise ValueError(
            f"{path} holds Python objects besides tensors ({objects}), which `torch.load(weights_only=True)` refuses "
            "to unpickle. If you trust the file, save its weights alone and convert that file: "
            f"`torch.save(torch.load({str(path)!r}, weights_only=False)['state_dict'], 'weights.pth')` "
            "(use the key that holds the weights: 'state_dict', 'model' or none)."
        ) from error


def unwrap_state_dict(checkpoint) -> dict[str, torch.Tensor]:
    """The flat `{name: tensor}` dict in `checkpoint`: bare, or nested under 'state_dict', 'model' or 'module'."""
    state = checkpoint
    while isinstance(state, dict) and not _is_state_dict(state):
        wrapper = next((key for key in CHECKPOINT_WRAPPERS if isinstance(state.get(key), dict)), None)
        if wrapper is None:
            raise ValueError(
                "Found no state dict in the checkpoint: expected a dict of tensors, bare or under one of "
                f"{list(CHECKPOINT_WRAPPERS)}; got a dict with keys {_listed(sorted(map(str, state)))}."
            )
        state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"Expected the checkpoint to hold a dict of tensors; got {type(state).__name__}.")
    if all(key.startswith("module.") for key in state):  # saved from a DistributedDataParallel wrapper
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return dict(state)


def _is_state_dict(candidate: dict) -> bool:
    return bool(candidate) and all(isinstance(value, torch.Tensor) for value in candidate.values())


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return f"[{shown}{f', … and {len(names) - _MAX_LISTED} more' if len(names) > _MAX_LISTED else ''}]"


def _count_blocks(state_dict: dict, block_pattern: str) -> int:
    """Blocks in a stage: one more than the largest index captured by `block_pattern` (0 if none)."""
    indices = [int(match.group(1)) for key in state_dict if (match := re.match(block_pattern, key))]
    return max(indices) + 1 if indices else 0


def _weight_and_bias(source: str, target: str) -> list[tuple[str, str, None]]:
    return [(f"{source}.{name}", f"{target}.{name}", None) for name in ("weight", "bias")]


def _mmengine_class_names(checkpoint) -> list[str] | None:
    """Class names an mmengine checkpoint records in `meta['dataset_meta']['classes']`, if any."""
    meta = checkpoint.get("meta") if isinstance(checkpoint, dict) else None
    dataset_meta = meta.get("dataset_meta") if isinstance(meta, dict) else None
    classes = dataset_meta.get("classes") if isinstance(dataset_meta, dict) else None
    return [str(name) for name in classes] if isinstance(classes, (list, tuple)) else None


def _required(state_dict: dict, key: str, what: str) -> torch.Tensor:
    if key not in state_dict:
        raise ValueError(
            f"This is not {what} checkpoint: it has no {key!r}. Its keys: {_listed(sorted(state_dict))}."
        )
    return state_dict[key]


def _load_mapped(model_class, config, state_dict, pairs, what: str):
    """A `model_class(config)` holding the checkpoint tensors, after checking keys and shapes against `pairs`.

    `pairs` lists `(checkpoint key, model key, checkpoint shape or None)`; None means the model tensor's shape, a
    shape means the tensor is reshaped to the model's (e.g. a [C, 1, 1, 1] depthwise kernel to a [C] scale).
    """
    with torch.device("meta"):
        model = model_class(config)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    targets = {target for _, target, _ in pairs}
    if targets != set(shapes):  # the table and the model disagree: a bug here, not in the checkpoint
        raise RuntimeError(f"{what} key table and {model_class.__name__} differ: {sorted(targets ^ set(shapes))}")

    context = (
        f"Cannot convert this {what} checkpoint (depths {tuple(config.depths)}, hidden sizes "
        f"{tuple(config.hidden_sizes)}, {config.num_labels} labels, as inferred from its tensors)"
    )
    sources = {source for source, _, _ in pairs}
    leftover = sorted(set(state_dict) - sources)
    missing = sorted(sources - set(state_dict))
    problems = []
    if leftover:
        problems.append(f"{len(leftover)} key(s) with no counterpart in {model_class.__name__}: {_listed(leftover)}")
    if missing:
        problems.append(f"{len(missing)} key(s) the architecture needs but the checkpoint lacks: {_listed(missing)}")
    if problems:
        raise ValueError(f"{context}: {'; '.join(problems)}.")

    mismatched = []
    for source, target, source_shape in pairs:
        found, expected = tuple(state_dict[source].shape), tuple(source_shape or shapes[target])
        if found != expected:
            mismatched.append(f"{source} (→ {target}): checkpoint {found}, expected {expected}")
    if mismatched:
        raise ValueError(f"{context}: shape mismatch in {len(mismatched)} tensor(s): {'; '.join(mismatched)}.")

    weights = {
        target: state_dict[source].detach().to(torch.float32, copy=True).reshape(shapes[target])
        for source, target, _ in pairs
    }
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------------
# mmpretrain RIFormer (ImageClassifier: backbone → norm6 → global average pooling → head.fc)


def infer_riformer_config(state_dict: dict[str, torch.Tensor], image_size: int | None = None) -> RIFormerConfig:
    """The `RIFormerConfig` of an mmpretrain RIFormer classifier state dict, read from its tensor shapes.

    The tensors say nothing about the resolution: `image_size` defaults to 224 (give 384 for the 384 px fine-tunes).
    Layer-scale init and `crop_pct` come from the paper's preset with the same widths (0.9 for S, 0.95 for M).
    """
    stem = _required(state_dict, "backbone.patch_embed.proj.weight", "an mmpretrain RIFormer classifier")
    head = _required(state_dict, "head.fc.weight", "an mmpretrain RIFormer classifier")
    depths, widths, ratios = [], [], set()
    while any(key.startswith(f"backbone.network.{2 * len(depths)}.") for key in state_dict):
        stage = 2 * len(depths)
        depths.append(_count_blocks(state_dict, rf"backbone\.network\.{stage}\.(\d+)\."))
        embed = stem if stage == 0 else state_dict.get(f"backbone.network.{stage - 1}.proj.weight")
        norm = state_dict.get(f"backbone.network.{stage}.0.norm2.weight")
        if embed is None and norm is None:
            raise ValueError(
                f"Cannot tell the width of stage {len(depths)}: the checkpoint has neither "
                f"'backbone.network.{stage - 1}.proj.weight' nor 'backbone.network.{stage}.0.norm2.weight'."
            )
        widths.append(embed.shape[0] if embed is not None else norm.shape[0])
        fc1 = state_dict.get(f"backbone.network.{stage}.0.mlp.fc1.weight")
        if fc1 is not None:
            ratios.add(fc1.shape[0] / widths[-1])
    if not depths:
        raise ValueError("This mmpretrain RIFormer checkpoint has no blocks (no 'backbone.network.0.*' keys).")
    if len(ratios) > 1:
        raise ValueError(f"The MLP ratio differs between stages ({sorted(ratios)}); RIFormerConfig has one mlp_ratio.")
    block_norms = (re.match(r"backbone\.network\.\d+\.\d+\.(norm_reparam|norm1)\.", key) for key in state_dict)
    forms = {match.group(1) for match in block_norms if match}
    if len(forms) > 1:
        raise ValueError(
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
        image_size=image_size or 224,
        crop_pct=same_widths[0]["crop_pct"] if same_widths else 0.9,
        **extra,
    )


def mmpretrain_riformer_key_table(config: RIFormerConfig) -> list[tuple[str, str, tuple | None]]:
    """`(mmpretrain key, riformer_hf key, mmpretrain shape if it differs)` for every tensor of the classifier."""
    pairs = _weight_and_bias("backbone.patch_embed.proj", "riformer.encoder.stages.0.patch_embeddings")
    block_tensors = ["norm_reparam" if config.reparameterized else "norm1", "norm2", "mlp.fc1", "mlp.fc2"]
    for stage, (depth, width) in enumerate(zip(config.depths, config.hidden_sizes)):
        ours = f"riformer.encoder.stages.{stage}"
        if stage > 0:
            pairs += _weight_and_bias(f"backbone.network.{2 * stage - 1}.proj", f"{ours}.patch_embeddings")
        for block in range(depth):
            theirs, mine = f"backbone.network.{2 * stage}.{block}", f"{ours}.blocks.{block}"
            for module in block_tensors:
                pairs += _weight_and_bias(f"{theirs}.{module}", f"{mine}.{module}")
            pairs += [(f"{theirs}.layer_scale_{i}", f"{mine}.layer_scale_{i}", None) for i in (1, 2)]
            if not config.reparameterized:  # depthwise 1×1 conv `affine`: kernel [C, 1, 1, 1] is the scale
                pairs.append((f"{theirs}.token_mixer.affine.weight", f"{mine}.token_mixer.scale", (width, 1, 1, 1)))
                pairs.append((f"{theirs}.token_mixer.affine.bias", f"{mine}.token_mixer.shift", None))
    last = 2 * (len(config.depths) - 1)
    return pairs + _weight_and_bias(f"backbone.norm{last}", "norm") + _weight_and_bias("head.fc", "classifier")


def convert_mmpretrain_riformer(
    checkpoint, output_dir: str | os.PathLike | None, reparameterize: bool = False, image_size: int | None = None
) -> RIFormerForImageClassification:
    """An mmpretrain RIFormer classifier checkpoint as a `RIFormerForImageClassification`, saved to `output_dir`.

    `checkpoint` is a `.pth` / `.safetensors` path or an already loaded (possibly wrapped) state dict. Training-form
    checkpoints give a training-form model, or a deploy-form one with `reparameterize=True`; deploy-form checkpoints
    (`norm_reparam`) give a deploy-form model. `image_size` (default 224) sets the evaluation resolution. Class
    names recorded by mmengine (`meta['dataset_meta']['classes']`) become `id2label`.
    """
    raw = checkpoint if isinstance(checkpoint, dict) else _read_checkpoint(checkpoint)
    state_dict = unwrap_state_dict(raw)
    config = infer_riformer_config(state_dict, image_size=image_size)
    names = _mmengine_class_names(raw)
    if names and len(names) == config.num_labels:
        config.id2label = dict(enumerate(names))
        config.label2id = {name: index for index, name in enumerate(names)}
    model = _load_mapped(
        RIFormerForImageClassification, config, state_dict, mmpretrain_riformer_key_table(config), "mmpretrain RIFormer"
    )
    if reparameterize:
        model.reparameterize()
    if output_dir is not None:
        model.save_pretrained(output_dir)
    return model


# ---------------------------------------------------------------------------------------------------------------------
# GFNet-H (raoyongming/GFNet `GFNetPyramid`)


def infer_gfnet_config(state_dict: dict[str, torch.Tensor]) -> GFNetConfig:
    """The `GFNetConfig` of an official GFNet-H state dict; the image size follows from the position embedding."""
    stem = _required(state_dict, "patch_embed.0.proj.weight", "a GFNet-H (GFNetPyramid)")
    position = _required(state_dict, "pos_embed", "a GFNet-H (GFNetPyramid)")
    head = _required(state_dict, "head.weight", "a GFNet-H (GFNetPyramid)")
    grid = math.isqrt(position.shape[1])
    if position.ndim != 3 or grid * grid != position.shape[1]:
        raise ValueError(f"pos_embed has shape {tuple(position.shape)}: expected (1, grid * grid, channels).")
    depths, widths, ratios = [], [], set()
    while f"patch_embed.{len(depths)}.proj.weight" in state_dict:
        stage = len(depths)
        widths.append(state_dict[f"patch_embed.{stage}.proj.weight"].shape[0])
        depths.append(_count_blocks(state_dict, rf"blocks\.{stage}\.(\d+)\."))
        fc1 = state_dict.get(f"blocks.{stage}.0.mlp.fc1.weight")
        if fc1 is not None:
            ratios.add(fc1.shape[0] / widths[-1])
    if len(ratios) > 1:
        raise ValueError(f"The MLP ratio differs between stages ({sorted(ratios)}); GFNetConfig has one mlp_ratio.")
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
        pairs += _weight_and_bias(f"patch_embed.{stage}.proj", f"{ours}.patch_embeddings")
        for block in range(depth):
            theirs, mine = f"blocks.{stage}.{block}", f"{ours}.blocks.{block}"
            for module in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
                pairs += _weight_and_bias(f"{theirs}.{module}", f"{mine}.{module}")
            pairs.append((f"{theirs}.filter.complex_weight", f"{mine}.filter.complex_weight", None))
            pairs.append((f"{theirs}.gamma", f"{mine}.layer_scale", None))
    return pairs + _weight_and_bias("norm", "norm") + _weight_and_bias("head", "classifier")


def convert_gfnet(checkpoint, output_dir: str | os.PathLike | None) -> GFNetForImageClassification:
    """An official GFNet-H checkpoint as a `GFNetForImageClassification`, saved to `output_dir` unless it is None.

    `checkpoint` is a `.pth` / `.safetensors` path or an already loaded (possibly wrapped) state dict. Depths, widths,
    MLP ratio, labels and the image size the filters were made for are read from the tensors.
    """
    state_dict = unwrap_state_dict(checkpoint if isinstance(checkpoint, dict) else _read_checkpoint(checkpoint))
    config = infer_gfnet_config(state_dict)
    model = _load_mapped(GFNetForImageClassification, config, state_dict, gfnet_key_table(config), "GFNet-H")
    if output_dir is not None:
        model.save_pretrained(output_dir)
    return model


__all__ = [
    "convert_gfnet",
    "convert_mmpretrain_riformer",
    "gfnet_key_table",
    "infer_gfnet_config",
    "infer_riformer_config",
    "load_checkpoint",
    "mmpretrain_riformer_key_table",
    "unwrap_state_dict",
]
