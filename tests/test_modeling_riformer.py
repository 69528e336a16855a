import json
import textwrap

import pytest
import torch
from conftest import randomize_, run_without_package, small_preset
from safetensors.torch import load_file
from transformers import AutoBackbone, AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

import riformer_hf
from riformer_hf import (
    RIFormerBackbone,
    RIFormerConfig,
    RIFormerForImageClassification,
    RIFormerModel,
    reparameterize_model,
)
from riformer_hf.data import PRESET_CROP_PCT, make_image_processor

PAPER_PARAMS = {"s12": 11_915_176, "s24": 21_388_968, "s36": 30_862_760, "m36": 56_172_520, "m48": 73_473_448}


@pytest.mark.parametrize("name", list(PAPER_PARAMS))
def test_parameter_counts_match_the_paper(name):
    for reparameterized in (False, True):
        config = RIFormerConfig.from_preset(name, num_labels=1000, reparameterized=reparameterized)
        with torch.device("meta"):
            model = RIFormerForImageClassification(config)
        count = sum(p.numel() for p in model.parameters())
        extra = 0 if reparameterized else 2 * sum(d * c for d, c in zip(config.depths, config.hidden_sizes))
        assert count == PAPER_PARAMS[name] + extra


@pytest.mark.parametrize("name", list(PAPER_PARAMS))
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_reparameterization_is_exact(name, dtype, tolerance):
    torch.manual_seed(0)
    model = randomize_(RIFormerForImageClassification(small_preset(name)).to(dtype).eval())
    pixels = torch.randn(2, 3, 97, 131, dtype=dtype)
    deploy = reparameterize_model(model)
    with torch.no_grad():
        train_out = model(pixels, output_block_states=True)
        deploy_out = deploy(pixels, output_block_states=True)
    scale = train_out.logits.abs().max()
    assert scale > 1e-3
    assert ((train_out.logits - deploy_out.logits).abs().max() / scale) <= tolerance
    for a, b in zip(train_out.mixer_states, deploy_out.mixer_states):
        assert ((a - b).abs().max() / a.abs().max()) <= tolerance * 10


def test_reparameterize_in_place_is_idempotent_and_copy_leaves_original(tiny_config):
    model = randomize_(RIFormerForImageClassification(tiny_config).eval())
    copy = reparameterize_model(model)
    assert not model.config.reparameterized and copy.config.reparameterized
    assert any(".token_mixer." in k for k in model.state_dict())
    keys = set(copy.state_dict())
    assert not any(".token_mixer." in k or ".norm1." in k for k in keys)
    assert copy.reparameterize() is copy
    assert set(copy.state_dict()) == keys
    assert model.reparameterize() is model and model.config.reparameterized
    assert set(model.state_dict()) == keys


def test_fusion_formula_by_hand():
    gamma, beta = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 3.0])
    scale, shift = torch.tensor([3.0, 0.5]), torch.tensor([1.0, -2.0])
    weight, bias = riformer_hf.models.riformer.fuse_mixer_into_norm(gamma, beta, scale, shift)
    assert weight.tolist() == [4.0, 0.5]  # γ (s - 1)
    assert bias.tolist() == [2.0, -3.5]  # β (s - 1) + t


def test_init_weights_sets_every_parameter(tiny_config):
    model = RIFormerForImageClassification(tiny_config)
    for name, param in model.named_parameters():
        assert torch.isfinite(param).all(), name
        if name.endswith("token_mixer.scale"):
            assert torch.equal(param, torch.ones_like(param))
        elif name.endswith(("token_mixer.shift", ".bias")) and "norm" not in name:
            assert torch.equal(param, torch.zeros_like(param)), name
        elif "layer_scale" in name:
            assert torch.allclose(param, torch.full_like(param, tiny_config.layer_scale_init_value))
        elif "norm" in name and name.endswith("weight"):
            assert torch.equal(param, torch.ones_like(param)), name
        elif name.endswith("weight"):
            assert abs(param.std().item() - tiny_config.initializer_range) < 0.008, name


def test_drop_path_rises_linearly():
    model = RIFormerModel(RIFormerConfig(depths=(2, 1, 1, 1), hidden_sizes=(8, 8, 8, 8), drop_path_rate=0.2))
    rates = [block.drop_path.drop_prob for stage in model.encoder.stages for block in stage.blocks]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])


def test_outputs_hidden_and_block_states(tiny_config):
    model = randomize_(RIFormerForImageClassification(tiny_config).eval())
    pixels = torch.randn(2, 3, 64, 48)
    out = model(pixels, labels=torch.tensor([0, 2]), output_hidden_states=True, output_block_states=True)
    shapes = [tuple(h.shape[1:]) for h in out.hidden_states]
    assert shapes == [(8, 16, 12), (8, 16, 12), (16, 8, 6), (24, 4, 3), (32, 2, 2)]
    assert len(out.block_states) == len(out.mixer_states) == sum(tiny_config.depths)
    assert torch.equal(out.block_states[-1], out.hidden_states[-1])
    block = model.riformer.encoder.stages[0].blocks[0]
    expected_mixer = block.token_mixer(block.norm1(out.hidden_states[0]))
    assert torch.allclose(out.mixer_states[0], expected_mixer)
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])))
    base = RIFormerModel(tiny_config)(pixels)
    assert base.block_states is None and base.hidden_states is None
    assert isinstance(model(pixels, return_dict=False), tuple)


@pytest.mark.parametrize("reparameterized", [False, True])
def test_save_load_round_trip_both_forms(tmp_path, tiny_config, reparameterized):
    model = randomize_(RIFormerForImageClassification(tiny_config).eval())
    if reparameterized:
        model.reparameterize()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["reparameterized"] is reparameterized
    assert saved["auto_map"]["AutoModelForImageClassification"] == "modeling_riformer.RIFormerForImageClassification"
    assert (tmp_path / "modeling_riformer.py").exists() and (tmp_path / "configuration_riformer.py").exists()
    keys = set(load_file(tmp_path / "model.safetensors"))
    assert any("token_mixer" in k for k in keys) is not reparameterized
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path)
    assert type(reloaded) is RIFormerForImageClassification
    pixels = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.equal(model(pixels).logits, reloaded(pixels).logits)


def test_auto_classes_are_registered(tiny_config):
    assert type(AutoConfig.for_model("riformer")) is RIFormerConfig
    assert type(AutoModel.from_config(tiny_config)) is RIFormerModel
    assert type(AutoModelForImageClassification.from_config(tiny_config)) is RIFormerForImageClassification
    assert type(AutoBackbone.from_config(tiny_config)) is RIFormerBackbone


def test_input_embeddings_are_the_stem(tiny_config):
    """accelerate's FSDP2 preparation asks every model for `get_input_embeddings()`; a RIFormer answers its stem."""
    classifier = RIFormerForImageClassification(tiny_config)
    assert classifier.get_input_embeddings() is classifier.riformer.encoder.stages[0].patch_embeddings
    backbone = RIFormerModel(tiny_config)
    assert backbone.get_input_embeddings() is backbone.encoder.stages[0].patch_embeddings


def test_preset_image_processor_is_poolformer_style(tmp_path):
    make_image_processor(224, PRESET_CROP_PCT["m36"]).save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert processor.crop_pct == 0.95 and processor.resample == 3  # bicubic
    assert processor.crop_size == {"height": 224, "width": 224}
    assert list(processor.image_mean) == [0.485, 0.456, 0.406] and list(processor.image_std) == [0.229, 0.224, 0.225]
    from PIL import Image

    out = processor(Image.new("RGB", (300, 400)), return_tensors="pt")
    assert out["pixel_values"].shape == (1, 3, 224, 224)


def test_trust_remote_code_and_pipeline_in_clean_process(tmp_path, tiny_config):
    model = reparameterize_model(randomize_(RIFormerForImageClassification(tiny_config).eval()))
    model.save_pretrained(tmp_path / "model")
    make_image_processor(32, 0.875).save_pretrained(tmp_path / "model")
    from PIL import Image

    image = Image.new("RGB", (50, 40), (200, 30, 90))
    image.save(tmp_path / "image.png")
    processor = AutoImageProcessor.from_pretrained(tmp_path / "model")
    with torch.no_grad():
        expected = model(**processor(image, return_tensors="pt")).logits[0]
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import torch
        from transformers import AutoModelForImageClassification, pipeline
        model = AutoModelForImageClassification.from_pretrained({str(tmp_path / 'model')!r}, trust_remote_code=True)
        assert type(model).__module__.startswith('transformers_modules'), type(model).__module__
        assert model.config.reparameterized
        classify = pipeline('image-classification', model={str(tmp_path / 'model')!r}, trust_remote_code=True)
        result = classify({str(tmp_path / 'image.png')!r}, top_k=3)
        expected = torch.softmax(torch.load({str(tmp_path / 'expected.pt')!r}), -1)
        names = {{0: 'cat', 1: 'dog', 2: 'fish'}}
        assert [r['label'] for r in result] == [names[i] for i in expected.argsort(descending=True).tolist()], result
        assert abs(result[0]['score'] - expected.max().item()) < 1e-5
        print('OK')
    """)
    assert "OK" in run_without_package(script, tmp_path)


def test_backbone_feature_maps_at_strides_4_to_32(tiny_config):
    config = RIFormerConfig(
        depths=(1, 1, 2, 1), hidden_sizes=(8, 16, 24, 32), out_features=["stage1", "stage2", "stage3", "stage4"]
    )
    backbone = RIFormerBackbone(config).eval()
    out = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in out.feature_maps] == [(1, 8, 16, 24), (1, 16, 8, 12), (1, 24, 4, 6), (1, 32, 2, 3)]
    assert backbone.channels == [8, 16, 24, 32]
    assert RIFormerBackbone(RIFormerConfig(out_indices=[0, 2])).out_features == ["stem", "stage2"]


def test_backbone_loads_classification_weights(tmp_path, tiny_config):
    classifier = randomize_(RIFormerForImageClassification(tiny_config))
    classifier.save_pretrained(tmp_path)
    backbone = RIFormerBackbone.from_pretrained(tmp_path, out_features=["stage4"])
    assert torch.equal(backbone.encoder.stages[3].patch_embeddings.weight,
                       classifier.riformer.encoder.stages[3].patch_embeddings.weight)


def test_bad_inputs_raise_clear_errors(tiny_config):
    model = RIFormerForImageClassification(tiny_config)
    with pytest.raises(ValueError, match="3 input channels.*has 1"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="3-D tensor.*pixel_values\\[None\\]"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="Unknown RIFormer preset 'xl99'.*s12, s24, s36, m36, m48"):
        RIFormerConfig.from_preset("xl99")
    with pytest.raises(ValueError, match="hidden_sizes has 3 entries but depths has 4"):
        RIFormerConfig(hidden_sizes=(8, 16, 24))
    assert RIFormerConfig.from_preset("RIFormer-M48").depths == (8, 8, 24, 8)


def test_loading_weights_into_the_other_form_is_refused(tmp_path, tiny_config):
    training = RIFormerForImageClassification(tiny_config)
    training.save_pretrained(tmp_path / "train")
    reparameterize_model(training).save_pretrained(tmp_path / "deploy")
    match = "training form .* reparameterized=False, then call `model.reparameterize\\(\\)`"
    with pytest.raises(ValueError, match=match):
        RIFormerForImageClassification.from_pretrained(tmp_path / "train", reparameterized=True)
    with pytest.raises(ValueError, match="deploy form .*cannot be turned back"):
        RIFormerForImageClassification.from_pretrained(tmp_path / "deploy", reparameterized=False)
    with pytest.raises(RuntimeError, match="token_mixer"):
        reparameterize_model(training).load_state_dict(training.state_dict())


def test_output_hidden_states_selects_stages(tiny_config):
    """As transformers' vision models: indices select hidden states (the others are `None`), in the model and the
    backbone; `config.output_hidden_states` is the default."""
    model = randomize_(RIFormerForImageClassification(tiny_config).eval())
    pixels = torch.randn(2, 3, 32, 32)
    full = model(pixels, output_hidden_states=True).hidden_states
    picked = model(pixels, output_hidden_states=[0, 2]).hidden_states
    assert len(picked) == len(full) == 5
    assert [i for i, state in enumerate(picked) if state is not None] == [0, 2]
    assert torch.equal(picked[0], full[0]) and torch.equal(picked[2], full[2])
    model.config.output_hidden_states = True
    assert len(model(pixels).hidden_states) == 5
    config = RIFormerConfig(depths=(1, 1, 2, 1), hidden_sizes=(8, 16, 24, 32), out_features=["stage4"])
    backbone = RIFormerBackbone(config).eval()
    assert backbone(pixels).hidden_states is None
    states = backbone(pixels, output_hidden_states=[1]).hidden_states
    assert [state is not None for state in states] == [False, True, False, False, False]


def test_block_states_are_on_the_autograd_graph(tiny_config):
    model = randomize_(RIFormerForImageClassification(tiny_config))
    out = model(torch.randn(2, 3, 32, 32), output_block_states=True, output_hidden_states=True)
    states = out.mixer_states + out.block_states + out.hidden_states
    for state in states:
        state.retain_grad()
    out.logits.square().sum().backward()
    assert all(state.grad is not None and state.grad.abs().sum() > 0 for state in states)


def training_step(model, pixels, labels):
    """Loss and gradients of a step that also uses the block states, as module imitation does."""
    model.zero_grad(set_to_none=True)
    out = model(pixels, labels=labels, output_block_states=True)
    loss = out.loss + sum(state.square().mean() for state in out.mixer_states + out.block_states)
    loss.backward()
    return loss.detach(), {name: param.grad for name, param in model.named_parameters()}


def test_gradient_checkpointing_gives_the_same_step(tiny_config):
    """Drop path on: the recomputation replays the same random masks (seeded here for both runs)."""
    model = randomize_(RIFormerForImageClassification(tiny_config)).train()
    pixels, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 2, 1])
    recomputed = []
    model.riformer.encoder.stages[2].blocks[1].norm2.register_forward_hook(lambda *args: recomputed.append(1))
    torch.manual_seed(0)
    loss, grads = training_step(model, pixels, labels)
    assert len(recomputed) == 1
    with pytest.warns(FutureWarning, match="activation_checkpointing_enable"):
        model.gradient_checkpointing_enable()
    assert model.is_activation_checkpointing
    torch.manual_seed(0)
    checkpointed_loss, checkpointed_grads = training_step(model, pixels, labels)
    assert len(recomputed) == 3  # forward, then again in backward: the activations were not kept
    torch.testing.assert_close(checkpointed_loss, loss, rtol=1e-6, atol=1e-6)
    assert set(checkpointed_grads) == set(grads)
    for name, grad in grads.items():
        assert grad is not None and grad.abs().max() > 0, name
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-6, atol=1e-6, msg=name)


def test_reparameterize_model_on_a_wrapper_marks_every_riformer_deploy(tmp_path, tiny_config):
    """A module holding RIFormer models (e.g. a detector around a classifier): folded and saved as the deploy form."""

    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = RIFormerForImageClassification(tiny_config)
            self.auxiliary = RIFormerModel(RIFormerConfig(depths=(1, 1, 1, 1), hidden_sizes=(8, 8, 8, 8)))
            self.head = torch.nn.Linear(3, 2)

    detector = randomize_(Detector()).eval()
    deploy = reparameterize_model(detector)
    assert deploy.backbone.config.reparameterized and deploy.auxiliary.config.reparameterized
    assert not detector.backbone.config.reparameterized and not detector.auxiliary.config.reparameterized
    assert not any(".token_mixer." in key for key in deploy.state_dict())
    deploy.backbone.save_pretrained(tmp_path)
    reloaded = RIFormerForImageClassification.from_pretrained(tmp_path)
    assert reloaded.is_reparameterized
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = detector.backbone(pixels).logits
        assert (reloaded(pixels).logits - expected).abs().max() <= 1e-5 * expected.abs().max()
