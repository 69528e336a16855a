"""OpenVINO export: the IR round trip against PyTorch (dynamic batch and size), NNCF INT8 and bf16 on a trained
model, riformer-eval on IR files (fp32 and bf16), the output-folder guard and bad inputs."""

import collections
import json

import numpy as np
import pytest
import torch
from conftest import digits_config, randomize_

from riformer_hf import RIFormerForImageClassification, cli, reparameterize_model
from riformer_hf.data import make_image_processor
from riformer_hf.errors import MissingInputError
from riformer_hf.evaluation.classifiers import load_classifier

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

from riformer_hf.export.openvino import (
    INT8_XML_FILE,
    XML_FILE,
    IRRunner,
    check_ir_files,
    compile_ir,
    convert_graph,
    cpu_supports_bf16,
    export_openvino,
    read_ir,
)


def _processed(processor, dataset) -> torch.Tensor:
    return torch.from_numpy(processor(images=list(dataset["image"]), return_tensors="np")["pixel_values"])


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_ir_round_trip_matches_pytorch_with_dynamic_batch_and_size(tmp_path):
    model = randomize_(RIFormerForImageClassification(digits_config()), seed=3).eval()  # training form: folded first
    result = export_openvino(model, tmp_path / "ov", image_processor=make_image_processor(32, crop_pct=1.0),
                             batch_sizes=(1, 4), image_sizes=(32, 64))
    assert [(r.batch_size, r.image_size) for r in result.validation] == [(1, 32), (4, 32), (1, 64), (4, 64)]
    assert all(r.max_abs_diff <= 1e-4 for r in result.validation)
    assert not model.is_reparameterized  # the caller's model is untouched
    written = {p.name for p in (tmp_path / "ov").iterdir()}
    assert {"config.json", "openvino_model.bin", "openvino_model.xml", "preprocessor_config.json"} <= written
    assert not any(name.startswith(".") or name.endswith(".onnx") for name in written)  # no temporaries left
    assert json.loads((tmp_path / "ov" / "config.json").read_text())["reparameterized"] is True

    ir = read_ir(tmp_path / "ov" / XML_FILE)  # from disk, as a user gets it
    shape = ir.inputs[0].get_partial_shape()
    assert shape[0].is_dynamic and shape[2].is_dynamic and shape[3].is_dynamic and shape[1].get_length() == 3
    assert ir.get_parameters()[0].get_element_type() == ov.Type.f32
    runner = IRRunner(compile_ir(tmp_path / "ov" / XML_FILE, "fp32", threads=1))
    generator = torch.Generator().manual_seed(1)
    for shape in ((1, 3, 32, 32), (5, 3, 32, 32), (2, 3, 48, 80)):  # batch, and a non-square size
        pixels = torch.randn(shape, generator=generator)
        with torch.no_grad():
            expected = model(pixel_values=pixels).logits.numpy()
        assert np.abs(runner(pixels) - expected).max() <= 1e-4, shape


def test_moments_norms_become_one_mvn_each_without_reorders(tmp_path):
    """Both norm spellings give the same logits in OpenVINO; "moments" leaves it one MVN per norm and far fewer
    reshapes and layout reorders than ONNX Runtime's InstanceNormalization spelling."""
    deploy = reparameterize_model(randomize_(RIFormerForImageClassification(digits_config()), seed=4)).eval()
    pixels = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = deploy(pixel_values=pixels).logits.numpy()
    ops = {}
    for norm in ("moments", "instance_norm"):
        compiled = compile_ir(convert_graph(deploy, 32, workdir=tmp_path, norm=norm), "fp32", threads=1)
        assert np.abs(IRRunner(compiled)(pixels) - expected).max() <= 1e-4, norm
        ops[norm] = collections.Counter(op.get_rt_info()["layerType"].astype(str)
                                        for op in compiled.get_runtime_model().get_ops())
    norms = 2 * sum(deploy.config.depths) + 1
    assert ops["moments"]["MVN"] == ops["instance_norm"]["MVN"] == norms
    assert ops["moments"]["Reorder"] + norms <= ops["instance_norm"]["Reorder"]
    assert ops["moments"]["Reshape"] + 2 * norms <= ops["instance_norm"]["Reshape"]


def test_nncf_int8_and_bf16_keep_top1_on_held_out_digits(digits_model, tmp_path):
    model, processor, test = digits_model
    result = export_openvino(model, tmp_path / "ov", image_processor=processor, int8=True,
                             calibration_data="digits", calibration_samples=200)
    assert result.calibration_images == 200 and (tmp_path / "ov" / INT8_XML_FILE).is_file()
    quantized = read_ir(tmp_path / "ov" / INT8_XML_FILE)
    assert "FakeQuantize" in {op.get_type_name() for op in quantized.get_ops()}

    held_out = _processed(processor, test)
    labels = torch.tensor(test["label"])
    with torch.no_grad():
        pytorch_top1 = (model(pixel_values=held_out).logits.argmax(-1) == labels).double().mean().item()
    compared = result.int8_comparison
    assert compared["images"] == len(test) and not compared["training_images"]
    fp32, int8 = compared["runners"]["fp32"], compared["runners"]["int8"]
    assert fp32["top1"] == pytest.approx(pytorch_top1, abs=1 / len(test))
    assert fp32["top1"] > 0.85  # a trained model, so the bound below says something
    assert abs(int8["top1_change_points"]) <= 0.5
    assert int8["agreement"] >= 0.97
    if cpu_supports_bf16():
        bf16 = result.bf16["runners"]["bf16"]
        assert bf16["agreement"] >= 0.99 and abs(bf16["top1_change_points"]) <= 0.5
    else:
        assert "skipped" in result.bf16


def test_eval_of_ir_equals_onnx_runtime_and_bf16_agrees(digits_model, tmp_path):
    from riformer_hf.data.datasets import ImageSource
    from riformer_hf.evaluation.run import evaluate_classifier, load_split
    from riformer_hf.export.onnx import export_onnx

    model, processor, _ = digits_model
    export_onnx(model, tmp_path / "onnx", image_processor=processor)
    export_openvino(model, tmp_path / "ov", image_processor=processor, check_bf16=False)
    dataset, _, description = load_split(ImageSource(), image_size=32)
    results = {}
    for name, path in (("onnx", tmp_path / "onnx" / "model.onnx"), ("ov", tmp_path / "ov" / XML_FILE),
                       ("ov folder", tmp_path / "ov")):
        classifier = load_classifier(str(path), threads=1)
        results[name] = evaluate_classifier(classifier, dataset, batch_size=128, description=description)
    assert results["ov"].runtime == results["ov folder"].runtime == "openvino"
    assert results["onnx"].runtime == "onnxruntime"
    assert results["ov"].top1 == pytest.approx(results["onnx"].top1, abs=1 / len(dataset))
    assert results["ov"].topk == pytest.approx(results["onnx"].topk, abs=1 / len(dataset))

    if not cpu_supports_bf16():
        pytest.skip("this CPU has no bf16 instructions: the bf16 half of the test needs them")
    # bf16 against fp32, prediction by prediction, through the loaders: PyTorch (a saved deploy folder: the fused
    # path) and OpenVINO.
    folder = tmp_path / "deploy"
    reparameterize_model(model).save_pretrained(folder)
    processor.save_pretrained(folder)
    pixels = _processed(processor, dataset)
    reference = load_classifier(str(folder), threads=1)(pixels).argmax(-1)
    for path in (folder, tmp_path / "ov" / XML_FILE):
        bf16 = load_classifier(str(path), threads=1, dtype="bf16")
        assert "bf16" in bf16.description
        assert (bf16(pixels).argmax(-1) == reference).mean() >= 0.99, path


def test_bf16_on_a_cpu_without_bf16_and_on_an_onnx_file_is_one_clear_line(tmp_path, capsys, monkeypatch):
    from riformer_hf.evaluation import classifiers

    model = randomize_(RIFormerForImageClassification(digits_config()))
    model.save_pretrained(tmp_path / "riformer")
    make_image_processor(32, crop_pct=1.0).save_pretrained(tmp_path / "riformer")
    monkeypatch.setattr(classifiers, "cpu_has_bf16", lambda: False)
    assert cli.evaluate(["--model_name_or_path", str(tmp_path / "riformer"), "--digits", "--dtype", "bf16",
                         "--device", "cpu"]) == 2
    assert "no bf16 instructions" in _one_error_line(capsys)
    assert cli.evaluate(["--model_name_or_path", str(tmp_path / "m.onnx"), "--digits", "--dtype", "bf16"]) == 2
    assert "ONNX Runtime runs m.onnx as exported" in _one_error_line(capsys)


def test_export_command_guard_and_bad_inputs(tmp_path, capsys):
    model = randomize_(RIFormerForImageClassification(digits_config()))
    model.save_pretrained(tmp_path / "riformer")
    make_image_processor(32, crop_pct=1.0).save_pretrained(tmp_path / "riformer")
    out = tmp_path / "ov"
    command = ["--model_name_or_path", str(tmp_path / "riformer"), "--output_dir", str(out), "--format", "openvino"]
    assert cli.export(command) == 0
    printed = capsys.readouterr().out
    assert "OpenVINO fp32 vs PyTorch" in printed and "batch 2 @ 64²" in printed and "bf16" in printed
    assert (out / XML_FILE).is_file()

    # The folder now holds an export: refused without --overwrite_output_dir, left as it was.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert cli.export(command) == 2
    assert "--overwrite_output_dir" in _one_error_line(capsys)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    (out / "model_int8.onnx").write_bytes(b"an earlier export's file")
    assert cli.export([*command, "--overwrite_output_dir"]) == 0
    capsys.readouterr()
    assert not (out / "model_int8.onnx").exists()  # the folder holds only the new export

    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and one error line, exit code 2
        cli.export([*command[:4], "--format", "tflite"])
    assert exit_info.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err

    lonely = tmp_path / "lonely"
    lonely.mkdir()
    for name in (XML_FILE, "config.json", "preprocessor_config.json"):
        (lonely / name).write_bytes((out / name).read_bytes())  # the .xml without its .bin
    with pytest.raises(MissingInputError, match="no weights file openvino_model.bin beside it"):
        check_ir_files(lonely / XML_FILE)
    assert cli.evaluate(["--model_name_or_path", str(lonely / XML_FILE), "--digits", "--no_progress"]) == 2
    error = _one_error_line(capsys)
    assert "no weights file openvino_model.bin" in error and "copy the .bin with the .xml" in error

    assert cli.evaluate(["--model_name_or_path", str(tmp_path / "missing.xml"), "--digits"]) == 2
    assert "does not exist" in _one_error_line(capsys)
    assert cli.export([*command[:2], "--output_dir", str(tmp_path / "x"), "--format", "openvino", "--int8"]) == 2
    assert "--int8 needs --calibration_data" in _one_error_line(capsys)
    assert not (tmp_path / "x").exists()
