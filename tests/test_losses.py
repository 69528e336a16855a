import math

import pytest
import torch
import torch.nn.functional as F

from riformer_hf.distillation.losses import (
    feature_imitation_loss,
    hard_distillation_loss,
    relation_imitation_loss,
    soft_distillation_loss,
)


def naive_relation_loss(student, teacher):
    """The paper's formula literally: HW × HW relation matrices of channel-normalised tokens."""
    n, _, h, w = student.shape
    total = 0.0
    for s, t in zip(student.double(), teacher.double()):
        s_tokens = F.normalize(s.flatten(1).T, dim=1)  # (HW, C)
        t_tokens = F.normalize(t.flatten(1).T, dim=1)
        total += ((s_tokens @ s_tokens.T - t_tokens @ t_tokens.T) ** 2).sum()
    return total / (n * h**2 * w**2)


def test_soft_kd_by_hand():
    student = torch.tensor([[0.0, math.log(3.0)]])  # softmax (1/4, 3/4)
    teacher = torch.tensor([[0.0, 0.0]])  # softmax (1/2, 1/2)
    # KL(t ‖ s) = ½ log(½ / ¼) + ½ log(½ / ¾) = ½ log(4/3); divided by K = 2 logits.
    expected = 0.5 * math.log(4 / 3) / 2
    assert soft_distillation_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    # temperature 2: softmax(s/2) = (1, √3)/(1 + √3); times τ² = 4
    p = [1 / (1 + math.sqrt(3.0)), math.sqrt(3.0) / (1 + math.sqrt(3.0))]
    expected_t2 = sum(0.5 * math.log(0.5 / q) for q in p) * 4 / 2
    assert soft_distillation_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected_t2, rel=1e-5)


def test_soft_kd_matches_deit_normalisation():
    torch.manual_seed(0)
    student, teacher = torch.randn(6, 7), torch.randn(6, 7)
    tau = 3.0
    deit = F.kl_div(
        F.log_softmax(student / tau, dim=1), F.log_softmax(teacher / tau, dim=1), reduction="sum", log_target=True
    ) * (tau * tau) / student.numel()
    assert torch.allclose(soft_distillation_loss(student, teacher, tau), deit, rtol=1e-6)
    per_sample = soft_distillation_loss(student, teacher, tau, reduction="none")
    assert per_sample.shape == (6,)
    assert torch.allclose(soft_distillation_loss(student, teacher, tau, reduction="sum"), per_sample.sum())
    assert soft_distillation_loss(teacher, teacher, tau).abs() < 1e-7


def test_hard_kd_is_cross_entropy_to_teacher_argmax():
    student = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    teacher = torch.tensor([[0.0, 5.0, 1.0], [0.0, 3.0, -1.0]])  # argmax 1, 1
    log_z0, log_z1 = math.log(math.exp(2) + 2), math.log(math.e + 2)
    expected = [log_z0 - 0.0, log_z1 - 1.0]
    assert hard_distillation_loss(student, teacher, reduction="none").tolist() == pytest.approx(expected, rel=1e-6)
    assert hard_distillation_loss(student, teacher).item() == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_feature_loss_by_hand():
    student = torch.zeros(2, 2, 1, 2)
    teacher = torch.zeros(2, 2, 1, 2)
    teacher[0, 0, 0, 0] = 2.0  # squared error 4 in sample 0
    teacher[1, 1, 0, 1] = -1.0  # squared error 1 in sample 1
    # 1 / (N·C·H·W) = 1 / 8
    assert feature_imitation_loss(student, teacher).item() == pytest.approx(5 / 8)
    assert feature_imitation_loss(student, teacher, reduction="none").tolist() == pytest.approx([1.0, 0.25])
    assert feature_imitation_loss(student, teacher, reduction="sum").item() == pytest.approx(1.25)


def test_relation_loss_by_hand():
    # Two tokens, two channels. Student tokens (1,0) and (0,1): R = I. Teacher tokens (3,0) and (1,1)/·: after
    # normalisation (1,0) and (1,1)/√2, R = [[1, 1/√2], [1/√2, 1]]. ‖ΔR‖² = 2 · ½ = 1; 1 / (N·H²·W²) = 1/4.
    student = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, C=2, H=1, W=2)
    teacher = torch.tensor([[[[3.0, 1.0]], [[0.0, 1.0]]]])
    assert relation_imitation_loss(student, teacher).item() == pytest.approx(0.25, rel=1e-6)


RELATION_SHAPES = {  # (student, teacher): the first two take the C × C Gram form, the last two the HW × HW one
    "gram": ((3, 5, 4, 6), (3, 5, 4, 6)),
    "gram, channels differ": ((2, 7, 3, 5), (2, 11, 3, 5)),
    "direct": ((2, 12, 2, 3), (2, 12, 2, 3)),
    "direct, channels differ": ((2, 9, 2, 2), (2, 16, 2, 2)),
}


@pytest.mark.parametrize("shape_s,shape_t", RELATION_SHAPES.values(), ids=RELATION_SHAPES.keys())
def test_relation_loss_matches_naive(shape_s, shape_t):
    torch.manual_seed(1)
    student, teacher = torch.randn(shape_s), torch.randn(shape_t)
    expected = naive_relation_loss(student, teacher)
    assert relation_imitation_loss(student, teacher).double().item() == pytest.approx(expected.item(), rel=1e-5)
    in_float64 = relation_imitation_loss(student.double(), teacher.double())
    assert in_float64.item() == pytest.approx(expected.item(), rel=1e-12)
    per_sample = relation_imitation_loss(student, teacher, reduction="none")
    assert per_sample.shape == (shape_s[0],)


@pytest.mark.parametrize("channels,size", [(4, 3), (12, 2)], ids=["gram", "direct"])
def test_relation_gradient_matches_naive(channels, size):
    torch.manual_seed(2)
    student = torch.randn(2, channels, size, size, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, channels, size, size, dtype=torch.float64)
    (grad,) = torch.autograd.grad(relation_imitation_loss(student, teacher), student)
    (grad_naive,) = torch.autograd.grad(naive_relation_loss(student, teacher), student)
    assert torch.allclose(grad, grad_naive, atol=1e-12)


@pytest.mark.parametrize(
    "channels,size,largest_matrix",
    [(8, 56, 8 * 8), (512, 7, 49 * 49)],  # S12 stage 1 at 224² would need 3136² entries; stage 4 is smaller as HW × HW
    ids=["many tokens: C × C", "few tokens: HW × HW"],
)
def test_relation_loss_builds_the_smaller_matrices(channels, size, largest_matrix, monkeypatch):
    student, teacher = torch.randn(2, channels, size, size), torch.randn(2, channels, size, size)
    largest = []

    def spy_on(real):
        def spy(*args, **kwargs):
            out = real(*args, **kwargs)
            largest.append(out[0].numel())
            return out

        return spy

    monkeypatch.setattr(torch, "bmm", spy_on(torch.bmm))
    monkeypatch.setattr(torch, "baddbmm", spy_on(torch.baddbmm))
    relation_imitation_loss(student, teacher)
    assert largest and max(largest) == largest_matrix


def test_losses_are_float32_under_bf16_autocast():
    torch.manual_seed(3)
    student, teacher = torch.randn(2, 6, 4, 4), torch.randn(2, 6, 4, 4)
    reference = relation_imitation_loss(student, teacher)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = relation_imitation_loss(student.bfloat16(), teacher.bfloat16())
        kd = soft_distillation_loss(torch.randn(2, 3).bfloat16(), torch.randn(2, 3).bfloat16())
    assert value.dtype == torch.float32 and kd.dtype == torch.float32
    assert value.item() == pytest.approx(reference.item(), rel=0.05)  # only the bf16 rounding of the inputs


def test_identical_features_give_zero():
    x = torch.randn(2, 3, 4, 5)
    assert feature_imitation_loss(x, x).item() == 0.0
    assert relation_imitation_loss(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="same shapes"):
        feature_imitation_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 2, 2))
    with pytest.raises(ValueError, match="batch and spatial sizes"):
        relation_imitation_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 2))
    with pytest.raises(ValueError, match=r"\(batch, channels, height, width\)"):
        feature_imitation_loss(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="label space"):
        soft_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="positive"):
        soft_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0)
    with pytest.raises(ValueError, match="reduction"):
        feature_imitation_loss(torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), reduction="avg")
