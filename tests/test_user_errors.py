"""Inputs checked for what they are, across the commands: each bad input is one `error:` line (exit 2) that names the
path or value and the fix, printed before any work, with every file that was on disk left as it was."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from riformer_hf import GFNetConfig, GFNetForImageClassification, RIFormerConfig, RIFormerForImageClassification, cli
from riformer_hf.data import make_image_processor

TINY = ["--depths", "1", "1", "1", "1", "--hidden_sizes", "8", "8", "8", "8", "--image_size", "32"]
QUICK = ["--per_device_train_batch_size", "8", "--max_train_samples", "16", "--max_eval_samples", "8", "--use_cpu",
         "--disable_tqdm", "true"]


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """What the cases point at: models in every shape a user may hand over, image folders, a finished checkpoint."""
    root = tmp_path_factory.mktemp("inputs")
    config = RIFormerConfig(depths=(1, 1, 1, 1), hidden_sizes=(8, 8, 8, 8), num_labels=2)
    model = RIFormerForImageClassification(config)
    model.save_pretrained(root / "riformer")
    make_image_processor(32).save_pretrained(root / "riformer")
    config.save_pretrained(root / "onnx_only")
    (root / "onnx_only" / "model.onnx").write_bytes(b"\x08\x07an exported graph")
    model.save_pretrained(root / "damaged")
    (root / "damaged" / "model.safetensors").write_text("these are not weights")
    GFNetForImageClassification(GFNetConfig(depths=(1, 1, 1, 1), hidden_sizes=(8, 8, 8, 8))).save_pretrained(
        root / "gfnet")
    (root / "a_file.txt").write_text("not a folder")
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / "images" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(root / "images" / name / f"{i}.jpg")
    jpeg = (root / "images" / "cat" / "1.jpg").read_bytes()
    (root / "images" / "cat" / "1.jpg").write_bytes(jpeg[: len(jpeg) // 3])  # truncated
    assert cli.train(["--output_dir", str(root / "run"), *TINY, *QUICK, "--max_steps", "2", "--save_steps", "2"]) == 0
    return root


CASES = {
    "missing data folder": (cli.train, ["--data_dir", "{root}/no-such-folder"],
                            "--data_dir {root}/no-such-folder: no such folder: give a folder with one sub-folder"),
    "'digits' as data folder": (cli.train, ["--data_dir", "digits"],
                                "(the bundled digits: riformer-train's default, riformer-eval --digits)"),
    "a file as data folder": (cli.train, ["--data_dir", "{root}/a_file.txt"],
                              "--data_dir {root}/a_file.txt is a file, not a folder: give a folder"),
    "an ONNX-only teacher": (cli.train, ["--teacher_model", "{root}/onnx_only"],
                             ("--teacher_model {root}/onnx_only holds an exported graph (model.onnx) and no PyTorch "
                              "weights: give the PyTorch folder it was exported from")),
    "damaged teacher weights": (cli.train, ["--teacher_model", "{root}/damaged"],
                                "--teacher_model {root}/damaged: its weights cannot be read"),
    "resume with other widths": (cli.train, ["--resume_from_checkpoint", "{root}/run/checkpoint-2", "--hidden_sizes",
                                             "8", "8", "8", "16"],
                                 ("--resume_from_checkpoint {root}/run/checkpoint-2 holds another architecture "
                                  "(riformer.encoder.stages.3.patch_embeddings.weight is (8, 8, 3, 3) there and "
                                  "(16, 8, 3, 3) here; the checkpoint: depths [1, 1, 1, 1], hidden_sizes "
                                  "[8, 8, 8, 8]")),
    "a magnitude beyond mmax": (cli.train, ["--aa", "rand-m99"],
                                ("--aa 'rand-m99': RandAugment policy 'rand-m99': RandAugment magnitude (m) must be at "
                                 "most mmax 10")),
    "a negative learning rate": (cli.train, ["--learning_rate", "-1"], "--learning_rate -1.0: must not be negative."),
    "a batch of 0": (cli.train, ["--per_device_train_batch_size", "0"],
                     "--per_device_train_batch_size 0: must be positive."),
    "a GFNet to the PoolFormer converter": (cli.convert, ["poolformer", "--model_name_or_path", "{root}/gfnet",
                                                          "--output_dir", "{root}/converted"],
                                            ("--model_name_or_path {root}/gfnet holds a 'gfnet' model, not a "
                                             "PoolFormer")),
    "damaged weights to reparameterize": (cli.reparameterize, ["--model_dir", "{root}/damaged", "--output_dir",
                                                               "{root}/deploy"],
                                          "--model_dir {root}/damaged: its weights cannot be read"),
    "damaged weights to reparameterize, named as export names them": (
        cli.reparameterize, ["--model_name_or_path", "{root}/damaged", "--output_dir", "{root}/deploy"],
        "--model_dir {root}/damaged: its weights cannot be read"),
    "damaged weights to export": (cli.export, ["--model_name_or_path", "{root}/damaged", "--output_dir",
                                               "{root}/onnx_out"],
                                  "--model_name_or_path {root}/damaged: its weights cannot be read"),
    "an ONNX-only folder to reparameterize": (cli.reparameterize, ["--model_dir", "{root}/onnx_only", "--output_dir",
                                                                   "{root}/deploy"],
                                              "--model_dir {root}/onnx_only holds an exported graph"),
    "a truncated JPEG in eval data": (cli.evaluate, ["--model_name_or_path", "{root}/riformer", "--data_dir",
                                                     "{root}/images", "--no_progress"],
                                      "Cannot read the image {root}/images/cat/1.jpg (index 1 of the train set)"),
    "demo without student epochs": (cli.demo, ["--student_epochs", "0"], "--student_epochs 0: must be at least 1."),
    "demo with no threads": (cli.demo, ["--threads", "0"], "--threads 0: must be at least 1."),
    "demo into a file": (cli.demo, ["--output_dir", "{root}/a_file.txt"],
                         "--output_dir {root}/a_file.txt is a file: give a folder"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_one_line_naming_it_and_the_fix_and_nothing_on_disk_changes(case, inputs, capsys):
    command, argv, expected = CASES[case]
    argv = [a.replace("{root}", str(inputs)) for a in argv]
    if command is cli.train:
        argv = ["--output_dir", str(inputs / "run"), *TINY, *QUICK, "--max_steps", "4", *argv]
        if "--resume_from_checkpoint" not in argv:
            argv.append("--overwrite_output_dir")  # aimed at a finished run: a late check would delete its checkpoints
    before = checksums(inputs)
    assert command(argv) == 2, case
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expected.replace("{root}", str(inputs)) in lines[0], lines[0]
    assert checksums(inputs) == before


def test_skip_bad_images_leaves_unreadable_eval_images_out(inputs, capsys, caplog):
    argv = ["--model_name_or_path", str(inputs / "riformer"), "--data_dir", str(inputs / "images"), "--no_progress",
            "--skip_bad_images"]
    assert cli.evaluate(argv) == 0
    assert "5 images (1 unreadable skipped)" in capsys.readouterr().out
    assert f"Skipping the unreadable image {inputs / 'images' / 'cat' / '1.jpg'}" in caplog.text


def test_an_onnx_export_folder_is_evaluated_as_it_is(inputs, tmp_path, capsys):
    from riformer_hf.export.onnx import export_onnx

    export_onnx(str(inputs / "riformer"), tmp_path / "onnx", validate=False)
    argv = ["--model_name_or_path", str(tmp_path / "onnx"), "--data_dir", str(inputs / "images"), "--no_progress",
            "--skip_bad_images"]
    assert cli.evaluate(argv) == 0
    assert "ONNX (model.onnx), ONNX Runtime" in capsys.readouterr().out
