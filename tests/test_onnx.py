"""ONNX export, ONNX Runtime agreement, INT8 quantisation, the reparameterize command and their bad inputs."""

import collections
import json

import numpy as np
import pytest
import torch
from conftest import digits_config, randomize_

from riformer_hf import RIFormerForImageClassification, cli, reparameterize_model
from riformer_hf.data import make_image_processor
from riformer_hf.export import load_riformer
from riformer_hf.export.inference_graph import FoldedRIFormerClassifier, can_fold
from riformer_hf.export.onnx import export_graph, export_onnx, ort_session

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture
def training_folder(tmp_path):
    """A random training-form RIFormer with a 32 px image processor, saved as a folder."""
    model = randomize_(RIFormerForImageClassification(digits_config())).eval()
    folder = tmp_path / "training"
    model.save_pretrained(folder)
    make_image_processor(32, crop_pct=1.0).save_pretrained(folder)
    return model, folder


def _ort_logits(path, pixels: torch.Tensor) -> np.ndarray:
    return ort_session(path).run(["logits"], {"pixel_values": pixels.numpy()})[0]


def test_export_command_from_a_training_form_folder(training_folder, tmp_path, capsys):
    model, folder = training_folder
    out = tmp_path / "onnx"
    assert cli.export(["--model_name_or_path", str(folder), "--output_dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "batch 1 @ 32²" in printed and "batch 2 @ 64²" in printed and "max |Δlogits|" in printed

    graph = onnx.load(str(out / "model.onnx"))
    assert max(op.version for op in graph.opset_import if op.domain in ("", "ai.onnx")) == 20
    dims = [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3]  # batch, height and width are symbolic
    config = json.loads((out / "config.json").read_text())
    assert config["reparameterized"] is True and config["id2label"]["7"] == "7"
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["crop_size"] == {"height": 32, "width": 32}

    generator = torch.Generator().manual_seed(1)
    for shape in ((1, 3, 32, 32), (3, 3, 64, 64), (2, 3, 48, 96)):  # batch, square and non-square sizes
        pixels = torch.randn(shape, generator=generator)
        with torch.no_grad():
            expected = model(pixel_values=pixels).logits.numpy()
        assert np.abs(_ort_logits(out / "model.onnx", pixels) - expected).max() <= 1e-4


def test_export_of_a_deploy_form_model_matches_the_training_form(tmp_path):
    model = randomize_(RIFormerForImageClassification(digits_config()), seed=3).eval()
    deploy = reparameterize_model(model)
    result = export_onnx(deploy, tmp_path / "onnx", image_processor=make_image_processor(32, crop_pct=1.0),
                         batch_sizes=(1, 4), image_sizes=(32, 96))
    assert [(r.batch_size, r.image_size) for r in result.validation] == [(1, 32), (4, 32), (1, 96), (4, 96)]
    assert all(r.max_abs_diff <= 1e-4 for r in result.validation)
    assert deploy.is_reparameterized and not model.is_reparameterized  # the caller's models are untouched
    pixels = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits.numpy()
    assert np.abs(_ort_logits(result.onnx_path, pixels) - expected).max() <= 1e-4


def test_deploy_graph_has_its_scales_folded_into_the_convolutions(tmp_path):
    model = reparameterize_model(randomize_(RIFormerForImageClassification(digits_config()), seed=4)).eval()
    pixels = torch.randn(3, 3, 40, 40, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits
        assert (FoldedRIFormerClassifier(model)(pixels) - expected).abs().max() <= 1e-5
    graph = onnx.load(str(export_graph(model, tmp_path / "m.onnx", 32)))
    ops = collections.Counter(node.op_type for node in graph.graph.node)
    blocks = sum(model.config.depths)
    assert ops["Gelu"] == blocks  # opset 20: one operator, not Div, Erf, Add, Mul, Mul
    assert ops["InstanceNormalization"] == 2 * blocks + 1
    assert ops["Mul"] == blocks  # only x + ls1 · norm_reparam(x) keeps an affine
    assert ops["Conv"] == 4 + 2 * blocks
    assert np.abs(_ort_logits(tmp_path / "m.onnx", pixels) - expected.numpy()).max() <= 1e-4

    assert not can_fold(model.riformer) and not can_fold(randomize_(RIFormerForImageClassification(digits_config())))
    mlp = model.riformer.encoder.stages[1].blocks[0].mlp
    mlp.fc1 = torch.nn.Sequential(mlp.fc1)
    assert not can_fold(model)  # a replaced submodule exports through the model's own forward


def test_int8_export_keeps_top1_on_held_out_digits(digits_model, tmp_path):
    model, processor, test = digits_model
    result = export_onnx(model, tmp_path / "onnx", image_processor=processor, int8=True,
                         calibration_data="digits", calibration_samples=200)
    graph = onnx.load(str(result.int8_path))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert result.calibration_images == 200

    held_out = torch.from_numpy(processor(images=list(test["image"]), return_tensors="np")["pixel_values"])
    with torch.no_grad():
        pytorch_top1 = (model(pixel_values=held_out).logits.argmax(-1) == torch.tensor(test["label"])).double().mean()
    compared = result.int8_comparison
    assert compared["images"] == len(test)
    assert compared["fp32_top1"] == pytest.approx(pytorch_top1.item(), abs=1 / len(test))
    assert compared["fp32_top1"] > 0.85  # a trained model, so the bound below says something
    assert abs(compared["top1_change_points"]) <= 0.5
    assert compared["agreement"] >= 0.97


def test_reparameterize_command_writes_the_folded_model(training_folder, tmp_path, capsys):
    model, folder = training_folder
    out = tmp_path / "deploy"
    assert cli.reparameterize(["--model_dir", str(folder), "--output_dir", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    loaded = load_riformer(out)
    expected = reparameterize_model(model)
    assert loaded.is_reparameterized
    assert loaded.state_dict().keys() == expected.state_dict().keys()
    for name, tensor in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert (out / "preprocessor_config.json").is_file() and (out / "README.md").is_file()


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    from transformers import PoolFormerConfig, PoolFormerForImageClassification

    other = tmp_path / "poolformer"
    PoolFormerForImageClassification(PoolFormerConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32])) \
        .save_pretrained(other)
    out = tmp_path / "out"
    assert cli.export(["--model_name_or_path", str(other), "--output_dir", str(out)]) == 2
    err = _one_error_line(capsys)
    assert "'poolformer' model, not a RIFormer" in err and "riformer-convert" in err

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.onnx").write_bytes(b"\x08\x07this is not protobuf" * 10)
    assert cli.export(["--model_name_or_path", str(corrupt), "--output_dir", str(out), "--int8",
                       "--calibration_data", "digits"]) == 2
    err = _one_error_line(capsys)
    assert "is not a valid ONNX model" in err and "re-export it with riformer-export" in err

    model = RIFormerForImageClassification(digits_config())
    model.save_pretrained(tmp_path / "riformer")
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    (empty / "cats" / "notes.txt").write_text("no images here")
    assert cli.export(["--model_name_or_path", str(tmp_path / "riformer"), "--output_dir", str(out), "--int8",
                       "--calibration_data", str(empty)]) == 2
    err = _one_error_line(capsys)
    assert f"--calibration_data {empty} holds no images" in err and "'digits'" in err

    assert cli.export(["--model_name_or_path", str(tmp_path / "riformer"),
                       "--output_dir", str(tmp_path / "riformer")]) == 2
    assert (f"--output_dir {tmp_path / 'riformer'} holds what this command reads (--model_name_or_path "
            f"{tmp_path / 'riformer'}): replacing the folder would delete it") in _one_error_line(capsys)
    assert not out.exists()
    assert load_riformer(tmp_path / "riformer").is_reparameterized is False  # the source folder is untouched
