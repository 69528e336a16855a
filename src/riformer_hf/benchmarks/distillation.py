"""Seconds per distillation training step (labels only, soft KD, + module imitation, + the recipe's batch
augmentation) against a student step plus a teacher forward, interleaved."""

import tempfile

import torch
from transformers import PoolFormerForImageClassification

from ..convert.poolformer import poolformer_config
from ..distillation.recipes import RECIPES, SHARED_TRAINING
from ..models.riformer import RIFormerForImageClassification
from ..timing import ratio, summary, synchronizer, time_interleaved, torch_threads
from .common import BenchmarkSettings, format_ratio, riformer_config

_S12 = RECIPES["riformer-s12"]
PAPER_IMITATION_WEIGHTS = {"lambda_hidden": _S12.lambda_hidden, "lambda_mixer": _S12.lambda_mixer,
                           "lambda_relation": _S12.lambda_relation}
# The recipe's per-batch augmentation, done in the training step on the device (per-image RandAugment runs in the
# loader workers, outside the step).
PAPER_BATCH_AUGMENTATION = {
    name: SHARED_TRAINING[name] for name in ("mixup", "cutmix", "reprob", "label_smoothing_factor")
}


def run_distillation_benchmark(
    settings: BenchmarkSettings, preset: str = "s12", temperature: float = 1.0
) -> dict:
    """Seconds per training step of a RIFormer student with a PoolFormer teacher of the same size, interleaved.

    Steps are `trainer.compute_loss` (under the Trainer's autocast context) + backward + AdamW step, for labels only,
    soft distillation (label-free, α = 1) and soft distillation + module imitation (the paper's S12 weights, the
    default imitated blocks; the PoolFormer serves as logit and imitation teacher with one forward). The overhead is
    the imitation step over (labels-only step + teacher forward).
    """
    from ..distillation import RIFormerDistillationTrainer, RIFormerTrainingArguments

    torch.manual_seed(settings.seed)
    config = riformer_config(preset, settings)
    student = RIFormerForImageClassification(config).to(settings.device).train()
    teacher = PoolFormerForImageClassification(poolformer_config(config)).to(settings.device)
    teacher.eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    batch = {
        "pixel_values": torch.randn(
            settings.batch_size, config.num_channels, settings.image_size, settings.image_size, device=settings.device
        ),
        "labels": torch.randint(0, config.num_labels, (settings.batch_size,), device=settings.device),
    }
    variants = {
        "labels_only": {"distillation_type": "none"},
        "soft_kd": {"distillation_type": "soft", "distillation_alpha": 1.0},
        "soft_kd_imitation": {"distillation_type": "soft", "distillation_alpha": 1.0, **PAPER_IMITATION_WEIGHTS},
        "full_recipe": {"distillation_type": "soft", "distillation_alpha": 1.0, **PAPER_IMITATION_WEIGHTS,
                        **PAPER_BATCH_AUGMENTATION},
    }
    with tempfile.TemporaryDirectory() as output_dir, torch_threads(settings.threads):
        trainers = {}
        for name, fields in variants.items():
            args = RIFormerTrainingArguments(
                output_dir=output_dir, report_to="none", use_cpu=settings.device == "cpu",
                bf16=settings.dtype == "bf16", distillation_temperature=temperature, **fields,
            )
            trainers[name] = RIFormerDistillationTrainer(
                student, args, teacher_model=None if name == "labels_only" else teacher
            )

        def step(trainer):
            with trainer.compute_loss_context_manager():
                loss = trainer.compute_loss(student, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def teacher_forward():
            with torch.no_grad(), trainers["soft_kd"].accelerator.autocast():
                teacher(pixel_values=batch["pixel_values"])

        workloads = {name: (lambda trainer=trainer: step(trainer)) for name, trainer in trainers.items()}
        workloads["teacher_forward"] = teacher_forward
        seconds = time_interleaved(workloads, settings.warmup, settings.repeats, synchronizer(settings.device))

    baseline = [s + t for s, t in zip(seconds["labels_only"], seconds["teacher_forward"])]
    return {
        "preset": preset,
        "batch_size": settings.batch_size,
        "image_size": settings.image_size,
        "seconds": {name: summary(values) for name, values in seconds.items()},
        "overhead": {
            "soft_kd_vs_student_plus_teacher": ratio(seconds["soft_kd"], baseline),
            "soft_kd_imitation_vs_student_plus_teacher": ratio(seconds["soft_kd_imitation"], baseline),
            "full_recipe_vs_soft_kd_imitation": ratio(seconds["full_recipe"], seconds["soft_kd_imitation"]),
            "full_recipe_vs_labels_only": ratio(seconds["full_recipe"], seconds["labels_only"]),
        },
    }


def format_distillation_table(record: dict) -> str:
    labels = {
        "labels_only": "labels only (student step)",
        "soft_kd": "soft KD (α = 1)",
        "soft_kd_imitation": "soft KD + module imitation",
        "full_recipe": "+ mixup/cutmix, erasing, smoothing (full recipe)",
        "teacher_forward": "teacher forward (no grad)",
    }
    lines = [
        (f"{record['preset'].upper()} student, PoolFormer-{record['preset'].upper()} teacher, batch "
         f"{record['batch_size']}, {record['image_size']}²"),
        "",
        "| step | s/step (median, [min, max]) |",
        "|---|---|",
    ]
    for name, label in labels.items():
        s = record["seconds"][name]
        lines.append(f"| {label} | {s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}] |")
    overhead = record["overhead"]
    lines += [
        "",
        "soft KD / (student step + teacher forward): "
        + format_ratio(overhead["soft_kd_vs_student_plus_teacher"]),
        "soft KD + imitation / (student step + teacher forward): "
        + format_ratio(overhead["soft_kd_imitation_vs_student_plus_teacher"]),
        "full recipe / soft KD + imitation: " + format_ratio(overhead["full_recipe_vs_soft_kd_imitation"]),
        "full recipe / crop-and-flip labels-only step: " + format_ratio(overhead["full_recipe_vs_labels_only"]),
    ]
    return "\n".join(lines)


__all__ = ["format_distillation_table", "run_distillation_benchmark"]
