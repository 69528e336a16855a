"""Runs that never lose work: output-folder safety, interrupted checkpoints, a failed push that finishes cleanly,
one-line errors with exit codes, validation before any data is read, and a quiet console."""

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from transformers import PoolFormerConfig, PoolFormerForImageClassification, Trainer

from riformer_hf import cli
from riformer_hf.training import arguments, builders, checks, run

TINY = ["--depths", "1", "1", "1", "1", "--hidden_sizes", "8", "8", "8", "8", "--image_size", "32"]
QUICK = [
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--max_train_samples", "48",
    "--max_eval_samples", "32", "--use_cpu", "--disable_tqdm", "true", "--seed", "3",
    "--min_crop_area", "1.0",  # no random crops: a resumed run then matches an uninterrupted one exactly
]
FOUR_STEPS = ["--max_steps", "4", "--save_steps", "2"]
CONSOLE = Path(sys.executable).with_name("riformer-train")


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def error_line(capsys) -> str:
    """The single `error: …` line on stderr (asserting there is exactly one line and no traceback)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    """A finished 4-step run: export, checkpoint-2, checkpoint-4, metrics. Tests copy it before changing it."""
    folder = tmp_path_factory.mktemp("earlier") / "run"
    assert cli.train(["--output_dir", str(folder), *TINY, *QUICK, *FOUR_STEPS]) == 0
    return folder


@pytest.fixture
def earlier_copy(earlier_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(earlier_run, copy)
    return copy, checksums(copy)


# ---- output folders ----


def test_a_reused_output_dir_is_refused_and_left_as_it_was(earlier_copy, capsys):
    folder, before = earlier_copy
    assert cli.train(["--output_dir", str(folder), *TINY, *QUICK, *FOUR_STEPS]) == 2
    line = error_line(capsys)
    assert f"--output_dir {folder} holds an earlier run (config.json, model.safetensors" in line
    assert "checkpoint-2, checkpoint-4" in line
    assert "--resume_from_checkpoint last" in line and "--overwrite_output_dir" in line
    assert checksums(folder) == before


def test_overwrite_output_dir_starts_afresh(earlier_copy):
    folder, before = earlier_copy
    trainer = run.main(
        ["--output_dir", str(folder), *TINY, *QUICK, "--max_steps", "2", "--save_steps", "2", "--overwrite_output_dir"]
    )
    assert trainer.state.global_step == 2
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-2"]  # the old checkpoint-4 is gone
    assert json.loads((folder / "checkpoint-2" / "trainer_state.json").read_text())["max_steps"] == 2
    assert checksums(folder)["model.safetensors"] != before["model.safetensors"]


def test_overwrite_stopped_before_its_first_save_puts_the_earlier_run_back(earlier_copy, monkeypatch, capsys, caplog):
    """The earlier run is moved aside when training starts, not deleted: Ctrl-C before the new run saved anything
    leaves the folder as it was; a run that saves deletes it at its first checkpoint (nothing left beside)."""
    folder, before = earlier_copy

    def interrupted(self, *args, **kwargs):
        assert not (folder / "checkpoint-4").exists()  # aside while the new run trains
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train", interrupted)
    with caplog.at_level("WARNING"):
        assert cli.train(["--output_dir", str(folder), *TINY, *QUICK, *FOUR_STEPS, "--overwrite_output_dir"]) == 130
    assert "this run stopped before saving anything; the earlier output is back in place" in caplog.text
    assert checksums(folder) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["run"]  # no lock, no folder kept aside
    monkeypatch.undo()
    assert cli.train(["--output_dir", str(folder), *TINY, *QUICK, "--max_steps", "2", "--save_steps", "1",
                      "--overwrite_output_dir"]) == 0
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert sorted(p.name for p in folder.parent.iterdir()) == ["run"]
    capsys.readouterr()


def test_an_output_dir_that_cannot_be_written_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert cli.train(["--output_dir", str(blocker), *TINY, *QUICK]) == 2
    assert error_line(capsys) == f"error: --output_dir {blocker} is a file: give a folder (it is created if missing)."
    assert cli.train(["--output_dir", str(blocker / "run"), *TINY, *QUICK]) == 2
    line = error_line(capsys)
    assert f"--output_dir {blocker / 'run'} is not writable (NotADirectoryError" in line
    assert line.endswith("give a folder you can write to.")
    assert blocker.read_text() == "not a folder"


def test_a_read_only_file_system_is_refused(capsys):
    target = Path("/sys/riformer-run")
    try:
        target.mkdir()
    except OSError:
        pass
    else:
        target.rmdir()
        pytest.skip("/sys is writable here")
    assert cli.train(["--output_dir", str(target), *TINY, *QUICK]) == 2
    assert f"--output_dir {target} is not writable" in error_line(capsys)


def test_too_little_free_disk_is_refused_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 5000, 5000))
    folder = tmp_path / "run"
    assert cli.train(["--output_dir", str(folder), *TINY, *QUICK, *FOUR_STEPS]) == 2
    line = error_line(capsys)
    assert (f"Not enough free disk for one checkpoint in --output_dir {folder}: 5.0 KB free, a checkpoint of this "
            "5,506-parameter model takes about 1.1 MB") in line
    assert "(weights + AdamW states): free some space or give another --output_dir." in line
    assert not list(folder.iterdir())  # nothing trained, nothing saved


def test_an_interrupted_checkpoint_leaves_the_previous_one_and_resume_last_continues(
    earlier_run, tmp_path, monkeypatch, capsys, caplog
):
    """The disk fills up while checkpoint-4 is written: the partial folder is removed, the message says so, and
    `--resume_from_checkpoint last` (skipping a half-written folder left by a killed run) ends where an uninterrupted
    run ends."""
    folder = tmp_path / "run"
    save = Trainer._save_optimizer_and_scheduler
    disk = {"full": False}

    def fill_the_disk_at_the_second_checkpoint(self, output_dir):
        if self.state.global_step == 4:
            (Path(output_dir) / "optimizer.pt").write_bytes(b"PK\x03\x04 half")
            disk["full"] = True
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed")
        return save(self, output_dir)

    real_usage = shutil.disk_usage
    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", fill_the_disk_at_the_second_checkpoint)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=1000) if disk["full"]
                        else real_usage(p))
    assert cli.train(["--output_dir", str(folder), *TINY, *QUICK, *FOUR_STEPS]) == 2
    line = error_line(capsys)
    assert line.startswith(f"error: Disk full while writing checkpoint-4 in {folder} (1,000 bytes free")
    assert "the partial checkpoint-4 was removed and checkpoint-2 is complete" in line
    assert line.endswith("free some space, then run again with --resume_from_checkpoint last")
    assert sorted(p.name for p in folder.glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (folder / "model.safetensors").exists()
    monkeypatch.undo()

    kept, uninterrupted = checksums(folder / "checkpoint-2"), checksums(earlier_run / "checkpoint-2")
    for name in ("trainer_state.json", "training_args.bin"):  # they record the output folder and timings
        assert kept.pop(name) and uninterrupted.pop(name)
    assert kept == uninterrupted  # the previous checkpoint is whole: weights, optimizer, scheduler, RNG states
    killed = folder / "checkpoint-3"  # what a killed save leaves: weights, no trainer_state.json
    killed.mkdir()
    shutil.copy(folder / "checkpoint-2" / "model.safetensors", killed)
    with caplog.at_level("WARNING"):
        resumed = run.main(
            ["--output_dir", str(folder), *TINY, *QUICK, *FOUR_STEPS, "--resume_from_checkpoint", "last"]
        )
    assert ("Skipping checkpoint-3, incomplete: it lacks trainer_state.json (the trainer state, written last), "
            "optimizer.pt (the optimizer state), scheduler.pt (the learning-rate schedule), rng_state.pth (the random "
            "state); resuming from an earlier one.") in caplog.text
    assert resumed.state.global_step == 4
    final, reference = load_file(folder / "model.safetensors"), load_file(earlier_run / "model.safetensors")
    assert final.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(final[name], reference[name], rtol=0, atol=1e-6, msg=name)


def test_resume_needs_a_complete_checkpoint(tmp_path, capsys):
    empty = tmp_path / "run"
    (empty / "checkpoint-5").mkdir(parents=True)
    assert cli.train(["--output_dir", str(empty), *TINY, *QUICK, "--resume_from_checkpoint", "last"]) == 2
    assert error_line(capsys) == (
        f"error: --resume_from_checkpoint last: no complete checkpoint-N folder in {empty} (1 incomplete): drop the "
        "flag to start afresh."
    )
    assert cli.train(["--output_dir", str(empty), *TINY, *QUICK, "--resume_from_checkpoint",
                      str(empty / "checkpoint-5")]) == 2
    assert error_line(capsys) == (
        f"error: --resume_from_checkpoint {empty / 'checkpoint-5'} is not a complete checkpoint: it lacks "
        "trainer_state.json (the trainer state, written last), model.safetensors (the weights), optimizer.pt (the "
        "optimizer state), scheduler.pt (the learning-rate schedule), rng_state.pth (the random state). Give a whole "
        "`checkpoint-N` folder, or `last`."
    )


# ---- failures that finish cleanly ----



def retry_line(stderr: str) -> str:
    commands = [line.strip() for line in stderr.splitlines() if " -m riformer_hf.cli push " in line]
    assert len(commands) == 1, stderr
    return commands[0]


def test_hub_down_at_the_final_push_still_evaluates_saves_everything_and_exits_3(hub, tmp_path, capsys):
    server, scratch = hub
    folder = tmp_path / "pushed"
    server.stop()
    try:
        code = cli.train(["--output_dir", str(folder), *TINY, *QUICK, "--max_steps", "2", "--save_strategy", "no",
                          "--push_to_hub", "--hub_model_id", "test-user/down"])
    finally:
        server.start()
    stderr = capsys.readouterr().err
    assert code == 3 and "Traceback" not in stderr
    assert f"Nothing local is lost: {folder} is complete" in stderr and "Connection refused" in stderr
    for name in ("eval_results.json", "train_results.json", "all_results.json", "trainer_state.json",
                 "model.safetensors", "config.json", "preprocessor_config.json", "README.md"):
        assert (folder / name).is_file(), name
    accuracy = json.loads((folder / "eval_results.json").read_text())["eval_accuracy"]
    assert json.loads((folder / "all_results.json").read_text())["eval_accuracy"] == accuracy
    card = ModelCard.load(folder / "README.md").data
    assert {r.metric_name: r.metric_value for r in card.eval_results}["accuracy"] == pytest.approx(accuracy)
    assert not list(scratch.iterdir())  # no temporary export left behind

    command = retry_line(stderr)
    assert f"--model_dir {folder}" in command and f"HF_ENDPOINT={server.url}" in command
    done = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert server.files("test-user/down")["model.safetensors"] == (folder / "model.safetensors").read_bytes()


def test_riformer_push_failure_leaves_no_temporary_export_and_retries_from_the_folder(earlier_copy, hub, capsys):
    server, scratch = hub
    folder, before = earlier_copy
    checkpoint = folder / "checkpoint-4"
    server.fail_with(503)
    try:
        code = cli.push(["--model_dir", str(checkpoint), "--repo_id", "test-user/retry", "--push_training_weights"])
    finally:
        server.fail_with(None)
    stderr = capsys.readouterr().err
    assert code == 3 and "Traceback" not in stderr and "503" in stderr
    assert not list(scratch.iterdir())
    words = shlex.split(retry_line(stderr))
    assert words[words.index("--model_dir") + 1] == str(checkpoint) and "--push_training_weights" in words
    assert cli.push(words[5:]) == 0
    files = server.files("test-user/retry")
    assert "training/model.safetensors" in files and "model.safetensors" in files
    assert checksums(folder) == before


# ---- one-line errors and validation before any data is read ----


@pytest.fixture
def no_data(monkeypatch):
    """Reading data fails the test: validation must come first."""

    def read(*args, **kwargs):
        raise AssertionError("data was read before the arguments were checked")

    monkeypatch.setattr(builders, "load_image_dataset", read)


def poolformer_folder(path: Path) -> Path:
    PoolFormerForImageClassification(PoolFormerConfig(depths=(1, 1, 1, 1), hidden_sizes=(8, 8, 8, 8),
                                                       num_labels=10)).save_pretrained(path)
    return path


def deploy_config(path: Path) -> Path:
    from riformer_hf import RIFormerConfig

    RIFormerConfig(depths=(1, 1, 1, 1), hidden_sizes=(8, 8, 8, 8), reparameterized=True).save_pretrained(path)
    return path


BAD_TRAINING_ARGUMENTS = {
    "hflip": (["--hflip", "2"], lambda tmp: "error: --hflip 2.0: a probability must lie in [0, 1]."),
    "min_crop_area": (["--min_crop_area", "2"],
                      lambda tmp: "error: --min_crop_area 2.0: an area fraction must lie in (0, 1]; 1 = no random "
                      "crop."),
    "image_size": (["--image_size", "0"], lambda tmp: "error: --image_size 0: must be positive."),
    "max_steps": (["--max_steps", "0"], lambda tmp: "error: --max_steps 0: trains nothing; give a positive count "
                  "(-1 = use --num_train_epochs), or --do_eval alone to evaluate only."),
    "teacher path": (["--teacher_model", "{tmp}/missing/teacher"], lambda tmp: (
        f"error: --teacher_model {tmp}/missing/teacher: no such file or folder, and not a Hub repo id: give a folder "
        "with config.json (check the path) or a Hub id such as `namespace/name`.")),
    "hub id": (["--push_to_hub", "--hub_model_id", "bad repo id!!"], lambda tmp: (
        "error: --hub_model_id 'bad repo id!!' is not a valid Hub repo id (Repo id must use alphanumeric chars")),
    "imitation for a poolformer": (["--model_type", "poolformer", "--lambda_mixer", "0.001"], lambda tmp: (
        "error: --lambda_mixer 0.001: module imitation and teacher initialisation train a RIFormer student, but the "
        "model to train (--model_type poolformer) is a 'poolformer' model: drop them")),
    "deploy config": (["--config_name", "{tmp}/deploy"], lambda tmp: (
        f"error: --config_name {tmp}/deploy is a re-parameterised (deploy) RIFormer, which has no token mixer to train "
        "or imitate")),
    "imitation teacher": (["--imitation_teacher", "{tmp}/riformer"], lambda tmp: (
        f"error: --imitation_teacher {tmp}/riformer is a 'riformer' model; module imitation needs a PoolFormer "
        "isomorphic to the student (pass other classifiers as --teacher_model).")),
    "teacher in the run it replaces": (["--teacher_model", "{tmp}/run/checkpoint-4"], lambda tmp: (
        f"error: --output_dir {tmp}/run holds what this command reads (--teacher_model {tmp}/run/checkpoint-4): "
        "replacing the folder would delete it: give another --output_dir.")),
    "invalid config": (["--config_name", "{tmp}/invalid"], lambda tmp: (
        f"error: --config_name {tmp}/invalid: its config is invalid (Validation error for field 'depths': TypeError: "
        "Field 'depths' with value 'abc' doesn't match")),
    "eval without a model": (["--do_eval"], lambda tmp: (
        "error: --do_eval without --do_train evaluates --model_name_or_path: give the model to evaluate.")),
}


@pytest.mark.parametrize("case", list(BAD_TRAINING_ARGUMENTS))
def test_bad_training_arguments_get_one_line_before_any_data_is_read(case, earlier_copy, tmp_path, no_data, capsys):
    """Aimed at the earlier run with --overwrite_output_dir: a check that came late would delete its checkpoints."""
    folder, before = earlier_copy
    poolformer_folder(tmp_path / "pool")
    deploy_config(tmp_path / "deploy")
    (tmp_path / "invalid").mkdir()
    (tmp_path / "invalid" / "config.json").write_text(json.dumps({"model_type": "riformer", "depths": "abc"}))
    shutil.copytree(folder, tmp_path / "riformer", ignore=shutil.ignore_patterns("checkpoint-*"))
    flags, expected = BAD_TRAINING_ARGUMENTS[case]
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    assert cli.train(["--output_dir", str(folder), "--overwrite_output_dir", *TINY, *QUICK, *flags]) == 2
    assert error_line(capsys).startswith(expected(tmp_path))
    assert checksums(folder) == before


def test_debug_shows_the_traceback_and_internal_failures_keep_theirs(tmp_path, monkeypatch, capsys):
    assert cli.train(["--output_dir", str(tmp_path / "run"), "--hflip", "2", "--debug"]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback (most recent call last)" in stderr and stderr.rstrip().endswith("must lie in [0, 1].")

    def bug(*args, **kwargs):
        raise ValueError("a bug, not the user's")  # a ValueError from inside the package or a library: still a bug

    monkeypatch.setattr(run, "build_trainer", bug)
    assert cli.train(["--output_dir", str(tmp_path / "run"), *TINY, *QUICK]) == 1
    stderr = capsys.readouterr().err
    assert "Traceback (most recent call last)" in stderr and "ValueError: a bug, not the user's" in stderr
    assert stderr.rstrip().endswith("please report it with the traceback above.")


def test_a_one_class_image_folder_names_the_real_cause(tmp_path, capsys):
    folder = tmp_path / "images" / "cat"
    folder.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(folder / f"{i}.png")
    assert cli.train(["--output_dir", str(tmp_path / "run"), "--data_dir", str(tmp_path / "images"), *TINY,
                      *QUICK]) == 2
    assert error_line(capsys) == (
        f"error: --data_dir {tmp_path / 'images'} has 1 class folder(s) (cat); an image folder needs one sub-folder "
        "of images per class, at least two (optionally under train/ and test/)."
    )
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").iterdir())
    (tmp_path / "images" / "dog").mkdir()  # a second class folder, empty
    assert cli.train(["--output_dir", str(tmp_path / "run"), "--data_dir", str(tmp_path / "images"), *TINY,
                      *QUICK]) == 2
    assert error_line(capsys).startswith(
        f"error: --data_dir {tmp_path / 'images'} has 2 class folder(s) (cat, dog) (dog holds no images); ")


def test_unreadable_checkpoints_and_a_file_as_output_dir_in_the_converter(tmp_path, capsys):
    text_pth, truncated, text_safetensors = tmp_path / "text.pth", tmp_path / "cut.pth", tmp_path / "text.safetensors"
    text_pth.write_text("these are not weights")
    torch.save({"weight": torch.zeros(256)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:700])
    text_safetensors.write_text("these are not weights either")
    output = tmp_path / "converted"
    cases = {
        text_pth: f"error: {text_pth} is not a PyTorch checkpoint (21 bytes, starting with b'these are not we'): "
                  "check that --checkpoint names the weights file (.pth from torch.save, or .safetensors).",
        truncated: f"error: {truncated} is not readable as a PyTorch checkpoint (700 bytes; PytorchStreamReader "
                   "failed reading zip archive: failed finding central directory): the file is damaged, most often "
                   "truncated by an interrupted download or copy: download it again.",
        text_safetensors: f"error: {text_safetensors} is not a safetensors file (28 bytes, starting with b'these are "
                          "not we'): check that --checkpoint names the weights file (.pth from torch.save, or "
                          ".safetensors).",
    }
    for checkpoint, expected in cases.items():
        for source in ("mmpretrain", "gfnet"):
            assert cli.convert([source, "--checkpoint", str(checkpoint), "--output_dir", str(output)]) == 2
            assert error_line(capsys) == expected
    assert not output.exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    assert cli.convert(["gfnet", "--checkpoint", str(text_pth), "--output_dir", str(blocker)]) == 2
    assert error_line(capsys) == f"error: --output_dir {blocker} is a file: give a folder (it is created if missing)."
    assert blocker.read_text() == "keep me"


# ---- evaluation only, --threads, --help ----


def test_do_eval_alone_evaluates_the_deploy_export(earlier_run, tmp_path):
    threads = torch.get_num_threads()
    folder = tmp_path / "eval"
    try:
        trainer = run.main(["--output_dir", str(folder), "--model_name_or_path", str(earlier_run),
                                         "--do_eval", "--threads", "2", *QUICK])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert trainer.model.is_reparameterized and trainer.state.global_step == 0
    evaluated = json.loads((folder / "eval_results.json").read_text())
    trained = json.loads((earlier_run / "eval_results.json").read_text())
    assert evaluated["eval_accuracy"] == trained["eval_accuracy"]
    assert evaluated["eval_loss"] == pytest.approx(trained["eval_loss"], abs=1e-5)  # the fold is exact
    assert sorted(p.name for p in folder.iterdir()) == ["all_results.json", "eval_results.json"]


def test_help_lists_the_riformer_options_first(capsys):
    with pytest.raises(SystemExit) as done:
        cli.train(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    sections = ["RIFormer's recipe, then transformers' TrainingArguments:", "student and teachers:",
                "data and augmentation:", "output folder and machine:"]
    positions = [text.index(f"\n{s}\n") for s in sections]
    assert positions == sorted(positions)
    assert text.index("--lambda_mixer") < text.index("--learning_rate") < text.index("--teacher_model") < text.index(
        "--hflip") < text.index("--overwrite_output_dir") < text.index("--threads")
    assert "--recipe_overrides" not in text  # filled from the flags given, not a flag to give
    assert text.startswith("usage: riformer-train [--FLAG VALUE ...] | riformer-train CONFIG.json\n")


# ---- the console script, as a user runs it ----


def console(args, cwd) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS")}  # a user's defaults
    return subprocess.run([str(CONSOLE), *args], capture_output=True, text=True, cwd=cwd,
                          env={**environment, "OMP_NUM_THREADS": "1"}, check=False)


def test_console_script_is_quiet_and_errors_are_one_line(tmp_path):
    done = console(["--output_dir", "run", *TINY, *QUICK, "--max_steps", "2", "--save_steps", "1", "--threads", "1"],
                   tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""  # no pin_memory warning, no "Writing model shards", no load reports
    assert "eval_accuracy" in done.stdout and (tmp_path / "run" / "checkpoint-2" / "trainer_state.json").is_file()
    again = console(["--output_dir", "run", *TINY, *QUICK, "--hflip", "2"], tmp_path)
    assert again.returncode == 2
    assert again.stderr.splitlines() == ["error: --hflip 2.0: a probability must lie in [0, 1]."]


def test_riformer_push_and_bench_user_errors_are_one_line(earlier_copy, hub, capsys):
    scratch = hub[1]
    folder, before = earlier_copy
    assert cli.push(["--model_dir", str(folder), "--repo_id", "bad repo id!!"]) == 2
    assert error_line(capsys).startswith(
        "error: 'bad repo id!!' is not a valid Hub repo id (Repo id must use alphanumeric chars")
    assert cli.push(["--model_dir", str(folder / "missing"), "--repo_id", "test-user/x"]) == 2
    assert error_line(capsys).startswith(f"error: {folder / 'missing'} has no config.json")
    assert not list(scratch.iterdir()) and checksums(folder) == before
    assert cli.bench(["--presets", "s13"]) == 2
    assert error_line(capsys) == "error: Unknown preset(s) ['s13']; choose from s12, s24, s36, m36, m48."


def test_only_the_local_main_process_probes_the_output_folder(tmp_path, monkeypatch):
    """Each rank's probe creates and removes the missing folders; two at once raced (one removed what the other
    was writing into). The other ranks only read."""
    from types import SimpleNamespace

    target = tmp_path / "new" / "run"
    probed = []
    original = tempfile.TemporaryFile
    monkeypatch.setattr(tempfile, "TemporaryFile", lambda *a, **k: probed.append(k["dir"]) or original(*a, **k))
    for rank, expected in ((1, []), (0, [target])):
        probed.clear()
        args = SimpleNamespace(output_dir=str(target), resume_from_checkpoint=None, local_process_index=rank,
                               do_train=True, should_save=rank == 0,
                               main_process_first=lambda **kwargs: contextlib.nullcontext())
        lock = checks.check_output_dir(args, arguments.RunArguments())
        assert lock.held == (rank == 0) and lock.joined == (rank != 0)  # the saving process takes it, others join
        lock.release()
        assert probed == expected
        assert not (tmp_path / "new").exists()  # the probe (and the released lock) leave a missing folder missing


def test_an_exception_inside_pillow_during_training_is_a_bug_not_a_user_error(tmp_path, monkeypatch, capsys):
    """Pillow 13 refusing an argument (as it refused posterize's 0 bits) is our bug: exit 1 with the traceback and a
    line asking to report it, not a one-line `error:` that sends the user looking for a bad flag."""

    def refuse(self, method):
        raise ValueError("bits must be between or equal to 1 and 8")

    monkeypatch.setattr(Image.Image, "transpose", refuse)  # the flip of every training image
    code = cli.train(["--output_dir", str(tmp_path / "run"), *TINY, *QUICK, "--hflip", "1", "--max_steps", "1",
                      "--save_strategy", "no"])
    stderr = capsys.readouterr().err
    assert code == 1
    assert "Traceback (most recent call last)" in stderr and "ValueError: bits must be between" in stderr
    assert "PIL" not in stderr.splitlines()[-1] and stderr.rstrip().endswith("with the traceback above.")
    assert not stderr.startswith("error:")
