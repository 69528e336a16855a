"""What an output folder holds: earlier work (what this package, transformers, optimum or OpenVINO write into an output
folder) and everything else, which is the user's: never a reason to refuse, never moved, never removed.

Only the top level counts. Hidden entries (`.git`, the guard's own `.riformer-…` temporaries) are the user's."""

import re
from dataclasses import dataclass
from pathlib import Path

# (kind, name, is a folder), in the order a refusal lists them.
EARLIER_WORK = tuple((kind, re.compile(name), is_dir) for kind, name, is_dir in (
    ("model", r"config\.json", False),
    ("model", r"[\w.-]*\.safetensors(\.index\.json)?", False),
    ("model", r"pytorch_model[\w.-]*\.bin(\.index\.json)?", False),
    ("export", r"[\w.-]*\.onnx([._]data)?", False),
    ("export", r"openvino[\w.-]*\.(xml|bin)", False),  # openvino_model.xml/.bin, openvino_model_int8.xml/.bin
    ("run", r"checkpoint-\d+", True),
    ("run", r"trainer_state\.json|training_args\.bin", False),
    ("card", r"README\.md", False),
    ("model", r"(pre)?processor_config\.json|generation_config\.json", False),
    ("model", r"(configuration|modeling|fused)_\w+\.py", False),  # code for trust_remote_code
    ("model", r"training", True),  # the training form beside a deploy export
    ("results", r"\w*_results\.json", False),
))
# How a refusal names a folder's earlier work: by its most telling kind.
KIND_NAMES = {"run": "an earlier run", "export": "an earlier export", "model": "an earlier model",
              "card": "an earlier model card", "results": "earlier results"}
SHOWN = 6
IR_PAIR = (".xml", ".bin")


def _rank(entry: Path) -> tuple[int, int, str] | None:
    """(position in EARLIER_WORK, checkpoint step, kind) of an entry that is earlier work; None for the user's."""
    name, is_dir = entry.name, entry.is_dir()
    if name.startswith("."):
        return None
    for position, (kind, pattern, wants_dir) in enumerate(EARLIER_WORK):
        if wants_dir == is_dir and pattern.fullmatch(name):
            return position, int(name[len("checkpoint-"):]) if kind == "run" and is_dir else 0, kind
    if not is_dir and entry.suffix in (".xml", ".bin") and all(entry.with_suffix(s).is_file() for s in IR_PAIR):
        return len(EARLIER_WORK), 0, "export"  # an OpenVINO IR under another name: NAME.xml + NAME.bin
    if is_dir and name == "runs" and any(entry.rglob("events.out.tfevents.*")):
        return len(EARLIER_WORK), 0, "run"  # a Trainer's TensorBoard logs
    return None


def kind_of(entry: Path) -> str | None:
    """The kind of earlier work a top-level entry of an output folder is (model, export, run, card, results)."""
    rank = _rank(entry)
    return None if rank is None else rank[2]


@dataclass(frozen=True)
class Inventory:
    """The top level of a folder: `earlier` work as (name, kind) in message order, and the user's entries."""

    earlier: tuple[tuple[str, str], ...] = ()
    foreign: tuple[str, ...] = ()

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.earlier]

    def describe(self) -> str:
        """`an earlier run (config.json, model.safetensors, checkpoint-2, … and 3 more)`."""
        kinds = {kind for _, kind in self.earlier}
        shown = ", ".join(self.names[:SHOWN])
        if len(self.names) > SHOWN:
            shown += f" and {len(self.names) - SHOWN} more"
        return f"{next(KIND_NAMES[k] for k in KIND_NAMES if k in kinds)} ({shown})"


def inventory(folder) -> Inventory:
    """What the top level of `folder` holds (nothing, for a missing folder or a file)."""
    folder = Path(folder)
    if not folder.is_dir():
        return Inventory()
    ranked, foreign = [], []
    for entry in folder.iterdir():
        rank = _rank(entry)
        if rank is None:
            foreign.append(entry.name)
        else:
            ranked.append((*rank, entry.name))
    earlier = tuple((name, kind) for _, _, kind, name in sorted(ranked, key=lambda r: (r[0], r[1], r[3])))
    return Inventory(earlier, tuple(sorted(foreign)))


__all__ = ["EARLIER_WORK", "Inventory", "inventory", "kind_of"]
