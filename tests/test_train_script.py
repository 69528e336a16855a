import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import PoolFormerConfig, PoolFormerForImageClassification

from riformer_hf.data import make_image_processor
from riformer_hf.training.arguments import ModelArguments
from riformer_hf.training.builders import build_student
from riformer_hf.training.run import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--depths", "1", "1", "1", "1", "--hidden_sizes", "8", "8", "8", "8", "--image_size", "32"]
QUICK = [
    "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "16", "--max_train_samples", "48",
    "--max_eval_samples", "32", "--use_cpu", "--disable_tqdm", "true",
]
# No random crops: Trainer restores the RNG state after fetching the first resumed batch, so exact resumption needs a
# data pipeline that draws no random numbers (drop path may: its draws come after the restore).
DETERMINISTIC_DATA = ["--min_crop_area", "1.0"]
# Every random augmentation of the recipe: crops, flips, RandAugment (CPU), mixup / cutmix and erasing (device).
RANDOM_AUGMENTATION = ["--min_crop_area", "0.3", "--hflip", "0.5", "--aa", "rand-m9-mstd0.5-inc1", "--mixup", "0.8",
                       "--cutmix", "1.0", "--reprob", "0.25", "--label_smoothing_factor", "0.1"]



def digits_poolformer(path: Path, depths=(1, 1, 1, 1), widths=(8, 8, 8, 8)) -> Path:
    names = [str(d) for d in range(10)]
    config = PoolFormerConfig(
        depths=depths, hidden_sizes=widths, id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
    )
    torch.manual_seed(0)
    PoolFormerForImageClassification(config).save_pretrained(path)
    make_image_processor(32).save_pretrained(path)  # the teacher's input: 32 px, ImageNet normalisation
    return path


def test_embedded_default_trains_checkpoints_resumes_and_evaluates(tmp_path):
    out = tmp_path / "run"
    steps = ["--max_steps", "4", "--save_steps", "2", "--seed", "3"]
    first = main(["--output_dir", str(out), *TINY, *QUICK, *DETERMINISTIC_DATA, *steps])
    assert first.state.global_step == 4
    checkpoint = load_file(out / "checkpoint-2" / "model.safetensors")
    assert any(".token_mixer.scale" in k for k in checkpoint)  # checkpoints stay in training form
    results = json.loads((out / "eval_results.json").read_text())
    assert 0.0 <= results["eval_accuracy"] <= 1.0 and results["eval_loss"] == pytest.approx(results["eval_loss_ce"])
    assert (out / "preprocessor_config.json").is_file()

    resumed = main([
        "--output_dir", str(tmp_path / "resumed"), *TINY, *QUICK, *DETERMINISTIC_DATA, *steps,
        "--resume_from_checkpoint", str(out / "checkpoint-2"),
    ])
    for (name, a), b in zip(first.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_distillation_from_teacher_paths_with_teacher_init(tmp_path):
    teacher_dir = digits_poolformer(tmp_path / "teacher")
    trainer = main([
        "--output_dir", str(tmp_path / "run"), "--image_size", "32", *QUICK, "--max_steps", "2",
        "--save_strategy", "no", "--logging_steps", "1", "--teacher_model", str(teacher_dir), "--init_from_teacher",
        "--distillation_type", "soft", "--distillation_alpha", "1.0", "--lambda_mixer", "1.0",
        "--lambda_relation", "1.0",
    ])
    assert trainer.imitation_teacher is trainer.teacher_model
    assert tuple(trainer.model.config.depths) == (1, 1, 1, 1)  # the architecture came from the teacher
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert {"loss_kd", "loss_mixer", "loss_relation"} <= set(logs[-1])


def test_init_from_teacher_copies_the_poolformer(tmp_path):
    pool = PoolFormerForImageClassification.from_pretrained(digits_poolformer(tmp_path / "teacher"))
    labels = pool.config.id2label, pool.config.label2id
    student = build_student(ModelArguments(init_from_teacher=True, drop_path_rate=0.0), *labels, poolformer=pool)
    assert torch.equal(student.riformer.encoder.stages[0].patch_embeddings.weight,
                       pool.poolformer.encoder.patch_embeddings[0].projection.weight)
    with pytest.raises(ValueError, match="needs a PoolFormer teacher"):
        build_student(ModelArguments(init_from_teacher=True), *labels)
    with pytest.raises(ValueError, match="takes the architecture from the PoolFormer"):
        build_student(ModelArguments(init_from_teacher=True, depths=[2, 2, 2, 2]), *labels, poolformer=pool)


def test_local_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 6)):
        for label in ("circle", "square"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for i in range(count // 2):
                Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    trainer = main([
        "--output_dir", str(tmp_path / "run"), "--data_dir", str(tmp_path / "images"), *TINY,
        "--per_device_train_batch_size", "4", "--use_cpu", "--disable_tqdm", "true", "--max_steps", "2",
        "--save_strategy", "no",
    ])
    assert trainer.model.config.id2label == {0: "circle", 1: "square"}
    assert len(trainer.eval_dataset) == 6


def test_console_script_runs(tmp_path):
    done = subprocess.run(
        [str(Path(sys.executable).with_name("riformer-train")), "--output_dir", str(tmp_path / "run"), *TINY, *QUICK,
         "--max_steps", "1", "--save_strategy", "no"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "eval_accuracy" in done.stdout
    assert (tmp_path / "run" / "model.safetensors").is_file()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_accelerate_launch_on_cpu(tmp_path):
    """`accelerate launch` with the shipped CPU config: two gloo ranks train together and end with equal weights."""
    runner = tmp_path / "train_and_dump.py"
    runner.write_text(textwrap.dedent(f"""
        import sys, torch
        from riformer_hf.training.run import main
        trainer = main(sys.argv[1:])
        state = {{k: v.detach().clone() for k, v in trainer.model.state_dict().items()}}
        torch.save({{"world_size": trainer.args.world_size, "backend": trainer.accelerator.state.backend,
                    "state": state}}, "{tmp_path}/rank%d.pt" % trainer.args.process_index)
    """))
    teacher_dir = digits_poolformer(tmp_path / "teacher")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(ROOT / "configs" / "accelerate_cpu_2proc.yaml"), "--main_process_port", str(free_port()), str(runner),
        "--output_dir", str(tmp_path / "run"), "--image_size", "32", "--teacher_model", str(teacher_dir),
        "--init_from_teacher", "--distillation_type", "soft", "--lambda_hidden", "1.0", "--drop_path_rate", "0.1",
        *RANDOM_AUGMENTATION, "--per_device_train_batch_size", "4", "--max_train_samples", "32",
        "--max_eval_samples", "16",
        "--max_steps", "3", "--save_strategy", "no", "--disable_tqdm", "true",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, cwd=tmp_path, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    , check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "find_unused_parameters" not in done.stderr  # riformer-train tells DDP that every parameter is used
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["backend"] == "gloo"
    start = PoolFormerForImageClassification.from_pretrained(teacher_dir).classifier.weight
    assert not torch.equal(ranks[0]["state"]["classifier.weight"], start)  # it trained
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    # the per-term eval means are gathered over both ranks, like Trainer's eval_loss
    results = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    combined = 0.5 * results["eval_loss_ce"] + 0.5 * results["eval_loss_kd"] + results["eval_loss_hidden"]
    assert results["eval_loss"] == pytest.approx(combined, rel=1e-5)


# ---- transforms without torchvision ----


def test_train_transform_takes_size_and_normalisation_from_the_image_processor():
    from riformer_hf.data import TrainTransform, make_image_processor, processor_spec

    processor = make_image_processor(48, 0.875, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    spec = processor_spec(processor)
    assert (spec.height, spec.width, spec.resize_shortest_edge) == (48, 48, 54)
    transform = TrainTransform.from_image_processor(processor, scale=(1.0, 1.0), hflip=0.0)
    pixels = transform(Image.new("RGB", (70, 50), (255, 51, 102)))
    assert pixels.shape == (3, 48, 48)
    expected = torch.tensor([(1.0 - 0.5) / 0.5, (0.2 - 0.25) / 0.25, 0.4])
    torch.testing.assert_close(pixels.mean(dim=(1, 2)), expected, rtol=0, atol=1e-6)


def test_train_transform_crops_within_its_ranges_and_is_seeded():
    from riformer_hf.data import TrainTransform

    transform = TrainTransform(24, scale=(0.25, 0.5), ratio=(0.5, 2.0), hflip=0.5)
    torch.manual_seed(0)
    for _ in range(200):
        left, top, right, bottom = transform.crop_box(80, 60)
        assert 0 <= left < right <= 80 and 0 <= top < bottom <= 60
        area = (right - left) * (bottom - top) / (80 * 60)
        assert 0.23 <= area <= 0.52 and 0.45 <= (right - left) / (bottom - top) <= 2.2
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    torch.manual_seed(1)
    first = [transform(image) for _ in range(4)]
    torch.manual_seed(1)
    again = [transform(image) for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again)) and first[0].shape == (3, 24, 24)
    assert not torch.equal(first[0], first[1])
    whole = TrainTransform(24, scale=(1.0, 1.0), hflip=0.0, interpolation="bicubic")
    state = torch.get_rng_state()
    whole(image)
    assert torch.equal(state, torch.get_rng_state())  # no crop, flip or interpolation to draw: no random numbers
    # a flip is a horizontal mirror of the same crop
    flip = TrainTransform(24, scale=(1.0, 1.0), hflip=1.0, interpolation="bicubic")
    assert torch.equal(flip(image), whole(image).flip(-1))


# ---- the paper's recipe, augmentation flags, teachers' preprocessing, reproducibility ----


def test_recipe_flag_sets_the_recipe_and_explicit_flags_override_it(tmp_path):
    from riformer_hf.training.arguments import parse_args

    _, model_args, training, _ = parse_args([
        "--output_dir", str(tmp_path), "--recipe", "riformer-s24", "--per_device_train_batch_size", "64",
        "--gradient_accumulation_steps", "4", "--weight_decay", "0.0", "--mixup", "0", "--use_cpu",
    ])
    assert training.recipe == "riformer-s24"
    assert training.learning_rate == pytest.approx(1e-3 * 256 / 1024)  # from the effective batch
    assert (training.weight_decay, training.mixup) == (0.0, 0.0)  # explicit, even at the fields' defaults
    assert (training.cutmix, training.reprob, training.aa) == (1.0, 0.25, "rand-m9-mstd0.5-inc1")
    assert (training.lambda_hidden, training.lambda_mixer, training.lambda_relation) == (3e-4, 5e-3, 4.0)
    assert (training.num_train_epochs, training.warmup_steps, training.lr_scheduler_type) == (600, 5 / 600, "cosine")
    assert (training.feature_fraction, training.relation_fraction) == (400 / 600, 100 / 600)
    assert training.train_interpolation == "random" and model_args.drop_path_rate == 0.1
    _, model_args, training, _ = parse_args(["--output_dir", str(tmp_path), "--recipe=riformer-s12",
                                          "--drop_path_rate", "0.0", "--num_train_epochs", "100", "--use_cpu",
                                          "--feature_epochs", "50"])
    # the paper's shares of whatever run it is: warm-up 5/600, relation window 100/600; an explicit window wins
    assert model_args.drop_path_rate == 0.0 and training.warmup_steps == 5 / 600
    assert (training.feature_epochs, training.feature_fraction, training.relation_fraction) == (50, None, 100 / 600)
    assert training.learning_rate == pytest.approx(1e-3 * 8 / 1024)


def test_help_describes_the_recipe_options():
    done = subprocess.run([str(Path(sys.executable).with_name("riformer-train")), "--help"], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "200"}, check=False)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for phrase in ("--recipe", "riformer-s36 (λ extrapolated from S24)", "--aa", "RandAugment policy", "--mixup",
                   "Mixup α", "--cutmix", "--mixup_switch_prob", "--reprob", "Random-erasing probability",
                   "--color_jitter", "--teacher_image_size"):
        assert phrase in text, phrase


@pytest.mark.parametrize(
    "flags,match",
    [
        (["--mixup", "-1"], "--mixup -1.0: must be >= 0.0"),
        (["--reprob", "2"], r"--reprob 2.0: must be in \[0.0, 1.0\]"),
        (["--aa", "rand-m9-zz"], "--aa 'rand-m9-zz'"),
        (["--recipe", "unknown"], "--recipe 'unknown' is not a recipe"),
    ],
)
def test_bad_augmentation_flags_fail_before_data_is_read(tmp_path, monkeypatch, flags, match):
    from riformer_hf.training import builders

    monkeypatch.setattr(builders, "load_image_dataset", lambda *a, **k: pytest.fail("data read"))
    with pytest.raises(ValueError, match=match):
        main(["--output_dir", str(tmp_path / "run"), *flags])


def test_bad_flag_is_one_error_line_from_the_console_script(tmp_path):
    done = subprocess.run([str(Path(sys.executable).with_name("riformer-train")), "--output_dir", str(tmp_path),
                           "--mixup", "-1"], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: --mixup -1.0: must be >= 0.0 (the Beta(α, α) parameter of mixup; 0 turns it off)."]


def test_teacher_preprocessing_is_read_given_or_refused(tmp_path):
    teacher_dir = digits_poolformer(tmp_path / "teacher", widths=(8, 16, 16, 16))
    (teacher_dir / "preprocessor_config.json").unlink()
    common = ["--output_dir", str(tmp_path / "run"), *TINY, *QUICK, "--max_steps", "1", "--save_strategy", "no",
              "--teacher_model", str(teacher_dir), "--distillation_type", "soft"]
    with pytest.raises(ValueError, match="Cannot tell what input the teacher .* --teacher_image_size N --teacher_mean"):
        main(common)
    with pytest.raises(ValueError, match="go together"):
        main([*common, "--teacher_image_size", "64"])
    trainer = main([*common, "--teacher_image_size", "64", "--teacher_mean", "0.5", "0.5", "0.5", "--teacher_std",
                    "0.5", "0.5", "0.5"])
    (converter,) = trainer._teacher_converters.values()
    assert (converter.teacher.height, converter.teacher.mean) == (64, (0.5, 0.5, 0.5)) and not converter.identity

    imitation_dir = digits_poolformer(tmp_path / "imitation")
    make_image_processor(32, mean=(0.5,) * 3, std=(0.5,) * 3).save_pretrained(imitation_dir)
    with pytest.raises(ValueError, match="imitation teacher expects 32×32, mean \\(0.5, 0.5, 0.5\\)"):
        main(["--output_dir", str(tmp_path / "run2"), *TINY, *QUICK, "--max_steps", "1", "--imitation_teacher",
              str(imitation_dir), "--lambda_hidden", "1.0"])


def _train_with_initial_weights(argv):
    from riformer_hf.training.arguments import parse_args
    from riformer_hf.training.builders import build_trainer

    trainer = build_trainer(*parse_args(argv)[:3])
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    return initial, trainer.model.state_dict()


def test_same_seed_same_run_with_random_augmentation(tmp_path):
    def run(name, seed):
        return _train_with_initial_weights([
            "--output_dir", str(tmp_path / name), *TINY, *QUICK, *RANDOM_AUGMENTATION, "--drop_path_rate", "0.1",
            "--max_steps", "3", "--save_strategy", "no", "--seed", str(seed),
        ])

    (init_a, final_a), (init_b, final_b), (init_c, final_c) = run("a", 5), run("b", 5), run("c", 6)
    for key in init_a:
        assert torch.equal(init_a[key], init_b[key]) and torch.equal(final_a[key], final_b[key]), key
    assert any(not torch.equal(init_a[k], init_c[k]) for k in init_a)
    assert any(not torch.equal(final_a[k] - init_a[k], final_c[k] - init_c[k]) for k in init_a)


def test_resume_with_random_augmentation_is_exact(tmp_path):
    """Per-example augmentation seeds make the first resumed batch (loaded before Trainer restores the RNG) the same
    as in the uninterrupted run; mixing and erasing draw from the restored RNG."""
    steps = ["--max_steps", "4", "--save_steps", "2", "--seed", "3", "--drop_path_rate", "0.1"]
    first = main(["--output_dir", str(tmp_path / "run"), *TINY, *QUICK, *RANDOM_AUGMENTATION, *steps])
    resumed = main([
        "--output_dir", str(tmp_path / "resumed"), *TINY, *QUICK, *RANDOM_AUGMENTATION, *steps,
        "--resume_from_checkpoint", str(tmp_path / "run" / "checkpoint-2"),
    ])
    for (name, a), b in zip(first.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_seeded_augmentation_depends_on_seed_epoch_and_index_only():
    from riformer_hf.distillation.seeding import SeededAugmentation

    class Noisy(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return torch.rand(3) + i

        def __getitems__(self, indices):  # as datasets.Dataset has: the loader must not bypass the seeding with it
            return [self[i] for i in indices]

    data = SeededAugmentation(Noisy(), seed=1)
    assert not hasattr(data, "__getitems__") and len(data) == 5
    torch.manual_seed(0)
    state = torch.get_rng_state()
    forward = [data[i] for i in range(5)]
    assert torch.equal(state, torch.get_rng_state())  # the process's RNG is left alone
    backward = [data[i] for i in reversed(range(5))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))  # order does not matter
    assert not torch.equal(forward[0], forward[1] - 1)
    data.set_epoch(1)
    assert not torch.equal(data[0], forward[0])  # fresh augmentation every epoch
    assert not torch.equal(SeededAugmentation(Noisy(), seed=2)[0], forward[0])


@pytest.mark.parametrize("name,machines,processes", [
    ("accelerate_cpu_2proc.yaml", 1, 2), ("accelerate_multi_gpu.yaml", 1, 8), ("accelerate_multi_node.yaml", 2, 16),
])
def test_shipped_accelerate_configs_load(name, machines, processes):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "configs" / name))
    assert (config.num_machines, config.num_processes) == (machines, processes)
    assert config.num_processes % config.num_machines == 0
    assert "-m riformer_hf.cli train" in (ROOT / "configs" / name).read_text()


@pytest.mark.parametrize("length,steps", [(["--max_steps", "30"], 30), (["--num_train_epochs", "6"], 36)])
def test_recipe_schedule_is_the_papers_share_of_the_run_and_is_logged(tmp_path, caplog, length, steps):
    """`--recipe` on a short run: warm-up 5/600 and imitation windows 400/600, 100/600 of the run's steps (not 5,
    400 and 100 epochs of a 6-epoch run), stated in one log block at the start and followed by the loss terms."""
    import logging

    teacher = digits_poolformer(tmp_path / "teacher")
    with caplog.at_level(logging.INFO, logger="riformer_hf"):
        trainer = main(["--output_dir", str(tmp_path / "run"), *TINY, *QUICK, "--recipe", "riformer-s12",
                        "--teacher_model", str(teacher), "--save_strategy", "no", "--logging_steps", "1",
                        "--do_train", *length])
    assert trainer.state.max_steps == steps
    (block,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Training schedule")]
    feature, relation = -(-2 * steps // 3), -(-steps // 6)
    for line in (f"length: {steps} optimizer steps", "effective batch: 8 = 8 per device × 1 accumulation",
                 "learning rate: 7.81e-06 = 1e-3 × 8 / 1024 (the recipe's linear scaling; a small batch",
                 "), cosine schedule",
                 f"warm-up: {-(-steps // 120)} step(s) (0.008333 of the run)",
                 f"feature imitation (hidden, mixer): the first {feature} steps (0.6667 of the run)",
                 f"relation imitation: the first {relation} steps (0.1667 of the run)"):
        assert line in block, (line, block)
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [("loss_hidden" in e, "loss_relation" in e) for e in logged] == [
        (step < feature, step < relation) for step in range(steps)]
