"""Model folders and Hub ids → PyTorch models, with what the user named checked for what it is.

Every command that expects a PyTorch model (training's student and teachers, the export, the re-parameterisation,
the PoolFormer converter, evaluation of a model folder) loads it through `load_pretrained`, so that a folder holding
only an exported graph, a folder without weights and a damaged weights file each get one line naming the flag, the
folder and the fix, instead of a loader's traceback.
"""

import pickle
from pathlib import Path

from .errors import MissingInputError, UserError

WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json",
)
EXPORTED_GRAPHS = ("model.onnx", "model_int8.onnx", "openvino_model.xml", "openvino_model_int8.xml")


def exported_graphs(folder) -> list[str]:
    """The exported graphs (ONNX, OpenVINO IR) in `folder`."""
    return [name for name in EXPORTED_GRAPHS if (Path(folder) / name).is_file()]


def check_model_folder(name_or_path, flag: str) -> None:
    """A local `name_or_path` is a folder with `config.json` and PyTorch weights (a Hub id passes: the Hub checks)."""
    path = Path(str(name_or_path)).expanduser()
    if not path.exists():
        return
    if not path.is_dir():
        raise UserError(f"{flag} {path} is a file; give the model's folder (config.json and its weights).")
    if not (path / "config.json").is_file():
        raise MissingInputError(
            f"{flag} {path} has no config.json: give a folder written by save_pretrained (a trained model, a "
            "checkpoint-N folder or an export)."
        )
    if any((path / name).is_file() for name in WEIGHT_FILES):
        return
    graphs = exported_graphs(path)
    if graphs:
        raise UserError(
            f"{flag} {path} holds an exported graph ({', '.join(graphs)}) and no PyTorch weights: give the PyTorch "
            "folder it was exported from (riformer-eval and riformer-export --int8 take export folders as they are)."
        )
    raise MissingInputError(
        f"{flag} {path} has no weights ({', '.join(WEIGHT_FILES[:3])}): give a folder written by save_pretrained."
    )


def load_pretrained(model_class, name_or_path, flag: str = "--model_name_or_path", **kwargs):
    """`model_class.from_pretrained(name_or_path, **kwargs)`, with a missing folder, missing or damaged weights and
    an unreachable Hub id as `UserError`s naming `flag`."""
    from safetensors import SafetensorError

    check_model_folder(name_or_path, flag)
    try:
        return model_class.from_pretrained(name_or_path, **kwargs)
    except (SafetensorError, pickle.UnpicklingError, EOFError) as error:
        raise UserError(
            f"{flag} {name_or_path}: its weights cannot be read ({_one_line(error)}): the file is damaged or not a "
            "weights file; copy or download it again."
        ) from None
    except OSError as error:  # transformers' word for a missing file or an unreachable Hub id
        raise MissingInputError(f"{flag} {name_or_path}: {_one_line(error)}") from None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


__all__ = ["EXPORTED_GRAPHS", "WEIGHT_FILES", "check_model_folder", "exported_graphs", "load_pretrained"]
