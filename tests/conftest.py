import os

import pytest
import torch

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values: affine scales far from 1, layer scales far from their init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float64).to(param.dtype)
            if name.endswith(("scale", "layer_scale_1", "layer_scale_2")) or "norm" in name:
                param.copy_(1.0 + 0.5 * noise)
            else:
                param.copy_(0.2 * noise)
    return model


def small_preset(name, **kwargs):
    """The preset's depths at 1/8 of its widths."""
    from riformer_hf import RIFORMER_PRESETS, RIFormerConfig  # after the environment above is set

    widths = tuple(w // 8 for w in RIFORMER_PRESETS[name]["hidden_sizes"])
    return RIFormerConfig.from_preset(name, hidden_sizes=widths, num_labels=5, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models on 2 cores: one intra-op thread is faster than contending threads (subprocesses get their own)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def digits_config(**overrides):
    """A tiny RIFormer config for the digits: ten classes named "0"…"9"."""
    from riformer_hf import RIFormerConfig

    names = [str(d) for d in range(10)]
    fields = {"depths": (1, 1, 2, 1), "hidden_sizes": (8, 16, 24, 32), **overrides}
    return RIFormerConfig(num_labels=10, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                          **fields)


@pytest.fixture(scope="session")
def digits_model():
    """A tiny RIFormer (training form) trained on the digits (a few seconds on one thread), its 32 px image processor
    and the held-out split; shared by the ONNX and OpenVINO tests, which must not modify the model in place."""
    from riformer_hf import RIFormerForImageClassification
    from riformer_hf.data import digits_dataset, make_image_processor

    torch.manual_seed(0)
    processor = make_image_processor(32, crop_pct=1.0)
    splits = digits_dataset(image_size=32)
    pixels = torch.from_numpy(processor(images=list(splits["train"]["image"]), return_tensors="np")["pixel_values"])
    labels = torch.tensor(splits["train"]["label"])
    model = RIFormerForImageClassification(digits_config(hidden_sizes=(16, 32, 48, 64)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3)
    model.train()
    for _ in range(8):
        for batch in torch.randperm(len(labels)).split(64):
            loss = model(pixel_values=pixels[batch], labels=labels[batch]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return model.eval(), processor, splits["test"]


@pytest.fixture
def tiny_config():
    from riformer_hf import RIFormerConfig

    return RIFormerConfig(
        depths=(1, 1, 2, 1), hidden_sizes=(8, 16, 24, 32), num_labels=3,
        id2label={0: "cat", 1: "dog", 2: "fish"}, label2id={"cat": 0, "dog": 1, "fish": 2},
    )


_HIDE_PACKAGE = """
import os, sys
sys.path = [p for p in sys.path if p not in ('', '.') and not os.path.isdir(os.path.join(p, 'riformer_hf'))]
sys.meta_path = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]
try:
    import riformer_hf
    raise SystemExit('riformer_hf is importable: the test would prove nothing')
except ImportError:
    pass
"""


def run_without_package(script: str, tmp_path, env: dict | None = None):
    """Run `script` in a fresh Python where `riformer_hf` cannot be imported (only `trust_remote_code` can help)."""
    import subprocess
    import sys

    full_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    full_env["HF_MODULES_CACHE"] = str(tmp_path / "hf_modules")
    full_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-c", _HIDE_PACKAGE + script], capture_output=True, text=True, env=full_env, cwd=tmp_path
    , check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The local Hub-protocol server, with huggingface_hub (in this process and in subprocesses) pointed at it and
    temporary folders in a scratch folder; yields (server, scratch)."""
    import tempfile

    import huggingface_hub
    from hub_server import FakeHub

    server = FakeHub().start()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the fake Hub speaks LFS only
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    for name, value in {"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
                        "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf_home")}.items():
        monkeypatch.setenv(name, value)
    yield server, scratch
    server.stop()
