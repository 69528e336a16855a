"""Output safety for every command that writes: nothing already on disk is lost, and a refusal is one line.

- `folder.OutputFolder`: the output-folder guard (checks before any work; staged writes moved into place whole;
  `--overwrite_output_dir` keeps the user's own files) and `set_aside_earlier` for training afresh.
- `lock.RunLock`: one writer per folder; a lock left by a killed process is taken over with a warning.
- `files`: `--output_json`, `--confusion_matrix`, `--plot`: checked before the run, written in one rename.
- `inventory`: what a folder holds: earlier work versus the user's entries.

Refusals are `riformer_hf.errors.OutputError`s (exit code 2): `EarlierOutputError`, `OutputInUseError`.
"""

from .files import PLOT_SUFFIXES, check_output_file, staged_file, write_file
from .folder import OVERWRITE_HELP, OutputFolder, SetAside
from .inventory import Inventory, inventory
from .lock import RunLock, lock_path, read_record

__all__ = [
    "OVERWRITE_HELP",
    "PLOT_SUFFIXES",
    "Inventory",
    "OutputFolder",
    "RunLock",
    "SetAside",
    "check_output_file",
    "inventory",
    "lock_path",
    "read_record",
    "staged_file",
    "write_file",
]
