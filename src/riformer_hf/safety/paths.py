"""Paths the guard and the lock share: a folder's real path, where its temporaries go, and a write probe that leaves
missing folders missing."""

import contextlib
import errno
import os
import secrets
import tempfile
from pathlib import Path


def real_path(path) -> Path:
    """The absolute path with symbolic links resolved: what every spelling of one folder shares (`run`, `./run`)."""
    return Path(os.path.realpath(os.fspath(path)))


def parent_writable(folder: Path) -> bool:
    """Whether entries can be created beside `folder` (a missing parent counts: it is created with the folder)."""
    parent = folder.parent
    return folder != parent and (not parent.exists() or os.access(parent, os.W_OK | os.X_OK))


def temporary_path(folder: Path, tag: str) -> Path:
    """A fresh name for a temporary folder of the real path `folder`: `.NAME.riformer-TAG-PID-XXXXXX` beside it, or
    `.riformer-TAG-PID-XXXXXX` inside it when the parent cannot be written or lies on another filesystem (a mounted
    volume: moves between the two would not be renames)."""
    name = f"riformer-{tag}-{os.getpid()}-{secrets.token_hex(3)}"
    beside = parent_writable(folder) and not (folder.is_dir() and folder.stat().st_dev != folder.parent.stat().st_dev)
    return folder.parent / f".{folder.name}.{name}" if beside else folder / f".{name}"


def missing_folders(folder: Path) -> list[Path]:
    """`folder` and its parents that do not exist yet, deepest first: what `remove_folders` removes again."""
    return [p for p in (folder, *folder.parents) if not os.path.lexists(p)]


def remove_folders(created: list[Path]) -> None:
    """Remove folders that were created (deepest first), where they are still empty."""
    for folder in created:
        with contextlib.suppress(OSError):
            folder.rmdir()


def probe_writable(folder: Path) -> None:
    """Create `folder` (with missing parents) and a file in it, then remove what was created. Raises OSError."""
    if os.path.lexists(folder) and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
    for attempt in range(3):
        created = missing_folders(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                return
        except FileNotFoundError:  # another process's probe removed the folder it had created: probe again
            if attempt == 2:
                raise
        finally:
            remove_folders(created)


__all__ = ["missing_folders", "parent_writable", "probe_writable", "real_path", "remove_folders", "temporary_path"]
