"""Datasets at scale: unreadable images named or skipped, streamed training, the data-pipeline benchmark."""

import io
import logging

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, IterableDataset, Value, load_dataset
from PIL import Image as PILImage
from torch.utils.data import DataLoader
from transformers import default_data_collator

from riformer_hf.cli import train as train_cli
from riformer_hf.data import TrainTransform, TransformedImages, UnreadableImageError, with_image_transform
from riformer_hf.training.run import main as run_training

TINY = ["--depths", "1", "1", "1", "1", "--hidden_sizes", "8", "8", "8", "8", "--image_size", "16"]
QUICK = ["--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--use_cpu", "--disable_tqdm",
         "true", "--save_strategy", "no", "--report_to", "none"]
WHOLE = TrainTransform(16, scale=(1.0, 1.0), hflip=0.0, interpolation="bicubic")  # the same image, the same tensor


def image_folder(root, per_class=4, classes=("cat", "dog"), bad=True):
    """An image folder of 20×30 JPEGs; with `bad`, cat/1.jpg truncated to half and dog/2.jpg a text file."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            PILImage.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(root / name / f"{i}.jpg")
    if bad:
        data = (root / "cat" / "1.jpg").read_bytes()
        (root / "cat" / "1.jpg").write_bytes(data[: len(data) // 2])
        (root / "dog" / "2.jpg").write_text("not an image")
    return root


def file_paths(dataset) -> list[str]:
    return [row["path"] for row in dataset.cast_column("image", Image(decode=False))["image"]]


def load_folder(root, streaming=False):
    return load_dataset("imagefolder", data_dir=str(root), split="train", streaming=streaming)


def test_unreadable_images_raise_naming_the_file(tmp_path):
    root = image_folder(tmp_path / "images")
    dataset = with_image_transform(load_folder(root), WHOLE)
    paths = file_paths(load_folder(root))
    bad = {paths.index(str(root / "cat" / "1.jpg")), paths.index(str(root / "dog" / "2.jpg"))}
    for index in range(len(dataset)):
        if index not in bad:
            assert dataset[index]["pixel_values"].shape == (3, 16, 16)
    with pytest.raises(UnreadableImageError) as error:
        dataset[paths.index(str(root / "dog" / "2.jpg"))]
    assert str(root / "dog" / "2.jpg") in str(error.value) and "cannot identify image file" in str(error.value)
    assert "skip_bad_images" in str(error.value)
    loader = DataLoader(dataset, batch_size=8, collate_fn=default_data_collator)  # the batched path
    with pytest.raises(UnreadableImageError, match=r"cat/1\.jpg \(index \d of the training set\): Truncated"):
        next(iter(loader))


def test_iterating_a_transformed_dataset_stops_at_its_end():
    # `for example in dataset` uses __getitem__ until IndexError: the wrap-around to the next readable image must not
    # make it endless (the demo's bf16 scoring iterated the held-out digits this way and never finished).
    rows = {"image": [PILImage.new("RGB", (8, 8), (i, i, i)) for i in range(3)], "label": [0, 1, 2]}
    features = Features({"image": Image(), "label": Value("int64")})
    dataset = with_image_transform(Dataset.from_dict(rows, features=features), WHOLE)
    assert [example["labels"] for example in dataset] == [0, 1, 2]
    assert dataset[-1]["labels"] == 2
    with pytest.raises(IndexError):
        dataset[3]


def test_an_image_without_a_file_name_is_named_by_its_index():
    good = io.BytesIO()
    PILImage.new("RGB", (8, 8), (1, 2, 3)).save(good, "PNG")
    rows = {"image": [{"bytes": good.getvalue(), "path": None}, {"bytes": b"\x89PNG garbage", "path": None}],
            "label": [0, 1]}
    features = Features({"image": Image(), "label": Value("int64")})
    dataset = with_image_transform(Dataset.from_dict(rows, features=features), WHOLE)
    assert dataset[0]["labels"] == 0
    with pytest.raises(UnreadableImageError, match=r"at index 1 of the training set \(12 bytes, no file name\)"):
        dataset[1]


def test_skipping_logs_each_bad_file_once_and_keeps_batches_whole(tmp_path, caplog):
    root = image_folder(tmp_path / "images")
    raw = load_folder(root)
    dataset = with_image_transform(raw, WHOLE, skip_bad_images=True)
    assert isinstance(dataset, TransformedImages) and len(dataset) == 8
    paths = file_paths(raw)
    with caplog.at_level(logging.WARNING):
        batches = [list(DataLoader(dataset, batch_size=4, collate_fn=default_data_collator)) for _ in range(2)]
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 2  # one line per bad file, not one per epoch
    assert any(str(root / "cat" / "1.jpg") in w for w in warnings)
    assert any(str(root / "dog" / "2.jpg") in w for w in warnings)
    assert [b["pixel_values"].shape[0] for b in batches[0]] == [4, 4]
    # each bad image is replaced by the next readable one, with that image's label
    pixels = torch.cat([b["pixel_values"] for b in batches[0]])
    labels = torch.cat([b["labels"] for b in batches[0]])
    for bad_path in (root / "cat" / "1.jpg", root / "dog" / "2.jpg"):
        index = paths.index(str(bad_path))
        assert torch.equal(pixels[index], pixels[index + 1]) and labels[index] == labels[index + 1]
    assert torch.equal(batches[0][0]["pixel_values"], batches[1][0]["pixel_values"])
    good = [i for i, p in enumerate(paths) if p not in {str(root / "cat" / "1.jpg"), str(root / "dog" / "2.jpg")}]
    expected = torch.stack([WHOLE(PILImage.open(paths[i])) for i in good])
    torch.testing.assert_close(pixels[good], expected)


def test_streamed_dataset_drops_bad_images(tmp_path, caplog):
    root = image_folder(tmp_path / "images")
    stream = load_folder(root, streaming=True)
    with pytest.raises(UnreadableImageError, match="1.jpg"):
        list(with_image_transform(stream, WHOLE))
    with caplog.at_level(logging.WARNING):
        examples = list(with_image_transform(stream, WHOLE, skip_bad_images=True))
    assert len(examples) == 6 and set(examples[0]) == {"pixel_values", "labels"}
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 2
    assert sorted(e["labels"] for e in examples) == [0, 0, 0, 1, 1, 1]


def test_train_cli_names_the_bad_file_then_skips_it(tmp_path, capsys):
    root = image_folder(tmp_path / "images")
    common = ["--data_dir", str(root), "--eval_split", "train", *TINY, *QUICK, "--max_steps", "2"]
    assert train_cli(["--output_dir", str(tmp_path / "fails"), *common]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: Cannot read the image ") and ".jpg" in error and "--skip_bad_images" in error
    trainer = run_training(["--output_dir", str(tmp_path / "skips"), *common, "--skip_bad_images"])
    assert trainer.state.global_step == 2


def test_streaming_trains_for_max_steps_across_passes(tmp_path, caplog):
    root = image_folder(tmp_path / "images", per_class=3)
    args = ["--data_dir", str(root), "--streaming", "--max_eval_samples", "2", "--skip_bad_images", *TINY, *QUICK]
    with caplog.at_level(logging.WARNING):
        trainer = run_training(["--output_dir", str(tmp_path / "run"), *args, "--max_steps", "5", "--seed", "1"])
    # 6 images, the first 2 held out, 1 of the other 4 unreadable: 3 per pass, so 5 steps of 4 take several passes
    assert trainer.state.global_step == 5 and isinstance(trainer.train_dataset, IterableDataset)
    assert (tmp_path / "run" / "eval_results.json").is_file()
    assert any("unreadable" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("extra", "message"), [
    ([], "--streaming trains on a stream of unknown length: set the schedule with --max_steps N."),
    (["--max_steps", "2"], "no eval split: pass --max_eval_samples N"),
])
def test_streaming_refuses_without_max_steps_or_eval_images(tmp_path, capsys, extra, message):
    root = image_folder(tmp_path / "images", per_class=2, bad=False)
    argv = ["--output_dir", str(tmp_path / "run"), "--data_dir", str(root), "--streaming", *TINY, *QUICK, *extra]
    assert train_cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "run").exists()


def test_data_benchmark_measures_each_variant():
    from riformer_hf.benchmarks.data_pipeline import format_report, make_jpegs, measure

    jpegs = make_jpegs(2)
    assert PILImage.open(io.BytesIO(jpegs[0])).size == (500, 375)
    rates = measure(images=2, rounds=1, image_size=32)
    assert set(rates) == {"decode", "crop_flip", "crop_flip_randaugment"} and min(rates.values()) > 0
    assert "needs 1,250 img/s per worker" in format_report(rates, 10_000, 8)


def test_a_16_bit_png_reaches_the_model_scaled_to_8_bits(tmp_path):
    """Pillow reads a 16-bit grayscale PNG as I;16 and its own RGB conversion clips it (a ~99.5 % white image): the
    training and evaluation tensors must hold the source scaled by 255 / 65535 instead."""
    from riformer_hf.data import ProcessorTransform, make_image_processor

    rng = np.random.default_rng(0)
    source = rng.integers(0, 65536, (16, 16), dtype=np.uint16)
    for name in ("dark", "light"):
        (tmp_path / name).mkdir()
        PILImage.fromarray(source if name == "dark" else 65535 - source).save(tmp_path / name / "0.png")
    dataset = load_folder(tmp_path)
    assert dataset.cast_column("image", Image(decode=True))[0]["image"].mode == "I;16"
    gray = np.rint(np.asarray(source, np.float64) * 255 / 65535) / 255
    mean, std = np.asarray(WHOLE.mean)[:, None, None], np.asarray(WHOLE.std)[:, None, None]
    expected = torch.from_numpy((gray[None] - mean) / std).float()
    transformed = with_image_transform(dataset, WHOLE)
    by_name = {row["labels"]: row for row in (transformed[i] for i in range(len(transformed)))}
    dark = by_name[dataset.features["label"].names.index("dark")]["pixel_values"]
    torch.testing.assert_close(dark, expected, atol=1e-6, rtol=0)
    processor = make_image_processor(16, crop_pct=1.0)
    evaluated = ProcessorTransform(processor)(dataset[dataset["label"].index(0)]["image"])
    scaled = PILImage.fromarray(np.rint(np.asarray(source, np.float64) * 255 / 65535).astype(np.uint8)).convert("RGB")
    torch.testing.assert_close(evaluated, processor(scaled, return_tensors="pt")["pixel_values"][0])
    assert abs(float(dark.mean()) - float(expected.mean())) < 1e-6 and gray.mean() < 0.6
