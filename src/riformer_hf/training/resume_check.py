"""What a `checkpoint-N` folder must hold for `transformers.Trainer` to resume a run exactly, and which checkpoint every
process of a run can resume from.

`Trainer` resumes from whatever it finds: without `optimizer.pt` it goes on with a fresh optimizer, without a process's
`rng_state_N.pth` with other random numbers, silently. So a checkpoint is complete for a process when it holds, in the
layout the run saved it in:

- one process or DDP: `model.safetensors` (or `pytorch_model.bin`, an index) and `optimizer.pt`, written by the main
  process (each machine's with `save_on_each_node`);
- FSDP `FULL_STATE_DICT`: `pytorch_model_fsdp.bin` and `optimizer.bin`, written by process 0;
- FSDP `SHARDED_STATE_DICT`: `pytorch_model_fsdp_0/` and `optimizer_0/`, each process writing its shard and process 0
  the `.metadata` that makes them readable;
- DeepSpeed: `latest` naming `global_stepN/`, holding `mp_rank_00_model_states.pt` (ZeRO-3: this process's
  `zero_pp_rank_R_mp_rank_00_model_states.pt`) and this process's `*zero_pp_rank_R_mp_rank_00_optim_states.pt`;

plus `scheduler.pt` (not under DeepSpeed when its config has the scheduler), `trainer_state.json` (written last: a
folder without it is an interrupted save) and the process's RNG state (`rng_state.pth` for one process, else
`rng_state_<process index>.pth`, written by every process into its own machine's folder).

On several machines each process sees its own machine's disk: unless `--output_dir` is on storage they all share, a
checkpoint is whole only on the machine that wrote it. The run therefore asks every process what it can read
(`gather_views`, a collective; `training.checks.resolve_resume`) and picks the newest checkpoint complete for all
of them, or fails the same way on every process, with a line that names the storage to use.
"""

import json
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

TRAINER_STATE_FILE = "trainer_state.json"
SCHEDULER_FILE = "scheduler.pt"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin")
FSDP_FULL_WEIGHTS = "pytorch_model_fsdp.bin"
FSDP_SHARDED_WEIGHTS = "pytorch_model_fsdp_0"
FSDP_SHARDED_OPTIMIZER = "optimizer_0"
DEEPSPEED_LATEST = "latest"
_STEP = re.compile(r"checkpoint-(\d+)")

STORAGE_HINT = (
    "every process must read the whole checkpoint: give all machines the same --output_dir on storage they share "
    "(FSDP needs it), or pass --save_on_each_node so that each machine keeps a whole copy (DDP; DeepSpeed also with "
    '"checkpoint": {"use_node_local_storage": true} in its config)'
)


def checkpoint_layout(folder) -> str:
    """How the run saved `folder`: "deepspeed", "fsdp-sharded", "fsdp-full" or "plain" (one process or DDP)."""
    folder = Path(folder)
    if (folder / DEEPSPEED_LATEST).is_file() or any(folder.glob("global_step*")):
        return "deepspeed"
    if any(p.is_dir() for p in folder.glob("pytorch_model_fsdp_*")):
        return "fsdp-sharded"
    if (folder / FSDP_FULL_WEIGHTS).is_file():
        return "fsdp-full"
    return "plain"


def rng_file(process_index: int, world_size: int) -> str:
    """The RNG state `Trainer` saves for, and restores into, this process."""
    return "rng_state.pth" if world_size <= 1 else f"rng_state_{process_index}.pth"


def missing_for_resume(folder, process_index: int = 0, world_size: int = 1, scheduler_file: bool = True) -> list[str]:
    """What process `process_index` of a `world_size`-process run lacks in `folder` to resume exactly (see the module
    docstring); empty when nothing. `scheduler_file=False` when DeepSpeed's config holds the scheduler."""
    folder = Path(folder)
    if not folder.is_dir():
        return ["the folder itself"]
    missing = []
    try:
        json.loads((folder / TRAINER_STATE_FILE).read_text())
    except (OSError, ValueError):
        missing.append(f"{TRAINER_STATE_FILE} (the trainer state, written last)")
    layout = checkpoint_layout(folder)
    if layout == "deepspeed":
        missing += _deepspeed_missing(folder, process_index)
    elif layout == "fsdp-sharded":
        for name, what in ((FSDP_SHARDED_WEIGHTS, "model shards"), (FSDP_SHARDED_OPTIMIZER, "optimizer shards")):
            if not (folder / name / ".metadata").is_file():
                missing.append(f"{name}/.metadata ({what})")
    elif layout == "fsdp-full":
        if not (folder / "optimizer.bin").is_file():
            missing.append("optimizer.bin (the optimizer state)")
    else:
        if not any((folder / name).is_file() for name in WEIGHT_FILES):
            missing.append("model.safetensors (the weights)")
        if not any((folder / name).is_file() for name in OPTIMIZER_FILES):
            missing.append("optimizer.pt (the optimizer state)")
    if (scheduler_file or layout != "deepspeed") and not (folder / SCHEDULER_FILE).is_file():
        missing.append(f"{SCHEDULER_FILE} (the learning-rate schedule)")
    rng = rng_file(process_index, world_size)
    if not (folder / rng).is_file():
        whose = f"process {process_index}'s" if world_size > 1 else "the"
        missing.append(f"{rng} ({whose} random state)")
    return missing


def _deepspeed_missing(folder: Path, process_index: int) -> list[str]:
    try:
        tag = (folder / DEEPSPEED_LATEST).read_text().strip()
    except OSError:
        return [f"{DEEPSPEED_LATEST} (DeepSpeed's pointer to its checkpoint)"]
    states = folder / tag
    if not states.is_dir():
        return [f"{tag}/ (DeepSpeed's checkpoint)"]
    missing = []
    per_process = any(states.glob("zero_pp_rank_*_mp_rank_00_model_states.pt"))  # ZeRO-3
    model = f"zero_pp_rank_{process_index}_mp_rank_00_model_states.pt" if per_process else "mp_rank_00_model_states.pt"
    if not (states / model).is_file():
        missing.append(f"{tag}/{model} (the model states)")
    optimizers = list(states.glob("*_optim_states.pt"))
    # ZeRO-1/2/3 partition the optimizer: one file per process. Without ZeRO it lives in the model states.
    own = f"zero_pp_rank_{process_index}_mp_rank_00_optim_states.pt"
    if optimizers and not any(p.name.endswith(own) for p in optimizers):
        missing.append(f"{tag}/zero_pp_rank_{process_index}_mp_rank_00_optim_states.pt (process {process_index}'s "
                       "optimizer partition)")
    return missing


def is_rng_only(missing: list[str]) -> bool:
    return bool(missing) and all(item.startswith("rng_state") for item in missing)


def step_of(name: str) -> int:
    match = _STEP.fullmatch(name)
    return int(match.group(1)) if match else -1


@dataclass
class ProcessView:
    """What one process can read: checkpoint name → what it lacks there (absent name: it does not see the folder)."""

    process_index: int
    host: str
    missing: dict[str, list[str]] = field(default_factory=dict)

    def lacks(self, name: str) -> list[str]:
        return self.missing.get(name, ["the folder itself"])

    def describe(self) -> str:
        return f"process {self.process_index} (host {self.host})"


def gather_views(view: ProcessView) -> list[ProcessView]:
    """Every process's view, in process order (a collective when several processes run; one view otherwise)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [view]
    views = [None] * dist.get_world_size()
    dist.all_gather_object(views, view)
    dist.barrier()  # every process holds every view before any acts on them (and may exit with the same error)
    return sorted(views, key=lambda v: v.process_index)


def local_view(folders, process_index: int, world_size: int, scheduler_file: bool = True) -> ProcessView:
    return ProcessView(process_index, socket.gethostname(), {
        Path(f).name: missing_for_resume(f, process_index, world_size, scheduler_file) for f in folders
    })


def lacking(views: list[ProcessView], name: str) -> list[tuple[ProcessView, list[str]]]:
    """The processes for which checkpoint `name` is incomplete, with what each lacks."""
    return [(view, view.lacks(name)) for view in views if view.lacks(name)]


def describe_lacking(views: list[ProcessView], name: str) -> str:
    """`it lacks a, b` when every process lacks the same; else `process P (host H) lacks a; ...`."""
    gaps = lacking(views, name)
    if len(gaps) == len(views) and all(items == gaps[0][1] for _, items in gaps):
        return f"it lacks {', '.join(gaps[0][1])}"
    parts = [f"{view.describe()} lacks {', '.join(items)}" for view, items in gaps[:4]]
    return "; ".join(parts) + (f"; and {len(gaps) - 4} more processes" if len(gaps) > 4 else "")


def split_visibility(views: list[ProcessView], names) -> str | None:
    """A checkpoint complete for some processes but not all (machines that do not share the output folder)."""
    for name in sorted(names, key=step_of, reverse=True):
        gaps = lacking(views, name)
        if gaps and len(gaps) < len(views):
            return name
    return None


__all__ = [
    "STORAGE_HINT",
    "ProcessView",
    "checkpoint_layout",
    "describe_lacking",
    "gather_views",
    "is_rng_only",
    "lacking",
    "local_view",
    "missing_for_resume",
    "rng_file",
    "split_visibility",
    "step_of",
]
