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
from transformers.utils import output_capturing
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .configuration_riformer import RIFormerConfig


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

    In eval mode the deploy form may take a fused inference path (see `_can_fuse`) that gives the same output without
    calling its submodules.
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
        if self._can_fuse(hidden_states):
            return self._fused_inference(hidden_states), None
        mixed = self.token_mixing(hidden_states)
        hidden_states = hidden_states + self.drop_path(self.layer_scale_1[:, None, None] * mixed)
        mlp_out = self.mlp(self.norm2(hidden_states))
        return hidden_states + self.drop_path(self.layer_scale_2[:, None, None] * mlp_out), mixed

    def _can_fuse(self, hidden_states: torch.Tensor) -> bool:
        """Whether the fused path gives exactly what the plain modules would, and pays.

        Only for the deploy form in eval mode, and only when nothing could tell the difference: no gradient is needed
        (the fused path writes into buffers), no hook sits on the block, its submodules or globally, no submodule has
        been replaced or wrapped (LoRA, quantisation, parametrisations), the token-mixer output is not being recorded
        (`output_block_states`), and no tracing or export (TorchScript, ONNX, torch.export: they would freeze the batch
        chunking, and the in-place buffers do not export). On CPU the batch
        must also be large enough for the fused path to be faster (`_CPU_MIN_FUSED_BATCH`).
        """
        if not self.is_reparameterized or self.training or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return False
        if torch.compiler.is_exporting():
            return False
        if hidden_states.device.type == "cpu" and hidden_states.shape[0] < _CPU_MIN_FUSED_BATCH:
            return False
        if torch.is_grad_enabled() and (hidden_states.requires_grad or any(p.requires_grad for p in self.parameters())):
            return False
        if not self.has_own_modules():
            return False
        return not _records_mixer_states() and not _has_forward_hooks(self)

    def has_own_modules(self) -> bool:
        """Whether the deploy form's norms, MLP and its convolutions are still this file's modules (none replaced or
        wrapped: LoRA, quantisation), so that code reading their weights directly computes what they would."""
        mlp = self.mlp
        modules = (self.norm_reparam, self.norm2, mlp, mlp.fc1, mlp.fc2)
        return tuple(map(type, modules)) == (RIFormerGroupNorm, RIFormerGroupNorm, RIFormerMLP, nn.Conv2d, nn.Conv2d)

    def _fused_inference(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The deploy-form block on channels-last tokens, with the layer scales folded in at run time.

        Same numbers as `forward` up to float rounding. Activations stay channels-last, so the 1×1 convolutions are
        plain matrix products over (tokens, channels); `ls1` is folded into the norm's affine and `ls2` into `fc2`,
        whose product accumulates straight into the residual (`addmm_`); GELU runs in place. On CPU the norms run over
        groups of samples and the MLP over groups of tokens small enough to stay in cache (see `_cpu_chunks`). The
        folding is redone on every call (a few C×4C products) and nothing is cached, so weights may change freely
        between calls. Returns an NCHW-shaped tensor in channels-last memory format.
        """
        batch, channels, height, width = hidden_states.shape
        tokens = hidden_states.permute(0, 2, 3, 1).contiguous().view(batch, height * width, channels)
        norm, norm2, fc1, fc2 = self.norm_reparam, self.norm2, self.mlp.fc1, self.mlp.fc2
        norm_weight, norm_bias = self.layer_scale_1 * norm.weight, self.layer_scale_1 * norm.bias
        fc1_weight = fc1.weight.view(fc1.out_channels, channels).t()
        fc2_weight = (fc2.weight.view(channels, fc2.in_channels) * self.layer_scale_2[:, None]).t()
        fc2_bias = self.layer_scale_2 * fc2.bias
        exact_gelu = self.mlp.exact_gelu
        output = torch.empty_like(tokens)
        samples, rows = _cpu_chunks(tokens, fc1.out_channels)
        hidden_buffer = tokens.new_empty(rows, fc1.out_channels)  # reused by every chunk
        for x, out in zip(tokens.split(samples), output.split(samples)):
            mixed = nn.functional.group_norm(_tokens_as_nchw(x, height, width), 1, norm_weight, norm_bias, norm.eps)
            torch.add(x, mixed.permute(0, 2, 3, 1).reshape(x.shape), out=out)
            normed = nn.functional.group_norm(
                _tokens_as_nchw(out, height, width), 1, norm2.weight, norm2.bias, norm2.eps
            )
            out = out.view(-1, channels)
            out.add_(fc2_bias)
            for inputs, residual in zip(normed.permute(0, 2, 3, 1).reshape(-1, channels).split(rows), out.split(rows)):
                hidden = torch.addmm(fc1.bias, inputs, fc1_weight, out=hidden_buffer[: inputs.shape[0]])
                hidden = torch.ops.aten.gelu_(hidden) if exact_gelu else self.mlp.act(hidden)
                residual.addmm_(hidden, fc2_weight)
        return _tokens_as_nchw(output, height, width)

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


# CPU constants of the fused path, measured on a 2-core EPYC (32 MiB L3, shared with other tenants), S12 at 224²:
# - cache budgets, in bytes, for the tokens one pair of norms handles at once and for the MLP hidden activations of one
#   fc1 → GELU → fc2 step (which then stay in cache between the two products): 3–6 MiB beats one chunk per 16 MiB by
#   20 % in stage 1;
# - the smallest batch it pays at. Whole-model forward, fused over plain (medians of interleaved pairs, 1 | 2 threads):
#   batch 1 0.94x | 1.02x, 2 1.16x | 1.27x, 4 1.15x | 1.25x, 8 1.24x | 1.39x, 16 1.59x | 1.38x. One sample is too
#   few tokens per matrix product for the layer-scale folding and layout changes to pay off.
_CPU_TOKEN_BYTES = 4 * 2**20
_CPU_HIDDEN_BYTES = 4 * 2**20
_CPU_MIN_FUSED_BATCH = 2


def _cpu_chunks(tokens: torch.Tensor, hidden_size: int) -> tuple[int, int]:
    """Samples per norm step and token rows per MLP step of the fused path: everything at once off CPU or under
    `torch.compile`, otherwise cache-sized groups split as evenly as possible (5 of 16 samples gives 4 groups of 4)."""
    batch, num_tokens, channels = tokens.shape
    if tokens.device.type != "cpu" or torch.compiler.is_compiling():
        return batch, batch * num_tokens
    samples = _even_split(batch, _CPU_TOKEN_BYTES // (num_tokens * channels * tokens.element_size()))
    rows = _even_split(samples * num_tokens, _CPU_HIDDEN_BYTES // (hidden_size * tokens.element_size()))
    return samples, rows


def _even_split(total: int, most: int) -> int:
    """The chunk size that splits `total` into the fewest chunks of at most `most` (at least 1), as evenly as can be."""
    chunks = -(-total // max(1, most))
    return -(-total // chunks)


def _tokens_as_nchw(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(batch, height·width, channels) tokens as an NCHW-shaped, channels-last view (no copy)."""
    return tokens.view(tokens.shape[0], height, width, tokens.shape[-1]).permute(0, 3, 1, 2)


def _has_forward_hooks(block: nn.Module) -> bool:
    """Forward (pre-)hooks that would miss the submodule calls the fused path skips: global ones, or any on the block
    or its submodules except transformers' output-capturing hooks, which record nothing unless a forward asks for
    their key (see `_records_mixer_states`)."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return True
    for module in block.modules():
        for hook in (*module._forward_pre_hooks.values(), *module._forward_hooks.values()):
            if getattr(hook, "__module__", None) != output_capturing.__name__:
                return True
    return False


def _records_mixer_states() -> bool:
    """Whether the running forward records `mixer_states`: the token-mixer outputs exist only on the plain path."""
    collected = output_capturing._active_collector.get()
    return bool(collected) and "mixer_states" in collected


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
        if first_block is not None and first_block._can_fuse(pixel_values):
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
            {stage: RIFormerGroupNorm(channels, eps=config.norm_eps) for stage, channels in zip(self.out_features, self.channels)}
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


__all__ = [
    "RIFormerBackbone",
    "RIFormerForImageClassification",
    "RIFormerModel",
    "RIFormerPreTrainedModel",
    "reparameterize_model",
]
