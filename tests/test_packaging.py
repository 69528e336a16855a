"""A non-editable install (a built wheel) carries what training and publishing read at run time, and its console
scripts work from a fresh virtual environment."""

import shutil
import site as site_module
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "outputs", "runs")


def console_scripts(wheel: Path) -> list[str]:
    archive = zipfile.ZipFile(wheel)
    text = archive.read(next(n for n in archive.namelist() if n.endswith("entry_points.txt"))).decode()
    section = text.split("[console_scripts]", 1)[1].split("[", 1)[0]
    return [line.split("=")[0].strip() for line in section.splitlines() if "=" in line]


def test_wheel_install_renders_the_model_card_and_runs_the_push_command(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, ignore=SKIP, symlinks=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source], check=True)
    (wheel,) = (tmp_path / "dist").glob("riformer_hf-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    assert {"riformer_hf/export/model_card_template.md", "riformer_hf/cli.py",
            "riformer_hf/models/riformer/modeling_riformer.py"} <= shipped
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in shipped if n.endswith("entry_points.txt"))).decode()
    for command in ("riformer-train", "riformer-convert", "riformer-push", "riformer-demo", "riformer-bench"):
        assert f"{command} = riformer_hf.cli:" in entry_points
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], check=True)

    script = f"""
import riformer_hf
from pathlib import Path
assert Path(riformer_hf.__file__).is_relative_to({str(site)!r}), riformer_hf.__file__
from riformer_hf import RIFormerConfig, RIFormerForImageClassification
from riformer_hf.data import make_image_processor
from riformer_hf.export import build_model_card
model = RIFormerForImageClassification(RIFormerConfig(depths=(1, 1, 1, 1), hidden_sizes=(8, 8, 8, 8), num_labels=2))
print(build_model_card(model, make_image_processor(), repo_id="me/tiny").text)
"""
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    card = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert card.returncode == 0, card.stderr[-3000:]
    assert "pipeline(" in card.stdout and "RIFormer" in card.stdout
    usage = subprocess.run([sys.executable, "-m", "riformer_hf.cli", "push", "--help"], capture_output=True, text=True,
                           env=env)
    assert usage.returncode == 0 and "--repo_id" in usage.stdout, usage.stderr[-3000:]

    # A fresh virtual environment: the dependencies come from this one (a .pth line), the package from the wheel.
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=False)
    fresh_python = fresh / "bin" / "python"
    fresh_site = subprocess.run([fresh_python, "-c", "import site; print(site.getsitepackages()[0])"],
                                capture_output=True, text=True, check=True).stdout.strip()
    dependencies = [p for p in site_module.getsitepackages() if Path(p).is_dir()]
    (Path(fresh_site) / "dependencies.pth").write_text("\n".join(dependencies) + "\n")
    subprocess.run([*pip, "--python", fresh_python, "install", "--no-deps", wheel], check=True)
    commands = console_scripts(wheel)
    assert {"riformer-train", "riformer-convert", "riformer-push", "riformer-demo", "riformer-bench"} <= set(commands)
    clean = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    for command in commands:
        done = subprocess.run([fresh / "bin" / command, "--help"], capture_output=True, text=True, env=clean, cwd=tmp_path)
        assert done.returncode == 0 and "usage:" in done.stdout, (command, done.stderr[-2000:])
