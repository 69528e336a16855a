"""The README: one sitting long, its links resolve, and its layout section matches the tree (one line per room,
every room listed, every listed path present)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "riformer_hf"


def layout_lines() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1]
    block = re.search(r"```\n(.*?)```", section, re.DOTALL).group(1)
    return [line for line in block.splitlines() if line.strip()]


def rooms() -> set[str]:
    """The package's rooms: its sub-packages (models/ counts per model family) and its top-level modules."""
    found = set()
    for path in PACKAGE.iterdir():
        if path.name.startswith(("_", ".")) or path.suffix not in ("", ".py"):
            continue
        if path.is_dir() and path.name == "models":
            found |= {f"models/{family.name}/" for family in path.iterdir() if (family / "__init__.py").is_file()}
        elif path.is_dir() and (path / "__init__.py").is_file():
            found.add(f"{path.name}/")
        elif path.is_file():
            found.add(path.name)
    return found


def test_every_room_has_exactly_one_line_and_every_listed_path_exists():
    lines = layout_lines()
    package_lines = [line.split()[0] for line in lines if line.startswith("  ")]
    assert sorted(package_lines) == sorted(rooms()), "README layout vs src/riformer_hf"
    for name in package_lines:
        assert (PACKAGE / name).exists(), name
    for line in lines:
        if not line.startswith(" "):
            assert (ROOT / line.split()[0]).exists(), line


def test_readme_is_read_in_one_sitting_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text()
    assert len(readme) <= 20_000, f"README.md has {len(readme):,} characters; move write-ups to docs/"
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
