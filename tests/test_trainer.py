import math

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import PoolFormerConfig, PoolFormerForImageClassification, TrainerCallback, TrainingArguments

from riformer_hf import RIFormerConfig, RIFormerForImageClassification
from riformer_hf.distillation.losses import (
    feature_imitation_loss,
    hard_distillation_loss,
    relation_imitation_loss,
    soft_distillation_loss,
)
from riformer_hf.distillation.trainer import RIFormerDistillationTrainer, RIFormerTrainingArguments

LABELS = {"id2label": {0: "a", 1: "b", 2: "c"}, "label2id": {"a": 0, "b": 1, "c": 2}}
ARCH = {"depths": (1, 1, 2, 1), "hidden_sizes": (8, 8, 16, 16)}
IMITATION = {"lambda_hidden": 0.5, "lambda_mixer": 2.0, "lambda_relation": 3.0}



class Images(torch.utils.data.Dataset):
    def __init__(self, n=8, size=32, seed=0, labels=True):
        generator = torch.Generator().manual_seed(seed)
        self.pixels = torch.randn(n, 3, size, size, generator=generator)
        self.labels = torch.randint(0, 3, (n,), generator=generator) if labels else None

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, i):
        item = {"pixel_values": self.pixels[i]}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


def teacher(seed=0, **kwargs):
    torch.manual_seed(seed)
    return PoolFormerForImageClassification(PoolFormerConfig(**{**ARCH, **LABELS, **kwargs})).eval()


def student(seed=1, **kwargs):
    torch.manual_seed(seed)
    config = RIFormerConfig(**{**ARCH, "drop_path_rate": 0.0, "image_size": 32, **LABELS, **kwargs})
    return RIFormerForImageClassification(config)


def args(tmp_path, **kwargs):
    defaults = {
        "output_dir": str(tmp_path / "out"), "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
        "learning_rate": 1e-2, "report_to": [], "disable_tqdm": True, "use_cpu": True, "save_strategy": "no",
        "seed": 0, "logging_steps": 1,
    }
    return RIFormerTrainingArguments(**{**defaults, **kwargs})


def count_forwards(module):
    calls = []
    module.register_forward_pre_hook(lambda m, a, k: calls.append(1), with_kwargs=True)
    return calls


# ---- the loss ----


def test_compute_loss_combines_every_term_with_one_teacher_forward(tmp_path):
    pool, model = teacher(), student()
    trainer = RIFormerDistillationTrainer(
        model, args(tmp_path, distillation_type="soft", distillation_alpha=0.3, distillation_temperature=2.0,
                    imitation_layers=[1, 3], **IMITATION),
        teacher_model=pool,
    )
    assert trainer.imitation_teacher is pool  # an isomorphic PoolFormer teacher does both jobs
    calls = count_forwards(pool)
    batch = {"pixel_values": torch.randn(5, 3, 32, 32), "labels": torch.tensor([0, 1, 2, 0, 1])}
    loss = trainer.compute_loss(model, batch)
    assert len(calls) == 1

    out = model(batch["pixel_values"], output_block_states=True)
    blocks = [0, 1, 2, 3, 4]
    hooked = {}
    handles = [
        layer.register_forward_hook(lambda m, a, o, i=i: hooked.__setitem__(("block", i), o[0]))
        for i, layer in enumerate(l for s in pool.poolformer.encoder.block for l in s)
    ] + [
        layer.pooling.register_forward_hook(lambda m, a, o, i=i: hooked.__setitem__(("mixer", i), o))
        for i, layer in enumerate(l for s in pool.poolformer.encoder.block for l in s)
    ]
    with torch.no_grad():
        teacher_logits = pool(batch["pixel_values"]).logits
    for h in handles:
        h.remove()
    assert len(hooked) == 2 * len(blocks)
    ce = torch.nn.functional.cross_entropy(out.logits, batch["labels"])
    kd = soft_distillation_loss(out.logits, teacher_logits, 2.0)
    hidden = sum(feature_imitation_loss(out.block_states[i], hooked["block", i]) for i in (1, 3))
    mixer = sum(feature_imitation_loss(out.mixer_states[i], hooked["mixer", i]) for i in (1, 3))
    relation = sum(relation_imitation_loss(out.block_states[i], hooked["block", i]) for i in (1, 3))
    expected = 0.7 * ce + 0.3 * kd + 0.5 * hidden + 2.0 * mixer + 3.0 * relation
    assert all(term > 1e-4 for term in (ce, kd, hidden, mixer, relation))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)


def test_hard_distillation_and_label_free_soft_distillation(tmp_path):
    pool, model = teacher(), student()
    batch = {"pixel_values": torch.randn(4, 3, 32, 32), "labels": torch.tensor([0, 1, 2, 0])}
    with torch.no_grad():
        logits, teacher_logits = model(batch["pixel_values"]).logits, pool(batch["pixel_values"]).logits
    hard = RIFormerDistillationTrainer(model, args(tmp_path, distillation_type="hard", distillation_alpha=0.25),
                                       teacher_model=pool)
    with torch.no_grad():
        loss = hard.compute_loss(model, batch)
    ce = torch.nn.functional.cross_entropy(logits, batch["labels"])
    torch.testing.assert_close(loss, 0.75 * ce + 0.25 * hard_distillation_loss(logits, teacher_logits))

    label_free = RIFormerDistillationTrainer(
        model, args(tmp_path, distillation_type="soft", distillation_alpha=1.0), teacher_model=pool,
        train_dataset=Images(labels=False),
    )
    no_labels = {"pixel_values": batch["pixel_values"]}
    with torch.no_grad():
        loss = label_free.compute_loss(model, no_labels)
    torch.testing.assert_close(loss, soft_distillation_loss(logits, teacher_logits))


def test_separate_logit_and_imitation_teachers(tmp_path):
    logit_teacher = teacher(seed=5, hidden_sizes=(8, 16, 16, 16))  # not isomorphic: only a logit teacher
    pool, model = teacher(), student()
    trainer = RIFormerDistillationTrainer(
        model, args(tmp_path, distillation_type="soft", lambda_mixer=1.0), teacher_model=logit_teacher,
        imitation_teacher=pool,
    )
    logit_calls, pool_calls = count_forwards(logit_teacher), count_forwards(pool)
    trainer.compute_loss(model, {"pixel_values": torch.randn(2, 3, 32, 32), "labels": torch.tensor([0, 1])})
    assert len(logit_calls) == len(pool_calls) == 1


# ---- training behaviour ----


def run_one_step(tmp_path, name, dataset, **kwargs):
    model = student()
    trainer = RIFormerDistillationTrainer(
        model, args(tmp_path / name, distillation_type="soft", optim="sgd", learning_rate=0.5, max_steps=1, **IMITATION,
                    **kwargs),
        teacher_model=teacher(), train_dataset=dataset,
    )
    trainer.train()
    return trainer.state.log_history[0], model


def assert_same_step(acc_log, acc, big_log, big):
    """An accumulated step and one big-batch step: the same loss, gradient norm, logged terms and weights."""
    assert acc_log["loss"] == pytest.approx(big_log["loss"], rel=1e-5)
    assert acc_log["grad_norm"] == pytest.approx(big_log["grad_norm"], rel=1e-4)
    for term in ("loss_ce", "loss_kd", "loss_hidden", "loss_mixer", "loss_relation"):
        assert acc_log[term] == pytest.approx(big_log[term], rel=1e-5)
    for (name, a), b in zip(big.named_parameters(), acc.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """6 images as micro-batches of 4 + 2 (accumulation 2) or as one batch of 6: same loss, gradient, weights."""
    dataset = Images(n=6)
    big_log, big = run_one_step(tmp_path, "big", dataset, per_device_train_batch_size=6)
    acc_log, acc = run_one_step(tmp_path, "acc", dataset, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    assert_same_step(acc_log, acc, big_log, big)
    assert any((p - q).abs().max() > 1e-3 for p, q in zip(big.parameters(), student().parameters()))


def test_every_term_logged_in_training_and_evaluation(tmp_path):
    weights = {"distillation_alpha": 0.4, **IMITATION}
    trainer = RIFormerDistillationTrainer(
        student(), args(tmp_path, distillation_type="soft", logging_steps=2, eval_strategy="steps", eval_steps=2,
                        max_steps=4, **weights),
        teacher_model=teacher(), train_dataset=Images(n=16), eval_dataset=Images(n=6, seed=1),
    )
    trainer.train()
    train_logs = [log for log in trainer.state.log_history if "loss" in log]
    eval_logs = [log for log in trainer.state.log_history if "eval_loss" in log]
    assert [log["step"] for log in train_logs] == [2, 4] and [log["step"] for log in eval_logs] == [2, 4]

    def combined(log, prefix=""):
        terms = {t: log[f"{prefix}loss_{t}"] for t in ("ce", "kd", "hidden", "mixer", "relation")}
        return (0.6 * terms["ce"] + 0.4 * terms["kd"] + 0.5 * terms["hidden"] + 2.0 * terms["mixer"]
                + 3.0 * terms["relation"])

    for log in train_logs:  # terms averaged over the same two steps as `loss`
        assert log["loss"] == pytest.approx(combined(log), rel=1e-4)
    for log in eval_logs:
        assert log["eval_loss"] == pytest.approx(combined(log, "eval_"), rel=1e-4)
    assert train_logs[0]["loss_ce"] != train_logs[1]["loss_ce"]


def test_imitation_terms_follow_their_epoch_windows(tmp_path):
    trainer = RIFormerDistillationTrainer(
        student(), args(tmp_path, lambda_hidden=1.0, lambda_relation=1.0, feature_epochs=2, relation_epochs=1,
                        num_train_epochs=3),
        imitation_teacher=teacher(), train_dataset=Images(n=8),
    )
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert len(logs) == 6
    assert [("loss_hidden" in log, "loss_relation" in log) for log in logs] == [(True, True)] * 2 + [
        (True, False)
    ] * 2 + [(False, False)] * 2


def test_teachers_frozen_out_of_optimizer_and_never_saved(tmp_path):
    pool, model = teacher(), student()
    pool.train()
    before = {k: v.clone() for k, v in pool.state_dict().items()}
    trainer = RIFormerDistillationTrainer(
        model, args(tmp_path, distillation_type="soft", lambda_mixer=1.0, max_steps=2, save_strategy="steps",
                    save_steps=2),
        teacher_model=pool, train_dataset=Images(n=8),
    )
    trainer.train()
    assert not pool.training and not any(p.requires_grad for p in pool.parameters())
    assert all(torch.equal(v, pool.state_dict()[k]) for k, v in before.items())
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized and not optimized & {id(p) for p in pool.parameters()}
    assert all(m is not pool for m in trainer.accelerator._models)
    trainer.save_model(str(tmp_path / "final"))
    for folder in (tmp_path / "out" / "checkpoint-2", tmp_path / "final"):
        files = list(folder.glob("*.safetensors"))
        assert files, folder
        keys = {k for f in files for k in load_file(f)}
        assert keys and not any("poolformer" in k for k in keys)


def test_bf16_autocast_on_cpu(tmp_path):
    pool = teacher()
    dtypes = []
    pool.classifier.register_forward_hook(lambda m, a, o: dtypes.append(o.dtype))
    trainer = RIFormerDistillationTrainer(
        student(), args(tmp_path, bf16=True, distillation_type="soft", max_steps=2, **IMITATION),
        teacher_model=pool, train_dataset=Images(n=8),
    )
    trainer.train()
    assert dtypes and set(dtypes) == {torch.bfloat16}
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert all(math.isfinite(log[k]) for log in logs for k in log if k.startswith("loss"))


def test_resume_from_checkpoint_reaches_the_same_weights(tmp_path):
    def make(output, seed):
        model = student(seed=seed, drop_path_rate=0.2)  # drop path: the RNG state must be restored too
        trainer = RIFormerDistillationTrainer(
            model, args(tmp_path / output, distillation_type="soft", lambda_hidden=1.0, max_steps=4,
                        save_strategy="steps", save_steps=2),
            teacher_model=teacher(), train_dataset=Images(n=12),
        )
        return trainer, model

    straight, straight_model = make("a", seed=1)
    straight.train()
    resumed, resumed_model = make("b", seed=7)  # other initial weights: only the checkpoint can make them agree
    steps = []
    resumed.add_callback(type("Count", (TrainerCallback,), {"on_step_end": lambda self, *a, **k: steps.append(1)})())
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "out" / "checkpoint-2"))
    assert len(steps) == 2 and resumed.state.global_step == 4
    for (name, a), b in zip(straight_model.named_parameters(), resumed_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


# ---- bad input: clear errors before any training step ----


@pytest.mark.parametrize(
    "case,match",
    [
        ("label_count", "predicts 5 classes but the student 3"),
        ("label_names", "name their classes differently"),
        ("not_isomorphic", "depths: PoolFormer"),
        ("no_imitation_teacher", "lambda_mixer=1.0 asks for module imitation but there is no imitation teacher"),
        ("no_teacher", "distillation_type='soft' needs a `teacher_model`"),
        ("empty", "train dataset is empty"),
        ("no_labels", "train dataset has no label column"),
        ("eval_no_labels", "eval dataset has no label column"),
        ("bad_layers", r"imitation_layers \[7\] out of range"),
    ],
)
def test_bad_inputs_fail_before_training(tmp_path, case, match):
    model, kwargs = student(), {"train_dataset": Images(n=4)}
    arguments = {"distillation_type": "soft"}
    if case == "label_count":
        five = {"id2label": {i: str(i) for i in range(5)}, "label2id": {str(i): i for i in range(5)}}
        kwargs["teacher_model"] = teacher(**five)
    elif case == "label_names":
        kwargs["teacher_model"] = teacher(id2label={0: "a", 1: "c", 2: "b"}, label2id={"a": 0, "c": 1, "b": 2})
    elif case == "not_isomorphic":
        kwargs.update(teacher_model=teacher(), imitation_teacher=teacher(depths=(1, 1, 1, 1)))
        arguments["lambda_hidden"] = 1.0
    elif case == "no_imitation_teacher":
        kwargs["teacher_model"] = teacher(hidden_sizes=(8, 16, 16, 16))
        arguments["lambda_mixer"] = 1.0
    elif case == "no_teacher":
        pass
    elif case == "empty":
        kwargs.update(teacher_model=teacher(), train_dataset=Dataset.from_dict({"image": [], "label": []}))
    elif case == "no_labels":
        arguments["distillation_alpha"] = 0.5
        kwargs.update(teacher_model=teacher(), train_dataset=Images(labels=False))
    elif case == "eval_no_labels":
        kwargs.update(teacher_model=teacher(), eval_dataset=Dataset.from_dict({"image": [1, 2]}))
    elif case == "bad_layers":
        kwargs["teacher_model"] = teacher()
        arguments.update(lambda_hidden=1.0, imitation_layers=[7])
    steps = []
    with pytest.raises(ValueError, match=match):
        trainer = RIFormerDistillationTrainer(model, args(tmp_path, max_steps=1, **arguments), **kwargs)
        spy = type("Spy", (TrainerCallback,), {"on_step_begin": lambda self, *a, **k: steps.append(1)})
        trainer.add_callback(spy())
        trainer.train()
    assert not steps


def test_arguments_are_validated(tmp_path):
    with pytest.raises(ValueError, match="distillation_type"):
        args(tmp_path, distillation_type="feature")
    with pytest.raises(ValueError, match=r"distillation_alpha must lie in \[0, 1\]"):
        args(tmp_path, distillation_alpha=1.5)
    with pytest.raises(ValueError, match="lambda_relation must be non-negative"):
        args(tmp_path, lambda_relation=-1.0)
    with pytest.raises(TypeError, match="RIFormerTrainingArguments"):
        RIFormerDistillationTrainer(student(), TrainingArguments(output_dir=str(tmp_path), use_cpu=True))


# ---- the recipe's augmentation on the device ----

MIXING = {"mixup": 0.8, "cutmix": 1.0, "reprob": 0.25, "label_smoothing_factor": 0.1}


def record_inputs(module):
    seen = []
    module.register_forward_pre_hook(lambda m, a, k: seen.append((a[0] if a else k["pixel_values"]).clone()),
                                     with_kwargs=True)
    return seen


def test_teachers_see_the_mixed_erased_batch_and_the_label_term_uses_the_soft_targets(tmp_path):
    pool, model = teacher(), student()
    trainer = RIFormerDistillationTrainer(
        model, args(tmp_path, distillation_type="soft", distillation_alpha=0.3, **MIXING), teacher_model=pool,
    )
    teacher_seen, student_seen = record_inputs(pool), record_inputs(model)
    augmented = []
    augment = trainer.augment_batch
    trainer.augment_batch = lambda x, y: augmented.append(augment(x, y)) or augmented[-1]
    batch = {"pixel_values": torch.randn(6, 3, 32, 32), "labels": torch.tensor([0, 1, 2, 0, 1, 2])}
    model.train()
    torch.manual_seed(3)
    loss = trainer.compute_loss(model, batch)
    (images, targets), = augmented
    assert not torch.equal(images, batch["pixel_values"]) and targets.shape == (6, 3)
    assert torch.equal(teacher_seen[0], images) and torch.equal(student_seen[0], images)

    model.eval()  # drop path is 0: the same function in both modes
    with torch.no_grad():
        out = model(images)
        teacher_logits = pool(images).logits
    smoothed = (1 - 0.1) * torch.nn.functional.one_hot(batch["labels"], 3) + 0.1 / 3
    assert not torch.allclose(targets, smoothed)  # mixed
    ce = -(targets * out.logits.log_softmax(-1)).sum(-1).mean()
    kd = soft_distillation_loss(out.logits, teacher_logits)
    logged = trainer._pop_term_means("train")
    assert logged["loss_ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert logged["loss_kd"] == pytest.approx(kd.item(), rel=1e-5)  # the KD target: the teacher on the mixed images
    torch.testing.assert_close(loss.detach(), 0.7 * ce + 0.3 * kd, rtol=1e-5, atol=1e-7)
    # evaluation never augments
    teacher_seen.clear()
    with torch.no_grad():
        trainer.compute_loss(model, batch)
    assert torch.equal(teacher_seen[0], batch["pixel_values"])


def test_label_smoothing_applies_without_mixing(tmp_path):
    model = student()
    trainer = RIFormerDistillationTrainer(model, args(tmp_path, label_smoothing_factor=0.1))
    batch = {"pixel_values": torch.randn(4, 3, 32, 32), "labels": torch.tensor([0, 1, 2, 0])}
    model.eval()
    loss = trainer.compute_loss(model, batch)
    with torch.no_grad():
        logits = model(batch["pixel_values"]).logits
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, batch["labels"], label_smoothing=0.1))


def test_gradient_accumulation_with_mixing_is_the_gradient_over_the_mixed_images(tmp_path):
    """Mixing happens per micro-batch (each draws its own λ and pairs its own images). What accumulation keeps exact:
    micro-batches of 4 + 2 give the loss, gradient and weights of one batch of those same 6 mixed images, i.e. the
    normalisation over `num_items_in_batch` is unchanged by mixing."""
    dataset = Images(n=6)
    recorded = []

    def recording(trainer):
        augment = trainer.augment_batch
        trainer.augment_batch = lambda x, y: recorded.append(augment(x, y)) or recorded[-1]

    def replaying(trainer):
        images = torch.cat([r[0] for r in recorded])
        targets = torch.cat([r[1] for r in recorded])
        trainer.augment_batch = lambda x, y: (images, targets)

    def one_step(name, hook, **kwargs):
        model = student()
        trainer = RIFormerDistillationTrainer(
            model, args(tmp_path / name, distillation_type="soft", optim="sgd", learning_rate=0.5, max_steps=1,
                        **IMITATION, **MIXING, **kwargs),
            teacher_model=teacher(), train_dataset=dataset,
        )
        hook(trainer)
        trainer.train()
        return trainer.state.log_history[0], model

    acc_log, acc = one_step("acc", recording, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    assert [len(r[0]) for r in recorded] == [4, 2]
    big_log, big = one_step("big", replaying, per_device_train_batch_size=6)
    assert_same_step(acc_log, acc, big_log, big)


def test_teacher_with_other_preprocessing_receives_the_converted_batch(tmp_path):
    """Student: 32 px, ImageNet mean/std. Teacher: 64 px, mean 0.5 / std 0.5. The teacher receives the student's
    images normalised its way and resized bicubically (antialias) to 64 px."""
    from riformer_hf.data import IMAGENET_MEAN, IMAGENET_STD, make_image_processor

    logit_teacher = teacher(seed=5, hidden_sizes=(8, 16, 16, 16))
    model = student()
    trainer = RIFormerDistillationTrainer(
        model, args(tmp_path, distillation_type="soft"), teacher_model=logit_teacher,
        processing_class=make_image_processor(32), teacher_processor=make_image_processor(64, mean=(0.5,) * 3,
                                                                                           std=(0.5,) * 3),
    )
    seen = record_inputs(logit_teacher)
    raw = torch.rand(3, 3, 32, 32)  # images in [0, 1]
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    batch = {"pixel_values": (raw - mean) / std, "labels": torch.tensor([0, 1, 2])}
    model.train()
    trainer.compute_loss(model, batch)
    expected = torch.nn.functional.interpolate((raw - 0.5) / 0.5, size=(64, 64), mode="bicubic", antialias=True)
    assert seen[0].shape == (3, 3, 64, 64)
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=1e-5)


def test_teacher_preprocessing_errors(tmp_path):
    from riformer_hf.data import make_image_processor

    other = make_image_processor(32, mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(ValueError, match=r"imitation teacher expects 32×32, mean \(0.5, 0.5, 0.5\).*same tensor"):
        RIFormerDistillationTrainer(student(), args(tmp_path, lambda_hidden=1.0), imitation_teacher=teacher(),
                                    processing_class=make_image_processor(32), imitation_teacher_processor=other)
    with pytest.raises(ValueError, match="imitation teacher expects"):  # the logit teacher that also imitates
        RIFormerDistillationTrainer(student(), args(tmp_path, distillation_type="soft", lambda_hidden=1.0),
                                    teacher_model=teacher(), processing_class=make_image_processor(32),
                                    teacher_processor=make_image_processor(64))
    with pytest.raises(ValueError, match="pass `processing_class=`"):
        RIFormerDistillationTrainer(student(), args(tmp_path, distillation_type="soft"), teacher_model=teacher(),
                                    teacher_processor=other)


@pytest.mark.parametrize("mixing", [False, True])
def test_resume_with_mixing_and_erasing_reaches_the_same_weights(tmp_path, mixing):
    """Mixing and erasing draw from torch's global RNG inside the step; Trainer saves and restores it."""
    def make(output, seed):
        model = student(seed=seed)
        trainer = RIFormerDistillationTrainer(
            model, args(tmp_path / output, distillation_type="soft", distillation_alpha=0.5, max_steps=4,
                        save_strategy="steps", save_steps=2, **(MIXING if mixing else {})),
            teacher_model=teacher(), train_dataset=Images(n=12),
        )
        return trainer, model

    straight, straight_model = make("a", seed=1)
    straight.train()
    resumed, resumed_model = make("b", seed=7)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "out" / "checkpoint-2"))
    for (name, a), b in zip(straight_model.named_parameters(), resumed_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    "flag,value,match",
    [
        ("mixup", -1.0, r"--mixup -1.0: must be >= 0.0 \(the Beta"),
        ("cutmix", -0.5, r"--cutmix -0.5: must be >= 0.0"),
        ("reprob", 2.0, r"--reprob 2.0: must be in \[0.0, 1.0\] \(the random-erasing probability"),
        ("mixup_prob", 1.5, r"--mixup_prob 1.5: must be in \[0.0, 1.0\]"),
        ("mixup_switch_prob", -0.1, r"--mixup_switch_prob -0.1: must be in \[0.0, 1.0\]"),
        ("aa", "rand-q9", r"--aa 'rand-q9': "),
        ("recipe", "unknown", r"--recipe 'unknown' is not a recipe; choose one of riformer-s12, riformer-s24"),
    ],
)
def test_augmentation_arguments_are_validated(tmp_path, flag, value, match):
    with pytest.raises(ValueError, match=match):
        args(tmp_path, **{flag: value})


def test_recipe_sets_the_paper_recipe_and_explicit_values_win(tmp_path):
    s12 = args(tmp_path, recipe="riformer-s12", per_device_train_batch_size=64, gradient_accumulation_steps=2,
               learning_rate=5e-5, logging_steps=500)
    assert s12.learning_rate == 1e-3 * 128 / 1024  # 5e-5 is TrainingArguments' default: the recipe sets it
    assert (s12.weight_decay, s12.adam_beta1, s12.adam_beta2, s12.num_train_epochs) == (0.05, 0.9, 0.999, 600)
    assert s12.lr_scheduler_type == "cosine" and s12.optim == "adamw_torch" and s12.warmup_steps == 5 / 600
    assert (s12.distillation_type, s12.distillation_alpha) == ("soft", 1.0)
    assert (s12.lambda_hidden, s12.lambda_mixer, s12.lambda_relation) == (1e-4, 1e-3, 1.0)
    assert (s12.feature_epochs, s12.relation_epochs, s12.imitation_layers) == (None, None, None)  # None: 4 layers
    assert (s12.feature_fraction, s12.relation_fraction, s12.train_interpolation) == (2 / 3, 1 / 6, "random")
    assert (s12.aa, s12.mixup, s12.cutmix, s12.mixup_prob, s12.mixup_switch_prob, s12.reprob) == (
        "rand-m9-mstd0.5-inc1", 0.8, 1.0, 1.0, 0.5, 0.25)
    assert s12.label_smoothing_factor == 0.1 and s12.mixes_batches
    s24 = args(tmp_path, recipe="riformer-s24", weight_decay=0.02, num_train_epochs=300, mixup=0.0)
    assert (s24.lambda_hidden, s24.lambda_mixer, s24.lambda_relation) == (3e-4, 5e-3, 4.0)
    assert (s24.weight_decay, s24.num_train_epochs, s24.warmup_steps) == (0.02, 300, 5 / 600)
    assert s24.mixup == 0.8  # 0.0 is the field's default: the Python API cannot tell it from unset (the CLI can)
    from riformer_hf.distillation.recipes import RECIPES

    assert [n for n, r in RECIPES.items() if r.extrapolated] == ["riformer-s36", "riformer-m36", "riformer-m48"]
    assert args(tmp_path, recipe="riformer-m48").lambda_relation == 4.0


def test_card_recipe_records_the_augmentation(tmp_path):
    from riformer_hf.export.model_card import RECIPE_MEANINGS, recipe_from_training

    recipe = recipe_from_training(args(tmp_path, recipe="riformer-s12", per_device_train_batch_size=32))
    assert {k: recipe[k] for k in ("recipe", "aa", "mixup", "cutmix", "reprob", "label_smoothing_factor")} == {
        "recipe": "riformer-s12", "aa": "rand-m9-mstd0.5-inc1", "mixup": 0.8, "cutmix": 1.0, "reprob": 0.25,
        "label_smoothing_factor": 0.1}
    assert set(recipe) <= set(RECIPE_MEANINGS)
