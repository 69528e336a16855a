"""The package's user errors: what the command line prints as one `error: …` line with exit code 2.

A `UserError` names the problem, the value and the fix. Code that drives a library (transformers, datasets, Pillow,
torch) turns the library's exception into one where the cause is the user's input (a missing folder, a config its
class refuses); every other exception is a bug and keeps its traceback (exit 1).
"""


class UserError(ValueError):
    """A bad value, a missing or unreadable input, an output that cannot be written: one line, exit code 2."""


class MissingInputError(UserError, FileNotFoundError):
    """A file, folder or Hub repo the user named that is not there."""


class OutputError(UserError, PermissionError):
    """An output folder or file that cannot be written (not writable, a file where a folder belongs, a full disk)."""


class EarlierOutputError(OutputError, FileExistsError):
    """An output folder holding an earlier model, export or run, without the flag that replaces it."""


class OutputInUseError(OutputError, BlockingIOError):
    """Another process holds the output folder's run lock."""


__all__ = ["EarlierOutputError", "MissingInputError", "OutputError", "OutputInUseError", "UserError"]
