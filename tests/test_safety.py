"""riformer_hf.safety: the output-folder guard (every case: exit code, one line naming the path and the fix, every file
on disk unchanged or exactly the new set), output-file checks, and the run lock (two takers, killed holders, other
machines, filesystems without flock, the ranks of one launch)."""

import errno
import fcntl
import hashlib
import importlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from riformer_hf import cli
from riformer_hf.errors import EarlierOutputError, OutputError, OutputInUseError, UserError
from riformer_hf.safety import (
    PLOT_SUFFIXES,
    OutputFolder,
    RunLock,
    check_output_file,
    inventory,
    lock_path,
    staged_file,
    write_file,
)
from riformer_hf.safety import lock as lock_module
from riformer_hf.safety import paths as paths_module

READ_ONLY = Path("/sys/riformer-safety-test")  # sysfs: not writable, not even by root


def read_only_is_writable() -> bool:
    try:
        READ_ONLY.mkdir()
    except OSError:
        return False
    READ_ONLY.rmdir()
    return True


def tree(root: Path) -> dict[str, str]:
    """Every path under `root`: files by sha256, folders and links by kind (so new or removed folders show too)."""
    found = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_symlink():
            found[key] = f"link -> {os.readlink(path)}"
        elif path.is_dir():
            found[key] = "folder"
        else:
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture
def boundary(monkeypatch):
    """Run a function as a console command, through `cli`'s error boundary: returns the exit code."""
    for name in ("riformer_hf.export.hub", "riformer_hf.training.interrupt"):  # loaded before any timing
        importlib.import_module(name)

    module = types.ModuleType("riformer_safety_test_command")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "safety-test", cli.Command(module.__name__, "a guarded write"))

    def run(function) -> int:
        module.main = function
        return cli.run_command("safety-test", [])

    return run


def put(folder: Path, *names: str) -> None:
    """Files (and `dir/file` paths) holding their own name, as an earlier output."""
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"old {name}".encode())


ONNX_EXPORT = ("model.onnx", "model_int8.onnx", "config.json", "preprocessor_config.json")
TRAINING_RUN = ("checkpoint-2/model.safetensors", "checkpoint-10/trainer_state.json", "trainer_state.json",
                "config.json", "model.safetensors", "README.md", "eval_results.json")
NEW = {"model.onnx": b"new onnx", "config.json": b"new config", "preprocessor_config.json": b"new processor"}


@dataclass
class Case:
    """One guarded write. `given(tmp)` lays out the disk and returns the --output_dir to give."""

    given: object
    overwrite: bool = False
    sources: tuple = ()
    fail: type | None = None  # raised inside the staged block: a failed or interrupted write
    says: str = ""  # the error line after "error: --output_dir {out} "; "{out}", "{tmp}" filled in
    kept: tuple = ()  # the user's entries that stay beside exactly the new set
    setup: dict = field(default_factory=dict)  # no_sibling / chdir


def fresh(tmp):
    return tmp / "out"


def nested(tmp):
    return tmp / "a" / "b" / "out"


def empty(tmp):
    (tmp / "out").mkdir()
    return tmp / "out"


def a_file(tmp):
    (tmp / "out").write_text("keep me")
    return tmp / "out"


def under_a_file(tmp):
    (tmp / "file").write_text("keep me")
    return tmp / "file" / "out"


def read_only(tmp):
    return READ_ONLY


def read_only_folder(tmp):
    put(tmp / "out", "notes.txt")
    (tmp / "out").chmod(0o555)
    return tmp / "out"


def with_files(*names):
    def layout(tmp):
        put(tmp / "out", *names)
        return tmp / "out"

    return layout


def symlink_to_export(tmp):
    put(tmp / "real", *ONNX_EXPORT)
    (tmp / "link").symlink_to(tmp / "real", target_is_directory=True)
    return tmp / "link"


def here(tmp):
    put(tmp / "out", *ONNX_EXPORT, "notes.txt")
    return Path(".")


FIX = "give --overwrite_output_dir to replace it (the folder then holds only the new files), or another --output_dir."
CASES = {
    "a new folder": Case(fresh),
    "a new nested folder": Case(nested),
    "an empty folder": Case(empty),
    "a file": Case(a_file, says="is a file: give a folder (it is created if missing)."),
    "a folder under a file": Case(under_a_file,
                                  says="is not writable (NotADirectoryError: Not a directory): give a folder you can "
                                       "write to."),
    "a read-only filesystem": Case(read_only, says="is not writable ("),
    "an earlier ONNX export": Case(with_files(*ONNX_EXPORT), says=(
        "holds an earlier export (config.json, model.onnx, model_int8.onnx, preprocessor_config.json): " + FIX)),
    "an earlier ONNX export, overwritten without INT8": Case(with_files(*ONNX_EXPORT), overwrite=True),
    "an earlier run": Case(with_files(*TRAINING_RUN), says=(
        "holds an earlier run (config.json, model.safetensors, checkpoint-2, checkpoint-10, trainer_state.json, "
        "README.md and 1 more): " + FIX)),
    "an earlier run, overwritten": Case(with_files(*TRAINING_RUN), overwrite=True),
    "an OpenVINO export": Case(with_files("openvino_model.xml", "openvino_model.bin", "openvino_model_int8.xml",
                                          "openvino_model_int8.bin"),
                               says=("holds an earlier export (openvino_model.bin, openvino_model.xml, "
                                     "openvino_model_int8.bin, openvino_model_int8.xml): " + FIX)),
    "an OpenVINO IR under another name": Case(with_files("resnet.xml", "resnet.bin"),
                                              says="holds an earlier export (resnet.bin, resnet.xml)"),
    "an OpenVINO export, overwritten": Case(with_files("openvino_model.xml", "openvino_model.bin", "notes.txt"),
                                            overwrite=True, kept=("notes.txt",)),
    "a model card": Case(with_files("README.md"), says="holds an earlier model card (README.md): " + FIX),
    "eval results": Case(with_files("eval_results.json"), says="holds earlier results (eval_results.json)"),
    "a deploy export with its training form": Case(
        with_files("model.safetensors", "config.json", "modeling_riformer.py", "fused_riformer.py",
                   "training/model.safetensors"),
        says=("holds an earlier model (config.json, model.safetensors, fused_riformer.py, modeling_riformer.py, "
              "training)")),
    "a deploy export with its training form, overwritten": Case(
        with_files("model.safetensors", "config.json", "modeling_riformer.py", "training/model.safetensors"),
        overwrite=True),
    "the user's files only": Case(with_files("notes.txt", ".git/HEAD", "data/cat.png"),
                                  kept=("notes.txt", ".git/HEAD", "data/cat.png")),
    "an earlier export and the user's files, overwritten": Case(
        with_files(*ONNX_EXPORT, "notes.txt", ".gitattributes"), overwrite=True, kept=("notes.txt", ".gitattributes")),
    "a read-only folder": Case(read_only_folder, says="is not writable (PermissionError: Permission denied)"),
    "a failed write over an earlier export": Case(with_files(*ONNX_EXPORT), overwrite=True, fail=RuntimeError),
    "an interrupted write over an earlier export": Case(with_files(*ONNX_EXPORT), overwrite=True,
                                                        fail=KeyboardInterrupt),
    "a failed write into a new nested folder": Case(nested, fail=RuntimeError),
    "the model read lies in the run replaced": Case(
        with_files(*TRAINING_RUN), overwrite=True, sources=(("--model_dir", "out/checkpoint-2"),),
        says=("holds what this command reads (--model_dir {tmp}/out/checkpoint-2): replacing the folder would delete "
              "it: give another --output_dir.")),
    "the model read is the folder": Case(with_files("config.json", "model.safetensors"),
                                         sources=(("--model_name_or_path", "out"),),
                                         says="holds what this command reads (--model_name_or_path {tmp}/out)"),
    "the user's folder read from inside": Case(with_files("data/cat.png"), sources=(("--data_dir", "out/data"),),
                                               kept=("data/cat.png",)),
    "a symlink to an earlier export, overwritten": Case(symlink_to_export, overwrite=True),
    "a read-only parent (temporaries inside)": Case(with_files(*ONNX_EXPORT, "notes.txt"), overwrite=True,
                                                    kept=("notes.txt",), setup={"no_sibling": True}),
    "the current directory, overwritten": Case(here, overwrite=True, kept=("notes.txt",), setup={"chdir": "out"}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_output_folder_guard(name, tmp_path, monkeypatch, boundary, capsys):
    case = CASES[name]
    given = case.given(tmp_path)
    if given == READ_ONLY and read_only_is_writable():
        pytest.skip("/sys is writable here")
    if name == "a read-only folder" and os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    if "chdir" in case.setup:
        monkeypatch.chdir(tmp_path / case.setup["chdir"])
    if case.setup.get("no_sibling"):
        monkeypatch.setattr(paths_module, "parent_writable", lambda folder: False)
        monkeypatch.setattr(lock_module, "parent_writable", lambda folder: False)
    target = Path(os.path.realpath(given))
    before = tree(tmp_path)
    kept = {name: files(target)[name] for name in case.kept}
    sources = [(flag, tmp_path / path) for flag, path in case.sources]

    def command(argv):
        output = OutputFolder(given, overwrite=case.overwrite, sources=sources)
        with output.claim():
            assert lock_path(given).is_file()  # held for the whole write
            with output.staged() as staging:
                for file_name, data in NEW.items():
                    (staging / file_name).write_bytes(data)
                if case.fail is not None:
                    raise case.fail("the write failed part-way")

    started = time.monotonic()
    code = boundary(command)
    try:
        assert time.monotonic() - started < 1.0  # checks and renames, no waiting
        if case.fail is not None:
            assert code == {RuntimeError: 1, KeyboardInterrupt: 130}[case.fail]
            capsys.readouterr()
        elif case.says:
            assert code == 2
            line = one_error_line(capsys)
            assert line.startswith(f"error: --output_dir {given} " + case.says.format(tmp=tmp_path)), line
        if case.says or case.fail:
            assert tree(tmp_path) == before  # every file as it was, no folder created, no temporary left
            assert not READ_ONLY.exists()
            return
        assert code == 0
        assert files(target) == {**NEW, **kept}  # exactly the new set, plus the user's files
        assert not [p for p in tmp_path.rglob("*") if ".riformer-" in p.name]  # no staging, no lock, nothing aside
        if Path(given).is_symlink():
            assert Path(given).resolve() == tmp_path / "real"  # the link still points at the folder it named
    finally:
        if target.exists():
            target.chmod(0o755)


def test_the_refusals_are_user_errors_and_os_errors():
    assert issubclass(EarlierOutputError, OutputError) and issubclass(EarlierOutputError, FileExistsError)
    assert issubclass(OutputInUseError, UserError) and issubclass(OutputInUseError, BlockingIOError)
    assert str(EarlierOutputError("--output_dir x holds")) == "--output_dir x holds"


def test_inventory_lists_checkpoints_in_order_and_keeps_the_users_entries(tmp_path):
    put(tmp_path, "checkpoint-10/a", "checkpoint-9/a", "runs/Jan01/events.out.tfevents.1", "notes.md", "logs/x",
        "all_results.json", "model.onnx.data", ".riformer-lock")
    found = inventory(tmp_path)
    assert found.names == ["model.onnx.data", "checkpoint-9", "checkpoint-10", "all_results.json", "runs"]
    assert found.foreign == (".riformer-lock", "logs", "notes.md")
    assert found.describe() == ("an earlier run (model.onnx.data, checkpoint-9, checkpoint-10, all_results.json, "
                                "runs)")


def test_an_earlier_output_appearing_during_the_write_is_not_replaced(tmp_path):
    """Without the lock (a library call) another writer may fill the folder meanwhile: nothing of theirs is replaced,
    and the new files stay where the message says."""
    output = OutputFolder(tmp_path / "out", flag=None)
    with pytest.raises(EarlierOutputError) as refused, output.staged() as staging:
        (staging / "model.onnx").write_bytes(b"mine")
        put(tmp_path / "out", "model.onnx")
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"old model.onnx"
    assert f"the new files are in {staging}" in str(refused.value)
    assert (staging / "model.onnx").read_bytes() == b"mine"


def test_leftovers_of_a_killed_write_are_named(tmp_path, caplog):
    (tmp_path / ".out.riformer-replaced-999999999-abcdef").mkdir()  # that pid runs nowhere
    (tmp_path / f".out.riformer-staging-{os.getpid()}-abcdef").mkdir()  # this process: busy, not a leftover
    with caplog.at_level("WARNING"):
        OutputFolder(tmp_path / "out").check()
    assert "--output_dir" in caplog.text and "1 temporary folder(s) left by an interrupted write" in caplog.text
    assert ".out.riformer-replaced-999999999-abcdef" in caplog.text and "staging" not in caplog.text


def test_a_probe_survives_another_process_probing_the_same_new_folder(tmp_path, monkeypatch):
    """Two commands started at once into one new folder: each probe creates it and removes it again, so one probe may
    find it gone before its test file is made: it probes again, rather than calling the folder not writable."""
    original, calls = tempfile.TemporaryFile, []

    def raced(*args, **kwargs):
        calls.append(kwargs["dir"])
        if len(calls) == 1:
            Path(kwargs["dir"]).rmdir()  # the other probe's clean-up
        return original(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", raced)
    OutputFolder(tmp_path / "new" / "out").check_writable()
    assert len(calls) == 2 and not (tmp_path / "new").exists()


def test_set_aside_earlier_puts_an_untouched_folder_back_and_discards_after_a_save(tmp_path, caplog):
    put(tmp_path / "run", *TRAINING_RUN, "notes.txt")
    before = tree(tmp_path)
    output = OutputFolder(tmp_path / "run", overwrite=True)
    with pytest.raises(KeyboardInterrupt), caplog.at_level("WARNING"), output.set_aside_earlier():
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["notes.txt"]
        raise KeyboardInterrupt
    assert tree(tmp_path) == before and "the earlier output is back in place" in caplog.text

    with pytest.raises(RuntimeError), caplog.at_level("WARNING"), output.set_aside_earlier() as aside:
        put(tmp_path / "run", "checkpoint-1/model.safetensors")
        raise RuntimeError("stopped after its first checkpoint")
    assert f"the earlier output it replaces is kept in {aside.path}" in caplog.text
    assert (aside.path / "checkpoint-2" / "model.safetensors").is_file()

    with output.set_aside_earlier() as aside:
        put(tmp_path / "run", "checkpoint-3/model.safetensors")
        aside.discard()  # the new run saved: the earlier one goes
        assert not aside.path.exists()
    assert inventory(tmp_path / "run").names == ["checkpoint-3"]


# ---- output files ----


@dataclass
class FileCase:
    given: object
    flag: str = "--output_json"
    suffixes: tuple | None = None
    others: tuple = ()
    says: str = ""  # after "error: {flag} {path}"; refused when given


def existing_report(tmp):
    (tmp / "results.json").write_text("old")
    return tmp / "results.json"


def read_only_report(tmp):
    path = existing_report(tmp)
    path.chmod(0o444)
    return path


def model_config(tmp):
    put(tmp / "model", "config.json", "model.safetensors")
    return tmp / "model" / "config.json"


def results_of_a_run(tmp):
    put(tmp / "run", "eval_results.json", "trainer_state.json", "checkpoint-2/model.safetensors")
    return tmp / "run" / "eval_results.json"


def lone_results(tmp):
    put(tmp, "eval_results.json")
    return tmp / "eval_results.json"


def under_a_file_report(tmp):
    (tmp / "f").write_text("x")
    return tmp / "f" / "r.json"


FILE_CASES = {
    "a new file": FileCase(lambda tmp: tmp / "results.json"),
    "a new file in new folders": FileCase(lambda tmp: tmp / "a" / "b" / "results.json"),
    "an earlier report (replaced)": FileCase(existing_report),
    "an earlier eval_results.json on its own (replaced)": FileCase(lone_results),
    "a folder": FileCase(lambda tmp: tmp, says=" is a folder: give a file name"),
    "under a file": FileCase(under_a_file_report, says=" cannot be written in {tmp}/f (NotADirectoryError"),
    "a read-only filesystem": FileCase(lambda tmp: READ_ONLY / "r.json", says=" cannot be written in /sys"),
    "a read-only file": FileCase(read_only_report,
                                 says=" is read-only: make it writable (chmod u+w {path}) or give another file name."),
    "a plot that is not an image": FileCase(lambda tmp: tmp / "plot.txt", flag="--plot", suffixes=PLOT_SUFFIXES,
                                            says=": .txt is not a format it can write: give a file ending in .png, "
                                                 ".pdf, .svg, .jpg, .jpeg."),
    "a model's config.json": FileCase(model_config,
                                      says=" is part of an earlier model (config.json, model.safetensors) in"),
    "a run's eval_results.json": FileCase(results_of_a_run, says=" is part of an earlier run ("),
    "one file for two options": FileCase(lambda tmp: tmp / "r.png", flag="--plot", others=(("--confusion_matrix",
                                                                                            "r.png"),),
                                         says=" and --confusion_matrix {tmp}/r.png are one file: give two names."),
}


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_output_file_checks(name, tmp_path, boundary, capsys):
    case = FILE_CASES[name]
    path = case.given(tmp_path)
    before = tree(tmp_path)
    others = [(flag, tmp_path / other) for flag, other in case.others]

    def command(argv):
        checked = check_output_file(path, case.flag, suffixes=case.suffixes, others=others)
        assert tree(tmp_path) == before  # checking writes nothing (missing folders stay missing)
        write_file(checked, "new")

    code = boundary(command)
    if case.says:
        assert code == 2
        line = one_error_line(capsys)
        assert line.startswith(f"error: {case.flag} {path}" + case.says.format(path=path, tmp=tmp_path)), line
        assert tree(tmp_path) == before
        return
    assert code == 0 and path.read_text() == "new"
    assert not [p.name for p in path.parent.iterdir() if "riformer" in p.name]


def test_a_failed_file_write_leaves_the_earlier_file(tmp_path):
    path = existing_report(tmp_path)
    path.chmod(0o640)
    with pytest.raises(RuntimeError), staged_file(path) as temporary:
        temporary.write_text("half")
        raise RuntimeError("the plot failed")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    write_file(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o640  # the old mode is kept
    with staged_file(tmp_path / "plot.png") as temporary:
        assert temporary.suffix == ".png" and temporary.parent == tmp_path  # writers that read the suffix still can
        temporary.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png"


# ---- the run lock ----

FORK = multiprocessing.get_context("fork")


def _contend(folder, start, results, hold):
    start.wait(10)
    started = time.monotonic()
    try:
        lock = RunLock(folder, label=f"--output_dir {folder}", flag="--output_dir", command="riformer-train test")
        lock.acquire()
    except OutputInUseError as error:
        results.put(("refused", os.getpid(), time.monotonic() - started, str(error)))
        return
    results.put(("won", os.getpid(), time.monotonic() - started, ""))
    hold.wait(20)
    lock.release()


def test_two_takers_at_once_exactly_one_wins_the_other_is_refused_within_a_second(tmp_path):
    start, hold, results = FORK.Event(), FORK.Event(), FORK.Queue()
    takers = [FORK.Process(target=_contend, args=(tmp_path / "run", start, results, hold)) for _ in range(2)]
    for taker in takers:
        taker.start()
    time.sleep(0.2)
    start.set()
    outcomes = sorted([results.get(timeout=20) for _ in takers])
    hold.set()
    for taker in takers:
        taker.join(20)
    (refused, _, refused_after, message), (won, winner, _, _) = outcomes
    assert (refused, won) == ("refused", "won")
    assert refused_after < 1.0
    host = lock_module.LockRecord.mine().host
    assert message.startswith(f"--output_dir {tmp_path / 'run'} is in use by pid {winner} on host {host} since ")
    assert message.endswith("(riformer-train test): wait for it to finish, or give another --output_dir; if that "
                            f"process is gone, delete {tmp_path / '.run.riformer-lock'}.")
    assert not (tmp_path / ".run.riformer-lock").exists()  # released


def test_in_one_process_a_second_lock_is_refused_and_a_released_one_can_be_taken(tmp_path):
    first = RunLock(tmp_path / "new" / "run").acquire()
    record = json.loads(lock_path(tmp_path / "new" / "run").read_text())
    assert record["pid"] == os.getpid() and record["command"] and record["started"]
    with pytest.raises(OutputInUseError, match=f"is in use by pid {os.getpid()} on host "):
        RunLock(tmp_path / "new" / "run").acquire()
    first.release()
    assert not (tmp_path / "new").exists()  # the lock file and the folders made for it are gone
    with RunLock(tmp_path / "run") as again:
        assert again.held and again.took_over is None


def test_every_spelling_of_a_folder_has_one_lock(tmp_path, monkeypatch):
    (tmp_path / "run").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "run", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    assert lock_path("run") == lock_path("./run") == lock_path(tmp_path / "alias") == tmp_path / ".run.riformer-lock"


def _hold(folder, ready, fork_child):
    RunLock(folder, command="riformer-export --output_dir run").acquire()
    if fork_child:
        child = os.fork()
        if child == 0:  # a data-loader worker, say: outlives its parent for a while
            time.sleep(30)
            os._exit(0)
        fork_child.value = child
    ready.set()
    time.sleep(60)


def _dead(pid: int) -> None:
    """Wait until `pid` has exited (a zombie or reaped)."""
    deadline = time.monotonic() + 10
    while (lock_module.process_state(pid) or ("Z",))[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)


def _take_over(folder, **kwargs) -> RunLock:
    """The kernel drops a killed process's flock once its last thread has gone (the heartbeat thread can outlive the
    main thread's exit by a moment): the first attempt may still be refused ("try again in a few seconds")."""
    deadline = time.monotonic() + 2
    while True:
        try:
            return RunLock(folder, **kwargs).acquire()
        except OutputInUseError as error:
            assert "that process has ended" in str(error) and time.monotonic() < deadline, str(error)
            time.sleep(0.02)


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_a_lock_left_by_a_sigkilled_process_is_taken_over_with_a_warning(tmp_path, reaped, caplog):
    ready = FORK.Event()
    holder = FORK.Process(target=_hold, args=(tmp_path / "run", ready, None))
    holder.start()
    assert ready.wait(10)
    with pytest.raises(OutputInUseError):
        RunLock(tmp_path / "run").acquire()
    os.kill(holder.pid, signal.SIGKILL)
    if reaped:
        holder.join(10)
    else:  # killed, not yet waited for: a zombie, whose pid still answers kill(pid, 0)
        _dead(holder.pid)
    with caplog.at_level("WARNING"):
        lock = _take_over(tmp_path / "run", label="--output_dir run")
    try:
        assert lock.took_over.pid == holder.pid
        assert f"--output_dir run: took over the lock {lock.path} left by pid {holder.pid} on host " in caplog.text
        assert "(riformer-export --output_dir run), which is no longer running." in caplog.text
    finally:
        lock.release()
        holder.join(10)


def test_a_forked_child_does_not_keep_the_lock_of_its_killed_parent(tmp_path):
    ready, child = FORK.Event(), FORK.Value("i", 0)
    holder = FORK.Process(target=_hold, args=(tmp_path / "run", ready, child))
    holder.start()
    assert ready.wait(10)
    try:
        os.kill(holder.pid, signal.SIGKILL)
        _dead(holder.pid)  # (not joined: the child holds the write end of multiprocessing's sentinel pipe)
        assert lock_module.pid_running(child.value)  # the child still runs
        lock = _take_over(tmp_path / "run")
        assert lock.took_over.pid == holder.pid
        lock.release()
    finally:
        os.kill(child.value, signal.SIGKILL)
        holder.join(10)


def _record_of_another_machine(path: Path, age: float) -> None:
    record = {"pid": 4321, "host": "node-7", "command": "riformer-train --output_dir run", "started": "earlier",
              "boot_id": "another-machine", "pid_start": 1, "run_key": None, "token": "t"}
    path.write_text(json.dumps(record))
    os.utime(path, (time.time() - age, time.time() - age))


def test_a_lock_of_another_machine_waits_for_its_heartbeat_to_stop(tmp_path):
    path = lock_path(tmp_path / "run")
    _record_of_another_machine(path, age=5)
    with pytest.raises(OutputInUseError) as refused:
        RunLock(tmp_path / "run", stale_after=120).acquire()
    assert "in use by pid 4321 on host node-7" in str(refused.value)
    assert "(another machine; last heartbeat 5 s ago, taken over after 120 s without one)" in str(refused.value)
    _record_of_another_machine(path, age=121)
    lock = RunLock(tmp_path / "run", stale_after=120).acquire()
    assert lock.took_over.host == "node-7"
    lock.release()


def test_the_holder_keeps_its_heartbeat(tmp_path):
    lock = RunLock(tmp_path / "run", heartbeat=0.05).acquire()
    os.utime(lock.path, (0, 0))
    time.sleep(0.3)
    assert time.time() - lock.path.stat().st_mtime < 5
    lock.release()


@pytest.mark.parametrize("missing", ["ENOLCK", "no fcntl"])
def test_without_flock_the_record_decides(tmp_path, monkeypatch, missing):
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    if missing == "ENOLCK":  # a filesystem without locks (NFS without lockd, some FUSE mounts)
        monkeypatch.setattr(fcntl, "flock", no_flock)
    else:  # a system without fcntl (Windows)
        monkeypatch.setattr(lock_module, "fcntl", None)
    path = lock_path(tmp_path / "run")
    me = asdict(lock_module.LockRecord.mine())
    running = subprocess.Popen(["sleep", "30"])
    try:
        start = lock_module.process_state(running.pid)[1]
        path.write_text(json.dumps({**me, "pid": running.pid, "pid_start": start}))
        with pytest.raises(OutputInUseError):
            RunLock(tmp_path / "run").acquire()
        path.write_text(json.dumps({**me, "pid": running.pid, "pid_start": start + 1}))  # a reused pid
        RunLock(tmp_path / "run").acquire().release()
        path.write_text(json.dumps({**me, "pid": running.pid, "pid_start": start}))
        running.kill()  # not waited for: a zombie
        _dead(running.pid)
        lock = RunLock(tmp_path / "run").acquire()
        assert lock.took_over.pid == running.pid
        lock.release()
    finally:
        running.kill()
        running.wait()


def test_the_ranks_of_one_launch_share_the_lock(tmp_path, monkeypatch):
    for name, value in {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500",
                        "TORCHELASTIC_RUN_ID": "none"}.items():
        monkeypatch.setenv(name, value)
    assert lock_module.run_key() == "127.0.0.1:29500:none"
    main = RunLock(tmp_path / "run").acquire()
    assert json.loads(main.path.read_text())["run_key"] == "127.0.0.1:29500:none"
    other_rank = RunLock(tmp_path / "run").join()  # not refused, holds nothing
    assert other_rank.joined and not other_rank.held
    second_saver = RunLock(tmp_path / "run").acquire()  # the same launch's other saving process: joins
    assert second_saver.joined and not second_saver.held
    monkeypatch.setenv("MASTER_PORT", "29501")  # another launch
    with pytest.raises(OutputInUseError):
        RunLock(tmp_path / "run").join()
    with pytest.raises(OutputInUseError):
        RunLock(tmp_path / "run").acquire()
    main.release()
    assert RunLock(tmp_path / "run").join().joined  # no lock: the saving process has not taken it yet
