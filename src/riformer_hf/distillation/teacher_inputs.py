"""What a teacher sees: the student's batch (augmented, mixed, erased) converted to the teacher's preprocessing.

A teacher trained with other normalisation or at another resolution gets the same images the student sees, on the
device: the normalisation is converted exactly, x_t = (x_s · σ_s + μ_s − μ_t) / σ_t per channel, then the batch is
resized bicubically (antialiased when shrinking, `align_corners=False`, the interpolation of the PoolFormer and GFNet
image processors) to the teacher's height × width. The view is not re-cropped: the teacher sees the student's crop.
"""

import torch
import torch.nn.functional as F

from ..data.preprocessing import ProcessorSpec, processor_spec

TOLERANCE = 1e-6


def as_spec(processor_or_spec) -> ProcessorSpec | None:
    """A `ProcessorSpec` from an image processor (or a spec, or None)."""
    if processor_or_spec is None or isinstance(processor_or_spec, ProcessorSpec):
        return processor_or_spec
    return processor_spec(processor_or_spec)


def describe(spec: ProcessorSpec) -> str:
    mean = ", ".join(f"{v:g}" for v in spec.mean)
    std = ", ".join(f"{v:g}" for v in spec.std)
    return f"{spec.height}×{spec.width}, mean ({mean}), std ({std})"


def same_preprocessing(a: ProcessorSpec, b: ProcessorSpec) -> bool:
    """Whether two specs hand a model the same tensor (size, mean and std)."""
    close = all(abs(x - y) <= TOLERANCE for x, y in zip(a.mean + a.std, b.mean + b.std))
    return (a.height, a.width) == (b.height, b.width) and len(a.mean) == len(b.mean) and close


class TeacherInputConverter:
    """Converts batches preprocessed as `student` into batches preprocessed as `teacher` (see the module docstring).
    The identity (no copy) when both are the same."""

    def __init__(self, student: ProcessorSpec, teacher: ProcessorSpec):
        if len(student.mean) != len(teacher.mean):
            raise ValueError(
                f"The teacher normalises {len(teacher.mean)} channels, the student {len(student.mean)}: they cannot "
                "share a batch."
            )
        self.student, self.teacher = student, teacher
        self.identity = same_preprocessing(student, teacher)
        std_s, std_t = torch.tensor(student.std), torch.tensor(teacher.std)
        self.scale = (std_s / std_t).view(-1, 1, 1)
        self.shift = ((torch.tensor(student.mean) - torch.tensor(teacher.mean)) / std_t).view(-1, 1, 1)
        self.normalisation_differs = not torch.allclose(self.scale, torch.ones(())) or bool(self.shift.any())

    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return pixel_values
        x = pixel_values
        if self.normalisation_differs:
            scale = self.scale.to(x.device, torch.float32)
            shift = self.shift.to(x.device, torch.float32)
            x = (x.float() * scale + shift).to(pixel_values.dtype)
        if tuple(x.shape[-2:]) != (self.teacher.height, self.teacher.width):
            x = F.interpolate(
                x, size=(self.teacher.height, self.teacher.width), mode="bicubic", align_corners=False, antialias=True
            )
        return x


__all__ = ["TeacherInputConverter", "as_spec", "describe", "same_preprocessing"]
