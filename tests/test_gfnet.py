import copy
import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run_without_package
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from riformer_hf import GFNET_PRESETS, GFNetConfig, GFNetForImageClassification, GFNetModel
from riformer_hf.convert import convert_gfnet

PAPER_PARAMS_M = {"gfnet-h-ti": 15.09, "gfnet-h-s": 32.16, "gfnet-h-b": 53.74}
TINY = {"depths": (1, 1, 2, 1), "hidden_sizes": (8, 16, 24, 32), "num_classes": 5}


# --- the original GFNet-H, written from raoyongming/GFNet `GFNetPyramid`, on its own state-dict layout -------------


def original_gfnet_state_dict(depths, hidden_sizes, num_classes, image_size=32, mlp_ratio=4, patch_size=4, seed=0):
    """Random weights in GFNetPyramid's key layout; norms, layer scales and filters far from their inits."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.2, offset=0.0):
        return offset + scale * torch.randn(*shape, generator=generator)

    grid = image_size // patch_size
    state = {"pos_embed": rand(1, grid * grid, hidden_sizes[0])}
    for stage, (depth, dim) in enumerate(zip(depths, hidden_sizes)):
        in_dim, kernel = (3, patch_size) if stage == 0 else (hidden_sizes[stage - 1], 2)
        state[f"patch_embed.{stage}.proj.weight"] = rand(dim, in_dim, kernel, kernel)
        state[f"patch_embed.{stage}.proj.bias"] = rand(dim)
        size, hidden = grid >> stage, int(dim * mlp_ratio)
        for block in range(depth):
            p = f"blocks.{stage}.{block}."
            state |= {p + "norm1.weight": rand(dim, scale=0.5, offset=1.0), p + "norm1.bias": rand(dim)}
            state[p + "filter.complex_weight"] = rand(size, size // 2 + 1, dim, 2, scale=0.5)
            state |= {p + "norm2.weight": rand(dim, scale=0.5, offset=1.0), p + "norm2.bias": rand(dim)}
            state |= {p + "mlp.fc1.weight": rand(hidden, dim, scale=0.4), p + "mlp.fc1.bias": rand(hidden)}
            state |= {p + "mlp.fc2.weight": rand(dim, hidden, scale=0.4), p + "mlp.fc2.bias": rand(dim)}
            state[p + "gamma"] = rand(dim, scale=0.5)
    state |= {"norm.weight": rand(hidden_sizes[-1], scale=0.5, offset=1.0), "norm.bias": rand(hidden_sizes[-1])}
    state |= {"head.weight": rand(num_classes, hidden_sizes[-1]), "head.bias": rand(num_classes)}
    return state


def original_gfnet_forward(state, pixels, eps=1e-6):
    """GFNetPyramid.forward on (batch, tokens, channels): stem + pos_embed, [downsample,] blocks per stage, head."""
    num_stages = sum(1 for k in state if k.startswith("patch_embed.") and k.endswith(".proj.weight"))
    x, (batch, channels, height, width) = None, pixels.shape
    for stage in range(num_stages):
        weight, bias = state[f"patch_embed.{stage}.proj.weight"], state[f"patch_embed.{stage}.proj.bias"]
        grid = pixels if stage == 0 else x.transpose(1, 2).reshape(batch, channels, height, width)
        grid = F.conv2d(grid, weight, bias, stride=weight.shape[-1])
        batch, channels, height, width = grid.shape
        x = grid.flatten(2).transpose(1, 2)
        if stage == 0:
            x = x + state["pos_embed"]
        block = 0
        while f"blocks.{stage}.{block}.gamma" in state:
            p = f"blocks.{stage}.{block}."
            y = F.layer_norm(x, (channels,), state[p + "norm1.weight"], state[p + "norm1.bias"], eps)
            y = torch.fft.rfft2(y.reshape(batch, height, width, channels).float(), dim=(1, 2), norm="ortho")
            y = y * torch.view_as_complex(state[p + "filter.complex_weight"])
            y = torch.fft.irfft2(y, s=(height, width), dim=(1, 2), norm="ortho").reshape(batch, -1, channels)
            y = F.layer_norm(y, (channels,), state[p + "norm2.weight"], state[p + "norm2.bias"], eps)
            y = F.linear(F.gelu(F.linear(y, state[p + "mlp.fc1.weight"], state[p + "mlp.fc1.bias"])),
                         state[p + "mlp.fc2.weight"], state[p + "mlp.fc2.bias"])
            x = x + state[p + "gamma"] * y
            block += 1
    x = F.layer_norm(x, (channels,), state["norm.weight"], state["norm.bias"], eps).mean(1)
    return F.linear(x, state["head.weight"], state["head.bias"])


def original_finetune_resize(state, new_grid):
    """GFNet's `main_gfnet.py --finetune` weight surgery for a new (square) input size, applied to a state dict."""
    state = dict(state)
    tokens, dim = state["pos_embed"].shape[1:]
    old_grid = int(tokens**0.5)
    pos = state["pos_embed"].reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    state["pos_embed"] = pos.permute(0, 2, 3, 1).flatten(1, 2)
    for name in [k for k in state if "complex_weight" in k]:
        h, w, c = state[name].shape[:3]
        new_h = h * new_grid // old_grid
        planes = state[name].reshape(1, h, w, c * 2).permute(0, 3, 1, 2)
        planes = F.interpolate(planes, size=(new_h, new_h // 2 + 1), mode="bicubic", align_corners=True)
        state[name] = planes.permute(0, 2, 3, 1).reshape(new_h, new_h // 2 + 1, c, 2)
    return state


@pytest.fixture(scope="module")
def tiny_original():
    return original_gfnet_state_dict(TINY["depths"], TINY["hidden_sizes"], TINY["num_classes"], image_size=32)


@pytest.fixture(scope="module")
def tiny_gfnet(tiny_original):
    return convert_gfnet(tiny_original, None)


# --- tests ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PAPER_PARAMS_M))
def test_parameter_counts_match_the_paper(name):
    config = GFNetConfig.from_preset(name, num_labels=1000)
    with torch.device("meta"):
        model = GFNetForImageClassification(config)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == PAPER_PARAMS_M[name]


def test_presets_and_config_errors():
    b = GFNetConfig.from_preset("GFNet-H-B")
    assert (b.depths, b.hidden_sizes) == ((3, 3, 27, 3), (96, 192, 384, 768))
    assert (b.layer_scale_init_value, b.drop_path_rate, b.mlp_ratio) == (1e-6, 0.4, 4)
    assert GFNetConfig.from_preset("h-s").layer_scale_init_value == 1e-5
    assert GFNetConfig().grid_sizes == [56, 28, 14, 7] and GFNetConfig(image_size=384).grid_sizes == [96, 48, 24, 12]
    assert GFNetConfig().layer_norm_eps == 1e-6
    with pytest.raises(ValueError, match="Unknown GFNet preset 'gfnet-h-xl'.*gfnet-h-ti, gfnet-h-s, gfnet-h-b"):
        GFNetConfig.from_preset("gfnet-h-xl")
    with pytest.raises(ValueError, match="hidden_sizes has 3 entries but depths has 4"):
        GFNetConfig(hidden_sizes=(8, 16, 24))
    with pytest.raises(ValueError, match="image_size=16 leaves no tokens"):
        GFNetConfig(image_size=16)
    assert set(GFNET_PRESETS) == set(PAPER_PARAMS_M)


def test_matches_the_original_forward(tiny_original, tiny_gfnet):
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = tiny_gfnet(pixels).logits
    expected = original_gfnet_forward(tiny_original, pixels)
    assert expected.abs().max() > 1e-2
    assert (ours - expected).abs().max() <= 1e-4


def test_other_resolution_resizes_like_the_original_finetuning(tiny_original, tiny_gfnet):
    pixels = torch.randn(2, 3, 48, 48)  # grid 12 instead of 8
    with torch.no_grad():
        ours = tiny_gfnet(pixels).logits
    expected = original_gfnet_forward(original_finetune_resize(tiny_original, 12), pixels)
    assert (ours - expected).abs().max() <= 1e-4
    # a model built for 48 px from the resized weights agrees, and runs without resizing anything
    built_for_48 = convert_gfnet(original_finetune_resize(tiny_original, 12), None)
    assert built_for_48.config.image_size == 48
    with torch.no_grad():
        assert (built_for_48(pixels).logits - ours).abs().max() <= 1e-4
    # non-square inputs work too; the filters are resized to (H, W // 2 + 1) per stage
    seen = []
    hooks = [b.filter.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[1:3])))
             for s in tiny_gfnet.gfnet.encoder.stages for b in s.blocks]
    out = tiny_gfnet(torch.randn(1, 3, 40, 72), output_hidden_states=True)
    for hook in hooks:
        hook.remove()
    assert seen == [(10, 18), (5, 9), (2, 4), (2, 4), (1, 2)]
    assert torch.isfinite(out.logits).all()
    out.logits.sum().backward()  # the resizing is differentiable
    assert tiny_gfnet.gfnet.encoder.stages[1].blocks[0].filter.complex_weight.grad.abs().sum() > 0
    tiny_gfnet.zero_grad(set_to_none=True)


def test_fft_runs_in_float32_under_bf16_autocast(monkeypatch, tiny_gfnet):
    seen = []
    rfft2 = torch.fft.rfft2

    def recording_rfft2(x, *args, **kwargs):
        seen.append((x.dtype, torch.is_autocast_enabled("cpu")))
        return rfft2(x, *args, **kwargs)

    monkeypatch.setattr(torch.fft, "rfft2", recording_rfft2)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = tiny_gfnet(pixels).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = tiny_gfnet(pixels).logits
    assert len(seen) == 2 * sum(TINY["depths"])
    assert all(dtype == torch.float32 and not autocast for dtype, autocast in seen[len(seen) // 2:])
    assert mixed.dtype == torch.bfloat16 and torch.isfinite(mixed).all()
    assert (mixed.float() - reference).abs().max() <= 0.05 * reference.abs().max()
    # a bf16 model (no autocast) also filters in float32 and returns bf16
    seen.clear()
    bf16_filter = copy.deepcopy(tiny_gfnet.gfnet.encoder.stages[0].blocks[0].filter).to(torch.bfloat16)
    filtered = bf16_filter(torch.randn(1, 8, 8, 8, dtype=torch.bfloat16))
    assert seen == [(torch.float32, False)] and filtered.dtype == torch.bfloat16


def test_outputs_hidden_states_and_loss(tiny_gfnet):
    pixels, labels = torch.randn(2, 3, 64, 32), torch.tensor([1, 4])
    out = tiny_gfnet(pixels, labels=labels, output_hidden_states=True)
    shapes = [tuple(h.shape[1:]) for h in out.hidden_states]
    assert shapes == [(8, 16, 8), (8, 16, 8), (16, 8, 4), (24, 4, 2), (32, 2, 1)]  # strides 4, 4, 8, 16, 32
    base = tiny_gfnet.gfnet(pixels)
    assert torch.equal(base.last_hidden_state, out.hidden_states[-1]) and base.hidden_states is None
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, labels))
    assert isinstance(tiny_gfnet(pixels, return_dict=False), tuple)
    with pytest.raises(ValueError, match="3 input channels.*has 1"):
        tiny_gfnet(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="at least 32×32 pixels"):
        tiny_gfnet(torch.randn(1, 3, 16, 64))


def test_init_weights_sets_every_parameter():
    config = GFNetConfig(depths=(2, 1, 3, 1), hidden_sizes=(32, 48, 64, 96), image_size=128, layer_scale_init_value=0.3)
    model = GFNetForImageClassification(config)
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), name
        if name.endswith("layer_scale"):
            assert torch.equal(param, torch.full_like(param, 0.3)), name
        elif "norm" in name:
            assert torch.equal(param, torch.ones_like(param) if name.endswith("weight") else torch.zeros_like(param))
        elif "patch_embeddings" in name:  # PyTorch's default conv init, as the original leaves convs alone
            bound = 1 / model.get_submodule(name.rsplit(".", 1)[0]).weight[0].numel() ** 0.5
            assert param.abs().max() <= bound and param.std() > bound / 4, name
        elif name.endswith(("complex_weight", "position_embeddings", "weight")):
            assert abs(param.std().item() - 0.02) < 0.004, name
        else:
            assert torch.equal(param, torch.zeros_like(param)), name
    rates = [b.drop_path.drop_prob for s in model.gfnet.encoder.stages for b in s.blocks]
    assert rates == pytest.approx([0.1 * i / 6 for i in range(7)])


def test_save_load_round_trip_and_auto_classes(tmp_path, tiny_gfnet):
    tiny_gfnet.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "gfnet"
    assert saved["auto_map"]["AutoModelForImageClassification"] == "modeling_gfnet.GFNetForImageClassification"
    assert (tmp_path / "modeling_gfnet.py").exists() and (tmp_path / "configuration_gfnet.py").exists()
    reloaded, info = AutoModelForImageClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert type(reloaded) is GFNetForImageClassification
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(tiny_gfnet(pixels).logits, reloaded(pixels).logits)
    assert type(AutoModel.from_pretrained(tmp_path)) is GFNetModel
    assert type(AutoConfig.for_model("gfnet")) is GFNetConfig


def test_converted_folder_carries_deit_style_preprocessing(tmp_path):
    """DeiT evaluates GFNet with Resize(int(256 / 224 * size)) then CenterCrop(size): the converter saves that."""
    from PIL import Image

    convert_gfnet(original_gfnet_state_dict((1, 1, 1, 1), (8, 8, 8, 8), 3, image_size=224), tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert processor.crop_pct == 0.875 and processor.resample == 3  # bicubic
    assert processor.crop_size == {"height": 224, "width": 224} and processor.size == {"shortest_edge": 224}
    assert list(processor.image_mean) == [0.485, 0.456, 0.406] and list(processor.image_std) == [0.229, 0.224, 0.225]
    image = Image.fromarray((torch.rand(300, 400, 3) * 255).byte().numpy())
    pixels = processor(image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224)
    resized = image.resize((341, 256), Image.BICUBIC)  # short side 256 = int(224 / 0.875)
    left, top = (341 - 224) // 2, (256 - 224) // 2
    expected = torch.from_numpy(np.array(resized.crop((left, top, left + 224, top + 224)))).float()
    expected = (expected / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert (pixels[0].permute(1, 2, 0) - expected).abs().max() < 0.02


def test_trust_remote_code_in_clean_process(tmp_path, tiny_gfnet):
    tiny_gfnet.save_pretrained(tmp_path / "model")
    pixels = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.save({"pixels": pixels, "logits": tiny_gfnet(pixels).logits}, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import torch
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True)
        assert type(model).__module__.startswith('transformers_modules'), type(model).__module__
        expected = torch.load({str(tmp_path / 'expected.pt')!r})
        with torch.no_grad():
            assert (model(expected['pixels']).logits - expected['logits']).abs().max() < 1e-5
        print('OK')
    """)
    assert "OK" in run_without_package(script, tmp_path)


def test_hidden_states_are_on_the_autograd_graph(tiny_gfnet):
    """They are the tensors the forward runs through, so attribution methods get their gradients."""
    out = tiny_gfnet(torch.randn(2, 3, 32, 32), output_hidden_states=True)
    assert len(out.hidden_states) == 5
    for state in out.hidden_states:
        state.retain_grad()
    out.logits.square().sum().backward()
    assert all(state.grad is not None and state.grad.abs().sum() > 0 for state in out.hidden_states)
    tiny_gfnet.zero_grad(set_to_none=True)


def test_gradient_checkpointing_gives_the_same_step():
    config = GFNetConfig(depths=(1, 1, 2, 1), hidden_sizes=(8, 16, 24, 32), image_size=32, num_labels=5,
                         drop_path_rate=0.2, layer_scale_init_value=0.5)
    model = GFNetForImageClassification(config).train()
    pixels, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 4, 1])
    recomputed = []
    model.gfnet.encoder.stages[2].blocks[1].filter.register_forward_hook(lambda *args: recomputed.append(1))

    def step():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same drop-path masks in both runs
        out = model(pixels, labels=labels, output_hidden_states=True)
        loss = out.loss + sum(state.square().mean() for state in out.hidden_states)
        loss.backward()
        return loss.detach(), {name: param.grad for name, param in model.named_parameters()}

    loss, grads = step()
    model.activation_checkpointing_enable()
    checkpointed_loss, checkpointed_grads = step()
    assert len(recomputed) == 3  # once without checkpointing; forward and recomputation with it
    torch.testing.assert_close(checkpointed_loss, loss, rtol=1e-6, atol=1e-6)
    for name, grad in grads.items():
        assert grad is not None and grad.abs().max() > 0, name
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-6, atol=1e-6, msg=name)
