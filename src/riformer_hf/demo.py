"""The embedded demo: RIFormer's training recipe end to end on the digits bundled with scikit-learn, on CPU, offline.

A small PoolFormer teacher is trained on the labels; then a RIFormer student of the same layout is trained four ways
(the rows of the paper's Table 6 ablation): labels only; soft distillation without labels; + module imitation; +
initialisation from the teacher. Each student is re-parameterised (token mixers folded into the norms) and scored on
the held-out split in that deploy form; then the teacher and the deploy students are timed in the same runtime, and
the last student is scored in bfloat16 and exported to ONNX and quantised to INT8 (when onnxruntime is installed) to
show the top-1 change of each.
"""

import argparse
import copy
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from transformers import (
    PoolFormerConfig,
    PoolFormerForImageClassification,
    PrinterCallback,
    Trainer,
    default_data_collator,
)

from .convert.poolformer import from_poolformer
from .data import ProcessorTransform, TrainTransform, digits_dataset, make_image_processor, with_image_transform
from .distillation import RIFormerDistillationTrainer, RIFormerTrainingArguments
from .errors import UserError
from .models.riformer import RIFormerConfig, RIFormerForImageClassification, reparameterize_model
from .safety import OutputFolder
from .timing import time_interleaved

IMAGE_SIZE = 32
ARCHITECTURE = {"depths": (1, 1, 2, 1), "hidden_sizes": (16, 32, 64, 96), "layer_scale_init_value": 0.1}
# The paper's ratio of epochs: feature imitation for the first 2/3 of training, relation imitation for the first 1/6.
FEATURE_SHARE, RELATION_SHARE = 400 / 600, 100 / 600
# Chosen so that each weighted imitation term starts at about the size of the distillation term (~0.1).
IMITATION = {"lambda_hidden": 0.05, "lambda_mixer": 0.05, "lambda_relation": 0.5}
SPEED_BATCH, SPEED_ROUNDS = 64, 20
PAPER_S12 = {"labels only": 72.31, "soft KD": 74.05, "+ module imitation": 75.13, "+ teacher init": 75.36}


@dataclass
class Row:
    name: str
    top1: float
    seconds: float
    max_logit_change: float | None = None  # training form vs re-parameterised form
    images_per_second: float | None = None  # eager PyTorch, batch SPEED_BATCH, same interleaved rounds for all rows
    speedup: float | None = None  # median over those rounds of the teacher's time / this model's
    bf16_top1: float | None = None  # the deploy form in bfloat16 (eager PyTorch); the last student only


@dataclass
class Int8Result:
    """The last student through ONNX Runtime: fp32 and INT8 top-1 on the held-out digits."""

    fp32_top1: float
    int8_top1: float
    calibration_images: int


def _arguments(output_dir, epochs, seed, **recipe) -> RIFormerTrainingArguments:
    return RIFormerTrainingArguments(
        output_dir=output_dir, num_train_epochs=epochs, per_device_train_batch_size=64, per_device_eval_batch_size=256,
        learning_rate=2e-3, weight_decay=0.05, lr_scheduler_type="cosine", warmup_steps=0.1, seed=seed,
        remove_unused_columns=False, save_strategy="no", logging_strategy="epoch", report_to=[], use_cpu=True,
        disable_tqdm=True, log_level="error", **recipe,
    )


def _predict(model, dataset, args) -> np.ndarray:
    return Trainer(model=model, args=args, data_collator=default_data_collator).predict(dataset).predictions


def predict_bf16(model, dataset) -> np.ndarray:
    """Logits (float32) of a bfloat16 copy of `model` on every image of `dataset`, in eager PyTorch."""
    model = copy.deepcopy(model).to(torch.bfloat16).eval()
    pixels = torch.stack([torch.as_tensor(example["pixel_values"]) for example in dataset]).to(torch.bfloat16)
    with torch.inference_mode():
        return model(pixel_values=pixels).logits.float().numpy()


def measure_speed(models: list[torch.nn.Module], batch: int = SPEED_BATCH, rounds: int = SPEED_ROUNDS):
    """Images per second of each model (eager PyTorch, inference mode, a `batch` of IMAGE_SIZE² images) as the
    median over interleaved rounds, and per round the first model's time over each model's (median)."""
    pixel_values = torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE)

    def forward(model):
        def call():
            with torch.inference_mode():
                model(pixel_values=pixel_values)
        return call

    seconds = time_interleaved({i: forward(m.eval()) for i, m in enumerate(models)}, warmup=3, repeats=rounds)
    speed = [batch / statistics.median(seconds[i]) for i in range(len(models))]
    ratios = [statistics.median(a / b for a, b in zip(seconds[0], seconds[i])) for i in range(len(models))]
    return speed, ratios


def run_demo(seed: int = 0, teacher_epochs: int = 30, student_epochs: int = 16, output_dir: str = "riformer-demo",
             log=print) -> tuple[list[Row], Int8Result | None]:
    """Train the teacher and the four students, time them, quantise the last; returns one `Row` per model (top-1 in
    %, train time in s, img/s) and the INT8 result (`None` without onnxruntime)."""
    data = digits_dataset(image_size=IMAGE_SIZE)
    names = data["train"].features["label"].names
    labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    train = with_image_transform(data["train"], TrainTransform(IMAGE_SIZE, scale=(0.6, 1.0), hflip=0.0))
    test = with_image_transform(data["test"], ProcessorTransform(make_image_processor(IMAGE_SIZE, crop_pct=1.0)))
    truth = np.asarray(data["test"]["label"])
    log(f"digits: {len(data['train'])} train / {len(data['test'])} held-out images, {IMAGE_SIZE}×{IMAGE_SIZE} RGB; "
        f"{torch.get_num_threads()} CPU thread(s)")

    def fit(model, epochs, teacher=None, **recipe):
        args = _arguments(f"{output_dir}/run", epochs, seed, **recipe)
        if isinstance(model, RIFormerForImageClassification):
            trainer = RIFormerDistillationTrainer(model, args, teacher_model=teacher, train_dataset=train)
        else:  # the PoolFormer teacher: plain supervised training
            trainer = Trainer(model, args, train_dataset=train, data_collator=default_data_collator)
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        last = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
        terms = "  ".join(f"{k} {v:.3g}" for k, v in last.items() if k.startswith("loss"))
        return seconds, args, terms

    torch.manual_seed(seed)
    teacher = PoolFormerForImageClassification(PoolFormerConfig(**ARCHITECTURE, drop_path_rate=0.1, **labels))
    seconds, args, terms = fit(teacher, teacher_epochs)
    top1 = _top1(_predict(teacher, test, args), truth)
    rows = [Row(f"PoolFormer teacher (labels, {teacher_epochs} ep)", top1, seconds)]
    log(f"{rows[-1].name}: {rows[-1].top1:.2f}% in {seconds:.0f}s (last epoch: {terms})")

    def new_student():
        torch.manual_seed(seed + 1)
        config = RIFormerConfig(**ARCHITECTURE, drop_path_rate=0.1, **labels)
        return RIFormerForImageClassification(config)

    soft = {"distillation_type": "soft", "distillation_alpha": 1.0}
    windows = {"feature_fraction": FEATURE_SHARE, "relation_fraction": RELATION_SHARE}
    variants = [
        ("labels only", new_student, {}),
        ("soft KD", new_student, soft),
        ("+ module imitation", new_student, {**soft, **IMITATION, **windows}),
        ("+ teacher init", lambda: from_poolformer(teacher, drop_path_rate=0.1), {**soft, **IMITATION, **windows}),
    ]
    models = [teacher]
    for name, build, recipe in variants:
        student = build()
        seconds, args, terms = fit(student, student_epochs, teacher if recipe else None, **recipe)
        deploy = reparameterize_model(student.eval())
        logits = _predict(deploy, test, args)
        change = float(np.abs(logits - _predict(student, test, args)).max())
        rows.append(Row(f"RIFormer, {name}", _top1(logits, truth), seconds, change))
        models.append(deploy)
        log(f"{rows[-1].name}: {rows[-1].top1:.2f}% in {seconds:.0f}s (last epoch: {terms})")
    rows[-1].bf16_top1 = _top1(predict_bf16(models[-1], test), truth)
    log(f"{rows[-1].name} in bfloat16: {rows[-1].bf16_top1:.2f}%")
    speed, ratios = measure_speed(models)
    for row, images_per_second, ratio in zip(rows, speed, ratios):
        row.images_per_second, row.speedup = images_per_second, ratio
    return rows, quantize_student(models[-1], f"{output_dir}/onnx")


def quantize_student(deploy, output_dir: str, calibration_samples: int = 200) -> Int8Result | None:
    """Export a deploy student to ONNX, quantise it (static INT8, calibrated on train digits) and score both graphs
    on the held-out digits; `None` without onnxruntime (`pip install 'riformer_hf[onnx]'`)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    from .export.onnx import export_onnx

    processor = make_image_processor(IMAGE_SIZE, crop_pct=1.0)
    # `output_dir` is the demo's own scratch subfolder: an earlier demo's export there is replaced whole.
    result = export_onnx(deploy, output_dir, image_processor=processor, int8=True, calibration_data="digits",
                         calibration_samples=calibration_samples, overwrite=True)
    compared = result.int8_comparison
    return Int8Result(100 * compared["fp32_top1"], 100 * compared["int8_top1"], result.calibration_images)


def _top1(logits: np.ndarray, truth: np.ndarray) -> float:
    return 100.0 * float((logits.argmax(-1) == truth).mean())


def format_table(rows: list[Row], student_epochs: int, int8: Int8Result | None = None) -> str:
    lines = [
        f"{'model':<44}{'top-1 held-out':>15}{'train time':>12}{'img/s**':>9}{'vs teacher':>12}{'paper S12*':>12}",
        "-" * 104,
    ]
    paper = [None, *PAPER_S12.values()]
    for row, reference in zip(rows, paper):
        ref = f"{reference:.2f}" if reference is not None else ""
        speed = f"{row.images_per_second:>9.0f}{row.speedup:>11.2f}×" if row.images_per_second else " " * 21
        lines.append(f"{row.name:<44}{row.top1:>14.2f}%{row.seconds:>11.0f}s{speed}{ref:>12}".rstrip())
    worst = max(r.max_logit_change for r in rows if r.max_logit_change is not None)
    lines += [
        "-" * 104,
        (f"Students: {student_epochs} epochs each, scored after re-parameterisation (max |Δlogit| vs training form: "
         f"{worst:.1e})."),
        (f"** Teacher and deploy students in eager PyTorch, batch {SPEED_BATCH} at {IMAGE_SIZE}², "
         f"{torch.get_num_threads()} thread(s): medians of {SPEED_ROUNDS} interleaved rounds"),
        "   (vs teacher: median of the per-round time ratios).",
        "* RIFormer-S12 on ImageNet, 120 epochs (paper, Table 6); the digits are far easier and the runs tiny.",
    ]
    last = rows[-1]
    if last.bf16_top1 is not None:
        lines.append(
            f"bf16 of the last student (eager PyTorch): top-1 {last.bf16_top1:.2f}% vs {last.top1:.2f}% in fp32 "
            f"({last.bf16_top1 - last.top1:+.2f} points)."
        )
    if int8 is not None:
        change = int8.int8_top1 - int8.fp32_top1
        lines.append(
            f"INT8 of the last student (ONNX Runtime, static QDQ, calibrated on {int8.calibration_images} train "
            f"digits): top-1 {int8.int8_top1:.2f}% vs {int8.fp32_top1:.2f}% in fp32 ({change:+.2f} points)."
        )
    else:
        lines.append("INT8: skipped, onnxruntime is not installed (pip install 'riformer_hf[onnx]').")
    return "\n".join(lines)


def check_arguments(args) -> None:
    """Every value the demo takes, checked before the first epoch."""
    for flag in ("teacher_epochs", "student_epochs", "threads"):
        value = getattr(args, flag)
        if value < 1:
            raise UserError(f"--{flag} {value}: must be at least 1.")


def main(argv=None) -> list[Row]:
    parser = argparse.ArgumentParser(prog="riformer-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher_epochs", type=int, default=30)
    parser.add_argument("--student_epochs", type=int, default=16)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: for these tiny models a second thread gains little and, on busy cores, "
        "costs a lot)",
    )
    parser.add_argument("--output_dir", default="riformer-demo",
                        help="scratch folder: the Trainer's run/ and the ONNX export onnx/, replaced on every run")
    args = parser.parse_args(argv)
    check_arguments(args)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    # The scratch folder: an earlier demo's run/ and onnx/ are replaced; a model, export or run of another command in
    # it is refused. Checked before the first epoch, used under its run lock.
    scratch = OutputFolder(args.output_dir, fix="give another --output_dir (the demo writes run/ and onnx/ there)")
    with scratch.claim():
        rows, int8 = run_demo(args.seed, args.teacher_epochs, args.student_epochs, args.output_dir)
    print()
    print(format_table(rows, args.student_epochs, int8))
    print(f"total {time.perf_counter() - start:.0f}s")
    return rows


__all__ = ["Int8Result", "Row", "format_table", "main", "predict_bf16", "quantize_student", "run_demo"]
