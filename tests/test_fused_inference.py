"""The deploy form's fused inference path: same numbers as the plain modules, taken only where it may be."""

import copy

import pytest
import torch
from conftest import randomize_, small_preset
from torch import nn

import riformer_hf.models.riformer.fused_riformer as fused
import riformer_hf.models.riformer.modeling_riformer as modeling
from riformer_hf import (
    RIFORMER_PRESETS,
    RIFormerBackbone,
    RIFormerConfig,
    RIFormerForImageClassification,
    reparameterize_model,
)


def small_model(name="s12", dtype=torch.float32, **kwargs):
    return randomize_(RIFormerForImageClassification(small_preset(name, **kwargs)).to(dtype).eval())


@pytest.fixture
def fused_calls(monkeypatch):
    """Counts the blocks that took the fused path."""
    calls = []
    original = fused.fused_forward

    def spy(block, hidden_states):
        calls.append(block)
        return original(block, hidden_states)

    monkeypatch.setattr(modeling, "fused_forward", spy)
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
        monkeypatch.setattr(fused, "CPU_HIDDEN_BYTES", 4096)  # a few dozen tokens per MLP step
        outputs["MLP steps across samples"] = deploy(pixels).logits
        monkeypatch.setattr(fused, "CPU_TOKEN_BYTES", 1)
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
    monkeypatch.setattr(fused, "CPU_TOKEN_BYTES", 1)
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
    assert fused.cpu_chunks(tokens, 256) == (4, 3136)
    assert fused.cpu_chunks(tokens.to("meta"), 256) == (16, 16 * 56 * 56)  # off CPU: one step
    assert fused.cpu_chunks(torch.empty(3, 7, 4096), 2**21) == (3, 1)  # budgets below one row still progress


def tiny_deploy(tiny_config, **overrides):
    config = copy.deepcopy(tiny_config)
    for name, value in overrides.items():
        setattr(config, name, value)
    return reparameterize_model(randomize_(RIFormerForImageClassification(config).eval()))


@pytest.mark.parametrize("kind", ["forward", "forward_pre", "global_forward", "global_forward_pre"])
def test_hooks_on_every_module_fire_in_eval(tiny_config, fused_calls, kind):
    """Probes on any module see their call: the blocks run their plain modules, with the same output."""
    deploy = tiny_deploy(tiny_config)
    pixels = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = deploy(pixels).logits
    assert len(fused_calls) == sum(tiny_config.depths)
    fused_calls.clear()
    containers = (nn.ModuleList, nn.ModuleDict)  # never called themselves
    modules = {name: module for name, module in deploy.named_modules() if not isinstance(module, containers)}
    seen = set()
    names = {module: name for name, module in modules.items()}

    def record(module, *args):
        seen.add(names[module])

    if kind == "forward":
        handles = [module.register_forward_hook(record) for module in modules.values()]
    elif kind == "forward_pre":
        handles = [module.register_forward_pre_hook(record) for module in modules.values()]
    elif kind == "global_forward":
        handles = [nn.modules.module.register_module_forward_hook(record)]
    else:
        handles = [nn.modules.module.register_module_forward_pre_hook(record)]
    try:
        with torch.no_grad():
            hooked = deploy(pixels).logits
    finally:
        for handle in handles:
            handle.remove()
    assert seen == set(modules), set(modules) - seen
    assert not fused_calls
    assert (hooked - expected).abs().max() <= 1e-5 * expected.abs().max()
    with torch.no_grad():  # hooks removed: fused again
        deploy(pixels)
    assert len(fused_calls) == sum(tiny_config.depths)


def test_one_hooked_submodule_turns_only_its_block_plain(tiny_config, fused_calls):
    deploy = tiny_deploy(tiny_config)
    hooked_block = deploy.riformer.encoder.stages[2].blocks[1]
    calls = []
    hooked_block.mlp.fc2.register_forward_hook(lambda module, args, output: calls.append(output.shape))
    with torch.no_grad():
        deploy(torch.randn(3, 3, 32, 32))
    assert calls == [(3, 24, 2, 2)]
    assert hooked_block not in fused_calls and len(fused_calls) == sum(tiny_config.depths) - 1


@pytest.mark.parametrize(
    "trainable", ["norm_reparam", "norm2", "layer_scale_1", "layer_scale_2", "mlp.fc1.bias", "mlp.fc2"]
)
def test_eval_backward_with_only_some_block_parameters_trainable(tiny_config, fused_calls, trainable):
    """Eval mode, autograd on, frozen model except some block parameters: the plain path, and the gradients of a
    training-mode step (no drop path, and the model has no train/eval difference otherwise)."""
    deploy = tiny_deploy(tiny_config, drop_path_rate=0.0)
    deploy.requires_grad_(False)
    for name, param in deploy.named_parameters():
        if f".{trainable}" in name:
            param.requires_grad_(True)
    trainable_params = {n: p for n, p in deploy.named_parameters() if p.requires_grad}
    assert trainable_params
    pixels = torch.randn(4, 3, 32, 32)
    deploy(pixels).logits.square().sum().backward()
    assert not fused_calls
    grads = {n: p.grad.clone() for n, p in trainable_params.items()}
    deploy.zero_grad()
    deploy.train()(pixels).logits.square().sum().backward()
    for name, param in trainable_params.items():
        assert grads[name].abs().max() > 0, name
        torch.testing.assert_close(grads[name], param.grad, rtol=1e-6, atol=1e-9)


def test_batch_below_the_threshold_takes_the_plain_path(tiny_config, fused_calls):
    deploy = tiny_deploy(tiny_config)
    pixels = torch.randn(fused.CPU_MIN_FUSED_BATCH, 3, 32, 32)
    with torch.no_grad():
        batched = deploy(pixels).logits
        assert len(fused_calls) == sum(tiny_config.depths)
        fused_calls.clear()
        single = torch.cat([deploy(sample[None]).logits for sample in pixels])
    assert not fused_calls
    assert fused.CPU_MIN_FUSED_BATCH == 2  # see the measurement beside it
    assert (single - batched).abs().max() <= 1e-5 * batched.abs().max()


@pytest.mark.parametrize("name", list(RIFORMER_PRESETS))
@pytest.mark.parametrize("batch", [1, 5])
def test_bf16_fused_path_matches_bf16_plain_modules(name, batch, fused_calls, monkeypatch):
    """Both bf16 paths against a float64 reference: the fused path's error is of the size of bf16's own (the plain
    modules': 0.4–1.3 % of the largest logit), and the two differ by no more than bf16 rounding allows. Also with
    cache chunks that split samples and token groups."""
    model = small_model(name, torch.float64)
    deploy = reparameterize_model(model).to(torch.bfloat16)
    pixels = torch.randn(batch, 3, 97, 131, dtype=torch.float64)
    with torch.no_grad():
        reference = model(pixels).logits
        plain = deploy(pixels.bfloat16(), output_block_states=True).logits.double()
        assert not fused_calls
        outputs = {"default chunks": deploy(pixels.bfloat16()).logits.double()}
        monkeypatch.setattr(fused, "CPU_HIDDEN_BYTES", 2048)
        monkeypatch.setattr(fused, "CPU_TOKEN_BYTES", 1)
        outputs["small chunks"] = deploy(pixels.bfloat16()).logits.double()
    assert len(fused_calls) == 2 * sum(deploy.config.depths)  # batch 1 included: bf16 fuses from one sample on
    scale = reference.abs().max()
    plain_error = (plain - reference).abs().max() / scale
    assert plain_error < 3e-2  # 8 bits of mantissa through a dozen blocks
    for what, logits in outputs.items():
        assert (logits - reference).abs().max() / scale <= 2 * plain_error + 2e-3, what
        assert (logits - plain).abs().max() / scale <= 3e-2, what


def test_batch_threshold_is_per_dtype(tiny_config, fused_calls):
    """bf16 fuses from batch 1 (faster than the plain modules at every batch measured), fp32 from batch 2."""
    deploy = tiny_deploy(tiny_config)
    assert fused.cpu_min_fused_batch(torch.float32) == fused.CPU_MIN_FUSED_BATCH == 2
    assert fused.cpu_min_fused_batch(torch.bfloat16) == fused.CPU_MIN_FUSED_BATCH_BF16 == 1
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        deploy(pixels)
        assert not fused_calls
        copy.deepcopy(deploy).to(torch.bfloat16)(pixels.bfloat16())
    assert len(fused_calls) == sum(tiny_config.depths)


def test_replaced_submodule_runs_its_own_forward(tiny_config, fused_calls):
    """A wrapped or replaced module (LoRA, quantisation, parametrisation) is not bypassed by the fused path."""

    class DoubledConv(nn.Conv2d):
        def forward(self, hidden_states):
            return 2 * super().forward(hidden_states)

    deploy = tiny_deploy(tiny_config)
    block = deploy.riformer.encoder.stages[0].blocks[0]
    doubled = DoubledConv(block.mlp.fc2.in_channels, block.mlp.fc2.out_channels, kernel_size=1)
    doubled.load_state_dict(block.mlp.fc2.state_dict())
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = deploy(pixels).logits
        block.mlp.fc2 = doubled
        after = deploy(pixels).logits
        fused_calls.clear()
        expected = deploy(pixels, output_block_states=True).logits
    assert not torch.allclose(before, after)
    assert (after - expected).abs().max() <= 1e-5 * expected.abs().max()


def test_recording_outputs_leaves_the_fused_path_for_later_calls(tiny_config, fused_calls):
    """Output capturing installs its hooks once; they do not keep the model off the fused path afterwards."""
    deploy = tiny_deploy(tiny_config)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        states = deploy(pixels, output_block_states=True, output_hidden_states=True)
        assert not fused_calls and len(states.mixer_states) == sum(tiny_config.depths)
        fused = deploy(pixels, output_hidden_states=True)
    assert len(fused_calls) == sum(tiny_config.depths)
    for a, b in zip(fused.hidden_states, states.hidden_states):
        assert (a - b).abs().max() <= 1e-5 * b.abs().max()


def test_outputs_have_one_memory_format_in_eval_and_training(tiny_config, fused_calls):
    """Hidden states, last hidden state and backbone maps: contiguous NCHW from the fused path as from training."""
    deploy = tiny_deploy(tiny_config, drop_path_rate=0.0)
    config = deploy.config
    backbone = RIFormerBackbone(
        RIFormerConfig(
            depths=config.depths, hidden_sizes=config.hidden_sizes, drop_path_rate=0.0, reparameterized=True,
            out_features=["stem", "stage4"],
        )
    )
    backbone.encoder.load_state_dict(deploy.riformer.encoder.state_dict())
    pixels = torch.randn(2, 3, 32, 32)
    outputs = {}
    for mode in ("eval", "train"):
        deploy.train(mode == "train")
        backbone.train(mode == "train")
        with torch.no_grad():
            base = deploy.riformer(pixels, output_hidden_states=True)
            outputs[mode] = [base.last_hidden_state, *base.hidden_states, *backbone(pixels).feature_maps]
    assert len(fused_calls) == 2 * sum(tiny_config.depths)  # the eval calls
    for fast, plain in zip(outputs["eval"], outputs["train"]):
        assert fast.is_contiguous() and plain.is_contiguous()
        assert (fast - plain).abs().max() <= 1e-5 * plain.abs().max()


def test_private_probes_still_see_hooks(tiny_config):
    """`fused_riformer.observed` reads torch's and transformers' private hook registries; this fails loudly (and names
    what moved) when either library changes them, instead of letting the fused path skip a hook silently."""
    from transformers.utils import output_capturing

    for owner, name in ((nn.modules.module, "_global_forward_hooks"), (nn.modules.module, "_global_forward_pre_hooks"),
                        (nn.Module(), "_forward_hooks"), (nn.Module(), "_forward_pre_hooks"),
                        (output_capturing, "_active_collector")):
        assert hasattr(owner, name), f"{getattr(owner, '__name__', type(owner).__name__)}.{name} is gone"
    deploy = reparameterize_model(RIFormerForImageClassification(tiny_config)).eval()
    block = deploy.riformer.encoder.stages[0].blocks[0]
    with torch.no_grad():
        deploy(torch.randn(2, 3, 32, 32), output_hidden_states=True)  # installs transformers' capturing hooks
    assert not fused.observed(block)  # its capturing hooks record only what a forward asks for
    registrations = (
        lambda: nn.modules.module.register_module_forward_hook(lambda *a: None),
        lambda: nn.modules.module.register_module_forward_pre_hook(lambda *a: None),
        lambda: block.mlp.fc2.register_forward_hook(lambda *a: None),
        lambda: block.norm2.register_forward_pre_hook(lambda *a: None),
    )
    for register in registrations:
        handle = register()
        try:
            assert fused.observed(block)
        finally:
            handle.remove()
        assert not fused.observed(block)
    seen = []
    spy = block.register_forward_hook(lambda *a: seen.append(fused.observed(block.mlp)))
    try:
        with torch.no_grad():
            deploy(torch.randn(2, 3, 32, 32), output_block_states=True)
            deploy(torch.randn(2, 3, 32, 32))
    finally:
        spy.remove()
    assert seen == [True, False]  # recording mixer_states is seen through transformers' collector
