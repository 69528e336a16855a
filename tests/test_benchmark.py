"""The benchmark: script, MAC counting, interleaved timing.

Nothing here asserts anything about speed: the script runs for one tiny configuration and its outputs must be well
formed. The fused inference path it measures is tested in `test_fused_inference.py`.
"""

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from riformer_hf import RIFormerConfig, RIFormerForImageClassification
from riformer_hf.benchmarks.common import PAPER_GMACS, BenchmarkSettings, count_macs, riformer_config
from riformer_hf.benchmarks.inference import plot_throughput_vs_accuracy
from riformer_hf.benchmarks.runtimes import format_runtime_table, run_runtime_benchmark
from riformer_hf.convert.poolformer import poolformer_config
from riformer_hf.timing import time_interleaved

SCRIPT = Path(sys.executable).with_name("riformer-bench")
TINY = ["--depths", "1,1,2,1", "--hidden_sizes", "8,16,24,32", "--image_size", "32"]


# ---- the benchmark ----


def test_benchmark_script_end_to_end(tmp_path):
    json_path, png_path = tmp_path / "bench.json", tmp_path / "bench.png"
    command = [
        str(SCRIPT), "--presets", "s12", "m36", *TINY, "--batch_size", "3", "--warmup", "1",
        "--repeats", "3", "--threads", "1", "--matmul_size", "64", "--channels_last",
        "--output_json", str(json_path), "--plot", str(png_path), "--distillation", "--distillation_batch_size", "2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    record = json.loads(json_path.read_text())
    assert record["settings"]["presets"] == ["s12", "m36"] and record["settings"]["channels_last"] is True
    assert record["environment"]["threads"] == 1 and record["environment"]["torch"] == torch.__version__
    tiny = RIFormerConfig.from_preset("s12", depths=(1, 1, 2, 1), hidden_sizes=(8, 16, 24, 32), num_labels=1000)
    macs = count_macs(tiny, 32)
    for run in record["inference"]:
        assert run["macs_per_image"] == macs
        assert run["matmul"]["size"] == 64 and run["matmul"]["flops_per_s"] > 0
        assert set(run["models"]) == {"poolformer", "riformer_train", "riformer_deploy_plain", "riformer_deploy"}
        for result in run["models"].values():
            seconds = result["seconds_per_batch"]
            assert 0 < seconds["min"] <= seconds["median"] <= seconds["max"]
            assert result["images_per_s"] == pytest.approx(3 / seconds["median"])
            assert result["achieved_flops_per_s"] == pytest.approx(2 * macs * result["images_per_s"])
            assert result["fraction_of_matmul_bound"] == pytest.approx(
                result["achieved_flops_per_s"] / run["matmul"]["flops_per_s"]
            )
        # The deploy form drops 2·C parameters per block; PoolFormer has the deploy form's parameters.
        params = {name: result["parameters"] for name, result in run["models"].items()}
        extra = 2 * (8 + 16 + 2 * 24 + 32)
        assert params["poolformer"] == params["riformer_deploy"] == params["riformer_train"] - extra
        assert run["models"]["poolformer"]["speedup_vs_poolformer"]["median"] == 1.0
        ratios = [r["speedup_vs_poolformer"] for r in run["models"].values()]
        for ratio in ratios + [run["deploy_vs_training_form"], run["fused_vs_plain_deploy"]]:
            assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"]

    distillation = record["distillation"]
    assert set(distillation["seconds"]) == {"labels_only", "soft_kd", "soft_kd_imitation", "full_recipe",
                                            "teacher_forward"}
    assert all(s["median"] > 0 for s in distillation["seconds"].values())
    assert set(distillation["overhead"]) == {
        "soft_kd_vs_student_plus_teacher",
        "soft_kd_imitation_vs_student_plus_teacher",
        "full_recipe_vs_soft_kd_imitation",
        "full_recipe_vs_labels_only",
    }

    table = done.stdout
    for preset in ("S12", "M36"):  # overridden layouts: never named as the paper's models, never plotted
        for label in ("PoolFormer (transformers)", "RIFormer, training form", "RIFormer, deploy form, plain modules"):
            assert f"| custom ({preset} overridden) | {label}" in table and f"| {preset} | {label}" not in table
    assert "soft KD + module imitation" in table
    assert "plot skipped" in table and not png_path.exists()
    plot_throughput_vs_accuracy(record, str(png_path))
    png = png_path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 400 and height > 300


def test_runtime_comparison_runs_every_model_inside_each_runtime(monkeypatch):
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from riformer_hf.benchmarks import runtimes as runtimes_module

    settings = BenchmarkSettings(depths=(1, 1, 1, 1), hidden_sizes=(8, 8, 16, 16), image_size=32, batch_size=2,
                                 warmup=1, repeats=3, threads=1, num_labels=10)
    chosen = ("eager", "eager-bf16", "ort", "ort-int8", "openvino", "openvino-bf16", "openvino-int8")
    features = runtimes_module.cpu_features()
    bf16 = features["avx512_bf16"] or features["amx_bf16"]
    record = run_runtime_benchmark(settings, chosen)
    assert record["preset"] == "custom" and list(record["runtimes"]) == list(chosen)
    assert record["cpu"]["class"] in ("AMX", "AVX512-BF16", "VNNI only", "none")
    assert record["environment"]["openvino"] and record["environment"]["onnxruntime"]
    for runtime, result in record["runtimes"].items():
        if runtime in ("eager-bf16", "openvino-bf16") and not bf16:
            assert "no bf16 instructions" in result["skipped"]
            continue
        assert set(result["models"]) == {"poolformer", "riformer_train", "riformer_deploy"}
        for entry in result["models"].values():
            assert 0 < entry["latency_ms"]["median"] <= entry["latency_ms"]["p90"] and entry["images_per_s"] > 0
        for ratio in (result["deploy_vs_poolformer_latency"], result["deploy_vs_poolformer_throughput"]):
            assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"]
    across = record["across_runtimes"]
    assert set(across) == {r for r, result in record["runtimes"].items() if "models" in result}
    assert across["eager"]["throughput_speedup_vs_eager"]["median"] == 1.0
    for entry in across.values():
        assert 0 < entry["throughput_speedup_vs_eager"]["min"] <= entry["throughput_speedup_vs_eager"]["max"]
    fastest, timed = record["fastest"], {r: v["models"] for r, v in record["runtimes"].items() if "models" in v}
    for name, entry in fastest["models"].items():  # each on the runtime where it ran fastest, timed again together
        assert entry["runtime"] == max(timed, key=lambda r: timed[r][name]["images_per_s"])
        assert entry["share_of_bound"] == pytest.approx(entry["images_per_s"] / record["matmul"]["bound_images_per_s"])
    macs = count_macs(riformer_config("s12", settings), settings.image_size)
    assert record["matmul"]["dtype"] == ("bf16" if bf16 else "fp32") and record["matmul"]["tflops"] > 0
    assert record["matmul"]["bound_images_per_s"] == pytest.approx(record["matmul"]["tflops"] * 1e12 / (2 * macs))
    table = format_runtime_table(record)
    assert table.startswith("CUSTOM, batch 1") and "| ort-int8 | RIFormer, deploy form |" in table
    assert "| openvino-int8 |" in table and "× eager (throughput)" in table
    for part in ("Fastest against fastest", "share of the bound", "RIFormer deploy ÷ PoolFormer: latency"):
        assert part in table

    # bf16 runtimes on a CPU without bf16 instructions: skipped with the reason, not timed.
    monkeypatch.setattr(runtimes_module, "cpu_features", lambda: {**features, "avx512_bf16": False,
                                                                 "amx_bf16": False})
    record = run_runtime_benchmark(settings, ("eager", "eager-bf16"))
    assert "no bf16 instructions" in record["runtimes"]["eager-bf16"]["skipped"] and "across_runtimes" not in record
    assert record["matmul"]["dtype"] == "fp32"
    assert "| eager-bf16 | skipped: this CPU has no bf16 instructions" in format_runtime_table(record)
    with pytest.raises(ValueError, match="Unknown runtime"):
        run_runtime_benchmark(settings, ("tensorrt",))


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match=r"Unknown preset\(s\) \['s99'\]"):
        BenchmarkSettings(presets=("s99",))
    with pytest.raises(ValueError, match="dtype='fp16'; choose one of fp32, bf16"):
        BenchmarkSettings(dtype="fp16")
    with pytest.raises(ValueError, match="image_size ≥ 32"):
        BenchmarkSettings(image_size=16)


def _bias_and_norm_ops(config, image_size=224) -> int:
    """What mmcv's counter adds to ours: one op per output of a biased conv / linear, two per GroupNorm output."""
    with torch.device("meta"):
        model = RIFormerForImageClassification(config).eval()
    total = 0

    def hook(module, args, output):
        nonlocal total
        output = output[0] if isinstance(output, tuple) else output
        if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
            total += output.numel()
        elif isinstance(module, nn.GroupNorm):
            total += 2 * output.numel()

    for module in model.modules():
        module.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.empty(1, 3, image_size, image_size, device="meta"), output_block_states=True)
    return total


def test_mac_count_by_hand_and_against_the_paper():
    config = RIFormerConfig.from_preset("s12", num_labels=1000)
    stages = zip((56, 28, 14, 7), config.depths, config.hidden_sizes, (3, 64, 128, 320), (7, 3, 3, 3))
    by_hand = sum(
        side**2 * width * (cin * k * k + depth * 2 * 4 * width) for side, depth, width, cin, k in stages
    ) + 512 * 1000
    assert count_macs(config, 224) == by_hand == 1_812_267_008
    # Same work in the deploy form (its fused path included) and in the isomorphic PoolFormer (pooling is not a MAC).
    assert count_macs(RIFormerConfig.from_preset("s12", num_labels=1000, reparameterized=True), 224) == by_hand
    assert count_macs(poolformer_config(config), 224) == by_hand
    for name, paper in PAPER_GMACS.items():
        config = RIFormerConfig.from_preset(name, num_labels=1000)
        macs = count_macs(config, 224)
        assert 0.993 * paper * 1e9 < macs < paper * 1e9  # ours counts matrix products only
        assert round((macs + _bias_and_norm_ops(config)) / 1e9, 2) == pytest.approx(paper)  # mmcv's convention


def test_time_interleaved_rotates_the_order():
    calls = []
    workloads = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    seconds = time_interleaved(workloads, warmup=1, repeats=4)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab") + list("abc")
    assert {k: len(v) for k, v in seconds.items()} == {"a": 4, "b": 4, "c": 4}


# ---- the deploy form's fused inference path ----
