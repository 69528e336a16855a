"""The graph a deploy-form RIFormer classifier is exported as: the same function with every per-channel scale folded
into a neighbouring convolution or norm, so that a runtime sees one norm and two 1×1 convolutions per block.

Per block, `x + ls1 * norm_reparam(x)` keeps one affine (`ls1` folded into it), `norm2`'s affine moves into `fc1`
(a 1×1 convolution of `γ n + β` is one of `n` with input columns scaled by `γ` and bias `W β + b`) and `ls2` into
`fc2`; the final norm's affine moves into the classifier (the spatial mean commutes with a per-channel affine). Norms
without an affine export as a bare InstanceNormalization, which leaves ONNX Runtime fewer elementwise passes over
the activations, and INT8 fewer quantise / dequantise pairs. Folds are computed in float64.
"""

import copy

import torch
from torch import nn

from ..models.riformer.modeling_riformer import RIFormerBlock, RIFormerForImageClassification, RIFormerGroupNorm


def _norm(hidden_states: torch.Tensor, eps: float) -> torch.Tensor:
    """One-group GroupNorm without affine, as an instance norm of each sample's values (`group_norm` would export a
    multiplication by ones and an addition of zeros after it)."""
    flat = nn.functional.instance_norm(hidden_states.flatten(1).unsqueeze(1), eps=eps)
    return flat.view_as(hidden_states)


class FoldedRIFormerBlock(nn.Module):
    """A deploy-form block with `ls1`, `norm2`'s affine and `ls2` folded away (see the module docstring)."""

    def __init__(self, block: RIFormerBlock):
        super().__init__()
        if not block.is_reparameterized:
            raise ValueError("Fold the token mixer first (reparameterize_model): this block is in training form.")
        norm, norm2, fc1, fc2 = block.norm_reparam, block.norm2, block.mlp.fc1, block.mlp.fc2
        dtype = fc1.weight.dtype
        ls1, ls2 = block.layer_scale_1.detach().double(), block.layer_scale_2.detach().double()
        gamma, beta = norm2.weight.detach().double(), norm2.bias.detach().double()
        fc1_weight = fc1.weight.detach().double().flatten(1)
        fc2_weight = fc2.weight.detach().double().flatten(1)
        self.eps, self.eps2 = norm.eps, norm2.eps
        self.weight = nn.Parameter((ls1 * norm.weight.detach().double()).to(dtype)[:, None, None])
        self.bias = nn.Parameter((ls1 * norm.bias.detach().double()).to(dtype)[:, None, None])
        self.fc1 = nn.Conv2d(fc1.in_channels, fc1.out_channels, 1).to(fc1.weight.device, dtype)
        self.fc2 = nn.Conv2d(fc2.in_channels, fc2.out_channels, 1).to(fc2.weight.device, dtype)
        with torch.no_grad():
            self.fc1.weight.copy_((fc1_weight * gamma).to(dtype).view_as(fc1.weight))
            self.fc1.bias.copy_((fc1.bias.detach().double() + fc1_weight @ beta).to(dtype))
            self.fc2.weight.copy_((fc2_weight * ls2[:, None]).to(dtype).view_as(fc2.weight))
            self.fc2.bias.copy_((ls2 * fc2.bias.detach().double()).to(dtype))
        self.act = copy.deepcopy(block.mlp.act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + _norm(hidden_states, self.eps) * self.weight + self.bias
        return hidden_states + self.fc2(self.act(self.fc1(_norm(hidden_states, self.eps2))))


class FoldedRIFormerClassifier(nn.Module):
    """`pixel_values → logits` of a deploy-form `RIFormerForImageClassification`, folded for export."""

    def __init__(self, model: RIFormerForImageClassification):
        super().__init__()
        stages = model.riformer.encoder.stages
        self.patch_embeddings = nn.ModuleList(copy.deepcopy(stage.patch_embeddings) for stage in stages)
        self.blocks = nn.ModuleList(
            nn.Sequential(*(FoldedRIFormerBlock(block) for block in stage.blocks)) for stage in stages
        )
        self.eps = model.norm.eps
        classifier = model.classifier
        gamma, beta = model.norm.weight.detach().double(), model.norm.bias.detach().double()
        self.classifier = nn.Linear(classifier.in_features, classifier.out_features).to(
            classifier.weight.device, classifier.weight.dtype
        )
        weight = classifier.weight.detach().double()
        with torch.no_grad():
            self.classifier.weight.copy_(weight * gamma)
            self.classifier.bias.copy_(classifier.bias.detach().double() + weight @ beta)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden_states = pixel_values
        for embed, blocks in zip(self.patch_embeddings, self.blocks):
            hidden_states = blocks(embed(hidden_states))
        return self.classifier(_norm(hidden_states, self.eps).mean(dim=(-2, -1)))


def can_fold(model: nn.Module) -> bool:
    """Whether `model` is a deploy-form RIFormer classifier with a linear head and unreplaced block modules (what
    `FoldedRIFormerClassifier` takes); anything else exports through its own forward."""
    if not isinstance(model, RIFormerForImageClassification) or not model.config.reparameterized:
        return False
    blocks = [module for module in model.modules() if isinstance(module, RIFormerBlock)]
    return type(model.classifier) is nn.Linear and all(
        (type(block.norm_reparam), type(block.norm2), type(block.mlp.fc1), type(block.mlp.fc2))
        == (RIFormerGroupNorm, RIFormerGroupNorm, nn.Conv2d, nn.Conv2d)
        for block in blocks
    )
