"""What an interrupted command leaves behind, for the line the command line prints on Ctrl-C."""

import shlex
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
    return f"{last} is complete; resume with: riformer-train {shlex.join(resume)}"


__all__ = ["describe_interruption", "record_training_run"]
