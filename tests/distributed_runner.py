"""One rank of a multi-process `riformer-train` run, launched by `accelerate launch` in tests/test_distributed.py.

    accelerate launch --config_file configs/accelerate_cpu_2proc.yaml tests/distributed_runner.py DUMP_DIR -- ARGS...

Runs `riformer_hf.cli.train(ARGS)` as the console script does, then (when training happened) gathers the student's
full training-form weights with `Accelerator.get_state_dict` (a collective under FSDP and ZeRO-3) and rank 0 writes
them, with what the run was (backend, world size, how the teacher is held), to DUMP_DIR/run{i}.pt. `--then ARGS`
starts another run in the same processes after it (a resumed run). Exits with the console script's code.

`RIFORMER_TEST_FSDP_ON_CPU=1`: keep accelerate's FSDP plugin active on a machine without an accelerator. accelerate
(1.16) turns FSDP on only for its accelerator process types (MULTI_GPU, MULTI_XPU, ...); a CPU launch is MULTI_CPU,
and `AcceleratorState` then drops the plugin, so the run silently becomes DDP. The shim makes `AcceleratorState` do
for MULTI_CPU what it does for MULTI_GPU: the distributed type becomes FSDP and the plugin is kept. Everything after
that (fully_shard through `fsdp2_prepare_model`, the sharded optimizer, `save_fsdp_model` / `load_fsdp_model`,
`get_state_dict`) is accelerate's and torch's own code on gloo, as on GPUs over NCCL.
"""

import os
import sys
from pathlib import Path


def keep_fsdp_on_cpu() -> None:
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__
    if getattr(original, "_riformer_fsdp_on_cpu", False):
        return

    def __init__(self, *args, fsdp_plugin=None, **kwargs):
        fresh = "dynamo_plugin" not in AcceleratorState._shared_state  # set by the first initialisation only
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fresh and fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            if self._mixed_precision != "no":
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = fsdp_plugin
            self.distributed_type = DistributedType.FSDP
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    __init__._riformer_fsdp_on_cpu = True
    AcceleratorState.__init__ = __init__


def init_deepspeed_comm_on_cpu() -> None:
    """On a CPU launch accelerate (1.16) starts the process group itself (MULTI_CPU, gloo): `deepspeed.comm` stays
    uninitialised, and ZeRO-3's `zero.Init` (inside every `from_pretrained`) then reads a world size of 1. On GPUs
    accelerate starts the group through `deepspeed.comm.init_distributed`; this does the same once the group exists.
    """
    from accelerate.state import PartialState

    original = PartialState.__init__
    if getattr(original, "_riformer_ds_on_cpu", False):
        return

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        import torch.distributed

        if torch.distributed.is_initialized():
            import deepspeed.comm

            if not deepspeed.comm.is_initialized():
                deepspeed.comm.init_distributed(dist_backend=torch.distributed.get_backend())

    __init__._riformer_ds_on_cpu = True
    PartialState.__init__ = __init__


def teacher_placement(trainer) -> str:
    """How the logit teacher is held: "replica" (whole on every process), "fsdp2-sharded", "zero3-partitioned" or
    "deepspeed-replica" (an inference engine holding a whole copy)."""
    teacher = trainer.teacher_model
    if teacher is None:
        return "none"
    inner = getattr(teacher, "module", teacher)
    if type(teacher).__name__ == "DeepSpeedEngine":
        return "zero3-partitioned" if any(hasattr(p, "ds_id") for p in inner.parameters()) else "deepspeed-replica"
    from torch.distributed.tensor import DTensor

    params = list(inner.parameters())
    if params and all(isinstance(p, DTensor) for p in params):
        return "fsdp2-sharded"
    return "replica"


def run(argv: list[str], dump: Path) -> int:
    import torch

    from riformer_hf import cli
    from riformer_hf.training import run as train_run

    trainers = []
    main = train_run.main

    def keep(argv_):
        trainers.append(main(argv_))
        return trainers[-1]

    train_run.main = keep  # cli looks the command's main up at call time
    try:
        code = cli.train(argv)
    finally:
        train_run.main = main
    if code != 0 or not trainers or not trainers[-1].args.do_train:
        return code
    trainer = trainers[-1]
    state = trainer.accelerator.get_state_dict(trainer.model_wrapped) or {}  # every rank takes part; FSDP2 and
    # ZeRO-3 hand the weights to the main process only
    if trainer.args.process_index == 0:
        torch.save({
            "world_size": trainer.args.world_size,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "fsdp_version": getattr(getattr(trainer.accelerator.state, "fsdp_plugin", None), "fsdp_version", None),
            "zero_stage": (trainer.accelerator.state.deepspeed_plugin.zero_stage
                           if trainer.is_deepspeed_enabled else None),
            "teacher": teacher_placement(trainer),
            "global_step": trainer.state.global_step,
            "losses": [log["loss"] for log in trainer.state.log_history if "loss" in log],
            "state": {k: v.detach().float().cpu().clone() for k, v in state.items()},
        }, dump)
    return 0


def main() -> int:
    """DUMP_DIR -- ARGS [--then ARGS ...]: one `riformer-train` run per ARGS, one after the other in this process (a
    resumed run after the run it resumes); rank 0 writes DUMP_DIR/run{i}.pt for each. Exits with the first failure."""
    dump_dir, argv = Path(sys.argv[1]), sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:]
    if os.environ.get("RIFORMER_TEST_FSDP_ON_CPU") == "1":
        keep_fsdp_on_cpu()
    if os.environ.get("RIFORMER_TEST_DEEPSPEED_ON_CPU") == "1":
        init_deepspeed_comm_on_cpu()
    runs, current = [], []
    for token in argv:
        if token == "--then":
            runs.append(current)
            current = []
        else:
            current.append(token)
    runs.append(current)
    dump_dir.mkdir(parents=True, exist_ok=True)
    for index, args in enumerate(runs):
        code = run(args, dump_dir / f"run{index}.pt")
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
