"""Inference throughput of PoolFormer and RIFormer (training form, deploy form through its plain modules and
through its fused path) with the matmul bound, all in the same interleaved rounds; achieved FLOP/s and the share of
the bound; the throughput-vs-accuracy plot."""

import statistics
from dataclasses import asdict

import torch

from ..timing import ratio, summary, synchronizer, time_interleaved, torch_threads
from .common import (
    MODEL_NAMES,
    PUBLISHED_TOP1,
    BenchmarkSettings,
    build_models,
    count_macs,
    environment,
    format_ratio,
    is_custom,
    matmul_workload,
    parameter_count,
)


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
        seconds = time_interleaved(workloads, settings.warmup, settings.repeats, synchronizer(settings.device))

    bound = matmul_flops / statistics.median(seconds["matmul"])
    results = {}
    for name in MODEL_NAMES:
        median = statistics.median(seconds[name])
        images_per_s = settings.batch_size / median
        results[name] = {
            "label": MODEL_NAMES[name],
            "parameters": parameter_count(models[name.removesuffix("_plain")]),
            "seconds_per_batch": summary(seconds[name]),
            "images_per_s": images_per_s,
            "images_per_s_range": [settings.batch_size / max(seconds[name]), settings.batch_size / min(seconds[name])],
            "achieved_flops_per_s": 2 * macs * images_per_s,
            "fraction_of_matmul_bound": 2 * macs * images_per_s / bound,
            "speedup_vs_poolformer": ratio(seconds["poolformer"], seconds[name]),
        }
    return {
        "preset": preset,
        "macs_per_image": macs,
        "matmul": {"size": settings.matmul_dim, "flops_per_s": bound, "seconds": summary(seconds["matmul"])},
        "models": results,
        "deploy_vs_training_form": ratio(seconds["riformer_train"], seconds["riformer_deploy"]),
        "fused_vs_plain_deploy": ratio(seconds["riformer_deploy_plain"], seconds["riformer_deploy"]),
    }


def run_inference_benchmark(settings: BenchmarkSettings) -> dict:
    """Every preset of `settings`, one after the other; returns the JSON-ready record (settings, environment, runs)."""
    with torch_threads(settings.threads):
        runs = [benchmark_preset(preset, settings) for preset in settings.presets]
        measured_with = environment(settings.device)
    for run in runs:  # an overridden layout is no paper model: say so wherever the run is named
        run["label"] = f"custom ({run['preset'].upper()} overridden)" if is_custom(settings) else run["preset"].upper()
    return {"settings": asdict(settings), "environment": measured_with, "inference": runs}


def format_inference_table(record: dict) -> str:
    """A Markdown table of every preset: throughput, achieved FLOP/s, share of the matmul bound and ratios."""
    settings = record["settings"]
    lines = [
        (f"batch {settings['batch_size']}, {settings['image_size']}², {settings['dtype']}, "
         f"device {settings['device']}, {record['environment']['threads']} threads, "
         f"channels_last={settings['channels_last']}, compile={settings['compile']}; median of "
         f"{settings['repeats']} interleaved rounds after {settings['warmup']} warm-up"),
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
                f"| {format_ratio(result['speedup_vs_poolformer'])} |"
            )
    lines.append("")
    for run in record["inference"]:
        matmul = run["matmul"]
        lines.append(
            f"{run['label']}: deploy / training form {format_ratio(run['deploy_vs_training_form'])}; "
            f"fused / plain deploy {format_ratio(run['fused_vs_plain_deploy'])}; matmul bound "
            f"{matmul['flops_per_s'] / 1e9:.1f} GFLOP/s ({matmul['size']}² × {matmul['size']}² {settings['dtype']})."
        )
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


__all__ = ["format_inference_table", "plot_throughput_vs_accuracy", "run_inference_benchmark"]
