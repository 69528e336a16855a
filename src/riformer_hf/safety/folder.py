"""The output-folder guard: every check before any work, and writes that leave either the old folder or the new one.

    folder = OutputFolder(args.output_dir, overwrite=args.overwrite_output_dir, sources=[("--model_dir", src)])
    with folder.claim():                    # the checks, the run lock (`lock`), the checks again under it
        ...                                 # load, convert, validate
        with folder.staged() as staging:    # the new output is written into `staging` ...
            model.save_pretrained(staging)
    # ... and the folder now holds exactly it, plus the user's own entries (`inventory`)

- The checks: the folder is not a file; nothing the command reads lies in what would be replaced; it holds no earlier
  model, export or run unless `overwrite`; it can be written (a probe that leaves missing folders missing). Each
  refusal is an `OutputError`: one line naming the folder, what it holds and the fix.
- `staged()`: a missing folder is one rename of the staging folder. Otherwise the earlier entries are moved out, the
  new ones in, then the earlier ones deleted; a failure part-way moves everything back. An error or Ctrl-C inside
  the block leaves the folder as it was.
- `set_aside_earlier()`, for training afresh, which writes as it goes: the earlier run is moved aside, put back if the
  new run stops before it wrote anything, deleted once it has saved (`discard()`) or when the block ends.

Temporaries (`.NAME.riformer-staging|replaced|old-PID-XXXXXX`) go beside the folder, or inside it when its parent
cannot be written or lies on another filesystem; a check warns about those a killed process left.
"""

import contextlib
import errno
import logging
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import EarlierOutputError, OutputError
from .inventory import Inventory, inventory
from .lock import RunLock, pid_running
from .paths import missing_folders, probe_writable, real_path, remove_folders, temporary_path

logger = logging.getLogger(__name__)

OVERWRITE_HELP = ("replace an earlier model, export or run in the output folder: it then holds only the new files (and "
                  "your own files)")
_TEMPORARY = re.compile(r"riformer-(staging|replaced|old)-(\d+)-[0-9a-f]{6}")


class OutputFolder:
    """The output folder of a command.

    Args:
        path: the folder as the user gave it (messages name it so).
        flag: the option that named it (`--output_dir`); None for library calls ("Output folder PATH").
        overwrite: whether earlier work in it may be replaced (`--overwrite_output_dir`).
        fix: the end of the refusal of earlier work (default: give --overwrite_output_dir, or another folder).
        sources: `(flag, path)` of what the command reads: refused when it lies in what would be replaced.
    """

    def __init__(self, path, flag: str | None = "--output_dir", *, overwrite: bool = False, fix: str | None = None,
                 sources: Iterable[tuple[str | None, object]] = ()):
        self.path = Path(path)
        self.flag, self.overwrite, self.fix = flag, overwrite, fix
        self.sources = [(source_flag, Path(source)) for source_flag, source in sources if source is not None]
        self.label = f"{flag} {path}" if flag else f"Output folder {path}"
        self._warned = False

    @property
    def real(self) -> Path:
        return real_path(self.path)

    # ---- the checks before any work ----

    def check_not_a_file(self) -> None:
        if os.path.lexists(self.path) and not self.path.is_dir():
            raise OutputError(f"{self.label} is a file: give a folder (it is created if missing).")

    def check_writable(self) -> None:
        try:
            probe_writable(self.real)
        except OSError as error:
            raise OutputError(f"{self.label} is not writable ({type(error).__name__}: {error.strerror or error}): "
                              "give a folder you can write to.") from None

    def check_contents(self) -> Inventory:
        """No source inside what the new output replaces; no earlier work unless overwriting. Returns the inventory."""
        real, found = self.real, inventory(self.real)
        for source_flag, source in self.sources:
            source_real = real_path(source)
            inside = real in source_real.parents and source_real.relative_to(real).parts[0] in found.names
            if source.exists() and (source_real == real or inside):
                given = f"{source_flag} {source}" if source_flag else str(source)
                raise OutputError(f"{self.label} holds what this command reads ({given}): replacing the folder would "
                                  f"delete it: give another {self.flag or 'output folder'}.")
        if found.earlier and not self.overwrite:
            raise EarlierOutputError(f"{self.label} holds {found.describe()}: {self._fix()}.")
        return found

    def _fix(self) -> str:
        if self.fix is not None:
            return self.fix
        if self.flag is None:
            return "pass overwrite=True to replace it (the folder then holds only the new files), or another folder"
        return (f"give --overwrite_output_dir to replace it (the folder then holds only the new files), or another "
                f"{self.flag}")

    def check(self, *, writable: bool = True, warn: bool = True) -> Inventory:
        """Every check (`writable=False`: no write probe, for processes that do not write), and `warn` about the
        temporaries of killed writes. Returns what the folder holds."""
        self.check_not_a_file()
        found = self.check_contents()
        if writable:
            self.check_writable()
        if warn:
            self.warn_leftovers()
        return found

    def leftovers(self) -> list[Path]:
        """Temporary folders beside (or in) the folder whose process has ended (a kill, a power cut)."""
        real, candidates = self.real, []
        with contextlib.suppress(OSError):
            candidates += [p for p in real.parent.iterdir() if p.name.startswith(f".{real.name}.riformer-")]
            candidates += [p for p in real.iterdir() if p.name.startswith(".riformer-")]
        found = [(p, _TEMPORARY.search(p.name)) for p in candidates]
        return sorted(p for p, match in found if match and p.is_dir() and not pid_running(int(match[2])))

    def warn_leftovers(self) -> None:
        """Once per folder: name the temporaries of killed writes (`replaced` ones hold an earlier run)."""
        if self._warned:
            return
        self._warned = True
        if left := self.leftovers():
            logger.warning("%s: %d temporary folder(s) left by an interrupted write: %s. `replaced` ones hold the "
                           "earlier output a new run had moved aside: delete them when you no longer need them.",
                           self.label, len(left), ", ".join(map(str, left)))

    @contextlib.contextmanager
    def claim(self) -> Iterator[Inventory]:
        """The checks, then the run lock for the block, then the checks again under it (another process may have
        written meanwhile). Yields what the folder holds."""
        self.check()
        with RunLock(self.path, label=self.label, flag=self.flag):
            yield self.check(writable=False)

    # ---- writing ----

    @contextlib.contextmanager
    def staged(self) -> Iterator[Path]:
        """Yield an empty staging folder; when the block succeeds, the folder holds exactly its contents (plus the
        user's entries it held). An error in the block leaves the folder as it was."""
        self.check_not_a_file()
        real = self.real
        created = missing_folders(real.parent)
        real.parent.mkdir(parents=True, exist_ok=True)
        staging = temporary_path(real, "staging")
        os.mkdir(staging)
        try:
            yield staging
        except BaseException:
            _discard(staging, created)
            raise
        try:
            self._move_into_place(staging)
        except EarlierOutputError:
            raise  # the new files stay in `staging`, which the message names
        except BaseException:
            _discard(staging, created)
            raise

    def _move_into_place(self, staging: Path) -> None:
        real = self.real
        if not real.exists():
            try:
                os.rename(staging, real)
                return
            except OSError as error:  # created meanwhile
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        found = inventory(real)
        if found.earlier and not self.overwrite:
            raise EarlierOutputError(
                f"{self.label} gained {found.describe()} while the new output was written: it is left as it is and "
                f"the new files are in {staging}: move them yourself, or run again with another "
                f"{self.flag or 'output folder'}."
            )
        new = [entry.name for entry in staging.iterdir()]
        replaced = [*found.names, *(name for name in found.foreign if name in new)]
        old = temporary_path(real, "old")
        os.mkdir(old)
        _move(replaced, real, old)
        try:
            _move(new, staging, real)
        except BaseException:
            _move(replaced, old, real)
            with contextlib.suppress(OSError):
                old.rmdir()
            raise
        shutil.rmtree(old, ignore_errors=True)
        staging.rmdir()

    @contextlib.contextmanager
    def set_aside_earlier(self) -> Iterator["SetAside | None"]:
        """Move the earlier work aside for the block (None when there is none): put back when the block fails before
        anything new was written, deleted when it ends (or at `discard()`, once the new run has saved)."""
        found = inventory(self.real)
        if not found.earlier:
            yield None
            return
        aside = SetAside(self, found.names)
        try:
            yield aside
        except BaseException:
            aside.put_back()
            raise
        aside.discard()


class SetAside:
    """Earlier work moved out of an output folder while a new run starts there (`OutputFolder.set_aside_earlier`)."""

    def __init__(self, folder: OutputFolder, names: list[str]):
        self.label, self.real, self.names = folder.label, folder.real, names
        self.path = temporary_path(self.real, "replaced")
        os.mkdir(self.path)
        _move(names, self.real, self.path)
        logger.info("%s: the earlier output (%s) is moved aside to %s until this run has saved.", self.label,
                    ", ".join(names), self.path)

    def discard(self) -> None:
        """Delete the earlier work (the new run has saved)."""
        shutil.rmtree(self.path, ignore_errors=True)

    def put_back(self) -> None:
        """The run stopped: put the earlier work back if the run wrote nothing, else keep it aside and say where."""
        if not self.path.exists():
            return
        written = inventory(self.real)
        if written.earlier:
            logger.warning("%s: this run stopped after writing %s; the earlier output it replaces is kept in %s: "
                           "delete it, or move its files back.", self.label, written.describe(), self.path)
            return
        _move(self.names, self.path, self.real)
        self.path.rmdir()
        logger.warning("%s: this run stopped before saving anything; the earlier output is back in place.",
                       self.label)


def _discard(staging: Path, created: list[Path]) -> None:
    shutil.rmtree(staging, ignore_errors=True)
    remove_folders(created)


def _move(names: list[str], source: Path, target: Path) -> None:
    """Rename each entry `names` of `source` into `target`; on a failure part-way, move those moved back."""
    moved = []
    try:
        for name in names:
            os.rename(source / name, target / name)
            moved.append(name)
    except BaseException:
        for name in reversed(moved):
            with contextlib.suppress(OSError):
                os.rename(target / name, source / name)
        raise


__all__ = ["OVERWRITE_HELP", "OutputFolder", "SetAside"]
