"""The run lock: one process at a time writes into an output folder; a lock left by a killed process is taken over.

    with RunLock("run", label="--output_dir run", flag="--output_dir"):
        ...                        # a second taker is refused at once (OutputInUseError), naming this process

The lock is a file beside the folder, `.NAME.riformer-lock` (inside it, `.riformer-lock`, when the parent cannot be
written). It exists while a process holds it and holds one JSON record: pid, host, boot id, the process's start time,
the command line, when it was taken, and the run key of a multi-process launch. Whether its holder still runs:

- `flock` (non-blocking) on the file. The kernel drops the flock of a dead process (SIGKILL too), so a free flock
  under a record of this machine (same boot id, containers included) means the holder is gone: the lock is taken over
  with a warning. Forked children (data-loader workers) close their copy, so one that outlives a killed trainer does
  not keep the folder locked.
- A record of another machine (a shared filesystem, whose locks may not reach across machines): its holder touches
  the file every `heartbeat` seconds; a record not touched for `stale_after` seconds is taken over. Clocks must
  roughly agree.
- Without flock (a filesystem that refuses it, or no `fcntl`): the record alone. On this machine the pid must run
  with the recorded start time (a reused pid is not the holder); a write and a read-back settle two takers at once.

The ranks of one `accelerate launch` / torchrun share a run key (MASTER_ADDR:MASTER_PORT:TORCHELASTIC_RUN_ID): the
saving process takes the lock and the others `join()` it, while another launch is refused.
"""

import contextlib
import errno
import json
import logging
import os
import secrets
import shlex
import socket
import sys
import threading
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Self

try:
    import fcntl
except ImportError:  # Windows: the record and its heartbeat decide
    fcntl = None

from ..errors import OutputError, OutputInUseError
from .paths import missing_folders, parent_writable, real_path, remove_folders

logger = logging.getLogger(__name__)

HEARTBEAT_S, STALE_AFTER_S = 15.0, 120.0
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def lock_path(folder) -> Path:
    """The lock file of `folder`; every spelling of one folder (relative, through links) gives the same file."""
    real = real_path(folder)
    return real.parent / f".{real.name}.riformer-lock" if parent_writable(real) else real / ".riformer-lock"


def boot_id() -> str | None:
    """This kernel's boot id (Linux): equal ids mean one machine, since one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of `pid` from /proc; None without an entry there."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[19])


def pid_running(pid: int, start: int | None = None) -> bool:
    """Whether `pid` runs on this machine (a zombie does not) and, given its `start`, is that process (not a reuse)."""
    if os.name == "nt":
        return True  # never probed there: os.kill(pid, 0) would send it Ctrl-C
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    state = process_state(pid)
    return state is None or (state[0] not in ("Z", "X") and start in (None, state[1]))


def run_key() -> str | None:
    """What the ranks of one multi-process launch share; None for a single process."""
    if os.environ.get("WORLD_SIZE", "1").strip() in ("", "0", "1"):
        return None
    return ":".join(os.environ.get(k, "") for k in ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID"))


@dataclass(frozen=True)
class LockRecord:
    """Who holds a lock: one JSON line in the lock file."""

    pid: int
    host: str
    command: str
    started: str  # when the lock was taken: local time with its UTC offset
    boot_id: str | None = None
    pid_start: int | None = None
    run_key: str | None = None
    token: str = ""

    @classmethod
    def mine(cls, command: str | None = None) -> "LockRecord":
        if command is None:
            command = shlex.join([Path(sys.argv[0]).name if sys.argv else "python", *sys.argv[1:]])
            command = command if len(command) <= 200 else command[:197] + "..."
        state = process_state(os.getpid())
        return cls(os.getpid(), socket.gethostname(), command, time.strftime("%Y-%m-%d %H:%M:%S%z"), boot_id(),
                   None if state is None else state[1], run_key(), secrets.token_hex(8))

    @classmethod
    def parse(cls, data: bytes) -> "LockRecord | None":
        try:
            fields = json.loads(data.decode())
            return cls(**{name: fields[name] for name in cls.__dataclass_fields__ if name in fields})
        except (ValueError, TypeError, AttributeError):
            return None  # empty (being written) or not a record

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} since {self.started} ({self.command})"

    def same_machine(self) -> bool:
        mine = boot_id()
        if self.boot_id is None and mine is None:
            return self.host == socket.gethostname()
        return self.boot_id == mine


def read_record(path) -> LockRecord | None:
    """The record in the lock file `path`, or None (no file, or no record yet)."""
    try:
        return LockRecord.parse(Path(path).read_bytes())
    except OSError:
        return None


class RunLock:
    """The run lock of `folder` (see the module docstring). `label` names the folder in messages (`--output_dir
    run`), `flag` is the option in the fix ("give another --output_dir"); `command` is recorded (default: argv)."""

    def __init__(self, folder, *, label: str | None = None, flag: str | None = None, command: str | None = None,
                 stale_after: float = STALE_AFTER_S, heartbeat: float = HEARTBEAT_S):
        self.folder = Path(folder)
        self.label = label or f"Output folder {folder}"
        self.other = f"another {flag}" if flag else "another folder"
        self.path = lock_path(folder)
        self.command, self.stale_after, self.heartbeat = command, stale_after, heartbeat
        self.key = run_key()
        self.record: LockRecord | None = None
        self.took_over: LockRecord | None = None  # the record of a holder that had gone
        self.joined = False  # passed as a rank of the launch that holds the lock
        self._fd: int | None = None
        self._created: list[Path] = []
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._fork_hook = False

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> Self:
        return self if self.held or self.joined else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> "RunLock":
        """Take the lock, or raise `OutputInUseError` at once, naming the process that holds it."""
        if self.held or self.joined:
            return self
        self._created = missing_folders(self.path.parent)
        try:
            for _ in range(20):  # a holder that releases (unlinks the file) between our open and our flock
                if self._take():
                    return self
            raise OutputInUseError(f"{self.label} is in use: its lock {self.path} keeps changing hands: try again.")
        except BaseException:
            remove_folders(self._created)
            raise

    def _take(self) -> bool:
        """One attempt: True when the lock is taken (or joined), False when its file changed under us."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as error:
            raise OutputError(f"{self.label}: cannot create its lock file {self.path} ({type(error).__name__}: "
                              f"{error.strerror or error}): give a folder you can write to.") from None
        try:
            flocked = _flock(fd)
            if flocked is not False and not _same_file(fd, self.path):  # unlinked by a releasing holder: again
                os.close(fd)
                return False
            holder = self._read_settled() if flocked is None else self._record_in(fd, flocked)
            if flocked is None or (holder is not None and self._alive(holder, fd, flocked)):
                if holder is None or not self._same_launch(holder):
                    raise self._in_use(holder, flock_busy=flocked is None)
                os.close(fd)
                self.joined = True  # another process of this launch holds it (a second saving process)
                return True
            self._write_mine(fd, flocked)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise
        self.took_over = holder
        if holder is not None:
            logger.warning("%s: took over the lock %s left by %s, which is no longer running.", self.label,
                           self.path, holder.describe())
        self._close_in_forked_children()
        self._start_heartbeat()
        return True

    @staticmethod
    def _record_in(fd: int, flocked: bool) -> LockRecord | None:
        holder = LockRecord.parse(_read(fd))
        if holder is None and not flocked:
            time.sleep(0.05)  # another taker between creating the file and writing its record
            holder = LockRecord.parse(_read(fd))
        return holder

    def _write_mine(self, fd: int, flocked: bool) -> None:
        record = LockRecord.mine(self.command)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(asdict(record)).encode() + b"\n")
        os.fsync(fd)
        if not flocked:  # no kernel lock: the last writer wins; read back once the others had time to write
            time.sleep(0.05)
            now = LockRecord.parse(_read(fd))
            if now is None or now.token != record.token:
                raise self._in_use(now)
        self._fd, self.record = fd, record

    def _alive(self, holder: LockRecord, fd: int, flocked: bool) -> bool:
        if holder.same_machine():
            if flocked:
                return False  # the kernel gave us its flock: no process of this machine holds it
            if os.name != "nt":
                return pid_running(holder.pid, holder.pid_start)
        return time.time() - os.fstat(fd).st_mtime < self.stale_after  # its heartbeat

    def _same_launch(self, holder: LockRecord) -> bool:
        return self.key is not None and holder.run_key == self.key

    def _read_settled(self) -> LockRecord | None:
        for _ in range(10):  # × 50 ms: a holder between creating the file and writing its record
            holder = read_record(self.path)
            if holder is not None:
                return holder
            time.sleep(0.05)
        return None

    def _in_use(self, holder: LockRecord | None, flock_busy: bool = False) -> OutputInUseError:
        if holder is None:
            return OutputInUseError(f"{self.label} is in use by another process (its lock {self.path} names none "
                                    f"yet): wait for it to finish, or give {self.other}.")
        note = ""
        if not holder.same_machine():
            with contextlib.suppress(OSError):
                age = time.time() - self.path.stat().st_mtime
                note = (f" (another machine; last heartbeat {age:.0f} s ago, taken over after {self.stale_after:.0f} "
                        "s without one)")
        elif flock_busy and not pid_running(holder.pid, holder.pid_start):
            note = " (that process has ended; a process it started still holds the lock: try again in a few seconds)"
        return OutputInUseError(f"{self.label} is in use by {holder.describe()}{note}: wait for it to finish, or give "
                                f"{self.other}; if that process is gone, delete {self.path}.")

    def join(self) -> "RunLock":
        """For the other ranks of a launch whose saving process took the lock: pass when the record is this launch's
        (or there is none); raise `OutputInUseError` when another launch holds the folder."""
        holder = self._read_settled() if self.path.exists() else None
        if holder is not None and not self._same_launch(holder):
            raise self._in_use(holder)
        self.joined = True
        return self

    def release(self) -> None:
        """Give the lock back (its file is deleted); does nothing when not held."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None
        fd, self._fd = self._fd, None
        if fd is not None:
            if _same_file(fd, self.path) and read_record(self.path) in (None, self.record):
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            os.close(fd)
        self.joined = False
        remove_folders(self._created)
        self._created = []

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        target = self._fd if os.utime in os.supports_fd else self.path

        def beat():
            while not self._stop.wait(self.heartbeat):
                with contextlib.suppress(OSError):
                    os.utime(target)

        self._beat = threading.Thread(target=beat, name="riformer-lock-heartbeat", daemon=True)
        self._beat.start()

    def _close_in_forked_children(self) -> None:
        """A forked child (a data-loader worker) closes its copy of the descriptor: once this process is gone, the
        flock is free even while the child runs on."""
        if self._fork_hook or not hasattr(os, "register_at_fork"):
            return
        self._fork_hook = True
        ref = weakref.ref(self)

        def in_child():
            lock = ref()
            if lock is not None and lock._fd is not None:
                fd, lock._fd, lock._beat = lock._fd, None, None
                with contextlib.suppress(OSError):
                    os.close(fd)

        os.register_at_fork(after_in_child=in_child)


def _flock(fd: int) -> bool | None:
    """True: locked; None: another process holds it; False: no flock on this system or filesystem."""
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        if error.errno in _NO_FLOCK:
            return False
        raise
    return True


def _read(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 65536)


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, current = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino)


__all__ = ["HEARTBEAT_S", "STALE_AFTER_S", "LockRecord", "RunLock", "lock_path", "pid_running", "read_record",
           "run_key"]
