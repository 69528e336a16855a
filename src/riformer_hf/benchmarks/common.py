"""What every benchmark shares: the settings, the three models (PoolFormer, RIFormer in training and deploy form)
built alike, their cost (MACs, parameters), the matmul bound and the environment the numbers were measured with."""

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import PoolFormerConfig, PoolFormerForImageClassification

from ..convert.poolformer import poolformer_config
from ..errors import UserError
from ..models.riformer import RIFORMER_PRESETS, RIFormerConfig, RIFormerForImageClassification, reparameterize_model

# Published ImageNet-1k top-1 at 224² (RIFormer: CVPR 2023 Table 1; PoolFormer: MetaFormer, CVPR 2022 Table 2).
PUBLISHED_TOP1 = {
    "riformer": {"s12": 76.9, "s24": 80.3, "s36": 81.3, "m36": 82.6, "m48": 82.8},
    "poolformer": {"s12": 77.2, "s24": 80.3, "s36": 81.4, "m36": 82.1, "m48": 82.5},
}
# MACs at 224² as the RIFormer paper reports them (Table 1), for checking `count_macs`.
PAPER_GMACS = {"s12": 1.82, "s24": 3.41, "s36": 5.00, "m36": 8.80, "m48": 11.59}

MODEL_NAMES = {
    "poolformer": "PoolFormer (transformers)",
    "riformer_train": "RIFormer, training form",
    "riformer_deploy_plain": "RIFormer, deploy form, plain modules",
    "riformer_deploy": "RIFormer, deploy form",
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class BenchmarkSettings:
    """What to measure and how. `depths` / `hidden_sizes` override every preset's (for quick, tiny runs)."""

    presets: tuple[str, ...] = ("s12",)
    batch_size: int = 16
    image_size: int = 224
    device: str = "cpu"
    dtype: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    threads: int | None = None
    warmup: int = 2
    repeats: int = 10
    matmul_size: int | None = None
    depths: tuple[int, ...] | None = None
    hidden_sizes: tuple[int, ...] | None = None
    num_labels: int = 1000
    seed: int = 0

    def __post_init__(self):
        unknown = [p for p in self.presets if p not in RIFORMER_PRESETS]
        if unknown or not self.presets:
            raise UserError(f"Unknown preset(s) {unknown}; choose from {', '.join(RIFORMER_PRESETS)}.")
        if self.dtype not in DTYPES:
            raise UserError(f"dtype={self.dtype!r}; choose one of {', '.join(DTYPES)}.")
        if self.batch_size < 1 or self.image_size < 32 or self.repeats < 1 or self.warmup < 0:
            raise UserError(
                "Need batch_size ≥ 1, image_size ≥ 32 (the network downsamples 32×), repeats ≥ 1 and warmup ≥ 0; got "
                f"{self.batch_size}, {self.image_size}, {self.repeats}, {self.warmup}."
            )
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device={self.device!r} but CUDA is not available here; use --device cpu.")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def matmul_dim(self) -> int:
        return self.matmul_size or (2048 if self.device == "cpu" else 8192)


def is_custom(settings: BenchmarkSettings) -> bool:
    """Whether the layouts are overridden (a tiny setting): then no paper preset name and no ImageNet plot apply."""
    return bool(settings.depths or settings.hidden_sizes)


def riformer_config(preset: str, settings: BenchmarkSettings) -> RIFormerConfig:
    """The training-form config of a preset, with the settings' label count, image size and layout overrides."""
    overrides = {k: v for k, v in (("depths", settings.depths), ("hidden_sizes", settings.hidden_sizes)) if v}
    return RIFormerConfig.from_preset(preset, num_labels=settings.num_labels, **overrides)


def build_models(preset: str, settings: BenchmarkSettings) -> dict[str, nn.Module]:
    """PoolFormer, RIFormer training form and its re-parameterised copy, randomly initialised, in eval mode on the
    benchmark's device, dtype and memory format."""
    torch.manual_seed(settings.seed)
    config = riformer_config(preset, settings)
    train = RIFormerForImageClassification(config)
    models = {
        "poolformer": PoolFormerForImageClassification(poolformer_config(config)),
        "riformer_train": train,
        "riformer_deploy": reparameterize_model(train),
    }
    memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
    return {
        name: model.to(settings.device, settings.torch_dtype, memory_format=memory_format).eval().requires_grad_(False)
        for name, model in models.items()
    }


def count_macs(model_or_config, image_size: int, num_channels: int = 3) -> int:
    """Multiply-accumulates of one image through the model: convolutions and linear layers (matrix products).

    Counted by `torch.utils.flop_counter.FlopCounterMode` (2 FLOPs per MAC) on a meta-device copy built from the
    config, so nothing is computed. Norms, activations, pooling, the affine mixer and residual adds are not counted.
    mmcv-style counters also count one op per output of a biased conv / linear and two per GroupNorm output; with
    those added, the counts match the paper's Table 1 to its rounding (S12: 1.812 G here, 1.822 G so, paper 1.82 G).
    The fused deploy path's in-place `addmm_` is counted like `addmm`, so both forms count the same work.
    """
    config = getattr(model_or_config, "config", model_or_config)
    with torch.device("meta"):
        if isinstance(config, PoolFormerConfig):
            model = PoolFormerForImageClassification(config)
        else:
            model = RIFormerForImageClassification(config)
        pixels = torch.empty(1, num_channels, image_size, image_size)
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addmm_: _addmm_flops})
    with counter, torch.no_grad():
        model.eval()(pixels)
    return counter.get_total_flops() // 2


def _addmm_flops(input_shape, a_shape, b_shape, *args, **kwargs) -> int:
    """FLOPs of `input.addmm_(a, b)`: a (m × k) times b (k × n)."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matmul_workload(settings: BenchmarkSettings) -> tuple[Callable[[], object], int]:
    """A square matrix product in the benchmark's dtype and device, and its FLOPs."""
    n = settings.matmul_dim
    a = torch.randn(n, n, device=settings.device, dtype=settings.torch_dtype)
    b = torch.randn(n, n, device=settings.device, dtype=settings.torch_dtype)
    out = torch.empty(n, n, device=settings.device, dtype=settings.torch_dtype)
    return (lambda: torch.mm(a, b, out=out)), 2 * n**3


def environment(device: str) -> dict:
    """Hardware and software the numbers were measured with."""
    import transformers

    from .. import __version__

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "riformer_hf": __version__,
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def cpu_features() -> dict:
    """What the CPU offers the runtimes (torch's view): its kernel capability and AMX, AVX512-BF16 and VNNI."""
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return {
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **{name: bool(capabilities.get(name)) for name in ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni")},
    }


def cpu_class(features: dict) -> str:
    """The row of the README's "Which path" table this CPU falls in: AMX, AVX512-BF16, VNNI only or none."""
    if features["amx_bf16"]:
        return "AMX"
    if features["avx512_bf16"]:
        return "AVX512-BF16"
    return "VNNI only" if features["avx512_vnni"] else "none"


def runtime_versions() -> dict:
    """Versions of the optional runtimes (None when not installed)."""
    import importlib

    versions = {}
    for module in ("onnxruntime", "openvino", "nncf"):
        try:
            versions[module] = importlib.import_module(module).__version__
        except ImportError:
            versions[module] = None
    return versions


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_ratio(ratio: dict[str, float]) -> str:
    return f"{ratio['median']:.2f} [{ratio['min']:.2f}, {ratio['max']:.2f}]"


__all__ = [
    "DTYPES",
    "MODEL_NAMES",
    "PAPER_GMACS",
    "PUBLISHED_TOP1",
    "BenchmarkSettings",
    "build_models",
    "count_macs",
    "cpu_class",
    "cpu_features",
    "environment",
    "format_ratio",
    "is_custom",
    "matmul_workload",
    "parameter_count",
    "riformer_config",
    "runtime_versions",
]
