import argparse
import datetime
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from test_gfnet import PAPER_PARAMS_M, original_gfnet_forward, original_gfnet_state_dict
from transformers import AutoImageProcessor, AutoModelForImageClassification

from riformer_hf import (
    GFNET_PRESETS,
    RIFORMER_PRESETS,
    GFNetForImageClassification,
    RIFormerForImageClassification,
    cli,
)
from riformer_hf.convert import (
    convert_gfnet,
    convert_mmpretrain_riformer,
    gfnet_key_table,
    infer_gfnet_config,
    infer_riformer_config,
    load_checkpoint,
    mmpretrain_riformer_key_table,
)

REPO = Path(__file__).resolve().parents[1]
PAPER_RIFORMER_PARAMS = {"s12": 11_915_176, "s24": 21_388_968, "s36": 30_862_760, "m36": 56_172_520, "m48": 73_473_448}
TINY = {"depths": (1, 2, 1, 1), "hidden_sizes": (8, 12, 16, 24), "num_classes": 7}


# --- mmpretrain's RIFormer ImageClassifier, written from mmpretrain, on its own state-dict layout -------------------


def mmpretrain_state_dict(depths, hidden_sizes, num_classes, mlp_ratio=4, deploy=False, seed=0):
    """Random weights in mmpretrain's key layout; norms, affine scales and layer scales far from their inits."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.2, offset=0.0):
        return offset + scale * torch.randn(*shape, generator=generator)

    state = {"backbone.patch_embed.proj.weight": rand(hidden_sizes[0], 3, 7, 7, scale=0.1),
             "backbone.patch_embed.proj.bias": rand(hidden_sizes[0])}
    for stage, (depth, dim) in enumerate(zip(depths, hidden_sizes)):
        if stage > 0:
            state[f"backbone.network.{2 * stage - 1}.proj.weight"] = rand(dim, hidden_sizes[stage - 1], 3, 3, scale=0.1)
            state[f"backbone.network.{2 * stage - 1}.proj.bias"] = rand(dim)
        hidden = int(dim * mlp_ratio)
        for block in range(depth):
            p = f"backbone.network.{2 * stage}.{block}."
            if deploy:
                state |= {p + "norm_reparam.weight": rand(dim, scale=0.5), p + "norm_reparam.bias": rand(dim)}
            else:
                state |= {p + "norm1.weight": rand(dim, scale=0.5, offset=1.0), p + "norm1.bias": rand(dim)}
                state[p + "token_mixer.affine.weight"] = rand(dim, 1, 1, 1, scale=0.5, offset=1.5)
                state[p + "token_mixer.affine.bias"] = rand(dim)
            state |= {p + "norm2.weight": rand(dim, scale=0.5, offset=1.0), p + "norm2.bias": rand(dim)}
            state |= {p + "mlp.fc1.weight": rand(hidden, dim, 1, 1, scale=0.4), p + "mlp.fc1.bias": rand(hidden)}
            state |= {p + "mlp.fc2.weight": rand(dim, hidden, 1, 1, scale=0.4), p + "mlp.fc2.bias": rand(dim)}
            state |= {p + "layer_scale_1": rand(dim, scale=0.5), p + "layer_scale_2": rand(dim, scale=0.5)}
    last = 2 * (len(depths) - 1)
    state |= {f"backbone.norm{last}.weight": rand(hidden_sizes[-1], scale=0.5, offset=1.0),
              f"backbone.norm{last}.bias": rand(hidden_sizes[-1])}
    state |= {"head.fc.weight": rand(num_classes, hidden_sizes[-1]), "head.fc.bias": rand(num_classes)}
    return state


def mmpretrain_switch_to_deploy(state):
    """mmpretrain's `switch_to_deploy` on a state dict: norm_reparam = (γ (a − 1), β (a − 1) + b), a/b the affine."""
    deploy = {}
    for key, value in state.items():
        if key.endswith("token_mixer.affine.weight"):
            p = key.removesuffix("token_mixer.affine.weight")
            a = value.double().reshape(-1) - 1
            deploy[p + "norm_reparam.weight"] = (state[p + "norm1.weight"].double() * a).float()
            shift = state[p + "token_mixer.affine.bias"].double()
            deploy[p + "norm_reparam.bias"] = (state[p + "norm1.bias"].double() * a + shift).float()
        elif ".norm1." not in key and ".token_mixer." not in key:
            deploy[key] = value
    return deploy


def mmpretrain_forward(state, pixels):
    """ImageClassifier.forward: RIFormer backbone (out_indices=-1 → norm6), global average pooling, head.fc."""
    x = F.conv2d(pixels, state["backbone.patch_embed.proj.weight"], state["backbone.patch_embed.proj.bias"], 4, 2)
    index = 0
    while any(k.startswith(f"backbone.network.{index}.") for k in state):
        p = f"backbone.network.{index}."
        if p + "proj.weight" in state:
            x = F.conv2d(x, state[p + "proj.weight"], state[p + "proj.bias"], stride=2, padding=1)
        block = 0
        while f"{p}{block}.norm2.weight" in state:
            b = f"{p}{block}."
            if b + "norm_reparam.weight" in state:
                mixed = F.group_norm(x, 1, state[b + "norm_reparam.weight"], state[b + "norm_reparam.bias"], 1e-5)
            else:
                normed = F.group_norm(x, 1, state[b + "norm1.weight"], state[b + "norm1.bias"], 1e-5)
                affine = F.conv2d(normed, state[b + "token_mixer.affine.weight"], state[b + "token_mixer.affine.bias"],
                                  groups=normed.shape[1])
                mixed = affine - normed
            x = x + state[b + "layer_scale_1"][:, None, None] * mixed
            y = F.group_norm(x, 1, state[b + "norm2.weight"], state[b + "norm2.bias"], 1e-5)
            y = F.conv2d(F.gelu(F.conv2d(y, state[b + "mlp.fc1.weight"], state[b + "mlp.fc1.bias"])),
                         state[b + "mlp.fc2.weight"], state[b + "mlp.fc2.bias"])
            x = x + state[b + "layer_scale_2"][:, None, None] * y
            block += 1
        index += 1
    norm = f"backbone.norm{index - 1}."
    x = F.group_norm(x, 1, state[norm + "weight"], state[norm + "bias"], 1e-5).mean(dim=(2, 3))
    return F.linear(x, state["head.fc.weight"], state["head.fc.bias"])


def write(state, path: Path, wrapper: str | None):
    if path.suffix == ".safetensors":
        save_file(state, path)
    elif wrapper == "mmengine":
        classes = tuple(f"class {i}" for i in range(len(state["head.fc.bias"])))
        torch.save({"meta": {"epoch": 600, "dataset_meta": {"classes": classes}}, "state_dict": state}, path)
    elif wrapper == "deit":
        torch.save({"model": state, "epoch": 299, "args": argparse.Namespace(lr=1e-3)}, path)
    elif wrapper == "module":
        torch.save({"module": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        torch.save(state, path)
    return path


def assert_clean_folder(folder, model_class):
    reloaded, info = AutoModelForImageClassification.from_pretrained(folder, output_loading_info=True)
    assert type(reloaded) is model_class
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in Path(folder).iterdir()}
    assert "auto_map" in json.loads((Path(folder) / "config.json").read_text())
    return reloaded


def close(a, b, tol=1e-4):
    return a.abs().max() > 1e-2 and (a - b).abs().max() <= tol


@pytest.fixture(scope="module")
def tiny_state():
    return mmpretrain_state_dict(**TINY)


# --- mmpretrain RIFormer ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,wrapper", [("w.pth", "mmengine"), ("w.pth", None), ("w.pth", "module"), ("w.safetensors", None)]
)
def test_riformer_training_checkpoint_matches_mmpretrain(tmp_path, tiny_state, name, wrapper):
    model = convert_mmpretrain_riformer(write(tiny_state, tmp_path / name, wrapper), tmp_path / "out")
    config = model.config
    assert not config.reparameterized
    assert (config.depths, config.hidden_sizes, config.num_labels) == ((1, 2, 1, 1), (8, 12, 16, 24), 7)
    reloaded = assert_clean_folder(tmp_path / "out", RIFormerForImageClassification)
    pixels = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        assert close(mmpretrain_forward(tiny_state, pixels), reloaded(pixels).logits)
    assert reloaded.config.id2label[6] == ("class 6" if wrapper == "mmengine" else "LABEL_6")
    scale = load_file(tmp_path / "out" / "model.safetensors")["riformer.encoder.stages.1.blocks.1.token_mixer.scale"]
    assert torch.equal(scale, tiny_state["backbone.network.2.1.token_mixer.affine.weight"].reshape(-1))


def test_riformer_deploy_checkpoint_and_reparameterize_flag(tmp_path, tiny_state):
    deploy_state = mmpretrain_switch_to_deploy(tiny_state)
    pixels = torch.randn(2, 3, 56, 56)
    reference = mmpretrain_forward(tiny_state, pixels)
    assert close(reference, mmpretrain_forward(deploy_state, pixels))  # the test's own fusion is right

    model = convert_mmpretrain_riformer(write(deploy_state, tmp_path / "deploy.pth", "mmengine"), tmp_path / "deploy")
    assert model.config.reparameterized
    reloaded = assert_clean_folder(tmp_path / "deploy", RIFormerForImageClassification)
    assert not any("token_mixer" in k or ".norm1." in k for k in load_file(tmp_path / "deploy" / "model.safetensors"))
    with torch.no_grad():
        assert close(reference, reloaded(pixels).logits)

    fused = convert_mmpretrain_riformer(tiny_state, tmp_path / "fused", reparameterize=True)
    assert fused.config.reparameterized
    assert json.loads((tmp_path / "fused" / "config.json").read_text())["reparameterized"]
    reloaded = assert_clean_folder(tmp_path / "fused", RIFormerForImageClassification)
    with torch.no_grad():
        assert close(reference, reloaded(pixels).logits)
    fused_bias = fused.state_dict()["riformer.encoder.stages.0.blocks.0.norm_reparam.bias"]
    assert torch.allclose(fused_bias, deploy_state["backbone.network.0.0.norm_reparam.bias"], atol=1e-6)


def test_riformer_non_standard_sizes_and_image_size(tmp_path):
    state = mmpretrain_state_dict(depths=(2, 1, 3), hidden_sizes=(12, 20, 28), num_classes=3, mlp_ratio=3, seed=1)
    config = convert_mmpretrain_riformer(state, tmp_path, image_size=96).config
    assert (config.depths, config.hidden_sizes, config.mlp_ratio, config.num_labels) == ((2, 1, 3), (12, 20, 28), 3, 3)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert processor.crop_size == {"height": 96, "width": 96} and processor.crop_pct == 0.9
    pixels, reloaded = torch.randn(1, 3, 96, 96), AutoModelForImageClassification.from_pretrained(tmp_path)
    with torch.no_grad():
        assert close(mmpretrain_forward(state, pixels), reloaded(pixels).logits)


@pytest.mark.parametrize("name", list(RIFORMER_PRESETS))
@pytest.mark.parametrize("deploy", [False, True])
def test_riformer_published_layouts_map_completely(name, deploy):
    """Full-size checkpoints on the meta device: the table covers every key, the config is the paper's."""
    preset = RIFORMER_PRESETS[name]
    with torch.device("meta"):
        state = mmpretrain_state_dict(preset["depths"], preset["hidden_sizes"], 1000, deploy=deploy)
    config = infer_riformer_config(state)
    expected = {**preset, "num_labels": 1000, "reparameterized": deploy}
    assert {k: getattr(config, k) for k in expected} == expected
    assert {source for source, _, _ in mmpretrain_riformer_key_table(config)} == set(state)
    model = convert_mmpretrain_riformer(state, None)  # runs every key and shape check, on meta
    extra = 0 if deploy else 2 * sum(d * c for d, c in zip(preset["depths"], preset["hidden_sizes"]))
    assert sum(p.numel() for p in model.parameters()) == PAPER_RIFORMER_PARAMS[name] + extra


def test_riformer_errors_name_the_keys_and_shapes(tiny_state):
    leftover = {**tiny_state, "backbone.norm4.weight": torch.ones(16), "data_preprocessor.mean": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"2 key\(s\) with no counterpart.*\[backbone\.norm4\.weight, data_prepro"):
        convert_mmpretrain_riformer(leftover, None)
    missing = {k: v for k, v in tiny_state.items() if k != "backbone.network.2.1.layer_scale_2"}
    with pytest.raises(ValueError, match=r"lacks: \[backbone\.network\.2\.1\.layer_scale_2\]"):
        convert_mmpretrain_riformer(missing, None)
    wrong = {**tiny_state, "backbone.network.4.0.token_mixer.affine.weight": torch.ones(16, 1, 3, 3)}
    message = r"affine\.weight \(→ riformer\.encoder\.stages\.2\.blocks\.0\.token_mixer\.scale\): "
    with pytest.raises(ValueError, match=message + r"checkpoint \(16, 1, 3, 3\), expected \(16, 1, 1, 1\)"):
        convert_mmpretrain_riformer(wrong, None)
    wrong = {**tiny_state, "backbone.patch_embed.proj.weight": torch.ones(8, 3, 5, 5)}
    with pytest.raises(ValueError, match=r"patch_embed\.proj\.weight .*checkpoint \(8, 3, 5, 5\), expected \(8, 3, 7"):
        convert_mmpretrain_riformer(wrong, None)
    mixed = {**tiny_state, **mmpretrain_switch_to_deploy({k: v for k, v in tiny_state.items() if ".network.6." in k})}
    with pytest.raises(ValueError, match="mixes training-form blocks .* deploy-form blocks"):
        convert_mmpretrain_riformer(mixed, None)
    with pytest.raises(ValueError, match="not an mmpretrain RIFormer classifier checkpoint: it has no 'head.fc.weigh"):
        convert_mmpretrain_riformer({k: v for k, v in tiny_state.items() if not k.startswith("head.")}, None)


def test_checkpoint_reading_errors(tmp_path, tiny_state):
    torch.save({"meta": {}, "optimizer": {"lr": torch.tensor(1.0)}, "epoch": 3}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=r"no state dict .*\['state_dict', 'model', 'module'\].*\[epoch, meta, optim"):
        load_checkpoint(tmp_path / "odd.pth")
    torch.save({"state_dict": tiny_state, "meta": {"time": datetime.date(2023, 4, 6)}}, tmp_path / "unsafe.pth")
    with pytest.raises(ValueError, match=r"datetime\.date.*weights_only=True.*If you trust the file"):
        load_checkpoint(tmp_path / "unsafe.pth")
    with pytest.raises(FileNotFoundError, match="No checkpoint file"):
        load_checkpoint(tmp_path / "absent.pth")


# --- GFNet-H ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,wrapper", [("g.pth", "deit"), ("g.safetensors", None)])
def test_gfnet_checkpoint_matches_the_original(tmp_path, name, wrapper):
    state = original_gfnet_state_dict((1, 2, 1, 1), (8, 12, 20, 24), 6, image_size=64, mlp_ratio=3, seed=2)
    config = convert_gfnet(write(state, tmp_path / name, wrapper), tmp_path / "out").config
    inferred = (config.image_size, config.depths, config.hidden_sizes, config.mlp_ratio, config.num_labels)
    assert inferred == (64, (1, 2, 1, 1), (8, 12, 20, 24), 3, 6)
    reloaded = assert_clean_folder(tmp_path / "out", GFNetForImageClassification)
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert close(original_gfnet_forward(state, pixels), reloaded(pixels).logits)
    assert AutoImageProcessor.from_pretrained(tmp_path / "out").crop_size == {"height": 64, "width": 64}


@pytest.mark.parametrize("name", list(GFNET_PRESETS))
def test_gfnet_published_layouts_map_completely(name):
    preset = GFNET_PRESETS[name]
    with torch.device("meta"):
        state = original_gfnet_state_dict(preset["depths"], preset["hidden_sizes"], 1000, image_size=224)
    config = infer_gfnet_config(state)
    assert {k: getattr(config, k) for k in preset} == preset
    assert (config.image_size, config.num_labels, config.mlp_ratio) == (224, 1000, 4.0)
    assert {source for source, _, _ in gfnet_key_table(config)} == set(state)
    model = convert_gfnet(state, None)  # runs every key and shape check, on meta
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == PAPER_PARAMS_M[name]


def test_gfnet_errors_name_the_keys_and_shapes():
    state = original_gfnet_state_dict((1, 1, 1, 1), (8, 8, 16, 16), 3, image_size=32)
    with pytest.raises(ValueError, match=r"no counterpart in GFNetForImageClassification: \[blocks\.1\.0\.attn\.qkv"):
        convert_gfnet({"model": {**state, "blocks.1.0.attn.qkv.weight": torch.ones(3)}}, None)
    wrong = {**state, "blocks.2.0.filter.complex_weight": torch.ones(4, 3, 16, 2)}
    message = r"blocks\.2\.0\.filter\.complex_weight .*checkpoint \(4, 3, 16, 2\), expected \(2, 2, 16, 2\)"
    with pytest.raises(ValueError, match=message):
        convert_gfnet(wrong, None)
    with pytest.raises(ValueError, match=r"lacks: \[blocks\.0\.0\.gamma\]"):  # GFNet's block without layer scale
        convert_gfnet({k: v for k, v in state.items() if k != "blocks.0.0.gamma"}, None)
    with pytest.raises(ValueError, match=r"pos_embed has shape \(1, 60, 8\)"):
        convert_gfnet({**state, "pos_embed": torch.ones(1, 60, 8)}, None)


def test_convert_command(tmp_path, tiny_state, capsys):
    """`riformer-convert mmpretrain|gfnet`: folders the Auto classes load; bad input is one `error:` line, exit 2."""
    write(tiny_state, tmp_path / "riformer.pth", "mmengine")
    arguments = ["mmpretrain", "--checkpoint", tmp_path / "riformer.pth", "--output_dir", tmp_path / "riformer",
                 "--reparameterize", "--image_size", "384"]
    assert cli.convert(list(map(str, arguments))) == 0
    config = json.loads((tmp_path / "riformer" / "config.json").read_text())
    processor = json.loads((tmp_path / "riformer" / "preprocessor_config.json").read_text())
    assert config["reparameterized"] and config["depths"] == [1, 2, 1, 1]
    assert processor["crop_size"] == {"height": 384, "width": 384}
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        riformer = AutoModelForImageClassification.from_pretrained(tmp_path / "riformer")
        assert close(mmpretrain_forward(tiny_state, pixels), riformer(pixels).logits)

    gfnet = original_gfnet_state_dict((1, 1, 1, 1), (8, 8, 16, 16), 3, image_size=32)
    write(gfnet, tmp_path / "gfnet.pth", "deit")
    assert cli.convert(["gfnet", "--checkpoint", str(tmp_path / "gfnet.pth"), "--output_dir", str(tmp_path / "g")]) == 0
    assert "GFNetForImageClassification: depths (1, 1, 1, 1)" in capsys.readouterr().out
    with torch.no_grad():
        gfnet_model = AutoModelForImageClassification.from_pretrained(tmp_path / "g")
        assert close(original_gfnet_forward(gfnet, pixels[..., :32, :32]), gfnet_model(pixels[..., :32, :32]).logits)
    assert cli.convert(["gfnet", "--checkpoint", str(tmp_path / "riformer.pth"), "--output_dir", "unused"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: This is not a GFNet-H (GFNetPyramid) checkpoint") and error.count("\n") == 1
    (tmp_path / "a_file").write_text("x")
    argv = ["gfnet", "--checkpoint", str(tmp_path / "gfnet.pth"), "--output_dir", str(tmp_path / "a_file")]
    assert cli.convert(argv) == 2
    assert "is a file: give a folder" in capsys.readouterr().err
