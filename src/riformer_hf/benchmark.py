"""Speed of RIFormer against transformers' PoolFormer, measured side by side in one process.

- Inference: images/s of PoolFormer, RIFormer in training form and RIFormer in deploy form (re-parameterised; also
  through its plain modules, to tell the gain of removing the mixer from that of the fused inference path), timed
  interleaved — every round runs each model once, in a rotating order — so the ratios compare models under the same
  machine state; medians over rounds after warm-up, ratios as medians of per-round ratios.
- A hardware bound in the same rounds: the FLOP/s of one large square matrix product in the benchmark's dtype. Each
  model's achieved FLOP/s is `2 × MACs × images/s`, MACs counting convolutions and linear layers only (norms,
  activations, pooling and residual adds are not counted; see `count_macs`).
- Distillation cost: time of one training step (forward, backward, optimizer) with labels only, with soft logit
  distillation, and with soft distillation plus module imitation, against a student step plus a teacher forward.

`riformer-bench` is the command line (`main`); `run_inference_benchmark`, `run_distillation_benchmark`, `format_*`,
`plot_throughput_vs_accuracy` and `environment` are the pieces it calls.

    riformer-bench                                   # S12, batch 16, 224², fp32, CPU
    riformer-bench --presets all --repeats 5 --plot benchmark.png
    riformer-bench --device cuda --dtype bf16 --batch_size 256 --channels_last --compile
    riformer-bench --distillation                    # adds the training-step table
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import PoolFormerConfig, PoolFormerForImageClassification

from .distillation.teachers import poolformer_config
from .models.riformer import RIFORMER_PRESETS, RIFormerConfig, RIFormerForImageClassification, reparameterize_model

# Published ImageNet-1k top-1 at 224² (RIFormer: CVPR 2023 Table 1; PoolFormer: MetaFormer, CVPR 2022 Table 2).
PUBLISHED_TOP1 = {
    "riformer": {"s12": 76.9, "s24": 80.3, "s36": 81.3, "m36": 82.6, "m48": 82.8},
    "poolformer": {"s12": 77.2, "s24": 80.3, "s36": 81.4, "m36": 82.1, "m48": 82.5},
}
# MACs at 224² as the RIFormer paper reports them (Table 1), for checking `count_macs`.
PAPER_GMACS = {"s12": 1.82, "s24": 3.41, "s36": 5.00, "m36": 8.80, "m48": 11.59}
# S12 module-imitation weights of the paper (Table 10).
PAPER_IMITATION_WEIGHTS = {"lambda_hidden": 1e-4, "lambda_mixer": 1e-3, "lambda_relation": 1.0}
# The recipe's per-batch augmentation, done in the training step on the device (per-image RandAugment runs in the
# loader workers, outside the step).
PAPER_BATCH_AUGMENTATION = {"mixup": 0.8, "cutmix": 1.0, "reprob": 0.25, "label_smoothing_factor": 0.1}

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
            raise ValueError(f"Unknown preset(s) {unknown}; choose from {', '.join(RIFORMER_PRESETS)}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; choose one of {', '.join(DTYPES)}.")
        if self.batch_size < 1 or self.image_size < 32 or self.repeats < 1 or self.warmup < 0:
            raise ValueError(
                "Need batch_size ≥ 1, image_size ≥ 32 (the network downsamples 32×), repeats ≥ 1 and warmup ≥ 0; got "
                f"{self.batch_size}, {self.image_size}, {self.repeats}, {self.warmup}."
            )
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but CUDA is not available here; use --device cpu.")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def matmul_dim(self) -> int:
        return self.matmul_size or (2048 if self.device == "cpu" else 8192)


# ---- models and their cost ----


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


# ---- timing ----


def _synchronizer(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def time_interleaved(
    workloads: dict[str, Callable[[], object]],
    warmup: int,
    repeats: int,
    synchronize: Callable[[], None] = lambda: None,
) -> dict[str, list[float]]:
    """Seconds per call of every workload, `repeats` rounds after `warmup` untimed rounds.

    Each round calls every workload once, starting one later each round, so slow drifts of the machine (other
    processes, clocks) affect all workloads alike and per-round ratios stay fair.
    """
    names = list(workloads)
    for _ in range(warmup):
        for name in names:
            workloads[name]()
    synchronize()
    seconds = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize()
            start = time.perf_counter()
            workloads[name]()
            synchronize()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _ratio(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Median (and range) over rounds of the per-round ratio: robust to load that changes between rounds."""
    return _summary([n / d for n, d in zip(numerator, denominator)])


def matmul_workload(settings: BenchmarkSettings) -> tuple[Callable[[], object], int]:
    """A square matrix product in the benchmark's dtype and device, and its FLOPs."""
    n = settings.matmul_dim
    a = torch.randn(n, n, device=settings.device, dtype=settings.torch_dtype)
    b = torch.randn(n, n, device=settings.device, dtype=settings.torch_dtype)
    out = torch.empty(n, n, device=settings.device, dtype=settings.torch_dtype)
    return (lambda: torch.mm(a, b, out=out)), 2 * n**3


@contextlib.contextmanager
def _threads(count: int | None):
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def benchmark_preset(preset: str, settings: BenchmarkSettings) -> dict:
    """Throughput of the models and the matmul bound for one preset, all in the same interleaved rounds."""
    models = build_models(preset, settings)
    config = models["riformer_train"].config
    macs = count_macs(config, settings.image_size)
    pixels = torch.randn(
        settings.batch_size, config.num_channels, settings.image_size, settings.image_size,
        device=settings.device, dtype=settings.torch_dtype,
    )
    if settings.channels_last:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    runners = {name: torch.compile(model) if settings.compile else model for name, model in models.items()}
    workloads = {name: (lambda runner=runner: runner(pixel_values=pixels)) for name, runner in runners.items()}
    # The deploy form through its plain modules (asking for block states turns the fused path off): how much of the
    # speed comes from removing the mixer and how much from the fused path.
    deploy = runners["riformer_deploy"]
    workloads["riformer_deploy_plain"] = lambda: deploy(pixel_values=pixels, output_block_states=True)
    workloads["matmul"], matmul_flops = matmul_workload(settings)
    with torch.inference_mode():
        seconds = time_interleaved(workloads, settings.warmup, settings.repeats, _synchronizer(settings.device))

    bound = matmul_flops / statistics.median(seconds["matmul"])
    results = {}
    for name in MODEL_NAMES:
        median = statistics.median(seconds[name])
        images_per_s = settings.batch_size / median
        results[name] = {
            "label": MODEL_NAMES[name],
            "parameters": parameter_count(models[name.removesuffix("_plain")]),
            "seconds_per_batch": _summary(seconds[name]),
            "images_per_s": images_per_s,
            "images_per_s_range": [settings.batch_size / max(seconds[name]), settings.batch_size / min(seconds[name])],
            "achieved_flops_per_s": 2 * macs * images_per_s,
            "fraction_of_matmul_bound": 2 * macs * images_per_s / bound,
            "speedup_vs_poolformer": _ratio(seconds["poolformer"], seconds[name]),
        }
    return {
        "preset": preset,
        "macs_per_image": macs,
        "matmul": {"size": settings.matmul_dim, "flops_per_s": bound, "seconds": _summary(seconds["matmul"])},
        "models": results,
        "deploy_vs_training_form": _ratio(seconds["riformer_train"], seconds["riformer_deploy"]),
        "fused_vs_plain_deploy": _ratio(seconds["riformer_deploy_plain"], seconds["riformer_deploy"]),
    }


def run_inference_benchmark(settings: BenchmarkSettings) -> dict:
    """Every preset of `settings`, one after the other; returns the JSON-ready record (settings, environment, runs)."""
    with _threads(settings.threads):
        runs = [benchmark_preset(preset, settings) for preset in settings.presets]
        measured_with = environment(settings.device)
    for run in runs:  # an overridden layout is no paper model: say so wherever the run is named
        run["label"] = f"custom ({run['preset'].upper()} overridden)" if is_custom(settings) else run["preset"].upper()
    return {"settings": asdict(settings), "environment": measured_with, "inference": runs}


# ---- distillation cost ----


def run_distillation_benchmark(
    settings: BenchmarkSettings, preset: str = "s12", temperature: float = 1.0
) -> dict:
    """Seconds per training step of a RIFormer student with a PoolFormer teacher of the same size, interleaved.

    Steps are `trainer.compute_loss` (under the Trainer's autocast context) + backward + AdamW step, for labels only,
    soft distillation (label-free, α = 1) and soft distillation + module imitation (the paper's S12 weights, the
    default imitated blocks; the PoolFormer serves as logit and imitation teacher with one forward). The overhead is
    the imitation step over (labels-only step + teacher forward).
    """
    from .distillation import RIFormerDistillationTrainer, RIFormerTrainingArguments

    torch.manual_seed(settings.seed)
    config = riformer_config(preset, settings)
    student = RIFormerForImageClassification(config).to(settings.device).train()
    teacher = PoolFormerForImageClassification(poolformer_config(config)).to(settings.device)
    teacher.eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    batch = {
        "pixel_values": torch.randn(
            settings.batch_size, config.num_channels, settings.image_size, settings.image_size, device=settings.device
        ),
        "labels": torch.randint(0, config.num_labels, (settings.batch_size,), device=settings.device),
    }
    variants = {
        "labels_only": {"distillation_type": "none"},
        "soft_kd": {"distillation_type": "soft", "distillation_alpha": 1.0},
        "soft_kd_imitation": {"distillation_type": "soft", "distillation_alpha": 1.0, **PAPER_IMITATION_WEIGHTS},
        "full_recipe": {"distillation_type": "soft", "distillation_alpha": 1.0, **PAPER_IMITATION_WEIGHTS,
                        **PAPER_BATCH_AUGMENTATION},
    }
    with tempfile.TemporaryDirectory() as output_dir, _threads(settings.threads):
        trainers = {}
        for name, fields in variants.items():
            args = RIFormerTrainingArguments(
                output_dir=output_dir, report_to="none", use_cpu=settings.device == "cpu",
                bf16=settings.dtype == "bf16", distillation_temperature=temperature, **fields,
            )
            trainers[name] = RIFormerDistillationTrainer(
                student, args, teacher_model=None if name == "labels_only" else teacher
            )

        def step(trainer):
            with trainer.compute_loss_context_manager():
                loss = trainer.compute_loss(student, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def teacher_forward():
            with torch.no_grad(), trainers["soft_kd"].accelerator.autocast():
                teacher(pixel_values=batch["pixel_values"])

        workloads = {name: (lambda trainer=trainer: step(trainer)) for name, trainer in trainers.items()}
        workloads["teacher_forward"] = teacher_forward
        seconds = time_interleaved(workloads, settings.warmup, settings.repeats, _synchronizer(settings.device))

    baseline = [s + t for s, t in zip(seconds["labels_only"], seconds["teacher_forward"])]
    return {
        "preset": preset,
        "batch_size": settings.batch_size,
        "image_size": settings.image_size,
        "seconds": {name: _summary(values) for name, values in seconds.items()},
        "overhead": {
            "soft_kd_vs_student_plus_teacher": _ratio(seconds["soft_kd"], baseline),
            "soft_kd_imitation_vs_student_plus_teacher": _ratio(seconds["soft_kd_imitation"], baseline),
            "full_recipe_vs_soft_kd_imitation": _ratio(seconds["full_recipe"], seconds["soft_kd_imitation"]),
            "full_recipe_vs_labels_only": _ratio(seconds["full_recipe"], seconds["labels_only"]),
        },
    }


# ---- reporting ----


def environment(device: str) -> dict:
    """Hardware and software the numbers were measured with."""
    import transformers

    from . import __version__

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


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_inference_table(record: dict) -> str:
    """A Markdown table of every preset: throughput, achieved FLOP/s, share of the matmul bound and ratios."""
    settings = record["settings"]
    lines = [
        f"batch {settings['batch_size']}, {settings['image_size']}², {settings['dtype']}, device {settings['device']}, "
        f"{record['environment']['threads']} threads, channels_last={settings['channels_last']}, "
        f"compile={settings['compile']}; median of {settings['repeats']} interleaved rounds after "
        f"{settings['warmup']} warm-up",
        "",
        "| preset | model | params | GMACs | img/s (median, [min, max]) | GFLOP/s | of matmul bound | × PoolFormer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in record["inference"]:
        for result in run["models"].values():
            low, high = result["images_per_s_range"]
            lines.append(
                f"| {run['label']} | {result['label']} | {result['parameters'] / 1e6:.2f} M "
                f"| {run['macs_per_image'] / 1e9:.4g} | {result['images_per_s']:.1f} [{low:.1f}, {high:.1f}] "
                f"| {result['achieved_flops_per_s'] / 1e9:.1f} | {100 * result['fraction_of_matmul_bound']:.0f} % "
                f"| {_format_ratio(result['speedup_vs_poolformer'])} |"
            )
    lines.append("")
    for run in record["inference"]:
        matmul = run["matmul"]
        lines.append(
            f"{run['label']}: deploy / training form {_format_ratio(run['deploy_vs_training_form'])}; "
            f"fused / plain deploy {_format_ratio(run['fused_vs_plain_deploy'])}; matmul bound "
            f"{matmul['flops_per_s'] / 1e9:.1f} GFLOP/s ({matmul['size']}² × {matmul['size']}² {settings['dtype']})."
        )
    return "\n".join(lines)


def _format_ratio(ratio: dict[str, float]) -> str:
    return f"{ratio['median']:.2f} [{ratio['min']:.2f}, {ratio['max']:.2f}]"


def format_distillation_table(record: dict) -> str:
    labels = {
        "labels_only": "labels only (student step)",
        "soft_kd": "soft KD (α = 1)",
        "soft_kd_imitation": "soft KD + module imitation",
        "full_recipe": "+ mixup/cutmix, erasing, smoothing (full recipe)",
        "teacher_forward": "teacher forward (no grad)",
    }
    lines = [
        f"{record['preset'].upper()} student, PoolFormer-{record['preset'].upper()} teacher, batch "
        f"{record['batch_size']}, {record['image_size']}²",
        "",
        "| step | s/step (median, [min, max]) |",
        "|---|---|",
    ]
    for name, label in labels.items():
        s = record["seconds"][name]
        lines.append(f"| {label} | {s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}] |")
    overhead = record["overhead"]
    lines += [
        "",
        "soft KD / (student step + teacher forward): "
        + _format_ratio(overhead["soft_kd_vs_student_plus_teacher"]),
        "soft KD + imitation / (student step + teacher forward): "
        + _format_ratio(overhead["soft_kd_imitation_vs_student_plus_teacher"]),
        "full recipe / soft KD + imitation: " + _format_ratio(overhead["full_recipe_vs_soft_kd_imitation"]),
        "full recipe / crop-and-flip labels-only step: " + _format_ratio(overhead["full_recipe_vs_labels_only"]),
    ]
    return "\n".join(lines)


def plot_throughput_vs_accuracy(record: dict, path: str) -> None:
    """Throughput (x) against published top-1 (y) of RIFormer (deploy) and PoolFormer for the measured presets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=150)
    for family, model_name, style in (("riformer", "riformer_deploy", "o-"), ("poolformer", "poolformer", "s--")):
        runs = [run for run in record["inference"] if run["preset"] in PUBLISHED_TOP1[family]]
        xs = [run["models"][model_name]["images_per_s"] for run in runs]
        ys = [PUBLISHED_TOP1[family][run["preset"]] for run in runs]
        axes.plot(xs, ys, style, label=MODEL_NAMES[model_name])
        for x, y, run in zip(xs, ys, runs):
            axes.annotate(run["preset"].upper(), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    settings, env = record["settings"], record["environment"]
    device = env.get("gpu") or f"{env['cpu']}, {env['threads']} threads"
    axes.set_xlabel(f"throughput (images/s; batch {settings['batch_size']}, {settings['dtype']})")
    axes.set_ylabel("ImageNet-1k top-1 (%), published")
    axes.set_title(f"RIFormer vs PoolFormer — {device}", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# ---- like for like: every model inside each runtime ----

RUNTIMES = ("eager", "inductor", "ort", "ort-int8")
RUNTIME_MODELS = ("poolformer", "riformer_train", "riformer_deploy")


def is_custom(settings: BenchmarkSettings) -> bool:
    """Whether the layouts are overridden (a tiny setting): then no paper preset name and no ImageNet plot apply."""
    return bool(settings.depths or settings.hidden_sizes)


def _runtime_runners(models: dict[str, nn.Module], runtime: str, settings: BenchmarkSettings, workdir: str) -> dict:
    """`pixels → outputs` callables of every model under one runtime (compiled / exported / quantised as needed)."""
    if runtime == "eager":
        return {name: (lambda x, m=models[name]: m(pixel_values=x)) for name in RUNTIME_MODELS}
    if runtime == "inductor":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # without it, inductor on CPU is no faster than eager
        return {name: (lambda x, m=torch.compile(models[name]): m(pixel_values=x)) for name in RUNTIME_MODELS}
    from .export.onnx import export_graph, ort_session, quantize_int8

    runners = {}
    for name in RUNTIME_MODELS:
        path = export_graph(models[name], os.path.join(workdir, f"{name}.onnx"), settings.image_size)
        if runtime == "ort-int8":  # random calibration: the speed does not depend on the ranges
            generator = torch.Generator().manual_seed(settings.seed)
            batches = [torch.randn(4, 3, settings.image_size, settings.image_size, generator=generator).numpy()
                       for _ in range(4)]
            path = quantize_int8(path, os.path.join(workdir, f"{name}_int8.onnx"), batches)
        session = ort_session(path, settings.threads)
        runners[name] = lambda x, session=session: session.run(None, {"pixel_values": x.numpy()})
    return runners


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


def run_runtime_benchmark(settings: BenchmarkSettings, runtimes=RUNTIMES, preset: str = "s12") -> dict:
    """PoolFormer, RIFormer training form and deploy form inside each runtime (eager PyTorch, inductor with freezing,
    ONNX Runtime fp32, ONNX Runtime INT8): batch-1 latency (ms, median and p90) and `batch_size` throughput, the
    models interleaved within each runtime, and the deploy / PoolFormer ratio per round. CPU, fp32."""
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"Unknown runtime(s) {unknown}; choose from {', '.join(RUNTIMES)}.")
    if settings.device != "cpu" or settings.dtype != "fp32":
        raise ValueError("The runtime comparison runs on CPU in fp32 (--device cpu --dtype fp32).")
    results = {}
    with _threads(settings.threads), tempfile.TemporaryDirectory() as workdir:
        models = build_models(preset, settings)
        generator = torch.Generator().manual_seed(settings.seed)
        single = torch.randn(1, 3, settings.image_size, settings.image_size, generator=generator)
        batch = torch.randn(settings.batch_size, 3, settings.image_size, settings.image_size, generator=generator)
        for runtime in runtimes:
            runners = _runtime_runners(models, runtime, settings, workdir)
            with torch.inference_mode():
                latency = time_interleaved({n: (lambda r=r: r(single)) for n, r in runners.items()},
                                           settings.warmup, settings.repeats)
                throughput = time_interleaved({n: (lambda r=r: r(batch)) for n, r in runners.items()},
                                              settings.warmup, settings.repeats)
            results[runtime] = {
                "models": {
                    name: {
                        "latency_ms": {"median": 1e3 * statistics.median(latency[name]),
                                       "p90": 1e3 * _p90(latency[name])},
                        "images_per_s": settings.batch_size / statistics.median(throughput[name]),
                    }
                    for name in RUNTIME_MODELS
                },
                "deploy_vs_poolformer_latency": _ratio(latency["poolformer"], latency["riformer_deploy"]),
                "deploy_vs_poolformer_throughput": _ratio(throughput["poolformer"], throughput["riformer_deploy"]),
            }
    return {"preset": "custom" if is_custom(settings) else preset, "batch_size": settings.batch_size,
            "image_size": settings.image_size, "runtimes": results}


def format_runtime_table(record: dict) -> str:
    lines = [
        f"{record['preset'].upper()}, fp32, batch 1 latency and batch {record['batch_size']} throughput at "
        f"{record['image_size']}², models interleaved inside each runtime",
        "",
        "| runtime | model | batch 1 ms (median / p90) | img/s | deploy ÷ PoolFormer (latency, throughput) |",
        "|---|---|---|---|---|",
    ]
    for runtime, result in record["runtimes"].items():
        for name in RUNTIME_MODELS:
            entry = result["models"][name]
            ratio = ""
            if name == "riformer_deploy":
                ratio = (f"{_format_ratio(result['deploy_vs_poolformer_latency'])}, "
                         f"{_format_ratio(result['deploy_vs_poolformer_throughput'])}")
            lines.append(
                f"| {runtime} | {MODEL_NAMES[name]} | {entry['latency_ms']['median']:.1f} / "
                f"{entry['latency_ms']['p90']:.1f} | {entry['images_per_s']:.1f} | {ratio} |"
            )
    return "\n".join(lines)


# ---- command line (riformer-bench) ----


# ---- gradient checkpointing memory ----


def run_memory_benchmark(settings: BenchmarkSettings, preset: str = "s12") -> dict:
    """Peak memory of one RIFormer training step (forward + backward, training form) without and with gradient
    checkpointing, each in a fresh subprocess so that neither sees the other's allocations.

    On CPU the peak is the process's peak resident set (`ru_maxrss`), on CUDA `torch.cuda.max_memory_allocated`;
    `step_bytes` is the rise of that peak over the model and inputs alone, i.e. what the step itself needs.
    """
    import subprocess
    import sys

    import riformer_hf

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(riformer_hf.__file__)),
                                                         os.environ.get("PYTHONPATH", "")])}
    child = "import json, sys; from riformer_hf.benchmark import _step_memory; print(json.dumps(_step_memory(*json.loads(sys.argv[1]))))"
    runs = {}
    for name, checkpointing in (("without_checkpointing", False), ("with_checkpointing", True)):
        arguments = json.dumps([preset, asdict(settings), checkpointing])
        done = subprocess.run([sys.executable, "-c", child, arguments], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"The memory measurement ({name}) failed:\n{done.stderr[-2000:]}")
        runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
    without, with_ = runs["without_checkpointing"], runs["with_checkpointing"]
    return {
        "preset": preset,
        "batch_size": settings.batch_size,
        "image_size": settings.image_size,
        "device": settings.device,
        "dtype": settings.dtype,
        "measure": "peak RSS (ru_maxrss)" if settings.device == "cpu" else "torch.cuda.max_memory_allocated",
        **runs,
        "peak_saving_bytes": without["peak_bytes"] - with_["peak_bytes"],
        "step_memory_ratio": without["step_bytes"] / with_["step_bytes"],
        "step_time_ratio": with_["seconds"] / without["seconds"],
    }


def _step_memory(preset: str, settings: dict, checkpointing: bool) -> dict:
    """One training step in this process; its peak memory and that of the model and inputs before it, in bytes."""
    import resource

    settings = BenchmarkSettings(**{**settings, "presets": tuple(settings["presets"])})
    cuda = settings.device.startswith("cuda")

    def peak() -> int:
        return torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    torch.manual_seed(settings.seed)
    with _threads(settings.threads):
        config = riformer_config(preset, settings)
        model = RIFormerForImageClassification(config).to(settings.device, settings.torch_dtype).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        shape = (settings.batch_size, config.num_channels, settings.image_size, settings.image_size)
        pixels = torch.randn(shape, device=settings.device, dtype=settings.torch_dtype)
        labels = torch.randint(0, config.num_labels, (settings.batch_size,), device=settings.device)
        if cuda:
            torch.cuda.synchronize(settings.device)
            torch.cuda.reset_peak_memory_stats(settings.device)
        before = peak()
        start = time.perf_counter()
        model(pixel_values=pixels, labels=labels).loss.backward()
        _synchronizer(settings.device)()
        seconds = time.perf_counter() - start
    return {"before_bytes": before, "peak_bytes": peak(), "step_bytes": peak() - before, "seconds": seconds}


def format_memory_table(record: dict) -> str:
    mib = 2**20
    lines = [
        f"Gradient checkpointing, RIFormer-{record['preset'].upper()} training step, batch {record['batch_size']}, "
        f"{record['image_size']}², {record['device']} {record['dtype']}; {record['measure']}",
        f"{'':24} {'peak MiB':>10} {'step MiB':>10} {'step s':>8}",
    ]
    for name in ("without_checkpointing", "with_checkpointing"):
        run = record[name]
        lines.append(
            f"{name.replace('_', ' '):24} {run['peak_bytes'] / mib:10.0f} {run['step_bytes'] / mib:10.0f} "
            f"{run['seconds']:8.2f}"
        )
    lines.append(
        f"saving: {record['peak_saving_bytes'] / mib:.0f} MiB of peak; the step needs "
        f"{record['step_memory_ratio']:.2f}x less memory and {record['step_time_ratio']:.2f}x the time"
    )
    return "\n".join(lines)


def int_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="riformer-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["s12"], help=f"{', '.join(RIFORMER_PRESETS)} or all")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--channels_last", action="store_true", help="models and inputs in channels_last")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model (compiled in warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds")
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds")
    parser.add_argument("--matmul_size", type=int, default=None, help="n of the n×n bound (2048 CPU, 8192 GPU)")
    parser.add_argument("--depths", type=int_tuple, default=None, help="override, e.g. 1,1,2,1 (quick runs)")
    parser.add_argument("--hidden_sizes", type=int_tuple, default=None, help="override, e.g. 8,16,24,32")
    parser.add_argument("--output_json", default="benchmark.json")
    parser.add_argument("--plot", default=None, help="PNG of throughput vs published top-1")
    parser.add_argument("--distillation", action="store_true", help="also time distillation training steps")
    parser.add_argument("--distillation_only", action="store_true", help="only time distillation training steps")
    parser.add_argument("--distillation_batch_size", type=int, default=None, help="default: --batch_size")
    parser.add_argument("--runtimes", default=None,
                        help=f"compare the models inside these runtimes, comma-separated ({','.join(RUNTIMES)})")
    parser.add_argument("--memory", action="store_true", help="also measure the memory gradient checkpointing saves")
    parser.add_argument("--memory_batch_size", type=int, default=64, help="batch of the memory measurement")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    presets = tuple(RIFORMER_PRESETS) if args.presets == ["all"] else tuple(p.lower() for p in args.presets)
    fields = {k: v for k, v in vars(args).items() if k in BenchmarkSettings.__dataclass_fields__ and k != "presets"}
    settings = BenchmarkSettings(presets=presets, **fields)
    record = {}
    if args.runtimes:
        record["runtimes"] = run_runtime_benchmark(settings, tuple(args.runtimes.split(",")), preset=presets[0])
        print(format_runtime_table(record["runtimes"]))
    elif not args.distillation_only:
        record = run_inference_benchmark(settings)
        print(format_inference_table(record))
        if args.plot and is_custom(settings):
            print("plot skipped: --depths / --hidden_sizes make a custom layout, not a paper model with an ImageNet top-1")
        elif args.plot:
            plot_throughput_vs_accuracy(record, args.plot)
            print(f"plot: {args.plot}")
    if args.distillation or args.distillation_only:
        batch_size = args.distillation_batch_size or args.batch_size
        distill_settings = BenchmarkSettings(**{**fields, "batch_size": batch_size})
        record["distillation"] = run_distillation_benchmark(distill_settings, preset=presets[0])
        print()
        print(format_distillation_table(record["distillation"]))
    if args.memory:
        memory_settings = BenchmarkSettings(**{**fields, "batch_size": args.memory_batch_size})
        record["memory"] = run_memory_benchmark(memory_settings, preset=presets[0])
        print()
        print(format_memory_table(record["memory"]))
    with open(args.output_json, "w") as handle:
        json.dump(record, handle, indent=2)
    print(f"json: {args.output_json}")
    return record


__all__ = [
    "BenchmarkSettings",
    "PUBLISHED_TOP1",
    "build_models",
    "count_macs",
    "environment",
    "format_distillation_table",
    "format_inference_table",
    "main",
    "plot_throughput_vs_accuracy",
    "run_distillation_benchmark",
    "run_inference_benchmark",
    "run_runtime_benchmark",
    "time_interleaved",
]
