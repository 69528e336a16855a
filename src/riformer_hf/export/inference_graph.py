"""The graph a deploy-form RIFormer classifier is exported as: the same function with every per-channel scale folded
into a neighbouring convolution or norm, so that a runtime sees per block two norms (one with an affine), two 1×1
convolutions, one activation and the two residual adds.

Per block, `x + ls1 * norm_reparam(x)` keeps one affine (`ls1` folded into it), `norm2`'s affine moves into `fc1`
(a 1×1 convolution of `γ n + β` is one of `n` with input columns scaled by `γ` and bias `W β + b`) and `ls2` into
`fc2` (the layer-scale folds are the fused CPU path's, `fused_riformer.fold_layer_scales`); the final norm's affine
moves into the classifier (the spatial mean commutes with a per-channel affine). Norms
without an affine export as a bare InstanceNormalization, which leaves ONNX Runtime fewer elementwise passes over
the activations, and INT8 fewer quantise / dequantise pairs. Folds are computed in float64.

The norms have two spellings (`NORMS`): "instance_norm" (the default, for ONNX Runtime: one InstanceNormalization of
the sample flattened to one channel, reshaped back) and "moments" (for OpenVINO: mean and variance over (C, H, W)
written out on the 4-D tensor, which OpenVINO fuses into one MVN with the per-channel affine after it, and no reshape
that would force its blocked layouts back to plain ones; ONNX Runtime would run the written-out moments as five
operators).
"""

import copy

import torch
from torch import nn

from ..models.riformer.fused_riformer import fold_layer_scales
from ..models.riformer.modeling_riformer import RIFormerBlock, RIFormerForImageClassification


def _norm(hidden_states: torch.Tensor, eps: float) -> torch.Tensor:
    """One-group GroupNorm without affine, as an instance norm of each sample's values (`group_norm` would export a
    multiplication by ones and an addition of zeros after it)."""
    flat = nn.functional.instance_norm(hidden_states.flatten(1).unsqueeze(1), eps=eps)
    return flat.view_as(hidden_states)


def _moments_norm(hidden_states: torch.Tensor, eps: float) -> torch.Tensor:
    """The same normalisation as `_norm`, written as mean and variance over (C, H, W) of the 4-D tensor."""
    mean = hidden_states.mean(dim=(1, 2, 3), keepdim=True)
    centred = hidden_states - mean
    variance = (centred * centred).mean(dim=(1, 2, 3), keepdim=True)
    return centred / torch.sqrt(variance + eps)


NORMS = {"instance_norm": _norm, "moments": _moments_norm}


def _f64(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().double()


def _absorb_input_affine(layer: nn.Module, gamma: torch.Tensor, beta: torch.Tensor) -> nn.Module:
    """A copy of `layer` (a 1×1 convolution or a linear layer) that, applied to `n`, gives `layer(γ n + β)`."""
    folded = copy.deepcopy(layer)
    weight = _f64(layer.weight).flatten(1)
    with torch.no_grad():
        folded.weight.copy_((weight * _f64(gamma)).view_as(layer.weight))
        folded.bias.copy_(_f64(layer.bias) + weight @ _f64(beta))
    return folded


def _with_weights(layer: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A copy of the convolution `layer` holding `weight` (any shape with its number of elements) and `bias`."""
    folded = copy.deepcopy(layer)
    with torch.no_grad():
        folded.weight.copy_(weight.view_as(layer.weight))
        folded.bias.copy_(bias)
    return folded


class FoldedRIFormerBlock(nn.Module):
    """A deploy-form block with `ls1`, `norm2`'s affine and `ls2` folded away (see the module docstring)."""

    def __init__(self, block: RIFormerBlock, norm: str = "instance_norm"):
        super().__init__()
        self.norm = NORMS[norm]
        if not block.is_reparameterized:
            raise ValueError("Fold the token mixer first (reparameterize_model): this block is in training form.")
        norm, norm2 = block.norm_reparam, block.norm2
        self.eps, self.eps2 = norm.eps, norm2.eps
        dtype = norm.weight.dtype
        folded = fold_layer_scales(block, torch.float64)
        self.weight = nn.Parameter(folded.norm_weight.detach().to(dtype)[:, None, None])
        self.bias = nn.Parameter(folded.norm_bias.detach().to(dtype)[:, None, None])
        self.fc1 = _absorb_input_affine(block.mlp.fc1, norm2.weight, norm2.bias)
        self.act = copy.deepcopy(block.mlp.act)
        self.fc2 = _with_weights(block.mlp.fc2, folded.fc2_weight, folded.fc2_bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.norm(hidden_states, self.eps) * self.weight + self.bias
        return hidden_states + self.fc2(self.act(self.fc1(self.norm(hidden_states, self.eps2))))


class FoldedRIFormerClassifier(nn.Module):
    """`pixel_values → logits` of a deploy-form `RIFormerForImageClassification`, folded for export."""

    def __init__(self, model: RIFormerForImageClassification, norm: str = "instance_norm"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r}; choose one of {', '.join(NORMS)}.")
        self.norm = NORMS[norm]
        stages = model.riformer.encoder.stages
        self.patch_embeddings = nn.ModuleList(copy.deepcopy(stage.patch_embeddings) for stage in stages)
        self.blocks = nn.ModuleList(
            nn.Sequential(*(FoldedRIFormerBlock(block, norm) for block in stage.blocks)) for stage in stages
        )
        self.eps = model.norm.eps
        self.classifier = _absorb_input_affine(model.classifier, model.norm.weight, model.norm.bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden_states = pixel_values
        for embed, blocks in zip(self.patch_embeddings, self.blocks):
            hidden_states = blocks(embed(hidden_states))
        return self.classifier(self.norm(hidden_states, self.eps).mean(dim=(-2, -1)))


def can_fold(model: nn.Module) -> bool:
    """Whether `model` is a deploy-form RIFormer classifier with a linear head and unreplaced block modules (what
    `FoldedRIFormerClassifier` takes); anything else exports through its own forward."""
    if not isinstance(model, RIFormerForImageClassification) or not model.config.reparameterized:
        return False
    blocks = [module for module in model.modules() if isinstance(module, RIFormerBlock)]
    return type(model.classifier) is nn.Linear and all(block.has_own_modules() for block in blocks)
