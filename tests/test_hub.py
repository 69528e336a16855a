"""The save hook and Hub publishing, against a local Hub-protocol server (tests/hub_server.py)."""

import json
import shlex
import shutil
import subprocess
import tempfile
import textwrap
import threading
from pathlib import Path

import huggingface_hub
import pytest
import torch
from conftest import randomize_, run_without_package
from hub_server import FakeHub
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load, load_file
from transformers import Trainer, TrainerCallback, TrainingArguments

from riformer_hf import RIFormerConfig, RIFormerForImageClassification, cli, push_reparameterized, reparameterize_model
from riformer_hf.data import make_image_processor
from riformer_hf.export import HubPushError, ReparameterizedExportMixin, export_reparameterized

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY_FILES = {"README.md", "config.json", "configuration_riformer.py", "model.safetensors", "modeling_riformer.py",
                "preprocessor_config.json"}


class TinyTrainer(ReparameterizedExportMixin, Trainer):
    pass


def tiny_model(seed: int = 0) -> RIFormerForImageClassification:
    config = RIFormerConfig(
        depths=(1, 1, 2, 1), hidden_sizes=(8, 16, 24, 32), num_labels=3,
        id2label={0: "cat", 1: "dog", 2: "fish"}, label2id={"cat": 0, "dog": 1, "fish": 2}, drop_path_rate=0.0,
    )
    torch.manual_seed(seed)
    return randomize_(RIFormerForImageClassification(config), seed)


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, n: int = 32, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.pixels = torch.randn(n, 3, 32, 32, generator=generator)
        self.labels = torch.randint(0, 3, (n,), generator=generator)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": self.pixels[i], "labels": self.labels[i]}


def accuracy(prediction):
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def make_trainer(output_dir, *, model=None, **overrides) -> TinyTrainer:
    hub_kwargs = {k: overrides.pop(k) for k in ("push_training_weights", "model_card") if k in overrides}
    settings = {
        "max_steps": 4, "per_device_train_batch_size": 8, "learning_rate": 3e-2, "save_strategy": "steps",
        "save_steps": 2, "eval_strategy": "steps", "eval_steps": 2, "logging_steps": 2, "report_to": "none",
        "use_cpu": True, "disable_tqdm": True, "seed": 0,
    }
    args = TrainingArguments(output_dir=str(output_dir), **{**settings, **overrides})
    model = model if model is not None else tiny_model()
    return TinyTrainer(
        model=model, args=args, train_dataset=RandomImages(32), eval_dataset=RandomImages(16, seed=1),
        compute_metrics=accuracy, processing_class=make_image_processor(32, 0.875),
        **hub_kwargs,
    )


def weight_names(safetensors_bytes: bytes) -> set[str]:
    return set(load(safetensors_bytes))


def assert_deploy_export(folder: Path):
    names = {p.name for p in folder.iterdir()}
    assert DEPLOY_FILES <= names, names
    config = json.loads((folder / "config.json").read_text())
    assert config["reparameterized"] is True
    assert config["auto_map"]["AutoModelForImageClassification"] == "modeling_riformer.RIFormerForImageClassification"
    keys = set(load_file(folder / "model.safetensors"))
    assert not any(".token_mixer." in k or ".norm1." in k for k in keys)
    assert any(".norm_reparam." in k for k in keys)



@pytest.fixture(scope="module")
def hub_session(tmp_path_factory):
    """A running fake Hub, with huggingface_hub (already imported) pointed at it and scratch space redirected."""
    hub = FakeHub().start()
    scratch = tmp_path_factory.mktemp("scratch")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        patch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the fake Hub speaks LFS, not Xet
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        patch.setattr(tempfile, "tempdir", str(scratch))
        environment = {"HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "OMP_NUM_THREADS": "1",
                       "HF_HOME": str(tmp_path_factory.mktemp("hf_home"))}
        for name, value in environment.items():
            patch.setenv(name, value)
        yield hub, scratch
    hub.stop()


@pytest.fixture(scope="module")
def trained(hub_session, tmp_path_factory):
    """A run with `hub_strategy="checkpoint"`, the training form pushed too, and `load_best_model_at_end`."""
    hub, _ = hub_session
    output_dir = tmp_path_factory.mktemp("run") / "riformer-tiny"
    trainer = make_trainer(
        output_dir, push_to_hub=True, hub_model_id="test-user/riformer-tiny", hub_token="hf_fake_write_token",
        hub_strategy="checkpoint", hub_always_push=True, load_best_model_at_end=True,
        metric_for_best_model="accuracy", push_training_weights=True,
        model_card={"datasets": ["digits"], "license": "apache-2.0"},
    )
    trainer.teacher_model = tiny_model(seed=3)  # stands in for a teacher loaded from the Hub
    trainer.teacher_model.config._name_or_path = "test-user/gfnet-teacher"
    first_request = len(hub.requests)
    trainer.train()
    pushed_during_training = hub.commit_messages("test-user/riformer-tiny")
    trainer.push_to_hub()
    return trainer, output_dir, pushed_during_training, hub.requests[first_request:]


def test_checkpoints_stay_in_training_form_and_output_dir_holds_the_export(trained, hub_session):
    trainer, output_dir, *_ = trained
    assert_deploy_export(output_dir)
    for step in (2, 4):
        checkpoint = output_dir / f"checkpoint-{step}"
        assert json.loads((checkpoint / "config.json").read_text())["reparameterized"] is False
        assert any(".token_mixer.scale" in k for k in load_file(checkpoint / "model.safetensors"))
        assert (checkpoint / "optimizer.pt").is_file() and (checkpoint / "trainer_state.json").is_file()
    training = output_dir / "training"
    assert json.loads((training / "config.json").read_text())["reparameterized"] is False
    assert (output_dir / "training_args.bin").is_file()
    # load_best_model_at_end reloaded a training-form checkpoint: the model in memory still has its mixers.
    assert trainer.state.best_model_checkpoint is not None and not trainer.model.is_reparameterized
    leftovers = [p.name for p in output_dir.parent.iterdir() if p.name != output_dir.name]
    leftovers += [p.name for p in output_dir.iterdir() if p.name.startswith(("_", "."))]
    assert leftovers == [] and list(hub_session[1].iterdir()) == []  # staging and push snapshots are cleaned up


def test_hub_strategy_checkpoint_pushes_exports_during_training(trained, hub_session):
    _, _, pushed_during_training, requests = trained
    hub = hub_session[0]
    assert pushed_during_training == [
        "initial commit",
        "Training in progress, step 2", "Training in progress, step 2, checkpoint",
        "Training in progress, step 4", "Training in progress, step 4, checkpoint",
    ]
    assert hub.commit_messages("test-user/riformer-tiny")[-1] == "End of training"
    repo = hub.repos["test-user/riformer-tiny"]
    for commit in repo.history()[1:]:  # every state of the repo root is a deploy export
        assert not any(".token_mixer." in k for k in weight_names(commit.files["model.safetensors"].content))
    files = hub.files("test-user/riformer-tiny")
    assert any(".token_mixer." in k for k in weight_names(files["last-checkpoint/model.safetensors"]))
    assert any(".token_mixer." in k for k in weight_names(files["training/model.safetensors"]))
    assert "checkpoint-2/config.json" not in files and "training_args.bin" not in files
    writes = [r for r in requests if r["method"] in ("POST", "PUT") and "/api/" in r["path"]]
    assert writes and all(r["authorization"] == "Bearer hf_fake_write_token" for r in writes)  # hub_token


def test_pushed_repo_loads_without_the_package_and_matches_the_trained_model(trained, tmp_path):
    trainer, *_ = trained
    image = Image.fromarray((torch.rand(45, 40, 3) * 255).to(torch.uint8).numpy())
    image.save(tmp_path / "image.png")
    processor = trainer.processing_class
    model = trainer.model.eval()
    with torch.no_grad():
        expected = model(**processor(image, return_tensors="pt")).logits[0]
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import json, torch
        from huggingface_hub import ModelCard
        from PIL import Image
        from transformers import AutoModelForImageClassification, AutoImageProcessor, pipeline
        repo = 'test-user/riformer-tiny'
        expected = torch.load({str(tmp_path / 'expected.pt')!r})
        model = AutoModelForImageClassification.from_pretrained(repo, trust_remote_code=True).eval()
        assert type(model).__module__.startswith('transformers_modules'), type(model).__module__
        assert model.config.reparameterized and not any('token_mixer' in k for k in model.state_dict())
        processor = AutoImageProcessor.from_pretrained(repo)
        with torch.no_grad():
            logits = model(**processor(Image.open({str(tmp_path / 'image.png')!r}), return_tensors='pt')).logits[0]
        classify = pipeline('image-classification', model=repo, trust_remote_code=True)
        scores = {{r['label']: r['score'] for r in classify({str(tmp_path / 'image.png')!r}, function_to_apply='none')}}
        from_pipeline = torch.tensor([scores[model.config.id2label[i]] for i in range(3)])
        training = AutoModelForImageClassification.from_pretrained(repo, subfolder='training', trust_remote_code=True)
        card = ModelCard.load(repo)
        print(json.dumps({{
            'model': (logits - expected).abs().max().item(), 'pipeline': (from_pipeline - expected).abs().max().item(),
            'training_form': not training.config.reparameterized
                             and any('token_mixer' in k for k in training.state_dict()),
            'card': card.data.to_dict(), 'text': card.text,
        }}))
    """)
    output = run_without_package(script, tmp_path, env={"HF_HOME": str(tmp_path / "hf_home")})
    result = json.loads(output.splitlines()[-1])
    assert result["model"] <= 1e-4 and result["pipeline"] <= 1e-4, result
    assert result["training_form"]
    card, text = result["card"], result["text"]
    assert card["library_name"] == "transformers" and card["pipeline_tag"] == "image-classification"
    assert {"riformer", "image-classification", "knowledge-distillation", "reparameterized"} <= set(card["tags"])
    assert card["datasets"] == ["digits"] and card["license"] == "apache-2.0"
    assert card["base_model"] == "test-user/gfnet-teacher"
    evaluations = [e for e in trainer.state.log_history if "eval_accuracy" in e]
    best = next(e for e in evaluations if e["step"] == trainer.state.best_global_step)
    metric = card["model-index"][0]["results"][0]["metrics"][0]
    assert metric["type"] == "accuracy" and metric["value"] == pytest.approx(best["eval_accuracy"])
    assert card["training_recipe"]["trained_steps"] == 4 and card["training_recipe"]["learning_rate"] == 3e-2
    deploy_params = reparameterize_model(trainer.model).num_parameters()
    assert f"{deploy_params:,} (deploy form" in text and "arXiv:2304.05659" in text and "CVPR" in text
    assert 'pipeline("image-classification", model="test-user/riformer-tiny", trust_remote_code=True)' in text
    assert 'subfolder="training"' in text


def test_resume_from_training_checkpoint_after_final_export(trained, tmp_path):
    _, output_dir, *_ = trained
    resumed_dir = tmp_path / "riformer-tiny"
    shutil.copytree(output_dir, resumed_dir)
    trainer = make_trainer(resumed_dir, max_steps=6)
    with pytest.raises(ValueError, match="deploy.*cannot resume training.*checkpoint-N"):
        trainer.train(resume_from_checkpoint=str(resumed_dir))
    checkpoint = load_file(resumed_dir / "checkpoint-4" / "model.safetensors")
    trainer = make_trainer(resumed_dir, max_steps=6)
    trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 6
    assert [e["step"] for e in trainer.state.log_history if "loss" in e] == [2, 4, 6]  # steps 1-4 were not re-run
    assert not torch.equal(trainer.model.state_dict()["classifier.weight"], checkpoint["classifier.weight"])
    assert_deploy_export(resumed_dir)
    assert json.loads((resumed_dir / "checkpoint-6" / "config.json").read_text())["reparameterized"] is False


def test_hub_strategy_end_and_a_hub_answering_500_then_retry_with_the_script(hub_session, tmp_path):
    hub = hub_session[0]
    output_dir = tmp_path / "riformer-end"
    trainer = make_trainer(output_dir, push_to_hub=True, hub_model_id="test-user/riformer-end", hub_strategy="end")
    trainer.train()
    assert hub.commit_messages("test-user/riformer-end") == ["initial commit"]  # nothing pushed during training
    hub.fail_with(500, path_pattern="/commit/")
    try:
        with pytest.raises(HubPushError) as failure:
            trainer.push_to_hub(commit_message="Final model")
    finally:
        hub.fail_with(None)
    message = str(failure.value)
    assert "test-user/riformer-end" in message and "500" in message and "/commit/main" in message
    assert f"Nothing local is lost: {output_dir} is complete" in message
    assert_deploy_export(output_dir)
    assert hub.commit_messages("test-user/riformer-end") == ["initial commit"]
    command = failure.value.retry_command
    assert command in message and " -m riformer_hf.cli push " in command and f"HF_ENDPOINT={hub.url}" in command
    done = subprocess.run(command, shell=True, capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert hub.commit_messages("test-user/riformer-end") == ["initial commit", "Final model"]
    files = hub.files("test-user/riformer-end")
    for name in DEPLOY_FILES - {"README.md"}:
        assert files[name] == (output_dir / name).read_bytes(), name  # the export passed through unchanged
    assert ModelCard(files["README.md"].decode()).data.model_name == "riformer-end"


def test_unreachable_hub_training_completes_then_retry_with_the_script(hub_session, tmp_path, caplog):
    hub = hub_session[0]
    hub.stop()
    try:
        output_dir = tmp_path / "riformer-offline"
        trainer = make_trainer(output_dir, push_to_hub=True, hub_model_id="test-user/riformer-offline",
                               hub_strategy="every_save")
        trainer.train()  # neither creating the repo nor the background pushes stop training
        assert trainer.state.global_step == 4
        with pytest.raises(HubPushError, match="(?s)Connection refused.*is complete.*retry with") as failure:
            trainer.push_to_hub()
    finally:
        hub.start()
    logged = caplog.text
    assert "Could not create the Hub repo 'test-user/riformer-offline'" in logged
    assert f"--model_dir {output_dir / 'checkpoint-2'}" in logged and "Connection refused" in logged
    assert_deploy_export(output_dir)
    # The command's arguments, given to riformer-push (the same command line) in this process.
    words = shlex.split(failure.value.retry_command)
    assert words[0] == f"HF_ENDPOINT={hub.url}" and words[2:5] == ["-m", "riformer_hf.cli", "push"]
    assert cli.push(words[5:]) == 0
    assert hub.commit_messages("test-user/riformer-offline") == ["initial commit", "End of training"]
    pushed = hub.files("test-user/riformer-offline")["model.safetensors"]
    assert pushed == (output_dir / "model.safetensors").read_bytes()


def test_background_pushes_never_stall_training_and_skip_while_one_is_in_flight(hub_session, tmp_path):
    hub = hub_session[0]
    hub.commit_gate = threading.Event()  # the Hub takes "forever" to commit
    commits_seen_at_step_4 = []

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 4:
                commits_seen_at_step_4.append(hub.commit_messages("test-user/riformer-slow"))

        def on_train_end(self, args, state, control, **kwargs):
            hub.commit_gate.set()  # train() then waits for the push in flight, as Trainer does

    try:
        trainer = make_trainer(tmp_path / "slow", push_to_hub=True, hub_model_id="test-user/riformer-slow",
                               hub_strategy="every_save", eval_strategy="no")
        trainer.add_callback(Probe())
        trainer.train()
    finally:
        hub.commit_gate.set()
        hub.commit_gate = None
    assert commits_seen_at_step_4 == [["initial commit"]]  # steps 3-4 ran while the step-2 push was in flight
    # Trainer semantics: the step-4 save found a push in progress and skipped its own (hub_always_push=False).
    assert hub.commit_messages("test-user/riformer-slow") == ["initial commit", "Training in progress, step 2"]


def test_push_reparameterized_honours_revision_privacy_token_and_message(hub_session):
    hub = hub_session[0]
    model = tiny_model().eval()
    commit = push_reparameterized(
        model, "test-user/standalone", private=True, revision="dev", token="hf_other_token",
        commit_message="Deploy weights", datasets="digits",
    )
    repo = hub.repos["test-user/standalone"]
    assert repo.private and commit.oid == repo.branches["dev"]
    assert hub.commit_messages("test-user/standalone", "dev") == ["initial commit", "Deploy weights"]
    assert hub.commit_messages("test-user/standalone") == ["initial commit"]  # main untouched
    files = hub.files("test-user/standalone", "dev")
    assert DEPLOY_FILES <= set(files) and not any(p.startswith("training/") for p in files)
    pushed = load(files["model.safetensors"])
    expected = reparameterize_model(model).state_dict()
    assert set(pushed) == set(expected) and all(torch.equal(pushed[k], expected[k]) for k in pushed)
    assert not model.is_reparameterized  # the caller's model is left in training form
    assert hub.requests[-1]["authorization"] == "Bearer hf_other_token"


def test_export_failure_leaves_the_previous_export_intact(tmp_path, monkeypatch):
    target = export_reparameterized(tiny_model(seed=1), tmp_path / "out", repo_id="me/one")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def broken_card(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("riformer_hf.export.deploy.build_model_card", broken_card)
    with pytest.raises(OSError, match="disk full"):
        export_reparameterized(tiny_model(seed=2), target, repo_id="me/two")
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_the_export_saves_the_given_image_processor_and_the_card_describes_it(tmp_path):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    processor = make_image_processor(48, 0.8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    folder = export_reparameterized(model, tmp_path / "out", image_processor=processor)
    saved = json.loads((folder / "preprocessor_config.json").read_text())
    assert saved["crop_size"] == {"height": 48, "width": 48} and saved["crop_pct"] == 0.8
    assert saved["image_mean"] == [0.5, 0.5, 0.5]
    card = (folder / "README.md").read_text()
    assert "short side resized to 60 px (bicubic), centre-cropped to 48×48 (crop_pct 0.8)" in card
    assert "mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5]" in card and "ImageNet" not in card.split("## How to use")[0]
    # folded in memory: the caller's model is untouched and no scratch folder was written beside the export
    assert not model.is_reparameterized and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    # a folder passes its own processor on
    again = export_reparameterized(folder, tmp_path / "again")
    assert json.loads((again / "preprocessor_config.json").read_text()) == saved


def test_bad_inputs_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        export_reparameterized(tmp_path, tmp_path / "out")
    with pytest.raises(TypeError, match="Expected a RIFormer model"):
        export_reparameterized(torch.nn.Linear(2, 2), tmp_path / "out")
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "config.json").write_text('{"model_type": "poolformer"}')
    with pytest.raises(ValueError, match="holds a 'poolformer' model, not a RIFormer.*riformer-convert"):
        export_reparameterized(tmp_path / "pool", tmp_path / "out")
    deploy = reparameterize_model(tiny_model())
    with pytest.raises(ValueError, match="deploy form cannot be turned back"):
        export_reparameterized(deploy, tmp_path / "out", training_form=True)


def test_models_that_are_not_riformers_save_as_with_trainer_and_a_card_that_says_so(tmp_path):
    from transformers import PoolFormerConfig, PoolFormerForImageClassification

    baseline = PoolFormerForImageClassification(PoolFormerConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 8, 8, 8]))
    trainer = make_trainer(tmp_path / "baseline", model=baseline)
    trainer.save_model()
    assert json.loads((tmp_path / "baseline" / "config.json").read_text())["model_type"] == "poolformer"
    saved = load_file(tmp_path / "baseline" / "model.safetensors")
    assert saved.keys() == baseline.state_dict().keys()  # the model as trained: nothing folded
    text = " ".join((tmp_path / "baseline" / "README.md").read_text().split())
    assert "**as trained**: there is no re-parameterisation" in text
    assert "no `trust_remote_code` is needed" in text and "trust_remote_code=True" not in text


def test_distillation_trainer_pushes_the_export_with_its_recipe(hub_session, tmp_path):
    from riformer_hf.distillation.trainer import RIFormerDistillationTrainer, RIFormerTrainingArguments

    trainer_class = RIFormerDistillationTrainer
    if not issubclass(trainer_class, ReparameterizedExportMixin):
        trainer_class = type("ExportingTrainer", (ReparameterizedExportMixin, RIFormerDistillationTrainer), {})
    teacher = tiny_model(seed=5).eval()
    teacher.config._name_or_path = "test-user/riformer-teacher"
    args = RIFormerTrainingArguments(
        output_dir=str(tmp_path / "distilled"), max_steps=2, per_device_train_batch_size=8, report_to="none",
        use_cpu=True, disable_tqdm=True, save_strategy="no", distillation_type="soft", distillation_alpha=1.0,
        distillation_temperature=2.0, push_to_hub=True, hub_model_id="test-user/distilled", hub_strategy="end",
        hub_revision="distilled-v1", hub_private_repo=True,
    )
    trainer = trainer_class(
        model=tiny_model(), args=args, teacher_model=teacher, train_dataset=RandomImages(16),
        model_card={"datasets": "digits"},
    )
    trainer.train()
    trainer.push_to_hub(commit_message="Distilled for 2 steps")
    hub = hub_session[0]
    assert hub.repos["test-user/distilled"].private
    assert hub.commit_messages("test-user/distilled") == ["initial commit"]  # main untouched: pushed to the branch
    assert hub.commit_messages("test-user/distilled", "distilled-v1") == ["initial commit", "Distilled for 2 steps"]
    files = hub.files("test-user/distilled", "distilled-v1")
    assert not any(".token_mixer." in k for k in weight_names(files["model.safetensors"]))
    card = ModelCard(files["README.md"].decode()).data
    assert card.base_model == "test-user/riformer-teacher" and card.datasets == ["digits"]
    recipe = card.training_recipe
    assert recipe["distillation_type"] == "soft" and recipe["distillation_alpha"] == 1.0
    assert recipe["distillation_temperature"] == 2.0 and recipe["lambda_hidden"] == 0.0 and recipe["trained_steps"] == 2
