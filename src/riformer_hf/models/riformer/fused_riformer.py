"""The deploy form's fused CPU inference path: the same block function on channels-last tokens, with the layer scales
folded in at run time, taken only where it is exact and pays (`can_fuse`).

Activations stay channels-last, so the 1×1 convolutions are plain matrix products over (tokens, channels); `ls1` is
folded into the norm's affine and `ls2` into `fc2` (`fold_layer_scales`, which the export graph shares), whose
product accumulates straight into the residual (`addmm_`); GELU runs in place. On CPU the norms run over groups of
samples and the MLP over groups of tokens small enough to stay in cache (`cpu_chunks`). Nothing is cached, so
weights may change freely between calls. This file imports only torch and transformers: it travels to the Hub with
the modelling file for `trust_remote_code`.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import output_capturing

# CPU constants, measured on a 2-core EPYC (32 MiB L3, shared with other tenants), S12 at 224²:
# - cache budgets, in bytes, for the tokens one pair of norms handles at once and for the MLP hidden activations of one
#   fc1 → GELU → fc2 step (which then stay in cache between the two products): 3–6 MiB beats one chunk per 16 MiB by
#   20 % in stage 1;
# - the smallest batch it pays at. Whole-model forward, fused over plain (medians of interleaved pairs, 1 | 2 threads):
#   batch 1 0.94x | 1.02x, 2 1.16x | 1.27x, 4 1.15x | 1.25x, 8 1.24x | 1.39x, 16 1.59x | 1.38x. One sample is too
#   few tokens per matrix product for the layer-scale folding and layout changes to pay off.
# - in bf16 (AVX512-BF16, no AMX; fused over plain, 1 thread, process CPU time): batch 1 1.15x, 2 1.09x, 4 1.27x,
#   8 1.29x, 16 1.20x (fp32 in the same run: 0.96x, 1.14x, 1.15x, 1.28x, 1.37x), so bf16 fuses from one sample on.
#   The byte budgets serve both dtypes (in bf16 they hold twice the tokens): of 2, 4 and 8 MiB none was ahead at
#   every batch in either dtype.
CPU_TOKEN_BYTES = 4 * 2**20
CPU_HIDDEN_BYTES = 4 * 2**20
CPU_MIN_FUSED_BATCH = 2
CPU_MIN_FUSED_BATCH_BF16 = 1


def cpu_min_fused_batch(dtype: torch.dtype) -> int:
    """The smallest batch at which the fused path pays on CPU, for activations of `dtype`."""
    return CPU_MIN_FUSED_BATCH_BF16 if dtype == torch.bfloat16 else CPU_MIN_FUSED_BATCH


@dataclass
class FoldedScales:
    """A deploy-form block's weights with its layer scales folded in: `norm_weight` / `norm_bias` (`ls1` · the
    norm's affine) and `fc2_weight` (C_out × C_hidden) / `fc2_bias` (`ls2` · fc2)."""

    norm_weight: torch.Tensor
    norm_bias: torch.Tensor
    fc2_weight: torch.Tensor
    fc2_bias: torch.Tensor


def fold_layer_scales(block, dtype: torch.dtype | None = None) -> FoldedScales:
    """`ls1` folded into `norm_reparam`'s affine and `ls2` into `fc2`, computed in `dtype` (default: the weights')."""
    dtype = dtype or block.layer_scale_1.dtype
    ls1, ls2 = block.layer_scale_1.to(dtype), block.layer_scale_2.to(dtype)
    norm, fc2 = block.norm_reparam, block.mlp.fc2
    fc2_weight = fc2.weight.to(dtype).view(fc2.out_channels, fc2.in_channels)
    return FoldedScales(ls1 * norm.weight.to(dtype), ls1 * norm.bias.to(dtype), fc2_weight * ls2[:, None],
                        ls2 * fc2.bias.to(dtype))


def observed(block: nn.Module) -> bool:
    """Whether anything would notice the fused path skipping the block's submodule calls: a forward (pre-)hook on the
    block, its submodules or globally (except transformers' output-capturing hooks, which record only the outputs a
    forward asks for), or a forward that records the token-mixer outputs (`mixer_states`), which exist only on the
    plain path. The one place that reads torch's and transformers' private hook registries; `tests/
    test_fused_inference.py::test_private_probes_still_see_hooks` fails when either library changes them."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return True
    for module in block.modules():
        for hook in (*module._forward_pre_hooks.values(), *module._forward_hooks.values()):
            if getattr(hook, "__module__", None) != output_capturing.__name__:
                return True
    collected = output_capturing._active_collector.get()
    return bool(collected) and "mixer_states" in collected


def can_fuse(block, hidden_states: torch.Tensor) -> bool:
    """Whether the fused path gives exactly what the plain modules would, and pays.

    Only for the deploy form in eval mode, and only when nothing could tell the difference: no gradient is needed
    (the fused path writes into buffers), nothing observes the block (`observed`), no submodule has been replaced or
    wrapped (LoRA, quantisation, parametrisations: `block.has_own_modules()`), and no tracing or export (TorchScript,
    ONNX, torch.export: they would freeze the batch chunking, and the in-place buffers do not export). On CPU the
    batch must also be large enough for the fused path to be faster (`cpu_min_fused_batch`: 2 in fp32, 1 in bf16).
    """
    if not block.is_reparameterized or block.training or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if torch.compiler.is_exporting():
        return False
    if hidden_states.device.type == "cpu" and hidden_states.shape[0] < cpu_min_fused_batch(hidden_states.dtype):
        return False
    if torch.is_grad_enabled() and (hidden_states.requires_grad or any(p.requires_grad for p in block.parameters())):
        return False
    return block.has_own_modules() and not observed(block)


def fused_forward(block, hidden_states: torch.Tensor) -> torch.Tensor:
    """The deploy-form block output for NCHW `hidden_states` (see the module docstring), same numbers as the plain
    modules up to float rounding; an NCHW-shaped tensor in channels-last memory format."""
    batch, channels, height, width = hidden_states.shape
    tokens = hidden_states.permute(0, 2, 3, 1).contiguous().view(batch, height * width, channels)
    norm, norm2, fc1 = block.norm_reparam, block.norm2, block.mlp.fc1
    folded = fold_layer_scales(block)
    fc1_weight = fc1.weight.view(fc1.out_channels, channels).t()
    fc2_weight = folded.fc2_weight.t()
    exact_gelu = block.mlp.exact_gelu
    output = torch.empty_like(tokens)
    samples, rows = cpu_chunks(tokens, fc1.out_channels)
    hidden_buffer = tokens.new_empty(rows, fc1.out_channels)  # reused by every chunk
    for x, out in zip(tokens.split(samples), output.split(samples)):
        mixed = nn.functional.group_norm(
            tokens_as_nchw(x, height, width), 1, folded.norm_weight, folded.norm_bias, norm.eps
        )
        torch.add(x, mixed.permute(0, 2, 3, 1).reshape(x.shape), out=out)
        normed = nn.functional.group_norm(tokens_as_nchw(out, height, width), 1, norm2.weight, norm2.bias, norm2.eps)
        out = out.view(-1, channels)
        out.add_(folded.fc2_bias)
        for inputs, residual in zip(normed.permute(0, 2, 3, 1).reshape(-1, channels).split(rows), out.split(rows)):
            hidden = torch.addmm(fc1.bias, inputs, fc1_weight, out=hidden_buffer[: inputs.shape[0]])
            hidden = torch.ops.aten.gelu_(hidden) if exact_gelu else block.mlp.act(hidden)
            residual.addmm_(hidden, fc2_weight)
    return tokens_as_nchw(output, height, width)


def cpu_chunks(tokens: torch.Tensor, hidden_size: int) -> tuple[int, int]:
    """Samples per norm step and token rows per MLP step: everything at once off CPU or under `torch.compile`,
    otherwise cache-sized groups split as evenly as possible (5 of 16 samples gives 4 groups of 4)."""
    batch, num_tokens, channels = tokens.shape
    if tokens.device.type != "cpu" or torch.compiler.is_compiling():
        return batch, batch * num_tokens
    samples = _even_split(batch, CPU_TOKEN_BYTES // (num_tokens * channels * tokens.element_size()))
    rows = _even_split(samples * num_tokens, CPU_HIDDEN_BYTES // (hidden_size * tokens.element_size()))
    return samples, rows


def _even_split(total: int, most: int) -> int:
    """The chunk size that splits `total` into the fewest chunks of at most `most` (at least 1), as evenly as can be."""
    chunks = -(-total // max(1, most))
    return -(-total // chunks)


def tokens_as_nchw(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(batch, height·width, channels) tokens as an NCHW-shaped, channels-last view (no copy)."""
    return tokens.view(tokens.shape[0], height, width, tokens.shape[-1]).permute(0, 3, 1, 2)


__all__ = [
    "FoldedScales", "can_fuse", "cpu_chunks", "cpu_min_fused_batch", "fold_layer_scales", "fused_forward", "observed",
]
