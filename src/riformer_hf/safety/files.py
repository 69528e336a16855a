"""Output files (`--output_json`, `--confusion_matrix`, `--plot`): checked before the run, written in one step.

    output_json = check_output_file(args.output_json, "--output_json")
    plot = check_output_file(args.plot, "--plot", suffixes=PLOT_SUFFIXES, others=[("--output_json", output_json)])
    ...                                             # the run
    write_file(output_json, json.dumps(result))     # a temporary file beside it, renamed over it

An existing file is replaced (reports are written again on every run), in one rename: a reader never sees half a file
and a failed run leaves the earlier one. Refused before the run: a folder; a read-only file (no write bit: also for
root); a file of a model, export or run folder (`run/config.json`, `run/eval_results.json`: replacing it would make
that folder inconsistent); a folder that cannot be created or written (a probe that leaves missing folders missing);
a suffix the writer cannot produce; two options naming one file.
"""

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import EarlierOutputError, OutputError
from .inventory import inventory, kind_of
from .paths import probe_writable, real_path

PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def check_output_file(path, flag: str | None = None, *, suffixes: Iterable[str] | None = None,
                      others: Iterable[tuple[str | None, object]] = ()) -> Path | None:
    """Check, before any work, that `path` can be written at the end; returns it as a Path (None for None).
    `suffixes`: the endings the writer can produce; `others`: `(flag, path)` of the command's other output files."""
    if path is None:
        return None
    path = Path(path)
    label = f"{flag} {path}" if flag else f"Output file {path}"
    if path.is_dir():
        raise OutputError(f"{label} is a folder: give a file name (e.g. {path / 'results.json'}).")
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise OutputError(f"{label}: {path.suffix or 'no suffix'} is not a format it can write: give a file ending in "
                          f"{', '.join(suffixes)}.")
    for other_flag, other in others:
        if other is not None and real_path(other) == real_path(path):
            raise OutputError(f"{label} and {other_flag or 'another output'} {other} are one file: give two names.")
    if os.path.lexists(path):
        found = inventory(path.parent) if kind_of(path) else None
        if found and {kind for _, kind in found.earlier} & {"model", "export", "run"}:
            raise EarlierOutputError(f"{label} is part of {found.describe()} in {path.parent}: writing it would leave "
                                     "that folder inconsistent: give another file name.")
        if not path.stat().st_mode & 0o222:
            raise OutputError(f"{label} is read-only: make it writable (chmod u+w {path}) or give another file name.")
    try:
        probe_writable(real_path(path).parent)
    except OSError as error:
        raise OutputError(f"{label} cannot be written in {path.parent} ({type(error).__name__}: "
                          f"{error.strerror or error}): give a file in a folder you can write to.") from None
    return path


@contextlib.contextmanager
def staged_file(path) -> Iterator[Path]:
    """A temporary path beside `path`, with its suffix (writers such as matplotlib read the format from it), renamed
    over `path` when the block succeeds (keeping the old file's mode) and removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.riformer-{os.getpid()}-{secrets.token_hex(3)}{path.suffix}")
    try:
        yield temporary
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def write_file(path, data: str | bytes) -> Path:
    """Write `data` to `path` in one step (`staged_file`); returns `path`."""
    with staged_file(path) as temporary:
        (temporary.write_text if isinstance(data, str) else temporary.write_bytes)(data)
    return Path(path)


__all__ = ["PLOT_SUFFIXES", "check_output_file", "staged_file", "write_file"]
