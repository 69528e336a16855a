"""The demo's speed column (teacher and deploy students timed in the same interleaved rounds) and its INT8 line."""

import pytest
import torch
from transformers import PoolFormerConfig, PoolFormerForImageClassification

from riformer_hf import RIFormerConfig, RIFormerForImageClassification, reparameterize_model
from riformer_hf.data import digits_dataset, make_image_processor
from riformer_hf.demo import Row, format_table, measure_speed, predict_bf16, quantize_student

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
    assert "INT8: skipped, onnxruntime is not installed" in table


def test_the_last_student_is_quantised_and_scored_on_the_held_out_digits(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    labels = {"id2label": {i: str(i) for i in range(10)}, "label2id": {str(i): i for i in range(10)}}
    student = reparameterize_model(RIFormerForImageClassification(RIFormerConfig(**TINY, **labels)))
    result = quantize_student(student, str(tmp_path / "onnx"), calibration_samples=16)
    assert result.calibration_images == 16
    assert (tmp_path / "onnx" / "model.onnx").is_file() and (tmp_path / "onnx" / "model_int8.onnx").is_file()
    test = digits_dataset()["test"]  # untrained: fp32 ORT top-1 is its PyTorch top-1 on the same held-out digits
    pixels = make_image_processor(32, crop_pct=1.0)(images=list(test["image"]), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        top1 = (student(pixel_values=pixels).logits.argmax(-1) == torch.tensor(test["label"])).double().mean()
    assert result.fp32_top1 == pytest.approx(100 * top1.item(), abs=100 / len(test))
    table = format_table([Row("RIFormer, + teacher init", 89.0, 5.0, 1e-6)], student_epochs=2, int8=result)
    assert f"top-1 {result.int8_top1:.2f}% vs {result.fp32_top1:.2f}% in fp32" in table


def test_the_last_student_is_scored_in_bf16_and_shown_beside_fp32():
    torch.manual_seed(0)
    student = reparameterize_model(RIFormerForImageClassification(RIFormerConfig(**TINY, num_labels=10)))
    test = digits_dataset()["test"]
    pixels = make_image_processor(32, crop_pct=1.0)(images=list(test["image"]), return_tensors="pt")["pixel_values"]
    dataset = [{"pixel_values": p} for p in pixels]
    with torch.no_grad():
        fp32 = student(pixel_values=pixels).logits
    bf16 = torch.from_numpy(predict_bf16(student, dataset))
    assert next(student.parameters()).dtype == torch.float32  # scored on a copy
    scale = fp32.abs().max()
    assert 0 < (bf16 - fp32).abs().max() <= 0.05 * scale  # bf16 rounding: not fp32, within bf16's precision
    table = format_table([Row("RIFormer, + teacher init", 89.0, 5.0, 1e-6, bf16_top1=88.5)], student_epochs=2)
    assert "bf16 of the last student (eager PyTorch): top-1 88.50% vs 89.00% in fp32 (-0.50 points)." in table
