"""riformer-eval: accuracy against an independent computation, ONNX Runtime against PyTorch, the bootstrap, the label
check and the command's errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import randomize_
from PIL import Image

from riformer_hf import RIFormerConfig, RIFormerForImageClassification, reparameterize_model
from riformer_hf.cli import evaluate
from riformer_hf.data import make_image_processor
from riformer_hf.evaluation import accuracy_metrics, bootstrap_interval, hits, label_mapping
from riformer_hf.evaluation.classifiers import load_classifier

CLASSES = ["ant", "bee", "cat", "dog", "eel", "fox"]
IMAGES_PER_CLASS = 4


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


def write_image_folder(root: Path, classes, per_class=IMAGES_PER_CLASS, seed=0) -> Path:
    """Random RGB images of varying sizes (so that resize and crop matter), one sub-folder per class."""
    rng = np.random.default_rng(seed)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            height, width = rng.integers(30, 48, size=2)
            pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def save_model(folder: Path, names, deploy=True, seed=0) -> RIFormerForImageClassification:
    config = RIFormerConfig(depths=(1, 1, 2, 1), hidden_sizes=(8, 16, 24, 32), num_labels=len(names),
                            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    model = randomize_(RIFormerForImageClassification(config), seed).eval()
    model = reparameterize_model(model) if deploy else model
    model.save_pretrained(folder)
    make_image_processor(32, crop_pct=0.875).save_pretrained(folder)
    return model


def export_onnx(model, folder: Path) -> Path:
    """The exporter's layout: the .onnx file with the model's config and image processor beside it."""
    folder.mkdir()
    path = folder / "model.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, 32, 32),), str(path), input_names=["pixel_values"],
                      output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=18, dynamo=False)
    model.config.save_pretrained(folder)
    make_image_processor(32, crop_pct=0.875).save_pretrained(folder)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """An image folder and a deploy RIFormer whose classes are the folder's in another order."""
    root = tmp_path_factory.mktemp("eval")
    folder = write_image_folder(root / "images", CLASSES)
    model = save_model(root / "model", CLASSES[::-1])
    return root, folder, model


def reference(model_dir: Path, folder: Path):
    """Logits and model-index labels of every image, straight from the files, the saved model and its processor."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    files = sorted(folder.glob("*/*.png"))
    pixels = torch.cat([processor(Image.open(f).convert("RGB"), return_tensors="pt")["pixel_values"] for f in files])
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    labels = torch.tensor([model.config.label2id[f.parent.name] for f in files])
    return logits, labels


def run(argv, capsys):
    code = evaluate([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_image_folder_accuracy_equals_an_independent_topk(setup, capsys):
    root, folder, _ = setup
    code, out, err = run(["--model_name_or_path", root / "model", "--data_dir", folder, "--batch_size", "5",
                          "--no_progress", "--output_json", root / "out" / "result.json"], capsys)
    assert code == 0, err
    result = json.loads((root / "out" / "result.json").read_text())
    logits, labels = reference(root / "model", folder)
    assert len(set(logits.argmax(-1).tolist())) > 1  # the model does not predict one class for everything
    top5 = logits.topk(5, dim=-1).indices
    assert result["images"] == len(CLASSES) * IMAGES_PER_CLASS and result["k"] == 5
    assert result["top1"] == pytest.approx((top5[:, 0] == labels).float().mean().item())
    assert result["topk"] == pytest.approx((top5 == labels[:, None]).any(-1).float().mean().item())
    assert result["class_names"] == CLASSES[::-1] and result["runtime"] == "pytorch"
    assert f"top-1  {100 * result['top1']:6.2f}%" in out


def test_per_class_accuracy_and_confusion_matrix_png(setup, capsys):
    root, folder, _ = setup
    png = root / "confusion.png"
    code, _, err = run(["--model_name_or_path", root / "model", "--data_dir", folder, "--per_class",
                          "--confusion_matrix", png, "--output_json", root / "per_class.json", "--no_progress"], capsys)
    assert code == 0, err
    result = json.loads((root / "per_class.json").read_text())
    logits, labels = reference(root / "model", folder)
    predictions = logits.argmax(-1)
    for index, name in enumerate(CLASSES[::-1]):
        mine = labels == index
        assert result["per_class"][name]["images"] == IMAGES_PER_CLASS
        assert result["per_class"][name]["accuracy"] == pytest.approx((predictions[mine] == index).float().mean())
    matrix = np.asarray(result["confusion_matrix"])
    expected = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    np.add.at(expected, (labels.numpy(), predictions.numpy()), 1)
    np.testing.assert_array_equal(matrix, expected)
    with Image.open(png) as image:
        assert image.format == "PNG" and min(image.size) > 100


def test_onnx_runtime_and_pytorch_evaluation_agree(setup, tmp_path, capsys):
    root, folder, model = setup
    onnx_path = export_onnx(model, tmp_path / "onnx")
    torch_classifier, onnx_classifier = load_classifier(str(root / "model")), load_classifier(str(onnx_path))
    batch = torch.randn(3, 3, 32, 32)
    assert np.abs(onnx_classifier(batch) - torch_classifier(batch)).max() <= 1e-4
    results = []
    for source in (root / "model", onnx_path):
        output = tmp_path / f"{Path(source).stem}.json"
        code, _, err = run(["--model_name_or_path", source, "--data_dir", folder, "--batch_size", "7",
                            "--bootstrap", "200", "--output_json", output, "--no_progress"], capsys)
        assert code == 0, err
        results.append(json.loads(output.read_text()))
    pytorch, onnx = results
    assert onnx["runtime"] == "onnxruntime" and onnx["images"] == pytorch["images"]
    for key in ("top1", "topk", "top1_interval", "topk_interval", "class_names"):
        assert onnx[key] == pytest.approx(pytorch[key]), key


def test_top_k_is_five_or_every_class(tmp_path, capsys):
    logits = torch.randn(300, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 7, (300,), generator=torch.Generator().manual_seed(1))
    prediction = type("EvalPrediction", (), {"predictions": logits.numpy(), "label_ids": labels.numpy()})
    metrics = accuracy_metrics(prediction)
    top5 = logits.topk(5, dim=-1).indices
    assert metrics == pytest.approx({"accuracy": (top5[:, 0] == labels).float().mean().item(),
                                     "top5_accuracy": (top5 == labels[:, None]).any(-1).float().mean().item()})
    prediction.predictions, prediction.label_ids = logits[:, :3].numpy(), (labels % 3).numpy()
    assert set(accuracy_metrics(prediction)) == {"accuracy", "top3_accuracy"}
    assert accuracy_metrics(prediction)["top3_accuracy"] == 1.0

    folder = write_image_folder(tmp_path / "images", CLASSES[:3], per_class=3)
    save_model(tmp_path / "model", CLASSES[:3])
    code, out, err = run(["--model_name_or_path", tmp_path / "model", "--data_dir", folder, "--no_progress",
                          "--output_json", tmp_path / "r.json"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["k"] == 3 and result["topk"] == 1.0 and "top-3" in out


def test_ties_go_to_the_lower_index_and_nan_ranks_last():
    equal = np.zeros((3, 4))
    np.testing.assert_array_equal(hits(equal, np.array([0, 1, 3]), 2), [[True, True], [False, True], [False, False]])
    with_nan = np.array([[np.nan, 1.0, 0.0]])
    np.testing.assert_array_equal(hits(with_nan, np.array([0]), 2), [[False, False]])


def test_bootstrap_interval_covers_the_estimate_has_the_binomial_width_and_is_seeded():
    rng = np.random.default_rng(0)
    correct = np.stack([rng.random(400) < 0.7, rng.random(400) < 0.95], axis=1)
    interval = bootstrap_interval(correct, 2000, seed=3)
    means = correct.mean(0)
    assert (interval[:, 0] < means).all() and (means < interval[:, 1]).all()
    expected_width = 2 * 1.96 * np.sqrt(means * (1 - means) / len(correct))
    np.testing.assert_allclose(interval[:, 1] - interval[:, 0], expected_width, rtol=0.2)
    np.testing.assert_array_equal(bootstrap_interval(correct, 2000, seed=3), interval)
    assert not np.array_equal(bootstrap_interval(correct, 2000, seed=4), interval)


def test_label_mapping_matches_names_and_treats_label_i_as_unnamed():
    assert label_mapping(["a", "b", "c"], ["a", "b", "c"], 2) is None
    np.testing.assert_array_equal(label_mapping(["c", "a", "b"], ["a", "b", "c"], 2), [1, 2, 0])
    assert label_mapping(["LABEL_0", "LABEL_1"], ["x", "y"], 1) is None
    assert label_mapping(["a", "b", "c"], None, 2) is None
    with pytest.raises(ValueError, match="label 3 but the model predicts 3 classes"):
        label_mapping(["a", "b", "c"], None, 3)


def test_a_dataset_with_other_labels_is_one_error_naming_both(setup, tmp_path, capsys):
    root, _, _ = setup
    other = write_image_folder(tmp_path / "other", [*CLASSES[:5], "gnu"], per_class=1)
    code, out, err = run(["--model_name_or_path", root / "model", "--data_dir", other, "--no_progress"], capsys)
    assert code == 2 and out == ""
    (line,) = error_lines(err)
    assert "gnu only in the dataset, fox only in the model" in line and "riformer-train" in line
    fewer = write_image_folder(tmp_path / "fewer", CLASSES[:4], per_class=1)
    code, _, err = run(["--model_name_or_path", root / "model", "--data_dir", fewer, "--no_progress"], capsys)
    (line,) = error_lines(err)
    assert code == 2 and "predicts 6 classes (fox, eel" in line and "dataset has 4 (ant, bee, cat, dog)" in line


def test_bad_paths_and_a_corrupt_onnx_file_are_one_error_line(setup, tmp_path, capsys):
    root, folder, model = setup
    cases = {
        "no such folder or .onnx file": ["--model_name_or_path", tmp_path / "missing", "--data_dir", folder],
        "no-images: no such folder": ["--model_name_or_path", root / "model", "--data_dir", tmp_path / "no-images"],
        "is a file, not a folder": ["--model_name_or_path", root / "model", "--data_dir", tmp_path / "bad" / "notes"],
        "not a loadable ONNX model": ["--model_name_or_path", tmp_path / "bad" / "model.onnx", "--data_dir", folder],
        "no image processor": ["--model_name_or_path", tmp_path / "bare", "--digits"],
    }
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.onnx").write_bytes(b"\x08\x07this is not a protobuf")
    (tmp_path / "bad" / "notes").write_text("a file, not an image folder")
    model.config.save_pretrained(tmp_path / "bad")
    make_image_processor(32).save_pretrained(tmp_path / "bad")
    model.save_pretrained(tmp_path / "bare")  # weights without their image processor
    for message, argv in cases.items():
        code, out, err = run([*argv, "--no_progress"], capsys)
        assert code == 2 and out == "", (message, err)
        (line,) = error_lines(err)
        assert message in line and "Traceback" not in err, (message, err)


def test_the_bundled_digits_held_out_split(tmp_path, capsys):
    save_model(tmp_path / "model", [str(d) for d in range(10)], deploy=False)
    code, _, err = run(["--model_name_or_path", tmp_path / "model", "--digits", "--max_samples", "40",
                          "--no_progress", "--output_json", tmp_path / "r.json"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["images"] == 40 and result["k"] == 5 and "bundled digits, split test" in result["dataset"]
    assert "training form" in result["model"]
