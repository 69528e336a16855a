"""The deploy form's fused inference path: same numbers as the plain modules, taken only where it may be."""

import pytest
import torch
from conftest import randomize_, small_preset

import riformer_hf.models.riformer.modeling_riformer as modeling
from riformer_hf import RIFORMER_PRESETS, RIFormerForImageClassification, reparameterize_model


def small_model(name="s12", dtype=torch.float32, **kwargs):
    return randomize_(RIFormerForImageClassification(small_preset(name, **kwargs)).to(dtype).eval())


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
