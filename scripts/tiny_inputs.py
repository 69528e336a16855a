"""Stand-ins for what the scripts in this folder download, so that their tiny mode (`TINY=1`) runs offline in minutes.

    python scripts/tiny_inputs.py own-dataset WORK    # WORK/images (3 classes), WORK/poolformer-published and
                                                      # WORK/gfnet-h-b.pth: "published" with 5 other classes
    python scripts/tiny_inputs.py imagenet WORK MODEL # WORK/imagenet (train/, val/), WORK/poolformer-MODEL and
                                                      # WORK/gfnet-h-b.pth predicting its 3 classes
    python scripts/tiny_inputs.py checkpoints WORK NAME.pth ...  # WORK/imagenet/validation and mmpretrain-format
                                                      # RIFormers named like mmpretrain's files (their preset)
    python scripts/tiny_inputs.py hub URL_FILE        # the test suite's local Hub, until killed; its URL → URL_FILE
    python scripts/tiny_inputs.py free-port           # a free TCP port on 127.0.0.1

The models are small and random, with the real ones' architectures at a fraction of their widths; GFNet and
mmpretrain stand-ins are written in the official checkpoint layouts, so the scripts convert them as they convert the
real files. The images are coloured shapes on noise, one shape and colour per class, which a small model tells
apart in a few dozen steps. Nothing here is used outside the tiny modes.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("circle", "square", "triangle")
COLOURS = {"circle": (220, 60, 50), "square": (60, 190, 70), "triangle": (50, 90, 220)}


def make_images(folder: Path, train: int, validation: int, size: int, seed: int,
                validation_folder: str = "validation") -> None:
    """`folder/{train,validation}/{circle,square,triangle}/*.png`: one shape per image, of its class's colour (with
    some jitter), at a random place and size on a noisy background."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for split, count in (("train", train), (validation_folder, validation)):
        for name in CLASSES if count else ():
            target = folder / split / name
            target.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                background = rng.integers(0, 110, (size, size, 3), dtype=np.uint8)
                image = Image.fromarray(background)
                side = rng.uniform(0.35, 0.7) * size
                left, top = rng.uniform(0, size - side, 2)
                box = (left, top, left + side, top + side)
                colour = tuple(int(np.clip(c + rng.integers(-30, 31), 0, 255)) for c in COLOURS[name])
                draw = ImageDraw.Draw(image)
                if name == "circle":
                    draw.ellipse(box, fill=colour)
                elif name == "square":
                    draw.rectangle(box, fill=colour)
                else:
                    draw.polygon([(left + side / 2, top), (left, top + side), (left + side, top + side)], fill=colour)
                image.save(target / f"{name}_{index:04d}.png")


def published_labels(count: int) -> dict:
    names = [f"published_{i}" for i in range(count)]
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def make_poolformer(folder: Path, classes: int, depths, widths, image_size: int, seed: int) -> None:
    """A random transformers PoolFormer predicting `classes` classes of its own, with its image processor."""
    import torch
    from transformers import PoolFormerConfig, PoolFormerForImageClassification

    from riformer_hf.data import make_image_processor

    torch.manual_seed(seed)
    config = PoolFormerConfig(depths=list(depths), hidden_sizes=list(widths), **published_labels(classes))
    PoolFormerForImageClassification(config).save_pretrained(folder)
    make_image_processor(image_size, 0.9).save_pretrained(folder)


def make_gfnet_checkpoint(path: Path, classes: int, depths, widths, image_size: int, seed: int) -> None:
    """A random GFNet-H saved as raoyongming/GFNet does (`{'model': state_dict}`, its key names), for
    `riformer-convert gfnet`."""
    import torch

    from riformer_hf import GFNetConfig, GFNetForImageClassification
    from riformer_hf.convert import gfnet_key_table

    torch.manual_seed(seed)
    config = GFNetConfig(depths=tuple(depths), hidden_sizes=tuple(widths), image_size=image_size, num_labels=classes)
    ours = GFNetForImageClassification(config).state_dict()
    state = {theirs: ours[mine].reshape(shape) if shape else ours[mine] for theirs, mine, shape in
             gfnet_key_table(config)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)


def make_mmpretrain_checkpoint(path: Path, preset: str, width_divisor: int, classes: int, seed: int) -> None:
    """A random RIFormer with the preset's depths at 1/`width_divisor` of its widths, saved as mmpretrain does
    (`{'meta': ..., 'state_dict': ...}` with its key names, training form), for `riformer-convert mmpretrain`."""
    import torch

    from riformer_hf import RIFORMER_PRESETS, RIFormerConfig, RIFormerForImageClassification
    from riformer_hf.convert import mmpretrain_riformer_key_table

    torch.manual_seed(seed)
    widths = tuple(w // width_divisor for w in RIFORMER_PRESETS[preset]["hidden_sizes"])
    config = RIFormerConfig.from_preset(preset, hidden_sizes=widths, num_labels=classes)
    model = RIFormerForImageClassification(config)
    with torch.no_grad():  # affine mixers away from the identity, so that folding them changes the weights
        for name, parameter in model.named_parameters():
            if "token_mixer" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    ours = model.state_dict()
    state = {theirs: ours[mine].reshape(shape) if shape else ours[mine] for theirs, mine, shape in
             mmpretrain_riformer_key_table(config)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"meta": {"stand_in": True}, "state_dict": state}, path)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_hub(url_file: Path) -> None:
    """The local Hub-protocol server of the test suite, until this process is killed; its URL goes to `url_file`."""
    sys.path.insert(0, str(ROOT / "tests"))
    from hub_server import FakeHub

    hub = FakeHub().start()
    url_file.write_text(hub.url)
    while True:
        time.sleep(3600)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("own-dataset").add_argument("work", type=Path)
    imagenet = sub.add_parser("imagenet")
    imagenet.add_argument("work", type=Path)
    imagenet.add_argument("model", help="the preset named by the script (s12, ...): only the folder's name")
    checkpoints = sub.add_parser("checkpoints")
    checkpoints.add_argument("work", type=Path)
    checkpoints.add_argument("files", nargs="+", help="mmpretrain file names; the preset is read from each")
    sub.add_parser("hub").add_argument("url_file", type=Path)
    sub.add_parser("free-port")
    args = parser.parse_args(argv)
    small = {"depths": (1, 1, 2, 1), "widths": (16, 24, 32, 48), "image_size": 32, "seed": 0}
    if args.what == "own-dataset":
        make_images(args.work / "images", train=40, validation=12, size=40, seed=0)
        make_poolformer(args.work / "poolformer-published", classes=5, **small)
        make_gfnet_checkpoint(args.work / "gfnet-h-b.pth", classes=5, **small)
    elif args.what == "imagenet":
        make_images(args.work / "imagenet", train=16, validation=6, size=40, seed=0, validation_folder="val")
        make_poolformer(args.work / f"poolformer-{args.model}", classes=len(CLASSES), **small)
        make_gfnet_checkpoint(args.work / "gfnet-h-b.pth", classes=len(CLASSES), **small)
    elif args.what == "checkpoints":
        make_images(args.work / "imagenet", train=0, validation=6, size=48, seed=0)
        for name in args.files:
            preset = name.removeprefix("riformer-").split("_")[0]
            make_mmpretrain_checkpoint(args.work / name, preset, width_divisor=16, classes=len(CLASSES), seed=0)
    elif args.what == "hub":
        serve_hub(args.url_file)
    else:
        print(free_port())


if __name__ == "__main__":
    main()
