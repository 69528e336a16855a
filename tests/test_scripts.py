"""Every script under scripts/ runs end to end in its tiny mode (TINY=1: generated images, small random stand-ins for
the downloads, this suite's local Hub), and the README's "Your own dataset" commands are the ones
scripts/own_dataset.sh runs. The scripts start together (they are single-threaded; two cores run two at once) and
each test waits for its own."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import FakeHub
from huggingface_hub import ModelCard
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
TIMEOUT = 900
# script → the extra environment of its run (repos of their own on the one Hub)
RUNS = {
    "own_dataset.sh": {},
    "imagenet.sh": {"REPO_ID": "test-user/riformer-tiny-in1k"},
    "slurm.sbatch": {"REPO_ID": "test-user/riformer-tiny-in1k-slurm"},
    "publish_checkpoints.sh": {},
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start every script in its tiny mode against one local Hub; yields {script: (process, work folder, log)}."""
    hub = FakeHub().start()
    root = tmp_path_factory.mktemp("scripts")
    started = {}
    for name, extra in RUNS.items():
        work, log = root / name.split(".")[0], root / f"{name}.log"
        environment = {
            **{k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "PYTHONPATH")},
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "TINY": "1",
            "TINY_WORK": str(work), "HF_ENDPOINT": hub.url, "HF_HOME": str(root / f"hf-{name}"),
            "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "OMP_NUM_THREADS": "1", **extra,
        }
        with log.open("w") as output:
            process = subprocess.Popen(["bash", str(SCRIPTS / name)], stdout=output, stderr=subprocess.STDOUT,
                                       cwd=root, env=environment)
        started[name] = (process, work, log)
    yield hub, started
    for process, _, _ in started.values():
        if process.poll() is None:
            process.kill()
    hub.stop()


def finished(runs, name) -> tuple[FakeHub, Path, str]:
    hub, started = runs
    process, work, log = started[name]
    try:
        process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"{name} did not finish within {TIMEOUT} s:\n{log.read_text()[-4000:]}")
    output = log.read_text()
    assert process.returncode == 0, output[-6000:]
    assert "Traceback" not in output and "Downloading" not in output  # local folders are read, not downloaded
    return hub, work, output


def test_every_script_has_a_tiny_run():
    scripts = {p.name for p in SCRIPTS.iterdir() if p.suffix in (".sh", ".sbatch")}
    assert scripts == set(RUNS)
    for name in scripts:
        text = (SCRIPTS / name).read_text()
        assert text.startswith("#!/usr/bin/env bash") and 'TINY=${TINY:-0}' in text, name
        assert os.access(SCRIPTS / name, os.X_OK), f"{name} is not executable"


def accuracy(folder: Path) -> float:
    return json.loads((folder / "eval_results.json").read_text())["eval_accuracy"]


def test_own_dataset_teachers_learn_the_labels_and_the_student_is_a_deploy_riformer(runs):
    hub, work, output = finished(runs, "own_dataset.sh")
    shapes = {"0": "circle", "1": "square", "2": "triangle"}
    for teacher, model_type, width in (("teacher-poolformer", "poolformer", 48), ("teacher-gfnet", "gfnet", 48)):
        config = json.loads((work / teacher / "config.json").read_text())
        assert config["model_type"] == model_type and config["id2label"] == shapes
        # each was "published" with 5 other classes: its head was re-initialised, and the log says so
        assert f"classifier.bias [5] → [3], classifier.weight [5, {width}] → [3, {width}]" in output
        top1 = accuracy(work / teacher)
        print(f"{teacher}: held-out top-1 {top1:.3f}")
        assert top1 >= 0.8  # well above chance (1/3) on the validation folder, which it never trained on
    student = work / "student"
    config = json.loads((student / "config.json").read_text())
    assert config["model_type"] == "riformer" and config["reparameterized"] and config["id2label"] == shapes
    assert not any("token_mixer" in k for k in load_file(student / "model.safetensors"))
    evaluated = json.loads((work / "student-eval.json").read_text())
    print(f"student: top-1 {evaluated['top1']:.3f} (95% CI {evaluated['top1_interval']})")
    assert evaluated["images"] == 36 and "folder validation/" in evaluated["dataset"]
    assert evaluated["top1"] == pytest.approx(accuracy(student), abs=1e-6)
    assert (work / "student-onnx" / "model_int8.onnx").is_file()
    assert "36 held-out images (image folder" in output
    for step in range(1, 6):
        assert re.search(rf"== step {step} took \d+ s", output), step
    # pushed, with a card naming both teachers and their accuracy
    files = hub.files("test-user/riformer-tiny-shapes")
    assert files["model.safetensors"] == (student / "model.safetensors").read_bytes()
    card = ModelCard((files["README.md"]).decode())
    roles = {t["role"]: t for t in card.data.teachers}
    assert roles["logit teacher"]["model"] == "teacher-gfnet"
    assert roles["imitation teacher"]["accuracy"] == pytest.approx(accuracy(work / "teacher-poolformer"))
    assert "Logit teacher | teacher-gfnet (a local folder), gfnet, top-1" in card.text


@pytest.mark.parametrize("name,repo", [("imagenet.sh", "test-user/riformer-tiny-in1k"),
                                       ("slurm.sbatch", "test-user/riformer-tiny-in1k-slurm")])
def test_imagenet_recipe_runs_with_two_processes_evaluates_and_pushes(runs, name, repo):
    hub, work, output = finished(runs, name)
    run = work / "riformer-s12"
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["epoch"] == 3 and (work / "gfnet-h-b" / "config.json").is_file()
    assert output.count("error:") == 0
    evaluated = json.loads((run / "imagenet-val.json").read_text())
    assert "folder val/" in evaluated["dataset"] and evaluated["top1_interval"] is not None
    card = ModelCard(hub.files(repo)["README.md"].decode())
    assert card.data.datasets == ["imagenet-1k"] and card.data.training_recipe["recipe"] == "riformer-s12"
    assert {r.metric_name: r.metric_value for r in card.data.eval_results}["accuracy"] == evaluated["top1"]


def test_publish_checkpoints_converts_evaluates_and_pushes_with_cards(runs):
    hub, work, output = finished(runs, "publish_checkpoints.sh")
    for name, size in (("riformer-s12-in1k", 224), ("riformer-m36-in1k-384", 384)):
        files = hub.files(f"test-user/{name}")
        processor = json.loads(files["preprocessor_config.json"])
        assert json.loads(files["config.json"])["reparameterized"] and processor["crop_size"]["height"] == size
        card = ModelCard(files["README.md"].decode())
        evaluated = json.loads((work / f"{name}-imagenet-val.json").read_text())
        assert {r.metric_name: r.metric_value for r in card.data.eval_results}["accuracy"] == evaluated["top1"]
        assert card.data.datasets == ["imagenet-1k"] and card.data.license == "apache-2.0"
    assert output.count("Pushed ") == 2


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def shell_commands(block: str) -> list[str]:
    """The commands of a bash block, continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", "", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_readme_own_dataset_commands_are_the_ones_the_script_runs():
    section = readme_section("Your own dataset")
    (block,) = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    script = (SCRIPTS / "own_dataset.sh").read_text()
    script_commands = shell_commands(script)
    commands = shell_commands(block)
    settings = [c for c in commands if re.fullmatch(r"(\w+=\S+ ?)+", c)]
    for setting in " ".join(settings).split():  # the README's values are the script's defaults
        name, value = setting.split("=", 1)
        if name != "REPO_ID":  # the script's default is empty: no push
            assert f"{name}=${{{name}:-{value}}}" in script, setting
    steps = [c for c in commands if c not in settings]
    assert [c.split()[0] for c in steps] == ["riformer-train", "riformer-convert", "riformer-train", "riformer-train",
                                             "riformer-eval", "riformer-export", "riformer-push"]
    for command in steps:
        assert command in script_commands, command
