"""Your own dataset: teachers fine-tuned (or built) on your labels by riformer-train, a RIFormer initialised from a
PoolFormer of another label space, RIFormer-only options refused for other models, and the frictions met on the way
(split names, INT8's held-out images, the revision pushed, cards that are true, Ctrl-C)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import PoolFormerForImageClassification

from riformer_hf import cli
from riformer_hf.convert.poolformer import poolformer_key_to_riformer
from riformer_hf.training import builders
from riformer_hf.training.arguments import parse_args
from riformer_hf.training.builders import build_trainer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from tiny_inputs import make_gfnet_checkpoint, make_images, make_poolformer

SMALL = {"depths": (1, 1, 2, 1), "widths": (8, 16, 16, 24), "image_size": 32, "seed": 0}
QUICK = ["--per_device_train_batch_size", "8", "--max_steps", "2", "--save_strategy", "no", "--use_cpu",
         "--disable_tqdm", "true", "--seed", "0"]
SHAPES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A 3-class image folder (train/, validation/) and a PoolFormer and a GFNet each "published" with 5 other
    classes (the GFNet converted from its official checkpoint layout)."""
    root = tmp_path_factory.mktemp("published")
    make_images(root / "shapes", train=8, validation=4, size=36, seed=0)
    make_poolformer(root / "poolformer", classes=5, **SMALL)
    make_gfnet_checkpoint(root / "gfnet.pth", classes=5, **SMALL)
    assert cli.convert(["gfnet", "--checkpoint", str(root / "gfnet.pth"), "--output_dir", str(root / "gfnet")]) == 0
    return root



def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# ---- teachers in your label space ----


@pytest.mark.parametrize("teacher", ["poolformer", "gfnet"])
def test_a_published_classifier_is_fine_tuned_into_the_dataset_labels(teacher, published, tmp_path, caplog):
    out = tmp_path / teacher
    trainer = cli.train(["--model_name_or_path", str(published / teacher), "--data_dir", str(published / "shapes"),
                         "--output_dir", str(out), *QUICK])
    assert trainer == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == teacher and config["id2label"] == {"0": "circle", "1": "square", "2": "triangle"}
    assert "re-initialised for the dataset's classes: classifier.bias [5] → [3]" in caplog.text
    assert f"classifier.weight [5, {SMALL['widths'][-1]}] → [3, {SMALL['widths'][-1]}]" in caplog.text
    # the model itself (its weights under their own names, nothing folded), its image processor, a card that says so
    assert load_file(out / "model.safetensors").keys() == load_file(published / teacher / "model.safetensors").keys()
    assert (out / "preprocessor_config.json").is_file()
    card = " ".join((out / "README.md").read_text().split())
    assert "**as trained**: there is no re-parameterisation" in card
    assert "fine-tuned from " + teacher in card
    if teacher == "gfnet":  # not in transformers: the card says what loading it needs
        assert (out / "modeling_gfnet.py").is_file()
        assert "import riformer_hf # registers GFNet-H with the Auto classes; without it, pass trust_remote" in card
    else:
        assert "no `trust_remote_code` is needed" in card


@pytest.mark.parametrize("flags,model_type", [
    (["--model_type", "poolformer", "--model_preset", "s12"], "poolformer"),
    (["--model_type", "gfnet", "--model_preset", "gfnet-h-b"], "gfnet"),
])
def test_a_teacher_is_built_from_scratch_with_a_preset(flags, model_type, published, tmp_path):
    trainer = build_trainer(*parse_args([
        *flags, "--depths", "1", "1", "1", "1", "--hidden_sizes", "8", "8", "8", "16", "--image_size", "32",
        "--data_dir", str(published / "shapes"), "--output_dir", str(tmp_path / "run"), *QUICK])[:3])
    assert trainer.model.config.model_type == model_type and trainer.model.config.num_labels == 3
    assert tuple(trainer.model.config.depths) == (1, 1, 1, 1)
    expected_crop = 0.875 if model_type == "gfnet" else 0.9  # GFNet: DeiT's evaluation crop; PoolFormer S: 0.9
    assert trainer.processing_class.crop_pct == expected_crop
    if model_type == "gfnet":
        assert trainer.model.config.image_size == 32  # the filters are made for the training resolution


def test_a_teacher_learns_from_a_bigger_teacher_with_logit_distillation(published, tmp_path):
    """The GFNet, fine-tuned on the labels, teaches a PoolFormer with soft KD; the recipe's imitation is dropped."""
    gfnet = tmp_path / "gfnet"
    assert cli.train(["--model_name_or_path", str(published / "gfnet"), "--data_dir", str(published / "shapes"),
                      "--output_dir", str(gfnet), *QUICK]) == 0
    trainer = build_trainer(*parse_args([
        "--model_name_or_path", str(published / "poolformer"), "--teacher_model", str(gfnet),
        "--recipe", "riformer-s12", "--num_train_epochs", "1", "--max_steps", "2", "--learning_rate", "1e-3",
        "--data_dir", str(published / "shapes"), "--output_dir", str(tmp_path / "run"), "--logging_steps", "1",
        *QUICK[:2], *QUICK[4:]])[:3])
    assert trainer.args.imitation_weights == {"hidden": 0.0, "mixer": 0.0, "relation": 0.0}
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert "loss_kd" in logs[-1] and "loss_hidden" not in logs[-1]
    trainer.save_model()
    card = ModelCard.load(tmp_path / "run" / "README.md")
    (entry,) = card.data.teachers
    assert entry["role"] == "logit teacher" and entry["model_type"] == "gfnet" and entry["model"] == "gfnet"
    assert 0.0 <= entry["accuracy"] <= 1.0  # the accuracy the teacher recorded about itself


# ---- the student: initialised from a PoolFormer of another label space ----


def test_init_from_teacher_across_label_spaces_copies_the_backbone_and_trains(published, tmp_path, caplog):
    pool = PoolFormerForImageClassification.from_pretrained(published / "poolformer")
    trainer = build_trainer(*parse_args([
        "--imitation_teacher", str(published / "poolformer"), "--init_from_teacher", "--lambda_hidden", "1e-4",
        "--lambda_mixer", "1e-3", "--lambda_relation", "1.0", "--data_dir", str(published / "shapes"),
        "--output_dir", str(tmp_path / "run"), "--drop_path_rate", "0.0", "--logging_steps", "1", *QUICK])[:3])
    student = trainer.model
    assert student.config.id2label == dict(enumerate(SHAPES))
    assert "The PoolFormer predicts 5 classes, the student 3: the student's backbone is the PoolFormer's" in caplog.text
    state = student.state_dict()
    copied = 0
    for key, value in pool.state_dict().items():
        ours = poolformer_key_to_riformer(key)
        if ours.startswith("classifier."):
            assert state[ours].shape[0] == 3  # a new head for the dataset's classes
            continue
        torch.testing.assert_close(state[ours], value, rtol=0, atol=0, msg=ours)  # step 0: the PoolFormer's tensors
        copied += 1
    assert copied == len(pool.state_dict()) - 2
    assert trainer.imitation_teacher.config.num_labels == 5  # imitation compares features: the teacher keeps its head
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert {"loss_hidden", "loss_mixer", "loss_relation"} <= set(logs[-1])
    assert not torch.equal(student.riformer.encoder.stages[0].patch_embeddings.weight,
                           pool.poolformer.encoder.patch_embeddings[0].projection.weight)  # and it trained


def test_help_says_when_init_from_teacher_is_the_right_choice(capsys):
    with pytest.raises(SystemExit):
        cli.train(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "The right choice whenever a PoolFormer of the size you want exists" in text
    assert "--model_type {riformer,poolformer,gfnet}" in text and "any image classifier" in text


# ---- bad input: one line, before any data is read ----


@pytest.fixture
def no_data(monkeypatch):
    def read(*args, **kwargs):
        raise AssertionError("data was read before the arguments were checked")

    monkeypatch.setattr(builders, "load_image_dataset", read)


BAD = {
    "imitation for a PoolFormer student": (
        ["--model_name_or_path", "{pub}/poolformer", "--init_from_teacher", "--lambda_mixer", "0.001"],
        ("error: --lambda_mixer 0.001, --init_from_teacher: module imitation and teacher initialisation train a "
        "RIFormer student, but the model to train ({pub}/poolformer) is a 'poolformer' model: drop them (logit "
        "distillation, --teacher_model with --distillation_type, works for any model).")),
    "a logit teacher in another label space": (
        ["--teacher_model", "{pub}/poolformer", "--distillation_type", "soft"],
        ("error: --teacher_model {pub}/poolformer predicts 5 classes (published_0, published_1, published_2, "
        "published_3, published_4), the dataset 3 (circle, square, triangle): logit distillation compares predictions "
        "class by class. Fine-tune the teacher on this data first (riformer-train --model_name_or_path "
        "{pub}/poolformer --data_dir ...), or train without it (--distillation_type none).")),
    "a GFNet as imitation teacher": (
        ["--imitation_teacher", "{pub}/gfnet", "--lambda_hidden", "1e-4"],
        ("error: --imitation_teacher {pub}/gfnet is a 'gfnet' model; module imitation needs a PoolFormer isomorphic to "
        "the student (pass other classifiers as --teacher_model).")),
    "a preset of another family": (
        ["--model_type", "gfnet", "--model_preset", "s12"],
        "error: --model_preset s12 is not a gfnet preset: choose one of gfnet-h-ti, gfnet-h-s, gfnet-h-b."),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_before_any_data_is_read(case, published, tmp_path, no_data, capsys):
    flags, expected = BAD[case]
    flags = [f.replace("{pub}", str(published)) for f in flags]
    code = cli.train([*flags, "--data_dir", str(published / "shapes"), "--output_dir", str(tmp_path / "run"), *QUICK])
    assert code == 2
    assert error_line(capsys) == expected.replace("{pub}", str(published))
    assert not (tmp_path / "run").exists()


# ---- frictions ----


@pytest.fixture(scope="module")
def deploy_student(published, tmp_path_factory):
    """A deploy-form RIFormer export in the shapes' labels (2 steps from the PoolFormer)."""
    out = tmp_path_factory.mktemp("student") / "student"
    assert cli.train(["--imitation_teacher", str(published / "poolformer"), "--init_from_teacher",
                      "--lambda_mixer", "1e-3", "--data_dir", str(published / "shapes"), "--output_dir", str(out),
                      *QUICK]) == 0
    return out


def test_eval_names_the_split_folder_it_read(published, deploy_student, tmp_path, capsys):
    shapes = published / "shapes"
    shutil.copytree(shapes / "validation", tmp_path / "images" / "val")  # ImageNet's name for it
    shutil.copytree(shapes / "train", tmp_path / "images" / "train")
    for data, split, expected in (
        (tmp_path / "images", None, f"image folder {tmp_path / 'images'}, folder val/, 12 images"),
        (tmp_path / "images", "val", f"image folder {tmp_path / 'images'}, folder val/, 12 images"),
        (shapes / "validation", None, f"image folder {shapes / 'validation'}, all images, 12 images"),
    ):
        argv = ["--model_name_or_path", str(deploy_student), "--data_dir", str(data), "--no_progress"]
        assert cli.evaluate(argv + (["--split", split] if split else [])) == 0
        first = capsys.readouterr().out.splitlines()[0]
        assert first.endswith(expected + ", 3 classes") and "split train" not in first, first


def test_int8_compares_on_held_out_images_or_says_they_are_training_images(published, deploy_student, tmp_path):
    from riformer_hf.export.onnx import export_onnx, format_export_report

    shapes = published / "shapes"
    flat = export_onnx(deploy_student, tmp_path / "a", int8=True, calibration_data=shapes / "train",
                       calibration_samples=12)
    report = format_export_report(flat)
    assert flat.int8_comparison["training_images"] and flat.int8_comparison["images"] == 12
    assert "12 training images (image folder" in report and "not held out (--eval_data or --eval_split" in report
    named = export_onnx(deploy_student, tmp_path / "b", int8=True, calibration_data=shapes / "train",
                        calibration_samples=12, eval_data=shapes, eval_split="validation")
    assert not named.int8_comparison["training_images"]
    assert f"12 held-out images (image folder {shapes}, folder validation/)" in format_export_report(named)
    default = export_onnx(deploy_student, tmp_path / "c", int8=True, calibration_data=shapes, calibration_samples=12)
    assert default.int8_comparison["held_out_from"] == f"image folder {shapes}, folder validation/"


def test_riformer_push_names_the_revision_and_pushes_a_teacher_as_it_is(published, hub, tmp_path, capsys):
    server, _ = hub
    teacher = published / "poolformer"
    assert cli.push(["--model_dir", str(teacher), "--repo_id", "test-user/teacher", "--revision", "v1"]) == 0
    out = capsys.readouterr().out
    assert "revision v1 (commit " in out and "test-user/teacher" in out
    files = server.files("test-user/teacher", "v1")
    assert files["model.safetensors"] == (teacher / "model.safetensors").read_bytes()
    assert b"no re-parameterisation" in files["README.md"] and "README.md" not in os.listdir(teacher)


def test_the_card_is_true_about_trust_remote_code(deploy_student, tmp_path):
    """Installed but not imported, riformer_hf does not make the Auto classes know RIFormer; imported, it does."""
    card = " ".join((deploy_student / "README.md").read_text().split())
    assert "`trust_remote_code=True` is needed unless `riformer_hf` is imported first" in card
    assert "Having the package installed without importing it is not enough." in card
    script = f"""
from transformers import AutoModelForImageClassification
try:
    AutoModelForImageClassification.from_pretrained({str(deploy_student)!r})
except ValueError as error:
    assert "trust_remote_code" in str(error) or "riformer" in str(error), error
else:
    raise SystemExit("loaded without the package imported")
import riformer_hf
model = AutoModelForImageClassification.from_pretrained({str(deploy_student)!r})
assert type(model).__module__.startswith("riformer_hf."), type(model).__module__
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


def test_ctrl_c_names_the_checkpoint_and_the_command_that_resumes(published, tmp_path):
    """A real SIGINT to the process group (what a terminal's Ctrl-C sends, data-loader workers included). The worker
    is persistent: a SIGINT that lands while the loader forks a new worker (every epoch of this tiny folder) is
    swallowed by Python in logging's after-fork hook ("Exception ignored in: _releaseLock") and training goes on."""
    out = tmp_path / "run"
    command = [str(Path(sys.executable).with_name("riformer-train")), "--output_dir", str(out), "--data_dir",
               str(published / "shapes"), "--depths", "1", "1", "1", "1", "--hidden_sizes", "8", "8", "8", "8",
               "--image_size", "32", "--max_steps", "100000", "--save_steps", "2", "--per_device_train_batch_size",
               "4", "--dataloader_num_workers", "1", "--dataloader_persistent_workers", "true", "--disable_tqdm",
               "true"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                           start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while not (out / "checkpoint-2" / "trainer_state.json").is_file() and run.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 4 minutes"
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGINT)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr[-3000:]
    (line,) = [line for line in stderr.splitlines() if line.startswith("error: ")]
    on_path = shutil.which("riformer-train")
    program = "riformer-train" if on_path and os.path.samefile(on_path, command[0]) else command[0]
    assert line.startswith("error: interrupted. ") and f" is complete; resume with: {program} " in line  # runnable
    assert line.endswith("--disable_tqdm true --resume_from_checkpoint last")
    assert "Downloading" not in stdout + stderr  # a local folder is read, not downloaded


def test_the_resume_command_calls_riformer_train_as_the_user_did(tmp_path, monkeypatch):
    from riformer_hf.training.interrupt import train_program

    script = tmp_path / "venv" / "bin" / "riformer-train"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(script), "--output_dir", "run"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert train_program() == str(script)  # not on PATH: the bare name would not run it
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin")
    assert train_program() == "riformer-train"
    monkeypatch.setattr(sys, "argv", ["/somewhere/riformer_hf/cli.py", "train"])  # python -m riformer_hf.cli train
    assert train_program() == "riformer-train"
    monkeypatch.setattr(sys, "argv", ["riformer-train"])  # a launcher that passes the bare name: no file to compare
    assert train_program() == "riformer-train"
