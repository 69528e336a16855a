"""Labelled image splits, the one loader behind training, evaluation and INT8 calibration.

Images come from a local image folder (one sub-folder per class, optionally under `train/`, `validation/`, `test/`;
datasets' `imagefolder`), a dataset on the Hub, or the digits bundled with scikit-learn. Every problem with what the
user named (a missing folder, a file where a folder belongs, one class, no such split or column) is a `UserError`
naming the flag and the fix.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import MissingInputError, UserError

EVAL_SPLIT_NAMES = ("validation", "valid", "val", "test")
DIGITS = "digits"
DIGITS_IMAGE_SIZE = 32
_SPLIT_NAME_SEPARATORS = r"\-._ 0-9"  # datasets.data_files.NON_WORDS_CHARS, as a regex character class


@dataclass(frozen=True)
class ImageSource:
    """Where the images come from: `data_dir` (a local image folder, read as `dataset_name` when that is given too,
    e.g. a script dataset), `dataset_name` (a Hub dataset, with `dataset_config`), or neither: the bundled digits."""

    data_dir: str | None = None
    dataset_name: str | None = None
    dataset_config: str | None = None
    flag: str = "--data_dir"
    one_value: bool = False  # named by one flag that also takes "digits" or a Hub id (`named`)

    @classmethod
    def named(cls, name: str, flag: str) -> "ImageSource":
        """A source given as one value: `digits`, a local folder, or a Hub dataset id."""
        if name == DIGITS:
            return cls(flag=flag, one_value=True)
        if Path(name).exists() or name.startswith((".", "/", "~")):
            return cls(data_dir=name, flag=flag, one_value=True)
        return cls(dataset_name=name, flag=flag, one_value=True)

    @property
    def folder_fix(self) -> str:
        fix = "give a folder with one sub-folder of images per class (optionally under train/, validation/ or test/)"
        return fix + (", 'digits' or a Hub dataset id" if self.one_value else "")

    @property
    def is_digits(self) -> bool:
        return self.data_dir is None and self.dataset_name is None

    @property
    def default_image_size(self) -> int:
        """The digits are 8×8 drawings: they train at 32 px; everything else at the usual 224 px."""
        return DIGITS_IMAGE_SIZE if self.is_digits else 224

    @property
    def default_hflip(self) -> float:
        """Mirrored digits are other symbols: no flips for them, the usual 0.5 for everything else."""
        return 0.0 if self.is_digits else 0.5

    def describe(self) -> str:
        if self.data_dir is not None:
            return f"image folder {self.data_dir}"
        if self.dataset_name is not None:
            return f"Hub dataset {self.dataset_name}"
        return "bundled digits"


def load_image_splits(source: ImageSource, *, streaming: bool = False, digits_image_size: int = DIGITS_IMAGE_SIZE):
    """Every split of `source` (a `DatasetDict`, or an `IterableDatasetDict` when `streaming`)."""
    import datasets

    if source.is_digits:
        if streaming:
            raise UserError("--streaming reads a Hub dataset or a local folder: pass --dataset_name or --data_dir.")
        from .digits import digits_dataset

        return digits_dataset(image_size=digits_image_size)
    if source.data_dir is not None:
        folder = Path(source.data_dir).expanduser()
        if not folder.exists():
            digits = " (the bundled digits: riformer-train's default, riformer-eval --digits)" if (
                source.data_dir == DIGITS) else ""
            raise MissingInputError(f"{source.flag} {source.data_dir}: no such folder: {source.folder_fix}{digits}.")
        if not folder.is_dir():
            raise UserError(f"{source.flag} {source.data_dir} is a file, not a folder: {source.folder_fix}.")
        builder, kwargs = source.dataset_name or "imagefolder", {"data_dir": str(folder)}
    else:
        builder, kwargs = source.dataset_name, {}
    progress_bars = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # "Downloading data" / "Generating train split" for a local folder
    try:
        return datasets.load_dataset(builder, source.dataset_config, streaming=streaming, **kwargs)
    except (FileNotFoundError, ValueError) as error:  # a folder without images (EmptyDatasetError; "no data")
        if source.data_dir is None:
            raise
        raise UserError(
            f"{source.flag} {source.data_dir} holds no images datasets can read ({' '.join(str(error).split())}): "
            f"{source.folder_fix}."
        ) from error
    except datasets.exceptions.DatasetNotFoundError as error:
        raise MissingInputError(
            f"The {source.describe()} cannot be loaded ({' '.join(str(error).split())}): check the id, the network or "
            "HF_HUB_OFFLINE."
        ) from error
    finally:
        if not progress_bars:
            datasets.enable_progress_bars()


def eval_split_name(splits, exclude: str | None = None) -> str | None:
    """The split to evaluate on when none is named: the only split of a one-split dataset (unless excluded), else the
    first of validation / valid / val / test present (other than `exclude`)."""
    names = [name for name in splits if name != exclude]
    if len(splits) == 1 and names:
        return names[0]
    return next((name for name in EVAL_SPLIT_NAMES if name in names), None)


def split_folders(data_dir) -> dict[str, str]:
    """`{split: sub-folder}` for the sub-folders of a local image folder that `imagefolder` reads as splits (`val/`
    becomes the split `validation`, `training/` the split `train`, ...), by datasets' own split keywords. Empty for a
    folder of class folders, which datasets reads as one split named `train`."""
    from datasets.data_files import SPLIT_KEYWORDS

    folder = Path(data_dir).expanduser()
    names = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    found = {}
    for split, keywords in SPLIT_KEYWORDS.items():
        for keyword in keywords:
            # datasets' directory patterns: the keyword alone or set off by a separator (`val_2024`, `imagenet-val`)
            pattern = re.compile(rf"(.*[{_SPLIT_NAME_SEPARATORS}])?{keyword}([{_SPLIT_NAME_SEPARATORS}].*)?")
            for name in names:
                if pattern.fullmatch(name):
                    found.setdefault(str(split), name)
    return found


def resolve_split(splits, name: str, source: ImageSource, flag: str) -> str:
    """The split `name` names: a split of `splits`, or the sub-folder of a local image folder that datasets read as
    one (`--split val` → the split datasets calls `validation`). A `UserError` naming the splits otherwise."""
    if name in splits:
        return name
    if source.data_dir is not None:
        by_folder = {folder: split for split, folder in split_folders(source.data_dir).items()}
        if by_folder.get(name) in splits:
            return by_folder[name]
    check_split(splits, name, source, flag)
    return name


def describe_split(source: ImageSource, split: str) -> str:
    """Where the images of `split` come from, in the user's words: the sub-folder of a local image folder
    (`image folder data, folder val/`), every image of a folder without split folders, else `split NAME`."""
    if source.data_dir is not None:
        folders = split_folders(source.data_dir)
        if split in folders:
            return f"{source.describe()}, folder {folders[split]}/"
        if not folders and split == "train":
            return f"{source.describe()}, all images"
    return f"{source.describe()}, split {split}"


def check_split(splits, name: str, source: ImageSource, flag: str) -> None:
    if name not in splits:
        raise UserError(
            f"No split {name!r} in the {source.describe()}; it has {', '.join(splits)}: pass one with {flag}."
        )


def peek_class_names(source: ImageSource) -> list[str] | None:
    """The class names a source will have, read without loading any image: the class folders of a local image
    folder (the sub-folders of its split folders, or of the folder itself; `imagefolder` names its labels after
    them, sorted), the digits' 0-9. None for Hub datasets and folders read by another builder."""
    if source.is_digits:
        return [str(d) for d in range(10)]
    if source.data_dir is None or source.dataset_name not in (None, "imagefolder"):
        return None
    folder = Path(source.data_dir).expanduser()
    if not folder.is_dir():
        return None
    roots = [folder / name for name in split_folders(folder).values()] or [folder]
    classes = {p.name for root in roots for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    return sorted(classes) or None


def check_columns(dataset, columns: dict[str, str]) -> None:
    """Each `{flag: column}` is a column of `dataset` (a stream whose columns are unknown passes)."""
    names = dataset.column_names
    for flag, column in columns.items():
        if names is not None and column not in names:
            raise UserError(f"The dataset has no {column!r} column (columns: {', '.join(names)}); set {flag}.")


def class_names(dataset, label_column: str) -> list[str] | None:
    """The class names of the label column when it is a `ClassLabel` (an image folder's is), else None."""
    from datasets import ClassLabel

    feature = (dataset.features or {}).get(label_column)
    return list(feature.names) if isinstance(feature, ClassLabel) else None


__all__ = [
    "DIGITS",
    "DIGITS_IMAGE_SIZE",
    "EVAL_SPLIT_NAMES",
    "ImageSource",
    "check_columns",
    "check_split",
    "class_names",
    "describe_split",
    "eval_split_name",
    "load_image_splits",
    "peek_class_names",
    "resolve_split",
    "split_folders",
]
