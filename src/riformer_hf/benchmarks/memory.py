"""Peak memory of a RIFormer training step without and with gradient checkpointing, each in a fresh process."""

import json
import os
import time
from dataclasses import asdict

import torch

from ..models.riformer import RIFormerForImageClassification
from ..timing import synchronizer, torch_threads
from .common import BenchmarkSettings, riformer_config


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
    child = ("import json, sys; from riformer_hf.benchmarks.memory import _step_memory; "
             "print(json.dumps(_step_memory(*json.loads(sys.argv[1]))))")
    runs = {}
    for name, checkpointing in (("without_checkpointing", False), ("with_checkpointing", True)):
        arguments = json.dumps([preset, asdict(settings), checkpointing])
        done = subprocess.run([sys.executable, "-c", child, arguments], capture_output=True, text=True, env=env,
                              check=False)
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
    with torch_threads(settings.threads):
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
        synchronizer(settings.device)()
        seconds = time.perf_counter() - start
    return {"before_bytes": before, "peak_bytes": peak(), "step_bytes": peak() - before, "seconds": seconds}


def format_memory_table(record: dict) -> str:
    mib = 2**20
    lines = [
        (f"Gradient checkpointing, RIFormer-{record['preset'].upper()} training step, batch {record['batch_size']}, "
         f"{record['image_size']}², {record['device']} {record['dtype']}; {record['measure']}"),
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


__all__ = ["format_memory_table", "run_memory_benchmark"]
