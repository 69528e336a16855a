"""The benchmark (script, MAC counting, interleaved timing) and the deploy form's fused inference path it measures.

Nothing here asserts anything about speed: the script runs for one tiny configuration and its outputs must be well
formed; the fused path must give the numbers of the plain path.
"""

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import randomize_
from torch import nn

import riformer_hf.modeling_riformer as modeling
from riformer_hf import RIFORMER_PRESETS, RIFormerConfig, RIFormerForImageClassification, reparameterize_model
from riformer_hf.benchmark import PAPER_GMACS, BenchmarkSettings, count_macs, poolformer_config, time_interleaved

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "benchmark.py"
TINY = ["--depths", "1,1,2,1", "--hidden_sizes", "8,16,24,32", "--image_size", "32"]


# ---- the benchmark ----


def test_benchmark_script_end_to_end(tmp_path):
    json_path, png_path = tmp_path / "bench.json", tmp_path / "bench.png"
    command = [
        sys.executable, str(SCRIPT), "--presets", "s12", "m36", *TINY, "--batch_size", "3", "--warmup", "1",
        "--repeats", "3", "--threads", "1", "--matmul_size", "64", "--channels_last",
        "--output_json", str(json_path), "--plot", str(png_path), "--distillation", "--distillation_batch_size", "2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
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
    assert set(distillation["seconds"]) == {"labels_only", "soft_kd", "soft_kd_imitation", "teacher_forward"}
    assert all(s["median"] > 0 for s in distillation["seconds"].values())
    assert set(distillation["overhead"]) == {
        "soft_kd_vs_student_plus_teacher",
        "soft_kd_imitation_vs_student_plus_teacher",
    }

    table = done.stdout
    for preset in ("S12", "M36"):
        for label in ("PoolFormer (transformers)", "RIFormer, training form", "RIFormer, deploy form, plain modules"):
            assert f"| {preset} | {label}" in table
    assert "soft KD + module imitation" in table
    png = png_path.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 400 and height > 300


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


def small_model(name="s12", dtype=torch.float32, **kwargs):
    widths = tuple(w // 8 for w in RIFORMER_PRESETS[name]["hidden_sizes"])
    config = RIFormerConfig.from_preset(name, hidden_sizes=widths, num_labels=5, **kwargs)
    return randomize_(RIFormerForImageClassification(config).to(dtype).eval())


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts the blocks that took the fused path."""
    calls = []
    original = modeling.RIFormerBlock._fused_inference

    def spy(self, hidden_states):
        calls.append(self)
        return original(self, hidden_states)

    monkeypatch.setattr(modeling.RIFormerBlock, "_fused_inference", spy)
    return calls


@pytest.mark.parametrize("name", list(RIFORMER_PRESETS))
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_fused_path_matches_the_training_form(name, dtype, tolerance, fused_calls, monkeypatch):
    model = small_model(name, dtype)
    deploy = reparameterize_model(model)
    pixels = torch.randn(5, 3, 97, 131, dtype=dtype)
    with torch.no_grad():
        reference = model(pixels).logits
        outputs = {"default chunks": deploy(pixels).logits}
        outputs["channels_last input"] = deploy(pixels.contiguous(memory_format=torch.channels_last)).logits
        monkeypatch.setattr(modeling, "_CPU_HIDDEN_BYTES", 4096)  # a few dozen tokens per MLP step
        outputs["MLP steps across samples"] = deploy(pixels).logits
        monkeypatch.setattr(modeling, "_CPU_TOKEN_BYTES", 1)
        outputs["one sample per norm step"] = deploy(pixels).logits
    assert len(fused_calls) == 4 * sum(deploy.config.depths)
    scale = reference.abs().max()
    for what, logits in outputs.items():
        assert (logits - reference).abs().max() / scale <= tolerance, what


def test_fused_path_hidden_states_and_backbone(tiny_config, fused_calls):
    model = reparameterize_model(randomize_(RIFormerForImageClassification(tiny_config).eval()))
    pixels = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        fused = model(pixels, output_hidden_states=True)
        assert fused_calls
        plain = model(pixels, output_hidden_states=True, output_block_states=True)  # block states: plain path
    assert len(fused_calls) == sum(tiny_config.depths)
    for a, b in zip(fused.hidden_states, plain.hidden_states):
        assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_fused_path_sees_weight_changes(tiny_config, fused_calls):
    """Nothing folded is cached: in-place edits, `.data` edits and `load_state_dict` all show in the next call."""
    train = randomize_(RIFormerForImageClassification(tiny_config).eval())
    deploy = reparameterize_model(train)
    pixels = torch.randn(2, 3, 32, 32)
    block = deploy.riformer.encoder.stages[1].blocks[0]
    with torch.no_grad():
        before = deploy(pixels).logits
        edits = (
            lambda: block.layer_scale_1.mul_(3.0),
            lambda: block.layer_scale_2.data.add_(0.5),
            lambda: block.mlp.fc1.weight.data.mul_(-1.0),
            lambda: block.norm_reparam.bias.add_(1.0),
            lambda: deploy.load_state_dict(reparameterize_model(randomize_(train, seed=1)).state_dict()),
        )
        for edit in edits:
            edit()
            fused = deploy(pixels).logits
            plain = deploy(pixels, output_block_states=True).logits
            assert (fused - plain).abs().max() <= 1e-5 * plain.abs().max()
            assert not torch.allclose(fused, before)
            before = fused
    assert fused_calls


def test_gradients_take_the_plain_path(tiny_config, fused_calls):
    """With autograd on, the deploy form runs the plain modules: same outputs and parameter gradients as before."""
    deploy = reparameterize_model(randomize_(RIFormerForImageClassification(tiny_config).eval()))
    pixels = torch.randn(2, 3, 32, 32)
    loss = deploy(pixels).logits.square().sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in deploy.named_parameters()}
    deploy.zero_grad()
    deploy(pixels, output_block_states=True).logits.square().sum().backward()
    assert not fused_calls
    for name, param in deploy.named_parameters():
        assert torch.equal(param.grad, grads[name]), name
    # Input gradients on frozen weights also need the plain path.
    deploy.requires_grad_(False)
    pixels.requires_grad_(True)
    deploy(pixels).logits.sum().backward()
    assert pixels.grad is not None and not fused_calls
    # Training mode (drop path) and the training form never fuse.
    train = randomize_(RIFormerForImageClassification(tiny_config))
    with torch.no_grad():
        deploy.train()(pixels)
        train.eval()(pixels)
    assert not fused_calls


def test_fused_path_compiles_as_one_graph(tiny_config):
    deploy = reparameterize_model(randomize_(RIFormerForImageClassification(tiny_config).eval()))
    compiled = torch.compile(deploy, backend="aot_eager", fullgraph=True)
    pixels = torch.randn(3, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = deploy(pixels).logits
        assert torch.allclose(compiled(pixel_values=pixels).logits, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")
def test_tracing_takes_the_plain_path(tiny_config, fused_calls, monkeypatch):
    """A traced graph must not freeze the fused path's batch chunking: traced at batch 4, run at batch 3."""
    monkeypatch.setattr(modeling, "_CPU_TOKEN_BYTES", 1)
    deploy = reparameterize_model(randomize_(RIFormerForImageClassification(tiny_config).eval()))
    deploy.config.return_dict = False
    with torch.no_grad():
        traced = torch.jit.trace(deploy, torch.randn(4, 3, 32, 32), check_trace=False)
        pixels = torch.randn(3, 3, 32, 32)
        assert torch.allclose(traced(pixels)[0], deploy(pixels)[0], rtol=1e-5, atol=1e-6)
    assert len(fused_calls) == sum(tiny_config.depths)  # the eager call only


def test_cpu_chunks_fit_the_cache_budgets():
    """S12's first stage at batch 16: norms over 4 samples (3.2 MiB), MLP steps of 3136 tokens (3.2 MiB hidden)."""
    tokens = torch.empty(16, 56 * 56, 64)
    assert modeling._cpu_chunks(tokens, 256) == (4, 3136)
    assert modeling._cpu_chunks(tokens.to("meta"), 256) == (16, 16 * 56 * 56)  # off CPU: one step
    assert modeling._cpu_chunks(torch.empty(3, 7, 4096), 2**21) == (3, 1)  # budgets below one row still progress
