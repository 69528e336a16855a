"""Reading published checkpoints: `.pth` (bare, mmengine or DeiT wrapped) and `.safetensors` files, and loading
their tensors into our classes through one explicit key table that refuses anything that does not fit (a key with no
counterpart, a tensor the model needs but the file lacks, a shape that differs)."""

import argparse
import os
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError

from ..errors import MissingInputError, UserError

# Keys under which training frameworks nest the weights: mmengine, DeiT / GFNet, DataParallel-style wrappers.
CHECKPOINT_WRAPPERS = ("state_dict", "model", "module")
_MAX_LISTED = 20


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict inside a `.safetensors` or `.pth` file (loaded with `weights_only=True`), unwrapped."""
    return unwrap_state_dict(read_checkpoint(path))


def read_checkpoint(path: str | os.PathLike):
    """The object saved in a `.safetensors` or `.pth` file, as saved (possibly a wrapper around the weights)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"No checkpoint file at {path}.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except SafetensorError as error:
            with path.open("rb") as file:
                has_header = file.read(9)[8:] == b"{"  # 8 bytes of header length, then its JSON
            raise UserError(_unreadable(path, "a safetensors file", error, truncated=has_header)) from None
    with path.open("rb") as file:
        head = file.read(4)
    pytorch_format = head.startswith((b"PK\x03\x04", b"\x80"))  # torch.save's zip, legacy pickle
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # DeiT-style files keep the training `args`
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not pytorch_format:
            raise UserError(_unreadable(path, "a PyTorch checkpoint", error)) from None
        try:
            objects = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or "unknown"
        except Exception:  # noqa: BLE001 -- not a zip-format file: the refusal itself is the explanation
            objects = "unknown"
        raise UserError(
            f"{path} holds Python objects besides tensors ({objects}), which `torch.load(weights_only=True)` refuses "
            "to unpickle. If you trust the file, save its weights alone and convert that file: "
            f"`torch.save(torch.load({str(path)!r}, weights_only=False)['state_dict'], 'weights.pth')` "
            "(use the key that holds the weights: 'state_dict', 'model' or none)."
        ) from error
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError) as error:  # what torch.load raises on bad bytes
        raise UserError(_unreadable(path, "a PyTorch checkpoint", error, truncated=pytorch_format)) from None


def _unreadable(path: Path, what: str, error: Exception, truncated: bool = True) -> str:
    """Why `path` cannot be read: damaged (truncated) or not a checkpoint at all, and what to do."""
    size = path.stat().st_size
    if truncated:
        reason = " ".join(str(error).split()).split(". ")[0] or type(error).__name__
        problem = f"is not readable as {what} ({size:,} bytes; {reason})"
        fix = "the file is damaged, most often truncated by an interrupted download or copy: download it again"
    else:
        with path.open("rb") as file:
            problem = f"is not {what} ({size:,} bytes, starting with {file.read(16)!r})"
        fix = "check that --checkpoint names the weights file (.pth from torch.save, or .safetensors)"
    return f"{path} {problem}: {fix}."


def unwrap_state_dict(checkpoint) -> dict[str, torch.Tensor]:
    """The flat `{name: tensor}` dict in `checkpoint`: bare, or nested under 'state_dict', 'model' or 'module'."""
    state = checkpoint
    while isinstance(state, dict) and not _is_state_dict(state):
        wrapper = next((key for key in CHECKPOINT_WRAPPERS if isinstance(state.get(key), dict)), None)
        if wrapper is None:
            raise UserError(
                "Found no state dict in the checkpoint: expected a dict of tensors, bare or under one of "
                f"{list(CHECKPOINT_WRAPPERS)}; got a dict with keys {listed(sorted(map(str, state)))}."
            )
        state = state[wrapper]
    if not isinstance(state, dict):
        raise UserError(f"Expected the checkpoint to hold a dict of tensors; got {type(state).__name__}.")
    if all(key.startswith("module.") for key in state):  # saved from a DistributedDataParallel wrapper
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return dict(state)


def _is_state_dict(candidate: dict) -> bool:
    return bool(candidate) and all(isinstance(value, torch.Tensor) for value in candidate.values())


def listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return f"[{shown}{f', … and {len(names) - _MAX_LISTED} more' if len(names) > _MAX_LISTED else ''}]"


def count_blocks(state_dict: dict, block_pattern: str) -> int:
    """Blocks in a stage: one more than the largest index captured by `block_pattern` (0 if none)."""
    indices = [int(match.group(1)) for key in state_dict if (match := re.match(block_pattern, key))]
    return max(indices) + 1 if indices else 0


def weight_and_bias(source: str, target: str) -> list[tuple[str, str, None]]:
    return [(f"{source}.{name}", f"{target}.{name}", None) for name in ("weight", "bias")]


def required(state_dict: dict, key: str, what: str) -> torch.Tensor:
    if key not in state_dict:
        raise UserError(
            f"This is not {what} checkpoint: it has no {key!r}. Its keys: {listed(sorted(state_dict))}."
        )
    return state_dict[key]


def load_mapped(model_class, config, state_dict, pairs, what: str):
    """A `model_class(config)` holding the checkpoint tensors, after checking keys and shapes against `pairs`.

    `pairs` lists `(checkpoint key, model key, checkpoint shape or None)`; None means the model tensor's shape, a
    shape means the tensor is reshaped to the model's (e.g. a [C, 1, 1, 1] depthwise kernel to a [C] scale).
    """
    with torch.device("meta"):
        model = model_class(config)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    targets = {target for _, target, _ in pairs}
    if targets != set(shapes):  # the table and the model disagree: a bug here, not in the checkpoint
        raise RuntimeError(f"{what} key table and {model_class.__name__} differ: {sorted(targets ^ set(shapes))}")

    context = (
        f"Cannot convert this {what} checkpoint (depths {tuple(config.depths)}, hidden sizes "
        f"{tuple(config.hidden_sizes)}, {config.num_labels} labels, as inferred from its tensors)"
    )
    sources = {source for source, _, _ in pairs}
    leftover = sorted(set(state_dict) - sources)
    missing = sorted(sources - set(state_dict))
    problems = []
    if leftover:
        problems.append(f"{len(leftover)} key(s) with no counterpart in {model_class.__name__}: {listed(leftover)}")
    if missing:
        problems.append(f"{len(missing)} key(s) the architecture needs but the checkpoint lacks: {listed(missing)}")
    if problems:
        raise UserError(f"{context}: {'; '.join(problems)}.")

    mismatched = []
    for source, target, source_shape in pairs:
        found, expected = tuple(state_dict[source].shape), tuple(source_shape or shapes[target])
        if found != expected:
            mismatched.append(f"{source} (→ {target}): checkpoint {found}, expected {expected}")
    if mismatched:
        raise UserError(f"{context}: shape mismatch in {len(mismatched)} tensor(s): {'; '.join(mismatched)}.")

    weights = {
        target: state_dict[source].detach().to(torch.float32, copy=True).reshape(shapes[target])
        for source, target, _ in pairs
    }
    model.load_state_dict(weights, strict=True, assign=True)
    return model.eval()


__all__ = [
    "count_blocks",
    "listed",
    "load_checkpoint",
    "load_mapped",
    "read_checkpoint",
    "required",
    "unwrap_state_dict",
    "weight_and_bias",
]
