"""The console scripts: one table of commands and the one boundary where errors become exit codes.

Each command's parser lives next to its `main(argv)`; this module only finds that `main` and runs it.

    0    done
    1    internal failure (a bug, here or in a library): its traceback, then a line asking to report it
    2    user error (`riformer_hf.errors.UserError`: a bad value, a missing or unreadable input, an output that cannot
         be written): one `error: …` line naming the problem, the value and the fix; nothing already saved was changed
    3    saved locally but not pushed (the Hub failed): the `error: …` line ends with the command that retries
    130  interrupted (Ctrl-C): what was saved, and the command that resumes where there is one

`--debug` prints the traceback for codes 2 and 3 too. `python -m riformer_hf.cli COMMAND ...` runs the same commands.
"""

import importlib
import logging
import os
import sys
import traceback
from dataclasses import dataclass

USER_ERROR = 2
NOT_PUSHED = 3
INTERRUPTED = 130
BUG_REPORT = "This is a bug in riformer_hf or a library it drives: please report it with the traceback above."


@dataclass(frozen=True)
class Command:
    module: str  # holds `main(argv)` and the command's parser
    summary: str


COMMANDS = {
    "train": Command("riformer_hf.training.run", "distil or train a student (or a teacher) with the paper's recipe"),
    "eval": Command("riformer_hf.evaluation.run", "top-1 / top-k of a model folder, Hub id or exported graph"),
    "export": Command("riformer_hf.export.run", "ONNX or OpenVINO (and INT8) export of a RIFormer"),
    "reparameterize": Command("riformer_hf.export.deploy", "training-form folder → deploy folder"),
    "convert": Command("riformer_hf.convert.run", "mmpretrain | gfnet | poolformer weights → a model folder"),
    "push": Command("riformer_hf.export.hub", "the deploy export → the Hub"),
    "demo": Command("riformer_hf.demo", "the embedded digits demo (no network)"),
    "bench": Command("riformer_hf.benchmarks.run", "speed and memory against PoolFormer"),
}


def run_command(name: str, argv: list[str] | None = None) -> int:
    """Run command `name` on `argv` (default: `sys.argv[1:]`) and map what it raises to an exit code."""
    from .errors import UserError
    from .export.hub import HubPushError
    from .training.interrupt import describe_interruption

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    main = importlib.import_module(COMMANDS[name].module).main
    try:
        main(argv)
    except KeyboardInterrupt:
        print(f"error: interrupted. {describe_interruption()}".rstrip(), file=sys.stderr)
        return INTERRUPTED
    except HubPushError as error:  # several lines: what failed, what is saved, the retry command
        _report(str(error), debug)
        _leave_process_group()
        return NOT_PUSHED
    except UserError as error:
        _report(" ".join(str(error).split()) or type(error).__name__, debug)
        _leave_process_group()
        return USER_ERROR
    except Exception:  # noqa: BLE001 -- the boundary: anything else is a bug, shown whole
        traceback.print_exc()
        print(BUG_REPORT, file=sys.stderr)
        return 1
    return 0


def _report(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)


def _leave_process_group() -> None:
    """A process of a multi-process run that stops with an error leaves its process group before exiting: an exit
    with the group alive can abort in the communication library's teardown (SIGABRT instead of the exit code)."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def _entry(name: str):
    def entry(argv: list[str] | None = None) -> int:
        code = run_command(name, argv)
        if argv is None and code == USER_ERROR:  # a refused console run: its line is out, nothing is left to do
            _exit_now(code)
        return code

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"`riformer-{name}`: {COMMANDS[name].summary}."
    return entry


train, evaluate, export, reparameterize = (_entry(n) for n in ("train", "eval", "export", "reparameterize"))
convert, push, demo, bench = (_entry(n) for n in ("convert", "push", "demo", "bench"))


def _exit_now(code: int) -> None:
    """Flush the output and the log handlers, then end the process without tearing down the modules torch and
    transformers loaded (0.3–2 s on two busy cores: a refused run would exit long after its one line)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """`python -m riformer_hf.cli COMMAND ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        lines = "\n".join(f"  {name:<15} {command.summary}" for name, command in COMMANDS.items())
        print(f"usage: python -m riformer_hf.cli COMMAND [args]\n{lines}", file=sys.stderr)
        return USER_ERROR
    return run_command(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
