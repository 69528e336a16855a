"""Like for like: PoolFormer and both RIFormer forms inside each runtime (eager PyTorch, inductor with freezing,
ONNX Runtime fp32 and INT8): batch-1 latency and batch throughput, interleaved within each runtime."""

import os
import statistics
import tempfile

import torch
from torch import nn

from ..errors import UserError
from ..timing import p90, ratio, time_interleaved, torch_threads
from .common import MODEL_NAMES, BenchmarkSettings, build_models, format_ratio, is_custom

RUNTIMES = ("eager", "inductor", "ort", "ort-int8")
RUNTIME_MODELS = ("poolformer", "riformer_train", "riformer_deploy")




def _runtime_runners(models: dict[str, nn.Module], runtime: str, settings: BenchmarkSettings, workdir: str) -> dict:
    """`pixels → outputs` callables of every model under one runtime (compiled / exported / quantised as needed)."""
    if runtime == "eager":
        return {name: (lambda x, m=models[name]: m(pixel_values=x)) for name in RUNTIME_MODELS}
    if runtime == "inductor":
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # without it, inductor on CPU is no faster than eager
        compiled = {name: torch.compile(models[name]) for name in RUNTIME_MODELS}
        return {name: (lambda x, m=model: m(pixel_values=x)) for name, model in compiled.items()}
    from ..export.onnx import export_graph, ort_session, quantize_int8

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




def run_runtime_benchmark(settings: BenchmarkSettings, runtimes=RUNTIMES, preset: str = "s12") -> dict:
    """PoolFormer, RIFormer training form and deploy form inside each runtime (eager PyTorch, inductor with freezing,
    ONNX Runtime fp32, ONNX Runtime INT8): batch-1 latency (ms, median and p90) and `batch_size` throughput, the
    models interleaved within each runtime, and the deploy / PoolFormer ratio per round. CPU, fp32."""
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise UserError(f"Unknown runtime(s) {unknown}; choose from {', '.join(RUNTIMES)}.")
    if settings.device != "cpu" or settings.dtype != "fp32":
        raise UserError("The runtime comparison runs on CPU in fp32 (--device cpu --dtype fp32).")
    results = {}
    with torch_threads(settings.threads), tempfile.TemporaryDirectory() as workdir:
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
                                       "p90": 1e3 * p90(latency[name])},
                        "images_per_s": settings.batch_size / statistics.median(throughput[name]),
                    }
                    for name in RUNTIME_MODELS
                },
                "deploy_vs_poolformer_latency": ratio(latency["poolformer"], latency["riformer_deploy"]),
                "deploy_vs_poolformer_throughput": ratio(throughput["poolformer"], throughput["riformer_deploy"]),
            }
    return {"preset": "custom" if is_custom(settings) else preset, "batch_size": settings.batch_size,
            "image_size": settings.image_size, "runtimes": results}


def format_runtime_table(record: dict) -> str:
    lines = [
        (f"{record['preset'].upper()}, fp32, batch 1 latency and batch {record['batch_size']} throughput at "
         f"{record['image_size']}², models interleaved inside each runtime"),
        "",
        "| runtime | model | batch 1 ms (median / p90) | img/s | deploy ÷ PoolFormer (latency, throughput) |",
        "|---|---|---|---|---|",
    ]
    for runtime, result in record["runtimes"].items():
        for name in RUNTIME_MODELS:
            entry = result["models"][name]
            ratio = ""
            if name == "riformer_deploy":
                ratio = (f"{format_ratio(result['deploy_vs_poolformer_latency'])}, "
                         f"{format_ratio(result['deploy_vs_poolformer_throughput'])}")
            lines.append(
                f"| {runtime} | {MODEL_NAMES[name]} | {entry['latency_ms']['median']:.1f} / "
                f"{entry['latency_ms']['p90']:.1f} | {entry['images_per_s']:.1f} | {ratio} |"
            )
    return "\n".join(lines)


__all__ = ["RUNTIMES", "format_runtime_table", "run_runtime_benchmark"]
