"""`riformer-bench`: speed of RIFormer against transformers' PoolFormer, measured side by side in one process.

- Inference (`benchmarks.inference`): images/s of PoolFormer, RIFormer in training form and in deploy form (through its
  plain modules and its fused path), timed interleaved, with the matmul bound of the same rounds.
- Runtimes (`--runtimes`, `benchmarks.runtimes`): the models inside eager and inductor (fp32, bf16), ONNX Runtime
  and OpenVINO (fp32, bf16, INT8), then RIFormer's deploy form across them against eager fp32.
- Distillation cost (`--distillation`, `benchmarks.distillation`) and gradient checkpointing's memory (`--memory`).

    riformer-bench                                   # S12, batch 16, 224², fp32, CPU
    riformer-bench --presets all --repeats 5 --plot benchmark.png
    riformer-bench --device cuda --dtype bf16 --batch_size 256 --channels_last --compile
    riformer-bench --distillation                    # adds the training-step table
"""

import argparse
import json

from ..models.riformer import RIFORMER_PRESETS
from ..safety import PLOT_SUFFIXES, check_output_file, staged_file, write_file
from .common import BenchmarkSettings, is_custom
from .distillation import format_distillation_table, run_distillation_benchmark
from .inference import format_inference_table, plot_throughput_vs_accuracy, run_inference_benchmark
from .memory import format_memory_table, run_memory_benchmark
from .runtimes import RUNTIMES, format_runtime_table, run_runtime_benchmark


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
    parser.add_argument("--output_json", default="benchmark.json", help="the results (replaced if it exists)")
    parser.add_argument("--plot", default=None, help="throughput vs published top-1 (.png, .pdf, .svg, .jpg)")
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
    output_json = check_output_file(args.output_json, "--output_json", others=[("--plot", args.plot)])
    plot = check_output_file(args.plot, "--plot", suffixes=PLOT_SUFFIXES)
    record = {}
    if args.runtimes:
        record["runtimes"] = run_runtime_benchmark(settings, tuple(args.runtimes.split(",")), preset=presets[0])
        print(format_runtime_table(record["runtimes"]))
    elif not args.distillation_only:
        record = run_inference_benchmark(settings)
        print(format_inference_table(record))
        if plot and is_custom(settings):
            print("plot skipped: --depths / --hidden_sizes make a custom layout, not a paper model with an ImageNet "
                  "top-1")
        elif plot:
            with staged_file(plot) as temporary:
                plot_throughput_vs_accuracy(record, temporary)
            print(f"plot: {plot}")
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
    write_file(output_json, json.dumps(record, indent=2))
    print(f"json: {output_json}")
    return record


if __name__ == "__main__":
    import sys

    from ..cli import run_command

    sys.exit(run_command("bench"))
