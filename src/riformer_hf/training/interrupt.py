"""What an interrupted command leaves behind, for the line the command line prints on Ctrl-C."""

import os
import shlex
import shutil
import sys
from pathlib import Path

_running: dict = {}


def record_training_run(output_dir, resume_argv: list[str], process_index: int = 0, world_size: int = 1) -> None:
    """Note the run in progress: its output folder, the command line that resumes it and this process's place."""
    _running.update(output_dir=Path(output_dir), argv=list(resume_argv), process=(process_index, world_size))


def describe_interruption() -> str:
    """Which checkpoints survive and the command that resumes, when a training run was interrupted; else ''."""
    if not _running:
        return ""
    from .checkpoints import last_complete_checkpoint

    output_dir, argv = _running["output_dir"], _running["argv"]
    last = last_complete_checkpoint(output_dir, *_running["process"]) if output_dir.is_dir() else None
    if last is None:
        return f"No checkpoint was saved in {output_dir} yet; run the command again to start afresh."
    resume = [a for a in argv if a not in ("--overwrite_output_dir",)]
    if "--resume_from_checkpoint" not in resume:
        resume += ["--resume_from_checkpoint", "last"]
    return f"{last} is complete; resume with: {shlex.join([train_program(), *resume])}"


def train_program() -> str:
    """How to call riformer-train again: as the user called it (`.venv/bin/riformer-train`) when the bare name would
    not find that script on PATH, else `riformer-train` (also for `python -m riformer_hf.cli train` and launchers)."""
    called = sys.argv[0] if sys.argv else ""
    if Path(called).name != "riformer-train":
        return "riformer-train"
    on_path = shutil.which("riformer-train")
    if os.sep not in called or (on_path is not None and Path(on_path).resolve() == Path(called).resolve()):
        return "riformer-train"
    return called


__all__ = ["describe_interruption", "record_training_run"]
