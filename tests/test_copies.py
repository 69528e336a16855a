"""Code repeated on purpose between the self-contained modelling files (`trust_remote_code` needs each file to stand
alone) is marked `# Copied from <module>.<object> with A->B`, transformers-style; every copy must stay identical to its
source once the replacements are applied."""

import importlib
import inspect
import re
from pathlib import Path

import pytest

import riformer_hf.models

MODELS = Path(riformer_hf.models.__file__).parent
MARKER = re.compile(
    r"^# Copied from (?P<source>[\w.]+)(?: with (?P<replacements>.+))?\n(?:class|def) (?P<name>\w+)", re.MULTILINE
)


def copies():
    found = []
    for path in sorted(MODELS.glob("*/modeling_*.py")):
        module = ".".join(path.relative_to(MODELS.parent.parent).with_suffix("").parts)
        for match in MARKER.finditer(path.read_text()):
            found.append(pytest.param(module, match, id=f"{path.stem}.{match['name']}"))
    return found


def resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_the_known_copies_are_marked():
    assert {param.id for param in copies()} >= {"modeling_gfnet.GFNetDropPath", "modeling_gfnet._check_pixel_values"}


@pytest.mark.parametrize("module,match", copies())
def test_copy_matches_its_source(module, match):
    source = inspect.getsource(resolve(match["source"]))
    for replacement in (match["replacements"] or "").split(","):
        if replacement.strip():
            old, new = (part.strip() for part in replacement.split("->"))
            source = source.replace(old, new)
    copy = inspect.getsource(getattr(importlib.import_module(module), match["name"]))
    assert copy == source, f"{module}.{match['name']} drifted from {match['source']}; update the copy or its marker"
