"""PyTorch GFNet-H: the hierarchical Global Filter Network (Rao et al., NeurIPS 2021), RIFormer's logit teacher.

Follows `GFNetPyramid` of raoyongming/GFNet: a 4×4 stride-4 patch stem plus a learned position embedding, then four
stages of blocks `x + ls * mlp(norm2(filter(norm1(x))))` separated by 2×2 stride-2 convolutions. The global filter
multiplies the orthonormal 2-D real FFT of each channel by a learned complex weight and transforms back; it always
runs in float32. Unlike the original, any input resolution works (see [`GFNetModel`]). This file only imports torch,
transformers and its config, so it travels to the Hub for `trust_remote_code`.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithNoAttention, ImageClassifierOutputWithNoAttention
from transformers.modeling_utils import PreTrainedModel

from .configuration_gfnet import GFNetConfig


# Copied from riformer_hf.models.riformer.modeling_riformer.RIFormerDropPath with RIFormer->GFNet
class GFNetDropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability `drop_prob` in training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        mask = hidden_states.new_empty(shape).bernoulli_(keep_prob)
        return hidden_states * mask / keep_prob

    def extra_repr(self) -> str:
        return f"p={self.drop_prob}"


def resize_global_filter(complex_weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A filter stored as (h, w // 2 + 1, C, 2) for an h × w grid, resized for a `height` × `width` grid.

    Bicubic with `align_corners=True` over the real and imaginary planes, as GFNet's fine-tuning code does.
    """
    rows, cols, channels, _ = complex_weight.shape
    target = (height, width // 2 + 1)
    planes = complex_weight.float().reshape(rows, cols, channels * 2).permute(2, 0, 1)[None]
    planes = F.interpolate(planes, size=target, mode="bicubic", align_corners=True)
    return planes[0].permute(1, 2, 0).reshape(*target, channels, 2)


def resize_position_embeddings(position_embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Position embeddings (1, h, w, C) resized to (1, height, width, C), bicubic as in GFNet's fine-tuning code."""
    grid = position_embeddings.float().permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).to(position_embeddings.dtype)


class GFNetGlobalFilter(nn.Module):
    """Token mixer: `irfft2(rfft2(x) * W)` over the spatial grid (orthonormal), W a learned complex weight per channel.

    `complex_weight` holds W as (height, width // 2 + 1, channels, 2) real/imaginary pairs for the grid the model was
    built for; on another grid it is resized on the fly (see [`resize_global_filter`]). The FFT runs in float32 with
    autocast disabled (half-precision FFTs are inexact and limited to power-of-two sizes); the result is cast back.
    """

    def __init__(self, dim: int, grid_size: int):
        super().__init__()
        self.complex_weight = nn.Parameter(torch.empty(grid_size, grid_size // 2 + 1, dim, 2))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:  # (batch, height, width, channels)
        height, width = hidden_states.shape[1:3]
        weight = self.complex_weight
        with torch.autocast(device_type=hidden_states.device.type, enabled=False):
            if weight.shape[:2] != (height, width // 2 + 1):
                weight = resize_global_filter(weight, height, width)
            spectrum = torch.fft.rfft2(hidden_states.float(), dim=(1, 2), norm="ortho")
            spectrum = spectrum * torch.view_as_complex(weight.float().contiguous())
            mixed = torch.fft.irfft2(spectrum, s=(height, width), dim=(1, 2), norm="ortho")
        return mixed.to(hidden_states.dtype)


class GFNetMLP(nn.Module):
    def __init__(self, config: GFNetConfig, dim: int):
        super().__init__()
        hidden = int(dim * config.mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class GFNetBlock(GradientCheckpointingLayer):
    """`x + ls * mlp(norm2(filter(norm1(x))))` on channels-last tokens (batch, height, width, channels)."""

    def __init__(self, config: GFNetConfig, dim: int, grid_size: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.filter = GFNetGlobalFilter(dim, grid_size)
        self.norm2 = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = GFNetMLP(config, dim)
        self.layer_scale = nn.Parameter(torch.full((dim,), config.layer_scale_init_value))
        self.drop_path = GFNetDropPath(drop_path)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        update = self.mlp(self.norm2(self.filter(self.norm1(hidden_states))))
        return hidden_states + self.drop_path(self.layer_scale * update)


class GFNetStage(nn.Module):
    """Patch embedding (the stem for stage 1, a 2×2 stride-2 conv after) followed by the stage's blocks."""

    def __init__(self, config: GFNetConfig, index: int, drop_path_rates: list[float]):
        super().__init__()
        in_channels = config.num_channels if index == 0 else config.hidden_sizes[index - 1]
        dim = config.hidden_sizes[index]
        stride = config.patch_size if index == 0 else 2
        self.patch_embeddings = nn.Conv2d(in_channels, dim, kernel_size=stride, stride=stride)
        grid_size = config.grid_sizes[index]
        self.blocks = nn.ModuleList(GFNetBlock(config, dim, grid_size, rate) for rate in drop_path_rates)


class GFNetEncoder(nn.Module):
    def __init__(self, config: GFNetConfig):
        super().__init__()
        grid = config.grid_sizes[0]
        self.position_embeddings = nn.Parameter(torch.empty(1, grid, grid, config.hidden_sizes[0]))
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages, start = [], 0
        for index, depth in enumerate(config.depths):
            stages.append(GFNetStage(config, index, rates[start : start + depth]))
            start += depth
        self.stages = nn.ModuleList(stages)

    def add_position_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The stem output (batch, channels, height, width) plus the position embedding, resized to its grid."""
        height, width = embeddings.shape[-2:]
        position = self.position_embeddings
        if position.shape[1:3] != (height, width):
            position = resize_position_embeddings(position, height, width)
        return embeddings + position.permute(0, 3, 1, 2)

    def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = False) -> BaseModelOutputWithNoAttention:
        """Between stages the activations are (batch, channels, height, width) views of the blocks' channels-last
        tokens; these very tensors are returned as hidden states, so they are on the autograd graph."""
        all_hidden = () if output_hidden_states else None
        hidden_states = pixel_values
        for index, stage in enumerate(self.stages):
            hidden_states = stage.patch_embeddings(hidden_states)
            if index == 0:
                hidden_states = self.add_position_embeddings(hidden_states)
                if output_hidden_states:
                    all_hidden += (hidden_states,)
            tokens = hidden_states.permute(0, 2, 3, 1)
            for block in stage.blocks:
                tokens = block(tokens)
            hidden_states = tokens.permute(0, 3, 1, 2)
            if output_hidden_states:
                all_hidden += (hidden_states,)
        return BaseModelOutputWithNoAttention(last_hidden_state=hidden_states, hidden_states=all_hidden)


class GFNetPreTrainedModel(PreTrainedModel):
    config: GFNetConfig
    config_class = GFNetConfig
    base_model_prefix = "gfnet"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["GFNetBlock"]

    @torch.no_grad()
    def _init_weights(self, module):
        """As GFNet: truncated normal linears, N(0, 0.02) filters and position embedding; PyTorch's default convs."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, std=std)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            fan_in = module.weight[0].numel()
            init.uniform_(module.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, GFNetGlobalFilter):
            init.normal_(module.complex_weight, std=std)
        elif isinstance(module, GFNetBlock):
            init.constant_(module.layer_scale, self.config.layer_scale_init_value)
        elif isinstance(module, GFNetEncoder):
            init.trunc_normal_(module.position_embeddings, std=std)


# Copied from riformer_hf.models.riformer.modeling_riformer._check_pixel_values with RIFormer->GFNet
def _check_pixel_values(pixel_values: torch.Tensor | None, num_channels: int) -> None:
    """One clear error for missing, unbatched or wrong-channel `pixel_values`."""
    if pixel_values is None:
        raise ValueError("GFNet needs `pixel_values` of shape (batch, channels, height, width).")
    if pixel_values.ndim != 4:
        raise ValueError(
            f"GFNet expects `pixel_values` of shape (batch, channels, height, width); got a {pixel_values.ndim}-D "
            f"tensor of shape {tuple(pixel_values.shape)}. Add the batch dimension with `pixel_values[None]`."
        )
    if pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"GFNet was configured for {num_channels} input channels (`config.num_channels`) but `pixel_values` "
            f"has {pixel_values.shape[1]} (shape {tuple(pixel_values.shape)}). Convert the images (e.g. to RGB) or "
            "build the model with a matching `num_channels`."
        )


def _check_image_size(pixel_values: torch.Tensor, config: GFNetConfig) -> None:
    smallest = config.patch_size * 2 ** (len(config.depths) - 1)
    if min(pixel_values.shape[-2:]) < smallest:
        raise ValueError(
            f"GFNet needs images of at least {smallest}×{smallest} pixels (patch_size × 2**(stages - 1)); got "
            f"{tuple(pixel_values.shape[-2:])}."
        )


class GFNetModel(GFNetPreTrainedModel):
    r"""
    GFNet-H backbone. Any input resolution is accepted: when the stage-1 token grid differs from the one the weights
    were made for (`config.image_size // config.patch_size`), the position embedding is resized bicubically
    (`align_corners=False`) and each global filter is resized bicubically (`align_corners=True`) to
    (grid height, grid width // 2 + 1), exactly as GFNet's fine-tuning code does to its weights; at the native
    resolution nothing is resized.
    """

    def __init__(self, config: GFNetConfig):
        super().__init__(config)
        self.encoder = GFNetEncoder(config)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | BaseModelOutputWithNoAttention:
        r"""
        Returns `last_hidden_state` (batch, channels, height, width) and, with `output_hidden_states`, the stem output
        (with the position embedding added) then each stage's output, all (batch, channels, height, width) at strides
        4, 4, 8, 16, 32 — the layout of RIFormer's `hidden_states` — and on the autograd graph (views of the
        channels-last tokens, not copies).
        """
        _check_pixel_values(pixel_values, self.config.num_channels)
        _check_image_size(pixel_values, self.config)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.encoder(pixel_values, output_hidden_states)
        return outputs if return_dict else outputs.to_tuple()


class GFNetForImageClassification(GFNetPreTrainedModel):
    """GFNet-H with its head: LayerNorm over channels, mean over tokens, linear classifier."""

    def __init__(self, config: GFNetConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.gfnet = GFNetModel(config)
        self.norm = nn.LayerNorm(config.hidden_sizes[-1], eps=config.layer_norm_eps)
        self.classifier = (
            nn.Linear(config.hidden_sizes[-1], config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> tuple | ImageClassifierOutputWithNoAttention:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`): class indices for the cross-entropy loss.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.gfnet(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        tokens = outputs.last_hidden_state.permute(0, 2, 3, 1)  # channels last for the LayerNorm
        logits = self.classifier(self.norm(tokens).mean(dim=(1, 2)))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        output = ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=outputs.hidden_states)
        return output if return_dict else output.to_tuple()


GFNetModel.register_for_auto_class("AutoModel")
GFNetForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = ["GFNetForImageClassification", "GFNetModel", "GFNetPreTrainedModel"]
