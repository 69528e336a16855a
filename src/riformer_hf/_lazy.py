"""Module attributes loaded on first use (PEP 562 `__getattr__`), for the package's `__init__` files."""

import importlib
from collections.abc import Callable


def lazy_attributes(package: str, table: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` for `package` that imports `package.<table[name]>` when `name` is first read."""

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f".{table[name]}", package), name)

    return __getattr__
