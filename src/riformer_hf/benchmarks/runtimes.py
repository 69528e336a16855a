"""Like for like on the CPU: PoolFormer and both RIFormer forms inside each runtime, then RIFormer's deploy form
across all of them.

Runtimes (every model compiled / exported / quantised inside each):

    eager, inductor                 fp32 PyTorch; inductor with `freezing = True`
    eager-bf16, inductor-bf16       the models cast to bf16 (RIFormer deploy: the fused path); inductor-bf16 also
                                    channels_last
    ort, ort-int8                   ONNX Runtime: the exported graph (RIFormer deploy: the folded graph), and its
                                    static INT8 QDQ quantisation
    openvino, openvino-bf16         OpenVINO: the folded graph with "moments" norms, inference precision f32 / bf16
    openvino-int8                   its NNCF post-training INT8 (what stays unquantised runs in f32: bf16 there measured
                                    no faster)

Per runtime, batch-1 latency and batch throughput with the models interleaved, and the deploy / PoolFormer ratio per
round. Then one interleaved set of RIFormer's deploy form under every runtime: throughput and latency per runtime
relative to eager fp32 (the "Which path" figures). Last, one interleaved set of PoolFormer on its fastest runtime and
RIFormer's deploy form on its fastest: the fastest-against-fastest ratios and each model's share of the matmul bound
(a square product in bf16, fp32 on a CPU without bf16, over the model's FLOPs per image; timed first and alone: once
ONNX Runtime's and OpenVINO's thread pools exist, PyTorch's OpenMP threads on a small VM measured 2× slower).
Inputs are fp32 pixels; the cast to bf16 is part of each call. INT8 graphs are calibrated on random inputs (their
speed does not depend on the ranges). bf16 runtimes on a CPU without bf16 instructions are skipped with the reason,
not timed (torch would emulate bf16).
"""

import copy
import dataclasses
import os
import statistics
import tempfile
from collections.abc import Callable

import torch
from torch import nn

from ..errors import UserError
from ..timing import p90, ratio, time_interleaved, torch_threads
from .common import (
    MODEL_NAMES,
    BenchmarkSettings,
    build_models,
    count_macs,
    cpu_class,
    cpu_features,
    environment,
    format_ratio,
    is_custom,
    matmul_workload,
    riformer_config,
    runtime_versions,
)

RUNTIMES = ("eager", "inductor", "eager-bf16", "inductor-bf16", "ort", "ort-int8", "openvino", "openvino-bf16",
            "openvino-int8")
BF16_RUNTIMES = ("eager-bf16", "inductor-bf16", "openvino-bf16")
RUNTIME_MODELS = ("poolformer", "riformer_train", "riformer_deploy")
BASELINE = "eager"


def _calibration_batches(settings: BenchmarkSettings) -> list:
    generator = torch.Generator().manual_seed(settings.seed)
    return [torch.randn(4, 3, settings.image_size, settings.image_size, generator=generator).numpy()
            for _ in range(4)]


def _bf16_copy(model: nn.Module, channels_last: bool = False) -> nn.Module:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return copy.deepcopy(model).to(torch.bfloat16, memory_format=memory_format).eval()


class _Graphs:
    """Each model's exported ONNX file and OpenVINO model, made once and shared by the runtimes that run them."""

    def __init__(self, models: dict[str, nn.Module], settings: BenchmarkSettings, workdir: str):
        self.models, self.settings, self.workdir = models, settings, workdir
        self._openvino = {}

    def onnx(self, name: str, int8: bool = False) -> str:
        from ..export.onnx import export_graph, quantize_int8

        path = os.path.join(self.workdir, f"{name}.onnx")
        if not os.path.exists(path):
            export_graph(self.models[name], path, self.settings.image_size)
        if not int8:
            return path
        int8_path = os.path.join(self.workdir, f"{name}_int8.onnx")
        if not os.path.exists(int8_path):
            quantize_int8(path, int8_path, _calibration_batches(self.settings))
        return int8_path

    def openvino(self, name: str, int8: bool = False):
        from ..export.openvino import convert_graph, quantize_int8

        if (name, False) not in self._openvino:
            self._openvino[name, False] = convert_graph(self.models[name], self.settings.image_size, self.workdir)
        if int8 and (name, True) not in self._openvino:
            self._openvino[name, True] = quantize_int8(self._openvino[name, False],
                                                       _calibration_batches(self.settings))
        return self._openvino[name, int8]


def _runtime_runners(runtime: str, graphs: _Graphs, threads: int | None) -> dict[str, Callable]:
    """`pixels (fp32 NCHW tensor) → outputs` callables of every model under one runtime."""
    if runtime in ("inductor", "inductor-bf16"):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # without it, inductor on CPU is no faster than eager
    return {name: _runner(runtime, name, graphs, threads) for name in RUNTIME_MODELS}


def _runner(runtime: str, name: str, graphs: _Graphs, threads: int | None) -> Callable:
    model = graphs.models[name]
    if runtime == "eager":
        return lambda x: model(pixel_values=x)
    if runtime == "inductor":
        compiled = torch.compile(model)
        return lambda x: compiled(pixel_values=x)
    if runtime == "eager-bf16":
        bf16 = _bf16_copy(model)
        return lambda x: bf16(pixel_values=x.to(torch.bfloat16))
    if runtime == "inductor-bf16":
        compiled = torch.compile(_bf16_copy(model, channels_last=True))
        return lambda x: compiled(pixel_values=x.to(torch.bfloat16, memory_format=torch.channels_last))
    if runtime in ("ort", "ort-int8"):
        from ..export.onnx import ort_session

        session = ort_session(graphs.onnx(name, int8=runtime == "ort-int8"), threads)
        return lambda x: session.run(None, {"pixel_values": x.numpy()})
    from ..export.openvino import IRRunner, compile_ir

    precision = "bf16" if runtime == "openvino-bf16" else "fp32"
    return IRRunner(compile_ir(graphs.openvino(name, int8=runtime == "openvino-int8"), precision, threads))


def _skip_reason(runtime: str, features: dict) -> str | None:
    """Why `runtime` cannot run here (None when it can)."""
    if runtime in BF16_RUNTIMES and not (features["avx512_bf16"] or features["amx_bf16"]):
        return "this CPU has no bf16 instructions (AVX512-BF16 or AMX): bf16 would be emulated"
    if runtime.startswith("openvino"):
        try:
            import nncf  # noqa: F401
            import openvino  # noqa: F401
        except ImportError:
            return "OpenVINO is not installed: pip install 'riformer_hf[openvino]'"
    return None


def _time_both(runners: dict[str, Callable], single, batch, settings: BenchmarkSettings):
    """Seconds per round of every runner on one image, then on the batch: two interleaved sets."""
    with torch.inference_mode():
        return tuple(time_interleaved({name: (lambda run=run, x=x: run(x)) for name, run in runners.items()},
                                      settings.warmup, settings.repeats) for x in (single, batch))


def _timings(seconds: dict[str, list[float]], batch_size: int) -> dict:
    return {name: {"latency_ms": {"median": 1e3 * statistics.median(values), "p90": 1e3 * p90(values)}}
            if batch_size == 1 else {"images_per_s": batch_size / statistics.median(values)}
            for name, values in seconds.items()}


def run_runtime_benchmark(settings: BenchmarkSettings, runtimes=RUNTIMES, preset: str = "s12") -> dict:
    """PoolFormer, RIFormer training form and deploy form inside each runtime: batch-1 latency (ms, median and p90)
    and `batch_size` throughput, the models interleaved within each runtime, and the deploy / PoolFormer ratio per
    round; then RIFormer's deploy form under every runtime in one interleaved set, with each runtime's per-round
    ratio to eager fp32 (`across_runtimes`). CPU; the record names the CPU's class (AMX, AVX512-BF16, VNNI only,
    none) and the runtimes' versions."""
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise UserError(f"Unknown runtime(s) {unknown}; choose from {', '.join(RUNTIMES)}.")
    if settings.device != "cpu" or settings.dtype != "fp32":
        raise UserError("The runtime comparison runs on CPU from fp32 models (--device cpu --dtype fp32); the bf16 "
                        "runtimes cast them.")
    features = cpu_features()
    record = {"preset": "custom" if is_custom(settings) else preset, "batch_size": settings.batch_size,
              "image_size": settings.image_size, "cpu": {**features, "class": cpu_class(features)}, "runtimes": {}}
    all_runners = {}
    with torch_threads(settings.threads), tempfile.TemporaryDirectory() as workdir:
        record["environment"] = {**environment("cpu"), **runtime_versions()}
        record["matmul"] = _matmul_bound(settings, features)
        graphs = _Graphs(build_models(preset, settings), settings, workdir)
        generator = torch.Generator().manual_seed(settings.seed)
        single = torch.randn(1, 3, settings.image_size, settings.image_size, generator=generator)
        batch = torch.randn(settings.batch_size, 3, settings.image_size, settings.image_size, generator=generator)
        for runtime in runtimes:
            reason = _skip_reason(runtime, features)
            if reason is not None:
                record["runtimes"][runtime] = {"skipped": reason}
                continue
            runners = all_runners[runtime] = _runtime_runners(runtime, graphs, settings.threads)
            latency, throughput = _time_both(runners, single, batch, settings)
            lat, thr = _timings(latency, 1), _timings(throughput, settings.batch_size)
            record["runtimes"][runtime] = {
                "models": {name: {**lat[name], **thr[name]} for name in RUNTIME_MODELS},
                "deploy_vs_poolformer_latency": ratio(latency["poolformer"], latency["riformer_deploy"]),
                "deploy_vs_poolformer_throughput": ratio(throughput["poolformer"], throughput["riformer_deploy"]),
            }
        deploy_runners = {runtime: runners["riformer_deploy"] for runtime, runners in all_runners.items()}
        if BASELINE in deploy_runners and len(deploy_runners) > 1:
            record["across_runtimes"] = _across_runtimes(deploy_runners, single, batch, settings)
        if all_runners:
            record["fastest"] = _fastest_against_fastest(record, all_runners, single, batch, settings)
    return record


def _matmul_bound(settings: BenchmarkSettings, features: dict) -> dict:
    """A square product in bf16 (fp32 on a CPU without bf16) on the benchmark's threads: its FLOP/s and the images per
    second that rate allows the preset (its MACs per image: PoolFormer's and RIFormer's are equal, the token mixer
    costs no matrix products)."""
    dtype = "bf16" if features["avx512_bf16"] or features["amx_bf16"] else "fp32"
    matmul, flops = matmul_workload(dataclasses.replace(settings, dtype=dtype, device="cpu"))
    seconds = time_interleaved({"matmul": matmul}, settings.warmup, settings.repeats)["matmul"]
    tflops = flops / statistics.median(seconds) / 1e12
    macs = count_macs(riformer_config(settings.presets[0], settings), settings.image_size)
    return {"dtype": dtype, "size": settings.matmul_dim, "tflops": tflops,
            "bound_images_per_s": tflops * 1e12 / (2 * macs)}


def _fastest_against_fastest(record, all_runners, single, batch, settings: BenchmarkSettings) -> dict:
    """PoolFormer on the runtime where it ran fastest and RIFormer's deploy form on its fastest, timed again in one
    interleaved set: per-round ratios (batch 1 latency, batch throughput) and each one's share of the matmul bound."""
    timed = {runtime: result["models"] for runtime, result in record["runtimes"].items() if "models" in result}
    best = {name: max(timed, key=lambda runtime: timed[runtime][name]["images_per_s"])
            for name in ("poolformer", "riformer_deploy")}
    runners = {name: all_runners[best[name]][name] for name in best}
    latency, throughput = _time_both(runners, single, batch, settings)
    lat, thr = _timings(latency, 1), _timings(throughput, settings.batch_size)
    bound = record["matmul"]["bound_images_per_s"]
    return {
        "models": {name: {"runtime": best[name], **lat[name], **thr[name],
                          "share_of_bound": thr[name]["images_per_s"] / bound} for name in runners},
        "deploy_vs_poolformer_latency": ratio(latency["poolformer"], latency["riformer_deploy"]),
        "deploy_vs_poolformer_throughput": ratio(throughput["poolformer"], throughput["riformer_deploy"]),
    }


def _across_runtimes(runners: dict[str, Callable], single, batch, settings: BenchmarkSettings) -> dict:
    """RIFormer's deploy form under every runtime in one interleaved set (batch 1, then the batch): medians and each
    runtime's per-round speed-up over eager fp32."""
    latency, throughput = _time_both(runners, single, batch, settings)
    lat, thr = _timings(latency, 1), _timings(throughput, settings.batch_size)
    return {
        runtime: {
            **lat[runtime], **thr[runtime],
            "latency_speedup_vs_eager": ratio(latency[BASELINE], latency[runtime]),
            "throughput_speedup_vs_eager": ratio(throughput[BASELINE], throughput[runtime]),
        }
        for runtime in runners
    }


def format_runtime_table(record: dict) -> str:
    env = record["environment"]
    cpu = record["cpu"]
    lines = [
        (f"{record['preset'].upper()}, batch 1 latency and batch {record['batch_size']} throughput at "
         f"{record['image_size']}², {env['threads']} thread(s), models interleaved inside each runtime; "
         f"{env['cpu']} ({cpu['class']}: torch kernels {cpu['torch_cpu_capability']}), torch {env['torch']}, "
         f"onnxruntime {env['onnxruntime']}, openvino {(env['openvino'] or 'none').split('-')[0]}"),
        "",
        "| runtime | model | batch 1 ms (median / p90) | img/s | deploy ÷ PoolFormer (latency, throughput) |",
        "|---|---|---|---|---|",
    ]
    for runtime, result in record["runtimes"].items():
        if "skipped" in result:
            lines.append(f"| {runtime} | skipped: {result['skipped']} | | | |")
            continue
        for name in RUNTIME_MODELS:
            entry = result["models"][name]
            ratios = ""
            if name == "riformer_deploy":
                ratios = (f"{format_ratio(result['deploy_vs_poolformer_latency'])}, "
                          f"{format_ratio(result['deploy_vs_poolformer_throughput'])}")
            lines.append(
                f"| {runtime} | {MODEL_NAMES[name]} | {entry['latency_ms']['median']:.1f} / "
                f"{entry['latency_ms']['p90']:.1f} | {entry['images_per_s']:.1f} | {ratios} |"
            )
    if "across_runtimes" in record:
        lines += [
            "",
            "RIFormer, deploy form, every runtime in one interleaved set (× eager fp32: median [min, max] per round)",
            "",
            "| runtime | batch 1 ms | × eager (latency) | img/s | × eager (throughput) |",
            "|---|---|---|---|---|",
        ]
        for runtime, entry in record["across_runtimes"].items():
            lines.append(
                f"| {runtime} | {entry['latency_ms']['median']:.1f} | "
                f"{format_ratio(entry['latency_speedup_vs_eager'])} | {entry['images_per_s']:.1f} | "
                f"{format_ratio(entry['throughput_speedup_vs_eager'])} |"
            )
    if "fastest" in record:
        fastest, bound = record["fastest"], record["matmul"]
        lines += [
            "",
            (f"Fastest against fastest, one interleaved set. The bound: a {bound['size']}² {bound['dtype']} matmul "
             f"timed first, {bound['tflops']:.2f} TFLOP/s, {bound['bound_images_per_s']:.0f} img/s at the preset's "
             "MACs"),
            "",
            "| model | runtime | batch 1 ms | img/s | share of the bound |",
            "|---|---|---|---|---|",
        ]
        for name, entry in fastest["models"].items():
            lines.append(f"| {MODEL_NAMES[name]} | {entry['runtime']} | {entry['latency_ms']['median']:.1f} | "
                         f"{entry['images_per_s']:.1f} | {100 * entry['share_of_bound']:.0f} % |")
        lines.append(
            f"RIFormer deploy ÷ PoolFormer: latency {format_ratio(fastest['deploy_vs_poolformer_latency'])}, "
            f"throughput {format_ratio(fastest['deploy_vs_poolformer_throughput'])}"
        )
    return "\n".join(lines)


__all__ = ["BF16_RUNTIMES", "RUNTIMES", "format_runtime_table", "run_runtime_benchmark"]
