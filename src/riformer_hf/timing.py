"""Interleaved timing: every workload once per round, in a rotating order, so that a machine's drifts (other
processes, clocks) affect all workloads alike; medians over rounds and per-round ratios. Used by the benchmarks and
the demo."""

import contextlib
import statistics
import time
from collections.abc import Callable

import torch


def synchronizer(device: str) -> Callable[[], None]:
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


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def ratio(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Median (and range) over rounds of the per-round ratio: robust to load that changes between rounds."""
    return summary([n / d for n, d in zip(numerator, denominator)])


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]


@contextlib.contextmanager
def torch_threads(count: int | None):
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


__all__ = ["p90", "ratio", "summary", "synchronizer", "time_interleaved", "torch_threads"]
