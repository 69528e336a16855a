"""PyTorch RIFormer: a MetaFormer without a token mixer at inference (Wang et al., CVPR 2023).

Each block is `x + ls1 * mixer(norm1(x))` then `x + ls2 * mlp(norm2(x))`. In the training form the token mixer is a
per-channel affine minus identity, `mixer(n) = scale * n + shift - n`; `reparameterize()` folds it exactly into the
norm (`norm_reparam`), leaving GroupNorm + MLP blocks. This file only imports torch, transformers and its config, so it
travels to the Hub for `trust_remote_code`.
"""

import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN, GELUActivation
from transformers.backbone_utils import BackboneMixin, filter_output_hidden_states
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BackboneOutput,
    BaseModelOutputWithNoAttention,
    ImageClassifierOutputWithNoAttention,
)
from transformers.modeling_utils import PreTrainedModel
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_riformer import RIFormerConfig
from .fused_riformer import can_fuse, fused_forward


def fuse_mixer_into_norm(norm_weight, norm_bias, scale, shift):
    """Weight and bias of the one norm equal to `mixer(norm(x))` with `mixer(n) = scale * n + shift - n`.

    `mixer(γ x̂ + β) = γ (scale - 1) x̂ + β (scale - 1) + shift`. Computed in float64, returned in the norm's dtype.
    """
    gamma, beta, scale, shift = (t.detach().double() for t in (norm_weight, norm_bias, scale, shift))
    weight = gamma * (scale - 1)
    bias = beta * (scale - 1) + shift
    return weight.to(norm_weight.dtype), bias.to(norm_bias.dtype)


@dataclass
class RIFormerModelOutput(BaseModelOutputWithNoAttention):
    r"""
    hidden_states (`tuple[torch.FloatTensor]`, *optional*):
        Stem output then each stage's output, (batch, channels, height, width) in contiguous memory; index `i` is
        `config.stage_names[i]` (`None` where `output_hidden_states` selected other indices).
    mixer_states (`tuple[torch.FloatTensor]`, *optional*, returned with `output_block_states=True`):
        Every block's token-mixer output `mixer(norm1(x))` (before the layer scale), in block order, on the autograd
        graph.
    block_states (`tuple[torch.FloatTensor]`, *optional*, returned with `output_block_states=True`):
        Every block's output, in block order, on the autograd graph.
    """

    mixer_states: tuple[torch.FloatTensor, ...] | None = None
    block_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class RIFormerImageClassifierOutput(ImageClassifierOutputWithNoAttention):
    r"""
    Classification output; `mixer_states` and `block_states` as in [`RIFormerModelOutput`].
    """

    mixer_states: tuple[torch.FloatTensor, ...] | None = None
    block_states: tuple[torch.FloatTensor, ...] | None = None


class RIFormerDropPath(nn.Module):
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


class RIFormerGroupNorm(nn.GroupNorm):
    """GroupNorm with one group: normalises each sample over (C, H, W), affine per channel."""

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(1, num_channels, eps=eps)


class RIFormerAffineMixer(nn.Module):
    """Training-form token mixer: `scale * n + shift - n`, per channel (identity-initialised: scale 1, shift 0)."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, normed: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift[:, None, None], normed, (self.scale - 1)[:, None, None])


class RIFormerMLP(nn.Module):
    """Channel MLP as two 1×1 convolutions."""

    def __init__(self, config: RIFormerConfig, dim: int):
        super().__init__()
        hidden = int(dim * config.mlp_ratio)
        self.fc1 = nn.Conv2d(dim, hidden, kernel_size=1)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Conv2d(hidden, dim, kernel_size=1)

    @property
    def exact_gelu(self) -> bool:
        """The activation is torch's exact GELU, which the fused inference path applies in place."""
        return type(self.act) is GELUActivation and self.act.act is nn.functional.gelu

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class RIFormerBlock(GradientCheckpointingLayer):
    """One RIFormer block, in training form (`norm1` + `token_mixer`) or deploy form (`norm_reparam`).

    In eval mode the deploy form may take the fused inference path (`fused_riformer`), which gives the same output
    without calling its submodules.
    """

    def __init__(self, config: RIFormerConfig, dim: int, drop_path: float):
        super().__init__()
        if config.reparameterized:
            self.norm_reparam = RIFormerGroupNorm(dim, eps=config.norm_eps)
        else:
            self.norm1 = RIFormerGroupNorm(dim, eps=config.norm_eps)
            self.token_mixer = RIFormerAffineMixer(dim)
        self.norm2 = RIFormerGroupNorm(dim, eps=config.norm_eps)
        self.mlp = RIFormerMLP(config, dim)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), config.layer_scale_init_value))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), config.layer_scale_init_value))
        self.drop_path = RIFormerDropPath(drop_path)

    @property
    def is_reparameterized(self) -> bool:
        return hasattr(self, "norm_reparam")

    def token_mixing(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`mixer(norm1(x))`: the quantity module imitation compares with a teacher's token-mixer output."""
        if self.is_reparameterized:
            return self.norm_reparam(hidden_states)
        return self.token_mixer(self.norm1(hidden_states))

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The block output and the token-mixer output `mixer(norm1(x))` (`None` from the fused path)."""
        if can_fuse(self, hidden_states):
            return fused_forward(self, hidden_states), None
        mixed = self.token_mixing(hidden_states)
        hidden_states = hidden_states + self.drop_path(self.layer_scale_1[:, None, None] * mixed)
        mlp_out = self.mlp(self.norm2(hidden_states))
        return hidden_states + self.drop_path(self.layer_scale_2[:, None, None] * mlp_out), mixed

    def has_own_modules(self) -> bool:
        """Whether the deploy form's norms, MLP and its convolutions are still this file's modules (none replaced or
        wrapped: LoRA, quantisation), so that code reading their weights directly computes what they would."""
        mlp = self.mlp
        modules = (self.norm_reparam, self.norm2, mlp, mlp.fc1, mlp.fc2)
        return tuple(map(type, modules)) == (RIFormerGroupNorm, RIFormerGroupNorm, RIFormerMLP, nn.Conv2d, nn.Conv2d)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold `token_mixer` into `norm1`, in place; a no-op on a deploy-form block."""
        if self.is_reparameterized:
            return
        weight, bias = fuse_mixer_into_norm(
            self.norm1.weight, self.norm1.bias, self.token_mixer.scale, self.token_mixer.shift
        )
        norm = RIFormerGroupNorm(self.norm1.num_channels, eps=self.norm1.eps).to(weight.device, weight.dtype)
        norm.weight.copy_(weight)
        norm.bias.copy_(bias)
        norm.requires_grad_(self.norm1.weight.requires_grad)
        self.norm_reparam = norm
        del self.norm1, self.token_mixer


class RIFormerStage(nn.Module):
    """Patch embedding (the stem for stage 1, a strided 3×3 conv after) followed by the stage's blocks."""

    def __init__(self, config: RIFormerConfig, index: int, drop_path_rates: list[float]):
        super().__init__()
        in_channels = config.num_channels if index == 0 else config.hidden_sizes[index - 1]
        dim = config.hidden_sizes[index]
        self.patch_embeddings = nn.Conv2d(
            in_channels,
            dim,
            kernel_size=config.patch_sizes[index],
            stride=config.strides[index],
            padding=config.padding[index],
        )
        self.blocks = nn.ModuleList(RIFormerBlock(config, dim, rate) for rate in drop_path_rates)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.patch_embeddings(hidden_states)
        for block in self.blocks:
            hidden_states = block(hidden_states)[0]
        return hidden_states


class RIFormerPreTrainedModel(PreTrainedModel):
    config: RIFormerConfig
    config_class = RIFormerConfig
    base_model_prefix = "riformer"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["RIFormerBlock"]

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.trunc_normal_(module.weight, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.GroupNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, RIFormerAffineMixer):
            init.ones_(module.scale)
            init.zeros_(module.shift)
        elif isinstance(module, RIFormerBlock):
            init.constant_(module.layer_scale_1, self.config.layer_scale_init_value)
            init.constant_(module.layer_scale_2, self.config.layer_scale_init_value)

    def get_input_embeddings(self) -> nn.Module:
        """The stem: the first stage's patch embedding (PoolFormer's answer too). transformers' generic lookup finds
        no `embed_tokens` and raises, and accelerate's FSDP2 preparation asks every model for it."""
        return next(module for module in self.modules() if isinstance(module, RIFormerStage)).patch_embeddings

    @property
    def is_reparameterized(self) -> bool:
        return bool(self.config.reparameterized)

    def reparameterize(self):
        """Fold every token mixer into its norm, in place. Idempotent; sets `config.reparameterized`; returns self."""
        for module in self.modules():
            if isinstance(module, RIFormerBlock):
                module.reparameterize()
        self.config.reparameterized = True
        return self

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, refusing weights saved in the other form (training vs deploy)."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        _raise_on_form_mismatch(model, info)
        return (model, info) if want_info else model


def _raise_on_form_mismatch(model, info):
    unexpected = set(info.get("unexpected_keys", ()))
    if model.config.reparameterized and any(".token_mixer." in k or ".norm1." in k for k in unexpected):
        raise ValueError(
            "These weights are in RIFormer's training form (norm1 + token_mixer) but the config asks for the deploy "
            "form (reparameterized=True). Load them with reparameterized=False, then call `model.reparameterize()`."
        )
    if not model.config.reparameterized and any(".norm_reparam." in k for k in unexpected):
        raise ValueError(
            "These weights are in RIFormer's deploy form (norm_reparam) but the config asks for the training form "
            "(reparameterized=False). Load them with their saved config (reparameterized=True); the deploy form "
            "cannot be turned back into the training form."
        )


def _check_pixel_values(pixel_values: torch.Tensor | None, num_channels: int) -> None:
    """One clear error for missing, unbatched or wrong-channel `pixel_values`."""
    if pixel_values is None:
        raise ValueError("RIFormer needs `pixel_values` of shape (batch, channels, height, width).")
    if pixel_values.ndim != 4:
        raise ValueError(
            f"RIFormer expects `pixel_values` of shape (batch, channels, height, width); got a {pixel_values.ndim}-D "
            f"tensor of shape {tuple(pixel_values.shape)}. Add the batch dimension with `pixel_values[None]`."
        )
    if pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"RIFormer was configured for {num_channels} input channels (`config.num_channels`) but `pixel_values` "
            f"has {pixel_values.shape[1]} (shape {tuple(pixel_values.shape)}). Convert the images (e.g. to RGB) or "
            "build the model with a matching `num_channels`."
        )


def _contiguous_outputs(outputs: RIFormerModelOutput) -> RIFormerModelOutput:
    """The last and the recorded hidden states in contiguous NCHW memory, whichever path made them (the fused path
    works channels-last). A no-op, so still on the autograd graph, for states that are contiguous already."""
    outputs.last_hidden_state = outputs.last_hidden_state.contiguous()
    if outputs.hidden_states is not None:
        outputs.hidden_states = tuple(h if h is None else h.contiguous() for h in outputs.hidden_states)
    return outputs


class RIFormerEncoder(RIFormerPreTrainedModel):
    r"""
    The stages. Per-stage and per-block outputs are recorded by transformers' output capturing (hooks installed on the
    first request): `hidden_states` (stem output, then each stage's output), `mixer_states` (each block's
    `mixer(norm1(x))`) and `block_states` (each block's output), in execution order.
    """

    main_input_name = "pixel_values"
    _can_record_outputs = {
        "hidden_states": [
            OutputRecorder(nn.Conv2d, layer_name="stages.0.patch_embeddings", capture_initial_hidden_state=False),
            OutputRecorder(RIFormerStage, capture_initial_hidden_state=False),
        ],
        "mixer_states": OutputRecorder(RIFormerBlock, index=1),
        "block_states": OutputRecorder(RIFormerBlock, index=0),
    }

    def __init__(self, config: RIFormerConfig):
        super().__init__(config)
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        stages, start = [], 0
        for index, depth in enumerate(config.depths):
            stages.append(RIFormerStage(config, index, rates[start : start + depth]))
            start += depth
        self.stages = nn.ModuleList(stages)
        self.post_init()

    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, pixel_values: torch.Tensor, **kwargs) -> RIFormerModelOutput:
        hidden_states = pixel_values
        first_block = self.stages[0].blocks[0] if self.stages[0].blocks else None
        if first_block is not None and can_fuse(first_block, pixel_values):
            # The fused blocks work on channels-last tokens: starting there makes every convolution channels-last
            # too (the stem is 1.6x faster on CPU) and spares the first block a transpose.
            hidden_states = hidden_states.contiguous(memory_format=torch.channels_last)
        for stage in self.stages:
            hidden_states = stage(hidden_states)
        return RIFormerModelOutput(last_hidden_state=hidden_states)


def _capture_flags(output_hidden_states, output_block_states: bool) -> dict:
    """The encoder's output-capturing flags for the public `output_hidden_states` / `output_block_states`."""
    flags = {"output_mixer_states": output_block_states, "output_block_states": output_block_states}
    if output_hidden_states is not None:
        flags["output_hidden_states"] = output_hidden_states
    return flags


class RIFormerModel(RIFormerPreTrainedModel):
    def __init__(self, config: RIFormerConfig):
        super().__init__(config)
        self.encoder = RIFormerEncoder(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        output_block_states: bool = False,
        **kwargs,
    ) -> RIFormerModelOutput:
        r"""
        output_hidden_states (`bool` or `int` or `list[int]`): return the stem output then each stage's output, all
            (batch, channels, height, width) in contiguous memory; indices select some (the others are `None`).
        output_block_states (`bool`): also return every block's token-mixer output (`mixer_states`) and output
            (`block_states`), on the autograd graph.
        """
        _check_pixel_values(pixel_values, self.config.num_channels)
        flags = _capture_flags(output_hidden_states, output_block_states)
        return _contiguous_outputs(self.encoder(pixel_values, return_dict=True, **flags))


class RIFormerForImageClassification(RIFormerPreTrainedModel):
    def __init__(self, config: RIFormerConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.riformer = RIFormerModel(config)
        self.norm = RIFormerGroupNorm(config.hidden_sizes[-1], eps=config.norm_eps)
        self.classifier = (
            nn.Linear(config.hidden_sizes[-1], config.num_labels) if config.num_labels > 0 else nn.Identity()
        )
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | int | list[int] | None = None,
        output_block_states: bool = False,
        **kwargs,
    ) -> RIFormerImageClassifierOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`): class indices for the cross-entropy loss.
        output_hidden_states, output_block_states: as in [`RIFormerModel`].
        """
        outputs = self.riformer(
            pixel_values,
            output_hidden_states=output_hidden_states,
            output_block_states=output_block_states,
            return_dict=True,
        )
        logits = self.classifier(self.norm(outputs.last_hidden_state).mean(dim=(-2, -1)))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        return RIFormerImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            mixer_states=outputs.mixer_states,
            block_states=outputs.block_states,
        )


class RIFormerBackbone(BackboneMixin, RIFormerPreTrainedModel):
    """RIFormer as a feature extractor for dense tasks: feature maps at strides 4/8/16/32, each with its own norm."""

    has_attentions = False

    def __init__(self, config: RIFormerConfig):
        super().__init__(config)
        self.encoder = RIFormerEncoder(config)
        self.num_features = [config.hidden_sizes[0]] + list(config.hidden_sizes)
        self.hidden_states_norms = nn.ModuleDict(
            {
                stage: RIFormerGroupNorm(channels, eps=config.norm_eps)
                for stage, channels in zip(self.out_features, self.channels)
            }
        )
        self.post_init()

    @can_return_tuple
    @filter_output_hidden_states
    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BackboneOutput:
        r"""
        Returns `feature_maps` (the normed stage outputs of `config.out_features`) and, with `output_hidden_states`,
        the stem output then each stage's output, all (batch, channels, height, width) in contiguous memory.
        """
        _check_pixel_values(pixel_values, self.config.num_channels)
        outputs = self.encoder(pixel_values, output_hidden_states=True, return_dict=True)
        hidden_states = _contiguous_outputs(outputs).hidden_states
        feature_maps = tuple(
            self.hidden_states_norms[stage](state)
            for stage, state in zip(self.stage_names, hidden_states)
            if stage in self.out_features
        )
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states)


def reparameterize_model(model: nn.Module) -> nn.Module:
    """A deploy-form copy of `model`, any module holding RIFormer blocks (a RIFormer model, or a wrapper around one or
    several); the original is left untouched. Sets `config.reparameterized` of every RIFormer model inside, so that
    each saves and loads as the deploy form."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, RIFormerBlock):
            module.reparameterize()
    for module in model.modules():
        if isinstance(module, RIFormerPreTrainedModel):
            module.config.reparameterized = True
    return model


# `save_pretrained` writes `auto_map` and copies this file (with its relative imports) for `trust_remote_code`.
RIFormerModel.register_for_auto_class("AutoModel")
RIFormerForImageClassification.register_for_auto_class("AutoModelForImageClassification")
RIFormerBackbone.register_for_auto_class("AutoBackbone")

__all__ = [
    "RIFormerBackbone",
    "RIFormerForImageClassification",
    "RIFormerModel",
    "RIFormerPreTrainedModel",
    "reparameterize_model",
]
