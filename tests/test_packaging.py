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
    card = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                          check=False)
    assert card.returncode == 0, card.stderr[-3000:]
    assert "pipeline(" in card.stdout and "RIFormer" in card.stdout
    usage = subprocess.run([sys.executable, "-m", "riformer_hf.cli", "push", "--help"], capture_output=True, text=True,
                           env=env, check=False)
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
        done = subprocess.run([fresh / "bin" / command, "--help"], capture_output=True, text=True, env=clean,
                              cwd=tmp_path, check=False)
        assert done.returncode == 0 and "usage:" in done.stdout, (command, done.stderr[-2000:])


# ---- a light import that still registers the Auto classes ----

HEAVY = ("torch", "transformers", "datasets", "accelerate", "onnxruntime", "transformers.trainer")


def python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_import_loads_neither_torch_nor_transformers():
    loaded = python(f"import sys, riformer_hf; print([m for m in {HEAVY!r} if m in sys.modules])")
    assert loaded.strip() == "[]"


AUTO_CHECK = """
from transformers import AutoBackbone, AutoConfig, AutoModel, AutoModelForImageClassification
config = AutoConfig.for_model("riformer", depths=(1, 1, 1, 1), hidden_sizes=(8, 8, 8, 8))
models = [AutoModelForImageClassification.from_config(config), AutoBackbone.from_config(config),
          AutoModel.from_config(config), AutoModel.from_config(AutoConfig.for_model("gfnet", depths=(1, 1, 1, 1)))]
print(",".join(type(m).__name__ for m in models))
"""
ORDERS = {
    "package first": "import riformer_hf\n",
    "modelling file first": "import riformer_hf\nfrom riformer_hf import RIFormerForImageClassification\n",
    "transformers' models first": "import transformers.modeling_utils\nimport riformer_hf\n",
    "Auto classes first": "from transformers import AutoModel\nimport riformer_hf\n",
}


def test_the_auto_classes_know_riformer_whatever_was_imported_first():
    """Registration runs when transformers loads its Auto modules (or at once when they are loaded), entering the
    models by name: `transformers.modeling_layers` imports `AutoModel` halfway through its own import, so importing
    the modelling files at that moment would fail."""
    for name, prelude in ORDERS.items():
        assert python(prelude + AUTO_CHECK).strip() == (
            "RIFormerForImageClassification,RIFormerBackbone,RIFormerModel,GFNetModel"), name


def test_transformers_still_has_the_name_tables_registration_writes():
    from transformers.models.auto import modeling_auto

    from riformer_hf.registration import MODEL_CLASSES

    for mapping_name in MODEL_CLASSES:
        mapping = getattr(modeling_auto, mapping_name)
        for table in ("_reverse_config_mapping", "_model_mapping", "_modules"):
            assert isinstance(getattr(mapping, table, None), dict), f"{mapping_name}.{table} moved: see registration.py"
