"""Sharded and multi-machine training, on CPU: 2 processes over gloo, started by `accelerate launch` with the shipped
configs (`--num_processes 2 --mixed_precision no`), each rank running `riformer-train` (tests/distributed_runner.py).

One seed, one recipe (teacher-initialised student, soft distillation, hidden and mixer imitation, drop path, the whole
random augmentation), 4 steps with checkpoints at 2 and 4, then a second run resumed from checkpoint-2, per backend:

- DDP, on two "machines" of one process each, each in its own folder with a relative --output_dir: each sees only
  its own disk, as machines without shared storage do (with --save_on_each_node; without it, the test below);
- FSDP2 full shard, SHARDED_STATE_DICT (also pushing to the Hub-protocol server) and FULL_STATE_DICT;
- DeepSpeed ZeRO-2 and ZeRO-3 (skipped where deepspeed is not installed).

What a CPU launch cannot start by itself, the runner switches on with as little as possible (see its docstring):
accelerate 1.16 drops an FSDP plugin on a MULTI_CPU launch (the run silently becomes DDP), and leaves `deepspeed.comm`
uninitialised (ZeRO-3's `zero.Init` then sees one process). Everything else is the code a GPU run executes.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_without_package
from hub_server import FakeHub
from safetensors.torch import load_file
from test_train_script import RANDOM_AUGMENTATION, ROOT, digits_poolformer, free_port

from riformer_hf import cli
from riformer_hf.errors import MissingInputError
from riformer_hf.training import checks
from riformer_hf.training import run as training_run
from riformer_hf.training.resume_check import (
    ProcessView,
    checkpoint_layout,
    describe_lacking,
    missing_for_resume,
    split_visibility,
)

RUNNER = Path(__file__).with_name("distributed_runner.py")
# DeepSpeed builds its CPU communication op (shared memory) with the C++ compiler on first use (about a minute, then
# cached in ~/.cache/torch_extensions).
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None and bool(shutil.which("c++") or shutil.which("g++"))
NO_DEEPSPEED = ("deepspeed is not installed (pip install -c constraints.txt -e '.[deepspeed]'), or there is no C++ "
                "compiler to build its CPU communication op")
FSDP_ON_CPU = {"RIFORMER_TEST_FSDP_ON_CPU": "1"}
DEEPSPEED_ON_CPU = {"RIFORMER_TEST_DEEPSPEED_ON_CPU": "1"}
# backend: (accelerate config, extra launch flags, runner switches, distributed type, how the teacher is held, layout)
BACKENDS = {
    "ddp": ("accelerate_multi_node.yaml", [], {}, "MULTI_CPU", "replica", "plain"),
    "fsdp2-sharded": ("accelerate_fsdp2.yaml", [], FSDP_ON_CPU, "FSDP", "fsdp2-sharded", "fsdp-sharded"),
    "fsdp2-full": ("accelerate_fsdp2.yaml", ["--fsdp_state_dict_type", "FULL_STATE_DICT"], FSDP_ON_CPU, "FSDP",
                   "fsdp2-sharded", "fsdp-full"),
    "zero2": ("accelerate_zero2.yaml", [], DEEPSPEED_ON_CPU, "DEEPSPEED", "deepspeed-replica", "deepspeed"),
    "zero3": ("accelerate_zero3.yaml", [], DEEPSPEED_ON_CPU, "DEEPSPEED", "zero3-partitioned", "deepspeed"),
}
NEEDS_DEEPSPEED = {"zero2", "zero3"}
HUB_REPO = "test-user/riformer-fsdp2"
OUR_CLASS = "modeling_riformer.RIFormerForImageClassification"  # auto_map entry: our modelling file, not torch's
LAUNCH_TIMEOUT = 420


def backend_params(names=BACKENDS):
    return [pytest.param(name, marks=pytest.mark.skipif(name in NEEDS_DEEPSPEED and not HAS_DEEPSPEED,
                                                        reason=NO_DEEPSPEED)) for name in names]


def recipe(teacher: Path) -> list[str]:
    return [
        "--image_size", "32", "--teacher_model", str(teacher), "--init_from_teacher", "--distillation_type", "soft",
        "--lambda_hidden", "1.0", "--lambda_mixer", "1.0", "--drop_path_rate", "0.1", *RANDOM_AUGMENTATION,
        "--learning_rate", "2e-3", "--seed", "3", "--per_device_train_batch_size", "4", "--max_train_samples", "32",
        "--max_eval_samples", "16", "--disable_tqdm", "true", "--logging_steps", "1",
    ]


def accelerate_launch(config: str, train_args: list[str], dump: Path, *, launch_flags=(), env=None, cwd=None,
                      port=None) -> list[str]:
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "configs" / config),
        "--num_processes", "2", "--main_process_port", str(port or free_port()), "--mixed_precision", "no",
        *launch_flags, str(RUNNER), str(dump), "--", *train_args,
    ]


def run_env(extra=None) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", **(extra or {})}


def on_two_machines(folders: list[Path], train_args: list[str]) -> list[subprocess.CompletedProcess]:
    """One process on each of two "machines" (accelerate_multi_node.yaml, machine_rank 0 and 1), each started in its
    own folder: relative paths in `train_args` then name a different disk on each machine."""
    port = free_port()
    started = []
    for rank, folder in enumerate(folders):
        folder.mkdir(parents=True, exist_ok=True)
        flags = ["--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1"]
        command = accelerate_launch("accelerate_multi_node.yaml", train_args, Path("dump"), launch_flags=flags,
                                    port=port)
        started.append(subprocess.Popen(command, cwd=folder, env=run_env(), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True))
    done = []
    for process in started:
        out, err = process.communicate(timeout=LAUNCH_TIMEOUT)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


class Run:
    """A launch: the uninterrupted run in `a`, the run resumed from a/checkpoint-2 in `b`, rank 0's dumps."""

    def __init__(self, root: Path, results: list[subprocess.CompletedProcess], dump: Path):
        self.root, self.results = root, results
        self.a, self.b = root / "a", root / "b"
        finished = all(r.returncode == 0 for r in results)
        self.dumps = [torch.load(dump / f"run{i}.pt") for i in (0, 1)] if finished else []

    def stderr(self) -> str:
        return "\n".join(r.stderr for r in self.results)


@pytest.fixture(scope="module")
def hub():
    with FakeHub() as server:
        yield server


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return digits_poolformer(tmp_path_factory.mktemp("teacher") / "poolformer")


@pytest.fixture(scope="module")
def launched(tmp_path_factory, teacher, hub):
    """backend name → its `Run`, launched on first use."""
    runs: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name in runs:
            return runs[name]
        config, flags, switches, *_ = BACKENDS[name]
        root = tmp_path_factory.mktemp(name)
        uninterrupted = ["--max_steps", "4", "--save_steps", "2", *recipe(teacher)]
        resumed = ["--do_train", "--max_steps", "4", "--save_steps", "2", *recipe(teacher)]
        if name == "ddp":  # two machines, one process each, no shared disk: each keeps its own copy
            machines = [root / "machine0", root / "machine1"]
            args = ["--output_dir", "a", "--save_on_each_node", *uninterrupted, "--then", "--output_dir", "b",
                    "--save_on_each_node", "--resume_from_checkpoint", "a/checkpoint-2", *resumed]
            results = on_two_machines(machines, args)
            runs[name] = Run(machines[0], results, machines[0] / "dump")
            runs[name].machines = machines
            return runs[name]
        push = []
        if name == "fsdp2-sharded":
            push = ["--push_to_hub", "--hub_model_id", HUB_REPO, "--hub_token", "hf_fake_write_token",
                    "--hub_strategy", "checkpoint", "--hub_always_push"]  # every checkpoint, however slow the pushes
            switches = {**switches, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
                        "HF_HOME": str(root / "hf_home")}
        args = ["--output_dir", str(root / "a"), *uninterrupted, *push, "--then", "--output_dir", str(root / "b"),
                "--resume_from_checkpoint", str(root / "a" / "checkpoint-2"), *resumed]
        command = accelerate_launch(config, args, root / "dump", launch_flags=flags)
        result = subprocess.run(command, check=False, capture_output=True, text=True, env=run_env(switches), cwd=root,
                                timeout=LAUNCH_TIMEOUT)
        runs[name] = Run(root, [result], root / "dump")
        return runs[name]

    return get


def torch_sources(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("_fsdp*.py"))


@pytest.mark.parametrize("name", backend_params())
def test_backend_trains_checkpoints_resumes_exactly_and_exports(launched, name, teacher):
    """Every rank exits 0; the teacher is held as the backend holds the student; checkpoints are complete for both
    processes and in training form, with our auto_map and no torch source; the run resumed from checkpoint-2 ends
    where the uninterrupted one ends; the export is the deploy form."""
    run = launched(name)
    for result in run.results:
        assert result.returncode == 0, result.stderr[-6000:]
    assert "Traceback" not in run.stderr()
    _, _, _, distributed_type, holding, layout = BACKENDS[name]
    uninterrupted, resumed = run.dumps
    assert uninterrupted["distributed_type"] == f"DistributedType.{distributed_type}"
    assert (uninterrupted["world_size"], uninterrupted["teacher"]) == (2, holding)
    assert uninterrupted["global_step"] == resumed["global_step"] == 4
    start = load_file(teacher / "model.safetensors")["classifier.weight"]
    assert (uninterrupted["state"]["classifier.weight"] - start).abs().max() > 1e-3  # it trained
    for key, value in uninterrupted["state"].items():
        torch.testing.assert_close(resumed["state"][key], value, rtol=0, atol=1e-6, msg=key)

    folders = [run.a] if name != "ddp" else [machine / "a" for machine in run.machines]  # each machine's copy
    for index, root in enumerate(folders):
        for step in (2, 4):
            checkpoint = root / f"checkpoint-{step}"
            processes = (index,) if name == "ddp" else (0, 1)  # each machine holds its own process's RNG state
            for process in processes:
                assert missing_for_resume(checkpoint, process, 2) == [], (checkpoint, process)
            assert checkpoint_layout(checkpoint) == layout
            config = json.loads((checkpoint / "config.json").read_text())
            assert config["reparameterized"] is False and config["architectures"] == ["RIFormerForImageClassification"]
            assert config["auto_map"]["AutoModelForImageClassification"] == OUR_CLASS
            assert any(".token_mixer.scale" in k for k in load_file(checkpoint / "model.safetensors"))
        export = json.loads((root / "config.json").read_text())
        assert export["reparameterized"] is True
        assert export["auto_map"]["AutoModelForImageClassification"] == OUR_CLASS
        assert torch_sources(root) == []


def test_backends_agree_in_weights_and_deploy_logits(launched, tmp_path):
    """From one seed, FSDP2 (both state-dict types), ZeRO-2 and ZeRO-3 end within 1e-5 of DDP in every weight, and
    their exports (and the training-form checkpoints), loaded in a fresh process without riformer_hf through
    `trust_remote_code`, give logits within 1e-4 of DDP's."""
    names = [n for n in BACKENDS if n not in NEEDS_DEEPSPEED or HAS_DEEPSPEED]
    runs = {name: launched(name) for name in names}
    for name, run in runs.items():
        assert run.dumps, f"{name} failed: {run.stderr()[-4000:]}"
    reference = runs["ddp"].dumps[0]["state"]
    for name in names[1:]:
        state = runs[name].dumps[0]["state"]
        assert state.keys() == reference.keys()
        for key in reference:
            torch.testing.assert_close(state[key], reference[key], rtol=0, atol=1e-5, msg=f"{name}: {key}")

    folders = {name: str(run.a) for name, run in runs.items()}
    script = f"""
import json, torch
from transformers import AutoModelForImageClassification
torch.manual_seed(0)
pixels = torch.randn(4, 3, 32, 32)
out = {{}}
for name, folder in {folders!r}.items():
    for form, path in (("deploy", folder), ("training", folder + "/checkpoint-4")):
        model = AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            out[name + "/" + form] = model(pixel_values=pixels).logits.tolist()
print(json.dumps(out))
"""
    logits = {k: torch.tensor(v) for k, v in json.loads(run_without_package(script, tmp_path).splitlines()[-1]).items()}
    for name in names:
        for form in ("deploy", "training"):
            torch.testing.assert_close(logits[f"{name}/{form}"], logits["ddp/deploy"], rtol=0, atol=1e-4,
                                       msg=f"{name} {form}")


def test_fsdp2_pushes_the_deploy_export_and_the_sharded_checkpoint_to_the_hub(launched, hub):
    run = launched("fsdp2-sharded")
    assert run.dumps, run.stderr()[-4000:]
    files = hub.files(HUB_REPO)
    config = json.loads(files["config.json"])
    assert config["reparameterized"] is True
    assert config["auto_map"]["AutoModelForImageClassification"] == OUR_CLASS
    assert {"model.safetensors", "modeling_riformer.py", "configuration_riformer.py", "README.md"} <= set(files)
    assert not [name for name in files if "_fsdp" in name and name.endswith(".py")]
    pushed = {name.removeprefix("last-checkpoint/") for name in files if name.startswith("last-checkpoint/")}
    assert {"model.safetensors", "trainer_state.json", "pytorch_model_fsdp_0/.metadata",
            "optimizer_0/.metadata"} <= pushed
    assert json.loads(files["last-checkpoint/trainer_state.json"])["global_step"] == 4


def test_machines_without_shared_storage_get_one_line_naming_the_storage(tmp_path, teacher):
    """Two machines, one process each, each writing its own disk. Without --save_on_each_node machine 1's checkpoint
    folder holds only its RNG state; `--resume_from_checkpoint last` then stops both machines with exit code 2 and
    one line that names --save_on_each_node and a shared --output_dir, and nothing dies with a gloo error."""
    machines = [tmp_path / "machine0", tmp_path / "machine1"]
    quick = ["--output_dir", "run", *recipe(teacher), "--max_steps", "2", "--save_steps", "2", "--do_train"]
    results = on_two_machines(machines, [*quick, "--then", *quick, "--resume_from_checkpoint", "last"])
    assert sorted(p.name for p in (machines[1] / "run" / "checkpoint-2").iterdir()) == ["rng_state_1.pth"]
    assert missing_for_resume(machines[0] / "run" / "checkpoint-2", 0, 2) == []
    for result in results:
        assert result.returncode != 0
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, result.stderr[-4000:]
        assert errors[0].startswith("error: --resume_from_checkpoint last: checkpoint-2 in --output_dir run is whole "
                                    "for process 0 only: process 1 (host ")
        assert "lacks trainer_state.json" in errors[0] and "model.safetensors (the weights)" in errors[0]
        assert "--save_on_each_node" in errors[0] and "same --output_dir on storage they share" in errors[0]
        # the rank exited 2 (the launcher then reports it, with its own traceback); no rank raised, nothing else died
        assert "(exitcode: 2)" in result.stderr and "ChildFailedError" in result.stderr, result.stderr[-4000:]
        assert result.stderr.count("Traceback") == 1 and "[rank" not in result.stderr, result.stderr[-4000:]
        for noise in ("gloo", "Connection closed", "DistBackendError", "timed out", "SIGABRT"):
            assert noise not in result.stderr, result.stderr[-4000:]


# ---- completeness, without launching ----


def test_resume_last_skips_a_checkpoint_without_its_optimizer(tmp_path, caplog):
    """A checkpoint that lost optimizer.pt used to pass as complete (Trainer then resumes with a fresh optimizer,
    silently): `last` skips it with a line naming what it lacks; given by path it is refused."""
    quick = ["--depths", "1", "1", "1", "1", "--hidden_sizes", "8", "8", "8", "8", "--image_size", "32",
             "--per_device_train_batch_size", "8", "--max_train_samples", "32", "--max_eval_samples", "8", "--use_cpu",
             "--disable_tqdm", "true", "--seed", "3", "--min_crop_area", "1.0", "--max_steps", "4", "--save_steps", "2",
             "--do_train"]
    reference = tmp_path / "reference"
    assert cli.train(["--output_dir", str(reference), *quick]) == 0
    folder = tmp_path / "run"
    shutil.copytree(reference, folder)
    (folder / "checkpoint-4" / "optimizer.pt").unlink()
    for name in ("model.safetensors", "config.json"):
        (folder / name).unlink()  # the export of the uninterrupted run: the resumed one writes its own
    with pytest.raises(MissingInputError, match=r"checkpoint-4 is not a complete checkpoint: it lacks optimizer\.pt"):
        checks.resolve_resume(type("Args", (), {
            "resume_from_checkpoint": str(folder / "checkpoint-4"), "output_dir": str(folder), "process_index": 0,
            "world_size": 1, "deepspeed_plugin": None})())
    with caplog.at_level("WARNING"):
        resumed = training_run.main(["--output_dir", str(folder), *quick, "--resume_from_checkpoint", "last"])
    assert ("Skipping checkpoint-4, incomplete: it lacks optimizer.pt (the optimizer state); resuming from an earlier "
            "one.") in caplog.text
    assert resumed.state.global_step == 4
    final, expected = load_file(folder / "model.safetensors"), load_file(reference / "model.safetensors")
    for key in expected:
        torch.testing.assert_close(final[key], expected[key], rtol=0, atol=1e-6, msg=key)


def _touch(folder: Path, *names: str) -> Path:
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}" if name.endswith(".json") else "x")
    return folder


def test_what_each_layout_needs_to_resume(tmp_path):
    common = ("trainer_state.json", "scheduler.pt", "rng_state_0.pth", "rng_state_1.pth")
    sharded = _touch(tmp_path / "sharded", *common, "pytorch_model_fsdp_0/__0_0.distcp", "optimizer_0/.metadata")
    assert checkpoint_layout(sharded) == "fsdp-sharded"
    assert missing_for_resume(sharded, 1, 2) == ["pytorch_model_fsdp_0/.metadata (model shards)"]
    full = _touch(tmp_path / "full", *common, "pytorch_model_fsdp.bin", "model.safetensors")
    assert missing_for_resume(full, 0, 2) == ["optimizer.bin (the optimizer state)"]
    zero = _touch(tmp_path / "zero", *common, "latest", "global_step4/mp_rank_00_model_states.pt",
                  "global_step4/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (zero / "latest").write_text("global_step4")
    assert missing_for_resume(zero, 0, 2) == []
    assert missing_for_resume(zero, 1, 2) == [
        "global_step4/zero_pp_rank_1_mp_rank_00_optim_states.pt (process 1's optimizer partition)"]
    zero3 = _touch(tmp_path / "zero3", *common, "latest", "global_step4/zero_pp_rank_0_mp_rank_00_model_states.pt",
                   "global_step4/zero_pp_rank_0_mp_rank_00_optim_states.pt")
    (zero3 / "latest").write_text("global_step4")
    assert missing_for_resume(zero3, 1, 2) == [
        "global_step4/zero_pp_rank_1_mp_rank_00_model_states.pt (the model states)",
        "global_step4/zero_pp_rank_1_mp_rank_00_optim_states.pt (process 1's optimizer partition)"]
    # a scheduler kept inside DeepSpeed's states (its config has one): no scheduler.pt needed
    (zero / "scheduler.pt").unlink()
    assert missing_for_resume(zero, 0, 2, scheduler_file=False) == []
    assert missing_for_resume(zero, 0, 2) == ["scheduler.pt (the learning-rate schedule)"]
    assert missing_for_resume(tmp_path / "absent", 0, 2) == ["the folder itself"]


def test_processes_that_see_different_checkpoints_are_described():
    views = [ProcessView(0, "a", {"checkpoint-2": [], "checkpoint-4": []}),
             ProcessView(1, "b", {"checkpoint-2": [], "checkpoint-4": ["optimizer.pt (the optimizer state)"]})]
    assert split_visibility(views, ["checkpoint-2", "checkpoint-4"]) == "checkpoint-4"
    assert describe_lacking(views, "checkpoint-4") == "process 1 (host b) lacks optimizer.pt (the optimizer state)"
    assert describe_lacking(views, "checkpoint-6") == "it lacks the folder itself"


@pytest.mark.parametrize("name,machines,processes", [
    ("accelerate_fsdp2.yaml", 1, 8), ("accelerate_zero2.yaml", 1, 8), ("accelerate_zero3.yaml", 1, 8),
    ("accelerate_multi_node.yaml", 2, 16),
])
def test_shipped_configs_say_what_storage_several_machines_need(name, machines, processes):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "configs" / name))
    assert config.num_machines == machines and config.num_processes == processes
    text = " ".join(line.lstrip("# ") for line in (ROOT / "configs" / name).read_text().splitlines())
    assert "-m riformer_hf.cli train" in text and "--output_dir on storage" in text
    assert "--save_on_each_node" in text or "fsdp" in name
    if name == "accelerate_multi_node.yaml":
        return
    if "fsdp" in name:
        assert config.fsdp_config["fsdp_version"] == 2 and config.fsdp_config["fsdp_cpu_ram_efficient_loading"] is False
    else:
        assert config.deepspeed_config["zero_stage"] == int(name[-6])
