"""A non-editable install (a built wheel) carries what training and publishing read at run time."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", "outputs", "runs")


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
