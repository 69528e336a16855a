"""The output guard and the run lock in every command that writes, end to end through its console entry point.

The table: each command into an earlier run's folder (refused: one line naming the folder, what it holds and the fix,
every file's sha256 as before; with --overwrite_output_dir: exactly the command's new files plus the user's own), a
file where a folder belongs, a read-only filesystem, and the output files of eval and bench. Then: an export into an
earlier export leaves no INT8 file behind; two `riformer-train` started at once into one folder; a SIGKILLed run's
lock taken over."""

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import pytest
from conftest import randomize_
from hub_server import FakeHub
from test_converters import mmpretrain_state_dict, write
from test_gfnet import original_gfnet_state_dict
from transformers import PoolFormerConfig, PoolFormerForImageClassification

from riformer_hf import RIFormerConfig, RIFormerForImageClassification, cli
from riformer_hf.data import make_image_processor
from riformer_hf.safety import lock_path, read_record

CONSOLE = Path(sys.executable).with_name("riformer-train")
READ_ONLY = Path("/sys/riformer-safety-test")  # sysfs: not writable, not even by root
TINY = ["--depths", "1", "1", "1", "1", "--hidden_sizes", "8", "8", "8", "8", "--image_size", "16"]
QUICK = ["--per_device_train_batch_size", "8", "--max_train_samples", "48", "--max_eval_samples", "16", "--use_cpu",
         "--disable_tqdm", "true", "--threads", "1", "--seed", "3"]


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def riformer(folder: Path, seed: int = 0) -> Path:
    names = [str(d) for d in range(10)]
    config = RIFormerConfig(depths=(1, 1, 1, 1), hidden_sizes=(8, 8, 8, 8), num_labels=10,
                            id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    randomize_(RIFormerForImageClassification(config), seed).save_pretrained(folder)
    make_image_processor(16, crop_pct=1.0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """What the commands read: a RIFormer folder, mmpretrain and GFNet checkpoints, a PoolFormer folder."""
    root = tmp_path_factory.mktemp("inputs")
    riformer(root / "riformer")
    write(mmpretrain_state_dict((1, 1, 1, 1), (8, 8, 8, 8), 3), root / "mmpretrain.pth", "mmengine")
    write(original_gfnet_state_dict((1, 1, 1, 1), (8, 8, 16, 16), 3, image_size=32), root / "gfnet.pth", "deit")
    PoolFormerForImageClassification(PoolFormerConfig(depths=(1, 1, 1, 1), hidden_sizes=(8, 8, 8, 8),
                                                       num_labels=3)).save_pretrained(root / "poolformer")
    make_image_processor(32).save_pretrained(root / "poolformer")
    return root


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A local Hub-protocol server with huggingface_hub pointed at it (riformer-push's upload)."""
    server = FakeHub().start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
        patch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the fake Hub speaks LFS, not Xet
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        patch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("scratch")))
        for name, value in {"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
                            "HF_HOME": str(tmp_path_factory.mktemp("hf_home"))}.items():
            patch.setenv(name, value)
        yield server
    server.stop()


# An earlier run's folder: its export, checkpoints, card and results, an INT8 graph, and the user's own entries.
EARLIER_RUN = ("config.json", "model.safetensors", "model_int8.onnx", "checkpoint-2/model.safetensors",
               "checkpoint-2/trainer_state.json", "trainer_state.json", "README.md", "eval_results.json",
               "fused_riformer.py")
USERS = ("notes.txt", ".git/HEAD")
HOLDS = ("holds an earlier run (config.json, model.safetensors, model_int8.onnx, checkpoint-2, trainer_state.json, "
         "README.md and 2 more): ")
REPLACE = "give --overwrite_output_dir to replace it (the folder then holds only the new files), or another {flag}."
CONVERTED = {"config.json", "model.safetensors", "preprocessor_config.json"}
RIFORMER_CODE = {"configuration_riformer.py", "modeling_riformer.py", "fused_riformer.py"}  # for trust_remote_code
DEPLOY = CONVERTED | RIFORMER_CODE | {"README.md"}


@dataclass(frozen=True)
class Command:
    """A command that writes a folder: its entry point, its arguments but the folder, the folder's flag, the files it
    writes (None: refusals only) and the fix its refusal of earlier work names."""

    entry: object
    argv: tuple
    flag: str = "--output_dir"
    writes: frozenset | None = None
    fix: str = REPLACE


FOLDER_COMMANDS = {
    "export": Command(cli.export, ("--model_name_or_path", "{in}/riformer", "--no_validate"), writes=frozenset({
        "config.json", "configuration_riformer.py", "model.onnx", "preprocessor_config.json"})),
    "reparameterize": Command(cli.reparameterize, ("--model_dir", "{in}/riformer"), writes=frozenset(DEPLOY)),
    "convert mmpretrain": Command(cli.convert, ("mmpretrain", "--checkpoint", "{in}/mmpretrain.pth"),
                                  writes=frozenset(CONVERTED | RIFORMER_CODE)),
    "convert gfnet": Command(cli.convert, ("gfnet", "--checkpoint", "{in}/gfnet.pth"),
                             writes=frozenset(CONVERTED | {"configuration_gfnet.py", "modeling_gfnet.py"})),
    "convert poolformer": Command(cli.convert, ("poolformer", "--model_name_or_path", "{in}/poolformer"),
                                  writes=frozenset(CONVERTED | RIFORMER_CODE)),
    "push": Command(cli.push, ("--model_dir", "{in}/riformer", "--repo_id", "test-user/guarded"), flag="--save_dir",
                    writes=frozenset(DEPLOY)),
    "train": Command(cli.train, (*TINY, *QUICK, "--max_steps", "2", "--save_steps", "2"), writes=frozenset(
        DEPLOY | {"all_results.json", "checkpoint-2", "eval_results.json", "train_results.json", "trainer_state.json",
                  "training_args.bin"}), fix="continue it with --resume_from_checkpoint last, start afresh there with "
                                             "--overwrite_output_dir, or give another --output_dir."),
    "demo": Command(cli.demo, ("--teacher_epochs", "1", "--student_epochs", "1"),
                    fix="give another --output_dir (the demo writes run/ and onnx/ there)."),
}


@dataclass(frozen=True)
class Case:
    command: str
    layout: str  # "earlier run" (in tmp/out), "a file" (tmp/out), "read-only" (READ_ONLY); or an output file's case
    overwrite: bool = False
    argv: tuple = ()  # eval / bench: their arguments, "{tmp}" filled in
    says: str = ""  # how the error line starts after "error: " ("{out}", "{tmp}", "{flag}" filled in); "": success


CASES = {}
for _name, _command in FOLDER_COMMANDS.items():
    CASES[f"{_name} into an earlier run"] = Case(_name, "earlier run", says="{flag} {out} " + HOLDS + _command.fix)
    if _command.writes is not None:
        CASES[f"{_name} into an earlier run, overwritten"] = Case(_name, "earlier run", overwrite=True)
    CASES[f"{_name} into a file"] = Case(_name, "a file", says="{flag} {out} is a file: give a folder (it is created "
                                                              "if missing).")
    CASES[f"{_name} into a read-only filesystem"] = Case(_name, "read-only", says="{flag} {out} is not writable (")

EVAL = ("--model_name_or_path", "{in}/riformer", "--digits", "--max_samples", "8", "--no_progress")
BENCH = ("--depths", "1,1,1,1", "--hidden_sizes", "8,8,8,8", "--image_size", "32", "--batch_size", "2", "--warmup",
         "0", "--repeats", "1", "--threads", "1", "--matmul_size", "32")
for _name, _argv, _plot in (("eval", EVAL, "--confusion_matrix"), ("bench", BENCH, "--plot")):
    CASES.update({
        f"{_name}: a report replaced": Case(_name, "report", argv=(*_argv, "--output_json", "{tmp}/report.json")),
        f"{_name}: the results file of an earlier run": Case(
            _name, "earlier run", argv=(*_argv, "--output_json", "{tmp}/out/eval_results.json"),
            says="--output_json {tmp}/out/eval_results.json is part of an earlier run (config.json, model.safetensors, "
                 "model_int8.onnx, checkpoint-2, trainer_state.json, README.md and 2 more) in {tmp}/out: writing it "
                 "would leave that folder inconsistent: give another file name."),
        f"{_name}: a folder as --output_json": Case(_name, "earlier run", argv=(*_argv, "--output_json", "{tmp}/out"),
                                                    says="--output_json {tmp}/out is a folder: give a file name"),
        f"{_name}: a read-only filesystem": Case(
            _name, "read-only", argv=(*_argv, "--output_json", f"{READ_ONLY}/r.json"),
            says=f"--output_json {READ_ONLY}/r.json cannot be written in {READ_ONLY} ("),
        f"{_name}: a plot format that cannot be written": Case(
            _name, "report", argv=(*_argv, _plot, "{tmp}/plot.txt", "--output_json", "{tmp}/r.json"),
            says=_plot + " {tmp}/plot.txt: .txt is not a format it can write: give a file ending in "),
        f"{_name}: one file for two outputs": Case(
            _name, "report", argv=(*_argv, _plot, "{tmp}/report.png", "--output_json", "{tmp}/report.png"),
            says="--output_json {tmp}/report.png and " + _plot + " {tmp}/report.png are one file: give two names."),
    })
OUTPUT_FILE_COMMANDS = {"eval": cli.evaluate, "bench": cli.bench}


def lay_out(layout: str, tmp: Path) -> Path:
    """The disk before the command; returns the output folder."""
    out = tmp / "out"
    if layout == "earlier run":
        for name in (*EARLIER_RUN, *USERS):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(f"earlier {name}")
    elif layout == "a file":
        out.write_text("keep me")
    elif layout == "report":
        (tmp / "report.json").write_text("an earlier report")
    return READ_ONLY if layout == "read-only" else out


@pytest.mark.parametrize("name", list(CASES))
def test_every_command_keeps_what_is_on_disk(name, inputs, tmp_path, request, capsys):
    case = CASES[name]
    out = lay_out(case.layout, tmp_path)
    if out == READ_ONLY:
        try:
            READ_ONLY.mkdir()
        except OSError:
            pass
        else:
            READ_ONLY.rmdir()
            pytest.skip("/sys is writable here")
    if case.command in OUTPUT_FILE_COMMANDS:
        entry, argv, flag = OUTPUT_FILE_COMMANDS[case.command], list(case.argv), "--output_json"
    else:
        command = FOLDER_COMMANDS[case.command]
        entry, argv, flag = command.entry, [*command.argv, command.flag, str(out)], command.flag
        argv += ["--overwrite_output_dir"] if case.overwrite else []
        if case.command == "push" and case.overwrite:
            request.getfixturevalue("hub")
    argv = [a.replace("{in}", str(inputs)).replace("{tmp}", str(tmp_path)) for a in argv]
    before, sources = checksums(tmp_path), checksums(inputs)

    code = entry(argv)
    assert checksums(inputs) == sources  # what the command reads is never changed
    if case.says:
        assert code == 2
        line = one_error_line(capsys)
        assert line.startswith("error: " + case.says.format(flag=flag, out=out, tmp=tmp_path)), line
        assert checksums(tmp_path) == before  # every file as it was
        assert not [p for p in tmp_path.rglob("*") if ".riformer-" in p.name]  # no temporary, no lock
        assert not READ_ONLY.exists()
        return
    assert code == 0, capsys.readouterr().err[-3000:]
    if case.command in OUTPUT_FILE_COMMANDS:
        assert (tmp_path / "report.json").read_text().startswith("{")  # replaced whole
        assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
        return
    after = checksums(out)
    assert {p.name for p in out.iterdir()} == FOLDER_COMMANDS[case.command].writes | {"notes.txt", ".git"}
    assert after["notes.txt"] == before["out/notes.txt"] and after[".git/HEAD"] == before["out/.git/HEAD"]
    assert not any(after.get(name) == before[f"out/{name}"] for name in EARLIER_RUN if name in after)  # all new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder, no lock, nothing set aside


# ---- riformer-export into an earlier export ----


def test_export_into_an_earlier_export(tmp_path, capsys):
    """The earlier export has an INT8 model; the new one is exported without --int8: refused without the flag (every
    file as it was), and with --overwrite_output_dir the folder holds only the new export, no INT8 file."""
    pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx"
    first, second = riformer(tmp_path / "first", 0), riformer(tmp_path / "second", 1)
    assert cli.export(["--model_name_or_path", str(first), "--output_dir", str(out), "--int8", "--calibration_data",
                       "digits", "--calibration_samples", "16"]) == 0
    capsys.readouterr()
    before = checksums(out)
    export = {"config.json", "configuration_riformer.py", "model.onnx", "preprocessor_config.json"}
    assert set(before) == export | {"model_int8.onnx"}

    assert cli.export(["--model_name_or_path", str(second), "--output_dir", str(out)]) == 2
    assert one_error_line(capsys) == (
        f"error: --output_dir {out} holds an earlier export (config.json, model.onnx, model_int8.onnx, "
        "preprocessor_config.json, configuration_riformer.py): give --overwrite_output_dir to replace it (the folder "
        "then holds only the new files), or another --output_dir."
    )
    assert checksums(out) == before

    assert cli.export(["--model_name_or_path", str(second), "--output_dir", str(out), "--overwrite_output_dir"]) == 0
    after = checksums(out)
    assert set(after) == export  # no stale model_int8.onnx
    assert after["model.onnx"] != before["model.onnx"]
    assert not [p.name for p in tmp_path.iterdir() if ".riformer-" in p.name]  # no staging folder, no lock left

    # INT8 from the ONNX export into its own folder: the fp32 graph is carried into the new, whole export
    assert cli.export(["--model_name_or_path", str(out), "--output_dir", str(out), "--int8", "--calibration_data",
                       "digits", "--calibration_samples", "16", "--overwrite_output_dir"]) == 0
    quantised = checksums(out)
    assert set(quantised) == export | {"model_int8.onnx"}
    assert quantised["model.onnx"] == after["model.onnx"] and quantised["config.json"] == after["config.json"]
    assert "ONNX (fp32, from" in capsys.readouterr().out


# ---- riformer-train: the run lock ----


def console_train(output_dir: str, *flags: str, cwd: Path, go: Path | None = None) -> subprocess.Popen:
    """`riformer-train` as a user starts it. With `go`, the same entry point (`sys.exit(cli.train())`) started once
    its imports are done and the file `go` appears: two runs then reach their checks in the same instant."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    argv = ["--output_dir", output_dir, *TINY, *QUICK, *flags]
    if go is None:
        return subprocess.Popen([str(CONSOLE), *argv], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=environment)
    script = (f"import os, sys, time\nimport riformer_hf.training.run\nfrom riformer_hf.cli import train\n"
              f"open({str(go)!r} + '.' + str(os.getpid()), 'w').close()\n"
              f"while not os.path.exists({str(go)!r}): time.sleep(0.005)\n"
              f"sys.argv = ['riformer-train', *sys.argv[1:]]\nsys.exit(train())\n")
    return subprocess.Popen([sys.executable, "-c", script, *argv], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment)


def test_two_trains_started_at_once_into_one_folder(tmp_path):
    """Exactly one runs to the end; the other exits 2 within a second of the start, with one line naming the winner,
    while the winner trains on."""
    go = tmp_path / "go"
    runs = [console_train("run", "--max_steps", "150", "--save_steps", "50", cwd=tmp_path, go=go) for _ in range(2)]
    deadline = time.monotonic() + 300
    while not all(Path(f"{go}.{run.pid}").exists() for run in runs):  # both imported, waiting
        assert all(run.poll() is None for run in runs) and time.monotonic() < deadline, runs[0].communicate()
        time.sleep(0.01)
    exited = {}

    def watch(run):
        run.wait(300)
        exited[run.pid] = time.monotonic() - started

    go.touch()
    started = time.monotonic()
    watchers = [threading.Thread(target=watch, args=(run,), daemon=True) for run in runs]
    for watcher in watchers:
        watcher.start()
    for watcher in watchers:
        watcher.join(300)
    results = {run.pid: (run.returncode, run.stderr.read()) for run in runs}
    assert sorted(code for code, _ in results.values()) == [0, 2], results
    (loser,) = [pid for pid, (code, _) in results.items() if code == 2]
    (winner,) = [pid for pid, (code, _) in results.items() if code == 0]
    lines = results[loser][1].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --output_dir run is in use by pid {winner} on host "), lines
    assert "(riformer-train --output_dir run --depths 1 1 1 1" in lines[0] and lines[0].endswith(
        f"wait for it to finish, or give another --output_dir; if that process is gone, delete "
        f"{tmp_path / '.run.riformer-lock'}.")
    print(f"\nthe refused run exited {exited[loser]:.2f} s after the start, the winner {exited[winner]:.2f} s")
    assert exited[loser] < 1.0
    assert results[winner][1] == ""
    assert (tmp_path / "run" / "checkpoint-150" / "trainer_state.json").is_file()
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert not lock_path(tmp_path / "run").exists()


def test_a_sigkilled_train_leaves_a_lock_that_the_resumed_run_takes_over(tmp_path, capsys, caplog):
    """While a run trains, a second one (in this process) is refused within a second, naming it. The run is killed
    with SIGKILL: its lock file stays; `--resume_from_checkpoint last` takes it over, says so, and finishes."""
    killed = console_train(str(tmp_path / "run"), "--max_steps", "100000", "--save_steps", "10", cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while not (tmp_path / "run" / "checkpoint-10" / "trainer_state.json").is_file():
            assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()[1][-3000:]
            time.sleep(0.05)
        started = time.monotonic()
        assert cli.train(["--output_dir", str(tmp_path / "run"), *TINY, *QUICK, "--max_steps", "20",
                          "--resume_from_checkpoint", "last"]) == 2
        refused_after = time.monotonic() - started
        line = one_error_line(capsys)
        assert line.startswith(f"error: --output_dir {tmp_path / 'run'} is in use by pid {killed.pid} on host ")
        assert refused_after < 1.0, refused_after
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate()
    assert read_record(lock_path(tmp_path / "run")).pid == killed.pid  # what the killed run left

    with caplog.at_level("WARNING"):
        assert cli.train(["--output_dir", str(tmp_path / "run"), *TINY, *QUICK, "--max_steps", "20",
                          "--save_strategy", "no", "--resume_from_checkpoint", "last"]) == 0
    assert f"took over the lock {lock_path(tmp_path / 'run')} left by pid {killed.pid} on host " in caplog.text
    assert "which is no longer running." in caplog.text
    assert not lock_path(tmp_path / "run").exists()
    assert (tmp_path / "run" / "model.safetensors").is_file()
