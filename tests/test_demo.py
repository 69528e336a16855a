"""The demo's speed column: the teacher and the deploy students timed in the same interleaved rounds."""

from transformers import PoolFormerConfig, PoolFormerForImageClassification

from riformer_hf import RIFormerConfig, RIFormerForImageClassification, reparameterize_model
from riformer_hf.demo import Row, format_table, measure_speed

TINY = {"depths": (1, 1, 1, 1), "hidden_sizes": (8, 8, 16, 16)}


def test_speed_is_measured_in_interleaved_rounds_and_shown_beside_the_teacher():
    teacher = PoolFormerForImageClassification(PoolFormerConfig(**TINY, num_labels=10))
    student = reparameterize_model(RIFormerForImageClassification(RIFormerConfig(**TINY, num_labels=10)))
    calls = []
    teacher.register_forward_hook(lambda module, args, output: calls.append("teacher"))
    student.register_forward_hook(lambda module, args, output: calls.append("student"))
    speed, ratios = measure_speed([teacher, student], batch=4, rounds=5)
    assert calls == ["teacher", "student"] * 3 + ["teacher", "student", "student", "teacher"] * 2 + ["teacher",
                                                                                                      "student"]
    assert all(s > 0 for s in speed) and ratios[0] == 1.0 and ratios[1] > 0
    assert not teacher.training and not student.training  # timed in eval mode

    rows = [Row("PoolFormer teacher", 90.0, 10.0, None, speed[0], ratios[0]),
            Row("RIFormer, + teacher init", 89.0, 5.0, 1e-6, speed[1], ratios[1])]
    table = format_table(rows, student_epochs=2)
    assert f"{speed[0]:>9.0f}{1.0:>11.2f}×" in table and f"{speed[1]:>9.0f}{ratios[1]:>11.2f}×" in table
    assert "eager PyTorch, batch 64 at 32²" in table
