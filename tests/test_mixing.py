import math

import pytest
import torch

from riformer_hf.data.mixing import BatchMixer, cutmix_box, erase_box, random_erase, smooth_one_hot
from riformer_hf.distillation.losses import soft_target_cross_entropy

DRAWS = 4000


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_mixup_lambda_is_beta_and_the_switch_rate_is_one_half():
    mixer = BatchMixer(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, num_classes=10)
    g = generator()
    decisions = [mixer.decide(32, 32, g) for _ in range(DRAWS)]
    mixup = torch.tensor([d.lam for d in decisions if d.method == "mixup"], dtype=torch.float64)
    cutmix_share = sum(d.method == "cutmix" for d in decisions) / DRAWS
    assert {d.method for d in decisions} == {"mixup", "cutmix"}  # mixing probability 1
    assert abs(cutmix_share - 0.5) < 3 * math.sqrt(0.25 / DRAWS)
    # Beta(0.8, 0.8): mean 1/2, variance 1 / (4 (2α + 1)) = 0.0962
    n = len(mixup)
    assert abs(mixup.mean().item() - 0.5) < 4 * math.sqrt(0.0962 / n)
    assert mixup.var().item() == pytest.approx(1 / (4 * 2.6), rel=0.08)
    # the Beta(0.8, 0.8) CDF at 0.1 is 0.1435: U-shaped, more mass near the ends than a uniform
    assert (mixup < 0.1).double().mean().item() == pytest.approx(0.1435, abs=0.03)


def test_cutmix_box_area_matches_the_corrected_lambda():
    mixer = BatchMixer(mixup_alpha=0.0, cutmix_alpha=1.0, num_classes=10)
    g = generator(1)
    images = torch.arange(6.0).view(6, 1, 1, 1).expand(6, 3, 20, 30).clone()
    lams = []
    for _ in range(500):
        mixed, _, decision = mixer(images, None, g)
        assert decision.method == "cutmix"
        pasted = (mixed[0, 0] != images[0, 0]).double().mean().item()  # image 0 receives image 5
        assert pasted == pytest.approx(1.0 - decision.lam, abs=1e-12)
        assert torch.equal(mixed[0] != images[0], mixed[5] != images[5])  # one box for the batch
        lams.append(decision.lam)

    def kept_share(side, lam):  # mean share of one axis left uncut, over the uniformly drawn centres
        cut = int(side * math.sqrt(1 - lam))
        return sum(1 - (min(c + cut - cut // 2, side) - max(c - cut // 2, 0)) / side for c in range(side)) / side

    # λ ~ Beta(1, 1) = U(0, 1) before the correction; clipping at the borders raises the corrected λ above 1/2
    grid = [(k + 0.5) / 400 for k in range(400)]
    expected = sum(1 - (1 - kept_share(20, lam)) * (1 - kept_share(30, lam)) for lam in grid) / len(grid)
    assert expected > 0.6
    assert sum(lams) / len(lams) == pytest.approx(expected, abs=3 * 0.3 / math.sqrt(len(lams)))


def test_cutmix_box_is_centred_uniformly_and_clipped():
    g = generator(2)
    boxes = [cutmix_box(0.75, 40, 40, g) for _ in range(2000)]  # side √0.25 · 40 = 20
    assert all(0 <= t < b <= 40 and 0 <= l < r <= 40 for t, b, l, r in boxes)
    inside = [b for b in boxes if b[0] > 0 and b[1] < 40]
    assert all(b[1] - b[0] == 20 for b in inside)
    # centres uniform over the 40 rows: half of them within 10 px of an edge, where the box is clipped
    assert len(inside) / len(boxes) == pytest.approx(20 / 40, abs=0.05)


def test_mixup_images_and_targets():
    mixer = BatchMixer(mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=4)
    images = torch.randn(5, 3, 8, 8, generator=generator())
    labels = torch.tensor([0, 1, 2, 3, 1])
    mixed, targets, decision = mixer(images, labels, generator(3))
    lam = decision.lam
    assert decision.method == "mixup" and 0 < lam < 1
    torch.testing.assert_close(mixed, lam * images + (1 - lam) * images.flip(0))
    assert torch.equal(mixed[2], images[2])  # the middle image of an odd batch is its own partner
    on, off = 1 - 0.1 + 0.1 / 4, 0.1 / 4
    expected = torch.full((5, 4), off)
    for i, (a, b) in enumerate(zip(labels.tolist(), labels.flip(0).tolist())):
        expected[i, a] += lam * (on - off)
        expected[i, b] += (1 - lam) * (on - off)
    torch.testing.assert_close(targets, expected)
    torch.testing.assert_close(targets.sum(-1), torch.ones(5))
    assert targets.min().item() == pytest.approx(off)


def test_smoothing_without_mixing_and_the_soft_cross_entropy():
    off_mixer = BatchMixer(mixup_alpha=0.0, cutmix_alpha=0.0, label_smoothing=0.1, num_classes=3)
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 2, 1, 1])
    mixed, targets, decision = off_mixer(images, labels)
    assert decision.method == "none" and torch.equal(mixed, images)
    torch.testing.assert_close(targets, smooth_one_hot(labels, 3, 0.1))
    logits = torch.randn(4, 3)
    torch.testing.assert_close(
        soft_target_cross_entropy(logits, targets),
        torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1),
    )
    # mix probability: 0.3 of the batches are mixed
    rare = BatchMixer(prob=0.3, num_classes=3)
    g = generator(4)
    share = sum(rare.decide(8, 8, g).method != "none" for _ in range(DRAWS)) / DRAWS
    assert abs(share - 0.3) < 3 * math.sqrt(0.21 / DRAWS)


def test_generator_makes_mixing_reproducible_and_the_global_rng_is_used_otherwise():
    mixer = BatchMixer(num_classes=3)
    images, labels = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    a = mixer(images, labels, generator(5))
    b = mixer(images, labels, generator(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    torch.manual_seed(9)
    c = mixer(images, labels)
    torch.manual_seed(9)
    d = mixer(images, labels)
    assert torch.equal(c[0], d[0]) and c[2] == d[2]


def test_random_erasing_rate_area_and_aspect():
    images = torch.zeros(DRAWS, 1, 32, 32)
    erased, boxes = random_erase(images, prob=0.25, generator=generator(6))
    done = [b for b in boxes if b is not None]
    assert abs(len(done) / DRAWS - 0.25) < 3 * math.sqrt(0.1875 / DRAWS)
    areas = torch.tensor([h * w / 1024 for _, _, h, w in done])
    assert areas.min() >= 0.015 and areas.max() <= 0.36  # 0.02-1/3 up to the rounding of the sides
    log_aspect = torch.tensor([math.log(h / w) for _, _, h, w in done])
    assert log_aspect.min() > math.log(0.25) and log_aspect.max() < math.log(4.0)
    assert abs(log_aspect.mean().item()) < 0.1  # log-uniform on a symmetric range
    for i, box in enumerate(boxes[:200]):
        changed = erased[i, 0] != 0
        if box is None:
            assert not changed.any()
        else:
            top, left, h, w = box
            assert changed[top:top + h, left:left + w].all() and changed.sum() == h * w
    values = torch.cat([erased[i, 0, t:t + h, l:l + w].flatten() for i, (t, l, h, w) in
                        ((i, b) for i, b in enumerate(boxes) if b is not None)])
    assert abs(values.mean().item()) < 0.02 and values.std().item() == pytest.approx(1.0, abs=0.02)  # N(0, 1)
    assert torch.equal(images, torch.zeros_like(images))  # not in place unless asked


def test_erase_box_gives_up_when_nothing_fits():
    assert erase_box(2, 2, area=(0.9, 0.9), attempts=10, generator=generator()) is None
    kept, boxes = random_erase(torch.ones(3, 3, 2, 2), prob=1.0, area=(0.9, 0.9), generator=generator())
    assert boxes == [None] * 3 and torch.equal(kept, torch.ones(3, 3, 2, 2))
